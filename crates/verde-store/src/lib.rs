//! Storage for verde.
//!
//! The [`Store`] trait (call records), the [`TaskStore`] trait (the call-me-back basket and
//! voicemail tasks) and the [`DialogJournal`] are the only way the engine reads or writes
//! durable data. Two implementations: [`SqliteStore`], embedded, for one node; [`PgStore`],
//! a PostgreSQL database shared by several nodes. No trait names a backend type, and times
//! cross them as unix milliseconds. This crate knows nothing of SIP, media, the IVR or the ACD:
//! it stores plain records the engine hands it, and never reads a clock.
//!
//! # Several nodes
//!
//! On [`PgStore`] each node writes under its own name: the callbacks it books are its to dial
//! ([`TaskStore::own_pending_callbacks`]) and to recover after a restart, its dialog journal is
//! its own, and it beats ([`TaskStore::heartbeat`]) so that a node silent for too long loses
//! its basket to the living ([`TaskStore::adopt_orphans`]). Claims that two nodes may race for
//! (starting an attempt, taking a voicemail, adopting) lock their rows, so one wins and the
//! other is told. On SQLite these have their single-node meaning. The behaviour both must show
//! is one suite of cases, `conformance` (feature `conformance`), run here on SQLite and by
//! the interop tests on a private PostgreSQL.
//!
//! # Durability
//!
//! Every write method commits before it returns: when `upsert_callback` returns `Ok`, the
//! request survives a crash of the process, so the engine may then play the confirmation.
//!
//! SQLite runs in WAL mode. With the default [`Durability::Normal`] (`synchronous=NORMAL`) a
//! commit appends its frames to the WAL file with `write()` but does not `fsync` it: the frames
//! sit in the operating system's page cache, which belongs to the kernel, not to the process, so
//! a `kill -9` or a panic loses nothing that was committed (the next open replays the WAL). Only
//! a power loss or kernel crash may lose the last transactions (never corrupt the file). Where
//! that matters, [`Durability::Full`] (`synchronous=FULL`, via [`SqliteStore::open_with`])
//! fsyncs the WAL at every commit, at the price of one disk flush per write.
//!
//! # Schema
//!
//! On PostgreSQL: numbered steps recorded in `schema_migrations`, all pending ones applied in
//! one transaction under an advisory lock (see `postgres/migrations.rs`). On SQLite: the
//! database carries a `schema_version` table and is upgraded on open by an ordered list of
//! migration steps, each in its own transaction with its version bump (1: call records; 2:
//! callbacks and their attempts; 3: voicemails; 4: the queue log, call start times as unix
//! milliseconds for period queries, and period indexes on callbacks and voicemails; 5: the
//! journal of active dialogs, [`DialogJournal`]). A database written by a newer verde is
//! refused rather than guessed at.
//!
//! # Raw events for KPIs
//!
//! Every figure of the contact center can be recomputed from what is stored: call records
//! (with their ACD section, survey and recordings), the queue log (one line per ACD event, in
//! the manner of Asterisk's `queue_log`), callbacks with their attempts and voicemails, each
//! selectable by a half-open period of unix milliseconds.

#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod conformance;
mod dialogs;
mod postgres;
mod sqlite;
mod tasks;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use dialogs::{ActiveDialog, DialogChange, DialogJournal};
pub use postgres::{redact_conninfo, PgStore};
pub use sqlite::{Durability, SqliteStore};
pub use tasks::{
    Attempt, AttemptOutcome, CallbackOutcome, CallbackRequest, CallbackState, NewCallback,
    NewVoicemail, Task, TimeBand, Voicemail, VoicemailFilter, VoicemailState, VoicemailStatus,
};

/// The error of the database behind the store, kept opaque so that the traits do not depend on
/// one backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the store; the message names the database file where it helps.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: BackendError,
    },
    #[error(
        "store {path}: the database has schema version {found} but this verde knows only up to \
         {known}; run the verde version that wrote it, or restore a backup"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("store: {0}")]
    Backend(#[source] BackendError),
    #[error("store: bad record data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("store: no {kind} with id {id}")]
    NotFound { kind: &'static str, id: i64 },
    /// The task is not in a state that allows the operation (e.g. finishing an attempt that was
    /// never started, taking a voicemail another agent holds).
    #[error("store: {kind} {id} is {state}, cannot {action}")]
    InvalidState {
        kind: &'static str,
        id: i64,
        state: String,
        action: &'static str,
    },
}

impl StoreError {
    /// Whether writing the same data again later may succeed: the database is full,
    /// unreachable, busy, read-only for now or failing I/O. False when the data itself is
    /// refused (a constraint, a value too big or of the wrong type, a record that cannot be
    /// serialized) or the request makes no sense (no such task, wrong state), so that a writer
    /// that retries does not retry one bad record forever and hold up the ones behind it.
    ///
    /// A backend error this crate does not recognise counts as transient: keeping data and
    /// retrying costs a delay, while giving up on it would lose it.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Open { .. } => true,
            StoreError::Backend(e) => {
                if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
                    sqlite::is_transient(e)
                } else if let Some(e) = e.downcast_ref::<postgres::PgError>() {
                    postgres::is_transient(&e.0)
                } else {
                    true
                }
            }
            StoreError::SchemaTooNew { .. }
            | StoreError::Data(_)
            | StoreError::NotFound { .. }
            | StoreError::InvalidState { .. } => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        StoreError::Backend(Box::new(postgres::PgError(e)))
    }
}

/// The migration steps a database at schema version `found` still needs, in order, each with
/// the version it brings the database to. One written by a verde that knows more steps than
/// `steps` is refused rather than guessed at.
pub(crate) fn pending_steps<'a>(
    steps: &'a [&'a str],
    found: i64,
    path: &str,
) -> Result<impl Iterator<Item = (i64, &'a str)>, StoreError> {
    let known = steps.len() as i64;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_string(),
            found,
            known,
        });
    }
    Ok(steps
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
        .map(|(i, step)| (i as i64 + 1, *step)))
}

/// `started_at` as unix milliseconds, or `None` (with a warning) when it is not RFC 3339: the
/// record is still stored, only outside every period.
pub(crate) fn started_ms(record: &CallRecord) -> Option<i64> {
    match chrono::DateTime::parse_from_rfc3339(&record.started_at) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(e) => {
            tracing::warn!(call_id = %record.call_id, started_at = %record.started_at, error = %e,
                "call record start is not RFC 3339; stored outside every period");
            None
        }
    }
}

/// One call as the engine saw it, written once when the call ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    /// Caller number (ANI) as received from the trunk.
    pub caller: String,
    /// Called number (DID).
    pub did: String,
    /// Trunk name the call arrived on.
    pub trunk: String,
    /// Channel: `pstn` for SIP trunks (later `webrtc`).
    pub channel: String,
    /// RFC 3339 instants.
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: String,
    /// answered-agent, abandoned-ivr, abandoned-queue, callback-requested, voicemail,
    /// out-of-hours, completed-ivr, transferred, rejected, cancelled, queue-unavailable, ...
    pub disposition: String,
    /// `caller`, `engine`, `timeout`, `agent` or `number` (an outside number the call was
    /// transferred to).
    pub hangup_by: String,
    /// The final SIP status when the call was refused or failed (e.g. 488), else None.
    pub sip_status: Option<u16>,
    pub language: Option<String>,
    /// IVR nodes visited, in order.
    pub path: Vec<String>,
    pub variables: BTreeMap<String, String>,
    /// Menu choices as `node=digit`.
    pub choices: Vec<String>,
    /// Every digit received, in order, whatever its source.
    pub dtmf: String,
    /// The IVR's last word on the call (e.g. `queue:pensions`, `hangup:closed`).
    pub outcome: Option<String>,
    /// What happened in the ACD; absent for calls that never reached a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acd: Option<AcdRecord>,
    /// Post-call survey answers (1-6), in question order; empty when no survey was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub survey: Vec<SurveyAnswer>,
    /// Recordings of the conversation (stereo WAV, caller left, agent right).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<RecordingRef>,
}

/// The caller's path through the ACD: queues, offers, the agents who talked, transfers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AcdRecord {
    /// The first queue entered (KPIs per queue count the call there).
    pub queue: String,
    /// RFC 3339: when the caller first entered a queue.
    pub queued_at: String,
    /// Every offer to an agent, in order.
    #[serde(default)]
    pub offers: Vec<OfferRecord>,
    /// One per agent who talked with the caller, in order (a transfer adds a leg).
    #[serde(default)]
    pub legs: Vec<LegRecord>,
    #[serde(default)]
    pub transfers: Vec<TransferRecord>,
    /// Time from entering the queue to an agent's answer (or to leaving the queue), ms.
    pub queue_wait_ms: Option<u64>,
    /// Total time the caller spent on hold with an agent, ms.
    #[serde(default)]
    pub hold_ms: u64,
    /// Why the caller left the queue without an agent: `abandon`, `timeout`, `full`, `empty`,
    /// `key`, `callback`.
    pub exit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfferRecord {
    pub agent: String,
    pub queue: String,
    /// RFC 3339.
    pub at: String,
    /// `answered`, `no-answer`, `busy`, `declined`, `unreachable`, `withdrawn`, `caller-hangup`.
    pub outcome: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegRecord {
    pub agent: String,
    pub queue: String,
    /// RFC 3339: the agent answered.
    pub answered_at: String,
    /// RFC 3339: the agent's part ended (hang-up or transfer).
    pub ended_at: String,
    #[serde(default)]
    pub hold_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The agent (or supervisor) who transferred.
    pub by: String,
    /// `queue:NAME`, `agent:ID` or `number:E164`.
    pub to: String,
    /// `blind` or `attended`.
    pub kind: String,
    /// RFC 3339.
    pub at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurveyAnswer {
    /// The question's id in the flow.
    pub question: String,
    /// 1..=6.
    pub score: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// Path of the WAV file, relative to the recordings directory.
    pub file: String,
    /// RFC 3339.
    pub started_at: String,
    pub stopped_at: String,
}

/// One line of the queue log, in the manner of Asterisk's `queue_log`: raw events from which
/// every ACD figure can be recomputed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The caller's Call-ID, or empty for agent events.
    pub call_id: String,
    /// Empty for agent events that concern no one queue.
    pub queue: String,
    /// Empty when no agent is involved.
    pub agent: String,
    pub kind: QueueEventKind,
    /// Event-specific data (as Asterisk's data1..data5): e.g. the wait in ms, the position,
    /// the pause reason, the transfer target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueEventKind {
    /// Caller entered the queue. data: [caller number]
    #[default]
    Enter,
    /// Offered to an agent. data: []
    Offer,
    /// The agent did not take it. data: [reason: no-answer, busy, declined, unreachable]
    RingNoAnswer,
    /// The agent answered. data: [wait ms since entering the queue]
    Connect,
    /// The caller hung up while waiting. data: [wait ms]
    Abandon,
    /// The caller left without an agent. data: [reason (timeout/full/empty/key/callback), wait ms]
    Exit,
    /// The talk ended. data: [who hung up: caller, agent, engine, number, timeout]
    Complete,
    /// The agent transferred the caller. data: [target (queue:Q, agent:A, number:N), blind or
    /// attended]
    Transfer,
    AgentLogin,
    /// data: [reason]
    AgentPause,
    AgentUnpause,
    AgentLogout,
    /// Audit: a supervisor joined or left the call. data: [supervisor, listen/whisper/barge/leave]
    Supervise,
    /// Audit: a supervisor moved a waiting caller. data: [supervisor, from queue, to queue]
    MoveCaller,
    /// Audit: a supervisor forced an agent's state. data: [supervisor, pause:<reason> or logout]
    ForceState,
}

impl QueueEventKind {
    /// Every kind, in declaration order, for the tests that must cover each one. A kind added
    /// to the enum goes here too: the test of this list catches one inserted anywhere but last.
    #[cfg(any(test, feature = "conformance"))]
    pub(crate) const ALL: [QueueEventKind; 15] = [
        QueueEventKind::Enter,
        QueueEventKind::Offer,
        QueueEventKind::RingNoAnswer,
        QueueEventKind::Connect,
        QueueEventKind::Abandon,
        QueueEventKind::Exit,
        QueueEventKind::Complete,
        QueueEventKind::Transfer,
        QueueEventKind::AgentLogin,
        QueueEventKind::AgentPause,
        QueueEventKind::AgentUnpause,
        QueueEventKind::AgentLogout,
        QueueEventKind::Supervise,
        QueueEventKind::MoveCaller,
        QueueEventKind::ForceState,
    ];

    /// The name stored in the queue log, the same as its serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueEventKind::Enter => "enter",
            QueueEventKind::Offer => "offer",
            QueueEventKind::RingNoAnswer => "ring_no_answer",
            QueueEventKind::Connect => "connect",
            QueueEventKind::Abandon => "abandon",
            QueueEventKind::Exit => "exit",
            QueueEventKind::Complete => "complete",
            QueueEventKind::Transfer => "transfer",
            QueueEventKind::AgentLogin => "agent_login",
            QueueEventKind::AgentPause => "agent_pause",
            QueueEventKind::AgentUnpause => "agent_unpause",
            QueueEventKind::AgentLogout => "agent_logout",
            QueueEventKind::Supervise => "supervise",
            QueueEventKind::MoveCaller => "move_caller",
            QueueEventKind::ForceState => "force_state",
        }
    }
}

/// The engine's durable storage: call records and the queue log.
///
/// Periods are half-open ranges of unix milliseconds, `[from_ms, to_ms)`, so that consecutive
/// periods (hours, days) count every call and event exactly once.
pub trait Store: Send + Sync {
    fn record_call(&self, record: &CallRecord) -> Result<(), StoreError> {
        self.record_calls(std::slice::from_ref(record))
    }
    /// Writes several records atomically: all of them or none. A record already stored under
    /// the same `call_id` is replaced.
    fn record_calls(&self, records: &[CallRecord]) -> Result<(), StoreError> {
        self.record_batch(records, &[])
    }
    /// Appends queue-log lines atomically, in the order given.
    fn append_queue_events(&self, events: &[QueueEvent]) -> Result<(), StoreError> {
        self.record_batch(&[], events)
    }
    /// Writes call records and queue-log lines in one transaction: all of them or none, with
    /// one commit for the whole batch (the record writer hands over whatever has queued up).
    fn record_batch(&self, records: &[CallRecord], events: &[QueueEvent])
        -> Result<(), StoreError>;
    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Most recent first.
    fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError>;
    /// Calls whose `started_at` falls in `[from_ms, to_ms)`, earliest start first (ties in the
    /// order they were first stored). A record whose `started_at` is not RFC 3339 is never in
    /// a period.
    fn calls_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<CallRecord>, StoreError>;
    /// Queue-log lines with `at_ms` in `[from_ms, to_ms)`, by `at_ms`, then in the order they
    /// were appended.
    fn queue_events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<QueueEvent>, StoreError>;
}

/// Durable tasks: the call-me-back basket and voicemails.
///
/// Kept apart from [`Store`] so that the call-record path and its test doubles need not know
/// about tasks; a backend implements both (see [`SqliteStore`]).
///
/// Every method that writes commits before it returns. Methods that change a task's state check
/// the state they start from inside the same transaction, so two dialers or two agents racing
/// for one task get one success and one [`StoreError::InvalidState`], never a duplicate.
pub trait TaskStore: Send + Sync {
    /// Puts a callback request in the basket, or updates the one already there.
    ///
    /// The same `(queue, number)` is never active (pending or dialing) twice: when one is, the
    /// request UPDATES it — its `band`, `not_before_ms`, `deadline_ms` and `variables` take the
    /// new values — and keeps its original `requested_at_ms` (the caller's place in line), its
    /// attempts, `max_attempts`, `caller_call_id` and `did`. Returns the id and whether a new
    /// request was created. A finished (done) request for the same number does not count: a
    /// new one is created.
    fn upsert_callback(&self, req: &NewCallback) -> Result<(i64, bool), StoreError>;
    /// Any callback, finished ones included.
    fn callback(&self, id: i64) -> Result<Option<CallbackRequest>, StoreError>;
    /// The active (pending or dialing) request for this number in this queue.
    fn find_pending(
        &self,
        queue: &str,
        number: &str,
    ) -> Result<Option<CallbackRequest>, StoreError>;
    /// Every active (pending or dialing) callback, oldest `requested_at_ms` first (ties by id).
    fn pending_callbacks(&self) -> Result<Vec<CallbackRequest>, StoreError>;
    /// Active (pending or dialing) callbacks of one queue, for the basket ceiling.
    fn count_pending(&self, queue: &str) -> Result<usize, StoreError>;
    /// Pending -> Dialing: records the start of an attempt and returns its number (1 for the
    /// first attempt that counts). Committed before it returns, so that after a crash the
    /// attempt in progress is visible to [`TaskStore::recover_after_crash`]. In a shared store
    /// only the node that owns the callback (booked or adopted it) may start one.
    fn start_attempt(&self, id: i64, at_ms: i64, agent: Option<&str>) -> Result<u32, StoreError>;
    /// Dialing -> Pending or Done: records the outcome of the attempt in progress.
    ///
    /// `Answered` ends the callback (outcome answered). `Interrupted` does not count against
    /// `max_attempts` and puts the callback back to pending (not before `next_not_before_ms`
    /// when given). Any other outcome: pending again, not before `next_not_before_ms`, when that
    /// is given and attempts remain; otherwise done, outcome not-reached.
    fn finish_attempt(
        &self,
        id: i64,
        at_ms: i64,
        outcome: AttemptOutcome,
        next_not_before_ms: Option<i64>,
    ) -> Result<CallbackRequest, StoreError>;
    /// Pending -> Done with outcome cancelled (the caller withdrew the request). A callback
    /// being dialed cannot be cancelled: finish its attempt first.
    fn cancel_callback(&self, id: i64, at_ms: i64) -> Result<CallbackRequest, StoreError>;
    /// To be called once at start-up, before dialing: every callback left dialing by a crash gets
    /// its attempt finished as `Interrupted` and goes back to pending, without counting against
    /// `max_attempts` — the customer may never have been reached, and a request must not be
    /// lost to a crash. Its place in line (`requested_at_ms`) and `not_before_ms` are unchanged.
    /// Returns the callbacks it recovered; a second call finds none.
    fn recover_after_crash(&self, at_ms: i64) -> Result<Vec<CallbackRequest>, StoreError>;

    /// The active (pending or dialing) callbacks this node dials, in line order: every active
    /// one in a store of one node; in a shared store, those this node booked or adopted.
    fn own_pending_callbacks(&self) -> Result<Vec<CallbackRequest>, StoreError> {
        self.pending_callbacks()
    }
    /// Tells the other nodes of a shared store that `node` is alive at `now_ms` (unix ms, this
    /// node's clock; the nodes' clocks must agree to well within `dead_after_ms`). A store of
    /// one node has no one to tell.
    fn heartbeat(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        let _ = (node, now_ms);
        Ok(())
    }
    /// Moves to `node` the active callbacks of every other node not seen for longer than
    /// `dead_after_ms` at `now_ms` (or never seen), and returns them, so that a dead node's
    /// basket is dialed by the living. A callback the dead node was dialing gets its attempt
    /// finished as `Interrupted` and goes back to pending, as [`TaskStore::recover_after_crash`]
    /// does. Two nodes adopting at once never take the same callback. A store of one node has
    /// no orphans.
    fn adopt_orphans(
        &self,
        node: &str,
        now_ms: i64,
        dead_after_ms: i64,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        let _ = (node, now_ms, dead_after_ms);
        Ok(Vec::new())
    }

    /// Stores a new voicemail task. Idempotent per `(call_id, mailbox)`: storing the same
    /// message again returns the existing id and `false`.
    fn insert_voicemail(&self, vm: &NewVoicemail) -> Result<(i64, bool), StoreError>;
    fn voicemail(&self, id: i64) -> Result<Option<Voicemail>, StoreError>;
    /// The agent takes in charge the new voicemail with the earliest deadline among
    /// `mailboxes` (ties: oldest recording, then id); `None` when there is none.
    fn take_next_voicemail(
        &self,
        mailboxes: &[String],
        agent: &str,
        at_ms: i64,
    ) -> Result<Option<Voicemail>, StoreError>;
    /// New -> Taken by `agent`. Taking again one's own voicemail is a no-op.
    fn take_voicemail(&self, id: i64, agent: &str, at_ms: i64) -> Result<Voicemail, StoreError>;
    /// Taken -> New, when the agent gives it back (logout, wrong skill). Only the holder can.
    fn release_voicemail(&self, id: i64, agent: &str) -> Result<Voicemail, StoreError>;
    /// New or Taken (by this agent) -> Closed with the agent's outcome.
    fn close_voicemail(
        &self,
        id: i64,
        agent: &str,
        at_ms: i64,
        outcome: &str,
    ) -> Result<Voicemail, StoreError>;
    fn voicemails(&self, filter: &VoicemailFilter) -> Result<Vec<Voicemail>, StoreError>;
    /// Tasks past their SLA deadline at `now_ms`, earliest deadline first: pending callbacks
    /// (not the one being dialed right now: it is being made) and voicemails nobody has taken
    /// in charge yet (the SLA is on taking in charge, so a taken one is no longer late).
    fn late_tasks(&self, now_ms: i64) -> Result<Vec<Task>, StoreError>;

    /// Callbacks whose `requested_at_ms` falls in `[from_ms, to_ms)`, in any state, each with
    /// its attempts, in line order (oldest request first, ties by id). `requested_at_ms` is the
    /// caller's place in line (when they entered the queue), which a repeated request keeps.
    fn callbacks_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<CallbackRequest>, StoreError>;
    /// Voicemails recorded in `[from_ms, to_ms)`, in any state, oldest recording first (ties
    /// by id).
    fn voicemails_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Voicemail>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_event_kind_once_in_declaration_order() {
        for (i, kind) in QueueEventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
        assert_eq!(
            QueueEventKind::ALL.last(),
            Some(&QueueEventKind::ForceState)
        );
    }

    #[test]
    fn event_kind_names_are_their_serde_form() {
        for kind in QueueEventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().to_string())
            );
        }
    }
}
