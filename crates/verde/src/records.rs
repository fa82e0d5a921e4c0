//! The record writer: one thread that owns the store's write side for call records and the
//! queue log, and keeps them when the store fails.
//!
//! Call tasks hand finished records, and call tasks and the ACD task hand queue events, to an
//! unbounded channel and go on at once: nothing on the call path ever waits for the disk or
//! the database. The writer takes everything that has queued up and writes it in one
//! transaction (at most [`BATCH`] items), so a burst costs one commit and a record is
//! committed as soon as the previous commit is done: there is no batching interval.
//!
//! # When the store fails
//!
//! (Disk full, I/O errors, a database server down.) The batch is kept, in order, and retried
//! with a backoff of 0.5 s doubling to 10 s. One `ALARM` line is logged when the store starts
//! failing (with the error), one `ALARM cleared` line when everything kept has been written
//! (with how many records and events were written late); `/health` shows `"store":"failing"`
//! and the pending count meanwhile, `verde_records_pending` too.
//!
//! While the store fails, what arrives is appended to the spool (`<data>/spool/records.jsonl`,
//! one JSON item a line, fsynced) at most [`SPOOL_EVERY`] after it arrived, so a `kill -9`
//! during an outage loses at most the last second of records. When the spool cannot be
//! written either (the spool is on the disk that is full), items stay in memory (with an
//! alarm past [`MEMORY_ALARM`] of them): memory is then the last place left, and nothing is
//! dropped. On shutdown, what is still in memory goes to the spool; at start-up
//! [`Records::open`] replays the spool into the store before verde serves, then deletes it.
//! Replay progress is kept beside the spool (`records.jsonl.offset`, after each committed
//! batch), so a crash during a replay repeats at most one batch: call records are replaced by
//! call id (no duplicate), queue events of that batch would be logged twice.
//!
//! A record the store refuses for what it contains (not for its own state, see
//! `StoreError::is_transient`) cannot hold up the others: it is set aside in
//! `<data>/spool/rejected.jsonl` and logged in full with an alarm.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use verde_store::{CallRecord, QueueEvent, Store};

/// Most items in one transaction.
pub const BATCH: usize = 512;
/// First retry after a failure; doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// While the store fails, what arrived is in the spool at most this long after.
pub const SPOOL_EVERY: Duration = Duration::from_secs(1);
/// Items held in memory (the spool failing too) past which a second alarm is raised.
pub const MEMORY_ALARM: usize = 200_000;
/// A failing store is mentioned again in the log at most this often after the first alarm.
const REMIND_EVERY: Duration = Duration::from_secs(60);

const SPOOL_FILE: &str = "records.jsonl";
const OFFSET_FILE: &str = "records.jsonl.offset";
const REJECTED_FILE: &str = "rejected.jsonl";

#[derive(Debug, Clone, Copy)]
struct Tuning {
    batch: usize,
    retry_first: Duration,
    retry_max: Duration,
    spool_every: Duration,
    memory_alarm: usize,
}

const TUNING: Tuning = Tuning {
    batch: BATCH,
    retry_first: RETRY_FIRST,
    retry_max: RETRY_MAX,
    spool_every: SPOOL_EVERY,
    memory_alarm: MEMORY_ALARM,
};

#[derive(Clone)]
pub struct Records {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

/// What the writer publishes for `/health` and `/metrics`.
#[derive(Default)]
struct Shared {
    failing: AtomicBool,
    pending: AtomicU64,
    spooled: AtomicU64,
}

/// The writer's state as `/health` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsHealth {
    /// The last write to the store failed.
    pub store_failing: bool,
    /// Records and queue events handed over and not yet in the store (memory and spool).
    pub pending: u64,
    /// Of those, how many are in the spool file.
    pub spooled: u64,
}

/// One line of the spool: `{"record":{...}}` or `{"event":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Item {
    Record(Box<CallRecord>),
    Event(Box<QueueEvent>),
}

impl Item {
    fn describe(&self) -> String {
        match self {
            Item::Record(r) => format!("call record {}", r.call_id),
            Item::Event(e) => format!("queue event {} of {}", e.kind.as_str(), e.call_id),
        }
    }
}

enum Msg {
    Item(Item),
    /// Answered once everything handed over before it is stored.
    Flush(oneshot::Sender<()>),
    /// Shutdown: store what can be, spool the rest, then the writer stops.
    Close(oneshot::Sender<()>),
}

impl Records {
    /// Replays what a previous run left in the spool (`spool_dir`, normally `<data>/spool`)
    /// into the store, then starts the writer thread. Call it before serving: it returns once
    /// the spool is written, or once the store has refused it (the writer then keeps trying in
    /// the background, with the alarm up).
    pub fn open(store: Arc<dyn Store>, spool_dir: &Path) -> (Records, std::thread::JoinHandle<()>) {
        Self::start_with(store, Some(spool_dir.to_path_buf()), TUNING)
    }

    /// A writer without a spool (an outage is held in memory only), for tests of its users.
    #[cfg(test)]
    pub fn start(store: Arc<dyn Store>) -> (Records, std::thread::JoinHandle<()>) {
        Self::start_with(store, None, TUNING)
    }

    fn start_with(
        store: Arc<dyn Store>,
        spool_dir: Option<PathBuf>,
        tuning: Tuning,
    ) -> (Records, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let mut writer = Writer::new(store, rx, shared.clone(), spool_dir, tuning);
        writer.replay_at_start();
        // The thread logs through whatever subscriber the caller has (a test's own included).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let handle = std::thread::Builder::new()
            .name("verde-records".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || writer.run()))
            .expect("spawn the record writer thread");
        (Records { tx, shared }, handle)
    }

    /// Hands a finished call's record to the writer; never waits for the store.
    pub async fn write(&self, record: CallRecord) {
        // Counted when handed over, so the counter agrees with the calls that ended even while
        // the store is failing (the writer keeps those records).
        crate::metrics::call_finished(&record.disposition, &record.channel);
        self.send(Item::Record(Box::new(record)));
    }

    /// Hands a queue-log line to the writer without waiting: callable from the ACD task and
    /// from synchronous code.
    pub fn event(&self, ev: QueueEvent) {
        self.send(Item::Event(Box::new(ev)));
    }

    fn send(&self, item: Item) {
        if let Err(mpsc::SendError(Msg::Item(item))) = self.tx.send(Msg::Item(item)) {
            // Only after shutdown (or if the writer thread died): the log is all that is left,
            // so the item goes there whole, to be recovered from it.
            let json = serde_json::to_string(&item).unwrap_or_default();
            tracing::error!(item = %json, "ALARM: {} NOT stored: the record writer has stopped",
                item.describe());
        }
    }

    /// Waits until every record and event handed over so far is in the store (not merely in
    /// the spool).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// For shutdown: stores what it can, puts in the spool (fsynced) what the store refuses,
    /// and stops the writer. Items handed over afterwards are only logged.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn health(&self) -> RecordsHealth {
        RecordsHealth {
            store_failing: self.shared.failing.load(Ordering::Relaxed),
            pending: self.shared.pending.load(Ordering::Relaxed),
            spooled: self.shared.spooled.load(Ordering::Relaxed),
        }
    }
}

/// An outage: from the first failed write to the moment everything kept is written.
struct Outage {
    since: Instant,
    late_records: u64,
    late_events: u64,
    last_word: Instant,
}

/// Where the next batch comes from.
enum Source {
    Spool {
        next_pos: u64,
        bad: Vec<(String, String)>,
    },
    Memory,
}

struct Writer {
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    t: Tuning,
    /// Handed over, not stored, not spooled; always newer than everything in the spool.
    mem: VecDeque<Item>,
    spool: Option<Spool>,
    outage: Option<Outage>,
    /// The last write failed (transient).
    failing: bool,
    next_try: Option<Instant>,
    delay: Duration,
    /// Items stored (or set aside) since start, spooled ones from a previous run included.
    done: u64,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    last_spill: Option<Instant>,
    spool_failing: bool,
    memory_alarmed: bool,
    /// Items still to write one at a time, to find the one the store refuses.
    isolate: usize,
}

impl Writer {
    fn new(
        store: Arc<dyn Store>,
        rx: mpsc::Receiver<Msg>,
        shared: Arc<Shared>,
        spool_dir: Option<PathBuf>,
        t: Tuning,
    ) -> Writer {
        let w = Writer {
            store,
            rx,
            shared,
            t,
            mem: VecDeque::new(),
            spool: spool_dir.map(Spool::open),
            outage: None,
            failing: false,
            next_try: None,
            delay: t.retry_first,
            done: 0,
            flushes: Vec::new(),
            last_spill: None,
            spool_failing: false,
            memory_alarmed: false,
            isolate: 0,
        };
        w.publish();
        w
    }

    fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.lines)
    }

    fn pending(&self) -> u64 {
        self.mem.len() as u64 + self.spooled()
    }

    fn publish(&self) {
        let pending = self.pending();
        self.shared.pending.store(pending, Ordering::Relaxed);
        self.shared.spooled.store(self.spooled(), Ordering::Relaxed);
        self.shared.failing.store(self.failing, Ordering::Relaxed);
        crate::metrics::records_pending(pending);
    }

    /// Before serving: the previous run's spool goes to the store first.
    fn replay_at_start(&mut self) {
        let spooled = self.spooled();
        if spooled == 0 {
            return;
        }
        let path = self
            .spool
            .as_ref()
            .map(|s| s.file.clone())
            .unwrap_or_default();
        tracing::info!(items = spooled, spool = %path.display(),
            "replaying call records and queue events kept in the spool by an earlier run");
        let started = Instant::now();
        while self.spooled() > 0 && !self.failing {
            self.attempt(Instant::now());
        }
        if self.failing {
            tracing::error!(left = self.spooled(), spool = %path.display(),
                "ALARM: the spool could not be replayed at start-up: the store is failing; \
                 kept and retried in the background");
        } else {
            tracing::info!(items = spooled, ms = started.elapsed().as_millis() as u64,
                spool = %path.display(), "spool replayed into the store and deleted");
        }
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let msg = match self.wait(now) {
                None => match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return self.close(),
                },
                Some(wait) if wait.is_zero() => match self.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return self.close(),
                },
                Some(wait) => match self.rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return self.close(),
                },
            };
            let mut next = msg;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Item(item) => self.mem.push_back(item),
                    Msg::Flush(done) => {
                        let target = self.done + self.pending();
                        self.flushes.push((target, done));
                    }
                    Msg::Close(done) => {
                        self.close();
                        let _ = done.send(());
                        return;
                    }
                }
                next = self.rx.try_recv().ok();
            }
            self.publish();
            let now = Instant::now();
            if self.failing && !self.mem.is_empty() {
                let due = self
                    .last_spill
                    .is_none_or(|t| now.duration_since(t) >= self.t.spool_every);
                if due {
                    self.spill(now);
                }
            }
            if self.pending() > 0 && self.next_try.is_none_or(|t| now >= t) {
                self.attempt(now);
            }
            self.answer_flushes();
        }
    }

    /// How long to wait for more input; `None`: until some arrives (nothing to do meanwhile).
    fn wait(&self, now: Instant) -> Option<Duration> {
        if self.pending() == 0 {
            return None;
        }
        let mut at = self.next_try.unwrap_or(now);
        if self.failing && !self.mem.is_empty() && self.spool.is_some() {
            let spill = self.last_spill.map_or(now, |t| t + self.t.spool_every);
            at = at.min(spill);
        }
        Some(at.saturating_duration_since(now))
    }

    fn answer_flushes(&mut self) {
        let done = self.done;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.flushes.drain(..).partition(|(t, _)| *t <= done);
        self.flushes = waiting;
        for (_, tx) in ready {
            let _ = tx.send(());
        }
    }

    /// Writes the next batch: the spool first (it holds the oldest items), then memory.
    fn attempt(&mut self, now: Instant) {
        let max = if self.isolate > 0 { 1 } else { self.t.batch };
        let (items, source) = match self.spool.as_ref().filter(|s| s.lines > 0) {
            Some(spool) => match spool.read(max) {
                Ok(b) if b.items.is_empty() && b.bad.is_empty() => {
                    // The file holds less than it was counted to: changed behind our back.
                    tracing::error!(spool = %spool.file.display(), counted = spool.lines,
                        "ALARM: the spool ends before its counted lines; nothing more to replay");
                    self.spool.as_mut().expect("spool").remove();
                    self.publish();
                    return;
                }
                Ok(b) => (
                    b.items,
                    Source::Spool {
                        next_pos: b.next_pos,
                        bad: b.bad,
                    },
                ),
                Err(e) => {
                    let path = spool.file.display().to_string();
                    if e.kind() == std::io::ErrorKind::NotFound {
                        tracing::error!(spool = %path, lost = spool.lines,
                            "ALARM: the spool file vanished before it was replayed");
                        self.spool.as_mut().expect("spool").reset();
                        self.publish();
                    } else {
                        self.failed(&format!("cannot read the spool {path}: {e}"), now);
                    }
                    return;
                }
            },
            None => {
                let n = self.mem.len().min(max);
                (self.mem.iter().take(n).cloned().collect(), Source::Memory)
            }
        };
        let mut records = Vec::new();
        let mut events = Vec::new();
        for item in &items {
            match item {
                Item::Record(r) => records.push((**r).clone()),
                Item::Event(e) => events.push((**e).clone()),
            }
        }
        let result = if items.is_empty() {
            Ok(())
        } else {
            self.store.record_batch(&records, &events)
        };
        match result {
            Ok(()) => self.stored(items, source, records.len(), events.len(), now),
            Err(e) if !e.is_transient() && items.len() == 1 => {
                self.set_aside(&items[0], &e.to_string());
                // Taken out of the way as if stored: the ones behind it go on.
                self.stored(items, source, 0, 0, now);
            }
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, items = items.len(),
                    "the store refused a batch for its data: writing it one item at a time");
                self.isolate = items.len();
            }
            Err(e) => self.failed(&e.to_string(), now),
        }
    }

    fn stored(
        &mut self,
        items: Vec<Item>,
        source: Source,
        records: usize,
        events: usize,
        now: Instant,
    ) {
        let n = items.len();
        match source {
            Source::Spool { next_pos, bad } => {
                for (line, why) in &bad {
                    self.set_aside_line(line, why);
                }
                let spool = self.spool.as_mut().expect("spool");
                if let Err(e) = spool.consumed(next_pos, (n + bad.len()) as u64) {
                    tracing::warn!(error = %e, spool = %spool.file.display(),
                        "cannot note the spool's replay progress (a crash now would replay one batch again)");
                }
                self.done += bad.len() as u64;
            }
            Source::Memory => {
                self.mem.drain(..n);
            }
        }
        self.done += n as u64;
        self.isolate = self.isolate.saturating_sub(n);
        self.failing = false;
        self.delay = self.t.retry_first;
        self.next_try = None;
        if self.memory_alarmed && self.mem.len() < self.t.memory_alarm {
            self.memory_alarmed = false;
        }
        if let Some(o) = &mut self.outage {
            o.late_records += records as u64;
            o.late_events += events as u64;
        }
        if self.pending() == 0 {
            if let Some(o) = self.outage.take() {
                tracing::warn!(
                    late_records = o.late_records,
                    late_events = o.late_events,
                    outage_s = now.duration_since(o.since).as_secs(),
                    "ALARM cleared: the store is back; {} call records and {} queue events were \
                     written late, none lost",
                    o.late_records,
                    o.late_events
                );
            }
        }
        self.publish();
    }

    fn failed(&mut self, error: &str, now: Instant) {
        self.failing = true;
        self.next_try = Some(now + self.delay);
        let retry_ms = self.delay.as_millis() as u64;
        self.delay = (self.delay * 2).min(self.t.retry_max);
        let pending = self.pending();
        match &mut self.outage {
            None => {
                tracing::error!(
                    error,
                    pending,
                    retry_ms,
                    "ALARM: the store is failing: call records and queue events are kept (spool \
                     file, else memory) and retried; calls go on"
                );
                self.outage = Some(Outage {
                    since: now,
                    late_records: 0,
                    late_events: 0,
                    last_word: now,
                });
            }
            Some(o) if now.duration_since(o.last_word) >= REMIND_EVERY => {
                o.last_word = now;
                tracing::warn!(
                    error,
                    pending,
                    failing_s = now.duration_since(o.since).as_secs(),
                    "the store is still failing; records kept"
                );
            }
            Some(_) => {}
        }
        self.publish();
    }

    /// Moves what is in memory to the spool (fsynced), so that a crash does not lose it.
    fn spill(&mut self, now: Instant) {
        self.last_spill = Some(now);
        let Some(spool) = self.spool.as_mut() else {
            self.check_memory();
            return;
        };
        match spool.append(self.mem.iter()) {
            Ok(()) => {
                if self.spool_failing {
                    tracing::warn!(spool = %spool.file.display(), "the spool can be written again");
                    self.spool_failing = false;
                }
                tracing::debug!(items = self.mem.len(), spool = %spool.file.display(), "spooled");
                self.mem.clear();
                self.memory_alarmed = false;
            }
            Err(e) => {
                if !self.spool_failing {
                    tracing::error!(error = %e, spool = %spool.file.display(), held = self.mem.len(),
                        "ALARM: the spool cannot be written either: records are held in memory \
                         (a crash now would lose them)");
                    self.spool_failing = true;
                }
                self.check_memory();
            }
        }
        self.publish();
    }

    fn check_memory(&mut self) {
        if self.mem.len() >= self.t.memory_alarm && !self.memory_alarmed {
            self.memory_alarmed = true;
            tracing::error!(
                held = self.mem.len(),
                "ALARM: call records and queue events piling up in memory, with nowhere else to \
                 keep them; they are kept until the store returns"
            );
        }
    }

    /// An item the store refuses whatever its state: out of the way, in a file and in the log.
    fn set_aside(&mut self, item: &Item, why: &str) {
        let line = serde_json::to_string(item).unwrap_or_else(|e| format!("{item:?} ({e})"));
        self.set_aside_line(&line, why);
    }

    fn set_aside_line(&self, line: &str, why: &str) {
        let kept = self.spool.as_ref().and_then(|s| {
            let path = s.dir.join(REJECTED_FILE);
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(&s.dir)?;
                let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            };
            write().ok().map(|()| path)
        });
        let kept = kept.map_or("only here".to_string(), |p| p.display().to_string());
        tracing::error!(error = why, item = line, kept = %kept,
            "ALARM: the store refused an item for its content; set aside, not retried");
    }

    /// Shutdown: a last try at the store, then the spool, then (nothing else left) the log.
    fn close(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Item(item) => self.mem.push_back(item),
                Msg::Flush(_) | Msg::Close(_) => {}
            }
        }
        self.failing = false;
        while self.pending() > 0 && !self.failing {
            self.attempt(Instant::now());
        }
        if !self.mem.is_empty() {
            let items = self.mem.len();
            match self
                .spool
                .as_mut()
                .map(|s| (s.append(self.mem.iter()), s.file.clone()))
            {
                Some((Ok(()), _)) => self.mem.clear(),
                Some((Err(e), path)) => {
                    tracing::error!(error = %e, spool = %path.display(), items,
                        "ALARM: cannot write the spool at shutdown");
                }
                None => {}
            }
            for item in self.mem.drain(..) {
                let json = serde_json::to_string(&item).unwrap_or_default();
                tracing::error!(item = %json, "ALARM: {} NOT stored: the store and the spool are \
                    both failing at shutdown", item.describe());
            }
        }
        if let Some(spool) = self.spool.as_ref().filter(|s| s.lines > 0) {
            tracing::warn!(items = spool.lines, spool = %spool.file.display(),
                "shutting down with the store failing: call records and queue events kept in \
                 the spool; the next start writes them to the store");
        }
        self.publish();
    }
}

/// The append-only spool file and how far it has been replayed.
struct Spool {
    dir: PathBuf,
    file: PathBuf,
    offset_file: PathBuf,
    /// Bytes already in the store.
    read_pos: u64,
    /// Bytes of whole lines in the file.
    end: u64,
    /// Lines after `read_pos`.
    lines: u64,
}

struct SpoolBatch {
    items: Vec<Item>,
    /// Lines that are not an item (text, why), set aside when the batch is committed.
    bad: Vec<(String, String)>,
    next_pos: u64,
}

impl Spool {
    /// Finds what an earlier run left: a line cut short by a crash is dropped (the item it held
    /// was not yet safe anywhere, and a later append must not be glued to it).
    fn open(dir: PathBuf) -> Spool {
        let file = dir.join(SPOOL_FILE);
        let offset_file = dir.join(OFFSET_FILE);
        let mut spool = Spool {
            dir,
            file,
            offset_file,
            read_pos: 0,
            end: 0,
            lines: 0,
        };
        if let Err(e) = spool.scan() {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(error = %e, spool = %spool.file.display(),
                    "ALARM: cannot read the spool left by an earlier run; it is left in place");
            }
            spool.reset_counts();
        }
        spool
    }

    fn scan(&mut self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        File::open(&self.file)?.read_to_end(&mut bytes)?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(spool = %self.file.display(), bytes = bytes.len() - whole,
                "the spool's last line was cut short by a crash; dropped");
            OpenOptions::new()
                .write(true)
                .open(&self.file)?
                .set_len(whole as u64)?;
        }
        let offset = std::fs::read_to_string(&self.offset_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|o| *o as usize <= whole && (*o == 0 || bytes[*o as usize - 1] == b'\n'))
            .unwrap_or(0);
        self.read_pos = offset;
        self.end = whole as u64;
        self.lines = bytes[offset as usize..whole]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        if self.lines == 0 {
            self.remove();
        }
        Ok(())
    }

    fn reset_counts(&mut self) {
        self.read_pos = 0;
        self.end = 0;
        self.lines = 0;
    }

    /// Forgets the file (after it vanished).
    fn reset(&mut self) {
        self.reset_counts();
        let _ = std::fs::remove_file(&self.offset_file);
    }

    fn remove(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.offset_file);
        self.reset_counts();
    }

    /// Appends whole lines and fsyncs them; on failure the file is cut back to what it was,
    /// so that no half line is left for the next append to join.
    fn append<'a>(&mut self, items: impl Iterator<Item = &'a Item>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut n = 0;
        for item in items {
            serde_json::to_writer(&mut buf, item)?;
            buf.push(b'\n');
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        let new_dir = !self.dir.exists();
        std::fs::create_dir_all(&self.dir)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        let written = f.write_all(&buf).and_then(|()| f.sync_data());
        if let Err(e) = written {
            let _ = f.set_len(self.end);
            return Err(e);
        }
        if new_dir || self.end == 0 {
            // The file's name must survive a power loss too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        self.end += buf.len() as u64;
        self.lines += n;
        Ok(())
    }

    fn read(&self, max: usize) -> std::io::Result<SpoolBatch> {
        let mut f = File::open(&self.file)?;
        f.seek(SeekFrom::Start(self.read_pos))?;
        let mut r = BufReader::new(f.take(self.end - self.read_pos));
        let mut batch = SpoolBatch {
            items: Vec::new(),
            bad: Vec::new(),
            next_pos: self.read_pos,
        };
        let mut line = Vec::new();
        while batch.items.len() + batch.bad.len() < max {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            batch.next_pos += n as u64;
            match serde_json::from_slice::<Item>(&line) {
                Ok(item) => batch.items.push(item),
                Err(e) => batch.bad.push((
                    String::from_utf8_lossy(&line).trim_end().to_string(),
                    format!("not a spool line: {e}"),
                )),
            }
        }
        Ok(batch)
    }

    /// The lines up to `next_pos` are in the store.
    fn consumed(&mut self, next_pos: u64, lines: u64) -> std::io::Result<()> {
        self.read_pos = next_pos;
        self.lines = self.lines.saturating_sub(lines);
        if self.read_pos >= self.end {
            self.remove();
            return Ok(());
        }
        let tmp = self.offset_file.with_extension("offset.tmp");
        std::fs::write(&tmp, self.read_pos.to_string())?;
        std::fs::rename(&tmp, &self.offset_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use verde_store::StoreError;

    const FAST: Tuning = Tuning {
        batch: 64,
        retry_first: Duration::from_millis(5),
        retry_max: Duration::from_millis(40),
        spool_every: Duration::from_millis(10),
        memory_alarm: 1_000_000,
    };

    /// A failure worth retrying, worded as SQLite words a full disk.
    fn transient() -> StoreError {
        StoreError::Backend(Box::new(std::io::Error::other("database or disk is full")))
    }

    /// A scratch directory removed at the end of the test.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "verde-records-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What a test does to the n-th write before the store sees it (stall, fail).
    type Hook = Box<dyn Fn(usize) -> Option<StoreError> + Send + Sync>;

    /// Fails while `down` (or for its first `failures_left` writes, or when its hook says so),
    /// and refuses for good any record whose call id is `bad`.
    #[derive(Default)]
    struct Flaky {
        hook: Option<Hook>,
        failures_left: AtomicUsize,
        down: AtomicBool,
        stored: Mutex<Vec<String>>,
        events: Mutex<Vec<QueueEvent>>,
        batches: AtomicUsize,
        attempts: AtomicUsize,
    }

    impl Flaky {
        fn new(failures: usize) -> Arc<Flaky> {
            Arc::new(Flaky {
                failures_left: AtomicUsize::new(failures),
                ..Default::default()
            })
        }
        fn with_hook(
            hook: impl Fn(usize) -> Option<StoreError> + Send + Sync + 'static,
        ) -> Arc<Flaky> {
            Arc::new(Flaky {
                hook: Some(Box::new(hook)),
                ..Default::default()
            })
        }
        fn down() -> Arc<Flaky> {
            let f = Flaky::new(0);
            f.down.store(true, Ordering::SeqCst);
            f
        }
        fn stored(&self) -> Vec<String> {
            self.stored.lock().unwrap().clone()
        }
    }

    impl Store for Flaky {
        fn record_batch(
            &self,
            records: &[CallRecord],
            events: &[QueueEvent],
        ) -> Result<(), StoreError> {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.hook.as_ref().and_then(|h| h(attempt)) {
                return Err(e);
            }
            if self.down.load(Ordering::SeqCst)
                || self
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(transient());
            }
            if records.iter().any(|r| r.call_id == "bad") {
                return Err(StoreError::Data(
                    serde_json::from_str::<u8>("x").unwrap_err(),
                ));
            }
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut s = self.stored.lock().unwrap();
            s.extend(records.iter().map(|r| r.call_id.clone()));
            self.events.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
        fn call(&self, _: &str) -> Result<Option<CallRecord>, StoreError> {
            Ok(None)
        }
        fn recent_calls(&self, _: usize) -> Result<Vec<CallRecord>, StoreError> {
            Ok(vec![])
        }
        fn calls_between(&self, _: i64, _: i64) -> Result<Vec<CallRecord>, StoreError> {
            Ok(vec![])
        }
        fn queue_events(&self, _: i64, _: i64) -> Result<Vec<QueueEvent>, StoreError> {
            Ok(vec![])
        }
    }

    fn event(i: i64) -> QueueEvent {
        QueueEvent {
            at_ms: i,
            call_id: format!("c{i}"),
            ..Default::default()
        }
    }

    fn record(id: &str) -> CallRecord {
        CallRecord {
            call_id: id.to_string(),
            disposition: "completed-ivr".into(),
            ..Default::default()
        }
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("c{i}")).collect()
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A log the test can read: the writer thread logs through the test's subscriber.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
        fn count(&self, needle: &str) -> usize {
            self.text().lines().filter(|l| l.contains(needle)).count()
        }
    }

    fn start_logged(
        store: Arc<dyn Store>,
        spool: Option<PathBuf>,
    ) -> (Records, std::thread::JoinHandle<()>, Log) {
        let log = Log::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let (records, handle) = tracing::subscriber::with_default(subscriber, || {
            Records::start_with(store, spool, FAST)
        });
        (records, handle, log)
    }

    #[test]
    fn a_failing_store_loses_nothing_keeps_order_and_raises_one_alarm_then_clears_it() {
        let flaky = Flaky::down();
        let (records, _h, log) = start_logged(flaky.clone(), None);
        for i in 0..100 {
            block_on(records.write(record(&format!("c{i}"))));
            records.event(event(i as i64));
        }
        wait_until("several failed attempts", || {
            flaky.attempts.load(Ordering::SeqCst) >= 4
        });
        let h = records.health();
        assert!(h.store_failing, "{h:?}");
        assert_eq!(h.pending, 200, "{h:?}");
        assert!(flaky.stored().is_empty());
        assert_eq!(
            log.count("ALARM: the store is failing"),
            1,
            "{}",
            log.text()
        );
        assert!(
            log.text().contains("database or disk is full"),
            "{}",
            log.text()
        );

        flaky.down.store(false, Ordering::SeqCst);
        block_on(records.flush());
        assert_eq!(flaky.stored(), ids(0..100));
        assert_eq!(
            *flaky.events.lock().unwrap(),
            (0..100).map(event).collect::<Vec<_>>()
        );
        let h = records.health();
        assert_eq!(
            h,
            RecordsHealth {
                store_failing: false,
                pending: 0,
                spooled: 0
            }
        );
        wait_until("the all-clear", || log.count("ALARM cleared") == 1);
        let cleared = log
            .text()
            .lines()
            .find(|l| l.contains("ALARM cleared"))
            .unwrap()
            .to_string();
        assert!(
            cleared.contains("100 call records and 100 queue events"),
            "{cleared}"
        );
        assert_eq!(
            log.count("ALARM: the store is failing"),
            1,
            "{}",
            log.text()
        );
    }

    #[test]
    fn records_and_events_are_batched_and_survive_a_few_failures() {
        let flaky = Flaky::new(3);
        let (records, _h) = Records::start_with(flaky.clone(), None, FAST);
        for i in 0..1000 {
            records.event(event(i));
            if i % 10 == 9 {
                block_on(records.write(record(&format!("c{i}"))));
            }
        }
        block_on(records.flush());
        let events = flaky.events.lock().unwrap().clone();
        assert_eq!(events, (0..1000).map(event).collect::<Vec<_>>());
        let expected: Vec<String> = (0..100).map(|i| format!("c{}", i * 10 + 9)).collect();
        assert_eq!(flaky.stored(), expected);
        let batches = flaky.batches.load(Ordering::SeqCst);
        assert!(batches < 1100, "{batches} commits");
    }

    #[test]
    fn calls_never_wait_for_a_stuck_store_and_nothing_is_dropped_meanwhile() {
        // Blocks inside the store until the gate opens.
        let gate = Arc::new(Mutex::new(()));
        let entered = Arc::new(AtomicBool::new(false));
        let (g, e) = (gate.clone(), entered.clone());
        let inner = Flaky::with_hook(move |_| {
            e.store(true, Ordering::SeqCst);
            drop(g.lock().unwrap());
            None
        });
        let held = gate.lock().unwrap();
        let (records, _h) = Records::start_with(inner.clone(), None, FAST);
        records.event(event(0));
        wait_until("the writer inside the store", || {
            entered.load(Ordering::SeqCst)
        });
        // Far more than any channel bound the old writer had: none of these may wait.
        let handing = Instant::now();
        block_on(async {
            for i in 1..100_000 {
                records.event(event(i));
            }
            for i in 0..1000 {
                records.write(record(&format!("c{i}"))).await;
            }
        });
        assert!(
            handing.elapsed() < Duration::from_secs(5),
            "handing over took {:?}",
            handing.elapsed()
        );
        drop(held);
        block_on(records.flush());
        assert_eq!(inner.events.lock().unwrap().len(), 100_000);
        assert_eq!(inner.stored(), ids(0..1000));
    }

    #[test]
    fn an_outage_goes_to_the_spool_and_comes_back_from_it_in_order() {
        let dir = TempDir::new();
        let spool_dir = dir.path().join("spool");
        let flaky = Flaky::down();
        let (records, _h) = Records::start_with(flaky.clone(), Some(spool_dir.clone()), FAST);
        for i in 0..50 {
            block_on(records.write(record(&format!("c{i}"))));
        }
        wait_until("the first 50 spooled", || records.health().spooled == 50);
        let text = std::fs::read_to_string(spool_dir.join(SPOOL_FILE)).unwrap();
        assert_eq!(text.lines().count(), 50);
        assert!(
            text.lines().all(|l| l.starts_with("{\"record\":")),
            "{text}"
        );
        // More arrive after the spool took over: they must come after the spooled ones.
        for i in 50..80 {
            block_on(records.write(record(&format!("c{i}"))));
        }
        flaky.down.store(false, Ordering::SeqCst);
        block_on(records.flush());
        assert_eq!(flaky.stored(), ids(0..80));
        assert!(!spool_dir.join(SPOOL_FILE).exists(), "spool left behind");
        assert!(!spool_dir.join(OFFSET_FILE).exists());
        assert_eq!(records.health().pending, 0);
    }

    #[test]
    fn shutdown_with_the_store_down_spools_and_the_next_start_replays_before_serving() {
        let dir = TempDir::new();
        let spool_dir = dir.path().join("spool");
        let down = Flaky::down();
        let tuning = Tuning {
            // Never spooled by the timer: only the shutdown puts them there.
            spool_every: Duration::from_secs(3600),
            ..FAST
        };
        let (records, handle) = Records::start_with(down.clone(), Some(spool_dir.clone()), tuning);
        for i in 0..30 {
            block_on(records.write(record(&format!("c{i}"))));
            records.event(event(i));
        }
        wait_until("failing", || records.health().store_failing);
        // `last_spill` is None at the first failure, so the first items may have been spooled
        // at once; the rest are in memory until the shutdown.
        block_on(records.close());
        handle.join().unwrap();
        let text = std::fs::read_to_string(spool_dir.join(SPOOL_FILE)).unwrap();
        assert_eq!(text.lines().count(), 60, "{text}");
        // After the writer stopped, a late record is logged, not lost silently (and not stored).
        block_on(records.write(record("late")));

        let back = Flaky::new(0);
        let (again, _h) = Records::start_with(back.clone(), Some(spool_dir.clone()), FAST);
        // Replayed by the time start returns: before anything is served.
        assert_eq!(back.stored(), ids(0..30));
        assert_eq!(
            *back.events.lock().unwrap(),
            (0..30).map(event).collect::<Vec<_>>()
        );
        assert!(!spool_dir.join(SPOOL_FILE).exists());
        assert_eq!(again.health().pending, 0);
    }

    #[test]
    fn a_replay_resumes_after_its_last_committed_batch_and_drops_a_line_cut_by_a_crash() {
        let dir = TempDir::new();
        let spool_dir = dir.path().to_path_buf();
        let mut lines = String::new();
        let mut offset = 0;
        for i in 0..10 {
            let item = Item::Record(Box::new(record(&format!("c{i}"))));
            lines.push_str(&serde_json::to_string(&item).unwrap());
            lines.push('\n');
            if i == 3 {
                offset = lines.len();
            }
        }
        lines.push_str("{\"record\":{\"call_id\":\"cu"); // a crash in the middle of an append
        std::fs::write(spool_dir.join(SPOOL_FILE), &lines).unwrap();
        std::fs::write(spool_dir.join(OFFSET_FILE), offset.to_string()).unwrap();

        let store = Flaky::new(0);
        let (_records, _h) = Records::start_with(store.clone(), Some(spool_dir.clone()), FAST);
        assert_eq!(store.stored(), ids(4..10));
        assert!(!spool_dir.join(SPOOL_FILE).exists());
        assert!(!spool_dir.join(OFFSET_FILE).exists());
    }

    #[test]
    fn a_replay_interrupted_by_the_store_keeps_its_place() {
        let dir = TempDir::new();
        let spool_dir = dir.path().to_path_buf();
        let mut spool = Spool::open(spool_dir.clone());
        let items: Vec<Item> = (0..200)
            .map(|i| Item::Record(Box::new(record(&format!("c{i}")))))
            .collect();
        spool.append(items.iter()).unwrap();
        // Two batches of 64 go in, then the store fails during the start-up replay.
        let store = Flaky::with_hook(|attempt| (attempt >= 2).then(transient));
        let (records, handle) = Records::start_with(store.clone(), Some(spool_dir.clone()), FAST);
        assert_eq!(store.stored(), ids(0..128));
        let h = records.health();
        assert!(
            h.store_failing && h.pending == 72 && h.spooled == 72,
            "{h:?}"
        );
        block_on(records.close());
        handle.join().unwrap();
        // A later start (the store back) writes only what was left.
        let next = Flaky::new(0);
        let _again = Records::start_with(next.clone(), Some(spool_dir.clone()), FAST);
        assert_eq!(next.stored(), ids(128..200));
    }

    #[test]
    fn a_record_the_store_refuses_for_its_content_is_set_aside_and_the_rest_go_on() {
        let dir = TempDir::new();
        let flaky = Flaky::new(0);
        let (records, _h, log) = start_logged(flaky.clone(), Some(dir.path().to_path_buf()));
        block_on(async {
            for i in 0..10 {
                records.write(record(&format!("c{i}"))).await;
            }
            records.write(record("bad")).await;
            for i in 10..20 {
                records.write(record(&format!("c{i}"))).await;
            }
        });
        block_on(records.flush());
        assert_eq!(flaky.stored(), ids(0..20));
        let rejected = std::fs::read_to_string(dir.path().join(REJECTED_FILE)).unwrap();
        assert_eq!(rejected.lines().count(), 1, "{rejected}");
        let back: Item = serde_json::from_str(rejected.trim()).unwrap();
        assert_eq!(back, Item::Record(Box::new(record("bad"))));
        assert_eq!(
            log.count("ALARM: the store refused an item"),
            1,
            "{}",
            log.text()
        );
        // Not an outage: the store works.
        assert_eq!(
            log.count("ALARM: the store is failing"),
            0,
            "{}",
            log.text()
        );
    }

    #[test]
    fn with_the_spool_unwritable_too_records_wait_in_memory() {
        let dir = TempDir::new();
        // A file where the spool directory should be: as a full disk, nothing can be created.
        let blocker = dir.path().join("spool");
        std::fs::write(&blocker, "").unwrap();
        let flaky = Flaky::down();
        let (records, _h, log) = start_logged(flaky.clone(), Some(blocker.clone()));
        for i in 0..40 {
            block_on(records.write(record(&format!("c{i}"))));
        }
        wait_until("the spool alarm", || {
            log.count("ALARM: the spool cannot be written either") == 1
        });
        let h = records.health();
        assert!(
            h.store_failing && h.pending == 40 && h.spooled == 0,
            "{h:?}"
        );
        flaky.down.store(false, Ordering::SeqCst);
        block_on(records.flush());
        assert_eq!(flaky.stored(), ids(0..40));
        assert_eq!(log.count("ALARM: the spool cannot be written either"), 1);
    }
}
