//! Only configured trunks may call: the default configuration trusts 127.0.0.1/32, so an INVITE
//! from 127.0.0.2 (also on lo) must get 403 Forbidden, and a call from 127.0.0.1 right after
//! must still go through.

use std::time::Duration;
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

#[test]
fn untrusted_source_gets_403_and_trusted_one_gets_through() {
    require_private_netns();
    let dir = TestDir::new("acl_forbidden");
    let mut verde = Verde::start(&dir, VerdeOptions::default());

    let forbidden = scenario(&dir, "uac_expect_status.xml", &[("STATUS", "403".into())]);
    let out = Sipp::new(&forbidden, verde.sip)
        .service(INPS)
        .local_ip("127.0.0.2")
        .timeout(Duration::from_secs(15))
        .run(&dir);
    out.assert_success("INVITE from 127.0.0.2 expecting 403");
    let statuses = out.received_status_lines();
    assert!(
        statuses.iter().any(|s| s.starts_with("SIP/2.0 403")),
        "no 403 among {statuses:?}"
    );
    assert!(
        !statuses
            .iter()
            .any(|s| s.starts_with("SIP/2.0 18") || s.starts_with("SIP/2.0 2")),
        "an untrusted INVITE must not ring or be answered: {statuses:?}"
    );
    verde.assert_running();

    let ok = scenario(
        &dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let out = Sipp::new(&ok, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(20))
        .run(&dir);
    out.assert_success("call from 127.0.0.1 after the refused one");
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(record["did"].as_str(), Some(INPS), "record {record:#}");
}
