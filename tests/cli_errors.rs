//! A user's mistake gets one clear line on stderr and a failing exit status — never a
//! backtrace, even with RUST_BACKTRACE=1 set (as many Rust users have).

use std::process::Command;

fn kv(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run kv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn mistakes_get_one_line_and_a_failing_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _) = kv(&["init", "--dir", d]);
    assert!(ok, "first init");
    let (ok, stderr) = kv(&["init", "--dir", d]);
    assert!(!ok);
    assert_one_line_error(&stderr, "refusing to overwrite");

    let missing = dir.path().join("nope/cluster.toml");
    let (ok, stderr) = kv(&["get", "k", "--cluster", missing.to_str().unwrap()]);
    assert!(!ok);
    assert_one_line_error(&stderr, "No such file or directory");
    // The cause is said once, not once per layer of the error.
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");

    let (ok, stderr) = kv(&[
        "bench",
        "--reads",
        "150",
        "--cluster",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_one_line_error(&stderr, "percentage");

    // A refused init leaves nothing behind: the next init with the right flags works.
    let fresh = dir.path().join("fresh");
    let f = fresh.to_str().unwrap();
    let (ok, stderr) = kv(&["init", "--dir", f, "--peer-port", "65535"]);
    assert!(!ok);
    assert_one_line_error(&stderr, "out of range");
    assert!(!fresh.exists(), "a failed init left {f} behind");
    // A read lease out of range is refused the same way, and leaves nothing behind.
    for ms in ["0", "401"] {
        let (ok, stderr) = kv(&["init", "--dir", f, "--read-lease-ms", ms]);
        assert!(!ok);
        assert_one_line_error(&stderr, &format!("read_lease.ms = {ms} is out of range"));
        assert!(!fresh.exists(), "a failed init left {f} behind");
    }
    let (ok, stderr) = kv(&["init", "--dir", f, "--read-lease-ms", "300"]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(fresh.join("cluster.toml")).unwrap();
    assert!(text.contains("[read_lease]\nms = 300\n"), "{text}");

    // Mode mistakes: an unknown mode, and a view asked of a cluster that has none.
    let (ok, stderr) = kv(&["init", "--dir", d, "--mode", "raft"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown mode") && stderr.contains("primary-backup"),
        "{stderr}"
    );
    let file = dir.path().join("cluster.toml");
    let (ok, stderr) = kv(&["admin", "view", "--cluster", file.to_str().unwrap()]);
    assert!(!ok);
    assert_one_line_error(&stderr, "only a primary-backup cluster has views");

    // A node needs at least one thread.
    let (ok, stderr) = kv(&[
        "node",
        "--cluster",
        file.to_str().unwrap(),
        "--id",
        "0",
        "--threads",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("--threads")
            && stderr.contains("1..=1024"),
        "{stderr}"
    );
}

/// Output into a pipe whose reader is gone (`kv ... | head`) ends the command quietly with
/// success, as for other Unix tools — not with a panic about printing to stdout.
#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["init", "--dir", d.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .output()
        .expect("run kv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
