//! An agent whose phone rings but is never answered is skipped and then paused: Anna (1001)
//! logs in first, so she is idle longer and the caller is offered to her, but her phone only
//! rings (answermode=manual). After the queue's 3 s ring timeout verde withdraws the offer
//! (CANCEL), puts the caller back at the head of the queue and offers it to Bruno (1002), who
//! answers; with `max_misses_before_pause: 1` Anna is paused with reason "no-answer".

use std::time::{Duration, Instant};
use verde_interop::acd::{
    agent_voice, answered_callers, assert_reached_queue, call_log, inps_caller_scenario,
    log_in_ready, offered_callers, queue_wait_ms, recording_after_login, variable, wait_agent,
    wait_agent_registered, wait_agent_state, write_config, OTHER_INPS_QUEUES,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::flows::INPS;
use verde_interop::sipp::Sipp;
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, TestDir};

const RING_TIMEOUT_S: u64 = 3;
const CALLER: &str = "0644000001";
const CALLER_HZ: f64 = 700.0;

#[test]
fn an_unanswered_agent_is_skipped_then_paused() {
    require_private_netns();
    let dir = TestDir::new("acd_no_answer");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"1001\", name: Anna, password: secret1, queues: [pensions] }}\n\
             \x20 - {{ id: \"1002\", name: Bruno, password: secret2, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, strategy: longest-idle, ring_timeout: {RING_TIMEOUT_S}s, \
             wrap_up: 1s, max_misses_before_pause: 1, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
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
    let voice = agent_voice(&dir, 1000.0, 120.0);
    let mut anna = Baresip::start_agent(
        &dir,
        "anna-never-answers",
        &AgentAccount::new("1001", "secret1", verde.sip).answer(AnswerMode::Manual),
        &voice,
    );
    let mut bruno = Baresip::start_agent(
        &dir,
        "bruno",
        &AgentAccount::new("1002", "secret2", verde.sip),
        &voice,
    );
    for id in ["1001", "1002"] {
        wait_agent_registered(&verde, id, Duration::from_secs(10));
    }
    log_in_ready(&mut anna, &verde, "1001");
    log_in_ready(&mut bruno, &verde, "1002");

    // Ring timeout, then Bruno's answer, then a few seconds of talk.
    let stay_ms = RING_TIMEOUT_S * 1000 + 5000;
    let (scen, longest) = inps_caller_scenario(
        &dir,
        CALLER,
        '1',
        Some(&Audio::tone(8000, CALLER_HZ, 30.0, 0.3)),
        stay_ms,
    );
    let sipp = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(20));
    let (out, rang_for) = std::thread::scope(|s| {
        let caller = s.spawn(|| sipp.run(&dir));
        // Anna's phone rings...
        let ring = anna
            .ctrl
            .wait_event("CALL_INCOMING", longest + Duration::from_secs(5));
        let rang = Instant::now();
        // ...while verde's view shows her ringing...
        let a = wait_agent(&verde, "1001", "ringing", Duration::from_secs(2), |a| {
            a["state"] == "ringing" || a["state"] == "reserved"
        });
        // ...until verde gives up on her.
        anna.ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(RING_TIMEOUT_S + 5));
        let rang_for = rang.elapsed();
        eprintln!("offer to Anna: {ring}; her state meanwhile: {a}");
        (caller.join().expect("SIPp thread"), rang_for)
    });
    out.assert_success("caller skipped past an unanswered agent");
    assert!(
        rang_for.as_secs_f64() > RING_TIMEOUT_S as f64 - 0.5
            && rang_for.as_secs_f64() < RING_TIMEOUT_S as f64 + 1.5,
        "Anna's phone rang for {rang_for:?}; the queue's ring timeout is {RING_TIMEOUT_S} s"
    );

    assert_eq!(
        offered_callers(&mut anna),
        [CALLER],
        "calls offered to Anna"
    );
    assert!(
        answered_callers(&mut anna).is_empty(),
        "Anna's phone never answered, yet reported an established incoming call"
    );
    assert_eq!(
        offered_callers(&mut bruno),
        [CALLER],
        "calls offered to Bruno"
    );
    assert_eq!(
        answered_callers(&mut bruno),
        [CALLER],
        "calls Bruno answered"
    );

    let a = wait_agent_state(&verde, "1001", "paused", Duration::from_secs(5));
    assert_eq!(a["pause_reason"], "no-answer", "Anna: {a}");
    assert!(a["missed"].as_u64() >= Some(1), "Anna's missed offers: {a}");
    assert_eq!(a["calls_handled"], 0, "Anna: {a}");
    let b = wait_agent(
        &verde,
        "1002",
        "done with one call",
        Duration::from_secs(5),
        |b| b["calls_handled"] == 1,
    );
    assert_eq!(b["missed"], 0, "Bruno: {b}");

    assert_reached_queue(&verde, &out.call_id, "pensions");
    let offers: Vec<String> = call_log(&verde, &out.call_id, "offering the call to an agent")
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert!(
        offers.len() == 2 && offers[0].contains("agent=1001") && offers[1].contains("agent=1002"),
        "expected an offer to 1001 and then one to 1002, verde logged:\n{}",
        offers.join("\n")
    );
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("answered-agent"),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "agent"),
        Some("1002"),
        "record {record:#}"
    );
    let waited = queue_wait_ms(&record);
    assert!(
        (RING_TIMEOUT_S * 1000..RING_TIMEOUT_S * 1000 + 2000).contains(&waited),
        "the caller waited {waited} ms: the ring timeout ({RING_TIMEOUT_S} s) and Bruno's answer"
    );

    // The caller reached Bruno: his phone heard its tone.
    bruno.quit();
    let (rec, heard) =
        recording_after_login(&bruno, "Bruno's recordings (the *11 call, the caller)");
    let tone = heard.tone_seconds(CALLER_HZ, 0.2);
    assert!(
        tone >= 1.5,
        "Bruno heard only {tone:.1} s of the caller's {CALLER_HZ} Hz tone ({})",
        rec.display()
    );
}
