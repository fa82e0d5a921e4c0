//! The agent bar (`/agent`) and the wallboard (`/wallboard`) in a real browser: headless Debian
//! chromium driven by playwright-core (`tests/browser/agent_bar_wallboard.mjs`), with a real
//! phone (baresip, set to auto-answer) and a real caller (SIPp through the INPS IVR).
//!
//! The agent logs in on the bar, becomes ready, pauses; a SIPp caller walks the IVR into
//! pensions and the wallboard shows it waiting; the agent clicks Ready and the pop-up shows the
//! caller's number and queue while the phone stays silent (answer_from: bar); Answer makes
//! verde call the phone with an auto-answer request and the call connects (baresip reports it
//! established, the wallboard shows the agent on call); the agent transfers the caller to
//! benefits from the bar, finishes wrap-up, and the wallboard follows every step; the caller
//! then hangs up in benefits and the day's figures count the abandon. Screenshots of every step
//! are listed at the end of the output for a person to look at.

use serde_json::Value;
use std::time::Duration;
use verde_interop::acd::{
    agent_voice, assert_reached_queue, inps_caller_scenario, variable, wait_agent, write_config,
};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::flows::INPS;
use verde_interop::node::{screenshot_dir, NodeScript};
use verde_interop::sipp::Sipp;
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const AGENT: &str = "a1";
const CALLER: &str = "0633000777";
/// The caller stays this long after its last key: long enough to wait more than 15 s in
/// benefits after the transfer, so its hang-up counts as a real abandon.
const STAY_MS: u64 = 28_000;

#[test]
fn agent_answers_from_the_bar_transfers_and_the_wallboard_follows() {
    require_private_netns();
    let dir = TestDir::new("browser_agent_bar");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {AGENT}, password: bar-secret, queues: [pensions], answer_from: bar }}\n\
             supervisors:\n\
             \x20 - {{ id: sup1, password: wall-secret }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 20s, wrap_up: 120s, announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             \x20 - {{ name: benefits, announce: {{ first_delay: 120s, frequency: 120s }} }}\n\
             \x20 - {{ name: pin }}\n\
             \x20 - {{ name: operator }}\n"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let mut phone = Baresip::start_agent(
        &dir,
        "a1",
        &AgentAccount::new(AGENT, "bar-secret", verde.sip),
        &agent_voice(&dir, 1000.0, 120.0),
    );
    wait_agent(&verde, AGENT, "registered", Duration::from_secs(10), |a| {
        a["registered"] == Value::Bool(true)
    });

    let shots = screenshot_dir("browser_agent_bar");
    let mut node = NodeScript::start(
        "agent_bar_wallboard.mjs",
        &[
            &format!("http://{}", verde.http),
            &shots,
            &AGENT,
            &"bar-secret",
            &"sup1",
            &"wall-secret",
        ],
        &[("VERDE_CALLER", &CALLER)],
    );
    let mut screenshots = Vec::new();
    let mut offer: Option<Value> = None;
    let go = |node: &mut NodeScript| node.send("GO").expect("write to node");

    let mut caller = None;
    let mut steps = Vec::new();
    while let Some(step) = next_step(&node, &mut screenshots, &mut offer) {
        steps.push(step.clone());
        match step.as_str() {
            "call" => {
                let (scen, longest) = inps_caller_scenario(&dir, CALLER, '1', None, STAY_MS);
                let sipp = Sipp::new(&scen, verde.sip)
                    .service(INPS)
                    .timeout(longest + Duration::from_secs(30));
                caller = Some(sipp.spawn(&dir));
                go(&mut node);
            }
            "offered" => {
                // answer_from: bar: the offer rang the bar only; the phone has not been called.
                assert!(
                    phone.ctrl.events("CALL_ESTABLISHED").is_empty()
                        && phone.ctrl.events("CALL_INCOMING").is_empty(),
                    "the phone was called before the agent clicked Answer: {:?}",
                    phone.ctrl.all_events()
                );
                let a = verde_interop::acd::agent(&verde, AGENT);
                assert_eq!(a["state"], "ringing", "the bar offer shows as ringing: {a}");
                go(&mut node);
            }
            "answered" => {
                let ev = phone
                    .ctrl
                    .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
                assert_eq!(
                    verde_interop::acd::uri_user(ev["peeruri"].as_str().unwrap_or_default()),
                    CALLER,
                    "the phone auto-answered the caller's call: {ev}"
                );
                go(&mut node);
            }
            "ready-again" => go(&mut node),
            "DONE" => break,
            other => panic!("unknown step from the browser script: {other}"),
        }
    }
    // A script that stopped short of DONE may still wait for a GO.
    let done = steps.last().map(String::as_str) == Some("DONE");
    let (status, stderr) = node.finish(!done);
    println!(
        "\nScreenshots for a person to look at ({}):",
        shots.display()
    );
    for s in &screenshots {
        println!("  {s}");
    }
    assert!(
        status.success() && done,
        "the browser script failed ({status}) after steps {steps:?}:\n{stderr}"
    );
    assert!(
        screenshots.len() >= 10,
        "expected a screenshot of each step: {screenshots:?}"
    );
    let offer = offer.expect("the script reported the pop-up's content");
    assert_eq!(
        offer["did"].as_str().map(str::trim),
        Some(INPS),
        "pop-up: {offer}"
    );
    assert!(
        offer["choices"].as_str().unwrap_or("").contains('1'),
        "the pop-up lists the IVR choices: {offer}"
    );

    let out = caller.expect("the caller was started").wait();
    out.assert_success("the caller, through IVR, agent and transfer");
    assert_reached_queue(&verde, &out.call_id, "pensions");
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(variable(&record, "agent"), Some(AGENT), "record {record:#}");
    assert_eq!(
        variable(&record, "transferred_by"),
        Some(AGENT),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "transferred_to"),
        Some("benefits"),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "queue"),
        Some("benefits"),
        "record {record:#}"
    );
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("abandoned-queue"),
        "the caller hung up waiting in benefits: {record:#}"
    );
    // The same truth on /metrics, for Prometheus: the agent ready, nobody waiting.
    let metrics = verde.get("/metrics").text();
    for line in [
        "verde_agents{state=\"ready\"} 1".to_string(),
        "verde_queue_waiting{queue=\"pensions\"} 0".to_string(),
        "verde_queue_waiting{queue=\"benefits\"} 0".to_string(),
        "verde_registrations 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }
    let logs = verde.logs();
    assert!(
        logs.contains("answer-after=0") || logs.contains("calling its phone to auto-answer"),
        "verde logged the answer from the bar"
    );
}

/// The script's next `STEP <name>` (or `DONE`), keeping its screenshots and the pop-up's
/// content on the way; `None` when it stopped talking. Every wait in the browser is on an
/// event, with a deadline.
fn next_step(
    node: &NodeScript,
    screenshots: &mut Vec<String>,
    offer: &mut Option<Value>,
) -> Option<String> {
    loop {
        let line = node.next_line(Duration::from_secs(90)).ok()?;
        if let Some(p) = line.strip_prefix("SHOT ") {
            screenshots.push(p.to_string());
        } else if let Some(o) = line.strip_prefix("OFFER ") {
            *offer = serde_json::from_str(o).ok();
        } else if let Some(s) = line.strip_prefix("STEP ") {
            return Some(s.to_string());
        } else if line == "DONE" {
            return Some(line);
        }
    }
}
