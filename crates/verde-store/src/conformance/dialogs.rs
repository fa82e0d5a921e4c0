//! The journal of active dialogs: sides written, replaced and removed with their leg or call,
//! kept across a restart, and in a shared store kept per node.

use super::{Backend, Db};
use crate::dialogs::{ActiveDialog, DialogChange, DialogJournal};

pub fn dialog(call_id: &str, leg: &str, sip_call_id: &str) -> ActiveDialog {
    ActiveDialog {
        call_id: call_id.into(),
        leg: leg.into(),
        sip_call_id: sip_call_id.into(),
        local_tag: format!("ours-{sip_call_id}"),
        remote_tag: "theirs".into(),
        local_uri: "<sip:803164@10.0.0.1>;tag=ours".into(),
        remote_uri: "\"0612\" <sip:0612@10.1.2.3>;tag=theirs".into(),
        remote_target: "sip:0612@10.1.2.3:5061".into(),
        route_set: vec!["<sip:10.9.9.9;lr>".into(), "<sip:p2;lr>, <sip:p3>".into()],
        local_contact: "sip:verde@10.0.0.1:5060".into(),
        via_transport: "UDP".into(),
        via_sent_by: "10.0.0.1:5060".into(),
        local_cseq: 4_000_000_000,
        transport: "udp".into(),
        peer: "10.9.9.9:5060".into(),
        started_at: "2026-11-27T10:00:00Z".into(),
        answered_at: "2026-11-27T10:00:01Z".into(),
        did: "803164".into(),
        caller: "0612".into(),
        trunk: "local".into(),
        channel: "pstn".into(),
    }
}

fn ids(s: &impl DialogJournal) -> Vec<String> {
    s.active_dialogs()
        .unwrap()
        .into_iter()
        .map(|d| d.sip_call_id)
        .collect()
}

pub(super) fn dialogs_survive_reopening_and_go_with_their_leg_or_call<B: Backend>(
    db: &mut Db<'_, B>,
) {
    let caller = dialog("c1", "caller", "c1");
    {
        let s = db.open();
        s.journal_dialogs(&[
            DialogChange::Opened(Box::new(caller.clone())),
            DialogChange::Opened(Box::new(dialog("c1", "agent:1001", "a1"))),
            DialogChange::Opened(Box::new(dialog("c1", "agent:1002", "a2"))),
            DialogChange::Opened(Box::new(dialog("c2", "caller", "c2"))),
            DialogChange::LegClosed {
                sip_call_id: "a1".into(),
            },
        ])
        .unwrap();
    }
    let s = db.open();
    assert_eq!(ids(&s), ["c1", "a2", "c2"]);
    assert_eq!(s.active_dialogs().unwrap()[0], caller);

    // Writing a side again replaces it (a target refresh), it does not add one.
    let mut moved = dialog("c2", "caller", "c2");
    moved.remote_target = "sip:0612@10.1.2.4".into();
    s.journal_dialogs(&[
        DialogChange::Opened(Box::new(moved.clone())),
        DialogChange::CallClosed {
            call_id: "c1".into(),
        },
    ])
    .unwrap();
    assert_eq!(s.active_dialogs().unwrap(), vec![moved]);
    s.forget_dialogs(&["c2".into(), "never".into()]).unwrap();
    assert!(s.active_dialogs().unwrap().is_empty());
}

/// In a shared store each node journals, reads and forgets only its own sides: a node that
/// restarts ends the calls it held, never those another node is carrying.
pub(super) fn a_node_sees_and_sweeps_only_its_own_dialogs<B: Backend>(db: &mut Db<'_, B>) {
    if !db.shared() {
        return;
    }
    let one = db.node("n1");
    let two = db.node("n2");
    one.journal_dialogs(&[
        DialogChange::Opened(Box::new(dialog("c1", "caller", "c1"))),
        DialogChange::Opened(Box::new(dialog("c1", "agent:1001", "a1"))),
    ])
    .unwrap();
    two.journal_dialogs(&[DialogChange::Opened(Box::new(dialog("c2", "caller", "c2")))])
        .unwrap();
    assert_eq!(ids(&one), ["c1", "a1"]);
    assert_eq!(ids(&two), ["c2"]);
    // n2 cannot close or forget n1's sides, even by name.
    two.journal_dialogs(&[DialogChange::CallClosed {
        call_id: "c1".into(),
    }])
    .unwrap();
    two.forget_dialogs(&["a1".into()]).unwrap();
    assert_eq!(ids(&one), ["c1", "a1"]);
    // n1 restarting finds its own.
    let again = db.node("n1");
    assert_eq!(ids(&again), ["c1", "a1"]);
    again.forget_dialogs(&["c1".into(), "a1".into()]).unwrap();
    assert!(ids(&one).is_empty());
    assert_eq!(ids(&two), ["c2"]);
}
