//! SIPp calls the INPS number and presses keys as RFC 4733 events (replaying the pcaps SIPp
//! ships): the call record must show the branch the keys chose and the language picked.

use std::time::Duration;
use verde_interop::flows::{self, INPS, NODE_BENEFITS_QUEUE, NODE_PENSIONS_QUEUE};
use verde_interop::pcap::dtmf_pcaps;
use verde_interop::sipp::{play_pcap_after, scenario, Sipp};
use verde_interop::verde::{assert_record_branch, Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

/// Calls INPS, presses `digits[0]` in the language menu and `digits[1]` in the service menu,
/// then stays until verde hangs up (the queue node plays a hold prompt and ends the call) or
/// `listen` passes. Returns the stored call record.
fn call_and_press(
    dir: &TestDir,
    verde: &Verde,
    digits: &str,
    lang_after: &str,
) -> serde_json::Value {
    let chars: Vec<char> = digits.chars().collect();
    assert_eq!(chars.len(), 2, "one key per menu");
    let pcaps = dtmf_pcaps(dir, digits);
    // Keys are pressed once the menu prompt is playing (menus take keys while they play).
    let first_at = (flows::duration_of(flows::BEFORE_LANGUAGE_MENU) * 1000.0) as u64 + 800;
    let second_at =
        (flows::duration_of(&flows::before_service_menu(lang_after)) * 1000.0) as u64 + 1200;
    let actions = [
        play_pcap_after(first_at, &pcaps[0]),
        play_pcap_after(second_at, &pcaps[1]),
    ]
    .concat()
        + "  <pause milliseconds=\"200\"/>\n";
    let listen_ms = 20_000;
    let scen = scenario(
        dir,
        "uac_call.xml",
        &[("ACTIONS", actions), ("LISTEN_MS", listen_ms.to_string())],
    );
    let out = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(Duration::from_millis(first_at + second_at + listen_ms) + Duration::from_secs(20))
        .run(dir);
    out.assert_success(&format!("call to {INPS} pressing {digits}"));
    verde.wait_call_record(&out.call_id, Duration::from_secs(10))
}

#[test]
fn keys_1_1_choose_italian_and_pensions() {
    require_private_netns();
    let dir = TestDir::new("sipp_dtmf_branch_11");
    let verde = Verde::start(&dir, VerdeOptions::default());
    let record = call_and_press(&dir, &verde, "11", "it");
    assert_record_branch(&record, "keys 1,1", NODE_PENSIONS_QUEUE, "it", "11");
}

#[test]
fn keys_2_2_choose_english_and_benefits() {
    require_private_netns();
    let dir = TestDir::new("sipp_dtmf_branch_22");
    let verde = Verde::start(&dir, VerdeOptions::default());
    let record = call_and_press(&dir, &verde, "22", "en");
    let path = assert_record_branch(&record, "keys 2,2", NODE_BENEFITS_QUEUE, "en", "22");
    assert!(
        !path.iter().any(|n| n == NODE_PENSIONS_QUEUE),
        "keys 2,2 must not reach {NODE_PENSIONS_QUEUE}; path {path:?}"
    );
}
