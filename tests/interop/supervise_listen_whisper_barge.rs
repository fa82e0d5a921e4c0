//! A supervisor listens to, whispers in and barges into a live call, with three real phones.
//!
//! The caller (C, a baresip sending 440 Hz) dials a test number that queues it straight into
//! `pensions`; Anna's phone (A, baresip, auto-answer, 1000 Hz) takes the call; the supervisor's
//! phone (S, a baresip registered with the supervisor's id and password, auto-answer, 1700 Hz)
//! joins when the wallboard (the supervisor's `/cti` session) sends `supervise`, then switches
//! mode every few seconds and finally leaves with `stop`.
//!
//! Who hears whom is read from a capture of verde's RTP ports: what verde sent each phone in
//! each mode's time window (half a second of guard at each switch), per tone, by Goertzel:
//!
//! | mode    | S hears | A hears | C hears |
//! |---------|---------|---------|---------|
//! | before  | —       | C       | A       |
//! | listen  | C, A    | C       | A       |
//! | whisper | C, A    | C, S    | A       |
//! | barge   | C, A    | C, S    | A, S    |
//! | after   | —       | C       | A       |
//!
//! Also: the agent's bar may not `supervise` (`forbidden`), and every `supervise` is in the
//! audit log.

use serde_json::json;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;
use verde_interop::acd::{wait_agent_registered, wait_agent_state, write_config};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::cti::{Cti, Wallboard, WAIT};
use verde_interop::media_checks::{check_hearing, epoch_now, verde_direct_queue, RtpByPeer, Voice};
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, TestDir};

const AGENT: &str = "1001";
const AGENT_PASSWORD: &str = "secret1";
const SUPERVISOR: &str = "sup1";
const SUPERVISOR_PASSWORD: &str = "watchful9";
/// `tests/fixtures/flows-direct-queue/`: straight to pensions.
const DID: &str = "800500001";
const C: Voice = Voice {
    who: "the caller",
    hz: 440.0,
};
const A: Voice = Voice {
    who: "the agent",
    hz: 1000.0,
};
const S: Voice = Voice {
    who: "the supervisor",
    hz: 1700.0,
};
/// How long each mode lasts.
const WINDOW: Duration = Duration::from_secs(4);
/// Left out of the analysis at each end of a window: the switch's own latency and jitter.
const GUARD_S: f64 = 0.5;

fn tone_wav(dir: &TestDir, name: &str, hz: f64) -> PathBuf {
    // baresip's aufile hangs up at the end of its file: longer than the test.
    let path = dir.join(format!("{name}.wav"));
    Audio::tone(8000, hz, 150.0, 0.3).save(&path);
    path
}

/// A mode's time window (epoch seconds): from when the switch was done to when the next one
/// was sent.
struct Window {
    name: &'static str,
    from: f64,
    to: f64,
}

#[test]
fn supervise_listen_whisper_barge() {
    require_private_netns();
    let dir = TestDir::new("supervise_listen_whisper_barge");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {AGENT_PASSWORD}, queues: [pensions] }}\n\
             supervisors:\n\
             \x20 - {{ id: {SUPERVISOR}, password: {SUPERVISOR_PASSWORD} }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 10s, wrap_up: 1s, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: operator }}\n"
        ),
    );
    let (verde, cap) = verde_direct_queue(&dir, config);

    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new(AGENT, AGENT_PASSWORD, verde.sip),
        &tone_wav(&dir, "anna-voice", A.hz),
    );
    let mut sup_phone = Baresip::start_agent(
        &dir,
        "sup1",
        &AgentAccount::new(SUPERVISOR, SUPERVISOR_PASSWORD, verde.sip).answer(AnswerMode::Auto),
        &tone_wav(&dir, "sup-voice", S.hz),
    );
    let mut caller = Baresip::start(&dir, "caller", &tone_wav(&dir, "caller-voice", C.hz));
    wait_agent_registered(&verde, AGENT, Duration::from_secs(10));
    // Checked on verde's side: baresip may register before its ctrl_tcp client is connected,
    // and then never reports REGISTER_OK to it.
    verde.wait_log(
        &format!("registered user={SUPERVISOR} "),
        Duration::from_secs(10),
    );

    let mut bar = Cti::connect(verde.http);
    bar.login(AGENT, AGENT_PASSWORD);
    bar.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
    let mut wallboard = Cti::connect(verde.http);
    let login = wallboard.login(SUPERVISOR, SUPERVISOR_PASSWORD);
    assert_eq!(login["role"], "supervisor", "{login}");
    wallboard.cmd_ok(json!({"type": "subscribe_queues"}));

    // The call: straight into pensions, Anna's phone answers by itself.
    caller.ctrl.dial(&format!("sip:{DID}@{}", verde.sip));
    caller
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    let offered = bar.wait_event("call_offered", Duration::from_secs(10), |m| m["did"] == DID);
    let call = offered["call"].clone();
    bar.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    let talking_since = epoch_now();

    // The supervisor finds the call on the wallboard, as a person would.
    let mut board = Wallboard::default();
    board.wait(
        &mut wallboard,
        "Anna on the call",
        Duration::from_secs(5),
        |w| {
            w.agents
                .get(AGENT)
                .is_some_and(|a| a["state"] == "oncall" && a["call"] == call)
        },
    );

    // An agent's session may not supervise, not even its own call.
    bar.cmd_err(
        json!({"type": "supervise", "call": call, "mode": "listen"}),
        "forbidden",
    );
    // A moment of plain conversation, as the baseline.
    sleep(Duration::from_secs(2));

    let listen_sent = epoch_now();
    wallboard.cmd_ok(json!({"type": "supervise", "call": call, "mode": "listen"}));
    sup_phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    verde.wait_log("supervisor joined the call", Duration::from_secs(5));
    let listen_from = epoch_now();
    sleep(WINDOW);

    let mut windows = vec![
        Window {
            name: "before",
            from: talking_since,
            to: listen_sent,
        },
        Window {
            name: "listen",
            from: listen_from,
            to: 0.0,
        },
    ];
    for mode in ["whisper", "barge"] {
        let sent = epoch_now();
        wallboard.cmd_ok(json!({"type": "supervise", "call": call, "mode": mode}));
        let done = epoch_now();
        windows.last_mut().expect("listen first").to = sent;
        windows.push(Window {
            name: if mode == "whisper" {
                "whisper"
            } else {
                "barge"
            },
            from: done,
            to: 0.0,
        });
        sleep(WINDOW);
    }
    let stop_sent = epoch_now();
    wallboard.cmd_ok(json!({"type": "supervise", "call": call, "mode": "stop"}));
    windows.last_mut().expect("barge last").to = stop_sent;
    sup_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    let after_from = epoch_now();
    sleep(Duration::from_secs(3));
    let hangup_at = epoch_now();
    windows.push(Window {
        name: "after",
        from: after_from,
        to: hangup_at,
    });
    caller.ctrl.hangup();
    caller
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    bar.wait_event("call_ended", WAIT, |m| m["call"] == call);

    // Every supervise, stop included, is audited with who did it.
    let audited: Vec<String> = verde
        .logs()
        .lines()
        .filter(|l| l.contains("supervisor joins a call") && l.contains(SUPERVISOR))
        .map(str::to_string)
        .collect();
    assert_eq!(
        audited.len(),
        4,
        "one audit line per supervise (listen, whisper, barge, stop) expected: {audited:#?}"
    );
    // In the order sent, each naming its mode (`stop` has none).
    for (line, mode) in audited.iter().zip(["Listen", "Whisper", "Barge", "None"]) {
        assert!(
            line.contains(mode) && line.contains(&format!("call={call}")),
            "audit line for {mode} on call {call}: {line}"
        );
    }

    // And durably: the queue log (what an auditor exports) holds each join and the leave,
    // naming the supervisor and the agent on the call.
    let days = |d: i64| civil_date(epoch_now() as i64 / 86_400 + d);
    let token = login["token"]
        .as_str()
        .expect("supervisor token")
        .to_string();
    let path = format!("/api/export.csv?from={}&to={}&log=queue", days(-1), days(1));
    let trail = verde_interop::try_wait_for(WAIT, || {
        let r = verde.get_with(&path, Some(&token));
        assert_eq!(r.status, 200, "{}", r.text());
        let rows: Vec<String> = r
            .text()
            .lines()
            .filter(|l| l.contains(",supervise,"))
            .map(str::to_string)
            .collect();
        (rows.len() == 4).then_some(rows)
    })
    .unwrap_or_else(|| panic!("four supervise rows expected in the queue log"));
    for (row, mode) in trail.iter().zip(["listen", "whisper", "barge", "leave"]) {
        assert!(
            row.contains(&format!("{SUPERVISOR},{mode}")) && row.contains(AGENT),
            "queue-log audit row for {mode}: {row}"
        );
    }

    anna.quit();
    sup_phone.quit();
    caller.quit();
    let datagrams = cap.stop();

    let rtp = RtpByPeer::new(&datagrams, verde.rtp_ports);
    let ports = |v: Voice| {
        let p = rtp.ports_sending(v.hz);
        assert!(
            !p.is_empty(),
            "no RTP stream to verde carries {}'s {} Hz tone: {}",
            v.who,
            v.hz,
            rtp.summary()
        );
        p
    };
    let (c_ports, a_ports, s_ports) = (ports(C), ports(A), ports(S));

    let mut failures = Vec::new();
    let mut table = Vec::new();
    for w in &windows {
        let (from, to) = (w.from + GUARD_S, w.to - GUARD_S);
        assert!(
            to - from >= 0.9,
            "the {} window is only {:.2} s long after its guards: the test's timing is off",
            w.name,
            to - from
        );
        let min_secs = (to - from) * 0.8;
        let supervised = matches!(w.name, "listen" | "whisper" | "barge");
        // (listener, its ports, must hear, must not hear)
        let mut cells = vec![
            (
                "C",
                &c_ports,
                if w.name == "barge" {
                    vec![A, S]
                } else {
                    vec![A]
                },
                if w.name == "barge" { vec![] } else { vec![S] },
            ),
            (
                "A",
                &a_ports,
                if matches!(w.name, "whisper" | "barge") {
                    vec![C, S]
                } else {
                    vec![C]
                },
                if matches!(w.name, "whisper" | "barge") {
                    vec![]
                } else {
                    vec![S]
                },
            ),
        ];
        if supervised {
            cells.push(("S", &s_ports, vec![C, A], vec![]));
        }
        for (listener, p, present, absent) in cells {
            let heard = rtp.heard(p, from, to);
            table.push(check_hearing(
                &mut failures,
                listener,
                w.name,
                &heard,
                min_secs,
                &present,
                &absent,
            ));
        }
        if !supervised {
            // Nothing at all goes to the supervisor's phone outside the supervision.
            let stray = rtp.heard(&s_ports, from, to);
            if stray.duration() > 0.0 {
                failures.push(format!(
                    "{}: verde sent the supervisor's phone {:.2} s of audio",
                    w.name,
                    stray.duration()
                ));
            }
        }
    }
    eprintln!("who heard what (dBFS per tone):\n{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} wrong cell(s) of who hears whom:\n- {}\nmeasured:\n{}",
        failures.len(),
        failures.join("\n- "),
        table.join("\n")
    );
}

/// The proleptic Gregorian date (YYYY-MM-DD) of a day counted from 1970-01-01.
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
