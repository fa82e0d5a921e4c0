//! SIPp, as a carrier trunk, calls each number of the default configuration over UDP and over
//! TCP and listens: verde must answer with a loopback G.711 SDP, send the flow's first prompt
//! intact at a 20 ms pace from the announced port, and store a record of each call.

use std::time::Duration;
use verde_interop::checks::{check_prompt_stream, SdpAnswer};
use verde_interop::flows::{first_prompts, prompt, DEFAULT_DIDS};
use verde_interop::pcap::Capture;
use verde_interop::sipp::{scenario, Sipp, Transport};
use verde_interop::verde::{field, record_path, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{require_private_netns, TestDir};

#[test]
fn every_default_number_answers_and_plays_its_first_prompt_over_udp_and_tcp() {
    require_private_netns();
    let dir = TestDir::new("sipp_udp_tcp");
    let mut verde = Verde::start(&dir, VerdeOptions::default());
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));

    let mut calls = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        for did in DEFAULT_DIDS {
            let what = format!("call to {did} over {transport:?}");
            let candidates: Vec<(String, Audio)> = first_prompts(did)
                .into_iter()
                .map(|(lang, name)| (format!("{lang}/{name}"), prompt(lang, name)))
                .collect();
            let longest = candidates
                .iter()
                .map(|c| c.1.duration())
                .fold(0.0, f64::max);
            // Long enough to hear the whole first prompt, short enough to end in the next node.
            let listen_ms = (longest * 1000.0) as u64 + 1500;
            let scen = scenario(
                &dir,
                "uac_call.xml",
                &[
                    ("ACTIONS", String::new()),
                    ("LISTEN_MS", listen_ms.to_string()),
                ],
            );
            let out = Sipp::new(&scen, verde.sip)
                .service(did)
                .transport(transport)
                .timeout(Duration::from_millis(listen_ms) + Duration::from_secs(20))
                .run(&dir);
            out.assert_success(&what);
            verde.assert_running();
            calls.push((what, did, out, candidates));
        }
    }
    let datagrams = cap.stop();

    for (what, did, out, candidates) in &calls {
        let sdp = out
            .answer_sdp()
            .unwrap_or_else(|| panic!("{what}: no SDP in verde's 200 OK\n{}", out.report()));
        let answer = SdpAnswer::parse(&sdp);
        answer.assert_loopback_g711(verde.rtp_ports, what);
        let report = check_prompt_stream(&datagrams, &answer, out.media_port, candidates, what);
        eprintln!("{what}: {report:?}");

        let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
        assert_eq!(
            field(&record, "did").as_str(),
            Some(*did),
            "{what}: record {record:#}"
        );
        assert!(
            field(&record, "caller").to_string().contains("0612345678"),
            "{what}: the record's caller is not SIPp's From: {record:#}"
        );
        assert!(
            !field(&record, "answered_at").is_null(),
            "{what}: answered_at missing: {record:#}"
        );
        assert!(
            !field(&record, "ended_at").is_null(),
            "{what}: ended_at missing: {record:#}"
        );
        assert!(
            !record_path(&record).is_empty(),
            "{what}: empty path: {record:#}"
        );
    }
}
