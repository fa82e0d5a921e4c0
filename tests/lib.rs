//! Support code for verde's interop tests: verde is started as a real process and driven by real
//! peers (SIPp, baresip, linphone) over loopback, and what those peers saw is checked (SIP
//! responses, RTP captured with dumpcap, audio recorded by the softphone, call records from the
//! HTTP API).
//!
//! Every test runs inside a private network namespace that has only `lo` (tests/run.sh sets it
//! up with `unshare -n`), so peers that pick their own address cannot leak onto a real network and
//! port choices cannot collide with anything else on the machine. [`require_private_netns`] fails
//! a test that is started any other way: the suite never skips silently.
//!
//! This crate knows nothing of verde's internals: it only uses the command line, SIP/RTP on the
//! wire and the HTTP API, exactly as an operator or a carrier would.

pub mod acd;
pub mod baresip;
pub mod callbacks;
pub mod checks;
pub mod cti;
pub mod flows;
pub mod http;
pub mod kamailio;
pub mod linphone;
pub mod media_checks;
pub mod node;
pub mod pcap;
pub mod pg;
pub mod raw_sip;
pub mod sipp;
pub mod survey;
pub mod verde;
pub mod wav;

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The workspace root (the directory holding `ivr-flows/`, `sounds/`, `target/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// Fails the test unless it runs in a network namespace whose only interface is `lo` and `lo` is
/// up. `/sys/class/net` is not used: it shows the namespace of whoever mounted sysfs, so after a
/// plain `unshare -n` it still lists the host's interfaces; `/proc/self/net/dev` is per namespace.
pub fn require_private_netns() {
    let dev = fs::read_to_string("/proc/self/net/dev").unwrap_or_else(|e| {
        panic!("cannot read /proc/self/net/dev ({e}); run through tests/run.sh")
    });
    let names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names != ["lo"] {
        panic!(
            "interop tests must run in a private network namespace whose only interface is lo \
             (this one has: {}); run them through tests/run.sh",
            names.join(", ")
        );
    }
    if let Err(e) = UdpSocket::bind("127.0.0.1:0") {
        panic!("lo is not usable in this namespace ({e}): `ip link set lo up` first; run through tests/run.sh");
    }
}

/// A scratch directory for one test under `target/interop/`. Removed when the test passes, kept
/// (and its path printed) when it fails so the logs, captures and recordings can be inspected.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = target_dir()
            .join("interop")
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create test dir {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("VERDE_KEEP_TEST_DIRS").is_some() {
            eprintln!("test artifacts kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `poll` until it returns `Some`, panicking after `timeout` with a message naming `what`.
/// The 10 ms poll interval is only the granularity of checking for an event that has its own
/// source (a socket accepting, a file appearing, a record being stored), never a stand-in for one.
pub fn wait_for<T>(what: &str, timeout: Duration, poll: impl FnMut() -> Option<T>) -> T {
    match try_wait_for(timeout, poll) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`wait_for`] but returns `None` on timeout, for callers that add context to the failure.
pub fn try_wait_for<T>(timeout: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = poll() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Hands out `len` consecutive ports starting at an even number, each currently free for UDP and
/// TCP on 127.0.0.1. Ports are never handed out twice in one process, so a test can ask for its
/// SIP, HTTP, RTP and peer ports one after another without them overlapping.
pub fn free_ports(len: u16) -> u16 {
    // Below Linux's ephemeral range (32768-60999): a port found free here cannot be taken by
    // the kernel for some client's outgoing connection before verde or a peer binds it (an
    // HTTP client's source port once took a restarted verde's HTTP port that way).
    const LOW: u16 = 16000;
    const HIGH: u16 = 32000;
    // Different test binaries start from different places so a port still in TIME_WAIT from the
    // previous binary is unlikely to be picked again.
    let seed = (std::process::id().wrapping_mul(4099) % u32::from(HIGH - LOW)) as u16 & !1;
    let _ = NEXT_PORT.compare_exchange(0, LOW + seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..2000 {
        let mut start = NEXT_PORT.fetch_add(len + (len % 2), Ordering::SeqCst);
        if start < LOW || start.saturating_add(len) > HIGH {
            NEXT_PORT.store(LOW + len + (len % 2), Ordering::SeqCst);
            start = LOW;
        }
        start += start % 2;
        if (start..start + len).all(port_is_free) {
            return start;
        }
    }
    panic!("no block of {len} free ports found between {LOW} and {HIGH}");
}

/// One port free for both UDP and TCP (SIP listens on both).
pub fn free_port() -> u16 {
    free_ports(1)
}

fn port_is_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Sends SIGTERM to a child and waits up to `grace` for it to exit, then SIGKILLs it.
pub fn terminate(
    child: &mut std::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    signal(child, libc::SIGTERM, grace)
}

/// Sends `sig` and waits up to `grace`; SIGKILL after that.
pub fn signal(
    child: &mut std::process::Child,
    sig: libc::c_int,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
    if let Some(status) = try_wait_for(grace, || child.try_wait().ok().flatten()) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The last `n` lines of `text`, for failure messages that must stay readable.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// Reads a file that may not exist yet as a lossy string (empty when missing).
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_even_distinct_and_bindable() {
        let a = free_ports(10);
        let b = free_ports(4);
        assert_eq!(a % 2, 0);
        assert_eq!(b % 2, 0);
        assert!(
            b >= a + 10 || b + 4 <= a,
            "blocks overlap: {a}+10 and {b}+4"
        );
        UdpSocket::bind(("127.0.0.1", a + 9)).expect("last port of the block is free");
    }

    #[test]
    fn wait_for_times_out_with_none() {
        let t0 = Instant::now();
        let r: Option<()> = try_wait_for(Duration::from_millis(50), || None);
        assert!(r.is_none());
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let mut n = 0;
        assert_eq!(
            wait_for("third poll", Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            3
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail("a", 5), "a");
    }
}
