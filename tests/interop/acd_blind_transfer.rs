//! Blind transfer by the agent: a caller reaches agent A (pensions only) through the INPS flow;
//! A's phone first REFERs the call to a number (`sip:9999@...`), which verde must refuse with 403
//! while the call stays bridged, then to the queue `benefits`, which verde must accept (202, a
//! NOTIFY with sipfrag 200, a BYE to A) and hand the caller to agent B (benefits only).
//!
//! A's phone is SIPp, so every message of the transfer can be checked: one SIPp registers A and
//! dials *11, another (on the registered Contact) takes the ACD's call and sends the REFERs. B's
//! phone is baresip, answering by itself and recording what it hears. The caller streams a tone
//! that must reach B; A streams its own tone, which must never reach B.

use std::time::Duration;
use verde_interop::acd::{
    answered_callers, assert_reached_queue, feature_code, first_call_log, inps_caller_scenario,
    offered_callers, parse_log_time, variable, wait_agent, wait_agent_state, write_config,
};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::callbacks::ulaw_file;
use verde_interop::flows::INPS;
use verde_interop::pcap::{rtp_stream, Capture};
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{free_port, free_ports, require_private_netns, TestDir};

const ANNA: &str = "1001";
const BRUNO: &str = "1002";
const CALLER: &str = "0622000001";
const CALLER_HZ: f64 = 600.0;
const ANNA_HZ: f64 = 1000.0;
const BRUNO_HZ: f64 = 1500.0;
const WIN: f64 = 0.2;
/// After A answers: the refused REFER, then the accepted one this much later.
const REFUSED_AFTER_MS: u64 = 2000;
const TRANSFER_AFTER_MS: u64 = 2000;
/// How long the caller stays after the key that queues it: A's 4 s, the transfer, and about
/// 4 s with B.
const CALLER_STAY_MS: u64 = 10_000;
const REFUSED_TARGET: &str = "sip:9999@127.0.0.1";
const TARGET: &str = "sip:benefits@127.0.0.1";

/// One SIP message from SIPp's `-trace_msg` log.
#[derive(Debug)]
struct Logged {
    received: bool,
    text: String,
}

impl Logged {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default().trim()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\n\n").next().unwrap_or_default();
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn body(&self) -> &str {
        self.text
            .split_once("\n\n")
            .map(|(_, b)| b.trim())
            .unwrap_or("")
    }

    fn cseq(&self) -> String {
        self.header("CSeq").unwrap_or_default().to_string()
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    fn is_response(&self, code: u16, cseq: &str) -> bool {
        self.first_line().starts_with(&format!("SIP/2.0 {code} ")) && self.cseq() == cseq
    }
}

/// SIPp's message log as a list, in order.
fn sipp_messages(log: &str) -> Vec<Logged> {
    let log = log.replace('\r', "");
    let mut out: Vec<Logged> = Vec::new();
    for block in log.split("\n-----------------------------------------------") {
        let mut lines = block.lines().skip(1).skip_while(|l| l.trim().is_empty());
        let Some(what) = lines.next() else { continue };
        let received = what.contains("message received");
        if !received && !what.contains("message sent") {
            continue;
        }
        let text: String = lines.collect::<Vec<_>>().join("\n").trim().to_string();
        if !text.is_empty() {
            out.push(Logged { received, text });
        }
    }
    out
}

fn position(msgs: &[Logged], what: &str, want: impl Fn(&Logged) -> bool) -> usize {
    msgs.iter().position(want).unwrap_or_else(|| {
        panic!(
            "A's phone never logged {what}; its messages:\n{}",
            msgs.iter()
                .map(|m| format!(
                    "{} {}",
                    if m.received { "<-" } else { "->" },
                    m.first_line()
                ))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn agent_refer_to_a_queue_requeues_the_caller_and_refer_elsewhere_is_refused() {
    require_private_netns();
    let dir = TestDir::new("acd_blind_transfer");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{ANNA}\", name: Anna, password: secret1, queues: [pensions] }}\n\
             \x20 - {{ id: \"{BRUNO}\", name: Bruno, password: secret2, queues: [benefits] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 4s, wrap_up: 1s, \
             announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: benefits, ring_timeout: 4s, wrap_up: 1s, \
             announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: pin }}\n\
             \x20 - {{ name: operator }}\n"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            rtp_ports: 40,
            ..Default::default()
        },
    );
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));

    // A's phone, half one: the UAS on the Contact it registers, waiting for the ACD's call.
    let anna_uas_port = free_port();
    let anna_uas_scen = scenario(
        &dir,
        "uas_agent_refer.xml",
        &[
            ("AGENT", ANNA.to_string()),
            (
                "ULAW",
                ulaw_file(&dir, "anna-voice", &Audio::tone(8000, ANNA_HZ, 2.0, 0.3))
                    .display()
                    .to_string(),
            ),
            ("REFUSED_AFTER_MS", REFUSED_AFTER_MS.to_string()),
            ("REFUSED_TARGET", REFUSED_TARGET.to_string()),
            ("TRANSFER_AFTER_MS", TRANSFER_AFTER_MS.to_string()),
            ("TARGET", TARGET.to_string()),
        ],
    );
    let mut anna_uas = Sipp::new(&anna_uas_scen, verde.sip)
        .uas()
        .local_port(anna_uas_port)
        .media_port(free_ports(4))
        .timeout(Duration::from_secs(60))
        .spawn(&dir);
    anna_uas.wait_bound();

    // Half two registers and logs in, while B's baresip does the same.
    let login_scen = scenario(
        &dir,
        "uac_agent_login.xml",
        &[
            ("AGENT", ANNA.to_string()),
            ("PASSWORD", "secret1".to_string()),
            ("UAS_PORT", anna_uas_port.to_string()),
            ("CODE", "*11".to_string()),
        ],
    );
    let bruno_voice = dir.join("bruno-voice.wav");
    Audio::tone(8000, BRUNO_HZ, 120.0, 0.3).save(&bruno_voice);
    let mut bruno = Baresip::start_agent(
        &dir,
        "bruno",
        &AgentAccount::new(BRUNO, "secret2", verde.sip),
        &bruno_voice,
    );
    std::thread::scope(|s| {
        let login = s.spawn(|| {
            Sipp::new(&login_scen, verde.sip)
                .timeout(Duration::from_secs(20))
                .run(&dir)
        });
        wait_agent(&verde, BRUNO, "registered", Duration::from_secs(10), |a| {
            a["registered"] == serde_json::json!(true)
        });
        feature_code(&mut bruno, &verde, "*11");
        login
            .join()
            .expect("login thread")
            .assert_success("A's phone (SIPp): REGISTER and *11");
    });
    wait_agent_state(&verde, ANNA, "ready", Duration::from_secs(5));
    wait_agent_state(&verde, BRUNO, "ready", Duration::from_secs(5));

    // The caller: 1 (Italian), 1 (pensions), then its tone.
    let (caller_scen, longest) = inps_caller_scenario(
        &dir,
        CALLER,
        '1',
        Some(&Audio::tone(8000, CALLER_HZ, 40.0, 0.3)),
        CALLER_STAY_MS,
    );
    let caller = Sipp::new(&caller_scen, verde.sip)
        .service(INPS)
        .media_port(free_ports(4))
        .timeout(longest + Duration::from_secs(20));
    let scoped = std::thread::scope(|s| {
        let call = s.spawn(|| caller.run(&dir));

        // The refused REFER: the call must still be bridged to A, and B offered nothing.
        let refused = verde.wait_log("transfer refused", longest + Duration::from_secs(5));
        assert!(
            refused.contains("9999"),
            "the first refused transfer should be the one to 9999: {refused}"
        );
        let anna = wait_agent(&verde, ANNA, "on the call", Duration::from_secs(1), |a| {
            a["state"] == "oncall"
        });
        assert!(
            !anna["current_call"].is_null(),
            "A is on call without a current call after the refused REFER: {anna}"
        );
        assert!(
            !call.is_finished(),
            "the caller's call ended right after the refused REFER"
        );
        let bruno_now = wait_agent(&verde, BRUNO, "ready", Duration::from_secs(1), |a| {
            a["state"] == "ready"
        });
        assert_eq!(
            bruno_now["calls_handled"], 0,
            "B after the refused REFER: {bruno_now}"
        );
        assert!(
            offered_callers(&mut bruno).is_empty(),
            "B's phone was offered a call after a refused transfer"
        );

        // The accepted REFER: A is released.
        let accepted = verde.wait_log(
            "agent transfers the caller to another queue",
            Duration::from_secs(TRANSFER_AFTER_MS / 1000 + 5),
        );
        wait_agent(
            &verde,
            ANNA,
            "off the call after transferring it",
            Duration::from_secs(3),
            |a| a["state"] != "oncall" && a["current_call"].is_null(),
        );
        (refused, accepted, call.join().expect("caller thread"))
    });
    let (refused_line, accepted_line, caller_out) = scoped;
    caller_out.assert_success(&format!("caller {CALLER}"));
    let anna_out = anna_uas.wait();
    anna_out.assert_success("A's phone (SIPp UAS): answer, REFER 403, REFER 202, NOTIFY, BYE");

    // What A's phone saw, in order.
    let msgs = sipp_messages(&anna_out.messages);
    let forbidden = position(&msgs, "a 403 to its REFER to 9999", |m| {
        m.received && m.is_response(403, "1 REFER")
    });
    let accepted = position(&msgs, "a 202 to its REFER to benefits", |m| {
        m.received && m.is_response(202, "2 REFER")
    });
    let notify_at = position(&msgs, "a NOTIFY from verde", |m| {
        m.received && m.is_request("NOTIFY")
    });
    let bye_at = position(&msgs, "a BYE from verde", |m| {
        m.received && m.is_request("BYE")
    });
    assert!(
        forbidden < accepted && accepted < notify_at && notify_at < bye_at,
        "A's phone should see 403, then 202, then NOTIFY, then BYE; saw them at {forbidden}, \
         {accepted}, {notify_at}, {bye_at}"
    );
    let notify = &msgs[notify_at];
    let event = notify.header("Event").unwrap_or_default();
    assert!(
        event.starts_with("refer"),
        "NOTIFY with Event {event:?}:\n{}",
        notify.text
    );
    let ctype = notify.header("Content-Type").unwrap_or_default();
    assert!(
        ctype.starts_with("message/sipfrag"),
        "NOTIFY with Content-Type {ctype:?}:\n{}",
        notify.text
    );
    assert!(
        notify.body().starts_with("SIP/2.0 200"),
        "NOTIFY's sipfrag is not a 200:\n{}",
        notify.text
    );
    assert!(
        notify
            .header("Subscription-State")
            .is_some_and(|s| s.starts_with("terminated")),
        "the final NOTIFY should end the implicit subscription:\n{}",
        notify.text
    );
    // Nothing arrived about the call between the 403 and the accepted REFER but our own REFER.
    assert!(
        !msgs[forbidden + 1..accepted]
            .iter()
            .any(|m| m.received && m.is_request("BYE")),
        "verde hung up on A after refusing the transfer"
    );

    // B was offered the caller and answered.
    let bruno_after = wait_agent(
        &verde,
        BRUNO,
        "ready after the transferred call",
        Duration::from_secs(10),
        |a| a["state"] == "ready" && a["calls_handled"] == 1,
    );
    assert_eq!(bruno_after["missed"], 0, "B: {bruno_after}");
    assert_eq!(offered_callers(&mut bruno), vec![CALLER.to_string()]);
    assert_eq!(answered_callers(&mut bruno), vec![CALLER.to_string()]);
    let anna_after = wait_agent_state(&verde, ANNA, "ready", Duration::from_secs(10));
    assert_eq!(anna_after["missed"], 0, "A: {anna_after}");
    bruno.quit();

    // B heard the caller, and never A.
    let recs = bruno.received_recordings();
    assert_eq!(
        recs.len(),
        2,
        "B's phone should have recorded the *11 call and the transferred call: {recs:?}"
    );
    let heard = Audio::load(&recs[1]);
    let caller_s = heard.tone_seconds(CALLER_HZ, WIN);
    let anna_s = heard.tone_seconds(ANNA_HZ, WIN);
    eprintln!(
        "B heard {caller_s:.1} s of the caller's tone in {:.1} s recorded",
        heard.duration()
    );
    assert!(
        caller_s >= 2.0,
        "B heard only {caller_s:.1} s of the caller's {CALLER_HZ} Hz tone in {} ({:.1} s recorded)",
        recs[1].display(),
        heard.duration()
    );
    assert!(
        anna_s == 0.0,
        "B heard {anna_s:.1} s of A's tone: the first agent leaked into the transferred call"
    );

    // What the caller heard: A between the refused REFER and the accepted one (the bridge
    // survived the 403), then B and never A again.
    let datagrams = cap.stop();
    let to_caller = rtp_stream(&datagrams, verde.rtp_ports, caller_out.media_port);
    let heard_between = |from: f64, to: f64| {
        Audio::from_g711(
            0,
            to_caller
                .iter()
                .filter(|p| p.0 >= from && p.0 < to && p.2.payload_type == 0)
                .map(|p| p.2.payload.as_slice()),
        )
    };
    let log_time = |line: &str| {
        line.split_whitespace()
            .next()
            .and_then(parse_log_time)
            .unwrap_or_else(|| panic!("no timestamp in verde's log line {line:?}"))
    };
    let (refused_t, accepted_t) = (log_time(&refused_line), log_time(&accepted_line));
    let after_403 = heard_between(refused_t + 0.1, accepted_t);
    let a_after_403 = after_403.tone_seconds(ANNA_HZ, WIN);
    assert!(
        a_after_403 >= (accepted_t - refused_t) - 0.8,
        "between the 403 and the accepted REFER ({:.1} s) the caller heard only {a_after_403:.1} s \
         of A's tone ({:.1} s of audio reached it): the refused REFER broke the bridge",
        accepted_t - refused_t,
        after_403.duration()
    );
    let after_transfer = heard_between(accepted_t + 0.5, f64::MAX);
    let b_heard = after_transfer.tone_seconds(BRUNO_HZ, WIN);
    let a_leak = after_transfer.tone_seconds(ANNA_HZ, WIN);
    eprintln!(
        "caller heard {a_after_403:.1} s of A after the 403, {b_heard:.1} s of B after the transfer"
    );
    assert!(
        b_heard >= 2.0,
        "after the transfer the caller heard only {b_heard:.1} s of B's tone ({:.1} s of audio)",
        after_transfer.duration()
    );
    assert!(
        a_leak == 0.0,
        "the caller still heard {a_leak:.1} s of A's tone after the transfer"
    );

    // The record.
    assert_reached_queue(&verde, &caller_out.call_id, "pensions");
    first_call_log(&verde, &caller_out.call_id, "agent transfers the caller");
    let record = verde.wait_call_record(&caller_out.call_id, Duration::from_secs(10));
    eprintln!("call record: {record:#}");
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("answered-agent"),
        "{record:#}"
    );
    assert_eq!(
        variable(&record, "transferred_by"),
        Some(ANNA),
        "{record:#}"
    );
    assert_eq!(
        variable(&record, "transferred_to"),
        Some("benefits"),
        "{record:#}"
    );
    assert_eq!(variable(&record, "agent"), Some(BRUNO), "{record:#}");
}
