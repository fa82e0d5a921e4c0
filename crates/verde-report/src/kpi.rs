//! The KPI computation: every input counted once into additive accumulators, one per
//! (bucket, queue, channel) cell and its margins, then judged against the targets.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use verde_store::{
    AttemptOutcome, CallRecord, CallbackOutcome, CallbackRequest, CallbackState, Voicemail,
    VoicemailState,
};

use crate::facts::{ms_between, CallFacts, Class, Fate};
use crate::targets::{ServiceLevelBase, Targets};

/// `(did, a, b)`: the working time from `a` to `b` by the opening hours of the service
/// reached on `did`; zero or negative when `b` is not after `a`.
pub type WorkingTime = dyn Fn(&str, DateTime<Utc>, DateTime<Utc>) -> TimeDelta;

/// The raw data a report is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub calls: &'a [CallRecord],
    pub callbacks: &'a [CallbackRequest],
    pub voicemails: &'a [Voicemail],
    /// When the report is made (the caller's wall clock). A callback or voicemail still open
    /// then counts as late once its working-hours window has passed, and is left out while it
    /// may still be on time.
    pub as_of: DateTime<Utc>,
}

/// The instants `[from, to)`: a call belongs to the period when it arrived in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// From local midnight starting `first` to local midnight ending `last` (both days
    /// included), in `tz`. On a day whose midnight does not exist (a DST gap) the day starts at
    /// the first instant that does.
    pub fn local_days(tz: Tz, first: NaiveDate, last: NaiveDate) -> Period {
        Period {
            from: local_midnight(tz, first),
            to: local_midnight(tz, last.succ_opt().unwrap_or(last)),
        }
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }
}

fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let mut t = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    // DST gaps are at most a couple of hours; walk forward until the local time exists.
    for _ in 0..240 {
        if let Some(l) = tz.from_local_datetime(&t).earliest() {
            return l.with_timezone(&Utc);
        }
        t += TimeDelta::minutes(1);
    }
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The size of the report's time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Day,
    Month,
    Quarter,
}

impl std::str::FromStr for Bucket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Bucket::Day),
            "month" => Ok(Bucket::Month),
            "quarter" => Ok(Bucket::Quarter),
            _ => Err(format!("unknown bucket {s:?}: use day, month or quarter")),
        }
    }
}

impl Bucket {
    /// `2026-03-02`, `2026-03`, `2026-Q1`: the local calendar of `tz`.
    pub fn label(self, t: DateTime<Utc>, tz: Tz) -> String {
        let l = t.with_timezone(&tz);
        match self {
            Bucket::Day => format!("{:04}-{:02}-{:02}", l.year(), l.month(), l.day()),
            Bucket::Month => format!("{:04}-{:02}", l.year(), l.month()),
            Bucket::Quarter => format!("{:04}-Q{}", l.year(), (l.month() - 1) / 3 + 1),
        }
    }
}

/// How the report is cut.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub bucket: Bucket,
    /// The calendar that days, months and hours of the day are read in.
    pub tz: Tz,
    /// Only this queue's rows (and this mailbox's voicemails); `None` for every row.
    pub queue: Option<String>,
}

/// A target as the contract states it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn missed_by(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value < t,
            Target::AtMost(t) => value > t,
        }
    }
}

/// An exact share: `num / den`, with the float for convenience. `value` is `None` when
/// nothing was counted; a KPI with no data is never `missed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub num: u64,
    pub den: u64,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub missed: bool,
}

impl Ratio {
    fn new(num: u64, den: u64, target: Option<Target>) -> Ratio {
        let value = (den > 0).then(|| num as f64 / den as f64);
        Ratio {
            num,
            den,
            value,
            target,
            missed: matches!((value, target), (Some(v), Some(t)) if t.missed_by(v)),
        }
    }
}

/// An average of durations, exact as `total_ms / count`. The target applies to the average.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mean {
    pub count: u64,
    pub total_ms: u64,
    pub avg_s: Option<f64>,
    pub max_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub missed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct MeanAcc {
    count: u64,
    total_ms: u64,
    max_ms: u64,
}

impl MeanAcc {
    fn add(&mut self, ms: u64) {
        self.count += 1;
        self.total_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }
    fn merge(&mut self, o: &MeanAcc) {
        self.count += o.count;
        self.total_ms += o.total_ms;
        self.max_ms = self.max_ms.max(o.max_ms);
    }
    fn mean(&self, target_s: Option<f64>) -> Mean {
        let avg_s = (self.count > 0).then(|| self.total_ms as f64 / self.count as f64 / 1000.0);
        let target = target_s.map(Target::AtMost);
        Mean {
            count: self.count,
            total_ms: self.total_ms,
            avg_s,
            max_s: (self.count > 0).then(|| self.max_ms as f64 / 1000.0),
            target,
            missed: matches!((avg_s, target), (Some(v), Some(t)) if t.missed_by(v)),
        }
    }
}

/// Upper bounds (inclusive) of the waiting-time bins, in seconds; the last bin is open.
pub const WAIT_BINS_S: [u64; 5] = [10, 20, 30, 60, 120];

#[derive(Debug, Clone, Copy, Default)]
struct QueueAcc {
    offered: u64,
    answered: u64,
    abandoned: u64,
    abandoned_short: u64,
    within_30: u64,
    within_60: u64,
}

impl QueueAcc {
    fn merge(&mut self, o: &QueueAcc) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.abandoned += o.abandoned;
        self.abandoned_short += o.abandoned_short;
        self.within_30 += o.within_30;
        self.within_60 += o.within_60;
    }
    fn sl_base(&self, base: ServiceLevelBase) -> u64 {
        match base {
            ServiceLevelBase::AnsweredAndAbandoned => {
                self.answered + self.abandoned - self.abandoned_short
            }
            ServiceLevelBase::Offered => self.offered - self.abandoned_short,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Acc {
    arriving: u64,
    rejected: u64,
    ivr: u64,
    ivr_abandoned: u64,
    out_of_hours: u64,
    voicemail_left: u64,
    callback_booked_in_ivr: u64,
    queue_unavailable: u64,
    transferred_out: u64,
    to_queue: u64,
    callback_offered: u64,
    callback_requested: u64,
    answered_by_agent: u64,
    ivr_answer: MeanAcc,
    ivr_navigation: MeanAcc,

    q: QueueAcc,
    exits: BTreeMap<String, u64>,
    hold_time: MeanAcc,
    speed_of_answer: MeanAcc,
    talk: MeanAcc,
    on_hold: MeanAcc,
    transfers: u64,
    wait_bins: [[u64; 3]; WAIT_BINS_S.len() + 1],
    hours: [QueueAcc; 24],

    cb_requested: u64,
    cb_cancelled: u64,
    cb_open: u64,
    cb_reached: u64,
    cb_not_reached: u64,
    cb_judged: u64,
    cb_on_time: u64,
    cb_by_deadline: u64,

    vm_received: u64,
    vm_open: u64,
    vm_judged: u64,
    vm_on_time: u64,

    surveys: u64,
    survey: ScoreAcc,
    per_question: BTreeMap<String, ScoreAcc>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ScoreAcc {
    answers: u64,
    positive: u64,
    negative: u64,
    sum: u64,
}

impl ScoreAcc {
    fn add(&mut self, score: u8) {
        self.answers += 1;
        self.positive += (score >= 5) as u64;
        self.negative += (score <= 2) as u64;
        self.sum += score as u64;
    }
    /// `targets` is `None` for the per-question figures: contracts judge the overall ones.
    fn kpis(&self, targets: Option<&Targets>) -> Scores {
        Scores {
            answers: self.answers,
            positive: Ratio::new(
                self.positive,
                self.answers,
                targets.and_then(|t| t.survey_positive).map(Target::AtLeast),
            ),
            negative: Ratio::new(
                self.negative,
                self.answers,
                targets.and_then(|t| t.survey_negative).map(Target::AtMost),
            ),
            average: (self.answers > 0).then(|| self.sum as f64 / self.answers as f64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum BucketKey {
    At(String),
    Total,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    bucket: BucketKey,
    queue: Option<String>,
    channel: Option<String>,
}

struct Cube {
    cells: BTreeMap<Key, Acc>,
}

impl Cube {
    /// Applies `f` to the cell of (bucket, queue, channel) and to every margin: the period
    /// total, all queues, all channels.
    fn add(&mut self, bucket: &str, queue: Option<&str>, channel: &str, f: impl Fn(&mut Acc)) {
        let buckets = [BucketKey::At(bucket.to_string()), BucketKey::Total];
        let queues: &[Option<&str>] = match queue {
            Some(q) => &[None, Some(q)],
            None => &[None],
        };
        for b in &buckets {
            for q in queues {
                for c in [None, Some(channel)] {
                    let key = Key {
                        bucket: b.clone(),
                        queue: q.map(str::to_string),
                        channel: c.map(str::to_string),
                    };
                    f(self.cells.entry(key).or_default());
                }
            }
        }
    }
}

/// The report: rows for each bucket and the whole period, each cut by queue and channel.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// RFC 3339 with the offset of `tz`: the period `[from, to)`.
    pub from: String,
    pub to: String,
    pub as_of: String,
    pub tz: String,
    pub bucket: Bucket,
    pub queue_filter: Option<String>,
    pub targets: Targets,
    /// Ordered by bucket (the period's `total` last), then queue (all queues first), then
    /// channel (all channels first).
    pub rows: Vec<Row>,
    /// Inputs that could not be read (e.g. a malformed instant), left out of every figure.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The call id, or `callback:ID` / `voicemail:ID`.
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `2026-03-02`, `2026-03`, `2026-Q1`, or `total` for the whole period.
    pub bucket: String,
    /// `None`: every queue (the whole service).
    pub queue: Option<String>,
    /// `None`: every channel.
    pub channel: Option<String>,
    /// Arrival-based figures; only on rows for every queue, where "all arriving" means
    /// something.
    pub calls: Option<CallKpis>,
    pub queue_kpis: QueueKpis,
    pub callbacks: CallbackKpis,
    pub voicemails: VoicemailKpis,
    pub survey: SurveyKpis,
    /// Only on the period's `total` rows.
    pub charts: Option<Charts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallKpis {
    pub arriving: u64,
    /// Refused before the IVR ran; counted in `arriving`.
    pub rejected: u64,
    /// Handled entirely in the IVR, of all arriving.
    pub ivr_handled: Ratio,
    /// Parts of `ivr_handled.num`.
    pub ivr_abandoned: u64,
    pub out_of_hours: u64,
    pub voicemail_left: u64,
    pub callback_booked_in_ivr: u64,
    pub queue_unavailable: u64,
    /// Transferred by the IVR to an outside number, of all arriving.
    pub transferred_out: Ratio,
    /// Sent from the IVR to a queue, of all arriving.
    pub to_queue: Ratio,
    pub callback_offered: Ratio,
    pub callback_requested: Ratio,
    /// Requested, of offered.
    pub callback_accepted: Ratio,
    /// Answered by an agent, of all arriving.
    pub answered_by_agent: Ratio,
    /// Arrival to the IVR's answer.
    pub ivr_answer: Mean,
    /// The IVR's answer to entering a queue.
    pub ivr_navigation: Mean,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueKpis {
    /// Entered the queue (the call's first queue).
    pub offered: u64,
    pub answered: u64,
    /// Every abandon in the queue, short ones included.
    pub abandoned: u64,
    /// Abandons within `short_abandon_s`.
    pub abandoned_short: u64,
    /// Left without an agent, by reason (`timeout`, `full`, `empty`, `key`, `callback`, ...).
    pub exits: BTreeMap<String, u64>,
    /// Answered by an agent, of those that entered the queue.
    pub answered_of_queued: Ratio,
    pub service_level_30s: Ratio,
    pub service_level_60s: Ratio,
    /// Abandons after `short_abandon_s`, of offered less short abandons.
    pub abandon_rate: Ratio,
    /// Arrival to agent answer (the tenders' "tempo di attesa").
    pub hold_time: Mean,
    /// Queue entry to agent answer.
    pub speed_of_answer: Mean,
    /// Per conversation (agent leg) of this queue: answer to end, on-hold time included.
    pub talk_time: Mean,
    /// Per conversation: time on hold.
    pub on_hold: Mean,
    pub transfers: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallbackKpis {
    /// Requests made in the bucket (by request time), cancelled ones included.
    pub requested: u64,
    pub cancelled: u64,
    /// Not reached yet and still within the window at `as_of`: not judged.
    pub open: u64,
    pub reached: u64,
    /// Done without reaching the customer.
    pub not_reached: u64,
    /// First reached within the working-hours window, of the requests judged.
    pub on_time: Ratio,
    /// First reached by the deadline the engine gave the request (it accounts for a time band
    /// chosen by the caller), of the same requests.
    pub by_deadline: Ratio,
}

#[derive(Debug, Clone, Serialize)]
pub struct VoicemailKpis {
    pub received: u64,
    /// Not taken yet and still within the window at `as_of`: not judged.
    pub open: u64,
    /// Taken in charge within the working-hours window, of the voicemails judged.
    pub on_time: Ratio,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub answers: u64,
    /// Answers scoring 5 or 6.
    pub positive: Ratio,
    /// Answers scoring 1 or 2.
    pub negative: Ratio,
    pub average: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SurveyKpis {
    /// Calls with at least one answer.
    pub surveys: u64,
    pub overall: Scores,
    pub per_question: BTreeMap<String, Scores>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Charts {
    pub wait_distribution: Vec<WaitBin>,
    /// Hours of the day 0..=23 in the report's time zone, by arrival.
    pub hourly: Vec<Hour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitBin {
    /// `0-10`, ..., `120+` seconds; upper bounds included.
    pub label: String,
    pub answered: u64,
    pub abandoned: u64,
    pub exited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hour {
    pub hour: u32,
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub service_level_30s: Ratio,
}

fn bin_of(wait_ms: u64) -> usize {
    WAIT_BINS_S
        .iter()
        .position(|&b| wait_ms <= b * 1000)
        .unwrap_or(WAIT_BINS_S.len())
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// Computes the report. Pure: the same inputs give the same report.
///
/// `working_time(did, a, b)` is the working time between two instants by the opening hours of
/// the service reached on `did` (the engine's flow schedule for that number)
/// (zero or negative when `b` is not after `a`); it judges callbacks and voicemails.
pub fn compute(
    input: &Input,
    period: Period,
    grouping: &Grouping,
    targets: &Targets,
    working_time: &WorkingTime,
) -> Report {
    let mut cube = Cube {
        cells: BTreeMap::new(),
    };
    let mut skipped = Vec::new();
    let tz = grouping.tz;
    let short_ms = targets.short_abandon_s as u64 * 1000;
    let mut channel_of: HashMap<&str, &str> = HashMap::new();

    for rec in input.calls {
        let f = match CallFacts::of(rec) {
            Ok(f) => f,
            Err(reason) => {
                tracing::warn!(call_id = %rec.call_id, %reason, "call record left out of the report");
                skipped.push(Skipped {
                    id: rec.call_id.clone(),
                    reason,
                });
                continue;
            }
        };
        let channel = channel_name(&rec.channel);
        channel_of.insert(rec.call_id.as_str(), channel);
        if !period.contains(f.arrived) {
            continue;
        }
        add_call(&mut cube, &f, grouping, channel, short_ms);
    }

    for cb in input.callbacks {
        let Some(requested) = from_ms(cb.requested_at_ms) else {
            skipped.push(Skipped {
                id: format!("callback:{}", cb.id),
                reason: format!("requested_at_ms {} is out of range", cb.requested_at_ms),
            });
            continue;
        };
        if !period.contains(requested) {
            continue;
        }
        // A callback is dialed out on the PSTN; it belongs to the channel the caller came in on.
        let channel = channel_of
            .get(cb.caller_call_id.as_str())
            .copied()
            .unwrap_or("pstn");
        let window = TimeDelta::hours(targets.callback_working_hours as i64);
        let verdict = judge_callback(cb, requested, input.as_of, window, working_time);
        cube.add(
            &grouping.bucket.label(requested, tz),
            Some(&cb.queue),
            channel,
            |a| {
                a.cb_requested += 1;
                match verdict {
                    CallbackVerdict::Cancelled => a.cb_cancelled += 1,
                    CallbackVerdict::Open => a.cb_open += 1,
                    CallbackVerdict::Judged {
                        reached,
                        on_time,
                        by_deadline,
                    } => {
                        a.cb_judged += 1;
                        a.cb_reached += reached as u64;
                        a.cb_not_reached += (!reached && cb.state == CallbackState::Done) as u64;
                        a.cb_on_time += on_time as u64;
                        a.cb_by_deadline += by_deadline as u64;
                    }
                }
            },
        );
    }

    for vm in input.voicemails {
        let Some(recorded) = from_ms(vm.recorded_at_ms) else {
            skipped.push(Skipped {
                id: format!("voicemail:{}", vm.id),
                reason: format!("recorded_at_ms {} is out of range", vm.recorded_at_ms),
            });
            continue;
        };
        if !period.contains(recorded) {
            continue;
        }
        let channel = channel_of
            .get(vm.call_id.as_str())
            .copied()
            .unwrap_or("pstn");
        let window = TimeDelta::hours(targets.voicemail_working_hours as i64);
        let taken = match &vm.state {
            VoicemailState::New => None,
            VoicemailState::Taken { at_ms, .. } => Some(*at_ms),
            VoicemailState::Closed { taken_at_ms, .. } => Some(*taken_at_ms),
        };
        // None: open; Some(on time?).
        let verdict = match taken.and_then(from_ms) {
            Some(t) => Some(working_time(&vm.did, recorded, t) <= window),
            None if working_time(&vm.did, recorded, input.as_of) > window => Some(false),
            None => None,
        };
        cube.add(
            &grouping.bucket.label(recorded, tz),
            Some(&vm.mailbox),
            channel,
            |a| {
                a.vm_received += 1;
                match verdict {
                    None => a.vm_open += 1,
                    Some(on_time) => {
                        a.vm_judged += 1;
                        a.vm_on_time += on_time as u64;
                    }
                }
            },
        );
    }

    let rows = cube
        .cells
        .into_iter()
        .filter(|(k, _)| grouping.queue.is_none() || k.queue == grouping.queue)
        .map(|(k, a)| row(k, &a, targets))
        .collect();

    Report {
        from: period.from.with_timezone(&tz).to_rfc3339(),
        to: period.to.with_timezone(&tz).to_rfc3339(),
        as_of: input.as_of.with_timezone(&tz).to_rfc3339(),
        tz: tz.name().to_string(),
        bucket: grouping.bucket,
        queue_filter: grouping.queue.clone(),
        targets: targets.clone(),
        rows,
        skipped,
    }
}

pub(crate) fn channel_name(channel: &str) -> &str {
    if channel.is_empty() {
        "unknown"
    } else {
        channel
    }
}

#[derive(Debug, Clone, Copy)]
enum CallbackVerdict {
    Cancelled,
    /// Not reached yet, and the window has not passed at `as_of`.
    Open,
    Judged {
        reached: bool,
        on_time: bool,
        by_deadline: bool,
    },
}

/// The start of the first attempt that reached the customer: the callback is "made" then.
fn first_reached(cb: &CallbackRequest) -> Option<DateTime<Utc>> {
    cb.attempt_log
        .iter()
        .find(|a| a.outcome == Some(AttemptOutcome::Answered))
        .map(|a| a.started_at_ms)
        .or(match cb.outcome {
            Some(CallbackOutcome::Answered) => cb.done_at_ms,
            _ => None,
        })
        .and_then(from_ms)
}

fn judge_callback(
    cb: &CallbackRequest,
    requested: DateTime<Utc>,
    as_of: DateTime<Utc>,
    window: TimeDelta,
    working_time: &WorkingTime,
) -> CallbackVerdict {
    if cb.outcome == Some(CallbackOutcome::Cancelled) {
        return CallbackVerdict::Cancelled;
    }
    match first_reached(cb) {
        Some(t) => CallbackVerdict::Judged {
            reached: true,
            on_time: working_time(&cb.did, requested, t) <= window,
            by_deadline: t.timestamp_millis() <= cb.deadline_ms,
        },
        None if cb.state == CallbackState::Done
            || working_time(&cb.did, requested, as_of) > window =>
        {
            CallbackVerdict::Judged {
                reached: false,
                on_time: false,
                by_deadline: false,
            }
        }
        None => CallbackVerdict::Open,
    }
}

fn add_call(cube: &mut Cube, f: &CallFacts, g: &Grouping, channel: &str, short_ms: u64) {
    let bucket = g.bucket.label(f.arrived, g.tz);
    let hour = f.arrived.with_timezone(&g.tz).hour() as usize;
    let q = f.queued.as_ref();
    let ivr_answer = f
        .ivr_answered
        .filter(|_| f.class != Class::Rejected)
        .map(|t| ms_between(f.arrived, t));
    let navigation = match (f.ivr_answered, q.and_then(|q| q.entered)) {
        (Some(a), Some(e)) => Some(ms_between(a, e)),
        _ => None,
    };
    let wait = q.and_then(|q| q.wait_ms);
    let fate = q.map(|q| &q.fate);
    let hold_time = q
        .filter(|q| q.fate == Fate::Answered)
        .and_then(|q| q.first_answer())
        .map(|t| ms_between(f.arrived, t));
    let mut queue_cell = QueueAcc::default();
    if let Some(fate) = fate {
        queue_cell.offered = 1;
        match fate {
            Fate::Answered => {
                queue_cell.answered = 1;
                queue_cell.within_30 = wait.is_some_and(|w| w <= 30_000) as u64;
                queue_cell.within_60 = wait.is_some_and(|w| w <= 60_000) as u64;
            }
            Fate::Abandoned => {
                queue_cell.abandoned = 1;
                queue_cell.abandoned_short = wait.is_some_and(|w| w < short_ms) as u64;
            }
            Fate::Exited(_) => {}
        }
    }
    let offered = f.callback_offered();
    let requested = f.callback_requested();
    let survey_taken = !f.rec.survey.is_empty();

    cube.add(&bucket, q.map(|q| q.queue.as_str()), channel, |a| {
        a.arriving += 1;
        match f.class {
            Class::Rejected => a.rejected += 1,
            Class::Ivr => {
                a.ivr += 1;
                a.ivr_abandoned += f.ivr_abandoned() as u64;
                a.out_of_hours += f.out_of_hours() as u64;
                a.voicemail_left += f.voicemail() as u64;
                a.callback_booked_in_ivr += requested as u64;
                a.queue_unavailable += (f.rec.disposition == "queue-unavailable") as u64;
            }
            Class::TransferredOut => a.transferred_out += 1,
            Class::Queued => a.to_queue += 1,
        }
        a.callback_offered += offered as u64;
        a.callback_requested += requested as u64;
        a.answered_by_agent += f.answered_by_agent() as u64;
        if let Some(ms) = ivr_answer {
            a.ivr_answer.add(ms);
        }
        if let Some(ms) = navigation {
            a.ivr_navigation.add(ms);
        }

        if let (Some(q), Some(fate)) = (q, fate) {
            a.q.merge(&queue_cell);
            a.hours[hour].merge(&queue_cell);
            if let Fate::Exited(reason) = fate {
                *a.exits.entry(reason.clone()).or_default() += 1;
            }
            if let Some(ms) = hold_time {
                a.hold_time.add(ms);
            }
            if let (Fate::Answered, Some(w)) = (fate, wait) {
                a.speed_of_answer.add(w);
            }
            if let Some(w) = wait {
                let col = match fate {
                    Fate::Answered => 0,
                    Fate::Abandoned => 1,
                    Fate::Exited(_) => 2,
                };
                a.wait_bins[bin_of(w)][col] += 1;
            }
            a.transfers += q.transfers.len() as u64;
        }

        if survey_taken {
            a.surveys += 1;
        }
        for s in &f.rec.survey {
            if (1..=6).contains(&s.score) {
                a.survey.add(s.score);
                a.per_question
                    .entry(s.question.clone())
                    .or_default()
                    .add(s.score);
            }
        }
    });

    // Each conversation counts in the queue the agent took it from (a transfer to another
    // queue adds a leg there).
    if let Some(q) = q {
        for leg in &q.legs {
            let mut talk = MeanAcc::default();
            talk.add(ms_between(leg.answered, leg.ended));
            let mut hold = MeanAcc::default();
            hold.add(leg.hold_ms);
            cube.add(&bucket, Some(&leg.queue), channel, |a| {
                a.talk.merge(&talk);
                a.on_hold.merge(&hold);
            });
        }
    }
}

fn row(k: Key, a: &Acc, t: &Targets) -> Row {
    let arr = a.arriving;
    let calls = k.queue.is_none().then(|| CallKpis {
        arriving: arr,
        rejected: a.rejected,
        ivr_handled: Ratio::new(a.ivr, arr, None),
        ivr_abandoned: a.ivr_abandoned,
        out_of_hours: a.out_of_hours,
        voicemail_left: a.voicemail_left,
        callback_booked_in_ivr: a.callback_booked_in_ivr,
        queue_unavailable: a.queue_unavailable,
        transferred_out: Ratio::new(a.transferred_out, arr, None),
        to_queue: Ratio::new(a.to_queue, arr, None),
        callback_offered: Ratio::new(a.callback_offered, arr, None),
        callback_requested: Ratio::new(a.callback_requested, arr, None),
        callback_accepted: Ratio::new(a.callback_requested, a.callback_offered, None),
        answered_by_agent: Ratio::new(a.answered_by_agent, arr, None),
        ivr_answer: a.ivr_answer.mean(t.ivr_answer_s),
        ivr_navigation: a.ivr_navigation.mean(None),
    });
    let sl_base = a.q.sl_base(t.service_level_base);
    let long_abandons = a.q.abandoned - a.q.abandoned_short;
    let queue_kpis = QueueKpis {
        offered: a.q.offered,
        answered: a.q.answered,
        abandoned: a.q.abandoned,
        abandoned_short: a.q.abandoned_short,
        exits: a.exits.clone(),
        answered_of_queued: Ratio::new(
            a.q.answered,
            a.q.offered,
            t.answered_of_queued.map(Target::AtLeast),
        ),
        service_level_30s: Ratio::new(
            a.q.within_30,
            sl_base,
            t.service_level_30s.map(Target::AtLeast),
        ),
        service_level_60s: Ratio::new(
            a.q.within_60,
            sl_base,
            t.service_level_60s.map(Target::AtLeast),
        ),
        abandon_rate: Ratio::new(
            long_abandons,
            a.q.offered - a.q.abandoned_short,
            t.abandon_rate.map(Target::AtMost),
        ),
        hold_time: a.hold_time.mean(t.hold_time_s),
        speed_of_answer: a.speed_of_answer.mean(t.speed_of_answer_s),
        talk_time: a.talk.mean(None),
        on_hold: a.on_hold.mean(None),
        transfers: a.transfers,
    };
    let callbacks = CallbackKpis {
        requested: a.cb_requested,
        cancelled: a.cb_cancelled,
        open: a.cb_open,
        reached: a.cb_reached,
        not_reached: a.cb_not_reached,
        on_time: Ratio::new(
            a.cb_on_time,
            a.cb_judged,
            t.callbacks_on_time.map(Target::AtLeast),
        ),
        by_deadline: Ratio::new(a.cb_by_deadline, a.cb_judged, None),
    };
    let voicemails = VoicemailKpis {
        received: a.vm_received,
        open: a.vm_open,
        on_time: Ratio::new(
            a.vm_on_time,
            a.vm_judged,
            t.voicemails_on_time.map(Target::AtLeast),
        ),
    };
    let survey = SurveyKpis {
        surveys: a.surveys,
        overall: a.survey.kpis(Some(t)),
        per_question: a
            .per_question
            .iter()
            .map(|(q, s)| (q.clone(), s.kpis(None)))
            .collect(),
    };
    let charts = (k.bucket == BucketKey::Total).then(|| Charts {
        wait_distribution: a
            .wait_bins
            .iter()
            .enumerate()
            .map(|(i, [answered, abandoned, exited])| WaitBin {
                label: match (i.checked_sub(1).map(|j| WAIT_BINS_S[j]), WAIT_BINS_S.get(i)) {
                    (None, Some(hi)) => format!("0-{hi}"),
                    (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
                    (Some(lo), None) => format!("{lo}+"),
                    (None, None) => String::new(),
                },
                answered: *answered,
                abandoned: *abandoned,
                exited: *exited,
            })
            .collect(),
        hourly: a
            .hours
            .iter()
            .enumerate()
            .map(|(h, q)| Hour {
                hour: h as u32,
                offered: q.offered,
                answered: q.answered,
                abandoned: q.abandoned,
                service_level_30s: Ratio::new(
                    q.within_30,
                    q.sl_base(t.service_level_base),
                    t.service_level_30s.map(Target::AtLeast),
                ),
            })
            .collect(),
    });
    Row {
        bucket: match k.bucket {
            BucketKey::At(b) => b,
            BucketKey::Total => "total".to_string(),
        },
        queue: k.queue,
        channel: k.channel,
        calls,
        queue_kpis,
        callbacks,
        voicemails,
        survey,
        charts,
    }
}
