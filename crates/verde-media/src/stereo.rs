//! Recording a two-party call to one stereo WAV file: caller on the left, agent on the right.
//!
//! Each side is fed the decoded frames its own leg *receives* (the caller leg's
//! [`MediaSession`](crate::MediaSession) hears the caller, the agent leg's hears the agent),
//! taken from `poll_audio` with the audio tap on. The two legs are separate RTP streams with
//! unrelated timestamps, clocks and losses, so each channel is placed on the recording's own
//! timeline: RTP timestamps keep a channel's frames contiguous and reproduce its gaps (lost
//! packets, silence suppression), and wall time (`now`) anchors the channel and re-anchors it
//! when its timestamps stray (a new stream, a restart, long clock drift).
//!
//! The file is written as it goes, with bounded memory: a stretch of time is written once both
//! channels have covered it, or, when one side is silent or sends nothing at all, once it lies
//! [`COMMIT_DELAY`] behind wall time, that side being filled with silence. So an N-second
//! recording is an N-second file whatever either side sends.
//!
//! Crash behaviour: the WAV header is rewritten about once a second of audio (and hound
//! rewrites it when the writer is dropped during an unwind), so a process killed mid-call
//! leaves a valid file that reads back up to the last header update, i.e. all but the last
//! ~1.5 s of the call (the last second since the header update plus the commit delay).
//!
//! Sans-IO apart from the file itself: time comes in as `now`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::prompt::SAMPLE_RATE;
use crate::record::{duration_of, samples_in, RecordError};
use crate::session::{TapDirection, TapFrame};

/// How far behind wall time the file may lag while waiting for the slower channel; older
/// audio that arrives later is dropped. It exceeds the largest timestamp-versus-wall-time skew
/// tolerated (250 ms) plus a frame, so frames placed by their timestamps never fall before what
/// is already written.
pub const COMMIT_DELAY: Duration = Duration::from_millis(500);
/// A frame whose timestamp places it further than this from where wall time says it ended is
/// placed by wall time instead (new stream, timestamp restart, drift). Above jitter-buffer
/// bursts and scheduling delays, below a pause anyone would notice being shifted.
const MAX_SKEW: u64 = SAMPLE_RATE as u64 / 4;
/// The header is rewritten this often (in sample frames) so a crash leaves a readable file.
const FLUSH_EVERY: u64 = SAMPLE_RATE as u64;

/// Which side of the stereo file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The caller.
    Left,
    /// The agent.
    Right,
}

/// One channel's audio not yet written; it starts at the file's current end.
#[derive(Debug, Default)]
struct Lane {
    pending: VecDeque<i16>,
    /// The last frame placed: (its RTP timestamp, its position in sample frames).
    anchor: Option<(u32, u64)>,
}

/// Writes a two-party call to an 8 kHz 16-bit stereo WAV file as it happens.
pub struct StereoRecorder {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    path: PathBuf,
    started: Instant,
    /// Sample frames (left+right pairs) written so far.
    written: u64,
    flushed_at: u64,
    lanes: [Lane; 2],
}

impl std::fmt::Debug for StereoRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoRecorder")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish()
    }
}

impl StereoRecorder {
    /// Creates (or truncates) `path`; the recording's time zero is `now`.
    pub fn create(path: impl Into<PathBuf>, now: Instant) -> Result<StereoRecorder, RecordError> {
        let path = path.into();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|source| RecordError {
            path: path.clone(),
            source,
        })?;
        Ok(StereoRecorder {
            writer: Some(writer),
            path,
            started: now,
            written: 0,
            flushed_at: 0,
            lanes: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `now` given to [`Self::create`].
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The audio written to the file so far (it trails wall time by up to [`COMMIT_DELAY`]).
    pub fn duration(&self) -> Duration {
        duration_of(self.written)
    }

    /// A caller frame (from the caller leg's `poll_audio`).
    pub fn push_left(&mut self, frame: &TapFrame, now: Instant) -> Result<(), RecordError> {
        self.push(Channel::Left, frame, now)
    }

    /// An agent frame (from the agent leg's `poll_audio`).
    pub fn push_right(&mut self, frame: &TapFrame, now: Instant) -> Result<(), RecordError> {
        self.push(Channel::Right, frame, now)
    }

    /// Adds one tapped frame to `channel`. Only frames the leg received count: what we sent
    /// on that leg (prompts, the other party relayed) is skipped. Frames of one channel must
    /// come in the order `poll_audio` gives them; `now` is when they were polled.
    pub fn push(
        &mut self,
        channel: Channel,
        frame: &TapFrame,
        now: Instant,
    ) -> Result<(), RecordError> {
        if frame.direction != TapDirection::Received {
            return Ok(());
        }
        self.push_pcm(channel, frame.timestamp, &frame.pcm, now)
    }

    /// Adds decoded 8 kHz samples to `channel`; `timestamp` is the RTP timestamp of the first
    /// sample on the channel's own stream (only differences between pushes matter).
    pub fn push_pcm(
        &mut self,
        channel: Channel,
        timestamp: u32,
        pcm: &[i16],
        now: Instant,
    ) -> Result<(), RecordError> {
        if !pcm.is_empty() {
            let written = self.written;
            let len = pcm.len() as u64;
            // Where wall time puts the frame: it ended about now.
            let by_wall = self.wall_position(now).saturating_sub(len);
            let lane = &mut self.lanes[channel as usize];
            let pos = match lane.anchor {
                None => by_wall,
                Some((ts, at)) => {
                    let delta = i64::from(timestamp.wrapping_sub(ts) as i32);
                    let by_ts = at as i64 + delta;
                    if by_ts < 0 || by_ts.abs_diff(by_wall as i64) > MAX_SKEW {
                        tracing::debug!(
                            ?channel,
                            timestamp,
                            "stereo recording: timestamps stray from wall time, re-anchoring"
                        );
                        by_wall
                    } else {
                        by_ts as u64
                    }
                }
            };
            lane.anchor = Some((timestamp, pos));
            let end = written + lane.pending.len() as u64;
            // What overlaps audio already queued or written (duplicates, a backwards
            // re-anchor, a frame later than the commit delay) is dropped.
            let skip = end.saturating_sub(pos).min(len) as usize;
            let gap = pos.saturating_sub(end) as usize;
            lane.pending.extend(std::iter::repeat_n(0, gap));
            lane.pending.extend(&pcm[skip..]);
        }
        self.advance(now)
    }

    /// Writes out what is due at `now`: everything both channels have covered, and anything
    /// older than [`COMMIT_DELAY`] (a missing side becomes silence). Pushes call it; call it
    /// on a timer as well (every second or so) so that a call where both sides are silent
    /// still reaches the disk.
    pub fn advance(&mut self, now: Instant) -> Result<(), RecordError> {
        let both = self
            .lanes
            .iter()
            .map(|l| self.written + l.pending.len() as u64)
            .min()
            .unwrap_or(self.written);
        let forced = self
            .wall_position(now)
            .saturating_sub(samples_in(COMMIT_DELAY));
        self.write_until(both.max(forced))
    }

    /// Ends the recording at `now`: pads both channels with silence up to `now`, drops audio
    /// placed beyond it, and writes the final header. Returns the recording's duration, which
    /// is `now` minus the start (to the sample).
    pub fn finish(mut self, now: Instant) -> Result<Duration, RecordError> {
        let end = self.wall_position(now);
        self.write_until(end)?;
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

    /// Writes sample frames up to position `end`, silence where a channel has nothing.
    fn write_until(&mut self, end: u64) -> Result<(), RecordError> {
        let n = end.saturating_sub(self.written);
        if n == 0 {
            return Ok(());
        }
        let path = &self.path;
        let err = |source| RecordError {
            path: path.clone(),
            source,
        };
        let writer = self.writer.as_mut().expect("the writer lives until finish");
        // The sample writer's buffer is sized per call; keep each call at a few kB.
        let mut left = n;
        while left > 0 {
            let chunk = left.min(u64::from(SAMPLE_RATE));
            let mut w = writer.get_i16_writer(chunk as u32 * 2);
            for _ in 0..chunk {
                let [l, r] = &mut self.lanes;
                w.write_sample(l.pending.pop_front().unwrap_or(0));
                w.write_sample(r.pending.pop_front().unwrap_or(0));
            }
            w.flush().map_err(err)?;
            left -= chunk;
        }
        self.written += n;
        if self.written - self.flushed_at >= FLUSH_EVERY {
            writer.flush().map_err(err)?;
            self.flushed_at = self.written;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testaudio::*;

    const FRAME: usize = 160;

    /// (spec, left, right)
    fn read(path: &Path) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        let spec = r.spec();
        let all: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        let left = all.iter().step_by(2).copied().collect();
        let right = all.iter().skip(1).step_by(2).copied().collect();
        (spec, left, right)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_known_timeline_with_gaps_gives_the_exact_frame_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        // 3 s call. Caller: frames 0..50 and 75..150 (500 ms lost in between), timestamps
        // wrapping. Agent: nothing for the first second, then frames 50..100 only.
        let (cts, ats) = (u32::MAX - 1000, 123_456u32);
        for i in 0..150usize {
            let now = at(t0, 20 * (i as u64 + 1));
            if !(50..75).contains(&i) {
                let ts = cts.wrapping_add((i * FRAME) as u32);
                rec.push_left(&received(ts, vec![1000; FRAME]), now)
                    .unwrap();
            }
            if (50..100).contains(&i) {
                let ts = ats.wrapping_add((i * FRAME) as u32);
                rec.push_right(&received(ts, vec![-2000; FRAME]), now)
                    .unwrap();
            }
        }
        let d = rec.finish(at(t0, 3000)).unwrap();
        assert_eq!(d, Duration::from_secs(3));

        let (spec, left, right) = read(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        assert_eq!(left.len(), 24_000);
        assert_eq!(right.len(), 24_000);
        let f = |i: usize| i * FRAME;
        assert!(left[..f(50)].iter().all(|&s| s == 1000));
        assert!(left[f(50)..f(75)].iter().all(|&s| s == 0));
        assert!(left[f(75)..f(150)].iter().all(|&s| s == 1000));
        assert!(left[f(150)..].iter().all(|&s| s == 0));
        assert!(right[..f(50)].iter().all(|&s| s == 0));
        assert!(right[f(50)..f(100)].iter().all(|&s| s == -2000));
        assert!(right[f(100)..].iter().all(|&s| s == 0));
    }

    #[test]
    fn caller_tone_left_agent_tone_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tones.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        for i in 0..100usize {
            let now = at(t0, 20 * (i as u64 + 1));
            // The agent's frames are polled a few ms later than the caller's, as they would be
            // from two sockets.
            rec.push_left(
                &received((i * FRAME) as u32, tone(440.0, i * FRAME, FRAME)),
                now,
            )
            .unwrap();
            let ts = 9_000u32 + (i * FRAME) as u32;
            rec.push_right(
                &received(ts, tone(1000.0, i * FRAME, FRAME)),
                now + Duration::from_millis(7),
            )
            .unwrap();
        }
        assert_eq!(rec.finish(at(t0, 2000)).unwrap(), Duration::from_secs(2));
        let (_, left, right) = read(&path);
        let (l, r) = (&left[..8000], &right[..8000]);
        let (l440, l1000) = (level(l, 440.0), level(l, 1000.0));
        let (r440, r1000) = (level(r, 440.0), level(r, 1000.0));
        assert!(
            l440 > 7000.0 && l1000 < 100.0,
            "left: {l440} @440, {l1000} @1000"
        );
        assert!(
            r1000 > 7000.0 && r440 < 100.0,
            "right: {r440} @440, {r1000} @1000"
        );
        // Sample-exact copies, each placed where wall time first put it: the agent's stream
        // 7 ms (56 samples) later, its tail cut at the end of the recording.
        assert!(left == tone(440.0, 0, 16_000), "left is the caller's tone");
        assert!(right[..56].iter().all(|&s| s == 0));
        assert!(
            right[56..] == tone(1000.0, 0, 16_000 - 56),
            "right is the agent's tone"
        );
    }

    #[test]
    fn one_silent_side_still_reaches_the_disk_with_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oneside.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        let mut most_pending = 0;
        // Two minutes of caller, nothing at all from the agent.
        for i in 0..6_000usize {
            let now = at(t0, 20 * (i as u64 + 1));
            rec.push_left(&received((i * FRAME) as u32, vec![500; FRAME]), now)
                .unwrap();
            most_pending = most_pending.max(rec.lanes[0].pending.len());
        }
        let lag = samples_in(COMMIT_DELAY) as usize;
        assert!(
            most_pending <= lag + FRAME,
            "{most_pending} samples held back"
        );
        assert!(rec.duration() >= Duration::from_secs(120) - COMMIT_DELAY);
        // Readable before finish, as after a crash: at most the commit delay plus one header
        // interval short of the two minutes.
        let (_, left, right) = read(&path);
        assert!(
            left.len() as u64 >= 120 * 8000 - lag as u64 - FLUSH_EVERY,
            "{} readable",
            left.len()
        );
        assert!(left.iter().all(|&s| s == 500) && right.iter().all(|&s| s == 0));
        assert_eq!(
            rec.finish(at(t0, 120_000)).unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(read(&path).1.len(), 120 * 8000);
    }

    #[test]
    fn advance_writes_a_call_where_nobody_sends_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        rec.advance(at(t0, 5000)).unwrap();
        assert_eq!(rec.duration(), Duration::from_millis(4500));
        assert!(
            read(&path).1.len() >= 4000,
            "header flushed while recording"
        );
        assert_eq!(rec.finish(at(t0, 6000)).unwrap(), Duration::from_secs(6));
        let (_, left, right) = read(&path);
        assert_eq!((left.len(), right.len()), (48_000, 48_000));
    }

    #[test]
    fn late_jittered_and_duplicate_frames_keep_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jitter.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        // Agent frames 0..50, each with a distinct value, delivered with up to 60 ms of
        // jitter (three released at once, as after a jitter-buffer wait) and one duplicate.
        let delays = [0u64, 5, 60, 40, 20, 3, 0, 11];
        for i in 0..50usize {
            let now = at(t0, 20 * (i as u64 + 1) + delays[i % delays.len()]);
            let frame = received(70_000 + (i * FRAME) as u32, vec![i as i16 + 1; FRAME]);
            rec.push_right(&frame, now).unwrap();
            if i == 30 {
                rec.push_right(&frame, now).unwrap();
            }
        }
        rec.finish(at(t0, 1100)).unwrap();
        let (_, left, right) = read(&path);
        assert_eq!(right.len(), 8800);
        for i in 0..50 {
            assert!(
                right[i * FRAME..(i + 1) * FRAME]
                    .iter()
                    .all(|&s| s == i as i16 + 1),
                "frame {i} in place"
            );
        }
        assert!(right[50 * FRAME..].iter().all(|&s| s == 0));
        assert!(left.iter().all(|&s| s == 0));
    }

    #[test]
    fn a_timestamp_jump_is_placed_by_wall_time_and_sent_frames_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jump.wav");
        let t0 = Instant::now();
        let mut rec = StereoRecorder::create(&path, t0).unwrap();
        for i in 0..10usize {
            rec.push_left(
                &received((i * FRAME) as u32, vec![3; FRAME]),
                at(t0, 20 * (i as u64 + 1)),
            )
            .unwrap();
        }
        // The caller's phone restarts its stream with unrelated timestamps 300 ms later.
        rec.push_left(&received(3_000_000_000, vec![4; FRAME]), at(t0, 500))
            .unwrap();
        let sent = TapFrame {
            direction: TapDirection::Sent,
            timestamp: 0,
            pcm: vec![9; FRAME],
        };
        rec.push_right(&sent, at(t0, 500)).unwrap();
        rec.finish(at(t0, 500)).unwrap();
        let (_, left, right) = read(&path);
        assert_eq!(left.len(), 4000);
        assert!(left[..10 * FRAME].iter().all(|&s| s == 3));
        assert!(left[10 * FRAME..24 * FRAME].iter().all(|&s| s == 0));
        assert!(left[24 * FRAME..].iter().all(|&s| s == 4));
        assert!(right.iter().all(|&s| s == 0));
    }

    #[test]
    fn creating_in_a_missing_directory_names_the_file() {
        let err = StereoRecorder::create("/nonexistent-dir/y.wav", Instant::now()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("recording /nonexistent-dir/y.wav:"),
            "{err}"
        );
    }
}
