//! Transfers ordered from the agent's bar (or its phone's REFER): blind or attended, to a
//! queue, a named agent or an outside number.
//!
//! Everything stays inside the caller's task: a target is one more leg of the same call, so the
//! caller, the transferring agent and the target never need a lock between them. An ACD target
//! (queue or agent) is offered under its own ACD key while the transferring agent still talks
//! (attended), or under the caller's key once it has left (blind), so the ACD counts the new
//! talk in its queue like any other. When a target cannot be reached the caller is never
//! dropped: after a blind transfer it goes back into its queue, after an attended one it stays
//! on hold for the agent to take back.

use super::*;
use verde_cti::{EngineError, ErrorCode, TransferTarget};

/// How long an outside number may ring before the transfer counts as failed.
const NUMBER_RING_TIMEOUT: Duration = Duration::from_secs(30);

/// Whose media is joined.
pub(super) enum Bridge {
    /// The caller with the leg of this Call-ID.
    Caller(String),
    /// Two legs (the agent and its consultation target); the caller hears music.
    Legs(String, String),
}

pub(super) struct Xfer {
    /// The agent who transfers.
    pub by: String,
    pub to: TransferTarget,
    /// Still consulting: the agent has not hung up yet.
    pub attended: bool,
    /// The ACD key the target is offered under (0 for a number).
    pub key: u64,
    /// The caller's queue: where it returns when a blind transfer fails.
    pub queue: String,
    pub fallback: Vec<PromptRef>,
    /// The target's leg, once it rings.
    pub leg: Option<String>,
    /// The target answered.
    pub answered: bool,
    /// When an outside number stops ringing.
    pub deadline: Option<Instant>,
}

fn target_text(to: &TransferTarget) -> String {
    match to {
        TransferTarget::Queue(q) => format!("queue:{q}"),
        TransferTarget::Agent(a) => format!("agent:{a}"),
        TransferTarget::Number(n) => format!("number:{n}"),
    }
}

impl Xfer {
    /// The consultation's own ACD key, when it has one (not a number, not the caller's key).
    pub(super) fn consult_key(&self, caller: u64) -> Option<u64> {
        (self.key != 0 && self.key != caller).then_some(self.key)
    }
}

impl Call {
    /// Runs the media of whoever is joined.
    pub(super) fn bridge_media(&mut self, now: Instant) {
        let live = |legs: &[AgentLeg], id: &str| {
            legs.iter()
                .position(|l| l.call_id == id && l.state == LegState::Answered)
        };
        if self.mix_supervised(now) {
            return;
        }
        match &self.bridge {
            Some(Bridge::Caller(id)) => {
                if let Some(i) = live(&self.legs, id) {
                    if let Some(m) = self.legs[i].media.as_mut() {
                        verde_media::bridge_step(&mut self.media, m, now);
                    }
                }
            }
            Some(Bridge::Legs(a, b)) => {
                if let (Some(i), Some(j)) = (live(&self.legs, a), live(&self.legs, b)) {
                    let (lo, hi) = (i.min(j), i.max(j));
                    let (left, right) = self.legs.split_at_mut(hi);
                    if let (Some(x), Some(y)) = (left[lo].media.as_mut(), right[0].media.as_mut()) {
                        verde_media::bridge_step(x, y, now);
                    }
                }
            }
            None => {}
        }
    }

    /// A transfer from the bar by the agent on leg `i`.
    pub(super) fn start_transfer(
        &mut self,
        i: usize,
        attended: bool,
        to: TransferTarget,
        now: Instant,
    ) -> Result<(), EngineError> {
        if self.xfer.is_some() {
            return Err(EngineError::new(
                ErrorCode::InvalidState,
                "a transfer is already under way",
            ));
        }
        let by = self.legs[i].agent.clone();
        match &to {
            TransferTarget::Queue(q) if !self.engine.acd.has_queue(q) => {
                return Err(EngineError::new(
                    ErrorCode::NotFound,
                    format!("no queue {q:?}"),
                ))
            }
            TransferTarget::Agent(a) if *a == by => {
                return Err(EngineError::new(
                    ErrorCode::InvalidState,
                    "the call is already yours",
                ))
            }
            TransferTarget::Agent(a) if !self.engine.cfg.agents.iter().any(|x| x.id == *a) => {
                return Err(EngineError::new(
                    ErrorCode::NotFound,
                    format!("no agent {a:?}"),
                ))
            }
            TransferTarget::Number(_) if self.engine.cfg.outbound.uri.is_none() => {
                return Err(EngineError::new(
                    ErrorCode::Unavailable,
                    "no outbound trunk is configured (outbound.uri)",
                ))
            }
            _ => {}
        }
        let (queue, fallback) = self
            .queue
            .as_ref()
            .map(|q| (q.name.clone(), q.fallback.clone()))
            .unwrap_or_default();
        tracing::info!(agent = %by, to = %target_text(&to), attended, "transfer from the agent's bar");
        if let (false, TransferTarget::Queue(q)) = (attended, &to) {
            self.transfer_to_queue(i, q.clone(), now);
            return Ok(());
        }
        let mut xfer = Xfer {
            by: by.clone(),
            to: to.clone(),
            attended,
            key: 0,
            queue: queue.clone(),
            fallback,
            leg: None,
            answered: false,
            deadline: None,
        };
        if attended {
            self.hold_for_consult(i, now);
        } else {
            self.agent_leaves(i, &to, false);
            self.media.stop_playback(now);
            if let Some(p) = self.prompt("moh") {
                self.media.play_loop(p, now);
            }
        }
        let caller = self.caller.clone();
        match &to {
            TransferTarget::Number(n) => {
                if !attended {
                    // Out of the ACD: nobody of ours talks to the caller any more.
                    self.queue = None;
                    self.disposition = Some("transferred");
                }
                self.pending_dials.push(n.clone());
            }
            TransferTarget::Agent(a) => {
                xfer.key = if attended {
                    self.consult_key()
                } else {
                    // Waiting for the agent counts as waiting in the queue: a hang-up now is an
                    // abandon, and withdraws the offer.
                    if let Some(q) = self.queue.as_mut() {
                        q.bridged = false;
                    }
                    self.key
                };
                self.engine.acd.input(AcdInput::Direct {
                    call: CallKey(xfer.key),
                    agent: a.as_str().into(),
                    queue: queue.as_str().into(),
                });
            }
            TransferTarget::Queue(q) => {
                xfer.key = self.consult_key();
                self.engine.acd.input(AcdInput::Enqueue {
                    call: CallKey(xfer.key),
                    queue: q.as_str().into(),
                    priority: 0,
                    caller,
                });
            }
        }
        if attended {
            self.consult_event(&xfer, "ringing", None);
        }
        self.xfer = Some(xfer);
        Ok(())
    }

    /// A fresh ACD key for a consultation, routed to this task.
    fn consult_key(&self) -> u64 {
        let key = self.engine.next_call_key();
        self.engine.acd.calls.insert(key, self.start.handle.clone());
        key
    }

    /// Tells the consulting agent's bar how the consultation `x` goes.
    fn consult_event(&self, x: &Xfer, state: &str, reason: Option<&str>) {
        self.engine.cti.publish(verde_cti::Event::Consult {
            agent: x.by.as_str().into(),
            call: CallKey(self.key),
            to: x.to.clone(),
            state: state.into(),
            reason: reason.map(str::to_string),
        });
    }

    /// The ACD's `CallEnded` for `agent`'s talk with the caller, if it had one.
    pub(super) fn end_talk(&mut self, agent: &str) {
        if let Some(p) = self.talks.iter().position(|(_, a)| a == agent) {
            let (key, agent) = self.talks.remove(p);
            self.engine.acd.input(AcdInput::CallEnded {
                call: CallKey(key),
                agent: agent.as_str().into(),
            });
        }
    }

    /// The caller waits on music while the agent on leg `i` consults.
    fn hold_for_consult(&mut self, i: usize, now: Instant) {
        self.cdr_hold(true, now);
        self.media.set_relay(false);
        if let Some(m) = self.legs[i].media.as_mut() {
            m.set_relay(true);
        }
        self.media.stop_playback(now);
        if let Some(p) = self.prompt("moh") {
            self.media.play_loop(p, now);
        }
        if !self.bar_hold {
            self.bar_hold = true;
            self.engine.cti.publish(verde_cti::Event::CallHeld {
                agent: self.legs[i].agent.as_str().into(),
                call: CallKey(self.key),
            });
        }
    }

    /// The agent on leg `i` hands the caller over to `to`: its leg ends, its talk ends in the
    /// ACD (wrap-up), its bar hears of the transfer, the record of who and where.
    pub(super) fn agent_leaves(&mut self, i: usize, to: &TransferTarget, attended: bool) {
        let agent = self.legs[i].agent.clone();
        if self.legs[i].state == LegState::Answered {
            self.legs[i].bye(&mut self.sip_out);
        }
        self.end_talk(&agent);
        if matches!(&self.bridge, Some(Bridge::Caller(id)) if *id == self.legs[i].call_id) {
            self.bridge = None;
        }
        self.media.set_relay(false);
        self.bar_hold = false;
        self.told.retain(|a| *a != agent);
        self.stop_talk_recording(Instant::now());
        self.end_supervision(Instant::now());
        self.cdr_talk_end(&agent, Instant::now());
        self.cdr_transfer(&agent, target_text(to), attended);
        let queue = self.queue_name();
        self.qlog(
            verde_store::QueueEventKind::Transfer,
            &queue,
            &agent,
            vec![
                target_text(to),
                if attended { "attended" } else { "blind" }.into(),
            ],
        );
        self.engine.cti.publish(verde_cti::Event::CallTransferred {
            agent: agent.as_str().into(),
            call: CallKey(self.key),
            to: to.clone(),
        });
        let to = match to {
            TransferTarget::Queue(q) => q.clone(),
            other => target_text(other),
        };
        self.extra.insert("transferred_by".into(), agent.clone());
        self.extra.insert("transferred_to".into(), to.clone());
        self.extra.insert(
            "transfer_kind".into(),
            if attended { "attended" } else { "blind" }.into(),
        );
        self.disposition = None;
        self.drop_ended_legs();
    }

    /// The target's leg `i` answered.
    pub(super) fn target_answered(&mut self, i: usize, now: Instant) {
        let (agent, call_id, key, number) = {
            let l = &self.legs[i];
            (l.agent.clone(), l.call_id.clone(), l.acd_key, l.number)
        };
        if !number {
            tracing::info!(%agent, "transfer target answered");
            self.cdr_offer_outcome(&agent, "answered");
            self.engine.acd.input(AcdInput::OfferAnswered {
                call: CallKey(key),
                agent: agent.as_str().into(),
            });
            self.talks.push((key, agent.clone()));
            // Ring-all in a target queue: the others stop.
            let mut others = Vec::new();
            for leg in self.legs.iter_mut() {
                if leg.acd_key == key && leg.call_id != call_id && !leg.number {
                    leg.cancel(&mut self.sip_out);
                    others.push(leg.agent.clone());
                }
            }
            self.bar_offers.retain(|(a, _, k)| {
                let mine = *k == key;
                if mine {
                    others.push(a.clone());
                }
                !mine
            });
            for a in others {
                self.tell_ended(&a, "answered-elsewhere");
            }
            self.engine.cti.publish(verde_cti::Event::CallAnswered {
                agent: agent.as_str().into(),
                call: CallKey(self.key),
            });
        } else {
            tracing::info!(number = %agent, "transfer: the number answered");
        }
        let by_leg = self.xfer.as_ref().and_then(|x| {
            self.legs
                .iter()
                .find(|l| x.attended && l.agent == x.by && !l.number)
                .filter(|l| l.state == LegState::Answered)
                .map(|l| l.call_id.clone())
        });
        if let Some(x) = self.xfer.as_mut() {
            x.answered = true;
            x.deadline = None;
            x.leg = Some(call_id.clone());
        }
        match by_leg {
            Some(by) => {
                self.bridge = Some(Bridge::Legs(by, call_id));
                if let Some(x) = &self.xfer {
                    self.consult_event(x, "talking", None);
                }
            }
            None => self.connect_caller(i, now),
        }
    }

    /// The caller talks with the target on leg `i`: the transfer is done.
    fn connect_caller(&mut self, i: usize, now: Instant) {
        let Some(x) = self.xfer.take() else { return };
        let leg = &self.legs[i];
        tracing::info!(target = %leg.agent, "caller connected to the transfer target");
        let who = if leg.number {
            format!("number:{}", leg.agent)
        } else {
            leg.agent.clone()
        };
        let queue = self.queue_name();
        self.cdr_hold(false, now);
        self.cdr_talk_start(&who, &queue, None);
        let leg = &self.legs[i];
        self.bridge = Some(Bridge::Caller(leg.call_id.clone()));
        self.media.stop_playback(now);
        self.media.set_relay(true);
        self.bar_hold = false;
        if leg.number {
            self.disposition = Some("transferred");
        } else {
            self.extra.insert("agent".into(), leg.agent.clone());
            self.disposition = Some("answered-agent");
            if let Some(q) = self.queue.as_mut() {
                q.bridged = true;
            }
        }
        if let Some(key) = x.consult_key(self.key) {
            self.engine.acd.calls.remove(&key);
        }
        if !self.legs[i].number {
            self.record_by_policy(now);
        }
    }

    /// The target could not be reached. After a blind transfer the caller goes back into its
    /// queue; during a consultation it stays on hold for the agent to take back.
    pub(super) fn transfer_failed(&mut self, why: &str, now: Instant) {
        let Some(x) = self.xfer.take() else { return };
        if let Some(key) = x.consult_key(self.key) {
            self.engine.acd.calls.remove(&key);
        }
        if let Some(id) = &x.leg {
            for leg in self.legs.iter_mut().filter(|l| l.call_id == *id) {
                leg.hang_up(&mut self.sip_out);
            }
        }
        let consulting = x.attended
            && self
                .legs
                .iter()
                .any(|l| l.agent == x.by && l.state == LegState::Answered && !l.number);
        tracing::info!(to = %target_text(&x.to), %why, consulting, "transfer failed");
        if consulting {
            self.consult_event(&x, "failed", Some(why));
            if let Some(by) = self.legs.iter().find(|l| l.agent == x.by) {
                self.bridge = Some(Bridge::Caller(by.call_id.clone()));
            }
        } else {
            self.extra.insert("transfer_failed".into(), why.to_string());
            if self.queue.as_ref().is_some_and(|q| !q.bridged) {
                self.queue = None;
            }
            if x.queue.is_empty() {
                self.hangup(now, "transfer-failed");
            } else {
                self.enqueue(x.queue, x.fallback, now);
            }
        }
        self.drop_ended_legs();
    }

    /// An outside number rang too long.
    pub(super) fn transfer_deadline(&mut self, now: Instant) {
        if self
            .xfer
            .as_ref()
            .and_then(|x| x.deadline)
            .is_some_and(|d| now >= d)
        {
            self.transfer_failed("no-answer", now);
        }
    }

    /// The answered leg `i` hung up (its phone, or its agent from the bar).
    pub(super) fn leg_hung_up(&mut self, i: usize, now: Instant) {
        let (agent, call_id, number) = {
            let l = &self.legs[i];
            (l.agent.clone(), l.call_id.clone(), l.number)
        };
        if let Some(x) = &self.xfer {
            if x.attended && !number && agent == x.by {
                return self.complete_consult(i, now);
            }
            if x.leg.as_deref() == Some(call_id.as_str()) {
                return self.consult_ended(i, now);
            }
        }
        if !number {
            self.tell_ended(&agent, "agent-hangup");
            if self.ivr.resume_after_agent(now) {
                return self.after_agent(now);
            }
        }
        self.hangup(now, "answered-agent");
        self.hangup_by = if number { "number" } else { "agent" };
    }

    /// The agent hung up first and the flow goes on (the post-call survey): the caller leaves
    /// the ACD and its bridge, and hears the flow again.
    fn after_agent(&mut self, now: Instant) {
        tracing::info!("agent hung up; the caller goes on in the flow");
        self.stop_talk_recording(now);
        self.end_supervision(now);
        for (key, agent) in std::mem::take(&mut self.talks) {
            self.engine.acd.input(AcdInput::CallEnded {
                call: CallKey(key),
                agent: agent.as_str().into(),
            });
            self.cdr_talk_end(&agent, now);
        }
        if self.queue.take().is_some() {
            self.engine.acd.calls.remove(&self.key);
        }
        self.bridge = None;
        self.media.set_relay(false);
        self.media.stop_playback(now);
        self.bar_hold = false;
        self.hangup_by = "agent";
        self.drop_ended_legs();
    }

    /// The consulting agent hung up: the caller goes to the target (at once if it answered,
    /// else when it does).
    fn complete_consult(&mut self, i: usize, now: Instant) {
        let Some(to) = self.xfer.as_ref().map(|x| x.to.clone()) else {
            return;
        };
        tracing::info!(agent = %self.legs[i].agent, "agent completes the attended transfer");
        self.agent_leaves(i, &to, true);
        let target = self.xfer.as_ref().and_then(|x| {
            x.leg
                .as_ref()
                .filter(|_| x.answered)
                .and_then(|id| self.legs.iter().position(|l| l.call_id == *id))
        });
        match target {
            Some(t) => self.connect_caller(t, now),
            None => {
                if let Some(x) = self.xfer.as_mut() {
                    x.attended = false;
                }
            }
        }
    }

    /// The target hung up during the consultation: the caller stays on hold with the agent.
    fn consult_ended(&mut self, i: usize, _now: Instant) {
        let Some(x) = self.xfer.take() else { return };
        let agent = self.legs[i].agent.clone();
        if !self.legs[i].number {
            self.end_talk(&agent);
            self.tell_ended(&agent, "agent-hangup");
        }
        if let Some(key) = x.consult_key(self.key) {
            self.engine.acd.calls.remove(&key);
        }
        tracing::info!(target = %agent, "transfer target hung up during the consultation");
        if let Some(by) = self.legs.iter().find(|l| l.agent == x.by && !l.number) {
            self.bridge = Some(Bridge::Caller(by.call_id.clone()));
        }
        self.consult_event(&x, "ended", None);
        self.drop_ended_legs();
    }

    /// The consulting agent takes the caller back.
    pub(super) fn cancel_consult(&mut self, now: Instant) {
        let Some(x) = self.xfer.take() else { return };
        tracing::info!(agent = %x.by, "agent cancels the consultation");
        if let Some(id) = &x.leg {
            if let Some(leg) = self.legs.iter_mut().find(|l| l.call_id == *id) {
                leg.hang_up(&mut self.sip_out);
                let agent = leg.agent.clone();
                if !leg.number {
                    self.end_talk(&agent);
                    self.tell_ended(&agent, "withdrawn");
                }
            }
        }
        if let Some(key) = x.consult_key(self.key) {
            if !x.answered {
                // Still waiting or ringing: the ACD withdraws it (and says CancelOffer).
                self.engine
                    .acd
                    .input(AcdInput::RemoveCaller { call: CallKey(key) });
            }
            for (a, _, _) in self.bar_offers.clone().iter().filter(|o| o.2 == key) {
                self.tell_ended(a, "withdrawn");
            }
            self.bar_offers.retain(|o| o.2 != key);
            self.pending_offers.retain(|o| o.3 != key);
            self.engine.acd.calls.remove(&key);
        }
        self.consult_event(&x, "cancelled", None);
        if let Some(i) = self
            .legs
            .iter()
            .position(|l| l.agent == x.by && l.state == LegState::Answered && !l.number)
        {
            self.bridge = Some(Bridge::Caller(self.legs[i].call_id.clone()));
            if let Some(m) = self.legs[i].media.as_mut() {
                m.set_relay(true);
            }
        }
        self.media.set_relay(true);
        self.media.stop_playback(now);
        self.bar_hold = false;
        self.cdr_hold(false, now);
        self.engine.cti.publish(verde_cti::Event::CallResumed {
            agent: x.by.as_str().into(),
            call: CallKey(self.key),
        });
        self.drop_ended_legs();
    }

    /// Calls an outside number for a transfer, through `outbound.uri`.
    pub(super) async fn dial_number(&mut self, number: String) {
        let now = Instant::now();
        let Some((uri, addr)) = self.engine.outbound_target(&number) else {
            return self.transfer_failed("unreachable", now);
        };
        let Some(rtp) = self.engine.rtp_ports.bind(self.engine.media_ip).await else {
            tracing::error!(%number, "no RTP port for the transfer leg");
            return self.transfer_failed("unreachable", now);
        };
        let Some(queue) = self.xfer.as_ref().map(|x| x.queue.clone()) else {
            return;
        };
        tracing::info!(%number, %uri, "transfer: calling the number");
        let mut leg = AgentLeg::invite(
            &self.engine,
            &number,
            &queue,
            &uri,
            verde_sip::Peer {
                transport: Transport::Udp,
                addr,
            },
            &self.caller,
            rtp,
            false,
            &mut self.sip_out,
        );
        leg.number = true;
        self.engine
            .register_alias(&leg.call_id, self.start.handle.clone());
        if let Some(x) = self.xfer.as_mut() {
            x.leg = Some(leg.call_id.clone());
            x.deadline = Some(now + NUMBER_RING_TIMEOUT);
        }
        self.legs.push(leg);
    }
}
