//! Flows are watched: a broken edit is refused with file, line and reason while the last good
//! version keeps answering; a good edit applies to the next call; SIGHUP reloads too.

use std::time::Duration;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const HELPDESK: &str = "800779366";

fn call(dir: &TestDir, verde: &Verde) -> serde_json::Value {
    let sc = scenario(
        dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let out = Sipp::new(&sc, verde.sip)
        .service(HELPDESK)
        .timeout(Duration::from_secs(20))
        .run(dir);
    out.assert_success("call to the helpdesk number");
    verde.wait_call_record(&out.call_id, Duration::from_secs(10))
}

#[test]
fn a_broken_flow_is_refused_with_its_line_and_the_last_good_one_keeps_serving() {
    require_private_netns();
    let dir = TestDir::new("flow_hot_reload");
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let root = verde_interop::repo_root();
    for f in [
        "inps.yaml",
        "university-facilities.yaml",
        "teaching-helpdesk.yaml",
    ] {
        std::fs::copy(root.join("ivr-flows").join(f), flows.join(f)).unwrap();
    }
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            flows: flows.clone(),
            ..VerdeOptions::default()
        },
    );
    let before = call(&dir, &verde);
    assert_eq!(before["did"].as_str(), Some(HELPDESK), "{before:#}");
    let first_node = before["path"][0].as_str().unwrap_or_default().to_string();
    assert!(
        !first_node.is_empty(),
        "the call went through a node: {before:#}"
    );

    // Break it: the start node points nowhere.
    let file = flows.join("teaching-helpdesk.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    let line = good.lines().position(|l| l.starts_with("start:")).unwrap() + 1;
    std::fs::write(
        &file,
        good.replace(&format!("start: {first_node}"), "start: nowhere"),
    )
    .unwrap();
    let refused = verde.wait_log("flow refused", Duration::from_secs(10));
    assert!(
        refused.contains(&format!("teaching-helpdesk.yaml:{line}:")) && refused.contains("nowhere"),
        "the refusal names file, line and reason: {refused}"
    );
    // The last good version still answers, from its first node.
    let during = call(&dir, &verde);
    assert_eq!(
        during["path"][0].as_str(),
        Some(first_node.as_str()),
        "{during:#}"
    );

    // A good edit applies to the next call: a new first node that plays goodbye, then the old
    // start.
    let reloads = verde.logs().matches("flows reloaded").count();
    let edited = good
        .replace(&format!("start: {first_node}"), "start: intro")
        .replacen(
            "nodes:\n",
            &format!("nodes:\n  intro:\n    type: play\n    prompts: [goodbye]\n    next: {first_node}\n"),
            1,
        );
    std::fs::write(&file, edited).unwrap();
    verde_interop::try_wait_for(Duration::from_secs(10), || {
        (verde.logs().matches("flows reloaded").count() > reloads).then_some(())
    })
    .unwrap_or_else(|| panic!("the good edit was not reloaded; log:\n{}", verde.logs()));
    let after = call(&dir, &verde);
    assert_eq!(after["path"][0].as_str(), Some("intro"), "{after:#}");

    // SIGHUP reloads on demand.
    unsafe { libc::kill(verde.pid() as i32, libc::SIGHUP) };
    verde.wait_log(
        "SIGHUP: reloading the configuration and the flows",
        Duration::from_secs(10),
    );
}
