//! The journal of active dialogs, and the start-up sweep that ends the calls a crash left up.
//!
//! When the caller is answered, and when a leg verde placed (an agent's phone, an outside
//! number) answers, the call task hands the dialog's state (what a BYE needs: Call-ID, tags,
//! URIs, route set, CSeq, where requests went) and the facts of its call record to [`opened`].
//! When the call's record has been handed to the record writer, [`call_closed`] removes every
//! side of the call; a leg that ends earlier goes with [`leg_closed`]. None of this waits: the
//! changes go through a bounded channel to one writer thread, which commits whatever has queued
//! up in one transaction. A call thus costs one journal write when answered (one more per
//! answered leg) and one when it ends, both off the call task.
//!
//! The removal of an ended call is committed only after the record writer has stored everything
//! handed to it before (a `Records::flush`), so a crash can never lose both the call record
//! and the journal entry that stands for it.
//!
//! At start-up, before serving, [`recover`] reads what a crash left in the journal: a call
//! whose record was stored had ended and needs nothing; any other gets a record with
//! disposition `interrupted` (hangup by `engine`, ending at the restart) and a BYE towards each
//! of its sides, sent by [`send_byes`] once the SIP task runs. UDP BYEs go through the
//! transaction layer (retransmitted until answered); over TCP the connection the peer had
//! opened died with the process, so a new one is tried towards the peer and its Contact.

use crate::call::CallInput;
use crate::records::Records;
use crate::sip_core::{Engine, SipCmd};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verde_sip::{Dialog, DialogState, Message, Method, Peer, Request, Transport};
use verde_store::{ActiveDialog, CallRecord, DialogChange, DialogJournal, Store};

/// Changes waiting for the writer; a full queue drops the change with an alarm rather than
/// hold up a call.
const QUEUE: usize = 16_384;
const BATCH: usize = 512;
/// CSeq numbers a BYE after a restart skips: requests sent after the entry was written (a
/// REFER, a NOTIFY) used some, and a BYE must not go backwards; a gap is no error for the
/// receiver (RFC 3261 12.2.2).
pub const CSEQ_GAP: u32 = 100;
/// How long a BYE over a new TCP connection may take to connect, and then to be answered.
const TCP_CONNECT: Duration = Duration::from_secs(2);
const TCP_ANSWER: Duration = Duration::from_secs(4);
/// How long a stop waits for the journal to be written.
const FLUSH_AT_STOP: Duration = Duration::from_secs(5);
/// How long the sweep listens for the answers to its UDP BYEs (Timer F is 32 s).
const UDP_ANSWER: Duration = Duration::from_secs(34);

static JOURNAL: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Change(DialogChange),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Starts the journal's writer thread. `records` is the record writer whose records must be
/// stored before an ended call leaves the journal. Call once, from inside the runtime.
pub fn start(
    store: Arc<dyn DialogJournal>,
    records: Records,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let (tx, handle) = spawn_writer(store, records)?;
    JOURNAL
        .set(tx)
        .map_err(|_| anyhow::anyhow!("the dialog journal is already started"))?;
    Ok(handle)
}

fn spawn_writer(
    store: Arc<dyn DialogJournal>,
    records: Records,
) -> std::io::Result<(SyncSender<Msg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let rt = tokio::runtime::Handle::current();
    let handle = std::thread::Builder::new()
        .name("verde-dialogs".into())
        .spawn(move || writer(store, records, rt, rx))?;
    Ok((tx, handle))
}

fn send(change: DialogChange) {
    let Some(tx) = JOURNAL.get() else { return };
    if let Err(e) = tx.try_send(Msg::Change(change)) {
        let (why, msg) = match e {
            TrySendError::Full(m) => ("the journal writer is behind (queue full)", m),
            TrySendError::Disconnected(m) => ("the journal writer stopped", m),
        };
        if let Msg::Change(c) = msg {
            // Only a crash in this very window would need it: the call itself goes on.
            tracing::error!(change = ?c, "ALARM: dialog journal entry NOT stored: {why}");
        }
    }
}

/// A side of a call was answered: journal it (replacing an earlier entry of the same dialog).
pub fn opened(dialog: ActiveDialog) {
    send(DialogChange::Opened(Box::new(dialog)));
}

/// A leg ended while its call goes on.
pub fn leg_closed(sip_call_id: &str) {
    send(DialogChange::LegClosed {
        sip_call_id: sip_call_id.to_string(),
    });
}

/// The call ended and its record has been handed to the record writer.
pub fn call_closed(call_id: &str) {
    send(DialogChange::CallClosed {
        call_id: call_id.to_string(),
    });
}

/// Waits until every change handed over so far is committed (at shutdown, so that a clean stop
/// leaves an empty journal), at most [`FLUSH_AT_STOP`]: with the store failing the entries stay,
/// and the next start sweeps them (finding the calls' records, once the spool is replayed).
pub async fn flush() {
    let Some(tx) = JOURNAL.get() else { return };
    let (done, wait) = tokio::sync::oneshot::channel();
    let tx = tx.clone();
    let flushed = async move {
        // The queue may be full: wait for room off the runtime's threads.
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Flush(done)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = wait.await;
        }
    };
    if tokio::time::timeout(FLUSH_AT_STOP, flushed).await.is_err() {
        tracing::warn!(
            wait_s = FLUSH_AT_STOP.as_secs(),
            "dialog journal not flushed at stop; the next start will sweep what is left"
        );
    }
}

fn writer(
    store: Arc<dyn DialogJournal>,
    records: Records,
    rt: tokio::runtime::Handle,
    rx: Receiver<Msg>,
) {
    let mut changes = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Change(c) => changes.push(c),
                Msg::Flush(done) => flushes.push(done),
            }
            if changes.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if changes
            .iter()
            .any(|c| matches!(c, DialogChange::CallClosed { .. }))
        {
            // The records of these calls were handed over before their removal: once they
            // are stored, the journal may forget the calls.
            rt.block_on(records.flush());
        }
        let mut delay = Duration::from_millis(100);
        // One alarm per outage (and a reminder a minute), not one per retry.
        let mut failing_since: Option<std::time::Instant> = None;
        let mut reminded = std::time::Instant::now();
        while !changes.is_empty() {
            match store.journal_dialogs(&changes) {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        tracing::warn!(
                            outage_s = since.elapsed().as_secs(),
                            changes = changes.len(),
                            "ALARM cleared: the dialog journal is written again"
                        );
                    }
                    for c in changes.drain(..) {
                        if let DialogChange::Opened(d) = c {
                            tracing::debug!(call_id = %d.call_id, leg = %d.leg, "dialog journaled");
                        }
                    }
                }
                Err(e) => {
                    if failing_since.is_none() || reminded.elapsed() >= Duration::from_secs(60) {
                        tracing::error!(error = %e, changes = changes.len(),
                            "ALARM: the dialog journal cannot be written; keeping the changes and retrying");
                        reminded = std::time::Instant::now();
                    }
                    failing_since.get_or_insert_with(std::time::Instant::now);
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

/// What the journal needs to know of a call, besides its dialogs.
pub struct CallFacts<'a> {
    pub call_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub did: &'a str,
    pub caller: &'a str,
    pub trunk: &'a str,
    pub channel: &'a str,
}

/// The journal entry of one answered side: `leg` is `caller`, `agent:<id>` or `number:<n>`,
/// `peer` where in-dialog requests of this side are sent.
pub fn entry(
    call: &CallFacts<'_>,
    leg: &str,
    dialog: &Dialog,
    peer: Peer,
    answered_at: DateTime<Utc>,
) -> ActiveDialog {
    let s = dialog.state();
    ActiveDialog {
        call_id: call.call_id.to_string(),
        leg: leg.to_string(),
        sip_call_id: s.call_id,
        local_tag: s.local_tag,
        remote_tag: s.remote_tag,
        local_uri: s.local_uri,
        remote_uri: s.remote_uri,
        remote_target: s.remote_target,
        route_set: s.route_set,
        local_contact: s.local_contact,
        via_transport: s.via_transport,
        via_sent_by: s.via_sent_by,
        local_cseq: s.local_cseq,
        transport: peer.transport.as_str().to_ascii_lowercase(),
        peer: peer.addr.to_string(),
        started_at: call.started_at.to_rfc3339(),
        answered_at: answered_at.to_rfc3339(),
        did: call.did.to_string(),
        caller: call.caller.to_string(),
        trunk: call.trunk.to_string(),
        channel: call.channel.to_string(),
    }
}

/// The BYE that ends a journaled dialog, and where it goes; None when the entry names no
/// usable peer (logged).
pub fn bye_for(d: &ActiveDialog) -> Option<(Request, Peer)> {
    let transport = match d.transport.as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        // Stream transports: the BYE goes out only if the peer has connected again (verde
        // opens no connections of its own), as for TCP.
        "tls" => Transport::Tls,
        other => {
            tracing::warn!(call_id = %d.call_id, leg = %d.leg, transport = other,
                "journaled dialog has an unknown transport; no BYE");
            return None;
        }
    };
    let Ok(addr) = d.peer.parse::<SocketAddr>() else {
        tracing::warn!(call_id = %d.call_id, leg = %d.leg, peer = %d.peer,
            "journaled dialog has no usable peer address; no BYE");
        return None;
    };
    // The CSeq moves on: a REFER or NOTIFY may have used numbers after the row was written.
    let mut state = state_of(d);
    state.local_cseq = d.local_cseq.saturating_add(CSEQ_GAP);
    let mut dialog = Dialog::from_state(state);
    let bye = dialog
        .request(Method::Bye)
        // RFC 3326: why the call ends, for the peer's own records (Q.850 41, temporary failure).
        .with_header("Reason", "Q.850;cause=41;text=\"verde restarted\"");
    Some((bye, Peer { transport, addr }))
}

/// The record of a call the crash interrupted, from its journaled sides.
fn interrupted_record(sides: &[&ActiveDialog], ended_at: DateTime<Utc>) -> CallRecord {
    let facts = sides
        .iter()
        .find(|d| d.leg == "caller")
        .unwrap_or(&sides[0]);
    let mut variables = BTreeMap::new();
    if let Some(agent) = sides.iter().find_map(|d| d.leg.strip_prefix("agent:")) {
        variables.insert("agent".to_string(), agent.to_string());
    }
    CallRecord {
        call_id: facts.call_id.clone(),
        caller: facts.caller.clone(),
        did: facts.did.clone(),
        trunk: facts.trunk.clone(),
        channel: facts.channel.clone(),
        started_at: facts.started_at.clone(),
        answered_at: sides
            .iter()
            .find(|d| d.leg == "caller")
            .map(|d| d.answered_at.clone()),
        ended_at: ended_at.to_rfc3339(),
        disposition: "interrupted".into(),
        hangup_by: "engine".into(),
        variables,
        ..Default::default()
    }
}

/// One BYE the sweep sends.
pub struct Bye {
    pub call_id: String,
    pub leg: String,
    pub request: Request,
    pub peer: Peer,
    /// Over TCP: where else to try a new connection (the dialog's Contact or first Route).
    pub fallback: Option<Peer>,
}

/// What a crash left: records the interrupted calls whose record is missing, forgets every
/// journal entry, and returns the BYEs for the calls that were still up. To be called before
/// the SIP task starts (nothing is journaled yet) and before serving.
pub fn recover(
    journal: &dyn DialogJournal,
    calls: &dyn Store,
    now: DateTime<Utc>,
) -> Result<Vec<Bye>, verde_store::StoreError> {
    let left = journal.active_dialogs()?;
    if left.is_empty() {
        return Ok(Vec::new());
    }
    let mut by_call: BTreeMap<&str, Vec<&ActiveDialog>> = BTreeMap::new();
    for d in &left {
        by_call.entry(d.call_id.as_str()).or_default().push(d);
    }
    let mut records = Vec::new();
    let mut byes = Vec::new();
    for (call_id, sides) in by_call {
        if calls.call(call_id)?.is_some() {
            // The call ended and was recorded; only its removal from the journal was lost.
            continue;
        }
        records.push(interrupted_record(&sides, now));
        for d in sides {
            if let Some((request, peer)) = bye_for(d) {
                let fallback = (peer.transport == Transport::Tcp)
                    .then(|| Dialog::from_state(state_of(d)).remote_target_peer(Transport::Tcp))
                    .flatten()
                    .filter(|p| *p != peer);
                byes.push(Bye {
                    call_id: d.call_id.clone(),
                    leg: d.leg.clone(),
                    request,
                    peer,
                    fallback,
                });
            }
        }
    }
    // Records first: a crash before the journal is cleared only repeats the sweep, which then
    // finds the records and adds none.
    calls.record_calls(&records)?;
    let ids: Vec<String> = left.iter().map(|d| d.sip_call_id.clone()).collect();
    journal.forget_dialogs(&ids)?;
    tracing::warn!(
        calls = records.len(),
        dialogs = left.len(),
        byes = byes.len(),
        "calls interrupted by the last stop recorded; ending them towards their peers"
    );
    Ok(byes)
}

fn state_of(d: &ActiveDialog) -> DialogState {
    DialogState {
        call_id: d.sip_call_id.clone(),
        local_tag: d.local_tag.clone(),
        remote_tag: d.remote_tag.clone(),
        local_uri: d.local_uri.clone(),
        remote_uri: d.remote_uri.clone(),
        remote_target: d.remote_target.clone(),
        route_set: d.route_set.clone(),
        local_contact: d.local_contact.clone(),
        via_transport: d.via_transport.clone(),
        via_sent_by: d.via_sent_by.clone(),
        local_cseq: d.local_cseq,
        last_invite_cseq: d.local_cseq,
        remote_cseq: 0,
    }
}

/// Sends the sweep's BYEs (the SIP task must be running) and logs how each was answered; does
/// not wait for the answers.
pub async fn send_byes(engine: &Arc<Engine>, byes: Vec<Bye>) {
    let (udp, tcp): (Vec<Bye>, Vec<Bye>) = byes
        .into_iter()
        .partition(|b| b.peer.transport == Transport::Udp);
    for bye in tcp {
        tokio::spawn(bye_over_new_tcp(bye));
    }
    if udp.is_empty() {
        return;
    }
    // The answers come back through the SIP task to a handle of ours, registered under each
    // BYE's Call-ID as a call's legs are.
    let (handle, mut inbox) = tokio::sync::mpsc::channel(udp.len() + 8);
    let mut waiting: BTreeMap<String, (String, String, Peer)> = BTreeMap::new();
    for b in udp {
        let sip_call_id = b.request.call_id().unwrap_or_default().to_string();
        engine.register_alias(&sip_call_id, handle.clone());
        tracing::info!(call_id = %b.call_id, leg = %b.leg, peer = %b.peer.addr, transport = "udp",
            "BYE sent after restart");
        waiting.insert(sip_call_id.clone(), (b.call_id, b.leg, b.peer));
        let cmd = SipCmd::Request {
            call_id: sip_call_id,
            request: b.request,
            to: b.peer,
        };
        if engine.sip().send(cmd).await.is_err() {
            return;
        }
    }
    drop(handle);
    let engine = engine.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + UDP_ANSWER;
        while !waiting.is_empty() {
            let input = match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(input)) => input,
                _ => break,
            };
            let (sip_call_id, status) = match &input {
                CallInput::Response { response, .. } if response.status >= 200 => (
                    response.call_id().unwrap_or_default().to_string(),
                    Some(response.status),
                ),
                CallInput::Timeout { .. } => {
                    // Timer F fired for one of them; which one is told by what is left.
                    continue;
                }
                _ => continue,
            };
            if let Some((call_id, leg, peer)) = waiting.remove(&sip_call_id) {
                tracing::info!(%call_id, %leg, peer = %peer.addr, status,
                    "BYE after restart answered");
                let _ = engine
                    .sip()
                    .send(SipCmd::CallEnded {
                        call_id: sip_call_id,
                        invite_tx: None,
                    })
                    .await;
            }
        }
        for (sip_call_id, (call_id, leg, peer)) in waiting {
            tracing::warn!(%call_id, %leg, peer = %peer.addr,
                "BYE after restart never answered; the peer may still think the call is up");
            let _ = engine
                .sip()
                .send(SipCmd::CallEnded {
                    call_id: sip_call_id,
                    invite_tx: None,
                })
                .await;
        }
    });
}

/// A BYE over TCP: the peer's connection died with the old process, so a new one is opened,
/// to the address requests went to and then to the dialog's Contact (where a phone or trunk
/// that listens for TCP takes new connections).
async fn bye_over_new_tcp(bye: Bye) {
    let bytes = bye.request.to_bytes();
    for peer in std::iter::once(bye.peer).chain(bye.fallback) {
        match tcp_exchange(peer.addr, &bytes).await {
            Ok(status) => {
                tracing::info!(call_id = %bye.call_id, leg = %bye.leg, peer = %peer.addr,
                    transport = "tcp", status, "BYE after restart answered");
                return;
            }
            Err(e) => tracing::debug!(call_id = %bye.call_id, leg = %bye.leg, peer = %peer.addr,
                error = %e, "BYE after restart over TCP failed"),
        }
    }
    tracing::warn!(call_id = %bye.call_id, leg = %bye.leg, peer = %bye.peer.addr,
        "BYE after restart could not be delivered over TCP; the peer may still think the call is up");
}

async fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<u16> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
    let mut stream = tokio::time::timeout(TCP_CONNECT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    stream.write_all(bytes).await?;
    let deadline = tokio::time::Instant::now() + TCP_ANSWER;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| timed_out())??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        // Provisional answers, keep-alives and the peer's own requests are skipped.
        loop {
            let frame = verde_sip::frame(&buf, 65_535)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let len = match frame {
                verde_sip::Frame::NeedMore => break,
                verde_sip::Frame::KeepAlive { len } => len,
                verde_sip::Frame::Message { len } => {
                    if let Ok(Message::Response(r)) = Message::parse(&buf[..len]) {
                        if r.status >= 200 {
                            return Ok(r.status);
                        }
                    }
                    len
                }
            };
            buf.drain(..len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A store that is slow to write records and logs, in order, what reaches the disk.
    struct Slow {
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Store for Slow {
        fn record_batch(
            &self,
            records: &[CallRecord],
            _: &[verde_store::QueueEvent],
        ) -> Result<(), verde_store::StoreError> {
            std::thread::sleep(Duration::from_millis(150));
            let mut log = self.log.lock().unwrap();
            log.extend(records.iter().map(|r| format!("record {}", r.call_id)));
            Ok(())
        }
        fn call(&self, _: &str) -> Result<Option<CallRecord>, verde_store::StoreError> {
            Ok(None)
        }
        fn recent_calls(&self, _: usize) -> Result<Vec<CallRecord>, verde_store::StoreError> {
            Ok(vec![])
        }
        fn calls_between(
            &self,
            _: i64,
            _: i64,
        ) -> Result<Vec<CallRecord>, verde_store::StoreError> {
            Ok(vec![])
        }
        fn queue_events(
            &self,
            _: i64,
            _: i64,
        ) -> Result<Vec<verde_store::QueueEvent>, verde_store::StoreError> {
            Ok(vec![])
        }
    }

    impl DialogJournal for Slow {
        fn journal_dialogs(&self, changes: &[DialogChange]) -> Result<(), verde_store::StoreError> {
            let mut log = self.log.lock().unwrap();
            for c in changes {
                log.push(match c {
                    DialogChange::Opened(d) => format!("open {}", d.sip_call_id),
                    DialogChange::LegClosed { sip_call_id } => format!("leg {sip_call_id}"),
                    DialogChange::CallClosed { call_id } => format!("close {call_id}"),
                });
            }
            Ok(())
        }
        fn active_dialogs(&self) -> Result<Vec<ActiveDialog>, verde_store::StoreError> {
            Ok(vec![])
        }
        fn forget_dialogs(&self, _: &[String]) -> Result<(), verde_store::StoreError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_call_leaves_the_journal_only_after_its_record_is_stored() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let slow = Arc::new(Slow { log: log.clone() });
        let (records, _) = Records::start(slow.clone());
        let (journal, _) = spawn_writer(slow, records.clone()).unwrap();
        let change = |c| journal.try_send(Msg::Change(c)).ok().unwrap();
        change(DialogChange::Opened(Box::new(ActiveDialog {
            call_id: "c1".into(),
            sip_call_id: "c1".into(),
            ..Default::default()
        })));
        records
            .write(CallRecord {
                call_id: "c1".into(),
                ..Default::default()
            })
            .await;
        change(DialogChange::CallClosed {
            call_id: "c1".into(),
        });
        let (done, wait) = tokio::sync::oneshot::channel();
        journal.try_send(Msg::Flush(done)).ok().unwrap();
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("journal flushed")
            .unwrap();
        // The entry may be committed before or with the record (one batch); its removal only
        // after it.
        let log = log.lock().unwrap().clone();
        let at = |what: &str| log.iter().position(|l| l == what);
        assert!(at("open c1").is_some(), "{log:?}");
        assert!(
            at("record c1") < at("close c1") && at("record c1").is_some(),
            "{log:?}"
        );
    }

    const INVITE: &str = "INVITE sip:803164@10.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-1\r\n\
        Record-Route: <sip:10.9.9.9;lr>\r\n\
        Record-Route: <sip:10.9.9.8:5070;lr>\r\n\
        From: \"0612\" <sip:0612@10.1.2.3>;tag=callertag\r\n\
        To: <sip:803164@10.0.0.1>\r\n\
        Call-ID: crash-1@10.1.2.3\r\n\
        CSeq: 7 INVITE\r\n\
        Contact: <sip:0612@10.1.2.3:5061>\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match Message::parse(INVITE.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn facts() -> CallFacts<'static> {
        CallFacts {
            call_id: "crash-1@10.1.2.3",
            started_at: "2026-11-27T10:00:00Z".parse().unwrap(),
            did: "803164",
            caller: "0612",
            trunk: "carrier",
            channel: "pstn",
        }
    }

    fn caller_entry() -> (Dialog, ActiveDialog) {
        let mut d = Dialog::uas(&invite(), "verdetag", "<sip:verde@10.0.0.1:5060>").unwrap();
        // A REFER went out after the answer: the journaled CSeq is the one before it.
        let entry = entry(
            &facts(),
            "caller",
            &d,
            d.remote_target_peer(Transport::Udp).unwrap(),
            "2026-11-27T10:00:01Z".parse().unwrap(),
        );
        let _ = d.request(Method::Refer);
        (d, entry)
    }

    #[test]
    fn the_bye_after_a_restart_is_the_one_the_call_would_have_sent_with_a_later_cseq() {
        let (mut live, entry) = caller_entry();
        let (bye, peer) = bye_for(&entry).unwrap();
        let would = live.request(Method::Bye);
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(
            bye.uri, "sip:0612@10.1.2.3:5061",
            "loose routing keeps the target"
        );
        assert_eq!(bye.call_id(), Some("crash-1@10.1.2.3"));
        // Our tag is From now, the caller's To: the INVITE's roles swapped.
        assert_eq!(bye.from_tag(), Some("verdetag"));
        assert_eq!(bye.to_tag(), Some("callertag"));
        assert_eq!(bye.headers.get("From"), would.headers.get("From"));
        assert_eq!(bye.headers.get("To"), would.headers.get("To"));
        assert!(bye.headers.get("To").unwrap().contains("sip:0612@10.1.2.3"));
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:10.9.9.9;lr>", "<sip:10.9.9.8:5070;lr>"]
        );
        let (n, m) = bye.cseq().unwrap();
        let (live_n, _) = would.cseq().unwrap();
        assert_eq!(m, Method::Bye);
        assert_eq!(n, entry.local_cseq + CSEQ_GAP + 1);
        assert!(
            n > live_n,
            "CSeq {n} must pass what the call used ({live_n})"
        );
        assert!(bye
            .headers
            .get("Reason")
            .unwrap()
            .starts_with("Q.850;cause=41"));
        // The next hop is the first route, as the live call would have used.
        assert_eq!(
            peer,
            Peer {
                transport: Transport::Udp,
                addr: "10.9.9.9:5060".parse().unwrap()
            }
        );
        // It is acceptable to the transaction layer as is.
        let mut ep = verde_sip::Endpoint::new(verde_sip::Config::default());
        assert!(ep
            .send_request(bye, peer, std::time::Instant::now())
            .is_ok());
    }

    #[test]
    fn an_agent_leg_bye_continues_our_invite_cseq() {
        let out = verde_sip::OutboundInvite {
            target: "sip:1001@10.2.0.5:5062",
            from: "\"0612\" <sip:0612@10.0.0.1>",
            to: "<sip:1001@10.0.0.1>",
            local_contact: "<sip:verde@10.0.0.1:5060;transport=tcp>",
            transport: Transport::Tcp,
        }
        .build();
        let ok = out
            .response(200, "OK")
            .with_to_tag("agenttag")
            .with_header("Contact", "<sip:1001@10.2.0.5:5062;transport=tcp>");
        let d = Dialog::uac(&out, &ok).unwrap();
        let source = Peer {
            transport: Transport::Tcp,
            addr: "10.2.0.5:40123".parse().unwrap(),
        };
        let e = entry(&facts(), "agent:1001", &d, source, Utc::now());
        let (bye, peer) = bye_for(&e).unwrap();
        assert_eq!(peer, source);
        assert_eq!(bye.cseq(), Some((1 + CSEQ_GAP + 1, Method::Bye)));
        assert_eq!(bye.from_tag(), out.from_tag());
        assert_eq!(bye.to_tag(), Some("agenttag"));
        assert_eq!(bye.uri, "sip:1001@10.2.0.5:5062;transport=tcp");
        assert_eq!(bye.top_via().unwrap().transport, "TCP");
        assert_eq!(bye.headers.get_all("Route").count(), 0);
    }

    #[test]
    fn an_entry_without_a_usable_peer_gets_no_bye() {
        let (_, mut e) = caller_entry();
        e.peer = "phone.example:5060".into();
        assert!(bye_for(&e).is_none());
        let (_, mut e) = caller_entry();
        e.transport = "sctp".into();
        assert!(bye_for(&e).is_none());
    }

    #[test]
    fn the_sweep_records_only_calls_without_a_record_and_empties_the_journal() {
        let store = verde_store::SqliteStore::open_in_memory().unwrap();
        let (_, caller) = caller_entry();
        let agent = ActiveDialog {
            leg: "agent:1001".into(),
            sip_call_id: "leg-1@10.0.0.1".into(),
            peer: "10.2.0.5:5062".into(),
            answered_at: "2026-11-27T10:00:30Z".into(),
            ..caller.clone()
        };
        // A call that ended and was recorded, whose removal from the journal was lost.
        let done = ActiveDialog {
            call_id: "done@x".into(),
            sip_call_id: "done@x".into(),
            ..caller.clone()
        };
        let kept = CallRecord {
            call_id: "done@x".into(),
            disposition: "answered-agent".into(),
            started_at: "2026-11-27T09:00:00Z".into(),
            ..Default::default()
        };
        store.record_call(&kept).unwrap();
        store
            .journal_dialogs(&[
                DialogChange::Opened(Box::new(caller.clone())),
                DialogChange::Opened(Box::new(agent.clone())),
                DialogChange::Opened(Box::new(done)),
            ])
            .unwrap();
        let now: DateTime<Utc> = "2026-11-27T10:05:00Z".parse().unwrap();
        let byes = recover(&store, &store, now).unwrap();

        let mut legs: Vec<_> = byes
            .iter()
            .map(|b| (b.call_id.as_str(), b.leg.as_str()))
            .collect();
        legs.sort();
        assert_eq!(
            legs,
            [
                ("crash-1@10.1.2.3", "agent:1001"),
                ("crash-1@10.1.2.3", "caller")
            ]
        );
        let to_agent = byes.iter().find(|b| b.leg == "agent:1001").unwrap();
        assert_eq!(to_agent.request.call_id(), Some("leg-1@10.0.0.1"));
        assert_eq!(
            to_agent.peer.addr,
            "10.2.0.5:5062".parse::<SocketAddr>().unwrap()
        );

        let r = store.call("crash-1@10.1.2.3").unwrap().unwrap();
        assert_eq!(
            (r.disposition.as_str(), r.hangup_by.as_str()),
            ("interrupted", "engine")
        );
        assert_eq!((r.caller.as_str(), r.did.as_str()), ("0612", "803164"));
        assert_eq!((r.trunk.as_str(), r.channel.as_str()), ("carrier", "pstn"));
        assert_eq!(r.started_at, caller.started_at);
        assert_eq!(r.answered_at.as_deref(), Some("2026-11-27T10:00:01+00:00"));
        assert_eq!(r.ended_at, now.to_rfc3339());
        assert_eq!(r.variables.get("agent").map(String::as_str), Some("1001"));
        assert_eq!(store.call("done@x").unwrap(), Some(kept));
        assert!(store.active_dialogs().unwrap().is_empty());
        // A second sweep finds nothing to do.
        assert!(recover(&store, &store, now).unwrap().is_empty());
        assert_eq!(store.recent_calls(10).unwrap().len(), 2);
    }
}
