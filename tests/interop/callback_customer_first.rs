//! Call-me-back in `customer-first` mode: a callback booked through `POST /api/callbacks` in the
//! pensions queue reserves Anna (baresip) and verde dials the CUSTOMER first (a SIPp UAS at
//! `outbound.uri`); the agent's phone rings only once the customer has answered.
//!
//! - `customer_first_bridges_after_the_customer_answers`: the customer's phone rings 1.5 s, then
//!   it answers and sends a tone. The INVITE to Anna's phone follows the customer's 200 OK; her
//!   phone rings 1.5 s (answered through ctrl_tcp, so the wait is long enough to hear), during
//!   which verde plays the customer music; then the two are bridged (each hears the other's
//!   tone) and the callback ends done/answered after one attempt.
//! - `customer_first_unreached_customer_never_rings_the_agent`: the customer only rings; Anna
//!   (auto-answer) stays reserved meanwhile, each attempt is given up after
//!   `customer_ring_timeout` with CANCEL and recorded no-answer, the second comes `retry_delay`
//!   later, the callback ends not-reached, and Anna's phone never receives an INVITE: she is
//!   released ready, with no missed offer.

use std::time::{Duration, Instant};
use verde_interop::acd::{
    agent, answered_callers, heard_by_sipp_when, log_in_ready, offered_callers,
    recording_after_login, wait_agent, wait_agent_state,
};
use verde_interop::baresip::{AnswerMode, Baresip};
use verde_interop::callbacks::{
    assert_answered_once, assert_cancelled_after_ring_timeout, assert_not_reached,
    assert_still_not_reached, callback_config_in_mode, capture_sip, capture_sip_rtp,
    customer_tone_vars, customer_uas, distinct, invites_to, is_listed, post_callback, sip_requests,
    sip_responses, start_with_anna, u64_field, user_of, wait_callback, CUSTOMER_RING_TIMEOUT,
    MAX_ATTEMPTS, RETRY_DELAY,
};
use verde_interop::sipp::scenario;
use verde_interop::verde::Verde;
use verde_interop::{free_port, free_ports, require_private_netns, TestDir};

const AGENT: &str = "1001";
/// The dialing mode under test (the pensions queue's `callback.mode`).
const MODE: &str = "customer-first";
const AGENT_HZ: f64 = 1300.0;
const CUSTOMER_HZ: f64 = 800.0;
/// How long the answering customer's phone rings before it answers.
const CUSTOMER_RINGS: Duration = Duration::from_millis(1500);
/// How long the agent's phone rings before she picks up (the customer is on music meanwhile).
const AGENT_RINGS: Duration = Duration::from_millis(1500);
/// How long the answering customer's SIPp talks (its tone) after the ACK before hanging up:
/// through the agent's ring and then about 5 s of conversation.
const CUSTOMER_TALK_MS: u64 = 7000;
const WIN: f64 = 0.2;

/// verde with the pensions queue's callbacks in customer-first mode, the dialer calling
/// `sip:{number}@127.0.0.1:<customer_port>`, and Anna's phone registered (not yet ready).
fn start(dir: &TestDir, customer_port: u16, answer: AnswerMode) -> (Verde, Baresip) {
    start_with_anna(
        dir,
        &callback_config_in_mode(Some((AGENT, "secret1")), customer_port, MODE),
        (AGENT, "secret1"),
        answer,
        AGENT_HZ,
        120.0,
    )
}

#[test]
fn customer_first_bridges_after_the_customer_answers() {
    require_private_netns();
    const CUSTOMER: &str = "0655000011";
    let dir = TestDir::new("callback_customer_first_answered");
    let customer_port = free_port();
    let customer_media = free_ports(4);
    let (verde, mut anna) = start(&dir, customer_port, AnswerMode::Manual);
    let cap = capture_sip_rtp(&dir, &verde, customer_port, customer_media, anna.sip_port);

    // The customer: rings, answers, sends its tone, hangs up.
    let mut vars = vec![("RING_MS", CUSTOMER_RINGS.as_millis().to_string())];
    vars.extend(customer_tone_vars(&dir, CUSTOMER_HZ, CUSTOMER_TALK_MS));
    let customer_scen = scenario(&dir, "uas_ring_answer_tone.xml", &vars);
    let mut customer = customer_uas(&customer_scen, &verde, customer_port)
        .media_port(customer_media)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    customer.wait_bound();

    log_in_ready(&mut anna, &verde, AGENT);
    let created = post_callback(&verde, "pensions", CUSTOMER);
    let id = u64_field(&created, "id");

    // Anna's phone rings (only after the customer answered: checked on the wire below); she
    // lets it ring a moment, so the customer waits on music, then picks up.
    let incoming = anna
        .ctrl
        .wait_event("CALL_INCOMING", CUSTOMER_RINGS + Duration::from_secs(8));
    let ringing = wait_agent(&verde, AGENT, "ringing", Duration::from_secs(2), |a| {
        a["state"] == "ringing"
    });
    std::thread::sleep(AGENT_RINGS);
    anna.ctrl.command("accept", "");
    eprintln!("agent's phone offered {incoming}; verde's view: {ringing}");

    let done = wait_callback(&verde, id, "done", Duration::from_secs(20), |c| {
        c["state"] == "done"
    });
    let outcome = customer.wait();
    outcome.assert_success("customer answering the customer-first callback");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(10));
    anna.quit();
    let datagrams = cap.stop();

    assert_answered_once(&done, AGENT);
    assert!(
        !is_listed(&verde, id),
        "a done callback is still listed as pending/dialing"
    );

    // On the wire: the customer's INVITE first, then its 200 OK, and only then the INVITE to
    // the agent's phone (the phone's own *11 INVITE goes the other way and is not counted).
    let to_customer = invites_to(&datagrams, customer_port, 1, "INVITEs to the customer");
    assert_eq!(
        user_of(&to_customer[0].uri),
        CUSTOMER,
        "the customer was dialed at {}",
        to_customer[0].uri
    );
    let customer_ok = sip_responses(&datagrams, customer_port)
        .into_iter()
        .find(|r| {
            r.status == 200 && r.cseq.ends_with("INVITE") && r.call_id == to_customer[0].call_id
        })
        .expect("the capture holds the customer's 200 OK to verde's INVITE");
    let to_agent = invites_to(&datagrams, anna.sip_port, 1, "INVITEs to the agent's phone");
    let t0 = to_customer[0].time;
    assert!(
        t0 < to_agent[0].time,
        "customer-first: the agent's phone got its INVITE {:.3} s before the customer's",
        t0 - to_agent[0].time
    );
    assert!(
        customer_ok.time <= to_agent[0].time,
        "customer-first: the agent's phone was rung {:.3} s after the customer's INVITE, {:.3} s \
         before the customer answered (the customer rang {CUSTOMER_RINGS:?})",
        to_agent[0].time - t0,
        customer_ok.time - to_agent[0].time
    );
    let agent_ok = sip_responses(&datagrams, anna.sip_port)
        .into_iter()
        .find(|r| r.status == 200 && r.cseq.ends_with("INVITE") && r.call_id == to_agent[0].call_id)
        .expect("the agent's phone answered verde's INVITE with a 200 OK");
    eprintln!(
        "customer INVITE at +0.000 s, its 200 OK at +{:.3} s, agent INVITE at +{:.3} s, agent 200 \
         OK at +{:.3} s; agent INVITE From {}",
        customer_ok.time - t0,
        to_agent[0].time - t0,
        agent_ok.time - t0,
        to_agent[0].from,
    );

    // While the agent's phone rang, the customer heard music, not silence: audio from verde
    // all along between its answer and the agent's.
    let waited = agent_ok.time - customer_ok.time;
    let music = heard_by_sipp_when(&datagrams, &verde, customer_media, |t| {
        t > customer_ok.time && t < agent_ok.time
    });
    eprintln!(
        "verde sent the customer {:.2} s of audio (rms {:.4}) in the {waited:.2} s before the \
         agent answered",
        music.duration(),
        music.rms()
    );
    assert!(
        music.duration() >= waited - 0.5 && music.rms() > 0.01,
        "the customer waited {waited:.2} s for the agent and got {:.2} s of audio from verde \
         (rms {:.4}) meanwhile: no music on hold",
        music.duration(),
        music.rms()
    );
    let echoed = music.tone_seconds(CUSTOMER_HZ, WIN);
    assert!(
        echoed < 0.5,
        "before the agent answered verde sent the customer {echoed:.1} s of its own tone back"
    );

    // Bridged: the customer got the agent's voice...
    let got = heard_by_sipp_when(&datagrams, &verde, customer_media, |t| t >= agent_ok.time);
    let agent_tone = got.tone_seconds(AGENT_HZ, WIN);
    assert!(
        agent_tone >= 2.5,
        "the customer got only {agent_tone:.1} s of the agent's {AGENT_HZ} Hz tone ({:.1} s of \
         audio from verde to its port {customer_media} after the agent answered)",
        got.duration()
    );

    // ...and the agent's phone, offered one call and answering it, heard the customer.
    assert_eq!(
        offered_callers(&mut anna),
        [CUSTOMER],
        "incoming calls on the agent's phone (calling number)"
    );
    assert_eq!(
        answered_callers(&mut anna).len(),
        1,
        "answered by the agent's phone"
    );
    let (rec, heard) =
        recording_after_login(&anna, "the agent's recordings (the *11 call, the callback)");
    let tone = heard.tone_seconds(CUSTOMER_HZ, WIN);
    assert!(
        tone >= 2.5,
        "the agent heard only {tone:.1} s of the customer's {CUSTOMER_HZ} Hz tone in {} \
         ({:.1} s recorded); the customer sent {CUSTOMER_TALK_MS} ms from its answer, the agent \
         answered {waited:.2} s after it",
        rec.display(),
        heard.duration(),
    );
}

#[test]
fn customer_first_unreached_customer_never_rings_the_agent() {
    require_private_netns();
    const CUSTOMER: &str = "0655000012";
    let dir = TestDir::new("callback_customer_first_unreached");
    let customer_port = free_port();
    let (verde, mut anna) = start(&dir, customer_port, AnswerMode::Auto);
    let cap = capture_sip(&dir, customer_port, anna.sip_port);

    // The customer rings and never answers, for exactly MAX_ATTEMPTS calls; SIPp then exits.
    let scen = scenario(
        &dir,
        "uas_ring_no_answer.xml",
        &[(
            "RING_LIMIT_MS",
            (CUSTOMER_RING_TIMEOUT * 2).as_millis().to_string(),
        )],
    );
    let mut customer = customer_uas(&scen, &verde, customer_port)
        .calls(MAX_ATTEMPTS as u32)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    customer.wait_bound();

    log_in_ready(&mut anna, &verde, AGENT);
    let created = post_callback(&verde, "pensions", CUSTOMER);
    let id = u64_field(&created, "id");

    // While the customer rings, Anna is held for it: reserved, her phone silent.
    let ringing = wait_callback(&verde, id, "dialing", Duration::from_secs(5), |c| {
        c["state"] == "dialing"
    });
    let held = wait_agent(
        &verde,
        AGENT,
        "reserved for the callback",
        Duration::from_secs(3),
        |a| a["state"] == "reserved",
    );
    eprintln!("while the customer rings: callback {ringing}\nagent {held}");

    let budget = (CUSTOMER_RING_TIMEOUT + Duration::from_secs(2)) * MAX_ATTEMPTS as u32
        + RETRY_DELAY
        + Duration::from_secs(5);
    let done = wait_callback(&verde, id, "done", budget, |c| c["state"] == "done");
    let ended_at = Instant::now();
    customer
        .wait()
        .assert_success("customer ringing twice without answering");

    assert_not_reached(&done, None);

    // Released without being rung: ready again, no missed offer, and no late INVITE after the
    // callback ended (watched for one more retry delay).
    let released = wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(3));
    assert_eq!(
        released["missed"], 0,
        "the agent was charged a missed offer for a customer who did not answer: {released}"
    );
    std::thread::sleep((ended_at + RETRY_DELAY).saturating_duration_since(Instant::now()));
    assert_still_not_reached(&verde, id);
    let after = agent(&verde, AGENT);
    assert_eq!(
        after["state"], "ready",
        "agent after the callback ended: {after}"
    );
    anna.quit();
    let datagrams = cap.stop();

    let to_agent = distinct(sip_requests(&datagrams, anna.sip_port, "INVITE"));
    assert!(
        to_agent.is_empty(),
        "customer-first: the agent's phone got {} INVITE(s) for a customer who never answered: \
         {:#?}",
        to_agent.len(),
        to_agent.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    assert!(
        offered_callers(&mut anna).is_empty(),
        "baresip saw incoming calls: {:?}",
        offered_callers(&mut anna)
    );

    let invites = invites_to(
        &datagrams,
        customer_port,
        MAX_ATTEMPTS,
        &format!("INVITEs to the customer (max_attempts {MAX_ATTEMPTS})"),
    );
    for inv in &invites {
        assert_eq!(user_of(&inv.uri), CUSTOMER, "INVITE to {}", inv.uri);
    }
    let cancels = distinct(sip_requests(&datagrams, customer_port, "CANCEL"));
    assert_cancelled_after_ring_timeout(&invites, &cancels);
}
