//! [`TaskStore`] on SQLite. Every state change reads the state it starts from and writes the
//! new one in one IMMEDIATE transaction, so the check and the change cannot be split by another
//! writer (another connection or process on the same file).

use super::SqliteStore;
use crate::tasks::{
    Attempt, AttemptOutcome, CallbackOutcome, CallbackRequest, CallbackState, NewCallback,
    NewVoicemail, Task, TimeBand, Voicemail, VoicemailFilter, VoicemailState, VoicemailStatus,
};
use crate::{StoreError, TaskStore};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

const CALLBACK_COLUMNS: &str = "id, queue, number, caller_call_id, did, requested_at_ms,
    band_start, band_end, not_before_ms, deadline_ms, attempts, max_attempts, state, outcome,
    done_at_ms, variables";

const VOICEMAIL_COLUMNS: &str = "id, mailbox, caller, did, call_id, recorded_at_ms,
    duration_ms, wav_path, variables, deadline_ms, state, agent, taken_at_ms, closed_at_ms,
    outcome";

fn bad_data(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unexpected {what} {value:?} in the database").into())
}

/// Row of `callbacks` before the text columns are checked.
struct CallbackRow {
    id: i64,
    queue: String,
    number: String,
    caller_call_id: String,
    did: String,
    requested_at_ms: i64,
    band: Option<(u16, u16)>,
    not_before_ms: i64,
    deadline_ms: i64,
    attempts: u32,
    max_attempts: u32,
    state: String,
    outcome: Option<String>,
    done_at_ms: Option<i64>,
    variables: String,
}

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
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut log = Vec::new();
    for row in rows {
        let (started_at_ms, agent, finished_at_ms, outcome) = row?;
        let outcome = outcome
            .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| bad_data("attempt outcome", &o)))
            .transpose()?;
        log.push(Attempt {
            started_at_ms,
            agent,
            finished_at_ms,
            outcome,
        });
    }
    Ok(log)
}

fn complete_callback(conn: &Connection, row: CallbackRow) -> Result<CallbackRequest, StoreError> {
    let state = CallbackState::parse(&row.state).ok_or_else(|| bad_data("state", &row.state))?;
    let outcome = row
        .outcome
        .map(|o| CallbackOutcome::parse(&o).ok_or_else(|| bad_data("outcome", &o)))
        .transpose()?;
    Ok(CallbackRequest {
        attempt_log: attempt_log(conn, row.id)?,
        id: row.id,
        queue: row.queue,
        number: row.number,
        caller_call_id: row.caller_call_id,
        did: row.did,
        requested_at_ms: row.requested_at_ms,
        band: row.band.map(|(start_minute, end_minute)| TimeBand {
            start_minute,
            end_minute,
        }),
        not_before_ms: row.not_before_ms,
        deadline_ms: row.deadline_ms,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        state,
        outcome,
        done_at_ms: row.done_at_ms,
        variables: serde_json::from_str(&row.variables)?,
    })
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
        .map(|row| complete_callback(conn, row))
        .collect()
}

fn load_callback(conn: &Connection, id: i64) -> Result<Option<CallbackRequest>, StoreError> {
    Ok(select_callbacks(conn, "id = ?1", [id])?.into_iter().next())
}

fn must_load_callback(conn: &Connection, id: i64) -> Result<CallbackRequest, StoreError> {
    load_callback(conn, id)?.ok_or(StoreError::NotFound {
        kind: "callback",
        id,
    })
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
    let state = CallbackState::parse(&state).ok_or_else(|| bad_data("state", &state))?;
    Ok((state, attempts, max))
}

fn wrong_callback_state(id: i64, state: CallbackState, action: &'static str) -> StoreError {
    StoreError::InvalidState {
        kind: "callback",
        id,
        state: state.as_str().to_string(),
        action,
    }
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
    if state != CallbackState::Dialing {
        return Err(wrong_callback_state(id, state, "finish an attempt"));
    }
    conn.execute(
        "UPDATE callback_attempts SET finished_at_ms = ?2, outcome = ?3
         WHERE callback_id = ?1 AND outcome IS NULL",
        params![id, at_ms, outcome.as_str()],
    )?;
    let done = |final_outcome: CallbackOutcome| {
        conn.execute(
            "UPDATE callbacks SET state = 'done', outcome = ?2, done_at_ms = ?3 WHERE id = ?1",
            params![id, final_outcome.as_str(), at_ms],
        )
    };
    match outcome {
        AttemptOutcome::Answered => {
            done(CallbackOutcome::Answered)?;
        }
        AttemptOutcome::Interrupted => {
            conn.execute(
                "UPDATE callbacks SET state = 'pending', attempts = attempts - 1,
                     not_before_ms = COALESCE(?2, not_before_ms)
                 WHERE id = ?1",
                params![id, next_not_before_ms],
            )?;
        }
        _ => match next_not_before_ms {
            Some(next) if attempts < max => {
                conn.execute(
                    "UPDATE callbacks SET state = 'pending', not_before_ms = ?2 WHERE id = ?1",
                    params![id, next],
                )?;
            }
            _ => {
                done(CallbackOutcome::NotReached)?;
            }
        },
    }
    Ok(())
}

struct VoicemailRow {
    id: i64,
    mailbox: String,
    caller: String,
    did: String,
    call_id: String,
    recorded_at_ms: i64,
    duration_ms: i64,
    wav_path: String,
    variables: String,
    deadline_ms: i64,
    state: String,
    agent: Option<String>,
    taken_at_ms: Option<i64>,
    closed_at_ms: Option<i64>,
    outcome: Option<String>,
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

fn complete_voicemail(row: VoicemailRow) -> Result<Voicemail, StoreError> {
    let broken = || bad_data("voicemail state", &row.state);
    let state = match row.state.as_str() {
        "new" => VoicemailState::New,
        "taken" => VoicemailState::Taken {
            agent: row.agent.clone().ok_or_else(broken)?,
            at_ms: row.taken_at_ms.ok_or_else(broken)?,
        },
        "closed" => VoicemailState::Closed {
            agent: row.agent.clone().ok_or_else(broken)?,
            taken_at_ms: row.taken_at_ms.ok_or_else(broken)?,
            at_ms: row.closed_at_ms.ok_or_else(broken)?,
            outcome: row.outcome.clone().ok_or_else(broken)?,
        },
        _ => return Err(broken()),
    };
    Ok(Voicemail {
        id: row.id,
        mailbox: row.mailbox,
        caller: row.caller,
        did: row.did,
        call_id: row.call_id,
        recorded_at_ms: row.recorded_at_ms,
        duration_ms: row.duration_ms as u64,
        wav_path: row.wav_path,
        variables: serde_json::from_str(&row.variables)?,
        deadline_ms: row.deadline_ms,
        state,
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
    rows.into_iter().map(complete_voicemail).collect()
}

fn must_load_voicemail(conn: &Connection, id: i64) -> Result<Voicemail, StoreError> {
    select_voicemails(conn, "id = ?1", "", [id])?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound {
            kind: "voicemail",
            id,
        })
}

fn wrong_voicemail_state(id: i64, state: &VoicemailState, action: &'static str) -> StoreError {
    let state = match state {
        VoicemailState::New => "new".to_string(),
        VoicemailState::Taken { agent, .. } => format!("taken by {agent}"),
        VoicemailState::Closed { agent, .. } => format!("closed by {agent}"),
    };
    StoreError::InvalidState {
        kind: "voicemail",
        id,
        state,
        action,
    }
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
        if state != CallbackState::Pending {
            return Err(wrong_callback_state(id, state, "start an attempt"));
        }
        if attempts >= max {
            return Err(StoreError::InvalidState {
                kind: "callback",
                id,
                state: format!("out of attempts ({attempts} of {max})"),
                action: "start an attempt",
            });
        }
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
        if state != CallbackState::Pending {
            return Err(wrong_callback_state(id, state, "cancel"));
        }
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
        for c in &recovered {
            tracing::warn!(
                id = c.id,
                queue = %c.queue,
                "callback attempt interrupted by a restart; back in the basket"
            );
        }
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
        match &vm.state {
            VoicemailState::New => take_in(&tx, id, agent, at_ms)?,
            VoicemailState::Taken { agent: holder, .. } if holder == agent => return Ok(vm),
            other => return Err(wrong_voicemail_state(id, other, "take it")),
        }
        tx.commit()?;
        must_load_voicemail(&conn, id)
    }

    fn release_voicemail(&self, id: i64, agent: &str) -> Result<Voicemail, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let vm = must_load_voicemail(&tx, id)?;
        match &vm.state {
            VoicemailState::Taken { agent: holder, .. } if holder == agent => {
                tx.execute(
                    "UPDATE voicemails SET state = 'new', agent = NULL, taken_at_ms = NULL
                     WHERE id = ?1",
                    [id],
                )?;
            }
            other => return Err(wrong_voicemail_state(id, other, "release it")),
        }
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
        let vm = must_load_voicemail(&tx, id)?;
        let taken_at_ms = match &vm.state {
            VoicemailState::New => at_ms,
            VoicemailState::Taken {
                agent: holder,
                at_ms: taken,
            } if holder == agent => *taken,
            other => return Err(wrong_voicemail_state(id, other, "close it")),
        };
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
        let mut late: Vec<Task> =
            select_callbacks(&conn, "state = 'pending' AND deadline_ms < ?1", [now_ms])?
                .into_iter()
                .map(Task::Callback)
                .collect();
        late.extend(
            select_voicemails(
                &conn,
                "state = 'new' AND deadline_ms < ?1",
                "ORDER BY deadline_ms, id",
                [now_ms],
            )?
            .into_iter()
            .map(Task::Voicemail),
        );
        late.sort_by_key(Task::deadline_ms);
        Ok(late)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_795_000_000_000;

    fn request(queue: &str, number: &str, requested_at_ms: i64) -> NewCallback {
        NewCallback {
            queue: queue.into(),
            number: number.into(),
            caller_call_id: format!("call-{number}-{requested_at_ms}"),
            did: "800123456".into(),
            requested_at_ms,
            band: None,
            not_before_ms: requested_at_ms,
            deadline_ms: requested_at_ms + 480 * MIN,
            max_attempts: 2,
            variables: BTreeMap::from([("lang".to_string(), "it".to_string())]),
        }
    }

    fn voicemail(
        mailbox: &str,
        call_id: &str,
        recorded_at_ms: i64,
        deadline_ms: i64,
    ) -> NewVoicemail {
        NewVoicemail {
            mailbox: mailbox.into(),
            caller: "0612345678".into(),
            did: "800123456".into(),
            call_id: call_id.into(),
            recorded_at_ms,
            duration_ms: 3_000,
            wav_path: format!("/data/voicemail/{call_id}.wav"),
            variables: BTreeMap::new(),
            deadline_ms,
        }
    }

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
    }

    #[test]
    fn a_second_request_updates_the_first_and_keeps_its_place_and_attempts() {
        let s = store();
        let first = request("pensions", "0611111111", T0);
        let (id, created) = s.upsert_callback(&first).unwrap();
        assert!(created);
        s.start_attempt(id, T0 + MIN, Some("anna")).unwrap();
        s.finish_attempt(
            id,
            T0 + 2 * MIN,
            AttemptOutcome::NoAnswer,
            Some(T0 + 30 * MIN),
        )
        .unwrap();

        let mut second = request("pensions", "0611111111", T0 + 60 * MIN);
        second.band = Some(TimeBand {
            start_minute: 14 * 60,
            end_minute: 18 * 60,
        });
        second.deadline_ms = T0 + 900 * MIN;
        second.not_before_ms = T0 + 120 * MIN;
        second.variables.insert("reason".into(), "late".into());
        second.caller_call_id = "another-call".into();
        second.max_attempts = 5;
        let (again, created) = s.upsert_callback(&second).unwrap();
        assert_eq!((again, created), (id, false));

        let stored = s.find_pending("pensions", "0611111111").unwrap().unwrap();
        assert_eq!(
            stored.requested_at_ms, T0,
            "the original place in line is kept"
        );
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.max_attempts, 2);
        assert_eq!(stored.caller_call_id, first.caller_call_id);
        assert_eq!(stored.band, second.band);
        assert_eq!(stored.deadline_ms, second.deadline_ms);
        assert_eq!(stored.not_before_ms, second.not_before_ms);
        assert_eq!(stored.variables, second.variables);
        assert_eq!(s.count_pending("pensions").unwrap(), 1);
        assert_eq!(s.pending_callbacks().unwrap().len(), 1);
    }

    #[test]
    fn the_same_number_in_another_queue_or_after_completion_is_a_new_request() {
        let s = store();
        let (a, _) = s.upsert_callback(&request("pensions", "061", T0)).unwrap();
        let (b, created) = s.upsert_callback(&request("tax", "061", T0)).unwrap();
        assert!(created);
        assert_ne!(a, b);
        s.cancel_callback(a, T0 + MIN).unwrap();
        assert_eq!(s.find_pending("pensions", "061").unwrap(), None);
        let (c, created) = s
            .upsert_callback(&request("pensions", "061", T0 + 5 * MIN))
            .unwrap();
        assert!(created);
        assert_ne!(c, a);
        assert_eq!(
            s.callback(a).unwrap().unwrap().outcome,
            Some(CallbackOutcome::Cancelled)
        );
        assert_eq!(s.count_pending("pensions").unwrap(), 1);
        assert_eq!(s.count_pending("tax").unwrap(), 1);
        assert_eq!(s.count_pending("nobody").unwrap(), 0);
    }

    #[test]
    fn pending_callbacks_are_in_line_order_whatever_the_insertion_order() {
        let s = store();
        let times = [T0 + 5 * MIN, T0, T0 + 2 * MIN, T0];
        let mut ids = Vec::new();
        for (i, t) in times.iter().enumerate() {
            ids.push(
                s.upsert_callback(&request("q", &format!("06{i}"), *t))
                    .unwrap()
                    .0,
            );
        }
        // One of them is being dialed: still in the basket, still in its place.
        s.start_attempt(ids[2], T0 + 10 * MIN, None).unwrap();
        let line: Vec<i64> = s
            .pending_callbacks()
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(line, vec![ids[1], ids[3], ids[2], ids[0]]);
        assert_eq!(s.count_pending("q").unwrap(), 4);
    }

    #[test]
    fn two_unanswered_attempts_end_not_reached_and_forbid_a_third() {
        let s = store();
        let (id, _) = s.upsert_callback(&request("q", "061", T0)).unwrap();
        assert!(matches!(
            s.finish_attempt(id, T0, AttemptOutcome::NoAnswer, None),
            Err(StoreError::InvalidState { .. })
        ));
        assert_eq!(s.start_attempt(id, T0 + MIN, Some("anna")).unwrap(), 1);
        assert_eq!(
            s.callback(id).unwrap().unwrap().state,
            CallbackState::Dialing
        );
        assert!(
            matches!(
                s.start_attempt(id, T0 + MIN, Some("bruno")),
                Err(StoreError::InvalidState { .. })
            ),
            "a callback being dialed cannot be dialed twice"
        );
        let after_first = s
            .finish_attempt(
                id,
                T0 + 2 * MIN,
                AttemptOutcome::NoAnswer,
                Some(T0 + 20 * MIN),
            )
            .unwrap();
        assert_eq!(after_first.state, CallbackState::Pending);
        assert_eq!(after_first.not_before_ms, T0 + 20 * MIN);
        assert_eq!(after_first.outcome, None);

        assert_eq!(
            s.start_attempt(id, T0 + 20 * MIN, Some("carla")).unwrap(),
            2
        );
        // The engine asks for a retry, but two attempts are all there are.
        let last = s
            .finish_attempt(id, T0 + 21 * MIN, AttemptOutcome::Busy, Some(T0 + 40 * MIN))
            .unwrap();
        assert_eq!(last.state, CallbackState::Done);
        assert_eq!(last.outcome, Some(CallbackOutcome::NotReached));
        assert_eq!(last.done_at_ms, Some(T0 + 21 * MIN));
        assert_eq!(last.attempts, 2);
        assert_eq!(
            last.attempt_log,
            vec![
                Attempt {
                    started_at_ms: T0 + MIN,
                    agent: Some("anna".into()),
                    finished_at_ms: Some(T0 + 2 * MIN),
                    outcome: Some(AttemptOutcome::NoAnswer),
                },
                Attempt {
                    started_at_ms: T0 + 20 * MIN,
                    agent: Some("carla".into()),
                    finished_at_ms: Some(T0 + 21 * MIN),
                    outcome: Some(AttemptOutcome::Busy),
                },
            ]
        );
        assert!(matches!(
            s.start_attempt(id, T0 + 41 * MIN, None),
            Err(StoreError::InvalidState { .. })
        ));
        assert!(s.pending_callbacks().unwrap().is_empty());
        assert_eq!(s.count_pending("q").unwrap(), 0);
    }

    #[test]
    fn an_answered_attempt_or_no_retry_ends_the_callback() {
        let s = store();
        let (a, _) = s.upsert_callback(&request("q", "061", T0)).unwrap();
        s.start_attempt(a, T0, None).unwrap();
        let done = s
            .finish_attempt(a, T0 + MIN, AttemptOutcome::Answered, Some(T0 + 9 * MIN))
            .unwrap();
        assert_eq!(done.state, CallbackState::Done);
        assert_eq!(done.outcome, Some(CallbackOutcome::Answered));

        let (b, _) = s.upsert_callback(&request("q", "062", T0)).unwrap();
        s.start_attempt(b, T0, None).unwrap();
        let wrong = s
            .finish_attempt(b, T0 + MIN, AttemptOutcome::WrongNumber, None)
            .unwrap();
        assert_eq!(wrong.attempts, 1, "one attempt of two used");
        assert_eq!(wrong.outcome, Some(CallbackOutcome::NotReached));
        assert!(matches!(
            s.cancel_callback(b, T0 + 2 * MIN),
            Err(StoreError::InvalidState { .. })
        ));
        assert!(matches!(
            s.start_attempt(999, T0, None),
            Err(StoreError::NotFound { id: 999, .. })
        ));
    }

    #[test]
    fn an_attempt_cut_by_a_crash_is_retried_once_and_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verde.db");
        let (id, other) = {
            let s = SqliteStore::open(&path).unwrap();
            let (id, _) = s.upsert_callback(&request("q", "061", T0)).unwrap();
            let (other, _) = s.upsert_callback(&request("q", "062", T0 + MIN)).unwrap();
            s.start_attempt(id, T0 + 10 * MIN, Some("anna")).unwrap();
            (id, other)
            // Dropped without finishing the attempt, as a crash would leave it.
        };
        let s = SqliteStore::open(&path).unwrap();
        let recovered = s.recover_after_crash(T0 + 15 * MIN).unwrap();
        assert_eq!(recovered.len(), 1);
        let c = &recovered[0];
        assert_eq!(c.id, id);
        assert_eq!(c.state, CallbackState::Pending);
        assert_eq!(c.attempts, 0, "the interrupted attempt does not count");
        assert_eq!(c.requested_at_ms, T0);
        assert_eq!(c.not_before_ms, T0);
        assert_eq!(
            c.attempt_log,
            vec![Attempt {
                started_at_ms: T0 + 10 * MIN,
                agent: Some("anna".into()),
                finished_at_ms: Some(T0 + 15 * MIN),
                outcome: Some(AttemptOutcome::Interrupted),
            }]
        );
        assert!(s.recover_after_crash(T0 + 16 * MIN).unwrap().is_empty());
        let line: Vec<i64> = s
            .pending_callbacks()
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(line, vec![id, other], "not duplicated, still first in line");

        // Both real attempts are still available.
        assert_eq!(s.start_attempt(id, T0 + 20 * MIN, None).unwrap(), 1);
        s.finish_attempt(
            id,
            T0 + 21 * MIN,
            AttemptOutcome::NoAnswer,
            Some(T0 + 30 * MIN),
        )
        .unwrap();
        assert_eq!(s.start_attempt(id, T0 + 30 * MIN, None).unwrap(), 2);
        let c = s
            .finish_attempt(
                id,
                T0 + 31 * MIN,
                AttemptOutcome::NoAnswer,
                Some(T0 + 40 * MIN),
            )
            .unwrap();
        assert_eq!(c.outcome, Some(CallbackOutcome::NotReached));
        assert_eq!(c.attempt_log.len(), 3);
    }

    #[test]
    fn another_connection_sees_a_started_attempt_and_cannot_start_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verde.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        let (id, _) = a.upsert_callback(&request("q", "061", T0)).unwrap();
        assert_eq!(
            b.upsert_callback(&request("q", "061", T0 + MIN)).unwrap(),
            (id, false)
        );
        a.start_attempt(id, T0, None).unwrap();
        assert!(matches!(
            b.start_attempt(id, T0, None),
            Err(StoreError::InvalidState { .. })
        ));
    }

    #[test]
    fn voicemails_are_taken_earliest_deadline_first_and_closed_by_their_holder() {
        let s = store();
        let (late, _) = s
            .insert_voicemail(&voicemail("pensions", "c1", T0, T0 + 240 * MIN))
            .unwrap();
        let (urgent, _) = s
            .insert_voicemail(&voicemail("pensions", "c2", T0 + MIN, T0 + 100 * MIN))
            .unwrap();
        let (elsewhere, _) = s
            .insert_voicemail(&voicemail("tax", "c3", T0, T0 + 10 * MIN))
            .unwrap();
        assert_eq!(
            s.insert_voicemail(&voicemail("pensions", "c1", T0, T0 + 240 * MIN))
                .unwrap(),
            (late, false),
            "storing the same message twice keeps one task"
        );

        let mine = vec!["pensions".to_string()];
        let first = s
            .take_next_voicemail(&mine, "anna", T0 + 5 * MIN)
            .unwrap()
            .unwrap();
        assert_eq!(first.id, urgent);
        assert_eq!(
            first.state,
            VoicemailState::Taken {
                agent: "anna".into(),
                at_ms: T0 + 5 * MIN
            }
        );
        assert!(matches!(
            s.take_voicemail(urgent, "bruno", T0 + 6 * MIN),
            Err(StoreError::InvalidState { .. })
        ));
        assert_eq!(
            s.take_voicemail(urgent, "anna", T0 + 7 * MIN).unwrap(),
            first
        );
        assert!(matches!(
            s.close_voicemail(urgent, "bruno", T0 + 8 * MIN, "done"),
            Err(StoreError::InvalidState { .. })
        ));
        let closed = s
            .close_voicemail(urgent, "anna", T0 + 9 * MIN, "called-back")
            .unwrap();
        assert_eq!(
            closed.state,
            VoicemailState::Closed {
                agent: "anna".into(),
                taken_at_ms: T0 + 5 * MIN,
                at_ms: T0 + 9 * MIN,
                outcome: "called-back".into()
            }
        );
        assert!(matches!(
            s.close_voicemail(urgent, "anna", T0 + 10 * MIN, "again"),
            Err(StoreError::InvalidState { .. })
        ));

        let second = s
            .take_next_voicemail(&mine, "bruno", T0 + 11 * MIN)
            .unwrap()
            .unwrap();
        assert_eq!(second.id, late);
        assert_eq!(
            s.take_next_voicemail(&mine, "carla", T0 + 12 * MIN)
                .unwrap(),
            None
        );
        let released = s.release_voicemail(late, "bruno").unwrap();
        assert_eq!(released.state, VoicemailState::New);
        assert_eq!(
            s.take_next_voicemail(&mine, "carla", T0 + 13 * MIN)
                .unwrap()
                .map(|v| v.id),
            Some(late)
        );
        assert_eq!(s.take_next_voicemail(&[], "carla", T0).unwrap(), None);

        // Closing straight from new counts as taking it at the same instant.
        let direct = s
            .close_voicemail(elsewhere, "dario", T0 + 20 * MIN, "spam")
            .unwrap();
        assert!(matches!(
            direct.state,
            VoicemailState::Closed { taken_at_ms, at_ms, .. } if taken_at_ms == at_ms
        ));
        assert!(matches!(
            s.take_voicemail(42, "anna", T0),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn voicemail_listing_filters_by_mailbox_and_status() {
        let s = store();
        for (i, mailbox) in ["a", "b", "a", "a"].iter().enumerate() {
            s.insert_voicemail(&voicemail(
                mailbox,
                &format!("c{i}"),
                T0 - i as i64 * MIN,
                T0,
            ))
            .unwrap();
        }
        let a = vec!["a".to_string()];
        let taken = s.take_next_voicemail(&a, "anna", T0).unwrap().unwrap();
        let calls = |f: VoicemailFilter| -> Vec<String> {
            s.voicemails(&f)
                .unwrap()
                .into_iter()
                .map(|v| v.call_id)
                .collect()
        };
        assert_eq!(
            calls(VoicemailFilter::default()),
            vec!["c3", "c2", "c1", "c0"]
        );
        assert_eq!(
            calls(VoicemailFilter {
                mailbox: Some("a".into()),
                status: Some(VoicemailStatus::New),
                limit: None
            })
            .len(),
            2
        );
        assert_eq!(
            calls(VoicemailFilter {
                status: Some(VoicemailStatus::Taken),
                ..Default::default()
            }),
            vec![taken.call_id]
        );
        assert_eq!(
            calls(VoicemailFilter {
                limit: Some(1),
                ..Default::default()
            }),
            vec!["c3"]
        );
    }

    #[test]
    fn late_tasks_are_the_open_ones_past_their_deadline_earliest_first() {
        let s = store();
        let mut overdue = request("q", "061", T0);
        overdue.deadline_ms = T0 + 30 * MIN;
        let (overdue, _) = s.upsert_callback(&overdue).unwrap();
        let mut in_time = request("q", "062", T0);
        in_time.deadline_ms = T0 + 600 * MIN;
        s.upsert_callback(&in_time).unwrap();
        let mut dialing = request("q", "063", T0);
        dialing.deadline_ms = T0 + 10 * MIN;
        let (dialing, _) = s.upsert_callback(&dialing).unwrap();
        s.start_attempt(dialing, T0 + 50 * MIN, None).unwrap();
        let mut cancelled = request("q", "064", T0);
        cancelled.deadline_ms = T0;
        let (cancelled, _) = s.upsert_callback(&cancelled).unwrap();
        s.cancel_callback(cancelled, T0).unwrap();

        let (vm_late, _) = s
            .insert_voicemail(&voicemail("a", "v1", T0, T0 + 20 * MIN))
            .unwrap();
        let (vm_taken, _) = s
            .insert_voicemail(&voicemail("a", "v2", T0, T0 + 5 * MIN))
            .unwrap();
        s.take_voicemail(vm_taken, "anna", T0 + MIN).unwrap();
        s.insert_voicemail(&voicemail("a", "v3", T0, T0 + 200 * MIN))
            .unwrap();

        let now = T0 + 60 * MIN;
        let late: Vec<(char, i64)> = s
            .late_tasks(now)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Task::Callback(c) => ('c', c.id),
                Task::Voicemail(v) => ('v', v.id),
            })
            .collect();
        assert_eq!(late, vec![('v', vm_late), ('c', overdue)]);
        assert!(s.late_tasks(T0).unwrap().is_empty());
        // Exactly at the deadline is still in time.
        assert_eq!(s.late_tasks(T0 + 20 * MIN).unwrap().len(), 0);
    }

    #[test]
    fn callbacks_of_a_period_are_every_state_with_their_attempts() {
        let s = store();
        let from = T0;
        let to = T0 + 60 * MIN;
        let (before, _) = s.upsert_callback(&request("q", "060", from - 1)).unwrap();
        // Inserted out of line order: the listing is in line order.
        let (last, _) = s.upsert_callback(&request("q", "063", to - 1)).unwrap();
        let (first, _) = s.upsert_callback(&request("q", "061", from)).unwrap();
        let (at_end, _) = s.upsert_callback(&request("q", "064", to)).unwrap();
        let (done, _) = s.upsert_callback(&request("r", "062", from + MIN)).unwrap();
        s.start_attempt(done, from + 2 * MIN, Some("anna")).unwrap();
        s.finish_attempt(done, from + 3 * MIN, AttemptOutcome::NoAnswer, None)
            .unwrap();
        let (dialing, _) = s
            .upsert_callback(&request("q", "065", from + 5 * MIN))
            .unwrap();
        s.start_attempt(dialing, from + 6 * MIN, None).unwrap();

        let got = s.callbacks_between(from, to).unwrap();
        let ids: Vec<i64> = got.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![first, done, dialing, last]);
        let done = &got[1];
        assert_eq!(
            (done.state, done.outcome, done.attempt_log.len()),
            (CallbackState::Done, Some(CallbackOutcome::NotReached), 1)
        );
        assert_eq!(done.attempt_log[0].agent.as_deref(), Some("anna"));
        assert_eq!(got[2].state, CallbackState::Dialing);
        assert_eq!(
            s.callbacks_between(from - 1, from)
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            vec![before]
        );
        assert_eq!(s.callbacks_between(to, to + 1).unwrap()[0].id, at_end);
        assert!(s.callbacks_between(to, to).unwrap().is_empty());
    }

    #[test]
    fn voicemails_of_a_period_are_every_state_oldest_first() {
        let s = store();
        let from = T0;
        let to = T0 + 60 * MIN;
        let deadline = T0 + 600 * MIN;
        for (call, at) in [
            ("end", to),
            ("last", to - 1),
            ("before", from - 1),
            ("first", from),
            ("mid", from + 30 * MIN),
        ] {
            s.insert_voicemail(&voicemail("a", call, at, deadline))
                .unwrap();
        }
        let (taken, _) = s
            .insert_voicemail(&voicemail("b", "taken", from + 10 * MIN, deadline))
            .unwrap();
        s.take_voicemail(taken, "anna", from + 11 * MIN).unwrap();
        let (closed, _) = s
            .insert_voicemail(&voicemail("b", "closed", from + 20 * MIN, deadline))
            .unwrap();
        s.close_voicemail(closed, "bruno", from + 21 * MIN, "called-back")
            .unwrap();

        let calls = |from, to| -> Vec<String> {
            s.voicemails_between(from, to)
                .unwrap()
                .into_iter()
                .map(|v| v.call_id)
                .collect()
        };
        assert_eq!(
            calls(from, to),
            vec!["first", "taken", "closed", "mid", "last"]
        );
        assert_eq!(calls(from - 1, from), vec!["before"]);
        assert_eq!(calls(to, to + 1), vec!["end"]);
        assert!(calls(to, to).is_empty());
        let got = s.voicemails_between(from, to).unwrap();
        assert_eq!(got[1].state.status(), VoicemailStatus::Taken);
        assert_eq!(got[2].state.status(), VoicemailStatus::Closed);
    }
}
