//! The wire: what clients send (parsed here, never handed out raw) and what the engine and the
//! session tell them. Every message is a JSON object `{"v":1,"type":"...", ...}`; see
//! `docs/cti-protocol.md` for one example of each.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use verde_acd::{AgentId, AgentState, CallKey, QueueName};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// The client's id for one command, echoed in its `result` or `error`: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Num(u64),
    Str(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            RequestId::Num(n) => write!(f, "{n}"),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// The `code` of an `error` message. Clients branch on it; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, an unknown `type`, a missing or ill-typed field.
    BadRequest,
    /// `v` is not 1.
    UnsupportedVersion,
    /// Only `login` and `resume` are accepted before a successful login.
    Unauthenticated,
    /// Wrong user or password, or a token that belongs to someone else.
    AuthFailed,
    /// Too many failed logins for this user: wait and retry.
    Locked,
    /// The token is unknown or was revoked.
    InvalidToken,
    TokenExpired,
    /// The role may not use the command, or the call is not this agent's.
    Forbidden,
    /// The call ended (or left this agent) before the command arrived.
    Gone,
    /// The command does not fit the current state (answer a held call, login twice, ...).
    InvalidState,
    RateLimited,
    /// The engine does not know the named agent, queue, call or task.
    NotFound,
    /// The engine cannot do it now (overloaded, shutting down, phone unreachable).
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::Locked => "locked",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Gone => "gone",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Supervisor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// The caller goes to the target at once; the agent's leg ends.
    Blind,
    /// The agent talks to the target first (the caller on hold); the transfer completes when the
    /// agent hangs up its leg, and `resume_call` takes the caller back instead.
    Attended,
}

/// Where a transfer goes. On the wire: `{"queue":"billing"}`, `{"agent":"a2"}` or
/// `{"number":"+390612345"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    Queue(String),
    Agent(String),
    Number(String),
}

/// How a request reached the contact center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A caller on the line from a trunk.
    Voice,
    /// A callback the engine dialed for someone who left their number.
    Callback,
    /// A browser on the "call now" page.
    Webrtc,
}

/// One IVR menu choice the caller made before reaching the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IvrChoice {
    pub node: String,
    pub key: String,
}

/// What the agent's screen pops up with when a call is offered.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOffer {
    /// Calling number ("" when withheld).
    pub caller: String,
    pub did: String,
    pub queue: QueueName,
    pub channel: Channel,
    /// Time in queue so far.
    pub waited: Duration,
    pub language: Option<String>,
    pub choices: Vec<IvrChoice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Callback,
    Voicemail,
}

/// Callbacks and voicemails are numbered separately, so a task is named by both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub kind: TaskKind,
    pub id: i64,
}

/// A task as agents see it; the binary builds it from the store's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    #[serde(flatten)]
    pub task: TaskRef,
    /// Queue of a callback, mailbox of a voicemail.
    pub queue: String,
    /// The number to call back, or the caller who left the message.
    pub number: String,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    /// The agent who took it in charge, if any.
    pub taken_by: Option<String>,
}

/// What the engine reports; the binary routes each to the sessions concerned (an agent's events
/// to that agent's sessions, task events to the agents who serve the queue or mailbox).
/// Sessions drop agent and call events that name another agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    AgentState {
        agent: AgentId,
        state: AgentState,
        in_state: Duration,
    },
    CallOffered {
        agent: AgentId,
        call: CallKey,
        offer: Box<CallOffer>,
    },
    CallAnswered {
        agent: AgentId,
        call: CallKey,
    },
    CallHeld {
        agent: AgentId,
        call: CallKey,
    },
    CallResumed {
        agent: AgentId,
        call: CallKey,
    },
    /// The call left this agent for `to`.
    CallTransferred {
        agent: AgentId,
        call: CallKey,
        to: TransferTarget,
    },
    /// How this agent's consultation (attended transfer) goes: `ringing`, `talking` (the agent
    /// talks to the target, the caller on hold), `failed` (with why), `cancelled` (the agent
    /// took the caller back) or `ended` (the target hung up; the caller is still on hold).
    Consult {
        agent: AgentId,
        call: CallKey,
        to: TransferTarget,
        state: String,
        reason: Option<String>,
    },
    /// The call's conversation is being recorded (`on`) or no longer is.
    Recording {
        agent: AgentId,
        call: CallKey,
        on: bool,
    },
    /// An offered call rings in the agent's browser: verde's SDP offer for its softphone.
    SoftphoneOffer {
        agent: AgentId,
        call: CallKey,
        sdp: String,
    },
    /// The call is over for this agent (either side hung up, or the offer was withdrawn).
    CallEnded {
        agent: AgentId,
        call: CallKey,
        reason: String,
    },
    TaskCreated {
        task: TaskInfo,
    },
    TaskTaken {
        task: TaskInfo,
        agent: AgentId,
    },
    TaskClosed {
        task: TaskRef,
        agent: AgentId,
        outcome: String,
    },
}

/// The wire names of agent states, as in `/api/agents`.
pub(crate) fn state_name(state: &AgentState) -> (&'static str, Option<&str>) {
    match state {
        AgentState::LoggedOut => ("loggedout", None),
        AgentState::Ready => ("ready", None),
        AgentState::Reserved => ("reserved", None),
        AgentState::Ringing => ("ringing", None),
        AgentState::OnCall => ("oncall", None),
        AgentState::WrapUp => ("wrapup", None),
        AgentState::Paused { reason } => ("paused", Some(reason)),
    }
}

/// The wire name of an agent state (`oncall`, `paused`...), as everywhere verde shows one.
pub fn state_label(state: &AgentState) -> &'static str {
    state_name(state).0
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

// ---- client -> server -------------------------------------------------------------------

/// The fields every command shares, read before the command itself so that an ill-formed
/// command still gets an error carrying its id.
#[derive(Deserialize)]
pub(crate) struct Envelope {
    pub v: Option<serde_json::Value>,
    pub id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub kind: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WantedState {
    Ready,
    Pause,
    Logout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SuperviseWire {
    Listen,
    Whisper,
    Barge,
    Stop,
}

/// Where an agent's offered calls ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// The agent's registered SIP phone.
    Phone,
    /// The softphone in the agent bar's page (WebRTC), while that page is open.
    Browser,
}

/// How a supervisor joins a live call from its phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuperviseMode {
    /// Hears the caller and the agent; nobody hears the supervisor.
    Listen,
    /// Hears both; only the agent hears the supervisor (coaching).
    Whisper,
    /// Everyone hears everyone.
    Barge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ForcedWire {
    Pause,
    Logout,
}

/// Unknown fields are ignored so that newer pages keep working with an older engine.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Command {
    Login {
        user: Option<String>,
        password: Option<String>,
        token: Option<String>,
    },
    Resume {
        token: String,
    },
    SetState {
        state: WantedState,
        reason: Option<String>,
        queues: Option<Vec<String>>,
    },
    Answer {
        call: u64,
        /// The browser softphone's SDP answer to `softphone_offer`.
        sdp: Option<String>,
    },
    Hangup {
        call: u64,
    },
    SetDevice {
        device: Device,
    },
    SoftphoneIce {
        call: u64,
        candidate: String,
    },
    Hold {
        call: u64,
    },
    ResumeCall {
        call: u64,
    },
    Transfer {
        call: u64,
        mode: TransferMode,
        to: TransferTarget,
    },
    WrapUpDone,
    SubscribeQueues {
        #[serde(default = "yes")]
        enabled: bool,
        interval_ms: Option<u64>,
    },
    ForceState {
        agent: String,
        state: ForcedWire,
        reason: Option<String>,
    },
    MoveCaller {
        call: u64,
        queue: String,
    },
    Record {
        call: u64,
        on: bool,
    },
    Supervise {
        call: u64,
        mode: SuperviseWire,
    },
    Tasks,
    TakeTask {
        task: Option<TaskRef>,
    },
    CloseTask {
        task: TaskRef,
        outcome: String,
    },
}

fn yes() -> bool {
    true
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Login { .. } => "login",
            Command::Resume { .. } => "resume",
            Command::SetState { .. } => "set_state",
            Command::Answer { .. } => "answer",
            Command::SetDevice { .. } => "set_device",
            Command::SoftphoneIce { .. } => "softphone_ice",
            Command::Hangup { .. } => "hangup",
            Command::Hold { .. } => "hold",
            Command::ResumeCall { .. } => "resume_call",
            Command::Transfer { .. } => "transfer",
            Command::WrapUpDone => "wrap_up_done",
            Command::SubscribeQueues { .. } => "subscribe_queues",
            Command::ForceState { .. } => "force_state",
            Command::MoveCaller { .. } => "move_caller",
            Command::Record { .. } => "record",
            Command::Supervise { .. } => "supervise",
            Command::Tasks => "tasks",
            Command::TakeTask { .. } => "take_task",
            Command::CloseTask { .. } => "close_task",
        }
    }
}

// ---- server -> client -------------------------------------------------------------------

#[derive(Serialize)]
struct Wire<'a, T: Serialize> {
    v: u8,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: T,
}

/// Serializes `{"v":1,"type":kind, ...body}`. Body types are plain structs of strings and
/// numbers, which serde_json cannot fail on.
pub(crate) fn to_text<T: Serialize>(kind: &str, body: T) -> String {
    serde_json::to_string(&Wire {
        v: VERSION,
        kind,
        body,
    })
    .expect("CTI messages serialize infallibly")
}

#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub id: Option<&'a RequestId>,
    pub code: ErrorCode,
    pub message: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ResultBody<'a, T: Serialize> {
    pub id: &'a RequestId,
    pub ok: bool,
    #[serde(flatten)]
    pub data: T,
}

#[derive(Serialize)]
pub(crate) struct Empty {}

#[derive(Serialize)]
pub(crate) struct LoginData<'a> {
    pub user: &'a str,
    pub role: Role,
    pub token: &'a str,
    pub expires_in_s: u64,
}

#[derive(Serialize)]
pub(crate) struct AgentStateBody<'a> {
    pub agent: &'a str,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    pub in_state_s: f64,
}

#[derive(Serialize)]
pub(crate) struct CallOfferedBody<'a> {
    pub call: u64,
    pub caller: &'a str,
    pub did: &'a str,
    pub queue: &'a str,
    pub channel: Channel,
    pub waited_s: f64,
    pub language: Option<&'a str>,
    pub choices: &'a [IvrChoice],
}

#[derive(Serialize)]
pub(crate) struct CallBody {
    pub call: u64,
}

#[derive(Serialize)]
pub(crate) struct CallTransferredBody<'a> {
    pub call: u64,
    pub to: &'a TransferTarget,
}

#[derive(Serialize)]
pub(crate) struct SoftphoneOfferBody<'a> {
    pub call: u64,
    pub sdp: &'a str,
}

#[derive(Serialize)]
pub(crate) struct RecordingBody {
    pub call: u64,
    pub on: bool,
}

#[derive(Serialize)]
pub(crate) struct ConsultBody<'a> {
    pub call: u64,
    pub to: &'a TransferTarget,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct CallEndedBody<'a> {
    pub call: u64,
    pub reason: &'a str,
}

#[derive(Serialize)]
pub(crate) struct TaskBody<'a> {
    pub task: &'a TaskInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct TaskClosedBody<'a> {
    pub task: &'a TaskRef,
    pub agent: &'a str,
    pub outcome: &'a str,
}
