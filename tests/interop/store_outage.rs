//! The embedded store fails for real (SQLITE_FULL: its disk is full) while SIPp calls come in:
//! every call is still answered by the IVR, the log raises one ALARM with SQLite's error,
//! `/health` stays 200 with `"store":"failing"` and the pending count, and once room is made
//! every call's record arrives in `/api/calls`, with an `ALARM cleared` line counting them.
//! Then the same with the spool on another disk: records kept through a SIGTERM and through a
//! `kill -9` are in the store after the restart.
//!
//! How the disk fills up: verde runs with `--data` on a 4 MiB tmpfs mounted in a mount
//! namespace of its own. `VERDE_BIN` points at a wrapper that does `unshare -m` (no fork, so the
//! wrapper's process id is verde's), mounts the tmpfs over the data folder, optionally binds a
//! real folder over `<data>/spool`, and execs verde. The test reaches verde's tmpfs through
//! `/proc/<verde pid>/root/<data folder>` to add and remove a filler file. This needs the right
//! to mount in a new mount namespace: root, or the user namespace `unshare -rn` makes (both ways
//! the harness runs the interop tests); a permission error names the fix. Making the database
//! file read-only is no use: the tests run as root, who writes anyway.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use verde_interop::flows::INPS;
use verde_interop::sipp::{answered_calls, SippOutcome};
use verde_interop::verde::{encode_path_segment, field, verde_bin, Verde, VerdeOptions};
use verde_interop::{require_private_netns, wait_for, TestDir};

/// Small enough to fill at once, big enough for the database, its WAL and recordings' folders.
const TMPFS: &str = "4m";

#[test]
fn calls_go_on_while_the_store_is_full_and_every_record_arrives_once_there_is_room() {
    require_private_netns();
    let dir = TestDir::new("store_outage");
    let data = dir.join("verde-data");
    let spool_outside = dir.join("spool-on-another-disk");
    check_can_mount(&dir);
    let wrapper = write_wrapper(&dir, &data, &spool_outside);
    // Only this test runs in this binary, so the harness's VERDE_BIN can be ours.
    std::env::set_var("VERDE_BIN", &wrapper);
    let mut verde = Verde::start(&dir, VerdeOptions::default());
    assert_eq!(verde.data_dir, data, "the harness moved the data folder");
    assert_on_tmpfs(&verde);

    // The store works on the tmpfs: a first call's record is stored as usual.
    let first = place_calls(&dir, &verde, 1);
    verde.wait_call_record(&call_ids(&first, 1)[0], Duration::from_secs(10));
    assert_health(&verde, "ok", |n| n == 0);

    // Disk full, with the spool on it too: records wait in memory.
    let filler = fill(&verde);
    let out = place_calls(&dir, &verde, 3);
    let ids = call_ids(&out, 3);
    let alarm = verde.wait_log("ALARM: the store is failing", Duration::from_secs(15));
    assert!(
        alarm.contains("full"),
        "the alarm does not carry SQLite's error: {alarm}"
    );
    verde.wait_log(
        "ALARM: the spool cannot be written either",
        Duration::from_secs(10),
    );
    let while_full = assert_health(&verde, "failing", |n| n >= 3);
    eprintln!("while full: /health {while_full}");
    for id in &ids {
        let r = verde.get(&format!("/api/calls/{}", encode_path_segment(id)));
        assert_eq!(r.status, 404, "{id} stored on a full disk?! {}", r.text());
    }
    verde.assert_running();

    // Room again: everything kept goes in, with the all-clear.
    fs::remove_file(&filler).expect("remove the filler");
    let cleared = verde.wait_log("ALARM cleared", Duration::from_secs(30));
    assert!(
        cleared.contains("3 call records"),
        "the all-clear does not count the 3 late records: {cleared}"
    );
    for id in &ids {
        let record = verde.wait_call_record(id, Duration::from_secs(5));
        assert!(
            !field(&record, "answered_at").is_null(),
            "{id}: the record does not show the call answered: {record:#}"
        );
    }
    assert_health(&verde, "ok", |n| n == 0);
    let logs = verde.logs();
    assert_eq!(
        logs.matches("ALARM: the store is failing").count(),
        1,
        "one alarm per outage, not one per retry"
    );

    // Spool on another disk; the store fills up again and verde is stopped (SIGTERM): the
    // records are in the spool and the next start stores them before serving.
    verde.stop();
    fs::create_dir_all(&spool_outside).unwrap();
    verde.restart(&dir);
    let filler = fill(&verde);
    let out = place_calls(&dir, &verde, 2);
    let ids = call_ids(&out, 2);
    verde.wait_log("ALARM: the store is failing", Duration::from_secs(15));
    verde.stop();
    let _ = filler;
    let spooled = fs::read_to_string(spool_outside.join("records.jsonl"))
        .expect("a spool file left at shutdown");
    for id in &ids {
        assert!(
            spooled.contains(id.as_str()),
            "{id} not in the spool:\n{spooled}"
        );
    }
    // The stopped verde's log (read before the restart replaces it).
    let stopped_log = fs::read_to_string(verde.log_path()).unwrap();
    assert!(
        stopped_log.contains("kept in the spool"),
        "no shutdown line about the spool:\n{stopped_log}"
    );
    verde.restart(&dir);
    verde.wait_log("spool replayed into the store", Duration::from_secs(1));
    for id in &ids {
        verde.wait_call_record(id, Duration::from_secs(1));
    }
    assert!(
        !spool_outside.join("records.jsonl").exists(),
        "the spool is still there after its replay"
    );

    // Same, but killed (-9) once the spool holds them: nothing else ran at exit.
    let _filler = fill(&verde);
    let out = place_calls(&dir, &verde, 2);
    let ids = call_ids(&out, 2);
    wait_for("the records in the spool", Duration::from_secs(15), || {
        let h = health(&verde);
        (h["records_spooled"].as_u64()? >= 2).then_some(())
    });
    verde.kill();
    verde.restart(&dir);
    for id in &ids {
        verde.wait_call_record(id, Duration::from_secs(1));
    }
    assert_health(&verde, "ok", |n| n == 0);
}

/// Runs `n` concurrent calls to the INPS number, each listening 1.5 s then hanging up: they
/// must all be answered whatever the state of the store.
fn place_calls(dir: &TestDir, verde: &Verde, n: u32) -> SippOutcome {
    answered_calls(dir, verde.sip, INPS, n, Duration::from_secs(30))
}

/// SIPp numbers its Call-IDs `<prefix>-<n>@<ip>` from 1 (`-cid_str`).
fn call_ids(out: &SippOutcome, n: u32) -> Vec<String> {
    let first = &out.call_id;
    let at = first
        .rfind("-1@")
        .expect("SIPp's first Call-ID ends in -1@ip");
    (1..=n)
        .map(|i| format!("{}-{i}{}", &first[..at], &first[at + 2..]))
        .collect()
}

fn health(verde: &Verde) -> serde_json::Value {
    let r = verde.get("/health");
    assert_eq!(r.status, 200, "/health must stay 200: {}", r.text());
    r.json().expect("/health is JSON")
}

fn assert_health(verde: &Verde, store: &str, pending: impl Fn(u64) -> bool) -> serde_json::Value {
    let h = health(verde);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["store"], store, "{h}");
    let n = h["records_pending"].as_u64().expect("records_pending");
    assert!(pending(n), "records_pending {n}: {h}");
    h
}

/// Verde's data folder as verde sees it (on its tmpfs).
fn inside(verde: &Verde) -> PathBuf {
    let data = verde.data_dir.strip_prefix("/").expect("absolute data dir");
    Path::new(&format!("/proc/{}/root", verde.pid())).join(data)
}

fn assert_on_tmpfs(verde: &Verde) {
    let mounts = fs::read_to_string(format!("/proc/{}/mounts", verde.pid())).unwrap();
    let data = verde.data_dir.display().to_string();
    assert!(
        mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .any(|f| f.len() > 2 && f[1] == data && f[2] == "tmpfs"),
        "verde's data folder {data} is not on a tmpfs:\n{mounts}"
    );
    assert!(
        !verde.data_dir.join("verde.db").exists(),
        "the database is visible outside verde's mount namespace: the tmpfs is not private"
    );
}

/// Fills verde's tmpfs to the last byte; returns the filler's path.
fn fill(verde: &Verde) -> PathBuf {
    let path = inside(verde).join("filler");
    let mut f = fs::File::create(&path).expect("create the filler in verde's tmpfs");
    let chunk = vec![0u8; 64 * 1024];
    let mut chunk_len = chunk.len();
    loop {
        match f.write(&chunk[..chunk_len]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if chunk_len == 1 {
                    break;
                }
                chunk_len = (chunk_len / 2).max(1);
            }
            Err(e) => panic!("filling verde's tmpfs: {e}"),
        }
    }
    path
}

/// Fails early, with the fix, where mounting in a new mount namespace is not allowed.
fn check_can_mount(dir: &TestDir) {
    let probe = dir.subdir("mount-probe");
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
        ])
        .arg(format!("size={TMPFS}"))
        .arg("tmpfs")
        .arg(&probe)
        .output()
        .expect("unshare (util-linux) is needed");
    assert!(
        out.status.success(),
        "cannot mount a tmpfs in a new mount namespace ({}): run as root or under `unshare -rn` \
         (tests/run.sh does)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The `VERDE_BIN` wrapper: verde in a mount namespace of its own, its data on a small tmpfs,
/// and `<data>/spool` on the real disk when `spool` exists.
fn write_wrapper(dir: &TestDir, data: &Path, spool: &Path) -> PathBuf {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let inner = dir.join("verde-in-tmpfs.sh");
    fs::write(
        &inner,
        format!(
            "set -e\n\
             mount -t tmpfs -o size={TMPFS} verde-data {data}\n\
             if [ -d {spool} ]; then mkdir {data}/spool && mount --bind {spool} {data}/spool; fi\n\
             exec {bin} \"$@\"\n",
            data = quote(data),
            spool = quote(spool),
            bin = quote(&verde_bin()),
        ),
    )
    .unwrap();
    let wrapper = dir.join("verde-wrapper.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m --propagation private /bin/sh {} \"$@\"\n",
            quote(&inner)
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}
