//! The callback dialer: nobody's request is lost.
//!
//! Requests live in the store. Every second the dialer reads the pending ones and puts each
//! eligible request (its retry time and time band reached) into its queue's line at the
//! caller's ORIGINAL time, so it is served when the caller would have been and never ahead of
//! people who called earlier and still wait. When the ACD picks an agent for it, a callback
//! task rings the agent (agent-first) and, once the agent answers, dials the customer through
//! `outbound.uri` and bridges them. Every attempt is written before the customer is dialed, so
//! a crash leaves a visible "interrupted" attempt, retried at restart, never duplicated.
//!
//! With a store shared by several nodes (PostgreSQL), a node dials the callbacks it booked
//! and those it adopted. Every [`heartbeat_every`] it tells the store it is alive and adopts
//! the callbacks of nodes silent for longer than `store.node_timeout`: adopted callbacks are
//! this node's from then on, and the next round of the dialer puts them in line like its own
//! (an attempt the dead node had in progress comes back interrupted, as after a restart).

use crate::agent_leg::{AgentLeg, LegEvent, LegState};
use crate::call::CallInput;
use crate::sip_core::{Engine, SipCmd};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;
use verde_acd::{Action, CallKey, CallbackMode, Input as AcdInput, OfferFailure};
use verde_media::MediaEvent;
use verde_sip::{Method, Peer, Transport};
use verde_store::{AttemptOutcome, CallbackRequest, CallbackState};

/// How often a node beats and looks for orphans: a few times per `node_timeout`, so that one
/// slow round never makes a living node look dead.
pub fn heartbeat_every(node_timeout: Duration) -> Duration {
    (node_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Heartbeats and adoption (only on a node that dials: `outbound.uri` set), on a task of
/// their own so that a slow dialing round never delays a heartbeat. The first beat is written
/// before this returns, before the node recovers its own attempts, so that no other node
/// mistakes a node that is starting for a dead one.
async fn keep_alive(engine: Arc<Engine>) {
    let node = engine.cfg.store.node_name();
    let timeout = engine.cfg.store.node_timeout;
    let dead_after_ms = timeout.as_millis() as i64;
    let beat = |engine: &Arc<Engine>, node: &str| {
        let (tasks, node) = (engine.tasks.clone(), node.to_string());
        tokio::task::spawn_blocking(move || tasks.heartbeat(&node, crate::clock::now_ms()))
    };
    if let Ok(Err(e)) = beat(&engine, &node).await {
        tracing::warn!(error = %e, %node, "store: first heartbeat failed");
    }
    let every = heartbeat_every(timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            // A node that cannot dial must not take callbacks others would dial.
            let can_dial = engine.cfg.outbound.uri.is_some();
            let result = match beat(&engine, &node).await {
                Ok(Ok(())) if !can_dial => Ok(Vec::new()),
                Ok(Ok(())) => {
                    let (tasks, me) = (engine.tasks.clone(), node.clone());
                    let now_ms = crate::clock::now_ms();
                    match tokio::task::spawn_blocking(move || {
                        tasks.adopt_orphans(&me, now_ms, dead_after_ms)
                    })
                    .await
                    {
                        Ok(Ok(adopted)) => Ok(adopted),
                        Ok(Err(e)) => {
                            Err(("adopting the callbacks of silent nodes", e.to_string()))
                        }
                        Err(e) => Err(("adopting the callbacks of silent nodes", e.to_string())),
                    }
                }
                Ok(Err(e)) => Err(("heartbeat", e.to_string())),
                Err(e) => Err(("heartbeat", e.to_string())),
            };
            match result {
                Ok(adopted) => {
                    if failing {
                        tracing::info!(%node, "store: heartbeats and adoption work again");
                        failing = false;
                    }
                    if !adopted.is_empty() {
                        tracing::warn!(
                            %node,
                            callbacks = adopted.len(),
                            ids = ?adopted.iter().map(|c| c.id).collect::<Vec<_>>(),
                            "callbacks of a silent node adopted; this node dials them now"
                        );
                    }
                }
                Err((what, error)) if !failing => {
                    tracing::warn!(%error, %node, "store: {what} failed");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

pub fn start(engine: Arc<Engine>) {
    tokio::spawn(async move {
        keep_alive(engine.clone()).await;
        let tasks = engine.tasks.clone();
        let now_ms = crate::clock::now_ms();
        match tokio::task::spawn_blocking(move || tasks.recover_after_crash(now_ms)).await {
            Ok(Ok(list)) if !list.is_empty() => {
                tracing::warn!(
                    callbacks = list.len(),
                    "callbacks interrupted by a restart will be retried"
                )
            }
            Ok(Err(e)) => tracing::error!(error = %e, "callback recovery failed"),
            _ => {}
        }
        let (done_tx, mut done_rx) = mpsc::channel::<i64>(1024);
        let mut active: HashSet<i64> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut warned = false;
        let mut late_seen: HashSet<(bool, i64)> = HashSet::new();
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(id) = done_rx.recv() => { active.remove(&id); }
            }
            while let Ok(id) = done_rx.try_recv() {
                active.remove(&id);
            }
            ticks += 1;
            if ticks % 30 == 1 {
                flag_late(&engine, &mut late_seen).await;
            }
            if engine.cfg.outbound.uri.is_none() {
                if !warned {
                    tracing::warn!("outbound.uri is not set: callbacks are stored but not dialed");
                    warned = true;
                }
                continue;
            }
            let tasks = engine.tasks.clone();
            let list =
                match tokio::task::spawn_blocking(move || tasks.own_pending_callbacks()).await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read callbacks");
                        continue;
                    }
                    Err(_) => continue,
                };
            let now_ms = crate::clock::now_ms();
            for cb in list {
                if active.contains(&cb.id)
                    || cb.state != CallbackState::Pending
                    || cb.not_before_ms > now_ms
                {
                    continue;
                }
                if !engine.acd.has_queue(&cb.queue) || !in_band(&engine, &cb) {
                    continue;
                }
                active.insert(cb.id);
                let span = tracing::info_span!("callback", id = cb.id, number = %cb.number);
                tokio::spawn(run(engine.clone(), cb, done_tx.clone()).instrument(span));
            }
        }
    });
}

/// Logs each task that passed its SLA deadline, once: the alarm a supervisor needs before the
/// CTI wallboard shows it.
async fn flag_late(engine: &Engine, seen: &mut HashSet<(bool, i64)>) {
    let tasks = engine.tasks.clone();
    let now = crate::clock::now_ms();
    let Ok(Ok(late)) = tokio::task::spawn_blocking(move || tasks.late_tasks(now)).await else {
        return;
    };
    for t in late {
        match t {
            verde_store::Task::Callback(c) => {
                if seen.insert((true, c.id)) {
                    tracing::warn!(callback = c.id, queue = %c.queue, number = %c.number, deadline_ms = c.deadline_ms, "SLA: callback late");
                }
            }
            verde_store::Task::Voicemail(v) => {
                if seen.insert((false, v.id)) {
                    tracing::warn!(voicemail = v.id, mailbox = %v.mailbox, deadline_ms = v.deadline_ms, "SLA: voicemail not taken in charge in time");
                }
            }
        }
    }
}

/// Whether the customer's chosen time band (local time of the number's flow) is on now.
fn in_band(engine: &Engine, cb: &CallbackRequest) -> bool {
    let Some(band) = &cb.band else { return true };
    let tz = engine
        .flows
        .for_number(&cb.did)
        .map(|f| f.timezone())
        .unwrap_or(chrono_tz::Europe::Rome);
    use chrono::Timelike;
    let local = crate::clock::now().with_timezone(&tz);
    let minute = (local.hour() * 60 + local.minute()) as u16;
    minute >= band.start_minute && minute < band.end_minute
}

struct Callback {
    engine: Arc<Engine>,
    cb: CallbackRequest,
    key: u64,
    handle: mpsc::Sender<CallInput>,
    agent: Option<AgentLeg>,
    customer: Option<AgentLeg>,
    customer_deadline: Option<Instant>,
    attempt_started: bool,
    talking: bool,
    finished: bool,
    sip_out: Vec<SipCmd>,
    /// The outcome of this attempt, once known.
    outcome: Option<AttemptOutcome>,
    /// Whether that outcome is in the store.
    recorded: bool,
    mode: CallbackMode,
    /// Customer-first: the agent the ACD reserved, rung once the customer answers.
    reserved: Option<String>,
    /// The agent whose bar shows this callback, until told it ended.
    told: Option<String>,
}

async fn run(engine: Arc<Engine>, cb: CallbackRequest, done: mpsc::Sender<i64>) {
    let id = cb.id;
    let key = engine.next_call_key();
    let (handle, mut inbox) = mpsc::channel(64);
    engine.acd.calls.insert(key, handle.clone());
    engine.acd.input(AcdInput::EnqueueCallback {
        call: CallKey(key),
        queue: cb.queue.as_str().into(),
        priority: 0,
        caller: cb.number.clone(),
        enqueued_at: crate::clock::instant_of_ms(cb.requested_at_ms),
    });
    tracing::info!(queue = %cb.queue, attempt = cb.attempts + 1, "callback in line at its original place");
    let mut c = Callback {
        engine,
        cb,
        key,
        handle,
        agent: None,
        customer: None,
        customer_deadline: None,
        attempt_started: false,
        talking: false,
        told: None,
        finished: false,
        sip_out: Vec::new(),
        outcome: None,
        recorded: false,
        mode: CallbackMode::AgentFirst,
        reserved: None,
    };
    c.mode = c
        .engine
        .cfg
        .queues
        .iter()
        .find(|q| q.name == c.cb.queue)
        .map(|q| q.callback.mode)
        .unwrap_or(CallbackMode::AgentFirst);
    let mut buf_a = vec![0u8; 4096];
    let mut buf_c = vec![0u8; 4096];
    while !c.finished {
        let deadline = [
            c.customer_deadline,
            c.agent
                .as_ref()
                .and_then(|l| l.media.as_ref()?.poll_timeout()),
            c.customer
                .as_ref()
                .and_then(|l| l.media.as_ref()?.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let rx_a = leg_recv(c.agent.as_ref(), &mut buf_a);
        let rx_c = leg_recv(c.customer.as_ref(), &mut buf_c);
        tokio::select! {
            input = inbox.recv() => match input {
                Some(i) => c.input(i, Instant::now()),
                None => c.finished = true,
            },
            Some(packet) = rx_a => {
                if let Some(l) = c.agent.as_mut() {
                    l.handle_packet(packet, Instant::now());
                }
            }
            Some(packet) = rx_c => {
                if let Some(l) = c.customer.as_mut() {
                    l.handle_packet(packet, Instant::now());
                }
            }
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                for leg in [c.agent.as_mut(), c.customer.as_mut()].into_iter().flatten() {
                    if let Some(m) = leg.media.as_mut() {
                        m.handle_timeout(now);
                    }
                }
                if c.customer_deadline.is_some_and(|d| now >= d) {
                    tracing::info!("customer did not answer in time");
                    c.customer_deadline = None;
                    if let Some(l) = c.customer.as_mut() {
                        l.cancel(&mut c.sip_out);
                    }
                    c.attempt_failed(AttemptOutcome::NoAnswer);
                }
            }
        }
        c.media_step(Instant::now());
        c.flush().await;
        // An answered callback is done at once: a crash during the conversation must not
        // make the customer be called again.
        if c.outcome == Some(AttemptOutcome::Answered) && !c.recorded {
            c.record(AttemptOutcome::Answered).await;
            c.recorded = true;
        }
    }
    c.hang_up_all();
    c.media_step(Instant::now());
    c.flush().await;
    c.engine.acd.calls.remove(&c.key);
    if let (Some(outcome), false) = (c.outcome, c.recorded) {
        c.record(outcome).await;
    }
    let _ = done.send(id).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn leg_recv(leg: Option<&AgentLeg>, buf: &mut [u8]) -> Option<crate::agent_leg::LegPacket> {
    let leg = leg.filter(|l| l.media.is_some())?;
    let (_, packet) = crate::agent_leg::recv_any(&[(0, leg.sockets())], buf)
        .await
        .ok()?;
    Some(packet)
}

impl Callback {
    fn input(&mut self, input: CallInput, now: Instant) {
        match input {
            CallInput::Acd(action) => self.acd(action, now),
            CallInput::Response { response, .. } | CallInput::StrayResponse { response } => {
                let id = response.call_id().map(str::to_string);
                if id.as_deref() == self.agent.as_ref().map(|l| l.call_id.as_str()) {
                    self.agent_response(&response, now);
                } else if id.as_deref() == self.customer.as_ref().map(|l| l.call_id.as_str()) {
                    self.customer_response(&response, now);
                }
            }
            CallInput::Request { tx, request } => {
                let resp = match request.method {
                    Method::Bye => {
                        let from_agent =
                            request.call_id() == self.agent.as_ref().map(|l| l.call_id.as_str());
                        tracing::info!(from_agent, "hang-up");
                        if from_agent {
                            if let Some(l) = self.agent.as_mut() {
                                l.state = LegState::Ended;
                            }
                        } else if let Some(l) = self.customer.as_mut() {
                            l.state = LegState::Ended;
                        }
                        if !self.talking && self.outcome.is_none() {
                            // The agent gave up before the customer answered.
                            self.attempt_failed(AttemptOutcome::Failed);
                        }
                        self.finished = true;
                        request.response(200, "OK")
                    }
                    Method::Ack => return,
                    _ => request.response(200, "OK"),
                };
                self.sip_out.push(SipCmd::Respond { tx, response: resp });
            }
            CallInput::Timeout { .. } => {
                if self
                    .customer
                    .as_ref()
                    .is_some_and(|l| l.state == LegState::Ringing)
                {
                    self.attempt_failed(AttemptOutcome::Failed);
                } else if self
                    .agent
                    .as_ref()
                    .is_some_and(|l| l.state == LegState::Ringing)
                {
                    self.agent_failed(408);
                }
            }
            CallInput::Shutdown => self.finished = true,
            CallInput::Cti(c) => {
                let outcome = self.cti_command(c.command);
                let _ = c.reply.send(outcome);
            }
            _ => {}
        }
    }

    fn acd(&mut self, action: Action, now: Instant) {
        match action {
            // Customer-first: the agent stays reserved, unrung, until the customer answers
            // (a later offer, after an agent failed, finds the customer already on the line).
            Action::Offer { ref agent, .. } if self.told.as_deref() != Some(agent.as_str()) => {
                self.tell_offered(agent.as_str(), now);
                self.acd(action, now);
            }
            Action::Offer { agent, .. } if self.mode == CallbackMode::CustomerFirst => {
                let customer_up = self
                    .customer
                    .as_ref()
                    .is_some_and(|l| l.state == LegState::Answered);
                if customer_up {
                    self.ring_agent(agent.as_str());
                } else if self.customer.is_none() {
                    self.reserved = Some(agent.as_str().to_string());
                    self.dial_customer(agent.as_str(), now);
                }
            }
            Action::Offer { agent, .. } => self.ring_agent(agent.as_str()),
            Action::CancelOffer { .. } => {
                if let Some(l) = self.agent.as_mut() {
                    l.cancel(&mut self.sip_out);
                }
                self.tell_ended("withdrawn");
            }
            _ => {}
        }
    }

    /// The agent's bar pops up with the callback (channel `callback`).
    fn tell_offered(&mut self, agent: &str, now: Instant) {
        self.tell_ended("withdrawn");
        let waited = crate::clock::instant_of_ms(self.cb.requested_at_ms);
        let offer = crate::cti::offer(
            &self.cb.number,
            &self.cb.did,
            &self.cb.queue,
            now.saturating_duration_since(waited),
            None,
            &[],
            verde_cti::Channel::Callback,
        );
        self.engine.cti.publish(verde_cti::Event::CallOffered {
            agent: agent.into(),
            call: CallKey(self.key),
            offer,
        });
        self.told = Some(agent.to_string());
    }

    fn tell_ended(&mut self, reason: &str) {
        if let Some(agent) = self.told.take() {
            self.engine.cti.publish(verde_cti::Event::CallEnded {
                agent: agent.as_str().into(),
                call: CallKey(self.key),
                reason: reason.to_string(),
            });
        }
    }

    /// A command from the bar: a callback is driven from the phone, but the agent may end it.
    fn cti_command(
        &mut self,
        command: verde_cti::EngineCommand,
    ) -> Result<verde_cti::Reply, verde_cti::EngineError> {
        use verde_cti::{EngineCommand as C, EngineError, ErrorCode, Reply};
        let mine = |agent: &verde_acd::AgentId, told: &Option<String>| {
            told.as_deref() == Some(agent.as_str())
        };
        match command {
            C::Hangup { agent, .. } if mine(&agent, &self.told) => {
                tracing::info!(agent = %agent.as_str(), "agent ends the callback from its bar");
                if !self.talking && self.outcome.is_none() {
                    self.attempt_failed(AttemptOutcome::Failed);
                }
                self.finished = true;
                Ok(Reply::Done)
            }
            C::Answer { .. } | C::Hold { .. } | C::ResumeCall { .. } | C::Transfer { .. } => {
                Err(EngineError::new(
                    ErrorCode::Unavailable,
                    "a callback is answered and handled on the phone; the bar can hang it up",
                ))
            }
            _ => Err(EngineError::new(ErrorCode::Gone, "not your callback")),
        }
    }

    fn ring_agent(&mut self, agent: &str) {
        let binding = self.engine.bindings.get(agent).map(|b| b.clone());
        let Some(binding) = binding else {
            tracing::warn!(%agent, "agent has no registered phone");
            return self.engine.acd.input(AcdInput::OfferFailed {
                call: CallKey(self.key),
                agent: agent.into(),
                reason: OfferFailure::Unreachable,
            });
        };
        // The RTP pair is bound synchronously here: a callback is one task among few.
        let Some(rtp) = bind_pair(&self.engine) else {
            return self.engine.acd.input(AcdInput::OfferFailed {
                call: CallKey(self.key),
                agent: agent.into(),
                reason: OfferFailure::Unreachable,
            });
        };
        tracing::info!(%agent, "ringing the agent for a callback");
        let leg = AgentLeg::invite(
            &self.engine,
            agent,
            &self.cb.queue,
            &binding.contact,
            crate::agent_leg::delivery_peer(&binding),
            &self.cb.number,
            rtp,
            false,
            &mut self.sip_out,
        );
        self.engine
            .register_alias(&leg.call_id, self.handle.clone());
        self.agent = Some(leg);
    }

    fn agent_failed(&mut self, status: u16) {
        self.tell_ended("no-answer");
        if let Some(l) = self.agent.take() {
            tracing::info!(agent = %l.agent, status, "agent did not take the callback");
            self.engine.acd.input(AcdInput::OfferFailed {
                call: CallKey(self.key),
                agent: l.agent.as_str().into(),
                reason: match status {
                    486 | 600 => OfferFailure::Busy,
                    603 => OfferFailure::Rejected,
                    408 | 480 | 487 => OfferFailure::NoAnswer,
                    _ => OfferFailure::Unreachable,
                },
            });
            self.sip_out.push(SipCmd::CallEnded {
                call_id: l.call_id,
                invite_tx: None,
            });
        }
    }

    fn agent_response(&mut self, resp: &verde_sip::Response, now: Instant) {
        let Some(leg) = self.agent.as_mut() else {
            return;
        };
        match leg.on_response(resp, now, &mut self.sip_out) {
            LegEvent::Answered => {
                let agent = leg.agent.clone();
                self.engine.acd.input(AcdInput::OfferAnswered {
                    call: CallKey(self.key),
                    agent: agent.as_str().into(),
                });
                self.engine.cti.publish(verde_cti::Event::CallAnswered {
                    agent: agent.as_str().into(),
                    call: CallKey(self.key),
                });
                if self.mode == CallbackMode::CustomerFirst {
                    tracing::info!(%agent, "agent answered; bridging with the waiting customer");
                    if let Some(m) = self.customer.as_mut().and_then(|l| l.media.as_mut()) {
                        m.stop_playback(now);
                    }
                    self.talking = true;
                    self.outcome = Some(AttemptOutcome::Answered);
                } else {
                    self.whisper(now);
                    self.dial_customer(&agent, now);
                }
            }
            LegEvent::Failed(status) => self.agent_failed(status),
            LegEvent::Ringing => self.engine.acd.input(AcdInput::OfferRinging {
                call: CallKey(self.key),
                agent: leg.agent.as_str().into(),
            }),
            // Only browser legs hang up outside SIP; callbacks ring phones.
            LegEvent::None | LegEvent::HungUp => {}
        }
    }

    fn dial_customer(&mut self, agent: &str, now: Instant) {
        let Some((uri, addr)) = self.engine.outbound_target(&self.cb.number) else {
            return self.attempt_failed(AttemptOutcome::Failed);
        };
        let Some(rtp) = bind_pair(&self.engine) else {
            return self.attempt_failed(AttemptOutcome::Failed);
        };
        // Durable before the customer's phone rings: a crash from here on leaves a visible
        // attempt that recovery marks interrupted.
        let tasks = self.engine.tasks.clone();
        let (id, at, who) = (self.cb.id, crate::clock::now_ms(), agent.to_string());
        match tasks.start_attempt(id, at, Some(&who)) {
            Ok(n) => tracing::info!(attempt = n, "dialing the customer"),
            Err(e) => {
                tracing::warn!(error = %e, "callback no longer pending; not dialing");
                self.finished = true;
                return;
            }
        }
        self.attempt_started = true;
        let timeout = self
            .engine
            .cfg
            .queues
            .iter()
            .find(|q| q.name == self.cb.queue)
            .map(|q| q.callback.customer_ring_timeout)
            .unwrap_or(Duration::from_secs(30));
        self.customer_deadline = Some(now + timeout);
        // The customer sees the number they called; a callback booked over HTTP without one is
        // anonymous (RFC 3323): From needs a user, and a proxy's sanity check refuses an empty one.
        let presented = if self.cb.did.is_empty() {
            "anonymous"
        } else {
            self.cb.did.as_str()
        };
        let leg = AgentLeg::invite(
            &self.engine,
            &self.cb.number,
            &self.cb.queue,
            &uri,
            Peer {
                transport: Transport::Udp,
                addr,
            },
            presented,
            rtp,
            false,
            &mut self.sip_out,
        );
        self.engine
            .register_alias(&leg.call_id, self.handle.clone());
        self.customer = Some(leg);
    }

    fn customer_response(&mut self, resp: &verde_sip::Response, now: Instant) {
        let Some(leg) = self.customer.as_mut() else {
            return;
        };
        match leg.on_response(resp, now, &mut self.sip_out) {
            LegEvent::Answered if self.mode == CallbackMode::CustomerFirst => {
                tracing::info!("customer answered; music while the agent is rung");
                self.customer_deadline = None;
                let moh = self.moh();
                if let (Some(m), Some(p)) =
                    (self.customer.as_mut().and_then(|l| l.media.as_mut()), moh)
                {
                    m.play_loop(p, now);
                }
                if let Some(agent) = self.reserved.take() {
                    self.ring_agent(&agent);
                }
            }
            LegEvent::Answered => {
                tracing::info!("customer answered; bridging agent and customer");
                self.customer_deadline = None;
                if let Some(m) = self.agent.as_mut().and_then(|l| l.media.as_mut()) {
                    m.stop_playback(now);
                }
                self.talking = true;
                self.outcome = Some(AttemptOutcome::Answered);
            }
            LegEvent::Failed(status) => {
                self.customer_deadline = None;
                let outcome = match status {
                    486 | 600 => AttemptOutcome::Busy,
                    404 | 484 | 604 => AttemptOutcome::WrongNumber,
                    408 | 480 | 487 | 603 => AttemptOutcome::NoAnswer,
                    _ => AttemptOutcome::Failed,
                };
                tracing::info!(status, ?outcome, "customer not reached");
                self.attempt_failed(outcome);
            }
            _ => {}
        }
    }

    /// Agent-first: while the customer's phone rings, the agent hears whom they are calling.
    fn whisper(&mut self, now: Instant) {
        let mut names = vec!["callback_whisper".to_string()];
        names.extend(
            self.cb
                .number
                .chars()
                .filter(|c| c.is_ascii_digit())
                .map(|c| format!("num_{c}")),
        );
        let list: Vec<_> = names
            .iter()
            .filter_map(|n| self.engine.prompts.get("it", n))
            .collect();
        if let Some(m) = self.agent.as_mut().and_then(|l| l.media.as_mut()) {
            if !list.is_empty() {
                m.play(list, now);
            }
        }
    }

    fn moh(&self) -> Option<Arc<verde_media::Prompt>> {
        let name = self
            .engine
            .cfg
            .queues
            .iter()
            .find(|q| q.name == self.cb.queue)
            .map(|q| q.moh.clone())
            .unwrap_or_else(|| "moh".into());
        self.engine.prompts.get("it", &name)
    }

    /// This attempt is over without a conversation: release the agent, record, leave.
    fn attempt_failed(&mut self, outcome: AttemptOutcome) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
        self.finished = true;
    }

    fn hang_up_all(&mut self) {
        self.tell_ended("ended");
        for leg in [self.agent.as_mut(), self.customer.as_mut()]
            .into_iter()
            .flatten()
        {
            leg.hang_up(&mut self.sip_out);
        }
        if let Some(agent) = self.agent.as_ref().map(|l| l.agent.clone()) {
            let answered = self.agent.as_ref().is_some_and(|l| l.answered_at.is_some());
            self.engine.acd.input(if answered {
                AcdInput::CallEnded {
                    call: CallKey(self.key),
                    agent: agent.as_str().into(),
                }
            } else {
                AcdInput::RemoveCaller {
                    call: CallKey(self.key),
                }
            });
        } else {
            self.engine.acd.input(AcdInput::RemoveCaller {
                call: CallKey(self.key),
            });
        }
        for leg in [self.agent.as_ref(), self.customer.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(m) = &leg.media {
                crate::metrics::media_finished(m);
            }
            self.sip_out.push(SipCmd::CallEnded {
                call_id: leg.call_id.clone(),
                invite_tx: None,
            });
        }
    }

    fn media_step(&mut self, now: Instant) {
        if self.talking {
            if let (Some(a), Some(c)) = (self.agent.as_mut(), self.customer.as_mut()) {
                if let (Some(ma), Some(mc)) = (a.media.as_mut(), c.media.as_mut()) {
                    verde_media::bridge_step(ma, mc, now);
                }
            }
        }
        for leg in [self.agent.as_mut(), self.customer.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(m) = leg.media.as_mut() {
                while let Some(ev) = m.poll_event() {
                    if let MediaEvent::Dtmf { digit, .. } = ev {
                        tracing::debug!(%digit, "dtmf on a callback leg");
                    }
                }
            }
            leg.send(Instant::now());
        }
    }

    async fn flush(&mut self) {
        for cmd in self.sip_out.drain(..) {
            if self.engine.sip().send(cmd).await.is_err() {
                return;
            }
        }
    }

    /// Writes the attempt's outcome: answered ends the request; otherwise a retry after the
    /// queue's delay while attempts remain, else "not reached".
    async fn record(&self, outcome: AttemptOutcome) {
        if !self.attempt_started {
            return;
        }
        let retry = self
            .engine
            .cfg
            .queues
            .iter()
            .find(|q| q.name == self.cb.queue)
            .map(|q| q.callback.retry_delay)
            .unwrap_or(Duration::from_secs(600));
        let now_ms = crate::clock::now_ms();
        let next = (outcome != AttemptOutcome::Answered).then(|| now_ms + retry.as_millis() as i64);
        let tasks = self.engine.tasks.clone();
        let id = self.cb.id;
        match tokio::task::spawn_blocking(move || tasks.finish_attempt(id, now_ms, outcome, next))
            .await
        {
            Ok(Ok(cb)) => tracing::info!(
                ?outcome,
                state = ?cb.state,
                final_outcome = ?cb.outcome,
                attempts = cb.attempts,
                "callback attempt recorded"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "ALARM: callback attempt NOT recorded"),
            Err(e) => tracing::error!(error = %e, "ALARM: callback attempt NOT recorded"),
        }
    }
}

/// An RTP pair for a callback leg (blocking bind on the runtime is avoided by using the std
/// socket and handing it to tokio).
fn bind_pair(engine: &Engine) -> Option<crate::rtp_ports::RtpPair> {
    engine.rtp_ports.bind_now(engine.media_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_beats_several_times_per_timeout_but_never_in_a_busy_loop() {
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(heartbeat_every(secs(30)), secs(5));
        assert_eq!(heartbeat_every(secs(5)), Duration::from_millis(1250));
        assert_eq!(heartbeat_every(secs(2)), secs(1));
        for timeout in [5, 8, 30, 600] {
            assert!(
                heartbeat_every(secs(timeout)) * 3 < secs(timeout),
                "{timeout}"
            );
        }
    }
}
