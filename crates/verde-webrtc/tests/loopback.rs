//! Two WebRTC legs over real localhost UDP sockets: "browser" (an offering leg, as the load
//! tool will use) and "verde" (an answering leg with a `verde_media::MediaSession` on top,
//! wired the way the binary will wire it). ICE, DTLS and SRTP run for real in between.
//!
//! Checked: the connection comes up; the browser's PCMU payloads reach the session intact
//! (through its relay queue); the browser's RFC 4733 digit is reported by the session; the
//! session's prompt reaches the browser byte for byte; the session's digit reaches the
//! browser as telephone-event packets; and nothing on the wire is clear RTP. The same with
//! Opus on the wire: both legs transcode and the session still sees PCMU.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verde_media::session::{MediaConfig, MediaEvent, Relay, Socket};
use verde_media::{g711, Codec, Direction, MediaSession, Negotiated, Prompt};
use verde_webrtc::{AudioCodec, DtlsIdentity, LegEvent, WebRtcConfig, WebRtcLeg, MEDIA_PEER};

const BROWSER_SSRC: u32 = 0x0B0B_0B0B;
const VERDE_SSRC: u32 = 0x0E0E_0E0E;

fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a localhost UDP socket");
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&BROWSER_SSRC.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Payload octets of a received RTP packet (fixed header, no CSRC or extension from our
/// senders; rtc may add none either since no extension is negotiated).
fn split(pkt: &[u8]) -> (u8, &[u8]) {
    let cc = usize::from(pkt[0] & 0x0F);
    let mut off = 12 + 4 * cc;
    if pkt[0] & 0x10 != 0 {
        let len = usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]));
        off += 4 + 4 * len;
    }
    (pkt[1] & 0x7F, &pkt[off..])
}

fn drain_socket(socket: &UdpSocket, leg: &mut WebRtcLeg, wire: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                wire.push(buf[..n].to_vec());
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

#[test]
fn browser_leg_and_verde_leg_talk_over_udp_with_srtp() {
    let identity = DtlsIdentity::generate().expect("certificate");
    let (browser_sock, browser_addr) = bind();
    let (verde_sock, verde_addr) = bind();
    let start = Instant::now();

    let (mut browser, offer) = WebRtcLeg::offer(
        WebRtcConfig {
            candidate: browser_addr,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            dtmf: true,
            identity: Some(identity.clone()),
            ssrc: BROWSER_SSRC,
            ice_lite: false,
        },
        start,
    )
    .expect("offer");
    let (mut verde, answer) = WebRtcLeg::answer(
        WebRtcConfig {
            candidate: verde_addr,
            codecs: vec![AudioCodec::Pcmu],
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

    let media = verde.media().expect("negotiated audio");
    assert_eq!(media.codec, AudioCodec::Pcmu);
    let dtmf_pt = media.dtmf_pt.expect("telephone-event/8000 negotiated");
    assert_eq!(browser.media().unwrap().dtmf_pt, Some(dtmf_pt));

    // What the binary does with a WebRTC leg: a MediaSession whose "remote" is MEDIA_PEER.
    let negotiated = Negotiated {
        answer,
        codec: Codec::Pcmu,
        payload_type: media.payload_type,
        dtmf_pt: media.dtmf_pt,
        remote: MEDIA_PEER,
        remote_rtcp: MEDIA_PEER,
        direction: Direction::SendRecv,
    };
    let config = MediaConfig {
        ssrc: Some(verde.ssrc()),
        ..MediaConfig::default()
    };
    let mut session = MediaSession::new(&negotiated, config, start);
    session.set_relay(true);
    let tone: Vec<i16> = (0..8000)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0) as i16)
        .collect();
    let prompt = Arc::new(Prompt::from_pcm(tone));

    let mut browser_wire = Vec::new(); // what reached the browser's socket
    let mut verde_wire = Vec::new();
    let mut browser_rx: Vec<Vec<u8>> = Vec::new(); // decrypted RTP at the browser
    let mut sent_by_browser: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut relayed_ok = 0;
    let mut verde_digits = Vec::new();
    let mut connected = (false, false);
    let mut prompt_started = false;
    let mut seq: u16 = 100;
    let mut next_frame = start;
    let deadline = start + Duration::from_secs(20);

    loop {
        assert!(
            Instant::now() < deadline,
            "timed out: connected={connected:?}, relayed={relayed_ok}, verde digits={verde_digits:?}, \
             browser got {} RTP packets",
            browser_rx.len()
        );
        let now = Instant::now();

        // The browser stand-in: 20 ms PCMU frames, a digit '4' after 10 frames.
        if connected.0 && now >= next_frame && seq < 200 {
            next_frame += Duration::from_millis(20);
            seq += 1;
            let ts = u32::from(seq) * 160;
            if (110..116).contains(&seq) {
                // RFC 4733: event 4, one timestamp, growing duration, end bit on the last three.
                let i = u32::from(seq - 110);
                let end = i >= 3;
                let duration = (i.min(3) + 1) * 160;
                let payload = [
                    4,
                    if end { 0x80 | 10 } else { 10 },
                    (duration >> 8) as u8,
                    duration as u8,
                ];
                browser
                    .send_rtp(&rtp(dtmf_pt, i == 0, seq, 110 * 160, &payload), now)
                    .unwrap();
            } else {
                let payload: Vec<u8> = (0..160).map(|i| (i as u8) ^ (seq as u8)).collect();
                sent_by_browser.insert(ts, payload.clone());
                browser
                    .send_rtp(&rtp(0, false, seq, ts, &payload), now)
                    .unwrap();
            }
        }

        while let Some(t) = session.poll_transmit() {
            // RTCP from the session is not carried (docs/webrtc.md); RTP goes through SRTP.
            if t.socket == Socket::Rtp {
                assert_eq!(t.to, MEDIA_PEER);
                verde.send_rtp(&t.bytes, now).unwrap();
            }
        }
        flush(&browser_sock, &mut browser);
        flush(&verde_sock, &mut verde);
        drain_socket(&browser_sock, &mut browser, &mut browser_wire);
        drain_socket(&verde_sock, &mut verde, &mut verde_wire);

        while let Some(ev) = browser.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "browser leg failed");
            if ev == LegEvent::Connected {
                connected.0 = true;
                next_frame = Instant::now();
            }
        }
        while let Some(ev) = verde.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "verde leg failed");
            if ev == LegEvent::Connected {
                connected.1 = true;
            }
        }
        if connected.1 && !prompt_started {
            prompt_started = true;
            session.play(vec![prompt.clone()], now);
            session.send_dtmf('7', 100, now);
        }

        let now = Instant::now();
        while let Some(pkt) = verde.poll_rtp() {
            session.handle_packet(Socket::Rtp, pkt, MEDIA_PEER, now);
        }
        while let Some(pkt) = browser.poll_rtp() {
            browser_rx.push(pkt.to_vec());
        }
        while let Some(relay) = session.poll_relay() {
            if let Relay::Audio(frame) = relay {
                let sent = sent_by_browser
                    .get(&frame.timestamp)
                    .expect("relayed a frame the browser sent");
                assert_eq!(
                    frame.payload.as_ref(),
                    sent.as_slice(),
                    "payload altered in transit"
                );
                relayed_ok += 1;
            }
        }
        while let Some(ev) = session.poll_event() {
            if let MediaEvent::Dtmf { digit, .. } = ev {
                verde_digits.push(digit);
            }
        }

        tick(&mut browser);
        tick(&mut verde);
        if session.poll_timeout().is_some_and(|t| t <= now) {
            session.handle_timeout(now);
        }

        let audio_at_browser: Vec<&[u8]> = browser_rx
            .iter()
            .map(|p| split(p))
            .filter(|(pt, _)| *pt == 0)
            .map(|(_, payload)| payload)
            .collect();
        let digit_at_browser = browser_rx
            .iter()
            .map(|p| split(p))
            .any(|(pt, payload)| pt == dtmf_pt && payload.first() == Some(&7));
        if relayed_ok >= 40
            && verde_digits.contains(&'4')
            && audio_at_browser.len() >= 25
            && digit_at_browser
        {
            // The prompt arrived byte for byte, in order, from its first frame.
            let first = prompt.ulaw[..160].to_vec();
            let at = audio_at_browser
                .iter()
                .position(|p| *p == first.as_slice())
                .expect("the prompt's first frame reached the browser");
            let frames = &audio_at_browser[at..];
            for (i, frame) in frames.iter().take(20).enumerate() {
                assert_eq!(
                    *frame,
                    &prompt.ulaw[i * 160..(i + 1) * 160],
                    "prompt frame {i}"
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // SRTP on the wire: no datagram is the clear RTP the other side decrypted.
    for clear in &browser_rx {
        assert!(!browser_wire.contains(clear), "clear RTP on the wire");
    }
    assert!(
        verde.rejected() == 0 && browser.rejected() == 0,
        "rtc rejected datagrams"
    );
}

fn tone(freq: f64, amplitude: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// Power at `freq` in 8 kHz PCM (Goertzel).
fn power_at(pcm: &[i16], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn assert_tone(pcm: &[i16], freq: f64, reference_rms: f64, what: &str) {
    let level = 20.0 * (rms(pcm) / reference_rms).log10();
    assert!(level.abs() <= 2.0, "{what}: level off by {level:.2} dB");
    for other in [freq / 2.0, freq * 2.0] {
        assert!(
            power_at(pcm, freq) > 100.0 * power_at(pcm, other),
            "{what}: {freq} Hz does not dominate {other} Hz"
        );
    }
}

/// Both legs negotiate Opus on the wire and transcode; each side only ever handles PCMU and
/// telephone-event/8000 (what `session_media` says), as the binary and the load tool will.
/// The verde side runs a real `MediaSession`: the browser's tone reaches its relay queue and
/// its digit is detected; the session's prompt and digit reach the browser.
#[test]
fn opus_legs_present_pcmu_to_the_media_session_over_udp() {
    let identity = DtlsIdentity::generate().expect("certificate");
    let (browser_sock, browser_addr) = bind();
    let (verde_sock, verde_addr) = bind();
    let start = Instant::now();
    let (mut browser, offer) = WebRtcLeg::offer(
        WebRtcConfig {
            candidate: browser_addr,
            codecs: vec![AudioCodec::Opus],
            dtmf: true,
            identity: Some(identity.clone()),
            ssrc: BROWSER_SSRC,
            ice_lite: false,
        },
        start,
    )
    .expect("offer");
    let (mut verde, answer) = WebRtcLeg::answer(
        WebRtcConfig {
            candidate: verde_addr,
            codecs: vec![AudioCodec::Pcma, AudioCodec::Opus],
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
    assert_eq!(verde.media().unwrap().codec, AudioCodec::Opus);
    let media = verde.session_media().expect("session media");
    assert_eq!(
        (media.codec, media.payload_type, media.dtmf_pt),
        (AudioCodec::Pcmu, 0, Some(101))
    );
    assert_eq!(browser.session_media(), Some(media));

    let negotiated = Negotiated {
        answer,
        codec: Codec::Pcmu,
        payload_type: media.payload_type,
        dtmf_pt: media.dtmf_pt,
        remote: MEDIA_PEER,
        remote_rtcp: MEDIA_PEER,
        direction: Direction::SendRecv,
    };
    let config = MediaConfig {
        ssrc: Some(verde.ssrc()),
        ..MediaConfig::default()
    };
    let mut session = MediaSession::new(&negotiated, config, start);
    session.set_relay(true);
    // Three seconds: still playing whenever the loop ends, so the tail below is prompt audio.
    let prompt = Arc::new(Prompt::from_pcm(tone(440.0, 8000.0, 3 * 8000)));
    let browser_tone = tone(1000.0, 8000.0, 160 * 100);

    let mut relayed: Vec<i16> = Vec::new();
    let mut verde_digits = Vec::new();
    let mut at_browser: Vec<i16> = Vec::new();
    let mut digit_at_browser = false;
    let mut connected = (false, false);
    let mut prompt_started = false;
    let mut frame: usize = 0;
    let mut next_frame = start;
    let deadline = start + Duration::from_secs(20);
    let (mut wire_b, mut wire_v) = (Vec::new(), Vec::new());

    loop {
        assert!(
            Instant::now() < deadline,
            "timed out: connected={connected:?}, relayed {} samples, verde digits={verde_digits:?}, \
             browser got {} samples, digit at browser {digit_at_browser}",
            relayed.len(),
            at_browser.len()
        );
        let now = Instant::now();
        if connected.0 && now >= next_frame && frame < 100 {
            next_frame += Duration::from_millis(20);
            let seq = 300 + frame as u16;
            let ts = 160 * frame as u32;
            if (40..46).contains(&frame) {
                let i = (frame - 40) as u32;
                let duration = (i.min(3) + 1) * 160;
                let flags = if i >= 3 { 0x80 | 10 } else { 10 };
                let payload = [4, flags, (duration >> 8) as u8, duration as u8];
                browser
                    .send_rtp(&rtp(101, i == 0, seq, 160 * 40, &payload), now)
                    .unwrap();
            } else {
                let pcm = &browser_tone[frame * 160..(frame + 1) * 160];
                let ulaw: Vec<u8> = pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect();
                browser
                    .send_rtp(&rtp(0, false, seq, ts, &ulaw), now)
                    .unwrap();
            }
            frame += 1;
        }
        while let Some(t) = session.poll_transmit() {
            if t.socket == Socket::Rtp {
                verde.send_rtp(&t.bytes, now).unwrap();
            }
        }
        flush(&browser_sock, &mut browser);
        flush(&verde_sock, &mut verde);
        drain_socket(&browser_sock, &mut browser, &mut wire_b);
        drain_socket(&verde_sock, &mut verde, &mut wire_v);
        while let Some(ev) = browser.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "browser leg failed");
            if ev == LegEvent::Connected {
                connected.0 = true;
                next_frame = Instant::now();
            }
        }
        while let Some(ev) = verde.poll_event() {
            assert_ne!(ev, LegEvent::Failed, "verde leg failed");
            connected.1 |= ev == LegEvent::Connected;
        }
        if connected.1 && !prompt_started {
            prompt_started = true;
            session.play(vec![prompt.clone()], now);
            session.send_dtmf('7', 100, now);
        }
        let now = Instant::now();
        while let Some(pkt) = verde.poll_rtp() {
            session.handle_packet(Socket::Rtp, pkt, MEDIA_PEER, now);
        }
        while let Some(pkt) = browser.poll_rtp() {
            let (pt, payload) = split(&pkt);
            match pt {
                0 => at_browser.extend(payload.iter().map(|&c| g711::ulaw_to_linear(c))),
                101 => digit_at_browser |= payload.first() == Some(&7),
                other => panic!("the browser leg passed PT {other} to its session side"),
            }
        }
        while let Some(relay) = session.poll_relay() {
            if let Relay::Audio(frame) = relay {
                assert_eq!(frame.codec, Codec::Pcmu);
                relayed.extend(frame.payload.iter().map(|&c| g711::ulaw_to_linear(c)));
            }
        }
        while let Some(ev) = session.poll_event() {
            if let MediaEvent::Dtmf { digit, .. } = ev {
                verde_digits.push(digit);
            }
        }
        tick(&mut browser);
        tick(&mut verde);
        if session.poll_timeout().is_some_and(|t| t <= now) {
            session.handle_timeout(now);
        }
        // 30 frames of tone before the digit (skip the codec's start-up), 30 of the prompt.
        if relayed.len() >= 160 * 35
            && verde_digits.contains(&'4')
            && at_browser.len() >= 160 * 40
            && digit_at_browser
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_tone(
        &relayed[160 * 5..160 * 35],
        1000.0,
        rms(&browser_tone),
        "relayed by the session",
    );
    // The prompt's 440 Hz, once the digit is over and the codec has started.
    let tail = &at_browser[at_browser.len() - 160 * 20..];
    assert_tone(
        tail,
        440.0,
        rms(&prompt_pcm(&prompt)),
        "prompt at the browser",
    );
}

fn prompt_pcm(prompt: &Prompt) -> Vec<i16> {
    prompt
        .ulaw
        .iter()
        .map(|&c| g711::ulaw_to_linear(c))
        .collect()
}
