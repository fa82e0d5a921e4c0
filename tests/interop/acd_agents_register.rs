//! Agents' phones (baresip) register with digest authentication and log in with feature codes:
//! two with the right passwords register and become ready with `*11`; a third with a wrong
//! password is refused (403 after the challenge) and never shows as registered. `*12` pauses an
//! agent (reason "phone"), `*13` logs one out, `*11` makes a paused agent ready again.

use std::time::Duration;
use verde_interop::acd::{
    agent, feature_codes_at_once, log_in_ready, queue, wait_agent_registered, wait_agent_state,
    write_config, OTHER_INPS_QUEUES,
};
use verde_interop::baresip::{padded_source, AgentAccount, Baresip};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{read_lossy, require_private_netns, tail, try_wait_for, TestDir};

#[test]
fn agents_register_and_log_in_and_a_wrong_password_is_refused() {
    require_private_netns();
    let dir = TestDir::new("acd_agents_register");
    let config = write_config(
        &dir,
        &format!(
            "agents:\n\
             \x20 - {{ id: \"1001\", name: Anna, password: secret1, queues: [pensions, benefits] }}\n\
             \x20 - {{ id: \"1002\", name: Bruno, password: secret2, queues: [pensions, benefits] }}\n\
             \x20 - {{ id: \"1003\", name: Carla, password: secret3, queues: [pensions] }}\n\
             queues:\n\
             \x20 - {{ name: pensions }}\n\
             {OTHER_INPS_QUEUES}"
        ),
    );
    let verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config),
            ..Default::default()
        },
    );
    let registered = |id: &str| agent(&verde, id)["registered"] == serde_json::json!(true);
    for id in ["1001", "1002", "1003"] {
        assert!(
            !registered(id),
            "agent {id} registered before any phone started"
        );
        assert_eq!(
            agent(&verde, id)["state"],
            "loggedout",
            "agent {id} at start"
        );
    }

    let source = padded_source(&dir, 120.0);
    // The wrong password first: a rate limiter that blocked the whole source address after it
    // would also refuse the good phones below (they share 127.0.0.1), and the test would show it.
    let mut carla = Baresip::start_agent(
        &dir,
        "carla-wrong-password",
        &AgentAccount::new("1003", "not-her-password", verde.sip),
        &source,
    );
    let refused = verde.wait_log("digest authentication failed", Duration::from_secs(10));
    assert!(
        refused.contains(&format!("127.0.0.1:{}", carla.sip_port)),
        "the authentication failure verde logged is not from Carla's phone (port {}): {refused}",
        carla.sip_port
    );
    let carla_403 = try_wait_for(Duration::from_secs(5), || {
        let log = carla.logs();
        log.contains("403 Forbidden").then_some(log)
    });
    assert!(
        carla_403.is_some(),
        "Carla's phone did not report a 403 for its REGISTER; its log:\n{}",
        tail(&carla.logs(), 30)
    );

    let mut anna = Baresip::start_agent(
        &dir,
        "anna",
        &AgentAccount::new("1001", "secret1", verde.sip),
        &source,
    );
    let mut bruno = Baresip::start_agent(
        &dir,
        "bruno",
        &AgentAccount::new("1002", "secret2", verde.sip),
        &source,
    );
    for id in ["1001", "1002"] {
        let a = wait_agent_registered(&verde, id, Duration::from_secs(10));
        assert_eq!(
            a["state"], "loggedout",
            "registering is not logging in: {a}"
        );
    }
    assert!(
        verde.logs().contains("registered user=1001")
            && verde.logs().contains("registered user=1002"),
        "verde did not log the two registrations:\n{}",
        tail(&verde.logs(), 30)
    );

    // Both log in at once.
    feature_codes_at_once(&verde, &mut [(&mut anna, "*11"), (&mut bruno, "*11")]);
    for id in ["1001", "1002"] {
        let a = wait_agent_state(&verde, id, "ready", Duration::from_secs(5));
        let queues: Vec<&str> = a["queues"]
            .as_array()
            .map(|q| q.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(queues, ["pensions", "benefits"], "agent {id}: {a}");
        assert!(
            a["registered"] == serde_json::json!(true),
            "agent {id}: {a}"
        );
    }
    let pensions = queue(&verde, "pensions");
    assert_eq!(pensions["agents_ready"], 2, "pensions: {pensions}");
    assert_eq!(pensions["agents_logged_in"], 2, "pensions: {pensions}");
    let carla_now = agent(&verde, "1003");
    assert_eq!(carla_now["registered"], false, "Carla: {carla_now}");
    assert_eq!(carla_now["state"], "loggedout", "Carla: {carla_now}");

    // Pause one, log the other out, at once; then the paused one is ready again.
    feature_codes_at_once(&verde, &mut [(&mut anna, "*12"), (&mut bruno, "*13")]);
    let a = wait_agent_state(&verde, "1001", "paused", Duration::from_secs(5));
    assert_eq!(
        a["pause_reason"], "phone",
        "Anna paused from her phone: {a}"
    );
    let b = wait_agent_state(&verde, "1002", "loggedout", Duration::from_secs(5));
    assert_eq!(
        b["registered"], true,
        "logging out is not unregistering: {b}"
    );
    let pensions = queue(&verde, "pensions");
    assert_eq!(pensions["agents_ready"], 0, "pensions: {pensions}");
    assert_eq!(pensions["agents_logged_in"], 1, "pensions: {pensions}");

    log_in_ready(&mut anna, &verde, "1001");

    // Carla's phone was refused throughout and verde never took her REGISTER.
    assert!(
        !registered("1003"),
        "Carla shows as registered: {}",
        agent(&verde, "1003")
    );
    assert!(
        !verde.logs().contains("registered user=1003"),
        "verde registered 1003 with a wrong password:\n{}",
        tail(&verde.logs(), 40)
    );
    carla.quit();
    let carla_log = read_lossy(&dir.join("baresip-carla-wrong-password/baresip.log"));
    assert!(
        !carla_log.contains(" 200 OK"),
        "Carla's phone got a 200 OK:\n{}",
        tail(&carla_log, 30)
    );
}
