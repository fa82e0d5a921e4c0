//! Audio checks on what a peer heard: loading WAVs (hound), G.711 decoding of captured RTP,
//! duration, RMS, dominant frequency (Goertzel) and energy-envelope correlation with best lag.

use std::path::Path;

/// Mono audio as f32 samples in [-1, 1].
#[derive(Debug, Clone)]
pub struct Audio {
    pub rate: u32,
    pub samples: Vec<f32>,
}

impl Audio {
    /// Loads any PCM/float WAV; channels are averaged to mono.
    pub fn load(path: &Path) -> Audio {
        let mut r = hound::WavReader::open(path)
            .unwrap_or_else(|e| panic!("cannot open WAV {}: {e}", path.display()));
        let spec = r.spec();
        let ch = usize::from(spec.channels.max(1));
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap_or(0.0)).collect(),
            hound::SampleFormat::Int => {
                let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
                r.samples::<i32>()
                    .map(|s| s.unwrap_or(0) as f32 / scale)
                    .collect()
            }
        };
        let samples = interleaved
            .chunks(ch)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        Audio {
            rate: spec.sample_rate,
            samples,
        }
    }

    /// Writes 16-bit mono PCM.
    pub fn save(&self, path: &Path) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: self.rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        for s in &self.samples {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
                .expect("write sample");
        }
        w.finalize().expect("finalize WAV");
    }

    /// 8 kHz audio from G.711 payloads laid end to end (`payload_type` 0 = PCMU, 8 = PCMA).
    pub fn from_g711<'a>(payload_type: u8, payloads: impl IntoIterator<Item = &'a [u8]>) -> Audio {
        let decode = match payload_type {
            0 => ulaw_to_linear,
            8 => alaw_to_linear,
            other => panic!("payload type {other} is not G.711"),
        };
        let samples = payloads
            .into_iter()
            .flat_map(|p| p.iter().map(|&b| f32::from(decode(b)) / 32768.0))
            .collect();
        Audio {
            rate: 8000,
            samples,
        }
    }

    /// A sine tone, for building test signals.
    pub fn tone(rate: u32, freq: f64, secs: f64, amplitude: f32) -> Audio {
        let n = (secs * f64::from(rate)).round() as usize;
        let samples = (0..n)
            .map(|i| {
                amplitude
                    * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32
            })
            .collect();
        Audio { rate, samples }
    }

    pub fn silence(rate: u32, secs: f64) -> Audio {
        Audio {
            rate,
            samples: vec![0.0; (secs * f64::from(rate)).round() as usize],
        }
    }

    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate)
    }

    /// The part between `from` and `to` seconds (clamped to the signal).
    pub fn slice(&self, from: f64, to: f64) -> Audio {
        let a = ((from.max(0.0) * f64::from(self.rate)) as usize).min(self.samples.len());
        let b = ((to.max(0.0) * f64::from(self.rate)) as usize).clamp(a, self.samples.len());
        Audio {
            rate: self.rate,
            samples: self.samples[a..b].to_vec(),
        }
    }

    pub fn append(&mut self, other: &Audio) {
        assert_eq!(self.rate, other.rate, "appending audio of a different rate");
        self.samples.extend_from_slice(&other.samples);
    }

    pub fn rms(&self) -> f64 {
        rms(&self.samples)
    }

    /// Seconds from the start to the first 20 ms window whose RMS exceeds `threshold`.
    pub fn first_sound(&self, threshold: f64) -> Option<f64> {
        let win = (self.rate as usize / 50).max(1);
        self.samples
            .chunks(win)
            .position(|c| rms(c) > threshold)
            .map(|i| (i * win) as f64 / f64::from(self.rate))
    }

    /// The frequency between `lo` and `hi` Hz (in `step` Hz steps) with the most energy
    /// (Goertzel), and that energy's share of the signal's total power (0..=1-ish; a pure tone
    /// gives about 0.5 because Goertzel sees one of the two spectral mirror halves).
    pub fn dominant_frequency(&self, lo: f64, hi: f64, step: f64) -> (f64, f64) {
        assert!(step > 0.0 && hi > lo, "bad frequency range");
        let total: f64 = self
            .samples
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>()
            .max(1e-20);
        let mut best = (lo, 0.0f64);
        let mut f = lo;
        while f <= hi {
            let p = goertzel_power(&self.samples, self.rate, f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        let n = self.samples.len().max(1) as f64;
        (best.0, best.1 / (total * n))
    }

    /// The share of the signal's power at exactly `freq` (same scale as
    /// [`Audio::dominant_frequency`]: about 0.5 for a pure tone at `freq`, near 0 otherwise).
    pub fn tone_share(&self, freq: f64) -> f64 {
        let total: f64 = self
            .samples
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>()
            .max(1e-20);
        let n = self.samples.len().max(1) as f64;
        goertzel_power(&self.samples, self.rate, freq) / (total * n)
    }

    /// Seconds of the signal, in `window_s` windows, that carry a pure `freq` tone: windows with
    /// audible energy (RMS > 0.01) and more than a third of their power at `freq`. Music,
    /// speech and silence do not count; a tone mixed with something as loud does not either.
    pub fn tone_seconds(&self, freq: f64, window_s: f64) -> f64 {
        self.tone_windows(freq, window_s)
            .iter()
            .filter(|&&on| on)
            .count() as f64
            * window_s
    }

    /// Per `window_s` window, whether it carries a pure `freq` tone (see [`Audio::tone_seconds`]).
    pub fn tone_windows(&self, freq: f64, window_s: f64) -> Vec<bool> {
        let win = ((window_s * f64::from(self.rate)) as usize).max(1);
        self.samples
            .chunks(win)
            .filter(|c| c.len() == win)
            .map(|c| {
                let a = Audio {
                    rate: self.rate,
                    samples: c.to_vec(),
                };
                a.rms() > 0.01 && a.tone_share(freq) > 0.33
            })
            .collect()
    }

    /// G.711 µ-law bytes, each sample coded as the µ-law value whose decoding is nearest
    /// (independent of any encoder under test).
    pub fn to_ulaw(&self) -> Vec<u8> {
        assert_eq!(self.rate, 8000, "G.711 is 8 kHz");
        let mut table: Vec<(i16, u8)> = (0..=255u8).map(|b| (ulaw_to_linear(b), b)).collect();
        table.sort_by_key(|e| e.0);
        self.samples
            .iter()
            .map(|&x| {
                let v = (x.clamp(-1.0, 1.0) * 32767.0) as i32;
                let i = table.partition_point(|e| i32::from(e.0) < v);
                let candidates = [i.saturating_sub(1), i.min(table.len() - 1)];
                let best = candidates
                    .iter()
                    .min_by_key(|&&j| (i32::from(table[j].0) - v).abs())
                    .expect("two candidates");
                table[*best].1
            })
            .collect()
    }

    /// RMS per `window_ms` window.
    pub fn envelope(&self, window_ms: u32) -> Vec<f64> {
        let win = ((self.rate * window_ms) / 1000).max(1) as usize;
        self.samples.chunks(win).map(rms).collect()
    }
}

fn rms(s: &[f32]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

/// |X(f)|^2 of the Goertzel filter over the whole signal.
fn goertzel_power(samples: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Pearson correlation of `reference`'s energy envelope with `heard`'s, trying every lag of
/// `heard` relative to `reference` from `-max_lag_ms` to `max_lag_ms`. Returns the best
/// correlation and its lag in ms (positive: the reference starts that much later in `heard`).
/// Envelopes are compared on a time grid, so the two signals may have different sample rates.
/// The whole reference must fit inside `heard` at a lag for that lag to count.
pub fn envelope_correlation(
    heard: &Audio,
    reference: &Audio,
    window_ms: u32,
    max_lag_ms: i64,
) -> (f64, i64) {
    let h = heard.envelope(window_ms);
    let r = reference.envelope(window_ms);
    let max_lag = max_lag_ms / i64::from(window_ms);
    let mut best = (f64::NEG_INFINITY, 0i64);
    for lag in -max_lag..=max_lag {
        if lag < 0 || (lag as usize) + r.len() > h.len() {
            // A negative lag would mean we heard the prompt before it was sent: only lags where
            // the reference lies wholly within the recording are meaningful.
            continue;
        }
        let seg = &h[lag as usize..lag as usize + r.len()];
        let c = pearson(seg, &r);
        if c > best.0 {
            best = (c, lag * i64::from(window_ms));
        }
    }
    best
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for i in 0..n {
        num += (a[i] - ma) * (b[i] - mb);
        da += (a[i] - ma).powi(2);
        db += (b[i] - mb).powi(2);
    }
    if da == 0.0 || db == 0.0 {
        return 0.0;
    }
    num / (da.sqrt() * db.sqrt())
}

/// ITU-T G.711 µ-law to 16-bit linear.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// ITU-T G.711 A-law to 16-bit linear.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let seg = (a & 0x70) >> 4;
    let mut t = i32::from(a & 0x0f) << 4;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_decodes_reference_points() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
    }

    #[test]
    fn tone_duration_rms_and_frequency() {
        let t = Audio::tone(8000, 440.0, 1.5, 0.5);
        assert!((t.duration() - 1.5).abs() < 1e-9);
        assert!(
            (t.rms() - 0.5 / 2f64.sqrt()).abs() < 0.01,
            "rms {}",
            t.rms()
        );
        let (f, share) = t.dominant_frequency(100.0, 3000.0, 10.0);
        assert_eq!(f, 440.0);
        assert!(share > 0.3, "share {share}");
        let (f2, _) = Audio::tone(48000, 1000.0, 0.5, 0.3).dominant_frequency(100.0, 3000.0, 50.0);
        assert_eq!(f2, 1000.0);
    }

    #[test]
    fn ulaw_encoding_keeps_a_tone_and_tone_windows_find_it() {
        let mut a = Audio::tone(8000, 1000.0, 1.0, 0.3);
        a.append(&Audio::tone(8000, 600.0, 0.6, 0.3));
        a.append(&Audio::silence(8000, 0.4));
        let bytes = a.to_ulaw();
        assert_eq!(bytes.len(), a.samples.len());
        let back = Audio::from_g711(0, bytes.chunks(160));
        assert!((back.rms() - a.rms()).abs() < 0.01);
        assert!((back.tone_seconds(1000.0, 0.2) - 1.0).abs() < 1e-9);
        assert!((back.tone_seconds(600.0, 0.2) - 0.6).abs() < 1e-9);
        assert_eq!(back.tone_seconds(800.0, 0.2), 0.0);
        // Silence never counts as a tone, however its little power is spread.
        assert_eq!(back.slice(1.6, 2.0).tone_seconds(1000.0, 0.2), 0.0);
        assert!(Audio::silence(8000, 0.2)
            .to_ulaw()
            .iter()
            .all(|&b| ulaw_to_linear(b) == 0));
    }

    #[test]
    fn first_sound_after_silence() {
        let mut a = Audio::silence(8000, 0.3);
        a.append(&Audio::tone(8000, 300.0, 0.2, 0.2));
        let t = a.first_sound(0.05).unwrap();
        assert!((t - 0.3).abs() <= 0.02, "{t}");
        assert!(Audio::silence(8000, 1.0).first_sound(0.01).is_none());
    }

    /// A syllable-like signal: tone bursts of varying length and level.
    fn speechlike(rate: u32) -> Audio {
        let mut a = Audio::silence(rate, 0.1);
        for (i, (len, amp)) in [
            (0.2, 0.5),
            (0.1, 0.2),
            (0.35, 0.7),
            (0.15, 0.3),
            (0.25, 0.6),
        ]
        .iter()
        .enumerate()
        {
            a.append(&Audio::tone(rate, 300.0 + 50.0 * i as f64, *len, *amp));
            a.append(&Audio::silence(rate, 0.05 + 0.03 * i as f64));
        }
        a
    }

    #[test]
    fn envelope_correlation_finds_the_delay_across_sample_rates() {
        let reference = speechlike(8000);
        let mut heard = Audio::silence(16000, 0.42);
        heard.append(&speechlike(16000));
        heard.append(&Audio::silence(16000, 1.0));
        let (c, lag) = envelope_correlation(&heard, &reference, 20, 1000);
        assert!(c > 0.95, "correlation {c}");
        assert!((lag - 420).abs() <= 20, "lag {lag}");
        // A different signal does not correlate well.
        let other = Audio::tone(16000, 300.0, 3.0, 0.4);
        let (c2, _) = envelope_correlation(&other, &reference, 20, 1000);
        assert!(c2 < 0.5, "tone vs bursts correlated {c2}");
    }

    #[test]
    fn g711_roundtrip_through_rtp_payloads_keeps_the_tone() {
        // µ-law encode by searching the decoder (slow but independent of any encoder under test).
        let table: Vec<(i16, u8)> = (0..=255u8).map(|b| (ulaw_to_linear(b), b)).collect();
        let encode = |x: f32| {
            let v = (x * 32767.0) as i32;
            table
                .iter()
                .min_by_key(|(l, _)| (i32::from(*l) - v).abs())
                .unwrap()
                .1
        };
        let t = Audio::tone(8000, 1000.0, 0.2, 0.5);
        let bytes: Vec<u8> = t.samples.iter().map(|&s| encode(s)).collect();
        let a = Audio::from_g711(0, bytes.chunks(160));
        assert_eq!(a.samples.len(), t.samples.len());
        assert_eq!(a.dominant_frequency(200.0, 3000.0, 50.0).0, 1000.0);
        assert!((a.rms() - t.rms()).abs() < 0.01);
    }
}
