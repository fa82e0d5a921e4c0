//! SIGHUP reloads the configuration under live traffic (issue 8): a carrier's new address and
//! an agent's changed password apply at once, to SIP and to the CTI login alike; a change that
//! needs a restart is named in the log, not half-applied; a broken file is refused with file,
//! line and reason while the running configuration keeps serving. Passwords never reach the log.

use std::path::Path;
use std::time::Duration;
use verde_interop::acd::{write_config, OTHER_INPS_QUEUES};
use verde_interop::cti::Cti;
use verde_interop::flows::INPS;
use verde_interop::sipp::{scenario, Sipp, SippOutcome};
use verde_interop::verde::{Verde, VerdeOptions};
use verde_interop::{require_private_netns, TestDir};

const CARRIER_B: &str = "127.0.0.2";

fn config(trunks: &str, password: &str, extra: &str) -> String {
    format!(
        "trunks:\n{trunks}\
         agents:\n\
         \x20 - {{ id: \"1001\", name: Anna, password: {password}, queues: [pensions] }}\n\
         queues:\n\
         \x20 - {{ name: pensions }}\n\
         {OTHER_INPS_QUEUES}{extra}"
    )
}

fn hup(verde: &Verde) {
    // SAFETY: kill(2) on verde's pid, a child of this test that has not been reaped.
    unsafe {
        libc::kill(verde.pid() as libc::pid_t, libc::SIGHUP);
    }
}

fn call_from(dir: &TestDir, verde: &Verde, ip: &str, expect: &str) -> SippOutcome {
    let sc = if expect == "200" {
        scenario(
            dir,
            "uac_call.xml",
            &[("ACTIONS", String::new()), ("LISTEN_MS", "500".into())],
        )
    } else {
        scenario(dir, "uac_expect_status.xml", &[("STATUS", expect.into())])
    };
    Sipp::new(&sc, verde.sip)
        .service(INPS)
        .local_ip(ip)
        .timeout(Duration::from_secs(20))
        .run(dir)
}

fn register(dir: &TestDir, verde: &Verde, password: &str, expect: &str) -> SippOutcome {
    let sc = scenario(
        dir,
        "uac_register.xml",
        &[
            ("AGENT", "1001".into()),
            ("PASSWORD", password.into()),
            ("USER_AGENT", "Yealink SIP-T46S 66.86.0.15".into()),
            ("STATUS", expect.into()),
        ],
    );
    Sipp::new(&sc, verde.sip)
        .timeout(Duration::from_secs(15))
        .run(dir)
}

fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[test]
fn sighup_applies_trunks_and_passwords_live_and_refuses_a_broken_file() {
    require_private_netns();
    let dir = TestDir::new("config_reload_sighup");
    let one_carrier = "  - { name: local, addresses: [127.0.0.1/32] }\n";
    let path = write_config(&dir, &config(one_carrier, "secret1", ""));
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(path.clone()),
            ..Default::default()
        },
    );

    call_from(&dir, &verde, CARRIER_B, "403").assert_success("a call from an unknown carrier");
    register(&dir, &verde, "secret1", "200").assert_success("the agent's phone, first password");

    // The operator adds carrier B, changes Anna's password and a media option, then SIGHUP.
    let two_carriers =
        format!("{one_carrier}  - {{ name: carrier-b, addresses: [{CARRIER_B}/32] }}\n");
    rewrite(
        &path,
        &config(&two_carriers, "secret9", "media:\n  inband_dtmf: false\n"),
    );
    hup(&verde);
    let line = verde.wait_log("config reloaded", Duration::from_secs(10));
    assert!(
        line.contains("trunks") && line.contains("accounts"),
        "both live parts must be applied: {line}"
    );
    assert!(
        line.contains("media") && line.contains("restart"),
        "the media change must be named as waiting for a restart: {line}"
    );

    let out = call_from(&dir, &verde, CARRIER_B, "200");
    out.assert_success("a call from carrier B after the reload");
    let record = verde.wait_call_record(&out.call_id, Duration::from_secs(10));
    assert_eq!(record["trunk"], "carrier-b", "record {record:#}");

    register(&dir, &verde, "secret1", "403").assert_success("the old password after the reload");
    register(&dir, &verde, "secret9", "200").assert_success("the new password after the reload");
    let mut cti = Cti::connect(verde.http);
    let r = cti.cmd(serde_json::json!({"type": "login", "user": "1001", "password": "secret1"}));
    assert_eq!(r["type"], "error", "CTI login with the old password: {r}");
    let mut cti = Cti::connect(verde.http);
    cti.login("1001", "secret9");

    // A broken file: refused with its name and line; carrier B keeps calling.
    rewrite(
        &path,
        &format!(
            "{}\ntrunks: [ {{ name: x, addresses: [",
            config(&two_carriers, "secret9", "")
        ),
    );
    hup(&verde);
    let refused = verde.wait_log("config reload refused", Duration::from_secs(10));
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        refused.contains(&name) && refused.contains(':'),
        "the refusal must name the file and line: {refused}"
    );
    call_from(&dir, &verde, CARRIER_B, "200").assert_success("carrier B after a refused reload");
    register(&dir, &verde, "secret9", "200").assert_success("the agent after a refused reload");
    verde.assert_running();
    // Secrets never reach the log, whatever a reload compared or refused.
    let logs = verde.logs();
    for secret in ["secret1", "secret9"] {
        assert!(
            !logs.contains(secret),
            "the log shows the password {secret}"
        );
    }
}
