use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::message::{Message, Transport};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn peer(addr: &str, transport: Transport) -> Peer {
    Peer {
        transport,
        addr: addr.parse::<SocketAddr>().unwrap(),
    }
}

fn nat() -> Peer {
    peer("203.0.113.7:40123", Transport::Udp)
}

/// A baresip-like REGISTER; `contact` and `expires` are whole header lines or empty.
fn register(call_id: &str, cseq: u32, contact: &str, expires: &str) -> Request {
    let text = format!(
        "REGISTER sip:verde.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:agent1@verde.example>\r\n\
From: <sip:agent1@verde.example>;tag=ab12\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
{contact}{expires}\
Content-Length: 0\r\n\r\n"
    );
    match Message::parse(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn contact(uri: &str, params: &str) -> String {
    format!("Contact: <{uri}>{params}\r\n")
}

const PHONE: &str = "sip:agent1@192.168.1.20:5060;transport=udp";
const DESK: &str = "sip:agent1@192.168.1.30:5062";

fn registrar() -> Registrar {
    Registrar::new(60, 3600, 600)
}

/// (uri, expires) of every Contact in a 200.
fn listed(resp: &Response) -> Vec<(String, u64)> {
    resp.headers
        .get_all("Contact")
        .map(|c| {
            let (uri, params) = split_name_addr(c);
            (
                uri.to_owned(),
                param(params, "expires").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn add_refresh_and_list() {
    let mut r = registrar();
    let t0 = Instant::now();
    let resp = r.register(
        &register("c1", 1, &contact(PHONE, ""), "Expires: 300\r\n"),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(resp.status, 200);
    assert!(resp.to_tag().is_some());
    assert_eq!(resp.call_id(), Some("c1"));
    assert_eq!(listed(&resp), vec![(PHONE.to_owned(), 300)]);
    let b = &r.lookup("agent1", t0)[0];
    assert_eq!((b.source, b.expires_at, b.cseq), (nat(), t0 + SECS(300), 1));

    // A second phone with the expires parameter, which wins over the header.
    let t1 = t0 + SECS(10);
    let tcp = peer("203.0.113.8:51000", Transport::Tcp);
    let resp = r.register(
        &register("c2", 7, &contact(DESK, ";expires=120"), "Expires: 3000\r\n"),
        tcp,
        "agent1",
        t1,
    );
    assert_eq!(
        listed(&resp),
        vec![(DESK.to_owned(), 120), (PHONE.to_owned(), 290)],
        "most recent first, remaining time of the older binding"
    );
    let found = r.lookup("agent1", t1);
    assert_eq!(found[0].source, tcp);
    assert_eq!(found[1].contact, PHONE);

    // The first phone refreshes from a new NAT port, with no Expires at all: default 600.
    let t2 = t0 + SECS(20);
    let moved = peer("203.0.113.7:40999", Transport::Udp);
    let resp = r.register(
        &register("c1", 2, &contact(PHONE, ""), ""),
        moved,
        "agent1",
        t2,
    );
    assert_eq!(resp.status, 200);
    let found = r.lookup("agent1", t2);
    assert_eq!(found.len(), 2, "a refresh does not add a binding");
    assert_eq!(found[0].contact, PHONE);
    assert_eq!(found[0].source, moved, "source follows the latest REGISTER");
    assert_eq!(found[0].expires_at, t2 + SECS(600));
    assert_eq!(r.len(), 2);
    assert!(r.lookup("agent2", t2).is_empty());
}

#[test]
fn contact_uri_match_ignores_host_and_param_case() {
    let mut r = registrar();
    let t0 = Instant::now();
    r.register(
        &register("c1", 1, &contact(PHONE, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    let same = "sip:agent1@192.168.1.20:5060;TRANSPORT=UDP";
    r.register(
        &register("c1", 2, &contact(same, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(r.lookup("agent1", t0).len(), 1);
    let other_user = "sip:Agent1@192.168.1.20:5060;transport=udp";
    r.register(
        &register("c1", 3, &contact(other_user, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(
        r.lookup("agent1", t0).len(),
        2,
        "user part is case-sensitive"
    );
}

#[test]
fn expires_zero_removes_one_binding_and_query_lists() {
    let mut r = registrar();
    let t0 = Instant::now();
    let both = format!("Contact: <{PHONE}>, <{DESK}>;expires=900\r\n");
    let resp = r.register(&register("c1", 1, &both, ""), nat(), "agent1", t0);
    assert_eq!(listed(&resp).len(), 2);
    let resp = r.register(
        &register("c1", 2, &contact(DESK, ""), "Expires: 0\r\n"),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(listed(&resp), vec![(PHONE.to_owned(), 600)]);
    // A REGISTER without Contact is a query and changes nothing.
    let resp = r.register(&register("c9", 1, "", ""), nat(), "agent1", t0 + SECS(1));
    assert_eq!(resp.status, 200);
    assert_eq!(listed(&resp), vec![(PHONE.to_owned(), 599)]);
    assert_eq!(r.len(), 1);
}

#[test]
fn too_brief_gets_423_and_long_is_capped() {
    let mut r = registrar();
    let t0 = Instant::now();
    let resp = r.register(
        &register("c1", 1, &contact(PHONE, ";expires=30"), ""),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(resp.status, 423);
    assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
    assert!(r.is_empty(), "a refused REGISTER changes nothing");
    // Atomic: one brief contact refuses the whole request.
    let mixed = format!("Contact: <{PHONE}>;expires=300, <{DESK}>;expires=5\r\n");
    assert_eq!(
        r.register(&register("c1", 2, &mixed, ""), nat(), "agent1", t0)
            .status,
        423
    );
    assert!(r.is_empty());
    let resp = r.register(
        &register("c1", 3, &contact(PHONE, ""), "Expires: 86400\r\n"),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(listed(&resp), vec![(PHONE.to_owned(), 3600)]);
    // Garbage counts as an hour (RFC 3261 10.3 step 7), capped the same way.
    let resp = r.register(
        &register("c1", 4, &contact(PHONE, ";expires=soon"), ""),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(listed(&resp), vec![(PHONE.to_owned(), 3600)]);
}

#[test]
fn older_cseq_on_same_call_id_is_refused() {
    let mut r = registrar();
    let t0 = Instant::now();
    r.register(
        &register("c1", 5, &contact(PHONE, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    for cseq in [4, 5] {
        let resp = r.register(
            &register("c1", cseq, &contact(PHONE, ""), "Expires: 0\r\n"),
            nat(),
            "agent1",
            t0,
        );
        assert_eq!(resp.status, 500, "CSeq {cseq}");
    }
    assert_eq!(r.lookup("agent1", t0).len(), 1, "binding survived");
    // Another Call-ID (the phone rebooted) may change it whatever its CSeq.
    let resp = r.register(
        &register("c2", 1, &contact(PHONE, ""), "Expires: 0\r\n"),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(resp.status, 200);
    assert!(r.lookup("agent1", t0).is_empty());
}

#[test]
fn star_removes_all_only_with_expires_zero() {
    let mut r = registrar();
    let t0 = Instant::now();
    r.register(
        &register("c1", 1, &contact(PHONE, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    r.register(
        &register("c2", 1, &contact(DESK, ""), ""),
        nat(),
        "agent1",
        t0,
    );
    r.register(
        &register("c3", 1, &contact(PHONE, ""), ""),
        nat(),
        "agent2",
        t0,
    );
    let star = "Contact: *\r\n";
    assert_eq!(
        r.register(&register("c1", 2, star, ""), nat(), "agent1", t0)
            .status,
        400,
        "no Expires"
    );
    assert_eq!(
        r.register(
            &register("c1", 2, star, "Expires: 60\r\n"),
            nat(),
            "agent1",
            t0
        )
        .status,
        400
    );
    let with_other = format!("Contact: *, <{DESK}>\r\n");
    assert_eq!(
        r.register(
            &register("c1", 2, &with_other, "Expires: 0\r\n"),
            nat(),
            "agent1",
            t0
        )
        .status,
        400
    );
    // Same Call-ID as a binding but not a higher CSeq: the whole removal fails.
    assert_eq!(
        r.register(
            &register("c2", 1, star, "Expires: 0\r\n"),
            nat(),
            "agent1",
            t0
        )
        .status,
        500
    );
    assert_eq!(r.lookup("agent1", t0).len(), 2);
    let resp = r.register(
        &register("c1", 2, star, "Expires: 0\r\n"),
        nat(),
        "agent1",
        t0,
    );
    assert_eq!(resp.status, 200);
    assert!(listed(&resp).is_empty());
    assert!(r.lookup("agent1", t0).is_empty());
    assert_eq!(r.lookup("agent2", t0).len(), 1, "other users untouched");
    assert_eq!(r.len(), 1);
}

#[test]
fn bindings_expire_on_time() {
    let mut r = registrar();
    let t0 = Instant::now();
    assert_eq!(r.poll_timeout(), None);
    r.register(
        &register("c1", 1, &contact(PHONE, ";expires=120"), ""),
        nat(),
        "agent1",
        t0,
    );
    r.register(
        &register("c2", 1, &contact(DESK, ";expires=60"), ""),
        nat(),
        "agent2",
        t0,
    );
    assert_eq!(r.poll_timeout(), Some(t0 + SECS(60)));
    assert!(r.expire(t0 + SECS(59)).is_empty());
    // lookup hides a lapsed binding even before expire() runs.
    assert!(r.lookup("agent2", t0 + SECS(60)).is_empty());
    let gone = r.expire(t0 + SECS(60));
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].0.as_str(), gone[0].1.contact.as_str()),
        ("agent2", DESK)
    );
    assert_eq!(r.poll_timeout(), Some(t0 + SECS(120)));
    // A refresh moves the deadline: the old one must not fire.
    r.register(
        &register("c1", 2, &contact(PHONE, ";expires=600"), ""),
        nat(),
        "agent1",
        t0 + SECS(100),
    );
    assert_eq!(r.poll_timeout(), Some(t0 + SECS(700)));
    assert!(r.expire(t0 + SECS(120)).is_empty());
    assert_eq!(r.expire(t0 + SECS(700)).len(), 1);
    assert!(r.is_empty());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn bindings_per_user_are_bounded() {
    let mut r = registrar();
    let t0 = Instant::now();
    for port in 0..(MAX_BINDINGS_PER_USER as u64 + 3) {
        let uri = format!("sip:agent1@192.168.1.20:{}", 6000 + port);
        let resp = r.register(
            &register("c1", port as u32 + 1, &contact(&uri, ""), ""),
            nat(),
            "agent1",
            t0 + SECS(port),
        );
        assert_eq!(resp.status, 200);
    }
    let found = r.lookup("agent1", t0 + SECS(20));
    assert_eq!(found.len(), MAX_BINDINGS_PER_USER);
    assert_eq!(r.len(), MAX_BINDINGS_PER_USER, "deadlines follow evictions");
    assert!(found
        .iter()
        .all(|b| b.contact != "sip:agent1@192.168.1.20:6000"));
}

#[test]
fn aor_user_from_to() {
    let req = register("c1", 1, "", "");
    assert_eq!(aor_user(&req), Some("agent1"));
    let mut odd = req.clone();
    odd.headers
        .set("To", "\"Desk\" <sip:+390212345;npdi@verde.example>;tag=x");
    assert_eq!(aor_user(&odd), Some("+390212345"));
    odd.headers.set("To", "<sip:verde.example>");
    assert_eq!(aor_user(&odd), None);
}
