//! baresip as a headless softphone: configuration generated from `tests/fixtures/baresip/`,
//! stdin held open through a FIFO (its stdio module cannot read /dev/null), and a small client
//! for its `ctrl_tcp` interface (netstring-framed JSON commands, responses and events).

use crate::wav::Audio;
use crate::{fixtures_dir, free_port, free_ports, read_lossy, tail, terminate, TestDir};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A running baresip with its control connection.
pub struct Baresip {
    child: Option<Child>,
    pub ctrl: Ctrl,
    pub sip_port: u16,
    pub rec_dir: PathBuf,
    /// Short symlink to `rec_dir` given to baresip as `snd_path` (see [`short_alias`]).
    rec_alias: PathBuf,
    log_path: PathBuf,
}

impl Baresip {
    /// Starts baresip as `sip:<user>@127.0.0.1:<port>` sending `audio_source` (an 8 kHz mono WAV,
    /// padded so it outlasts the call: aufile hangs up at end of file) and waits until its
    /// ctrl_tcp port accepts. It registers nowhere and answers nothing by itself.
    pub fn start(dir: &TestDir, user: &str, audio_source: &Path) -> Baresip {
        Baresip::launch(dir, user, audio_source, None)
    }

    /// Starts baresip as an agent's phone: it registers `sip:<id>@<registrar>` with digest
    /// password `password` (re-registering every 60 s) and answers incoming calls according to
    /// `answer`. `name` names its folder in the test dir (two phones may share an id).
    pub fn start_agent(
        dir: &TestDir,
        name: &str,
        account: &AgentAccount,
        audio_source: &Path,
    ) -> Baresip {
        Baresip::launch(dir, name, audio_source, Some(account.line()))
    }

    fn launch(
        dir: &TestDir,
        user: &str,
        audio_source: &Path,
        account_line: Option<String>,
    ) -> Baresip {
        let sip_port = free_port();
        let ctrl_port = free_port();
        let rtp_low = free_ports(20);
        let conf_dir = dir.subdir(&format!("baresip-{user}"));
        let rec_dir = dir.subdir(&format!("baresip-{user}/rec"));
        let rec_alias = short_alias(&rec_dir);
        let vars: Vec<(&str, String)> = vec![
            ("SIP_PORT", sip_port.to_string()),
            ("CTRL_PORT", ctrl_port.to_string()),
            ("RTP_LOW", rtp_low.to_string()),
            ("RTP_HIGH", (rtp_low + 19).to_string()),
            ("AUDIO_SOURCE", audio_source.display().to_string()),
            ("REC_DIR", rec_alias.display().to_string()),
            ("USER", user.to_string()),
        ];
        for (tmpl, out) in [("config.tmpl", "config"), ("accounts.tmpl", "accounts")] {
            let text = match (&account_line, out) {
                (Some(line), "accounts") => format!("{line}\n"),
                _ => {
                    let src = fixtures_dir().join("baresip").join(tmpl);
                    let mut text = fs::read_to_string(&src)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
                    for (k, v) in &vars {
                        text = text.replace(&format!("@{k}@"), v);
                    }
                    text
                }
            };
            fs::write(conf_dir.join(out), text).expect("write baresip config");
        }
        let fifo = conf_dir.join("stdin.fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("fifo path has no NUL");
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            panic!(
                "mkfifo {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            );
        }
        // Opened read-write so it never blocks and baresip never sees end of file on stdin.
        let stdin = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open baresip stdin fifo");
        let log_path = conf_dir.join("baresip.log");
        let log = fs::File::create(&log_path).expect("create baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&conf_dir)
            .current_dir(&conf_dir)
            .stdin(stdin)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run baresip ({e}); tests/run.sh installs it"));
        let mut child = Some(child);
        let ctrl = crate::try_wait_for(Duration::from_secs(15), || {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "baresip exited ({status}) during start-up:\n{}",
                    tail(&read_lossy(&log_path), 40)
                );
            }
            TcpStream::connect(("127.0.0.1", ctrl_port)).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after 15 s waiting for baresip's ctrl_tcp on 127.0.0.1:{ctrl_port}:\n{}",
                tail(&read_lossy(&log_path), 40)
            )
        });
        Baresip {
            child,
            ctrl: Ctrl::new(ctrl),
            sip_port,
            rec_dir,
            rec_alias,
            log_path,
        }
    }

    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The WAV files of audio baresip received and decoded (`dump-*-dec.wav`), oldest first.
    pub fn received_recordings(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.rec_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let Some(bad) = v.iter().find(|p| p.extension().is_none_or(|e| e != "wav")) {
            panic!(
                "baresip wrote {} without a .wav extension: its recording file names are cut at \
                 127 bytes, so snd_path must be short",
                bad.display()
            );
        }
        v.retain(|p| p.to_string_lossy().ends_with("-dec.wav"));
        v.sort();
        v
    }

    /// Quits baresip (which finalizes its recordings) and waits for it to exit.
    pub fn quit(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = self.ctrl.send("quit", "");
        let exited = crate::try_wait_for(Duration::from_secs(5), || {
            self.child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        if let Some(mut child) = self.child.take() {
            if exited.is_none() {
                terminate(&mut child, Duration::from_secs(3));
            } else {
                let _ = child.wait();
            }
        }
    }
}

/// A symlink `/tmp/verde-rec-<pid>-<n>` to `target`. baresip's sndfile module builds each
/// recording's name (`<snd_path>/dump-<date-time>-dec.wav`) in a 128-byte buffer and silently
/// cuts what does not fit, so the deep test directories would lose the `.wav`, or more.
fn short_alias(target: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let alias = std::env::temp_dir().join(format!(
        "verde-rec-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let _ = fs::remove_file(&alias);
    std::os::unix::fs::symlink(target, &alias).unwrap_or_else(|e| {
        panic!(
            "cannot link {} to {}: {e}",
            alias.display(),
            target.display()
        )
    });
    alias
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.quit();
        let _ = fs::remove_file(&self.rec_alias);
        if thread::panicking() {
            eprintln!(
                "---- baresip events ----\n{}\n---- baresip log (last 60 lines) ----\n{}\n----",
                self.ctrl
                    .history()
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                tail(&self.logs(), 60)
            );
        }
    }
}

/// How baresip answers calls offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// Answers at once (baresip `answermode=auto`).
    Auto,
    /// Rings until told to `accept` over ctrl_tcp (baresip `answermode=manual`).
    Manual,
}

/// An agent's SIP account on verde, as a baresip `accounts` line.
#[derive(Debug, Clone)]
pub struct AgentAccount {
    pub id: String,
    pub password: String,
    /// verde's SIP address: the registrar and where the phone's calls go.
    pub registrar: std::net::SocketAddr,
    pub answer: AnswerMode,
    /// Register (and so be called) over TLS: `registrar` is then verde's `sip.tls.listen`.
    /// baresip 1.0 does not verify the server's certificate, and it listens for TLS on its SIP
    /// port + 1 (an odd port, which `free_port` never hands out).
    pub tls: bool,
}

impl AgentAccount {
    pub fn new(id: &str, password: &str, registrar: std::net::SocketAddr) -> AgentAccount {
        AgentAccount {
            id: id.to_string(),
            password: password.to_string(),
            registrar,
            answer: AnswerMode::Auto,
            tls: false,
        }
    }

    pub fn answer(mut self, mode: AnswerMode) -> AgentAccount {
        self.answer = mode;
        self
    }

    /// Over TLS (see [`AgentAccount::tls`]).
    pub fn over_tls(mut self) -> AgentAccount {
        self.tls = true;
        self
    }

    /// PCMU only, so the bridge relays payloads between two PCMU legs; digest MD5 (verde's
    /// default challenge: baresip 1.0 gives up on SHA-256 ones).
    pub fn line(&self) -> String {
        let mode = match self.answer {
            AnswerMode::Auto => "auto",
            AnswerMode::Manual => "manual",
        };
        let transport = if self.tls { ";transport=tls" } else { "" };
        format!(
            "<sip:{}@{}{transport}>;auth_pass={};regint=60;answermode={mode};audio_codecs=PCMU",
            self.id, self.registrar, self.password
        )
    }
}

/// A ctrl_tcp client. Responses and events arrive interleaved; events not yet asked for are kept
/// in order so a test can wait for them later.
pub struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    pending: VecDeque<Value>,
    history: Vec<Value>,
    /// When each message of `history` was read (not when baresip sent it: only as precise as
    /// the caller's polling).
    received_at: Vec<SystemTime>,
    next_token: u32,
}

impl Ctrl {
    fn new(stream: TcpStream) -> Ctrl {
        Ctrl {
            stream,
            buf: Vec::new(),
            pending: VecDeque::new(),
            history: Vec::new(),
            received_at: Vec::new(),
            next_token: 0,
        }
    }

    /// Every message received so far, in order (for failure messages).
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    /// Sends a command without waiting for its response; returns its token.
    pub fn send(&mut self, command: &str, params: &str) -> std::io::Result<String> {
        self.next_token += 1;
        let token = format!("{command}-{}", self.next_token);
        let msg = json!({"command": command, "params": params, "token": token}).to_string();
        self.stream.write_all(&netstring(msg.as_bytes()))?;
        Ok(token)
    }

    /// Sends a command and waits for its response, failing unless baresip reports `ok`.
    pub fn command(&mut self, command: &str, params: &str) -> Value {
        let token = self
            .send(command, params)
            .unwrap_or_else(|e| panic!("sending {command} {params} to baresip: {e}"));
        let what = format!("baresip's response to `{command} {params}`");
        let resp = self.wait(&what, Duration::from_secs(10), |m| {
            m.get("response").is_some() && m.get("token").and_then(Value::as_str) == Some(&token)
        });
        if resp.get("ok") != Some(&Value::Bool(true)) {
            panic!("baresip refused `{command} {params}`: {resp}");
        }
        resp
    }

    pub fn dial(&mut self, uri: &str) -> Value {
        self.command("dial", uri)
    }

    /// Sends one DTMF digit (RFC 4733 when negotiated).
    pub fn sndcode(&mut self, digit: char) -> Value {
        self.command("sndcode", &digit.to_string())
    }

    pub fn hangup(&mut self) -> Value {
        self.command("hangup", "")
    }

    /// Waits for an event of `event_type` (e.g. CALL_ESTABLISHED, CALL_CLOSED).
    pub fn wait_event(&mut self, event_type: &str, timeout: Duration) -> Value {
        self.wait(&format!("baresip event {event_type}"), timeout, |m| {
            m.get("event").is_some() && m.get("type").and_then(Value::as_str) == Some(event_type)
        })
    }

    /// Reads whatever has arrived, without waiting; fails if the connection broke.
    pub fn poll(&mut self) {
        if let Err(e) = self.fill(Duration::from_millis(1)) {
            panic!("baresip control connection failed: {e}");
        }
    }

    /// Every event of `event_type` received so far (waited for or not), with when it was read.
    pub fn events(&mut self, event_type: &str) -> Vec<(SystemTime, Value)> {
        self.all_events()
            .into_iter()
            .filter(|(_, m)| m.get("type").and_then(Value::as_str) == Some(event_type))
            .collect()
    }

    /// Every event received so far, in order, with when it was read.
    pub fn all_events(&mut self) -> Vec<(SystemTime, Value)> {
        let _ = self.fill(Duration::from_millis(1));
        self.history
            .iter()
            .zip(&self.received_at)
            .filter(|(m, _)| m.get("event").is_some())
            .map(|(m, t)| (*t, m.clone()))
            .collect()
    }

    /// Whether an event of `event_type` has already been received.
    pub fn seen_event(&mut self, event_type: &str) -> bool {
        let _ = self.fill(Duration::from_millis(1));
        self.history.iter().any(|m| {
            m.get("event").is_some() && m.get("type").and_then(Value::as_str) == Some(event_type)
        })
    }

    fn wait(&mut self, what: &str, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.iter().position(&want) {
                return self.pending.remove(i).expect("index valid");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; received so far:\n{}",
                    self.history
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            if let Err(e) = self.fill(left.min(Duration::from_millis(200))) {
                panic!("baresip control connection failed while waiting for {what}: {e}");
            }
        }
    }

    /// Reads what is available (up to `wait`) and queues every complete message.
    fn fill(&mut self, wait: Duration) -> std::io::Result<()> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "baresip closed ctrl_tcp",
                ))
            }
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        while let Some((msg, used)) = parse_netstring(&self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            self.buf.drain(..used);
            let v: Value = serde_json::from_slice(&msg)
                .unwrap_or_else(|_| json!({"unparsed": String::from_utf8_lossy(&msg)}));
            self.history.push(v.clone());
            self.received_at.push(SystemTime::now());
            self.pending.push_back(v);
        }
        Ok(())
    }
}

pub fn netstring(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// Parses one netstring from the start of `buf`: `Ok(Some((payload, bytes used)))`, `Ok(None)`
/// when incomplete.
pub fn parse_netstring(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        if buf.len() > 10 || buf.iter().any(|b| !b.is_ascii_digit()) {
            return Err(format!(
                "bad netstring length prefix {:?}",
                String::from_utf8_lossy(buf)
            ));
        }
        return Ok(None);
    };
    let len: usize = std::str::from_utf8(&buf[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad netstring length {:?}",
                String::from_utf8_lossy(&buf[..colon])
            )
        })?;
    let end = colon + 1 + len;
    if buf.len() < end + 1 {
        return Ok(None);
    }
    if buf[end] != b',' {
        return Err("netstring not terminated by ','".into());
    }
    Ok(Some((buf[colon + 1..end].to_vec(), end + 1)))
}

/// Writes a quiet 8 kHz mono WAV of `secs` seconds for baresip to send (aufile hangs up at end
/// of file, so it must outlast the call). Low-level noise rather than digital silence so the far
/// end sees real audio energy, but far below any DTMF detector's threshold.
pub fn padded_source(dir: &TestDir, secs: f64) -> PathBuf {
    let path = dir.join("baresip-source.wav");
    let mut a = Audio::silence(8000, secs);
    let mut x: u32 = 0x1234_5678;
    for s in &mut a.samples {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *s = ((x % 2001) as f32 / 1000.0 - 1.0) * 0.002;
    }
    a.save(&path);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings_roundtrip_and_split() {
        let mut buf = netstring(b"{\"a\":1}");
        buf.extend_from_slice(b"3:ab");
        let (first, used) = parse_netstring(&buf).unwrap().unwrap();
        assert_eq!(first, b"{\"a\":1}");
        assert_eq!(used, 10);
        assert!(
            parse_netstring(&buf[used..]).unwrap().is_none(),
            "incomplete second message"
        );
        assert!(parse_netstring(b"3:abc;").is_err());
        assert!(parse_netstring(b"x:").is_err());
    }
}
