//! A supervisor's phone joins a live conversation: listen (hears both), whisper (hears both,
//! the agent alone hears it) or barge (everyone hears everyone). Verde calls the supervisor's
//! registered phone (asking it to answer by itself) and mixes the three parties' audio in its
//! media layer; the supervisor changes mode or leaves from the wallboard, or hangs up.

use super::*;
use verde_cti::{EngineError, ErrorCode, SuperviseMode};
use verde_media::SupervisorMode;

pub(super) struct Supervision {
    pub supervisor: String,
    pub leg: AgentLeg,
    pub mode: SupervisorMode,
    /// Present once the supervisor's phone answered.
    pub mixer: Option<verde_media::Mixer>,
}

fn media_mode(m: SuperviseMode) -> SupervisorMode {
    match m {
        SuperviseMode::Listen => SupervisorMode::Listen,
        SuperviseMode::Whisper => SupervisorMode::Whisper,
        SuperviseMode::Barge => SupervisorMode::Barge,
    }
}

impl Call {
    /// The wallboard's `supervise` command.
    pub(super) fn supervise_command(
        &mut self,
        supervisor: String,
        mode: Option<SuperviseMode>,
        now: Instant,
    ) -> Result<(), EngineError> {
        let Some(mode) = mode else {
            return match &self.sup {
                Some(s) if s.supervisor == supervisor => {
                    tracing::info!(%supervisor, "supervisor leaves the call");
                    self.end_supervision(now);
                    Ok(())
                }
                Some(_) => Err(EngineError::new(
                    ErrorCode::Forbidden,
                    "another supervisor is on this call",
                )),
                None => Err(EngineError::new(ErrorCode::InvalidState, "not supervising")),
            };
        };
        let mode = media_mode(mode);
        if let Some(s) = self.sup.as_mut() {
            if s.supervisor != supervisor {
                return Err(EngineError::new(
                    ErrorCode::InvalidState,
                    format!("{} is already on this call", s.supervisor),
                ));
            }
            tracing::info!(%supervisor, ?mode, "supervisor changes mode");
            s.mode = mode;
            if let Some(m) = s.mixer.as_mut() {
                m.set_mode(mode);
            }
            return Ok(());
        }
        if self.talking_agent().is_none() || self.xfer.is_some() {
            return Err(EngineError::new(
                ErrorCode::InvalidState,
                "the caller is not talking with an agent",
            ));
        }
        let Some(binding) = self.engine.bindings.get(&supervisor).map(|b| b.clone()) else {
            return Err(EngineError::new(
                ErrorCode::Unavailable,
                "register your SIP phone first: it is how you join the call",
            ));
        };
        let Some(rtp) = self.engine.rtp_ports.bind_now(self.engine.media_ip) else {
            return Err(EngineError::new(ErrorCode::Unavailable, "no free RTP port"));
        };
        tracing::info!(%supervisor, ?mode, "calling the supervisor's phone to join the call");
        let queue = self.queue_name();
        let leg = AgentLeg::invite(
            &self.engine,
            &supervisor,
            &queue,
            &binding.contact,
            crate::agent_leg::delivery_peer(&binding),
            &self.caller,
            rtp,
            true,
            &mut self.sip_out,
        );
        self.engine
            .register_alias(&leg.call_id, self.start.handle.clone());
        self.sup = Some(Supervision {
            supervisor,
            leg,
            mode,
            mixer: None,
        });
        Ok(())
    }

    pub(super) fn is_supervisor_leg(&self, call_id: Option<&str>) -> bool {
        self.sup
            .as_ref()
            .is_some_and(|s| Some(s.leg.call_id.as_str()) == call_id)
    }

    pub(super) fn supervisor_response(&mut self, resp: &Response, now: Instant) {
        let Some(s) = self.sup.as_mut() else { return };
        match s.leg.on_response(resp, now, &mut self.sip_out) {
            LegEvent::Answered => {
                tracing::info!(supervisor = %s.supervisor, mode = ?s.mode, "supervisor joined the call");
                if let Some(m) = s.leg.media.as_mut() {
                    m.set_relay(true);
                }
                s.mixer = Some(verde_media::Mixer::new(s.mode, now));
            }
            LegEvent::Failed(status) => {
                tracing::info!(supervisor = %s.supervisor, status, "supervisor's phone did not answer");
                s.leg.state = LegState::Ended;
                self.end_supervision(now);
            }
            LegEvent::Ringing | LegEvent::None | LegEvent::HungUp => {}
        }
    }

    /// A request in the supervisor's dialog: its BYE ends the supervision.
    pub(super) fn supervisor_request(&mut self, tx: ServerTxId, req: Request, now: Instant) {
        match req.method {
            Method::Bye => {
                self.respond(tx, req.response(200, "OK"));
                if let Some(s) = self.sup.as_mut() {
                    tracing::info!(supervisor = %s.supervisor, "supervisor hung up");
                    s.leg.state = LegState::Ended;
                }
                self.end_supervision(now);
            }
            Method::Ack => {}
            _ => self.respond(tx, req.response(200, "OK")),
        }
    }

    /// Takes the supervisor out: plain bridging again, its leg hung up.
    pub(super) fn end_supervision(&mut self, _now: Instant) {
        let Some(mut s) = self.sup.take() else { return };
        if let Some(mixer) = s.mixer.take() {
            let agent = self.caller_leg_index();
            if let (Some(i), Some(sm)) = (agent, s.leg.media.as_mut()) {
                if let Some(am) = self.legs[i].media.as_mut() {
                    mixer.detach(&mut self.media, am, sm);
                }
            }
        }
        s.leg.hang_up(&mut self.sip_out);
        if let Some(m) = &s.leg.media {
            crate::metrics::media_finished(m);
        }
        self.sip_out.push(SipCmd::CallEnded {
            invite_tx: None,
            call_id: s.leg.call_id.clone(),
        });
    }

    /// The leg joined with the caller.
    pub(super) fn caller_leg_index(&self) -> Option<usize> {
        let Some(Bridge::Caller(id)) = &self.bridge else {
            return None;
        };
        self.legs
            .iter()
            .position(|l| l.call_id == *id && l.state == LegState::Answered)
    }

    /// Mixes the three parties when a supervisor is on the call; false when it is not (plain
    /// bridging applies).
    pub(super) fn mix_supervised(&mut self, now: Instant) -> bool {
        let Some(i) = self.caller_leg_index() else {
            return false;
        };
        let Some(s) = self.sup.as_mut() else {
            return false;
        };
        let (Some(mixer), Some(sm)) = (s.mixer.as_mut(), s.leg.media.as_mut()) else {
            return false;
        };
        let Some(am) = self.legs[i].media.as_mut() else {
            return false;
        };
        mixer.step(&mut self.media, am, sm, now);
        true
    }
}
