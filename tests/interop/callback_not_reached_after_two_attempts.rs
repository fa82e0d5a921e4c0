//! A callback whose customer never answers: Anna's phone is ready, a callback is booked through
//! `POST /api/callbacks`, and the customer (a SIPp UAS) only rings. Each attempt rings the agent
//! first, then the customer for `customer_ring_timeout` (5 s), after which verde gives up with
//! CANCEL and hangs up the agent's leg; the second attempt comes `retry_delay` (2 s) later.
//! After `max_attempts` (2) the callback ends `not-reached`, and no third INVITE follows within
//! three retry delays.

use std::time::Duration;
use verde_interop::acd::{log_in_ready, wait_agent_state};
use verde_interop::baresip::AnswerMode;
use verde_interop::callbacks::{
    assert_cancelled_after_ring_timeout, assert_not_reached, assert_still_not_reached,
    callback_config, capture_sip, customer_uas, distinct, invites_to, is_listed, post_callback,
    sip_requests, start_with_anna, u64_field, user_of, wait_callback, CUSTOMER_RING_TIMEOUT,
    MAX_ATTEMPTS, RETRY_DELAY,
};
use verde_interop::sipp::scenario;
use verde_interop::{free_port, require_private_netns, TestDir};

const AGENT: &str = "1001";
const CUSTOMER: &str = "0655000002";

#[test]
fn callback_not_reached_after_two_attempts() {
    require_private_netns();
    let dir = TestDir::new("callback_not_reached");
    let customer_port = free_port();
    let (verde, mut anna) = start_with_anna(
        &dir,
        &callback_config(Some((AGENT, "secret1")), customer_port),
        (AGENT, "secret1"),
        AnswerMode::Auto,
        1300.0,
        120.0,
    );
    let cap = capture_sip(&dir, customer_port, anna.sip_port);

    // The customer rings and never answers, for exactly MAX_ATTEMPTS calls; SIPp then exits.
    // A ring longer than twice the timeout fails its call.
    let ring_limit = CUSTOMER_RING_TIMEOUT * 2;
    let scen = scenario(
        &dir,
        "uas_ring_no_answer.xml",
        &[("RING_LIMIT_MS", ring_limit.as_millis().to_string())],
    );
    let mut customer = customer_uas(&scen, &verde, customer_port)
        .calls(MAX_ATTEMPTS as u32)
        .timeout(Duration::from_secs(60))
        .spawn(&dir);
    customer.wait_bound();

    log_in_ready(&mut anna, &verde, AGENT);

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

    assert_not_reached(&done, Some(AGENT));
    assert!(
        !is_listed(&verde, id),
        "a callback that ended not-reached is still listed as pending/dialing"
    );

    // Nothing more for three retry delays: no third INVITE to the customer (SIPp has exited,
    // the capture still sees anything sent to its port).
    let quiet_until = ended_at + RETRY_DELAY * 3;
    std::thread::sleep(quiet_until.saturating_duration_since(std::time::Instant::now()));
    assert_still_not_reached(&verde, id);
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));
    anna.quit();
    let datagrams = cap.stop();

    let invites = invites_to(
        &datagrams,
        customer_port,
        MAX_ATTEMPTS,
        &format!("INVITEs to the customer (max_attempts {MAX_ATTEMPTS})"),
    );
    for inv in &invites {
        assert_eq!(user_of(&inv.uri), CUSTOMER, "INVITE to {}", inv.uri);
    }
    // Each given up with a CANCEL after the ring timeout.
    let cancels = distinct(sip_requests(&datagrams, customer_port, "CANCEL"));
    assert_cancelled_after_ring_timeout(&invites, &cancels);
    assert!(
        invites[1].time - invites[0].time
            >= CUSTOMER_RING_TIMEOUT.as_secs_f64() + RETRY_DELAY.as_secs_f64() - 0.5,
        "the second INVITE came {:.2} s after the first",
        invites[1].time - invites[0].time
    );

    // The agent's phone was rung once per attempt, each time before its customer, and verde
    // hung that leg up when the customer did not answer.
    let to_agent = invites_to(
        &datagrams,
        anna.sip_port,
        MAX_ATTEMPTS,
        "INVITEs to the agent's phone",
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
