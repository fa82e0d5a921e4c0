//! The shared store: PostgreSQL, for several verde nodes behind one database.
//!
//! The synchronous `postgres` client drives a private single-threaded tokio runtime and panics
//! when it is used from a thread that runs asynchronous tasks, which is where some engine code
//! calls the store from. So the client lives on a thread of its own: every method sends that
//! thread a job and waits for its answer, exactly as a call to SQLite blocks the caller.
//!
//! A lost or refused connection is a transient [`StoreError`]: the job fails at once, the
//! client is dropped, and the next job connects again. Nothing waits for long: connecting gives
//! up after [`CONNECT_TIMEOUT`], a statement after [`STATEMENT_TIMEOUT`], and TCP keepalives
//! with a user timeout notice a server that went silent.

use crate::{started_ms, CallRecord, QueueEvent, Store, StoreError};
use ::postgres::{Client, Config, NoTls};
use std::sync::mpsc;
use std::time::Duration;

mod dialogs;
mod migrations;
mod tasks;

/// How long a connection attempt may take (unless the conninfo sets `connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a statement may run, or wait for a lock, before the server cancels it.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data on the socket for this long ends the connection (TCP_USER_TIMEOUT).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce(&mut Link) + Send>;

/// The shared store. Every node opens it with its own name: callbacks a node books are its to
/// dial until it stops sending heartbeats and another node adopts them
/// ([`crate::TaskStore::adopt_orphans`]); its dialog journal is its own. Call records, the
/// queue log, callbacks and voicemails are visible to every node.
pub struct PgStore {
    jobs: mpsc::Sender<Job>,
    node: String,
    target: String,
}

/// The worker thread's side: the connection, made again whenever it was lost.
struct Link {
    config: Config,
    target: String,
    client: Option<Client>,
}

impl Link {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let open_err = |e: ::postgres::Error| StoreError::Open {
                path: self.target.clone(),
                source: Box::new(PgError(e)),
            };
            let mut client = self.config.connect(NoTls).map_err(open_err)?;
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {ms}; SET lock_timeout = {ms};
                     SET idle_in_transaction_session_timeout = {idle}",
                    ms = STATEMENT_TIMEOUT.as_millis(),
                    idle = 6 * STATEMENT_TIMEOUT.as_millis()
                ))
                .map_err(open_err)?;
            tracing::info!(store = %self.target, "connected to PostgreSQL");
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Drops a connection that a failure left unusable, so that the next job connects again.
    fn after_error(&mut self) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            tracing::warn!(store = %self.target, "connection to PostgreSQL lost");
            self.client = None;
        }
    }
}

/// `conninfo` with any password replaced by `***`, for logs and error messages. Understands
/// both forms libpq takes: `key=value` pairs and `postgres://user:password@host/db?...` URLs.
pub fn redact_conninfo(conninfo: &str) -> String {
    let s = conninfo.trim();
    if let Some(rest) = s
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            s.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some(("password", _)) => "password=***".to_string(),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{authority}{tail}");
    }
    // key = value pairs; a value may be single-quoted with backslash escapes.
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                out.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if chars.peek() != Some(&'=') {
            continue;
        }
        out.push('=');
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else if c == '\'' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if key == "password" {
            out.push_str("***");
        } else {
            out.push_str(&value);
        }
    }
    out
}

impl PgStore {
    /// Connects to the database named by `conninfo` (libpq `key=value` pairs or a
    /// `postgres://` URL; no TLS), brings its schema to this verde's version (the nodes starting
    /// together take turns) and returns the store of node `node`. Fails when the database
    /// cannot be reached now: a node must not start on a store it has never seen.
    pub fn connect(conninfo: &str, node: &str) -> Result<Self, StoreError> {
        let target = redact_conninfo(conninfo);
        let mut config: Config = conninfo.parse().map_err(|e| StoreError::Open {
            path: target.clone(),
            source: Box::new(PgError(e)),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name(&format!("verde {node}"));
        }
        let (jobs, rx) = mpsc::channel::<Job>();
        let mut link = Link {
            config,
            target: target.clone(),
            client: None,
        };
        std::thread::Builder::new()
            .name("verde-pg".into())
            .spawn(move || {
                for job in rx {
                    // A panic in one job must not take the store down with it.
                    let ok =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut link)));
                    if ok.is_err() {
                        link.client = None;
                    }
                }
            })
            .map_err(|e| StoreError::Open {
                path: target.clone(),
                source: Box::new(e),
            })?;
        let store = PgStore {
            jobs,
            node: node.to_string(),
            target: target.clone(),
        };
        let version = store.run(move |c| migrations::migrate(c, &target))?;
        tracing::info!(store = %store.target, node, version, "PostgreSQL store open");
        Ok(store)
    }

    /// The node this store writes as.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `f` on the worker thread with a connected client, and waits for its answer.
    fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |link: &mut Link| {
            let result = link.client().and_then(f);
            if result.is_err() {
                link.after_error();
            }
            let _ = tx.send(result);
        });
        let gone = || {
            StoreError::Backend(
                "the PostgreSQL worker did not answer (it failed or stopped)".into(),
            )
        };
        self.jobs.send(job).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

/// A client error whose message carries the server's own words: the client's `Display` says
/// only "db error" and keeps the SQLSTATE and message in its source.
#[derive(Debug)]
pub(crate) struct PgError(pub(crate) ::postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "{} {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.0)?;
                let mut source = std::error::Error::source(&self.0);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PgError {}

/// See [`StoreError::is_transient`]: SQLSTATE classes 22 (data exception), 23 (integrity
/// constraint) and 54 (program limit exceeded) are about the data; anything else, and every
/// error without a SQLSTATE (connection refused or lost, timeouts), may pass.
pub(crate) fn is_transient(e: &::postgres::Error) -> bool {
    match e.code() {
        Some(state) => !["22", "23", "54"]
            .iter()
            .any(|class| state.code().starts_with(class)),
        None => true,
    }
}

type CallRow = (String, String, Option<i64>, String, String, String, String);

impl Store for PgStore {
    fn record_batch(
        &self,
        records: &[CallRecord],
        events: &[QueueEvent],
    ) -> Result<(), StoreError> {
        let calls = records
            .iter()
            .map(|r| {
                Ok((
                    r.call_id.clone(),
                    r.started_at.clone(),
                    started_ms(r),
                    r.ended_at.clone(),
                    r.did.clone(),
                    r.disposition.clone(),
                    serde_json::to_string(r)?,
                ))
            })
            .collect::<Result<Vec<CallRow>, StoreError>>()?;
        let events = events
            .iter()
            .map(|e| {
                Ok((
                    e.at_ms,
                    e.call_id.clone(),
                    e.queue.clone(),
                    e.agent.clone(),
                    e.kind.as_str(),
                    serde_json::to_string(&e.data)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let node = self.node.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            if !calls.is_empty() {
                let st = tx.prepare(
                    "INSERT INTO calls (call_id, started_at, started_ms, ended_at, did,
                         disposition, record, node)
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)
                     ON CONFLICT (call_id) DO UPDATE SET started_at = excluded.started_at,
                         started_ms = excluded.started_ms, ended_at = excluded.ended_at,
                         did = excluded.did, disposition = excluded.disposition,
                         record = excluded.record, node = excluded.node",
                )?;
                for (id, started, ms, ended, did, disposition, json) in &calls {
                    tx.execute(
                        &st,
                        &[id, started, ms, ended, did, disposition, json, &node],
                    )?;
                }
            }
            if !events.is_empty() {
                let st = tx.prepare(
                    "INSERT INTO queue_log (at_ms, call_id, queue, agent, kind, data, node)
                     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)",
                )?;
                for (at, call, queue, agent, kind, data) in &events {
                    tx.execute(&st, &[at, call, queue, agent, kind, data, &node])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let call_id = call_id.to_string();
        self.run(move |c| {
            let row = c.query_opt(
                "SELECT record::text FROM calls WHERE call_id = $1",
                &[&call_id],
            )?;
            Ok(row
                .map(|r| serde_json::from_str(r.get::<_, &str>(0)))
                .transpose()?)
        })
    }

    fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            records(c.query(
                "SELECT record::text FROM calls ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )?)
        })
    }

    fn calls_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        self.run(move |c| {
            records(c.query(
                "SELECT record::text FROM calls WHERE started_ms >= $1 AND started_ms < $2
                 ORDER BY started_ms, seq",
                &[&from_ms, &to_ms],
            )?)
        })
    }

    fn queue_events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<QueueEvent>, StoreError> {
        self.run(move |c| {
            let rows = c.query(
                "SELECT at_ms, call_id, queue, agent, kind, data::text FROM queue_log
                 WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms, id",
                &[&from_ms, &to_ms],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(QueueEvent {
                        at_ms: r.get(0),
                        call_id: r.get(1),
                        queue: r.get(2),
                        agent: r.get(3),
                        // The serde form is the stored one, so a kind unknown to this verde
                        // is reported rather than read as another.
                        kind: serde_json::from_value(serde_json::Value::String(r.get(4)))?,
                        data: serde_json::from_str(r.get::<_, &str>(5))?,
                    })
                })
                .collect()
        })
    }
}

fn records(rows: Vec<::postgres::Row>) -> Result<Vec<CallRecord>, StoreError> {
    rows.iter()
        .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_conninfo() {
        for (conninfo, shown) in [
            (
                "host=/run/pg user=verde password=s3cret dbname=verde",
                "host=/run/pg user=verde password=*** dbname=verde",
            ),
            (
                "host=db password = 'it\\'s a \\\\ secret' port=5432",
                "host=db password =*** port=5432",
            ),
            (
                "postgres://verde:s3cret@db1:5432,db2/verde?sslmode=disable&password=x2",
                "postgres://verde:***@db1:5432,db2/verde?sslmode=disable&password=***",
            ),
            ("postgresql://verde@db/verde", "postgresql://verde@db/verde"),
            ("postgres://u:p@h", "postgres://u:***@h"),
        ] {
            let got = redact_conninfo(conninfo);
            assert_eq!(got, shown, "{conninfo}");
            assert!(!got.contains("s3cret") && !got.contains("secret"), "{got}");
        }
    }

    #[test]
    fn an_unreachable_database_is_a_transient_open_error_naming_it_without_password() {
        let dir = tempfile::tempdir().unwrap();
        // A unix socket directory where no server listens: refused at once.
        let conninfo = format!(
            "host={} user=verde password=hunter2 dbname=verde connect_timeout=2",
            dir.path().display()
        );
        let err = match PgStore::connect(&conninfo, "n1") {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }

    #[test]
    fn a_malformed_conninfo_is_refused_without_echoing_the_password() {
        let err = match PgStore::connect("host=x password=hunter2 sslmode=sideways", "n1") {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
