use std::net::SocketAddr;

use super::*;
use crate::message::Message;
use crate::message::Response;
use crate::testdata::invite;

fn parse(s: &str) -> Request {
    match Message::parse(s.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

const CONTACT: &str = "<sip:verde@10.0.0.1:5080>";

#[test]
fn uas_dialog_builds_bye_through_record_route() {
    let inv = parse(&invite("z9hG4bK-d", "d@x"));
    let mut d = Dialog::uas(&inv, "ourtag", CONTACT).unwrap();
    assert_eq!(d.call_id(), "d@x");
    assert_eq!(d.remote_tag(), "12345SIPpTag001");
    assert_eq!(d.remote_target(), "sip:sipp@10.1.2.3:5061");
    assert_eq!(d.route_set(), ["<sip:10.9.9.9;lr>".to_owned()]);
    let bye = d.request(Method::Bye);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(
        bye.uri, "sip:sipp@10.1.2.3:5061",
        "loose routing keeps the target"
    );
    assert_eq!(
        bye.headers.get_all("Route").collect::<Vec<_>>(),
        ["<sip:10.9.9.9;lr>"]
    );
    assert_eq!(bye.from_tag(), Some("ourtag"));
    assert_eq!(bye.to_tag(), Some("12345SIPpTag001"));
    assert!(bye
        .headers
        .get("From")
        .unwrap()
        .contains("sip:800123456@10.0.0.1"));
    assert_eq!(bye.call_id(), Some("d@x"));
    assert_eq!(bye.headers.max_forwards(), Some(70));
    assert_eq!(bye.headers.get("Contact"), None);
    let via = bye.top_via().unwrap();
    assert_eq!(
        (via.transport.as_str(), via.sent_by().as_str()),
        ("UDP", "10.0.0.1:5080")
    );
    assert!(via.branch().unwrap().starts_with("z9hG4bK"));
    // Each request gets a new branch and the next CSeq; ACK reuses the INVITE's number.
    let (n1, _) = bye.cseq().unwrap();
    let reinvite = d.request(Method::Invite);
    let (n2, m2) = reinvite.cseq().unwrap();
    assert_eq!((n2, m2), (n1 + 1, Method::Invite));
    assert_eq!(reinvite.contact_uri(), Some("sip:verde@10.0.0.1:5080"));
    assert_ne!(reinvite.top_via().unwrap().branch(), via.branch());
    assert_eq!(d.request(Method::Ack).cseq(), Some((n2, Method::Ack)));
    // The next hop is the first route.
    assert_eq!(
        d.remote_target_peer(Transport::Udp),
        Some(Peer {
            transport: Transport::Udp,
            addr: "10.9.9.9:5060".parse::<SocketAddr>().unwrap()
        })
    );
    // The request is acceptable to the transaction layer as is.
    let mut ep = crate::Endpoint::new(crate::Config::default());
    let peer = d.remote_target_peer(Transport::Udp).unwrap();
    assert!(ep
        .send_request(bye, peer, std::time::Instant::now())
        .is_ok());
}

#[test]
fn strict_route_and_direct_target() {
    let strict = invite("z9hG4bK-s", "s@x").replacen(
        "Record-Route: <sip:10.9.9.9;lr>",
        "Record-Route: <sip:10.8.8.8:5070>, <sip:10.9.9.9;lr>",
        1,
    );
    let mut d = Dialog::uas(&parse(&strict), "t", CONTACT).unwrap();
    let bye = d.request(Method::Bye);
    assert_eq!(bye.uri, "sip:10.8.8.8:5070");
    assert_eq!(
        bye.headers.get_all("Route").collect::<Vec<_>>(),
        ["<sip:10.9.9.9;lr>", "<sip:sipp@10.1.2.3:5061>"]
    );
    assert_eq!(
        d.remote_target_peer(Transport::Tcp).map(|p| p.addr),
        Some("10.8.8.8:5070".parse().unwrap())
    );
    let direct = invite("z9hG4bK-n", "n@x").replacen("Record-Route: <sip:10.9.9.9;lr>\r\n", "", 1);
    let d = Dialog::uas(&parse(&direct), "t", CONTACT).unwrap();
    assert!(d.route_set().is_empty());
    assert_eq!(
        d.remote_target_peer(Transport::Udp).map(|p| p.addr),
        Some("10.1.2.3:5061".parse().unwrap())
    );
    let named = direct.replacen(
        "Contact: sip:sipp@10.1.2.3:5061",
        "Contact: <sip:sipp@pbx.example>",
        1,
    );
    let d = Dialog::uas(&parse(&named), "t", CONTACT).unwrap();
    assert_eq!(d.remote_target_peer(Transport::Udp), None);
    let v6 = direct.replacen(
        "Contact: sip:sipp@10.1.2.3:5061",
        "Contact: <sip:sipp@[2001:db8::5]>;expires=60",
        1,
    );
    let d = Dialog::uas(&parse(&v6), "t", CONTACT).unwrap();
    assert_eq!(
        d.remote_target_peer(Transport::Udp).map(|p| p.addr),
        Some("[2001:db8::5]:5060".parse().unwrap())
    );
}

#[test]
fn dialog_needs_from_tag_and_contact() {
    let no_tag = invite("z9hG4bK-x", "x@x").replacen(";tag=12345SIPpTag001", "", 1);
    assert_eq!(
        Dialog::uas(&parse(&no_tag), "t", CONTACT),
        Err(DialogError::MissingFromTag)
    );
    let no_contact =
        invite("z9hG4bK-x", "x@x").replacen("Contact: sip:sipp@10.1.2.3:5061\r\n", "", 1);
    assert_eq!(
        Dialog::uas(&parse(&no_contact), "t", CONTACT),
        Err(DialogError::MissingHeader("Contact"))
    );
}

#[test]
fn remote_cseq_must_not_go_backwards() {
    let mut d = Dialog::uas(&parse(&invite("z9hG4bK-r", "r@x")), "t", CONTACT).unwrap();
    assert!(d.accept_remote_cseq(2));
    assert!(!d.accept_remote_cseq(1));
    assert_eq!(d.remote_cseq(), 2);
}

#[test]
fn identifiers_are_random_and_well_formed() {
    let branches: std::collections::HashSet<_> = (0..100).map(|_| new_branch()).collect();
    assert_eq!(branches.len(), 100);
    assert!(branches
        .iter()
        .all(|b| b.starts_with("z9hG4bK") && b.len() > 7 + 8));
    assert_ne!(new_tag(), new_tag());
    let cid = new_call_id("10.0.0.1");
    assert!(cid.ends_with("@10.0.0.1") && cid.len() > 20);
}

const AGENT_CONTACT: &str = "sip:agent1@192.168.1.20:5060;transport=udp";

fn outbound() -> Request {
    OutboundInvite {
        target: AGENT_CONTACT,
        from: "\"Coda 800\" <sip:queue@verde.example>",
        to: "<sip:agent1@verde.example>",
        local_contact: "<sip:verde@10.0.0.1:5080>",
        transport: Transport::Udp,
    }
    .build()
}

/// The 200 OK a phone behind two proxies sends back (Record-Route as they added it, one
/// line holding two entries).
fn ok_via_proxies(invite: &Request) -> Response {
    invite
        .response(200, "OK")
        .with_to_tag("agenttag")
        .with_header("Record-Route", "<sip:10.9.9.1;lr>, <sip:10.9.9.2;lr>")
        .with_header("Record-Route", "<sip:10.9.9.3;lr;transport=udp>")
        .with_header(
            "Contact",
            format!("<{AGENT_CONTACT}>;+sip.instance=\"<urn:uuid:1>\""),
        )
        .with_body("application/sdp", crate::testdata::SDP)
}

#[test]
fn outbound_invite_is_dialog_creating() {
    let inv = outbound()
        .with_header("Call-Info", "<sip:verde.example>;answer-after=0")
        .with_body("application/sdp", crate::testdata::SDP);
    // It survives the wire.
    let inv = match Message::parse(&inv.to_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    };
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(inv.uri, AGENT_CONTACT);
    assert_eq!(inv.cseq(), Some((1, Method::Invite)));
    assert_eq!(inv.headers.max_forwards(), Some(70));
    assert_eq!(inv.contact_uri(), Some("sip:verde@10.0.0.1:5080"));
    assert!(inv.from_tag().is_some_and(|t| t.len() >= 8));
    assert!(inv
        .headers
        .get("From")
        .unwrap()
        .starts_with("\"Coda 800\" <sip:queue@"));
    assert_eq!(inv.to_tag(), None);
    assert!(inv.call_id().unwrap().ends_with("@10.0.0.1"));
    let via = inv.top_via().unwrap();
    assert_eq!(via.sent_by(), "10.0.0.1:5080");
    assert_eq!(via.transport, "UDP");
    assert!(via.branch().unwrap().starts_with("z9hG4bK") && via.has_rport());
    assert_eq!(
        inv.headers.get("Call-Info"),
        Some("<sip:verde.example>;answer-after=0")
    );
    assert_eq!(inv.content_type(), Some("application/sdp"));
    assert_eq!(&inv.body[..], crate::testdata::SDP.as_bytes());
    let other = outbound();
    assert_ne!(other.call_id(), inv.call_id());
    assert_ne!(other.from_tag(), inv.from_tag());
}

#[test]
fn uac_dialog_from_200_with_record_route() {
    let inv = outbound();
    let ok = ok_via_proxies(&inv);
    let mut d = Dialog::uac(&inv, &ok).unwrap();
    assert_eq!(d.call_id(), inv.call_id().unwrap());
    assert_eq!(d.local_tag(), inv.from_tag().unwrap());
    assert_eq!(d.remote_tag(), "agenttag");
    assert_eq!(d.remote_target(), AGENT_CONTACT);
    assert_eq!(
        d.route_set(),
        [
            "<sip:10.9.9.3;lr;transport=udp>",
            "<sip:10.9.9.2;lr>",
            "<sip:10.9.9.1;lr>"
        ],
        "the UAC reverses Record-Route"
    );
    assert_eq!(
        d.remote_target_peer(Transport::Udp).map(|p| p.addr),
        Some("10.9.9.3:5060".parse().unwrap())
    );

    let ack = d.ack(1);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, AGENT_CONTACT);
    assert_eq!(ack.cseq(), Some((1, Method::Ack)));
    assert_eq!(ack.headers.get_all("Route").count(), 3);
    assert_eq!(ack.from_tag(), inv.from_tag());
    assert_eq!(ack.to_tag(), Some("agenttag"));
    assert_eq!(ack.headers.get("Contact"), None);
    let ack_via = ack.top_via().unwrap();
    assert_ne!(ack_via.branch(), inv.top_via().unwrap().branch());
    assert_eq!(ack_via.sent_by(), "10.0.0.1:5080");

    let bye = d.request(Method::Bye);
    assert_eq!(bye.uri, AGENT_CONTACT);
    assert_eq!(
        bye.cseq(),
        Some((2, Method::Bye)),
        "continues the INVITE's CSeq"
    );
    assert_eq!(
        bye.headers.get_all("Route").collect::<Vec<_>>(),
        [
            "<sip:10.9.9.3;lr;transport=udp>",
            "<sip:10.9.9.2;lr>",
            "<sip:10.9.9.1;lr>"
        ]
    );
    assert_eq!(bye.headers.get("From"), inv.headers.get("From"));
    assert_eq!(bye.headers.get("To"), ok.headers.get("To"));
    assert_eq!(bye.call_id(), inv.call_id());
    // The agent's first request may carry any CSeq (the remote sequence starts empty).
    assert!(d.accept_remote_cseq(1));
}

#[test]
fn uac_early_dialog_and_refusals() {
    let inv = outbound();
    let ringing = inv.response(180, "Ringing").with_to_tag("early");
    let d = Dialog::uac(&inv, &ringing).unwrap();
    assert_eq!(d.remote_tag(), "early");
    assert_eq!(
        d.remote_target(),
        AGENT_CONTACT,
        "no Contact in the 180: Request-URI"
    );
    assert!(d.route_set().is_empty());
    assert_eq!(
        d.remote_target_peer(Transport::Udp).map(|p| p.addr),
        Some("192.168.1.20:5060".parse().unwrap())
    );
    assert_eq!(
        Dialog::uac(&inv, &inv.response(100, "Trying")),
        Err(DialogError::NotDialogCreating(100))
    );
    assert_eq!(
        Dialog::uac(&inv, &inv.response(486, "Busy Here").with_to_tag("x")),
        Err(DialogError::NotDialogCreating(486))
    );
    assert_eq!(
        Dialog::uac(&inv, &inv.response(200, "OK")),
        Err(DialogError::MissingToTag)
    );
    assert_eq!(
        Dialog::uac(&inv, &inv.response(200, "OK").with_to_tag("t")),
        Err(DialogError::MissingHeader("Contact"))
    );
}

#[test]
fn name_addr_escapes_what_a_user_part_cannot_hold() {
    assert_eq!(
        name_addr("webrtc:192.0.2.7", "webrtc:192.0.2.7", "127.0.0.1"),
        "\"webrtc:192.0.2.7\" <sip:webrtc%3A192.0.2.7@127.0.0.1>"
    );
    assert_eq!(
        name_addr("+390612345", "+390612345", "h"),
        "\"+390612345\" <sip:+390612345@h>"
    );
    assert_eq!(
        name_addr("a \"b\"", "a b", "h"),
        "\"a \\\"b\\\"\" <sip:a%20b@h>"
    );
    // What we write parses back: the user is the caller id, unescaped.
    let uri = "sip:webrtc%3A192.0.2.7@127.0.0.1";
    assert!(uri_socket_addr(uri).is_some());
}

/// Every header of a request but the Via branch, which is new for each request.
fn without_branch(req: &Request) -> Vec<(String, String)> {
    req.headers
        .iter()
        .map(|(k, v)| {
            let v = match v.split_once(";branch=") {
                Some((head, rest)) => {
                    let tail = rest.split_once(';').map_or("", |(_, t)| t);
                    format!("{head};{tail}")
                }
                None => v.to_string(),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn a_stored_state_gives_back_the_same_dialog_on_both_sides() {
    let inv = parse(&invite("z9hG4bK-st", "st@x"));
    let mut uas = Dialog::uas(&inv, "ourtag", CONTACT).unwrap();
    // A request already sent moves the CSeq: the state must carry it.
    let refer = uas.request(Method::Refer);
    assert_eq!(Some(uas.state().local_cseq), refer.cseq().map(|(n, _)| n));
    let out = outbound();
    let uac = Dialog::uac(&out, &ok_via_proxies(&out)).unwrap();
    for mut original in [uas, uac] {
        let state = original.state();
        assert_eq!(state.call_id, original.call_id());
        assert_eq!(state.route_set, original.route_set());
        let mut restored = Dialog::from_state(state.clone());
        assert_eq!(restored, original);
        assert_eq!(restored.state(), state);
        let (a, b) = (original.request(Method::Bye), restored.request(Method::Bye));
        assert_eq!((&a.method, &a.uri), (&b.method, &b.uri));
        assert_eq!(without_branch(&a), without_branch(&b));
        assert_eq!(b.cseq(), Some((state.local_cseq + 1, Method::Bye)));
    }
}

#[test]
fn tls_dialogs_write_tls_vias_and_default_to_5061() {
    let inv = OutboundInvite {
        target: "sip:agent1@10.2.0.5;transport=tls",
        from: "\"Coda 800\" <sip:queue@verde.example>",
        to: "<sip:agent1@verde.example>",
        local_contact: "<sip:verde@10.0.0.1:5061;transport=tls>",
        transport: Transport::Tls,
    }
    .build();
    let inv = match Message::parse(&inv.to_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    };
    assert_eq!(inv.top_via().unwrap().transport, "TLS");
    let ok = inv
        .response(200, "OK")
        .with_to_tag("agenttag")
        .with_header("Contact", "<sip:agent1@10.2.0.5;transport=tls>");
    let mut d = Dialog::uac(&inv, &ok).unwrap();
    let bye = d.request(Method::Bye);
    assert_eq!(bye.top_via().unwrap().transport, "TLS");
    assert_eq!(
        d.remote_target_peer(Transport::Tls),
        Some(Peer {
            transport: Transport::Tls,
            addr: "10.2.0.5:5061".parse().unwrap()
        })
    );
    // The same target over UDP keeps SIP's usual port.
    assert_eq!(
        d.remote_target_peer(Transport::Udp).map(|p| p.addr.port()),
        Some(5060)
    );
}

#[test]
fn uris_name_their_transport_and_its_port() {
    assert_eq!(
        uri_transport("<sip:1001@10.0.0.7:5062;transport=TLS>;expires=60"),
        Transport::Tls
    );
    assert_eq!(uri_transport("sips:1001@10.0.0.7"), Transport::Tls);
    assert_eq!(
        uri_transport("sip:1001@10.0.0.7;transport=tcp"),
        Transport::Tcp
    );
    assert_eq!(uri_transport("sip:1001@10.0.0.7"), Transport::Udp);
    // A header parameter after '>' is not the URI's.
    assert_eq!(
        uri_transport("<sip:1001@10.0.0.7>;transport=tls"),
        Transport::Udp
    );
    assert_eq!(
        uri_socket_addr("sips:1001@10.0.0.7"),
        Some("10.0.0.7:5061".parse().unwrap())
    );
    assert_eq!(
        uri_socket_addr("sip:1001@10.0.0.7;transport=tls"),
        Some("10.0.0.7:5061".parse().unwrap())
    );
    assert_eq!(
        uri_socket_addr("sip:1001@10.0.0.7:5070;transport=tls"),
        Some("10.0.0.7:5070".parse().unwrap())
    );
    assert_eq!(
        uri_socket_addr("sip:1001@10.0.0.7"),
        Some("10.0.0.7:5060".parse().unwrap())
    );
}
