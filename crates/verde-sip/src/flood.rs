//! Per-source flood protection: token buckets for the requests that cost us work, and a
//! penalty box that silences scanners and brute-force sources.
//!
//! The transport task asks [`FloodGuard::check`] about every packet *before* parsing it, with
//! the source address it came from; a [`Verdict::Drop`] means the packet is thrown away with no
//! response, so a scanner learns nothing and costs us one hash lookup. What only the parsed
//! message reveals (a wrong password, a 403/404, a malformed message) comes back through
//! [`FloodGuard::offence`]; enough offences in a window put the source in the box.
//!
//! * **Buckets** (per source): out-of-dialog-looking `REGISTER` and `INVITE` each have their
//!   own bucket. The method is sniffed from the request line, not parsed, so an in-dialog
//!   re-INVITE also takes a token; at these rates that is harmless. A dropped request from an
//!   honest UDP client is not lost: its transaction retransmits it (Timer A/E), which is why
//!   dropping is the right answer to excess rather than `503`.
//! * **Penalty box**: a source that sends a known scanner `User-Agent` is boxed at once; one
//!   that collects [`STRIKES`] offences within [`STRIKE_WINDOW`] is boxed too. The first box
//!   lasts [`BOX_BASE`], each repeat twice as long up to [`BOX_MAX`]; a source that stays out
//!   of trouble for [`BOX_MAX`] starts again from [`BOX_BASE`].
//! * **Logging**: each drop may carry a [`Throttled`] report; there is at most one per source
//!   per [`LOG_EVERY`] (or when the reason changes), with the number of packets dropped since
//!   the previous one, so a flood produces a few log lines, not one per packet.
//! * **Memory**: at most [`MAX_SOURCES`] sources are tracked, in least-recently-seen order;
//!   a new source evicts the one seen longest ago in O(1). A spoofed-source flood therefore
//!   cannot grow the table, while an active scanner (which keeps touching its entry) stays
//!   boxed. Sources are only added for REGISTER/INVITE, scanner agents and offences: plain
//!   traffic (responses, ACK, BYE, keep-alives) is never inserted.
//!
//! IPv6 sources are grouped by /64 (one host usually owns the whole /64), IPv4-mapped IPv6 as
//! IPv4, as in [`crate::FailureLimiter`].
//!
//! This module knows nothing of trunks: the caller decides which sources are exempt (verde
//! exempts its configured trunks, whose volume is bounded by `sip.max_calls` with a `503`).
//! Sans-IO: every call takes `now`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hashlink::LruCache;

/// REGISTERs per second a source may send, on average. A phone registers every few minutes
/// (two requests with the challenge); this leaves room for an office of phones behind one NAT.
pub const REGISTER_RATE: f64 = 20.0;
/// REGISTERs a source may send at once: twenty phones behind one NAT rebooting together.
pub const REGISTER_BURST: f64 = 40.0;
/// INVITEs per second from a source that is not a trunk: agents' feature codes and
/// re-INVITEs, dialled by people.
pub const INVITE_RATE: f64 = 10.0;
/// INVITEs a non-trunk source may send at once.
pub const INVITE_BURST: f64 = 20.0;
/// Offences (failed digest, 403/404, malformed message) that put a source in the box...
pub const STRIKES: u32 = 10;
/// ...when they fall within this window (counted from the first of them).
pub const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long a source is silenced the first time.
pub const BOX_BASE: Duration = Duration::from_secs(60);
/// The longest silence; also how long a source must behave before its next box is short again.
pub const BOX_MAX: Duration = Duration::from_secs(3600);
/// At most one report per source per period.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// Sources tracked at most (about 100 bytes each).
pub const MAX_SOURCES: usize = 16_384;

/// `User-Agent` substrings (ASCII, compared without case) of tools that only scanners and
/// brute-forcers use. Tools admins use for monitoring (sipsak, SIPp) are not listed.
pub const SCANNER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "sipscan",
    "iwar",
    "sundayddr",
    "pplsip",
    "siparmyknife",
];

/// The limits of a [`FloodGuard`]; [`Limits::default`] is the documented constants.
#[derive(Debug, Clone)]
pub struct Limits {
    pub register_rate: f64,
    pub register_burst: f64,
    pub invite_rate: f64,
    pub invite_burst: f64,
    pub strikes: u32,
    pub strike_window: Duration,
    pub box_base: Duration,
    pub box_max: Duration,
    pub log_every: Duration,
    pub max_sources: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            register_rate: REGISTER_RATE,
            register_burst: REGISTER_BURST,
            invite_rate: INVITE_RATE,
            invite_burst: INVITE_BURST,
            strikes: STRIKES,
            strike_window: STRIKE_WINDOW,
            box_base: BOX_BASE,
            box_max: BOX_MAX,
            log_every: LOG_EVERY,
            max_sources: MAX_SOURCES,
        }
    }
}

/// What the parsed message revealed about its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// Digest authentication failed (wrong password, unknown user, garbage credentials).
    AuthFailure,
    /// We answered 403 or 404 (not a trunk, blocked by the failure limiter, no such number).
    Rejected,
    /// The message was malformed.
    Malformed,
}

/// Why packets from a source are dropped. [`Reason::as_str`] is a fixed label (metrics, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RegisterRate,
    InviteRate,
    Scanner,
    AuthFailures,
    Rejected,
    Malformed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RegisterRate => "register_rate",
            Reason::InviteRate => "invite_rate",
            Reason::Scanner => "scanner",
            Reason::AuthFailures => "auth_failures",
            Reason::Rejected => "rejected",
            Reason::Malformed => "malformed",
        }
    }
}

/// One log line's worth: `source` (its /64 for IPv6) is being throttled for `reason`;
/// `dropped` packets were dropped since the previous report for it. `silenced_for` is set
/// when this report starts a penalty box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub source: IpAddr,
    pub reason: Reason,
    pub dropped: u64,
    pub silenced_for: Option<Duration>,
}

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Drop it without a response; log `report` if there is one.
    Drop {
        reason: Reason,
        report: Option<Throttled>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Source {
    register: Bucket,
    invite: Bucket,
    strikes: u32,
    first_strike: Option<Instant>,
    boxed_until: Option<Instant>,
    /// Boxes served recently (the next one lasts `box_base * 2^boxes`).
    boxes: u32,
    /// Reason of the current throttling, packets dropped since the last report, and when
    /// that report was made.
    reason: Option<Reason>,
    unreported: u64,
    reported_at: Option<Instant>,
}

impl Source {
    fn new(limits: &Limits, now: Instant) -> Source {
        Source {
            register: Bucket::full(limits.register_burst, now),
            invite: Bucket::full(limits.invite_burst, now),
            strikes: 0,
            first_strike: None,
            boxed_until: None,
            boxes: 0,
            reason: None,
            unreported: 0,
            reported_at: None,
        }
    }

    fn boxed(&self, now: Instant) -> bool {
        self.boxed_until.is_some_and(|u| now < u)
    }

    /// Starts a box and returns the report that announces it.
    fn start_box(
        &mut self,
        ip: IpAddr,
        reason: Reason,
        limits: &Limits,
        now: Instant,
    ) -> Throttled {
        // A source that behaved for box_max since its last box starts over.
        if self
            .boxed_until
            .is_some_and(|u| now.saturating_duration_since(u) >= limits.box_max)
        {
            self.boxes = 0;
        }
        let factor = 1u32.checked_shl(self.boxes).unwrap_or(u32::MAX);
        let length = limits
            .box_base
            .checked_mul(factor)
            .unwrap_or(limits.box_max)
            .min(limits.box_max);
        self.boxes = self.boxes.saturating_add(1);
        self.boxed_until = Some(now + length);
        self.strikes = 0;
        self.first_strike = None;
        let dropped = std::mem::take(&mut self.unreported);
        self.reason = Some(reason);
        self.reported_at = Some(now);
        Throttled {
            source: ip,
            reason,
            dropped,
            silenced_for: Some(length),
        }
    }

    /// Counts a dropped packet and returns a report when one is due.
    fn dropped(
        &mut self,
        ip: IpAddr,
        reason: Reason,
        limits: &Limits,
        now: Instant,
    ) -> Option<Throttled> {
        self.unreported += 1;
        let due = self.reason != Some(reason)
            || self
                .reported_at
                .is_none_or(|t| now.saturating_duration_since(t) >= limits.log_every);
        if !due {
            return None;
        }
        self.reason = Some(reason);
        self.reported_at = Some(now);
        Some(Throttled {
            source: ip,
            reason,
            dropped: std::mem::take(&mut self.unreported),
            silenced_for: None,
        })
    }
}

/// Per-source buckets and penalty box. See the module docs.
#[derive(Debug)]
pub struct FloodGuard {
    limits: Limits,
    sources: LruCache<IpAddr, Source>,
}

impl Default for FloodGuard {
    fn default() -> FloodGuard {
        FloodGuard::new(Limits::default())
    }
}

impl FloodGuard {
    pub fn new(limits: Limits) -> FloodGuard {
        let cap = limits.max_sources.max(1);
        FloodGuard {
            limits,
            sources: LruCache::new(cap),
        }
    }

    /// Decides on a packet from `ip` before it is parsed. O(1) for a boxed source; otherwise a
    /// look at the request line and, for requests, the `User-Agent` header.
    pub fn check(&mut self, ip: IpAddr, packet: &[u8], now: Instant) -> Verdict {
        let ip = key(ip);
        let (limits, sources) = (&self.limits, &mut self.sources);
        if let Some(src) = sources.get_mut(&ip) {
            if src.boxed(now) {
                let reason = src.reason.unwrap_or(Reason::Rejected);
                let report = src.dropped(ip, reason, limits, now);
                return Verdict::Drop { reason, report };
            }
        }
        let kind = sniff(packet);
        if kind == Kind::NotRequest {
            return Verdict::Pass;
        }
        if scanner_agent(packet) {
            let src = entry(sources, limits, ip, now);
            src.unreported += 1;
            let report = src.start_box(ip, Reason::Scanner, limits, now);
            return Verdict::Drop {
                reason: Reason::Scanner,
                report: Some(report),
            };
        }
        let (reason, rate, burst) = match kind {
            Kind::Register => (
                Reason::RegisterRate,
                limits.register_rate,
                limits.register_burst,
            ),
            Kind::Invite => (Reason::InviteRate, limits.invite_rate, limits.invite_burst),
            Kind::OtherRequest | Kind::NotRequest => return Verdict::Pass,
        };
        let src = entry(sources, limits, ip, now);
        let bucket = match kind {
            Kind::Register => &mut src.register,
            _ => &mut src.invite,
        };
        if bucket.take(rate, burst, now) {
            return Verdict::Pass;
        }
        let report = src.dropped(ip, reason, limits, now);
        Verdict::Drop { reason, report }
    }

    /// Records what the parsed message revealed. Returns the report to log when this offence
    /// puts the source in the box.
    pub fn offence(&mut self, ip: IpAddr, offence: Offence, now: Instant) -> Option<Throttled> {
        let ip = key(ip);
        let limits = &self.limits;
        let src = entry(&mut self.sources, limits, ip, now);
        if src.boxed(now) {
            return None;
        }
        let fresh = src
            .first_strike
            .is_some_and(|t| now.saturating_duration_since(t) < limits.strike_window);
        if !fresh {
            src.strikes = 0;
            src.first_strike = Some(now);
        }
        src.strikes += 1;
        if src.strikes < limits.strikes {
            return None;
        }
        let reason = match offence {
            Offence::AuthFailure => Reason::AuthFailures,
            Offence::Rejected => Reason::Rejected,
            Offence::Malformed => Reason::Malformed,
        };
        Some(src.start_box(ip, reason, limits, now))
    }

    /// A successful authentication from `ip`: its strikes are forgiven (a phone behind the
    /// same NAT as a misconfigured one keeps the address out of the box).
    pub fn forgive(&mut self, ip: IpAddr) {
        if let Some(src) = self.sources.peek_mut(&key(ip)) {
            src.strikes = 0;
            src.first_strike = None;
        }
    }

    /// Whether `ip` is silenced right now.
    pub fn is_boxed(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources.peek(&key(ip)).is_some_and(|s| s.boxed(now))
    }

    /// Sources tracked (at most `max_sources`).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

/// The source's state, created (evicting the least recently seen source when the table is
/// full: `LruCache::insert` does that) if it is new.
fn entry<'a>(
    sources: &'a mut LruCache<IpAddr, Source>,
    limits: &Limits,
    ip: IpAddr,
    now: Instant,
) -> &'a mut Source {
    if !sources.contains_key(&ip) {
        sources.insert(ip, Source::new(limits, now));
    }
    sources.get_mut(&ip).expect("inserted above")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Invite,
    OtherRequest,
    /// A response, a keep-alive or garbage: the parser decides.
    NotRequest,
}

/// The method of a request line, without parsing the message. Methods are case-sensitive
/// (RFC 3261 7.1); empty lines before the start line are allowed (7.5).
fn sniff(packet: &[u8]) -> Kind {
    let start = packet
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(packet.len());
    let line = &packet[start..];
    if line.starts_with(b"REGISTER ") {
        Kind::Register
    } else if line.starts_with(b"INVITE ") {
        Kind::Invite
    } else if line.starts_with(b"SIP/") {
        Kind::NotRequest
    } else {
        // A request line is `METHOD SP uri SP SIP/2.0`: a token then a space.
        let token_len = line
            .iter()
            .take(32)
            .position(|&b| !(b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)));
        match token_len {
            Some(n) if n > 0 && line[n] == b' ' => Kind::OtherRequest,
            _ => Kind::NotRequest,
        }
    }
}

/// Whether a `User-Agent` header of the message head names a scanner. Only the head is
/// read: a body (SDP, or a scanner's payload) never counts.
fn scanner_agent(packet: &[u8]) -> bool {
    const NAME: &[u8] = b"user-agent";
    for line in packet.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if line.len() <= NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            continue;
        }
        let Some(value) = line[NAME.len()..].trim_ascii_start().strip_prefix(b":") else {
            continue;
        };
        if SCANNER_AGENTS
            .iter()
            .any(|a| contains_ignore_case(value, a.as_bytes()))
        {
            return true;
        }
    }
    false
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests;
