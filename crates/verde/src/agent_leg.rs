//! The B2BUA's outbound leg: verde calls an agent's registered phone for a queued caller, or
//! the softphone in the agent bar's page (WebRTC).
//!
//! A leg lives inside the caller's call task (one task owns both legs, so bridging needs no
//! locks). It has its own Call-ID and media session; a phone leg has a dialog and an RTP pair
//! (the SIP task routes the agent's messages to the caller's task through an alias of that
//! Call-ID), a browser leg a WebRTC leg on one UDP socket, signaled over the agent's CTI
//! connection. The call task sees the same states and events for both.

use crate::rtp_ports::RtpPair;
use crate::sip_core::{Engine, SipCmd};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Instant;
use verde_media::{
    Codec, InbandDtmf, LocalSdp, MediaConfig, MediaSession, Negotiated, Socket, Transmit,
};
use verde_sip::{Dialog, Method, OutboundInvite, Peer, Request, Response, Transport};

/// Where to send an INVITE for a registration. A phone behind NAT writes an address it cannot
/// be reached at in its Contact, so the source of its REGISTER is used (and over TCP the
/// connection it opened); when the Contact names the very host the REGISTER came from, its port
/// is honoured (a phone that registers from one port and listens on another).
pub fn delivery_peer(binding: &verde_sip::Binding) -> Peer {
    if binding.source.transport == verde_sip::Transport::Udp {
        if let Some(addr) = verde_sip::uri_socket_addr(&binding.contact) {
            if addr.ip() == binding.source.addr.ip() {
                return Peer {
                    transport: binding.source.transport,
                    addr,
                };
            }
        }
    }
    binding.source
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE sent, no final answer yet.
    Ringing,
    /// We sent CANCEL (ring timeout, another agent answered, the caller left).
    Cancelling,
    /// 2xx received and ACKed: media flows.
    Answered,
    Ended,
}

/// What a response on the leg means to the call.
pub enum LegEvent {
    None,
    Ringing,
    Answered,
    /// The agent did not take the call; the status says why.
    Failed(u16),
    /// The agent's side went away during the conversation (a browser page closed).
    HungUp,
}

pub struct AgentLeg {
    pub agent: String,
    pub call_id: String,
    pub state: LegState,
    pub media: Option<MediaSession>,
    io: LegIo,
    pub answered_at: Option<Instant>,
    /// The ACD key the offer was made under: the caller's, or a consultation's.
    pub acd_key: u64,
    /// An outside number (a transfer), not an agent: no ACD, no bar.
    pub number: bool,
    /// Cancelled to be rung again with auto-answer (the agent answered from its bar): its end
    /// is not the offer's.
    pub replaced: bool,
    /// A browser leg connected: its session is made once the WebRTC leg is no longer borrowed.
    pending_media: Option<Negotiated>,
}

/// How the leg reaches the agent. A handful per call and never moved once made: the size
/// difference costs nothing worth an allocation per phone leg.
#[allow(clippy::large_enum_variant)]
enum LegIo {
    Sip(SipIo),
    Browser(Box<BrowserIo>),
}

struct SipIo {
    peer: Peer,
    rtp: RtpPair,
    invite: Request,
    local_sdp: LocalSdp,
    dialog: Option<Dialog>,
    /// Kept to answer every retransmitted 2xx with the same ACK.
    ack: Option<Request>,
}

struct BrowserIo {
    /// Only ever used through `&mut`: the wrapper makes the leg `Sync`, so call tasks that
    /// hold `&AgentLeg` across an await stay `Send`.
    leg: sync_wrapper::SyncWrapper<verde_webrtc::WebRtcLeg>,
    socket: tokio::net::UdpSocket,
    /// The page sent its SDP answer (the agent clicked Answer).
    accepted: bool,
}

/// A leg's sockets, borrowed apart from the leg: a WebRTC leg is not `Sync`, so it must not
/// be borrowed across an await.
pub enum LegSockets<'a> {
    Rtp(&'a RtpPair),
    Web(&'a tokio::net::UdpSocket),
}

/// A datagram for a leg.
pub enum LegPacket {
    Rtp(Socket, Bytes, SocketAddr),
    Web(Bytes, SocketAddr),
}

impl LegSockets<'_> {
    /// Polls for the leg's next datagram; a phone leg's RTP comes before its RTCP.
    pub fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<LegPacket>> {
        use std::task::Poll;
        let mut read = |socket: &tokio::net::UdpSocket| {
            let mut rb = tokio::io::ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => {
                    Poll::Ready(Ok((Bytes::copy_from_slice(rb.filled()), from)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        };
        match self {
            LegSockets::Rtp(pair) => {
                if let Poll::Ready(r) = read(&pair.rtp) {
                    return Poll::Ready(r.map(|(b, f)| LegPacket::Rtp(Socket::Rtp, b, f)));
                }
                read(&pair.rtcp).map(|r| r.map(|(b, f)| LegPacket::Rtp(Socket::Rtcp, b, f)))
            }
            LegSockets::Web(socket) => read(socket).map(|r| r.map(|(b, f)| LegPacket::Web(b, f))),
        }
    }
}

/// The next datagram on any of `legs` (tagged with the caller's index for it); never ready
/// when there is none.
pub async fn recv_any(
    legs: &[(usize, LegSockets<'_>)],
    buf: &mut [u8],
) -> std::io::Result<(usize, LegPacket)> {
    std::future::poll_fn(|cx| {
        for (i, s) in legs {
            if let std::task::Poll::Ready(r) = s.poll_recv(cx, buf) {
                return std::task::Poll::Ready(r.map(|p| (*i, p)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Sends what a session has queued on an RTP pair.
pub fn send_all(media: &mut MediaSession, rtp: &RtpPair) {
    while let Some(Transmit { socket, to, bytes }) = media.poll_transmit() {
        let s = match socket {
            Socket::Rtp => &rtp.rtp,
            Socket::Rtcp => &rtp.rtcp,
        };
        // A full socket buffer drops the packet, as a late packet would be dropped anyway.
        if let Err(e) = s.try_send_to(&bytes, to) {
            tracing::debug!(error = %e, %to, "rtp send failed");
        }
    }
}

/// Sends what a session has queued through a WebRTC leg (SRTP), then the leg's datagrams. The
/// session's own RTCP stays home: the leg's interceptors report to the browser.
pub fn send_web(
    media: &mut MediaSession,
    leg: &mut verde_webrtc::WebRtcLeg,
    socket: &tokio::net::UdpSocket,
    now: Instant,
) {
    while let Some(Transmit {
        socket: s, bytes, ..
    }) = media.poll_transmit()
    {
        if s == Socket::Rtp && leg.is_connected() {
            if let Err(e) = leg.send_rtp(&bytes, now) {
                tracing::debug!(error = %e, "web rtp not sent");
            }
        }
    }
    while let Some((to, bytes)) = leg.poll_transmit() {
        if let Err(e) = socket.try_send_to(&bytes, to) {
            tracing::debug!(error = %e, %to, "web datagram send failed");
        }
    }
}

/// The media session on top of a WebRTC leg: its "remote" is the fixed `MEDIA_PEER`, the
/// browser's real address stays behind ICE (`docs/webrtc.md`).
pub fn web_negotiated(audio: &verde_webrtc::AudioMedia) -> Option<Negotiated> {
    let codec = match audio.codec {
        verde_webrtc::AudioCodec::Pcmu => Codec::Pcmu,
        verde_webrtc::AudioCodec::Pcma => Codec::Pcma,
        other => {
            tracing::error!(codec = ?other, "a WebRTC leg must present G.711 to its session");
            return None;
        }
    };
    Some(Negotiated {
        answer: String::new(),
        codec,
        payload_type: audio.payload_type,
        dtmf_pt: audio.dtmf_pt,
        remote: verde_webrtc::MEDIA_PEER,
        remote_rtcp: verde_webrtc::MEDIA_PEER,
        direction: verde_media::Direction::SendRecv,
    })
}

impl AgentLeg {
    /// Builds the INVITE for `agent` at its registered `contact`, reachable at `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn invite(
        engine: &Engine,
        agent: &str,
        queue: &str,
        contact: &str,
        peer: Peer,
        caller: &str,
        rtp: RtpPair,
        auto_answer: bool,
        sip_out: &mut Vec<SipCmd>,
    ) -> AgentLeg {
        // `agents[].srtp`; outside numbers (transfers, callbacks) get plain offers.
        let srtp = engine
            .cfg
            .agents
            .iter()
            .find(|a| a.id == agent)
            .map(|a| a.srtp.policy())
            .unwrap_or_default();
        let mut local_sdp = LocalSdp::new(
            engine.media_ip,
            rtp.port,
            &[Codec::Pcmu, Codec::Pcma],
            rand::random::<u32>() as u64,
        )
        .with_srtp(srtp);
        let host = engine.sip_host();
        let from = verde_sip::name_addr(caller, caller, &host);
        let to = format!("<sip:{agent}@{host}>");
        let local_contact = engine.contact(peer.transport);
        let invite = OutboundInvite {
            target: contact,
            from: &from,
            to: &to,
            local_contact: &local_contact,
            transport: peer.transport,
        }
        .build()
        .with_header("Subject", format!("verde queue {queue}"))
        .with_header("X-Verde-Queue", queue);
        // The agent clicked Answer on its bar: ask the phone to pick up by itself, in the two
        // dialects phones understand (BroadSoft's Call-Info and the Alert-Info of Polycom,
        // Yealink, Snom and others). Phones that honour neither ring as usual.
        let invite = if auto_answer {
            invite
                .with_header("Call-Info", format!("<sip:{host}>;answer-after=0"))
                .with_header(
                    "Alert-Info",
                    "<http://127.0.0.1/auto>;info=alert-autoanswer;delay=0",
                )
        } else {
            invite
        };
        let invite = invite.with_body("application/sdp", local_sdp.offer());
        let call_id = invite.call_id().unwrap_or_default().to_string();
        sip_out.push(SipCmd::Request {
            call_id: call_id.clone(),
            request: invite.clone(),
            to: peer,
        });
        AgentLeg {
            agent: agent.to_string(),
            call_id,
            state: LegState::Ringing,
            media: None,
            io: LegIo::Sip(SipIo {
                peer,
                rtp,
                invite,
                local_sdp,
                dialog: None,
                ack: None,
            }),
            answered_at: None,
            acd_key: 0,
            number: false,
            replaced: false,
            pending_media: None,
        }
    }

    /// A response to our INVITE (or a stray 2xx after the transaction ended).
    pub fn on_response(
        &mut self,
        resp: &Response,
        now: Instant,
        sip_out: &mut Vec<SipCmd>,
    ) -> LegEvent {
        let LegIo::Sip(sip) = &mut self.io else {
            return LegEvent::None;
        };
        let is_invite = resp
            .cseq()
            .map(|(_, m)| m == Method::Invite)
            .unwrap_or(false);
        if !is_invite {
            return LegEvent::None;
        }
        match resp.status {
            100 => LegEvent::None,
            101..=199 => {
                if self.state == LegState::Ringing && resp.status == 180 {
                    LegEvent::Ringing
                } else {
                    LegEvent::None
                }
            }
            200..=299 => {
                if let Some(ack) = &sip.ack {
                    // A retransmitted 2xx: our ACK was lost.
                    sip_out.push(SipCmd::Ack {
                        request: ack.clone(),
                        to: sip.peer,
                    });
                    return LegEvent::None;
                }
                let dialog = match Dialog::uac(&sip.invite, resp) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(agent = %self.agent, error = ?e, "agent's 2xx unusable");
                        self.state = LegState::Ended;
                        return LegEvent::Failed(500);
                    }
                };
                let ack = dialog.ack(1);
                sip_out.push(SipCmd::Ack {
                    request: ack.clone(),
                    to: sip.peer,
                });
                sip.ack = Some(ack);
                sip.dialog = Some(dialog);
                if self.state == LegState::Cancelling {
                    // The answer crossed our CANCEL: take the call down at once.
                    self.bye(sip_out);
                    return LegEvent::None;
                }
                let answer = std::str::from_utf8(&resp.body).unwrap_or("");
                match sip.local_sdp.accept_answer(answer) {
                    Ok(neg) => {
                        let keys = sip.local_sdp.srtp().cloned();
                        if let Some(k) = &keys {
                            tracing::info!(agent = %self.agent, suite = k.suite.name(), "agent leg media is SRTP");
                        }
                        self.start_media(&neg, now);
                        if let Some(Err(e)) = self.media.as_mut().map(|m| m.set_srtp(keys.as_ref()))
                        {
                            tracing::error!(agent = %self.agent, error = %e, "SRTP context not created");
                            self.bye(sip_out);
                            return LegEvent::Failed(500);
                        }
                        self.state = LegState::Answered;
                        self.answered_at = Some(now);
                        LegEvent::Answered
                    }
                    Err(e) => {
                        tracing::warn!(agent = %self.agent, error = %e, "agent's SDP answer refused");
                        self.bye(sip_out);
                        LegEvent::Failed(488)
                    }
                }
            }
            status => {
                let was = self.state;
                self.state = LegState::Ended;
                if was == LegState::Cancelling {
                    LegEvent::None
                } else {
                    LegEvent::Failed(status)
                }
            }
        }
    }

    fn start_media(&mut self, neg: &Negotiated, now: Instant) {
        let ssrc = match &mut self.io {
            LegIo::Browser(b) => Some(b.leg.get_mut().ssrc()),
            LegIo::Sip(_) => None,
        };
        let mut media = MediaSession::new(
            neg,
            MediaConfig {
                inband_dtmf: InbandDtmf::Never,
                wall_clock: Some(std::time::SystemTime::now()),
                ssrc,
                ..MediaConfig::default()
            },
            now,
        );
        media.set_relay(true);
        self.media = Some(media);
    }

    /// Stops ringing the agent.
    pub fn cancel(&mut self, sip_out: &mut Vec<SipCmd>) {
        if self.state != LegState::Ringing {
            return;
        }
        match &mut self.io {
            LegIo::Sip(_) => {
                sip_out.push(SipCmd::CancelInvite {
                    call_id: self.call_id.clone(),
                });
                self.state = LegState::Cancelling;
            }
            // The page stops ringing with the bar's call_ended; nothing to wait for.
            LegIo::Browser(b) => {
                b.leg.get_mut().close();
                self.state = LegState::Ended;
            }
        }
    }

    /// Ends an answered leg.
    pub fn bye(&mut self, sip_out: &mut Vec<SipCmd>) {
        match &mut self.io {
            LegIo::Sip(sip) => {
                if let Some(d) = sip.dialog.as_mut() {
                    let bye = d.request(Method::Bye);
                    sip_out.push(SipCmd::Request {
                        call_id: self.call_id.clone(),
                        request: bye,
                        to: sip.peer,
                    });
                }
            }
            LegIo::Browser(b) => b.leg.get_mut().close(),
        }
        if let Some(m) = self.media.as_mut() {
            m.close(Instant::now());
        }
        self.state = LegState::Ended;
    }

    /// Hangs up whatever the state: CANCEL while ringing, BYE once answered.
    pub fn hang_up(&mut self, sip_out: &mut Vec<SipCmd>) {
        match self.state {
            LegState::Ringing => self.cancel(sip_out),
            LegState::Answered => self.bye(sip_out),
            LegState::Cancelling | LegState::Ended => {}
        }
    }

    /// A re-INVITE or UPDATE from the agent (hold / unhold): our answer, or None if refused.
    pub fn reoffer(&mut self, offer: &str, now: Instant) -> Option<Negotiated> {
        let LegIo::Sip(sip) = &mut self.io else {
            return None;
        };
        let neg = sip.local_sdp.answer(offer).ok()?;
        if let Some(m) = self.media.as_mut() {
            m.update(&neg, now);
            if let Err(e) = m.set_srtp(sip.local_sdp.srtp()) {
                tracing::error!(agent = %self.agent, error = %e, "SRTP context not created on re-offer");
            }
        }
        Some(neg)
    }

    /// Sends the NOTIFY (message/sipfrag) that tells the agent's phone how its REFER went.
    pub fn notify_refer(
        &mut self,
        refer_cseq: Option<u32>,
        status: u16,
        reason: &str,
        sip_out: &mut Vec<SipCmd>,
    ) {
        let LegIo::Sip(sip) = &mut self.io else {
            return;
        };
        if let Some(d) = sip.dialog.as_mut() {
            let notify = d.refer_notify(refer_cseq, status, reason);
            sip_out.push(SipCmd::Request {
                call_id: self.call_id.clone(),
                request: notify,
                to: sip.peer,
            });
        }
    }

    /// The leg's sockets, to wait on without borrowing the leg.
    pub fn sockets(&self) -> LegSockets<'_> {
        match &self.io {
            LegIo::Sip(sip) => LegSockets::Rtp(&sip.rtp),
            LegIo::Browser(b) => LegSockets::Web(&b.socket),
        }
    }

    /// A datagram that arrived for the leg.
    pub fn handle_packet(&mut self, packet: LegPacket, now: Instant) {
        match (packet, &mut self.io) {
            (LegPacket::Rtp(socket, pkt, from), _) => {
                if let Some(m) = self.media.as_mut() {
                    m.handle_packet(socket, pkt, from, now);
                }
            }
            (LegPacket::Web(pkt, from), LegIo::Browser(b)) => {
                b.leg.get_mut().handle_datagram(from, &pkt, now)
            }
            (LegPacket::Web(..), LegIo::Sip(_)) => {}
        }
    }

    /// Sends what the leg's session (and for a browser, its WebRTC leg) has queued.
    pub fn send(&mut self, now: Instant) {
        match (&mut self.io, self.media.as_mut()) {
            (LegIo::Sip(sip), Some(m)) => send_all(m, &sip.rtp),
            (LegIo::Sip(_), None) => {}
            (LegIo::Browser(b), Some(m)) => send_web(m, b.leg.get_mut(), &b.socket, now),
            (LegIo::Browser(b), None) => {
                // Handshake datagrams before the session exists.
                while let Some((to, bytes)) = b.leg.get_mut().poll_transmit() {
                    let _ = b.socket.try_send_to(&bytes, to);
                }
            }
        }
    }

    /// The earliest timer of the leg's session and WebRTC leg.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let web = match &mut self.io {
            LegIo::Browser(b) => b.leg.get_mut().poll_timeout(),
            LegIo::Sip(_) => None,
        };
        let media = self.media.as_ref().and_then(|m| m.poll_timeout());
        web.into_iter().chain(media).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let LegIo::Browser(b) = &mut self.io {
            b.leg.get_mut().handle_timeout(now);
        }
        if let Some(m) = self.media.as_mut() {
            m.handle_timeout(now);
        }
    }

    /// Whether a request from the agent's side carries this leg's dialog tags (its From tag is
    /// the phone's, its To tag ours). No dialog yet (still ringing): nothing can be in it.
    pub fn owns(&self, req: &Request) -> bool {
        match &self.io {
            LegIo::Sip(SipIo {
                dialog: Some(d), ..
            }) => req.from_tag() == Some(d.remote_tag()) && req.to_tag() == Some(d.local_tag()),
            _ => false,
        }
    }

    pub fn local_tag(&self) -> String {
        match &self.io {
            LegIo::Sip(sip) => sip
                .dialog
                .as_ref()
                .map(|d| d.local_tag().to_string())
                .unwrap_or_default(),
            LegIo::Browser(_) => String::new(),
        }
    }

    /// The leg's SIP dialog once answered, and where its requests go (None for a browser).
    pub fn sip_dialog(&self) -> Option<(&Dialog, Peer)> {
        match &self.io {
            LegIo::Sip(sip) => sip.dialog.as_ref().map(|d| (d, sip.peer)),
            LegIo::Browser(_) => None,
        }
    }

    /// The transport the agent's phone uses (UDP for a browser: never used for SIP).
    pub fn transport(&self) -> Transport {
        match &self.io {
            LegIo::Sip(sip) => sip.peer.transport,
            LegIo::Browser(_) => Transport::Udp,
        }
    }

    /// Whether the leg rings the agent's browser.
    pub fn is_browser(&self) -> bool {
        matches!(self.io, LegIo::Browser(_))
    }

    /// Offers the call to the softphone in the agent's page: the leg and verde's SDP offer,
    /// which the bar receives as `softphone_offer`.
    pub fn browser(
        web: &crate::web_call::WebRtc,
        agent: &str,
        now: Instant,
    ) -> Option<(AgentLeg, String)> {
        let Some((socket, config)) = web.bind() else {
            tracing::error!(%agent, "no free port in webrtc.ports for the softphone");
            return None;
        };
        let (leg, offer) = match verde_webrtc::WebRtcLeg::offer(config, now) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(%agent, error = %e, "softphone offer failed");
                return None;
            }
        };
        let call_id = format!("b-{:016x}", rand::random::<u64>());
        let leg = AgentLeg {
            agent: agent.to_string(),
            call_id,
            state: LegState::Ringing,
            media: None,
            io: LegIo::Browser(Box::new(BrowserIo {
                leg: sync_wrapper::SyncWrapper::new(leg),
                socket,
                accepted: false,
            })),
            answered_at: None,
            acd_key: 0,
            number: false,
            replaced: false,
            pending_media: None,
        };
        Some((leg, offer))
    }

    /// The page's SDP answer: the agent answered in the browser. Media starts once ICE and
    /// DTLS are up ([`AgentLeg::poll_browser`] reports `Answered`).
    pub fn accept_browser_answer(&mut self, sdp: &str, now: Instant) -> Result<(), String> {
        let LegIo::Browser(b) = &mut self.io else {
            return Err("this leg rings a phone, not the browser".into());
        };
        if self.state != LegState::Ringing || b.accepted {
            return Err("the offer is no longer ringing".into());
        }
        b.leg
            .get_mut()
            .accept_answer(sdp, now)
            .map_err(|e| e.to_string())?;
        b.accepted = true;
        Ok(())
    }

    pub fn add_browser_candidate(&mut self, candidate: &str) {
        if let LegIo::Browser(b) = &mut self.io {
            if let Err(e) = b.leg.get_mut().add_remote_candidate(candidate) {
                tracing::debug!(agent = %self.agent, error = %e, "softphone candidate not usable");
            }
        }
    }

    /// Moves a browser leg's decrypted packets into its session and reports what its WebRTC
    /// leg did: `Answered` once connected after the agent's answer, `Failed` when the page
    /// went away.
    pub fn poll_browser(&mut self, now: Instant) -> LegEvent {
        let LegIo::Browser(b) = &mut self.io else {
            return LegEvent::None;
        };
        if let Some(m) = self.media.as_mut() {
            while let Some(pkt) = b.leg.get_mut().poll_rtp() {
                m.handle_packet(Socket::Rtp, pkt, verde_webrtc::MEDIA_PEER, now);
            }
        }
        let mut outcome = LegEvent::None;
        while let Some(e) = b.leg.get_mut().poll_event() {
            match e {
                verde_webrtc::LegEvent::Connected if self.state == LegState::Ringing => {
                    let neg = b
                        .leg
                        .get_mut()
                        .session_media()
                        .and_then(|a| web_negotiated(&a));
                    match neg {
                        Some(neg) => {
                            self.state = LegState::Answered;
                            self.answered_at = Some(now);
                            outcome = LegEvent::Answered;
                            // start_media borrows self whole: done below.
                            self.pending_media = Some(neg);
                        }
                        None => {
                            b.leg.get_mut().close();
                            self.state = LegState::Ended;
                            outcome = LegEvent::Failed(488);
                        }
                    }
                }
                verde_webrtc::LegEvent::Disconnected => {
                    tracing::warn!(agent = %self.agent, "softphone media interrupted")
                }
                verde_webrtc::LegEvent::Failed | verde_webrtc::LegEvent::Closed
                    if self.state != LegState::Ended =>
                {
                    tracing::info!(agent = %self.agent, event = ?e, "softphone gone");
                    let was = self.state;
                    self.state = LegState::Ended;
                    outcome = if was == LegState::Answered {
                        LegEvent::HungUp
                    } else {
                        LegEvent::Failed(480)
                    };
                }
                _ => {}
            }
        }
        if let Some(neg) = self.pending_media.take() {
            self.start_media(&neg, now);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verde_sip::{Binding, Transport};

    fn binding(contact: &str, source: &str, transport: Transport) -> Binding {
        let now = Instant::now();
        Binding {
            contact: contact.into(),
            source: Peer {
                transport,
                addr: source.parse().unwrap(),
            },
            expires_at: now,
            registered_at: now,
            call_id: "c".into(),
            cseq: 1,
        }
    }

    #[test]
    fn invites_go_to_the_contact_only_when_it_is_the_registering_host() {
        let same_host = binding(
            "<sip:1001@127.0.0.1:5070>",
            "127.0.0.1:40000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&same_host).addr,
            "127.0.0.1:5070".parse::<SocketAddr>().unwrap()
        );
        let natted = binding(
            "<sip:1001@192.168.1.10:5060>",
            "203.0.113.9:31000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&natted).addr,
            "203.0.113.9:31000".parse::<SocketAddr>().unwrap()
        );
        let tcp = binding(
            "<sip:1001@127.0.0.1:5070;transport=tcp>",
            "127.0.0.1:40000",
            Transport::Tcp,
        );
        assert_eq!(
            delivery_peer(&tcp).addr,
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap()
        );
        let hostname = binding(
            "<sip:1001@phone.example>",
            "127.0.0.1:40000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&hostname).addr,
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap()
        );
    }
}
