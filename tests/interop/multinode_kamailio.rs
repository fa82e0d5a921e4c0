//! Several verde nodes behind Kamailio sharing one PostgreSQL store (docs/deploy.md, "Several
//! nodes behind Kamailio"), on one machine: every process has its own loopback address in the
//! test's private network namespace, PostgreSQL listens on a unix socket only.
//!
//! ```text
//! SIPp carrier 127.0.0.2 ──▶ Kamailio 127.0.0.10 ──▶ verde a 127.0.0.11 ─┐
//!   (and the customer a callback calls)      └────▶ verde b 127.0.0.12 ─┴─ PostgreSQL (socket)
//! agent 2001's phone 127.0.0.13 ──REGISTER──▶ verde b
//! ```
//!
//! - `node_killed_mid_load_survivor_takes_calls_and_tasks`: SIPp places calls through Kamailio
//!   at a steady rate to a toll-free number and both nodes answer some; a callback is booked
//!   on node a (which has no agent, so it waits there); node a is killed with SIGKILL while
//!   calls are up. Calls node a held are lost (counted); once Kamailio has marked node a down
//!   every new call succeeds on node b; node b adopts node a's callback after `node_timeout`
//!   and dials it (its agent, then the customer through Kamailio and the carrier); and every
//!   call node a finished before the kill has its record in PostgreSQL.
//! - `private_postgres_keeps_data_across_restart`: the harness's PostgreSQL itself.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use verde_interop::callbacks::{rfc3339_ms, WEDNESDAY_MORNING};
use verde_interop::http;
use verde_interop::kamailio::{Kamailio, KamailioSetup, NodeEntry};
use verde_interop::pg::{pg_bin_dir, PgServer};
use verde_interop::sipp::{scenario, Sipp, SippOutcome};
use verde_interop::verde::{verde_bin, WEBRTC_PORTS};
use verde_interop::{
    fixtures_dir, free_port, free_ports, read_lossy, repo_root, require_private_netns, tail,
    terminate, try_wait_for, wait_for, TestDir,
};

const KAMAILIO_IP: &str = "127.0.0.10";
const NODE_A_IP: &str = "127.0.0.11";
const NODE_B_IP: &str = "127.0.0.12";
/// The carrier: callers come from here, callbacks are relayed here (port 5060).
const CARRIER_IP: &str = "127.0.0.2";
const AGENT_IP: &str = "127.0.0.13";
const SIP_PORT: u16 = 5060;
/// University facilities (ivr-flows): callers hear the greeting and hang up during it.
const NUMBER: &str = "800022399";
/// `store.node_timeout`: seconds without a heartbeat before node b adopts node a's tasks.
const NODE_TIMEOUT_S: u64 = 5;
/// The steady load: calls per second, each held this long before the caller's BYE.
const RATE: u32 = 5;
const HOLD_MS: u64 = 1500;
/// Calls of the run the kill happens in (12 s at 5/s), and of the run after detection.
const LOAD_CALLS: u32 = 60;
const AFTER_CALLS: u32 = 20;
/// RTP and RTCP ports of each node: room for every call of the load on one node (two ports
/// a call), with the burst of calls Kamailio moves over when node a dies.
const RTP_PORTS: u16 = 200;
const AGENT: &str = "2001";
const AGENT_PASSWORD: &str = "pw2001";
const CUSTOMER: &str = "0612340001";
/// How long the called-back customer talks before hanging up.
const CUSTOMER_TALK_MS: u64 = 2000;

/// A verde node started with its own addresses (the shared harness binds 127.0.0.1).
struct Node {
    name: &'static str,
    child: Option<Child>,
    sip: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

impl Node {
    fn start(dir: &TestDir, name: &'static str, ip: &str, config: &Path) -> Node {
        let http: SocketAddr = format!("{ip}:{}", free_port()).parse().unwrap();
        let sip: SocketAddr = format!("{ip}:{SIP_PORT}").parse().unwrap();
        let rtp = free_ports(RTP_PORTS);
        let webrtc = free_ports(WEBRTC_PORTS);
        let log = dir.join(format!("node-{name}.log"));
        let out = File::create(&log).expect("create node log");
        let child = Command::new(verde_bin())
            .arg("--config")
            .arg(config)
            .args(["--sip", &sip.to_string(), "--http", &http.to_string()])
            .arg("--data")
            .arg(dir.subdir(&format!("data-{name}")))
            .args(["--media-ip", ip])
            .args(["--rtp-ports", &format!("{rtp}-{}", rtp + RTP_PORTS - 1)])
            .args([
                "--webrtc-ports",
                &format!("{webrtc}-{}", webrtc + WEBRTC_PORTS - 1),
            ])
            .arg("--flows")
            .arg(repo_root().join("ivr-flows"))
            .arg("--sounds")
            .arg(repo_root().join("sounds"))
            .args(["--wall-clock", WEDNESDAY_MORNING])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("cannot start verde");
        let mut node = Node {
            name,
            child: Some(child),
            sip,
            http,
            log,
        };
        let mut last = String::new();
        let ready = try_wait_for(Duration::from_secs(20), || {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {name} exited ({status}) while starting:\n{}",
                    tail(&node.logs(), 60)
                );
            }
            match http::get(node.http, "/health", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => Some(()),
                Ok(r) => {
                    last = format!("{} {}", r.status, r.text());
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        if ready.is_none() {
            panic!(
                "node {name}: GET /health not 200 within 20 s (last: {last}):\n{}",
                tail(&node.logs(), 60)
            );
        }
        node
    }

    fn logs(&self) -> String {
        read_lossy(&self.log)
    }

    fn get_json(&self, path: &str) -> Value {
        let r = http::get(self.http, path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("node {}: GET {path}: {e}", self.name));
        assert_eq!(
            r.status,
            200,
            "node {}: GET {path}: {}",
            self.name,
            r.text()
        );
        r.json()
            .unwrap_or_else(|e| panic!("node {}: GET {path}: {e}", self.name))
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("node running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert!(!status.success(), "node {} survived SIGKILL", self.name);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!(
                "---- node {} log ({}), last 80 lines ----\n{}\n---- end ----",
                self.name,
                self.log.display(),
                tail(&self.logs(), 80)
            );
        }
    }
}

fn node_config(dir: &TestDir, node: &str, agents: &str, store: &str) -> PathBuf {
    let text = fs::read_to_string(fixtures_dir().join("multinode/node.yaml"))
        .expect("read tests/fixtures/multinode/node.yaml");
    let mut text = text;
    for (key, value) in [
        ("@NODE@", node),
        ("@KAMAILIO_IP@", KAMAILIO_IP),
        ("@AGENTS@", agents),
        ("@STORE@", store),
    ] {
        assert!(text.contains(key), "node.yaml has no {key}");
        text = text.replace(key, value);
    }
    let path = dir.join(format!("node-{node}.yaml"));
    fs::write(&path, text).expect("write node config");
    path
}

/// Waits until a SIPp bound UDP `ip:port` (binding it ourselves then fails).
fn wait_udp_bound(ip: &str, port: u16) {
    wait_for(
        &format!("SIPp to bind UDP {ip}:{port}"),
        Duration::from_secs(10),
        || UdpSocket::bind((ip, port)).is_err().then_some(()),
    );
}

/// The SIP messages of a SIPp `-trace_msg` log: (received?, text).
fn sipp_messages(log: &str) -> Vec<(bool, String)> {
    log.replace('\r', "")
        .split("----------------------------------------------- ")
        .filter_map(|block| {
            let mut lines = block.splitn(3, '\n');
            let _time = lines.next()?;
            let kind = lines.next()?;
            let msg = lines.next()?.trim_start_matches('\n').to_string();
            Some((kind.contains("message received"), msg))
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What one SIPp run of `uac.xml` did to each call: the Call-IDs it placed and those whose
/// BYE was answered 200 (the scenario's last step, so the call went through completely).
fn call_outcomes(out: &SippOutcome) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut placed = BTreeSet::new();
    let mut completed = BTreeSet::new();
    for (received, msg) in sipp_messages(&out.messages) {
        let Some(call_id) = header(&msg, "Call-ID") else {
            continue;
        };
        if !received && msg.starts_with("INVITE ") {
            placed.insert(call_id.to_string());
        }
        if received
            && msg.starts_with("SIP/2.0 200")
            && header(&msg, "CSeq").is_some_and(|c| c.ends_with("BYE"))
        {
            completed.insert(call_id.to_string());
        }
    }
    (placed, completed)
}

/// The steady load: `calls` calls from the carrier through Kamailio at [`RATE`] per second.
fn load(dir: &TestDir, uac: &Path, calls: u32, timeout: Duration) -> verde_interop::sipp::SippRun {
    Sipp::new(uac, format!("{KAMAILIO_IP}:{SIP_PORT}").parse().unwrap())
        .service(NUMBER)
        .local_ip(CARRIER_IP)
        .calls(calls)
        .timeout(timeout)
        .arg("-r")
        .arg(RATE.to_string())
        .arg("-d")
        .arg(HOLD_MS.to_string())
        .spawn(dir)
}

/// Milliseconds since the epoch now (verde's log lines carry wall-clock times).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `SELECT` returning one row of one column, as text.
fn one(pg: &PgServer, sql: &str) -> String {
    let rows = pg.query(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0].clone()
}

/// Call-IDs of the records a node wrote to the shared store.
fn stored_by(pg: &PgServer, node: &str) -> BTreeSet<String> {
    pg.query(&format!("SELECT call_id FROM calls WHERE node = '{node}'"))
        .into_iter()
        .collect()
}

/// Whether `node`'s log shows it took the call (its INVITE reached that node).
fn took(log: &str, call_id: &str) -> bool {
    log.lines()
        .any(|l| l.contains("incoming call") && l.contains(&format!("call_id={call_id}}}")))
}

#[test]
fn node_killed_mid_load_survivor_takes_calls_and_tasks() {
    require_private_netns();
    let t0 = Instant::now();
    let dir = TestDir::new("multinode_kamailio");
    let pg = PgServer::start(dir.path());
    let store = |node: &str| {
        format!(
            "store:\n  postgres: \"{}\"\n  node: \"{node}\"\n  node_timeout: {NODE_TIMEOUT_S}\n",
            pg.conninfo()
        )
    };

    // Node a has no agent: a callback booked there waits in its line. Node b has agent 2001.
    let agents_b = format!(
        "agents:\n  - {{ id: \"{AGENT}\", name: Bruno, password: {AGENT_PASSWORD}, queues: [pensions] }}\n"
    );
    let mut a = Node::start(
        &dir,
        "a",
        NODE_A_IP,
        &node_config(&dir, "a", "", &store("a")),
    );
    let b = Node::start(
        &dir,
        "b",
        NODE_B_IP,
        &node_config(&dir, "b", &agents_b, &store("b")),
    );
    let kamailio = Kamailio::start(
        &dir,
        KamailioSetup {
            ip: KAMAILIO_IP.into(),
            carrier_ip: CARRIER_IP.into(),
            agents_ip: AGENT_IP.into(),
            nodes: vec![
                NodeEntry {
                    name: "a".into(),
                    sip: a.sip.to_string(),
                    home_set: 11,
                },
                NodeEntry {
                    name: "b".into(),
                    sip: b.sip.to_string(),
                    home_set: 12,
                },
            ],
        },
    );
    eprintln!(
        "started PostgreSQL, two nodes and Kamailio in {:?}",
        t0.elapsed()
    );
    wait_for(
        "both nodes' heartbeats in the nodes table",
        Duration::from_secs(10),
        || (pg.query("SELECT name FROM nodes ORDER BY name") == ["a", "b"]).then_some(()),
    );

    // Agent 2001's phone on node b: the UAS half answers the callback's call to the agent.
    let agent_port = free_port();
    let agent_uas = scenario(
        &dir,
        "uas_agent_wait_bye.xml",
        &[("AGENT", AGENT.into()), ("WAIT_MS", "60000".into())],
    );
    let agent_phone = Sipp::new(&agent_uas, b.sip)
        .uas()
        .local_ip(AGENT_IP)
        .local_port(agent_port)
        .timeout(Duration::from_secs(80))
        .spawn(&dir);
    wait_udp_bound(AGENT_IP, agent_port);
    let login = scenario(
        &dir,
        "uac_agent_login.xml",
        &[
            ("AGENT", AGENT.into()),
            ("PASSWORD", AGENT_PASSWORD.into()),
            ("UAS_PORT", agent_port.to_string()),
            ("CODE", "*11".into()),
        ],
    );
    Sipp::new(&login, b.sip)
        .local_ip(AGENT_IP)
        .timeout(Duration::from_secs(15))
        .run(&dir)
        .assert_success("agent 2001 registers on node b and logs in with *11");

    // The customer a callback calls: behind the carrier, reached through Kamailio.
    let customer_uas = dir.join("uas_customer.xml");
    let text = fs::read_to_string(fixtures_dir().join("multinode/uas_customer.xml"))
        .expect("read tests/fixtures/multinode/uas_customer.xml");
    fs::write(
        &customer_uas,
        text.replace("@HANGUP_AFTER_MS@", &CUSTOMER_TALK_MS.to_string()),
    )
    .expect("write uas_customer.xml");
    let customer = Sipp::new(&customer_uas, a.sip)
        .uas()
        .local_ip(CARRIER_IP)
        .local_port(SIP_PORT)
        .timeout(Duration::from_secs(80))
        .spawn(&dir);
    wait_udp_bound(CARRIER_IP, SIP_PORT);

    // A callback booked on node a: stored first, owned by a.
    let r = http::post_json(
        a.http,
        "/api/callbacks",
        &json!({"queue": "pensions", "number": CUSTOMER}),
        Duration::from_secs(5),
    )
    .expect("POST /api/callbacks on node a");
    assert_eq!(r.status, 201, "POST /api/callbacks on node a: {}", r.text());
    let id = r.json().expect("callback JSON")["id"]
        .as_u64()
        .expect("callback id");
    let owner_sql =
        format!("SELECT node || '|' || state || '|' || attempts FROM callbacks WHERE id = {id}");
    assert_eq!(one(&pg, &owner_sql), "a|pending|0");

    // The load, through Kamailio, with the check script's caller scenario.
    let uac = dir.join("uac.xml");
    fs::copy(repo_root().join("deploy/kamailio/check/uac.xml"), &uac).expect("copy uac.xml");
    let during = load(&dir, &uac, LOAD_CALLS, Duration::from_secs(45));

    // Mid-load: both nodes have finished calls and stored their records.
    wait_for(
        "both nodes to store calls of the load in PostgreSQL (at least 6 each)",
        Duration::from_secs(20),
        || (stored_by(&pg, "a").len() >= 6 && stored_by(&pg, "b").len() >= 6).then_some(()),
    );
    // Node b, with a ready agent, left node a's callback alone while a was alive.
    assert_eq!(
        one(&pg, &owner_sql),
        "a|pending|0",
        "node b took a live node's callback"
    );
    let a_log_before = a.logs();
    let a_stored_before = stored_by(&pg, "a");
    let killed_ms = wall_ms();
    a.kill();
    let killed = Instant::now();
    eprintln!(
        "node a killed {:?} after the start, {} of its calls stored",
        killed.duration_since(t0),
        a_stored_before.len()
    );

    let down = kamailio.wait_down(1, &a.sip.to_string(), Duration::from_secs(15));
    let detection = killed.elapsed();
    eprintln!("kamailio marked node a {} after {detection:?}", down.flags);

    // Every call placed from now on must succeed, on node b.
    let after = load(&dir, &uac, AFTER_CALLS, Duration::from_secs(30)).wait();
    let (after_placed, after_done) = call_outcomes(&after);
    assert_eq!(
        after_placed.len(),
        AFTER_CALLS as usize,
        "{}",
        after.report()
    );
    after.assert_success("every call placed after kamailio marked node a down");
    assert_eq!(after_done, after_placed);
    let b_log = b.logs();
    for cid in &after_placed {
        assert!(
            took(&b_log, cid),
            "call {cid} after the detection: not on node b"
        );
    }
    wait_for(
        "node b's records of every call placed after the detection",
        Duration::from_secs(10),
        || after_placed.is_subset(&stored_by(&pg, "b")).then_some(()),
    );

    // The run the kill happened in: what failed was on node a when it died.
    let during = during.wait();
    let (placed, completed) = call_outcomes(&during);
    assert_eq!(placed.len(), LOAD_CALLS as usize, "{}", during.report());
    let (a_log, b_log) = (a.logs(), b.logs());
    let lost: BTreeSet<&String> = placed.difference(&completed).collect();
    for cid in &lost {
        assert!(
            took(&a_log, cid) && !a_stored_before.contains(*cid),
            "call {cid} failed but was not in progress on node a at the kill\n{}",
            during.report()
        );
    }
    let a_completed: BTreeSet<String> = completed
        .iter()
        .filter(|c| took(&a_log, c))
        .cloned()
        .collect();
    let b_completed: BTreeSet<String> = completed
        .iter()
        .filter(|c| took(&b_log, c))
        .cloned()
        .collect();
    assert_eq!(
        a_completed.len() + b_completed.len(),
        completed.len(),
        "a completed call was taken by both nodes or by neither"
    );
    // Every call node a finished before it died has its record, written by a.
    let a_rows = stored_by(&pg, "a");
    let a_missing: Vec<&String> = a_completed.difference(&a_rows).collect();
    assert!(
        a_missing.is_empty(),
        "{} of the {} calls node a finished have no record in PostgreSQL: {a_missing:?}",
        a_missing.len(),
        a_completed.len()
    );
    for cid in &a_rows {
        assert!(
            a_log_before.contains(cid.as_str()),
            "record {cid} of node a written after the kill?"
        );
    }
    wait_for(
        "node b's records of its calls of the load",
        Duration::from_secs(10),
        || b_completed.is_subset(&stored_by(&pg, "b")).then_some(()),
    );

    // Node b adopts node a's callback once a has been silent for node_timeout, and dials it.
    wait_for(
        "node b to adopt node a's callback",
        Duration::from_secs(NODE_TIMEOUT_S + 10),
        || one(&pg, &owner_sql).starts_with("b|").then_some(()),
    );
    let adopted_line = b
        .logs()
        .lines()
        .find(|l| {
            l.contains("callback of a silent node adopted") && l.contains(&format!("id={id} "))
        })
        .map(str::to_string)
        .expect("node b logs the adoption of the callback");
    let adopted_ms = rfc3339_ms(adopted_line.split_whitespace().next().unwrap_or_default());
    let adopted = Duration::from_millis(adopted_ms.saturating_sub(killed_ms));
    // a's last heartbeat may precede the kill by one heartbeat period (node_timeout / 4),
    // and b looks once per period: adoption comes within that much of node_timeout.
    let period = Duration::from_secs(NODE_TIMEOUT_S) / 4;
    let timeout = Duration::from_secs(NODE_TIMEOUT_S);
    assert!(
        adopted + period + Duration::from_millis(250) >= timeout
            && adopted <= timeout + 2 * period + Duration::from_secs(1),
        "callback adopted {adopted:?} after the kill; node_timeout is {timeout:?}: {adopted_line}"
    );
    let done_sql = format!(
        "SELECT c.node || '|' || c.state || '|' || coalesce(c.outcome, '') || '|' || c.attempts \
         || '|' || coalesce(a.agent, '') FROM callbacks c JOIN callback_attempts a \
         ON a.callback_id = c.id WHERE c.id = {id} ORDER BY a.seq"
    );
    let done = try_wait_for(Duration::from_secs(30), || {
        let rows = pg.query(&done_sql);
        rows.first().filter(|r| r.contains("|done|")).cloned()
    })
    .unwrap_or_else(|| {
        let b_log = b.logs();
        let dialer: Vec<&str> = b_log
            .lines()
            .filter(|l| l.contains(&format!("callback{{id={id} ")))
            .collect();
        let proxy = kamailio.logs();
        let refused: Vec<&str> = proxy
            .lines()
            .filter(|l| l.contains("WARNING") || l.contains("ERROR"))
            .filter(|l| !l.contains("did not answer") && !l.contains("no node left"))
            .collect();
        panic!(
            "node b's call of the adopted callback did not end answered within 30 s; attempts \
             {:?}\nnode b's dialer:\n{}\nkamailio's warnings:\n{}",
            pg.query(&done_sql),
            dialer.join("\n"),
            refused.join("\n")
        )
    });
    assert_eq!(done, format!("b|done|answered|1|{AGENT}"));
    let via_b = b.get_json(&format!("/api/callbacks/{id}"));
    assert_eq!(via_b["state"], "done", "{via_b}");
    let customer = customer.wait();
    customer.assert_success("the customer's phone, called back by node b through Kamailio");
    assert!(
        relayed_by_kamailio(&customer.messages),
        "the callback did not come through Kamailio"
    );
    drop(agent_phone);

    eprintln!(
        "FIGURES: load {LOAD_CALLS} calls at {RATE}/s held {HOLD_MS} ms; node a killed at {:?} \
         with {} records stored; kamailio marked it down after {detection:?}; the load's run: \
         {} completed on a (all {} in PostgreSQL), {} on b, {} lost (in progress on a); after \
         the detection {}/{AFTER_CALLS} completed on b; callback adopted {:?} after the kill \
         (node_timeout {NODE_TIMEOUT_S} s) and answered; total {:?}",
        killed.duration_since(t0),
        a_stored_before.len(),
        a_completed.len(),
        a_rows.len(),
        b_completed.len(),
        lost.len(),
        after_done.len(),
        adopted,
        t0.elapsed()
    );
}

/// Whether the customer's INVITE was relayed by Kamailio (its Via is in the customer's
/// received INVITE).
fn relayed_by_kamailio(customer_messages: &str) -> bool {
    sipp_messages(customer_messages)
        .iter()
        .any(|(received, m)| {
            *received
                && m.starts_with("INVITE ")
                && m.lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("via:") && l.contains(KAMAILIO_IP))
        })
}

fn pg_isready(conninfo: &str) -> bool {
    let host = conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .expect("conninfo names a host");
    Command::new(pg_bin_dir().join("pg_isready"))
        .args(["-q", "-h", host, "-p", "5432", "-U", "verde", "-d", "verde"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The harness's private PostgreSQL: reachable as `verde` through the socket only, keeps its
/// data across a stop and a start.
#[test]
fn private_postgres_keeps_data_across_restart() {
    require_private_netns();
    let dir = TestDir::new("private_postgres");
    let mut pg = PgServer::start(dir.path());
    let conninfo = pg.conninfo();
    assert!(
        conninfo.contains("user=verde") && conninfo.contains("dbname=verde"),
        "{conninfo}"
    );
    let host = conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .unwrap();
    assert!(
        Path::new(host).join(".s.PGSQL.5432").exists(),
        "socket in {host}"
    );
    pg.query("CREATE TABLE t (n int)");
    pg.query("INSERT INTO t VALUES (7)");
    assert_eq!(pg.query("SELECT current_user, n FROM t"), vec!["verde|7"]);
    // No TCP listener at all: the server is only on its socket.
    assert_eq!(
        pg.query("SELECT setting = '' FROM pg_settings WHERE name = 'listen_addresses'"),
        vec!["t"]
    );
    pg.stop();
    assert!(!pg_isready(&conninfo), "server still answers after stop");
    pg.start_again();
    assert_eq!(pg.query("SELECT n FROM t"), vec!["7"]);
}
