//! `verde-cti-load`: many agents' bars and supervisors' wallboards on verde's `/cti` websocket
//! at once, each checking its own stream (see `check`), and a summary of what they saw: failed
//! connections, unanswered commands, wallboard resyncs and gaps, order violations, the delay
//! from a wallboard message's `at_ms` to its arrival, and this process's CPU time.
//!
//! It is a load client only: it knows the protocol document (docs/cti-protocol.md), not the
//! engine's code. benches/load/cti-load.sh runs it next to SIPp traffic.

mod check;

use check::{Answer, CallEvent, Calls, Commands, Feed, FeedKind, FeedStep, Msg, Violation};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "Load and order check for verde's /cti websocket")]
struct Args {
    #[arg(long, default_value = "ws://127.0.0.1:8080/cti")]
    url: String,
    /// Supervisors' wallboards (users SUPERVISOR_PREFIX1..N).
    #[arg(long, default_value_t = 0)]
    supervisors: usize,
    /// Agents' bars (users AGENT_PREFIX1..N).
    #[arg(long, default_value_t = 0)]
    agents: usize,
    #[arg(long, default_value = "a")]
    agent_prefix: String,
    #[arg(long, default_value_t = 1)]
    agent_first: usize,
    #[arg(long, default_value = "")]
    agent_password: String,
    #[arg(long, default_value = "sup")]
    supervisor_prefix: String,
    #[arg(long, default_value_t = 1)]
    supervisor_first: usize,
    #[arg(long, default_value = "")]
    supervisor_password: String,
    /// Seconds of measurement once every connection is logged in.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Agents send `set_state ready` after logging in.
    #[arg(long)]
    ready: bool,
    /// The supervisors' `interval_ms`; 0 subscribes without one (the feed follows the ticks).
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Connections opened together; the next batch waits for this one's logins.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Seconds a connection may take to connect and finish its first commands.
    #[arg(long, default_value_t = 15.0)]
    setup_timeout: f64,
    /// A queue_delta whose seq skips numbers is a violation (by default only counted).
    #[arg(long)]
    strict_seq: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Agent,
    Supervisor,
}

struct Spec {
    role: Role,
    user: String,
    password: String,
}

struct Setup {
    url: String,
    ready: bool,
    interval_ms: u64,
    strict: bool,
    setup_timeout: Duration,
}

/// Received during the measurement window only, read by the main task at its start and end.
static MESSAGES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Violations kept word for word per connection; the rest are only counted.
const KEEP: usize = 3;
/// How long a stopping connection still waits for answers to its commands.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Report {
    user: String,
    role: Option<Role>,
    /// Why the connection did not do its job to the end (connect, login, subscribe, dropped).
    failure: Option<String>,
    messages: u64,
    agent_states: u64,
    other: u64,
    commands: Commands,
    feed: Feed,
    calls: Calls,
    violations: u64,
    examples: Vec<String>,
    /// Wallboard `at_ms` to arrival, ms, after the first message.
    delays: Vec<i64>,
    /// The same for the first snapshot (the age of the frame current when subscribing).
    first_ages: Vec<i64>,
    /// `waited_s` of each call_offered, ms: the engine's queue time before the offer.
    offer_waits: Vec<i64>,
    /// call_offered to call_answered arrival, ms.
    offer_to_answer: Vec<i64>,
    offered_at: std::collections::HashMap<u64, Instant>,
}

impl Report {
    fn violation(&mut self, v: Violation) {
        self.violations += 1;
        if self.examples.len() < KEEP {
            self.examples.push(format!("{}: {v}", self.user));
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Conn {
    spec: Spec,
    setup: Arc<Setup>,
    report: Report,
    next_id: u64,
    /// Commands still to send after login, in order.
    after_login: Vec<(&'static str, serde_json::Value)>,
    /// Set up: told to the main task once login and the following commands are answered.
    up: Option<oneshot::Sender<bool>>,
    measuring: watch::Receiver<bool>,
}

enum Flow {
    Continue,
    /// The connection cannot go on (login refused).
    End,
}

impl Conn {
    fn command(&mut self, kind: &'static str, mut body: serde_json::Value) -> Message {
        let id = self.next_id;
        self.next_id += 1;
        body["v"] = 1.into();
        body["type"] = kind.into();
        body["id"] = id.into();
        self.report.commands.sent(id.to_string(), kind);
        Message::Text(body.to_string().into())
    }

    fn set_up(&mut self, ok: bool) {
        if let Some(tx) = self.up.take() {
            let _ = tx.send(ok);
        }
    }

    fn fail(&mut self, why: String) {
        if self.report.failure.is_none() {
            self.report.failure = Some(why);
        }
        self.set_up(false);
    }

    /// One text message from the server; returns what to send back.
    fn handle(&mut self, text: &str, out: &mut Vec<Message>) -> Flow {
        let arrival_ms = wall_ms();
        self.report.messages += 1;
        if *self.measuring.borrow() {
            MESSAGES.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(text.len() as u64, Ordering::Relaxed);
        }
        let msg = match Msg::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let head: String = text.chars().take(80).collect();
                self.report
                    .violation(Violation(format!("unreadable message ({e}): {head}")));
                return Flow::Continue;
            }
        };
        if msg.v != Some(1) {
            self.report.violation(Violation(format!(
                "{} message with v {:?}, not 1",
                msg.kind, msg.v
            )));
        }
        match msg.kind.as_ref() {
            "result" | "error" => {
                let code = if msg.kind == "error" {
                    Some(msg.code.as_deref().unwrap_or("(no code)"))
                } else {
                    None
                };
                let id = msg.id_key();
                match self.report.commands.answer(id.as_deref(), code) {
                    Err(v) => self.report.violation(v),
                    Ok(Answer::Of { kind, outcome }) => return self.answered(kind, outcome, out),
                }
            }
            t @ ("queue_snapshot" | "queue_delta") => {
                let kind = FeedKind::from_type(t).expect("matched above");
                if self.spec.role != Role::Supervisor {
                    self.report
                        .violation(Violation(format!("{t} sent to an agent")));
                }
                let mut first = false;
                match msg.seq {
                    Some(seq) => match self.report.feed.on_message(kind, seq) {
                        Ok(step) => first = step == FeedStep::First,
                        Err(v) => self.report.violation(v),
                    },
                    None => self.report.violation(Violation(format!("{t} without seq"))),
                }
                match msg.at_ms {
                    // The first snapshot is the frame of the last tick, sent on subscribing:
                    // its age says nothing of delivery, so it is kept apart.
                    Some(at) if first => self.report.first_ages.push(arrival_ms - at),
                    Some(at) => self.report.delays.push(arrival_ms - at),
                    None => self
                        .report
                        .violation(Violation(format!("{t} without at_ms"))),
                }
            }
            t => {
                if let Some(ev) = CallEvent::from_type(t) {
                    let Some(call) = msg.call else {
                        self.report
                            .violation(Violation(format!("{t} without a call id")));
                        return Flow::Continue;
                    };
                    if self.spec.role != Role::Agent {
                        self.report
                            .violation(Violation(format!("{t} sent to a supervisor")));
                    }
                    match self.report.calls.on_event(call, ev) {
                        Err(v) => self.report.violation(v),
                        Ok(()) => match ev {
                            CallEvent::Offered => {
                                if let Some(w) = msg.waited_s {
                                    self.report.offer_waits.push((w * 1000.0).round() as i64);
                                }
                                self.report.offered_at.insert(call, Instant::now());
                            }
                            CallEvent::Answered => {
                                if let Some(at) = self.report.offered_at.remove(&call) {
                                    self.report
                                        .offer_to_answer
                                        .push(at.elapsed().as_millis() as i64);
                                }
                            }
                            CallEvent::Ended | CallEvent::Transferred => {
                                self.report.offered_at.remove(&call);
                            }
                            _ => {}
                        },
                    }
                } else if t == "agent_state" {
                    self.report.agent_states += 1;
                } else {
                    // queue_stats, task events...: not checked here.
                    self.report.other += 1;
                }
            }
        }
        Flow::Continue
    }

    fn answered(
        &mut self,
        kind: &'static str,
        outcome: Result<(), String>,
        out: &mut Vec<Message>,
    ) -> Flow {
        match (kind, outcome) {
            ("login", Err(code)) => {
                self.fail(format!("login refused: {code}"));
                return Flow::End;
            }
            ("subscribe_queues", Err(code)) => {
                self.fail(format!("subscribe_queues refused: {code}"))
            }
            // A refused set_state is counted among the errors; the bar still works.
            _ => {}
        }
        if kind == "login" {
            for (k, body) in std::mem::take(&mut self.after_login) {
                let m = self.command(k, body);
                out.push(m);
            }
        }
        if self.report.commands.pending() == 0 && out.is_empty() {
            self.set_up(true);
        }
        Flow::Continue
    }
}

async fn run(
    spec: Spec,
    setup: Arc<Setup>,
    up: oneshot::Sender<bool>,
    measuring: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Report {
    let mut after_login = Vec::new();
    match spec.role {
        Role::Agent if setup.ready => {
            after_login.push(("set_state", serde_json::json!({"state": "ready"})));
        }
        Role::Agent => {}
        Role::Supervisor => {
            let body = if setup.interval_ms > 0 {
                serde_json::json!({"interval_ms": setup.interval_ms})
            } else {
                serde_json::json!({})
            };
            after_login.push(("subscribe_queues", body));
        }
    }
    let mut c = Conn {
        report: Report {
            user: spec.user.clone(),
            role: Some(spec.role),
            feed: Feed::new(setup.strict),
            ..Report::default()
        },
        spec,
        setup: setup.clone(),
        next_id: 1,
        after_login,
        up: Some(up),
        measuring,
    };
    let setup_deadline = tokio::time::Instant::now() + setup.setup_timeout;
    let connected = tokio::time::timeout_at(
        setup_deadline,
        tokio_tungstenite::connect_async(&c.setup.url),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            c.fail(format!("connect: {e}"));
            return c.report;
        }
        Err(_) => {
            c.fail("connect: timed out".into());
            return c.report;
        }
    };
    let login = serde_json::json!({"user": c.spec.user, "password": c.spec.password});
    let first = c.command("login", login);
    if let Err(e) = ws.send(first).await {
        c.fail(format!("sending login: {e}"));
        return c.report;
    }
    let mut stopping: Option<tokio::time::Instant> = None;
    let mut out = Vec::new();
    loop {
        if let Some(grace) = stopping {
            if c.report.commands.pending() == 0 || tokio::time::Instant::now() >= grace {
                break;
            }
        }
        let grace = stopping.unwrap_or_else(|| tokio::time::Instant::now() + GRACE);
        tokio::select! {
            biased;
            changed = stop.changed(), if stopping.is_none() => {
                let _ = changed;
                stopping = Some(tokio::time::Instant::now() + GRACE);
                continue;
            }
            _ = tokio::time::sleep_until(setup_deadline), if c.up.is_some() => {
                c.fail(format!("no answer to {:?} within the setup timeout", c.report.commands.unanswered()));
                // Keep reading: the answers may still come and are checked all the same.
            }
            _ = tokio::time::sleep_until(grace), if stopping.is_some() => {}
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Flow::End = c.handle(t.as_str(), &mut out) {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => c.report.violation(Violation("binary message".into())),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("no close frame".to_string(), |f| format!("{} {}", f.code, f.reason));
                    c.fail(format!("closed by the server ({why})"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    c.fail(format!("read: {e}"));
                    break;
                }
                None => {
                    c.fail("connection ended by the server".into());
                    break;
                }
            }
        }
        let mut broken = false;
        for m in out.drain(..) {
            if let Err(e) = ws.send(m).await {
                c.fail(format!("send: {e}"));
                broken = true;
                break;
            }
        }
        if broken {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    c.report
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn figures(mut v: Vec<i64>) -> String {
    v.sort_unstable();
    match (
        check::percentile(&v, 0.5),
        check::percentile(&v, 0.99),
        v.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => {
            format!(
                "p50 {p50} ms  p99 {p99} ms  max {max} ms  ({} samples)",
                v.len()
            )
        }
        _ => "n/a (no samples)".into(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let setup = Arc::new(Setup {
        url: args.url.clone(),
        ready: args.ready,
        interval_ms: args.interval_ms,
        strict: args.strict_seq,
        setup_timeout: Duration::from_secs_f64(args.setup_timeout),
    });
    // Agents first, so the supervisors' first snapshots already hold every bar's agent.
    let mut specs: Vec<Spec> = (0..args.agents)
        .map(|i| Spec {
            role: Role::Agent,
            user: format!("{}{}", args.agent_prefix, args.agent_first + i),
            password: args.agent_password.clone(),
        })
        .collect();
    specs.extend((0..args.supervisors).map(|i| Spec {
        role: Role::Supervisor,
        user: format!("{}{}", args.supervisor_prefix, args.supervisor_first + i),
        password: args.supervisor_password.clone(),
    }));
    let total = specs.len();
    if total == 0 {
        eprintln!("nothing to do: give --agents and/or --supervisors");
        return ExitCode::from(2);
    }
    let (measuring_tx, measuring_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut up_ok = 0usize;
    let mut specs = specs.into_iter().peekable();
    while specs.peek().is_some() {
        let mut ups = Vec::new();
        for spec in specs.by_ref().take(args.batch.max(1)) {
            let (tx, rx) = oneshot::channel();
            tasks.push(tokio::spawn(run(
                spec,
                setup.clone(),
                tx,
                measuring_rx.clone(),
                stop_rx.clone(),
            )));
            ups.push(rx);
        }
        for rx in ups {
            if rx.await == Ok(true) {
                up_ok += 1;
            }
        }
    }
    let setup_s = t0.elapsed().as_secs_f64();
    println!(
        "connected: {up_ok} of {total} logged in and set up in {setup_s:.1} s; measuring for {} s",
        args.duration
    );
    measuring_tx.send_replace(true);
    let w0 = Instant::now();
    let cpu_w0 = cpu_seconds();
    // A script ends the window early with SIGTERM (or a person with Ctrl-C) once its load is done.
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            return ExitCode::from(2);
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(args.duration)) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: summarizing what was seen"),
        _ = term.recv() => eprintln!("SIGTERM: summarizing what was seen"),
    }
    measuring_tx.send_replace(false);
    let window = w0.elapsed().as_secs_f64();
    let cpu_window = cpu_seconds() - cpu_w0;
    let (msgs, bytes) = (
        MESSAGES.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    stop_tx.send_replace(true);

    let mut reports = Vec::with_capacity(total);
    for t in tasks {
        match t.await {
            Ok(r) => reports.push(r),
            Err(e) => reports.push(Report {
                failure: Some(format!("task failed: {e}")),
                ..Report::default()
            }),
        }
    }
    let cpu_total = cpu_seconds() - cpu0;
    summarize(
        &args, &reports, window, msgs, bytes, cpu_window, cpu_total, setup_s,
    )
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &Args,
    reports: &[Report],
    window: f64,
    msgs: u64,
    bytes: u64,
    cpu_window: f64,
    cpu_total: f64,
    setup_s: f64,
) -> ExitCode {
    let count = |role: Role, ok: bool| {
        reports
            .iter()
            .filter(|r| r.role == Some(role) && r.failure.is_none() == ok)
            .count()
    };
    let failed: Vec<&Report> = reports.iter().filter(|r| r.failure.is_some()).collect();
    let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let sent = sum(&|r| r.commands.sent);
    let answered = sum(&|r| r.commands.answered);
    let unanswered: u64 = sum(&|r| r.commands.pending() as u64);
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for r in reports {
        for (code, n) in &r.commands.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
    }
    let violations = sum(&|r| r.violations);
    let resyncs = sum(&|r| r.feed.resyncs);
    let resync_conns = reports.iter().filter(|r| r.feed.resyncs > 0).count();
    let gaps = sum(&|r| r.feed.gaps);
    let gap_conns = reports.iter().filter(|r| r.feed.gaps > 0).count();
    let all_delays: Vec<i64> = reports
        .iter()
        .flat_map(|r| r.delays.iter().copied())
        .collect();
    let early = all_delays.iter().filter(|d| **d < 0).count();

    println!("--- verde-cti-load summary ---");
    println!(
        "connections:      {} ok, {} failed (agents {}/{}, supervisors {}/{}; setup {setup_s:.1} s)",
        reports.len() - failed.len(),
        failed.len(),
        count(Role::Agent, true),
        args.agents,
        count(Role::Supervisor, true),
        args.supervisors,
    );
    println!(
        "received:         {msgs} messages in {window:.1} s = {:.0}/s, {:.2} MB/s",
        msgs as f64 / window,
        bytes as f64 / window / 1e6
    );
    println!(
        "  wallboard:      {} queue_snapshot, {} queue_delta; agents: {} agent_state, {} call events; {} other",
        sum(&|r| r.feed.snapshots),
        sum(&|r| r.feed.deltas),
        sum(&|r| r.agent_states),
        sum(&|r| r.calls.events),
        sum(&|r| r.other),
    );
    println!(
        "commands:         {sent} sent, {answered} answered, {unanswered} unanswered; errors: {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("resyncs:          {resyncs} (queue_snapshot after the first, on {resync_conns} connections)");
    println!(
        "seq gaps:         {gaps} (queue_delta with seq > previous + 1, on {gap_conns} connections{})",
        if args.strict_seq { "; violations with --strict-seq" } else { "" }
    );
    println!(
        "calls seen:       {} by the agents ({} still open at the end)",
        reports.iter().map(|r| r.calls.seen()).sum::<usize>(),
        reports.iter().map(|r| r.calls.open()).sum::<usize>()
    );
    println!("order violations: {violations}");
    println!(
        "wallboard delay:  at_ms->arrival {}{}",
        figures(all_delays),
        if early > 0 {
            format!(" ({early} negative: clocks?)")
        } else {
            String::new()
        }
    );
    println!(
        "first snapshot:   age {}",
        figures(
            reports
                .iter()
                .flat_map(|r| r.first_ages.iter().copied())
                .collect()
        )
    );
    println!(
        "offer waited_s:   {}",
        figures(
            reports
                .iter()
                .flat_map(|r| r.offer_waits.iter().copied())
                .collect()
        )
    );
    println!(
        "offer->answered:  {}",
        figures(
            reports
                .iter()
                .flat_map(|r| r.offer_to_answer.iter().copied())
                .collect()
        )
    );
    println!(
        "tool CPU:         {cpu_total:.2} s in all; {cpu_window:.2} s in the window = {:.1} % of a core",
        cpu_window / window * 100.0
    );
    for r in reports.iter().filter(|r| !r.examples.is_empty()).take(10) {
        for e in &r.examples {
            println!("  violation: {e}");
        }
    }
    for r in failed.iter().take(10) {
        println!(
            "  failed: {}: {}",
            r.user,
            r.failure.as_deref().unwrap_or_default()
        );
    }
    for r in reports.iter().filter(|r| r.commands.pending() > 0).take(10) {
        println!("  unanswered: {}: {:?}", r.user, r.commands.unanswered());
    }
    if violations == 0 && failed.is_empty() && unanswered == 0 {
        println!("result: OK");
        ExitCode::SUCCESS
    } else {
        println!("result: FAILED");
        ExitCode::FAILURE
    }
}
