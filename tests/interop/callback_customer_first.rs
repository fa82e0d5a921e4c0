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
    agent, answered_callers, feature_code, offered_callers, wait_agent, wait_agent_state,
    write_config,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::callbacks::{
    callback, callback_config_in_mode, callbacks, distinct, post_callback, sip_requests,
    sip_responses, u64_field, ulaw_file, user_of, wait_callback, CUSTOMER_RING_TIMEOUT,
    MAX_ATTEMPTS, RETRY_DELAY, WEDNESDAY_MORNING,
};
use verde_interop::pcap::{rtp_stream, Capture};
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::wav::Audio;
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
    let config = write_config(
        dir,
        &callback_config_in_mode(Some((AGENT, "secret1")), customer_port, MODE),
    );
    let verde = Verde::start(
        dir,
        VerdeOptions {
            config: Some(config),
            extra_args: vec!["--wall-clock".into(), WEDNESDAY_MORNING.into()],
            ..Default::default()
        },
    );
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, AGENT_HZ, 120.0, 0.3).save(&voice);
    let anna = Baresip::start_agent(
        dir,
        "anna",
        &AgentAccount::new(AGENT, "secret1", verde.sip).answer(answer),
        &voice,
    );
    wait_agent(&verde, AGENT, "registered", Duration::from_secs(10), |a| {
        a["registered"] == serde_json::json!(true)
    });
    (verde, anna)
}

#[test]
fn customer_first_bridges_after_the_customer_answers() {
    require_private_netns();
    const CUSTOMER: &str = "0655000011";
    let dir = TestDir::new("callback_customer_first_answered");
    let customer_port = free_port();
    let customer_media = free_ports(4);
    let (verde, mut anna) = start(&dir, customer_port, AnswerMode::Manual);
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(
        &dir,
        "sip-rtp",
        &format!(
            "udp and (port {customer_port} or port {} or portrange {customer_media}-{} or \
             portrange {lo}-{hi})",
            anna.sip_port,
            customer_media + 3
        ),
    );

    // The customer: rings, answers, sends its tone, hangs up.
    let customer_scen = scenario(
        &dir,
        "uas_ring_answer_tone.xml",
        &[
            ("RING_MS", CUSTOMER_RINGS.as_millis().to_string()),
            (
                "ULAW",
                ulaw_file(
                    &dir,
                    "customer",
                    &Audio::tone(8000, CUSTOMER_HZ, CUSTOMER_TALK_MS as f64 / 1000.0, 0.3),
                )
                .display()
                .to_string(),
            ),
            ("HANGUP_AFTER_MS", CUSTOMER_TALK_MS.to_string()),
        ],
    );
    let mut customer = Sipp::new(&customer_scen, verde.sip)
        .uas()
        .local_port(customer_port)
        .media_port(customer_media)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    customer.wait_bound();

    feature_code(&mut anna, &verde, "*11");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
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

    assert_eq!(done["outcome"], "answered", "callback {done:#}");
    assert_eq!(u64_field(&done, "attempts"), 1, "callback {done:#}");
    let log = done["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log array: {done:#}"));
    assert_eq!(log.len(), 1, "attempt_log {done:#}");
    assert_eq!(log[0]["outcome"], "answered", "attempt {}", log[0]);
    assert_eq!(log[0]["agent"], AGENT, "attempt {}", log[0]);
    assert!(
        !callbacks(&verde).iter().any(|c| c["id"] == id),
        "a done callback is still listed as pending/dialing"
    );

    // On the wire: the customer's INVITE first, then its 200 OK, and only then the INVITE to
    // the agent's phone (the phone's own *11 INVITE goes the other way and is not counted).
    let to_customer = distinct(sip_requests(&datagrams, customer_port, "INVITE"));
    assert_eq!(
        to_customer.len(),
        1,
        "INVITEs to the customer: {:#?}",
        to_customer.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
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
    let to_agent = distinct(sip_requests(&datagrams, anna.sip_port, "INVITE"));
    assert_eq!(
        to_agent.len(),
        1,
        "INVITEs to the agent's phone: {:#?}",
        to_agent.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
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
    let to_customer_rtp = rtp_stream(&datagrams, verde.rtp_ports, customer_media);
    let waited = agent_ok.time - customer_ok.time;
    let music = Audio::from_g711(
        0,
        to_customer_rtp
            .iter()
            .filter(|p| p.2.payload_type == 0 && p.0 > customer_ok.time && p.0 < agent_ok.time)
            .map(|p| p.2.payload.as_slice()),
    );
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
    let got = Audio::from_g711(
        0,
        to_customer_rtp
            .iter()
            .filter(|p| p.2.payload_type == 0 && p.0 >= agent_ok.time)
            .map(|p| p.2.payload.as_slice()),
    );
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
    let recs = anna.received_recordings();
    assert_eq!(
        recs.len(),
        2,
        "the agent's recordings (the *11 call, the callback): {recs:?}"
    );
    let heard = Audio::load(&recs[1]);
    let tone = heard.tone_seconds(CUSTOMER_HZ, WIN);
    assert!(
        tone >= 2.5,
        "the agent heard only {tone:.1} s of the customer's {CUSTOMER_HZ} Hz tone in {} \
         ({:.1} s recorded); the customer sent {CUSTOMER_TALK_MS} ms from its answer, the agent \
         answered {waited:.2} s after it",
        recs[1].display(),
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
    let cap = Capture::start(
        &dir,
        "sip",
        &format!("udp and (port {customer_port} or port {})", anna.sip_port),
    );

    // The customer rings and never answers, for exactly MAX_ATTEMPTS calls; SIPp then exits.
    let scen = scenario(
        &dir,
        "uas_ring_no_answer.xml",
        &[(
            "RING_LIMIT_MS",
            (CUSTOMER_RING_TIMEOUT * 2).as_millis().to_string(),
        )],
    );
    let mut customer = Sipp::new(&scen, verde.sip)
        .uas()
        .local_port(customer_port)
        .calls(MAX_ATTEMPTS as u32)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    customer.wait_bound();

    feature_code(&mut anna, &verde, "*11");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
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

    assert_eq!(done["outcome"], "not-reached", "callback {done:#}");
    assert_eq!(
        u64_field(&done, "attempts"),
        MAX_ATTEMPTS as u64,
        "callback {done:#}"
    );
    let log = done["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log array: {done:#}"))
        .clone();
    assert_eq!(log.len(), MAX_ATTEMPTS, "attempt_log of {done:#}");
    for a in &log {
        assert_eq!(a["outcome"], "no-answer", "attempt {a}");
        let rang = u64_field(a, "finished_at_ms") - u64_field(a, "started_at_ms");
        assert!(
            rang as u128 >= CUSTOMER_RING_TIMEOUT.as_millis() - 500,
            "an attempt lasted {rang} ms, less than the customer's ring timeout: {a}"
        );
    }
    let gap = u64_field(&log[1], "started_at_ms") - u64_field(&log[0], "finished_at_ms");
    assert!(
        gap as u128 >= RETRY_DELAY.as_millis() - 300,
        "the second attempt started {gap} ms after the first ended; retry_delay is {RETRY_DELAY:?}"
    );

    // Released without being rung: ready again, no missed offer, and no late INVITE after the
    // callback ended (watched for one more retry delay).
    let released = wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(3));
    assert_eq!(
        released["missed"], 0,
        "the agent was charged a missed offer for a customer who did not answer: {released}"
    );
    std::thread::sleep((ended_at + RETRY_DELAY).saturating_duration_since(Instant::now()));
    let again = callback(&verde, id);
    assert_eq!(
        (again["state"].as_str(), again["outcome"].as_str()),
        (Some("done"), Some("not-reached")),
        "the callback changed after it ended: {again:#}"
    );
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

    let invites = distinct(sip_requests(&datagrams, customer_port, "INVITE"));
    assert_eq!(
        invites.len(),
        MAX_ATTEMPTS,
        "INVITEs to the customer (max_attempts {MAX_ATTEMPTS}): {:#?}",
        invites.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let cancels = distinct(sip_requests(&datagrams, customer_port, "CANCEL"));
    for inv in &invites {
        assert_eq!(user_of(&inv.uri), CUSTOMER, "INVITE to {}", inv.uri);
        let c = cancels
            .iter()
            .find(|c| c.call_id == inv.call_id)
            .unwrap_or_else(|| panic!("no CANCEL for the INVITE {}", inv.call_id));
        let rang = c.time - inv.time;
        let want = CUSTOMER_RING_TIMEOUT.as_secs_f64();
        assert!(
            (want - 0.5..=want + 1.5).contains(&rang),
            "the customer rang {rang:.2} s before verde's CANCEL; customer_ring_timeout is {want} s"
        );
    }
}
