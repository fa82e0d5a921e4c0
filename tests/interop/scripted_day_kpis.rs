//! A scripted day (issue 6): seven real calls with known waits, then every KPI of
//! `docs/kpi.md` the day exercises, checked against a hand computation written here, and the
//! exact call records and CSV rows of each call.
//!
//! verde's wall clock starts on Tuesday 1 December 2026 at 10:00 in Rome (`--wall-clock`); the
//! KPI targets are the documented defaults (`short_abandon_s` 15, SL base
//! `answered-and-abandoned`). Flows: `tests/fixtures/flows-scripted-day/` — 800600001 plays
//! "please hold" as early media (2.0 s: the IVR answer time), answers, plays "connecting you"
//! (3.1 s: the IVR navigation time) and queues in `pensions`, with a two-question survey after
//! the agent; 800600002 answers and queues straight to `pin` (nobody serves it; its first
//! announcement, 2 s in, offers a callback); 800600003 is a desk open Mon-Fri 14-18 (closed now). Agents: a1 (pensions; its baresip
//! phone rings until the test accepts; its bar connected for the transfer) and a2 (benefits;
//! auto-answer). Wrap-up 0 s. No `outbound.uri`: the callback is stored, not dialed.
//!
//! Every caller is a SIPp "released" caller: each key or hang-up waits for the test, which
//! times it from verde's log. Times below are from the moment each caller entered its queue.
//!
//! | call | number | script | record |
//! |---|---|---|---|
//! | A | pensions | a1 accepts at 3 s; talks; a1 hangs up; survey 6, 6 | answered-agent, wait ~3 s |
//! | B | pensions | waits behind A; a1 hangs up A at B+35 s, accepts B at B+37 s; talks; a1 hangs up after D left; survey 2, 3 | answered-agent, wait ~37 s (over 30, within 45) |
//! | C | pensions | hangs up at 5 s | abandon, short (5 < 15) |
//! | D | pensions | hangs up at 40 s | abandon, not short |
//! | E | pin | presses 1 at the offer, 1 to confirm its number | exit callback, callback-requested |
//! | F | afternoon desk | hears the closed message | IVR, schedule=closed |
//! | G | pensions | calls 32.6 s after B entered, so it joins the line behind B and D while D still waits; a1 accepts 1 s after the offer, talks 2 s and transfers it blind from its bar to `benefits`; a2 answers; G hangs up 2 s later | answered-agent, wait < 10 s, 2 legs, 1 transfer |
//!
//! The hand computation (every arriving call counts on 2026-12-01, all in hour 10):
//!
//! - arriving 7; classes: queued 6 (A B C D E G), IVR 1 (F): ivr_handled 1/7, to_queue 6/7,
//!   transferred_out 0/7, out_of_hours 1, ivr_abandoned 0, rejected 0.
//! - callback offered 1/7 (E heard the offer; only `pin` offers callbacks), requested 1/7,
//!   accepted 1/1. Answered by an agent 3/7 (A B G).
//! - all queues: offered 6, answered 3, abandoned 2, short 1 (C), exits {callback: 1} (E).
//!   answered_of_queued 3/6 (target 0.90: missed). SL base = answered + abandoned - short
//!   = 3 + 2 - 1 = 4 (E's exit is in neither part). SL 30 s = A, G = 2/4 (target 0.80:
//!   missed); SL 60 s = A, B, G = 3/4 (0.90: missed). Abandon rate = (2 - 1) / (6 - 1) = 1/5
//!   (at most 0.05: missed). Transfers 1.
//! - pensions: offered 5, answered 3, abandoned 2, short 1, no exits; answered 3/5; SL base 4,
//!   SL30 2/4, SL60 3/4; abandon rate 1/4; talk 3 conversations (a1 with A, B, G).
//!   pin: offered 1, exit callback; answered 0/1 (missed); SL 0/0 (not judged); abandon
//!   0/1. benefits: no call entered it first (offered 0) but a2's talk with G counts there: 1
//!   conversation. All queues: 4 conversations, hold 0 in each.
//! - averages (from the records' own instants, each checked against the scripted times):
//!   ASA = (wait A + wait B + wait G) / 3, max = wait B; hold time (tenders) = arrival to the
//!   first agent's answer of A, B, G; talk = each leg's answer to end; IVR answer = answer -
//!   arrival over all 7 (2.0 s for the 5 pensions callers, ~0 for E and F); IVR navigation =
//!   queue entry - answer over the 6 queued (3.1 s for pensions, ~0 for E). Hold time is thus
//!   ASA + 5.1 s per answered call: the two cannot be confused.
//! - survey (pensions, by the call's first queue): 2 surveys, answers 6 6 2 3: positive (5-6)
//!   2/4 (target 0.70: missed), negative (1-2) 1/4, average 17/4 = 4.25; satisfaction 6, 2:
//!   positive 1/2, negative 1/2, average 4; resolved 6, 3: positive 1/2, negative 0/2, 4.5.
//! - callbacks (pin): as of 12:00 the request (made at ~10:00, plain time: the pin flow has no
//!   schedule) is still within its 8 working hours: requested 1, open 1, on time 0/0. As of
//!   the next day at 12:00 it is judged late: on time 0/1 (missed), by deadline 0/1, open 0.
//! - charts: waits 0-10 s: answered 2 (A G), abandoned 1 (C), exited 1 (E); 30-60 s:
//!   answered 1 (B), abandoned 1 (D); hour 10: offered 6, answered 3, abandoned 2, SL30 2/4.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use verde_interop::acd::{
    agent_voice, parse_log_time, wait_agent_registered, write_config, LogLine,
};
use verde_interop::baresip::{AgentAccount, AnswerMode, Baresip};
use verde_interop::callbacks::{digit_prompts, ms_of};
use verde_interop::cti::{Cti, WAIT};
use verde_interop::flows;
use verde_interop::sipp::{Sipp, SippOutcome, SippRun};
use verde_interop::survey::{
    dtmf_stream_pcaps, released_caller_scenario, sleep_until, Releaser, Step,
};
use verde_interop::verde::{field, record_path, verde_bin, Verde, VerdeOptions};
use verde_interop::{fixtures_dir, require_private_netns, TestDir};

const DAY: &str = "2026-12-01";
const DAY_START: &str = "2026-12-01T10:00:00+01:00";
/// The reports' "now": the same day at noon, then the next day at noon.
const AS_OF_NOON: &str = "2026-12-01T12:00:00+01:00";
const AS_OF_NEXT_DAY: &str = "2026-12-02T12:00:00+01:00";

const PENSIONS_DID: &str = "800600001";
const PIN_DID: &str = "800600002";
const DESK_DID: &str = "800600003";

const A1: (&str, &str) = ("a1", "pw-a1");
const A2: (&str, &str) = ("a2", "pw-a2");

const CALLER_A: &str = "0611000001";
const CALLER_B: &str = "0611000002";
const CALLER_C: &str = "0611000003";
const CALLER_D: &str = "0611000004";
const CALLER_E: &str = "0611000005";
const CALLER_F: &str = "0611000006";
const CALLER_G: &str = "0611000007";

/// The script, in seconds from the caller's queue entry (verde's `enqueued` log line).
const A_ANSWER_S: f64 = 3.0;
const A_AGENT_HANGS_UP_AFTER_B_ENTERED_S: f64 = 35.0;
const B_ANSWER_S: f64 = 37.0;
const C_ABANDON_S: f64 = 5.0;
/// G calls this long after B entered: after its 5 s of prompts it joins the line after B's
/// answer (37 s) and before D leaves (40 s after D entered, D having entered after B).
const G_CALLS_AFTER_B_ENTERED_S: f64 = 32.6;
/// The spacing of the first arrivals (A, B, C, D).
const ARRIVAL_GAP: Duration = Duration::from_millis(300);
const D_ABANDON_S: f64 = 40.0;
/// a1 accepts G this long after G's offer rings, talks this long before transferring; G talks
/// with a2 this long before hanging up.
const G_RING_S: f64 = 1.0;
const G_TALK_A1_S: f64 = 2.0;
const G_TALK_A2_S: f64 = 2.0;
/// A survey key is pressed this long after its question started (the survey takes keys while
/// a question plays).
const SURVEY_KEY_S: f64 = 1.5;
/// The pin queue's first announcement (which carries the callback offer).
const PIN_FIRST_ANNOUNCE_S: u64 = 2;

/// What a recorded duration may differ from the scripted one: the recorded instants are taken
/// by verde a little after its log line (or our action) and SIP adds a round trip on loopback;
/// the upper bound allows for a loaded two-core machine.
const EARLY: f64 = 0.3;
const LATE: f64 = 1.5;

const SURVEY_A: [(&str, u8); 2] = [("satisfaction", 6), ("resolved", 6)];
const SURVEY_B: [(&str, u8); 2] = [("satisfaction", 2), ("resolved", 3)];

// ---- time --------------------------------------------------------------------------------

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// An RFC 3339 instant as nanoseconds since the epoch (stored instants carry nanoseconds).
fn ns(s: &str) -> i128 {
    let bad = || -> ! { panic!("{s:?} is not an RFC 3339 instant") };
    let (date, rest) = s.split_once('T').unwrap_or_else(|| bad());
    let (time, offset_s) = match rest.strip_suffix('Z') {
        Some(t) => (t, 0i64),
        None if rest.len() > 6 => {
            let (t, off) = rest.split_at(rest.len() - 6);
            let sign = match &off[..1] {
                "+" => 1,
                "-" => -1,
                _ => bad(),
            };
            let h: i64 = off[1..3].parse().unwrap_or_else(|_| bad());
            let m: i64 = off[4..6].parse().unwrap_or_else(|_| bad());
            (t, sign * (h * 3600 + m * 60))
        }
        None => bad(),
    };
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().unwrap_or_else(|_| bad()))
        .collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().unwrap_or_else(|_| bad()))
        .collect();
    if d.len() != 3 || t.len() != 3 || frac.len() > 9 {
        bad();
    }
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().unwrap_or_else(|_| bad())
    };
    let secs =
        days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset_s;
    secs as i128 * 1_000_000_000 + nanos
}

/// Whole milliseconds from `a` to `b`, never negative: how the report counts a duration
/// (chrono's `num_milliseconds` of the difference, which truncates).
fn ms(a: &str, b: &str) -> u64 {
    ((ns(b) - ns(a)) / 1_000_000).max(0) as u64
}

fn secs_of(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Fails unless the recorded duration is the scripted one within [-EARLY, +LATE] s.
fn assert_scripted(what: &str, recorded_ms: u64, scripted_s: f64) {
    let got = secs_of(recorded_ms);
    assert!(
        got >= scripted_s - EARLY && got <= scripted_s + LATE,
        "{what}: the record says {got:.3} s, the script {scripted_s:.3} s \
         (allowed {EARLY} s earlier, {LATE} s later)"
    );
}

// ---- verde's log, read as it grows ---------------------------------------------------------

/// Reads verde's log incrementally (each poll reads only what was appended), so that several
/// callers' threads can wait on it without rereading the whole file every few milliseconds.
struct LogCursor {
    path: PathBuf,
    offset: u64,
    partial: String,
    lines: Vec<LogLine>,
}

impl LogCursor {
    fn new(verde: &Verde) -> LogCursor {
        LogCursor {
            path: verde.log_path().to_path_buf(),
            offset: 0,
            partial: String::new(),
            lines: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            if let Some(time) = line.split_whitespace().next().and_then(parse_log_time) {
                self.lines.push(LogLine {
                    time,
                    text: line.trim_end().to_string(),
                });
            }
        }
    }

    fn find(&self, call_id: &str, needles: &[&str], after: f64) -> Option<LogLine> {
        let tag = format!("call_id={call_id}}}");
        self.lines
            .iter()
            .find(|l| {
                l.time > after
                    && l.text.contains(&tag)
                    && needles.iter().all(|n| l.text.contains(n))
            })
            .cloned()
    }

    /// Waits for the first line of call `call_id` logged after `after` (epoch seconds) that
    /// holds every needle; `what` names the wait in the failure, which shows the call's lines.
    fn wait_after(
        &mut self,
        call_id: &str,
        needles: &[&str],
        after: f64,
        what: &str,
        timeout: Duration,
    ) -> LogLine {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(l) = self.find(call_id, needles, after) {
                return l;
            }
            if Instant::now() >= deadline {
                let tag = format!("call_id={call_id}}}");
                let mine: Vec<&str> = self
                    .lines
                    .iter()
                    .filter(|l| l.text.contains(&tag))
                    .map(|l| l.text.as_str())
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what} (a log line of call \
                     {call_id} with {needles:?}); the call's lines:\n{}",
                    mine.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(&mut self, call_id: &str, needles: &[&str], what: &str, timeout: Duration) -> LogLine {
        self.wait_after(call_id, needles, 0.0, what, timeout)
    }
}

// ---- callers -------------------------------------------------------------------------------

/// A released SIPp caller of `did` (see `verde_interop::survey`), once verde has its INVITE.
fn call(
    dir: &TestDir,
    verde: &Verde,
    did: &str,
    caller: &str,
    steps: &[Step],
) -> (SippRun, Releaser) {
    let scen = released_caller_scenario(dir, caller, steps, 20_000);
    let run = Sipp::new(&scen, verde.sip)
        .service(did)
        .timeout(Duration::from_secs(150))
        .spawn(dir);
    let rel = Releaser::new(&run);
    (run, rel)
}

/// Waits until verde enqueued `call_id` (the caller `caller`) in `queue`; returns the
/// `enqueued` line (its time is the script's origin for that caller).
fn enqueued(log: &mut LogCursor, call_id: &str, caller: &str, queue: &str) -> LogLine {
    log.wait(
        call_id,
        &["enqueued", &format!("queue={queue}")],
        &format!("caller {caller} to enter {queue}"),
        Duration::from_secs(20),
    )
}

/// A caller answering the two survey questions with `keys` once the agent has hung up.
fn answer_survey(
    mut log: LogCursor,
    mut rel: Releaser,
    run: SippRun,
    keys: [u8; 2],
) -> SippOutcome {
    let id = rel.call_id().to_string();
    let survey = log.wait(
        &id,
        &["ivr node node=survey"],
        "the survey after the agent hung up",
        Duration::from_secs(90),
    );
    let mut at = survey.time;
    for key in keys {
        sleep_until(at + SURVEY_KEY_S);
        rel.release();
        at = log
            .wait_after(
                &id,
                &[&format!("dtmf digit={key}")],
                at,
                &format!("verde to receive survey key {key}"),
                Duration::from_secs(5),
            )
            .time;
    }
    log.wait(
        &id,
        &["flow hangs up", "reason=survey_done"],
        "the flow's hangup after the survey's thanks",
        Duration::from_secs(15),
    );
    run.wait()
}

/// A caller who hangs up `after_s` after entering the queue.
fn abandon(mut rel: Releaser, run: SippRun, entered: f64, after_s: f64) -> SippOutcome {
    sleep_until(entered + after_s);
    rel.release();
    run.wait()
}

// ---- the report ----------------------------------------------------------------------------

/// `verde [--wall-clock AS_OF] ARGS` on the test's data, flows and config.
struct Cli {
    config: PathBuf,
    data: PathBuf,
    flows: PathBuf,
    sounds: PathBuf,
}

impl Cli {
    fn ok(&self, as_of: Option<&str>, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new(verde_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data)
            .arg("--flows")
            .arg(&self.flows)
            .arg("--sounds")
            .arg(&self.sounds);
        if let Some(t) = as_of {
            cmd.args(["--wall-clock", t]);
        }
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run verde {args:?}: {e}"));
        assert!(
            out.status.success(),
            "verde {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn report(&self, as_of: &str, queue: Option<&str>) -> Value {
        let mut args = vec!["report", "--from", DAY, "--to", DAY, "--json"];
        if let Some(q) = queue {
            args.extend(["--queue", q]);
        }
        serde_json::from_slice(&self.ok(Some(as_of), &args)).expect("report --json is JSON")
    }
}

fn row<'a>(
    report: &'a Value,
    bucket: &str,
    queue: Option<&str>,
    channel: Option<&str>,
) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("report without rows: {report:#}"))
        .iter()
        .find(|r| {
            r["bucket"] == bucket
                && r["queue"].as_str() == queue
                && r["channel"].as_str() == channel
        })
        .unwrap_or_else(|| panic!("no row {bucket}/{queue:?}/{channel:?} in {report:#}"))
}

/// A share as the report gives it: exact `num`/`den`, the float, the target and its verdict.
fn check_ratio(v: &Value, what: &str, num: u64, den: u64, target: Option<Value>, missed: bool) {
    let value = (den > 0).then(|| num as f64 / den as f64);
    assert_eq!(
        (v["num"].as_u64(), v["den"].as_u64()),
        (Some(num), Some(den)),
        "{what}: num/den in {v}"
    );
    match value {
        Some(x) => assert!(
            v["value"].as_f64().is_some_and(|y| (x - y).abs() < 1e-12),
            "{what}: value {x} in {v}"
        ),
        None => assert!(v["value"].is_null(), "{what}: no value when den is 0: {v}"),
    }
    assert_eq!(v.get("target").cloned(), target, "{what}: target in {v}");
    assert_eq!(v["missed"], missed, "{what}: missed in {v}");
}

/// An average as the report gives it, from the durations (ms) the hand computation counts.
fn check_mean(v: &Value, what: &str, durations: &[u64], target: Option<Value>, missed: bool) {
    let count = durations.len() as u64;
    let total: u64 = durations.iter().sum();
    assert_eq!(v["count"], count, "{what}: count in {v}");
    assert_eq!(
        v["total_ms"], total,
        "{what}: total_ms in {v} (durations {durations:?})"
    );
    if count == 0 {
        assert!(v["avg_s"].is_null() && v["max_s"].is_null(), "{what}: {v}");
    } else {
        let avg = total as f64 / count as f64 / 1000.0;
        let max = *durations.iter().max().unwrap() as f64 / 1000.0;
        assert!(
            v["avg_s"].as_f64().is_some_and(|x| (x - avg).abs() < 1e-9),
            "{what}: avg_s {avg} in {v}"
        );
        assert!(
            v["max_s"].as_f64().is_some_and(|x| (x - max).abs() < 1e-9),
            "{what}: max_s {max} in {v}"
        );
    }
    assert_eq!(v.get("target").cloned(), target, "{what}: target in {v}");
    assert_eq!(v["missed"], missed, "{what}: missed in {v}");
}

fn at_least(x: f64) -> Option<Value> {
    Some(json!({ "at_least": x }))
}

fn at_most(x: f64) -> Option<Value> {
    Some(json!({ "at_most": x }))
}

/// The counts of one queue row the hand computation fixes.
struct QueueCounts {
    offered: u64,
    answered: u64,
    abandoned: u64,
    short: u64,
    exits: Value,
    within_30: u64,
    within_60: u64,
    transfers: u64,
}

fn check_queue_counts(q: &Value, what: &str, c: &QueueCounts) {
    let sl_base = c.answered + c.abandoned - c.short;
    assert_eq!(q["offered"], c.offered, "{what}: offered in {q:#}");
    assert_eq!(q["answered"], c.answered, "{what}: answered in {q:#}");
    assert_eq!(q["abandoned"], c.abandoned, "{what}: abandoned in {q:#}");
    assert_eq!(
        q["abandoned_short"], c.short,
        "{what}: abandoned_short in {q:#}"
    );
    assert_eq!(q["exits"], c.exits, "{what}: exits in {q:#}");
    assert_eq!(q["transfers"], c.transfers, "{what}: transfers in {q:#}");
    let missed = |num: u64, den: u64, t: f64, at_least: bool| {
        den > 0 && {
            let v = num as f64 / den as f64;
            if at_least {
                v < t
            } else {
                v > t
            }
        }
    };
    check_ratio(
        &q["answered_of_queued"],
        &format!("{what}: answered of queued"),
        c.answered,
        c.offered,
        at_least(0.9),
        missed(c.answered, c.offered, 0.9, true),
    );
    check_ratio(
        &q["service_level_30s"],
        &format!("{what}: service level 30 s"),
        c.within_30,
        sl_base,
        at_least(0.8),
        missed(c.within_30, sl_base, 0.8, true),
    );
    check_ratio(
        &q["service_level_60s"],
        &format!("{what}: service level 60 s"),
        c.within_60,
        sl_base,
        at_least(0.9),
        missed(c.within_60, sl_base, 0.9, true),
    );
    check_ratio(
        &q["abandon_rate"],
        &format!("{what}: abandon rate"),
        c.abandoned - c.short,
        c.offered - c.short,
        at_most(0.05),
        missed(c.abandoned - c.short, c.offered - c.short, 0.05, false),
    );
}

fn check_scores(v: &Value, what: &str, scores: &[u8], target: bool) {
    let n = scores.len() as u64;
    let pos = scores.iter().filter(|s| **s >= 5).count() as u64;
    let neg = scores.iter().filter(|s| **s <= 2).count() as u64;
    assert_eq!(v["answers"], n, "{what}: answers in {v}");
    let pos_missed = target && n > 0 && (pos as f64 / n as f64) < 0.7;
    check_ratio(
        &v["positive"],
        &format!("{what}: positive"),
        pos,
        n,
        if target { at_least(0.7) } else { None },
        pos_missed,
    );
    check_ratio(
        &v["negative"],
        &format!("{what}: negative"),
        neg,
        n,
        None,
        false,
    );
    let sum: u64 = scores.iter().map(|s| *s as u64).sum();
    assert!(
        v["average"]
            .as_f64()
            .is_some_and(|a| (a - sum as f64 / n as f64).abs() < 1e-12),
        "{what}: average {} in {v}",
        sum as f64 / n as f64
    );
}

/// A row minus its `channel`, to compare the pstn rows with the all-channel ones.
fn without_channel(r: &Value) -> Value {
    let mut r = r.clone();
    r.as_object_mut().expect("row object").remove("channel");
    r
}

// ---- the record ----------------------------------------------------------------------------

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn offers(acd: &Value) -> Vec<(String, String, String)> {
    acd["offers"]
        .as_array()
        .unwrap_or_else(|| panic!("acd.offers is not a list: {acd:#}"))
        .iter()
        .map(|o| {
            (
                s(&o["agent"], "offer agent").to_string(),
                s(&o["queue"], "offer queue").to_string(),
                s(&o["outcome"], "offer outcome").to_string(),
            )
        })
        .collect()
}

fn legs(acd: &Value) -> Vec<(String, String, u64, u64)> {
    acd["legs"]
        .as_array()
        .unwrap_or_else(|| panic!("acd.legs is not a list: {acd:#}"))
        .iter()
        .map(|l| {
            (
                s(&l["agent"], "leg agent").to_string(),
                s(&l["queue"], "leg queue").to_string(),
                ms(
                    s(&l["answered_at"], "leg answered_at"),
                    s(&l["ended_at"], "leg ended_at"),
                ),
                l["hold_ms"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("leg hold_ms: {l}")),
            )
        })
        .collect()
}

fn owned(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

fn survey_json(answers: &[(&str, u8)]) -> Value {
    Value::Array(
        answers
            .iter()
            .map(|(q, s)| json!({"question": q, "score": s}))
            .collect(),
    )
}

/// Checks what every record shares, and the fields that must be exact for this call.
#[allow(clippy::too_many_arguments)]
fn check_record(
    r: &Value,
    who: &str,
    caller: &str,
    did: &str,
    disposition: &str,
    hangup_by: &str,
    outcome: Option<&str>,
    path: &[&str],
    dtmf: &str,
    survey: &[(&str, u8)],
) {
    let ctx = format!("call {who}: record {r:#}");
    assert_eq!(field(r, "caller"), caller, "{ctx}");
    assert_eq!(field(r, "did"), did, "{ctx}");
    assert_eq!(field(r, "channel"), "pstn", "{ctx}");
    assert_eq!(field(r, "trunk"), "local", "{ctx}");
    assert_eq!(field(r, "disposition"), disposition, "{ctx}");
    assert_eq!(field(r, "hangup_by"), hangup_by, "{ctx}");
    if let Some(outcome) = outcome {
        assert_eq!(field(r, "outcome"), outcome, "{ctx}");
    }
    assert_eq!(record_path(r), path, "{ctx}");
    assert_eq!(field(r, "dtmf"), dtmf, "{ctx}");
    // An empty list is left out of the stored JSON.
    assert_eq!(
        r.get("survey").cloned().unwrap_or(json!([])),
        survey_json(survey),
        "{ctx}"
    );
    assert!(r["sip_status"].is_null(), "{ctx}");
    assert!(
        r.get("recordings")
            .is_none_or(|v| v.is_null() || v == &json!([])),
        "nothing is recorded: {ctx}"
    );
    assert!(
        r["answered_at"].is_string(),
        "every call of the day was answered by verde: {ctx}"
    );
    let day = s(&r["started_at"], "started_at");
    assert!(
        ns(day) >= ns(DAY_START) && ns(day) < ns("2026-12-01T11:00:00+01:00"),
        "call {who} arrived at {day}, not in hour 10 of {DAY} (wall clock from {DAY_START})"
    );
}

// ---- the test ------------------------------------------------------------------------------

#[test]
fn a_scripted_day_gives_the_hand_computed_kpis() {
    require_private_netns();
    let t0 = Instant::now();
    let dir = TestDir::new("scripted_day_kpis");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: {}, name: Anna, password: {}, queues: [pensions] }}\n\
             \x20 - {{ id: {}, name: Bruno, password: {}, queues: [benefits] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, wrap_up: 0s, ring_timeout: 20s }}\n\
             \x20 - {{ name: benefits, wrap_up: 0s }}\n\
             \x20 - name: pin\n\
             \x20   announce: {{ first_delay: {PIN_FIRST_ANNOUNCE_S}s, frequency: 60s }}\n\
             \x20   callback: {{ enabled: true, offer_when_wait_over: 1s, \
             offer_when_len_over: null, offer_key: '1' }}\n",
            A1.0, A1.1, A2.0, A2.1
        ),
    );
    let flows = fixtures_dir().join("flows-scripted-day");
    let opts = VerdeOptions {
        config: Some(config.clone()),
        flows: flows.clone(),
        extra_args: vec!["--wall-clock".into(), DAY_START.into()],
        ..Default::default()
    };
    let sounds = opts.sounds.clone();
    let verde = Verde::start(&dir, opts);
    let mut log = LogCursor::new(&verde);

    // ---- the agents: a1's phone rings until the test accepts; a2's answers by itself ----
    let voice = agent_voice(&dir, 1000.0, 200.0);
    let mut a1_phone = Baresip::start_agent(
        &dir,
        "a1",
        &AgentAccount::new(A1.0, A1.1, verde.sip).answer(AnswerMode::Manual),
        &voice,
    );
    let mut a2_phone = Baresip::start_agent(
        &dir,
        "a2",
        &AgentAccount::new(A2.0, A2.1, verde.sip).answer(AnswerMode::Auto),
        &voice,
    );
    let mut bars = Vec::new();
    for (id, pw) in [A1, A2] {
        wait_agent_registered(&verde, id, Duration::from_secs(10));
        let mut bar = Cti::connect(verde.http);
        bar.login(id, pw);
        bar.cmd_ok(json!({"type": "set_state", "state": "ready"}));
        bar.wait_event("agent_state", WAIT, |m| m["state"] == "ready");
        bars.push(bar);
    }
    let mut a2_bar = bars.pop().expect("a2's bar");
    let mut a1_bar = bars.pop().expect("a1's bar");
    let setup_s = t0.elapsed().as_secs_f64();

    // One RTP stream's worth of keys, shared out: A 6 6, B 2 3, E 1 1.
    let keys = dtmf_stream_pcaps(&dir, "662311");
    let key = |i: usize| Step::Key(keys[i].clone());

    std::thread::scope(|scope| {
        // ---- E and F run by themselves from the start ----
        let (e_run, e_rel) = call(&dir, &verde, PIN_DID, CALLER_E, &[key(4), key(5)]);
        let (f_run, f_rel) = call(&dir, &verde, DESK_DID, CALLER_F, &[]);
        let (e_id, f_id) = (e_rel.call_id().to_string(), f_rel.call_id().to_string());

        let mut e_log = LogCursor::new(&verde);
        let e = scope.spawn(move || {
            let mut rel = e_rel;
            let id = rel.call_id().to_string();
            e_log.wait(
                &id,
                &["enqueued", "queue=pin"],
                "E to enter pin",
                Duration::from_secs(10),
            );
            let offer = e_log.wait(
                &id,
                &["queue announcement"],
                "pin's first announcement, with the callback offer",
                Duration::from_secs(15),
            );
            sleep_until(offer.time + 1.0);
            rel.release(); // 1: call me back
            e_log.wait(
                &id,
                &["caller takes the callback offer"],
                "E's acceptance of the offer",
                Duration::from_secs(5),
            );
            let node = e_log.wait(
                &id,
                &["ivr node node=offer_callback_pin"],
                "the callback node",
                Duration::from_secs(5),
            );
            // 1 to confirm, 1.5 s into "to confirm press 1", after the number read back.
            let digits = digit_prompts(CALLER_E);
            let digits: Vec<&str> = digits.iter().map(String::as_str).collect();
            let read_back = ms_of(&["callback_confirm_number_before"]) + ms_of(&digits);
            sleep_until(node.time + read_back as f64 / 1000.0 + 1.5);
            rel.release();
            e_log.wait(
                &id,
                &["callback booked"],
                "E's callback to be stored",
                Duration::from_secs(10),
            );
            e_run.wait()
        });
        let f = scope.spawn(move || {
            let _keep = f_rel;
            f_run.wait()
        });

        // ---- A, B, C, D call pensions in this order, ARRIVAL_GAP apart ----
        // Each hears the same prompts before the queue, so they join the line in the order they
        // called; the gap is the script's spacing of arrivals, not a wait for anything.
        let mut arrivals = Vec::new();
        for (caller, steps) in [
            (CALLER_A, vec![key(0), key(1)]),
            (CALLER_B, vec![key(2), key(3)]),
            (CALLER_C, vec![Step::HangUp]),
            (CALLER_D, vec![Step::HangUp]),
        ] {
            if !arrivals.is_empty() {
                std::thread::sleep(ARRIVAL_GAP);
            }
            arrivals.push(call(&dir, &verde, PENSIONS_DID, caller, &steps));
        }
        let mut enq: Vec<LogLine> = arrivals
            .iter()
            .zip([CALLER_A, CALLER_B, CALLER_C, CALLER_D])
            .map(|((_, rel), caller)| enqueued(&mut log, rel.call_id(), caller, "pensions"))
            .collect();
        assert!(
            enq.windows(2).all(|w| w[0].time < w[1].time),
            "A, B, C and D must join pensions in the order they called: {enq:#?}"
        );
        a1_phone
            .ctrl
            .wait_event("CALL_INCOMING", Duration::from_secs(10));
        let d_enq = enq.pop().expect("D");
        let c_enq = enq.pop().expect("C");
        let b_enq = enq.pop().expect("B");
        let a_enq = enq.pop().expect("A");
        let (d_run, d_rel) = arrivals.pop().expect("D");
        let (c_run, c_rel) = arrivals.pop().expect("C");
        let (b_run, b_rel) = arrivals.pop().expect("B");
        let (a_run, a_rel) = arrivals.pop().expect("A");
        let ids: BTreeMap<char, String> = [
            ('A', a_rel.call_id()),
            ('B', b_rel.call_id()),
            ('C', c_rel.call_id()),
            ('D', d_rel.call_id()),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert!(
            d_enq.time < a_enq.time + A_ANSWER_S,
            "A, B, C and D must all wait in line before a1 answers A: D entered {:.2} s after A",
            d_enq.time - a_enq.time
        );

        // ---- the callers' own scripts, each in its thread ----
        let (c_time, d_time) = (c_enq.time, d_enq.time);
        let c = scope.spawn(move || abandon(c_rel, c_run, c_time, C_ABANDON_S));
        let d = scope.spawn(move || abandon(d_rel, d_run, d_time, D_ABANDON_S));
        let a = scope.spawn({
            let l = LogCursor::new(&verde);
            move || answer_survey(l, a_rel, a_run, [SURVEY_A[0].1, SURVEY_A[1].1])
        });
        let b = scope.spawn({
            let l = LogCursor::new(&verde);
            move || answer_survey(l, b_rel, b_run, [SURVEY_B[0].1, SURVEY_B[1].1])
        });

        // ---- a1 and the queue: A at 3 s ----
        sleep_until(a_enq.time + A_ANSWER_S);
        a1_phone.ctrl.command("accept", "");
        let a_accepted = epoch_now();
        a1_phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        log.wait(
            &ids[&'A'],
            &["agent answered; bridging", "agent=a1"],
            "a1 to talk with A",
            WAIT,
        );

        // G calls so as to join the line after B, while D still waits.
        sleep_until(b_enq.time + G_CALLS_AFTER_B_ENTERED_S);
        let (g_run, mut g_rel) = call(&dir, &verde, PENSIONS_DID, CALLER_G, &[Step::HangUp]);
        let g_id = g_rel.call_id().to_string();

        // A talks until B has waited 35 s; then B's offer rings a1, answered at 37 s.
        sleep_until(b_enq.time + A_AGENT_HANGS_UP_AFTER_B_ENTERED_S);
        a1_phone.ctrl.hangup();
        let a_hung_up = epoch_now();
        a1_phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(10));
        log.wait(
            &ids[&'A'],
            &["agent hung up"],
            "verde to see a1 hang up on A",
            WAIT,
        );
        a1_phone
            .ctrl
            .wait_event("CALL_INCOMING", Duration::from_secs(10));
        sleep_until(b_enq.time + B_ANSWER_S);
        a1_phone.ctrl.command("accept", "");
        let b_accepted = epoch_now();
        a1_phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        log.wait(
            &ids[&'B'],
            &["agent answered; bridging", "agent=a1"],
            "a1 to talk with B",
            WAIT,
        );

        let g_enq = enqueued(&mut log, &g_id, CALLER_G, "pensions");
        assert!(
            g_enq.time > b_enq.time && g_enq.time < d_enq.time + D_ABANDON_S,
            "G must join the line while D still waits: G entered {:.2} s after D",
            g_enq.time - d_enq.time
        );
        // a1 ends B only once D has left, so the next in line is G.
        log.wait(
            &ids[&'D'],
            &["caller hung up"],
            "D to abandon at 40 s",
            Duration::from_secs(D_ABANDON_S as u64 + 10),
        );
        a1_phone.ctrl.hangup();
        let b_hung_up = epoch_now();
        a1_phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(10));
        log.wait(
            &ids[&'B'],
            &["agent hung up"],
            "verde to see a1 hang up on B",
            WAIT,
        );

        // ---- G: offered to a1, answered, transferred blind to benefits from the bar ----
        a1_phone
            .ctrl
            .wait_event("CALL_INCOMING", Duration::from_secs(10));
        let g_offered = epoch_now();
        let offer = a1_bar.wait_event("call_offered", WAIT, |m| m["caller"] == CALLER_G);
        let g_call = offer["call"]
            .as_u64()
            .expect("numeric call id in call_offered");
        assert_eq!(offer["queue"], "pensions", "{offer}");
        sleep_until(g_offered + G_RING_S);
        a1_phone.ctrl.command("accept", "");
        let g_accepted = epoch_now();
        a1_phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        a1_bar.wait_event("call_answered", WAIT, |m| m["call"] == g_call);
        log.wait(
            &g_id,
            &["agent answered; bridging", "agent=a1"],
            "a1 to talk with G",
            WAIT,
        );
        sleep_until(g_accepted + G_TALK_A1_S);
        a1_bar.cmd_ok(json!({"type": "transfer", "call": g_call, "mode": "blind",
                             "to": {"queue": "benefits"}}));
        let g_transferred = epoch_now();
        let moved = a1_bar.wait_event("call_transferred", WAIT, |m| m["call"] == g_call);
        assert_eq!(moved["to"], json!({"queue": "benefits"}), "{moved}");
        a1_phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(10));
        a2_phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        a2_bar.wait_event("call_answered", WAIT, |m| m["call"] == g_call);
        let a2_talks = log.wait(
            &g_id,
            &["agent answered; bridging", "agent=a2"],
            "a2 to talk with G after the transfer",
            WAIT,
        );
        sleep_until(a2_talks.time + G_TALK_A2_S);
        g_rel.release(); // G hangs up
        let g_hung_up = epoch_now();
        let g_out = g_run.wait();
        a2_phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(10));

        let outs: Vec<(char, SippOutcome)> = vec![
            ('A', a.join().expect("caller A's thread")),
            ('B', b.join().expect("caller B's thread")),
            ('C', c.join().expect("caller C's thread")),
            ('D', d.join().expect("caller D's thread")),
            ('E', e.join().expect("caller E's thread")),
            ('F', f.join().expect("caller F's thread")),
            ('G', g_out),
        ];
        for (who, out) in &outs {
            out.assert_success(&format!("caller {who}"));
        }
        let calls_s = t0.elapsed().as_secs_f64() - setup_s;

        // ---- the records ----------------------------------------------------------------------
        let mut ids = ids.clone();
        ids.insert('E', e_id.clone());
        ids.insert('F', f_id.clone());
        ids.insert('G', g_id.clone());
        let rec: BTreeMap<char, Value> = ids
            .iter()
            .map(|(k, id)| (*k, verde.wait_call_record(id, Duration::from_secs(10))))
            .collect();
        let acd = |k: char| field(&rec[&k], "acd");
        let wait_ms = |k: char| {
            acd(k)["queue_wait_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("call {k}: no acd.queue_wait_ms: {:#}", rec[&k]))
        };

        // A: answered at 3 s by a1, surveyed 6 6; verde hangs up after the thanks.
        check_record(
            &rec[&'A'],
            "A",
            CALLER_A,
            PENSIONS_DID,
            "answered-agent",
            "engine",
            Some("queue:pensions"),
            &[
                "greeting",
                "connecting",
                "q_pensions",
                "survey",
                "end_survey",
            ],
            "66",
            &SURVEY_A,
        );
        // B: answered at 37 s by a1, surveyed 2 3.
        check_record(
            &rec[&'B'],
            "B",
            CALLER_B,
            PENSIONS_DID,
            "answered-agent",
            "engine",
            Some("queue:pensions"),
            &[
                "greeting",
                "connecting",
                "q_pensions",
                "survey",
                "end_survey",
            ],
            "23",
            &SURVEY_B,
        );
        // C and D hung up in line.
        for (k, caller) in [('C', CALLER_C), ('D', CALLER_D)] {
            check_record(
                &rec[&k],
                &k.to_string(),
                caller,
                PENSIONS_DID,
                "abandoned-queue",
                "caller",
                Some("queue:pensions"),
                &["greeting", "connecting", "q_pensions"],
                "",
                &[],
            );
        }
        // E: took the offer, confirmed its number, was told it is booked and hung up on.
        check_record(
            &rec[&'E'],
            "E",
            CALLER_E,
            PIN_DID,
            "callback-requested",
            "engine",
            Some("callback:pin"),
            &[
                "q_pin",
                "offer_callback_pin",
                "callback_booked",
                "end_callback",
            ],
            "11",
            &[],
        );
        // F: the closed desk.
        check_record(
            &rec[&'F'],
            "F",
            CALLER_F,
            DESK_DID,
            "out-of-hours",
            "engine",
            Some("hangup:closed"),
            &["hours", "closed_message", "end_closed"],
            "",
            &[],
        );
        // G: a1 then a2 after the blind transfer; G hung up.
        check_record(
            &rec[&'G'],
            "G",
            CALLER_G,
            PENSIONS_DID,
            "answered-agent",
            "caller",
            None,
            &["greeting", "connecting", "q_pensions"],
            "",
            &[],
        );

        // The IVR sent G to pensions: the outcome is the IVR's last word, which the agent's
        // transfer to benefits does not rewrite (docs/kpi.md `ivr_outcome`, docs/flows.md).
        let g_outcome = s(field(&rec[&'G'], "outcome"), "outcome");
        assert_eq!(g_outcome, "queue:pensions", "G's outcome: {:#}", rec[&'G']);
        let vars = |k: char, name: &str| rec[&k]["variables"][name].as_str().map(str::to_string);
        assert_eq!(
            vars('F', "schedule").as_deref(),
            Some("closed"),
            "{:#}",
            rec[&'F']
        );
        assert!(
            rec[&'F'].get("acd").is_none_or(Value::is_null),
            "F never queued: {:#}",
            rec[&'F']
        );
        assert_eq!(
            vars('E', "callback_offered").as_deref(),
            Some("true"),
            "{:#}",
            rec[&'E']
        );
        assert_eq!(
            vars('E', "callback_result").as_deref(),
            Some("booked"),
            "{:#}",
            rec[&'E']
        );
        assert_eq!(
            vars('E', "callback_number").as_deref(),
            Some(CALLER_E),
            "{:#}",
            rec[&'E']
        );
        for k in ['A', 'B', 'C', 'D', 'G'] {
            assert_eq!(
                vars(k, "callback_offered"),
                None,
                "pensions offers no callback: {:#}",
                rec[&k]
            );
        }
        assert_eq!(
            vars('G', "transferred_by").as_deref(),
            Some(A1.0),
            "{:#}",
            rec[&'G']
        );
        assert_eq!(
            vars('G', "transferred_to").as_deref(),
            Some("benefits"),
            "{:#}",
            rec[&'G']
        );
        assert_eq!(
            vars('G', "transfer_kind").as_deref(),
            Some("blind"),
            "{:#}",
            rec[&'G']
        );

        // The ACD sections: queue, offers, legs, transfers, exit, hold.
        let none: &[(&str, &str, &str)] = &[];
        for (k, queue, want_offers, want_legs, exit) in [
            (
                'A',
                "pensions",
                &[(A1.0, "pensions", "answered")][..],
                &[(A1.0, "pensions")][..],
                None,
            ),
            (
                'B',
                "pensions",
                &[(A1.0, "pensions", "answered")][..],
                &[(A1.0, "pensions")][..],
                None,
            ),
            ('C', "pensions", none, &[][..], Some("abandon")),
            ('D', "pensions", none, &[][..], Some("abandon")),
            ('E', "pin", none, &[][..], Some("callback")),
            (
                'G',
                "pensions",
                &[
                    (A1.0, "pensions", "answered"),
                    (A2.0, "benefits", "answered"),
                ][..],
                &[(A1.0, "pensions"), (A2.0, "benefits")][..],
                None,
            ),
        ] {
            let a = acd(k);
            assert_eq!(a["queue"], queue, "call {k}: acd.queue: {a:#}");
            assert_eq!(offers(a), owned(want_offers), "call {k}: acd.offers: {a:#}");
            let got: Vec<(String, String)> =
                legs(a).into_iter().map(|(w, q, _, _)| (w, q)).collect();
            let want: Vec<(String, String)> = want_legs
                .iter()
                .map(|(w, q)| (w.to_string(), q.to_string()))
                .collect();
            assert_eq!(got, want, "call {k}: acd.legs: {a:#}");
            assert_eq!(a["exit"].as_str(), exit, "call {k}: acd.exit: {a:#}");
            assert_eq!(a["hold_ms"], 0, "call {k}: nobody was put on hold: {a:#}");
            assert!(
                legs(a).iter().all(|l| l.3 == 0),
                "call {k}: legs' hold: {a:#}"
            );
            let transfers = a["transfers"].as_array().cloned().unwrap_or_default();
            if k == 'G' {
                assert_eq!(transfers.len(), 1, "G: one transfer: {a:#}");
                let t = &transfers[0];
                assert_eq!(
                    (&t["by"], &t["to"], &t["kind"]),
                    (&json!(A1.0), &json!("queue:benefits"), &json!("blind")),
                    "G's transfer: {a:#}"
                );
                assert!(
                    ns(s(&t["at"], "transfer at")) >= ns(s(&a["legs"][0]["answered_at"], "leg"))
                        && ns(s(&t["at"], "transfer at"))
                            <= ns(s(&a["legs"][1]["answered_at"], "leg")),
                    "G's transfer happened between a1's and a2's answers: {a:#}"
                );
            } else {
                assert!(transfers.is_empty(), "call {k}: no transfer: {a:#}");
            }
        }

        // The waits: recorded, against the script; and the record's own instants agree.
        assert_scripted("A's wait", wait_ms('A'), a_accepted - a_enq.time);
        assert_scripted("A's wait (script)", wait_ms('A'), A_ANSWER_S);
        assert_scripted("B's wait", wait_ms('B'), b_accepted - b_enq.time);
        assert_scripted("C's wait", wait_ms('C'), C_ABANDON_S);
        assert_scripted("D's wait", wait_ms('D'), D_ABANDON_S);
        assert_scripted("G's wait", wait_ms('G'), g_accepted - g_enq.time);
        for (k, range, meaning) in [
            ('A', 0..=10_000, "answered within 10 s"),
            ('B', 30_001..=45_000, "answered after 30 s and within 45 s"),
            ('G', 0..=10_000, "answered within 10 s"),
            ('C', 0..=14_999, "a short abandon (under 15 s)"),
            (
                'D',
                15_000..=u64::MAX,
                "an abandon held against the service",
            ),
        ] {
            assert!(
                range.contains(&wait_ms(k)),
                "call {k} must be {meaning}: waited {} ms",
                wait_ms(k)
            );
        }
        // E pressed 1 a second after pin's first announcement (the offer).
        assert_scripted("E's wait", wait_ms('E'), PIN_FIRST_ANNOUNCE_S as f64 + 1.0);
        for k in ['A', 'B', 'G'] {
            let a = acd(k);
            let by_instants = ms(
                s(&a["queued_at"], "queued_at"),
                s(&a["legs"][0]["answered_at"], "answered_at"),
            );
            assert!(
                by_instants.abs_diff(wait_ms(k)) <= 100,
                "call {k}: queue_wait_ms {} but queued_at to the first answer is {by_instants} ms",
                wait_ms(k)
            );
        }
        // (E left the line for the booking node while its call went on: its wait is checked
        // against the script above, the record has no second instant for it.)
        for k in ['C', 'D'] {
            let a = acd(k);
            let left = ns(s(field(&rec[&k], "ended_at"), "ended_at"));
            let by_instants = ((left - ns(s(&a["queued_at"], "queued_at"))) / 1_000_000) as u64;
            assert!(
                by_instants.abs_diff(wait_ms(k)) <= 200,
                "call {k}: queue_wait_ms {} but the record's instants say {by_instants} ms",
                wait_ms(k)
            );
        }
        // Talks, against the script.
        let talk = |k: char, i: usize| legs(acd(k))[i].2;
        assert_scripted("a1's talk with A", talk('A', 0), a_hung_up - a_accepted);
        assert_scripted("a1's talk with B", talk('B', 0), b_hung_up - b_accepted);
        assert_scripted("a1's talk with G", talk('G', 0), g_transferred - g_accepted);
        assert_scripted("a2's talk with G", talk('G', 1), g_hung_up - a2_talks.time);

        // The IVR: pensions callers hear "please hold" before verde answers, then
        // "connecting you" before the queue; pin and the desk answer at once.
        let early = flows::prompt("it", "please_hold").duration();
        let connecting = flows::prompt("it", "queue_connecting").duration();
        for k in ['A', 'B', 'C', 'D', 'E', 'F', 'G'] {
            let r = &rec[&k];
            let answer = ms(
                s(field(r, "started_at"), "started_at"),
                s(field(r, "answered_at"), "answered_at"),
            );
            let (want_answer, want_navigation) = match k {
                'E' => (0.0, Some(0.0)),
                'F' => (0.0, None),
                _ => (early, Some(connecting)),
            };
            assert_scripted(&format!("{k}'s IVR answer time"), answer, want_answer);
            if let Some(want) = want_navigation {
                let navigation = ms(
                    s(field(r, "answered_at"), "answered_at"),
                    s(&acd(k)["queued_at"], "queued_at"),
                );
                assert_scripted(&format!("{k}'s IVR navigation time"), navigation, want);
            }
        }

        // ---- the report, as of noon ------------------------------------------------------
        let cli = Cli {
            config: config.clone(),
            data: verde.data_dir.clone(),
            flows: flows.clone(),
            sounds: sounds.clone(),
        };
        let report = cli.report(AS_OF_NOON, None);
        assert_eq!(report["tz"], "Europe/Rome", "{report:#}");
        assert_eq!(report["from"], "2026-12-01T00:00:00+01:00");
        assert_eq!(report["to"], "2026-12-02T00:00:00+01:00");
        // The simulated clock starts at noon and runs while the report is made.
        let as_of = ns(s(&report["as_of"], "as_of")) - ns(AS_OF_NOON);
        assert!(
            (0..5_000_000_000).contains(&as_of),
            "the report's clock: {} for {AS_OF_NOON}",
            report["as_of"]
        );
        assert_eq!(report["skipped"], json!([]), "{report:#}");
        assert_eq!(report["targets"]["short_abandon_s"], 15);
        assert_eq!(
            report["targets"]["service_level_base"],
            "answered-and-abandoned"
        );

        let all = row(&report, "total", None, None);
        let calls = &all["calls"];
        let ctx = format!("{calls:#}");
        assert_eq!(calls["arriving"], 7, "{ctx}");
        assert_eq!(calls["rejected"], 0, "{ctx}");
        check_ratio(
            &calls["ivr_handled"],
            "handled in the IVR (F)",
            1,
            7,
            None,
            false,
        );
        check_ratio(&calls["to_queue"], "sent to a queue", 6, 7, None, false);
        check_ratio(
            &calls["transferred_out"],
            "transferred out",
            0,
            7,
            None,
            false,
        );
        assert_eq!(calls["out_of_hours"], 1, "F: {ctx}");
        assert_eq!(calls["ivr_abandoned"], 0, "{ctx}");
        assert_eq!(calls["voicemail_left"], 0, "{ctx}");
        assert_eq!(
            calls["callback_booked_in_ivr"], 0,
            "E booked from a queue: {ctx}"
        );
        assert_eq!(calls["queue_unavailable"], 0, "{ctx}");
        check_ratio(
            &calls["callback_offered"],
            "callback offered (E)",
            1,
            7,
            None,
            false,
        );
        check_ratio(
            &calls["callback_requested"],
            "callback requested (E)",
            1,
            7,
            None,
            false,
        );
        check_ratio(
            &calls["callback_accepted"],
            "callback accepted",
            1,
            1,
            None,
            false,
        );
        check_ratio(
            &calls["answered_by_agent"],
            "answered by an agent (A B G)",
            3,
            7,
            None,
            false,
        );
        let started = |k: char| s(field(&rec[&k], "started_at"), "started_at").to_string();
        let answered = |k: char| s(field(&rec[&k], "answered_at"), "answered_at").to_string();
        let ivr_answer: Vec<u64> = rec
            .keys()
            .map(|k| ms(&started(*k), &answered(*k)))
            .collect();
        let ivr_answer_missed = ivr_answer.iter().sum::<u64>() as f64 / 7.0 / 1000.0 > 5.0;
        check_mean(
            &calls["ivr_answer"],
            "IVR answer time",
            &ivr_answer,
            at_most(5.0),
            ivr_answer_missed,
        );
        let queued = ['A', 'B', 'C', 'D', 'E', 'G'];
        let navigation: Vec<u64> = queued
            .iter()
            .map(|k| ms(&answered(*k), s(&acd(*k)["queued_at"], "queued_at")))
            .collect();
        check_mean(
            &calls["ivr_navigation"],
            "IVR navigation time",
            &navigation,
            None,
            false,
        );

        // Queues: all of them, then each.
        let first_answer =
            |k: char| s(&acd(k)["legs"][0]["answered_at"], "answered_at").to_string();
        let answered_calls = ['A', 'B', 'G'];
        let hold_time: Vec<u64> = answered_calls
            .iter()
            .map(|k| ms(&started(*k), &first_answer(*k)))
            .collect();
        let asa: Vec<u64> = answered_calls.iter().map(|k| wait_ms(*k)).collect();
        let pensions_talk = vec![talk('A', 0), talk('B', 0), talk('G', 0)];
        let benefits_talk = vec![talk('G', 1)];
        let all_talk = [pensions_talk.clone(), benefits_talk.clone()].concat();

        let q = &all["queue_kpis"];
        check_queue_counts(
            q,
            "all queues",
            &QueueCounts {
                offered: 6,
                answered: 3,
                abandoned: 2,
                short: 1,
                exits: json!({"callback": 1}),
                within_30: 2,
                within_60: 3,
                transfers: 1,
            },
        );
        // By hand, the shares above: 3/6, 2/4, 3/4 and 1/5, every target missed.
        for (kpi, value) in [
            ("answered_of_queued", 0.5),
            ("service_level_30s", 0.5),
            ("service_level_60s", 0.75),
            ("abandon_rate", 0.2),
        ] {
            assert_eq!(
                q[kpi]["value"].as_f64(),
                Some(value),
                "all queues: {kpi}: {q:#}"
            );
            assert_eq!(q[kpi]["missed"], true, "all queues: {kpi}: {q:#}");
        }
        check_mean(
            &q["hold_time"],
            "all queues: hold time",
            &hold_time,
            None,
            false,
        );
        check_mean(&q["speed_of_answer"], "all queues: ASA", &asa, None, false);
        check_mean(&q["talk_time"], "all queues: talk", &all_talk, None, false);
        check_mean(
            &q["on_hold"],
            "all queues: on hold",
            &[0, 0, 0, 0],
            None,
            false,
        );

        let pensions = row(&report, "total", Some("pensions"), None);
        assert!(
            pensions["calls"].is_null(),
            "arrival figures only on all-queue rows: {pensions:#}"
        );
        let q = &pensions["queue_kpis"];
        check_queue_counts(
            q,
            "pensions",
            &QueueCounts {
                offered: 5,
                answered: 3,
                abandoned: 2,
                short: 1,
                exits: json!({}),
                within_30: 2,
                within_60: 3,
                transfers: 1,
            },
        );
        assert_eq!(
            q["abandon_rate"]["value"].as_f64(),
            Some(0.25),
            "pensions: 1/4: {q:#}"
        );
        check_mean(
            &q["hold_time"],
            "pensions: hold time",
            &hold_time,
            None,
            false,
        );
        check_mean(&q["speed_of_answer"], "pensions: ASA", &asa, None, false);
        check_mean(
            &q["talk_time"],
            "pensions: talk",
            &pensions_talk,
            None,
            false,
        );
        check_mean(&q["on_hold"], "pensions: on hold", &[0, 0, 0], None, false);

        let q = &row(&report, "total", Some("pin"), None)["queue_kpis"];
        check_queue_counts(
            q,
            "pin",
            &QueueCounts {
                offered: 1,
                answered: 0,
                abandoned: 0,
                short: 0,
                exits: json!({"callback": 1}),
                within_30: 0,
                within_60: 0,
                transfers: 0,
            },
        );
        for m in ["hold_time", "speed_of_answer", "talk_time", "on_hold"] {
            check_mean(&q[m], &format!("pin: {m}"), &[], None, false);
        }

        let q = &row(&report, "total", Some("benefits"), None)["queue_kpis"];
        check_queue_counts(
            q,
            "benefits",
            &QueueCounts {
                offered: 0,
                answered: 0,
                abandoned: 0,
                short: 0,
                exits: json!({}),
                within_30: 0,
                within_60: 0,
                transfers: 0,
            },
        );
        check_mean(
            &q["talk_time"],
            "benefits: a2's talk with G",
            &benefits_talk,
            None,
            false,
        );
        check_mean(&q["on_hold"], "benefits: on hold", &[0], None, false);
        check_mean(&q["speed_of_answer"], "benefits: ASA", &[], None, false);

        // Survey, by the call's first queue (pensions; all queues the same).
        let sat: Vec<u8> = vec![SURVEY_A[0].1, SURVEY_B[0].1];
        let res: Vec<u8> = vec![SURVEY_A[1].1, SURVEY_B[1].1];
        let every: Vec<u8> = [sat.clone(), res.clone()].concat();
        for (r, what) in [(all, "all queues"), (pensions, "pensions")] {
            let sv = &r["survey"];
            assert_eq!(sv["surveys"], 2, "{what}: A and B: {sv:#}");
            check_scores(&sv["overall"], &format!("{what}: survey"), &every, true);
            check_scores(
                &sv["per_question"]["satisfaction"],
                &format!("{what}: satisfaction"),
                &sat,
                false,
            );
            check_scores(
                &sv["per_question"]["resolved"],
                &format!("{what}: resolved"),
                &res,
                false,
            );
            assert_eq!(
                sv["overall"]["average"].as_f64(),
                Some(4.25),
                "(6+6+2+3)/4: {sv:#}"
            );
            assert_eq!(
                sv["overall"]["positive"]["missed"], true,
                "2/4 < 70 %: {sv:#}"
            );
        }
        let pin_survey = &row(&report, "total", Some("pin"), None)["survey"];
        assert_eq!(pin_survey["surveys"], 0, "{pin_survey:#}");

        // Callbacks (pin): open as of noon.
        for r in [all, row(&report, "total", Some("pin"), None)] {
            let cb = &r["callbacks"];
            assert_eq!(
                (
                    &cb["requested"],
                    &cb["open"],
                    &cb["cancelled"],
                    &cb["reached"],
                    &cb["not_reached"]
                ),
                (&json!(1), &json!(1), &json!(0), &json!(0), &json!(0)),
                "E's request, two hours old at noon: {cb:#}"
            );
            check_ratio(
                &cb["on_time"],
                "callbacks on time (open)",
                0,
                0,
                at_least(0.9),
                false,
            );
            check_ratio(
                &cb["by_deadline"],
                "callbacks by deadline (open)",
                0,
                0,
                None,
                false,
            );
        }
        assert_eq!(pensions["callbacks"]["requested"], 0, "{pensions:#}");
        assert_eq!(all["voicemails"]["received"], 0);
        check_ratio(
            &all["voicemails"]["on_time"],
            "voicemails",
            0,
            0,
            at_least(0.9),
            false,
        );

        // Charts: waits by bin, and hour 10.
        let bins = all["charts"]["wait_distribution"]
            .as_array()
            .expect("wait bins")
            .clone();
        let got: Vec<(String, u64, u64, u64)> = bins
            .iter()
            .map(|b| {
                (
                    b["label"].as_str().unwrap_or("").to_string(),
                    b["answered"].as_u64().unwrap_or(99),
                    b["abandoned"].as_u64().unwrap_or(99),
                    b["exited"].as_u64().unwrap_or(99),
                )
            })
            .collect();
        let want: Vec<(String, u64, u64, u64)> = [
            ("0-10", 2, 1, 1),
            ("10-20", 0, 0, 0),
            ("20-30", 0, 0, 0),
            ("30-60", 1, 1, 0),
            ("60-120", 0, 0, 0),
            ("120+", 0, 0, 0),
        ]
        .iter()
        .map(|(l, a, b, c)| (l.to_string(), *a, *b, *c))
        .collect();
        assert_eq!(got, want, "waiting-time distribution, all queues");
        let hourly = all["charts"]["hourly"].as_array().expect("hourly").clone();
        assert_eq!(hourly.len(), 24);
        for h in &hourly {
            let hour = h["hour"].as_u64().unwrap();
            let (o, a, ab, sl) = if hour == 10 {
                (6, 3, 2, (2, 4))
            } else {
                (0, 0, 0, (0, 0))
            };
            assert_eq!(
                (
                    h["offered"].as_u64(),
                    h["answered"].as_u64(),
                    h["abandoned"].as_u64()
                ),
                (Some(o), Some(a), Some(ab)),
                "hour {hour}: {h}"
            );
            check_ratio(
                &h["service_level_30s"],
                &format!("hour {hour}: SL30"),
                sl.0,
                sl.1,
                at_least(0.8),
                sl.1 > 0,
            );
        }

        // The day's bucket is the total (one day), and every call came in on pstn.
        let day = row(&report, DAY, None, None);
        for part in ["calls", "queue_kpis", "callbacks", "voicemails", "survey"] {
            assert_eq!(day[part], all[part], "day {DAY} and total differ in {part}");
        }
        assert!(
            day["charts"].is_null(),
            "charts only on total rows: {day:#}"
        );
        for (bucket, queue) in [
            ("total", None),
            ("total", Some("pensions")),
            ("total", Some("pin")),
            ("total", Some("benefits")),
            (DAY, None),
            (DAY, Some("pensions")),
        ] {
            assert_eq!(
                without_channel(row(&report, bucket, queue, Some("pstn"))),
                without_channel(row(&report, bucket, queue, None)),
                "{bucket}/{queue:?}: the pstn row and the all-channel row differ"
            );
        }
        let rows = report["rows"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            2 * 4 * 2,
            "(day, total) x (all, pensions, pin, benefits) x (all, pstn): {report:#}"
        );

        // Per queue: --queue pensions gives exactly the pensions rows.
        let only = cli.report(AS_OF_NOON, Some("pensions"));
        let mine: Vec<&Value> = rows.iter().filter(|r| r["queue"] == "pensions").collect();
        let theirs: Vec<&Value> = only["rows"].as_array().unwrap().iter().collect();
        assert_eq!(
            theirs, mine,
            "--queue pensions must give the pensions rows of the full report"
        );
        assert_eq!(only["queue_filter"], "pensions");

        // ---- the next day at noon: the callback, never made, is judged late ---------------
        let later = cli.report(AS_OF_NEXT_DAY, None);
        for r in [
            row(&later, "total", None, None),
            row(&later, "total", Some("pin"), None),
        ] {
            let cb = &r["callbacks"];
            assert_eq!(
                (
                    &cb["requested"],
                    &cb["open"],
                    &cb["reached"],
                    &cb["not_reached"]
                ),
                (&json!(1), &json!(0), &json!(0), &json!(0)),
                "26 h after the request, still pending: judged, not reached yet: {cb:#}"
            );
            check_ratio(
                &cb["on_time"],
                "callbacks on time (late)",
                0,
                1,
                at_least(0.9),
                true,
            );
            check_ratio(
                &cb["by_deadline"],
                "callbacks by deadline (late)",
                0,
                1,
                None,
                false,
            );
        }
        assert_eq!(
            row(&later, "total", None, None)["queue_kpis"],
            all["queue_kpis"],
            "the calls' figures do not depend on when the report is made"
        );

        // ---- the export: one row per call, as recorded ------------------------------------
        let csv_bytes = cli.ok(None, &["export", "--from", DAY, "--to", DAY]);
        let body = csv_bytes
            .strip_prefix("\u{feff}".as_bytes())
            .expect("the export starts with a UTF-8 BOM");
        let mut reader = csv::ReaderBuilder::new().from_reader(body);
        let header: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let rows: Vec<BTreeMap<String, String>> = reader
            .records()
            .map(|r| {
                header
                    .iter()
                    .cloned()
                    .zip(r.expect("CSV row").iter().map(str::to_string))
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 7, "one row per call: {rows:#?}");
        let secs3 = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        for (k, id) in &ids {
            let hits: Vec<&BTreeMap<String, String>> =
                rows.iter().filter(|r| r["call_id"] == *id).collect();
            assert_eq!(hits.len(), 1, "call {k} ({id}): one row: {rows:#?}");
            let row = hits[0];
            let r = &rec[k];
            let class = if *k == 'F' { "ivr" } else { "queued" };
            let ctx = format!("call {k}: export row {row:#?}");
            assert_eq!(row["class"], class, "{ctx}");
            assert_eq!(row["disposition"], s(field(r, "disposition"), "d"), "{ctx}");
            assert_eq!(row["hangup_by"], s(field(r, "hangup_by"), "h"), "{ctx}");
            assert_eq!(row["ivr_outcome"], s(field(r, "outcome"), "o"), "{ctx}");
            assert_eq!(row["ivr_path"], record_path(r).join(" > "), "{ctx}");
            let survey: Vec<String> = r["survey"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{}={}", s(&a["question"], "q"), a["score"]))
                .collect();
            assert_eq!(row["survey"], survey.join(" "), "{ctx}");
            let (want_avg, want_q, want_agent, want_agents, want_transfers, want_exit) = match k {
                'A' => ("6.000", "pensions", "a1", "a1", "", ""),
                'B' => ("2.500", "pensions", "a1", "a1", "", ""),
                'C' | 'D' => ("", "pensions", "", "", "", "abandon"),
                'E' => ("", "pin", "", "", "", "callback"),
                'F' => ("", "", "", "", "", ""),
                'G' => ("", "pensions", "a1", "a1 > a2", "queue:benefits", ""),
                _ => unreachable!(),
            };
            assert_eq!(row["survey_average"], want_avg, "{ctx}");
            assert_eq!(row["queue"], want_q, "{ctx}");
            assert_eq!(row["agent"], want_agent, "{ctx}");
            assert_eq!(row["agents"], want_agents, "{ctx}");
            assert_eq!(row["transfers"], want_transfers, "{ctx}");
            assert_eq!(row["queue_exit"], want_exit, "{ctx}");
            if *k == 'F' {
                assert_eq!(row["queue_wait_s"], "", "{ctx}");
                continue;
            }
            assert_eq!(row["queue_wait_s"], secs3(wait_ms(*k)), "{ctx}");
            assert_eq!(row["on_hold_s"], "0.000", "{ctx}");
            let talks: Vec<u64> = legs(acd(*k)).iter().map(|l| l.2).collect();
            if talks.is_empty() {
                assert_eq!(
                    (row["talk_s"].as_str(), row["to_agent_s"].as_str()),
                    ("", ""),
                    "{ctx}"
                );
            } else {
                assert_eq!(row["talk_s"], secs3(talks.iter().sum()), "{ctx}");
                assert_eq!(
                    row["to_agent_s"],
                    secs3(ms(&started(*k), &first_answer(*k))),
                    "{ctx}"
                );
            }
        }

        eprintln!(
            "scripted day: setup {setup_s:.1} s, calls {calls_s:.1} s, total {:.1} s; waits A {} \
             B {} C {} D {} E {} G {} ms; talks A {} B {} G {}+{} ms",
            t0.elapsed().as_secs_f64(),
            wait_ms('A'),
            wait_ms('B'),
            wait_ms('C'),
            wait_ms('D'),
            wait_ms('E'),
            wait_ms('G'),
            talk('A', 0),
            talk('B', 0),
            talk('G', 0),
            talk('G', 1),
        );
    });
}
