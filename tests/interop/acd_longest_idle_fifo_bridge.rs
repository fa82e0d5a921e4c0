//! The ACD end to end: two agents' phones (baresip) log in, four SIPp callers walk the INPS flow
//! to the pensions queue two seconds apart, and each is bridged to an agent.
//!
//! - Longest idle: Bruno (1002) logs in before Anna (1001), so when the first caller arrives
//!   with both ready he has been idle longer and must get it, although Anna comes first in the
//!   `agents:` list (a first-free ACD would pick her).
//! - Arrival order: callers 3 and 4 arrive while both agents talk and wait together; the first
//!   agent to free up (Anna, whose call is shorter) must take caller 3, the head of the queue,
//!   and Bruno then caller 4.
//! - Audio both ways: each caller sends its own tone and each agent's phone its own, so what
//!   each side heard shows who was bridged to whom and that nothing leaked between calls:
//!   baresip records what it hears, and the RTP reaching each SIPp is captured and decoded.

use std::time::{Duration, Instant};
use verde_interop::acd::{
    answered_callers, assert_reached_queue, feature_code, first_call_log, heard_by_sipp,
    inps_caller_scenario, offered_callers, queue, queue_wait_ms, variable, wait_agent,
    wait_agent_state, write_config, OTHER_INPS_QUEUES,
};
use verde_interop::baresip::{AgentAccount, Baresip};
use verde_interop::flows::INPS;
use verde_interop::pcap::Capture;
use verde_interop::sipp::{Sipp, SippOutcome};
use verde_interop::verde::{field, Verde, VerdeOptions};
use verde_interop::wav::Audio;
use verde_interop::{free_ports, require_private_netns, TestDir};

const ANNA: &str = "1001";
const BRUNO: &str = "1002";
/// What each agent's phone sends (a tone no other party sends, away from the music on hold's notes).
const ANNA_HZ: f64 = 1000.0;
const BRUNO_HZ: f64 = 1500.0;
/// Analysis window for tones.
const WIN: f64 = 0.2;

struct Caller {
    number: &'static str,
    tone_hz: f64,
    /// Start of the call after the first one.
    start_ms: u64,
    /// How long it stays after the key that queues it.
    stay_ms: u64,
    /// Who must answer it.
    agent: &'static str,
}

/// With queue entries at q, q+2, q+4, q+6 s (the flow takes the same time for every caller):
/// 1 -> Bruno at q (longest idle), talks until q+11;
/// 2 -> Anna at q+2 (the only one free), talks until q+8, Anna wraps up until q+9;
/// 3 waits from q+4, 4 from q+6; at q+9 Anna takes 3 (head of the queue), stays until q+12;
/// at q+12 Bruno (free after wrap-up) takes 4, which stays until q+15.
/// Every hand-over has 3 s of margin against the flow's timing.
const CALLERS: [Caller; 4] = [
    Caller {
        number: "0611000001",
        tone_hz: 600.0,
        start_ms: 0,
        stay_ms: 11_000,
        agent: BRUNO,
    },
    Caller {
        number: "0611000002",
        tone_hz: 700.0,
        start_ms: 2000,
        stay_ms: 6000,
        agent: ANNA,
    },
    Caller {
        number: "0611000003",
        tone_hz: 800.0,
        start_ms: 4000,
        stay_ms: 8000,
        agent: ANNA,
    },
    Caller {
        number: "0611000004",
        tone_hz: 900.0,
        start_ms: 6000,
        stay_ms: 9000,
        agent: BRUNO,
    },
];

fn agent_name(id: &str) -> &'static str {
    if id == ANNA {
        "Anna"
    } else {
        "Bruno"
    }
}

fn tone_wav(dir: &TestDir, name: &str, hz: f64) -> std::path::PathBuf {
    // aufile hangs up at the end of its file: longer than the test.
    let path = dir.join(format!("{name}.wav"));
    Audio::tone(8000, hz, 150.0, 0.3).save(&path);
    path
}

#[test]
fn longest_idle_agent_first_callers_in_arrival_order_audio_both_ways() {
    require_private_netns();
    let dir = TestDir::new("acd_longest_idle_fifo_bridge");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"{ANNA}\", name: Anna, password: secret1, queues: [pensions, benefits] }}\n\
             \x20 - {{ id: \"{BRUNO}\", name: Bruno, password: secret2, queues: [pensions, benefits] }}\n\
             queues:\n\
             \x20 - {{ name: pensions, strategy: longest-idle, ring_timeout: 4s, wrap_up: 1s, \
             max_misses_before_pause: 1, announce: {{ first_delay: 60s, frequency: 60s }} }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            rtp_ports: 60,
            ..Default::default()
        },
    );
    let (lo, hi) = verde.rtp_ports;
    let cap = Capture::start(&dir, "rtp", &format!("udp and portrange {lo}-{hi}"));

    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new(ANNA, "secret1", verde.sip),
        &tone_wav(&dir, "anna-voice", ANNA_HZ),
    );
    let mut bruno = Baresip::start_agent(
        &dir,
        "bruno",
        &AgentAccount::new(BRUNO, "secret2", verde.sip),
        &tone_wav(&dir, "bruno-voice", BRUNO_HZ),
    );
    for id in [ANNA, BRUNO] {
        wait_agent(&verde, id, "registered", Duration::from_secs(10), |a| {
            a["registered"] == serde_json::json!(true)
        });
    }
    // Bruno first: he is the one idle longer. The confirmation prompt lasts ~3 s, so Anna
    // becomes ready about 3 s after him.
    feature_code(&mut bruno, &verde, "*11");
    wait_agent_state(&verde, BRUNO, "ready", Duration::from_secs(5));
    feature_code(&mut anna, &verde, "*11");
    wait_agent_state(&verde, ANNA, "ready", Duration::from_secs(5));

    // The callers, staggered on purpose: the stagger is the test's input, not a wait.
    let t0 = Instant::now();
    let outcomes: Vec<SippOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = CALLERS
            .iter()
            .map(|c| {
                let (scen, longest) = inps_caller_scenario(
                    &dir,
                    c.number,
                    '1',
                    Some(&Audio::tone(8000, c.tone_hz, 30.0, 0.3)),
                    c.stay_ms,
                );
                let sipp = Sipp::new(&scen, verde.sip)
                    .service(INPS)
                    .media_port(free_ports(4))
                    .timeout(longest + Duration::from_secs(20));
                let dir = &dir;
                let start = t0 + Duration::from_millis(c.start_ms);
                s.spawn(move || {
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    sipp.run(dir)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("SIPp thread"))
            .collect()
    });
    for (c, out) in CALLERS.iter().zip(&outcomes) {
        out.assert_success(&format!("caller {}", c.number));
    }

    // Both agents end in wrap-up and then ready, two calls each.
    for id in [ANNA, BRUNO] {
        let a = wait_agent(
            &verde,
            id,
            "ready after two calls",
            Duration::from_secs(10),
            |a| a["state"] == "ready" && a["calls_handled"] == 2,
        );
        assert_eq!(a["missed"], 0, "{}: {a}", agent_name(id));
    }
    let pensions = queue(&verde, "pensions");
    assert_eq!(
        pensions["waiting"], 0,
        "pensions after the calls: {pensions}"
    );
    // Each phone was offered exactly its callers, in order.
    let want = |id: &str| -> Vec<String> {
        CALLERS
            .iter()
            .filter(|c| c.agent == id)
            .map(|c| c.number.to_string())
            .collect()
    };
    for (id, phone) in [(ANNA, &mut anna), (BRUNO, &mut bruno)] {
        let name = agent_name(id);
        assert_eq!(
            offered_callers(phone),
            want(id),
            "calls offered to {name}'s phone"
        );
        assert_eq!(
            answered_callers(phone),
            want(id),
            "calls {name}'s phone answered"
        );
    }

    anna.quit();
    bruno.quit();
    let datagrams = cap.stop();

    // Every caller reached the queue through the IVR, and got the agent the strategy says.
    let mut served = Vec::new();
    for (c, out) in CALLERS.iter().zip(&outcomes) {
        let enqueued = assert_reached_queue(&verde, &out.call_id, "pensions");
        let bridged = first_call_log(&verde, &out.call_id, "agent answered; bridging");
        let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
        assert_eq!(
            field(&record, "disposition").as_str(),
            Some("answered-agent"),
            "caller {}: {record:#}",
            c.number
        );
        assert_eq!(variable(&record, "queue"), Some("pensions"), "{record:#}");
        assert_eq!(
            variable(&record, "agent"),
            Some(c.agent),
            "caller {} should have been served by {} ({}): record {record:#}",
            c.number,
            agent_name(c.agent),
            c.agent
        );
        let waited = queue_wait_ms(&record);
        let logged = ((bridged.time - enqueued.time) * 1000.0).round() as u64;
        assert!(
            waited.abs_diff(logged) <= 300,
            "caller {}: queue_wait_ms {waited}, but verde's log shows {logged} ms from `enqueued` to \
             `agent answered`",
            c.number
        );
        served.push((c, enqueued.time, bridged.time, waited));
    }
    // Callers 1 and 2 found a free agent; 3 and 4 waited for one.
    for (c, _, _, waited) in &served[..2] {
        assert!(
            *waited < 2500,
            "caller {} waited {waited} ms with an agent free",
            c.number
        );
    }
    for (c, _, _, waited) in &served[2..] {
        assert!(
            *waited >= 2000,
            "caller {} waited only {waited} ms though both agents were busy",
            c.number
        );
    }
    // Arrival order: callers reached the queue in the order they called and were answered in
    // that order. Caller 4 must have been waiting when Anna took caller 3, or the order was
    // never put to the test.
    for w in served.windows(2) {
        assert!(
            w[0].1 < w[1].1,
            "callers {} and {} reached the queue out of calling order (stagger too small?)",
            w[0].0.number,
            w[1].0.number
        );
        assert!(
            w[0].2 < w[1].2,
            "caller {} arrived before {} but was answered after it",
            w[0].0.number,
            w[1].0.number
        );
    }
    assert!(
        served[3].1 < served[2].2,
        "caller 4 reached the queue only after caller 3 was answered: arrival order was not \
         exercised (the flow took longer than planned)"
    );

    // Audio, caller -> agent: each recording (after the login call's) holds its caller's tone
    // and no other caller's.
    for (id, phone) in [(ANNA, &anna), (BRUNO, &bruno)] {
        let recs = phone.received_recordings();
        let mine: Vec<&Caller> = CALLERS.iter().filter(|c| c.agent == id).collect();
        assert_eq!(
            recs.len(),
            1 + mine.len(),
            "{}'s phone should have recorded the *11 call and {} queue calls: {recs:?}",
            agent_name(id),
            mine.len()
        );
        for (rec, c) in recs[1..].iter().zip(&mine) {
            let heard = Audio::load(rec);
            let own = heard.tone_seconds(c.tone_hz, WIN);
            assert!(
                own >= 1.5,
                "{} heard only {own:.1} s of caller {}'s {} Hz tone in {} ({:.1} s recorded)",
                agent_name(id),
                c.number,
                c.tone_hz,
                rec.display(),
                heard.duration()
            );
            for other in CALLERS.iter().filter(|o| o.number != c.number) {
                let leak = heard.tone_seconds(other.tone_hz, WIN);
                assert!(
                    leak == 0.0,
                    "{} heard {leak:.1} s of caller {}'s tone during the call with {} ({})",
                    agent_name(id),
                    other.number,
                    c.number,
                    rec.display()
                );
            }
        }
    }

    // Audio, agent -> caller: the RTP verde sent each SIPp carries its agent's tone, never the
    // other agent's.
    for (c, out) in CALLERS.iter().zip(&outcomes) {
        let heard = heard_by_sipp(&datagrams, &verde, out.media_port);
        let (mine, other) = if c.agent == ANNA {
            (ANNA_HZ, BRUNO_HZ)
        } else {
            (BRUNO_HZ, ANNA_HZ)
        };
        let own = heard.tone_seconds(mine, WIN);
        let leak = heard.tone_seconds(other, WIN);
        assert!(
            own >= 1.5,
            "caller {} got only {own:.1} s of {}'s {mine} Hz tone ({:.1} s of audio captured to its \
             port {})",
            c.number,
            agent_name(c.agent),
            heard.duration(),
            out.media_port
        );
        assert!(
            leak == 0.0,
            "caller {} got {leak:.1} s of the other agent's {other} Hz tone",
            c.number
        );
        eprintln!(
            "caller {}: agent {} waited {} ms; heard {own:.1} s of its agent's tone",
            c.number,
            agent_name(c.agent),
            served
                .iter()
                .find(|s| s.0.number == c.number)
                .map(|s| s.3)
                .unwrap_or(0)
        );
    }

    // Every leg is over: none of verde's own requests (the agents' answered INVITEs among
    // them) is still routed to a call. Kept past their leg, they would grow with every call.
    verde.wait_shown(
        "verde_sip_routed_transactions",
        "0 once every leg has ended",
        Duration::from_secs(10),
        || serde_json::json!(verde.metric("verde_sip_routed_transactions")),
        |v| v.as_f64() == Some(0.0),
    );
}
