//! Agents' and supervisors' secrets, one table for both doors: SIP digest (phones) and the CTI
//! login (bars, wallboards). Swapped whole on a config reload, so a changed password applies
//! to the next REGISTER and the next login without a restart, and both doors always agree.

use crate::config::Config;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use verde_cti::{Credentials, Role};
use verde_sip::auth::Algorithm;

struct Secret {
    password: Option<String>,
    ha1_md5: Option<String>,
    ha1_sha256: Option<String>,
}

struct Table {
    realm: String,
    users: HashMap<String, (Role, Secret)>,
}

impl Table {
    fn from_config(cfg: &Config) -> Table {
        let agents = cfg.agents.iter().map(|a| {
            (
                a.id.clone(),
                (
                    Role::Agent,
                    Secret {
                        password: a.password.clone(),
                        ha1_md5: a.ha1_md5.clone(),
                        ha1_sha256: a.ha1_sha256.clone(),
                    },
                ),
            )
        });
        let supervisors = cfg.supervisors.iter().map(|s| {
            (
                s.id.clone(),
                (
                    Role::Supervisor,
                    Secret {
                        password: s.password.clone(),
                        ha1_md5: s.ha1_md5.clone(),
                        ha1_sha256: s.ha1_sha256.clone(),
                    },
                ),
            )
        });
        Table {
            realm: cfg.sip.realm.clone(),
            users: agents.chain(supervisors).collect(),
        }
    }
}

/// The live table; cheap to read from any task.
pub struct Accounts {
    table: ArcSwap<Table>,
}

impl Accounts {
    pub fn new(cfg: &Config) -> Arc<Accounts> {
        Arc::new(Accounts {
            table: ArcSwap::from_pointee(Table::from_config(cfg)),
        })
    }

    /// Takes the secrets of a reloaded config. Tokens already issued stay valid until they
    /// expire (`cti.token_ttl`): a reload is not a revocation.
    pub fn replace(&self, cfg: &Config) {
        self.table.store(Arc::new(Table::from_config(cfg)));
    }

    /// What the digest check needs for `user` (agents' and supervisors' phones).
    pub fn digest(&self, user: &str) -> Option<verde_sip::Credentials> {
        let table = self.table.load();
        let (_, s) = table.users.get(user)?;
        Some(match &s.password {
            Some(p) => verde_sip::Credentials::Password(p.clone()),
            None => verde_sip::Credentials::Ha1 {
                md5: s.ha1_md5.clone(),
                sha256: s.ha1_sha256.clone(),
            },
        })
    }

    /// The same secrets as a CTI credential check.
    pub fn cti(self: &Arc<Self>) -> impl Credentials + 'static {
        CtiView(self.clone())
    }
}

struct CtiView(Arc<Accounts>);

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials for CtiView {
    fn check(&self, user: &str, password: &str) -> Option<Role> {
        let table = self.0.table.load();
        let (role, secret) = table.users.get(user)?;
        let hashed = |alg: Algorithm, stored: &str| {
            let mine = verde_sip::auth::ha1(alg, user, &table.realm, password);
            same(stored.to_ascii_lowercase().as_bytes(), mine.as_bytes())
        };
        let ok = if let Some(p) = &secret.password {
            same(p.as_bytes(), password.as_bytes())
        } else if let Some(h) = &secret.ha1_sha256 {
            hashed(Algorithm::Sha256, h)
        } else if let Some(h) = &secret.ha1_md5 {
            hashed(Algorithm::Md5, h)
        } else {
            false
        };
        ok.then_some(*role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse("test.yaml", Some(text)).unwrap()
    }

    #[test]
    fn a_replaced_password_applies_to_both_doors() {
        let old = config(
            "agents:\n  - { id: \"1001\", password: one, queues: [q] }\n\
             supervisors:\n  - { id: boss, ha1_md5: \"x\" }\nqueues:\n  - { name: q }\n",
        );
        let accounts = Accounts::new(&old);
        let cti = accounts.cti();
        assert_eq!(cti.check("1001", "one"), Some(Role::Agent));
        assert_eq!(cti.check("1001", "two"), None);
        assert!(matches!(
            accounts.digest("1001"),
            Some(verde_sip::Credentials::Password(p)) if p == "one"
        ));
        let md5 = verde_sip::auth::ha1(Algorithm::Md5, "boss", "verde", "s3cret");
        let new = config(&format!(
            "agents:\n  - {{ id: \"1001\", password: two, queues: [q] }}\n\
             supervisors:\n  - {{ id: boss, ha1_md5: \"{}\" }}\nqueues:\n  - {{ name: q }}\n",
            md5.to_ascii_uppercase()
        ));
        accounts.replace(&new);
        assert_eq!(
            cti.check("1001", "one"),
            None,
            "the old password still works"
        );
        assert_eq!(cti.check("1001", "two"), Some(Role::Agent));
        assert_eq!(cti.check("boss", "s3cret"), Some(Role::Supervisor));
        assert!(accounts.digest("nobody").is_none());
    }
}
