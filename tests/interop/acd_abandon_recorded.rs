//! A caller who hangs up while waiting in a queue is an abandon: with no agent logged in, a SIPp
//! caller walks the INPS flow to the pensions queue, waits about 3 s (the queue shows it
//! waiting) and hangs up. The call record must say `abandoned-queue`, name the queue, and carry
//! the time waited, and the queue must be empty again.

use std::time::Duration;
use verde_interop::acd::{
    assert_reached_queue, first_call_log, inps_caller_scenario, queue, queue_wait_ms, variable,
};
use verde_interop::flows::INPS;
use verde_interop::sipp::Sipp;
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::{require_private_netns, try_wait_for, TestDir};

/// How long the caller stays after pressing the key that puts it in the queue.
const STAY_MS: u64 = 3000;

#[test]
fn a_caller_hanging_up_in_queue_is_recorded_as_abandoned_with_its_wait() {
    require_private_netns();
    let dir = TestDir::new("acd_abandon_recorded");
    // The embedded defaults: the pensions queue exists, no agents, no exits (callers wait).
    let verde = Verde::start(&dir, VerdeOptions::default());

    let (scen, longest) = inps_caller_scenario(&dir, "0633000001", '1', None, STAY_MS);
    let sipp = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(20));
    let results = std::thread::scope(|s| {
        let caller = s.spawn(|| sipp.run(&dir));
        // While the caller waits, the queue shows it.
        let waiting = try_wait_for(longest + Duration::from_secs(5), || {
            let q = queue(&verde, "pensions");
            (q["waiting"] == 1).then_some(q)
        });
        let out = caller.join().expect("SIPp thread");
        (waiting, out)
    });
    let (waiting, out) = results;
    out.assert_success("caller hanging up in the pensions queue");
    let waiting = waiting.unwrap_or_else(|| {
        panic!(
            "GET /api/queues never showed the caller waiting in pensions; verde log of the call:\n{}",
            verde.call_logs(&out.call_id)
        )
    });
    assert_eq!(waiting["agents_logged_in"], 0, "pensions: {waiting}");

    let enqueued = assert_reached_queue(&verde, &out.call_id, "pensions");
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(
        field(&record, "disposition").as_str(),
        Some("abandoned-queue"),
        "record {record:#}"
    );
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("caller"),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "queue"),
        Some("pensions"),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "agent"),
        None,
        "nobody answered: {record:#}"
    );

    let after = try_wait_for(Duration::from_secs(5), || {
        let q = queue(&verde, "pensions");
        (q["waiting"] == 0).then_some(q)
    });
    assert!(
        after.is_some(),
        "the abandoned caller is still counted in pensions: {}",
        queue(&verde, "pensions")
    );

    // The wait verde recorded matches the caller's stay, and what its own log shows between
    // enqueueing the call and the caller's BYE.
    let hung_up = first_call_log(&verde, &out.call_id, "caller hung up");
    let logged_ms = (hung_up.time - enqueued.time) * 1000.0;
    let waited = queue_wait_ms(&record);
    assert!(
        waited.abs_diff(STAY_MS) <= 1000,
        "queue_wait_ms {waited}, the caller stayed about {STAY_MS} ms in queue: {record:#}"
    );
    assert!(
        (waited as f64 - logged_ms).abs() <= 300.0,
        "queue_wait_ms {waited} but verde's log has {logged_ms:.0} ms from `enqueued` to `caller hung up`"
    );
}
