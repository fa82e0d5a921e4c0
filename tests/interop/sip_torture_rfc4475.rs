//! The RFC 4475 torture messages (`tests/fixtures/rfc4475/*.dat`, byte-exact) sent to a running
//! verde over UDP and over TCP, raw. For each one: the answer RFC 4475 expects of an endpoint
//! (see `tests/fixtures/rfc4475/README.md` for the table and where verde's differs), then an
//! ordinary OPTIONS must still get 200 and `/health` must still answer. At the end a normal
//! call (SIPp) completes over each transport: nothing was wedged.
//!
//! The messages are sent as they are, from where their Via says responses go: over UDP without
//! `rport` verde answers at the source address and the Via port (RFC 3261 18.2.2), so the UDP
//! sockets are bound to 127.0.0.1:5060 and :5050 (quotbal's Via port). Two changes, both
//! reported per message when made:
//! * RFC 4475's messages reuse branch values (`z9hG4bKkdjuw` from the same hosts) because each
//!   is meant to be sent on its own. Sent one after another to one server, RFC 3261 17.2.3
//!   rightly matches the later one to the earlier one's transaction and answers it with the
//!   earlier response, so a branch already used in the run gets a suffix.
//! * invut is also sent with its Request-URI rewritten to a number verde serves, since the
//!   415 RFC 4475 expects comes after the number lookup (for `user@example.com` verde says 404).
//!
//! UDP and TCP each get their own verde: otherwise the TCP copy of a message would match the
//! UDP copy's transaction (the key does not include the transport).

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use verde_interop::flows::INPS;
use verde_interop::raw_sip::{header_values, recv_udp, Got, SipStream as Stream, SipText as Msg};
use verde_interop::sipp::{scenario, Sipp, Transport};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{fixtures_dir, require_private_netns, TestDir};

/// How long verde may take to answer one message.
const ANSWER: Duration = Duration::from_secs(5);

/// What verde must do with a message on one transport.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// These final responses, in order (1xx are skipped).
    Finals(&'static [u16]),
    /// No response at all (responses matching nothing, unusable datagrams).
    Silence,
    /// TCP with an unusable Content-Length: a 400 (RFC 4475 asks for "an error"), then the
    /// connection is closed, since the stream cannot be framed any more.
    Closed,
    /// TCP with more body announced than sent: verde waits for the rest, answers nothing.
    Waits,
}

use Want::*;

/// (tag, over UDP, over TCP)
const CASES: &[(&str, Want, Want)] = &[
    // 3.1.1 valid: the normal answer for the request (numbers verde does not serve: 404;
    // REGISTER without credentials: 401; unknown methods: 501; MESSAGE: 405).
    // wsinv's To carries a tag: a re-INVITE for a dialog verde does not have (RFC 3261 12.2.2).
    ("wsinv", Finals(&[481]), Finals(&[481])),
    ("intmeth", Finals(&[501]), Finals(&[501])),
    ("esc01", Finals(&[404]), Finals(&[404])),
    ("escnull", Finals(&[401]), Finals(&[401])),
    ("esc02", Finals(&[501]), Finals(&[501])),
    ("lwsdisp", Finals(&[200]), Finals(&[200])),
    ("longreq", Finals(&[404]), Finals(&[404])),
    // In a datagram the INVITE after the REGISTER is noise; on a stream it is the next message.
    ("dblreq", Finals(&[401]), Finals(&[401, 404])),
    ("semiuri", Finals(&[200]), Finals(&[200])),
    ("transports", Finals(&[200]), Finals(&[200])),
    ("mpart01", Finals(&[405]), Finals(&[405])),
    ("unreason", Silence, Silence),
    ("noreason", Silence, Silence),
    // 3.1.2 invalid
    ("badinv01", Finals(&[400]), Finals(&[400])),
    ("clerr", Finals(&[400]), Waits),
    ("ncl", Finals(&[400]), Closed),
    ("scalar02", Finals(&[400]), Finals(&[400])),
    ("scalarlg", Silence, Silence),
    ("quotbal", Finals(&[400]), Finals(&[400])),
    ("ltgtruri", Finals(&[400]), Finals(&[400])),
    ("lwsruri", Finals(&[400]), Finals(&[400])),
    // Liberal where RFC 4475 allows it.
    ("lwsstart", Finals(&[404]), Finals(&[404])),
    ("trws", Finals(&[200]), Finals(&[200])),
    ("escruri", Finals(&[404]), Finals(&[404])),
    ("baddate", Finals(&[404]), Finals(&[404])),
    ("regbadct", Finals(&[400]), Finals(&[400])),
    ("badaspec", Finals(&[400]), Finals(&[400])),
    ("baddn", Finals(&[400]), Finals(&[400])),
    ("badvers", Finals(&[505]), Finals(&[505])),
    ("mismatch01", Finals(&[400]), Finals(&[400])),
    ("mismatch02", Finals(&[400]), Finals(&[400])),
    ("bigcode", Silence, Silence),
    // 3.2
    ("badbranch", Finals(&[200]), Finals(&[200])),
    // 3.3
    ("insuf", Finals(&[400]), Finals(&[400])),
    ("unkscm", Finals(&[416]), Finals(&[416])),
    ("novelsc", Finals(&[416]), Finals(&[416])),
    ("unksm2", Finals(&[400]), Finals(&[400])),
    ("bext01", Finals(&[420]), Finals(&[420])),
    ("invut", Finals(&[404]), Finals(&[404])),
    ("regaut01", Finals(&[401]), Finals(&[401])),
    ("multi01", Finals(&[400]), Finals(&[400])),
    ("mcl01", Finals(&[400]), Closed),
    ("bcast", Silence, Silence),
    ("zeromf", Finals(&[200]), Finals(&[200])),
    ("cparam01", Finals(&[401]), Finals(&[401])),
    ("cparam02", Finals(&[401]), Finals(&[401])),
    ("regescrt", Finals(&[401]), Finals(&[401])),
    ("sdp01", Finals(&[404]), Finals(&[404])),
    // 3.4: no Content-Length; on a stream that reads as 0 (the body is then junk on the
    // connection, which is why every message gets a connection of its own).
    ("inv2543", Finals(&[404]), Finals(&[404])),
];

fn fixture(tag: &str) -> Vec<u8> {
    let p = fixtures_dir().join("rfc4475").join(format!("{tag}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// What the test needs to know about a message it sends.
struct Outgoing {
    bytes: Vec<u8>,
    call_ids: Vec<String>,
    cseq: Option<String>,
    request_uri: Option<String>,
    invite: bool,
    /// Where verde sends UDP responses: the Via port (5060 when absent), or the source with rport.
    udp_port: u16,
    note: Vec<String>,
}

impl Outgoing {
    fn new(tag: &str, bytes: Vec<u8>, used: &mut HashSet<String>) -> Outgoing {
        let mut note = Vec::new();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let first = text.lines().next().unwrap_or("").to_string();
        let is_request = !first.starts_with("SIP/");
        let mut bytes = bytes;
        let top_via = header_values(&text, "Via", "v")
            .into_iter()
            .next()
            .map(|v| v.split(',').next().unwrap_or("").to_string());
        if let (true, Some(via)) = (is_request, &top_via) {
            let branch = param(via, "branch");
            // The server transaction key (RFC 3261 17.2.3): branch, sent-by, request method.
            let method = first.split_whitespace().next().unwrap_or_default();
            let method = if method == "ACK" { "INVITE" } else { method };
            let sent_by = via
                .split(';')
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .skip(1)
                .collect::<String>();
            if let Some(b) = branch.filter(|b| b.starts_with("z9hG4bK") && b.len() > 7) {
                let key = format!("{b}|{}|{method}", sent_by.to_lowercase());
                if !used.insert(key) {
                    let new = format!("{b}.{tag}");
                    let pos = text.find(&format!("branch={b}")).expect("branch in text");
                    let mut t = text.clone();
                    t.replace_range(pos..pos + 7 + b.len(), &format!("branch={new}"));
                    bytes = t.into_bytes();
                    note.push(format!(
                        "branch {b} already used in this run: sent as {new}"
                    ));
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Only the first message of the datagram counts for dblreq's Call-IDs over UDP; both
        // are listed so the TCP answer to its INVITE is recognized too.
        let mut call_ids = header_values(&text, "Call-ID", "i");
        for part in text.split("\r\n\r\n").skip(1) {
            if part.contains(" SIP/2.0\r\n") {
                call_ids.extend(header_values(
                    &format!("x\r\n{}", part.split_once("\r\n").map_or("", |p| p.1)),
                    "Call-ID",
                    "i",
                ));
            }
        }
        let udp_port = match &top_via {
            Some(v) if param(v, "rport").is_some() => 5060,
            Some(v) => v
                .split(';')
                .next()
                .and_then(|s| s.rsplit_once(':'))
                .and_then(|(_, p)| p.trim().parse().ok())
                .unwrap_or(5060),
            None => 5060,
        };
        Outgoing {
            call_ids,
            cseq: header_values(&text, "CSeq", "CSeq").into_iter().next(),
            request_uri: is_request
                .then(|| first.split_whitespace().nth(1).map(str::to_string))
                .flatten(),
            invite: first.starts_with("INVITE"),
            udp_port,
            bytes,
            note,
        }
    }

    /// Whether a response answers this message (or the second request of dblreq).
    fn owns(&self, resp: &Msg) -> bool {
        match resp.header("Call-ID", "i") {
            Some(id) => self.call_ids.contains(&id),
            // insuf has no Call-ID; its 400 can only echo the CSeq.
            None => self.call_ids.is_empty() && resp.header("CSeq", "CSeq") == self.cseq,
        }
    }
}

/// `;name=value` or `;name` in a header value.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// ACK for a non-2xx final to an INVITE (RFC 3261 17.1.1.3), built from the response.
fn ack_for(out: &Outgoing, resp: &Msg) -> Vec<u8> {
    let via = resp
        .header("Via", "v")
        .map(|v| v.split(',').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let cseq_n = resp
        .header("CSeq", "CSeq")
        .and_then(|c| c.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "1".into());
    let mut ack = format!(
        "ACK {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n",
        out.request_uri.as_deref().unwrap_or("sip:x@127.0.0.1")
    );
    for (full, compact) in [("From", "f"), ("To", "t"), ("Call-ID", "i")] {
        if let Some(v) = resp.header(full, compact) {
            ack.push_str(&format!("{full}: {v}\r\n"));
        }
    }
    ack.push_str(&format!("CSeq: {cseq_n} ACK\r\nContent-Length: 0\r\n\r\n"));
    ack.into_bytes()
}

fn options(local: SocketAddr, transport: &str, n: u32, rport: bool) -> Vec<u8> {
    let rport = if rport { ";rport" } else { "" };
    format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/{transport} {local};branch=z9hG4bKprobe{transport}{n}{rport}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe{n}\r\nTo: <sip:probe@127.0.0.1>\r\n\
Call-ID: probe-{transport}-{n}@127.0.0.1\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Everything one message over one transport produced, for the failure report.
struct Outcome {
    what: String,
    finals: Vec<u16>,
    closed: bool,
    problems: Vec<String>,
}

/// Collects the finals `out` gets from `next` until `count` arrived or `stop` says so.
fn finals_for(
    out: &Outgoing,
    count: usize,
    mut next: impl FnMut(Duration) -> Option<Msg>,
) -> Vec<Msg> {
    let deadline = Instant::now() + ANSWER;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match next(left) {
            Some(m) if out.owns(&m) && m.status().is_some_and(|s| s >= 200) => got.push(m),
            Some(_) => {}
            None => break,
        }
    }
    got
}

fn run_udp(verde: &Verde, tag: &str, out: &Outgoing, socks: &Socks, n: u32, want: Want) -> Outcome {
    let sock = socks.bound(out.udp_port);
    drain(sock);
    sock.send_to(&out.bytes, verde.sip).expect("send to verde");
    let mut o = Outcome {
        what: format!("{tag} over UDP"),
        finals: Vec::new(),
        closed: false,
        problems: out.note.clone(),
    };
    match want {
        Finals(statuses) => {
            let got = finals_for(out, statuses.len(), |w| recv_udp(sock, w));
            for m in &got {
                if out.invite && m.status() != Some(200) {
                    sock.send_to(&ack_for(out, m), verde.sip).unwrap();
                }
            }
            o.finals = got.iter().filter_map(Msg::status).collect();
            // Nothing more for this message: the next datagram verde answers is our probe.
            let probe = options(sock.local_addr().unwrap(), "UDP", n, false);
            sock.send_to(&probe, verde.sip).unwrap();
            o.finals
                .extend(extra_before_probe(out, n, |w| recv_udp(sock, w)));
        }
        Silence => {
            // Datagrams are handled in order: once the probe sent after it is answered, verde
            // has decided about the message.
            let probe = options(sock.local_addr().unwrap(), "UDP", n, false);
            sock.send_to(&probe, verde.sip).unwrap();
            o.finals = extra_before_probe(out, n, |w| recv_udp(sock, w));
        }
        Closed | Waits => unreachable!("stream-only expectations"),
    }
    o
}

/// Reads until the probe's 200, returning the statuses of anything else `out` got meanwhile.
fn extra_before_probe(
    out: &Outgoing,
    n: u32,
    mut next: impl FnMut(Duration) -> Option<Msg>,
) -> Vec<u16> {
    let probe_id = |m: &Msg| {
        m.header("Call-ID", "i")
            .is_some_and(|c| c.starts_with("probe-") && c.contains(&format!("-{n}@")))
    };
    let deadline = Instant::now() + ANSWER;
    let mut extra = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = (!left.is_zero()).then(|| next(left)).flatten() else {
            panic!(
                "no answer within {ANSWER:?} to the OPTIONS sent after {}",
                out.call_ids.join(",")
            );
        };
        if probe_id(&m) {
            assert_eq!(m.status(), Some(200), "probe answered with:\n{}", m.0);
            return extra;
        }
        if out.owns(&m) && m.status().is_some_and(|s| s >= 200) {
            extra.push(m.status().unwrap());
        }
    }
}

fn run_tcp(verde: &Verde, tag: &str, out: &Outgoing, n: u32, want: Want) -> Outcome {
    let mut conn = Stream::connect(verde.sip, ANSWER);
    conn.send(&out.bytes);
    let mut o = Outcome {
        what: format!("{tag} over TCP"),
        finals: Vec::new(),
        closed: false,
        problems: out.note.clone(),
    };
    match want {
        Finals(statuses) => {
            let mut closed = false;
            let got = finals_for(out, statuses.len(), |w| match conn.next(w) {
                Got::Message(m) => Some(m),
                Got::Closed => {
                    closed = true;
                    None
                }
                Got::TimedOut => None,
            });
            o.closed = closed;
            o.finals = got.iter().filter_map(Msg::status).collect();
            for m in &got {
                if out.invite && m.status() != Some(200) {
                    conn.send(&ack_for(out, m));
                }
            }
        }
        Silence => {
            // One connection is read in order: the probe behind the message proves verde
            // has dealt with it.
            let local = conn.tcp.local_addr().unwrap();
            conn.send(&options(local, "TCP", n, false));
            o.finals = extra_before_probe(out, n, |w| match conn.next(w) {
                Got::Message(m) => Some(m),
                _ => None,
            });
        }
        Closed => loop {
            // Until verde closes: a 400 may come first.
            match conn.next(ANSWER) {
                Got::Message(m) if out.owns(&m) => o.finals.extend(m.status()),
                Got::Message(_) => {}
                Got::Closed => {
                    o.closed = true;
                    break;
                }
                Got::TimedOut => break,
            }
        },
        Waits => {
            // Verde waits for 9999 body bytes; a plain OPTIONS on another connection proves
            // it still serves, and this connection must have stayed silent and open.
            probe_tcp(verde, n);
            match conn.next(Duration::from_millis(200)) {
                Got::Message(m) => o.finals.extend(m.status()),
                Got::Closed => o.closed = true,
                Got::TimedOut => {}
            }
        }
    }
    o
}

fn probe_tcp(verde: &Verde, n: u32) {
    let mut conn = Stream::connect(verde.sip, ANSWER);
    let local = conn.tcp.local_addr().unwrap();
    conn.send(&options(local, "TCP", 10_000 + n, false));
    match conn.next(ANSWER) {
        Got::Message(m) if m.status() == Some(200) => {}
        Got::Message(m) => panic!("OPTIONS over TCP answered with:\n{}", m.0),
        Got::Closed => panic!("verde closed the TCP connection of a plain OPTIONS"),
        Got::TimedOut => panic!("no answer within {ANSWER:?} to a plain OPTIONS over TCP"),
    }
}

fn probe_udp(verde: &Verde, n: u32) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        &options(sock.local_addr().unwrap(), "UDP", 20_000 + n, true),
        verde.sip,
    )
    .unwrap();
    let m = recv_udp(&sock, ANSWER)
        .unwrap_or_else(|| panic!("no answer within {ANSWER:?} to a plain OPTIONS over UDP"));
    assert_eq!(
        m.status(),
        Some(200),
        "OPTIONS over UDP answered with:\n{}",
        m.0
    );
}

/// The UDP sockets messages are sent from, one per Via port in the fixtures.
struct Socks(Vec<UdpSocket>);

impl Socks {
    fn bind() -> Socks {
        Socks(
            [5060u16, 5050]
                .iter()
                .map(|p| {
                    UdpSocket::bind(("127.0.0.1", *p)).unwrap_or_else(|e| {
                        panic!("cannot bind 127.0.0.1:{p}, where the RFC 4475 messages' Via sends answers: {e}")
                    })
                })
                .collect(),
        )
    }

    fn bound(&self, port: u16) -> &UdpSocket {
        self.0
            .iter()
            .find(|s| s.local_addr().unwrap().port() == port)
            .unwrap_or_else(|| panic!("no socket bound at Via port {port}"))
    }
}

fn drain(sock: &UdpSocket) {
    while recv_udp(sock, Duration::from_millis(1)).is_some() {}
}

fn check(o: &Outcome, want: Want) -> Option<String> {
    let ok = match want {
        Finals(s) => o.finals == s,
        Silence => o.finals.is_empty(),
        Closed => o.closed && o.finals == [400],
        Waits => o.finals.is_empty() && !o.closed,
    };
    (!ok).then(|| {
        format!(
            "{}: expected {want:?}, got finals {:?}{}",
            o.what,
            o.finals,
            if o.closed {
                " and the connection closed"
            } else {
                ""
            }
        )
    })
}

/// The messages, in RFC order, plus invut once more to a number verde serves.
fn messages(used: &mut HashSet<String>) -> Vec<(String, Outgoing)> {
    let mut list = Vec::new();
    for (tag, _, _) in CASES {
        list.push((tag.to_string(), Outgoing::new(tag, fixture(tag), used)));
    }
    let invut = String::from_utf8(fixture("invut")).unwrap().replacen(
        "INVITE sip:user@example.com ",
        &format!("INVITE sip:{INPS}@127.0.0.1 "),
        1,
    );
    let mut o = Outgoing::new("invut-served", invut.into_bytes(), used);
    o.note
        .push(format!("Request-URI rewritten to sip:{INPS}@127.0.0.1"));
    list.push(("invut-served".to_string(), o));
    list
}

fn want_for(tag: &str, transport: Transport) -> Want {
    if tag == "invut-served" {
        // 415 with Accept: application/sdp, from the call once the number is known.
        return Finals(&[415]);
    }
    let c = CASES.iter().find(|c| c.0 == tag).unwrap();
    match transport {
        Transport::Udp => c.1,
        Transport::Tcp => c.2,
    }
}

#[test]
fn rfc4475_torture_messages_over_udp_and_tcp() {
    require_private_netns();
    let started = Instant::now();
    let dir = TestDir::new("sip_torture_rfc4475");
    let socks = Socks::bind();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut verde = Verde::start(&dir, VerdeOptions::default());
        let mut used = HashSet::new();
        for (n, (tag, out)) in messages(&mut used).iter().enumerate() {
            let n = n as u32 + 1 + if transport == Transport::Tcp { 100 } else { 0 };
            let want = want_for(tag, transport);
            let outcome = match transport {
                Transport::Udp => {
                    let o = run_udp(&verde, tag, out, &socks, n, want);
                    probe_udp(&verde, n);
                    o
                }
                Transport::Tcp => {
                    let o = run_tcp(&verde, tag, out, n, want);
                    probe_tcp(&verde, n);
                    o
                }
            };
            for p in &outcome.problems {
                notes.push(format!("{}: {p}", outcome.what));
            }
            eprintln!(
                "{}: finals {:?}{}",
                outcome.what,
                outcome.finals,
                if outcome.closed {
                    ", connection closed"
                } else {
                    ""
                }
            );
            failures.extend(check(&outcome, want));
            let health = verde.get("/health");
            assert_eq!(
                health.status,
                200,
                "/health after {}: {}",
                outcome.what,
                health.text()
            );
            verde.assert_running();
        }

        // A normal call still completes on this transport: no transaction was left wedged.
        let call = scenario(
            &dir,
            "uac_call.xml",
            &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
        );
        let out = Sipp::new(&call, verde.sip)
            .service(INPS)
            .transport(transport)
            .timeout(Duration::from_secs(20))
            .run(&dir);
        out.assert_success(&format!(
            "a normal call over {transport:?} after the torture messages"
        ));
        verde.wait_call_record(&out.call_id, Duration::from_secs(10));
        verde.assert_running();
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!("RFC 4475 run took {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "verde's answers differ from RFC 4475's:\n{}",
        failures.join("\n")
    );
}
