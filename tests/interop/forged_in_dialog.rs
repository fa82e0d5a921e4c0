//! A stranger who learns a call's Call-ID cannot hang it up (issue 8, security): in-dialog
//! requests reach a call by Call-ID, but only the dialog's tags make them the peer's. Forged
//! BYEs for a live call get `481` and the call goes on: the real caller's own BYE, later, is
//! answered `200` (SIPp fails otherwise), and the record says the caller hung up.

use std::net::UdpSocket;
use std::time::Duration;
use verde_interop::acd::write_config;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const INPS: &str = "803164";

/// Sends a BYE with `call_id` and the given tags from a socket of ours; returns the status.
fn forged_bye(verde: &Verde, call_id: &str, from_tag: &str, to_tag: Option<&str>) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = sock.local_addr().unwrap();
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let msg = format!(
        "BYE sip:{INPS}@{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-forged-{from_tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:0611000010@{local}>;tag={from_tag}\r\n\
         To: <sip:{INPS}@{sip}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 7 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        sip = verde.sip,
    );
    sock.send_to(msg.as_bytes(), verde.sip).expect("send BYE");
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("an answer to the forged BYE");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}

#[test]
fn a_bye_with_foreign_tags_does_not_end_the_call() {
    require_private_netns();
    let dir = TestDir::new("forged_in_dialog");
    let config = write_config(&dir, "queues:\n  - { name: pensions }\n  - { name: benefits }\n  - { name: pin }\n  - { name: operator }\n");
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", "0611000010".to_string()),
            ("ACTIONS", String::new()),
            ("LISTEN_MS", "4000".to_string()),
        ],
    );
    let caller = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(20))
        .spawn(&dir);
    let call_id = caller.call_id().to_string();
    verde.wait_log("ivr node node=welcome", Duration::from_secs(10));

    assert_eq!(
        forged_bye(&verde, &call_id, "stranger1", None),
        481,
        "a BYE with the call's Call-ID but no To tag and a stranger's From tag"
    );
    assert_eq!(
        forged_bye(&verde, &call_id, "stranger2", Some("guessed")),
        481,
        "a BYE with the call's Call-ID and guessed tags"
    );
    verde.wait_log(
        "in-dialog request with tags of no dialog of this call refused",
        Duration::from_secs(5),
    );

    // The call was still up: the caller's own BYE is answered 200 (SIPp exits 0 only then).
    let out = caller.wait();
    out.assert_success("the real caller hangs up after the forged BYEs");
    let record = verde.wait_call_record(&call_id, Duration::from_secs(5));
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("caller"),
        "{record:#}"
    );
}
