use crate::{started_ms, CallRecord, QueueEvent, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

mod dialogs;
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

/// See [`StoreError::is_transient`]: SQLite's own result codes say whether the database or the
/// data is at fault.
pub(crate) fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => !matches!(
            f.code,
            C::ConstraintViolation | C::TooBig | C::TypeMismatch | C::ParameterOutOfRange
        ),
        // Everything else rusqlite reports is about the values or the statement (conversions,
        // parameter counts, a NUL in a string), which a retry cannot change.
        _ => false,
    }
}

fn queue_event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(QueueEvent, String, String)> {
    Ok((
        QueueEvent {
            at_ms: r.get(0)?,
            call_id: r.get(1)?,
            queue: r.get(2)?,
            agent: r.get(3)?,
            ..Default::default()
        },
        r.get(4)?,
        r.get(5)?,
    ))
}

impl Store for SqliteStore {
    fn record_batch(
        &self,
        records: &[CallRecord],
        events: &[QueueEvent],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // One transaction per batch: one WAL commit for many calls and events under load.
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO calls (call_id, started_at, started_ms, ended_at, did, disposition,
                     record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(call_id) DO UPDATE SET started_at = excluded.started_at,
                     started_ms = excluded.started_ms, ended_at = excluded.ended_at,
                     disposition = excluded.disposition, record = excluded.record",
            )?;
            for r in records {
                let json = serde_json::to_string(r)?;
                stmt.execute(params![
                    r.call_id,
                    r.started_at,
                    started_ms(r),
                    r.ended_at,
                    r.did,
                    r.disposition,
                    json
                ])?;
            }
        }
        if !events.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO queue_log (at_ms, call_id, queue, agent, kind, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in events {
                stmt.execute(params![
                    e.at_ms,
                    e.call_id,
                    e.queue,
                    e.agent,
                    e.kind.as_str(),
                    serde_json::to_string(&e.data)?
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

    fn calls_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM calls WHERE started_ms >= ?1 AND started_ms < ?2
             ORDER BY started_ms, seq",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    fn queue_events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<QueueEvent>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT at_ms, call_id, queue, agent, kind, data FROM queue_log
             WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], queue_event_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut ev, kind, data) = row?;
            // The serde form is the stored one, so a kind unknown to this verde is reported
            // rather than read as another.
            ev.kind = serde_json::from_value(serde_json::Value::String(kind))?;
            ev.data = serde_json::from_str(&data)?;
            out.push(ev);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{event, ids, record, started, T0};

    /// `max_page_count` makes SQLite answer SQLITE_FULL exactly as a full disk does: the batch
    /// must fail whole, be reported as transient (worth retrying) and go in once there is room.
    #[test]
    fn a_full_database_refuses_the_whole_batch_as_transient_then_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("verde.db")).unwrap();
        s.record_call(&record("before")).unwrap();
        let pages: i64 = s
            .lock()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.lock()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let mut big = record("big");
        big.variables.insert("blob".into(), "x".repeat(64 * 1024));
        let batch = [record("small"), big];
        let events = [QueueEvent {
            at_ms: 1,
            call_id: "small".into(),
            ..Default::default()
        }];
        let err = s.record_batch(&batch, &events).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(s.call("small").unwrap(), None, "half a batch was stored");
        assert!(s.queue_events(0, 10).unwrap().is_empty());

        s.lock()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        s.record_batch(&batch, &events).unwrap();
        assert_eq!(s.call("big").unwrap().unwrap(), batch[1]);
        assert_eq!(s.queue_events(0, 10).unwrap(), events);
    }

    #[test]
    fn refused_data_is_not_transient() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")
            .unwrap();
        let e: StoreError = conn
            .execute("INSERT INTO t VALUES (NULL)", [])
            .unwrap_err()
            .into();
        assert!(!e.is_transient(), "{e}");
        let e: StoreError = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        )
        .into();
        assert!(e.is_transient(), "{e}");
        let e: StoreError = serde_json::from_str::<u8>("x").unwrap_err().into();
        assert!(!e.is_transient(), "{e}");
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

    #[test]
    fn a_row_written_before_the_acd_fields_existed_still_reads() {
        // The JSON exactly as a verde without ACD, survey and recordings wrote it.
        let old_json = r#"{"call_id":"old","caller":"0612345678","did":"803164",
            "trunk":"local","channel":"pstn","started_at":"2026-11-27T10:00:00Z",
            "answered_at":null,"ended_at":"2026-11-27T10:01:00Z","disposition":"answered-ivr",
            "hangup_by":"caller","sip_status":null,"language":null,
            "path":["welcome","language"],"variables":{},"choices":[],"dtmf":"12",
            "outcome":null}"#;
        let s = SqliteStore::open_in_memory().unwrap();
        s.lock()
            .execute(
                "INSERT INTO calls (call_id, started_at, started_ms, ended_at, did, disposition,
                     record)
                 VALUES ('old', '2026-11-27T10:00:00Z', ?1, '', '', '', ?2)",
                params![T0, old_json],
            )
            .unwrap();
        let read = s.call("old").unwrap().unwrap();
        assert_eq!(read, record("old"));
        assert_eq!(
            (read.acd, read.survey.len(), read.recordings.len()),
            (None, 0, 0)
        );
        // And a record without them is written without them, so an older reader copes too.
        s.record_call(&record("new")).unwrap();
        let json: String = s
            .lock()
            .query_row("SELECT record FROM calls WHERE call_id = 'new'", [], |r| {
                r.get(0)
            })
            .unwrap();
        for key in ["acd", "survey", "recordings"] {
            assert!(!json.contains(key), "{key} written in {json}");
        }
    }

    #[test]
    fn records_and_events_of_a_batch_are_stored_together_or_not_at_all() {
        use crate::QueueEventKind::*;
        let s = SqliteStore::open_in_memory().unwrap();
        s.record_batch(&[record("a")], &[event(T0, "a", Enter)])
            .unwrap();
        assert!(s.call("a").unwrap().is_some());
        assert_eq!(s.queue_events(T0, T0 + 1).unwrap().len(), 1);

        // Break the queue log: the record of the same batch must not be kept either.
        s.lock().execute_batch("DROP TABLE queue_log").unwrap();
        assert!(s
            .record_batch(&[record("b")], &[event(T0, "b", Enter)])
            .is_err());
        assert_eq!(s.call("b").unwrap(), None);
        // Records alone still go through.
        s.record_calls(&[record("c")]).unwrap();
        assert!(s.call("c").unwrap().is_some());
    }

    #[test]
    fn a_version_3_database_keeps_its_rows_and_gets_start_times() {
        use crate::{NewVoicemail, TaskStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verde.db");
        let starts = [
            ("z", "2026-11-27T10:00:00Z"),
            ("offset", "2026-11-27T11:30:00.250+01:00"),
            ("nanos", "2026-11-27T10:45:00.123456789Z"),
            ("late", "2026-11-27T10:50:00.9996Z"),
            ("garbage", "not a time"),
        ];
        {
            let mut old = Connection::open(&path).unwrap();
            assert_eq!(migrations::migrate_only(&mut old, 3).unwrap(), 3);
            for (id, at) in starts {
                let r = started(id, at);
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
            old.execute(
                "INSERT INTO voicemails (mailbox, caller, did, call_id, recorded_at_ms,
                     duration_ms, wav_path, variables, deadline_ms, state)
                 VALUES ('m', '061', '803164', 'z', ?1, 3000, '/tmp/x.wav', '{}', ?2, 'new')",
                params![T0, T0 + 1000],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            migrations::version(&s.lock()),
            migrations::MIGRATIONS.len() as i64
        );
        for (id, at) in starts {
            assert_eq!(s.call(id).unwrap(), Some(started(id, at)), "{id}");
            // SQLite's backfill agrees with the parser new rows go through.
            let backfilled: Option<i64> = s
                .lock()
                .query_row(
                    "SELECT started_ms FROM calls WHERE call_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(backfilled, crate::started_ms(&started(id, at)), "{id}");
        }
        assert_eq!(
            ids(s.calls_between(T0, T0 + 3_600_000).unwrap()),
            // 11:30+01:00 is 10:30Z, before 10:45Z.
            vec!["z", "offset", "nanos", "late"]
        );
        // Old rows and new ones share the periods; the queue log is there.
        s.record_call(&started("new", "2026-11-27T10:10:00Z"))
            .unwrap();
        assert_eq!(
            ids(s.calls_between(T0, T0 + 3_600_000).unwrap()),
            vec!["z", "new", "offset", "nanos", "late"]
        );
        s.append_queue_events(&[event(T0, "new", crate::QueueEventKind::Enter)])
            .unwrap();
        assert_eq!(s.queue_events(T0, T0 + 1).unwrap().len(), 1);
        let vms = s.voicemails_between(T0, T0 + 1).unwrap();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].call_id, "z");
        let (_, created) = s
            .insert_voicemail(&NewVoicemail {
                mailbox: "m".into(),
                caller: "061".into(),
                did: "803164".into(),
                call_id: "z".into(),
                recorded_at_ms: T0,
                duration_ms: 3000,
                wav_path: "/tmp/x.wav".into(),
                variables: Default::default(),
                deadline_ms: T0 + 1000,
            })
            .unwrap();
        assert!(!created, "the voicemail from version 3 was not found");
    }
}
