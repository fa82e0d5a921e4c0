//! The behaviour every store must show, as tests that take a way to open one: SQLite runs them
//! in this crate's own tests, PostgreSQL in the interop tests (which start a server). Built
//! only for tests and with the `conformance` feature.
//!
//! A case opens the stores it needs through [`Db`]: `db.open()` is node `n1`, `db.node(name)`
//! another node on the same database. Opening a node again is that node restarting. Cases about
//! several nodes (own callbacks, adoption, per-node journals) check the single-node meaning on
//! a store that is not [`Backend::shared`].

use crate::{DialogJournal, Store, TaskStore};

mod calls;
mod dialogs;
mod nodes;
mod tasks;

pub use calls::{event, ids, record, started, T0};
pub use dialogs::dialog;
pub use tasks::{request, voicemail};

/// How a backend opens its stores for the cases.
pub trait Backend {
    type Store: Store + TaskStore + DialogJournal;
    /// The store of `node` on database `db`. The first open of a `db` finds it empty; later
    /// opens of the same `db` share it (other nodes, or the same node after a restart).
    fn open(&mut self, db: &str, node: &str) -> Self::Store;
    /// Whether the stores of one database are distinct nodes (PostgreSQL) rather than
    /// connections of one node (SQLite).
    fn shared(&self) -> bool;
}

/// One case's database.
pub struct Db<'a, B: Backend> {
    backend: &'a mut B,
    name: &'static str,
}

impl<B: Backend> Db<'_, B> {
    /// Node `n1`'s store.
    pub fn open(&mut self) -> B::Store {
        self.node("n1")
    }
    pub fn node(&mut self, node: &str) -> B::Store {
        self.backend.open(self.name, node)
    }
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }
}

pub type Case<B> = fn(&mut Db<'_, B>);

/// Every case, by name (each name is also its database's name: short, lowercase).
pub fn cases<B: Backend>() -> Vec<(&'static str, Case<B>)> {
    vec![
        ("reopen", calls::a_record_survives_reopening_the_store::<B>),
        (
            "recent",
            calls::recent_calls_are_newest_first_and_rewrites_keep_one_row::<B>,
        ),
        (
            "round_trip",
            calls::a_record_with_its_acd_path_survey_and_recordings_round_trips::<B>,
        ),
        (
            "periods",
            calls::calls_are_selected_by_start_in_a_half_open_period_whatever_the_offset::<B>,
        ),
        (
            "queue_log_order",
            calls::queue_events_come_back_by_time_then_in_the_order_appended::<B>,
        ),
        (
            "event_kinds",
            calls::every_event_kind_and_its_data_round_trip::<B>,
        ),
        (
            "upsert",
            tasks::a_second_request_updates_the_first_and_keeps_its_place_and_attempts::<B>,
        ),
        (
            "new_request",
            tasks::the_same_number_in_another_queue_or_after_completion_is_a_new_request::<B>,
        ),
        (
            "line_order",
            tasks::pending_callbacks_are_in_line_order_whatever_the_insertion_order::<B>,
        ),
        (
            "two_attempts",
            tasks::two_unanswered_attempts_end_not_reached_and_forbid_a_third::<B>,
        ),
        (
            "answered",
            tasks::an_answered_attempt_or_no_retry_ends_the_callback::<B>,
        ),
        (
            "crash_recovery",
            tasks::an_attempt_cut_by_a_crash_is_retried_once_and_does_not_count::<B>,
        ),
        (
            "second_connection",
            tasks::another_connection_sees_a_started_attempt_and_cannot_start_it_again::<B>,
        ),
        (
            "voicemail_claims",
            tasks::voicemails_are_taken_earliest_deadline_first_and_closed_by_their_holder::<B>,
        ),
        (
            "voicemail_filter",
            tasks::voicemail_listing_filters_by_mailbox_and_status::<B>,
        ),
        (
            "late_tasks",
            tasks::late_tasks_are_the_open_ones_past_their_deadline_earliest_first::<B>,
        ),
        (
            "callback_periods",
            tasks::callbacks_of_a_period_are_every_state_with_their_attempts::<B>,
        ),
        (
            "voicemail_periods",
            tasks::voicemails_of_a_period_are_every_state_oldest_first::<B>,
        ),
        (
            "journal",
            dialogs::dialogs_survive_reopening_and_go_with_their_leg_or_call::<B>,
        ),
        (
            "journal_per_node",
            dialogs::a_node_sees_and_sweeps_only_its_own_dialogs::<B>,
        ),
        (
            "voicemail_race",
            nodes::two_writers_never_take_the_same_voicemail::<B>,
        ),
        (
            "callback_race",
            nodes::racing_bookings_and_attempts_give_one_request_and_one_attempt::<B>,
        ),
        (
            "own_callbacks",
            nodes::a_node_dials_and_recovers_only_its_own_callbacks::<B>,
        ),
        (
            "adoption",
            nodes::the_basket_of_a_silent_node_is_adopted_once::<B>,
        ),
    ]
}

/// Runs one case on its own database.
pub fn run_case<B: Backend>(backend: &mut B, name: &'static str, case: Case<B>) {
    case(&mut Db { backend, name });
}

/// Runs every case, naming each on stderr so that a failure says which one it was.
pub fn run_all<B: Backend>(backend: &mut B) {
    for (name, case) in cases::<B>() {
        eprintln!("conformance: {name}");
        run_case(backend, name, case);
    }
}

#[cfg(test)]
mod sqlite {
    use super::*;
    use crate::SqliteStore;

    /// One file per case in a temporary folder; every node of a case opens the same file.
    struct Files(tempfile::TempDir);

    impl Backend for Files {
        type Store = SqliteStore;
        fn open(&mut self, db: &str, _node: &str) -> SqliteStore {
            SqliteStore::open(&self.0.path().join(format!("{db}.db"))).unwrap()
        }
        fn shared(&self) -> bool {
            false
        }
    }

    #[test]
    fn sqlite_passes_every_case() {
        let mut files = Files(tempfile::tempdir().unwrap());
        run_all(&mut files);
    }
}
