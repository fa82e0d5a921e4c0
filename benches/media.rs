//! Media hot paths: G.711, RFC 4733 decoding, RTP production during playback and the RTP
//! relay between the two legs of a bridged call.
//!
//! `cargo bench -p verde-benches --bench media`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verde_media::dtmf::{rfc4733_packets, Rfc4733Receiver};
use verde_media::rtp::{RtpPacket, RtpSender};
use verde_media::{
    bridge_step, g711, Codec, Direction, MediaConfig, MediaSession, Negotiated, Prompt, Socket,
};

fn speechlike(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (6000.0 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 2000.0 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin()) as i16
        })
        .collect()
}

fn g711_benches(c: &mut Criterion) {
    for (label, len) in [("frame_160", 160usize), ("second_8000", 8000)] {
        let pcm = speechlike(len);
        let mut ulaw = Vec::with_capacity(len);
        let mut alaw = Vec::with_capacity(len);
        g711::encode_ulaw(&pcm, &mut ulaw);
        g711::encode_alaw(&pcm, &mut alaw);
        let mut group = c.benchmark_group(format!("g711/{label}"));
        group.throughput(Throughput::Elements(len as u64));
        let mut out8 = Vec::with_capacity(len);
        let mut out16 = Vec::with_capacity(len);
        group.bench_function("encode_ulaw", |b| {
            b.iter(|| g711::encode_ulaw(black_box(&pcm), &mut out8))
        });
        group.bench_function("encode_alaw", |b| {
            b.iter(|| g711::encode_alaw(black_box(&pcm), &mut out8))
        });
        group.bench_function("decode_ulaw", |b| {
            b.iter(|| g711::decode_ulaw(black_box(&ulaw), &mut out16))
        });
        group.bench_function("decode_alaw", |b| {
            b.iter(|| g711::decode_alaw(black_box(&alaw), &mut out16))
        });
        group.finish();
    }
}

fn rfc4733_benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut sender = RtpSender::new(1, 0, 0, 0, t0);
    let update = rfc4733_packets('5', 200, 10).unwrap()[1];
    let packet = sender.build(101, false, 8000, &update.payload);
    let mut rx = Rfc4733Receiver::new();
    c.bench_function("rfc4733/parse_and_handle_update_packet", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&packet)).unwrap();
            rx.handle(p.timestamp, &p.payload, t0);
            black_box(rx.poll_digit())
        })
    });
}

fn session_benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let negotiated = Negotiated {
        answer: String::new(),
        codec: Codec::Pcmu,
        payload_type: 0,
        dtmf_pt: Some(101),
        remote: "127.0.0.1:30000".parse().unwrap(),
        remote_rtcp: "127.0.0.1:30001".parse().unwrap(),
        direction: Direction::SendRecv,
    };
    let prompt = Arc::new(Prompt::from_pcm(speechlike(8000 * 60)));
    let mut session = MediaSession::new(&negotiated, MediaConfig::default(), t0);
    session.play(vec![prompt.clone()], t0);
    let mut now = t0;
    c.bench_function("session/rtp_packet_during_playback", |b| {
        b.iter(|| {
            session.handle_timeout(now);
            let mut n = 0;
            while let Some(tx) = session.poll_transmit() {
                black_box(&tx);
                n += 1;
            }
            while session.poll_event().is_some() {}
            if !session.is_playing() {
                session.play(vec![prompt.clone()], now);
            }
            now += Duration::from_millis(20);
            n
        })
    });
}

fn leg(codec: Codec, remote: &str, t0: Instant) -> MediaSession {
    let remote: std::net::SocketAddr = remote.parse().unwrap();
    let negotiated = Negotiated {
        answer: String::new(),
        codec,
        payload_type: codec.static_payload_type(),
        dtmf_pt: Some(101),
        remote,
        remote_rtcp: std::net::SocketAddr::new(remote.ip(), remote.port() + 1),
        direction: Direction::SendRecv,
    };
    let config = MediaConfig {
        // A bridged leg has nobody listening for in-band digits: the default for trunks
        // with telephone-event, and what keeps decoding off the relay path.
        inband_dtmf: verde_media::InbandDtmf::Never,
        ..MediaConfig::default()
    };
    MediaSession::new(&negotiated, config, t0)
}

/// One packet from the caller's phone through leg A, `bridge_step`, and out of leg B: the
/// per-packet work of a bridged call in one direction. "receive_only" is the same packet into
/// a leg that does not relay, so the difference is the cost of relaying.
fn bridge_benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let caller: std::net::SocketAddr = "127.0.0.1:30000".parse().unwrap();
    let payload: Vec<u8> = {
        let mut out = Vec::new();
        g711::encode_ulaw(&speechlike(160), &mut out);
        out
    };
    let mut group = c.benchmark_group("bridge/packet");
    group.throughput(Throughput::Elements(1));
    for (label, b_codec, relay) in [
        ("receive_only", Codec::Pcmu, false),
        ("same_codec", Codec::Pcmu, true),
        ("transcode_pcmu_to_pcma", Codec::Pcma, true),
    ] {
        let mut a = leg(Codec::Pcmu, "127.0.0.1:30000", t0);
        let mut b = leg(b_codec, "127.0.0.1:40000", t0);
        a.set_relay(relay);
        b.set_relay(relay);
        let mut phone = RtpSender::new(0xCA11, 0, 0, 0, t0);
        let mut ts = 0u32;
        let mut now = t0;
        group.bench_function(label, |bench| {
            bench.iter(|| {
                let packet = phone.build(0, false, ts, &payload);
                a.handle_packet(Socket::Rtp, packet, caller, now);
                bridge_step(&mut a, &mut b, now);
                let mut n = 0;
                while let Some(tx) = b.poll_transmit() {
                    black_box(&tx);
                    n += 1;
                }
                ts = ts.wrapping_add(160);
                now += Duration::from_millis(20);
                n
            })
        });
        // A bench of a relay that silently sent nothing would be a fine-looking lie.
        assert_eq!(b.stats().packets_sent > 0, relay, "{label}");
    }
    group.finish();
}

criterion_group!(
    benches,
    g711_benches,
    rfc4733_benches,
    session_benches,
    bridge_benches
);
criterion_main!(benches);
