//! [`TaskStore`] on SQLite. Every state change reads the state it starts from and writes the
//! new one in one IMMEDIATE transaction, so the check and the change cannot be split by another
//! writer (another connection or process on the same file).

use super::SqliteStore;
use crate::tasks::{
    check_attempts_left, expect_callback_state, late_tasks, log_recovered, the_one, AfterAttempt,
    Attempt, AttemptOutcome, CallbackOutcome, CallbackRequest, CallbackRow, CallbackState,
    NewCallback, NewVoicemail, Task, Voicemail, VoicemailFilter, VoicemailRow, VoicemailStatus,
};
use crate::{StoreError, TaskStore};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

const CALLBACK_COLUMNS: &str = "id, queue, number, caller_call_id, did, requested_at_ms,
    band_start, band_end, not_before_ms, deadline_ms, attempts, max_attempts, state, outcome,
    done_at_ms, variables";

const VOICEMAIL_COLUMNS: &str = "id, mailbox, caller, did, call_id, recorded_at_ms,
    duration_ms, wav_path, variables, deadline_ms, state, agent, taken_at_ms, closed_at_ms,
    outcome";

fn callback_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallbackRow> {
    let band_start: Option<u16> = r.get(6)?;
    let band_end: Option<u16> = r.get(7)?;
    Ok(CallbackRow {
        id: r.get(0)?,
        queue: r.get(1)?,
        number: r.get(2)?,
        caller_call_id: r.get(3)?,
        did: r.get(4)?,
        requested_at_ms: r.get(5)?,
        band: band_start.zip(band_end),
        not_before_ms: r.get(8)?,
        deadline_ms: r.get(9)?,
        attempts: r.get(10)?,
        max_attempts: r.get(11)?,
        state: r.get(12)?,
        outcome: r.get(13)?,
        done_at_ms: r.get(14)?,
        variables: r.get(15)?,
    })
}

fn attempt_log(conn: &Connection, id: i64) -> Result<Vec<Attempt>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT started_at_ms, agent, finished_at_ms, outcome FROM callback_attempts
         WHERE callback_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let mut log = Vec::new();
    for row in rows {
        let (started_at_ms, agent, finished_at_ms, outcome) = row?;
        log.push(Attempt::from_stored(
            started_at_ms,
            agent,
            finished_at_ms,
            outcome,
        )?);
    }
    Ok(log)
}

/// Callbacks matching `condition` (an SQL fragment over the table's columns), in line order.
fn select_callbacks<P: rusqlite::Params>(
    conn: &Connection,
    condition: &str,
    params: P,
) -> Result<Vec<CallbackRequest>, StoreError> {
    let sql = format!(
        "SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE {condition}
         ORDER BY requested_at_ms, id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params, callback_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|row| {
            let log = attempt_log(conn, row.id)?;
            row.into_request(log)
        })
        .collect()
}

fn load_callback(conn: &Connection, id: i64) -> Result<Option<CallbackRequest>, StoreError> {
    Ok(select_callbacks(conn, "id = ?1", [id])?.into_iter().next())
}

fn must_load_callback(conn: &Connection, id: i64) -> Result<CallbackRequest, StoreError> {
    the_one(select_callbacks(conn, "id = ?1", [id])?, "callback", id)
}

/// Reads the state a transition starts from.
fn callback_state(conn: &Connection, id: i64) -> Result<(CallbackState, u32, u32), StoreError> {
    let (state, attempts, max): (String, u32, u32) = conn
        .query_row(
            "SELECT state, attempts, max_attempts FROM callbacks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or(StoreError::NotFound {
            kind: "callback",
            id,
        })?;
    Ok((CallbackState::from_stored(&state)?, attempts, max))
}

/// Dialing -> Pending or Done, inside the caller's transaction.
fn finish_in(
    conn: &Connection,
    id: i64,
    at_ms: i64,
    outcome: AttemptOutcome,
    next_not_before_ms: Option<i64>,
) -> Result<(), StoreError> {
    let (state, attempts, max) = callback_state(conn, id)?;
    expect_callback_state(id, state, CallbackState::Dialing, "finish an attempt")?;
    conn.execute(
        "UPDATE callback_attempts SET finished_at_ms = ?2, outcome = ?3
         WHERE callback_id = ?1 AND outcome IS NULL",
        params![id, at_ms, outcome.as_str()],
    )?;
    match AfterAttempt::of(outcome, attempts, max, next_not_before_ms) {
        AfterAttempt::Done(final_outcome) => conn.execute(
            "UPDATE callbacks SET state = 'done', outcome = ?2, done_at_ms = ?3 WHERE id = ?1",
            params![id, final_outcome.as_str(), at_ms],
        )?,
        AfterAttempt::Uncounted { not_before_ms } => conn.execute(
            "UPDATE callbacks SET state = 'pending', attempts = attempts - 1,
                 not_before_ms = COALESCE(?2, not_before_ms)
             WHERE id = ?1",
            params![id, not_before_ms],
        )?,
        AfterAttempt::Retry { not_before_ms } => conn.execute(
            "UPDATE callbacks SET state = 'pending', not_before_ms = ?2 WHERE id = ?1",
            params![id, not_before_ms],
        )?,
    };
    Ok(())
}

fn voicemail_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VoicemailRow> {
    Ok(VoicemailRow {
        id: r.get(0)?,
        mailbox: r.get(1)?,
        caller: r.get(2)?,
        did: r.get(3)?,
        call_id: r.get(4)?,
        recorded_at_ms: r.get(5)?,
        duration_ms: r.get(6)?,
        wav_path: r.get(7)?,
        variables: r.get(8)?,
        deadline_ms: r.get(9)?,
        state: r.get(10)?,
        agent: r.get(11)?,
        taken_at_ms: r.get(12)?,
        closed_at_ms: r.get(13)?,
        outcome: r.get(14)?,
    })
}

fn select_voicemails<P: rusqlite::Params>(
    conn: &Connection,
    condition: &str,
    order_limit: &str,
    params: P,
) -> Result<Vec<Voicemail>, StoreError> {
    let sql = format!("SELECT {VOICEMAIL_COLUMNS} FROM voicemails WHERE {condition} {order_limit}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params, voicemail_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(VoicemailRow::into_voicemail).collect()
}

fn must_load_voicemail(conn: &Connection, id: i64) -> Result<Voicemail, StoreError> {
    the_one(
        select_voicemails(conn, "id = ?1", "", [id])?,
        "voicemail",
        id,
    )
}

fn take_in(conn: &Connection, id: i64, agent: &str, at_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE voicemails SET state = 'taken', agent = ?2, taken_at_ms = ?3 WHERE id = ?1",
        params![id, agent, at_ms],
    )?;
    Ok(())
}

impl TaskStore for SqliteStore {
    fn upsert_callback(&self, req: &NewCallback) -> Result<(i64, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let variables = serde_json::to_string(&req.variables)?;
        let band_start = req.band.map(|b| b.start_minute);
        let band_end = req.band.map(|b| b.end_minute);
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM callbacks WHERE queue = ?1 AND number = ?2 AND state <> 'done'",
                params![req.queue, req.number],
                |r| r.get(0),
            )
            .optional()?;
        let result = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE callbacks SET band_start = ?2, band_end = ?3, not_before_ms = ?4,
                         deadline_ms = ?5, variables = ?6
                     WHERE id = ?1",
                    params![
                        id,
                        band_start,
                        band_end,
                        req.not_before_ms,
                        req.deadline_ms,
                        variables
                    ],
                )?;
                (id, false)
            }
            None => {
                tx.execute(
                    "INSERT INTO callbacks (queue, number, caller_call_id, did, requested_at_ms,
                         band_start, band_end, not_before_ms, deadline_ms, attempts,
                         max_attempts, state, variables)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, 'pending', ?11)",
                    params![
                        req.queue,
                        req.number,
                        req.caller_call_id,
                        req.did,
                        req.requested_at_ms,
                        band_start,
                        band_end,
                        req.not_before_ms,
                        req.deadline_ms,
                        req.max_attempts,
                        variables
                    ],
                )?;
                (tx.last_insert_rowid(), true)
            }
        };
        tx.commit()?;
        tracing::debug!(
            id = result.0,
            created = result.1,
            queue = %req.queue,
            "callback request stored"
        );
        Ok(result)
    }

    fn callback(&self, id: i64) -> Result<Option<CallbackRequest>, StoreError> {
        load_callback(&self.lock(), id)
    }

    fn find_pending(
        &self,
        queue: &str,
        number: &str,
    ) -> Result<Option<CallbackRequest>, StoreError> {
        Ok(select_callbacks(
            &self.lock(),
            "queue = ?1 AND number = ?2 AND state <> 'done'",
            params![queue, number],
        )?
        .into_iter()
        .next())
    }

    fn pending_callbacks(&self) -> Result<Vec<CallbackRequest>, StoreError> {
        select_callbacks(&self.lock(), "state <> 'done'", [])
    }

    fn count_pending(&self, queue: &str) -> Result<usize, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM callbacks WHERE queue = ?1 AND state <> 'done'",
            [queue],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn start_attempt(&self, id: i64, at_ms: i64, agent: Option<&str>) -> Result<u32, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (state, attempts, max) = callback_state(&tx, id)?;
        expect_callback_state(id, state, CallbackState::Pending, "start an attempt")?;
        check_attempts_left(id, attempts, max)?;
        tx.execute(
            "INSERT INTO callback_attempts (callback_id, seq, started_at_ms, agent)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM callback_attempts
                          WHERE callback_id = ?1), ?2, ?3)",
            params![id, at_ms, agent],
        )?;
        tx.execute(
            "UPDATE callbacks SET state = 'dialing', attempts = attempts + 1 WHERE id = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(attempts + 1)
    }

    fn finish_attempt(
        &self,
        id: i64,
        at_ms: i64,
        outcome: AttemptOutcome,
        next_not_before_ms: Option<i64>,
    ) -> Result<CallbackRequest, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        finish_in(&tx, id, at_ms, outcome, next_not_before_ms)?;
        tx.commit()?;
        must_load_callback(&conn, id)
    }

    fn cancel_callback(&self, id: i64, at_ms: i64) -> Result<CallbackRequest, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (state, _, _) = callback_state(&tx, id)?;
        expect_callback_state(id, state, CallbackState::Pending, "cancel")?;
        tx.execute(
            "UPDATE callbacks SET state = 'done', outcome = ?2, done_at_ms = ?3 WHERE id = ?1",
            params![id, CallbackOutcome::Cancelled.as_str(), at_ms],
        )?;
        tx.commit()?;
        must_load_callback(&conn, id)
    }

    fn recover_after_crash(&self, at_ms: i64) -> Result<Vec<CallbackRequest>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM callbacks WHERE state = 'dialing' ORDER BY id")?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids
        };
        for &id in &ids {
            finish_in(&tx, id, at_ms, AttemptOutcome::Interrupted, None)?;
        }
        tx.commit()?;
        let recovered = ids
            .into_iter()
            .map(|id| must_load_callback(&conn, id))
            .collect::<Result<Vec<_>, _>>()?;
        log_recovered(&recovered);
        Ok(recovered)
    }

    fn insert_voicemail(&self, vm: &NewVoicemail) -> Result<(i64, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM voicemails WHERE call_id = ?1 AND mailbox = ?2",
                params![vm.call_id, vm.mailbox],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
        tx.execute(
            "INSERT INTO voicemails (mailbox, caller, did, call_id, recorded_at_ms, duration_ms,
                 wav_path, variables, deadline_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'new')",
            params![
                vm.mailbox,
                vm.caller,
                vm.did,
                vm.call_id,
                vm.recorded_at_ms,
                vm.duration_ms as i64,
                vm.wav_path,
                serde_json::to_string(&vm.variables)?,
                vm.deadline_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((id, true))
    }

    fn voicemail(&self, id: i64) -> Result<Option<Voicemail>, StoreError> {
        Ok(select_voicemails(&self.lock(), "id = ?1", "", [id])?
            .into_iter()
            .next())
    }

    fn take_next_voicemail(
        &self,
        mailboxes: &[String],
        agent: &str,
        at_ms: i64,
    ) -> Result<Option<Voicemail>, StoreError> {
        if mailboxes.is_empty() {
            return Ok(None);
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let placeholders = vec!["?"; mailboxes.len()].join(", ");
        let next: Option<i64> = tx
            .query_row(
                &format!(
                    "SELECT id FROM voicemails WHERE state = 'new' AND mailbox IN ({placeholders})
                     ORDER BY deadline_ms, recorded_at_ms, id LIMIT 1"
                ),
                params_from_iter(mailboxes),
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = next else {
            return Ok(None);
        };
        take_in(&tx, id, agent, at_ms)?;
        tx.commit()?;
        must_load_voicemail(&conn, id).map(Some)
    }

    fn take_voicemail(&self, id: i64, agent: &str, at_ms: i64) -> Result<Voicemail, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let vm = must_load_voicemail(&tx, id)?;
        if !vm.check_take(agent)? {
            return Ok(vm);
        }
        take_in(&tx, id, agent, at_ms)?;
        tx.commit()?;
        must_load_voicemail(&conn, id)
    }

    fn release_voicemail(&self, id: i64, agent: &str) -> Result<Voicemail, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        must_load_voicemail(&tx, id)?.check_release(agent)?;
        tx.execute(
            "UPDATE voicemails SET state = 'new', agent = NULL, taken_at_ms = NULL WHERE id = ?1",
            [id],
        )?;
        tx.commit()?;
        must_load_voicemail(&conn, id)
    }

    fn close_voicemail(
        &self,
        id: i64,
        agent: &str,
        at_ms: i64,
        outcome: &str,
    ) -> Result<Voicemail, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken_at_ms = must_load_voicemail(&tx, id)?.check_close(agent, at_ms)?;
        tx.execute(
            "UPDATE voicemails SET state = 'closed', agent = ?2, taken_at_ms = ?3,
                 closed_at_ms = ?4, outcome = ?5
             WHERE id = ?1",
            params![id, agent, taken_at_ms, at_ms, outcome],
        )?;
        tx.commit()?;
        must_load_voicemail(&conn, id)
    }

    fn voicemails(&self, filter: &VoicemailFilter) -> Result<Vec<Voicemail>, StoreError> {
        // A negative LIMIT means none in SQLite.
        let limit = filter.limit.map_or(-1, |l| l as i64);
        select_voicemails(
            &self.lock(),
            "(?1 IS NULL OR mailbox = ?1) AND (?2 IS NULL OR state = ?2)",
            "ORDER BY recorded_at_ms, id LIMIT ?3",
            params![
                filter.mailbox,
                filter.status.map(VoicemailStatus::as_str),
                limit
            ],
        )
    }

    fn late_tasks(&self, now_ms: i64) -> Result<Vec<Task>, StoreError> {
        let conn = self.lock();
        Ok(late_tasks(
            select_callbacks(&conn, "state = 'pending' AND deadline_ms < ?1", [now_ms])?,
            select_voicemails(
                &conn,
                "state = 'new' AND deadline_ms < ?1",
                "ORDER BY deadline_ms, id",
                [now_ms],
            )?,
        ))
    }

    fn callbacks_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        select_callbacks(
            &self.lock(),
            "requested_at_ms >= ?1 AND requested_at_ms < ?2",
            [from_ms, to_ms],
        )
    }

    fn voicemails_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Voicemail>, StoreError> {
        select_voicemails(
            &self.lock(),
            "recorded_at_ms >= ?1 AND recorded_at_ms < ?2",
            "ORDER BY recorded_at_ms, id",
            [from_ms, to_ms],
        )
    }
}
