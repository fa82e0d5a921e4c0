//! The single-owner distributor. See the crate documentation for the design.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::config::{is_dtmf_key, AgentConfig, CallbackMode, QueueConfig, Strategy};
use crate::order::RankedMap;
use crate::types::{
    AcdError, Action, AgentId, AgentSnapshot, AgentState, CallKey, CallerKind, CallerSnapshot,
    ConfigError, ExitReason, Input, OfferFailure, QueueName, QueueSnapshot, Snapshot,
};

/// Waiting-line keys are `(255 - priority) << 120 | ticket`, and a ticket is
/// `original enqueue time << 56 | sequence`: one `u128` orders callers by priority (higher
/// first), then by the time they first joined, then by arrival. Live callers join at `now`, so
/// for them this is plain FIFO; a callback carries its original time and so lands among the
/// live callers exactly where its caller would stand. The ticket is kept on requeue, abandoned
/// resume and callback retries, so "keeps its place" is just key order.
type LineKey = u128;
const LANE_SHIFT: u32 = 120;
const SEQ_BITS: u32 = 56;
const TICKET_MASK: LineKey = (1 << LANE_SHIFT) - 1;
/// Weight of the newest call in the handle-time average (about the last ten calls matter).
const EWMA_ALPHA: f64 = 0.2;
/// Announcements within this long reuse one service profile per queue.
const EWT_CACHE_TTL: Duration = Duration::from_secs(1);
/// An agent's level in a queue when it meets every skill requirement (or there are none).
const FULL_LEVEL: u8 = u8::MAX;

/// Hasher for call keys and configured names: a multiply per word instead of SipHash on the hot
/// path. Keys come from the binary and the config, not from callers: no flooding concern.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Order of ready agents within a queue, by strategy (see `Acd::ready_key`); the last field is
/// the agent index so keys are unique.
type ReadyKey = (u64, u64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Ring(CallKey),
    MaxWait(CallKey),
    Announce(CallKey),
    WrapUp(u32),
    Escalate(u32),
}

/// Ready agents of one queue that share a skill level there.
#[derive(Debug)]
struct Bucket {
    level: u8,
    ready: BTreeSet<ReadyKey>,
}

#[derive(Debug)]
struct EwtCache {
    at: Instant,
    version: u64,
    handle: Duration,
    /// Time until each serving agent can take a new call, ascending.
    remaining: Vec<Duration>,
}

#[derive(Debug)]
struct Resume {
    ticket: LineKey,
    enqueued_at: Instant,
    expires: Instant,
}

#[derive(Debug)]
struct Queue {
    name: QueueName,
    cfg: QueueConfig,
    skills: Vec<(String, u8)>,
    /// (after, cap) sorted by `after`; caps only go down.
    tiers: Vec<(Duration, u8)>,
    waiting: RankedMap<LineKey>,
    /// Sorted by level, highest first.
    buckets: Vec<Bucket>,
    ready_count: usize,
    /// Logged-in member agents.
    members: Vec<u32>,
    /// Callers waiting or being offered, callbacks included.
    len: usize,
    /// Callbacks among `len`: they do not count against `max_len`, which limits live lines.
    callbacks: usize,
    offering: usize,
    rr_last: Option<u32>,
    handle_secs: Option<f64>,
    escalate_at: Option<Instant>,
    dirty: bool,
    /// Bumped on every state change of a member agent (invalidates the EWT cache).
    version: u64,
    ewt_cache: Option<EwtCache>,
    resume: HashMap<String, Resume>,
    /// Expiry order of `resume` (the window is per queue, so this is sorted).
    resume_order: VecDeque<(Instant, String, LineKey)>,
}

impl Queue {
    /// The skill cap for a caller who has waited `waited`: agents whose level is at least the
    /// cap are eligible.
    fn cap(&self, waited: Duration) -> u8 {
        let mut cap = FULL_LEVEL;
        for &(after, level) in &self.tiers {
            if waited < after {
                break;
            }
            cap = cap.min(level);
        }
        cap
    }

    fn handle_time(&self) -> Duration {
        self.handle_secs
            .map(Duration::from_secs_f64)
            .unwrap_or(self.cfg.default_handle_time)
    }

    fn bucket_mut(&mut self, level: u8) -> &mut Bucket {
        let i = match self.buckets.binary_search_by(|b| level.cmp(&b.level)) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(
                    i,
                    Bucket {
                        level,
                        ready: BTreeSet::new(),
                    },
                );
                i
            }
        };
        &mut self.buckets[i]
    }

    fn purge_resume(&mut self, now: Instant) {
        while let Some((expires, _, _)) = self.resume_order.front() {
            if *expires >= now {
                break;
            }
            let (_, number, ticket) = self.resume_order.pop_front().expect("front exists");
            if self.resume.get(&number).is_some_and(|r| r.ticket == ticket) {
                self.resume.remove(&number);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum St {
    LoggedOut,
    Ready,
    Reserved(CallKey),
    Ringing(CallKey),
    OnCall {
        call: CallKey,
        queue: u32,
        since: Instant,
    },
    WrapUp(Instant),
    Paused(String),
}

impl St {
    fn public(&self) -> AgentState {
        match self {
            St::LoggedOut => AgentState::LoggedOut,
            St::Ready => AgentState::Ready,
            St::Reserved(_) => AgentState::Reserved,
            St::Ringing(_) => AgentState::Ringing,
            St::OnCall { .. } => AgentState::OnCall,
            St::WrapUp(_) => AgentState::WrapUp,
            St::Paused(reason) => AgentState::Paused {
                reason: reason.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct Agent {
    id: AgentId,
    name: String,
    skills: BTreeMap<String, u8>,
    config_queues: Vec<u32>,
    /// (queue, level in that queue) while logged in.
    queues: Vec<(u32, u8)>,
    state: St,
    since: Instant,
    idle_since: Instant,
    calls_handled: u64,
    misses: u32,
    pending_pause: Option<String>,
    pending_logout: bool,
    in_ready: bool,
}

#[derive(Debug)]
struct Caller {
    queue: u32,
    priority: u8,
    key: LineKey,
    number: String,
    /// Original enqueue time (kept on requeue and abandoned resume; a callback's is the time
    /// its caller first joined).
    enqueued_at: Instant,
    /// A virtual caller standing in for someone to call back: no announcements, no exits.
    callback: bool,
    offers: Vec<u32>,
    ring_at: Option<Instant>,
    max_wait_at: Option<Instant>,
    timed_out: bool,
    announce_at: Option<Instant>,
    /// Agents that failed an offer for this caller: tried last.
    excluded: Vec<u32>,
}

impl Caller {
    fn kind(&self) -> CallerKind {
        if self.callback {
            CallerKind::Callback
        } else {
            CallerKind::Live
        }
    }
}

/// How an offer ended, for the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferEnd {
    /// The ACD withdrew it without blame (logout, ring-all timeout): CancelOffer, agent settles.
    Withdrawn,
    /// Ring timeout on a single offer: CancelOffer and a miss.
    TimedOut,
    /// The binary reported it.
    Failed(OfferFailure),
}

/// The automatic call distributor. Owned by one task; see the crate documentation.
#[derive(Debug)]
pub struct Acd {
    base: Instant,
    queues: Vec<Queue>,
    queue_ix: FastMap<QueueName, u32>,
    agents: Vec<Agent>,
    agent_ix: FastMap<AgentId, u32>,
    callers: FastMap<CallKey, Caller>,
    /// Direct offers (transfers to a named agent): agent, queue, ring deadline.
    direct: FastMap<CallKey, (u32, u32, Instant)>,
    timers: BTreeSet<(Instant, Timer)>,
    actions: VecDeque<Action>,
    dirty: Vec<u32>,
    next_seq: u64,
}

fn agent_level(required: &[(String, u8)], skills: &BTreeMap<String, u8>) -> u8 {
    // Eligible under cap c iff every requirement min(req, c) is met, i.e. c <= the lowest level
    // among the skills the agent has below the requirement.
    required
        .iter()
        .filter_map(|(skill, req)| {
            let have = skills.get(skill).copied().unwrap_or(0);
            (have < *req).then_some(have)
        })
        .min()
        .unwrap_or(FULL_LEVEL)
}

fn line_key(priority: u8, ticket: LineKey) -> LineKey {
    (LineKey::from(u8::MAX - priority) << LANE_SHIFT) | ticket
}

fn resumable(number: &str) -> bool {
    !number.is_empty() && !number.eq_ignore_ascii_case("anonymous")
}

impl Acd {
    /// Builds the distributor; every agent starts logged out.
    pub fn new(
        queues: Vec<QueueConfig>,
        agents: Vec<AgentConfig>,
        now: Instant,
    ) -> Result<Acd, ConfigError> {
        let mut acd = Acd {
            base: now,
            queues: Vec::with_capacity(queues.len()),
            queue_ix: FastMap::default(),
            agents: Vec::with_capacity(agents.len()),
            agent_ix: FastMap::default(),
            callers: FastMap::default(),
            direct: FastMap::default(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            next_seq: 1,
        };
        for cfg in queues {
            let name = QueueName::from(cfg.name.as_str());
            if acd.queue_ix.contains_key(&name) {
                return Err(ConfigError::DuplicateQueue(cfg.name));
            }
            if cfg.ring_timeout.is_zero() {
                return Err(ConfigError::ZeroRingTimeout(cfg.name));
            }
            let bad_callback = |field, reason| ConfigError::Callback {
                queue: cfg.name.clone(),
                field,
                reason,
            };
            if !is_dtmf_key(cfg.callback.offer_key) {
                return Err(bad_callback(
                    "offer_key",
                    "must be a DTMF key: 0-9, *, # or A-D",
                ));
            }
            if cfg.callback.max_attempts == 0 {
                return Err(bad_callback("max_attempts", "must be at least 1"));
            }
            let mut tiers: Vec<(Duration, u8)> = cfg
                .escalation
                .iter()
                .map(|t| (t.after, t.min_level))
                .collect();
            tiers.sort_by_key(|t| t.0);
            let mut cap = FULL_LEVEL;
            for t in &mut tiers {
                cap = cap.min(t.1);
                t.1 = cap;
            }
            acd.queue_ix.insert(name.clone(), acd.queues.len() as u32);
            acd.queues.push(Queue {
                name,
                skills: cfg.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                tiers,
                cfg,
                waiting: RankedMap::new(),
                buckets: Vec::new(),
                ready_count: 0,
                members: Vec::new(),
                len: 0,
                callbacks: 0,
                offering: 0,
                rr_last: None,
                handle_secs: None,
                escalate_at: None,
                dirty: false,
                version: 0,
                ewt_cache: None,
                resume: HashMap::new(),
                resume_order: VecDeque::new(),
            });
        }
        for cfg in agents {
            let id = AgentId::from(cfg.id.as_str());
            if acd.agent_ix.contains_key(&id) {
                return Err(ConfigError::DuplicateAgent(cfg.id));
            }
            let mut config_queues = Vec::with_capacity(cfg.queues.len());
            for q in &cfg.queues {
                let Some(&qi) = acd.queue_ix.get(q.as_str()) else {
                    return Err(ConfigError::UnknownQueue {
                        agent: cfg.id.clone(),
                        queue: q.clone(),
                    });
                };
                if !config_queues.contains(&qi) {
                    config_queues.push(qi);
                }
            }
            acd.agent_ix.insert(id.clone(), acd.agents.len() as u32);
            acd.agents.push(Agent {
                id,
                name: cfg.name.unwrap_or_else(|| cfg.id.clone()),
                skills: cfg.skills,
                config_queues,
                queues: Vec::new(),
                state: St::LoggedOut,
                since: now,
                idle_since: now,
                calls_handled: 0,
                misses: 0,
                pending_pause: None,
                pending_logout: false,
                in_ready: false,
            });
        }
        Ok(acd)
    }

    /// Applies one input, then dispatches whatever it made possible. On error nothing changed.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), AcdError> {
        let result = match input {
            Input::Enqueue {
                call,
                queue,
                priority,
                caller,
            } => self.enqueue(call, &queue, priority, caller, now),
            Input::EnqueueCallback {
                call,
                queue,
                priority,
                caller,
                enqueued_at,
            } => self.enqueue_callback(call, &queue, priority, caller, enqueued_at, now),
            Input::Abandon { call } | Input::RemoveCaller { call }
                if self.direct.contains_key(&call) =>
            {
                self.end_direct(call, OfferEnd::Withdrawn, now);
                Ok(())
            }
            Input::Direct { call, agent, queue } => self.direct_offer(call, &agent, &queue, now),
            Input::Abandon { call } => self.abandon(call, now),
            Input::KeyPressed { call, digit } => self.key_pressed(call, digit, now),
            Input::RemoveCaller { call } => {
                if self.callers.contains_key(&call) {
                    self.finish_caller(call, now);
                    Ok(())
                } else {
                    Err(AcdError::UnknownCall(call))
                }
            }
            Input::AgentLogin { agent, queues } => self.login(&agent, queues, now),
            Input::AgentReady { agent } => self.ready(&agent, now),
            Input::AgentPause { agent, reason } => self.pause(&agent, reason, now),
            Input::AgentLogout { agent } => self.logout(&agent, now),
            Input::OfferRinging { call, agent } => self.ringing(call, &agent, now),
            Input::OfferAnswered { call, agent } => self.answered(call, &agent, now),
            Input::OfferFailed {
                call,
                agent,
                reason,
            } => {
                let a = self.offered_agent(call, &agent)?;
                if self.direct.contains_key(&call) {
                    self.end_direct(call, OfferEnd::Failed(reason), now);
                } else {
                    self.end_offer(call, a, OfferEnd::Failed(reason), now);
                }
                Ok(())
            }
            Input::CallEnded { call, agent } => self.ended(call, &agent, now),
            Input::WrapUpDone { agent } => {
                let a = self.agent_idx(&agent)?;
                if let St::WrapUp(until) = self.agents[a as usize].state {
                    self.timers.remove(&(until, Timer::WrapUp(a)));
                    self.settle(a, now);
                    Ok(())
                } else {
                    Err(AcdError::NotInWrapUp(agent.to_string()))
                }
            }
        };
        self.dispatch_dirty(now);
        result
    }

    /// Fires every timer due at `now` (ring timeouts, wrap-up ends, max wait, announcements,
    /// escalation tiers).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(at, timer, now);
        }
        self.dispatch_dirty(now);
    }

    /// When `handle_timeout` next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The state of one agent, if it exists.
    pub fn agent_state(&self, agent: &str) -> Option<AgentState> {
        let a = *self.agent_ix.get(agent)?;
        Some(self.agents[a as usize].state.public())
    }

    /// Callers in line in one queue, callbacks included (not counting those being offered).
    pub fn waiting(&self, queue: &str) -> Option<usize> {
        let q = *self.queue_ix.get(queue)?;
        Some(self.queues[q as usize].waiting.len())
    }

    /// When `call` first joined its queue (earlier than its `Enqueue` after an abandoned resume;
    /// a callback's original time). A caller who accepts a callback keeps this time: read it
    /// before [`Input::RemoveCaller`] and pass it back in [`Input::EnqueueCallback`].
    pub fn enqueued_at(&self, call: CallKey) -> Option<Instant> {
        self.callers.get(&call).map(|c| c.enqueued_at)
    }

    /// The estimated wait of a caller or callback in line, from the callers ahead of it in its
    /// queue (callbacks included; see the crate documentation). `None` when `call` is not in
    /// line (unknown, or being offered to an agent) or no agent serves its queue.
    pub fn estimated_wait_for(&self, call: CallKey, now: Instant) -> Option<Duration> {
        let caller = self.callers.get(&call)?;
        if !caller.offers.is_empty() {
            return None;
        }
        self.caller_ewt(caller, now)
    }

    /// Whether to offer a callback to `call`, a live caller in line, now: its queue has
    /// callbacks enabled, the basket holds fewer than `ceiling` requests for the queue
    /// (`basket_size`, which only the binary's store knows), and either the caller's estimated
    /// wait is over `offer_when_wait_over` (nobody serving counts as over) or more than
    /// `offer_when_len_over` are in the queue. False for callbacks, callers being offered to an
    /// agent and unknown calls.
    pub fn callback_offer(&self, call: CallKey, basket_size: usize, now: Instant) -> bool {
        let Some(caller) = self.callers.get(&call) else {
            return false;
        };
        if caller.callback || !caller.offers.is_empty() {
            return false;
        }
        let queue = &self.queues[caller.queue as usize];
        let cfg = &queue.cfg.callback;
        if !cfg.enabled || basket_size >= cfg.ceiling {
            return false;
        }
        cfg.offer_when_len_over.is_some_and(|n| queue.len > n)
            || cfg
                .offer_when_wait_over
                .is_some_and(|limit| self.caller_ewt(caller, now).is_none_or(|w| w > limit))
    }

    fn caller_ewt(&self, caller: &Caller, now: Instant) -> Option<Duration> {
        // Uncached: this is a query, not the announcement path.
        let position = self.queues[caller.queue as usize].waiting.rank(caller.key);
        let (handle, remaining) = self.service_profile(caller.queue, now);
        estimate(handle, &remaining, position)
    }

    /// Starts a new day for `fewest-calls`: every agent's handled count goes back to 0.
    pub fn reset_daily_counters(&mut self) {
        for a in 0..self.agents.len() as u32 {
            let was_ready = self.agents[a as usize].in_ready;
            self.remove_ready(a);
            self.agents[a as usize].calls_handled = 0;
            if was_ready {
                self.insert_ready(a);
            }
        }
    }

    /// Copies the live state for the CTI layer. O(callers + agents).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut offered: Vec<Vec<CallerSnapshot>> = vec![Vec::new(); self.queues.len()];
        let mut longest: Vec<Option<Duration>> = vec![None; self.queues.len()];
        for (call, c) in &self.callers {
            let waited = now.saturating_duration_since(c.enqueued_at);
            let l = &mut longest[c.queue as usize];
            *l = Some(l.map_or(waited, |l| l.max(waited)));
            if !c.offers.is_empty() {
                offered[c.queue as usize].push(CallerSnapshot {
                    call: *call,
                    caller: c.number.clone(),
                    priority: c.priority,
                    kind: c.kind(),
                    position: None,
                    waited,
                });
            }
        }
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(qi, q)| {
                let mut callers: Vec<CallerSnapshot> = q
                    .waiting
                    .iter()
                    .enumerate()
                    .map(|(pos, (_, raw))| {
                        let c = &self.callers[&CallKey(raw)];
                        CallerSnapshot {
                            call: CallKey(raw),
                            caller: c.number.clone(),
                            priority: c.priority,
                            kind: c.kind(),
                            position: Some(pos as u32),
                            waited: now.saturating_duration_since(c.enqueued_at),
                        }
                    })
                    .collect();
                let callbacks_waiting = callers
                    .iter()
                    .filter(|c| c.kind == CallerKind::Callback)
                    .count();
                let mut ringing = std::mem::take(&mut offered[qi]);
                ringing.sort_by_key(|c| std::cmp::Reverse(c.waited));
                let offering = ringing.len();
                callers.extend(ringing);
                let (handle, remaining) = self.service_profile(qi as u32, now);
                QueueSnapshot {
                    name: q.name.clone(),
                    waiting: q.waiting.len(),
                    callbacks_waiting,
                    offering,
                    longest_wait: longest[qi],
                    estimated_wait: estimate(handle, &remaining, q.waiting.len()),
                    handle_time: handle,
                    agents_logged_in: q.members.len(),
                    agents_ready: q.ready_count,
                    callers,
                }
            })
            .collect();
        let agents = self
            .agents
            .iter()
            .map(|a| AgentSnapshot {
                id: a.id.clone(),
                name: a.name.clone(),
                state: a.state.public(),
                in_state: now.saturating_duration_since(a.since),
                current_call: match a.state {
                    St::Reserved(c) | St::Ringing(c) | St::OnCall { call: c, .. } => Some(c),
                    _ => None,
                },
                calls_handled: a.calls_handled,
                missed: a.misses,
                queues: if a.state == St::LoggedOut {
                    a.config_queues
                        .iter()
                        .map(|&q| self.queues[q as usize].name.clone())
                        .collect()
                } else {
                    a.queues
                        .iter()
                        .map(|&(q, _)| self.queues[q as usize].name.clone())
                        .collect()
                },
            })
            .collect();
        Snapshot { queues, agents }
    }

    // ---- lookups -------------------------------------------------------------------------

    fn agent_idx(&self, agent: &AgentId) -> Result<u32, AcdError> {
        self.agent_ix
            .get(agent.as_str())
            .copied()
            .ok_or_else(|| AcdError::UnknownAgent(agent.to_string()))
    }

    fn queue_idx(&self, queue: &QueueName) -> Result<u32, AcdError> {
        self.queue_ix
            .get(queue.as_str())
            .copied()
            .ok_or_else(|| AcdError::UnknownQueue(queue.to_string()))
    }

    /// The agent index, if `call` is currently offered to it.
    fn offered_agent(&self, call: CallKey, agent: &AgentId) -> Result<u32, AcdError> {
        let a = self.agent_idx(agent)?;
        if let Some(&(d, _, _)) = self.direct.get(&call) {
            if d == a {
                return Ok(a);
            }
        }
        match self.callers.get(&call) {
            Some(c) if c.offers.contains(&a) => Ok(a),
            _ => Err(AcdError::NoSuchOffer {
                call,
                agent: agent.to_string(),
            }),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    // ---- agent state ---------------------------------------------------------------------

    fn set_state(&mut self, a: u32, state: St, now: Instant) {
        let agent = &mut self.agents[a as usize];
        agent.state = state;
        agent.since = now;
        for &(q, _) in &agent.queues {
            self.queues[q as usize].version += 1;
        }
        self.actions.push_back(Action::AgentState {
            agent: agent.id.clone(),
            state: agent.state.public(),
        });
    }

    /// Only called while the agent is out of every ready set, so the key is stable.
    fn ready_key(&self, q: u32, a: u32) -> ReadyKey {
        let agent = &self.agents[a as usize];
        match self.queues[q as usize].cfg.strategy {
            Strategy::LongestIdle => (self.nanos(agent.idle_since), 0, a),
            Strategy::FewestCalls => (agent.calls_handled, self.nanos(agent.idle_since), a),
            Strategy::FirstFree | Strategy::RoundRobin | Strategy::RingAll => (u64::from(a), 0, a),
        }
    }

    fn insert_ready(&mut self, a: u32) {
        if self.agents[a as usize].in_ready {
            return;
        }
        for i in 0..self.agents[a as usize].queues.len() {
            let (q, level) = self.agents[a as usize].queues[i];
            let key = self.ready_key(q, a);
            let queue = &mut self.queues[q as usize];
            queue.bucket_mut(level).ready.insert(key);
            queue.ready_count += 1;
            self.mark_dirty(q);
        }
        self.agents[a as usize].in_ready = true;
    }

    /// Takes the agent out of the ready set of every queue it serves (the reservation).
    fn remove_ready(&mut self, a: u32) {
        if !self.agents[a as usize].in_ready {
            return;
        }
        for i in 0..self.agents[a as usize].queues.len() {
            let (q, level) = self.agents[a as usize].queues[i];
            let key = self.ready_key(q, a);
            let queue = &mut self.queues[q as usize];
            let removed = queue.bucket_mut(level).ready.remove(&key);
            debug_assert!(removed, "ready agent missing from a ready set");
            queue.ready_count -= 1;
        }
        self.agents[a as usize].in_ready = false;
    }

    fn mark_dirty(&mut self, q: u32) {
        let queue = &mut self.queues[q as usize];
        if !queue.dirty {
            queue.dirty = true;
            self.dirty.push(q);
        }
    }

    fn make_ready(&mut self, a: u32, now: Instant) {
        self.set_state(a, St::Ready, now);
        self.insert_ready(a);
    }

    /// Where an agent goes when an offer, call or wrap-up is over.
    fn settle(&mut self, a: u32, now: Instant) {
        let agent = &mut self.agents[a as usize];
        if agent.pending_logout {
            self.do_logout(a, now);
        } else if let Some(reason) = agent.pending_pause.take() {
            self.set_state(a, St::Paused(reason), now);
        } else {
            self.make_ready(a, now);
        }
    }

    fn auto_pause(&mut self, a: u32, reason: &str, now: Instant) {
        let agent = &mut self.agents[a as usize];
        if agent.pending_logout {
            self.do_logout(a, now);
            return;
        }
        agent.pending_pause = None;
        info!(agent = %agent.id, reason, "agent paused automatically");
        self.set_state(a, St::Paused(reason.to_string()), now);
        self.actions.push_back(Action::AgentAutoPaused {
            agent: self.agents[a as usize].id.clone(),
            reason: reason.to_string(),
        });
    }

    /// The agent must hold no offer or call.
    fn do_logout(&mut self, a: u32, now: Instant) {
        self.remove_ready(a);
        if let St::WrapUp(until) = self.agents[a as usize].state {
            self.timers.remove(&(until, Timer::WrapUp(a)));
        }
        let agent = &mut self.agents[a as usize];
        agent.pending_logout = false;
        agent.pending_pause = None;
        self.set_state(a, St::LoggedOut, now);
        let old = std::mem::take(&mut self.agents[a as usize].queues);
        for (q, _) in old {
            let queue = &mut self.queues[q as usize];
            queue.members.retain(|&m| m != a);
            queue.version += 1;
            if queue.members.is_empty() {
                self.empty_queue(q, now);
            }
        }
    }

    /// The last member logged out: callers leave through the empty exit, if there is one.
    fn empty_queue(&mut self, q: u32, now: Instant) {
        if self.queues[q as usize].cfg.exits.empty.is_none() {
            return;
        }
        // Callbacks stay: their callers are not on the line, and agents will return.
        let calls: Vec<CallKey> = self.queues[q as usize]
            .waiting
            .iter()
            .map(|(_, raw)| CallKey(raw))
            .filter(|call| !self.callers[call].callback)
            .collect();
        for call in calls {
            self.exit(call, ExitReason::Empty, now);
        }
    }

    fn login(
        &mut self,
        agent: &AgentId,
        queues: Option<Vec<QueueName>>,
        now: Instant,
    ) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        let mut wanted: Vec<u32> = match queues {
            None => self.agents[a as usize].config_queues.clone(),
            Some(list) => list
                .iter()
                .map(|q| self.queue_idx(q))
                .collect::<Result<_, _>>()?,
        };
        wanted.sort_unstable();
        wanted.dedup();
        // Logging in again during a call cancels a logout requested earlier in that call.
        self.agents[a as usize].pending_logout = false;
        let was_ready = self.agents[a as usize].in_ready;
        self.remove_ready(a);
        let old = std::mem::take(&mut self.agents[a as usize].queues);
        for &(q, _) in &old {
            self.queues[q as usize].members.retain(|&m| m != a);
            self.queues[q as usize].version += 1;
        }
        let memberships: Vec<(u32, u8)> = wanted
            .iter()
            .map(|&q| {
                let level = agent_level(
                    &self.queues[q as usize].skills,
                    &self.agents[a as usize].skills,
                );
                (q, level)
            })
            .collect();
        for &(q, _) in &memberships {
            self.queues[q as usize].members.push(a);
            self.queues[q as usize].version += 1;
        }
        self.agents[a as usize].queues = memberships;
        if self.agents[a as usize].state == St::LoggedOut {
            let agent = &mut self.agents[a as usize];
            agent.idle_since = now;
            agent.misses = 0;
            info!(agent = %agent.id, "agent logged in");
            self.make_ready(a, now);
        } else if was_ready {
            self.insert_ready(a);
        }
        for (q, _) in old {
            if self.queues[q as usize].members.is_empty() {
                self.empty_queue(q, now);
            }
        }
        Ok(())
    }

    fn ready(&mut self, agent: &AgentId, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        match self.agents[a as usize].state.clone() {
            St::LoggedOut => return Err(AcdError::NotLoggedIn(agent.to_string())),
            St::Ready => {}
            St::Paused(_) => {
                self.agents[a as usize].misses = 0;
                self.make_ready(a, now);
            }
            St::WrapUp(until) => {
                self.timers.remove(&(until, Timer::WrapUp(a)));
                self.agents[a as usize].pending_pause = None;
                self.settle(a, now);
            }
            St::Reserved(_) | St::Ringing(_) | St::OnCall { .. } => {
                self.agents[a as usize].pending_pause = None;
            }
        }
        Ok(())
    }

    fn pause(&mut self, agent: &AgentId, reason: String, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        match self.agents[a as usize].state.clone() {
            St::LoggedOut => return Err(AcdError::NotLoggedIn(agent.to_string())),
            St::Reserved(_) | St::Ringing(_) | St::OnCall { .. } => {
                self.agents[a as usize].pending_pause = Some(reason);
            }
            St::WrapUp(until) => {
                self.timers.remove(&(until, Timer::WrapUp(a)));
                self.set_state(a, St::Paused(reason), now);
            }
            St::Ready | St::Paused(_) => {
                self.remove_ready(a);
                self.set_state(a, St::Paused(reason), now);
            }
        }
        Ok(())
    }

    fn logout(&mut self, agent: &AgentId, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        match self.agents[a as usize].state.clone() {
            St::LoggedOut => {}
            St::Reserved(call) | St::Ringing(call) => {
                self.agents[a as usize].pending_logout = true;
                if self.direct.contains_key(&call) {
                    self.end_direct(call, OfferEnd::Withdrawn, now);
                } else {
                    self.end_offer(call, a, OfferEnd::Withdrawn, now);
                }
            }
            St::OnCall { .. } => self.agents[a as usize].pending_logout = true,
            St::Ready | St::Paused(_) | St::WrapUp(_) => {
                info!(agent = %agent, "agent logged out");
                self.do_logout(a, now);
            }
        }
        Ok(())
    }

    // ---- callers -------------------------------------------------------------------------

    fn enqueue(
        &mut self,
        call: CallKey,
        queue: &QueueName,
        priority: u8,
        number: String,
        now: Instant,
    ) -> Result<(), AcdError> {
        let q = self.queue_idx(queue)?;
        if self.callers.contains_key(&call) {
            return Err(AcdError::DuplicateCall(call));
        }
        let qu = &mut self.queues[q as usize];
        qu.purge_resume(now);
        if qu
            .cfg
            .max_len
            .is_some_and(|max| qu.len - qu.callbacks >= max)
        {
            debug!(?call, queue = %qu.name, "queue full");
            self.actions.push_back(Action::Exit {
                call,
                reason: ExitReason::Full,
                node: qu.cfg.exits.full.clone(),
            });
            return Ok(());
        }
        if qu.cfg.exits.empty.is_some() && qu.members.is_empty() {
            debug!(?call, queue = %qu.name, "no agent logged in");
            self.actions.push_back(Action::Exit {
                call,
                reason: ExitReason::Empty,
                node: qu.cfg.exits.empty.clone(),
            });
            return Ok(());
        }
        let resumed = if resumable(&number) {
            qu.resume.remove(&number).filter(|r| r.expires >= now)
        } else {
            None
        };
        let (ticket, enqueued_at) = match resumed {
            Some(r) => {
                debug!(?call, queue = %qu.name, "abandoned caller resumes its place");
                (r.ticket, r.enqueued_at)
            }
            None => (self.ticket(now), now),
        };
        let qu = &self.queues[q as usize];
        let max_wait_at = qu.cfg.max_wait.map(|d| now + d);
        let announce_at = (qu.cfg.announce.position || qu.cfg.announce.estimated_wait)
            .then(|| now + qu.cfg.announce.first_delay);
        if let Some(at) = max_wait_at {
            self.timers.insert((at, Timer::MaxWait(call)));
        }
        if let Some(at) = announce_at {
            self.timers.insert((at, Timer::Announce(call)));
        }
        self.insert_caller(
            call,
            Caller {
                queue: q,
                priority,
                key: line_key(priority, ticket),
                number,
                enqueued_at,
                callback: false,
                offers: Vec::new(),
                ring_at: None,
                max_wait_at,
                timed_out: false,
                announce_at,
                excluded: Vec::new(),
            },
        );
        Ok(())
    }

    /// A callback stands in line from its original time: no full/empty check (the request was
    /// accepted when the caller left), no max-wait or announcement timer.
    fn enqueue_callback(
        &mut self,
        call: CallKey,
        queue: &QueueName,
        priority: u8,
        number: String,
        enqueued_at: Instant,
        now: Instant,
    ) -> Result<(), AcdError> {
        let q = self.queue_idx(queue)?;
        if self.callers.contains_key(&call) {
            return Err(AcdError::DuplicateCall(call));
        }
        // A time from the future would let a request jump people already waiting.
        let enqueued_at = enqueued_at.min(now);
        let ticket = self.ticket(enqueued_at);
        debug!(?call, queue = %queue, "callback joins the line at its original time");
        self.queues[q as usize].callbacks += 1;
        self.insert_caller(
            call,
            Caller {
                queue: q,
                priority,
                key: line_key(priority, ticket),
                number,
                enqueued_at,
                callback: true,
                offers: Vec::new(),
                ring_at: None,
                max_wait_at: None,
                timed_out: false,
                announce_at: None,
                excluded: Vec::new(),
            },
        );
        Ok(())
    }

    fn insert_caller(&mut self, call: CallKey, caller: Caller) {
        let q = caller.queue;
        let queue = &mut self.queues[q as usize];
        queue.waiting.insert(caller.key, call.0);
        queue.len += 1;
        self.callers.insert(call, caller);
        self.mark_dirty(q);
    }

    /// A fresh ticket for someone who first joined at `at` (see [`LineKey`]).
    fn ticket(&mut self, at: Instant) -> LineKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Signed offset from `base`, biased by 2^63, so that instants before the ACD was built
        // (callbacks reloaded after a restart) still sort by time.
        const MID: u64 = 1 << 63;
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let time = match at.checked_duration_since(self.base) {
            Some(after) => MID.saturating_add(nanos(after)),
            None => MID.saturating_sub(nanos(self.base.duration_since(at))),
        };
        (LineKey::from(time) << SEQ_BITS) | LineKey::from(seq)
    }

    /// Takes a caller out of the ACD entirely, withdrawing any outstanding offers.
    fn finish_caller(&mut self, call: CallKey, now: Instant) -> Caller {
        let mut caller = self.callers.remove(&call).expect("caller exists");
        let queue = &mut self.queues[caller.queue as usize];
        queue.len -= 1;
        if caller.callback {
            queue.callbacks -= 1;
        }
        // A caller is either in line or being offered (answered() already dropped its offer).
        if queue.waiting.remove(caller.key).is_none() {
            queue.offering -= 1;
        }
        if let Some(at) = caller.ring_at {
            self.timers.remove(&(at, Timer::Ring(call)));
        }
        if let Some(at) = caller.max_wait_at {
            self.timers.remove(&(at, Timer::MaxWait(call)));
        }
        if let Some(at) = caller.announce_at {
            self.timers.remove(&(at, Timer::Announce(call)));
        }
        for a in std::mem::take(&mut caller.offers) {
            self.actions.push_back(Action::CancelOffer {
                call,
                agent: self.agents[a as usize].id.clone(),
            });
            self.settle(a, now);
        }
        caller
    }

    fn exit(&mut self, call: CallKey, reason: ExitReason, now: Instant) {
        let caller = self.finish_caller(call, now);
        let exits = &self.queues[caller.queue as usize].cfg.exits;
        let node = match reason {
            ExitReason::Timeout => exits.timeout.clone(),
            ExitReason::Full => exits.full.clone(),
            ExitReason::Empty => exits.empty.clone(),
            ExitReason::Key => exits.key.clone(),
        };
        debug!(?call, ?reason, "caller leaves the queue");
        self.actions.push_back(Action::Exit { call, reason, node });
    }

    fn abandon(&mut self, call: CallKey, now: Instant) -> Result<(), AcdError> {
        if !self.callers.contains_key(&call) {
            return Err(AcdError::UnknownCall(call));
        }
        let caller = self.finish_caller(call, now);
        let waited = now.saturating_duration_since(caller.enqueued_at);
        let queue = &mut self.queues[caller.queue as usize];
        debug!(?call, queue = %queue.name, ?waited, "caller abandoned");
        self.actions.push_back(Action::Abandoned {
            call,
            queue: queue.name.clone(),
            waited,
        });
        let window = queue.cfg.abandoned_resume;
        // A callback's place lives in the basket, which re-enqueues it with its original time.
        if !window.is_zero() && !caller.callback && resumable(&caller.number) {
            let expires = now + window;
            let ticket = caller.key & TICKET_MASK;
            queue.resume.insert(
                caller.number.clone(),
                Resume {
                    ticket,
                    enqueued_at: caller.enqueued_at,
                    expires,
                },
            );
            queue
                .resume_order
                .push_back((expires, caller.number, ticket));
        }
        Ok(())
    }

    fn key_pressed(&mut self, call: CallKey, digit: char, now: Instant) -> Result<(), AcdError> {
        let caller = self.callers.get(&call).ok_or(AcdError::UnknownCall(call))?;
        let cfg = &self.queues[caller.queue as usize].cfg;
        // The callback offer key belongs to the binary's offer ("press 1 to be called back"):
        // it must never throw the caller out through the key exit instead.
        let callback_key = cfg.callback.enabled && digit == cfg.callback.offer_key;
        if cfg.exits.key.is_some() && !caller.callback && !callback_key {
            self.exit(call, ExitReason::Key, now);
        }
        Ok(())
    }

    // ---- offers --------------------------------------------------------------------------

    fn offer(&mut self, call: CallKey, q: u32, agents: &[u32], now: Instant) {
        let queue = &mut self.queues[q as usize];
        let caller = self.callers.get_mut(&call).expect("offered caller exists");
        let cb = &queue.cfg.callback;
        // Customer-first: the reserved agent rings only once the customer has answered.
        let ring_at = if caller.callback && cb.mode == CallbackMode::CustomerFirst {
            now + cb.customer_ring_timeout + queue.cfg.ring_timeout
        } else {
            now + queue.cfg.ring_timeout
        };
        queue.waiting.remove(caller.key);
        queue.offering += 1;
        caller.offers.extend_from_slice(agents);
        caller.ring_at = Some(ring_at);
        self.timers.insert((ring_at, Timer::Ring(call)));
        for &a in agents {
            self.remove_ready(a);
            self.set_state(a, St::Reserved(call), now);
            self.actions.push_back(Action::Offer {
                call,
                agent: self.agents[a as usize].id.clone(),
                queue: self.queues[q as usize].name.clone(),
            });
        }
        if let Some(&last) = agents.last() {
            self.queues[q as usize].rr_last = Some(last);
        }
    }

    /// Ends one agent's offer of `call`; when it was the last one the caller goes back to the
    /// head of the line (or out, if its max wait passed meanwhile).
    fn end_offer(&mut self, call: CallKey, a: u32, how: OfferEnd, now: Instant) {
        let caller = self.callers.get_mut(&call).expect("offered caller exists");
        let q = caller.queue;
        caller.offers.retain(|&x| x != a);
        if !caller.excluded.contains(&a) {
            caller.excluded.push(a);
        }
        let last = caller.offers.is_empty();
        if matches!(how, OfferEnd::Withdrawn | OfferEnd::TimedOut) {
            self.actions.push_back(Action::CancelOffer {
                call,
                agent: self.agents[a as usize].id.clone(),
            });
        }
        if last {
            self.requeue_or_exit(call, now);
        }
        self.agent_after_offer(a, q, how, now);
    }

    /// Where the agent goes after an offer that did not connect: a miss counts against it
    /// (paused after too many), a busy phone does not, an unreachable one pauses it.
    fn agent_after_offer(&mut self, a: u32, q: u32, how: OfferEnd, now: Instant) {
        match how {
            OfferEnd::Withdrawn => self.settle(a, now),
            OfferEnd::TimedOut
            | OfferEnd::Failed(OfferFailure::NoAnswer)
            | OfferEnd::Failed(OfferFailure::Rejected) => {
                let agent = &mut self.agents[a as usize];
                agent.misses += 1;
                agent.idle_since = now;
                let max = self.queues[q as usize].cfg.max_misses_before_pause;
                if max > 0 && agent.misses >= max {
                    self.auto_pause(a, "no-answer", now);
                } else {
                    self.settle(a, now);
                }
            }
            OfferEnd::Failed(OfferFailure::Busy) => {
                self.agents[a as usize].idle_since = now;
                self.settle(a, now);
            }
            OfferEnd::Failed(OfferFailure::Unreachable) => self.auto_pause(a, "unreachable", now),
        }
    }

    fn direct_offer(
        &mut self,
        call: CallKey,
        agent: &AgentId,
        queue: &QueueName,
        now: Instant,
    ) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        let q = self.queue_idx(queue)?;
        if self.callers.contains_key(&call) || self.direct.contains_key(&call) {
            return Err(AcdError::DuplicateCall(call));
        }
        let ag = &self.agents[a as usize];
        if ag.state != St::Ready || ag.pending_logout || ag.pending_pause.is_some() {
            self.actions.push_back(Action::DirectFailed {
                call,
                agent: ag.id.clone(),
                state: ag.state.public(),
                reason: None,
            });
            return Ok(());
        }
        let ring_at = now + self.queues[q as usize].cfg.ring_timeout;
        self.direct.insert(call, (a, q, ring_at));
        self.timers.insert((ring_at, Timer::Ring(call)));
        self.remove_ready(a);
        self.set_state(a, St::Reserved(call), now);
        self.actions.push_back(Action::Offer {
            call,
            agent: self.agents[a as usize].id.clone(),
            queue: self.queues[q as usize].name.clone(),
        });
        Ok(())
    }

    /// A direct offer ends without a connection; the agent settles as after a queue's offer.
    fn end_direct(&mut self, call: CallKey, how: OfferEnd, now: Instant) {
        let Some((a, q, ring_at)) = self.direct.remove(&call) else {
            return;
        };
        self.timers.remove(&(ring_at, Timer::Ring(call)));
        let id = self.agents[a as usize].id.clone();
        if matches!(how, OfferEnd::Withdrawn | OfferEnd::TimedOut) {
            self.actions.push_back(Action::CancelOffer {
                call,
                agent: id.clone(),
            });
        }
        let reason = match how {
            OfferEnd::Withdrawn => None,
            OfferEnd::TimedOut => Some(OfferFailure::NoAnswer),
            OfferEnd::Failed(f) => Some(f),
        };
        self.agent_after_offer(a, q, how, now);
        if how != OfferEnd::Withdrawn {
            self.actions.push_back(Action::DirectFailed {
                call,
                agent: id,
                state: self.agents[a as usize].state.public(),
                reason,
            });
        }
    }

    /// The caller has no offer left.
    fn requeue_or_exit(&mut self, call: CallKey, now: Instant) {
        let caller = self.callers.get_mut(&call).expect("caller exists");
        if let Some(at) = caller.ring_at.take() {
            self.timers.remove(&(at, Timer::Ring(call)));
        }
        let queue = &mut self.queues[caller.queue as usize];
        queue.offering -= 1;
        queue.waiting.insert(caller.key, call.0);
        let (q, timed_out) = (caller.queue, caller.timed_out);
        if timed_out {
            self.exit(call, ExitReason::Timeout, now);
        } else {
            self.actions.push_back(Action::Requeued { call });
            self.mark_dirty(q);
        }
    }

    fn ringing(&mut self, call: CallKey, agent: &AgentId, now: Instant) -> Result<(), AcdError> {
        let a = self.offered_agent(call, agent)?;
        if self.agents[a as usize].state == St::Reserved(call) {
            self.set_state(a, St::Ringing(call), now);
        }
        Ok(())
    }

    fn answered(&mut self, call: CallKey, agent: &AgentId, now: Instant) -> Result<(), AcdError> {
        let a = self.offered_agent(call, agent)?;
        if let Some((_, q, ring_at)) = self.direct.remove(&call) {
            self.timers.remove(&(ring_at, Timer::Ring(call)));
            self.agents[a as usize].misses = 0;
            self.set_state(
                a,
                St::OnCall {
                    call,
                    queue: q,
                    since: now,
                },
                now,
            );
            debug!(?call, agent = %agent, "connected (direct)");
            self.actions.push_back(Action::Connected {
                call,
                agent: self.agents[a as usize].id.clone(),
                queue: self.queues[q as usize].name.clone(),
                waited: Duration::ZERO,
            });
            return Ok(());
        }
        let caller = self.callers.get_mut(&call).expect("offered caller exists");
        caller.offers.retain(|&x| x != a);
        let (q, waited) = (
            caller.queue,
            now.saturating_duration_since(caller.enqueued_at),
        );
        self.agents[a as usize].misses = 0;
        self.set_state(
            a,
            St::OnCall {
                call,
                queue: q,
                since: now,
            },
            now,
        );
        debug!(?call, agent = %agent, ?waited, "connected");
        self.actions.push_back(Action::Connected {
            call,
            agent: self.agents[a as usize].id.clone(),
            queue: self.queues[q as usize].name.clone(),
            waited,
        });
        // Withdraws the other ring-all offers.
        self.finish_caller(call, now);
        Ok(())
    }

    fn ended(&mut self, call: CallKey, agent: &AgentId, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(agent)?;
        let St::OnCall {
            call: current,
            queue: q,
            since,
        } = self.agents[a as usize].state
        else {
            return Err(AcdError::NotOnCall {
                call,
                agent: agent.to_string(),
            });
        };
        if current != call {
            return Err(AcdError::NotOnCall {
                call,
                agent: agent.to_string(),
            });
        }
        let queue = &mut self.queues[q as usize];
        let wrap = queue.cfg.wrap_up;
        let sample = (now.saturating_duration_since(since) + wrap).as_secs_f64();
        queue.handle_secs = Some(match queue.handle_secs {
            None => sample,
            Some(h) => h + EWMA_ALPHA * (sample - h),
        });
        queue.version += 1;
        let agent = &mut self.agents[a as usize];
        agent.calls_handled += 1;
        agent.idle_since = now;
        if agent.pending_logout {
            self.do_logout(a, now);
        } else if wrap.is_zero() {
            self.settle(a, now);
        } else {
            let until = now + wrap;
            self.timers.insert((until, Timer::WrapUp(a)));
            self.set_state(a, St::WrapUp(until), now);
        }
        Ok(())
    }

    // ---- timers --------------------------------------------------------------------------

    fn fire(&mut self, at: Instant, timer: Timer, now: Instant) {
        match timer {
            Timer::Ring(call) if self.direct.get(&call).is_some_and(|d| d.2 == at) => {
                self.end_direct(call, OfferEnd::TimedOut, now);
            }
            Timer::Ring(call) => {
                let Some(caller) = self.callers.get_mut(&call) else {
                    return;
                };
                if caller.ring_at != Some(at) {
                    return;
                }
                caller.ring_at = None;
                let ring_all = self.queues[caller.queue as usize].cfg.strategy == Strategy::RingAll;
                let how = if ring_all {
                    OfferEnd::Withdrawn
                } else {
                    OfferEnd::TimedOut
                };
                for a in caller.offers.clone() {
                    self.end_offer(call, a, how, now);
                }
            }
            Timer::MaxWait(call) => {
                let Some(caller) = self.callers.get_mut(&call) else {
                    return;
                };
                if caller.max_wait_at != Some(at) {
                    return;
                }
                caller.max_wait_at = None;
                if caller.offers.is_empty() {
                    self.exit(call, ExitReason::Timeout, now);
                } else {
                    // Let the ringing agent answer; leave if the offer fails.
                    caller.timed_out = true;
                }
            }
            Timer::Announce(call) => self.announce(call, at, now),
            Timer::WrapUp(a) => {
                if self.agents[a as usize].state == St::WrapUp(at) {
                    self.settle(a, now);
                }
            }
            Timer::Escalate(q) => {
                if self.queues[q as usize].escalate_at == Some(at) {
                    self.queues[q as usize].escalate_at = None;
                    self.mark_dirty(q);
                }
            }
        }
    }

    fn announce(&mut self, call: CallKey, at: Instant, now: Instant) {
        let Some(caller) = self.callers.get_mut(&call) else {
            return;
        };
        if caller.announce_at != Some(at) {
            return;
        }
        let q = caller.queue;
        let cfg = &self.queues[q as usize].cfg.announce;
        let (want_pos, want_ewt, frequency) = (cfg.position, cfg.estimated_wait, cfg.frequency);
        caller.announce_at = None;
        if !frequency.is_zero() {
            let next = now + frequency;
            caller.announce_at = Some(next);
            self.timers.insert((next, Timer::Announce(call)));
        }
        if !caller.offers.is_empty() {
            return;
        }
        let position = self.queues[q as usize].waiting.rank(caller.key);
        let estimated_wait = if want_ewt {
            self.estimated_wait(q, position, now)
        } else {
            None
        };
        self.actions.push_back(Action::Announce {
            call,
            position: want_pos.then_some(position as u32),
            estimated_wait,
        });
    }

    // ---- estimated wait ------------------------------------------------------------------

    /// Handle time and, for each agent serving `q`, the time until it can take a new call
    /// (ascending). Agents paused or logged out do not serve.
    fn service_profile(&self, q: u32, now: Instant) -> (Duration, Vec<Duration>) {
        let queue = &self.queues[q as usize];
        let handle = queue.handle_time();
        let mut remaining: Vec<Duration> = queue
            .members
            .iter()
            .filter_map(|&a| match &self.agents[a as usize].state {
                St::LoggedOut | St::Paused(_) => None,
                St::Ready => Some(Duration::ZERO),
                St::Reserved(_) | St::Ringing(_) => Some(handle),
                St::OnCall { since, .. } => {
                    Some(handle.saturating_sub(now.saturating_duration_since(*since)))
                }
                St::WrapUp(until) => Some(until.saturating_duration_since(now).min(handle)),
            })
            .collect();
        remaining.sort_unstable();
        (handle, remaining)
    }

    fn estimated_wait(&mut self, q: u32, position: usize, now: Instant) -> Option<Duration> {
        let queue = &self.queues[q as usize];
        let fresh = queue.ewt_cache.as_ref().is_some_and(|c| {
            c.version == queue.version && now.saturating_duration_since(c.at) < EWT_CACHE_TTL
        });
        if !fresh {
            let (handle, remaining) = self.service_profile(q, now);
            self.queues[q as usize].ewt_cache = Some(EwtCache {
                at: now,
                version: self.queues[q as usize].version,
                handle,
                remaining,
            });
        }
        let cache = self.queues[q as usize].ewt_cache.as_ref()?;
        estimate(cache.handle, &cache.remaining, position)
    }

    // ---- dispatch ------------------------------------------------------------------------

    fn dispatch_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let mut list = std::mem::take(&mut self.dirty);
            for &q in &list {
                self.queues[q as usize].dirty = false;
            }
            // Across queues, the caller with the highest priority and the oldest time first.
            if list.len() > 1 {
                list.sort_by_key(|&q| {
                    self.queues[q as usize]
                        .waiting
                        .first()
                        .map_or(LineKey::MAX, |(k, _)| k)
                });
            }
            for q in list {
                while self.dispatch_one(q, now) {}
            }
        }
    }

    /// Offers the first caller of `q` that has an eligible free agent; false when none.
    fn dispatch_one(&mut self, q: u32, now: Instant) -> bool {
        let mut from: LineKey = 0;
        loop {
            let queue = &self.queues[q as usize];
            if queue.ready_count == 0 || queue.waiting.is_empty() {
                return false;
            }
            let Some((key, raw)) = queue.waiting.first_from(from) else {
                return false;
            };
            let call = CallKey(raw);
            let caller = &self.callers[&call];
            let waited = now.saturating_duration_since(caller.enqueued_at);
            let cap = queue.cap(waited);
            if queue.cfg.strategy == Strategy::RingAll {
                let agents: Vec<u32> = queue
                    .buckets
                    .iter()
                    .take_while(|b| b.level >= cap)
                    .flat_map(|b| b.ready.iter().map(|k| k.2))
                    .collect();
                if !agents.is_empty() {
                    self.offer(call, q, &agents, now);
                    return true;
                }
            } else if let Some(a) = self.select(q, cap, &caller.excluded) {
                self.offer(call, q, &[a], now);
                return true;
            }
            // Without tiers every caller has the same pool: nobody else can be served either.
            // With tiers, the head of a lower priority lane may have waited long enough.
            if queue.tiers.is_empty() {
                return false;
            }
            let enqueued_at = caller.enqueued_at;
            self.schedule_escalation(q, enqueued_at, waited);
            let lane = key >> LANE_SHIFT;
            if lane >= LineKey::from(u8::MAX) {
                return false;
            }
            from = (lane + 1) << LANE_SHIFT;
        }
    }

    fn schedule_escalation(&mut self, q: u32, enqueued_at: Instant, waited: Duration) {
        let queue = &mut self.queues[q as usize];
        let Some(&(after, _)) = queue.tiers.iter().find(|t| t.0 > waited) else {
            return;
        };
        let at = enqueued_at + after;
        if queue.escalate_at.is_some_and(|old| old <= at) {
            return;
        }
        if let Some(old) = queue.escalate_at.replace(at) {
            self.timers.remove(&(old, Timer::Escalate(q)));
        }
        self.timers.insert((at, Timer::Escalate(q)));
    }

    /// The best free agent of `q` with level >= `cap` per the queue's strategy, preferring
    /// agents not in `excluded`. Looks at the first few keys of each level bucket only.
    fn select(&self, q: u32, cap: u8, excluded: &[u32]) -> Option<u32> {
        let queue = &self.queues[q as usize];
        let rr_last = match queue.cfg.strategy {
            Strategy::RoundRobin => queue.rr_last,
            _ => None,
        };
        // Round-robin walks from just after the last agent offered, wrapping around.
        let split: ReadyKey = (rr_last.map_or(0, |l| u64::from(l) + 1), 0, 0);
        let rank = |k: &ReadyKey| (k.0 < split.0, *k);
        let mut best: Option<(bool, ReadyKey)> = None;
        let mut fallback: Option<(bool, ReadyKey)> = None;
        for bucket in queue.buckets.iter().take_while(|b| b.level >= cap) {
            let ordered = bucket
                .ready
                .range(split..)
                .chain(bucket.ready.range(..split));
            for (i, k) in ordered.enumerate() {
                let r = rank(k);
                if i == 0 && fallback.is_none_or(|f| r < f) {
                    fallback = Some(r);
                }
                if !excluded.contains(&k.2) {
                    if best.is_none_or(|b| r < b) {
                        best = Some(r);
                    }
                    break;
                }
            }
        }
        best.or(fallback).map(|(_, k)| k.2)
    }
}

/// Estimated wait for the caller with `position` callers ahead: agent i frees up after
/// `remaining[i]` and then every `handle`, so the caller gets the (position + 1)-th slot:
/// `floor(p / N) * H + remaining[p mod N]`.
fn estimate(handle: Duration, remaining: &[Duration], position: usize) -> Option<Duration> {
    if remaining.is_empty() {
        return None;
    }
    let n = remaining.len();
    let rounds = u32::try_from(position / n).unwrap_or(u32::MAX);
    Some(
        handle
            .saturating_mul(rounds)
            .saturating_add(remaining[position % n]),
    )
}
