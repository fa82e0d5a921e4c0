//! One task per call: the call's SIP dialog, its media leg and its IVR position, with no locks.
//!
//! The task is a thin loop: it feeds SIP events, RTP packets and timer expiries to the sans-IO
//! [`MediaSession`] and [`Interpreter`], carries out the actions they return, and at the end
//! writes the call record. Everything it does is logged inside the call's span, so every line
//! carries the Call-ID.

use crate::agent_leg::{send_all, AgentLeg, LegEvent, LegState};
use crate::sip_core::{Engine, SipCmd};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Instrument;
use verde_acd::{Action, CallKey, ExitReason, Input as AcdInput, OfferFailure};
use verde_ivr::{CallInfo, Flow, Interpreter, IvrAction, IvrEvent, PromptRef};
use verde_media::{
    Codec, InbandDtmf, LocalSdp, MediaConfig, MediaEvent, MediaSession, SdpError, Socket,
};
use verde_sip::{ClientTxId, Dialog, Method, Peer, Request, Response, ServerTxId, Transport};
use verde_store::CallRecord;

mod cdr;
mod supervise;
mod talk_record;
mod transfer;
mod web;
use transfer::{Bridge, Xfer};

/// The leg index [`leg_recv`] reports for the supervisor's leg.
const SUPERVISOR: usize = usize::MAX;

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
    /// A 2xx that matched no transaction any more (e.g. an agent answering after our CANCEL).
    StrayResponse {
        response: Response,
    },
    /// What the ACD decided for this call.
    Acd(Action),
    /// A command from an agent's bar or a supervisor, already authorized by the CTI session.
    Cti(crate::cti::CallCommand),
    /// The engine is shutting down and the grace period is over.
    Shutdown,
    /// A browser caller's ICE candidate, trickled by its page.
    WebIce(String),
    /// A browser caller hung up (or its page went away).
    WebHangup,
}

/// How the caller reached us.
pub enum Origin {
    /// An INVITE from a trunk (or from an agent's phone dialing a feature code).
    Sip {
        tx: ServerTxId,
        invite: Request,
        from: Peer,
    },
    /// A browser on the "call now" page; its leg is handed to [`spawn`].
    Web { ip: std::net::IpAddr },
}

pub struct CallStart {
    pub call_id: String,
    pub origin: Origin,
    pub trunk: String,
    pub did: String,
    pub flow: Arc<Flow>,
    /// This call's own handle, for the ACD and for the aliases of its agent legs.
    pub handle: mpsc::Sender<CallInput>,
    /// An agent's task code (the agent id and what to do) instead of a flow.
    pub task: Option<(String, AgentTask)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTask {
    /// Log in (or become ready again): applied when the confirmation call ends, so the phone
    /// is free when the first offer rings it.
    Login,
    Pause,
    Logout,
    TakeVoicemail,
    CloseVoicemail,
}

impl AgentTask {
    /// The ACD state change this code asks for, if any.
    fn acd_command(self, agent: &str) -> Option<crate::acd_task::AcdCmd> {
        use crate::acd_task::AcdCmd;
        match self {
            AgentTask::Login => Some(AcdCmd::LoginOrReady {
                agent: agent.to_string(),
                queues: None,
            }),
            AgentTask::Pause => Some(AcdCmd::Input(AcdInput::AgentPause {
                agent: agent.into(),
                reason: "phone".into(),
            })),
            AgentTask::Logout => Some(AcdCmd::Input(AcdInput::AgentLogout {
                agent: agent.into(),
            })),
            AgentTask::TakeVoicemail | AgentTask::CloseVoicemail => None,
        }
    }
}

/// Starts the call's task; `web` is a browser caller's leg (with [`Origin::Web`]).
pub fn spawn(
    engine: Arc<Engine>,
    start: CallStart,
    web: Option<crate::web_call::WebCaller>,
    inbox: mpsc::Receiver<CallInput>,
    span: tracing::Span,
) {
    tokio::spawn(
        async move {
            let call_id = start.call_id.clone();
            let invite_tx = match &start.origin {
                Origin::Sip { tx, .. } => Some(*tx),
                Origin::Web { .. } => None,
            };
            run(engine.clone(), start, web, inbox).await;
            let _ = engine
                .sip()
                .send(SipCmd::CallEnded { call_id, invite_tx })
                .await;
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

/// The call's stay in an ACD queue.
struct Queued {
    name: String,
    fallback: Vec<PromptRef>,
    entered: Instant,
    /// An agent answered: caller and agent are bridged.
    bridged: bool,
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
    /// Our SDP towards a trunk caller (None for a browser: its leg owns the SDP).
    local_sdp: Option<LocalSdp>,
    media: MediaSession,
    io: CallerIo,
    /// The calling number (or `webrtc:<address>`), for records, bars and callbacks.
    caller: String,
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
    key: u64,
    queue: Option<Queued>,
    /// Agents being rung (several with ring-all) or the one talking.
    legs: Vec<AgentLeg>,
    /// Offers waiting for an RTP pair (bound in the async part of the loop): agent, queue,
    /// whether the phone is asked to answer by itself (the agent clicked Answer), ACD key.
    pending_offers: Vec<(String, String, bool, u64)>,
    /// Offers ringing only on the agent's bar (agent, queue, ACD key): its phone is called on
    /// Answer.
    bar_offers: Vec<(String, String, u64)>,
    /// Whose media is joined: the caller with a leg, or two legs (a consultation).
    bridge: Option<Bridge>,
    /// A transfer under way.
    xfer: Option<Xfer>,
    /// Talks the ACD counts (ACD key, agent): ended with CallEnded when the agent leaves.
    talks: Vec<(u64, String)>,
    /// Outside numbers to dial for a transfer (async part of the loop).
    pending_dials: Vec<String>,
    /// The ACD section of the call record, written as things happen.
    acd_rec: Option<verde_store::AcdRecord>,
    /// The caller is on hold since.
    hold_since: Option<Instant>,
    /// The conversation being recorded.
    talk_rec: Option<talk_record::TalkRecording>,
    /// Whether this call fell in its queue's recorded percentage (drawn once).
    record_drawn: Option<bool>,
    /// Recordings finished, for the call record.
    recordings: Vec<verde_store::RecordingRef>,
    /// A supervisor on the call.
    sup: Option<supervise::Supervision>,
    /// Agents whose bar was told of this call and not yet of its end.
    told: Vec<String>,
    /// The agent put the caller on hold from its bar.
    bar_hold: bool,
    /// A queue just joined: look for a callback this number already booked there.
    check_booked: Option<String>,
    /// ACD facts for the call record.
    extra: BTreeMap<String, String>,
    /// How much of the IVR path has been logged.
    logged_nodes: usize,
    /// A voicemail being recorded.
    recording: Option<Recording>,
    /// Finished recordings waiting to be stored (async part of the loop).
    pending_voicemails: Vec<verde_store::NewVoicemail>,
    /// Callback requests from the flow waiting to be stored.
    pending_callbacks: Vec<(String, String, Option<verde_ivr::BandSpec>)>,
    /// The caller was offered a callback while waiting in this queue (and since when it waited).
    callback_offered: Option<(String, Instant)>,
    /// When the caller left the queue for the callback offer: its place in line.
    callback_place: Option<Instant>,
    /// A side of this call is in the dialog journal (`crate::dialogs`).
    journaled: bool,
}

struct Recording {
    mailbox: String,
    max: Duration,
    terminator: Option<char>,
    /// None while the beep plays.
    recorder: Option<verde_media::Recorder>,
    path: std::path::PathBuf,
}

async fn run(
    engine: Arc<Engine>,
    start: CallStart,
    web: Option<crate::web_call::WebCaller>,
    mut inbox: mpsc::Receiver<CallInput>,
) {
    let now = Instant::now();
    let started_at = crate::clock::now();
    let caller = caller_of(&start.origin);
    let (media, io, local_sdp, answer_sdp, transport) = match web {
        Some(web) => {
            tracing::info!(%caller, did = %start.did, flow = %start.flow.name(), "incoming web call");
            match web_media(&engine, web, now) {
                Some((media, io)) => (media, io, None, String::new(), Transport::Udp),
                None => {
                    let record = base_record(&start, started_at, "failed", None);
                    return engine.records.write(record).await;
                }
            }
        }
        None => match sip_media(&engine, &start, started_at, now).await {
            Some((media, rtp, local_sdp, answer, transport)) => (
                media,
                CallerIo::Rtp(rtp),
                Some(local_sdp),
                answer,
                transport,
            ),
            None => return,
        },
    };
    let info = CallInfo {
        call_id: start.call_id.clone(),
        caller: caller.clone(),
        did: start.did.clone(),
    };
    let ivr = Interpreter::new(start.flow.clone(), info, started_at, now);
    let contact = engine.contact(transport);
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
        answer_sdp,
        local_sdp,
        media,
        io,
        caller,
        ivr,
        after_playback: None,
        refer_tx: None,
        sip_out: Vec::new(),
        dtmf: String::new(),
        disposition: None,
        hangup_by: "caller",
        sip_status: None,
        outcome: None,
        key: 0,
        queue: None,
        legs: Vec::new(),
        pending_offers: Vec::new(),
        bar_offers: Vec::new(),
        bridge: None,
        xfer: None,
        talks: Vec::new(),
        pending_dials: Vec::new(),
        acd_rec: None,
        hold_since: None,
        talk_rec: None,
        record_drawn: None,
        recordings: Vec::new(),
        sup: None,
        told: Vec::new(),
        bar_hold: false,
        check_booked: None,
        extra: BTreeMap::new(),
        logged_nodes: 0,
        recording: None,
        pending_voicemails: Vec::new(),
        pending_callbacks: Vec::new(),
        callback_offered: None,
        callback_place: None,
        journaled: false,
    };
    call.key = call.engine.next_call_key();
    match call.start.task.clone() {
        Some((agent, task @ (AgentTask::TakeVoicemail | AgentTask::CloseVoicemail))) => {
            call.agent_task(&agent, task, now).await
        }
        // A browser's flow starts once its media is up (`web_pump`): the greeting would be
        // lost to a leg without SRTP keys.
        _ if matches!(call.io, CallerIo::Web(_)) => {}
        _ => call.ivr.handle(IvrEvent::Start, now),
    }
    call.step(now);
    call.flush().await;

    let mut rtp_buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut leg_buf = vec![0u8; 4096];
    while call.phase != Phase::Ended {
        let deadline = [
            call.media.poll_timeout(),
            call.ivr.poll_timeout(),
            call.legs.iter_mut().filter_map(|l| l.poll_timeout()).min(),
            call.xfer.as_ref().and_then(|x| x.deadline),
            call.sup.as_ref().and_then(|s| {
                let m = s.leg.media.as_ref().and_then(|m| m.poll_timeout());
                let x = s.mixer.as_ref().and_then(|x| x.poll_timeout());
                m.into_iter().chain(x).min()
            }),
            call.recording
                .as_ref()
                .and_then(|r| r.recorder.as_ref().map(|r| r.deadline())),
            call.io_deadline(),
            Some(call.hard_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("hard deadline always set");
        // At most two legs carry media at once: the agent's, and a transfer target's.
        // Legs with media, and browser legs still connecting (their handshake is datagrams).
        let listening = |l: &AgentLeg| {
            l.state == LegState::Answered || (l.is_browser() && l.state == LegState::Ringing)
        };
        let legs = async {
            // On the stack: this runs once per packet of a bridged call.
            let live: smallvec::SmallVec<[_; 4]> = call
                .legs
                .iter()
                .enumerate()
                .filter(|(_, l)| listening(l))
                .chain(
                    call.sup
                        .as_ref()
                        .filter(|s| listening(&s.leg))
                        .map(|s| (SUPERVISOR, &s.leg)),
                )
                .map(|(i, l)| (i, l.sockets()))
                .collect();
            crate::agent_leg::recv_any(&live, &mut leg_buf).await
        };
        tokio::select! {
            r = legs => {
                if let Ok((i, packet)) = r {
                    let leg = if i == SUPERVISOR {
                        call.sup.as_mut().map(|s| &mut s.leg)
                    } else {
                        call.legs.get_mut(i)
                    };
                    if let Some(l) = leg {
                        l.handle_packet(packet, Instant::now());
                    }
                }
            }
            input = inbox.recv() => {
                let now = Instant::now();
                match input {
                    Some(input) => call.sip_input(input, now),
                    None => call.end(now, "engine", Some("failed")),
                }
            }
            r = caller_recv(call.io.sockets(), &mut rtp_buf, &mut rtcp_buf) => {
                match (r, &mut call.io) {
                    (Ok(CallerPacket::Rtp(socket, pkt, from)), _) => {
                        call.media.handle_packet(socket, pkt, from, Instant::now());
                    }
                    (Ok(CallerPacket::Web(pkt, from)), CallerIo::Web(w)) => {
                        w.leg.handle_datagram(from, &pkt, Instant::now());
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now >= call.hard_deadline {
                    tracing::warn!(max_s = call.engine.cfg.sip.max_call_duration.as_secs(), "maximum call duration reached");
                    call.hangup(now, "max-duration");
                    call.hangup_by = "timeout";
                } else {
                    call.io_timeout(now);
                    call.media.handle_timeout(now);
                    call.ivr.handle_timeout(now);
                    if call.recording.as_ref().and_then(|r| r.recorder.as_ref()).is_some_and(|r| now >= r.deadline()) {
                        call.stop_recording(now, true);
                    }
                    for l in call.legs.iter_mut() {
                        l.handle_timeout(now);
                    }
                    if let Some(m) = call.sup.as_mut().and_then(|s| s.leg.media.as_mut()) {
                        m.handle_timeout(now);
                    }
                    call.transfer_deadline(now);
                }
            }
        }
        call.step(Instant::now());
        call.flush().await;
    }
    // Take down whatever leg is left (caller gone, engine stopping) before the record.
    let now = Instant::now();
    call.release_acd(now);
    call.step(now);
    call.flush().await;
    if let Some((agent, task)) = call.start.task.clone() {
        if let Some(cmd) = task.acd_command(&agent) {
            if call.engine.acd.send(cmd).is_err() {
                tracing::error!(%agent, ?task, "ACD queue full: agent state change lost");
            }
        }
    }
    let record = call.finish(Instant::now());
    call.engine.cti.call_finished(&record);
    call.engine.records.write(record).await;
    if call.journaled {
        // After the record: the journal lets the call go once the record is stored.
        crate::dialogs::call_closed(&call.start.call_id);
    }
}

/// A trunk caller's media: the INVITE's offer answered on an RTP pair of ours; None when the
/// INVITE was refused (the refusal is sent and recorded).
async fn sip_media(
    engine: &Arc<Engine>,
    start: &CallStart,
    started_at: DateTime<Utc>,
    now: Instant,
) -> Option<(
    MediaSession,
    crate::rtp_ports::RtpPair,
    LocalSdp,
    String,
    Transport,
)> {
    let Origin::Sip { invite, from, .. } = &start.origin else {
        return None;
    };
    tracing::info!(
        caller = %caller_number(invite),
        did = %start.did,
        trunk = %start.trunk,
        from = %from.addr,
        transport = ?from.transport,
        flow = %start.flow.name(),
        "incoming call"
    );
    let refuse = |status: u16, reason: &str, warning: Option<&str>| {
        let mut resp = invite
            .response(status, reason)
            .with_to_tag(&verde_sip::new_tag());
        if let Some(w) = warning {
            resp.headers.push("Warning", w);
        }
        resp
    };

    let content_type = invite
        .headers
        .get("content-type")
        .map(|c| c.trim().to_ascii_lowercase());
    let body = std::str::from_utf8(&invite.body).unwrap_or("").trim();
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
    // An Accept that excludes SDP leaves no way to answer (RFC 3261 21.4.7).
    let refusal = refusal.or_else(|| {
        let accept = invite.headers.get("accept")?;
        let takes_sdp = accept.split(',').any(|t| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            matches!(t.as_str(), "application/sdp" | "application/*" | "*/*")
        });
        (!takes_sdp).then_some((
            406,
            "Not Acceptable",
            "399 verde \"answers carry application/sdp\"",
        ))
    });
    if let Some((status, reason, warning)) = refusal {
        let mut resp = refuse(status, reason, Some(warning));
        if status == 415 {
            resp.headers.push("Accept", "application/sdp");
        }
        tracing::warn!(status, content_type = ?content_type, "refused: no usable SDP offer");
        reject(engine, start, started_at, resp, status).await;
        return None;
    }
    let offer = body.to_string();
    let Some(rtp) = engine.rtp_ports.bind(engine.media_ip).await else {
        tracing::error!("refused: no free RTP port in the configured range");
        let mut resp = refuse(503, "Service Unavailable", None);
        resp.headers.push("Retry-After", "5");
        reject(engine, start, started_at, resp, 503).await;
        return None;
    };
    let mut local_sdp = LocalSdp::new(
        engine.media_ip,
        rtp.port,
        &[Codec::Pcmu, Codec::Pcma],
        rand::random::<u32>() as u64,
    )
    .with_srtp(engine.cfg.media.srtp.policy());
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
                SdpError::NoCryptoSuite => (
                    488,
                    "Not Acceptable Here",
                    "306 verde \"no supported SRTP crypto suite (AES_CM_128_HMAC_SHA1_80/32)\"",
                ),
                SdpError::SrtpRequired => (
                    488,
                    "Not Acceptable Here",
                    "306 verde \"SRTP (RTP/SAVP) required\"",
                ),
                _ => (488, "Not Acceptable Here", "304 verde \"no audio stream\""),
            };
            tracing::warn!(error = %e, status, "refused: SDP offer not acceptable");
            let resp = refuse(status, reason, Some(warn));
            reject(engine, start, started_at, resp, status).await;
            return None;
        }
    };
    let srtp = local_sdp.srtp().map(|k| k.suite);
    tracing::info!(codec = ?negotiated.codec, remote_rtp = %negotiated.remote, local_rtp = rtp.port, dtmf_pt = ?negotiated.dtmf_pt, ?srtp, "media negotiated");
    let mut media = MediaSession::new(&negotiated, caller_media_config(engine, None), now);
    if let Err(e) = media.set_srtp(local_sdp.srtp()) {
        tracing::error!(error = %e, "refused: SRTP context not created");
        let resp = refuse(500, "Server Internal Error", None);
        reject(engine, start, started_at, resp, 500).await;
        return None;
    }
    Some((media, rtp, local_sdp, negotiated.answer, from.transport))
}

/// The caller's media session settings (trunk or browser alike).
fn caller_media_config(engine: &Engine, ssrc: Option<u32>) -> MediaConfig {
    MediaConfig {
        inband_dtmf: if engine.cfg.media.inband_dtmf {
            InbandDtmf::Auto
        } else {
            InbandDtmf::Never
        },
        wall_clock: Some(std::time::SystemTime::now()),
        ssrc,
        ..MediaConfig::default()
    }
}

/// A browser caller's media: the same [`MediaSession`] as a trunk caller's, fed through the
/// WebRTC leg instead of a socket (`docs/webrtc.md`).
fn web_media(
    engine: &Engine,
    web: crate::web_call::WebCaller,
    now: Instant,
) -> Option<(MediaSession, CallerIo)> {
    let Some(audio) = web.leg.session_media() else {
        tracing::error!("web call without negotiated audio");
        return None;
    };
    let negotiated = crate::agent_leg::web_negotiated(&audio)?;
    tracing::info!(codec = ?audio.codec, dtmf_pt = ?audio.dtmf_pt, candidate = ?web.socket.local_addr().ok(), "web media negotiated");
    let media = MediaSession::new(
        &negotiated,
        caller_media_config(engine, Some(web.leg.ssrc())),
        now,
    );
    let connect_by = now
        + engine
            .webrtc
            .as_ref()
            .map(|w| w.connect_timeout())
            .unwrap_or(Duration::from_secs(15));
    Some((
        media,
        CallerIo::Web(Box::new(WebIo {
            leg: web.leg,
            socket: web.socket,
            events: web.events,
            connected: false,
            connect_by,
        })),
    ))
}

/// Where the caller's packets come and go.
enum CallerIo {
    /// A trunk caller: plain RTP and RTCP on a pair of ours.
    Rtp(crate::rtp_ports::RtpPair),
    /// A browser: ICE, DTLS-SRTP on one socket.
    Web(Box<WebIo>),
}

struct WebIo {
    leg: verde_webrtc::WebRtcLeg,
    socket: tokio::net::UdpSocket,
    events: mpsc::UnboundedSender<crate::web_call::WebEvent>,
    connected: bool,
    /// Given up if not connected by then.
    connect_by: Instant,
}

/// What arrived for the caller.
enum CallerPacket {
    Rtp(Socket, Bytes, std::net::SocketAddr),
    Web(Bytes, std::net::SocketAddr),
}

/// The caller's sockets, borrowed apart from the leg (which is not `Sync`, so it must not be
/// borrowed across an await).
enum CallerSockets<'a> {
    Rtp(&'a crate::rtp_ports::RtpPair),
    Web(&'a tokio::net::UdpSocket),
}

impl CallerIo {
    fn sockets(&self) -> CallerSockets<'_> {
        match self {
            CallerIo::Rtp(pair) => CallerSockets::Rtp(pair),
            CallerIo::Web(w) => CallerSockets::Web(&w.socket),
        }
    }
}

/// Reads the caller's next datagram.
async fn caller_recv(
    io: CallerSockets<'_>,
    rtp_buf: &mut [u8],
    rtcp_buf: &mut [u8],
) -> std::io::Result<CallerPacket> {
    match io {
        CallerSockets::Rtp(pair) => tokio::select! {
            r = pair.rtp.recv_from(rtp_buf) => r.map(|(n, f)| CallerPacket::Rtp(Socket::Rtp, Bytes::copy_from_slice(&rtp_buf[..n]), f)),
            r = pair.rtcp.recv_from(rtcp_buf) => r.map(|(n, f)| CallerPacket::Rtp(Socket::Rtcp, Bytes::copy_from_slice(&rtcp_buf[..n]), f)),
        },
        CallerSockets::Web(socket) => socket
            .recv_from(rtp_buf)
            .await
            .map(|(n, f)| CallerPacket::Web(Bytes::copy_from_slice(&rtp_buf[..n]), f)),
    }
}

/// Who the caller is on the record: the trunk's calling number, or `webrtc:<address>`.
fn caller_of(origin: &Origin) -> String {
    match origin {
        Origin::Sip { invite, .. } => caller_number(invite),
        Origin::Web { ip } => format!("webrtc:{ip}"),
    }
}

impl Call {
    /// Runs the state machines to quiescence: IVR actions, media events, then media packets.
    fn step(&mut self, now: Instant) {
        loop {
            let mut progressed = self.web_pump(now);
            for i in 0..self.legs.len() {
                let event = self.legs[i].poll_browser(now);
                if !matches!(event, LegEvent::None) {
                    progressed = true;
                    self.leg_event(i, event, now);
                }
            }
            if progressed {
                self.drop_ended_legs();
            }
            while let Some(a) = self.ivr.poll_action() {
                progressed = true;
                self.action(a, now);
            }
            while let Some(e) = self.media.poll_event() {
                progressed = true;
                self.media_event(e, now);
            }
            for leg in self.legs.iter_mut() {
                if let Some(m) = leg.media.as_mut() {
                    while let Some(e) = m.poll_event() {
                        if let MediaEvent::Dtmf { digit, .. } = e {
                            tracing::debug!(%digit, agent = %leg.agent, "agent dtmf");
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        self.feed_recorder(now);
        // One line per node entered: what the caller went through, and an event tests can
        // wait for ("the menu is listening") instead of guessing prompt lengths.
        let path = self.ivr.path();
        for node in &path[self.logged_nodes.min(path.len())..] {
            tracing::info!(%node, "ivr node");
        }
        self.logged_nodes = path.len();
        self.bridge_media(now);
        self.feed_talk_recording(now);
        self.send_caller(now);
        if let Some(s) = self.sup.as_mut() {
            if let Some(m) = s.leg.media.as_mut() {
                // The supervisor's keys go nowhere.
                while m.poll_event().is_some() {}
            }
            s.leg.send(now);
        }
        for leg in self.legs.iter_mut() {
            leg.send(now);
        }
    }

    async fn flush(&mut self) {
        for (agent, queue, auto, key) in std::mem::take(&mut self.pending_offers) {
            self.ring_agent(agent, queue, auto, key).await;
        }
        for number in std::mem::take(&mut self.pending_dials) {
            self.dial_number(number).await;
        }
        if let Some(queue) = self.check_booked.take() {
            let tasks = self.engine.tasks.clone();
            let number = self.caller.clone();
            let q = queue.clone();
            let booked = tokio::task::spawn_blocking(move || tasks.find_pending(&q, &number))
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten();
            if let (Some(cb), Some(p)) = (booked, self.prompt("callback_duplicate")) {
                // Told so, over the music; they keep waiting if they like.
                tracing::info!(callback = cb.id, %queue, "caller already has a callback booked");
                self.extra
                    .insert("callback_already_booked".into(), cb.id.to_string());
                self.media.play(vec![p], Instant::now());
            }
        }
        for vm in std::mem::take(&mut self.pending_voicemails) {
            let tasks = self.engine.tasks.clone();
            let res = tokio::task::spawn_blocking(move || {
                let (id, new) = tasks.insert_voicemail(&vm)?;
                // Read back as stored (deadline included) for the agents' task lists.
                let stored = if new { tasks.voicemail(id)? } else { None };
                Ok::<_, verde_store::StoreError>((id, stored))
            })
            .await;
            match res {
                Ok(Ok((id, stored))) => {
                    tracing::info!(id, "voicemail stored");
                    if let Some(v) = stored {
                        self.engine.cti.publish(verde_cti::Event::TaskCreated {
                            task: crate::cti::voicemail_info(&v),
                        });
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "ALARM: voicemail NOT stored"),
                Err(e) => tracing::error!(error = %e, "ALARM: voicemail NOT stored"),
            }
        }
        for (queue, number, band) in std::mem::take(&mut self.pending_callbacks) {
            let verdict = self.book_callback(&queue, &number, band).await;
            let now = Instant::now();
            self.ivr.handle(verdict, now);
            self.step(now);
        }
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
        let Origin::Sip { from, .. } = self.start.origin else {
            return;
        };
        let to = match from.transport {
            Transport::Udp => self
                .dialog
                .as_ref()
                .and_then(|d| d.remote_target_peer(Transport::Udp))
                .unwrap_or(from),
            _ => from,
        };
        self.sip_out.push(SipCmd::Request {
            call_id: self.start.call_id.clone(),
            request,
            to,
        });
    }

    /// Answers the trunk caller's INVITE with our tag, Contact, (when given) SDP and another
    /// Contact (a redirect). A browser caller has no INVITE: its page follows `call_state`.
    fn reply_invite(
        &mut self,
        status: u16,
        reason: &str,
        sdp: Option<&str>,
        redirect: Option<&str>,
    ) {
        let Origin::Sip { tx, invite, .. } = &self.start.origin else {
            return;
        };
        let tx = *tx;
        let mut resp = invite.response(status, reason).with_to_tag(&self.local_tag);
        match redirect {
            Some(uri) => resp.headers.push("Contact", format!("<{uri}>")),
            None => resp.headers.push("Contact", &self.contact),
        }
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Server", &self.engine.cfg.sip.user_agent);
        if let Some(sdp) = sdp {
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = Bytes::from(sdp.to_string());
        }
        if status >= 300 {
            self.sip_status = Some(status);
        }
        self.respond(tx, resp);
    }

    fn answer(&mut self) {
        if matches!(self.phase, Phase::Answered | Phase::Ended) {
            return;
        }
        if let Origin::Sip { invite, .. } = &self.start.origin {
            match Dialog::uas(invite, &self.local_tag, &self.contact) {
                Ok(d) => self.dialog = Some(d),
                // Without a From tag there is no dialog to address a BYE to; the caller's BYE
                // still ends the call.
                Err(e) => tracing::warn!(error = ?e, "no dialog state for this call"),
            }
        }
        self.reply_invite(200, "OK", Some(&self.answer_sdp.clone()), None);
        self.phase = Phase::Answered;
        self.answered_at = Some(crate::clock::now());
        tracing::info!("answered");
        if let (Some(d), Origin::Sip { from, .. }) = (&self.dialog, &self.start.origin) {
            // Where `send_in_dialog` sends.
            let peer = match from.transport {
                Transport::Udp => d.remote_target_peer(Transport::Udp).unwrap_or(*from),
                _ => *from,
            };
            self.journal("caller", d, peer);
            self.journaled = true;
        }
    }

    /// Hands an answered side of the call to the dialog journal, so that a crash can still end
    /// it towards its peer and record the call.
    fn journal(&self, leg: &str, dialog: &Dialog, peer: Peer) {
        let record = base_record(&self.start, self.started_at, "", None);
        let facts = crate::dialogs::CallFacts {
            call_id: &self.start.call_id,
            started_at: self.started_at,
            did: &record.did,
            caller: &record.caller,
            trunk: &record.trunk,
            channel: &record.channel,
        };
        let entry = crate::dialogs::entry(&facts, leg, dialog, peer, crate::clock::now());
        crate::dialogs::opened(entry);
    }

    fn early_media(&mut self) {
        if self.phase != Phase::Offered {
            return;
        }
        self.reply_invite(
            183,
            "Session Progress",
            Some(&self.answer_sdp.clone()),
            None,
        );
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
                // The IVR's last word: a later transfer or move does not rewrite it.
                self.outcome = Some(format!("queue:{queue}"));
                self.enqueue(queue, fallback, now)
            }
            IvrAction::Voicemail { mailbox, greeting } => {
                tracing::info!(%mailbox, "voicemail greeting");
                self.outcome = Some(format!("voicemail:{mailbox}"));
                if !self.play(&greeting, now) {
                    self.ivr.handle(IvrEvent::PromptDone, now);
                }
            }
            IvrAction::Record {
                mailbox,
                max_duration,
                terminator,
                beep,
            } => self.start_recording(mailbox, max_duration, terminator, beep, now),
            IvrAction::Callback {
                queue,
                number,
                band,
            } => {
                self.pending_callbacks.push((queue, number, band));
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
            MediaEvent::PlaybackFinished
                if self
                    .recording
                    .as_ref()
                    .is_some_and(|r| r.recorder.is_none()) =>
            {
                self.begin_recorder(now);
            }
            MediaEvent::PlaybackFinished => match self.after_playback.take() {
                Some(AfterPlayback::Hangup { disposition }) => self.hangup(now, disposition),
                // In queue: an announcement ended and the music resumes by itself.
                None if self.queue.is_some() => {}
                None => self.ivr.handle(IvrEvent::PromptDone, now),
            },
            MediaEvent::RemoteLatched(addr) => tracing::debug!(%addr, "rtp source latched"),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn digit(&mut self, digit: char, now: Instant) {
        self.dtmf.push(digit);
        if let Some(r) = &self.recording {
            if r.terminator == Some(digit) {
                self.stop_recording(now, true);
            }
            return;
        }
        if self.queue.as_ref().is_some_and(|q| !q.bridged) {
            let key = self.queue_callback().map(|c| c.offer_key);
            if self.callback_offered.is_some() && key == Some(digit) {
                return self.take_callback_offer(now);
            }
        }
        match &self.queue {
            // Bridged: the media layer relays the digit to the agent.
            Some(q) if q.bridged => {}
            Some(_) => self.engine.acd.input(AcdInput::KeyPressed {
                call: CallKey(self.key),
                digit,
            }),
            None if self.after_playback.is_none() => self.ivr.handle(IvrEvent::Digit(digit), now),
            None => {}
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
            refer.headers.push("Refer-To", format!("<{uri}>"));
            refer.headers.push("Referred-By", self.contact.clone());
            self.send_in_dialog(refer);
            // The tx id is learnt when the response comes back: any REFER response in this call
            // is ours, as we send only one.
            self.refer_tx = None;
            self.disposition = Some("transferring");
        } else if matches!(self.start.origin, Origin::Sip { .. }) {
            // Not answered yet: a redirect lets the carrier route the call itself.
            self.reply_invite(302, "Moved Temporarily", None, Some(uri));
            self.end(now, "engine", Some("transferred"));
        } else {
            // A browser cannot be redirected to a SIP address.
            tracing::warn!(%uri, "a web call cannot be transferred to an outside address");
            self.hangup(now, "transfer-failed");
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
            self.reply_invite(480, "Temporarily Unavailable", None, None);
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
        if self.recording.is_some() {
            // The caller hung up while speaking: the message counts, as on any answering machine.
            self.stop_recording(now, false);
        }
        self.release_acd(now);
        // Sends RTCP BYE; the loop's last step flushes it.
        self.media.close(now);
        self.web_ended(by);
        self.ivr.handle(IvrEvent::Hangup, now);
        while self.ivr.poll_action().is_some() {}
        self.phase = Phase::Ended;
    }

    fn sip_input(&mut self, input: CallInput, now: Instant) {
        let leg_of = |call: &Call, call_id: Option<&str>| {
            call_id.and_then(|id| call.legs.iter().position(|l| l.call_id == id))
        };
        match input {
            // The Call-ID routes a request here; only the dialog's tags make it the peer's. A
            // stranger who learnt a Call-ID must not hang up (or re-INVITE) someone's call.
            CallInput::Request { tx, request } if !self.tags_match(&request) => {
                tracing::warn!(method = %request.method, from_tag = ?request.from_tag(), to_tag = ?request.to_tag(),
                    "in-dialog request with tags of no dialog of this call refused");
                let resp = request.response(481, "Call/Transaction Does Not Exist");
                self.respond(tx, resp);
            }
            CallInput::Request { tx, request } if self.is_supervisor_leg(request.call_id()) => {
                self.supervisor_request(tx, request, now)
            }
            CallInput::Response { response, .. } | CallInput::StrayResponse { response }
                if self.is_supervisor_leg(response.call_id()) =>
            {
                self.supervisor_response(&response, now)
            }
            CallInput::Request { tx, request } => match leg_of(self, request.call_id()) {
                Some(i) => self.agent_request(i, tx, request, now),
                None if request.call_id() == Some(self.start.call_id.as_str())
                    && matches!(self.start.origin, Origin::Sip { .. }) =>
                {
                    self.in_dialog(tx, request, now)
                }
                // A leg we already let go (its alias not yet dropped): its BYE must not be
                // taken for the caller's.
                None => {
                    let status = if request.method == Method::Bye {
                        200
                    } else {
                        481
                    };
                    let resp = request.response(
                        status,
                        if status == 200 {
                            "OK"
                        } else {
                            "Call/Transaction Does Not Exist"
                        },
                    );
                    self.respond(tx, resp);
                }
            },
            CallInput::Response { response, .. } | CallInput::StrayResponse { response }
                if leg_of(self, response.call_id()).is_some() =>
            {
                let i = leg_of(self, response.call_id()).expect("checked");
                self.agent_response(i, &response, now);
            }
            CallInput::StrayResponse { .. } => {}
            CallInput::Acd(action) => self.acd_action(action, now),
            CallInput::Cti(c) => {
                let outcome = self.cti_command(c.command, now);
                let _ = c.reply.send(outcome);
            }
            CallInput::Ack => tracing::debug!("ack"),
            CallInput::Cancelled => {
                tracing::info!("caller cancelled before answer");
                self.reply_invite(487, "Request Terminated", None, None);
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
                // Our INVITE to a ringing agent got no answer at all (timer B).
                if let Some(i) = self.legs.iter().position(|l| l.state == LegState::Ringing) {
                    self.leg_failed(i, 408, now);
                    return;
                }
                if (self.refer_tx.is_none() || self.refer_tx == Some(tx))
                    && self.disposition == Some("transferring")
                {
                    self.hangup(now, "transfer-failed");
                }
            }
            CallInput::WebIce(candidate) => self.web_candidate(&candidate),
            CallInput::WebHangup => self.caller_gone(now),
            CallInput::Shutdown => {
                tracing::info!("engine shutting down; ending the call");
                self.hangup(now, "shutdown");
            }
        }
    }

    /// Whether an in-dialog request carries the tags of the dialog its Call-ID names: the
    /// caller's (its INVITE's From tag, our tag as To), an agent leg's or the supervisor's.
    fn tags_match(&self, req: &Request) -> bool {
        let call_id = req.call_id();
        if call_id == Some(self.start.call_id.as_str()) {
            let Origin::Sip { invite, .. } = &self.start.origin else {
                return false;
            };
            return req.from_tag() == invite.from_tag()
                && req.to_tag() == Some(self.local_tag.as_str());
        }
        let leg = self
            .legs
            .iter()
            .chain(self.sup.as_ref().map(|s| &s.leg))
            .find(|l| Some(l.call_id.as_str()) == call_id);
        // A leg already let go: answered below as before.
        leg.is_none_or(|l| l.owns(req))
    }

    /// The caller hung up (a BYE, a browser closing its page).
    fn caller_gone(&mut self, now: Instant) {
        tracing::info!("caller hung up");
        let disposition = match &self.queue {
            Some(q) if q.bridged => Some("answered-agent"),
            Some(_) => Some("abandoned-queue"),
            None if self.outcome.is_some() => None,
            None => Some("abandoned-ivr"),
        };
        self.end(now, "caller", disposition);
    }

    fn in_dialog(&mut self, tx: ServerTxId, req: Request, now: Instant) {
        match req.method {
            Method::Bye => {
                let resp = req.response(200, "OK");
                self.respond(tx, resp);
                self.caller_gone(now);
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
        let Some(local_sdp) = self.local_sdp.as_mut() else {
            return self.respond(tx, req.response(488, "Not Acceptable Here"));
        };
        match local_sdp.answer(&offer) {
            Ok(neg) => {
                tracing::info!(direction = ?neg.direction, remote_rtp = %neg.remote, "media renegotiated");
                self.media.update(&neg, now);
                if let Err(e) = self.media.set_srtp(local_sdp.srtp()) {
                    tracing::error!(error = %e, "SRTP context not created on re-offer");
                }
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

    fn finish(&mut self, now: Instant) -> CallRecord {
        let acd = self.cdr_finish(now);
        let ended_at = crate::clock::now();
        let vars = self.ivr.variables();
        let record = CallRecord {
            answered_at: self.answered_at.map(|t| t.to_rfc3339()),
            ended_at: ended_at.to_rfc3339(),
            // A flow that ended by itself says how: a message left, or closed hours.
            disposition: match self.disposition {
                None | Some("completed-ivr") if self.extra.contains_key("voicemail") => "voicemail",
                None | Some("completed-ivr")
                    if matches!(
                        vars.get("schedule").map(String::as_str),
                        Some("closed" | "holiday")
                    ) =>
                {
                    "out-of-hours"
                }
                Some(d) => d,
                None => "completed-ivr",
            }
            .to_string(),
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
            variables: {
                let mut v = vars.clone();
                v.extend(self.extra.clone());
                v
            },
            dtmf: self.dtmf.clone(),
            acd,
            recordings: self.recordings.clone(),
            survey: self
                .ivr
                .survey_answers()
                .into_iter()
                .map(|(question, score)| verde_store::SurveyAnswer { question, score })
                .collect(),
            outcome: self
                .outcome
                .clone()
                .or_else(|| self.ivr.outcome().map(|o| o.to_string())),
            ..base_record(&self.start, self.started_at, "", None)
        };
        let stats = self.media.stats();
        crate::metrics::media_finished(&self.media);
        for m in self.legs.iter().filter_map(|l| l.media.as_ref()) {
            crate::metrics::media_finished(m);
        }
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

/// Refuses the INVITE with `resp` and records the refused call.
async fn reject(
    engine: &Arc<Engine>,
    start: &CallStart,
    started_at: DateTime<Utc>,
    resp: Response,
    status: u16,
) {
    if let Origin::Sip { tx, .. } = &start.origin {
        let _ = engine
            .sip()
            .send(SipCmd::Respond {
                tx: *tx,
                response: resp,
            })
            .await;
    }
    engine
        .records
        .write(base_record(start, started_at, "rejected", Some(status)))
        .await;
}

fn base_record(
    start: &CallStart,
    started_at: DateTime<Utc>,
    disposition: &str,
    sip_status: Option<u16>,
) -> CallRecord {
    CallRecord {
        call_id: start.call_id.clone(),
        caller: caller_of(&start.origin),
        did: start.did.clone(),
        trunk: start.trunk.clone(),
        channel: match start.origin {
            Origin::Sip { .. } => "pstn".into(),
            Origin::Web { .. } => "webrtc".into(),
        },
        started_at: started_at.to_rfc3339(),
        ended_at: crate::clock::now().to_rfc3339(),
        disposition: disposition.to_string(),
        hangup_by: "engine".into(),
        sip_status,
        ..Default::default()
    }
}

/// A Call-ID made safe as part of a file name (it may hold `@`, `/`, `.`).
fn safe_file_stem(call_id: &str) -> String {
    call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
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

/// The prompt names that tell a caller their place and wait.
fn announcement(lang: &str, position: Option<u32>, wait: Option<Duration>) -> Vec<String> {
    let mut names = Vec::new();
    match position {
        Some(0) => names.push("queue_next".to_string()),
        Some(n) => {
            names.push("queue_ahead_before".into());
            names.extend(verde_ivr::number_prompts(lang, n as u64));
            names.push("queue_ahead_after".into());
        }
        None => {}
    }
    match wait {
        Some(w) if w < Duration::from_secs(60) => names.push("queue_wait_short".into()),
        Some(w) => {
            names.push("queue_wait_before".into());
            names.extend(verde_ivr::number_prompts(lang, w.as_secs().div_ceil(60)));
            names.push("queue_wait_minutes".into());
        }
        None => {}
    }
    names
}

fn offer_failure_text(f: OfferFailure) -> &'static str {
    match f {
        OfferFailure::Busy => "busy",
        OfferFailure::Rejected => "declined",
        OfferFailure::NoAnswer => "no-answer",
        OfferFailure::Unreachable => "unreachable",
    }
}

fn failure_reason(status: u16) -> OfferFailure {
    match status {
        486 | 600 => OfferFailure::Busy,
        603 => OfferFailure::Rejected,
        408 | 480 | 487 => OfferFailure::NoAnswer,
        _ => OfferFailure::Unreachable,
    }
}

/// The queue and agent side of a call.
impl Call {
    /// One line of the queue log for this call.
    fn qlog(&self, kind: verde_store::QueueEventKind, queue: &str, agent: &str, data: Vec<String>) {
        self.engine.records.event(verde_store::QueueEvent {
            at_ms: crate::clock::now_ms(),
            call_id: self.start.call_id.clone(),
            queue: queue.to_string(),
            agent: agent.to_string(),
            kind,
            data,
        });
    }

    /// The queue the caller is in or was last in.
    fn queue_name(&self) -> String {
        self.queue
            .as_ref()
            .map(|q| q.name.clone())
            .or_else(|| self.extra.get("queue").cloned())
            .unwrap_or_default()
    }

    /// A prompt in the caller's language, else the flow's, else any.
    fn prompt(&self, name: &str) -> Option<Arc<verde_media::Prompt>> {
        [self.ivr.language(), self.start.flow.language(), "en"]
            .iter()
            .find_map(|lang| self.engine.prompts.get(lang, name))
    }

    fn enqueue(&mut self, queue: String, fallback: Vec<PromptRef>, now: Instant) {
        if !self.engine.acd.has_queue(&queue) {
            tracing::warn!(%queue, "flow names a queue that is not configured; playing its fallback");
            self.after_playback = Some(AfterPlayback::Hangup {
                disposition: "queue-unavailable",
            });
            if !self.play(&fallback, now) {
                self.hangup(now, "queue-unavailable");
            }
            return;
        }
        if self.phase == Phase::Offered {
            self.answer();
        }
        tracing::info!(%queue, "enqueued");
        self.cdr_enqueued(&queue);
        self.qlog(
            verde_store::QueueEventKind::Enter,
            &queue,
            "",
            vec![self.caller.clone()],
        );
        self.extra.insert("queue".into(), queue.clone());
        self.engine
            .acd
            .calls
            .insert(self.key, self.start.handle.clone());
        self.engine.acd.input(AcdInput::Enqueue {
            call: CallKey(self.key),
            queue: queue.as_str().into(),
            priority: 0,
            caller: self.caller.clone(),
        });
        let moh = self
            .engine
            .cfg
            .queues
            .iter()
            .find(|q| q.name == queue)
            .map(|q| q.moh.clone())
            .unwrap_or_else(|| "moh".into());
        self.media.stop_playback(now);
        match self.prompt(&moh) {
            Some(p) => self.media.play_loop(p, now),
            None => tracing::error!(prompt = %moh, "music on hold prompt missing"),
        }
        if self.queue_callback_enabled(&queue) {
            self.check_booked = Some(queue.clone());
        }
        self.queue = Some(Queued {
            name: queue,
            fallback,
            entered: now,
            bridged: false,
        });
    }

    fn acd_action(&mut self, action: Action, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        match action {
            Action::Offer { agent, queue, call } => {
                let (agent, queue) = (agent.as_str().to_string(), queue.as_str().to_string());
                self.qlog(verde_store::QueueEventKind::Offer, &queue, &agent, vec![]);
                self.cdr_offer(&agent, &queue);
                self.tell_offered(&agent, &queue, now);
                if self.engine.cti.softphone(&agent) {
                    tracing::info!(%agent, "offering the call to the agent's browser");
                    self.pending_offers.push((agent, queue, false, call.0));
                } else if self.engine.cti.offers_to_bar(&agent) {
                    tracing::info!(%agent, "offering the call on the agent's bar");
                    self.engine.acd.input(AcdInput::OfferRinging {
                        call,
                        agent: agent.as_str().into(),
                    });
                    self.bar_offers.push((agent, queue, call.0));
                } else {
                    tracing::info!(%agent, "offering the call to an agent");
                    self.pending_offers.push((agent, queue, false, call.0));
                }
            }
            Action::CancelOffer { agent, call } => {
                self.cdr_offer_outcome(agent.as_str(), "withdrawn");
                let mine = |a: &str, k: u64| a == agent.as_str() && k == call.0;
                self.bar_offers.retain(|(a, _, k)| !mine(a, *k));
                self.pending_offers.retain(|(a, _, _, k)| !mine(a, *k));
                for leg in self
                    .legs
                    .iter_mut()
                    .filter(|l| mine(&l.agent, l.acd_key) && !l.number)
                {
                    tracing::info!(agent = %leg.agent, "offer withdrawn");
                    leg.cancel(&mut self.sip_out);
                }
                self.tell_ended(agent.as_str(), "withdrawn");
            }
            Action::Connected {
                agent,
                waited,
                call,
                ..
            } => {
                tracing::info!(agent = %agent.as_str(), waited_ms = waited.as_millis() as u64, "connected to agent");
                if call.0 == self.key {
                    self.extra
                        .entry("queue_wait_ms".into())
                        .or_insert_with(|| waited.as_millis().to_string());
                }
            }
            Action::DirectFailed {
                call,
                agent,
                state,
                reason,
            } => {
                let why = match reason {
                    Some(r) => offer_failure_text(r).to_string(),
                    None => format!("agent {}", verde_cti::state_label(&state)),
                };
                tracing::info!(agent = %agent.as_str(), %why, "transfer target did not take the call");
                if self.xfer.as_ref().is_some_and(|x| x.key == call.0) {
                    self.transfer_failed(&why, now);
                }
            }
            Action::Exit { call, reason, .. }
                if call.0 != self.key && self.xfer.as_ref().is_some_and(|x| x.key == call.0) =>
            {
                self.transfer_failed(&format!("queue {reason:?}").to_lowercase(), now);
            }
            Action::Exit { call, .. } if call.0 != self.key => {}
            Action::Announce { call, .. } if call.0 != self.key => {}
            Action::Requeued { .. } => {
                tracing::info!("back at the head of the queue");
            }
            Action::Announce {
                position,
                estimated_wait,
                ..
            } => {
                let lang = self.ivr.language().to_string();
                let mut names = announcement(&lang, position, estimated_wait);
                // The call-me-back offer rides on the announcements while the wait is long.
                if let Some(cb) = self.queue_callback() {
                    let long_wait = match (cb.offer_when_wait_over, estimated_wait) {
                        (Some(limit), Some(w)) => w > limit,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    let long_line = matches!((cb.offer_when_len_over, position), (Some(n), Some(p)) if p as usize >= n);
                    if long_wait || long_line {
                        names.push("callback_offer".into());
                        let q = self.queue.as_ref().map(|q| (q.name.clone(), q.entered));
                        self.callback_offered = q;
                        self.extra.insert("callback_offered".into(), "true".into());
                    }
                }
                let list: Vec<_> = names.iter().filter_map(|n| self.prompt(n)).collect();
                tracing::info!(?position, ewt_s = ?estimated_wait.map(|d| d.as_secs()), "queue announcement");
                if !list.is_empty() {
                    // Interrupts the music, which resumes where it paused.
                    self.media.play(list, now);
                }
            }
            Action::Exit { reason, node, .. } => self.leave_queue(reason, node, now),
            Action::Abandoned { waited, .. } => {
                self.extra
                    .insert("queue_wait_ms".into(), waited.as_millis().to_string());
            }
            _ => {}
        }
    }

    fn leave_queue(&mut self, reason: ExitReason, node: Option<String>, now: Instant) {
        let Some(q) = self.queue.take() else { return };
        self.engine.acd.calls.remove(&self.key);
        let why = match reason {
            ExitReason::Timeout => "queue-timeout",
            ExitReason::Full => "queue-full",
            ExitReason::Empty => "queue-empty",
            ExitReason::Key => "queue-key",
        };
        tracing::info!(queue = %q.name, reason = why, node = ?node, "left the queue");
        self.qlog(
            verde_store::QueueEventKind::Exit,
            &q.name,
            "",
            vec![
                why.trim_start_matches("queue-").to_string(),
                now.duration_since(q.entered).as_millis().to_string(),
            ],
        );
        self.extra.insert("queue_exit".into(), why.into());
        self.cdr_exit(
            why.trim_start_matches("queue-"),
            now.duration_since(q.entered),
        );
        self.media.stop_playback(now);
        if let Some(node) = node {
            if self.ivr.resume_at(&node, now) {
                return;
            }
            tracing::error!(%node, "queue exit names a node the flow does not have");
        }
        self.after_playback = Some(AfterPlayback::Hangup { disposition: why });
        if !self.play(&q.fallback, now) {
            self.hangup(now, why);
        }
    }

    /// Rings an agent for this call: its registered phone, on a fresh RTP pair.
    async fn ring_agent(&mut self, agent: String, queue: String, auto_answer: bool, key: u64) {
        let binding = self.engine.bindings.get(&agent).map(|b| b.clone());
        let fail = |call: &mut Call, reason| {
            call.engine.acd.input(AcdInput::OfferFailed {
                call: CallKey(key),
                agent: agent.as_str().into(),
                reason,
            })
        };
        if self.engine.cti.softphone(&agent) {
            return self.ring_browser(&agent, key, fail);
        }
        let Some(binding) = binding else {
            tracing::warn!(%agent, "agent has no registered phone");
            return fail(self, OfferFailure::Unreachable);
        };
        if self.phase == Phase::Ended || (self.queue.is_none() && key == self.key) {
            return fail(self, OfferFailure::Rejected);
        }
        let Some(rtp) = self.engine.rtp_ports.bind(self.engine.media_ip).await else {
            tracing::error!(%agent, "no RTP port for the agent leg");
            return fail(self, OfferFailure::Unreachable);
        };
        let peer = crate::agent_leg::delivery_peer(&binding);
        tracing::debug!(%agent, contact = %binding.contact, to = %peer.addr, "ringing the agent's phone");
        let mut leg = AgentLeg::invite(
            &self.engine,
            &agent,
            &queue,
            &binding.contact,
            peer,
            &self.caller.clone(),
            rtp,
            auto_answer,
            &mut self.sip_out,
        );
        leg.acd_key = key;
        self.engine
            .register_alias(&leg.call_id, self.start.handle.clone());
        if self.xfer.as_ref().is_some_and(|x| x.key == key) {
            if let Some(x) = self.xfer.as_mut() {
                x.leg = Some(leg.call_id.clone());
            }
        }
        self.legs.push(leg);
    }

    /// Offers the call to the softphone in the agent's page: the offer goes to the bar, the
    /// page answers with `answer {sdp}`.
    fn ring_browser(&mut self, agent: &str, key: u64, fail: impl Fn(&mut Call, OfferFailure)) {
        if self.phase == Phase::Ended || (self.queue.is_none() && key == self.key) {
            return fail(self, OfferFailure::Rejected);
        }
        let offered = self
            .engine
            .webrtc
            .as_ref()
            .and_then(|web| AgentLeg::browser(web, agent, Instant::now()));
        let Some((mut leg, sdp)) = offered else {
            return fail(self, OfferFailure::Unreachable);
        };
        tracing::info!(%agent, leg = %leg.call_id, "ringing the agent's browser");
        leg.acd_key = key;
        self.engine.cti.publish(verde_cti::Event::SoftphoneOffer {
            agent: agent.into(),
            call: CallKey(self.key),
            sdp,
        });
        // The page rings as soon as the offer reaches it: no 180 to wait for.
        self.engine.acd.input(AcdInput::OfferRinging {
            call: CallKey(key),
            agent: agent.into(),
        });
        if let Some(x) = self.xfer.as_mut().filter(|x| x.key == key) {
            x.leg = Some(leg.call_id.clone());
        }
        self.legs.push(leg);
    }

    fn agent_response(&mut self, i: usize, resp: &Response, now: Instant) {
        let event = self.legs[i].on_response(resp, now, &mut self.sip_out);
        self.leg_event(i, event, now);
    }

    /// What a leg's phone (a SIP response) or browser (its WebRTC leg) did.
    fn leg_event(&mut self, i: usize, event: LegEvent, now: Instant) {
        let agent = self.legs[i].agent.clone();
        let key = CallKey(self.legs[i].acd_key);
        if let (LegEvent::Answered, Some((d, peer))) = (&event, self.legs[i].sip_dialog()) {
            let kind = if self.legs[i].number {
                "number"
            } else {
                "agent"
            };
            self.journal(&format!("{kind}:{agent}"), d, peer);
            self.journaled = true;
        }
        match event {
            LegEvent::None => {}
            LegEvent::HungUp => {
                tracing::info!(%agent, "agent hung up");
                self.leg_hung_up(i, now);
            }
            LegEvent::Ringing if self.legs[i].number => {}
            LegEvent::Ringing => self.engine.acd.input(AcdInput::OfferRinging {
                call: key,
                agent: agent.as_str().into(),
            }),
            LegEvent::Answered if self.xfer.is_some() => self.target_answered(i, now),
            LegEvent::Answered => {
                tracing::info!(%agent, "agent answered; bridging");
                let waited = self
                    .queue
                    .as_ref()
                    .map(|q| now.duration_since(q.entered).as_millis())
                    .unwrap_or_default();
                let queue = self.queue_name();
                self.qlog(
                    verde_store::QueueEventKind::Connect,
                    &queue,
                    &agent,
                    vec![waited.to_string()],
                );
                self.cdr_talk_start(&agent, &queue, Some(Duration::from_millis(waited as u64)));
                self.engine.acd.input(AcdInput::OfferAnswered {
                    call: key,
                    agent: agent.as_str().into(),
                });
                self.talks.push((key.0, agent.clone()));
                self.bridge = Some(Bridge::Caller(self.legs[i].call_id.clone()));
                // Ring-all: the others stop ringing.
                let mut others = Vec::new();
                for (j, leg) in self.legs.iter_mut().enumerate() {
                    if j != i {
                        leg.cancel(&mut self.sip_out);
                        if leg.agent == agent {
                            // This agent's phone answered the first ring after all.
                            leg.replaced = true;
                        } else {
                            others.push(leg.agent.clone());
                        }
                    }
                }
                self.pending_offers.retain(|(a, ..)| *a != agent);
                for (a, _, _) in std::mem::take(&mut self.bar_offers) {
                    others.push(a);
                }
                for a in others {
                    self.cdr_offer_outcome(&a, "answered-elsewhere");
                    self.tell_ended(&a, "answered-elsewhere");
                }
                self.bar_hold = false;
                self.engine.cti.publish(verde_cti::Event::CallAnswered {
                    agent: agent.as_str().into(),
                    call: CallKey(self.key),
                });
                self.media.stop_playback(now);
                self.media.set_relay(true);
                self.record_by_policy(now);
                self.web_agent_answered();
                if let Some(q) = self.queue.as_mut() {
                    q.bridged = true;
                    self.extra.insert("agent".into(), agent.clone());
                    self.extra
                        .entry("queue_wait_ms".into())
                        .or_insert_with(|| now.duration_since(q.entered).as_millis().to_string());
                }
                self.disposition = Some("answered-agent");
            }
            LegEvent::Failed(status) => self.leg_failed(i, status, now),
        }
        self.drop_ended_legs();
    }

    fn leg_failed(&mut self, i: usize, status: u16, now: Instant) {
        let leg = &mut self.legs[i];
        let cancelled = leg.state == LegState::Cancelling;
        leg.state = LegState::Ended;
        let (agent, key, number, replaced) =
            (leg.agent.clone(), leg.acd_key, leg.number, leg.replaced);
        let why = offer_failure_text(failure_reason(status));
        if number {
            if !cancelled {
                tracing::info!(%number, status, "transfer: the number did not answer");
                self.transfer_failed(why, now);
            }
            self.drop_ended_legs();
            return;
        }
        // A leg we cancelled ended by our (or the ACD's) decision, already accounted for.
        if !cancelled {
            tracing::info!(%agent, status, "agent did not take the call");
            let queue = self.queue_name();
            self.qlog(
                verde_store::QueueEventKind::RingNoAnswer,
                &queue,
                &agent,
                vec![why.to_string()],
            );
            self.cdr_offer_outcome(&agent, why);
            self.engine.acd.input(AcdInput::OfferFailed {
                call: CallKey(key),
                agent: agent.as_str().into(),
                reason: failure_reason(status),
            });
        }
        // A leg rung again with auto-answer: the offer goes on.
        if !replaced {
            self.tell_ended(&agent, why);
        }
        self.drop_ended_legs();
    }

    fn drop_ended_legs(&mut self) {
        let sip = self.engine.sip().clone();
        // At the end of the call its record goes first, then every side leaves the journal.
        let call_goes_on = self.phase != Phase::Ended;
        self.legs.retain(|l| {
            if l.state == LegState::Ended {
                if call_goes_on && l.answered_at.is_some() && l.sip_dialog().is_some() {
                    crate::dialogs::leg_closed(&l.call_id);
                }
                if let Some(m) = &l.media {
                    crate::metrics::media_finished(m);
                }
                // The alias goes when the SIP task hears of it; late retransmissions of the
                // agent's final answer meanwhile still reach us and are ignored.
                let _ = sip.try_send(SipCmd::CallEnded {
                    invite_tx: None,
                    call_id: l.call_id.clone(),
                });
                false
            } else {
                true
            }
        });
    }

    /// A request inside an agent leg's dialog.
    fn agent_request(&mut self, i: usize, tx: ServerTxId, req: Request, now: Instant) {
        match req.method {
            Method::Bye => {
                self.respond(tx, req.response(200, "OK"));
                tracing::info!(agent = %self.legs[i].agent, "agent hung up");
                self.legs[i].state = LegState::Ended;
                self.leg_hung_up(i, now);
            }
            Method::Invite | Method::Update => {
                let offer = std::str::from_utf8(&req.body)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let tag = self.legs[i].local_tag();
                let contact = self.engine.contact(self.legs[i].transport());
                let neg = if offer.is_empty() {
                    None
                } else {
                    self.legs[i].reoffer(&offer, now)
                };
                match (offer.is_empty(), neg) {
                    (false, None) => self.respond(tx, req.response(488, "Not Acceptable Here")),
                    (_, neg) => {
                        let mut resp = req.response(200, "OK").with_to_tag(&tag);
                        resp.headers.push("Contact", &contact);
                        if let Some(neg) = neg {
                            // The agent holds the caller: music until it resumes.
                            let holding = !neg.direction.sends();
                            tracing::info!(agent = %self.legs[i].agent, holding, "agent re-offer");
                            self.cdr_hold(holding, now);
                            if holding {
                                if let Some(p) = self.prompt("moh") {
                                    self.media.play_loop(p, now);
                                }
                            } else {
                                self.media.stop_playback(now);
                            }
                            let (agent, call) =
                                (self.legs[i].agent.as_str().into(), CallKey(self.key));
                            self.engine.cti.publish(if holding {
                                verde_cti::Event::CallHeld { agent, call }
                            } else {
                                verde_cti::Event::CallResumed { agent, call }
                            });
                            resp.headers.push("Content-Type", "application/sdp");
                            resp.body = Bytes::from(neg.answer);
                        }
                        self.respond(tx, resp);
                    }
                }
            }
            Method::Ack => {}
            Method::Refer => self.agent_refer(i, tx, req, now),
            Method::Info | Method::Options | Method::Notify => {
                self.respond(tx, req.response(200, "OK"));
            }
            _ => {
                let mut resp = req.response(405, "Method Not Allowed");
                resp.headers.push("Allow", ALLOW);
                self.respond(tx, resp);
            }
        }
    }

    /// Blind transfer by the agent's phone (REFER): the Refer-To's user part names a queue, an
    /// agent or an outside number, as the bar's transfer does; the agent is released to
    /// wrap-up. Anything else is refused with 403.
    fn agent_refer(&mut self, i: usize, tx: ServerTxId, req: Request, now: Instant) {
        let target = match verde_sip::refer_to(&req) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = ?e, "REFER without a usable Refer-To");
                return self.respond(tx, req.response(400, "Bad Refer-To"));
            }
        };
        // The user part as written: queue names may hold '-' or '.', unlike phone numbers.
        let queue = target
            .uri
            .split_once(':')
            .map(|(_, rest)| rest.split(['@', ';']).next().unwrap_or(""))
            .unwrap_or("")
            .to_string();
        let agent = self.legs[i].agent.clone();
        let user = queue;
        let is_number = {
            let digits = user.strip_prefix('+').unwrap_or(&user);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        };
        let to = if self.engine.acd.has_queue(&user) {
            Some(verde_cti::TransferTarget::Queue(user))
        } else if self.engine.cfg.agents.iter().any(|a| a.id == user) {
            Some(verde_cti::TransferTarget::Agent(user))
        } else if is_number {
            Some(verde_cti::TransferTarget::Number(user))
        } else {
            None
        };
        // Checked before the 202: once accepted, the caller is ours to place.
        let possible = self.queue.as_ref().is_some_and(|q| q.bridged)
            && self.xfer.is_none()
            && match &to {
                Some(verde_cti::TransferTarget::Agent(a)) => *a != agent,
                Some(verde_cti::TransferTarget::Number(_)) => {
                    self.engine.cfg.outbound.uri.is_some()
                }
                Some(_) => true,
                None => false,
            };
        let (Some(to), true) = (to, possible) else {
            tracing::warn!(%agent, target = %target.uri, "transfer refused: not a queue, an agent or a number we can reach");
            return self.respond(tx, req.response(403, "Forbidden"));
        };
        match &to {
            verde_cti::TransferTarget::Queue(queue) => {
                tracing::info!(%agent, %queue, "agent transfers the caller to another queue")
            }
            other => tracing::info!(%agent, to = ?other, "agent transfers the caller (REFER)"),
        }
        self.respond(tx, req.response(202, "Accepted"));
        let cseq = req.cseq().map(|(n, _)| n);
        self.legs[i].notify_refer(cseq, 200, "OK", &mut self.sip_out);
        if let Err(e) = self.start_transfer(i, false, to, now) {
            tracing::error!(%agent, error = %e.message, "accepted transfer could not start");
        }
    }

    /// The talking agent (leg `i`) sends the caller to `queue`: its leg ends, it goes to
    /// wrap-up, the caller waits in the new queue with its music.
    fn transfer_to_queue(&mut self, i: usize, queue: String, now: Instant) {
        let target = verde_cti::TransferTarget::Queue(queue.clone());
        self.agent_leaves(i, &target, false);
        let fallback = self.queue.take().map(|q| q.fallback).unwrap_or_default();
        self.enqueue(queue, fallback, now);
    }

    /// Tells the agent's bar the call is offered to it (the pop-up).
    fn tell_offered(&mut self, agent: &str, queue: &str, now: Instant) {
        let waited = self
            .queue
            .as_ref()
            .map(|q| now.saturating_duration_since(q.entered))
            .unwrap_or_default();
        let offer = crate::cti::offer(
            &self.caller.clone(),
            &self.start.did,
            queue,
            waited,
            Some(self.ivr.language()),
            self.ivr.choices(),
            match self.start.origin {
                Origin::Sip { .. } => verde_cti::Channel::Voice,
                Origin::Web { .. } => verde_cti::Channel::Webrtc,
            },
        );
        if !self.told.iter().any(|a| a == agent) {
            self.told.push(agent.to_string());
        }
        self.engine.cti.publish(verde_cti::Event::CallOffered {
            agent: agent.into(),
            call: CallKey(self.key),
            offer,
        });
    }

    /// Tells the agent's bar the call is over for it, once.
    fn tell_ended(&mut self, agent: &str, reason: &str) {
        let before = self.told.len();
        self.told.retain(|a| a != agent);
        if self.told.len() != before {
            self.engine.cti.publish(verde_cti::Event::CallEnded {
                agent: agent.into(),
                call: CallKey(self.key),
                reason: reason.to_string(),
            });
        }
    }

    /// A command from an agent's bar (the CTI session checked that the call is the agent's;
    /// this checks it against the call's own truth) or a supervisor.
    fn cti_command(
        &mut self,
        command: verde_cti::EngineCommand,
        now: Instant,
    ) -> Result<verde_cti::Reply, verde_cti::EngineError> {
        use verde_cti::{EngineCommand as C, EngineError, ErrorCode, Reply};
        let gone = || EngineError::new(ErrorCode::Gone, "the call is no longer yours");
        if self.phase == Phase::Ended {
            return Err(EngineError::new(ErrorCode::Gone, "the call has ended"));
        }
        let hold_wanted = matches!(command, C::Hold { .. });
        let talking = |call: &Call, agent: &str| {
            call.legs
                .iter()
                .position(|l| l.state == LegState::Answered && l.agent == agent)
        };
        match command {
            C::Answer {
                agent,
                sdp: Some(sdp),
                ..
            } => {
                let Some(leg) = self.legs.iter_mut().find(|l| {
                    l.agent == agent.as_str() && l.is_browser() && l.state == LegState::Ringing
                }) else {
                    return Err(gone());
                };
                leg.accept_browser_answer(&sdp, now).map_err(|e| {
                    tracing::warn!(agent = %agent.as_str(), error = %e, "softphone answer refused");
                    EngineError::new(ErrorCode::InvalidState, e)
                })?;
                tracing::info!(agent = %agent.as_str(), "agent answers in the browser");
                Ok(Reply::Done)
            }
            C::SoftphoneIce {
                agent, candidate, ..
            } => {
                let Some(leg) = self
                    .legs
                    .iter_mut()
                    .find(|l| l.agent == agent.as_str() && l.is_browser())
                else {
                    return Err(gone());
                };
                leg.add_browser_candidate(&candidate);
                Ok(Reply::Done)
            }
            C::Answer { agent, .. } => {
                let agent = agent.as_str();
                if self
                    .legs
                    .iter()
                    .any(|l| l.agent == agent && l.is_browser() && l.state == LegState::Ringing)
                {
                    return Err(EngineError::new(
                        ErrorCode::BadRequest,
                        "the call rings in the browser: answer with its sdp",
                    ));
                }
                if let Some(p) = self.bar_offers.iter().position(|(a, _, _)| a == agent) {
                    let (agent, queue, key) = self.bar_offers.remove(p);
                    tracing::info!(%agent, "agent answers from its bar: calling its phone to auto-answer");
                    self.pending_offers.push((agent, queue, true, key));
                    return Ok(Reply::Done);
                }
                let queue = self.queue_name();
                if let Some(leg) = self
                    .legs
                    .iter_mut()
                    .find(|l| l.agent == agent && l.state == LegState::Ringing && !l.number)
                {
                    // The phone rings without picking up by itself: ring it again, this time
                    // asking it to answer (phones that honour neither header keep ringing).
                    tracing::info!(%agent, "agent answers from its bar: calling its phone again to auto-answer");
                    leg.cancel(&mut self.sip_out);
                    leg.replaced = true;
                    let key = leg.acd_key;
                    self.pending_offers
                        .push((agent.to_string(), queue, true, key));
                    return Ok(Reply::Done);
                }
                Err(gone())
            }
            C::Hangup { agent, .. } => {
                let agent = agent.as_str().to_string();
                if let Some(p) = self.bar_offers.iter().position(|(a, _, _)| *a == agent) {
                    let (_, _, key) = self.bar_offers.remove(p);
                    tracing::info!(%agent, "agent declines the offer on its bar");
                    self.cdr_offer_outcome(&agent, "declined");
                    self.engine.acd.input(AcdInput::OfferFailed {
                        call: CallKey(key),
                        agent: agent.as_str().into(),
                        reason: OfferFailure::Rejected,
                    });
                    self.tell_ended(&agent, "declined");
                    return Ok(Reply::Done);
                }
                if let Some(leg) = self
                    .legs
                    .iter_mut()
                    .find(|l| l.agent == agent && l.state == LegState::Ringing)
                {
                    tracing::info!(%agent, "agent declines the offer on its bar");
                    leg.cancel(&mut self.sip_out);
                    let key = leg.acd_key;
                    self.cdr_offer_outcome(&agent, "declined");
                    self.engine.acd.input(AcdInput::OfferFailed {
                        call: CallKey(key),
                        agent: agent.as_str().into(),
                        reason: OfferFailure::Rejected,
                    });
                    self.tell_ended(&agent, "declined");
                    return Ok(Reply::Done);
                }
                let Some(i) = talking(self, &agent) else {
                    return Err(gone());
                };
                tracing::info!(%agent, "agent hangs up from its bar");
                self.legs[i].bye(&mut self.sip_out);
                self.leg_hung_up(i, now);
                self.drop_ended_legs();
                Ok(Reply::Done)
            }
            C::Hold { agent, .. } | C::ResumeCall { agent, .. } => {
                let hold = hold_wanted;
                let Some(i) = talking(self, agent.as_str()) else {
                    return Err(gone());
                };
                let consulting = self
                    .xfer
                    .as_ref()
                    .is_some_and(|x| x.attended && x.by == agent.as_str());
                if consulting && !hold {
                    self.cancel_consult(now);
                    return Ok(Reply::Done);
                }
                if self.bar_hold == hold {
                    let msg = if hold {
                        "already on hold"
                    } else {
                        "not on hold"
                    };
                    return Err(EngineError::new(ErrorCode::InvalidState, msg));
                }
                self.bar_hold = hold;
                self.cdr_hold(hold, now);
                self.media.set_relay(!hold);
                if let Some(m) = self.legs[i].media.as_mut() {
                    m.set_relay(!hold);
                }
                if hold {
                    if let Some(p) = self.prompt("moh") {
                        self.media.play_loop(p, now);
                    }
                } else {
                    self.media.stop_playback(now);
                }
                tracing::info!(agent = %agent.as_str(), hold, "hold from the agent's bar");
                let call = CallKey(self.key);
                self.engine.cti.publish(if hold {
                    verde_cti::Event::CallHeld { agent, call }
                } else {
                    verde_cti::Event::CallResumed { agent, call }
                });
                Ok(Reply::Done)
            }
            C::Transfer {
                agent, mode, to, ..
            } => {
                let Some(i) = talking(self, agent.as_str()) else {
                    return Err(gone());
                };
                let attended = mode == verde_cti::TransferMode::Attended;
                self.start_transfer(i, attended, to, now)?;
                Ok(Reply::Done)
            }
            C::Record { agent, on, .. } => {
                self.record_command(agent.as_str(), on, now)?;
                Ok(Reply::Done)
            }
            C::Supervise {
                supervisor, mode, ..
            } => {
                self.supervise_command(supervisor.clone(), mode, now)?;
                // The durable audit trail of who listened to a citizen's call, and when.
                let how = match mode {
                    Some(verde_cti::SuperviseMode::Listen) => "listen",
                    Some(verde_cti::SuperviseMode::Whisper) => "whisper",
                    Some(verde_cti::SuperviseMode::Barge) => "barge",
                    None => "leave",
                };
                let agent = self.talking_agent().unwrap_or_default().to_string();
                self.qlog(
                    verde_store::QueueEventKind::Supervise,
                    &self.queue_name(),
                    &agent,
                    vec![supervisor, how.into()],
                );
                Ok(Reply::Done)
            }
            C::MoveCaller {
                supervisor, queue, ..
            } => {
                let waiting = self.queue.as_ref().is_some_and(|q| !q.bridged);
                if !waiting {
                    return Err(EngineError::new(
                        ErrorCode::InvalidState,
                        "the caller is not waiting in a queue",
                    ));
                }
                tracing::info!(%supervisor, queue = %queue.as_str(), "supervisor moves the caller to another queue");
                self.engine.acd.input(AcdInput::RemoveCaller {
                    call: CallKey(self.key),
                });
                for (a, _, _) in std::mem::take(&mut self.bar_offers) {
                    self.tell_ended(&a, "moved");
                }
                let from = self.queue_name();
                self.qlog(
                    verde_store::QueueEventKind::MoveCaller,
                    &from,
                    "",
                    vec![supervisor.clone(), from.clone(), queue.as_str().to_string()],
                );
                let fallback = self.queue.take().map(|q| q.fallback).unwrap_or_default();
                self.extra.insert("moved_by".into(), supervisor);
                self.enqueue(queue.as_str().to_string(), fallback, now);
                Ok(Reply::Done)
            }
            _ => Err(EngineError::new(
                ErrorCode::Internal,
                "not a command for a call",
            )),
        }
    }

    /// Leaves the ACD cleanly: the queue learns the caller left (or the talk ended), ringing
    /// agents stop ringing, a talking agent gets a BYE.
    fn release_acd(&mut self, now: Instant) {
        self.stop_talk_recording(now);
        self.end_supervision(now);
        if let Some(q) = self.queue.take() {
            if !q.bridged {
                // The ACD's own Abandoned action would come after this call has gone.
                self.extra.insert(
                    "queue_wait_ms".into(),
                    now.duration_since(q.entered).as_millis().to_string(),
                );
            }
            if !q.bridged {
                self.engine.acd.input(AcdInput::Abandon {
                    call: CallKey(self.key),
                });
                self.qlog(
                    verde_store::QueueEventKind::Abandon,
                    &q.name,
                    "",
                    vec![now.duration_since(q.entered).as_millis().to_string()],
                );
                self.cdr_exit("abandon", now.duration_since(q.entered));
            }
        }
        // Also after a blind transfer to a number, which left the queue but kept the handle for
        // commands on the call.
        self.engine.acd.calls.remove(&self.key);
        for (key, agent) in std::mem::take(&mut self.talks) {
            self.engine.acd.input(AcdInput::CallEnded {
                call: CallKey(key),
                agent: agent.as_str().into(),
            });
            let queue = self.queue_name();
            self.qlog(
                verde_store::QueueEventKind::Complete,
                &queue,
                &agent,
                vec![self.hangup_by.to_string()],
            );
            self.cdr_talk_end(&agent, now);
        }
        if let Some(x) = self.xfer.take() {
            if let Some(key) = x.consult_key(self.key) {
                // A consultation still waiting or ringing: the ACD withdraws it.
                self.engine
                    .acd
                    .input(AcdInput::RemoveCaller { call: CallKey(key) });
                self.engine.acd.calls.remove(&key);
            }
        }
        self.bridge = None;
        for leg in self.legs.iter_mut() {
            leg.hang_up(&mut self.sip_out);
        }
        self.bar_offers.clear();
        for agent in std::mem::take(&mut self.told) {
            self.engine.cti.publish(verde_cti::Event::CallEnded {
                agent: agent.as_str().into(),
                call: CallKey(self.key),
                reason: "caller-hangup".into(),
            });
        }
        for leg in &self.legs {
            self.sip_out.push(SipCmd::CallEnded {
                invite_tx: None,
                call_id: leg.call_id.clone(),
            });
        }
    }
}

/// Voicemail and callback booking.
impl Call {
    fn start_recording(
        &mut self,
        mailbox: String,
        max: Duration,
        terminator: Option<char>,
        beep: bool,
        now: Instant,
    ) {
        let day = crate::clock::now().format("%Y-%m-%d").to_string();
        let safe = safe_file_stem(&self.start.call_id);
        let path = self
            .engine
            .cfg
            .data
            .join("voicemail")
            .join(day)
            .join(format!("{safe}-{mailbox}.wav"));
        // Drop audio heard before the beep, then listen.
        while self.media.poll_audio().is_some() {}
        self.media.set_audio_tap(true);
        self.recording = Some(Recording {
            mailbox,
            max,
            terminator,
            recorder: None,
            path,
        });
        let beep_prompt = if beep { self.prompt("beep") } else { None };
        match beep_prompt {
            Some(p) => {
                self.media.stop_playback(now);
                self.media.play(vec![p], now);
            }
            None => self.begin_recorder(now),
        }
    }

    fn begin_recorder(&mut self, now: Instant) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        while self.media.poll_audio().is_some() {}
        if let Some(dir) = rec.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match verde_media::Recorder::create(&rec.path, rec.max, now) {
            Ok(r) => {
                tracing::info!(path = %rec.path.display(), "recording voicemail");
                rec.recorder = Some(r);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record voicemail");
                self.recording = None;
                self.media.set_audio_tap(false);
                self.ivr
                    .handle(IvrEvent::RecordingDone { duration_ms: 0 }, now);
            }
        }
    }

    fn feed_recorder(&mut self, now: Instant) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let Some(recorder) = rec.recorder.as_mut() else {
            return;
        };
        let mut full = false;
        while let Some(frame) = self.media.poll_audio() {
            match recorder.push(&frame, now) {
                Ok(verde_media::RecordStatus::Full) => full = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "voicemail write failed");
                    full = true;
                }
            }
        }
        if full {
            self.stop_recording(now, true);
        }
    }

    /// Ends the recording and queues the voicemail for the store. `tell_flow` is false when the
    /// caller hung up (the flow is over anyway).
    fn stop_recording(&mut self, now: Instant, tell_flow: bool) {
        self.feed_recorder_last(now);
        let Some(rec) = self.recording.take() else {
            return;
        };
        self.media.set_audio_tap(false);
        let Some(recorder) = rec.recorder else {
            if tell_flow {
                self.ivr
                    .handle(IvrEvent::RecordingDone { duration_ms: 0 }, now);
            }
            return;
        };
        let duration = match recorder.finish(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "voicemail file not finished");
                Duration::ZERO
            }
        };
        tracing::info!(mailbox = %rec.mailbox, duration_ms = duration.as_millis() as u64, "voicemail recorded");
        let wall = crate::clock::now();
        let deadline = self.working_deadline(wall, self.engine.cfg.tasks.voicemail_sla);
        self.extra
            .insert("voicemail_ms".into(), duration.as_millis().to_string());
        self.extra.insert("voicemail".into(), "stored".into());
        self.pending_voicemails.push(verde_store::NewVoicemail {
            mailbox: rec.mailbox,
            caller: self.caller.clone(),
            did: self.start.did.clone(),
            call_id: self.start.call_id.clone(),
            recorded_at_ms: wall.timestamp_millis(),
            duration_ms: duration.as_millis() as u64,
            wav_path: rec.path.display().to_string(),
            variables: self.ivr.variables().clone(),
            deadline_ms: deadline.timestamp_millis(),
        });
        if tell_flow {
            self.ivr.handle(
                IvrEvent::RecordingDone {
                    duration_ms: duration.as_millis() as u32,
                },
                now,
            );
        }
    }

    /// Last frames still in the tap when the recording stops.
    fn feed_recorder_last(&mut self, now: Instant) {
        if let Some(rec) = self.recording.as_mut() {
            if let Some(recorder) = rec.recorder.as_mut() {
                while let Some(frame) = self.media.poll_audio() {
                    let _ = recorder.push(&frame, now);
                }
            }
        }
    }

    /// `from` plus `sla` of working time in the flow's opening hours (its first schedule), or
    /// plain time when the flow has none.
    fn working_deadline(&self, from: DateTime<Utc>, sla: Duration) -> DateTime<Utc> {
        working_deadline(&self.start.flow, from, sla)
    }

    fn queue_callback_enabled(&self, queue: &str) -> bool {
        self.engine
            .cfg
            .queues
            .iter()
            .any(|q| q.name == queue && q.callback.enabled)
    }

    fn queue_callback(&self) -> Option<&verde_acd::CallbackConfig> {
        let name = &self.queue.as_ref()?.name;
        let q = self.engine.cfg.queues.iter().find(|q| &q.name == name)?;
        q.callback.enabled.then_some(&q.callback)
    }

    /// The caller accepted the offer: out of the line (the place is kept in the request) and
    /// into the flow's booking node for this queue.
    fn take_callback_offer(&mut self, now: Instant) {
        let Some(q) = self.queue.take() else { return };
        let node = format!("offer_callback_{}", q.name);
        tracing::info!(queue = %q.name, %node, "caller takes the callback offer");
        let waited = now.duration_since(q.entered);
        self.qlog(
            verde_store::QueueEventKind::Exit,
            &q.name,
            "",
            vec!["callback".into(), waited.as_millis().to_string()],
        );
        self.cdr_exit("callback", waited);
        self.engine.acd.input(AcdInput::RemoveCaller {
            call: CallKey(self.key),
        });
        self.engine.acd.calls.remove(&self.key);
        self.callback_place = Some(q.entered);
        self.media.stop_playback(now);
        if !self.ivr.resume_at(&node, now) {
            tracing::error!(%node, "the flow has no callback booking node for this queue");
            self.after_playback = Some(AfterPlayback::Hangup {
                disposition: "queue-unavailable",
            });
            if !self.play(&q.fallback, now) {
                self.hangup(now, "queue-unavailable");
            }
        }
    }

    /// Stores the request (durably, before the caller hears the confirmation) and tells the
    /// flow how it went.
    async fn book_callback(
        &mut self,
        queue: &str,
        number: &str,
        band: Option<verde_ivr::BandSpec>,
    ) -> IvrEvent {
        use verde_ivr::CallbackRefusal;
        let Some(qcfg) = self
            .engine
            .cfg
            .queues
            .iter()
            .find(|q| q.name == queue)
            .cloned()
        else {
            tracing::error!(%queue, "callback for a queue that is not configured");
            return IvrEvent::CallbackRefused {
                reason: CallbackRefusal::Unavailable,
            };
        };
        let wall = crate::clock::now();
        let requested = self.callback_place.map(crate::clock::at).unwrap_or(wall);
        let deadline = self.working_deadline(requested, self.engine.cfg.tasks.callback_sla);
        let tz = self.start.flow.timezone();
        let not_before = band
            .as_ref()
            .and_then(|b| b.hours)
            .map(|h| next_in_band(wall, tz, h.start_secs(), h.end_secs()))
            .unwrap_or(wall);
        let new = verde_store::NewCallback {
            queue: queue.to_string(),
            number: number.to_string(),
            caller_call_id: self.start.call_id.clone(),
            did: self.start.did.clone(),
            requested_at_ms: requested.timestamp_millis(),
            band: band
                .as_ref()
                .and_then(|b| b.hours)
                .map(|h| verde_store::TimeBand {
                    start_minute: (h.start_secs() / 60) as u16,
                    end_minute: (h.end_secs() / 60) as u16,
                }),
            not_before_ms: not_before.timestamp_millis(),
            deadline_ms: deadline.timestamp_millis(),
            max_attempts: qcfg.callback.max_attempts,
            variables: self.ivr.variables().clone(),
        };
        let tasks = self.engine.tasks.clone();
        let ceiling = qcfg.callback.ceiling;
        let q = queue.to_string();
        let num = number.to_string();
        let res = tokio::task::spawn_blocking(move || {
            let existing = tasks.find_pending(&q, &num)?;
            if existing.is_none() && tasks.count_pending(&q)? >= ceiling {
                return Ok(None);
            }
            tasks.upsert_callback(&new).map(Some)
        })
        .await;
        match res {
            Ok(Ok(Some((id, false)))) => {
                // One request per number and queue: the new choices update it (it keeps its
                // place), and the caller is told a callback was already booked.
                tracing::info!(id, %queue, %number, "callback already booked: request updated");
                self.extra.insert("callback_id".into(), id.to_string());
                IvrEvent::CallbackRefused {
                    reason: CallbackRefusal::Duplicate,
                }
            }
            Ok(Ok(Some((id, true)))) => {
                tracing::info!(id, %queue, %number, "callback booked");
                self.outcome = Some(format!("callback:{queue}"));
                self.disposition = Some("callback-requested");
                self.extra.insert("callback_id".into(), id.to_string());
                IvrEvent::CallbackAccepted
            }
            Ok(Ok(None)) => {
                tracing::warn!(%queue, ceiling, "callback basket full");
                IvrEvent::CallbackRefused {
                    reason: CallbackRefusal::Full,
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ALARM: callback NOT stored");
                IvrEvent::CallbackRefused {
                    reason: CallbackRefusal::Unavailable,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ALARM: callback NOT stored");
                IvrEvent::CallbackRefused {
                    reason: CallbackRefusal::Unavailable,
                }
            }
        }
    }
}

/// Agents' task codes: voicemails taken in charge from the phone (the CTI bar comes later).
impl Call {
    async fn agent_task(&mut self, agent: &str, task: AgentTask, now: Instant) {
        self.answer();
        let mailboxes: Vec<String> = self
            .engine
            .cfg
            .agents
            .iter()
            .find(|a| a.id == agent)
            .map(|a| a.queues.clone())
            .unwrap_or_default();
        let tasks = self.engine.tasks.clone();
        let who = agent.to_string();
        let at = crate::clock::now_ms();
        let mut list: Vec<Arc<verde_media::Prompt>> = Vec::new();
        match task {
            AgentTask::TakeVoicemail => {
                let res = tokio::task::spawn_blocking(move || {
                    tasks.take_next_voicemail(&mailboxes, &who, at)
                })
                .await;
                match res {
                    Ok(Ok(Some(vm))) => {
                        tracing::info!(voicemail = vm.id, %agent, caller = %vm.caller, "voicemail taken in charge");
                        self.extra
                            .insert("voicemail_taken".into(), vm.id.to_string());
                        let mut names = vec!["task_message_from".to_string()];
                        names.extend(
                            vm.caller
                                .chars()
                                .filter(|c| c.is_ascii_digit())
                                .map(|c| format!("num_{c}")),
                        );
                        list.extend(names.iter().filter_map(|n| self.prompt(n)));
                        match verde_media::Prompt::load_file(std::path::Path::new(&vm.wav_path)) {
                            Ok(p) => list.push(Arc::new(p)),
                            Err(e) => tracing::error!(error = %e, "voicemail audio unreadable"),
                        }
                    }
                    Ok(Ok(None)) => list.extend(self.prompt("task_none")),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot take a voicemail");
                        list.extend(self.prompt("task_none"));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot take a voicemail");
                        list.extend(self.prompt("task_none"));
                    }
                }
            }
            AgentTask::Login | AgentTask::Pause | AgentTask::Logout => return,
            AgentTask::CloseVoicemail => {
                let res = tokio::task::spawn_blocking(move || {
                    let taken = tasks.voicemails(&verde_store::VoicemailFilter {
                        status: Some(verde_store::VoicemailStatus::Taken),
                        ..Default::default()
                    })?;
                    let mine = taken.into_iter().find(|v| {
                        matches!(&v.state, verde_store::VoicemailState::Taken { agent, .. } if *agent == who)
                    });
                    match mine {
                        Some(v) => tasks.close_voicemail(v.id, &who, at, "handled").map(Some),
                        None => Ok(None),
                    }
                })
                .await;
                match res {
                    Ok(Ok(Some(vm))) => {
                        tracing::info!(voicemail = vm.id, %agent, "voicemail closed");
                        list.extend(self.prompt("task_closed"));
                    }
                    _ => list.extend(self.prompt("task_none")),
                }
            }
        }
        self.after_playback = Some(AfterPlayback::Hangup {
            disposition: "agent-task",
        });
        self.outcome = Some(format!("task:{task:?}"));
        if list.is_empty() {
            self.hangup(now, "agent-task");
        } else {
            self.media.play(list, now);
        }
    }
}

/// `from` plus `sla` of working time in the flow's opening hours (its first schedule), or plain
/// time when the flow has none.
pub fn working_deadline(flow: &Flow, from: DateTime<Utc>, sla: Duration) -> DateTime<Utc> {
    let delta = chrono::TimeDelta::from_std(sla).unwrap_or_default();
    flow.schedules()
        .next()
        .and_then(|(_, s)| s.add_working_time(from, delta))
        .unwrap_or(from + delta)
}

/// The first instant at or after `now` inside the daily band [start, end) (seconds from local
/// midnight in `tz`).
fn next_in_band(now: DateTime<Utc>, tz: chrono_tz::Tz, start: u32, end: u32) -> DateTime<Utc> {
    use chrono::{TimeZone, Timelike};
    let local = now.with_timezone(&tz);
    let secs = local.num_seconds_from_midnight();
    if secs >= start && secs < end {
        return now;
    }
    let mut day = local.date_naive();
    if secs >= start {
        day = day.succ_opt().unwrap_or(day);
    }
    let t = day
        .and_hms_opt(start / 3600, (start % 3600) / 60, start % 60)
        .unwrap_or_default();
    tz.from_local_datetime(&t)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(now)
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

    #[test]
    fn announcements_say_place_and_wait() {
        assert_eq!(announcement("it", Some(0), None), vec!["queue_next"]);
        let a = announcement("it", Some(3), Some(Duration::from_secs(150)));
        assert_eq!(a.first().map(String::as_str), Some("queue_ahead_before"));
        assert!(a.contains(&"queue_ahead_after".to_string()));
        assert!(a.contains(&"num_3".to_string()), "{a:?}");
        // 150 s rounds up to 3 minutes.
        assert_eq!(a.iter().filter(|n| *n == "num_3").count(), 2, "{a:?}");
        assert_eq!(a.last().map(String::as_str), Some("queue_wait_minutes"));
        assert_eq!(
            announcement("en", None, Some(Duration::from_secs(20))),
            vec!["queue_wait_short"]
        );
    }

    #[test]
    fn sip_failures_map_to_offer_outcomes() {
        assert_eq!(failure_reason(486), OfferFailure::Busy);
        assert_eq!(failure_reason(603), OfferFailure::Rejected);
        assert_eq!(failure_reason(480), OfferFailure::NoAnswer);
        assert_eq!(failure_reason(404), OfferFailure::Unreachable);
    }

    #[test]
    fn callback_bands_start_at_the_next_opening_of_the_band() {
        use chrono::TimeZone;
        let tz = chrono_tz::Europe::Rome;
        let at = |d: u32, h: u32, m: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        // 09:00-12:00 band: inside -> now; before -> today 09:00; after -> tomorrow 09:00.
        let band = (9 * 3600, 12 * 3600);
        assert_eq!(
            next_in_band(at(30, 10, 0), tz, band.0, band.1),
            at(30, 10, 0)
        );
        assert_eq!(
            next_in_band(at(30, 7, 30), tz, band.0, band.1),
            at(30, 9, 0)
        );
        let tomorrow_nine = tz
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            next_in_band(at(30, 15, 0), tz, band.0, band.1),
            tomorrow_nine
        );
    }
}
