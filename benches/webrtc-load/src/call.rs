//! One browser-free call: the `/webrtc` websocket (docs/webrtc.md's protocol), an offering
//! `WebRtcLeg` on its own UDP socket, and the loop a browser would run: tone out, prompts in,
//! one digit, hang up after the hold.

use crate::media::{Heard, Law, Sender};
use futures_util::{SinkExt, StreamExt};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use verde_webrtc::{AudioCodec, DtlsIdentity, LegEvent, WebRtcConfig, WebRtcLeg};

const FRAME: Duration = Duration::from_millis(20);
/// How long verde has to end the call and close the socket once we hang up.
const HANGUP_GRACE: Duration = Duration::from_secs(5);
/// Behind by more than this, the sender skips ahead instead of bursting (a stalled tool).
const MAX_LAG: Duration = Duration::from_millis(200);

pub struct Setup {
    pub url: String,
    pub number: String,
    pub codec: AudioCodec,
    pub ip: IpAddr,
    pub hold: Duration,
    pub dtmf: Option<(Duration, char)>,
    pub identity: DtlsIdentity,
    pub connect_timeout: Duration,
    /// Loud frames a call must hear to count as having heard the prompts.
    pub min_loud: u64,
}

#[derive(Debug, Default)]
pub struct CallReport {
    pub index: usize,
    pub call_id: Option<String>,
    pub failure: Option<String>,
    /// `call` sent -> the answer's `result`.
    pub answer: Option<Duration>,
    /// `call` sent -> ICE and DTLS up on our leg.
    pub connect: Option<Duration>,
    /// `call_state connected` seen on the websocket.
    pub signaled_connected: bool,
    pub wire_codec: Option<AudioCodec>,
    pub heard: Heard,
    pub sent: u64,
    pub digit_sent: bool,
    /// Slots the sender skipped because the task ran late.
    pub skipped: u64,
    pub disconnects: u64,
    pub ended: Option<String>,
    /// Datagrams or timeouts rtc refused on our side.
    pub rejected: u64,
}

impl CallReport {
    pub fn heard_prompts(&self, min_loud: u64) -> bool {
        self.heard.loud >= min_loud
    }
}

enum Phase {
    Connecting {
        deadline: Instant,
    },
    Up {
        next_frame: Instant,
        digit_at: Option<Instant>,
        hangup_at: Instant,
    },
    HangingUp {
        deadline: Instant,
    },
}

/// Runs call `index`; `up` is told once whether it connected.
pub async fn run(index: usize, setup: &Setup, up: mpsc::UnboundedSender<bool>) -> CallReport {
    let mut report = CallReport {
        index,
        ..CallReport::default()
    };
    let mut up = Some(up);
    if let Err(why) = drive(index, setup, &mut report, &mut up).await {
        report.failure = Some(why);
    }
    if report.failure.is_none() && !report.heard_prompts(setup.min_loud) {
        report.failure = Some(format!(
            "heard {} loud frames of {} audio packets (< {}): no prompts",
            report.heard.loud, report.heard.audio, setup.min_loud
        ));
    }
    if let Some(tx) = up.take() {
        let _ = tx.send(false);
    }
    report
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, body: serde_json::Value) -> Result<(), String> {
    ws.send(Message::Text(body.to_string().into()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// What a server message means to the call.
enum Incoming {
    Result(u64, serde_json::Value),
    Error(u64, String),
    State(String, Option<String>),
    Other,
}

fn classify(text: &str) -> Incoming {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Incoming::Other;
    };
    let id = v.get("id").and_then(|i| i.as_u64()).unwrap_or(0);
    match v.get("type").and_then(|t| t.as_str()) {
        Some("result") => Incoming::Result(id, v),
        Some("error") => Incoming::Error(
            id,
            format!(
                "{}: {}",
                v["code"].as_str().unwrap_or("?"),
                v["message"].as_str().unwrap_or("")
            ),
        ),
        Some("call_state") => Incoming::State(
            v["state"].as_str().unwrap_or("?").to_string(),
            v["reason"].as_str().map(str::to_string),
        ),
        _ => Incoming::Other,
    }
}

async fn drive(
    index: usize,
    setup: &Setup,
    r: &mut CallReport,
    up: &mut Option<mpsc::UnboundedSender<bool>>,
) -> Result<(), String> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + setup.connect_timeout);
    let (mut ws, _) =
        tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(&setup.url))
            .await
            .map_err(|_| "websocket: connect timed out".to_string())?
            .map_err(|e| format!("websocket: {e}"))?;
    let socket = UdpSocket::bind((setup.ip, 0))
        .await
        .map_err(|e| format!("udp bind: {e}"))?;
    let local = socket.local_addr().map_err(|e| format!("udp: {e}"))?;
    let ssrc = 0x5EED_0000 ^ (index as u32) ^ (std::process::id() << 12);
    let (mut leg, offer) = WebRtcLeg::offer(
        WebRtcConfig {
            candidate: local,
            codecs: vec![setup.codec],
            dtmf: true,
            identity: Some(setup.identity.clone()),
            ssrc,
            // The client plays the browser: full ICE against verde's ICE-lite.
            ice_lite: false,
        },
        Instant::now(),
    )
    .map_err(|e| format!("offer: {e}"))?;
    let sent_at = Instant::now();
    send(
        &mut ws,
        serde_json::json!({"v":1,"type":"call","id":1,"number":setup.number,"sdp":offer}),
    )
    .await?;
    let answer = loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no answer to call".to_string())?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                return Err("socket closed before the answer".into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("websocket read: {e}")),
        };
        match classify(text.as_str()) {
            Incoming::Result(1, v) => {
                r.call_id = v["call_id"].as_str().map(str::to_string);
                break v["sdp"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or("result without sdp")?;
            }
            Incoming::Error(1, e) => return Err(format!("call refused: {e}")),
            Incoming::State(s, reason) if s == "ended" => {
                return Err(format!("ended before the answer ({reason:?})"))
            }
            _ => {}
        }
    };
    r.answer = Some(sent_at.elapsed());
    leg.accept_answer(&answer, Instant::now())
        .map_err(|e| format!("accept_answer: {e}"))?;
    r.wire_codec = leg.media().map(|m| m.codec);
    let media = leg.session_media().ok_or("no audio negotiated")?;
    let law = match media.codec {
        AudioCodec::Pcma => Law::A,
        _ => Law::Mu,
    };
    let mut sender = Sender::new(
        law,
        media.payload_type,
        media.dtmf_pt,
        ssrc,
        (index as u16).wrapping_mul(1000),
        (index as u32).wrapping_mul(1_000_000),
    );
    let mut phase = Phase::Connecting {
        deadline: start + setup.connect_timeout,
    };
    let mut buf = vec![0u8; 4096];
    let outcome = loop {
        while let Some((to, bytes)) = leg.poll_transmit() {
            // A full socket buffer loses a datagram, as the network would: carry on.
            let _ = socket.send_to(&bytes, to).await;
        }
        let now = Instant::now();
        let phase_wake = match &phase {
            Phase::Connecting { deadline } | Phase::HangingUp { deadline } => *deadline,
            Phase::Up {
                next_frame,
                hangup_at,
                ..
            } => (*next_frame).min(*hangup_at),
        };
        let wake = leg
            .poll_timeout()
            .map_or(phase_wake, |t| t.min(phase_wake))
            .max(now);
        let mut ended = None;
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = got {
                    leg.handle_datagram(from, &buf[..n], Instant::now());
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => match classify(t.as_str()) {
                    Incoming::State(s, reason) => match s.as_str() {
                        "connected" => r.signaled_connected = true,
                        "ended" => ended = Some(reason.unwrap_or_else(|| "(no reason)".into())),
                        _ => {}
                    },
                    Incoming::Error(id, e) => break Err(format!("command {id} refused: {e}")),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => ended = Some("(socket closed)".into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(format!("websocket read: {e}")),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        if leg.poll_timeout().is_some_and(|t| t <= now) {
            leg.handle_timeout(now);
        }
        while let Some(p) = leg.poll_rtp() {
            r.heard
                .on_packet(&p, law, media.payload_type, media.dtmf_pt);
        }
        let hanging_up = matches!(phase, Phase::HangingUp { .. });
        if let Some(reason) = ended {
            r.ended = Some(reason.clone());
            break if hanging_up {
                Ok(())
            } else {
                Err(format!("verde ended the call before the hold: {reason}"))
            };
        }
        let mut failed = None;
        while let Some(ev) = leg.poll_event() {
            match ev {
                LegEvent::Connected => {
                    if let Phase::Connecting { .. } = phase {
                        r.connect = Some(now - sent_at);
                        if let Some(tx) = up.take() {
                            let _ = tx.send(true);
                        }
                        phase = Phase::Up {
                            next_frame: now,
                            digit_at: setup.dtmf.map(|(after, _)| now + after),
                            hangup_at: now + setup.hold,
                        };
                    }
                }
                LegEvent::Disconnected => r.disconnects += 1,
                LegEvent::Failed | LegEvent::Closed if !hanging_up => {
                    failed = Some(format!("leg {ev:?} (ICE/DTLS)"));
                }
                _ => {}
            }
        }
        if let Some(f) = failed {
            break Err(f);
        }
        match &mut phase {
            Phase::Connecting { deadline } if now >= *deadline => {
                break Err(format!(
                    "not connected within {} s",
                    setup.connect_timeout.as_secs_f64()
                ));
            }
            Phase::Up {
                next_frame,
                digit_at,
                hangup_at,
            } => {
                if now >= *next_frame + MAX_LAG {
                    let behind = (now - *next_frame).as_millis() / FRAME.as_millis();
                    r.skipped += behind as u64;
                    *next_frame = now;
                }
                while *next_frame <= now {
                    if digit_at.is_some_and(|t| t <= *next_frame) {
                        *digit_at = None;
                        let digit = setup.dtmf.map_or('1', |(_, d)| d);
                        r.digit_sent = sender.queue_digit(digit);
                    }
                    let pkt = sender.next_packet();
                    leg.send_rtp(&pkt, now)
                        .map_err(|e| format!("send_rtp: {e}"))?;
                    r.sent += 1;
                    *next_frame += FRAME;
                }
                if now >= *hangup_at {
                    send(&mut ws, serde_json::json!({"v":1,"type":"hangup","id":2})).await?;
                    phase = Phase::HangingUp {
                        deadline: now + HANGUP_GRACE,
                    };
                }
            }
            Phase::HangingUp { deadline } if now >= *deadline => {
                break Err(format!(
                    "no call_state ended within {} s of hangup",
                    HANGUP_GRACE.as_secs()
                ));
            }
            _ => {}
        }
    };
    r.rejected = leg.rejected();
    leg.close();
    while let Some((to, bytes)) = leg.poll_transmit() {
        let _ = socket.send_to(&bytes, to).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    outcome
}
