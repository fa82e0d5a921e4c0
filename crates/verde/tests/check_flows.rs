//! `verde check-flows` as a user runs it: the shipped flows pass; a broken copy fails with
//! `file:line: reason` for each error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_verde"))
        .arg("check-flows")
        .arg(dir)
        .arg("--sounds")
        .arg(root().join("sounds"))
        .output()
        .expect("run verde check-flows");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn shipped_flows_are_valid() {
    let (ok, out) = check(&root().join("ivr-flows"));
    assert!(ok, "{out}");
    for did in ["803164", "800022399", "800779366"] {
        assert!(
            out.contains(did),
            "number {did} not reported as served:\n{out}"
        );
    }
}

#[test]
fn broken_flow_is_reported_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("verde-check-flows-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::fs::read_to_string(root().join("ivr-flows/teaching-helpdesk.yaml")).unwrap();
    // Point the start node at a node that does not exist.
    let start_line = src
        .lines()
        .position(|l| l.starts_with("start:"))
        .expect("flow has a start: line")
        + 1;
    let broken: String = src
        .lines()
        .map(|l| {
            if l.starts_with("start:") {
                "start: no_such_node".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("helpdesk.yaml"), broken).unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok, "a dangling start node must fail:\n{out}");
    let expected = format!("helpdesk.yaml:{start_line}:");
    assert!(
        out.lines()
            .any(|l| l.contains(&expected) && l.contains("no_such_node")),
        "expected an error at {expected} naming no_such_node, got:\n{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
