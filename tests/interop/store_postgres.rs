//! verde on PostgreSQL (`store.postgres`), against a private server (tests/pg.rs):
//!
//! - `conformance_cases_pass_on_postgresql`: every behaviour case the embedded SQLite store
//!   passes (verde-store's `conformance` module), plus the multi-node ones (own callbacks,
//!   heartbeats, adoption of a silent node's basket, per-node dialog journals, racing claims),
//!   each case in a schema of its own; then four nodes starting together on an empty schema
//!   (one migrates, all start) and a schema from a newer verde (refused);
//! - `calls_flow_through_a_postgresql_outage_and_every_record_arrives`: verde answers SIPp
//!   calls and their records land in PostgreSQL (written by node `node-a`), a callback booked
//!   over HTTP is a row of `callbacks` owned by the node, the node's heartbeat is in `nodes`,
//!   a callback of a node never seen is adopted by this one;
//!   PostgreSQL is stopped in the middle of a load: every call is still answered, `/health`
//!   says `"store":"failing"`, the records go to the spool; PostgreSQL back: every record
//!   arrives exactly once and `/health` is ok again. The conninfo carries a password, which
//!   must never appear in verde's log; with the server down, verde refuses to start and says
//!   which database (without the password).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use verde_interop::flows::INPS;
use verde_interop::pg::PgServer;
use verde_interop::sipp::{answered_calls, scenario, Sipp, SippOutcome};
use verde_interop::verde::{verde_bin, Verde, VerdeOptions};
use verde_interop::{require_private_netns, try_wait_for, wait_for, TestDir};
use verde_store::conformance::{self, Backend};
use verde_store::PgStore;

/// Sent to the server but never asked for (trust authentication): it only has to stay out of
/// every log line and message.
const PASSWORD: &str = "not-to-be-logged-8c1f";
const NODE: &str = "node-a";

/// Each case's database is a schema of its own in database `verde`.
struct Schemas<'a> {
    pg: &'a PgServer,
    made: HashSet<String>,
}

impl Backend for Schemas<'_> {
    type Store = PgStore;
    fn open(&mut self, db: &str, node: &str) -> PgStore {
        let schema = format!("case_{db}");
        if self.made.insert(schema.clone()) {
            self.pg.query(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ));
        }
        let conninfo = format!("{} options='-c search_path={schema}'", self.pg.conninfo());
        PgStore::connect(&conninfo, node).unwrap_or_else(|e| panic!("open {db} as {node}: {e}"))
    }
    fn shared(&self) -> bool {
        true
    }
}

#[test]
fn conformance_cases_pass_on_postgresql() {
    let dir = TestDir::new("store_postgres_conformance");
    let pg = PgServer::start(dir.path());
    let mut schemas = Schemas {
        pg: &pg,
        made: HashSet::new(),
    };
    conformance::run_all(&mut schemas);
    // The schema was built once per case, under the migrations' bookkeeping.
    assert_eq!(
        pg.query("SELECT version FROM case_reopen.schema_migrations"),
        vec!["1"]
    );

    // Nodes starting together on an empty database take turns: all start, one migrates.
    pg.query("CREATE SCHEMA together");
    let conninfo = format!("{} options='-c search_path=together'", pg.conninfo());
    let opened: Vec<_> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..4)
            .map(|i| {
                let conninfo = &conninfo;
                scope.spawn(move || PgStore::connect(conninfo, &format!("n{i}")).map(|_| ()))
            })
            .collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in &opened {
        assert!(r.is_ok(), "a node failed to start: {r:?}");
    }
    assert_eq!(
        pg.query("SELECT COUNT(*) FROM together.schema_migrations"),
        vec!["1"]
    );

    // A database a newer verde migrated is refused, not guessed at.
    pg.query("INSERT INTO together.schema_migrations (version) VALUES (99)");
    match PgStore::connect(&conninfo, "n0") {
        Err(verde_store::StoreError::SchemaTooNew { found: 99, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn calls_flow_through_a_postgresql_outage_and_every_record_arrives() {
    require_private_netns();
    let dir = TestDir::new("store_postgres");
    let mut pg = PgServer::start(dir.path());
    let conninfo = format!("{} password={PASSWORD}", pg.conninfo());
    let config = write_config(&dir, &conninfo);
    let mut verde = Verde::start(
        &dir,
        VerdeOptions {
            config: Some(config.clone()),
            ..Default::default()
        },
    );
    verde.wait_log(
        "store: PostgreSQL shared by the nodes",
        Duration::from_secs(5),
    );
    assert!(
        !verde.data_dir.join("verde.db").exists(),
        "the embedded store was opened as well"
    );

    // Calls answered, their records in PostgreSQL, written by this node.
    let first = place_calls(&dir, &verde, 3);
    let first_ids = call_ids(&first, 3);
    wait_records(&pg, &first_ids, Duration::from_secs(10));
    for row in pg.query(&format!(
        "SELECT node, record->>'answered_at' IS NOT NULL, record->>'did' FROM calls
         WHERE call_id IN ({})",
        sql_list(&first_ids)
    )) {
        assert_eq!(row, format!("{NODE}|t|{INPS}"), "a record as stored");
    }
    // And verde reads them back from there.
    let r = verde.get(&format!(
        "/api/calls/{}",
        verde_interop::verde::encode_path_segment(&first_ids[0])
    ));
    assert_eq!(r.status, 200, "{}", r.text());

    // A callback booked is a row of the shared basket, owned by this node.
    let r = verde.post_json(
        "/api/callbacks",
        &serde_json::json!({"queue": "pensions", "number": "0612345678"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json().expect("JSON")["id"].as_i64().expect("callback id");
    assert_eq!(
        pg.query(&format!(
            "SELECT queue, number, state, node FROM callbacks WHERE id = {id}"
        )),
        vec![format!("pensions|0612345678|pending|{NODE}")]
    );
    // The node beats.
    wait_for("the node's heartbeat", Duration::from_secs(10), || {
        (pg.query(&format!(
            "SELECT seen_ms > 0 FROM nodes WHERE name = '{NODE}'"
        )) == vec!["t"])
        .then_some(())
    });

    // The basket of a node that fell silent (here: one never seen) becomes this node's.
    let orphan = pg.query(
        "INSERT INTO callbacks (queue, number, caller_call_id, did, requested_at_ms,
             not_before_ms, deadline_ms, max_attempts, state, variables, node)
         VALUES ('pensions', '0698765432', 'gone-1', '', 1, 1, 2, 2, 'pending', '{}',
             'node-gone')
         RETURNING id",
    );
    let line = verde.wait_log(
        "callbacks of a silent node adopted",
        Duration::from_secs(15),
    );
    assert!(line.contains(&orphan[0]), "not the orphan: {line}");
    assert_eq!(
        pg.query(&format!(
            "SELECT node FROM callbacks WHERE id = {}",
            orphan[0]
        )),
        vec![NODE]
    );

    // A load of 10 calls at 2 per second; PostgreSQL stops once the first of them is stored.
    let load = load_calls(&dir, &verde, 10);
    let prefix = load.call_id().to_string();
    let load_ids = numbered(&prefix, 10);
    wait_for(
        "a first record of the load in PostgreSQL",
        Duration::from_secs(20),
        || (count_records(&pg, &load_ids) >= 1).then_some(()),
    );
    pg.stop();
    let out = load.wait();
    out.assert_success("10 calls while PostgreSQL goes down");
    let alarm = verde.wait_log("ALARM: the store is failing", Duration::from_secs(15));
    assert!(
        !alarm.contains(PASSWORD),
        "the alarm shows the password: {alarm}"
    );
    let h = wait_for(
        "the records of the outage in the spool",
        Duration::from_secs(15),
        || {
            let h = health(&verde);
            (h["store"] == "failing" && h["records_spooled"].as_u64()? >= 1).then_some(h)
        },
    );
    eprintln!("while PostgreSQL is down: /health {h}");
    verde.assert_running();

    // PostgreSQL back: everything arrives, once, and the alarm clears.
    pg.start_again();
    verde.wait_log("ALARM cleared", Duration::from_secs(40));
    wait_records(&pg, &load_ids, Duration::from_secs(10));
    let all: Vec<String> = first_ids.iter().chain(&load_ids).cloned().collect();
    assert_eq!(
        pg.query(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT call_id) FROM calls WHERE call_id IN ({})",
            sql_list(&all)
        )),
        vec!["13|13"]
    );
    wait_for("/health ok again", Duration::from_secs(10), || {
        let h = health(&verde);
        (h["store"] == "ok" && h["records_pending"].as_u64()? == 0).then_some(())
    });
    // The node reconnected for its tasks too: a second booking updates the first.
    let r = verde.post_json(
        "/api/callbacks",
        &serde_json::json!({"queue": "pensions", "number": "0612345678"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    verde.stop();
    let logs = verde.logs();
    assert!(
        !logs.contains(PASSWORD),
        "verde's log shows the database password"
    );

    // With the server down, verde refuses to start and names the database.
    pg.stop();
    let refused = Command::new(verde_bin())
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(dir.subdir("refused-data"))
        .args(["--sip", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run verde");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "verde started without its store");
    assert!(
        text.contains("cannot open the PostgreSQL store")
            && text.contains(&pg.conninfo())
            && text.contains("password=***"),
        "the error does not name the database: {text}"
    );
    assert!(
        !text.contains(PASSWORD),
        "the error shows the password: {text}"
    );
}

fn write_config(dir: &TestDir, conninfo: &str) -> PathBuf {
    let path = dir.join("verde-pg.yaml");
    let text = format!(
        "store:\n  postgres: \"{}\"\n  node: {NODE}\n  node_timeout: 30\n\
         # A node adopts callbacks only when it can dial them; nobody answers here, and no\n\
         # agent is logged in to take one anyway.\n\
         outbound:\n  uri: \"sip:{{number}}@127.0.0.1:9\"\n",
        conninfo.replace('\\', "\\\\").replace('"', "\\\"")
    );
    fs::write(&path, text).expect("write config");
    path
}

/// `n` concurrent calls to the INPS number, each listening 1.5 s then hanging up.
fn place_calls(dir: &TestDir, verde: &Verde, n: u32) -> SippOutcome {
    answered_calls(dir, verde.sip, INPS, n, Duration::from_secs(40))
}

/// The load that PostgreSQL's stop falls into: 3 s calls, 2 new ones a second.
fn load_calls(dir: &TestDir, verde: &Verde, n: u32) -> verde_interop::sipp::SippRun {
    let scen = scenario(
        dir,
        "uac_call.xml",
        &[("ACTIONS", String::new()), ("LISTEN_MS", "3000".into())],
    );
    let mut run = Sipp::new(&scen, verde.sip)
        .service(INPS)
        .calls(n)
        .arg("-r")
        .arg("2")
        .timeout(Duration::from_secs(60))
        .spawn(dir);
    run.wait_bound();
    run
}

/// SIPp numbers its Call-IDs `<prefix>-<n>@<ip>` from 1 (`-cid_str`).
fn call_ids(out: &SippOutcome, n: u32) -> Vec<String> {
    numbered(&out.call_id, n)
}

fn numbered(first: &str, n: u32) -> Vec<String> {
    let at = first
        .rfind("-1@")
        .unwrap_or_else(|| panic!("SIPp's first Call-ID {first} ends in -1@ip"));
    (1..=n)
        .map(|i| format!("{}-{i}{}", &first[..at], &first[at + 2..]))
        .collect()
}

fn sql_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("'{}'", id.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_records(pg: &PgServer, ids: &[String]) -> usize {
    pg.query(&format!(
        "SELECT COUNT(*) FROM calls WHERE call_id IN ({})",
        sql_list(ids)
    ))[0]
        .parse()
        .expect("a count")
}

fn wait_records(pg: &PgServer, ids: &[String], timeout: Duration) {
    let got = try_wait_for(timeout, || {
        (count_records(pg, ids) == ids.len()).then_some(())
    });
    if got.is_none() {
        panic!(
            "only {} of {} records in PostgreSQL",
            count_records(pg, ids),
            ids.len()
        );
    }
}

fn health(verde: &Verde) -> serde_json::Value {
    let r = verde.get("/health");
    assert_eq!(r.status, 200, "/health must stay 200: {}", r.text());
    r.json().expect("/health is JSON")
}
