//! Durability of the basket: 1,000 callbacks are booked through `POST /api/callbacks` (each
//! answered 201 only once stored), verde is killed with SIGKILL right after the last answer,
//! and restarted on the same data dir. Every request must still be there, once, with its id,
//! number, request time and SLA deadline unchanged; and booking one of them again is still
//! recognised as a duplicate. No agent is logged in, so nothing is dialed meanwhile.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use verde_interop::acd::write_config;
use verde_interop::callbacks::{callback_config, callbacks, u64_field, WEDNESDAY_MORNING};
use verde_interop::http::Connection;
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{free_port, require_private_netns, TestDir};

const COUNT: usize = 1000;
const THREADS: usize = 4;

/// The stored facts of one callback that must survive the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Booked {
    id: u64,
    requested_at_ms: u64,
    deadline_ms: u64,
}

fn number(i: usize) -> String {
    format!("06700{i:05}")
}

fn booked_from(v: &Value) -> Booked {
    Booked {
        id: u64_field(v, "id"),
        requested_at_ms: u64_field(v, "requested_at_ms"),
        deadline_ms: u64_field(v, "deadline_ms"),
    }
}

#[test]
fn callback_crash_restart_keeps_all() {
    require_private_netns();
    let dir = TestDir::new("callback_crash_restart");
    // Nothing listens at the outbound port: a dial would fail, and none must happen anyway.
    let config = write_config(&dir, &callback_config(None, free_port()));
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            extra_args: vec!["--wall-clock".into(), WEDNESDAY_MORNING.into()],
            ..Default::default()
        },
    );

    // Book them all, from a few keep-alive connections at once.
    let t0 = Instant::now();
    let http = verde.http;
    let answers: Vec<(String, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut conn = Connection::new(http, Duration::from_secs(10));
                    (t..COUNT)
                        .step_by(THREADS)
                        .map(|i| {
                            let n = number(i);
                            let r = conn
                                .post_json(
                                    "/api/callbacks",
                                    &json!({"queue": "pensions", "number": n}),
                                )
                                .unwrap_or_else(|e| panic!("booking {n}: {e}"));
                            assert_eq!(r.status, 201, "POST /api/callbacks for {n}: {}", r.text());
                            let v = r.json().unwrap_or_else(|e| panic!("booking {n}: {e}"));
                            assert_eq!(v["created"], true, "booking {n}: {v}");
                            (n, v)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("booking thread"))
            .collect()
    });
    let booking_time = t0.elapsed();
    let before: BTreeMap<String, Booked> = answers
        .iter()
        .map(|(n, v)| (n.clone(), booked_from(v)))
        .collect();
    assert_eq!(before.len(), COUNT);
    let ids: BTreeSet<u64> = before.values().map(|b| b.id).collect();
    assert_eq!(ids.len(), COUNT, "verde gave two bookings the same id");
    for (n, b) in &before {
        assert!(
            b.deadline_ms >= b.requested_at_ms + 8 * 3_600_000,
            "{n}: deadline_ms {} is less than 8 h after requested_at_ms {}",
            b.deadline_ms,
            b.requested_at_ms
        );
    }

    // Crash right after the last 201.
    let status = verde.kill();
    eprintln!("booked {COUNT} callbacks in {booking_time:?}; verde killed: {status:?}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "verde should have died of SIGKILL, exited {status:?}"
    );
    verde.restart(&dir);

    let after = callbacks(&verde);
    let mut seen: BTreeMap<String, Booked> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for c in &after {
        let n = c["number"]
            .as_str()
            .unwrap_or_else(|| panic!("callback without a number: {c}"))
            .to_string();
        assert_eq!(c["queue"], "pensions", "{c}");
        assert_eq!(c["state"], "pending", "nothing was dialed, yet: {c}");
        assert_eq!(u64_field(c, "attempts"), 0, "nothing was dialed, yet: {c}");
        if seen.insert(n.clone(), booked_from(c)).is_some() {
            duplicates.push(n);
        }
    }
    assert!(
        duplicates.is_empty(),
        "after the restart {} numbers are listed more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    let missing: Vec<&String> = before.keys().filter(|n| !seen.contains_key(*n)).collect();
    let extra: Vec<&String> = seen.keys().filter(|n| !before.contains_key(*n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && after.len() == COUNT,
        "after the restart GET /api/callbacks lists {} callbacks: {} of the {COUNT} booked are \
         missing (e.g. {:?}), {} were never booked (e.g. {:?})",
        after.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    let changed: Vec<String> = before
        .iter()
        .filter(|(n, b)| seen[*n] != **b)
        .map(|(n, b)| format!("{n}: before {b:?}, after {:?}", seen[n]))
        .collect();
    assert!(
        changed.is_empty(),
        "{} callbacks changed id, request time or deadline across the crash, e.g.:\n{}",
        changed.len(),
        changed[..changed.len().min(5)].join("\n")
    );

    // The dedup key survived too: booking a stored number again returns the same request.
    let n = number(COUNT / 2);
    let r = verde.post_json("/api/callbacks", &json!({"queue": "pensions", "number": n}));
    assert!(
        r.status == 200 || r.status == 201,
        "POST /api/callbacks again for {n}: {}",
        r.text()
    );
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("POST again for {n}: {e}"));
    assert_eq!(
        v["created"], false,
        "booking {n} again after the restart: {v}"
    );
    assert_eq!(
        u64_field(&v, "id"),
        before[&n].id,
        "booking {n} again after the restart: {v}"
    );
    assert_eq!(
        callbacks(&verde).len(),
        COUNT,
        "a repeated booking added a callback"
    );
}
