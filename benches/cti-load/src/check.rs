//! What one client can verify of its own `/cti` stream, as pure state machines fed message by
//! message (docs/cti-protocol.md): every command answered exactly once, the wallboard feed in
//! sequence, each call's events in a legal order. No sockets or clocks here, so the rules are
//! unit-tested on their own.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The few fields of a server message the checks need. Everything else (a snapshot's whole
/// state) is skipped without being built, which keeps the client cheap next to the server.
#[derive(Debug, Deserialize)]
pub struct Msg<'a> {
    #[serde(default)]
    pub v: Option<u64>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub at_ms: Option<i64>,
    #[serde(default)]
    pub call: Option<u64>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default)]
    pub waited_s: Option<f64>,
}

impl<'a> Msg<'a> {
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The id as the key commands are tracked by (its JSON text, so 7 and "7" stay apart).
    pub fn id_key(&self) -> Option<String> {
        match &self.id {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.to_string()),
        }
    }
}

/// A broken rule, worded for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a command in progress was answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `kind` is the command's type; `Err` carries the error code.
    Of {
        kind: &'static str,
        outcome: Result<(), String>,
    },
}

/// Commands sent and not yet answered: each must get exactly one `result` or `error`.
#[derive(Debug, Default)]
pub struct Commands {
    pending: HashMap<String, &'static str>,
    pub sent: u64,
    pub answered: u64,
    /// Error answers by code.
    pub errors: BTreeMap<String, u64>,
}

impl Commands {
    /// `id` is the JSON text of the id sent (`7` or `"x7"`).
    pub fn sent(&mut self, id: String, kind: &'static str) {
        self.sent += 1;
        self.pending.insert(id, kind);
    }

    /// A `result` (`error_code` None) or an `error` for `id`.
    pub fn answer(
        &mut self,
        id: Option<&str>,
        error_code: Option<&str>,
    ) -> Result<Answer, Violation> {
        if let Some(code) = error_code {
            *self.errors.entry(code.to_string()).or_default() += 1;
        }
        let Some(id) = id else {
            // The server could not read one of our messages far enough to find its id.
            return Err(Violation(format!(
                "error with a null id ({}): a command of ours was unreadable",
                error_code.unwrap_or("result")
            )));
        };
        match self.pending.remove(id) {
            Some(kind) => {
                self.answered += 1;
                Ok(Answer::Of {
                    kind,
                    outcome: error_code.map_or(Ok(()), |c| Err(c.to_string())),
                })
            }
            None => Err(Violation(format!(
                "{} for id {id}, which is not a command in progress (a second answer?)",
                if error_code.is_some() {
                    "error"
                } else {
                    "result"
                }
            ))),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Kinds of the commands still unanswered, for the report.
    pub fn unanswered(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.pending.values().copied().collect();
        v.sort_unstable();
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    Snapshot,
    Delta,
}

impl FeedKind {
    pub fn from_type(t: &str) -> Option<Self> {
        match t {
            "queue_snapshot" => Some(Self::Snapshot),
            "queue_delta" => Some(Self::Delta),
            _ => None,
        }
    }
}

/// What a wallboard message meant for the client's copy of the state.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedStep {
    /// The first message, a snapshot.
    First,
    /// A delta right after the previous message (`seq` = previous + 1).
    Next,
    /// A snapshot after the first: the server says this connection missed a tick.
    Resync { after: u64, seq: u64 },
    /// A delta further on than previous + 1: applied to the older copy as the protocol
    /// promises never to require, so counted (see `Feed::strict`).
    Gap { after: u64, seq: u64 },
}

/// A supervisor's `queue_snapshot` / `queue_delta` sequence.
#[derive(Debug, Default)]
pub struct Feed {
    last: Option<u64>,
    /// A gap in deltas is a violation rather than only counted.
    pub strict: bool,
    pub snapshots: u64,
    pub deltas: u64,
    pub resyncs: u64,
    pub gaps: u64,
}

impl Feed {
    pub fn new(strict: bool) -> Self {
        Self {
            strict,
            ..Self::default()
        }
    }

    pub fn on_message(&mut self, kind: FeedKind, seq: u64) -> Result<FeedStep, Violation> {
        match kind {
            FeedKind::Snapshot => self.snapshots += 1,
            FeedKind::Delta => self.deltas += 1,
        }
        let Some(last) = self.last else {
            self.last = Some(seq);
            return match kind {
                FeedKind::Snapshot => Ok(FeedStep::First),
                FeedKind::Delta => Err(Violation(format!(
                    "the first wallboard message is a queue_delta (seq {seq}), not a queue_snapshot"
                ))),
            };
        };
        if seq <= last {
            // Keep the highest seq seen, so one stale message is reported once.
            return Err(Violation(format!(
                "{} seq {seq} after seq {last}: the sequence went {}",
                kind_name(kind),
                if seq == last {
                    "nowhere (repeated)"
                } else {
                    "backwards"
                }
            )));
        }
        self.last = Some(seq);
        match kind {
            FeedKind::Snapshot => {
                self.resyncs += 1;
                Ok(FeedStep::Resync { after: last, seq })
            }
            FeedKind::Delta if seq == last + 1 => Ok(FeedStep::Next),
            FeedKind::Delta => {
                self.gaps += 1;
                if self.strict {
                    Err(Violation(format!(
                        "queue_delta seq {seq} after seq {last}: {} message(s) missing",
                        seq - last - 1
                    )))
                } else {
                    Ok(FeedStep::Gap { after: last, seq })
                }
            }
        }
    }
}

fn kind_name(kind: FeedKind) -> &'static str {
    match kind {
        FeedKind::Snapshot => "queue_snapshot",
        FeedKind::Delta => "queue_delta",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    Offered,
    Answered,
    Held,
    Resumed,
    Transferred,
    Ended,
}

impl CallEvent {
    pub fn from_type(t: &str) -> Option<Self> {
        Some(match t {
            "call_offered" => Self::Offered,
            "call_answered" => Self::Answered,
            "call_held" => Self::Held,
            "call_resumed" => Self::Resumed,
            "call_transferred" => Self::Transferred,
            "call_ended" => Self::Ended,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Offered => "call_offered",
            Self::Answered => "call_answered",
            Self::Held => "call_held",
            Self::Resumed => "call_resumed",
            Self::Transferred => "call_transferred",
            Self::Ended => "call_ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    Connected,
    Held,
    /// Ended or transferred away: the call is no longer this agent's.
    Over,
}

/// Per call id, the agent's events must follow offered -> answered (-> held <-> resumed) ->
/// ended/transferred, with nothing after the end.
#[derive(Debug, Default)]
pub struct Calls {
    phase: HashMap<u64, Phase>,
    pub events: u64,
}

impl Calls {
    pub fn on_event(&mut self, call: u64, ev: CallEvent) -> Result<(), Violation> {
        self.events += 1;
        let now = self.phase.get(&call).copied();
        let next = match (now, ev) {
            (None, CallEvent::Offered) => Phase::Offered,
            (Some(Phase::Offered), CallEvent::Answered) => Phase::Connected,
            (Some(Phase::Connected), CallEvent::Held) => Phase::Held,
            (Some(Phase::Held), CallEvent::Resumed) => Phase::Connected,
            (
                Some(Phase::Offered | Phase::Connected | Phase::Held),
                CallEvent::Ended | CallEvent::Transferred,
            ) => Phase::Over,
            (now, ev) => {
                return Err(Violation(format!(
                    "call {call}: {} {}",
                    ev.name(),
                    match now {
                        None => "before call_offered".to_string(),
                        Some(Phase::Over) => "after the call ended for this agent".to_string(),
                        Some(p) => format!("while the call is {p:?}").to_lowercase(),
                    }
                )))
            }
        };
        self.phase.insert(call, next);
        Ok(())
    }

    /// Calls still the agent's (normal for those in progress when the run stops).
    pub fn open(&self) -> usize {
        self.phase.values().filter(|p| **p != Phase::Over).count()
    }

    pub fn seen(&self) -> usize {
        self.phase.len()
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); None when there are none.
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_it_needs_and_skips_the_rest() {
        let text = r#"{"v":1,"type":"queue_delta","seq":7,"at_ms":1760000002000,
            "queues":[{"name":"q","callers":[{"call":5}]}],"agents":[{"id":"a1","call":5}],
            "removed_queues":[],"removed_agents":[]}"#;
        let m = Msg::parse(text).unwrap();
        assert_eq!(m.kind, "queue_delta");
        assert_eq!(
            (m.v, m.seq, m.at_ms),
            (Some(1), Some(7), Some(1_760_000_002_000))
        );
        // The nested "call" fields belong to the state, not to the message.
        assert_eq!(m.call, None);
        let e =
            Msg::parse(r#"{"v":1,"type":"error","id":null,"code":"bad_request","message":"x"}"#)
                .unwrap();
        assert_eq!((e.id_key(), e.code.as_deref()), (None, Some("bad_request")));
        let r = Msg::parse(r#"{"v":1,"type":"result","id":"x7","ok":true}"#).unwrap();
        assert_eq!(r.id_key().as_deref(), Some("\"x7\""));
        assert!(
            Msg::parse(r#"{"v":1,"seq":3}"#).is_err(),
            "a message needs a type"
        );
    }

    #[test]
    fn each_command_gets_exactly_one_answer() {
        let mut c = Commands::default();
        c.sent("1".into(), "login");
        c.sent("2".into(), "subscribe_queues");
        assert_eq!(
            c.answer(Some("1"), None),
            Ok(Answer::Of {
                kind: "login",
                outcome: Ok(())
            })
        );
        assert!(
            c.answer(Some("1"), None).is_err(),
            "a second answer to id 1"
        );
        assert!(
            c.answer(Some("9"), Some("internal")).is_err(),
            "an answer to nothing sent"
        );
        assert_eq!(c.unanswered(), vec!["subscribe_queues"]);
        assert_eq!(
            c.answer(Some("2"), Some("forbidden")),
            Ok(Answer::Of {
                kind: "subscribe_queues",
                outcome: Err("forbidden".into())
            })
        );
        assert_eq!(c.pending(), 0);
        assert_eq!((c.sent, c.answered), (2, 2));
        assert_eq!(c.errors.get("forbidden"), Some(&1));
        assert!(c.answer(None, Some("bad_request")).is_err());
    }

    #[test]
    fn feed_starts_with_a_snapshot_and_counts_resyncs() {
        let mut f = Feed::new(false);
        assert_eq!(f.on_message(FeedKind::Snapshot, 10), Ok(FeedStep::First));
        assert_eq!(f.on_message(FeedKind::Delta, 11), Ok(FeedStep::Next));
        assert_eq!(f.on_message(FeedKind::Delta, 12), Ok(FeedStep::Next));
        assert_eq!(
            f.on_message(FeedKind::Snapshot, 15),
            Ok(FeedStep::Resync { after: 12, seq: 15 })
        );
        assert_eq!(f.on_message(FeedKind::Delta, 16), Ok(FeedStep::Next));
        assert_eq!((f.snapshots, f.deltas, f.resyncs, f.gaps), (2, 3, 1, 0));

        let mut g = Feed::new(false);
        assert!(g.on_message(FeedKind::Delta, 3).is_err(), "a delta first");
        assert_eq!(g.on_message(FeedKind::Delta, 4), Ok(FeedStep::Next));
    }

    #[test]
    fn feed_never_goes_backwards_and_gaps_count_or_fail() {
        let mut f = Feed::new(false);
        f.on_message(FeedKind::Snapshot, 5).unwrap();
        f.on_message(FeedKind::Delta, 6).unwrap();
        assert!(f.on_message(FeedKind::Delta, 6).is_err(), "repeated seq");
        assert!(f.on_message(FeedKind::Delta, 4).is_err(), "backwards");
        assert!(
            f.on_message(FeedKind::Snapshot, 6).is_err(),
            "a snapshot may not go back either"
        );
        // A stale message does not move the reference point.
        assert_eq!(f.on_message(FeedKind::Delta, 7), Ok(FeedStep::Next));
        assert_eq!(
            f.on_message(FeedKind::Delta, 10),
            Ok(FeedStep::Gap { after: 7, seq: 10 })
        );
        assert_eq!(f.gaps, 1);

        let mut s = Feed::new(true);
        s.on_message(FeedKind::Snapshot, 1).unwrap();
        let err = s.on_message(FeedKind::Delta, 4).unwrap_err();
        assert!(err.0.contains("2 message(s) missing"), "{err}");
        assert_eq!(s.on_message(FeedKind::Delta, 5), Ok(FeedStep::Next));
    }

    #[test]
    fn call_events_follow_the_call() {
        use CallEvent::*;
        let mut c = Calls::default();
        for ev in [Offered, Answered, Held, Resumed, Held, Resumed, Ended] {
            c.on_event(1, ev).unwrap();
        }
        c.on_event(2, Offered).unwrap();
        c.on_event(2, Ended).unwrap(); // declined or withdrawn
        c.on_event(3, Offered).unwrap();
        c.on_event(3, Answered).unwrap();
        c.on_event(3, Transferred).unwrap();
        c.on_event(4, Offered).unwrap();
        assert_eq!((c.seen(), c.open()), (4, 1));
        assert_eq!(c.events, 13);
    }

    #[test]
    fn call_events_out_of_order_are_violations() {
        use CallEvent::*;
        let mut c = Calls::default();
        let e = c.on_event(7, Answered).unwrap_err();
        assert!(e.0.contains("before call_offered"), "{e}");
        c.on_event(8, Offered).unwrap();
        assert!(c.on_event(8, Offered).is_err(), "offered twice");
        assert!(c.on_event(8, Held).is_err(), "held before answered");
        assert!(c.on_event(8, Resumed).is_err(), "resumed when not held");
        c.on_event(8, Answered).unwrap();
        assert!(c.on_event(8, Answered).is_err(), "answered twice");
        c.on_event(8, Ended).unwrap();
        for ev in [Ended, Offered, Answered, Transferred] {
            let e = c.on_event(8, ev).unwrap_err();
            assert!(e.0.contains("after the call ended"), "{e}");
        }
        c.on_event(9, Offered).unwrap();
        c.on_event(9, Transferred).unwrap();
        assert!(c.on_event(9, Ended).is_err(), "the call left this agent");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[42], 0.99), Some(42));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
