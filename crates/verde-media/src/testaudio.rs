//! Audio helpers shared by the media layer's unit tests: tones, received tap frames, and the
//! level of one frequency in a block of samples.

use crate::prompt::SAMPLE_RATE;
use crate::session::{TapDirection, TapFrame};

/// A frame as the audio tap reports one received from the peer.
pub fn received(timestamp: u32, pcm: Vec<i16>) -> TapFrame {
    TapFrame {
        direction: TapDirection::Received,
        timestamp,
        pcm,
    }
}

/// `n` samples of a `freq` Hz sine of amplitude `amp`, from sample `start` (phase continuous).
pub fn tone_at(freq: f64, amp: f64, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

/// [`tone_at`] at amplitude 8000.
pub fn tone(freq: f64, start: usize, n: usize) -> Vec<i16> {
    tone_at(freq, 8000.0, start, n)
}

/// Amplitude of the `freq` component of `x` (Goertzel over the whole slice); 0 when empty.
pub fn level(x: &[i16], freq: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}
