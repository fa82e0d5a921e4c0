use super::*;
use crate::message::Message;
use crate::testdata::invite;

fn parse(s: &str) -> Request {
    match Message::parse(s.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn refer(refer_to_lines: &str) -> Request {
    parse(&format!(
        "REFER sip:verde@10.0.0.1:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-ref;rport\r\n\
From: <sip:agent1@verde.example>;tag=ag\r\n\
To: <sip:queue@verde.example>;tag=vt\r\n\
Call-ID: leg2@verde\r\n\
CSeq: 3 REFER\r\n\
Contact: <sip:agent1@192.168.1.20:5060>\r\n\
{refer_to_lines}\
Referred-By: <sip:agent1@verde.example>\r\n\
Content-Length: 0\r\n\r\n"
    ))
}

#[test]
fn blind_transfer_target() {
    let r = refer_to(&refer(
        "Refer-To: <sip:agent2@verde.example;user=phone>\r\n",
    ))
    .unwrap();
    assert_eq!(r.uri, "sip:agent2@verde.example;user=phone");
    assert_eq!(r.replaces, None);
    // Compact form and a bare addr-spec.
    let r = refer_to(&refer("r: sip:*11@verde.example\r\n")).unwrap();
    assert_eq!(r.uri, "sip:*11@verde.example");
    let r = refer_to(&refer("Refer-To: \"Sales\" <tel:+390212345678>\r\n")).unwrap();
    assert_eq!(r.uri, "tel:+390212345678");
}

#[test]
fn attended_transfer_exposes_uri_and_replaces() {
    let r = refer_to(&refer(
        "Refer-To: <sip:agent2@192.168.1.30?Replaces=abc%40host%3Bto-tag%3D7%3Bfrom-tag%3D9&X=1>\r\n",
    ))
    .unwrap();
    assert_eq!(r.uri, "sip:agent2@192.168.1.30");
    assert_eq!(r.replaces.as_deref(), Some("abc@host;to-tag=7;from-tag=9"));
    assert_eq!(
        percent_decode("100%25%zz%4"),
        "100%%zz%4",
        "bad escapes kept"
    );
}

#[test]
fn refer_to_errors() {
    assert_eq!(refer_to(&refer("")), Err(ReferError::Missing));
    assert_eq!(
        refer_to(&refer("Refer-To: <sip:a@x>\r\nRefer-To: <sip:b@x>\r\n")),
        Err(ReferError::Multiple)
    );
    assert_eq!(
        refer_to(&refer("Refer-To: <sip:a@x>, <sip:b@x>\r\n")),
        Err(ReferError::Multiple)
    );
    assert_eq!(
        refer_to(&refer("Refer-To: <agent2>\r\n")),
        Err(ReferError::Malformed)
    );
}

#[test]
fn notify_carries_sipfrag_in_the_dialog() {
    let inv = parse(&invite("z9hG4bK-n", "n@x"));
    let mut d = Dialog::uas(&inv, "ourtag", "<sip:verde@10.0.0.1:5080>").unwrap();
    let trying = d.refer_notify(None, 100, "Trying");
    assert_eq!(trying.method, Method::Notify);
    assert_eq!(trying.headers.get("Event"), Some("refer"));
    assert_eq!(
        trying.headers.get("Subscription-State"),
        Some("active;expires=60")
    );
    assert_eq!(trying.content_type(), Some("message/sipfrag;version=2.0"));
    assert_eq!(&trying.body[..], b"SIP/2.0 100 Trying\r\n");
    assert_eq!(trying.call_id(), Some("n@x"));
    assert_eq!(trying.from_tag(), Some("ourtag"));
    assert_eq!(trying.to_tag(), Some("12345SIPpTag001"));
    assert_eq!(trying.contact_uri(), Some("sip:verde@10.0.0.1:5080"));
    let done = d.refer_notify(Some(3), 200, "OK");
    assert_eq!(done.headers.get("Event"), Some("refer;id=3"));
    assert_eq!(
        done.headers.get("Subscription-State"),
        Some("terminated;reason=noresource")
    );
    assert_eq!(&done.body[..], b"SIP/2.0 200 OK\r\n");
    assert_eq!(
        done.cseq().unwrap().0,
        trying.cseq().unwrap().0 + 1,
        "each NOTIFY takes the next CSeq"
    );
    // What goes on the wire parses back with the body intact.
    let Message::Request(wire) = Message::parse(&done.to_bytes()).unwrap() else {
        panic!("NOTIFY did not parse as a request");
    };
    assert_eq!(wire.body, done.body);
    assert_eq!(wire.headers.get("Event"), Some("refer;id=3"));
}
