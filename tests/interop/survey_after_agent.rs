//! The post-call survey of the INPS flow, end to end: a SIPp caller calls 803164, picks Italian
//! (1) and the operator (0); agent 1001's phone (baresip, auto-answer) takes the call, talks
//! a couple of seconds and hangs up first. The `q_operator` node has `after_agent: survey`, so
//! the caller stays on the line and hears the survey (`satisfaction`, then `resolved`, each
//! answered 1-6).
//!
//! 1. A caller answers 6 once the first question has been read in full, then, while the second
//!    question plays, a wrong key (9): verde says so and asks again, and the caller answers 2.
//!    After the thanks verde hangs up. The call record holds both answers on their questions,
//!    the call stays `answered-agent`, and its path ends with the survey and its hangup node.
//! 2. A caller answers the first question and hangs up while the second plays: the answer given
//!    is kept, the one not given is absent.
//!
//! Every key is released by the test only once verde's log shows where the call is (see
//! `verde_interop::survey`), and then timed from the survey prompts' lengths, read from the
//! WAVs, so that each answer is given after its question was heard.

use serde_json::{json, Value};
use std::time::Duration;
use verde_interop::acd::{
    heard_by_sipp_when, log_in_ready, variable, wait_agent, wait_agent_registered, write_config,
    LogLine, OTHER_INPS_QUEUES,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::flows::{self, INPS};
use verde_interop::pcap::{Capture, Datagram};
use verde_interop::sipp::{Sipp, SippRun};
use verde_interop::survey::{
    dtmf_stream_pcaps, released_caller_scenario, sleep_until, wait_call_log, Releaser, Step,
};
use verde_interop::verde::{field, record_path, Verde, VerdeOptions};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{require_private_netns, TestDir};

const AGENT: (&str, &str) = ("1001", "secret1");
/// How long the agent talks before hanging up: the test's input, not a wait for anything.
const TALK: Duration = Duration::from_secs(2);
/// The survey node of ivr-flows/inps.yaml and the hangup node it goes to.
const SURVEY_NODE: &str = "survey";
const SURVEY_END_NODE: &str = "end_survey";
/// How long after a prompt has started (or the question has been read) a caller presses.
const REACTION_S: f64 = 1.0;

/// The length of an Italian prompt, in seconds, from its WAV.
fn secs(name: &str) -> f64 {
    flows::prompt("it", name).duration()
}

/// verde with agent 1001 (queue operator) logged in and ready, its phone answering by itself.
fn verde_with_agent(dir: &TestDir) -> (Verde, Baresip) {
    let config = write_config(
        dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{}\", name: Anna, password: {}, queues: [operator] }}\n\
             queues:\n\
             \x20 - {{ name: pensions }}\n\
             {}",
            AGENT.0,
            AGENT.1,
            OTHER_INPS_QUEUES.replace(
                "{ name: operator }",
                "{ name: operator, wrap_up: 1s, announce: { first_delay: 60s, frequency: 60s } }"
            )
        ),
    );
    let verde = Verde::start(
        dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, 1000.0, 150.0, 0.3).save(&voice);
    let mut phone = Baresip::start_agent(
        dir,
        "anna",
        &AgentAccount::new(AGENT.0, AGENT.1, verde.sip).answer(AnswerMode::Auto),
        &voice,
    );
    wait_agent_registered(&verde, AGENT.0, Duration::from_secs(10));
    log_in_ready(&mut phone, &verde, AGENT.0);
    (verde, phone)
}

/// Starts a released caller pressing `keys` (language, service, then survey answers), with
/// `hang_up` as a last step if set. Returns SIPp and its releaser.
fn start_caller(
    dir: &TestDir,
    verde: &Verde,
    caller: &str,
    keys: &str,
    hang_up: bool,
) -> (SippRun, Releaser) {
    let mut steps: Vec<Step> = dtmf_stream_pcaps(dir, keys)
        .into_iter()
        .map(Step::Key)
        .collect();
    if hang_up {
        steps.push(Step::HangUp);
    }
    let scen = released_caller_scenario(dir, caller, &steps, 20_000);
    let run = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(120))
        .spawn(dir);
    let rel = Releaser::new(&run);
    (run, rel)
}

/// Waits for verde to log that it received `digit` on call `id`.
fn wait_digit(verde: &Verde, id: &str, digit: char) -> LogLine {
    wait_call_log(
        verde,
        id,
        &format!("dtmf digit={digit}"),
        &format!("verde to receive key {digit}"),
        Duration::from_secs(5),
    )
}

/// Walks the caller to the operator, lets the agent talk and hang up, and returns the
/// `ivr node node=survey` line: the survey has started.
fn through_the_agent_to_the_survey(
    verde: &Verde,
    phone: &mut Baresip,
    caller: &mut Releaser,
) -> LogLine {
    let id = caller.call_id().to_string();
    // Menus take keys while their options are read.
    let lang = wait_call_log(
        verde,
        &id,
        "ivr node node=language_menu",
        "the language menu",
        Duration::from_secs(15),
    );
    sleep_until(lang.time + REACTION_S);
    caller.release(); // 1: Italian
    wait_digit(verde, &id, '1');
    let svc = wait_call_log(
        verde,
        &id,
        "ivr node node=service_menu",
        "the service menu",
        Duration::from_secs(15),
    );
    sleep_until(svc.time + REACTION_S);
    caller.release(); // 0: operator
    wait_digit(verde, &id, '0');
    wait_call_log(
        verde,
        &id,
        "agent answered; bridging",
        "the agent to answer the operator queue's call",
        Duration::from_secs(15),
    );
    let est = phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert_eq!(
        est["direction"], "incoming",
        "the agent's phone should have answered verde's offer: {est}"
    );
    std::thread::sleep(TALK);
    phone.ctrl.hangup();
    phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(10));
    let hung = wait_call_log(
        verde,
        &id,
        "agent hung up",
        "verde to hear the agent's BYE",
        Duration::from_secs(5),
    );
    assert!(
        hung.text.contains(&format!("agent={}", AGENT.0)),
        "the agent's hangup must name agent {}: {}",
        AGENT.0,
        hung.text
    );
    wait_call_log(
        verde,
        &id,
        "agent hung up; the caller goes on in the flow",
        "the caller to stay on the line after the agent's hangup (after_agent)",
        Duration::from_secs(5),
    );
    let survey = wait_call_log(
        verde,
        &id,
        &format!("ivr node node={SURVEY_NODE}"),
        "the survey to start after the agent hung up",
        Duration::from_secs(5),
    );
    assert!(
        survey.time >= hung.time,
        "the survey started before the agent hung up:\n{}\n{}",
        hung.text,
        survey.text
    );
    survey
}

/// Fails unless what verde sent the caller between `from` and `to` (log times) holds the
/// Italian prompt `name` (its energy envelope, allowing `max_lag_ms` before it starts).
fn assert_heard(
    datagrams: &[Datagram],
    verde: &Verde,
    media_port: u16,
    (from, to): (f64, f64),
    name: &str,
    max_lag_ms: i64,
) {
    let heard = heard_by_sipp_when(datagrams, verde, media_port, |t| t >= from && t < to);
    let prompt = flows::prompt("it", name);
    // The end may be cut by the next key or the hangup's BYE.
    let reference = prompt.slice(0.0, prompt.duration() - 0.3);
    let (corr, lag) = envelope_correlation(&heard, &reference, 20, max_lag_ms);
    assert!(
        corr > 0.8,
        "the caller should have heard {name} in the {:.2} s after {from:.3} ({:.2} s of audio \
         captured): envelope correlation {corr:.3} at {lag} ms",
        to - from,
        heard.duration()
    );
}

/// The checks both cases share: the call was served by the agent, the menus chose Italian and
/// the operator, and `survey` is exactly `want`.
fn assert_served_and_surveyed(record: &Value, dtmf: &str, want: Value) {
    assert_eq!(
        field(record, "survey"),
        &want,
        "survey answers in the call record; record {record:#}"
    );
    assert_eq!(
        field(record, "disposition").as_str(),
        Some("answered-agent"),
        "the survey after the agent must not change how the call was served: {record:#}"
    );
    assert_eq!(variable(record, "agent"), Some(AGENT.0), "{record:#}");
    assert_eq!(variable(record, "queue"), Some("operator"), "{record:#}");
    assert_eq!(field(record, "language").as_str(), Some("it"), "{record:#}");
    assert_eq!(
        field(record, "choices"),
        &json!(["language_menu=1", "service_menu=0"]),
        "survey keys are not menu choices: {record:#}"
    );
    assert_eq!(
        field(record, "dtmf").as_str(),
        Some(dtmf),
        "every key the caller pressed, once: {record:#}"
    );
}

#[test]
fn a_caller_answers_the_post_call_survey_after_the_agent_hangs_up() {
    require_private_netns();
    let dir = TestDir::new("survey_after_agent");
    let (verde, mut phone) = verde_with_agent(&dir);
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));
    let (run, mut caller) = start_caller(&dir, &verde, "0611555001", "10692", false);
    let id = caller.call_id().to_string();
    let survey = through_the_agent_to_the_survey(&verde, &mut phone, &mut caller);

    // 6 once the intro and the first question (with its scale) have been read in full: the
    // survey then waits 5 s for the key.
    let first_read = secs("survey_intro") + secs("survey_q_satisfaction") + secs("survey_scale");
    sleep_until(survey.time + first_read + REACTION_S);
    caller.release();
    let six = wait_digit(&verde, &id, '6');
    // 9 while the second question plays: not on the 1-6 scale.
    sleep_until(six.time + REACTION_S);
    caller.release();
    let nine = wait_digit(&verde, &id, '9');
    // 2 once verde has said the key was wrong and is asking the second question again.
    sleep_until(nine.time + secs("survey_invalid") + REACTION_S);
    caller.release();
    let two = wait_digit(&verde, &id, '2');

    // Then the thanks, and verde hangs up: SIPp answers its BYE.
    let out = run.wait();
    out.assert_success("the surveyed caller");
    let bye = wait_call_log(
        &verde,
        &id,
        "flow hangs up",
        "the flow's hangup after the survey",
        Duration::from_secs(5),
    );
    assert!(
        bye.text.contains("reason=survey_done"),
        "the call must end at the survey's hangup node: {}",
        bye.text
    );
    let thanks = secs("survey_thanks");
    assert!(
        bye.time - two.time >= thanks - 0.3,
        "verde hung up {:.2} s after the last answer, before the {thanks:.2} s thanks could play",
        bye.time - two.time
    );
    let received_bye = out
        .messages
        .replace('\r', "")
        .split("message received")
        .skip(1)
        .any(|m| {
            m.trim_start_matches(|c: char| c != '\n')
                .trim_start()
                .starts_with("BYE ")
        });
    assert!(
        received_bye,
        "SIPp should have received verde's BYE\n{}",
        out.report()
    );

    // The wrong key was answered with the invalid-key prompt (then the question again), and
    // the last answer with the thanks.
    let datagrams = cap.stop();
    let media = out.media_port;
    assert_heard(
        &datagrams,
        &verde,
        media,
        (nine.time, two.time),
        "survey_invalid",
        500,
    );
    assert_heard(
        &datagrams,
        &verde,
        media,
        (two.time, bye.time + 0.1),
        "survey_thanks",
        300,
    );
    // And before any key, the intro of the survey.
    assert_heard(
        &datagrams,
        &verde,
        media,
        (survey.time, six.time),
        "survey_intro",
        500,
    );

    let record = verde.wait_call_record(&id, Duration::from_secs(10));
    assert_served_and_surveyed(
        &record,
        "10692",
        json!([
            {"question": "satisfaction", "score": 6},
            {"question": "resolved", "score": 2}
        ]),
    );
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("engine"),
        "verde hung up after the thanks: {record:#}"
    );
    let path = record_path(&record);
    assert!(
        path.ends_with(&[SURVEY_NODE.to_string(), SURVEY_END_NODE.to_string()]),
        "the path must end with the survey and its hangup node: {path:?}"
    );
    assert!(
        path.iter().any(|n| n == "q_operator"),
        "the path must go through the operator queue: {path:?}"
    );
    assert_eq!(variable(&record, "survey.satisfaction"), Some("6"));
    assert_eq!(variable(&record, "survey.resolved"), Some("2"));
    // The agent is free again and counted the call.
    wait_agent(
        &verde,
        AGENT.0,
        "ready after one call",
        Duration::from_secs(10),
        |a| a["state"] == "ready" && a["calls_handled"] == 1,
    );
    eprintln!(
        "keys 6/9/2 at +{:.2}/+{:.2}/+{:.2} s from the survey's start; verde hung up {:.2} s \
         after the last answer",
        six.time - survey.time,
        nine.time - survey.time,
        two.time - survey.time,
        bye.time - two.time
    );
}

#[test]
fn a_caller_hanging_up_during_the_survey_keeps_the_answers_given() {
    require_private_netns();
    let dir = TestDir::new("survey_after_agent_hangup");
    let (verde, mut phone) = verde_with_agent(&dir);
    let (run, mut caller) = start_caller(&dir, &verde, "0611555002", "104", true);
    let id = caller.call_id().to_string();
    let survey = through_the_agent_to_the_survey(&verde, &mut phone, &mut caller);

    let first_read = secs("survey_intro") + secs("survey_q_satisfaction") + secs("survey_scale");
    sleep_until(survey.time + first_read + REACTION_S);
    caller.release();
    let four = wait_digit(&verde, &id, '4');
    // Hang up while the second question plays.
    sleep_until(four.time + REACTION_S);
    caller.release();
    let out = run.wait();
    out.assert_success("the caller hanging up during the survey");
    wait_call_log(
        &verde,
        &id,
        "caller hung up",
        "verde to see the caller's BYE",
        Duration::from_secs(5),
    );

    let record = verde.wait_call_record(&id, Duration::from_secs(10));
    assert_served_and_surveyed(
        &record,
        "104",
        json!([{"question": "satisfaction", "score": 4}]),
    );
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("caller"),
        "{record:#}"
    );
    let path = record_path(&record);
    assert_eq!(
        path.last().map(String::as_str),
        Some(SURVEY_NODE),
        "the caller left during the survey: {path:?}"
    );
    assert_eq!(variable(&record, "survey.satisfaction"), Some("4"));
    assert_eq!(
        variable(&record, "survey.resolved"),
        None,
        "a question not answered before the hangup must be absent: {record:#}"
    );
}
