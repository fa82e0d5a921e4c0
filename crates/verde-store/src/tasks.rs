//! Plain records for the durable tasks: callback requests (the call-me-back basket) and
//! voicemails. Times are unix milliseconds (`i64`) so that ordering is integer comparison in any
//! backend; the engine converts from its wall clock and computes deadlines in working hours
//! itself — the store only compares them.

use crate::StoreError;
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

// What both backends make of the rows they read and the checks their transitions make: the
// SQL differs between them, the meaning of a row and the rules of a state change must not.

/// A value no verde writes: the database was edited by hand or by a newer verde.
pub(crate) fn bad_data(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unexpected {what} {value:?} in the database").into())
}

/// The one row a query by `id` found, or `NotFound`.
pub(crate) fn the_one<T>(rows: Vec<T>, kind: &'static str, id: i64) -> Result<T, StoreError> {
    rows.into_iter()
        .next()
        .ok_or(StoreError::NotFound { kind, id })
}

impl CallbackState {
    pub(crate) fn from_stored(s: &str) -> Result<Self, StoreError> {
        Self::parse(s).ok_or_else(|| bad_data("state", s))
    }
}

impl Attempt {
    pub(crate) fn from_stored(
        started_at_ms: i64,
        agent: Option<String>,
        finished_at_ms: Option<i64>,
        outcome: Option<String>,
    ) -> Result<Self, StoreError> {
        let outcome = outcome
            .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| bad_data("attempt outcome", &o)))
            .transpose()?;
        Ok(Attempt {
            started_at_ms,
            agent,
            finished_at_ms,
            outcome,
        })
    }
}

/// A `callbacks` row as a backend read it, before its text columns are checked.
pub(crate) struct CallbackRow {
    pub id: i64,
    pub queue: String,
    pub number: String,
    pub caller_call_id: String,
    pub did: String,
    pub requested_at_ms: i64,
    pub band: Option<(u16, u16)>,
    pub not_before_ms: i64,
    pub deadline_ms: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub state: String,
    pub outcome: Option<String>,
    pub done_at_ms: Option<i64>,
    pub variables: String,
}

impl CallbackRow {
    pub(crate) fn into_request(
        self,
        attempt_log: Vec<Attempt>,
    ) -> Result<CallbackRequest, StoreError> {
        let state = CallbackState::from_stored(&self.state)?;
        let outcome = self
            .outcome
            .map(|o| CallbackOutcome::parse(&o).ok_or_else(|| bad_data("outcome", &o)))
            .transpose()?;
        Ok(CallbackRequest {
            id: self.id,
            queue: self.queue,
            number: self.number,
            caller_call_id: self.caller_call_id,
            did: self.did,
            requested_at_ms: self.requested_at_ms,
            band: self.band.map(|(start_minute, end_minute)| TimeBand {
                start_minute,
                end_minute,
            }),
            not_before_ms: self.not_before_ms,
            deadline_ms: self.deadline_ms,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            state,
            outcome,
            done_at_ms: self.done_at_ms,
            attempt_log,
            variables: serde_json::from_str(&self.variables)?,
        })
    }
}

/// A `voicemails` row as a backend read it, before its state columns are checked.
pub(crate) struct VoicemailRow {
    pub id: i64,
    pub mailbox: String,
    pub caller: String,
    pub did: String,
    pub call_id: String,
    pub recorded_at_ms: i64,
    pub duration_ms: i64,
    pub wav_path: String,
    pub variables: String,
    pub deadline_ms: i64,
    pub state: String,
    pub agent: Option<String>,
    pub taken_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    pub outcome: Option<String>,
}

impl VoicemailRow {
    pub(crate) fn into_voicemail(self) -> Result<Voicemail, StoreError> {
        let broken = || bad_data("voicemail state", &self.state);
        let state = match self.state.as_str() {
            "new" => VoicemailState::New,
            "taken" => VoicemailState::Taken {
                agent: self.agent.clone().ok_or_else(broken)?,
                at_ms: self.taken_at_ms.ok_or_else(broken)?,
            },
            "closed" => VoicemailState::Closed {
                agent: self.agent.clone().ok_or_else(broken)?,
                taken_at_ms: self.taken_at_ms.ok_or_else(broken)?,
                at_ms: self.closed_at_ms.ok_or_else(broken)?,
                outcome: self.outcome.clone().ok_or_else(broken)?,
            },
            _ => return Err(broken()),
        };
        Ok(Voicemail {
            id: self.id,
            mailbox: self.mailbox,
            caller: self.caller,
            did: self.did,
            call_id: self.call_id,
            recorded_at_ms: self.recorded_at_ms,
            duration_ms: self.duration_ms as u64,
            wav_path: self.wav_path,
            variables: serde_json::from_str(&self.variables)?,
            deadline_ms: self.deadline_ms,
            state,
        })
    }
}

/// Refuses a callback transition that does not start from `expected`.
pub(crate) fn expect_callback_state(
    id: i64,
    state: CallbackState,
    expected: CallbackState,
    action: &'static str,
) -> Result<(), StoreError> {
    if state == expected {
        return Ok(());
    }
    Err(StoreError::InvalidState {
        kind: "callback",
        id,
        state: state.as_str().to_string(),
        action,
    })
}

pub(crate) fn check_attempts_left(id: i64, attempts: u32, max: u32) -> Result<(), StoreError> {
    if attempts < max {
        return Ok(());
    }
    Err(StoreError::InvalidState {
        kind: "callback",
        id,
        state: format!("out of attempts ({attempts} of {max})"),
        action: "start an attempt",
    })
}

/// Where a callback goes when its attempt ends (see [`crate::TaskStore::finish_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterAttempt {
    Done(CallbackOutcome),
    /// Pending again, the attempt given back; `not_before_ms` kept when `None`.
    Uncounted {
        not_before_ms: Option<i64>,
    },
    /// Pending again, the attempt counted.
    Retry {
        not_before_ms: i64,
    },
}

impl AfterAttempt {
    /// `attempts` counts the one that just ended.
    pub(crate) fn of(
        outcome: AttemptOutcome,
        attempts: u32,
        max_attempts: u32,
        next_not_before_ms: Option<i64>,
    ) -> Self {
        match outcome {
            AttemptOutcome::Answered => AfterAttempt::Done(CallbackOutcome::Answered),
            AttemptOutcome::Interrupted => AfterAttempt::Uncounted {
                not_before_ms: next_not_before_ms,
            },
            _ => match next_not_before_ms {
                Some(next) if attempts < max_attempts => AfterAttempt::Retry {
                    not_before_ms: next,
                },
                _ => AfterAttempt::Done(CallbackOutcome::NotReached),
            },
        }
    }
}

pub(crate) fn log_recovered(recovered: &[CallbackRequest]) {
    for c in recovered {
        tracing::warn!(
            id = c.id,
            queue = %c.queue,
            "callback attempt interrupted by a restart; back in the basket"
        );
    }
}

/// Late callbacks and voicemails as one list, earliest deadline first.
pub(crate) fn late_tasks(callbacks: Vec<CallbackRequest>, voicemails: Vec<Voicemail>) -> Vec<Task> {
    let mut late: Vec<Task> = callbacks.into_iter().map(Task::Callback).collect();
    late.extend(voicemails.into_iter().map(Task::Voicemail));
    late.sort_by_key(Task::deadline_ms);
    late
}

impl Voicemail {
    fn wrong_state(&self, action: &'static str) -> StoreError {
        let state = match &self.state {
            VoicemailState::New => "new".to_string(),
            VoicemailState::Taken { agent, .. } => format!("taken by {agent}"),
            VoicemailState::Closed { agent, .. } => format!("closed by {agent}"),
        };
        StoreError::InvalidState {
            kind: "voicemail",
            id: self.id,
            state,
            action,
        }
    }

    /// Whether `agent` taking it must be written: false when it is already theirs.
    pub(crate) fn check_take(&self, agent: &str) -> Result<bool, StoreError> {
        match &self.state {
            VoicemailState::New => Ok(true),
            VoicemailState::Taken { agent: holder, .. } if holder == agent => Ok(false),
            _ => Err(self.wrong_state("take it")),
        }
    }

    pub(crate) fn check_release(&self, agent: &str) -> Result<(), StoreError> {
        match &self.state {
            VoicemailState::Taken { agent: holder, .. } if holder == agent => Ok(()),
            _ => Err(self.wrong_state("release it")),
        }
    }

    /// When `agent` closing it at `at_ms` took it in charge.
    pub(crate) fn check_close(&self, agent: &str, at_ms: i64) -> Result<i64, StoreError> {
        match &self.state {
            VoicemailState::New => Ok(at_ms),
            VoicemailState::Taken {
                agent: holder,
                at_ms: taken,
            } if holder == agent => Ok(*taken),
            _ => Err(self.wrong_state("close it")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, agent: Option<&str>, taken: Option<i64>) -> VoicemailRow {
        VoicemailRow {
            id: 7,
            mailbox: "m".into(),
            caller: "061".into(),
            did: "803".into(),
            call_id: "c".into(),
            recorded_at_ms: 1,
            duration_ms: 2,
            wav_path: "x.wav".into(),
            variables: "{}".into(),
            deadline_ms: 3,
            state: state.into(),
            agent: agent.map(str::to_string),
            taken_at_ms: taken,
            closed_at_ms: None,
            outcome: None,
        }
    }

    #[test]
    fn a_voicemail_row_missing_what_its_state_needs_is_refused() {
        let taken = row("taken", Some("anna"), Some(5))
            .into_voicemail()
            .unwrap();
        assert!(
            !taken.check_take("anna").unwrap(),
            "already hers: nothing to write"
        );
        assert!(taken.check_take("bruno").is_err());
        assert_eq!(taken.check_close("anna", 9).unwrap(), 5);
        for broken in [
            row("taken", None, Some(5)),
            row("closed", Some("anna"), Some(5)),
            row("lost", None, None),
        ] {
            let err = broken.into_voicemail().unwrap_err();
            assert!(err.to_string().contains("voicemail state"), "{err}");
        }
    }

    #[test]
    fn only_counted_attempts_exhaust_a_callback() {
        use AttemptOutcome::*;
        assert_eq!(
            AfterAttempt::of(NoAnswer, 1, 2, Some(10)),
            AfterAttempt::Retry { not_before_ms: 10 }
        );
        assert_eq!(
            AfterAttempt::of(NoAnswer, 2, 2, Some(10)),
            AfterAttempt::Done(CallbackOutcome::NotReached)
        );
        assert_eq!(
            AfterAttempt::of(Interrupted, 2, 2, None),
            AfterAttempt::Uncounted {
                not_before_ms: None
            }
        );
        assert_eq!(
            AfterAttempt::of(Answered, 1, 2, Some(10)),
            AfterAttempt::Done(CallbackOutcome::Answered)
        );
    }

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
