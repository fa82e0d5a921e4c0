//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding.
//!
//! Encoding is done with bit operations (it is cheap enough per sample and avoids a 64 KiB
//! table per law); decoding uses 256-entry tables built at compile time.

use std::sync::LazyLock;

/// μ-law bias added before segment search (G.711 table 2a, scaled to 16-bit input).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude that fits in μ-law after adding the bias.
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample to μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0x00
    };
    let s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let top = ((s >> 7) & 0xFF) as u8;
    let exponent = if top == 0 {
        0
    } else {
        7 - top.leading_zeros() as i32
    };
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

const fn ulaw_decode_const(code: u8) -> i16 {
    let u = !code;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut pcm = i32::from(sample) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment ends are 0x1F, 0x3F, 0x7F, ... 0xFFF: segment = highest bit above bit 4.
    let top = (pcm >> 5) as u32;
    let seg = if top == 0 {
        0
    } else {
        32 - top.leading_zeros()
    };
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if seg < 2 {
        (pcm >> 1) & 0x0F
    } else {
        (pcm >> seg) & 0x0F
    };
    ((seg << 4) as u8 | mantissa as u8) ^ mask
}

const fn alaw_decode_const(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_const(i as u8)
        } else {
            ulaw_decode_const(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_table(false);
static ALAW_TO_LINEAR: [i16; 256] = build_table(true);

/// Decodes one μ-law byte.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

/// μ-law code for digital silence.
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code for digital silence.
pub const ALAW_SILENCE: u8 = 0xD5;

/// Encodes `pcm` into `out` (cleared first) as μ-law.
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(pcm.iter().map(|&s| linear_to_ulaw(s)));
}

/// Encodes `pcm` into `out` (cleared first) as A-law.
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(pcm.iter().map(|&s| linear_to_alaw(s)));
}

/// Decodes μ-law bytes into `out` (cleared first).
pub fn decode_ulaw(codes: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(codes.iter().map(|&c| ulaw_to_linear(c)));
}

/// Decodes A-law bytes into `out` (cleared first).
pub fn decode_alaw(codes: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(codes.iter().map(|&c| alaw_to_linear(c)));
}

/// Direct μ-law -> A-law and A-law -> μ-law maps, each entry computed through linear PCM so
/// the result is exactly "decode, then encode", at one lookup per sample for the bridge.
static ULAW_TO_ALAW: LazyLock<[u8; 256]> =
    LazyLock::new(|| std::array::from_fn(|i| linear_to_alaw(ulaw_to_linear(i as u8))));
static ALAW_TO_ULAW: LazyLock<[u8; 256]> =
    LazyLock::new(|| std::array::from_fn(|i| linear_to_ulaw(alaw_to_linear(i as u8))));

/// Converts μ-law bytes to A-law into `out` (cleared first), as decoding and re-encoding would.
pub fn ulaw_to_alaw(codes: &[u8], out: &mut Vec<u8>) {
    let table = &*ULAW_TO_ALAW;
    out.clear();
    out.extend(codes.iter().map(|&c| table[c as usize]));
}

/// Converts A-law bytes to μ-law into `out` (cleared first), as decoding and re-encoding would.
pub fn alaw_to_ulaw(codes: &[u8], out: &mut Vec<u8>) {
    let table = &*ALAW_TO_ULAW;
    out.clear();
    out.extend(codes.iter().map(|&c| table[c as usize]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        // Values from G.711 table 2a (16-bit scaled) and the reference implementations.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xEF), 132);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(1000), 0xFA);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "alaw {code:#04x}"
            );
            // μ-law has two zeros (0xFF and 0x7F); both decode to 0, which encodes to 0xFF.
            if code != 0x7F {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "ulaw {code:#04x}"
                );
            }
        }
    }

    #[test]
    fn quantisation_error_is_bounded_relative_to_magnitude() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let mag = i32::from(s).abs();
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(s)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(s)));
            // Companding keeps the error within ~1/16 of the magnitude plus the smallest step.
            let bound = mag / 16 + 40;
            assert!(
                (u - i32::from(s)).abs() <= bound.max(mag - 32124 + 1024),
                "ulaw {s} -> {u}"
            );
            assert!(
                (a - i32::from(s)).abs() <= bound.max(mag - 32256 + 1024),
                "alaw {s} -> {a}"
            );
        }
    }

    #[test]
    fn decoding_is_monotonic() {
        let mut last_u = i16::MIN;
        let mut last_a = i16::MIN;
        for s in (i16::MIN..=i16::MAX).step_by(3) {
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            assert!(u >= last_u && a >= last_a, "non-monotonic at {s}");
            last_u = u;
            last_a = a;
        }
    }

    #[test]
    fn buffer_helpers_match_scalar_functions() {
        let pcm: Vec<i16> = (0..160).map(|i| (i * 311 - 20000) as i16).collect();
        let mut u = Vec::new();
        let mut a = Vec::new();
        encode_ulaw(&pcm, &mut u);
        encode_alaw(&pcm, &mut a);
        let mut du = Vec::new();
        let mut da = Vec::new();
        decode_ulaw(&u, &mut du);
        decode_alaw(&a, &mut da);
        for i in 0..160 {
            assert_eq!(u[i], linear_to_ulaw(pcm[i]));
            assert_eq!(da[i], alaw_to_linear(a[i]));
            assert_eq!(du[i], ulaw_to_linear(u[i]));
        }
    }

    #[test]
    fn transcoding_equals_decode_then_encode_and_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut a = Vec::new();
        ulaw_to_alaw(&all, &mut a);
        let mut u = Vec::new();
        alaw_to_ulaw(&all, &mut u);
        for i in 0..256 {
            assert_eq!(
                a[i],
                linear_to_alaw(ulaw_to_linear(i as u8)),
                "ulaw {i:#04x}"
            );
            assert_eq!(
                u[i],
                linear_to_ulaw(alaw_to_linear(i as u8)),
                "alaw {i:#04x}"
            );
        }
        // Silence maps to silence, and a speech-level sample survives a double conversion
        // within one A-law step.
        assert_eq!(a[ULAW_SILENCE as usize], linear_to_alaw(0));
        let x = linear_to_ulaw(3000);
        let mut back = Vec::new();
        alaw_to_ulaw(&[a[x as usize]], &mut back);
        assert!((i32::from(ulaw_to_linear(back[0])) - 3000).abs() < 130);
    }
}
