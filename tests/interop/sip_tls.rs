//! SIP over TLS (`sip.tls`) with real peers, on a certificate made for the test.
//!
//! - A raw TLS client (python3's ssl, OpenSSL, verifying verde's chain against the test CA)
//!   sends a malformed request and gets `400` on its own TLS connection; verde goes on serving.
//!   An INVITE over TLS from an address that is no trunk (127.0.0.2) gets `403`.
//! - A client that connects to the TLS port and never starts a handshake is cut at the
//!   handshake deadline (10 s), concurrently with everything else.
//! - An agent's phone (baresip) registers over TLS with digest, logs in with `*11`, and
//!   answers a call the ACD offers it over its TLS connection; the caller is SIPp over UDP.
//!   Audio flows both ways through the bridge (each side's tone heard by the other), and the
//!   caller's hang-up reaches the phone as verde's BYE over TLS.
//! - A trunk call placed over TLS by baresip from the trunk address (127.0.0.1) hears the
//!   INPS welcome prompt, and its own BYE over TLS ends the call.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use verde_interop::acd::{heard_by_sipp, wait_agent_registered, wait_agent_state, write_config};
use verde_interop::baresip::{padded_source, AgentAccount, Baresip};
use verde_interop::flows::{self, INPS};
use verde_interop::media_checks::{tone_dbfs, PRESENT_DBFS};
use verde_interop::pcap::{audio_pcap_after_dtmf, Capture};
use verde_interop::sipp::{play_pcap_after, scenario, Sipp};
use verde_interop::verde::{field, TestCerts, Verde, VerdeOptions};
use verde_interop::wav::{envelope_correlation, Audio};
use verde_interop::{
    fixtures_dir, free_port, free_ports, repo_root, require_private_netns, tail, TestDir,
};

const AGENT: &str = "1001";
const PASSWORD: &str = "secret1";
/// `tests/fixtures/flows-direct-queue/direct-pensions.yaml`: straight into pensions.
const DID_QUEUE: &str = "800500001";
const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
/// verde's handshake deadline (crates/verde/src/tls.rs).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Sends `request` over TLS from `source` (an address of lo; verifying the server against
/// `ca`) and prints the TLS version and the first response's head.
const RAW_TLS_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, source, request = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        print("VERSION", s.version(), flush=True)
        s.sendall(request.encode().replace(b"\n", b"\r\n"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        sys.stdout.write(data.decode(errors="replace"))
"#;

fn raw_tls(dir: &TestDir, port: u16, ca: &std::path::Path, source: &str, request: &str) -> String {
    let script = dir.join("raw_tls.py");
    std::fs::write(&script, RAW_TLS_CLIENT).expect("write raw_tls.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(ca)
        .arg(source)
        .arg(request)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the raw TLS client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shipped flows (INPS for the trunk call) and the test flow that queues at once.
fn flows_dir(dir: &TestDir) -> PathBuf {
    let flows = dir.subdir("flows");
    for src in [
        repo_root().join("ivr-flows"),
        fixtures_dir().join("flows-direct-queue"),
    ] {
        for e in std::fs::read_dir(&src).expect("read flows").flatten() {
            std::fs::copy(e.path(), flows.join(e.file_name())).expect("copy flow");
        }
    }
    flows
}

fn tone_wav(dir: &TestDir, name: &str, hz: f64) -> PathBuf {
    // aufile hangs up at the end of its file: longer than the test.
    let path = dir.join(format!("{name}.wav"));
    Audio::tone(8000, hz, 150.0, 0.3).save(&path);
    path
}

#[test]
fn phones_and_trunks_over_tls() {
    require_private_netns();
    let dir = TestDir::new("sip_tls");
    let certs = TestCerts::make(&dir);
    let tls_port = free_port();
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "sip:\n  tls: {{ listen: \"{tls}\", cert: \"{}\", key: \"{}\" }}\n\
             agents:\n\
             \x20 - {{ id: \"{AGENT}\", name: Anna, password: {PASSWORD}, queues: [pensions] }}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            flows: flows_dir(&dir),
            rtp_ports: 60,
            ..Default::default()
        },
    );
    verde.wait_log("SIP over TLS", Duration::from_secs(5));

    // A connection that never says a word: cut at the handshake deadline, whatever else runs.
    let silent = std::thread::spawn(move || {
        let mut s = TcpStream::connect(tls).expect("connect to the TLS port");
        s.set_read_timeout(Some(HANDSHAKE_DEADLINE * 3)).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        (start.elapsed(), r.map_err(|e| e.to_string()))
    });

    // Malformed over TLS: 400 on the same connection.
    let bad = format!(
        "INVITE sip:{INPS}@{tls};transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-bad\n\
         From: <sip:raw@127.0.0.1>;tag=raw1\n\
         To: <sip:{INPS}@127.0.0.1>\n\
         Call-ID: tls-malformed@127.0.0.1\n\
         CSeq: many INVITE\n\
         Max-Forwards: 70\n\
         Content-Length: 0\n\n"
    );
    let answer = raw_tls(&dir, tls_port, &certs.ca, "127.0.0.1", &bad);
    assert!(
        answer.contains("\nSIP/2.0 400 ") && answer.contains("tls-malformed@127.0.0.1"),
        "a malformed INVITE over TLS must get 400 on its connection; got:\n{answer}"
    );
    assert!(
        answer.contains("VERSION TLSv1.3"),
        "python's OpenSSL should negotiate TLS 1.3: {answer}"
    );
    verde.wait_log("malformed SIP message refused", Duration::from_secs(5));

    // The trunk ACL goes by source address over TLS too: 127.0.0.2 is no trunk.
    let stranger = format!(
        "INVITE sip:{INPS}@{tls};transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS 127.0.0.2:5999;branch=z9hG4bK-tls-acl\n\
         From: <sip:stranger@127.0.0.2>;tag=acl1\n\
         To: <sip:{INPS}@127.0.0.1>\n\
         Call-ID: tls-acl@127.0.0.2\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:stranger@127.0.0.2:5999;transport=tls>\n\
         Max-Forwards: 70\n\
         Content-Length: 0\n\n"
    );
    let answer = raw_tls(&dir, tls_port, &certs.ca, "127.0.0.2", &stranger);
    assert!(
        answer.contains("\nSIP/2.0 403 ") && answer.contains("tls-acl@127.0.0.2"),
        "an INVITE over TLS from a non-trunk address must get 403; got:\n{answer}"
    );

    // The agent's phone over TLS.
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));
    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new(AGENT, PASSWORD, tls).over_tls(),
        &tone_wav(&dir, "anna-voice", AGENT_HZ),
    );
    wait_agent_registered(&verde, AGENT, Duration::from_secs(10));
    let reg = verde.wait_log("registered user=1001", Duration::from_secs(2));
    assert!(
        reg.contains("transport=Tls"),
        "the phone registered, but not over TLS: {reg}"
    );
    // `*11` over TLS (the phone's account adds `transport=tls` to what it dials): verde answers,
    // confirms and hangs up with a BYE over the phone's connection.
    anna.ctrl.dial(&format!("sip:*11@{tls}"));
    anna.ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    anna.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(15));
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(10));

    // A caller over UDP, queued at once, talks for a while and hangs up.
    let talk = audio_pcap_after_dtmf(
        &dir,
        "caller-talk",
        &Audio::tone(8000, CALLER_HZ, 6.0, 0.3),
        1,
    );
    let scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", "0611000077".to_string()),
            ("ACTIONS", play_pcap_after(200, &talk)),
            ("LISTEN_MS", "7000".to_string()),
        ],
    );
    let media_port = free_ports(4);
    let out = Sipp::new(&scen, verde.sip)
        .service(DID_QUEUE)
        .media_port(media_port)
        .timeout(Duration::from_secs(30))
        .run(&dir);
    out.assert_success("the caller bridged to the agent over TLS");
    let established = anna
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(5));
    // The caller hung up: verde's BYE reaches the phone over its TLS connection.
    let closed = anna.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10));
    eprintln!("agent leg: {established}\n{closed}");
    // libre ends a session on a BYE it received with ECONNRESET; a failed transport or a
    // timeout would read otherwise.
    assert_eq!(
        closed["param"], "Connection reset by peer",
        "the agent's leg must end on verde's BYE: {closed}"
    );
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("caller"),
        "{record:#}"
    );

    let datagrams = cap.stop();
    let caller_heard = heard_by_sipp(&datagrams, &verde, media_port);
    let agent_db = tone_dbfs(&caller_heard, AGENT_HZ);
    assert!(
        agent_db >= PRESENT_DBFS,
        "the caller must hear the agent's {AGENT_HZ} Hz: {agent_db:.1} dBFS over {:.1} s",
        caller_heard.duration()
    );
    anna.quit();
    let recs = anna.received_recordings();
    // The newest recording: the ACD call (the first is `*11`'s confirmation).
    let heard = Audio::load(
        recs.last()
            .unwrap_or_else(|| panic!("the agent's phone recorded nothing")),
    );
    let caller_db = tone_dbfs(&heard, CALLER_HZ);
    assert!(
        caller_db >= PRESENT_DBFS,
        "the agent must hear the caller's {CALLER_HZ} Hz: {caller_db:.1} dBFS over {:.1} s",
        heard.duration()
    );

    // A trunk call over TLS from 127.0.0.1: the welcome prompt.
    let (lang, name) = flows::first_prompts(INPS)[0];
    let welcome = flows::prompt(lang, name);
    let mut trunk = Baresip::start(&dir, "trunk", &padded_source(&dir, 60.0));
    trunk.ctrl.dial(&format!("sip:{INPS}@{tls};transport=tls"));
    trunk
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs_f64(welcome.duration() + 1.5));
    trunk.ctrl.hangup();
    trunk.ctrl.wait_event("CALL_CLOSED", Duration::from_secs(5));
    trunk.quit();
    let recs = trunk.received_recordings();
    assert_eq!(recs.len(), 1, "one recording of the trunk call: {recs:?}");
    let heard = Audio::load(&recs[0]);
    let window = heard.slice(0.0, welcome.duration() + 1.0);
    let (corr, lag) = envelope_correlation(&window, &welcome, 20, 1000);
    assert!(
        corr > 0.8,
        "the trunk over TLS did not hear {lang}/{name}: envelope correlation {corr:.3} (lag {lag} ms)"
    );
    let record = verde.wait_record_by_caller("trunk", INPS);
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("caller"),
        "the trunk's BYE over TLS ended the call: {record:#}"
    );

    // The silent connection was cut at the deadline, not before and not much after.
    let (took, read) = silent.join().expect("silent client thread");
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the silent connection should be closed: {read:?}"
    );
    assert!(
        took >= HANDSHAKE_DEADLINE - Duration::from_millis(500)
            && took <= HANDSHAKE_DEADLINE + Duration::from_secs(3),
        "the silent connection lived {took:?}, not the {HANDSHAKE_DEADLINE:?} handshake deadline ({read:?})"
    );
    let cut = verde.wait_log("SIP TLS handshake failed", Duration::from_secs(1));
    assert!(cut.contains("not completed"), "{cut}");
    assert!(
        !verde.logs().contains("panicked"),
        "verde panicked:\n{}",
        tail(&verde.logs(), 40)
    );
}
