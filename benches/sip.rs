//! SIP message and transaction costs.
//!
//! `cargo bench -p verde-benches --bench sip`
//!
//! * `sip_parse/verde`: `Message::parse` of a SIPp-style INVITE with SDP (rsip tokenizer inside).
//! * `sip_parse/rsip_tokenize`: rsip's tokenizer alone, the share of `verde` spent in rsip.
//! * `sip_parse/rsip_full`: rsip's own typed parse (`SipMessage::try_from`), for reference.
//! * `sip_serialize/verde`: `Request::to_bytes` of the same INVITE.
//! * `sip_transaction/invite_lifecycle`: one INVITE server transaction end to end over UDP:
//!   INVITE in, 100, 200 (with SDP), ACK in, timer L; parsing and serialization included.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verde_sip::{Config, Endpoint, Event, Message, Peer, Transport};

const SDP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 10.1.2.3\r\n\
s=-\r\n\
c=IN IP4 10.1.2.3\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn invite() -> String {
    format!(
        "INVITE sip:800123456@10.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-12345-1-0;rport\r\n\
Record-Route: <sip:10.9.9.9;lr>\r\n\
From: sipp <sip:sipp@10.1.2.3:5061>;tag=12345SIPpTag001\r\n\
To: 800123456 <sip:800123456@10.0.0.1:5060>\r\n\
Call-ID: 1-12345@10.1.2.3\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@10.1.2.3:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
Supported: timer\r\n\
User-Agent: SIPp\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n{SDP}",
        SDP.len()
    )
}

const ACK: &str = "ACK sip:verde@10.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-12345-1-5;rport\r\n\
Route: <sip:10.9.9.9;lr>\r\n\
From: sipp <sip:sipp@10.1.2.3:5061>;tag=12345SIPpTag001\r\n\
To: 800123456 <sip:800123456@10.0.0.1:5060>;tag=verde-1\r\n\
Call-ID: 1-12345@10.1.2.3\r\n\
CSeq: 1 ACK\r\n\
Contact: sip:sipp@10.1.2.3:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Length: 0\r\n\r\n";

fn parse(c: &mut Criterion) {
    let raw = invite();
    let bytes = raw.as_bytes();
    let mut g = c.benchmark_group("sip_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verde", |b| {
        b.iter(|| Message::parse(black_box(bytes)).unwrap())
    });
    g.bench_function("rsip_tokenize", |b| {
        b.iter(|| rsip::message::sip_message::Tokenizer::tokenize(black_box(bytes)).unwrap())
    });
    g.bench_function("rsip_full", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(bytes)).unwrap())
    });
    g.finish();

    let msg = Message::parse(bytes).unwrap();
    let mut g = c.benchmark_group("sip_serialize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verde", |b| b.iter(|| black_box(&msg).to_bytes()));
    g.finish();
}

fn transaction(c: &mut Criterion) {
    let raw = invite();
    let peer = Peer {
        transport: Transport::Udp,
        addr: "10.1.2.3:5061".parse::<SocketAddr>().unwrap(),
    };
    let config = Config::default();
    let mut ep = Endpoint::new(config);
    // A synthetic clock: each iteration starts after the previous transaction ended.
    let mut now = Instant::now();
    let step = config.t1 * 64 + Duration::from_secs(1);
    let mut g = c.benchmark_group("sip_transaction");
    g.throughput(Throughput::Elements(1));
    g.bench_function("invite_lifecycle", |b| {
        b.iter(|| {
            ep.handle_bytes(raw.as_bytes(), peer, now);
            let Some(Event::Request { tx, request, .. }) = ep.poll_event() else {
                panic!("INVITE not delivered");
            };
            ep.send_response(tx, request.response(100, "Trying"), now)
                .unwrap();
            let ok = request
                .response(200, "OK")
                .with_to_tag("verde-1")
                .with_header("Contact", "<sip:verde@10.0.0.1:5060>")
                .with_body("application/sdp", SDP);
            ep.send_response(tx, ok, now).unwrap();
            ep.handle_bytes(ACK.as_bytes(), peer, now);
            let Some(Event::Ack { .. }) = ep.poll_event() else {
                panic!("ACK not matched");
            };
            while let Some(t) = ep.poll_transmit() {
                black_box(t);
            }
            now += step;
            ep.handle_timeout(now);
            debug_assert_eq!(ep.transaction_count(), (0, 0));
        })
    });
    g.finish();
}

criterion_group!(benches, parse, transaction);
criterion_main!(benches);
