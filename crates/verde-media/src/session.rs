//! `MediaSession`: one call leg's media, sans-IO.
//!
//! The binary owns two UDP sockets (RTP and RTP+1 for RTCP), feeds what arrives to
//! [`MediaSession::handle_packet`], calls [`MediaSession::handle_timeout`] at
//! [`MediaSession::poll_timeout`], and sends whatever [`MediaSession::poll_transmit`] yields on
//! the socket it names.
//!
//! Besides prompts ([`MediaSession::play`]) a session can loop music on hold
//! ([`MediaSession::play_loop`]), send RFC 4733 digits ([`MediaSession::send_dtmf`]) and take
//! part in a bridge: with [`MediaSession::set_relay`] on, what it receives is queued for
//! [`MediaSession::poll_relay`], and [`MediaSession::send_relay`] sends another leg's audio
//! on this leg's own RTP stream. [`crate::bridge::bridge_step`] wires two sessions together.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::dtmf::{self as dtmf_mod, EventPacket, InbandDetector, Rfc4733Receiver};
use crate::g711;
use crate::prompt::Prompt;
use crate::rtp::{
    self, JitterBuffer, ReceiveStats, RtcpPacket, RtpPacket, RtpSender, SenderInfo, FRAME_DURATION,
    SAMPLES_PER_FRAME,
};
use crate::sdp::{Codec, Direction, Negotiated};
use crate::srtp::{SrtpContext, SrtpError, SrtpKeys};

/// Which of the leg's two sockets a datagram belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    Rtp,
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub socket: Socket,
    pub to: SocketAddr,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    Rfc4733,
    Inband,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Dtmf {
        digit: char,
        duration_ms: u32,
        source: DtmfSource,
    },
    /// Everything queued by `play` has been sent and has had time to be heard.
    PlaybackFinished,
    /// We now send RTP to this address (symmetric RTP: where the remote's media comes from).
    RemoteLatched(SocketAddr),
}

/// When to run the in-band DTMF detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InbandDtmf {
    /// Only if the remote did not negotiate telephone-event.
    #[default]
    Auto,
    Always,
    Never,
}

/// Per-session options; `Default` suits a trunk leg.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Our SSRC; random when `None`.
    pub ssrc: Option<u32>,
    pub inband_dtmf: InbandDtmf,
    /// How long a packet waits for a missing predecessor.
    pub jitter_depth: Duration,
    pub rtcp_interval: Duration,
    /// Wall-clock time at the `now` given to `new`, for RTCP SR NTP timestamps.
    pub wall_clock: Option<SystemTime>,
    /// RTCP SDES CNAME.
    pub cname: String,
    /// Queue decoded received and sent audio for [`MediaSession::poll_audio`] (recording,
    /// future bridging). Off by default so unused sessions do not decode.
    pub audio_tap: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            ssrc: None,
            inband_dtmf: InbandDtmf::Auto,
            jitter_depth: Duration::from_millis(60),
            rtcp_interval: Duration::from_secs(5),
            wall_clock: None,
            cname: "verde".to_owned(),
            audio_tap: false,
        }
    }
}

/// Which way a tapped frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDirection {
    Received,
    Sent,
}

/// A decoded audio frame from the tap (normally 160 samples at 8 kHz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFrame {
    pub direction: TapDirection,
    /// RTP timestamp of the frame on its own stream.
    pub timestamp: u32,
    pub pcm: Vec<i16>,
}

/// One received audio packet, in order after the jitter buffer, for the bridged leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFrame {
    pub codec: Codec,
    /// The encoded payload as received (a slice of the datagram, not a copy).
    pub payload: Bytes,
    /// RTP timestamp on the source stream; only differences between frames matter.
    pub timestamp: u32,
    /// Start of a talkspurt on the source (its marker bit, or a new source stream).
    pub marker: bool,
}

/// What a relaying session hands to the other leg of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    Audio(RelayFrame),
    /// A complete RFC 4733 digit (it is also reported as [`MediaEvent::Dtmf`]).
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
}

/// Counters for the call record and monitoring.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaStats {
    pub packets_sent: u32,
    pub octets_sent: u32,
    pub packets_received: u64,
    /// Cumulative loss per RFC 3550 (expected - received).
    pub packets_lost: i64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Packets dropped as too late for the jitter buffer.
    pub late_packets: u64,
    /// Datagrams that were not valid RTP/RTCP, or from an unexpected source.
    pub ignored_packets: u64,
    pub remote_ssrc: Option<u32>,
    pub remote: SocketAddr,
    /// Loss fraction (0-255) the remote last reported about our stream.
    pub remote_fraction_lost: Option<u8>,
    /// Jitter the remote last reported about our stream, in milliseconds.
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the remote's last report (RFC 3550 §6.4.1).
    pub rtt: Option<Duration>,
    /// On an SRTP leg: datagrams that failed authentication (wrong key, plain RTP, tampered)
    /// or were replays. Also counted in `ignored_packets`.
    pub srtp_rejected: u64,
}

/// A new SSRC from a new address may take over after the current one is silent this long.
const SOURCE_TAKEOVER: Duration = Duration::from_secs(2);
const TAP_CAPACITY: usize = 100;
/// Relayed items waiting for `poll_relay`; the bridge drains after every input, so this only
/// fills if nobody does, and then the oldest audio is the least useful.
const RELAY_CAPACITY: usize = 50;
/// A relayed stream whose mapped timestamps stray this far from our media clock is re-anchored
/// (source restarted its timestamps, or hours of clock drift).
const RELAY_MAX_SKEW: u32 = 8000;
/// Silence between two digits we send back to back.
const DTMF_GAP: Duration = Duration::from_millis(50);
/// RFC 4733 volume field for digits we generate (-10 dBm0).
const DTMF_VOLUME: u8 = 10;

struct Source {
    addr: SocketAddr,
    stats: ReceiveStats,
    last_seen: Instant,
}

/// Prompt playback on a fixed 20 ms grid. Two layers share the grid: announcements queued by
/// `play` (foreground) and an optional loop (background) that plays whenever the foreground
/// is empty and keeps its position while an announcement interrupts it.
struct Playback {
    queue: VecDeque<Arc<Prompt>>,
    offset: usize,
    background: Option<Loop>,
    origin: Instant,
    frames: u64,
    /// Set once the queue has been drained: the time the last frame has been heard.
    finish_at: Option<Instant>,
}

struct Loop {
    prompt: Arc<Prompt>,
    offset: usize,
}

/// An RFC 4733 event being sent.
struct DtmfOut {
    start: Instant,
    timestamp: u32,
    packets: Vec<EventPacket>,
    next: usize,
}

pub struct MediaSession {
    codec: Codec,
    payload_type: u8,
    dtmf_pt: Option<u8>,
    direction: Direction,
    config: MediaConfig,
    created: Instant,

    sender: RtpSender,
    remote_rtp: SocketAddr,
    remote_rtcp: SocketAddr,
    rtcp_latched: bool,
    source: Option<Source>,
    jitter: JitterBuffer,
    rfc4733: Rfc4733Receiver,
    inband: Option<InbandDetector>,

    playback: Option<Playback>,
    frame: Vec<u8>,
    pcm: Vec<i16>,

    relay: bool,
    relay_out: VecDeque<Relay>,
    /// Set when the source stream changes, so the next relayed frame says so.
    relay_new_stream: bool,
    /// Our timestamp minus the source's, for the relayed stream being sent; `None` when the
    /// next relayed frame must start a new talkspurt.
    relay_offset: Option<u32>,
    relay_buf: Vec<u8>,

    dtmf_out: Option<DtmfOut>,
    dtmf_queue: VecDeque<(char, u32)>,
    dtmf_next_start: Instant,

    next_rtcp: Instant,
    sent_at_last_report: u32,
    last_sr: Option<(u32, Instant)>,
    remote_fraction_lost: Option<u8>,
    remote_jitter: Option<u32>,
    rtt: Option<Duration>,
    ignored: u64,
    /// SDES-keyed SRTP: applied to every datagram in and out, below everything else.
    srtp: Option<SrtpContext>,
    srtp_rejected: u64,

    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    tap: VecDeque<TapFrame>,
}

impl MediaSession {
    pub fn new(negotiated: &Negotiated, config: MediaConfig, now: Instant) -> Self {
        let mut sender = RtpSender::random(negotiated.payload_type, now);
        if let Some(ssrc) = config.ssrc {
            sender = RtpSender::new(
                ssrc,
                negotiated.payload_type,
                rand::random(),
                rand::random(),
                now,
            );
        }
        let mut session = MediaSession {
            codec: negotiated.codec,
            payload_type: negotiated.payload_type,
            dtmf_pt: negotiated.dtmf_pt,
            direction: negotiated.direction,
            created: now,
            sender,
            remote_rtp: negotiated.remote,
            remote_rtcp: negotiated.remote_rtcp,
            rtcp_latched: false,
            source: None,
            jitter: JitterBuffer::new(config.jitter_depth),
            rfc4733: Rfc4733Receiver::new(),
            inband: None,
            playback: None,
            frame: Vec::with_capacity(SAMPLES_PER_FRAME),
            pcm: Vec::with_capacity(SAMPLES_PER_FRAME),
            relay: false,
            relay_out: VecDeque::new(),
            relay_new_stream: true,
            relay_offset: None,
            relay_buf: Vec::with_capacity(SAMPLES_PER_FRAME),
            dtmf_out: None,
            dtmf_queue: VecDeque::new(),
            dtmf_next_start: now,
            next_rtcp: now + config.rtcp_interval / 2,
            sent_at_last_report: 0,
            last_sr: None,
            remote_fraction_lost: None,
            remote_jitter: None,
            rtt: None,
            ignored: 0,
            srtp: None,
            srtp_rejected: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tap: VecDeque::new(),
            config,
        };
        session.configure_inband();
        session
    }

    fn configure_inband(&mut self) {
        let wanted = match self.config.inband_dtmf {
            InbandDtmf::Always => true,
            InbandDtmf::Never => false,
            InbandDtmf::Auto => self.dtmf_pt.is_none(),
        };
        if wanted != self.inband.is_some() {
            self.inband = wanted.then(InbandDetector::new);
        }
    }

    /// Applies a re-negotiation (re-INVITE): codec, DTMF, direction and remote address.
    pub fn update(&mut self, negotiated: &Negotiated, now: Instant) {
        if negotiated.payload_type != self.payload_type {
            // A codec change starts a new talkspurt so the marker flags the switch.
            self.sender.end_talkspurt();
            let ssrc = self.sender.ssrc();
            self.sender = RtpSender::new(
                ssrc,
                negotiated.payload_type,
                rand::random(),
                self.sender.timestamp_at(now),
                now,
            );
        }
        self.relay_offset = None;
        self.codec = negotiated.codec;
        self.payload_type = negotiated.payload_type;
        self.dtmf_pt = negotiated.dtmf_pt;
        self.configure_inband();
        self.set_direction(negotiated.direction);
        if !negotiated.remote.ip().is_unspecified() && negotiated.remote != self.remote_rtp {
            // The remote moved its media: relatch from scratch.
            self.remote_rtp = negotiated.remote;
            self.remote_rtcp = negotiated.remote_rtcp;
            self.rtcp_latched = false;
            self.source = None;
            self.jitter.reset();
            self.relay_new_stream = true;
        }
    }

    /// Turns SRTP on (with the keys [`crate::LocalSdp::srtp`] negotiated) or off. Call it
    /// after every offer/answer exchange, next to [`Self::update`]: a direction whose key is
    /// unchanged keeps its running context (rollover counter, SRTCP index, replay window), a
    /// new key starts a fresh one.
    pub fn set_srtp(&mut self, keys: Option<&SrtpKeys>) -> Result<(), SrtpError> {
        match (keys, self.srtp.as_mut()) {
            (None, _) => self.srtp = None,
            (Some(k), Some(ctx)) => ctx.update(k)?,
            (Some(k), None) => self.srtp = Some(SrtpContext::new(k)?),
        }
        Ok(())
    }

    /// Whether media on this leg is SRTP.
    pub fn is_srtp(&self) -> bool {
        self.srtp.is_some()
    }

    /// Our direction (hold/unhold). No RTP is sent unless it includes sending: prompts keep
    /// their time but are not heard, relayed audio is dropped, digits being sent are abandoned.
    pub fn set_direction(&mut self, direction: Direction) {
        if !direction.sends() {
            self.sender.end_talkspurt();
            self.relay_offset = None;
            self.dtmf_out = None;
            self.dtmf_queue.clear();
        }
        self.direction = direction;
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn ssrc(&self) -> u32 {
        self.sender.ssrc()
    }

    fn playback_mut(&mut self, now: Instant) -> &mut Playback {
        self.playback.get_or_insert_with(|| Playback {
            queue: VecDeque::new(),
            offset: 0,
            background: None,
            origin: now,
            frames: 0,
            finish_at: None,
        })
    }

    /// Queues prompts after whatever is playing; they are sent back to back as one talkspurt.
    /// To replace the current playback, call [`Self::stop_playback`] first.
    ///
    /// Over a loop ([`Self::play_loop`]) the prompts interrupt it at the next 20 ms frame
    /// boundary; once they have been heard `PlaybackFinished` is emitted and the loop resumes
    /// where it was paused, in the same talkspurt.
    pub fn play(&mut self, prompts: Vec<Arc<Prompt>>, now: Instant) {
        let pb = self.playback_mut(now);
        pb.queue
            .extend(prompts.into_iter().filter(|p| !p.pcm.is_empty()));
        if !pb.queue.is_empty() {
            pb.finish_at = None;
        } else if pb.finish_at.is_none() && (pb.frames == 0 || pb.background.is_some()) {
            // Nothing audible was queued and no announcement is pending: done at once.
            if pb.background.is_none() {
                self.playback = None;
            }
            self.events.push_back(MediaEvent::PlaybackFinished);
        }
    }

    /// Plays `prompt` over and over (music on hold) until [`Self::stop_loop`] or
    /// [`Self::stop_playback`]. Wrap-around is seamless (same talkspurt, no gap) and emits no
    /// event. Replaces any loop already playing; prompts queued by [`Self::play`] play first.
    pub fn play_loop(&mut self, prompt: Arc<Prompt>, now: Instant) {
        if prompt.pcm.is_empty() {
            tracing::debug!("empty loop prompt ignored");
            return;
        }
        self.playback_mut(now).background = Some(Loop { prompt, offset: 0 });
    }

    /// Stops the loop, letting queued prompts finish. Emits no event.
    pub fn stop_loop(&mut self, _now: Instant) {
        let Some(pb) = self.playback.as_mut() else {
            return;
        };
        pb.background = None;
        if pb.queue.is_empty() && pb.finish_at.is_none() {
            self.playback = None;
            self.sender.end_talkspurt();
        }
    }

    /// Stops playback at once, loop included. Does not emit `PlaybackFinished`.
    pub fn stop_playback(&mut self, _now: Instant) {
        self.playback = None;
        self.sender.end_talkspurt();
    }

    /// Whether prompts or a loop are playing. While they are, relayed audio is not sent.
    pub fn is_playing(&self) -> bool {
        self.playback.is_some()
    }

    /// Queues what this leg receives for [`Self::poll_relay`] (on while bridged). Turning it
    /// off drops anything not yet polled.
    pub fn set_relay(&mut self, on: bool) {
        self.relay = on;
        if !on {
            self.relay_out.clear();
        }
    }

    /// The next received audio frame or RFC 4733 digit to hand to the other leg.
    pub fn poll_relay(&mut self) -> Option<Relay> {
        self.relay_out.pop_front()
    }

    /// Makes the next relayed frame start a new talkspurt on this leg (marker bit, timestamps
    /// re-anchored to our media clock), for when what is relayed to it changes source: a
    /// supervision [`crate::mixer::Mixer`] attached or detached.
    pub fn restart_relay(&mut self) {
        self.relay_offset = None;
    }

    /// Sends another leg's audio on this leg at once (no pacing: the source paced it), on our
    /// own SSRC, sequence and timestamp space. Same codec: the payload is forwarded as is;
    /// PCMU<->PCMA: transcoded. Timestamps keep the source's spacing (its silence gaps
    /// included) within a talkspurt; a new talkspurt (first frame, source marker, after our
    /// own prompts or digits) is anchored to our media clock and carries the marker bit.
    ///
    /// Returns whether a packet was queued: nothing is sent on hold, before the remote
    /// address is known, while prompts play on this leg, or while we send a digit.
    pub fn send_relay(&mut self, frame: &RelayFrame, now: Instant) -> bool {
        if !self.direction.sends()
            || !self.remote_known()
            || self.playback.is_some()
            || self.dtmf_out.is_some()
        {
            self.relay_offset = None;
            return false;
        }
        let anchored = self.relay_offset.and_then(|offset| {
            let ts = frame.timestamp.wrapping_add(offset);
            let skew = ts.wrapping_sub(self.sender.timestamp_at(now));
            let skew = (skew as i32).unsigned_abs();
            (!frame.marker && skew <= RELAY_MAX_SKEW).then_some(ts)
        });
        let (ts, marker) = match anchored {
            Some(ts) => (ts, false),
            None => {
                let ts = self.sender.fresh_timestamp(now);
                self.relay_offset = Some(ts.wrapping_sub(frame.timestamp));
                (ts, true)
            }
        };
        let pt = self.payload_type;
        let bytes = if frame.codec == self.codec {
            self.sender.build(pt, marker, ts, &frame.payload)
        } else {
            match frame.codec {
                Codec::Pcmu => g711::ulaw_to_alaw(&frame.payload, &mut self.relay_buf),
                Codec::Pcma => g711::alaw_to_ulaw(&frame.payload, &mut self.relay_buf),
            }
            self.sender.build(pt, marker, ts, &self.relay_buf)
        };
        self.transmits.push_back(Transmit {
            socket: Socket::Rtp,
            to: self.remote_rtp,
            bytes,
        });
        if self.config.audio_tap {
            match frame.codec {
                Codec::Pcmu => g711::decode_ulaw(&frame.payload, &mut self.pcm),
                Codec::Pcma => g711::decode_alaw(&frame.payload, &mut self.pcm),
            }
            self.push_tap(TapDirection::Sent, ts);
        }
        true
    }

    /// Sends `digit` as RFC 4733 events with our telephone-event PT: a marked start packet at
    /// once, updates every 50 ms, three end packets after `duration_ms` (clamped to 40..8000),
    /// all with the timestamp of the event's start. Digits sent back to back queue with a
    /// 50 ms gap. Audio (prompts, relay) is suppressed while a digit is sent.
    ///
    /// Returns `false` (and sends nothing) if the remote did not negotiate telephone-event,
    /// `digit` is not 0-9, *, #, A-D, or the leg does not send (hold).
    pub fn send_dtmf(&mut self, digit: char, duration_ms: u32, now: Instant) -> bool {
        if self.dtmf_pt.is_none()
            || dtmf_mod::digit_to_event(digit).is_none()
            || !self.direction.sends()
            || !self.remote_known()
        {
            return false;
        }
        self.dtmf_queue.push_back((digit, duration_ms));
        self.run_dtmf(now);
        true
    }

    fn run_dtmf(&mut self, now: Instant) {
        let Some(pt) = self.dtmf_pt else {
            self.dtmf_out = None;
            self.dtmf_queue.clear();
            return;
        };
        loop {
            if let Some(out) = self.dtmf_out.as_mut() {
                while let Some(p) = out.packets.get(out.next) {
                    if out.start + p.offset > now {
                        return;
                    }
                    out.next += 1;
                    let bytes = self.sender.build(pt, p.marker, out.timestamp, &p.payload);
                    self.transmits.push_back(Transmit {
                        socket: Socket::Rtp,
                        to: self.remote_rtp,
                        bytes,
                    });
                }
                let end = out.start + out.packets.last().map_or(Duration::ZERO, |p| p.offset);
                self.dtmf_out = None;
                self.dtmf_next_start = end + DTMF_GAP;
                continue;
            }
            if self.dtmf_queue.is_empty() || now < self.dtmf_next_start {
                return;
            }
            let Some((digit, duration_ms)) = self.dtmf_queue.pop_front() else {
                return;
            };
            let Some(packets) = dtmf_mod::rfc4733_packets(digit, duration_ms, DTMF_VOLUME) else {
                continue;
            };
            // The event interrupts our audio: whatever follows starts a new talkspurt.
            self.sender.end_talkspurt();
            self.relay_offset = None;
            self.dtmf_out = Some(DtmfOut {
                start: now,
                timestamp: self.sender.fresh_timestamp(now),
                packets,
                next: 0,
            });
        }
    }

    /// Sends an RTCP BYE; call when the leg ends.
    pub fn close(&mut self, _now: Instant) {
        self.stop_playback(_now);
        if self.remote_known() {
            self.transmits.push_back(Transmit {
                socket: Socket::Rtcp,
                to: self.remote_rtcp,
                bytes: rtp::build_bye(self.sender.ssrc(), &self.config.cname),
            });
        }
    }

    fn remote_known(&self) -> bool {
        !self.remote_rtp.ip().is_unspecified() && self.remote_rtp.port() != 0
    }

    /// Feeds one datagram received on `socket` from `from`.
    pub fn handle_packet(&mut self, socket: Socket, bytes: Bytes, from: SocketAddr, now: Instant) {
        let bytes = match self.srtp.as_mut() {
            None => bytes,
            Some(ctx) => {
                let plain = match socket {
                    Socket::Rtp => ctx.unprotect_rtp(&bytes),
                    Socket::Rtcp => ctx.unprotect_rtcp(&bytes),
                };
                match plain {
                    Ok(p) => p,
                    Err(_) => {
                        if self.srtp_rejected == 0 {
                            tracing::debug!(%from, ?socket, "SRTP packet rejected (authentication or replay)");
                        }
                        self.srtp_rejected += 1;
                        self.ignored += 1;
                        return;
                    }
                }
            }
        };
        match socket {
            Socket::Rtp => self.handle_rtp(bytes, from, now),
            Socket::Rtcp => self.handle_rtcp(&bytes, from, now),
        }
    }

    fn handle_rtp(&mut self, bytes: Bytes, from: SocketAddr, now: Instant) {
        let Some(pkt) = RtpPacket::parse(&bytes) else {
            self.ignored += 1;
            return;
        };
        let is_audio = pkt.payload_type == self.payload_type;
        if !is_audio && Some(pkt.payload_type) != self.dtmf_pt {
            // Comfort noise and anything not negotiated.
            self.ignored += 1;
            return;
        }
        if !self.accept_source(&pkt, from, now) {
            self.ignored += 1;
            return;
        }
        let source = self.source.as_mut().expect("accept_source sets the source");
        source.last_seen = now;
        let Some(ext) = source
            .stats
            .update(pkt.sequence, pkt.timestamp, is_audio, now)
        else {
            return;
        };
        self.jitter.push(ext, pkt, now);
        self.drain_jitter(now);
    }

    /// Symmetric RTP latching. Returns whether the packet's source is the one we listen to.
    fn accept_source(&mut self, pkt: &RtpPacket, from: SocketAddr, now: Instant) -> bool {
        let take = match &self.source {
            None => true,
            Some(src) if src.stats.ssrc() == pkt.ssrc => {
                if src.addr != from {
                    // Same stream, new address: NAT rebinding or a media relay change.
                    self.latch(from);
                    if let Some(src) = self.source.as_mut() {
                        src.addr = from;
                    }
                }
                return true;
            }
            Some(src) => {
                src.addr == from || now.saturating_duration_since(src.last_seen) >= SOURCE_TAKEOVER
            }
        };
        if take {
            self.relay_new_stream = true;
            self.source = Some(Source {
                addr: from,
                stats: ReceiveStats::new(pkt.ssrc, pkt.sequence, now),
                last_seen: now,
            });
            self.jitter.reset();
            self.latch(from);
        }
        take
    }

    fn latch(&mut self, from: SocketAddr) {
        if self.remote_rtp == from {
            return;
        }
        tracing::debug!(old = %self.remote_rtp, new = %from, "RTP latched");
        self.remote_rtp = from;
        if !self.rtcp_latched {
            self.remote_rtcp = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
        }
        self.events.push_back(MediaEvent::RemoteLatched(from));
    }

    fn drain_jitter(&mut self, now: Instant) {
        while let Some(pkt) = self.jitter.pop(now) {
            if Some(pkt.payload_type) == self.dtmf_pt && pkt.payload_type != self.payload_type {
                self.rfc4733.handle(pkt.timestamp, &pkt.payload, now);
                self.report_rfc4733_digits();
                continue;
            }
            if self.relay {
                if self.relay_out.len() == RELAY_CAPACITY {
                    tracing::debug!("relay queue full: dropping the oldest item");
                    self.relay_out.pop_front();
                }
                // Take the flag first: `||` would skip it when the packet is marked anyway.
                let new_stream = std::mem::take(&mut self.relay_new_stream);
                let marker = pkt.marker || new_stream;
                self.relay_out.push_back(Relay::Audio(RelayFrame {
                    codec: self.codec,
                    payload: pkt.payload.clone(),
                    timestamp: pkt.timestamp,
                    marker,
                }));
            }
            if self.inband.is_none() && !self.config.audio_tap {
                continue;
            }
            match self.codec {
                Codec::Pcmu => g711::decode_ulaw(&pkt.payload, &mut self.pcm),
                Codec::Pcma => g711::decode_alaw(&pkt.payload, &mut self.pcm),
            }
            if let Some(det) = self.inband.as_mut() {
                det.process(&self.pcm);
                while let Some(d) = det.poll_digit() {
                    self.events.push_back(MediaEvent::Dtmf {
                        digit: d.digit,
                        duration_ms: d.duration_ms,
                        source: DtmfSource::Inband,
                    });
                }
            }
            if self.config.audio_tap {
                self.push_tap(TapDirection::Received, pkt.timestamp);
            }
        }
    }

    fn report_rfc4733_digits(&mut self) {
        while let Some(d) = self.rfc4733.poll_digit() {
            self.events.push_back(MediaEvent::Dtmf {
                digit: d.digit,
                duration_ms: d.duration_ms,
                source: DtmfSource::Rfc4733,
            });
            if self.relay {
                // Digits are rare and must not be lost to a full queue of audio.
                self.relay_out.push_back(Relay::Dtmf {
                    digit: d.digit,
                    duration_ms: d.duration_ms,
                });
            }
        }
    }

    fn push_tap(&mut self, direction: TapDirection, timestamp: u32) {
        if self.tap.len() == TAP_CAPACITY {
            self.tap.pop_front();
        }
        self.tap.push_back(TapFrame {
            direction,
            timestamp,
            pcm: self.pcm.clone(),
        });
    }

    fn handle_rtcp(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        let packets = match rtp::parse_rtcp(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "ignoring RTCP");
                self.ignored += 1;
                return;
            }
        };
        if !self.rtcp_latched || self.remote_rtcp != from {
            self.rtcp_latched = true;
            self.remote_rtcp = from;
        }
        let ours = self.sender.ssrc();
        for p in packets {
            let reports = match p {
                RtcpPacket::SenderReport { ntp, reports, .. } => {
                    self.last_sr = Some(((ntp >> 16) as u32, now));
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                _ => continue,
            };
            for rb in reports.iter().filter(|rb| rb.ssrc == ours) {
                self.remote_fraction_lost = Some(rb.fraction_lost);
                self.remote_jitter = Some(rb.jitter);
                if rb.last_sr != 0 {
                    let now_mid = (self.ntp_at(now) >> 16) as u32;
                    let rtt = now_mid
                        .wrapping_sub(rb.last_sr)
                        .wrapping_sub(rb.delay_since_last_sr);
                    // Guard against clocks that make the difference "negative".
                    if rtt < 0x8000_0000 {
                        self.rtt = Some(Duration::from_micros(u64::from(rtt) * 1_000_000 / 65536));
                    }
                }
            }
        }
    }

    fn ntp_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.created);
        let unix = match self.config.wall_clock {
            Some(w) => w.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default() + since,
            None => since,
        };
        rtp::ntp_from_unix(unix)
    }

    /// Advances timers: due RTP frames, RTCP reports, jitter buffer and DTMF timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain_jitter(now);
        self.rfc4733.handle_timeout(now);
        self.report_rfc4733_digits();
        self.run_dtmf(now);
        self.run_playback(now);
        if now >= self.next_rtcp {
            self.send_rtcp(now);
            // Keep the reporting grid fixed, but never schedule in the past after a stall.
            while self.next_rtcp <= now {
                self.next_rtcp += self.config.rtcp_interval;
            }
        }
    }

    fn run_playback(&mut self, now: Instant) {
        loop {
            let Some(pb) = self.playback.as_mut() else {
                return;
            };
            if let Some(finish) = pb.finish_at {
                if now >= finish {
                    pb.finish_at = None;
                    self.events.push_back(MediaEvent::PlaybackFinished);
                    if pb.background.is_none() {
                        self.playback = None;
                        self.sender.end_talkspurt();
                        return;
                    }
                }
            }
            if pb.queue.is_empty() && pb.background.is_none() {
                // Waiting for the last announcement frame to be heard.
                return;
            }
            let due = pb.origin + FRAME_DURATION * pb.frames as u32;
            if due > now {
                return;
            }
            pb.frames += 1;
            let tap = self.config.audio_tap;
            // Fill one frame across prompt boundaries so back-to-back prompts have no gap.
            self.frame.clear();
            if tap {
                self.pcm.clear();
            }
            let had_foreground = !pb.queue.is_empty();
            while self.frame.len() < SAMPLES_PER_FRAME {
                let Some(prompt) = pb.queue.front() else {
                    break;
                };
                let want = SAMPLES_PER_FRAME - self.frame.len();
                let end = (pb.offset + want).min(prompt.pcm.len());
                self.frame
                    .extend_from_slice(&prompt.encoded(self.codec)[pb.offset..end]);
                if tap {
                    self.pcm.extend_from_slice(&prompt.pcm[pb.offset..end]);
                }
                pb.offset = end;
                if pb.offset == prompt.pcm.len() {
                    pb.queue.pop_front();
                    pb.offset = 0;
                }
            }
            if had_foreground && pb.queue.is_empty() {
                pb.finish_at = Some(due + FRAME_DURATION);
            }
            // The loop fills whatever the announcements leave, wrapping without a gap.
            if let Some(bg) = pb.background.as_mut() {
                while self.frame.len() < SAMPLES_PER_FRAME {
                    let want = SAMPLES_PER_FRAME - self.frame.len();
                    let end = (bg.offset + want).min(bg.prompt.pcm.len());
                    self.frame
                        .extend_from_slice(&bg.prompt.encoded(self.codec)[bg.offset..end]);
                    if tap {
                        self.pcm.extend_from_slice(&bg.prompt.pcm[bg.offset..end]);
                    }
                    bg.offset = if end == bg.prompt.pcm.len() { 0 } else { end };
                }
            }
            let silence = match self.codec {
                Codec::Pcmu => g711::ULAW_SILENCE,
                Codec::Pcma => g711::ALAW_SILENCE,
            };
            self.frame.resize(SAMPLES_PER_FRAME, silence);
            if self.direction.sends() && self.remote_known() && self.dtmf_out.is_none() {
                if !self.sender.in_talkspurt() {
                    // Anchor timestamps to the schedule, not to when we got around to it.
                    self.sender.start_talkspurt(due);
                }
                // Relayed audio that follows must start its own talkspurt.
                self.relay_offset = None;
                let ts = self.sender.timestamp_at(due);
                if let Some(bytes) = self.sender.build_frame(&self.frame) {
                    self.transmits.push_back(Transmit {
                        socket: Socket::Rtp,
                        to: self.remote_rtp,
                        bytes,
                    });
                }
                if tap {
                    self.pcm.resize(SAMPLES_PER_FRAME, 0);
                    self.push_tap(TapDirection::Sent, ts);
                }
            }
        }
    }

    fn send_rtcp(&mut self, now: Instant) {
        if !self.remote_known() {
            return;
        }
        let sent = self.sender.packets_sent();
        let sender_info = (sent != self.sent_at_last_report).then(|| SenderInfo {
            ntp: self.ntp_at(now),
            rtp_timestamp: self.sender.timestamp_at(now),
            packets: sent,
            octets: self.sender.octets_sent(),
        });
        self.sent_at_last_report = sent;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (lsr, (d.as_micros() * 65536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        let block = self
            .source
            .as_mut()
            .map(|s| s.stats.report_block(lsr, dlsr));
        self.transmits.push_back(Transmit {
            socket: Socket::Rtcp,
            to: self.remote_rtcp,
            bytes: rtp::build_report(self.sender.ssrc(), sender_info, block, &self.config.cname),
        });
    }

    /// The next instant `handle_timeout` must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (next_frame, finish) = match &self.playback {
            Some(pb) => (
                (!pb.queue.is_empty() || pb.background.is_some())
                    .then(|| pb.origin + FRAME_DURATION * pb.frames as u32),
                pb.finish_at,
            ),
            None => (None, None),
        };
        let dtmf = match &self.dtmf_out {
            Some(out) => out.packets.get(out.next).map(|p| out.start + p.offset),
            None => (!self.dtmf_queue.is_empty()).then_some(self.dtmf_next_start),
        };
        [
            next_frame,
            finish,
            dtmf,
            Some(self.next_rtcp),
            self.jitter.poll_timeout(),
            self.rfc4733.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let mut t = self.transmits.pop_front()?;
            let Some(ctx) = self.srtp.as_mut() else {
                return Some(t);
            };
            let sealed = match t.socket {
                Socket::Rtp => ctx.protect_rtp(&t.bytes),
                Socket::Rtcp => ctx.protect_rtcp(&t.bytes),
            };
            // Never fall back to clear text on a secure leg.
            if let Some(b) = sealed {
                t.bytes = b;
                return Some(t);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Turns the audio tap on or off for a running session (e.g. to record a voicemail after
    /// the greeting). Turning it off drops the frames not yet polled.
    pub fn set_audio_tap(&mut self, on: bool) {
        self.config.audio_tap = on;
        if !on {
            self.tap.clear();
        }
    }

    /// Whether the audio tap is on.
    pub fn audio_tap(&self) -> bool {
        self.config.audio_tap
    }

    /// Decoded audio, when `MediaConfig::audio_tap` is on (bounded: oldest frames are dropped).
    pub fn poll_audio(&mut self) -> Option<TapFrame> {
        self.tap.pop_front()
    }

    pub fn stats(&self) -> MediaStats {
        let src = self.source.as_ref();
        MediaStats {
            packets_sent: self.sender.packets_sent(),
            octets_sent: self.sender.octets_sent(),
            packets_received: src.map_or(0, |s| s.stats.received()),
            packets_lost: src.map_or(0, |s| s.stats.lost()),
            jitter_ms: src.map_or(0.0, |s| s.stats.jitter() / 8.0),
            late_packets: self.jitter.dropped_late(),
            ignored_packets: self.ignored,
            remote_ssrc: src.map(|s| s.stats.ssrc()),
            remote: self.remote_rtp,
            remote_fraction_lost: self.remote_fraction_lost,
            remote_jitter_ms: self.remote_jitter.map(|j| f64::from(j) / 8.0),
            rtt: self.rtt,
            srtp_rejected: self.srtp_rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::{self, rfc4733_packets};
    use crate::rtp::{RtpSender, SAMPLES_PER_FRAME};
    use crate::sdp::Codec;

    const REMOTE: &str = "198.51.100.7:30000";

    fn negotiated(dtmf_pt: Option<u8>) -> Negotiated {
        Negotiated {
            answer: String::new(),
            codec: Codec::Pcmu,
            payload_type: 0,
            dtmf_pt,
            remote: REMOTE.parse().unwrap(),
            remote_rtcp: "198.51.100.7:30001".parse().unwrap(),
            direction: Direction::SendRecv,
        }
    }

    fn config() -> MediaConfig {
        MediaConfig {
            ssrc: Some(0x1234),
            // Keep RTCP out of the way unless a test wants it.
            rtcp_interval: Duration::from_secs(3600),
            ..MediaConfig::default()
        }
    }

    fn tone_prompt(ms: u32) -> Arc<Prompt> {
        let pcm = (0..ms * 8)
            .map(|n| (8000.0 * (n as f32 * 0.3).sin()) as i16)
            .collect();
        Arc::new(Prompt::from_pcm(pcm))
    }

    /// Drives the session at its own timeouts (plus `lateness`), collecting RTP until idle.
    fn drive(
        s: &mut MediaSession,
        until: Instant,
        lateness: impl Fn(u64) -> Duration,
    ) -> Vec<(Instant, RtpPacket)> {
        let mut out = vec![];
        let mut i = 0;
        while let Some(t) = s.poll_timeout() {
            if t > until {
                break;
            }
            let now = t + lateness(i);
            i += 1;
            s.handle_timeout(now);
            while let Some(tx) = s.poll_transmit() {
                if tx.socket == Socket::Rtp {
                    out.push((now, RtpPacket::parse(&tx.bytes).unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn one_second_prompt_is_fifty_paced_packets() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        s.play(vec![tone_prompt(1000)], t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        let pkts = drive(&mut s, t0 + Duration::from_secs(5), |_| Duration::ZERO);
        assert_eq!(pkts.len(), 50);
        for (i, (at, p)) in pkts.iter().enumerate() {
            assert_eq!(*at, t0 + FRAME_DURATION * i as u32, "packet {i} due time");
            assert_eq!(p.ssrc, 0x1234);
            assert_eq!(p.payload.len(), SAMPLES_PER_FRAME);
            assert_eq!(p.marker, i == 0);
            if i > 0 {
                let prev = &pkts[i - 1].1;
                assert_eq!(p.sequence, prev.sequence.wrapping_add(1));
                assert_eq!(p.timestamp, prev.timestamp.wrapping_add(160));
            }
        }
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        assert_eq!(s.poll_event(), None);
        assert!(!s.is_playing());
        assert_eq!(s.stats().packets_sent, 50);
    }

    #[test]
    fn playback_finished_comes_after_the_last_frame_is_heard() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.play(vec![tone_prompt(40)], t0);
        s.handle_timeout(t0 + Duration::from_millis(20));
        assert_eq!(std::iter::from_fn(|| s.poll_transmit()).count(), 2);
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(40)));
        s.handle_timeout(t0 + Duration::from_millis(40));
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
    }

    #[test]
    fn prompts_back_to_back_form_one_talkspurt() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        // 30 ms + 50 ms + silence 20 ms = 100 ms = 5 frames, no padding between prompts.
        s.play(vec![tone_prompt(30), tone_prompt(50)], t0);
        s.play(
            vec![Arc::new(Prompt::silence(20))],
            t0 + Duration::from_millis(5),
        );
        let pkts = drive(&mut s, t0 + Duration::from_secs(1), |_| Duration::ZERO);
        assert_eq!(pkts.len(), 5);
        assert_eq!(pkts.iter().filter(|(_, p)| p.marker).count(), 1);
        // Frame 1 straddles the two tone prompts: samples 160..240 of the first, 0..80 of the second.
        let a = tone_prompt(30);
        let b = tone_prompt(50);
        assert_eq!(&pkts[1].1.payload[..80], &a.ulaw[160..240]);
        assert_eq!(&pkts[1].1.payload[80..], &b.ulaw[..80]);
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn ten_minute_prompt_with_jittery_driver_does_not_drift() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.play(vec![tone_prompt(600_000)], t0);
        // The driver wakes 0-7 ms late, pseudo-randomly.
        let pkts = drive(&mut s, t0 + Duration::from_secs(700), |i| {
            Duration::from_micros(i * 7919 % 7000)
        });
        assert_eq!(pkts.len(), 30_000);
        let first_ts = pkts[0].1.timestamp;
        for (i, (at, p)) in pkts.iter().enumerate() {
            let due = t0 + FRAME_DURATION * i as u32;
            assert!(
                *at >= due && *at < due + Duration::from_millis(8),
                "packet {i} sent at wrong time"
            );
            assert_eq!(p.timestamp, first_ts.wrapping_add(160 * i as u32));
        }
        let last = pkts.last().unwrap().0;
        assert!(last < t0 + Duration::from_millis(599_980 + 8));
    }

    #[test]
    fn idle_gap_keeps_timestamps_consistent_and_sets_marker() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.play(vec![tone_prompt(40)], t0);
        let first = drive(&mut s, t0 + Duration::from_millis(100), |_| Duration::ZERO);
        let t1 = t0 + Duration::from_millis(1000);
        s.play(vec![tone_prompt(40)], t1);
        let second = drive(&mut s, t1 + Duration::from_millis(100), |_| Duration::ZERO);
        assert!(second[0].1.marker);
        assert_eq!(
            second[0].1.timestamp.wrapping_sub(first[0].1.timestamp),
            8000
        );
        assert_eq!(second[0].1.sequence, first[1].1.sequence.wrapping_add(1));
    }

    #[test]
    fn hold_stops_rtp_but_playback_time_runs() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.set_direction(Direction::RecvOnly);
        s.play(vec![tone_prompt(100)], t0);
        let pkts = drive(&mut s, t0 + Duration::from_secs(1), |_| Duration::ZERO);
        assert!(pkts.is_empty());
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        s.set_direction(Direction::SendRecv);
        s.play(vec![tone_prompt(100)], t0 + Duration::from_secs(2));
        assert_eq!(
            drive(&mut s, t0 + Duration::from_secs(3), |_| Duration::ZERO).len(),
            5
        );
    }

    #[test]
    fn stop_playback_stops_at_once() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.play(vec![tone_prompt(1000)], t0);
        s.handle_timeout(t0 + Duration::from_millis(40));
        assert_eq!(std::iter::from_fn(|| s.poll_transmit()).count(), 3);
        s.stop_playback(t0 + Duration::from_millis(50));
        assert!(drive(&mut s, t0 + Duration::from_secs(2), |_| Duration::ZERO).is_empty());
        assert_eq!(s.poll_event(), None);
    }

    fn remote_sender(pt: u8, t0: Instant) -> RtpSender {
        RtpSender::new(0xABCD, pt, 100, 5000, t0)
    }

    #[test]
    fn rfc4733_digit_becomes_one_event_and_latches() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        let from: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let mut remote = remote_sender(0, t0);
        remote.start_talkspurt(t0);
        let audio = remote.build_frame(&[0xFF; 160]).unwrap();
        s.handle_packet(Socket::Rtp, audio, from, t0);
        assert_eq!(s.poll_event(), Some(MediaEvent::RemoteLatched(from)));
        for p in rfc4733_packets('9', 100, 10).unwrap() {
            let pkt = remote.build(101, p.marker, 8000, &p.payload);
            s.handle_packet(Socket::Rtp, pkt, from, t0 + p.offset);
        }
        assert_eq!(
            s.poll_event(),
            Some(MediaEvent::Dtmf {
                digit: '9',
                duration_ms: 100,
                source: DtmfSource::Rfc4733
            })
        );
        assert_eq!(s.poll_event(), None);

        // Our RTP now goes to the latched address.
        s.play(vec![tone_prompt(20)], t0);
        s.handle_timeout(t0);
        assert_eq!(s.poll_transmit().unwrap().to, from);
        let st = s.stats();
        assert_eq!((st.packets_received, st.packets_lost), (6, 0));
        assert_eq!(st.remote_ssrc, Some(0xABCD));
    }

    #[test]
    fn inband_tone_as_pcmu_becomes_one_event_only_without_telephone_event() {
        for (dtmf_pt, expect) in [(None, true), (Some(101), false)] {
            let t0 = Instant::now();
            let mut s = MediaSession::new(&negotiated(dtmf_pt), config(), t0);
            let mut pcm = vec![0i16; 800];
            pcm.extend(dtmf::synthesize('#', 100, 5000.0));
            pcm.extend(vec![0i16; 1600]);
            let mut remote = remote_sender(0, t0);
            remote.start_talkspurt(t0);
            let from: SocketAddr = REMOTE.parse().unwrap();
            for (i, chunk) in pcm.chunks(160).enumerate() {
                let mut ulaw = Vec::new();
                g711::encode_ulaw(chunk, &mut ulaw);
                let pkt = remote.build_frame(&ulaw).unwrap();
                s.handle_packet(Socket::Rtp, pkt, from, t0 + FRAME_DURATION * i as u32);
            }
            let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
            let dtmf: Vec<_> = events
                .iter()
                .filter(|e| matches!(e, MediaEvent::Dtmf { .. }))
                .collect();
            if expect {
                assert_eq!(dtmf.len(), 1, "{events:?}");
                assert!(matches!(
                    dtmf[0],
                    MediaEvent::Dtmf {
                        digit: '#',
                        source: DtmfSource::Inband,
                        ..
                    }
                ));
            } else {
                assert!(dtmf.is_empty());
            }
            // Same address as the SDP: no latch event.
            assert!(!events
                .iter()
                .any(|e| matches!(e, MediaEvent::RemoteLatched(_))));
        }
    }

    #[test]
    fn reordered_packets_are_delivered_in_order_to_the_tap() {
        let t0 = Instant::now();
        let cfg = MediaConfig {
            audio_tap: true,
            ..config()
        };
        let mut s = MediaSession::new(&negotiated(Some(101)), cfg, t0);
        let mut remote = remote_sender(0, t0);
        remote.start_talkspurt(t0);
        let from: SocketAddr = REMOTE.parse().unwrap();
        let pkts: Vec<Bytes> = (0..4)
            .map(|i| remote.build_frame(&[i as u8; 160]).unwrap())
            .collect();
        for i in [0usize, 2, 1, 3] {
            s.handle_packet(Socket::Rtp, pkts[i].clone(), from, t0);
        }
        let got: Vec<i16> = std::iter::from_fn(|| s.poll_audio())
            .map(|f| f.pcm[0])
            .collect();
        let want: Vec<i16> = (0..4).map(|i| g711::ulaw_to_linear(i as u8)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn audio_tap_can_be_turned_on_and_off_while_running() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        assert!(!s.audio_tap());
        let mut remote = remote_sender(0, t0);
        remote.start_talkspurt(t0);
        let from: SocketAddr = REMOTE.parse().unwrap();
        let mut send = |s: &mut MediaSession, byte: u8| {
            let pkt = remote.build_frame(&[byte; 160]).unwrap();
            s.handle_packet(Socket::Rtp, pkt, from, t0);
        };
        send(&mut s, 1);
        assert_eq!(s.poll_audio(), None, "tap off: nothing decoded");
        s.set_audio_tap(true);
        send(&mut s, 2);
        send(&mut s, 3);
        let frames: Vec<TapFrame> = std::iter::from_fn(|| s.poll_audio()).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].direction, TapDirection::Received);
        assert_eq!(frames[0].pcm[0], g711::ulaw_to_linear(2));
        assert_eq!(frames[1].timestamp.wrapping_sub(frames[0].timestamp), 160);
        send(&mut s, 4);
        s.set_audio_tap(false);
        send(&mut s, 5);
        assert_eq!(s.poll_audio(), None, "tap off: pending frames dropped");
    }

    #[test]
    fn stranger_with_other_ssrc_is_ignored_while_source_is_live() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        let from: SocketAddr = REMOTE.parse().unwrap();
        let mut remote = remote_sender(0, t0);
        remote.start_talkspurt(t0);
        s.handle_packet(
            Socket::Rtp,
            remote.build_frame(&[0xFF; 160]).unwrap(),
            from,
            t0,
        );
        let mut stranger = RtpSender::new(0x9999, 0, 1, 1, t0);
        stranger.start_talkspurt(t0);
        let evil: SocketAddr = "192.0.2.66:1234".parse().unwrap();
        s.handle_packet(
            Socket::Rtp,
            stranger.build_frame(&[0; 160]).unwrap(),
            evil,
            t0,
        );
        assert_eq!(s.stats().remote, from);
        assert_eq!(s.stats().ignored_packets, 1);
        // Same SSRC from a new port (NAT rebinding) relatches.
        let moved: SocketAddr = "198.51.100.7:30100".parse().unwrap();
        s.handle_packet(
            Socket::Rtp,
            remote.build_frame(&[0xFF; 160]).unwrap(),
            moved,
            t0,
        );
        assert_eq!(s.poll_event(), Some(MediaEvent::RemoteLatched(moved)));
        // After the old source is silent, a new stream may take over.
        let later = t0 + SOURCE_TAKEOVER;
        s.handle_packet(
            Socket::Rtp,
            stranger.build_frame(&[0; 160]).unwrap(),
            evil,
            later,
        );
        assert_eq!(s.stats().remote, evil);
        s.handle_packet(Socket::Rtp, Bytes::from_static(b"garbage"), evil, later);
        assert_eq!(s.stats().ignored_packets, 2);
    }

    #[test]
    fn rtcp_sr_when_sending_rr_otherwise_and_rtt() {
        let t0 = Instant::now();
        let cfg = MediaConfig {
            rtcp_interval: Duration::from_secs(5),
            wall_clock: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..config()
        };
        let mut s = MediaSession::new(&negotiated(None), cfg, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(2500)));
        s.handle_timeout(t0 + Duration::from_millis(2500));
        let rr = s.poll_transmit().unwrap();
        assert_eq!(rr.socket, Socket::Rtcp);
        assert_eq!(rr.to, "198.51.100.7:30001".parse().unwrap());
        assert!(matches!(
            rtp::parse_rtcp(&rr.bytes).unwrap()[0],
            RtcpPacket::ReceiverReport { ssrc: 0x1234, .. }
        ));

        s.play(vec![tone_prompt(100)], t0 + Duration::from_secs(3));
        let rtp_pkts = drive(&mut s, t0 + Duration::from_millis(7400), |_| Duration::ZERO);
        assert_eq!(rtp_pkts.len(), 5);
        let mut sr = None;
        s.handle_timeout(t0 + Duration::from_millis(7500));
        while let Some(tx) = s.poll_transmit() {
            if tx.socket == Socket::Rtcp {
                sr = Some(tx);
            }
        }
        let sr = rtp::parse_rtcp(&sr.expect("an RTCP report at 7.5 s").bytes).unwrap();
        let RtcpPacket::SenderReport {
            packets,
            octets,
            ntp,
            ..
        } = sr[0]
        else {
            panic!("expected SR, got {:?}", sr[0]);
        };
        assert_eq!((packets, octets), (5, 800));
        assert_eq!(ntp >> 32, 2_208_988_800 + 1_700_000_007);

        // The remote reports on us with LSR = our SR's middle bits and a 100 ms DLSR, 150 ms later.
        let rb = rtp::ReportBlock {
            ssrc: 0x1234,
            fraction_lost: 3,
            cumulative_lost: 1,
            extended_highest_seq: 5,
            jitter: 16,
            last_sr: (ntp >> 16) as u32,
            delay_since_last_sr: 6554,
        };
        let rr = rtp::build_report(0xABCD, None, Some(rb), "far");
        let rtcp_from: SocketAddr = "198.51.100.7:30051".parse().unwrap();
        s.handle_packet(
            Socket::Rtcp,
            rr,
            rtcp_from,
            t0 + Duration::from_millis(7650),
        );
        let st = s.stats();
        assert_eq!(st.remote_fraction_lost, Some(3));
        assert_eq!(st.remote_jitter_ms, Some(2.0));
        let rtt = st.rtt.unwrap().as_millis();
        assert!((48..=52).contains(&rtt), "rtt {rtt}");
        // RTCP now goes where the remote's RTCP comes from.
        s.close(t0 + Duration::from_secs(8));
        assert_eq!(s.poll_transmit().unwrap().to, rtcp_from);
        s.handle_packet(Socket::Rtcp, Bytes::from_static(&[1, 2, 3]), rtcp_from, t0);
        assert_eq!(s.stats().ignored_packets, 1);
    }

    /// A prompt whose samples differ frame to frame, so misplaced audio shows.
    fn ramp_prompt(samples: usize, seed: i32) -> Arc<Prompt> {
        let pcm = (0..samples as i32)
            .map(|n| ((n * 37 + seed * 1001) % 16000 - 8000) as i16)
            .collect();
        Arc::new(Prompt::from_pcm(pcm))
    }

    fn assert_one_talkspurt(pkts: &[(Instant, RtpPacket)]) {
        for (i, (_, p)) in pkts.iter().enumerate() {
            assert_eq!(p.marker, i == 0, "marker on packet {i}");
            if i > 0 {
                let prev = &pkts[i - 1].1;
                assert_eq!(p.sequence, prev.sequence.wrapping_add(1), "seq {i}");
                assert_eq!(p.timestamp, prev.timestamp.wrapping_add(160), "ts {i}");
            }
        }
    }

    #[test]
    fn loop_wraps_seamlessly_and_silently() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        // 50 ms: wrap-around falls mid-frame.
        let moh = ramp_prompt(400, 1);
        s.play_loop(moh.clone(), t0);
        let pkts = drive(&mut s, t0 + Duration::from_millis(990), |_| Duration::ZERO);
        assert_eq!(pkts.len(), 50);
        assert_one_talkspurt(&pkts);
        for (i, (at, _)) in pkts.iter().enumerate() {
            assert_eq!(*at, t0 + FRAME_DURATION * i as u32);
        }
        let sent: Vec<u8> = pkts.iter().flat_map(|(_, p)| p.payload.to_vec()).collect();
        let expected: Vec<u8> = moh.ulaw.iter().copied().cycle().take(sent.len()).collect();
        assert_eq!(sent, expected);
        assert_eq!(s.poll_event(), None, "no PlaybackFinished for wrap-arounds");
        assert!(s.is_playing());
        s.stop_loop(t0 + Duration::from_secs(1));
        assert!(!s.is_playing());
        assert!(drive(&mut s, t0 + Duration::from_secs(2), |_| Duration::ZERO).is_empty());
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn announcement_pauses_loop_which_resumes_where_it_was() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        let moh = ramp_prompt(8000, 1);
        let ann = ramp_prompt(240, 7);
        s.play_loop(moh.clone(), t0);
        let mut pkts = drive(&mut s, t0 + Duration::from_millis(40), |_| Duration::ZERO);
        assert_eq!(pkts.len(), 3);
        // "Ci sono 3 persone prima di lei", mid-frame: it starts at the next frame boundary.
        s.play(vec![ann.clone()], t0 + Duration::from_millis(50));
        pkts.extend(drive(&mut s, t0 + Duration::from_millis(80), |_| {
            Duration::ZERO
        }));
        assert_eq!(s.poll_event(), None, "not heard yet");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        pkts.extend(drive(&mut s, t0 + Duration::from_millis(200), |_| {
            Duration::ZERO
        }));
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        assert_eq!(s.poll_event(), None);
        assert!(s.is_playing(), "the loop goes on");
        assert_eq!(pkts.len(), 11);
        assert_one_talkspurt(&pkts);
        assert_eq!(&pkts[3].1.payload[..], &ann.ulaw[..160]);
        // The announcement's tail, then the loop from where it paused (sample 480).
        assert_eq!(&pkts[4].1.payload[..80], &ann.ulaw[160..240]);
        assert_eq!(&pkts[4].1.payload[80..], &moh.ulaw[480..560]);
        assert_eq!(&pkts[5].1.payload[..], &moh.ulaw[560..720]);

        // Stopping the loop while an announcement plays lets the announcement finish.
        s.play(vec![ann.clone()], t0 + Duration::from_millis(205));
        s.stop_loop(t0 + Duration::from_millis(206));
        let tail = drive(&mut s, t0 + Duration::from_secs(1), |_| Duration::ZERO);
        assert_eq!(tail.len(), 2);
        assert_eq!(&tail[1].1.payload[80..], &[g711::ULAW_SILENCE; 80][..]);
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        assert!(!s.is_playing());
    }

    #[test]
    fn play_nothing_over_a_loop_finishes_at_once_and_stop_playback_stops_both() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(None), config(), t0);
        s.play_loop(ramp_prompt(800, 2), t0);
        drive(&mut s, t0 + Duration::from_millis(100), |_| Duration::ZERO);
        s.play(vec![], t0 + Duration::from_millis(100));
        assert_eq!(s.poll_event(), Some(MediaEvent::PlaybackFinished));
        assert!(s.is_playing());
        s.play(vec![tone_prompt(100)], t0 + Duration::from_millis(100));
        s.stop_playback(t0 + Duration::from_millis(110));
        assert!(!s.is_playing());
        assert!(drive(&mut s, t0 + Duration::from_secs(2), |_| Duration::ZERO).is_empty());
        assert_eq!(s.poll_event(), None);
    }

    fn transmitted_rtp(s: &mut MediaSession) -> Vec<RtpPacket> {
        std::iter::from_fn(|| s.poll_transmit())
            .filter(|t| t.socket == Socket::Rtp)
            .map(|t| RtpPacket::parse(&t.bytes).unwrap())
            .collect()
    }

    #[test]
    fn send_dtmf_emits_rfc4733_that_a_receiver_decodes() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        let start = t0 + Duration::from_millis(1000);
        assert!(s.send_dtmf('5', 100, start));
        let first = transmitted_rtp(&mut s);
        assert_eq!(first.len(), 1, "the start packet goes out at once");
        let mut pkts: Vec<(Instant, RtpPacket)> = first.into_iter().map(|p| (start, p)).collect();
        pkts.extend(
            drive(&mut s, start + Duration::from_secs(1), |_| Duration::ZERO)
                .into_iter()
                .filter(|(_, p)| p.payload_type == 101),
        );
        // Start, update at 50 ms, end x3 at 100 ms.
        let offsets: Vec<u64> = pkts
            .iter()
            .map(|(at, _)| (*at - start).as_millis() as u64)
            .collect();
        assert_eq!(offsets, vec![0, 50, 100, 100, 100]);
        let ts = pkts[0].1.timestamp;
        for (i, (_, p)) in pkts.iter().enumerate() {
            assert_eq!((p.payload_type, p.ssrc, p.timestamp), (101, 0x1234, ts));
            assert_eq!(p.marker, i == 0);
            if i > 0 {
                assert_eq!(p.sequence, pkts[i - 1].1.sequence.wrapping_add(1));
            }
            let ev = dtmf::EventPayload::parse(&p.payload).unwrap();
            assert_eq!((ev.event, ev.end), (5, i >= 2));
        }
        assert_eq!(
            dtmf::EventPayload::parse(&pkts[4].1.payload)
                .unwrap()
                .duration,
            800
        );

        // Feed them to another session: one digit of 100 ms.
        let mut rx = MediaSession::new(&negotiated(Some(101)), config(), t0);
        for (at, p) in &pkts {
            let bytes = RtpSender::new(p.ssrc, 0, p.sequence, 0, t0).build(
                p.payload_type,
                p.marker,
                p.timestamp,
                &p.payload,
            );
            rx.handle_packet(Socket::Rtp, bytes, REMOTE.parse().unwrap(), *at);
        }
        let digits: Vec<_> = std::iter::from_fn(|| rx.poll_event())
            .filter(|e| matches!(e, MediaEvent::Dtmf { .. }))
            .collect();
        assert_eq!(
            digits,
            vec![MediaEvent::Dtmf {
                digit: '5',
                duration_ms: 100,
                source: DtmfSource::Rfc4733
            }]
        );
    }

    #[test]
    fn back_to_back_digits_are_spaced_and_have_their_own_timestamps() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        assert!(s.send_dtmf('1', 60, t0));
        assert!(s.send_dtmf('2', 60, t0));
        let mut pkts: Vec<(Instant, RtpPacket)> = transmitted_rtp(&mut s)
            .into_iter()
            .map(|p| (t0, p))
            .collect();
        pkts.extend(drive(&mut s, t0 + Duration::from_secs(1), |_| {
            Duration::ZERO
        }));
        let starts: Vec<_> = pkts.iter().filter(|(_, p)| p.marker).collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(
            starts[1].0 - starts[0].0,
            Duration::from_millis(60) + DTMF_GAP
        );
        assert_eq!(
            starts[1].1.timestamp.wrapping_sub(starts[0].1.timestamp),
            880
        );
        assert_eq!(
            dtmf::EventPayload::parse(&starts[1].1.payload)
                .unwrap()
                .event,
            2
        );
    }

    #[test]
    fn send_dtmf_refused_without_telephone_event_or_on_hold() {
        let t0 = Instant::now();
        let mut plain = MediaSession::new(&negotiated(None), config(), t0);
        assert!(!plain.send_dtmf('1', 100, t0));
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        assert!(!s.send_dtmf('x', 100, t0));
        s.set_direction(Direction::RecvOnly);
        assert!(!s.send_dtmf('1', 100, t0));
        assert!(plain.poll_transmit().is_none() && s.poll_transmit().is_none());
        // Hold in the middle of a digit abandons it.
        s.set_direction(Direction::SendRecv);
        assert!(s.send_dtmf('1', 200, t0));
        assert_eq!(transmitted_rtp(&mut s).len(), 1);
        s.set_direction(Direction::SendOnly);
        s.set_direction(Direction::Inactive);
        assert!(drive(&mut s, t0 + Duration::from_secs(1), |_| Duration::ZERO).is_empty());
    }

    #[test]
    fn digit_interrupts_playback_which_resumes_with_a_marker() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
        s.play(vec![tone_prompt(400)], t0);
        let mut pkts = drive(&mut s, t0 + Duration::from_millis(40), |_| Duration::ZERO);
        assert!(s.send_dtmf('#', 40, t0 + Duration::from_millis(45)));
        pkts.extend(
            transmitted_rtp(&mut s)
                .into_iter()
                .map(|p| (t0 + Duration::from_millis(45), p)),
        );
        pkts.extend(drive(&mut s, t0 + Duration::from_secs(1), |_| {
            Duration::ZERO
        }));
        let kinds: Vec<(u8, bool)> = pkts
            .iter()
            .map(|(_, p)| (p.payload_type, p.marker))
            .collect();
        // Audio 0-40 ms, event 45-85 ms (start + 3 ends), no audio meanwhile, audio again marked.
        assert_eq!(
            &kinds[..8],
            &[
                (0, true),
                (0, false),
                (0, false),
                (101, true),
                (101, false),
                (101, false),
                (101, false),
                (0, true)
            ]
        );
        let resumed = &pkts[7];
        assert!(resumed.0 >= t0 + Duration::from_millis(85));
        let event_ts = pkts[3].1.timestamp;
        assert!(resumed.1.timestamp.wrapping_sub(event_ts) >= 320);
    }

    mod srtp {
        use super::*;
        use crate::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpKeys};

        /// Our keys and the remote peer's context (its send key is our receive key).
        fn pair(suite: CryptoSuite) -> (SrtpKeys, SrtpContext) {
            let ours = SrtpKeys {
                suite,
                local: MasterKey::random(),
                remote: MasterKey::random(),
            };
            let peer = SrtpContext::new(&SrtpKeys {
                suite,
                local: ours.remote.clone(),
                remote: ours.local.clone(),
            })
            .unwrap();
            (ours, peer)
        }

        #[test]
        fn prompt_goes_out_encrypted_and_decrypts_at_the_peer() {
            let t0 = Instant::now();
            let (keys, mut peer) = pair(CryptoSuite::AesCm128HmacSha1_80);
            let mut s = MediaSession::new(&negotiated(None), config(), t0);
            s.set_srtp(Some(&keys)).unwrap();
            assert!(s.is_srtp());
            let prompt = tone_prompt(100);
            s.play(vec![prompt.clone()], t0);
            let mut n = 0;
            while let Some(t) = s
                .poll_timeout()
                .filter(|t| *t <= t0 + Duration::from_secs(1))
            {
                s.handle_timeout(t);
                while let Some(tx) = s.poll_transmit() {
                    if tx.socket != Socket::Rtp {
                        continue;
                    }
                    // The wire payload is not the prompt; the peer recovers it exactly.
                    let expect = &prompt.ulaw[n * 160..(n + 1) * 160];
                    assert_ne!(&tx.bytes[12..172], expect);
                    let plain = peer.unprotect_rtp(&tx.bytes).expect("peer decrypts");
                    let pkt = RtpPacket::parse(&plain).unwrap();
                    assert_eq!(&pkt.payload[..], expect, "frame {n}");
                    n += 1;
                }
            }
            assert_eq!(n, 5);
            // RTCP is protected too.
            s.close(t0 + Duration::from_secs(1));
            let bye = s.poll_transmit().unwrap();
            assert_eq!(bye.socket, Socket::Rtcp);
            let clear = rtp::build_bye(0x1234, "verde");
            // SRTCP: encrypted body, then E flag + index (4 bytes) and an 80-bit tag.
            assert_eq!(bye.bytes.len(), clear.len() + 14);
            assert_ne!(&bye.bytes[8..clear.len()], &clear[8..]);
            let plain = peer
                .unprotect_rtcp(&bye.bytes)
                .expect("peer decrypts SRTCP");
            assert_eq!(plain, clear);
        }

        #[test]
        fn digits_and_audio_arrive_through_srtp_and_relay_in_clear() {
            let t0 = Instant::now();
            let (keys, mut peer) = pair(CryptoSuite::AesCm128HmacSha1_32);
            let mut caller = MediaSession::new(&negotiated(Some(101)), config(), t0);
            caller.set_srtp(Some(&keys)).unwrap();
            caller.set_relay(true);
            let from: SocketAddr = "203.0.113.5:40000".parse().unwrap();
            let mut remote = remote_sender(0, t0);
            remote.start_talkspurt(t0);
            let audio = remote.build_frame(&[0x55; 160]).unwrap();
            caller.handle_packet(Socket::Rtp, peer.protect_rtp(&audio).unwrap(), from, t0);
            assert_eq!(caller.poll_event(), Some(MediaEvent::RemoteLatched(from)));
            for p in rfc4733_packets('5', 100, 10).unwrap() {
                let pkt = remote.build(101, p.marker, 8000, &p.payload);
                let sealed = peer.protect_rtp(&pkt).unwrap();
                caller.handle_packet(Socket::Rtp, sealed, from, t0 + p.offset);
            }
            assert_eq!(
                caller.poll_event(),
                Some(MediaEvent::Dtmf {
                    digit: '5',
                    duration_ms: 100,
                    source: DtmfSource::Rfc4733
                })
            );
            // The bridged plain leg gets the decrypted payload.
            let Some(Relay::Audio(frame)) = caller.poll_relay() else {
                panic!("no relayed audio");
            };
            assert_eq!(&frame.payload[..], &[0x55; 160]);
            let mut agent = MediaSession::new(
                &Negotiated {
                    remote: "192.0.2.50:6000".parse().unwrap(),
                    ..negotiated(Some(101))
                },
                config(),
                t0,
            );
            assert!(agent.send_relay(&frame, t0));
            let out = agent.poll_transmit().unwrap();
            assert_eq!(
                &RtpPacket::parse(&out.bytes).unwrap().payload[..],
                &[0x55; 160]
            );
            assert_eq!(caller.stats().srtp_rejected, 0);
        }

        #[test]
        fn wrong_key_or_plain_packets_are_rejected_and_counted() {
            let t0 = Instant::now();
            let (keys, _) = pair(CryptoSuite::AesCm128HmacSha1_80);
            let (_, mut stranger) = pair(CryptoSuite::AesCm128HmacSha1_80);
            let mut s = MediaSession::new(&negotiated(Some(101)), config(), t0);
            s.set_srtp(Some(&keys)).unwrap();
            let from: SocketAddr = "203.0.113.5:40000".parse().unwrap();
            let mut remote = remote_sender(0, t0);
            remote.start_talkspurt(t0);
            let plain = remote.build_frame(&[0x55; 160]).unwrap();
            s.handle_packet(Socket::Rtp, plain.clone(), from, t0);
            s.handle_packet(Socket::Rtp, stranger.protect_rtp(&plain).unwrap(), from, t0);
            let rr = rtp::build_report(0xABCD, None, None, "x");
            s.handle_packet(Socket::Rtcp, rr, from, t0);
            // Nothing got through: no latching, no stream, all counted.
            assert_eq!(s.poll_event(), None);
            let st = s.stats();
            assert_eq!(st.srtp_rejected, 3);
            assert_eq!(st.ignored_packets, 3);
            assert_eq!(st.packets_received, 0);
            assert_eq!(st.remote_ssrc, None);
            // Turning SRTP off (a plain re-INVITE) accepts clear RTP again.
            s.set_srtp(None).unwrap();
            s.handle_packet(Socket::Rtp, plain, from, t0);
            assert_eq!(s.poll_event(), Some(MediaEvent::RemoteLatched(from)));
        }

        #[test]
        fn same_keys_keep_the_context_new_keys_replace_it() {
            let t0 = Instant::now();
            let (keys, mut peer) = pair(CryptoSuite::AesCm128HmacSha1_80);
            let mut s = MediaSession::new(&negotiated(None), config(), t0);
            s.set_srtp(Some(&keys)).unwrap();
            let from: SocketAddr = "203.0.113.5:40000".parse().unwrap();
            let mut remote = remote_sender(0, t0);
            remote.start_talkspurt(t0);
            let first = peer
                .protect_rtp(&remote.build_frame(&[1; 160]).unwrap())
                .unwrap();
            s.handle_packet(Socket::Rtp, first.clone(), from, t0);
            // Re-applying the same keys keeps replay state: the replay is refused.
            s.set_srtp(Some(&keys)).unwrap();
            s.handle_packet(Socket::Rtp, first, from, t0);
            assert_eq!(s.stats().srtp_rejected, 1);
            let (other, _) = pair(CryptoSuite::AesCm128HmacSha1_80);
            s.set_srtp(Some(&other)).unwrap();
            let next = peer
                .protect_rtp(&remote.build_frame(&[2; 160]).unwrap())
                .unwrap();
            s.handle_packet(Socket::Rtp, next, from, t0);
            assert_eq!(s.stats().srtp_rejected, 2);
        }

        /// The SRTCP index of the BYE the session sends on `close`.
        fn bye_index(s: &mut MediaSession, peer: &mut SrtpContext, now: Instant) -> u32 {
            s.close(now);
            let t = s.poll_transmit().unwrap();
            assert_eq!(t.socket, Socket::Rtcp);
            assert!(peer.unprotect_rtcp(&t.bytes).is_ok());
            let e_index = &t.bytes[t.bytes.len() - 14..t.bytes.len() - 10];
            u32::from_be_bytes(e_index.try_into().unwrap()) & 0x7fff_ffff
        }

        #[test]
        fn a_new_remote_key_does_not_restart_our_stream() {
            // A restarted SRTCP index (or rollover counter) under our unchanged key would
            // reuse keystream.
            let t0 = Instant::now();
            let (keys, mut peer) = pair(CryptoSuite::AesCm128HmacSha1_80);
            let mut s = MediaSession::new(&negotiated(None), config(), t0);
            s.set_srtp(Some(&keys)).unwrap();
            let first = bye_index(&mut s, &mut peer, t0);
            let rekeyed = SrtpKeys {
                remote: MasterKey::random(),
                ..keys.clone()
            };
            s.set_srtp(Some(&rekeyed)).unwrap();
            assert_eq!(bye_index(&mut s, &mut peer, t0), first + 1);
            // Our own new key does start afresh (the peer needs the new key to read it).
            let (fresh, mut fresh_peer) = pair(CryptoSuite::AesCm128HmacSha1_80);
            s.set_srtp(Some(&fresh)).unwrap();
            assert_eq!(bye_index(&mut s, &mut fresh_peer, t0), 1);
        }
    }
}
