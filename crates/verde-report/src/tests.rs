//! Hand-built records with known times; every expected figure is worked out in the comments.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use verde_store::{
    AcdRecord, Attempt, AttemptOutcome, CallRecord, CallbackOutcome, CallbackRequest,
    CallbackState, LegRecord, QueueEvent, QueueEventKind, RecordingRef, SurveyAnswer,
    TransferRecord, Voicemail, VoicemailState,
};

use crate::*;

/// 2026-03-02 09:00 UTC, 10:00 in Rome (UTC+1 until the end of March), a Monday.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    base() + TimeDelta::seconds(secs)
}

fn s(secs: i64) -> String {
    at(secs).to_rfc3339()
}

/// A call arriving `start` seconds after 09:00 UTC; the IVR answers after `ivr` seconds.
fn call(id: &str, start: i64, ivr: Option<i64>, channel: &str) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        caller: "+390612345".into(),
        did: "800123456".into(),
        trunk: "tim".into(),
        channel: channel.into(),
        started_at: s(start),
        answered_at: ivr.map(|d| s(start + d)),
        ended_at: s(start + 60),
        disposition: "completed-ivr".into(),
        hangup_by: "engine".into(),
        path: vec!["welcome".into(), "menu".into()],
        choices: vec!["menu=1".into()],
        language: Some("it".into()),
        ..Default::default()
    }
}

struct Q {
    queue: &'static str,
    /// Seconds after arrival.
    entered: i64,
    wait: i64,
    exit: Option<&'static str>,
    /// (agent, queue, talk s, hold ms), one after the other from the answer.
    legs: Vec<(&'static str, &'static str, i64, u64)>,
}

fn queued(mut r: CallRecord, start: i64, q: Q) -> CallRecord {
    let entered = start + q.entered;
    let mut legs = Vec::new();
    let mut t = entered + q.wait;
    for (agent, queue, talk, hold_ms) in &q.legs {
        legs.push(LegRecord {
            agent: (*agent).into(),
            queue: (*queue).into(),
            answered_at: s(t),
            ended_at: s(t + talk),
            hold_ms: *hold_ms,
        });
        t += talk;
    }
    r.ended_at = s(t.max(entered + q.wait));
    r.outcome = Some(format!("queue:{}", q.queue));
    r.disposition = if legs.is_empty() {
        "abandoned-queue".into()
    } else {
        "answered-agent".into()
    };
    r.hangup_by = "caller".into();
    let transfers = if legs.len() > 1 {
        vec![TransferRecord {
            by: legs[0].agent.clone(),
            to: format!("queue:{}", legs[1].queue),
            kind: "blind".into(),
            at: legs[0].ended_at.clone(),
        }]
    } else {
        vec![]
    };
    r.acd = Some(AcdRecord {
        queue: q.queue.into(),
        queued_at: s(entered),
        offers: vec![],
        hold_ms: legs.iter().map(|l| l.hold_ms).sum(),
        legs,
        transfers,
        queue_wait_ms: Some(q.wait as u64 * 1000),
        exit: q.exit.map(str::to_string),
    });
    r
}

fn survey(r: &mut CallRecord, answers: &[(&str, u8)]) {
    r.survey = answers
        .iter()
        .map(|(q, score)| SurveyAnswer {
            question: (*q).into(),
            score: *score,
        })
        .collect();
}

/// Ten calls, each arriving 10 minutes after the previous one from 09:00 UTC (c1-c6 in the
/// 10:00 hour in Rome, c7-c10 in the 11:00 hour).
fn ten_calls() -> Vec<CallRecord> {
    let m = |i: i64| (i - 1) * 600;
    // c1: information given in the IVR, answered after 1 s.
    let mut c1 = call("c1", m(1), Some(1), "pstn");
    c1.outcome = Some("hangup:info".into());
    // c2: out of hours, answered after 2 s.
    let mut c2 = call("c2", m(2), Some(2), "pstn");
    c2.outcome = Some("hangup:closed".into());
    c2.variables.insert("schedule".into(), "closed".into());
    // c3: the caller hung up in the menu, answered after 1 s.
    let mut c3 = call("c3", m(3), Some(1), "pstn");
    c3.disposition = "abandoned-ivr".into();
    c3.outcome = Some("caller_hangup:menu".into());
    // c4: refused for capacity, never answered.
    let mut c4 = call("c4", m(4), None, "pstn");
    c4.disposition = "rejected".into();
    c4.sip_status = Some(503);
    c4.path.clear();
    // c5: IVR 1 s, pensions at +11 s, answered after 20 s of wait (at +31 s), talk 100 s
    // with 10 s on hold.
    let mut c5 = queued(
        call("c5", m(5), Some(1), "pstn"),
        m(5),
        Q {
            queue: "pensions",
            entered: 11,
            wait: 20,
            exit: None,
            legs: vec![("anna", "pensions", 100, 10_000)],
        },
    );
    survey(&mut c5, &[("q1", 6), ("q2", 5)]);
    c5.recordings = vec![RecordingRef {
        file: "2026/03/02/c5.wav".into(),
        started_at: s(m(5) + 31),
        stopped_at: s(m(5) + 131),
    }];
    // c6: IVR 1 s, pensions at +21 s, answered after 45 s (at +66 s), talk 60 s.
    let mut c6 = queued(
        call("c6", m(6), Some(1), "pstn"),
        m(6),
        Q {
            queue: "pensions",
            entered: 21,
            wait: 45,
            exit: None,
            legs: vec![("bruno", "pensions", 60, 0)],
        },
    );
    survey(&mut c6, &[("q1", 2), ("q2", 4)]);
    // c7: webrtc, IVR 3 s, pensions at +13 s, abandoned after 10 s (a short abandon).
    let c7 = queued(
        call("c7", m(7), Some(3), "webrtc"),
        m(7),
        Q {
            queue: "pensions",
            entered: 13,
            wait: 10,
            exit: Some("abandon"),
            legs: vec![],
        },
    );
    // c8: webrtc, IVR 1 s, pensions at +11 s, abandoned after 40 s.
    let c8 = queued(
        call("c8", m(8), Some(1), "webrtc"),
        m(8),
        Q {
            queue: "pensions",
            entered: 11,
            wait: 40,
            exit: Some("abandon"),
            legs: vec![],
        },
    );
    // c9: IVR 2 s, health at +12 s, answered after 90 s (at +102 s), 30 s with carla, then
    // transferred to pensions: 40 s with dario, 5 s on hold.
    let mut c9 = queued(
        call("c9", m(9), Some(2), "pstn"),
        m(9),
        Q {
            queue: "health",
            entered: 12,
            wait: 90,
            exit: None,
            legs: vec![("carla", "health", 30, 0), ("dario", "pensions", 40, 5_000)],
        },
    );
    survey(&mut c9, &[("q1", 5)]);
    // c10: IVR 1 s, health at +11 s, offered a callback and took it after 50 s.
    let mut c10 = queued(
        call("c10", m(10), Some(1), "pstn"),
        m(10),
        Q {
            queue: "health",
            entered: 11,
            wait: 50,
            exit: Some("callback"),
            legs: vec![],
        },
    );
    c10.disposition = "callback-requested".into();
    c10.hangup_by = "engine".into();
    c10.outcome = Some("callback:health".into());
    c10.variables.insert("callback_offered".into(), "1".into());
    vec![c1, c2, c3, c4, c5, c6, c7, c8, c9, c10]
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn utc(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
}

/// Working hours 08:00-18:00 UTC every day: enough to tell working from wall-clock time. The
/// number `800000024` is a service open around the clock.
fn office_hours(did: &str, a: DateTime<Utc>, b: DateTime<Utc>) -> TimeDelta {
    if did == "800000024" {
        return b - a;
    }
    let mut total = TimeDelta::zero();
    let mut day = a.date_naive();
    while day <= b.date_naive() {
        let open = Utc.from_utc_datetime(&day.and_hms_opt(8, 0, 0).unwrap());
        let close = Utc.from_utc_datetime(&day.and_hms_opt(18, 0, 0).unwrap());
        let (from, to) = (a.max(open), b.min(close));
        if to > from {
            total += to - from;
        }
        day = day.succ_opt().unwrap();
    }
    total
}

fn callback(
    id: i64,
    requested: DateTime<Utc>,
    attempts: &[(DateTime<Utc>, AttemptOutcome)],
    state: CallbackState,
    outcome: Option<CallbackOutcome>,
) -> CallbackRequest {
    CallbackRequest {
        id,
        queue: "health".into(),
        number: "+390612345".into(),
        caller_call_id: "c10".into(),
        did: "800123456".into(),
        requested_at_ms: ms(requested),
        band: None,
        not_before_ms: ms(requested),
        // The engine's deadline: 8 h of wall clock, to tell it from the working-hours window.
        deadline_ms: ms(requested + TimeDelta::hours(8)),
        attempts: attempts.len() as u32,
        max_attempts: 3,
        state,
        outcome,
        done_at_ms: None,
        attempt_log: attempts
            .iter()
            .map(|(t, o)| Attempt {
                started_at_ms: ms(*t),
                agent: Some("anna".into()),
                finished_at_ms: Some(ms(*t) + 60_000),
                outcome: Some(*o),
            })
            .collect(),
        variables: BTreeMap::new(),
    }
}

fn callbacks() -> Vec<CallbackRequest> {
    use AttemptOutcome::*;
    use CallbackState::*;
    let ans = Some(CallbackOutcome::Answered);
    vec![
        // cb1: 09:30 -> reached 14:30: 5 working h, on time; before the 17:30 deadline.
        callback(1, utc(2, 9, 30), &[(utc(2, 14, 30), Answered)], Done, ans),
        // cb2: 16:00 -> no answer 17:00, reached 10:30 next day: 2 h + 2.5 h = 4.5 working h
        // (18.5 h of wall clock): on time. The engine's deadline (here 16:00 + 8 h = 00:00
        // on the 3rd) had passed at 10:30: not by deadline.
        callback(
            2,
            utc(2, 16, 0),
            &[(utc(2, 17, 0), NoAnswer), (utc(3, 10, 30), Answered)],
            Done,
            ans,
        ),
        // cb3: 08:00 -> reached 17:00: 9 working h, late; deadline 16:00, missed too.
        callback(3, utc(2, 8, 0), &[(utc(2, 17, 0), Answered)], Done, ans),
        // cb4: cancelled by the caller: not judged.
        callback(
            4,
            utc(2, 10, 0),
            &[],
            Done,
            Some(CallbackOutcome::Cancelled),
        ),
        // cb5: pending since 17:00; at 09:00 next day 1 h + 1 h = 2 working h: still open.
        callback(5, utc(2, 17, 0), &[], Pending, None),
        // cb6: three attempts, never reached: judged, late.
        callback(
            6,
            utc(2, 9, 0),
            &[
                (utc(2, 10, 0), NoAnswer),
                (utc(2, 12, 0), Busy),
                (utc(2, 15, 0), NoAnswer),
            ],
            Done,
            Some(CallbackOutcome::NotReached),
        ),
        // cb7: pending since 08:00; at 09:00 next day 10 h + 1 h = 11 working h: late.
        callback(7, utc(2, 8, 0), &[], Pending, None),
        // Requested the day before the period: not counted.
        callback(8, utc(1, 12, 0), &[(utc(1, 13, 0), Answered)], Done, ans),
    ]
}

fn voicemail(id: i64, recorded: DateTime<Utc>, state: VoicemailState) -> Voicemail {
    Voicemail {
        id,
        mailbox: "facilities".into(),
        caller: "+390612345".into(),
        did: "800123456".into(),
        call_id: format!("vm-call-{id}"),
        recorded_at_ms: ms(recorded),
        duration_ms: 20_000,
        wav_path: format!("vm/{id}.wav"),
        variables: BTreeMap::new(),
        deadline_ms: 0,
        state,
    }
}

fn voicemails() -> Vec<Voicemail> {
    let taken = |t: DateTime<Utc>| VoicemailState::Taken {
        agent: "anna".into(),
        at_ms: ms(t),
    };
    vec![
        // vm1: 09:00 -> taken 12:00: 3 working h, on time.
        voicemail(1, utc(2, 9, 0), taken(utc(2, 12, 0))),
        // vm2: 17:00 -> taken 10:00 next day (then closed): 1 h + 2 h = 3 h, on time.
        voicemail(
            2,
            utc(2, 17, 0),
            VoicemailState::Closed {
                agent: "anna".into(),
                taken_at_ms: ms(utc(3, 10, 0)),
                at_ms: ms(utc(3, 10, 5)),
                outcome: "called back".into(),
            },
        ),
        // vm3: 08:00 -> taken 13:00: 5 h, late.
        voicemail(3, utc(2, 8, 0), taken(utc(2, 13, 0))),
        // vm4: new since 17:30; at 09:00 next day 0.5 h + 1 h: open.
        voicemail(4, utc(2, 17, 30), VoicemailState::New),
        // vm5: new since 10:00; at 09:00 next day 8 h + 1 h = 9 h: late.
        voicemail(5, utc(2, 10, 0), VoicemailState::New),
    ]
}

fn as_of() -> DateTime<Utc> {
    utc(3, 9, 0)
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn report_with(
    calls: &[CallRecord],
    bucket: Bucket,
    queue: Option<&str>,
    targets: &Targets,
) -> Report {
    let cbs = callbacks();
    let vms = voicemails();
    compute(
        &Input {
            calls,
            callbacks: &cbs,
            voicemails: &vms,
            as_of: as_of(),
        },
        Period::local_days(Rome, day(2), day(2)),
        &Grouping {
            bucket,
            tz: Rome,
            queue: queue.map(str::to_string),
        },
        targets,
        &office_hours,
    )
}

fn find<'r>(r: &'r Report, bucket: &str, queue: Option<&str>, channel: Option<&str>) -> &'r Row {
    r.rows
        .iter()
        .find(|row| {
            row.bucket == bucket
                && row.queue.as_deref() == queue
                && row.channel.as_deref() == channel
        })
        .unwrap_or_else(|| panic!("no row {bucket}/{queue:?}/{channel:?}"))
}

fn frac(r: &Ratio) -> (u64, u64) {
    (r.num, r.den)
}

#[test]
fn arrival_figures_of_the_ten_calls() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let c = find(&r, "total", None, None).calls.as_ref().unwrap();
    assert_eq!(c.arriving, 10);
    assert_eq!(c.rejected, 1, "c4");
    assert_eq!(frac(&c.ivr_handled), (3, 10), "c1, c2, c3");
    assert_eq!(c.ivr_abandoned, 1, "c3");
    assert_eq!(c.out_of_hours, 1, "c2");
    assert_eq!(frac(&c.transferred_out), (0, 10));
    assert_eq!(frac(&c.to_queue), (6, 10), "c5-c10");
    assert_eq!(frac(&c.callback_offered), (1, 10), "c10");
    assert_eq!(frac(&c.callback_requested), (1, 10), "c10");
    assert_eq!(frac(&c.callback_accepted), (1, 1));
    assert_eq!(frac(&c.answered_by_agent), (3, 10), "c5, c6, c9");
    // IVR answer: every call but the rejected c4: 1+2+1+1+1+3+1+2+1 = 13 s over 9 calls.
    assert_eq!((c.ivr_answer.count, c.ivr_answer.total_ms), (9, 13_000));
    assert_eq!(c.ivr_answer.max_s, Some(3.0));
    assert!(!c.ivr_answer.missed, "1.44 s is within 5 s");
    // Navigation: IVR answer to queue entry: c5 10, c6 20, c7 10, c8 10, c9 10, c10 10 s.
    assert_eq!(
        (c.ivr_navigation.count, c.ivr_navigation.total_ms),
        (6, 70_000)
    );
    assert_eq!(c.ivr_navigation.max_s, Some(20.0));
    // The single day's row equals the period's total.
    let d = find(&r, "2026-03-02", None, None).calls.as_ref().unwrap();
    assert_eq!(d.arriving, 10);
    assert_eq!(frac(&d.to_queue), (6, 10));
    // Per channel: c7 and c8 came over webrtc, both queued, neither answered.
    let w = find(&r, "total", None, Some("webrtc"))
        .calls
        .as_ref()
        .unwrap();
    assert_eq!((w.arriving, frac(&w.to_queue)), (2, (2, 2)));
    assert_eq!(frac(&w.answered_by_agent), (0, 2));
    let p = find(&r, "total", None, Some("pstn"))
        .calls
        .as_ref()
        .unwrap();
    assert_eq!((p.arriving, frac(&p.ivr_handled)), (8, (3, 8)));
    // Per-queue rows carry no arrival figures.
    assert!(find(&r, "total", Some("pensions"), None).calls.is_none());
}

#[test]
fn queue_figures_of_the_ten_calls() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let q = &find(&r, "total", None, None).queue_kpis;
    assert_eq!((q.offered, q.answered, q.abandoned), (6, 3, 2));
    assert_eq!(q.abandoned_short, 1, "c7 left after 10 s < 15 s");
    assert_eq!(q.exits.get("callback"), Some(&1), "c10");
    assert_eq!(frac(&q.answered_of_queued), (3, 6));
    assert!(q.answered_of_queued.missed, "50 % < 90 %");
    // SL base: answered 3 + abandoned 2 - short 1 = 4. Within 30 s: c5 (20 s).
    assert_eq!(frac(&q.service_level_30s), (1, 4));
    assert_eq!(q.service_level_30s.value, Some(0.25));
    assert!(q.service_level_30s.missed);
    // Within 60 s: c5 (20 s), c6 (45 s); c9 waited 90 s.
    assert_eq!(frac(&q.service_level_60s), (2, 4));
    // Abandon rate: c8 / (6 offered - 1 short) = 1/5.
    assert_eq!(frac(&q.abandon_rate), (1, 5));
    assert!(q.abandon_rate.missed, "20 % > 5 %");
    // Hold time, arrival to agent: c5 31 s, c6 66 s, c9 102 s = 199 s.
    assert_eq!((q.hold_time.count, q.hold_time.total_ms), (3, 199_000));
    assert_eq!(q.hold_time.max_s, Some(102.0));
    assert!(!q.hold_time.missed, "no target by default");
    // Speed of answer: 20 + 45 + 90 = 155 s over 3.
    assert_eq!(
        (q.speed_of_answer.count, q.speed_of_answer.total_ms),
        (3, 155_000)
    );
    // Talk per conversation: 100 + 60 + 30 + 40 = 230 s over 4; hold 10 + 0 + 0 + 5 s.
    assert_eq!((q.talk_time.count, q.talk_time.total_ms), (4, 230_000));
    assert_eq!((q.on_hold.count, q.on_hold.total_ms), (4, 15_000));
    assert_eq!(q.transfers, 1, "c9");

    // pensions (first queue of c5-c8): base 2 + 2 - 1 = 3.
    let p = &find(&r, "total", Some("pensions"), None).queue_kpis;
    assert_eq!((p.offered, p.answered, p.abandoned), (4, 2, 2));
    assert_eq!(frac(&p.service_level_30s), (1, 3));
    assert_eq!(frac(&p.service_level_60s), (2, 3));
    assert_eq!(frac(&p.abandon_rate), (1, 3));
    // Conversations taken from pensions: c5 100 s, c6 60 s, and c9's second leg 40 s.
    assert_eq!((p.talk_time.count, p.talk_time.total_ms), (3, 200_000));
    assert_eq!((p.on_hold.count, p.on_hold.total_ms), (3, 15_000));
    // health: c9 answered after 90 s, c10 left for a callback (not in the SL base).
    let h = &find(&r, "total", Some("health"), None).queue_kpis;
    assert_eq!((h.offered, h.answered), (2, 1));
    assert_eq!(frac(&h.service_level_30s), (0, 1));
    assert_eq!(frac(&h.abandon_rate), (0, 2));
    assert_eq!((h.talk_time.count, h.talk_time.total_ms), (1, 30_000));
    // webrtc only: c7 (short) and c8: base 0 + 2 - 1 = 1, nobody answered.
    let w = &find(&r, "total", None, Some("webrtc")).queue_kpis;
    assert_eq!(frac(&w.service_level_30s), (0, 1));
    assert_eq!(frac(&w.abandon_rate), (1, 1));
}

#[test]
fn offered_base_counts_exits_as_not_answered_in_time() {
    let t = Targets {
        service_level_base: ServiceLevelBase::Offered,
        ..Targets::default()
    };
    let r = report_with(&ten_calls(), Bucket::Day, None, &t);
    let q = &find(&r, "total", None, None).queue_kpis;
    // 6 offered - 1 short abandon = 5; c10's exit now counts against the service.
    assert_eq!(frac(&q.service_level_30s), (1, 5));
    assert_eq!(frac(&q.service_level_60s), (2, 5));
}

#[test]
fn charts_show_waits_and_hours() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    assert!(find(&r, "2026-03-02", None, None).charts.is_none());
    let ch = find(&r, "total", None, None).charts.as_ref().unwrap();
    let bins: Vec<(&str, u64, u64, u64)> = ch
        .wait_distribution
        .iter()
        .map(|b| (b.label.as_str(), b.answered, b.abandoned, b.exited))
        .collect();
    // c7 10 s abandoned (upper bound included), c5 20 s answered, c6 45 answered, c8 40
    // abandoned, c10 50 exited, c9 90 answered.
    assert_eq!(
        bins,
        vec![
            ("0-10", 0, 1, 0),
            ("10-20", 1, 0, 0),
            ("20-30", 0, 0, 0),
            ("30-60", 1, 1, 1),
            ("60-120", 1, 0, 0),
            ("120+", 0, 0, 0),
        ]
    );
    assert_eq!(ch.hourly.len(), 24);
    // 10:00 in Rome: c5, c6 queued and answered, c5 within 30 s.
    let h10 = &ch.hourly[10];
    assert_eq!((h10.offered, h10.answered, h10.abandoned), (2, 2, 0));
    assert_eq!(frac(&h10.service_level_30s), (1, 2));
    // 11:00: c7-c10; base 1 answered + 2 abandoned - 1 short = 2, none within 30 s.
    let h11 = &ch.hourly[11];
    assert_eq!((h11.offered, h11.answered, h11.abandoned), (4, 1, 2));
    assert_eq!(frac(&h11.service_level_30s), (0, 2));
    assert_eq!(ch.hourly[9].offered, 0, "09:00 UTC is 10:00 in Rome");
}

#[test]
fn callbacks_are_judged_in_working_hours_from_the_first_reaching_attempt() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let cb = &find(&r, "total", Some("health"), None).callbacks;
    assert_eq!(cb.requested, 7, "cb8 was requested before the period");
    assert_eq!(cb.cancelled, 1);
    assert_eq!(cb.open, 1, "cb5");
    assert_eq!(cb.reached, 3, "cb1, cb2, cb3");
    assert_eq!(cb.not_reached, 1, "cb6");
    // Judged: cb1, cb2, cb3, cb6, cb7; on time cb1 and cb2 (4.5 working h, 18.5 h wall).
    assert_eq!(frac(&cb.on_time), (2, 5));
    assert!(cb.on_time.missed);
    // By the engine's own (wall-clock, in this test) deadline: cb1 only.
    assert_eq!(frac(&cb.by_deadline), (1, 5));
    // The callback's channel is the one its call came in on (c10: pstn).
    assert_eq!(find(&r, "total", None, Some("pstn")).callbacks.requested, 7);
    assert_eq!(
        find(&r, "total", None, Some("webrtc")).callbacks.requested,
        0
    );
}

#[test]
fn voicemails_are_judged_on_taking_in_charge() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let vm = &find(&r, "total", Some("facilities"), None).voicemails;
    assert_eq!((vm.received, vm.open), (5, 1));
    assert_eq!(frac(&vm.on_time), (2, 4), "vm1, vm2 on time; vm3, vm5 late");
    assert!(vm.on_time.missed);
    assert_eq!(find(&r, "total", None, None).voicemails.received, 5);
}

#[test]
fn survey_shares_overall_and_per_question() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let sv = &find(&r, "total", None, None).survey;
    // c5 q1=6 q2=5, c6 q1=2 q2=4, c9 q1=5.
    assert_eq!(sv.surveys, 3);
    assert_eq!(sv.overall.answers, 5);
    assert_eq!(frac(&sv.overall.positive), (3, 5));
    assert_eq!(frac(&sv.overall.negative), (1, 5));
    assert_eq!(sv.overall.average, Some(22.0 / 5.0));
    assert!(sv.overall.positive.missed, "60 % < 70 %");
    assert!(!sv.overall.negative.missed, "no target by default");
    let q1 = &sv.per_question["q1"];
    assert_eq!((frac(&q1.positive), frac(&q1.negative)), ((2, 3), (1, 3)));
    let q2 = &sv.per_question["q2"];
    assert_eq!((frac(&q2.positive), frac(&q2.negative)), ((1, 2), (0, 2)));
    // In pensions (c5, c6): 4 answers, 6 and 5 positive, 2 negative.
    let p = &find(&r, "total", Some("pensions"), None).survey;
    assert_eq!((p.surveys, frac(&p.overall.positive)), (2, (2, 4)));
}

#[test]
fn targets_left_out_are_never_missed_and_no_data_is_never_missed() {
    let none = Targets {
        service_level_30s: None,
        abandon_rate: None,
        ..Targets::default()
    };
    let r = report_with(&ten_calls(), Bucket::Day, None, &none);
    let q = &find(&r, "total", None, None).queue_kpis;
    assert!(!q.service_level_30s.missed && q.service_level_30s.target.is_none());
    assert!(!q.abandon_rate.missed);
    assert!(q.service_level_60s.missed, "still judged");
    // No calls at all: every ratio has no value and nothing is missed.
    let r = report_with(&[], Bucket::Day, None, &Targets::default());
    let q = &find(&r, "total", None, None).queue_kpis;
    assert_eq!(
        (q.service_level_30s.value, q.service_level_30s.missed),
        (None, false)
    );
}

#[test]
fn calls_count_on_the_local_day_they_arrived() {
    let rome = |d: u32, h: u32, m: u32, s: u32| {
        Rome.with_ymd_and_hms(2026, 3, d, h, m, s)
            .unwrap()
            .with_timezone(&Utc)
    };
    let mut late = call("late", 0, Some(1), "pstn");
    late.started_at = rome(2, 23, 59, 50).to_rfc3339();
    late.answered_at = Some(rome(2, 23, 59, 51).to_rfc3339());
    late.ended_at = rome(3, 0, 5, 0).to_rfc3339();
    let mut early = late.clone();
    early.call_id = "early".into();
    early.started_at = rome(3, 0, 0, 10).to_rfc3339();
    early.answered_at = Some(rome(3, 0, 0, 11).to_rfc3339());
    let mut outside = late.clone();
    outside.call_id = "outside".into();
    outside.started_at = rome(4, 0, 0, 0).to_rfc3339();
    let calls = [late, early, outside];
    let input = Input {
        calls: &calls,
        callbacks: &[],
        voicemails: &[],
        as_of: as_of(),
    };
    let g = |bucket| Grouping {
        bucket,
        tz: Rome,
        queue: None,
    };
    let period = Period::local_days(Rome, day(2), day(3));
    let t = Targets::default();
    let r = compute(&input, period, &g(Bucket::Day), &t, &office_hours);
    let arriving = |r: &Report, b: &str| find(r, b, None, None).calls.as_ref().unwrap().arriving;
    assert_eq!(
        arriving(&r, "2026-03-02"),
        1,
        "23:59:50 spans midnight, counts on the 2nd"
    );
    assert_eq!(arriving(&r, "2026-03-03"), 1);
    assert_eq!(arriving(&r, "total"), 2, "the 4th is outside the period");
    let r = compute(&input, period, &g(Bucket::Month), &t, &office_hours);
    assert_eq!(arriving(&r, "2026-03"), 2);
    let r = compute(&input, period, &g(Bucket::Quarter), &t, &office_hours);
    assert_eq!(arriving(&r, "2026-Q1"), 2);
    assert_eq!(r.rows.last().unwrap().bucket, "total");
}

#[test]
fn local_days_follow_summer_time() {
    // 29 March 2026: clocks go forward in Rome, the day has 23 hours.
    let p = Period::local_days(Rome, day(29), day(29));
    assert_eq!(p.from, utc(28, 23, 0));
    assert_eq!(p.to, utc(29, 22, 0));
    assert!(p.contains(utc(28, 23, 0)) && !p.contains(utc(29, 22, 0)));
}

#[test]
fn queue_filter_keeps_only_that_queue() {
    let r = report_with(
        &ten_calls(),
        Bucket::Day,
        Some("pensions"),
        &Targets::default(),
    );
    assert!(!r.rows.is_empty());
    assert!(r
        .rows
        .iter()
        .all(|row| row.queue.as_deref() == Some("pensions")));
    assert_eq!(
        find(&r, "total", Some("pensions"), None).queue_kpis.offered,
        4
    );
}

#[test]
fn records_without_the_acd_path_are_read_from_their_variables() {
    // As the engine wrote them before the ACD path was recorded.
    let mut a = call("old-a", 0, Some(1), "pstn");
    a.disposition = "answered-agent".into();
    a.variables.insert("queue".into(), "pensions".into());
    a.variables.insert("queue_wait_ms".into(), "25000".into());
    let mut b = call("old-b", 60, Some(1), "pstn");
    b.disposition = "abandoned-queue".into();
    b.variables.insert("queue".into(), "pensions".into());
    b.variables.insert("queue_wait_ms".into(), "20000".into());
    let mut c = call("old-c", 120, Some(1), "pstn");
    c.disposition = "queue-timeout".into();
    c.variables.insert("queue".into(), "pensions".into());
    c.variables.insert("queue_wait_ms".into(), "300000".into());
    c.variables
        .insert("queue_exit".into(), "queue-timeout".into());
    let r = report_with(&[a, b, c], Bucket::Day, None, &Targets::default());
    let q = &find(&r, "total", Some("pensions"), None).queue_kpis;
    assert_eq!((q.offered, q.answered, q.abandoned), (3, 1, 1));
    assert_eq!(q.exits.get("timeout"), Some(&1));
    assert_eq!(
        frac(&q.service_level_30s),
        (1, 2),
        "25 s answered; 20 s abandon counts"
    );
    assert_eq!(q.speed_of_answer.total_ms, 25_000);
    assert_eq!(
        q.hold_time.count, 0,
        "no agent answer instant in old records"
    );
}

#[test]
fn a_malformed_record_is_left_out_and_named() {
    let mut calls = ten_calls();
    calls[0].started_at = "yesterday".into();
    let r = report_with(&calls, Bucket::Day, None, &Targets::default());
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].id, "c1");
    assert!(r.skipped[0].reason.contains("started_at"));
    assert_eq!(
        find(&r, "total", None, None)
            .calls
            .as_ref()
            .unwrap()
            .arriving,
        9
    );
}

#[test]
fn report_serializes_with_exact_fractions() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let v = serde_json::to_value(&r).unwrap();
    let total = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["bucket"] == "total" && row["queue"].is_null() && row["channel"].is_null())
        .unwrap();
    let sl = &total["queue_kpis"]["service_level_30s"];
    assert_eq!((sl["num"].as_u64(), sl["den"].as_u64()), (Some(1), Some(4)));
    assert_eq!(sl["value"].as_f64(), Some(0.25));
    assert_eq!(sl["target"]["at_least"].as_f64(), Some(0.8));
    assert_eq!(sl["missed"], true);
    assert_eq!(v["bucket"], "day");
    assert_eq!(v["tz"], "Europe/Rome");
}

#[test]
fn text_marks_missed_targets() {
    let r = report_with(&ten_calls(), Bucket::Day, None, &Targets::default());
    let mut out = Vec::new();
    write_text(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?} in\n{text}"))
            .to_string()
    };
    let sl = line("service level 30 s");
    assert!(
        sl.contains("25.0 %") && sl.contains("(1/4)") && sl.ends_with("MISSED"),
        "{sl}"
    );
    let ivr = line("IVR answer time");
    assert!(ivr.contains("1.4 s") && !ivr.contains("MISSED"), "{ivr}");
    assert!(text.contains("== total | all queues | all channels =="));
    assert!(
        text.contains("== total | pensions | webrtc =="),
        "two channels: shown"
    );
    assert!(
        !text.contains("== 2026-03-02 |"),
        "one day only: the total says it"
    );
    assert!(
        text.contains("  pensions: service level 30 s"),
        "summary names the queue"
    );

    let lenient = Targets {
        service_level_30s: None,
        service_level_60s: None,
        abandon_rate: None,
        answered_of_queued: None,
        callbacks_on_time: None,
        voicemails_on_time: None,
        survey_positive: None,
        ..Targets::default()
    };
    let r = report_with(&ten_calls(), Bucket::Day, None, &lenient);
    let mut out = Vec::new();
    write_text(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("no target missed over the period"), "{text}");
    assert!(!text.contains("MISSED"));
}

// ---- CSV ----

fn parse_csv(bytes: &[u8], sep: u8) -> Vec<csv::StringRecord> {
    let body = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(false)
        .from_reader(body)
        .records()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn csv_rows_read_back_field_by_field() {
    let calls = ten_calls();
    let mut out = Vec::new();
    write_csv(&calls, &mut out, &CsvOptions::new(Rome)).unwrap();
    assert!(out.starts_with(&[0xEF, 0xBB, 0xBF]), "UTF-8 BOM first");
    let rows = parse_csv(&out, b',');
    assert_eq!(rows.len(), 11, "header and ten calls");
    let header: Vec<&str> = rows[0].iter().collect();
    assert_eq!(header, CALL_COLUMNS);
    let col = |name: &str| CALL_COLUMNS.iter().position(|c| *c == name).unwrap();
    // c5 arrived 09:40 UTC = 10:40 in Rome.
    let c5 = &rows[5];
    assert_eq!(&c5[col("call_id")], "c5");
    assert_eq!(&c5[col("arrival")], "2026-03-02T10:40:00+01:00");
    assert_eq!(&c5[col("ivr_answer")], "2026-03-02T10:40:01+01:00");
    assert_eq!(&c5[col("queue_entry")], "2026-03-02T10:40:11+01:00");
    assert_eq!(&c5[col("agent_answer")], "2026-03-02T10:40:31+01:00");
    assert_eq!(&c5[col("queue")], "pensions");
    assert_eq!(&c5[col("agent")], "anna");
    assert_eq!(&c5[col("queue_wait_s")], "20.000");
    assert_eq!(&c5[col("to_agent_s")], "31.000");
    assert_eq!(&c5[col("on_hold_s")], "10.000");
    assert_eq!(&c5[col("talk_s")], "100.000");
    assert_eq!(&c5[col("class")], "queued");
    assert_eq!(&c5[col("disposition")], "answered-agent");
    assert_eq!(&c5[col("hangup_by")], "caller");
    assert_eq!(&c5[col("survey")], "q1=6 q2=5");
    assert_eq!(&c5[col("survey_average")], "5.500");
    assert_eq!(&c5[col("recordings")], "2026/03/02/c5.wav");
    assert_eq!(&c5[col("ivr_path")], "welcome > menu");
    assert_eq!(&c5[col("choices")], "menu=1");
    assert_eq!(&c5[col("end")], "2026-03-02T10:42:11+01:00");
    assert_eq!(&c5[col("duration_s")], "131.000");
    // c9: two agents and a transfer.
    let c9 = &rows[9];
    assert_eq!(&c9[col("agents")], "carla > dario");
    assert_eq!(&c9[col("transfers")], "queue:pensions");
    assert_eq!(&c9[col("talk_s")], "70.000");
    // c10 left for a callback; c4 was rejected with its SIP status.
    assert_eq!(&rows[10][col("queue_exit")], "callback");
    assert_eq!(&rows[4][col("class")], "rejected");
    assert_eq!(&rows[4][col("sip_status")], "503");
    assert_eq!(&rows[4][col("queue")], "");
}

#[test]
fn csv_with_semicolons_quotes_what_needs_it_and_uses_decimal_commas() {
    let mut calls = ten_calls();
    calls[4].trunk = "tim; backup\nline".into();
    calls[4].caller = "say \"hi\"".into();
    let mut out = Vec::new();
    write_csv(&calls, &mut out, &CsvOptions::italian(Rome)).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.contains("\"tim; backup\nline\""),
        "separator and newline inside a field are quoted"
    );
    assert!(text.contains("\"say \"\"hi\"\"\""), "quotes doubled");
    let rows = parse_csv(&out, b';');
    let col = |name: &str| CALL_COLUMNS.iter().position(|c| *c == name).unwrap();
    assert_eq!(rows.len(), 11);
    assert_eq!(&rows[5][col("trunk")], "tim; backup\nline");
    assert_eq!(&rows[5][col("caller")], "say \"hi\"");
    assert_eq!(&rows[5][col("queue_wait_s")], "20,000");
    assert!(
        text.starts_with("\u{feff}call_id;channel;trunk;"),
        "{}",
        &text[..40]
    );
}

#[test]
fn csv_without_bom() {
    let opts = CsvOptions {
        bom: false,
        ..CsvOptions::new(Rome)
    };
    let mut out = Vec::new();
    write_csv(&ten_calls()[..1], &mut out, &opts).unwrap();
    assert!(out.starts_with(b"call_id,"));
}

#[test]
fn queue_log_csv_uses_the_store_event_names() {
    let kinds = [
        QueueEventKind::Enter,
        QueueEventKind::RingNoAnswer,
        QueueEventKind::Connect,
        QueueEventKind::AgentPause,
    ];
    let events: Vec<QueueEvent> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| QueueEvent {
            at_ms: ms(base()) + i as i64 * 1000,
            call_id: "c5".into(),
            queue: "pensions".into(),
            agent: "anna".into(),
            kind: *k,
            data: (0..=i * 2).map(|d| d.to_string()).collect(),
        })
        .collect();
    let mut out = Vec::new();
    write_queue_log_csv(&events, &mut out, &CsvOptions::new(Rome)).unwrap();
    let rows = parse_csv(&out, b',');
    assert_eq!(rows[0].iter().collect::<Vec<_>>(), QUEUE_LOG_COLUMNS);
    for (row, e) in rows[1..].iter().zip(&events) {
        let serde_name = serde_json::to_value(e.kind).unwrap();
        assert_eq!(&row[5], serde_name.as_str().unwrap());
        assert_eq!(&row[1], e.at_ms.to_string());
    }
    assert_eq!(&rows[1][0], "2026-03-02T10:00:00+01:00");
    assert_eq!(&rows[1][6], "0");
    assert_eq!(&rows[1][7], "", "missing data left empty");
    // Seven data items: the last three share data5.
    assert_eq!(&rows[4][10], "4|5|6");
}

#[test]
fn thresholds_are_inclusive_for_answers_and_strict_for_short_abandons() {
    let q = |id: &str, start: i64, wait: i64, exit: Option<&'static str>, legs| {
        queued(
            call(id, start, Some(1), "pstn"),
            start,
            Q {
                queue: "pensions",
                entered: 5,
                wait,
                exit,
                legs,
            },
        )
    };
    let calls = [
        // Answered at exactly 30 s and at 30.001 s... in whole seconds: 30 and 31.
        q("a30", 0, 30, None, vec![("anna", "pensions", 10, 0)]),
        q("a31", 100, 31, None, vec![("anna", "pensions", 10, 0)]),
        q("a60", 200, 60, None, vec![("anna", "pensions", 10, 0)]),
        // Abandoned at exactly 15 s: not a short abandon; at 14 s: short.
        q("b15", 300, 15, Some("abandon"), vec![]),
        q("b14", 400, 14, Some("abandon"), vec![]),
    ];
    let r = report_with(&calls, Bucket::Day, None, &Targets::default());
    let k = &find(&r, "total", None, None).queue_kpis;
    assert_eq!(k.abandoned_short, 1);
    // Base 3 answered + 2 abandoned - 1 short = 4.
    assert_eq!(frac(&k.service_level_30s), (1, 4));
    assert_eq!(frac(&k.service_level_60s), (3, 4));
    assert_eq!(frac(&k.abandon_rate), (1, 4));
    let bins = &find(&r, "total", None, None)
        .charts
        .as_ref()
        .unwrap()
        .wait_distribution;
    assert_eq!(
        (bins[2].answered, bins[3].answered),
        (1, 2),
        "30 s in 20-30; 31 and 60 in 30-60"
    );
}
