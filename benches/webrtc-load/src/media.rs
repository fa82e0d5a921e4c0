//! What the browser stand-in sends and how it judges what it hears, in plain data: a 440 Hz
//! tone in 20 ms G.711 frames with one RFC 4733 digit spliced in, and per-call counts of the
//! packets verde sends back (audio, loud audio, sequence gaps). No sockets, no clock.

use verde_media::g711;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// A frame whose RMS is below this (linear, of 32767) counts as silence: verde's silence and
/// comfort noise sit far below, a spoken prompt far above.
pub const LOUD_RMS: f64 = 200.0;
/// RFC 4733 tone length (as RTCDTMFSender's default 100 ms) and copies of the end packet.
const DTMF_PACKETS: u32 = 5;
const DTMF_END_COPIES: u32 = 3;
const DTMF_VOLUME: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Mu,
    A,
}

impl Law {
    fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        match self {
            Law::Mu => g711::encode_ulaw(pcm, out),
            Law::A => g711::encode_alaw(pcm, out),
        }
    }

    fn decode(self, codes: &[u8], out: &mut Vec<i16>) {
        match self {
            Law::Mu => g711::decode_ulaw(codes, out),
            Law::A => g711::decode_alaw(codes, out),
        }
    }
}

/// RFC 4733 event code of a keypad digit.
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        _ => None,
    }
}

pub fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + payload.len());
    v.push(0x80);
    v.push(pt | if marker { 0x80 } else { 0 });
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Payload type, sequence number and payload of an RTP packet; None when it is not one.
pub fn parse(pkt: &[u8]) -> Option<(u8, u16, &[u8])> {
    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
        return None;
    }
    let mut off = 12 + 4 * usize::from(pkt[0] & 0x0F);
    if pkt[0] & 0x10 != 0 {
        let ext = pkt.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = pkt.len();
    if pkt[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*pkt.last()?))?;
    }
    let payload = pkt.get(off..end)?;
    Some((pkt[1] & 0x7F, u16::from_be_bytes([pkt[2], pkt[3]]), payload))
}

/// The outgoing stream: one packet per 20 ms slot, the tone or, once a digit is queued, that
/// digit's event packets in the same slots (audio pauses, as in a browser).
pub struct Sender {
    tone: Vec<u8>,
    audio_pt: u8,
    dtmf_pt: Option<u8>,
    ssrc: u32,
    seq: u16,
    slot: u32,
    ts0: u32,
    /// The digit being sent: event code, its first slot.
    digit: Option<(u8, u32)>,
}

impl Sender {
    pub fn new(
        law: Law,
        audio_pt: u8,
        dtmf_pt: Option<u8>,
        ssrc: u32,
        seq0: u16,
        ts0: u32,
    ) -> Self {
        // One second of 440 Hz is a whole number of cycles: the table loops without a click.
        let pcm: Vec<i16> = (0..8000)
            .map(|i| {
                let x = i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0;
                (x.sin() * 8000.0) as i16
            })
            .collect();
        let mut tone = Vec::with_capacity(pcm.len());
        law.encode(&pcm, &mut tone);
        Sender {
            tone,
            audio_pt,
            dtmf_pt,
            ssrc,
            seq: seq0,
            slot: 0,
            ts0,
            digit: None,
        }
    }

    /// Starts `digit` at the next slot. False when no telephone-event was negotiated, the
    /// digit is not a keypad one, or another digit is still being sent.
    pub fn queue_digit(&mut self, digit: char) -> bool {
        match (self.dtmf_pt, dtmf_event(digit), self.digit) {
            (Some(_), Some(code), None) => {
                self.digit = Some((code, self.slot));
                true
            }
            _ => false,
        }
    }

    /// The packet for the next 20 ms slot.
    pub fn next_packet(&mut self) -> Vec<u8> {
        let slot = self.slot;
        self.slot = self.slot.wrapping_add(1);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let ts = self
            .ts0
            .wrapping_add(slot.wrapping_mul(FRAME_SAMPLES as u32));
        if let (Some((code, start)), Some(pt)) = (self.digit, self.dtmf_pt) {
            let i = slot - start;
            if i < DTMF_PACKETS + DTMF_END_COPIES {
                // One timestamp for the whole event, a growing duration, then the end copies.
                let end = i + 1 >= DTMF_PACKETS;
                let duration = (i.min(DTMF_PACKETS - 1) + 1) * FRAME_SAMPLES as u32;
                let payload = [
                    code,
                    if end { 0x80 } else { 0 } | DTMF_VOLUME,
                    (duration >> 8) as u8,
                    duration as u8,
                ];
                let event_ts = self
                    .ts0
                    .wrapping_add(start.wrapping_mul(FRAME_SAMPLES as u32));
                if i + 1 == DTMF_PACKETS + DTMF_END_COPIES {
                    self.digit = None;
                }
                return rtp(pt, i == 0, seq, event_ts, self.ssrc, &payload);
            }
        }
        let at = (slot as usize * FRAME_SAMPLES) % self.tone.len();
        let frame = &self.tone[at..at + FRAME_SAMPLES];
        rtp(self.audio_pt, slot == 0, seq, ts, self.ssrc, frame)
    }
}

/// What one call heard from verde.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    pub packets: u64,
    pub audio: u64,
    /// Audio frames above [`LOUD_RMS`]: the prompts.
    pub loud: u64,
    pub dtmf: u64,
    pub other: u64,
    /// Sequence numbers skipped (packets lost or never sent) in the audio stream.
    pub lost: u64,
    last_seq: Option<u16>,
    pcm: Vec<i16>,
}

impl Heard {
    pub fn on_packet(&mut self, pkt: &[u8], law: Law, audio_pt: u8, dtmf_pt: Option<u8>) {
        self.packets += 1;
        let Some((pt, seq, payload)) = parse(pkt) else {
            self.other += 1;
            return;
        };
        if let Some(last) = self.last_seq {
            let step = seq.wrapping_sub(last);
            // A late or repeated packet steps backwards (a huge u16 step): not a gap.
            if (1..1000).contains(&step) {
                self.lost += u64::from(step - 1);
                self.last_seq = Some(seq);
            }
        } else {
            self.last_seq = Some(seq);
        }
        if pt == audio_pt {
            self.audio += 1;
            if rms(law, payload, &mut self.pcm) >= LOUD_RMS {
                self.loud += 1;
            }
        } else if Some(pt) == dtmf_pt {
            self.dtmf += 1;
        } else {
            self.other += 1;
        }
    }
}

fn rms(law: Law, payload: &[u8], pcm: &mut Vec<i16>) -> f64 {
    pcm.clear();
    law.decode(payload, pcm);
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    (sum / pcm.len() as f64).sqrt()
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_frames_are_loud_and_consecutive() {
        let mut s = Sender::new(Law::Mu, 0, Some(101), 7, 100, 1000);
        let mut heard = Heard::default();
        for n in 0..60u32 {
            let p = s.next_packet();
            let (pt, seq, payload) = parse(&p).unwrap();
            assert_eq!((pt, seq), (0, 100 + n as u16));
            assert_eq!(payload.len(), FRAME_SAMPLES);
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            assert_eq!(ts, 1000 + n * 160);
            heard.on_packet(&p, Law::Mu, 0, Some(101));
        }
        assert_eq!((heard.audio, heard.loud, heard.lost), (60, 60, 0));
    }

    #[test]
    fn digit_takes_eight_slots_with_one_timestamp_then_audio_resumes() {
        let mut s = Sender::new(Law::A, 8, Some(126), 7, 0, 0);
        s.next_packet();
        s.next_packet();
        assert!(s.queue_digit('1'));
        assert!(!s.queue_digit('2'), "one digit at a time");
        let events: Vec<Vec<u8>> = (0..8).map(|_| s.next_packet()).collect();
        for (i, p) in events.iter().enumerate() {
            let (pt, _, payload) = parse(p).unwrap();
            assert_eq!(pt, 126);
            assert_eq!(payload[0], 1, "event code of '1'");
            assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 2 * 160);
            assert_eq!(p[1] & 0x80 != 0, i == 0, "marker on the first packet only");
            let end = payload[1] & 0x80 != 0;
            assert_eq!(end, i >= 4, "end bit from the fifth packet");
            let duration = u16::from_be_bytes([payload[2], payload[3]]);
            assert_eq!(duration, 160 * (i.min(4) as u16 + 1));
        }
        let p = s.next_packet();
        let (pt, seq, _) = parse(&p).unwrap();
        assert_eq!((pt, seq), (8, 10));
        assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 10 * 160);
        assert!(s.queue_digit('2'), "the first digit is over");
    }

    #[test]
    fn no_digit_without_telephone_event() {
        let mut s = Sender::new(Law::Mu, 0, None, 7, 0, 0);
        assert!(!s.queue_digit('1'));
        let mut t = Sender::new(Law::Mu, 0, Some(101), 7, 0, 0);
        assert!(!t.queue_digit('x'));
        assert_eq!(dtmf_event('#'), Some(11));
    }

    #[test]
    fn silence_is_not_loud_and_gaps_are_counted() {
        let mut heard = Heard::default();
        let silent = [0xFFu8; FRAME_SAMPLES];
        heard.on_packet(&rtp(0, false, 10, 0, 1, &silent), Law::Mu, 0, None);
        heard.on_packet(&rtp(0, false, 13, 480, 1, &silent), Law::Mu, 0, None);
        // Late packet: no gap, still counted as heard.
        heard.on_packet(&rtp(0, false, 12, 320, 1, &silent), Law::Mu, 0, None);
        heard.on_packet(
            &rtp(101, false, 14, 640, 1, &[1, 0, 0, 160]),
            Law::Mu,
            0,
            Some(101),
        );
        heard.on_packet(b"junk", Law::Mu, 0, None);
        assert_eq!(
            (
                heard.packets,
                heard.audio,
                heard.loud,
                heard.lost,
                heard.dtmf,
                heard.other
            ),
            (5, 3, 0, 2, 1, 1)
        );
    }

    #[test]
    fn parse_skips_csrc_extension_and_padding() {
        let mut p = rtp(0, false, 5, 0, 1, &[]);
        p[0] = 0x80 | 0x20 | 0x10 | 1; // padding, extension, one CSRC
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one-word extension
        p.extend_from_slice(&[0xAA, 0xBB]);
        p.extend_from_slice(&[0, 0, 3]); // three octets of padding
        assert_eq!(parse(&p), Some((0, 5, &[0xAA, 0xBB][..])));
        assert_eq!(parse(&[0x80, 0, 0]), None);
    }

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.0));
        assert_eq!(percentile(&v, 0.99), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
