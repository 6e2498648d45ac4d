//! What `kv node` does with a data directory it finds damaged: it refuses to start
//! without changing anything (so repairing the directory is enough), names the file and
//! offset to blame, and logs what recovery cut away.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Cluster;
use kv_engine::fs::RealFs;
use kv_engine::kv::{Op, Reply};
use kv_engine::wal::{Wal, WalOptions};
use kv_server::client::ClientOptions;

/// Hang guard for the snapshot to appear; never a measure of speed.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

fn put(cluster: &Cluster, key: String, value: Vec<u8>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = cluster.client(0, ClientOptions::default());
    let reply = rt
        .block_on(client.execute(Op::Put {
            key: key.into(),
            value: value.into(),
        }))
        .expect("put");
    assert_eq!(reply, Reply::Ok);
}

fn get(cluster: &Cluster, key: &'static str) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = cluster.client(0, ClientOptions::default());
    match rt.block_on(client.execute(Op::Get { key: key.into() })) {
        Ok(Reply::Value(value)) => value.map(|v| v.to_vec()),
        other => panic!("get {key}: {other:?}"),
    }
}

/// A one-node cluster whose directory holds a snapshot and a log after it, stopped.
fn stopped_node_with_a_snapshot() -> Cluster {
    let mut cluster = Cluster::start(1);
    let started = Instant::now();
    let mut i = 0;
    loop {
        put(&cluster, format!("k{i}"), vec![b'v'; 1024]);
        i += 1;
        let status = cluster.status(0).expect("status");
        if !status.contains("snapshot_index: 0\n") {
            break;
        }
        assert!(
            started.elapsed() < SNAPSHOT_TIMEOUT,
            "no snapshot:\n{status}"
        );
    }
    put(&cluster, "last".into(), b"after the snapshot".to_vec());
    cluster.kill_node(0);
    cluster
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// The WAL segment with the highest first index.
fn newest_segment(dir: &Path) -> PathBuf {
    files_ending(dir, ".wal")
        .into_iter()
        .rfind(|p| !p.ends_with("spare.wal"))
        .expect("a segment")
}

/// Every file's name and bytes.
fn disk(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_ending(dir, "")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_refused_start_changes_nothing_on_disk_and_the_node_starts_once_the_segment_is_back() {
    let mut cluster = stopped_node_with_a_snapshot();
    let dir = cluster.config.data_dir(0);
    let newest = newest_segment(&dir);
    let aside = cluster.dir.path().join("aside.wal");
    std::fs::rename(&newest, &aside).unwrap();
    let before = disk(&dir);
    for _ in 0..2 {
        cluster.start_node(0);
        assert!(!cluster.wait_exit(0), "started without its newest segment");
        let log = cluster.log(0);
        let snap = files_ending(&dir, ".snap").pop().expect("a snapshot");
        let name = snap.file_name().unwrap().to_string_lossy().into_owned();
        assert!(log.contains(&name), "the error names the snapshot:\n{log}");
        assert_eq!(disk(&dir), before, "a refused start changed the directory");
    }
    std::fs::rename(&aside, &newest).unwrap();
    cluster.start_node(0);
    cluster.wait_ready(0);
    assert_eq!(get(&cluster, "last"), Some(b"after the snapshot".to_vec()));
}

#[test]
fn a_corrupt_snapshot_is_named_with_the_bad_offset() {
    let mut cluster = stopped_node_with_a_snapshot();
    let dir = cluster.config.data_dir(0);
    let snap = files_ending(&dir, ".snap").pop().expect("a snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&snap, bytes).unwrap();
    cluster.start_node(0);
    assert!(!cluster.wait_exit(0), "started on a corrupt snapshot");
    let log = cluster.log(0);
    let line = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        line.contains(&format!("corrupt {} at offset 28", snap.display())),
        "{line}"
    );
    assert!(line.contains("checksum mismatch"), "{line}");
}

#[test]
fn a_torn_tail_is_cut_and_logged() {
    let mut cluster = stopped_node_with_a_snapshot();
    let dir = cluster.config.data_dir(0);
    let newest = newest_segment(&dir);
    // Where the records end: the log writes zeros ahead of them, which opening cuts
    // without a warning (checked below).
    let scan = Wal::scan(&RealFs, newest.parent().unwrap(), WalOptions::default()).unwrap();
    let tail = scan.tail().expect("zeros ahead of the records");
    assert!(tail.zeroed, "{tail:?}");
    let valid = tail.offset;
    // Half a record header: what a crash mid-write leaves.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[9, 0, 0, 0, 1], valid).unwrap();
    drop(file);
    cluster.start_node(0);
    cluster.wait_ready(0);
    let log = cluster.full_log(0);
    let torn: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cut a torn tail"))
        .collect();
    assert_eq!(torn.len(), 1, "one warning about the torn tail:\n{log}");
    let line = torn[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&newest.display().to_string()), "{line}");
    assert!(line.contains(&format!("offset={valid}")), "{line}");
    assert_eq!(get(&cluster, "last"), Some(b"after the snapshot".to_vec()));
    // A node killed with zeros ahead of its records: no torn tail to warn about.
    put(&cluster, "later".into(), b"written".to_vec());
    cluster.kill_node(0);
    cluster.start_node(0);
    cluster.wait_ready(0);
    let log = cluster.full_log(0);
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("cut a torn tail"))
            .count(),
        1,
        "a warning for the zeros ahead of the records:\n{log}"
    );
    assert_eq!(get(&cluster, "later"), Some(b"written".to_vec()));
}
