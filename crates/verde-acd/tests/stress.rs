//! Concurrency stress test of the single-owner design.
//!
//! Nine producer threads (five caller threads, one callback basket, three threads playing 24
//! agents' phones) race thousands of enqueues, callbacks with past original times, callback
//! removals and retries, abandons, logins, pauses, readies, answers, failures, call ends and
//! early wrap-up ends through one bounded channel into the owner thread, which runs the `Acd`
//! against the real clock and logs every accepted input (with the `now` it was handled at) and
//! every action in order. The log is then replayed by an independent checker asserting that no
//! agent ever holds two calls, that every enqueued caller or callback ends exactly once per
//! enqueue (connected, abandoned, exited or removed), that callbacks never hear an announcement
//! or leave through an exit, and that within a queue entries are offered strictly in
//! (priority, original time, arrival) order, requeued ones back at their place.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use verde_acd::{
    Acd, Action, AgentConfig, AgentId, CallKey, Input, OfferFailure, QueueConfig, QueueName,
    Strategy,
};

const CALLER_THREADS: u64 = 5;
const CALLS_PER_THREAD: u64 = 800;
const CALLBACKS: u64 = 400;
/// Callback keys live above every caller thread's keys.
const CALLBACK_KEYS: u64 = 1 << 40;
const PRODUCER_THREADS: usize = CALLER_THREADS as usize + 1;
const AGENT_THREADS: usize = 3;
const AGENTS_PER_THREAD: usize = 8;
const QUEUES: usize = 5;
const CHANNEL_CAPACITY: usize = 64;
const DEADLINE: Duration = Duration::from_secs(90);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}

fn config() -> (Vec<QueueConfig>, Vec<AgentConfig>) {
    let strategies = [
        Strategy::LongestIdle,
        Strategy::FirstFree,
        Strategy::RoundRobin,
        Strategy::FewestCalls,
        Strategy::RingAll,
    ];
    let queues = strategies
        .iter()
        .enumerate()
        .map(|(i, strategy)| {
            let mut q = QueueConfig::new(format!("q{i}"));
            q.strategy = *strategy;
            q.ring_timeout = Duration::from_millis(40);
            q.wrap_up = Duration::from_millis(2);
            q.max_wait = Some(Duration::from_millis(1500));
            q.max_len = Some(150);
            q.max_misses_before_pause = 3;
            q.announce.first_delay = Duration::from_millis(100);
            q.announce.frequency = Duration::from_millis(200);
            q.exits.timeout = Some("timeout-node".into());
            q.exits.full = Some("full-node".into());
            q
        })
        .collect();
    let agents = (0..AGENT_THREADS * AGENTS_PER_THREAD)
        .map(|i| {
            let mut qs = vec![i % QUEUES, (i + 2) % QUEUES];
            if i % 4 == 0 {
                qs.push((i + 4) % QUEUES);
            }
            let names: Vec<String> = qs.iter().map(|q| format!("q{q}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            AgentConfig::new(format!("a{i}"), &refs)
        })
        .collect();
    (queues, agents)
}

enum Entry {
    In(Input, Instant),
    Out(Action),
}

fn is_callback(call: CallKey) -> bool {
    call.0 >= CALLBACK_KEYS
}

fn caller_thread(t: u64, tx: SyncSender<Input>, done: Arc<AtomicUsize>) {
    let mut rng = Rng(0x9E37_79B9 ^ ((t + 1) * 0x1234_5678_9ABC));
    let mut abandons: Vec<(Instant, CallKey)> = Vec::new();
    let send_due = |abandons: &mut Vec<(Instant, CallKey)>, all: bool| {
        let now = Instant::now();
        abandons.retain(|&(due, call)| {
            if all || due <= now {
                tx.send(Input::Abandon { call }).expect("owner alive");
                false
            } else {
                true
            }
        });
    };
    for i in 0..CALLS_PER_THREAD {
        let call = CallKey((t << 32) | i);
        tx.send(Input::Enqueue {
            call,
            queue: QueueName::from(format!("q{}", rng.below(QUEUES as u64))),
            priority: if rng.chance(20) { 3 } else { 0 },
            caller: format!("+39{t}{i:05}"),
        })
        .expect("owner alive");
        if rng.chance(15) {
            abandons.push((Instant::now() + rng.micros(600_000), call));
        }
        send_due(&mut abandons, false);
        thread::sleep(rng.micros(8000));
    }
    while !abandons.is_empty() {
        thread::sleep(Duration::from_millis(5));
        send_due(&mut abandons, false);
    }
    send_due(&mut abandons, true);
    done.fetch_add(1, Ordering::SeqCst);
}

/// The basket: callbacks whose callers joined up to 1.5 s ago (a live caller's max wait), a
/// quarter of them taken out later (no longer eligible, or the customer was not reached) and
/// enqueued again with the same original time.
fn callback_thread(tx: SyncSender<Input>, done: Arc<AtomicUsize>) {
    let mut rng = Rng(0xCA11_BAC4);
    let mut retries: Vec<(Instant, Input)> = Vec::new();
    let send_due = |retries: &mut Vec<(Instant, Input)>| {
        let now = Instant::now();
        retries.sort_by_key(|(due, _)| *due);
        while retries.first().is_some_and(|(due, _)| *due <= now) {
            tx.send(retries.remove(0).1).expect("owner alive");
        }
    };
    for i in 0..CALLBACKS {
        let now = Instant::now();
        let enqueue = Input::EnqueueCallback {
            call: CallKey(CALLBACK_KEYS + i),
            queue: QueueName::from(format!("q{}", rng.below(QUEUES as u64))),
            priority: if rng.chance(20) { 3 } else { 0 },
            caller: format!("+39cb{i:05}"),
            enqueued_at: now.checked_sub(rng.micros(1_500_000)).unwrap_or(now),
        };
        tx.send(enqueue.clone()).expect("owner alive");
        if rng.chance(25) {
            let removal = now + rng.micros(300_000);
            let call = CallKey(CALLBACK_KEYS + i);
            retries.push((removal, Input::RemoveCaller { call }));
            retries.push((removal + rng.micros(200_000), enqueue));
        }
        send_due(&mut retries);
        thread::sleep(rng.micros(8000));
    }
    while !retries.is_empty() {
        thread::sleep(Duration::from_millis(5));
        send_due(&mut retries);
    }
    done.fetch_add(1, Ordering::SeqCst);
}

/// Plays the phones (and the people) of a group of agents, reacting to the owner's actions.
fn agent_thread(
    t: usize,
    ids: Vec<AgentId>,
    inbox: Receiver<Action>,
    tx: SyncSender<Input>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0xDEAD_BEEF ^ ((t as u64 + 7) * 0x9876_5431));
    let mut pending: Vec<(Instant, Input)> = Vec::new();
    for agent in &ids {
        tx.send(Input::AgentLogin {
            agent: agent.clone(),
            queues: None,
        })
        .expect("owner alive");
    }
    let later = |rng: &mut Rng, max_us: u64| Instant::now() + rng.micros(max_us);
    while !stop.load(Ordering::SeqCst) {
        match inbox.recv_timeout(Duration::from_micros(500)) {
            Ok(Action::Offer { call, agent, .. }) => {
                let roll = rng.below(100);
                let input = |reason| Input::OfferFailed {
                    call,
                    agent: agent.clone(),
                    reason,
                };
                let (due, input) = match roll {
                    0..=74 => (
                        later(&mut rng, 50_000),
                        Input::OfferAnswered {
                            call,
                            agent: agent.clone(),
                        },
                    ),
                    75..=82 => (later(&mut rng, 30_000), input(OfferFailure::NoAnswer)),
                    83..=88 => (later(&mut rng, 2_000), input(OfferFailure::Busy)),
                    89..=92 => (later(&mut rng, 2_000), input(OfferFailure::Unreachable)),
                    93..=96 => (later(&mut rng, 10_000), input(OfferFailure::Rejected)),
                    _ => continue, // never answers: the ring timeout must handle it
                };
                pending.push((due, input));
            }
            Ok(Action::CancelOffer { call, agent }) => {
                // Half the time the phone's answer still arrives (a race the ACD must refuse).
                if rng.chance(50) {
                    pending.retain(|(_, i)| {
                        !matches!(i, Input::OfferAnswered { call: c, agent: a }
                            | Input::OfferFailed { call: c, agent: a, .. }
                            if *c == call && *a == agent)
                    });
                }
            }
            Ok(Action::Connected { call, agent, .. }) => {
                let end = later(&mut rng, 15_000);
                if rng.chance(30) {
                    pending.push((
                        end + Duration::from_millis(1),
                        Input::WrapUpDone {
                            agent: agent.clone(),
                        },
                    ));
                }
                pending.push((end, Input::CallEnded { call, agent }));
            }
            Ok(Action::AgentAutoPaused { agent, .. }) => {
                pending.push((
                    Instant::now() + Duration::from_millis(5) + rng.micros(25_000),
                    Input::AgentReady { agent },
                ));
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if rng.chance(2) {
            let agent = ids[rng.below(ids.len() as u64) as usize].clone();
            if rng.chance(20) {
                pending.push((
                    Instant::now(),
                    Input::AgentLogout {
                        agent: agent.clone(),
                    },
                ));
                pending.push((
                    later(&mut rng, 30_000),
                    Input::AgentLogin {
                        agent,
                        queues: None,
                    },
                ));
            } else {
                pending.push((
                    Instant::now(),
                    Input::AgentPause {
                        agent: agent.clone(),
                        reason: "coffee".into(),
                    },
                ));
                pending.push((later(&mut rng, 20_000), Input::AgentReady { agent }));
            }
        }
        let now = Instant::now();
        pending.sort_by_key(|(due, _)| *due);
        while pending.first().is_some_and(|(due, _)| *due <= now) {
            let (_, input) = pending.remove(0);
            if tx.send(input).is_err() {
                return;
            }
        }
    }
}

/// Runs the ACD in this thread until every enqueued call has ended; returns the log.
fn owner(
    rx: Receiver<Input>,
    inboxes: HashMap<AgentId, Sender<Action>>,
    callers_done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Entry> {
    let (queues, agents) = config();
    let start = Instant::now();
    let mut acd = Acd::new(queues, agents, start).expect("valid config");
    let mut log = Vec::new();
    let mut open: HashSet<CallKey> = HashSet::new();
    loop {
        let wait = acd
            .poll_timeout()
            .map_or(Duration::from_millis(1), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(1));
        match rx.recv_timeout(wait) {
            Ok(input) => {
                let now = Instant::now();
                let accepted = acd.handle(input.clone(), now).is_ok();
                if accepted {
                    match &input {
                        Input::Enqueue { call, .. } | Input::EnqueueCallback { call, .. } => {
                            open.insert(*call);
                        }
                        Input::RemoveCaller { call } => {
                            open.remove(call);
                        }
                        _ => {}
                    }
                    log.push(Entry::In(input, now));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("producers vanished"),
        }
        acd.handle_timeout(Instant::now());
        while let Some(action) = acd.poll_action() {
            match &action {
                Action::Connected { call, .. }
                | Action::Abandoned { call, .. }
                | Action::Exit { call, .. } => {
                    open.remove(call);
                }
                _ => {}
            }
            let agent = match &action {
                Action::Offer { agent, .. }
                | Action::CancelOffer { agent, .. }
                | Action::Connected { agent, .. }
                | Action::AgentAutoPaused { agent, .. } => Some(agent),
                _ => None,
            };
            if let Some(agent) = agent {
                // The agent threads outlive the owner's loop, so this cannot fail.
                let _ = inboxes[agent].send(action.clone());
            }
            log.push(Entry::Out(action));
        }
        if callers_done.load(Ordering::SeqCst) == PRODUCER_THREADS && open.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "stress run did not finish in {DEADLINE:?}: {} calls still open",
            open.len()
        );
    }
    stop.store(true, Ordering::SeqCst);
    // Keep draining so no producer stays blocked on the full channel.
    while rx.recv().is_ok() {}
    log
}

#[derive(Default, Debug)]
struct Stats {
    enqueued: usize,
    connected: usize,
    abandoned: usize,
    exited: usize,
    offers: usize,
    requeued: usize,
    cancels: usize,
    failures: usize,
    callbacks_enqueued: usize,
    callbacks_connected: usize,
    callbacks_removed: usize,
    /// Callbacks that joined behind someone enqueued before them but who called later.
    callbacks_overtaking: usize,
}

/// (priority desc, original time, arrival in the log).
type LineKey = (Reverse<u8>, Instant, usize);
type Lines = HashMap<QueueName, BTreeMap<LineKey, CallKey>>;

/// Per call: its current or last (queue, line key) and how many times it was enqueued / ended.
#[derive(Default)]
struct Calls {
    place: HashMap<CallKey, (QueueName, LineKey)>,
    enqueues: HashMap<CallKey, u32>,
    ends: HashMap<CallKey, u32>,
}

impl Calls {
    fn live(&self, call: CallKey) -> bool {
        self.enqueues.get(&call).copied().unwrap_or(0) > self.ends.get(&call).copied().unwrap_or(0)
    }

    fn enqueue(&mut self, call: CallKey, queue: &QueueName, key: LineKey, lines: &mut Lines) {
        assert!(!self.live(call), "{call:?} enqueued while still queued");
        *self.enqueues.entry(call).or_default() += 1;
        self.place.insert(call, (queue.clone(), key));
        lines.entry(queue.clone()).or_default().insert(key, call);
    }

    fn end(&mut self, call: CallKey, lines: &mut Lines, offering: &mut HashSet<CallKey>) {
        assert!(
            self.live(call),
            "call {call:?} ended twice or never enqueued"
        );
        *self.ends.entry(call).or_default() += 1;
        offering.remove(&call);
        let (queue, key) = &self.place[&call];
        if let Some(line) = lines.get_mut(queue) {
            line.remove(key);
        }
    }
}

/// Replays the log and asserts the properties; returns counts.
fn check(log: &[Entry]) -> Stats {
    let mut stats = Stats::default();
    // Agent -> (call, connected?) it holds.
    let mut holding: HashMap<AgentId, (CallKey, bool)> = HashMap::new();
    let mut calls = Calls::default();
    // Per queue, entries in line (never offered, or requeued), in the order they must be served.
    let mut lines: Lines = HashMap::new();
    let mut offering: HashSet<CallKey> = HashSet::new();
    for (seq, entry) in log.iter().enumerate() {
        match entry {
            Entry::In(
                Input::Enqueue {
                    call,
                    queue,
                    priority,
                    ..
                },
                now,
            ) => {
                stats.enqueued += 1;
                let key = (Reverse(*priority), *now, seq);
                calls.enqueue(*call, queue, key, &mut lines);
            }
            Entry::In(
                Input::EnqueueCallback {
                    call,
                    queue,
                    priority,
                    enqueued_at,
                    ..
                },
                now,
            ) => {
                stats.callbacks_enqueued += 1;
                let key = (Reverse(*priority), (*enqueued_at).min(*now), seq);
                if lines
                    .get(queue)
                    .is_some_and(|l| l.range(key..).next().is_some())
                {
                    stats.callbacks_overtaking += 1;
                }
                calls.enqueue(*call, queue, key, &mut lines);
            }
            Entry::In(Input::RemoveCaller { call }, _) => {
                stats.callbacks_removed += 1;
                calls.end(*call, &mut lines, &mut offering);
            }
            Entry::In(Input::OfferFailed { call, agent, .. }, _) => {
                stats.failures += 1;
                assert_eq!(
                    holding.remove(agent),
                    Some((*call, false)),
                    "accepted failure of an offer {agent} did not hold"
                );
            }
            Entry::In(Input::CallEnded { call, agent }, _) => {
                assert_eq!(
                    holding.remove(agent),
                    Some((*call, true)),
                    "accepted end of a call {agent} was not on"
                );
            }
            Entry::In(..) => {}
            Entry::Out(Action::Offer { call, agent, queue }) => {
                stats.offers += 1;
                if let Some(held) = holding.get(agent) {
                    panic!("{agent} offered {call:?} while holding {held:?} (log entry {seq})");
                }
                holding.insert(agent.clone(), (*call, false));
                assert!(calls.live(*call), "offer for ended call {call:?}");
                if offering.insert(*call) {
                    let line = lines.get_mut(queue).expect("queue has a line");
                    let (&first_key, &first) = line.first_key_value().expect("line not empty");
                    assert_eq!(
                        first, *call,
                        "FIFO broken in {queue}: offered {call:?} while {first:?} ({first_key:?}) \
                         was ahead (log entry {seq})"
                    );
                    line.remove(&first_key);
                }
            }
            Entry::Out(Action::CancelOffer { call, agent }) => {
                stats.cancels += 1;
                assert_eq!(holding.remove(agent), Some((*call, false)));
            }
            Entry::Out(Action::Connected { call, agent, .. }) => {
                if is_callback(*call) {
                    stats.callbacks_connected += 1;
                } else {
                    stats.connected += 1;
                }
                assert_eq!(holding.get(agent), Some(&(*call, false)));
                holding.insert(agent.clone(), (*call, true));
                calls.end(*call, &mut lines, &mut offering);
            }
            Entry::Out(Action::Requeued { call }) => {
                stats.requeued += 1;
                assert!(offering.remove(call), "requeued {call:?} was not offered");
                let (queue, key) = calls.place[call].clone();
                lines.get_mut(&queue).expect("line").insert(key, *call);
            }
            Entry::Out(Action::Abandoned { call, .. }) => {
                assert!(!is_callback(*call), "callback {call:?} abandoned");
                stats.abandoned += 1;
                calls.end(*call, &mut lines, &mut offering);
            }
            Entry::Out(Action::Exit { call, .. }) => {
                assert!(
                    !is_callback(*call),
                    "callback {call:?} exited (log entry {seq})"
                );
                stats.exited += 1;
                calls.end(*call, &mut lines, &mut offering);
            }
            Entry::Out(Action::Announce { call, .. }) => {
                assert!(!is_callback(*call), "announcement to callback {call:?}");
            }
            Entry::Out(_) => {}
        }
    }
    for (call, n) in &calls.enqueues {
        assert_eq!(calls.ends.get(call), Some(n), "call {call:?} never ended");
    }
    stats
}

#[test]
fn racing_producers_never_double_book_lose_or_reorder() {
    let (tx, rx) = mpsc::sync_channel::<Input>(CHANNEL_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let callers_done = Arc::new(AtomicUsize::new(0));
    let mut inboxes = HashMap::new();
    let mut handles = Vec::new();
    for t in 0..AGENT_THREADS {
        let ids: Vec<AgentId> = (0..AGENTS_PER_THREAD)
            .map(|i| AgentId::from(format!("a{}", t * AGENTS_PER_THREAD + i)))
            .collect();
        let (atx, arx) = mpsc::channel();
        for id in &ids {
            inboxes.insert(id.clone(), atx.clone());
        }
        let (tx, stop) = (tx.clone(), stop.clone());
        handles.push(thread::spawn(move || agent_thread(t, ids, arx, tx, stop)));
    }
    for t in 0..CALLER_THREADS {
        let (tx, done) = (tx.clone(), callers_done.clone());
        handles.push(thread::spawn(move || caller_thread(t, tx, done)));
    }
    {
        let (tx, done) = (tx.clone(), callers_done.clone());
        handles.push(thread::spawn(move || callback_thread(tx, done)));
    }
    drop(tx);
    let owner = thread::spawn(move || owner(rx, inboxes, callers_done, stop));
    let log = owner.join().expect("owner thread");
    for h in handles {
        h.join().expect("producer thread");
    }
    let stats = check(&log);
    println!("{stats:?}");
    let total = (CALLER_THREADS * CALLS_PER_THREAD) as usize;
    assert_eq!(stats.enqueued, total);
    assert_eq!(stats.connected + stats.abandoned + stats.exited, total);
    // The run must have exercised the interesting paths, or it proves nothing.
    assert!(stats.connected > total / 10, "{stats:?}");
    assert!(stats.abandoned > 0 && stats.exited > 0, "{stats:?}");
    assert!(
        stats.requeued > 0 && stats.cancels > 0 && stats.failures > 0,
        "{stats:?}"
    );
    // Every basket entry ends served or taken out, and each retry starts a new one.
    assert_eq!(
        stats.callbacks_connected + stats.callbacks_removed,
        stats.callbacks_enqueued,
        "{stats:?}"
    );
    assert!(stats.callbacks_enqueued > CALLBACKS as usize, "{stats:?}");
    assert!(
        stats.callbacks_removed > 0 && stats.callbacks_connected > CALLBACKS as usize / 2,
        "{stats:?}"
    );
    assert!(stats.callbacks_overtaking > 0, "{stats:?}");
}
