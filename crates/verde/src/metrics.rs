//! Prometheus metrics: the process-wide counters the rest of the binary bumps, and the
//! rendering of `/metrics` (counters plus live gauges read from the ACD snapshot at scrape
//! time).
//!
//! Counters are atomics behind a [`std::sync::LazyLock`]: bumping one on a hot path (a SIP
//! message, the end of a call) costs an atomic add and, for labelled families, an uncontended
//! read lock on the family's map. Gauges are not kept here at all: the ACD already publishes a
//! snapshot, so the scrape reads it and nothing has to be kept in step.
//!
//! Label values are bounded by construction (SIP methods outside the RFC set become `other`,
//! status codes outside 100-699 are not counted, dispositions come from the code), so a peer
//! cannot grow the series without limit. Encoding (HELP/TYPE lines, `_total`, units, label
//! escaping) is `prometheus-client`'s: Prometheus text 0.0.4 by default, OpenMetrics 1.0 when
//! the scraper asks for it. What each metric means is in `docs/metrics.md`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    disposition: String,
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    code: u16,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

/// The counters of one process. One global instance serves the binary; tests make their own.
struct Counters {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    responses_sent: Family<ResponseLabels, Counter>,
    responses_received: Family<ResponseLabels, Counter>,
    requests_received: Family<MethodLabels, Counter>,
    requests_sent: Family<MethodLabels, Counter>,
    malformed: Counter,
    throttled: Family<ReasonLabels, Counter>,
    web_refused: Family<ReasonLabels, Counter>,
    // Cloned out of their family once: bumping them never touches the family's lock.
    rtp_sent: Counter,
    rtp_received: Counter,
    srtp_rejected: Counter,
    /// Set by the record writer (it is the only one who knows), not computed at scrape time.
    records_pending: Gauge,
    /// Set by the SIP task after each turn of its loop (three atomic stores).
    sip_server_txs: Gauge,
    sip_client_txs: Gauge,
    sip_routed: Gauge,
}

impl Counters {
    fn new() -> Counters {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "verde_calls",
            "Calls finished, by disposition (as in the call record) and channel",
            calls.clone(),
        );
        let responses_sent = Family::<ResponseLabels, Counter>::default();
        registry.register(
            "verde_sip_responses",
            "SIP responses sent by verde, by status code and CSeq method (UDP retransmissions included)",
            responses_sent.clone(),
        );
        let responses_received = Family::<ResponseLabels, Counter>::default();
        registry.register(
            "verde_sip_responses_received",
            "SIP responses received from peers, by status code and CSeq method",
            responses_received.clone(),
        );
        let requests_received = Family::<MethodLabels, Counter>::default();
        registry.register(
            "verde_sip_requests",
            "SIP requests received, by method (other for methods outside RFC 3261 and its extensions)",
            requests_received.clone(),
        );
        let requests_sent = Family::<MethodLabels, Counter>::default();
        registry.register(
            "verde_sip_requests_sent",
            "SIP requests sent by verde (agent legs, BYE, REFER...), by method",
            requests_sent.clone(),
        );
        let malformed = Counter::default();
        registry.register(
            "verde_sip_malformed",
            "SIP messages refused as malformed (answered 400 when a response could be built)",
            malformed.clone(),
        );
        let throttled = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "verde_sip_throttled",
            "SIP packets dropped unanswered by the per-source flood guard, by reason",
            throttled.clone(),
        );
        let web_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "verde_webrtc_refused",
            "Browser calls refused at /webrtc, by reason (full, too_many, too_fast, not_found, bad_offer, no_port, draining)",
            web_refused.clone(),
        );
        let rtp = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "verde_rtp_packets",
            "RTP packets of finished calls, by direction (sent or received)",
            rtp.clone(),
        );
        let rtp_sent = rtp
            .get_or_create(&DirectionLabels { direction: "sent" })
            .clone();
        let rtp_received = rtp
            .get_or_create(&DirectionLabels {
                direction: "received",
            })
            .clone();
        let srtp_rejected = Counter::default();
        registry.register(
            "verde_srtp_rejected",
            "SRTP/SRTCP packets of finished calls that failed authentication or replay checks (wrong key, tampering, replays)",
            srtp_rejected.clone(),
        );
        let records_pending = Gauge::default();
        registry.register(
            "verde_records_pending",
            "Call records and queue events handed to the record writer and not yet in the store (memory and spool)",
            records_pending.clone(),
        );
        let txs = Family::<SideLabels, Gauge>::default();
        registry.register(
            "verde_sip_transactions",
            "SIP transactions the transaction layer holds, by side (server or client), including ended ones kept for retransmissions (up to 32 s)",
            txs.clone(),
        );
        let sip_server_txs = txs.get_or_create(&SideLabels { side: "server" }).clone();
        let sip_client_txs = txs.get_or_create(&SideLabels { side: "client" }).clone();
        let sip_routed = Gauge::default();
        registry.register(
            "verde_sip_routed_transactions",
            "verde's own SIP requests routed back to a call: those awaiting a final answer and the answered INVITEs of legs still up (0 when no call is up)",
            sip_routed.clone(),
        );
        Counters {
            registry,
            records_pending,
            sip_server_txs,
            sip_client_txs,
            sip_routed,
            calls,
            responses_sent,
            responses_received,
            requests_received,
            requests_sent,
            malformed,
            throttled,
            web_refused,
            rtp_sent,
            rtp_received,
            srtp_rejected,
        }
    }

    fn call_finished(&self, disposition: &str, channel: &str) {
        self.calls
            .get_or_create(&CallLabels {
                disposition: disposition.to_string(),
                channel: channel.to_string(),
            })
            .inc();
    }

    fn rtp_packets(&self, sent: u64, received: u64) {
        self.rtp_sent.inc_by(sent);
        self.rtp_received.inc_by(received);
    }

    fn sip(&self, bytes: &[u8], sent: bool) {
        match sniff(bytes) {
            Some(Sniffed::Request(method)) => {
                let family = if sent {
                    &self.requests_sent
                } else {
                    &self.requests_received
                };
                family.get_or_create(&MethodLabels { method }).inc();
            }
            Some(Sniffed::Response { code, method }) => {
                let family = if sent {
                    &self.responses_sent
                } else {
                    &self.responses_received
                };
                family.get_or_create(&ResponseLabels { code, method }).inc();
            }
            None => {}
        }
    }
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::new);

/// A call has ended and its record was handed to the writer.
pub fn call_finished(disposition: &str, channel: &str) {
    COUNTERS.call_finished(disposition, channel);
}

/// The record writer's backlog (0 unless the store is failing or catching up).
pub fn records_pending(n: u64) {
    COUNTERS.records_pending.set(n.min(i64::MAX as u64) as i64);
}

/// The SIP task's table sizes: the transaction layer's (server, client) transactions and the
/// requests it routes back to calls. They follow the call rate and the calls up, never the
/// time the engine has run: a slope here is a leak.
pub fn sip_tables((server, client): (usize, usize), routed: usize) {
    let g = |n: usize| n.min(i64::MAX as usize) as i64;
    COUNTERS.sip_server_txs.set(g(server));
    COUNTERS.sip_client_txs.set(g(client));
    COUNTERS.sip_routed.set(g(routed));
}

/// RTP packets a call leg sent and received (deltas: call once per leg when it ends, or
/// periodically with what was added since the last call).
pub fn rtp_packets(sent: u64, received: u64) {
    COUNTERS.rtp_packets(sent, received);
}

/// Counts a leg's RTP once, when the leg is done with its media.
pub fn media_finished(media: &verde_media::MediaSession) {
    let s = media.stats();
    rtp_packets(s.packets_sent.into(), s.packets_received);
    COUNTERS.srtp_rejected.inc_by(s.srtp_rejected);
}

/// A SIP message verde put on the wire (a response or a request of its own).
pub fn sip_sent(bytes: &[u8]) {
    COUNTERS.sip(bytes, true);
}

/// A SIP message that arrived on a transport, before it is parsed (so malformed and
/// retransmitted ones count too).
pub fn sip_received(bytes: &[u8]) {
    COUNTERS.sip(bytes, false);
}

/// A browser call refused at `/webrtc` (reason from a fixed set: the label stays bounded).
pub fn webrtc_refused(reason: &'static str) {
    COUNTERS
        .web_refused
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// The transaction layer refused a message as malformed.
pub fn sip_malformed() {
    COUNTERS.malformed.inc();
}

/// The flood guard dropped a packet (reason from `verde_sip::flood::Reason::as_str`, a fixed
/// set).
pub fn sip_throttled(reason: &'static str) {
    COUNTERS
        .throttled
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// Methods counted by name; anything else is `other` (bounds the label's values).
const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
];

fn method_label(token: &[u8]) -> &'static str {
    // Method names are case-sensitive (RFC 3261 7.1).
    METHODS
        .iter()
        .find(|m| m.as_bytes() == token)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Request(&'static str),
    Response { code: u16, method: &'static str },
}

/// Reads just enough of a message to label it: the request's method, or the response's code
/// and its CSeq method. Keep-alives and noise give `None`.
fn sniff(bytes: &[u8]) -> Option<Sniffed> {
    let line_end = bytes.iter().position(|&b| b == b'\n')?;
    let first = trim_cr(&bytes[..line_end]);
    if first.len() >= 8 && first[..8].eq_ignore_ascii_case(b"SIP/2.0 ") {
        let code = first.get(8..11)?;
        if !code.iter().all(u8::is_ascii_digit) || first.get(11).is_some_and(|&b| b != b' ') {
            return None;
        }
        let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
        if !(100..=699).contains(&code) {
            return None;
        }
        let method = cseq_method(&bytes[line_end + 1..]).map_or("other", method_label);
        return Some(Sniffed::Response { code, method });
    }
    // A request line ends with the version; noise that happens to hold a newline does not.
    let version_at = first.len().checked_sub(8)?;
    if !first[version_at..].eq_ignore_ascii_case(b" SIP/2.0") {
        return None;
    }
    let token = first.split(|&b| b == b' ').next()?;
    if token.is_empty() {
        return None;
    }
    Some(Sniffed::Request(method_label(token)))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The method in the CSeq header (`CSeq: 2 BYE`), looked for up to the end of the headers.
fn cseq_method(headers: &[u8]) -> Option<&[u8]> {
    for line in headers.split(|&b| b == b'\n').map(trim_cr) {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"CSeq") {
            continue;
        }
        let mut words = line[colon + 1..]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let _number = words.next()?;
        return words.next();
    }
    None
}

/// Which text format the scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: what `curl` and older scrapers get.
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers that ask for it (Prometheus itself does).
    OpenMetrics,
}

impl Format {
    /// Picks the format from the request's `Accept` header: OpenMetrics when it is offered
    /// with a quality at least that of `text/plain`, as the Go client does.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" | "*/*" | "text/*" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match openmetrics {
            Some(q) if q > 0.0 && q >= text.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a scrape reads from the engine besides the ACD snapshot.
#[derive(Debug, Default)]
pub struct Live {
    /// Calls in progress (agent legs included), from the SIP task's routing table.
    pub calls_active: usize,
    /// Agents' phones currently registered.
    pub registrations: usize,
    /// Callbacks not yet done (pending or being dialed) per queue; `None` when the store did
    /// not answer, so the metric is left out rather than reported as zero.
    pub callbacks_pending: Option<Vec<(String, usize)>>,
}

/// Every agent state, in the words verde uses everywhere (`verde_cti::state_label`): each is
/// always reported, zero included, so dashboards never see a series vanish.
fn agent_states() -> [&'static str; 7] {
    use verde_acd::AgentState as S;
    [
        S::LoggedOut,
        S::Ready,
        S::Reserved,
        S::Ringing,
        S::OnCall,
        S::WrapUp,
        S::Paused {
            reason: String::new(),
        },
    ]
    .map(|s| verde_cti::state_label(&s))
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Builds the per-queue gauge families from one snapshot.
struct QueueGauges<'a> {
    snap: &'a verde_acd::Snapshot,
}

impl QueueGauges<'_> {
    fn labels(q: &verde_acd::QueueSnapshot) -> QueueLabels {
        QueueLabels {
            queue: q.name.as_str().to_string(),
        }
    }

    fn count(
        &self,
        r: &mut Registry,
        name: &str,
        help: &str,
        f: impl Fn(&verde_acd::QueueSnapshot) -> usize,
    ) {
        let family = Family::<QueueLabels, Gauge>::default();
        for q in &self.snap.queues {
            family.get_or_create(&Self::labels(q)).set(as_gauge(f(q)));
        }
        r.register(name, help, family);
    }

    /// A duration per queue, in seconds; queues for which `f` gives `None` have no series.
    fn seconds(
        &self,
        r: &mut Registry,
        name: &str,
        help: &str,
        f: impl Fn(&verde_acd::QueueSnapshot) -> Option<Duration>,
    ) {
        let family = Family::<QueueLabels, Gauge<f64, AtomicU64>>::default();
        for q in &self.snap.queues {
            if let Some(d) = f(q) {
                family.get_or_create(&Self::labels(q)).set(d.as_secs_f64());
            }
        }
        r.register_with_unit(name, help, Unit::Seconds, family);
    }
}

/// Gauges from the ACD snapshot (taken `age` ago) and the engine.
fn live_registry(snap: &verde_acd::Snapshot, age: Duration, live: &Live) -> Registry {
    let mut r = Registry::default();
    let calls_active = Gauge::<i64>::default();
    calls_active.set(as_gauge(live.calls_active));
    r.register(
        "verde_calls_active",
        "Calls in progress, agent legs included",
        calls_active,
    );
    let registrations = Gauge::<i64>::default();
    registrations.set(as_gauge(live.registrations));
    r.register(
        "verde_registrations",
        "Agents' phones currently registered",
        registrations,
    );

    let q = QueueGauges { snap };
    q.count(
        &mut r,
        "verde_queue_callers",
        "Live callers waiting in line (callbacks and callers being offered not included)",
        |q| q.waiting.saturating_sub(q.callbacks_waiting),
    );
    q.count(
        &mut r,
        "verde_queue_waiting",
        "Everyone waiting in line, callbacks included",
        |q| q.waiting,
    );
    q.count(
        &mut r,
        "verde_queue_callbacks_waiting",
        "Callbacks waiting in line",
        |q| q.callbacks_waiting,
    );
    q.count(
        &mut r,
        "verde_queue_offering",
        "Callers whose call is ringing an agent",
        |q| q.offering,
    );
    // Nobody in line: the longest wait is zero.
    q.seconds(
        &mut r,
        "verde_queue_longest_wait",
        "Longest wait among the callers in line, 0 when nobody waits",
        |q| Some(q.longest_wait.map_or(Duration::ZERO, |d| d + age)),
    );
    // No agent serving: no estimate at all, which is not the same as no wait.
    q.seconds(
        &mut r,
        "verde_queue_estimated_wait",
        "Estimated wait for a caller joining now, absent while no agent serves the queue",
        |q| q.estimated_wait,
    );

    let states = agent_states();
    let by_state = Family::<StateLabels, Gauge>::default();
    let by_queue_state = Family::<QueueStateLabels, Gauge>::default();
    for state in states {
        // Created at zero so every state is listed.
        let _ = by_state.get_or_create(&StateLabels { state });
        for q in &snap.queues {
            let _ = by_queue_state.get_or_create(&QueueStateLabels {
                queue: q.name.as_str().to_string(),
                state,
            });
        }
    }
    for a in &snap.agents {
        let state = verde_cti::state_label(&a.state);
        by_state.get_or_create(&StateLabels { state }).inc();
        for q in &a.queues {
            // Only queues the ACD knows: an agent's stale queue name must not add series.
            if snap.queues.iter().any(|sq| sq.name == *q) {
                by_queue_state
                    .get_or_create(&QueueStateLabels {
                        queue: q.as_str().to_string(),
                        state,
                    })
                    .inc();
            }
        }
    }
    r.register(
        "verde_agents",
        "Agents by state (each agent once, whatever its queues)",
        by_state,
    );
    r.register(
        "verde_queue_agents",
        "Agents by queue and state (an agent in several queues counts in each)",
        by_queue_state,
    );

    if let Some(pending) = &live.callbacks_pending {
        let family = Family::<QueueLabels, Gauge>::default();
        for (queue, n) in pending {
            family
                .get_or_create(&QueueLabels {
                    queue: queue.clone(),
                })
                .set(as_gauge(*n));
        }
        r.register(
            "verde_callbacks_pending",
            "Callbacks booked and not yet done (pending or being dialed), per queue",
            family,
        );
    }
    r
}

/// The whole `/metrics` body in `format`: live gauges, then the process counters.
pub fn render(snap: &verde_acd::Snapshot, age: Duration, live: &Live, format: Format) -> String {
    render_with(&COUNTERS, snap, age, live, format)
}

fn render_with(
    counters: &Counters,
    snap: &verde_acd::Snapshot,
    age: Duration,
    live: &Live,
    format: Format,
) -> String {
    use prometheus_client::encoding::{prometheus_text, text};
    let gauges = live_registry(snap, age, live);
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &gauges)
            .and_then(|_| prometheus_text::encode(&mut out, &counters.registry)),
        Format::OpenMetrics => text::encode_registry(&mut out, &gauges)
            .and_then(|_| text::encode_registry(&mut out, &counters.registry))
            .and_then(|_| text::encode_eof(&mut out)),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmetrics_parser::{OpenMetricsValue, PrometheusValue};
    use std::collections::BTreeMap;
    use verde_acd::{AgentSnapshot, AgentState, QueueSnapshot, Snapshot};

    /// Every sample of an exposition as `name{k=v,...}` (labels sorted, values unescaped) ->
    /// value, plus each family's type, read back with a parser that follows the formats.
    type Samples = (BTreeMap<String, f64>, BTreeMap<String, String>);

    fn key(name: &str, labels: &[(&str, &str)]) -> String {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        format!("{name}{{{}}}", l.join(","))
    }

    fn labels_of(ls: openmetrics_parser::LabelSet) -> Vec<(String, String)> {
        ls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn key_owned(name: &str, labels: Vec<(String, String)>) -> String {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        key(name, &l)
    }

    fn parse_prometheus(text: &str) -> Samples {
        let exp = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|e| panic!("not valid Prometheus text ({e}):\n{text}"));
        let (mut values, mut types) = (BTreeMap::new(), BTreeMap::new());
        for (name, family) in &exp.families {
            types.insert(name.clone(), family.family_type.to_string());
            for s in family.iter_samples() {
                let v = match &s.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                    PrometheusValue::Counter(c) => c.value.as_f64(),
                    other => panic!("unexpected {other:?}"),
                };
                values.insert(key_owned(name, labels_of(s.get_labelset().unwrap())), v);
            }
        }
        (values, types)
    }

    fn parse_openmetrics(text: &str) -> Samples {
        let exp = openmetrics_parser::openmetrics::parse_openmetrics(text)
            .unwrap_or_else(|e| panic!("not valid OpenMetrics ({e}):\n{text}"));
        let (mut values, mut types) = (BTreeMap::new(), BTreeMap::new());
        for (name, family) in &exp.families {
            types.insert(name.clone(), family.family_type.to_string());
            for s in family.iter_samples() {
                // Counters' samples carry `_total`, as on the wire.
                let (name, v) = match &s.value {
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => {
                        (name.clone(), n.as_f64())
                    }
                    OpenMetricsValue::Counter(c) => (format!("{name}_total"), c.value.as_f64()),
                    other => panic!("unexpected {other:?}"),
                };
                values.insert(key_owned(&name, labels_of(s.get_labelset().unwrap())), v);
            }
        }
        (values, types)
    }

    fn queue(name: &str, waiting: usize, callbacks: usize, longest: Option<u64>) -> QueueSnapshot {
        QueueSnapshot {
            name: name.into(),
            waiting,
            callbacks_waiting: callbacks,
            offering: 1,
            longest_wait: longest.map(Duration::from_secs),
            estimated_wait: None,
            handle_time: Duration::from_secs(180),
            agents_logged_in: 0,
            agents_ready: 0,
            callers: vec![],
        }
    }

    fn agent(id: &str, state: AgentState, queues: &[&str]) -> AgentSnapshot {
        AgentSnapshot {
            id: id.into(),
            name: id.to_string(),
            state,
            in_state: Duration::ZERO,
            current_call: None,
            calls_handled: 0,
            missed: 0,
            queues: queues.iter().map(|&q| q.into()).collect(),
        }
    }

    /// A queue name with every character the formats must escape.
    const ODD: &str = "odd \"name\" \\ and\nline";

    fn snapshot() -> Snapshot {
        Snapshot {
            queues: vec![
                QueueSnapshot {
                    estimated_wait: Some(Duration::from_millis(30_500)),
                    ..queue("pensions", 5, 2, Some(40))
                },
                queue(ODD, 0, 0, None),
            ],
            agents: vec![
                agent("a1", AgentState::Ready, &["pensions"]),
                agent("a2", AgentState::OnCall, &["pensions", ODD]),
                agent(
                    "a3",
                    AgentState::Paused {
                        reason: "lunch".into(),
                    },
                    &["gone"],
                ),
            ],
        }
    }

    #[test]
    fn gauges_come_from_the_snapshot_with_escaped_labels_in_both_formats() {
        let counters = Counters::new();
        let live = Live {
            calls_active: 3,
            registrations: 2,
            callbacks_pending: Some(vec![("pensions".into(), 4)]),
        };
        let age = Duration::from_secs(2);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = render_with(&counters, &snapshot(), age, &live, format);
            let (s, types) = match format {
                Format::Prometheus => parse_prometheus(&text),
                Format::OpenMetrics => parse_openmetrics(&text),
            };
            let v = |name: &str, labels: &[(&str, &str)]| {
                *s.get(&key(name, labels))
                    .unwrap_or_else(|| panic!("{format:?}: no {}:\n{text}", key(name, labels)))
            };
            assert_eq!(types["verde_calls_active"], "gauge");
            assert_eq!(v("verde_calls_active", &[]), 3.0);
            assert_eq!(v("verde_registrations", &[]), 2.0);
            let p = [("queue", "pensions")];
            assert_eq!(v("verde_queue_callers", &p), 3.0);
            assert_eq!(v("verde_queue_waiting", &p), 5.0);
            assert_eq!(v("verde_queue_callbacks_waiting", &p), 2.0);
            assert_eq!(v("verde_queue_offering", &p), 1.0);
            // The snapshot's 40 s plus its 2 s of age.
            assert_eq!(v("verde_queue_longest_wait_seconds", &p), 42.0);
            assert_eq!(
                v("verde_queue_longest_wait_seconds", &[("queue", ODD)]),
                0.0
            );
            assert_eq!(v("verde_queue_estimated_wait_seconds", &p), 30.5);
            // No agent serves the odd queue: no estimate, rather than a wait of zero.
            assert!(!s.contains_key(&key(
                "verde_queue_estimated_wait_seconds",
                &[("queue", ODD)]
            )));
            assert_eq!(v("verde_agents", &[("state", "ready")]), 1.0);
            assert_eq!(v("verde_agents", &[("state", "oncall")]), 1.0);
            assert_eq!(v("verde_agents", &[("state", "paused")]), 1.0);
            assert_eq!(v("verde_agents", &[("state", "wrapup")]), 0.0);
            assert_eq!(
                v("verde_queue_agents", &[("queue", ODD), ("state", "oncall")]),
                1.0
            );
            assert_eq!(
                v(
                    "verde_queue_agents",
                    &[("queue", "pensions"), ("state", "oncall")]
                ),
                1.0
            );
            assert_eq!(
                v(
                    "verde_queue_agents",
                    &[("queue", "pensions"), ("state", "ready")]
                ),
                1.0
            );
            assert!(
                !text.contains("gone"),
                "a queue the ACD does not know must not appear:\n{text}"
            );
            assert_eq!(v("verde_callbacks_pending", &p), 4.0);
        }
        // Without the store's answer the metric is absent, not zero.
        let text = render_with(
            &counters,
            &snapshot(),
            Duration::ZERO,
            &Live::default(),
            Format::Prometheus,
        );
        assert!(!text.contains("verde_callbacks_pending"), "{text}");
    }

    #[test]
    fn counters_add_up_and_carry_total_in_both_formats() {
        let c = Counters::new();
        for _ in 0..3 {
            c.call_finished("abandoned-ivr", "pstn");
        }
        c.call_finished("rejected", "pstn");
        c.rtp_packets(100, 90);
        c.rtp_packets(5, 0);
        let invite = b"INVITE sip:803164@127.0.0.1 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n";
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\ncseq:  2   BYE\r\n\r\n";
        let trying = b"SIP/2.0 100 Trying\r\nCSeq: 1 INVITE\r\n\r\n";
        c.sip(invite, false);
        c.sip(invite, false);
        c.sip(trying, true);
        c.sip(ok, true);
        c.sip(ok, false);
        c.sip(b"\r\n\r\n", false);
        c.malformed.inc();
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = render_with(&c, &snapshot(), Duration::ZERO, &Live::default(), format);
            let (s, types) = match format {
                Format::Prometheus => {
                    let (s, types) = parse_prometheus(&text);
                    assert_eq!(types["verde_calls_total"], "counter");
                    (s, types)
                }
                Format::OpenMetrics => {
                    assert!(text.ends_with("# EOF\n"), "{text}");
                    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
                    let (s, types) = parse_openmetrics(&text);
                    assert_eq!(types["verde_calls"], "counter");
                    assert_eq!(types["verde_queue_longest_wait_seconds"], "gauge");
                    assert!(
                        text.contains("# UNIT verde_queue_longest_wait_seconds seconds\n"),
                        "{text}"
                    );
                    (s, types)
                }
            };
            for family in [
                "verde_rtp_packets",
                "verde_sip_responses",
                "verde_sip_malformed",
            ] {
                let name = match format {
                    Format::Prometheus => format!("{family}_total"),
                    Format::OpenMetrics => family.to_string(),
                };
                assert_eq!(types[&name], "counter", "{format:?}: {types:?}");
            }
            let v = |name: &str, labels: &[(&str, &str)]| {
                s.get(&key(name, labels)).copied().unwrap_or(f64::NAN)
            };
            let calls = |d| {
                v(
                    "verde_calls_total",
                    &[("disposition", d), ("channel", "pstn")],
                )
            };
            assert_eq!(calls("abandoned-ivr"), 3.0);
            assert_eq!(calls("rejected"), 1.0);
            assert_eq!(
                v("verde_rtp_packets_total", &[("direction", "sent")]),
                105.0
            );
            assert_eq!(
                v("verde_rtp_packets_total", &[("direction", "received")]),
                90.0
            );
            assert_eq!(v("verde_sip_requests_total", &[("method", "INVITE")]), 2.0);
            let resp = |name, code, method| v(name, &[("code", code), ("method", method)]);
            assert_eq!(resp("verde_sip_responses_total", "100", "INVITE"), 1.0);
            assert_eq!(resp("verde_sip_responses_total", "200", "BYE"), 1.0);
            assert_eq!(
                resp("verde_sip_responses_received_total", "200", "BYE"),
                1.0
            );
            assert!(resp("verde_sip_responses_received_total", "100", "INVITE").is_nan());
            assert_eq!(v("verde_sip_malformed_total", &[]), 1.0);
        }
    }

    #[test]
    fn sniffing_labels_requests_and_responses_and_ignores_noise() {
        assert_eq!(
            sniff(b"BYE sip:a@b SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n"),
            Some(Sniffed::Request("BYE"))
        );
        assert_eq!(
            sniff(b"FROB sip:a@b SIP/2.0\r\n\r\n"),
            Some(Sniffed::Request("other"))
        );
        // Methods are case-sensitive: a lower-case one is not INVITE.
        assert_eq!(
            sniff(b"invite sip:a@b SIP/2.0\r\n\r\n"),
            Some(Sniffed::Request("other"))
        );
        // A request line without its URI is still an INVITE on the wire (and gets a 400).
        assert_eq!(
            sniff(b"INVITE SIP/2.0\r\n\r\n"),
            Some(Sniffed::Request("INVITE"))
        );
        assert_eq!(
            sniff(b"SIP/2.0 486 Busy Here\r\nCSeq: 7 INVITE\r\n\r\nCSeq: 1 BYE"),
            Some(Sniffed::Response {
                code: 486,
                method: "INVITE"
            })
        );
        // A CSeq in the body does not count; no CSeq in the headers gives `other`.
        assert_eq!(
            sniff(b"SIP/2.0 400 Bad Request\r\nVia: x\r\n\r\nCSeq: 1 BYE"),
            Some(Sniffed::Response {
                code: 400,
                method: "other"
            })
        );
        assert_eq!(sniff(b"SIP/2.0 999 Nope\r\n\r\n"), None);
        assert_eq!(sniff(b"SIP/2.0 20 OK\r\n\r\n"), None);
        assert_eq!(sniff(b"SIP/2.0 2000 OK\r\n\r\n"), None);
        assert_eq!(sniff(b"\r\n\r\n"), None);
        assert_eq!(sniff(b"no newline at all"), None);
        assert_eq!(sniff(b"random words here\n"), None);
        assert_eq!(sniff(&[0xff, 0x00, b'\n']), None);
    }

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        // What Prometheus sends by default.
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
            )),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
        assert!(Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text"));
        assert!(Format::Prometheus.content_type().starts_with("text/plain"));
    }
}
