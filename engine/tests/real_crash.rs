//! Real disk, real crash: a child process appends through `RealFs` with group commit from
//! several threads and prints each record's index once it is durable. The parent SIGKILLs
//! it mid-stream, reopens the directory and requires every reported record, with its exact
//! payload. Several rounds run on the same directory, each child continuing the log.
//!
//! The child is this same test binary, re-executed with `KV_REAL_CRASH_CHILD` set.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_engine::fs::RealFs;
use kv_engine::group::{GroupCommit, GroupOptions};
use kv_engine::store::{Store, StoreOptions};
use kv_engine::wal::WalOptions;

const CHILD_ENV: &str = "KV_REAL_CRASH_CHILD";

fn options(snapshots: bool) -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            // Plain: small segments, so rotation happens under the kill too. With
            // snapshots: segments larger than what a snapshot interval writes, so every
            // rotation is a snapshot's and reuses the spare the previous one left: the
            // active segment is (almost) always a recycled file with old bytes behind.
            segment_bytes_max: if snapshots { 1 << 20 } else { 64 << 10 },
            recycle: true,
            prefill_bytes: kv_engine::wal::PREFILL_BYTES_DEFAULT,
        },
        snapshots_retained: 1,
    }
}

/// The payload a record carries: derived from writer, round and sequence, with a length
/// that varies so records straddle pages and segments.
fn payload(round: u32, writer: u32, seq: u32) -> Vec<u8> {
    let len = 16 + ((seq * 37 + writer * 11) % 700) as usize;
    let mut p = format!("r{round}w{writer}s{seq}:").into_bytes();
    p.resize(len, b'a' + (seq % 26) as u8);
    p
}

/// Child: append forever from 4 threads, report `index round writer seq` when durable.
/// With `snapshots`, a fifth thread also takes a small snapshot every 200 records, so the
/// log is compacted behind it and new segments reuse compacted files.
fn child(dir: &Path, round: u32, snapshots: bool) {
    let (store, _) = Store::open(Arc::new(RealFs), dir, options(snapshots)).expect("open");
    let group = Arc::new(GroupCommit::start(store, GroupOptions::default()));
    if snapshots {
        let group = group.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            loop {
                let durable = group.stats().durable_index;
                if durable >= last + 200 {
                    last = durable;
                    let (tx, rx) = std::sync::mpsc::channel();
                    group
                        .snapshot(
                            std::sync::Arc::new(format!("state at {durable}").into_bytes()),
                            Box::new(move |r| {
                                let _ = tx.send(r.is_ok());
                            }),
                        )
                        .expect("queue snapshot");
                    assert!(rx.recv().expect("snapshot done"), "snapshot failed");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4u32)
        .map(|writer| {
            let group = group.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let index = group
                        .append_durable(1, payload(round, writer, seq))
                        .expect("durable append");
                    let mut out = out.lock().unwrap();
                    writeln!(out, "{index} {round} {writer} {seq}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn real_crash_child_process() {
    // Only does anything when re-executed by the parent test below.
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let mut parts = spec.split('|');
        let dir = parts.next().expect("dir");
        let round = parts.next().expect("round").parse().expect("round");
        let snapshots = parts.next() == Some("snapshots");
        child(Path::new(dir), round, snapshots);
    }
}

#[test]
fn sigkill_mid_stream_loses_no_reported_record() {
    sigkill_rounds(false);
}

#[test]
fn sigkill_with_snapshots_and_recycled_segments_loses_no_reported_record() {
    sigkill_rounds(true);
}

/// Four rounds of: start a child on the same directory, read what it reports durable,
/// SIGKILL it mid-stream, reopen and check every reported record.
fn sigkill_rounds(snapshots: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mode = if snapshots { "snapshots" } else { "plain" };
    let mut reported: Vec<(u64, Vec<u8>)> = Vec::new();
    for round in 0..4u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "real_crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}|{round}|{mode}", dir.path().display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let mut this_round = 0;
        // Read until enough records are durable (or a generous hang guard trips).
        while this_round < 3000 && started.elapsed() < Duration::from_secs(60) {
            match lines.next() {
                Some(Ok(line)) if line.contains(' ') && !line.starts_with("running") => {
                    if let Some(rec) = parse(&line) {
                        reported.push(rec);
                        this_round += 1;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        // SIGKILL, no warning, in the middle of the stream.
        send_sigkill(child.id());
        let _ = child.wait();
        // Lines the child printed before it died were reported durable too.
        for line in lines.map_while(Result::ok) {
            if let Some(rec) = parse(&line) {
                reported.push(rec);
            }
        }
        assert!(this_round > 0, "round {round}: the child reported nothing");

        let (_, recovered) = Store::open(Arc::new(RealFs), dir.path(), options(snapshots)).unwrap();
        // Records up to the snapshot are covered by it (and compacted away).
        let covered = match &recovered.snapshot {
            Some(snapshot) => {
                assert!(snapshots, "round {round}: a snapshot nobody took");
                // It covers every record queued before it: at least the durable index the
                // snapshotting thread saw.
                let text = String::from_utf8_lossy(&snapshot.data).into_owned();
                let seen: u64 = text
                    .strip_prefix("state at ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("round {round}: snapshot holds {text:?}"));
                assert!(seen <= snapshot.index, "{seen} > {}", snapshot.index);
                snapshot.index
            }
            None => 0,
        };
        if snapshots && round > 0 {
            assert!(covered > 0, "round {round}: no snapshot survived");
        }
        let by_index: std::collections::BTreeMap<u64, &Vec<u8>> = recovered
            .records
            .iter()
            .map(|r| (r.index, &r.payload))
            .collect();
        for (index, payload) in reported.iter().filter(|(i, _)| *i > covered) {
            assert_eq!(
                by_index.get(index).copied(),
                Some(payload),
                "round {round}: reported-durable record {index} lost or changed"
            );
        }
        // Contiguous from just after the snapshot.
        for (i, r) in recovered.records.iter().enumerate() {
            assert_eq!(r.index, covered + i as u64 + 1);
        }
    }
}

fn parse(line: &str) -> Option<(u64, Vec<u8>)> {
    let mut parts = line.split(' ');
    let index = parts.next()?.parse().ok()?;
    let round = parts.next()?.parse().ok()?;
    let writer = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((index, payload(round, writer, seq)))
}

/// Sends SIGKILL through the `kill` command, keeping this test free of `unsafe`.
fn send_sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
}
