//! Graceful stop (issue 8): SIGTERM makes verde refuse new calls with `503` and `Retry-After`,
//! answer a proxy's OPTIONS probe with `503` (so Kamailio's dispatcher takes the node out),
//! keep the calls in progress until `shutdown_grace`, then end them with a BYE, write their
//! records and exit 0.

use std::net::UdpSocket;
use std::time::{Duration, Instant};
use verde_interop::acd::write_config;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const INPS: &str = "803164";
const GRACE: Duration = Duration::from_secs(4);

/// Sends an OPTIONS from a socket of ours and returns the status line of the answer.
fn options_status(verde: &Verde) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-drain-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=drain\r\n\
         To: <sip:{sip}>\r\n\
         Call-ID: drain-probe-{n}@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        sip = verde.sip,
        n = std::process::id(),
    );
    sock.send_to(msg.as_bytes(), verde.sip)
        .expect("send OPTIONS");
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to OPTIONS");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().unwrap_or_default().to_string() + "\n" + &text
}

#[test]
fn sigterm_refuses_new_calls_and_lets_calls_in_progress_finish_within_the_grace() {
    require_private_netns();
    let dir = TestDir::new("drain_sigterm");
    let config = write_config(&dir, &format!("shutdown_grace: {}s\n", GRACE.as_secs()));
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let before = options_status(&verde);
    assert!(
        before.starts_with("SIP/2.0 200"),
        "OPTIONS before the stop: {before}"
    );

    // A caller in the IVR that never hangs up by itself.
    let wait = scenario(
        &dir,
        "uac_wait_bye.xml",
        &[
            ("CALLER", "0611000009".to_string()),
            ("WAIT_MS", "30000".to_string()),
        ],
    );
    let in_call = Sipp::new(&wait, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    verde.wait_log("ivr node node=welcome", Duration::from_secs(10));

    // SIGTERM: draining starts.
    // SAFETY: kill(2) on verde's pid, a child of this test that has not been reaped.
    unsafe {
        libc::kill(verde.pid() as libc::pid_t, libc::SIGTERM);
    }
    let stopped_at = Instant::now();
    verde.wait_log("shutting down: refusing new calls", Duration::from_secs(5));

    // A new call is refused with 503 and a Retry-After.
    let refused = scenario(
        &dir,
        "uac_expect_status.xml",
        &[("STATUS", "503".to_string())],
    );
    let out = Sipp::new(&refused, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(10))
        .run(&dir);
    out.assert_success("a call placed while verde drains gets 503");
    let retry_after = out
        .messages
        .lines()
        .any(|l| l.trim().to_ascii_lowercase().starts_with("retry-after:"));
    assert!(
        retry_after,
        "the 503 carries Retry-After:\n{}",
        out.messages
    );

    // The proxy's probe hears the same.
    let during = options_status(&verde);
    assert!(
        during.starts_with("SIP/2.0 503"),
        "OPTIONS while draining: {during}"
    );
    assert!(
        during.to_ascii_lowercase().contains("retry-after:"),
        "the OPTIONS 503 carries Retry-After: {during}"
    );

    // The call in progress lasts until the grace is over, then verde ends it (the caller
    // answers verde's BYE: SIPp exits 0 only then).
    let call_id = in_call.call_id().to_string();
    let out = in_call.wait();
    let ended_after = stopped_at.elapsed();
    out.assert_success("the call in progress is ended by verde at the end of the grace");
    assert!(
        ended_after >= GRACE - Duration::from_millis(500),
        "verde ended the call in progress after {ended_after:?}, before the {GRACE:?} grace"
    );
    let status = verde.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "verde exits 0 after draining, got {status:?}"
    );
    assert!(
        stopped_at.elapsed() < GRACE + Duration::from_secs(10),
        "verde took {:?} to stop with a {GRACE:?} grace",
        stopped_at.elapsed()
    );
    // Its record was written before the exit: read it from a restarted verde on the same data.
    verde.restart(&dir);
    let record = verde.wait_call_record(&call_id, Duration::from_secs(5));
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("shutdown"),
        "{record:#}"
    );
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("engine"),
        "{record:#}"
    );
}
