//! WebRTC call legs for verde: a browser (or a second verde acting as one) reaches the same
//! IVR, queues and agents as a PSTN caller.
//!
//! A [`WebRtcLeg`] wraps one sans-IO `rtc::peer_connection::RTCPeerConnection` (ICE, DTLS,
//! SRTP, SDP) and shows the rest of verde what a SIP leg's socket shows: plain RTP packets.
//! Decrypted RTP comes out of [`WebRtcLeg::poll_rtp`] and is fed to a
//! `verde_media::MediaSession` as if it had arrived on an RTP socket; what the session
//! transmits on its RTP socket goes into [`WebRtcLeg::send_rtp`], which SRTP-protects it.
//! The binary owns the UDP socket and the timer, exactly as for a SIP leg:
//! datagrams in through [`WebRtcLeg::handle_datagram`], out through
//! [`WebRtcLeg::poll_transmit`], deadlines through [`WebRtcLeg::poll_timeout`] and
//! [`WebRtcLeg::handle_timeout`].
//!
//! When the browser picks Opus, the leg transcodes (an [`OpusTranscoder`] between rtc and
//! `poll_rtp`/`send_rtp`) and the session is built with [`WebRtcLeg::session_media`]: PCMU
//! and telephone-event/8000, as for G.711.
//!
//! This crate must not know about SIP, the IVR, the websocket signaling transport, sockets or
//! clocks: SDP and candidates arrive as strings, time as `now`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

/// An audio codec we are willing to negotiate with the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// G.711 µ-law: no transcoding to or from a PCMU trunk.
    Pcmu,
    /// G.711 A-law: no transcoding to or from a PCMA trunk (the usual case in Italy).
    Pcma,
    /// Opus at 48 kHz; needs transcoding to G.711 before it reaches a `MediaSession`.
    Opus,
}

impl AudioCodec {
    fn parameters(self) -> RTCRtpCodecParameters {
        let (mime, channels, fmtp, pt) = match self {
            AudioCodec::Pcmu => (MIME_TYPE_PCMU, 0, "", 0),
            AudioCodec::Pcma => (MIME_TYPE_PCMA, 0, "", 8),
            AudioCodec::Opus => (MIME_TYPE_OPUS, 2, "minptime=10;useinbandfec=1", 111),
        };
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: self.clock_rate(),
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: pt,
        }
    }

    /// RTP clock rate on the wire (RFC 7587: Opus is always 48 kHz there).
    fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::Opus => 48000,
        }
    }

    /// The name in an SDP `a=rtpmap` line.
    fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Opus => "opus",
        }
    }

    fn from_mime(mime: &str) -> Option<AudioCodec> {
        [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus]
            .into_iter()
            .find(|c| {
                c.parameters()
                    .rtp_codec
                    .mime_type
                    .eq_ignore_ascii_case(mime)
            })
    }
}

/// RFC 4733 events at `clock_rate`: 8 kHz with G.711 (the only rate the DTMF code in
/// verde-media understands), 48 kHz with Opus (rescaled to 8 kHz by the transcoder). Browsers
/// offer one per audio clock rate; the answer keeps the one whose rate matches the codec.
fn telephone_event(clock_rate: u32) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
            clock_rate,
            channels: 0,
            sdp_fmtp_line: "0-15".to_owned(),
            rtcp_feedback: vec![],
        },
        // Chrome's numbers; they only matter when we are the offerer.
        payload_type: if clock_rate == 8000 { 101 } else { 110 },
    }
}

/// The DTLS certificate. Generating one costs an ECDSA key generation, so the binary makes one
/// at start-up and clones it into every leg; browsers accept any self-signed certificate
/// whose fingerprint matches the SDP.
#[derive(Clone)]
pub struct DtlsIdentity(RTCCertificate);

impl DtlsIdentity {
    pub fn generate() -> Result<Self, WebRtcError> {
        let provider = rtc::crypto::default_provider()
            .map_err(|e| WebRtcError::Rtc(format!("crypto provider: {e}")))?;
        let params = CertificateParams::new(vec!["verde".to_owned()])
            .map_err(|e| WebRtcError::Rtc(format!("certificate parameters: {e}")))?;
        let cert = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )?;
        Ok(DtlsIdentity(cert))
    }
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DtlsIdentity(..)")
    }
}

/// Per-leg settings.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The address written in our one host candidate: the public IP browsers reach (1:1 NAT or
    /// a plain public host) and the port of the UDP socket the binary bound for this leg from
    /// its port range. The socket itself may be bound to a private address; rtc never sees
    /// the bound address, only this one.
    pub candidate: SocketAddr,
    /// What we accept, in our order of preference: the answer picks the first of these the
    /// browser offers, whatever the browser's own order (`offer::prefer`).
    pub codecs: Vec<AudioCodec>,
    /// Accept RFC 4733 telephone-event (at 8 kHz, or at 48 kHz when Opus is chosen).
    pub dtmf: bool,
    /// Shared DTLS certificate; a fresh one per leg when `None` (slow, fine for tests).
    pub identity: Option<DtlsIdentity>,
    /// Our SSRC for the audio we send; `verde_media::MediaConfig::ssrc` should match it.
    pub ssrc: u32,
    /// ICE-lite (RFC 8445 §2.5): we answer the browser's checks and never send our own; the
    /// browser nominates at once. Right for a server with a reachable address (verde's legs):
    /// a leg connects in tens of milliseconds instead of waiting for our own check rounds.
    /// A client (the load tool, tests playing the browser) needs full ICE.
    pub ice_lite: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("webrtc: {0}")]
    Rtc(String),
    #[error("the offer has no audio codec we accept (we take {0:?})")]
    NoCommonCodec(Vec<AudioCodec>),
    #[error("not an RTP packet")]
    MalformedRtp,
    #[error("no local description after negotiation")]
    NoLocalDescription,
    #[error("opus: {0}")]
    Codec(String),
}

impl From<rtc::shared::error::Error> for WebRtcError {
    fn from(e: rtc::shared::error::Error) -> Self {
        WebRtcError::Rtc(e.to_string())
    }
}

/// Audio as negotiated on the wire ([`WebRtcLeg::media`]) or as the session must see it
/// ([`WebRtcLeg::session_media`], enough to build a `verde_media::Negotiated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioMedia {
    pub codec: AudioCodec,
    pub payload_type: u8,
    /// telephone-event at the codec's clock rate, when both sides have it: 8 kHz with G.711,
    /// 48 kHz with Opus on the wire (8 kHz again in `session_media`).
    pub dtmf_pt: Option<u8>,
}

/// Connection milestones for the call task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE and DTLS are up: SRTP keys exist, media can flow. Start the IVR here, not on the
    /// answer, or the first prompt frames are dropped.
    Connected,
    /// No traffic for a while (ICE consent); may come back.
    Disconnected,
    /// ICE or DTLS failed, or consent expired: hang up.
    Failed,
    Closed,
}

/// The address a `MediaSession` on top of a leg is told is its remote, and is given as `from`
/// for every packet from [`WebRtcLeg::poll_rtp`]: the real peer is behind ICE and may change
/// (ICE restart, network switch) without the session noticing, and the session only needs a
/// stable, known address so it sends from the first frame instead of waiting to latch.
/// Never a socket destination: the session's RTP transmits go to [`WebRtcLeg::send_rtp`].
pub const MEDIA_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

/// One WebRTC audio leg; see the crate documentation for how it is driven.
pub struct WebRtcLeg {
    pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    candidate: SocketAddr,
    ssrc: u32,
    codecs: Vec<AudioCodec>,
    media: Option<AudioMedia>,
    /// Present when Opus was negotiated: the session sees PCMU.
    transcoder: Option<OpusTranscoder>,
    connected: bool,
    rtp_in: VecDeque<Bytes>,
    events: VecDeque<LegEvent>,
    /// Inputs rtc rejected (stray datagrams, RTP before keys); counted, never fatal.
    rejected: u64,
}

impl WebRtcLeg {
    /// Answers a browser's offer. Returns the leg and the SDP answer to send back; the answer
    /// already carries our candidate, so we never trickle.
    pub fn answer(
        config: WebRtcConfig,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(WebRtcLeg, String), WebRtcError> {
        let mut leg = WebRtcLeg::build(config, now)?;
        let offer_sdp = offer::prefer(offer_sdp, &leg.codecs);
        let rate = offer::chosen_clock_rate(&offer_sdp, &leg.codecs);
        let offer =
            RTCSessionDescription::offer(offer::keep_telephone_events_at(&offer_sdp, rate))?;
        leg.pc.set_remote_description(now, offer)?;
        leg.add_local_candidate()?;
        let answer = leg.pc.create_answer(None)?;
        leg.pc.set_local_description(now, answer)?;
        leg.settle_media()?;
        let sdp = leg.local_sdp()?;
        leg.pump();
        Ok((leg, sdp))
    }

    /// Makes an offer, as a browser would: for the load tool and for tests.
    pub fn offer(config: WebRtcConfig, now: Instant) -> Result<(WebRtcLeg, String), WebRtcError> {
        let mut leg = WebRtcLeg::build(config, now)?;
        leg.add_local_candidate()?;
        let offer = leg.pc.create_offer(None)?;
        leg.pc.set_local_description(now, offer)?;
        let sdp = leg.local_sdp()?;
        leg.pump();
        Ok((leg, sdp))
    }

    /// Takes the answer to our [`WebRtcLeg::offer`].
    pub fn accept_answer(&mut self, answer_sdp: &str, now: Instant) -> Result<(), WebRtcError> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())?;
        self.pc.set_remote_description(now, answer)?;
        self.settle_media()?;
        self.pump();
        Ok(())
    }

    fn build(config: WebRtcConfig, now: Instant) -> Result<WebRtcLeg, WebRtcError> {
        if config.codecs.is_empty() {
            return Err(WebRtcError::NoCommonCodec(config.codecs));
        }
        let mut media_engine = MediaEngine::default();
        for codec in &config.codecs {
            media_engine.register_codec(codec.parameters(), RtpCodecKind::Audio)?;
        }
        if config.dtmf {
            media_engine.register_codec(telephone_event(8000), RtpCodecKind::Audio)?;
            if config.codecs.contains(&AudioCodec::Opus) {
                media_engine.register_codec(telephone_event(48000), RtpCodecKind::Audio)?;
            }
        }
        let mut rtc_config = RTCConfigurationBuilder::new();
        if let Some(identity) = &config.identity {
            rtc_config = rtc_config.with_certificates(vec![identity.0.clone()]);
        }
        // RTCP sender/receiver reports only: NACK and TWCC buy nothing for G.711 at 50
        // packets/s. The reports are rtc's, over SRTCP; the MediaSession's own RTCP is not
        // carried (docs/webrtc.md).
        let registry = configure_rtcp_reports(rtc::interceptor::Registry::new());
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_interceptor_registry(registry)
            .with_configuration(rtc_config.build())
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_lite(config.ice_lite)
                    .build(),
            )
            .with_media_engine(media_engine)
            .build(now)?;
        let track = MediaStreamTrack::new(
            "verde".to_owned(),
            "verde-audio".to_owned(),
            "verde-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(config.ssrc),
                    ..Default::default()
                },
                // No codec here: rtc would turn it into the transceiver's only codec
                // preference and offer nothing else.
                ..Default::default()
            }],
        );
        let sender = pc.add_track(track)?;
        Ok(WebRtcLeg {
            pc,
            sender,
            candidate: config.candidate,
            ssrc: config.ssrc,
            codecs: config.codecs,
            media: None,
            transcoder: None,
            connected: false,
            rtp_in: VecDeque::new(),
            events: VecDeque::new(),
            rejected: 0,
        })
    }

    fn add_local_candidate(&mut self) -> Result<(), WebRtcError> {
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.candidate.ip().to_string(),
                port: self.candidate.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| WebRtcError::Rtc(format!("host candidate: {e}")))?;
        self.pc
            .add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
        // End of gathering: we have exactly one candidate and it is in the SDP.
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        Ok(())
    }

    fn local_sdp(&self) -> Result<String, WebRtcError> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(WebRtcError::NoLocalDescription)
    }

    /// Reads the sender's negotiated codecs: the first one we accept is what both sides send.
    fn settle_media(&mut self) -> Result<(), WebRtcError> {
        let mut sender = self
            .pc
            .rtp_sender(self.sender)
            .ok_or_else(|| WebRtcError::Rtc("audio sender vanished".to_owned()))?;
        let codecs = &sender.get_parameters().rtp_parameters.codecs;
        let audio = codecs.iter().find_map(|c| {
            AudioCodec::from_mime(&c.rtp_codec.mime_type).map(|codec| (codec, c.payload_type))
        });
        let Some((codec, payload_type)) = audio else {
            return Err(WebRtcError::NoCommonCodec(self.codecs.clone()));
        };
        let dtmf_pt = codecs
            .iter()
            .find(|c| {
                c.rtp_codec
                    .mime_type
                    .eq_ignore_ascii_case(MIME_TYPE_TELEPHONE_EVENT)
                    && c.rtp_codec.clock_rate == codec.clock_rate()
            })
            .map(|c| c.payload_type);
        tracing::debug!(?codec, payload_type, ?dtmf_pt, "webrtc audio negotiated");
        if codec == AudioCodec::Opus && self.transcoder.is_none() {
            self.transcoder = Some(OpusTranscoder::new(payload_type, dtmf_pt)?);
        }
        self.media = Some(AudioMedia {
            codec,
            payload_type,
            dtmf_pt,
        });
        Ok(())
    }

    /// Adds a candidate the browser trickled (`RTCIceCandidate.candidate`, with or without
    /// the `candidate:` prefix). An empty string is the browser's end-of-candidates, ignored.
    pub fn add_remote_candidate(&mut self, candidate: &str) -> Result<(), WebRtcError> {
        self.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: candidate.to_owned(),
            ..Default::default()
        })?;
        Ok(())
    }

    /// Feeds one datagram received on this leg's socket.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                // rtc matches datagrams to local candidates by this address, so it must be
                // the advertised one, not what the socket is bound to.
                local_addr: self.candidate,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(bytes),
        };
        if let Err(e) = self.pc.handle_read(msg) {
            self.rejected += 1;
            tracing::debug!(%from, error = %e, "webrtc datagram rejected");
        }
        self.pump();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!(error = %e, "webrtc timeout handling failed");
        }
        self.pump();
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// The next datagram to send from this leg's socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.pc
            .poll_write()
            .map(|m| (m.transport.peer_addr, m.message.freeze()))
    }

    /// The next received RTP packet, decrypted, as bytes a `MediaSession` parses (audio and
    /// telephone-event alike), already G.711 when the browser sends Opus.
    pub fn poll_rtp(&mut self) -> Option<Bytes> {
        self.rtp_in.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// Sends one RTP packet (as a `MediaSession` writes it) SRTP-protected to the browser.
    /// The SSRC is rewritten to the leg's; packets before [`LegEvent::Connected`] are dropped
    /// (there are no keys yet), which is why the IVR waits for it. With Opus negotiated,
    /// PCMU and telephone-event/8000 are transcoded and anything else is dropped.
    pub fn send_rtp(&mut self, rtp: &[u8], now: Instant) -> Result<(), WebRtcError> {
        let mut buf = rtp;
        let packet =
            rtc::rtp::Packet::unmarshal(&mut buf).map_err(|_| WebRtcError::MalformedRtp)?;
        if !self.connected {
            return Ok(());
        }
        let mut packet = match &mut self.transcoder {
            Some(transcoder) => match transcoder.outgoing(packet)? {
                Some(packet) => packet,
                None => return Ok(()),
            },
            None => packet,
        };
        packet.header.ssrc = self.ssrc;
        let mut sender = self
            .pc
            .rtp_sender(self.sender)
            .ok_or_else(|| WebRtcError::Rtc("audio sender vanished".to_owned()))?;
        sender.write_rtp(now, packet)?;
        Ok(())
    }

    /// Negotiated audio on the wire, once an answer exists.
    pub fn media(&self) -> Option<AudioMedia> {
        self.media
    }

    /// What the `MediaSession` on top must be built with, once an answer exists: `media()`
    /// for G.711; for Opus, PCMU (PT 0) with telephone-event/8000 at PT 101 when a 48 kHz
    /// telephone-event was negotiated, since the leg transcodes both ways.
    pub fn session_media(&self) -> Option<AudioMedia> {
        let media = self.media?;
        Some(match media.codec {
            AudioCodec::Pcmu | AudioCodec::Pcma => media,
            AudioCodec::Opus => AudioMedia {
                codec: AudioCodec::Pcmu,
                payload_type: transcode::SESSION_PCMU_PT,
                dtmf_pt: media.dtmf_pt.map(|_| transcode::SESSION_DTMF_PT),
            },
        })
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Datagrams and timeouts rtc refused, for diagnostics.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Starts a graceful close (DTLS close_notify); keep polling transmits briefly after.
    pub fn close(&mut self) {
        if let Err(e) = self.pc.close() {
            tracing::debug!(error = %e, "webrtc close failed");
        }
        self.pump();
    }

    /// Moves what rtc produced into our queues, so callers see RTP and events without
    /// knowing rtc's message types.
    fn pump(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                tracing::debug!(%state, "webrtc connection state");
                let ev = match state {
                    RTCPeerConnectionState::Connected => {
                        self.connected = true;
                        LegEvent::Connected
                    }
                    RTCPeerConnectionState::Disconnected => LegEvent::Disconnected,
                    RTCPeerConnectionState::Failed => {
                        self.connected = false;
                        LegEvent::Failed
                    }
                    RTCPeerConnectionState::Closed => {
                        self.connected = false;
                        LegEvent::Closed
                    }
                    _ => continue,
                };
                self.events.push_back(ev);
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            // RTCP (already consumed by rtc's report interceptor) stops here; see docs/webrtc.md.
            let RTCMessage::RtpPacket(_, packet) = message else {
                continue;
            };
            let Some(transcoder) = &mut self.transcoder else {
                push_marshalled(&mut self.rtp_in, &packet);
                continue;
            };
            let mut out = Vec::new();
            if let Err(e) = transcoder.incoming(packet, &mut out) {
                tracing::debug!(error = %e, "browser packet not transcoded");
            }
            for packet in &out {
                push_marshalled(&mut self.rtp_in, packet);
            }
        }
    }
}

fn push_marshalled(queue: &mut VecDeque<Bytes>, packet: &rtc::rtp::Packet) {
    match packet.marshal() {
        Ok(bytes) => queue.push_back(bytes.freeze()),
        Err(e) => tracing::debug!(error = %e, "cannot re-serialize RTP"),
    }
}

/// Offer clean-up, public only so `fuzz/` can drive it; not part of the crate's API.
#[doc(hidden)]
pub mod offer;
mod transcode;

pub use transcode::OpusTranscoder;

#[cfg(test)]
mod tests;
