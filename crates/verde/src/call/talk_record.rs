//! Recording of the conversation between the caller and an agent, per the queue's policy
//! (`recording:` in the config) or on demand from the agent's bar: a stereo WAV, the caller on
//! the left and the agent on the right, each channel what verde received from that side. The
//! caller is told first (the `recording.announce` prompt), as privacy law asks.

use super::*;
use crate::config::RecordMode;
use verde_cti::{EngineError, ErrorCode};

pub(super) struct TalkRecording {
    rec: verde_media::StereoRecorder,
    /// Relative to `<data>/recordings`, as the call record names it.
    file: String,
    started_at: DateTime<Utc>,
    agent: String,
}

impl Call {
    fn record_policy(&self) -> (RecordMode, u8) {
        let queue = self.queue_name();
        self.engine
            .cfg
            .recording
            .queues
            .get(&queue)
            .map(|p| (p.mode, p.percent))
            .unwrap_or_default()
    }

    /// An agent just started talking with the caller: record if the queue says so (the
    /// percentage is drawn once per call).
    pub(super) fn record_by_policy(&mut self, now: Instant) {
        if self.talk_rec.is_some() {
            return;
        }
        let wanted = match self.record_policy() {
            (RecordMode::All, _) => true,
            (RecordMode::Percent, pct) => *self
                .record_drawn
                .get_or_insert_with(|| rand::random::<u8>() % 100 < pct),
            (RecordMode::OnDemand | RecordMode::Off, _) => false,
        };
        if wanted {
            if let Err(e) = self.start_talk_recording(now) {
                tracing::error!(error = %e.message, "ALARM: the conversation cannot be recorded");
            }
        }
    }

    /// The bar's `record` command.
    pub(super) fn record_command(
        &mut self,
        agent: &str,
        on: bool,
        now: Instant,
    ) -> Result<(), EngineError> {
        let talking = self.talking_agent().is_some_and(|a| a == agent);
        if !talking {
            return Err(EngineError::new(
                ErrorCode::InvalidState,
                "you are not talking with the caller",
            ));
        }
        match (on, self.record_policy().0, self.talk_rec.is_some()) {
            (_, RecordMode::Off, _) => Err(EngineError::new(
                ErrorCode::Unavailable,
                "calls of this queue are not recorded",
            )),
            (true, _, true) => Err(EngineError::new(
                ErrorCode::InvalidState,
                "already recording",
            )),
            (false, _, false) => Err(EngineError::new(ErrorCode::InvalidState, "not recording")),
            (false, RecordMode::All, true) => Err(EngineError::new(
                ErrorCode::Forbidden,
                "every call of this queue is recorded",
            )),
            (true, _, false) => {
                tracing::info!(%agent, "agent starts recording from its bar");
                self.start_talk_recording(now)
            }
            (false, _, true) => {
                tracing::info!(%agent, "agent stops recording from its bar");
                self.stop_talk_recording(now);
                Ok(())
            }
        }
    }

    /// The agent whose leg is joined with the caller.
    pub(super) fn talking_agent(&self) -> Option<&str> {
        let Some(Bridge::Caller(id)) = &self.bridge else {
            return None;
        };
        self.legs
            .iter()
            .find(|l| l.call_id == *id && l.state == LegState::Answered && !l.number)
            .map(|l| l.agent.as_str())
    }

    fn start_talk_recording(&mut self, now: Instant) -> Result<(), EngineError> {
        let Some(agent) = self.talking_agent().map(str::to_string) else {
            return Err(EngineError::new(ErrorCode::InvalidState, "no conversation"));
        };
        let started_at = crate::clock::now();
        let safe = safe_file_stem(&self.start.call_id);
        let n = self.recordings.len() + 1;
        let file = format!("{}/{safe}-{n}.wav", started_at.format("%Y-%m-%d"));
        let path = self.engine.cfg.data.join("recordings").join(&file);
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Err(EngineError::new(
                    ErrorCode::Internal,
                    format!("{}: {e}", dir.display()),
                ));
            }
        }
        let rec = verde_media::StereoRecorder::create(&path, now)
            .map_err(|e| EngineError::new(ErrorCode::Internal, e.to_string()))?;
        // Only what is heard from now on.
        self.media.set_audio_tap(true);
        while self.media.poll_audio().is_some() {}
        for leg in self.legs.iter_mut().filter(|l| l.agent == agent) {
            if let Some(m) = leg.media.as_mut() {
                m.set_audio_tap(true);
                while m.poll_audio().is_some() {}
            }
        }
        if let Some(p) = self
            .engine
            .cfg
            .recording
            .announce
            .clone()
            .and_then(|name| self.prompt(&name))
        {
            self.media.play(vec![p], now);
        }
        tracing::info!(%file, %agent, "recording the conversation");
        self.engine.cti.publish(verde_cti::Event::Recording {
            agent: agent.as_str().into(),
            call: CallKey(self.key),
            on: true,
        });
        self.talk_rec = Some(TalkRecording {
            rec,
            file,
            started_at,
            agent,
        });
        Ok(())
    }

    /// Feeds the recorder with what each side sent since the last step.
    pub(super) fn feed_talk_recording(&mut self, now: Instant) {
        let Some(tr) = self.talk_rec.as_mut() else {
            return;
        };
        let mut failed = None;
        while let Some(f) = self.media.poll_audio() {
            if let Err(e) = tr.rec.push_left(&f, now) {
                failed = Some(e.to_string());
            }
        }
        let joined = match &self.bridge {
            Some(Bridge::Caller(id)) => Some(id.as_str()),
            _ => None,
        };
        for leg in self.legs.iter_mut() {
            let Some(m) = leg.media.as_mut() else {
                continue;
            };
            while let Some(f) = m.poll_audio() {
                // Only the agent joined with the caller: a consultation is not recorded.
                if joined == Some(leg.call_id.as_str()) {
                    if let Err(e) = tr.rec.push_right(&f, now) {
                        failed = Some(e.to_string());
                    }
                }
            }
        }
        if let Err(e) = tr.rec.advance(now) {
            failed = Some(e.to_string());
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, "ALARM: recording failed; stopping it");
            self.stop_talk_recording(now);
        }
    }

    /// Closes the WAV and notes it on the call record.
    pub(super) fn stop_talk_recording(&mut self, now: Instant) {
        let Some(tr) = self.talk_rec.take() else {
            return;
        };
        let path = tr.rec.path().to_path_buf();
        match tr.rec.finish(now) {
            Ok(d) => {
                tracing::info!(file = %tr.file, duration_ms = d.as_millis() as u64, "recording stopped")
            }
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "ALARM: recording not closed cleanly")
            }
        }
        if self.recording.is_none() {
            self.media.set_audio_tap(false);
        }
        for m in self.legs.iter_mut().filter_map(|l| l.media.as_mut()) {
            m.set_audio_tap(false);
        }
        self.engine.cti.publish(verde_cti::Event::Recording {
            agent: tr.agent.as_str().into(),
            call: CallKey(self.key),
            on: false,
        });
        self.recordings.push(verde_store::RecordingRef {
            file: tr.file,
            started_at: tr.started_at.to_rfc3339(),
            stopped_at: crate::clock::now().to_rfc3339(),
        });
    }
}
