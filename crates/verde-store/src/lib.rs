//! Storage for verde.
//!
//! The [`Store`] trait is the only way the engine reads or writes durable data, so that the
//! embedded SQLite implementation here can be joined by a database server implementation
//! (PostgreSQL) without touching the call path. This crate knows nothing of SIP, media, the IVR
//! or the ACD: it stores plain records the engine hands it.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a committed record survives a crash of the
//! process (the WAL is written before the commit returns); only a power loss may lose the last
//! transactions, which is the usual trade-off for an embedded store.

mod sqlite;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use sqlite::SqliteStore;

/// What went wrong in the store; the message names the database file where it helps.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: bad record data: {0}")]
    Data(#[from] serde_json::Error),
}

/// One call as the engine saw it, written once when the call ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    /// Caller number (ANI) as received from the trunk.
    pub caller: String,
    /// Called number (DID).
    pub did: String,
    /// Trunk name the call arrived on.
    pub trunk: String,
    /// Channel: `pstn` for SIP trunks (later `webrtc`).
    pub channel: String,
    /// RFC 3339 instants.
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: String,
    /// answered-ivr, rejected, cancelled, abandoned-ivr, transferred, queue-unavailable, ...
    pub disposition: String,
    /// `caller`, `engine` or `timeout`.
    pub hangup_by: String,
    /// The final SIP status when the call was refused or failed (e.g. 488), else None.
    pub sip_status: Option<u16>,
    pub language: Option<String>,
    /// IVR nodes visited, in order.
    pub path: Vec<String>,
    pub variables: BTreeMap<String, String>,
    /// Menu choices as `node=digit`.
    pub choices: Vec<String>,
    /// Every digit received, in order, whatever its source.
    pub dtmf: String,
    /// The IVR's last word on the call (e.g. `queue:pensions`, `hangup:closed`).
    pub outcome: Option<String>,
}

/// The engine's durable storage.
pub trait Store: Send + Sync {
    fn record_call(&self, record: &CallRecord) -> Result<(), StoreError> {
        self.record_calls(std::slice::from_ref(record))
    }
    /// Writes several records atomically: all of them or none.
    fn record_calls(&self, records: &[CallRecord]) -> Result<(), StoreError>;
    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Most recent first.
    fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError>;
}
