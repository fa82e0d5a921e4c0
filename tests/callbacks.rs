//! What the callback and voicemail tests share: the config overlay that turns on call-me-back
//! for the pensions queue and points the dialer at a SIPp "customer", the task APIs
//! (`/api/callbacks`, `/api/voicemails`), SIP requests read back from a capture, and the key
//! timings of the callback offer and of the out-of-hours voicemail, taken from the prompts.

use crate::acd::{agent_voice, wait_agent_registered, write_config};
use crate::baresip::{AgentAccount, AnswerMode, Baresip};
use crate::flows;
use crate::pcap::{parse_rtp, read_pcap, shift_rtp_in_pcap, shipped_dtmf_pcap, Capture, Datagram};
use crate::sipp::Sipp;
use crate::verde::{Verde, VerdeOptions};
use crate::wav::Audio;
use crate::TestDir;
use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// The call-me-back settings of the tests' pensions queue (the values the brief of the issue
/// fixes): offered as soon as the estimated wait is over 1 s (nobody serving counts as over),
/// two attempts 2 s apart, the customer's phone rings 5 s per attempt.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);
pub const CUSTOMER_RING_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: usize = 2;
/// The pensions queue's first announcement (which carries the offer) comes this long after
/// the caller joins the line.
pub const ANNOUNCE_FIRST_DELAY_MS: u64 = 2000;

/// A wall-clock start on a Wednesday morning in Rome: the services are open and "as soon as
/// possible" means now, whatever time the suite runs (`--wall-clock`, a test-only flag).
pub const WEDNESDAY_MORNING: &str = "2026-12-02T10:00:00+01:00";

/// A `--config` overlay for the INPS flow with one agent (`id`/`password`, pensions only),
/// callbacks on in the pensions queue, the dialer calling `sip:{number}@127.0.0.1:<port>`, and
/// the task SLAs at their documented defaults (written out so the expectations are visible).
pub fn callback_config(agent: Option<(&str, &str)>, outbound_port: u16) -> String {
    config_with_mode(agent, outbound_port, None)
}

/// [`callback_config`] with the pensions queue's callbacks dialed in `mode` (`agent-first`,
/// `customer-first`) instead of the default.
pub fn callback_config_in_mode(
    agent: Option<(&str, &str)>,
    outbound_port: u16,
    mode: &str,
) -> String {
    config_with_mode(agent, outbound_port, Some(mode))
}

fn config_with_mode(agent: Option<(&str, &str)>, outbound_port: u16, mode: Option<&str>) -> String {
    let mode = mode.map(|m| format!("mode: {m}, ")).unwrap_or_default();
    let agents = match agent {
        Some((id, password)) => format!(
            "agents:\n  - {{ id: \"{id}\", name: Anna, password: {password}, queues: [pensions] }}\n"
        ),
        None => String::new(),
    };
    format!(
        "{agents}\
         outbound:\n\
         \x20 uri: \"sip:{{number}}@127.0.0.1:{outbound_port}\"\n\
         tasks:\n\
         \x20 voicemail_sla: 4h\n\
         \x20 callback_sla: 8h\n\
         queues:\n\
         \x20 - name: pensions\n\
         \x20   ring_timeout: 10s\n\
         \x20   wrap_up: 1s\n\
         \x20   callback: {{ enabled: true, {mode}offer_when_wait_over: 1s, offer_when_len_over: null, \
         ceiling: 200, max_attempts: {MAX_ATTEMPTS}, retry_delay: {}s, customer_ring_timeout: {}s, \
         offer_key: '1' }}\n\
         \x20   announce: {{ first_delay: {}s, frequency: 10s }}\n\
         \x20 - {{ name: benefits }}\n\
         \x20 - {{ name: pin }}\n\
         \x20 - {{ name: operator }}\n",
        RETRY_DELAY.as_secs(),
        CUSTOMER_RING_TIMEOUT.as_secs(),
        ANNOUNCE_FIRST_DELAY_MS / 1000,
    )
}

/// verde started with the callback overlay `config` (from [`callback_config`] or
/// [`callback_config_in_mode`]) on [`WEDNESDAY_MORNING`]'s wall clock, and Anna's phone
/// (`agent` = id, password; answering as `answer`; sending an `agent_hz` tone of `voice_secs`)
/// registered but not yet logged in.
pub fn start_with_anna(
    dir: &TestDir,
    config: &str,
    agent: (&str, &str),
    answer: AnswerMode,
    agent_hz: f64,
    voice_secs: f64,
) -> (Verde, Baresip) {
    let config = write_config(dir, config);
    let verde = Verde::start(
        dir,
        VerdeOptions {
            config: Some(config),
            extra_args: vec!["--wall-clock".into(), WEDNESDAY_MORNING.into()],
            ..Default::default()
        },
    );
    let voice = agent_voice(dir, agent_hz, voice_secs);
    let anna = Baresip::start_agent(
        dir,
        "anna",
        &AgentAccount::new(agent.0, agent.1, verde.sip).answer(answer),
        &voice,
    );
    wait_agent_registered(&verde, agent.0, Duration::from_secs(10));
    (verde, anna)
}

/// Captures the SIP and RTP of a callback: the customer's SIP port and its four media ports
/// from `customer_media`, the agent's SIP port, and verde's RTP range (`sip-rtp.pcap`).
pub fn capture_sip_rtp(
    dir: &TestDir,
    verde: &Verde,
    customer_port: u16,
    customer_media: u16,
    agent_sip_port: u16,
) -> Capture {
    let (lo, hi) = verde.rtp_ports;
    Capture::start(
        dir,
        "sip-rtp",
        &format!(
            "udp and (port {customer_port} or port {agent_sip_port} or portrange \
             {customer_media}-{} or portrange {lo}-{hi})",
            customer_media + 3
        ),
    )
}

/// Captures only the SIP to and from the customer's and the agent's ports (`sip.pcap`).
pub fn capture_sip(dir: &TestDir, customer_port: u16, agent_sip_port: u16) -> Capture {
    Capture::start(
        dir,
        "sip",
        &format!("udp and (port {customer_port} or port {agent_sip_port})"),
    )
}

/// The `@ULAW@` and `@HANGUP_AFTER_MS@` values of a customer scenario that answers with a
/// `hz` tone for `talk_ms` and then hangs up (`uas_tone.xml`, `uas_ring_answer_tone.xml`).
pub fn customer_tone_vars(dir: &TestDir, hz: f64, talk_ms: u64) -> Vec<(&'static str, String)> {
    let ulaw = ulaw_file(
        dir,
        "customer",
        &Audio::tone(8000, hz, talk_ms as f64 / 1000.0, 0.3),
    );
    vec![
        ("ULAW", ulaw.display().to_string()),
        ("HANGUP_AFTER_MS", talk_ms.to_string()),
    ]
}

/// A SIPp UAS playing the customer on `customer_port`, dialed by verde (`remote`).
pub fn customer_uas(scenario: &std::path::Path, verde: &Verde, customer_port: u16) -> Sipp {
    Sipp::new(scenario, verde.sip)
        .uas()
        .local_port(customer_port)
}

/// `GET /api/callbacks`: the pending and dialing callbacks.
pub fn callbacks(verde: &Verde) -> Vec<Value> {
    json_array(verde, "/api/callbacks")
}

/// `GET /api/voicemails`.
pub fn voicemails(verde: &Verde) -> Vec<Value> {
    json_array(verde, "/api/voicemails")
}

fn json_array(verde: &Verde, path: &str) -> Vec<Value> {
    let r = verde.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    match r.json() {
        Ok(Value::Array(a)) => a,
        Ok(other) => panic!("GET {path} returned {other}, not a JSON array"),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// `GET /api/callbacks/{id}`.
pub fn callback(verde: &Verde, id: u64) -> Value {
    let r = verde.get(&format!("/api/callbacks/{id}"));
    assert_eq!(r.status, 200, "GET /api/callbacks/{id}: {}", r.text());
    r.json()
        .unwrap_or_else(|e| panic!("GET /api/callbacks/{id}: {e}"))
}

/// Waits until callback `id` satisfies `want`; `what` names the wait in the failure message,
/// which shows the callback's last state and the end of verde's log.
pub fn wait_callback(
    verde: &Verde,
    id: u64,
    what: &str,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    verde.wait_shown(
        &format!("callback {id}"),
        what,
        timeout,
        || callback(verde, id),
        want,
    )
}

/// `POST /api/callbacks {"queue": queue, "number": number}`, expecting `201` and a new id;
/// returns the response body.
pub fn post_callback(verde: &Verde, queue: &str, number: &str) -> Value {
    let r = verde.post_json(
        "/api/callbacks",
        &serde_json::json!({"queue": queue, "number": number}),
    );
    assert_eq!(
        r.status,
        201,
        "POST /api/callbacks for {number} in {queue}: {}",
        r.text()
    );
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("POST /api/callbacks: {e}"));
    assert_eq!(v["created"], true, "POST /api/callbacks for {number}: {v}");
    v
}

/// Whether callback `id` is still listed by `GET /api/callbacks` (pending or dialing).
pub fn is_listed(verde: &Verde, id: u64) -> bool {
    callbacks(verde).iter().any(|c| c["id"] == id)
}

/// Checks a callback that ended `done/answered` on its first attempt, by `agent`; returns
/// that attempt.
pub fn assert_answered_once(done: &Value, agent: &str) -> Value {
    assert_eq!(done["outcome"], "answered", "callback {done:#}");
    assert_eq!(u64_field(done, "attempts"), 1, "callback {done:#}");
    let log = done["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log array: {done:#}"));
    assert_eq!(log.len(), 1, "attempt_log {done:#}");
    assert_eq!(log[0]["outcome"], "answered", "attempt {}", log[0]);
    assert_eq!(log[0]["agent"], agent, "attempt {}", log[0]);
    log[0].clone()
}

/// Checks a callback that ended `not-reached`: [`MAX_ATTEMPTS`] attempts, each no-answer
/// (by `agent`, when given) and ringing at least the customer's ring timeout (less 500 ms),
/// the second starting at least [`RETRY_DELAY`] (less 300 ms) after the first ended. Returns
/// the attempt log.
pub fn assert_not_reached(done: &Value, agent: Option<&str>) -> Vec<Value> {
    assert_eq!(done["outcome"], "not-reached", "callback {done:#}");
    assert_eq!(
        u64_field(done, "attempts"),
        MAX_ATTEMPTS as u64,
        "callback {done:#}"
    );
    let log = done["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log array: {done:#}"))
        .clone();
    assert_eq!(log.len(), MAX_ATTEMPTS, "attempt_log of {done:#}");
    for a in &log {
        assert_eq!(a["outcome"], "no-answer", "attempt {a}");
        if let Some(agent) = agent {
            assert_eq!(a["agent"], agent, "attempt {a}");
        }
        let rang = u64_field(a, "finished_at_ms") - u64_field(a, "started_at_ms");
        assert!(
            rang as u128 >= CUSTOMER_RING_TIMEOUT.as_millis() - 500,
            "an attempt lasted {rang} ms, less than the customer's ring timeout: {a}"
        );
    }
    let gap = u64_field(&log[1], "started_at_ms") - u64_field(&log[0], "finished_at_ms");
    assert!(
        gap as u128 >= RETRY_DELAY.as_millis() - 300,
        "the second attempt started {gap} ms after the first ended; retry_delay is {RETRY_DELAY:?}"
    );
    log
}

/// Fails unless callback `id` still reads done/not-reached (nothing changed after it ended).
pub fn assert_still_not_reached(verde: &Verde, id: u64) {
    let again = callback(verde, id);
    assert_eq!(
        (again["state"].as_str(), again["outcome"].as_str()),
        (Some("done"), Some("not-reached")),
        "the callback changed after it ended: {again:#}"
    );
}

/// A numeric field of an API object, failing with the object when it is missing.
pub fn u64_field(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no unsigned integer {name:?} in {v:#}"))
}

/// An RFC 3339 instant (`2026-12-01T12:00:00+01:00`, `...Z`) as milliseconds since the epoch.
pub fn rfc3339_ms(s: &str) -> u64 {
    let (local, offset_s) = if let Some(l) = s.strip_suffix('Z') {
        (l, 0i64)
    } else {
        let (l, off) = s.split_at(s.len() - 6);
        let sign = match &off[..1] {
            "+" => 1,
            "-" => -1,
            _ => panic!("{s}: no zone offset"),
        };
        let h: i64 = off[1..3].parse().expect("offset hours");
        let m: i64 = off[4..6].parse().expect("offset minutes");
        (l, sign * (h * 3600 + m * 60))
    };
    let secs = crate::acd::parse_log_time(&format!("{local}Z"))
        .unwrap_or_else(|| panic!("{s} is not an RFC 3339 instant"));
    ((secs - offset_s as f64) * 1000.0).round() as u64
}

/// A WAV of raw µ-law for SIPp's `rtp_stream` (uas_tone.xml's `@ULAW@`).
pub fn ulaw_file(dir: &TestDir, name: &str, audio: &Audio) -> PathBuf {
    let path = dir.join(format!("{name}.ulaw"));
    fs::write(&path, audio.to_ulaw())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// A SIP request seen on the wire.
#[derive(Debug, Clone)]
pub struct SipRequest {
    /// Capture time, seconds since the epoch.
    pub time: f64,
    pub method: String,
    /// The Request-URI.
    pub uri: String,
    pub call_id: String,
    pub cseq: String,
    pub from: String,
    /// The whole message, for failure messages.
    pub text: String,
}

/// A SIP response seen on the wire.
#[derive(Debug, Clone)]
pub struct SipResponse {
    pub time: f64,
    pub status: u16,
    pub call_id: String,
    pub cseq: String,
}

fn header<'a>(text: &'a str, long: &str, compact: &str) -> &'a str {
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(long) || n.eq_ignore_ascii_case(compact)).then(|| v.trim())
        })
        .unwrap_or_default()
}

/// The SIP requests with method `method` sent to UDP port `dst_port`, in capture order
/// (retransmissions included: compare `call_id` and `cseq` to tell transactions apart).
pub fn sip_requests(datagrams: &[Datagram], dst_port: u16, method: &str) -> Vec<SipRequest> {
    requests_where(datagrams, method, |d| d.dst.port() == dst_port)
}

/// The SIP requests with method `method` sent from UDP port `src_port`, in capture order.
pub fn sip_requests_from(datagrams: &[Datagram], src_port: u16, method: &str) -> Vec<SipRequest> {
    requests_where(datagrams, method, |d| d.src.port() == src_port)
}

fn requests_where(
    datagrams: &[Datagram],
    method: &str,
    keep: impl Fn(&Datagram) -> bool,
) -> Vec<SipRequest> {
    datagrams
        .iter()
        .filter(|d| keep(d))
        .filter_map(|d| {
            let text = String::from_utf8_lossy(&d.payload).replace('\r', "");
            let first = text.lines().next()?;
            let mut parts = first.split(' ');
            let m = parts.next()?;
            let uri = parts.next()?;
            (m == method && parts.next() == Some("SIP/2.0")).then(|| SipRequest {
                time: d.time,
                method: m.to_string(),
                uri: uri.to_string(),
                call_id: header(&text, "Call-ID", "i").to_string(),
                cseq: header(&text, "CSeq", "").to_string(),
                from: header(&text, "From", "f").to_string(),
                text: text.clone(),
            })
        })
        .collect()
}

/// The SIP responses sent from UDP port `src_port`, in capture order.
pub fn sip_responses(datagrams: &[Datagram], src_port: u16) -> Vec<SipResponse> {
    datagrams
        .iter()
        .filter(|d| d.src.port() == src_port)
        .filter_map(|d| {
            let text = String::from_utf8_lossy(&d.payload).replace('\r', "");
            let status = text.lines().next()?.strip_prefix("SIP/2.0 ")?;
            Some(SipResponse {
                time: d.time,
                status: status.get(..3)?.parse().ok()?,
                call_id: header(&text, "Call-ID", "i").to_string(),
                cseq: header(&text, "CSeq", "").to_string(),
            })
        })
        .collect()
}

/// The first request of each transaction (retransmissions dropped: same Call-ID and CSeq).
pub fn distinct(requests: Vec<SipRequest>) -> Vec<SipRequest> {
    let mut out: Vec<SipRequest> = Vec::new();
    for r in requests {
        if !out
            .iter()
            .any(|o| o.call_id == r.call_id && o.cseq == r.cseq)
        {
            out.push(r);
        }
    }
    out
}

/// The distinct INVITEs sent to `dst_port`, which must be exactly `count` (`what` names them in
/// the failure, which lists them).
pub fn invites_to(
    datagrams: &[Datagram],
    dst_port: u16,
    count: usize,
    what: &str,
) -> Vec<SipRequest> {
    let invites = distinct(sip_requests(datagrams, dst_port, "INVITE"));
    assert_eq!(
        invites.len(),
        count,
        "{what}: {:#?}",
        invites.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    invites
}

/// Fails unless every INVITE to the customer was given up with a CANCEL (in `cancels`) after
/// ringing the customer's ring timeout (-0.5 s, +1.5 s).
pub fn assert_cancelled_after_ring_timeout(invites: &[SipRequest], cancels: &[SipRequest]) {
    for inv in invites {
        let c = cancels
            .iter()
            .find(|c| c.call_id == inv.call_id)
            .unwrap_or_else(|| panic!("no CANCEL for the INVITE {}", inv.call_id));
        let rang = c.time - inv.time;
        let want = CUSTOMER_RING_TIMEOUT.as_secs_f64();
        assert!(
            (want - 0.5..=want + 1.5).contains(&rang),
            "the customer rang {rang:.2} s before verde's CANCEL; customer_ring_timeout is {want} s"
        );
    }
}

/// The user part of a SIP URI or name-addr (`"x" <sip:0612@h;p>;tag=1` -> `0612`).
pub fn user_of(uri_or_addr: &str) -> String {
    let s = match uri_or_addr.find('<') {
        Some(i) => &uri_or_addr[i + 1..],
        None => uri_or_addr,
    };
    crate::acd::uri_user(s.trim())
}

/// The DTMF pcap of `digit` for a call that already sent `digits_before` keys (from
/// [`crate::pcap::dtmf_pcaps`]) and then `audio_packets` 20 ms audio packets (from
/// [`crate::pcap::audio_pcap_after_dtmf`]): its sequence numbers and timestamp carry on after
/// the audio, so the far end sees one stream that only moves forward.
pub fn dtmf_pcap_after_audio(
    dir: &TestDir,
    digit: char,
    digits_before: usize,
    audio_packets: usize,
) -> PathBuf {
    let shipped = shipped_dtmf_pcap(digit);
    let first = read_pcap(&shipped)
        .ok()
        .and_then(|d| d.iter().find_map(|d| parse_rtp(&d.payload)))
        .expect("SIPp's DTMF pcaps hold RTP");
    let base = read_pcap(&shipped_dtmf_pcap('1'))
        .ok()
        .and_then(|d| d.iter().find_map(|d| parse_rtp(&d.payload)))
        .expect("SIPp's dtmf_2833_1.pcap holds RTP");
    // The audio starts 100 packets / 8000 units per earlier key after digit '1''s numbers;
    // leave a margin of 10 packets and one second of RTP time after it.
    let n = digits_before.max(1);
    let seq = base
        .seq
        .wrapping_add((100 * n + audio_packets + 10) as u16)
        .wrapping_sub(first.seq);
    let ts = base
        .timestamp
        .wrapping_add((8000 * n + 160 * audio_packets + 8000) as u32)
        .wrapping_sub(first.timestamp);
    let out = dir.join(format!("dtmf-after-audio-{}.pcap", digit as u32));
    shift_rtp_in_pcap(&shipped, &out, seq, ts)
        .unwrap_or_else(|e| panic!("rewriting {}: {e}", shipped.display()));
    out
}

/// Milliseconds of a list of Italian prompts (measured from the shipped WAVs).
pub fn ms_of(names: &[&str]) -> u64 {
    let list: Vec<(&str, &str)> = names.iter().map(|n| ("it", *n)).collect();
    (flows::duration_of(&list) * 1000.0).round() as u64
}

/// The prompts that read `number` back digit by digit (`num_0` ... `num_9`).
pub fn digit_prompts(number: &str) -> Vec<String> {
    number
        .chars()
        .filter(char::is_ascii_digit)
        .map(|d| format!("num_{d}"))
        .collect()
}

/// When an INPS caller waiting in pensions presses its keys to accept the callback offer, as
/// (ms after the service-menu key, then each key after the previous one):
///
/// 1. the offer key, 1.5 s into `callback_offer`. Alone in line with nobody serving, the first
///    announcement (after `first_delay`) is `queue_next` (position 0, no estimated wait), and
///    the offer plays with it; 1.5 s after `queue_next` falls inside the offer whether verde
///    plays it after the position or before it (`callback_offer` is 4.2 s long);
/// 2. the confirmation key, 1.5 s into `callback_confirm_number_after` ("1 to confirm"), after
///    `callback_confirm_number_before` and the caller's number read back digit by digit;
/// 3. the band key (1, as soon as possible), 0.8 s after `callback_band_menu`, while the first
///    band is described.
///
/// Each step allows 300 ms for the key's own length (140 ms) and its handling.
pub fn callback_offer_key_times(caller: &str) -> [u64; 3] {
    let offer = ANNOUNCE_FIRST_DELAY_MS + ms_of(&["queue_next"]) + 1500;
    let digits = digit_prompts(caller);
    let digits: Vec<&str> = digits.iter().map(String::as_str).collect();
    let confirm = 300 + ms_of(&["callback_confirm_number_before"]) + ms_of(&digits) + 1500;
    let band = 300 + ms_of(&["callback_band_menu"]) + 800;
    [offer, confirm, band]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_instants_with_offsets() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), 1000);
        assert_eq!(
            rfc3339_ms("2026-12-01T12:00:00+01:00"),
            rfc3339_ms("2026-12-01T11:00:00Z")
        );
        assert_eq!(
            rfc3339_ms("2026-12-01T12:00:00+01:00") - rfc3339_ms("2026-11-30T21:00:00+01:00"),
            15 * 3600 * 1000
        );
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00-02:30"), 9000 * 1000);
    }

    #[test]
    fn sip_requests_and_responses_from_datagrams() {
        use std::net::SocketAddrV4;
        let dg = |src: u16, dst: u16, text: &str| Datagram {
            time: 1.0,
            src: SocketAddrV4::new([127, 0, 0, 1].into(), src),
            dst: SocketAddrV4::new([127, 0, 0, 1].into(), dst),
            payload: text.as_bytes().to_vec(),
        };
        let invite = "INVITE sip:0655@127.0.0.1:5070 SIP/2.0\r\nVia: x\r\ni: abc\r\nCSeq: 1 INVITE\r\nFrom: \"803164\" <sip:803164@127.0.0.1>;tag=1\r\n\r\nv=0\r\n";
        let d = vec![
            dg(5060, 5070, invite),
            dg(5060, 5070, invite),
            dg(5060, 5070, &invite.replace("i: abc", "Call-ID: def")),
            dg(5060, 5071, invite),
            dg(
                5070,
                5060,
                "SIP/2.0 180 Ringing\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\n\r\n",
            ),
        ];
        let all = sip_requests(&d, 5070, "INVITE");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].uri, "sip:0655@127.0.0.1:5070");
        assert_eq!(user_of(&all[0].uri), "0655");
        assert_eq!(user_of(&all[0].from), "803164");
        let calls: Vec<String> = distinct(all).into_iter().map(|r| r.call_id).collect();
        assert_eq!(calls, ["abc", "def"]);
        assert!(sip_requests(&d, 5070, "CANCEL").is_empty());
        let r = sip_responses(&d, 5070);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].status, r[0].cseq.as_str()), (180, "1 INVITE"));
    }

    #[test]
    fn callback_mode_goes_into_the_pensions_callback_settings() {
        let line = |yaml: &str| {
            yaml.lines()
                .find(|l| l.trim_start().starts_with("callback:"))
                .expect("a callback: line")
                .to_string()
        };
        let first = callback_config_in_mode(None, 5070, "customer-first");
        assert!(
            line(&first).contains("{ enabled: true, mode: customer-first, "),
            "{first}"
        );
        assert_eq!(first.matches("mode:").count(), 1, "{first}");
        assert!(!callback_config(None, 5070).contains("mode:"));
    }

    #[test]
    fn readback_prompts_are_digits() {
        assert_eq!(
            digit_prompts("+39 06"),
            ["num_3", "num_9", "num_0", "num_6"]
        );
    }
}
