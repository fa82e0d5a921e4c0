use crate::{CallRecord, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

mod migrations;
mod tasks;

/// How hard a commit tries to reach the disk; see the crate documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: committed data survives a crash of the process (kill -9); a power
    /// loss may lose the last transactions.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced, so it also survives a power loss.
    Full,
}

/// The embedded store: one SQLite file in WAL mode under the data directory.
///
/// One connection behind a mutex: records are written once per call and tasks a few times per
/// callback, off the call's hot path (the engine calls this from a blocking thread), so a pool
/// would buy nothing yet.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, with [`Durability::Normal`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::Normal)
    }

    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrations::migrate(&mut conn, &path.display().to_string())?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn, ":memory:")?;
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
    #[test]
    fn a_database_from_before_versions_is_migrated_and_keeps_its_calls() {
        use crate::{NewCallback, NewVoicemail, TaskStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verde.db");
        {
            // The schema exactly as the first release wrote it, with no version table.
            let old = Connection::open(&path).unwrap();
            old.pragma_update(None, "journal_mode", "WAL").unwrap();
            old.execute_batch(
                "CREATE TABLE IF NOT EXISTS calls (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    call_id TEXT NOT NULL UNIQUE,
                    started_at TEXT NOT NULL,
                    ended_at TEXT NOT NULL,
                    did TEXT NOT NULL,
                    disposition TEXT NOT NULL,
                    record TEXT NOT NULL
                );
                CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);",
            )
            .unwrap();
            let r = record("old");
            old.execute(
                "INSERT INTO calls (call_id, started_at, ended_at, did, disposition, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.call_id,
                    r.started_at,
                    r.ended_at,
                    r.did,
                    r.disposition,
                    serde_json::to_string(&r).unwrap()
                ],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            migrations::version(&s.lock()),
            migrations::MIGRATIONS.len() as i64
        );
        assert_eq!(s.call("old").unwrap(), Some(record("old")));
        s.record_call(&record("new")).unwrap();
        let (cb, _) = s
            .upsert_callback(&NewCallback {
                queue: "q".into(),
                number: "061".into(),
                caller_call_id: "old".into(),
                did: "803164".into(),
                requested_at_ms: 1,
                band: None,
                not_before_ms: 1,
                deadline_ms: 2,
                max_attempts: 2,
                variables: Default::default(),
            })
            .unwrap();
        let (vm, _) = s
            .insert_voicemail(&NewVoicemail {
                mailbox: "m".into(),
                caller: "061".into(),
                did: "803164".into(),
                call_id: "new".into(),
                recorded_at_ms: 1,
                duration_ms: 3000,
                wav_path: "/tmp/x.wav".into(),
                variables: Default::default(),
                deadline_ms: 2,
            })
            .unwrap();
        drop(s);

        // Opening again applies nothing and loses nothing.
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            migrations::version(&s.lock()),
            migrations::MIGRATIONS.len() as i64
        );
        let ids: Vec<_> = s
            .recent_calls(10)
            .unwrap()
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        assert_eq!(ids, vec!["new", "old"]);
        assert!(s.callback(cb).unwrap().is_some());
        assert!(s.voicemail(vm).unwrap().is_some());
    }

    #[test]
    fn a_database_from_a_newer_verde_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verde.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::SchemaTooNew { found, known, .. }) => {
                assert_eq!(found, 99);
                assert_eq!(known, migrations::MIGRATIONS.len() as i64);
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
    }

    #[test]
    fn durability_sets_the_synchronous_level() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, level) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let s = SqliteStore::open_with(&dir.path().join("verde.db"), durability).unwrap();
            let conn = s.lock();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            let journal: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!((sync, journal.as_str()), (level, "wal"));
        }
    }
}
