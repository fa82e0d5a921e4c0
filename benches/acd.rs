//! ACD dispatch costs.
//!
//! `cargo bench -p verde-benches --bench acd`
//!
//! * `acd_enqueue_dispatch/inline`: one caller enqueued into a queue with free agents, offered,
//!   answered and ended (wrap-up 0), all on one core: the full life of a queued call in the ACD.
//!   50 queues, 1,000 agents in 2 queues each.
//! * `acd_enqueue_dispatch/channel`: the same, but the `Enqueue` inputs come from a producer
//!   thread through a bounded channel (capacity 1024) to the owner thread, as in the binary.
//! * `acd_backlog/10k_agents_100k_waiting`: steady state with 10,000 agents (2 queues each),
//!   100,000 callers waiting across 50 queues and every agent busy. One iteration: an agent
//!   ends its call, becomes ready, is dispatched the head caller of its older queue, answers, and
//!   a new caller joins the tail. The p50/p99/p99.9 latency of the dispatching input
//!   (`CallEnded`, which frees the agent and reserves it for the next caller) is printed.
//! * `acd_queue_size/{1000,10000,100000}`: the same cycle on one queue with 100 agents and 1k,
//!   10k, 100k callers waiting, to show the cost growing with log n.

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use verde_acd::{Acd, Action, AgentConfig, AgentId, CallKey, Input, QueueConfig, QueueName};

fn configs(queues: usize, agents: usize) -> (Vec<QueueConfig>, Vec<AgentConfig>) {
    let qs: Vec<QueueConfig> = (0..queues)
        .map(|i| {
            let mut q = QueueConfig::new(format!("q{i}"));
            q.wrap_up = Duration::ZERO;
            q
        })
        .collect();
    let agents = (0..agents)
        .map(|i| {
            let mut member = vec![format!("q{}", i % queues)];
            let second = format!("q{}", (i * 7 + 3) % queues);
            if !member.contains(&second) {
                member.push(second);
            }
            let refs: Vec<&str> = member.iter().map(String::as_str).collect();
            AgentConfig::new(format!("a{i}"), &refs)
        })
        .collect();
    (qs, agents)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Handles one input and plays an instant phone: every offer is answered and ended at once.
fn serve_inline(acd: &mut Acd, input: Input, now: Instant) {
    acd.handle(input, now).expect("accepted");
    while let Some(action) = acd.poll_action() {
        if let Action::Offer { call, agent, .. } = action {
            acd.handle(
                Input::OfferAnswered {
                    call,
                    agent: agent.clone(),
                },
                now,
            )
            .expect("answer accepted");
            acd.handle(Input::CallEnded { call, agent }, now)
                .expect("end accepted");
        }
    }
}

struct Free {
    acd: Acd,
    queues: Vec<QueueName>,
    now: Instant,
    next: u64,
}

impl Free {
    fn new() -> Free {
        let (qs, agents) = configs(50, 1000);
        let now = Instant::now();
        let mut acd = Acd::new(qs, agents, now).expect("config");
        for i in 0..1000 {
            acd.handle(
                Input::AgentLogin {
                    agent: AgentId::from(format!("a{i}")),
                    queues: None,
                },
                now,
            )
            .expect("login");
        }
        while acd.poll_action().is_some() {}
        Free {
            acd,
            queues: (0..50).map(|i| QueueName::from(format!("q{i}"))).collect(),
            now,
            next: 0,
        }
    }

    fn enqueue(&mut self) -> Input {
        self.next += 1;
        Input::Enqueue {
            call: CallKey(self.next),
            queue: self.queues[self.next as usize % self.queues.len()].clone(),
            priority: 0,
            caller: String::new(),
        }
    }
}

fn enqueue_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("acd_enqueue_dispatch");
    g.throughput(Throughput::Elements(1));
    let mut free = Free::new();
    g.bench_function("inline", |b| {
        b.iter(|| {
            free.now += Duration::from_micros(1);
            let input = free.enqueue();
            serve_inline(&mut free.acd, black_box(input), free.now);
        })
    });
    let mut free = Free::new();
    g.bench_function("channel", |b| {
        b.iter_custom(|iters| {
            let inputs: Vec<Input> = (0..iters).map(|_| free.enqueue()).collect();
            let (tx, rx) = mpsc::sync_channel::<Input>(1024);
            let start = Instant::now();
            thread::scope(|s| {
                s.spawn(move || {
                    for input in inputs {
                        tx.send(input).expect("owner alive");
                    }
                });
                while let Ok(input) = rx.recv() {
                    free.now += Duration::from_micros(1);
                    serve_inline(&mut free.acd, input, free.now);
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// All agents busy, callers waiting; each cycle frees one agent, which takes the next caller.
struct Backlog {
    acd: Acd,
    agents: Vec<AgentId>,
    queues: Vec<QueueName>,
    current: Vec<CallKey>,
    now: Instant,
    next: u64,
    turn: usize,
    rng: Rng,
}

impl Backlog {
    fn new(queues: usize, agents: usize, waiting: usize) -> Backlog {
        let (qs, ags) = configs(queues, agents);
        let now = Instant::now();
        let acd = Acd::new(qs, ags, now).expect("config");
        let mut b = Backlog {
            acd,
            agents: (0..agents)
                .map(|i| AgentId::from(format!("a{i}")))
                .collect(),
            queues: (0..queues)
                .map(|i| QueueName::from(format!("q{i}")))
                .collect(),
            current: vec![CallKey(0); agents],
            now,
            next: 0,
            turn: 0,
            rng: Rng(0x1234_5678_9ABC_DEF1),
        };
        for _ in 0..waiting + agents {
            b.enqueue();
        }
        for i in 0..agents {
            let agent = b.agents[i].clone();
            b.acd
                .handle(
                    Input::AgentLogin {
                        agent,
                        queues: None,
                    },
                    now,
                )
                .expect("login");
            b.answer_offer(i);
        }
        assert_eq!(
            b.queues
                .iter()
                .map(|q| b.acd.waiting(q.as_str()).unwrap())
                .sum::<usize>(),
            waiting
        );
        b
    }

    fn enqueue(&mut self) {
        self.next += 1;
        let queue = self.queues[self.rng.below(self.queues.len())].clone();
        self.acd
            .handle(
                Input::Enqueue {
                    call: CallKey(self.next),
                    queue,
                    priority: 0,
                    caller: String::new(),
                },
                self.now,
            )
            .expect("enqueue");
        while self.acd.poll_action().is_some() {}
    }

    /// Agent `i` was just freed: it must have been offered a caller; answer it.
    fn answer_offer(&mut self, i: usize) {
        let mut offered = None;
        while let Some(action) = self.acd.poll_action() {
            if let Action::Offer { call, .. } = action {
                offered = Some(call);
            }
        }
        let call = offered.expect("a waiting caller was offered to the freed agent");
        self.acd
            .handle(
                Input::OfferAnswered {
                    call,
                    agent: self.agents[i].clone(),
                },
                self.now,
            )
            .expect("answer");
        while self.acd.poll_action().is_some() {}
        self.current[i] = call;
    }

    /// The dispatching input alone: agent ends its call and is reserved for the next caller.
    fn end_call(&mut self) -> usize {
        let i = self.turn % self.agents.len();
        self.turn += 1;
        self.now += Duration::from_micros(1);
        self.acd
            .handle(
                Input::CallEnded {
                    call: self.current[i],
                    agent: self.agents[i].clone(),
                },
                self.now,
            )
            .expect("end");
        i
    }

    fn cycle(&mut self) {
        let i = self.end_call();
        self.answer_offer(i);
        self.enqueue();
    }
}

fn backlog(c: &mut Criterion) {
    let mut g = c.benchmark_group("acd_backlog");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let mut b = Backlog::new(50, 10_000, 100_000);
    g.bench_function("10k_agents_100k_waiting", |bench| bench.iter(|| b.cycle()));
    g.finish();

    // Per-dispatch latency distribution, measured input by input.
    let mut samples = Vec::with_capacity(200_000);
    for _ in 0..20_000 {
        b.cycle();
    }
    for _ in 0..200_000 {
        let start = Instant::now();
        let i = b.end_call();
        samples.push(start.elapsed());
        b.answer_offer(i);
        b.enqueue();
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "acd_backlog/dispatch_latency (10k agents, 100k waiting, 50 queues, {} samples): \
         p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1]
    );
}

fn queue_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("acd_queue_size");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for waiting in [1_000usize, 10_000, 100_000] {
        let mut b = Backlog::new(1, 100, waiting);
        g.bench_with_input(
            BenchmarkId::from_parameter(waiting),
            &waiting,
            |bench, _| bench.iter(|| b.cycle()),
        );
    }
    g.finish();
}

criterion_group!(benches, enqueue_dispatch, backlog, queue_size);
criterion_main!(benches);
