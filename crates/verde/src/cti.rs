//! The CTI websocket (`/cti`) around the sans-IO [`verde_cti::Session`]: one task per
//! connection, and one hub task that routes the engine's events to the agents' connections and
//! turns the ACD's published snapshot into wallboard frames.
//!
//! The hub owns its routing state alone (no lock): call tasks and the ACD task hand it events
//! over an unbounded channel, so publishing never waits and the dispatch path shares nothing with
//! the websockets. Each agent connection gets its events on a bounded channel; a connection too
//! slow to keep up is closed (1013, "try again later") rather than fed a gap, and its page
//! resumes with the current state, which the hub replays on every attach. Supervisors read the
//! wallboard frames from a watch channel: one serialization per tick for all of them.

use crate::config::{AnswerFrom, Config};
use crate::sip_core::Engine;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use dashmap::DashMap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use verde_acd::{AgentId, AgentState, CallKey, QueueName};
use verde_cti::{
    AuthConfig, Authenticator, Broadcast, CallOffer, EngineCommand, EngineError, ErrorCode, Event,
    ForcedState, Frame, Identity, Limits, Out, Reply, RequestId, Role, Session, TaskInfo, TaskKind,
    TaskRef,
};

/// Events an agent connection may have queued before it counts as too slow.
const CONN_QUEUE: usize = 4096;
/// How often the wallboard frame is rebuilt (the fastest refresh a supervisor may choose).
const FRAME_EVERY: Duration = Duration::from_millis(500);
/// How often service-level figures are recomputed and sent.
const STATS_EVERY: Duration = Duration::from_secs(5);

enum HubMsg {
    Event(Event),
    Attach {
        conn: u64,
        agent: AgentId,
        tx: mpsc::Sender<Event>,
    },
    Detach {
        conn: u64,
    },
    Finished(Box<verde_store::CallRecord>),
}

/// The engine's side of the CTI, shared by call tasks, the ACD task and the websocket tasks.
pub struct Hub {
    /// Agents' and supervisors' secrets (CTI logins and phones' digest), swapped on reload.
    pub accounts: Arc<crate::accounts::Accounts>,
    tx: mpsc::UnboundedSender<HubMsg>,
    pub auth: Arc<Authenticator>,
    /// Agents with a bar connected (count of connections), read by call tasks to decide
    /// where an offer rings.
    attached: Arc<DashMap<String, u32>>,
    /// Agents whose offers ring their browser softphone: the bar connection that chose it
    /// (the choice ends with that connection).
    browser: DashMap<String, u64>,
    answer_from: HashMap<String, AnswerFrom>,
    /// Agents' configured queues, for routing task events.
    agent_queues: HashMap<String, Vec<String>>,
    frames: watch::Receiver<Option<Arc<Frame>>>,
    stats: watch::Receiver<Option<Arc<str>>>,
    next_conn: AtomicU64,
}

/// The hub's task, started once the engine exists (it reads registrations and the store).
pub struct HubRunner {
    rx: mpsc::UnboundedReceiver<HubMsg>,
    frames: watch::Sender<Option<Arc<Frame>>>,
    stats: watch::Sender<Option<Arc<str>>>,
    attached: Arc<DashMap<String, u32>>,
    agent_queues: HashMap<String, Vec<String>>,
}

impl Hub {
    pub fn new(cfg: &Config) -> (Arc<Hub>, HubRunner) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (frames_tx, frames) = watch::channel(None);
        let (stats_tx, stats) = watch::channel(None);
        let accounts = crate::accounts::Accounts::new(cfg);
        let auth = Authenticator::new(
            AuthConfig {
                token_ttl: cfg.cti.token_ttl,
                ..AuthConfig::default()
            },
            accounts.cti(),
        );
        let attached = Arc::new(DashMap::new());
        let agent_queues: HashMap<_, _> = cfg
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.queues.clone()))
            .collect();
        let hub = Arc::new(Hub {
            accounts,
            tx,
            auth: Arc::new(auth),
            attached: attached.clone(),
            browser: DashMap::new(),
            answer_from: cfg
                .agents
                .iter()
                .map(|a| (a.id.clone(), a.answer_from))
                .collect(),
            agent_queues: agent_queues.clone(),
            frames,
            stats,
            next_conn: AtomicU64::new(1),
        });
        let runner = HubRunner {
            rx,
            frames: frames_tx,
            stats: stats_tx,
            attached,
            agent_queues,
        };
        (hub, runner)
    }

    /// Hands an event to the hub; never waits.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(HubMsg::Event(event));
    }

    /// A finished call, for the wallboard's service levels.
    pub fn call_finished(&self, record: &verde_store::CallRecord) {
        let _ = self.tx.send(HubMsg::Finished(Box::new(record.clone())));
    }

    /// Whether an offer to `agent` rings its bar (and only its bar) rather than its phone.
    pub fn offers_to_bar(&self, agent: &str) -> bool {
        self.answer_from.get(agent) == Some(&AnswerFrom::Bar)
            && self.attached.get(agent).is_some_and(|n| *n > 0)
    }

    /// Whether an offer to `agent` rings the softphone in its bar's page.
    pub fn softphone(&self, agent: &str) -> bool {
        self.browser.contains_key(agent)
    }

    /// The queues of an agent's configuration (where its voicemails come from).
    pub fn agent_queues(&self, agent: &str) -> Vec<String> {
        self.agent_queues.get(agent).cloned().unwrap_or_default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    Connected,
    Held,
}

/// What the hub remembers of an agent to replay on attach.
#[derive(Default)]
struct AgentSlot {
    state: Option<(AgentState, Instant)>,
    calls: BTreeMap<u64, (Box<CallOffer>, Instant, Phase)>,
    conns: Vec<(u64, mpsc::Sender<Event>)>,
}

impl AgentSlot {
    fn learn(&mut self, event: &Event, now: Instant) {
        match event {
            Event::AgentState { state, .. } => self.state = Some((state.clone(), now)),
            Event::CallOffered { call, offer, .. } => {
                self.calls
                    .insert(call.0, (offer.clone(), now, Phase::Offered));
            }
            Event::CallAnswered { call, .. } | Event::CallResumed { call, .. } => {
                if let Some(c) = self.calls.get_mut(&call.0) {
                    c.2 = Phase::Connected;
                }
            }
            Event::CallHeld { call, .. } => {
                if let Some(c) = self.calls.get_mut(&call.0) {
                    c.2 = Phase::Held;
                }
            }
            Event::CallTransferred { call, .. } | Event::CallEnded { call, .. } => {
                self.calls.remove(&call.0);
            }
            _ => {}
        }
    }

    /// The agent's present, as the events that would have told it.
    fn replay(&self, agent: &AgentId, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some((state, since)) = &self.state {
            out.push(Event::AgentState {
                agent: agent.clone(),
                state: state.clone(),
                in_state: now.saturating_duration_since(*since),
            });
        }
        for (call, (offer, at, phase)) in &self.calls {
            let mut offer = offer.clone();
            offer.waited += now.saturating_duration_since(*at);
            let call = CallKey(*call);
            out.push(Event::CallOffered {
                agent: agent.clone(),
                call,
                offer,
            });
            match phase {
                Phase::Offered => {}
                Phase::Connected => out.push(Event::CallAnswered {
                    agent: agent.clone(),
                    call,
                }),
                Phase::Held => {
                    out.push(Event::CallAnswered {
                        agent: agent.clone(),
                        call,
                    });
                    out.push(Event::CallHeld {
                        agent: agent.clone(),
                        call,
                    });
                }
            }
        }
        out
    }
}

fn event_agent(event: &Event) -> Option<&AgentId> {
    match event {
        Event::AgentState { agent, .. }
        | Event::CallOffered { agent, .. }
        | Event::CallAnswered { agent, .. }
        | Event::CallHeld { agent, .. }
        | Event::CallResumed { agent, .. }
        | Event::CallTransferred { agent, .. }
        | Event::Consult { agent, .. }
        | Event::Recording { agent, .. }
        | Event::SoftphoneOffer { agent, .. }
        | Event::CallEnded { agent, .. } => Some(agent),
        _ => None,
    }
}

fn task_queue(event: &Event) -> Option<&str> {
    match event {
        Event::TaskCreated { task } | Event::TaskTaken { task, .. } => Some(&task.queue),
        _ => None,
    }
}

impl HubRunner {
    pub fn spawn(self, engine: Arc<Engine>, store: Arc<dyn verde_store::Store>) {
        tokio::spawn(self.run(engine, store));
    }

    async fn run(mut self, engine: Arc<Engine>, store: Arc<dyn verde_store::Store>) {
        // The same calendar as the reports, so the wallboard's "today" is the report's day.
        let tz = engine.cfg.kpi.tz();
        let mut stats = crate::live_stats::LiveStats::new(tz);
        // Today's finished calls, so a restart does not reset the wallboard's figures.
        let loaded = tokio::task::spawn_blocking(move || store.recent_calls(50_000)).await;
        match loaded {
            Ok(Ok(records)) => {
                let today = crate::clock::now();
                for r in records.iter().rev() {
                    stats.add(r, today);
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read today's calls for the wallboard")
            }
            Err(e) => tracing::error!(error = %e, "reading today's calls failed"),
        }
        let anchor = Instant::now();
        let mut broadcast = Broadcast::new(anchor, crate::clock::now().timestamp_millis());
        let mut slots: HashMap<AgentId, AgentSlot> = HashMap::new();
        let mut ticker = tokio::time::interval(FRAME_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stats: Option<Instant> = None;
        let mut last_purge = Instant::now();
        loop {
            tokio::select! {
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { return };
                    self.handle(&engine, &mut slots, &mut stats, msg);
                    // Drain what else is queued before the next tick.
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(&engine, &mut slots, &mut stats, msg);
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let snap = engine.acd.snapshot();
                    let frame = broadcast.tick(&snap.1, snap.0, |a| engine.bindings.contains_key(a.as_str()));
                    self.frames.send_replace(Some(Arc::new(frame)));
                    if last_stats.is_none_or(|t| now >= t + STATS_EVERY) {
                        last_stats = Some(now);
                        let text = stats.json(crate::clock::now());
                        self.stats.send_replace(Some(text.into()));
                    }
                    if now >= last_purge + Duration::from_secs(60) {
                        last_purge = now;
                        engine.cti.auth.purge(now);
                    }
                }
            }
        }
    }

    fn handle(
        &mut self,
        engine: &Engine,
        slots: &mut HashMap<AgentId, AgentSlot>,
        stats: &mut crate::live_stats::LiveStats,
        msg: HubMsg,
    ) {
        let now = Instant::now();
        match msg {
            HubMsg::Event(event) => {
                if let Some(agent) = event_agent(&event) {
                    let slot = slots.entry(agent.clone()).or_default();
                    slot.learn(&event, now);
                    deliver(slot, agent, &event, &self.attached);
                } else {
                    // Task events: to every agent serving the task's queue (all agents when the
                    // task names no queue one of them serves).
                    let queue = task_queue(&event);
                    let targets: Vec<AgentId> = slots
                        .iter()
                        .filter(|(_, s)| !s.conns.is_empty())
                        .map(|(a, _)| a.clone())
                        .filter(|a| match queue {
                            Some(q) => self
                                .agent_queues
                                .get(a.as_str())
                                .is_none_or(|qs| qs.iter().any(|x| x == q)),
                            None => true,
                        })
                        .collect();
                    for a in targets {
                        if let Some(slot) = slots.get_mut(&a) {
                            deliver(slot, &a, &event, &self.attached);
                        }
                    }
                }
            }
            HubMsg::Attach { conn, agent, tx } => {
                let slot = slots.entry(agent.clone()).or_default();
                if slot.state.is_none() {
                    // No change since start: the ACD's published view says where the agent is.
                    let snap = engine.acd.snapshot();
                    if let Some(a) = snap.1.agents.iter().find(|a| a.id == agent) {
                        let since = snap.0.checked_sub(a.in_state).unwrap_or(snap.0);
                        slot.state = Some((a.state.clone(), since));
                    }
                }
                let mut ok = true;
                for ev in slot.replay(&agent, now) {
                    if tx.try_send(ev).is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    slot.conns.push((conn, tx));
                    *self.attached.entry(agent.to_string()).or_insert(0) += 1;
                }
            }
            HubMsg::Detach { conn } => {
                for (agent, slot) in slots.iter_mut() {
                    let before = slot.conns.len();
                    slot.conns.retain(|(c, _)| *c != conn);
                    if slot.conns.len() != before {
                        set_attached(&self.attached, agent, slot.conns.len());
                    }
                }
            }
            HubMsg::Finished(record) => stats.add(&record, crate::clock::now()),
        }
    }
}

fn set_attached(attached: &DashMap<String, u32>, agent: &AgentId, n: usize) {
    if n == 0 {
        attached.remove(agent.as_str());
    } else {
        attached.insert(agent.to_string(), n as u32);
    }
}

/// Sends to every connection of the agent; one that cannot take it is dropped (its task sees
/// the channel close and makes the page reconnect and resume).
fn deliver(slot: &mut AgentSlot, agent: &AgentId, event: &Event, attached: &DashMap<String, u32>) {
    let before = slot.conns.len();
    slot.conns.retain(|(conn, tx)| match tx.try_send(event.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(agent = %agent.as_str(), conn, "CTI connection too slow: closing it so it resumes");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
    if slot.conns.len() != before {
        set_attached(attached, agent, slot.conns.len());
    }
}

/// Waits on an optional receiver: pending forever when there is none.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One websocket connection: the session's state machine fed by the page, the hub, the
/// engine's completions and the wallboard.
pub async fn serve(socket: WebSocket, peer: SocketAddr, engine: Arc<Engine>) {
    let conn = engine.cti.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("cti", %peer, conn);
    connection(socket, conn, engine).instrument(span).await
}

async fn connection(mut socket: WebSocket, conn: u64, engine: Arc<Engine>) {
    let hub = engine.cti.clone();
    let mut session = Session::new(hub.auth.clone(), Limits::default());
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(RequestId, Result<Reply, EngineError>)>();
    let mut events: Option<mpsc::Receiver<Event>> = None;
    let mut frames = hub.frames.clone();
    let mut stats = hub.stats.clone();
    tracing::debug!("CTI connection opened");
    let mut close: Option<CloseFrame> = None;
    loop {
        let subscribed = session.is_subscribed();
        let now = Instant::now();
        let outs = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => session.handle_text(text.as_str(), Instant::now()),
                Some(Ok(Message::Binary(_))) => session.handle_text("\u{0}binary", Instant::now()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Err(e)) => {
                    close = crate::http::too_big_close(&e);
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
            },
            ev = recv_opt(&mut events) => match ev {
                Some(ev) => session.handle_event(&ev),
                None => {
                    close = Some(CloseFrame { code: 1013, reason: "too slow: reconnect and resume".into() });
                    break;
                }
            },
            Some((id, outcome)) = done_rx.recv() => session.complete(id, outcome, now),
            changed = frames.changed(), if subscribed => {
                if changed.is_err() { break }
                let frame = frames.borrow_and_update().clone();
                match frame {
                    Some(f) => session.handle_frame(&f, now),
                    None => continue,
                }
            }
            changed = stats.changed(), if subscribed => {
                if changed.is_err() { break }
                let text = stats.borrow_and_update().clone();
                match text {
                    Some(t) => session.handle_stats(&t),
                    None => continue,
                }
            }
        };
        let mut outs = outs;
        if !subscribed && session.is_subscribed() {
            // A new subscriber gets the figures at once rather than in up to 5 s.
            if let Some(t) = stats.borrow_and_update().clone() {
                outs.extend(session.handle_stats(&t));
            }
        }
        for out in outs {
            match out {
                Out::Send(text) => {
                    if socket
                        .send(Message::Text(text.as_ref().into()))
                        .await
                        .is_err()
                    {
                        return detach(&hub, conn);
                    }
                }
                Out::Engine {
                    id,
                    command: EngineCommand::SetDevice { agent, device },
                } => {
                    let outcome = set_device(&engine, conn, agent.as_str(), device);
                    let _ = done_tx.send((id, outcome));
                }
                Out::Engine { id, command } => {
                    let engine = engine.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        let outcome = execute(&engine, command).await;
                        let _ = done.send((id, outcome));
                    });
                }
                Out::Attach(identity) => attach(&hub, conn, &identity, &mut events),
                Out::Detach => {
                    detach(&hub, conn);
                    events = None;
                }
                Out::Alert(alert) => tracing::warn!(%alert, "CTI refusal"),
            }
        }
    }
    if let Some(frame) = close {
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    detach(&hub, conn);
    tracing::debug!("CTI connection closed");
}

fn attach(hub: &Hub, conn: u64, identity: &Identity, events: &mut Option<mpsc::Receiver<Event>>) {
    tracing::info!(user = %identity.user, role = ?identity.role, "CTI login");
    if identity.role != Role::Agent {
        return;
    }
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    *events = Some(rx);
    let _ = hub.tx.send(HubMsg::Attach {
        conn,
        agent: AgentId::from(identity.user.as_str()),
        tx,
    });
}

/// The browser softphone belongs to one bar connection: another tab or a reconnect chooses
/// again (the page re-sends its choice on resume).
fn set_device(
    engine: &Engine,
    conn: u64,
    agent: &str,
    device: verde_cti::Device,
) -> Result<Reply, EngineError> {
    match device {
        verde_cti::Device::Browser if engine.webrtc.is_none() => Err(err(
            ErrorCode::Unavailable,
            "browser calls are not enabled on this engine (webrtc.enabled)",
        )),
        verde_cti::Device::Browser => {
            engine.cti.browser.insert(agent.to_string(), conn);
            tracing::info!(%agent, "offers ring the browser softphone");
            Ok(Reply::Done)
        }
        verde_cti::Device::Phone => {
            engine.cti.browser.remove_if(agent, |_, c| *c == conn);
            tracing::info!(%agent, "offers ring the phone");
            Ok(Reply::Done)
        }
    }
}

fn detach(hub: &Hub, conn: u64) {
    hub.browser.retain(|_, c| *c != conn);
    let _ = hub.tx.send(HubMsg::Detach { conn });
}

/// A command for one call, carried out by the call's own task.
pub struct CallCommand {
    pub command: EngineCommand,
    pub reply: oneshot::Sender<Result<Reply, EngineError>>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> EngineError {
    EngineError::new(code, message)
}

fn acd_error(e: verde_acd::AcdError) -> EngineError {
    use verde_acd::AcdError as A;
    let code = match &e {
        A::UnknownQueue(_) | A::UnknownAgent(_) | A::UnknownCall(_) => ErrorCode::NotFound,
        A::NotLoggedIn(_)
        | A::NotInWrapUp(_)
        | A::NoSuchOffer { .. }
        | A::NotOnCall { .. }
        | A::DuplicateCall(_) => ErrorCode::InvalidState,
    };
    err(code, e.to_string())
}

async fn acd(engine: &Engine, cmd: crate::acd_task::AcdCmd) -> Result<Reply, EngineError> {
    let (reply, rx) = oneshot::channel();
    let checked = crate::acd_task::AcdCmd::Checked {
        cmd: Box::new(cmd),
        reply,
    };
    if engine.acd.send(checked).is_err() {
        return Err(err(ErrorCode::Unavailable, "the ACD is overloaded: retry"));
    }
    match rx.await {
        Ok(Ok(())) => Ok(Reply::Done),
        Ok(Err(e)) => Err(acd_error(e)),
        Err(_) => Err(err(ErrorCode::Internal, "the ACD stopped")),
    }
}

async fn to_call(
    engine: &Engine,
    call: CallKey,
    command: EngineCommand,
) -> Result<Reply, EngineError> {
    let handle = engine.acd.calls.get(&call.0).map(|h| h.clone());
    let Some(handle) = handle else {
        return Err(err(ErrorCode::Gone, format!("call {} has ended", call.0)));
    };
    let (reply, rx) = oneshot::channel();
    let msg = crate::call::CallInput::Cti(CallCommand { command, reply });
    if handle.send(msg).await.is_err() {
        return Err(err(ErrorCode::Gone, format!("call {} has ended", call.0)));
    }
    rx.await
        .unwrap_or_else(|_| Err(err(ErrorCode::Gone, format!("call {} has ended", call.0))))
}

/// Carries out a session's command.
async fn execute(engine: &Arc<Engine>, command: EngineCommand) -> Result<Reply, EngineError> {
    use crate::acd_task::AcdCmd;
    use verde_acd::Input;
    if engine.is_draining() {
        return Err(err(ErrorCode::Unavailable, "the engine is shutting down"));
    }
    match command {
        EngineCommand::Ready { agent, queues } => {
            if let Some(qs) = &queues {
                if let Some(q) = qs.iter().find(|q| !engine.acd.has_queue(q.as_str())) {
                    return Err(err(
                        ErrorCode::NotFound,
                        format!("no queue {:?}", q.as_str()),
                    ));
                }
            }
            let cmd = AcdCmd::LoginOrReady {
                agent: agent.to_string(),
                queues,
            };
            acd(engine, cmd).await
        }
        EngineCommand::Pause { agent, reason } => {
            acd(engine, AcdCmd::Input(Input::AgentPause { agent, reason })).await
        }
        EngineCommand::Logout { agent } => {
            acd(engine, AcdCmd::Input(Input::AgentLogout { agent })).await
        }
        // The ACD refuses it outside wrap-up (NotInWrapUp): its own state, not a snapshot.
        EngineCommand::WrapUpDone { agent } => {
            acd(engine, AcdCmd::Input(Input::WrapUpDone { agent })).await
        }
        EngineCommand::ForceState {
            supervisor,
            agent,
            state,
        } => {
            tracing::info!(target: "audit", audit = true, %supervisor, agent = %agent.as_str(), ?state, "supervisor forces an agent state");
            let what = match &state {
                ForcedState::Pause { reason } => format!("pause:{reason}"),
                ForcedState::Logout => "logout".to_string(),
            };
            let name = agent.as_str().to_string();
            let input = match state {
                ForcedState::Pause { reason } => Input::AgentPause { agent, reason },
                ForcedState::Logout => Input::AgentLogout { agent },
            };
            let done = acd(engine, AcdCmd::Input(input)).await;
            if done.is_ok() {
                // The durable audit trail, beside the ACD's own pause/logout line.
                engine.records.event(verde_store::QueueEvent {
                    at_ms: crate::clock::now_ms(),
                    agent: name,
                    kind: verde_store::QueueEventKind::ForceState,
                    data: vec![supervisor, what],
                    ..Default::default()
                });
            }
            done
        }
        EngineCommand::MoveCaller {
            supervisor,
            call,
            queue,
        } => {
            tracing::info!(target: "audit", audit = true, %supervisor, call = call.0, queue = %queue.as_str(), "supervisor moves a caller");
            if !engine.acd.has_queue(queue.as_str()) {
                return Err(err(
                    ErrorCode::NotFound,
                    format!("no queue {:?}", queue.as_str()),
                ));
            }
            let command = EngineCommand::MoveCaller {
                supervisor,
                call,
                queue,
            };
            to_call(engine, call, command)
                .await
                .map_err(|e| match e.code {
                    ErrorCode::Gone => {
                        err(ErrorCode::NotFound, format!("no caller {} waiting", call.0))
                    }
                    _ => e,
                })
        }
        command @ (EngineCommand::Answer { call, .. }
        | EngineCommand::Hangup { call, .. }
        | EngineCommand::Hold { call, .. }
        | EngineCommand::ResumeCall { call, .. }
        | EngineCommand::Transfer { call, .. }
        | EngineCommand::Record { call, .. }
        | EngineCommand::SoftphoneIce { call, .. }) => to_call(engine, call, command).await,
        EngineCommand::SetDevice { .. } => Err(err(
            ErrorCode::Internal,
            "set_device is handled by the connection",
        )),
        EngineCommand::Supervise {
            ref supervisor,
            call,
            mode,
        } => {
            tracing::info!(target: "audit", audit = true, %supervisor, call = call.0, ?mode, "supervisor joins a call");
            if mode.is_some() && engine.bindings.get(supervisor.as_str()).is_none() {
                return Err(err(
                    ErrorCode::Unavailable,
                    "register your SIP phone first: it is how you join the call",
                ));
            }
            to_call(engine, call, command)
                .await
                .map_err(|e| match e.code {
                    ErrorCode::Gone => err(ErrorCode::NotFound, format!("no live call {}", call.0)),
                    _ => e,
                })
        }
        EngineCommand::ListTasks { agent } => {
            let queues = engine.cti.agent_queues(agent.as_str());
            let tasks = engine.tasks.clone();
            blocking(move || list_tasks(&*tasks, &queues, agent.as_str())).await
        }
        EngineCommand::TakeTask { agent, task } => {
            let queues = engine.cti.agent_queues(agent.as_str());
            let tasks = engine.tasks.clone();
            let now_ms = crate::clock::now().timestamp_millis();
            let a = agent.to_string();
            let taken = blocking(move || -> Result<Option<TaskInfo>, EngineError> {
                let vm = match task {
                    None => tasks.take_next_voicemail(&queues, &a, now_ms),
                    Some(TaskRef {
                        kind: TaskKind::Voicemail,
                        id,
                    }) => {
                        let vm = tasks.voicemail(id).map_err(store_error)?;
                        match vm {
                            Some(v) if queues.contains(&v.mailbox) => {
                                tasks.take_voicemail(id, &a, now_ms).map(Some)
                            }
                            Some(_) => {
                                return Err(err(
                                    ErrorCode::Forbidden,
                                    "that voicemail is for a queue you do not serve",
                                ))
                            }
                            None => return Err(err(ErrorCode::NotFound, "no such voicemail")),
                        }
                    }
                    Some(TaskRef {
                        kind: TaskKind::Callback,
                        ..
                    }) => {
                        return Err(err(
                            ErrorCode::InvalidState,
                            "callbacks are dialed by the engine when an agent is free",
                        ))
                    }
                }
                .map_err(store_error)?;
                Ok(vm.map(|v| voicemail_info(&v)))
            })
            .await?;
            if let Some(t) = &taken {
                engine.cti.publish(Event::TaskTaken {
                    task: t.clone(),
                    agent,
                });
            }
            Ok(Reply::Task(taken))
        }
        EngineCommand::CloseTask {
            agent,
            task,
            outcome,
        } => {
            if task.kind != TaskKind::Voicemail {
                return Err(err(
                    ErrorCode::InvalidState,
                    "callbacks are closed by the dialer when the call is made",
                ));
            }
            let tasks = engine.tasks.clone();
            let now_ms = crate::clock::now().timestamp_millis();
            let (a, o) = (agent.to_string(), outcome.clone());
            blocking(move || -> Result<(), EngineError> {
                match tasks.voicemail(task.id).map_err(store_error)? {
                    None => Err(err(ErrorCode::NotFound, "no such voicemail")),
                    Some(v) => match &v.state {
                        verde_store::VoicemailState::Taken { agent, .. } if *agent == a => {
                            tasks
                                .close_voicemail(task.id, &a, now_ms, &o)
                                .map_err(store_error)?;
                            Ok(())
                        }
                        _ => Err(err(
                            ErrorCode::Forbidden,
                            "only a voicemail you have taken can be closed",
                        )),
                    },
                }
            })
            .await?;
            engine.cti.publish(Event::TaskClosed {
                task,
                agent,
                outcome,
            });
            Ok(Reply::Done)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(err(ErrorCode::Internal, "store task failed")))
}

fn store_error(e: verde_store::StoreError) -> EngineError {
    tracing::error!(error = %e, "store failed for a CTI command");
    err(
        ErrorCode::Internal,
        "the store failed; see the engine's log",
    )
}

pub fn voicemail_info(v: &verde_store::Voicemail) -> TaskInfo {
    TaskInfo {
        task: TaskRef {
            kind: TaskKind::Voicemail,
            id: v.id,
        },
        queue: v.mailbox.clone(),
        number: v.caller.clone(),
        created_at_ms: v.recorded_at_ms,
        deadline_ms: v.deadline_ms,
        taken_by: match &v.state {
            verde_store::VoicemailState::Taken { agent, .. } => Some(agent.clone()),
            _ => None,
        },
    }
}

fn list_tasks(
    tasks: &dyn verde_store::TaskStore,
    queues: &[String],
    agent: &str,
) -> Result<Reply, EngineError> {
    let mut out = Vec::new();
    for q in queues {
        let filter = verde_store::VoicemailFilter {
            mailbox: Some(q.clone()),
            ..Default::default()
        };
        for v in tasks.voicemails(&filter).map_err(store_error)? {
            let open = match &v.state {
                verde_store::VoicemailState::New => true,
                verde_store::VoicemailState::Taken { agent: a, .. } => a == agent,
                _ => false,
            };
            if open {
                out.push(voicemail_info(&v));
            }
        }
    }
    for cb in tasks.pending_callbacks().map_err(store_error)? {
        if queues.contains(&cb.queue) {
            out.push(TaskInfo {
                task: TaskRef {
                    kind: TaskKind::Callback,
                    id: cb.id,
                },
                queue: cb.queue.clone(),
                number: cb.number.clone(),
                created_at_ms: cb.requested_at_ms,
                deadline_ms: cb.deadline_ms,
                taken_by: None,
            });
        }
    }
    out.sort_by_key(|t| (t.deadline_ms, t.created_at_ms));
    Ok(Reply::Tasks(out))
}

/// Builds the pop-up's facts for an offer.
pub fn offer(
    caller: &str,
    did: &str,
    queue: &str,
    waited: Duration,
    language: Option<&str>,
    choices: &[(String, char)],
    channel: verde_cti::Channel,
) -> Box<CallOffer> {
    Box::new(CallOffer {
        caller: caller.to_string(),
        did: did.to_string(),
        queue: QueueName::from(queue),
        channel,
        waited,
        language: language.map(str::to_string),
        choices: choices
            .iter()
            .map(|(node, key)| verde_cti::IvrChoice {
                node: node.clone(),
                key: key.to_string(),
            })
            .collect(),
    })
}
