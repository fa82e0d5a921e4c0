//! A callback whose customer never answers: Anna's phone is ready, a callback is booked through
//! `POST /api/callbacks`, and the customer (a SIPp UAS) only rings. Each attempt rings the agent
//! first, then the customer for `customer_ring_timeout` (5 s), after which verde gives up with
//! CANCEL and hangs up the agent's leg; the second attempt comes `retry_delay` (2 s) later.
//! After `max_attempts` (2) the callback ends `not-reached`, and no third INVITE follows within
//! three retry delays.

use std::time::Duration;
use verde_interop::acd::{feature_code, wait_agent, wait_agent_state, write_config};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::callbacks::{
    callback, callback_config, callbacks, distinct, post_callback, sip_requests, u64_field,
    user_of, wait_callback, CUSTOMER_RING_TIMEOUT, MAX_ATTEMPTS, RETRY_DELAY, WEDNESDAY_MORNING,
};
use verde_interop::pcap::Capture;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{free_port, require_private_netns, TestDir};

const AGENT: &str = "1001";
const CUSTOMER: &str = "0655000002";

#[test]
fn callback_not_reached_after_two_attempts() {
    require_private_netns();
    let dir = TestDir::new("callback_not_reached");
    let customer_port = free_port();
    let config = write_config(
        &dir,
        &callback_config(Some((AGENT, "secret1")), customer_port),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            extra_args: vec!["--wall-clock".into(), WEDNESDAY_MORNING.into()],
            ..Default::default()
        },
    );
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, 1300.0, 120.0, 0.3).save(&voice);
    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new(AGENT, "secret1", verde.sip),
        &voice,
    );
    wait_agent(&verde, AGENT, "registered", Duration::from_secs(10), |a| {
        a["registered"] == serde_json::json!(true)
    });
    let cap = Capture::start(
        &dir,
        "sip",
        &format!("udp and (port {customer_port} or port {})", anna.sip_port),
    );

    // The customer rings and never answers, for exactly MAX_ATTEMPTS calls; SIPp then exits.
    // A ring longer than twice the timeout fails its call.
    let ring_limit = CUSTOMER_RING_TIMEOUT * 2;
    let scen = scenario(
        &dir,
        "uas_ring_no_answer.xml",
        &[("RING_LIMIT_MS", ring_limit.as_millis().to_string())],
    );
    let mut customer = Sipp::new(&scen, verde.sip)
        .uas()
        .local_port(customer_port)
        .calls(MAX_ATTEMPTS as u32)
        .timeout(Duration::from_secs(60))
        .spawn(&dir);
    customer.wait_bound();

    feature_code(&mut anna, &verde, "*11");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));

    let created = post_callback(&verde, "pensions", CUSTOMER);
    let id = u64_field(&created, "id");

    // Two attempts of ~5 s ring, 2 s apart, plus the agent's leg each time.
    let budget = (CUSTOMER_RING_TIMEOUT + Duration::from_secs(3)) * MAX_ATTEMPTS as u32
        + RETRY_DELAY * 2
        + Duration::from_secs(5);
    let done = wait_callback(&verde, id, "done", budget, |c| c["state"] == "done");
    let ended_at = std::time::Instant::now();
    let customer_out = customer.wait();
    customer_out.assert_success("customer ringing twice without answering");

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
        assert_eq!(a["agent"], AGENT, "attempt {a}");
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
    assert!(
        !callbacks(&verde).iter().any(|c| c["id"] == id),
        "a callback that ended not-reached is still listed as pending/dialing"
    );

    // Nothing more for three retry delays: no third INVITE to the customer (SIPp has exited,
    // the capture still sees anything sent to its port).
    let quiet_until = ended_at + RETRY_DELAY * 3;
    std::thread::sleep(quiet_until.saturating_duration_since(std::time::Instant::now()));
    let again = callback(&verde, id);
    assert_eq!(
        (again["state"].as_str(), again["outcome"].as_str()),
        (Some("done"), Some("not-reached")),
        "the callback changed after it ended: {again:#}"
    );
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
    anna.quit();
    let datagrams = cap.stop();

    let invites = distinct(sip_requests(&datagrams, customer_port, "INVITE"));
    assert_eq!(
        invites.len(),
        MAX_ATTEMPTS,
        "INVITEs to the customer (max_attempts {MAX_ATTEMPTS}): {:#?}",
        invites.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for inv in &invites {
        assert_eq!(user_of(&inv.uri), CUSTOMER, "INVITE to {}", inv.uri);
    }
    // Each given up with a CANCEL after the ring timeout.
    let cancels = distinct(sip_requests(&datagrams, customer_port, "CANCEL"));
    for inv in &invites {
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
    assert!(
        invites[1].time - invites[0].time
            >= CUSTOMER_RING_TIMEOUT.as_secs_f64() + RETRY_DELAY.as_secs_f64() - 0.5,
        "the second INVITE came {:.2} s after the first",
        invites[1].time - invites[0].time
    );

    // The agent's phone was rung once per attempt, each time before its customer, and verde
    // hung that leg up when the customer did not answer.
    let to_agent = distinct(sip_requests(&datagrams, anna.sip_port, "INVITE"));
    assert_eq!(
        to_agent.len(),
        MAX_ATTEMPTS,
        "INVITEs to the agent's phone: {:#?}",
        to_agent.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for (a, c) in to_agent.iter().zip(&invites) {
        assert!(
            a.time <= c.time,
            "agent-first: an attempt called the customer {:.3} s before the agent",
            a.time - c.time
        );
    }
    let byes = distinct(sip_requests(&datagrams, anna.sip_port, "BYE"));
    for a in &to_agent {
        assert!(
            byes.iter().any(|b| b.call_id == a.call_id),
            "verde did not hang up the agent's leg {} after the customer did not answer",
            a.call_id
        );
    }
}
