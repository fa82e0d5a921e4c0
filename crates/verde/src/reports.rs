//! KPI reports and CSV exports of what the engine stored: `verde report`, `verde export` and
//! the supervisors' `GET /api/reports` and `GET /api/export.csv` behind the `/reports` page.
//!
//! The figures themselves are computed by `verde-report` (definitions in `docs/kpi.md`); this
//! module only selects the data (a period of local days in the service's time zone, optionally
//! one queue), supplies the working time of each number from the flows' schedules, and writes
//! the result to a terminal, a file or an HTTP response. It reads the store and never writes
//! it, so a report can be made from a second process while the engine runs (SQLite in WAL mode
//! lets a reader in beside the writer).

use crate::config::{Config, KpiConfig};
use crate::flows::FlowsHandle;
use crate::sip_core::Engine;
use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use verde_cti::{AuthError, Authenticator, Role};
use verde_report::{Bucket, CsvOptions, Grouping, Input, Period, Report};
use verde_store::{CallRecord, CallbackRequest, QueueEvent, Store, TaskStore, Voicemail};

/// What a report or an export covers: local days `from..=to` and, optionally, one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Calls whose first queue is this one (and its queue-log lines); `None` for all.
    pub queue: Option<String>,
}

fn parse_day(field: &str, s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{field} {s:?} is not a date: write YYYY-MM-DD, e.g. 2026-03-01"))
}

impl Selection {
    /// Reads the days as written on the command line or in a URL (`YYYY-MM-DD`, both days
    /// included); an empty queue means every queue. The error names the wrong field as the
    /// user wrote it: `prefix` is `--` on the command line.
    pub fn parse(
        from: &str,
        to: &str,
        queue: Option<&str>,
        prefix: &str,
    ) -> Result<Selection, String> {
        let from = parse_day(&format!("{prefix}from"), from)?;
        let to = parse_day(&format!("{prefix}to"), to)?;
        if from > to {
            return Err(format!(
                "{prefix}from {from} is after {prefix}to {to}: the period runs from the first day to the last, both included"
            ));
        }
        Ok(Selection {
            from,
            to,
            queue: queue
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_string),
        })
    }

    /// From local midnight starting `from` to local midnight ending `to`, in `tz`.
    pub fn period(&self, tz: Tz) -> Period {
        Period::local_days(tz, self.from, self.to)
    }

    fn bounds_ms(&self, tz: Tz) -> (i64, i64) {
        let p = self.period(tz);
        (p.from.timestamp_millis(), p.to.timestamp_millis())
    }

    /// `2026-03-01_2026-03-31` or `2026-03-01_2026-03-31_pensions`, safe in a file name.
    pub fn file_stem(&self) -> String {
        let mut s = format!("{}_{}", self.from, self.to);
        if let Some(q) = &self.queue {
            s.push('_');
            s.extend(q.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            }));
        }
        s
    }
}

/// The queue a call counts in: the first it entered (`acd.queue`; older records kept it in
/// their variables), as `docs/kpi.md` defines it.
pub fn first_queue(r: &CallRecord) -> Option<&str> {
    r.acd
        .as_ref()
        .map(|a| a.queue.as_str())
        .or_else(|| r.variables.get("queue").map(String::as_str))
        .filter(|q| !q.is_empty())
}

/// Working time between two instants by the opening hours of the flow answering `did` (its
/// first schedule, as the engine computes task deadlines); plain time for a number with no
/// flow or a flow with no schedule.
pub type WorkingTimeFn = dyn Fn(&str, DateTime<Utc>, DateTime<Utc>) -> TimeDelta + Send + Sync;

pub fn working_time(flows: FlowsHandle) -> Arc<WorkingTimeFn> {
    Arc::new(move |did: &str, a: DateTime<Utc>, b: DateTime<Utc>| {
        flows
            .for_number(did)
            .and_then(|f| {
                f.schedules()
                    .next()
                    .map(|(_, s)| s.working_time_between(a, b))
            })
            .unwrap_or(b - a)
    })
}

/// The raw data of a period.
struct Data {
    calls: Vec<CallRecord>,
    callbacks: Vec<CallbackRequest>,
    voicemails: Vec<Voicemail>,
}

fn load(
    store: &dyn Store,
    tasks: &dyn TaskStore,
    sel: &Selection,
    tz: Tz,
) -> Result<Data, verde_store::StoreError> {
    let (from, to) = sel.bounds_ms(tz);
    Ok(Data {
        calls: store.calls_between(from, to)?,
        callbacks: tasks.callbacks_between(from, to)?,
        voicemails: tasks.voicemails_between(from, to)?,
    })
}

fn compute(
    data: &Data,
    sel: &Selection,
    bucket: Bucket,
    tz: Tz,
    kpi: &KpiConfig,
    as_of: DateTime<Utc>,
    working: &WorkingTimeFn,
) -> Report {
    let input = Input {
        calls: &data.calls,
        callbacks: &data.callbacks,
        voicemails: &data.voicemails,
        as_of,
    };
    let grouping = Grouping {
        bucket,
        tz,
        queue: sel.queue.clone(),
    };
    verde_report::compute(&input, sel.period(tz), &grouping, &kpi.targets, working)
}

/// `,` with a decimal point, or `;` with a decimal comma (what a spreadsheet in an Italian
/// locale opens by double-click); both with a BOM.
pub fn csv_options(separator: char, tz: Tz) -> Result<CsvOptions, String> {
    match separator {
        ',' => Ok(CsvOptions::new(tz)),
        ';' => Ok(CsvOptions::italian(tz)),
        other => Err(format!(
            "separator {other:?}: use ',' (decimal point) or ';' (decimal comma)"
        )),
    }
}

/// Writes the calls of the selection as CSV (one row per call, `docs/kpi.md`).
fn export_calls(
    store: &dyn Store,
    sel: &Selection,
    opts: &CsvOptions,
    w: impl Write,
) -> Result<usize> {
    let (from, to) = sel.bounds_ms(opts.tz);
    let mut calls = store.calls_between(from, to)?;
    if let Some(q) = &sel.queue {
        calls.retain(|c| first_queue(c) == Some(q.as_str()));
    }
    verde_report::write_csv(&calls, w, opts)?;
    Ok(calls.len())
}

/// Writes the queue log of the selection as CSV (lines of the chosen queue only, when one is).
fn export_queue_log(
    store: &dyn Store,
    sel: &Selection,
    opts: &CsvOptions,
    w: impl Write,
) -> Result<usize> {
    let (from, to) = sel.bounds_ms(opts.tz);
    let mut events: Vec<QueueEvent> = store.queue_events(from, to)?;
    if let Some(q) = &sel.queue {
        events.retain(|e| &e.queue == q);
    }
    verde_report::write_queue_log_csv(&events, w, opts)?;
    Ok(events.len())
}

// ---- command line ---------------------------------------------------------------------------

/// `verde report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// First day, YYYY-MM-DD (local midnight in the service's time zone).
    #[arg(long)]
    from: String,
    /// Last day, YYYY-MM-DD, included.
    #[arg(long)]
    to: String,
    /// Only calls whose first queue is this one.
    #[arg(long)]
    queue: Option<String>,
    /// Size of the report's buckets: day, month or quarter.
    #[arg(long, default_value = "day")]
    by: Bucket,
    /// The report as JSON (the same as GET /api/reports) instead of text.
    #[arg(long)]
    json: bool,
    /// Time zone of the days (default: kpi.time_zone).
    #[arg(long)]
    tz: Option<String>,
}

/// `verde export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// First day, YYYY-MM-DD (local midnight in the service's time zone).
    #[arg(long)]
    from: String,
    /// Last day, YYYY-MM-DD, included.
    #[arg(long)]
    to: String,
    /// Only calls whose first queue is this one (queue log: only this queue's lines).
    #[arg(long)]
    queue: Option<String>,
    /// ',' (decimal point) or ';' (decimal comma, for an Italian-locale spreadsheet).
    #[arg(long, default_value = ",")]
    separator: char,
    /// Export the queue log instead of the calls.
    #[arg(long)]
    queue_log: bool,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Time zone of the days and of the exported instants (default: kpi.time_zone).
    #[arg(long)]
    tz: Option<String>,
}

fn zone(cfg: &Config, tz: Option<&str>) -> Result<Tz> {
    match tz {
        Some(name) => name.parse().map_err(|_| {
            anyhow::anyhow!("--tz {name:?} is not an IANA time zone (e.g. Europe/Rome)")
        }),
        None => Ok(cfg.kpi.tz()),
    }
}

/// Opens the engine's store for reading; refuses to create one where there is none (a wrong
/// `--data` would otherwise print an empty report).
/// The store the engine on this configuration writes: PostgreSQL when `store.postgres` is
/// set (every node's records: a contact-center-wide report), else the embedded one, which must
/// already exist (a report on a new, empty file would only mislead).
fn open_store(cfg: &Config) -> Result<(Arc<dyn Store>, Arc<dyn TaskStore>)> {
    if cfg.store.postgres.is_none() {
        let path = cfg.data.join("verde.db");
        if !path.is_file() {
            bail!(
                "no store at {}: point --data (or `data:` in the config) at the engine's data folder",
                path.display()
            );
        }
    }
    let (store, _journal, tasks) = crate::open_store(cfg)?;
    Ok((store, tasks))
}

fn output(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// `verde report --from --to [--queue] [--by] [--json] [--tz]`.
pub fn report_cli(cfg: &Config, args: &ReportArgs) -> Result<()> {
    let sel = Selection::parse(&args.from, &args.to, args.queue.as_deref(), "--")
        .map_err(anyhow::Error::msg)?;
    let tz = zone(cfg, args.tz.as_deref())?;
    let (store, tasks) = open_store(cfg)?;
    // Callbacks and voicemails are judged in working hours: the flows' schedules, as the engine
    // running on this configuration has them.
    let flows = FlowsHandle::load(&cfg.flows, &cfg.sounds, &cfg.numbers).with_context(|| {
        format!(
            "the flows in {} give the working hours callbacks and voicemails are judged by",
            cfg.flows.display()
        )
    })?;
    let working = working_time(flows);
    let data = load(&*store, &*tasks, &sel, tz)?;
    let report = compute(
        &data,
        &sel,
        args.by,
        tz,
        &cfg.kpi,
        crate::clock::now(),
        &*working,
    );
    let mut out = output(None)?;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        verde_report::write_text(&report, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// `verde export --from --to [--queue] [--separator] [--queue-log] [--output] [--tz]`.
pub fn export_cli(cfg: &Config, args: &ExportArgs) -> Result<()> {
    let sel = Selection::parse(&args.from, &args.to, args.queue.as_deref(), "--")
        .map_err(anyhow::Error::msg)?;
    let tz = zone(cfg, args.tz.as_deref())?;
    let opts = csv_options(args.separator, tz).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let (store, _) = open_store(cfg)?;
    let mut out = output(args.output.as_ref())?;
    let rows = if args.queue_log {
        export_queue_log(&*store, &sel, &opts, &mut out)?
    } else {
        export_calls(&*store, &sel, &opts, &mut out)?
    };
    out.flush()?;
    if let Some(p) = &args.output {
        eprintln!("{rows} row(s) written to {}", p.display());
    }
    Ok(())
}

// ---- HTTP -----------------------------------------------------------------------------------

/// What the HTTP handlers read: the store, the CTI's tokens, the KPI settings and the working
/// hours.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub tasks: Arc<dyn TaskStore>,
    pub auth: Arc<Authenticator>,
    pub kpi: KpiConfig,
    pub working: Arc<WorkingTimeFn>,
}

static INSTALLED: OnceLock<Arc<Ctx>> = OnceLock::new();

/// Hands the running engine's services to the report endpoints; call it before the HTTP server
/// starts (`web::router` picks it up). Until then the endpoints answer 503.
pub fn install(engine: &Engine, store: Arc<dyn Store>) {
    let _ = INSTALLED.set(Arc::new(Ctx {
        store,
        tasks: engine.tasks.clone(),
        auth: engine.cti.auth.clone(),
        kpi: engine.cfg.kpi.clone(),
        working: working_time(engine.flows.clone()),
    }));
}

pub fn installed() -> Option<Arc<Ctx>> {
    INSTALLED.get().cloned()
}

/// `GET /api/reports` and `GET /api/export.csv`, for supervisors' bearer tokens.
pub fn router<S: Clone + Send + Sync + 'static>(ctx: Option<Arc<Ctx>>) -> Router<S> {
    Router::new()
        .route("/api/reports", get(api_report))
        .route("/api/export.csv", get(api_export))
        .with_state(ctx)
}

/// Why a request is refused: a status, a code for the page (the CTI's error codes where they
/// fit) and a message for a person.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(e: impl std::fmt::Display) -> Refusal {
        tracing::error!(error = %e, "report failed");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "error": self.message });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "unauthenticated" {
                r#"Bearer realm="verde""#.to_string()
            } else {
                format!(
                    r#"Bearer realm="verde", error="invalid_token", error_description="{}""#,
                    self.message
                )
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// A supervisor's CTI token in `Authorization: Bearer`: 401 without one or with one the CTI
/// does not know (or that expired), 403 for an agent's.
fn authorize(auth: &Authenticator, headers: &HeaderMap) -> Result<String, Refusal> {
    let unauthorized = |code, message| Refusal::new(StatusCode::UNAUTHORIZED, code, message);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "unauthenticated",
                "send a supervisor's CTI token as `Authorization: Bearer TOKEN`",
            )
        })?;
    let identity = auth
        .verify(token, std::time::Instant::now())
        .map_err(|e| match e {
            AuthError::Expired => unauthorized("token_expired", "the token expired: log in again"),
            _ => unauthorized("invalid_token", "unknown or revoked token: log in again"),
        })?;
    if identity.role != Role::Supervisor {
        tracing::warn!(user = %identity.user, "reports refused to a non-supervisor");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "reports are for supervisors",
        ));
    }
    Ok(identity.user)
}

/// The context, the caller's identity and the selection every endpoint needs, in the order
/// they are checked: 503, then 401/403, then 400.
fn admit(
    ctx: Option<Arc<Ctx>>,
    headers: &HeaderMap,
    q: &ReportQuery,
) -> Result<(Arc<Ctx>, String, Selection), Refusal> {
    let ctx = ctx.ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "reports are not available on this server",
        )
    })?;
    let user = authorize(&ctx.auth, headers)?;
    let sel = q.selection()?;
    Ok((ctx, user, sel))
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    queue: Option<String>,
    by: Option<String>,
    separator: Option<String>,
    log: Option<String>,
}

impl ReportQuery {
    fn selection(&self) -> Result<Selection, Refusal> {
        let (Some(from), Some(to)) = (&self.from, &self.to) else {
            return Err(Refusal::bad_request(
                "from and to are required (YYYY-MM-DD)",
            ));
        };
        Selection::parse(from, to, self.queue.as_deref(), "").map_err(Refusal::bad_request)
    }
}

async fn api_report(
    State(ctx): State<Option<Arc<Ctx>>>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Refusal> {
    let (ctx, user, sel) = admit(ctx, &headers, &q)?;
    let bucket: Bucket =
        q.by.as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or("day")
            .parse()
            .map_err(|e| Refusal::bad_request(format!("by: {e}")))?;
    tracing::info!(%user, from = %sel.from, to = %sel.to, queue = ?sel.queue, "report requested");
    let as_of = crate::clock::now();
    let report = tokio::task::spawn_blocking(move || {
        let tz = ctx.kpi.tz();
        load(&*ctx.store, &*ctx.tasks, &sel, tz)
            .map(|data| compute(&data, &sel, bucket, tz, &ctx.kpi, as_of, &*ctx.working))
    })
    .await
    .map_err(Refusal::internal)?
    .map_err(Refusal::internal)?;
    Ok(Json(report).into_response())
}

async fn api_export(
    State(ctx): State<Option<Arc<Ctx>>>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Refusal> {
    let (ctx, user, sel) = admit(ctx, &headers, &q)?;
    let separator = match q.separator.as_deref().unwrap_or(",") {
        "" | "," | "comma" => ',',
        ";" | "semicolon" => ';',
        other => {
            return Err(Refusal::bad_request(format!(
                "separator {other:?}: use , or ;"
            )))
        }
    };
    let queue_log = match q.log.as_deref() {
        None | Some("") | Some("calls") => false,
        Some("queue") => true,
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "log {other:?}: use log=queue for the queue log, or leave it out for calls"
            )))
        }
    };
    let opts = csv_options(separator, ctx.kpi.tz()).map_err(Refusal::bad_request)?;
    tracing::info!(%user, from = %sel.from, to = %sel.to, queue = ?sel.queue, queue_log, "export requested");
    let name = format!(
        "verde-{}_{}.csv",
        if queue_log { "queue-log" } else { "calls" },
        sel.file_stem()
    );
    let body = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        if queue_log {
            export_queue_log(&*ctx.store, &sel, &opts, &mut body)?;
        } else {
            export_calls(&*ctx.store, &sel, &opts, &mut body)?;
        }
        anyhow::Ok(body)
    })
    .await
    .map_err(Refusal::internal)?
    .map_err(Refusal::internal)?;
    let mut resp = (
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present",
            ),
            // Callers' numbers: not for shared caches or the browser's disk cache.
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use verde_cti::{AuthConfig, Credentials, Identity};
    use verde_store::{AcdRecord, LegRecord, QueueEventKind, SqliteStore};

    const ROME: Tz = chrono_tz::Europe::Rome;

    #[test]
    fn days_are_checked_and_named_in_errors() {
        let s = Selection::parse("2026-03-01", "2026-03-31", Some("pensions"), "").unwrap();
        assert_eq!(s.queue.as_deref(), Some("pensions"));
        assert_eq!(s.file_stem(), "2026-03-01_2026-03-31_pensions");
        let e = Selection::parse("2026-13-01", "2026-03-31", None, "--").unwrap_err();
        assert!(e.starts_with("--from ") && e.contains("YYYY-MM-DD"), "{e}");
        let e = Selection::parse("2026-03-01", "31/03/2026", None, "").unwrap_err();
        assert!(e.starts_with("to "), "{e}");
        let e = Selection::parse("2026-03-02", "2026-03-01", None, "--").unwrap_err();
        assert!(e.contains("after --to 2026-03-01"), "{e}");
        let one = Selection::parse("2026-03-01", "2026-03-01", Some(" "), "").unwrap();
        assert_eq!(one.queue, None, "an empty queue means every queue");
        assert_eq!(
            Selection::parse("2026-01-01", "2026-01-01", Some("a/b c"), "")
                .unwrap()
                .file_stem(),
            "2026-01-01_2026-01-01_a_b_c"
        );
    }

    #[test]
    fn a_day_is_local_midnight_to_midnight_summer_time_included() {
        // 29 March 2026: clocks go forward in Rome, the day has 23 hours.
        let s = Selection::parse("2026-03-29", "2026-03-29", None, "").unwrap();
        let (from, to) = s.bounds_ms(ROME);
        assert_eq!(to - from, 23 * 3600 * 1000);
        assert_eq!(
            from,
            Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        ROME.with_ymd_and_hms(2026, 3, 2, h, m, s)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rfc(t: DateTime<Utc>) -> String {
        t.to_rfc3339()
    }

    /// A call queued in `queue` at 10:00:05 (arrived 10:00:00), answered after `wait_s` by an
    /// agent when `answered`, else abandoned then.
    fn queued_call(id: &str, queue: &str, wait_s: u32, answered: bool) -> CallRecord {
        let arrived = at(10, 0, 0);
        let queued = at(10, 0, 5);
        let left = queued + TimeDelta::seconds(wait_s as i64);
        let end = left + TimeDelta::seconds(if answered { 60 } else { 0 });
        CallRecord {
            call_id: id.into(),
            caller: "0612345678".into(),
            did: "803164".into(),
            trunk: "local".into(),
            channel: "pstn".into(),
            started_at: rfc(arrived),
            answered_at: Some(rfc(arrived + TimeDelta::seconds(1))),
            ended_at: rfc(end),
            disposition: if answered {
                "answered-agent"
            } else {
                "abandoned-queue"
            }
            .into(),
            hangup_by: "caller".into(),
            outcome: Some(format!("queue:{queue}")),
            path: vec!["welcome".into(), format!("q_{queue}")],
            acd: Some(AcdRecord {
                queue: queue.into(),
                queued_at: rfc(queued),
                legs: if answered {
                    vec![LegRecord {
                        agent: "1001".into(),
                        queue: queue.into(),
                        answered_at: rfc(left),
                        ended_at: rfc(end),
                        hold_ms: 0,
                    }]
                } else {
                    vec![]
                },
                queue_wait_ms: Some(wait_s as u64 * 1000),
                exit: (!answered).then(|| "abandon".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ivr_call(id: &str, started: DateTime<Utc>) -> CallRecord {
        CallRecord {
            call_id: id.into(),
            caller: "0698765432".into(),
            did: "800022399".into(),
            trunk: "local".into(),
            channel: "pstn".into(),
            started_at: rfc(started),
            answered_at: Some(rfc(started + TimeDelta::milliseconds(200))),
            ended_at: rfc(started + TimeDelta::seconds(20)),
            disposition: "answered-ivr".into(),
            hangup_by: "engine".into(),
            outcome: Some("hangup:end".into()),
            path: vec!["hours".into(), "closed_message".into()],
            ..Default::default()
        }
    }

    fn store_with_calls() -> Arc<SqliteStore> {
        let store = SqliteStore::open_in_memory().unwrap();
        let calls = vec![
            queued_call("c1", "pensions", 12, true),
            queued_call("c2", "pensions", 40, true),
            queued_call("c3", "pensions", 20, false),
            queued_call("c4", "benefits", 5, true),
            ivr_call("c5", at(9, 0, 0)),
            // The next day: outside a one-day selection.
            ivr_call("c6", at(9, 0, 0) + TimeDelta::days(1)),
        ];
        let events: Vec<QueueEvent> = ["pensions", "benefits", "pensions"]
            .iter()
            .enumerate()
            .map(|(i, q)| QueueEvent {
                at_ms: at(10, 0, 5 + i as u32).timestamp_millis(),
                call_id: format!("c{}", i + 1),
                queue: q.to_string(),
                agent: String::new(),
                kind: QueueEventKind::Enter,
                data: vec!["0612345678".into(), "1".into()],
            })
            .collect();
        store.record_batch(&calls, &events).unwrap();
        Arc::new(store)
    }

    fn csv_rows(bytes: &[u8], sep: u8) -> Vec<Vec<String>> {
        let text = std::str::from_utf8(bytes).unwrap();
        let text = text.strip_prefix('\u{feff}').expect("a BOM first");
        text.split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| l.split(sep as char).map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn exports_keep_the_period_and_the_first_queue_only() {
        let store = store_with_calls();
        let day = Selection::parse("2026-03-02", "2026-03-02", None, "").unwrap();
        let mut out = Vec::new();
        let n = export_calls(&*store, &day, &CsvOptions::new(ROME), &mut out).unwrap();
        assert_eq!(n, 5, "c6 arrived the next day");
        let rows = csv_rows(&out, b',');
        assert_eq!(rows[0][0], "call_id");
        let ids: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(ids, ["c5", "c1", "c2", "c3", "c4"], "by arrival");

        let pensions = Selection::parse("2026-03-02", "2026-03-02", Some("pensions"), "").unwrap();
        let mut out = Vec::new();
        export_calls(&*store, &pensions, &CsvOptions::italian(ROME), &mut out).unwrap();
        let rows = csv_rows(&out, b';');
        let ids: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(ids, ["c1", "c2", "c3"]);
        let arrival = rows[0].iter().position(|c| c == "arrival").unwrap();
        assert_eq!(rows[1][arrival], "2026-03-02T10:00:00+01:00");
        let wait = rows[0].iter().position(|c| c == "queue_wait_s").unwrap();
        assert_eq!(rows[1][wait], "12,000", "decimal comma with ;");

        let mut out = Vec::new();
        let n = export_queue_log(&*store, &pensions, &CsvOptions::new(ROME), &mut out).unwrap();
        assert_eq!(n, 2);
        let rows = csv_rows(&out, b',');
        assert!(rows[1..].iter().all(|r| r[3] == "pensions"), "{rows:?}");
    }

    #[test]
    fn working_time_follows_the_schedule_of_the_numbers_flow() {
        let dir = std::env::temp_dir().join(format!("verde-reports-flows-{}", std::process::id()));
        let flows_dir = dir.join("flows");
        let sounds = dir.join("sounds");
        std::fs::create_dir_all(&flows_dir).unwrap();
        std::fs::create_dir_all(&sounds).unwrap();
        std::fs::write(
            flows_dir.join("desk.yaml"),
            "name: desk\nnumbers: [\"800111222\"]\nlanguage: it\ntimezone: Europe/Rome\n\
             start: hours\nnodes:\n  hours:\n    type: schedule\n    hours:\n      \
             mon-fri: [\"08:00-19:00\"]\n    open: end\n    closed: end\n  end:\n    type: hangup\n",
        )
        .unwrap();
        let flows = FlowsHandle::load(&flows_dir, &sounds, &Default::default()).unwrap();
        let working = working_time(flows);
        // Friday 18:00 to Monday 09:00: one hour on Friday, one on Monday.
        let fri = ROME
            .with_ymd_and_hms(2026, 3, 6, 18, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let mon = ROME
            .with_ymd_and_hms(2026, 3, 9, 9, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(working("800111222", fri, mon), TimeDelta::hours(2));
        assert_eq!(
            working("800999999", fri, mon),
            mon - fri,
            "a number without a flow counts plain time"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    struct Users;
    impl Credentials for Users {
        fn check(&self, _: &str, _: &str) -> Option<Role> {
            None
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text[9..12].parse().unwrap();
        (status, text)
    }

    #[tokio::test]
    async fn endpoints_want_a_supervisors_token_and_serve_the_report_and_csv() {
        let store = store_with_calls();
        let auth = Arc::new(Authenticator::new(AuthConfig::default(), Users));
        let now = std::time::Instant::now();
        let sup = auth
            .issue(
                Identity {
                    user: "sup1".into(),
                    role: Role::Supervisor,
                },
                now,
            )
            .token;
        let agent = auth
            .issue(
                Identity {
                    user: "1001".into(),
                    role: Role::Agent,
                },
                now,
            )
            .token;
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            tasks: store.clone(),
            auth,
            kpi: KpiConfig::default(),
            working: Arc::new(|_: &str, a: DateTime<Utc>, b: DateTime<Utc>| b - a),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tokio::spawn(async move { axum::serve(listener, router::<()>(Some(ctx))).await });

        let q = "/api/reports?from=2026-03-02&to=2026-03-02";
        let (s, text) = get(addr, q, None).await;
        assert_eq!(s, 401, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
        assert_eq!(get(addr, q, Some("nope")).await.0, 401);
        assert_eq!(get(addr, q, Some(&agent)).await.0, 403);
        let (s, text) = get(addr, q, Some(&sup)).await;
        assert_eq!(s, 200, "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let report: serde_json::Value = serde_json::from_str(body).unwrap();
        let total = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["bucket"] == "total" && r["queue"].is_null() && r["channel"].is_null())
            .expect("a total row for the whole service");
        assert_eq!(total["calls"]["arriving"], 5);
        assert_eq!(total["queue_kpis"]["offered"], 4);
        // Answered within 30 s: c1 (12 s) and c4 (5 s); base: 3 answered + 1 abandon after 20 s.
        assert_eq!(total["queue_kpis"]["service_level_30s"]["num"], 2);
        assert_eq!(total["queue_kpis"]["service_level_30s"]["den"], 4);

        let (s, _) = get(
            addr,
            "/api/reports?from=2026-03-05&to=2026-03-02",
            Some(&sup),
        )
        .await;
        assert_eq!(s, 400);
        let (s, _) = get(
            addr,
            "/api/reports?from=2026-03-02&to=2026-03-02&by=week",
            Some(&sup),
        )
        .await;
        assert_eq!(s, 400);

        let csv = "/api/export.csv?from=2026-03-02&to=2026-03-02&queue=pensions&separator=%3B";
        assert_eq!(get(addr, csv, None).await.0, 401);
        assert_eq!(get(addr, csv, Some(&agent)).await.0, 403);
        let (s, text) = get(addr, csv, Some(&sup)).await;
        assert_eq!(s, 200, "{text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/csv; charset=utf-8"),
            "{text}"
        );
        assert!(
            lower.contains("filename=\"verde-calls_2026-03-02_2026-03-02_pensions.csv\""),
            "{text}"
        );
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let rows = csv_rows(body.as_bytes(), b';');
        assert_eq!(
            rows.len(),
            4,
            "header and the three pensions calls: {rows:?}"
        );
        let (s, text) = get(addr, &format!("{csv}&log=queue"), Some(&sup)).await;
        assert_eq!(s, 200);
        assert!(text.contains("verde-queue-log_"), "{text}");
        assert_eq!(
            get(addr, &format!("{csv}&log=agents"), Some(&sup)).await.0,
            400
        );
        server.abort();
    }

    #[tokio::test]
    async fn without_an_engine_the_endpoints_say_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router::<()>(None)).await });
        assert_eq!(
            get(addr, "/api/reports?from=2026-03-02&to=2026-03-02", None)
                .await
                .0,
            503
        );
        server.abort();
    }
}
