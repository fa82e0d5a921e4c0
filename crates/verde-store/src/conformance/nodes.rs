//! Several writers on one database: racing claims, and in a shared store the nodes' own
//! callbacks, heartbeats and the adoption of a silent node's basket.

use super::tasks::{callback_ids as ids, request, voicemail, MIN, T0};
use super::{Backend, Db};
use crate::tasks::{AttemptOutcome, CallbackState};
use crate::{StoreError, TaskStore};
use std::collections::BTreeSet;

const SECOND: i64 = 1000;

/// Two writers taking voicemails at the same time: every voicemail is taken exactly once.
pub(super) fn two_writers_never_take_the_same_voicemail<B: Backend>(db: &mut Db<'_, B>) {
    const N: usize = 40;
    let one = db.node("n1");
    let two = db.node("n2");
    for i in 0..N {
        one.insert_voicemail(&voicemail("m", &format!("v{i}"), T0 + i as i64, T0 + MIN))
            .unwrap();
    }
    let boxes = vec!["m".to_string()];
    let take_all = |s: &B::Store, agent: &str| {
        let mut got = Vec::new();
        while let Some(v) = s.take_next_voicemail(&boxes, agent, T0).unwrap() {
            got.push(v.id);
        }
        got
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| take_all(&one, "anna"));
        let b = scope.spawn(|| take_all(&two, "bruno"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let all: BTreeSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(all.len(), a.len() + b.len(), "a voicemail was taken twice");
    assert_eq!(all.len(), N, "a voicemail was never taken");
}

/// Two writers booking the same number and starting its attempt at the same time: one
/// request, one attempt.
pub(super) fn racing_bookings_and_attempts_give_one_request_and_one_attempt<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let one = db.node("n1");
    let two = db.node("n2");
    for round in 0..10 {
        let number = format!("06{round}");
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| one.upsert_callback(&request("q", &number, T0)).unwrap());
            let b = scope.spawn(|| two.upsert_callback(&request("q", &number, T0)).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a.0, b.0, "two requests for one number");
        assert!(a.1 ^ b.1, "exactly one of them creates it: {a:?} {b:?}");
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| one.start_attempt(a.0, T0, Some("anna")));
            let y = scope.spawn(|| two.start_attempt(a.0, T0, Some("bruno")));
            (x.join().unwrap(), y.join().unwrap())
        });
        let started = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(started, 1, "{x:?} {y:?}");
        for r in [x, y] {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::InvalidState { .. }), "{e}");
            }
        }
        assert_eq!(one.callback(a.0).unwrap().unwrap().attempt_log.len(), 1);
    }
}

/// A node dials what it booked, and only that; restarting, it recovers only its own
/// interrupted attempts.
pub(super) fn a_node_dials_and_recovers_only_its_own_callbacks<B: Backend>(db: &mut Db<'_, B>) {
    let one = db.node("n1");
    let two = db.node("n2");
    let (a, _) = one.upsert_callback(&request("q", "061", T0)).unwrap();
    let (b, _) = two.upsert_callback(&request("q", "062", T0 + MIN)).unwrap();
    one.start_attempt(a, T0 + 2 * MIN, None).unwrap();
    two.start_attempt(b, T0 + 2 * MIN, None).unwrap();
    // Everyone sees the whole basket.
    assert_eq!(ids(two.pending_callbacks().unwrap()), vec![a, b]);
    if !db.shared() {
        // One node: it dials everything, and a restart recovers everything.
        assert_eq!(ids(one.own_pending_callbacks().unwrap()), vec![a, b]);
        assert_eq!(
            ids(one.recover_after_crash(T0 + 3 * MIN).unwrap()),
            vec![a, b]
        );
        return;
    }
    assert_eq!(ids(one.own_pending_callbacks().unwrap()), vec![a]);
    assert_eq!(ids(two.own_pending_callbacks().unwrap()), vec![b]);
    // Only the owner dials.
    let (c, _) = one.upsert_callback(&request("q", "063", T0)).unwrap();
    assert!(matches!(
        two.start_attempt(c, T0 + 2 * MIN, None),
        Err(StoreError::InvalidState { .. })
    ));
    assert_eq!(one.start_attempt(c, T0 + 2 * MIN, None).unwrap(), 1);
    // n1 restarts while n2 is on the phone with its customer.
    let restarted = db.node("n1");
    assert_eq!(
        ids(restarted.recover_after_crash(T0 + 3 * MIN).unwrap()),
        vec![a, c]
    );
    assert_eq!(
        two.callback(b).unwrap().unwrap().state,
        CallbackState::Dialing,
        "another node's call in progress was interrupted"
    );
    two.finish_attempt(b, T0 + 4 * MIN, AttemptOutcome::Answered, None)
        .unwrap();
}

/// A node silent for longer than the timeout loses its basket to the first living node that
/// looks, attempt in progress included; a living node keeps its own; two adopters split it.
pub(super) fn the_basket_of_a_silent_node_is_adopted_once<B: Backend>(db: &mut Db<'_, B>) {
    let one = db.node("n1");
    let two = db.node("n2");
    let three = db.node("n3");
    let dead_after = 30 * SECOND;
    let now = T0 + 600 * MIN;
    if !db.shared() {
        // One node: heartbeats are accepted and no one is ever an orphan.
        one.upsert_callback(&request("q", "061", T0)).unwrap();
        one.heartbeat("n1", now).unwrap();
        assert!(one
            .adopt_orphans("n1", now + 3_600_000, dead_after)
            .unwrap()
            .is_empty());
        return;
    }
    let mut mine = Vec::new();
    for i in 0..6 {
        mine.push(
            one.upsert_callback(&request("q", &format!("06{i}"), T0 + i as i64))
                .unwrap()
                .0,
        );
    }
    one.start_attempt(mine[0], now - MIN, Some("anna")).unwrap();
    let (done, _) = one.upsert_callback(&request("q", "069", T0)).unwrap();
    one.cancel_callback(done, T0 + 1).unwrap();
    let (theirs, _) = two.upsert_callback(&request("q", "070", T0)).unwrap();
    for (node, s) in [("n1", &one), ("n2", &two), ("n3", &three)] {
        s.heartbeat(node, now).unwrap();
    }
    // Everyone alive: nothing moves, whatever the timeout's edge.
    assert!(two
        .adopt_orphans("n2", now + dead_after, dead_after)
        .unwrap()
        .is_empty());

    // n1 falls silent; n2 and n3 keep beating and look at the same moment.
    let later = now + dead_after + SECOND;
    two.heartbeat("n2", later).unwrap();
    three.heartbeat("n3", later).unwrap();
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| two.adopt_orphans("n2", later, dead_after).unwrap());
        let y = scope.spawn(|| three.adopt_orphans("n3", later, dead_after).unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    let got: BTreeSet<i64> = x.iter().chain(&y).map(|c| c.id).collect();
    assert_eq!(got.len(), x.len() + y.len(), "a callback adopted twice");
    assert_eq!(
        got,
        mine.iter().copied().collect(),
        "the finished one stays"
    );
    assert!(!got.contains(&theirs));
    for c in x.iter().chain(&y) {
        assert_eq!(c.state, CallbackState::Pending, "{c:?}");
    }
    let interrupted = x.iter().chain(&y).find(|c| c.id == mine[0]).unwrap();
    assert_eq!(interrupted.attempts, 0, "the cut attempt does not count");
    assert_eq!(
        interrupted.attempt_log[0].outcome,
        Some(AttemptOutcome::Interrupted)
    );
    // They are now the adopters' to dial, and n1 has none left.
    let owned: BTreeSet<i64> = two
        .own_pending_callbacks()
        .unwrap()
        .into_iter()
        .chain(three.own_pending_callbacks().unwrap())
        .map(|c| c.id)
        .collect();
    assert_eq!(owned, got.iter().copied().chain([theirs]).collect());
    assert!(one.own_pending_callbacks().unwrap().is_empty());
    assert!(two
        .adopt_orphans("n2", later, dead_after)
        .unwrap()
        .is_empty());

    // A node that never sent a heartbeat (renamed, gone) counts as silent.
    let ghost = db.node("ghost");
    let (lost, _) = ghost.upsert_callback(&request("q", "080", T0)).unwrap();
    let adopted = three.adopt_orphans("n3", later, dead_after).unwrap();
    assert_eq!(ids(adopted), vec![lost]);
}
