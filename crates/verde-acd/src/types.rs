//! What goes into and comes out of the [`crate::Acd`].

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary's handle for one queued call (e.g. its call-task id). Unique while the call is
/// known to the ACD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

name_type!(
    /// An agent's configured id. Cheap to clone (shared string).
    AgentId
);
name_type!(
    /// A queue's configured name. Cheap to clone (shared string).
    QueueName
);

/// Why an offer to an agent did not connect, as seen by the binary's outbound leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferFailure {
    /// Rang without answer (e.g. 408/480 or the binary's own timer). Counts as a miss.
    NoAnswer,
    /// 486/600: the agent is next skipped for this caller and sent to the back of the idle line.
    Busy,
    /// No registration, 404, transport error: the agent is paused with reason "unreachable".
    Unreachable,
    /// 603 / declined by the agent. Counts as a miss.
    Rejected,
}

/// Why a caller left the queue without an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Waited `max_wait`.
    Timeout,
    /// Arrived when `max_len` callers were in the queue.
    Full,
    /// No member agent logged in.
    Empty,
    /// Pressed a key and the queue has a key exit.
    Key,
}

/// An agent's state, reported in [`Action::AgentState`] and snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Ready,
    /// Chosen for a call (an [`Action::Offer`] went out); takes nothing else meanwhile.
    Reserved,
    /// The binary reported the agent's phone ringing ([`Input::OfferRinging`]).
    Ringing,
    OnCall,
    WrapUp,
    Paused {
        reason: String,
    },
}

/// Everything the ACD is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A caller joins a queue (priority: higher first; FIFO within a priority). `caller` is the
    /// calling number, used for abandoned resume; pass "" for withheld numbers.
    Enqueue {
        call: CallKey,
        queue: QueueName,
        priority: u8,
        caller: String,
    },
    /// A callback request (someone who left their number) stands in line as a virtual caller,
    /// ordered among the live callers of the same priority by `enqueued_at`: the time its caller
    /// first joined the queue, normally in the past (a time after `now` counts as `now`). It
    /// never gets announcements and never leaves through max wait, max length or the empty exit;
    /// it does not count against `max_len`. At the head, with an agent free, it gets the same
    /// [`Action::Offer`] as a live caller, and the offer inputs work the same (for
    /// [`crate::CallbackMode::CustomerFirst`] the ring timer also covers
    /// `callback.customer_ring_timeout`). After [`Action::Connected`] the ACD forgets it.
    ///
    /// The binary enqueues it only while it may be dialed (its time band, the service hours)
    /// and takes it out with [`Input::RemoveCaller`] when it no longer may, or when the
    /// customer cannot be reached before the agent answered (customer-first: the agent is
    /// released without a miss). To retry, or when it becomes eligible again, it enqueues it
    /// again with the **same** `enqueued_at`: it goes back behind everyone who called earlier
    /// and is still waiting, ahead of everyone who called later.
    EnqueueCallback {
        call: CallKey,
        queue: QueueName,
        priority: u8,
        /// The number to call back, for snapshots.
        caller: String,
        enqueued_at: Instant,
    },
    /// The caller hung up while waiting or while an agent was being offered the call.
    Abandon { call: CallKey },
    /// The caller pressed a DTMF key while waiting (leaves through `exits.key` if configured;
    /// never for the queue's `callback.offer_key` while callbacks are enabled).
    KeyPressed { call: CallKey, digit: char },
    /// The binary takes the caller out of the queue (moved elsewhere, accepted a callback, a
    /// callback no longer eligible or not reached). Outstanding offers are withdrawn with
    /// [`Action::CancelOffer`], without blame for the agents. No other action.
    RemoveCaller { call: CallKey },
    /// `queues: None` joins the agent's configured queues. Login makes the agent ready.
    AgentLogin {
        agent: AgentId,
        queues: Option<Vec<QueueName>>,
    },
    /// Ready after a pause or wrap-up. Ends wrap-up early; during a call, cancels a pending pause.
    AgentReady { agent: AgentId },
    /// Takes effect after the current offer/call and its wrap-up if there is one.
    AgentPause { agent: AgentId, reason: String },
    /// During a call the logout takes effect when the call ends; an outstanding offer is cancelled.
    AgentLogout { agent: AgentId },
    /// Optional: the agent's phone is ringing (180). Only changes the reported state.
    OfferRinging { call: CallKey, agent: AgentId },
    /// The agent answered the offered call.
    OfferAnswered { call: CallKey, agent: AgentId },
    /// The offer failed before an answer.
    OfferFailed {
        call: CallKey,
        agent: AgentId,
        reason: OfferFailure,
    },
    /// The agent's call is over (either side hung up or it was transferred away).
    CallEnded { call: CallKey, agent: AgentId },
    /// The agent finished wrap-up before its timer.
    WrapUpDone { agent: AgentId },
    /// Offers `call` to one named agent, outside any line (a transfer to an agent): when the
    /// agent is ready it is reserved and offered the call at once ([`Action::Offer`], then the
    /// offer inputs as for a queue, with `queue`'s ring timeout; the talk counts in `queue`);
    /// otherwise, or when the offer fails or times out, [`Action::DirectFailed`] and the ACD
    /// forgets the call. [`Input::Abandon`] or [`Input::RemoveCaller`] withdraw it.
    Direct {
        call: CallKey,
        agent: AgentId,
        queue: QueueName,
    },
}

/// Everything the ACD asks the binary to do or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ring `agent` for `call`. The agent is reserved: it gets nothing else until the offer is
    /// answered, fails, or is cancelled.
    Offer {
        call: CallKey,
        agent: AgentId,
        queue: QueueName,
    },
    /// Stop ringing `agent` for `call` (another agent answered, the ring timed out, the caller
    /// left). Not sent for offers the binary reported failed.
    CancelOffer { call: CallKey, agent: AgentId },
    /// `agent` answered: bridge the caller to it. `waited` is the caller's time in queue.
    Connected {
        call: CallKey,
        agent: AgentId,
        queue: QueueName,
        waited: Duration,
    },
    /// Every offer for `call` failed; the caller is back at the head of the line (resume MOH;
    /// a callback is back at its place, nothing to play).
    Requeued { call: CallKey },
    /// Tell the caller their place. `position` counts the callers ahead (0 = next); each field is
    /// `None` when the queue does not announce it (or, for the wait, no agent is serving).
    Announce {
        call: CallKey,
        position: Option<u32>,
        estimated_wait: Option<Duration>,
    },
    /// The caller leaves the queue; `node` is the queue's configured exit for `reason`.
    Exit {
        call: CallKey,
        reason: ExitReason,
        node: Option<String>,
    },
    /// The caller hung up in queue after `waited` (from the original enqueue when resumed).
    Abandoned {
        call: CallKey,
        queue: QueueName,
        waited: Duration,
    },
    /// Every agent state change.
    AgentState { agent: AgentId, state: AgentState },
    /// The agent was paused by the ACD: "no-answer" after too many misses, or "unreachable".
    AgentAutoPaused { agent: AgentId, reason: String },
    /// A direct offer ([`Input::Direct`]) did not connect: `reason` is `None` when the agent was
    /// not ready (its state says why), else how the offer failed.
    DirectFailed {
        call: CallKey,
        agent: AgentId,
        state: AgentState,
        reason: Option<OfferFailure>,
    },
}

/// Errors for inputs that do not match the ACD's state; the input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("call {0:?} is not waiting in any queue")]
    UnknownCall(CallKey),
    #[error("call {0:?} is already queued")]
    DuplicateCall(CallKey),
    /// E.g. an answer that arrived after the ring timed out: hang up the agent leg.
    #[error("call {call:?} is not being offered to agent {agent:?}")]
    NoSuchOffer { call: CallKey, agent: String },
    #[error("agent {agent:?} is not on call {call:?}")]
    NotOnCall { call: CallKey, agent: String },
    #[error("agent {0:?} is not logged in")]
    NotLoggedIn(String),
    #[error("agent {0:?} is not in wrap-up")]
    NotInWrapUp(String),
}

/// Configuration problems found by [`crate::Acd::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("queue {0:?} is defined twice")]
    DuplicateQueue(String),
    #[error("agent {0:?} is defined twice")]
    DuplicateAgent(String),
    #[error("agent {agent:?} lists queue {queue:?}, which is not defined under queues:")]
    UnknownQueue { agent: String, queue: String },
    #[error("queue {0:?}: ring_timeout must be more than 0")]
    ZeroRingTimeout(String),
    #[error("queue {queue:?}: callback.{field} {reason}")]
    Callback {
        queue: String,
        field: &'static str,
        reason: &'static str,
    },
}

/// Point-in-time copy of the ACD's state for the CTI layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub queues: Vec<QueueSnapshot>,
    pub agents: Vec<AgentSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub name: QueueName,
    /// Callers in line, callbacks included (not counting those being offered to an agent).
    pub waiting: usize,
    /// Callbacks among `waiting`.
    pub callbacks_waiting: usize,
    /// Callers whose call is ringing an agent.
    pub offering: usize,
    /// Longest time in queue among its callers (callbacks from their original time).
    pub longest_wait: Option<Duration>,
    /// Estimated wait for a caller joining now (behind every callback in line); `None` when no
    /// agent serves the queue.
    pub estimated_wait: Option<Duration>,
    /// The handle time (talk + wrap-up) used for estimates.
    pub handle_time: Duration,
    pub agents_logged_in: usize,
    pub agents_ready: usize,
    /// In line order; offered callers last, with no position.
    pub callers: Vec<CallerSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallerSnapshot {
    pub call: CallKey,
    pub caller: String,
    pub priority: u8,
    pub kind: CallerKind,
    /// Callers ahead, callbacks included (0 = next); `None` while being offered to an agent.
    pub position: Option<u32>,
    /// From the original enqueue time.
    pub waited: Duration,
}

/// Whether a queued entry is a caller on the line or a callback request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Live,
    Callback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    pub id: AgentId,
    pub name: String,
    pub state: AgentState,
    pub in_state: Duration,
    /// The call offered to or connected with the agent (ring-all: one agent per call here).
    pub current_call: Option<CallKey>,
    pub calls_handled: u64,
    /// Consecutive missed offers.
    pub missed: u32,
    /// Queues the agent is logged in to (configured queues while logged out).
    pub queues: Vec<QueueName>,
}
