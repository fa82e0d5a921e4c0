//! Tones and their measures for the crate's tests: shared by the unit tests (`src/tests.rs`
//! includes this file by path, so the crate needs no public test API) and the loopback test.

/// `samples` of a `freq` sine at `rate` Hz, peaking at `amplitude`.
pub fn sine(freq: f64, rate: u32, amplitude: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

pub fn rms(pcm: &[i16]) -> f64 {
    let sum: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / pcm.len() as f64).sqrt()
}

pub fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Power of `pcm` at `freq` (Goertzel).
pub fn goertzel(pcm: &[i16], freq: f64, rate: u32) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Fails unless `pcm` is within 2 dB of `reference_rms` and `freq` dominates its octaves below
/// and above by 20 dB (a codec that garbled the tone would spread it).
pub fn assert_tone(pcm: &[i16], freq: f64, rate: u32, reference_rms: f64, what: &str) {
    let level = db(rms(pcm) / reference_rms);
    assert!(level.abs() <= 2.0, "{what}: level off by {level:.2} dB");
    let tone = goertzel(pcm, freq, rate);
    for other in [freq / 2.0, freq * 2.0] {
        let p = goertzel(pcm, other, rate);
        assert!(
            tone > 100.0 * p,
            "{what}: {freq} Hz ({tone:.3e}) does not dominate {other} Hz ({p:.3e})"
        );
    }
}
