//! The ACD part of the call detail record, written as things happen: the queue entered, every
//! offer and how it ended, each agent's talk, hold time and transfers. The report crate
//! recomputes the tenders' KPIs from these fields alone.

use super::*;
use verde_store::{AcdRecord, LegRecord, OfferRecord, TransferRecord};

fn stamp() -> String {
    crate::clock::now().to_rfc3339()
}

impl Call {
    fn acd_rec(&mut self) -> Option<&mut AcdRecord> {
        self.acd_rec.as_mut()
    }

    /// The caller entered `queue` (the first queue is the one KPIs count the call in).
    pub(super) fn cdr_enqueued(&mut self, queue: &str) {
        if self.acd_rec.is_none() {
            self.acd_rec = Some(AcdRecord {
                queue: queue.to_string(),
                queued_at: stamp(),
                ..Default::default()
            });
        }
    }

    pub(super) fn cdr_offer(&mut self, agent: &str, queue: &str) {
        if let Some(r) = self.acd_rec() {
            r.offers.push(OfferRecord {
                agent: agent.to_string(),
                queue: queue.to_string(),
                at: stamp(),
                outcome: String::new(),
            });
        }
    }

    /// How the open offer to `agent` ended (the first word given wins).
    pub(super) fn cdr_offer_outcome(&mut self, agent: &str, outcome: &str) {
        if let Some(r) = self.acd_rec() {
            if let Some(o) = r
                .offers
                .iter_mut()
                .rev()
                .find(|o| o.agent == agent && o.outcome.is_empty())
            {
                o.outcome = outcome.to_string();
            }
        }
    }

    /// `who` (an agent, or `number:N`) starts talking with the caller; `waited` is the time
    /// from entering the queue, counted for the first answer only.
    pub(super) fn cdr_talk_start(&mut self, who: &str, queue: &str, waited: Option<Duration>) {
        if !who.starts_with("number:") {
            self.cdr_offer_outcome(who, "answered");
        }
        if let Some(r) = self.acd_rec() {
            if r.queue_wait_ms.is_none() {
                r.queue_wait_ms = waited.map(|w| w.as_millis() as u64);
            }
            r.legs.push(LegRecord {
                agent: who.to_string(),
                queue: queue.to_string(),
                answered_at: stamp(),
                ended_at: String::new(),
                hold_ms: 0,
            });
        }
    }

    /// `who`'s talk with the caller is over.
    pub(super) fn cdr_talk_end(&mut self, who: &str, now: Instant) {
        self.cdr_hold(false, now);
        if let Some(r) = self.acd_rec() {
            if let Some(l) = r
                .legs
                .iter_mut()
                .rev()
                .find(|l| l.agent == who && l.ended_at.is_empty())
            {
                l.ended_at = stamp();
            }
        }
    }

    /// The caller is put on hold (music) or taken back; the time counts on the open talk.
    pub(super) fn cdr_hold(&mut self, on: bool, now: Instant) {
        match (on, self.hold_since) {
            (true, None) => self.hold_since = Some(now),
            (false, Some(since)) => {
                self.hold_since = None;
                let ms = now.saturating_duration_since(since).as_millis() as u64;
                if let Some(r) = self.acd_rec() {
                    r.hold_ms += ms;
                    if let Some(l) = r.legs.iter_mut().rev().find(|l| l.ended_at.is_empty()) {
                        l.hold_ms += ms;
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn cdr_transfer(&mut self, by: &str, to: String, attended: bool) {
        if let Some(r) = self.acd_rec() {
            r.transfers.push(TransferRecord {
                by: by.to_string(),
                to,
                kind: if attended { "attended" } else { "blind" }.into(),
                at: stamp(),
            });
        }
    }

    /// The caller left the queue without an agent: `abandon`, `timeout`, `full`, `empty`,
    /// `key` or `callback`.
    pub(super) fn cdr_exit(&mut self, why: &str, waited: Duration) {
        if let Some(r) = self.acd_rec() {
            if r.legs.is_empty() {
                r.exit = Some(why.to_string());
                r.queue_wait_ms.get_or_insert(waited.as_millis() as u64);
            }
        }
    }

    /// The record's ACD section as the call ends: offers nobody closed were cut short by the
    /// caller, talks still open end now.
    pub(super) fn cdr_finish(&mut self, now: Instant) -> Option<AcdRecord> {
        self.cdr_hold(false, now);
        let mut r = self.acd_rec.clone()?;
        let end = stamp();
        for o in r.offers.iter_mut().filter(|o| o.outcome.is_empty()) {
            o.outcome = "caller-hangup".into();
        }
        for l in r.legs.iter_mut().filter(|l| l.ended_at.is_empty()) {
            l.ended_at = end.clone();
        }
        Some(r)
    }
}
