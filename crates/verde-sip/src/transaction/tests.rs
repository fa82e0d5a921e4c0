use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::testdata::{in_tx, invite, tcp_peer, udp_peer};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

fn ep() -> Endpoint {
    Endpoint::new(Config::default())
}

fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

fn response(t: &Transmit) -> Response {
    match Message::parse(&t.bytes) {
        Ok(Message::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn request(t: &Transmit) -> Request {
    match Message::parse(&t.bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// Runs the event loop the way the binary does, until `end`, and returns the offset from `t0`
/// of every transmit plus the events seen.
fn run_until(
    ep: &mut Endpoint,
    t0: Instant,
    end: Instant,
) -> (Vec<(Duration, Transmit)>, Vec<Event>) {
    let (mut out, mut evs) = (Vec::new(), Vec::new());
    while let Some(at) = ep.poll_timeout().filter(|&at| at <= end) {
        ep.handle_timeout(at);
        out.extend(transmits(ep).into_iter().map(|t| (at - t0, t)));
        evs.extend(events(ep));
    }
    (out, evs)
}

/// Offsets of retransmissions for an interval starting at T1, doubling, capped at `cap`,
/// strictly before `until`.
fn schedule(cap: Option<Duration>, until: Duration) -> Vec<Duration> {
    let (mut at, mut interval, mut v) = (T1, T1, Vec::new());
    while at < until {
        v.push(at);
        interval = cap.map_or(interval * 2, |c| (interval * 2).min(c));
        at += interval;
    }
    v
}

/// Feeds an INVITE and returns the server transaction and the request as the TU sees it.
fn new_invite(
    ep: &mut Endpoint,
    branch: &str,
    call_id: &str,
    from: Peer,
    now: Instant,
) -> (ServerTxId, Request) {
    ep.handle_bytes(invite(branch, call_id).as_bytes(), from, now);
    match events(ep).as_slice() {
        [Event::Request { tx, request, .. }] => {
            assert_eq!(request.method, Method::Invite);
            (*tx, request.clone())
        }
        other => panic!("expected one INVITE event, got {other:?}"),
    }
}

fn only_response(ep: &mut Endpoint) -> Response {
    let sent = transmits(ep);
    assert_eq!(sent.len(), 1, "expected one transmit, got {sent:?}");
    response(&sent[0])
}

#[test]
fn invite_server_retransmits_non2xx_on_g_until_h() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-g", "g@x", udp_peer(), t0);
    ep.send_response(tx, req.response(486, "Busy Here").with_to_tag("u1"), t0)
        .unwrap();
    let first = only_response(&mut ep);
    assert_eq!(first.status, 486);
    let (sent, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    let times: Vec<_> = sent.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, schedule(Some(T2), T1 * 64), "timer G schedule");
    assert_eq!(&times[..4], &[T1, T1 * 3, T1 * 7, T1 * 15]);
    assert!(sent
        .iter()
        .all(|(_, t)| t.bytes == first.to_bytes() && t.to == udp_peer()));
    assert!(evs.is_empty(), "timer H raises no event: {evs:?}");
    assert_eq!(
        ep.transaction_count(),
        (0, 0),
        "timer H ends the transaction"
    );
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn ack_to_non2xx_is_absorbed_and_stops_g() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-a", "a@x", udp_peer(), t0);
    ep.send_response(tx, req.response(486, "Busy Here").with_to_tag("u1"), t0)
        .unwrap();
    transmits(&mut ep);
    let t_ack = t0 + Duration::from_millis(700);
    // One G retransmission happens before the ACK.
    let (before, _) = run_until(&mut ep, t0, t_ack);
    assert_eq!(before.len(), 1);
    let ack = in_tx("ACK", "z9hG4bK-a", "a@x", Some("u1"));
    ep.handle_bytes(ack.as_bytes(), udp_peer(), t_ack);
    ep.handle_bytes(ack.as_bytes(), udp_peer(), t_ack);
    assert!(
        events(&mut ep).is_empty(),
        "ACK to a non-2xx must not reach the TU"
    );
    assert!(transmits(&mut ep).is_empty());
    // Timer I (T4) then removes the transaction; nothing more is sent.
    assert_eq!(ep.poll_timeout(), Some(t_ack + Duration::from_secs(5)));
    let (after, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    assert!(after.is_empty() && evs.is_empty());
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn invite_2xx_is_retransmitted_until_ack() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-ok", "ok@x", udp_peer(), t0);
    ep.send_response(tx, req.response(200, "OK").with_to_tag("dlg"), t0)
        .unwrap();
    let ok = only_response(&mut ep);
    let t_ack = t0 + Duration::from_secs(2);
    let (before, _) = run_until(&mut ep, t0, t_ack);
    let times: Vec<_> = before.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![T1, T1 * 3]);
    assert!(before.iter().all(|(_, t)| t.bytes == ok.to_bytes()));
    // An INVITE retransmission while Accepted is absorbed (RFC 6026).
    ep.handle_bytes(invite("z9hG4bK-ok", "ok@x").as_bytes(), udp_peer(), t_ack);
    assert!(transmits(&mut ep).is_empty() && events(&mut ep).is_empty());
    // The ACK for a 2xx has its own branch; it matches on Call-ID, CSeq and To tag.
    let ack = in_tx("ACK", "z9hG4bK-ack", "ok@x", Some("dlg"));
    ep.handle_bytes(ack.as_bytes(), udp_peer(), t_ack);
    match events(&mut ep).as_slice() {
        [Event::Ack { request, .. }] => assert_eq!(request.call_id(), Some("ok@x")),
        other => panic!("expected Ack, got {other:?}"),
    }
    ep.handle_bytes(ack.as_bytes(), udp_peer(), t_ack + T1);
    assert!(events(&mut ep).is_empty(), "a copy of the ACK is absorbed");
    let (after, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    assert!(after.is_empty(), "2xx retransmitted after ACK: {after:?}");
    assert!(evs.is_empty(), "no AckTimeout after the ACK: {evs:?}");
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn missing_ack_raises_ack_timeout_after_64_t1() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-to", "to@x", udp_peer(), t0);
    ep.send_response(tx, req.response(200, "OK").with_to_tag("dlg"), t0)
        .unwrap();
    transmits(&mut ep);
    let mut evs = Vec::new();
    let mut times = Vec::new();
    while let Some(at) = ep.poll_timeout() {
        ep.handle_timeout(at);
        times.extend(transmits(&mut ep).into_iter().map(|_| at - t0));
        evs.extend(events(&mut ep).into_iter().map(|e| (at - t0, e)));
    }
    assert_eq!(evs, vec![(T1 * 64, Event::AckTimeout { tx })]);
    assert_eq!(times, schedule(Some(T2), T1 * 64));
    // A late ACK no longer matches a transaction: it goes up as a stray ACK.
    let ack = in_tx("ACK", "z9hG4bK-late", "to@x", Some("dlg"));
    ep.handle_bytes(ack.as_bytes(), udp_peer(), t0 + T1 * 70);
    assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
}

#[test]
fn non_invite_client_retransmits_on_e_and_times_out_on_f() {
    let mut ep = ep();
    let t0 = Instant::now();
    let options = request_from(&in_tx("OPTIONS", "z9hG4bK-e", "e@x", None));
    let tx = ep.send_request(options, udp_peer(), t0).unwrap();
    assert_eq!(transmits(&mut ep).len(), 1);
    let (sent, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    let times: Vec<_> = sent.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, schedule(Some(T2), T1 * 64));
    assert!(sent
        .iter()
        .all(|(_, t)| request(t).method == Method::Options));
    assert_eq!(evs, vec![Event::Timeout { tx }]);
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn non_invite_client_proceeding_uses_t2_and_completes() {
    let mut ep = ep();
    let t0 = Instant::now();
    let bye = request_from(&in_tx("BYE", "z9hG4bK-b", "b@x", Some("t")));
    let tx = ep.send_request(bye.clone(), udp_peer(), t0).unwrap();
    transmits(&mut ep);
    let trying = bye.response(100, "Trying").to_bytes();
    ep.handle_bytes(&trying, udp_peer(), t0 + Duration::from_millis(100));
    assert!(
        matches!(events(&mut ep).as_slice(), [Event::Response { response, .. }] if response.status == 100)
    );
    let (sent, _) = run_until(&mut ep, t0, t0 + Duration::from_secs(10));
    let times: Vec<_> = sent.iter().map(|(at, _)| *at).collect();
    // The pending E fires at T1, then every T2 while Proceeding.
    assert_eq!(times, vec![T1, T1 + T2, T1 + T2 * 2]);
    let ok = bye.response(200, "OK").to_bytes();
    let t_ok = t0 + Duration::from_secs(10);
    ep.handle_bytes(&ok, udp_peer(), t_ok);
    ep.handle_bytes(&ok, udp_peer(), t_ok);
    match events(&mut ep).as_slice() {
        [Event::Response { tx: got, response }] => {
            assert_eq!((*got, response.status), (tx, 200));
        }
        other => panic!("expected one 200, got {other:?}"),
    }
    let (sent, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    assert!(sent.is_empty() && evs.is_empty());
    assert_eq!(ep.transaction_count(), (0, 0), "timer K ended it");
}

#[test]
fn invite_client_timer_a_and_b() {
    let mut ep = ep();
    let t0 = Instant::now();
    let inv = request_from(&invite("z9hG4bK-ca", "ca@x"));
    let tx = ep.send_request(inv, udp_peer(), t0).unwrap();
    transmits(&mut ep);
    let (sent, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    let times: Vec<_> = sent.iter().map(|(at, _)| *at).collect();
    assert_eq!(
        times,
        schedule(None, T1 * 64),
        "timer A doubles without cap"
    );
    assert_eq!(times.last(), Some(&(T1 * 63)));
    assert_eq!(evs, vec![Event::Timeout { tx }]);
}

#[test]
fn invite_client_acks_non2xx_and_cancels() {
    let mut ep = ep();
    let t0 = Instant::now();
    let inv = request_from(&invite("z9hG4bK-cb", "cb@x"));
    let tx = ep.send_request(inv.clone(), udp_peer(), t0).unwrap();
    transmits(&mut ep);
    ep.handle_bytes(
        &inv.response(180, "Ringing").with_to_tag("far").to_bytes(),
        udp_peer(),
        t0,
    );
    events(&mut ep);
    let cancel_tx = ep.cancel(tx, t0).unwrap();
    let cancel = request(&transmits(&mut ep)[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bK-cb"));
    assert_eq!(cancel.cseq(), Some((1, Method::Cancel)));
    assert_eq!(cancel.to_tag(), None);
    ep.handle_bytes(&cancel.response(200, "OK").to_bytes(), udp_peer(), t0);
    let busy = inv
        .response(487, "Request Terminated")
        .with_to_tag("far")
        .to_bytes();
    ep.handle_bytes(&busy, udp_peer(), t0);
    let evs = events(&mut ep);
    assert!(evs.contains(&Event::Response {
        tx: cancel_tx,
        response: response_from(&cancel.response(200, "OK").to_bytes())
    }));
    assert!(evs.iter().any(
        |e| matches!(e, Event::Response { tx: t, response } if *t == tx && response.status == 487)
    ));
    let ack = request(&transmits(&mut ep)[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, inv.uri);
    assert_eq!(ack.cseq(), Some((1, Method::Ack)));
    assert_eq!(ack.to_tag(), Some("far"));
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bK-cb"));
    // A retransmitted final gets the same ACK again and is not reported twice.
    ep.handle_bytes(&busy, udp_peer(), t0 + T1);
    assert_eq!(request(&transmits(&mut ep)[0]), ack);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn cancel_before_final_answers_200_and_reports() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-c", "c@x", udp_peer(), t0);
    ep.send_response(tx, req.response(180, "Ringing").with_to_tag("ring"), t0)
        .unwrap();
    transmits(&mut ep);
    let cancel = in_tx("CANCEL", "z9hG4bK-c", "c@x", None);
    ep.handle_bytes(cancel.as_bytes(), udp_peer(), t0 + T1);
    let ok = only_response(&mut ep);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.cseq(), Some((1, Method::Cancel)));
    assert_eq!(
        ok.to_tag(),
        Some("ring"),
        "same To tag as the INVITE's responses"
    );
    assert_eq!(events(&mut ep), vec![Event::Cancelled { tx }]);
    // A retransmitted CANCEL gets the same 200 and no second event.
    ep.handle_bytes(cancel.as_bytes(), udp_peer(), t0 + T1 * 2);
    assert_eq!(only_response(&mut ep), ok);
    assert!(events(&mut ep).is_empty());
    ep.send_response(
        tx,
        req.response(487, "Request Terminated").with_to_tag("ring"),
        t0 + T1 * 2,
    )
    .unwrap();
    assert_eq!(only_response(&mut ep).status, 487);
}

#[test]
fn cancel_after_final_or_unknown() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-cf", "cf@x", udp_peer(), t0);
    ep.send_response(tx, req.response(200, "OK").with_to_tag("d"), t0)
        .unwrap();
    transmits(&mut ep);
    ep.handle_bytes(
        in_tx("CANCEL", "z9hG4bK-cf", "cf@x", None).as_bytes(),
        udp_peer(),
        t0,
    );
    let resp = only_response(&mut ep);
    assert_eq!((resp.status, resp.to_tag()), (200, Some("d")));
    assert!(
        events(&mut ep).is_empty(),
        "CANCEL after the final has no effect"
    );
    ep.handle_bytes(
        in_tx("CANCEL", "z9hG4bK-none", "none@x", None).as_bytes(),
        udp_peer(),
        t0,
    );
    let resp = only_response(&mut ep);
    assert_eq!(resp.status, 481);
    assert!(resp.to_tag().is_some());
    assert!(events(&mut ep).is_empty());
}

#[test]
fn invite_retransmission_resends_last_provisional() {
    let mut ep = ep();
    let t0 = Instant::now();
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-p", "p@x", udp_peer(), t0);
    ep.handle_bytes(invite("z9hG4bK-p", "p@x").as_bytes(), udp_peer(), t0);
    assert!(
        transmits(&mut ep).is_empty(),
        "nothing to resend before a provisional"
    );
    ep.send_response(tx, req.response(100, "Trying"), t0)
        .unwrap();
    ep.send_response(tx, req.response(180, "Ringing").with_to_tag("r"), t0)
        .unwrap();
    transmits(&mut ep);
    ep.handle_bytes(invite("z9hG4bK-p", "p@x").as_bytes(), udp_peer(), t0 + T1);
    let again = only_response(&mut ep);
    assert_eq!(again.status, 180);
    assert!(
        events(&mut ep).is_empty(),
        "retransmission must not reach the TU"
    );
    assert_eq!(
        ep.send_response(tx, req.response(200, "OK"), t0)
            .map(|_| ()),
        Ok(())
    );
    assert_eq!(
        ep.send_response(tx, req.response(486, "Busy"), t0),
        Err(SendError::InvalidState("final response already sent"))
    );
    assert_eq!(
        ep.send_response(ServerTxId(999), req.response(486, "Busy"), t0),
        Err(SendError::UnknownTransaction)
    );
}

#[test]
fn reliable_transport_never_retransmits() {
    let mut ep = ep();
    let t0 = Instant::now();
    let tcp = tcp_peer();
    // Non-2xx over TCP: no G; the ACK ends the transaction at once (timer I = 0).
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-t1", "t1@x", tcp, t0);
    ep.send_response(tx, req.response(486, "Busy Here").with_to_tag("u"), t0)
        .unwrap();
    assert_eq!(
        transmits(&mut ep)[0].to,
        tcp,
        "responses go back on the connection"
    );
    ep.handle_bytes(
        in_tx("ACK", "z9hG4bK-t1", "t1@x", Some("u")).as_bytes(),
        tcp,
        t0 + T1,
    );
    assert_eq!(ep.transaction_count(), (0, 0));
    // 2xx over TCP: no retransmission, but the ACK wait still applies.
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-t2", "t2@x", tcp, t0);
    ep.send_response(tx, req.response(200, "OK").with_to_tag("u"), t0)
        .unwrap();
    transmits(&mut ep);
    // Client over TCP: no E; F still fires.
    let opts = request_from(&in_tx("OPTIONS", "z9hG4bK-t3", "t3@x", None));
    let ctx = ep.send_request(opts, tcp, t0).unwrap();
    transmits(&mut ep);
    let (sent, evs) = run_until(&mut ep, t0, t0 + Duration::from_secs(60));
    assert!(sent.is_empty(), "retransmitted over TCP: {sent:?}");
    assert_eq!(
        evs,
        vec![Event::AckTimeout { tx }, Event::Timeout { tx: ctx }]
    );
    // Non-INVITE server over TCP: timer J is zero.
    ep.handle_bytes(
        in_tx("OPTIONS", "z9hG4bK-t4", "t4@x", None).as_bytes(),
        tcp,
        t0,
    );
    let Some(Event::Request { tx, request, .. }) = ep.poll_event() else {
        panic!("OPTIONS not delivered");
    };
    ep.send_response(tx, request.response(200, "OK").with_to_tag("o"), t0)
        .unwrap();
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn responses_follow_rport_and_received() {
    let mut ep = ep();
    let t0 = Instant::now();
    let natted = Peer {
        transport: Transport::Udp,
        addr: "192.0.2.7:7000".parse::<SocketAddr>().unwrap(),
    };
    let (tx, req) = new_invite(&mut ep, "z9hG4bK-n", "n@x", natted, t0);
    let via = req.top_via().unwrap();
    assert_eq!(via.received(), Some("192.0.2.7"));
    assert_eq!(via.rport(), Some(7000));
    ep.send_response(tx, req.response(180, "Ringing"), t0)
        .unwrap();
    let sent = transmits(&mut ep);
    assert_eq!(sent[0].to, natted);
    assert_eq!(response(&sent[0]).top_via().unwrap().rport(), Some(7000));
    // Without rport, UDP answers go to the source IP at the Via port.
    let no_rport = invite("z9hG4bK-nr", "nr@x").replace(";rport", "");
    ep.handle_bytes(no_rport.as_bytes(), natted, t0);
    let Some(Event::Request { tx, request, .. }) = ep.poll_event() else {
        panic!("INVITE not delivered");
    };
    assert_eq!(request.top_via().unwrap().rport(), None);
    ep.send_response(tx, request.response(100, "Trying"), t0)
        .unwrap();
    assert_eq!(
        transmits(&mut ep)[0].to.addr,
        "192.0.2.7:5061".parse::<SocketAddr>().unwrap()
    );
}

fn malformed(ep: &mut Endpoint, raw: &str) -> (Response, String) {
    ep.handle_bytes(raw.as_bytes(), udp_peer(), Instant::now());
    let reason = match events(ep).as_slice() {
        [Event::Malformed { reason, .. }] => reason.clone(),
        other => panic!("expected Malformed, got {other:?}"),
    };
    (only_response(ep), reason)
}

#[test]
fn unparsable_request_gets_stateless_400() {
    let mut ep = ep();
    let raw = invite("z9hG4bK-m", "m@x").replacen(
        "Subject: Performance Test",
        "Subject Performance Test",
        1,
    );
    let (resp, reason) = malformed(&mut ep, &raw);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.reason, reason);
    assert_eq!(resp.call_id(), Some("m@x"));
    assert_eq!(resp.cseq(), Some((1, Method::Invite)));
    assert_eq!(resp.from_tag(), Some("12345SIPpTag001"));
    assert!(resp.to_tag().is_some(), "a final response needs a To tag");
    let via = resp.top_via().unwrap();
    assert_eq!((via.branch(), via.rport()), (Some("z9hG4bK-m"), Some(5061)));
    assert_eq!(ep.transaction_count(), (0, 0));
    // Truncated UDP body.
    let full = invite("z9hG4bK-tr", "tr@x");
    let (resp, reason) = malformed(&mut ep, &full[..full.len() - 20]);
    assert_eq!(resp.status, 400);
    assert!(reason.contains("truncated"), "{reason}");
    // Other SIP version.
    let v3 = invite("z9hG4bK-v", "v@x").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    assert_eq!(malformed(&mut ep, &v3).0.status, 505);
    // Garbage gets no response, only the event.
    ep.handle_bytes(b"\x00\x01hello", udp_peer(), Instant::now());
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::Malformed { .. }]
    ));
    assert!(transmits(&mut ep).is_empty());
}

#[test]
fn missing_or_inconsistent_headers_get_400_with_reason() {
    let mut ep = ep();
    let base = invite("z9hG4bK-h", "h@x");
    let (resp, reason) = malformed(&mut ep, &base.replacen("Call-ID: h@x\r\n", "", 1));
    assert_eq!(
        (resp.status, resp.reason.as_str()),
        (400, "Missing Call-ID header")
    );
    assert_eq!(reason, resp.reason);
    assert_eq!(resp.cseq(), Some((1, Method::Invite)));
    let (resp, _) = malformed(&mut ep, &base.replacen("CSeq: 1 INVITE", "CSeq: 1 BYE", 1));
    assert_eq!(resp.reason, "CSeq method does not match request method");
    let (resp, _) = malformed(
        &mut ep,
        &base.replacen("CSeq: 1 INVITE", "CSeq: x INVITE", 1),
    );
    assert_eq!(resp.reason, "Malformed CSeq header");
    let (resp, _) = malformed(&mut ep, &base.replacen("From: ", "X-From: ", 1));
    assert_eq!(resp.reason, "Missing From header");
    // A NUL in a value (found by the hostile-input test: it was echoed back in a 200).
    let nul = base.replacen(
        "CSeq: 1 INVITE\r\n",
        "CSeq: 1 INVITE\r\nSubject: a\0b\r\n",
        1,
    );
    let (resp, _) = malformed(&mut ep, &nul);
    assert_eq!(resp.reason, "Control character in Subject header");
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn max_forwards_zero_gets_483_except_options() {
    let mut ep = ep();
    let t0 = Instant::now();
    let inv = invite("z9hG4bK-mf", "mf@x").replacen("Max-Forwards: 70", "Max-Forwards: 0", 1);
    ep.handle_bytes(inv.as_bytes(), udp_peer(), t0);
    assert!(events(&mut ep).is_empty());
    assert_eq!(only_response(&mut ep).status, 483);
    let opt = in_tx("OPTIONS", "z9hG4bK-mo", "mo@x", None).replacen(
        "Max-Forwards: 70",
        "Max-Forwards: 0",
        1,
    );
    ep.handle_bytes(opt.as_bytes(), udp_peer(), t0);
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::Request { .. }]
    ));
}

fn request_from(s: &str) -> Request {
    match Message::parse(s.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn response_from(b: &[u8]) -> Response {
    match Message::parse(b).unwrap() {
        Message::Response(r) => r,
        Message::Request(_) => unreachable!(),
    }
}

fn agent_peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "192.168.1.20:5060".parse::<SocketAddr>().unwrap(),
    }
}

fn outbound_invite() -> Request {
    crate::OutboundInvite {
        target: "sip:agent1@192.168.1.20:5060",
        from: "<sip:queue@verde.example>",
        to: "<sip:agent1@verde.example>",
        local_contact: "<sip:verde@10.0.0.1:5080>",
        transport: Transport::Udp,
    }
    .build()
    .with_body("application/sdp", crate::testdata::SDP)
}

fn single_response(ep: &mut Endpoint, tx: ClientTxId) -> Response {
    match events(ep).as_slice() {
        [Event::Response { tx: t, response }] if *t == tx => response.clone(),
        other => panic!("expected one response on {tx:?}, got {other:?}"),
    }
}

#[test]
fn uac_invite_reports_1xx_and_every_2xx_for_ack() {
    let mut ep = ep();
    let t0 = Instant::now();
    let inv = outbound_invite();
    let tx = ep.send_request(inv.clone(), agent_peer(), t0).unwrap();
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 1);
    assert_eq!(request(&sent[0]).to_bytes(), inv.to_bytes());
    assert_eq!(sent[0].to, agent_peer());

    let contact = "<sip:agent1@192.168.1.20:5060>";
    let t1 = t0 + Duration::from_millis(100);
    let ringing = inv
        .response(180, "Ringing")
        .with_to_tag("ag")
        .with_header("Contact", contact);
    ep.handle_bytes(&ringing.to_bytes(), agent_peer(), t1);
    assert_eq!(single_response(&mut ep, tx).status, 180);
    let progress = inv
        .response(183, "Session Progress")
        .with_to_tag("ag")
        .with_header("Contact", contact)
        .with_body("application/sdp", crate::testdata::SDP);
    ep.handle_bytes(&progress.to_bytes(), agent_peer(), t1);
    let early = single_response(&mut ep, tx);
    assert_eq!(
        (early.status, &early.body[..]),
        (183, crate::testdata::SDP.as_bytes())
    );
    // A provisional answer stops timer A and disarms B: nothing is sent while it rings.
    let t2 = t0 + Duration::from_secs(40);
    let (sent, evs) = run_until(&mut ep, t0, t2);
    assert!(sent.is_empty() && evs.is_empty(), "{sent:?} {evs:?}");

    let ok = inv
        .response(200, "OK")
        .with_to_tag("ag")
        .with_header("Contact", contact)
        .with_body("application/sdp", crate::testdata::SDP);
    ep.handle_bytes(&ok.to_bytes(), agent_peer(), t2);
    let got = single_response(&mut ep, tx);
    assert_eq!(got.status, 200);
    assert!(
        transmits(&mut ep).is_empty(),
        "the endpoint leaves the 2xx ACK to the TU"
    );
    let dialog = crate::Dialog::uac(&inv, &got).unwrap();
    let ack = dialog.ack(inv.cseq().unwrap().0);
    ep.send_ack(&ack, agent_peer());
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 1);
    let wire_ack = request(&sent[0]);
    assert_eq!(wire_ack.method, Method::Ack);
    assert_eq!(wire_ack.uri, "sip:agent1@192.168.1.20:5060");
    assert_eq!(wire_ack.cseq(), Some((1, Method::Ack)));
    assert_eq!(wire_ack.to_tag(), Some("ag"));
    assert_eq!(sent[0].to, agent_peer());

    // The phone did not get the ACK and retransmits its 200: the TU hears it again.
    let t3 = t2 + T1;
    ep.handle_bytes(&ok.to_bytes(), agent_peer(), t3);
    assert_eq!(single_response(&mut ep, tx), got);
    ep.send_ack(&ack, agent_peer());
    assert_eq!(request(&transmits(&mut ep)[0]), wire_ack);
    // A late provisional after the 2xx is not news.
    ep.handle_bytes(&ringing.to_bytes(), agent_peer(), t3);
    assert!(events(&mut ep).is_empty());

    // Timer M ends the transaction; a later 2xx still reaches the TU, without a tx.
    let (sent, evs) = run_until(&mut ep, t0, t2 + T1 * 64);
    assert!(sent.is_empty() && evs.is_empty());
    assert_eq!(ep.transaction_count(), (0, 0));
    ep.handle_bytes(&ok.to_bytes(), agent_peer(), t2 + T1 * 65);
    match events(&mut ep).as_slice() {
        [Event::StrayResponse { response, from }] => {
            assert_eq!((response, *from), (&got, agent_peer()));
        }
        other => panic!("expected a stray 2xx, got {other:?}"),
    }
    // Stray non-2xx answers stay silent.
    ep.handle_bytes(
        &inv.response(486, "Busy Here").with_to_tag("ag").to_bytes(),
        agent_peer(),
        t2 + T1 * 66,
    );
    assert!(events(&mut ep).is_empty() && transmits(&mut ep).is_empty());
}

#[test]
fn late_2xx_after_timer_b_is_delivered_as_stray() {
    let mut ep = ep();
    let t0 = Instant::now();
    let inv = outbound_invite();
    let tx = ep.send_request(inv.clone(), agent_peer(), t0).unwrap();
    transmits(&mut ep);
    let (_, evs) = run_until(&mut ep, t0, t0 + T1 * 64);
    assert_eq!(evs, vec![Event::Timeout { tx }]);
    let ok = inv
        .response(200, "OK")
        .with_to_tag("ag")
        .with_header("Contact", "<sip:agent1@192.168.1.20:5060>");
    ep.handle_bytes(&ok.to_bytes(), agent_peer(), t0 + T1 * 65);
    let evs = events(&mut ep);
    let [Event::StrayResponse { response, .. }] = evs.as_slice() else {
        panic!("expected a stray 2xx, got {evs:?}");
    };
    // The TU can still build the dialog to ACK and BYE it.
    let mut d = crate::Dialog::uac(&inv, response).unwrap();
    assert_eq!(d.request(Method::Bye).cseq(), Some((2, Method::Bye)));
}

#[test]
fn tls_is_reliable_and_answered_on_its_connection() {
    let mut ep = ep();
    let t0 = Instant::now();
    let tls = Peer {
        transport: Transport::Tls,
        addr: "192.0.2.9:40999".parse::<SocketAddr>().unwrap(),
    };
    let raw =
        in_tx("OPTIONS", "z9hG4bK-tls1", "tls1@x", None).replacen("SIP/2.0/UDP", "SIP/2.0/TLS", 1);
    ep.handle_bytes(raw.as_bytes(), tls, t0);
    let Some(Event::Request { tx, request, from }) = ep.poll_event() else {
        panic!("OPTIONS over TLS not delivered");
    };
    assert_eq!(from, tls);
    let (tx2, inv) = new_invite(&mut ep, "z9hG4bK-tls2", "tls2@x", tls, t0);
    ep.send_response(tx, request.response(200, "OK").with_to_tag("o"), t0)
        .unwrap();
    ep.send_response(tx2, inv.response(486, "Busy Here").with_to_tag("u"), t0)
        .unwrap();
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|t| t.to == tls), "{sent:?}");
    // No timer G over TLS: nothing is sent again while the ACK is awaited.
    let (again, _) = run_until(&mut ep, t0, t0 + Duration::from_secs(40));
    assert!(again.is_empty(), "retransmitted over TLS: {again:?}");
}
