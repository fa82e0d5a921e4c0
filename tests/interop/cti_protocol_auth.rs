//! The `/cti` websocket protocol without calls, over a real websocket client: logins (password,
//! token, resume), the lockout, the framing errors (each followed by a command that still
//! works), the rate limit, the roles, the agent's state commands and what `/api/agents` then
//! shows, the supervisors' wallboard feed and forced states, and the task commands on an empty
//! store. Every case is in docs/cti-protocol.md.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verde_interop::acd::{agent, wait_agent, wait_agent_state, write_config};
use verde_interop::cti::{assert_log_line, Cti, Deviations, Wallboard, WAIT};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const A1: (&str, &str) = ("a1", "pw-a1");
const A2: (&str, &str) = ("a2", "pw-a2");
/// Only ever given wrong passwords: locked out for the rest of the test.
const A3: (&str, &str) = ("a3", "pw-a3");
const SUP: (&str, &str) = ("sup1", "pw-sup1");
/// The token lifetime the doc gives (12 h).
const TOKEN_TTL_S: u64 = 12 * 3600;

fn error_code(r: &Value) -> &str {
    if r["type"] != "error" {
        return "";
    }
    r["code"].as_str().unwrap_or("")
}

/// The first event after a login or resume result must be the agent's `agent_state`.
fn first_event_is_agent_state(c: &mut Cti, agent: &str, state: &str) -> Value {
    let first = c.take("the first event after the login result", WAIT, |m| {
        m["type"] != "result" && m["type"] != "error"
    });
    if first["type"] != "agent_state" || first["agent"] != agent || first["state"] != state {
        c.fail(&format!(
            "the first event after logging in must be agent_state {{agent: {agent}, state: {state}}}; got {first}"
        ));
    }
    let in_state = first["in_state_s"].as_f64();
    if in_state.is_none_or(|s| !(0.0..3600.0).contains(&s)) {
        c.fail(&format!(
            "agent_state must carry in_state_s (seconds >= 0); got {first}"
        ));
    }
    first
}

fn assert_login_result(c: &Cti, r: &Value, user: &str, role: &str) {
    let exp = r["expires_in_s"].as_u64().unwrap_or(0);
    if r["user"] != user
        || r["role"] != role
        || !(TOKEN_TTL_S - 120..=TOKEN_TTL_S).contains(&exp)
        || !r["token"]
            .as_str()
            .is_some_and(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        c.fail(&format!(
            "expected a login result for {user} with role {role}, a 64-hex-digit token and \
             expires_in_s close to {TOKEN_TTL_S}; got {r}"
        ));
    }
}

#[test]
fn cti_protocol_without_calls() {
    require_private_netns();
    let t0 = Instant::now();
    let dir = TestDir::new("cti_protocol_auth");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {}, name: Anna, password: {}, queues: [pensions] }}\n\
             \x20 - {{ id: {}, name: Bruno, password: {}, queues: [pensions, benefits] }}\n\
             \x20 - {{ id: {}, name: Carla, password: {}, queues: [pensions] }}\n\
             supervisors:\n\
             \x20 - {{ id: {}, password: {} }}\n",
            A1.0, A1.1, A2.0, A2.1, A3.0, A3.1, SUP.0, SUP.1
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let http = verde.http;
    let mut dev = Deviations::default();

    // ---- login with a password ---------------------------------------------------------------
    let mut a1 = Cti::connect(http);
    let r = a1.login(A1.0, A1.1);
    assert_login_result(&a1, &r, A1.0, "agent");
    let token_a1 = Cti::token_of(&r);
    // The current state follows the result, even for an agent that never changed state since
    // verde started.
    let first = a1.try_take(WAIT, |m| m["type"] != "result" && m["type"] != "error");
    dev.check(
        first
            .as_ref()
            .is_some_and(|m| m["type"] == "agent_state" && m["state"] == "loggedout"),
        || {
            format!(
                "login of an agent that has not changed state since verde started: expected \
                 agent_state {{state: loggedout}} right after the result (\"Right after the result \
                 the server sends the current state: for an agent its agent_state\"); got {}",
                first
                    .as_ref()
                    .map_or("nothing within 5 s".to_string(), Value::to_string)
            )
        },
    );
    // A second login on the same connection does not fit.
    a1.cmd_err(
        json!({"type": "login", "user": A1.0, "password": A1.1}),
        "invalid_state",
    );

    // ---- unauthenticated commands ------------------------------------------------------------
    let mut anon = Cti::connect(http);
    anon.set_name("anonymous");
    for cmd in [
        json!({"type": "set_state", "state": "ready"}),
        json!({"type": "tasks"}),
        json!({"type": "subscribe_queues"}),
        json!({"type": "answer", "call": 1}),
    ] {
        anon.cmd_err(cmd, "unauthenticated");
    }

    // ---- wrong password, unknown user: auth_failed; the connection can still log in ---------
    let mut a2 = Cti::connect(http);
    a2.set_name("a2");
    a2.cmd_err(
        json!({"type": "login", "user": A2.0, "password": "not-the-password"}),
        "auth_failed",
    );
    a2.cmd_err(
        json!({"type": "login", "user": "nobody", "password": "whatever"}),
        "auth_failed",
    );
    a2.cmd_err(json!({"type": "login", "user": A2.0}), "bad_request");
    let r = a2.login(A2.0, A2.1);
    assert_login_result(&a2, &r, A2.0, "agent");
    let token_a2 = Cti::token_of(&r);
    assert_ne!(token_a1, token_a2, "two logins must get different tokens");
    assert_log_line(
        &verde,
        "the failed login",
        &["CTI refusal", "failed CTI login for user \"a2\""],
    );

    // ---- 5 failures within 60 s lock the user for 5 minutes ---------------------------------
    let mut a3 = Cti::connect(http);
    a3.set_name("a3");
    for n in 1..=5 {
        let r = a3.cmd(json!({"type": "login", "user": A3.0, "password": format!("wrong-{n}")}));
        let want = if n < 5 { "auth_failed" } else { "locked" };
        if error_code(&r) != want {
            a3.fail(&format!(
                "failed login #{n} of a3 must give {want}; got {r}"
            ));
        }
    }
    // Even the right password is refused now, and the message says how long is left.
    let r = a3.cmd_err(
        json!({"type": "login", "user": A3.0, "password": A3.1}),
        "locked",
    );
    let msg = r["message"].as_str().unwrap_or_default().to_string();
    let left: Option<u64> = msg
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .find_map(|s| s.parse().ok());
    assert!(
        left.is_some_and(|s| (240..=300).contains(&s)),
        "the locked message must say how long is left (about 300 s); got {msg:?}"
    );
    assert_log_line(
        &verde,
        "the lockout",
        &[
            "CTI refusal",
            "failed CTI login for user \"a3\" (locked out)",
        ],
    );

    // ---- token login ---------------------------------------------------------------------------
    let mut a1_tok = Cti::connect(http);
    a1_tok.set_name("a1 (token)");
    let r = a1_tok.cmd_ok(json!({"type": "login", "token": token_a1}));
    assert_login_result(&a1_tok, &r, A1.0, "agent");
    assert_eq!(
        r["token"], token_a1,
        "a token login must answer with the same token: {r}"
    );
    if first.is_some() {
        first_event_is_agent_state(&mut a1_tok, A1.0, "loggedout");
    }
    let mut wrong_user = Cti::connect(http);
    wrong_user.set_name("a2 with a1's token");
    wrong_user.cmd_err(
        json!({"type": "login", "user": A2.0, "token": token_a1}),
        "auth_failed",
    );
    // With the right user the same connection logs in.
    wrong_user.cmd_ok(json!({"type": "login", "user": A1.0, "token": token_a1}));
    wrong_user.cmd_err(
        json!({"type": "login", "token": "00".repeat(32)}),
        "invalid_state",
    );
    let mut bad_tok = Cti::connect(http);
    bad_tok.set_name("unknown token");
    bad_tok.cmd_err(
        json!({"type": "login", "token": "ab".repeat(32)}),
        "invalid_token",
    );

    // ---- set_state ---------------------------------------------------------------------------
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| {
        m["state"] == "ready" && m["agent"] == A1.0
    });
    let shown = wait_agent_state(&verde, A1.0, "ready", WAIT);
    assert_eq!(
        shown["queues"],
        json!(["pensions"]),
        "a1 logged in by set_state ready must serve its configured queues: {shown}"
    );
    // The other connection of the same agent (token login) hears it too.
    a1_tok.wait_event("agent_state", WAIT, |m| m["state"] == "ready");

    a1.cmd_ok(json!({"type": "set_state", "state": "pause", "reason": "lunch"}));
    let ev = a1.wait_event("agent_state", WAIT, |m| m["state"] == "paused");
    assert_eq!(
        ev["reason"], "lunch",
        "agent_state paused must carry the reason given: {ev}"
    );
    wait_agent(&verde, A1.0, "paused for lunch", WAIT, |a| {
        a["state"] == "paused" && a["pause_reason"] == "lunch"
    });
    a1.cmd_err(
        json!({"type": "set_state", "state": "pause"}),
        "bad_request",
    );
    a1.cmd_err(
        json!({"type": "set_state", "state": "pause", "reason": "x".repeat(65)}),
        "bad_request",
    );
    a1.cmd_err(
        json!({"type": "set_state", "state": "ready", "queues": ["no-such-queue"]}),
        "not_found",
    );
    assert_eq!(
        agent(&verde, A1.0)["state"],
        "paused",
        "a refused set_state must change nothing"
    );
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    // An agent field in an agent's command is ignored: a1 acts for itself only.
    a1.cmd_ok(json!({"type": "set_state", "state": "pause", "reason": "mine", "agent": A2.0}));
    a1.wait_event("agent_state", WAIT, |m| {
        m["state"] == "paused" && m["reason"] == "mine"
    });
    assert_eq!(
        agent(&verde, A2.0)["state"],
        "loggedout",
        "a1's set_state naming a2 must not touch a2"
    );
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");

    // Logging in to the queues given rather than the configured ones.
    a2.cmd_ok(json!({"type": "set_state", "state": "ready", "queues": ["benefits"]}));
    a2.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    let shown = wait_agent_state(&verde, A2.0, "ready", WAIT);
    assert_eq!(
        shown["queues"],
        json!(["benefits"]),
        "set_state ready with queues must log a2 in to those only: {shown}"
    );

    // ---- wrap_up_done outside wrap-up ---------------------------------------------------------
    let r = a1.cmd(json!({"type": "wrap_up_done"}));
    dev.check(error_code(&r) == "invalid_state", || {
        format!(
            "wrap_up_done while ready (not in wrap-up) must be refused with invalid_state (\"the \
             command does not fit\"); got {r}"
        )
    });

    // ---- resume replays the agent's state -----------------------------------------------------
    let mut a1_resumed = Cti::connect(http);
    a1_resumed.set_name("a1 (resumed)");
    let r = a1_resumed.cmd_ok(json!({"type": "resume", "token": token_a1}));
    assert_login_result(&a1_resumed, &r, A1.0, "agent");
    first_event_is_agent_state(&mut a1_resumed, A1.0, "ready");
    let mut bad_resume = Cti::connect(http);
    bad_resume.set_name("resume with an unknown token");
    bad_resume.cmd_err(
        json!({"type": "resume", "token": "cd".repeat(32)}),
        "invalid_token",
    );
    bad_resume.cmd_err(json!({"type": "resume"}), "bad_request");
    bad_resume.cmd_err(json!({"type": "tasks"}), "unauthenticated");

    // ---- malformed messages: each refused, the connection keeps working -----------------------
    let mut m1 = Cti::connect(http);
    m1.cmd_ok(json!({"type": "login", "token": token_a2}));
    m1.set_name("a2 (malformed input 1)");
    let big = format!(
        "{{\"v\":1,\"type\":\"tasks\",\"id\":\"big\",\"pad\":\"{}\"}}",
        "x".repeat(17 * 1024)
    );
    let long_id = format!(
        "{{\"v\":1,\"type\":\"tasks\",\"id\":\"{}\"}}",
        "i".repeat(129)
    );
    for (what, text) in [
        ("text that is not JSON", "this is not json".to_string()),
        ("a JSON array", "[1,2,3]".to_string()),
        (
            "a command without an id",
            r#"{"v":1,"type":"tasks"}"#.to_string(),
        ),
        ("a message over 16 KiB", big),
        ("an id longer than 128 characters", long_id),
    ] {
        m1.send_raw(&text);
        let e = m1.null_id_error(&format!("the error (id null) for {what}"));
        if e["code"] != "bad_request" {
            m1.fail(&format!(
                "{what} must get bad_request with id null; got {e}"
            ));
        }
        let r = m1.cmd(json!({"type": "tasks"}));
        if r["type"] != "result" {
            m1.fail(&format!(
                "after {what} the connection must keep working: tasks should succeed; got {r}"
            ));
        }
    }
    let mut m2 = Cti::connect(http);
    m2.cmd_ok(json!({"type": "login", "token": token_a2}));
    m2.set_name("a2 (malformed input 2)");
    for (what, text, id, code) in [
        (
            "an unknown type",
            r#"{"v":1,"type":"teleport","id":"u1"}"#,
            json!("u1"),
            "bad_request",
        ),
        (
            "an ill-typed field (state: 42)",
            r#"{"v":1,"type":"set_state","id":"t1","state":42}"#,
            json!("t1"),
            "bad_request",
        ),
        (
            "an ill-typed field (call: \"abc\")",
            r#"{"v":1,"type":"answer","id":"t2","call":"abc"}"#,
            json!("t2"),
            "bad_request",
        ),
        (
            "a missing field (answer without call)",
            r#"{"v":1,"type":"answer","id":"t3"}"#,
            json!("t3"),
            "bad_request",
        ),
        (
            "no v",
            r#"{"type":"tasks","id":"nv"}"#,
            json!("nv"),
            "bad_request",
        ),
        (
            "v 2",
            r#"{"v":2,"type":"tasks","id":"v2"}"#,
            json!("v2"),
            "unsupported_version",
        ),
    ] {
        m2.send_raw(text);
        let e = m2.reply(&id, &format!("the error for {what}"));
        if e["type"] != "error" || e["code"] != code {
            m2.fail(&format!("{what} must get {code} with id {id}; got {e}"));
        }
        let r = m2.cmd(json!({"type": "tasks"}));
        if r["type"] != "result" {
            m2.fail(&format!(
                "after {what} the connection must keep working: tasks should succeed; got {r}"
            ));
        }
    }
    // Unknown fields are ignored.
    m2.cmd_ok(json!({"type": "tasks", "from_a_newer_page": {"x": 1}}));

    // ---- rate limit: a burst of 40 -------------------------------------------------------------
    let mut burst = Cti::connect(http);
    burst.set_name("a2 (burst)");
    // The login is the first of the burst's 20.
    burst.cmd_ok(json!({"type": "login", "token": token_a2}));
    let ids: Vec<Value> = (0..40)
        .map(|_| burst.send_cmd(json!({"type": "tasks"})))
        .collect();
    let answers: Vec<Value> = ids
        .iter()
        .map(|id| burst.reply(id, &format!("the answer to burst command {id}")))
        .collect();
    let limited: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| error_code(a) == "rate_limited")
        .map(|(i, _)| i)
        .collect();
    let other_errors: Vec<&Value> = answers
        .iter()
        .filter(|a| a["type"] == "error" && error_code(a) != "rate_limited")
        .collect();
    assert!(
        other_errors.is_empty(),
        "burst: every command is either carried out or rate_limited; got {other_errors:?}"
    );
    // 19 tokens were left after the login; sending 40 takes far less than the 100 ms one more
    // token needs, but allow two.
    assert!(
        (19..=21).contains(&(40 - limited.len())),
        "burst of 40 after a login: about 19 must pass (bursts of 20) and the rest be \
         rate_limited; {} were rate_limited: {limited:?}",
        limited.len()
    );
    assert!(
        limited.first().is_some_and(|&i| i >= 18),
        "the first commands of a burst must pass; rate_limited ones: {limited:?}"
    );
    // The limit is a rate, not a ban: 10 commands a second come back.
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..5 {
        burst.cmd_ok(json!({"type": "tasks"}));
    }

    // ---- roles ------------------------------------------------------------------------------
    let mut sup = Cti::connect(http);
    let sup_login = sup.login(SUP.0, SUP.1);
    assert_login_result(&sup, &sup_login, SUP.0, "supervisor");
    for cmd in [
        json!({"type": "force_state", "agent": A2.0, "state": "pause"}),
        json!({"type": "subscribe_queues"}),
        json!({"type": "move_caller", "call": 1, "queue": "pensions"}),
    ] {
        a1.cmd_err(cmd, "forbidden");
    }
    assert_log_line(
        &verde,
        "a1's refused force_state",
        &[
            "CTI refusal",
            "user \"a1\" (Agent) may not use force_state: refused",
        ],
    );
    for cmd in [
        json!({"type": "set_state", "state": "ready"}),
        json!({"type": "tasks"}),
        json!({"type": "hangup", "call": 1}),
        json!({"type": "wrap_up_done"}),
    ] {
        sup.cmd_err(cmd, "forbidden");
    }
    assert_log_line(
        &verde,
        "sup1's refused set_state",
        &[
            "CTI refusal",
            "user \"sup1\" (Supervisor) may not use set_state: refused",
        ],
    );
    assert_eq!(
        agent(&verde, A2.0)["state"],
        "ready",
        "a refused force_state must not pause a2"
    );

    // ---- tasks on an empty store -------------------------------------------------------------
    let r = a1.cmd_ok(json!({"type": "tasks"}));
    assert_eq!(r["tasks"], json!([]), "no voicemail or callback yet: {r}");
    let r = a1.cmd_ok(json!({"type": "take_task"}));
    assert!(
        r.get("task") == Some(&Value::Null),
        "take_task with nothing to take must answer \"task\": null; got {r}"
    );
    a1.cmd_err(
        json!({"type": "take_task", "task": {"kind": "voicemail", "id": 424242}}),
        "not_found",
    );
    a1.cmd_err(
        json!({"type": "close_task", "task": {"kind": "voicemail", "id": 424242}, "outcome": "called back"}),
        "not_found",
    );
    a1.cmd_err(
        json!({"type": "close_task", "task": {"kind": "voicemail", "id": 1}, "outcome": ""}),
        "bad_request",
    );

    // ---- the wallboard feed ------------------------------------------------------------------
    let r = sup.cmd_ok(json!({"type": "subscribe_queues"}));
    assert!(
        r.get("interval_ms") == Some(&Value::Null),
        "subscribe_queues without interval_ms must say interval_ms null (the engine's ticks); got {r}"
    );
    let stats = sup.wait_event("queue_stats", WAIT, |_| true);
    // No call has ended yet: a queue is listed once a call has ended in it, so none is.
    let queues_ok = stats["queues"].as_array().is_some_and(|qs| qs.is_empty());
    assert!(
        stats["at_ms"].as_i64().is_some() && queues_ok && stats["wait_by_hour"].is_array(),
        "queue_stats right after subscribing: at_ms, no queue yet (nothing has ended) and \
         wait_by_hour; got {stats}"
    );
    let snap = sup.wait_event("queue_snapshot", WAIT, |_| true);
    let mut board = Wallboard::default();
    board.apply(&snap);
    assert_eq!(
        (
            board.agent_state(A1.0),
            board.agent_state(A2.0),
            board.agent_state(A3.0)
        ),
        (Some("ready"), Some("ready"), Some("loggedout")),
        "the first queue_snapshot must show every agent's state: {snap}"
    );
    assert!(
        board.queues.contains_key("pensions") && board.queues["pensions"]["agents_ready"] == 1,
        "the snapshot's pensions must count a1 ready: {snap}"
    );
    // An agent changes state: the next feed message is a delta following what this
    // connection got, and shows it.
    // Let a few 500 ms frames go by with nothing changed first: the seq must still follow
    // what this connection got (this pause creates the case under test; it synchronizes
    // nothing).
    std::thread::sleep(Duration::from_millis(1600));
    let before = sup.drain();
    for m in &before {
        board.apply(m);
    }
    let last_seq = board.seq.expect("a seq");
    a2.cmd_ok(json!({"type": "set_state", "state": "pause", "reason": "coffee"}));
    let next = sup.take("the next wallboard message", WAIT, |m| {
        m["type"] == "queue_delta" || m["type"] == "queue_snapshot"
    });
    if next["type"] != "queue_delta" {
        sup.fail(&format!(
            "after a2 paused, the next feed message must be a queue_delta; got {next}"
        ));
    }
    // seq counts the server's frames; frames in which nothing changed are not sent, so a delta
    // may skip numbers but never goes back (docs/cti-protocol.md, queue_delta).
    dev.check(next["seq"].as_u64().is_some_and(|s| s > last_seq), || {
        format!(
            "after the message with seq {last_seq} the delta must have a greater seq; got seq {}",
            next["seq"]
        )
    });
    board.apply(&next);
    let a2_row = board.agents.get(A2.0).cloned().unwrap_or_default();
    assert!(
        a2_row["state"] == "paused" && a2_row["reason"] == "coffee",
        "the delta must show a2 paused for coffee: {next}"
    );
    // A supervisor's resume restores its subscription: the feed starts without asking.
    let mut sup_resumed = Cti::connect(http);
    sup_resumed.set_name("sup1 (resumed)");
    let r = sup_resumed.cmd_ok(json!({"type": "resume", "token": Cti::token_of(&sup_login)}));
    assert_login_result(&sup_resumed, &r, SUP.0, "supervisor");
    sup_resumed.wait_event("queue_snapshot", WAIT, |m| {
        m["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == A2.0 && a["state"] == "paused"))
    });
    drop(sup_resumed);
    // With an interval, the result says the interval applied (never under 500 ms).
    let mut sup2 = Cti::connect(http);
    sup2.login(SUP.0, SUP.1);
    let r = sup2.cmd_ok(json!({"type": "subscribe_queues", "interval_ms": 100}));
    assert_eq!(
        r["interval_ms"], 500,
        "interval_ms 100 must be raised to the 500 ms floor: {r}"
    );
    sup2.wait_event("queue_snapshot", WAIT, |_| true);
    sup2.cmd_ok(json!({"type": "subscribe_queues", "enabled": false}));

    // ---- force_state --------------------------------------------------------------------------
    a1.drain();
    sup.cmd_ok(
        json!({"type": "force_state", "agent": A1.0, "state": "pause", "reason": "meeting"}),
    );
    let ev = a1.wait_event("agent_state", WAIT, |m| m["state"] == "paused");
    assert_eq!(
        ev["reason"], "meeting",
        "a1's own connection must hear the forced pause with its reason: {ev}"
    );
    assert_log_line(
        &verde,
        "the forced pause (audit)",
        &["supervisor forces an agent state", "sup1"],
    );
    sup.cmd_ok(json!({"type": "force_state", "agent": A1.0, "state": "pause"}));
    let ev = a1.wait_event("agent_state", WAIT, |m| m["state"] == "paused");
    assert_eq!(
        ev["reason"], "supervisor",
        "a forced pause without a reason has reason supervisor: {ev}"
    );
    sup.cmd_ok(json!({"type": "force_state", "agent": A1.0, "state": "logout"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "loggedout");
    wait_agent_state(&verde, A1.0, "loggedout", WAIT);
    sup.cmd_err(
        json!({"type": "force_state", "agent": "nobody", "state": "logout"}),
        "not_found",
    );
    sup.cmd_err(
        json!({"type": "force_state", "agent": A1.0, "state": "pause", "reason": "again"}),
        "invalid_state",
    );
    sup.cmd_err(
        json!({"type": "move_caller", "call": 987654, "queue": "pensions"}),
        "not_found",
    );

    // ---- logout ends the token -----------------------------------------------------------------
    a1.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    a1.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
    a1.cmd_ok(json!({"type": "set_state", "state": "logout"}));
    wait_agent_state(&verde, A1.0, "loggedout", WAIT);
    // This connection is logged out.
    a1.cmd_err(json!({"type": "tasks"}), "unauthenticated");
    // Another connection on the same token: its next command finds the token revoked, and it
    // is logged out after that.
    a1_tok.cmd_err(json!({"type": "tasks"}), "invalid_token");
    a1_tok.cmd_err(json!({"type": "tasks"}), "unauthenticated");
    let mut again = Cti::connect(http);
    again.set_name("resume after logout");
    again.cmd_err(
        json!({"type": "resume", "token": token_a1}),
        "invalid_token",
    );
    // Logging in again with the password works.
    a1.login(A1.0, A1.1);

    eprintln!("cti_protocol_auth: {:.1} s", t0.elapsed().as_secs_f64());
    dev.finish("cti_protocol_auth");
}
