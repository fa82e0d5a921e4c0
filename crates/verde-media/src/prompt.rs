//! Prompt cache: audio files decoded once at load time into 8 kHz PCM, PCMU and PCMA.
//!
//! Layout: `dir/<lang>/<name>.<ext>` for per-language prompts, `dir/<name>.<ext>` for
//! language-neutral ones (tones, music). Decoding uses symphonia; resampling uses rubato's
//! windowed-sinc resampler, whose low-pass keeps 44.1/48 kHz material from aliasing into the
//! telephone band.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rubato::audioadapter_buffers::owned::InterleavedOwned;
use rubato::{Async, FixedAsync, Resampler, SincInterpolationParameters, WindowFunction};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::g711;
use crate::sdp::Codec;

const EXTENSIONS: [&str; 4] = ["wav", "flac", "mp3", "ogg"];
/// Output sample rate.
pub const SAMPLE_RATE: u32 = 8000;

/// One decoded prompt, ready to packetise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// 8 kHz mono linear PCM.
    pub pcm: Vec<i16>,
    pub ulaw: Vec<u8>,
    pub alaw: Vec<u8>,
    pub duration: Duration,
}

impl Prompt {
    /// A prompt from 8 kHz mono samples (generated tones, tests).
    pub fn from_pcm(samples_8k: Vec<i16>) -> Prompt {
        let mut ulaw = Vec::new();
        let mut alaw = Vec::new();
        g711::encode_ulaw(&samples_8k, &mut ulaw);
        g711::encode_alaw(&samples_8k, &mut alaw);
        let duration =
            Duration::from_micros(samples_8k.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
        Prompt {
            pcm: samples_8k,
            ulaw,
            alaw,
            duration,
        }
    }

    /// `ms` milliseconds of digital silence.
    pub fn silence(ms: u32) -> Prompt {
        Prompt::from_pcm(vec![0; ms as usize * SAMPLE_RATE as usize / 1000])
    }

    /// The encoded samples for `codec`.
    pub fn encoded(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.ulaw,
            Codec::Pcma => &self.alaw,
        }
    }

    /// Decodes and converts one audio file.
    pub fn load_file(path: &Path) -> Result<Prompt, PromptError> {
        let err = |reason: String| PromptError {
            path: path.to_path_buf(),
            reason,
        };
        let (samples, rate) = decode_mono(path).map_err(err)?;
        if samples.is_empty() {
            return Err(err("no audio samples".into()));
        }
        let pcm = resample_to_8k(&samples, rate).map_err(err)?;
        Ok(Prompt::from_pcm(pcm))
    }
}

/// A file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PromptError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Decodes the first audio track to mono f32 in [-1, 1] at its native rate.
fn decode_mono(path: &Path) -> Result<(Vec<f32>, u32), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| format!("unrecognised audio format: {e}"))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("no audio track")?;
    let track_id = track.id;
    let mut rate = track.codec_params.sample_rate;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| format!("unsupported codec: {e}"))?;

    let mut mono = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(format!("read error: {e}")),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A corrupt frame in a long file is skipped rather than failing the whole prompt.
            Err(SymphoniaError::DecodeError(e)) => {
                tracing::warn!(path = %path.display(), error = e, "skipping undecodable frame");
                continue;
            }
            Err(e) => return Err(format!("decode error: {e}")),
        };
        let spec = *decoded.spec();
        rate = Some(spec.rate);
        let channels = spec.channels.count().max(1);
        let needed = decoded.capacity() as u64;
        let sb = match &mut buf {
            Some(b) if b.capacity() as u64 >= needed * channels as u64 => b,
            _ => buf.insert(SampleBuffer::new(needed, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(
            sb.samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
    }
    let rate = rate.ok_or("unknown sample rate")?;
    Ok((mono, rate))
}

fn to_i16(x: f32) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

fn resample_to_8k(samples: &[f32], rate: u32) -> Result<Vec<i16>, String> {
    if rate == SAMPLE_RATE {
        return Ok(samples.iter().map(|&x| to_i16(x)).collect());
    }
    if rate == 0 {
        return Err("sample rate 0".into());
    }
    let ratio = f64::from(SAMPLE_RATE) / f64::from(rate);
    let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2);
    let mut resampler = Async::<f32>::new_sinc(ratio, 1.0, &params, 1024, 1, FixedAsync::Input)
        .map_err(|e| format!("cannot resample from {rate} Hz: {e}"))?;
    let input = InterleavedOwned::new_from(samples.to_vec(), 1, samples.len())
        .map_err(|e| format!("resampler input: {e}"))?;
    let out = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| format!("resampling failed: {e}"))?;
    Ok(out.take_data().into_iter().map(to_i16).collect())
}

/// All prompts, keyed by language (`None` = language-neutral) and file stem.
#[derive(Debug, Default, Clone)]
pub struct PromptCache {
    prompts: HashMap<(Option<String>, String), Arc<Prompt>>,
}

impl PromptCache {
    /// Loads every prompt under `dir`. All failures are collected so one run shows them all.
    pub fn load(dir: &Path) -> Result<PromptCache, Vec<PromptError>> {
        let mut cache = PromptCache::default();
        let mut errors = Vec::new();
        let mut sources: HashMap<(Option<String>, String), PathBuf> = HashMap::new();
        let top = match read_dir_sorted(dir) {
            Ok(entries) => entries,
            Err(reason) => {
                return Err(vec![PromptError {
                    path: dir.to_path_buf(),
                    reason,
                }])
            }
        };
        let mut files: Vec<(Option<String>, PathBuf)> = Vec::new();
        for path in top {
            if path.is_dir() {
                let Some(lang) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                match read_dir_sorted(&path) {
                    Ok(entries) => files.extend(
                        entries
                            .into_iter()
                            .filter(|p| p.is_file())
                            .map(|p| (Some(lang.clone()), p)),
                    ),
                    Err(reason) => errors.push(PromptError { path, reason }),
                }
            } else {
                files.push((None, path));
            }
        }
        for (lang, path) in files {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let key = (lang, name);
            if let Some(first) = sources.get(&key) {
                errors.push(PromptError {
                    path: path.clone(),
                    reason: format!(
                        "duplicate prompt name (also {}); keep one format per prompt",
                        first.display()
                    ),
                });
                continue;
            }
            sources.insert(key.clone(), path.clone());
            match Prompt::load_file(&path) {
                Ok(prompt) => {
                    tracing::debug!(path = %path.display(), ms = prompt.duration.as_millis() as u64, "prompt loaded");
                    cache.prompts.insert(key, Arc::new(prompt));
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(cache)
        } else {
            Err(errors)
        }
    }

    /// The prompt `name` in `lang`, falling back to the language-neutral one.
    pub fn get(&self, lang: &str, name: &str) -> Option<Arc<Prompt>> {
        self.prompts
            .get(&(Some(lang.to_owned()), name.to_owned()))
            .or_else(|| self.prompts.get(&(None, name.to_owned())))
            .cloned()
    }

    /// Adds or replaces a prompt (e.g. generated tones); `lang` `None` = language-neutral.
    pub fn insert(&mut self, lang: Option<&str>, name: &str, prompt: Arc<Prompt>) {
        self.prompts
            .insert((lang.map(str::to_owned), name.to_owned()), prompt);
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Every (language, name) pair, for validating flows against what exists.
    pub fn keys(&self) -> impl Iterator<Item = (Option<&str>, &str)> {
        self.prompts
            .keys()
            .map(|(lang, name)| (lang.as_deref(), name.as_str()))
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read directory: {e}"))?;
    let mut out = Vec::new();
    for entry in rd {
        out.push(
            entry
                .map_err(|e| format!("cannot read directory: {e}"))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, channels: u16, secs: f32, freq: f32) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        let n = (rate as f32 * secs) as usize;
        for i in 0..n {
            let v = (0.5
                * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()
                * 32767.0) as i16;
            for _ in 0..channels {
                w.write_sample(v).unwrap();
            }
        }
        w.finalize().unwrap();
    }

    fn goertzel_energy(pcm: &[i16], f: f32) -> f32 {
        let c = 2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in pcm {
            let s0 = f32::from(x) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - c * s1 * s2
    }

    #[test]
    fn loads_per_language_and_neutral_prompts_and_resamples() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("it")).unwrap();
        write_wav(&dir.path().join("it/welcome.wav"), 16000, 2, 1.0, 440.0);
        write_wav(&dir.path().join("beep.wav"), 8000, 1, 0.5, 1000.0);
        write_wav(&dir.path().join("welcome.wav"), 8000, 1, 0.25, 440.0);
        std::fs::write(dir.path().join("README.txt"), "not audio").unwrap();

        let cache = PromptCache::load(dir.path()).unwrap();
        assert_eq!(cache.len(), 3);

        let it = cache.get("it", "welcome").unwrap();
        let ms = it.duration.as_millis() as i64;
        assert!((ms - 1000).abs() <= 10, "duration {ms} ms");
        assert_eq!(it.ulaw.len(), it.pcm.len());
        assert_eq!(it.alaw.len(), it.pcm.len());
        assert_eq!(it.ulaw[100], g711::linear_to_ulaw(it.pcm[100]));

        // The 440 Hz tone survives 16 kHz stereo -> 8 kHz mono and dominates nearby bins.
        let mid = &it.pcm[2000..6000];
        let at_440 = goertzel_energy(mid, 440.0);
        for other in [300.0, 600.0, 1000.0, 2000.0, 3500.0] {
            assert!(
                at_440 > 100.0 * goertzel_energy(mid, other),
                "440 vs {other}"
            );
        }
        let peak = mid.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((14000..=18000).contains(&peak), "level kept, peak {peak}");

        // Fallbacks.
        assert_eq!(
            cache.get("en", "welcome").unwrap().duration,
            Duration::from_millis(250)
        );
        assert_eq!(cache.get("it", "beep").unwrap().pcm.len(), 4000);
        assert!(cache.get("it", "missing").is_none());
        let mut keys: Vec<_> = cache.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![(None, "beep"), (None, "welcome"), (Some("it"), "welcome")]
        );
    }

    #[test]
    fn resamples_cd_rate_without_changing_pitch() {
        let dir = tempfile::tempdir().unwrap();
        write_wav(&dir.path().join("cd.wav"), 44100, 1, 0.5, 1000.0);
        let p = Prompt::load_file(&dir.path().join("cd.wav")).unwrap();
        let ms = p.duration.as_millis() as i64;
        assert!((ms - 500).abs() <= 5, "duration {ms} ms");
        let mid = &p.pcm[800..3200];
        let at_1000 = goertzel_energy(mid, 1000.0);
        assert!(at_1000 > 100.0 * goertzel_energy(mid, 1100.0));
        assert!(at_1000 > 100.0 * goertzel_energy(mid, 900.0));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.wav"), b"RIFF nonsense").unwrap();
        write_wav(&dir.path().join("ok.wav"), 8000, 1, 0.1, 440.0);
        std::fs::create_dir(dir.path().join("en")).unwrap();
        write_wav(&dir.path().join("en/dup.wav"), 8000, 1, 0.1, 440.0);
        std::fs::write(dir.path().join("en/dup.mp3"), b"x").unwrap();
        let errs = PromptCache::load(dir.path()).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.path.ends_with("broken.wav")));
        assert!(errs.iter().any(|e| e.path.ends_with("en/dup.mp3")));
        assert!(errs
            .iter()
            .any(|e| e.path.ends_with("en/dup.wav") && e.reason.contains("duplicate")));
        assert!(errs[0]
            .to_string()
            .contains(&dir.path().display().to_string()));

        let missing = PromptCache::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing[0].reason.contains("cannot read directory"));
    }

    #[test]
    fn generated_prompts() {
        let s = Prompt::silence(60);
        assert_eq!(s.pcm.len(), 480);
        assert_eq!(s.duration, Duration::from_millis(60));
        assert!(s.ulaw.iter().all(|&b| b == g711::ULAW_SILENCE));
        assert!(s.alaw.iter().all(|&b| b == g711::ALAW_SILENCE));
        let p = Prompt::from_pcm(vec![1000; 8]);
        assert_eq!(p.encoded(Codec::Pcmu), &[0xCE; 8]);
        assert_eq!(p.encoded(Codec::Pcma), &[0xFA; 8]);
    }
}
