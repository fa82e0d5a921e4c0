//! The engine's configuration: one YAML file, every option with a default.
//!
//! The defaults are the embedded `default-config.yaml`, so `verde` with no file runs the demo.
//! A user file is read over the same structure (unknown fields refused), then command-line flags
//! override single values. Every option is documented in `docs/config.md`.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    /// Folder of IVR flow files.
    pub flows: PathBuf,
    /// Folder of prompts (`<lang>/<name>.wav`...).
    pub sounds: PathBuf,
    /// Folder for the embedded store and other durable files.
    pub data: PathBuf,
    pub trunks: Vec<Trunk>,
    /// DID -> flow name, overriding the `numbers` a flow declares.
    #[serde(default)]
    pub numbers: BTreeMap<String, String>,
    /// ACD queues, named by the flows' `queue` nodes.
    #[serde(default)]
    pub queues: Vec<verde_acd::QueueConfig>,
    /// Agents: SIP accounts (digest) and ACD membership.
    #[serde(default)]
    pub agents: Vec<AgentAccount>,
    /// Supervisors: CTI accounts with the supervisor role (wallboard, forced states, moves).
    #[serde(default)]
    pub supervisors: Vec<SupervisorAccount>,
    /// The CTI websocket's sessions.
    pub cti: CtiConfig,
    /// Numbers an authenticated agent dials to change state.
    pub features: FeatureCodes,
    /// Where verde places calls of its own (callbacks).
    pub outbound: Outbound,
    /// Service levels of tasks, in working hours of the flow's schedule.
    pub tasks: TaskSla,
    /// How long a graceful shutdown waits for calls in progress.
    #[serde(with = "humantime_secs")]
    pub shutdown_grace: Duration,
    /// KPI reports and exports: the service's time zone and the contract's targets.
    #[serde(default)]
    pub kpi: KpiConfig,
    /// Recording of conversations with agents, per queue.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Browser calls: the public "call now" page and the agents' in-browser softphone.
    #[serde(default)]
    pub webrtc: WebRtcSettings,
    /// Where records and tasks live: the embedded SQLite store in `data`, or a PostgreSQL
    /// database shared by several nodes.
    #[serde(default)]
    pub store: StoreConfig,
}

/// `store:`: the embedded store, or PostgreSQL shared by several nodes (docs/deploy.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// libpq conninfo (`host=... dbname=...`) or `postgres://` URL; None = SQLite in `data`.
    pub postgres: Option<String>,
    /// This node's name in a shared store; None = the host name. Unique per node.
    pub node: Option<String>,
    /// Silence after which another node adopts this node's callbacks.
    #[serde(with = "humantime_secs")]
    pub node_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            postgres: None,
            node: None,
            node_timeout: Duration::from_secs(30),
        }
    }
}

impl StoreConfig {
    /// `node`, or the host name, or `verde` when even that is unknown.
    pub fn node_name(&self) -> String {
        if let Some(n) = self
            .node
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return n.to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "verde".to_string())
    }
}

/// `webrtc:`: browsers calling in from `/call/{did}` and agents answering in `/agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcSettings {
    pub enabled: bool,
    /// The address in our ICE host candidate (the public one behind a 1:1 NAT); default
    /// `media.ip`. Sockets bind `media.ip`.
    pub public_ip: Option<IpAddr>,
    /// One UDP port per WebRTC leg (rtcp-mux, BUNDLE), apart from the RTP range so firewall
    /// rules stay simple.
    pub ports: PortRange,
    /// Audio accepted from browsers, in our order: `pcmu`, `pcma`, `opus` (transcoded).
    pub codecs: Vec<String>,
    /// Concurrent public web calls, whole engine.
    pub max_calls: usize,
    /// Concurrent public web calls from one address.
    pub max_calls_per_ip: usize,
    /// New public web calls per address per minute.
    pub calls_per_minute_per_ip: usize,
    /// A leg that never connects (ICE + DTLS) is given up after this many seconds.
    pub ice_failed_s: u64,
    /// Page origins allowed to open `/webrtc` besides the engine's own (`https://www.inps.it`).
    pub allowed_origins: Vec<String>,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings {
            enabled: true,
            public_ip: None,
            ports: PortRange {
                low: 30000,
                high: 30999,
            },
            codecs: vec!["pcmu".into(), "pcma".into(), "opus".into()],
            max_calls: 100,
            max_calls_per_ip: 2,
            calls_per_minute_per_ip: 10,
            ice_failed_s: 15,
            allowed_origins: Vec::new(),
        }
    }
}

impl WebRtcSettings {
    /// The codecs named in `codecs`, checked at load.
    pub fn audio_codecs(&self) -> anyhow::Result<Vec<verde_webrtc::AudioCodec>> {
        use verde_webrtc::AudioCodec;
        let list = self
            .codecs
            .iter()
            .map(|c| match c.to_ascii_lowercase().as_str() {
                "pcmu" => Ok(AudioCodec::Pcmu),
                "pcma" => Ok(AudioCodec::Pcma),
                "opus" => Ok(AudioCodec::Opus),
                other => Err(anyhow::anyhow!(
                    "webrtc.codecs: unknown codec {other:?} (pcmu, pcma or opus)"
                )),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if list.is_empty() {
            anyhow::bail!("webrtc.codecs: name at least one codec");
        }
        Ok(list)
    }
}

/// `recording:`: conversations between callers and agents recorded as stereo WAV (caller left,
/// agent right) under `<data>/recordings/`, per queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Prompt the caller hears when a recording of its call starts (privacy law); null: none.
    pub announce: Option<String>,
    /// Queue name -> policy; queues not named are not recorded.
    pub queues: BTreeMap<String, QueueRecording>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            announce: Some("recording_notice".into()),
            queues: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRecording {
    pub mode: RecordMode,
    /// For `mode: percent`: the share of calls recorded, 1 to 100.
    #[serde(default)]
    pub percent: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    #[default]
    Off,
    /// Every conversation.
    All,
    /// A random share of the conversations (`percent`).
    Percent,
    /// Only when the agent asks from its bar (`record`).
    OnDemand,
}

/// `kpi:`: how `verde report`, `verde export` and `/reports` read the stored data.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KpiConfig {
    /// IANA name of the zone whose calendar days, months and hours the reports use, and in
    /// which exported instants are written.
    pub time_zone: String,
    /// Measurement windows and targets (`docs/kpi.md`); fields not named keep their default.
    pub targets: verde_report::Targets,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            time_zone: "Europe/Rome".to_string(),
            targets: verde_report::Targets::default(),
        }
    }
}

impl KpiConfig {
    /// The service's zone; `validate` has refused names that do not parse.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Europe::Rome)
    }

    fn validate(&self, name: &str) -> Result<()> {
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            bail!(
                "{name}: kpi.time_zone {:?} is not an IANA time zone (e.g. Europe/Rome)",
                self.time_zone
            );
        }
        self.targets
            .validate()
            .map_err(|e| anyhow::anyhow!("{name}: kpi.targets: {e}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Address for SIP over UDP and TCP.
    pub listen: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// Calls beyond this get 503 with Retry-After.
    pub max_calls: usize,
    /// Longest call the engine keeps up, a guard against lost BYEs.
    #[serde(with = "humantime_secs")]
    pub max_call_duration: Duration,
    /// Value of the User-Agent / Server header.
    pub user_agent: String,
    /// Digest realm for agents' phones.
    pub realm: String,
    /// 64 hex digits shared by nodes that must accept each other's nonces; random when null.
    pub auth_secret: Option<String>,
    /// Digest algorithms offered to phones, in order of preference (`SHA-256`, `MD5`).
    pub digest_algorithms: Vec<String>,
    /// Lifetime of a digest nonce.
    #[serde(with = "humantime_secs")]
    pub nonce_ttl: Duration,
    /// Registration expiry bounds and default, in seconds.
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Proxies (Kamailio) that relay phones' requests: for those, the digest failure limiter
    /// counts the address in the phone's own Via (`received`), not the proxy's.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// SIP over TLS: off while `listen` is null.
    #[serde(default)]
    pub tls: SipTls,
}

/// `sip.tls`: a TLS listener for trunks and phones, beside UDP and TCP on `sip.listen`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipTls {
    /// Address for SIP over TLS (usually port 5061); null: no TLS listener.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain, the server's certificate first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// A PEM certificate chain and its key (`http.tls`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An agent's account: the SIP user its phone registers as, and its ACD membership.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAccount {
    /// SIP user name and ACD agent id.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Digest password (prefer `ha1_sha256`/`ha1_md5` in production files).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ha1_md5: Option<String>,
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    #[serde(default)]
    pub queues: Vec<String>,
    /// Where the agent answers an offered call: `phone` (it rings; the bar pops up too) or
    /// `bar` (while the agent's bar is connected only the bar rings, and its Answer button
    /// calls the phone with an auto-answer request: for phones set to auto-answer).
    #[serde(default)]
    pub answer_from: AnswerFrom,
    /// SRTP (SDES) on the calls verde places to this agent's phone: `mandatory` offers only
    /// `RTP/SAVP`, `optional` offers plain RTP (and accepts SRTP if the phone re-offers it),
    /// `off` refuses SRTP.
    #[serde(default)]
    pub srtp: AgentSrtp,
}

/// `agents[].srtp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSrtp {
    #[default]
    Optional,
    Mandatory,
    Off,
}

impl AgentSrtp {
    pub fn policy(self) -> verde_media::SrtpPolicy {
        match self {
            AgentSrtp::Optional => verde_media::SrtpPolicy::Accept,
            AgentSrtp::Mandatory => verde_media::SrtpPolicy::Require,
            AgentSrtp::Off => verde_media::SrtpPolicy::Off,
        }
    }
}

/// `media.srtp`: SRTP (SDES) on the calls verde answers (trunks, SIP callers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSrtp {
    /// Answer `RTP/SAVP` when offered, plain RTP otherwise.
    #[default]
    Accept,
    /// Refuse plain offers with 488.
    Require,
    /// Refuse SRTP offers with 488.
    Off,
}

impl MediaSrtp {
    pub fn policy(self) -> verde_media::SrtpPolicy {
        match self {
            MediaSrtp::Accept => verde_media::SrtpPolicy::Accept,
            MediaSrtp::Require => verde_media::SrtpPolicy::Require,
            MediaSrtp::Off => verde_media::SrtpPolicy::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFrom {
    #[default]
    Phone,
    Bar,
}

/// A supervisor's CTI account; the secret is checked like an agent's (plain or HA1 digests in
/// the SIP realm), so one hashing scheme covers both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorAccount {
    pub id: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ha1_md5: Option<String>,
    #[serde(default)]
    pub ha1_sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtiConfig {
    /// How long a CTI login stays valid.
    #[serde(with = "humantime_secs")]
    pub token_ttl: Duration,
}

impl AgentAccount {
    pub fn acd(&self) -> verde_acd::AgentConfig {
        verde_acd::AgentConfig {
            id: self.id.clone(),
            name: self.name.clone(),
            skills: self.skills.clone(),
            queues: self.queues.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// SIP URI template for customers' numbers: `{number}` is replaced, e.g.
    /// `sip:{number}@carrier.example:5060`. Null: callbacks cannot be dialed.
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSla {
    #[serde(with = "humantime_secs")]
    pub voicemail_sla: Duration,
    #[serde(with = "humantime_secs")]
    pub callback_sla: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureCodes {
    pub login: String,
    pub pause: String,
    pub logout: String,
    /// Take the oldest voicemail of the agent's queues in charge and hear it.
    pub take_task: String,
    /// Close the voicemail the agent has taken.
    pub close_task: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Address written in SDP. Default: the SIP listen address, or when that is a wildcard the
    /// address of the interface that routes outwards (127.0.0.1 when there is none).
    pub ip: Option<IpAddr>,
    /// RTP port range `LOW-HIGH` (even ports for RTP, the next odd for RTCP).
    pub rtp_ports: PortRange,
    /// Detect DTMF tones in the audio when the caller did not offer telephone-event.
    pub inband_dtmf: bool,
    /// SRTP (SDES) on answered SIP legs.
    #[serde(default)]
    pub srtp: MediaSrtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Reverse proxies (nginx for TLS) whose `X-Forwarded-For` names the client: per-address
    /// limits and "this host only" checks then apply to the client, not to the proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// HTTPS (and WSS) with this certificate; null: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// A carrier trunk: INVITEs to our numbers are accepted only from these addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: String,
    pub addresses: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("port range {s:?}: expected LOW-HIGH, e.g. 20000-29999"))?;
        let low: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("port range {s:?}: bad low port"))?;
        let high: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("port range {s:?}: bad high port"))?;
        if low < 1024 || high <= low || high - low < 3 {
            return Err(format!(
                "port range {s:?}: need 1024 <= LOW < HIGH with room for at least 2 RTP/RTCP pairs"
            ));
        }
        Ok(PortRange { low, high })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Durations written as `30s`, `5m`, `1h` or a bare number of seconds.
mod humantime_secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let secs = match Raw::deserialize(d)? {
            Raw::N(n) => n,
            Raw::S(s) => super::parse_duration_secs(&s).map_err(serde::de::Error::custom)?,
        };
        Ok(Duration::from_secs(secs))
    }
}

/// The trunk whose addresses include `ip`.
pub fn trunk_in(trunks: &[Trunk], ip: IpAddr) -> Option<&Trunk> {
    trunks
        .iter()
        .find(|t| t.addresses.iter().any(|net| net.contains(&ip)))
}

/// Maps are merged key by key; anything else in `top` replaces what is below.
fn overlay(base: &mut serde_yaml::Value, top: serde_yaml::Value) {
    match (base, top) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) if !top.is_null() => *slot = top,
        _ => {}
    }
}

fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("duration {s:?}: expected e.g. 30s, 5m, 1h"))
}

impl Config {
    /// The embedded defaults, overlaid with the file at `path` if given: the file needs only the
    /// options it changes; unknown options are refused with their name.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            None => Config::parse("<embedded default-config.yaml>", None),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {name}"))?;
                Config::parse(&name, Some(&text))
            }
        }
    }

    /// The embedded defaults overlaid with `user` (a file's text, named `name` in errors).
    pub fn parse(name: &str, user: Option<&str>) -> Result<Config> {
        let mut merged: serde_yaml::Value =
            serde_yaml::from_str(DEFAULT_CONFIG).context("embedded default-config.yaml")?;
        if let Some(text) = user {
            let user: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| match e.location() {
                    Some(loc) => anyhow::anyhow!("{name}:{}: {e}", loc.line()),
                    None => anyhow::anyhow!("{name}: {e}"),
                })?;
            overlay(&mut merged, user);
        }
        let cfg: Config =
            serde_yaml::from_value(merged).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        cfg.validate(name)?;
        Ok(cfg)
    }

    /// Checks what the command line may change after loading (port ranges).
    pub fn check_overrides(&self) -> Result<()> {
        let (w, m) = (&self.webrtc.ports, &self.media.rtp_ports);
        if self.webrtc.enabled && w.low <= m.high && m.low <= w.high {
            bail!(
                "webrtc.ports {}-{} overlaps media.rtp_ports {}-{}: give each its own range",
                w.low,
                w.high,
                m.low,
                m.high
            );
        }
        Ok(())
    }

    fn validate(&self, name: &str) -> Result<()> {
        if !self.sip.udp && !self.sip.tcp {
            bail!("{name}: sip: enable at least one of udp and tcp");
        }
        if let Some(listen) = self.sip.tls.listen {
            if self.sip.tls.cert.is_none() || self.sip.tls.key.is_none() {
                bail!("{name}: sip.tls.listen {listen} needs sip.tls.cert and sip.tls.key (PEM files)");
            }
        }
        if self.store.node_timeout < Duration::from_secs(5) {
            bail!(
                "{name}: store.node_timeout {}s is too short: a busy node would lose its \
                 callbacks to another (at least 5s; the heartbeat is every few seconds)",
                self.store.node_timeout.as_secs()
            );
        }
        if self.sip.max_calls == 0 {
            bail!("{name}: sip.max_calls must be at least 1");
        }
        if self.sip.digest_algorithms.is_empty()
            || self
                .sip
                .digest_algorithms
                .iter()
                .any(|a| !matches!(a.to_ascii_uppercase().as_str(), "MD5" | "SHA-256"))
        {
            bail!("{name}: sip.digest_algorithms: list MD5 and/or SHA-256");
        }
        if let Some(uri) = &self.outbound.uri {
            if !uri.contains("{number}")
                || verde_sip::uri_socket_addr(&uri.replace("{number}", "1")).is_none()
            {
                bail!("{name}: outbound.uri must be a sip: URI with {{number}} and an IP host, e.g. sip:{{number}}@192.0.2.1:5060");
            }
        }
        self.webrtc
            .audio_codecs()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if let Some(secret) = &self.sip.auth_secret {
            if secret.len() != 64 || !secret.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("{name}: sip.auth_secret must be 64 hex digits");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.agents {
            if !seen.insert(&a.id) {
                bail!("{name}: agents: id {:?} appears twice", a.id);
            }
            if a.password.is_none() && a.ha1_md5.is_none() && a.ha1_sha256.is_none() {
                bail!(
                    "{name}: agent {:?}: set password, ha1_md5 or ha1_sha256",
                    a.id
                );
            }
            for q in &a.queues {
                if !self.queues.iter().any(|c| &c.name == q) {
                    bail!(
                        "{name}: agent {:?}: queue {q:?} is not configured under queues",
                        a.id
                    );
                }
            }
        }
        self.kpi.validate(name)?;
        for (queue, policy) in &self.recording.queues {
            if !self.queues.iter().any(|q| q.name == *queue) {
                bail!("{name}: recording: queue {queue:?} is not defined under queues:");
            }
            if policy.mode == RecordMode::Percent && !(1..=100).contains(&policy.percent) {
                bail!("{name}: recording: {queue}: mode percent needs percent: 1 to 100");
            }
        }
        for sup in &self.supervisors {
            if !seen.insert(&sup.id) {
                bail!(
                    "{name}: supervisors: id {:?} is already an agent or a supervisor (one name, one role)",
                    sup.id
                );
            }
            if sup.password.is_none() && sup.ha1_md5.is_none() && sup.ha1_sha256.is_none() {
                bail!(
                    "{name}: supervisor {:?}: set password, ha1_md5 or ha1_sha256",
                    sup.id
                );
            }
        }
        Ok(())
    }

    /// The address written in SDP.
    pub fn media_ip(&self) -> IpAddr {
        if let Some(ip) = self.media.ip {
            return ip;
        }
        let bind = self.sip.listen.ip();
        if !bind.is_unspecified() {
            return bind;
        }
        // Connecting a UDP socket sends nothing; it only asks the kernel which local address
        // routes outwards. 192.0.2.1 is TEST-NET-1, never a real destination.
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
            .and_then(|s| s.local_addr())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_admit_only_loopback_trunk() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.sip.listen.port(), 5060);
        assert!(trunk_in(&c.trunks, "127.0.0.1".parse().unwrap()).is_some());
        assert!(trunk_in(&c.trunks, "127.0.0.2".parse().unwrap()).is_none());
        assert!(trunk_in(&c.trunks, "10.1.2.3".parse().unwrap()).is_none());
    }

    #[test]
    fn tls_listeners_need_their_files() {
        let c = Config::load(None).unwrap();
        assert!(c.sip.tls.listen.is_none() && c.http.tls.is_none());
        let dir = std::env::temp_dir().join(format!("verde-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.yaml");
        std::fs::write(&p, "sip:\n  tls: { listen: 0.0.0.0:5061, cert: c.pem }\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("sip.tls.key"), "{err}");
        std::fs::write(
            &p,
            "sip:\n  tls: { listen: 0.0.0.0:5061, cert: c.pem, key: k.pem }\n\
             http:\n  tls: { cert: h.pem, key: hk.pem }\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.sip.tls.listen.map(|a| a.port()), Some(5061));
        assert_eq!(c.http.tls.unwrap().key, PathBuf::from("hk.pem"));
        // The defaults' other sip keys survive the overlay.
        assert!(c.sip.udp && c.sip.tcp);
        std::fs::write(&p, "http:\n  tls: { cert: h.pem }\n").unwrap();
        assert!(Config::load(Some(&p)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn agents_must_name_configured_queues_and_have_credentials() {
        let dir = std::env::temp_dir().join(format!("verde-cfg-agents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.yaml");
        std::fs::write(
            &p,
            "agents:\n  - id: '1001'\n    password: x\n    queues: [nowhere]\n",
        )
        .unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("nowhere"), "{err}");
        std::fs::write(&p, "agents:\n  - id: '1001'\n    queues: [pensions]\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        std::fs::write(
            &p,
            "agents:\n  - id: '1001'\n    password: x\n    queues: [pensions]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.agents[0].acd().queues, vec!["pensions".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kpi_section_keeps_unnamed_defaults_and_refuses_bad_values_by_name() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.kpi.tz(), chrono_tz::Europe::Rome);
        assert_eq!(c.kpi.targets, verde_report::Targets::default());

        let dir = std::env::temp_dir().join(format!("verde-cfg-kpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.yaml");
        std::fs::write(
            &p,
            "kpi:\n  time_zone: Europe/London\n  targets:\n    service_level_30s: 0.85\n    abandon_rate: null\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.kpi.tz(), chrono_tz::Europe::London);
        assert_eq!(c.kpi.targets.service_level_30s, Some(0.85));
        assert_eq!(
            c.kpi.targets.abandon_rate, None,
            "null switches a target off"
        );
        assert_eq!(
            c.kpi.targets.short_abandon_s, 15,
            "unnamed fields keep their default"
        );

        std::fs::write(&p, "kpi:\n  targets:\n    service_level_30s: 80\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(
            err.contains("kpi.targets") && err.contains("service_level_30s"),
            "{err}"
        );
        std::fs::write(&p, "kpi:\n  time_zone: Europe/Roma\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(
            err.contains("kpi.time_zone") && err.contains("Roma"),
            "{err}"
        );
        std::fs::write(&p, "kpi:\n  targets:\n    service_level_3s: 0.9\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("service_level_3s"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn port_ranges_and_durations_are_checked() {
        assert_eq!(
            "20000-20100".parse::<PortRange>(),
            Ok(PortRange {
                low: 20000,
                high: 20100
            })
        );
        assert!("20100-20000".parse::<PortRange>().is_err());
        assert!("80-90".parse::<PortRange>().is_err());
        assert_eq!(parse_duration_secs("5m"), Ok(300));
        assert_eq!(parse_duration_secs("12"), Ok(12));
        assert!(parse_duration_secs("soon").is_err());
    }

    #[test]
    fn store_section_defaults_to_sqlite_and_takes_a_shared_database() {
        let c = Config::parse("defaults", None).unwrap();
        assert_eq!(c.store.postgres, None);
        assert_eq!(c.store.node_timeout, Duration::from_secs(30));
        assert!(!c.store.node_name().is_empty());
        let c = Config::parse(
            "pg.yaml",
            Some("store:\n  postgres: \"host=/run/pg dbname=verde\"\n  node: \" a1 \"\n  node_timeout: 1m\n"),
        )
        .unwrap();
        assert_eq!(
            c.store.postgres.as_deref(),
            Some("host=/run/pg dbname=verde")
        );
        assert_eq!(c.store.node_name(), "a1");
        assert_eq!(c.store.node_timeout, Duration::from_secs(60));
        let err = Config::parse("short.yaml", Some("store:\n  node_timeout: 2\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("short.yaml") && err.contains("node_timeout"),
            "{err}"
        );
        let err = Config::parse("typo.yaml", Some("store:\n  postgress: x\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgress"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_with_a_line() {
        let bad = "sip:\n  max_cals: 3\n";
        let dir = std::env::temp_dir().join(format!("verde-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.yaml");
        std::fs::write(&p, bad).unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("max_cals"),
            "{err}"
        );
        std::fs::write(
            &p,
            "sip:\n  max_calls: 3\nhttp:\n  listen: 127.0.0.1:9999\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(
            (c.sip.max_calls, c.http.listen.port(), c.sip.listen.port()),
            (3, 9999, 5060)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
