//! The validated flow model: what the loader produces and the interpreter walks.
//!
//! Nodes are crate-private: the binary only needs to find a flow by number, start an
//! interpreter on it and show its name and warnings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

use crate::schedule::{Schedule, TimeRange};

/// A problem in a flow file, displayed as `file:line: reason` (or `file: reason` when no
/// line applies, e.g. an unreadable file or directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    pub file: PathBuf,
    /// 1-based line, 0 when the problem is not tied to a line.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for FlowError {}

/// Tells the loader which prompt recordings exist, without the IVR knowing the media layer.
pub trait PromptCatalog {
    /// Whether a recording `name` exists for language `lang`.
    fn has(&self, lang: &str, name: &str) -> bool;
}

/// A [`PromptCatalog`] over the `sounds/<lang>/<name>.<ext>` directory layout.
#[derive(Debug, Clone)]
pub struct DirCatalog {
    root: PathBuf,
}

impl DirCatalog {
    /// Extensions the media layer can decode.
    pub const EXTENSIONS: [&'static str; 4] = ["wav", "flac", "mp3", "ogg"];

    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirCatalog { root: root.into() }
    }
}

impl PromptCatalog for DirCatalog {
    fn has(&self, lang: &str, name: &str) -> bool {
        Self::EXTENSIONS
            .iter()
            .any(|ext| self.root.join(lang).join(format!("{name}.{ext}")).is_file())
    }
}

/// A prompt as written in a flow: a name, optionally pinned to one language with `name@lang`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PromptSpec {
    pub name: String,
    pub lang: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Menu {
    pub prompts: Vec<PromptSpec>,
    pub choices: BTreeMap<char, String>,
    pub timeout: Duration,
    pub retries: u32,
    pub invalid_prompts: Vec<PromptSpec>,
    pub no_input_prompts: Vec<PromptSpec>,
    pub default: Option<String>,
    pub on_failure: Option<String>,
    pub barge_in: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Collect {
    pub prompts: Vec<PromptSpec>,
    pub min_digits: usize,
    pub max_digits: usize,
    pub terminator: Option<char>,
    pub timeout: Duration,
    pub inter_digit_timeout: Duration,
    pub into: String,
    pub next: String,
    pub retries: u32,
    pub invalid_prompts: Vec<PromptSpec>,
    pub no_input_prompts: Vec<PromptSpec>,
    pub on_failure: Option<String>,
    pub barge_in: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ScheduleNode {
    pub schedule: Schedule,
    pub open: String,
    pub closed: String,
    pub holiday: String,
    /// (band name, node) in declaration order.
    pub bands: Vec<(String, String)>,
}

/// A time band a caller may choose for a callback (`bands` of a `callback` node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BandSpec {
    /// The key that picks it.
    pub key: char,
    pub name: String,
    /// Local clock times in the flow's time zone; `None` means whenever the service is open
    /// (e.g. "as soon as possible").
    pub hours: Option<TimeRange>,
}

#[derive(Debug, Clone)]
pub(crate) struct CallbackNode {
    pub queue: String,
    /// Played before the number is read back.
    pub confirm_prompts: Vec<PromptSpec>,
    /// Played after the number: "press 1 to confirm, 2 to enter another number".
    pub confirm_after: Vec<PromptSpec>,
    pub enter_prompts: Vec<PromptSpec>,
    pub band_prompts: Vec<PromptSpec>,
    /// Each band with the prompts that describe it, in declaration order.
    pub bands: Vec<(BandSpec, Vec<PromptSpec>)>,
    pub min_digits: usize,
    pub max_digits: usize,
    pub terminator: Option<char>,
    pub timeout: Duration,
    pub inter_digit_timeout: Duration,
    pub retries: u32,
    pub invalid_prompts: Vec<PromptSpec>,
    pub no_input_prompts: Vec<PromptSpec>,
    pub barge_in: bool,
    pub next: String,
    pub on_refused: Option<String>,
    pub on_duplicate: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct VoicemailNode {
    pub mailbox: String,
    pub greeting: Vec<PromptSpec>,
    pub beep: bool,
    pub max_duration: Duration,
    pub terminator: Option<char>,
    /// Where the flow continues once the message is recorded; hang up when absent.
    pub next: Option<String>,
}

/// One question of a `survey` node.
#[derive(Debug, Clone)]
pub(crate) struct SurveyQuestion {
    /// Names the answer: variable `survey.<id>`, and the question in the call record.
    pub id: String,
    pub prompts: Vec<PromptSpec>,
}

#[derive(Debug, Clone)]
pub(crate) struct SurveyNode {
    /// Played once, before the first question (in the same playback).
    pub intro: Vec<PromptSpec>,
    pub questions: Vec<SurveyQuestion>,
    /// Per question: the wait for a key after its prompts, and the extra attempts.
    pub timeout: Duration,
    pub retries: u32,
    pub invalid_prompts: Vec<PromptSpec>,
    pub no_input_prompts: Vec<PromptSpec>,
    pub thanks: Vec<PromptSpec>,
    pub barge_in: bool,
    pub next: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberMode {
    Number,
    Digits,
}

#[derive(Debug, Clone)]
pub(crate) enum NumberSource {
    Literal(String),
    Variable(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Play {
        prompts: Vec<PromptSpec>,
        next: String,
        early_media: bool,
        barge_in: bool,
    },
    Menu(Menu),
    Collect(Collect),
    Schedule(Box<ScheduleNode>),
    Language {
        language: String,
        next: String,
    },
    Set {
        variables: Vec<(String, String)>,
        next: String,
    },
    Goto {
        next: String,
    },
    SayNumber {
        source: NumberSource,
        mode: NumberMode,
        next: String,
        barge_in: bool,
    },
    Transfer {
        uri: String,
    },
    Queue {
        queue: String,
        fallback: Vec<PromptSpec>,
        /// Where the flow continues when the agent hangs up first (e.g. a survey).
        after_agent: Option<String>,
    },
    Voicemail(VoicemailNode),
    Callback(Box<CallbackNode>),
    Survey(Box<SurveyNode>),
    Hangup {
        reason: String,
    },
}

impl Node {
    /// Nodes that pass control on without playing anything or waiting for the caller; a cycle
    /// made only of these would spin forever.
    pub(crate) fn is_instant(&self) -> bool {
        matches!(
            self,
            Node::Schedule(_) | Node::Language { .. } | Node::Set { .. } | Node::Goto { .. }
        )
    }
}

/// One validated flow. Immutable; shared with `Arc` by every call that uses it.
#[derive(Debug)]
pub struct Flow {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) numbers: Vec<String>,
    pub(crate) language: String,
    /// Tried before `language` when the caller's language lacks a recording.
    pub(crate) fallback_language: Option<String>,
    pub(crate) languages: Vec<String>,
    pub(crate) timezone: Tz,
    pub(crate) start: String,
    /// Nodes the call task may resume at (`entries`), besides `start`.
    pub(crate) entries: Vec<String>,
    pub(crate) nodes: HashMap<String, Node>,
    /// (lang, prompt name) pairs that exist, computed at load time so the interpreter can fall
    /// back to the default language without touching the catalog.
    pub(crate) available: HashSet<(String, String)>,
    pub(crate) warnings: Vec<FlowError>,
    /// Line of each entry of `numbers`, for duplicate-number errors across files.
    pub(crate) number_lines: Vec<usize>,
    pub(crate) name_line: usize,
}

impl Flow {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file this flow was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }
    /// The called numbers (DIDs) this flow serves.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }
    /// The default language (and the fallback for missing recordings).
    pub fn language(&self) -> &str {
        &self.language
    }
    /// Languages offered, the default first.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }
    pub fn timezone(&self) -> Tz {
        self.timezone
    }
    /// Non-fatal findings, e.g. recordings missing in an offered language.
    pub fn warnings(&self) -> &[FlowError] {
        &self.warnings
    }
    /// The schedules of the flow's `schedule` nodes, by node id (the callback feature uses
    /// them for "next opening" and working-time arithmetic).
    pub fn schedules(&self) -> impl Iterator<Item = (&str, &Schedule)> {
        let mut v: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| match n {
                Node::Schedule(s) => Some((id.as_str(), &s.schedule)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter()
    }

    /// Nodes declared in `entries`: where the call task may resume the flow from outside
    /// (queue exits, the in-queue callback offer) with [`crate::Interpreter::resume_at`].
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Whether the flow has a node `id` (to check configured resume points at load time).
    pub fn has_node(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    pub(crate) fn has_prompt(&self, lang: &str, name: &str) -> bool {
        self.available
            .contains(&(lang.to_string(), name.to_string()))
    }
}

/// All flows of a directory, indexed by number. Immutable: hot reload builds a new set and the
/// binary swaps the `Arc`.
#[derive(Debug, Default)]
pub struct FlowSet {
    pub(crate) flows: Vec<Arc<Flow>>,
    pub(crate) by_number: HashMap<String, Arc<Flow>>,
}

impl FlowSet {
    /// The flow serving `did`, if any.
    pub fn for_number(&self, did: &str) -> Option<Arc<Flow>> {
        self.by_number.get(did).cloned()
    }
    /// A flow by name.
    pub fn get(&self, name: &str) -> Option<Arc<Flow>> {
        self.flows.iter().find(|f| f.name == name).cloned()
    }
    /// Flows in file-name order.
    pub fn flows(&self) -> &[Arc<Flow>] {
        &self.flows
    }
    pub fn len(&self) -> usize {
        self.flows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
    /// Warnings of every flow.
    pub fn warnings(&self) -> impl Iterator<Item = &FlowError> {
        self.flows.iter().flat_map(|f| f.warnings.iter())
    }
}
