//! Opus ⇄ G.711 transcoding for WebRTC legs whose browser chose Opus: the cost of one 20 ms
//! frame each way through `verde_webrtc::OpusTranscoder`, RTP parsing and writing included.
//! A transcoded call costs both directions × 50 frames per second.
//!
//! `cargo bench -p verde-benches --bench opus`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verde_media::g711;
use verde_webrtc::OpusTranscoder;

const OPUS_PT: u8 = 111;
const FRAMES: usize = 50;

fn speechlike(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let envelope = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            (envelope
                * (6000.0 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                    + 2000.0 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin())) as i16
        })
        .collect()
}

fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&0x5EEDu32.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// One second of the session's PCMU frames.
fn pcmu_frames() -> Vec<Vec<u8>> {
    let pcm = speechlike(160 * FRAMES);
    pcm.chunks(160)
        .enumerate()
        .map(|(i, frame)| {
            let mut ulaw = Vec::new();
            g711::encode_ulaw(frame, &mut ulaw);
            rtp(0, i as u16, 160 * i as u32, &ulaw)
        })
        .collect()
}

fn transcode_benches(c: &mut Criterion) {
    let pcmu = pcmu_frames();
    let mut group = c.benchmark_group("opus/frame_20ms");
    group.throughput(Throughput::Elements(1));

    let mut encoder = OpusTranscoder::new(OPUS_PT, Some(110)).unwrap();
    let mut i = 0;
    group.bench_function("encode_pcmu_to_opus", |b| {
        b.iter(|| {
            let out = encoder.encode(black_box(&pcmu[i % FRAMES])).unwrap();
            i += 1;
            out.expect("a 20 ms frame encodes")
        })
    });

    // The browser's packets: what our encoder makes, as a browser's would be.
    let mut source = OpusTranscoder::new(OPUS_PT, Some(110)).unwrap();
    let opus: Vec<Vec<u8>> = pcmu
        .iter()
        .map(|p| source.encode(p).unwrap().unwrap().to_vec())
        .collect();
    let mut decoder = OpusTranscoder::new(OPUS_PT, Some(110)).unwrap();
    let mut seq: u16 = 0;
    let mut packet = Vec::with_capacity(512);
    group.bench_function("decode_opus_to_pcmu", |b| {
        b.iter(|| {
            // Sequence numbers must keep climbing: a repeated one is dropped undecoded.
            packet.clear();
            packet.extend_from_slice(&opus[usize::from(seq) % FRAMES]);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            seq = seq.wrapping_add(1);
            let out = decoder.decode(black_box(&packet)).unwrap();
            assert_eq!(out.len(), 1, "one G.711 packet per Opus packet");
            out
        })
    });
    group.finish();
}

criterion_group!(benches, transcode_benches);
criterion_main!(benches);
