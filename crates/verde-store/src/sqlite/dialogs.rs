//! [`DialogJournal`] on SQLite: one row per answered side of a call in progress.

use super::SqliteStore;
use crate::dialogs::{ActiveDialog, DialogChange, DialogJournal, COLUMNS};
use crate::StoreError;
use rusqlite::params;

impl DialogJournal for SqliteStore {
    fn journal_dialogs(&self, changes: &[DialogChange]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for change in changes {
            match change {
                DialogChange::Opened(d) => {
                    let mut stmt = tx.prepare_cached(&format!(
                        "INSERT OR REPLACE INTO active_dialogs ({COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                             ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
                    ))?;
                    stmt.execute(params![
                        d.sip_call_id,
                        d.call_id,
                        d.leg,
                        d.local_tag,
                        d.remote_tag,
                        d.local_uri,
                        d.remote_uri,
                        d.remote_target,
                        serde_json::to_string(&d.route_set)?,
                        d.local_contact,
                        d.via_transport,
                        d.via_sent_by,
                        d.local_cseq,
                        d.transport,
                        d.peer,
                        d.started_at,
                        d.answered_at,
                        d.did,
                        d.caller,
                        d.trunk,
                        d.channel,
                    ])?;
                }
                DialogChange::LegClosed { sip_call_id } => {
                    tx.prepare_cached("DELETE FROM active_dialogs WHERE sip_call_id = ?1")?
                        .execute([sip_call_id])?;
                }
                DialogChange::CallClosed { call_id } => {
                    tx.prepare_cached("DELETE FROM active_dialogs WHERE call_id = ?1")?
                        .execute([call_id])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn active_dialogs(&self) -> Result<Vec<ActiveDialog>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM active_dialogs ORDER BY call_id, rowid"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ActiveDialog {
                    sip_call_id: r.get(0)?,
                    call_id: r.get(1)?,
                    leg: r.get(2)?,
                    local_tag: r.get(3)?,
                    remote_tag: r.get(4)?,
                    local_uri: r.get(5)?,
                    remote_uri: r.get(6)?,
                    remote_target: r.get(7)?,
                    route_set: Vec::new(),
                    local_contact: r.get(9)?,
                    via_transport: r.get(10)?,
                    via_sent_by: r.get(11)?,
                    local_cseq: r.get(12)?,
                    transport: r.get(13)?,
                    peer: r.get(14)?,
                    started_at: r.get(15)?,
                    answered_at: r.get(16)?,
                    did: r.get(17)?,
                    caller: r.get(18)?,
                    trunk: r.get(19)?,
                    channel: r.get(20)?,
                },
                r.get::<_, String>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut d, routes) = row?;
            d.route_set = serde_json::from_str(&routes)?;
            out.push(d);
        }
        Ok(out)
    }

    fn forget_dialogs(&self, sip_call_ids: &[String]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("DELETE FROM active_dialogs WHERE sip_call_id = ?1")?;
            for id in sip_call_ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::dialog;

    fn ids(s: &SqliteStore) -> Vec<String> {
        s.active_dialogs()
            .unwrap()
            .into_iter()
            .map(|d| d.sip_call_id)
            .collect()
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.journal_dialogs(&[DialogChange::Opened(Box::new(dialog("c1", "caller", "c1")))])
            .unwrap();
        s.lock()
            .execute_batch(
                "CREATE TRIGGER no_agents BEFORE INSERT ON active_dialogs
                 WHEN NEW.leg LIKE 'agent:%' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let err = s.journal_dialogs(&[
            DialogChange::CallClosed {
                call_id: "c1".into(),
            },
            DialogChange::Opened(Box::new(dialog("c1", "agent:1001", "a1"))),
        ]);
        assert!(err.is_err());
        assert_eq!(ids(&s), ["c1"]);
    }
}
