//! Call records and the queue log: replacement by call id, newest first, periods whatever the
//! offset, queue-log order, and every field round-tripping.

use super::{Backend, Db};
use crate::{CallRecord, QueueEvent, Store};

/// 2026-11-27T10:00:00Z.
pub const T0: i64 = 1_795_773_600_000;

pub fn record(id: &str) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        caller: "0612345678".into(),
        did: "803164".into(),
        trunk: "local".into(),
        channel: "pstn".into(),
        started_at: "2026-11-27T10:00:00Z".into(),
        ended_at: "2026-11-27T10:01:00Z".into(),
        disposition: "answered-ivr".into(),
        hangup_by: "caller".into(),
        path: vec!["welcome".into(), "language".into()],
        dtmf: "12".into(),
        ..Default::default()
    }
}

pub fn started(id: &str, started_at: &str) -> CallRecord {
    CallRecord {
        started_at: started_at.into(),
        ..record(id)
    }
}

pub fn ids(calls: Vec<CallRecord>) -> Vec<String> {
    calls.into_iter().map(|r| r.call_id).collect()
}

pub fn event(at_ms: i64, call_id: &str, kind: crate::QueueEventKind) -> QueueEvent {
    QueueEvent {
        at_ms,
        call_id: call_id.into(),
        queue: "pensions".into(),
        agent: "a1".into(),
        kind,
        data: vec![call_id.into(), at_ms.to_string()],
    }
}

pub(super) fn a_record_survives_reopening_the_store<B: Backend>(db: &mut Db<'_, B>) {
    {
        let s = db.open();
        s.record_call(&record("a")).unwrap();
    }
    let s = db.open();
    assert_eq!(s.call("a").unwrap(), Some(record("a")));
    assert_eq!(s.call("missing").unwrap(), None);
    // Another node of a shared store sees it too; a store of one node, the same file.
    assert_eq!(db.node("n2").call("a").unwrap(), Some(record("a")));
}

pub(super) fn recent_calls_are_newest_first_and_rewrites_keep_one_row<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
    s.record_call(&record("a")).unwrap();
    s.record_call(&record("b")).unwrap();
    let mut again = record("a");
    again.disposition = "transferred".into();
    s.record_call(&again).unwrap();
    let ids: Vec<_> = s
        .recent_calls(10)
        .unwrap()
        .into_iter()
        .map(|r| (r.call_id, r.disposition))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("b".to_string(), "answered-ivr".to_string()),
            ("a".to_string(), "transferred".to_string())
        ]
    );
}

pub(super) fn a_record_with_its_acd_path_survey_and_recordings_round_trips<B: Backend>(
    db: &mut Db<'_, B>,
) {
    use crate::{AcdRecord, LegRecord, OfferRecord, RecordingRef, SurveyAnswer, TransferRecord};
    let full = CallRecord {
        answered_at: Some("2026-11-27T10:00:01Z".into()),
        sip_status: Some(200),
        language: Some("it".into()),
        variables: [("cf".to_string(), "RSSMRA".to_string())].into(),
        choices: vec!["language=1".into()],
        outcome: Some("queue:pensions".into()),
        acd: Some(AcdRecord {
            queue: "pensions".into(),
            queued_at: "2026-11-27T10:00:20Z".into(),
            offers: vec![
                OfferRecord {
                    agent: "a1".into(),
                    queue: "pensions".into(),
                    at: "2026-11-27T10:00:25Z".into(),
                    outcome: "no-answer".into(),
                },
                OfferRecord {
                    agent: "a2".into(),
                    queue: "pensions".into(),
                    at: "2026-11-27T10:00:45Z".into(),
                    outcome: "answered".into(),
                },
            ],
            legs: vec![
                LegRecord {
                    agent: "a2".into(),
                    queue: "pensions".into(),
                    answered_at: "2026-11-27T10:00:50Z".into(),
                    ended_at: "2026-11-27T10:03:00Z".into(),
                    hold_ms: 12_000,
                },
                LegRecord {
                    agent: "a7".into(),
                    queue: "appeals".into(),
                    answered_at: "2026-11-27T10:03:10Z".into(),
                    ended_at: "2026-11-27T10:05:00Z".into(),
                    hold_ms: 0,
                },
            ],
            transfers: vec![TransferRecord {
                by: "a2".into(),
                to: "queue:appeals".into(),
                kind: "blind".into(),
                at: "2026-11-27T10:03:00Z".into(),
            }],
            queue_wait_ms: Some(30_000),
            hold_ms: 12_000,
            exit: None,
        }),
        survey: vec![
            SurveyAnswer {
                question: "courtesy".into(),
                score: 6,
            },
            SurveyAnswer {
                question: "solved".into(),
                score: 2,
            },
        ],
        recordings: vec![RecordingRef {
            file: "2026/11/27/c1.wav".into(),
            started_at: "2026-11-27T10:00:50Z".into(),
            stopped_at: "2026-11-27T10:03:00Z".into(),
        }],
        ..record("c1")
    };
    let s = db.open();
    s.record_call(&full).unwrap();
    assert_eq!(s.call("c1").unwrap().as_ref(), Some(&full));
    assert_eq!(s.calls_between(T0, T0 + 1).unwrap(), vec![full]);
}

pub(super) fn calls_are_selected_by_start_in_a_half_open_period_whatever_the_offset<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let s = db.open();
    s.record_calls(&[
        started("to", "2026-11-27T11:00:00Z"),
        started("before", "2026-11-27T09:59:59.999Z"),
        // The same instant as `from`, written in Italian winter time.
        started("from", "2026-11-27T11:00:00+01:00"),
        started("last", "2026-11-27T10:59:59.999Z"),
        started("mid", "2026-11-27T10:30:00.5+00:00"),
        started("garbage", "yesterday"),
    ])
    .unwrap();
    let hour = 3_600_000;
    assert_eq!(
        ids(s.calls_between(T0, T0 + hour).unwrap()),
        vec!["from", "mid", "last"]
    );
    assert_eq!(ids(s.calls_between(T0 - 1, T0).unwrap()), vec!["before"]);
    assert_eq!(
        ids(s.calls_between(T0 + hour, T0 + 2 * hour).unwrap()),
        vec!["to"]
    );
    assert!(s.calls_between(T0, T0).unwrap().is_empty());
    // Outside every period, but stored.
    assert_eq!(s.call("garbage").unwrap().unwrap().started_at, "yesterday");
    assert_eq!(s.calls_between(i64::MIN, i64::MAX).unwrap().len(), 5);

    // A rewrite that moves the start moves the call between periods.
    s.record_call(&started("mid", "2026-11-27T12:00:00Z"))
        .unwrap();
    assert_eq!(
        ids(s.calls_between(T0, T0 + hour).unwrap()),
        vec!["from", "last"]
    );
    assert_eq!(
        ids(s.calls_between(T0 + hour, T0 + 3 * hour).unwrap()),
        vec!["to", "mid"]
    );
}

pub(super) fn queue_events_come_back_by_time_then_in_the_order_appended<B: Backend>(
    db: &mut Db<'_, B>,
) {
    use crate::QueueEventKind::*;
    let s = db.open();
    s.append_queue_events(&[
        event(T0 + 5, "c1", Connect),
        event(T0 + 5, "c1", Complete),
        event(T0, "c1", Enter),
    ])
    .unwrap();
    s.append_queue_events(&[
        event(T0 + 5, "c2", Enter),
        event(T0 + 10, "c2", Abandon),
        event(T0 - 1, "c0", Exit),
    ])
    .unwrap();
    let got: Vec<_> = s
        .queue_events(T0, T0 + 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.at_ms, e.call_id, e.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (T0, "c1".to_string(), Enter),
            (T0 + 5, "c1".to_string(), Connect),
            (T0 + 5, "c1".to_string(), Complete),
            (T0 + 5, "c2".to_string(), Enter),
        ]
    );
    let all = s.queue_events(i64::MIN, i64::MAX).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], event(T0 - 1, "c0", Exit));
    assert_eq!(all[5], event(T0 + 10, "c2", Abandon));
}

pub(super) fn every_event_kind_and_its_data_round_trip<B: Backend>(db: &mut Db<'_, B>) {
    let events: Vec<_> = crate::QueueEventKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| QueueEvent {
            data: (0..i).map(|d| format!("d{d}, \"quoted\"")).collect(),
            ..event(T0 + i as i64, "", kind)
        })
        .collect();
    let s = db.open();
    s.append_queue_events(&events).unwrap();
    assert_eq!(s.queue_events(T0, T0 + 100).unwrap(), events);
}
