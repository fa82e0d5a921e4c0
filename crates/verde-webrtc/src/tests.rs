use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

// Shared with the loopback integration test, without a public test API.
#[path = "../tests/support/tone.rs"]
mod tone;
use tone::{assert_tone, db, rms, sine};

/// An audio-only offer shaped like Chrome's: Opus first, G.711 later, telephone-event at
/// several rates (126 is the 8 kHz one), trickle ICE with no candidates yet.
const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:EsAw\r\n\
a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:5B:E0:96:2A:4C:C2:F1\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\n\
a=msid:stream track\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1001 cname:abcd\r\n\
a=ssrc:1001 msid:stream track\r\n";

fn config(candidate: &str, codecs: Vec<AudioCodec>, ssrc: u32) -> WebRtcConfig {
    WebRtcConfig {
        candidate: candidate.parse().unwrap(),
        codecs,
        dtmf: true,
        identity: None,
        ssrc,
        ice_lite: false,
    }
}

fn media_lines(sdp: &str) -> Vec<&str> {
    sdp.lines().filter(|l| l.starts_with("a=rtpmap:")).collect()
}

#[test]
fn answer_to_chrome_keeps_g711_and_8k_dtmf_only() {
    let cfg = config(
        "203.0.113.7:40000",
        vec![AudioCodec::Pcma, AudioCodec::Pcmu],
        7,
    );
    let (leg, answer) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    let rtpmaps = media_lines(&answer);
    assert!(rtpmaps.iter().any(|l| l.contains("PCMA/8000")), "{answer}");
    assert!(
        rtpmaps
            .iter()
            .any(|l| l.contains("126 telephone-event/8000")),
        "{answer}"
    );
    assert!(!answer.contains("opus"), "{answer}");
    assert!(!answer.contains("telephone-event/48000"), "{answer}");
    // Our one candidate, the advertised address, is in the answer: no trickle from us.
    assert!(answer.contains("203.0.113.7 40000 typ host"), "{answer}");
    assert!(answer.contains("a=fingerprint:sha-256"), "{answer}");
    // The answerer of an actpass offer must pick a role (RFC 8842 §5.3).
    assert!(answer.contains("a=setup:active") || answer.contains("a=setup:passive"));
    let media = leg.media().unwrap();
    // Our order decides among what the browser offers (Chrome lists PCMU before PCMA).
    assert_eq!(media.codec, AudioCodec::Pcma);
    assert_eq!(media.payload_type, 8);
    assert_eq!(media.dtmf_pt, Some(126));
}

#[test]
fn g711_wins_over_chromes_opus_when_opus_is_only_a_fallback() {
    let cfg = config(
        "203.0.113.7:40000",
        vec![AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus],
        7,
    );
    let (leg, answer) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    let media = leg.media().unwrap();
    assert_eq!(media.codec, AudioCodec::Pcmu, "{answer}");
    // No transcoding: the session sees what the wire carries.
    assert_eq!(leg.session_media().unwrap().codec, AudioCodec::Pcmu);
    assert_eq!(media.dtmf_pt, Some(126), "{answer}");
}

#[test]
fn answer_with_only_pcma_forces_pcma() {
    let cfg = config("203.0.113.7:40000", vec![AudioCodec::Pcma], 7);
    let (leg, answer) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    assert!(!answer.contains("PCMU"), "{answer}");
    assert_eq!(leg.media().unwrap().codec, AudioCodec::Pcma);
    assert_eq!(leg.media().unwrap().payload_type, 8);
}

#[test]
fn opus_is_negotiated_when_accepted() {
    let cfg = config(
        "203.0.113.7:40000",
        vec![AudioCodec::Opus, AudioCodec::Pcma],
        7,
    );
    let (leg, _) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    assert_eq!(leg.media().unwrap().codec, AudioCodec::Opus);
    assert_eq!(leg.media().unwrap().payload_type, 111);
}

#[test]
fn offer_without_a_common_codec_is_refused() {
    let opus_only = CHROME_OFFER
        .replace("111 63 9 0 8 13 110 126", "111 110")
        .replace("a=rtpmap:0 PCMU/8000\r\n", "")
        .replace("a=rtpmap:8 PCMA/8000\r\n", "");
    let cfg = config("203.0.113.7:40000", vec![AudioCodec::Pcma], 7);
    let err = WebRtcLeg::answer(cfg, &opus_only, Instant::now()).err();
    assert!(
        err.is_some(),
        "an Opus-only offer must not be answered with G.711"
    );
}

/// Two legs wired back to back in memory with a virtual clock: `a` offers (it plays the
/// browser), `b` answers (verde). Proves the whole stack is sans-IO (no socket, no sleep).
struct Pair {
    a: WebRtcLeg,
    b: WebRtcLeg,
    now: Instant,
}

const A_ADDR: &str = "10.0.0.1:5000";
const B_ADDR: &str = "10.0.0.2:6000";

impl Pair {
    fn new(a_codecs: Vec<AudioCodec>, b_codecs: Vec<AudioCodec>) -> Pair {
        let now = Instant::now();
        let identity = DtlsIdentity::generate().unwrap();
        let mut cfg_a = config(A_ADDR, a_codecs, 0xA);
        cfg_a.identity = Some(identity.clone());
        let mut cfg_b = config(B_ADDR, b_codecs, 0xB);
        cfg_b.identity = Some(identity);
        let (mut a, offer) = WebRtcLeg::offer(cfg_a, now).unwrap();
        let (b, answer) = WebRtcLeg::answer(cfg_b, &offer, now).unwrap();
        a.accept_answer(&answer, now).unwrap();
        Pair { a, b, now }
    }

    /// Delivers every pending datagram both ways, then advances the clock by one 20 ms frame.
    fn step(&mut self) {
        let (a_addr, b_addr): (SocketAddr, SocketAddr) =
            (A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap());
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = self.a.poll_transmit() {
                assert_eq!(to, b_addr);
                self.b.handle_datagram(a_addr, &bytes, self.now);
                moved = true;
            }
            while let Some((to, bytes)) = self.b.poll_transmit() {
                assert_eq!(to, a_addr);
                self.a.handle_datagram(b_addr, &bytes, self.now);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.now += Duration::from_millis(20);
        let next = [self.a.poll_timeout(), self.b.poll_timeout()];
        if next
            .into_iter()
            .flatten()
            .any(|deadline| deadline <= self.now)
        {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }

    fn connect(&mut self) {
        let start = self.now;
        while !(self.a.is_connected() && self.b.is_connected()) {
            assert!(
                self.now < start + Duration::from_secs(10),
                "ICE/DTLS did not come up"
            );
            self.step();
        }
    }
}

#[test]
fn in_memory_call_connects_and_carries_rtp_both_ways() {
    let mut pair = Pair::new(
        vec![AudioCodec::Pcmu],
        vec![AudioCodec::Pcmu, AudioCodec::Pcma],
    );
    pair.connect();
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for seq in 1..=10u16 {
        pair.a
            .send_rtp(&rtp(0, seq, 0x1111, 0xAA), pair.now)
            .unwrap();
        pair.b
            .send_rtp(&rtp(0, seq, 0x2222, 0x55), pair.now)
            .unwrap();
        pair.step();
        got_a.extend(std::iter::from_fn(|| pair.a.poll_rtp()));
        got_b.extend(std::iter::from_fn(|| pair.b.poll_rtp()));
    }
    assert!(
        got_a.len() >= 5 && got_b.len() >= 5,
        "a got {}, b got {}",
        got_a.len(),
        got_b.len()
    );
    let first_b = rtc::rtp::Packet::unmarshal(&mut &got_b[0][..]).unwrap();
    assert_eq!(
        first_b.header.ssrc, 0xA,
        "SSRC is rewritten to the sending leg's"
    );
    assert_eq!(first_b.payload.as_ref(), &[0xAA; 160][..]);
    let first_a = rtc::rtp::Packet::unmarshal(&mut &got_a[0][..]).unwrap();
    assert_eq!(first_a.payload.as_ref(), &[0x55; 160][..]);
}

pub(crate) fn rtp(pt: u8, seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(172);
    v.push(0x80);
    v.push(pt);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend(std::iter::repeat_n(fill, 160));
    v
}

#[test]
fn rtp_before_connection_is_dropped_not_an_error() {
    let cfg = config("203.0.113.7:40000", vec![AudioCodec::Pcmu], 7);
    let (mut leg, _) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    // drain the gathering-related output, if any
    while leg.poll_transmit().is_some() {}
    leg.send_rtp(&rtp(0, 1, 9, 0xFF), Instant::now()).unwrap();
    assert!(
        leg.poll_transmit().is_none(),
        "no keys yet: nothing may leave in clear"
    );
    assert!(matches!(
        leg.send_rtp(&[0x80, 0], Instant::now()),
        Err(WebRtcError::MalformedRtp)
    ));
}

/// A browser that vanishes after signaling (closed tab, blocked UDP) must end the call:
/// the leg reports `Failed` once ICE gives up, driven by the virtual clock alone.
#[test]
fn unreachable_peer_fails_on_the_virtual_clock() {
    let start = Instant::now();
    let identity = DtlsIdentity::generate().unwrap();
    let mut cfg_a = config("10.0.0.1:5000", vec![AudioCodec::Pcmu], 1);
    cfg_a.identity = Some(identity.clone());
    let mut cfg_b = config("10.0.0.2:6000", vec![AudioCodec::Pcmu], 2);
    cfg_b.identity = Some(identity);
    let (_a, offer) = WebRtcLeg::offer(cfg_a, start).unwrap();
    let (mut b, _answer) = WebRtcLeg::answer(cfg_b, &offer, start).unwrap();
    let mut events = Vec::new();
    let mut now = start;
    while now < start + Duration::from_secs(120) && !events.contains(&LegEvent::Failed) {
        while b.poll_transmit().is_some() {} // everything is lost
        match b.poll_timeout() {
            Some(t) if t > now => now = t,
            _ => now += Duration::from_millis(200),
        }
        b.handle_timeout(now);
        events.extend(std::iter::from_fn(|| b.poll_event()));
    }
    assert!(events.contains(&LegEvent::Failed), "events: {events:?}");
    assert!(!events.contains(&LegEvent::Connected));
    assert!(!b.is_connected());
    println!("failed after {:?}", now - start);
}

// ---- Opus: the browser side sends and receives raw Opus, verde's side presents PCMU ----

fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&0x0B0Bu32.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn parse(bytes: &[u8]) -> rtc::rtp::Packet {
    rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap()
}

/// An Opus call: `a` is the browser, offering Opus only, and keeps raw Opus (its transcoder
/// removed, as a browser has none); `b` is verde, accepting G.711 and Opus.
fn opus_call() -> (Pair, AudioMedia) {
    let mut pair = Pair::new(
        vec![AudioCodec::Opus],
        vec![AudioCodec::Pcmu, AudioCodec::Opus],
    );
    pair.a.transcoder = None;
    let wire = pair.b.media().unwrap();
    assert_eq!(wire.codec, AudioCodec::Opus);
    assert_eq!(pair.a.media(), Some(wire), "both ends agree on the wire");
    pair.connect();
    (pair, wire)
}

fn opus_encoder_48k() -> opus::Encoder {
    opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap()
}

#[test]
fn opus_answer_keeps_the_48k_event_and_the_session_sees_pcmu() {
    let cfg = config(
        "203.0.113.7:40000",
        vec![AudioCodec::Opus, AudioCodec::Pcma],
        7,
    );
    let (leg, answer) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(
        answer.contains("a=rtpmap:110 telephone-event/48000"),
        "{answer}"
    );
    assert!(!answer.contains("telephone-event/8000"), "{answer}");
    assert_eq!(
        answer.matches("telephone-event").count(),
        1,
        "one event, once: {answer}"
    );
    let wire = leg.media().unwrap();
    assert_eq!((wire.codec, wire.payload_type), (AudioCodec::Opus, 111));
    assert_eq!(wire.dtmf_pt, Some(110));
    assert_eq!(
        leg.session_media(),
        Some(AudioMedia {
            codec: AudioCodec::Pcmu,
            payload_type: 0,
            dtmf_pt: Some(101),
        })
    );
}

#[test]
fn opus_configured_after_g711_keeps_the_8k_event_although_the_browser_prefers_opus() {
    let cfg = config(
        "203.0.113.7:40000",
        vec![AudioCodec::Pcmu, AudioCodec::Opus],
        7,
    );
    let (leg, answer) = WebRtcLeg::answer(cfg, CHROME_OFFER, Instant::now()).unwrap();
    assert!(!answer.contains("telephone-event/48000"), "{answer}");
    let media = leg.media().unwrap();
    assert_eq!(media.codec, AudioCodec::Pcmu);
    assert_eq!(media.dtmf_pt, Some(126));
    assert_eq!(leg.session_media(), Some(media), "no transcoding for G.711");
    assert!(leg.transcoder.is_none());
}

#[test]
fn opus_call_carries_a_1khz_tone_from_the_session_to_the_browser() {
    let (mut pair, wire) = opus_call();
    let tone = sine(1000.0, 8000, 8000.0, 160 * 50);
    let mut sent = Vec::new(); // what the session's PCMU really carries
    let mut received = Vec::new();
    for (i, frame) in tone.chunks(160).enumerate() {
        let ulaw: Vec<u8> = frame
            .iter()
            .map(|&s| verde_media::g711::linear_to_ulaw(s))
            .collect();
        sent.extend(ulaw.iter().map(|&c| verde_media::g711::ulaw_to_linear(c)));
        let (seq, ts) = (4000 + i as u16, 1_000_000 + 160 * i as u32);
        let now = pair.now;
        pair.b
            .send_rtp(&rtp_packet(0, i == 0, seq, ts, &ulaw), now)
            .unwrap();
        pair.step();
        received.extend(std::iter::from_fn(|| pair.a.poll_rtp()).map(|b| parse(&b)));
    }
    assert!(received.len() >= 45, "only {} packets", received.len());
    // The browser's decoder, at its own 48 kHz.
    let mut decoder = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    let mut pcm48 = Vec::new();
    for p in &received {
        assert_eq!(p.header.payload_type, wire.payload_type);
        let i = u32::from(p.header.sequence_number - 4000);
        assert_eq!(p.header.timestamp, (1_000_000 + 160 * i) * 6);
        assert_eq!(p.header.ssrc, 0xB);
        let mut out = [0i16; 5760];
        let n = decoder.decode(&p.payload, &mut out, false).unwrap();
        assert_eq!(n, 960, "20 ms at 48 kHz");
        pcm48.extend_from_slice(&out[..n]);
    }
    // Skip the codec's first frames (encoder start-up and look-ahead).
    assert_tone(
        &pcm48[960 * 5..],
        1000.0,
        48000,
        rms(&sent),
        "at the browser",
    );
}

#[test]
fn opus_call_carries_a_1khz_tone_from_the_browser_to_the_session() {
    let (mut pair, wire) = opus_call();
    let tone = sine(1000.0, 48000, 8000.0, 960 * 50);
    let mut encoder = opus_encoder_48k();
    let mut received = Vec::new();
    for (i, frame) in tone.chunks(960).enumerate() {
        let payload = encoder.encode_vec(frame, 1500).unwrap();
        let (seq, ts) = (60000 + i as u16, 3_000_000_000u32 + 960 * i as u32);
        let now = pair.now;
        pair.a
            .send_rtp(
                &rtp_packet(wire.payload_type, false, seq, ts, &payload),
                now,
            )
            .unwrap();
        pair.step();
        received.extend(std::iter::from_fn(|| pair.b.poll_rtp()).map(|b| parse(&b)));
    }
    assert!(received.len() >= 45, "only {} packets", received.len());
    let mut pcm8 = Vec::new();
    for p in &received {
        assert_eq!(p.header.payload_type, 0, "PCMU for the session");
        assert_eq!(p.payload.len(), 160);
        let i = u32::from(p.header.sequence_number.wrapping_sub(60000));
        assert!(i < 50, "sequence numbers pass through");
        assert_eq!(p.header.timestamp, (3_000_000_000u32 + 960 * i) / 6);
        pcm8.extend(
            p.payload
                .iter()
                .map(|&c| verde_media::g711::ulaw_to_linear(c)),
        );
    }
    assert_tone(&pcm8[160 * 5..], 1000.0, 8000, rms(&tone), "at the session");
}

/// RFC 4733 digit '5' as three packets of one event: growing duration, end bit on the last.
fn digit_5(pt: u8, first_seq: u16, ts: u32, unit: u32) -> Vec<Vec<u8>> {
    (0..3u16)
        .map(|i| {
            let duration = (u32::from(i) + 1) * unit;
            let flags = if i == 2 { 0x80 | 10 } else { 10 };
            let payload = [5, flags, (duration >> 8) as u8, duration as u8];
            rtp_packet(pt, i == 0, first_seq + i, ts, &payload)
        })
        .collect()
}

fn event_fields(p: &rtc::rtp::Packet) -> (u8, bool, u16) {
    let b = &p.payload;
    (b[0], b[1] & 0x80 != 0, u16::from_be_bytes([b[2], b[3]]))
}

#[test]
fn opus_call_rescales_telephone_events_both_ways() {
    let (mut pair, wire) = opus_call();
    let event_pt = wire.dtmf_pt.expect("telephone-event/48000 negotiated");

    // Session -> browser: PT 101 at 8 kHz becomes the wire's 48 kHz event.
    for pkt in digit_5(101, 700, 8000, 160) {
        let now = pair.now;
        pair.b.send_rtp(&pkt, now).unwrap();
    }
    pair.step();
    let at_browser: Vec<_> = std::iter::from_fn(|| pair.a.poll_rtp())
        .map(|b| parse(&b))
        .collect();
    assert_eq!(at_browser.len(), 3);
    for (i, p) in at_browser.iter().enumerate() {
        assert_eq!(p.header.payload_type, event_pt);
        assert_eq!(p.header.timestamp, 48000, "8000 × 6");
        assert_eq!(p.header.marker, i == 0);
        assert_eq!(
            event_fields(p),
            (5, i == 2, 960 * (i as u16 + 1)),
            "duration × 6"
        );
    }

    // Browser -> session: the 48 kHz event becomes PT 101 at 8 kHz.
    for pkt in digit_5(event_pt, 900, 96000, 960) {
        let now = pair.now;
        pair.a.send_rtp(&pkt, now).unwrap();
    }
    pair.step();
    let at_session: Vec<_> = std::iter::from_fn(|| pair.b.poll_rtp())
        .map(|b| parse(&b))
        .collect();
    assert_eq!(at_session.len(), 3);
    for (i, p) in at_session.iter().enumerate() {
        assert_eq!(p.header.payload_type, 101);
        assert_eq!(p.header.sequence_number, 900 + i as u16);
        assert_eq!(p.header.timestamp, 16000, "96000 / 6");
        assert_eq!(
            event_fields(p),
            (5, i == 2, 160 * (i as u16 + 1)),
            "duration / 6"
        );
    }
}

#[test]
fn opus_sequence_gap_is_concealed_with_audio() {
    let (mut pair, wire) = opus_call();
    let tone = sine(1000.0, 48000, 8000.0, 960 * 30);
    let mut encoder = opus_encoder_48k();
    // As Chrome does once it sees loss: in-band FEC, so the frame before a gap is recoverable.
    encoder.set_inband_fec(true).unwrap();
    encoder.set_packet_loss_perc(10).unwrap();
    // One lost frame (recovered from the next packet's FEC), then two in a row (the first
    // by libopus's concealment, which fades, the second from FEC after it).
    let lost = [10u16, 20, 21];
    let mut received = Vec::new();
    for (i, frame) in tone.chunks(960).enumerate() {
        let payload = encoder.encode_vec(frame, 1500).unwrap();
        let seq = i as u16;
        if lost.contains(&seq) {
            continue;
        }
        let now = pair.now;
        pair.a
            .send_rtp(
                &rtp_packet(wire.payload_type, false, seq, 960 * i as u32, &payload),
                now,
            )
            .unwrap();
        pair.step();
        received.extend(std::iter::from_fn(|| pair.b.poll_rtp()).map(|b| parse(&b)));
    }
    let seqs: Vec<u16> = received.iter().map(|p| p.header.sequence_number).collect();
    assert_eq!(
        seqs,
        (0..30).collect::<Vec<u16>>(),
        "every slot filled once"
    );
    for (seq, floor_db) in [(10, -3.0), (20, -6.0), (21, -20.0)] {
        let p = &received[seq];
        assert_eq!(p.header.payload_type, 0);
        assert_eq!(p.payload.len(), 160, "a whole 20 ms frame");
        assert_eq!(p.header.timestamp, 160 * seq as u32);
        let pcm: Vec<i16> = p
            .payload
            .iter()
            .map(|&c| verde_media::g711::ulaw_to_linear(c))
            .collect();
        let level = db(rms(&pcm) / rms(&tone));
        assert!(
            level > floor_db,
            "seq {seq}: concealment is {level:.1} dB below the tone (floor {floor_db} dB)"
        );
    }
}

/// verde offers (the agent softphone) and a browser answers with every telephone-event of
/// our offer, as Chrome does: the offerer must still pick the 48 kHz one for Opus.
#[test]
fn our_opus_offer_takes_the_48k_event_from_an_answer_listing_both() {
    let now = Instant::now();
    let (mut verde, offer) = WebRtcLeg::offer(
        config(A_ADDR, vec![AudioCodec::Opus, AudioCodec::Pcmu], 1),
        now,
    )
    .unwrap();
    let events: Vec<&str> = media_lines(&offer)
        .into_iter()
        .filter(|l| l.contains("telephone-event"))
        .collect();
    assert_eq!(
        events,
        [
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:110 telephone-event/48000"
        ],
        "{offer}"
    );
    let (_browser, answer) = WebRtcLeg::answer(
        config(B_ADDR, vec![AudioCodec::Opus, AudioCodec::Pcmu], 2),
        &offer,
        now,
    )
    .unwrap();
    let m_line = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    let both = answer.replace(m_line, &format!("{m_line} 101")).replace(
        "a=rtpmap:110 telephone-event/48000\r\n",
        "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    assert!(both.contains("a=rtpmap:101 telephone-event/8000"), "{both}");
    verde.accept_answer(&both, now).unwrap();
    let wire = verde.media().unwrap();
    assert_eq!((wire.codec, wire.dtmf_pt), (AudioCodec::Opus, Some(110)));
    assert_eq!(verde.session_media().unwrap().dtmf_pt, Some(101));
    assert!(verde.transcoder.is_some());
}
