//! The sans-IO transaction layer (RFC 3261 section 17, RFC 6026, RFC 3581).
//!
//! [`Endpoint`] takes datagrams / framed stream messages with [`Endpoint::handle_bytes`] and the
//! TU's answers with [`Endpoint::send_response`] / [`Endpoint::send_request`]; it hands back
//! [`Transmit`]s, [`Event`]s and the next deadline. Nothing here reads a clock: every call takes
//! `now`, and the caller invokes [`Endpoint::handle_timeout`] at [`Endpoint::poll_timeout`].
//!
//! Choices worth knowing:
//! * 100 Trying is the TU's job: the endpoint never sends it on its own. The TU should send it
//!   at once when it cannot answer an INVITE within 200 ms (RFC 3261 17.2.1).
//! * The 2xx to INVITE is retransmitted by the endpoint (T1 doubling, capped at T2) until the
//!   ACK, which RFC 3261 13.3.1.4 leaves to the TU core; only over UDP, like A/E/G.
//! * Requests and responses never start a transaction when they are malformed: requests get a
//!   stateless 400 (505 for another SIP version, 483 for Max-Forwards 0) and the TU sees only
//!   [`Event::Malformed`]. "Malformed" covers what a UAS must refuse before acting (RFC 4475):
//!   From/To/Contact that are not a valid name-addr or addr-spec, Via lists with empty
//!   elements, single-valued headers given twice, a CSeq that does not fit or names another
//!   method, a REGISTER whose To is not a SIP URI.
//! * Requests it cannot serve whatever the TU would say are refused statelessly too: 416 for a
//!   Request-URI scheme other than sip, sips and tel, 420 for a `Require` naming an option tag
//!   outside [`Config::extensions`]. The TU never sees them.
//! * Responses carrying more than one Via are dropped (RFC 3261 18.1.2): ours carry one.
//! * No timer C: an INVITE client transaction in Proceeding waits for the TU to CANCEL.
//! * Every 1xx (until the final) and every 2xx to our INVITE (retransmissions and forks, until
//!   timer M) reaches the TU, which ACKs each 2xx itself; a 2xx to INVITE that matches no
//!   transaction any more is still handed up as [`Event::StrayResponse`] (see there).
//! * Merged-request detection (RFC 3261 8.2.2.2, 482) is not done.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::message::scrape::scrape;
use crate::message::syntax;
use crate::message::{Message, Method, ParseError, Peer, Request, Response, Transport, Via};

/// Transaction timer base values (RFC 3261 17.1.1.1 and table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// RTT estimate; A, B, E, F, G, H, J and the 2xx/ACK wait derive from it. Default 500 ms.
    pub t1: Duration,
    /// Cap of non-INVITE and response retransmit intervals. Default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network: timers I and K. Default 5 s.
    pub t4: Duration,
    /// Timer D (INVITE client waits for final-response retransmissions). Default 32 s.
    pub timer_d: Duration,
    /// Option tags the TU implements: a request whose `Require` names any other tag is
    /// refused with 420 and an `Unsupported` header (RFC 3261 8.2.2.3). Default: none.
    pub extensions: &'static [&'static str],
}

impl Default for Config {
    fn default() -> Config {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            extensions: &[],
        }
    }
}

/// Identifies a server transaction (a request we received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// Identifies a client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Bytes,
}

/// What the TU must know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request (never ACK or CANCEL); answer it with [`Endpoint::send_response`].
    /// The request's top Via already carries `received`/`rport`, so `request.response(..)` routes.
    Request {
        tx: ServerTxId,
        request: Request,
        from: Peer,
    },
    /// A CANCEL matched this INVITE before its final response. The CANCEL got its 200; the TU
    /// should now answer the INVITE with 487.
    Cancelled { tx: ServerTxId },
    /// An ACK to a 2xx we sent (retransmission of the 2xx stops), or a stray ACK matching no
    /// transaction, which the TU may match against its dialogs.
    Ack { request: Request, from: Peer },
    /// No ACK came within 64*T1 of our 2xx to this INVITE; the TU should send BYE.
    AckTimeout { tx: ServerTxId },
    /// A response to a request we sent (1xx, 2xx including retransmissions of 2xx to INVITE,
    /// which the TU must ACK again, and non-2xx finals, which the endpoint ACKs itself).
    Response { tx: ClientTxId, response: Response },
    /// No final response came (timer B or F).
    Timeout { tx: ClientTxId },
    /// A 2xx to an INVITE that matches no client transaction: it came after timer B gave
    /// up, or after timer M forgot an answered INVITE. RFC 6026 8.9 says to drop it, but
    /// then the callee's phone sits in a call nobody hears until its own ACK timeout; the
    /// TU should build a dialog from it, ACK it and send BYE (or ignore it if it knows the
    /// call). Non-2xx strays are still dropped.
    StrayResponse { response: Response, from: Peer },
    /// Bytes that are not a valid SIP message or request lacking mandatory headers.
    Malformed { from: Peer, reason: String },
}

/// Why the endpoint refused something the TU asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such transaction (it ended or never existed)")]
    UnknownTransaction,
    #[error("not allowed in the transaction's current state: {0}")]
    InvalidState(&'static str),
    #[error("request has no top Via with a branch")]
    MissingBranch,
    #[error("a client transaction with this branch already exists")]
    DuplicateBranch,
    #[error("ACK is not sent in a transaction; use send_ack")]
    AckInTransaction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    /// INVITE for ACK, so an ACK to a non-2xx finds its INVITE (RFC 3261 17.2.3).
    method: Method,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AckKey {
    call_id: String,
    cseq: u32,
    to_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: 2xx sent; `acked` once the ACK came (kept until timer L to absorb copies).
    Accepted {
        acked: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
}

/// The three timer slots each transaction has; which RFC timer a slot is depends on state.
#[derive(Debug, Default)]
struct Timers {
    /// A, E, G or the 2xx retransmission.
    retransmit: Option<Instant>,
    interval: Duration,
    /// B, F, H or L/"ACK wait".
    timeout: Option<Instant>,
    /// D, I, J, K, M: quiet period before the transaction is forgotten.
    cleanup: Option<Instant>,
}

#[derive(Debug)]
struct ServerTx {
    key: ServerKey,
    invite: bool,
    state: ServerState,
    peer: Peer,
    last_response: Option<Bytes>,
    to_tag: Option<String>,
    ack_key: Option<AckKey>,
    timers: Timers,
}

#[derive(Debug)]
struct ClientTx {
    key: ClientKey,
    invite: bool,
    state: ClientState,
    peer: Peer,
    request: Request,
    bytes: Bytes,
    ack: Option<Bytes>,
    timers: Timers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Retransmit,
    Timeout,
    Cleanup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(u64, Slot),
    Client(u64, Slot),
}

impl Timers {
    fn get(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Retransmit => self.retransmit,
            Slot::Timeout => self.timeout,
            Slot::Cleanup => self.cleanup,
        }
    }

    fn clear(&mut self) {
        self.retransmit = None;
        self.timeout = None;
        self.cleanup = None;
    }
}

/// The SIP endpoint: transaction layer plus stateless error handling. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    next_id: u64,
    servers: HashMap<u64, ServerTx>,
    server_index: HashMap<ServerKey, u64>,
    accepted_index: HashMap<AckKey, u64>,
    clients: HashMap<u64, ClientTx>,
    client_index: HashMap<ClientKey, u64>,
    // Entries are never removed early: a fired entry whose slot no longer holds that instant
    // is stale and skipped, which keeps rescheduling O(log n) without a decrease-key.
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Endpoint {
    pub fn new(config: Config) -> Endpoint {
        Endpoint {
            config,
            next_id: 0,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            accepted_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds one datagram, or one framed message from a stream (see [`crate::frame`]).
    pub fn handle_bytes(&mut self, bytes: &[u8], from: Peer, now: Instant) {
        // CRLF keep-alives (RFC 5626 4.4.1) also arrive as datagrams: nothing to answer or log.
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return;
        }
        match Message::parse(bytes) {
            Ok(Message::Request(req)) => self.handle_request(req, from, now),
            Ok(Message::Response(resp)) => self.handle_response(resp, from, now),
            Err(err) => self.reject_unparsable(bytes, from, &err),
        }
    }

    /// Sends a response on a server transaction. For a 2xx to INVITE, retransmits it until the
    /// ACK ([`Event::Ack`]) or 64*T1 ([`Event::AckTimeout`]).
    pub fn send_response(
        &mut self,
        tx: ServerTxId,
        response: Response,
        now: Instant,
    ) -> Result<(), SendError> {
        let cfg = self.config;
        let st = self
            .servers
            .get_mut(&tx.0)
            .ok_or(SendError::UnknownTransaction)?;
        let status = response.status;
        if !(100..700).contains(&status) {
            return Err(SendError::InvalidState("status code out of range"));
        }
        let reliable = st.peer.transport.is_reliable();
        let provisional = status < 200;
        let next = match (st.invite, st.state) {
            (true, ServerState::Proceeding) if provisional => ServerState::Proceeding,
            (true, ServerState::Proceeding) if status < 300 => {
                ServerState::Accepted { acked: false }
            }
            (true, ServerState::Proceeding) => ServerState::Completed,
            // RFC 6026 lets the TU send further 2xx while Accepted (e.g. its own retransmission).
            (true, s @ ServerState::Accepted { .. }) if response.is_success() => s,
            (false, ServerState::Trying | ServerState::Proceeding) if provisional => {
                ServerState::Proceeding
            }
            (false, ServerState::Trying | ServerState::Proceeding) => ServerState::Completed,
            _ => return Err(SendError::InvalidState("final response already sent")),
        };
        if let Some(tag) = response.to_tag() {
            st.to_tag = Some(tag.to_owned());
        }
        let bytes = response.to_bytes();
        let entering = st.state != next;
        st.state = next;
        st.last_response = Some(bytes.clone());
        let peer = st.peer;
        let mut schedule = Vec::new();
        let mut terminate = false;
        if entering {
            match next {
                ServerState::Accepted { .. } => {
                    let key = AckKey {
                        call_id: response.call_id().unwrap_or_default().to_owned(),
                        cseq: response.cseq().map_or(0, |(n, _)| n),
                        to_tag: response.to_tag().unwrap_or_default().to_owned(),
                    };
                    self.accepted_index.insert(key.clone(), tx.0);
                    st.ack_key = Some(key);
                    st.timers.timeout = Some(now + cfg.t1 * 64);
                    schedule.push((now + cfg.t1 * 64, Slot::Timeout));
                    if !reliable {
                        st.timers.interval = cfg.t1;
                        st.timers.retransmit = Some(now + cfg.t1);
                        schedule.push((now + cfg.t1, Slot::Retransmit));
                    }
                }
                ServerState::Completed if st.invite => {
                    // Timer H bounds the wait for the ACK; G retransmits over UDP.
                    st.timers.timeout = Some(now + cfg.t1 * 64);
                    schedule.push((now + cfg.t1 * 64, Slot::Timeout));
                    if !reliable {
                        st.timers.interval = cfg.t1;
                        st.timers.retransmit = Some(now + cfg.t1);
                        schedule.push((now + cfg.t1, Slot::Retransmit));
                    }
                }
                ServerState::Completed => {
                    // Timer J: absorb request retransmissions, zero on reliable transports.
                    if reliable {
                        terminate = true;
                    } else {
                        st.timers.cleanup = Some(now + cfg.t1 * 64);
                        schedule.push((now + cfg.t1 * 64, Slot::Cleanup));
                    }
                }
                _ => {}
            }
        }
        self.transmits.push_back(Transmit { to: peer, bytes });
        for (at, slot) in schedule {
            self.timers
                .push(Reverse((at, TimerRef::Server(tx.0, slot))));
        }
        if terminate {
            self.terminate_server(tx.0);
        }
        Ok(())
    }

    /// Starts a client transaction. The request must carry a top Via with a unique branch
    /// (see [`crate::new_branch`]); ACK goes through [`Endpoint::send_ack`] instead.
    pub fn send_request(
        &mut self,
        request: Request,
        to: Peer,
        now: Instant,
    ) -> Result<ClientTxId, SendError> {
        if request.method == Method::Ack {
            return Err(SendError::AckInTransaction);
        }
        let branch = request
            .top_via()
            .and_then(|v| v.branch().map(str::to_owned))
            .ok_or(SendError::MissingBranch)?;
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        if self.client_index.contains_key(&key) {
            return Err(SendError::DuplicateBranch);
        }
        let id = self.next_id();
        let invite = request.method == Method::Invite;
        let bytes = request.to_bytes();
        let mut timers = Timers {
            timeout: Some(now + self.config.t1 * 64),
            ..Timers::default()
        };
        self.timers.push(Reverse((
            now + self.config.t1 * 64,
            TimerRef::Client(id, Slot::Timeout),
        )));
        if !to.transport.is_reliable() {
            timers.interval = self.config.t1;
            timers.retransmit = Some(now + self.config.t1);
            self.timers.push(Reverse((
                now + self.config.t1,
                TimerRef::Client(id, Slot::Retransmit),
            )));
        }
        self.transmits.push_back(Transmit {
            to,
            bytes: bytes.clone(),
        });
        self.client_index.insert(key.clone(), id);
        self.clients.insert(
            id,
            ClientTx {
                key,
                invite,
                state: if invite {
                    ClientState::Calling
                } else {
                    ClientState::Trying
                },
                peer: to,
                request,
                bytes,
                ack: None,
                timers,
            },
        );
        Ok(ClientTxId(id))
    }

    /// Sends a CANCEL for an INVITE client transaction that has no final response yet
    /// (RFC 3261 9.1). The TU should wait for a provisional response before cancelling.
    pub fn cancel(&mut self, tx: ClientTxId, now: Instant) -> Result<ClientTxId, SendError> {
        let ct = self
            .clients
            .get(&tx.0)
            .ok_or(SendError::UnknownTransaction)?;
        if !ct.invite || !matches!(ct.state, ClientState::Calling | ClientState::Proceeding) {
            return Err(SendError::InvalidState(
                "only a pending INVITE can be cancelled",
            ));
        }
        let inv = &ct.request;
        let mut cancel = Request::new(Method::Cancel, inv.uri.clone());
        copy_for_ack_or_cancel(inv, &mut cancel, inv.headers.get("To").unwrap_or_default());
        cancel.headers.push(
            "CSeq",
            format!("{} CANCEL", inv.cseq().map_or(0, |(n, _)| n)),
        );
        let peer = ct.peer;
        self.send_request(cancel, peer, now)
    }

    /// Sends an ACK for a 2xx (built by the TU, e.g. with [`crate::Dialog::request`]); it lives
    /// outside any transaction (RFC 3261 17.1.1.3).
    pub fn send_ack(&mut self, ack: &Request, to: Peer) {
        self.transmits.push_back(Transmit {
            to,
            bytes: ack.to_bytes(),
        });
    }

    /// The earliest instant at which [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if self.is_live(timer, at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.is_live(timer, at) {
                match timer {
                    TimerRef::Server(id, slot) => self.fire_server(id, slot, now),
                    TimerRef::Client(id, slot) => self.fire_client(id, slot, now),
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Live server and client transactions, for metrics and leak checks.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn is_live(&self, timer: TimerRef, at: Instant) -> bool {
        match timer {
            TimerRef::Server(id, slot) => self
                .servers
                .get(&id)
                .is_some_and(|t| t.timers.get(slot) == Some(at)),
            TimerRef::Client(id, slot) => self
                .clients
                .get(&id)
                .is_some_and(|t| t.timers.get(slot) == Some(at)),
        }
    }

    // ---- incoming requests ----

    fn handle_request(&mut self, mut req: Request, from: Peer, now: Instant) {
        // Checked before the top Via is rewritten, so the 400 echoes what the sender wrote.
        if !req.headers.get_all("Via").all(syntax::via_is_valid) {
            self.reject(&req, from, from, 400, "Malformed Via header", true);
            return;
        }
        let Some(mut via) = req.top_via() else {
            let reason = if req.headers.get("Via").is_some() {
                "Malformed Via header"
            } else {
                "Missing Via header"
            };
            self.reject(&req, from, from, 400, reason, true);
            return;
        };
        // RFC 3261 18.2.1 / RFC 3581: record where the request really came from, so every
        // response built from this request (by us or the TU) carries it.
        if fix_top_via(&mut via, from) {
            req.headers.set_top_via(&via);
        }
        let peer = response_peer(Some(&via), from);
        if let Some(reason) = validate(&req) {
            self.reject(&req, from, peer, 400, &reason, true);
            return;
        }
        if req.method != Method::Options && req.headers.max_forwards() == Some(0) {
            self.reject(&req, from, peer, 483, "Too Many Hops", false);
            return;
        }
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            let scheme = syntax::scheme(&req.uri).unwrap_or_default();
            if !["sip", "sips", "tel"]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme))
            {
                self.reject(&req, from, peer, 416, "Unsupported URI Scheme", false);
                return;
            }
            let unsupported = unsupported_extensions(&req, self.config.extensions);
            if !unsupported.is_empty() {
                let resp = stateless(&req, 420, "Bad Extension")
                    .with_header("Unsupported", unsupported.join(", "));
                debug!(peer = %from.addr, unsupported = ?unsupported, "request rejected: 420");
                self.transmits.push_back(Transmit {
                    to: peer,
                    bytes: resp.to_bytes(),
                });
                return;
            }
        }
        let key = server_key(&req, &via);
        match req.method {
            Method::Ack => self.handle_ack(req, key, from, now),
            Method::Cancel => self.handle_cancel(req, key, peer, now),
            _ => {
                if let Some(&id) = self.server_index.get(&key) {
                    self.absorb_retransmission(id);
                    return;
                }
                let id = self.next_id();
                let invite = req.method == Method::Invite;
                self.server_index.insert(key.clone(), id);
                self.servers.insert(
                    id,
                    ServerTx {
                        key,
                        invite,
                        state: if invite {
                            ServerState::Proceeding
                        } else {
                            ServerState::Trying
                        },
                        peer,
                        last_response: None,
                        to_tag: None,
                        ack_key: None,
                        timers: Timers::default(),
                    },
                );
                self.events.push_back(Event::Request {
                    tx: ServerTxId(id),
                    request: req,
                    from,
                });
            }
        }
    }

    fn absorb_retransmission(&mut self, id: u64) {
        let Some(st) = self.servers.get(&id) else {
            return;
        };
        // Trying (nothing to resend yet), Confirmed and Accepted (RFC 6026) absorb silently.
        let resend = matches!(st.state, ServerState::Proceeding | ServerState::Completed);
        trace!(state = ?st.state, resend, "request retransmission");
        if let (true, Some(bytes)) = (resend, st.last_response.clone()) {
            self.transmits.push_back(Transmit { to: st.peer, bytes });
        }
    }

    fn handle_ack(&mut self, req: Request, key: ServerKey, from: Peer, now: Instant) {
        let mut ack_key = None;
        if let Some(&id) = self.server_index.get(&key) {
            let st = self.servers.get_mut(&id).expect("index and map agree");
            match st.state {
                ServerState::Completed => {
                    // ACK to our non-2xx final: stop G/H, wait timer I for ACK copies.
                    st.state = ServerState::Confirmed;
                    st.timers.clear();
                    if st.peer.transport.is_reliable() {
                        self.terminate_server(id);
                    } else {
                        let at = now + self.config.t4;
                        st.timers.cleanup = Some(at);
                        self.timers
                            .push(Reverse((at, TimerRef::Server(id, Slot::Cleanup))));
                    }
                    return;
                }
                // Some UAs reuse the INVITE branch in the ACK to a 2xx.
                ServerState::Accepted { .. } => ack_key = st.ack_key.clone(),
                _ => {
                    trace!(state = ?st.state, "ACK absorbed");
                    return;
                }
            }
        }
        let ack_key = ack_key.unwrap_or_else(|| AckKey {
            call_id: req.call_id().unwrap_or_default().to_owned(),
            cseq: req.cseq().map_or(0, |(n, _)| n),
            to_tag: req.to_tag().unwrap_or_default().to_owned(),
        });
        if let Some(st) = self
            .accepted_index
            .get(&ack_key)
            .and_then(|id| self.servers.get_mut(id))
        {
            if st.state == (ServerState::Accepted { acked: true }) {
                trace!("ACK retransmission absorbed");
                return;
            }
            st.state = ServerState::Accepted { acked: true };
            // Stop retransmitting the 2xx; timer L still runs to absorb ACK copies.
            st.timers.retransmit = None;
        }
        self.events.push_back(Event::Ack { request: req, from });
    }

    fn handle_cancel(&mut self, req: Request, key: ServerKey, peer: Peer, now: Instant) {
        if let Some(&id) = self.server_index.get(&key) {
            self.absorb_retransmission(id);
            return;
        }
        let invite_key = ServerKey {
            method: Method::Invite,
            ..key.clone()
        };
        let invite = self
            .server_index
            .get(&invite_key)
            .and_then(|id| self.servers.get(id).map(|st| (*id, st)));
        let (status, reason, tag, cancelled) = match invite {
            Some((id, st)) => (
                200,
                "OK",
                st.to_tag.clone(),
                (st.state == ServerState::Proceeding).then_some(id),
            ),
            None => (481, "Call/Transaction Does Not Exist", None, None),
        };
        let id = self.next_id();
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerTx {
                key,
                invite: false,
                state: ServerState::Trying,
                peer,
                last_response: None,
                to_tag: None,
                ack_key: None,
                timers: Timers::default(),
            },
        );
        // RFC 3261 9.2: the CANCEL's response SHOULD carry the INVITE response's To tag.
        let tag = tag.unwrap_or_else(crate::dialog::new_tag);
        let resp = req.response(status, reason).with_to_tag(&tag);
        let sent = self.send_response(ServerTxId(id), resp, now);
        debug_assert!(sent.is_ok(), "fresh CANCEL transaction accepts a final");
        if let Some(invite_id) = cancelled {
            debug!(call_id = req.call_id(), "INVITE cancelled");
            self.events.push_back(Event::Cancelled {
                tx: ServerTxId(invite_id),
            });
        }
    }

    /// Stateless error response to a request that parsed but cannot start a transaction.
    fn reject(
        &mut self,
        req: &Request,
        from: Peer,
        to: Peer,
        status: u16,
        reason: &str,
        malformed: bool,
    ) {
        debug!(%status, reason, peer = %from.addr, "request rejected");
        if malformed {
            self.events.push_back(Event::Malformed {
                from,
                reason: reason.to_owned(),
            });
        }
        if req.method == Method::Ack {
            return;
        }
        let resp = stateless(req, status, reason);
        self.transmits.push_back(Transmit {
            to,
            bytes: resp.to_bytes(),
        });
    }

    fn reject_unparsable(&mut self, bytes: &[u8], from: Peer, err: &ParseError) {
        let reason = phrase(&err.to_string());
        debug!(%reason, peer = %from.addr, "unparsable message");
        self.events.push_back(Event::Malformed {
            from,
            reason: reason.clone(),
        });
        let Some(scraped) = scrape(bytes) else {
            return;
        };
        if scraped.method == "ACK" {
            return;
        }
        let status = match err {
            ParseError::UnsupportedVersion(_) => 505,
            _ => 400,
        };
        let mut via = scraped.top_via().and_then(Via::parse);
        let tag = stateless_tag(scraped.call_id.as_deref(), scraped.cseq.as_deref());
        let Some(mut resp) = scraped.response(status, &reason, &tag) else {
            return;
        };
        if let Some(v) = via.as_mut() {
            if fix_top_via(v, from) {
                resp.headers.set_top_via(v);
            }
        }
        self.transmits.push_back(Transmit {
            to: response_peer(via.as_ref(), from),
            bytes: resp.to_bytes(),
        });
    }

    // ---- incoming responses ----

    fn handle_response(&mut self, resp: Response, from: Peer, now: Instant) {
        if resp.headers.vias().nth(1).is_some() {
            // Not an answer to anything we sent; a proxy would forward it (to 255.255.255.255
            // in RFC 4475 3.3.10).
            return self.malformed_response(from, "response with more than one Via");
        }
        let key = match (resp.top_via(), resp.cseq()) {
            (Some(via), Some((_, method))) => match via.branch() {
                Some(branch) => ClientKey {
                    branch: branch.to_owned(),
                    method,
                },
                None => return self.malformed_response(from, "response Via has no branch"),
            },
            _ => return self.malformed_response(from, "response lacks Via or CSeq"),
        };
        let Some(&id) = self.client_index.get(&key) else {
            if key.method == Method::Invite && resp.is_success() {
                debug!(
                    call_id = resp.call_id(),
                    "2xx to INVITE matches no transaction"
                );
                self.events.push_back(Event::StrayResponse {
                    response: resp,
                    from,
                });
            } else {
                trace!(status = resp.status, "response matches no transaction");
            }
            return;
        };
        let cfg = self.config;
        let ct = self.clients.get_mut(&id).expect("index and map agree");
        let reliable = ct.peer.transport.is_reliable();
        let status = resp.status;
        let mut schedule = None;
        let mut terminate = false;
        let mut deliver = true;
        match (ct.invite, ct.state) {
            (true, ClientState::Calling | ClientState::Proceeding) => {
                ct.timers.clear();
                if status < 200 {
                    ct.state = ClientState::Proceeding;
                } else if status < 300 {
                    // RFC 6026 timer M: keep passing 2xx retransmissions up for re-ACK.
                    ct.state = ClientState::Accepted;
                    schedule = Some((now + cfg.t1 * 64, Slot::Cleanup));
                } else {
                    ct.state = ClientState::Completed;
                    let ack = build_ack(&ct.request, &resp).to_bytes();
                    self.transmits.push_back(Transmit {
                        to: ct.peer,
                        bytes: ack.clone(),
                    });
                    ct.ack = Some(ack);
                    if reliable {
                        terminate = true;
                    } else {
                        schedule = Some((now + cfg.timer_d, Slot::Cleanup));
                    }
                }
            }
            (true, ClientState::Accepted) => deliver = resp.is_success(),
            (true, ClientState::Completed) => {
                deliver = false;
                if status >= 300 {
                    if let Some(ack) = ct.ack.clone() {
                        self.transmits.push_back(Transmit {
                            to: ct.peer,
                            bytes: ack,
                        });
                    }
                }
            }
            (false, ClientState::Trying | ClientState::Proceeding) => {
                if status < 200 {
                    ct.state = ClientState::Proceeding;
                } else {
                    ct.state = ClientState::Completed;
                    ct.timers.clear();
                    if reliable {
                        terminate = true;
                    } else {
                        schedule = Some((now + cfg.t4, Slot::Cleanup));
                    }
                }
            }
            _ => deliver = false,
        }
        if let Some((at, slot)) = schedule {
            ct.timers.cleanup = Some(at);
            self.timers.push(Reverse((at, TimerRef::Client(id, slot))));
        }
        if deliver {
            self.events.push_back(Event::Response {
                tx: ClientTxId(id),
                response: resp,
            });
        }
        if terminate {
            self.terminate_client(id);
        }
    }

    fn malformed_response(&mut self, from: Peer, reason: &str) {
        self.events.push_back(Event::Malformed {
            from,
            reason: reason.to_owned(),
        });
    }

    // ---- timers ----

    fn fire_server(&mut self, id: u64, slot: Slot, now: Instant) {
        let cfg = self.config;
        let Some(st) = self.servers.get_mut(&id) else {
            return;
        };
        match slot {
            Slot::Retransmit => {
                // Timer G and the 2xx retransmission both double up to T2.
                if let Some(bytes) = st.last_response.clone() {
                    self.transmits.push_back(Transmit { to: st.peer, bytes });
                }
                st.timers.interval = (st.timers.interval * 2).min(cfg.t2);
                let at = now + st.timers.interval;
                st.timers.retransmit = Some(at);
                self.timers
                    .push(Reverse((at, TimerRef::Server(id, Slot::Retransmit))));
            }
            Slot::Timeout => {
                if st.state == (ServerState::Accepted { acked: false }) {
                    debug!("no ACK for 2xx within 64*T1");
                    self.events
                        .push_back(Event::AckTimeout { tx: ServerTxId(id) });
                } else if st.state == ServerState::Completed {
                    debug!("timer H: no ACK for non-2xx final");
                }
                self.terminate_server(id);
            }
            Slot::Cleanup => self.terminate_server(id),
        }
    }

    fn fire_client(&mut self, id: u64, slot: Slot, now: Instant) {
        let cfg = self.config;
        let Some(ct) = self.clients.get_mut(&id) else {
            return;
        };
        match slot {
            Slot::Retransmit => {
                self.transmits.push_back(Transmit {
                    to: ct.peer,
                    bytes: ct.bytes.clone(),
                });
                ct.timers.interval = if ct.invite {
                    // Timer A doubles without a cap; B ends it.
                    ct.timers.interval * 2
                } else if ct.state == ClientState::Proceeding {
                    cfg.t2
                } else {
                    (ct.timers.interval * 2).min(cfg.t2)
                };
                let at = now + ct.timers.interval;
                ct.timers.retransmit = Some(at);
                self.timers
                    .push(Reverse((at, TimerRef::Client(id, Slot::Retransmit))));
            }
            Slot::Timeout => {
                debug!(method = %ct.key.method, "client transaction timed out");
                self.events.push_back(Event::Timeout { tx: ClientTxId(id) });
                self.terminate_client(id);
            }
            Slot::Cleanup => self.terminate_client(id),
        }
    }

    fn terminate_server(&mut self, id: u64) {
        if let Some(st) = self.servers.remove(&id) {
            self.server_index.remove(&st.key);
            if let Some(k) = st.ack_key {
                if self.accepted_index.get(&k) == Some(&id) {
                    self.accepted_index.remove(&k);
                }
            }
        }
    }

    fn terminate_client(&mut self, id: u64) {
        if let Some(ct) = self.clients.remove(&id) {
            self.client_index.remove(&ct.key);
        }
    }
}

/// The first problem that prevents a request from starting a transaction.
/// A control character (other than HTAB) that is not the escaped half of a quoted-pair.
fn has_raw_control(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_control() && c != '\t' => return true,
            _ => {}
        }
    }
    false
}

fn validate(req: &Request) -> Option<String> {
    // RFC 3261 25.1: header values are text, with no control characters but HTAB, except as a
    // quoted-pair inside a quoted string (RFC 4475 3.1.1.13 escapes BEL, NUL and DEL so); a raw
    // NUL echoed back in a response is at best garbage to the peer.
    if let Some((name, _)) = req.headers.iter().find(|(_, v)| has_raw_control(v)) {
        return Some(format!("Control character in {name} header"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if req.headers.get(name).is_none_or(|v| v.trim().is_empty()) {
            return Some(format!("Missing {name} header"));
        }
    }
    // Which of two Call-IDs or CSeqs would the answer echo? (RFC 4475 3.3.8)
    for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards"] {
        if req.headers.get_all(name).nth(1).is_some() {
            return Some(format!("Duplicate {name} header"));
        }
    }
    let Some((_, method)) = req.cseq() else {
        return Some("Malformed CSeq header".to_owned());
    };
    if method != req.method {
        return Some("CSeq method does not match request method".to_owned());
    }
    for name in ["From", "To"] {
        if !req
            .headers
            .get(name)
            .is_some_and(syntax::name_addr_is_valid)
        {
            return Some(format!("Malformed {name} header"));
        }
    }
    if !req.headers.get_all("Contact").all(syntax::contact_is_valid) {
        return Some("Malformed Contact header".to_owned());
    }
    if req.method == Method::Register {
        // RFC 3261 10.2: the address-of-record in To is a SIP or SIPS URI.
        let to = req.headers.get("To").unwrap_or_default();
        let scheme = syntax::scheme(crate::message::split_name_addr(to).0).unwrap_or_default();
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return Some("REGISTER To is not a SIP URI".to_owned());
        }
    }
    None
}

/// A stateless error answer, with a To tag stable across retransmissions of the request.
fn stateless(req: &Request, status: u16, reason: &str) -> Response {
    req.response(status, reason)
        .with_to_tag(&stateless_tag(req.call_id(), req.headers.get("CSeq")))
}

/// The option tags of `Require` outside `supported`, in the order the request names them.
fn unsupported_extensions(req: &Request, supported: &[&str]) -> Vec<String> {
    req.headers
        .get_all("Require")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .map(str::to_owned)
        .collect()
}

fn server_key(req: &Request, via: &Via) -> ServerKey {
    let method = match req.method {
        Method::Ack => Method::Invite,
        ref m => m.clone(),
    };
    let branch = match via.branch() {
        // The magic cookie alone identifies nothing (RFC 4475 3.2.1): every such request from
        // one host would look like a retransmission of the first.
        Some(b) if b.starts_with("z9hG4bK") && b.len() > "z9hG4bK".len() => b.to_owned(),
        // RFC 2543 peers: no usable branch, fall back to the dialog-ish identifiers.
        _ => format!(
            "2543:{}:{}:{}",
            req.call_id().unwrap_or_default(),
            req.cseq().map_or(0, |(n, _)| n),
            req.from_tag().unwrap_or_default()
        ),
    };
    ServerKey {
        branch,
        sent_by: via.sent_by().to_ascii_lowercase(),
        method,
    }
}

/// Adds `received` when the source IP differs from the Via host and fills `rport`.
/// Returns whether the Via changed.
fn fix_top_via(via: &mut Via, from: Peer) -> bool {
    let mut changed = false;
    let ip = from.addr.ip();
    if via.host.parse::<IpAddr>().ok() != Some(ip) {
        via.set_param("received", Some(ip.to_string()));
        changed = true;
    }
    if via.has_rport() {
        via.set_param("rport", Some(from.addr.port().to_string()));
        changed = true;
    }
    changed
}

/// RFC 3261 18.2.2 with RFC 3581: streams answer on the same connection; UDP answers the
/// source IP, at the source port when `rport` was asked for, else at the Via port.
fn response_peer(via: Option<&Via>, from: Peer) -> Peer {
    match (from.transport, via) {
        (Transport::Udp, Some(v)) if !v.has_rport() => Peer {
            transport: Transport::Udp,
            addr: SocketAddr::new(from.addr.ip(), v.port.unwrap_or(5060)),
        },
        _ => from,
    }
}

/// A To tag for stateless answers, stable across retransmissions of the same request.
fn stateless_tag(call_id: Option<&str>, cseq: Option<&str>) -> String {
    let mut h = DefaultHasher::new();
    call_id.hash(&mut h);
    cseq.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A reason phrase must be one line of text.
fn phrase(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Via (top entry only), Max-Forwards, Route, From, To, Call-ID for an ACK or CANCEL built
/// from `inv` (RFC 3261 9.1, 17.1.1.3). CSeq is added by the caller.
fn copy_for_ack_or_cancel(inv: &Request, out: &mut Request, to: &str) {
    if let Some(via) = inv.headers.vias().next() {
        out.headers.push("Via", via.to_owned());
    }
    out.headers.push("Max-Forwards", "70");
    for route in inv.headers.get_all("Route") {
        out.headers.push("Route", route.to_owned());
    }
    for name in ["From"] {
        if let Some(v) = inv.headers.get(name) {
            out.headers.push(name, v.to_owned());
        }
    }
    out.headers.push("To", to.to_owned());
    if let Some(v) = inv.headers.get("Call-ID") {
        out.headers.push("Call-ID", v.to_owned());
    }
}

fn build_ack(inv: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, inv.uri.clone());
    let to = resp
        .headers
        .get("To")
        .or_else(|| inv.headers.get("To"))
        .unwrap_or_default();
    copy_for_ack_or_cancel(inv, &mut ack, to);
    ack.headers
        .push("CSeq", format!("{} ACK", inv.cseq().map_or(0, |(n, _)| n)));
    ack
}

#[cfg(test)]
mod tests;
