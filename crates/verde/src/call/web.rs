//! A browser caller's side of the call task: its WebRTC leg stands where a trunk caller's RTP
//! pair stands. The session on top is the same `MediaSession`; this only moves its packets
//! through the leg and turns the leg's events into the call's (`docs/webrtc.md`).

use super::{Call, CallerIo, Phase};
use crate::web_call::WebEvent;
use std::time::Instant;
use verde_ivr::IvrEvent;
use verde_media::{Socket, Transmit};
use verde_webrtc::{LegEvent, MEDIA_PEER};

impl Call {
    /// Hands what the leg decrypted to the session and acts on the leg's events; true when
    /// anything happened.
    pub(super) fn web_pump(&mut self, now: Instant) -> bool {
        let CallerIo::Web(w) = &mut self.io else {
            return false;
        };
        let mut progressed = false;
        while let Some(pkt) = w.leg.poll_rtp() {
            self.media.handle_packet(Socket::Rtp, pkt, MEDIA_PEER, now);
            progressed = true;
        }
        let mut events = Vec::new();
        while let Some(e) = w.leg.poll_event() {
            events.push(e);
        }
        for e in events {
            progressed = true;
            // After the end (our hang-up closes the leg) its last events change nothing.
            if self.phase != Phase::Ended {
                self.web_leg_event(e, now);
            }
        }
        progressed
    }

    fn web_leg_event(&mut self, e: LegEvent, now: Instant) {
        let CallerIo::Web(w) = &mut self.io else {
            return;
        };
        match e {
            LegEvent::Connected if !w.connected => {
                w.connected = true;
                let _ = w.events.send(WebEvent::State("connected"));
                tracing::info!(codec = ?w.leg.media().map(|m| m.codec), "web media connected");
                self.ivr.handle(IvrEvent::Start, now);
            }
            LegEvent::Connected => tracing::info!("web media connected again"),
            // ICE may recover by itself (a Wi-Fi hiccup); `Failed` follows if it does not.
            LegEvent::Disconnected => tracing::warn!("web media interrupted"),
            LegEvent::Failed if !w.connected => {
                tracing::warn!("web media failed to connect");
                self.end(now, "engine", Some("failed"));
            }
            LegEvent::Failed | LegEvent::Closed => {
                tracing::info!(event = ?e, "web media gone");
                self.caller_gone(now);
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// The leg's next timer (and the deadline to connect).
    pub(super) fn io_deadline(&mut self) -> Option<Instant> {
        let CallerIo::Web(w) = &mut self.io else {
            return None;
        };
        let connect = (!w.connected).then_some(w.connect_by);
        w.leg.poll_timeout().into_iter().chain(connect).min()
    }

    pub(super) fn io_timeout(&mut self, now: Instant) {
        let CallerIo::Web(w) = &mut self.io else {
            return;
        };
        w.leg.handle_timeout(now);
        if !w.connected && now >= w.connect_by {
            tracing::warn!("web media did not connect in time; ending the call");
            self.end(now, "engine", Some("failed"));
        }
    }

    /// Sends what the session has for the caller: on its RTP pair, or through the leg.
    pub(super) fn send_caller(&mut self, now: Instant) {
        let w = match &mut self.io {
            CallerIo::Rtp(pair) => return super::send_all(&mut self.media, pair),
            CallerIo::Web(w) => w,
        };
        while let Some(Transmit { socket, bytes, .. }) = self.media.poll_transmit() {
            // The session's own RTCP stays home: the leg's interceptors report to the browser.
            if socket == Socket::Rtp && w.connected {
                if let Err(e) = w.leg.send_rtp(&bytes, now) {
                    tracing::debug!(error = %e, "web rtp not sent");
                }
            }
        }
        while let Some((to, bytes)) = w.leg.poll_transmit() {
            if let Err(e) = w.socket.try_send_to(&bytes, to) {
                tracing::debug!(error = %e, %to, "web datagram send failed");
            }
        }
    }

    /// Tells the page and closes the leg (DTLS close_notify goes out with the last send).
    pub(super) fn web_ended(&mut self, by: &'static str) {
        let CallerIo::Web(w) = &mut self.io else {
            return;
        };
        let reason = match (by, self.disposition) {
            ("caller", _) => "caller_hangup",
            ("timeout", _) => "timeout",
            (_, Some("failed")) => "failed",
            _ => "hangup",
        };
        let _ = w.events.send(WebEvent::Ended(reason));
        w.leg.close();
    }

    /// An agent took the call: the page may say so.
    pub(super) fn web_agent_answered(&mut self) {
        if let CallerIo::Web(w) = &self.io {
            let _ = w.events.send(WebEvent::State("agent"));
        }
    }

    pub(super) fn web_candidate(&mut self, candidate: &str) {
        if let CallerIo::Web(w) = &mut self.io {
            if let Err(e) = w.leg.add_remote_candidate(candidate) {
                tracing::debug!(error = %e, "browser candidate not usable");
            }
        }
    }
}
