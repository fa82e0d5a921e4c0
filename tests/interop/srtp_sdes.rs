//! SRTP keyed by SDES (RFC 4568) on SIP legs, with real peers.
//!
//! 1. A baresip caller with `mediaenc=srtp-mand` calls the INPS number from the trunk address:
//!    verde must answer `RTP/SAVP` with a crypto suite, baresip must hear the welcome prompt
//!    (decrypted by baresip, so the keys agree both ways), its RFC 4733 keys (inside SRTP)
//!    must take the call down the pensions branch, and the capture must show that what verde
//!    put on the wire is *not* the prompt: each packet carries the suite's auth tag and its
//!    payload, read as μ-law, does not follow the prompt's envelope.
//! 3. Offers verde cannot take get 488: `RTP/SAVP` with only suites it does not implement, and
//!    (with `media.srtp: require`) a plain `RTP/AVP` offer.
//! 2. An agent whose account says `srtp: mandatory` answers on baresip (SRTP) a plain SIPp
//!    caller: verde offers `RTP/SAVP` to the phone, and audio goes both ways through the
//!    bridge (decrypted on one leg, re-encrypted or sent plain on the other); the queue's
//!    recording holds both voices, so it sees decrypted audio.
//!
//! baresip's test configuration does not load its `srtp` module; the test loads it through
//! ctrl_tcp (`insmod`) and adds an account with `mediaenc=srtp-mand` (`uanew`), so the shared
//! fixtures stay as they are.

use serde_json::json;
use std::time::{Duration, Instant};
use verde_interop::acd::{wait_agent_registered, wait_agent_state, write_config};
use verde_interop::baresip::{padded_source, AgentAccount, Baresip};
use verde_interop::cti::Cti;
use verde_interop::flows::{self, INPS, NODE_PENSIONS_QUEUE};
use verde_interop::media_checks::{
    tone_dbfs, verde_direct_queue, RtpByPeer, StereoWav, PRESENT_DBFS,
};
use verde_interop::pcap::{audio_pcap_after_dtmf, parse_rtp, Capture, Datagram};
use verde_interop::sipp::{play_pcap_after, scenario, Sipp, SippOutcome};
use verde_interop::verde::{assert_record_branch, field, Verde, VerdeOptions};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{require_private_netns, TestDir};

const AGENT: &str = "1001";
const AGENT_PASSWORD: &str = "secret1";
/// `tests/fixtures/flows-direct-queue/`: straight to pensions.
const DID_PENSIONS: &str = "800500001";
const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;

/// Loads baresip's srtp module and adds (and selects, for `dial`) an account `line` that
/// insists on SDES-SRTP.
fn add_srtp_account(phone: &mut Baresip, line: &str) {
    let loaded = phone.ctrl.command("insmod", "srtp.so");
    assert!(
        loaded.to_string().contains("srtp"),
        "baresip did not load srtp.so: {loaded}"
    );
    let line = format!("{line};mediaenc=srtp-mand");
    phone.ctrl.command("uanew", &line);
    let aor = line
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_string();
    phone.ctrl.command("uafind", &aor);
}

/// The auth tag length of a suite name as verde logs it.
fn tag_len(suite: &str) -> usize {
    if suite.ends_with("_32") || suite.ends_with("Sha1_32") {
        4
    } else {
        10
    }
}

/// Payloads of the packets verde sent (source port in its RTP range) with payload type 0 to
/// the peer ports `to` selects.
fn pcmu_from_verde(
    datagrams: &[Datagram],
    verde: &Verde,
    to: impl Fn(u16) -> bool,
) -> Vec<Vec<u8>> {
    let (lo, hi) = verde.rtp_ports;
    datagrams
        .iter()
        .filter(|d| (lo..=hi).contains(&d.src.port()) && !(lo..=hi).contains(&d.dst.port()))
        .filter(|d| to(d.dst.port()))
        .filter_map(|d| parse_rtp(&d.payload))
        .filter(|r| r.payload_type == 0)
        .map(|r| r.payload)
        .collect()
}

#[test]
fn baresip_srtp_caller_hears_the_prompt_and_its_keys_branch() {
    require_private_netns();
    let dir = TestDir::new("srtp_sdes_caller");
    let verde = Verde::start(&dir, VerdeOptions::default());
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));
    let (lang, name) = flows::first_prompts(INPS)[0];
    let welcome = flows::prompt(lang, name);

    let source = padded_source(&dir, 120.0);
    let mut phone = Baresip::start(&dir, "plain", &source);
    let line = format!(
        "<sip:alice-srtp@127.0.0.1:{}>;regint=0;answermode=manual;audio_codecs=PCMU",
        phone.sip_port
    );
    add_srtp_account(&mut phone, &line);
    phone.ctrl.dial(&format!("sip:{INPS}@{}", verde.sip));
    phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    let established = Instant::now();
    let menc = phone.ctrl.wait_event("CALL_MENC", Duration::from_secs(5));
    let baresip_suite = menc["param"].as_str().unwrap_or_default().to_string();
    assert!(
        baresip_suite.contains("AES_CM_128_HMAC_SHA1_"),
        "baresip reports no SDES suite for the call: {menc}"
    );
    let negotiated = verde.wait_log("media negotiated", Duration::from_secs(5));
    assert!(
        negotiated.contains("srtp=Some(AesCm128HmacSha1_"),
        "verde did not answer with SRTP: {negotiated}"
    );
    let verde_suite = if negotiated.contains("AesCm128HmacSha1_32") {
        "AES_CM_128_HMAC_SHA1_32"
    } else {
        "AES_CM_128_HMAC_SHA1_80"
    };
    assert!(
        baresip_suite.ends_with(verde_suite),
        "verde logged {verde_suite}, baresip uses {baresip_suite}"
    );

    let until = |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    until(
        established
            + Duration::from_secs_f64(flows::duration_of(flows::BEFORE_LANGUAGE_MENU))
            + Duration::from_millis(800),
    );
    phone.ctrl.sndcode('1');
    until(
        Instant::now()
            + Duration::from_secs_f64(flows::duration_of(&flows::before_service_menu("it")))
            + Duration::from_millis(1200),
    );
    phone.ctrl.sndcode('1');
    if verde_interop::try_wait_for(Duration::from_secs(20), || {
        phone.ctrl.seen_event("CALL_CLOSED").then_some(())
    })
    .is_none()
    {
        phone.ctrl.hangup();
        phone.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(5));
    }
    phone.quit();
    let datagrams = cap.stop();

    // baresip decrypted the prompt.
    let recordings = phone.received_recordings();
    assert_eq!(
        recordings.len(),
        1,
        "one recording expected: {recordings:?}"
    );
    let heard = Audio::load(&recordings[0]);
    let window = heard.slice(0.0, welcome.duration() + 1.0);
    let (corr, lag) = envelope_correlation(&window, &welcome, 20, 1000);
    eprintln!("baresip heard {lang}/{name}: envelope correlation {corr:.3} at {lag} ms");
    assert!(
        corr > 0.8,
        "what baresip decrypted does not match {lang}/{name}.wav: correlation {corr:.3} (lag \
         {lag} ms); recording {}",
        recordings[0].display()
    );

    // On the wire: SRTP, not the prompt.
    let sent = pcmu_from_verde(&datagrams, &verde, |_| true);
    assert!(
        sent.len() as f64 >= welcome.duration() * 50.0 * 0.9,
        "the capture holds only {} RTP packets from verde",
        sent.len()
    );
    let want = 160 + tag_len(verde_suite);
    let wrong: Vec<usize> = sent.iter().map(Vec::len).filter(|&l| l != want).collect();
    assert!(
        wrong.is_empty(),
        "every packet must carry 160 encrypted bytes and the {verde_suite} tag ({want} bytes); \
         {} of {} do not, e.g. {:?}",
        wrong.len(),
        sent.len(),
        &wrong[..wrong.len().min(5)]
    );
    let as_ulaw = Audio::from_g711(0, sent.iter().map(|p| &p[..160]));
    let (wire_corr, _) = envelope_correlation(
        &as_ulaw.slice(0.0, welcome.duration() + 1.0),
        &welcome,
        20,
        1000,
    );
    eprintln!("the wire payload read as μ-law against the prompt: correlation {wire_corr:.3}");
    assert!(
        wire_corr < 0.5,
        "verde's RTP payload decodes as the prompt (correlation {wire_corr:.3}): not encrypted"
    );
    assert!(
        !verde.logs().contains("inline:"),
        "verde's log shows an SDES key line"
    );

    let record = verde.wait_record_by_caller("alice-srtp", INPS);
    assert_record_branch(
        &record,
        "baresip pressed 1, 1 inside SRTP",
        NODE_PENSIONS_QUEUE,
        "it",
        "11",
    );
}

#[test]
fn srtp_mandatory_agent_talks_with_a_plain_sipp_caller() {
    require_private_netns();
    let dir = TestDir::new("srtp_sdes_agent");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {AGENT_PASSWORD}, queues: [pensions], srtp: mandatory }}\n\
             queues:\n\
             \x20 - {{ name: pensions, ring_timeout: 10s, wrap_up: 1s, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             \x20 - {{ name: operator }}\n\
             recording:\n\
             \x20 queues:\n\
             \x20   pensions: {{ mode: all }}\n"
        ),
    );
    let (verde, cap) = verde_direct_queue(&dir, config);
    let voice = dir.join("anna-voice.wav");
    Audio::tone(8000, AGENT_HZ, 150.0, 0.3).save(&voice);
    let mut anna = Baresip::start(&dir, "anna", &voice);
    add_srtp_account(
        &mut anna,
        &AgentAccount::new(AGENT, AGENT_PASSWORD, verde.sip).line(),
    );
    wait_agent_registered(&verde, AGENT, Duration::from_secs(10));
    let mut bar = Cti::connect(verde.http);
    bar.login(AGENT, AGENT_PASSWORD);
    bar.cmd_ok(json!({"type": "set_state", "state": "ready"}));
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(5));

    // The caller talks (440 Hz) for 9 s from 0.5 s after the answer, then listens 1 s more.
    let talk = Audio::tone(8000, CALLER_HZ, 9.0, 0.3);
    let pcap = audio_pcap_after_dtmf(&dir, "caller-talk", &talk, 0);
    let actions = [
        play_pcap_after(500, &pcap),
        "  <pause milliseconds=\"9000\"/>\n".to_string(),
    ]
    .concat();
    let scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", "3331234567".to_string()),
            ("ACTIONS", actions),
            ("LISTEN_MS", "1000".to_string()),
        ],
    );
    let caller = Sipp::new(&scen, verde.sip)
        .service(DID_PENSIONS)
        .timeout(Duration::from_secs(30))
        .run(&dir);
    caller.assert_success("plain caller bridged to an SRTP agent");

    let menc = anna.ctrl.wait_event("CALL_MENC", Duration::from_secs(5));
    assert!(
        menc["param"]
            .as_str()
            .is_some_and(|p| p.contains("AES_CM_128_HMAC_SHA1_")),
        "the agent's phone reports no SDES suite: {menc}"
    );
    let srtp_line = verde.wait_log("agent leg media is SRTP", Duration::from_secs(5));
    eprintln!("{srtp_line}");
    if !anna.ctrl.seen_event("CALL_CLOSED") {
        anna.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10));
    }
    anna.quit();
    let datagrams = cap.stop();

    // The caller (plain RTP on the wire) heard the agent's tone, decrypted by verde.
    let rtp = RtpByPeer::new(&datagrams, verde.rtp_ports);
    let caller_ports = rtp.ports_sending(CALLER_HZ);
    assert!(
        !caller_ports.is_empty(),
        "no RTP to verde carries the caller's {CALLER_HZ} Hz tone in clear: {}",
        rtp.summary()
    );
    let to_caller = rtp.heard(&caller_ports, 0.0, f64::MAX);
    let agent_at_caller = tone_dbfs(&to_caller, AGENT_HZ);
    eprintln!(
        "the caller got {:.1} s with the agent at {agent_at_caller:.1} dBFS",
        to_caller.duration()
    );
    assert!(
        agent_at_caller >= PRESENT_DBFS,
        "the plain caller should hear the SRTP agent ({AGENT_HZ} Hz): {agent_at_caller:.1} dBFS"
    );

    // The agent heard the caller: baresip decrypted verde's re-encrypted relay.
    let recs = anna.received_recordings();
    assert_eq!(recs.len(), 1, "one call on the agent's phone: {recs:?}");
    let at_agent = Audio::load(&recs[0]);
    let caller_at_agent = tone_dbfs(&at_agent, CALLER_HZ);
    eprintln!("the agent heard the caller at {caller_at_agent:.1} dBFS");
    assert!(
        caller_at_agent >= PRESENT_DBFS,
        "the SRTP agent should hear the plain caller ({CALLER_HZ} Hz): {caller_at_agent:.1} dBFS"
    );

    // What verde sent the agent is SRTP: payload + tag, never the caller's tone in clear.
    let suite = if srtp_line.contains("_32") {
        "AES_CM_128_HMAC_SHA1_32"
    } else {
        "AES_CM_128_HMAC_SHA1_80"
    };
    let to_agent = pcmu_from_verde(&datagrams, &verde, |p| !caller_ports.contains(&p));
    assert!(
        to_agent.len() > 100,
        "too few SRTP packets from verde to the agent: {}",
        to_agent.len()
    );
    assert!(
        to_agent.iter().all(|p| p.len() == 160 + tag_len(suite)),
        "packets to the agent must be 160 bytes + the {suite} tag"
    );
    let plain_to_caller = pcmu_from_verde(&datagrams, &verde, |p| caller_ports.contains(&p));
    assert!(
        !plain_to_caller.is_empty() && plain_to_caller.iter().all(|p| p.len() == 160),
        "the caller's leg is plain RTP: 160-byte payloads only"
    );

    // The queue's recording got both voices in clear.
    let record = verde.wait_call_record(&caller.call_id, Duration::from_secs(10));
    let file = field(&record, "recordings")[0]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording on the call record: {record:#}"))
        .to_string();
    let wav = StereoWav::load(&verde.data_dir.join("recordings").join(&file));
    let (left, right) = (
        tone_dbfs(&wav.left, CALLER_HZ),
        tone_dbfs(&wav.right, AGENT_HZ),
    );
    eprintln!("recording {file}: caller {left:.1} dBFS left, agent {right:.1} dBFS right");
    assert!(
        left >= PRESENT_DBFS && right >= PRESENT_DBFS,
        "the recording must hold the caller ({left:.1} dBFS) and the SRTP agent ({right:.1} dBFS)"
    );
}

/// An INVITE to INPS from the trunk address offering `m=audio ... {proto}` with `crypto`
/// attribute lines, which must be refused with 488.
fn expect_488(dir: &TestDir, verde: &Verde, name: &str, proto: &str, crypto: &str) -> SippOutcome {
    let path = scenario(dir, "uac_expect_status.xml", &[("STATUS", "488".into())]);
    let xml = std::fs::read_to_string(&path).expect("read scenario");
    let xml = xml
        .replace("RTP/AVP 0 101", &format!("{proto} 0 101"))
        .replace("a=sendrecv\n", &format!("a=sendrecv\n{crypto}"));
    assert!(xml.contains(proto), "the scenario template changed: {xml}");
    let own = dir.join(format!("{name}.xml"));
    std::fs::write(&own, xml).expect("write scenario");
    let out = Sipp::new(&own, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(20))
        .run(dir);
    out.assert_success(name);
    out
}

#[test]
fn offers_verde_cannot_take_get_488() {
    require_private_netns();
    let dir = TestDir::new("srtp_sdes_488");
    let key = "      a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcyQjZFNndkOGVnQnBUS0xLQ3hkcVBXa1NQ\n";
    let unsupported = "      a=crypto:1 AES_256_CM_HMAC_SHA1_80 \
         inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyBzcGFjZTEyMzQ1Njc4OTA=\n\
         \x20     a=crypto:2 F8_128_HMAC_SHA1_80 inline:d0RmdmcyQjZFNndkOGVnQnBUS0xLQ3hkcVBXa1NQ\n";

    // Default policy (accept): SRTP is welcome, but only with a suite verde implements.
    let verde = Verde::start(&dir, VerdeOptions::default());
    expect_488(&dir, &verde, "savp-unsupported", "RTP/SAVP", unsupported);
    let line = verde.wait_log("refused: SDP offer not acceptable", Duration::from_secs(5));
    assert!(
        line.contains("no supported SRTP crypto suite"),
        "verde's refusal names another reason: {line}"
    );
    drop(verde);

    // `require`: a plain offer is refused; the same offer with a usable key is not.
    let config = write_config(&dir, "media:\n  srtp: require\n");
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    expect_488(&dir, &verde, "avp-required", "RTP/AVP", "");
    let line = verde.wait_log("refused: SDP offer not acceptable", Duration::from_secs(5));
    assert!(
        line.contains("SRTP required"),
        "verde's refusal names another reason: {line}"
    );
    let accepted = scenario(&dir, "uac_expect_status.xml", &[("STATUS", "200".into())]);
    let xml = std::fs::read_to_string(&accepted)
        .expect("read scenario")
        .replace("RTP/AVP 0 101", "RTP/SAVP 0 101")
        .replace("a=sendrecv\n", &format!("a=sendrecv\n{key}"));
    std::fs::write(&accepted, xml).expect("write scenario");
    let out = Sipp::new(&accepted, verde.sip)
        .service(INPS)
        .timeout(Duration::from_secs(20))
        .run(&dir);
    let statuses = out.received_status_lines();
    assert!(
        statuses.iter().any(|l| l.contains(" 200 ")),
        "an SRTP offer with a usable key must be answered 200 under `require`: {statuses:?}\n{}",
        out.report()
    );
    let answer = out.answer_sdp().unwrap_or_default();
    assert!(
        answer.contains("RTP/SAVP")
            && answer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "verde's answer: {answer}"
    );
}
