//! One websocket connection's state machine.

use crate::auth::{AuthError, Authenticator, Identity};
use crate::broadcast::{Delta, Frame};
use crate::protocol::*;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use verde_acd::{AgentId, CallKey, QueueName};

/// Per-connection limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sustained commands per second (token bucket), malformed messages included.
    pub commands_per_sec: u32,
    /// Commands accepted in a burst above the sustained rate.
    pub burst: u32,
    /// Longer messages are refused unparsed.
    pub max_message_bytes: usize,
    /// The fastest wallboard refresh a supervisor may ask for; also the floor of `interval_ms`.
    pub min_feed_interval: Duration,
}

impl Default for Limits {
    /// A person clicking cannot reach 10 commands a second; a page gone wrong or a script can.
    fn default() -> Self {
        Limits {
            commands_per_sec: 10,
            burst: 20,
            max_message_bytes: 16 * 1024,
            min_feed_interval: Duration::from_millis(500),
        }
    }
}

/// What a pause or logout forced by a supervisor does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForcedState {
    Pause { reason: String },
    Logout,
}

/// A command for the engine, with the acting agent taken from the session's login (never from
/// the message). The binary carries it out and answers with [`Session::complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum EngineCommand {
    /// Log in to `queues` (the configured ones when `None`) if logged out, else become ready.
    Ready {
        agent: AgentId,
        queues: Option<Vec<QueueName>>,
    },
    Pause {
        agent: AgentId,
        reason: String,
    },
    Logout {
        agent: AgentId,
    },
    /// Make the agent's phone answer the offered call (auto-answer header on the agent leg),
    /// or with `sdp`, connect the browser softphone that answered `softphone_offer`.
    Answer {
        agent: AgentId,
        call: CallKey,
        sdp: Option<String>,
    },
    /// Where the agent's offers ring from now on (the browser: while this session lasts).
    SetDevice {
        agent: AgentId,
        device: Device,
    },
    /// An ICE candidate the agent's browser softphone trickled.
    SoftphoneIce {
        agent: AgentId,
        call: CallKey,
        candidate: String,
    },
    /// Ends the agent's leg; for an offered call, declines it.
    Hangup {
        agent: AgentId,
        call: CallKey,
    },
    Hold {
        agent: AgentId,
        call: CallKey,
    },
    ResumeCall {
        agent: AgentId,
        call: CallKey,
    },
    Transfer {
        agent: AgentId,
        call: CallKey,
        mode: TransferMode,
        to: TransferTarget,
    },
    WrapUpDone {
        agent: AgentId,
    },
    ForceState {
        supervisor: String,
        agent: AgentId,
        state: ForcedState,
    },
    /// Take a waiting caller out of its queue and put it in `queue`.
    MoveCaller {
        supervisor: String,
        call: CallKey,
        queue: QueueName,
    },
    /// Start or stop recording the agent's call (on demand, with the caller told).
    Record {
        agent: AgentId,
        call: CallKey,
        on: bool,
    },
    /// The supervisor's phone joins the call in `mode`, or leaves it (`None`).
    Supervise {
        supervisor: String,
        call: CallKey,
        mode: Option<SuperviseMode>,
    },
    ListTasks {
        agent: AgentId,
    },
    /// `task: None` takes the next one due among the agent's queues and mailboxes.
    TakeTask {
        agent: AgentId,
        task: Option<TaskRef>,
    },
    /// Only a task this agent took; the engine checks against the store.
    CloseTask {
        agent: AgentId,
        task: TaskRef,
        outcome: String,
    },
}

/// The engine's answer to an [`EngineCommand`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    /// For `ListTasks`.
    Tasks(Vec<TaskInfo>),
    /// For `TakeTask`: `None` when there was nothing to take.
    Task(Option<TaskInfo>),
}

/// Why the engine could not do a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
}

impl EngineError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EngineError {
            code,
            message: message.into(),
        }
    }
}

/// Something the binary must log (with the peer's address): attempts beyond what the user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// A command named a call that is not this agent's (never offered to it, or another's).
    ForeignCall {
        user: String,
        call: CallKey,
        command: &'static str,
    },
    /// A command the user's role does not allow.
    RoleDenied {
        user: String,
        role: Role,
        command: &'static str,
    },
    LoginFailed {
        user: String,
        locked: bool,
    },
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Alert::ForeignCall {
                user,
                call,
                command,
            } => write!(
                f,
                "user {user:?} sent {command} for call {} which is not theirs: refused",
                call.0
            ),
            Alert::RoleDenied {
                user,
                role,
                command,
            } => write!(f, "user {user:?} ({role:?}) may not use {command}: refused"),
            Alert::LoginFailed { user, locked } => {
                write!(f, "failed CTI login for user {user:?}")?;
                if *locked {
                    write!(f, " (locked out)")?;
                }
                Ok(())
            }
        }
    }
}

/// What the session asks of the binary.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Send this text on the websocket.
    Send(Arc<str>),
    /// Carry out a command; answer with [`Session::complete`] and the same `id`.
    Engine {
        id: RequestId,
        command: EngineCommand,
    },
    /// The session now speaks for this identity: route its events here and feed it the current
    /// state (the agent's state, then its calls as offered / answered / held, its taken tasks),
    /// which is how a reconnect shows the truth.
    Attach(Identity),
    /// The session lost its identity (token expired or revoked, agent logged out): stop routing.
    Detach,
    /// Log this.
    Alert(Alert),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    Connected,
    Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Plain,
    /// On success the token is revoked: the page goes back to the login form.
    Logout,
}

struct Who {
    token: String,
    identity: Identity,
    agent: Option<AgentId>,
}

struct Feed {
    interval: Option<Duration>,
    last_seq: Option<u64>,
    last_sent: Option<Instant>,
}

/// Calls remembered after they end, so that a command racing the end gets `gone` rather than
/// being reported as forged.
const REMEMBER_GONE: usize = 64;
const MAX_ID_LEN: usize = 128;
const MAX_PENDING: usize = 32;
const MAX_REASON_LEN: usize = 64;

/// The state of one websocket connection, sans-IO: feed it the client's text, the engine's
/// events and completions, and the wallboard frames; send and do what comes out.
pub struct Session {
    auth: Arc<Authenticator>,
    limits: Limits,
    who: Option<Who>,
    calls: HashMap<CallKey, Phase>,
    gone: VecDeque<CallKey>,
    pending: HashMap<RequestId, Pending>,
    bucket: Option<(f64, Instant)>,
    feed: Option<Feed>,
}

fn send(text: String) -> Out {
    Out::Send(text.into())
}

fn error(id: Option<&RequestId>, code: ErrorCode, message: &str) -> Out {
    send(to_text("error", ErrorBody { id, code, message }))
}

fn ok<T: serde::Serialize>(id: &RequestId, data: T) -> Out {
    send(to_text("result", ResultBody { id, ok: true, data }))
}

fn auth_error(e: AuthError) -> ErrorCode {
    match e {
        AuthError::BadCredentials => ErrorCode::AuthFailed,
        AuthError::Locked { .. } => ErrorCode::Locked,
        AuthError::UnknownToken => ErrorCode::InvalidToken,
        AuthError::Expired => ErrorCode::TokenExpired,
    }
}

impl Session {
    pub fn new(auth: Arc<Authenticator>, limits: Limits) -> Self {
        Session {
            auth,
            limits,
            who: None,
            calls: HashMap::new(),
            gone: VecDeque::new(),
            pending: HashMap::new(),
            bucket: None,
            feed: None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.who.as_ref().map(|w| &w.identity)
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let rate = self.limits.commands_per_sec as f64;
        let burst = self.limits.burst.max(1) as f64;
        let (tokens, last) = self.bucket.get_or_insert((burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * rate;
        *tokens = (*tokens + refill).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// One text message from the client.
    pub fn handle_text(&mut self, text: &str, now: Instant) -> Vec<Out> {
        let allowed = self.take_token(now);
        if text.len() > self.limits.max_message_bytes {
            let msg = format!(
                "message of {} bytes; at most {} are accepted",
                text.len(),
                self.limits.max_message_bytes
            );
            return vec![error(None, ErrorCode::BadRequest, &msg)];
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let code = if allowed {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::RateLimited
                };
                return vec![error(None, code, &format!("not JSON: {e}"))];
            }
        };
        if !value.is_object() {
            return vec![error(
                None,
                ErrorCode::BadRequest,
                "a message is a JSON object",
            )];
        }
        let env = match Envelope::deserialize(&value) {
            Ok(e) => e,
            Err(e) => return vec![error(None, ErrorCode::BadRequest, &e.to_string())],
        };
        let id = match env.id.as_ref().map(RequestId::deserialize) {
            Some(Ok(RequestId::Str(s))) if s.len() > MAX_ID_LEN => {
                let msg = format!("id longer than {MAX_ID_LEN} characters");
                return vec![error(None, ErrorCode::BadRequest, &msg)];
            }
            Some(Ok(id)) => id,
            _ => {
                return vec![error(
                    None,
                    ErrorCode::BadRequest,
                    "every command needs an id: a number or a string",
                )]
            }
        };
        if !allowed {
            return vec![error(
                Some(&id),
                ErrorCode::RateLimited,
                "too many commands: slow down",
            )];
        }
        match env.v.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if v == VERSION as u64 => {}
            Some(v) => {
                let msg = format!("protocol version {v} is not spoken here; use {VERSION}");
                return vec![error(Some(&id), ErrorCode::UnsupportedVersion, &msg)];
            }
            None => {
                let msg = format!("missing or invalid \"v\": use {VERSION}");
                return vec![error(Some(&id), ErrorCode::BadRequest, &msg)];
            }
        }
        if !matches!(env.kind, Some(serde_json::Value::String(_))) {
            return vec![error(Some(&id), ErrorCode::BadRequest, "missing \"type\"")];
        }
        if self.pending.contains_key(&id) {
            return vec![error(
                Some(&id),
                ErrorCode::BadRequest,
                "this id is already used by a command in progress",
            )];
        }
        let cmd = match Command::deserialize(&value) {
            Ok(c) => c,
            Err(e) => return vec![error(Some(&id), ErrorCode::BadRequest, &e.to_string())],
        };
        self.command(id, cmd, now)
    }

    fn command(&mut self, id: RequestId, cmd: Command, now: Instant) -> Vec<Out> {
        match cmd {
            Command::Login {
                user,
                password,
                token,
            } => return self.login(id, user, password, token, now),
            Command::Resume { token } => return self.resume(id, token, now),
            _ => {}
        }
        let Some(who) = &self.who else {
            return vec![error(
                Some(&id),
                ErrorCode::Unauthenticated,
                "log in first (login or resume)",
            )];
        };
        let (user, role) = (who.identity.user.clone(), who.identity.role);
        // Every agent-only command has an agent; a supervisor never reaches those arms.
        let agent = who.agent.clone().unwrap_or_else(|| AgentId::from(""));
        // Re-checked on every command: a token revoked elsewhere or expired stops working at once.
        if let Err(e) = self.auth.verify(&who.token, now) {
            self.forget_identity();
            return vec![error(Some(&id), auth_error(e), &e.to_string()), Out::Detach];
        }
        let name = cmd.name();
        let supervisor_only = matches!(
            cmd,
            Command::SubscribeQueues { .. }
                | Command::ForceState { .. }
                | Command::MoveCaller { .. }
                | Command::Supervise { .. }
        );
        if supervisor_only != (role == Role::Supervisor) {
            let msg = if supervisor_only {
                format!("{name} is for supervisors")
            } else {
                format!("{name} is for agents")
            };
            return vec![
                error(Some(&id), ErrorCode::Forbidden, &msg),
                Out::Alert(Alert::RoleDenied {
                    user,
                    role,
                    command: name,
                }),
            ];
        }
        let bad = |msg: &str| vec![error(Some(&id), ErrorCode::BadRequest, msg)];
        let (command, pending) = match cmd {
            Command::Login { .. } | Command::Resume { .. } => unreachable!("handled above"),
            Command::SetState {
                state,
                reason,
                queues,
            } => match state {
                WantedState::Ready => (
                    EngineCommand::Ready {
                        agent,
                        queues: queues.map(|q| q.into_iter().map(QueueName::from).collect()),
                    },
                    Pending::Plain,
                ),
                WantedState::Pause => match valid_reason(reason.as_deref()) {
                    Ok(reason) => (EngineCommand::Pause { agent, reason }, Pending::Plain),
                    Err(msg) => return bad(msg),
                },
                WantedState::Logout => (EngineCommand::Logout { agent }, Pending::Logout),
            },
            Command::Answer { call, sdp } => {
                let call = CallKey(call);
                if let Err(outs) = self.own_call(&id, call, name, &[Phase::Offered]) {
                    return outs;
                }
                (EngineCommand::Answer { agent, call, sdp }, Pending::Plain)
            }
            Command::SetDevice { device } => {
                (EngineCommand::SetDevice { agent, device }, Pending::Plain)
            }
            Command::SoftphoneIce { call, candidate } => {
                let call = CallKey(call);
                let any = [Phase::Offered, Phase::Connected, Phase::Held];
                if let Err(outs) = self.own_call(&id, call, name, &any) {
                    return outs;
                }
                (
                    EngineCommand::SoftphoneIce {
                        agent,
                        call,
                        candidate,
                    },
                    Pending::Plain,
                )
            }
            Command::Hangup { call } => {
                let call = CallKey(call);
                let any = [Phase::Offered, Phase::Connected, Phase::Held];
                if let Err(outs) = self.own_call(&id, call, name, &any) {
                    return outs;
                }
                (EngineCommand::Hangup { agent, call }, Pending::Plain)
            }
            Command::Hold { call } => {
                let call = CallKey(call);
                if let Err(outs) = self.own_call(&id, call, name, &[Phase::Connected]) {
                    return outs;
                }
                (EngineCommand::Hold { agent, call }, Pending::Plain)
            }
            Command::ResumeCall { call } => {
                let call = CallKey(call);
                if let Err(outs) = self.own_call(&id, call, name, &[Phase::Held]) {
                    return outs;
                }
                (EngineCommand::ResumeCall { agent, call }, Pending::Plain)
            }
            Command::Transfer { call, mode, to } => {
                if let Err(msg) = valid_target(&to) {
                    return bad(msg);
                }
                let call = CallKey(call);
                let phases = [Phase::Connected, Phase::Held];
                if let Err(outs) = self.own_call(&id, call, name, &phases) {
                    return outs;
                }
                (
                    EngineCommand::Transfer {
                        agent,
                        call,
                        mode,
                        to,
                    },
                    Pending::Plain,
                )
            }
            Command::WrapUpDone => (EngineCommand::WrapUpDone { agent }, Pending::Plain),
            Command::Tasks => (EngineCommand::ListTasks { agent }, Pending::Plain),
            Command::TakeTask { task } => (EngineCommand::TakeTask { agent, task }, Pending::Plain),
            Command::CloseTask { task, outcome } => {
                if outcome.trim().is_empty() || outcome.len() > MAX_REASON_LEN {
                    return bad("outcome: a short text (1 to 64 characters)");
                }
                (
                    EngineCommand::CloseTask {
                        agent,
                        task,
                        outcome,
                    },
                    Pending::Plain,
                )
            }
            Command::SubscribeQueues {
                enabled,
                interval_ms,
            } => return self.subscribe(id, enabled, interval_ms),
            Command::ForceState {
                agent: target,
                state,
                reason,
            } => {
                if target.is_empty() {
                    return bad("agent: the id of the agent");
                }
                let state = match state {
                    ForcedWire::Logout => ForcedState::Logout,
                    ForcedWire::Pause => match reason {
                        None => ForcedState::Pause {
                            reason: "supervisor".to_string(),
                        },
                        Some(r) => match valid_reason(Some(&r)) {
                            Ok(reason) => ForcedState::Pause { reason },
                            Err(msg) => return bad(msg),
                        },
                    },
                };
                (
                    EngineCommand::ForceState {
                        supervisor: user,
                        agent: AgentId::from(target),
                        state,
                    },
                    Pending::Plain,
                )
            }
            Command::Record { call, on } => {
                let call = CallKey(call);
                let phases = [Phase::Connected, Phase::Held];
                if let Err(outs) = self.own_call(&id, call, name, &phases) {
                    return outs;
                }
                (EngineCommand::Record { agent, call, on }, Pending::Plain)
            }
            Command::Supervise { call, mode } => (
                EngineCommand::Supervise {
                    supervisor: user,
                    call: CallKey(call),
                    mode: match mode {
                        SuperviseWire::Listen => Some(SuperviseMode::Listen),
                        SuperviseWire::Whisper => Some(SuperviseMode::Whisper),
                        SuperviseWire::Barge => Some(SuperviseMode::Barge),
                        SuperviseWire::Stop => None,
                    },
                },
                Pending::Plain,
            ),
            Command::MoveCaller { call, queue } => {
                if queue.is_empty() {
                    return bad("queue: the name of the queue");
                }
                (
                    EngineCommand::MoveCaller {
                        supervisor: user,
                        call: CallKey(call),
                        queue: QueueName::from(queue),
                    },
                    Pending::Plain,
                )
            }
        };
        if self.pending.len() >= MAX_PENDING {
            // The engine is not answering; more commands would only pile up.
            return vec![error(
                Some(&id),
                ErrorCode::Unavailable,
                "too many commands in progress: wait for their results",
            )];
        }
        self.pending.insert(id.clone(), pending);
        vec![Out::Engine { id, command }]
    }

    /// Whether the call is this agent's and in one of `phases`; the refusal otherwise.
    fn own_call(
        &self,
        id: &RequestId,
        call: CallKey,
        command: &'static str,
        phases: &[Phase],
    ) -> Result<(), Vec<Out>> {
        match self.calls.get(&call) {
            Some(p) if phases.contains(p) => Ok(()),
            Some(p) => {
                let msg = format!("call {} is {p:?}: {command} does not apply", call.0);
                Err(vec![error(Some(id), ErrorCode::InvalidState, &msg)])
            }
            None if self.gone.contains(&call) => Err(vec![error(
                Some(id),
                ErrorCode::Gone,
                &format!("call {} has ended", call.0),
            )]),
            None => {
                let user = self
                    .who
                    .as_ref()
                    .map(|w| w.identity.user.clone())
                    .unwrap_or_default();
                Err(vec![
                    error(
                        Some(id),
                        ErrorCode::Forbidden,
                        &format!("call {} is not yours", call.0),
                    ),
                    Out::Alert(Alert::ForeignCall {
                        user,
                        call,
                        command,
                    }),
                ])
            }
        }
    }

    fn login(
        &mut self,
        id: RequestId,
        user: Option<String>,
        password: Option<String>,
        token: Option<String>,
        now: Instant,
    ) -> Vec<Out> {
        if self.who.is_some() {
            return vec![error(
                Some(&id),
                ErrorCode::InvalidState,
                "already logged in on this connection",
            )];
        }
        let (token, identity) = match (user, password, token) {
            (user, None, Some(token)) => match self.auth.verify(&token, now) {
                Ok(identity) => {
                    if user.is_some_and(|u| u != identity.user) {
                        return vec![error(
                            Some(&id),
                            ErrorCode::AuthFailed,
                            "that token belongs to another user",
                        )];
                    }
                    (token, identity)
                }
                Err(e) => return vec![error(Some(&id), auth_error(e), &e.to_string())],
            },
            (Some(user), Some(password), None) => match self.auth.login(&user, &password, now) {
                Ok(g) => (g.token, g.identity),
                Err(e) => {
                    let locked = matches!(e, AuthError::Locked { .. });
                    return vec![
                        error(Some(&id), auth_error(e), &e.to_string()),
                        Out::Alert(Alert::LoginFailed { user, locked }),
                    ];
                }
            },
            _ => {
                return vec![error(
                    Some(&id),
                    ErrorCode::BadRequest,
                    "login takes user and password, or token",
                )]
            }
        };
        self.become_(id, token, identity, false, now)
    }

    fn resume(&mut self, id: RequestId, token: String, now: Instant) -> Vec<Out> {
        if self.who.is_some() {
            return vec![error(
                Some(&id),
                ErrorCode::InvalidState,
                "already logged in on this connection",
            )];
        }
        match self.auth.verify(&token, now) {
            Ok(identity) => self.become_(id, token, identity, true, now),
            Err(e) => vec![error(Some(&id), auth_error(e), &e.to_string())],
        }
    }

    fn become_(
        &mut self,
        id: RequestId,
        token: String,
        identity: Identity,
        resumed: bool,
        now: Instant,
    ) -> Vec<Out> {
        let expires_in_s = self
            .auth
            .expires_at(&token)
            .map(|t| t.saturating_duration_since(now).as_secs())
            .unwrap_or(0);
        let agent = (identity.role == Role::Agent).then(|| AgentId::from(identity.user.as_str()));
        let mut outs = vec![ok(
            &id,
            LoginData {
                user: &identity.user,
                role: identity.role,
                token: &token,
                expires_in_s,
            },
        )];
        if resumed && identity.role == Role::Supervisor {
            if let Some(interval) = self.auth.feed(&token) {
                self.feed = Some(Feed {
                    interval,
                    last_seq: None,
                    last_sent: None,
                });
            }
        }
        outs.push(Out::Attach(identity.clone()));
        self.who = Some(Who {
            token,
            identity,
            agent,
        });
        outs
    }

    fn forget_identity(&mut self) {
        self.who = None;
        self.calls.clear();
        self.feed = None;
    }

    fn subscribe(&mut self, id: RequestId, enabled: bool, interval_ms: Option<u64>) -> Vec<Out> {
        let token = self
            .who
            .as_ref()
            .map(|w| w.token.clone())
            .unwrap_or_default();
        if !enabled {
            self.feed = None;
            self.auth.remember_feed(&token, None);
            return vec![ok(&id, Empty {})];
        }
        let interval =
            interval_ms.map(|ms| Duration::from_millis(ms).max(self.limits.min_feed_interval));
        self.feed = Some(Feed {
            interval,
            last_seq: None,
            last_sent: None,
        });
        self.auth.remember_feed(&token, Some(interval));
        #[derive(serde::Serialize)]
        struct Subscribed {
            interval_ms: Option<u64>,
        }
        vec![ok(
            &id,
            Subscribed {
                interval_ms: interval.map(|d| d.as_millis() as u64),
            },
        )]
    }

    /// The engine's answer to an [`Out::Engine`] this session emitted. Unknown ids (answered
    /// twice, or from before a reconnect) are ignored.
    pub fn complete(
        &mut self,
        id: RequestId,
        outcome: Result<Reply, EngineError>,
        _now: Instant,
    ) -> Vec<Out> {
        let Some(pending) = self.pending.remove(&id) else {
            tracing::debug!(%id, "completion for no pending CTI command");
            return Vec::new();
        };
        match outcome {
            Err(e) => vec![error(Some(&id), e.code, &e.message)],
            Ok(reply) => {
                let mut outs = vec![match reply {
                    Reply::Done => ok(&id, Empty {}),
                    Reply::Tasks(tasks) => {
                        #[derive(serde::Serialize)]
                        struct Tasks {
                            tasks: Vec<TaskInfo>,
                        }
                        ok(&id, Tasks { tasks })
                    }
                    Reply::Task(task) => {
                        #[derive(serde::Serialize)]
                        struct Task {
                            task: Option<TaskInfo>,
                        }
                        ok(&id, Task { task })
                    }
                }];
                if pending == Pending::Logout {
                    if let Some(who) = &self.who {
                        self.auth.revoke(&who.token);
                    }
                    self.forget_identity();
                    outs.push(Out::Detach);
                }
                outs
            }
        }
    }

    /// An engine event. Agent and call events for another agent are dropped (the binary's
    /// routing should not send them; this is the second line), and they teach the session which
    /// calls its agent may act on.
    pub fn handle_event(&mut self, event: &Event) -> Vec<Out> {
        let Some(who) = &self.who else {
            return Vec::new();
        };
        let me = who.agent.clone();
        let mine = |agent: &AgentId| me.as_ref() == Some(agent);
        let text = match event {
            Event::AgentState {
                agent,
                state,
                in_state,
            } if mine(agent) => {
                let (state, reason) = state_name(state);
                to_text(
                    "agent_state",
                    AgentStateBody {
                        agent: agent.as_str(),
                        state,
                        reason,
                        in_state_s: secs(*in_state),
                    },
                )
            }
            Event::CallOffered { agent, call, offer } if mine(agent) => {
                self.track(*call, Some(Phase::Offered));
                to_text(
                    "call_offered",
                    CallOfferedBody {
                        call: call.0,
                        caller: &offer.caller,
                        did: &offer.did,
                        queue: offer.queue.as_str(),
                        channel: offer.channel,
                        waited_s: secs(offer.waited),
                        language: offer.language.as_deref(),
                        choices: &offer.choices,
                    },
                )
            }
            Event::CallAnswered { agent, call } if mine(agent) => {
                self.track(*call, Some(Phase::Connected));
                to_text("call_answered", CallBody { call: call.0 })
            }
            Event::CallHeld { agent, call } if mine(agent) => {
                self.track(*call, Some(Phase::Held));
                to_text("call_held", CallBody { call: call.0 })
            }
            Event::CallResumed { agent, call } if mine(agent) => {
                self.track(*call, Some(Phase::Connected));
                to_text("call_resumed", CallBody { call: call.0 })
            }
            Event::CallTransferred { agent, call, to } if mine(agent) => {
                self.track(*call, None);
                to_text("call_transferred", CallTransferredBody { call: call.0, to })
            }
            Event::Recording { agent, call, on } if mine(agent) => to_text(
                "recording",
                RecordingBody {
                    call: call.0,
                    on: *on,
                },
            ),
            Event::SoftphoneOffer { agent, call, sdp } if mine(agent) => {
                to_text("softphone_offer", SoftphoneOfferBody { call: call.0, sdp })
            }
            Event::Consult {
                agent,
                call,
                to,
                state,
                reason,
            } if mine(agent) => to_text(
                "consult",
                ConsultBody {
                    call: call.0,
                    to,
                    state,
                    reason: reason.as_deref(),
                },
            ),
            Event::CallEnded {
                agent,
                call,
                reason,
            } if mine(agent) => {
                self.track(*call, None);
                to_text(
                    "call_ended",
                    CallEndedBody {
                        call: call.0,
                        reason,
                    },
                )
            }
            Event::TaskCreated { task } => to_text("task_created", TaskBody { task, agent: None }),
            Event::TaskTaken { task, agent } => to_text(
                "task_taken",
                TaskBody {
                    task,
                    agent: Some(agent.as_str()),
                },
            ),
            Event::TaskClosed {
                task,
                agent,
                outcome,
            } => to_text(
                "task_closed",
                TaskClosedBody {
                    task,
                    agent: agent.as_str(),
                    outcome,
                },
            ),
            _ => return Vec::new(),
        };
        vec![send(text)]
    }

    fn track(&mut self, call: CallKey, phase: Option<Phase>) {
        match phase {
            Some(p) => {
                self.calls.insert(call, p);
                self.gone.retain(|c| *c != call);
            }
            None => {
                if self.calls.remove(&call).is_some() {
                    if self.gone.len() == REMEMBER_GONE {
                        self.gone.pop_front();
                    }
                    self.gone.push_back(call);
                }
            }
        }
    }

    /// Whether this (supervisor) session asked for the wallboard feed.
    pub fn is_subscribed(&self) -> bool {
        self.feed.is_some()
    }

    /// Service-level figures (`queue_stats`, serialized once by the binary for everyone):
    /// forwarded to subscribed supervisors as they are, whatever their refresh interval, since
    /// they change slowly and come seldom.
    pub fn handle_stats(&mut self, text: &Arc<str>) -> Vec<Out> {
        match self.feed {
            Some(_) => vec![Out::Send(text.clone())],
            None => Vec::new(),
        }
    }

    /// A wallboard frame: forwarded (the shared text, never re-serialized) to a subscribed
    /// supervisor, as a delta when this session has the previous frame, else as the snapshot.
    pub fn handle_frame(&mut self, frame: &Frame, now: Instant) -> Vec<Out> {
        let Some(feed) = self.feed.as_mut() else {
            return Vec::new();
        };
        if feed.last_seq == Some(frame.seq()) {
            return Vec::new();
        }
        if let (Some(interval), Some(last)) = (feed.interval, feed.last_sent) {
            // Frames come on a timer of their own; a frame a little early for this interval
            // is taken rather than pushing the refresh a whole tick later.
            let slack = (interval / 4).min(self.limits.min_feed_interval / 2);
            if now + slack < last + interval {
                return Vec::new();
            }
        }
        let follows = feed.last_seq.is_some_and(|s| s + 1 == frame.seq());
        let text = match (frame.delta_kind(), follows) {
            (Delta::Unchanged, true) => {
                feed.last_seq = Some(frame.seq());
                return Vec::new();
            }
            (Delta::Changes(d), true) => d.clone(),
            _ => frame.snapshot().clone(),
        };
        feed.last_seq = Some(frame.seq());
        feed.last_sent = Some(now);
        vec![Out::Send(text)]
    }
}

fn valid_reason(reason: Option<&str>) -> Result<String, &'static str> {
    match reason.map(str::trim) {
        Some(r) if !r.is_empty() && r.len() <= MAX_REASON_LEN => Ok(r.to_string()),
        _ => Err("reason: a short text (1 to 64 characters)"),
    }
}

fn valid_target(to: &TransferTarget) -> Result<(), &'static str> {
    match to {
        TransferTarget::Queue(q) if q.is_empty() => Err("to.queue: the name of a queue"),
        TransferTarget::Agent(a) if a.is_empty() => Err("to.agent: the id of an agent"),
        TransferTarget::Number(n)
            if !(2..=32).contains(&n.len())
                || !n
                    .chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == '+')) =>
        {
            Err("to.number: digits, optionally after a leading +")
        }
        _ => Ok(()),
    }
}
