//! Runs one call through a flow. Sans-IO: the call task feeds events and the current
//! `Instant`, then drains actions and arms a timer at [`Interpreter::poll_timeout`].
//!
//! Contract with the call task:
//! - `PromptDone` means the last `Play` finished by itself. After `StopPlayback`, or when a new
//!   `Play` replaces a running one, the superseded playback must not be reported.
//! - Actions come in order; `Answer`/`EarlyMedia` always precede the first `Play` that needs them.
//! - A `Hangup` action before any `Answer` means "reject the call" (the flow decided before
//!   answering, e.g. closed with nothing to say).
//! - `Voicemail` is played like a `Play` of its `greeting` (nothing to play counts as finished)
//!   and answered with `PromptDone`; then comes `Record`: the call task plays the beep if asked,
//!   records until `max_duration`, the `terminator` key or the caller's hangup, and reports
//!   `RecordingDone` (not after a hangup: it keeps the recording and sends `Hangup`). Keys
//!   during the recording are the call task's business; the interpreter ignores them.
//! - `Callback` asks the call task to store a callback request durably and answer with
//!   `CallbackAccepted` once it is stored (before the caller hears the confirmation), or
//!   `CallbackRefused`.
//! - A `queue` node may name an `after_agent` node: when the agent hangs up while the caller is
//!   still on the line, the call task asks [`Interpreter::after_agent_node`] and continues the
//!   flow there with [`Interpreter::resume_after_agent`] (typically a post-call survey);
//!   without one it hangs up the caller as before.
//! - Both waits have a safety timer ([`Interpreter::poll_timeout`]) so a lost report cannot
//!   leave the caller in silence forever.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::flow::{
    BandSpec, CallbackNode, Flow, Node, NumberMode, NumberSource, PromptSpec, SurveyNode,
};
use crate::numbers;
use crate::schedule::ScheduleState;

/// Node entries allowed without playing anything or waiting for the caller.
const MAX_HOPS_WITHOUT_WAIT: u32 = 100;
/// Node entries allowed in one call, whatever they do (stops endless announcement loops).
const MAX_NODES_PER_CALL: u32 = 10_000;
/// Digits typed ahead beyond this are dropped.
const MAX_TYPE_AHEAD: usize = 32;
/// Beyond `max_duration`, time for the beep and the call task's report of a recording.
const RECORD_GRACE: Duration = Duration::from_secs(15);
/// How long the call task may take to store a callback request.
const CALLBACK_VERDICT_TIMEOUT: Duration = Duration::from_secs(10);
/// A survey answer is one key on a 1-6 scale.
const SURVEY_KEYS: std::ops::RangeInclusive<char> = '1'..='6';
/// Recorded in `survey.<id>` for a question left unanswered after its attempts.
const SURVEY_NO_ANSWER: &str = "none";

/// The call as the IVR sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call_id: String,
    pub caller: String,
    /// The called number that selected the flow.
    pub did: String,
}

/// What happened on the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvrEvent {
    /// Begin the flow (after the flow was selected and the SDP answer is ready).
    Start,
    /// The last `Play` finished naturally.
    PromptDone,
    /// A DTMF key: 0-9, *, #, A-D.
    Digit(char),
    /// The caller hung up.
    Hangup,
    /// The callback request of the last `Callback` action is stored.
    CallbackAccepted,
    /// The callback request of the last `Callback` action was not stored.
    CallbackRefused { reason: CallbackRefusal },
    /// The recording asked by the last `Record` action ended (max duration or terminator).
    RecordingDone { duration_ms: u32 },
}

/// Why a callback request was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackRefusal {
    /// The basket is at its ceiling.
    Full,
    /// A callback is already booked for this number in this queue.
    Duplicate,
    /// Anything else: no callback service for the queue, a storage error, no verdict in time.
    Unavailable,
}

impl CallbackRefusal {
    /// `full`, `duplicate` or `unavailable` (the `callback_result` variable).
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackRefusal::Full => "full",
            CallbackRefusal::Duplicate => "duplicate",
            CallbackRefusal::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for CallbackRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recording to play: `sounds/<lang>/<name>.*`, already resolved to an existing language.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PromptRef {
    pub lang: String,
    pub name: String,
}

/// What the call task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvrAction {
    /// Answer the call (200 OK).
    Answer,
    /// Send 183 Session Progress with SDP and play before answering.
    EarlyMedia,
    /// Play these recordings in sequence; report `PromptDone` at the end. `interruptible`
    /// tells whether a key press will stop it (the interpreter sends `StopPlayback` itself).
    Play {
        prompts: Vec<PromptRef>,
        interruptible: bool,
    },
    /// Stop the current playback now.
    StopPlayback,
    /// Bridge the call to this SIP URI. The flow has ended.
    Transfer { uri: String },
    /// Put the call in this ACD queue. Until the ACD exists, play `fallback` then hang up.
    Queue {
        queue: String,
        fallback: Vec<PromptRef>,
    },
    /// The call enters voicemail: play `greeting` as for `Play` and report `PromptDone`;
    /// `Record` follows.
    Voicemail {
        mailbox: String,
        greeting: Vec<PromptRef>,
    },
    /// Play the beep (when `beep`), then record the caller into `mailbox` until
    /// `max_duration`, the `terminator` key or hangup; report `RecordingDone`.
    Record {
        mailbox: String,
        max_duration: Duration,
        terminator: Option<char>,
        beep: bool,
    },
    /// Store a callback request durably, then report `CallbackAccepted` or `CallbackRefused`.
    /// `number` is the caller's number as received (digits, maybe a leading `+`) or the digits
    /// the caller typed; `band` is the time band chosen, if the node offers bands.
    Callback {
        queue: String,
        number: String,
        band: Option<BandSpec>,
    },
    /// End the call (BYE, or a final error response if never answered).
    Hangup { reason: String },
}

/// How the IVR part of a call ended, for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Transferred {
        uri: String,
    },
    Queued {
        queue: String,
    },
    /// The caller left a message (the flow or the caller hung up after it was recorded).
    Voicemail {
        mailbox: String,
    },
    /// A callback request was stored (the flow or the caller hung up after that).
    CallbackBooked {
        queue: String,
    },
    /// The flow hung up (a hangup node, a menu failure, loop protection).
    HungUp {
        reason: String,
    },
    /// The caller hung up while in `node`.
    CallerHangup {
        node: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Transferred { uri } => write!(f, "transferred:{uri}"),
            Outcome::Queued { queue } => write!(f, "queued:{queue}"),
            Outcome::Voicemail { mailbox } => write!(f, "voicemail:{mailbox}"),
            Outcome::CallbackBooked { queue } => write!(f, "callback:{queue}"),
            Outcome::HungUp { reason } => write!(f, "hangup:{reason}"),
            Outcome::CallerHangup { node } => write!(f, "caller_hangup:{node}"),
        }
    }
}

#[derive(Debug, Clone)]
enum After {
    Next(String),
    Input,
    /// The voicemail greeting: record next.
    Record,
}

#[derive(Debug, Clone)]
enum Wait {
    NotStarted,
    Prompt {
        after: After,
        interruptible: bool,
    },
    Input {
        deadline: Instant,
    },
    /// The call task records a message.
    Record {
        deadline: Instant,
    },
    /// The call task stores a callback request.
    Verdict {
        deadline: Instant,
    },
    Done,
}

/// Where a caller is inside a callback node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CbPhase {
    /// Hearing the number read back: 1 confirms, 2 enters another.
    Confirm,
    /// Typing another number.
    Enter,
    /// Choosing a time band.
    Band,
}

#[derive(Debug, Clone)]
struct CbState {
    phase: CbPhase,
    number: String,
    /// Numbers typed so far in this node.
    entries: u32,
}

/// The state of one call in its flow.
#[derive(Debug)]
pub struct Interpreter {
    flow: Arc<Flow>,
    call: CallInfo,
    wall_at_start: DateTime<Utc>,
    started: Instant,
    node: String,
    wait: Wait,
    attempts: u32,
    collected: String,
    typed_ahead: VecDeque<char>,
    actions: VecDeque<IvrAction>,
    language: String,
    variables: BTreeMap<String, String>,
    path: Vec<String>,
    choices: Vec<(String, char)>,
    answered: bool,
    early_media: bool,
    hops: u32,
    visits: u32,
    outcome: Option<Outcome>,
    callback: Option<CbState>,
    /// What the caller left behind (a message, a booked callback): a later hangup reports it.
    left: Option<Outcome>,
    /// Index of the question being asked while in a survey node.
    survey_question: usize,
    /// (question id, score) in question order.
    survey_answers: Vec<(String, u8)>,
}

impl Interpreter {
    /// `wall_at_start` is the wall clock matching `now`; schedules are evaluated at
    /// `wall_at_start + (now - start)`, so the call task never passes the clock again.
    pub fn new(
        flow: Arc<Flow>,
        call: CallInfo,
        wall_at_start: DateTime<Utc>,
        now: Instant,
    ) -> Self {
        let language = flow.language.clone();
        let variables = BTreeMap::from([("language".to_string(), language.clone())]);
        Interpreter {
            node: flow.start.clone(),
            flow,
            call,
            wall_at_start,
            started: now,
            wait: Wait::NotStarted,
            attempts: 0,
            collected: String::new(),
            typed_ahead: VecDeque::new(),
            actions: VecDeque::new(),
            language,
            variables,
            path: Vec::new(),
            choices: Vec::new(),
            answered: false,
            early_media: false,
            hops: 0,
            visits: 0,
            outcome: None,
            callback: None,
            left: None,
            survey_question: 0,
            survey_answers: Vec::new(),
        }
    }

    /// Continues the flow at `node` after it ended in a hand-off (a queue's exit on timeout,
    /// full, empty or key leads back into the flow). False if the node does not exist.
    pub fn resume_at(&mut self, node: &str, now: Instant) -> bool {
        if !self.flow.nodes.contains_key(node) {
            return false;
        }
        self.outcome = None;
        self.wait = Wait::NotStarted;
        self.goto(node.to_string(), now);
        true
    }

    /// The node to continue at if the agent hangs up first: the `after_agent` of the queue node
    /// that handed the call to the ACD. None before the call reached a queue node, after it
    /// left it (resumed elsewhere), or when the node has no `after_agent`.
    pub fn after_agent_node(&self) -> Option<&str> {
        if !matches!(self.outcome, Some(Outcome::Queued { .. })) {
            return None;
        }
        match self.flow.nodes.get(&self.node) {
            Some(Node::Queue { after_agent, .. }) => after_agent.as_deref(),
            _ => None,
        }
    }

    /// The agent hung up while the caller is still on the line: continues the flow at
    /// [`Self::after_agent_node`]. The call was served, so however the rest of the flow ends the
    /// outcome stays `queued:<queue>` (unlike [`Self::resume_at`], used for queue exits where
    /// the caller was not served). False, changing nothing, when there is no such node.
    pub fn resume_after_agent(&mut self, now: Instant) -> bool {
        let Some(node) = self.after_agent_node().map(str::to_string) else {
            return false;
        };
        tracing::debug!(call_id = %self.call.call_id, %node, "agent hung up: flow continues");
        self.left = self.outcome.clone();
        self.resume_at(&node, now)
    }

    pub fn handle(&mut self, event: IvrEvent, now: Instant) {
        match event {
            IvrEvent::Start => {
                if matches!(self.wait, Wait::NotStarted) {
                    tracing::debug!(call_id = %self.call.call_id, flow = %self.flow.name, "ivr start");
                    let start = self.flow.start.clone();
                    self.goto(start, now);
                }
            }
            IvrEvent::PromptDone => {
                if let Wait::Prompt { after, .. } = &self.wait {
                    match after.clone() {
                        After::Next(next) => self.goto(next, now),
                        After::Input => self.start_input(now),
                        After::Record => self.start_record(now),
                    }
                }
            }
            IvrEvent::RecordingDone { duration_ms } => {
                if matches!(self.wait, Wait::Record { .. }) {
                    self.recording_done(Some(duration_ms), now);
                }
            }
            IvrEvent::CallbackAccepted => {
                if matches!(self.wait, Wait::Verdict { .. }) {
                    self.callback_accepted(now);
                }
            }
            IvrEvent::CallbackRefused { reason } => {
                if matches!(self.wait, Wait::Verdict { .. }) {
                    self.callback_refused(reason, now);
                }
            }
            IvrEvent::Digit(d) => {
                let d = d.to_ascii_uppercase();
                if "0123456789*#ABCD".contains(d) {
                    self.on_digit(d, now);
                }
            }
            IvrEvent::Hangup => {
                if !matches!(self.wait, Wait::Done) {
                    if matches!(self.wait, Wait::Record { .. }) {
                        // Hanging up is how most callers end a message: the call task keeps it.
                        self.left = self.voicemail_outcome();
                    }
                    self.wait = Wait::Done;
                    self.outcome = Some(self.left.clone().unwrap_or(Outcome::CallerHangup {
                        node: self.node.clone(),
                    }));
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.wait {
            Wait::Record { deadline } if now >= deadline => {
                tracing::warn!(call_id = %self.call.call_id, node = %self.node, "no RecordingDone in time: continuing the flow");
                return self.recording_done(None, now);
            }
            Wait::Verdict { deadline } if now >= deadline => {
                tracing::warn!(call_id = %self.call.call_id, node = %self.node, "no callback verdict in time");
                return self.callback_refused(CallbackRefusal::Unavailable, now);
            }
            _ => {}
        }
        let Wait::Input { deadline } = self.wait else {
            return;
        };
        if now < deadline {
            return;
        }
        let flow = self.flow.clone();
        match flow.nodes.get(&self.node) {
            Some(Node::Callback(c)) => {
                let entering = self.callback_phase() == Some(CbPhase::Enter);
                if entering && !self.collected.is_empty() {
                    self.callback_number_entered(c, now);
                } else {
                    self.callback_retry(c, false, now);
                }
            }
            Some(Node::Menu(m)) => match &m.default {
                Some(default) => self.goto(default.clone(), now),
                None => self.menu_retry(false, now),
            },
            Some(Node::Collect(_)) => {
                if self.collected.is_empty() {
                    self.collect_retry(false, now);
                } else {
                    self.collect_finish(now);
                }
            }
            Some(Node::Survey(s)) => self.survey_retry(s, false, now),
            _ => {}
        }
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.wait {
            Wait::Input { deadline } | Wait::Record { deadline } | Wait::Verdict { deadline } => {
                Some(deadline)
            }
            _ => None,
        }
    }

    pub fn poll_action(&mut self) -> Option<IvrAction> {
        self.actions.pop_front()
    }

    /// Variables for the call record: `language` and every collected or set variable.
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.variables
    }

    /// Node ids visited, in order.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// Menu choices made: (menu node id, key).
    pub fn choices(&self) -> &[(String, char)] {
        &self.choices
    }

    /// Survey answers given: (question id, score 1-6), in question order. Questions skipped
    /// (no valid key after their attempts) or never reached are absent.
    pub fn survey_answers(&self) -> Vec<(String, u8)> {
        self.survey_answers.clone()
    }

    /// How the call left the IVR; None while it is still in the flow.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The caller's current language.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// True once the flow handed the call off, hung up, or the caller left.
    pub fn is_done(&self) -> bool {
        matches!(self.wait, Wait::Done)
    }

    fn wall(&self, now: Instant) -> DateTime<Utc> {
        let elapsed = now.saturating_duration_since(self.started);
        self.wall_at_start + TimeDelta::from_std(elapsed).unwrap_or_else(|_| TimeDelta::zero())
    }

    fn on_digit(&mut self, d: char, now: Instant) {
        match self.wait.clone() {
            Wait::NotStarted | Wait::Done | Wait::Record { .. } | Wait::Verdict { .. } => {}
            Wait::Prompt {
                after: After::Record,
                ..
            } => {
                // The terminator skips the greeting; other keys must not spill into later menus.
                if Some(d) == self.voicemail_terminator() {
                    self.actions.push_back(IvrAction::StopPlayback);
                    self.start_record(now);
                }
            }
            Wait::Prompt {
                interruptible: true,
                after,
            } => {
                self.actions.push_back(IvrAction::StopPlayback);
                match after {
                    // The digit is meant for what comes next (e.g. a menu the caller knows).
                    After::Next(next) => {
                        self.type_ahead(d);
                        self.goto(next, now);
                    }
                    After::Input => {
                        self.wait = Wait::Input { deadline: now };
                        self.input_digit(d, now);
                    }
                    After::Record => {}
                }
            }
            Wait::Prompt { .. } => self.type_ahead(d),
            Wait::Input { .. } => self.input_digit(d, now),
        }
    }

    fn type_ahead(&mut self, d: char) {
        if self.typed_ahead.len() < MAX_TYPE_AHEAD {
            self.typed_ahead.push_back(d);
        }
    }

    fn ensure_answered(&mut self) {
        if !self.answered {
            self.answered = true;
            self.actions.push_back(IvrAction::Answer);
        }
    }

    fn finish(&mut self, action: IvrAction, outcome: Outcome) {
        tracing::debug!(call_id = %self.call.call_id, outcome = %outcome, "ivr done");
        self.actions.push_back(action);
        self.outcome = Some(outcome);
        self.wait = Wait::Done;
    }

    fn hang_up(&mut self, reason: String) {
        let outcome = self.left.clone().unwrap_or(Outcome::HungUp {
            reason: reason.clone(),
        });
        self.finish(IvrAction::Hangup { reason }, outcome);
    }

    /// Languages to try for a recording: the caller's, the flow's fallback, the default.
    fn language_chain(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.language.as_str())
            .chain(self.flow.fallback_language.as_deref())
            .chain(std::iter::once(self.flow.language.as_str()))
    }

    fn resolve(&self, specs: &[PromptSpec]) -> Vec<PromptRef> {
        specs
            .iter()
            .map(|s| {
                let lang = match &s.lang {
                    Some(l) => l.clone(),
                    None => self
                        .language_chain()
                        .find(|l| self.flow.has_prompt(l, &s.name))
                        .unwrap_or(&self.flow.language)
                        .to_string(),
                };
                PromptRef {
                    lang,
                    name: s.name.clone(),
                }
            })
            .collect()
    }

    fn variable(&self, name: &str) -> String {
        if let Some(v) = self.variables.get(name) {
            return v.clone();
        }
        match name {
            "caller" => self.call.caller.clone(),
            "did" => self.call.did.clone(),
            _ => String::new(),
        }
    }

    fn number_prompts(&self, digits: &str, mode: NumberMode) -> Vec<PromptRef> {
        let attempt = |lang: &str| -> Option<Vec<PromptRef>> {
            let names = match mode {
                NumberMode::Number => numbers::as_number(lang, digits)
                    .unwrap_or_else(|| numbers::digit_by_digit(digits)),
                NumberMode::Digits => numbers::digit_by_digit(digits),
            };
            names
                .iter()
                .all(|n| self.flow.has_prompt(lang, n))
                .then(|| {
                    names
                        .into_iter()
                        .map(|name| PromptRef {
                            lang: lang.to_string(),
                            name,
                        })
                        .collect()
                })
        };
        self.language_chain().find_map(attempt).unwrap_or_else(|| {
            // The loader guarantees digits in the default language.
            numbers::digit_by_digit(digits)
                .into_iter()
                .map(|name| PromptRef {
                    lang: self.flow.language.clone(),
                    name,
                })
                .collect()
        })
    }

    /// Runs nodes from `id` until one plays, waits or ends the flow.
    fn goto(&mut self, mut id: String, now: Instant) {
        let flow = self.flow.clone();
        loop {
            self.hops += 1;
            self.visits += 1;
            if self.hops > MAX_HOPS_WITHOUT_WAIT {
                tracing::warn!(call_id = %self.call.call_id, node = %id, "ivr loop detected");
                return self.hang_up(format!("loop detected at node {id}"));
            }
            if self.visits > MAX_NODES_PER_CALL {
                return self.hang_up(format!("too many nodes visited (at {id})"));
            }
            let Some(node) = flow.nodes.get(&id) else {
                return self.hang_up(format!("node {id} does not exist"));
            };
            self.node = id.clone();
            self.path.push(id.clone());
            match node {
                Node::Goto { next } => id = next.clone(),
                Node::Set { variables, next } => {
                    for (k, v) in variables {
                        self.variables.insert(k.clone(), v.clone());
                    }
                    id = next.clone();
                }
                Node::Language { language, next } => {
                    self.language = language.clone();
                    self.variables.insert("language".into(), language.clone());
                    id = next.clone();
                }
                Node::Schedule(s) => {
                    let state = s.schedule.state_at(self.wall(now));
                    let (label, next) = match &state {
                        ScheduleState::Open { band } => {
                            let by_band = band.as_ref().and_then(|b| {
                                s.bands.iter().find(|(name, _)| name == b).map(|(_, n)| n)
                            });
                            let label = band
                                .as_ref()
                                .map_or("open".to_string(), |b| format!("open:{b}"));
                            (label, by_band.unwrap_or(&s.open).clone())
                        }
                        ScheduleState::Closed => ("closed".to_string(), s.closed.clone()),
                        ScheduleState::Holiday => ("holiday".to_string(), s.holiday.clone()),
                    };
                    self.variables.insert("schedule".into(), label);
                    id = next;
                }
                Node::Play {
                    prompts,
                    next,
                    early_media,
                    barge_in,
                } => {
                    if *early_media && !self.answered {
                        if !self.early_media {
                            self.early_media = true;
                            self.actions.push_back(IvrAction::EarlyMedia);
                        }
                    } else {
                        self.ensure_answered();
                    }
                    // A key typed ahead skips an interruptible announcement.
                    if *barge_in && !self.typed_ahead.is_empty() {
                        id = next.clone();
                        continue;
                    }
                    let prompts = self.resolve(prompts);
                    return self.play(prompts, *barge_in, After::Next(next.clone()));
                }
                Node::SayNumber {
                    source,
                    mode,
                    next,
                    barge_in,
                } => {
                    self.ensure_answered();
                    let digits = match source {
                        NumberSource::Literal(n) => n.clone(),
                        NumberSource::Variable(v) => self.variable(v),
                    };
                    let prompts = self.number_prompts(&digits, *mode);
                    if prompts.is_empty() || (*barge_in && !self.typed_ahead.is_empty()) {
                        id = next.clone();
                        continue;
                    }
                    return self.play(prompts, *barge_in, After::Next(next.clone()));
                }
                Node::Menu(m) => {
                    self.ensure_answered();
                    self.attempts = 0;
                    let prompts = self.resolve(&m.prompts);
                    return self.present_input(prompts, m.barge_in, now);
                }
                Node::Collect(c) => {
                    self.ensure_answered();
                    self.attempts = 0;
                    self.collected.clear();
                    let prompts = self.resolve(&c.prompts);
                    return self.present_input(prompts, c.barge_in, now);
                }
                Node::Transfer { uri } => {
                    self.ensure_answered();
                    let outcome = Outcome::Transferred { uri: uri.clone() };
                    return self.finish(IvrAction::Transfer { uri: uri.clone() }, outcome);
                }
                Node::Queue {
                    queue, fallback, ..
                } => {
                    self.ensure_answered();
                    let action = IvrAction::Queue {
                        queue: queue.clone(),
                        fallback: self.resolve(fallback),
                    };
                    return self.finish(
                        action,
                        Outcome::Queued {
                            queue: queue.clone(),
                        },
                    );
                }
                Node::Voicemail(v) => {
                    self.ensure_answered();
                    self.hops = 0;
                    self.variables.insert("voicemail".into(), v.mailbox.clone());
                    self.actions.push_back(IvrAction::Voicemail {
                        mailbox: v.mailbox.clone(),
                        greeting: self.resolve(&v.greeting),
                    });
                    self.wait = Wait::Prompt {
                        after: After::Record,
                        interruptible: false,
                    };
                    return;
                }
                Node::Callback(c) => {
                    self.ensure_answered();
                    self.attempts = 0;
                    self.collected.clear();
                    // A number must be confirmed after hearing it: keys typed before do not count.
                    self.typed_ahead.clear();
                    self.callback = Some(match callback_number(&self.call.caller) {
                        Some(number) => CbState {
                            phase: CbPhase::Confirm,
                            number,
                            entries: 0,
                        },
                        None => CbState {
                            phase: CbPhase::Enter,
                            number: String::new(),
                            entries: 1,
                        },
                    });
                    return self.callback_present(c, Vec::new(), now);
                }
                Node::Survey(s) => {
                    self.ensure_answered();
                    self.attempts = 0;
                    self.survey_question = 0;
                    // An answer counts only once its question was heard.
                    self.typed_ahead.clear();
                    let intro = self.resolve(&s.intro);
                    return self.survey_present(s, intro, now);
                }
                Node::Hangup { reason } => return self.hang_up(reason.clone()),
            }
        }
    }

    fn play(&mut self, prompts: Vec<PromptRef>, interruptible: bool, after: After) {
        self.hops = 0;
        self.actions.push_back(IvrAction::Play {
            prompts,
            interruptible,
        });
        self.wait = Wait::Prompt {
            after,
            interruptible,
        };
    }

    /// Plays a menu/collect prompt, or goes straight to waiting when there is nothing to play
    /// or the caller already typed ahead into an interruptible prompt.
    fn present_input(&mut self, prompts: Vec<PromptRef>, interruptible: bool, now: Instant) {
        if prompts.is_empty() || (interruptible && !self.typed_ahead.is_empty()) {
            self.start_input(now);
        } else {
            self.play(prompts, interruptible, After::Input);
        }
    }

    /// Starts waiting for keys (the timeout runs from the end of the prompt), consuming any
    /// typed-ahead keys first.
    fn start_input(&mut self, now: Instant) {
        self.hops = 0;
        let timeout = match self.flow.nodes.get(&self.node) {
            Some(Node::Menu(m)) => m.timeout,
            Some(Node::Collect(c)) if self.collected.is_empty() => c.timeout,
            Some(Node::Collect(c)) => c.inter_digit_timeout,
            Some(Node::Callback(c))
                if self.callback_phase() == Some(CbPhase::Enter) && !self.collected.is_empty() =>
            {
                c.inter_digit_timeout
            }
            Some(Node::Callback(c)) => c.timeout,
            Some(Node::Survey(s)) => s.timeout,
            _ => return self.hang_up(format!("node {} cannot take input", self.node)),
        };
        self.wait = Wait::Input {
            deadline: now + timeout,
        };
        while matches!(self.wait, Wait::Input { .. }) {
            let Some(d) = self.typed_ahead.pop_front() else {
                break;
            };
            self.input_digit(d, now);
        }
    }

    fn input_digit(&mut self, d: char, now: Instant) {
        let flow = self.flow.clone();
        match flow.nodes.get(&self.node) {
            Some(Node::Menu(m)) => match m.choices.get(&d) {
                Some(target) => {
                    self.choices.push((self.node.clone(), d));
                    self.goto(target.clone(), now);
                }
                None => {
                    // Later keys were typed on the assumption this one was valid.
                    self.typed_ahead.clear();
                    self.menu_retry(true, now);
                }
            },
            Some(Node::Collect(c)) => {
                if Some(d) == c.terminator {
                    return self.collect_finish(now);
                }
                self.collected.push(d);
                if self.collected.len() >= c.max_digits {
                    self.collect_finish(now);
                } else {
                    self.wait = Wait::Input {
                        deadline: now + c.inter_digit_timeout,
                    };
                }
            }
            Some(Node::Callback(c)) => self.callback_digit(c, d, now),
            Some(Node::Survey(s)) => {
                if SURVEY_KEYS.contains(&d) {
                    self.survey_record(s, Some(d as u8 - b'0'));
                    self.survey_next(s, now);
                } else {
                    self.typed_ahead.clear();
                    self.survey_retry(s, true, now);
                }
            }
            _ => {}
        }
    }

    fn menu_retry(&mut self, invalid: bool, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Menu(m)) = flow.nodes.get(&self.node) else {
            return;
        };
        self.attempts += 1;
        if self.attempts > m.retries {
            let why = if invalid {
                "invalid choice"
            } else {
                "no input"
            };
            return match &m.on_failure {
                Some(n) => self.goto(n.clone(), now),
                None => self.hang_up(format!(
                    "menu {}: {why} after {} attempts",
                    self.node, self.attempts
                )),
            };
        }
        let extra = if invalid {
            &m.invalid_prompts
        } else {
            &m.no_input_prompts
        };
        let mut prompts = self.resolve(extra);
        prompts.extend(self.resolve(&m.prompts));
        self.present_input(prompts, m.barge_in, now);
    }

    fn collect_finish(&mut self, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Collect(c)) = flow.nodes.get(&self.node) else {
            return;
        };
        if self.collected.len() >= c.min_digits {
            let value = std::mem::take(&mut self.collected);
            self.variables.insert(c.into.clone(), value);
            self.goto(c.next.clone(), now);
        } else {
            self.collect_retry(true, now);
        }
    }

    fn collect_retry(&mut self, invalid: bool, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Collect(c)) = flow.nodes.get(&self.node) else {
            return;
        };
        self.collected.clear();
        self.typed_ahead.clear();
        self.attempts += 1;
        if self.attempts > c.retries {
            let why = if invalid {
                "too few digits"
            } else {
                "no input"
            };
            return match &c.on_failure {
                Some(n) => self.goto(n.clone(), now),
                None => self.hang_up(format!(
                    "collect {}: {why} after {} attempts",
                    self.node, self.attempts
                )),
            };
        }
        let extra = if invalid {
            &c.invalid_prompts
        } else {
            &c.no_input_prompts
        };
        let mut prompts = self.resolve(extra);
        prompts.extend(self.resolve(&c.prompts));
        self.present_input(prompts, c.barge_in, now);
    }

    fn voicemail_terminator(&self) -> Option<char> {
        match self.flow.nodes.get(&self.node) {
            Some(Node::Voicemail(v)) => v.terminator,
            _ => None,
        }
    }

    fn voicemail_outcome(&self) -> Option<Outcome> {
        match self.flow.nodes.get(&self.node) {
            Some(Node::Voicemail(v)) => Some(Outcome::Voicemail {
                mailbox: v.mailbox.clone(),
            }),
            _ => None,
        }
    }

    /// The greeting is over (or skipped): the call task beeps and records.
    fn start_record(&mut self, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Voicemail(v)) = flow.nodes.get(&self.node) else {
            return;
        };
        self.typed_ahead.clear();
        self.actions.push_back(IvrAction::Record {
            mailbox: v.mailbox.clone(),
            max_duration: v.max_duration,
            terminator: v.terminator,
            beep: v.beep,
        });
        self.wait = Wait::Record {
            deadline: now + v.max_duration + RECORD_GRACE,
        };
    }

    /// `duration_ms` is None when the call task never reported (safety timer).
    fn recording_done(&mut self, duration_ms: Option<u32>, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Voicemail(v)) = flow.nodes.get(&self.node) else {
            return;
        };
        if let Some(ms) = duration_ms {
            self.variables
                .insert("voicemail_duration_ms".into(), ms.to_string());
        }
        self.left = self.voicemail_outcome();
        match &v.next {
            Some(next) => self.goto(next.clone(), now),
            None => self.hang_up("completed".into()),
        }
    }

    fn callback_phase(&self) -> Option<CbPhase> {
        self.callback.as_ref().map(|c| c.phase)
    }

    /// Plays what the current phase of the callback node asks, after `extra` (retry prompts).
    fn callback_present(&mut self, c: &CallbackNode, extra: Vec<PromptRef>, now: Instant) {
        let Some(state) = self.callback.clone() else {
            return;
        };
        let mut prompts = extra;
        match state.phase {
            CbPhase::Confirm => {
                prompts.extend(self.resolve(&c.confirm_prompts));
                prompts
                    .extend(self.number_prompts(&spoken_digits(&state.number), NumberMode::Digits));
                prompts.extend(self.resolve(&c.confirm_after));
            }
            CbPhase::Enter => prompts.extend(self.resolve(&c.enter_prompts)),
            CbPhase::Band => {
                prompts.extend(self.resolve(&c.band_prompts));
                for (_, band_prompts) in &c.bands {
                    prompts.extend(self.resolve(band_prompts));
                }
            }
        }
        self.present_input(prompts, c.barge_in, now);
    }

    /// Moves to `phase` with fresh attempts and presents it.
    fn callback_enter_phase(&mut self, c: &CallbackNode, phase: CbPhase, now: Instant) {
        if let Some(state) = self.callback.as_mut() {
            state.phase = phase;
        }
        self.attempts = 0;
        self.collected.clear();
        self.callback_present(c, Vec::new(), now);
    }

    fn callback_digit(&mut self, c: &CallbackNode, d: char, now: Instant) {
        let Some(state) = self.callback.clone() else {
            return;
        };
        match state.phase {
            CbPhase::Confirm => match d {
                '1' => {
                    self.choices.push((self.node.clone(), d));
                    self.callback_number_confirmed(c, now);
                }
                '2' => {
                    self.choices.push((self.node.clone(), d));
                    // Every number typed is another attempt: a caller cannot loop forever.
                    if state.entries > c.retries {
                        self.attempts = state.entries;
                        return self.callback_fail(c, "no number confirmed", now);
                    }
                    if let Some(s) = self.callback.as_mut() {
                        s.entries += 1;
                    }
                    self.callback_enter_phase(c, CbPhase::Enter, now);
                }
                _ => {
                    self.typed_ahead.clear();
                    self.callback_retry(c, true, now);
                }
            },
            CbPhase::Enter => {
                if Some(d) == c.terminator {
                    return self.callback_number_entered(c, now);
                }
                if !d.is_ascii_digit() {
                    return; // * or a letter is no part of a phone number
                }
                self.collected.push(d);
                if self.collected.len() >= c.max_digits {
                    self.callback_number_entered(c, now);
                } else {
                    self.wait = Wait::Input {
                        deadline: now + c.inter_digit_timeout,
                    };
                }
            }
            CbPhase::Band => match c.bands.iter().find(|(b, _)| b.key == d) {
                Some((band, _)) => {
                    self.choices.push((self.node.clone(), d));
                    self.callback_request(c, Some(band.clone()), now);
                }
                None => {
                    self.typed_ahead.clear();
                    self.callback_retry(c, true, now);
                }
            },
        }
    }

    /// The typed number ended (terminator, max digits, inter-digit timeout): read it back.
    fn callback_number_entered(&mut self, c: &CallbackNode, now: Instant) {
        if self.collected.len() < c.min_digits {
            return self.callback_retry(c, true, now);
        }
        let number = std::mem::take(&mut self.collected);
        if let Some(s) = self.callback.as_mut() {
            s.number = number;
        }
        self.callback_enter_phase(c, CbPhase::Confirm, now);
    }

    fn callback_number_confirmed(&mut self, c: &CallbackNode, now: Instant) {
        if c.bands.is_empty() {
            self.callback_request(c, None, now);
        } else {
            self.callback_enter_phase(c, CbPhase::Band, now);
        }
    }

    fn callback_retry(&mut self, c: &CallbackNode, invalid: bool, now: Instant) {
        let phase = self.callback_phase();
        self.collected.clear();
        self.typed_ahead.clear();
        self.attempts += 1;
        if self.attempts > c.retries {
            if phase == Some(CbPhase::Band) {
                // The number is confirmed: rather than lose the request, take the first band.
                let first = c.bands.first().map(|(b, _)| b.clone());
                return self.callback_request(c, first, now);
            }
            let why = match (phase, invalid) {
                (Some(CbPhase::Enter), true) => "too few digits",
                (_, true) => "invalid choice",
                (_, false) => "no input",
            };
            return self.callback_fail(c, why, now);
        }
        let extra = if invalid {
            &c.invalid_prompts
        } else {
            &c.no_input_prompts
        };
        let extra = self.resolve(extra);
        self.callback_present(c, extra, now);
    }

    fn callback_fail(&mut self, c: &CallbackNode, why: &str, now: Instant) {
        match &c.on_failure {
            Some(n) => self.goto(n.clone(), now),
            None => self.hang_up(format!(
                "callback {}: {why} after {} attempts",
                self.node, self.attempts
            )),
        }
    }

    /// Hands the request to the call task and waits for its verdict.
    fn callback_request(&mut self, c: &CallbackNode, band: Option<BandSpec>, now: Instant) {
        let number = self
            .callback
            .as_ref()
            .map(|s| s.number.clone())
            .unwrap_or_default();
        self.variables
            .insert("callback_number".into(), number.clone());
        if let Some(b) = &band {
            self.variables
                .insert("callback_band".into(), b.name.clone());
        }
        self.hops = 0;
        tracing::debug!(call_id = %self.call.call_id, queue = %c.queue, band = ?band.as_ref().map(|b| &b.name), "callback requested");
        self.actions.push_back(IvrAction::Callback {
            queue: c.queue.clone(),
            number,
            band,
        });
        self.wait = Wait::Verdict {
            deadline: now + CALLBACK_VERDICT_TIMEOUT,
        };
    }

    fn callback_accepted(&mut self, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Callback(c)) = flow.nodes.get(&self.node) else {
            return;
        };
        self.callback = None;
        self.variables
            .insert("callback_result".into(), "booked".into());
        self.left = Some(Outcome::CallbackBooked {
            queue: c.queue.clone(),
        });
        self.goto(c.next.clone(), now);
    }

    fn callback_refused(&mut self, reason: CallbackRefusal, now: Instant) {
        let flow = self.flow.clone();
        let Some(Node::Callback(c)) = flow.nodes.get(&self.node) else {
            return;
        };
        self.callback = None;
        self.variables
            .insert("callback_result".into(), reason.as_str().into());
        let target = match reason {
            CallbackRefusal::Duplicate => c.on_duplicate.as_ref().or(c.on_refused.as_ref()),
            _ => c.on_refused.as_ref(),
        };
        match target {
            Some(n) => self.goto(n.clone(), now),
            None => self.hang_up(format!("callback refused: {reason}")),
        }
    }
}

impl Interpreter {
    /// Plays the current question after `extra` (the intro, or a retry prompt).
    fn survey_present(&mut self, s: &SurveyNode, extra: Vec<PromptRef>, now: Instant) {
        let Some(q) = s.questions.get(self.survey_question) else {
            return;
        };
        let mut prompts = extra;
        prompts.extend(self.resolve(&q.prompts));
        self.present_input(prompts, s.barge_in, now);
    }

    fn survey_retry(&mut self, s: &SurveyNode, invalid: bool, now: Instant) {
        self.typed_ahead.clear();
        self.attempts += 1;
        if self.attempts > s.retries {
            // One unanswered question must not cost the answers to the others.
            tracing::debug!(call_id = %self.call.call_id, node = %self.node, question = self.survey_question, "survey question skipped");
            self.survey_record(s, None);
            return self.survey_next(s, now);
        }
        let extra = if invalid {
            &s.invalid_prompts
        } else {
            &s.no_input_prompts
        };
        let extra = self.resolve(extra);
        self.survey_present(s, extra, now);
    }

    /// Records the current question's answer; `None` when it was skipped.
    fn survey_record(&mut self, s: &SurveyNode, score: Option<u8>) {
        let Some(q) = s.questions.get(self.survey_question) else {
            return;
        };
        let value = score.map_or(SURVEY_NO_ANSWER.to_string(), |n| n.to_string());
        self.variables.insert(format!("survey.{}", q.id), value);
        // A survey node visited again replaces its earlier answers in place.
        let at = self.survey_answers.iter().position(|(id, _)| *id == q.id);
        match (score, at) {
            (Some(n), Some(i)) => self.survey_answers[i].1 = n,
            (Some(n), None) => self.survey_answers.push((q.id.clone(), n)),
            (None, Some(i)) => {
                self.survey_answers.remove(i);
            }
            (None, None) => {}
        }
    }

    fn survey_next(&mut self, s: &SurveyNode, now: Instant) {
        self.survey_question += 1;
        self.attempts = 0;
        if self.survey_question < s.questions.len() {
            return self.survey_present(s, Vec::new(), now);
        }
        let thanks = self.resolve(&s.thanks);
        if thanks.is_empty() {
            self.goto(s.next.clone(), now);
        } else {
            self.play(thanks, false, After::Next(s.next.clone()));
        }
    }
}

/// The caller's number if it can be called back: digits with an optional leading `+`
/// (anonymous or withheld callers have none and must type one).
fn callback_number(caller: &str) -> Option<String> {
    let n: String = caller
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = n.strip_prefix('+').unwrap_or(&n);
    ((3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// The digits to read back: Italy's country code is dropped (`+39 333...` is read `333...`),
/// since these services are Italian; other international numbers are read in full.
fn spoken_digits(number: &str) -> String {
    let national = number
        .strip_prefix("+39")
        .or_else(|| number.strip_prefix("0039"))
        .unwrap_or(number);
    national.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::PromptCatalog;
    use crate::loader::parse_flow;
    use chrono::TimeZone;
    use chrono_tz::Europe::Rome;
    use std::path::Path;
    use std::time::Duration;

    /// Every prompt exists in Italian; English has only the listed ones.
    struct ItalianPlus(Vec<&'static str>);

    impl PromptCatalog for ItalianPlus {
        fn has(&self, lang: &str, name: &str) -> bool {
            lang == "it" || self.0.contains(&name)
        }
    }

    fn flow(text: &str) -> Arc<Flow> {
        flow_with(text, &ItalianPlus(vec![]))
    }

    fn flow_with(text: &str, catalog: &dyn PromptCatalog) -> Arc<Flow> {
        match parse_flow(text, Path::new("test.yaml"), catalog) {
            Ok(f) => Arc::new(f),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn rome(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Rome.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    struct Call {
        ivr: Interpreter,
        now: Instant,
    }

    impl Call {
        fn new(flow: Arc<Flow>) -> Self {
            Self::at(flow, rome(2026, 5, 14, 10, 0))
        }
        fn at(flow: Arc<Flow>, wall: DateTime<Utc>) -> Self {
            let now = Instant::now();
            let call = CallInfo {
                call_id: "c1".into(),
                caller: "3331234567".into(),
                did: "800111222".into(),
            };
            Call {
                ivr: Interpreter::new(flow, call, wall, now),
                now,
            }
        }
        fn from(flow: Arc<Flow>, caller: &str) -> Self {
            let mut c = Self::new(flow.clone());
            let call = CallInfo {
                call_id: "c2".into(),
                caller: caller.into(),
                did: "800111222".into(),
            };
            c.ivr = Interpreter::new(flow, call, rome(2026, 5, 14, 10, 0), c.now);
            c
        }
        fn digits(&mut self, keys: &str) -> Vec<IvrAction> {
            keys.chars().flat_map(|d| self.digit(d)).collect()
        }
        fn send(&mut self, e: IvrEvent) -> Vec<IvrAction> {
            self.ivr.handle(e, self.now);
            self.actions()
        }
        fn digit(&mut self, d: char) -> Vec<IvrAction> {
            self.send(IvrEvent::Digit(d))
        }
        fn actions(&mut self) -> Vec<IvrAction> {
            std::iter::from_fn(|| self.ivr.poll_action()).collect()
        }
        /// Advances to the pending timeout and fires it.
        fn time_out(&mut self) -> Vec<IvrAction> {
            let at = self.ivr.poll_timeout().expect("a timeout is armed");
            self.now = at;
            self.ivr.handle_timeout(self.now);
            self.actions()
        }
    }

    fn names(actions: &[IvrAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                IvrAction::Play { prompts, .. } => format!(
                    "play {}",
                    prompts
                        .iter()
                        .map(|p| format!("{}/{}", p.lang, p.name))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                IvrAction::Queue { queue, .. } => format!("queue {queue}"),
                IvrAction::Hangup { reason } => format!("hangup {reason}"),
                IvrAction::Transfer { uri } => format!("transfer {uri}"),
                IvrAction::Voicemail { mailbox, .. } => format!("voicemail {mailbox}"),
                IvrAction::Callback {
                    queue,
                    number,
                    band,
                } => match band {
                    Some(b) => format!("callback {queue} {number} {}", b.name),
                    None => format!("callback {queue} {number}"),
                },
                IvrAction::Record {
                    mailbox,
                    max_duration,
                    terminator,
                    beep,
                } => format!(
                    "record {mailbox} {}s {} beep={beep}",
                    max_duration.as_secs(),
                    terminator.map_or("-".to_string(), String::from)
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    const HEAD: &str = "name: t\nnumbers: [\"800111222\"]\nlanguages: [it, en]\nstart: a\nnodes:\n";

    fn text(nodes: &str) -> String {
        format!("{HEAD}{nodes}")
    }

    const MENU: &str = r##"  a:
    type: menu
    prompts: [choose]
    choices: { 1: one, 2: two }
    timeout: 5
    retries: 1
    invalid_prompts: [invalid]
    no_input_prompts: [no_input]
    on_failure: failed
  one: { type: queue, queue: q1, fallback: [hold] }
  two: { type: transfer, uri: "sip:desk@example.org" }
  failed: { type: hangup, reason: menu_failed }
"##;

    #[test]
    fn play_then_hangup() {
        let mut c = Call::new(flow(&text(
            "  a: { type: play, prompts: [hi, there], next: b }\n  b: { type: hangup }\n",
        )));
        assert!(
            c.send(IvrEvent::PromptDone).is_empty(),
            "nothing happens before Start"
        );
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/hi,it/there"]
        );
        assert_eq!(c.ivr.poll_timeout(), None);
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["hangup completed"]);
        assert!(c.ivr.is_done());
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::HungUp {
                reason: "completed".into()
            })
        );
        assert_eq!(c.ivr.path(), ["a", "b"]);
    }

    #[test]
    fn early_media_precedes_the_answer() {
        let f = flow(&text("  a: { type: play, prompts: [ring], early_media: true, next: m }\n  m:\n    type: menu\n    prompts: [choose]\n    choices: { 1: b }\n  b: { type: hangup }\n"));
        let mut c = Call::new(f);
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["EarlyMedia", "play it/ring"]
        );
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["Answer", "play it/choose"]
        );
    }

    #[test]
    fn menu_choice_reaches_its_node() {
        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["queue q1"]);
        assert_eq!(c.ivr.choices(), [("a".to_string(), '1')]);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::Queued { queue: "q1".into() })
        );
        // Events after the end change nothing.
        assert!(c.digit('2').is_empty());
        assert!(c.send(IvrEvent::Hangup).is_empty());
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "queued:q1");
    }

    #[test]
    fn menu_timeout_starts_when_the_prompt_ends() {
        let mut c = Call::new(flow(&text(MENU)));
        let t0 = c.now;
        c.send(IvrEvent::Start);
        assert_eq!(
            c.ivr.poll_timeout(),
            None,
            "no timer while the prompt plays"
        );
        c.now = t0 + Duration::from_secs(3);
        c.send(IvrEvent::PromptDone);
        assert_eq!(c.ivr.poll_timeout(), Some(t0 + Duration::from_secs(8)));
        // An early call to handle_timeout does nothing.
        c.ivr.handle_timeout(t0 + Duration::from_secs(7));
        assert!(c.actions().is_empty());
    }

    #[test]
    fn menu_invalid_and_no_input_then_failure() {
        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('9')), ["play it/invalid,it/choose"]);
        c.send(IvrEvent::PromptDone);
        // retries: 1 -> the second failure goes to on_failure.
        assert_eq!(names(&c.time_out()), ["hangup menu_failed"]);
        assert_eq!(c.ivr.path(), ["a", "failed"]);

        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["play it/no_input,it/choose"]);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('2')), ["transfer sip:desk@example.org"]);
    }

    #[test]
    fn menu_default_on_timeout_and_hangup_without_on_failure() {
        let nodes = MENU
            .replace("    on_failure: failed\n", "    default: two\n")
            .replace("  failed: { type: hangup, reason: menu_failed }\n", "");
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["transfer sip:desk@example.org"]);

        let nodes = MENU
            .replace("    on_failure: failed\n", "")
            .replace("  failed: { type: hangup, reason: menu_failed }\n", "");
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('7');
        c.send(IvrEvent::PromptDone);
        let out = names(&c.digit('8'));
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with("hangup menu a: invalid choice"),
            "{out:?}"
        );
    }

    #[test]
    fn barge_in_stops_the_prompt() {
        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        assert_eq!(names(&c.digit('1')), ["StopPlayback", "queue q1"]);
    }

    #[test]
    fn no_barge_in_buffers_until_the_prompt_ends() {
        let nodes = MENU.replace("    retries: 1\n", "    retries: 1\n    barge_in: false\n");
        let mut c = Call::new(flow(&text(&nodes)));
        let start = c.send(IvrEvent::Start);
        assert!(matches!(
            start[1],
            IvrAction::Play {
                interruptible: false,
                ..
            }
        ));
        assert!(c.digit('2').is_empty());
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["transfer sip:desk@example.org"]
        );
    }

    #[test]
    fn type_ahead_skips_prompts() {
        let nodes = format!(
            "  a: {{ type: play, prompts: [welcome], barge_in: true, next: b }}\n  b: {{ type: play, prompts: [notice], next: c }}\n{}",
            MENU.replace("  a:\n", "  c:\n")
        );
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        // Barge into the welcome: the key is kept for the menu; the notice is not interruptible.
        assert_eq!(names(&c.digit('2')), ["StopPlayback", "play it/notice"]);
        c.digit('9'); // typed during the notice: buffered too
                      // The menu prompt is skipped and the first buffered key chooses.
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["transfer sip:desk@example.org"]
        );
        assert_eq!(c.ivr.path(), ["a", "b", "c", "two"]);
    }

    #[test]
    fn invalid_type_ahead_is_discarded() {
        let nodes = format!(
            "  a: {{ type: play, prompts: [notice], next: c }}\n{}",
            MENU.replace("  a:\n", "  c:\n")
        );
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        c.digit('9');
        c.digit('1');
        // 9 is invalid: the 1 typed after it is dropped and the menu is replayed.
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play it/invalid,it/choose"]
        );
        assert_eq!(c.ivr.poll_timeout(), None);
    }

    const COLLECT: &str = r##"  a:
    type: collect
    prompts: [enter_code]
    min_digits: 3
    max_digits: 5
    timeout: 5
    inter_digit_timeout: 2
    into: code
    retries: 1
    invalid_prompts: [invalid]
    on_failure: failed
    next: done
  done: { type: hangup, reason: ok }
  failed: { type: hangup, reason: collect_failed }
"##;

    #[test]
    fn collect_with_terminator() {
        let mut c = Call::new(flow(&text(COLLECT)));
        c.send(IvrEvent::Start);
        assert_eq!(names(&c.digit('1')), ["StopPlayback"]);
        c.digit('2');
        c.digit('3');
        assert_eq!(names(&c.digit('#')), ["hangup ok"]);
        assert_eq!(c.ivr.variables()["code"], "123");
    }

    #[test]
    fn collect_stops_at_max_digits_and_keeps_the_rest_typed_ahead() {
        let nodes = COLLECT.replace("next: done", "next: again").replace(
            "  done: { type: hangup, reason: ok }\n",
            "  again:\n    type: collect\n    into: second\n    next: done\n  done: { type: hangup, reason: ok }\n",
        );
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        for d in "12345".chars() {
            c.digit(d);
        }
        assert_eq!(c.ivr.variables()["code"], "12345");
        assert_eq!(c.ivr.path(), ["a", "again"]);
        // The second collect has no prompt: it waits with its own 5 s default timeout.
        c.digit('7');
        assert_eq!(names(&c.digit('#')), ["hangup ok"]);
        assert_eq!(c.ivr.variables()["second"], "7");
    }

    #[test]
    fn collect_inter_digit_timeout_finishes_when_long_enough() {
        let mut c = Call::new(flow(&text(COLLECT)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        let t = c.now;
        c.digit('4');
        c.digit('5');
        c.digit('6');
        assert_eq!(c.ivr.poll_timeout(), Some(t + Duration::from_secs(2)));
        assert_eq!(names(&c.time_out()), ["hangup ok"]);
        assert_eq!(c.ivr.variables()["code"], "456");
    }

    #[test]
    fn collect_too_short_retries_then_fails() {
        let mut c = Call::new(flow(&text(COLLECT)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        assert_eq!(names(&c.digit('#')), ["play it/invalid,it/enter_code"]);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["hangup collect_failed"]);
        assert!(!c.ivr.variables().contains_key("code"));
    }

    #[test]
    fn schedule_branches_by_time_band_and_holiday() {
        let nodes = r#"  a:
    type: schedule
    hours: { mon-fri: ["08:00-19:00"], sat: ["08:00-13:00"] }
    bands:
      - { name: morning, hours: "00:00-13:00", next: morning }
      - { name: afternoon, hours: "13:00-24:00", next: afternoon }
    open: morning
    closed: closed
    holiday: holiday
  morning: { type: hangup, reason: morning }
  afternoon: { type: hangup, reason: afternoon }
  closed: { type: hangup, reason: closed }
  holiday: { type: hangup, reason: holiday }
"#;
        let f = flow(&text(nodes));
        let cases = [
            (rome(2026, 5, 14, 9, 0), "morning"),
            (rome(2026, 5, 14, 15, 0), "afternoon"),
            (rome(2026, 5, 16, 12, 59), "morning"),
            (rome(2026, 5, 16, 13, 0), "closed"),
            (rome(2026, 4, 6, 10, 0), "holiday"),
            (rome(2026, 5, 14, 19, 30), "closed"),
        ];
        for (wall, expected) in cases {
            let mut c = Call::at(f.clone(), wall);
            assert_eq!(
                names(&c.send(IvrEvent::Start)),
                [format!("hangup {expected}")],
                "at {wall}"
            );
        }
        // Wall time moves with the call: a caller who waits past 13:00 gets the afternoon.
        let nodes = format!("  w: {{ type: menu, prompts: [hold], choices: {{ 1: a }} }}\n{nodes}")
            .replace("start: a", "start: w");
        let f = flow(&text(&nodes).replace("start: a", "start: w"));
        let mut c = Call::at(f, rome(2026, 5, 14, 12, 59));
        c.send(IvrEvent::Start);
        c.now += Duration::from_secs(120);
        assert_eq!(names(&c.digit('1')), ["StopPlayback", "hangup afternoon"]);
        assert_eq!(c.ivr.variables()["schedule"], "open:afternoon");
    }

    #[test]
    fn language_switch_with_fallback_to_the_default() {
        let nodes = "  a: { type: language, language: en, next: b }\n  b: { type: play, prompts: [hello, legal], next: c }\n  c: { type: hangup }\n";
        let mut c = Call::new(flow_with(&text(nodes), &ItalianPlus(vec!["hello"])));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play en/hello,it/legal"]
        );
        assert_eq!(c.ivr.language(), "en");
        assert_eq!(c.ivr.variables()["language"], "en");
    }

    #[test]
    fn set_goto_and_say_number() {
        let nodes = r#"  a: { type: set, variables: { position: "21" }, next: b }
  b: { type: goto, next: c }
  c: { type: say_number, variable: position, next: d }
  d: { type: language, language: en, next: e }
  e: { type: say_number, number: "315", next: f }
  f: { type: say_number, number: "0612", next: g }
  g: { type: say_number, variable: caller, mode: digits, next: h }
  h: { type: hangup }
"#;
        let english = ItalianPlus(vec![
            "num_3",
            "num_hundred",
            "num_15",
            "num_0",
            "num_6",
            "num_1",
            "num_2",
        ]);
        let mut c = Call::new(flow_with(&text(nodes), &english));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/num_20e,it/num_1"]
        );
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play en/num_3,en/num_hundred,en/num_15"]
        );
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play en/num_0,en/num_6,en/num_1,en/num_2"]
        );
        // English lacks some digits of the caller's number: the whole number falls back to Italian.
        let out = names(&c.send(IvrEvent::PromptDone));
        assert_eq!(out, ["play it/num_3,it/num_3,it/num_3,it/num_1,it/num_2,it/num_3,it/num_4,it/num_5,it/num_6,it/num_7"]);
        assert_eq!(c.ivr.variables()["position"], "21");
    }

    #[test]
    fn transfer_queue_voicemail_and_caller_hangup() {
        let mut c = Call::new(flow(&text(
            "  a: { type: voicemail, mailbox: desk, greeting: [leave_message] }\n",
        )));
        let out = c.send(IvrEvent::Start);
        assert_eq!(out[0], IvrAction::Answer);
        assert_eq!(
            out[1],
            IvrAction::Voicemail {
                mailbox: "desk".into(),
                greeting: vec![PromptRef {
                    lang: "it".into(),
                    name: "leave_message".into()
                }]
            }
        );
        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            c.digit('1')[0],
            IvrAction::Queue {
                queue: "q1".into(),
                fallback: vec![PromptRef {
                    lang: "it".into(),
                    name: "hold".into()
                }]
            }
        );
        let mut c = Call::new(flow(&text(MENU)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::Hangup);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::CallerHangup { node: "a".into() })
        );
        assert!(c.ivr.is_done());
        assert_eq!(c.ivr.poll_timeout(), None);
    }

    #[test]
    fn a_flow_spinning_without_waiting_is_hung_up() {
        // An empty variable makes say_number play nothing: the loader cannot see this loop.
        let nodes =
            "  a: { type: say_number, variable: nothing, next: b }\n  b: { type: goto, next: a }\n";
        let mut c = Call::new(flow(&text(nodes)));
        let out = names(&c.send(IvrEvent::Start));
        assert_eq!(out.last().unwrap(), "hangup loop detected at node a");
        assert!(c.ivr.path().len() <= MAX_HOPS_WITHOUT_WAIT as usize);
    }

    fn shipped(name: &str) -> Arc<Flow> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let catalog = crate::DirCatalog::new(root.join("sounds"));
        let path = root.join("ivr-flows").join(name);
        Arc::new(crate::check_flow_file(&path, &catalog).unwrap())
    }

    #[test]
    fn inps_english_pensions() {
        let mut c = Call::new(shipped("inps.yaml"));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/inps_welcome"]
        );
        let menu = names(&c.send(IvrEvent::PromptDone));
        assert!(
            menu[0].starts_with("play it/lang_option,en/lang_option,de/lang_option"),
            "{menu:?}"
        );
        assert_eq!(
            names(&c.digit('2')),
            ["StopPlayback", "play en/language_selected"]
        );
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play en/inps_privacy"]
        );
        let svc = names(&c.send(IvrEvent::PromptDone));
        assert!(svc[0].starts_with("play en/svc_pensions"), "{svc:?}");
        let out = c.digit('1');
        assert_eq!(out[0], IvrAction::StopPlayback);
        let IvrAction::Queue { queue, fallback } = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(queue, "pensions");
        assert_eq!(
            fallback.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["please_hold", "operators_busy"]
        );
        assert!(fallback.iter().all(|p| p.lang == "en"));
    }

    #[test]
    fn inps_language_menu_times_out_to_italian() {
        let mut c = Call::new(shipped("inps.yaml"));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["play it/language_selected"]);
        // German has no service-menu recordings: the flow's fallback language (English) is used.
        let mut c = Call::new(shipped("inps.yaml"));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('3');
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play de/inps_privacy"]
        );
        let svc = names(&c.send(IvrEvent::PromptDone));
        assert!(svc[0].starts_with("play en/svc_pensions"), "{svc:?}");
        assert_eq!(names(&c.digit('0')), ["StopPlayback", "queue operator"]);
    }

    #[test]
    fn facilities_greeting_depends_on_the_time_and_offers_voicemail_when_closed() {
        let f = shipped("university-facilities.yaml");
        let mut c = Call::at(f.clone(), rome(2026, 5, 14, 9, 0));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/facilities_good_morning"]
        );
        let mut c = Call::at(f.clone(), rome(2026, 5, 14, 16, 0));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/facilities_good_afternoon"]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["StopPlayback", "queue facilities"]);
        // Sunday: closed, hours, then 1 leaves a message.
        let mut c = Call::at(f, rome(2026, 5, 17, 11, 0));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            [
                "Answer",
                "play it/facilities_closed,it/hours_weekdays,it/hours_saturday"
            ]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('1')),
            ["StopPlayback", "voicemail facilities"]
        );
    }

    #[test]
    fn helpdesk_is_closed_on_easter_monday() {
        let f = shipped("teaching-helpdesk.yaml");
        let mut c = Call::at(f.clone(), rome(2026, 4, 6, 10, 0));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer", "play it/helpdesk_closed,it/hours_weekdays"]
        );
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["play it/goodbye"]);
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["hangup completed"]);
        let mut c = Call::at(f, rome(2026, 4, 7, 10, 0));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["queue teaching"]);
    }

    const CALLBACK: &str = r##"  a:
    type: callback
    queue: pensions
    min_digits: 6
    max_digits: 11
    retries: 1
    invalid_prompts: [invalid]
    no_input_prompts: [no_input]
    next: booked
    on_refused: full
    on_duplicate: dup
    on_failure: failed
  booked: { type: play, prompts: [callback_booked], next: bye }
  full: { type: play, prompts: [callback_full], next: bye }
  dup: { type: play, prompts: [callback_duplicate], next: bye }
  failed: { type: hangup, reason: callback_failed }
  bye: { type: hangup }
"##;

    const BANDS: &str = "    bands:\n      - { key: 1, name: asap, prompts: [band_asap] }\n      - { key: 2, name: morning, from: \"09:00\", to: \"12:00\", prompts: [band_morning] }\n      - { key: 3, name: afternoon, from: \"14:00\", to: \"18:00\", prompts: [band_afternoon] }\n";

    fn with_bands(nodes: &str) -> String {
        nodes.replace("    next: booked\n", &format!("{BANDS}    next: booked\n"))
    }

    /// The read-back prompts of `digits`, in Italian.
    fn readback(digits: &str) -> String {
        let nums: Vec<String> = digits.chars().map(|d| format!("it/num_{d}")).collect();
        format!(
            "play it/callback_confirm_number_before,{},it/callback_confirm_number_after",
            nums.join(",")
        )
    }

    #[test]
    fn callback_confirms_the_caller_number_and_waits_for_the_verdict() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer".to_string(), readback("3331234567")]
        );
        // Keys typed ahead do not confirm; events before the verdict change nothing.
        assert!(c.send(IvrEvent::CallbackAccepted).is_empty());
        c.send(IvrEvent::PromptDone);
        let out = c.digit('1');
        assert_eq!(
            out,
            [IvrAction::Callback {
                queue: "pensions".into(),
                number: "3331234567".into(),
                band: None
            }]
        );
        assert_eq!(c.ivr.variables()["callback_number"], "3331234567");
        assert!(!c.ivr.variables().contains_key("callback_band"));
        assert_eq!(c.ivr.poll_timeout(), Some(c.now + CALLBACK_VERDICT_TIMEOUT));
        assert!(!c.ivr.is_done());
        // Keys while the request is stored are ignored.
        assert!(c.digit('1').is_empty());
        assert_eq!(
            names(&c.send(IvrEvent::CallbackAccepted)),
            ["play it/callback_booked"]
        );
        assert_eq!(c.ivr.variables()["callback_result"], "booked");
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["hangup completed"]);
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "callback:pensions");
        assert_eq!(c.ivr.choices(), [("a".to_string(), '1')]);
    }

    #[test]
    fn callback_to_another_number_is_read_back_before_it_counts() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        // 2 during the read-back: barge in and type another number.
        assert_eq!(
            names(&c.digit('2')),
            ["StopPlayback", "play it/callback_enter_number"]
        );
        c.send(IvrEvent::PromptDone);
        // Too short (min 6): the invalid prompt, then the request again.
        assert_eq!(
            names(&c.digits("123#")),
            ["play it/invalid,it/callback_enter_number"]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digits("0612345#")), [readback("0612345")]);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["callback pensions 0612345"]);
        assert_eq!(c.ivr.variables()["callback_number"], "0612345");
    }

    #[test]
    fn callback_number_ends_at_max_digits_or_after_the_inter_digit_timeout() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('2');
        c.send(IvrEvent::PromptDone);
        // max_digits 11: the 11th digit ends the input at once.
        assert_eq!(names(&c.digits("39912345678")), [readback("39912345678")]);
        c.send(IvrEvent::PromptDone);
        c.digit('2');
        c.send(IvrEvent::PromptDone);
        c.digits("0212345");
        let t = c.now;
        assert_eq!(c.ivr.poll_timeout(), Some(t + Duration::from_secs(3)));
        assert_eq!(names(&c.time_out()), [readback("0212345")]);
    }

    #[test]
    fn callback_typing_numbers_forever_is_bounded() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        // retries: 1 -> two numbers may be typed; asking for a third fails.
        for _ in 0..2 {
            assert_eq!(
                names(&c.digit('2')),
                ["play it/callback_enter_number"],
                "path {:?}",
                c.ivr.path()
            );
            c.send(IvrEvent::PromptDone);
            c.digits("061234#");
            c.send(IvrEvent::PromptDone);
        }
        assert_eq!(names(&c.digit('2')), ["hangup callback_failed"]);
    }

    #[test]
    fn callback_confirmation_invalid_and_silent_then_failure() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        let out = names(&c.digit('7'));
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("play it/invalid,it/callback_confirm_number_before"));
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["hangup callback_failed"]);
        assert!(!c.ivr.variables().contains_key("callback_number"));

        let nodes = CALLBACK
            .replace("    on_failure: failed\n", "")
            .replace("  failed: { type: hangup, reason: callback_failed }\n", "");
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        let out = names(&c.time_out());
        assert!(
            out[0].starts_with("play it/no_input,it/callback_confirm"),
            "{out:?}"
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.time_out()),
            ["hangup callback a: no input after 2 attempts"]
        );
    }

    #[test]
    fn callback_from_an_anonymous_caller_asks_for_a_number_first() {
        for caller in ["anonymous", "", "+39"] {
            let mut c = Call::from(flow(&text(CALLBACK)), caller);
            assert_eq!(
                names(&c.send(IvrEvent::Start)),
                ["Answer", "play it/callback_enter_number"],
                "caller {caller:?}"
            );
        }
        // An international caller keeps the +; Italy's country code is not read back.
        let mut c = Call::from(flow(&text(CALLBACK)), "+39 06 1234567");
        assert_eq!(
            names(&c.send(IvrEvent::Start)),
            ["Answer".to_string(), readback("061234567")]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["callback pensions +39061234567"]);
    }

    #[test]
    fn callback_keys_typed_before_the_node_do_not_confirm() {
        let nodes = format!(
            "  w: {{ type: play, prompts: [hello], next: a }}\n{}",
            CALLBACK
        );
        let mut c = Call::new(flow(&text(&nodes).replace("start: a", "start: w")));
        c.send(IvrEvent::Start);
        c.digit('1');
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            [readback("3331234567")]
        );
    }

    #[test]
    fn callback_time_band_choice() {
        let mut c = Call::new(flow(&text(&with_bands(CALLBACK))));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('1')),
            ["play it/callback_band_menu,it/band_asap,it/band_morning,it/band_afternoon"]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('9')),
            ["play it/invalid,it/callback_band_menu,it/band_asap,it/band_morning,it/band_afternoon"]
        );
        let out = c.digit('3');
        let IvrAction::Callback {
            band: Some(band),
            number,
            ..
        } = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!(out[0], IvrAction::StopPlayback);
        assert_eq!(number, "3331234567");
        assert_eq!((band.key, band.name.as_str()), ('3', "afternoon"));
        let hours = band.hours.expect("afternoon has hours");
        assert_eq!(
            (hours.start_secs(), hours.end_secs()),
            (14 * 3600, 18 * 3600)
        );
        assert_eq!(c.ivr.variables()["callback_band"], "afternoon");
        assert_eq!(
            c.ivr.choices(),
            [("a".to_string(), '1'), ("a".to_string(), '3')]
        );
    }

    #[test]
    fn callback_band_not_chosen_takes_the_first_rather_than_losing_the_request() {
        let mut c = Call::new(flow(&text(&with_bands(CALLBACK))));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        c.send(IvrEvent::PromptDone);
        c.time_out();
        c.send(IvrEvent::PromptDone);
        let out = c.time_out();
        let IvrAction::Callback {
            band: Some(band), ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!((band.name.as_str(), band.hours), ("asap", None));
    }

    #[test]
    fn callback_refusals_follow_their_branches() {
        let cases = [
            (
                CallbackRefusal::Full,
                CALLBACK.to_string(),
                "play it/callback_full",
            ),
            (
                CallbackRefusal::Duplicate,
                CALLBACK.to_string(),
                "play it/callback_duplicate",
            ),
            // Without on_duplicate a duplicate takes on_refused.
            (
                CallbackRefusal::Duplicate,
                CALLBACK.replace("    on_duplicate: dup\n", "").replace(
                    "  dup: { type: play, prompts: [callback_duplicate], next: bye }\n",
                    "",
                ),
                "play it/callback_full",
            ),
            (
                CallbackRefusal::Full,
                CALLBACK.replace("    on_refused: full\n", "").replace(
                    "  full: { type: play, prompts: [callback_full], next: bye }\n",
                    "",
                ),
                "hangup callback refused: full",
            ),
        ];
        for (reason, nodes, expected) in cases {
            let mut c = Call::new(flow(&text(&nodes)));
            c.send(IvrEvent::Start);
            c.send(IvrEvent::PromptDone);
            c.digit('1');
            assert_eq!(
                names(&c.send(IvrEvent::CallbackRefused { reason })),
                [expected],
                "{reason}"
            );
            assert_eq!(c.ivr.variables()["callback_result"], reason.as_str());
            // Nothing was booked: the outcome is not a callback.
            c.send(IvrEvent::PromptDone);
            assert!(!c
                .ivr
                .outcome()
                .unwrap()
                .to_string()
                .starts_with("callback:"));
        }
    }

    #[test]
    fn callback_without_a_verdict_in_time_is_treated_as_unavailable() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        c.ivr.handle_timeout(c.now + Duration::from_secs(1));
        assert!(c.actions().is_empty(), "early timer does nothing");
        assert_eq!(names(&c.time_out()), ["play it/callback_full"]);
        assert_eq!(c.ivr.variables()["callback_result"], "unavailable");
        // A late verdict changes nothing.
        assert!(c.send(IvrEvent::CallbackAccepted).is_empty());
    }

    #[test]
    fn caller_hanging_up_after_a_booked_callback_keeps_the_callback_outcome() {
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        c.send(IvrEvent::CallbackAccepted);
        c.send(IvrEvent::Hangup);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::CallbackBooked {
                queue: "pensions".into()
            })
        );
        // Hanging up before the verdict: the request is the call task's; the IVR saw no booking.
        let mut c = Call::new(flow(&text(CALLBACK)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        c.send(IvrEvent::Hangup);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::CallerHangup { node: "a".into() })
        );
        assert_eq!(c.ivr.poll_timeout(), None);
    }

    const VOICEMAIL: &str = r##"  a:
    type: voicemail
    mailbox: desk
    greeting: [leave_message]
    max_duration: 60
    next: thanks
  thanks: { type: play, prompts: [voicemail_thanks], next: bye }
  bye: { type: hangup }
"##;

    fn record(mailbox: &str, secs: u64, terminator: Option<char>, beep: bool) -> IvrAction {
        IvrAction::Record {
            mailbox: mailbox.into(),
            max_duration: Duration::from_secs(secs),
            terminator,
            beep,
        }
    }

    #[test]
    fn voicemail_greeting_then_record_then_next() {
        let mut c = Call::new(flow(&text(VOICEMAIL)));
        let out = c.send(IvrEvent::Start);
        assert_eq!(out[0], IvrAction::Answer);
        assert_eq!(names(&out[1..]), ["voicemail desk"]);
        assert!(!c.ivr.is_done());
        // Keys during the greeting other than the terminator are dropped, not typed ahead.
        assert!(c.digit('5').is_empty());
        assert_eq!(
            c.send(IvrEvent::PromptDone),
            [record("desk", 60, Some('#'), true)]
        );
        assert_eq!(
            c.ivr.poll_timeout(),
            Some(c.now + Duration::from_secs(60) + RECORD_GRACE)
        );
        // The terminator during the recording is the call task's: it reports RecordingDone.
        assert!(c.digit('#').is_empty());
        assert_eq!(
            names(&c.send(IvrEvent::RecordingDone { duration_ms: 3020 })),
            ["play it/voicemail_thanks"]
        );
        assert_eq!(c.ivr.variables()["voicemail"], "desk");
        assert_eq!(c.ivr.variables()["voicemail_duration_ms"], "3020");
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["hangup completed"]);
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "voicemail:desk");
        assert_eq!(c.ivr.path(), ["a", "thanks", "bye"]);
    }

    #[test]
    fn voicemail_terminator_skips_the_greeting() {
        let nodes = VOICEMAIL.replace(
            "    max_duration: 60\n",
            "    terminator: \"*\"\n    beep: false\n",
        );
        let mut c = Call::new(flow(&text(&nodes)));
        c.send(IvrEvent::Start);
        assert!(c.digit('#').is_empty());
        assert_eq!(
            c.digit('*'),
            [
                IvrAction::StopPlayback,
                record("desk", 120, Some('*'), false)
            ]
        );
        // The greeting's playback was stopped: no PromptDone is due, and a stray one is ignored.
        assert!(c.send(IvrEvent::PromptDone).is_empty());
    }

    #[test]
    fn voicemail_hangup_while_recording_keeps_the_message() {
        let mut c = Call::new(flow(&text(VOICEMAIL)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.send(IvrEvent::Hangup);
        assert!(c.ivr.is_done());
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::Voicemail {
                mailbox: "desk".into()
            })
        );
        assert!(c
            .send(IvrEvent::RecordingDone { duration_ms: 10 })
            .is_empty());
        // Hanging up during the greeting left nothing.
        let mut c = Call::new(flow(&text(VOICEMAIL)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::Hangup);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::CallerHangup { node: "a".into() })
        );
    }

    #[test]
    fn voicemail_without_a_report_continues_after_the_safety_timer() {
        let mut c = Call::new(flow(&text(VOICEMAIL)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["play it/voicemail_thanks"]);
        assert!(!c.ivr.variables().contains_key("voicemail_duration_ms"));
    }

    #[test]
    fn voicemail_without_next_hangs_up_after_recording() {
        let nodes = "  a: { type: voicemail, mailbox: desk, terminator: \"\" }\n";
        let mut c = Call::new(flow(&text(nodes)));
        let out = c.send(IvrEvent::Start);
        assert_eq!(
            out[1],
            IvrAction::Voicemail {
                mailbox: "desk".into(),
                greeting: vec![]
            }
        );
        assert_eq!(
            c.send(IvrEvent::PromptDone),
            [record("desk", 120, None, true)]
        );
        assert_eq!(
            names(&c.send(IvrEvent::RecordingDone {
                duration_ms: 120_000
            })),
            ["hangup completed"]
        );
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::Voicemail {
                mailbox: "desk".into()
            })
        );
    }

    #[test]
    fn facilities_closed_offers_a_callback_for_the_next_opening() {
        let f = shipped("university-facilities.yaml");
        let mut c = Call::at(f.clone(), rome(2026, 5, 17, 11, 0));
        c.send(IvrEvent::Start);
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["play it/voicemail_offer,it/callback_offer_closed"]
        );
        let out = names(&c.digit('2'));
        assert_eq!(out[0], "StopPlayback");
        assert!(
            out[1].starts_with("play it/callback_confirm_number_before,it/num_3"),
            "{out:?}"
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('1')), ["callback facilities 3331234567"]);
        assert_eq!(
            names(&c.send(IvrEvent::CallbackAccepted)),
            ["play it/callback_booked_opening"]
        );
        // A full basket falls back to a voicemail.
        let mut c = Call::at(f.clone(), rome(2026, 5, 17, 11, 0));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('2');
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        c.send(IvrEvent::CallbackRefused {
            reason: CallbackRefusal::Full,
        });
        assert_eq!(
            names(&c.send(IvrEvent::PromptDone)),
            ["voicemail facilities"]
        );
        // The voicemail records, then thanks.
        let mut c = Call::at(f, rome(2026, 5, 17, 11, 0));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        assert_eq!(
            c.send(IvrEvent::PromptDone),
            [record("facilities", 120, Some('#'), true)]
        );
        assert_eq!(
            names(&c.send(IvrEvent::RecordingDone { duration_ms: 3000 })),
            ["play it/voicemail_thanks"]
        );
    }

    #[test]
    fn inps_queue_callback_offer_resumes_in_the_callers_language() {
        let f = shipped("inps.yaml");
        assert_eq!(f.entries(), ["offer_callback_pensions"]);
        assert!(f.has_node("offer_callback_pensions"));
        let mut c = Call::new(f);
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('2'); // English
        c.send(IvrEvent::PromptDone);
        c.send(IvrEvent::PromptDone);
        c.digit('1');
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "queued:pensions");
        // The caller accepts the in-queue offer: the call task resumes the flow.
        assert!(c.ivr.resume_at("offer_callback_pensions", c.now));
        let out = names(&c.actions());
        assert!(
            out[0].starts_with("play en/callback_confirm_number_before,en/num_3"),
            "{out:?}"
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('1')),
            ["play en/callback_band_menu,en/callback_band_asap,en/callback_band_morning,en/callback_band_afternoon"]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('2')),
            ["callback pensions 3331234567 morning"]
        );
        assert_eq!(
            names(&c.send(IvrEvent::CallbackRefused {
                reason: CallbackRefusal::Duplicate
            })),
            ["play en/callback_duplicate"]
        );
    }

    const SURVEY: &str = r##"  a:
    type: menu
    prompts: [choose]
    choices: { 1: desk, 5: survey, 7: plain }
  desk: { type: queue, queue: q1, fallback: [hold], after_agent: survey }
  plain: { type: queue, queue: q2 }
  survey:
    type: survey
    prompts: [survey_intro]
    questions:
      - { id: satisfaction, prompts: [q_satisfaction, scale] }
      - { id: resolved, prompts: [q_resolved] }
      - { id: again, prompts: [q_again] }
      - { id: recommend, prompts: [q_recommend] }
    invalid_prompts: [survey_invalid]
    no_input_prompts: [no_input]
    thanks: [survey_thanks]
    next: bye
  bye: { type: hangup, reason: survey_done }
"##;

    /// A call that chose `key` in the first menu.
    fn surveyed(key: char) -> Call {
        let mut c = Call::new(flow(&text(SURVEY)));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit(key);
        c
    }

    fn survey_vars(c: &Call) -> Vec<(String, String)> {
        c.ivr
            .variables()
            .iter()
            .filter(|(k, _)| k.starts_with("survey."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn survey_after_the_agent_hangs_up() {
        let mut c = surveyed('1');
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "queued:q1");
        assert_eq!(c.ivr.after_agent_node(), Some("survey"));
        assert!(c.ivr.resume_after_agent(c.now));
        // Already answered: the intro and the first question in one playback.
        assert_eq!(
            names(&c.actions()),
            ["play it/survey_intro,it/q_satisfaction,it/scale"]
        );
        assert_eq!(
            c.ivr.after_agent_node(),
            None,
            "the call left the queue node"
        );
        // A key stops the question and answers it.
        assert_eq!(names(&c.digit('6')), ["StopPlayback", "play it/q_resolved"]);
        c.send(IvrEvent::PromptDone);
        // Out of the 1-6 scale: invalid, the question is asked again.
        assert_eq!(
            names(&c.digit('9')),
            ["play it/survey_invalid,it/q_resolved"]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('2')), ["play it/q_again"]);
        let t = c.now;
        c.send(IvrEvent::PromptDone);
        assert_eq!(c.ivr.poll_timeout(), Some(t + Duration::from_secs(5)));
        // Silence: one retry (the default), then the question is skipped.
        assert_eq!(names(&c.time_out()), ["play it/no_input,it/q_again"]);
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.time_out()), ["play it/q_recommend"]);
        c.send(IvrEvent::PromptDone);
        assert_eq!(
            names(&c.digit('0')),
            ["play it/survey_invalid,it/q_recommend"]
        );
        c.send(IvrEvent::PromptDone);
        let thanks = c.digit('7');
        assert_eq!(names(&thanks), ["play it/survey_thanks"]);
        assert!(matches!(
            thanks[0],
            IvrAction::Play {
                interruptible: false,
                ..
            }
        ));
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["hangup survey_done"]);
        assert_eq!(
            c.ivr.survey_answers(),
            [("satisfaction".to_string(), 6), ("resolved".to_string(), 2)]
        );
        assert_eq!(
            survey_vars(&c),
            [
                ("survey.again".to_string(), "none".to_string()),
                ("survey.recommend".to_string(), "none".to_string()),
                ("survey.resolved".to_string(), "2".to_string()),
                ("survey.satisfaction".to_string(), "6".to_string()),
            ]
        );
        assert_eq!(c.ivr.path(), ["a", "desk", "survey", "bye"]);
        assert_eq!(
            c.ivr.choices(),
            [("a".to_string(), '1')],
            "answers are not menu choices"
        );
        // The caller was served: the survey does not turn the call into a plain hangup.
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "queued:q1");
    }

    #[test]
    fn after_agent_only_from_a_queue_node_that_names_it() {
        let mut c = Call::new(flow(&text(SURVEY)));
        assert_eq!(c.ivr.after_agent_node(), None);
        c.send(IvrEvent::Start);
        assert_eq!(c.ivr.after_agent_node(), None, "still in the menu");
        assert!(!c.ivr.resume_after_agent(c.now));
        assert!(c.actions().is_empty());

        let mut c = surveyed('7');
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "queued:q2");
        assert_eq!(c.ivr.after_agent_node(), None);
        assert!(!c.ivr.resume_after_agent(c.now));
        assert!(c.actions().is_empty());
        assert!(c.ivr.is_done());

        // A queue exit resumed elsewhere is no agent hangup: the outcome follows the flow.
        let mut c = surveyed('1');
        assert!(c.ivr.resume_at("bye", c.now));
        assert_eq!(c.ivr.after_agent_node(), None);
        assert_eq!(c.ivr.outcome().unwrap().to_string(), "hangup:survey_done");
    }

    #[test]
    fn survey_straight_from_a_menu_and_caller_hangup_keeps_the_answers() {
        let mut c = Call::new(flow(&text(SURVEY)));
        c.send(IvrEvent::Start);
        // "Transfer to survey" is a plain menu choice.
        assert_eq!(
            names(&c.digit('5')),
            [
                "StopPlayback",
                "play it/survey_intro,it/q_satisfaction,it/scale"
            ]
        );
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('4')), ["play it/q_resolved"]);
        c.send(IvrEvent::Hangup);
        assert_eq!(c.ivr.survey_answers(), [("satisfaction".to_string(), 4)]);
        assert_eq!(
            c.ivr.outcome(),
            Some(&Outcome::CallerHangup {
                node: "survey".into()
            })
        );
        assert_eq!(c.ivr.poll_timeout(), None);
    }

    #[test]
    fn survey_keys_typed_ahead_are_discarded_and_without_thanks_it_moves_on() {
        let nodes = "  a: { type: play, prompts: [hi], next: s }\n  s:\n    type: survey\n    questions: [{ id: only, prompts: [q] }]\n    retries: 0\n    timeout: 2\n    next: b\n  b: { type: hangup }\n";
        let mut c = Call::new(flow(&text(nodes)));
        c.send(IvrEvent::Start);
        assert!(c.digit('3').is_empty(), "typed during a non-barge-in play");
        assert_eq!(names(&c.send(IvrEvent::PromptDone)), ["play it/q"]);
        let t = c.now;
        c.send(IvrEvent::PromptDone);
        assert_eq!(c.ivr.poll_timeout(), Some(t + Duration::from_secs(2)));
        // retries: 0 -> the first silence skips the only question; no thanks -> next.
        assert_eq!(names(&c.time_out()), ["hangup completed"]);
        assert!(c.ivr.survey_answers().is_empty());
        assert_eq!(c.ivr.variables()["survey.only"], "none");
    }

    #[test]
    fn survey_visited_again_replaces_its_answers_in_place() {
        let nodes = "  a:\n    type: survey\n    questions:\n      - { id: one, prompts: [q1] }\n      - { id: two, prompts: [q2] }\n    next: m\n  m:\n    type: menu\n    prompts: [again]\n    choices: { 1: a, 2: b }\n  b: { type: hangup }\n";
        let mut c = Call::new(flow(&text(nodes)));
        c.send(IvrEvent::Start);
        c.digits("35");
        assert_eq!(
            c.ivr.survey_answers(),
            [("one".to_string(), 3), ("two".to_string(), 5)]
        );
        c.digit('1');
        c.send(IvrEvent::PromptDone);
        c.digit('6');
        assert_eq!(
            c.ivr.survey_answers(),
            [("one".to_string(), 6), ("two".to_string(), 5)]
        );
        c.send(IvrEvent::PromptDone);
        c.digit('8');
        c.send(IvrEvent::PromptDone);
        c.time_out();
        assert_eq!(c.ivr.survey_answers(), [("one".to_string(), 6)]);
        assert_eq!(c.ivr.variables()["survey.two"], "none");
    }

    #[test]
    fn inps_survey_after_the_agent_in_english() {
        let mut c = Call::new(shipped("inps.yaml"));
        c.send(IvrEvent::Start);
        c.send(IvrEvent::PromptDone);
        c.digit('2'); // English
        c.send(IvrEvent::PromptDone);
        c.send(IvrEvent::PromptDone);
        c.digit('0'); // the operator queue, which offers the survey
        assert_eq!(c.ivr.after_agent_node(), Some("survey"));
        assert!(c.ivr.resume_after_agent(c.now));
        let out = names(&c.actions());
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].starts_with("play en/survey_intro,en/survey_q_satisfaction"),
            "{out:?}"
        );
        c.digit('5');
        c.send(IvrEvent::PromptDone);
        assert_eq!(names(&c.digit('6')), ["play en/survey_thanks"]);
        assert_eq!(
            c.ivr.survey_answers(),
            [("satisfaction".to_string(), 5), ("resolved".to_string(), 6)]
        );
    }
}
