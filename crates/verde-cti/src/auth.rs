//! Logins, tokens and brute-force counting, shared by every session of the process.

use crate::protocol::Role;
use dashmap::DashMap;
use rand::RngCore;
use std::time::{Duration, Instant};

/// Checks a user's password; the binary implements it over its config (agents and, separately,
/// supervisors), so this crate never learns the config format or how secrets are stored.
pub trait Credentials: Send + Sync {
    /// The user's role when `password` is right, `None` otherwise (unknown users included).
    /// Implementations should compare in constant time.
    fn check(&self, user: &str, password: &str) -> Option<Role>;
}

/// Who a session speaks for. For an agent, `user` is its ACD id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Tokens are valid this long after login, whatever the activity.
    pub token_ttl: Duration,
    /// This many failed logins for one user within `failure_window` lock it for `lockout`.
    pub max_failures: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
}

impl Default for AuthConfig {
    /// A working day of validity; the lockout figures mirror the SIP registrar's.
    fn default() -> Self {
        AuthConfig {
            token_ttl: Duration::from_secs(12 * 3600),
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("wrong user or password")]
    BadCredentials,
    #[error("too many failed logins: retry in {}s", retry_after.as_secs().max(1))]
    Locked { retry_after: Duration },
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("token expired: log in again")]
    Expired,
}

/// A token handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// 32 random bytes, hex.
    pub token: String,
    pub identity: Identity,
    pub expires_at: Instant,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    identity: Identity,
    expires_at: Instant,
    /// The supervisor's feed interval, restored on `resume`.
    feed: Option<Option<Duration>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Issues and checks tokens. `&self` everywhere (sharded maps inside) so that one instance in an
/// `Arc` serves every websocket task without a lock around it; it reads no clock: every method
/// takes `now`.
///
/// Counting failures per user id (not per address) stops password guessing spread over many
/// connections, at the price that someone can lock a known user out for `lockout`; the
/// registrar makes the same trade.
pub struct Authenticator {
    cfg: AuthConfig,
    creds: Box<dyn Credentials>,
    tokens: DashMap<String, TokenEntry>,
    failures: DashMap<String, Failures>,
}

impl Authenticator {
    pub fn new(cfg: AuthConfig, creds: impl Credentials + 'static) -> Self {
        Authenticator {
            cfg,
            creds: Box::new(creds),
            tokens: DashMap::new(),
            failures: DashMap::new(),
        }
    }

    /// Checks the password and issues a token.
    pub fn login(&self, user: &str, password: &str, now: Instant) -> Result<Grant, AuthError> {
        if let Some(f) = self.failures.get(user) {
            if let Some(until) = f.locked_until.filter(|u| *u > now) {
                return Err(AuthError::Locked {
                    retry_after: until - now,
                });
            }
        }
        match self.creds.check(user, password) {
            Some(role) => {
                self.failures.remove(user);
                Ok(self.issue(
                    Identity {
                        user: user.to_string(),
                        role,
                    },
                    now,
                ))
            }
            None => {
                let mut f = self.failures.entry(user.to_string()).or_insert(Failures {
                    count: 0,
                    window_start: now,
                    locked_until: None,
                });
                if now.saturating_duration_since(f.window_start) > self.cfg.failure_window
                    || f.locked_until.is_some()
                {
                    *f = Failures {
                        count: 0,
                        window_start: now,
                        locked_until: None,
                    };
                }
                f.count += 1;
                if f.count >= self.cfg.max_failures {
                    f.locked_until = Some(now + self.cfg.lockout);
                    return Err(AuthError::Locked {
                        retry_after: self.cfg.lockout,
                    });
                }
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Issues a token without a password, for tokens the binary hands out itself (a CLI, a
    /// single sign-on front end).
    pub fn issue(&self, identity: Identity, now: Instant) -> Grant {
        let mut bytes = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now + self.cfg.token_ttl;
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                identity: identity.clone(),
                expires_at,
                feed: None,
            },
        );
        Grant {
            token,
            identity,
            expires_at,
        }
    }

    pub fn verify(&self, token: &str, now: Instant) -> Result<Identity, AuthError> {
        let entry = self.tokens.get(token).ok_or(AuthError::UnknownToken)?;
        if entry.expires_at <= now {
            drop(entry);
            self.tokens.remove(token);
            return Err(AuthError::Expired);
        }
        Ok(entry.identity.clone())
    }

    /// When the token expires, if it is known.
    pub fn expires_at(&self, token: &str) -> Option<Instant> {
        self.tokens.get(token).map(|e| e.expires_at)
    }

    /// Returns whether the token was known.
    pub fn revoke(&self, token: &str) -> bool {
        self.tokens.remove(token).is_some()
    }

    /// Revokes every token of a user (password changed, account removed); returns how many.
    pub fn revoke_user(&self, user: &str) -> usize {
        let before = self.tokens.len();
        self.tokens.retain(|_, e| e.identity.user != user);
        before - self.tokens.len()
    }

    /// Forgets expired tokens and stale failure counts; the binary calls it now and then.
    pub fn purge(&self, now: Instant) {
        self.tokens.retain(|_, e| e.expires_at > now);
        let window = self.cfg.failure_window;
        self.failures.retain(|_, f| match f.locked_until {
            Some(until) => until > now,
            None => now.saturating_duration_since(f.window_start) <= window,
        });
    }

    pub(crate) fn remember_feed(&self, token: &str, feed: Option<Option<Duration>>) {
        if let Some(mut e) = self.tokens.get_mut(token) {
            e.feed = feed;
        }
    }

    pub(crate) fn feed(&self, token: &str) -> Option<Option<Duration>> {
        self.tokens.get(token).and_then(|e| e.feed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Users;
    impl Credentials for Users {
        fn check(&self, user: &str, password: &str) -> Option<Role> {
            match (user, password) {
                ("a1", "secret1") => Some(Role::Agent),
                ("boss", "secret2") => Some(Role::Supervisor),
                _ => None,
            }
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new(AuthConfig::default(), Users)
    }

    #[test]
    fn login_issues_distinct_random_tokens_with_role() {
        let a = auth();
        let now = Instant::now();
        let g1 = a.login("a1", "secret1", now).unwrap();
        let g2 = a.login("a1", "secret1", now).unwrap();
        assert_eq!(g1.token.len(), 64);
        assert!(g1.token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(g1.token, g2.token);
        assert_eq!(a.verify(&g1.token, now).unwrap().role, Role::Agent);
        let s = a.login("boss", "secret2", now).unwrap();
        assert_eq!(a.verify(&s.token, now).unwrap().role, Role::Supervisor);
    }

    #[test]
    fn tokens_expire_and_revoke() {
        let a = auth();
        let t0 = Instant::now();
        let g = a.login("a1", "secret1", t0).unwrap();
        let ttl = AuthConfig::default().token_ttl;
        assert!(a
            .verify(&g.token, t0 + ttl - Duration::from_secs(1))
            .is_ok());
        assert_eq!(a.verify(&g.token, t0 + ttl), Err(AuthError::Expired));
        // Expired tokens are forgotten.
        assert_eq!(a.verify(&g.token, t0), Err(AuthError::UnknownToken));

        let g = a.login("a1", "secret1", t0).unwrap();
        assert!(a.revoke(&g.token));
        assert!(!a.revoke(&g.token));
        assert_eq!(a.verify(&g.token, t0), Err(AuthError::UnknownToken));
        assert_eq!(a.verify("deadbeef", t0), Err(AuthError::UnknownToken));
    }

    #[test]
    fn revoke_user_drops_only_that_users_tokens() {
        let a = auth();
        let now = Instant::now();
        let t1 = a.login("a1", "secret1", now).unwrap().token;
        let t2 = a.login("a1", "secret1", now).unwrap().token;
        let s = a.login("boss", "secret2", now).unwrap().token;
        assert_eq!(a.revoke_user("a1"), 2);
        assert!(a.verify(&t1, now).is_err() && a.verify(&t2, now).is_err());
        assert!(a.verify(&s, now).is_ok());
    }

    #[test]
    fn failures_lock_the_user_even_with_the_right_password() {
        let a = auth();
        let cfg = AuthConfig::default();
        let t0 = Instant::now();
        for i in 1..cfg.max_failures {
            assert_eq!(
                a.login("a1", "guess", t0 + Duration::from_secs(i as u64)),
                Err(AuthError::BadCredentials)
            );
        }
        let t_lock = t0 + Duration::from_secs(cfg.max_failures as u64);
        assert!(matches!(
            a.login("a1", "guess", t_lock),
            Err(AuthError::Locked { .. })
        ));
        assert!(matches!(
            a.login("a1", "secret1", t_lock + Duration::from_secs(1)),
            Err(AuthError::Locked { retry_after }) if retry_after == cfg.lockout - Duration::from_secs(1)
        ));
        // Other users are not affected.
        assert!(a.login("boss", "secret2", t_lock).is_ok());
        assert!(a.login("a1", "secret1", t_lock + cfg.lockout).is_ok());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let a = auth();
        let cfg = AuthConfig::default();
        let mut t = Instant::now();
        for _ in 0..cfg.max_failures * 3 {
            assert_eq!(a.login("a1", "guess", t), Err(AuthError::BadCredentials));
            t += cfg.failure_window / (cfg.max_failures - 1) + Duration::from_secs(1);
        }
    }

    #[test]
    fn success_resets_the_count() {
        let a = auth();
        let cfg = AuthConfig::default();
        let t = Instant::now();
        for _ in 0..cfg.max_failures - 1 {
            let _ = a.login("a1", "guess", t);
        }
        assert!(a.login("a1", "secret1", t).is_ok());
        assert_eq!(a.login("a1", "guess", t), Err(AuthError::BadCredentials));
    }

    #[test]
    fn purge_forgets_expired_tokens_only() {
        let a = auth();
        let t0 = Instant::now();
        let old = a.login("a1", "secret1", t0).unwrap().token;
        let ttl = AuthConfig::default().token_ttl;
        let young = a.login("a1", "secret1", t0 + ttl / 2).unwrap().token;
        a.purge(t0 + ttl);
        assert!(a.expires_at(&old).is_none());
        assert!(a.expires_at(&young).is_some());
    }
}
