//! The SIP task: UDP, TCP and TLS transports around the sans-IO [`verde_sip::Endpoint`], admission
//! of new calls (trunk ACL, number, capacity, drain) and demultiplexing to call tasks.
//!
//! One task owns the endpoint, so the transaction layer needs no locks; call tasks talk to it
//! through a bounded channel and it talks to them through their handles in a dashmap keyed by
//! Call-ID. Answers that need no call (403, 404, 481, 405, OPTIONS) are given right here.

use crate::acd_task::AcdHandle;
use crate::call::{self, CallInput, CallStart};
use crate::config::Config;
use crate::flows::FlowsHandle;
use crate::rtp_ports::RtpPorts;
use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use verde_ivr::Flow;
use verde_media::PromptCache;
use verde_sip::AuthError;
use verde_sip::{ClientTxId, Endpoint, Event, Frame, Method, Peer, Request, ServerTxId, Transport};

/// What call tasks (and TCP and TLS connections) ask of the SIP task.
pub enum SipCmd {
    Respond {
        tx: ServerTxId,
        response: verde_sip::Response,
    },
    Request {
        call_id: String,
        request: Request,
        to: Peer,
    },
    /// ACK for a 2xx on a leg we originated (sent outside any transaction).
    Ack {
        request: Request,
        to: Peer,
    },
    /// CANCEL the pending INVITE we sent on the leg with this Call-ID.
    CancelInvite {
        call_id: String,
    },
    /// The call (or one of its agent legs) is over: forget its routes. `invite_tx` is the
    /// caller's INVITE transaction, given by the call itself so no table is scanned.
    CallEnded {
        call_id: String,
        invite_tx: Option<ServerTxId>,
    },
    /// A message framed on a stream connection (TCP or TLS: `from.transport` says which).
    TcpIn {
        from: Peer,
        bytes: Bytes,
    },
    TcpOpen {
        peer: Peer,
        writer: mpsc::Sender<Bytes>,
    },
    TcpClosed {
        peer: Peer,
    },
}

/// Shared, read-mostly state of the engine.
pub struct Engine {
    /// The configuration the engine started with; the parts a reload may change live are
    /// held apart (`trunks` here, the accounts in the CTI hub).
    pub cfg: Arc<Config>,
    /// Addresses allowed to send calls to our numbers (`trunks:`), swapped on reload.
    trunks: arc_swap::ArcSwap<Vec<crate::config::Trunk>>,
    pub media_ip: IpAddr,
    pub flows: FlowsHandle,
    pub prompts: Arc<PromptCache>,
    pub records: crate::records::Records,
    pub rtp_ports: RtpPorts,
    pub acd: AcdHandle,
    /// The CTI hub: agents' bars and supervisors' wallboards.
    pub cti: Arc<crate::cti::Hub>,
    /// Callbacks and voicemails (durable).
    pub tasks: Arc<dyn verde_store::TaskStore>,
    /// Each agent's most recent registration, mirrored from the registrar for call tasks.
    pub bindings: DashMap<String, verde_sip::Binding>,
    /// Browser calls and softphones; None when `webrtc.enabled` is off.
    pub webrtc: Option<Arc<crate::web_call::WebRtc>>,
    /// Feature-code flows (agent login/pause/logout confirmations).
    feature_flows: HashMap<&'static str, Arc<Flow>>,
    next_key: AtomicU64,
    calls: DashMap<String, mpsc::Sender<CallInput>>,
    draining: AtomicBool,
    sip_tx: mpsc::Sender<SipCmd>,
    sip_rx: std::sync::Mutex<Option<mpsc::Receiver<SipCmd>>>,
}

impl Engine {
    /// Where an outside number is called (callbacks, transfers): `outbound.uri` with the
    /// number in it, and the address it resolves to; None when unset or unresolvable (logged).
    pub fn outbound_target(&self, number: &str) -> Option<(String, std::net::SocketAddr)> {
        let uri = self.cfg.outbound.uri.as_ref()?.replace("{number}", number);
        match verde_sip::uri_socket_addr(&uri) {
            Some(addr) => Some((uri, addr)),
            None => {
                tracing::error!(%uri, "outbound.uri does not resolve to an address");
                None
            }
        }
    }

    // One argument per shared service the engine wires together; a builder would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<Config>,
        media_ip: IpAddr,
        flows: FlowsHandle,
        prompts: Arc<PromptCache>,
        records: crate::records::Records,
        acd: AcdHandle,
        cti: Arc<crate::cti::Hub>,
        tasks: Arc<dyn verde_store::TaskStore>,
    ) -> anyhow::Result<Self> {
        let (sip_tx, sip_rx) = mpsc::channel(8192);
        let feature_flows = feature_flows(&cfg.sounds)?;
        let webrtc = crate::web_call::WebRtc::new(&cfg, media_ip)?.map(Arc::new);
        Ok(Self {
            webrtc,
            rtp_ports: RtpPorts::new(cfg.media.rtp_ports),
            trunks: arc_swap::ArcSwap::from_pointee(cfg.trunks.clone()),
            cfg,
            media_ip,
            flows,
            prompts,
            records,
            acd,
            cti,
            tasks,
            bindings: DashMap::new(),
            feature_flows,
            next_key: AtomicU64::new(1),
            calls: DashMap::new(),
            draining: AtomicBool::new(false),
            sip_tx,
            sip_rx: std::sync::Mutex::new(Some(sip_rx)),
        })
    }

    /// Whether `ip` is a configured trunk (allocation-free: asked for every packet).
    pub fn is_trunk(&self, ip: IpAddr) -> bool {
        crate::config::trunk_in(&self.trunks.load(), ip).is_some()
    }

    /// The name of the trunk `ip` belongs to, for a new call's record.
    pub fn trunk_name(&self, ip: IpAddr) -> Option<String> {
        crate::config::trunk_in(&self.trunks.load(), ip).map(|t| t.name.clone())
    }

    /// Takes the trunks of a reloaded config: the next packet is judged by them.
    pub fn replace_trunks(&self, trunks: Vec<crate::config::Trunk>) {
        self.trunks.store(Arc::new(trunks));
    }

    /// A key naming a call to the ACD.
    pub fn next_call_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Routes the SIP messages of another Call-ID (an agent leg) to a call's task.
    pub fn register_alias(&self, call_id: &str, handle: mpsc::Sender<CallInput>) {
        self.calls.insert(call_id.to_string(), handle);
    }

    /// Host for the URIs we write (From/To of legs we originate).
    pub fn sip_host(&self) -> String {
        match self.media_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    }

    pub fn sip(&self) -> &mpsc::Sender<SipCmd> {
        &self.sip_tx
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The Contact we give in our dialogs.
    pub fn contact(&self, transport: Transport) -> String {
        let host = match self.media_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let port = self.cfg.sip.listen.port();
        match transport {
            Transport::Tcp => format!("<sip:verde@{host}:{port};transport=tcp>"),
            Transport::Tls => {
                let port = self
                    .cfg
                    .sip
                    .tls
                    .listen
                    .map_or(Transport::Tls.default_port(), |a| a.port());
                format!("<sip:verde@{host}:{port};transport=tls>")
            }
            Transport::Udp => format!("<sip:verde@{host}:{port}>"),
        }
    }

    /// Stops taking calls, waits for calls in progress up to `grace`, then ends the rest.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.calls.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.calls.is_empty() {
            return;
        }
        tracing::warn!(
            calls = self.calls.len(),
            "grace period over: hanging up calls"
        );
        for c in self.calls.iter() {
            let _ = c.value().try_send(CallInput::Shutdown);
        }
        // Give the calls a moment to send their BYEs through the SIP task.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.calls.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Binds the transports and starts the SIP task.
pub async fn start(engine: Arc<Engine>) -> Result<tokio::task::JoinHandle<()>> {
    let listen = engine.cfg.sip.listen;
    let udp = if engine.cfg.sip.udp {
        let s = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot bind SIP UDP {listen}"))?;
        Some(Arc::new(s))
    } else {
        None
    };
    // TCP and TLS connections share one budget: both cost a descriptor and a task.
    let slots = Slots::default();
    if engine.cfg.sip.tcp {
        let l = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot bind SIP TCP {listen}"))?;
        tokio::spawn(accept_loop(l, engine.clone(), slots.clone(), None));
    }
    let tls = &engine.cfg.sip.tls;
    if let (Some(addr), Some(cert), Some(key)) = (tls.listen, &tls.cert, &tls.key) {
        let acceptor = crate::tls::acceptor(cert, key, &[]).context("sip.tls")?;
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind SIP TLS {addr}"))?;
        tracing::info!(listen = %addr, cert = %cert.display(), "SIP over TLS");
        tokio::spawn(accept_loop(l, engine.clone(), slots, Some(acceptor)));
    }
    let rx = engine
        .sip_rx
        .lock()
        .unwrap()
        .take()
        .context("SIP task already started")?;
    let endpoint = Endpoint::new(verde_sip::Config::default());
    let secret: [u8; 32] = match &engine.cfg.sip.auth_secret {
        Some(hex) => {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("validated hex");
            }
            out
        }
        None => rand::random(),
    };
    let sip = &engine.cfg.sip;
    let auth = verde_sip::DigestAuth::new(sip.realm.clone(), secret, sip.nonce_ttl);
    let registrar =
        verde_sip::Registrar::new(sip.min_expires, sip.max_expires, sip.default_expires);
    Ok(tokio::spawn(
        SipTask {
            engine,
            endpoint,
            udp,
            tcp: HashMap::new(),
            client_txs: HashMap::new(),
            invite_txs: HashMap::new(),
            outbound_invites: HashMap::new(),
            accepted_invites: HashMap::new(),
            auth,
            limiter: verde_sip::FailureLimiter::default(),
            flood: verde_sip::FloodGuard::default(),
            malformed_log: (Instant::now(), 0, 0),
            registrar,
        }
        .run(rx),
    ))
}

struct SipTask {
    engine: Arc<Engine>,
    endpoint: Endpoint,
    udp: Option<Arc<UdpSocket>>,
    /// Writers of the open TCP and TLS connections, by transport and peer address.
    tcp: HashMap<Peer, mpsc::Sender<Bytes>>,
    /// Our requests (BYE, REFER...) -> the call that sent them.
    client_txs: HashMap<ClientTxId, String>,
    /// The INVITE server transaction of each call -> its Call-ID (CANCEL, ACK timeout).
    invite_txs: HashMap<ServerTxId, String>,
    /// INVITEs we sent (agent legs), by their Call-ID, for CANCEL, until their final answer.
    outbound_invites: HashMap<String, ClientTxId>,
    /// Our answered INVITEs, by Call-ID: their entries in `client_txs` stay while the leg lives
    /// (a retransmitted 2xx must reach it to be ACKed again) and go with it (CallEnded). The
    /// transaction layer ends them silently at timer M, so nothing else would remove them.
    accepted_invites: HashMap<String, Vec<ClientTxId>>,
    auth: verde_sip::DigestAuth,
    limiter: verde_sip::FailureLimiter,
    /// Per-source rate limits and penalty box, consulted before parsing (trunks exempt).
    flood: verde_sip::FloodGuard,
    /// (this second's start, malformed-message lines logged in it, lines left out since the
    /// last one logged).
    malformed_log: (Instant, u32, u64),
    registrar: verde_sip::Registrar,
}

impl SipTask {
    async fn run(mut self, mut rx: mpsc::Receiver<SipCmd>) {
        let mut buf = vec![0u8; 65_535];
        let udp = self.udp.clone();
        loop {
            let deadline = match (self.endpoint.poll_timeout(), self.registrar.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = async { udp.as_ref().unwrap().recv_from(&mut buf).await }, if udp.is_some() => {
                    match r {
                        Ok((n, from)) => {
                            let now = Instant::now();
                            if self.admit(from.ip(), &buf[..n], now) {
                                let peer = Peer { transport: Transport::Udp, addr: from };
                                crate::metrics::sip_received(&buf[..n]);
                                self.endpoint.handle_bytes(&buf[..n], peer, now);
                            }
                        }
                        // ICMP port unreachable from an earlier send surfaces here on Linux;
                        // it concerns one peer, never the socket.
                        Err(e) => tracing::debug!(error = %e, "udp receive error"),
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                _ = sleep => {
                    let now = Instant::now();
                    self.endpoint.handle_timeout(now);
                    for (user, b) in self.registrar.expire(now) {
                        tracing::info!(%user, contact = %b.contact, "registration expired");
                        self.mirror_binding(&user, now);
                    }
                }
            }
            self.flush().await;
            crate::metrics::sip_tables(self.endpoint.transaction_count(), self.client_txs.len());
        }
    }

    fn command(&mut self, cmd: SipCmd) {
        let now = Instant::now();
        match cmd {
            SipCmd::Respond { tx, response } => {
                let status = response.status;
                if let Err(e) = self.endpoint.send_response(tx, response, now) {
                    // The transaction ended (e.g. the caller cancelled meanwhile): nothing to do.
                    tracing::debug!(error = ?e, status, "response not sent");
                }
            }
            SipCmd::Request {
                call_id,
                request,
                to,
            } => {
                let is_invite = request.method == Method::Invite;
                match self.endpoint.send_request(request, to, now) {
                    Ok(tx) => {
                        if is_invite {
                            self.outbound_invites.insert(call_id.clone(), tx);
                        }
                        self.client_txs.insert(tx, call_id);
                    }
                    Err(e) => tracing::warn!(call_id, error = ?e, "request not sent"),
                }
            }
            SipCmd::Ack { request, to } => self.endpoint.send_ack(&request, to),
            SipCmd::CancelInvite { call_id } => {
                if let Some(tx) = self.outbound_invites.get(&call_id).copied() {
                    if let Err(e) = self.endpoint.cancel(tx, now) {
                        tracing::debug!(call_id, error = ?e, "CANCEL not sent");
                    }
                }
            }
            SipCmd::CallEnded { call_id, invite_tx } => {
                self.engine.calls.remove(&call_id);
                if let Some(tx) = invite_tx {
                    self.invite_txs.remove(&tx);
                }
                self.outbound_invites.remove(&call_id);
                for tx in self.accepted_invites.remove(&call_id).unwrap_or_default() {
                    self.client_txs.remove(&tx);
                }
            }
            SipCmd::TcpIn { from, bytes } => {
                if !self.admit(from.addr.ip(), &bytes, now) {
                    return;
                }
                crate::metrics::sip_received(&bytes);
                self.endpoint.handle_bytes(&bytes, from, now);
            }
            SipCmd::TcpOpen { peer, writer } => {
                self.tcp.insert(peer, writer);
            }
            SipCmd::TcpClosed { peer } => {
                self.tcp.remove(&peer);
            }
        }
    }

    /// Sends what the endpoint has to send, then handles its events, until both are empty
    /// (events may produce answers: 403, 404, 481...).
    async fn flush(&mut self) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                self.transmit(t).await;
            }
            let mut any = false;
            while let Some(ev) = self.endpoint.poll_event() {
                any = true;
                self.event(ev);
            }
            if !any {
                return;
            }
        }
    }

    async fn transmit(&mut self, t: verde_sip::Transmit) {
        match t.to.transport {
            Transport::Udp => {
                if let Some(udp) = &self.udp {
                    match udp.send_to(&t.bytes, t.to.addr).await {
                        Ok(_) => crate::metrics::sip_sent(&t.bytes),
                        Err(e) => tracing::debug!(to = %t.to.addr, error = %e, "udp send failed"),
                    }
                }
            }
            Transport::Tcp | Transport::Tls => match self.tcp.get(&t.to) {
                Some(w) => {
                    // A clone of `Bytes` is a reference count, not a copy.
                    if w.try_send(t.bytes.clone()).is_ok() {
                        crate::metrics::sip_sent(&t.bytes);
                    } else {
                        tracing::warn!(to = %t.to.addr, transport = %t.to.transport,
                            "connection backlogged or closed; message dropped");
                    }
                }
                // We answer and call back on connections the peer opened (a phone registered
                // over TCP or TLS keeps its connection); we open none of our own.
                None => {
                    tracing::warn!(to = %t.to.addr, transport = %t.to.transport,
                        "no connection to peer; message dropped")
                }
            },
        }
    }

    fn deliver(&mut self, call_id: &str, input: CallInput) -> bool {
        match self.engine.calls.get(call_id) {
            Some(h) => {
                match h.try_send(input) {
                    Ok(()) => {}
                    // A call that cannot keep up with its own signalling: UDP retransmission
                    // will offer the request again.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(call_id, "call task backlogged; SIP event dropped")
                    }
                    // The call is ending; late answers (200 to our BYE) need nobody.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::debug!(call_id, "SIP event for a call that has ended")
                    }
                }
                true
            }
            None => false,
        }
    }

    fn event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Request { tx, request, from } => self.request(tx, request, from, now),
            Event::Cancelled { tx } => {
                if let Some(call_id) = self.invite_txs.get(&tx).cloned() {
                    self.deliver(&call_id, CallInput::Cancelled);
                }
            }
            Event::AckTimeout { tx } => {
                if let Some(call_id) = self.invite_txs.get(&tx).cloned() {
                    self.deliver(&call_id, CallInput::AckTimeout);
                }
            }
            Event::Ack { request, .. } => {
                if let Some(call_id) = request.call_id().map(str::to_string) {
                    self.deliver(&call_id, CallInput::Ack);
                }
            }
            Event::Response { tx, response } => {
                if let Some(call_id) = self.client_txs.get(&tx).cloned() {
                    if response.status >= 200 {
                        let invite = self.outbound_invites.get(&call_id) == Some(&tx);
                        if invite {
                            self.outbound_invites.remove(&call_id);
                        }
                        if invite && response.is_success() {
                            // Kept past the 2xx: see `accepted_invites`.
                            self.accepted_invites
                                .entry(call_id.clone())
                                .or_default()
                                .push(tx);
                        } else if !self
                            .accepted_invites
                            .get(&call_id)
                            .is_some_and(|t| t.contains(&tx))
                        {
                            self.client_txs.remove(&tx);
                        }
                    }
                    self.deliver(&call_id, CallInput::Response { tx, response });
                }
            }
            Event::StrayResponse { response, .. } => {
                if let Some(call_id) = response.call_id().map(str::to_string) {
                    if !self.deliver(&call_id, CallInput::StrayResponse { response }) {
                        tracing::debug!(call_id, "stray response for no call");
                    }
                }
            }
            Event::Timeout { tx } => {
                if let Some(call_id) = self.client_txs.remove(&tx) {
                    self.deliver(&call_id, CallInput::Timeout { tx });
                }
            }
            Event::Malformed { from, reason } => {
                crate::metrics::sip_malformed();
                self.offence(from.addr.ip(), verde_sip::Offence::Malformed, now);
                // The penalty box silences a garbage source after a few messages, but a flood
                // from ever-new (spoofed) addresses never reaches it: cap the lines instead.
                let (second, logged, skipped) = &mut self.malformed_log;
                if now.saturating_duration_since(*second) >= Duration::from_secs(1) {
                    (*second, *logged) = (now, 0);
                }
                if *logged < MALFORMED_LOGS_PER_S {
                    *logged += 1;
                    let suppressed = std::mem::take(skipped);
                    tracing::warn!(from = %from.addr, transport = ?from.transport, %reason, suppressed, "malformed SIP message refused");
                } else {
                    *skipped += 1;
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Trunks are exempt from the flood guard: one carrier address carries every call, so a
    /// per-source limit would refuse real callers at a peak, and silence would make the
    /// carrier retransmit and re-route. Their volume is bounded by `sip.max_calls` (503).
    fn guarded(&self, ip: IpAddr) -> bool {
        !self.engine.is_trunk(ip)
    }

    /// Whether a packet from `ip` goes on to the parser; a throttled one is dropped unanswered.
    fn admit(&mut self, ip: IpAddr, bytes: &[u8], now: Instant) -> bool {
        if !self.guarded(ip) {
            return true;
        }
        match self.flood.check(ip, bytes, now) {
            verde_sip::Verdict::Pass => true,
            verde_sip::Verdict::Drop { reason, report } => {
                crate::metrics::sip_throttled(reason.as_str());
                if let Some(t) = report {
                    log_throttled(&t);
                }
                false
            }
        }
    }

    /// Counts what a source's message revealed against it (trunks exempt, see [`Self::guarded`]).
    fn offence(&mut self, ip: IpAddr, offence: verde_sip::Offence, now: Instant) {
        if self.guarded(ip) {
            if let Some(t) = self.flood.offence(ip, offence, now) {
                log_throttled(&t);
            }
        }
    }

    fn reply(&mut self, tx: ServerTxId, req: &Request, status: u16, reason: &str, now: Instant) {
        let mut resp = req.response(status, reason);
        if status > 100 {
            resp = resp.with_to_tag(&verde_sip::new_tag());
        }
        self.send(tx, resp, now);
    }

    fn send(&mut self, tx: ServerTxId, resp: verde_sip::Response, now: Instant) {
        if let Err(e) = self.endpoint.send_response(tx, resp, now) {
            tracing::debug!(error = ?e, "response not sent");
        }
    }

    fn request(&mut self, tx: ServerTxId, req: Request, from: Peer, now: Instant) {
        let call_id = req.call_id().unwrap_or_default().to_string();
        let in_dialog = req.to_tag().is_some();
        if req.method == Method::Register {
            return self.register(tx, req, from, now);
        }
        if req.method == Method::Invite && !in_dialog {
            self.new_call(tx, req, from, call_id, now);
            return;
        }
        if self.engine.calls.contains_key(&call_id) {
            self.deliver(&call_id, CallInput::Request { tx, request: req });
            return;
        }
        match req.method {
            // A draining node says so to a proxy's keep-alive probes (Kamailio's ds_ping), which
            // then stops sending it calls before the first one is refused.
            Method::Options if self.engine.is_draining() => {
                let mut resp = req.response(503, "Service Unavailable");
                resp.headers.push("Retry-After", "30");
                self.send(tx, resp, now);
            }
            Method::Options => {
                let mut resp = req.response(200, "OK");
                resp.headers.push("Allow", call::ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.send(tx, resp, now);
            }
            Method::Ack => {}
            Method::Bye
            | Method::Info
            | Method::Invite
            | Method::Update
            | Method::Notify
            | Method::Refer
            | Method::Prack => self.reply(tx, &req, 481, "Call/Transaction Does Not Exist", now),
            Method::Other(_) => {
                // RFC 3261 21.5.2 asks for the methods we do implement.
                let mut resp = req
                    .response(501, "Not Implemented")
                    .with_to_tag(&verde_sip::new_tag());
                resp.headers.push("Allow", call::ALLOW);
                self.send(tx, resp, now);
            }
            _ => {
                let mut resp = req.response(405, "Method Not Allowed");
                resp.headers.push("Allow", call::ALLOW);
                self.send(tx, resp, now);
            }
        }
    }

    fn new_call(
        &mut self,
        tx: ServerTxId,
        req: Request,
        from: Peer,
        call_id: String,
        now: Instant,
    ) {
        let engine = self.engine.clone();
        let span = tracing::info_span!("call", call_id = %call_id);
        let _e = span.enter();
        if self.engine.calls.contains_key(&call_id) {
            // Same Call-ID, new transaction and no To tag: a merged/forked duplicate.
            return self.reply(tx, &req, 482, "Loop Detected", now);
        }
        if engine.is_draining() {
            let mut resp = req.response(503, "Service Unavailable");
            resp.headers.push("Retry-After", "30");
            tracing::info!("refused: draining for shutdown");
            return self.send(tx, resp, now);
        }
        let did = request_user(&req.uri);
        let f = &engine.cfg.features;
        // Feature codes are for agents' phones, wherever they are: digest decides, not the
        // source address.
        if [&f.login, &f.pause, &f.logout, &f.take_task, &f.close_task].contains(&&did)
            && !engine.cfg.agents.is_empty()
        {
            drop(_e);
            return self.feature_call(tx, req, from, call_id, did, now);
        }
        let Some(trunk) = engine.trunk_name(from.addr.ip()) else {
            tracing::warn!(from = %from.addr, "refused: source is not a configured trunk");
            self.offence(from.addr.ip(), verde_sip::Offence::Rejected, now);
            return self.reply(tx, &req, 403, "Forbidden", now);
        };
        let Some(flow) = engine.flows.for_number(&did) else {
            tracing::info!(%did, "refused: number not configured");
            return self.reply(tx, &req, 404, "Not Found", now);
        };
        if engine.calls.len() >= engine.cfg.sip.max_calls {
            let mut resp = req.response(503, "Service Unavailable");
            resp.headers.push("Retry-After", "5");
            tracing::warn!(max = engine.cfg.sip.max_calls, "refused: at capacity");
            return self.send(tx, resp, now);
        }
        drop(_e);
        self.spawn_call(tx, req, from, call_id, trunk, did, flow, span, now, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_call(
        &mut self,
        tx: ServerTxId,
        req: Request,
        from: Peer,
        call_id: String,
        trunk: String,
        did: String,
        flow: Arc<Flow>,
        span: tracing::Span,
        now: Instant,
        task: Option<(String, call::AgentTask)>,
    ) {
        self.reply(tx, &req, 100, "Trying", now);
        let (handle, inbox) = mpsc::channel(64);
        self.engine.calls.insert(call_id.clone(), handle.clone());
        self.invite_txs.insert(tx, call_id.clone());
        let start = CallStart {
            call_id,
            origin: call::Origin::Sip {
                tx,
                invite: req,
                from,
            },
            trunk,
            did,
            flow,
            handle,
            task,
        };
        call::spawn(self.engine.clone(), start, None, inbox, span);
    }

    /// Whom a digest failure is counted against: the packet's source, or, for a request a
    /// trusted proxy relayed, the phone behind it (else one phone's guessing would block every
    /// phone the proxy carries).
    fn auth_source(&self, req: &Request, packet_source: IpAddr) -> IpAddr {
        let proxies = &self.engine.cfg.sip.trusted_proxies;
        if proxies.iter().any(|n| n.contains(&packet_source)) {
            if let Some(phone) = req.headers.relayed_source() {
                return phone;
            }
        }
        packet_source
    }

    /// Digest check shared by REGISTER and agents' INVITEs: Some(user) when authenticated;
    /// otherwise the answer (401 challenge or 403) has been sent.
    fn authenticate(
        &mut self,
        tx: ServerTxId,
        req: &Request,
        from: Peer,
        now: Instant,
    ) -> Option<String> {
        let ip = self.auth_source(req, from.addr.ip());
        if !self.limiter.check(ip, now) {
            // Still guessing while the failure limiter refuses it: one more failed attempt.
            self.offence(ip, verde_sip::Offence::AuthFailure, now);
            self.reply(tx, req, 403, "Forbidden", now);
            return None;
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Supervisors register a phone too: it is how they listen to, whisper in or barge into
        // live calls.
        let accounts = &self.engine.cti.accounts;
        match self
            .auth
            .verify(req, "Authorization", |u| accounts.digest(u), wall)
        {
            Ok(user) => {
                self.limiter.record_success(ip);
                self.flood.forgive(ip);
                Some(user)
            }
            Err(e) => {
                let stale = matches!(e, AuthError::Stale | AuthError::Replay);
                if e.is_failure() {
                    // Unknown user and wrong password look the same from outside.
                    tracing::warn!(from = %from.addr, source = %ip, method = req.method.as_str(), error = ?e, "digest authentication failed");
                    if self.limiter.record_failure(ip, now) {
                        tracing::warn!(source = %ip, "too many authentication failures: source blocked");
                    }
                    self.offence(ip, verde_sip::Offence::AuthFailure, now);
                    self.reply(tx, req, 403, "Forbidden", now);
                    return None;
                }
                let mut resp = req
                    .response(401, "Unauthorized")
                    .with_to_tag(&verde_sip::new_tag());
                for c in ordered_challenges(
                    self.auth.challenge(wall, stale),
                    &self.engine.cfg.sip.digest_algorithms,
                ) {
                    resp.headers.push("WWW-Authenticate", c);
                }
                self.send(tx, resp, now);
                None
            }
        }
    }

    fn register(&mut self, tx: ServerTxId, req: Request, from: Peer, now: Instant) {
        let Some(user) = self.authenticate(tx, &req, from, now) else {
            return;
        };
        if verde_sip::registrar::aor_user(&req) != Some(user.as_str()) {
            tracing::warn!(%user, "refused: REGISTER for another user's address");
            self.offence(from.addr.ip(), verde_sip::Offence::Rejected, now);
            return self.reply(tx, &req, 403, "Forbidden", now);
        }
        let resp = self.registrar.register(&req, from, &user, now);
        if resp.status == 200 {
            tracing::info!(%user, from = %from.addr, transport = ?from.transport, "registered");
        }
        self.mirror_binding(&user, now);
        self.send(tx, resp, now);
    }

    fn mirror_binding(&self, user: &str, now: Instant) {
        match self.registrar.lookup(user, now).into_iter().next() {
            Some(b) => {
                self.engine.bindings.insert(user.to_string(), b);
            }
            None => {
                self.engine.bindings.remove(user);
            }
        }
    }

    /// An agent's phone dialed a feature code: authenticate it, change its ACD state, and
    /// answer with a short confirmation.
    fn feature_call(
        &mut self,
        tx: ServerTxId,
        req: Request,
        from: Peer,
        call_id: String,
        code: String,
        now: Instant,
    ) {
        let span = tracing::info_span!("call", call_id = %call_id);
        let Some(agent) = self.authenticate(tx, &req, from, now) else {
            return;
        };
        let f = &self.engine.cfg.features;
        let (task, confirm) = if code == f.login {
            (call::AgentTask::Login, "ready")
        } else if code == f.pause {
            (call::AgentTask::Pause, "paused")
        } else if code == f.logout {
            (call::AgentTask::Logout, "logged-out")
        } else if code == f.take_task {
            (call::AgentTask::TakeVoicemail, "unknown")
        } else {
            (call::AgentTask::CloseVoicemail, "unknown")
        };
        span.in_scope(|| tracing::info!(%agent, %code, ?task, "agent feature code"));
        let flow = self.engine.feature_flows[confirm].clone();
        self.spawn_call(
            tx,
            req,
            from,
            call_id,
            "agents".into(),
            code,
            flow,
            span,
            now,
            Some((agent, task)),
        );
    }
}

/// One line per throttled source per period (see `verde_sip::flood`), never one per packet.
fn log_throttled(t: &verde_sip::Throttled) {
    let silenced_s = t.silenced_for.map_or(0, |d| d.as_secs());
    tracing::warn!(source = %t.source, reason = %t.reason.as_str(), dropped = t.dropped, silenced_s, "SIP source throttled");
}

/// The challenges in the configured order, without the algorithms left out. Phones take the
/// first challenge they support, and some (baresip 1.0, older desk phones) give up at the first
/// one they do not, so the order is the site's choice.
fn ordered_challenges(all: Vec<String>, order: &[String]) -> Vec<String> {
    order
        .iter()
        .filter_map(|alg| {
            all.iter()
                .find(|c| {
                    c.to_ascii_lowercase()
                        .contains(&format!("algorithm={}", alg.to_ascii_lowercase()))
                })
                .cloned()
        })
        .collect()
}

/// The tiny built-in flows that confirm an agent's feature code: play one prompt, hang up.
fn feature_flows(sounds: &Path) -> anyhow::Result<HashMap<&'static str, Arc<Flow>>> {
    let catalog = verde_ivr::DirCatalog::new(sounds);
    let mut flows = HashMap::new();
    // The numbers are placeholders: these flows are never looked up by number.
    for (code, prompt, number) in [
        ("ready", "agent_ready", "11"),
        ("paused", "agent_paused", "12"),
        ("logged-out", "agent_logged_out", "13"),
        ("unknown", "agent_unknown_code", "10"),
    ] {
        let text = format!(
            "name: feature-{code}\nnumbers: [\"{number}\"]\nlanguage: it\nlanguages: [it]\nstart: say\nnodes:\n  say:\n    type: play\n    prompts: [{prompt}]\n    next: end\n  end:\n    type: hangup\n"
        );
        let flow =
            verde_ivr::parse_flow(&text, Path::new("<feature codes>"), &catalog).map_err(|e| {
                let lines: Vec<String> = e.iter().map(|e| e.to_string()).collect();
                anyhow::anyhow!("feature-code prompts: {}", lines.join("; "))
            })?;
        flows.insert(code, Arc::new(flow));
    }
    Ok(flows)
}

/// The user part of a SIP URI (`sip:803164@host` -> `803164`), without visual separators.
fn request_user(uri: &str) -> String {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if uri.starts_with("tel:") => rest,
        None => "",
    };
    let user = user.split(';').next().unwrap_or("");
    user.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

/// Malformed-message warnings logged per second at most; the next line logged says how many
/// were left out (`suppressed`), and `verde_sip_malformed_total` counts them all.
const MALFORMED_LOGS_PER_S: u32 = 20;

/// Largest SIP message accepted on a stream; a peer past it without completing a message is
/// cut off (bounded memory per connection).
const MAX_TCP_MESSAGE: usize = 65_536;

/// Connections one address may hold (a phone needs one, an office NAT some dozens); carrier
/// trunks are not counted. Each costs a descriptor and a task for up to the idle timeout.
const TCP_PER_SOURCE: usize = 64;
/// Connections in all: what is left of the descriptors after calls' sockets.
const TCP_TOTAL: usize = 8192;

/// The connections held, per source and in all, by the TCP and TLS listeners together.
#[derive(Clone, Default)]
struct Slots {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    /// One reference per connection held, besides this one.
    total: Arc<()>,
}

/// Counts a connection while it lives.
struct TcpSlot {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            if let Some(n) = c.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.ip);
                }
            }
        }
    }
}

/// Accepts SIP connections: plain TCP, or TLS when `tls` is given (the handshake runs in the
/// connection's task, under its own deadline and holding its slot, so a peer that connects and
/// never handshakes is cut like one that never completes a message).
async fn accept_loop(
    listener: TcpListener,
    engine: Arc<Engine>,
    slots: Slots,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Slots { counts, total } = slots;
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    let mut refused_logged: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ip = peer.ip();
                let trunk = engine.is_trunk(ip);
                let full = {
                    let mut c = counts.lock().expect("tcp counts");
                    let n = c.entry(ip).or_insert(0);
                    let over =
                        (!trunk && *n >= TCP_PER_SOURCE) || Arc::strong_count(&total) > TCP_TOTAL;
                    if !over {
                        *n += 1;
                    } else if *n == 0 {
                        c.remove(&ip);
                    }
                    over
                };
                if full {
                    // Closed at once: the descriptor comes back before the next accept.
                    drop(stream);
                    if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%peer, %transport, per_source = TCP_PER_SOURCE, total = TCP_TOTAL,
                            "connection refused: too many connections");
                        refused_logged = Some(Instant::now());
                    }
                    continue;
                }
                let slot = TcpSlot {
                    counts: counts.clone(),
                    ip,
                };
                let held = total.clone();
                let _ = stream.set_nodelay(true);
                let sip = engine.sip().clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let peer = Peer {
                        transport,
                        addr: peer,
                    };
                    match tls {
                        None => stream_connection(stream, peer, sip).await,
                        Some(acceptor) => match crate::tls::handshake(&acceptor, stream).await {
                            Ok(stream) => stream_connection(stream, peer, sip).await,
                            Err(e) => crate::tls::log_sip_handshake_failure(peer.addr, &e),
                        },
                    }
                    drop((slot, held));
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One stream connection, TCP or TLS alike: frames incoming messages for the SIP task and
/// writes what it sends. A peer that sends more than the maximum message size without
/// completing a message, or nothing at all for a long time, is disconnected.
async fn stream_connection<S>(stream: S, peer: Peer, sip: mpsc::Sender<SipCmd>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::channel::<Bytes>(256);
    let pong = wtx.clone();
    if sip
        .send(SipCmd::TcpOpen { peer, writer: wtx })
        .await
        .is_err()
    {
        return;
    }
    let mut writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            // TLS holds records back until flushed; on plain TCP the flush costs nothing.
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    const IDLE: Duration = Duration::from_secs(300);
    // A message once begun must be complete within this, however slowly its bytes trickle in
    // (slowloris): the idle timeout alone restarts with every byte.
    const MESSAGE_DEADLINE: Duration = Duration::from_secs(20);
    let mut begun: Option<tokio::time::Instant> = None;
    'conn: loop {
        let wait = match begun {
            Some(t) => {
                (t + MESSAGE_DEADLINE).saturating_duration_since(tokio::time::Instant::now())
            }
            None => IDLE,
        };
        match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) if begun.is_some() => {
                tracing::warn!(peer = %peer.addr, transport = %peer.transport, pending = buf.len(),
                    deadline_s = MESSAGE_DEADLINE.as_secs(),
                    "tcp message not completed in time; connection closed");
                break;
            }
            Err(_) => break,
            Ok(Ok(_)) => {}
        }
        loop {
            match verde_sip::frame(&buf, MAX_TCP_MESSAGE) {
                Ok(Frame::KeepAlive { len }) => {
                    let ping = len >= 4;
                    let _ = buf.split_to(len);
                    // RFC 5626: a double-CRLF ping gets a single-CRLF pong.
                    if ping {
                        let _ = pong.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                Ok(Frame::Message { len }) => {
                    let msg = buf.split_to(len).freeze();
                    if sip
                        .send(SipCmd::TcpIn {
                            from: peer,
                            bytes: msg,
                        })
                        .await
                        .is_err()
                    {
                        break 'conn;
                    }
                }
                Ok(Frame::NeedMore) => break,
                Err(e) => {
                    tracing::warn!(peer = %peer.addr, transport = %peer.transport, error = %e,
                        "tcp stream refused");
                    // The head alone still names the request: the endpoint answers it 400
                    // (its body falls short of its Content-Length) before the stream, which
                    // cannot be framed any more, is closed.
                    if matches!(
                        e,
                        verde_sip::FrameError::BadContentLength
                            | verde_sip::FrameError::TooLarge { .. }
                    ) {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = buf.split_to(end + 4).freeze();
                            let _ = sip
                                .send(SipCmd::TcpIn {
                                    from: peer,
                                    bytes: head,
                                })
                                .await;
                        }
                    }
                    break 'conn;
                }
            }
        }
        // The clock of a message starts at its first byte.
        begun = match (buf.is_empty(), begun) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, t) => t,
        };
    }
    let _ = sip.send(SipCmd::TcpClosed { peer }).await;
    // Let what is queued (a last 400) reach the peer before the socket goes.
    drop(pong);
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::request_user;

    #[tokio::test]
    async fn a_stream_connection_frames_pongs_writes_and_names_its_transport() {
        use super::{stream_connection, SipCmd};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use verde_sip::{Peer, Transport};
        // Any byte stream will do: the same code serves TCP and TLS.
        let (mut client, server) = tokio::io::duplex(8192);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let peer = Peer {
            transport: Transport::Tls,
            addr: "192.0.2.5:40000".parse().unwrap(),
        };
        let conn = tokio::spawn(stream_connection(server, peer, tx));
        let Some(SipCmd::TcpOpen {
            peer: opened,
            writer,
        }) = rx.recv().await
        else {
            panic!("no TcpOpen first");
        };
        assert_eq!(opened, peer);
        let msg = "OPTIONS sip:verde@192.0.2.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        // A message split across writes, then a double-CRLF keep-alive.
        client.write_all(&msg.as_bytes()[..10]).await.unwrap();
        client.write_all(&msg.as_bytes()[10..]).await.unwrap();
        client.write_all(b"\r\n\r\n").await.unwrap();
        match rx.recv().await {
            Some(SipCmd::TcpIn { from, bytes }) => {
                assert_eq!(from, peer);
                assert_eq!(&bytes[..], msg.as_bytes());
            }
            _ => panic!("the message was not handed over"),
        }
        let mut pong = [0u8; 2];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
        writer
            .send(bytes::Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"))
            .await
            .unwrap();
        let mut answer = [0u8; 18];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"SIP/2.0 200 OK\r\n\r\n");
        drop(client);
        match rx.recv().await {
            Some(SipCmd::TcpClosed { peer: closed }) => assert_eq!(closed, peer),
            _ => panic!("no TcpClosed after the peer left"),
        }
        drop(writer);
        conn.await.unwrap();
    }

    #[test]
    fn feature_flows_build_from_the_shipped_prompts() {
        let sounds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sounds");
        let flows = super::feature_flows(&sounds).unwrap();
        assert_eq!(flows.len(), 4);
        assert!(super::feature_flows(std::path::Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn challenges_follow_the_configured_order() {
        let all = vec![
            "Digest realm=\"verde\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\"".to_string(),
            "Digest realm=\"verde\", nonce=\"n\", algorithm=MD5, qop=\"auth\"".to_string(),
        ];
        let order = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = super::ordered_challenges(all.clone(), &order(&["MD5", "SHA-256"]));
        assert!(
            got[0].contains("MD5") && got[1].contains("SHA-256"),
            "{got:?}"
        );
        let got = super::ordered_challenges(all, &order(&["SHA-256"]));
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("SHA-256"));
    }

    #[test]
    fn numbers_are_read_from_request_uris() {
        assert_eq!(request_user("sip:803164@127.0.0.1:5060"), "803164");
        assert_eq!(
            request_user("sip:800-022-399@example.org;user=phone"),
            "800022399"
        );
        assert_eq!(request_user("tel:800779366"), "800779366");
        assert_eq!(request_user("sip:example.org"), "");
    }
}
