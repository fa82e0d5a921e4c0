//! RFC 4475 torture messages fed to the parser, the stream framer and the [`crate::Endpoint`]
//! (sans-IO). The messages are the files under `tests/fixtures/rfc4475/` (byte-exact; see the
//! README there for what the RFC expects of each and where verde's answer differs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::message::{frame, Frame, FrameError, Message, Method, Peer, Transport};
use crate::transaction::{Config, Endpoint, Event};

fn fixture(tag: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/rfc4475")
        .join(format!("{tag}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What an endpoint (a UAS in front of verde's TU) must do with a message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Parsed and handed to the TU as a new request with this method.
    Tu(&'static str),
    /// Answered statelessly with this status; the TU never sees it.
    Refused(u16),
    /// A response matching nothing: never reaches the TU as a response to anything we sent.
    Dropped,
    /// A 2xx to an INVITE we never sent: reported as [`Event::StrayResponse`] (the TU finds
    /// no call and ignores it).
    Stray,
}

use Expect::*;

/// Every message of RFC 4475 section 3 with verde's expected handling.
const CASES: &[(&str, Expect)] = &[
    // 3.1.1 valid messages
    ("wsinv", Tu("INVITE")),
    ("intmeth", Tu("!interesting-Method0123456789_*+`.%indeed'~")),
    ("esc01", Tu("INVITE")),
    ("escnull", Tu("REGISTER")),
    ("esc02", Tu("RE%47IST%45R")),
    ("lwsdisp", Tu("OPTIONS")),
    ("longreq", Tu("INVITE")),
    ("dblreq", Tu("REGISTER")),
    ("semiuri", Tu("OPTIONS")),
    ("transports", Tu("OPTIONS")),
    ("mpart01", Tu("MESSAGE")),
    ("unreason", Stray),
    ("noreason", Dropped),
    // 3.1.2 invalid messages
    ("badinv01", Refused(400)),
    ("clerr", Refused(400)),
    ("ncl", Refused(400)),
    ("scalar02", Refused(400)),
    ("scalarlg", Dropped),
    ("quotbal", Refused(400)),
    ("ltgtruri", Refused(400)),
    ("lwsruri", Refused(400)),
    // Extra SP in the request line and escaped headers in the Request-URI: RFC 4475 allows
    // being liberal; verde is (the B2BUA never forwards the Request-URI).
    ("lwsstart", Tu("INVITE")),
    ("trws", Tu("OPTIONS")),
    ("escruri", Tu("INVITE")),
    // A Date verde never reads: ignored, as the RFC suggests.
    ("baddate", Tu("INVITE")),
    ("regbadct", Refused(400)),
    ("badaspec", Refused(400)),
    ("baddn", Refused(400)),
    ("badvers", Refused(505)),
    ("mismatch01", Refused(400)),
    ("mismatch02", Refused(400)),
    ("bigcode", Dropped),
    // 3.2 transaction layer: a bare magic cookie falls back to RFC 2543 matching.
    ("badbranch", Tu("OPTIONS")),
    // 3.3 application layer
    ("insuf", Refused(400)),
    ("unkscm", Refused(416)),
    ("novelsc", Refused(416)),
    ("unksm2", Refused(400)),
    ("bext01", Refused(420)),
    // Unknown body type, unknown auth scheme, Accept without SDP: the TU's call (415, 401, 404).
    ("invut", Tu("INVITE")),
    ("regaut01", Tu("REGISTER")),
    ("multi01", Refused(400)),
    ("mcl01", Refused(400)),
    ("bcast", Dropped),
    ("zeromf", Tu("OPTIONS")),
    ("cparam01", Tu("REGISTER")),
    ("cparam02", Tu("REGISTER")),
    ("regescrt", Tu("REGISTER")),
    ("sdp01", Tu("INVITE")),
    // 3.4 backward compatibility
    ("inv2543", Tu("INVITE")),
];

fn udp() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5060".parse().unwrap(),
    }
}

fn tcp() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:40000".parse().unwrap(),
    }
}

/// Feeds one message to a fresh endpoint; returns the status lines sent and the events.
fn feed(tag: &str, peer: Peer) -> (Vec<u16>, Vec<Event>) {
    let mut ep = Endpoint::new(Config::default());
    ep.handle_bytes(&fixture(tag), peer, Instant::now());
    let sent = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| match Message::parse(&t.bytes) {
            Ok(Message::Response(r)) => r.status,
            other => panic!("{tag}: the endpoint sent something that is not a response: {other:?}"),
        })
        .collect();
    (sent, std::iter::from_fn(|| ep.poll_event()).collect())
}

#[test]
fn the_fixtures_are_all_there_and_byte_exact_where_it_matters() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rfc4475");
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "dat")
        })
        .count();
    assert_eq!(on_disk, CASES.len(), "one case per fixture");
    assert_eq!(CASES.len(), 49, "RFC 4475 section 3 has 49 messages");
    for (tag, _) in CASES {
        let bytes = fixture(tag);
        assert!(
            bytes.windows(4).any(|w| w == b"\r\n\r\n"),
            "{tag}: no CRLF CRLF"
        );
        assert!(
            !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') || *tag == "mpart01",
            "{tag}: a bare LF (lines must end in CRLF)"
        );
    }
    // The control octets of intmeth's To and the NULs of mpart01's binary part survived.
    assert!(fixture("intmeth").windows(5).any(|w| w == b"NUL:\\"));
    assert!(fixture("intmeth").contains(&0x00) && fixture("intmeth").contains(&0x7f));
    assert!(fixture("mpart01").contains(&0x00));
}

#[test]
fn every_message_gets_the_rfc_4475_treatment_over_udp_and_tcp() {
    let mut wrong = Vec::new();
    for &(tag, expect) in CASES {
        for peer in [udp(), tcp()] {
            let (sent, events) = feed(tag, peer);
            let tu_methods: Vec<String> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Request { request, .. } => Some(request.method.to_string()),
                    _ => None,
                })
                .collect();
            let ok = match expect {
                Tu(m) => sent.is_empty() && tu_methods == [m],
                Refused(status) => sent == [status] && tu_methods.is_empty(),
                Dropped => {
                    sent.is_empty() && events.iter().all(|e| matches!(e, Event::Malformed { .. }))
                }
                Stray => {
                    sent.is_empty()
                        && matches!(&events[..], [Event::StrayResponse { response, .. }] if response.status == 200)
                }
            };
            if !ok {
                wrong.push(format!(
                    "{tag} over {:?}: expected {expect:?}, sent {sent:?}, events {events:?}",
                    peer.transport
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn request(tag: &str) -> crate::Request {
    match Message::parse(&fixture(tag)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{tag}: {other:?}"),
    }
}

#[test]
fn valid_messages_parse_to_the_values_the_rfc_describes() {
    let r = request("wsinv");
    assert_eq!(r.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(r.to_tag(), Some("1918181833n"));
    assert_eq!(r.from_tag(), Some("98asjd8"));
    assert_eq!(r.headers.max_forwards(), Some(68));
    assert_eq!(r.cseq(), Some((9, Method::Invite)));
    assert_eq!(r.headers.get("Subject"), Some(""));
    assert_eq!(
        r.headers.get("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        r.headers.get("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    let vias: Vec<crate::Via> = r
        .headers
        .vias()
        .map(|v| crate::Via::parse(v).unwrap())
        .collect();
    let hosts: Vec<(&str, &str, Option<&str>)> = vias
        .iter()
        .map(|v| (v.transport.as_str(), v.host.as_str(), v.branch()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
        ]
    );
    assert_eq!(r.contact_uri(), Some("sip:jdrosen@example.com"));
    assert_eq!(r.body.len(), 150);

    let r = request("intmeth");
    assert_eq!(
        r.call_id(),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    assert_eq!(r.from_tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        r.headers.get("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );

    // % is an escape only inside URIs: C%6Fntact is another header, not a third Contact.
    let r = request("esc02");
    assert_eq!(r.headers.get_all("Contact").count(), 2);
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));

    let r = request("escnull");
    assert_eq!(
        r.headers.get_all("Contact").collect::<Vec<_>>(),
        [
            "<sip:%00@host5.example.com>",
            "<sip:%00%00@host5.example.com>"
        ]
    );

    let r = request("longreq");
    assert_eq!(r.headers.vias().count(), 34);
    assert_eq!(r.top_via().unwrap().host, "sip33.example.com");

    // Only the REGISTER: the INVITE after it in the datagram is noise (RFC 3261 18.3).
    let r = request("dblreq");
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());

    let r = request("mpart01");
    assert_eq!(r.body.len(), 553);
    assert!(r.body.contains(&0));

    let r = request("inv2543");
    assert_eq!(
        r.body.len(),
        105,
        "no Content-Length: the rest of the datagram"
    );
    assert_eq!(r.from_tag(), None);

    for (tag, reason) in [
        (
            "unreason",
            "= 2**3 * 5**2 но сто девяносто девять - простое",
        ),
        ("noreason", ""),
    ] {
        match Message::parse(&fixture(tag)) {
            Ok(Message::Response(resp)) => assert_eq!(resp.reason, reason, "{tag}"),
            other => panic!("{tag}: {other:?}"),
        }
    }
}

#[test]
fn refusals_carry_what_the_sender_needs() {
    let mut ep = Endpoint::new(Config::default());
    ep.handle_bytes(&fixture("bext01"), udp(), Instant::now());
    let t = ep.poll_transmit().expect("420 sent");
    let Ok(Message::Response(resp)) = Message::parse(&t.bytes) else {
        panic!("not a response");
    };
    assert_eq!(resp.status, 420);
    assert_eq!(
        resp.headers.get("Unsupported"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    assert_eq!(resp.call_id(), Some("bext01.0ha0isndaksdj"));
    // Proxy-Require is for proxies: an endpoint that supports the Require tags answers.
    let mut ep = Endpoint::new(Config {
        extensions: &["nothingSupportsThis", "nothingSupportsThisEither"],
        ..Config::default()
    });
    ep.handle_bytes(&fixture("bext01"), udp(), Instant::now());
    assert!(ep.poll_transmit().is_none());
    assert!(matches!(ep.poll_event(), Some(Event::Request { .. })));

    // lwsruri cannot be parsed, yet its sender learns why.
    let mut ep = Endpoint::new(Config::default());
    ep.handle_bytes(&fixture("lwsruri"), udp(), Instant::now());
    let t = ep.poll_transmit().expect("400 sent");
    let Ok(Message::Response(resp)) = Message::parse(&t.bytes) else {
        panic!("not a response");
    };
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.call_id(),
        Some("lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423")
    );
    // UDP without rport: to the source address at the Via port (RFC 3261 18.2.2).
    assert_eq!(t.to.addr, "127.0.0.1:5060".parse().unwrap());
}

#[test]
fn stream_framing_of_the_messages() {
    const MAX: usize = 65_536;
    for &(tag, _) in CASES {
        let bytes = fixture(tag);
        let framed = frame(&bytes, MAX);
        match tag {
            // No way to know where the body ends: the connection must be closed.
            "ncl" | "mcl01" => assert_eq!(framed, Err(FrameError::BadContentLength), "{tag}"),
            // More body announced than sent: wait for it.
            "clerr" => assert_eq!(framed, Ok(Frame::NeedMore)),
            // On a stream the "extra octets" are the next messages: CRLF, then an INVITE.
            "dblreq" => {
                let Ok(Frame::Message { len }) = framed else {
                    panic!("dblreq: {framed:?}")
                };
                assert!(bytes[len..].starts_with(b"\r\nINVITE "));
                assert_eq!(frame(&bytes[len..], MAX), Ok(Frame::KeepAlive { len: 2 }));
                let Ok(Frame::Message { len: inv }) = frame(&bytes[len + 2..], MAX) else {
                    panic!("dblreq INVITE not framed")
                };
                let Ok(Message::Request(r)) = Message::parse(&bytes[len + 2..len + 2 + inv]) else {
                    panic!("dblreq INVITE did not parse")
                };
                assert_eq!(r.call_id(), Some("dblreq.0ha0isnda977644900765@192.0.2.15"));
            }
            // Without Content-Length the stream reads it as 0 (RFC 3261 requires it on TCP).
            "inv2543" => assert_eq!(
                framed,
                Ok(Frame::Message {
                    len: bytes.len() - 105
                })
            ),
            _ => assert_eq!(framed, Ok(Frame::Message { len: bytes.len() }), "{tag}"),
        }
    }
}

/// All 49 messages through one endpoint, answered the way verde's TU answers, then a plain
/// OPTIONS: it must still reach the TU, and once the timers have run no transaction is left.
#[test]
fn no_message_wedges_or_leaks_a_transaction() {
    for peer in [udp(), tcp()] {
        let mut ep = Endpoint::new(Config::default());
        let mut now = Instant::now();
        for &(tag, _) in CASES {
            ep.handle_bytes(&fixture(tag), peer, now);
            while let Some(ev) = ep.poll_event() {
                if let Event::Request { tx, request, .. } = ev {
                    let resp = request.response(404, "Not Found").with_to_tag("t");
                    ep.send_response(tx, resp, now).expect("answerable");
                }
            }
            while ep.poll_transmit().is_some() {}
            now += Duration::from_millis(10);
            ep.handle_timeout(now);
        }
        let options = "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKprobe\r\n\
From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:probe@127.0.0.1>\r\n\
Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        ep.handle_bytes(options.as_bytes(), peer, now);
        let Some(Event::Request { tx, request, .. }) = ep.poll_event() else {
            panic!(
                "OPTIONS after the torture messages over {:?} did not reach the TU",
                peer.transport
            );
        };
        assert_eq!(request.call_id(), Some("probe"));
        ep.send_response(tx, request.response(200, "OK"), now)
            .unwrap();
        while let Some(at) = ep.poll_timeout() {
            now = now.max(at);
            ep.handle_timeout(now);
        }
        assert_eq!(ep.transaction_count(), (0, 0), "{:?}", peer.transport);
    }
}

/// Two requests from one host that both carry the bare magic cookie are two transactions,
/// not a request and its retransmission.
#[test]
fn a_bare_magic_cookie_does_not_merge_transactions() {
    let mut ep = Endpoint::new(Config::default());
    let first = fixture("badbranch");
    let second = String::from_utf8(first.clone())
        .unwrap()
        .replace("badbranch.sadonfo", "badbranch.other")
        .replace("CSeq: 8", "CSeq: 9");
    ep.handle_bytes(&first, udp(), Instant::now());
    ep.handle_bytes(second.as_bytes(), udp(), Instant::now());
    let requests = std::iter::from_fn(|| ep.poll_event())
        .filter(|e| matches!(e, Event::Request { .. }))
        .count();
    assert_eq!(requests, 2);
}

#[test]
fn crlf_keepalive_datagrams_are_not_malformed_messages() {
    let mut ep = Endpoint::new(Config::default());
    ep.handle_bytes(b"\r\n\r\n", udp(), Instant::now());
    ep.handle_bytes(b"\r\n", udp(), Instant::now());
    assert!(ep.poll_event().is_none());
    assert!(ep.poll_transmit().is_none());
}
