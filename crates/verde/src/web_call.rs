//! Browser calls from the public "call now" page (`/call/{did}`): the anonymous `/webrtc`
//! signaling websocket, its per-address limits, and the WebRTC leg it hands to an ordinary call
//! task as that call's caller. From there the call is like one from a trunk: same flow, same
//! queue, same records (channel `webrtc`).
//!
//! The wire (`docs/webrtc.md`): the page sends `call` with its SDP offer and trickles `ice`;
//! verde answers with one host candidate and reports `call_state`. One call per websocket;
//! closing the socket hangs up.

use crate::call::{CallInput, CallStart, Origin};
use crate::config::{Config, WebRtcSettings};
use crate::sip_core::Engine;
use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use verde_webrtc::{AudioCodec, DtlsIdentity, WebRtcConfig, WebRtcLeg};

/// What a call tells its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebEvent {
    /// `connected` (ICE and DTLS up: the flow starts), `agent` (an agent answered).
    State(&'static str),
    /// The call is over: `hangup` (verde ended it), `caller_hangup`, `failed`, `timeout`.
    Ended(&'static str),
}

/// The caller side of a browser call, handed to the call task.
pub struct WebCaller {
    pub leg: WebRtcLeg,
    pub socket: UdpSocket,
    pub events: mpsc::UnboundedSender<WebEvent>,
}

/// The engine's WebRTC means: one DTLS certificate for every leg, the port range, the limits.
pub struct WebRtc {
    identity: DtlsIdentity,
    codecs: Vec<AudioCodec>,
    public_ip: IpAddr,
    bind_ip: IpAddr,
    ports: crate::rtp_ports::RtpPorts,
    limits: Mutex<Limiter>,
    pub settings: WebRtcSettings,
}

impl WebRtc {
    /// None when `webrtc.enabled` is off.
    pub fn new(cfg: &Config, media_ip: IpAddr) -> anyhow::Result<Option<WebRtc>> {
        let s = &cfg.webrtc;
        if !s.enabled {
            return Ok(None);
        }
        let identity = DtlsIdentity::generate()
            .map_err(|e| anyhow::anyhow!("cannot make the WebRTC DTLS certificate: {e}"))?;
        Ok(Some(WebRtc {
            identity,
            codecs: s.audio_codecs()?,
            public_ip: s.public_ip.unwrap_or(media_ip),
            bind_ip: media_ip,
            ports: crate::rtp_ports::RtpPorts::new(s.ports),
            limits: Mutex::new(Limiter::new(s)),
            settings: s.clone(),
        }))
    }

    /// A UDP socket from `webrtc.ports` and the leg settings that advertise it.
    pub fn bind(&self) -> Option<(UdpSocket, WebRtcConfig)> {
        let (socket, port) = self.ports.bind_one(self.bind_ip)?;
        let config = WebRtcConfig {
            candidate: SocketAddr::new(self.public_ip, port),
            codecs: self.codecs.clone(),
            dtmf: true,
            identity: Some(self.identity.clone()),
            ssrc: rand::random(),
            ice_lite: true,
        };
        Some((socket, config))
    }

    /// How long a leg may take to connect.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.ice_failed_s.max(1))
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        self.limits.lock().expect("limiter").admit(ip, now)?;
        Ok(Permit {
            web: self.clone(),
            ip,
        })
    }
}

/// A public call's place in the limits, given back when its websocket ends.
struct Permit {
    web: Arc<WebRtc>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut l) = self.web.limits.lock() {
            l.release(self.ip);
        }
    }
}

/// Why a page's `call` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// `webrtc.max_calls` web calls (or `sip.max_calls` calls) are up.
    Full,
    /// This address has `max_calls_per_ip` calls up.
    TooMany,
    /// This address started `calls_per_minute_per_ip` calls in the last minute.
    TooFast,
    Disabled,
    Draining,
    NotFound(String),
    NoPort,
    BadOffer(String),
}

impl Refusal {
    /// The `metrics` label.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::TooMany => "too_many",
            Refusal::TooFast => "too_fast",
            Refusal::Disabled => "disabled",
            Refusal::Draining => "draining",
            Refusal::NotFound(_) => "not_found",
            Refusal::NoPort => "no_port",
            Refusal::BadOffer(_) => "bad_offer",
        }
    }

    /// The `error` code the page branches on.
    fn code(&self) -> &'static str {
        match self {
            Refusal::TooMany | Refusal::TooFast => "rate_limited",
            Refusal::NotFound(_) => "not_found",
            Refusal::BadOffer(_) => "bad_request",
            Refusal::Full | Refusal::Disabled | Refusal::Draining | Refusal::NoPort => {
                "unavailable"
            }
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Full => "all lines are busy; call again shortly".into(),
            Refusal::TooMany => "too many calls from this address".into(),
            Refusal::TooFast => "too many new calls from this address; wait a minute".into(),
            Refusal::Disabled => "browser calls are not enabled".into(),
            Refusal::Draining => "the service is restarting; call again shortly".into(),
            Refusal::NotFound(n) => format!("{n} is not a number of this service"),
            Refusal::NoPort => "no media port free".into(),
            Refusal::BadOffer(e) => format!("offer not usable: {e}"),
        }
    }
}

/// Anonymous callers are bounded per address and in total; plain data, tested without sockets.
struct Limiter {
    max_total: usize,
    max_per_ip: usize,
    per_minute: usize,
    total: usize,
    by_ip: HashMap<IpAddr, IpUse>,
}

#[derive(Default)]
struct IpUse {
    active: usize,
    started: VecDeque<Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);

/// How long a `/webrtc` socket may stay open without a call.
const CALL_WITHIN: Duration = Duration::from_secs(30);

impl Limiter {
    fn new(s: &WebRtcSettings) -> Limiter {
        Limiter {
            max_total: s.max_calls,
            max_per_ip: s.max_calls_per_ip,
            per_minute: s.calls_per_minute_per_ip,
            total: 0,
            by_ip: HashMap::new(),
        }
    }

    fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::Full);
        }
        // Forget addresses that are idle and quiet, so a scan of many addresses costs nothing.
        if self.by_ip.len() > 4096 {
            self.by_ip
                .retain(|_, u| u.active > 0 || u.started.back().is_some_and(|t| now - *t < MINUTE));
        }
        let u = self.by_ip.entry(ip).or_default();
        while u.started.front().is_some_and(|t| now - *t >= MINUTE) {
            u.started.pop_front();
        }
        if u.active >= self.max_per_ip {
            return Err(Refusal::TooMany);
        }
        if u.started.len() >= self.per_minute {
            return Err(Refusal::TooFast);
        }
        u.started.push_back(now);
        u.active += 1;
        self.total += 1;
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) {
        if let Some(u) = self.by_ip.get_mut(&ip) {
            u.active = u.active.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// Whether a page from `origin` may open the socket: the engine's own pages always, other
/// sites only when configured (a browser always sends Origin on websockets; tools may not).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let own = host.is_some_and(|h| {
        origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
    });
    own || allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Call { number: String, sdp: String },
    Ice { candidate: String },
    Hangup,
}

fn error(id: &serde_json::Value, code: &str, message: &str) -> String {
    json!({"v":1,"type":"error","id":id,"code":code,"message":message}).to_string()
}

fn result(id: &serde_json::Value, extra: serde_json::Value) -> String {
    let mut v = json!({"v":1,"type":"result","id":id,"ok":true});
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v.to_string()
}

/// The call this socket started: its handle, and what the call tells the page.
struct Live {
    call_id: String,
    handle: mpsc::Sender<CallInput>,
    events: mpsc::UnboundedReceiver<WebEvent>,
    _permit: Permit,
}

/// Serves one page's websocket until the call ends or the page goes away.
pub async fn serve(mut socket: WebSocket, peer: SocketAddr, engine: Arc<Engine>) {
    let mut live: Option<Live> = None;
    // An anonymous socket that never calls is closed: idle sockets cost a descriptor each.
    let idle_until = tokio::time::Instant::now() + CALL_WITHIN;
    loop {
        let calling = live.is_some();
        let event = async {
            match live.as_mut() {
                Some(l) => l.events.recv().await,
                None => std::future::pending().await,
            }
        };
        let idle = async {
            if !calling {
                tokio::time::sleep_until(idle_until).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = idle => {
                tracing::info!(%peer, "web call socket closed: no call within 30 s");
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let close = axum::extract::ws::CloseFrame {
                            code: 1003,
                            reason: "text frames only".into(),
                        };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        break;
                    }
                    Some(Err(e)) => {
                        if let Some(close) = crate::http::too_big_close(&e) {
                            let _ = socket.send(Message::Close(Some(close))).await;
                        }
                        break;
                    }
                    // Closed: the page is gone.
                    _ => break,
                };
                if text.len() > 32 * 1024 {
                    let _ = socket.send(Message::Text(error(&serde_json::Value::Null, "bad_request", "message larger than 32 KiB").into())).await;
                    break;
                }
                let reply = command(&engine, peer, &text, &mut live).await;
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
            ev = event => {
                let Some(l) = live.as_ref() else { break };
                let (state, reason) = match ev {
                    Some(WebEvent::State(s)) => (s, None),
                    Some(WebEvent::Ended(r)) => ("ended", Some(r)),
                    None => ("ended", Some("hangup")),
                };
                let mut msg = json!({"v":1,"type":"call_state","call_id":l.call_id,"state":state});
                if let Some(r) = reason {
                    msg["reason"] = json!(r);
                }
                let _ = socket.send(Message::Text(msg.to_string().into())).await;
                if state == "ended" {
                    live = None;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            }
        }
    }
    if let Some(l) = live {
        // The page went away mid-call: that is the caller hanging up.
        let _ = l.handle.send(CallInput::WebHangup).await;
    }
}

async fn command(
    engine: &Arc<Engine>,
    peer: SocketAddr,
    text: &str,
    live: &mut Option<Live>,
) -> String {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return error(&serde_json::Value::Null, "bad_request", &e.to_string()),
    };
    let id = value.get("id").cloned().unwrap_or(serde_json::Value::Null);
    if value.get("v").and_then(|v| v.as_u64()) != Some(1) {
        return error(&id, "unsupported_version", "this engine speaks v 1");
    }
    let cmd: Command = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(e) => return error(&id, "bad_request", &e.to_string()),
    };
    match cmd {
        Command::Call { number, sdp } => {
            if live.is_some() {
                return error(&id, "invalid_state", "one call per connection");
            }
            match start_call(engine, peer.ip(), &number, &sdp) {
                Ok((l, answer)) => {
                    let reply = result(&id, json!({"call_id": l.call_id, "sdp": answer}));
                    *live = Some(l);
                    reply
                }
                Err(r) => {
                    crate::metrics::webrtc_refused(r.reason());
                    error(&id, r.code(), &r.message())
                }
            }
        }
        Command::Ice { candidate } => {
            let Some(l) = live.as_ref() else {
                return error(&id, "invalid_state", "no call on this connection");
            };
            if !candidate.is_empty() {
                let _ = l.handle.send(CallInput::WebIce(candidate)).await;
            }
            result(&id, json!({}))
        }
        Command::Hangup => {
            let Some(l) = live.as_ref() else {
                return error(&id, "invalid_state", "no call on this connection");
            };
            let _ = l.handle.send(CallInput::WebHangup).await;
            result(&id, json!({}))
        }
    }
}

/// Checks the limits, answers the offer and starts the call task.
fn start_call(
    engine: &Arc<Engine>,
    ip: IpAddr,
    number: &str,
    offer: &str,
) -> Result<(Live, String), Refusal> {
    let Some(web) = engine.webrtc.clone() else {
        return Err(Refusal::Disabled);
    };
    let call_id = format!("w-{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("call", call_id = %call_id);
    let _e = span.enter();
    let refused = |r: Refusal| {
        tracing::warn!(%ip, did = %number, refusal = ?r, "web call refused");
        r
    };
    if engine.is_draining() {
        return Err(refused(Refusal::Draining));
    }
    let Some(flow) = engine.flows.for_number(number) else {
        return Err(refused(Refusal::NotFound(number.to_string())));
    };
    if engine.active_calls() >= engine.cfg.sip.max_calls {
        return Err(refused(Refusal::Full));
    }
    let permit = web.admit(ip, Instant::now()).map_err(refused)?;
    let Some((socket, config)) = web.bind() else {
        return Err(refused(Refusal::NoPort));
    };
    let (leg, answer) = WebRtcLeg::answer(config, offer, Instant::now())
        .map_err(|e| refused(Refusal::BadOffer(e.to_string())))?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (handle, inbox) = mpsc::channel(64);
    engine.register_alias(&call_id, handle.clone());
    let start = CallStart {
        call_id: call_id.clone(),
        origin: Origin::Web { ip },
        trunk: "webrtc".into(),
        did: number.to_string(),
        flow,
        handle: handle.clone(),
        task: None,
    };
    drop(_e);
    let web = WebCaller {
        leg,
        socket,
        events: events_tx,
    };
    crate::call::spawn(engine.clone(), start, Some(web), inbox, span);
    Ok((
        Live {
            call_id,
            handle,
            events,
            _permit: permit,
        },
        answer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Limiter {
        Limiter::new(&WebRtcSettings {
            max_calls: 3,
            max_calls_per_ip: 2,
            calls_per_minute_per_ip: 3,
            ..WebRtcSettings::default()
        })
    }

    #[test]
    fn limits_per_address_per_minute_and_in_total() {
        let mut l = limiter();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.admit(a, t0), Ok(()));
        assert_eq!(l.admit(a, t0), Ok(()));
        assert_eq!(l.admit(a, t0), Err(Refusal::TooMany));
        l.release(a);
        assert_eq!(l.admit(a, t0), Ok(()));
        l.release(a);
        // Three started within the minute: a fourth waits though only one is up.
        assert_eq!(
            l.admit(a, t0 + Duration::from_secs(59)),
            Err(Refusal::TooFast)
        );
        assert_eq!(l.admit(a, t0 + Duration::from_secs(60)), Ok(()));
        // a holds two; b takes the last line of three, then the engine is full for everyone.
        assert_eq!(l.admit(b, t0), Ok(()));
        assert_eq!(l.admit(b, t0), Err(Refusal::Full));
        l.release(b);
        assert_eq!(l.admit(b, t0), Ok(()));
    }

    #[test]
    fn origins_own_host_or_configured() {
        let allowed = vec!["https://www.inps.it/".to_string()];
        assert!(origin_allowed(
            Some("http://verde.example:8080"),
            Some("verde.example:8080"),
            &allowed
        ));
        assert!(origin_allowed(
            Some("https://www.inps.it"),
            Some("verde.example"),
            &allowed
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("verde.example"),
            &allowed
        ));
        assert!(origin_allowed(None, Some("verde.example"), &allowed));
    }
}
