//! Schema versions on PostgreSQL. Step N brings a database from version N-1 to N; steps are
//! never edited once released, only appended. The schema holds what SQLite's holds (same
//! tables, same columns, same indexes for the same queries), plus the node that wrote each
//! row where nodes matter: the owner of a callback, the node of a dialog journal entry, the
//! `nodes` heartbeats.
//!
//! Every pending step is applied in one transaction under a transaction-level advisory lock,
//! so that nodes starting together take turns and the second one finds the work done.

use crate::{pending_steps, StoreError};
use ::postgres::Client;

/// The advisory lock key of verde's migrations ("verde" in ASCII).
const LOCK_KEY: i64 = 0x0076_6572_6465;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's steps 1 to 5 built, as one step. Call records keep their JSON in
    // `record` (JSONB, so that ad-hoc SQL can look inside) with the columns the queries need;
    // `seq` keeps the order records were first stored. Callbacks and voicemails keep their
    // states' check constraints and the partial unique index that is the dedup rule.
    "CREATE TABLE calls (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        call_id TEXT NOT NULL UNIQUE,
        started_at TEXT NOT NULL,
        started_ms BIGINT,
        ended_at TEXT NOT NULL,
        did TEXT NOT NULL,
        disposition TEXT NOT NULL,
        node TEXT NOT NULL,
        record JSONB NOT NULL
    );
    CREATE INDEX calls_started_ms ON calls (started_ms);
    CREATE TABLE queue_log (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        call_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        data JSONB NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX queue_log_at ON queue_log (at_ms);
    CREATE TABLE callbacks (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue TEXT NOT NULL,
        number TEXT NOT NULL,
        caller_call_id TEXT NOT NULL,
        did TEXT NOT NULL,
        requested_at_ms BIGINT NOT NULL,
        band_start INTEGER,
        band_end INTEGER,
        not_before_ms BIGINT NOT NULL,
        deadline_ms BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'dialing', 'done')),
        outcome TEXT,
        done_at_ms BIGINT,
        variables JSONB NOT NULL,
        node TEXT NOT NULL
    );
    CREATE UNIQUE INDEX callbacks_active ON callbacks (queue, number) WHERE state <> 'done';
    CREATE INDEX callbacks_line ON callbacks (state, requested_at_ms);
    CREATE INDEX callbacks_requested ON callbacks (requested_at_ms);
    CREATE INDEX callbacks_owner ON callbacks (node) WHERE state <> 'done';
    CREATE TABLE callback_attempts (
        callback_id BIGINT NOT NULL REFERENCES callbacks (id),
        seq INTEGER NOT NULL,
        started_at_ms BIGINT NOT NULL,
        agent TEXT,
        finished_at_ms BIGINT,
        outcome TEXT,
        PRIMARY KEY (callback_id, seq)
    );
    CREATE TABLE voicemails (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        mailbox TEXT NOT NULL,
        caller TEXT NOT NULL,
        did TEXT NOT NULL,
        call_id TEXT NOT NULL,
        recorded_at_ms BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        wav_path TEXT NOT NULL,
        variables JSONB NOT NULL,
        deadline_ms BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('new', 'taken', 'closed')),
        agent TEXT,
        taken_at_ms BIGINT,
        closed_at_ms BIGINT,
        outcome TEXT,
        node TEXT NOT NULL,
        UNIQUE (call_id, mailbox)
    );
    CREATE INDEX voicemails_open ON voicemails (state, deadline_ms);
    CREATE INDEX voicemails_recorded ON voicemails (recorded_at_ms);
    CREATE TABLE active_dialogs (
        sip_call_id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        node TEXT NOT NULL,
        call_id TEXT NOT NULL,
        leg TEXT NOT NULL,
        local_tag TEXT NOT NULL,
        remote_tag TEXT NOT NULL,
        local_uri TEXT NOT NULL,
        remote_uri TEXT NOT NULL,
        remote_target TEXT NOT NULL,
        route_set JSONB NOT NULL,
        local_contact TEXT NOT NULL,
        via_transport TEXT NOT NULL,
        via_sent_by TEXT NOT NULL,
        local_cseq BIGINT NOT NULL,
        transport TEXT NOT NULL,
        peer TEXT NOT NULL,
        started_at TEXT NOT NULL,
        answered_at TEXT NOT NULL,
        did TEXT NOT NULL,
        caller TEXT NOT NULL,
        trunk TEXT NOT NULL,
        channel TEXT NOT NULL
    );
    CREATE INDEX active_dialogs_node ON active_dialogs (node, call_id);
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        seen_ms BIGINT NOT NULL
    );",
];

/// Brings the database to the latest version; returns that version.
pub(super) fn migrate(c: &mut Client, target: &str) -> Result<i64, StoreError> {
    let mut tx = c.transaction()?;
    // Another node may hold the lock while it migrates: wait longer than a statement may.
    tx.batch_execute("SET LOCAL statement_timeout = 60000; SET LOCAL lock_timeout = 60000")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )?
        .get(0);
    for (next, step) in pending_steps(MIGRATIONS, version, target)? {
        tx.batch_execute(step)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&next],
        )?;
        tracing::info!(store = target, version = next, "store schema migrated");
    }
    tx.commit()?;
    Ok(MIGRATIONS.len() as i64)
}
