//! Opus ⇄ G.711 µ-law for a leg whose browser chose Opus, so the `MediaSession` on top still
//! sees the PCMU stream it was built for (docs/webrtc.md, "Codecs and transcoding").
//!
//! libopus runs at 8 kHz mono on our side and resamples internally, so a 20 ms frame is the
//! session's 160 samples and there is no resampler here. The RTP clock is what changes: Opus
//! and its telephone-event run at 48 kHz on the wire, the session at 8 kHz, so timestamps and
//! RFC 4733 durations are scaled by 6. Sequence numbers and SSRC pass through, so the
//! session's loss and order checks still see the browser's stream.

use bytes::Bytes;
use rtc::rtp::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use verde_media::g711::{linear_to_ulaw, ulaw_to_linear};

use crate::WebRtcError;

/// The payload types the session uses on a transcoded leg (what `session_media` reports).
pub(crate) const SESSION_PCMU_PT: u8 = 0;
pub(crate) const SESSION_DTMF_PT: u8 = 101;

/// 48 kHz wire clock over the session's 8 kHz.
const CLOCK_RATIO: u32 = 6;
/// Opus's longest packet, 120 ms, at 8 kHz.
const MAX_FRAME: usize = 960;
/// Default frame (20 ms at 8 kHz) until a packet tells us the browser's.
const FRAME_20MS: usize = 160;
/// A gap longer than this (100 ms) is a jump in the stream, not loss worth concealing:
/// libopus's concealment fades to silence by then anyway.
const MAX_CONCEALED: u16 = 5;
/// RFC 6716's largest packet is 1275 bytes; a narrowband voice frame is far smaller.
const MAX_PACKET: usize = 1275;

/// One call's Opus codec state, both directions. The leg owns one when Opus was negotiated;
/// public so the bench (and a load tool) can drive the same code path on plain RTP bytes.
pub struct OpusTranscoder {
    opus_pt: u8,
    /// telephone-event/48000 on the wire, when negotiated.
    event_pt: Option<u8>,
    decoder: opus::Decoder,
    encoder: opus::Encoder,
    last_seq: Option<u16>,
    /// The first wire timestamp seen: division by 6 is done on the distance from it, so a
    /// 48 kHz timestamp wrapping around 2^32 (not a multiple of 6) does not jump the 8 kHz one.
    ts_base: Option<u32>,
    /// Samples in the browser's last frame: how much audio a lost packet stood for.
    frame: usize,
    pcm: Vec<i16>,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for OpusTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusTranscoder")
            .field("opus_pt", &self.opus_pt)
            .field("event_pt", &self.event_pt)
            .finish_non_exhaustive()
    }
}

fn codec_error(what: &str, e: opus::Error) -> WebRtcError {
    WebRtcError::Codec(format!("{what}: {e}"))
}

impl OpusTranscoder {
    /// `opus_pt` and `event_pt` are the wire (negotiated) payload types of opus/48000/2 and
    /// telephone-event/48000.
    pub fn new(opus_pt: u8, event_pt: Option<u8>) -> Result<Self, WebRtcError> {
        let decoder = opus::Decoder::new(8000, opus::Channels::Mono)
            .map_err(|e| codec_error("opus decoder", e))?;
        let encoder = opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| codec_error("opus encoder", e))?;
        Ok(OpusTranscoder {
            opus_pt,
            event_pt,
            decoder,
            encoder,
            last_seq: None,
            ts_base: None,
            frame: FRAME_20MS,
            pcm: vec![0; MAX_FRAME],
            encoded: vec![0; MAX_PACKET],
        })
    }

    /// One RTP packet from the browser, as bytes; returns the G.711 packets for the session
    /// (none, one, or the concealment of a gap followed by this one).
    pub fn decode(&mut self, rtp: &[u8]) -> Result<Vec<Bytes>, WebRtcError> {
        let packet = Packet::unmarshal(&mut &rtp[..]).map_err(|_| WebRtcError::MalformedRtp)?;
        let mut out = Vec::new();
        self.incoming(packet, &mut out)?;
        out.iter()
            .map(|p| {
                p.marshal()
                    .map(|b| b.freeze())
                    .map_err(|e| WebRtcError::Rtc(e.to_string()))
            })
            .collect()
    }

    /// One RTP packet from the session (PCMU or its telephone-event), as bytes; returns the
    /// packet for the browser, or `None` for what the browser would not understand.
    pub fn encode(&mut self, rtp: &[u8]) -> Result<Option<Bytes>, WebRtcError> {
        let packet = Packet::unmarshal(&mut &rtp[..]).map_err(|_| WebRtcError::MalformedRtp)?;
        self.outgoing(packet)?
            .map(|p| {
                p.marshal()
                    .map(|b| b.freeze())
                    .map_err(|e| WebRtcError::Rtc(e.to_string()))
            })
            .transpose()
    }

    /// Browser → session. Late and duplicate packets are dropped: the decoder has moved on
    /// and their slot was already concealed.
    pub(crate) fn incoming(
        &mut self,
        packet: Packet,
        out: &mut Vec<Packet>,
    ) -> Result<(), WebRtcError> {
        let seq = packet.header.sequence_number;
        // Sequence numbers count audio and telephone-event packets alike.
        let step = self.last_seq.map_or(1, |last| seq.wrapping_sub(last));
        if step == 0 || step >= 0x8000 {
            tracing::trace!(seq, "late or duplicate packet from the browser dropped");
            return Ok(());
        }
        self.last_seq = Some(seq);
        let ts = packet.header.timestamp;
        let base = *self.ts_base.get_or_insert(ts);
        let pt = packet.header.payload_type;
        if pt == self.opus_pt {
            let missing = step - 1;
            if (1..=MAX_CONCEALED).contains(&missing) {
                self.conceal(&packet, missing, base, out)?;
            }
            let n = self
                .decoder
                .decode(&packet.payload, &mut self.pcm[..], false)
                .map_err(|e| codec_error("opus decode", e))?;
            self.frame = n;
            out.push(self.g711_packet(&packet.header, seq, ts, base, n));
        } else if Some(pt) == self.event_pt {
            let mut event = packet;
            event.header.payload_type = SESSION_DTMF_PT;
            event.header.timestamp = ts_down(ts, base);
            event.payload = scale_durations(&event.payload, |d| d / CLOCK_RATIO);
            out.push(event);
        } else {
            // Another codec the answer also allowed (PCMU is the session's own): as is.
            out.push(packet);
        }
        Ok(())
    }

    /// Fills `missing` lost frames before `next`: the last one from `next`'s in-band FEC
    /// (libopus falls back to concealment when there is none), earlier ones by concealment.
    fn conceal(
        &mut self,
        next: &Packet,
        missing: u16,
        base: u32,
        out: &mut Vec<Packet>,
    ) -> Result<(), WebRtcError> {
        let frame = self.frame;
        for back in (1..=missing).rev() {
            let fec = back == 1;
            let input: &[u8] = if fec { &next.payload } else { &[] };
            let n = self
                .decoder
                .decode(input, &mut self.pcm[..frame], fec)
                .map_err(|e| codec_error("opus concealment", e))?;
            let seq = next.header.sequence_number.wrapping_sub(back);
            let wire_frame = (frame as u32) * CLOCK_RATIO;
            let ts = next
                .header
                .timestamp
                .wrapping_sub(u32::from(back) * wire_frame);
            let mut packet = self.g711_packet(&next.header, seq, ts, base, n);
            // A talkspurt starts at `next`, if anywhere, not before it.
            packet.header.marker = false;
            out.push(packet);
        }
        tracing::trace!(missing, "opus loss concealed");
        Ok(())
    }

    fn g711_packet(
        &self,
        like: &rtc::rtp::header::Header,
        seq: u16,
        ts: u32,
        base: u32,
        samples: usize,
    ) -> Packet {
        let mut header = like.clone();
        header.payload_type = SESSION_PCMU_PT;
        header.sequence_number = seq;
        header.timestamp = ts_down(ts, base);
        header.padding = false;
        let payload: Vec<u8> = self.pcm[..samples]
            .iter()
            .map(|&s| linear_to_ulaw(s))
            .collect();
        Packet {
            header,
            payload: Bytes::from(payload),
        }
    }

    /// Session → browser.
    pub(crate) fn outgoing(&mut self, mut packet: Packet) -> Result<Option<Packet>, WebRtcError> {
        let pt = packet.header.payload_type;
        if pt == SESSION_PCMU_PT {
            let samples = packet.payload.len();
            if !matches!(samples, 20 | 40 | 80 | 160 | 320 | 480 | 640 | 800 | 960) {
                // Opus only takes 2.5..120 ms frames; the session sends 20 ms.
                tracing::debug!(samples, "G.711 frame Opus cannot carry dropped");
                return Ok(None);
            }
            for (dst, &code) in self.pcm.iter_mut().zip(packet.payload.iter()) {
                *dst = ulaw_to_linear(code);
            }
            let n = self
                .encoder
                .encode(&self.pcm[..samples], &mut self.encoded)
                .map_err(|e| codec_error("opus encode", e))?;
            packet.header.payload_type = self.opus_pt;
            packet.header.timestamp = packet.header.timestamp.wrapping_mul(CLOCK_RATIO);
            packet.header.padding = false;
            packet.payload = Bytes::copy_from_slice(&self.encoded[..n]);
            Ok(Some(packet))
        } else if pt == SESSION_DTMF_PT {
            let Some(event_pt) = self.event_pt else {
                return Ok(None);
            };
            packet.header.payload_type = event_pt;
            packet.header.timestamp = packet.header.timestamp.wrapping_mul(CLOCK_RATIO);
            // An 8 kHz event longer than 1.36 s does not fit at 48 kHz; the session's digits
            // are a few hundred ms, so saturating is enough.
            packet.payload = scale_durations(&packet.payload, |d| d.saturating_mul(CLOCK_RATIO));
            Ok(Some(packet))
        } else {
            tracing::debug!(pt, "session packet with no Opus equivalent dropped");
            Ok(None)
        }
    }
}

/// A 48 kHz wire timestamp on the 8 kHz clock: `ts / 6` while no wrap happened (the base is
/// anchored at `base / 6`), and continuous across the 48 kHz counter's wrap.
fn ts_down(ts: u32, base: u32) -> u32 {
    let distance = ts.wrapping_sub(base) as i32;
    (base / CLOCK_RATIO).wrapping_add(distance.div_euclid(CLOCK_RATIO as i32) as u32)
}

/// Rescales the duration field of every 4-octet RFC 4733 event block (§2.3: event, E/R/volume,
/// 16-bit duration in timestamp units).
fn scale_durations(payload: &[u8], scale: impl Fn(u32) -> u32) -> Bytes {
    let mut out = payload.to_vec();
    for block in out.chunks_exact_mut(4) {
        let duration = u32::from(u16::from_be_bytes([block[2], block[3]]));
        let scaled = scale(duration).min(u32::from(u16::MAX)) as u16;
        block[2..4].copy_from_slice(&scaled.to_be_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pt: u8, seq: u16, ts: u32) -> rtc::rtp::header::Header {
        rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0x5EED,
            ..Default::default()
        }
    }

    #[test]
    fn timestamps_divide_by_six_and_survive_the_48k_wrap() {
        assert_eq!(ts_down(960 * 10, 960 * 3), 1600);
        assert_eq!(
            ts_down(960 * 2, 960 * 3),
            320,
            "a packet older than the base"
        );
        // Base just below the wrap: the next frames must keep advancing by 160.
        let base = u32::MAX - 959;
        let first = ts_down(base, base);
        let after_wrap = ts_down(base.wrapping_add(960 * 2), base);
        assert_eq!(after_wrap.wrapping_sub(first), 320);
        assert!(
            base.wrapping_add(960 * 2) < base,
            "the test must cross the wrap"
        );
    }

    #[test]
    fn event_durations_scale_per_block() {
        let payload = [5u8, 0x8A, 0x03, 0xC0, 6, 0x0A, 0x00, 0xA0]; // 960, 160
        let down = scale_durations(&payload, |d| d / 6);
        assert_eq!(&down[..], &[5, 0x8A, 0x00, 0xA0, 6, 0x0A, 0x00, 0x1A]);
        let up = scale_durations(&[1, 0, 0x30, 0x00], |d| d.saturating_mul(6));
        assert_eq!(&up[..], &[1, 0, 0xFF, 0xFF], "12288 × 6 saturates");
    }

    #[test]
    fn session_packets_without_an_opus_form_are_dropped() {
        let mut t = OpusTranscoder::new(111, None).unwrap();
        let event = Packet {
            header: header(SESSION_DTMF_PT, 1, 0),
            payload: Bytes::from_static(&[5, 0, 0, 160]),
        };
        assert!(t.outgoing(event).unwrap().is_none(), "no 48 kHz event PT");
        let odd = Packet {
            header: header(SESSION_PCMU_PT, 2, 160),
            payload: Bytes::from(vec![0xFF; 100]),
        };
        assert!(
            t.outgoing(odd).unwrap().is_none(),
            "12.5 ms is no Opus frame"
        );
        let cn = Packet {
            header: header(13, 3, 160),
            payload: Bytes::from_static(&[0x40]),
        };
        assert!(t.outgoing(cn).unwrap().is_none());
        let audio = Packet {
            header: header(SESSION_PCMU_PT, 4, 320),
            payload: Bytes::from(vec![0xFF; 160]),
        };
        let opus = t.outgoing(audio).unwrap().expect("a 20 ms frame encodes");
        assert_eq!(opus.header.payload_type, 111);
        assert_eq!(opus.header.timestamp, 1920);
        assert_eq!(opus.header.sequence_number, 4);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped_and_big_jumps_not_concealed() {
        let mut enc = OpusTranscoder::new(111, None).unwrap();
        let mut dec = OpusTranscoder::new(111, None).unwrap();
        let mut frame = |seq: u16| {
            let p = Packet {
                header: header(SESSION_PCMU_PT, seq, u32::from(seq) * 160),
                payload: Bytes::from(vec![0x80; 160]),
            };
            enc.outgoing(p).unwrap().unwrap()
        };
        let mut out = Vec::new();
        for seq in [10u16, 11, 11, 9] {
            dec.incoming(frame(seq), &mut out).unwrap();
        }
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [10, 11]);
        out.clear();
        dec.incoming(frame(11 + 1 + MAX_CONCEALED + 1), &mut out)
            .unwrap();
        assert_eq!(
            out.len(),
            1,
            "a jump past {MAX_CONCEALED} frames is not loss"
        );
    }

    #[test]
    fn byte_interface_round_trips_a_frame() {
        let mut session_side = OpusTranscoder::new(96, Some(97)).unwrap();
        let mut pcmu = vec![
            0x80,
            SESSION_PCMU_PT,
            0x12,
            0x34,
            0,
            0,
            0x03,
            0x20,
            0,
            0,
            0,
            9,
        ];
        pcmu.extend((0..160).map(|i| linear_to_ulaw(((i % 20) as i16 - 10) * 800)));
        let opus = session_side.encode(&pcmu).unwrap().expect("encoded");
        assert_eq!(opus[1] & 0x7F, 96);
        assert_eq!(&opus[6..8], &[0x12, 0xC0], "timestamp 800 × 6 = 4800");
        let back = session_side.decode(&opus).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0][1] & 0x7F, SESSION_PCMU_PT);
        assert_eq!(&back[0][2..4], &[0x12, 0x34], "same sequence number");
        assert_eq!(back[0].len(), 12 + 160);
        assert!(matches!(
            session_side.decode(&[0x80]),
            Err(WebRtcError::MalformedRtp)
        ));
    }
}
