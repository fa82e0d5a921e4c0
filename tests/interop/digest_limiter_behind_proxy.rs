//! Behind a proxy (Kamailio) every phone's REGISTER comes from the proxy's address. With
//! `sip.trusted_proxies` naming it, the digest failure limiter counts each phone by the address
//! in its own Via (`received`), so a phone guessing passwords is blocked and the other phones
//! behind the same proxy keep registering. From an address that is not a trusted proxy, the
//! Via is the sender's word and is ignored: a guesser cannot dodge the limiter by varying it.
//!
//! SIPp plays the proxy (127.0.0.1, trusted) and an untrusted relay (127.0.0.3); the phones'
//! addresses exist only in the Via headers.

use std::time::Duration;
use verde_interop::acd::{write_config, OTHER_INPS_QUEUES};
use verde_interop::sipp::{scenario, Sipp, SippOutcome};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const PROXY: &str = "127.0.0.1";
const UNTRUSTED_RELAY: &str = "127.0.0.3";

/// REGISTERs `times` times as `agent`, sent from `from` on behalf of `phone`.
fn register(
    dir: &TestDir,
    verde: &Verde,
    (from, phone): (&str, &str),
    agent: &str,
    password: &str,
    status: &str,
    times: u32,
) -> SippOutcome {
    let sc = scenario(
        dir,
        "uac_register_via_proxy.xml",
        &[
            ("PHONE", phone.to_string()),
            ("AGENT", agent.to_string()),
            ("PASSWORD", password.to_string()),
            ("STATUS", status.to_string()),
        ],
    );
    Sipp::new(&sc, verde.sip)
        .local_ip(from)
        .calls(times)
        .arg("-r")
        .arg("2")
        .timeout(Duration::from_secs(20))
        .run(dir)
}

fn statuses(out: &SippOutcome, code: &str) -> usize {
    out.received_status_lines()
        .iter()
        .filter(|s| s.starts_with(&format!("SIP/2.0 {code}")))
        .count()
}

#[test]
fn a_guessing_phone_behind_the_proxy_is_blocked_alone() {
    require_private_netns();
    let dir = TestDir::new("digest_limiter_behind_proxy");
    let config = write_config(
        &dir,
        &format!(
            "sip:\n\
             \x20 trusted_proxies: [{PROXY}/32]\n\
             agents:\n\
             \x20 - {{ id: \"1001\", name: Anna, password: secret1, queues: [pensions] }}\n\
             \x20 - {{ id: \"1002\", name: Bruno, password: secret2, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );

    // Phone .77 guesses five times through the proxy: five challenges, five 403s, then blocked.
    let guess = register(
        &dir,
        &verde,
        (PROXY, "127.0.0.77"),
        "1001",
        "guess",
        "403",
        5,
    );
    guess.assert_success("five wrong passwords through the proxy, each refused with 403");
    assert_eq!(statuses(&guess, "401"), 5, "each guess is challenged first");
    verde.wait_log("source=127.0.0.77", Duration::from_secs(5));
    let blocked = verde.wait_log("too many authentication failures", Duration::from_secs(5));
    assert!(
        blocked
            .lines()
            .any(|l| l.contains("too many authentication failures") && l.contains("127.0.0.77")),
        "the block must name the phone, not the proxy:\n{blocked}"
    );
    assert!(
        !blocked
            .lines()
            .any(|l| l.contains("too many authentication failures")
                && l.contains("source=127.0.0.1")),
        "the proxy's own address was blocked:\n{blocked}"
    );

    // Another phone behind the same proxy still registers.
    let other = register(
        &dir,
        &verde,
        (PROXY, "127.0.0.78"),
        "1002",
        "secret2",
        "200",
        1,
    );
    other.assert_success("a second phone behind the same proxy, right password");

    // The guessing phone stays blocked, even with the right password: refused at once.
    let again = register(
        &dir,
        &verde,
        (PROXY, "127.0.0.77"),
        "1001",
        "secret1",
        "200",
        1,
    );
    assert_ne!(
        again.exit_code,
        Some(0),
        "a blocked phone registered:\n{}",
        again.report()
    );
    assert!(
        statuses(&again, "403") >= 1 && statuses(&again, "200") == 0,
        "a blocked phone must get 403 and no 200:\n{}",
        again.report()
    );

    // An untrusted relay cannot spread its guesses over made-up Via addresses: the limiter
    // counts its own address, so after five failures its next attempt, whatever Via it
    // writes, is refused.
    for (i, phone) in [
        "127.0.0.90",
        "127.0.0.91",
        "127.0.0.92",
        "127.0.0.93",
        "127.0.0.94",
    ]
    .iter()
    .enumerate()
    {
        let out = register(
            &dir,
            &verde,
            (UNTRUSTED_RELAY, phone),
            "1002",
            "guess",
            "403",
            1,
        );
        out.assert_success(&format!("guess {} from the untrusted relay", i + 1));
    }
    let spoof = register(
        &dir,
        &verde,
        (UNTRUSTED_RELAY, "127.0.0.95"),
        "1002",
        "secret2",
        "200",
        1,
    );
    assert!(
        statuses(&spoof, "200") == 0 && statuses(&spoof, "403") >= 1,
        "a new Via from an untrusted relay dodged the limiter:\n{}",
        spoof.report()
    );
    verde.assert_running();
}
