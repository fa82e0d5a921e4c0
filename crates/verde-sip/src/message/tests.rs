use super::*;
use crate::testdata::{invite, SDP};

fn parse_req(s: &str) -> Request {
    match Message::parse(s.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn parses_sipp_invite_with_sdp() {
    let req = parse_req(&invite("z9hG4bK-abc", "1-42@10.1.2.3"));
    assert_eq!(req.method, Method::Invite);
    assert_eq!(req.uri, "sip:800123456@10.0.0.1:5060");
    assert_eq!(req.call_id(), Some("1-42@10.1.2.3"));
    assert_eq!(req.cseq(), Some((1, Method::Invite)));
    assert_eq!(req.from_tag(), Some("12345SIPpTag001"));
    assert_eq!(req.to_tag(), None);
    assert_eq!(req.contact_uri(), Some("sip:sipp@10.1.2.3:5061"));
    assert_eq!(req.content_type(), Some("application/sdp"));
    assert_eq!(&req.body[..], SDP.as_bytes());
    let via = req.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.host, "10.1.2.3");
    assert_eq!(via.port, Some(5061));
    assert_eq!(via.branch(), Some("z9hG4bK-abc"));
    assert!(via.has_rport());
    assert_eq!(via.rport(), None);
    assert_eq!(via.received(), None);
}

#[test]
fn compact_and_case_insensitive_header_lookup() {
    let msg = "OPTIONS sip:x@10.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-1\r\n\
f: <sip:a@b>;tag=ft\r\n\
t: <sip:x@10.0.0.1>\r\n\
i: compact-call\r\n\
CSEQ: 7 OPTIONS\r\n\
m: <sip:a@10.1.2.3:5061;transport=udp>\r\n\
X-Custom: yes\r\n\
l: 0\r\n\r\n";
    let req = parse_req(msg);
    assert_eq!(req.call_id(), Some("compact-call"));
    assert_eq!(req.headers.get("call-id"), Some("compact-call"));
    assert_eq!(req.headers.get("I"), Some("compact-call"));
    assert_eq!(req.cseq(), Some((7, Method::Options)));
    assert_eq!(req.from_tag(), Some("ft"));
    assert_eq!(req.contact_uri(), Some("sip:a@10.1.2.3:5061;transport=udp"));
    assert_eq!(req.top_via().unwrap().branch(), Some("z9hG4bK-1"));
    assert_eq!(req.headers.get("x-custom"), Some("yes"));
    // A compact name pushed by hand is still found by its full name.
    let mut h = Headers::new();
    h.push("Foo", "1");
    h.push("k", "timer");
    assert_eq!(h.get("Supported"), Some("timer"));
    assert_eq!(h.get("foo"), Some("1"));
    h.set("supported", "100rel");
    assert_eq!(h.get_all("k").collect::<Vec<_>>(), vec!["100rel"]);
    assert_eq!(h.remove("FOO"), 1);
    assert_eq!(h.len(), 1);
}

#[test]
fn serialize_round_trips_and_recomputes_content_length() {
    let mut req = parse_req(&invite("z9hG4bK-rt", "rt@x"));
    let bytes = req.to_bytes();
    assert_eq!(
        Message::parse(&bytes).unwrap(),
        Message::Request(req.clone())
    );
    req.body = Bytes::from_static(b"v=0\r\n");
    req.headers.set("Content-Length", "999");
    let text = String::from_utf8(req.to_bytes().to_vec()).unwrap();
    assert_eq!(text.matches("Content-Length").count(), 1);
    assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"), "{text}");
}

#[test]
fn truncated_body_is_an_error_and_extra_bytes_are_dropped() {
    let full = invite("z9hG4bK-t", "t@x");
    let cut = &full.as_bytes()[..full.len() - 10];
    assert_eq!(
        Message::parse(cut),
        Err(ParseError::TruncatedBody {
            declared: SDP.len(),
            actual: SDP.len() - 10
        })
    );
    let padded = format!("{full}garbage");
    let req = parse_req(&padded);
    assert_eq!(&req.body[..], SDP.as_bytes());
}

#[test]
fn unknown_method_folding_and_versions() {
    let msg = "FOO sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n\
Subject: a\r\n  folded\r\nCall-ID: c\r\n\r\n";
    let req = parse_req(msg);
    assert_eq!(req.method, Method::Other("FOO".into()));
    assert_eq!(req.headers.get("Subject"), Some("a folded"));
    assert_eq!(req.call_id(), Some("c"));
    let v3 = "OPTIONS sip:x@10.0.0.1 SIP/3.0\r\nCall-ID: c\r\n\r\n";
    assert!(matches!(
        Message::parse(v3.as_bytes()),
        Err(ParseError::UnsupportedVersion(v)) if v == "SIP/3.0"
    ));
}

#[test]
fn parses_tel_uri_and_response() {
    let req = parse_req("INVITE tel:+39800123456 SIP/2.0\r\nCall-ID: c\r\n\r\n");
    assert_eq!(req.uri, "tel:+39800123456");
    let resp = "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n\
To: <sip:a@b>;tag=x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let Ok(Message::Response(r)) = Message::parse(resp.as_bytes()) else {
        panic!("response did not parse");
    };
    assert_eq!((r.status, r.reason.as_str()), (486, "Busy Here"));
    assert_eq!(r.to_tag(), Some("x"));
    assert!(!r.is_success() && !r.is_provisional());
}

#[test]
fn response_copies_rfc3261_headers() {
    let msg = invite("z9hG4bK-r", "r@x").replacen(
        "Via: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-r;rport\r\n",
        "Via: SIP/2.0/UDP 10.1.2.3:5061;branch=z9hG4bK-r;rport, SIP/2.0/TCP p1:5060;branch=z9hG4bK-p1\r\nVia: SIP/2.0/UDP p2;branch=z9hG4bK-p2\r\n",
        1,
    );
    let req = parse_req(&msg);
    let ringing = req.response(180, "Ringing").with_to_tag("ours");
    let vias: Vec<_> = ringing.headers.vias().collect();
    assert_eq!(vias.len(), 3);
    assert!(vias[0].contains("z9hG4bK-r") && vias[2].contains("z9hG4bK-p2"));
    assert_eq!(ringing.call_id(), req.call_id());
    assert_eq!(ringing.cseq(), req.cseq());
    assert_eq!(ringing.from_tag(), req.from_tag());
    assert_eq!(ringing.to_tag(), Some("ours"));
    assert_eq!(
        ringing.headers.get("Record-Route"),
        Some("<sip:10.9.9.9;lr>")
    );
    assert_eq!(ringing.headers.get("Contact"), None);
    assert_eq!(ringing.headers.get("Subject"), None);
    // The tag is not added twice, and a failure carries no Record-Route.
    let again = ringing.with_to_tag("other");
    assert_eq!(again.to_tag(), Some("ours"));
    assert_eq!(again.headers.get("To").unwrap().matches("tag=").count(), 1);
    let busy = req.response(486, "Busy Here");
    assert_eq!(busy.headers.get("Record-Route"), None);
    let text = String::from_utf8(busy.to_bytes().to_vec()).unwrap();
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn via_parsing_and_rewriting() {
    let v =
        Via::parse("SIP / 2.0 / TCP [2001:db8::1]:5070 ;branch=z9hG4bKx;rport;received=1.1.1.1")
            .unwrap();
    assert_eq!(v.transport, "TCP");
    assert_eq!(v.host, "2001:db8::1");
    assert_eq!(v.port, Some(5070));
    assert_eq!(v.received(), Some("1.1.1.1"));
    assert_eq!(v.sent_by(), "[2001:db8::1]:5070");
    let mut v = Via::parse("SIP/2.0/UDP host.example;branch=z9hG4bKy;rport").unwrap();
    v.set_param("rport", Some("4000".into()));
    assert_eq!(v.rport(), Some(4000));
    assert_eq!(
        v.to_string(),
        "SIP/2.0/UDP host.example;branch=z9hG4bKy;rport=4000"
    );
    assert!(Via::parse("garbage").is_none());
    let mut h = Headers::new();
    h.push(
        "Via",
        "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
    );
    h.set_top_via(&v);
    assert_eq!(
        h.get("Via"),
        Some("SIP/2.0/UDP host.example;branch=z9hG4bKy;rport=4000, SIP/2.0/UDP b;branch=z9hG4bK2")
    );
}

#[test]
fn relayed_source_is_the_second_via() {
    let mut h = Headers::new();
    h.push("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp");
    assert_eq!(h.relayed_source(), None, "one Via: nobody relayed it");
    h.push(
        "Via",
        "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKa;rport=4000;received=198.51.100.7",
    );
    assert_eq!(h.relayed_source(), Some("198.51.100.7".parse().unwrap()));
    // Folded on one line, no received: the sent-by literal; a host name is unverifiable.
    let mut h = Headers::new();
    h.push(
        "Via",
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp, SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bKb",
    );
    assert_eq!(h.relayed_source(), Some("2001:db8::5".parse().unwrap()));
    let mut h = Headers::new();
    h.push("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp");
    h.push("Via", "SIP/2.0/UDP phone.example;branch=z9hG4bKc");
    assert_eq!(h.relayed_source(), None);
}

#[test]
fn framing_on_streams() {
    let one = invite("z9hG4bK-f1", "f1@x");
    let two = invite("z9hG4bK-f2", "f2@x");
    // Partial headers, then partial body.
    assert_eq!(frame(&one.as_bytes()[..40], 65536), Ok(Frame::NeedMore));
    assert_eq!(
        frame(&one.as_bytes()[..one.len() - 1], 65536),
        Ok(Frame::NeedMore)
    );
    // Two messages back to back: the first is cut exactly, the rest is the second.
    let both = format!("{one}{two}");
    let Ok(Frame::Message { len }) = frame(both.as_bytes(), 65536) else {
        panic!("first message not framed");
    };
    assert_eq!(len, one.len());
    let rest = &both.as_bytes()[len..];
    assert_eq!(frame(rest, 65536), Ok(Frame::Message { len: two.len() }));
    let req = parse_req(std::str::from_utf8(&rest[..two.len()]).unwrap());
    assert_eq!(req.call_id(), Some("f2@x"));
    // Keep-alives and limits.
    assert_eq!(
        frame(b"\r\n\r\nINV", 65536),
        Ok(Frame::KeepAlive { len: 4 })
    );
    assert_eq!(
        frame(one.as_bytes(), one.len() - 1),
        Err(FrameError::TooLarge { max: one.len() - 1 })
    );
    let endless = vec![b'a'; 2048];
    assert_eq!(
        frame(&endless, 1024),
        Err(FrameError::TooLarge { max: 1024 })
    );
    let huge = "OPTIONS sip:x SIP/2.0\r\nl: 1000000\r\n\r\n";
    assert_eq!(
        frame(huge.as_bytes(), 65536),
        Err(FrameError::TooLarge { max: 65536 })
    );
    let bad = "OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n";
    assert_eq!(
        frame(bad.as_bytes(), 65536),
        Err(FrameError::BadContentLength)
    );
}

#[test]
fn scraper_finds_headers_in_unparsable_request() {
    let msg = "INVITE sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK9\r\n\
this line is not a header\r\nf: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\ni: scraped\r\nCSeq: 3 INVITE\r\n\r\n";
    assert!(Message::parse(msg.as_bytes()).is_err());
    let s = scrape::scrape(msg.as_bytes()).unwrap();
    let resp = s.response(400, "Bad", "t1").unwrap();
    assert_eq!(resp.call_id(), Some("scraped"));
    assert_eq!(resp.cseq(), Some((3, Method::Invite)));
    assert_eq!(resp.to_tag(), Some("t1"));
    assert_eq!(resp.from_tag(), Some("1"));
    assert!(scrape::scrape(b"SIP/2.0 200 OK\r\n\r\n").is_none());
    let no_call_id = msg.replace("i: scraped\r\n", "");
    assert!(scrape::scrape(no_call_id.as_bytes())
        .unwrap()
        .response(400, "Bad", "t")
        .is_none());
}
