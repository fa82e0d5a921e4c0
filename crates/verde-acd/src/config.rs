//! Queue and agent configuration, deserialized from the binary's YAML (`queues:` and `agents:`).
//!
//! Durations accept a number of seconds (`30`, `0.5`) or a string with units (`"500ms"`,
//! `"30s"`, `"5m"`, `"1h"`, `"1m30s"`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// How a queue picks among its free agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The agent whose last call ended (or who became ready, if none since login) longest ago.
    #[default]
    LongestIdle,
    /// The first free agent in the order of the `agents:` list.
    FirstFree,
    /// The next free agent after the last one offered, in `agents:` order, wrapping around.
    RoundRobin,
    /// The free agent with the fewest calls handled since the last daily reset.
    FewestCalls,
    /// Every eligible free agent rings; the first to answer takes the call.
    RingAll,
}

/// One queue (`queues:` entry).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    /// How long one offer rings before it counts as no-answer. Default 15s.
    #[serde(default = "secs::<15>", deserialize_with = "deserialize_duration")]
    pub ring_timeout: Duration,
    /// Wrap-up after each call from this queue; the agent takes no call from any queue
    /// meanwhile. Default 10s.
    #[serde(default = "secs::<10>", deserialize_with = "deserialize_duration")]
    pub wrap_up: Duration,
    /// A caller waiting this long leaves through `exits.timeout`. Default: no limit.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub max_wait: Option<Duration>,
    /// A caller arriving when this many are in the queue leaves through `exits.full`.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// Required skills and the minimum level of each (`{billing: 5, italian: 3}`).
    /// An agent lacking a skill has level 0 in it. Empty: every member is eligible.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Tiers that widen the eligible pool as a caller waits: after `after`, each required
    /// level is capped at `min_level` (0 opens the queue to every member).
    #[serde(default)]
    pub escalation: Vec<EscalationTier>,
    #[serde(default)]
    pub announce: AnnounceConfig,
    /// Music-on-hold prompt name, for the binary. Default "moh".
    #[serde(default = "default_moh")]
    pub moh: String,
    /// Consecutive missed offers (no answer / rejected) after which the agent is paused with
    /// reason "no-answer". 0 never pauses. Default 2.
    #[serde(default = "default_misses")]
    pub max_misses_before_pause: u32,
    /// A caller (same number, same queue) who redials within this window after abandoning
    /// regains the original place. 0 disables. Default 60s.
    #[serde(default = "secs::<60>", deserialize_with = "deserialize_duration")]
    pub abandoned_resume: Duration,
    /// Handle time (talk + wrap-up) assumed for the estimated wait until calls have been
    /// measured. Default 120s.
    #[serde(default = "secs::<120>", deserialize_with = "deserialize_duration")]
    pub default_handle_time: Duration,
    #[serde(default)]
    pub exits: ExitsConfig,
    /// Call-me-back offers and how callbacks are dialed. Disabled by default.
    #[serde(default)]
    pub callback: CallbackConfig,
}

impl QueueConfig {
    /// A queue with every option at its default.
    pub fn new(name: impl Into<String>) -> Self {
        QueueConfig {
            name: name.into(),
            strategy: Strategy::default(),
            ring_timeout: secs::<15>(),
            wrap_up: secs::<10>(),
            max_wait: None,
            max_len: None,
            skills: BTreeMap::new(),
            escalation: Vec::new(),
            announce: AnnounceConfig::default(),
            moh: default_moh(),
            max_misses_before_pause: default_misses(),
            abandoned_resume: secs::<60>(),
            default_handle_time: secs::<120>(),
            exits: ExitsConfig::default(),
            callback: CallbackConfig::default(),
        }
    }
}

/// One escalation tier (see [`QueueConfig::escalation`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationTier {
    #[serde(deserialize_with = "deserialize_duration")]
    pub after: Duration,
    pub min_level: u8,
}

/// Periodic announcements to a waiting caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// Announce how many callers are ahead. Default true.
    pub position: bool,
    /// Announce the estimated wait. Default true.
    pub estimated_wait: bool,
    /// First announcement this long after joining. Default 15s.
    #[serde(deserialize_with = "deserialize_duration")]
    pub first_delay: Duration,
    /// Then every `frequency`; 0 announces once. Default 30s.
    #[serde(deserialize_with = "deserialize_duration")]
    pub frequency: Duration,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            position: true,
            estimated_wait: true,
            first_delay: secs::<15>(),
            frequency: secs::<30>(),
        }
    }
}

/// Flow nodes a caller leaves the queue through; opaque to the ACD, which hands them back in
/// [`crate::Action::Exit`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitsConfig {
    /// After `max_wait`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// On arrival when `max_len` callers are in the queue.
    #[serde(default)]
    pub full: Option<String>,
    /// When no member agent is logged in. Unset: callers wait anyway.
    #[serde(default)]
    pub empty: Option<String>,
    /// When the caller presses a key ([`crate::Input::KeyPressed`]). Unset: keys are ignored.
    #[serde(default)]
    pub key: Option<String>,
}

/// How a callback is dialed once it reaches an agent (see [`CallbackConfig::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackMode {
    /// The agent is reserved and rung first, sees who is being called back, then verde dials
    /// the customer.
    #[default]
    AgentFirst,
    /// The agent is reserved, verde dials the customer first and rings the agent once the
    /// customer answers.
    CustomerFirst,
}

/// Call-me-back settings of one queue (`callback:` under a queue).
///
/// The ACD uses `enabled`, the two thresholds and `ceiling` to answer
/// [`crate::Acd::callback_offer`], `mode` and `customer_ring_timeout` for the ring timer of a
/// callback's offer, and `offer_key` to keep that key away from the key exit. The rest
/// (attempts, retry delay, SLA) is carried for the binary's callback basket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackConfig {
    /// Offer callbacks to callers waiting in this queue. Default false.
    pub enabled: bool,
    /// Offer when the caller's estimated wait is over this (or nobody serves the queue).
    /// `null` disables this trigger. Default 120s.
    #[serde(deserialize_with = "deserialize_opt_duration")]
    pub offer_when_wait_over: Option<Duration>,
    /// Offer when more than this many are in the queue (callbacks and callers being offered
    /// included). `null` disables this trigger. Default 10.
    pub offer_when_len_over: Option<usize>,
    /// No offer while the basket holds this many callbacks for the queue. Default 200.
    pub ceiling: usize,
    /// Default agent-first.
    pub mode: CallbackMode,
    /// Dialing attempts per request, the first included. Default 2.
    pub max_attempts: u32,
    /// Between two attempts. Default 10m.
    #[serde(deserialize_with = "deserialize_duration")]
    pub retry_delay: Duration,
    /// Each callback must be made within this many *working* hours of the request (counted by
    /// the binary on the flow's schedule and holidays). Default 8h.
    #[serde(deserialize_with = "deserialize_duration")]
    pub sla: Duration,
    /// The DTMF key that accepts the offer (`1`, `'1'`, `'#'`). Default '1'.
    #[serde(deserialize_with = "deserialize_dtmf_key")]
    pub offer_key: char,
    /// How long the customer's phone rings per attempt. In customer-first mode the reserved
    /// agent's offer times out after this plus the queue's `ring_timeout`. Default 30s.
    #[serde(deserialize_with = "deserialize_duration")]
    pub customer_ring_timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            enabled: false,
            offer_when_wait_over: Some(secs::<120>()),
            offer_when_len_over: Some(10),
            ceiling: 200,
            mode: CallbackMode::default(),
            max_attempts: 2,
            retry_delay: secs::<600>(),
            sla: secs::<{ 8 * 3600 }>(),
            offer_key: '1',
            customer_ring_timeout: secs::<30>(),
        }
    }
}

/// Keys a caller can send as DTMF (RFC 4733 events 0-15).
pub fn is_dtmf_key(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// `deserialize_with` helper for a DTMF key: a single digit number or a one-character string.
pub fn deserialize_dtmf_key<'de, D: Deserializer<'de>>(d: D) -> Result<char, D::Error> {
    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = char;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a DTMF key: 0-9, '*', '#' or A-D")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<char, E> {
            u32::try_from(v)
                .ok()
                .filter(|v| *v <= 9)
                .and_then(|v| char::from_digit(v, 10))
                .ok_or_else(|| E::custom(format!("{v} is not a DTMF key (0-9, *, #, A-D)")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<char, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is not a DTMF key (0-9, *, #, A-D)")))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<char, E> {
            let mut chars = v.chars();
            match (chars.next().map(|c| c.to_ascii_uppercase()), chars.next()) {
                (Some(c), None) if is_dtmf_key(c) => Ok(c),
                _ => Err(E::custom(format!(
                    "{v:?} is not a DTMF key (0-9, *, #, A-D)"
                ))),
            }
        }

        fn visit_char<E: de::Error>(self, v: char) -> Result<char, E> {
            self.visit_str(v.encode_utf8(&mut [0; 4]))
        }
    }

    d.deserialize_any(KeyVisitor)
}

/// One agent (`agents:` entry). Credentials are the binary's business.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Skill levels, `{billing: 7}`.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Queues joined at login unless the login names others.
    #[serde(default)]
    pub queues: Vec<String>,
}

impl AgentConfig {
    pub fn new(id: impl Into<String>, queues: &[&str]) -> Self {
        AgentConfig {
            id: id.into(),
            name: None,
            skills: BTreeMap::new(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
        }
    }
}

const fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

fn default_moh() -> String {
    "moh".to_string()
}

fn default_misses() -> u32 {
    2
}

/// Parses `30`, `2.5`, `500ms`, `30s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "invalid duration {text:?}: use seconds (30) or numbers with units (500ms, 30s, 5m, 1h, 1m30s)"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| err())?;
    }
    Ok(total)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration: seconds (30) or a string such as \"30s\", \"5m\", \"500ms\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("negative duration {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| E::custom(format!("invalid duration {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// `deserialize_with` helper for a [`Duration`] field (see [`parse_duration`]).
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// `deserialize_with` helper for an `Option<Duration>` field; pair it with `#[serde(default)]`.
pub fn deserialize_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct Wrap(Duration);
    impl<'de> Deserialize<'de> for Wrap {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize_duration(d).map(Wrap)
        }
    }
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_all_forms() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "5x", "-3", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn queue_yaml_with_defaults_and_overrides() {
        let yaml = r#"
name: support
strategy: round-robin
ring_timeout: 20
wrap_up: "5s"
max_wait: 5m
max_len: 40
skills: {billing: 5}
escalation:
  - {after: 30s, min_level: 3}
announce: {first_delay: 10s, estimated_wait: false}
exits: {timeout: voicemail, empty: closed}
"#;
        let q: QueueConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(q.strategy, Strategy::RoundRobin);
        assert_eq!(q.ring_timeout, Duration::from_secs(20));
        assert_eq!(q.wrap_up, Duration::from_secs(5));
        assert_eq!(q.max_wait, Some(Duration::from_secs(300)));
        assert_eq!(q.max_len, Some(40));
        assert_eq!(q.skills.get("billing"), Some(&5));
        assert_eq!(q.escalation[0].after, Duration::from_secs(30));
        assert_eq!(q.announce.first_delay, Duration::from_secs(10));
        assert!(q.announce.position);
        assert!(!q.announce.estimated_wait);
        assert_eq!(q.announce.frequency, Duration::from_secs(30));
        assert_eq!(q.exits.timeout.as_deref(), Some("voicemail"));
        assert_eq!(q.exits.full, None);
        assert_eq!(q.moh, "moh");
        assert_eq!(q.max_misses_before_pause, 2);
        assert_eq!(q.abandoned_resume, Duration::from_secs(60));

        let minimal: QueueConfig = serde_yaml::from_str("name: sales").unwrap();
        assert_eq!(minimal, QueueConfig::new("sales"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        let err = serde_yaml::from_str::<QueueConfig>("name: a\nring_timout: 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ring_timout"), "{err}");
        let err = serde_yaml::from_str::<QueueConfig>("name: a\nwrap_up: soon")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        assert!(serde_yaml::from_str::<QueueConfig>("name: a\nstrategy: random").is_err());
        assert!(serde_yaml::from_str::<AgentConfig>("id: a\npassword: x").is_err());
    }

    #[test]
    fn callback_yaml_with_defaults_and_overrides() {
        let q: QueueConfig = serde_yaml::from_str(
            r#"
name: support
callback:
  enabled: true
  offer_when_wait_over: 3m
  offer_when_len_over: ~
  ceiling: 50
  mode: customer-first
  retry_delay: 15m
  offer_key: 9
"#,
        )
        .unwrap();
        let cb = &q.callback;
        assert!(cb.enabled);
        assert_eq!(cb.offer_when_wait_over, Some(Duration::from_secs(180)));
        assert_eq!(cb.offer_when_len_over, None);
        assert_eq!(cb.ceiling, 50);
        assert_eq!(cb.mode, CallbackMode::CustomerFirst);
        assert_eq!(cb.retry_delay, Duration::from_secs(900));
        assert_eq!(cb.offer_key, '9');
        assert_eq!(cb.max_attempts, 2);
        assert_eq!(cb.sla, Duration::from_secs(8 * 3600));
        assert_eq!(cb.customer_ring_timeout, Duration::from_secs(30));

        let off = QueueConfig::new("sales").callback;
        assert!(!off.enabled);
        assert_eq!(off.offer_when_wait_over, Some(Duration::from_secs(120)));
        assert_eq!(off.offer_when_len_over, Some(10));
        assert_eq!((off.ceiling, off.offer_key), (200, '1'));
        assert_eq!(off.mode, CallbackMode::AgentFirst);
        assert_eq!(off.retry_delay, Duration::from_secs(600));

        for (yaml, key) in [("'#'", '#'), ("\"*\"", '*'), ("0", '0'), ("b", 'B')] {
            let q: QueueConfig =
                serde_yaml::from_str(&format!("name: a\ncallback: {{offer_key: {yaml}}}")).unwrap();
            assert_eq!(q.callback.offer_key, key, "{yaml}");
        }
        for bad in ["10", "'12'", "x", "-1"] {
            let err = serde_yaml::from_str::<QueueConfig>(&format!(
                "name: a\ncallback: {{offer_key: {bad}}}"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("not a DTMF key"), "{bad}: {err}");
        }
        assert!(serde_yaml::from_str::<QueueConfig>("name: a\ncallback: {mode: random}").is_err());
        assert!(serde_yaml::from_str::<QueueConfig>("name: a\ncallback: {ceilng: 3}").is_err());
    }

    #[test]
    fn agent_yaml() {
        let a: AgentConfig = serde_yaml::from_str(
            "id: \"1001\"\nname: Anna\nskills: {billing: 7}\nqueues: [support, sales]",
        )
        .unwrap();
        assert_eq!(a.id, "1001");
        assert_eq!(a.name.as_deref(), Some("Anna"));
        assert_eq!(a.skills.get("billing"), Some(&7));
        assert_eq!(a.queues, vec!["support", "sales"]);
    }
}
