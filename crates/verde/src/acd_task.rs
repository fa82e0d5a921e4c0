//! The ACD's single owner: one task runs the sans-IO [`verde_acd::Acd`], fed by a bounded
//! channel. No lock is taken on the dispatch path: call tasks and the SIP task send inputs, the
//! task routes the resulting actions to the calls' handles and publishes a snapshot for readers
//! (HTTP, later the CTI) so that they never touch the dispatcher.

use crate::call::CallInput;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use verde_acd::{Acd, AcdError, Action, AgentState, CallKey, Input, Snapshot};

pub enum AcdCmd {
    Input(Input),
    /// An agent dialed the login code: log in if logged out, else become ready.
    LoginOrReady {
        agent: String,
        queues: Option<Vec<verde_acd::QueueName>>,
    },
    /// A command whose outcome someone waits for (the CTI's answer to the agent's click).
    Checked {
        cmd: Box<AcdCmd>,
        reply: oneshot::Sender<Result<(), AcdError>>,
    },
}

#[derive(Clone)]
pub struct AcdHandle {
    tx: mpsc::Sender<AcdCmd>,
    /// Call tasks waiting in (or served by) the ACD.
    pub calls: Arc<DashMap<u64, mpsc::Sender<CallInput>>>,
    snapshot: Arc<ArcSwap<(Instant, Snapshot)>>,
    queues: Arc<Vec<String>>,
}

impl AcdHandle {
    pub fn send(&self, cmd: AcdCmd) -> Result<(), AcdCmd> {
        // Back-pressure is explicit: a full ACD queue is logged, never waited on while a call
        // holds a timer.
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        })
    }

    pub fn input(&self, input: Input) {
        if self.send(AcdCmd::Input(input)).is_err() {
            tracing::error!("ACD input queue full or closed: input dropped");
        }
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q == name)
    }

    /// The latest published state and when it was taken.
    pub fn snapshot(&self) -> Arc<(Instant, Snapshot)> {
        self.snapshot.load_full()
    }
}

pub fn start(
    queues: Vec<verde_acd::QueueConfig>,
    agents: Vec<verde_acd::AgentConfig>,
    cti: Arc<crate::cti::Hub>,
    records: crate::records::Records,
) -> anyhow::Result<AcdHandle> {
    let now = Instant::now();
    let names = queues.iter().map(|q| q.name.clone()).collect();
    let acd = Acd::new(queues, agents, now).map_err(|e| anyhow::anyhow!("ACD config: {e}"))?;
    let (tx, rx) = mpsc::channel(65_536);
    let handle = AcdHandle {
        tx,
        calls: Arc::new(DashMap::new()),
        snapshot: Arc::new(ArcSwap::from_pointee((now, acd.snapshot(now)))),
        queues: Arc::new(names),
    };
    tokio::spawn(run(acd, rx, handle.clone(), cti, records));
    Ok(handle)
}

async fn run(
    mut acd: Acd,
    mut rx: mpsc::Receiver<AcdCmd>,
    handle: AcdHandle,
    cti: Arc<crate::cti::Hub>,
    records: crate::records::Records,
) {
    // Each agent's last state, to name its transitions in the queue log.
    let mut last: std::collections::HashMap<String, AgentState> = Default::default();
    // Readers (wallboard, /api, CTI replies) get a fresh view at least this often...
    const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
    // ...and a change shows within this. Not after every burst: a snapshot walks every agent,
    // and at hundreds of calls a second one per burst cost a tenth of the engine's CPU.
    const SNAPSHOT_AFTER_CHANGE: Duration = Duration::from_millis(50);
    let mut last_snapshot = Instant::now();
    let mut dirty = false;
    let snapshot_due = |last: Instant, dirty: bool| {
        last + if dirty {
            SNAPSHOT_AFTER_CHANGE
        } else {
            SNAPSHOT_EVERY
        }
    };
    loop {
        let next_snapshot = snapshot_due(last_snapshot, dirty);
        let deadline = acd
            .poll_timeout()
            .unwrap_or(next_snapshot)
            .min(next_snapshot);
        let mut changed = false;
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let now = Instant::now();
                apply(&mut acd, cmd, now);
                // Take whatever else is queued before routing actions: one pass per burst.
                while let Ok(cmd) = rx.try_recv() {
                    apply(&mut acd, cmd, now);
                }
                changed = true;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                acd.handle_timeout(Instant::now());
            }
        }
        while let Some(action) = acd.poll_action() {
            changed = true;
            if let Action::AgentState { agent, state } = &action {
                let before = last.insert(agent.as_str().to_string(), state.clone());
                if let Some(ev) = agent_log_event(agent.as_str(), before.as_ref(), state) {
                    records.event(ev);
                }
            }
            route(&handle, &cti, action);
        }
        dirty |= changed;
        let now = Instant::now();
        if now >= snapshot_due(last_snapshot, dirty) {
            handle.snapshot.store(Arc::new((now, acd.snapshot(now))));
            last_snapshot = now;
            dirty = false;
        }
    }
}

fn apply(acd: &mut Acd, cmd: AcdCmd, now: Instant) {
    match cmd {
        AcdCmd::Checked { cmd, reply } => {
            let _ = reply.send(apply_one(acd, *cmd, now));
        }
        cmd => {
            if let Err(e) = apply_one(acd, cmd, now) {
                tracing::warn!(error = %e, "ACD refused input");
            }
        }
    }
}

fn apply_one(acd: &mut Acd, cmd: AcdCmd, now: Instant) -> Result<(), AcdError> {
    let input = match cmd {
        AcdCmd::Input(i) => i,
        AcdCmd::Checked { cmd, .. } => return apply_one(acd, *cmd, now),
        AcdCmd::LoginOrReady { agent, queues } => match acd.agent_state(&agent) {
            None => return Err(AcdError::UnknownAgent(agent)),
            Some(AgentState::LoggedOut) => Input::AgentLogin {
                agent: agent.as_str().into(),
                queues,
            },
            Some(_) => Input::AgentReady {
                agent: agent.as_str().into(),
            },
        },
    };
    acd.handle(input, now)
}

/// The queue-log line for an agent's state change (Asterisk's ADDMEMBER / PAUSE / UNPAUSE /
/// REMOVEMEMBER), if it is one: offers, calls and wrap-up are logged by the calls.
fn agent_log_event(
    agent: &str,
    before: Option<&AgentState>,
    now: &AgentState,
) -> Option<verde_store::QueueEvent> {
    use verde_store::QueueEventKind as K;
    let (kind, data) = match (before, now) {
        (_, AgentState::LoggedOut) if before.is_some_and(|b| *b != AgentState::LoggedOut) => {
            (K::AgentLogout, vec![])
        }
        (_, AgentState::Paused { reason })
            if !matches!(before, Some(AgentState::Paused { .. })) =>
        {
            (K::AgentPause, vec![reason.clone()])
        }
        (None | Some(AgentState::LoggedOut), AgentState::Ready) => (K::AgentLogin, vec![]),
        (Some(AgentState::Paused { .. }), AgentState::Ready) => (K::AgentUnpause, vec![]),
        _ => return None,
    };
    Some(verde_store::QueueEvent {
        at_ms: crate::clock::now_ms(),
        call_id: String::new(),
        queue: String::new(),
        agent: agent.to_string(),
        kind,
        data,
    })
}

fn route(handle: &AcdHandle, cti: &crate::cti::Hub, action: Action) {
    let call = match &action {
        Action::Offer { call, .. }
        | Action::CancelOffer { call, .. }
        | Action::Connected { call, .. }
        | Action::Requeued { call }
        | Action::Announce { call, .. }
        | Action::Exit { call, .. }
        | Action::DirectFailed { call, .. }
        | Action::Abandoned { call, .. } => Some(*call),
        Action::AgentState { agent, state } => {
            tracing::info!(agent = %agent.as_str(), state = ?state, "agent state");
            cti.publish(verde_cti::Event::AgentState {
                agent: agent.clone(),
                state: state.clone(),
                in_state: Duration::ZERO,
            });
            None
        }
        Action::AgentAutoPaused { agent, reason } => {
            tracing::warn!(agent = %agent.as_str(), %reason, "agent paused by the ACD");
            None
        }
        #[allow(unreachable_patterns)]
        _ => None,
    };
    let Some(CallKey(key)) = call else { return };
    let target = handle.calls.get(&key).map(|h| h.clone());
    match target {
        Some(h) => {
            if let Err(e) = h.try_send(CallInput::Acd(action)) {
                tracing::warn!(call = key, "ACD action for a call that cannot take it: {e}");
            }
        }
        None => {
            tracing::debug!(call = key, action = ?action, "ACD action for a call that has ended")
        }
    }
}
