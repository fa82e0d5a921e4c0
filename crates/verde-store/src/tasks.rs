//! Plain records for the durable tasks: callback requests (the call-me-back basket) and
//! voicemails. Times are unix milliseconds (`i64`) so that ordering is integer comparison in any
//! backend; the engine converts from its wall clock and computes deadlines in working hours
//! itself — the store only compares them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A time band chosen by the caller, in minutes of the day (`0..=1440`), local to the flow's
/// schedule. The store keeps it; the engine interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBand {
    pub start_minute: u16,
    pub end_minute: u16,
}

/// What the caller asked for, as the engine hands it to [`crate::TaskStore::upsert_callback`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCallback {
    pub queue: String,
    /// The number to call back (confirmed or typed by the caller).
    pub number: String,
    /// Call-ID of the call in which the request was made.
    pub caller_call_id: String,
    pub did: String,
    /// When the caller entered the queue: the callback keeps this place in line.
    pub requested_at_ms: i64,
    pub band: Option<TimeBand>,
    /// Do not dial before this instant (start of the band, next opening, retry delay).
    pub not_before_ms: i64,
    /// SLA deadline, already computed in working hours by the engine.
    pub deadline_ms: i64,
    pub max_attempts: u32,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackState {
    /// Waiting in the basket (possibly for `not_before_ms`).
    Pending,
    /// An attempt has started and has not finished.
    Dialing,
    /// Finished; see the outcome.
    Done,
}

/// The final word on a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackOutcome {
    Answered,
    /// Every allowed attempt failed, or the engine gave up retrying.
    NotReached,
    Cancelled,
}

/// The result of one dialing attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    WrongNumber,
    /// The attempt was cut short by verde itself (crash, shutdown): it does not count against
    /// `max_attempts`, because the customer may never have been reached.
    Interrupted,
}

/// One dialing attempt. `outcome` is `None` while the attempt is in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at_ms: i64,
    pub agent: Option<String>,
    pub finished_at_ms: Option<i64>,
    pub outcome: Option<AttemptOutcome>,
}

/// A callback as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackRequest {
    pub id: i64,
    pub queue: String,
    pub number: String,
    pub caller_call_id: String,
    pub did: String,
    pub requested_at_ms: i64,
    pub band: Option<TimeBand>,
    pub not_before_ms: i64,
    pub deadline_ms: i64,
    /// Attempts that count against `max_attempts` (interrupted ones do not), including one in
    /// progress.
    pub attempts: u32,
    pub max_attempts: u32,
    pub state: CallbackState,
    pub outcome: Option<CallbackOutcome>,
    pub done_at_ms: Option<i64>,
    /// Every attempt, interrupted ones included, oldest first.
    pub attempt_log: Vec<Attempt>,
    pub variables: BTreeMap<String, String>,
}

/// A recorded message as the engine hands it to [`crate::TaskStore::insert_voicemail`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVoicemail {
    pub mailbox: String,
    pub caller: String,
    pub did: String,
    pub call_id: String,
    pub recorded_at_ms: i64,
    pub duration_ms: u64,
    pub wav_path: String,
    pub variables: BTreeMap<String, String>,
    /// SLA deadline for taking the message in charge, computed by the engine.
    pub deadline_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum VoicemailState {
    New,
    Taken {
        agent: String,
        at_ms: i64,
    },
    Closed {
        agent: String,
        /// When it was taken in charge (equal to `at_ms` when closed without being taken first).
        taken_at_ms: i64,
        at_ms: i64,
        outcome: String,
    },
}

/// The state without its data, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoicemailStatus {
    New,
    Taken,
    Closed,
}

impl VoicemailState {
    pub fn status(&self) -> VoicemailStatus {
        match self {
            VoicemailState::New => VoicemailStatus::New,
            VoicemailState::Taken { .. } => VoicemailStatus::Taken,
            VoicemailState::Closed { .. } => VoicemailStatus::Closed,
        }
    }
}

/// A voicemail as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voicemail {
    pub id: i64,
    pub mailbox: String,
    pub caller: String,
    pub did: String,
    pub call_id: String,
    pub recorded_at_ms: i64,
    pub duration_ms: u64,
    pub wav_path: String,
    pub variables: BTreeMap<String, String>,
    pub deadline_ms: i64,
    pub state: VoicemailState,
}

/// Which voicemails [`crate::TaskStore::voicemails`] lists; the default lists all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoicemailFilter {
    pub mailbox: Option<String>,
    pub status: Option<VoicemailStatus>,
    /// At most this many, oldest recording first.
    pub limit: Option<usize>,
}

/// A task past its SLA deadline, as listed by [`crate::TaskStore::late_tasks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    Callback(CallbackRequest),
    Voicemail(Voicemail),
}

impl Task {
    pub fn deadline_ms(&self) -> i64 {
        match self {
            Task::Callback(c) => c.deadline_ms,
            Task::Voicemail(v) => v.deadline_ms,
        }
    }
}

impl CallbackState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Dialing => "dialing",
            CallbackState::Done => "done",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Dialing, Self::Done]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl CallbackOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Answered => "answered",
            CallbackOutcome::NotReached => "not-reached",
            CallbackOutcome::Cancelled => "cancelled",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Answered, Self::NotReached, Self::Cancelled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Answered => "answered",
            AttemptOutcome::NoAnswer => "no-answer",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::WrongNumber => "wrong-number",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Answered,
            Self::NoAnswer,
            Self::Busy,
            Self::Failed,
            Self::WrongNumber,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl VoicemailStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VoicemailStatus::New => "new",
            VoicemailStatus::Taken => "taken",
            VoicemailStatus::Closed => "closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_match_serde() {
        for o in [
            AttemptOutcome::Answered,
            AttemptOutcome::NoAnswer,
            AttemptOutcome::Busy,
            AttemptOutcome::Failed,
            AttemptOutcome::WrongNumber,
            AttemptOutcome::Interrupted,
        ] {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        for o in [
            CallbackOutcome::Answered,
            CallbackOutcome::NotReached,
            CallbackOutcome::Cancelled,
        ] {
            assert_eq!(CallbackOutcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        for s in [
            CallbackState::Pending,
            CallbackState::Dialing,
            CallbackState::Done,
        ] {
            assert_eq!(CallbackState::parse(s.as_str()), Some(s));
        }
        assert_eq!(AttemptOutcome::parse("nope"), None);
    }
}
