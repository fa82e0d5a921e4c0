//! linphone (`linphonec`, the command-line front end of liblinphone) as a second, independent
//! softphone: its own rc file written from `tests/fixtures/linphone/linphonerc.tmpl` for every
//! run (linphonec rewrites the file it is given), `HOME` pointed at a folder of its own (it keeps
//! its databases in `$HOME/.local/share/linphone` and fails to start without it), and driven over
//! stdin with the same commands a person would type at its `linphonec>` prompt.
//!
//! What linphone itself concluded is read from two places: its answers on stdout (`status
//! register`) and its debug log (`-d 6 -l FILE`), where every account state change is written as
//! `... moving from state [X] to [Y] ...`.

use crate::{fixtures_dir, free_ports, read_lossy, tail, terminate, TestDir};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::Duration;

/// A running linphonec.
pub struct Linphone {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// The UDP port it sends and receives SIP on (127.0.0.1).
    pub sip_port: u16,
    out_path: PathBuf,
    log_path: PathBuf,
}

/// Account registration states linphone reports (liblinphone's `LinphoneRegistrationState`).
pub const REGISTRATION_OK: &str = "LinphoneRegistrationOk";
pub const REGISTRATION_FAILED: &str = "LinphoneRegistrationFailed";

impl Linphone {
    /// Starts linphonec in `<dir>/linphone-<name>/` on fresh loopback ports and waits until it
    /// takes commands (it answers `soundcard use files`, which also keeps it off the sound
    /// devices a headless machine does not have). It registers nowhere until told to.
    pub fn start(dir: &TestDir, name: &str) -> Linphone {
        let ports = free_ports(6);
        let sip_port = ports;
        let home = dir.subdir(&format!("linphone-{name}/home"));
        fs::create_dir_all(home.join(".local/share/linphone"))
            .expect("create $HOME/.local/share/linphone");
        let conf_dir = dir.subdir(&format!("linphone-{name}"));
        let src = fixtures_dir().join("linphone").join("linphonerc.tmpl");
        let mut rc = fs::read_to_string(&src)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
        for (k, v) in [
            ("SIP_PORT", sip_port),
            ("RTP_PORT", ports + 2),
            ("VIDEO_RTP_PORT", ports + 4),
        ] {
            rc = rc.replace(&format!("@{k}@"), &v.to_string());
        }
        let rc_path = conf_dir.join("linphonerc");
        fs::write(&rc_path, rc).expect("write linphonerc");
        let out_path = conf_dir.join("linphonec.out");
        let log_path = conf_dir.join("linphone.log");
        let out = fs::File::create(&out_path).expect("create linphonec.out");
        let child = Command::new("linphonec")
            .arg("-c")
            .arg(&rc_path)
            .arg("-d")
            .arg("6")
            .arg("-l")
            .arg(&log_path)
            .env("HOME", &home)
            .current_dir(&conf_dir)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run linphonec ({e}); install it with apt-get install linphone-cli")
            });
        let mut phone = Linphone {
            child: Some(child),
            stdin: None,
            sip_port,
            out_path,
            log_path,
        };
        phone.stdin = phone.child.as_mut().and_then(|c| c.stdin.take());
        phone.command("soundcard use files");
        phone.wait_output(
            "linphonec to take commands",
            0,
            Duration::from_secs(15),
            |new| {
                new.contains("Using wav files instead of soundcard")
                    .then_some(())
            },
        );
        phone
    }

    /// Types one command line at linphonec's prompt.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("linphonec's stdin is open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!(
                "cannot send {line:?} to linphonec ({e}); its output:\n{}",
                tail(&self.output(), 30)
            );
        }
    }

    /// `register sip:<user>@<registrar> sip:<registrar> <password>`: the account linphonec
    /// registers with digest authentication.
    pub fn register(&mut self, user: &str, password: &str, registrar: SocketAddr) {
        self.command(&format!(
            "register sip:{user}@{registrar} sip:{registrar} {password}"
        ));
    }

    /// Waits for the account to reach `REGISTRATION_OK` or `REGISTRATION_FAILED` and returns
    /// which (the first of the two that linphone logged).
    pub fn wait_registration_outcome(&self, timeout: Duration) -> String {
        crate::try_wait_for(timeout, || {
            self.registration_states()
                .into_iter()
                .find(|s| s == REGISTRATION_OK || s == REGISTRATION_FAILED)
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for linphone's registration to succeed or \
                 fail; states so far: {:?}; its log:\n{}",
                self.registration_states(),
                tail(&self.logs(), 40)
            )
        })
    }

    /// The account states linphone moved through, in order.
    pub fn registration_states(&self) -> Vec<String> {
        states_in(&self.logs())
    }

    /// The status codes linphone's register refresher reported (`Register refresher [403]`).
    pub fn refresher_statuses(&self) -> Vec<u16> {
        refresher_statuses_in(&self.logs())
    }

    /// linphonec's own answer to `status register`: `registered, identity=... duration=...` or
    /// `registered=0`. Not after a refusal: linphonec then prompts for a password and would take
    /// the command for one.
    pub fn status_register(&mut self) -> String {
        let from = self.output().len();
        self.command("status register");
        self.wait_output(
            "linphonec's answer to `status register`",
            from,
            Duration::from_secs(5),
            |new| {
                // Only whole lines: the answer may be read while it is being written.
                let complete = &new[..new.rfind('\n')? + 1];
                complete
                    .lines()
                    .find(|l| l.trim_start().starts_with("registered"))
                    .map(|l| l.trim().to_string())
            },
        )
    }

    /// Waits until `found` returns `Some` for what linphonec printed after byte `from`.
    fn wait_output<T>(
        &mut self,
        what: &str,
        from: usize,
        timeout: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> T {
        let result = crate::try_wait_for(timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "linphonec exited ({status}) while waiting for {what}; its output:\n{}\n\
                     its log:\n{}",
                    tail(&self.output(), 30),
                    tail(&self.logs(), 40)
                );
            }
            let out = self.output();
            found(out.get(from..).unwrap_or_default())
        });
        result.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; its output:\n{}\nits log:\n{}",
                tail(&self.output(), 30),
                tail(&self.logs(), 40)
            )
        })
    }

    /// Everything linphonec printed (its prompt, the commands echoed, its answers).
    pub fn output(&self) -> String {
        read_lossy(&self.out_path)
    }

    /// linphone's debug log (every SIP message and state change).
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// `quit`: linphonec unregisters its account and exits. Only while it is at its prompt: a
    /// phone refused with a 403 asks for a password, and would take `quit` as one.
    pub fn quit(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.command("quit");
        self.wait_exit(Duration::from_secs(10));
    }

    /// Ends linphonec with SIGTERM, whatever it is waiting for (SIGKILL if it does not exit).
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) {
        let exited = crate::try_wait_for(timeout, || {
            self.child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        if exited.is_none() {
            eprintln!("linphonec did not exit within {timeout:?} of `quit`: terminating it");
        }
        self.stop();
    }
}

/// `Account [0x..] for identity [sip:..] moving from state [X] to [Y] on core [0x..]` -> Y.
fn states_in(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("Account [") && l.contains("moving from state ["))
        .filter_map(|l| {
            let to = l.split("] to [").nth(1)?;
            Some(to.split(']').next()?.to_string())
        })
        .collect()
}

/// `Register refresher [403] reason [Forbidden] for proxy [..]` -> 403.
fn refresher_statuses_in(log: &str) -> Vec<u16> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("Register refresher [").nth(1)?;
            rest.split(']').next()?.parse().ok()
        })
        .collect()
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "---- linphonec output ----\n{}\n---- linphone log (last 60 lines) ----\n{}\n----",
                tail(&self.output(), 40),
                tail(&self.logs(), 60)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as linphone 5.1.65 writes them with `-d 6`.
    const LOG: &str = "\
2026-11-27 17:52:15:653 liblinphone-message-Account [0x55ad05816830] for identity [sip:1001@127.0.0.1:25060] moving from state [LinphoneRegistrationNone] to [LinphoneRegistrationProgress] on core [0x55ad0572f470]
2026-11-27 17:52:15:675 liblinphone-message-Register refresher [403] reason [Forbidden] for proxy [sip:127.0.0.1:25060]
2026-11-27 17:52:15:675 liblinphone-message-Account [0x55ad05816830] for identity [sip:1001@127.0.0.1:25060] moving from state [LinphoneRegistrationProgress] to [LinphoneRegistrationFailed] on core [0x55ad0572f470]
2026-11-27 17:52:15:676 belle-sip-message-Changing [client] [REGISTER] transaction [0x55ad057a4650], from state [TRYING] to [COMPLETED]
";

    #[test]
    fn account_states_and_refresher_statuses_are_read_from_the_log() {
        assert_eq!(
            states_in(LOG),
            ["LinphoneRegistrationProgress", REGISTRATION_FAILED]
        );
        assert_eq!(refresher_statuses_in(LOG), [403]);
        assert!(states_in("").is_empty());
    }
}
