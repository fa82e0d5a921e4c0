//! A private PostgreSQL server for one test: its own cluster (initdb) in the test's scratch
//! directory, listening only on a unix socket there (`listen_addresses=''`), so nothing is
//! bound on any network interface and two tests never meet. Role and database `verde` exist
//! and are owned by role `verde`; authentication is `trust` (only whoever can reach the socket
//! directory can connect).
//!
//! PostgreSQL refuses to run as uid 0, and the suite runs as root in CI (`unshare -n`) and as
//! fake root for developers (`unshare -rn`, where only uid 0 exists). So the server runs as:
//! - the `postgres` account through `runuser`, when that uid exists in our user namespace
//!   (real root);
//! - the `postgres` account's uid inside a nested user namespace mapped onto ours
//!   (`unshare --map-user`), when it does not (fake root: runuser cannot switch to an unmapped
//!   uid, and a uid with an /etc/passwd entry keeps initdb's user lookup working);
//! - ourselves, when we are not root.

use crate::{tail, try_wait_for};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The socket file is `.s.PGSQL.<PORT>` in the socket directory; with no TCP listener the
/// number only names the file, so every server can use the usual one.
const PORT: u16 = 5432;
/// How long the server may take to accept connections (initdb is separate and not bounded).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// sun_path holds 108 bytes; longer socket directories fall back to a short one under /tmp.
const MAX_SOCKET_DIR: usize = 90;

static NEXT_SCRATCH: AtomicU32 = AtomicU32::new(0);

/// How the server processes are started (see the module documentation).
#[derive(Debug, Clone)]
enum RunAs {
    Me,
    Runuser,
    NestedUserns { uid: u32, gid: u32 },
}

/// A running private PostgreSQL cluster. Dropping it stops the server at once
/// (`pg_ctl stop -m immediate`).
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    run_as: RunAs,
    /// A /tmp directory created because `dir` was too deep or unreachable; removed on drop.
    scratch: Option<PathBuf>,
    running: bool,
}

impl PgServer {
    /// Creates a cluster under `dir` (`dir/pg/data`, socket in `dir/pg`), starts it, waits
    /// until `pg_isready` says it accepts connections, and creates role and database `verde`.
    pub fn start(dir: &Path) -> PgServer {
        let bin = pg_bin_dir();
        let run_as = run_as();
        let mut root = dir.join("pg");
        let mut scratch = None;
        if root.as_os_str().len() > MAX_SOCKET_DIR || !reachable_by_server(&run_as, dir) {
            let n = NEXT_SCRATCH.fetch_add(1, Ordering::SeqCst);
            root = PathBuf::from(format!("/tmp/verde-pg-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            scratch = Some(root.clone());
        }
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        if let RunAs::Runuser = run_as {
            chown_to_postgres(&root);
        }
        let mut pg = PgServer {
            data: root.join("data"),
            socket_dir: root.clone(),
            log: root.join("postgres.log"),
            bin,
            run_as,
            scratch,
            running: false,
        };
        let out = pg
            .server_command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("cannot run initdb");
        check(&out, "initdb");
        pg.start_again();
        pg.psql_as("postgres", "postgres", "CREATE ROLE verde LOGIN");
        pg.psql_as("postgres", "postgres", "CREATE DATABASE verde OWNER verde");
        pg
    }

    /// What a libpq client needs to reach database `verde` as role `verde`.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={PORT} user=verde dbname=verde",
            self.socket_dir.display()
        )
    }

    /// The server's own log (startup errors, crashes).
    pub fn logs(&self) -> String {
        crate::read_lossy(&self.log)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`: sessions are ended, data is kept).
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Starts the server again on the same data and socket and waits until it accepts
    /// connections. Also used for the first start.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c fsync=off",
            self.socket_dir.display()
        );
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-W", "-o", &opts, "start"])
            .output()
            .expect("cannot run pg_ctl");
        check(&out, "pg_ctl start");
        self.running = true;
        let ready = try_wait_for(READY_TIMEOUT, || {
            Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.socket_dir)
                .arg("-p")
                .arg(PORT.to_string())
                .args(["-U", "postgres", "-d", "postgres"])
                .status()
                .ok()
                .filter(|s| s.success())
        });
        if ready.is_none() {
            panic!(
                "PostgreSQL did not accept connections within {READY_TIMEOUT:?} (pg_isready); its log:\n{}",
                tail(&self.logs(), 40)
            );
        }
    }

    /// Runs one SQL statement as role `verde` in database `verde` and returns the rows, each
    /// row's columns separated by `|` (psql's unaligned, tuples-only output).
    pub fn query(&self, sql: &str) -> Vec<String> {
        self.psql_as("verde", "verde", sql)
    }

    fn psql_as(&self, user: &str, db: &str, sql: &str) -> Vec<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &PORT.to_string(), "-U", user, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run psql");
        check(&out, &format!("psql {sql:?}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        self.running = false;
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "stop"])
            .output()
            .expect("cannot run pg_ctl");
        if !std::thread::panicking() {
            check(&out, &format!("pg_ctl stop -m {mode}"));
        }
    }

    /// A server program (`initdb`, `pg_ctl`) run as the account that owns the cluster.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            RunAs::Me => Command::new(path),
            RunAs::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            RunAs::NestedUserns { uid, gid } => {
                let mut c = Command::new("unshare");
                c.arg(format!("--map-user={uid}"))
                    .arg(format!("--map-group={gid}"))
                    .arg("--")
                    .arg(path);
                c
            }
        };
        // pg_ctl's server keeps its stdout/stderr: they must not be the test's pipes, or
        // `output()` would wait for the server to exit.
        cmd.stdin(Stdio::null()).current_dir(&self.socket_dir);
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.running {
            eprintln!(
                "---- postgres log ({}) ----\n{}\n---- end of postgres log ----",
                self.log.display(),
                tail(&self.logs(), 40)
            );
        }
        self.pg_ctl_stop("immediate");
        if let Some(dir) = &self.scratch {
            if !std::thread::panicking() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}

fn check(out: &Output, what: &str) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding a server (Debian keeps them off
/// PATH), or `$VERDE_PG_BIN`.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VERDE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install postgresql, \
             or set VERDE_PG_BIN to the directory holding initdb, pg_ctl and postgres)"
        ),
    }
}

fn run_as() -> RunAs {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return RunAs::Me;
    }
    let (uid, gid) = postgres_account().unwrap_or_else(|| {
        panic!("running as root but there is no `postgres` account in /etc/passwd (apt-get install postgresql)")
    });
    let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    if uid_mapped(&map, uid) {
        RunAs::Runuser
    } else {
        RunAs::NestedUserns { uid, gid }
    }
}

/// Whether `uid` exists in the user namespace described by `uid_map` ("inside outside count"
/// per line).
fn uid_mapped(uid_map: &str, uid: u32) -> bool {
    uid_map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f.len() == 3 && f[0] <= u64::from(uid) && u64::from(uid) < f[0] + f[2]
    })
}

fn postgres_account() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// Whether the server's account can create files in `dir` (its parents may be closed to it,
/// e.g. a checkout under /root).
fn reachable_by_server(run_as: &RunAs, dir: &Path) -> bool {
    match run_as {
        RunAs::Runuser => Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        _ => true,
    }
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("cannot run chown");
    assert!(status.success(), "chown postgres {} failed", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_map_lines_are_ranges() {
        assert!(uid_mapped("         0          0 4294967295\n", 101));
        assert!(!uid_mapped("         0          0          1\n", 101));
        assert!(uid_mapped("0 1000 1\n100 200000 65536\n", 101));
        assert!(!uid_mapped("", 0));
    }
}
