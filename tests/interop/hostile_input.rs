//! Issue 8: garbage on every socket verde listens on (SIP over UDP and TCP, the `/cti` and
//! `/webrtc` websockets) must get a clear refusal, cost bounded memory and leave other calls
//! alone. While the garbage flows, SIPp (a real carrier peer) places calls to the INPS IVR over
//! UDP, and over TCP while 500 idle connections are held open; every one must complete.
//!
//! The garbage comes from 127.0.0.1, the `local` trunk of the default configuration, so a
//! per-source flood guard that exempts trunks cannot hide what the parser and the framing do
//! with it: every message reaches them.
//!
//! Cases and what is checked:
//! * UDP: random bytes, NULs, truncated heads and bodies, 64 KiB datagrams (valid and random),
//!   an INVITE with a 60 KB header, NUL bytes inside header values: a 400 when a response can
//!   be built, silence when not, every refusal counted in `verde_sip_malformed_total`, and an
//!   OPTIONS right behind each answered 200. Then 1000 datagrams of 64 KiB (65 MB).
//! * TCP: (a) a partial message then silence and (b) a header trickled one byte per 100 ms,
//!   both held through the whole attack; (c) messages past verde's 64 KiB limit (`MAX_TCP_MESSAGE`
//!   in `sip_core.rs`), one just below it; (d) 500 idle connections while SIPp calls over TCP;
//!   (e) garbage, then OPTIONS on a new connection and on the same one.
//! * Websockets: binary frames, invalid JSON, oversized text, 1 MiB frames (`max_message_size`
//!   is 64 KiB), 1000 connections opened and closed as fast as possible, a `/webrtc` socket that
//!   never calls (closed at 30 s); `/health` after each.
//! * Memory: the attack runs in three rounds; VmRSS before, after each round and after the
//!   attack (and the peak), descriptors back to where they were once the attackers have gone.
//!
//! What verde does not do yet is listed in [`KNOWN_FINDINGS`]: those checks still run and
//! print `FINDING` instead of failing, so the test stays green on today's engine and turns
//! binding as soon as a finding is fixed and its name removed.

use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::{HandshakeError, Message, WebSocket};
use verde_interop::flows::INPS;
use verde_interop::raw_sip::{recv_udp, Got, SipStream as Stream, SipText as Sip};
use verde_interop::sipp::{scenario, Sipp, Transport};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, try_wait_for, TestDir};

/// Checks of behaviour issue 8 asks for that this verde lacks (see the report of each).
const KNOWN_FINDINGS: &[&str] = &[];

/// Rounds of the whole attack (about 10 s each).
const ROUNDS: u32 = 3;
/// SIPp calls placed over UDP while the garbage flows, and their rate per second: 30 s of
/// calls, about as long as the rounds of the attack take.
const LOAD_CALLS: u32 = 60;
const LOAD_RATE: u32 = 2;
/// How long each SIPp call listens to the IVR before hanging up.
const LISTEN_MS: u64 = 2500;
/// How long verde may take to answer one message.
const ANSWER: Duration = Duration::from_secs(5);
/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// verde's largest SIP message on a stream (`MAX_TCP_MESSAGE` in sip_core.rs).
const MAX_TCP_MESSAGE: usize = 65_536;
/// How long the `/webrtc` socket that never calls is kept (`CALL_WITHIN` in web_call.rs).
const WEBRTC_CALL_WITHIN: Duration = Duration::from_secs(30);
/// RSS growth allowed over the whole attack. Each round sends about 115 MB (65 MB of UDP
/// datagrams, 7 MB of oversized TCP messages, 42 MB of 1 MiB websocket frames, 1000 websocket
/// connections), and 32 MB of partial frames are held once at the end: about 380 MB in all, so
/// keeping an eighth of it would break this bound. What verde legitimately keeps (the calls'
/// records, transactions until Timer J, the allocator's arenas) measured 11 to 15 MB.
const RSS_GROWTH_BOUND_KB: u64 = 50 * 1024;
/// RSS growth allowed from the end of the first round to the end of the last, 230 MB later.
/// Measured 3 to 6 MB while SIPp's calls are still being recorded; over nine rounds RSS stays
/// flat from the third on (64 MB), so this is warm-up, and a leak of 5% of what a round sends
/// breaks the bound.
const ROUND_GROWTH_BOUND_KB: u64 = 10 * 1024;

#[test]
fn garbage_on_every_socket_is_refused_with_bounded_memory_while_calls_go_through() {
    require_private_netns();
    let started = Instant::now();
    let dir = TestDir::new("hostile_input");
    let mut verde = Verde::start(&dir, VerdeOptions::default());
    let pid = verde.pid();
    let mut report = Report::new();

    // Warm-up: one answered OPTIONS and a health check, so lazily built state is in `before`.
    let mut udp = Udp::new(verde.sip);
    assert!(udp.settle().is_empty());
    health(&verde, "before the attack");
    let before = ProcStatus::read(pid);
    report.note(format!("before the attack: {before}"));

    // Opened first so its 30 s run out during the attack.
    let idle_webrtc = watch_idle_webrtc(verde.http);

    let scen = scenario(
        &dir,
        "uac_call.xml",
        &[
            ("ACTIONS", String::new()),
            ("LISTEN_MS", LISTEN_MS.to_string()),
        ],
    );
    let load = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .calls(LOAD_CALLS)
        .arg("-r")
        .arg(LOAD_RATE.to_string())
        .timeout(Duration::from_secs(90))
        .spawn(&dir);

    // (a) and (b): held through everything below.
    let stop = Arc::new(AtomicBool::new(false));
    let partial = slowloris_partial(verde.sip, stop.clone());
    let trickle = slowloris_trickle(verde.sip, stop.clone());

    // The attack, in rounds: what a round leaves behind for good shows as growth from one
    // round to the next, apart from what the first round warms up.
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        report.round = round;
        udp_cases(&verde, &mut udp, &mut report);
        udp_flood(&verde, &mut udp, &mut report);
        tcp_oversized(&verde, &mut report);
        tcp_idle_connections(&verde, &dir, pid, &scen, &mut report);
        tcp_garbage(&verde, &mut report);
        cti_garbage(&verde, &mut report);
        webrtc_garbage(&verde, &mut report);
        rapid_connect_close(&verde, pid, &mut report);
        let now = ProcStatus::read(pid);
        report.note_always(format!(
            "after round {round} ({:.1} s): {now}",
            started.elapsed().as_secs_f64()
        ));
        rounds.push(now);
    }
    report.round = 0;
    // Once, after the rounds: 32 MB held at once moves the allocator's thresholds, which
    // would blur the comparison of the rounds.
    held_partial_frames(&verde, pid, &mut report);

    // The calls placed meanwhile.
    let out = load.wait();
    out.assert_success("SIPp calls to the IVR during the attack");
    let prefix = out
        .call_id
        .split('@')
        .next()
        .and_then(|id| id.rsplit_once('-'))
        .map(|(p, _)| format!("{p}-"))
        .expect("SIPp call ids are <prefix>-<n>@<ip>");
    let answered = try_wait_for(Duration::from_secs(15), || {
        let n = verde
            .recent_calls(1000)
            .iter()
            .filter(|r| {
                r["call_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&prefix))
            })
            .filter(|r| !r["answered_at"].is_null() && !r["ended_at"].is_null())
            .count();
        (n == LOAD_CALLS as usize).then_some(n)
    });
    assert!(
        answered.is_some(),
        "every SIPp call during the attack must be answered, ended and recorded: {LOAD_CALLS} expected"
    );
    report.note(format!(
        "SIPp: {LOAD_CALLS} calls over UDP at {LOAD_RATE}/s to {INPS}, all answered and recorded, in {:.1} s",
        out.elapsed.as_secs_f64()
    ));

    let (closed_after, how) = idle_webrtc.join().expect("idle /webrtc watcher");
    report.note(format!(
        "/webrtc socket that never calls: {how} after {:.1} s",
        closed_after.as_secs_f64()
    ));
    assert!(
        closed_after >= WEBRTC_CALL_WITHIN - Duration::from_secs(1)
            && closed_after <= WEBRTC_CALL_WITHIN + Duration::from_secs(5),
        "a /webrtc socket that never calls is closed at {WEBRTC_CALL_WITHIN:?}; it went after {closed_after:?} ({how})"
    );
    assert!(
        how.starts_with("close frame"),
        "verde closes the idle /webrtc socket with a close frame; got: {how}"
    );

    // (a) and (b) were held for the whole attack; see whether verde cut them off.
    let held_for = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let partial_closed = partial.join().expect("partial-message watcher");
    let (trickled, trickle_closed) = trickle.join().expect("trickle writer");
    report.note(format!(
        "TCP (a) partial message then silence: {}",
        closed_text(partial_closed, held_for)
    ));
    report.note(format!(
        "TCP (b) header trickled 1 byte/100 ms ({trickled} bytes sent): {}",
        closed_text(trickle_closed, held_for)
    ));
    let deadline = Duration::from_secs(30);
    report.check(
        "tcp-partial-message-deadline",
        partial_closed.is_some_and(|d| d <= deadline)
            && trickle_closed.is_some_and(|d| d <= deadline),
        || {
            format!(
                "a partial TCP message must be cut off within {deadline:?}: after silence {}, trickled {}",
                closed_text(partial_closed, held_for),
                closed_text(trickle_closed, held_for)
            )
        },
    );

    udp.settle();
    health(&verde, "after the attack");
    verde.assert_running();
    // Descriptors: the attackers have gone, so must their sockets.
    let fds_settled = try_wait_for(Duration::from_secs(10), || {
        let fds = ProcStatus::read(pid).fds;
        (fds <= before.fds + 10).then_some(fds)
    });
    let after = ProcStatus::read(pid);
    assert!(
        fds_settled.is_some(),
        "verde's descriptors must come back to where they were before the attack: {} before, {} after",
        before.fds,
        after.fds
    );
    report.note(format!("after the attack: {after}"));
    let growth = after.rss_kb.saturating_sub(before.rss_kb);
    report.note(format!(
        "RSS growth {} kB (bound {RSS_GROWTH_BOUND_KB} kB), peak {} kB; run time {:.1} s",
        growth,
        after.hwm_kb,
        started.elapsed().as_secs_f64()
    ));
    let first = rounds.first().expect("at least one round").rss_kb;
    let last = rounds.last().expect("at least one round").rss_kb;
    let round_growth = last.saturating_sub(first);
    report.note(format!(
        "RSS growth from round 1 to round {ROUNDS}: {round_growth} kB (bound {ROUND_GROWTH_BOUND_KB} kB)"
    ));
    report.print();
    assert!(
        round_growth < ROUND_GROWTH_BOUND_KB,
        "verde's RSS kept growing from round to round: {:?} kB",
        rounds.iter().map(|r| r.rss_kb).collect::<Vec<_>>()
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KB,
        "verde's RSS grew by {growth} kB over the attack (bound {RSS_GROWTH_BOUND_KB} kB): {before} -> {after}"
    );
    report.finish();
}

// ---- UDP ----

fn udp_cases(verde: &Verde, udp: &mut Udp, report: &mut Report) {
    let malformed_before = malformed_count(verde);
    let drops_before = udp_drops(verde.sip);
    let mut malformed = 0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let random = rng.bytes(1000);
    let got = udp.exchange(&random);
    assert!(got.is_empty(), "random bytes get no answer: {got:?}");
    malformed += 1;
    let got = udp.exchange(&[0u8; 1000]);
    assert!(got.is_empty(), "a datagram of NULs gets no answer: {got:?}");
    malformed += 1;

    // Heads without their blank line, cut inside a header line and after one: Via, From, To,
    // Call-ID and CSeq are all there to build the 400 from (RFC 3261 8.2.6.2).
    for (id, tail) in [
        ("trunc-mid-line", &b"Contact: <sip:0612345678@"[..]),
        (
            "trunc-after-line",
            &b"Contact: <sip:0612345678@127.0.0.1>\r\n"[..],
        ),
    ] {
        let mut msg = udp.head("OPTIONS", id);
        msg.extend_from_slice(tail);
        let got = udp.exchange(&msg);
        let finals: Vec<&Sip> = got
            .iter()
            .filter(|m| m.status().is_some_and(|s| s >= 200))
            .collect();
        assert!(
            finals.len() == 1 && finals[0].status() == Some(400),
            "a head without its blank line ({id}) gets one 400; got {got:#?}"
        );
        malformed += 1;
        let first = finals[0].0.lines().next().unwrap_or("").to_string();
        report.note(format!("UDP head without blank line ({id}): {first}"));
        report.check(
            "sip-truncated-head-answer",
            finals[0].call_id().as_deref() == Some(id) && finals[0].header("From", "f").is_some(),
            || format!("the 400 to a head without its blank line ({id}) must echo From, To, Call-ID and CSeq; got {:?}", finals[0].0),
        );
    }

    let id = "trunc-body";
    let mut msg = udp.head("OPTIONS", id);
    msg.extend_from_slice(b"Content-Type: application/sdp\r\nContent-Length: 300\r\n\r\nv=0\r\n");
    let got = udp.exchange(&msg);
    assert_eq!(
        only_final(&got, id, "truncated body over UDP"),
        400,
        "{got:?}"
    );
    malformed += 1;

    // The largest datagram there is, as a valid request: answered like any other.
    let id = "64k-valid";
    let msg = padded(udp.head("OPTIONS", id), MAX_DATAGRAM);
    assert_eq!(msg.len(), MAX_DATAGRAM);
    let got = udp.exchange(&msg);
    assert_eq!(
        only_final(&got, id, "64 KiB OPTIONS over UDP"),
        200,
        "{got:?}"
    );
    let got = udp.exchange(&rng.bytes(MAX_DATAGRAM));
    assert!(
        got.is_empty(),
        "64 KiB of random bytes get no answer: {got:?}"
    );
    malformed += 1;

    for (id, header) in [
        ("nul-subject", &b"Subject: a\0b\r\n"[..]),
        ("nul-user-agent", &b"User-Agent: x\0\0\0y\r\n"[..]),
    ] {
        let mut msg = udp.head("OPTIONS", id);
        msg.extend_from_slice(header);
        msg.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let got = udp.exchange(&msg);
        let status = only_final(&got, id, "NUL in a header value over UDP");
        report.check("sip-nul-refused", status == 400, || {
            format!("OPTIONS with a raw NUL in a header value ({id}) must get 400; got {status}")
        });
        if status == 400 {
            malformed += 1;
        }
    }
    let id = "nul\0in-call-id";
    let mut msg = udp.head("OPTIONS", id);
    msg.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let got = udp.exchange(&msg);
    let status = only_final(&got, id, "NUL in the Call-ID over UDP");
    report.check("sip-nul-refused", status == 400, || {
        format!("OPTIONS with a raw NUL in its Call-ID must get 400; got {status}")
    });
    if status == 400 {
        malformed += 1;
    }

    huge_invite(verde, udp, report);

    let counted = malformed_count(verde) - malformed_before;
    let dropped = udp_drops(verde.sip) - drops_before;
    assert_eq!(
        counted + dropped,
        malformed,
        "every refused datagram is counted in verde_sip_malformed_total (or was dropped by the kernel: {dropped})"
    );
    report.note(format!(
        "UDP single cases: {malformed} refused (silence or 400), each counted; OPTIONS answered after each"
    ));
}

/// A valid INVITE to the IVR carrying a 60 KB header: a call like any other.
fn huge_invite(verde: &Verde, udp: &mut Udp, report: &mut Report) {
    let media = UdpSocket::bind("127.0.0.1:0").expect("media socket");
    let media_port = media.local_addr().unwrap().port();
    let id = format!("huge-invite-{}", report.round);
    let id = id.as_str();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    );
    let mut msg = udp.head("INVITE", id);
    msg.extend_from_slice(format!("Contact: <sip:0612345678@{}>\r\n", udp.local()).as_bytes());
    msg.extend_from_slice(format!("Subject: {}\r\n", "s".repeat(60_000)).as_bytes());
    msg.extend_from_slice(
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    );
    let size = msg.len();
    udp.send(&msg);
    let ok = udp
        .wait(|m| m.call_id().as_deref() == Some(id) && m.status().is_some_and(|s| s >= 200))
        .unwrap_or_else(|| panic!("no final answer within {ANSWER:?} to a {size}-byte INVITE"));
    assert_eq!(
        ok.status(),
        Some(200),
        "a valid INVITE with a 60 KB header is a call like any other: {}",
        ok.0
    );
    let to = ok.header("To", "t").expect("To in the 200");
    let from = ok.header("From", "f").expect("From in the 200");
    let tail = |method: &str, cseq: u32| {
        format!(
            "{method} sip:{INPS}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKhostile{};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            verde.sip,
            udp.local(),
            next_branch()
        )
    };
    udp.send(tail("ACK", 1).as_bytes());
    udp.send(tail("BYE", 2).as_bytes());
    let bye = udp
        .wait(|m| {
            m.call_id().as_deref() == Some(id)
                && m.header("CSeq", "CSeq").is_some_and(|c| c.ends_with("BYE"))
        })
        .expect("an answer to the BYE of the call with a 60 KB header");
    assert_eq!(bye.status(), Some(200), "{}", bye.0);
    udp.settle();
    report.note(format!(
        "UDP INVITE of {size} bytes (60 KB Subject): 200, ACK, BYE 200"
    ));
}

/// 1000 datagrams of 64 KiB: random ones (silence) and requests whose body is cut short (400),
/// in pairs, each pair's 400 awaited: verde's socket buffer (208 KiB by default) holds only
/// two or three datagrams this size. What the kernel still drops (SIPp's packets share the
/// socket) is read from `/proc/net/udp` and sent again when it was the request.
fn udp_flood(verde: &Verde, udp: &mut Udp, report: &mut Report) {
    let t = Instant::now();
    let malformed_before = malformed_count(verde);
    let drops_before = udp_drops(verde.sip);
    let random = Rng(7).bytes(MAX_DATAGRAM);
    let mut sent = 0u64;
    for i in 0..500 {
        udp.send(&random);
        sent += 1;
        let id = format!("flood-{i}");
        let mut msg = udp.head("OPTIONS", &id);
        let body_len = MAX_DATAGRAM - msg.len() - 60;
        msg.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body_len + 1000).as_bytes());
        msg.resize(MAX_DATAGRAM, b'x');
        let answer = (0..3).find_map(|_| {
            let drops = udp_drops(verde.sip);
            udp.send(&msg);
            sent += 1;
            udp.wait_for(Duration::from_secs(2), |m| {
                m.call_id().as_deref() == Some(id.as_str())
            })
            .or_else(|| {
                assert!(
                    udp_drops(verde.sip) > drops,
                    "no answer to flood datagram {id} and the kernel dropped nothing"
                );
                None
            })
        });
        let answer = answer.unwrap_or_else(|| panic!("flood datagram {id} dropped three times"));
        assert_eq!(answer.status(), Some(400), "{}", answer.0);
    }
    let took = t.elapsed();
    // verde sends a 400 before it counts the refusal: a probe answered later proves both done.
    udp.settle();
    let counted = malformed_count(verde) - malformed_before;
    let dropped = udp_drops(verde.sip) - drops_before;
    assert_eq!(
        counted + dropped,
        sent,
        "each flood datagram is counted as malformed, or was dropped by the kernel ({dropped})"
    );
    report.note(format!(
        "UDP flood: {sent} datagrams of 64 KiB ({} MB) in {:.1} s: 500 answered 400, the rest silence, {counted} counted as malformed, {dropped} dropped by the kernel",
        sent as usize * MAX_DATAGRAM / 1_000_000,
        took.as_secs_f64()
    ));
}

/// Datagrams the kernel dropped on verde's SIP socket (receive buffer full), from
/// `/proc/net/udp` (this network namespace's).
fn udp_drops(sip: SocketAddr) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").expect("read /proc/net/udp");
    let local = format!("0100007F:{:04X}", sip.port());
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&local.as_str()))
        .and_then(|f| f.last().and_then(|d| d.parse().ok()))
        .unwrap_or_else(|| panic!("verde's UDP socket {local} is not in /proc/net/udp"))
}

// ---- TCP ----

/// (c) Messages past the 64 KiB limit: refused and closed at once. One just below is answered.
fn tcp_oversized(verde: &Verde, report: &mut Report) {
    let mut c = Stream::connect(verde.sip, ANSWER);
    let id = "tcp-just-below";
    let head = c.head("OPTIONS", id);
    let msg = padded(head, MAX_TCP_MESSAGE - 100);
    c.send(&msg);
    match c.next(ANSWER) {
        Got::Message(m) => assert_eq!(m.status(), Some(200), "{}", m.0),
        other => panic!(
            "an OPTIONS of {} bytes over TCP must be answered: {other:?}",
            msg.len()
        ),
    }

    type Build = Box<dyn Fn(&Stream) -> Vec<u8>>;
    let cases: [(&str, Build); 2] = [
        (
            "head past the limit",
            Box::new(|c: &Stream| {
                padded(c.head("OPTIONS", "tcp-big-head"), MAX_TCP_MESSAGE + 5000)
            }),
        ),
        (
            "Content-Length past the limit",
            Box::new(|c: &Stream| {
                let mut m = c.head("OPTIONS", "tcp-big-body");
                m.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n");
                m.extend_from_slice(&[b'x'; 2000]);
                m
            }),
        ),
    ];
    for (what, build) in &cases {
        let mut c = Stream::connect(verde.sip, ANSWER);
        let msg = build(&c);
        let t = Instant::now();
        c.send_lossy(&msg);
        let mut answers = Vec::new();
        let closed = loop {
            match c.next(ANSWER) {
                Got::Message(m) => answers.push(m.status().unwrap_or(0)),
                Got::Closed => break Some(t.elapsed()),
                Got::TimedOut => break None,
            }
        };
        let closed = closed
            .unwrap_or_else(|| panic!("TCP message with {what}: verde must close the connection"));
        assert!(
            closed < Duration::from_secs(2),
            "{what}: closed only after {closed:?}"
        );
        report.note(format!(
            "TCP (c) {what}: closed after {} ms, answers before closing: {answers:?}",
            closed.as_millis()
        ));
        // A head that ends within the limit names the request: it is answered before the close.
        // A head that does not end within 64 KiB cannot be read as a request at all (its From,
        // To, CSeq may lie past the cut): closing is all there is to do.
        if *what == "head past the limit" {
            assert!(
                answers.is_empty(),
                "{what}: nothing to answer from, got {answers:?}"
            );
        } else {
            assert!(
                answers.iter().any(|s| *s == 513 || *s == 400),
                "TCP message with {what}: a 513 (or 400) before the close; got {answers:?}"
            );
        }
    }

    // Repeated, for the memory bound: 100 connections of 70 KB each.
    let t = Instant::now();
    for _ in 0..100 {
        let mut c = Stream::connect(verde.sip, ANSWER);
        let msg = padded(c.head("OPTIONS", "tcp-big-repeat"), MAX_TCP_MESSAGE + 5000);
        c.send_lossy(&msg);
        assert!(
            matches!(c.next(ANSWER), Got::Closed),
            "every oversized message closes its connection"
        );
    }
    report.note(format!(
        "TCP (c) 100 more oversized messages, each closed, in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
}

/// (d) 500 idle connections from the trunk's address (trunks are not capped: one carrier may
/// hold many) while a SIPp TCP call and an OPTIONS still get through; and from another
/// address, connections past verde's per-source cap (64) closed at once.
fn tcp_idle_connections(
    verde: &Verde,
    dir: &TestDir,
    pid: u32,
    scen: &std::path::Path,
    report: &mut Report,
) {
    let base = ProcStatus::read(pid);
    let t = Instant::now();
    let idle: Vec<TcpStream> = (0..500)
        .map(|i| {
            TcpStream::connect_timeout(&verde.sip, ANSWER)
                .unwrap_or_else(|e| panic!("idle connection {i} refused: {e}"))
        })
        .collect();
    let accepted = try_wait_for(Duration::from_secs(20), || {
        let fds = ProcStatus::read(pid).fds;
        (fds >= base.fds + 450).then_some(fds)
    });
    let held = ProcStatus::read(pid);
    assert!(
        accepted.is_some(),
        "verde must accept 500 idle connections: descriptors {} -> {}",
        base.fds,
        held.fds
    );
    let mut c = Stream::connect(verde.sip, ANSWER);
    c.send(&c.options("tcp-beside-idle"));
    match c.next(ANSWER) {
        Got::Message(m) => assert_eq!(m.status(), Some(200), "{}", m.0),
        other => panic!("OPTIONS over TCP beside 500 idle connections: {other:?}"),
    }
    let out = Sipp::new(scen, verde.sip)
        .service(INPS)
        .transport(Transport::Tcp)
        .calls(3)
        .timeout(Duration::from_secs(30))
        .run(dir);
    out.assert_success("SIPp TCP calls beside 500 idle connections");
    report.note(format!(
        "TCP (d) 500 idle connections accepted in {:.1} s (verde: {} fds, RSS {} kB, was {} kB); OPTIONS 200 and 3 SIPp TCP calls completed beside them (the trunk is not capped)",
        t.elapsed().as_secs_f64(),
        held.fds,
        held.rss_kb,
        base.rss_kb
    ));
    drop(idle);
    // Not a trunk: the first 64 are kept, the rest closed as soon as accepted.
    let stranger: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let s = socket2_bind_connect("127.0.0.2", verde.sip)?;
            Some(s)
        })
        .collect();
    let mut closed = 0;
    for s in &stranger {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert_eq!(
        (stranger.len(), closed),
        (100, 36),
        "from 127.0.0.2, 64 connections kept and the other 36 closed at once"
    );
    report.note(format!(
        "TCP (d) from a non-trunk address: 100 connections, {closed} closed at once (cap 64)"
    ));
    drop(stranger);
    // Calls start and end meanwhile (two RTP sockets each): a margin, far below 500.
    let released = try_wait_for(Duration::from_secs(10), || {
        let fds = ProcStatus::read(pid).fds;
        (fds <= base.fds + 40).then_some(fds)
    });
    assert!(
        released.is_some(),
        "verde must close its side of 500 connections the peer closed: {} fds before, {} now",
        base.fds,
        ProcStatus::read(pid).fds
    );
}

/// (e) Garbage on a connection: a new connection works, and the same one after a blank line.
fn tcp_garbage(verde: &Verde, report: &mut Report) {
    let malformed_before = malformed_count(verde);
    let mut rng = Rng(42);
    // No CR anywhere: nothing to frame, verde waits for more.
    let garbage: Vec<u8> = rng
        .bytes(5000)
        .into_iter()
        .map(|b| if b == b'\r' { b'.' } else { b })
        .collect();
    let mut a = Stream::connect(verde.sip, ANSWER);
    a.send(&garbage);
    let mut b = Stream::connect(verde.sip, ANSWER);
    b.send(&b.options("tcp-after-garbage"));
    match b.next(ANSWER) {
        Got::Message(m) => assert_eq!(m.status(), Some(200), "{}", m.0),
        other => panic!("OPTIONS on a new connection after garbage: {other:?}"),
    }
    let a_state = match a.next(Duration::from_millis(300)) {
        Got::Closed => "closed",
        Got::TimedOut => "held open (no frame end yet)",
        Got::Message(_) => "answered",
    };

    // Garbage ending in a blank line is one message that cannot be parsed (no answer: nothing
    // names it); the stream is framed again right after it.
    let mut c = Stream::connect(verde.sip, ANSWER);
    let mut msg = b"\x01\x02 junk \xff\xfe\0 more junk\r\n\r\n".to_vec();
    msg.extend_from_slice(&c.options("tcp-same-conn"));
    c.send(&msg);
    match c.next(ANSWER) {
        Got::Message(m) => assert_eq!(
            (m.status(), m.call_id().as_deref()),
            (Some(200), Some("tcp-same-conn")),
            "{}",
            m.0
        ),
        other => panic!("OPTIONS behind garbage on the same connection: {other:?}"),
    }
    // A request missing From: 400 on the stream, which stays usable.
    let mut d = Stream::connect(verde.sip, ANSWER);
    let local = d.local();
    let mut msg = format!(
        "OPTIONS sip:{INPS}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKnofrom\r\nTo: <sip:{INPS}@127.0.0.1>\r\nCall-ID: tcp-no-from\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes();
    msg.extend_from_slice(&d.options("tcp-after-no-from"));
    d.send(&msg);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        match d.next(ANSWER) {
            Got::Message(m) => statuses.push((m.status(), m.call_id())),
            other => panic!("answers to a request without From, then OPTIONS: {other:?}"),
        }
    }
    assert_eq!(
        statuses,
        vec![
            (Some(400), Some("tcp-no-from".to_string())),
            (Some(200), Some("tcp-after-no-from".to_string()))
        ]
    );
    let counted = malformed_count(verde) - malformed_before;
    assert_eq!(
        counted, 2,
        "the junk message and the request without From are counted"
    );
    report.note(format!(
        "TCP (e) 5000 random bytes without a frame end: connection {a_state}, a new connection answered; junk + blank line then OPTIONS on one connection: 200; no From: 400 then 200"
    ));
}

/// (a) A message that stops half-way. The watcher reports when verde closes it.
fn slowloris_partial(
    sip: SocketAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Option<Duration>> {
    let mut c = Stream::connect(sip, ANSWER);
    let mut head = c.head("OPTIONS", "slowloris-partial");
    head.extend_from_slice(b"Subject: and then noth");
    c.send(&head);
    let opened = Instant::now();
    thread::spawn(move || watch_close(c.tcp, opened, &stop, |_| {}))
}

/// (b) A header trickled one byte per 100 ms, never finished.
fn slowloris_trickle(
    sip: SocketAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Option<Duration>)> {
    let c = Stream::connect(sip, ANSWER);
    let head = c.head("OPTIONS", "slowloris-trickle");
    let opened = Instant::now();
    thread::spawn(move || {
        let mut sent = 0usize;
        let mut body = head
            .into_iter()
            .chain(b"X-Slow: ".iter().copied())
            .chain(std::iter::repeat(b'a'));
        let closed = watch_close(c.tcp, opened, &stop, |tcp| {
            let byte = body.next().expect("endless");
            if tcp.write_all(&[byte]).is_ok() {
                sent += 1;
            }
        });
        (sent, closed)
    })
}

/// Reads `tcp` every 100 ms (calling `tick` each time) until verde closes it (returns when) or
/// `stop` is set (`None`).
fn watch_close(
    mut tcp: TcpStream,
    opened: Instant,
    stop: &AtomicBool,
    mut tick: impl FnMut(&mut TcpStream),
) -> Option<Duration> {
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match tcp.read(&mut buf) {
            Ok(0) => return Some(opened.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(opened.elapsed()),
        }
        tick(&mut tcp);
    }
    None
}

fn closed_text(closed: Option<Duration>, held: Duration) -> String {
    match closed {
        Some(d) => format!("closed by verde after {:.1} s", d.as_secs_f64()),
        None => format!("still open after {:.1} s", held.as_secs_f64()),
    }
}

// ---- websockets ----

fn cti_garbage(verde: &Verde, report: &mut Report) {
    let mut ws = ws_open(verde.http, "/cti");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .expect("send binary");
    let e = expect_error(&mut ws, "/cti binary frame");
    assert_eq!(e["code"], "bad_request", "{e}");
    ws.send(Message::text("{\"v\":1,\"type\":"))
        .expect("send text");
    let e = expect_error(&mut ws, "/cti invalid JSON");
    assert_eq!(e["code"], "bad_request", "{e}");
    ws.send(Message::text(format!("\"{}\"", "a".repeat(20 * 1024))))
        .expect("send text");
    let e = expect_error(&mut ws, "/cti 20 KiB text message");
    assert_eq!(e["code"], "bad_request", "{e}");
    health(verde, "after /cti junk");
    report.note(
        "/cti: binary frame, invalid JSON, 20 KiB text: error bad_request each, socket kept".into(),
    );
    one_mib_frame(verde, "/cti", report);
}

fn webrtc_garbage(verde: &Verde, report: &mut Report) {
    let mut ws = ws_open(verde.http, "/webrtc");
    ws.send(Message::text("{not json")).expect("send text");
    let e = expect_error(&mut ws, "/webrtc invalid JSON");
    assert_eq!(e["code"], "bad_request", "{e}");
    ws.send(Message::text("{\"v\":1,\"type\":\"dance\",\"id\":1}"))
        .expect("send text");
    let e = expect_error(&mut ws, "/webrtc unknown command");
    assert_eq!(e["code"], "bad_request", "{e}");
    ws.send(Message::text(format!("\"{}\"", "a".repeat(40 * 1024))))
        .expect("send text");
    let e = expect_error(&mut ws, "/webrtc 40 KiB text message");
    assert_eq!(e["code"], "bad_request", "{e}");
    let how = ws_closed(&mut ws, ANSWER).expect("/webrtc closes after a 40 KiB message");
    report.note(format!(
        "/webrtc: invalid JSON and unknown command: error bad_request, socket kept; 40 KiB text: error bad_request then {how}"
    ));

    let mut ws = ws_open(verde.http, "/webrtc");
    ws.send(Message::binary(vec![0u8; 16]))
        .expect("send binary");
    let how = ws_closed(&mut ws, ANSWER).expect("/webrtc closes on a binary frame");
    report.note(format!("/webrtc binary frame: {how}"));
    report.check("ws-close-frame", how.starts_with("close frame"), || {
        format!("/webrtc binary frame: close 1003 expected; got {how}")
    });
    health(verde, "after /webrtc junk");
    one_mib_frame(verde, "/webrtc", report);
}

/// A 1 MiB frame: announced, 128 KiB of it sent (refused at the header by a server whose frame
/// limit is its message limit), then the rest (refused by any server).
fn one_mib_frame(verde: &Verde, path: &str, report: &mut Report) {
    let mut ws = ws_open(verde.http, path);
    let tcp = ws.get_mut();
    let len = 1 << 20;
    tcp.write_all(&frame_header(0x1, len))
        .expect("frame header");
    tcp.write_all(&vec![b'a'; 128 * 1024])
        .expect("first 128 KiB");
    let early = ws_closed(&mut ws, Duration::from_secs(2));
    report.check("ws-frame-refused-at-header", early.is_some(), || {
        format!("{path}: a frame announcing 1 MiB must be refused before its payload is read; still open after 128 KiB and 2 s")
    });
    let how = match early {
        Some(how) => how,
        None => {
            let t = Instant::now();
            let _ = ws.get_mut().write_all(&vec![b'a'; len - 128 * 1024]);
            let how = ws_closed(&mut ws, ANSWER)
                .unwrap_or_else(|| panic!("{path}: a 1 MiB message must be refused"));
            format!(
                "{how} {} ms after the frame's last byte",
                t.elapsed().as_millis()
            )
        }
    };
    report.note(format!("{path} 1 MiB frame: {how}"));
    report.check(
        "ws-close-frame",
        how.starts_with("close frame 1009"),
        || format!("{path} 1 MiB frame: close 1009 expected; got {how}"),
    );
    health(verde, &format!("after a 1 MiB frame on {path}"));
    // Twenty more of them, for the memory bound.
    for _ in 0..20 {
        let mut ws = ws_open(verde.http, path);
        let _ = ws.get_mut().write_all(&frame_header(0x2, len));
        let _ = ws.get_mut().write_all(&vec![0u8; len]);
        ws_closed(&mut ws, ANSWER).unwrap_or_else(|| panic!("{path}: 1 MiB frame refused"));
    }
}

/// Eight `/cti` connections each holding a 4 MiB frame short of its last byte: what verde keeps
/// for them is what a frame limit equal to the message limit would save.
fn held_partial_frames(verde: &Verde, pid: u32, report: &mut Report) {
    let before = ProcStatus::read(pid);
    let len = 4 << 20;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut ws = ws_open(verde.http, "/cti");
        let tcp = ws.get_mut();
        let _ = tcp.write_all(&frame_header(0x2, len));
        let _ = tcp.write_all(&vec![0u8; len - 1]);
        held.push(ws);
    }
    // What verde has read by now it holds: give it a moment to read the last of it.
    thread::sleep(Duration::from_millis(500));
    let during = ProcStatus::read(pid);
    let mut open = 0;
    for ws in held.iter_mut() {
        if ws_closed(ws, Duration::from_millis(50)).is_none() {
            open += 1;
        }
    }
    let growth = during.rss_kb.saturating_sub(before.rss_kb);
    report.note(format!(
        "/cti 8 frames of 4 MiB held short of their last byte: {open} connections still open, RSS +{growth} kB while held"
    ));
    report.check("ws-frame-refused-at-header", open == 0, || {
        format!("8 frames announcing 4 MiB must be refused at their headers; {open} still open, RSS +{growth} kB")
    });
    drop(held);
    health(verde, "after the held frames");
}

/// 1000 websocket connections opened and closed as fast as possible, half with a close
/// handshake, half dropped; verde's descriptors must come back.
fn rapid_connect_close(verde: &Verde, pid: u32, report: &mut Report) {
    let base = ProcStatus::read(pid);
    let t = Instant::now();
    for i in 0..1000 {
        let path = if i % 2 == 0 { "/cti" } else { "/webrtc" };
        let mut ws = ws_open(verde.http, path);
        if i % 4 < 2 {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
    }
    let took = t.elapsed();
    health(verde, "after 1000 websocket connections");
    // Calls start and end meanwhile (two RTP sockets each): a margin, far below 1000.
    let settled = try_wait_for(Duration::from_secs(10), || {
        let fds = ProcStatus::read(pid).fds;
        (fds <= base.fds + 40).then_some(fds)
    });
    assert!(
        settled.is_some(),
        "verde must release the descriptors of 1000 closed websockets: {} before, {} now",
        base.fds,
        ProcStatus::read(pid).fds
    );
    report.note(format!(
        "1000 websocket connect/close (/cti and /webrtc, half with a close handshake) in {:.1} s; /health 200; descriptors back to {}",
        took.as_secs_f64(),
        ProcStatus::read(pid).fds
    ));
}

/// Opens a `/webrtc` socket, never calls, and reports when and how verde closed it.
fn watch_idle_webrtc(http: SocketAddr) -> thread::JoinHandle<(Duration, String)> {
    let mut ws = ws_open(http, "/webrtc");
    let opened = Instant::now();
    thread::spawn(move || {
        let how = ws_closed(&mut ws, WEBRTC_CALL_WITHIN + Duration::from_secs(10))
            .unwrap_or_else(|| "still open".into());
        (opened.elapsed(), how)
    })
}

fn ws_open(http: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let t = Instant::now();
    let stream = TcpStream::connect_timeout(&http, ANSWER)
        .unwrap_or_else(|e| panic!("cannot connect to verde's HTTP port {http} for {path}: {e}"));
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    let url = format!("ws://{http}{path}");
    let mut attempt = tungstenite::client(url.as_str(), stream);
    let (ws, response) = loop {
        match attempt {
            Ok(done) => break done,
            Err(HandshakeError::Interrupted(mid)) if t.elapsed() < ANSWER => {
                attempt = mid.handshake()
            }
            Err(HandshakeError::Interrupted(_)) => panic!("{url}: handshake timed out"),
            Err(HandshakeError::Failure(e)) => panic!("{url}: handshake failed: {e}"),
        }
    };
    assert_eq!(response.status().as_u16(), 101, "{url}: {response:?}");
    ws
}

/// The first text message, which must be `{"type":"error",...}`.
fn expect_error(ws: &mut WebSocket<TcpStream>, what: &str) -> Value {
    ws.get_mut().set_read_timeout(Some(ANSWER)).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("{what}: answer is not JSON ({e}): {t}"));
                assert_eq!(v["type"], "error", "{what}: an error expected, got {v}");
                return v;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("{what}: an error message expected, got {other:?}"),
            Err(e) => panic!("{what}: an error message expected, got {e}"),
        }
    }
}

/// Waits up to `wait` for verde to end the connection and says how; `None` if still open.
fn ws_closed(ws: &mut WebSocket<TcpStream>, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        ws.get_mut().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                return Some(format!(
                    "close frame {} {:?}",
                    u16::from(f.code),
                    f.reason.as_str()
                ))
            }
            Ok(Message::Close(None)) => return Some("close frame without a code".into()),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return None
            }
            Err(e) => return Some(format!("connection dropped without a close frame ({e})")),
        }
    }
}

/// A masked client frame header (mask 0, so the payload goes as it is).
fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut h = vec![0x80 | opcode, 0x80 | 127];
    h.extend_from_slice(&(len as u64).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

// ---- SIP helpers ----

/// The one final answer carrying `call_id` among `got`, which must hold nothing else.
fn only_final(got: &[Sip], call_id: &str, what: &str) -> u16 {
    let finals: Vec<&Sip> = got
        .iter()
        .filter(|m| m.status().is_some_and(|s| s >= 200))
        .collect();
    assert!(
        finals.len() == 1 && finals[0].call_id().as_deref() == Some(call_id),
        "{what}: exactly one final answer for {call_id:?} expected; got {got:#?}"
    );
    finals[0].status().unwrap()
}

/// `head` (ending in a header line) padded with an `X-Pad` header and a blank line to `len`.
fn padded(mut head: Vec<u8>, len: usize) -> Vec<u8> {
    let fixed = head.len() + "X-Pad: \r\nContent-Length: 0\r\n\r\n".len();
    head.extend_from_slice(b"X-Pad: ");
    head.resize(head.len() + len - fixed, b'p');
    head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    head
}

fn request_head(method: &str, transport: &str, local: &str, call_id: &str, branch: u64) -> Vec<u8> {
    format!(
        "{method} sip:{INPS}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bKhostile{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:0612345678@127.0.0.1>;tag=hostile{branch}\r\nTo: <sip:{INPS}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
    )
    .into_bytes()
}

fn next_branch() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A UDP socket talking to verde; responses come back to it (`rport`).
struct Udp {
    sock: UdpSocket,
    verde: SocketAddr,
    probes: u32,
}

impl Udp {
    fn new(verde: SocketAddr) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        Udp {
            sock,
            verde,
            probes: 0,
        }
    }

    fn local(&self) -> String {
        self.sock.local_addr().unwrap().to_string()
    }

    fn head(&self, method: &str, call_id: &str) -> Vec<u8> {
        request_head(method, "UDP", &self.local(), call_id, next_branch())
    }

    fn send(&self, bytes: &[u8]) {
        self.sock
            .send_to(bytes, self.verde)
            .unwrap_or_else(|e| panic!("send {} bytes to verde: {e}", bytes.len()));
    }

    fn recv(&self, wait: Duration) -> Option<Sip> {
        recv_udp(&self.sock, wait)
    }

    /// The first message satisfying `want` within [`ANSWER`] (others are dropped).
    fn wait(&self, want: impl Fn(&Sip) -> bool) -> Option<Sip> {
        self.wait_for(ANSWER, want)
    }

    fn wait_for(&self, wait: Duration, want: impl Fn(&Sip) -> bool) -> Option<Sip> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.recv(left) {
                Some(m) if want(&m) => return Some(m),
                Some(_) => {}
                None => return None,
            }
        }
    }

    /// Sends an OPTIONS and returns everything received before its 200. Datagrams are handled
    /// in order by one task: once the probe is answered, whatever came before it has been.
    fn settle(&mut self) -> Vec<Sip> {
        self.probes += 1;
        let id = format!("probe-{}", self.probes);
        let mut probe = self.head("OPTIONS", &id);
        probe.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        self.send(&probe);
        let deadline = Instant::now() + ANSWER;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = (!left.is_zero())
                .then(|| self.recv(left))
                .flatten()
                .unwrap_or_else(|| {
                    panic!("verde did not answer the OPTIONS {id} within {ANSWER:?}; before it: {before:#?}")
                });
            if m.call_id().as_deref() == Some(id.as_str()) {
                assert_eq!(m.status(), Some(200), "probe {id}: {}", m.0);
                return before;
            }
            before.push(m);
        }
    }

    /// Sends `bytes`, then a probe; what verde sent in between (retransmissions of the huge
    /// INVITE's answers aside).
    fn exchange(&mut self, bytes: &[u8]) -> Vec<Sip> {
        self.send(bytes);
        self.settle()
            .into_iter()
            .filter(|m| !m.call_id().is_some_and(|c| c.starts_with("huge-invite")))
            .collect()
    }
}

/// Requests written on a TCP connection name it in their Via.
trait TcpRequests {
    fn head(&self, method: &str, call_id: &str) -> Vec<u8>;
    fn options(&self, call_id: &str) -> Vec<u8>;
}

impl TcpRequests for Stream {
    fn head(&self, method: &str, call_id: &str) -> Vec<u8> {
        request_head(method, "TCP", &self.local(), call_id, next_branch())
    }

    fn options(&self, call_id: &str) -> Vec<u8> {
        let mut m = self.head("OPTIONS", call_id);
        m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        m
    }
}

// ---- verde's side ----

fn health(verde: &Verde, when: &str) {
    let r = verde.get("/health");
    assert_eq!(r.status, 200, "/health {when}: {}", r.text());
}

/// `verde_sip_malformed_total` from `/metrics`.
fn malformed_count(verde: &Verde) -> u64 {
    let text = verde.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("verde_sip_malformed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no verde_sip_malformed_total in /metrics:\n{text}"))
}

/// What `/proc/PID` says about verde's memory and descriptors.
#[derive(Debug, Clone, Copy)]
struct ProcStatus {
    rss_kb: u64,
    hwm_kb: u64,
    fds: usize,
    threads: u64,
}

impl ProcStatus {
    fn read(pid: u32) -> ProcStatus {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status (verde gone?): {e}"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"));
        ProcStatus {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            fds,
            threads: field("Threads:"),
        }
    }
}

impl std::fmt::Display for ProcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {} kB (peak {} kB), {} fds, {} threads",
            self.rss_kb, self.hwm_kb, self.fds, self.threads
        )
    }
}

/// Deterministic bytes (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// What each case saw, printed at the end; checks named in [`KNOWN_FINDINGS`] are reported
/// there rather than failing.
struct Report {
    /// The attack's round (notes and findings are taken in the first only); 0 outside them.
    round: u32,
    lines: Vec<String>,
    findings: Vec<String>,
    fixed: Vec<&'static str>,
}

impl Report {
    fn new() -> Report {
        Report {
            round: 0,
            lines: Vec::new(),
            findings: Vec::new(),
            fixed: Vec::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.round <= 1 {
            self.note_always(line);
        }
    }

    fn note_always(&mut self, line: String) {
        eprintln!("hostile_input: {line}");
        self.lines.push(line);
    }

    fn check(&mut self, name: &'static str, ok: bool, what: impl FnOnce() -> String) {
        let known = KNOWN_FINDINGS.contains(&name);
        match (ok, known) {
            (true, false) => {}
            (true, true) => {
                if !self.fixed.contains(&name) {
                    self.fixed.push(name);
                }
            }
            (false, true) if self.round > 1 => {}
            (false, true) => {
                let line = format!("FINDING [{name}]: {}", what());
                eprintln!("hostile_input: {line}");
                self.findings.push(line);
            }
            (false, false) => panic!("{}", what()),
        }
    }

    fn print(&self) {
        eprintln!("---- hostile_input report ----");
        for l in &self.lines {
            eprintln!("  {l}");
        }
        for f in &self.findings {
            eprintln!("  {f}");
        }
        eprintln!("------------------------------");
    }

    /// A known finding whose checks all passed is fixed: it must leave the list so the check
    /// becomes binding.
    fn finish(&self) {
        let fixed: Vec<&&str> = self
            .fixed
            .iter()
            .filter(|n| !self.findings.iter().any(|f| f.contains(&format!("[{n}]"))))
            .collect();
        assert!(
            fixed.is_empty(),
            "these known findings no longer happen: remove them from KNOWN_FINDINGS so their checks bind: {fixed:?}"
        );
    }
}

/// A TCP connection from `local` (an address of lo other than 127.0.0.1) to `to`.
fn socket2_bind_connect(local: &str, to: SocketAddr) -> Option<TcpStream> {
    // std has no bind-before-connect: go through the raw socket calls.
    use std::os::fd::FromRawFd;
    let local: std::net::Ipv4Addr = local.parse().ok()?;
    let SocketAddr::V4(to) = to else { return None };
    // SAFETY: plain socket(2)/bind(2)/connect(2) on a descriptor we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return None;
        }
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let from = sa(local, 0);
        let dest = sa(*to.ip(), to.port());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) != 0
            || libc::connect(fd, &dest as *const _ as *const libc::sockaddr, len) != 0
        {
            libc::close(fd);
            return None;
        }
        Some(TcpStream::from_raw_fd(fd))
    }
}
