//! Checks the harness and the peers without verde: baresip calls a SIPp UAS that streams a
//! known tone; the capture must show SIPp's RTP and baresip's recording must hold the tone. When
//! this fails, the other interop tests' failures say nothing about verde.

use std::time::Duration;
use verde_interop::baresip::{padded_source, Baresip};
use verde_interop::pcap::{gaps_ms, quantile, rtp_stream, Capture};
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::wav::Audio;
use verde_interop::{free_port, free_ports, require_private_netns, TestDir};

#[test]
fn baresip_hears_a_tone_streamed_by_sipp_and_the_capture_sees_it() {
    require_private_netns();
    let dir = TestDir::new("peers_selfcheck");

    // 2 s of 700 Hz as raw µ-law, via the harness's own WAV writer and SIPp's rtp_stream.
    let tone = Audio::tone(8000, 700.0, 2.0, 0.4);
    let ulaw = dir.join("tone.ulaw");
    let table: Vec<(i16, u8)> = (0..=255u8)
        .map(|b| (verde_interop::wav::ulaw_to_linear(b), b))
        .collect();
    let bytes: Vec<u8> = tone
        .samples
        .iter()
        .map(|&s| {
            let v = (s * 32767.0) as i32;
            table
                .iter()
                .min_by_key(|(l, _)| (i32::from(*l) - v).abs())
                .unwrap()
                .1
        })
        .collect();
    std::fs::write(&ulaw, bytes).unwrap();

    let uas_port = free_port();
    let uas_media = free_ports(8);
    let cap = Capture::start(
        &dir,
        "selfcheck",
        &format!("udp and portrange {uas_media}-{}", uas_media + 7),
    );
    let scen = scenario(
        &dir,
        "uas_tone.xml",
        &[
            ("ULAW", ulaw.display().to_string()),
            ("HANGUP_AFTER_MS", "2600".into()),
        ],
    );
    let uas_dir = std::thread::scope(|s| {
        let uas = s.spawn(|| {
            Sipp::new(&scen, "127.0.0.1:9".parse().unwrap())
                .local_port(uas_port)
                .media_port(uas_media)
                .timeout(Duration::from_secs(20))
                .uas()
                .run(&dir)
        });
        let source = padded_source(&dir, 30.0);
        let mut phone = Baresip::start(&dir, "alice", &source);
        // The UAS needs a moment to bind; dialling before that gets ICMP and a retransmission.
        verde_interop::wait_for(
            "SIPp UAS to bind its SIP port",
            Duration::from_secs(10),
            || {
                std::net::UdpSocket::bind(("127.0.0.1", uas_port))
                    .is_err()
                    .then_some(())
            },
        );
        phone.ctrl.dial(&format!("sip:tone@127.0.0.1:{uas_port}"));
        phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(15));
        phone.quit();
        let rec = phone.received_recordings();
        assert_eq!(rec.len(), 1, "baresip recordings: {rec:?}");
        let heard = Audio::load(&rec[0]);
        let out = uas.join().expect("uas thread");
        out.assert_success("SIPp UAS streaming a tone to baresip");
        (heard, out)
    });
    let (heard, _uas) = uas_dir;
    assert!(
        (heard.duration() - 2.0).abs() < 0.3,
        "baresip recorded {:.2} s of a 2 s tone",
        heard.duration()
    );
    let (f, share) = heard.dominant_frequency(200.0, 3400.0, 10.0);
    assert!(
        (f - 700.0).abs() <= 10.0 && share > 0.2,
        "dominant {f} Hz (share {share:.2}), sent 700 Hz"
    );

    let d = cap.stop();
    let rtp: Vec<_> = d.iter().filter(|x| x.src.port() == uas_media).collect();
    assert!(
        (95..=105).contains(&rtp.len()),
        "captured {} RTP packets from SIPp, expected ~100",
        rtp.len()
    );
    let stream = rtp_stream(&d, (uas_media, uas_media), rtp[0].dst.port());
    let times: Vec<f64> = stream.iter().map(|p| p.0).collect();
    let median = quantile(&gaps_ms(&times), 0.5);
    assert!(
        (median - 20.0).abs() < 2.0,
        "SIPp's own pacing median {median} ms"
    );
}
