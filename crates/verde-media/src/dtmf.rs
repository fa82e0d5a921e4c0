//! DTMF: RFC 4733 telephone-events (receive and generate) and in-band Goertzel detection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Event codes 0-15 in RFC 4733 order.
const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The digit for an RFC 4733 event code, if it is one of 0-15.
pub fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(usize::from(event)).copied()
}

/// The RFC 4733 event code for a digit (case-insensitive for A-D).
pub fn digit_to_event(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase();
    DIGITS.iter().position(|&c| c == d).map(|p| p as u8)
}

/// A detected digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    pub digit: char,
    pub duration_ms: u32,
}

/// A parsed RFC 4733 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// Duration so far, in timestamp units (1/8000 s).
    pub duration: u16,
}

impl EventPayload {
    pub fn parse(payload: &[u8]) -> Option<EventPayload> {
        let b: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// How long an event may go without packets before we report it from what we saw.
const EVENT_STALE: Duration = Duration::from_millis(1000);
/// How many reported event timestamps to remember for deduplicating late end packets.
const REPORTED_MEMORY: usize = 8;

struct OpenEvent {
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

/// Turns RFC 4733 packets into one digit per event.
///
/// An event is identified by its RTP timestamp. It is reported on its first end packet (the
/// usual triple retransmission of the end is deduplicated); if the end packets are lost it is
/// reported when a new event starts or after a second of silence; if only end packets arrive
/// it still counts once.
#[derive(Default)]
pub struct Rfc4733Receiver {
    open: Option<OpenEvent>,
    reported: VecDeque<u32>,
    out: VecDeque<DtmfDigit>,
}

impl Rfc4733Receiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the payload of one telephone-event packet with its RTP timestamp.
    pub fn handle(&mut self, timestamp: u32, payload: &[u8], now: Instant) {
        let Some(ev) = EventPayload::parse(payload) else {
            tracing::debug!(len = payload.len(), "short telephone-event payload ignored");
            return;
        };
        if self.reported.contains(&timestamp) {
            return;
        }
        if self.open.as_ref().is_some_and(|o| o.timestamp != timestamp) {
            self.flush_open();
        }
        if event_to_digit(ev.event).is_none() {
            // Flash hook and tones are not digits; nothing to report.
            return;
        }
        let open = self.open.get_or_insert(OpenEvent {
            timestamp,
            event: ev.event,
            duration: 0,
            last_seen: now,
        });
        open.duration = open.duration.max(ev.duration);
        open.last_seen = now;
        if ev.end {
            self.flush_open();
        }
    }

    fn flush_open(&mut self) {
        let Some(open) = self.open.take() else { return };
        if self.reported.len() == REPORTED_MEMORY {
            self.reported.pop_front();
        }
        self.reported.push_back(open.timestamp);
        if let Some(digit) = event_to_digit(open.event) {
            self.out.push_back(DtmfDigit {
                digit,
                duration_ms: u32::from(open.duration) / 8,
            });
        }
    }

    /// Reports an event whose end never arrived.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .open
            .as_ref()
            .is_some_and(|o| now >= o.last_seen + EVENT_STALE)
        {
            self.flush_open();
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.open.as_ref().map(|o| o.last_seen + EVENT_STALE)
    }

    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.out.pop_front()
    }
}

/// One packet of a generated RFC 4733 event: all share the event's RTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    pub payload: [u8; 4],
    pub marker: bool,
    /// When to send it, relative to the start of the event.
    pub offset: Duration,
}

/// Interval between event updates (RFC 4733 §2.5.1.2 suggests 50 ms).
const EVENT_UPDATE: u32 = 50;

/// Generates the packets for one digit: a marked start, updates every 50 ms with the duration
/// so far, and the end packet sent three times. `None` if `digit` is not a DTMF digit.
pub fn rfc4733_packets(digit: char, duration_ms: u32, volume: u8) -> Option<Vec<EventPacket>> {
    let event = digit_to_event(digit)?;
    let duration_ms = duration_ms.clamp(40, 8000);
    let units = |ms: u32| (ms * 8).min(u32::from(u16::MAX)) as u16;
    let mut packets = Vec::new();
    let mut t = 0;
    while t < duration_ms {
        packets.push(EventPacket {
            payload: EventPayload {
                event,
                end: false,
                volume,
                duration: units((t + 20).min(duration_ms)),
            }
            .to_bytes(),
            marker: t == 0,
            offset: Duration::from_millis(u64::from(t)),
        });
        t += EVENT_UPDATE;
    }
    let end = EventPayload {
        event,
        end: true,
        volume,
        duration: units(duration_ms),
    }
    .to_bytes();
    for _ in 0..3 {
        packets.push(EventPacket {
            payload: end,
            marker: false,
            offset: Duration::from_millis(u64::from(duration_ms)),
        });
    }
    Some(packets)
}

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// 102 samples puts neighbouring row tones near the first null of each Goertzel bin.
const BLOCK: usize = 102;
const BLOCK_MS: f32 = BLOCK as f32 / 8.0;
/// Blocks a tone must last before it counts (3 x 12.75 ms ≈ 40 ms).
const MIN_BLOCKS: u32 = 3;
/// Non-tone blocks that end a digit (the inter-digit gap).
const GAP_BLOCKS: u32 = 3;
/// Minimum per-tone amplitude (about -37 dBm0).
const MIN_AMPLITUDE: f32 = 300.0;
/// High group louder than low group by at most 8 dB.
const NORMAL_TWIST: f32 = 6.31;
/// Low group louder than high group by at most 4 dB.
const REVERSE_TWIST: f32 = 2.51;
/// The winning tone of each group must beat the others in its group by 8 dB.
const RELATIVE_PEAK: f32 = 6.31;
/// The two tones must hold this share of the block's energy: speech and noise spread theirs.
const MIN_TONE_SHARE: f32 = 0.6;

fn coeff(f: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos()
}

/// Goertzel power, scaled to the energy (Σx²) a sinusoid of that frequency would contribute.
fn goertzel(samples: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power * 2.0 / samples.len() as f32
}

fn strongest(energies: &[f32; 4]) -> (usize, f32) {
    let mut best = 0;
    for i in 1..4 {
        if energies[i] > energies[best] {
            best = i;
        }
    }
    (best, energies[best])
}

fn classify_block(samples: &[f32]) -> Option<char> {
    let total: f32 = samples.iter().map(|x| x * x).sum();
    let threshold = BLOCK as f32 * MIN_AMPLITUDE * MIN_AMPLITUDE / 2.0;
    if total < threshold * 2.0 {
        return None;
    }
    let row_coeffs = ROWS.map(coeff);
    let col_coeffs = COLS.map(coeff);
    let rows = row_coeffs.map(|c| goertzel(samples, c));
    let cols = col_coeffs.map(|c| goertzel(samples, c));
    let (r, row_e) = strongest(&rows);
    let (c, col_e) = strongest(&cols);
    if row_e < threshold || col_e < threshold {
        return None;
    }
    if col_e > row_e * NORMAL_TWIST || row_e > col_e * REVERSE_TWIST {
        return None;
    }
    let peaked = |e: &[f32; 4], best: usize| {
        e.iter()
            .enumerate()
            .all(|(i, &x)| i == best || x * RELATIVE_PEAK < e[best])
    };
    if !peaked(&rows, r) || !peaked(&cols, c) {
        return None;
    }
    if row_e + col_e < MIN_TONE_SHARE * total {
        return None;
    }
    Some(DIGITS[[1, 2, 3, 12, 4, 5, 6, 13, 7, 8, 9, 14, 10, 0, 11, 15][r * 4 + c]])
}

/// In-band DTMF detector for 8 kHz linear PCM (Goertzel on 12.75 ms blocks).
///
/// A digit needs about 40 ms of a valid tone pair (levels, twist, peak over the other
/// frequencies of its group, and most of the signal energy) and is reported once when it
/// ends, after a ~40 ms gap.
pub struct InbandDetector {
    block: Vec<f32>,
    candidate: Option<char>,
    hit_blocks: u32,
    miss_blocks: u32,
    out: VecDeque<DtmfDigit>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    pub fn new() -> Self {
        InbandDetector {
            block: Vec::with_capacity(BLOCK),
            candidate: None,
            hit_blocks: 0,
            miss_blocks: 0,
            out: VecDeque::new(),
        }
    }

    /// Feeds samples (any count); digits become available through [`Self::poll_digit`].
    pub fn process(&mut self, samples: &[i16]) {
        for &s in samples {
            self.block.push(f32::from(s));
            if self.block.len() == BLOCK {
                let result = classify_block(&self.block);
                self.block.clear();
                self.step(result);
            }
        }
    }

    fn step(&mut self, result: Option<char>) {
        let confirmed = self.hit_blocks >= MIN_BLOCKS;
        match result {
            Some(d) if Some(d) == self.candidate => {
                self.hit_blocks += 1;
                self.miss_blocks = 0;
            }
            Some(d) => {
                if confirmed {
                    self.finish();
                }
                self.candidate = Some(d);
                self.hit_blocks = 1;
                self.miss_blocks = 0;
            }
            None => {
                if confirmed {
                    self.miss_blocks += 1;
                    if self.miss_blocks >= GAP_BLOCKS {
                        self.finish();
                    }
                } else {
                    self.candidate = None;
                    self.hit_blocks = 0;
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(digit) = self.candidate.take() {
            self.out.push_back(DtmfDigit {
                digit,
                duration_ms: (self.hit_blocks as f32 * BLOCK_MS).round() as u32,
            });
        }
        self.hit_blocks = 0;
        self.miss_blocks = 0;
    }

    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.out.pop_front()
    }
}

/// Synthesises a DTMF tone pair (for tests, benches and prompts), `amplitude` per tone.
pub fn synthesize(digit: char, ms: u32, amplitude: f32) -> Vec<i16> {
    let Some(ev) = digit_to_event(digit) else {
        return vec![0; ms as usize * 8];
    };
    let pos = [1, 2, 3, 12, 4, 5, 6, 13, 7, 8, 9, 14, 10, 0, 11, 15]
        .iter()
        .position(|&e| e == ev)
        .expect("every event 0-15 is in the keypad map");
    let (fr, fc) = (ROWS[pos / 4], COLS[pos % 4]);
    (0..ms * 8)
        .map(|n| {
            let t = n as f32 / 8000.0;
            let v = amplitude
                * ((2.0 * std::f32::consts::PI * fr * t).sin()
                    + (2.0 * std::f32::consts::PI * fc * t).sin());
            v.clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(samples: &[i16]) -> Vec<DtmfDigit> {
        let mut d = InbandDetector::new();
        // Feed in 20 ms frames as the session does.
        for frame in samples.chunks(160) {
            d.process(frame);
        }
        d.process(&[0; 800]);
        std::iter::from_fn(|| d.poll_digit()).collect()
    }

    fn noise(n: usize, amplitude: f32, seed: u64) -> Vec<i16> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x % 2001) as f32 / 1000.0 - 1.0) * amplitude
            })
            .map(|v| v as i16)
            .collect()
    }

    #[test]
    fn rfc4733_one_digit_per_event_with_retransmitted_ends() {
        let t0 = Instant::now();
        let mut rx = Rfc4733Receiver::new();
        let ts = 12345;
        for (i, dur) in [160u16, 560, 960].iter().enumerate() {
            let p = EventPayload {
                event: 5,
                end: false,
                volume: 10,
                duration: *dur,
            };
            rx.handle(ts, &p.to_bytes(), t0 + Duration::from_millis(50 * i as u64));
        }
        assert_eq!(rx.poll_digit(), None, "reported at the end, not before");
        let end = EventPayload {
            event: 5,
            end: true,
            volume: 10,
            duration: 1040,
        }
        .to_bytes();
        for _ in 0..3 {
            rx.handle(ts, &end, t0);
        }
        assert_eq!(
            rx.poll_digit(),
            Some(DtmfDigit {
                digit: '5',
                duration_ms: 130
            })
        );
        assert_eq!(rx.poll_digit(), None);
        // A late retransmission after other traffic is still a duplicate.
        rx.handle(ts, &end, t0);
        assert_eq!(rx.poll_digit(), None);
    }

    #[test]
    fn rfc4733_end_only_and_missing_end() {
        let t0 = Instant::now();
        let mut rx = Rfc4733Receiver::new();
        // Only end packets of '#'.
        let end = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        rx.handle(1000, &end, t0);
        rx.handle(1000, &end, t0);
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('#'));
        assert_eq!(rx.poll_digit(), None);
        // '7' whose end is lost, followed by 'D'.
        let seven = EventPayload {
            event: 7,
            end: false,
            volume: 10,
            duration: 400,
        }
        .to_bytes();
        rx.handle(5000, &seven, t0);
        let d = EventPayload {
            event: 15,
            end: false,
            volume: 10,
            duration: 160,
        }
        .to_bytes();
        rx.handle(9000, &d, t0);
        assert_eq!(
            rx.poll_digit(),
            Some(DtmfDigit {
                digit: '7',
                duration_ms: 50
            })
        );
        // 'D' never ends: reported after a second of silence.
        assert_eq!(rx.poll_timeout(), Some(t0 + EVENT_STALE));
        rx.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(rx.poll_digit(), None);
        rx.handle_timeout(t0 + EVENT_STALE);
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('D'));
        // Non-digit events and garbage are ignored.
        rx.handle(20000, &[16, 0x80, 0, 160], t0);
        rx.handle(20001, &[1, 2], t0);
        assert_eq!(rx.poll_digit(), None);
    }

    #[test]
    fn generated_packets_decode_to_the_same_digit() {
        for digit in DIGITS {
            let pkts = rfc4733_packets(digit, 120, 10).unwrap();
            assert!(pkts[0].marker);
            assert!(pkts[1..].iter().all(|p| !p.marker));
            let ends: Vec<_> = pkts.iter().filter(|p| p.payload[1] & 0x80 != 0).collect();
            assert_eq!(ends.len(), 3);
            let t0 = Instant::now();
            let mut rx = Rfc4733Receiver::new();
            for p in &pkts {
                rx.handle(777, &p.payload, t0 + p.offset);
            }
            assert_eq!(
                rx.poll_digit(),
                Some(DtmfDigit {
                    digit,
                    duration_ms: 120
                })
            );
            assert_eq!(rx.poll_digit(), None);
        }
        assert!(rfc4733_packets('x', 100, 10).is_none());
        assert_eq!(digit_to_event('a'), Some(12));
    }

    #[test]
    fn detects_all_sixteen_digits_in_sequence() {
        let mut signal = Vec::new();
        for d in DIGITS {
            signal.extend(synthesize(d, 70, 6000.0));
            signal.extend(vec![0i16; 60 * 8]);
        }
        let got = detect(&signal);
        let digits: String = got.iter().map(|d| d.digit).collect();
        assert_eq!(digits, DIGITS.iter().collect::<String>());
        for d in got {
            assert!((50..=80).contains(&d.duration_ms), "{d:?}");
        }
    }

    #[test]
    fn detects_with_noise_and_low_level() {
        let tone = synthesize('8', 100, 800.0);
        let n = noise(tone.len(), 150.0, 7);
        let mixed: Vec<i16> = tone.iter().zip(&n).map(|(a, b)| a + b).collect();
        assert_eq!(
            detect(&mixed).iter().map(|d| d.digit).collect::<String>(),
            "8"
        );
        assert!(
            detect(&synthesize('8', 100, 100.0)).is_empty(),
            "below threshold"
        );
    }

    #[test]
    fn rejects_short_tones_noise_single_tones_and_speechlike_signals() {
        assert!(
            detect(&synthesize('1', 20, 6000.0)).is_empty(),
            "20 ms is too short"
        );
        assert!(detect(&noise(8000, 8000.0, 1)).is_empty(), "noise");
        let single = |f: f32| -> Vec<i16> {
            (0..8000)
                .map(|n| {
                    (8000.0 * (2.0 * std::f32::consts::PI * f * n as f32 / 8000.0).sin()) as i16
                })
                .collect()
        };
        assert!(detect(&single(697.0)).is_empty());
        assert!(detect(&single(1336.0)).is_empty());
        // A voiced, vowel-like signal: 120 Hz pitch with many harmonics (some land near DTMF
        // frequencies, e.g. 720 and 1200 Hz).
        let vowel: Vec<i16> = (0..16000)
            .map(|n| {
                let t = n as f32 / 8000.0;
                let f0 = 120.0 + 8.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                (1..28)
                    .map(|h| {
                        let hf = h as f32 * f0;
                        let env = (-((hf - 700.0) / 300.0).powi(2)).exp()
                            + 0.7 * (-((hf - 1200.0) / 300.0).powi(2)).exp()
                            + 0.1;
                        env * 1500.0 * (2.0 * std::f32::consts::PI * hf * t).sin()
                    })
                    .sum::<f32>() as i16
            })
            .collect();
        assert!(detect(&vowel).is_empty(), "speech-like input");
    }

    #[test]
    fn twist_limits() {
        let pair = |row_amp: f32, col_amp: f32| -> Vec<i16> {
            (0..800)
                .map(|n| {
                    let t = n as f32 / 8000.0;
                    (row_amp * (2.0 * std::f32::consts::PI * 770.0 * t).sin()
                        + col_amp * (2.0 * std::f32::consts::PI * 1336.0 * t).sin())
                        as i16
                })
                .collect()
        };
        let db = |x: f32| 10f32.powf(x / 20.0);
        // High group 6 dB louder (normal twist, allowed up to 8 dB).
        assert_eq!(detect(&pair(2000.0, 2000.0 * db(6.0))).len(), 1);
        assert!(detect(&pair(2000.0, 2000.0 * db(10.0))).is_empty());
        // Low group 3 dB louder (reverse twist, allowed up to 4 dB).
        assert_eq!(detect(&pair(2000.0 * db(3.0), 2000.0)).len(), 1);
        assert!(detect(&pair(2000.0 * db(6.0), 2000.0)).is_empty());
    }

    fn tones(freqs: &[f32], amplitude: f32, ms: u32) -> Vec<i16> {
        (0..ms * 8)
            .map(|n| {
                let t = n as f32 / 8000.0;
                freqs
                    .iter()
                    .map(|f| amplitude * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum::<f32>() as i16
            })
            .collect()
    }

    #[test]
    fn each_validity_check_rejects_on_its_own() {
        assert_eq!(
            detect(&tones(&[770.0, 1336.0], 3000.0, 100)).len(),
            1,
            "control"
        );
        // Two row tones: fails only the relative-peak check.
        assert!(detect(&tones(&[697.0, 770.0, 1336.0], 3000.0, 100)).is_empty());
        // A valid pair under two equally loud out-of-band tones (speech or music over a
        // key press): fails only the energy-share check.
        assert!(detect(&tones(&[770.0, 1336.0, 300.0, 2600.0], 3000.0, 100)).is_empty());
    }

    #[test]
    fn held_digit_is_one_event_and_repeats_need_a_gap() {
        let mut s = synthesize('3', 400, 5000.0);
        s.extend(vec![0; 50 * 8]);
        s.extend(synthesize('3', 60, 5000.0));
        let got = detect(&s);
        assert_eq!(got.len(), 2);
        assert!(got[0].duration_ms >= 380, "{:?}", got[0]);
    }
}
