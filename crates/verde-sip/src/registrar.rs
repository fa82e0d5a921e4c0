//! Registrar state (RFC 3261 section 10.3), sans-IO.
//!
//! [`Registrar`] keeps, per authenticated user, the Contact URIs their phones registered and
//! answers REGISTER requests. Each [`Binding`] also remembers the transport address the
//! REGISTER came from: phones behind NAT advertise private Contacts, and over TCP only the
//! phone's own connection reaches it, so verde sends INVITEs to that source, the way an RFC
//! 5626 "flow" would, without needing the outbound extension from the phone.
//!
//! Authentication and the question "may this user register this AOR" (step 6) belong to the
//! caller; the registrar trusts the `user` it is given. It also does not check the
//! Request-URI domain (step 1): the binary only hands it REGISTERs addressed to verde.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::dialog::new_tag;
use crate::message::{param, split_list, split_name_addr, Peer, Request, Response};

/// Bindings kept per user; a phone that keeps registering new Contacts (NAT rebinding with
/// a new port, say) pushes out its oldest instead of growing the table.
const MAX_BINDINGS_PER_USER: usize = 10;
/// RFC 3261 10.3 step 7: a malformed expiration is read as one hour.
const MALFORMED_EXPIRES: u32 = 3600;

/// One registered Contact of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the phone wrote it (the Request-URI of INVITEs to it).
    pub contact: String,
    /// Where the REGISTER came from: send requests for this binding here.
    pub source: Peer,
    /// When the binding lapses unless refreshed.
    pub expires_at: Instant,
    /// The last REGISTER that created or refreshed it.
    pub registered_at: Instant,
    pub call_id: String,
    pub cseq: u32,
}

/// Registration state for all users. See the module docs.
#[derive(Debug)]
pub struct Registrar {
    min_expires: u32,
    max_expires: u32,
    default_expires: u32,
    users: HashMap<String, Vec<Binding>>,
    /// (expires_at, user, contact) for every binding, soonest first.
    deadlines: BTreeSet<(Instant, String, String)>,
}

impl Registrar {
    /// Expiration intervals in seconds: shorter non-zero requests get 423, longer ones are
    /// cut to `max_expires`, and `default_expires` applies when the REGISTER names none.
    pub fn new(min_expires: u32, max_expires: u32, default_expires: u32) -> Registrar {
        let max_expires = max_expires.max(min_expires);
        Registrar {
            min_expires,
            max_expires,
            default_expires: default_expires.clamp(min_expires, max_expires),
            users: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Applies a REGISTER from the (already authenticated) `user` received from `source` and
    /// returns the response to send: 200 listing the user's bindings with their remaining
    /// expiry, 423 with Min-Expires, 400 for a malformed request, or 500 when the request is
    /// older (same Call-ID, CSeq not higher) than a binding it would change. All contacts of a
    /// request are applied or none (step 7 is atomic).
    pub fn register(
        &mut self,
        request: &Request,
        source: Peer,
        user: &str,
        now: Instant,
    ) -> Response {
        let reply =
            |status: u16, reason: &str| request.response(status, reason).with_to_tag(&new_tag());
        let (Some(call_id), Some((cseq, _))) = (request.call_id(), request.cseq()) else {
            return reply(400, "Missing Call-ID or CSeq");
        };
        let header_expires = request.headers.get("Expires").map(parse_expires);
        let mut contacts = Vec::new();
        let mut wildcard = false;
        for entry in request.headers.get_all("Contact").flat_map(split_list) {
            let (uri, params) = split_name_addr(entry);
            let uri = uri.trim();
            if uri == "*" {
                wildcard = true;
                continue;
            }
            if uri.is_empty() {
                return reply(400, "Empty Contact");
            }
            let expires = param(params, "expires")
                .map(parse_expires)
                .or(header_expires)
                .unwrap_or(self.default_expires);
            contacts.push((uri, expires));
        }

        if wildcard {
            // RFC 3261 10.2.2: "*" only alone and only with Expires: 0.
            if !contacts.is_empty() || header_expires != Some(0) {
                return reply(400, "Invalid Contact: *");
            }
            let bindings = self.users.get(user).map(Vec::as_slice).unwrap_or(&[]);
            if bindings
                .iter()
                .any(|b| b.call_id == call_id && b.cseq >= cseq)
            {
                return reply(500, "Out Of Order REGISTER");
            }
            for b in self.users.remove(user).unwrap_or_default() {
                self.deadlines
                    .remove(&(b.expires_at, user.to_owned(), b.contact));
            }
            debug!(user, "all bindings removed");
            return reply(200, "OK");
        }

        if let Some(&(_, e)) = contacts
            .iter()
            .find(|(_, e)| *e > 0 && *e < self.min_expires)
        {
            debug!(user, expires = e, "registration interval too brief");
            return reply(423, "Interval Too Brief")
                .with_header("Min-Expires", self.min_expires.to_string());
        }
        let existing = self.users.get(user).map(Vec::as_slice).unwrap_or(&[]);
        let out_of_order = contacts.iter().any(|(uri, _)| {
            existing
                .iter()
                .any(|b| uri_eq(&b.contact, uri) && b.call_id == call_id && b.cseq >= cseq)
        });
        if out_of_order {
            return reply(500, "Out Of Order REGISTER");
        }

        for (uri, expires) in contacts {
            self.remove_binding(user, uri);
            if expires == 0 {
                continue;
            }
            let expires_at = now + Duration::from_secs(u64::from(expires.min(self.max_expires)));
            let binding = Binding {
                contact: uri.to_owned(),
                source,
                expires_at,
                registered_at: now,
                call_id: call_id.to_owned(),
                cseq,
            };
            self.deadlines
                .insert((expires_at, user.to_owned(), uri.to_owned()));
            let list = self.users.entry(user.to_owned()).or_default();
            list.push(binding);
            if list.len() > MAX_BINDINGS_PER_USER {
                let oldest = list
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.registered_at)
                    .map(|(i, _)| i)
                    .expect("list is not empty");
                let b = list.remove(oldest);
                debug!(
                    user,
                    contact = b.contact,
                    "too many bindings; oldest dropped"
                );
                self.deadlines
                    .remove(&(b.expires_at, user.to_owned(), b.contact));
            }
        }

        let mut ok = reply(200, "OK");
        for b in self.lookup(user, now) {
            let left = b.expires_at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            ok.headers
                .push("Contact", format!("<{}>;expires={secs}", b.contact));
        }
        ok
    }

    /// The user's live bindings, most recently registered first (the phone the agent last
    /// touched is the likeliest to answer).
    pub fn lookup(&self, user: &str, now: Instant) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .users
            .get(user)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.registered_at));
        v
    }

    /// Removes bindings whose time has come and returns them with their user, so the caller
    /// can mark agents unreachable.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, Binding)> {
        let mut gone = Vec::new();
        while let Some((at, _, _)) = self.deadlines.first() {
            if *at > now {
                break;
            }
            let Some((_, user, contact)) = self.deadlines.pop_first() else {
                break;
            };
            if let Some(list) = self.users.get_mut(&user) {
                if let Some(i) = list.iter().position(|b| b.contact == contact) {
                    gone.push((user.clone(), list.remove(i)));
                }
                if list.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
        gone
    }

    /// When [`Registrar::expire`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// Live bindings across all users (including lapsed ones not yet expired), for metrics.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    fn remove_binding(&mut self, user: &str, uri: &str) {
        let Some(list) = self.users.get_mut(user) else {
            return;
        };
        if let Some(i) = list.iter().position(|b| uri_eq(&b.contact, uri)) {
            let b = list.remove(i);
            self.deadlines
                .remove(&(b.expires_at, user.to_owned(), b.contact));
        }
        if list.is_empty() {
            self.users.remove(user);
        }
    }
}

/// The user part of the To URI: the address-of-record being registered. The caller compares
/// it with the authenticated username (RFC 3261 10.3 step 6).
pub fn aor_user(request: &Request) -> Option<&str> {
    let (uri, _) = split_name_addr(request.headers.get("To")?);
    let (_, rest) = uri.split_once(':')?;
    let (user, _) = rest.rsplit_once('@')?;
    // User parameters (`;npdi`) and a password are not part of the name.
    let user = user.split([';', ':']).next()?;
    (!user.is_empty()).then_some(user)
}

fn parse_expires(v: &str) -> u32 {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err(_) => MALFORMED_EXPIRES,
    }
}

/// URI equality close enough to RFC 3261 19.1.4 for matching a phone's own Contact: scheme,
/// host and parameters compare without case and parameters in any order; the user part is
/// case-sensitive.
fn uri_eq(a: &str, b: &str) -> bool {
    a == b || normalize_uri(a) == normalize_uri(b)
}

fn normalize_uri(uri: &str) -> String {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
    let (rest, headers) = rest.split_once('?').unwrap_or((rest, ""));
    let (user, host_params) = rest.rsplit_once('@').unwrap_or(("", rest));
    let mut parts = host_params.split(';');
    let host = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut params: Vec<String> = parts
        .filter(|p| !p.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    params.sort();
    format!(
        "{}:{user}@{host};{}?{headers}",
        scheme.to_ascii_lowercase(),
        params.join(";")
    )
}

#[cfg(test)]
mod tests;
