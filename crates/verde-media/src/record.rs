//! Recording one leg's received audio to a WAV file (voicemail).
//!
//! A [`Recorder`] takes the decoded frames a [`MediaSession`](crate::MediaSession) hands out
//! through `poll_audio` (with the audio tap on) and writes 8 kHz mono 16-bit PCM with hound.
//! RTP timestamps place each frame on the timeline, so what the network lost and what the
//! caller's phone suppressed as silence come back as silence: the file lasts as long as the
//! recording did in wall time, not as long as the audio that happened to arrive.
//!
//! Sans-IO apart from the file itself: time comes in as `now`, nothing here reads the clock.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::prompt::SAMPLE_RATE;
use crate::session::{TapDirection, TapFrame};

/// A frame whose timestamp places it this far from where wall time says it should be is
/// taken as a new stream (the source restarted its timestamps or changed SSRC) and is placed
/// by wall time instead. Far above any jitter buffer depth, far below a plausible pause.
const MAX_SKEW_SAMPLES: u64 = SAMPLE_RATE as u64;
/// The WAV header is rewritten this often, so a crash leaves a valid file up to that point.
const FLUSH_EVERY_SAMPLES: u64 = SAMPLE_RATE as u64;

/// A recording file that could not be created or written.
#[derive(Debug, thiserror::Error)]
#[error("recording {}: {source}", path.display())]
pub struct RecordError {
    pub path: PathBuf,
    #[source]
    pub source: hound::Error,
}

/// Whether a [`Recorder`] still takes audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    Recording,
    /// The maximum duration is reached: further frames are ignored; call `finish`.
    Full,
}

/// Writes the received audio of one call leg to a WAV file.
pub struct Recorder {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    path: PathBuf,
    started: Instant,
    max_samples: u64,
    /// Samples written so far (the position of the next one).
    written: u64,
    /// Where the last frame went: (its RTP timestamp, its position in samples).
    anchor: Option<(u32, u64)>,
    flushed_at: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("written", &self.written)
            .field("max_samples", &self.max_samples)
            .finish()
    }
}

impl Recorder {
    /// Creates (or truncates) `path`; the recording starts at `now` and stops growing at
    /// `max_duration`.
    pub fn create(
        path: impl Into<PathBuf>,
        max_duration: Duration,
        now: Instant,
    ) -> Result<Recorder, RecordError> {
        let path = path.into();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|source| RecordError {
            path: path.clone(),
            source,
        })?;
        Ok(Recorder {
            writer: Some(writer),
            path,
            started: now,
            max_samples: samples_in(max_duration),
            written: 0,
            anchor: None,
            flushed_at: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the maximum duration is reached in wall time: arm a timer here and `finish`, since
    /// a silent caller (silence suppression) sends no frames that would tell.
    pub fn deadline(&self) -> Instant {
        self.started + duration_of(self.max_samples)
    }

    /// The audio written so far.
    pub fn duration(&self) -> Duration {
        duration_of(self.written)
    }

    pub fn status(&self) -> RecordStatus {
        if self.written >= self.max_samples {
            RecordStatus::Full
        } else {
            RecordStatus::Recording
        }
    }

    /// Adds one frame from `MediaSession::poll_audio`; frames we sent (prompts, the beep) are
    /// skipped. Frames must come in the order `poll_audio` gives them.
    pub fn push(&mut self, frame: &TapFrame, now: Instant) -> Result<RecordStatus, RecordError> {
        if frame.direction != TapDirection::Received || frame.pcm.is_empty() {
            return Ok(self.status());
        }
        let len = frame.pcm.len() as u64;
        // Where wall time puts the frame: it ended about now.
        let by_wall = self.wall_position(now).saturating_sub(len);
        let pos = match self.anchor {
            None => by_wall,
            Some((ts, at)) => {
                let delta = i64::from(frame.timestamp.wrapping_sub(ts) as i32);
                let by_ts = at as i64 + delta;
                if by_ts < 0 || by_ts.abs_diff(by_wall as i64) > MAX_SKEW_SAMPLES {
                    tracing::debug!(
                        timestamp = frame.timestamp,
                        "recording: timestamp jump, placing the frame by wall time"
                    );
                    by_wall
                } else {
                    by_ts as u64
                }
            }
        };
        self.anchor = Some((frame.timestamp, pos));
        // A duplicate or overlapping frame only adds what lies beyond what is written.
        let skip = self.written.saturating_sub(pos).min(len) as usize;
        self.silence_until(pos)?;
        self.write(&frame.pcm[skip..])?;
        Ok(self.status())
    }

    /// Ends the recording: pads silence up to `now` (the caller may have been silent at the
    /// end), capped at the maximum, and writes the final header. Returns the duration.
    pub fn finish(mut self, now: Instant) -> Result<Duration, RecordError> {
        let end = self.wall_position(now);
        self.silence_until(end)?;
        let writer = self.writer.take().expect("the writer lives until finish");
        writer.finalize().map_err(|source| RecordError {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.duration())
    }

    fn wall_position(&self, now: Instant) -> u64 {
        samples_in(now.saturating_duration_since(self.started))
    }

    fn silence_until(&mut self, pos: u64) -> Result<(), RecordError> {
        let n = pos.min(self.max_samples).saturating_sub(self.written);
        self.write_with(n, |_| 0)
    }

    fn write(&mut self, pcm: &[i16]) -> Result<(), RecordError> {
        self.write_with(pcm.len() as u64, |i| pcm[i])
    }

    /// Writes `n` samples (capped at the maximum), sample `i` being `sample(i)`.
    fn write_with(&mut self, n: u64, sample: impl Fn(usize) -> i16) -> Result<(), RecordError> {
        let n = n.min(self.max_samples.saturating_sub(self.written));
        if n == 0 {
            return Ok(());
        }
        let path = &self.path;
        let err = |source| RecordError {
            path: path.clone(),
            source,
        };
        let writer = self.writer.as_mut().expect("the writer lives until finish");
        {
            let mut w = writer.get_i16_writer(n as u32);
            for i in 0..n as usize {
                w.write_sample(sample(i));
            }
            w.flush().map_err(err)?;
        }
        self.written += n;
        if self.written - self.flushed_at >= FLUSH_EVERY_SAMPLES {
            writer.flush().map_err(err)?;
            self.flushed_at = self.written;
        }
        Ok(())
    }
}

pub(crate) fn samples_in(d: Duration) -> u64 {
    (d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as u64
}

pub(crate) fn duration_of(samples: u64) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testaudio::*;

    const FRAME: usize = 160;

    fn read(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        let spec = r.spec();
        let samples = r.samples::<i16>().map(Result::unwrap).collect();
        (spec, samples)
    }

    /// Frequency (10 Hz steps, 100-3900 Hz) with the most energy, by a plain DFT of 100 ms
    /// under a Hann window (10 Hz resolution, no leakage nulls between the steps).
    fn dominant_frequency(samples: &[i16]) -> f64 {
        let rate = f64::from(SAMPLE_RATE);
        let n = 800.min(samples.len());
        let pi2 = 2.0 * std::f64::consts::PI;
        (10..390)
            .map(|k| f64::from(k) * 10.0)
            .map(|f| {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, &s) in samples[..n].iter().enumerate() {
                    let hann = 0.5 - 0.5 * (pi2 * i as f64 / n as f64).cos();
                    let x = f64::from(s) * hann;
                    let w = pi2 * f * i as f64 / rate;
                    re += x * w.cos();
                    im += x * w.sin();
                }
                (f, re * re + im * im)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    }

    /// Feeds frames `indices` (20 ms each, timestamps from `ts0`) at the wall time they end.
    fn feed(rec: &mut Recorder, t0: Instant, ts0: u32, indices: impl Iterator<Item = usize>) {
        for i in indices {
            let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
            let ts = ts0.wrapping_add((i * FRAME) as u32);
            rec.push(&received(ts, vec![1000; FRAME]), now).unwrap();
        }
    }

    #[test]
    fn a_gap_becomes_silence_and_the_duration_is_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gap.wav");
        let t0 = Instant::now();
        let mut rec = Recorder::create(&path, Duration::from_secs(60), t0).unwrap();
        // 1 s of audio, 500 ms lost (frames 50..75), then 500 ms more; timestamps wrap.
        let ts0 = u32::MAX - 3000;
        feed(&mut rec, t0, ts0, (0..50).chain(75..100));
        let duration = rec.finish(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(duration, Duration::from_secs(2));

        let (spec, samples) = read(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 8000, 16)
        );
        assert_eq!(samples.len(), 16_000);
        assert!(samples[..50 * FRAME].iter().all(|&s| s == 1000));
        assert!(samples[50 * FRAME..75 * FRAME].iter().all(|&s| s == 0));
        assert!(samples[75 * FRAME..100 * FRAME].iter().all(|&s| s == 1000));
        // The caller went quiet before the end: silence up to `finish`.
        assert!(samples[100 * FRAME..].iter().all(|&s| s == 0));
    }

    #[test]
    fn duplicates_and_sent_frames_are_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dup.wav");
        let t0 = Instant::now();
        let mut rec = Recorder::create(&path, Duration::from_secs(60), t0).unwrap();
        let now = t0 + Duration::from_millis(20);
        rec.push(&received(500, vec![7; FRAME]), now).unwrap();
        rec.push(&received(500, vec![9; FRAME]), now).unwrap();
        let sent = TapFrame {
            direction: TapDirection::Sent,
            timestamp: 500,
            pcm: vec![3; FRAME],
        };
        rec.push(&sent, now).unwrap();
        assert_eq!(rec.duration(), Duration::from_millis(20));
        rec.finish(now).unwrap();
        let (_, samples) = read(&path);
        assert_eq!(samples, vec![7; FRAME]);
    }

    #[test]
    fn a_timestamp_jump_is_placed_by_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jump.wav");
        let t0 = Instant::now();
        let mut rec = Recorder::create(&path, Duration::from_secs(60), t0).unwrap();
        feed(&mut rec, t0, 1000, 0..10);
        // A new stream with unrelated timestamps, 100 ms of silence later.
        let now = t0 + Duration::from_millis(320);
        rec.push(&received(3_000_000_000, vec![5; FRAME]), now)
            .unwrap();
        assert_eq!(rec.duration(), Duration::from_millis(320));
        let d = rec.finish(now).unwrap();
        assert_eq!(d, Duration::from_millis(320));
        let (_, samples) = read(&path);
        assert!(samples[10 * FRAME..15 * FRAME].iter().all(|&s| s == 0));
        assert!(samples[15 * FRAME..].iter().all(|&s| s == 5));
    }

    #[test]
    fn the_maximum_duration_caps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("max.wav");
        let t0 = Instant::now();
        let max = Duration::from_millis(500);
        let mut rec = Recorder::create(&path, max, t0).unwrap();
        assert_eq!(rec.deadline(), t0 + max);
        let mut statuses = Vec::new();
        for i in 0..40usize {
            let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
            statuses.push(
                rec.push(&received((i * FRAME) as u32, vec![1; FRAME]), now)
                    .unwrap(),
            );
        }
        assert_eq!(
            statuses.iter().position(|s| *s == RecordStatus::Full),
            Some(24)
        );
        assert_eq!(rec.finish(t0 + Duration::from_secs(5)).unwrap(), max);
        assert_eq!(read(&path).1.len(), 4000);
    }

    #[test]
    fn a_tone_survives_the_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        let t0 = Instant::now();
        let mut rec = Recorder::create(&path, Duration::from_secs(60), t0).unwrap();
        for i in 0..50usize {
            let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
            let pcm = tone(697.0, i * FRAME, FRAME);
            rec.push(&received(77 + (i * FRAME) as u32, pcm), now)
                .unwrap();
        }
        let d = rec.finish(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(d, Duration::from_secs(1));
        let (_, samples) = read(&path);
        assert_eq!(samples, tone(697.0, 0, 8000));
        let f = dominant_frequency(&samples);
        assert!((f - 697.0).abs() <= 10.0, "dominant frequency {f} Hz");
    }

    #[test]
    fn the_header_is_valid_before_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.wav");
        let t0 = Instant::now();
        let mut rec = Recorder::create(&path, Duration::from_secs(60), t0).unwrap();
        feed(&mut rec, t0, 0, 0..60);
        // As if the process died now: the file must already read back at least 1 s.
        let (_, samples) = read(&path);
        assert!(samples.len() >= 8000, "{} samples readable", samples.len());
        drop(rec);
    }

    #[test]
    fn creating_in_a_missing_directory_names_the_file() {
        let err = Recorder::create(
            "/nonexistent-dir/x.wav",
            Duration::from_secs(1),
            Instant::now(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("recording /nonexistent-dir/x.wav:"),
            "{err}"
        );
    }
}
