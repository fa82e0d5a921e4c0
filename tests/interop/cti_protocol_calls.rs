//! The `/cti` call commands and events over a real websocket client, with a real call: a SIPp
//! caller walks the INPS flow to the pensions queue; agent a1 (`answer_from: bar`, baresip set
//! to auto-answer) and agent a2 (`answer_from: phone`, baresip ringing until told to accept)
//! have their bars connected; a supervisor watches the wallboard.
//!
//! 1. The offer rings only a1's bar (the pop-up's facts checked one by one; a1's phone silent,
//!    a2's bar told nothing); a2 naming the call is refused as forged and logged.
//! 2. a1 answers from the bar: verde calls a1's phone, which answers by itself.
//! 3. hold / hold again / resume_call; transfers that cannot be (a number without an outbound
//!    trunk: `unavailable`; to oneself; to an unknown queue or agent), then blind to `benefits`: the caller waits there, a1 wraps
//!    up, and a1's commands on the call are `gone`; wrap_up_done makes a1 ready.
//! 4. The supervisor moves the caller back to pensions (the wallboard shows it there): the
//!    caller is offered to a1's bar again, and a1 declines. As the ACD documents it, the
//!    caller goes back to the head of the line and a1 takes a miss, which with
//!    `max_misses_before_pause: 1` pauses it ("no-answer"); so the call goes to a2, whose phone
//!    rings (`answer` from a2's bar: `invalid_state`, answer it on the phone).
//! 5. a2 hangs up from its bar: the caller gets a BYE, and commands on the ended call are `gone`.
//!
//! The SIP sent to the phones is captured: the INVITE of a1's bar answer must carry the two
//! auto-answer headers, a2's none.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verde_interop::acd::{
    agent, inps_caller_scenario, queue, variable, wait_agent, wait_agent_registered,
    wait_agent_state, write_config,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::cti::{assert_log_line, Cti, Deviations, Wallboard, WAIT};
use verde_interop::flows::INPS;
use verde_interop::pcap::{read_pcap, Capture};
use verde_interop::sipp::Sipp;
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, try_wait_for, TestDir};

const A1: (&str, &str) = ("a1", "pw-a1");
const A2: (&str, &str) = ("a2", "pw-a2");
const SUP: (&str, &str) = ("sup1", "pw-sup1");
const CALLER: &str = "0633000101";
/// How long the caller stays after the key that queues it, at most: a2's hangup from the bar
/// ends the call long before.
const STAY_MS: u64 = 45_000;
/// The INPS flow's menus the caller goes through, pressing 1 in each (ivr-flows/inps.yaml).
const LANGUAGE_MENU: &str = "language_menu";
const SERVICE_MENU: &str = "service_menu";

/// The incoming calls a baresip has seen (any event with direction incoming).
fn incoming_events(phone: &mut Baresip) -> Vec<Value> {
    phone
        .ctrl
        .all_events()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["direction"] == "incoming")
        .collect()
}

#[test]
fn cti_call_commands_and_events_with_a_real_call() {
    require_private_netns();
    let t0 = Instant::now();
    let dir = TestDir::new("cti_protocol_calls");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {}, name: Anna, password: {}, queues: [pensions], answer_from: bar }}\n\
             \x20 - {{ id: {}, name: Bruno, password: {}, queues: [pensions] }}\n\
             supervisors:\n\
             \x20 - {{ id: {}, password: {} }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 20s, wrap_up: 60s, max_misses_before_pause: 1, \
             announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: benefits, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: pin }}\n\
             \x20 - {{ name: operator }}\n\
             \x20 - {{ name: facilities }}\n\
             \x20 - {{ name: info }}\n\
             \x20 - {{ name: teaching }}\n",
            A1.0, A1.1, A2.0, A2.1, SUP.0, SUP.1
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let mut dev = Deviations::default();
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, 1000.0, 150.0, 0.3).save(&voice);
    // a1's phone answers every call by itself (baresip ignores the auto-answer headers but
    // `answermode=auto` picks up anyway); a2's rings until accepted.
    let mut a1_phone = Baresip::start_agent(
        &dir,
        "a1",
        &AgentAccount::new(A1.0, A1.1, verde.sip).answer(AnswerMode::Auto),
        &voice,
    );
    let mut a2_phone = Baresip::start_agent(
        &dir,
        "a2",
        &AgentAccount::new(A2.0, A2.1, verde.sip).answer(AnswerMode::Manual),
        &voice,
    );
    for id in [A1.0, A2.0] {
        wait_agent_registered(&verde, id, Duration::from_secs(10));
    }
    // The SIP verde sends the phones, to read the INVITEs' auto-answer headers.
    let sip_cap = Capture::start(
        &dir,
        "sip-to-phones",
        &format!(
            "udp and (dst port {} or dst port {})",
            a1_phone.sip_port, a2_phone.sip_port
        ),
    );

    // The bars and the wallboard.
    let mut a1 = Cti::connect(verde.http);
    a1.login(A1.0, A1.1);
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    let mut a2 = Cti::connect(verde.http);
    a2.login(A2.0, A2.1);
    let mut sup = Cti::connect(verde.http);
    sup.login(SUP.0, SUP.1);
    sup.cmd_ok(json!({"type": "subscribe_queues"}));
    let mut board = Wallboard::default();
    board.wait(&mut sup, "a1 ready", WAIT, |b| {
        b.agent_state(A1.0) == Some("ready")
    });

    // ---- 1. the offer rings a1's bar only ------------------------------------------------------
    let (scen, longest) = inps_caller_scenario(&dir, CALLER, '1', None, STAY_MS);
    let caller = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(20))
        .spawn(&dir);
    let offer = a1.wait_event("call_offered", longest, |_| true);
    let call = offer["call"]
        .as_u64()
        .unwrap_or_else(|| a1.fail(&format!("call_offered must carry a numeric call: {offer}")));
    let waited = offer["waited_s"].as_f64();
    let want_choices =
        json!([{"node": LANGUAGE_MENU, "key": "1"}, {"node": SERVICE_MENU, "key": "1"}]);
    if offer["caller"] != CALLER
        || offer["did"] != INPS
        || offer["queue"] != "pensions"
        || offer["channel"] != "voice"
        || offer["language"] != "it"
        || offer["choices"] != want_choices
        || waited.is_none_or(|w| !(0.0..5.0).contains(&w))
    {
        a1.fail(&format!(
            "call_offered must show caller {CALLER}, did {INPS}, queue pensions, channel voice, \
             language it, choices {want_choices} and a waited_s under 5 s (a1 was ready); got {offer}"
        ));
    }
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ringing");
    assert_log_line(
        &verde,
        "the bar-only offer",
        &["offering the call on the agent's bar", "agent=a1"],
    );
    let rung = incoming_events(&mut a1_phone);
    assert!(
        rung.is_empty(),
        "with answer_from: bar and the bar connected, a1's phone must not ring at the offer; \
         it saw: {rung:?}"
    );
    // a2's bar heard nothing of it, and may not act on it.
    let heard = a2.pending();
    assert!(
        !heard.iter().any(|m| m["call"] == call),
        "a2's bar must get nothing about call {call} (offered to a1); it got: {heard:?}"
    );
    for kind in ["answer", "hangup", "hold"] {
        a2.cmd_err(json!({"type": kind, "call": call}), "forbidden");
        assert_log_line(
            &verde,
            &format!("a2's forged {kind}"),
            &[
                "CTI refusal",
                &format!("user \"a2\" sent {kind} for call {call} which is not theirs: refused"),
            ],
        );
    }
    // Commands that do not fit an offered call.
    a1.cmd_err(json!({"type": "hold", "call": call}), "invalid_state");
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"queue": "benefits"}}),
        "invalid_state",
    );

    // ---- 2. a1 answers from its bar ----------------------------------------------------------
    a1.cmd_ok(json!({"type": "answer", "call": call}));
    a1.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    let est = a1_phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert_eq!(
        est["direction"], "incoming",
        "a1's phone must have answered verde's call (auto-answer): {est}"
    );
    assert_log_line(
        &verde,
        "the bar's answer",
        &[
            "agent answers from its bar: calling its phone to auto-answer",
            "agent=a1",
        ],
    );
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "oncall");
    a1.cmd_err(json!({"type": "answer", "call": call}), "invalid_state");

    // ---- 3. hold, transfer, wrap-up -----------------------------------------------------------
    a1.cmd_ok(json!({"type": "hold", "call": call}));
    a1.wait_event("call_held", WAIT, |m| m["call"] == call);
    a1.cmd_err(json!({"type": "hold", "call": call}), "invalid_state");
    a1.cmd_ok(json!({"type": "resume_call", "call": call}));
    a1.wait_event("call_resumed", WAIT, |m| m["call"] == call);
    a1.cmd_err(
        json!({"type": "resume_call", "call": call}),
        "invalid_state",
    );
    // No outbound trunk in this configuration: numbers are out of reach.
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"number": "+390612345678"}}),
        "unavailable",
    );
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "attended", "to": {"agent": A1.0}}),
        "invalid_state",
    );
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "attended", "to": {"agent": "nobody"}}),
        "not_found",
    );
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"queue": "no-such-queue"}}),
        "not_found",
    );
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"number": "12ab"}}),
        "bad_request",
    );
    a1.cmd_ok(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"queue": "benefits"}}),
    );
    let moved = a1.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    assert_eq!(
        moved["to"],
        json!({"queue": "benefits"}),
        "call_transferred must name the target: {moved}"
    );
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "wrapup");
    a1_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    let benefits = try_wait_for(WAIT, || {
        let q = queue(&verde, "benefits");
        let listed = q["callers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["call"] == call));
        (q["waiting"] == 1 && listed).then_some(q)
    });
    assert!(
        benefits.is_some(),
        "GET /api/queues must show call {call} waiting in benefits after the transfer; shows {}",
        queue(&verde, "benefits")
    );
    let shown = agent(&verde, A1.0);
    assert_eq!(shown["state"], "wrapup", "a1 after the transfer: {shown}");
    // The call left a1: its commands on it are gone, not forged.
    a1.cmd_err(json!({"type": "hold", "call": call}), "gone");
    a1.cmd_err(json!({"type": "hangup", "call": call}), "gone");
    a1.cmd_ok(json!({"type": "wrap_up_done"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    wait_agent_state(&verde, A1.0, "ready", WAIT);

    // ---- 4. the supervisor moves the caller back; a1 declines; a2 gets it --------------------
    sup.cmd_err(
        json!({"type": "move_caller", "call": 987654, "queue": "pensions"}),
        "not_found",
    );
    sup.cmd_err(
        json!({"type": "move_caller", "call": call, "queue": "no-such-queue"}),
        "not_found",
    );
    board.wait(&mut sup, &format!("call {call} in benefits"), WAIT, |b| {
        b.callers_in("benefits").contains(&call)
    });
    sup.cmd_ok(json!({"type": "move_caller", "call": call, "queue": "pensions"}));
    board.wait(
        &mut sup,
        &format!("call {call} in pensions and out of benefits"),
        WAIT,
        |b| b.callers_in("pensions").contains(&call) && !b.callers_in("benefits").contains(&call),
    );
    assert_log_line(
        &verde,
        "the move (audit)",
        &["supervisor moves a caller", "sup1"],
    );
    // a1 is ready and serves pensions: the caller is offered to its bar again.
    let again = a1.wait_event("call_offered", WAIT, |m| m["call"] == call);
    assert_eq!(again["queue"], "pensions", "the second offer: {again}");
    // a2 becomes ready while the caller is reserved for a1.
    a2.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    a1.drain();
    a1.cmd_ok(json!({"type": "hangup", "call": call}));
    let ended = a1.wait_event("call_ended", WAIT, |m| m["call"] == call);
    assert_eq!(
        ended["reason"], "declined",
        "a1 declined the offer from its bar: {ended}"
    );
    let paused = a1.wait_event("agent_state", WAIT, |m| m["state"] == "paused");
    assert!(
        paused["reason"] == "no-answer",
        "a declined offer is a miss, and with max_misses_before_pause 1 the ACD pauses a1 \
         (reason no-answer); got {paused}"
    );
    let to_a2 = a2.wait_event("call_offered", WAIT, |m| m["call"] == call);
    assert!(
        to_a2["caller"] == CALLER && to_a2["queue"] == "pensions",
        "the caller goes back to the head of pensions and is offered to a2: {to_a2}"
    );
    let incoming = a2_phone
        .ctrl
        .wait_event("CALL_INCOMING", Duration::from_secs(10));
    assert_eq!(
        incoming["direction"], "incoming",
        "answer_from phone: a2's phone rings at the offer: {incoming}"
    );
    // a2 answers from its bar while its phone rings: verde rings the phone again asking it to
    // pick up by itself (a2's baresip honours neither header and rings; it is accepted by hand).
    a2.cmd_ok(json!({"type": "answer", "call": call}));
    assert_log_line(
        &verde,
        "the bar's answer for a ringing phone",
        &[
            "agent answers from its bar: calling its phone again to auto-answer",
            "agent=a2",
        ],
    );
    a2_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    a2_phone
        .ctrl
        .wait_event("CALL_INCOMING", Duration::from_secs(10));
    let heard = a2.pending();
    assert!(
        !heard
            .iter()
            .any(|m| m["type"] == "call_ended" && m["call"] == call),
        "ringing a2's phone again is not the end of the offer: a2's bar got {heard:?}"
    );
    a2_phone.ctrl.command("accept", "");
    a2.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "oncall");
    wait_agent(&verde, A1.0, "paused (no-answer) with 1 miss", WAIT, |a| {
        a["state"] == "paused" && a["pause_reason"] == "no-answer" && a["missed"] == 1
    });

    // ---- 5. a2 hangs up from its bar ----------------------------------------------------------
    a2.cmd_ok(json!({"type": "hangup", "call": call}));
    let ended = a2.wait_event("call_ended", WAIT, |m| m["call"] == call);
    assert_eq!(ended["reason"], "agent-hangup", "a2 hung up: {ended}");
    a2_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    let out = caller.wait();
    out.assert_success("the caller (ended by verde's BYE after a2's hangup)");
    a2.cmd_err(json!({"type": "hold", "call": call}), "gone");
    a2.cmd_err(json!({"type": "hangup", "call": call}), "gone");
    a1.cmd_err(json!({"type": "answer", "call": call}), "gone");
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "wrapup");

    // The INVITE of a1's bar answer asks for auto-answer in both dialects; a2's (answer_from
    // phone) rings normally.
    // dumpcap hands packets over in blocks (a block is written when full or after its timeout),
    // so the capture is read until a2's INVITE is in the file before stopping it.
    let a2_port = a2_phone.sip_port;
    let in_file = try_wait_for(WAIT, || {
        let d = read_pcap(sip_cap.path()).ok()?;
        // Two INVITEs to a2: the offer, and the one after its bar's Answer.
        let mut ids: Vec<String> = d
            .iter()
            .filter(|x| x.dst.port() == a2_port && x.payload.starts_with(b"INVITE "))
            .filter_map(|x| {
                String::from_utf8_lossy(&x.payload)
                    .lines()
                    .find_map(|l| l.strip_prefix("Call-ID:").map(|v| v.trim().to_string()))
            })
            .collect();
        ids.dedup();
        (ids.len() >= 2).then_some(())
    });
    let datagrams = sip_cap.stop();
    assert!(
        in_file.is_some(),
        "the capture of SIP to the phones never showed two INVITEs to a2's phone (port {a2_port}); \
         it has {} datagrams",
        datagrams.len()
    );
    let invite_to = |port: u16| -> Vec<String> {
        datagrams
            .iter()
            .filter(|d| d.dst.port() == port)
            .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
            .filter(|t| t.starts_with("INVITE "))
            .collect()
    };
    let header = |msg: &str, name: &str| -> Option<String> {
        msg.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
    };
    let a1_invites = invite_to(a1_phone.sip_port);
    let first = a1_invites.first().unwrap_or_else(|| {
        panic!(
            "no INVITE to a1's phone (port {}) was captured",
            a1_phone.sip_port
        )
    });
    let call_info = header(first, "Call-Info").unwrap_or_default();
    let alert_info = header(first, "Alert-Info").unwrap_or_default();
    assert!(
        call_info.starts_with("<sip:") && call_info.contains(";answer-after=0"),
        "the INVITE to a1's phone after the bar's answer must carry Call-Info: <sip:HOST>;answer-after=0; \
         it has {call_info:?}:\n{first}"
    );
    assert!(
        alert_info.contains(";info=alert-autoanswer") && alert_info.contains("delay=0"),
        "the INVITE to a1's phone must carry Alert-Info: <...>;info=alert-autoanswer;delay=0; it has \
         {alert_info:?}:\n{first}"
    );
    let a2_invites = invite_to(a2_phone.sip_port);
    let a2_first = a2_invites.first().unwrap_or_else(|| {
        panic!(
            "no INVITE to a2's phone (port {}) was captured",
            a2_phone.sip_port
        )
    });
    assert!(
        header(a2_first, "Call-Info").is_none() && header(a2_first, "Alert-Info").is_none(),
        "an offer to a2 (answer_from phone) must ring, without auto-answer headers:\n{a2_first}"
    );
    let call_id = |m: &str| header(m, "Call-ID");
    let mut again: Vec<&String> = a2_invites
        .iter()
        .filter(|m| call_id(m) != call_id(a2_first))
        .collect();
    // UDP retransmissions of the same INVITE count once.
    again.dedup_by(|x, y| call_id(x) == call_id(y));
    assert!(
        again.len() == 1
            && header(again[0], "Call-Info").is_some_and(|v| v.contains("answer-after=0"))
            && header(again[0], "Alert-Info").is_some_and(|v| v.contains("alert-autoanswer")),
        "after a2's Answer on the bar, one new INVITE to its phone must ask for auto-answer: {again:?}"
    );

    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    for (name, want) in [
        ("agent", A2.0),
        ("transferred_by", A1.0),
        ("transferred_to", "benefits"),
        ("moved_by", SUP.0),
    ] {
        dev.check(variable(&record, name) == Some(want), || {
            format!("the call record's variables.{name} should be {want:?}: {record:#}")
        });
    }
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("agent"),
        "a2 hung up from the bar: {record:#}"
    );

    // The wallboard's service levels count the call once it has ended (sent every 5 s).
    let stats = sup.wait_event("queue_stats", Duration::from_secs(7), |m| {
        m["queues"].as_array().is_some_and(|qs| {
            qs.iter()
                .any(|q| q["today"]["offered"].as_u64().unwrap_or(0) >= 1)
        })
    });
    eprintln!("queue_stats after the call: {stats}");

    eprintln!("cti_protocol_calls: {:.1} s", t0.elapsed().as_secs_f64());
    dev.finish("cti_protocol_calls");
}
