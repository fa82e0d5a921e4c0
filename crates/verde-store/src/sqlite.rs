use crate::{CallRecord, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// The embedded store: one SQLite file in WAL mode under the data directory.
///
/// One connection behind a mutex: records are written once per call, off the call's hot path
/// (the engine calls this from a blocking thread), so a pool would buy nothing yet.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    did TEXT NOT NULL,
    disposition TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SqliteStore {
    fn record_calls(&self, records: &[CallRecord]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // One transaction per batch: one WAL commit for many calls under load.
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO calls (call_id, started_at, ended_at, did, disposition, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(call_id) DO UPDATE SET ended_at = excluded.ended_at,
                     disposition = excluded.disposition, record = excluded.record",
            )?;
            for r in records {
                let json = serde_json::to_string(r)?;
                stmt.execute(params![
                    r.call_id,
                    r.started_at,
                    r.ended_at,
                    r.did,
                    r.disposition,
                    json
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let json: Option<String> = self
            .lock()
            .query_row(
                "SELECT record FROM calls WHERE call_id = ?1",
                params![call_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT record FROM calls ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> CallRecord {
        CallRecord {
            call_id: id.into(),
            caller: "0612345678".into(),
            did: "803164".into(),
            trunk: "local".into(),
            channel: "pstn".into(),
            started_at: "2026-11-27T10:00:00Z".into(),
            ended_at: "2026-11-27T10:01:00Z".into(),
            disposition: "answered-ivr".into(),
            hangup_by: "caller".into(),
            path: vec!["welcome".into(), "language".into()],
            dtmf: "12".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("verde-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("verde.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = SqliteStore::open(&path).unwrap();
            s.record_call(&record("a")).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.call("a").unwrap(), Some(record("a")));
        assert_eq!(s.call("missing").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recent_calls_are_newest_first_and_rewrites_keep_one_row() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.record_call(&record("a")).unwrap();
        s.record_call(&record("b")).unwrap();
        let mut again = record("a");
        again.disposition = "transferred".into();
        s.record_call(&again).unwrap();
        let ids: Vec<_> = s
            .recent_calls(10)
            .unwrap()
            .into_iter()
            .map(|r| (r.call_id, r.disposition))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("b".to_string(), "answered-ivr".to_string()),
                ("a".to_string(), "transferred".to_string())
            ]
        );
    }
}
