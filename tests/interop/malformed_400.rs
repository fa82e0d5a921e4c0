//! Garbage on the SIP port must not hurt verde: a request it cannot parse but can answer gets
//! a stateless 400 that echoes Via/Call-ID, anything else is dropped, and afterwards a normal
//! call still works. A number nobody serves gets 404.

use std::net::UdpSocket;
use std::time::Duration;
use verde_interop::flows::{INPS, UNKNOWN_DID};
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

fn request(
    first_line: &str,
    sock: &UdpSocket,
    verde_port: u16,
    branch: &str,
    cseq: Option<&str>,
    extra: &str,
) -> String {
    let local = sock.local_addr().unwrap();
    let mut m = format!(
        "{first_line}\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:0612345678@127.0.0.1>;tag=bad{branch}\r\n\
         To: <sip:{INPS}@127.0.0.1:{verde_port}>\r\n\
         Call-ID: malformed-{branch}@127.0.0.1\r\n"
    );
    if let Some(c) = cseq {
        m.push_str(&format!("CSeq: {c}\r\n"));
    }
    m.push_str(extra);
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// Sends `msg` and returns the first response, or `None` after `wait`.
fn exchange(
    sock: &UdpSocket,
    to: std::net::SocketAddr,
    msg: &[u8],
    wait: Duration,
) -> Option<String> {
    sock.send_to(msg, to).expect("send to verde");
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Sends `msg` and checks the answer is a 400 echoing its Call-ID and Via branch.
fn expect_400(sock: &UdpSocket, to: std::net::SocketAddr, msg: &str) -> Result<(), String> {
    let resp = exchange(sock, to, msg.as_bytes(), Duration::from_secs(5))
        .ok_or_else(|| format!("no response within 5 s to:\n{msg}"))?;
    if !resp.starts_with("SIP/2.0 400") {
        return Err(format!("expected SIP/2.0 400, got:\n{resp}"));
    }
    let call_id = msg
        .lines()
        .find(|l| l.starts_with("Call-ID:"))
        .expect("request has a Call-ID");
    if !resp.contains(call_id.trim()) {
        return Err(format!("the 400 does not echo {call_id:?}:\n{resp}"));
    }
    let via = msg
        .lines()
        .find(|l| l.starts_with("Via:"))
        .expect("request has a Via");
    let branch = via
        .split("branch=")
        .nth(1)
        .and_then(|b| b.split(';').next())
        .unwrap_or_default();
    if !resp.contains(branch) {
        return Err(format!(
            "the 400 does not echo the Via branch {branch}:\n{resp}"
        ));
    }
    Ok(())
}

#[test]
fn malformed_requests_get_400_and_verde_keeps_serving() {
    require_private_netns();
    let dir = TestDir::new("malformed_400");
    let mut verde = Verde::start(&dir, VerdeOptions::default());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = verde.sip.port();

    let cases = [
        (
            "no Request-URI",
            request("INVITE SIP/2.0", &sock, port, "nouri", Some("1 INVITE"), ""),
        ),
        (
            "non-numeric CSeq",
            request(
                &format!("INVITE sip:{INPS}@127.0.0.1:{port} SIP/2.0"),
                &sock,
                port,
                "badcseq",
                Some("one INVITE"),
                "",
            ),
        ),
        (
            "header line without a colon",
            request(
                &format!("INVITE sip:{INPS}@127.0.0.1:{port} SIP/2.0"),
                &sock,
                port,
                "nocolon",
                Some("1 INVITE"),
                "This is not a header\r\n",
            ),
        ),
    ];
    // Every case is tried before failing, so one run shows which malformations verde answers.
    let mut failures = Vec::new();
    for (what, msg) in &cases {
        if let Err(e) = expect_400(&sock, verde.sip, msg) {
            failures.push(format!("{what}: {e}"));
        }
        verde.assert_running();
    }

    // Nothing a response could be built from (no CSeq, then binary noise): dropped or 400,
    // never a crash.
    let no_cseq = request(
        &format!("INVITE sip:{INPS}@127.0.0.1:{port} SIP/2.0"),
        &sock,
        port,
        "nocseq",
        None,
        "",
    );
    if let Some(resp) = exchange(
        &sock,
        verde.sip,
        no_cseq.as_bytes(),
        Duration::from_millis(500),
    ) {
        assert!(
            resp.starts_with("SIP/2.0 400"),
            "INVITE without CSeq answered with:\n{resp}"
        );
    }
    let noise: Vec<u8> = (0..1500u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    sock.send_to(&noise, verde.sip).unwrap();
    sock.send_to(b"\r\n\r\n", verde.sip).unwrap();
    let health = verde.get("/health");
    assert_eq!(
        health.status,
        200,
        "verde unhealthy after garbage: {}",
        health.text()
    );
    verde.assert_running();

    let call = scenario(
        &dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let out = Sipp::new(&call, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(20))
        .run(&dir);
    out.assert_success("a normal call after malformed requests");
    verde.wait_call_record(&out.call_id, Duration::from_secs(10));

    assert!(
        failures.is_empty(),
        "malformed requests not answered 400:\n{}",
        failures.join("\n\n")
    );

    let not_found = scenario(&dir, "uac_expect_status.xml", &[("STATUS", "404".into())]);
    let out = Sipp::new(&not_found, verde.sip)
        .service(UNKNOWN_DID)
        .timeout(Duration::from_secs(15))
        .run(&dir);
    out.assert_success(&format!(
        "INVITE to {UNKNOWN_DID}, which no flow serves, expecting 404"
    ));
    verde.assert_running();
}
