//! Starting and stopping the `verde` binary for a test, and reading what it stored.

use crate::http::{self, HttpResponse};
use crate::{free_port, free_ports, read_lossy, repo_root, tail, target_dir, terminate, TestDir};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long verde may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The verde binary: `$VERDE_BIN`, else `target/debug/verde` (tests/run.sh builds it first).
pub fn verde_bin() -> PathBuf {
    let bin = match std::env::var_os("VERDE_BIN") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("debug").join("verde"),
    };
    if !bin.is_file() {
        panic!(
            "verde binary not found at {} (build it with `cargo build -p verde`, set VERDE_BIN, \
             or run the suite through tests/run.sh, which does both)",
            bin.display()
        );
    }
    bin
}

/// Size of the `--webrtc-ports` range every verde gets.
pub const WEBRTC_PORTS: u16 = 20;

/// What a test can change about the verde it starts. Paths default to the repository's own
/// `ivr-flows/` and `sounds/`, so the tests exercise what ships.
#[derive(Debug, Clone)]
pub struct VerdeOptions {
    pub flows: PathBuf,
    pub sounds: PathBuf,
    pub config: Option<PathBuf>,
    /// Size of the `--rtp-ports` range.
    pub rtp_ports: u16,
    pub extra_args: Vec<String>,
    /// The config serves HTTPS (`http.tls`): start-up is checked over TLS trusting this CA.
    pub https_ca: Option<PathBuf>,
}

impl Default for VerdeOptions {
    fn default() -> Self {
        VerdeOptions {
            flows: repo_root().join("ivr-flows"),
            sounds: repo_root().join("sounds"),
            config: None,
            rtp_ports: 40,
            extra_args: Vec::new(),
            https_ca: None,
        }
    }
}

/// A running verde. Dropping it stops the process (SIGTERM, then SIGKILL) and, if the test is
/// failing, prints the end of its log so the failure can be read without digging in files.
pub struct Verde {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub rtp_ports: (u16, u16),
    pub data_dir: PathBuf,
    log_path: PathBuf,
    opts: VerdeOptions,
    /// How many times this verde was started (1 + restarts); names the log of each run.
    runs: u32,
}

impl Verde {
    /// Polls `fetch` (one of verde's API views) until it satisfies `want`; on timeout the panic
    /// names `subject` and `what`, the last view and the end of verde's log.
    pub fn wait_shown(
        &self,
        subject: &str,
        what: &str,
        timeout: Duration,
        mut fetch: impl FnMut() -> serde_json::Value,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        crate::try_wait_for(timeout, || {
            last = fetch();
            want(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {subject} to be {what}; last seen: \
                 {last:#}\nverde log (last 60 lines):\n{}",
                tail(&self.logs(), 60)
            )
        })
    }

    /// Starts verde on fresh loopback ports with a data dir inside `dir` and waits for `/health`.
    pub fn start(dir: &TestDir, opts: VerdeOptions) -> Verde {
        Verde::launch(dir, opts, 1, None)
    }

    /// Kills verde at once (SIGKILL: no shutdown, no flush, as in a crash or an OOM kill) and
    /// returns how it exited. Its log stays readable through [`Verde::logs`] until a restart.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        crate::signal(&mut child, libc::SIGKILL, Duration::from_secs(10))
    }

    /// Starts verde again with the same options and the same data dir (on fresh ports, logging
    /// to `verde-<n>.log`), after stopping it with SIGTERM if it still runs.
    pub fn restart(&mut self, dir: &TestDir) {
        self.stop();
        let next = Verde::launch(dir, self.opts.clone(), self.runs + 1, None);
        assert_eq!(
            next.data_dir, self.data_dir,
            "a restarted verde must use the same data dir"
        );
        // The old value has no child left: dropping it stops nothing.
        let _ = std::mem::replace(self, next);
    }

    /// [`Verde::restart`] on the same SIP port, as a restarted server comes back: carriers and
    /// phones answer its requests at the address they know.
    pub fn restart_on_same_sip_port(&mut self, dir: &TestDir) {
        self.stop();
        let next = Verde::launch(dir, self.opts.clone(), self.runs + 1, Some(self.sip.port()));
        let _ = std::mem::replace(self, next);
    }

    fn launch(dir: &TestDir, opts: VerdeOptions, runs: u32, sip_port: Option<u16>) -> Verde {
        let sip_port = sip_port.unwrap_or_else(free_port);
        let http_port = free_port();
        let rtp_low = free_ports(opts.rtp_ports);
        let rtp_high = rtp_low + opts.rtp_ports - 1;
        // Browser legs get their own range, apart from the RTP one (verde refuses an overlap).
        let webrtc_low = free_ports(WEBRTC_PORTS);
        let data_dir = dir.subdir("verde-data");
        let log_path = if runs == 1 {
            dir.join("verde.log")
        } else {
            dir.join(format!("verde-{runs}.log"))
        };
        let log = File::create(&log_path).expect("create verde.log");
        let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();

        let mut cmd = Command::new(verde_bin());
        if let Some(cfg) = &opts.config {
            cmd.arg("--config").arg(cfg);
        }
        cmd.arg("--sip")
            .arg(sip.to_string())
            .arg("--http")
            .arg(http.to_string())
            .arg("--data")
            .arg(&data_dir)
            .arg("--media-ip")
            .arg("127.0.0.1")
            .arg("--rtp-ports")
            .arg(format!("{rtp_low}-{rtp_high}"))
            .arg("--webrtc-ports")
            .arg(format!("{webrtc_low}-{}", webrtc_low + WEBRTC_PORTS - 1))
            .arg("--flows")
            .arg(&opts.flows)
            .arg("--sounds")
            .arg(&opts.sounds)
            .args(&opts.extra_args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // verde reads VERDE_LOG (inherited when set); info is what the tests wait on.
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", verde_bin().display()));
        let mut verde = Verde {
            child: Some(child),
            sip,
            http,
            rtp_ports: (rtp_low, rtp_high),
            data_dir,
            log_path,
            opts,
            runs,
        };
        verde.wait_ready();
        verde
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "verde exited ({status}) before answering GET /health; its log:\n{}",
                    tail(&self.logs(), 80)
                );
            }
            let last = match &self.opts.https_ca {
                Some(ca) => match https_get(self.http, "/health", ca) {
                    Ok((200, _)) => return,
                    Ok((status, body)) => format!("status {status}: {body}"),
                    Err(e) => e,
                },
                None => match http::get(self.http, "/health", Duration::from_secs(2)) {
                    Ok(r) if r.status == 200 => {
                        if let Err(e) = r.json() {
                            panic!("GET /health returned 200 but {e}");
                        }
                        return;
                    }
                    Ok(r) => format!("status {}: {}", r.status, r.text()),
                    Err(e) => e,
                },
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {READY_TIMEOUT:?} waiting for verde's GET /health to return 200 \
                     (last: {last}); its log:\n{}",
                    tail(&self.logs(), 80)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything verde wrote to stdout/stderr so far.
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log lines that mention `call_id`.
    pub fn call_logs(&self, call_id: &str) -> String {
        self.logs()
            .lines()
            .filter(|l| l.contains(call_id))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("verde is running")
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        crate::try_wait_for(timeout, || {
            self.logs().lines().find(|l| l.contains(needle)).map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for a verde log line containing {needle:?}; log:\n{}",
                tail(&self.logs(), 60)
            )
        })
    }

    /// Fails the test if verde is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "verde exited unexpectedly ({status}); its log:\n{}",
                tail(&self.logs(), 80)
            );
        }
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http::get(self.http, path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}; verde log:\n{}", tail(&self.logs(), 40)))
    }

    /// One series of `/metrics` (`name` or `name{label="value",...}` as written there).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// `GET path` with a CTI token as bearer (None: no Authorization header).
    pub fn get_with(&self, path: &str, token: Option<&str>) -> HttpResponse {
        http::get_authorized(self.http, path, token, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}; verde log:\n{}", tail(&self.logs(), 40)))
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> HttpResponse {
        http::post_json(self.http, path, body, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}; verde log:\n{}", tail(&self.logs(), 40)))
    }

    /// `GET /api/calls?limit=N` (newest first).
    pub fn recent_calls(&self, limit: usize) -> Vec<serde_json::Value> {
        let r = self.get(&format!("/api/calls?limit={limit}"));
        assert_eq!(r.status, 200, "GET /api/calls?limit={limit}: {}", r.text());
        match r.json() {
            Ok(serde_json::Value::Array(a)) => a,
            Ok(other) => panic!("GET /api/calls returned {other}, not a JSON array"),
            Err(e) => panic!("GET /api/calls: {e}"),
        }
    }

    /// The stored record of the call whose caller mentions `caller` to `did`, for peers whose
    /// Call-ID the test cannot see (baresip's ctrl_tcp does not expose it).
    pub fn wait_record_by_caller(&self, caller: &str, did: &str) -> serde_json::Value {
        let record = crate::wait_for(
            &format!("the call record of {caller}'s call to {did}"),
            Duration::from_secs(10),
            || {
                self.recent_calls(5).into_iter().find(|r| {
                    r["caller"].to_string().contains(caller) && r["did"].as_str() == Some(did)
                })
            },
        );
        let call_id = field(&record, "call_id").as_str().unwrap_or_default();
        self.wait_call_record(call_id, Duration::from_secs(5))
    }

    /// Waits for the stored record of `call_id` (the API answers 404 until the call has ended
    /// and been written).
    pub fn wait_call_record(&self, call_id: &str, timeout: Duration) -> serde_json::Value {
        let path = format!("/api/calls/{}", encode_path_segment(call_id));
        let mut last = String::new();
        let found = crate::try_wait_for(timeout, || {
            match http::get(self.http, &path, Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => match r.json() {
                    Ok(v) => return Some(v),
                    Err(e) => last = e,
                },
                Ok(r) => last = format!("status {}: {}", r.status, r.text()),
                Err(e) => last = e,
            }
            None
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for the call record GET {path} (last: {last}); \
                 verde log for this call:\n{}",
                self.call_logs(call_id)
            )
        })
    }

    /// Stops verde (SIGTERM, SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, Duration::from_secs(10))
    }
}

impl Drop for Verde {
    fn drop(&mut self) {
        let status = self.stop();
        if thread::panicking() {
            eprintln!(
                "---- verde log ({}; exit {status:?}), last 150 lines ----\n{}\n---- end of verde log ----",
                self.log_path.display(),
                tail(&self.logs(), 150)
            );
        }
    }
}

/// `GET https://<addr><path>` with curl, trusting only `ca` (no `-k`: the certificate must
/// verify for 127.0.0.1): the status and the body.
pub fn https_get(addr: SocketAddr, path: &str, ca: &Path) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{addr}{path}"))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "curl https://{addr}{path}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code
        .trim()
        .parse()
        .map_err(|_| format!("curl printed no status: {text}"))?;
    Ok((code, body.to_string()))
}

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, made with the
/// openssl CLI: `cert` is the full chain (server certificate, then the CA), `key` its key.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCerts {
    pub fn make(dir: &crate::TestDir) -> TestCerts {
        let d = dir.subdir("tls");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=verde test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let chain = [
            std::fs::read_to_string(d.join("server.pem")).expect("server.pem"),
            std::fs::read_to_string(d.join("ca.pem")).expect("ca.pem"),
        ]
        .concat();
        std::fs::write(d.join("fullchain.pem"), chain).expect("write fullchain.pem");
        TestCerts {
            ca: d.join("ca.pem"),
            cert: d.join("fullchain.pem"),
            key: d.join("key.pem"),
        }
    }
}

/// Percent-encodes what cannot appear raw in a path segment (SIPp call ids contain `@`, which is
/// legal, but carriers' may contain anything).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'@'
            | b'!'
            | b'$'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Reads a string field of a call record, failing with the whole record when it is missing.
pub fn field<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record
        .get(name)
        .unwrap_or_else(|| panic!("call record has no {name:?} field: {record:#}"))
}

/// The `path` of a call record as node ids.
pub fn record_path(record: &serde_json::Value) -> Vec<String> {
    match field(record, "path") {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        other => panic!("call record path is {other}, not an array: {record:#}"),
    }
}

/// Fails unless a call record of the INPS menus shows the branch its keys chose: its path
/// reaches `node`, its `language` is `language` and its `dtmf` is exactly `dtmf` (each key
/// received once). `keys` says who pressed what, for the failure. Returns the path.
pub fn assert_record_branch(
    record: &serde_json::Value,
    keys: &str,
    node: &str,
    language: &str,
    dtmf: &str,
) -> Vec<String> {
    let path = record_path(record);
    assert!(
        path.iter().any(|n| n == node),
        "{keys}: the path must reach {node}: {path:?}\nrecord {record:#}"
    );
    assert_eq!(
        field(record, "language").as_str(),
        Some(language),
        "record {record:#}"
    );
    assert_eq!(
        field(record, "dtmf").as_str(),
        Some(dtmf),
        "both key presses received, once each: {record:#}"
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segment_encoding_keeps_sipp_call_ids_and_escapes_the_rest() {
        assert_eq!(encode_path_segment("1-2345@127.0.0.1"), "1-2345@127.0.0.1");
        assert_eq!(encode_path_segment("a/b c?d#"), "a%2Fb%20c%3Fd%23");
    }

    #[test]
    fn record_path_reads_node_ids() {
        let r = serde_json::json!({"path": ["welcome", "language", 3]});
        assert_eq!(record_path(&r), vec!["welcome", "language", "3"]);
    }
}
