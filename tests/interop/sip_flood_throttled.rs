//! Per-source flood protection, seen from the wire. While the trunk (127.0.0.1) places calls to
//! 803164 and an agent's phone on another address (127.0.0.3) registers with the right
//! password, three bad sources hit verde at once:
//!
//! * 127.0.0.2 guesses passwords: REGISTER floods at 500/s, each answering the challenge with
//!   a wrong password. It must be silenced after a handful of 403s: few responses out of
//!   thousands of requests, and one `SIP source throttled` line with `reason=auth_failures`.
//! * 127.0.0.4 announces itself as `friendly-scanner` (SIPVicious): it must get no response
//!   at all (`reason=scanner`).
//! * 127.0.0.5 sends garbage: silenced after a few malformed messages (`reason=malformed`).
//!
//! Every trunk call must succeed, the agent's phone must register every time and never be
//! throttled, and `/metrics` must count the dropped packets by reason.

use std::net::UdpSocket;
use std::time::Duration;
use verde_interop::acd::{agent, write_config, OTHER_INPS_QUEUES};
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{free_port, require_private_netns, tail, TestDir};

const TRUNK_CALLS: u32 = 40;
const GUESSER_CALLS: u32 = 3000;
const SCANNER_CALLS: u32 = 300;
const PHONE_REGISTRATIONS: u32 = 6;

fn throttle_lines(log: &str, source: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("SIP source throttled") && l.contains(&format!("source={source} ")))
        .map(str::to_string)
        .collect()
}

/// The value of `verde_sip_throttled_total{reason="..."}` in a Prometheus text scrape.
fn throttled_metric(metrics: &str, reason: &str) -> f64 {
    let prefix = format!("verde_sip_throttled_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn scanners_are_silenced_while_trunk_calls_and_a_phone_get_through() {
    require_private_netns();
    let dir = TestDir::new("sip_flood_throttled");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"1001\", name: Anna, password: secret1, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            rtp_ports: 200,
            ..Default::default()
        },
    );

    let scanner = |ua: &str| {
        scenario(
            &dir,
            "uac_register_scanner.xml",
            &[("USER_AGENT", ua.into())],
        )
    };
    let guesser_xml = scanner("Yealink SIP-T46S 66.86.0.15");
    let scanner_xml = scanner("friendly-scanner");
    let phone_xml = scenario(
        &dir,
        "uac_register.xml",
        &[
            ("AGENT", "1001".into()),
            ("PASSWORD", "secret1".into()),
            ("USER_AGENT", "Yealink SIP-T46S 66.86.0.15".into()),
            ("STATUS", "200".into()),
        ],
    );

    // The floods first, then the legitimate traffic while they run.
    let guesser = Sipp::new(&guesser_xml, verde.sip)
        .local_ip("127.0.0.2")
        .calls(GUESSER_CALLS)
        .arg("-r")
        .arg("500")
        .timeout(Duration::from_secs(30))
        .spawn(&dir);
    let scanner = Sipp::new(&scanner_xml, verde.sip)
        .local_ip("127.0.0.4")
        .calls(SCANNER_CALLS)
        .arg("-r")
        .arg("100")
        .timeout(Duration::from_secs(30))
        .spawn(&dir);
    let garbage = UdpSocket::bind("127.0.0.5:0").expect("bind 127.0.0.5 (lo carries 127/8)");
    garbage
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut garbage_answers = 0;
    let mut buf = [0u8; 2048];
    for i in 0..200 {
        garbage
            .send_to(
                format!("\x16\x03\x01 not sip {i}\r\n\r\n").as_bytes(),
                verde.sip,
            )
            .expect("send garbage");
        if garbage.recv(&mut buf).is_ok() {
            garbage_answers += 1;
        }
    }

    let trunk = scenario(
        &dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let trunk = Sipp::new(&trunk, verde.sip)
        .service(INPS)
        .calls(TRUNK_CALLS)
        .arg("-r")
        .arg("10")
        .timeout(Duration::from_secs(40))
        .spawn(&dir);
    let phone = Sipp::new(&phone_xml, verde.sip)
        .local_ip("127.0.0.3")
        .local_port(free_port())
        .calls(PHONE_REGISTRATIONS)
        .arg("-r")
        .arg("2")
        .timeout(Duration::from_secs(30))
        .spawn(&dir);

    let trunk = trunk.wait();
    let phone = phone.wait();
    let guesser = guesser.wait();
    let scanner = scanner.wait();
    let log = verde.logs();

    // Legitimate traffic: every call and every registration went through.
    trunk.assert_success(&format!(
        "{TRUNK_CALLS} trunk calls to {INPS} during the flood (all must succeed)"
    ));
    let answered = trunk
        .received_status_lines()
        .iter()
        .filter(|s| s.starts_with("SIP/2.0 200"))
        .count();
    assert!(
        answered >= TRUNK_CALLS as usize,
        "only {answered} of {TRUNK_CALLS} trunk calls were answered"
    );
    phone.assert_success(&format!(
        "{PHONE_REGISTRATIONS} registrations of agent 1001's phone from 127.0.0.3"
    ));
    assert_eq!(
        agent(&verde, "1001")["registered"],
        true,
        "agent 1001's phone registered from 127.0.0.3"
    );
    for legit in ["127.0.0.1", "127.0.0.3"] {
        let lines = throttle_lines(&log, legit);
        assert!(lines.is_empty(), "{legit} was throttled: {lines:#?}");
    }

    // The password guesser: silenced after a few 403s, logged once.
    let sent = guesser.messages.matches("UDP message sent").count();
    let answers = guesser.received_status_lines();
    assert!(
        sent >= GUESSER_CALLS as usize,
        "the guesser sent only {sent} REGISTERs\n{}",
        guesser.report()
    );
    let refused = answers
        .iter()
        .filter(|s| s.starts_with("SIP/2.0 403"))
        .count();
    assert!(
        (1..=20).contains(&refused) && answers.len() <= 40,
        "the guesser should get a few 403s, then silence; it got {} responses ({refused} 403) to {sent} REGISTERs",
        answers.len()
    );
    let lines = throttle_lines(&log, "127.0.0.2");
    assert!(
        lines.len() == 1 && lines[0].contains("reason=auth_failures"),
        "expected one throttle line for 127.0.0.2 (reason auth_failures) during a {}-s flood: {lines:#?}\n{}",
        guesser.elapsed.as_secs(),
        tail(&log, 40)
    );

    // The announced scanner: no response at all.
    let scanner_sent = scanner.messages.matches("UDP message sent").count();
    let scanner_answers = scanner.received_status_lines();
    assert!(
        scanner_sent >= SCANNER_CALLS as usize && scanner_answers.is_empty(),
        "friendly-scanner sent {scanner_sent} REGISTERs and got {scanner_answers:?}"
    );
    let lines = throttle_lines(&log, "127.0.0.4");
    assert!(
        lines.len() == 1 && lines[0].contains("reason=scanner"),
        "expected one throttle line for 127.0.0.4 (scanner): {lines:#?}"
    );

    // The garbage sender: nothing answered, silenced as malformed.
    assert_eq!(garbage_answers, 0, "garbage must never be answered");
    let lines = throttle_lines(&log, "127.0.0.5");
    assert!(
        lines.len() == 1 && lines[0].contains("reason=malformed"),
        "expected one throttle line for 127.0.0.5 (malformed): {lines:#?}"
    );
    let malformed_logged = log
        .lines()
        .filter(|l| l.contains("malformed SIP message refused") && l.contains("127.0.0.5"))
        .count();
    assert!(
        malformed_logged <= 10,
        "{malformed_logged} malformed messages from 127.0.0.5 reached the parser; the box should stop them at 10"
    );

    // Dropped packets are counted by reason.
    let metrics = verde.get("/metrics").text();
    for (reason, at_least) in [
        ("auth_failures", (sent / 2) as f64),
        ("scanner", SCANNER_CALLS as f64),
        ("malformed", 150.0),
    ] {
        let n = throttled_metric(&metrics, reason);
        assert!(
            n >= at_least,
            "verde_sip_throttled_total{{reason=\"{reason}\"}} is {n}, expected at least {at_least}"
        );
    }
    assert_eq!(throttled_metric(&metrics, "register_rate"), 0.0);
}
