//! A datagram or TCP stream chunk as the binary's SIP transport sees it: TCP framing, the
//! message parser, the header accessors and dialog builders a TU runs on what it parsed, and
//! serialization. Asserts no panic, frame lengths inside the buffer, and that a parsed message
//! re-serializes to bytes that parse back to the same bytes (what a B2BUA forwards must be
//! what it read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verde_sip::{frame, refer_to, uri_socket_addr, Dialog, Frame, Message, Transport};

/// The binary's limit for one TCP message (crates/verde/src/sip_core.rs MAX_TCP_MESSAGE).
const MAX_TCP_MESSAGE: usize = 65_536;

fuzz_target!(|data: &[u8]| {
    // TCP: cut messages off the front as the connection task does.
    let mut buf = data;
    while !buf.is_empty() {
        match frame(buf, MAX_TCP_MESSAGE) {
            Ok(Frame::Message { len }) => {
                assert!(
                    len > 0 && len <= buf.len(),
                    "frame len {len} of {}",
                    buf.len()
                );
                exercise(&buf[..len]);
                buf = &buf[len..];
            }
            Ok(Frame::KeepAlive { len }) => {
                assert!(
                    len > 0 && len <= buf.len(),
                    "keep-alive len {len} of {}",
                    buf.len()
                );
                buf = &buf[len..];
            }
            Ok(Frame::NeedMore) | Err(_) => break,
        }
    }
    // UDP: the whole datagram is one message.
    exercise(data);
});

fn exercise(bytes: &[u8]) {
    let Ok(msg) = Message::parse(bytes) else {
        return;
    };
    let _ = (msg.call_id(), msg.cseq(), msg.from_tag(), msg.to_tag());
    let _ = (msg.contact_uri(), msg.content_type());
    if let Some(via) = msg.top_via() {
        let _ = (via.branch(), via.received(), via.rport(), via.sent_by());
    }
    match &msg {
        Message::Request(req) => {
            let _ = refer_to(req);
            let _ = uri_socket_addr(&req.uri);
            let response = req.response(486, "Busy Here");
            let _ = response.to_bytes();
            if let Ok(mut dialog) = Dialog::uas(req, "fuzztag", "sip:verde@192.0.2.1:5060") {
                let _ = dialog.remote_target_peer(Transport::Udp);
                let _ = dialog.request(verde_sip::Method::Bye).to_bytes();
                let _ = dialog.ack(1).to_bytes();
            }
        }
        Message::Response(_) => {}
    }

    let first = msg.to_bytes();
    let again = Message::parse(&first)
        .unwrap_or_else(|e| panic!("re-serialized message does not parse: {e}\n{first:?}"));
    let second = again.to_bytes();
    assert_eq!(
        first, second,
        "serialization is not stable across a parse round trip"
    );
    assert!(
        matches!(frame(&first, usize::MAX), Ok(Frame::Message { len }) if len == first.len()),
        "a serialized message does not frame as itself: {first:?}"
    );
}
