//! Audio checks for the conversation-recording and supervision tests: the level of a tone in a
//! signal (windowed Goertzel, in dBFS), stereo WAVs read channel by channel, and the RTP verde
//! exchanged with each peer, told apart by the tone each peer sends and cut by capture time.
//!
//! Every peer of these tests sends one pure tone of its own, so "who hears whom" is a question
//! of which tones are in what verde sent a peer during a time window.

use crate::pcap::{parse_rtp, Datagram};
use crate::wav::{alaw_to_linear, ulaw_to_linear, Audio};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A tone at this level or above is heard. The tests' tones are sent at 0.3 of full scale
/// (about -10.5 dBFS), so this leaves 20 dB for mixing and G.711.
pub const PRESENT_DBFS: f64 = -30.0;
/// A tone at this level or below is not heard: 20 dB under [`PRESENT_DBFS`], so a tone
/// counted as absent is at least 20 dB below any tone counted as present.
pub const ABSENT_DBFS: f64 = -50.0;

/// The level of a `hz` sine in `audio`, in dB relative to a full-scale sine (amplitude 1.0 is
/// 0 dBFS). A Hann window keeps other tones and the clicks of packet boundaries out of the bin.
/// Silence or an empty signal gives a very low value, never NaN.
pub fn tone_dbfs(audio: &Audio, hz: f64) -> f64 {
    let n = audio.samples.len();
    if n < 2 {
        return -200.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(audio.rate);
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, &x) in audio.samples.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
        let v = f64::from(x) * hann;
        re += v * (w * i as f64).cos();
        im -= v * (w * i as f64).sin();
    }
    // For A*sin: |X| = A/2 * sum(hann) = A * n / 4.
    let amplitude = 4.0 * (re * re + im * im).sqrt() / n as f64;
    20.0 * amplitude.max(1e-10).log10()
}

/// A WAV read channel by channel, with its format.
#[derive(Debug, Clone)]
pub struct StereoWav {
    pub spec: hound::WavSpec,
    pub left: Audio,
    pub right: Audio,
    /// Frames (samples per channel).
    pub frames: usize,
}

impl StereoWav {
    /// Loads an integer PCM WAV; `left` is channel 0 and `right` channel 1 (empty for mono).
    pub fn load(path: &Path) -> StereoWav {
        let mut r = hound::WavReader::open(path)
            .unwrap_or_else(|e| panic!("cannot open WAV {}: {e}", path.display()));
        let spec = r.spec();
        assert_eq!(
            spec.sample_format,
            hound::SampleFormat::Int,
            "{} is not integer PCM: {spec:?}",
            path.display()
        );
        let scale = (1i64 << (spec.bits_per_sample.max(1) - 1)) as f32;
        let samples: Vec<f32> = r
            .samples::<i32>()
            .map(|s| s.unwrap_or_else(|e| panic!("{}: {e}", path.display())) as f32 / scale)
            .collect();
        let ch = usize::from(spec.channels.max(1));
        let channel = |c: usize| Audio {
            rate: spec.sample_rate,
            samples: samples.iter().skip(c).step_by(ch).copied().collect(),
        };
        let left = channel(0);
        let right = if ch > 1 {
            channel(1)
        } else {
            Audio {
                rate: spec.sample_rate,
                samples: Vec::new(),
            }
        };
        StereoWav {
            spec,
            frames: samples.len() / ch,
            left,
            right,
        }
    }

    pub fn duration(&self) -> f64 {
        self.frames as f64 / f64::from(self.spec.sample_rate.max(1))
    }
}

/// One RTP packet verde exchanged with a peer: capture time (seconds since the epoch), the
/// peer's port, and the payload decoded to samples (G.711 only).
#[derive(Debug, Clone)]
pub struct Packet {
    pub time: f64,
    pub peer_port: u16,
    pub samples: Vec<f32>,
}

/// The G.711 RTP of a capture, split by direction relative to verde's RTP port range.
#[derive(Debug, Clone, Default)]
pub struct RtpByPeer {
    /// Packets verde sent, with the port they went to.
    pub from_verde: Vec<Packet>,
    /// Packets verde received, with the port they came from.
    pub to_verde: Vec<Packet>,
}

impl RtpByPeer {
    pub fn new(datagrams: &[Datagram], verde_ports: (u16, u16)) -> RtpByPeer {
        let ours = |p: u16| (verde_ports.0..=verde_ports.1).contains(&p);
        let mut out = RtpByPeer::default();
        for d in datagrams {
            let Some(rtp) = parse_rtp(&d.payload) else {
                continue;
            };
            let decode: fn(u8) -> i16 = match rtp.payload_type {
                0 => ulaw_to_linear,
                8 => alaw_to_linear,
                _ => continue,
            };
            let samples = rtp
                .payload
                .iter()
                .map(|&b| f32::from(decode(b)) / 32768.0)
                .collect();
            match (ours(d.src.port()), ours(d.dst.port())) {
                (true, false) => out.from_verde.push(Packet {
                    time: d.time,
                    peer_port: d.dst.port(),
                    samples,
                }),
                (false, true) => out.to_verde.push(Packet {
                    time: d.time,
                    peer_port: d.src.port(),
                    samples,
                }),
                _ => {}
            }
        }
        out
    }

    /// The ports of the peers whose audio to verde carries a `hz` tone at [`PRESENT_DBFS`] or
    /// more: with one tone per peer, these are that peer's RTP ports (one per call it made).
    pub fn ports_sending(&self, hz: f64) -> Vec<u16> {
        let ports: BTreeSet<u16> = self.to_verde.iter().map(|p| p.peer_port).collect();
        ports
            .into_iter()
            .filter(|&port| {
                let a = join(self.to_verde.iter().filter(|p| p.peer_port == port));
                tone_dbfs(&a, hz) >= PRESENT_DBFS
            })
            .collect()
    }

    /// What verde sent to `ports` between `from` and `to` (capture times), laid end to end.
    pub fn heard(&self, ports: &[u16], from: f64, to: f64) -> Audio {
        join(
            self.from_verde
                .iter()
                .filter(|p| ports.contains(&p.peer_port) && p.time >= from && p.time < to),
        )
    }

    /// What verde received from `ports` between `from` and `to`, laid end to end.
    pub fn sent(&self, ports: &[u16], from: f64, to: f64) -> Audio {
        join(
            self.to_verde
                .iter()
                .filter(|p| ports.contains(&p.peer_port) && p.time >= from && p.time < to),
        )
    }

    /// Every distinct peer port verde exchanged G.711 with, for failure messages.
    pub fn summary(&self) -> String {
        let ports: BTreeSet<u16> = self
            .to_verde
            .iter()
            .chain(&self.from_verde)
            .map(|p| p.peer_port)
            .collect();
        ports
            .iter()
            .map(|&port| {
                let sent = self.to_verde.iter().filter(|p| p.peer_port == port).count();
                let got = self
                    .from_verde
                    .iter()
                    .filter(|p| p.peer_port == port)
                    .count();
                format!("port {port}: {sent} packets to verde, {got} from verde")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn join<'a>(packets: impl Iterator<Item = &'a Packet>) -> Audio {
    Audio {
        rate: 8000,
        samples: packets.flat_map(|p| p.samples.iter().copied()).collect(),
    }
}

/// A named tone a peer sends.
#[derive(Debug, Clone, Copy)]
pub struct Voice {
    pub who: &'static str,
    pub hz: f64,
}

/// Checks that `audio` (what `listener` got during `window`) carries each of `present` at
/// [`PRESENT_DBFS`] or more and each of `absent` at [`ABSENT_DBFS`] or less, and holds at
/// least `min_secs` of audio. Failures are pushed to `failures` (so one run shows every wrong
/// cell of the table); the measured levels are returned as a line for the test's output.
pub fn check_hearing(
    failures: &mut Vec<String>,
    listener: &str,
    window: &str,
    audio: &Audio,
    min_secs: f64,
    present: &[Voice],
    absent: &[Voice],
) -> String {
    let mut line = format!("{window:>8}: {listener} got {:.1} s:", audio.duration());
    if audio.duration() < min_secs {
        failures.push(format!(
            "{window}: verde sent {listener} only {:.2} s of audio (expected at least {min_secs:.1} s)",
            audio.duration()
        ));
    }
    for v in present {
        let db = tone_dbfs(audio, v.hz);
        line.push_str(&format!(" {} {db:.1} dBFS (must hear);", v.who));
        if db < PRESENT_DBFS {
            failures.push(format!(
                "{window}: {listener} should hear {} ({} Hz) but it is at {db:.1} dBFS (< {PRESENT_DBFS})",
                v.who, v.hz
            ));
        }
    }
    for v in absent {
        let db = tone_dbfs(audio, v.hz);
        line.push_str(&format!(" {} {db:.1} dBFS (must not hear);", v.who));
        if db > ABSENT_DBFS {
            failures.push(format!(
                "{window}: {listener} must not hear {} ({} Hz) but it is at {db:.1} dBFS (> {ABSENT_DBFS})",
                v.who, v.hz
            ));
        }
    }
    line
}

/// Seconds since the epoch, now (the clock dumpcap stamps packets with and verde logs with).
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// verde on the test flows that queue at once (`tests/fixtures/flows-direct-queue`) with
/// `config`, and a capture of every RTP port it may use.
pub fn verde_direct_queue(
    dir: &crate::TestDir,
    config: PathBuf,
) -> (crate::verde::Verde, crate::pcap::Capture) {
    let verde = crate::verde::Verde::start(
        dir,
        crate::verde::VerdeOptions {
            config: Some(config),
            flows: crate::fixtures_dir().join("flows-direct-queue"),
            ..Default::default()
        },
    );
    let (lo, hi) = verde.rtp_ports;
    let cap = crate::pcap::Capture::start(dir, "rtp", &format!("udp and portrange {lo}-{hi}"));
    (verde, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_levels_in_dbfs() {
        let t = Audio::tone(8000, 440.0, 2.0, 0.3);
        let db = tone_dbfs(&t, 440.0);
        assert!((db - 20.0 * 0.3f64.log10()).abs() < 0.3, "{db}");
        assert!(tone_dbfs(&t, 1000.0) < -80.0, "{}", tone_dbfs(&t, 1000.0));
        let mut mix = Audio::tone(8000, 1000.0, 2.0, 0.2);
        for (m, s) in mix
            .samples
            .iter_mut()
            .zip(&Audio::tone(8000, 1700.0, 2.0, 0.01).samples)
        {
            *m += s;
        }
        assert!((tone_dbfs(&mix, 1000.0) - 20.0 * 0.2f64.log10()).abs() < 0.3);
        assert!((tone_dbfs(&mix, 1700.0) + 40.0).abs() < 0.5);
        assert!(tone_dbfs(&Audio::silence(8000, 1.0), 440.0) < -150.0);
        assert!(tone_dbfs(&Audio::silence(8000, 0.0), 440.0) <= -200.0);
    }

    #[test]
    fn hearing_checks_report_each_wrong_cell() {
        let c = Voice {
            who: "C",
            hz: 440.0,
        };
        let a = Voice {
            who: "A",
            hz: 1000.0,
        };
        let heard = Audio::tone(8000, 440.0, 3.0, 0.3);
        let mut f = Vec::new();
        check_hearing(&mut f, "S", "listen", &heard, 2.0, &[c], &[a]);
        assert!(f.is_empty(), "{f:?}");
        check_hearing(&mut f, "S", "listen", &heard, 4.0, &[a], &[c]);
        assert_eq!(f.len(), 3, "{f:?}");
    }
}
