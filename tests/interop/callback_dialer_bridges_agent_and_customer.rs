//! Call-me-back end to end, agent-first: a SIPp caller reaches the pensions queue while no agent
//! is logged in, hears the offer with its first announcement, presses 1, confirms its number
//! (1), picks "as soon as possible" (1), hears "booked" and is hung up. The callback waits in
//! the basket; when Anna's phone (baresip, auto-answer) logs in with *11, verde rings her first
//! and only then dials the customer at `outbound.uri`, where a SIPp UAS answers and sends a
//! tone. The two legs are bridged (each side hears the other's tone) and the callback ends
//! done/answered after one attempt.

use std::time::Duration;
use verde_interop::acd::{
    answered_callers, feature_code, heard_by_sipp, offered_callers, recording_after_login,
    variable, wait_agent_state,
};
use verde_interop::baresip::AnswerMode;
use verde_interop::callbacks::{
    assert_answered_once, callback, callback_config, callback_offer_key_times, callbacks,
    capture_sip_rtp, customer_tone_vars, customer_uas, distinct, invites_to, is_listed, ms_of,
    rfc3339_ms, sip_requests, sip_requests_from, sip_responses, start_with_anna, u64_field,
    user_of, wait_callback, WEDNESDAY_MORNING,
};
use verde_interop::cti::{Cti, WAIT};
use verde_interop::flows::INPS;
use verde_interop::pcap::dtmf_pcaps;
use verde_interop::sipp::{play_pcap_after, scenario, Sipp};
use verde_interop::verde::{field, record_path};
use verde_interop::{free_port, free_ports, require_private_netns, TestDir};

const AGENT: &str = "1001";
const CALLER: &str = "0655000001";
const AGENT_HZ: f64 = 1300.0;
const CUSTOMER_HZ: f64 = 800.0;
/// How long the customer's SIPp talks (its tone) before hanging up.
const CUSTOMER_TALK_MS: u64 = 5000;
const WIN: f64 = 0.2;

#[test]
fn callback_dialer_bridges_agent_and_customer() {
    require_private_netns();
    let dir = TestDir::new("callback_dialer_bridges");
    let customer_port = free_port();
    let customer_media = free_ports(4);
    let (verde, mut anna) = start_with_anna(
        &dir,
        &callback_config(Some((AGENT, "secret1")), customer_port),
        (AGENT, "secret1"),
        AnswerMode::Auto,
        AGENT_HZ,
        150.0,
    );
    let cap = capture_sip_rtp(&dir, &verde, customer_port, customer_media, anna.sip_port);

    // The customer: answers the first call it gets, sends its tone, hangs up.
    let customer_scen = scenario(
        &dir,
        "uas_tone.xml",
        &customer_tone_vars(&dir, CUSTOMER_HZ, CUSTOMER_TALK_MS),
    );
    let mut customer = customer_uas(&customer_scen, &verde, customer_port)
        .media_port(customer_media)
        .timeout(Duration::from_secs(90))
        .spawn(&dir);
    customer.wait_bound();

    // The caller: 1 (Italian), 1 (pensions), then the offer, the confirmation and the band.
    let (first_at, second_at) = verde_interop::acd::inps_key_times();
    let [offer_at, confirm_at, band_at] = callback_offer_key_times(CALLER);
    let pcaps = dtmf_pcaps(&dir, "11111");
    let actions = [
        play_pcap_after(first_at, &pcaps[0]),
        play_pcap_after(second_at, &pcaps[1]),
        play_pcap_after(offer_at, &pcaps[2]),
        play_pcap_after(confirm_at, &pcaps[3]),
        play_pcap_after(band_at, &pcaps[4]),
    ]
    .concat();
    // "Booked", then verde hangs up; the caller waits well beyond that.
    let listen_ms = ms_of(&["callback_booked"]) + 6000;
    let caller_scen = scenario(
        &dir,
        "uac_caller.xml",
        &[
            ("CALLER", CALLER.to_string()),
            ("ACTIONS", actions),
            ("LISTEN_MS", listen_ms.to_string()),
        ],
    );
    let longest = Duration::from_millis(first_at + second_at + offer_at + confirm_at + band_at)
        + Duration::from_millis(listen_ms);
    let caller = Sipp::new(&caller_scen, verde.sip)
        .service(INPS)
        .timeout(longest + Duration::from_secs(10))
        .run(&dir);
    caller.assert_success("caller accepting the callback offer");

    // The caller's record: it went from the queue to the callback node and booked.
    let record = verde.wait_call_record(&caller.call_id, Duration::from_secs(10));
    let path = record_path(&record);
    for node in ["q_pensions", "offer_callback_pensions", "callback_booked"] {
        assert!(
            path.iter().any(|n| n == node),
            "the caller's path misses {node}: {path:?}\nverde's log of the call:\n{}",
            verde.call_logs(&caller.call_id)
        );
    }
    assert_eq!(
        field(&record, "outcome").as_str(),
        Some("callback:pensions"),
        "record {record:#}"
    );
    assert_eq!(
        variable(&record, "callback_number"),
        Some(CALLER),
        "{record:#}"
    );
    assert_eq!(
        variable(&record, "callback_band"),
        Some("asap"),
        "{record:#}"
    );
    assert_eq!(
        variable(&record, "callback_result"),
        Some("booked"),
        "{record:#}"
    );
    assert_eq!(
        field(&record, "hangup_by").as_str(),
        Some("engine"),
        "verde should hang up after \"booked\": {record:#}"
    );
    let booked = verde.wait_log("callback booked", Duration::from_secs(5));
    assert!(
        booked.contains("queue=pensions") && booked.contains(CALLER),
        "verde's booking line: {booked}"
    );
    let logged_id: u64 = booked
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no id=N in verde's booking line: {booked}"));

    // In the basket, waiting for an agent.
    let pending = callbacks(&verde);
    assert_eq!(pending.len(), 1, "GET /api/callbacks: {pending:#?}");
    let id = u64_field(&pending[0], "id");
    assert_eq!(id, logged_id, "the API's id and the logged one differ");
    let cb = callback(&verde, id);
    assert_eq!(cb["state"], "pending", "{cb:#}");
    assert_eq!(cb["queue"], "pensions", "{cb:#}");
    assert_eq!(cb["number"], CALLER, "{cb:#}");
    assert_eq!(u64_field(&cb, "attempts"), 0, "{cb:#}");
    let requested = u64_field(&cb, "requested_at_ms");
    let deadline = u64_field(&cb, "deadline_ms");
    // The wall clock started on a Wednesday at 10:00 Rome: the request is a few tens of
    // seconds later; 8 working hours cannot pass in fewer than 8 hours.
    let clock0 = rfc3339_ms(WEDNESDAY_MORNING);
    assert!(
        (clock0..clock0 + 120_000).contains(&requested),
        "requested_at_ms {requested} is not within 2 minutes of the wall clock's start \
         {clock0} ({WEDNESDAY_MORNING})"
    );
    assert!(
        deadline >= requested + 8 * 3_600_000,
        "deadline_ms {deadline} is less than 8 h after requested_at_ms {requested}"
    );

    // Anna's bar is open: the callback pops up there too, with its channel.
    let mut bar = Cti::connect(verde.http);
    bar.login(AGENT, "secret1");
    // An agent becomes ready: the dialer rings her, then the customer.
    feature_code(&mut anna, &verde, "*11");
    let done = wait_callback(&verde, id, "done/answered", Duration::from_secs(30), |c| {
        c["state"] == "done"
    });
    let popped = bar.wait_event("call_offered", WAIT, |m| m["channel"] == "callback");
    assert!(
        popped["caller"] == CALLER && popped["queue"] == "pensions" && popped["did"] == INPS,
        "the bar's pop-up for the callback names the customer, the queue and the number they          called: {popped}"
    );
    let cb_call = popped["call"].clone();
    bar.wait_event("call_answered", WAIT, |m| m["call"] == cb_call);
    let over = bar.wait_event("call_ended", WAIT, |m| m["call"] == cb_call);
    assert_eq!(over["reason"], "ended", "{over}");
    let outcome = customer.wait();
    outcome.assert_success("customer answering the callback");
    wait_agent_state(&verde, AGENT, "ready", Duration::from_secs(10));
    anna.quit();
    let datagrams = cap.stop();

    let attempt = assert_answered_once(&done, AGENT);
    let started = u64_field(&attempt, "started_at_ms");
    let finished = u64_field(&attempt, "finished_at_ms");
    assert!(
        started >= requested && finished >= started,
        "attempt times out of order: requested {requested}, {attempt}"
    );
    assert!(
        !is_listed(&verde, id),
        "a done callback is still listed as pending/dialing"
    );

    // On the wire: one INVITE to the customer, for the callback number, sent only after the
    // agent's phone had answered verde's INVITE.
    let to_customer = invites_to(&datagrams, customer_port, 1, "INVITEs to the customer");
    assert_eq!(
        user_of(&to_customer[0].uri),
        CALLER,
        "the customer was dialed at {}",
        to_customer[0].uri
    );
    let to_agent = distinct(sip_requests(&datagrams, anna.sip_port, "INVITE"));
    let agent_ok = sip_responses(&datagrams, anna.sip_port)
        .into_iter()
        .find(|r| {
            r.status == 200
                && r.cseq.ends_with("INVITE")
                && to_agent.iter().any(|i| i.call_id == r.call_id)
        })
        .unwrap_or_else(|| {
            panic!(
                "no 200 OK from the agent's phone to an INVITE of verde; INVITEs to it: {:#?}",
                to_agent.iter().map(|r| &r.text).collect::<Vec<_>>()
            )
        });
    assert!(
        agent_ok.time <= to_customer[0].time,
        "agent-first: the customer was dialed {:.3} s before the agent's phone answered",
        agent_ok.time - to_customer[0].time
    );
    // The customer got the agent's voice through the bridge.
    let got = heard_by_sipp(&datagrams, &verde, customer_media);
    let agent_tone = got.tone_seconds(AGENT_HZ, WIN);
    assert!(
        agent_tone >= 2.5,
        "the customer got only {agent_tone:.1} s of the agent's {AGENT_HZ} Hz tone ({:.1} s of \
         audio from verde to its port {customer_media})",
        got.duration()
    );

    // The phone is free only once verde's own *11 confirmation call has ended: ringing it
    // before that puts a second call on a line that is busy.
    let login = sip_requests_from(&datagrams, anna.sip_port, "INVITE")
        .into_iter()
        .find(|r| r.uri.starts_with("sip:*11@"))
        .expect("the capture holds the phone's *11 INVITE");
    let login_ended = sip_requests(&datagrams, anna.sip_port, "BYE")
        .into_iter()
        .chain(sip_requests_from(&datagrams, anna.sip_port, "BYE"))
        .filter(|b| b.call_id == login.call_id)
        .map(|b| b.time)
        .reduce(f64::min)
        .expect("the *11 call ended with a BYE");
    let callback_leg = to_agent
        .iter()
        .find(|r| r.call_id != login.call_id)
        .expect("verde sent the agent's phone an INVITE");
    assert!(
        callback_leg.time >= login_ended,
        "verde rang the agent's phone for the callback {:.3} s after the phone's *11 INVITE and \
         {:.3} s before that login call ended (the confirmation prompt was still playing): the \
         phone was offered a second call while busy on verde's own call",
        callback_leg.time - login.time,
        login_ended - callback_leg.time
    );
    eprintln!(
        "customer INVITE from {} ({:.2} s after the agent answered)",
        to_customer[0].from,
        to_customer[0].time - agent_ok.time
    );

    // The agent's phone: the *11 call out, then one incoming call, answered.
    assert_eq!(
        offered_callers(&mut anna).len(),
        1,
        "incoming calls on the agent's phone: {:?}",
        offered_callers(&mut anna)
    );
    assert_eq!(
        answered_callers(&mut anna).len(),
        1,
        "answered by the agent's phone"
    );

    // The agent heard the customer. (baresip names recordings by the second a call starts, so
    // the *11 call and the callback only get a file each when they do not overlap.)
    let (rec, heard) =
        recording_after_login(&anna, "the agent's recordings (the *11 call, the callback)");
    let tone = heard.tone_seconds(CUSTOMER_HZ, WIN);
    assert!(
        tone >= 2.5,
        "the agent heard only {tone:.1} s of the customer's {CUSTOMER_HZ} Hz tone in {} \
         ({:.1} s recorded); the customer sent {} ms",
        rec.display(),
        heard.duration(),
        CUSTOMER_TALK_MS
    );
}
