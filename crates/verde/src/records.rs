//! The record writer: one thread that owns the store's write side for call records and the
//! queue log.
//!
//! Call tasks hand finished records, and call tasks and the ACD task hand queue events, to one
//! bounded channel and go on; the writer drains whatever has queued up and writes records and
//! events in one transaction, so a burst costs one commit. When the store fails, the batch is
//! kept and retried with an alarm in the log: nothing is dropped silently. A full channel
//! pushes back on the call tasks that are ending, not on live calls; queue events cannot wait
//! (the ACD task must never block on the disk), so one that finds the channel full is logged
//! whole with an alarm instead.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use verde_store::{CallRecord, QueueEvent, Store};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;

#[derive(Clone)]
pub struct Records {
    tx: mpsc::Sender<Msg>,
}

enum Msg {
    Record(Box<CallRecord>),
    Event(Box<QueueEvent>),
    /// Answered once everything queued before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Records {
    pub fn start(store: Arc<dyn Store>) -> (Records, std::thread::JoinHandle<()>) {
        Self::start_with(store, QUEUE)
    }

    fn start_with(
        store: Arc<dyn Store>,
        capacity: usize,
    ) -> (Records, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = std::thread::Builder::new()
            .name("verde-records".into())
            .spawn(move || writer(store, rx))
            .expect("spawn the record writer thread");
        (Records { tx }, handle)
    }

    pub async fn write(&self, record: CallRecord) {
        // Counted when handed over, so the counter agrees with the calls that ended even while
        // the store is failing (the writer keeps retrying those records).
        crate::metrics::call_finished(&record.disposition, &record.channel);
        if let Err(e) = self.tx.send(Msg::Record(Box::new(record))).await {
            if let Msg::Record(r) = e.0 {
                // Only if the writer thread died; say so with the record itself.
                tracing::error!(record = ?r, "call record NOT stored: writer stopped");
            }
        }
    }

    /// Hands a queue-log line to the writer without waiting: callable from the ACD task and
    /// from synchronous code. When the writer is that far behind, the event goes to the log
    /// in full with an alarm, so that it can still be recovered from there.
    pub fn event(&self, ev: QueueEvent) {
        if let Err(e) = self.tx.try_send(Msg::Event(Box::new(ev))) {
            let why = match e {
                TrySendError::Full(_) => "the record writer is behind (queue full)",
                TrySendError::Closed(_) => "the record writer stopped",
            };
            if let Msg::Event(ev) = e.into_inner() {
                tracing::error!(event = ?ev, "ALARM: queue event NOT stored: {why}");
            }
        }
    }

    /// Waits until every record and event handed over so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut records = Vec::with_capacity(BATCH);
    let mut events = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => records.push(*r),
                Msg::Event(e) => events.push(*e),
                Msg::Flush(done) => flushes.push(done),
            }
            if records.len() + events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut delay = Duration::from_millis(100);
        while !records.is_empty() || !events.is_empty() {
            match store.record_batch(&records, &events) {
                Ok(()) => {
                    records.clear();
                    events.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, records = records.len(), events = events.len(),
                        retry_ms = delay.as_millis() as u64,
                        "ALARM: call records and queue events cannot be stored; keeping them and retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use verde_store::StoreError;

    /// Fails its first writes, then stores: the writer must retry, not drop.
    struct Flaky {
        failures_left: AtomicUsize,
        stored: Mutex<Vec<String>>,
        events: Mutex<Vec<QueueEvent>>,
        batches: AtomicUsize,
    }

    impl Flaky {
        fn new(failures: usize) -> Arc<Flaky> {
            Arc::new(Flaky {
                failures_left: AtomicUsize::new(failures),
                stored: Mutex::new(vec![]),
                events: Mutex::new(vec![]),
                batches: AtomicUsize::new(0),
            })
        }
    }

    impl Store for Flaky {
        fn record_batch(
            &self,
            records: &[CallRecord],
            events: &[QueueEvent],
        ) -> Result<(), StoreError> {
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
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

    #[tokio::test]
    async fn records_survive_store_failures_in_order() {
        let flaky = Flaky::new(2);
        let (records, _handle) = Records::start(flaky.clone());
        for i in 0..100 {
            records
                .write(CallRecord {
                    call_id: format!("c{i}"),
                    ..Default::default()
                })
                .await;
        }
        records.flush().await;
        let stored = flaky.stored.lock().unwrap().clone();
        let expected: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        assert_eq!(stored, expected);
    }

    #[tokio::test]
    async fn events_and_records_share_the_writer_and_survive_failures() {
        let flaky = Flaky::new(3);
        let (records, _handle) = Records::start(flaky.clone());
        for i in 0..1000 {
            records.event(event(i));
            if i % 10 == 9 {
                records
                    .write(CallRecord {
                        call_id: format!("c{i}"),
                        ..Default::default()
                    })
                    .await;
            }
        }
        records.flush().await;
        let events = flaky.events.lock().unwrap().clone();
        assert_eq!(events, (0..1000).map(event).collect::<Vec<_>>());
        let stored = flaky.stored.lock().unwrap().clone();
        let expected: Vec<String> = (0..100).map(|i| format!("c{}", i * 10 + 9)).collect();
        assert_eq!(stored, expected);
        // Batched: far fewer commits than the 1,100 items handed over.
        let batches = flaky.batches.load(Ordering::SeqCst);
        assert!(batches < 1100, "{batches} commits");
    }

    #[test]
    fn an_event_never_waits_for_a_full_writer() {
        /// Blocks in the store until the gate opens, so the writer is busy and the channel fills.
        struct Stuck {
            gate: Mutex<()>,
            entered: std::sync::atomic::AtomicBool,
            inner: Arc<Flaky>,
        }
        impl Store for Stuck {
            fn record_batch(
                &self,
                records: &[CallRecord],
                events: &[QueueEvent],
            ) -> Result<(), StoreError> {
                self.entered.store(true, Ordering::SeqCst);
                let _wait = self.gate.lock().unwrap();
                self.inner.record_batch(records, events)
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
        let inner = Flaky::new(0);
        let stuck = Arc::new(Stuck {
            gate: Mutex::new(()),
            entered: false.into(),
            inner: inner.clone(),
        });
        let gate = stuck.gate.lock().unwrap();
        let (records, _handle) = Records::start_with(stuck.clone(), 4);
        records.event(event(0));
        let waiting = std::time::Instant::now();
        while !stuck.entered.load(Ordering::SeqCst) {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "the writer never reached the store"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The writer holds event 0 inside the store: four more fill the channel and the rest
        // must come back at once (logged with an alarm, not stored), not wait for the gate.
        for i in 1..50 {
            records.event(event(i));
        }
        drop(gate);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(records.flush());
        let stored = inner.events.lock().unwrap().clone();
        assert_eq!(stored, (0..5).map(event).collect::<Vec<_>>());
    }
}
