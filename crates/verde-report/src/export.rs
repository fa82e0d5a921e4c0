//! CSV export of call records and of the queue log, for analysts and office suites.

use std::io::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use verde_store::{CallRecord, QueueEvent};

use crate::facts::{ms_between, CallFacts, Class};
use crate::ReportError;

/// How the CSV is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CsvOptions {
    /// `b','` or `b';'` (what an Italian-locale spreadsheet expects).
    pub separator: u8,
    /// A UTF-8 byte order mark first, so office suites read accents right.
    pub bom: bool,
    /// Seconds written `12,5` instead of `12.5`, for locales whose decimal mark is a comma.
    pub decimal_comma: bool,
    /// Instants are written in this zone, ISO 8601 with the offset.
    pub tz: Tz,
}

impl CsvOptions {
    /// Comma-separated, with a BOM, decimal point.
    pub fn new(tz: Tz) -> Self {
        CsvOptions {
            separator: b',',
            bom: true,
            decimal_comma: false,
            tz,
        }
    }

    /// What a spreadsheet in an Italian locale opens by double-click: `;`, decimal comma, BOM.
    pub fn italian(tz: Tz) -> Self {
        CsvOptions {
            separator: b';',
            bom: true,
            decimal_comma: true,
            tz,
        }
    }
}

/// The columns of [`write_csv`], in order.
pub const CALL_COLUMNS: [&str; 31] = [
    "call_id",
    "channel",
    "trunk",
    "caller",
    "did",
    "language",
    "ivr_path",
    "choices",
    "ivr_outcome",
    "class",
    "arrival",
    "ivr_answer",
    "queue_entry",
    "queue",
    "agent",
    "agent_answer",
    "queue_wait_s",
    "to_agent_s",
    "on_hold_s",
    "talk_s",
    "agents",
    "transfers",
    "queue_exit",
    "end",
    "hangup_by",
    "disposition",
    "sip_status",
    "survey",
    "survey_average",
    "recordings",
    "duration_s",
];

/// The columns of [`write_queue_log_csv`], in order.
pub const QUEUE_LOG_COLUMNS: [&str; 11] = [
    "time", "at_ms", "call_id", "queue", "agent", "event", "data1", "data2", "data3", "data4",
    "data5",
];

fn writer<W: Write>(mut w: W, opts: &CsvOptions) -> Result<csv::Writer<W>, ReportError> {
    if opts.bom {
        w.write_all("\u{feff}".as_bytes())?;
    }
    Ok(csv::WriterBuilder::new()
        .delimiter(opts.separator)
        .terminator(csv::Terminator::CRLF)
        .from_writer(w))
}

struct Fmt<'o>(&'o CsvOptions);

impl Fmt<'_> {
    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.0.tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
    fn time_opt(&self, t: Option<DateTime<Utc>>) -> String {
        t.map(|t| self.time(t)).unwrap_or_default()
    }
    /// A stored instant, rewritten in the export's zone; left as stored when unreadable, so
    /// that the export never loses a call.
    fn raw_time(&self, raw: &str) -> String {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| self.time(t.with_timezone(&Utc)))
            .unwrap_or_else(|_| raw.to_string())
    }
    fn secs(&self, ms: u64) -> String {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        if self.0.decimal_comma {
            s.replace('.', ",")
        } else {
            s
        }
    }
    fn secs_opt(&self, ms: Option<u64>) -> String {
        ms.map(|ms| self.secs(ms)).unwrap_or_default()
    }
}

/// Writes one row per call, with a header of [`CALL_COLUMNS`]. Lists inside a field (IVR
/// path, agents, transfers) are joined with ` > `, pairs (choices, survey) with spaces.
pub fn write_csv<W: Write>(
    records: &[CallRecord],
    w: W,
    opts: &CsvOptions,
) -> Result<(), ReportError> {
    let mut out = writer(w, opts)?;
    let f = Fmt(opts);
    out.write_record(CALL_COLUMNS)?;
    for r in records {
        let facts = CallFacts::of(r);
        if let Err(reason) = &facts {
            tracing::warn!(call_id = %r.call_id, %reason, "exported with its times as stored");
        }
        let facts = facts.ok();
        let q = facts.as_ref().and_then(|f| f.queued.as_ref());
        let class = match facts.as_ref().map(|f| f.class) {
            Some(Class::Rejected) => "rejected",
            Some(Class::Ivr) => "ivr",
            Some(Class::TransferredOut) => "transferred-out",
            Some(Class::Queued) => "queued",
            None => "",
        };
        let to_agent = match (&facts, q.and_then(|q| q.first_answer())) {
            (Some(f), Some(t)) => Some(ms_between(f.arrived, t)),
            _ => None,
        };
        let survey_avg = (!r.survey.is_empty()).then(|| {
            let sum: u64 = r.survey.iter().map(|s| s.score as u64).sum();
            // Thousandths, written like seconds: exact enough for a 1-6 scale, no float noise.
            f.secs(sum * 1000 / r.survey.len() as u64)
        });
        let row: [String; 31] = [
            r.call_id.clone(),
            r.channel.clone(),
            r.trunk.clone(),
            r.caller.clone(),
            r.did.clone(),
            r.language.clone().unwrap_or_default(),
            r.path.join(" > "),
            r.choices.join(" "),
            r.outcome.clone().unwrap_or_default(),
            class.to_string(),
            f.raw_time(&r.started_at),
            r.answered_at
                .as_deref()
                .map(|t| f.raw_time(t))
                .unwrap_or_default(),
            f.time_opt(q.and_then(|q| q.entered)),
            q.map(|q| q.queue.clone()).unwrap_or_default(),
            q.and_then(|q| q.agent.clone()).unwrap_or_default(),
            f.time_opt(q.and_then(|q| q.first_answer())),
            f.secs_opt(q.and_then(|q| q.wait_ms)),
            f.secs_opt(to_agent),
            f.secs_opt(q.map(|q| q.hold_ms)),
            f.secs_opt(q.filter(|q| !q.legs.is_empty()).map(|q| q.talk_ms())),
            q.map(|q| {
                q.legs
                    .iter()
                    .map(|l| l.agent.as_str())
                    .collect::<Vec<_>>()
                    .join(" > ")
            })
            .unwrap_or_default(),
            q.map(|q| q.transfers.join(" > ")).unwrap_or_default(),
            match q.map(|q| &q.fate) {
                Some(crate::facts::Fate::Exited(reason)) => reason.clone(),
                Some(crate::facts::Fate::Abandoned) => "abandon".to_string(),
                _ => String::new(),
            },
            f.raw_time(&r.ended_at),
            r.hangup_by.clone(),
            r.disposition.clone(),
            r.sip_status.map(|s| s.to_string()).unwrap_or_default(),
            r.survey
                .iter()
                .map(|s| format!("{}={}", s.question, s.score))
                .collect::<Vec<_>>()
                .join(" "),
            survey_avg.unwrap_or_default(),
            r.recordings
                .iter()
                .map(|x| x.file.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            f.secs_opt(facts.as_ref().map(|x| ms_between(x.arrived, x.ended))),
        ];
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the queue log, one row per event, with a header of [`QUEUE_LOG_COLUMNS`]. Event
/// names are those of the store (`enter`, `connect`, `abandon`, ...); data beyond the fifth
/// item is joined into `data5` with `|`.
pub fn write_queue_log_csv<W: Write>(
    events: &[QueueEvent],
    w: W,
    opts: &CsvOptions,
) -> Result<(), ReportError> {
    let mut out = writer(w, opts)?;
    let f = Fmt(opts);
    out.write_record(QUEUE_LOG_COLUMNS)?;
    for e in events {
        let mut data: Vec<String> = e.data.iter().take(4).cloned().collect();
        if e.data.len() > 4 {
            data.push(e.data[4..].join("|"));
        }
        data.resize(5, String::new());
        let time = DateTime::<Utc>::from_timestamp_millis(e.at_ms)
            .map(|t| f.time(t))
            .unwrap_or_default();
        let mut row = vec![
            time,
            e.at_ms.to_string(),
            e.call_id.clone(),
            e.queue.clone(),
            e.agent.clone(),
            event_name(e),
        ];
        row.extend(data);
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}

fn event_name(e: &QueueEvent) -> String {
    e.kind.as_str().to_string()
}
