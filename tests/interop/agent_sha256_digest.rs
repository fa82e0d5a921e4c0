//! SHA-256 digest (RFC 8760) with a real phone: verde is configured to offer only SHA-256
//! (`sip.digest_algorithms: [SHA-256]`), and linphone registers agent 1001 with it.
//!
//! A linphone with a wrong password goes first: it must be challenged with SHA-256 only, answer
//! with SHA-256, get a 403 and never show as registered. Then a linphone with the right password
//! registers; the REGISTER that verde answered 200 must carry `algorithm=SHA-256` and a 256-bit
//! response, as captured on the wire (not as either side logs it). Quitting linphone sends an
//! authenticated un-REGISTER (Expires: 0) that must clear the registration too.

use std::time::Duration;
use verde_interop::acd::{agent, wait_agent, write_config, OTHER_INPS_QUEUES};
use verde_interop::linphone::{Linphone, REGISTRATION_FAILED, REGISTRATION_OK};
use verde_interop::pcap::{read_pcap, Capture, Datagram};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, tail, try_wait_for, TestDir};

const AGENT: &str = "1001";
const PASSWORD: &str = "secret1";

/// One SIP message captured on the wire.
#[derive(Debug, Clone)]
struct SipMsg {
    src_port: u16,
    dst_port: u16,
    first_line: String,
    text: String,
}

impl SipMsg {
    /// Every value of header `name` (case-insensitive), one per header line.
    fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers(name).first().copied().unwrap_or_default()
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line.starts_with(&format!("{method} "))
    }

    fn status(&self) -> Option<u16> {
        self.first_line
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    /// Call-ID and CSeq: what ties a response to its request.
    fn transaction(&self) -> (&str, &str) {
        (self.header("Call-ID"), self.header("CSeq"))
    }
}

fn sip_messages(datagrams: &[Datagram]) -> Vec<SipMsg> {
    datagrams
        .iter()
        .filter_map(|d| {
            let text = String::from_utf8_lossy(&d.payload).replace('\r', "");
            let first_line = text.lines().next()?.to_string();
            (first_line.starts_with("SIP/2.0 ") || first_line.ends_with(" SIP/2.0")).then(|| {
                SipMsg {
                    src_port: d.src.port(),
                    dst_port: d.dst.port(),
                    first_line,
                    text,
                }
            })
        })
        .collect()
}

/// The value of parameter `name` in a Digest header (`algorithm=SHA-256`, `response="..."`).
fn digest_param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let rest = header.trim().strip_prefix("Digest")?;
    rest.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The responses verde sent for the request `req`.
fn responses_to<'a>(msgs: &'a [SipMsg], req: &SipMsg) -> Vec<&'a SipMsg> {
    msgs.iter()
        .filter(|m| {
            m.status().is_some()
                && m.dst_port == req.src_port
                && m.transaction() == req.transaction()
        })
        .collect()
}

/// The REGISTERs with credentials sent from `port` to verde (`verde_port`).
fn authorized_registers(msgs: &[SipMsg], port: u16, verde_port: u16) -> Vec<&SipMsg> {
    msgs.iter()
        .filter(|m| {
            m.src_port == port
                && m.dst_port == verde_port
                && m.is_request("REGISTER")
                && !m.header("Authorization").is_empty()
        })
        .collect()
}

/// Those of [`authorized_registers`] that verde answered 200.
fn accepted_registers(msgs: &[SipMsg], port: u16, verde_port: u16) -> Vec<&SipMsg> {
    authorized_registers(msgs, port, verde_port)
        .into_iter()
        .filter(|r| {
            responses_to(msgs, r)
                .iter()
                .any(|m| m.status() == Some(200))
        })
        .collect()
}

/// A REGISTER that removes the binding rather than making one.
fn is_unregister(r: &SipMsg) -> bool {
    r.header("Expires") == "0" || r.header("Contact").contains("expires=0")
}

fn dump(msgs: &[SipMsg]) -> String {
    msgs.iter()
        .map(|m| format!("{} -> {}\n{}", m.src_port, m.dst_port, m.text))
        .collect::<Vec<_>>()
        .join("\n----\n")
}

#[test]
fn linphone_registers_with_sha256_digest_and_a_wrong_password_is_refused() {
    require_private_netns();
    let dir = TestDir::new("agent_sha256_digest");
    let config = write_config(
        &dir,
        &format!(
            "sip:\n\
             \x20 digest_algorithms: [SHA-256]\n\
             agents:\n\
             \x20 - {{ id: \"{AGENT}\", password: {PASSWORD}, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let registered = || agent(&verde, AGENT)["registered"] == serde_json::json!(true);
    assert!(
        !registered(),
        "agent {AGENT} registered before any phone started"
    );
    let capture = Capture::start(&dir, "sip", &format!("udp and port {}", verde.sip.port()));

    // The wrong password first: a limiter that blocked 127.0.0.1 after it would also refuse the
    // right one below, and the test would show it.
    let mut wrong = Linphone::start(&dir, "wrong-password");
    wrong.register(AGENT, "not-secret1", verde.sip);
    assert_eq!(
        wrong.wait_registration_outcome(Duration::from_secs(10)),
        REGISTRATION_FAILED,
        "linphone with a wrong password; states: {:?}",
        wrong.registration_states()
    );
    let refused = verde.wait_log("digest authentication failed", Duration::from_secs(5));
    assert!(
        refused.contains(&format!("127.0.0.1:{}", wrong.sip_port)),
        "the authentication failure verde logged is not from the wrong-password phone (port {}): \
         {refused}",
        wrong.sip_port
    );
    assert!(
        wrong.refresher_statuses().contains(&403),
        "linphone did not report a 403 for its REGISTER (statuses {:?}); its log:\n{}",
        wrong.refresher_statuses(),
        tail(&wrong.logs(), 40)
    );
    assert!(
        !registered(),
        "a wrong password registered {AGENT}: {}",
        agent(&verde, AGENT)
    );
    // Refused, linphonec asks for another password; it is ended rather than answered.
    wrong.stop();

    let mut phone = Linphone::start(&dir, "right-password");
    phone.register(AGENT, PASSWORD, verde.sip);
    let a = wait_agent(&verde, AGENT, "registered", Duration::from_secs(10), |a| {
        a["registered"] == serde_json::json!(true)
    });
    assert_eq!(
        a["state"], "loggedout",
        "registering is not logging in: {a}"
    );
    assert_eq!(
        phone.wait_registration_outcome(Duration::from_secs(5)),
        REGISTRATION_OK,
        "linphone with the right password; states: {:?}",
        phone.registration_states()
    );
    let status = phone.status_register();
    assert!(
        status.starts_with("registered,") && status.contains(&format!("sip:{AGENT}@")),
        "linphonec's `status register`: {status:?}"
    );
    let logged = verde.wait_log(&format!("registered user={AGENT}"), Duration::from_secs(5));
    assert!(
        logged.contains(&format!("from=127.0.0.1:{}", phone.sip_port)),
        "verde's registration is not linphone's (port {}): {logged}",
        phone.sip_port
    );

    // Quitting unregisters, authenticated the same way.
    phone.quit();
    let cleared = try_wait_for(Duration::from_secs(10), || (!registered()).then_some(()));
    assert!(
        cleared.is_some(),
        "linphone quit but {AGENT} still shows as registered: {}",
        agent(&verde, AGENT)
    );

    // dumpcap hands packets over in blocks and drops the block in progress when it is stopped, so
    // the un-REGISTER just sent could be missing: wait until its 200 is in the file first.
    let _ = try_wait_for(Duration::from_secs(5), || {
        let so_far = sip_messages(&read_pcap(capture.path()).ok()?);
        accepted_registers(&so_far, phone.sip_port, verde.sip.port())
            .iter()
            .any(|r| is_unregister(r))
            .then_some(())
    });
    let msgs = sip_messages(&capture.stop());
    let all = dump(&msgs);
    let verde_port = verde.sip.port();

    // Every challenge offered SHA-256 and nothing else.
    let challenges: Vec<&SipMsg> = msgs
        .iter()
        .filter(|m| m.src_port == verde_port && m.status() == Some(401))
        .collect();
    assert!(
        challenges.len() >= 2,
        "expected a 401 challenge for each phone, got {}:\n{all}",
        challenges.len()
    );
    for c in &challenges {
        let offered = c.headers("WWW-Authenticate");
        assert!(
            !offered.is_empty(),
            "a 401 without WWW-Authenticate:\n{}",
            c.text
        );
        for h in offered {
            assert_eq!(
                digest_param(h, "algorithm")
                    .map(str::to_ascii_uppercase)
                    .as_deref(),
                Some("SHA-256"),
                "verde offered something other than SHA-256: {h}"
            );
        }
    }

    // Each phone's authenticated REGISTERs: all SHA-256, with a 64-hex-digit response.
    let authorized = |port: u16| authorized_registers(&msgs, port, verde_port);
    for port in [wrong.sip_port, phone.sip_port] {
        let regs = authorized(port);
        assert!(
            !regs.is_empty(),
            "no authenticated REGISTER from port {port}:\n{all}"
        );
        for r in regs {
            let auth = r.header("Authorization");
            assert_eq!(
                digest_param(auth, "algorithm")
                    .map(str::to_ascii_uppercase)
                    .as_deref(),
                Some("SHA-256"),
                "a REGISTER from port {port} not answered with SHA-256: {auth}"
            );
            let response = digest_param(auth, "response").unwrap_or_default();
            assert!(
                response.len() == 64 && response.chars().all(|c| c.is_ascii_hexdigit()),
                "a SHA-256 response is 64 hex digits, got {response:?}: {auth}"
            );
        }
    }

    // The wrong password: 403 to its authenticated REGISTER, never a 200 to anything it sent.
    for r in authorized(wrong.sip_port) {
        let statuses: Vec<u16> = responses_to(&msgs, r)
            .iter()
            .filter_map(|m| m.status())
            .collect();
        assert!(
            statuses.contains(&403) && !statuses.contains(&200),
            "the wrong password's REGISTER got {statuses:?}, not a 403:\n{}",
            r.text
        );
    }
    let wrong_200 = msgs
        .iter()
        .filter(|m| m.dst_port == wrong.sip_port && m.status() == Some(200))
        .count();
    assert_eq!(wrong_200, 0, "the wrong-password phone got a 200:\n{all}");

    // The right password: the REGISTER verde bound with a 200 was a SHA-256 one (checked above
    // for all of them), and so was the un-REGISTER it accepted.
    let accepted = accepted_registers(&msgs, phone.sip_port, verde_port);
    assert!(
        accepted.len() >= 2,
        "expected a REGISTER and an un-REGISTER answered 200, got {}:\n{all}",
        accepted.len()
    );
    assert!(
        accepted.iter().any(|r| !is_unregister(r)),
        "no REGISTER that binds was answered 200:\n{all}"
    );
    assert!(
        accepted.iter().any(|r| is_unregister(r)),
        "linphone's un-REGISTER was not answered 200:\n{all}"
    );
    for r in &accepted {
        eprintln!(
            "accepted REGISTER from {} ({}): Authorization: {}",
            r.src_port,
            if is_unregister(r) {
                "unregister"
            } else {
                "register"
            },
            r.header("Authorization")
        );
    }
}
