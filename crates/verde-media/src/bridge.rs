//! Bridging two legs of one call (B2BUA): the caller's and the agent's [`MediaSession`]s,
//! owned by the same call task.
//!
//! There is no mixer and no extra clock: each relaying session queues what it receives, in
//! order after its jitter buffer, and [`bridge_step`] hands it at once to the other leg, which
//! sends it on its own RTP stream (see [`MediaSession::send_relay`]). Audio goes through
//! untouched when both legs use the same codec and is transcoded PCMU<->PCMA otherwise;
//! RFC 4733 digits are regenerated on the other leg with its telephone-event PT when the digit
//! ends (so they arrive about one digit-length late, with their duration), or dropped when that
//! leg has no telephone-event (they are still reported as [`crate::MediaEvent::Dtmf`]).
//!
//! Prompts played to a leg (whisper, announcements, music on hold during an agent's hold) take
//! precedence over relayed audio on that leg; relaying resumes when they end.

use std::time::Instant;

use crate::session::{MediaSession, Relay};

/// Moves everything pending in both directions between two relaying legs. Call it after every
/// input to either leg (`handle_packet`, `handle_timeout`, which may release packets held by a
/// jitter buffer), then drain `poll_transmit` on both. Both legs need
/// [`MediaSession::set_relay`]`(true)`; otherwise their side has nothing to move.
pub fn bridge_step(a: &mut MediaSession, b: &mut MediaSession, now: Instant) {
    forward(a, b, now);
    forward(b, a, now);
}

fn forward(from: &mut MediaSession, to: &mut MediaSession, now: Instant) {
    while let Some(item) = from.poll_relay() {
        match item {
            Relay::Audio(frame) => {
                to.send_relay(&frame, now);
            }
            Relay::Dtmf { digit, duration_ms } => {
                if !to.send_dtmf(digit, duration_ms, now) {
                    tracing::debug!(%digit, "digit not passed through: the other leg cannot take RFC 4733 now");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::dtmf::{rfc4733_packets, EventPayload};
    use crate::g711;
    use crate::rtp::{RtpPacket, RtpSender, FRAME_DURATION};
    use crate::sdp::{Codec, Direction, Negotiated};
    use crate::session::{DtmfSource, MediaConfig, MediaEvent, Socket};
    use crate::Prompt;

    const CALLER: &str = "198.51.100.7:30000";
    const AGENT: &str = "203.0.113.20:5004";

    fn negotiated(remote: &str, codec: Codec, dtmf_pt: Option<u8>) -> Negotiated {
        let remote: SocketAddr = remote.parse().unwrap();
        Negotiated {
            answer: String::new(),
            codec,
            payload_type: codec.static_payload_type(),
            dtmf_pt,
            remote,
            remote_rtcp: SocketAddr::new(remote.ip(), remote.port() + 1),
            direction: Direction::SendRecv,
        }
    }

    fn leg(
        remote: &str,
        codec: Codec,
        dtmf_pt: Option<u8>,
        ssrc: u32,
        t0: Instant,
    ) -> MediaSession {
        let cfg = MediaConfig {
            ssrc: Some(ssrc),
            rtcp_interval: Duration::from_secs(3600),
            ..MediaConfig::default()
        };
        let mut s = MediaSession::new(&negotiated(remote, codec, dtmf_pt), cfg, t0);
        s.set_relay(true);
        s
    }

    /// Caller leg A (PCMU, telephone-event 101) and agent leg B.
    fn legs(b_codec: Codec, b_dtmf: Option<u8>, t0: Instant) -> (MediaSession, MediaSession) {
        (
            leg(CALLER, Codec::Pcmu, Some(101), 0xAAAA, t0),
            leg(AGENT, b_codec, b_dtmf, 0xBBBB, t0),
        )
    }

    fn rtp_out(s: &mut MediaSession) -> Vec<(SocketAddr, RtpPacket)> {
        std::iter::from_fn(|| s.poll_transmit())
            .filter(|t| t.socket == Socket::Rtp)
            .map(|t| (t.to, RtpPacket::parse(&t.bytes).unwrap()))
            .collect()
    }

    fn speech(n: usize, seed: u32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i as u32 + seed * 7) as f32 / 8000.0;
                (7000.0 * (2.0 * std::f32::consts::PI * 310.0 * t).sin()
                    + 2500.0 * (2.0 * std::f32::consts::PI * 1870.0 * t).sin())
                    as i16
            })
            .collect()
    }

    fn ulaw_frame(seed: u32) -> Vec<u8> {
        let mut out = Vec::new();
        g711::encode_ulaw(&speech(160, seed), &mut out);
        out
    }

    #[test]
    fn same_codec_is_forwarded_byte_identical_on_the_other_legs_stream() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, Some(101), t0);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut phone = RtpSender::new(0xC0FFEE, 0, 65530, 4_294_960_000, t0);
        phone.start_talkspurt(t0);
        let mut sent = vec![];
        let mut got = vec![];
        for i in 0..12u32 {
            let payload = ulaw_frame(i);
            let now = t0 + FRAME_DURATION * i;
            a.handle_packet(
                Socket::Rtp,
                phone.build_frame(&payload).unwrap(),
                caller,
                now,
            );
            bridge_step(&mut a, &mut b, now);
            let out = rtp_out(&mut b);
            assert_eq!(out.len(), 1, "frame {i} relayed at once");
            sent.push(payload);
            got.push(out.into_iter().next().unwrap());
        }
        assert!(
            rtp_out(&mut a).is_empty(),
            "nothing echoed back to the caller"
        );
        for (i, (to, p)) in got.iter().enumerate() {
            assert_eq!(*to, AGENT.parse::<SocketAddr>().unwrap());
            assert_eq!(&p.payload[..], &sent[i][..], "payload {i}");
            assert_eq!((p.ssrc, p.payload_type), (0xBBBB, 0));
            assert_eq!(p.marker, i == 0, "marker {i}");
            if i > 0 {
                let prev = &got[i - 1].1;
                assert_eq!(p.sequence, prev.sequence.wrapping_add(1));
                assert_eq!(p.timestamp, prev.timestamp.wrapping_add(160));
            }
        }
        // Our sequence space is B's own, not the phone's (which wrapped at 65535).
        assert_eq!(
            got[11].1.sequence.wrapping_sub(got[0].1.sequence),
            11,
            "no jump where the source wrapped"
        );
        assert_eq!(b.stats().packets_sent, 12);

        // A 1 s silence gap on the source (VAD: marker set, timestamps jump): ours jumps the same.
        phone.end_talkspurt();
        let later = t0 + Duration::from_millis(1240);
        phone.start_talkspurt(later);
        let pkt = phone.build_frame(&ulaw_frame(99)).unwrap();
        let src_gap = RtpPacket::parse(&pkt)
            .unwrap()
            .timestamp
            .wrapping_sub(4_294_960_000 + 11 * 160);
        a.handle_packet(Socket::Rtp, pkt, caller, later);
        bridge_step(&mut a, &mut b, later);
        let (_, after) = rtp_out(&mut b).pop().unwrap();
        assert!(after.marker);
        assert_eq!(after.sequence, got[11].1.sequence.wrapping_add(1));
        assert_eq!(after.timestamp.wrapping_sub(got[11].1.timestamp), src_gap);
        assert_eq!(src_gap, 8000 + 160);

        // A gap without a marker (lost packets) keeps the source's spacing too.
        let mut lossy = RtpPacket::parse(&phone.build_frame(&ulaw_frame(1)).unwrap()).unwrap();
        for _ in 0..3 {
            lossy = RtpPacket::parse(&phone.build_frame(&ulaw_frame(2)).unwrap()).unwrap();
        }
        let bytes = RtpSender::new(0xC0FFEE, 0, lossy.sequence, 0, t0).build(
            0,
            false,
            lossy.timestamp,
            &lossy.payload,
        );
        let at = later + Duration::from_millis(80);
        a.handle_packet(Socket::Rtp, bytes, caller, at);
        // The jitter buffer waits for the missing packets, then gives up on them.
        a.handle_timeout(at + Duration::from_millis(60));
        bridge_step(&mut a, &mut b, at + Duration::from_millis(60));
        let (_, p) = rtp_out(&mut b).pop().unwrap();
        assert_eq!(p.timestamp.wrapping_sub(after.timestamp), 4 * 160);
        assert!(!p.marker);
    }

    #[test]
    fn relay_goes_out_when_received_not_on_the_pacer_grid() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, Some(101), t0);
        // B is also playing nothing and has an RTCP timer far away: nothing else to wait for.
        let mut agent_phone = RtpSender::new(0x5EED, 0, 1, 1, t0);
        agent_phone.start_talkspurt(t0);
        let agent: SocketAddr = AGENT.parse().unwrap();
        for (i, ms) in [3u64, 27, 41, 66, 79].into_iter().enumerate() {
            let now = t0 + Duration::from_millis(ms);
            b.handle_packet(
                Socket::Rtp,
                agent_phone.build_frame(&ulaw_frame(i as u32)).unwrap(),
                agent,
                now,
            );
            bridge_step(&mut a, &mut b, now);
            // Transmitted in the same instant, before any timer.
            assert_eq!(rtp_out(&mut a).len(), 1, "packet received at {ms} ms");
            assert!(a.poll_timeout().is_none_or(|t| t > now));
        }
    }

    #[test]
    fn reordered_input_is_relayed_in_order() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, None, t0);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut phone = RtpSender::new(7, 0, 10, 0, t0);
        phone.start_talkspurt(t0);
        let pkts: Vec<Bytes> = (0..4)
            .map(|i| phone.build_frame(&[i as u8 + 1; 160]).unwrap())
            .collect();
        let mut order = vec![];
        for i in [0usize, 2, 1, 3] {
            a.handle_packet(Socket::Rtp, pkts[i].clone(), caller, t0);
            bridge_step(&mut a, &mut b, t0);
            order.extend(rtp_out(&mut b).into_iter().map(|(_, p)| p.payload[0]));
        }
        assert_eq!(order, vec![1, 2, 3, 4]);
    }

    #[test]
    fn pcmu_and_pcma_legs_are_transcoded_both_ways() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcma, Some(101), t0);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let agent: SocketAddr = AGENT.parse().unwrap();
        let mut caller_phone = RtpSender::new(1, 0, 0, 0, t0);
        let mut agent_phone = RtpSender::new(2, 8, 0, 0, t0);
        caller_phone.start_talkspurt(t0);
        agent_phone.start_talkspurt(t0);
        let pcm = speech(160, 3);
        let (mut ulaw, mut alaw) = (vec![], vec![]);
        g711::encode_ulaw(&pcm, &mut ulaw);
        g711::encode_alaw(&pcm, &mut alaw);

        a.handle_packet(
            Socket::Rtp,
            caller_phone.build_frame(&ulaw).unwrap(),
            caller,
            t0,
        );
        b.handle_packet(
            Socket::Rtp,
            agent_phone.build_frame(&alaw).unwrap(),
            agent,
            t0,
        );
        bridge_step(&mut a, &mut b, t0);
        let (_, to_agent) = rtp_out(&mut b).pop().unwrap();
        let (_, to_caller) = rtp_out(&mut a).pop().unwrap();
        assert_eq!((to_agent.payload_type, to_caller.payload_type), (8, 0));

        let (mut heard_by_agent, mut caller_said) = (vec![], vec![]);
        g711::decode_alaw(&to_agent.payload, &mut heard_by_agent);
        g711::decode_ulaw(&ulaw, &mut caller_said);
        let (mut heard_by_caller, mut agent_said) = (vec![], vec![]);
        g711::decode_ulaw(&to_caller.payload, &mut heard_by_caller);
        g711::decode_alaw(&alaw, &mut agent_said);
        for (heard, said, law) in [
            (&heard_by_agent, &caller_said, "ulaw->alaw"),
            (&heard_by_caller, &agent_said, "alaw->ulaw"),
        ] {
            assert_eq!(heard.len(), 160);
            for (i, (&h, &s)) in heard.iter().zip(said.iter()).enumerate() {
                // Within half a quantisation step of the coarser law at that level (~3%).
                let tolerance = (i32::from(s).abs() / 16).max(16);
                assert!(
                    (i32::from(h) - i32::from(s)).abs() <= tolerance,
                    "{law} sample {i}: {h} vs {s}"
                );
            }
        }
        // And exactly what decode-then-encode gives.
        let mut reencoded = vec![];
        g711::encode_alaw(&caller_said, &mut reencoded);
        assert_eq!(&to_agent.payload[..], &reencoded[..]);
    }

    fn send_digit(
        a: &mut MediaSession,
        b: &mut MediaSession,
        digit: char,
        pt: u8,
        t0: Instant,
    ) -> Vec<(Instant, RtpPacket)> {
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut phone = RtpSender::new(0x77, 0, 1, 40_000, t0);
        let mut out = vec![];
        for p in rfc4733_packets(digit, 100, 10).unwrap() {
            let now = t0 + p.offset;
            a.handle_packet(
                Socket::Rtp,
                phone.build(pt, p.marker, 40_000, &p.payload),
                caller,
                now,
            );
            bridge_step(a, b, now);
            out.extend(rtp_out(b).into_iter().map(|(_, p)| (now, p)));
        }
        while let Some(now) = b
            .poll_timeout()
            .filter(|t| *t < t0 + Duration::from_secs(2))
        {
            b.handle_timeout(now);
            bridge_step(a, b, now);
            out.extend(rtp_out(b).into_iter().map(|(_, p)| (now, p)));
        }
        out
    }

    #[test]
    fn rfc4733_digit_on_a_is_regenerated_on_b_with_bs_payload_type() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, Some(96), t0);
        let out = send_digit(&mut a, &mut b, '7', 101, t0);
        assert_eq!(
            a.poll_event(),
            Some(MediaEvent::Dtmf {
                digit: '7',
                duration_ms: 100,
                source: DtmfSource::Rfc4733
            })
        );
        assert!(!out.is_empty());
        assert!(out
            .iter()
            .all(|(_, p)| p.payload_type == 96 && p.ssrc == 0xBBBB));
        assert!(out[0].1.marker);
        let ends: Vec<_> = out
            .iter()
            .filter(|(_, p)| EventPayload::parse(&p.payload).unwrap().end)
            .collect();
        assert_eq!(ends.len(), 3);
        // The agent's phone decodes the same digit and duration.
        let mut agent_phone = leg(CALLER, Codec::Pcmu, Some(96), 0x1, t0);
        let agent_side: SocketAddr = "192.0.2.10:40000".parse().unwrap();
        for (at, p) in &out {
            let bytes = RtpSender::new(p.ssrc, 0, p.sequence, 0, t0).build(
                p.payload_type,
                p.marker,
                p.timestamp,
                &p.payload,
            );
            agent_phone.handle_packet(Socket::Rtp, bytes, agent_side, *at);
        }
        let digits: Vec<_> = std::iter::from_fn(|| agent_phone.poll_event())
            .filter(|e| matches!(e, MediaEvent::Dtmf { .. }))
            .collect();
        assert_eq!(
            digits,
            vec![MediaEvent::Dtmf {
                digit: '7',
                duration_ms: 100,
                source: DtmfSource::Rfc4733
            }]
        );
    }

    #[test]
    fn digit_is_only_reported_when_the_other_leg_has_no_telephone_event() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, None, t0);
        let out = send_digit(&mut a, &mut b, '3', 101, t0);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            a.poll_event(),
            Some(MediaEvent::Dtmf {
                digit: '3',
                duration_ms: 100,
                source: DtmfSource::Rfc4733
            })
        );
    }

    #[test]
    fn hold_stops_relay_to_the_held_leg_and_moh_takes_precedence() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, Some(101), t0);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let agent: SocketAddr = AGENT.parse().unwrap();
        let mut caller_phone = RtpSender::new(1, 0, 0, 0, t0);
        let mut agent_phone = RtpSender::new(2, 0, 0, 0, t0);
        caller_phone.start_talkspurt(t0);
        agent_phone.start_talkspurt(t0);

        // The agent puts the caller on hold: re-INVITE a=sendonly, we answer recvonly.
        let mut held = negotiated(AGENT, Codec::Pcmu, Some(101));
        held.direction = Direction::RecvOnly;
        b.update(&held, t0);
        // The binary plays music on hold to the caller.
        let moh = Arc::new(Prompt::from_pcm(speech(1600, 5)));
        a.play_loop(moh.clone(), t0);

        let mut to_caller = vec![];
        for i in 0..25u32 {
            let now = t0 + FRAME_DURATION * i;
            a.handle_packet(
                Socket::Rtp,
                caller_phone.build_frame(&ulaw_frame(i)).unwrap(),
                caller,
                now,
            );
            // The agent's phone keeps sending (its own hold music, say).
            b.handle_packet(
                Socket::Rtp,
                agent_phone.build_frame(&[0x55; 160]).unwrap(),
                agent,
                now,
            );
            a.handle_timeout(now);
            bridge_step(&mut a, &mut b, now);
            assert!(rtp_out(&mut b).is_empty(), "nothing sent to the held agent");
            to_caller.extend(rtp_out(&mut a));
        }
        assert_eq!(to_caller.len(), 25);
        let heard: Vec<u8> = to_caller
            .iter()
            .flat_map(|(_, p)| p.payload.to_vec())
            .collect();
        assert_eq!(
            &heard[..],
            &moh.ulaw
                .iter()
                .copied()
                .cycle()
                .take(heard.len())
                .collect::<Vec<_>>()[..]
        );
        assert!(!b.send_dtmf('1', 100, t0), "no digits to a held leg either");

        // Unhold: relay resumes both ways, each leg's stream marks the new talkspurt.
        b.update(
            &negotiated(AGENT, Codec::Pcmu, Some(101)),
            t0 + Duration::from_millis(500),
        );
        a.stop_playback(t0 + Duration::from_millis(500));
        let now = t0 + Duration::from_millis(520);
        a.handle_packet(
            Socket::Rtp,
            caller_phone.build_frame(&ulaw_frame(1)).unwrap(),
            caller,
            now,
        );
        b.handle_packet(
            Socket::Rtp,
            agent_phone.build_frame(&[0x55; 160]).unwrap(),
            agent,
            now,
        );
        bridge_step(&mut a, &mut b, now);
        let (_, to_agent) = rtp_out(&mut b).pop().unwrap();
        let (_, back) = rtp_out(&mut a).pop().unwrap();
        assert!(to_agent.marker && back.marker);
        assert_eq!(
            back.sequence,
            to_caller.last().unwrap().1.sequence.wrapping_add(1)
        );
        assert!(
            back.timestamp
                .wrapping_sub(to_caller.last().unwrap().1.timestamp)
                >= 160
        );
        assert_eq!(&back.payload[..], &[0x55; 160][..]);
    }

    #[test]
    fn relay_is_off_until_enabled() {
        let t0 = Instant::now();
        let (mut a, mut b) = legs(Codec::Pcmu, Some(101), t0);
        a.set_relay(false);
        let mut phone = RtpSender::new(1, 0, 0, 0, t0);
        phone.start_talkspurt(t0);
        a.handle_packet(
            Socket::Rtp,
            phone.build_frame(&[1; 160]).unwrap(),
            CALLER.parse().unwrap(),
            t0,
        );
        assert!(a.poll_relay().is_none());
        bridge_step(&mut a, &mut b, t0);
        assert!(rtp_out(&mut b).is_empty());
    }
}
