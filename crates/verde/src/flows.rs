//! The live set of IVR flows: loaded at start, swapped atomically on a valid change, kept on an
//! invalid one.
//!
//! Calls hold an `Arc<Flow>` taken when they start, so a reload never changes a call in progress;
//! only new calls see the new set. Readers never block: the set sits in an `ArcSwap`.

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use verde_ivr::{Flow, FlowError, FlowSet};

#[derive(Clone)]
pub struct FlowsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    sounds: PathBuf,
    /// DID -> flow name from the config, taking precedence over what flows declare.
    overrides: BTreeMap<String, String>,
    current: ArcSwap<FlowSet>,
}

fn load(dir: &Path, sounds: &Path) -> Result<FlowSet, Vec<FlowError>> {
    let catalog = verde_ivr::DirCatalog::new(sounds);
    verde_ivr::load_flows(dir, &catalog)
}

fn numbers(set: &FlowSet) -> Vec<String> {
    set.flows()
        .iter()
        .flat_map(|f| f.numbers().iter().cloned())
        .collect()
}

fn describe(errors: &[FlowError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl FlowsHandle {
    /// Loads every flow; at start-up any error is fatal (there is no last good set to keep).
    pub fn load(
        dir: &Path,
        sounds: &Path,
        overrides: &BTreeMap<String, String>,
    ) -> Result<FlowsHandle> {
        let set = load(dir, sounds)
            .map_err(|errs| anyhow::anyhow!("invalid flows:\n{}", describe(&errs)))?;
        for (did, name) in overrides {
            if set.get(name).is_none() {
                anyhow::bail!("config numbers: {did} -> flow {name:?}, but no flow has that name");
            }
        }
        tracing::info!(dir = %dir.display(), numbers = ?numbers(&set), "flows loaded");
        Ok(FlowsHandle {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                sounds: sounds.to_path_buf(),
                overrides: overrides.clone(),
                current: ArcSwap::from_pointee(set),
            }),
        })
    }

    /// The flow answering `did`, if any.
    pub fn for_number(&self, did: &str) -> Option<Arc<Flow>> {
        let set = self.inner.current.load();
        match self.inner.overrides.get(did) {
            Some(name) => set.get(name),
            None => set.for_number(did),
        }
    }

    /// Re-reads the folder file by file: valid files replace their flows for new calls; a file
    /// with errors is refused (each error logged as `file:line: reason`) and its last good
    /// version keeps serving. Returns whether every file was accepted.
    pub fn reload(&self) -> bool {
        let catalog = verde_ivr::DirCatalog::new(&self.inner.sounds);
        let previous = self.inner.current.load_full();
        let (set, errors) = verde_ivr::reload_flows(&self.inner.dir, &catalog, &previous);
        for e in &errors {
            tracing::error!(file = %e.file.display(), line = e.line, reason = %e.reason, "flow refused: {e}");
        }
        if !errors.is_empty() {
            tracing::warn!(
                errors = errors.len(),
                "flow reload: refused files keep their last good version"
            );
        }
        if errors.is_empty() {
            tracing::info!(numbers = ?numbers(&set), "flows reloaded: new calls use the new flows");
        }
        self.inner.current.store(Arc::new(set));
        errors.is_empty()
    }

    /// Watches the flows folder and reloads after a burst of changes settles (editors write a
    /// file in several steps; reloading on each would log spurious errors).
    pub fn watch(&self) -> Result<notify::RecommendedWatcher> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !ev.kind.is_access() {
                    // A full channel already holds a pending reload: nothing is lost.
                    let _ = tx.try_send(());
                }
            }
        })
        .context("cannot start the flow watcher")?;
        watcher
            .watch(&self.inner.dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", self.inner.dir.display()))?;
        let me = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Settle: wait until 250 ms pass with no further change.
                while let Ok(Some(())) =
                    tokio::time::timeout(Duration::from_millis(250), rx.recv()).await
                {
                }
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            }
        });
        Ok(watcher)
    }
}

/// `verde check-flows`: prints each error as `file:line: reason`.
pub fn check_flows_cli(dir: &Path, sounds: &Path) -> std::process::ExitCode {
    match load(dir, sounds) {
        Ok(set) => {
            println!(
                "{}: {} flow(s) valid, numbers {:?}",
                dir.display(),
                set.len(),
                numbers(&set)
            );
            std::process::ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}
