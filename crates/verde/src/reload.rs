//! SIGHUP: re-reads the flows and the configuration file while calls go on.
//!
//! What a carrier or an agent needs changed at once applies live: the trunks (which addresses
//! may send calls) and every agent's and supervisor's secret (a leaver removed from the file
//! can no longer register or log in). Everything else is held by sockets, tasks and the ACD
//! as they were started, so a change there is named in the log as waiting for a restart rather
//! than half-applied. A file that does not load (YAML error, failed check) is refused whole,
//! with file, line and reason, and the running configuration stays.

use crate::config::Config;
use crate::sip_core::Engine;
use std::collections::{BTreeMap, BTreeSet};

/// Where the configuration comes from: the file and the command line's overrides, applied
/// again on each reload exactly as at start.
pub type ConfigSource = std::sync::Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// What a reload did, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<&'static str>,
    pub restart_needed: Vec<String>,
}

/// The top-level sections of a config by name, as text to compare. Derived from `Debug` so a
/// section added to `Config` later is compared without anyone remembering to list it here.
fn sections(cfg: &Config) -> BTreeMap<String, String> {
    let text = format!("{cfg:#?}");
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().skip(1) {
        let top = line.len() > 4 && line.starts_with("    ") && !line[4..].starts_with(' ');
        if top && line[4..].contains(':') && !line[4..].starts_with('}') {
            if let Some((k, v)) = current.take() {
                out.insert(k, v);
            }
            let name = line[4..].split(':').next().unwrap_or_default().to_string();
            current = Some((name, line.to_string()));
        } else if let Some((_, v)) = current.as_mut() {
            v.push('\n');
            v.push_str(line);
        }
    }
    if let Some((k, v)) = current {
        out.insert(k, v);
    }
    out
}

/// Copies `from`'s secrets onto the agents and supervisors of `to` that `from` also has.
fn copy_secrets(from: &Config, to: &mut Config) {
    for a in &mut to.agents {
        if let Some(f) = from.agents.iter().find(|f| f.id == a.id) {
            a.password = f.password.clone();
            a.ha1_md5 = f.ha1_md5.clone();
            a.ha1_sha256 = f.ha1_sha256.clone();
        }
    }
    for s in &mut to.supervisors {
        if let Some(f) = from.supervisors.iter().find(|f| f.id == s.id) {
            s.password = f.password.clone();
            s.ha1_md5 = f.ha1_md5.clone();
            s.ha1_sha256 = f.ha1_sha256.clone();
        }
    }
}

/// `new` with the parts a reload applies live set back to `old`'s, so what still differs
/// is what needs a restart.
fn without_live_parts(old: &Config, new: &Config) -> Config {
    let mut probe = new.clone();
    probe.trunks = old.trunks.clone();
    copy_secrets(old, &mut probe);
    probe
}

fn secrets(cfg: &Config) -> String {
    let agents = cfg
        .agents
        .iter()
        .map(|a| (&a.id, &a.password, &a.ha1_md5, &a.ha1_sha256));
    let supervisors = cfg
        .supervisors
        .iter()
        .map(|s| (&s.id, &s.password, &s.ha1_md5, &s.ha1_sha256));
    format!("{:?}", agents.chain(supervisors).collect::<Vec<_>>())
}

/// Compares `old` and `new`: what applies live and which sections wait for a restart.
pub fn plan(old: &Config, new: &Config) -> Outcome {
    let mut applied = Vec::new();
    if format!("{:?}", old.trunks) != format!("{:?}", new.trunks) {
        applied.push("trunks");
    }
    if secrets(old) != secrets(new) {
        applied.push("accounts");
    }
    let (before, after) = (sections(old), sections(&without_live_parts(old, new)));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let restart_needed = names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect();
    Outcome {
        applied,
        restart_needed,
    }
}

/// Reloads from `source` and applies what can change live. `Err` (logged) leaves everything
/// as it was.
pub fn config(engine: &Engine, running: &mut Config, source: &ConfigSource) -> Option<Outcome> {
    let new = match source() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"),
                "config reload refused: the running configuration stays");
            return None;
        }
    };
    let outcome = plan(running, &new);
    if outcome.applied.contains(&"trunks") {
        engine.replace_trunks(new.trunks.clone());
    }
    if outcome.applied.contains(&"accounts") {
        engine.cti.accounts.replace(&new);
    }
    if outcome.restart_needed.is_empty() {
        tracing::info!(applied = ?outcome.applied, "config reloaded");
    } else {
        tracing::warn!(applied = ?outcome.applied, restart_needed = ?outcome.restart_needed,
            "config reloaded; changes to these sections take effect at the next restart");
    }
    // What the next reload compares with: the live parts as applied, the rest as running
    // (so a change waiting for a restart is named again, not forgotten).
    running.trunks = new.trunks.clone();
    copy_secrets(&new, running);
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "agents:\n  - { id: \"1001\", password: one, queues: [q] }\n\
        queues:\n  - { name: q }\n";

    fn cfg(extra: &str) -> Config {
        Config::parse("t.yaml", Some(&format!("{BASE}{extra}"))).unwrap()
    }

    #[test]
    fn nothing_changed_is_nothing_to_do() {
        assert_eq!(plan(&cfg(""), &cfg("")), Outcome::default());
    }

    #[test]
    fn trunks_and_secrets_apply_live_and_other_sections_wait() {
        let old = cfg("");
        let new = Config::parse(
            "t.yaml",
            Some(
                "agents:\n  - { id: \"1001\", password: two, queues: [q] }\n\
                 queues:\n  - { name: q }\n\
                 trunks:\n  - { name: carrier, addresses: [192.0.2.0/24] }\n",
            ),
        )
        .unwrap();
        let o = plan(&old, &new);
        assert_eq!(o.applied, vec!["trunks", "accounts"]);
        assert!(o.restart_needed.is_empty(), "{o:?}");

        let o = plan(
            &old,
            &cfg("media:\n  rtp_ports: 30000-30999\nshutdown_grace: 5s\n"),
        );
        assert!(o.applied.is_empty());
        assert_eq!(o.restart_needed, vec!["media", "shutdown_grace"]);
    }

    #[test]
    fn a_new_agent_is_a_live_account_and_an_acd_change() {
        let old = cfg("");
        let new = Config::parse(
            "t.yaml",
            Some(
                "agents:\n  - { id: \"1001\", password: one, queues: [q] }\n\
                 \x20 - { id: \"1002\", password: x, queues: [q] }\nqueues:\n  - { name: q }\n",
            ),
        )
        .unwrap();
        let o = plan(&old, &new);
        assert_eq!(o.applied, vec!["accounts"]);
        assert_eq!(o.restart_needed, vec!["agents"]);
    }

    #[test]
    fn sections_cover_every_top_level_field() {
        let s = sections(&cfg(""));
        for name in [
            "sip",
            "media",
            "trunks",
            "agents",
            "queues",
            "shutdown_grace",
            "webrtc",
        ] {
            assert!(s.contains_key(name), "{name} missing from {:?}", s.keys());
        }
        assert!(s["agents"].contains("1001"));
    }
}
