//! Voicemail out of hours: verde's wall clock starts on Monday 30 November 2026 at 21:00 in
//! Rome, after the university facilities desk (800022399, Mon-Fri 08-19) has closed. A SIPp
//! caller hears the closed message, presses 1 (leave a message), waits for the greeting and the
//! beep, sends 3 s of a 440 Hz tone and ends with '#'. The message must be stored with its
//! caller, number and call, as a WAV (8 kHz mono 16-bit) holding about 3 s of that tone, and
//! its task must be due 4 working hours after the next opening: Tuesday 08:00 + 4 h = 12:00.

use std::path::PathBuf;
use std::time::Duration;
use verde_interop::acd::{variable, write_config};
use verde_interop::callbacks::{dtmf_pcap_after_audio, ms_of, rfc3339_ms, u64_field, voicemails};
use verde_interop::pcap::{audio_pcap_after_dtmf, dtmf_pcaps};
use verde_interop::sipp::{play_pcap_after, scenario, Sipp};
use verde_interop::verde::{field, record_path, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, try_wait_for, TestDir};

const FACILITIES: &str = "800022399";
const CALLER: &str = "0655000004";
const MONDAY_EVENING: &str = "2026-11-30T21:00:00+01:00";
/// 4 working hours from Tuesday's 08:00 opening.
const DUE: &str = "2026-12-01T12:00:00+01:00";
const TONE_HZ: f64 = 440.0;
const MESSAGE_MS: u64 = 3000;

#[test]
fn voicemail_out_of_hours_recorded() {
    require_private_netns();
    let dir = TestDir::new("voicemail_out_of_hours");
    let config = write_config(&dir, "tasks:\n  voicemail_sla: 4h\n  callback_sla: 8h\n");
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            extra_args: vec!["--wall-clock".into(), MONDAY_EVENING.into()],
            ..Default::default()
        },
    );

    // Keys and audio timed from the prompts (SIPp cannot listen): '1' one second into the
    // voicemail menu (after the closed message and the hours); the tone 250 ms after the
    // greeting and the beep (the key is recognised ~150 ms after it starts); '#' right after
    // the tone. The recording runs from the end of the beep until '#' is recognised, so it is
    // a few hundred ms longer than the tone.
    let closed_ms = ms_of(&["facilities_closed", "hours_weekdays", "hours_saturday"]);
    let key_at = closed_ms + 1000;
    let beep_ms = (Audio::load(&verde_interop::repo_root().join("sounds/beep.wav")).duration()
        * 1000.0) as u64;
    let talk_at = 150 + ms_of(&["voicemail_greeting"]) + beep_ms + 250;
    let tone = Audio::tone(8000, TONE_HZ, MESSAGE_MS as f64 / 1000.0, 0.3);
    let packets = tone.samples.len() / 160;
    let pcaps = dtmf_pcaps(&dir, "1");
    let message = audio_pcap_after_dtmf(&dir, "message", &tone, 1);
    let pound = dtmf_pcap_after_audio(&dir, '#', 1, packets);
    let actions = [
        play_pcap_after(key_at, &pcaps[0]),
        play_pcap_after(talk_at, &message),
        play_pcap_after(MESSAGE_MS + 60, &pound),
    ]
    .concat();
    let listen_ms = ms_of(&["voicemail_thanks"]) + 6000;
    let scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", CALLER.to_string()),
            ("ACTIONS", actions),
            ("LISTEN_MS", listen_ms.to_string()),
        ],
    );
    let caller = Sipp::new(&scen, verde.sip)
        .service(FACILITIES)
        .timeout(Duration::from_millis(
            key_at + talk_at + MESSAGE_MS + listen_ms + 10_000,
        ))
        .run(&dir);
    caller.assert_success("caller leaving a message out of hours");

    let record = verde.wait_call_record(&caller.call_id, Duration::from_secs(10));
    let path = record_path(&record);
    for node in ["closed_message", "voicemail_offer", "voicemail"] {
        assert!(
            path.iter().any(|n| n == node),
            "the call's path misses {node} (was the desk closed at the wall clock {MONDAY_EVENING}?): \
             {path:?}\nverde's log of the call:\n{}",
            verde.call_logs(&caller.call_id)
        );
    }
    assert_eq!(variable(&record, "schedule"), Some("closed"), "{record:#}");
    assert_eq!(
        field(&record, "outcome").as_str(),
        Some("voicemail:facilities"),
        "{record:#}"
    );
    // A message was left: that is how the call ended, out of hours or not.
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("voicemail"),
        "{record:#}"
    );

    let list = try_wait_for(Duration::from_secs(5), || {
        let l = voicemails(&verde);
        (!l.is_empty()).then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "GET /api/voicemails stayed empty; verde's log of the call:\n{}",
            verde.call_logs(&caller.call_id)
        )
    });
    assert_eq!(list.len(), 1, "GET /api/voicemails: {list:#?}");
    let vm = &list[0];
    assert_eq!(vm["mailbox"], "facilities", "{vm:#}");
    assert_eq!(vm["caller"], CALLER, "{vm:#}");
    assert_eq!(vm["did"], FACILITIES, "{vm:#}");
    assert_eq!(vm["call_id"], caller.call_id.as_str(), "{vm:#}");
    // verde nests a state's details with its name: {"state": "new"}, later {"state": "taken",
    // "agent": ...}; a bare "new" would do as well.
    let state = vm["state"].get("state").unwrap_or(&vm["state"]);
    assert_eq!(state, "new", "a message nobody has taken yet: {vm:#}");
    let duration_ms = u64_field(vm, "duration_ms");
    assert!(
        duration_ms.abs_diff(MESSAGE_MS) <= 600,
        "duration_ms {duration_ms}, the caller spoke {MESSAGE_MS} ms (then '#'): {vm:#}"
    );
    if let Some(v) = variable(&record, "voicemail_duration_ms") {
        assert_eq!(
            v.parse::<u64>().ok(),
            Some(duration_ms),
            "the call record and the voicemail disagree on the duration: {record:#}"
        );
    }
    let deadline = u64_field(vm, "deadline_ms");
    assert_eq!(
        deadline,
        rfc3339_ms(DUE),
        "deadline_ms {deadline} is not {DUE} ({} ms); the message was left on {MONDAY_EVENING}, \
         after closing: 4 working hours from Tuesday's 08:00 opening",
        rfc3339_ms(DUE)
    );

    // The WAV: 8 kHz mono 16-bit, about the message's length, the caller's tone.
    let wav_path = vm["wav_path"]
        .as_str()
        .unwrap_or_else(|| panic!("no wav_path: {vm:#}"));
    let wav = resolve(&dir, &verde, wav_path);
    let spec = hound::WavReader::open(&wav)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", wav.display()))
        .spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (8000, 1, 16),
        "{}: {spec:?}",
        wav.display()
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Int, "{spec:?}");
    let audio = Audio::load(&wav);
    let secs = audio.duration();
    assert!(
        (secs * 1000.0 - MESSAGE_MS as f64).abs() <= 600.0,
        "{} lasts {secs:.2} s; the caller spoke {MESSAGE_MS} ms",
        wav.display()
    );
    assert!(
        (secs * 1000.0 - duration_ms as f64).abs() <= 100.0,
        "{} lasts {secs:.2} s but the API says duration_ms {duration_ms}",
        wav.display()
    );
    let (f, share) = audio.dominant_frequency(200.0, 3400.0, 5.0);
    assert!(
        (f - TONE_HZ).abs() <= 10.0 && share > 0.2,
        "{}: dominant frequency {f} Hz (share {share:.2}); the caller sent {TONE_HZ} Hz",
        wav.display()
    );
    let tone_s = audio.tone_seconds(TONE_HZ, 0.2);
    assert!(
        tone_s >= 2.4,
        "{} holds only {tone_s:.1} s of the caller's {TONE_HZ} Hz tone ({secs:.2} s long)",
        wav.display()
    );
    // What the caller heard is not in it: the greeting's beep (1 kHz) was verde's, not theirs.
    let beep_s = audio.tone_seconds(1000.0, 0.1);
    assert!(
        beep_s == 0.0,
        "{} holds {beep_s:.1} s of the 1 kHz beep verde played to the caller",
        wav.display()
    );
}

/// `wav_path` as verde reports it: absolute, or relative to its working directory (the test
/// dir) or to its data dir.
fn resolve(dir: &TestDir, verde: &Verde, wav_path: &str) -> PathBuf {
    let p = PathBuf::from(wav_path);
    let candidates = if p.is_absolute() {
        vec![p]
    } else {
        vec![dir.join(&p), verde.data_dir.join(&p)]
    };
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("the voicemail's wav_path {wav_path} is not a file (tried {candidates:?})")
        })
}
