//! One serialization of the ACD snapshot per tick, shared by every supervisor.

use crate::protocol::to_text;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use verde_acd::{AgentId, CallerKind, Snapshot};

/// What one tick produced: the full snapshot and, when the previous tick is known, what changed
/// since. Cheap to clone (shared strings); a `tokio::sync::watch` of it suits the fan-out, since
/// a session that skipped frames is sent the full snapshot instead of the deltas it missed.
#[derive(Debug, Clone)]
pub struct Frame {
    seq: u64,
    snapshot: Arc<str>,
    delta: Delta,
}

#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// The first frame: nothing to compare with.
    None,
    Unchanged,
    Changes(Arc<str>),
}

impl Frame {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The `queue_snapshot` message.
    pub fn snapshot(&self) -> &Arc<str> {
        &self.snapshot
    }

    /// The `queue_delta` message from the previous frame, `None` when nothing changed or for the
    /// first frame.
    pub fn delta(&self) -> Option<&Arc<str>> {
        match &self.delta {
            Delta::Changes(d) => Some(d),
            _ => None,
        }
    }

    pub(crate) fn delta_kind(&self) -> &Delta {
        &self.delta
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct QueueView {
    name: String,
    waiting: usize,
    callbacks_waiting: usize,
    offering: usize,
    oldest_since_ms: Option<i64>,
    estimated_wait_s: Option<u64>,
    handle_time_s: u64,
    agents_logged_in: usize,
    agents_ready: usize,
    callers: Vec<CallerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct CallerView {
    call: u64,
    caller: String,
    priority: u8,
    kind: &'static str,
    position: Option<u32>,
    since_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct AgentView {
    id: String,
    name: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    since_ms: i64,
    call: Option<u64>,
    calls_handled: u64,
    missed: u32,
    queues: Vec<String>,
    registered: bool,
}

#[derive(Serialize)]
struct SnapshotBody<'a> {
    seq: u64,
    at_ms: i64,
    queues: &'a [QueueView],
    agents: &'a [AgentView],
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    seq: u64,
    at_ms: i64,
    queues: Vec<&'a QueueView>,
    agents: Vec<&'a AgentView>,
    removed_queues: Vec<&'a str>,
    removed_agents: Vec<&'a str>,
}

/// Turns the ACD's published snapshots into wallboard messages, owned by one task that ticks it.
///
/// Times go out as wall-clock instants ("in this state since"), not durations, so an agent or a
/// queue whose state did not change is byte-for-byte the same from one tick to the next and
/// stays out of the delta. Instants are converted through one anchor taken at construction, so
/// the conversion cannot jitter between ticks (a wall-clock step after start is not followed;
/// restart to pick it up).
pub struct Broadcast {
    anchor: Instant,
    anchor_wall_ms: i64,
    seq: u64,
    prev: Option<(Vec<QueueView>, Vec<AgentView>)>,
    serializations: u64,
}

impl Broadcast {
    /// `anchor_wall_ms` is the unix time in milliseconds at `anchor`.
    pub fn new(anchor: Instant, anchor_wall_ms: i64) -> Self {
        Broadcast {
            anchor,
            anchor_wall_ms,
            seq: 0,
            prev: None,
            serializations: 0,
        }
    }

    fn wall_ms(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.anchor) {
            Some(d) => self.anchor_wall_ms + d.as_millis() as i64,
            None => self.anchor_wall_ms - (self.anchor - at).as_millis() as i64,
        }
    }

    /// Wall time `ago` before `at`.
    fn since_ms(&self, at: Instant, ago: Duration) -> i64 {
        match at.checked_sub(ago) {
            Some(t) => self.wall_ms(t),
            None => self.wall_ms(at) - ago.as_millis() as i64,
        }
    }

    /// Builds the frame for `snapshot`, taken by the ACD at `taken_at`. `registered` tells
    /// whether an agent's phone is registered (the terminal's state on the wallboard).
    pub fn tick(
        &mut self,
        snapshot: &Snapshot,
        taken_at: Instant,
        registered: impl Fn(&AgentId) -> bool,
    ) -> Frame {
        self.seq += 1;
        let seq = self.seq;
        let at_ms = self.wall_ms(taken_at);
        let queues: Vec<QueueView> = snapshot
            .queues
            .iter()
            .map(|q| QueueView {
                name: q.name.to_string(),
                waiting: q.waiting,
                callbacks_waiting: q.callbacks_waiting,
                offering: q.offering,
                oldest_since_ms: q.longest_wait.map(|w| self.since_ms(taken_at, w)),
                // Whole seconds: the estimate moves with every call in progress, and finer
                // figures would put every queue in every delta for nothing a person can see.
                estimated_wait_s: q.estimated_wait.map(|w| w.as_secs()),
                handle_time_s: q.handle_time.as_secs(),
                agents_logged_in: q.agents_logged_in,
                agents_ready: q.agents_ready,
                callers: q
                    .callers
                    .iter()
                    .map(|c| CallerView {
                        call: c.call.0,
                        caller: c.caller.clone(),
                        priority: c.priority,
                        kind: match c.kind {
                            CallerKind::Live => "live",
                            CallerKind::Callback => "callback",
                        },
                        position: c.position,
                        since_ms: self.since_ms(taken_at, c.waited),
                    })
                    .collect(),
            })
            .collect();
        let agents: Vec<AgentView> = snapshot
            .agents
            .iter()
            .map(|a| {
                let (state, reason) = crate::protocol::state_name(&a.state);
                AgentView {
                    id: a.id.to_string(),
                    name: a.name.clone(),
                    state,
                    reason: reason.map(str::to_string),
                    since_ms: self.since_ms(taken_at, a.in_state),
                    call: a.current_call.map(|c| c.0),
                    calls_handled: a.calls_handled,
                    missed: a.missed,
                    queues: a.queues.iter().map(|q| q.to_string()).collect(),
                    registered: registered(&a.id),
                }
            })
            .collect();

        let snapshot_text: Arc<str> = to_text(
            "queue_snapshot",
            SnapshotBody {
                seq,
                at_ms,
                queues: &queues,
                agents: &agents,
            },
        )
        .into();
        self.serializations += 1;

        let delta = match &self.prev {
            None => Delta::None,
            Some((pq, pa)) => {
                let body = diff(seq, at_ms, pq, pa, &queues, &agents);
                if body.queues.is_empty()
                    && body.agents.is_empty()
                    && body.removed_queues.is_empty()
                    && body.removed_agents.is_empty()
                {
                    Delta::Unchanged
                } else {
                    self.serializations += 1;
                    Delta::Changes(to_text("queue_delta", body).into())
                }
            }
        };
        self.prev = Some((queues, agents));
        Frame {
            seq,
            snapshot: snapshot_text,
            delta,
        }
    }

    /// Messages serialized so far (one snapshot per tick, plus one delta when something
    /// changed), whatever the number of subscribers.
    pub fn serializations(&self) -> u64 {
        self.serializations
    }
}

fn diff<'a>(
    seq: u64,
    at_ms: i64,
    prev_queues: &'a [QueueView],
    prev_agents: &'a [AgentView],
    queues: &'a [QueueView],
    agents: &'a [AgentView],
) -> DeltaBody<'a> {
    let pq: HashMap<&str, &QueueView> = prev_queues.iter().map(|q| (&*q.name, q)).collect();
    let pa: HashMap<&str, &AgentView> = prev_agents.iter().map(|a| (&*a.id, a)).collect();
    let nq: HashMap<&str, ()> = queues.iter().map(|q| (&*q.name, ())).collect();
    let na: HashMap<&str, ()> = agents.iter().map(|a| (&*a.id, ())).collect();
    DeltaBody {
        seq,
        at_ms,
        queues: queues
            .iter()
            .filter(|q| pq.get(&*q.name).copied() != Some(*q))
            .collect(),
        agents: agents
            .iter()
            .filter(|a| pa.get(&*a.id).copied() != Some(*a))
            .collect(),
        removed_queues: prev_queues
            .iter()
            .map(|q| &*q.name)
            .filter(|n| !nq.contains_key(n))
            .collect(),
        removed_agents: prev_agents
            .iter()
            .map(|a| &*a.id)
            .filter(|n| !na.contains_key(n))
            .collect(),
    }
}
