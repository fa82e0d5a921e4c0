//! kill -9 while callback requests are being written: every request the writer was told is
//! stored must be there after a restart, exactly once, with its original times.
//!
//! The test binary runs itself again as the writer (the child, selected by an environment
//! variable), reads what the child reports as durable on its stdout, and SIGKILLs it at a random
//! point. Three rounds on the same database file:
//! 1. `synchronous=NORMAL`, killed after a random number of requests;
//! 2. `synchronous=FULL`, the same 1,000 numbers written again (each must update, not
//!    duplicate, the one already stored) and killed at another random point;
//! 3. all 1,000 written, five callbacks put in the middle of a dialing attempt, then killed:
//!    after the restart `recover_after_crash` must put exactly those five back in the basket.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use verde_store::{AttemptOutcome, CallbackState, Durability, NewCallback, SqliteStore, TaskStore};

const TEST_NAME: &str = "kill_9_loses_no_durable_callback_request";
const CHILD_ENV: &str = "VERDE_STORE_CRASH_CHILD";
const REQUESTS: usize = 1000;
const DIALING: usize = 5;
const T0: i64 = 1_795_000_000_000;
/// How long the parent waits for the child's next line before failing.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

fn number(i: usize) -> String {
    format!("06{i:08}")
}

/// Round `round`'s request for the i-th number. The deadline depends only on the number, so
/// a rewrite in a later round leaves it unchanged; `requested_at_ms` differs per round, so the
/// test can tell the original from a rewrite.
fn request(i: usize, round: u32) -> NewCallback {
    let requested_at_ms = T0 + i64::from(round) * 10_000_000 + i as i64 * 1000;
    NewCallback {
        queue: format!("q{}", i % 3),
        number: number(i),
        caller_call_id: format!("call-{round}-{i}"),
        did: "800123456".into(),
        requested_at_ms,
        band: None,
        not_before_ms: requested_at_ms,
        deadline_ms: T0 + 8 * 3_600_000 + i as i64 * 1000,
        max_attempts: 2,
        variables: BTreeMap::from([("round".to_string(), round.to_string())]),
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    // Behave like libtest with a name filter, so `cargo test -p verde-store some_unit_test`
    // does not spend time here.
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-')) {
        if !TEST_NAME.contains(filter.as_str()) {
            println!("running 0 tests (filtered out: {TEST_NAME})");
            return;
        }
    }
    println!("running 1 test");
    parent();
    println!("test {TEST_NAME} ... ok");
}

/// The writer: `path|round|normal-or-full|dial-or-not`.
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [path, round, durability, dial] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let round: u32 = round.parse().unwrap();
    let durability = match durability {
        "full" => Durability::Full,
        _ => Durability::Normal,
    };
    let store = SqliteStore::open_with(Path::new(path), durability).unwrap();
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    for i in 0..REQUESTS {
        let (id, created) = store.upsert_callback(&request(i, round)).unwrap();
        ids.push(id);
        // Printed only once the upsert has returned: this line is the promise the test checks.
        writeln!(out, "done {i} {id} {created}").unwrap();
        out.flush().unwrap();
    }
    if dial == "dial" {
        for &id in &ids[..DIALING] {
            store
                .start_attempt(id, T0 + 99_000_000, Some("anna"))
                .unwrap();
            writeln!(out, "dialing {id}").unwrap();
            out.flush().unwrap();
        }
    }
    writeln!(out, "idle").unwrap();
    out.flush().unwrap();
    // Wait to be killed, as a running engine would be.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn(path: &Path, round: u32, durability: &str, dial: bool) -> Running {
    let spec = format!(
        "{}|{round}|{durability}|{}",
        path.display(),
        if dial { "dial" } else { "no" }
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-executing the test binary as the writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

impl Running {
    fn next_line(&mut self, awaiting: &str) -> String {
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let status = self.child.try_wait().ok().flatten();
                let _ = self.child.kill();
                panic!("waiting for {awaiting} from the writer: {e:?} (writer status {status:?})");
            }
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the writer should have died of SIGKILL, got {status:?}"
            );
        }
    }
}

/// What the parent knows about a number: its id and the round whose request created it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Known {
    id: i64,
    created_round: u32,
}

/// Reads `done` lines until `stop_after` of them (or `idle`), checking ids against `known`.
/// Returns the numbers the writer reported durable in this round.
fn follow(
    run: &mut Running,
    round: u32,
    stop_after: usize,
    known: &mut HashMap<usize, Known>,
) -> Vec<usize> {
    let mut reported = Vec::new();
    while reported.len() < stop_after {
        let line = run.next_line(&format!("`done` line {}", reported.len() + 1));
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("done"), "unexpected writer line {line:?}");
        let i: usize = f.next().unwrap().parse().unwrap();
        let id: i64 = f.next().unwrap().parse().unwrap();
        let created: bool = f.next().unwrap().parse().unwrap();
        match known.get(&i) {
            Some(k) => {
                assert!(!created, "number {i} stored twice (round {round})");
                assert_eq!(k.id, id, "number {i} changed id in round {round}");
            }
            None => {
                // `verify` learnt every number stored in earlier rounds, reported or not.
                assert!(created, "number {i} updated but never seen stored");
                known.insert(
                    i,
                    Known {
                        id,
                        created_round: round,
                    },
                );
            }
        }
        reported.push(i);
    }
    reported
}

/// Reopens the store as a restarted engine would and checks every promise.
fn verify(path: &Path, round: u32, known: &mut HashMap<usize, Known>, reported: &[usize]) {
    let store = SqliteStore::open(path).unwrap();
    let pending = store.pending_callbacks().unwrap();
    let mut by_number: HashMap<String, usize> = HashMap::new();
    for c in &pending {
        *by_number.entry(c.number.clone()).or_default() += 1;
    }
    let dup: Vec<_> = by_number.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated after round {round}: {dup:?}");
    assert!(pending.len() <= REQUESTS);

    // Numbers stored after the last line the parent read were created in this round.
    for c in &pending {
        let i: usize = c.number[2..].parse().unwrap();
        known.entry(i).or_insert(Known {
            id: c.id,
            created_round: round,
        });
    }
    for &i in reported {
        let k = known[&i];
        let c = store
            .find_pending(&request(i, round).queue, &number(i))
            .unwrap()
            .unwrap_or_else(|| panic!("number {i}, reported durable in round {round}, is lost"));
        let original = request(i, k.created_round);
        assert_eq!(c.id, k.id, "number {i}");
        assert_eq!(c.requested_at_ms, original.requested_at_ms, "number {i}");
        assert_eq!(c.deadline_ms, original.deadline_ms, "number {i}");
        assert_eq!(c.caller_call_id, original.caller_call_id, "number {i}");
    }
    for c in &pending {
        let i: usize = c.number[2..].parse().unwrap();
        let original = request(i, known[&i].created_round);
        assert_eq!(c.requested_at_ms, original.requested_at_ms, "number {i}");
        assert_eq!(c.deadline_ms, original.deadline_ms, "number {i}");
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("verde.db");
    let mut known: HashMap<usize, Known> = HashMap::new();
    let mut rng = rand::rng();

    for (round, durability) in [(1, "normal"), (2, "full")] {
        let kill_after = rand::Rng::random_range(&mut rng, 1..=REQUESTS);
        println!("round {round} ({durability}): SIGKILL after {kill_after} reported requests");
        let mut run = spawn(&path, round, durability, false);
        let reported = follow(&mut run, round, kill_after, &mut known);
        run.kill9();
        verify(&path, round, &mut known, &reported);
    }

    println!("round 3: all {REQUESTS} requests, {DIALING} attempts in progress, then SIGKILL");
    let mut run = spawn(&path, 3, "normal", true);
    let reported = follow(&mut run, 3, REQUESTS, &mut known);
    let mut dialing = Vec::new();
    loop {
        let line = run.next_line("`dialing` or `idle`");
        match line.strip_prefix("dialing ") {
            Some(id) => dialing.push(id.parse::<i64>().unwrap()),
            None => {
                assert_eq!(line, "idle");
                break;
            }
        }
    }
    run.kill9();
    verify(&path, 3, &mut known, &reported);

    let store = SqliteStore::open(&path).unwrap();
    let all = store.pending_callbacks().unwrap();
    assert_eq!(all.len(), REQUESTS, "every request is in the basket once");
    let recovered = store.recover_after_crash(T0 + 100_000_000).unwrap();
    let mut recovered_ids: Vec<i64> = recovered.iter().map(|c| c.id).collect();
    recovered_ids.sort();
    dialing.sort();
    assert_eq!(recovered_ids, dialing);
    for c in &recovered {
        assert_eq!(c.state, CallbackState::Pending);
        assert_eq!(c.attempts, 0);
        assert_eq!(c.attempt_log.len(), 1);
        assert_eq!(c.attempt_log[0].outcome, Some(AttemptOutcome::Interrupted));
    }
    assert!(store
        .recover_after_crash(T0 + 100_000_001)
        .unwrap()
        .is_empty());
    assert_eq!(store.pending_callbacks().unwrap().len(), REQUESTS);
    println!(
        "all {REQUESTS} requests present once with original times; {DIALING} interrupted attempts recovered"
    );
}
