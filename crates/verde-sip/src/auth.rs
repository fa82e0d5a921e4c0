//! Server-side HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760) and a
//! per-source limiter for failed attempts.
//!
//! [`DigestAuth`] issues challenges and checks `Authorization` / `Proxy-Authorization`
//! answers. Nonces are stateless: `timestamp | salt | HMAC-SHA256(secret, timestamp | salt)`, so
//! any verde node sharing the secret accepts them and nothing is stored per challenge. The only
//! state is the highest nonce-count seen per nonce that has already authenticated a request,
//! which is what stops a captured request from being replayed; that map is bounded and drops
//! nonces once they are too old to be accepted anyway.
//!
//! The wall clock is an argument (`now_wall_secs`, UNIX seconds) because nonces must stay valid
//! across nodes and restarts, which a monotonic `Instant` cannot express.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tracing::debug;

use crate::message::Request;

/// Nonces whose nonce-count is tracked at most; beyond it the oldest are forgotten first.
const MAX_TRACKED_NONCES: usize = 65_536;
/// Nonces stamped this far in the future are refused (clock step on another node).
const FUTURE_SKEW_SECS: u64 = 60;
/// Bytes of the HMAC kept in the nonce; 128 bits is plenty against forgery and keeps the
/// nonce short enough for phones with small header buffers.
const NONCE_MAC_LEN: usize = 16;

/// A digest algorithm verde accepts (RFC 8760 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token used in the `algorithm` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn from_token(token: &str) -> Option<Algorithm> {
        if token.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if token.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }
}

/// What the account store knows about a user. HA1 values are lowercase or uppercase hex of
/// `H(username:realm:password)` (see [`ha1`]); they depend on the realm, so a realm change
/// invalidates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Password(String),
    /// Precomputed HA1 per algorithm; a client answering with an algorithm that has no HA1
    /// here is refused.
    Ha1 {
        md5: Option<String>,
        sha256: Option<String>,
    },
}

impl Credentials {
    fn ha1(&self, alg: Algorithm, user: &str, realm: &str) -> Option<String> {
        match self {
            Credentials::Password(p) => Some(ha1(alg, user, realm, p)),
            Credentials::Ha1 { md5, sha256 } => match alg {
                Algorithm::Md5 => md5.as_deref(),
                Algorithm::Sha256 => sha256.as_deref(),
            }
            .map(str::to_ascii_lowercase),
        }
    }
}

/// `H(username:realm:password)` in hex, for storing accounts without clear-text passwords.
pub fn ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// Why a request was not authenticated. See [`AuthError::is_failure`] for which ones count
/// against the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials for our realm: challenge (the normal first step, not a failure).
    #[error("no credentials for this realm")]
    Missing,
    /// Credentials we cannot evaluate (missing parameter, unsupported algorithm or qop).
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// The username is not an account. Answer exactly as for [`AuthError::BadResponse`] so
    /// accounts cannot be enumerated.
    #[error("unknown user")]
    UnknownUser,
    /// Wrong password (or HA1 missing for the algorithm the client chose).
    #[error("wrong digest response")]
    BadResponse,
    /// Right password but the nonce expired or is not ours (restart with a new secret):
    /// challenge again with `stale=true` so the client retries without asking its user.
    #[error("stale nonce")]
    Stale,
    /// The nonce-count did not increase: a replayed or reordered request. Challenge again.
    #[error("nonce-count replayed")]
    Replay,
}

impl AuthError {
    /// Whether this outcome should be recorded with [`FailureLimiter::record_failure`]:
    /// wrong credentials and garbage are; a missing, stale or replayed answer is normal
    /// protocol flow for an honest client.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            AuthError::Malformed(_) | AuthError::UnknownUser | AuthError::BadResponse
        )
    }
}

/// Digest authentication for one realm. See the module docs.
#[derive(Debug)]
pub struct DigestAuth {
    realm: String,
    secret: [u8; 32],
    nonce_ttl: u64,
    /// Highest nonce-count accepted per nonce.
    seen: HashMap<String, u32>,
    /// (timestamp, nonce), oldest first, to evict without scanning.
    by_age: BTreeSet<(u64, String)>,
}

impl DigestAuth {
    /// `secret` keys the nonce HMAC: share it between nodes that must accept each other's
    /// nonces, draw it at random otherwise. `nonce_ttl` is how long a nonce is honoured (whole
    /// seconds; at least one).
    pub fn new(realm: impl Into<String>, secret: [u8; 32], nonce_ttl: Duration) -> DigestAuth {
        DigestAuth {
            realm: realm.into(),
            secret,
            nonce_ttl: nonce_ttl.as_secs().max(1),
            seen: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Values for `WWW-Authenticate` (401) or `Proxy-Authenticate` (407), one header line
    /// each, SHA-256 first: RFC 7616 3.7 has clients pick the first algorithm they support,
    /// and MD5 stays for the phones that know nothing else. Both carry the same fresh nonce.
    pub fn challenge(&self, now_wall_secs: u64, stale: bool) -> Vec<String> {
        let nonce = self.new_nonce(now_wall_secs, rand::random());
        let realm = quote(&self.realm);
        [Algorithm::Sha256, Algorithm::Md5]
            .into_iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    alg.as_str()
                );
                if stale {
                    v.push_str(", stale=TRUE");
                }
                v
            })
            .collect()
    }

    /// Checks the credentials in `header_name` (`Authorization` or `Proxy-Authorization`)
    /// and returns the authenticated username. `lookup` maps a username to its credentials.
    ///
    /// The digest is checked before the nonce, so [`AuthError::Stale`] and
    /// [`AuthError::Replay`] are only reported to a client that knows the password (RFC 7616
    /// 3.3: `stale` means "right password, old nonce"). The `uri` parameter is not compared
    /// with the Request-URI: some phones put the AOR there, and the nonce-count already stops
    /// reuse of a response.
    pub fn verify(
        &mut self,
        request: &Request,
        header_name: &str,
        lookup: impl Fn(&str) -> Option<Credentials>,
        now_wall_secs: u64,
    ) -> Result<String, AuthError> {
        let mut ours = None;
        for value in request.headers.get_all(header_name) {
            let Some(params) = parse_digest(value) else {
                continue;
            };
            if params.get("realm") == Some(self.realm.as_str()) {
                ours = Some(params);
                break;
            }
        }
        let p = ours.ok_or(AuthError::Missing)?;
        let username = p.require("username")?;
        let nonce = p.require("nonce")?;
        let uri = p.require("uri")?;
        let response = p.require("response")?;
        let algorithm = match p.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(a).ok_or(AuthError::Malformed("algorithm"))?,
        };
        if p.get("userhash")
            .is_some_and(|u| u.eq_ignore_ascii_case("true"))
        {
            return Err(AuthError::Malformed("userhash was not offered"));
        }
        let qop = match p.get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc_text = p.require("nc")?;
                let nc = (nc_text.len() == 8)
                    .then(|| u32::from_str_radix(nc_text, 16).ok())
                    .flatten()
                    .ok_or(AuthError::Malformed("nc"))?;
                Some((nc_text, nc, p.require("cnonce")?))
            }
            Some(_) => return Err(AuthError::Malformed("qop other than auth")),
        };

        let creds = lookup(username).ok_or(AuthError::UnknownUser)?;
        let Some(ha1) = creds.ha1(algorithm, username, &self.realm) else {
            debug!(
                user = username,
                algorithm = algorithm.as_str(),
                "no HA1 stored for this algorithm"
            );
            return Err(AuthError::BadResponse);
        };
        let expected = response_hex(
            algorithm,
            &ha1,
            request.method.as_str(),
            uri,
            nonce,
            qop.map(|(nc_text, _, cnonce)| (nc_text, cnonce)),
        );
        if !ct_eq_ignore_case(expected.as_bytes(), response.as_bytes()) {
            return Err(AuthError::BadResponse);
        }

        let issued = self
            .check_nonce(nonce, now_wall_secs)
            .ok_or(AuthError::Stale)?;
        // Without qop (RFC 2069 clients) there is no nonce-count: such a nonce is single use.
        let nc = qop.map_or(1, |(_, nc, _)| nc);
        self.record_nc(nonce, issued, nc, now_wall_secs)?;
        Ok(username.to_owned())
    }

    fn new_nonce(&self, ts: u64, salt: u64) -> String {
        let mut out = String::with_capacity(32 + 2 * NONCE_MAC_LEN);
        let _ = write!(out, "{ts:016x}{salt:016x}");
        let mac = self.mac(&out);
        out.push_str(&hex(&mac[..NONCE_MAC_LEN]));
        out
    }

    fn mac(&self, stamp: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        mac.update(stamp.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The nonce's timestamp when it is ours and still fresh.
    fn check_nonce(&self, nonce: &str, now: u64) -> Option<u64> {
        if nonce.len() != 32 + 2 * NONCE_MAC_LEN || !nonce.is_ascii() {
            return None;
        }
        let (stamp, tag) = nonce.split_at(32);
        let tag = unhex(tag)?;
        let ts = u64::from_str_radix(&stamp[..16], 16).ok()?;
        let mac = self.mac(stamp);
        if !ct_eq(&mac[..NONCE_MAC_LEN], &tag) {
            debug!("nonce not issued with our secret");
            return None;
        }
        let fresh = ts <= now.saturating_add(FUTURE_SKEW_SECS) && now < ts + self.nonce_ttl;
        fresh.then_some(ts)
    }

    fn record_nc(&mut self, nonce: &str, issued: u64, nc: u32, now: u64) -> Result<(), AuthError> {
        if let Some(last) = self.seen.get_mut(nonce) {
            if nc <= *last {
                return Err(AuthError::Replay);
            }
            *last = nc;
            return Ok(());
        }
        while let Some((ts, _)) = self.by_age.first() {
            let expired = ts + self.nonce_ttl <= now;
            if !expired && self.seen.len() < MAX_TRACKED_NONCES {
                break;
            }
            if let Some((_, old)) = self.by_age.pop_first() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(nonce.to_owned(), nc);
        self.by_age.insert((issued, nonce.to_owned()));
        Ok(())
    }

    #[cfg(test)]
    fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }
}

/// `response` per RFC 7616 3.4.1 (qop=auth) or RFC 2069 (no qop). `qop` is
/// (nc as sent, cnonce).
fn response_hex(
    alg: Algorithm,
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha2 = alg.hash_hex(format!("{method}:{uri}").as_bytes());
    let data = match qop {
        Some((nc, cnonce)) => format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    alg.hash_hex(data.as_bytes())
}

/// The parameters of a `Digest` credentials value.
struct DigestParams<'a>(Vec<(&'a str, String)>);

impl DigestParams<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, AuthError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(AuthError::Malformed(name))
    }
}

/// Parses `Digest a="b", c=d` (RFC 7235 auth-param list with quoted-string escapes).
/// `None` when the scheme is not Digest.
fn parse_digest(value: &str) -> Option<DigestParams<'_>> {
    let value = value.trim();
    let (scheme, mut rest) = value.split_at(value.find(char::is_whitespace)?);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let val = if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            rest = &quoted[end? + 1..];
            v
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let v = rest[..end].trim().to_owned();
            rest = &rest[end..];
            v
        };
        params.push((name, val));
    }
    Some(DigestParams(params))
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Equality that takes the same time wherever the first difference is, so the comparison
/// does not leak how much of a guessed MAC or response was right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// [`ct_eq`] for hex text, ignoring ASCII case because some clients send uppercase hex.
fn ct_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    let lower = |s: &[u8]| s.to_ascii_lowercase();
    ct_eq(&lower(a), &lower(b))
}

/// Counts authentication failures per source and blocks sources that fail too often.
///
/// Sans-IO: the caller passes `now`. IPv6 sources are grouped by /64, because one host
/// usually owns a whole /64 and could otherwise rotate addresses to dodge the block; IPv4
/// mapped into IPv6 counts as IPv4. Memory is bounded: when the table is full, sources whose
/// failures and block have lapsed are dropped, then the least recently failing one.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: usize,
    window: Duration,
    block_for: Duration,
    max_sources: usize,
    sources: HashMap<IpAddr, Source>,
}

#[derive(Debug, Default)]
struct Source {
    /// Failure instants inside the window, oldest first; at most `max_failures`.
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Source {
    fn last_activity(&self) -> Option<Instant> {
        self.failures.back().copied().max(self.blocked_until)
    }
}

impl Default for FailureLimiter {
    /// 5 failures within 60 s block the source for 5 minutes.
    fn default() -> FailureLimiter {
        FailureLimiter::new(5, Duration::from_secs(60), Duration::from_secs(300))
    }
}

impl FailureLimiter {
    /// `max_failures` failures within `window` block the source for `block_for`.
    pub fn new(max_failures: u32, window: Duration, block_for: Duration) -> FailureLimiter {
        FailureLimiter {
            max_failures: max_failures.max(1) as usize,
            window,
            block_for,
            max_sources: 16_384,
            sources: HashMap::new(),
        }
    }

    /// Caps the number of sources tracked (default 16,384).
    pub fn with_max_sources(mut self, n: usize) -> FailureLimiter {
        self.max_sources = n.max(1);
        self
    }

    /// Whether a request from `ip` may be authenticated at all; `false` while it is blocked
    /// (answer 403 without looking at its credentials).
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&key(ip))
            .and_then(|s| s.blocked_until)
            .is_none_or(|until| now >= until)
    }

    /// Records a failed attempt. Returns `true` when this failure starts a block, so the
    /// caller logs the block once.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        let k = key(ip);
        if !self.sources.contains_key(&k) && self.sources.len() >= self.max_sources {
            self.make_room(now);
        }
        let (window, max) = (self.window, self.max_failures);
        let src = self.sources.entry(k).or_default();
        if src.blocked_until.is_some_and(|until| now < until) {
            return false;
        }
        src.blocked_until = None;
        while src
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            src.failures.pop_front();
        }
        src.failures.push_back(now);
        if src.failures.len() < max {
            return false;
        }
        src.failures.clear();
        src.blocked_until = Some(now + self.block_for);
        true
    }

    /// A successful authentication forgives the source's earlier failures (not a block).
    pub fn record_success(&mut self, ip: IpAddr) {
        let k = key(ip);
        if let Some(src) = self.sources.get_mut(&k) {
            src.failures.clear();
            if src.blocked_until.is_none() {
                self.sources.remove(&k);
            }
        }
    }

    /// Sources currently tracked (blocked or with recent failures).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.sources.retain(|_, s| {
            let blocked = s.blocked_until.is_some_and(|u| now < u);
            let recent = s
                .failures
                .back()
                .is_some_and(|&t| now.saturating_duration_since(t) < window);
            blocked || recent
        });
        if self.sources.len() >= self.max_sources {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, s)| s.last_activity())
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.sources.remove(&k);
            }
        }
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests;
