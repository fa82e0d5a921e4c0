//! Today's service levels for the wallboard, from the records of finished calls.
//!
//! Figures are counted, not estimated: each finished call that waited in a queue is one sample
//! (its queue, whether an agent answered, how long it waited). The formulas are in
//! `docs/cti-protocol.md` (`queue_stats`); the full KPI set and its reports belong to the
//! records side. A call counts on the day (in `kpi.time_zone`) and hour it arrived, and in "the last
//! 15 minutes" when it left the queue within them.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::BTreeMap;
use verde_store::CallRecord;

/// Abandons quicker than this are not held against the service (a wrong number, a caller who
/// changed their mind).
const SHORT_ABANDON_MS: u64 = 15_000;

/// How far back "the last 15 minutes" reaches.
const RECENT: chrono::Duration = chrono::Duration::minutes(15);
/// Its length in one-second slots, both ends included (15 minutes back from 10:00:00 is
/// 09:45:00, which still counts).
const RECENT_SLOTS: i64 = 15 * 60 + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    Abandoned,
    /// Left through an exit (timeout, full, key, callback accepted) or was moved on.
    Exited,
}

/// Running totals of a set of queued calls: what [`Figures`] are computed from. The day's are
/// kept as totals, not as one sample per call, so the memory and the work of a wallboard frame
/// stay the same at the day's millionth call as at its first.
#[derive(Debug, Default, Clone)]
struct Tally {
    offered: u64,
    answered: u64,
    abandoned: u64,
    abandoned_short: u64,
    answered_30s: u64,
    answered_60s: u64,
    answer_ms: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome, waited_ms: u64) {
        self.offered += 1;
        match outcome {
            Outcome::Answered => {
                self.answered += 1;
                self.answer_ms += waited_ms;
                self.answered_30s += (waited_ms <= 30_000) as u64;
                self.answered_60s += (waited_ms <= 60_000) as u64;
            }
            Outcome::Abandoned => {
                self.abandoned += 1;
                self.abandoned_short += (waited_ms < SHORT_ABANDON_MS) as u64;
            }
            Outcome::Exited => {}
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.abandoned += o.abandoned;
        self.abandoned_short += o.abandoned_short;
        self.answered_30s += o.answered_30s;
        self.answered_60s += o.answered_60s;
        self.answer_ms += o.answer_ms;
    }

    fn figures(&self) -> Figures {
        let base = self.offered - self.abandoned_short;
        Figures {
            offered: self.offered,
            answered: self.answered,
            abandoned: self.abandoned,
            abandoned_short: self.abandoned_short,
            answered_30s: self.answered_30s,
            answered_60s: self.answered_60s,
            sl30: ratio(self.answered_30s, base),
            sl60: ratio(self.answered_60s, base),
            abandon_rate: ratio(self.abandoned - self.abandoned_short, base),
            asa_s: (self.answered > 0)
                .then(|| self.answer_ms as f64 / self.answered as f64 / 1000.0),
        }
    }
}

#[derive(Debug, Default)]
struct QueueDay {
    today: Tally,
    /// The last 15 minutes as one tally per second calls left the queue in: a ring indexed by
    /// the second (Unix seconds mod 901), each slot stamped with its second so a slot from 15
    /// minutes ago is recognised and restarted. Its size is the same at 1 call/s as at 1,000
    /// (calls kept one by one took 20 bytes each, 7 MB a queue at 400 calls/s), and a frame
    /// sums 901 slots whatever the traffic. Empty until the queue's first call.
    recent: Vec<(i64, Tally)>,
}

impl QueueDay {
    fn add_recent(&mut self, left_s: i64, outcome: Outcome, waited_ms: u64) {
        if self.recent.is_empty() {
            self.recent = vec![(i64::MIN, Tally::default()); RECENT_SLOTS as usize];
        }
        let slot = &mut self.recent[left_s.rem_euclid(RECENT_SLOTS) as usize];
        if slot.0 < left_s {
            *slot = (left_s, Tally::default());
        }
        // A newer stamp means this second is 15 minutes older than one already counted: gone.
        if slot.0 == left_s {
            slot.1.add(outcome, waited_ms);
        }
    }

    /// The calls that left from second `since_s` on.
    fn recent_since(&self, since_s: i64) -> Tally {
        let mut t = Tally::default();
        for (_, slot) in self.recent.iter().filter(|(s, _)| *s >= since_s) {
            t.merge(slot);
        }
        t
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct HourWait {
    calls: u64,
    total_ms: u64,
    max_ms: u64,
}

pub struct LiveStats {
    tz: Tz,
    day: Option<(i32, u32)>,
    queues: BTreeMap<String, QueueDay>,
    /// Waits by local hour of arrival and channel: a few dozen entries, looked up by scanning.
    hours: Vec<(u32, String, HourWait)>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Figures {
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub abandoned_short: u64,
    pub answered_30s: u64,
    pub answered_60s: u64,
    pub asa_s: Option<f64>,
    pub sl30: Option<f64>,
    pub sl60: Option<f64>,
    pub abandon_rate: Option<f64>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl LiveStats {
    pub fn new(tz: Tz) -> Self {
        LiveStats {
            tz,
            day: None,
            queues: BTreeMap::new(),
            hours: Vec::new(),
        }
    }

    fn day_of(&self, t: DateTime<Utc>) -> (i32, u32) {
        let l = t.with_timezone(&self.tz);
        (l.year(), l.ordinal())
    }

    /// Starts a new day when `now` is on another one.
    fn roll(&mut self, now: DateTime<Utc>) {
        let today = self.day_of(now);
        if self.day != Some(today) {
            self.day = Some(today);
            self.queues.clear();
            self.hours.clear();
        }
    }

    /// A finished call; calls that never waited in a queue, or arrived another day, are not
    /// counted.
    pub fn add(&mut self, r: &CallRecord, now: DateTime<Utc>) {
        let today = self.day_of(now);
        if self.day != Some(today) {
            self.roll(now);
        }
        let (Some(queue), Some(arrived), Some(left)) = (
            r.variables.get("queue"),
            parse(&r.started_at),
            parse(&r.ended_at),
        ) else {
            return;
        };
        if self.day_of(arrived) != today {
            return;
        }
        let waited_ms = r
            .variables
            .get("queue_wait_ms")
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
        let outcome = if r.disposition == "answered-agent" {
            Outcome::Answered
        } else if r.variables.contains_key("queue_exit")
            || r.outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("callback"))
        {
            // Left through an exit, or took the call-me-back offer: not abandoned.
            Outcome::Exited
        } else {
            Outcome::Abandoned
        };
        let q = match self.queues.get_mut(queue.as_str()) {
            Some(q) => q,
            None => self.queues.entry(queue.clone()).or_default(),
        };
        q.today.add(outcome, waited_ms);
        if left >= now - RECENT {
            q.add_recent(left.timestamp(), outcome, waited_ms);
        }
        let hour = arrived.with_timezone(&self.tz).hour();
        let i = match self
            .hours
            .iter()
            .position(|(h, c, _)| *h == hour && *c == r.channel)
        {
            Some(i) => i,
            None => {
                self.hours
                    .push((hour, r.channel.clone(), HourWait::default()));
                self.hours.len() - 1
            }
        };
        let h = &mut self.hours[i].2;
        h.calls += 1;
        h.total_ms += waited_ms;
        h.max_ms = h.max_ms.max(waited_ms);
    }

    /// The `queue_stats` message.
    pub fn json(&mut self, now: DateTime<Utc>) -> String {
        self.roll(now);
        // To the second: a call that left in the second 15 minutes ago still counts.
        let since_s = (now - RECENT).timestamp();
        #[derive(Serialize)]
        struct Queue<'a> {
            name: &'a str,
            today: Figures,
            last_15m: Figures,
        }
        #[derive(Serialize)]
        struct Hour<'a> {
            hour: u32,
            channel: &'a str,
            calls: u64,
            avg_wait_s: f64,
            max_wait_s: f64,
        }
        let queues: Vec<Queue> = self
            .queues
            .iter()
            .map(|(name, q)| Queue {
                name,
                today: q.today.figures(),
                last_15m: q.recent_since(since_s).figures(),
            })
            .collect();
        let mut wait_by_hour: Vec<Hour> = self
            .hours
            .iter()
            .map(|(hour, channel, h)| Hour {
                hour: *hour,
                channel,
                calls: h.calls,
                avg_wait_s: h.total_ms as f64 / h.calls as f64 / 1000.0,
                max_wait_s: h.max_ms as f64 / 1000.0,
            })
            .collect();
        wait_by_hour.sort_by(|a, b| (a.hour, a.channel).cmp(&(b.hour, b.channel)));
        serde_json::json!({
            "v": verde_cti::VERSION,
            "type": "queue_stats",
            "at_ms": now.timestamp_millis(),
            "queues": queues,
            "wait_by_hour": wait_by_hour,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(queue: &str, start: &str, end: &str, wait_ms: u64, disposition: &str) -> CallRecord {
        let mut variables = BTreeMap::new();
        variables.insert("queue".to_string(), queue.to_string());
        variables.insert("queue_wait_ms".to_string(), wait_ms.to_string());
        CallRecord {
            call_id: format!("{start}-{wait_ms}"),
            caller: "+39061".into(),
            did: "803164".into(),
            trunk: "t".into(),
            channel: "pstn".into(),
            started_at: start.into(),
            answered_at: None,
            ended_at: end.into(),
            disposition: disposition.into(),
            hangup_by: "caller".into(),
            sip_status: None,
            language: None,
            path: vec![],
            variables,
            choices: vec![],
            dtmf: String::new(),
            outcome: None,
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        parse("2026-11-27T10:00:00Z").unwrap()
    }

    #[test]
    fn service_level_and_abandons_counted_by_hand() {
        let mut s = LiveStats::new(chrono_tz::Europe::Rome);
        let n = now();
        // 10 s and 45 s answered, 5 s and 40 s abandoned, one from yesterday ignored.
        s.add(
            &rec(
                "q",
                "2026-11-27T09:00:00Z",
                "2026-11-27T09:05:00Z",
                10_000,
                "answered-agent",
            ),
            n,
        );
        s.add(
            &rec(
                "q",
                "2026-11-27T09:10:00Z",
                "2026-11-27T09:55:00Z",
                45_000,
                "answered-agent",
            ),
            n,
        );
        s.add(
            &rec(
                "q",
                "2026-11-27T09:20:00Z",
                "2026-11-27T09:20:05Z",
                5_000,
                "abandoned-queue",
            ),
            n,
        );
        s.add(
            &rec(
                "q",
                "2026-11-27T09:30:00Z",
                "2026-11-27T09:30:40Z",
                40_000,
                "abandoned-queue",
            ),
            n,
        );
        s.add(
            &rec(
                "q",
                "2026-11-26T09:30:00Z",
                "2026-11-26T09:30:40Z",
                40_000,
                "answered-agent",
            ),
            n,
        );
        let v: serde_json::Value = serde_json::from_str(&s.json(n)).unwrap();
        let today = &v["queues"][0]["today"];
        assert_eq!(today["offered"], 4);
        assert_eq!(today["answered"], 2);
        assert_eq!(today["abandoned"], 2);
        assert_eq!(today["abandoned_short"], 1);
        // Base: 4 offered - 1 short abandon = 3.
        assert_eq!(today["sl30"].as_f64().unwrap(), 1.0 / 3.0);
        assert_eq!(today["sl60"].as_f64().unwrap(), 2.0 / 3.0);
        assert_eq!(today["abandon_rate"].as_f64().unwrap(), 1.0 / 3.0);
        assert_eq!(today["asa_s"].as_f64().unwrap(), 27.5);
        // Only the 09:55 call left within the last 15 minutes.
        assert_eq!(v["queues"][0]["last_15m"]["offered"], 1);
        // 09:xx UTC is 10:xx in Rome in November.
        assert_eq!(v["wait_by_hour"][0]["hour"], 10);
        assert_eq!(v["wait_by_hour"][0]["calls"], 4);
        assert_eq!(v["wait_by_hour"][0]["max_wait_s"].as_f64().unwrap(), 45.0);
    }

    #[test]
    fn a_new_day_starts_from_zero_and_empty_figures_are_null() {
        let mut s = LiveStats::new(chrono_tz::Europe::Rome);
        s.add(
            &rec(
                "q",
                "2026-11-27T09:00:00Z",
                "2026-11-27T09:05:00Z",
                10_000,
                "answered-agent",
            ),
            now(),
        );
        let tomorrow = now() + chrono::Duration::days(1);
        let v: serde_json::Value = serde_json::from_str(&s.json(tomorrow)).unwrap();
        assert_eq!(v["queues"].as_array().unwrap().len(), 0);
        let mut e = LiveStats::new(chrono_tz::Europe::Rome);
        let mut r = rec(
            "q",
            "2026-11-27T09:00:00Z",
            "2026-11-27T09:00:02Z",
            2_000,
            "abandoned-queue",
        );
        r.variables.insert("x".into(), "y".into());
        e.add(&r, now());
        let v: serde_json::Value = serde_json::from_str(&e.json(now())).unwrap();
        assert!(v["queues"][0]["today"]["sl30"].is_null(), "{v}");
        assert!(v["queues"][0]["today"]["asa_s"].is_null());
    }

    #[test]
    fn the_day_keeps_counting_while_only_15_minutes_of_calls_are_kept() {
        let mut s = LiveStats::new(chrono_tz::Europe::Rome);
        let start = parse("2026-11-27T08:00:00Z").unwrap();
        // One call a second for an hour, each answered after 20 s.
        for i in 0..3600 {
            let end = start + chrono::Duration::seconds(i);
            let t = |d: chrono::DateTime<Utc>| d.to_rfc3339();
            let r = rec(
                "q",
                &t(end - chrono::Duration::seconds(20)),
                &t(end),
                20_000,
                "answered-agent",
            );
            s.add(&r, end);
        }
        let end = start + chrono::Duration::seconds(3599);
        let v: serde_json::Value = serde_json::from_str(&s.json(end)).unwrap();
        assert_eq!(v["queues"][0]["today"]["offered"], 3600);
        assert_eq!(v["queues"][0]["today"]["sl30"].as_f64().unwrap(), 1.0);
        // 15 minutes back from 08:59:59 reaches 08:44:59: 901 calls.
        assert_eq!(v["queues"][0]["last_15m"]["offered"], 901);
        assert!(
            s.queues["q"].recent.len() <= 901,
            "{}",
            s.queues["q"].recent.len()
        );
        // Arrivals 07:59:40..08:59:39 UTC are 08:xx and 09:xx in Rome.
        let hours: Vec<u64> = v["wait_by_hour"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hour"].as_u64().unwrap())
            .collect();
        assert_eq!(hours, vec![8, 9]);
        assert_eq!(s.hours.len(), 2);
    }
}
