//! RTP, RTCP and RFC 4733 telephone-events as a call leg receives them: datagrams with virtual
//! time between them go into `MediaSession::handle_packet` on either socket of a session with
//! a fixed negotiated SDP, from the negotiated address or a stranger (latching, takeover).
//! When the input asks, the leg is bridged to a second one (`bridge_step`), so received audio
//! and digits are relayed and re-sent, as in a B2BUA call. Asserts no panic, and that the
//! legs only ever send to a port-bearing address.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use verde_fuzz::records;
use verde_media::{
    bridge_step, Codec, Direction, InbandDtmf, MediaConfig, MediaSession, Negotiated, Socket,
};

/// Our SSRC, so seeded RTCP receiver reports can be about us (RTT path).
const OUR_SSRC: u32 = 0x5645_5244;

fuzz_target!(|data: &[u8]| {
    // First byte: session shape. Then records (see verde_fuzz::records).
    let Some((&shape, data)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let remote: SocketAddr = "192.0.2.10:20000".parse().unwrap();
    let stranger: SocketAddr = "198.51.100.7:31000".parse().unwrap();
    let codec = if shape & 1 == 0 {
        Codec::Pcma
    } else {
        Codec::Pcmu
    };
    let negotiated = Negotiated {
        answer: String::new(),
        codec,
        payload_type: codec.static_payload_type(),
        dtmf_pt: (shape & 2 == 0).then_some(101),
        remote,
        remote_rtcp: SocketAddr::new(remote.ip(), remote.port() + 1),
        direction: Direction::SendRecv,
    };
    let config = MediaConfig {
        ssrc: Some(OUR_SSRC),
        inband_dtmf: match (shape >> 2) & 3 {
            0 => InbandDtmf::Auto,
            1 => InbandDtmf::Always,
            _ => InbandDtmf::Never,
        },
        wall_clock: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)),
        audio_tap: shape & 0x10 != 0,
        ..MediaConfig::default()
    };
    let bridged = shape & 0x20 != 0;
    let mut a = MediaSession::new(&negotiated, config.clone(), now);
    let mut b = MediaSession::new(
        &Negotiated {
            remote: "203.0.113.5:40000".parse().unwrap(),
            remote_rtcp: "203.0.113.5:40001".parse().unwrap(),
            ..negotiated.clone()
        },
        MediaConfig {
            ssrc: Some(OUR_SSRC ^ 1),
            ..config
        },
        now,
    );
    a.set_relay(bridged);
    b.set_relay(bridged);

    for record in records(data) {
        now += record.advance;
        run_timers(&mut a, &mut b, bridged, now);
        let socket = if record.flags & 1 == 0 {
            Socket::Rtp
        } else {
            Socket::Rtcp
        };
        let from = if record.flags & 2 == 0 {
            remote
        } else {
            stranger
        };
        let leg = if record.flags & 4 == 0 {
            &mut a
        } else {
            &mut b
        };
        leg.handle_packet(socket, Bytes::copy_from_slice(record.data), from, now);
        if record.flags & 8 != 0 {
            let _ = a.send_dtmf('5', 120, now);
        }
        if record.flags & 0x10 != 0 {
            let dir = match record.flags >> 5 & 3 {
                0 => Direction::SendRecv,
                1 => Direction::SendOnly,
                2 => Direction::RecvOnly,
                _ => Direction::Inactive,
            };
            a.set_direction(dir);
        }
        if record.flags & 0x80 != 0 {
            a.restart_relay();
        }
        settle(&mut a, &mut b, bridged, now);
    }
    // Let jitter buffers, digits and RTCP run out.
    for _ in 0..8 {
        now += Duration::from_millis(500);
        run_timers(&mut a, &mut b, bridged, now);
    }
    let _ = (a.stats(), b.stats());
    a.close(now);
    b.close(now);
    drain(&mut a);
    drain(&mut b);
});

/// Fires what is due, as the binary's media task does at each deadline (bounded: a long jump
/// in virtual time must not cost thousands of 20 ms ticks).
fn run_timers(a: &mut MediaSession, b: &mut MediaSession, bridged: bool, now: Instant) {
    for _ in 0..64 {
        let due = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .filter(|&t| t <= now)
            .min();
        let Some(at) = due else {
            break;
        };
        a.handle_timeout(at);
        b.handle_timeout(at);
        settle(a, b, bridged, at);
    }
    a.handle_timeout(now);
    b.handle_timeout(now);
    settle(a, b, bridged, now);
}

fn settle(a: &mut MediaSession, b: &mut MediaSession, bridged: bool, now: Instant) {
    if bridged {
        bridge_step(a, b, now);
    }
    drain(a);
    drain(b);
}

fn drain(s: &mut MediaSession) {
    while let Some(t) = s.poll_transmit() {
        assert_ne!(t.to.port(), 0, "transmit to port 0");
    }
    while s.poll_event().is_some() {}
    while s.poll_audio().is_some() {}
    while s.poll_relay().is_some() {}
}
