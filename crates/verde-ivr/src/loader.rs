//! Reading and validating flow files. The only module that uses `serde_yaml` (archived upstream),
//! so swapping the YAML parser touches this file alone.
//!
//! serde_yaml reports syntax, type and unknown-field errors with their location. Everything
//! checked afterwards (targets, prompts, schedules...) gets its line from [`LineIndex`], which
//! scans the text, because parsed values carry no positions.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Weekday;
use serde::Deserialize;

use crate::flow::{
    BandSpec, CallbackNode, Collect, Flow, FlowError, FlowSet, Menu, Node, NumberMode,
    NumberSource, PromptCatalog, PromptSpec, ScheduleNode, SurveyNode, SurveyQuestion,
    VoicemailNode,
};
use crate::lines::LineIndex;
use crate::numbers;
use crate::schedule::{self, HolidayRule, Schedule, ScheduleError, TimeRange};

const DTMF_KEYS: &str = "0123456789*#ABCD";
const MAX_TIMEOUT_SECS: f64 = 300.0;
const MAX_COLLECT_DIGITS: usize = 64;
/// Default prompts of a callback node, so a minimal node needs only `queue` and `next`.
const CALLBACK_CONFIRM: &str = "callback_confirm_number_before";
const CALLBACK_CONFIRM_AFTER: &str = "callback_confirm_number_after";
const CALLBACK_ENTER: &str = "callback_enter_number";
const CALLBACK_BAND_MENU: &str = "callback_band_menu";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    numbers: Vec<String>,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default)]
    languages: Vec<String>,
    #[serde(default)]
    fallback_language: Option<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default)]
    holidays: Vec<String>,
    start: String,
    #[serde(default)]
    entries: Vec<String>,
    nodes: BTreeMap<String, RawNode>,
}

fn default_language() -> String {
    "it".into()
}

fn default_timezone() -> String {
    "Europe/Rome".into()
}

/// Every field any node type may have; which ones a type accepts is checked afterwards so the
/// error can say "`choices` does not apply to a play node" with its line.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(rename = "type")]
    kind: String,
    description: Option<String>,
    prompts: Option<Vec<String>>,
    next: Option<String>,
    early_media: Option<bool>,
    barge_in: Option<bool>,
    choices: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
    inter_digit_timeout: Option<f64>,
    retries: Option<u32>,
    invalid_prompts: Option<Vec<String>>,
    no_input_prompts: Option<Vec<String>>,
    default: Option<String>,
    on_failure: Option<String>,
    min_digits: Option<usize>,
    max_digits: Option<usize>,
    terminator: Option<String>,
    into: Option<String>,
    hours: Option<BTreeMap<String, Vec<String>>>,
    overrides: Option<BTreeMap<String, RawOverride>>,
    national_holidays: Option<bool>,
    bands: Option<Vec<RawBand>>,
    open: Option<String>,
    closed: Option<String>,
    holiday: Option<String>,
    language: Option<String>,
    variables: Option<BTreeMap<String, String>>,
    number: Option<String>,
    variable: Option<String>,
    mode: Option<String>,
    uri: Option<String>,
    queue: Option<String>,
    fallback: Option<Vec<String>>,
    mailbox: Option<String>,
    greeting: Option<Vec<String>>,
    beep: Option<bool>,
    max_duration: Option<f64>,
    confirm_prompts: Option<Vec<String>>,
    confirm_after: Option<Vec<String>>,
    enter_prompts: Option<Vec<String>>,
    band_prompts: Option<Vec<String>>,
    on_refused: Option<String>,
    on_duplicate: Option<String>,
    after_agent: Option<String>,
    questions: Option<Vec<RawQuestion>>,
    thanks: Option<Vec<String>>,
    reason: Option<String>,
}

impl RawNode {
    fn present_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! check {
            ($($f:ident),*) => { $( if self.$f.is_some() { v.push(stringify!($f)); } )* };
        }
        check!(
            prompts,
            next,
            early_media,
            barge_in,
            choices,
            timeout,
            inter_digit_timeout,
            retries,
            invalid_prompts,
            no_input_prompts,
            default,
            on_failure,
            min_digits,
            max_digits,
            terminator,
            into,
            hours,
            overrides,
            national_holidays,
            bands,
            open,
            closed,
            holiday,
            language,
            variables,
            number,
            variable,
            mode,
            uri,
            queue,
            fallback,
            mailbox,
            greeting,
            beep,
            max_duration,
            confirm_prompts,
            confirm_after,
            enter_prompts,
            band_prompts,
            on_refused,
            on_duplicate,
            after_agent,
            questions,
            thanks,
            reason
        );
        v
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawOverride {
    Closed(String),
    Hours(Vec<String>),
}

/// A question of a `survey` node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuestion {
    id: String,
    prompts: Vec<String>,
}

/// A band of a `schedule` node (`name`, `hours`, `next`) or of a `callback` node (`key`,
/// `name`, optional `from`/`to` and `prompts`); which fields apply is checked per node type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    name: String,
    hours: Option<String>,
    next: Option<String>,
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
    prompts: Option<Vec<String>>,
}

impl RawBand {
    fn present_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! check {
            ($($f:ident),*) => { $( if self.$f.is_some() { v.push(stringify!($f)); } )* };
        }
        check!(hours, next, key, from, to, prompts);
        v
    }
}

/// Node types and the fields each accepts (besides `type` and `description`).
const NODE_TYPES: &[(&str, &[&str])] = &[
    ("play", &["prompts", "next", "early_media", "barge_in"]),
    (
        "menu",
        &[
            "prompts",
            "choices",
            "timeout",
            "retries",
            "invalid_prompts",
            "no_input_prompts",
            "default",
            "on_failure",
            "barge_in",
        ],
    ),
    (
        "collect",
        &[
            "prompts",
            "min_digits",
            "max_digits",
            "terminator",
            "timeout",
            "inter_digit_timeout",
            "into",
            "next",
            "retries",
            "invalid_prompts",
            "no_input_prompts",
            "on_failure",
            "barge_in",
        ],
    ),
    (
        "schedule",
        &[
            "hours",
            "overrides",
            "national_holidays",
            "bands",
            "open",
            "closed",
            "holiday",
        ],
    ),
    ("language", &["language", "next"]),
    ("set", &["variables", "next"]),
    ("goto", &["next"]),
    (
        "say_number",
        &["number", "variable", "mode", "next", "barge_in"],
    ),
    ("transfer", &["uri"]),
    ("queue", &["queue", "fallback", "after_agent"]),
    (
        "voicemail",
        &[
            "mailbox",
            "greeting",
            "beep",
            "max_duration",
            "terminator",
            "next",
        ],
    ),
    (
        "callback",
        &[
            "queue",
            "confirm_prompts",
            "confirm_after",
            "enter_prompts",
            "band_prompts",
            "bands",
            "min_digits",
            "max_digits",
            "terminator",
            "timeout",
            "inter_digit_timeout",
            "retries",
            "invalid_prompts",
            "no_input_prompts",
            "barge_in",
            "next",
            "on_refused",
            "on_duplicate",
            "on_failure",
        ],
    ),
    (
        "survey",
        &[
            "prompts",
            "questions",
            "timeout",
            "retries",
            "invalid_prompts",
            "no_input_prompts",
            "thanks",
            "barge_in",
            "next",
        ],
    ),
    ("hangup", &["reason"]),
];

/// Accumulates errors and warnings for one file.
struct Ctx<'a> {
    file: &'a Path,
    lines: LineIndex,
    errors: Vec<FlowError>,
    warnings: Vec<FlowError>,
    /// Every prompt use, with the path of the field that names it.
    prompt_uses: Vec<(PromptSpec, Vec<String>)>,
    /// Every node reference: (source node, target, path of the field).
    targets: Vec<(String, String, Vec<String>)>,
}

impl Ctx<'_> {
    fn line(&self, path: &[&str]) -> usize {
        self.lines.line(path)
    }

    fn error(&mut self, path: &[&str], reason: impl Into<String>) {
        let line = self.line(path);
        self.errors.push(FlowError {
            file: self.file.to_path_buf(),
            line,
            reason: reason.into(),
        });
    }

    fn warn(&mut self, path: &[&str], reason: impl Into<String>) {
        let line = self.line(path);
        self.warnings.push(FlowError {
            file: self.file.to_path_buf(),
            line,
            reason: reason.into(),
        });
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_variable_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && s.len() <= 64
}

fn is_language_code(s: &str) -> bool {
    let (base, region) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    (2..=3).contains(&base.len())
        && base.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (2..=8).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (2..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Strips serde_yaml's " at line N column M" suffix (the line is reported separately) and the
/// list of every field any node may have, which is noise for one node type.
fn tidy_serde_message(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.find(", expected one of") {
        Some(i) if msg.starts_with("nodes.") && msg.contains("unknown field") => format!(
            "{} (docs/flows.md lists the fields of each node type)",
            &msg[..i]
        ),
        _ => msg.to_string(),
    }
}

/// Parses and validates one flow from its text. `file` is used in error messages only.
pub fn parse_flow(
    text: &str,
    file: &Path,
    catalog: &dyn PromptCatalog,
) -> Result<Flow, Vec<FlowError>> {
    let raw: RawFlow = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(vec![FlowError {
                file: file.to_path_buf(),
                line: e.location().map_or(1, |l| l.line()),
                reason: tidy_serde_message(&e.to_string()),
            }])
        }
    };
    let mut ctx = Ctx {
        file,
        lines: LineIndex::new(text),
        errors: Vec::new(),
        warnings: Vec::new(),
        prompt_uses: Vec::new(),
        targets: Vec::new(),
    };

    if raw.name.trim().is_empty() {
        ctx.error(&["name"], "the flow `name` is empty");
    }
    if raw.numbers.is_empty() {
        ctx.error(
            &["numbers"],
            "`numbers` is empty: list the called numbers this flow serves",
        );
    }
    let mut seen = HashSet::new();
    let mut number_lines = Vec::new();
    for (i, n) in raw.numbers.iter().enumerate() {
        let idx = i.to_string();
        number_lines.push(ctx.line(&["numbers", &idx]));
        if !is_number(n) {
            ctx.error(
                &["numbers", &idx],
                format!("number `{n}` is not a phone number (2-20 digits, optional leading +)"),
            );
        } else if !seen.insert(n.as_str()) {
            ctx.error(&["numbers", &idx], format!("number `{n}` is listed twice"));
        }
    }

    if !is_language_code(&raw.language) {
        ctx.error(
            &["language"],
            format!(
                "`{}` is not a language code (e.g. it, en, pt-BR)",
                raw.language
            ),
        );
    }
    let mut languages = vec![raw.language.clone()];
    for (i, l) in raw.languages.iter().enumerate() {
        if !is_language_code(l) {
            ctx.error(
                &["languages", &i.to_string()],
                format!("`{l}` is not a language code (e.g. it, en, pt-BR)"),
            );
        } else if !languages.contains(l) {
            languages.push(l.clone());
        }
    }
    if let Some(f) = &raw.fallback_language {
        if !languages.contains(f) || *f == raw.language {
            ctx.error(
                &["fallback_language"],
                format!("fallback_language `{f}` must be one of the offered `languages` other than the default"),
            );
        }
    }

    let timezone = match schedule::parse_timezone(&raw.timezone) {
        Ok(tz) => tz,
        Err(e) => {
            ctx.error(&["timezone"], e.to_string());
            chrono_tz::Europe::Rome
        }
    };
    let mut holidays = Vec::new();
    for (i, h) in raw.holidays.iter().enumerate() {
        match HolidayRule::parse(h) {
            Ok(rule) => holidays.push(rule),
            Err(e) => ctx.error(&["holidays", &i.to_string()], e.to_string()),
        }
    }

    let env = Env {
        languages: &languages,
        timezone,
        holidays: &holidays,
    };
    let mut nodes = HashMap::new();
    for (id, node) in &raw.nodes {
        if !is_ident(id) {
            ctx.error(
                &["nodes", id],
                format!("node id `{id}` may only use letters, digits, `_` and `-`"),
            );
        }
        if let Some(built) = build_node(&mut ctx, &env, id, node) {
            nodes.insert(id.clone(), built);
        }
    }

    if !raw.nodes.contains_key(&raw.start) {
        ctx.error(
            &["start"],
            format!("start node `{}` is not defined under `nodes`", raw.start),
        );
    }
    for (i, e) in raw.entries.iter().enumerate() {
        if !raw.nodes.contains_key(e) {
            ctx.error(
                &["entries", &i.to_string()],
                format!("entry node `{e}` is not defined under `nodes`"),
            );
        }
    }
    for (from, to, path) in ctx.targets.clone() {
        if !raw.nodes.contains_key(&to) {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            ctx.error(
                &p,
                format!("node `{from}` goes to `{to}`, which is not defined"),
            );
        }
    }
    check_graph(&mut ctx, &raw, &nodes);

    let available = check_prompts(
        &mut ctx,
        catalog,
        &languages,
        &raw.language,
        raw.fallback_language.as_deref(),
        &nodes,
    );

    if !ctx.errors.is_empty() {
        ctx.errors.sort_by_key(|e| e.line);
        return Err(ctx.errors);
    }
    for w in &ctx.warnings {
        tracing::warn!("{w}");
    }
    Ok(Flow {
        name: raw.name,
        file: file.to_path_buf(),
        numbers: raw.numbers,
        language: raw.language,
        fallback_language: raw.fallback_language,
        languages,
        timezone,
        start: raw.start,
        entries: raw.entries,
        nodes,
        available,
        warnings: ctx.warnings,
        number_lines,
        name_line: ctx.lines.line(&["name"]),
    })
}

/// Flow-wide settings a node needs while being built.
struct Env<'a> {
    languages: &'a [String],
    timezone: chrono_tz::Tz,
    holidays: &'a [HolidayRule],
}

fn build_node(ctx: &mut Ctx, env: &Env, id: &str, raw: &RawNode) -> Option<Node> {
    let Some((_, allowed)) = NODE_TYPES.iter().find(|(t, _)| *t == raw.kind) else {
        let names: Vec<&str> = NODE_TYPES.iter().map(|(t, _)| *t).collect();
        ctx.error(
            &["nodes", id, "type"],
            format!(
                "unknown node type `{}` (expected one of: {})",
                raw.kind,
                names.join(", ")
            ),
        );
        return None;
    };
    let _ = &raw.description;
    let errors_before = ctx.errors.len();
    for field in raw.present_fields() {
        if !allowed.contains(&field) {
            ctx.error(
                &["nodes", id, field],
                format!("`{field}` does not apply to a {} node", raw.kind),
            );
        }
    }

    // Helpers record errors and keep going, so one pass reports everything.
    let required = |ctx: &mut Ctx, field: &str, v: &Option<String>| -> String {
        match v {
            Some(s) => s.clone(),
            None => {
                ctx.error(
                    &["nodes", id],
                    format!("node `{id}`: `{field}` is required for a {} node", raw.kind),
                );
                String::new()
            }
        }
    };
    let target = |ctx: &mut Ctx, field: &str, v: &str| {
        if v.is_empty() {
            return; // already reported as a missing field
        }
        ctx.targets.push((
            id.to_string(),
            v.to_string(),
            vec!["nodes".into(), id.into(), field.into()],
        ));
    };

    let node = match raw.kind.as_str() {
        "play" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            let prompts = prompt_list(ctx, id, "prompts", raw.prompts.as_deref(), true);
            Node::Play {
                prompts,
                next,
                early_media: raw.early_media.unwrap_or(false),
                barge_in: raw.barge_in.unwrap_or(false),
            }
        }
        "menu" => {
            let mut choices = BTreeMap::new();
            match &raw.choices {
                Some(c) if !c.is_empty() => {
                    for (key, to) in c {
                        ctx.targets.push((
                            id.to_string(),
                            to.clone(),
                            vec!["nodes".into(), id.into(), "choices".into(), key.clone()],
                        ));
                        match dtmf_key(key) {
                            Some(k) => {
                                choices.insert(k, to.clone());
                            }
                            None => {
                                ctx.error(
                                    &["nodes", id, "choices", key],
                                    format!(
                                        "choice key `{key}` is not a single DTMF key (0-9, *, #, A-D; quote * and #)"
                                    ),
                                );
                            }
                        }
                    }
                }
                _ => {
                    ctx.error(
                        &["nodes", id],
                        format!("menu `{id}` needs at least one entry in `choices`"),
                    );
                }
            }
            for (field, v) in [("default", &raw.default), ("on_failure", &raw.on_failure)] {
                if let Some(v) = v {
                    target(ctx, field, v);
                }
            }
            Node::Menu(Menu {
                prompts: prompt_list(ctx, id, "prompts", raw.prompts.as_deref(), false),
                choices,
                timeout: seconds(ctx, id, "timeout", raw.timeout, 5.0),
                retries: raw.retries.unwrap_or(2),
                invalid_prompts: prompt_list(
                    ctx,
                    id,
                    "invalid_prompts",
                    raw.invalid_prompts.as_deref(),
                    false,
                ),
                no_input_prompts: prompt_list(
                    ctx,
                    id,
                    "no_input_prompts",
                    raw.no_input_prompts.as_deref(),
                    false,
                ),
                default: raw.default.clone(),
                on_failure: raw.on_failure.clone(),
                barge_in: raw.barge_in.unwrap_or(true),
            })
        }
        "collect" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            if let Some(f) = &raw.on_failure {
                target(ctx, "on_failure", f);
            }
            let into = required(ctx, "into", &raw.into);
            if raw.into.is_some() && (!is_variable_name(&into) || into == "language") {
                ctx.error(
                    &["nodes", id, "into"],
                    format!("`{into}` is not a usable variable name (lowercase letters, digits, _; not `language`)"),
                );
            }
            let (min, max) = digit_limits(ctx, id, raw, 1, 20);
            let terminator = terminator_key(ctx, id, raw);
            Node::Collect(Collect {
                prompts: prompt_list(ctx, id, "prompts", raw.prompts.as_deref(), false),
                min_digits: min,
                max_digits: max,
                terminator,
                timeout: seconds(ctx, id, "timeout", raw.timeout, 5.0),
                inter_digit_timeout: seconds(
                    ctx,
                    id,
                    "inter_digit_timeout",
                    raw.inter_digit_timeout,
                    3.0,
                ),
                into,
                next,
                retries: raw.retries.unwrap_or(2),
                invalid_prompts: prompt_list(
                    ctx,
                    id,
                    "invalid_prompts",
                    raw.invalid_prompts.as_deref(),
                    false,
                ),
                no_input_prompts: prompt_list(
                    ctx,
                    id,
                    "no_input_prompts",
                    raw.no_input_prompts.as_deref(),
                    false,
                ),
                on_failure: raw.on_failure.clone(),
                barge_in: raw.barge_in.unwrap_or(true),
            })
        }
        "schedule" => {
            let open = required(ctx, "open", &raw.open);
            let closed = required(ctx, "closed", &raw.closed);
            target(ctx, "open", &open);
            target(ctx, "closed", &closed);
            let holiday = raw.holiday.clone().unwrap_or_else(|| closed.clone());
            if raw.holiday.is_some() {
                target(ctx, "holiday", &holiday);
            }
            let (schedule, bands) = build_schedule(ctx, env, id, raw);
            Node::Schedule(Box::new(ScheduleNode {
                schedule,
                open,
                closed,
                holiday,
                bands,
            }))
        }
        "language" => {
            let language = required(ctx, "language", &raw.language);
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            if raw.language.is_some() && !env.languages.contains(&language) {
                ctx.error(
                    &["nodes", id, "language"],
                    format!(
                        "language `{language}` is not among the flow's `languages` ({})",
                        env.languages.join(", ")
                    ),
                );
            }
            Node::Language { language, next }
        }
        "set" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            let mut variables = Vec::new();
            for (k, v) in raw.variables.iter().flatten() {
                if !is_variable_name(k) || k == "language" {
                    ctx.error(
                        &["nodes", id, "variables", k],
                        format!("`{k}` is not a usable variable name (lowercase letters, digits, _; use a language node for `language`)"),
                    );
                }
                variables.push((k.clone(), v.clone()));
            }
            Node::Set { variables, next }
        }
        "goto" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            Node::Goto { next }
        }
        "say_number" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            let source = match (&raw.number, &raw.variable) {
                (Some(n), None) => {
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        ctx.error(
                            &["nodes", id, "number"],
                            format!("`{n}` is not a number (digits only)"),
                        );
                    }
                    NumberSource::Literal(n.clone())
                }
                (None, Some(v)) => NumberSource::Variable(v.clone()),
                _ => {
                    ctx.error(
                        &["nodes", id],
                        format!("say_number `{id}` needs exactly one of `number` or `variable`"),
                    );
                    NumberSource::Literal(String::new())
                }
            };
            let mode = match raw.mode.as_deref() {
                None | Some("number") => NumberMode::Number,
                Some("digits") => NumberMode::Digits,
                Some(m) => {
                    ctx.error(
                        &["nodes", id, "mode"],
                        format!("mode `{m}` must be `number` or `digits`"),
                    );
                    NumberMode::Number
                }
            };
            Node::SayNumber {
                source,
                mode,
                next,
                barge_in: raw.barge_in.unwrap_or(false),
            }
        }
        "transfer" => {
            let uri = required(ctx, "uri", &raw.uri);
            if raw.uri.is_some() && !["sip:", "sips:", "tel:"].iter().any(|p| uri.starts_with(p)) {
                ctx.error(
                    &["nodes", id, "uri"],
                    format!("`{uri}` is not a sip:, sips: or tel: URI"),
                );
            }
            Node::Transfer { uri }
        }
        "queue" => {
            let queue = required(ctx, "queue", &raw.queue);
            if raw.queue.is_some() && !is_ident(&queue) {
                ctx.error(
                    &["nodes", id, "queue"],
                    format!("queue name `{queue}` may only use letters, digits, `_` and `-`"),
                );
            }
            // Any node may follow the agent's hangup (a survey, a thank-you, a menu): the call
            // task decides whether the caller is still there to hear it.
            if let Some(after) = &raw.after_agent {
                target(ctx, "after_agent", after);
            }
            Node::Queue {
                queue,
                fallback: prompt_list(ctx, id, "fallback", raw.fallback.as_deref(), false),
                after_agent: raw.after_agent.clone(),
            }
        }
        "voicemail" => {
            let mailbox = required(ctx, "mailbox", &raw.mailbox);
            if raw.mailbox.is_some() && !is_ident(&mailbox) {
                ctx.error(
                    &["nodes", id, "mailbox"],
                    format!("mailbox name `{mailbox}` may only use letters, digits, `_` and `-`"),
                );
            }
            if let Some(next) = &raw.next {
                target(ctx, "next", next);
            }
            Node::Voicemail(VoicemailNode {
                mailbox,
                greeting: prompt_list(ctx, id, "greeting", raw.greeting.as_deref(), false),
                beep: raw.beep.unwrap_or(true),
                max_duration: seconds(ctx, id, "max_duration", raw.max_duration, 120.0),
                terminator: terminator_key(ctx, id, raw),
                next: raw.next.clone(),
            })
        }
        "callback" => {
            let queue = required(ctx, "queue", &raw.queue);
            if raw.queue.is_some() && !is_ident(&queue) {
                ctx.error(
                    &["nodes", id, "queue"],
                    format!("queue name `{queue}` may only use letters, digits, `_` and `-`"),
                );
            }
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            for (field, v) in [
                ("on_refused", &raw.on_refused),
                ("on_duplicate", &raw.on_duplicate),
                ("on_failure", &raw.on_failure),
            ] {
                if let Some(v) = v {
                    target(ctx, field, v);
                }
            }
            // Italian numbers have 6 to 11 digits nationally; E.164 allows 15 in all.
            let (min, max) = digit_limits(ctx, id, raw, 6, 15);
            let prompts_or =
                |ctx: &mut Ctx, field: &str, v: &Option<Vec<String>>, default: &str| {
                    let default = [default.to_string()];
                    prompt_list(
                        ctx,
                        id,
                        field,
                        Some(v.as_deref().unwrap_or(&default)),
                        false,
                    )
                };
            let confirm_prompts = prompts_or(
                ctx,
                "confirm_prompts",
                &raw.confirm_prompts,
                CALLBACK_CONFIRM,
            );
            let confirm_after = prompts_or(
                ctx,
                "confirm_after",
                &raw.confirm_after,
                CALLBACK_CONFIRM_AFTER,
            );
            let enter_prompts =
                prompts_or(ctx, "enter_prompts", &raw.enter_prompts, CALLBACK_ENTER);
            let bands = callback_bands(ctx, id, raw.bands.as_deref().unwrap_or_default());
            let band_prompts = if bands.is_empty() {
                if raw.band_prompts.is_some() {
                    ctx.error(
                        &["nodes", id, "band_prompts"],
                        format!("`band_prompts` needs `bands` in callback `{id}`"),
                    );
                }
                Vec::new()
            } else {
                prompts_or(ctx, "band_prompts", &raw.band_prompts, CALLBACK_BAND_MENU)
            };
            Node::Callback(Box::new(CallbackNode {
                queue,
                confirm_prompts,
                confirm_after,
                enter_prompts,
                band_prompts,
                bands,
                min_digits: min,
                max_digits: max,
                terminator: terminator_key(ctx, id, raw),
                timeout: seconds(ctx, id, "timeout", raw.timeout, 5.0),
                inter_digit_timeout: seconds(
                    ctx,
                    id,
                    "inter_digit_timeout",
                    raw.inter_digit_timeout,
                    3.0,
                ),
                retries: raw.retries.unwrap_or(2),
                invalid_prompts: prompt_list(
                    ctx,
                    id,
                    "invalid_prompts",
                    raw.invalid_prompts.as_deref(),
                    false,
                ),
                no_input_prompts: prompt_list(
                    ctx,
                    id,
                    "no_input_prompts",
                    raw.no_input_prompts.as_deref(),
                    false,
                ),
                barge_in: raw.barge_in.unwrap_or(true),
                next,
                on_refused: raw.on_refused.clone(),
                on_duplicate: raw.on_duplicate.clone(),
                on_failure: raw.on_failure.clone(),
            }))
        }
        "survey" => {
            let next = required(ctx, "next", &raw.next);
            target(ctx, "next", &next);
            let questions = survey_questions(ctx, id, raw.questions.as_deref());
            Node::Survey(Box::new(SurveyNode {
                intro: prompt_list(ctx, id, "prompts", raw.prompts.as_deref(), false),
                questions,
                timeout: seconds(ctx, id, "timeout", raw.timeout, 5.0),
                retries: raw.retries.unwrap_or(1),
                invalid_prompts: prompt_list(
                    ctx,
                    id,
                    "invalid_prompts",
                    raw.invalid_prompts.as_deref(),
                    false,
                ),
                no_input_prompts: prompt_list(
                    ctx,
                    id,
                    "no_input_prompts",
                    raw.no_input_prompts.as_deref(),
                    false,
                ),
                thanks: prompt_list(ctx, id, "thanks", raw.thanks.as_deref(), false),
                barge_in: raw.barge_in.unwrap_or(true),
                next,
            }))
        }
        "hangup" => Node::Hangup {
            reason: raw.reason.clone().unwrap_or_else(|| "completed".into()),
        },
        _ => unreachable!("NODE_TYPES covers every arm"),
    };
    (ctx.errors.len() == errors_before).then_some(node)
}

/// The `questions` of a survey node: at least one, ids usable in a variable name and unique,
/// each with something to play.
fn survey_questions(ctx: &mut Ctx, id: &str, raw: Option<&[RawQuestion]>) -> Vec<SurveyQuestion> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        // Falls back to the node's line when `questions` is absent.
        ctx.error(
            &["nodes", id, "questions"],
            format!("survey `{id}` needs at least one question in `questions`"),
        );
    }
    let mut out: Vec<SurveyQuestion> = Vec::new();
    for (i, q) in raw.iter().enumerate() {
        let idx = i.to_string();
        let path = ["nodes", id, "questions", idx.as_str()];
        if !is_variable_name(&q.id) {
            ctx.error(
                &path,
                format!(
                    "question id `{}` may only use lowercase letters, digits and `_` (it names the variable survey.<id>)",
                    q.id
                ),
            );
        } else if out.iter().any(|o| o.id == q.id) {
            ctx.error(
                &path,
                format!("question id `{}` is used twice in survey `{id}`", q.id),
            );
        }
        if q.prompts.is_empty() {
            ctx.error(
                &path,
                format!("question `{}` needs at least one prompt in `prompts`", q.id),
            );
        }
        let base: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let prompts = prompt_list_at(ctx, &base, "prompts", Some(&q.prompts));
        out.push(SurveyQuestion {
            id: q.id.clone(),
            prompts,
        });
    }
    out
}

/// `min_digits`/`max_digits` of a node that collects digits.
fn digit_limits(
    ctx: &mut Ctx,
    id: &str,
    raw: &RawNode,
    default_min: usize,
    default_max: usize,
) -> (usize, usize) {
    let min = raw.min_digits.unwrap_or(default_min);
    let max = raw.max_digits.unwrap_or(default_max);
    if min == 0 || min > max || max > MAX_COLLECT_DIGITS {
        let field = if raw.max_digits.is_some() {
            "max_digits"
        } else {
            "min_digits"
        };
        ctx.error(
            &["nodes", id, field],
            format!("need 1 <= min_digits ({min}) <= max_digits ({max}) <= {MAX_COLLECT_DIGITS}"),
        );
    }
    (min, max)
}

/// `terminator`: `#` by default, `""` for none, otherwise one non-digit key.
fn terminator_key(ctx: &mut Ctx, id: &str, raw: &RawNode) -> Option<char> {
    match raw.terminator.as_deref() {
        None => Some('#'),
        Some("") => None,
        Some(t) => match dtmf_key(t) {
            Some(k) if !k.is_ascii_digit() => Some(k),
            _ => {
                ctx.error(
                    &["nodes", id, "terminator"],
                    format!("terminator `{t}` must be one of *, #, A-D (or \"\" for none)"),
                );
                None
            }
        },
    }
}

/// The `bands` of a callback node: unique keys and names, optional `from`/`to` local times.
fn callback_bands(ctx: &mut Ctx, id: &str, raw: &[RawBand]) -> Vec<(BandSpec, Vec<PromptSpec>)> {
    let mut out: Vec<(BandSpec, Vec<PromptSpec>)> = Vec::new();
    for (i, band) in raw.iter().enumerate() {
        let idx = i.to_string();
        let path = ["nodes", id, "bands", idx.as_str()];
        for field in band.present_fields() {
            if matches!(field, "hours" | "next") {
                ctx.error(
                    &path,
                    format!("`{field}` does not apply to a callback band (fields: key, name, from, to, prompts)"),
                );
            }
        }
        if !is_ident(&band.name) {
            ctx.error(
                &path,
                format!(
                    "band name `{}` may only use letters, digits, `_` and `-`",
                    band.name
                ),
            );
        } else if out.iter().any(|(b, _)| b.name == band.name) {
            ctx.error(&path, format!("band name `{}` is used twice", band.name));
        }
        let key = match band.key.as_deref().map(|k| (k, dtmf_key(k))) {
            Some((_, Some(k))) => {
                if out.iter().any(|(b, _)| b.key == k) {
                    ctx.error(&path, format!("band key `{k}` is used twice"));
                }
                k
            }
            Some((k, None)) => {
                ctx.error(
                    &path,
                    format!(
                        "band key `{k}` is not a single DTMF key (0-9, *, #, A-D; quote * and #)"
                    ),
                );
                '?'
            }
            None => {
                ctx.error(&path, format!("band `{}` needs a `key`", band.name));
                '?'
            }
        };
        let hours = match (&band.from, &band.to) {
            (None, None) => None,
            (Some(from), Some(to)) => match TimeRange::parse(&format!("{from}-{to}")) {
                Ok(r) => Some(r),
                Err(e) => {
                    ctx.error(&path, format!("band `{}`: {e}", band.name));
                    None
                }
            },
            _ => {
                ctx.error(
                    &path,
                    format!(
                        "band `{}` needs both `from` and `to`, or neither (any time open)",
                        band.name
                    ),
                );
                None
            }
        };
        let base: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let prompts = prompt_list_at(ctx, &base, "prompts", band.prompts.as_deref());
        out.push((
            BandSpec {
                key,
                name: band.name.clone(),
                hours,
            },
            prompts,
        ));
    }
    out
}

fn dtmf_key(key: &str) -> Option<char> {
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => {
            let c = c.to_ascii_uppercase();
            DTMF_KEYS.contains(c).then_some(c)
        }
        _ => None,
    }
}

fn seconds(ctx: &mut Ctx, id: &str, field: &str, v: Option<f64>, default: f64) -> Duration {
    let s = v.unwrap_or(default);
    if !(s > 0.0 && s <= MAX_TIMEOUT_SECS) {
        ctx.error(
            &["nodes", id, field],
            format!("`{field}` must be between 0 and {MAX_TIMEOUT_SECS} seconds (got {s})"),
        );
        return Duration::from_secs_f64(default);
    }
    Duration::from_secs_f64(s)
}

fn prompt_list(
    ctx: &mut Ctx,
    id: &str,
    field: &str,
    list: Option<&[String]>,
    required: bool,
) -> Vec<PromptSpec> {
    let list = list.unwrap_or_default();
    if required && list.is_empty() {
        ctx.error(
            &["nodes", id],
            format!("node `{id}` needs at least one prompt in `{field}`"),
        );
    }
    prompt_list_at(
        ctx,
        &["nodes".to_string(), id.to_string()],
        field,
        Some(list),
    )
}

/// A prompt list at `base`/`field` (e.g. inside a band of a node).
fn prompt_list_at(
    ctx: &mut Ctx,
    base: &[String],
    field: &str,
    list: Option<&[String]>,
) -> Vec<PromptSpec> {
    let list = list.unwrap_or_default();
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let mut path = base.to_vec();
        path.push(field.to_string());
        path.push(i.to_string());
        let (name, lang) = match item.split_once('@') {
            Some((n, l)) => (n, Some(l)),
            None => (item.as_str(), None),
        };
        if !is_ident(name) || lang.is_some_and(|l| !is_language_code(l)) {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            ctx.error(
                &p,
                format!("prompt `{item}` must be a name (letters, digits, _, -) optionally pinned to a language as name@lang"),
            );
            continue;
        }
        let spec = PromptSpec {
            name: name.to_string(),
            lang: lang.map(str::to_string),
        };
        ctx.prompt_uses.push((spec.clone(), path));
        out.push(spec);
    }
    out
}

fn build_schedule(
    ctx: &mut Ctx,
    env: &Env,
    id: &str,
    raw: &RawNode,
) -> (Schedule, Vec<(String, String)>) {
    let mut s = Schedule::new(env.timezone);
    s.set_national_holidays(raw.national_holidays.unwrap_or(true));
    for rule in env.holidays {
        s.add_holiday(rule.clone());
    }
    let mut assigned: HashMap<Weekday, String> = HashMap::new();
    let mut any_hours = false;
    for (key, ranges) in raw.hours.iter().flatten() {
        let path = ["nodes", id, "hours", key.as_str()];
        let days = match schedule::parse_weekdays(key) {
            Ok(d) => d,
            Err(e) => {
                ctx.error(&path, e.to_string());
                continue;
            }
        };
        let Some(parsed) = parse_ranges(ctx, &path, ranges) else {
            continue;
        };
        for day in days {
            if let Some(prev) = assigned.insert(day, key.clone()) {
                ctx.error(
                    &path,
                    format!(
                        "{} (in `{prev}` and `{key}`)",
                        ScheduleError::DuplicateWeekday(format!("{day:?}"))
                    ),
                );
                continue;
            }
            if let Err(e) = s.set_hours(day, parsed.clone()) {
                ctx.error(&path, e.to_string());
            }
            any_hours |= !parsed.is_empty();
        }
    }
    if !any_hours && raw.overrides.is_none() {
        ctx.warn(
            &["nodes", id],
            format!("schedule `{id}` has no opening hours: it is always closed"),
        );
    }
    for (date, value) in raw.overrides.iter().flatten() {
        let path = ["nodes", id, "overrides", date.as_str()];
        let d = match schedule::parse_date(date) {
            Ok(d) => d,
            Err(e) => {
                ctx.error(&path, e.to_string());
                continue;
            }
        };
        let ranges = match value {
            RawOverride::Closed(c) if c == "closed" => Vec::new(),
            RawOverride::Closed(c) => {
                ctx.error(
                    &path,
                    format!("override `{c}`: expected `closed` or a list of HH:MM-HH:MM ranges"),
                );
                continue;
            }
            RawOverride::Hours(r) => match parse_ranges(ctx, &path, r) {
                Some(r) => r,
                None => continue,
            },
        };
        if let Err(e) = s.set_override(d, ranges) {
            ctx.error(&path, e.to_string());
        }
    }
    let mut bands = Vec::new();
    for (i, band) in raw.bands.iter().flatten().enumerate() {
        let idx = i.to_string();
        let path = ["nodes", id, "bands", idx.as_str()];
        for field in band.present_fields() {
            if matches!(field, "key" | "from" | "to" | "prompts") {
                ctx.error(
                    &path,
                    format!(
                        "`{field}` does not apply to a schedule band (fields: name, hours, next)"
                    ),
                );
            }
        }
        let (Some(hours), Some(next)) = (&band.hours, &band.next) else {
            ctx.error(
                &path,
                format!("schedule band `{}` needs `hours` and `next`", band.name),
            );
            continue;
        };
        ctx.targets.push((
            id.to_string(),
            next.clone(),
            path.iter().map(|s| s.to_string()).collect(),
        ));
        if !is_ident(&band.name) {
            ctx.error(
                &path,
                format!(
                    "band name `{}` may only use letters, digits, `_` and `-`",
                    band.name
                ),
            );
        }
        match TimeRange::parse(hours).and_then(|r| s.add_band(&band.name, r)) {
            Ok(()) => bands.push((band.name.clone(), next.clone())),
            Err(e) => ctx.error(&path, e.to_string()),
        }
    }
    (s, bands)
}

fn parse_ranges(ctx: &mut Ctx, path: &[&str], ranges: &[String]) -> Option<Vec<TimeRange>> {
    let mut out = Vec::new();
    for r in ranges {
        match TimeRange::parse(r) {
            Ok(r) => out.push(r),
            Err(e) => {
                ctx.error(path, e.to_string());
                return None;
            }
        }
    }
    match schedule::check_ranges(out) {
        Ok(r) => Some(r),
        Err(e) => {
            ctx.error(path, e.to_string());
            None
        }
    }
}

/// Unreachable nodes, and cycles that never play or wait (they would spin forever).
fn check_graph(ctx: &mut Ctx, raw: &RawFlow, nodes: &HashMap<String, Node>) {
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    let targets = ctx.targets.clone();
    for (from, to, _) in &targets {
        edges.entry(from).or_default().push(to);
    }
    if raw.nodes.contains_key(&raw.start) {
        // Entries are roots too: the call task resumes there from outside the flow.
        let roots: Vec<&str> = std::iter::once(raw.start.as_str())
            .chain(raw.entries.iter().map(String::as_str))
            .filter(|r| raw.nodes.contains_key(*r))
            .collect();
        let mut seen: HashSet<&str> = roots.iter().copied().collect();
        let mut queue: VecDeque<&str> = roots.into_iter().collect();
        while let Some(n) = queue.pop_front() {
            for &t in edges.get(n).into_iter().flatten() {
                if raw.nodes.contains_key(t) && seen.insert(t) {
                    queue.push_back(t);
                }
            }
        }
        for id in raw.nodes.keys() {
            if !seen.contains(id.as_str()) {
                ctx.error(
                    &["nodes", id],
                    format!(
                        "node `{id}` is unreachable from the start node `{}` (list it under `entries` if the call task resumes there)",
                        raw.start
                    ),
                );
            }
        }
    }

    // Depth-first search restricted to instant nodes.
    let instant = |id: &str| nodes.get(id).is_some_and(Node::is_instant);
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = on stack, 2 = done
    let mut reported = false;
    for root in raw
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|id| instant(id))
    {
        if reported || state.contains_key(root) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        state.insert(root, 1);
        while let Some(&mut (node, ref mut i)) = stack.last_mut() {
            let next = edges.get(node).and_then(|e| e.get(*i)).copied();
            *i += 1;
            match next {
                None => {
                    state.insert(node, 2);
                    stack.pop();
                }
                Some(t) if !instant(t) => {}
                Some(t) => match state.get(t) {
                    Some(1) => {
                        let start = stack.iter().position(|(n, _)| *n == t).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                        cycle.push(t);
                        ctx.error(
                            &["nodes", t],
                            format!(
                                "nodes {} loop without playing anything or waiting for the caller",
                                cycle.join(" -> ")
                            ),
                        );
                        reported = true;
                        break;
                    }
                    Some(_) => {}
                    None => {
                        state.insert(t, 1);
                        stack.push((t, 0));
                    }
                },
            }
        }
    }
}

/// Checks every prompt exists where it must and returns the (lang, name) pairs that exist.
///
/// A prompt missing in the default language, or pinned with `name@lang` to a language that lacks
/// it, is an error. A prompt missing in another offered language is a warning (one per
/// language): callers who chose that language hear the default-language recording.
fn check_prompts(
    ctx: &mut Ctx,
    catalog: &dyn PromptCatalog,
    languages: &[String],
    default: &str,
    fallback: Option<&str>,
    nodes: &HashMap<String, Node>,
) -> HashSet<(String, String)> {
    let mut available = HashSet::new();
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let uses = std::mem::take(&mut ctx.prompt_uses);
    let mut checked: HashSet<(String, String)> = HashSet::new();
    for (spec, path) in &uses {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match &spec.lang {
            Some(lang) => {
                if catalog.has(lang, &spec.name) {
                    available.insert((lang.clone(), spec.name.clone()));
                } else {
                    ctx.error(
                        &p,
                        format!(
                            "prompt `{}` has no recording sounds/{lang}/{}.(wav|flac|mp3|ogg)",
                            spec.name, spec.name
                        ),
                    );
                }
            }
            None => {
                if !catalog.has(default, &spec.name) {
                    ctx.error(
                        &p,
                        format!(
                            "prompt `{}` has no recording in the default language: add sounds/{default}/{}.wav (or .flac, .mp3, .ogg)",
                            spec.name, spec.name
                        ),
                    );
                }
                for lang in languages {
                    if !checked.insert((lang.clone(), spec.name.clone())) {
                        continue;
                    }
                    if catalog.has(lang, &spec.name) {
                        available.insert((lang.clone(), spec.name.clone()));
                    } else if lang != default {
                        missing.entry(lang).or_default().push(spec.name.clone());
                    }
                }
            }
        }
    }
    for (lang, names) in missing {
        let heard = match fallback {
            Some(f) if f != lang => format!("the `{f}` recording, or the `{default}` one"),
            _ => format!("the `{default}` recording"),
        };
        ctx.warn(
            &["languages"],
            format!(
                "language `{lang}` has no recording for {}: callers who chose it hear {heard}",
                names.join(", ")
            ),
        );
    }

    // A callback node reads the caller's number back digit by digit.
    let speaks = |n: &Node| matches!(n, Node::SayNumber { .. } | Node::Callback(_));
    let says_numbers = nodes.values().any(speaks);
    if says_numbers {
        for lang in languages {
            for name in numbers::all_prompt_names() {
                if catalog.has(lang, &name) {
                    available.insert((lang.clone(), name));
                }
            }
        }
        let digits_missing: Vec<String> = (0..10)
            .map(|d| format!("num_{d}"))
            .filter(|n| !available.contains(&(default.to_string(), n.clone())))
            .collect();
        if !digits_missing.is_empty() {
            let id = nodes
                .iter()
                .filter(|(_, n)| speaks(n))
                .map(|(id, _)| id.as_str())
                .min()
                .unwrap_or_default()
                .to_string();
            ctx.error(
                &["nodes", &id],
                format!(
                    "say_number and callback need the digit recordings in the default language; missing sounds/{default}/{}.wav",
                    digits_missing.join(", ")
                ),
            );
        }
    }
    available
}

/// Reads and validates one flow file (for `verde check` and editors).
pub fn check_flow_file(path: &Path, catalog: &dyn PromptCatalog) -> Result<Flow, Vec<FlowError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FlowError {
            file: path.to_path_buf(),
            line: 0,
            reason: format!("cannot read the flow file: {e}"),
        }]
    })?;
    parse_flow(&text, path, catalog)
}

fn flow_files(dir: &Path) -> Result<Vec<PathBuf>, FlowError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FlowError {
        file: dir.to_path_buf(),
        line: 0,
        reason: format!("cannot read the flows directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            yaml && !hidden && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.yaml`/`*.yml` file of `dir` (hidden files skipped), all or nothing: any error
/// in any file returns every error found. Use at startup and in `verde check`.
pub fn load_flows(dir: &Path, catalog: &dyn PromptCatalog) -> Result<FlowSet, Vec<FlowError>> {
    let (set, errors) = reload_flows(dir, catalog, &FlowSet::default());
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Hot reload with per-file granularity: every file is reloaded; a file that fails keeps its
/// previous version from `previous` (if it had one), so one broken edit refuses only that
/// flow. Files that disappeared are dropped. A flow claiming a number (or name) already taken by
/// a flow from an earlier file (in file-name order) is refused. Returns the new set and the
/// errors; the caller swaps its `Arc<FlowSet>` and logs the errors.
pub fn reload_flows(
    dir: &Path,
    catalog: &dyn PromptCatalog,
    previous: &FlowSet,
) -> (FlowSet, Vec<FlowError>) {
    let mut errors = Vec::new();
    let files = match flow_files(dir) {
        Ok(f) => f,
        Err(e) => {
            // Without a listing nothing can be trusted to be gone: keep everything.
            let kept = FlowSet {
                flows: previous.flows.clone(),
                by_number: previous.by_number.clone(),
            };
            return (kept, vec![e]);
        }
    };
    let mut candidates: Vec<Arc<Flow>> = Vec::new();
    for file in files {
        match check_flow_file(&file, catalog) {
            Ok(flow) => candidates.push(Arc::new(flow)),
            Err(errs) => {
                if let Some(old) = previous.flows.iter().find(|f| f.file == file) {
                    tracing::warn!(file = %file.display(), "flow file refused, keeping its previous version");
                    candidates.push(old.clone());
                }
                errors.extend(errs);
            }
        }
    }
    let mut set = FlowSet::default();
    'flows: for flow in candidates {
        if let Some(other) = set.flows.iter().find(|f| f.name == flow.name) {
            errors.push(FlowError {
                file: flow.file.clone(),
                line: flow.name_line,
                reason: format!(
                    "flow name `{}` is already used by {}; this flow is not loaded",
                    flow.name,
                    other.file.display()
                ),
            });
            continue;
        }
        for (i, n) in flow.numbers.iter().enumerate() {
            if let Some(other) = set.by_number.get(n) {
                errors.push(FlowError {
                    file: flow.file.clone(),
                    line: flow.number_lines.get(i).copied().unwrap_or(1),
                    reason: format!(
                        "number `{n}` is already served by flow `{}` ({}); this flow is not loaded",
                        other.name,
                        other.file.display()
                    ),
                });
                continue 'flows;
            }
        }
        for n in &flow.numbers {
            set.by_number.insert(n.clone(), flow.clone());
        }
        set.flows.push(flow);
    }
    (set, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog that has every prompt except the listed `lang/name` pairs.
    struct AllBut(Vec<&'static str>);

    impl PromptCatalog for AllBut {
        fn has(&self, lang: &str, name: &str) -> bool {
            !self.0.contains(&format!("{lang}/{name}").as_str())
        }
    }

    /// Only these languages have recordings.
    struct Langs(Vec<&'static str>);

    impl PromptCatalog for Langs {
        fn has(&self, lang: &str, _: &str) -> bool {
            self.0.contains(&lang)
        }
    }

    fn all() -> AllBut {
        AllBut(vec![])
    }

    const BASE: &str = r##"name: demo
numbers: ["800111222"]
language: it
languages: [it, en]
start: welcome
nodes:
  welcome:
    type: play
    prompts: [hello]
    next: menu
  menu:
    type: menu
    prompts: [choose]
    choices:
      1: bye
      "#": bye
  bye:
    type: hangup
"##;

    /// 1-based line of the first line containing `needle`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` not in the text"))
            + 1
    }

    fn errors(text: &str) -> Vec<FlowError> {
        errors_with(text, &all())
    }

    fn errors_with(text: &str, catalog: &dyn PromptCatalog) -> Vec<FlowError> {
        match parse_flow(text, Path::new("flows/demo.yaml"), catalog) {
            Ok(_) => panic!("flow accepted:\n{text}"),
            Err(e) => e,
        }
    }

    /// Asserts exactly one error, on the line containing `marker`, whose reason contains `what`.
    fn assert_one_error(text: &str, marker: &str, what: &str) {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "expected one error, got {errs:?}");
        assert_eq!(
            errs[0].line,
            line_of(text, marker),
            "wrong line for {:?}",
            errs[0]
        );
        assert!(
            errs[0].reason.contains(what),
            "reason {:?} lacks {what:?}",
            errs[0].reason
        );
    }

    #[test]
    fn base_flow_is_valid() {
        let flow = parse_flow(BASE, Path::new("demo.yaml"), &all()).unwrap();
        assert_eq!(flow.name(), "demo");
        assert_eq!(flow.numbers(), ["800111222"]);
        assert_eq!(flow.languages(), ["it", "en"]);
        assert_eq!(flow.timezone(), chrono_tz::Europe::Rome);
        assert!(flow.warnings().is_empty());
    }

    #[test]
    fn error_display_is_file_line_reason() {
        let text = BASE.replace("next: menu", "next: nowhere");
        let e = &errors(&text)[0];
        assert_eq!(
            e.to_string(),
            format!(
                "flows/demo.yaml:{}: {}",
                line_of(&text, "next: nowhere"),
                e.reason
            )
        );
    }

    #[test]
    fn yaml_syntax_error_has_its_line() {
        let text = BASE.replace("    next: menu", "    next: [menu");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line >= line_of(&text, "next: [menu"), "{errs:?}");
    }

    #[test]
    fn unknown_fields_are_located() {
        let text = BASE.replace("    next: menu", "    next: menu\n    colour: red");
        assert_one_error(
            &text,
            "colour: red",
            "unknown field `colour` (docs/flows.md",
        );
        let text = BASE.replace("start: welcome", "start: welcome\nowner: me");
        assert_one_error(&text, "owner: me", "unknown field `owner`");
    }

    #[test]
    fn unknown_node_type() {
        let text = BASE.replace("type: hangup", "type: hang_up");
        assert_one_error(&text, "type: hang_up", "unknown node type `hang_up`");
    }

    #[test]
    fn field_of_another_node_type() {
        let text = BASE.replace("    type: hangup", "    type: hangup\n    next: welcome");
        assert_one_error(&text, "next: welcome", "does not apply to a hangup node");
    }

    #[test]
    fn dangling_targets() {
        let text = BASE.replace("next: menu", "next: nowhere");
        let errs = errors(&text);
        // The menu and bye become unreachable too; the dangling `next` is the first error.
        assert_eq!(errs[0].line, line_of(&text, "next: nowhere"));
        assert!(errs[0].reason.contains("`nowhere`, which is not defined"));
        let text = BASE.replace("1: bye", "1: byebye");
        assert_one_error(&text, "1: byebye", "`byebye`, which is not defined");
    }

    #[test]
    fn missing_start_node() {
        let text = BASE.replace("start: welcome", "start: hello");
        let errs = errors(&text);
        assert_eq!(errs[0].line, line_of(&text, "start: hello"));
        assert!(errs[0].reason.contains("start node `hello`"));
    }

    #[test]
    fn unreachable_node() {
        let text = format!("{BASE}  orphan:\n    type: hangup\n");
        assert_one_error(&text, "orphan:", "unreachable");
    }

    #[test]
    fn invalid_digit_keys() {
        let text = BASE.replace("1: bye", "12: bye");
        assert_one_error(&text, "12: bye", "not a single DTMF key");
        let text = BASE.replace("1: bye", "x: bye");
        assert_one_error(&text, "x: bye", "not a single DTMF key");
    }

    #[test]
    fn missing_prompts() {
        let errs = errors_with(BASE, &AllBut(vec!["it/choose"]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, line_of(BASE, "prompts: [choose]"));
        assert!(errs[0].reason.contains("sounds/it/choose.wav"));
        // Missing only in an offered language: a warning, the flow loads.
        let flow = parse_flow(BASE, Path::new("demo.yaml"), &AllBut(vec!["en/choose"])).unwrap();
        assert_eq!(flow.warnings().len(), 1);
        assert_eq!(flow.warnings()[0].line, line_of(BASE, "languages:"));
        assert!(flow.warnings()[0].reason.contains("choose"));
        // A language-pinned prompt must exist in that language.
        let text = BASE.replace("prompts: [hello]", "prompts: [hello@de]");
        let errs = errors_with(&text, &Langs(vec!["it"]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].reason.contains("sounds/de/hello"));
    }

    #[test]
    fn bad_prompt_names() {
        let text = BASE.replace("prompts: [hello]", "prompts: [../etc/passwd]");
        assert_one_error(&text, "passwd", "must be a name");
    }

    fn with_schedule(hours: &str) -> String {
        BASE.replace(
            "start: welcome\nnodes:\n",
            &format!(
                "start: hours\nnodes:\n  hours:\n    type: schedule\n{hours}    open: welcome\n    closed: bye\n"
            ),
        )
    }

    #[test]
    fn schedule_errors() {
        let ok = with_schedule("    hours:\n      mon-fri: [\"08:00-19:00\"]\n");
        parse_flow(&ok, Path::new("demo.yaml"), &all()).unwrap();
        let cases = [
            ("      mon: [\"8-19\"]\n", "mon:", "bad time range"),
            (
                "      mon: [\"19:00-08:00\"]\n",
                "mon:",
                "ends before it starts",
            ),
            (
                "      mon: [\"08:00-13:00\", \"12:00-19:00\"]\n",
                "mon:",
                "overlap",
            ),
            ("      lun: [\"08:00-13:00\"]\n", "lun:", "bad weekday"),
            (
                "      mon-fri: [\"08:00-13:00\"]\n      fri: [\"14:00-15:00\"]\n",
                "fri:",
                "twice",
            ),
        ];
        for (hours, marker, what) in cases {
            let text = with_schedule(&format!("    hours:\n{hours}"));
            assert_one_error(&text, marker, what);
        }
        let text = with_schedule(
            "    hours:\n      mon: [\"08:00-13:00\"]\n    overrides:\n      \"2026-02-30\": closed\n",
        );
        assert_one_error(&text, "2026-02-30", "bad date");
        let text = with_schedule(
            "    hours:\n      mon: [\"08:00-13:00\"]\n    overrides:\n      \"2026-12-24\": open\n",
        );
        assert_one_error(&text, "2026-12-24", "expected `closed`");
        let text = with_schedule("    hours:\n      mon: [\"08:00-13:00\"]\n    bands:\n      - { name: am, hours: \"00:00-13:00\", next: welcome }\n      - { name: pm, hours: \"12:00-24:00\", next: welcome }\n");
        assert_one_error(&text, "name: pm", "overlap");
        let text = ok.replace("start: hours", "timezone: Europe/Milano\nstart: hours");
        assert_one_error(&text, "timezone:", "bad time zone");
        let text = ok.replace("start: hours", "holidays: [\"2026-13-01\"]\nstart: hours");
        assert_one_error(&text, "holidays:", "bad date");
    }

    #[test]
    fn loops_that_never_wait_are_refused() {
        let text = BASE.replace(
            "  bye:\n    type: hangup\n",
            "  bye:\n    type: goto\n    next: again\n  again:\n    type: set\n    variables: { x: \"1\" }\n    next: bye\n",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].reason.contains("loop without playing"), "{errs:?}");
    }

    #[test]
    fn several_errors_are_reported_together() {
        let text = BASE
            .replace("next: menu", "next: nowhere\n    early_media: true")
            .replace("1: bye", "1: gone");
        let errs = errors(&text);
        assert!(errs
            .iter()
            .any(|e| e.line == line_of(&text, "next: nowhere")));
        assert!(errs.iter().any(|e| e.line == line_of(&text, "1: gone")));
    }

    #[test]
    fn bad_numbers_and_languages() {
        let text = BASE.replace("[\"800111222\"]", "[\"800111222\", \"80011A\"]");
        assert_one_error(&text, "80011A", "not a phone number");
        let text = BASE.replace("      1: bye\n", "      1: lang\n").replace(
            "  bye:\n",
            "  lang:\n    type: language\n    language: fr\n    next: bye\n  bye:\n",
        );
        assert_one_error(&text, "language: fr", "not among the flow's `languages`");
        let text = BASE.replace("start: welcome", "fallback_language: de\nstart: welcome");
        assert_one_error(
            &text,
            "fallback_language",
            "must be one of the offered `languages`",
        );
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn a_broken_file_is_refused_while_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", BASE);
        let other = BASE
            .replace("name: demo", "name: other")
            .replace("800111222", "800333444");
        write(dir.path(), "b.yaml", &other);
        write(dir.path(), ".b.yaml.swp", "not yaml: [");
        let set = load_flows(dir.path(), &all()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.for_number("800333444").unwrap().name(), "other");

        // Break b.yaml: strict loading refuses everything, reload keeps the old b.
        let broken = other.replace("next: menu", "next: nowhere");
        write(dir.path(), "b.yaml", &broken);
        let errs = load_flows(dir.path(), &all()).unwrap_err();
        let b = dir.path().join("b.yaml");
        assert!(errs.iter().all(|e| e.file == b));
        assert_eq!(errs[0].line, line_of(&broken, "next: nowhere"));
        assert!(errs[0]
            .to_string()
            .starts_with(&format!("{}:{}:", b.display(), errs[0].line)));

        let (reloaded, errs) = reload_flows(dir.path(), &all(), &set);
        assert!(!errs.is_empty());
        assert_eq!(reloaded.len(), 2);
        assert!(Arc::ptr_eq(
            &reloaded.for_number("800333444").unwrap(),
            &set.for_number("800333444").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &reloaded.for_number("800111222").unwrap(),
            &set.for_number("800111222").unwrap()
        ));

        // A new broken file with no previous version is simply absent.
        write(dir.path(), "c.yaml", "name: c\nnumbers: [\n");
        let (reloaded, errs) = reload_flows(dir.path(), &all(), &set);
        assert_eq!(reloaded.len(), 2);
        assert!(errs.iter().any(|e| e.file == dir.path().join("c.yaml")));
    }

    #[test]
    fn duplicate_number_across_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", BASE);
        let dup = BASE
            .replace("name: demo", "name: dup")
            .replace("[\"800111222\"]", "\n  - \"800999999\"\n  - \"800111222\"");
        write(dir.path(), "b.yaml", &dup);
        let errs = load_flows(dir.path(), &all()).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].file, dir.path().join("b.yaml"));
        assert_eq!(errs[0].line, line_of(&dup, "- \"800111222\""));
        assert!(errs[0].reason.contains("already served by flow `demo`"));
        let (set, _) = reload_flows(dir.path(), &all(), &FlowSet::default());
        assert_eq!(set.len(), 1);
        assert!(set.for_number("800999999").is_none());
    }

    #[test]
    fn shipped_flows_load_with_the_shipped_prompts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let catalog = crate::DirCatalog::new(root.join("sounds"));
        let set = load_flows(&root.join("ivr-flows"), &catalog).unwrap_or_else(|errs| {
            panic!(
                "{}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(set.len(), 3);
        assert_eq!(set.for_number("803164").unwrap().name(), "inps");
        assert_eq!(
            set.for_number("800022399").unwrap().name(),
            "university-facilities"
        );
        assert_eq!(
            set.for_number("800779366").unwrap().name(),
            "teaching-helpdesk"
        );
        // The service menu is only recorded in it/en: the other languages get a warning each.
        let inps = set.get("inps").unwrap();
        assert_eq!(inps.warnings().len(), 6, "{:?}", inps.warnings());
        assert_eq!(set.get("teaching-helpdesk").unwrap().schedules().count(), 1);
    }

    fn with_callback(fields: &str) -> String {
        BASE.replace("      1: bye\n", "      1: cb\n").replace(
            "  bye:\n",
            &format!(
                "  cb:\n    type: callback\n    queue: pensions\n{fields}    next: bye\n  bye:\n"
            ),
        )
    }

    #[test]
    fn callback_node_validation() {
        let ok = with_callback(
            "    bands:\n      - { key: 1, name: asap }\n      - key: 2\n        name: morning\n        from: \"09:00\"\n        to: \"12:00\"\n        prompts: [morning]\n",
        );
        let flow = parse_flow(&ok, Path::new("demo.yaml"), &all()).unwrap();
        let Some(Node::Callback(cb)) = flow.nodes.get("cb") else {
            panic!("no callback node")
        };
        assert_eq!(cb.bands.len(), 2);
        assert_eq!(cb.bands[1].0.hours.unwrap().to_string(), "09:00-12:00");
        assert_eq!(cb.bands[1].1[0].name, "morning");
        // Defaults: the shipped prompt names, 6-15 digits, `#` ends the number.
        assert_eq!(cb.enter_prompts[0].name, "callback_enter_number");
        assert_eq!(cb.band_prompts[0].name, "callback_band_menu");
        assert_eq!(
            (cb.min_digits, cb.max_digits, cb.terminator),
            (6, 15, Some('#'))
        );

        let cases = [
            (
                "    bands:\n      - { key: 1, name: a }\n      - { key: 1, name: b }\n",
                "name: b",
                "band key `1` is used twice",
            ),
            (
                "    bands:\n      - { key: 1, name: a }\n      - { key: 2, name: a }\n",
                "key: 2",
                "band name `a` is used twice",
            ),
            (
                "    bands:\n      - { key: 12, name: a }\n",
                "key: 12",
                "not a single DTMF key",
            ),
            (
                "    bands:\n      - { name: a }\n",
                "name: a",
                "needs a `key`",
            ),
            (
                "    bands:\n      - { key: 1, name: a, from: \"09:00\" }\n",
                "name: a",
                "both `from` and `to`",
            ),
            (
                "    bands:\n      - { key: 1, name: a, from: \"12:00\", to: \"09:00\" }\n",
                "name: a",
                "ends before it starts",
            ),
            (
                "    bands:\n      - { key: 1, name: a, from: \"9h\", to: \"12:00\" }\n",
                "name: a",
                "bad time range",
            ),
            (
                "    bands:\n      - { key: 1, name: a, next: bye }\n",
                "name: a",
                "`next` does not apply to a callback band",
            ),
            (
                "    band_prompts: [menu]\n",
                "band_prompts",
                "needs `bands`",
            ),
            (
                "    min_digits: 12\n    max_digits: 10\n",
                "max_digits: 10",
                "min_digits (12) <= max_digits (10)",
            ),
            (
                "    terminator: \"5\"\n",
                "terminator",
                "must be one of *, #, A-D",
            ),
            (
                "    on_duplicate: nowhere\n",
                "on_duplicate",
                "`nowhere`, which is not defined",
            ),
            ("    timeout: 0\n", "timeout: 0", "between 0 and 300"),
            (
                "    reason: x\n",
                "reason: x",
                "does not apply to a callback node",
            ),
        ];
        for (fields, marker, what) in cases {
            let text = with_callback(fields);
            assert_one_error(&text, marker, what);
        }
        let text = with_callback("").replace("    queue: pensions\n", "");
        assert_one_error(&text, "  cb:", "`queue` is required");
        let text = with_callback("").replace("    next: bye\n  bye:", "  bye:");
        assert_one_error(&text, "  cb:", "`next` is required");
        let text = with_callback(
            "    bands:\n      - { name: a, hours: \"09:00-12:00\", next: bye, key: 1 }\n",
        )
        .replace("type: callback", "type: schedule")
        .replace("    queue: pensions\n", "    open: bye\n    closed: bye\n")
        .replace("    next: bye\n  bye:", "  bye:");
        assert_one_error(&text, "name: a", "`key` does not apply to a schedule band");
    }

    #[test]
    fn callback_needs_its_recordings() {
        let text = with_callback("");
        // A default prompt missing in the default language is an error on the node.
        let errs = errors_with(&text, &AllBut(vec!["it/callback_enter_number"]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, line_of(&text, "  cb:"));
        assert!(errs[0]
            .reason
            .contains("sounds/it/callback_enter_number.wav"));
        // The number is read back digit by digit.
        let errs = errors_with(&text, &AllBut(vec!["it/num_7"]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, line_of(&text, "  cb:"));
        assert!(errs[0].reason.contains("num_7"), "{errs:?}");
    }

    #[test]
    fn voicemail_node_validation() {
        let with_vm = |fields: &str| {
            BASE.replace("      1: bye\n", "      1: vm\n").replace(
                "  bye:\n",
                &format!("  vm:\n    type: voicemail\n    mailbox: desk\n{fields}  bye:\n"),
            )
        };
        let ok = with_vm("    greeting: [hello]\n    beep: false\n    max_duration: 30\n    terminator: \"*\"\n    next: bye\n");
        let flow = parse_flow(&ok, Path::new("demo.yaml"), &all()).unwrap();
        let Some(Node::Voicemail(vm)) = flow.nodes.get("vm") else {
            panic!("no voicemail node")
        };
        assert_eq!(
            (vm.beep, vm.max_duration, vm.terminator, vm.next.as_deref()),
            (false, Duration::from_secs(30), Some('*'), Some("bye"))
        );
        let flow = parse_flow(&with_vm(""), Path::new("demo.yaml"), &all()).unwrap();
        let Some(Node::Voicemail(vm)) = flow.nodes.get("vm") else {
            panic!("no voicemail node")
        };
        assert_eq!(
            (vm.beep, vm.max_duration, vm.terminator, vm.next.as_deref()),
            (true, Duration::from_secs(120), Some('#'), None)
        );
        let cases = [
            ("    max_duration: 0\n", "max_duration", "between 0 and 300"),
            (
                "    max_duration: 301\n",
                "max_duration",
                "between 0 and 300",
            ),
            (
                "    terminator: \"1\"\n",
                "terminator",
                "must be one of *, #, A-D",
            ),
            (
                "    next: nowhere\n",
                "next: nowhere",
                "`nowhere`, which is not defined",
            ),
            ("    beep: loud\n", "beep: loud", "invalid type"),
            (
                "    queue: q\n",
                "queue: q",
                "does not apply to a voicemail node",
            ),
        ];
        for (fields, marker, what) in cases {
            assert_one_error(&with_vm(fields), marker, what);
        }
    }

    #[test]
    fn entries_are_roots_and_must_exist() {
        let text = format!("{BASE}  offer:\n    type: play\n    prompts: [hello]\n    next: bye\n");
        assert_one_error(&text, "offer:", "unreachable");
        let text = text.replace("start: welcome", "start: welcome\nentries: [offer]");
        let flow = parse_flow(&text, Path::new("demo.yaml"), &all()).unwrap();
        assert_eq!(flow.entries(), ["offer"]);
        assert!(flow.has_node("offer") && !flow.has_node("nowhere"));
        let text = text.replace("entries: [offer]", "entries:\n  - offer\n  - nowhere");
        assert_one_error(&text, "- nowhere", "entry node `nowhere` is not defined");
    }

    fn with_survey(queue_fields: &str, fields: &str) -> String {
        BASE.replace("      1: bye\n", "      1: desk\n").replace(
            "  bye:\n",
            &format!(
                "  desk:\n    type: queue\n    queue: desk\n{queue_fields}  survey:\n    type: survey\n{fields}    next: bye\n  bye:\n"
            ),
        )
    }

    const QUESTIONS: &str = "    questions:\n      - id: satisfaction\n        prompts: [q_satisfaction]\n      - { id: resolved, prompts: [q_resolved] }\n";

    #[test]
    fn survey_node_and_after_agent() {
        // Reached only through `after_agent`: that counts as reachable, no `entries` needed.
        let ok = with_survey("    after_agent: survey\n", QUESTIONS);
        let flow = parse_flow(&ok, Path::new("demo.yaml"), &all()).unwrap();
        let Some(Node::Survey(s)) = flow.nodes.get("survey") else {
            panic!("no survey node")
        };
        let ids: Vec<&str> = s.questions.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["satisfaction", "resolved"]);
        assert_eq!(s.questions[0].prompts[0].name, "q_satisfaction");
        // Defaults: 5 s and one retry per question, barge-in, nothing extra to play.
        assert_eq!(
            (s.timeout, s.retries, s.barge_in),
            (Duration::from_secs(5), 1, true)
        );
        assert!(s.intro.is_empty() && s.thanks.is_empty() && s.invalid_prompts.is_empty());
        let Some(Node::Queue { after_agent, .. }) = flow.nodes.get("desk") else {
            panic!("no queue node")
        };
        assert_eq!(after_agent.as_deref(), Some("survey"));
        // Without after_agent the survey is unreachable.
        let text = with_survey("", QUESTIONS);
        assert_one_error(&text, "  survey:", "unreachable");
        // after_agent may lead anywhere, e.g. a thank-you before hanging up.
        let text = with_survey("    after_agent: bye\n", QUESTIONS)
            .replace("      \"#\": bye\n", "      \"#\": bye\n      2: survey\n");
        parse_flow(&text, Path::new("demo.yaml"), &all()).unwrap();
        // The survey's recordings are checked like any other.
        let errs = errors_with(&ok, &AllBut(vec!["it/q_resolved"]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, line_of(&ok, "q_resolved"));
    }

    #[test]
    fn survey_node_validation() {
        let after = "    after_agent: survey\n";
        let cases = [
            ("    questions: []\n", "questions: []", "needs at least one question"),
            (
                "    questions:\n      - { id: a, prompts: [x] }\n      - { id: a, prompts: [y] }\n",
                "prompts: [y]",
                "question id `a` is used twice",
            ),
            (
                "    questions:\n      - { id: Happy, prompts: [x] }\n",
                "id: Happy",
                "lowercase letters, digits and `_`",
            ),
            (
                "    questions:\n      - { id: a, prompts: [] }\n",
                "id: a",
                "needs at least one prompt",
            ),
            (
                "    questions:\n      - id: a\n        prompt: x\n",
                "prompt: x",
                "unknown field `prompt`",
            ),
            (
                &format!("{QUESTIONS}    timeout: 0\n"),
                "timeout: 0",
                "between 0 and 300",
            ),
            (
                &format!("{QUESTIONS}    thanks: [\"thank you\"]\n"),
                "thank you",
                "must be a name",
            ),
            (
                &format!("{QUESTIONS}    choices: {{ 1: bye }}\n"),
                "choices: { 1: bye }",
                "does not apply to a survey node",
            ),
        ];
        for (fields, marker, what) in cases {
            assert_one_error(&with_survey(after, fields), marker, what);
        }
        // Missing `questions` and `next` are reported on the node.
        let text = with_survey(after, "");
        assert_one_error(&text, "  survey:", "needs at least one question");
        let text = with_survey(after, QUESTIONS).replace("    next: bye\n  bye:", "  bye:");
        assert_one_error(&text, "  survey:", "`next` is required");
        let text = with_survey(after, QUESTIONS)
            .replace("    next: bye\n  bye:", "    next: gone\n  bye:");
        assert_one_error(&text, "next: gone", "`gone`, which is not defined");
        // after_agent: only on a queue node, and to an existing node.
        let text = with_survey("    after_agent: nowhere\n", QUESTIONS);
        let errs = errors(&text);
        assert_eq!(
            errs[0].line,
            line_of(&text, "after_agent: nowhere"),
            "{errs:?}"
        );
        assert!(errs[0].reason.contains("`nowhere`, which is not defined"));
        let text = with_survey(after, QUESTIONS).replace(
            "    next: menu\n",
            "    next: menu\n    after_agent: survey\n",
        );
        // The play node comes first in the file: its line is the first `after_agent`.
        assert_one_error(
            &text,
            "after_agent: survey",
            "does not apply to a play node",
        );
    }
}
