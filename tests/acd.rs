//! What the ACD tests share: a config overlay with agents and queues, agents' phones logging in
//! with feature codes, the live state from `/api/agents` and `/api/queues`, SIPp callers that
//! walk the INPS flow to a queue and then talk (a tone), and reading verde's log by call.

use crate::baresip::Baresip;
use crate::flows;
use crate::pcap::{audio_pcap_after_dtmf, dtmf_pcaps, rtp_stream, Datagram};
use crate::sipp::{play_pcap_after, scenario};
use crate::verde::Verde;
use crate::wav::Audio;
use crate::TestDir;
use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Writes a `--config` overlay. Its `queues:` list replaces the default one (lists are not
/// merged), so it must name every queue the flows in use send callers to.
pub fn write_config(dir: &TestDir, yaml: &str) -> PathBuf {
    let path = dir.join("verde-config.yaml");
    fs::write(&path, yaml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// The queues `ivr-flows/inps.yaml` sends callers to, other than pensions, at their defaults.
pub const OTHER_INPS_QUEUES: &str =
    "  - { name: benefits }\n  - { name: pin }\n  - { name: operator }\n";

/// `GET /api/agents`.
pub fn agents(verde: &Verde) -> Vec<Value> {
    let r = verde.get("/api/agents");
    assert_eq!(r.status, 200, "GET /api/agents: {}", r.text());
    match r.json() {
        Ok(Value::Array(a)) => a,
        Ok(other) => panic!("GET /api/agents returned {other}, not a JSON array"),
        Err(e) => panic!("GET /api/agents: {e}"),
    }
}

/// One agent from `/api/agents`.
pub fn agent(verde: &Verde, id: &str) -> Value {
    let all = agents(verde);
    all.iter()
        .find(|a| a["id"].as_str() == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("agent {id} is not in GET /api/agents: {all:#?}"))
}

/// Waits until agent `id` satisfies `want` (e.g. its state is "ready"); `what` says what was
/// awaited in the failure message, which also shows the agent's last state.
pub fn wait_agent(
    verde: &Verde,
    id: &str,
    what: &str,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    verde.wait_shown(
        &format!("agent {id}"),
        what,
        timeout,
        || agent(verde, id),
        want,
    )
}

/// Waits until agent `id`'s phone shows as registered in `/api/agents`.
pub fn wait_agent_registered(verde: &Verde, id: &str, timeout: Duration) -> Value {
    wait_agent(verde, id, "registered", timeout, |a| {
        a["registered"] == serde_json::json!(true)
    })
}

/// Waits until agent `id` is in `state` ("ready", "paused", "loggedout", ...).
pub fn wait_agent_state(verde: &Verde, id: &str, state: &str, timeout: Duration) -> Value {
    wait_agent(verde, id, &format!("in state {state:?}"), timeout, |a| {
        a["state"].as_str() == Some(state)
    })
}

/// One queue from `GET /api/queues`.
pub fn queue(verde: &Verde, name: &str) -> Value {
    let r = verde.get("/api/queues");
    assert_eq!(r.status, 200, "GET /api/queues: {}", r.text());
    let all = match r.json() {
        Ok(Value::Array(a)) => a,
        other => panic!("GET /api/queues returned {other:?}, not a JSON array"),
    };
    all.iter()
        .find(|q| q["name"].as_str() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("queue {name} is not in GET /api/queues: {all:#?}"))
}

/// Polls `GET /api/queues` until queue `name` satisfies `want`: the ACD publishes its view
/// within 50 ms of a change, so a change a log line announces may not show yet.
pub fn wait_queue(
    verde: &Verde,
    name: &str,
    what: &str,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    verde.wait_shown(
        &format!("queue {name}"),
        what,
        timeout,
        || queue(verde, name),
        want,
    )
}

/// The agent's phone dials a feature code (`*11` ready, `*12` pause, `*13` log out): verde
/// answers, confirms with a short prompt and hangs up. Returns once the call has closed.
pub fn feature_code(phone: &mut Baresip, verde: &Verde, code: &str) {
    phone.ctrl.dial(&format!("sip:{code}@{}", verde.sip));
    phone
        .ctrl
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    // The confirmation prompt is about 3 s; verde hangs up after it.
    phone
        .ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(15));
}

/// The agent's phone logs in with `*11` and verde shows agent `id` ready within 5 s.
pub fn log_in_ready(phone: &mut Baresip, verde: &Verde, id: &str) -> Value {
    feature_code(phone, verde, "*11");
    wait_agent_state(verde, id, "ready", Duration::from_secs(5))
}

/// Several phones dial their feature codes at the same moment (`(phone, code)` pairs); returns
/// once every one of those calls has been answered and closed, with the same limits as
/// [`feature_code`].
pub fn feature_codes_at_once(verde: &Verde, phones: &mut [(&mut Baresip, &str)]) {
    for (phone, code) in phones.iter_mut() {
        phone.ctrl.dial(&format!("sip:{code}@{}", verde.sip));
    }
    for (phone, _) in phones.iter_mut() {
        phone
            .ctrl
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
        phone
            .ctrl
            .wait_event("CALL_CLOSED", Duration::from_secs(15));
    }
}

/// The audio file agents' phones send as their voice: a `hz` tone of `secs` seconds, long
/// enough to outlast every call of the test.
pub fn agent_voice(dir: &TestDir, hz: f64, secs: f64) -> PathBuf {
    let voice = dir.join("agent-voice.wav");
    Audio::tone(8000, hz, secs, 0.3).save(&voice);
    voice
}

/// What an agent's phone heard on the one call it took after logging in with a single
/// feature-code call: its recordings must be exactly two (the `*11` call, then that call; `what`
/// names them in the failure), and the second is returned with its path.
pub fn recording_after_login(phone: &Baresip, what: &str) -> (PathBuf, Audio) {
    let recs = phone.received_recordings();
    assert_eq!(recs.len(), 2, "{what}: {recs:?}");
    let heard = Audio::load(&recs[1]);
    (recs[1].clone(), heard)
}

/// The calling numbers of the calls offered to a phone, in order (user part of the From URI,
/// baresip's `peeruri`). baresip reports CALL_INCOMING only when it rings (answermode=manual);
/// when it answers by itself the first event of a call is its SDP or CALL_ESTABLISHED, so every
/// incoming call id counts once, at its first event.
pub fn offered_callers(phone: &mut Baresip) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut callers = Vec::new();
    for (_, e) in phone.ctrl.all_events() {
        if e["direction"].as_str() != Some("incoming") {
            continue;
        }
        let id = e["id"].as_str().unwrap_or_default().to_string();
        if !seen.contains(&id) {
            seen.push(id);
            callers.push(uri_user(e["peeruri"].as_str().unwrap_or_default()));
        }
    }
    callers
}

/// The calling numbers of the incoming calls the phone answered (CALL_ESTABLISHED), in order.
pub fn answered_callers(phone: &mut Baresip) -> Vec<String> {
    phone
        .ctrl
        .events("CALL_ESTABLISHED")
        .iter()
        .filter(|(_, e)| e["direction"].as_str() == Some("incoming"))
        .map(|(_, e)| uri_user(e["peeruri"].as_str().unwrap_or_default()))
        .collect()
}

/// `sip:0611@127.0.0.1:5060;x=y` -> `0611`.
pub fn uri_user(uri: &str) -> String {
    let u = uri.trim_start_matches('<');
    let u = u.strip_prefix("sip:").unwrap_or(u);
    u.split(['@', ';', '>'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// When a SIPp caller of `ivr-flows/inps.yaml` presses its keys, in ms after the call is
/// answered (first key) and after the first key (second key).
///
/// SIPp cannot wait for a log line of verde, so the keys are timed from the prompts' durations
/// (measured from the WAVs, not hard-coded): 0.8 s into the language menu and 1.2 s into the
/// service menu. Menus take keys while their prompts play (8 and 4 options of about 2 s each),
/// so the windows are several seconds wide; [`assert_reached_queue`] then checks in verde's
/// log that the call really got there.
pub fn inps_key_times() -> (u64, u64) {
    let first_at = (flows::duration_of(flows::BEFORE_LANGUAGE_MENU) * 1000.0) as u64 + 800;
    let second_at = (flows::duration_of(&flows::before_service_menu("it")) * 1000.0) as u64 + 1200;
    (first_at, second_at)
}

/// A SIPp caller scenario (`uac_caller.xml`) for 803164: From `caller`, presses 1 (Italian) and
/// `service_key` (1 pensions, 2 benefits...), then sends `talk` (8 kHz audio, e.g. a tone) as
/// PCMU from the same RTP stream as its keys, and stays `stay_ms` after the second key before
/// hanging up (a BYE from verde first is answered). Returns the scenario and its longest run
/// time from the answer.
pub fn inps_caller_scenario(
    dir: &TestDir,
    caller: &str,
    service_key: char,
    talk: Option<&Audio>,
    stay_ms: u64,
) -> (PathBuf, Duration) {
    let pcaps = dtmf_pcaps(dir, &format!("1{service_key}"));
    let (first_at, second_at) = inps_key_times();
    let mut actions = [
        play_pcap_after(first_at, &pcaps[0]),
        play_pcap_after(second_at, &pcaps[1]),
    ]
    .concat();
    if let Some(audio) = talk {
        let pcap = audio_pcap_after_dtmf(dir, &format!("talk-{caller}"), audio, 2);
        // The key's pcap lasts 140 ms: the audio must not overlap it.
        actions.push_str(&play_pcap_after(200, &pcap));
    }
    let scen = scenario(
        dir,
        "uac_caller.xml",
        &[
            ("CALLER", caller.to_string()),
            ("ACTIONS", actions),
            ("LISTEN_MS", stay_ms.to_string()),
        ],
    );
    (
        scen,
        Duration::from_millis(first_at + second_at + 200 + stay_ms),
    )
}

/// A line of verde's log: when (seconds since the epoch) and the text.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub time: f64,
    pub text: String,
}

/// verde's log lines of call `call_id` that contain `needle`, in order.
pub fn call_log(verde: &Verde, call_id: &str, needle: &str) -> Vec<LogLine> {
    verde
        .logs()
        .lines()
        .filter(|l| l.contains(&format!("call_id={call_id}")) && l.contains(needle))
        .filter_map(|l| {
            Some(LogLine {
                time: parse_log_time(l.split_whitespace().next()?)?,
                text: l.to_string(),
            })
        })
        .collect()
}

/// The first line of call `call_id` containing `needle`, or a failure showing the call's log.
pub fn first_call_log(verde: &Verde, call_id: &str, needle: &str) -> LogLine {
    call_log(verde, call_id, needle)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            panic!(
                "verde logged no {needle:?} for call {call_id}; its log lines:\n{}",
                verde.call_logs(call_id)
            )
        })
}

/// Fails unless verde enqueued call `call_id` in `queue` (the timed keys hit their menus).
pub fn assert_reached_queue(verde: &Verde, call_id: &str, queue: &str) -> LogLine {
    let l = first_call_log(verde, call_id, "enqueued");
    assert!(
        l.text.contains(&format!("queue={queue}")),
        "call {call_id} was enqueued elsewhere than {queue}: {}",
        l.text
    );
    l
}

/// `2026-11-27T16:34:04.224981Z` (tracing's UTC timestamps) as seconds since the epoch.
pub fn parse_log_time(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// The audio verde sent to a SIPp caller's media port (PCMU from any port of verde's RTP
/// range), in capture order, decoded.
pub fn heard_by_sipp(datagrams: &[Datagram], verde: &Verde, media_port: u16) -> Audio {
    heard_by_sipp_when(datagrams, verde, media_port, |_| true)
}

/// [`heard_by_sipp`] keeping only the packets whose capture time (seconds since the epoch)
/// satisfies `when`.
pub fn heard_by_sipp_when(
    datagrams: &[Datagram],
    verde: &Verde,
    media_port: u16,
    when: impl Fn(f64) -> bool,
) -> Audio {
    let packets = rtp_stream(datagrams, verde.rtp_ports, media_port);
    Audio::from_g711(
        0,
        packets
            .iter()
            .filter(|p| p.2.payload_type == 0 && when(p.0))
            .map(|p| p.2.payload.as_slice()),
    )
}

/// A string field of a call record's `variables`.
pub fn variable<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record.get("variables")?.get(name)?.as_str()
}

/// `variables.queue_wait_ms` of a call record, failing with the record when absent.
pub fn queue_wait_ms(record: &Value) -> u64 {
    variable(record, "queue_wait_ms")
        .and_then(|v| v.parse().ok())
        .or_else(|| record["variables"]["queue_wait_ms"].as_u64())
        .unwrap_or_else(|| panic!("call record has no numeric variables.queue_wait_ms: {record:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_parse_to_epoch_seconds() {
        let t = parse_log_time("2026-11-27T16:34:04.224981Z").unwrap();
        // 2026-11-27 is day 20,784 since 1970-01-01.
        assert!((t - (20_784.0 * 86_400.0 + 16.0 * 3600.0 + 34.0 * 60.0 + 4.224981)).abs() < 1e-6);
        assert_eq!(parse_log_time("1970-01-01T00:00:01Z"), Some(1.0));
        assert!(
            parse_log_time("2000-03-01T00:00:00Z").unwrap()
                - parse_log_time("2000-02-28T00:00:00Z").unwrap()
                == 2.0 * 86_400.0
        );
        assert!(parse_log_time("INFO").is_none());
    }

    #[test]
    fn uri_users() {
        assert_eq!(uri_user("sip:0611@127.0.0.1:5060"), "0611");
        assert_eq!(uri_user("<sip:1001@127.0.0.1>;tag=x"), "1001");
        assert_eq!(uri_user("sip:*11@h;transport=udp"), "*11");
    }
}
