//! Calls up when verde is killed (SIGKILL) are ended towards their peers when it comes back,
//! and recorded as interrupted; a call that had ended before the kill keeps its record.
//!
//! Three calls: one that ends normally before the kill (SIPp hangs up after a moment in the
//! INPS menus); one caller left listening in the INPS menus; one caller queued straight into
//! `pensions` and bridged to agent 1001, whose phone is SIPp (one SIPp registers it and logs in
//! with `*11`, another, on the registered Contact, answers the ACD's call). The two callers
//! and the agent's phone never hang up by themselves: they wait for a BYE and answer it, and
//! SIPp exits 0 only if it came. verde journals the answered dialogs; it is killed once the
//! journal has them, and restarted on the same data dir and SIP port.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use verde_interop::acd::{wait_agent_state, write_config, OTHER_INPS_QUEUES};
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp, SippOutcome};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{fixtures_dir, free_port, repo_root, require_private_netns, TestDir};

const AGENT: &str = "1001";
const PASSWORD: &str = "secret1";
/// `tests/fixtures/flows-direct-queue/direct-pensions.yaml`: straight to pensions.
const DIRECT: &str = "800500001";
/// How long the peers wait for verde's BYE: the whole test, restart included.
const WAIT_FOR_BYE: Duration = Duration::from_secs(40);
/// How soon after the restart every peer must have had its BYE.
const BYE_WITHIN: Duration = Duration::from_secs(5);

/// The INPS flow and the direct-to-pensions one, side by side.
fn flows(dir: &TestDir) -> PathBuf {
    let out = dir.subdir("flows");
    for src in [
        repo_root().join("ivr-flows").join("inps.yaml"),
        fixtures_dir()
            .join("flows-direct-queue")
            .join("direct-pensions.yaml"),
    ] {
        let to = out.join(src.file_name().unwrap());
        std::fs::copy(&src, &to)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", src.display(), to.display()));
    }
    out
}

/// One SIP message of SIPp's `-trace_msg` log, as text, with whether it was received.
fn sipp_messages(log: &str) -> Vec<(bool, String)> {
    log.replace('\r', "")
        .split("\n-----------------------------------------------")
        .filter_map(|block| {
            // The first line is the rest of the separator: the time.
            let mut lines = block.lines().skip(1).skip_while(|l| l.trim().is_empty());
            let what = lines.next()?;
            let received = what.contains("message received");
            if !received && !what.contains("message sent") {
                return None;
            }
            let text = lines.collect::<Vec<_>>().join("\n").trim().to_string();
            (!text.is_empty()).then_some((received, text))
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\n\n").next()?.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn tag(value: &str) -> Option<&str> {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(|t| t.trim_end_matches('>'))
}

/// The BYE verde sent after the restart, checked against the dialog SIPp saw: same Call-ID,
/// From carrying the tag verde gave (`local_tag_from` of the message verde sent first in the
/// dialog), To the peer's own tag, a CSeq beyond what verde used.
fn assert_bye_in_dialog(who: &str, run: &SippOutcome, verde_answered: bool) {
    let msgs = sipp_messages(&run.messages);
    let bye = msgs
        .iter()
        .find(|(rx, m)| *rx && m.starts_with("BYE "))
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("{who} received no BYE\n{}", run.report()));
    // The 200 to the INVITE: received from verde (callers) or sent to it (the agent).
    let ok = msgs
        .iter()
        .find(|(rx, m)| {
            *rx == verde_answered
                && m.starts_with("SIP/2.0 200")
                && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("{who}: no 200 OK to the INVITE in SIPp's log"));
    assert_eq!(
        header(bye, "Call-ID"),
        header(ok, "Call-ID"),
        "{who}'s BYE:\n{bye}"
    );
    let (ours, theirs) = if verde_answered {
        // verde is the UAS: its tag is the 200's To tag, the caller's the From tag.
        (
            header(ok, "To").and_then(tag),
            header(ok, "From").and_then(tag),
        )
    } else {
        (
            header(ok, "From").and_then(tag),
            header(ok, "To").and_then(tag),
        )
    };
    assert!(ours.is_some() && theirs.is_some(), "{who}: tags in\n{ok}");
    assert_eq!(
        header(bye, "From").and_then(tag),
        ours,
        "{who}'s BYE From:\n{bye}"
    );
    assert_eq!(
        header(bye, "To").and_then(tag),
        theirs,
        "{who}'s BYE To:\n{bye}"
    );
    let cseq = header(bye, "CSeq").unwrap_or_default();
    let n: u32 = cseq
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{who}'s BYE CSeq {cseq:?}"));
    assert!(cseq.ends_with("BYE") && n > 1, "{who}'s BYE CSeq {cseq:?}");
}

#[test]
fn crash_bye_on_restart() {
    require_private_netns();
    let t0 = Instant::now();
    let dir = TestDir::new("crash_bye_on_restart");
    // The journal's commits are logged at debug: the test kills verde once they are done.
    std::env::set_var("VERDE_LOG", "info,verde::dialogs=debug");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {PASSWORD}, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 10s, wrap_up: 1s, \
             announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            flows: flows(&dir),
            ..Default::default()
        },
    );

    // The agent's phone: the UAS on its Contact, then REGISTER and *11 from the other half.
    let agent_port = free_port();
    let agent_scen = scenario(
        &dir,
        "uas_agent_wait_bye.xml",
        &[
            ("AGENT", AGENT.to_string()),
            ("WAIT_MS", WAIT_FOR_BYE.as_millis().to_string()),
        ],
    );
    let mut agent = Sipp::new(&agent_scen, verde.sip)
        .uas()
        .local_port(agent_port)
        .timeout(WAIT_FOR_BYE + Duration::from_secs(10))
        .spawn(&dir);
    agent.wait_bound();
    let login = scenario(
        &dir,
        "uac_agent_login.xml",
        &[
            ("AGENT", AGENT.to_string()),
            ("PASSWORD", PASSWORD.to_string()),
            ("UAS_PORT", agent_port.to_string()),
            ("CODE", "*11".to_string()),
        ],
    );
    Sipp::new(&login, verde.sip)
        .timeout(Duration::from_secs(20))
        .run(&dir)
        .assert_success("agent 1001 registers and logs in with *11");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));

    // A call that ends normally: its record must come through the crash as it was.
    let finished = scenario(
        &dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1000".into())],
    );
    let finished = Sipp::new(&finished, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(15))
        .run(&dir);
    finished.assert_success("the call that hangs up before the kill");
    let before = verde.wait_call_record(&finished.call_id, Duration::from_secs(5));
    assert_ne!(field(&before, "disposition"), "interrupted", "{before:#}");

    // The two calls the crash interrupts.
    let waiting = |caller: &str, did: &str| {
        let scen = scenario(
            &dir,
            "uac_wait_bye.xml",
            &[
                ("CALLER", caller.to_string()),
                ("WAIT_MS", WAIT_FOR_BYE.as_millis().to_string()),
            ],
        );
        Sipp::new(&scen, verde.sip)
            .service(did)
            .timeout(WAIT_FOR_BYE + Duration::from_secs(10))
            .spawn(&dir)
    };
    let in_ivr = waiting("0611000001", INPS);
    let journaled = |call_id: &str, leg: &str| {
        verde.wait_log(
            &format!("dialog journaled call_id={call_id} leg={leg}"),
            Duration::from_secs(10),
        )
    };
    journaled(in_ivr.call_id(), "caller");
    let with_agent = waiting("0611000002", DIRECT);
    journaled(with_agent.call_id(), "caller");
    journaled(with_agent.call_id(), &format!("agent:{AGENT}"));

    let status = verde.kill();
    assert!(
        status.is_some_and(|s| !s.success()),
        "verde should have died of SIGKILL, exited {status:?}"
    );
    assert!(
        !verde.logs().contains("BYE after restart"),
        "the first start found calls to end: the data dir was not fresh"
    );
    // Measured from the restart's beginning: start-up (prompts, flows) included.
    let restarted = Instant::now();
    verde.restart_on_same_sip_port(&dir);

    // Every peer had its BYE (and answered it) soon after the restart.
    let mut byes = Vec::new();
    for (who, run, verde_answered) in [
        ("the caller in the IVR", in_ivr, true),
        ("the caller talking to the agent", with_agent, true),
        ("the agent's phone", agent, false),
    ] {
        let out = run.wait();
        out.assert_success(&format!("{who} waits for verde's BYE"));
        assert_bye_in_dialog(who, &out, verde_answered);
        byes.push((who, restarted.elapsed(), out));
    }
    for (who, after, _) in &byes {
        assert!(
            *after <= BYE_WITHIN,
            "{who} had its BYE only {after:?} after the restart (at most {BYE_WITHIN:?})"
        );
    }
    let answered = verde
        .logs()
        .lines()
        .filter(|l| l.contains("BYE after restart answered") && l.contains("status=200"))
        .count();
    assert_eq!(
        answered,
        3,
        "verde's log after the restart:\n{}",
        verde.logs()
    );

    // The interrupted calls are recorded as such, once; the finished one is untouched.
    let calls = verde.recent_calls(50);
    let records = |id: &str| -> Vec<&serde_json::Value> {
        calls.iter().filter(|c| c["call_id"] == id).collect()
    };
    for (who, _, out) in &byes[..2] {
        let found = records(&out.call_id);
        assert_eq!(found.len(), 1, "{who}: records {found:#?}");
        let r = found[0];
        assert_eq!(field(r, "disposition"), "interrupted", "{who}: {r:#}");
        assert_eq!(field(r, "hangup_by"), "engine", "{who}: {r:#}");
        assert!(r["answered_at"].is_string(), "{who}: {r:#}");
    }
    let r = records(&byes[1].2.call_id)[0];
    assert_eq!(r["did"], DIRECT, "{r:#}");
    assert_eq!(r["variables"]["agent"], AGENT, "{r:#}");
    assert_eq!(records(&byes[0].2.call_id)[0]["did"], INPS);
    let after = records(&finished.call_id);
    assert_eq!(after.len(), 1, "the finished call: {after:#?}");
    assert_eq!(*after[0], before, "the finished call's record changed");
    // Nothing is left for the next start.
    verde.restart_on_same_sip_port(&dir);
    assert!(
        !verde.logs().contains("BYE after restart"),
        "a second restart found calls to end again:\n{}",
        verde.logs()
    );
    eprintln!(
        "BYEs after restart at {:?}; test took {:?}",
        byes.iter()
            .map(|(w, t, _)| format!("{w}: {t:?}"))
            .collect::<Vec<_>>(),
        t0.elapsed()
    );
}
