//! The loopback test's rig: two WebRTC legs on real localhost UDP sockets, "browser" (the
//! offering leg) and "verde" (the answering leg with a `MediaSession` on top, wired the way
//! the binary wires it), and one turn of the event loop that carries datagrams, RTP and
//! timers between them. What each test sends and checks stays in the test.

pub mod tone;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verde_media::session::{MediaConfig, MediaEvent, Socket};
use verde_media::{Codec, Direction, MediaSession, Negotiated, Prompt};
use verde_webrtc::{AudioCodec, DtlsIdentity, LegEvent, WebRtcConfig, WebRtcLeg, MEDIA_PEER};

const BROWSER_SSRC: u32 = 0x0B0B_0B0B;
const VERDE_SSRC: u32 = 0x0E0E_0E0E;
/// How long a test's exchange may take before it fails.
const TEST_TIME: Duration = Duration::from_secs(20);
/// The browser stand-in's packetization.
const FRAME: Duration = Duration::from_millis(20);

/// An RTP packet as the browser stand-in sends it.
pub fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&BROWSER_SSRC.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The `i`-th packet of the browser's digit 4 (RFC 4733): one timestamp, growing duration,
/// the end bit on the last three (from `i` 3 on).
pub fn digit_4(i: u32) -> [u8; 4] {
    let duration = (i.min(3) + 1) * 160;
    let flags = if i >= 3 { 0x80 | 10 } else { 10 };
    [4, flags, (duration >> 8) as u8, duration as u8]
}

/// Payload type and payload of a received RTP packet (fixed header, no CSRC or extension from
/// our senders; rtc may add none either since no extension is negotiated).
pub fn split(pkt: &[u8]) -> (u8, &[u8]) {
    let cc = usize::from(pkt[0] & 0x0F);
    let mut off = 12 + 4 * cc;
    if pkt[0] & 0x10 != 0 {
        let len = usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]));
        off += 4 + 4 * len;
    }
    (pkt[1] & 0x7F, &pkt[off..])
}

fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a localhost UDP socket");
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// Hands every datagram waiting on `socket` to `leg`, keeping a copy in `wire` if given.
fn drain_socket(socket: &UdpSocket, leg: &mut WebRtcLeg, mut wire: Option<&mut Vec<Vec<u8>>>) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(wire) = wire.as_deref_mut() {
                    wire.push(buf[..n].to_vec());
                }
                leg.handle_datagram(from, &buf[..n], Instant::now());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("recv failed: {e}"),
        }
    }
}

fn flush(socket: &UdpSocket, leg: &mut WebRtcLeg) {
    while let Some((to, bytes)) = leg.poll_transmit() {
        socket.send_to(&bytes, to).expect("send on localhost");
    }
}

fn tick(leg: &mut WebRtcLeg) {
    let now = Instant::now();
    if leg.poll_timeout().is_some_and(|t| t <= now) {
        leg.handle_timeout(now);
    }
}

/// Both legs after the offer and answer, before any datagram.
pub struct Legs {
    pub browser: WebRtcLeg,
    pub verde: WebRtcLeg,
    answer: String,
    browser_sock: UdpSocket,
    verde_sock: UdpSocket,
    start: Instant,
}

impl Legs {
    /// The browser offers `browser_codecs` (full ICE), verde answers with `verde_codecs`
    /// (ICE lite), both with telephone-event and one DTLS certificate.
    pub fn negotiate(browser_codecs: Vec<AudioCodec>, verde_codecs: Vec<AudioCodec>) -> Legs {
        let identity = DtlsIdentity::generate().expect("certificate");
        let (browser_sock, browser_addr) = bind();
        let (verde_sock, verde_addr) = bind();
        let start = Instant::now();
        let (mut browser, offer) = WebRtcLeg::offer(
            WebRtcConfig {
                candidate: browser_addr,
                codecs: browser_codecs,
                dtmf: true,
                identity: Some(identity.clone()),
                ssrc: BROWSER_SSRC,
                ice_lite: false,
            },
            start,
        )
        .expect("offer");
        let (verde, answer) = WebRtcLeg::answer(
            WebRtcConfig {
                candidate: verde_addr,
                codecs: verde_codecs,
                dtmf: true,
                identity: Some(identity),
                ssrc: VERDE_SSRC,
                ice_lite: true,
            },
            &offer,
            start,
        )
        .expect("answer");
        browser
            .accept_answer(&answer, start)
            .expect("accept answer");
        Legs {
            browser,
            verde,
            answer,
            browser_sock,
            verde_sock,
            start,
        }
    }

    /// What the binary does with a WebRTC leg: a relaying `MediaSession` built with the leg's
    /// `session_media()`, whose "remote" is `MEDIA_PEER`. It plays `prompt` and sends a digit
    /// 7 once verde's leg is connected.
    pub fn with_session(self, prompt: Arc<Prompt>) -> Loopback {
        let media = self.verde.session_media().expect("session media");
        let negotiated = Negotiated {
            answer: self.answer,
            codec: Codec::Pcmu,
            payload_type: media.payload_type,
            dtmf_pt: media.dtmf_pt,
            remote: MEDIA_PEER,
            remote_rtcp: MEDIA_PEER,
            direction: Direction::SendRecv,
        };
        let config = MediaConfig {
            ssrc: Some(self.verde.ssrc()),
            ..MediaConfig::default()
        };
        let mut session = MediaSession::new(&negotiated, config, self.start);
        session.set_relay(true);
        Loopback {
            browser: self.browser,
            verde: self.verde,
            session,
            browser_sock: self.browser_sock,
            verde_sock: self.verde_sock,
            browser_wire: Vec::new(),
            connected: (false, false),
            verde_digits: Vec::new(),
            next_frame: self.start,
            deadline: self.start + TEST_TIME,
            prompt,
            prompt_started: false,
        }
    }
}

/// The two legs and the session, exchanging over UDP.
pub struct Loopback {
    pub browser: WebRtcLeg,
    pub verde: WebRtcLeg,
    pub session: MediaSession,
    browser_sock: UdpSocket,
    verde_sock: UdpSocket,
    /// Every datagram that reached the browser's socket.
    pub browser_wire: Vec<Vec<u8>>,
    /// (browser, verde) reported `Connected`.
    pub connected: (bool, bool),
    /// The digits the session detected.
    pub verde_digits: Vec<char>,
    next_frame: Instant,
    deadline: Instant,
    prompt: Arc<Prompt>,
    prompt_started: bool,
}

impl Loopback {
    pub fn in_time(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Whether the browser stand-in sends its next 20 ms frame now: it is connected and the
    /// frame is due (the pacing starts from the connection).
    pub fn frame_due(&mut self, now: Instant) -> bool {
        if self.connected.0 && now >= self.next_frame {
            self.next_frame += FRAME;
            true
        } else {
            false
        }
    }

    /// The first half of a turn: the session's RTP into verde's leg (RTCP is not carried,
    /// docs/webrtc.md), datagrams both ways, the legs' events (the prompt and digit 7 start
    /// once verde's leg is connected), and verde's decrypted RTP into the session. The test
    /// then takes the browser's RTP and the session's relay queue, and calls [`Self::finish_turn`]
    /// with the returned time.
    pub fn exchange(&mut self, now: Instant) -> Instant {
        while let Some(t) = self.session.poll_transmit() {
            if t.socket == Socket::Rtp {
                assert_eq!(t.to, MEDIA_PEER);
                self.verde.send_rtp(&t.bytes, now).unwrap();
            }
        }
        flush(&self.browser_sock, &mut self.browser);
        flush(&self.verde_sock, &mut self.verde);
        drain_socket(
            &self.browser_sock,
            &mut self.browser,
            Some(&mut self.browser_wire),
        );
        drain_socket(&self.verde_sock, &mut self.verde, None);

        while let Some(ev) = self.browser.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "browser leg failed");
            if ev == LegEvent::Connected {
                self.connected.0 = true;
                self.next_frame = Instant::now();
            }
        }
        while let Some(ev) = self.verde.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "verde leg failed");
            self.connected.1 |= ev == LegEvent::Connected;
        }
        if self.connected.1 && !self.prompt_started {
            self.prompt_started = true;
            self.session.play(vec![self.prompt.clone()], now);
            self.session.send_dtmf('7', 100, now);
        }

        let now = Instant::now();
        while let Some(pkt) = self.verde.poll_rtp() {
            self.session
                .handle_packet(Socket::Rtp, pkt, MEDIA_PEER, now);
        }
        now
    }

    /// The second half of a turn: the session's digits, then every timer that is due.
    pub fn finish_turn(&mut self, now: Instant) {
        while let Some(ev) = self.session.poll_event() {
            if let MediaEvent::Dtmf { digit, .. } = ev {
                self.verde_digits.push(digit);
            }
        }
        tick(&mut self.browser);
        tick(&mut self.verde);
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
    }
}
