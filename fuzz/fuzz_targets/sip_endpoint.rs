//! The transaction layer's receive path, sans-IO: a sequence of datagrams (from two peers, over
//! UDP or TCP) with virtual time between them goes into `Endpoint::handle_bytes`, timers fire
//! as the clock passes them, and a toy TU answers requests with a status chosen by the input.
//! Two client transactions (an INVITE and an OPTIONS) are open from the start, with known
//! branches the seeds' responses use, so responses, CANCEL and timer paths are reachable.
//! Asserts no panic and that every transmit carries bytes.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use verde_fuzz::records;
use verde_sip::{Config, Endpoint, Event, Method, Peer, Request, ServerTxId, Transport};

const STATUSES: [u16; 8] = [100, 180, 183, 200, 202, 486, 487, 603];

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut ep = Endpoint::new(Config {
        extensions: &["100rel", "timer", "replaces"],
        ..Config::default()
    });
    let far: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let other: SocketAddr = "[2001:db8::7]:5070".parse().unwrap();
    let udp = Peer {
        transport: Transport::Udp,
        addr: far,
    };
    let invite = ep
        .send_request(
            client_request(Method::Invite, "z9hG4bK-fuzz-invite"),
            udp,
            now,
        )
        .expect("fresh INVITE client transaction");
    let _ = ep
        .send_request(
            client_request(Method::Options, "z9hG4bK-fuzz-options"),
            udp,
            now,
        )
        .expect("fresh OPTIONS client transaction");
    // Server transactions the toy TU answered provisionally: a CANCEL gets them a 487, a
    // record with flag 0x40 a 200.
    let mut pending: HashMap<ServerTxId, Request> = HashMap::new();

    for record in records(data) {
        now += record.advance;
        drive_timers(&mut ep, now);
        let peer = Peer {
            transport: if record.flags & 1 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            addr: if record.flags & 2 == 0 { far } else { other },
        };
        if record.flags & 0x80 != 0 {
            let _ = ep.cancel(invite, now);
        }
        ep.handle_bytes(record.data, peer, now);
        let status = STATUSES[usize::from(record.flags >> 2) % STATUSES.len()];
        tu(&mut ep, &mut pending, status, now);
        if record.flags & 0x40 != 0 {
            for (tx, request) in pending.drain() {
                let _ =
                    ep.send_response(tx, request.response(200, "OK").with_to_tag("fuzz-tu"), now);
            }
        }
    }
    // Let every transaction run out, as the binary's timer loop would.
    for _ in 0..64 {
        match ep.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                ep.handle_timeout(now);
                tu(&mut ep, &mut pending, 487, now);
            }
            None => break,
        }
    }
});

fn drive_timers(ep: &mut Endpoint, now: Instant) {
    while let Some(at) = ep.poll_timeout() {
        if at > now {
            break;
        }
        ep.handle_timeout(now);
    }
}

fn tu(ep: &mut Endpoint, pending: &mut HashMap<ServerTxId, Request>, status: u16, now: Instant) {
    while let Some(event) = ep.poll_event() {
        match event {
            Event::Request { tx, request, .. } => {
                let response = request.response(status, "Fuzz").with_to_tag("fuzz-tu");
                if ep.send_response(tx, response, now).is_ok() && status < 200 {
                    pending.insert(tx, request);
                }
            }
            Event::Cancelled { tx } => {
                if let Some(request) = pending.remove(&tx) {
                    let response = request.response(487, "Request Terminated");
                    let _ = ep.send_response(tx, response.with_to_tag("fuzz-tu"), now);
                }
            }
            _ => {}
        }
    }
    while let Some(t) = ep.poll_transmit() {
        assert!(!t.bytes.is_empty(), "empty transmit to {:?}", t.to);
    }
}

fn client_request(method: Method, branch: &str) -> Request {
    let cseq = format!("1 {}", method.as_str());
    Request::new(method, "sip:803164@192.0.2.10")
        .with_header(
            "Via",
            format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport"),
        )
        .with_header("Max-Forwards", "70")
        .with_header("From", "<sip:verde@192.0.2.1>;tag=fuzz-local")
        .with_header("To", "<sip:803164@192.0.2.10>")
        .with_header("Call-ID", "fuzz-call@192.0.2.1")
        .with_header("CSeq", cseq)
        .with_header("Contact", "<sip:verde@192.0.2.1:5060>")
}
