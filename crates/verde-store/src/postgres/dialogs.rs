//! [`DialogJournal`] on PostgreSQL: one row per answered side of a call in progress, tagged
//! with the node that holds the call. A node reads and forgets only its own rows: after a
//! restart it ends the calls it held, never the calls another node is carrying right now.

use super::PgStore;
use crate::dialogs::{ActiveDialog, DialogChange, DialogJournal, COLUMNS};
use crate::StoreError;

impl DialogJournal for PgStore {
    fn journal_dialogs(&self, changes: &[DialogChange]) -> Result<(), StoreError> {
        // Route sets are serialized here, on the caller's thread, so that a bad one fails
        // before anything is sent.
        let changes = changes
            .iter()
            .map(|ch| {
                Ok(match ch {
                    DialogChange::Opened(d) => {
                        (ch.clone(), Some(serde_json::to_string(&d.route_set)?))
                    }
                    _ => (ch.clone(), None),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let node = self.node.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            for (change, routes) in &changes {
                match change {
                    DialogChange::Opened(d) => {
                        // Replaced, not updated: a rewritten side goes to the end of its
                        // call's order, as on SQLite.
                        tx.execute(
                            "DELETE FROM active_dialogs WHERE sip_call_id = $1",
                            &[&d.sip_call_id],
                        )?;
                        tx.execute(
                            &format!(
                                "INSERT INTO active_dialogs (node, {COLUMNS})
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb,
                                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                                     $22)"
                            ),
                            &[
                                &node,
                                &d.sip_call_id,
                                &d.call_id,
                                &d.leg,
                                &d.local_tag,
                                &d.remote_tag,
                                &d.local_uri,
                                &d.remote_uri,
                                &d.remote_target,
                                routes,
                                &d.local_contact,
                                &d.via_transport,
                                &d.via_sent_by,
                                &i64::from(d.local_cseq),
                                &d.transport,
                                &d.peer,
                                &d.started_at,
                                &d.answered_at,
                                &d.did,
                                &d.caller,
                                &d.trunk,
                                &d.channel,
                            ],
                        )?;
                    }
                    DialogChange::LegClosed { sip_call_id } => {
                        tx.execute(
                            "DELETE FROM active_dialogs WHERE sip_call_id = $1 AND node = $2",
                            &[sip_call_id, &node],
                        )?;
                    }
                    DialogChange::CallClosed { call_id } => {
                        tx.execute(
                            "DELETE FROM active_dialogs WHERE call_id = $1 AND node = $2",
                            &[call_id, &node],
                        )?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn active_dialogs(&self) -> Result<Vec<ActiveDialog>, StoreError> {
        let node = self.node.clone();
        self.run(move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {} FROM active_dialogs WHERE node = $1 ORDER BY call_id, seq",
                    COLUMNS.replace("route_set", "route_set::text")
                ),
                &[&node],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(ActiveDialog {
                        sip_call_id: r.get(0),
                        call_id: r.get(1),
                        leg: r.get(2),
                        local_tag: r.get(3),
                        remote_tag: r.get(4),
                        local_uri: r.get(5),
                        remote_uri: r.get(6),
                        remote_target: r.get(7),
                        route_set: serde_json::from_str(r.get::<_, &str>(8))?,
                        local_contact: r.get(9),
                        via_transport: r.get(10),
                        via_sent_by: r.get(11),
                        local_cseq: u32::try_from(r.get::<_, i64>(12)).unwrap_or(u32::MAX),
                        transport: r.get(13),
                        peer: r.get(14),
                        started_at: r.get(15),
                        answered_at: r.get(16),
                        did: r.get(17),
                        caller: r.get(18),
                        trunk: r.get(19),
                        channel: r.get(20),
                    })
                })
                .collect()
        })
    }

    fn forget_dialogs(&self, sip_call_ids: &[String]) -> Result<(), StoreError> {
        let ids = sip_call_ids.to_vec();
        let node = self.node.clone();
        self.run(move |c| {
            c.execute(
                "DELETE FROM active_dialogs WHERE sip_call_id = ANY($1) AND node = $2",
                &[&ids, &node],
            )?;
            Ok(())
        })
    }
}
