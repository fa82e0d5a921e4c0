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

#[derive(Debug, Clone)]
struct Sample {
    arrived: DateTime<Utc>,
    left: DateTime<Utc>,
    channel: String,
    waited_ms: u64,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    Abandoned,
    /// Left through an exit (timeout, full, key, callback accepted) or was moved on.
    Exited,
}

pub struct LiveStats {
    tz: Tz,
    day: Option<(i32, u32)>,
    queues: BTreeMap<String, Vec<Sample>>,
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

fn figures<'a>(samples: impl Iterator<Item = &'a Sample>) -> Figures {
    let mut f = Figures::default();
    let mut answer_ms = 0u64;
    for s in samples {
        f.offered += 1;
        match s.outcome {
            Outcome::Answered => {
                f.answered += 1;
                answer_ms += s.waited_ms;
                f.answered_30s += (s.waited_ms <= 30_000) as u64;
                f.answered_60s += (s.waited_ms <= 60_000) as u64;
            }
            Outcome::Abandoned => {
                f.abandoned += 1;
                f.abandoned_short += (s.waited_ms < SHORT_ABANDON_MS) as u64;
            }
            Outcome::Exited => {}
        }
    }
    let base = f.offered - f.abandoned_short;
    f.sl30 = ratio(f.answered_30s, base);
    f.sl60 = ratio(f.answered_60s, base);
    f.abandon_rate = ratio(f.abandoned - f.abandoned_short, base);
    f.asa_s = (f.answered > 0).then(|| answer_ms as f64 / f.answered as f64 / 1000.0);
    f
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
        }
    }

    /// A finished call; calls that never waited in a queue, or arrived another day, are not
    /// counted.
    pub fn add(&mut self, r: &CallRecord, now: DateTime<Utc>) {
        self.roll(now);
        let (Some(queue), Some(arrived), Some(left)) = (
            r.variables.get("queue"),
            parse(&r.started_at),
            parse(&r.ended_at),
        ) else {
            return;
        };
        if self.day_of(arrived) != self.day_of(now) {
            return;
        }
        let waited_ms = r
            .variables
            .get("queue_wait_ms")
            .and_then(|w| w.parse().ok())
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
        self.queues.entry(queue.clone()).or_default().push(Sample {
            arrived,
            left,
            channel: r.channel.clone(),
            waited_ms,
            outcome,
        });
    }

    /// The `queue_stats` message.
    pub fn json(&mut self, now: DateTime<Utc>) -> String {
        self.roll(now);
        let since = now - chrono::Duration::minutes(15);
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
            .map(|(name, s)| Queue {
                name,
                today: figures(s.iter()),
                last_15m: figures(s.iter().filter(|s| s.left >= since)),
            })
            .collect();
        let mut hours: BTreeMap<(u32, &str), (u64, u64, u64)> = BTreeMap::new();
        for s in self.queues.values().flatten() {
            let h = s.arrived.with_timezone(&self.tz).hour();
            let e = hours.entry((h, s.channel.as_str())).or_default();
            e.0 += 1;
            e.1 += s.waited_ms;
            e.2 = e.2.max(s.waited_ms);
        }
        let wait_by_hour: Vec<Hour> = hours
            .into_iter()
            .map(|((hour, channel), (n, total, max))| Hour {
                hour,
                channel,
                calls: n,
                avg_wait_s: total as f64 / n as f64 / 1000.0,
                max_wait_s: max as f64 / 1000.0,
            })
            .collect();
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
}
