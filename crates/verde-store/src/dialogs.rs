//! The journal of active dialogs: the sides of calls the engine holds open, written when a side
//! is answered and removed when the call's record is stored, so that after a crash the engine
//! can still end those calls towards their peers and record them.
//!
//! The store keeps the dialog fields as the engine hands them (plain strings) and does not
//! interpret them.

/// The journal's columns in the order both backends bind and read them (`route_set` is the
/// 9th, a JSON array).
pub(crate) const COLUMNS: &str = "sip_call_id, call_id, leg, local_tag, remote_tag, local_uri,
    remote_uri, remote_target, route_set, local_contact, via_transport, via_sent_by, local_cseq,
    transport, peer, started_at, answered_at, did, caller, trunk, channel";

/// One answered side of a call in progress: the caller's dialog or an agent leg's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveDialog {
    /// The call (the caller's Call-ID): the key of its call record.
    pub call_id: String,
    /// `caller`, or `agent:<id>` / `number:<e164>` for a leg verde placed.
    pub leg: String,
    /// The dialog's own Call-ID (the caller's, or the leg's); unique among active dialogs.
    pub sip_call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From in requests, tag included.
    pub local_uri: String,
    /// Our To in requests, tag included.
    pub remote_uri: String,
    pub remote_target: String,
    /// Route entries in request order.
    pub route_set: Vec<String>,
    pub local_contact: String,
    pub via_transport: String,
    pub via_sent_by: String,
    /// The last CSeq number the engine had used when it wrote this entry.
    pub local_cseq: u32,
    /// `udp` or `tcp`, and the `ip:port` in-dialog requests were sent to.
    pub transport: String,
    pub peer: String,
    /// Facts for the call record of a call the crash interrupted (RFC 3339 instants).
    pub started_at: String,
    pub answered_at: String,
    pub did: String,
    pub caller: String,
    pub trunk: String,
    pub channel: String,
}

/// A change to the journal, applied in order with others in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogChange {
    /// A side was answered (a second write for the same `sip_call_id` replaces the first).
    Opened(Box<ActiveDialog>),
    /// One leg ended while its call goes on.
    LegClosed { sip_call_id: String },
    /// The call ended and its record is stored: every side of it goes.
    CallClosed { call_id: String },
}

/// Durable journal of active dialogs. Kept apart from [`crate::Store`] so that the call-record
/// path and its test doubles need not know about it; [`crate::SqliteStore`] implements both.
pub trait DialogJournal: Send + Sync {
    /// Applies the changes atomically, in order, with one commit.
    fn journal_dialogs(&self, changes: &[DialogChange]) -> Result<(), crate::StoreError>;
    /// Every dialog left in the journal, by call then in the order written.
    fn active_dialogs(&self) -> Result<Vec<ActiveDialog>, crate::StoreError>;
    /// Removes these dialogs (by `sip_call_id`), once the start-up sweep has dealt with them.
    fn forget_dialogs(&self, sip_call_ids: &[String]) -> Result<(), crate::StoreError>;
}
