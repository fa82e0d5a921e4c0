//! Transfers from the agent bar with real phones: a SIPp caller walks the INPS flow into
//! pensions; agents a1 and a2 have baresip phones that answer by themselves and their bars
//! connected over `/cti`; an outside number is a SIPp UAS behind `outbound.uri`.
//!
//! 1. a1 answers. It consults a2 (attended transfer to an agent): the caller is held, a1's bar
//!    follows the consultation (`ringing`, `talking`), a2's bar pops up and its phone answers.
//! 2. a1 takes the caller back (`resume_call`): the consultation is cancelled, a2's phone hangs
//!    up, a2's bar hears `withdrawn`, a1's hears `call_resumed`.
//! 3. a1 consults a2 again and hangs up from its bar: the transfer completes, the caller talks
//!    with a2, a1 goes to wrap-up and its phone is released.
//! 4. a2 transfers the caller blind to an outside number: verde calls the SIPp UAS at
//!    `outbound.uri` with the number as user, the UAS answers, plays and hangs up, and the
//!    caller gets verde's BYE.
//! 5. The call record names the last transfer (by a2, to the number, blind), the agent and who
//!    hung up.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verde_interop::acd::{
    inps_caller_scenario, variable, wait_agent_registered, wait_agent_state, write_config,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::callbacks::{customer_tone_vars, customer_uas};
use verde_interop::cti::{assert_log_line, Cti, WAIT};
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{free_port, require_private_netns, TestDir};

const A1: (&str, &str) = ("a1", "pw-a1");
const A2: (&str, &str) = ("a2", "pw-a2");
const CALLER: &str = "0633000202";
const NUMBER: &str = "0612345678";
const STAY_MS: u64 = 120_000;

/// The record's transfers as (by, to, kind).
fn transfers_of(acd: &Value) -> Vec<(&str, &str, &str)> {
    fn text<'a>(t: &'a Value, k: &str) -> &'a str {
        t[k].as_str().unwrap_or("")
    }
    acd["transfers"]
        .as_array()
        .expect("acd.transfers")
        .iter()
        .map(|t| (text(t, "by"), text(t, "to"), text(t, "kind")))
        .collect()
}

/// Who talked with the caller, in order.
fn talkers_of(acd: &Value) -> Vec<&str> {
    acd["legs"]
        .as_array()
        .expect("acd.legs")
        .iter()
        .map(|l| l["agent"].as_str().unwrap_or(""))
        .collect()
}

/// verde with a1 (pensions) and a2 (`a2_queue`), both phones answering by themselves and both
/// bars ready, and `outbound.uri` pointing at `number_port`.
struct Desk {
    dir: TestDir,
    verde: Verde,
    a1_phone: Baresip,
    a2_phone: Baresip,
    a1: Cti,
    a2: Cti,
}

fn desk(name: &str, a2_queue: &str, number_port: u16) -> Desk {
    require_private_netns();
    let dir = TestDir::new(name);
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {}, name: Anna, password: {}, queues: [pensions] }}\n\
             \x20 - {{ id: {}, name: Bruno, password: {}, queues: [{a2_queue}] }}\n\
             outbound:\n\
             \x20 uri: \"sip:{{number}}@127.0.0.1:{number_port}\"\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 20s, wrap_up: 0s, \
             announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             \x20 - {{ name: benefits, wrap_up: 0s, announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             \x20 - {{ name: pin }}\n\
             \x20 - {{ name: operator }}\n\
             \x20 - {{ name: facilities }}\n\
             \x20 - {{ name: info }}\n\
             \x20 - {{ name: teaching }}\n",
            A1.0, A1.1, A2.0, A2.1
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, 1000.0, 150.0, 0.3).save(&voice);
    let a1_phone = Baresip::start_agent(
        &dir,
        "a1",
        &AgentAccount::new(A1.0, A1.1, verde.sip).answer(AnswerMode::Auto),
        &voice,
    );
    let a2_phone = Baresip::start_agent(
        &dir,
        "a2",
        &AgentAccount::new(A2.0, A2.1, verde.sip).answer(AnswerMode::Auto),
        &voice,
    );
    for id in [A1.0, A2.0] {
        wait_agent_registered(&verde, id, Duration::from_secs(10));
    }
    let mut a1 = Cti::connect(verde.http);
    a1.login(A1.0, A1.1);
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    let mut a2 = Cti::connect(verde.http);
    a2.login(A2.0, A2.1);
    a2.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    Desk {
        dir,
        verde,
        a1_phone,
        a2_phone,
        a1,
        a2,
    }
}

#[test]
fn transfers_blind_and_attended_to_an_agent_and_a_number() {
    let t0 = Instant::now();
    let number_port = free_port();
    let Desk {
        dir,
        verde,
        mut a1_phone,
        mut a2_phone,
        mut a1,
        mut a2,
    } = desk("cti_transfers", "benefits", number_port);

    // ---- 1. a1 answers, then consults a2 -------------------------------------------------------
    let (scen, longest) = inps_caller_scenario(&dir, CALLER, '1', None, STAY_MS);
    let caller = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(30))
        .spawn(&dir);
    let offer = a1.wait_event("call_offered", longest, |_| true);
    let call = offer["call"].as_u64().expect("numeric call id");
    a1.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a1_phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));

    a1.cmd_ok(json!({"type": "transfer", "call": call, "mode": "attended", "to": {"agent": A2.0}}));
    a1.wait_event("call_held", WAIT, |m| m["call"] == call);
    let ringing = a1.wait_event("consult", WAIT, |m| m["call"] == call);
    assert_eq!(
        (ringing["state"].as_str(), &ringing["to"]),
        (Some("ringing"), &json!({"agent": A2.0})),
        "the consultation starts ringing a2: {ringing}"
    );
    // a2 serves benefits only, but a transfer names it: its bar pops up with the caller.
    let to_a2 = a2.wait_event("call_offered", WAIT, |m| m["call"] == call);
    assert!(
        to_a2["caller"] == CALLER && to_a2["queue"] == "pensions",
        "a2's pop-up must show the caller and the queue the talk counts in: {to_a2}"
    );
    a2.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a2_phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    let talking = a1.wait_event("consult", WAIT, |m| m["call"] == call);
    assert_eq!(
        talking["state"], "talking",
        "a2 answered: a1 talks with a2: {talking}"
    );
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "oncall");
    // A second transfer while one is under way, and hold while consulting, do not fit.
    a1.cmd_err(
        json!({"type": "transfer", "call": call, "mode": "blind", "to": {"queue": "benefits"}}),
        "invalid_state",
    );

    // ---- 2. a1 takes the caller back -----------------------------------------------------------
    a1.cmd_ok(json!({"type": "resume_call", "call": call}));
    let cancelled = a1.wait_event("consult", WAIT, |m| m["call"] == call);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    a1.wait_event("call_resumed", WAIT, |m| m["call"] == call);
    let gone = a2.wait_event("call_ended", WAIT, |m| m["call"] == call);
    assert_eq!(
        gone["reason"], "withdrawn",
        "a2's part of the call ends when a1 takes the caller back: {gone}"
    );
    a2_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    wait_agent_state(&verde, A2.0, "ready", WAIT);
    wait_agent_state(&verde, A1.0, "oncall", WAIT);
    a2.cmd_err(json!({"type": "hangup", "call": call}), "gone");

    // ---- 3. a1 consults a2 again and completes ------------------------------------------------
    a1.drain();
    a2.drain();
    a1.cmd_ok(json!({"type": "transfer", "call": call, "mode": "attended", "to": {"agent": A2.0}}));
    a2.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a1.wait_event("consult", WAIT, |m| {
        m["call"] == call && m["state"] == "talking"
    });
    a1.cmd_ok(json!({"type": "hangup", "call": call}));
    let moved = a1.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    assert_eq!(
        moved["to"],
        json!({"agent": A2.0}),
        "a1's hang-up completes the transfer: {moved}"
    );
    a1_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    assert_log_line(
        &verde,
        "the completed attended transfer",
        &["caller connected to the transfer target", "target=a2"],
    );
    wait_agent_state(&verde, A1.0, "ready", WAIT);
    wait_agent_state(&verde, A2.0, "oncall", WAIT);
    a1.cmd_err(json!({"type": "hold", "call": call}), "gone");
    // a2 now owns the call: hold and resume work for it.
    a2.cmd_ok(json!({"type": "hold", "call": call}));
    a2.wait_event("call_held", WAIT, |m| m["call"] == call);
    a2.cmd_ok(json!({"type": "resume_call", "call": call}));
    a2.wait_event("call_resumed", WAIT, |m| m["call"] == call);

    // ---- 4. a2 transfers blind to an outside number -------------------------------------------
    let uas_scen = scenario(&dir, "uas_ring_answer_tone.xml", &{
        let mut v = customer_tone_vars(&dir, 600.0, 3_000);
        v.push(("RING_MS", "500".into()));
        v
    });
    let mut uas = customer_uas(&uas_scen, &verde, number_port)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    uas.wait_bound();
    a2.cmd_ok(json!({"type": "transfer", "call": call, "mode": "blind", "to": {"number": NUMBER}}));
    let out_of_a2 = a2.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    assert_eq!(out_of_a2["to"], json!({"number": NUMBER}), "{out_of_a2}");
    a2_phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    assert_log_line(
        &verde,
        "the number dialed through outbound.uri",
        &[
            "transfer: calling the number",
            &format!("sip:{NUMBER}@127.0.0.1:{number_port}"),
        ],
    );
    uas.wait()
        .assert_success("the outside number (answers, plays 3 s, hangs up)");
    let out = caller.wait();
    out.assert_success("the caller (ended by verde's BYE after the number hung up)");

    // ---- 5. the record ------------------------------------------------------------------------
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    for (name, want) in [
        ("agent", A2.0),
        ("transferred_by", A2.0),
        ("transferred_to", &format!("number:{NUMBER}") as &str),
        ("transfer_kind", "blind"),
    ] {
        assert_eq!(
            variable(&record, name),
            Some(want),
            "the call record's variables.{name}: {record:#}"
        );
    }
    assert_eq!(field(&record, "disposition").as_str(), Some("transferred"));
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("number"),
        "the outside number hung up: {record:#}"
    );
    // The ACD section: the offers, who talked with the caller, the transfers, the hold time.
    let acd = field(&record, "acd");
    assert_eq!(acd["queue"], "pensions", "{acd:#}");
    let offers: Vec<(&str, &str)> = acd["offers"]
        .as_array()
        .expect("acd.offers")
        .iter()
        .map(|o| {
            (
                o["agent"].as_str().unwrap_or(""),
                o["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        offers,
        [(A1.0, "answered"), (A2.0, "answered"), (A2.0, "answered")],
        "a1 answered the queue's offer; a2 answered both consultations: {acd:#}"
    );
    let legs = talkers_of(acd);
    let number_leg = format!("number:{NUMBER}");
    assert_eq!(
        legs,
        [A1.0, A2.0, number_leg.as_str()],
        "who talked with the caller, in order (a2's cancelled consultation is not a talk): {acd:#}"
    );
    for l in acd["legs"].as_array().into_iter().flatten() {
        assert!(
            l["answered_at"].as_str().is_some_and(|t| !t.is_empty())
                && l["ended_at"]
                    .as_str()
                    .is_some_and(|t| t >= l["answered_at"].as_str().unwrap_or("")),
            "every talk has its start and end: {l}"
        );
    }
    let transfers = transfers_of(acd);
    let to_number = format!("number:{NUMBER}");
    assert_eq!(
        transfers,
        [
            (A1.0, "agent:a2", "attended"),
            (A2.0, to_number.as_str(), "blind")
        ],
        "{acd:#}"
    );
    let hold = acd["hold_ms"].as_u64().unwrap_or(0);
    assert!(
        hold > 0,
        "the caller waited on hold during both consultations and a2's hold: {acd:#}"
    );
    let a1_hold = acd["legs"][0]["hold_ms"].as_u64().unwrap_or(0);
    assert!(
        a1_hold > 0 && a1_hold <= hold,
        "a1's consultations count as hold on a1's talk: {acd:#}"
    );
    eprintln!("cti_transfers: {:.1} s", t0.elapsed().as_secs_f64());
}

/// The other combinations: an attended transfer to a queue (the consultation waits in benefits
/// until a2, who serves it, answers), a blind transfer to an agent, and a blind transfer to a
/// busy number, after which the caller is back in its queue rather than lost.
#[test]
fn transfers_to_a_queue_attended_to_an_agent_blind_and_a_busy_number() {
    let number_port = free_port();
    let Desk {
        dir,
        verde,
        mut a1_phone,
        a2_phone: _a2_phone,
        mut a1,
        mut a2,
    } = desk("cti_transfers_more", "benefits", number_port);
    let (scen, longest) = inps_caller_scenario(&dir, "0633000303", '1', None, STAY_MS);
    let caller = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(30))
        .spawn(&dir);
    let offer = a1.wait_event("call_offered", longest, |_| true);
    let call = offer["call"].as_u64().expect("numeric call id");
    a1.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });

    // ---- attended to the benefits queue, completed by a1's hang-up ----------------------------
    a1.cmd_ok(
        json!({"type": "transfer", "call": call, "mode": "attended", "to": {"queue": "benefits"}}),
    );
    let ringing = a1.wait_event("consult", WAIT, |m| m["call"] == call);
    assert_eq!(
        (ringing["state"].as_str(), &ringing["to"]),
        (Some("ringing"), &json!({"queue": "benefits"})),
        "{ringing}"
    );
    let to_a2 = a2.wait_event("call_offered", WAIT, |m| m["call"] == call);
    assert_eq!(
        to_a2["queue"], "benefits",
        "the consultation is offered in the queue it waits in: {to_a2}"
    );
    a2.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a1.wait_event("consult", WAIT, |m| {
        m["call"] == call && m["state"] == "talking"
    });
    a1.cmd_ok(json!({"type": "hangup", "call": call}));
    let moved = a1.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    assert_eq!(moved["to"], json!({"queue": "benefits"}), "{moved}");
    wait_agent_state(&verde, A1.0, "ready", WAIT);
    wait_agent_state(&verde, A2.0, "oncall", WAIT);

    // ---- a2 blind to agent a1 ------------------------------------------------------------------
    a1.drain();
    a2.cmd_ok(json!({"type": "transfer", "call": call, "mode": "blind", "to": {"agent": A1.0}}));
    let left = a2.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    assert_eq!(left["to"], json!({"agent": A1.0}), "{left}");
    let back = a1.wait_event("call_offered", WAIT, |m| m["call"] == call);
    assert_eq!(
        back["queue"], "pensions",
        "a direct offer counts in the caller's queue: {back}"
    );
    a1.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    wait_agent_state(&verde, A2.0, "ready", WAIT);

    // ---- a1 blind to a busy number: the caller goes back to pensions and to a1 -----------------
    let busy = scenario(&dir, "uas_busy.xml", &[]);
    let mut uas = customer_uas(&busy, &verde, number_port)
        .timeout(Duration::from_secs(30))
        .spawn(&dir);
    uas.wait_bound();
    a1.cmd_ok(json!({"type": "transfer", "call": call, "mode": "blind", "to": {"number": NUMBER}}));
    a1.wait_event("call_transferred", WAIT, |m| m["call"] == call);
    uas.wait().assert_success("the busy number");
    assert_log_line(
        &verde,
        "the failed blind transfer",
        &["transfer failed", "why=busy"],
    );
    // a1 (wrap-up 0 s) is ready again and the caller is first in pensions: offered to a1 again.
    a1.wait_event("call_offered", WAIT, |m| m["call"] == call);
    a1.wait_event("call_answered", Duration::from_secs(10), |m| {
        m["call"] == call
    });
    a1_phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    a1.cmd_ok(json!({"type": "hangup", "call": call}));
    let out = caller.wait();
    out.assert_success("the caller (ended by verde's BYE after a1's hang-up)");

    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(
        variable(&record, "transfer_failed"),
        Some("busy"),
        "{record:#}"
    );
    let acd = field(&record, "acd");
    let transfers = transfers_of(acd);
    let to_number = format!("number:{NUMBER}");
    assert_eq!(
        transfers,
        [
            (A1.0, "queue:benefits", "attended"),
            (A2.0, "agent:a1", "blind"),
            (A1.0, to_number.as_str(), "blind"),
        ],
        "{acd:#}"
    );
    let legs = talkers_of(acd);
    assert_eq!(
        legs,
        [A1.0, A2.0, A1.0, A1.0],
        "the busy number never talked with the caller: {acd:#}"
    );
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("answered-agent")
    );
    assert_eq!(field(&record, "hangup_by").as_str(), Some("agent"));
}
