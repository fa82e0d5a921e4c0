//! Kamailio in front of verde nodes, for the multi-node tests: `deploy/kamailio/kamailio.cfg`
//! as shipped, with only its site settings (addresses, file folder, control socket) and its
//! logging (to stderr, captured in `kamailio.log`) changed at test time, the way
//! `deploy/kamailio/check/run.sh` does it. The dispatcher list and the address list are
//! written for the test's loopback addresses; `dbtext/` is copied as shipped.
//!
//! Every address must be distinct (Kamailio recognises its nodes by address alone,
//! `ds_is_from_list(.., 3)` ignores ports): all of 127.0.0.0/8 is on `lo` in the test's
//! namespace, so 127.0.0.10, .11, ... need no setup.

use crate::{read_lossy, repo_root, tail, terminate, try_wait_for, TestDir};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long Kamailio may take to load its modules and answer on its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A verde node as Kamailio's dispatcher knows it.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// The `node=` attribute (a, b, ...).
    pub name: String,
    /// The node's SIP address, `ip:port`.
    pub sip: String,
    /// Its home set for agents (11, 12, ... in the shipped list).
    pub home_set: u32,
}

/// Where Kamailio and its peers are.
#[derive(Debug, Clone)]
pub struct KamailioSetup {
    /// Kamailio's own address (it listens on port 5060 there).
    pub ip: String,
    /// The carrier: group 1 of the address list, and where callbacks are relayed (port 5060).
    pub carrier_ip: String,
    /// Agents' phones' network (group 2), one address.
    pub agents_ip: String,
    /// Dispatcher set 1 (toll-free numbers), in order; each node also gets its home set.
    pub nodes: Vec<NodeEntry>,
}

/// One dispatcher destination as `kamcmd dispatcher.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub set: u32,
    pub uri: String,
    /// `AP` active and probed, `IP` inactive (probes failing, or a call timed out), `TP`
    /// trying, `DX` disabled.
    pub flags: String,
}

impl Destination {
    /// Whether the dispatcher skips this destination for new calls.
    pub fn is_down(&self) -> bool {
        self.flags.starts_with('I') || self.flags.starts_with('D')
    }
}

/// A running Kamailio. Dropping it stops it (SIGTERM, then SIGKILL); a failing test prints
/// the end of its log.
pub struct Kamailio {
    child: Option<Child>,
    log: PathBuf,
    ctl: String,
    /// Holds the control socket: a test folder is often too deep for a socket path.
    ctl_dir: PathBuf,
    pub setup: KamailioSetup,
}

impl Kamailio {
    /// Writes the configuration into `dir/kamailio/`, starts `kamailio -DD -E` and waits until
    /// its control socket lists every node in the dispatcher.
    pub fn start(dir: &TestDir, setup: KamailioSetup) -> Kamailio {
        let etc = dir.subdir("kamailio");
        let shipped = repo_root().join("deploy/kamailio");
        copy_dir(&shipped.join("dbtext"), &etc.join("dbtext"));
        static N: AtomicU32 = AtomicU32::new(0);
        let ctl_dir = PathBuf::from(format!(
            "/tmp/verde-kam-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&ctl_dir);
        fs::create_dir_all(&ctl_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", ctl_dir.display()));
        let ctl = format!("unix:{}/kamailio_ctl", ctl_dir.display());

        let cfg = fs::read_to_string(shipped.join("kamailio.cfg"))
            .expect("read deploy/kamailio/kamailio.cfg");
        let cfg = site_settings(&cfg, &setup, &etc, &ctl);
        let cfg_path = etc.join("kamailio.cfg");
        fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
        fs::write(etc.join("dispatcher.list"), dispatcher_list(&setup.nodes))
            .expect("write dispatcher.list");
        fs::write(
            etc.join("address.list"),
            format!(
                "1 {} 32 0 carrier\n2 {} 32 0 agents\n",
                setup.carrier_ip, setup.agents_ip
            ),
        )
        .expect("write address.list");

        let log = dir.join("kamailio.log");
        let out = fs::File::create(&log).expect("create kamailio.log");
        let child = Command::new(sbin("kamailio"))
            .args(["-DD", "-E", "-f"])
            .arg(&cfg_path)
            .arg("-P")
            .arg(etc.join("kamailio.pid"))
            .current_dir(&etc)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run kamailio ({e}); tests/run.sh installs it (package kamailio)")
            });
        let mut k = Kamailio {
            child: Some(child),
            log,
            ctl,
            ctl_dir,
            setup,
        };
        let want = k.setup.nodes.len() * 2;
        let ready = try_wait_for(READY_TIMEOUT, || {
            if let Some(status) = k.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "kamailio exited ({status}) while starting; its log:\n{}",
                    tail(&k.logs(), 60)
                );
            }
            k.try_destinations().filter(|d| d.len() == want)
        });
        if ready.is_none() {
            panic!(
                "timed out after {READY_TIMEOUT:?} waiting for kamailio's control socket to list \
                 {want} dispatcher destinations; its log:\n{}",
                tail(&k.logs(), 60)
            );
        }
        k
    }

    /// Everything Kamailio logged so far.
    pub fn logs(&self) -> String {
        read_lossy(&self.log)
    }

    /// The dispatcher's destinations now (`kamcmd dispatcher.list`).
    pub fn destinations(&self) -> Vec<Destination> {
        self.try_destinations().unwrap_or_else(|| {
            panic!(
                "kamcmd dispatcher.list failed; kamailio log:\n{}",
                tail(&self.logs(), 40)
            )
        })
    }

    fn try_destinations(&self) -> Option<Vec<Destination>> {
        let out = Command::new(sbin("kamcmd"))
            .args(["-s", &self.ctl, "dispatcher.list"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| parse_dispatcher_list(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until the destination `sip` (`ip:port`) of set `set` is out of the dispatcher's
    /// choice (marked inactive by a failed call or by its probes) and returns its state.
    pub fn wait_down(&self, set: u32, sip: &str, timeout: Duration) -> Destination {
        let uri = format!("sip:{sip}");
        let mut last = None;
        try_wait_for(timeout, || {
            let d = self
                .destinations()
                .into_iter()
                .find(|d| d.set == set && d.uri == uri);
            last = d.clone();
            d.filter(Destination::is_down)
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for kamailio to mark {uri} (set {set}) down; \
                 last seen {last:?}; kamailio log:\n{}",
                tail(&self.logs(), 40)
            )
        })
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!(
                "---- kamailio log ({}), last 80 lines ----\n{}\n---- end of kamailio log ----",
                self.log.display(),
                tail(&self.logs(), 80)
            );
        }
        let _ = fs::remove_dir_all(&self.ctl_dir);
    }
}

/// The shipped configuration with the test's addresses and folder, the control socket at
/// `ctl` and logs on stderr. Fails if the shipped file no longer has a line this relies on.
fn site_settings(cfg: &str, setup: &KamailioSetup, etc: &Path, ctl: &str) -> String {
    let edits = [
        (
            "#!substdef \"!KAM_IP!192.0.2.10!g\"",
            format!("#!substdef \"!KAM_IP!{}!g\"", setup.ip),
        ),
        (
            "#!substdef \"!CARRIER_IP!198.51.100.1!g\"",
            format!("#!substdef \"!CARRIER_IP!{}!g\"", setup.carrier_ip),
        ),
        (
            "#!substdef \"!KAM_ETC!/etc/kamailio!g\"",
            format!("#!substdef \"!KAM_ETC!{}!g\"", etc.display()),
        ),
        ("unix:/run/kamailio/kamailio_ctl", ctl.to_string()),
        ("log_stderror=no", "log_stderror=yes".to_string()),
    ];
    let mut cfg = cfg.to_string();
    for (from, to) in edits {
        assert!(
            cfg.contains(from),
            "deploy/kamailio/kamailio.cfg no longer contains {from:?}: update tests/kamailio.rs"
        );
        cfg = cfg.replace(from, &to);
    }
    cfg
}

fn dispatcher_list(nodes: &[NodeEntry]) -> String {
    let mut s = String::new();
    for n in nodes {
        s.push_str(&format!("1 sip:{} 8 0 node={}\n", n.sip, n.name));
    }
    for n in nodes {
        s.push_str(&format!(
            "{} sip:{} 8 0 node={}\n",
            n.home_set, n.sip, n.name
        ));
    }
    s
}

/// Reads `kamcmd dispatcher.list`: nested `SET: { ID: n ... DEST: { URI: .. FLAGS: .. } }`.
fn parse_dispatcher_list(text: &str) -> Vec<Destination> {
    let mut out = Vec::new();
    let mut set = 0;
    let mut uri: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("ID:") {
            set = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("URI:") {
            uri = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("FLAGS:") {
            if let Some(uri) = uri.take() {
                out.push(Destination {
                    set,
                    uri,
                    flags: v.trim().to_string(),
                });
            }
        }
    }
    out
}

/// `name` from PATH, else from /usr/sbin (where Debian puts it, off a non-root user's PATH).
fn sbin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if on_path {
        PathBuf::from(name)
    } else {
        Path::new("/usr/sbin").join(name)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    for entry in
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()))
    {
        let entry = entry.expect("directory entry");
        fs::copy(entry.path(), to.join(entry.file_name()))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", entry.path().display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatcher_list_output_is_read_per_set() {
        let text = "{\n\tNRSETS: 2\n\tRECORDS: {\n\t\tSET: {\n\t\t\tID: 1\n\t\t\tTARGETS: {\n\
                    \t\t\t\tDEST: {\n\t\t\t\t\tURI: sip:127.0.0.11:5060\n\t\t\t\t\tFLAGS: AP\n\
                    \t\t\t\t\tPRIORITY: 0\n\t\t\t\t}\n\t\t\t\tDEST: {\n\t\t\t\t\tURI: sip:127.0.0.12:5060\n\
                    \t\t\t\t\tFLAGS: IP\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t\tSET: {\n\t\t\tID: 11\n\
                    \t\t\tTARGETS: {\n\t\t\t\tDEST: {\n\t\t\t\t\tURI: sip:127.0.0.11:5060\n\
                    \t\t\t\t\tFLAGS: AP\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n";
        let d = parse_dispatcher_list(text);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!((d[1].set, d[1].uri.as_str()), (1, "sip:127.0.0.12:5060"));
        assert!(d[1].is_down() && !d[0].is_down());
        assert_eq!(d[2].set, 11);
    }

    #[test]
    fn shipped_config_takes_the_site_settings() {
        let shipped = fs::read_to_string(repo_root().join("deploy/kamailio/kamailio.cfg")).unwrap();
        let setup = KamailioSetup {
            ip: "127.0.0.10".into(),
            carrier_ip: "127.0.0.2".into(),
            agents_ip: "127.0.0.13".into(),
            nodes: vec![],
        };
        let cfg = site_settings(&shipped, &setup, Path::new("/x/etc"), "unix:/x/ctl");
        assert!(cfg.contains("!KAM_IP!127.0.0.10!g"));
        assert!(cfg.contains("!KAM_ETC!/x/etc!g"));
        assert!(cfg.contains("unix:/x/ctl"));
        assert!(!cfg.contains("192.0.2.10") && !cfg.contains("log_stderror=no"));
    }
}
