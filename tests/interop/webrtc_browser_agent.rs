//! An agent answers a SIPp caller in the browser (issue 7's agent softphone), and a caller on the
//! "call now" page in the browser (the third combination, last test): the agent bar
//! (`/agent`) in headless Debian chromium driven by playwright-core
//! (`tests/browser/webrtc_agent.mjs`), the device set to "browser", no SIP phone at all.
//!
//! The agent logs in, chooses the browser as the device and becomes ready; a SIPp caller
//! dials a test number that queues it straight into pensions (`tests/fixtures/flows-direct-queue`)
//! while it sends a tone of [`CALLER_HZ`] (a PCMU pcap). The offer pops up in the page with the
//! caller's number and queue and the page rings (verde's `softphone_offer`); Answer connects the
//! page's peer connection and the bar shows the call connected. Both directions are checked
//! with tones that could only be where they are if the bridge works: the page's remote audio
//! (a WebAudio analyser on `verdeSoftphone.remote`) carries the caller's tone and not its own,
//! and the RTP verde sends the SIPp caller (captured on `lo`) carries the page's fake microphone
//! (a WAV of [`AGENT_HZ`]) and not the caller's own tone. The agent then hangs up from the bar:
//! verde sends SIPp its BYE, and the call record names the agent, `answered-agent`, `pstn`.
//! The agent never registered a phone; verde's log says it rang the agent's browser.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use verde_interop::acd::{agent, call_log, first_call_log, heard_by_sipp_when, variable};
use verde_interop::acd::{wait_agent_state, write_config};
use verde_interop::callbacks::rfc3339_ms;
use verde_interop::media_checks::{
    check_hearing, epoch_now, tone_dbfs, verde_direct_queue, Voice, ABSENT_DBFS, PRESENT_DBFS,
};
use verde_interop::node::{screenshot_dir, NodeScript};
use verde_interop::pcap::{rtp_packet, write_udp_pcap};
use verde_interop::sipp::{play_pcap_after, scenario, Sipp};
use verde_interop::survey::wait_call_log;
use verde_interop::verde::field;
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, TestDir};

const AGENT: &str = "a1";
const AGENT_PASSWORD: &str = "pw-a1";
const CALLER: &str = "0644000123";
/// `tests/fixtures/flows-direct-queue/direct-pensions.yaml`: straight into pensions.
const DID: &str = "800500001";
/// The caller's voice (SIPp's pcap) and the agent's (the page's fake microphone): neither a
/// DTMF frequency nor a harmonic of the other, nor the page's 440/480 Hz ring.
const CALLER_HZ: f64 = 520.0;
const AGENT_HZ: f64 = 1250.0;
/// How the record and the pop-up name a caller on the "call now" page.
const WEB_CALLER: &str = "webrtc:127.0.0.1";
/// How long the page listens while both talk; what verde sends the caller is cut from the
/// same interval.
const LISTEN_MS: u64 = 3000;
/// The caller's tone outlasts the test; its BYE wait outlasts the tone (verde hangs up first).
const CALLER_TONE_S: f64 = 45.0;
const CALLER_LISTEN_MS: u64 = 90_000;
/// The page's dominant frequency may be this far from the caller's tone (its analyser has
/// 5.4 Hz bins at the 44.1 kHz headless chromium runs at, interpolated).
const FREQ_TOLERANCE_HZ: f64 = 10.0;
/// The first moments of the bridge are not judged (the first packets through a fresh jitter
/// buffer, the switch from the queue's audio to the agent's).
const SETTLE_S: f64 = 0.5;
/// The agent's bursts: on this long in every period.
const BURST_ON_S: f64 = 0.3;
const BURST_PERIOD_S: f64 = 0.5;

/// The caller's tone as a 20 ms PCMU pcap for SIPp's `play_pcap_audio`.
fn caller_pcap(dir: &TestDir) -> PathBuf {
    let ulaw = Audio::tone(8000, CALLER_HZ, CALLER_TONE_S, 0.3).to_ulaw();
    let datagrams: Vec<(f64, Vec<u8>)> = ulaw
        .chunks_exact(160)
        .enumerate()
        .map(|(i, chunk)| {
            let rtp = rtp_packet(
                0,
                i == 0,
                1000u16.wrapping_add(i as u16),
                160 * i as u32,
                0x5eed_0520,
                chunk,
            );
            (i as f64 * 0.020, rtp)
        })
        .collect();
    let path = dir.join("caller-tone.pcap");
    write_udp_pcap(&path, &datagrams);
    path
}

/// A page's microphone: `hz` in bursts of [`BURST_ON_S`] every [`BURST_PERIOD_S`]
/// (10 ms ramps), like syllables. A steady tone would not do: the page asks for Chromium's
/// noise suppression, which takes a stationary tone for noise and pulls it down by about 20 dB
/// within 3 s (measured: -5 dBFS at the answer, -30 dBFS after 2.5 s), as it should for a fan.
/// Chromium loops the file, so a few seconds suffice.
fn burst_mic(dir: &TestDir, name: &str, hz: f64) -> PathBuf {
    let path = dir.join(name);
    let rate = 48_000;
    let mut voice = Audio::tone(rate, hz, 10.0, 0.3);
    for (i, x) in voice.samples.iter_mut().enumerate() {
        let t = (i as f64 / f64::from(rate)) % BURST_PERIOD_S;
        let ramp = 0.010;
        let gain = if t < BURST_ON_S {
            (t / ramp).min((BURST_ON_S - t) / ramp).min(1.0)
        } else {
            0.0
        };
        *x *= gain as f32;
    }
    voice.save(&path);
    path
}

/// The first line of every SIP request SIPp received (its `-trace_msg` log).
fn received_requests(messages: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_received = false;
    for line in messages.replace('\r', "").lines() {
        if line.contains("message received") {
            in_received = true;
            continue;
        }
        let l = line.trim();
        if in_received && !l.is_empty() {
            if !l.starts_with("SIP/2.0") {
                out.push(l.to_string());
            }
            in_received = false;
        }
    }
    out
}

/// `webrtc_agent.mjs` and what it reported so far.
struct Script {
    node: NodeScript,
    shots: PathBuf,
    screenshots: Vec<String>,
    reports: Vec<(String, Value)>,
}

impl Script {
    /// `shots`: the name of its screenshot directory. `web_caller`: the caller's `/call/{did}`
    /// page and microphone when the caller is a browser too (the script then drives it), else
    /// the test's SIPp calls.
    fn start(shots: &str, mic: &Path, base: &str, web_caller: Option<(&str, &Path)>) -> Script {
        let shots = screenshot_dir(shots);
        let caller = if web_caller.is_some() {
            WEB_CALLER
        } else {
            CALLER
        };
        let node = NodeScript::start(
            "webrtc_agent.mjs",
            &[&base, &shots, &mic, &AGENT, &AGENT_PASSWORD],
            &[
                ("VERDE_CALLER", &caller),
                ("VERDE_QUEUE", &"pensions"),
                ("VERDE_CALLER_URL", &web_caller.map(|w| w.0).unwrap_or("")),
                (
                    "VERDE_CALLER_MIC",
                    &web_caller.map(|w| w.1.as_os_str()).unwrap_or_default(),
                ),
                ("VERDE_LISTEN_HZ", &format!("{CALLER_HZ},{AGENT_HZ}")),
                ("VERDE_LISTEN_MS", &LISTEN_MS.to_string()),
            ],
        );
        Script {
            node,
            shots,
            screenshots: Vec::new(),
            reports: Vec::new(),
        }
    }

    /// The next `STEP <name>` (or `DONE`), keeping screenshots and JSON reports on the way;
    /// `None` when the script stopped talking (it failed: its stderr says why).
    fn next_step(&mut self) -> Option<String> {
        loop {
            let line = self.node.next_line(Duration::from_secs(60)).ok()?;
            if let Some(p) = line.strip_prefix("SHOT ") {
                self.screenshots.push(p.to_string());
            } else if let Some(s) = line.strip_prefix("STEP ") {
                return Some(s.to_string());
            } else if line == "DONE" {
                return Some(line);
            } else if let Some((kind, json)) = line.split_once(' ') {
                if let Ok(v) = serde_json::from_str::<Value>(json) {
                    self.reports.push((kind.to_string(), v));
                }
            }
        }
    }

    /// Runs the script to its end: at every `STEP`, `act` does the test's part (it panics on
    /// a step it does not know), then the script goes on. Lists the screenshots for a person
    /// to look at, and fails unless the script reached `DONE` and exited cleanly.
    fn run(&mut self, mut act: impl FnMut(&str)) {
        let mut steps = Vec::new();
        while let Some(step) = self.next_step() {
            steps.push(step.clone());
            if step == "DONE" {
                break;
            }
            act(&step);
            self.node.send("GO").expect("write to node");
        }
        let done = steps.last().map(String::as_str) == Some("DONE");
        // A script that stopped short of DONE may still wait for a GO.
        let (status, stderr) = self.node.finish(!done);
        println!(
            "\nScreenshots for a person to look at ({}):",
            self.shots.display()
        );
        for s in &self.screenshots {
            println!("  {s}");
        }
        assert!(
            status.success() && done,
            "the browser script failed ({status}) after steps {steps:?}:\n{stderr}"
        );
    }

    fn report(&self, kind: &str) -> Value {
        self.reports
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the browser script printed no {kind} report"))
    }
}

/// The level the page reported for `hz`, and in how many analyser windows it was present.
fn page_tone(heard: &Value, hz: f64) -> (f64, u64) {
    let t = heard["tones"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["hz"].as_f64() == Some(hz)))
        .unwrap_or_else(|| panic!("the page reported no level for {hz} Hz: {heard}"));
    (
        t["dbfs"].as_f64().expect("dbfs"),
        t["windows_present"].as_u64().expect("windows_present"),
    )
}

#[test]
fn browser_agent_answers_a_sipp_caller_audio_both_ways() {
    require_private_netns();
    let started = Instant::now();
    let dir = TestDir::new("webrtc_browser_agent");
    let config = agent_config(&dir);
    let (verde, cap) = verde_direct_queue(&dir, config);
    let not_registered = |when: &str| {
        let a = agent(&verde, AGENT);
        assert_eq!(
            a["registered"],
            Value::Bool(false),
            "{when}: the agent has no SIP phone, yet verde lists a registration: {a}"
        );
    };
    not_registered("at start");

    let mut script = Script::start(
        "webrtc_browser_agent",
        &burst_mic(&dir, "agent-mic.wav", AGENT_HZ),
        &format!("http://{}", verde.http),
        None,
    );

    let scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", CALLER.to_string()),
            ("ACTIONS", play_pcap_after(0, &caller_pcap(&dir))),
            ("LISTEN_MS", CALLER_LISTEN_MS.to_string()),
        ],
    );
    let mut caller = None;
    let mut call_id = String::new();
    let (mut talk_from, mut talk_to) = (0.0, 0.0);
    script.run(|step| match step {
        "ready" => {
            verde.wait_log("offers ring the browser softphone", Duration::from_secs(5));
            wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
            let sipp = Sipp::new(&scen, verde.sip)
                .service(DID)
                .timeout(Duration::from_millis(CALLER_LISTEN_MS) + Duration::from_secs(30));
            let run = sipp.spawn(&dir);
            call_id = run.call_id().to_string();
            caller = Some(run);
        }
        "offered" => {
            // The offer rang the page: verde made a WebRTC offer, not a SIP INVITE.
            first_call_log(&verde, &call_id, "offering the call to the agent's browser");
            first_call_log(&verde, &call_id, "ringing the agent's browser");
            wait_agent_state(&verde, AGENT, "ringing", Duration::from_secs(5));
        }
        "connected" => {
            talk_from = epoch_now();
            // The page saw its side connect; verde's may follow a moment later.
            let answered = wait_call_log(
                &verde,
                &call_id,
                "agent answers in the browser",
                "verde taking the page's answer",
                Duration::from_secs(5),
            );
            let bridged = wait_call_log(
                &verde,
                &call_id,
                "agent answered; bridging",
                "verde bridging the caller with the connected browser",
                Duration::from_secs(5),
            );
            assert!(
                bridged.time >= answered.time,
                "verde bridged ({}) before the page answered ({})",
                bridged.text,
                answered.text
            );
            wait_agent_state(&verde, AGENT, "oncall", Duration::from_secs(5));
        }
        "heard" => talk_to = epoch_now(),
        other => panic!("unknown step from the browser script: {other}"),
    });

    // The caller: verde hung it up when the agent did (SIPp answered verde's BYE).
    let out = caller.expect("the caller was started").wait();
    out.assert_success("the SIPp caller");
    let byes: Vec<_> = received_requests(&out.messages)
        .into_iter()
        .filter(|l| l.starts_with("BYE "))
        .collect();
    assert_eq!(
        byes.len(),
        1,
        "the agent's hang-up reaches the caller as verde's BYE; SIPp received: {:?}",
        received_requests(&out.messages)
    );
    let datagrams = cap.stop();

    // The pop-up.
    let offer = script.report("OFFER");
    println!("pop-up: {offer}");
    assert!(
        offer["caller"].as_str().unwrap_or("").contains(CALLER)
            && offer["queue"].as_str().unwrap_or("").contains("pensions")
            && offer["device_status"] == "ringing",
        "the pop-up shows the caller and the queue, and the page rings: {offer}"
    );
    let media = script.report("MEDIA");
    println!("page's peer connection: {media}");
    assert!(
        media["packets_received"].as_u64().unwrap_or(0) > 0
            && media["packets_sent"].as_u64().unwrap_or(0) > 0,
        "RTP flowed both ways on the page's peer connection: {media}"
    );

    let mut failures = Vec::new();
    // Caller -> page: the caller's tone, and not the page's own microphone.
    let heard = script.report("HEARD");
    let dominant = heard["dominant_hz"].as_f64().unwrap_or(0.0);
    let (caller_db, caller_windows) = page_tone(&heard, CALLER_HZ);
    let (agent_db, _) = page_tone(&heard, AGENT_HZ);
    let windows = heard["windows"].as_u64().unwrap_or(0);
    println!(
        "the page heard {windows} windows at {:.1} Hz sample rate: RMS {:.1} dBFS, dominant {dominant:.1} Hz, \
         caller {CALLER_HZ} Hz {caller_db:.1} dBFS (in {caller_windows} windows), agent {AGENT_HZ} Hz {agent_db:.1} dBFS",
        heard["sample_rate"].as_f64().unwrap_or(0.0),
        heard["rms_dbfs"].as_f64().unwrap_or(f64::NAN),
    );
    if (dominant - CALLER_HZ).abs() > FREQ_TOLERANCE_HZ {
        failures.push(format!(
            "the page's remote audio peaks at {dominant:.1} Hz, not at the caller's {CALLER_HZ} Hz"
        ));
    }
    if caller_db < PRESENT_DBFS || caller_windows * 10 < windows * 9 {
        failures.push(format!(
            "the page should hear the caller ({CALLER_HZ} Hz) throughout: {caller_db:.1} dBFS, present in \
             {caller_windows} of {windows} windows"
        ));
    }
    if agent_db > ABSENT_DBFS {
        failures.push(format!(
            "the page hears its own microphone ({AGENT_HZ} Hz) back at {agent_db:.1} dBFS"
        ));
    }
    // Page -> caller: what verde sent SIPp while the page listened.
    let to_caller = heard_by_sipp_when(&datagrams, &verde, out.media_port, |t| {
        t >= talk_from + SETTLE_S && t < talk_to
    });
    let line = check_hearing(
        &mut failures,
        "the SIPp caller",
        "talking",
        &to_caller,
        (LISTEN_MS as f64 / 1000.0) - 1.0,
        &[Voice {
            who: "agent",
            hz: AGENT_HZ,
        }],
        &[Voice {
            who: "itself",
            hz: CALLER_HZ,
        }],
    );
    println!("{line}");
    // Throughout, not on average: every burst period reaches the caller.
    let per_period: Vec<f64> = to_caller
        .samples
        .chunks_exact((BURST_PERIOD_S * f64::from(to_caller.rate)) as usize)
        .map(|c| {
            tone_dbfs(
                &Audio {
                    rate: to_caller.rate,
                    samples: c.to_vec(),
                },
                AGENT_HZ,
            )
        })
        .collect();
    let weakest = per_period.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "the agent's tone at the caller, per {BURST_PERIOD_S} s: {}",
        per_period
            .iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if per_period.is_empty() || weakest < PRESENT_DBFS {
        failures.push(format!(
            "the agent's tone fades at the caller: weakest {BURST_PERIOD_S} s window at {weakest:.1} dBFS \
             (< {PRESENT_DBFS})"
        ));
    }
    assert!(failures.is_empty(), "audio:\n{}", failures.join("\n"));

    // The record: the agent answered (no phone), and hung up.
    let record = verde.wait_call_record(&call_id, Duration::from_secs(10));
    let fields = [
        ("channel", "pstn"),
        ("disposition", "answered-agent"),
        ("hangup_by", "agent"),
        ("caller", CALLER),
        ("did", DID),
    ];
    for (name, want) in fields {
        assert_eq!(
            field(&record, name).as_str(),
            Some(want),
            "{name}: {record:#}"
        );
    }
    assert_eq!(variable(&record, "agent"), Some(AGENT), "record {record:#}");
    let acd = field(&record, "acd");
    let offers = acd["offers"].as_array().cloned().unwrap_or_default();
    assert!(
        offers.len() == 1 && offers[0]["agent"] == AGENT && offers[0]["outcome"] == "answered",
        "one offer, to {AGENT}, answered: {acd:#}"
    );
    let legs = acd["legs"].as_array().cloned().unwrap_or_default();
    assert!(
        legs.len() == 1 && legs[0]["agent"] == AGENT,
        "one agent leg, {AGENT}'s: {acd:#}"
    );
    let talked_ms = rfc3339_ms(legs[0]["ended_at"].as_str().unwrap_or_default()).saturating_sub(
        rfc3339_ms(legs[0]["answered_at"].as_str().unwrap_or_default()),
    );
    assert!(
        talked_ms >= LISTEN_MS,
        "the agent's leg lasted {talked_ms} ms, less than the {LISTEN_MS} ms the page listened: {acd:#}"
    );

    // No phone was needed: never registered, never called by SIP.
    not_registered("after the call");
    for sip_path in ["offering the call to an agent", "calling its phone"] {
        let lines = call_log(&verde, &call_id, sip_path);
        assert!(
            lines.is_empty(),
            "verde took the SIP phone path ({sip_path:?}): {:?}",
            lines.iter().map(|l| &l.text).collect::<Vec<_>>()
        );
    }
    println!(
        "record: channel pstn, answered-agent by {AGENT}, hung up by the agent after {talked_ms} ms; \
         test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The config both cases use: one agent in pensions, no phone.
fn agent_config(dir: &TestDir) -> PathBuf {
    write_config(
        dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {AGENT}, name: Anna, password: {AGENT_PASSWORD}, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 30s, wrap_up: 2s, announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             \x20 - {{ name: operator }}\n"
        ),
    )
}

/// Checks a page heard the other side's bursts of `want` and `not` (its own voice) hardly at all.
fn heard_only(failures: &mut Vec<String>, who: &str, heard: &Value, want: f64, not: f64) {
    let dominant = heard["dominant_hz"].as_f64().unwrap_or(0.0);
    let (want_db, want_windows) = page_tone(heard, want);
    let (not_db, _) = page_tone(heard, not);
    let windows = heard["windows"].as_u64().unwrap_or(0);
    println!(
        "{who} heard {windows} windows: dominant {dominant:.1} Hz, {want} Hz at {want_db:.1} dBFS \
         (in {want_windows} windows), its own {not} Hz at {not_db:.1} dBFS"
    );
    if (dominant - want).abs() > FREQ_TOLERANCE_HZ {
        failures.push(format!(
            "{who}'s remote audio peaks at {dominant:.1} Hz, not {want} Hz"
        ));
    }
    // Bursts of 0.3 s every 0.5 s against 0.19 s analyser windows: about 3 windows in 4 hold
    // one; a dead direction holds none.
    if want_db < PRESENT_DBFS || want_windows * 2 < windows {
        failures.push(format!(
            "{who} should hear {want} Hz bursts: {want_db:.1} dBFS in {want_windows} of {windows} windows"
        ));
    }
    if not_db > ABSENT_DBFS {
        failures.push(format!(
            "{who} hears its own {not} Hz back at {not_db:.1} dBFS"
        ));
    }
}

/// The third combination of issue 7: a caller on the "call now" page answered by an agent in
/// the browser, each in its own Chromium with its own microphone; both pages must hear the
/// other's tone (and not their own), and the agent's hang-up ends the caller's page.
#[test]
fn browser_caller_is_answered_by_a_browser_agent() {
    require_private_netns();
    let dir = TestDir::new("webrtc_browser_to_browser");
    let (verde, _cap) = verde_direct_queue(&dir, agent_config(&dir));
    let caller_mic = burst_mic(&dir, "caller-mic.wav", CALLER_HZ);
    let caller_url = format!("http://{}/call/{DID}", verde.http);
    let mut script = Script::start(
        "webrtc_browser_to_browser",
        &burst_mic(&dir, "agent-mic.wav", AGENT_HZ),
        &format!("http://{}", verde.http),
        Some((&caller_url, &caller_mic)),
    );
    script.run(|step| match step {
        "ready" => {
            verde.wait_log("offers ring the browser softphone", Duration::from_secs(5));
            wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
        }
        "offered" => {
            verde.wait_log("ringing the agent's browser", Duration::from_secs(5));
        }
        "connected" => {
            verde.wait_log("agent answered; bridging", Duration::from_secs(5));
        }
        "heard" => {}
        other => panic!("unknown step from the browser script: {other}"),
    });
    let offer = script.report("OFFER");
    assert!(
        offer["caller"].as_str().unwrap_or("").contains(WEB_CALLER),
        "the pop-up names the web caller: {offer}"
    );
    let mut failures = Vec::new();
    heard_only(
        &mut failures,
        "the agent's page",
        &script.report("HEARD"),
        CALLER_HZ,
        AGENT_HZ,
    );
    heard_only(
        &mut failures,
        "the caller's page",
        &script.report("CALLER_HEARD"),
        AGENT_HZ,
        CALLER_HZ,
    );
    assert!(failures.is_empty(), "audio:\n{}", failures.join("\n"));
    let end = script.report("CALLER_END");
    assert_eq!(end["state"], "ended", "{end}");
    let call_id = end["call_id"]
        .as_str()
        .expect("the caller page's call id")
        .to_string();
    let record = verde.wait_call_record(&call_id, Duration::from_secs(10));
    for (name, want) in [
        ("channel", "webrtc"),
        ("caller", WEB_CALLER),
        ("did", DID),
        ("disposition", "answered-agent"),
        ("hangup_by", "agent"),
    ] {
        assert_eq!(
            field(&record, name).as_str(),
            Some(want),
            "{name}: {record:#}"
        );
    }
    assert_eq!(variable(&record, "agent"), Some(AGENT), "record {record:#}");
}
