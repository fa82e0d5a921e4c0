use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

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
    // The offer listed PCMU before PCMA: the answer keeps the offerer's order.
    assert_eq!(media.codec, AudioCodec::Pcmu);
    assert_eq!(media.payload_type, 0);
    assert_eq!(media.dtmf_pt, Some(126));
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

/// Two legs wired back to back in memory with a virtual clock: the offerer plays the
/// browser. Proves the whole stack is sans-IO (no socket, no sleep) and gives the media
/// path a deterministic check; the socket version is in tests/loopback.rs.
#[test]
fn in_memory_call_connects_and_carries_rtp_both_ways() {
    let start = Instant::now();
    let mut now = start;
    let identity = DtlsIdentity::generate().unwrap();
    let a_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b_addr: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut cfg_a = config("10.0.0.1:5000", vec![AudioCodec::Pcmu], 0xA);
    cfg_a.identity = Some(identity.clone());
    let mut cfg_b = config(
        "10.0.0.2:6000",
        vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        0xB,
    );
    cfg_b.identity = Some(identity);
    let (mut a, offer) = WebRtcLeg::offer(cfg_a, now).unwrap();
    let (mut b, answer) = WebRtcLeg::answer(cfg_b, &offer, now).unwrap();
    a.accept_answer(&answer, now).unwrap();

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let mut seq = 0u16;
    while now < start + Duration::from_secs(10) {
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = a.poll_transmit() {
                assert_eq!(to, b_addr);
                b.handle_datagram(a_addr, &bytes, now);
                moved = true;
            }
            while let Some((to, bytes)) = b.poll_transmit() {
                assert_eq!(to, a_addr);
                a.handle_datagram(b_addr, &bytes, now);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        got_a.extend(std::iter::from_fn(|| a.poll_rtp()));
        got_b.extend(std::iter::from_fn(|| b.poll_rtp()));
        if got_a.len() >= 5 && got_b.len() >= 5 {
            break;
        }
        if a.is_connected() && b.is_connected() {
            seq += 1;
            a.send_rtp(&rtp(0, seq, 0x1111, 0xAA), now).unwrap();
            b.send_rtp(&rtp(0, seq, 0x2222, 0x55), now).unwrap();
        }
        now += Duration::from_millis(20);
        let next = [a.poll_timeout(), b.poll_timeout()];
        for deadline in next.into_iter().flatten() {
            if deadline <= now {
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
        }
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
