//! KPIs and SLA reports for verde, and the CSV export of call records.
//!
//! An Italian public body pays its contact-center supplier on these figures, so they are
//! computed exactly and reproducibly from the raw data the engine stored: call records (with
//! their ACD path and survey answers), callback requests with their attempts, voicemails and
//! the queue log. Every share is carried as its exact fraction (numerator and denominator)
//! beside the float, every average as its total and count, so a person can check them; the
//! definitions are in `docs/kpi.md`.
//!
//! The crate is pure: no clock (the report's "as of" instant is an argument), no storage, no
//! IO but the `std::io::Write` it is handed. It does not know schedules either: working time
//! between two instants, for the number (DID) a task came in on, comes from the engine as a
//! function. It knows only the store's record
//! types, not the store.
//!
//! ```
//! use chrono::{NaiveDate, TimeZone, Utc};
//! use verde_report::{compute, write_text, Bucket, Grouping, Input, Period, Targets};
//!
//! let tz = chrono_tz::Europe::Rome;
//! let march = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
//! let input = Input {
//!     calls: &[],
//!     callbacks: &[],
//!     voicemails: &[],
//!     as_of: Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap(),
//! };
//! // The engine counts the opening hours of the flow answering `did`.
//! let working_time = |_did: &str, a: chrono::DateTime<Utc>, b: chrono::DateTime<Utc>| b - a;
//! let report = compute(
//!     &input,
//!     Period::local_days(tz, march(1), march(31)),
//!     &Grouping { bucket: Bucket::Day, tz, queue: None },
//!     &Targets::default(),
//!     &working_time,
//! );
//! let mut out = Vec::new();
//! write_text(&report, &mut out).unwrap();
//! assert!(String::from_utf8(out).unwrap().contains("no target missed"));
//! ```

mod export;
mod facts;
mod kpi;
mod targets;
mod text;

pub use export::{write_csv, write_queue_log_csv, CsvOptions, CALL_COLUMNS, QUEUE_LOG_COLUMNS};
pub use kpi::{
    compute, Bucket, CallKpis, CallbackKpis, Charts, Grouping, Hour, Input, Mean, Period,
    QueueKpis, Ratio, Report, Row, Scores, Skipped, SurveyKpis, Target, VoicemailKpis, WaitBin,
    WorkingTime, WAIT_BINS_S,
};
pub use targets::{ServiceLevelBase, Targets};
pub use text::write_text;

/// What can go wrong producing a report or an export.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report: writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("report: writing the CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("report targets: `{field}` is {value}; expected {expect}")]
    Target {
        field: &'static str,
        value: f64,
        expect: &'static str,
    },
}

#[cfg(test)]
mod tests;
