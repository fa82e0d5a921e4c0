//! RTP sending and receiving pieces for 8 kHz, 20 ms G.711 streams, plus minimal RTCP.
//!
//! Packets are built and parsed with `rtp-rs`; RTCP (RFC 3550 §6) is small enough to be
//! written by hand. Nothing here decides *when* to send: [`crate::MediaSession`] does, using
//! [`RtpSender::next_due`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

/// Samples in one 20 ms frame at 8 kHz.
pub const SAMPLES_PER_FRAME: usize = 160;
/// Packetisation interval.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
const CLOCK_RATE: u128 = 8000;

fn samples_between(from: Instant, to: Instant) -> u32 {
    // Truncation to u32 is the RTP timestamp wrap, which is what we want.
    (to.saturating_duration_since(from).as_nanos() * CLOCK_RATE / 1_000_000_000) as u32
}

struct Talkspurt {
    origin: Instant,
    first_ts: u32,
    frames: u64,
}

/// Builds outgoing RTP packets and keeps their timing honest.
///
/// Within a talkspurt, frame `n` is due at `origin + n * 20 ms` and carries timestamp
/// `first_ts + 160 n`: computed from a fixed origin so that a late caller never accumulates
/// drift. Between talkspurts nothing is sent, but the next talkspurt's timestamp is derived
/// from the time elapsed since the sender was created, so the receiver sees the real gap.
pub struct RtpSender {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    clock_origin: Instant,
    ts_at_origin: u32,
    last_ts: Option<u32>,
    spurt: Option<Talkspurt>,
    packets_sent: u32,
    octets_sent: u32,
}

impl RtpSender {
    /// A sender with explicit SSRC, first sequence number and timestamp at `now`.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16, first_ts: u32, now: Instant) -> Self {
        RtpSender {
            ssrc,
            payload_type,
            seq: first_seq,
            clock_origin: now,
            ts_at_origin: first_ts,
            last_ts: None,
            spurt: None,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// A sender with random SSRC, sequence number and timestamp (RFC 3550 §5.1).
    pub fn random(payload_type: u8, now: Instant) -> Self {
        Self::new(
            rand::random(),
            payload_type,
            rand::random(),
            rand::random(),
            now,
        )
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// The RTP timestamp that corresponds to `now` on our media clock (for RTCP SR).
    pub fn timestamp_at(&self, now: Instant) -> u32 {
        self.ts_at_origin
            .wrapping_add(samples_between(self.clock_origin, now))
    }

    /// The timestamp for something that starts at `now` outside the current talkspurt (a new
    /// talkspurt, a relayed stream, a DTMF event): the media clock, but never stepping back
    /// or repeating a timestamp already sent when it resumes within one frame.
    pub fn fresh_timestamp(&self, now: Instant) -> u32 {
        let ts = self.timestamp_at(now);
        match self.last_ts {
            Some(last) => {
                let min = last.wrapping_add(SAMPLES_PER_FRAME as u32);
                if (ts.wrapping_sub(min) as i32) < 0 {
                    min
                } else {
                    ts
                }
            }
            None => ts,
        }
    }

    /// Whether a talkspurt is in progress.
    pub fn in_talkspurt(&self) -> bool {
        self.spurt.is_some()
    }

    /// Starts a talkspurt whose first frame is due at `now`. No-op if one is running.
    pub fn start_talkspurt(&mut self, now: Instant) {
        if self.spurt.is_some() {
            return;
        }
        let first_ts = self.fresh_timestamp(now);
        self.spurt = Some(Talkspurt {
            origin: now,
            first_ts,
            frames: 0,
        });
    }

    /// Ends the talkspurt; the next packet will carry the marker bit.
    pub fn end_talkspurt(&mut self) {
        self.spurt = None;
    }

    /// When the next frame of the current talkspurt is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.spurt.as_ref().map(|s| {
            // u32 frames cover 2.7 years of 20 ms frames; the multiply is exact.
            s.origin + FRAME_DURATION * s.frames as u32
        })
    }

    /// Builds the next frame's packet of the current talkspurt (call when `next_due() <= now`).
    /// Returns `None` outside a talkspurt.
    pub fn build_frame(&mut self, payload: &[u8]) -> Option<Bytes> {
        let spurt = self.spurt.as_mut()?;
        let ts = spurt
            .first_ts
            .wrapping_add((spurt.frames as u32).wrapping_mul(SAMPLES_PER_FRAME as u32));
        let marker = spurt.frames == 0;
        spurt.frames += 1;
        let pt = self.payload_type;
        Some(self.build(pt, marker, ts, payload))
    }

    /// Builds any packet on this stream (e.g. RFC 4733 events), consuming a sequence number.
    pub fn build(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Bytes {
        let packet = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .marked(marker)
            .sequence(Seq::from(self.seq))
            .ssrc(self.ssrc)
            .timestamp(timestamp)
            .payload(payload)
            .build()
            .expect("payload type < 128 and no CSRCs: the builder cannot fail");
        self.seq = self.seq.wrapping_add(1);
        self.last_ts = Some(timestamp);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload.len() as u32);
        Bytes::from(packet)
    }
}

/// A parsed RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Bytes,
}

impl RtpPacket {
    /// Parses an RTP packet; `None` for anything that is not version 2 RTP.
    pub fn parse(bytes: &Bytes) -> Option<RtpPacket> {
        let r = RtpReader::new(bytes).ok()?;
        if r.version() != 2 {
            return None;
        }
        let start = r.payload_offset();
        let len = r.payload().len();
        Some(RtpPacket {
            payload_type: r.payload_type(),
            marker: r.mark(),
            sequence: u16::from(r.sequence_number()),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
            payload: bytes.slice(start..start + len),
        })
    }
}

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// Per-source reception statistics (RFC 3550 A.1, A.3 and A.8).
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i64>,
    jitter: f64,
    arrival_origin: Instant,
}

impl ReceiveStats {
    pub fn new(ssrc: u32, first_seq: u16, now: Instant) -> Self {
        ReceiveStats {
            ssrc,
            base_seq: u32::from(first_seq),
            max_seq: first_seq,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            arrival_origin: now,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Records a packet; returns its extended sequence number, or `None` if it looks like a
    /// stale duplicate or a restart (after which the counters start over).
    pub fn update(
        &mut self,
        seq: u16,
        timestamp: u32,
        jitter_sample: bool,
        now: Instant,
    ) -> Option<u64> {
        let udelta = seq.wrapping_sub(self.max_seq);
        let ext = if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
            u64::from(self.cycles) + u64::from(seq)
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A big jump: the sender restarted its sequence. Start over from here.
            *self = ReceiveStats::new(self.ssrc, seq, self.arrival_origin);
            self.max_seq = seq;
            u64::from(seq)
        } else {
            // Reordered (slightly older) packet.
            let back = u64::from(self.max_seq.wrapping_sub(seq));
            let ext_max = u64::from(self.cycles) + u64::from(self.max_seq);
            ext_max.checked_sub(back)?
        };
        self.received += 1;
        if jitter_sample {
            let arrival = i64::from(samples_between(self.arrival_origin, now));
            let transit = arrival - i64::from(timestamp as i32);
            if let Some(prev) = self.transit {
                // Transit differences are taken modulo 2^32 so a timestamp wrap is harmless.
                let d = ((transit - prev) as i32).unsigned_abs() as f64;
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.transit = Some(transit);
        }
        Some(ext)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    pub fn expected(&self) -> u64 {
        (u64::from(self.cycles) + u64::from(self.max_seq) + 1)
            .saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative packets lost (may be negative with duplicates, as in RFC 3550).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units (1/8000 s).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Builds a report block and starts a new fraction-lost interval.
    pub fn report_block(&mut self, lsr: u32, dlsr: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: self.extended_max(),
            jitter: self.jitter as u32,
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        }
    }
}

/// Reorders packets by extended sequence number, holding a packet at most `depth` while an
/// earlier one is missing. In-order packets come out at once: this is a reorder buffer for
/// detection and recording, not a playout buffer.
pub struct JitterBuffer {
    depth: Duration,
    capacity: usize,
    next: Option<u64>,
    packets: BTreeMap<u64, (Instant, RtpPacket)>,
    dropped_late: u64,
    skipped: u64,
}

impl JitterBuffer {
    pub fn new(depth: Duration) -> Self {
        let capacity = (depth.as_millis() / FRAME_DURATION.as_millis()).max(1) as usize;
        JitterBuffer {
            depth,
            capacity,
            next: None,
            packets: BTreeMap::new(),
            dropped_late: 0,
            skipped: 0,
        }
    }

    /// Forgets the sequence state (new source).
    pub fn reset(&mut self) {
        self.next = None;
        self.packets.clear();
    }

    pub fn push(&mut self, ext_seq: u64, packet: RtpPacket, now: Instant) {
        match self.next {
            Some(next) if ext_seq + 1000 < next || ext_seq > next + 1000 => self.reset(),
            Some(next) if ext_seq < next => {
                self.dropped_late += 1;
                return;
            }
            _ => {}
        }
        self.next.get_or_insert(ext_seq);
        self.packets.entry(ext_seq).or_insert((now, packet));
    }

    /// The next packet in order, if one is ready at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<RtpPacket> {
        let (&first, (arrived, _)) = self.packets.first_key_value()?;
        let next = self.next.unwrap_or(first);
        if first != next {
            let waited_enough = now.saturating_duration_since(*arrived) >= self.depth;
            if !waited_enough && self.packets.len() <= self.capacity {
                return None;
            }
            self.skipped += first - next;
        }
        let (_, (_, packet)) = self.packets.pop_first()?;
        self.next = Some(first + 1);
        Some(packet)
    }

    /// When the head-of-line gap will be given up on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (&first, (arrived, _)) = self.packets.first_key_value()?;
        (Some(first) != self.next).then(|| *arrived + self.depth)
    }

    pub fn dropped_late(&self) -> u64 {
        self.dropped_late
    }

    /// Sequence numbers given up on as lost.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// One RTCP report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

/// What we understood of an incoming RTCP compound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_timestamp: u32,
        packets: u32,
        octets: u32,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    Bye {
        ssrcs: Vec<u32>,
    },
    /// SDES, APP, feedback...: recognised as RTCP, not interpreted.
    Other {
        packet_type: u8,
    },
}

/// Sender information for an SR.
#[derive(Debug, Clone, Copy)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

fn put_report(buf: &mut BytesMut, rb: &ReportBlock) {
    buf.put_u32(rb.ssrc);
    buf.put_u32((u32::from(rb.fraction_lost) << 24) | (rb.cumulative_lost as u32 & 0x00FF_FFFF));
    buf.put_u32(rb.extended_highest_seq);
    buf.put_u32(rb.jitter);
    buf.put_u32(rb.last_sr);
    buf.put_u32(rb.delay_since_last_sr);
}

/// Builds a compound RTCP packet: SR (with `sender`) or RR, then SDES CNAME (RFC 3550 §6.1).
pub fn build_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    report: Option<ReportBlock>,
    cname: &str,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    let rc = u8::from(report.is_some());
    let (pt, words) = match sender {
        Some(_) => (200u8, 6 + 6 * u16::from(rc)),
        None => (201u8, 1 + 6 * u16::from(rc)),
    };
    buf.put_u8(0x80 | rc);
    buf.put_u8(pt);
    buf.put_u16(words);
    buf.put_u32(ssrc);
    if let Some(s) = sender {
        buf.put_u64(s.ntp);
        buf.put_u32(s.rtp_timestamp);
        buf.put_u32(s.packets);
        buf.put_u32(s.octets);
    }
    if let Some(rb) = &report {
        put_report(&mut buf, rb);
    }
    put_sdes(&mut buf, ssrc, cname);
    buf.freeze()
}

fn put_sdes(buf: &mut BytesMut, ssrc: u32, cname: &str) {
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    // ssrc + item type + length + text + at least one terminating null, padded to 32 bits.
    let chunk = 4 + 2 + cname.len();
    let padded = (chunk + 1).div_ceil(4) * 4;
    buf.put_u8(0x81);
    buf.put_u8(202);
    buf.put_u16((padded / 4) as u16);
    buf.put_u32(ssrc);
    buf.put_u8(1);
    buf.put_u8(cname.len() as u8);
    buf.put_slice(cname);
    buf.put_bytes(0, padded - chunk);
}

/// Builds an RTCP BYE (preceded by an RR, as a compound packet must start with a report).
pub fn build_bye(ssrc: u32, cname: &str) -> Bytes {
    let mut buf = BytesMut::from(&build_report(ssrc, None, None, cname)[..]);
    buf.put_u8(0x81);
    buf.put_u8(203);
    buf.put_u16(1);
    buf.put_u32(ssrc);
    buf.freeze()
}

/// Error for RTCP that is not RTCP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid RTCP: {0}")]
pub struct RtcpError(&'static str);

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_reports(body: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    if body.len() < count * 24 {
        return Err(RtcpError("report blocks exceed packet"));
    }
    Ok((0..count)
        .map(|i| {
            let b = &body[i * 24..];
            let lost_word = be32(b, 4);
            // Sign-extend the 24-bit cumulative loss.
            let cumulative_lost = ((lost_word << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: (lost_word >> 24) as u8,
                cumulative_lost,
                extended_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect())
}

/// Parses a compound RTCP packet. Validation follows RFC 3550 A.2 loosely: version 2, lengths
/// that add up; anything else is an error, never a panic.
pub fn parse_rtcp(bytes: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    if rest.len() < 4 {
        return Err(RtcpError("too short"));
    }
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtcpError("trailing bytes"));
        }
        if rest[0] >> 6 != 2 {
            return Err(RtcpError("not version 2"));
        }
        let count = usize::from(rest[0] & 0x1F);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(RtcpError("length exceeds datagram"));
        }
        let pkt = &rest[..len];
        let body = &pkt[4..];
        match pt {
            200 => {
                if body.len() < 24 {
                    return Err(RtcpError("short SR"));
                }
                out.push(RtcpPacket::SenderReport {
                    ssrc: be32(body, 0),
                    ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packets: be32(body, 16),
                    octets: be32(body, 20),
                    reports: parse_reports(&body[24..], count)?,
                });
            }
            201 => {
                if body.len() < 4 {
                    return Err(RtcpError("short RR"));
                }
                out.push(RtcpPacket::ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: parse_reports(&body[4..], count)?,
                });
            }
            203 => {
                if body.len() < count * 4 {
                    return Err(RtcpError("short BYE"));
                }
                out.push(RtcpPacket::Bye {
                    ssrcs: (0..count).map(|i| be32(body, i * 4)).collect(),
                });
            }
            192..=223 => out.push(RtcpPacket::Other { packet_type: pt }),
            _ => return Err(RtcpError("unknown packet type")),
        }
        rest = &rest[len..];
    }
    Ok(out)
}

/// Converts a wall-clock time to a 64-bit NTP timestamp.
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> RtpPacket {
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 1,
            payload: Bytes::from_static(&[0xFF; 4]),
        }
    }

    #[test]
    fn sender_builds_parseable_packets_with_marker_on_first() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(0xDEAD_BEEF, 8, 65534, 4_294_967_000, t0);
        assert!(s.build_frame(&[0; 160]).is_none(), "no talkspurt yet");
        s.start_talkspurt(t0);
        let a = RtpPacket::parse(&s.build_frame(&[1; 160]).unwrap()).unwrap();
        let b = RtpPacket::parse(&s.build_frame(&[2; 160]).unwrap()).unwrap();
        let c = RtpPacket::parse(&s.build_frame(&[3; 160]).unwrap()).unwrap();
        assert_eq!((a.ssrc, a.payload_type, a.marker), (0xDEAD_BEEF, 8, true));
        assert!(!b.marker && !c.marker);
        assert_eq!([a.sequence, b.sequence, c.sequence], [65534, 65535, 0]);
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(160));
        assert_eq!(c.timestamp, a.timestamp.wrapping_add(320), "wraps");
        assert_eq!(&c.payload[..], &[3; 160][..]);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(60)));
        assert_eq!((s.packets_sent(), s.octets_sent()), (3, 480));
    }

    #[test]
    fn timestamps_follow_elapsed_time_across_idle_gaps() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(1, 0, 0, 1000, t0);
        s.start_talkspurt(t0 + Duration::from_millis(100));
        let first = RtpPacket::parse(&s.build_frame(&[0; 160]).unwrap()).unwrap();
        assert_eq!(first.timestamp, 1000 + 800);
        s.end_talkspurt();
        s.start_talkspurt(t0 + Duration::from_secs(3));
        let later = RtpPacket::parse(&s.build_frame(&[0; 160]).unwrap()).unwrap();
        assert!(later.marker);
        assert_eq!(later.timestamp, 1000 + 24_000);
        assert_eq!(later.sequence, first.sequence + 1, "seq has no gap");
        // Resuming immediately must not repeat the last timestamp.
        s.end_talkspurt();
        s.start_talkspurt(t0 + Duration::from_secs(3));
        let again = RtpPacket::parse(&s.build_frame(&[0; 160]).unwrap()).unwrap();
        assert_eq!(again.timestamp, later.timestamp + 160);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(RtpPacket::parse(&Bytes::from_static(b"hello")).is_none());
        assert!(RtpPacket::parse(&Bytes::from_static(&[0x40; 20])).is_none());
    }

    #[test]
    fn stats_count_loss_and_wrap() {
        let t0 = Instant::now();
        let mut st = ReceiveStats::new(7, 65530, t0);
        let mut exts = vec![];
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3] {
            exts.push(st.update(seq, 0, false, t0).unwrap());
        }
        assert_eq!(exts.last(), Some(&(65536 + 3)));
        assert_eq!(st.expected(), 10);
        assert_eq!(st.received(), 7);
        assert_eq!(st.lost(), 3);
        // A late packet fills a hole.
        assert_eq!(st.update(2, 0, false, t0), Some(65536 + 2));
        assert_eq!(st.lost(), 2);
        let rb = st.report_block(0, 0);
        assert_eq!(rb.cumulative_lost, 2);
        assert_eq!(rb.fraction_lost, (2 * 256 / 10) as u8);
        assert_eq!(rb.extended_highest_seq, 65536 + 3);
    }

    #[test]
    fn jitter_zero_for_perfect_timing_and_positive_for_jittery() {
        let t0 = Instant::now();
        let mut perfect = ReceiveStats::new(1, 0, t0);
        let mut jittery = ReceiveStats::new(1, 0, t0);
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            perfect.update(i as u16, i * 160, true, at);
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            jittery.update(i as u16, i * 160, true, at + Duration::from_millis(wobble));
        }
        assert!(perfect.jitter() < 1.0, "{}", perfect.jitter());
        // Alternating 10 ms (80 samples) deviation converges to ~80.
        assert!(
            jittery.jitter() > 60.0 && jittery.jitter() < 90.0,
            "{}",
            jittery.jitter()
        );
    }

    #[test]
    fn jitter_buffer_reorders_and_gives_up_after_depth() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(10, pkt(10), t0);
        assert_eq!(jb.pop(t0).unwrap().sequence, 10);
        jb.push(12, pkt(12), t0);
        assert!(jb.pop(t0).is_none(), "waits for 11");
        assert_eq!(jb.poll_timeout(), Some(t0 + Duration::from_millis(60)));
        jb.push(11, pkt(11), t0 + Duration::from_millis(5));
        assert_eq!(jb.pop(t0).unwrap().sequence, 11);
        assert_eq!(jb.pop(t0).unwrap().sequence, 12);
        // 13 never arrives.
        jb.push(14, pkt(14), t0);
        assert!(jb.pop(t0 + Duration::from_millis(59)).is_none());
        assert_eq!(jb.pop(t0 + Duration::from_millis(60)).unwrap().sequence, 14);
        assert_eq!(jb.skipped(), 1);
        // 13 arriving now is too late.
        jb.push(13, pkt(13), t0 + Duration::from_millis(70));
        assert_eq!(jb.dropped_late(), 1);
        assert!(jb.pop(t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn jitter_buffer_is_bounded() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push(1, pkt(1), t0);
        jb.pop(t0);
        for s in 3..=6 {
            jb.push(s, pkt(s as u16), t0);
        }
        // 4 packets > 3-frame capacity: give up on 2 without waiting.
        assert_eq!(jb.pop(t0).unwrap().sequence, 3);
    }

    #[test]
    fn rtcp_round_trip() {
        let rb = ReportBlock {
            ssrc: 9,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_highest_seq: 70000,
            jitter: 44,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        };
        let info = SenderInfo {
            ntp: ntp_from_unix(Duration::from_secs(1_700_000_000)),
            rtp_timestamp: 5,
            packets: 6,
            octets: 960,
        };
        let sr = build_report(1, Some(info), Some(rb), "verde@example");
        assert_eq!(sr.len() % 4, 0);
        let parsed = parse_rtcp(&sr).unwrap();
        assert_eq!(
            parsed[0],
            RtcpPacket::SenderReport {
                ssrc: 1,
                ntp: info.ntp,
                rtp_timestamp: 5,
                packets: 6,
                octets: 960,
                reports: vec![rb]
            }
        );
        assert_eq!(parsed[1], RtcpPacket::Other { packet_type: 202 });
        let rr = build_report(2, None, None, "x");
        assert_eq!(
            parse_rtcp(&rr).unwrap()[0],
            RtcpPacket::ReceiverReport {
                ssrc: 2,
                reports: vec![]
            }
        );
        let bye = build_bye(3, "x");
        assert_eq!(
            parse_rtcp(&bye).unwrap()[2],
            RtcpPacket::Bye { ssrcs: vec![3] }
        );
        assert_eq!(ntp_from_unix(Duration::ZERO) >> 32, 2_208_988_800);
    }

    #[test]
    fn rtcp_garbage_is_an_error_not_a_panic() {
        let sr = build_report(1, None, None, "x");
        assert!(parse_rtcp(&[]).is_err());
        assert!(parse_rtcp(b"\x80\xc8\xff\xff").is_err());
        assert!(parse_rtcp(&sr[..sr.len() - 1]).is_err());
        // Claims 31 report blocks in a short RR.
        assert!(parse_rtcp(&[0x9F, 201, 0, 1, 0, 0, 0, 1]).is_err());
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 128) as u8).collect();
            let _ = parse_rtcp(&junk);
        }
    }
}
