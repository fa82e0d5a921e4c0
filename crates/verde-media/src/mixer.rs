//! Supervision of a bridged call: a supervisor's phone joins the caller and the agent as a
//! third leg, and a [`Mixer`] decides who hears whom ("listening in a double headset").
//!
//! | mode | caller hears | agent hears | supervisor hears |
//! |---|---|---|---|
//! | [`SupervisorMode::Listen`] | agent | caller | caller + agent |
//! | [`SupervisorMode::Whisper`] | agent | caller + supervisor | caller + agent |
//! | [`SupervisorMode::Barge`] | agent + supervisor | caller + supervisor | caller + agent |
//!
//! A listener who hears one party only gets that party's packets relayed as
//! [`crate::bridge_step`] would: at once, untouched (or PCMU<->PCMA transcoded), so a silent
//! supervisor changes nothing for the caller and the agent. A listener who hears two gets a
//! mix: each party's received audio is decoded into a short queue, and on a fixed 20 ms grid
//! one frame is taken from every party that has one, summed with saturation, encoded in the
//! listener's own codec and sent on its leg. A party with no frame for a tick (loss, silence
//! suppression, late packet) is simply left out of that tick's mix; when nobody a listener hears
//! has a frame, nothing is sent and the next frame starts a new talkspurt. A party's queue
//! starts playing one tick after its audio first arrives (20 ms of slack for arrival jitter)
//! and holds at most [`MAX_QUEUE`] of audio, dropping the oldest beyond.
//!
//! Switching mode changes how some listeners' audio is made; each such stream starts a new
//! talkspurt (marker bit, timestamps re-anchored), and the switch may repeat or skip one 20 ms
//! frame for that listener. Hold is the engine's business: with relaying off on a held leg
//! its audio stops reaching the mix, and prompts playing on a leg take precedence over what
//! the mixer sends it, as with [`crate::bridge_step`].
//!
//! RFC 4733 digits go between the caller and the agent as in a plain bridge, in every mode;
//! the supervisor's digits reach neither (they are still reported as
//! [`crate::MediaEvent::Dtmf`] on the supervisor's leg, for the engine to use as commands).
//!
//! Sans-IO: the call task calls [`Mixer::step`] after every input to any of the three legs
//! and at [`Mixer::poll_timeout`], then drains `poll_transmit` on all three.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::g711;
use crate::rtp::{FRAME_DURATION, SAMPLES_PER_FRAME};
use crate::sdp::Codec;
use crate::session::{MediaSession, Relay, RelayFrame};

/// The most audio a party's queue holds before its oldest samples are dropped: bounds the
/// delay a burst (a jitter buffer releasing held packets) or a fast remote clock can add.
pub const MAX_QUEUE: Duration = Duration::from_millis(100);
/// [`MAX_QUEUE`] at 8 kHz.
const MAX_QUEUE_SAMPLES: usize = 800;
/// Ticks run at once after the call task was late; older ones are dropped, not sent in a burst.
const MAX_CATCH_UP: u64 = 5;

/// A party of a supervised call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Caller,
    Agent,
    Supervisor,
}

impl Party {
    pub const ALL: [Party; 3] = [Party::Caller, Party::Agent, Party::Supervisor];
}

/// What the supervisor does on the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SupervisorMode {
    /// Hears both; nobody hears the supervisor.
    #[default]
    Listen,
    /// Hears both; only the agent hears the supervisor (coaching).
    Whisper,
    /// Everyone hears everyone (a three-way conference).
    Barge,
}

impl SupervisorMode {
    /// Whether `listener` hears `talker` in this mode (nobody hears themselves).
    pub fn hears(self, listener: Party, talker: Party) -> bool {
        use Party::*;
        match (listener, talker) {
            (l, t) if l == t => false,
            (Supervisor, _) | (Caller, Agent) | (Agent, Caller) => true,
            (Agent, Supervisor) => self != SupervisorMode::Listen,
            (Caller, Supervisor) => self == SupervisorMode::Barge,
            _ => false,
        }
    }
}

/// How a listener's audio is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// From one talker only: its packets are relayed as they come.
    Relay,
    /// Several talkers: mixed on the 20 ms grid.
    Mix,
}

fn route(mode: SupervisorMode, listener: Party) -> Route {
    let talkers = Party::ALL
        .iter()
        .filter(|&&t| mode.hears(listener, t))
        .count();
    if talkers == 1 {
        Route::Relay
    } else {
        Route::Mix
    }
}

/// One talker's decoded audio waiting for the grid.
#[derive(Debug, Default)]
struct Input {
    queue: VecDeque<i16>,
    /// The queue has been played from at the last tick (no start-up slack needed).
    playing: bool,
    /// Audio arrived while idle and has waited one tick.
    primed: bool,
    /// This tick's frame, if `present`.
    frame: Vec<i16>,
    present: bool,
}

impl Input {
    fn push(&mut self, pcm: &[i16]) {
        self.queue.extend(pcm);
        let excess = self.queue.len().saturating_sub(MAX_QUEUE_SAMPLES);
        if excess > 0 {
            tracing::debug!(excess, "mixer queue full: dropping the oldest audio");
            self.queue.drain(..excess);
        }
    }

    /// Takes this tick's frame into `self.frame`; sets and returns `present`.
    fn take(&mut self) -> bool {
        self.present = false;
        if self.queue.is_empty() {
            self.playing = false;
            self.primed = false;
            return false;
        }
        if !self.playing && !self.primed {
            self.primed = true;
            return false;
        }
        self.playing = true;
        let n = self.queue.len().min(SAMPLES_PER_FRAME);
        self.frame.clear();
        self.frame.extend(self.queue.drain(..n));
        self.frame.resize(SAMPLES_PER_FRAME, 0);
        self.present = true;
        true
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.playing = false;
        self.primed = false;
        self.present = false;
    }
}

#[derive(Debug)]
struct Output {
    route: Route,
    /// The next frame sent to this listener must start a new talkspurt (first frame, after a
    /// gap, after the route changed).
    fresh: bool,
}

/// Who hears whom on a supervised call; see the module documentation.
#[derive(Debug)]
pub struct Mixer {
    mode: SupervisorMode,
    origin: Instant,
    /// Index of the next grid tick to run; tick `k` is due at `origin + k * 20 ms`.
    next_tick: u64,
    inputs: [Input; 3],
    outputs: [Output; 3],
    pcm: Vec<i16>,
    mix: Vec<i32>,
    encoded: Vec<u8>,
}

impl Mixer {
    /// Starts supervising at `now`. All three sessions need [`MediaSession::set_relay`]`(true)`
    /// (the caller's and the agent's already have it while bridged; turn it on for the
    /// supervisor's leg when it answers).
    pub fn new(mode: SupervisorMode, now: Instant) -> Mixer {
        let outputs = Party::ALL.map(|p| {
            let route = route(mode, p);
            Output {
                route,
                // A relayed listener continues the bridge's stream as it was.
                fresh: route == Route::Mix,
            }
        });
        Mixer {
            mode,
            origin: now,
            next_tick: 0,
            inputs: Default::default(),
            outputs,
            pcm: Vec::with_capacity(SAMPLES_PER_FRAME),
            mix: Vec::with_capacity(SAMPLES_PER_FRAME),
            encoded: Vec::with_capacity(SAMPLES_PER_FRAME),
        }
    }

    pub fn mode(&self) -> SupervisorMode {
        self.mode
    }

    /// Switches mode; it applies from the next frame.
    pub fn set_mode(&mut self, mode: SupervisorMode) {
        if mode == self.mode {
            return;
        }
        tracing::debug!(from = ?self.mode, to = ?mode, "supervision mode");
        self.mode = mode;
        for p in Party::ALL {
            let out = &mut self.outputs[p as usize];
            let r = route(mode, p);
            if r != out.route {
                out.route = r;
                out.fresh = true;
            }
        }
        for talker in Party::ALL {
            if !self.mixed(talker) {
                self.inputs[talker as usize].clear();
            }
        }
    }

    /// Whether some listener gets `talker` through the mix (so its audio must be queued).
    fn mixed(&self, talker: Party) -> bool {
        Party::ALL
            .iter()
            .any(|&l| self.outputs[l as usize].route == Route::Mix && self.mode.hears(l, talker))
    }

    /// Moves audio and digits between the three legs: runs the grid ticks due at `now`, then
    /// takes everything the legs have received. Call it after every `handle_packet` or
    /// `handle_timeout` on any of them and at [`Self::poll_timeout`]; then drain
    /// `poll_transmit` on all three. It takes the place of [`crate::bridge_step`] while a
    /// supervisor is attached.
    pub fn step(
        &mut self,
        caller: &mut MediaSession,
        agent: &mut MediaSession,
        supervisor: &mut MediaSession,
        now: Instant,
    ) {
        let mut legs = [caller, agent, supervisor];
        self.run_ticks(&mut legs, now);
        for talker in Party::ALL {
            while let Some(item) = legs[talker as usize].poll_relay() {
                match item {
                    Relay::Audio(frame) => self.audio_in(&mut legs, talker, &frame, now),
                    Relay::Dtmf { digit, duration_ms } => {
                        let to = match talker {
                            Party::Caller => Party::Agent,
                            Party::Agent => Party::Caller,
                            Party::Supervisor => {
                                tracing::debug!(%digit, "supervisor digit not passed on");
                                continue;
                            }
                        };
                        if !legs[to as usize].send_dtmf(digit, duration_ms, now) {
                            tracing::debug!(%digit, "digit not passed through: the other leg cannot take RFC 4733 now");
                        }
                    }
                }
            }
        }
    }

    /// When [`Self::step`] must run next for the grid; `None` while no audio is queued (the
    /// next packet's `step` starts the grid again).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inputs
            .iter()
            .any(|i| !i.queue.is_empty())
            .then(|| self.tick_at(self.next_tick))
    }

    /// Stops supervising: the caller's and the agent's legs restart their relayed streams so
    /// that [`crate::bridge_step`] can take over at once, and the supervisor's leg stops
    /// relaying (hang it up or keep it for the next call).
    pub fn detach(
        self,
        caller: &mut MediaSession,
        agent: &mut MediaSession,
        supervisor: &mut MediaSession,
    ) {
        caller.restart_relay();
        agent.restart_relay();
        supervisor.set_relay(false);
    }

    fn tick_at(&self, k: u64) -> Instant {
        // u32 ticks of 20 ms last 2.7 years; saturate rather than wrap beyond.
        self.origin + FRAME_DURATION * u32::try_from(k).unwrap_or(u32::MAX)
    }

    fn audio_in(
        &mut self,
        legs: &mut [&mut MediaSession; 3],
        talker: Party,
        frame: &RelayFrame,
        now: Instant,
    ) {
        for listener in Party::ALL {
            if !self.mode.hears(listener, talker) {
                continue;
            }
            let out = &mut self.outputs[listener as usize];
            if out.route == Route::Relay {
                let sent = if out.fresh && !frame.marker {
                    let mut marked = frame.clone();
                    marked.marker = true;
                    legs[listener as usize].send_relay(&marked, now)
                } else {
                    legs[listener as usize].send_relay(frame, now)
                };
                out.fresh = !sent;
            }
        }
        if self.mixed(talker) {
            match frame.codec {
                Codec::Pcmu => g711::decode_ulaw(&frame.payload, &mut self.pcm),
                Codec::Pcma => g711::decode_alaw(&frame.payload, &mut self.pcm),
            }
            self.inputs[talker as usize].push(&self.pcm);
        }
    }

    fn run_ticks(&mut self, legs: &mut [&mut MediaSession; 3], now: Instant) {
        let elapsed = now.saturating_duration_since(self.origin);
        // Index of the last tick due at `now`.
        let due = (elapsed.as_nanos() / FRAME_DURATION.as_nanos()) as u64;
        if due < self.next_tick {
            return;
        }
        let idle = self.inputs.iter().all(|i| i.queue.is_empty());
        let first = if idle {
            // Nothing to play: skip to the present without running the idle ticks.
            due + 1
        } else {
            self.next_tick.max((due + 1).saturating_sub(MAX_CATCH_UP))
        };
        if first > self.next_tick {
            for input in &mut self.inputs {
                input.playing = false;
                input.primed = false;
            }
            for out in &mut self.outputs {
                if out.route == Route::Mix {
                    out.fresh = true;
                }
            }
        }
        for k in first..=due {
            self.tick(legs, k, now);
        }
        self.next_tick = due + 1;
    }

    fn tick(&mut self, legs: &mut [&mut MediaSession; 3], k: u64, now: Instant) {
        for input in &mut self.inputs {
            input.take();
        }
        for listener in Party::ALL {
            if self.outputs[listener as usize].route != Route::Mix {
                continue;
            }
            self.mix.clear();
            self.mix.resize(SAMPLES_PER_FRAME, 0);
            let mut talkers = 0;
            for talker in Party::ALL {
                let input = &self.inputs[talker as usize];
                if !input.present || !self.mode.hears(listener, talker) {
                    continue;
                }
                talkers += 1;
                for (m, &s) in self.mix.iter_mut().zip(&input.frame) {
                    *m += i32::from(s);
                }
            }
            let out = &mut self.outputs[listener as usize];
            if talkers == 0 {
                out.fresh = true;
                continue;
            }
            // Saturate: two loud talkers clip rather than wrap around into noise.
            self.pcm.clear();
            self.pcm.extend(
                self.mix
                    .iter()
                    .map(|&m| m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16),
            );
            let leg = &mut legs[listener as usize];
            let codec = leg.codec();
            match codec {
                Codec::Pcmu => g711::encode_ulaw(&self.pcm, &mut self.encoded),
                Codec::Pcma => g711::encode_alaw(&self.pcm, &mut self.encoded),
            }
            let frame = RelayFrame {
                codec,
                payload: Bytes::copy_from_slice(&self.encoded),
                // The grid is our timeline: gaps between mixed frames keep their length.
                timestamp: (k as u32).wrapping_mul(SAMPLES_PER_FRAME as u32),
                marker: out.fresh,
            };
            out.fresh = !leg.send_relay(&frame, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::dtmf::rfc4733_packets;
    use crate::rtp::{RtpPacket, RtpSender};
    use crate::sdp::{Direction, Negotiated};
    use crate::session::{DtmfSource, MediaConfig, MediaEvent, Socket};
    use crate::testaudio::{level, tone_at as tone};

    const ADDRS: [&str; 3] = [
        "198.51.100.7:30000",
        "203.0.113.20:5004",
        "203.0.113.30:5006",
    ];
    /// What each party says: caller, agent, supervisor.
    const FREQS: [f64; 3] = [440.0, 1000.0, 1700.0];
    const AMP: f64 = 8000.0;
    const DTMF_PT: u8 = 101;

    fn encode(codec: Codec, pcm: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        match codec {
            Codec::Pcmu => g711::encode_ulaw(pcm, &mut out),
            Codec::Pcma => g711::encode_alaw(pcm, &mut out),
        }
        out
    }

    fn decode(pt: u8, payload: &[u8]) -> Vec<i16> {
        let mut out = Vec::new();
        match pt {
            0 => g711::decode_ulaw(payload, &mut out),
            8 => g711::decode_alaw(payload, &mut out),
            _ => panic!("audio with PT {pt}"),
        }
        out
    }

    /// What a party says in one frame.
    #[derive(Clone, Copy)]
    enum Say {
        Nothing,
        Tone,
        /// A constant level (for clipping).
        Level(i16),
    }

    /// A received RTP packet with when it went out.
    struct Out {
        at: Instant,
        pkt: RtpPacket,
    }

    struct Call {
        t0: Instant,
        now: Instant,
        codecs: [Codec; 3],
        legs: [MediaSession; 3],
        phones: [RtpSender; 3],
        mixer: Option<Mixer>,
        /// Audio packets sent to each party, in order.
        heard: [Vec<Out>; 3],
        events: [Vec<Out>; 3],
        /// What each party's phone sent, encoded, in order.
        said: [Vec<Vec<u8>>; 3],
        tick: u64,
    }

    impl Call {
        fn new(codecs: [Codec; 3], mode: SupervisorMode) -> Call {
            let t0 = Instant::now();
            let legs = std::array::from_fn(|i| {
                let remote: SocketAddr = ADDRS[i].parse().unwrap();
                let neg = Negotiated {
                    answer: String::new(),
                    codec: codecs[i],
                    payload_type: codecs[i].static_payload_type(),
                    dtmf_pt: Some(DTMF_PT),
                    remote,
                    remote_rtcp: SocketAddr::new(remote.ip(), remote.port() + 1),
                    direction: Direction::SendRecv,
                };
                let cfg = MediaConfig {
                    ssrc: Some(0x1000 + i as u32),
                    rtcp_interval: Duration::from_secs(3600),
                    ..MediaConfig::default()
                };
                let mut s = MediaSession::new(&neg, cfg, t0);
                s.set_relay(true);
                s
            });
            let phones = std::array::from_fn(|i| {
                let mut p =
                    RtpSender::new(0xF000 + i as u32, codecs[i].static_payload_type(), 7, 0, t0);
                p.start_talkspurt(t0);
                p
            });
            Call {
                t0,
                now: t0,
                codecs,
                legs,
                phones,
                mixer: Some(Mixer::new(mode, t0)),
                heard: Default::default(),
                events: Default::default(),
                said: Default::default(),
                tick: 0,
            }
        }

        fn step(&mut self) {
            let [c, a, s] = &mut self.legs;
            match self.mixer.as_mut() {
                Some(m) => m.step(c, a, s, self.now),
                None => crate::bridge_step(c, a, self.now),
            }
            for (i, leg) in self.legs.iter_mut().enumerate() {
                while let Some(t) = leg.poll_transmit() {
                    if t.socket != Socket::Rtp {
                        continue;
                    }
                    assert_eq!(t.to, ADDRS[i].parse().unwrap());
                    let pkt = RtpPacket::parse(&t.bytes).unwrap();
                    let out = Out { at: self.now, pkt };
                    if out.pkt.payload_type == DTMF_PT {
                        self.events[i].push(out);
                    } else {
                        self.heard[i].push(out);
                    }
                }
            }
        }

        fn advance(&mut self, to: Instant) {
            self.now = to;
            for leg in &mut self.legs {
                leg.handle_timeout(to);
            }
            self.step();
        }

        /// One 20 ms frame: each party's phone sends 5 ms into the tick, then the grid ticks.
        fn frame(&mut self, say: [Say; 3]) {
            let start = self.t0 + FRAME_DURATION * self.tick as u32;
            self.now = start + Duration::from_millis(5);
            let idx = self.tick as usize * SAMPLES_PER_FRAME;
            for p in 0..3 {
                let pcm = match say[p] {
                    Say::Nothing => {
                        // Silence suppression: no packet; the next one starts a talkspurt.
                        self.phones[p].end_talkspurt();
                        continue;
                    }
                    Say::Tone => tone(FREQS[p], AMP, idx, SAMPLES_PER_FRAME),
                    Say::Level(l) => vec![l; SAMPLES_PER_FRAME],
                };
                let payload = encode(self.codecs[p], &pcm);
                if !self.phones[p].in_talkspurt() {
                    self.phones[p].start_talkspurt(self.now);
                }
                let bytes = self.phones[p].build_frame(&payload).unwrap();
                self.said[p].push(payload);
                self.legs[p].handle_packet(Socket::Rtp, bytes, ADDRS[p].parse().unwrap(), self.now);
            }
            self.step();
            self.tick += 1;
            self.advance(start + FRAME_DURATION);
        }

        fn frames(&mut self, n: usize, say: [Say; 3]) {
            for _ in 0..n {
                self.frame(say);
            }
        }

        /// Decoded audio party `p` was sent, from packet `from` on.
        fn audio(&self, p: Party, from: usize) -> Vec<i16> {
            self.heard[p as usize]
                .iter()
                .skip(from)
                .flat_map(|o| decode(o.pkt.payload_type, &o.pkt.payload))
                .collect()
        }

        fn switch(&mut self, mode: SupervisorMode) {
            self.mixer.as_mut().unwrap().set_mode(mode);
        }

        fn detach(&mut self) {
            let [c, a, s] = &mut self.legs;
            self.mixer.take().unwrap().detach(c, a, s);
        }
    }

    const ALL_TALK: [Say; 3] = [Say::Tone, Say::Tone, Say::Tone];

    /// Which talkers' tones `listener`'s audio contains (clearly present or clearly absent;
    /// anything in between fails).
    fn who_is_heard(audio: &[i16], listener: Party) -> Vec<Party> {
        assert!(
            audio.len() >= 1000,
            "{listener:?} got {} samples",
            audio.len()
        );
        let mut heard = vec![];
        for talker in Party::ALL {
            let l = level(audio, FREQS[talker as usize]);
            if l > AMP * 0.8 {
                heard.push(talker);
            } else {
                assert!(
                    l < AMP * 0.02,
                    "{listener:?} hears {talker:?} at {l:.0}: neither clearly nor not at all"
                );
            }
        }
        heard
    }

    #[test]
    fn each_mode_routes_each_voice_to_the_right_ears() {
        use Party::*;
        let expected = [
            (
                SupervisorMode::Listen,
                [vec![Agent], vec![Caller], vec![Caller, Agent]],
            ),
            (
                SupervisorMode::Whisper,
                [vec![Agent], vec![Caller, Supervisor], vec![Caller, Agent]],
            ),
            (
                SupervisorMode::Barge,
                [
                    vec![Agent, Supervisor],
                    vec![Caller, Supervisor],
                    vec![Caller, Agent],
                ],
            ),
        ];
        for (mode, ears) in expected {
            let mut call = Call::new([Codec::Pcmu; 3], mode);
            call.frames(60, ALL_TALK);
            for listener in Party::ALL {
                let audio = call.audio(listener, 5);
                assert_eq!(
                    who_is_heard(&audio, listener),
                    ears[listener as usize],
                    "{mode:?}: what {listener:?} hears"
                );
                for talker in Party::ALL {
                    assert_eq!(
                        mode.hears(listener, talker),
                        ears[listener as usize].contains(&talker)
                    );
                }
                // One packet per frame, none lost to the grid: the mix waits one tick.
                let n = call.heard[listener as usize].len();
                assert!(
                    (58..=60).contains(&n),
                    "{mode:?}: {listener:?} got {n} packets"
                );
            }
        }
    }

    #[test]
    fn listen_leaves_caller_and_agent_as_bridged_and_relays_at_once() {
        let mut call = Call::new([Codec::Pcmu; 3], SupervisorMode::Listen);
        call.frames(20, ALL_TALK);
        for (listener, talker) in [(Party::Agent, Party::Caller), (Party::Caller, Party::Agent)] {
            let heard = &call.heard[listener as usize];
            let said = &call.said[talker as usize];
            assert_eq!(heard.len(), said.len());
            for (i, (o, s)) in heard.iter().zip(said).enumerate() {
                assert_eq!(
                    &o.pkt.payload[..],
                    &s[..],
                    "{listener:?} packet {i} untouched"
                );
                // Sent when it arrived, 5 ms into the frame, not on the grid.
                assert_eq!(
                    o.at,
                    call.t0 + FRAME_DURATION * i as u32 + Duration::from_millis(5)
                );
            }
        }
        // The supervisor's mix goes out on the grid, one frame behind.
        let sup = &call.heard[Party::Supervisor as usize];
        assert_eq!(sup[0].at, call.t0 + FRAME_DURATION * 2);
        assert!(sup[0].pkt.marker && !sup[1].pkt.marker);
        assert_eq!(sup[1].pkt.timestamp.wrapping_sub(sup[0].pkt.timestamp), 160);
    }

    #[test]
    fn each_listener_gets_its_own_codec() {
        use Party::*;
        // Caller on PCMA, agent on PCMU, supervisor on PCMA.
        let codecs = [Codec::Pcma, Codec::Pcmu, Codec::Pcma];
        let mut call = Call::new(codecs, SupervisorMode::Barge);
        call.frames(60, ALL_TALK);
        for (listener, pt) in [(Caller, 8), (Agent, 0), (Supervisor, 8)] {
            assert!(call.heard[listener as usize]
                .iter()
                .all(|o| o.pkt.payload_type == pt));
        }
        assert_eq!(
            who_is_heard(&call.audio(Caller, 5), Caller),
            vec![Agent, Supervisor]
        );
        assert_eq!(
            who_is_heard(&call.audio(Agent, 5), Agent),
            vec![Caller, Supervisor]
        );
        assert_eq!(
            who_is_heard(&call.audio(Supervisor, 5), Supervisor),
            vec![Caller, Agent]
        );

        // Whisper: the caller gets the agent relayed, transcoded PCMU -> PCMA.
        call.switch(SupervisorMode::Whisper);
        let before = call.heard[Caller as usize].len();
        call.frames(60, ALL_TALK);
        let heard = &call.heard[Caller as usize][before..];
        assert!(heard.iter().all(|o| o.pkt.payload_type == 8));
        assert_eq!(
            who_is_heard(&call.audio(Caller, before + 2), Caller),
            vec![Agent]
        );
    }

    #[test]
    fn loud_talkers_clip_instead_of_wrapping_around() {
        use Party::*;
        let mut call = Call::new(
            [Codec::Pcmu, Codec::Pcma, Codec::Pcmu],
            SupervisorMode::Barge,
        );
        call.frames(20, [Say::Level(20_000), Say::Level(20_000), Say::Nothing]);
        call.frames(20, [Say::Level(-20_000), Say::Level(-25_000), Say::Nothing]);
        let sup = call.audio(Supervisor, 0);
        assert_eq!(sup.len(), 39 * SAMPLES_PER_FRAME);
        // Frame i is mixed at tick i + 2: frames 0..19 are loud positive, 20..38 negative.
        let (pos, neg) = sup.split_at(20 * SAMPLES_PER_FRAME);
        // A wrapping sum would give 40000 - 65536 = -25536 and +20536.
        assert!(pos.iter().all(|&s| s >= 30_000), "{:?}", &pos[..4]);
        assert!(neg.iter().all(|&s| s <= -30_000), "{:?}", &neg[..4]);
        // The caller hears the agent alone (the supervisor is silent), at the agent's level.
        let caller = call.audio(Caller, 0);
        assert!(caller[..20 * SAMPLES_PER_FRAME]
            .iter()
            .all(|&s| (18_000..=22_000).contains(&s)));
    }

    #[test]
    fn a_missing_frame_is_left_out_of_the_mix() {
        use Party::*;
        let mut call = Call::new([Codec::Pcmu; 3], SupervisorMode::Whisper);
        // The caller stops for frames 20..30 while the supervisor speaks; otherwise the
        // supervisor sends only every other frame, and nothing from frame 50 on.
        for i in 0..100 {
            let sup = match i {
                18..=33 => Say::Tone,
                _ if i < 50 && i % 2 == 0 => Say::Tone,
                _ => Say::Nothing,
            };
            let caller = if (20..30).contains(&i) {
                Say::Nothing
            } else {
                Say::Tone
            };
            call.frame([caller, Say::Tone, sup]);
        }
        // Someone the agent hears always has a frame, so it gets one every tick (from tick 2,
        // the start-up slack), in one talkspurt.
        let agent = &call.heard[Agent as usize];
        assert_eq!(agent.len(), 99);
        for w in agent.windows(2) {
            assert_eq!(w[1].pkt.timestamp.wrapping_sub(w[0].pkt.timestamp), 160);
            assert!(!w[1].pkt.marker);
        }
        // Packet j is tick j + 2. Ticks 38..50: the supervisor in half the frames.
        let audio = call.audio(Agent, 0);
        let patchy = &audio[36 * 160..48 * 160];
        let s = level(patchy, FREQS[2]);
        assert!((0.3 * AMP..0.7 * AMP).contains(&s), "supervisor at {s:.0}");
        assert!(level(patchy, FREQS[0]) > 0.9 * AMP);
        // Ticks 23..30: the supervisor alone.
        assert_eq!(
            who_is_heard(&audio[21 * 160..28 * 160], Agent),
            vec![Supervisor]
        );
        assert_eq!(who_is_heard(&call.audio(Agent, 75), Agent), vec![Caller]);
        // The supervisor heard the agent throughout and the caller except meanwhile.
        let sup = call.audio(Supervisor, 0);
        assert_eq!(sup.len(), 99 * 160);
        assert_eq!(
            who_is_heard(&sup[21 * 160..28 * 160], Supervisor),
            vec![Agent]
        );
        assert_eq!(
            who_is_heard(&sup[40 * 160..], Supervisor),
            vec![Caller, Agent]
        );
    }

    #[test]
    fn switching_modes_and_detaching_mid_call() {
        use Party::*;
        let mut call = Call::new([Codec::Pcmu; 3], SupervisorMode::Listen);
        call.frames(40, ALL_TALK);
        assert_eq!(who_is_heard(&call.audio(Caller, 0), Caller), vec![Agent]);

        call.switch(SupervisorMode::Barge);
        let from = call.heard[Caller as usize].len();
        call.frames(40, ALL_TALK);
        let after = &call.heard[Caller as usize][from..];
        // The caller's stream changes source: its first mixed frame starts a talkspurt.
        assert!(after[0].pkt.marker, "marker at the switch");
        assert!(after[1..].iter().all(|o| !o.pkt.marker));
        let before_ts = call.heard[Caller as usize][from - 1].pkt.timestamp;
        let jump = after[0].pkt.timestamp.wrapping_sub(before_ts);
        assert!((1..=960).contains(&jump), "timestamps move on ({jump})");
        assert_eq!(
            who_is_heard(&call.audio(Caller, from + 2), Caller),
            vec![Agent, Supervisor]
        );

        // Back to a plain bridge: the caller hears the agent alone, relayed again at once.
        call.detach();
        let from = call.heard[Caller as usize].len();
        let sup_from = call.heard[Supervisor as usize].len();
        call.frames(40, ALL_TALK);
        let after = &call.heard[Caller as usize][from..];
        assert!(after[0].pkt.marker);
        assert_eq!(after.len(), 40);
        assert_eq!(who_is_heard(&call.audio(Caller, from), Caller), vec![Agent]);
        assert_eq!(
            who_is_heard(&call.audio(Agent, call.heard[1].len() - 30), Agent),
            vec![Caller]
        );
        assert_eq!(call.heard[Supervisor as usize].len(), sup_from);
    }

    /// The RFC 4733 packets of one digit from `talker`'s phone, fed at their times.
    fn press(call: &mut Call, talker: Party, digit: char) {
        let p = talker as usize;
        let start = call.now;
        let ts = call.phones[p].timestamp_at(start);
        for e in rfc4733_packets(digit, 100, 10).unwrap() {
            call.now = start + e.offset;
            let bytes = call.phones[p].build(DTMF_PT, e.marker, ts, &e.payload);
            call.legs[p].handle_packet(Socket::Rtp, bytes, ADDRS[p].parse().unwrap(), call.now);
            call.step();
        }
        let until = call.now + Duration::from_millis(500);
        while let Some(t) = call.legs.iter().filter_map(|l| l.poll_timeout()).min() {
            if t > until {
                break;
            }
            call.advance(t);
        }
    }

    #[test]
    fn caller_digits_reach_the_agent_and_supervisor_digits_nobody() {
        use Party::*;
        for mode in [
            SupervisorMode::Listen,
            SupervisorMode::Whisper,
            SupervisorMode::Barge,
        ] {
            let mut call = Call::new([Codec::Pcmu; 3], mode);
            press(&mut call, Caller, '4');
            let to_agent = &call.events[Agent as usize];
            assert!(!to_agent.is_empty(), "{mode:?}: caller digit");
            let ev = crate::dtmf::EventPayload::parse(&to_agent[0].pkt.payload).unwrap();
            assert_eq!(ev.event, 4);
            assert!(call.events[Supervisor as usize].is_empty());

            // Start, update, three ends.
            assert_eq!(call.events[Agent as usize].len(), 5);
            press(&mut call, Supervisor, '9');
            assert_eq!(call.events[Agent as usize].len(), 5, "{mode:?}");
            assert!(call.events[Caller as usize].is_empty(), "{mode:?}");
            let reported: Vec<_> = std::iter::from_fn(|| call.legs[2].poll_event())
                .filter(|e| matches!(e, MediaEvent::Dtmf { .. }))
                .collect();
            assert_eq!(
                reported,
                vec![MediaEvent::Dtmf {
                    digit: '9',
                    duration_ms: 100,
                    source: DtmfSource::Rfc4733
                }],
                "the engine still sees the supervisor's digit"
            );

            press(&mut call, Agent, '#');
            assert!(
                !call.events[Caller as usize].is_empty(),
                "{mode:?}: agent digit"
            );
        }
    }

    #[test]
    fn the_timer_runs_only_while_audio_waits() {
        let mut call = Call::new([Codec::Pcmu; 3], SupervisorMode::Barge);
        assert_eq!(call.mixer.as_ref().unwrap().poll_timeout(), None);
        call.frame([Say::Tone, Say::Nothing, Say::Nothing]);
        // Queued and primed at tick 1, played at tick 2.
        let next = call.mixer.as_ref().unwrap().poll_timeout();
        assert_eq!(next, Some(call.t0 + FRAME_DURATION * 2));
        call.advance(call.t0 + FRAME_DURATION * 2);
        assert_eq!(call.mixer.as_ref().unwrap().poll_timeout(), None);
        assert_eq!(call.heard[Party::Supervisor as usize].len(), 1);
        // A long idle stretch runs no ticks and sends nothing.
        call.advance(call.t0 + Duration::from_secs(10));
        assert_eq!(call.heard[Party::Supervisor as usize].len(), 1);
    }
}
