//! What one call record says, read once: parsed instants and the call's class, so that the
//! KPI code and the CSV export agree on every definition.

use chrono::{DateTime, Utc};
use verde_store::CallRecord;

pub(crate) fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{field} {value:?} is not an RFC 3339 instant: {e}"))
}

fn parse_opt(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    value.map(|v| parse_time(field, v)).transpose()
}

/// Milliseconds from `a` to `b`, never negative: two clocks a few ms apart must not make a
/// negative wait.
pub(crate) fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> u64 {
    (b - a).num_milliseconds().max(0) as u64
}

/// How the caller's stay in the queue ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    Answered,
    Abandoned,
    /// Left without an agent through an exit: `timeout`, `full`, `empty`, `key`, `callback`,
    /// or `other` when the record does not say.
    Exited(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub agent: String,
    pub queue: String,
    pub answered: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub hold_ms: u64,
}

/// The queue part of a call.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    /// The first queue entered: the call counts there.
    pub queue: String,
    /// Unknown for records written before the ACD path was recorded.
    pub entered: Option<DateTime<Utc>>,
    /// Queue entry to the agent's answer, or to leaving the queue.
    pub wait_ms: Option<u64>,
    pub fate: Fate,
    /// The first agent who answered.
    pub agent: Option<String>,
    pub legs: Vec<Leg>,
    pub hold_ms: u64,
    pub transfers: Vec<String>,
}

impl Queued {
    pub fn first_answer(&self) -> Option<DateTime<Utc>> {
        self.legs.first().map(|l| l.answered)
    }
    pub fn talk_ms(&self) -> u64 {
        self.legs
            .iter()
            .map(|l| ms_between(l.answered, l.ended))
            .sum()
    }
}

/// Where the call went, one class per call (the classes partition the arriving calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Refused by the engine before the IVR ran (capacity, ACL, unknown number).
    Rejected,
    /// Never left the IVR: information given, out of hours, voicemail, callback booked in the
    /// IVR, abandoned in the IVR.
    Ivr,
    /// The IVR transferred the call to a number outside verde.
    TransferredOut,
    /// Entered a queue.
    Queued,
}

#[derive(Debug, Clone)]
pub(crate) struct CallFacts<'a> {
    pub rec: &'a CallRecord,
    pub arrived: DateTime<Utc>,
    pub ivr_answered: Option<DateTime<Utc>>,
    pub ended: DateTime<Utc>,
    pub class: Class,
    pub queued: Option<Queued>,
}

impl<'a> CallFacts<'a> {
    pub fn of(rec: &'a CallRecord) -> Result<Self, String> {
        let arrived = parse_time("started_at", &rec.started_at)?;
        let ivr_answered = parse_opt("answered_at", rec.answered_at.as_deref())?;
        let ended = parse_time("ended_at", &rec.ended_at)?;
        let queued = queued(rec, ended)?;
        let outcome = rec.outcome.as_deref().unwrap_or("");
        let class = if queued.is_some() {
            Class::Queued
        } else if rec.disposition == "rejected" {
            Class::Rejected
        } else if outcome.starts_with("transfer:")
            || outcome.starts_with("transferred:")
            || rec.disposition == "transferred"
        {
            Class::TransferredOut
        } else {
            Class::Ivr
        };
        Ok(CallFacts {
            rec,
            arrived,
            ivr_answered,
            ended,
            class,
            queued,
        })
    }

    fn outcome_is(&self, prefix: &str) -> bool {
        self.rec
            .outcome
            .as_deref()
            .is_some_and(|o| o.starts_with(prefix))
    }

    pub fn out_of_hours(&self) -> bool {
        matches!(
            self.rec.variables.get("schedule").map(String::as_str),
            Some("closed" | "holiday")
        )
    }

    pub fn ivr_abandoned(&self) -> bool {
        self.class == Class::Ivr
            && (matches!(self.rec.disposition.as_str(), "abandoned-ivr" | "cancelled")
                || self.outcome_is("caller_hangup:"))
    }

    pub fn voicemail(&self) -> bool {
        self.outcome_is("voicemail:")
    }

    pub fn callback_requested(&self) -> bool {
        self.outcome_is("callback:")
            || self.rec.disposition == "callback-requested"
            || self.rec.variables.contains_key("callback_id")
            || self
                .queued
                .as_ref()
                .is_some_and(|q| q.fate == Fate::Exited("callback".into()))
    }

    /// A request implies an offer; otherwise the engine marks the offer in the variables.
    pub fn callback_offered(&self) -> bool {
        self.rec.variables.contains_key("callback_offered") || self.callback_requested()
    }

    pub fn answered_by_agent(&self) -> bool {
        self.queued
            .as_ref()
            .is_some_and(|q| q.fate == Fate::Answered)
    }
}

fn queued(rec: &CallRecord, ended: DateTime<Utc>) -> Result<Option<Queued>, String> {
    let answered_disposition = rec.disposition == "answered-agent";
    if let Some(acd) = &rec.acd {
        let entered = parse_time("acd.queued_at", &acd.queued_at)?;
        let legs = acd
            .legs
            .iter()
            .map(|l| {
                Ok(Leg {
                    agent: l.agent.clone(),
                    queue: if l.queue.is_empty() {
                        acd.queue.clone()
                    } else {
                        l.queue.clone()
                    },
                    answered: parse_time("acd.legs.answered_at", &l.answered_at)?,
                    ended: parse_time("acd.legs.ended_at", &l.ended_at)?,
                    hold_ms: l.hold_ms,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let fate = if !legs.is_empty() || answered_disposition {
            Fate::Answered
        } else {
            match acd.exit.as_deref() {
                Some("abandon") => Fate::Abandoned,
                Some(reason) => Fate::Exited(reason.to_string()),
                None if rec.disposition == "abandoned-queue" || rec.hangup_by == "caller" => {
                    Fate::Abandoned
                }
                None => Fate::Exited("other".into()),
            }
        };
        let wait_ms = acd.queue_wait_ms.or_else(|| match legs.first() {
            Some(l) => Some(ms_between(entered, l.answered)),
            None if fate != Fate::Answered => Some(ms_between(entered, ended)),
            None => None,
        });
        return Ok(Some(Queued {
            queue: acd.queue.clone(),
            entered: Some(entered),
            wait_ms,
            agent: legs.first().map(|l| l.agent.clone()),
            fate,
            legs,
            hold_ms: acd.hold_ms,
            transfers: acd.transfers.iter().map(|t| t.to.clone()).collect(),
        }));
    }
    // Records written before the ACD path was recorded keep the queue in the variables.
    let Some(queue) = rec.variables.get("queue") else {
        return Ok(None);
    };
    let wait_ms = match rec.variables.get("queue_wait_ms") {
        Some(w) => Some(
            w.parse::<u64>()
                .map_err(|e| format!("variables.queue_wait_ms {w:?}: {e}"))?,
        ),
        None => None,
    };
    let fate = if answered_disposition {
        Fate::Answered
    } else if let Some(exit) = rec.variables.get("queue_exit") {
        Fate::Exited(exit.trim_start_matches("queue-").to_string())
    } else if rec.disposition == "callback-requested"
        || rec
            .outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("callback:"))
    {
        Fate::Exited("callback".into())
    } else {
        Fate::Abandoned
    };
    Ok(Some(Queued {
        queue: queue.clone(),
        entered: None,
        wait_ms,
        agent: rec.variables.get("agent").cloned(),
        fate,
        legs: Vec::new(),
        hold_ms: 0,
        transfers: rec
            .variables
            .get("transferred_to")
            .cloned()
            .into_iter()
            .collect(),
    }))
}
