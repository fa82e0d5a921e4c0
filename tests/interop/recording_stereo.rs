//! Conversation recording end to end, with real phones on both sides.
//!
//! A baresip caller sending a 440 Hz tone dials a test number that queues it straight into
//! `pensions` (recorded `mode: all`); Anna's baresip phone (auto-answer) sends 1000 Hz. Verde
//! must record the conversation by itself when she answers, play the caller the recording
//! notice first, and write a stereo WAV (8 kHz, 16 bit) with the caller on the left and the
//! agent on the right, listed on the call record with its start and stop times. Her bar may not
//! stop a recording the queue makes of every call.
//!
//! Then a second call to a number that queues into `operator` (`mode: on_demand`): nothing is
//! recorded until Anna's bar sends `record on`; `record off` stops it; the `recording` events
//! follow each, and the one file listed lasts as long as the interval between them.
//!
//! The audio each side received from verde is taken from a capture of verde's RTP ports, so
//! its timing is the wire's, not a softphone's.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;
use verde_interop::acd::{first_call_log, wait_agent_registered, wait_agent_state, write_config};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::callbacks::rfc3339_ms;
use verde_interop::cti::{Cti, WAIT};
use verde_interop::flows;
use verde_interop::media_checks::{
    epoch_now, tone_dbfs, verde_direct_queue, RtpByPeer, StereoWav, ABSENT_DBFS, PRESENT_DBFS,
};
use verde_interop::verde::{field, Verde};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{require_private_netns, TestDir};

const AGENT: &str = "1001";
const AGENT_PASSWORD: &str = "secret1";
/// `tests/fixtures/flows-direct-queue/`: straight to pensions, straight to operator.
const DID_ALL: &str = "800500001";
const DID_ON_DEMAND: &str = "800500002";
const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
/// How long the agent and the caller talk after the notice, on the recorded-by-policy call.
const TALK_AFTER_NOTICE: Duration = Duration::from_millis(3500);
/// A tone counted on one channel must be this much louder than there on the other.
const SEPARATION_DB: f64 = 20.0;
/// The recording's length against its stop minus start time.
const DURATION_TOLERANCE_S: f64 = 0.3;

fn tone_wav(dir: &TestDir, name: &str, hz: f64) -> PathBuf {
    // baresip's aufile hangs up at the end of its file: longer than the test.
    let path = dir.join(format!("{name}.wav"));
    Audio::tone(8000, hz, 150.0, 0.3).save(&path);
    path
}

/// The call's SIP Call-ID as baresip reports it on its CALL_ESTABLISHED event.
fn dial_and_wait_answer(caller: &mut Baresip, verde: &Verde, did: &str) -> String {
    caller.ctrl.dial(&format!("sip:{did}@{}", verde.sip));
    let ev = caller
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    ev["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("baresip's CALL_ESTABLISHED carries no call id: {ev}"))
        .to_string()
}

fn hang_up(caller: &mut Baresip) {
    caller.ctrl.hangup();
    caller
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
}

/// The bar's pop-up for a call to `did`, then its answer; returns the call number.
fn offered_and_answered(bar: &mut Cti, did: &str) -> Value {
    let offered = bar.wait_event("call_offered", Duration::from_secs(10), |m| m["did"] == did);
    let call = offered["call"].clone();
    bar.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    call
}

/// The one entry of the record's `recordings`, checked for its fields.
fn only_recording(record: &Value) -> (String, f64, f64) {
    let recs = field(record, "recordings")
        .as_array()
        .unwrap_or_else(|| panic!("the record's recordings is not a list: {record:#}"));
    assert_eq!(recs.len(), 1, "exactly one recording expected: {record:#}");
    let r = &recs[0];
    let file = r["file"]
        .as_str()
        .unwrap_or_else(|| panic!("recording without a file: {r}"))
        .to_string();
    let at = |k: &str| {
        rfc3339_ms(
            r[k].as_str()
                .unwrap_or_else(|| panic!("recording without {k}: {r}")),
        ) as f64
            / 1000.0
    };
    let (started, stopped) = (at("started_at"), at("stopped_at"));
    assert!(
        stopped > started,
        "recording stopped before it started: {r}"
    );
    (file, started, stopped)
}

/// Checks the WAV's format and that each party is on its own channel; returns it.
fn check_stereo_wav(verde: &Verde, file: &str, what: &str) -> StereoWav {
    let path = verde.data_dir.join("recordings").join(file);
    assert!(
        path.is_file(),
        "{what}: the call record names {file}, but {} does not exist",
        path.display()
    );
    let wav = StereoWav::load(&path);
    assert_eq!(
        (
            wav.spec.channels,
            wav.spec.sample_rate,
            wav.spec.bits_per_sample
        ),
        (2, 8000, 16),
        "{what}: {} must be stereo 8 kHz 16 bit: {:?}",
        path.display(),
        wav.spec
    );
    let (l_caller, l_agent) = (
        tone_dbfs(&wav.left, CALLER_HZ),
        tone_dbfs(&wav.left, AGENT_HZ),
    );
    let (r_caller, r_agent) = (
        tone_dbfs(&wav.right, CALLER_HZ),
        tone_dbfs(&wav.right, AGENT_HZ),
    );
    eprintln!(
        "{what}: {} ({:.2} s): left caller {l_caller:.1} / agent {l_agent:.1} dBFS; right caller \
         {r_caller:.1} / agent {r_agent:.1} dBFS",
        path.display(),
        wav.duration()
    );
    let (lf, _) = wav.left.dominant_frequency(100.0, 3000.0, 10.0);
    let (rf, _) = wav.right.dominant_frequency(100.0, 3000.0, 10.0);
    assert_eq!(
        lf, CALLER_HZ,
        "{what}: the left channel must be the caller ({CALLER_HZ} Hz); its dominant frequency is {lf} Hz"
    );
    assert_eq!(
        rf, AGENT_HZ,
        "{what}: the right channel must be the agent ({AGENT_HZ} Hz); its dominant frequency is {rf} Hz"
    );
    assert!(
        l_caller >= PRESENT_DBFS && r_agent >= PRESENT_DBFS,
        "{what}: caller on the left at {l_caller:.1} dBFS, agent on the right at {r_agent:.1} dBFS: \
         both must be at least {PRESENT_DBFS} dBFS"
    );
    assert!(
        l_caller - l_agent >= SEPARATION_DB,
        "{what}: the agent leaks into the caller's (left) channel: {l_agent:.1} dBFS against the \
         caller's {l_caller:.1}"
    );
    assert!(
        r_agent - r_caller >= SEPARATION_DB,
        "{what}: the caller leaks into the agent's (right) channel: {r_caller:.1} dBFS against the \
         agent's {r_agent:.1}"
    );
    wav
}

/// Fails unless the caller heard the recording notice starting within half a second of `from`
/// (epoch seconds). Returns when the notice ended.
fn assert_notice_heard(rtp: &RtpByPeer, caller_ports: &[u16], from: f64, what: &str) -> f64 {
    let notice = flows::prompt("it", "recording_notice");
    let heard = rtp.heard(caller_ports, from - 0.1, from + notice.duration() + 1.5);
    let (corr, lag_ms) = envelope_correlation(&heard, &notice, 20, 1000);
    eprintln!(
        "{what}: the caller's audio after the recording started matches recording_notice with \
         correlation {corr:.3} at {lag_ms} ms"
    );
    assert!(
        corr > 0.8 && lag_ms <= 600,
        "{what}: the caller did not hear sounds/it/recording_notice.wav when the recording \
         started: best envelope correlation {corr:.3} at {lag_ms} ms over {:.1} s of audio sent \
         to it",
        heard.duration()
    );
    from - 0.1 + lag_ms as f64 / 1000.0 + notice.duration()
}

#[test]
fn recording_stereo_caller_left_agent_right() {
    require_private_netns();
    let dir = TestDir::new("recording_stereo");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {AGENT_PASSWORD}, queues: [pensions, operator] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 10s, wrap_up: 1s, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: operator, ring_timeout: 10s, wrap_up: 1s, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             recording:\n\
             \x20 queues:\n\
             \x20   pensions: {{ mode: all }}\n\
             \x20   operator: {{ mode: on_demand }}\n"
        ),
    );
    let (verde, cap) = verde_direct_queue(&dir, config);

    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new(AGENT, AGENT_PASSWORD, verde.sip),
        &tone_wav(&dir, "anna-voice", AGENT_HZ),
    );
    let mut caller = Baresip::start(&dir, "caller", &tone_wav(&dir, "caller-voice", CALLER_HZ));
    wait_agent_registered(&verde, AGENT, Duration::from_secs(10));
    let mut bar = Cti::connect(verde.http);
    bar.login(AGENT, AGENT_PASSWORD);
    bar.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));

    // 1. pensions, recorded by policy.
    let call_id = dial_and_wait_answer(&mut caller, &verde, DID_ALL);
    let call = offered_and_answered(&mut bar, DID_ALL);
    bar.wait_event("recording", WAIT, |m| m["call"] == call && m["on"] == true);
    let started_line = first_call_log(&verde, &call_id, "recording the conversation");
    // A queue recording every call: the agent may not stop it.
    let refused = bar.cmd_err(
        json!({"type": "record", "call": call, "on": false}),
        "forbidden",
    );
    eprintln!("record off on a mode-all call: {refused}");
    sleep(
        Duration::from_secs_f64(flows::prompt("it", "recording_notice").duration())
            + TALK_AFTER_NOTICE,
    );
    let hung_up_at = epoch_now();
    hang_up(&mut caller);
    bar.wait_event("recording", WAIT, |m| m["call"] == call && m["on"] == false);
    bar.wait_event("call_ended", WAIT, |m| m["call"] == call);
    let record = verde.wait_call_record(&call_id, Duration::from_secs(10));
    let (file, started, stopped) = only_recording(&record);
    assert!(
        started_line.text.contains(&file),
        "verde's log line names another file than the record's {file}: {}",
        started_line.text
    );
    assert!(
        (started - started_line.time).abs() < 0.5,
        "the record says the recording started at {started:.3}, the log at {:.3}",
        started_line.time
    );
    assert!(
        (stopped - hung_up_at).abs() < 1.5,
        "the recording stopped at {stopped:.3}, the caller hung up at {hung_up_at:.3}"
    );
    let wav = check_stereo_wav(&verde, &file, "recorded by policy");
    assert!(
        (wav.duration() - (stopped - started)).abs() <= DURATION_TOLERANCE_S,
        "the WAV lasts {:.3} s but the record says {:.3} s (started_at to stopped_at)",
        wav.duration(),
        stopped - started
    );

    // 2. operator, on demand from the bar.
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(10));
    let call_id2 = dial_and_wait_answer(&mut caller, &verde, DID_ON_DEMAND);
    let call2 = offered_and_answered(&mut bar, DID_ON_DEMAND);
    // Talking, not recorded yet.
    sleep(Duration::from_millis(1500));
    let on_sent = epoch_now();
    bar.cmd_ok(json!({"type": "record", "call": call2, "on": true}));
    let on_done = epoch_now();
    bar.wait_event("recording", WAIT, |m| m["call"] == call2 && m["on"] == true);
    sleep(Duration::from_secs(5));
    let off_sent = epoch_now();
    bar.cmd_ok(json!({"type": "record", "call": call2, "on": false}));
    let off_done = epoch_now();
    bar.wait_event("recording", WAIT, |m| {
        m["call"] == call2 && m["on"] == false
    });
    sleep(Duration::from_millis(1500));
    hang_up(&mut caller);
    bar.wait_event("call_ended", WAIT, |m| m["call"] == call2);
    let record2 = verde.wait_call_record(&call_id2, Duration::from_secs(10));
    let (file2, started2, stopped2) = only_recording(&record2);
    assert!(
        started2 >= on_sent - 0.2 && started2 <= on_done + 0.2,
        "the on-demand recording started at {started2:.3}, outside `record on` \
         ({on_sent:.3}..{on_done:.3})"
    );
    assert!(
        stopped2 >= off_sent - 0.2 && stopped2 <= off_done + 0.2,
        "the on-demand recording stopped at {stopped2:.3}, outside `record off` \
         ({off_sent:.3}..{off_done:.3})"
    );
    first_call_log(&verde, &call_id2, "agent starts recording from its bar");
    first_call_log(&verde, &call_id2, "recording the conversation");
    let wav2 = check_stereo_wav(&verde, &file2, "on demand");
    assert!(
        (wav2.duration() - (stopped2 - started2)).abs() <= DURATION_TOLERANCE_S,
        "on demand: the WAV lasts {:.3} s but the record says {:.3} s",
        wav2.duration(),
        stopped2 - started2
    );
    let (shortest, longest) = (off_sent - on_done, off_done - on_sent);
    assert!(
        wav2.duration() >= shortest - DURATION_TOLERANCE_S
            && wav2.duration() <= longest + DURATION_TOLERANCE_S,
        "on demand: the WAV lasts {:.3} s; `record on` to `record off` took {shortest:.3} to \
         {longest:.3} s",
        wav2.duration()
    );
    assert_ne!(file, file2, "two calls, two files");

    anna.quit();
    caller.quit();
    let datagrams = cap.stop();

    // What the caller heard: the notice as soon as each recording started, then the agent.
    let rtp = RtpByPeer::new(&datagrams, verde.rtp_ports);
    let caller_ports = rtp.ports_sending(CALLER_HZ);
    assert!(
        !caller_ports.is_empty(),
        "no RTP stream to verde carries the caller's {CALLER_HZ} Hz tone: {}",
        rtp.summary()
    );
    let notice_end = assert_notice_heard(&rtp, &caller_ports, started_line.time, "mode all");
    let after = rtp.heard(&caller_ports, notice_end + 0.3, hung_up_at - 0.3);
    let agent_level = tone_dbfs(&after, AGENT_HZ);
    assert!(
        agent_level >= PRESENT_DBFS,
        "after the notice the caller should hear the agent ({AGENT_HZ} Hz), but it is at \
         {agent_level:.1} dBFS over {:.1} s",
        after.duration()
    );
    // "First": the conversation reaches the caller only once the notice is over.
    let during = rtp.heard(&caller_ports, started_line.time + 0.3, notice_end - 0.3);
    let during_level = tone_dbfs(&during, AGENT_HZ);
    eprintln!(
        "during the notice the agent's tone reached the caller at {during_level:.1} dBFS; after \
         it at {agent_level:.1} dBFS"
    );
    assert!(
        during_level <= ABSENT_DBFS,
        "the caller heard the agent ({during_level:.1} dBFS) while the recording notice played: \
         the notice must come first"
    );
    assert_notice_heard(&rtp, &caller_ports, started2, "on demand");
}
