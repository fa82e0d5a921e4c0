//! A citizen calls 803164 from the public "call now" page in a real browser: headless Debian
//! chromium driven by playwright-core (`tests/browser/webrtc_caller.mjs`), its microphone a WAV
//! file, against a real agent's phone (baresip, auto-answer).
//!
//! - The page connects (ICE, DTLS-SRTP over loopback) and the browser hears the welcome prompt:
//!   a WebAudio analyser on `verdeCall.remote` sees, during the prompt's interval in verde's log,
//!   audio whose energy envelope follows the prompt's, at the prompt's level (±6 dB) and with
//!   its dominant frequency (±15 %). Controls run the same measure on a silent stream, on
//!   another prompt and on the phone's tone in the prompt's place, and must see each fail.
//! - Keys from the page's keypad (RFC 4733 from RTCDTMFSender) walk the IVR: 1 at the language
//!   menu (verde logs `lang_it`), 1 at the service menu (`q_pensions`), and the caller waits in
//!   the pensions queue while the only agent is logged out.
//! - The agent logs in (`*11`), verde offers the waiting call to the phone, which answers: the
//!   page shows `agent` and hears the phone's 1 kHz tone at its level, and the phone records
//!   the browser's microphone: 1.8 kHz bursts in the file's rhythm.
//! - The page hangs up; the call record says channel webrtc, caller webrtc:127.0.0.1, the path
//!   through both menus, the agent, answered-agent and hang-up by the caller.
//!
//! Every wait is on an event (a line of verde's log, a baresip event, the page's state, the
//! analyser's clock) with a deadline; nothing sleeps for a guessed time.

use serde_json::Value;
use std::time::Duration;
use verde_interop::acd::{
    agent_voice, call_log, queue_wait_ms, recording_after_login, uri_user, variable,
    wait_agent_state, wait_queue, write_config, LogLine, OTHER_INPS_QUEUES,
};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::flows::{self, INPS, NODE_PENSIONS_QUEUE};
use verde_interop::media_checks::{tone_dbfs, PRESENT_DBFS};
use verde_interop::node::{screenshot_dir, NodeScript};
use verde_interop::verde::{assert_record_branch, field, Verde, VerdeOptions};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{require_private_netns, tail, try_wait_for, TestDir};

const AGENT: &str = "a1";
const AGENT_PASSWORD: &str = "web-secret";
/// What the agent's phone sends, and what the browser's microphone sends: two tones apart from
/// each other and from the prompt's dominant frequency.
const AGENT_HZ: f64 = 1000.0;
const MIC_HZ: f64 = 1800.0;
/// Amplitude of both tones (about -10.5 dBFS).
const TONE_AMPLITUDE: f32 = 0.3;
/// How far the browser's playout may lag verde's log line that starts the prompt (network,
/// jitter buffer, WebAudio): the envelope is searched over this range of delays.
const MAX_LAG_MS: f64 = 800.0;
const LAG_STEP_MS: f64 = 5.0;
/// The prompt heard in the browser must follow the prompt's envelope at least this well.
const MIN_ENVELOPE_CORRELATION: f64 = 0.8;
/// Level: the browser hears the prompt (and the phone's tone) within this many dB of the file.
const LEVEL_TOLERANCE_DB: f64 = 6.0;
/// Dominant frequency of speech: within this share of the prompt's.
const FREQUENCY_TOLERANCE: f64 = 0.15;
/// Speech's spectrum is smoothed over half an octave before taking its peak: single bins of a
/// voice are harmonics of its pitch, a few dB apart, and which one wins would be chance.
const SMOOTHING_OCTAVES: f64 = 0.5;
/// The band the page can hear from a G.711 call.
const VOICE_BAND: (f64, f64) = (100.0, 3400.0);

#[test]
fn browser_calls_803164_hears_the_prompt_walks_the_ivr_and_talks_to_an_agent() {
    require_private_netns();
    let t_start = std::time::Instant::now();
    let dir = TestDir::new("webrtc_browser_caller");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {AGENT}, password: {AGENT_PASSWORD}, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 20s, wrap_up: 5s, announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let mut phone = Baresip::start_agent(
        &dir,
        AGENT,
        &AgentAccount::new(AGENT, AGENT_PASSWORD, verde.sip),
        &agent_voice(&dir, AGENT_HZ, 120.0),
    );
    wait_agent_state(&verde, AGENT, "loggedout", Duration::from_secs(10));
    verde_interop::acd::wait_agent_registered(&verde, AGENT, Duration::from_secs(10));

    let mic_voice = mic_voice();
    let mic = dir.join("browser-mic.wav");
    mic_voice.save(&mic);

    let shots = screenshot_dir("webrtc_browser_caller");
    let mut browser = Browser::start(&format!("http://{}", verde.http), INPS, &mic, &shots);

    // 1. Connected: the flow starts with the welcome prompt.
    let connected = browser.expect("CONNECTED", Duration::from_secs(40));
    let connected: Value = serde_json::from_str(&connected).expect("CONNECTED json");
    println!("connected: {connected}");
    let call_id = connected["call_id"]
        .as_str()
        .expect("verdeCall.callId")
        .to_string();
    let analyser = Analyser::from_json(&connected);
    let welcome = wait_call_log(&verde, &call_id, "ivr node node=welcome");
    let menu = wait_call_log(&verde, &call_id, "ivr node node=language_menu");
    let heard = browser.snapshots(welcome.time, menu.time + MAX_LAG_MS / 1000.0 + 0.3);
    let (lang, name) = flows::BEFORE_LANGUAGE_MENU[0];
    let prompt = flows::prompt(lang, name);
    let welcome_match = measure_prompt(&prompt, welcome.time, &heard, &analyser);
    println!("welcome prompt in the browser: {}", welcome_match.report);
    assert!(
        welcome_match.failures().is_empty(),
        "the browser did not hear the welcome prompt (wrong {:?}): {}",
        welcome_match.failures(),
        welcome_match.report
    );
    // The measure tells the prompt from the call's other sounds.
    for other in [AGENT_HZ, MIC_HZ] {
        assert!(
            (welcome_match.prompt_f - other).abs() / welcome_match.prompt_f
                > 2.0 * FREQUENCY_TOLERANCE,
            "the welcome prompt's dominant frequency {:.0} Hz is too close to the test's {other} \
             Hz tone to tell them apart: pick other tones",
            welcome_match.prompt_f
        );
    }

    // 2. Keys from the keypad: 1 (Italian), then 1 (pensions).
    browser.command("KEY 1");
    let lang = wait_call_log(&verde, &call_id, "ivr node node=lang_it");
    let digit = first_log_between(&verde, &call_id, "dtmf digit=1", menu.time, lang.time);
    assert!(
        digit.text.contains("source=Rfc4733"),
        "the page's key arrived as RFC 4733: {}",
        digit.text
    );
    let service = wait_call_log(&verde, &call_id, "ivr node node=service_menu");
    browser.command("KEY 1");
    let pensions = wait_call_log(
        &verde,
        &call_id,
        &format!("ivr node node={NODE_PENSIONS_QUEUE}"),
    );
    let digit = first_log_between(
        &verde,
        &call_id,
        "dtmf digit=1",
        service.time,
        pensions.time,
    );
    assert!(
        digit.text.contains("source=Rfc4733"),
        "the page's second key arrived as RFC 4733: {}",
        digit.text
    );
    let enqueued = wait_call_log(&verde, &call_id, "enqueued");
    assert!(
        enqueued.text.contains("queue=pensions"),
        "{}",
        enqueued.text
    );

    // 3. It waits: the only agent is logged out.
    wait_queue(
        &verde,
        "pensions",
        "holding the web caller",
        Duration::from_secs(5),
        |q| q["waiting"] == 1,
    );
    verde_interop::acd::feature_code(&mut phone, &verde, "*11");
    let bridged = wait_call_log(&verde, &call_id, "agent answered; bridging");
    let est = phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(15));
    let peer = est["peeruri"].as_str().unwrap_or_default();
    println!(
        "the phone answered the web caller: peeruri {peer:?} (user {:?})",
        uri_user(peer)
    );
    assert!(
        peer.contains("webrtc"),
        "the phone is told the call comes from the web: {est}"
    );
    browser.command("STATE agent");

    // 4. Both ways: the browser hears the phone's tone while the phone records the microphone.
    let talk = browser.snapshots(bridged.time + 0.5, bridged.time + 2.5);
    let tone_report = check_tone_heard(&talk, &analyser, AGENT_HZ);
    println!("the phone's tone in the browser: {tone_report}");

    // Controls: the same measure rejects a silent stream, another prompt, and the phone's
    // tone in the prompt's place.
    let silent: Vec<Snapshot> = heard
        .iter()
        .map(|s| Snapshot {
            t: s.t,
            rms: 0.0,
            power: vec![1e-20; s.power.len()],
        })
        .collect();
    let retimed: Vec<Snapshot> = talk
        .iter()
        .map(|s| Snapshot {
            t: s.t - talk[0].t + welcome.time,
            ..s.clone()
        })
        .collect();
    for (what, prompt, snaps) in [
        ("a silent stream", &prompt, &silent),
        (
            "the goodbye prompt",
            &flows::prompt("it", "goodbye"),
            &heard,
        ),
        ("the phone's tone", &prompt, &retimed),
    ] {
        let m = measure_prompt(prompt, welcome.time, snaps, &analyser);
        println!("control, {what}: fails {:?}: {}", m.failures(), m.report);
        assert!(
            !m.failures().is_empty(),
            "the welcome check would pass {what}: {}",
            m.report
        );
    }

    // 5. The page hangs up.
    let ended = browser.expect_after("HANGUP", "ENDED", Duration::from_secs(20));
    let ended: Value = serde_json::from_str(&ended).expect("ENDED json");
    assert_eq!(ended["state"], "ended", "page after hang-up: {ended}");
    phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    let record = verde.wait_call_record(&call_id, Duration::from_secs(10));
    browser.quit();

    assert_eq!(field(&record, "channel"), "webrtc", "record {record:#}");
    assert_eq!(
        field(&record, "caller"),
        "webrtc:127.0.0.1",
        "record {record:#}"
    );
    assert_eq!(field(&record, "did"), INPS, "record {record:#}");
    let path = assert_record_branch(&record, "keypad 1 then 1", NODE_PENSIONS_QUEUE, "it", "11");
    let expected_path = [
        "welcome",
        "language_menu",
        "lang_it",
        "language_selected",
        "privacy",
        "service_menu",
        NODE_PENSIONS_QUEUE,
    ];
    assert_eq!(path, expected_path, "record {record:#}");
    assert_eq!(variable(&record, "agent"), Some(AGENT), "record {record:#}");
    assert_eq!(
        variable(&record, "queue"),
        Some("pensions"),
        "record {record:#}"
    );
    assert_eq!(
        field(&record, "disposition"),
        "answered-agent",
        "record {record:#}"
    );
    assert_eq!(field(&record, "hangup_by"), "caller", "record {record:#}");
    // It waited from its entry in the queue until the phone answered.
    let waited = queue_wait_ms(&record) as f64;
    let logged = (bridged.time - enqueued.time) * 1000.0;
    assert!(
        waited >= 1000.0 && (waited - logged).abs() <= 250.0,
        "queue_wait_ms {waited} for a wait of {logged:.0} ms between verde's log lines: {record:#}"
    );

    // The phone's recording of the call (after the *11 one): the browser's microphone tone.
    phone.quit();
    let (rec_path, rec) = recording_after_login(&phone, "the phone's recordings");
    let (dominant, _) = rec.dominant_frequency(VOICE_BAND.0, VOICE_BAND.1, 5.0);
    let period = MIC_ON_S + MIC_OFF_S;
    // The rhythm of two bursts, found anywhere in the recording.
    let (env_corr, env_lag) = envelope_correlation(
        &rec,
        &mic_voice.slice(0.0, 2.0 * period),
        20,
        (period * 1000.0) as i64 + 100,
    );
    // The tone's level in the 100 ms windows that carry it (the bursts).
    let burst_db: Vec<f64> = rec
        .tone_windows(MIC_HZ, 0.1)
        .iter()
        .enumerate()
        .filter(|(_, &on)| on)
        .map(|(i, _)| tone_dbfs(&rec.slice(i as f64 * 0.1, (i + 1) as f64 * 0.1), MIC_HZ))
        .collect();
    let burst_level = burst_db.iter().sum::<f64>() / burst_db.len().max(1) as f64;
    let window_count = (rec.duration() / 0.1) as usize;
    let report = format!(
        "{:.2} s recorded ({}); {MIC_HZ} Hz in {} of {window_count} 100 ms windows at \
         {burst_level:.1} dBFS (the file: {:.1} dBFS; Chromium's gain control is on), dominant \
         {dominant} Hz, envelope correlation with the file's bursts {env_corr:.3} (offset \
         {env_lag} ms)",
        rec.duration(),
        rec_path.display(),
        burst_db.len(),
        20.0 * f64::from(TONE_AMPLITUDE).log10()
    );
    println!("the phone heard the browser's microphone: {report}");
    assert!(
        rec.duration() >= 2.0,
        "the phone recorded less than the 2 s of talk: {report}"
    );
    assert!(
        env_corr >= MIN_ENVELOPE_CORRELATION,
        "the phone did not hear the rhythm of the microphone's bursts: {report}"
    );
    // A 400 ms burst every 700 ms holds three whole 100 ms windows or four: ask for two.
    assert!(
        burst_db.len() * 7 >= window_count * 2,
        "the phone heard the microphone's tone in too few windows: {report}"
    );
    assert!(
        burst_level >= PRESENT_DBFS,
        "the phone heard the microphone's tone too faintly: {report}"
    );
    assert!(
        (dominant - MIC_HZ).abs() <= 10.0,
        "what the phone heard is dominated by {dominant} Hz, not the microphone's tone: {report}"
    );
    println!(
        "test took {:.1} s; screenshots in {}",
        t_start.elapsed().as_secs_f64(),
        shots.display()
    );
}

/// One period of the microphone's signal: a burst of the tone, then silence.
const MIC_ON_S: f64 = 0.4;
const MIC_OFF_S: f64 = 0.3;

/// What the browser's microphone sends (Chromium loops the file): `MIC_HZ` in bursts, at
/// 48 kHz, Chromium's capture rate. Bursts rather than a steady tone because the page asks for
/// noise suppression, which learns a steady tone as background noise and takes it away; bursts
/// with silence between them are treated as someone speaking, and their rhythm is a pattern the
/// phone's recording can be matched against.
fn mic_voice() -> Audio {
    let rate = 48_000;
    let fade = (0.01 * f64::from(rate)) as usize;
    let mut burst = Audio::tone(rate, MIC_HZ, MIC_ON_S, TONE_AMPLITUDE);
    let n = burst.samples.len();
    for i in 0..fade {
        // Raised-cosine edges: no clicks spreading the burst over other frequencies.
        let g = 0.5 - 0.5 * (std::f64::consts::PI * i as f64 / fade as f64).cos();
        burst.samples[i] *= g as f32;
        burst.samples[n - 1 - i] *= g as f32;
    }
    let mut voice = Audio::silence(rate, 0.0);
    for _ in 0..15 {
        voice.append(&burst);
        voice.append(&Audio::silence(rate, MIC_OFF_S));
    }
    voice
}

/// What the analyser in the page measures with.
#[derive(Debug, Clone)]
struct Analyser {
    /// The AudioContext's rate.
    sample_rate: f64,
    /// Samples per snapshot (fftSize).
    fft: usize,
    bin_hz: f64,
    bins: usize,
}

impl Analyser {
    fn from_json(v: &Value) -> Analyser {
        let num = |k: &str| {
            v[k].as_f64()
                .unwrap_or_else(|| panic!("CONNECTED lacks {k}: {v}"))
        };
        Analyser {
            sample_rate: num("sample_rate"),
            fft: num("fft") as usize,
            bin_hz: num("bin_hz"),
            bins: num("bins") as usize,
        }
    }

    /// Seconds of audio in one snapshot.
    fn window_s(&self) -> f64 {
        self.fft as f64 / self.sample_rate
    }

    fn bin_freqs(&self) -> Vec<f64> {
        (0..self.bins).map(|k| k as f64 * self.bin_hz).collect()
    }
}

/// One look of the analyser at what the browser was playing.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Seconds since the epoch (the page's clock, the machine's: verde logs on the same one).
    t: f64,
    rms: f64,
    /// Power per bin, linear (the analyser gives dB).
    power: Vec<f64>,
}

fn parse_snapshots(json: &str) -> Vec<Snapshot> {
    let v: Value = serde_json::from_str(json).expect("SNAPSHOTS json");
    v.as_array()
        .expect("SNAPSHOTS is an array")
        .iter()
        .map(|s| Snapshot {
            t: s["t"].as_f64().expect("t") / 1000.0,
            rms: s["rms"].as_f64().expect("rms"),
            power: s["db"]
                .as_array()
                .expect("db")
                .iter()
                .map(|d| 10f64.powf(d.as_f64().unwrap_or(-200.0) / 10.0))
                .collect(),
        })
        .collect()
}

/// The prompt as the analyser would have seen it: the window of `w` seconds ending `tau`
/// seconds into the prompt (silence outside it).
fn prompt_window(prompt: &Audio, tau: f64, w: f64) -> Vec<f32> {
    let rate = f64::from(prompt.rate);
    let n = (w * rate).round() as i64;
    let end = (tau * rate).round() as i64;
    (end - n..end)
        .map(|i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| prompt.samples.get(i))
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

fn rms(s: &[f32]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

/// Power at each of `freqs` of a Blackman-windowed frame (the analyser's window), up to a
/// constant factor.
fn frame_spectrum(frame: &[f32], rate: f64, freqs: &[f64]) -> Vec<f64> {
    let n = frame.len();
    let win: Vec<f64> = (0..n)
        .map(|i| {
            let x = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos()
        })
        .collect();
    freqs
        .iter()
        .map(|&f| {
            let w = 2.0 * std::f64::consts::PI * f / rate;
            let (mut re, mut im) = (0.0, 0.0);
            for (i, (&x, &h)) in frame.iter().zip(&win).enumerate() {
                let v = f64::from(x) * h;
                re += v * (w * i as f64).cos();
                im -= v * (w * i as f64).sin();
            }
            re * re + im * im
        })
        .collect()
}

/// The frequency in `band` where `power` (per bin of `freqs`), summed over a window of
/// `octaves` around each bin, peaks. With `octaves` 0 it is the plain peak bin.
fn dominant(freqs: &[f64], power: &[f64], band: (f64, f64), octaves: f64) -> f64 {
    let mut best = (band.0, f64::MIN);
    for &f in freqs.iter().filter(|&&f| f >= band.0 && f <= band.1) {
        let p: f64 = freqs
            .iter()
            .zip(power)
            .filter(|(&g, _)| g > 0.0 && (g / f).log2().abs() <= octaves / 2.0 + 1e-9)
            .map(|(_, &p)| p)
            .sum();
        if p > best.1 {
            best = (f, p);
        }
    }
    best.0
}

fn mean_power(spectra: impl Iterator<Item = Vec<f64>>) -> Vec<f64> {
    let mut sum: Vec<f64> = Vec::new();
    let mut n = 0usize;
    for s in spectra {
        if sum.is_empty() {
            sum = vec![0.0; s.len()];
        }
        for (a, b) in sum.iter_mut().zip(&s) {
            *a += b;
        }
        n += 1;
    }
    sum.iter().map(|p| p / n.max(1) as f64).collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    verde_interop::wav::pearson(a, b)
}

fn db(x: f64) -> f64 {
    20.0 * x.max(1e-10).log10()
}

/// How well what the browser heard from `start` (seconds since the epoch) matches a prompt.
struct PromptMatch {
    corr: f64,
    level_diff: f64,
    heard_f: f64,
    prompt_f: f64,
    report: String,
}

impl PromptMatch {
    /// The criteria it fails: empty when the browser heard the prompt.
    fn failures(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        // NaN (the correlation of a flat, silent envelope) fails.
        if self.corr.is_nan() || self.corr < MIN_ENVELOPE_CORRELATION {
            f.push("envelope");
        }
        if self.level_diff.is_nan() || self.level_diff.abs() > LEVEL_TOLERANCE_DB {
            f.push("level");
        }
        if (self.heard_f - self.prompt_f).abs() > FREQUENCY_TOLERANCE * self.prompt_f {
            f.push("dominant frequency");
        }
        f
    }
}

/// Compares the snapshots taken while verde played `prompt` (from `start`) with the prompt
/// itself, as the analyser would have seen it: energy envelope (at the best delay), level and
/// dominant frequency.
fn measure_prompt(prompt: &Audio, start: f64, heard: &[Snapshot], an: &Analyser) -> PromptMatch {
    let w = an.window_s();
    let dur = prompt.duration();
    // Snapshots inside the prompt whatever the delay: each compared with the prompt's window.
    let fixed: Vec<&Snapshot> = heard
        .iter()
        .filter(|s| s.t - start >= MAX_LAG_MS / 1000.0 + w && s.t - start <= dur)
        .collect();
    assert!(
        fixed.len() >= 30,
        "only {} analyser snapshots inside the welcome prompt (of {}): is the page's timer \
         running?",
        fixed.len(),
        heard.len()
    );
    let got: Vec<f64> = fixed.iter().map(|s| s.rms).collect();
    let mut best = (0.0, f64::MIN);
    let mut lag = 0.0;
    while lag <= MAX_LAG_MS {
        let want: Vec<f64> = fixed
            .iter()
            .map(|s| rms(&prompt_window(prompt, s.t - start - lag / 1000.0, w)))
            .collect();
        let c = pearson(&want, &got);
        if c > best.1 {
            best = (lag, c);
        }
        lag += LAG_STEP_MS;
    }
    let (lag, corr) = best;
    let lag_s = lag / 1000.0;
    // The whole prompt at that delay: level and spectrum, the file's against the browser's.
    let inside: Vec<&Snapshot> = heard
        .iter()
        .filter(|s| s.t - start - lag_s >= w && s.t - start - lag_s <= dur)
        .collect();
    let windows: Vec<Vec<f32>> = inside
        .iter()
        .map(|s| prompt_window(prompt, s.t - start - lag_s, w))
        .collect();
    let level = |v: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = v.fold((0.0, 0usize), |(s, n), r| (s + r * r, n + 1));
        (sum / n.max(1) as f64).sqrt()
    };
    let heard_rms = level(&mut inside.iter().map(|s| s.rms));
    let prompt_rms = level(&mut windows.iter().map(|f| rms(f)));
    let freqs = an.bin_freqs();
    let heard_spec = mean_power(inside.iter().map(|s| s.power.clone()));
    let prompt_spec = mean_power(
        windows
            .iter()
            .map(|f| frame_spectrum(f, f64::from(prompt.rate), &freqs)),
    );
    let heard_f = dominant(&freqs, &heard_spec, VOICE_BAND, SMOOTHING_OCTAVES);
    let prompt_f = dominant(&freqs, &prompt_spec, VOICE_BAND, SMOOTHING_OCTAVES);
    let level_diff = db(heard_rms) - db(prompt_rms);
    let report = format!(
        "delay {lag:.0} ms, envelope correlation {corr:.3} over {} snapshots; level {:.1} dBFS \
         vs the file's {:.1} dBFS ({level_diff:+.1} dB); dominant frequency {heard_f:.0} Hz vs \
         the file's {prompt_f:.0} Hz ({} snapshots, {:.1} Hz bins)",
        fixed.len(),
        db(heard_rms),
        db(prompt_rms),
        inside.len(),
        an.bin_hz
    );
    PromptMatch {
        corr,
        level_diff,
        heard_f,
        prompt_f,
        report,
    }
}

/// Fails unless the snapshots are a `hz` tone at the level the phone sends it.
fn check_tone_heard(heard: &[Snapshot], an: &Analyser, hz: f64) -> String {
    assert!(
        heard.len() >= 30,
        "only {} analyser snapshots while talking to the agent",
        heard.len()
    );
    let freqs = an.bin_freqs();
    let spec = mean_power(heard.iter().map(|s| s.power.clone()));
    let peak = dominant(&freqs, &spec, VOICE_BAND, 0.0);
    let level = (heard.iter().map(|s| s.rms * s.rms).sum::<f64>() / heard.len() as f64).sqrt();
    let sent = f64::from(TONE_AMPLITUDE) / std::f64::consts::SQRT_2;
    let report = format!(
        "peak {peak:.0} Hz (bins of {:.1} Hz), level {:.1} dBFS vs the {:.1} dBFS sent, over {} \
         snapshots",
        an.bin_hz,
        db(level),
        db(sent),
        heard.len()
    );
    assert!(
        (peak - hz).abs() <= an.bin_hz,
        "the browser must hear the phone's {hz} Hz tone: {report}"
    );
    assert!(
        (db(level) - db(sent)).abs() <= LEVEL_TOLERANCE_DB,
        "the browser heard the phone's tone at the wrong level: {report}"
    );
    report
}

/// Waits up to 30 s for a line of call `call_id` in verde's log containing `needle`.
fn wait_call_log(verde: &Verde, call_id: &str, needle: &str) -> LogLine {
    try_wait_for(Duration::from_secs(30), || {
        call_log(verde, call_id, needle).into_iter().next()
    })
    .unwrap_or_else(|| {
        panic!(
            "timed out waiting for {needle:?} in verde's log of call {call_id}; its lines:\n{}",
            verde.call_logs(call_id)
        )
    })
}

/// The first line of the call containing `needle` logged between `from` and `to`.
fn first_log_between(verde: &Verde, call_id: &str, needle: &str, from: f64, to: f64) -> LogLine {
    call_log(verde, call_id, needle)
        .into_iter()
        .find(|l| l.time >= from && l.time <= to)
        .unwrap_or_else(|| {
            panic!(
                "no {needle:?} logged for call {call_id} between {from} and {to}:\n{}",
                verde.call_logs(call_id)
            )
        })
}

/// `webrtc_caller.mjs`, driven line by line.
struct Browser {
    node: NodeScript,
}

impl Browser {
    fn start(base: &str, number: &str, mic: &std::path::Path, shots: &std::path::Path) -> Browser {
        Browser {
            node: NodeScript::start("webrtc_caller.mjs", &[&base, &number, &mic, &shots], &[]),
        }
    }

    /// Waits for the line starting with `prefix ` and returns the rest.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.node.next_line(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim_start().to_string();
                    }
                }
                Err(e) => self.fail(&format!("waiting for {prefix} from the browser: {e}")),
            }
        }
    }

    fn send(&mut self, line: &str) {
        if let Err(e) = self.node.send(line) {
            self.fail(&format!("sending {line:?} to the browser script: {e}"));
        }
    }

    fn expect_after(&mut self, command: &str, prefix: &str, timeout: Duration) -> String {
        self.send(command);
        self.expect(prefix, timeout)
    }

    /// A command answered by `OK <command>`.
    fn command(&mut self, command: &str) {
        self.expect_after(command, &format!("OK {command}"), Duration::from_secs(40));
    }

    /// The analyser's snapshots between two times (seconds since the epoch); the script waits
    /// until the page's analyser has passed `to`.
    fn snapshots(&mut self, from: f64, to: f64) -> Vec<Snapshot> {
        let cmd = format!("SNAPSHOTS {:.0} {:.0}", from * 1000.0, to * 1000.0);
        let json = self.expect_after(&cmd, "SNAPSHOTS", Duration::from_secs(60));
        parse_snapshots(&json)
    }

    fn quit(&mut self) {
        self.send("QUIT");
        self.expect("DONE", Duration::from_secs(20));
        let (status, stderr) = self.node.finish(false);
        assert!(
            status.success(),
            "the browser script exited with {status} (ended if it did not exit after DONE); \
             its stderr:\n{}",
            tail(&stderr, 40)
        );
    }

    fn fail(&mut self, what: &str) -> ! {
        let (_, stderr) = self.node.finish(true);
        panic!(
            "{what}; the browser script's stderr:\n{}",
            tail(&stderr, 40)
        );
    }
}
