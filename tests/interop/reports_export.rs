//! Reports and exports from what real calls left in the store. verde's wall clock starts on
//! Monday 30 November 2026 at 21:00 in Rome (the teaching helpdesk, Mon-Fri 08-19, is closed);
//! `kpi.targets.short_abandon_s` is 4. Four SIPp callers at once:
//!
//! - A and B walk the INPS menus to the pensions queue (no agent is logged in) and hang up
//!   about 1.5 s and 7 s later: two abandons, the first short, the second not;
//! - C calls the closed helpdesk, hears the closed message and is hung up on by the flow;
//! - D calls INPS and hangs up during the welcome: abandoned in the IVR.
//!
//! Then `verde export` is run on the test's data folder like an operator would: every field of
//! each CSV row is checked against what the test drove and the stored record (UTF-8 BOM, the
//! separator, ISO instants with the +01:00 offset, durations to the millisecond), the `;` form,
//! the queue filter and the queue log. `verde report --json` is checked against numerators and
//! denominators worked out here by hand from the records, and `/api/reports` and
//! `/api/export.csv` serve the same to a supervisor's token (401 without one, 403 for an
//! agent's).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use verde_interop::acd::{assert_reached_queue, inps_caller_scenario, write_config};
use verde_interop::callbacks::ms_of;
use verde_interop::cti::Cti;
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp};
use verde_interop::verde::{field, record_path, verde_bin, Verde, VerdeOptions};
use verde_interop::{require_private_netns, tail, TestDir};

const MONDAY_EVENING: &str = "2026-11-30T21:00:00+01:00";
const DAY: &str = "2026-11-30";
const HELPDESK: &str = "800779366";
const SHORT_ABANDON_S: u64 = 4;
const SUP: (&str, &str) = ("sup1", "pw-sup1");
const AGENT: (&str, &str) = ("a1", "pw-a1");

/// The columns of a call export, as `docs/kpi.md` lists them.
const CALL_COLUMNS: [&str; 31] = [
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
const QUEUE_LOG_COLUMNS: [&str; 11] = [
    "time", "at_ms", "call_id", "queue", "agent", "event", "data1", "data2", "data3", "data4",
    "data5",
];

/// What the test made each caller do.
struct Driven {
    call_id: String,
    caller: &'static str,
    did: &'static str,
    /// `queued` or `ivr`.
    class: &'static str,
    /// Nodes the path must hold, in order.
    nodes: &'static [&'static str],
}

// ---- instants ------------------------------------------------------------------------------

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn bad_instant(s: &str) -> ! {
    panic!("{s:?} is not an RFC 3339 instant")
}

/// An RFC 3339 instant to nanoseconds since the epoch, exactly (stored instants carry
/// nanoseconds; the reports count whole milliseconds of their differences).
fn instant_ns(s: &str) -> i128 {
    let (date, rest) = s.split_once('T').unwrap_or_else(|| bad_instant(s));
    let mut d = date
        .split('-')
        .map(|p| p.parse::<i64>().unwrap_or_else(|_| bad_instant(s)));
    let (y, mo, da) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let (t, off) = rest.split_at(rest.len() - 6);
        let sign = match &off[..1] {
            "+" => 1,
            "-" => -1,
            _ => bad_instant(s),
        };
        let h: i64 = off[1..3].parse().unwrap_or_else(|_| bad_instant(s));
        let m: i64 = off[4..6].parse().unwrap_or_else(|_| bad_instant(s));
        (t, sign * (h * 3600 + m * 60))
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms
        .split(':')
        .map(|p| p.parse::<i64>().unwrap_or_else(|_| bad_instant(s)));
    let (h, mi, se) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9]
            .parse()
            .unwrap_or_else(|_| bad_instant(s))
    };
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    secs as i128 * 1_000_000_000 + nanos
}

/// Whole milliseconds from `a` to `b` (never negative), as the reports count them.
fn ms_between(a: &str, b: &str) -> u64 {
    ((instant_ns(b) - instant_ns(a)) / 1_000_000).max(0) as u64
}

/// Milliseconds as the export writes seconds: `12.345` (or `12,345` with a decimal comma).
fn secs(ms: u64, comma: bool) -> String {
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    if comma {
        s.replace('.', ",")
    } else {
        s
    }
}

/// An exported instant must be the stored one, to the second, written with Rome's offset
/// that day (+01:00).
fn assert_exported_instant(csv: &str, stored: &str, what: &str) {
    assert!(
        csv.len() == 25 && csv.starts_with(&format!("{DAY}T")) && csv.ends_with("+01:00"),
        "{what}: {csv:?} is not an ISO 8601 instant of {DAY} with the +01:00 offset"
    );
    let whole = instant_ns(stored).div_euclid(1_000_000_000) * 1_000_000_000;
    assert_eq!(
        instant_ns(csv),
        whole,
        "{what}: exported {csv}, stored {stored}"
    );
}

// ---- running verde's commands --------------------------------------------------------------

#[derive(Clone)]
struct Cli {
    config: PathBuf,
    data: PathBuf,
    flows: PathBuf,
    sounds: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(verde_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data)
            .arg("--flows")
            .arg(&self.flows)
            .arg("--sounds")
            .arg(&self.sounds)
            .args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", verde_bin().display()))
    }

    /// Runs a subcommand that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "verde {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs a subcommand that must fail; returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "verde {args:?} should have failed; it printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "verde {args:?} failed but printed data"
        );
        err
    }
}

/// The rows of a CSV export as column -> value maps, after checking the BOM and the header.
fn read_csv(bytes: &[u8], sep: u8, columns: &[&str], what: &str) -> Vec<BTreeMap<String, String>> {
    let body = bytes
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or_else(|| {
            panic!(
                "{what}: no UTF-8 byte order mark first; starts with {:?}",
                &bytes[..bytes.len().min(16)]
            )
        });
    assert!(
        body.windows(2).any(|w| w == b"\r\n"),
        "{what}: lines must end with CRLF"
    );
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(true)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .unwrap_or_else(|e| panic!("{what}: header: {e}"))
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, columns, "{what}: header");
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.len(), columns.len(), "{what}: row {r:?}");
            header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn by_call_id(rows: Vec<BTreeMap<String, String>>) -> BTreeMap<String, BTreeMap<String, String>> {
    rows.into_iter()
        .map(|r| (r["call_id"].clone(), r))
        .collect()
}

// ---- HTTP with a bearer token --------------------------------------------------------------

// ---- the report ----------------------------------------------------------------------------

fn row<'a>(report: &'a Value, bucket: &str, queue: Option<&str>) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("report without rows: {report:#}"))
        .iter()
        .find(|r| r["bucket"] == bucket && r["queue"].as_str() == queue && r["channel"].is_null())
        .unwrap_or_else(|| panic!("no row {bucket}/{queue:?}/all channels in {report:#}"))
}

fn ratio(v: &Value) -> (u64, u64) {
    (
        v["num"].as_u64().unwrap_or_else(|| panic!("num in {v}")),
        v["den"].as_u64().unwrap_or_else(|| panic!("den in {v}")),
    )
}

/// The report minus the instant it was made, to compare two reports of the same data.
fn without_as_of(mut r: Value) -> Value {
    r.as_object_mut().expect("report object").remove("as_of");
    r
}

#[test]
fn reports_and_exports_from_real_calls() {
    require_private_netns();
    let dir = TestDir::new("reports_export");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n  - {{ id: {}, password: {}, queues: [pensions] }}\n\
             supervisors:\n  - {{ id: {}, password: {} }}\n\
             kpi:\n  time_zone: Europe/Rome\n  targets:\n    short_abandon_s: {SHORT_ABANDON_S}\n",
            AGENT.0, AGENT.1, SUP.0, SUP.1
        ),
    );
    let opts = VerdeOptions {
        config: Some(config.clone()),
        extra_args: vec!["--wall-clock".into(), MONDAY_EVENING.into()],
        ..Default::default()
    };
    let (flows, sounds) = (opts.flows.clone(), opts.sounds.clone());
    let verde = Verde::start(&dir, opts);
    let cli = Cli {
        config,
        data: verde.data_dir.clone(),
        flows,
        sounds,
    };

    // ---- the calls ----
    let (scen_a, long_a) = inps_caller_scenario(&dir, "0611000001", '1', None, 1500);
    let (scen_b, long_b) = inps_caller_scenario(&dir, "0611000002", '1', None, 7000);
    let closed_ms = ms_of(&["helpdesk_closed", "hours_weekdays", "goodbye"]);
    let scen_c = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", "0611000003".into()),
            ("ACTIONS", String::new()),
            ("LISTEN_MS", (closed_ms + 15_000).to_string()),
        ],
    );
    let scen_d = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", "0611000004".into()),
            ("ACTIONS", String::new()),
            ("LISTEN_MS", "2000".into()),
        ],
    );
    let slack = Duration::from_secs(20);
    let runs = [
        Sipp::new(&scen_a, verde.sip)
            .service(INPS)
            .timeout(long_a + slack)
            .spawn(&dir),
        Sipp::new(&scen_b, verde.sip)
            .service(INPS)
            .timeout(long_b + slack)
            .spawn(&dir),
        Sipp::new(&scen_c, verde.sip)
            .service(HELPDESK)
            .timeout(Duration::from_millis(closed_ms) + slack)
            .spawn(&dir),
        Sipp::new(&scen_d, verde.sip)
            .service(INPS)
            .timeout(slack)
            .spawn(&dir),
    ];
    let outs: Vec<_> = runs.into_iter().map(|r| r.wait()).collect();
    for (out, who) in outs.iter().zip(["A", "B", "C", "D"]) {
        out.assert_success(&format!("caller {who}"));
    }
    let driven = [
        Driven {
            call_id: outs[0].call_id.clone(),
            caller: "0611000001",
            did: INPS,
            class: "queued",
            nodes: &["q_pensions"],
        },
        Driven {
            call_id: outs[1].call_id.clone(),
            caller: "0611000002",
            did: INPS,
            class: "queued",
            nodes: &["q_pensions"],
        },
        Driven {
            call_id: outs[2].call_id.clone(),
            caller: "0611000003",
            did: HELPDESK,
            class: "ivr",
            nodes: &["hours", "closed_message", "goodbye", "end"],
        },
        Driven {
            call_id: outs[3].call_id.clone(),
            caller: "0611000004",
            did: INPS,
            class: "ivr",
            nodes: &["welcome"],
        },
    ];
    assert_reached_queue(&verde, &driven[0].call_id, "pensions");
    assert_reached_queue(&verde, &driven[1].call_id, "pensions");
    let records: Vec<Value> = driven
        .iter()
        .map(|d| verde.wait_call_record(&d.call_id, Duration::from_secs(10)))
        .collect();
    for (d, r) in driven.iter().zip(&records) {
        let path = record_path(r);
        let mut at = 0;
        for node in d.nodes {
            at += path[at..]
                .iter()
                .position(|n| n == node)
                .unwrap_or_else(|| panic!("{}: path {path:?} lacks {node}: {r:#}", d.caller));
        }
    }
    let disposition = |i: usize| field(&records[i], "disposition").as_str().unwrap_or("");
    assert_eq!(disposition(0), "abandoned-queue", "{:#}", records[0]);
    assert_eq!(disposition(1), "abandoned-queue", "{:#}", records[1]);
    assert_eq!(disposition(2), "out-of-hours", "{:#}", records[2]);
    assert_eq!(disposition(3), "abandoned-ivr", "{:#}", records[3]);
    assert_eq!(
        records[2]["variables"]["schedule"], "closed",
        "the helpdesk must be closed at {MONDAY_EVENING}: {:#}",
        records[2]
    );
    let wait_ms = |i: usize| {
        records[i]["acd"]["queue_wait_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no acd.queue_wait_ms: {:#}", records[i]))
    };
    let short = |ms: u64| ms < SHORT_ABANDON_S * 1000;
    assert!(
        short(wait_ms(0)) && !short(wait_ms(1)),
        "A must wait under {SHORT_ABANDON_S} s and B over it: {} ms, {} ms",
        wait_ms(0),
        wait_ms(1)
    );

    // ---- the call export, comma-separated ----
    let csv_comma = cli.ok(&["export", "--from", DAY, "--to", DAY]);
    let rows = by_call_id(read_csv(&csv_comma, b',', &CALL_COLUMNS, "export"));
    assert_eq!(rows.len(), 4, "one row per call: {rows:#?}");
    for (d, r) in driven.iter().zip(&records) {
        let row = rows
            .get(&d.call_id)
            .unwrap_or_else(|| panic!("no row for {}: {rows:#?}", d.call_id));
        let s = |name: &str| field(r, name).as_str().unwrap_or("").to_string();
        let what = |col: &str| format!("{} ({}): {col}", d.caller, d.call_id);
        assert_eq!(row["channel"], "pstn", "{}", what("channel"));
        assert_eq!(row["trunk"], "local", "{}", what("trunk"));
        assert_eq!(row["caller"], d.caller, "{}", what("caller"));
        assert_eq!(row["did"], d.did, "{}", what("did"));
        assert_eq!(row["language"], s("language"), "{}", what("language"));
        assert_eq!(
            row["ivr_path"],
            record_path(r).join(" > "),
            "{}",
            what("ivr_path")
        );
        let choices: Vec<String> = r["choices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(row["choices"], choices.join(" "), "{}", what("choices"));
        assert_eq!(row["ivr_outcome"], s("outcome"), "{}", what("ivr_outcome"));
        assert_eq!(row["class"], d.class, "{}", what("class"));
        assert_exported_instant(&row["arrival"], &s("started_at"), &what("arrival"));
        assert_exported_instant(&row["end"], &s("ended_at"), &what("end"));
        match r["answered_at"].as_str() {
            Some(t) => assert_exported_instant(&row["ivr_answer"], t, &what("ivr_answer")),
            None => assert_eq!(row["ivr_answer"], "", "{}", what("ivr_answer")),
        }
        assert_eq!(
            row["duration_s"],
            secs(ms_between(&s("started_at"), &s("ended_at")), false),
            "{}",
            what("duration_s")
        );
        assert_eq!(row["hangup_by"], s("hangup_by"), "{}", what("hangup_by"));
        assert_eq!(
            row["disposition"],
            s("disposition"),
            "{}",
            what("disposition")
        );
        assert_eq!(row["sip_status"], "", "{}", what("sip_status"));
        // Nobody answered, recorded or rated anything.
        for col in [
            "agent",
            "agent_answer",
            "to_agent_s",
            "talk_s",
            "agents",
            "transfers",
            "survey",
            "survey_average",
            "recordings",
        ] {
            assert_eq!(row[col], "", "{}", what(col));
        }
        if d.class == "queued" {
            let acd = &r["acd"];
            assert_eq!(row["queue"], "pensions", "{}", what("queue"));
            assert_exported_instant(
                &row["queue_entry"],
                acd["queued_at"].as_str().expect("acd.queued_at"),
                &what("queue_entry"),
            );
            let wait = acd["queue_wait_ms"].as_u64().unwrap();
            assert_eq!(
                row["queue_wait_s"],
                secs(wait, false),
                "{}",
                what("queue_wait_s")
            );
            assert_eq!(row["queue_exit"], "abandon", "{}", what("queue_exit"));
            assert_eq!(row["on_hold_s"], "0.000", "{}", what("on_hold_s"));
        } else {
            for col in [
                "queue",
                "queue_entry",
                "queue_wait_s",
                "queue_exit",
                "on_hold_s",
            ] {
                assert_eq!(row[col], "", "{}", what(col));
            }
        }
    }

    // ---- the same with ';' and decimal commas; the queue filter ----
    let csv_semi = cli.ok(&["export", "--from", DAY, "--to", DAY, "--separator", ";"]);
    let semi = by_call_id(read_csv(
        &csv_semi,
        b';',
        &CALL_COLUMNS,
        "export --separator ;",
    ));
    assert_eq!(semi.len(), 4);
    for (id, row) in &semi {
        let comma = &rows[id];
        for col in CALL_COLUMNS {
            let want = if col.ends_with("_s") {
                comma[col].replace('.', ",")
            } else {
                comma[col].clone()
            };
            assert_eq!(row[col], want, "{id}: {col} with ';'");
        }
        assert!(
            row["duration_s"].contains(','),
            "{id}: decimal comma: {row:?}"
        );
    }
    let pensions = by_call_id(read_csv(
        &cli.ok(&["export", "--from", DAY, "--to", DAY, "--queue", "pensions"]),
        b',',
        &CALL_COLUMNS,
        "export --queue pensions",
    ));
    let ids: Vec<&String> = pensions.keys().collect();
    let mut want = vec![&driven[0].call_id, &driven[1].call_id];
    want.sort();
    assert_eq!(ids, want, "--queue pensions keeps the two pensions callers");
    let next_day = read_csv(
        &cli.ok(&["export", "--from", "2026-12-01", "--to", "2026-12-01"]),
        b',',
        &CALL_COLUMNS,
        "export of the next day",
    );
    assert!(
        next_day.is_empty(),
        "no call arrived on 1 December: {next_day:?}"
    );

    // ---- the queue log ----
    let csv_log = cli.ok(&["export", "--from", DAY, "--to", DAY, "--queue-log"]);
    let log = read_csv(&csv_log, b',', &QUEUE_LOG_COLUMNS, "export --queue-log");
    for (i, d) in driven.iter().enumerate().take(2) {
        let lines: Vec<_> = log.iter().filter(|l| l["call_id"] == d.call_id).collect();
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str()).collect();
        assert_eq!(events, ["enter", "abandon"], "{}: {lines:#?}", d.caller);
        for l in &lines {
            assert_eq!(l["queue"], "pensions", "{l:?}");
            assert_eq!(l["agent"], "", "{l:?}");
            let at_ms: i128 = l["at_ms"].parse().expect("at_ms");
            assert_exported_instant(
                &l["time"],
                &format!("{}Z", iso_utc(at_ms)),
                &format!("{}: queue log time", d.caller),
            );
        }
        assert_eq!(lines[0]["data1"], d.caller, "enter: the caller's number");
        let logged: u64 = lines[1]["data1"]
            .parse()
            .expect("abandon data1: the wait in ms");
        assert!(
            logged.abs_diff(wait_ms(i)) <= 300,
            "{}: the queue log's wait {logged} ms, the record's {} ms",
            d.caller,
            wait_ms(i)
        );
    }
    assert!(
        log.iter()
            .all(|l| l["call_id"] != driven[2].call_id && l["call_id"] != driven[3].call_id),
        "calls that never reached a queue have no queue log: {log:#?}"
    );

    // ---- the report, by hand ----
    let report: Value =
        serde_json::from_slice(&cli.ok(&["report", "--from", DAY, "--to", DAY, "--json"]))
            .expect("report --json is JSON");
    assert_eq!(report["tz"], "Europe/Rome", "{report:#}");
    assert_eq!(report["from"], format!("{DAY}T00:00:00+01:00"));
    assert_eq!(report["to"], "2026-12-01T00:00:00+01:00");
    assert_eq!(report["targets"]["short_abandon_s"], SHORT_ABANDON_S);
    let all = row(&report, "total", None);
    let calls = &all["calls"];
    assert_eq!(calls["arriving"], 4, "{all:#}");
    assert_eq!(
        ratio(&calls["ivr_handled"]),
        (2, 4),
        "C and D never left the IVR"
    );
    assert_eq!(ratio(&calls["to_queue"]), (2, 4));
    assert_eq!(ratio(&calls["answered_by_agent"]), (0, 4));
    assert_eq!(calls["out_of_hours"], 1, "C called the closed helpdesk");
    assert_eq!(calls["ivr_abandoned"], 1, "D hung up in the IVR");
    let answered: Vec<&Value> = records
        .iter()
        .filter(|r| r["answered_at"].is_string())
        .collect();
    let ivr_answer_total: u64 = answered
        .iter()
        .map(|r| {
            ms_between(
                r["started_at"].as_str().unwrap(),
                r["answered_at"].as_str().unwrap(),
            )
        })
        .sum();
    assert_eq!(
        calls["ivr_answer"]["count"],
        answered.len() as u64,
        "{calls:#}"
    );
    assert_eq!(
        calls["ivr_answer"]["total_ms"], ivr_answer_total,
        "{calls:#}"
    );
    let day_row = row(&report, DAY, None);
    assert_eq!(
        day_row["calls"]["arriving"], 4,
        "the day's bucket: {day_row:#}"
    );

    let q = &row(&report, "total", Some("pensions"))["queue_kpis"];
    let shorts = [wait_ms(0), wait_ms(1)]
        .into_iter()
        .filter(|w| short(*w))
        .count() as u64;
    assert_eq!(q["offered"], 2, "{q:#}");
    assert_eq!(q["answered"], 0);
    assert_eq!(q["abandoned"], 2);
    assert_eq!(q["abandoned_short"], shorts);
    // (abandoned - short) / (offered - short); SL base: answered + abandoned - short.
    assert_eq!(ratio(&q["abandon_rate"]), (2 - shorts, 2 - shorts), "{q:#}");
    assert_eq!(
        q["abandon_rate"]["missed"], true,
        "100 % abandons miss the 5 % target"
    );
    assert_eq!(ratio(&q["service_level_30s"]), (0, 2 - shorts), "{q:#}");
    assert_eq!(q["service_level_30s"]["missed"], true);
    assert_eq!(ratio(&q["answered_of_queued"]), (0, 2));
    let charts = &row(&report, "total", Some("pensions"))["charts"];
    let first_bin = &charts["wait_distribution"][0];
    assert_eq!(first_bin["label"], "0-10", "{charts:#}");
    assert_eq!(
        first_bin["abandoned"], 2,
        "both waits are under 10 s: {charts:#}"
    );
    let hour21 = &charts["hourly"][21];
    assert_eq!(
        (hour21["hour"].clone(), hour21["offered"].clone()),
        (json!(21), json!(2))
    );

    let only_pensions: Value = serde_json::from_slice(&cli.ok(&[
        "report", "--from", DAY, "--to", DAY, "--queue", "pensions", "--json",
    ]))
    .expect("JSON");
    let rows = only_pensions["rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["queue"] == "pensions"),
        "--queue pensions: only pensions rows: {only_pensions:#}"
    );
    let text = String::from_utf8(cli.ok(&["report", "--from", DAY, "--to", DAY])).unwrap();
    assert!(
        text.contains("service level 30 s") && text.contains("MISSED"),
        "the text report marks missed targets:\n{text}"
    );

    // ---- errors are clear and end non-zero ----
    let e = cli.fails(&["export", "--from", "2026-12-01", "--to", DAY]);
    assert!(
        e.contains("--from 2026-12-01 is after --to 2026-11-30"),
        "{e}"
    );
    let e = cli.fails(&["report", "--from", "30/11/2026", "--to", DAY]);
    assert!(e.contains("--from") && e.contains("YYYY-MM-DD"), "{e}");
    let e = cli.fails(&["export", "--from", DAY, "--to", DAY, "--separator", "|"]);
    assert!(e.contains("separator"), "{e}");
    let nowhere = dir.subdir("no-store");
    let e = Cli {
        data: nowhere,
        ..cli.clone()
    }
    .fails(&["export", "--from", DAY, "--to", DAY]);
    assert!(e.contains("no store at"), "{e}");

    // ---- the web side, with tokens ----
    let mut sup = Cti::connect(verde.http);
    let sup_token = Cti::token_of(&sup.login(SUP.0, SUP.1));
    let mut agent = Cti::connect(verde.http);
    let agent_token = Cti::token_of(&agent.login(AGENT.0, AGENT.1));
    let api = format!("/api/reports?from={DAY}&to={DAY}");
    let csv_api = format!("/api/export.csv?from={DAY}&to={DAY}&separator=%3B");
    for path in [&api, &csv_api] {
        let r = verde.get_with(path, None);
        assert_eq!(r.status, 401, "GET {path} without a token: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "401 names the scheme: {:?}",
            r.headers
        );
        let r = verde.get_with(path, Some("0123abcd"));
        assert_eq!(
            r.status,
            401,
            "GET {path} with an unknown token: {}",
            r.text()
        );
        let r = verde.get_with(path, Some(&agent_token));
        assert_eq!(
            r.status,
            403,
            "GET {path} with an agent's token: {}",
            r.text()
        );
    }
    let r = verde.get_with(&api, Some(&sup_token));
    assert_eq!(r.status, 200, "{}", r.text());
    let web_report = r.json().expect("JSON");
    assert_eq!(
        without_as_of(web_report),
        without_as_of(report.clone()),
        "/api/reports and `verde report --json` disagree"
    );
    let r = verde.get_with(&format!("{api}&by=week"), Some(&sup_token));
    assert_eq!(r.status, 400, "{}", r.text());

    let r = verde.get_with(&csv_api, Some(&sup_token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/csv; charset=utf-8")),
        "{:?}",
        r.headers
    );
    assert!(
        r.header("content-disposition")
            .is_some_and(|c| c.contains(&format!("verde-calls_{DAY}_{DAY}.csv"))),
        "{:?}",
        r.headers
    );
    assert!(
        r.body == csv_semi,
        "/api/export.csv?separator=; and `verde export --separator ';'` differ:\n{}\n---\n{}",
        r.text(),
        String::from_utf8_lossy(&csv_semi)
    );
    let r = verde.get_with(
        &format!("/api/export.csv?from={DAY}&to={DAY}&log=queue"),
        Some(&sup_token),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.body == csv_log,
        "the queue log from the web and from the command line differ:\n{}\n---\n{}",
        r.text(),
        String::from_utf8_lossy(&csv_log)
    );
    let page = verde.get("/reports");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("/static/reports.js"),
        "{}",
        tail(&page.text(), 20)
    );
    drop(agent);
    drop(sup);
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmm` in UTC (for [`instant_ns`]).
fn iso_utc(ms: i128) -> String {
    let secs = ms.div_euclid(1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}
