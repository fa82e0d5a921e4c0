//! The B2BUA's outbound leg: verde calls an agent's registered phone for a queued caller.
//!
//! A leg lives inside the caller's call task (one task owns both legs, so bridging needs no
//! locks). It has its own Call-ID, dialog, RTP pair and media session; the SIP task routes the
//! agent's messages to the caller's task through an alias of that Call-ID.

use crate::rtp_ports::RtpPair;
use crate::sip_core::{Engine, SipCmd};
use std::time::Instant;
use verde_media::{Codec, InbandDtmf, LocalSdp, MediaConfig, MediaSession, Negotiated};
use verde_sip::{Dialog, Method, OutboundInvite, Peer, Request, Response};

/// Where to send an INVITE for a registration. A phone behind NAT writes an address it cannot
/// be reached at in its Contact, so the source of its REGISTER is used (and over TCP the
/// connection it opened); when the Contact names the very host the REGISTER came from, its port
/// is honoured (a phone that registers from one port and listens on another).
pub fn delivery_peer(binding: &verde_sip::Binding) -> Peer {
    if binding.source.transport == verde_sip::Transport::Udp {
        if let Some(addr) = verde_sip::uri_socket_addr(&binding.contact) {
            if addr.ip() == binding.source.addr.ip() {
                return Peer {
                    transport: binding.source.transport,
                    addr,
                };
            }
        }
    }
    binding.source
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE sent, no final answer yet.
    Ringing,
    /// We sent CANCEL (ring timeout, another agent answered, the caller left).
    Cancelling,
    /// 2xx received and ACKed: media flows.
    Answered,
    Ended,
}

/// What a response on the leg means to the call.
pub enum LegEvent {
    None,
    Ringing,
    Answered,
    /// The agent did not take the call; the status says why.
    Failed(u16),
}

pub struct AgentLeg {
    pub agent: String,
    pub call_id: String,
    pub state: LegState,
    pub peer: Peer,
    pub rtp: RtpPair,
    pub media: Option<MediaSession>,
    invite: Request,
    local_sdp: LocalSdp,
    dialog: Option<Dialog>,
    /// Kept to answer every retransmitted 2xx with the same ACK.
    ack: Option<Request>,
    pub answered_at: Option<Instant>,
    /// The ACD key the offer was made under: the caller's, or a consultation's.
    pub acd_key: u64,
    /// An outside number (a transfer), not an agent: no ACD, no bar.
    pub number: bool,
    /// Cancelled to be rung again with auto-answer (the agent answered from its bar): its end
    /// is not the offer's.
    pub replaced: bool,
}

impl AgentLeg {
    /// Builds the INVITE for `agent` at its registered `contact`, reachable at `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn invite(
        engine: &Engine,
        agent: &str,
        queue: &str,
        contact: &str,
        peer: Peer,
        caller: &str,
        rtp: RtpPair,
        auto_answer: bool,
        sip_out: &mut Vec<SipCmd>,
    ) -> AgentLeg {
        let mut local_sdp = LocalSdp::new(
            engine.media_ip,
            rtp.port,
            &[Codec::Pcmu, Codec::Pcma],
            rand::random::<u32>() as u64,
        );
        let host = engine.sip_host();
        let from = format!("\"{caller}\" <sip:{caller}@{host}>");
        let to = format!("<sip:{agent}@{host}>");
        let local_contact = engine.contact(peer.transport);
        let invite = OutboundInvite {
            target: contact,
            from: &from,
            to: &to,
            local_contact: &local_contact,
            transport: peer.transport,
        }
        .build()
        .with_header("Subject", format!("verde queue {queue}"))
        .with_header("X-Verde-Queue", queue);
        // The agent clicked Answer on its bar: ask the phone to pick up by itself, in the two
        // dialects phones understand (BroadSoft's Call-Info and the Alert-Info of Polycom,
        // Yealink, Snom and others). Phones that honour neither ring as usual.
        let invite = if auto_answer {
            invite
                .with_header("Call-Info", format!("<sip:{host}>;answer-after=0"))
                .with_header(
                    "Alert-Info",
                    "<http://127.0.0.1/auto>;info=alert-autoanswer;delay=0",
                )
        } else {
            invite
        };
        let invite = invite.with_body("application/sdp", local_sdp.offer());
        let call_id = invite.call_id().unwrap_or_default().to_string();
        sip_out.push(SipCmd::Request {
            call_id: call_id.clone(),
            request: invite.clone(),
            to: peer,
        });
        AgentLeg {
            agent: agent.to_string(),
            call_id,
            state: LegState::Ringing,
            peer,
            rtp,
            media: None,
            invite,
            local_sdp,
            dialog: None,
            ack: None,
            answered_at: None,
            acd_key: 0,
            number: false,
            replaced: false,
        }
    }

    /// A response to our INVITE (or a stray 2xx after the transaction ended).
    pub fn on_response(
        &mut self,
        resp: &Response,
        now: Instant,
        sip_out: &mut Vec<SipCmd>,
    ) -> LegEvent {
        let is_invite = resp
            .cseq()
            .map(|(_, m)| m == Method::Invite)
            .unwrap_or(false);
        if !is_invite {
            return LegEvent::None;
        }
        match resp.status {
            100 => LegEvent::None,
            101..=199 => {
                if self.state == LegState::Ringing && resp.status == 180 {
                    LegEvent::Ringing
                } else {
                    LegEvent::None
                }
            }
            200..=299 => {
                if let Some(ack) = &self.ack {
                    // A retransmitted 2xx: our ACK was lost.
                    sip_out.push(SipCmd::Ack {
                        request: ack.clone(),
                        to: self.peer,
                    });
                    return LegEvent::None;
                }
                let dialog = match Dialog::uac(&self.invite, resp) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(agent = %self.agent, error = ?e, "agent's 2xx unusable");
                        self.state = LegState::Ended;
                        return LegEvent::Failed(500);
                    }
                };
                let ack = dialog.ack(1);
                sip_out.push(SipCmd::Ack {
                    request: ack.clone(),
                    to: self.peer,
                });
                self.ack = Some(ack);
                self.dialog = Some(dialog);
                if self.state == LegState::Cancelling {
                    // The answer crossed our CANCEL: take the call down at once.
                    self.bye(sip_out);
                    return LegEvent::None;
                }
                let answer = std::str::from_utf8(&resp.body).unwrap_or("");
                match self.local_sdp.accept_answer(answer) {
                    Ok(neg) => {
                        self.start_media(&neg, now);
                        self.state = LegState::Answered;
                        self.answered_at = Some(now);
                        LegEvent::Answered
                    }
                    Err(e) => {
                        tracing::warn!(agent = %self.agent, error = %e, "agent's SDP answer refused");
                        self.bye(sip_out);
                        LegEvent::Failed(488)
                    }
                }
            }
            status => {
                let was = self.state;
                self.state = LegState::Ended;
                if was == LegState::Cancelling {
                    LegEvent::None
                } else {
                    LegEvent::Failed(status)
                }
            }
        }
    }

    fn start_media(&mut self, neg: &Negotiated, now: Instant) {
        let mut media = MediaSession::new(
            neg,
            MediaConfig {
                inband_dtmf: InbandDtmf::Never,
                wall_clock: Some(std::time::SystemTime::now()),
                ..MediaConfig::default()
            },
            now,
        );
        media.set_relay(true);
        self.media = Some(media);
    }

    /// Stops ringing the agent.
    pub fn cancel(&mut self, sip_out: &mut Vec<SipCmd>) {
        if self.state == LegState::Ringing {
            sip_out.push(SipCmd::CancelInvite {
                call_id: self.call_id.clone(),
            });
            self.state = LegState::Cancelling;
        }
    }

    /// Ends an answered leg.
    pub fn bye(&mut self, sip_out: &mut Vec<SipCmd>) {
        if let Some(d) = self.dialog.as_mut() {
            let bye = d.request(Method::Bye);
            sip_out.push(SipCmd::Request {
                call_id: self.call_id.clone(),
                request: bye,
                to: self.peer,
            });
        }
        if let Some(m) = self.media.as_mut() {
            m.close(Instant::now());
        }
        self.state = LegState::Ended;
    }

    /// Hangs up whatever the state: CANCEL while ringing, BYE once answered.
    pub fn hang_up(&mut self, sip_out: &mut Vec<SipCmd>) {
        match self.state {
            LegState::Ringing => self.cancel(sip_out),
            LegState::Answered => self.bye(sip_out),
            LegState::Cancelling | LegState::Ended => {}
        }
    }

    /// A re-INVITE or UPDATE from the agent (hold / unhold): our answer, or None if refused.
    pub fn reoffer(&mut self, offer: &str, now: Instant) -> Option<Negotiated> {
        let neg = self.local_sdp.answer(offer).ok()?;
        if let Some(m) = self.media.as_mut() {
            m.update(&neg, now);
        }
        Some(neg)
    }

    /// Sends the NOTIFY (message/sipfrag) that tells the agent's phone how its REFER went.
    pub fn notify_refer(
        &mut self,
        refer_cseq: Option<u32>,
        status: u16,
        reason: &str,
        sip_out: &mut Vec<SipCmd>,
    ) {
        if let Some(d) = self.dialog.as_mut() {
            let notify = d.refer_notify(refer_cseq, status, reason);
            sip_out.push(SipCmd::Request {
                call_id: self.call_id.clone(),
                request: notify,
                to: self.peer,
            });
        }
    }

    /// The next RTP or RTCP packet on the leg's pair; `buf` is split between the two sockets.
    pub async fn recv(
        &self,
        buf: &mut [u8],
    ) -> std::io::Result<(verde_media::Socket, bytes::Bytes, std::net::SocketAddr)> {
        use verde_media::Socket;
        let (rtp_buf, rtcp_buf) = buf.split_at_mut(buf.len() / 2);
        tokio::select! {
            r = self.rtp.rtp.recv_from(rtp_buf) => r.map(|(n, f)| (Socket::Rtp, bytes::Bytes::copy_from_slice(&rtp_buf[..n]), f)),
            r = self.rtp.rtcp.recv_from(rtcp_buf) => r.map(|(n, f)| (Socket::Rtcp, bytes::Bytes::copy_from_slice(&rtcp_buf[..n]), f)),
        }
    }

    pub fn local_tag(&self) -> String {
        self.dialog
            .as_ref()
            .map(|d| d.local_tag().to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verde_sip::{Binding, Transport};

    fn binding(contact: &str, source: &str, transport: Transport) -> Binding {
        let now = Instant::now();
        Binding {
            contact: contact.into(),
            source: Peer {
                transport,
                addr: source.parse().unwrap(),
            },
            expires_at: now,
            registered_at: now,
            call_id: "c".into(),
            cseq: 1,
        }
    }

    #[test]
    fn invites_go_to_the_contact_only_when_it_is_the_registering_host() {
        let same_host = binding(
            "<sip:1001@127.0.0.1:5070>",
            "127.0.0.1:40000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&same_host).addr,
            "127.0.0.1:5070".parse().unwrap()
        );
        let natted = binding(
            "<sip:1001@192.168.1.10:5060>",
            "203.0.113.9:31000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&natted).addr,
            "203.0.113.9:31000".parse().unwrap()
        );
        let tcp = binding(
            "<sip:1001@127.0.0.1:5070;transport=tcp>",
            "127.0.0.1:40000",
            Transport::Tcp,
        );
        assert_eq!(delivery_peer(&tcp).addr, "127.0.0.1:40000".parse().unwrap());
        let hostname = binding(
            "<sip:1001@phone.example>",
            "127.0.0.1:40000",
            Transport::Udp,
        );
        assert_eq!(
            delivery_peer(&hostname).addr,
            "127.0.0.1:40000".parse().unwrap()
        );
    }
}
