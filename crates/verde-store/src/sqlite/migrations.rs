//! Schema versions. Step N brings a database from version N-1 to N; steps are never edited once
//! released, only appended, because databases in the field sit at every version.
//!
//! Databases written before versions were tracked hold only the `calls` table and no
//! `schema_version`: they count as version 0, and step 1 is written with `IF NOT EXISTS` so that
//! it adopts their table as it is.

use crate::{pending_steps, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: call records.
    "CREATE TABLE IF NOT EXISTS calls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL UNIQUE,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        did TEXT NOT NULL,
        disposition TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);",
    // 2: the call-me-back basket. The partial unique index is the dedup rule itself: one active
    // request per (queue, number), whoever writes.
    "CREATE TABLE callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        number TEXT NOT NULL,
        caller_call_id TEXT NOT NULL,
        did TEXT NOT NULL,
        requested_at_ms INTEGER NOT NULL,
        band_start INTEGER,
        band_end INTEGER,
        not_before_ms INTEGER NOT NULL,
        deadline_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'dialing', 'done')),
        outcome TEXT,
        done_at_ms INTEGER,
        variables TEXT NOT NULL
    );
    CREATE UNIQUE INDEX callbacks_active ON callbacks(queue, number) WHERE state <> 'done';
    CREATE INDEX callbacks_line ON callbacks(state, requested_at_ms);
    CREATE TABLE callback_attempts (
        callback_id INTEGER NOT NULL REFERENCES callbacks(id),
        seq INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        agent TEXT,
        finished_at_ms INTEGER,
        outcome TEXT,
        PRIMARY KEY (callback_id, seq)
    );",
    // 3: voicemail tasks. (call_id, mailbox) makes a retried insert harmless.
    "CREATE TABLE voicemails (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox TEXT NOT NULL,
        caller TEXT NOT NULL,
        did TEXT NOT NULL,
        call_id TEXT NOT NULL,
        recorded_at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        wav_path TEXT NOT NULL,
        variables TEXT NOT NULL,
        deadline_ms INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('new', 'taken', 'closed')),
        agent TEXT,
        taken_at_ms INTEGER,
        closed_at_ms INTEGER,
        outcome TEXT,
        UNIQUE (call_id, mailbox)
    );
    CREATE INDEX voicemails_open ON voicemails(state, deadline_ms);",
    // 4: raw events for KPIs. `started_ms` lets calls be selected by period whatever offset
    // their RFC 3339 `started_at` carries (text order is wrong across offsets, so the old
    // text index goes); rows from before are backfilled by SQLite's own parser, and one it
    // cannot read stays NULL, outside every period. The queue log keeps insertion order in
    // `id` (AUTOINCREMENT never reuses one) for lines of the same millisecond; `data` is a
    // JSON array of strings, declared TEXT so that no type affinity touches it.
    "ALTER TABLE calls ADD COLUMN started_ms INTEGER;
    UPDATE calls SET started_ms = CAST(round(unixepoch(started_at, 'subsec') * 1000) AS INTEGER);
    DROP INDEX IF EXISTS calls_started;
    CREATE INDEX calls_started_ms ON calls(started_ms);
    CREATE TABLE queue_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX queue_log_at ON queue_log(at_ms);
    CREATE INDEX callbacks_requested ON callbacks(requested_at_ms);
    CREATE INDEX voicemails_recorded ON voicemails(recorded_at_ms);",
    // 5: the journal of active dialogs, one row per answered side of a call in progress.
    // `route_set` is a JSON array of strings. Rows live for the length of a call, so the table
    // stays as small as the number of calls up.
    "CREATE TABLE active_dialogs (
        sip_call_id TEXT PRIMARY KEY,
        call_id TEXT NOT NULL,
        leg TEXT NOT NULL,
        local_tag TEXT NOT NULL,
        remote_tag TEXT NOT NULL,
        local_uri TEXT NOT NULL,
        remote_uri TEXT NOT NULL,
        remote_target TEXT NOT NULL,
        route_set TEXT NOT NULL,
        local_contact TEXT NOT NULL,
        via_transport TEXT NOT NULL,
        via_sent_by TEXT NOT NULL,
        local_cseq INTEGER NOT NULL,
        transport TEXT NOT NULL,
        peer TEXT NOT NULL,
        started_at TEXT NOT NULL,
        answered_at TEXT NOT NULL,
        did TEXT NOT NULL,
        caller TEXT NOT NULL,
        trunk TEXT NOT NULL,
        channel TEXT NOT NULL
    );
    CREATE INDEX active_dialogs_call ON active_dialogs(call_id);",
];

/// Brings the database to the latest version; returns that version.
pub(super) fn migrate(conn: &mut Connection, path: &str) -> Result<i64, StoreError> {
    migrate_to(conn, path, MIGRATIONS.len())
}

/// Applies steps up to `steps` only; tests build databases as older releases left them.
fn migrate_to(conn: &mut Connection, path: &str, steps: usize) -> Result<i64, StoreError> {
    let target = steps as i64;
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // the same file cannot both apply a step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let version: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        // One step per transaction: a step that fails leaves the ones before it applied.
        let Some((next, step)) = pending_steps(MIGRATIONS, version, path)?
            .next()
            .filter(|&(next, _)| next <= target)
        else {
            tx.commit()?;
            return Ok(version);
        };
        tx.execute_batch(step)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [next])?;
        tx.commit()?;
        tracing::info!(path, version = next, "store schema migrated");
    }
}

/// A database as release `steps` left it.
#[cfg(test)]
pub(super) fn migrate_only(conn: &mut Connection, steps: usize) -> Result<i64, StoreError> {
    migrate_to(conn, "test", steps)
}

#[cfg(test)]
pub(super) fn version(conn: &Connection) -> i64 {
    conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap()
}
