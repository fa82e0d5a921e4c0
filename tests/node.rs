//! A script of `tests/browser/` (headless chromium driven by playwright-core) run by node and
//! talked to in lines: the test writes lines to its stdin and reads its stdout line by line as
//! it comes. What the lines mean (STEP/GO, KEY, SNAPSHOTS...) is each test's own protocol; this
//! module only starts the script, carries the lines, keeps its stderr for failure messages and
//! makes sure it does not outlive the test.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::{repo_root, target_dir, terminate, try_wait_for};

/// Stdout lines longer than this are cut in the test's output: a script may print tens of
/// kilobytes of JSON on one line (webrtc_caller.mjs's `SNAPSHOTS`).
const PRINT_MAX: usize = 500;
/// How long a script may take to exit on its own once the test is done with it (it closes
/// chromium first) before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long SIGTERM is given (playwright closes chromium on it) before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `target/screenshots/<name>/`, emptied: outside the test's scratch dir (removed when the
/// test passes), so a person can look at what the browser showed.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("screenshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A running `node tests/browser/<script>`.
pub struct NodeScript {
    child: Child,
    to: ChildStdin,
    from: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl NodeScript {
    /// Starts `node <script> <args...>` in `tests/browser/` with `envs` added to the
    /// environment. Every stdout line is printed as `browser: ...` and every stderr line as
    /// `browser stderr: ...` as they come.
    pub fn start(
        script: &str,
        args: &[&dyn AsRef<OsStr>],
        envs: &[(&str, &dyn AsRef<OsStr>)],
    ) -> NodeScript {
        let browser_dir = repo_root().join("tests/browser");
        assert!(
            browser_dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed in tests/browser (tests/run.sh runs `npm ci` there)"
        );
        let mut command = Command::new("node");
        command.current_dir(&browser_dir).arg(script);
        for arg in args {
            command.arg(arg);
        }
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start node (install Node.js)");
        let to = child.stdin.take().expect("node stdin");
        let (tx, from) = mpsc::channel::<String>();
        let out = child.stdout.take().expect("node stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("browser: {}", printable(&line));
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("node stderr");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("browser stderr: {line}");
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        NodeScript {
            child,
            to,
            from,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line; an error when none came within `timeout` or the script closed
    /// its stdout (it exited: its stderr says why).
    pub fn next_line(&self, timeout: Duration) -> Result<String, RecvTimeoutError> {
        self.from.recv_timeout(timeout)
    }

    /// Writes `line` to the script's stdin.
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.to, "{line}").and_then(|_| self.to.flush())
    }

    /// Ends the script and returns its exit status and stderr. `kill_first`: terminate it at
    /// once (it failed, or may still wait for a line); else it gets [`EXIT_GRACE`] to exit on
    /// its own and is terminated after that (the status then says so).
    pub fn finish(&mut self, kill_first: bool) -> (ExitStatus, String) {
        let child = &mut self.child;
        let exited = if kill_first {
            None
        } else {
            try_wait_for(EXIT_GRACE, || child.try_wait().ok().flatten())
        };
        let status = exited
            .or_else(|| terminate(child, KILL_GRACE))
            .expect("node exit status");
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for NodeScript {
    /// A test that panicked mid-way leaves no node (and no chromium) behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = terminate(&mut self.child, KILL_GRACE);
        }
    }
}

/// `line`, or its first [`PRINT_MAX`] bytes (on a character boundary) and its length.
fn printable(line: &str) -> String {
    if line.len() <= PRINT_MAX {
        return line.to_string();
    }
    let mut end = PRINT_MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        assert_eq!(printable("STEP ready"), "STEP ready");
        let long = format!("SNAPSHOTS {}", "é".repeat(PRINT_MAX));
        let cut = printable(&long);
        assert!(cut.len() < PRINT_MAX + 30, "{cut}");
        assert!(cut.starts_with("SNAPSHOTS é"), "{cut}");
        assert!(
            cut.ends_with(&format!("... ({} bytes)", long.len())),
            "{cut}"
        );
    }
}
