//! One task per call: the call's SIP dialog, its media leg and its IVR position, with no locks.
//!
//! The task is a thin loop: it feeds SIP events, RTP packets and timer expiries to the sans-IO
//! [`MediaSession`] and [`Interpreter`], carries out the actions they return, and at the end
//! writes the call record. Everything it does is logged inside the call's span, so every line
//! carries the Call-ID.

use crate::sip_core::{Engine, SipCmd};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Instrument;
use verde_ivr::{CallInfo, Flow, Interpreter, IvrAction, IvrEvent, PromptRef};
use verde_media::{
    Codec, InbandDtmf, LocalSdp, MediaConfig, MediaEvent, MediaSession, SdpError, Socket, Transmit,
};
use verde_sip::{ClientTxId, Dialog, Method, Peer, Request, Response, ServerTxId, Transport};
use verde_store::CallRecord;

/// Methods we accept inside and outside dialogs.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

/// What the SIP task hands to a call.
pub enum CallInput {
    Request {
        tx: ServerTxId,
        request: Request,
    },
    Ack,
    Cancelled,
    AckTimeout,
    Response {
        tx: ClientTxId,
        response: Response,
    },
    Timeout {
        tx: ClientTxId,
    },
    /// The engine is shutting down and the grace period is over.
    Shutdown,
}

pub struct CallStart {
    pub call_id: String,
    pub tx: ServerTxId,
    pub invite: Request,
    pub from: Peer,
    pub trunk: String,
    pub did: String,
    pub flow: Arc<Flow>,
}

pub fn spawn(
    engine: Arc<Engine>,
    start: CallStart,
    inbox: mpsc::Receiver<CallInput>,
    span: tracing::Span,
) {
    tokio::spawn(
        async move {
            let call_id = start.call_id.clone();
            run(engine.clone(), start, inbox).await;
            let _ = engine.sip().send(SipCmd::CallEnded { call_id }).await;
        }
        .instrument(span),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE received, nothing but 100 sent.
    Offered,
    /// 183 with SDP sent: early media.
    Early,
    Answered,
    Ended,
}

/// What happens when the current playback ends.
enum AfterPlayback {
    Hangup { disposition: &'static str },
}

struct Call {
    engine: Arc<Engine>,
    start: CallStart,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    phase: Phase,
    local_tag: String,
    contact: String,
    dialog: Option<Dialog>,
    answer_sdp: String,
    local_sdp: LocalSdp,
    media: MediaSession,
    rtp: crate::rtp_ports::RtpPair,
    ivr: Interpreter,
    after_playback: Option<AfterPlayback>,
    /// The REFER we sent, while a transfer is under way.
    refer_tx: Option<ClientTxId>,
    sip_out: Vec<SipCmd>,
    dtmf: String,
    disposition: Option<&'static str>,
    hangup_by: &'static str,
    sip_status: Option<u16>,
    outcome: Option<String>,
    hard_deadline: Instant,
}

async fn run(engine: Arc<Engine>, start: CallStart, mut inbox: mpsc::Receiver<CallInput>) {
    let now = Instant::now();
    let started_at = Utc::now();
    tracing::info!(
        caller = %caller_number(&start.invite),
        did = %start.did,
        trunk = %start.trunk,
        from = %start.from.addr,
        transport = ?start.from.transport,
        flow = %start.flow.name(),
        "incoming call"
    );
    let refuse = |status: u16, reason: &str, warning: Option<&str>| {
        let mut resp = start
            .invite
            .response(status, reason)
            .with_to_tag(&verde_sip::new_tag());
        if let Some(w) = warning {
            resp.headers.push("Warning", w);
        }
        resp
    };

    let content_type = start
        .invite
        .headers
        .get("content-type")
        .map(|c| c.trim().to_ascii_lowercase());
    let body = std::str::from_utf8(&start.invite.body).unwrap_or("").trim();
    let refusal = match content_type.as_deref() {
        Some(ct) if !body.is_empty() && !ct.starts_with("application/sdp") => Some((
            415,
            "Unsupported Media Type",
            "399 verde \"only application/sdp bodies are accepted\"",
        )),
        // Delayed offer (INVITE without SDP) needs our offer in the 200 and the answer in
        // the ACK; carriers that do this are rare on 800 trunks and it is not built yet.
        _ if body.is_empty() => Some((
            488,
            "Not Acceptable Here",
            "399 verde \"an SDP offer in the INVITE is required\"",
        )),
        _ => None,
    };
    if let Some((status, reason, warning)) = refusal {
        let mut resp = refuse(status, reason, Some(warning));
        if status == 415 {
            resp.headers.push("Accept", "application/sdp");
        }
        tracing::warn!(status, content_type = ?content_type, "refused: no usable SDP offer");
        let _ = engine
            .sip()
            .send(SipCmd::Respond {
                tx: start.tx,
                response: resp,
            })
            .await;
        engine.records.write(base_record(&start, started_at, "rejected", Some(status))).await;
        return;
    }
    let offer = body.to_string();
    let Some(rtp) = engine.rtp_ports.bind(engine.media_ip).await else {
        tracing::error!("refused: no free RTP port in the configured range");
        let mut resp = refuse(503, "Service Unavailable", None);
        resp.headers.push("Retry-After", "5");
        let _ = engine
            .sip()
            .send(SipCmd::Respond {
                tx: start.tx,
                response: resp,
            })
            .await;
        engine.records.write(base_record(&start, started_at, "rejected", Some(503))).await;
        return;
    };
    let mut local_sdp = LocalSdp::new(
        engine.media_ip,
        rtp.port,
        &[Codec::Pcmu, Codec::Pcma],
        rand::random::<u32>() as u64,
    );
    let negotiated = match local_sdp.answer(&offer) {
        Ok(n) => n,
        Err(e) => {
            let (status, reason, warn) = match &e {
                SdpError::NoCommonCodec => (
                    488,
                    "Not Acceptable Here",
                    "305 verde \"only PCMU and PCMA audio are supported\"",
                ),
                SdpError::Malformed(_) => (400, "Bad Request", "399 verde \"malformed SDP\""),
                _ => (488, "Not Acceptable Here", "304 verde \"no audio stream\""),
            };
            tracing::warn!(error = %e, status, "refused: SDP offer not acceptable");
            let resp = refuse(status, reason, Some(warn));
            let _ = engine
                .sip()
                .send(SipCmd::Respond {
                    tx: start.tx,
                    response: resp,
                })
                .await;
            engine.records.write(base_record(&start, started_at, "rejected", Some(status))).await;
            return;
        }
    };
    tracing::info!(codec = ?negotiated.codec, remote_rtp = %negotiated.remote, local_rtp = rtp.port, dtmf_pt = ?negotiated.dtmf_pt, "media negotiated");
    let media = MediaSession::new(
        &negotiated,
        MediaConfig {
            inband_dtmf: if engine.cfg.media.inband_dtmf {
                InbandDtmf::Auto
            } else {
                InbandDtmf::Never
            },
            wall_clock: Some(std::time::SystemTime::now()),
            ..MediaConfig::default()
        },
        now,
    );
    let info = CallInfo {
        call_id: start.call_id.clone(),
        caller: caller_number(&start.invite),
        did: start.did.clone(),
    };
    let ivr = Interpreter::new(start.flow.clone(), info, started_at, now);
    let contact = engine.contact(start.from.transport);
    let mut call = Call {
        hard_deadline: now + engine.cfg.sip.max_call_duration,
        engine,
        start,
        started_at,
        answered_at: None,
        phase: Phase::Offered,
        local_tag: verde_sip::new_tag(),
        contact,
        dialog: None,
        answer_sdp: negotiated.answer.clone(),
        local_sdp,
        media,
        rtp,
        ivr,
        after_playback: None,
        refer_tx: None,
        sip_out: Vec::new(),
        dtmf: String::new(),
        disposition: None,
        hangup_by: "caller",
        sip_status: None,
        outcome: None,
    };
    call.ivr.handle(IvrEvent::Start, now);
    call.step(now);
    call.flush().await;

    let mut rtp_buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    while call.phase != Phase::Ended {
        let deadline = [
            call.media.poll_timeout(),
            call.ivr.poll_timeout(),
            Some(call.hard_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("hard deadline always set");
        tokio::select! {
            input = inbox.recv() => {
                let now = Instant::now();
                match input {
                    Some(input) => call.sip_input(input, now),
                    None => call.end(now, "engine", Some("failed")),
                }
            }
            r = call.rtp.rtp.recv_from(&mut rtp_buf) => {
                if let Ok((n, from)) = r {
                    let pkt = Bytes::copy_from_slice(&rtp_buf[..n]);
                    call.media.handle_packet(Socket::Rtp, pkt, from, Instant::now());
                }
            }
            r = call.rtp.rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, from)) = r {
                    let pkt = Bytes::copy_from_slice(&rtcp_buf[..n]);
                    call.media.handle_packet(Socket::Rtcp, pkt, from, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now >= call.hard_deadline {
                    tracing::warn!(max_s = call.engine.cfg.sip.max_call_duration.as_secs(), "maximum call duration reached");
                    call.hangup(now, "max-duration");
                    call.hangup_by = "timeout";
                } else {
                    call.media.handle_timeout(now);
                    call.ivr.handle_timeout(now);
                }
            }
        }
        call.step(Instant::now());
        call.flush().await;
    }
    let record = call.finish();
    call.engine.records.write(record).await;
}

impl Call {
    /// Runs the state machines to quiescence: IVR actions, media events, then media packets.
    fn step(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.ivr.poll_action() {
                progressed = true;
                self.action(a, now);
            }
            while let Some(e) = self.media.poll_event() {
                progressed = true;
                self.media_event(e, now);
            }
            if !progressed {
                break;
            }
        }
        while let Some(Transmit { socket, to, bytes }) = self.media.poll_transmit() {
            let s = match socket {
                Socket::Rtp => &self.rtp.rtp,
                Socket::Rtcp => &self.rtp.rtcp,
            };
            // A full socket buffer drops the packet, as a late packet would be dropped anyway.
            if let Err(e) = s.try_send_to(&bytes, to) {
                tracing::debug!(error = %e, %to, "rtp send failed");
            }
        }
    }

    async fn flush(&mut self) {
        for cmd in self.sip_out.drain(..) {
            if self.engine.sip().send(cmd).await.is_err() {
                return;
            }
        }
    }

    fn respond(&mut self, tx: ServerTxId, response: Response) {
        self.sip_out.push(SipCmd::Respond { tx, response });
    }

    /// Sends a request inside the dialog. On TCP it goes back over the caller's connection; on
    /// UDP to the dialog's remote target.
    fn send_in_dialog(&mut self, request: Request) {
        let to = match self.start.from.transport {
            Transport::Udp => self
                .dialog
                .as_ref()
                .and_then(|d| d.remote_target_peer(Transport::Udp))
                .unwrap_or(self.start.from),
            _ => self.start.from,
        };
        self.sip_out.push(SipCmd::Request {
            call_id: self.start.call_id.clone(),
            request,
            to,
        });
    }

    /// A response to the INVITE carrying our tag, Contact and (when given) SDP.
    fn invite_response(&self, status: u16, reason: &str, sdp: Option<&str>) -> Response {
        let mut resp = self
            .start
            .invite
            .response(status, reason)
            .with_to_tag(&self.local_tag);
        resp.headers.push("Contact", &self.contact);
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Server", &self.engine.cfg.sip.user_agent);
        if let Some(sdp) = sdp {
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = Bytes::from(sdp.to_string());
        }
        resp
    }

    fn answer(&mut self) {
        if matches!(self.phase, Phase::Answered | Phase::Ended) {
            return;
        }
        let resp = self.invite_response(200, "OK", Some(&self.answer_sdp.clone()));
        match Dialog::uas(&self.start.invite, &self.local_tag, &self.contact) {
            Ok(d) => self.dialog = Some(d),
            // Without a From tag there is no dialog to address a BYE to; the caller's BYE
            // still ends the call.
            Err(e) => tracing::warn!(error = ?e, "no dialog state for this call"),
        }
        self.respond(self.start.tx, resp);
        self.phase = Phase::Answered;
        self.answered_at = Some(Utc::now());
        tracing::info!("answered");
    }

    fn early_media(&mut self) {
        if self.phase != Phase::Offered {
            return;
        }
        let resp = self.invite_response(183, "Session Progress", Some(&self.answer_sdp.clone()));
        self.respond(self.start.tx, resp);
        self.phase = Phase::Early;
        tracing::info!("early media");
    }

    fn prompts(&self, refs: &[PromptRef]) -> Vec<Arc<verde_media::Prompt>> {
        refs.iter()
            .filter_map(|p| {
                let found = self.engine.prompts.get(&p.lang, &p.name);
                if found.is_none() {
                    tracing::error!(lang = %p.lang, prompt = %p.name, "prompt missing; skipped");
                }
                found
            })
            .collect()
    }

    fn play(&mut self, refs: &[PromptRef], now: Instant) -> bool {
        if self.phase == Phase::Offered {
            self.answer();
        }
        let list = self.prompts(refs);
        if list.is_empty() {
            return false;
        }
        tracing::debug!(prompts = ?refs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), "play");
        // A new Play replaces whatever still plays: the IVR waits for the end of this one only.
        self.media.stop_playback(now);
        self.media.play(list, now);
        true
    }

    fn action(&mut self, action: IvrAction, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        match action {
            IvrAction::Answer => self.answer(),
            IvrAction::EarlyMedia => self.early_media(),
            IvrAction::Play { prompts, .. } => {
                if !self.play(&prompts, now) {
                    // Nothing playable: the flow must not wait for a prompt that never ends.
                    self.ivr.handle(IvrEvent::PromptDone, now);
                }
            }
            IvrAction::StopPlayback => self.media.stop_playback(now),
            IvrAction::Transfer { uri } => self.transfer(&uri, now),
            IvrAction::Queue { queue, fallback } => {
                // The ACD is not wired yet: tell the caller and end the call politely.
                tracing::info!(%queue, "queue reached; no ACD yet, playing the fallback");
                self.outcome = Some(format!("queue:{queue}"));
                self.after_playback = Some(AfterPlayback::Hangup {
                    disposition: "queue-unavailable",
                });
                if !self.play(&fallback, now) {
                    self.hangup(now, "queue-unavailable");
                }
            }
            IvrAction::Voicemail { mailbox, .. } => {
                tracing::info!(%mailbox, "voicemail reached; not available yet");
                self.outcome = Some(format!("voicemail:{mailbox}"));
                self.hangup(now, "voicemail-unavailable");
            }
            IvrAction::Hangup { reason } => {
                tracing::info!(%reason, "flow hangs up");
                if self.outcome.is_none() {
                    self.outcome = Some(format!("hangup:{reason}"));
                }
                self.hangup(now, "completed-ivr");
            }
        }
    }

    fn media_event(&mut self, ev: MediaEvent, now: Instant) {
        match ev {
            MediaEvent::Dtmf {
                digit,
                duration_ms,
                source,
            } => {
                tracing::info!(%digit, duration_ms, ?source, "dtmf");
                self.digit(digit, now);
            }
            MediaEvent::PlaybackFinished => match self.after_playback.take() {
                Some(AfterPlayback::Hangup { disposition }) => self.hangup(now, disposition),
                None => self.ivr.handle(IvrEvent::PromptDone, now),
            },
            MediaEvent::RemoteLatched(addr) => tracing::debug!(%addr, "rtp source latched"),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn digit(&mut self, digit: char, now: Instant) {
        self.dtmf.push(digit);
        if self.after_playback.is_none() {
            self.ivr.handle(IvrEvent::Digit(digit), now);
        }
    }

    fn transfer(&mut self, uri: &str, now: Instant) {
        tracing::info!(%uri, "transfer");
        self.outcome = Some(format!("transfer:{uri}"));
        if self.phase == Phase::Answered {
            let Some(dialog) = self.dialog.as_mut() else {
                return self.hangup(now, "transfer-failed");
            };
            let mut refer = dialog.request(Method::Refer);
            refer.headers.push("Refer-To", &format!("<{uri}>"));
            refer.headers.push("Referred-By", &self.contact.clone());
            self.send_in_dialog(refer);
            // The tx id is learnt when the response comes back: any REFER response in this call
            // is ours, as we send only one.
            self.refer_tx = None;
            self.disposition = Some("transferring");
        } else {
            // Not answered yet: a redirect lets the carrier route the call itself.
            let mut resp = self.invite_response(302, "Moved Temporarily", None);
            resp.headers.set("Contact", &format!("<{uri}>"));
            self.respond(self.start.tx, resp);
            self.sip_status = Some(302);
            self.end(now, "engine", Some("transferred"));
        }
    }

    fn hangup(&mut self, now: Instant, disposition: &'static str) {
        if self.phase == Phase::Ended {
            return;
        }
        if self.phase == Phase::Answered {
            if let Some(d) = self.dialog.as_mut() {
                let bye = d.request(Method::Bye);
                self.send_in_dialog(bye);
            }
        } else {
            let resp = self.invite_response(480, "Temporarily Unavailable", None);
            self.respond(self.start.tx, resp);
            self.sip_status = Some(480);
        }
        self.end(now, "engine", Some(disposition));
    }

    fn end(&mut self, now: Instant, by: &'static str, disposition: Option<&'static str>) {
        if self.phase == Phase::Ended {
            return;
        }
        self.hangup_by = by;
        if let Some(d) = disposition {
            if self.disposition.is_none() || self.disposition == Some("transferring") {
                self.disposition = Some(d);
            }
        }
        // Sends RTCP BYE; the loop's last step flushes it.
        self.media.close(now);
        self.ivr.handle(IvrEvent::Hangup, now);
        while self.ivr.poll_action().is_some() {}
        self.phase = Phase::Ended;
    }

    fn sip_input(&mut self, input: CallInput, now: Instant) {
        match input {
            CallInput::Request { tx, request } => self.in_dialog(tx, request, now),
            CallInput::Ack => tracing::debug!("ack"),
            CallInput::Cancelled => {
                tracing::info!("caller cancelled before answer");
                let resp = self.invite_response(487, "Request Terminated", None);
                self.respond(self.start.tx, resp);
                self.sip_status = Some(487);
                self.end(now, "caller", Some("abandoned-ivr"));
            }
            CallInput::AckTimeout => {
                tracing::warn!("no ACK for our 200 OK; ending the call");
                self.hangup(now, "failed-no-ack");
            }
            CallInput::Response { tx, response } => {
                let is_refer = response
                    .cseq()
                    .map(|(_, m)| m == Method::Refer)
                    .unwrap_or(false);
                if is_refer && self.disposition == Some("transferring") {
                    self.refer_tx = Some(tx);
                    if (200..300).contains(&response.status) {
                        tracing::info!(
                            status = response.status,
                            "transfer accepted; leaving the call"
                        );
                        self.hangup(now, "transferred");
                    } else if response.status >= 300 {
                        tracing::warn!(status = response.status, "transfer refused");
                        self.hangup(now, "transfer-failed");
                    }
                }
            }
            CallInput::Timeout { tx } => {
                if self.refer_tx.is_none() || self.refer_tx == Some(tx) {
                    if self.disposition == Some("transferring") {
                        self.hangup(now, "transfer-failed");
                    }
                }
            }
            CallInput::Shutdown => {
                tracing::info!("engine shutting down; ending the call");
                self.hangup(now, "shutdown");
            }
        }
    }

    fn in_dialog(&mut self, tx: ServerTxId, req: Request, now: Instant) {
        match req.method {
            Method::Bye => {
                let resp = req.response(200, "OK");
                self.respond(tx, resp);
                tracing::info!("caller hung up");
                let disposition = if self.outcome.is_some() {
                    None
                } else {
                    Some("abandoned-ivr")
                };
                self.end(now, "caller", disposition);
            }
            Method::Info => {
                let resp = match info_digit(&req) {
                    Some(Ok(d)) => {
                        tracing::info!(digit = %d, source = "sip-info", "dtmf");
                        self.digit(d, now);
                        req.response(200, "OK")
                    }
                    Some(Err(())) => req.response(415, "Unsupported Media Type"),
                    None => req.response(200, "OK"),
                };
                self.respond(tx, resp);
            }
            Method::Invite | Method::Update => self.reoffer(tx, req, now),
            Method::Options | Method::Notify => {
                let resp = req.response(200, "OK");
                self.respond(tx, resp);
            }
            _ => {
                let mut resp = req.response(405, "Method Not Allowed");
                resp.headers.push("Allow", ALLOW);
                self.respond(tx, resp);
            }
        }
    }

    /// Re-INVITE / UPDATE: hold, unhold or a new media address.
    fn reoffer(&mut self, tx: ServerTxId, req: Request, now: Instant) {
        let offer = std::str::from_utf8(&req.body)
            .unwrap_or("")
            .trim()
            .to_string();
        if offer.is_empty() {
            // Session refresh or offerless re-INVITE: our current SDP stands as the offer.
            let mut resp = req.response(200, "OK").with_to_tag(&self.local_tag);
            resp.headers.push("Contact", &self.contact);
            if req.method == Method::Invite {
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = Bytes::from(self.answer_sdp.clone());
            }
            return self.respond(tx, resp);
        }
        match self.local_sdp.answer(&offer) {
            Ok(neg) => {
                tracing::info!(direction = ?neg.direction, remote_rtp = %neg.remote, "media renegotiated");
                self.media.update(&neg, now);
                self.answer_sdp = neg.answer.clone();
                let mut resp = req.response(200, "OK").with_to_tag(&self.local_tag);
                resp.headers.push("Contact", &self.contact);
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = Bytes::from(neg.answer);
                self.respond(tx, resp);
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-offer refused; media unchanged");
                let resp = req.response(488, "Not Acceptable Here");
                self.respond(tx, resp);
            }
        }
    }

    fn finish(&self) -> CallRecord {
        let ended_at = Utc::now();
        let vars = self.ivr.variables();
        let record = CallRecord {
            answered_at: self.answered_at.map(|t| t.to_rfc3339()),
            ended_at: ended_at.to_rfc3339(),
            disposition: self.disposition.unwrap_or("completed-ivr").to_string(),
            hangup_by: self.hangup_by.to_string(),
            sip_status: self.sip_status,
            language: vars.get("language").cloned(),
            path: self.ivr.path().to_vec(),
            choices: self
                .ivr
                .choices()
                .iter()
                .map(|(node, digit)| format!("{node}={digit}"))
                .collect(),
            variables: vars.clone(),
            dtmf: self.dtmf.clone(),
            outcome: self
                .outcome
                .clone()
                .or_else(|| self.ivr.outcome().map(|o| o.to_string())),
            ..base_record(&self.start, self.started_at, "", None)
        };
        let stats = self.media.stats();
        tracing::info!(
            disposition = %record.disposition,
            hangup_by = %record.hangup_by,
            duration_ms = (ended_at - self.started_at).num_milliseconds(),
            path = ?record.path,
            rtp_sent = stats.packets_sent,
            rtp_received = stats.packets_received,
            "call ended"
        );
        record
    }
}

fn base_record(
    start: &CallStart,
    started_at: DateTime<Utc>,
    disposition: &str,
    sip_status: Option<u16>,
) -> CallRecord {
    CallRecord {
        call_id: start.call_id.clone(),
        caller: caller_number(&start.invite),
        did: start.did.clone(),
        trunk: start.trunk.clone(),
        channel: "pstn".into(),
        started_at: started_at.to_rfc3339(),
        ended_at: Utc::now().to_rfc3339(),
        disposition: disposition.to_string(),
        hangup_by: "engine".into(),
        sip_status,
        ..Default::default()
    }
}

/// The caller's number: the user part of P-Asserted-Identity if the trunk sends it, else From.
fn caller_number(invite: &Request) -> String {
    let h = invite
        .headers
        .get("p-asserted-identity")
        .or_else(|| invite.headers.get("from"))
        .unwrap_or("");
    let uri = h
        .split_once('<')
        .map(|(_, r)| r.split('>').next().unwrap_or(""))
        .unwrap_or(h.split(';').next().unwrap_or(""));
    let user = uri
        .trim()
        .trim_start_matches("sips:")
        .trim_start_matches("sip:")
        .trim_start_matches("tel:");
    user.split(['@', ';']).next().unwrap_or("").to_string()
}

/// A digit from a SIP INFO: `application/dtmf-relay` (`Signal=5`) or `application/dtmf`
/// (`5`). None for an INFO that carries no DTMF (e.g. an empty keep-alive), Err for a body we
/// do not understand.
fn info_digit(req: &Request) -> Option<Result<char, ()>> {
    let ct = req.headers.get("content-type")?.trim().to_ascii_lowercase();
    let body = std::str::from_utf8(&req.body).ok()?;
    let raw = if ct.starts_with("application/dtmf-relay") {
        body.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
            })
            .unwrap_or("")
    } else if ct.starts_with("application/dtmf") {
        body.trim()
    } else {
        return Some(Err(()));
    };
    let d = match raw {
        "10" => '*',
        "11" => '#',
        s if s.len() == 1 => s.chars().next()?.to_ascii_uppercase(),
        _ => return Some(Err(())),
    };
    if d.is_ascii_digit() || matches!(d, '*' | '#' | 'A'..='D') {
        Some(Ok(d))
    } else {
        Some(Err(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], body: &str) -> Request {
        let mut r = Request::new(Method::Info, "sip:verde@127.0.0.1");
        for (k, v) in headers {
            r.headers.push(*k, *v);
        }
        r.body = Bytes::from(body.to_string());
        r
    }

    #[test]
    fn caller_number_prefers_asserted_identity() {
        let r = req(
            &[
                ("From", "\"Mario\" <sip:0612345678@carrier.example>;tag=a"),
                ("P-Asserted-Identity", "<tel:+39061234999>"),
            ],
            "",
        );
        assert_eq!(caller_number(&r), "+39061234999");
        let r = req(&[("From", "sip:3331234567@10.0.0.1;tag=x")], "");
        assert_eq!(caller_number(&r), "3331234567");
    }

    #[test]
    fn sip_info_digits_in_both_formats() {
        let relay = req(
            &[("Content-Type", "application/dtmf-relay")],
            "Signal=5\r\nDuration=160\r\n",
        );
        assert_eq!(info_digit(&relay), Some(Ok('5')));
        let star = req(
            &[("Content-Type", "application/dtmf-relay")],
            "Signal= *\r\n",
        );
        assert_eq!(info_digit(&star), Some(Ok('*')));
        let plain = req(&[("Content-Type", "application/dtmf")], "11");
        assert_eq!(info_digit(&plain), Some(Ok('#')));
        let other = req(&[("Content-Type", "text/plain")], "hello");
        assert_eq!(info_digit(&other), Some(Err(())));
        let junk = req(
            &[("Content-Type", "application/dtmf-relay")],
            "Signal=Z\r\n",
        );
        assert_eq!(info_digit(&junk), Some(Err(())));
        let keepalive = req(&[], "");
        assert_eq!(info_digit(&keepalive), None);
    }
}
