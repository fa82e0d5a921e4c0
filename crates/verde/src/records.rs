//! The call-record writer: one thread that owns the store's write side.
//!
//! Call tasks hand finished records to a bounded channel and go on; the writer drains whatever
//! has queued up and writes it in one transaction, so a burst of call ends costs one commit.
//! When the store fails, the batch is kept and retried with an alarm in the log: a record is
//! never dropped silently. A full channel pushes back on the call tasks that are ending, not on
//! live calls.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use verde_store::{CallRecord, Store};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;

#[derive(Clone)]
pub struct Records {
    tx: mpsc::Sender<Msg>,
}

enum Msg {
    Record(Box<CallRecord>),
    /// Answered once everything queued before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Records {
    pub fn start(store: Arc<dyn Store>) -> (Records, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("verde-records".into())
            .spawn(move || writer(store, rx))
            .expect("spawn the record writer thread");
        (Records { tx }, handle)
    }

    pub async fn write(&self, record: CallRecord) {
        if let Err(e) = self.tx.send(Msg::Record(Box::new(record))).await {
            if let Msg::Record(r) = e.0 {
                // Only if the writer thread died; say so with the record itself.
                tracing::error!(record = ?r, "call record NOT stored: writer stopped");
            }
        }
    }

    /// Waits until every record handed over so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match store.record_calls(&batch) {
                Ok(()) => batch.clear(),
                Err(e) => {
                    tracing::error!(error = %e, pending = batch.len(), retry_ms = delay.as_millis() as u64,
                        "ALARM: call records cannot be stored; keeping them and retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
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
    }

    impl Store for Flaky {
        fn record_calls(&self, records: &[CallRecord]) -> Result<(), StoreError> {
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::Data(
                    serde_json::from_str::<u8>("x").unwrap_err(),
                ));
            }
            let mut s = self.stored.lock().unwrap();
            s.extend(records.iter().map(|r| r.call_id.clone()));
            Ok(())
        }
        fn call(&self, _: &str) -> Result<Option<CallRecord>, StoreError> {
            Ok(None)
        }
        fn recent_calls(&self, _: usize) -> Result<Vec<CallRecord>, StoreError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn records_survive_store_failures_in_order() {
        let flaky = Arc::new(Flaky {
            failures_left: AtomicUsize::new(2),
            stored: Mutex::new(vec![]),
        });
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
}
