//! Callbacks and voicemails: the basket's dedup rule, line order, attempts, recovery after a
//! crash, voicemail claims, SLA lateness and periods.

use super::{Backend, Db};
use crate::tasks::{
    Attempt, AttemptOutcome, CallbackOutcome, CallbackRequest, CallbackState, NewCallback,
    NewVoicemail, Task, TimeBand, VoicemailFilter, VoicemailState, VoicemailStatus,
};
use crate::{StoreError, TaskStore};
use std::collections::BTreeMap;

pub const MIN: i64 = 60_000;
pub const T0: i64 = 1_795_000_000_000;

pub fn request(queue: &str, number: &str, requested_at_ms: i64) -> NewCallback {
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

pub fn voicemail(
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

pub(super) fn callback_ids(callbacks: Vec<CallbackRequest>) -> Vec<i64> {
    callbacks.into_iter().map(|c| c.id).collect()
}

pub(super) fn a_second_request_updates_the_first_and_keeps_its_place_and_attempts<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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

pub(super) fn the_same_number_in_another_queue_or_after_completion_is_a_new_request<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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

pub(super) fn pending_callbacks_are_in_line_order_whatever_the_insertion_order<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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
    assert_eq!(
        callback_ids(s.pending_callbacks().unwrap()),
        vec![ids[1], ids[3], ids[2], ids[0]]
    );
    assert_eq!(s.count_pending("q").unwrap(), 4);
}

pub(super) fn two_unanswered_attempts_end_not_reached_and_forbid_a_third<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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

pub(super) fn an_answered_attempt_or_no_retry_ends_the_callback<B: Backend>(db: &mut Db<'_, B>) {
    let s = db.open();
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

pub(super) fn an_attempt_cut_by_a_crash_is_retried_once_and_does_not_count<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let (id, other) = {
        let s = db.open();
        let (id, _) = s.upsert_callback(&request("q", "061", T0)).unwrap();
        let (other, _) = s.upsert_callback(&request("q", "062", T0 + MIN)).unwrap();
        s.start_attempt(id, T0 + 10 * MIN, Some("anna")).unwrap();
        (id, other)
        // Dropped without finishing the attempt, as a crash would leave it.
    };
    // The same node starting again on the same database.
    let s = db.open();
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
    assert_eq!(
        callback_ids(s.pending_callbacks().unwrap()),
        vec![id, other],
        "not duplicated, still first in line"
    );

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

pub(super) fn another_connection_sees_a_started_attempt_and_cannot_start_it_again<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let a = db.open();
    let b = db.node("n2");
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

pub(super) fn voicemails_are_taken_earliest_deadline_first_and_closed_by_their_holder<
    B: Backend,
>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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

pub(super) fn voicemail_listing_filters_by_mailbox_and_status<B: Backend>(db: &mut Db<'_, B>) {
    let s = db.open();
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

pub(super) fn late_tasks_are_the_open_ones_past_their_deadline_earliest_first<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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

pub(super) fn callbacks_of_a_period_are_every_state_with_their_attempts<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
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
        callback_ids(s.callbacks_between(from - 1, from).unwrap()),
        vec![before]
    );
    assert_eq!(s.callbacks_between(to, to + 1).unwrap()[0].id, at_end);
    assert!(s.callbacks_between(to, to).unwrap().is_empty());
}

pub(super) fn voicemails_of_a_period_are_every_state_oldest_first<B: Backend>(db: &mut Db<'_, B>) {
    let s = db.open();
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
