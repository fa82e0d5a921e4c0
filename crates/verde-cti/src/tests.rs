//! Session, protocol and fan-out tests, driven through the public surface with a test clock.

use crate::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verde_acd::{
    AgentId, AgentSnapshot, AgentState, CallKey, CallerKind, CallerSnapshot, QueueName,
    QueueSnapshot, Snapshot,
};

struct Users;
impl Credentials for Users {
    fn check(&self, user: &str, password: &str) -> Option<Role> {
        match (user, password) {
            ("a1", "pw1") | ("a2", "pw2") => Some(Role::Agent),
            ("boss", "pwb") => Some(Role::Supervisor),
            _ => None,
        }
    }
}

fn authenticator() -> Arc<Authenticator> {
    Arc::new(Authenticator::new(AuthConfig::default(), Users))
}

fn sends(outs: &[Out]) -> Vec<Value> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Send(t) => Some(serde_json::from_str(t).expect("we send JSON")),
            _ => None,
        })
        .collect()
}

fn one(outs: &[Out]) -> Value {
    let s = sends(outs);
    assert_eq!(s.len(), 1, "expected one message, got {outs:?}");
    s.into_iter().next().unwrap()
}

fn engine(outs: &[Out]) -> Vec<(RequestId, EngineCommand)> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Engine { id, command } => Some((id.clone(), command.clone())),
            _ => None,
        })
        .collect()
}

fn alerts(outs: &[Out]) -> Vec<Alert> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn assert_error(outs: &[Out], id: Value, code: &str) {
    let m = one(outs);
    assert_eq!(m["v"], 1, "{m}");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["code"], code, "{m}");
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    assert!(
        engine(outs).is_empty(),
        "an error must not reach the engine"
    );
}

fn cmd(s: &mut Session, v: Value, now: Instant) -> Vec<Out> {
    s.handle_text(&v.to_string(), now)
}

/// A logged-in session and its token.
fn logged_in(auth: &Arc<Authenticator>, user: &str, pw: &str, now: Instant) -> (Session, String) {
    let mut s = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":"l","user":user,"password":pw}),
        now,
    );
    let m = one(&outs);
    assert_eq!(m["type"], "result", "{m}");
    assert!(outs
        .iter()
        .any(|o| matches!(o, Out::Attach(i) if i.user == user)));
    (s, m["token"].as_str().unwrap().to_string())
}

fn offer(agent: &str, call: u64) -> Event {
    Event::CallOffered {
        agent: agent.into(),
        call: CallKey(call),
        offer: Box::new(CallOffer {
            caller: "+390612345678".into(),
            did: "800123456".into(),
            queue: "pensions".into(),
            channel: Channel::Voice,
            waited: Duration::from_millis(42_500),
            language: Some("it".into()),
            choices: vec![IvrChoice {
                node: "main".into(),
                key: "2".into(),
            }],
        }),
    }
}

#[test]
fn login_returns_token_role_and_attaches() {
    let auth = authenticator();
    let now = Instant::now();
    let mut s = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":7,"user":"a1","password":"pw1"}),
        now,
    );
    let m = one(&outs);
    assert_eq!(m["type"], "result");
    assert_eq!(m["id"], 7);
    assert_eq!(m["ok"], true);
    assert_eq!(m["role"], "agent");
    assert_eq!(m["user"], "a1");
    assert_eq!(m["expires_in_s"], AuthConfig::default().token_ttl.as_secs());
    let token = m["token"].as_str().unwrap();
    assert_eq!(auth.verify(token, now).unwrap().user, "a1");
    assert_eq!(s.identity().unwrap().role, Role::Agent);

    // A second login on the same connection is refused.
    let again = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":8,"user":"a2","password":"pw2"}),
        now,
    );
    assert_error(&again, json!(8), "invalid_state");
    assert_eq!(s.identity().unwrap().user, "a1");
}

#[test]
fn wrong_password_is_refused_logged_and_locks_after_repeats() {
    let auth = authenticator();
    let now = Instant::now();
    let mut s = Session::new(auth.clone(), Limits::default());
    let bad = json!({"v":1,"type":"login","id":1,"user":"a1","password":"nope"});
    let outs = cmd(&mut s, bad.clone(), now);
    assert_error(&outs, json!(1), "auth_failed");
    assert_eq!(
        alerts(&outs),
        vec![Alert::LoginFailed {
            user: "a1".into(),
            locked: false
        }]
    );
    assert!(s.identity().is_none());
    let mut last = outs;
    for _ in 1..AuthConfig::default().max_failures {
        last = cmd(&mut s, bad.clone(), now);
    }
    assert_error(&last, json!(1), "locked");
    // Even the right password is refused while locked.
    let good = json!({"v":1,"type":"login","id":2,"user":"a1","password":"pw1"});
    let outs = cmd(&mut s, good, now + Duration::from_secs(1));
    assert_error(&outs, json!(2), "locked");
    assert!(matches!(
        &alerts(&outs)[..],
        [Alert::LoginFailed { locked: true, .. }]
    ));
}

#[test]
fn login_with_token_checks_owner_and_validity() {
    let auth = authenticator();
    let now = Instant::now();
    let grant = auth.issue(
        Identity {
            user: "a2".into(),
            role: Role::Agent,
        },
        now,
    );
    let mut s = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":1,"user":"a1","token":grant.token}),
        now,
    );
    assert_error(&outs, json!(1), "auth_failed");
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":2,"token":"00ff"}),
        now,
    );
    assert_error(&outs, json!(2), "invalid_token");
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":3,"user":"a1"}),
        now,
    );
    assert_error(&outs, json!(3), "bad_request");
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":4,"token":grant.token}),
        now,
    );
    assert_eq!(one(&outs)["user"], "a2");
    assert_eq!(s.identity().unwrap().user, "a2");
}

fn every_command() -> Vec<Value> {
    vec![
        json!({"type":"set_state","state":"ready"}),
        json!({"type":"set_state","state":"pause","reason":"lunch"}),
        json!({"type":"set_state","state":"logout"}),
        json!({"type":"answer","call":1}),
        json!({"type":"hangup","call":1}),
        json!({"type":"hold","call":1}),
        json!({"type":"resume_call","call":1}),
        json!({"type":"transfer","call":1,"mode":"blind","to":{"queue":"billing"}}),
        json!({"type":"wrap_up_done"}),
        json!({"type":"subscribe_queues"}),
        json!({"type":"force_state","agent":"a1","state":"logout"}),
        json!({"type":"move_caller","call":1,"queue":"billing"}),
        json!({"type":"record","call":1,"on":true}),
        json!({"type":"supervise","call":1,"mode":"listen"}),
        json!({"type":"tasks"}),
        json!({"type":"take_task"}),
        json!({"type":"close_task","task":{"kind":"voicemail","id":3},"outcome":"called back"}),
    ]
}

fn with_id(mut v: Value, id: u64) -> Value {
    v["v"] = json!(1);
    v["id"] = json!(id);
    v
}

#[test]
fn unauthenticated_sessions_may_only_login_or_resume() {
    let auth = authenticator();
    let now = Instant::now();
    let mut s = Session::new(auth, Limits::default());
    for (i, c) in every_command().into_iter().enumerate() {
        let outs = cmd(&mut s, with_id(c.clone(), i as u64), now);
        assert_error(&outs, json!(i), "unauthenticated");
    }
}

#[test]
fn malformed_input_gets_bad_request_and_the_session_keeps_working() {
    let auth = authenticator();
    let now = Instant::now();
    let mut s = Session::new(auth, Limits::default());
    let cases: Vec<(String, Value, &str)> = vec![
        ("{not json".into(), Value::Null, "bad_request"),
        ("[1,2]".into(), Value::Null, "bad_request"),
        ("\"login\"".into(), Value::Null, "bad_request"),
        (
            r#"{"v":1,"type":"login"}"#.into(),
            Value::Null,
            "bad_request",
        ),
        (
            r#"{"v":1,"type":"login","id":{"x":1}}"#.into(),
            Value::Null,
            "bad_request",
        ),
        (r#"{"type":"login","id":1}"#.into(), json!(1), "bad_request"),
        (
            r#"{"v":2,"type":"login","id":2}"#.into(),
            json!(2),
            "unsupported_version",
        ),
        (r#"{"v":1,"id":3}"#.into(), json!(3), "bad_request"),
        (
            r#"{"v":1,"type":"dance","id":"d"}"#.into(),
            json!("d"),
            "bad_request",
        ),
        (
            r#"{"v":1,"type":"resume","id":4}"#.into(),
            json!(4),
            "bad_request",
        ),
        (
            format!(r#"{{"v":1,"type":"login","id":"{}"}}"#, "x".repeat(200)),
            Value::Null,
            "bad_request",
        ),
        (
            format!(
                r#"{{"v":1,"type":"login","id":5,"user":"{}"}}"#,
                "x".repeat(Limits::default().max_message_bytes)
            ),
            Value::Null,
            "bad_request",
        ),
    ];
    let mut t = now;
    for (text, id, code) in cases {
        t += Duration::from_secs(1); // stay under the rate limit
        let outs = s.handle_text(&text, t);
        assert_error(&outs, id, code);
    }
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"login","id":9,"user":"a1","password":"pw1"}),
        t,
    );
    assert_eq!(one(&outs)["type"], "result");
    // And after login too.
    let outs = s.handle_text("}}", t);
    assert_error(&outs, Value::Null, "bad_request");
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"set_state","id":10,"state":"sleep"}),
        t,
    );
    assert_error(&outs, json!(10), "bad_request");
    let outs = cmd(&mut s, json!({"v":1,"type":"wrap_up_done","id":11}), t);
    assert_eq!(engine(&outs).len(), 1);
}

#[test]
fn agent_commands_become_engine_commands_for_the_logged_in_agent() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    let a1 = AgentId::from("a1");
    let mut t = now;
    let mut run = |s: &mut Session, v: Value, id: u64| {
        t += Duration::from_secs(1);
        let outs = cmd(s, with_id(v, id), t);
        let e = engine(&outs);
        assert_eq!(e.len(), 1, "{outs:?}");
        assert!(sends(&outs).is_empty(), "the result waits for the engine");
        assert_eq!(e[0].0, RequestId::Num(id));
        e[0].1.clone()
    };
    // A field naming another agent is ignored: the agent is the session's.
    assert_eq!(
        run(
            &mut s,
            json!({"type":"set_state","state":"ready","agent":"a2","queues":["pensions"]}),
            1
        ),
        EngineCommand::Ready {
            agent: a1.clone(),
            queues: Some(vec![QueueName::from("pensions")])
        }
    );
    assert_eq!(
        run(
            &mut s,
            json!({"type":"set_state","state":"pause","reason":" lunch "}),
            2
        ),
        EngineCommand::Pause {
            agent: a1.clone(),
            reason: "lunch".into()
        }
    );
    assert_eq!(
        run(&mut s, json!({"type":"wrap_up_done"}), 3),
        EngineCommand::WrapUpDone { agent: a1.clone() }
    );
    assert_eq!(
        run(&mut s, json!({"type":"tasks"}), 4),
        EngineCommand::ListTasks { agent: a1.clone() }
    );
    assert_eq!(
        run(
            &mut s,
            json!({"type":"take_task","task":{"kind":"callback","id":12}}),
            5
        ),
        EngineCommand::TakeTask {
            agent: a1.clone(),
            task: Some(TaskRef {
                kind: TaskKind::Callback,
                id: 12
            })
        }
    );
    assert_eq!(
        run(&mut s, json!({"type":"take_task"}), 6),
        EngineCommand::TakeTask {
            agent: a1.clone(),
            task: None
        }
    );
    assert_eq!(
        run(
            &mut s,
            json!({"type":"close_task","task":{"kind":"voicemail","id":3},"outcome":"done"}),
            7
        ),
        EngineCommand::CloseTask {
            agent: a1.clone(),
            task: TaskRef {
                kind: TaskKind::Voicemail,
                id: 3
            },
            outcome: "done".into()
        }
    );

    // The call commands follow the call's life as the engine reports it.
    s.handle_event(&offer("a1", 40));
    assert_eq!(
        run(&mut s, json!({"type":"answer","call":40}), 10),
        EngineCommand::Answer {
            agent: a1.clone(),
            call: CallKey(40),
            sdp: None,
        }
    );
    s.handle_event(&Event::CallAnswered {
        agent: a1.clone(),
        call: CallKey(40),
    });
    assert_eq!(
        run(&mut s, json!({"type":"hold","call":40}), 11),
        EngineCommand::Hold {
            agent: a1.clone(),
            call: CallKey(40)
        }
    );
    s.handle_event(&Event::CallHeld {
        agent: a1.clone(),
        call: CallKey(40),
    });
    assert_eq!(
        run(&mut s, json!({"type":"resume_call","call":40}), 12),
        EngineCommand::ResumeCall {
            agent: a1.clone(),
            call: CallKey(40)
        }
    );
    s.handle_event(&Event::CallResumed {
        agent: a1.clone(),
        call: CallKey(40),
    });
    assert_eq!(
        run(
            &mut s,
            json!({"type":"transfer","call":40,"mode":"attended","to":{"number":"+39061234"}}),
            13
        ),
        EngineCommand::Transfer {
            agent: a1.clone(),
            call: CallKey(40),
            mode: TransferMode::Attended,
            to: TransferTarget::Number("+39061234".into())
        }
    );
    assert_eq!(
        run(
            &mut s,
            json!({"type":"transfer","call":40,"mode":"blind","to":{"agent":"a2"}}),
            14
        ),
        EngineCommand::Transfer {
            agent: a1.clone(),
            call: CallKey(40),
            mode: TransferMode::Blind,
            to: TransferTarget::Agent("a2".into())
        }
    );
    assert_eq!(
        run(&mut s, json!({"type":"hangup","call":40}), 15),
        EngineCommand::Hangup {
            agent: a1.clone(),
            call: CallKey(40)
        }
    );
    assert_eq!(
        run(&mut s, json!({"type":"set_state","state":"logout"}), 16),
        EngineCommand::Logout { agent: a1 }
    );
}

#[test]
fn call_commands_check_the_phase() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    s.handle_event(&offer("a1", 5));
    // Offered: hold, resume and transfer do not apply yet.
    for (i, c) in [
        json!({"type":"hold","call":5}),
        json!({"type":"resume_call","call":5}),
        json!({"type":"transfer","call":5,"mode":"blind","to":{"queue":"billing"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let outs = cmd(&mut s, with_id(c, i as u64), now);
        assert_error(&outs, json!(i), "invalid_state");
        assert!(alerts(&outs).is_empty());
    }
    s.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(5),
    });
    let outs = cmd(&mut s, with_id(json!({"type":"answer","call":5}), 9), now);
    assert_error(&outs, json!(9), "invalid_state");
}

#[test]
fn forged_call_ids_are_refused_and_reported() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s1, _) = logged_in(&auth, "a1", "pw1", now);
    // The session never learns of a2's call, even when the event is misrouted to it.
    assert!(s1.handle_event(&offer("a2", 77)).is_empty());
    for (i, c) in [
        json!({"type":"answer","call":77}),
        json!({"type":"hangup","call":77}),
        json!({"type":"hold","call":77}),
        json!({"type":"resume_call","call":77}),
        json!({"type":"transfer","call":77,"mode":"blind","to":{"queue":"billing"}}),
        json!({"type":"answer","call":12345}),
    ]
    .into_iter()
    .enumerate()
    {
        let outs = cmd(&mut s1, with_id(c.clone(), i as u64), now);
        assert_error(&outs, json!(i), "forbidden");
        let call = c["call"].as_u64().unwrap();
        assert_eq!(
            alerts(&outs),
            vec![Alert::ForeignCall {
                user: "a1".into(),
                call: CallKey(call),
                command: c["type"]
                    .as_str()
                    .map(|t| match t {
                        "answer" => "answer",
                        "hangup" => "hangup",
                        "hold" => "hold",
                        "resume_call" => "resume_call",
                        _ => "transfer",
                    })
                    .unwrap()
            }]
        );
    }
}

#[test]
fn a_command_racing_the_end_of_the_call_is_gone_not_forged() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    s.handle_event(&offer("a1", 8));
    s.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(8),
    });
    let m = one(&s.handle_event(&Event::CallEnded {
        agent: "a1".into(),
        call: CallKey(8),
        reason: "caller-hangup".into(),
    }));
    assert_eq!(m["type"], "call_ended");
    assert_eq!(m["reason"], "caller-hangup");
    let outs = cmd(&mut s, with_id(json!({"type":"hangup","call":8}), 1), now);
    assert_error(&outs, json!(1), "gone");
    assert!(alerts(&outs).is_empty());

    // Transferred away: same.
    s.handle_event(&offer("a1", 9));
    s.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(9),
    });
    let m = one(&s.handle_event(&Event::CallTransferred {
        agent: "a1".into(),
        call: CallKey(9),
        to: TransferTarget::Queue("billing".into()),
    }));
    assert_eq!(m["to"], json!({"queue":"billing"}));
    let outs = cmd(&mut s, with_id(json!({"type":"hold","call":9}), 2), now);
    assert_error(&outs, json!(2), "gone");
}

#[test]
fn roles_are_enforced_both_ways() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut agent, _) = logged_in(&auth, "a1", "pw1", now);
    let (mut boss, _) = logged_in(&auth, "boss", "pwb", now);
    let supervisor_only = [
        "subscribe_queues",
        "force_state",
        "move_caller",
        "supervise",
    ];
    let mut t = now;
    for (i, c) in every_command().into_iter().enumerate() {
        t += Duration::from_secs(1);
        let name = c["type"].as_str().unwrap().to_string();
        let is_sup = supervisor_only.contains(&name.as_str());
        let (denied, allowed, who, role) = if is_sup {
            (&mut agent, &mut boss, "a1", Role::Agent)
        } else {
            (&mut boss, &mut agent, "boss", Role::Supervisor)
        };
        let outs = cmd(denied, with_id(c.clone(), i as u64), t);
        assert_error(&outs, json!(i), "forbidden");
        assert!(
            matches!(&alerts(&outs)[..], [Alert::RoleDenied { user, role: r, command }]
                if user == who && *r == role && *command == name),
            "{outs:?}"
        );
        // The other role gets past the role check (call commands then stop at the call check).
        let outs = cmd(allowed, with_id(c, 100 + i as u64), t);
        assert!(
            !alerts(&outs)
                .iter()
                .any(|a| matches!(a, Alert::RoleDenied { .. })),
            "{name}: {outs:?}"
        );
        assert!(
            sends(&outs).iter().all(|m| m["code"] != "unauthenticated"),
            "{name}: {outs:?}"
        );
    }
}

#[test]
fn supervisor_commands() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut boss, _) = logged_in(&auth, "boss", "pwb", now);
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"force_state","id":1,"agent":"a2","state":"pause"}),
        now,
    );
    assert_eq!(
        engine(&outs),
        vec![(
            RequestId::Num(1),
            EngineCommand::ForceState {
                supervisor: "boss".into(),
                agent: "a2".into(),
                state: ForcedState::Pause {
                    reason: "supervisor".into()
                }
            }
        )]
    );
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"force_state","id":2,"agent":"a2","state":"logout"}),
        now,
    );
    assert!(matches!(
        &engine(&outs)[0].1,
        EngineCommand::ForceState {
            state: ForcedState::Logout,
            ..
        }
    ));
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"force_state","id":3,"agent":"a2","state":"ready"}),
        now,
    );
    assert_error(&outs, json!(3), "bad_request");
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"move_caller","id":"m","call":31,"queue":"billing"}),
        now,
    );
    assert_eq!(
        engine(&outs),
        vec![(
            RequestId::Str("m".into()),
            EngineCommand::MoveCaller {
                supervisor: "boss".into(),
                call: CallKey(31),
                queue: "billing".into()
            }
        )]
    );
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"move_caller","id":"n","call":31,"queue":""}),
        now,
    );
    assert_error(&outs, json!("n"), "bad_request");
    for (i, (mode, want)) in [
        ("listen", Some(SuperviseMode::Listen)),
        ("whisper", Some(SuperviseMode::Whisper)),
        ("barge", Some(SuperviseMode::Barge)),
        ("stop", None),
    ]
    .into_iter()
    .enumerate()
    {
        let outs = cmd(
            &mut boss,
            json!({"v":1,"type":"supervise","id":10 + i,"call":31,"mode":mode}),
            now,
        );
        assert_eq!(
            engine(&outs),
            vec![(
                RequestId::Num(10 + i as u64),
                EngineCommand::Supervise {
                    supervisor: "boss".into(),
                    call: CallKey(31),
                    mode: want
                }
            )]
        );
    }
    let outs = cmd(
        &mut boss,
        json!({"v":1,"type":"supervise","id":20,"call":31,"mode":"shout"}),
        now,
    );
    assert_error(&outs, json!(20), "bad_request");
}

#[test]
fn record_is_for_the_agent_own_answered_call() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    // Not this agent's call: forged.
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"record","id":1,"call":7,"on":true}),
        now,
    );
    assert_error(&outs, json!(1), "forbidden");
    s.handle_event(&offer("a1", 7));
    // Offered, not answered yet.
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"record","id":2,"call":7,"on":true}),
        now,
    );
    assert_error(&outs, json!(2), "invalid_state");
    s.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(7),
    });
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"record","id":3,"call":7,"on":false}),
        now,
    );
    assert_eq!(
        engine(&outs),
        vec![(
            RequestId::Num(3),
            EngineCommand::Record {
                agent: "a1".into(),
                call: CallKey(7),
                on: false
            }
        )]
    );
    let outs = cmd(&mut s, json!({"v":1,"type":"record","id":4,"call":7}), now);
    assert_error(&outs, json!(4), "bad_request");
    // The recording event reaches the agent's page.
    let outs = s.handle_event(&Event::Recording {
        agent: "a1".into(),
        call: CallKey(7),
        on: true,
    });
    assert_eq!(
        sends(&outs),
        vec![json!({"v":1,"type":"recording","call":7,"on":true})]
    );
}

#[test]
fn browser_softphone_commands_and_offer() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"set_device","id":1,"device":"browser"}),
        now,
    );
    assert_eq!(
        engine(&outs),
        vec![(
            RequestId::Num(1),
            EngineCommand::SetDevice {
                agent: "a1".into(),
                device: Device::Browser
            }
        )]
    );
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"set_device","id":2,"device":"fax"}),
        now,
    );
    assert_error(&outs, json!(2), "bad_request");
    // Another agent's call: no trickling into it.
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"softphone_ice","id":3,"call":9,"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}),
        now,
    );
    assert_error(&outs, json!(3), "forbidden");
    s.handle_event(&offer("a1", 9));
    // The offer's SDP reaches only its agent's page.
    let sdp_event = |agent: &str| Event::SoftphoneOffer {
        agent: agent.into(),
        call: CallKey(9),
        sdp: "v=0\r\n".into(),
    };
    assert!(s.handle_event(&sdp_event("a2")).is_empty());
    assert_eq!(
        sends(&s.handle_event(&sdp_event("a1"))),
        vec![json!({"v":1,"type":"softphone_offer","call":9,"sdp":"v=0\r\n"})]
    );
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"answer","id":4,"call":9,"sdp":"v=0 answer"}),
        now,
    );
    assert_eq!(
        engine(&outs),
        vec![(
            RequestId::Num(4),
            EngineCommand::Answer {
                agent: "a1".into(),
                call: CallKey(9),
                sdp: Some("v=0 answer".into())
            }
        )]
    );
}

#[test]
fn argument_validation() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    s.handle_event(&offer("a1", 1));
    s.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(1),
    });
    let cases = [
        json!({"type":"set_state","state":"pause"}),
        json!({"type":"set_state","state":"pause","reason":"   "}),
        json!({"type":"set_state","state":"pause","reason":"x".repeat(65)}),
        json!({"type":"transfer","call":1,"mode":"blind","to":{"number":"12a4"}}),
        json!({"type":"transfer","call":1,"mode":"blind","to":{"number":"1+2"}}),
        json!({"type":"transfer","call":1,"mode":"blind","to":{"queue":""}}),
        json!({"type":"transfer","call":1,"mode":"sideways","to":{"queue":"q"}}),
        json!({"type":"transfer","call":1,"mode":"blind","to":{"planet":"mars"}}),
        json!({"type":"close_task","task":{"kind":"voicemail","id":1},"outcome":""}),
        json!({"type":"close_task","task":{"kind":"fax","id":1},"outcome":"ok"}),
        json!({"type":"answer","call":"1"}),
    ];
    let mut t = now;
    for (i, c) in cases.into_iter().enumerate() {
        t += Duration::from_secs(1);
        let outs = cmd(&mut s, with_id(c, i as u64), t);
        assert_error(&outs, json!(i), "bad_request");
    }
}

#[test]
fn engine_completions_become_results_or_errors() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    let outs = cmd(&mut s, with_id(json!({"type":"wrap_up_done"}), 1), now);
    let (id, _) = engine(&outs).remove(0);
    // The same id cannot be reused while the first command is in progress.
    let dup = cmd(&mut s, with_id(json!({"type":"tasks"}), 1), now);
    assert_error(&dup, json!(1), "bad_request");

    let m = one(&s.complete(id.clone(), Ok(Reply::Done), now));
    assert_eq!(m, json!({"v":1,"type":"result","id":1,"ok":true}));
    // A second completion for the same id is ignored.
    assert!(s.complete(id, Ok(Reply::Done), now).is_empty());

    let outs = cmd(
        &mut s,
        with_id(json!({"type":"set_state","state":"ready"}), 2),
        now,
    );
    let (id, _) = engine(&outs).remove(0);
    let m = one(&s.complete(
        id,
        Err(EngineError::new(ErrorCode::NotFound, "unknown queue \"x\"")),
        now,
    ));
    assert_eq!(m["type"], "error");
    assert_eq!(m["id"], 2);
    assert_eq!(m["code"], "not_found");
    assert_eq!(m["message"], "unknown queue \"x\"");

    let task = TaskInfo {
        task: TaskRef {
            kind: TaskKind::Voicemail,
            id: 4,
        },
        queue: "general".into(),
        number: "+3902555".into(),
        created_at_ms: 1_700_000_000_000,
        deadline_ms: 1_700_000_600_000,
        taken_by: Some("a1".into()),
    };
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 3), now);
    let (id, _) = engine(&outs).remove(0);
    let m = one(&s.complete(id, Ok(Reply::Tasks(vec![task.clone()])), now));
    assert_eq!(m["tasks"][0]["kind"], "voicemail");
    assert_eq!(m["tasks"][0]["id"], 4);
    assert_eq!(m["tasks"][0]["taken_by"], "a1");
    let outs = cmd(&mut s, with_id(json!({"type":"take_task"}), 4), now);
    let (id, _) = engine(&outs).remove(0);
    let m = one(&s.complete(id, Ok(Reply::Task(None)), now));
    assert_eq!(m["task"], Value::Null);
    assert_eq!(m["ok"], true);
}

#[test]
fn logout_revokes_the_token_once_the_engine_confirms() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, token) = logged_in(&auth, "a1", "pw1", now);
    let outs = cmd(
        &mut s,
        with_id(json!({"type":"set_state","state":"logout"}), 1),
        now,
    );
    let (id, _) = engine(&outs).remove(0);
    assert!(auth.verify(&token, now).is_ok(), "not before the engine");
    let outs = s.complete(id, Ok(Reply::Done), now);
    assert_eq!(one(&outs)["ok"], true);
    assert!(outs.iter().any(|o| matches!(o, Out::Detach)));
    assert!(auth.verify(&token, now).is_err());
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 2), now);
    assert_error(&outs, json!(2), "unauthenticated");

    // A refused logout keeps the session.
    let (mut s, token) = logged_in(&auth, "a1", "pw1", now);
    let outs = cmd(
        &mut s,
        with_id(json!({"type":"set_state","state":"logout"}), 1),
        now,
    );
    let (id, _) = engine(&outs).remove(0);
    let outs = s.complete(
        id,
        Err(EngineError::new(ErrorCode::Unavailable, "busy")),
        now,
    );
    assert!(!outs.iter().any(|o| matches!(o, Out::Detach)));
    assert!(auth.verify(&token, now).is_ok());
}

#[test]
fn expired_or_revoked_token_stops_the_session() {
    let auth = authenticator();
    let t0 = Instant::now();
    let ttl = AuthConfig::default().token_ttl;
    let (mut s, _) = logged_in(&auth, "a1", "pw1", t0);
    let outs = cmd(
        &mut s,
        with_id(json!({"type":"tasks"}), 1),
        t0 + ttl - Duration::from_secs(1),
    );
    assert_eq!(engine(&outs).len(), 1);
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 2), t0 + ttl);
    assert_eq!(one(&outs)["code"], "token_expired");
    assert!(outs.iter().any(|o| matches!(o, Out::Detach)));
    assert!(engine(&outs).is_empty());
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 3), t0 + ttl);
    assert_error(&outs, json!(3), "unauthenticated");
    // No more events reach a session without identity.
    assert!(s.handle_event(&offer("a1", 1)).is_empty());

    let (mut s, token) = logged_in(&auth, "a1", "pw1", t0);
    auth.revoke(&token);
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 4), t0);
    assert_eq!(one(&outs)["code"], "invalid_token");

    // Resume with an expired token fails too.
    let (_, token) = logged_in(&auth, "a2", "pw2", t0);
    let mut fresh = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut fresh,
        json!({"v":1,"type":"resume","id":5,"token":token}),
        t0 + ttl + Duration::from_secs(1),
    );
    assert_error(&outs, json!(5), "token_expired");
}

#[test]
fn resume_after_reconnect_restores_identity_and_current_state() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut old, token) = logged_in(&auth, "a1", "pw1", now);
    old.handle_event(&offer("a1", 21));
    old.handle_event(&Event::CallAnswered {
        agent: "a1".into(),
        call: CallKey(21),
    });
    drop(old); // the network blips

    let later = now + Duration::from_secs(30);
    let mut s = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"resume","id":1,"token":token}),
        later,
    );
    let m = one(&outs);
    assert_eq!(m["type"], "result");
    assert_eq!(m["user"], "a1");
    assert_eq!(m["token"], token.as_str());
    assert_eq!(
        m["expires_in_s"],
        (AuthConfig::default().token_ttl - Duration::from_secs(30)).as_secs()
    );
    assert!(outs
        .iter()
        .any(|o| matches!(o, Out::Attach(i) if i.user == "a1" && i.role == Role::Agent)));

    // The binary feeds the current state after Attach; the bar sees it and may act on the call.
    let m = one(&s.handle_event(&Event::AgentState {
        agent: "a1".into(),
        state: AgentState::OnCall,
        in_state: Duration::from_millis(31_250),
    }));
    assert_eq!(
        m,
        json!({"v":1,"type":"agent_state","agent":"a1","state":"oncall","in_state_s":31.25})
    );
    assert_eq!(
        one(&s.handle_event(&offer("a1", 21)))["type"],
        "call_offered"
    );
    assert_eq!(
        one(&s.handle_event(&Event::CallAnswered {
            agent: "a1".into(),
            call: CallKey(21)
        }))["type"],
        "call_answered"
    );
    let outs = cmd(&mut s, with_id(json!({"type":"hold","call":21}), 2), later);
    assert_eq!(
        engine(&outs)[0].1,
        EngineCommand::Hold {
            agent: "a1".into(),
            call: CallKey(21)
        }
    );
}

#[test]
fn events_are_typed_json_and_filtered_by_agent() {
    let auth = authenticator();
    let now = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    let m = one(&s.handle_event(&offer("a1", 3)));
    assert_eq!(
        m,
        json!({"v":1,"type":"call_offered","call":3,"caller":"+390612345678","did":"800123456",
               "queue":"pensions","channel":"voice","waited_s":42.5,"language":"it",
               "choices":[{"node":"main","key":"2"}]})
    );
    let m = one(&s.handle_event(&Event::AgentState {
        agent: "a1".into(),
        state: AgentState::Paused {
            reason: "no-answer".into(),
        },
        in_state: Duration::ZERO,
    }));
    assert_eq!(m["state"], "paused");
    assert_eq!(m["reason"], "no-answer");
    for e in [
        Event::AgentState {
            agent: "a2".into(),
            state: AgentState::Ready,
            in_state: Duration::ZERO,
        },
        Event::CallAnswered {
            agent: "a2".into(),
            call: CallKey(3),
        },
        Event::CallEnded {
            agent: "a2".into(),
            call: CallKey(3),
            reason: "x".into(),
        },
    ] {
        assert!(s.handle_event(&e).is_empty(), "{e:?}");
    }
    // a2's end of call 3 did not end it for a1.
    let outs = cmd(&mut s, with_id(json!({"type":"answer","call":3}), 1), now);
    assert_eq!(engine(&outs).len(), 1);

    let task = TaskInfo {
        task: TaskRef {
            kind: TaskKind::Callback,
            id: 9,
        },
        queue: "pensions".into(),
        number: "+39333".into(),
        created_at_ms: 1,
        deadline_ms: 2,
        taken_by: None,
    };
    let m = one(&s.handle_event(&Event::TaskCreated { task: task.clone() }));
    assert_eq!(m["type"], "task_created");
    assert_eq!(m["task"]["kind"], "callback");
    assert_eq!(m["task"]["number"], "+39333");
    let m = one(&s.handle_event(&Event::TaskTaken {
        task,
        agent: "a2".into(),
    }));
    assert_eq!(m["type"], "task_taken");
    assert_eq!(m["agent"], "a2");
    let m = one(&s.handle_event(&Event::TaskClosed {
        task: TaskRef {
            kind: TaskKind::Callback,
            id: 9,
        },
        agent: "a2".into(),
        outcome: "answered".into(),
    }));
    assert_eq!(
        m,
        json!({"v":1,"type":"task_closed","task":{"kind":"callback","id":9},"agent":"a2","outcome":"answered"})
    );
    for (e, kind) in [
        (
            Event::CallHeld {
                agent: "a1".into(),
                call: CallKey(3),
            },
            "call_held",
        ),
        (
            Event::CallResumed {
                agent: "a1".into(),
                call: CallKey(3),
            },
            "call_resumed",
        ),
    ] {
        assert_eq!(one(&s.handle_event(&e))["type"], kind);
    }
}

#[test]
fn commands_are_rate_limited_per_session() {
    let auth = authenticator();
    let now = Instant::now();
    let limits = Limits::default();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", now);
    let (mut other, _) = logged_in(&auth, "a2", "pw2", now);
    // The login took one token.
    let mut accepted = 1;
    let mut limited = 0;
    for i in 0..limits.burst as u64 + 5 {
        let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 10 + i), now);
        if engine(&outs).is_empty() {
            assert_error(&outs, json!(10 + i), "rate_limited");
            limited += 1;
        } else {
            accepted += 1;
        }
    }
    assert_eq!(accepted, limits.burst);
    assert_eq!(limited, 6);
    // Garbage counts too, and is still answered.
    assert_error(&s.handle_text("{", now), Value::Null, "rate_limited");
    // Another connection is not affected.
    let outs = cmd(&mut other, with_id(json!({"type":"tasks"}), 1), now);
    assert_eq!(engine(&outs).len(), 1);
    // Tokens come back with time.
    let later = now + Duration::from_millis(1000 / limits.commands_per_sec as u64 + 1);
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 99), later);
    assert_eq!(engine(&outs).len(), 1);
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 100), later);
    assert_error(&outs, json!(100), "rate_limited");
}

// ---- wallboard fan-out ------------------------------------------------------------------

fn agent(id: &str, state: AgentState, in_state: Duration) -> AgentSnapshot {
    AgentSnapshot {
        id: id.into(),
        name: format!("Agent {id}"),
        state,
        in_state,
        current_call: None,
        calls_handled: 0,
        missed: 0,
        queues: vec!["pensions".into()],
    }
}

/// The state at `waited` seconds after the caller joined; a2 has been ready since 100 s before
/// the caller joined.
fn snapshot(waited: Duration, a1_state: AgentState, a1_in_state: Duration) -> Snapshot {
    Snapshot {
        queues: vec![QueueSnapshot {
            name: "pensions".into(),
            waiting: 1,
            callbacks_waiting: 0,
            offering: 0,
            longest_wait: Some(waited),
            estimated_wait: Some(Duration::from_millis(20_400)),
            handle_time: Duration::from_secs(120),
            agents_logged_in: 2,
            agents_ready: 1,
            callers: vec![CallerSnapshot {
                call: CallKey(5),
                caller: "+39061".into(),
                priority: 0,
                kind: CallerKind::Live,
                position: Some(0),
                waited,
            }],
        }],
        agents: vec![
            agent("a1", a1_state, a1_in_state),
            agent("a2", AgentState::Ready, Duration::from_secs(100) + waited),
        ],
    }
}

fn supervisor(auth: &Arc<Authenticator>, now: Instant, interval: Option<u64>) -> (Session, String) {
    let (mut s, token) = logged_in(auth, "boss", "pwb", now);
    let mut c = json!({"v":1,"type":"subscribe_queues","id":"sub"});
    if let Some(ms) = interval {
        c["interval_ms"] = json!(ms);
    }
    let m = one(&cmd(&mut s, c, now));
    assert_eq!(m["type"], "result");
    (s, token)
}

fn sent_text(outs: &[Out]) -> Arc<str> {
    match outs {
        [Out::Send(t)] => t.clone(),
        other => panic!("expected one send, got {other:?}"),
    }
}

#[test]
fn broadcast_serializes_once_and_every_supervisor_gets_the_same_text() {
    let auth = authenticator();
    let t0 = Instant::now();
    let mut b = Broadcast::new(t0, 1_700_000_000_000);
    let mut sups: Vec<Session> = (0..3).map(|_| supervisor(&auth, t0, None).0).collect();
    let (mut agent_session, _) = logged_in(&auth, "a1", "pw1", t0);

    let snap = snapshot(
        Duration::from_secs(10),
        AgentState::Ready,
        Duration::from_secs(5),
    );
    let f1 = b.tick(&snap, t0 + Duration::from_secs(1), |a| a.as_str() == "a1");
    assert_eq!(b.serializations(), 1);
    assert!(f1.delta().is_none());
    for s in &mut sups {
        let text = sent_text(&s.handle_frame(&f1, t0 + Duration::from_secs(1)));
        assert!(
            Arc::ptr_eq(&text, f1.snapshot()),
            "shared, not re-serialized"
        );
    }
    assert!(
        agent_session.handle_frame(&f1, t0).is_empty(),
        "agents get no wallboard"
    );
    let m: Value = serde_json::from_str(f1.snapshot()).unwrap();
    assert_eq!(m["type"], "queue_snapshot");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["at_ms"], 1_700_000_001_000i64);
    assert_eq!(m["queues"][0]["oldest_since_ms"], 1_699_999_991_000i64);
    assert_eq!(m["queues"][0]["estimated_wait_s"], 20);
    assert_eq!(
        m["queues"][0]["callers"][0]["since_ms"],
        1_699_999_991_000i64
    );
    assert_eq!(m["agents"][0]["since_ms"], 1_699_999_996_000i64);
    assert_eq!(m["agents"][0]["registered"], true);
    assert_eq!(m["agents"][1]["registered"], false);

    // One second later nothing changed: durations grew, the since-times did not.
    let snap2 = snapshot(
        Duration::from_secs(11),
        AgentState::Ready,
        Duration::from_secs(6),
    );
    let f2 = b.tick(&snap2, t0 + Duration::from_secs(2), |a| a.as_str() == "a1");
    assert_eq!(b.serializations(), 2, "snapshot only: no delta to write");
    assert!(f2.delta().is_none());
    for s in &mut sups {
        assert!(s.handle_frame(&f2, t0 + Duration::from_secs(2)).is_empty());
    }

    // a1 takes a call: the delta names a1 only, and all three get the same delta text.
    let mut snap3 = snapshot(Duration::from_secs(12), AgentState::OnCall, Duration::ZERO);
    snap3.agents[0].current_call = Some(CallKey(5));
    let f3 = b.tick(&snap3, t0 + Duration::from_secs(3), |a| a.as_str() == "a1");
    assert_eq!(b.serializations(), 4);
    let delta = f3.delta().expect("a1 changed");
    for s in &mut sups {
        let text = sent_text(&s.handle_frame(&f3, t0 + Duration::from_secs(3)));
        assert!(Arc::ptr_eq(&text, delta));
    }
    let d: Value = serde_json::from_str(delta).unwrap();
    assert_eq!(d["type"], "queue_delta");
    assert_eq!(d["seq"], 3);
    assert_eq!(d["queues"], json!([]));
    assert_eq!(d["agents"].as_array().unwrap().len(), 1);
    assert_eq!(d["agents"][0]["id"], "a1");
    assert_eq!(d["agents"][0]["state"], "oncall");
    assert_eq!(d["agents"][0]["call"], 5);

    // An agent removed from config shows in removed_agents.
    let mut snap4 = snap3.clone();
    snap4.agents.pop();
    let f4 = b.tick(&snap4, t0 + Duration::from_secs(4), |_| true);
    let d: Value = serde_json::from_str(f4.delta().unwrap()).unwrap();
    assert_eq!(d["removed_agents"], json!(["a2"]));
}

#[test]
fn a_supervisor_who_missed_frames_gets_the_snapshot_and_the_interval_is_kept() {
    let auth = authenticator();
    let t0 = Instant::now();
    let mut b = Broadcast::new(t0, 0);
    let (mut fast, _) = supervisor(&auth, t0, None);
    let (mut slow, _) = supervisor(&auth, t0, Some(5000));
    let (mut floor, _) = logged_in(&auth, "boss", "pwb", t0);
    let m = one(&cmd(
        &mut floor,
        json!({"v":1,"type":"subscribe_queues","id":1,"interval_ms":10}),
        t0,
    ));
    assert_eq!(m["interval_ms"], 500, "clamped to the floor");

    let mut frames = Vec::new();
    for i in 0..8u64 {
        let state = if i % 2 == 0 {
            AgentState::Ready
        } else {
            AgentState::WrapUp
        };
        frames.push(b.tick(
            &snapshot(Duration::from_secs(i), state, Duration::ZERO),
            t0 + Duration::from_secs(i),
            |_| true,
        ));
    }
    let at = |i: usize| t0 + Duration::from_secs(i as u64);
    // fast: snapshot first, then a delta for each consecutive frame; skipping 3 -> snapshot.
    assert!(Arc::ptr_eq(
        &sent_text(&fast.handle_frame(&frames[0], at(0))),
        frames[0].snapshot()
    ));
    assert!(Arc::ptr_eq(
        &sent_text(&fast.handle_frame(&frames[1], at(1))),
        frames[1].delta().unwrap()
    ));
    assert!(
        fast.handle_frame(&frames[1], at(1)).is_empty(),
        "same frame twice"
    );
    assert!(Arc::ptr_eq(
        &sent_text(&fast.handle_frame(&frames[3], at(3))),
        frames[3].snapshot()
    ));

    // slow: one message per 5 s, always a full snapshot since frames were skipped.
    let mut sent = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let outs = slow.handle_frame(f, at(i));
        if !outs.is_empty() {
            assert!(Arc::ptr_eq(&sent_text(&outs), f.snapshot()));
            sent.push(i);
        }
    }
    assert_eq!(sent, vec![0, 5]);

    // Unsubscribe stops the feed.
    let m = one(&cmd(
        &mut fast,
        json!({"v":1,"type":"subscribe_queues","id":2,"enabled":false}),
        at(7),
    ));
    assert_eq!(m["ok"], true);
    assert!(fast.handle_frame(&frames[7], at(7)).is_empty());
}

#[test]
fn a_supervisor_resuming_gets_the_feed_back() {
    let auth = authenticator();
    let t0 = Instant::now();
    let (_gone, token) = supervisor(&auth, t0, Some(2000));
    let mut b = Broadcast::new(t0, 0);
    let f = b.tick(
        &snapshot(Duration::ZERO, AgentState::Ready, Duration::ZERO),
        t0,
        |_| true,
    );
    let mut s = Session::new(auth.clone(), Limits::default());
    let outs = cmd(
        &mut s,
        json!({"v":1,"type":"resume","id":1,"token":token}),
        t0,
    );
    assert_eq!(one(&outs)["role"], "supervisor");
    assert!(Arc::ptr_eq(
        &sent_text(&s.handle_frame(&f, t0)),
        f.snapshot()
    ));
    // A login with the same token is a fresh start: no feed until subscribe_queues.
    let mut fresh = Session::new(auth.clone(), Limits::default());
    cmd(
        &mut fresh,
        json!({"v":1,"type":"login","id":1,"token":token}),
        t0,
    );
    assert!(fresh.handle_frame(&f, t0).is_empty());
}

#[test]
fn alerts_read_well_in_a_log() {
    let a = Alert::ForeignCall {
        user: "a1".into(),
        call: CallKey(77),
        command: "answer",
    };
    let s = a.to_string();
    assert!(
        s.contains("a1") && s.contains("77") && s.contains("answer"),
        "{s}"
    );
    let s = Alert::LoginFailed {
        user: "x".into(),
        locked: true,
    }
    .to_string();
    assert!(s.contains("locked"), "{s}");
}

#[test]
fn commands_the_engine_never_answers_do_not_pile_up() {
    let auth = authenticator();
    let mut t = Instant::now();
    let (mut s, _) = logged_in(&auth, "a1", "pw1", t);
    let mut refused = None;
    for i in 0..100u64 {
        t += Duration::from_secs(1);
        let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), i), t);
        if engine(&outs).is_empty() {
            assert_error(&outs, json!(i), "unavailable");
            refused = Some(i);
            break;
        }
    }
    let first_refused = refused.expect("a cap on commands in progress");
    assert!(first_refused >= 8, "room for a person's clicks");
    let outs = s.complete(RequestId::Num(0), Ok(Reply::Done), t);
    assert_eq!(one(&outs)["id"], 0);
    let outs = cmd(&mut s, with_id(json!({"type":"tasks"}), 1000), t);
    assert_eq!(engine(&outs).len(), 1, "room again once one completed");
}
