//! Running SIPp scenarios (from `tests/fixtures/sipp/`) against verde and collecting what SIPp
//! logged. Scenario files are templates: `@NAME@` placeholders (SIPp itself uses `[...]`) are
//! filled in per test, so waits and digits can vary without a scenario per case.

use crate::{fixtures_dir, free_port, read_lossy, tail, terminate, TestDir};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t` value: one socket for the run.
    pub fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// Writes `tests/fixtures/sipp/<template>` into `dir` with `@KEY@` replaced by each value, and
/// fails if a placeholder is left (a typo would otherwise reach SIPp as literal text).
pub fn scenario(dir: &TestDir, template: &str, vars: &[(&str, String)]) -> PathBuf {
    let src = fixtures_dir().join("sipp").join(template);
    let mut text = fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("cannot read scenario template {}: {e}", src.display()));
    for (k, v) in vars {
        let key = format!("@{k}@");
        assert!(text.contains(&key), "{template} has no placeholder {key}");
        text = text.replace(&key, v);
    }
    if let Some(name) = leftover_placeholder(&text) {
        panic!("{template}: placeholder @{name}@ was not given a value");
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let stem = template.trim_end_matches(".xml");
    let out = dir.join(format!("{stem}-{}.xml", N.fetch_add(1, Ordering::SeqCst)));
    fs::write(&out, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    out
}

/// The first `@NAME@` (uppercase, digits, `_`) left in `text`; SIP URIs' `user@host` never match.
fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(pos) = rest.find('@') {
        rest = &rest[pos + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if len > 0 && rest[len..].starts_with('@') {
            return Some(&rest[..len]);
        }
    }
    None
}

/// Scenario XML that waits `pause_ms` and then replays `pcap` on the call's media socket, for a
/// template's `@ACTIONS@`. `play_pcap_audio` returns at once, so the pause before the next action
/// must cover the pcap's length (140 ms for the DTMF pcaps).
pub fn play_pcap_after(pause_ms: u64, pcap: &Path) -> String {
    format!(
        "  <pause milliseconds=\"{pause_ms}\"/>\n  <nop>\n    <action>\n      <exec play_pcap_audio=\"{}\"/>\n    </action>\n  </nop>\n",
        pcap.display()
    )
}

/// One SIPp run making (by default) one call.
pub struct Sipp {
    scenario: PathBuf,
    remote: SocketAddr,
    service: Option<String>,
    transport: Transport,
    local_ip: String,
    local_port: u16,
    media_port: u16,
    timeout: Duration,
    calls: u32,
    call_id_prefix: String,
    uas: bool,
    extra: Vec<String>,
}

/// What a SIPp run left behind.
#[derive(Debug)]
pub struct SippOutcome {
    /// `None` when SIPp was killed (by the harness's timeout or a signal).
    pub exit_code: Option<i32>,
    pub killed_by_harness: bool,
    /// Call-ID of the first call (`-cid_str` makes it predictable).
    pub call_id: String,
    pub media_port: u16,
    pub local_port: u16,
    pub messages: String,
    pub errors: String,
    pub screen: String,
    pub stat_csv: String,
    pub output: String,
    pub elapsed: Duration,
}

impl SippOutcome {
    /// A readable dump of everything SIPp logged, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "sipp exit code {:?}{} after {:?}\n--- sipp errors ---\n{}\n--- sipp screen ---\n{}\n--- sipp messages (last 120 lines) ---\n{}\n--- sipp stdout/stderr ---\n{}",
            self.exit_code,
            if self.killed_by_harness { " (killed: harness timeout)" } else { "" },
            self.elapsed,
            tail(&self.errors, 40),
            tail(&self.screen, 40),
            tail(&self.messages, 120),
            tail(&self.output, 20),
        )
    }

    /// SIPp exits 0 only when every call went through the scenario as written.
    pub fn assert_success(&self, what: &str) {
        if self.exit_code != Some(0) {
            panic!(
                "{what}: SIPp did not complete its scenario\n{}",
                self.report()
            );
        }
    }

    /// The first line of every SIP response SIPp received (e.g. "SIP/2.0 403 Forbidden").
    pub fn received_status_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_received = false;
        for line in self.messages.replace('\r', "").lines() {
            if line.contains("message received") {
                in_received = true;
                continue;
            }
            if in_received {
                let l = line.trim();
                if l.is_empty() {
                    continue;
                }
                if l.starts_with("SIP/2.0 ") {
                    out.push(l.to_string());
                }
                in_received = false;
            }
        }
        out
    }

    /// The SDP body of the first 200 OK received (verde's answer).
    pub fn answer_sdp(&self) -> Option<String> {
        let messages = self.messages.replace('\r', "");
        let start = messages.find("SIP/2.0 200")?;
        let rest = &messages[start..];
        let body = rest.find("\n\n").map(|i| &rest[i + 2..])?;
        let body = body.trim_start();
        if !body.starts_with("v=0") {
            return None;
        }
        let end = body.find("\n\n").unwrap_or(body.len());
        Some(body[..end].to_string())
    }
}

impl Sipp {
    pub fn new(scenario: impl AsRef<Path>, remote: SocketAddr) -> Sipp {
        static N: AtomicU32 = AtomicU32::new(0);
        Sipp {
            scenario: scenario.as_ref().to_path_buf(),
            remote,
            service: None,
            transport: Transport::Udp,
            local_ip: "127.0.0.1".into(),
            local_port: 0,
            media_port: 0,
            timeout: Duration::from_secs(30),
            calls: 1,
            call_id_prefix: format!(
                "interop-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            uas: false,
            extra: Vec::new(),
        }
    }

    /// The user part of the Request-URI (`-s`): the dialled number.
    pub fn service(mut self, did: &str) -> Self {
        self.service = Some(did.to_string());
        self
    }

    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    /// Local address SIPp binds (`-i`); 127.0.0.2 is also on `lo`.
    pub fn local_ip(mut self, ip: &str) -> Self {
        self.local_ip = ip.to_string();
        self
    }

    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = port;
        self
    }

    /// Runs a server scenario: no remote address, SIPp waits for the call.
    pub fn uas(mut self) -> Self {
        self.uas = true;
        self
    }

    pub fn media_port(mut self, port: u16) -> Self {
        self.media_port = port;
        self
    }

    /// SIPp's own global timeout (it then fails with `-timeout_error`); the harness kills it
    /// 15 s later if it still has not exited.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// How many calls the run makes (UAC) or takes (UAS) before exiting (`-m`, `-l`).
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n.max(1);
        self
    }

    /// Runs SIPp to completion in `dir` (its log files land there).
    pub fn run(self, dir: &TestDir) -> SippOutcome {
        self.spawn(dir).wait()
    }

    /// Starts SIPp in the background; [`SippRun::wait`] collects the outcome. A UAS started this
    /// way can wait for verde's calls while the test drives something else; dropping the handle
    /// without waiting kills SIPp, so a failing test does not wait for SIPp's own timeout.
    pub fn spawn(self, dir: &TestDir) -> SippRun {
        let local_port = if self.local_port == 0 {
            free_port()
        } else {
            self.local_port
        };
        let media_port = if self.media_port == 0 {
            crate::free_ports(4)
        } else {
            self.media_port
        };
        let tag = format!("{}-p{local_port}", self.call_id_prefix);
        let messages = dir.join(format!("{tag}-messages.log"));
        let errors = dir.join(format!("{tag}-errors.log"));
        let screen = dir.join(format!("{tag}-screen.log"));
        let output = dir.join(format!("{tag}-output.log"));
        let run_dir = dir.subdir(&format!("{tag}-run"));
        let out = fs::File::create(&output).expect("create sipp output log");

        let mut cmd = Command::new("sipp");
        cmd.arg("-sf").arg(&self.scenario);
        if let Some(s) = &self.service {
            cmd.arg("-s").arg(s);
        }
        if !self.uas {
            cmd.arg(self.remote.to_string());
        }
        cmd.args(["-i", &self.local_ip])
            .args(["-p", &local_port.to_string()])
            .args(["-mp", &media_port.to_string()])
            .args(["-t", self.transport.sipp_flag()])
            .args(["-m", &self.calls.to_string()])
            .args(["-l", &self.calls.to_string()])
            .arg("-nostdin")
            .args(["-cid_str", &format!("{}-%u@%s", self.call_id_prefix)])
            .args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1))])
            .arg("-timeout_error")
            .args(["-buff_size", "1048576"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&messages)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(&screen)
            .arg("-trace_stat")
            .args(&self.extra)
            .current_dir(&run_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run sipp ({e}); tests/run.sh installs it (package sip-tester)")
        });
        SippRun {
            child: Some(child),
            started,
            limit: self.timeout + Duration::from_secs(15),
            run_dir,
            call_id: format!("{}-1@{}", self.call_id_prefix, self.local_ip),
            media_port,
            local_port,
            messages,
            errors,
            screen,
            output,
        }
    }
}

/// A SIPp run in progress (see [`Sipp::spawn`]).
pub struct SippRun {
    child: Option<std::process::Child>,
    started: Instant,
    limit: Duration,
    run_dir: PathBuf,
    call_id: String,
    pub media_port: u16,
    pub local_port: u16,
    messages: PathBuf,
    errors: PathBuf,
    screen: PathBuf,
    output: PathBuf,
}

impl SippRun {
    /// Waits until SIPp has bound its SIP port (UDP), so a call sent to it now is not lost to
    /// an ICMP error and a retransmission; fails if SIPp exits first.
    pub fn wait_bound(&mut self) {
        let port = self.local_port;
        let child = self.child.as_mut().expect("SIPp running");
        let bound = crate::try_wait_for(Duration::from_secs(10), || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!(
                    "SIPp exited ({status}) before binding 127.0.0.1:{port}: {}",
                    tail(&read_lossy(&self.output), 20)
                );
            }
            std::net::UdpSocket::bind(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
        if bound.is_none() {
            panic!("timed out after 10 s waiting for SIPp to bind UDP 127.0.0.1:{port}");
        }
    }

    /// The SIP Call-ID of the run's first call (`-cid_str` makes it known before SIPp sends
    /// anything), e.g. to find the call in verde's log while SIPp still runs.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// What SIPp has logged so far of the SIP messages it sent and received (`-trace_msg`).
    pub fn messages_so_far(&self) -> String {
        read_lossy(&self.messages)
    }

    /// Waits for SIPp to exit (its own `-timeout`, then the harness kills it 15 s later).
    pub fn wait(mut self) -> SippOutcome {
        let mut child = self
            .child
            .take()
            .expect("SIPp child present until waited for");
        let left = self.limit.saturating_sub(self.started.elapsed());
        let status = crate::try_wait_for(left, || child.try_wait().ok().flatten());
        let killed_by_harness = status.is_none();
        let status = status.or_else(|| terminate(&mut child, Duration::from_secs(2)));
        let stat_csv = fs::read_dir(&self.run_dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "csv"))
            .map(|p| read_lossy(&p))
            .unwrap_or_default();
        SippOutcome {
            exit_code: if killed_by_harness {
                None
            } else {
                status.and_then(|s| s.code())
            },
            killed_by_harness,
            call_id: self.call_id.clone(),
            media_port: self.media_port,
            local_port: self.local_port,
            messages: read_lossy(&self.messages),
            errors: read_lossy(&self.errors),
            screen: read_lossy(&self.screen),
            stat_csv,
            output: read_lossy(&self.output),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(2));
        }
    }
}

/// `n` concurrent calls to `did` at `to`, each listening 1.5 s then hanging up; every one must
/// be answered and completed (SIPp exits 0) within `timeout`.
pub fn answered_calls(
    dir: &TestDir,
    to: SocketAddr,
    did: &str,
    n: u32,
    timeout: Duration,
) -> SippOutcome {
    let scen = scenario(
        dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "1500".into())],
    );
    let out = Sipp::new(&scen, to)
        .service(did)
        .calls(n)
        .timeout(timeout)
        .run(dir);
    out.assert_success(&format!("{n} calls to {did}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_placeholders_are_found_but_sip_uris_are_not() {
        assert_eq!(
            leftover_placeholder("sip:[service]@[remote_ip] @WAIT_MS@"),
            Some("WAIT_MS")
        );
        assert_eq!(leftover_placeholder("sip:803164@127.0.0.1 and a@b.c"), None);
        assert_eq!(leftover_placeholder("sip:X@Y@Z"), Some("Y"));
    }

    #[test]
    fn status_lines_and_answer_sdp_are_read_from_the_message_log() {
        let o = SippOutcome {
            exit_code: Some(0),
            killed_by_harness: false,
            call_id: String::new(),
            media_port: 0,
            local_port: 0,
            messages: "----------------------------------------------- 2024\nUDP message received [300] bytes :\n\nSIP/2.0 100 Trying\nVia: x\n\n----------------------------------------------- 2024\nUDP message sent:\n\nINVITE sip:x SIP/2.0\n\n----------------------------------------------- 2024\nUDP message received [300] bytes :\n\nSIP/2.0 200 OK\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 0\r\n\r\n\n"
                .into(),
            errors: String::new(),
            screen: String::new(),
            stat_csv: String::new(),
            output: String::new(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            o.received_status_lines(),
            vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        );
        let sdp = o.answer_sdp().unwrap();
        assert!(
            sdp.starts_with("v=0") && sdp.ends_with("RTP/AVP 0"),
            "{sdp:?}"
        );
    }
}
