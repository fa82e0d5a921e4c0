//! [`TaskStore`] on PostgreSQL. Every state change locks the row it starts from
//! (`SELECT ... FOR UPDATE`) and writes the new state in the same transaction, so two nodes
//! racing for one task get one success and one [`StoreError::InvalidState`]. Claims that pick
//! a task among many (the next voicemail, orphans to adopt) skip rows another node holds
//! (`FOR UPDATE SKIP LOCKED`) instead of waiting for them, so they never take the same one.

use super::PgStore;
use crate::tasks::{
    check_attempts_left, expect_callback_state, late_tasks, log_recovered, the_one, AfterAttempt,
    Attempt, AttemptOutcome, CallbackOutcome, CallbackRequest, CallbackRow, CallbackState,
    NewCallback, NewVoicemail, Task, Voicemail, VoicemailFilter, VoicemailRow, VoicemailStatus,
};
use crate::{StoreError, TaskStore};
use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row};
use std::collections::HashMap;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

const CALLBACK_COLUMNS: &str = "id, queue, number, caller_call_id, did, requested_at_ms,
    band_start, band_end, not_before_ms, deadline_ms, attempts, max_attempts, state, outcome,
    done_at_ms, variables::text";

const VOICEMAIL_COLUMNS: &str = "id, mailbox, caller, did, call_id, recorded_at_ms,
    duration_ms, wav_path, variables::text, deadline_ms, state, agent, taken_at_ms,
    closed_at_ms, outcome";

fn callback_row(r: &Row) -> CallbackRow {
    let band_start: Option<i32> = r.get(6);
    let band_end: Option<i32> = r.get(7);
    CallbackRow {
        id: r.get(0),
        queue: r.get(1),
        number: r.get(2),
        caller_call_id: r.get(3),
        did: r.get(4),
        requested_at_ms: r.get(5),
        band: band_start.zip(band_end).map(|(s, e)| (s as u16, e as u16)),
        not_before_ms: r.get(8),
        deadline_ms: r.get(9),
        attempts: r.get::<_, i32>(10) as u32,
        max_attempts: r.get::<_, i32>(11) as u32,
        state: r.get(12),
        outcome: r.get(13),
        done_at_ms: r.get(14),
        variables: r.get(15),
    }
}

/// Callbacks matching `condition` (an SQL fragment over the table's columns), in line order,
/// each with its attempts (read in one more query for all of them).
fn select_callbacks(
    c: &mut impl GenericClient,
    condition: &str,
    params: Params<'_>,
) -> Result<Vec<CallbackRequest>, StoreError> {
    let rows = c.query(
        &format!(
            "SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE {condition}
             ORDER BY requested_at_ms, id"
        ),
        params,
    )?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut logs: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for a in c.query(
        "SELECT callback_id, started_at_ms, agent, finished_at_ms, outcome
         FROM callback_attempts WHERE callback_id = ANY($1) ORDER BY callback_id, seq",
        &[&ids],
    )? {
        let attempt = Attempt::from_stored(a.get(1), a.get(2), a.get(3), a.get(4))?;
        logs.entry(a.get(0)).or_default().push(attempt);
    }
    rows.iter()
        .map(|r| {
            let row = callback_row(r);
            let log = logs.remove(&row.id).unwrap_or_default();
            row.into_request(log)
        })
        .collect()
}

fn must_load_callback(c: &mut impl GenericClient, id: i64) -> Result<CallbackRequest, StoreError> {
    the_one(select_callbacks(c, "id = $1", &[&id])?, "callback", id)
}

/// Locks the callback and reads the state a transition starts from.
fn lock_callback(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<(CallbackState, u32, u32), StoreError> {
    let row = c
        .query_opt(
            "SELECT state, attempts, max_attempts FROM callbacks WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .ok_or(StoreError::NotFound {
            kind: "callback",
            id,
        })?;
    Ok((
        CallbackState::from_stored(row.get(0))?,
        row.get::<_, i32>(1) as u32,
        row.get::<_, i32>(2) as u32,
    ))
}

/// Dialing -> Pending or Done, inside the caller's transaction.
fn finish_in(
    c: &mut impl GenericClient,
    id: i64,
    at_ms: i64,
    outcome: AttemptOutcome,
    next_not_before_ms: Option<i64>,
) -> Result<(), StoreError> {
    let (state, attempts, max) = lock_callback(c, id)?;
    expect_callback_state(id, state, CallbackState::Dialing, "finish an attempt")?;
    c.execute(
        "UPDATE callback_attempts SET finished_at_ms = $2, outcome = $3
         WHERE callback_id = $1 AND outcome IS NULL",
        &[&id, &at_ms, &outcome.as_str()],
    )?;
    match AfterAttempt::of(outcome, attempts, max, next_not_before_ms) {
        AfterAttempt::Done(final_outcome) => c.execute(
            "UPDATE callbacks SET state = 'done', outcome = $2, done_at_ms = $3 WHERE id = $1",
            &[&id, &final_outcome.as_str(), &at_ms],
        )?,
        AfterAttempt::Uncounted { not_before_ms } => c.execute(
            "UPDATE callbacks SET state = 'pending', attempts = attempts - 1,
                 not_before_ms = COALESCE($2, not_before_ms)
             WHERE id = $1",
            &[&id, &not_before_ms],
        )?,
        AfterAttempt::Retry { not_before_ms } => c.execute(
            "UPDATE callbacks SET state = 'pending', not_before_ms = $2 WHERE id = $1",
            &[&id, &not_before_ms],
        )?,
    };
    Ok(())
}

fn voicemail_row(r: &Row) -> VoicemailRow {
    VoicemailRow {
        id: r.get(0),
        mailbox: r.get(1),
        caller: r.get(2),
        did: r.get(3),
        call_id: r.get(4),
        recorded_at_ms: r.get(5),
        duration_ms: r.get(6),
        wav_path: r.get(7),
        variables: r.get(8),
        deadline_ms: r.get(9),
        state: r.get(10),
        agent: r.get(11),
        taken_at_ms: r.get(12),
        closed_at_ms: r.get(13),
        outcome: r.get(14),
    }
}

fn select_voicemails(
    c: &mut impl GenericClient,
    condition: &str,
    order_limit: &str,
    params: Params<'_>,
) -> Result<Vec<Voicemail>, StoreError> {
    c.query(
        &format!("SELECT {VOICEMAIL_COLUMNS} FROM voicemails WHERE {condition} {order_limit}"),
        params,
    )?
    .iter()
    .map(|r| voicemail_row(r).into_voicemail())
    .collect()
}

/// The voicemail; with `FOR UPDATE` as `lock`, locked until the transaction ends.
fn load_voicemail(
    c: &mut impl GenericClient,
    id: i64,
    lock: &str,
) -> Result<Voicemail, StoreError> {
    the_one(
        select_voicemails(c, "id = $1", lock, &[&id])?,
        "voicemail",
        id,
    )
}

fn take_in(c: &mut impl GenericClient, id: i64, agent: &str, at_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE voicemails SET state = 'taken', agent = $2, taken_at_ms = $3 WHERE id = $1",
        &[&id, &agent, &at_ms],
    )?;
    Ok(())
}

impl TaskStore for PgStore {
    fn upsert_callback(&self, req: &NewCallback) -> Result<(i64, bool), StoreError> {
        let req = req.clone();
        let variables = serde_json::to_string(&req.variables)?;
        let node = self.node.clone();
        let (id, created) = self.run(move |c| {
            let band_start = req.band.map(|b| i32::from(b.start_minute));
            let band_end = req.band.map(|b| i32::from(b.end_minute));
            // One statement against the partial unique index: two nodes booking the same
            // number at once get one request, never a constraint error. `xmax = 0` tells a
            // fresh row from an updated one.
            let row = c.query_one(
                "INSERT INTO callbacks (queue, number, caller_call_id, did, requested_at_ms,
                     band_start, band_end, not_before_ms, deadline_ms, attempts, max_attempts,
                     state, variables, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, 'pending',
                     $11::text::jsonb, $12)
                 ON CONFLICT (queue, number) WHERE state <> 'done' DO UPDATE SET
                     band_start = excluded.band_start, band_end = excluded.band_end,
                     not_before_ms = excluded.not_before_ms,
                     deadline_ms = excluded.deadline_ms, variables = excluded.variables
                 RETURNING id, (xmax = 0)",
                &[
                    &req.queue,
                    &req.number,
                    &req.caller_call_id,
                    &req.did,
                    &req.requested_at_ms,
                    &band_start,
                    &band_end,
                    &req.not_before_ms,
                    &req.deadline_ms,
                    &(req.max_attempts as i32),
                    &variables,
                    &node,
                ],
            )?;
            Ok((row.get::<_, i64>(0), row.get::<_, bool>(1)))
        })?;
        tracing::debug!(id, created, "callback request stored");
        Ok((id, created))
    }

    fn callback(&self, id: i64) -> Result<Option<CallbackRequest>, StoreError> {
        self.run(move |c| Ok(select_callbacks(c, "id = $1", &[&id])?.into_iter().next()))
    }

    fn find_pending(
        &self,
        queue: &str,
        number: &str,
    ) -> Result<Option<CallbackRequest>, StoreError> {
        let (queue, number) = (queue.to_string(), number.to_string());
        self.run(move |c| {
            Ok(select_callbacks(
                c,
                "queue = $1 AND number = $2 AND state <> 'done'",
                &[&queue, &number],
            )?
            .into_iter()
            .next())
        })
    }

    fn pending_callbacks(&self) -> Result<Vec<CallbackRequest>, StoreError> {
        self.run(|c| select_callbacks(c, "state <> 'done'", &[]))
    }

    fn own_pending_callbacks(&self) -> Result<Vec<CallbackRequest>, StoreError> {
        let node = self.node.clone();
        self.run(move |c| select_callbacks(c, "state <> 'done' AND node = $1", &[&node]))
    }

    fn count_pending(&self, queue: &str) -> Result<usize, StoreError> {
        let queue = queue.to_string();
        self.run(move |c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM callbacks WHERE queue = $1 AND state <> 'done'",
                    &[&queue],
                )?
                .get(0);
            Ok(n as usize)
        })
    }

    /// Only the owner dials: a node that kept a callback in line while another adopted it
    /// (it was cut off from the database for longer than the timeout) is refused here.
    fn start_attempt(&self, id: i64, at_ms: i64, agent: Option<&str>) -> Result<u32, StoreError> {
        let agent = agent.map(str::to_string);
        let node = self.node.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let (state, attempts, max) = lock_callback(&mut tx, id)?;
            expect_callback_state(id, state, CallbackState::Pending, "start an attempt")?;
            let owner: String = tx
                .query_one("SELECT node FROM callbacks WHERE id = $1", &[&id])?
                .get(0);
            if owner != node {
                return Err(StoreError::InvalidState {
                    kind: "callback",
                    id,
                    state: format!("pending on node {owner}"),
                    action: "start an attempt",
                });
            }
            check_attempts_left(id, attempts, max)?;
            tx.execute(
                "INSERT INTO callback_attempts (callback_id, seq, started_at_ms, agent)
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM callback_attempts
                              WHERE callback_id = $1), $2, $3)",
                &[&id, &at_ms, &agent],
            )?;
            tx.execute(
                "UPDATE callbacks SET state = 'dialing', attempts = attempts + 1 WHERE id = $1",
                &[&id],
            )?;
            tx.commit()?;
            Ok(attempts + 1)
        })
    }

    fn finish_attempt(
        &self,
        id: i64,
        at_ms: i64,
        outcome: AttemptOutcome,
        next_not_before_ms: Option<i64>,
    ) -> Result<CallbackRequest, StoreError> {
        self.run(move |c| {
            let mut tx = c.transaction()?;
            finish_in(&mut tx, id, at_ms, outcome, next_not_before_ms)?;
            let cb = must_load_callback(&mut tx, id)?;
            tx.commit()?;
            Ok(cb)
        })
    }

    fn cancel_callback(&self, id: i64, at_ms: i64) -> Result<CallbackRequest, StoreError> {
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let (state, _, _) = lock_callback(&mut tx, id)?;
            expect_callback_state(id, state, CallbackState::Pending, "cancel")?;
            tx.execute(
                "UPDATE callbacks SET state = 'done', outcome = $2, done_at_ms = $3
                 WHERE id = $1",
                &[&id, &CallbackOutcome::Cancelled.as_str(), &at_ms],
            )?;
            let cb = must_load_callback(&mut tx, id)?;
            tx.commit()?;
            Ok(cb)
        })
    }

    /// Only this node's: another node's callback being dialed is that node's call in progress.
    fn recover_after_crash(&self, at_ms: i64) -> Result<Vec<CallbackRequest>, StoreError> {
        let node = self.node.clone();
        let recovered = self.run(move |c| {
            let mut tx = c.transaction()?;
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM callbacks WHERE state = 'dialing' AND node = $1
                     ORDER BY id FOR UPDATE",
                    &[&node],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for &id in &ids {
                finish_in(&mut tx, id, at_ms, AttemptOutcome::Interrupted, None)?;
            }
            let list = select_callbacks(&mut tx, "id = ANY($1)", &[&ids])?;
            tx.commit()?;
            Ok(list)
        })?;
        log_recovered(&recovered);
        Ok(recovered)
    }

    fn heartbeat(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        let node = node.to_string();
        self.run(move |c| {
            c.execute(
                "INSERT INTO nodes (name, seen_ms) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET seen_ms = excluded.seen_ms",
                &[&node, &now_ms],
            )?;
            Ok(())
        })
    }

    fn adopt_orphans(
        &self,
        node: &str,
        now_ms: i64,
        dead_after_ms: i64,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        let node = node.to_string();
        let adopted = self.run(move |c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "SELECT c.id, c.state, c.node FROM callbacks c
                 WHERE c.state <> 'done' AND c.node <> $1
                   AND NOT EXISTS (SELECT 1 FROM nodes n
                                   WHERE n.name = c.node AND n.seen_ms >= $2::BIGINT - $3::BIGINT)
                 ORDER BY c.id FOR UPDATE OF c SKIP LOCKED",
                &[&node, &now_ms, &dead_after_ms],
            )?;
            let mut ids = Vec::with_capacity(rows.len());
            for r in &rows {
                let (id, state, from): (i64, &str, &str) = (r.get(0), r.get(1), r.get(2));
                if state == CallbackState::Dialing.as_str() {
                    finish_in(&mut tx, id, now_ms, AttemptOutcome::Interrupted, None)?;
                }
                tracing::warn!(id, from, to = %node, "callback of a silent node adopted");
                ids.push(id);
            }
            tx.execute(
                "UPDATE callbacks SET node = $1 WHERE id = ANY($2)",
                &[&node, &ids],
            )?;
            let list = select_callbacks(&mut tx, "id = ANY($1)", &[&ids])?;
            tx.commit()?;
            Ok(list)
        })?;
        Ok(adopted)
    }

    fn insert_voicemail(&self, vm: &NewVoicemail) -> Result<(i64, bool), StoreError> {
        let vm = vm.clone();
        let variables = serde_json::to_string(&vm.variables)?;
        let node = self.node.clone();
        self.run(move |c| {
            let inserted = c.query_opt(
                "INSERT INTO voicemails (mailbox, caller, did, call_id, recorded_at_ms,
                     duration_ms, wav_path, variables, deadline_ms, state, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, 'new', $10)
                 ON CONFLICT (call_id, mailbox) DO NOTHING
                 RETURNING id",
                &[
                    &vm.mailbox,
                    &vm.caller,
                    &vm.did,
                    &vm.call_id,
                    &vm.recorded_at_ms,
                    &(vm.duration_ms as i64),
                    &vm.wav_path,
                    &variables,
                    &vm.deadline_ms,
                    &node,
                ],
            )?;
            if let Some(row) = inserted {
                return Ok((row.get(0), true));
            }
            let id: i64 = c
                .query_one(
                    "SELECT id FROM voicemails WHERE call_id = $1 AND mailbox = $2",
                    &[&vm.call_id, &vm.mailbox],
                )?
                .get(0);
            Ok((id, false))
        })
    }

    fn voicemail(&self, id: i64) -> Result<Option<Voicemail>, StoreError> {
        self.run(move |c| {
            Ok(select_voicemails(c, "id = $1", "", &[&id])?
                .into_iter()
                .next())
        })
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
        let mailboxes = mailboxes.to_vec();
        let agent = agent.to_string();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let next = tx.query_opt(
                "SELECT id FROM voicemails WHERE state = 'new' AND mailbox = ANY($1)
                 ORDER BY deadline_ms, recorded_at_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&mailboxes],
            )?;
            let Some(row) = next else {
                return Ok(None);
            };
            let id: i64 = row.get(0);
            take_in(&mut tx, id, &agent, at_ms)?;
            let vm = load_voicemail(&mut tx, id, "")?;
            tx.commit()?;
            Ok(Some(vm))
        })
    }

    fn take_voicemail(&self, id: i64, agent: &str, at_ms: i64) -> Result<Voicemail, StoreError> {
        let agent = agent.to_string();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let vm = load_voicemail(&mut tx, id, "FOR UPDATE")?;
            if !vm.check_take(&agent)? {
                return Ok(vm);
            }
            take_in(&mut tx, id, &agent, at_ms)?;
            let vm = load_voicemail(&mut tx, id, "")?;
            tx.commit()?;
            Ok(vm)
        })
    }

    fn release_voicemail(&self, id: i64, agent: &str) -> Result<Voicemail, StoreError> {
        let agent = agent.to_string();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            load_voicemail(&mut tx, id, "FOR UPDATE")?.check_release(&agent)?;
            tx.execute(
                "UPDATE voicemails SET state = 'new', agent = NULL, taken_at_ms = NULL
                 WHERE id = $1",
                &[&id],
            )?;
            let vm = load_voicemail(&mut tx, id, "")?;
            tx.commit()?;
            Ok(vm)
        })
    }

    fn close_voicemail(
        &self,
        id: i64,
        agent: &str,
        at_ms: i64,
        outcome: &str,
    ) -> Result<Voicemail, StoreError> {
        let (agent, outcome) = (agent.to_string(), outcome.to_string());
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let taken_at_ms =
                load_voicemail(&mut tx, id, "FOR UPDATE")?.check_close(&agent, at_ms)?;
            tx.execute(
                "UPDATE voicemails SET state = 'closed', agent = $2, taken_at_ms = $3,
                     closed_at_ms = $4, outcome = $5
                 WHERE id = $1",
                &[&id, &agent, &taken_at_ms, &at_ms, &outcome],
            )?;
            let vm = load_voicemail(&mut tx, id, "")?;
            tx.commit()?;
            Ok(vm)
        })
    }

    fn voicemails(&self, filter: &VoicemailFilter) -> Result<Vec<Voicemail>, StoreError> {
        let mailbox = filter.mailbox.clone();
        let status = filter
            .status
            .map(|s| VoicemailStatus::as_str(s).to_string());
        // LIMIT NULL is no limit.
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        self.run(move |c| {
            select_voicemails(
                c,
                "($1::text IS NULL OR mailbox = $1) AND ($2::text IS NULL OR state = $2)",
                "ORDER BY recorded_at_ms, id LIMIT $3",
                &[&mailbox, &status, &limit],
            )
        })
    }

    fn late_tasks(&self, now_ms: i64) -> Result<Vec<Task>, StoreError> {
        self.run(move |c| {
            Ok(late_tasks(
                select_callbacks(c, "state = 'pending' AND deadline_ms < $1", &[&now_ms])?,
                select_voicemails(
                    c,
                    "state = 'new' AND deadline_ms < $1",
                    "ORDER BY deadline_ms, id",
                    &[&now_ms],
                )?,
            ))
        })
    }

    fn callbacks_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<CallbackRequest>, StoreError> {
        self.run(move |c| {
            select_callbacks(
                c,
                "requested_at_ms >= $1 AND requested_at_ms < $2",
                &[&from_ms, &to_ms],
            )
        })
    }

    fn voicemails_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Voicemail>, StoreError> {
        self.run(move |c| {
            select_voicemails(
                c,
                "recorded_at_ms >= $1 AND recorded_at_ms < $2",
                "ORDER BY recorded_at_ms, id",
                &[&from_ms, &to_ms],
            )
        })
    }
}
