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

fn options() -> StoreOptions {
    StoreOptions {
        // Small segments so rotation happens under the kill too.
        wal: WalOptions {
            segment_bytes_max: 64 << 10,
            recycle: true,
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
fn child(dir: &Path, round: u32) {
    let (store, _) = Store::open(Arc::new(RealFs), dir, options()).expect("open");
    let group = Arc::new(GroupCommit::start(store, GroupOptions::default()));
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
        let (dir, round) = spec.split_once('|').expect("dir|round");
        child(Path::new(dir), round.parse().expect("round"));
    }
}

#[test]
fn sigkill_mid_stream_loses_no_reported_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported: Vec<(u64, Vec<u8>)> = Vec::new();
    for round in 0..4u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "real_crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{round}", dir.path().display()))
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

        let (_, recovered) = Store::open(Arc::new(RealFs), dir.path(), options()).unwrap();
        assert!(recovered.snapshot.is_none());
        let by_index: std::collections::BTreeMap<u64, &Vec<u8>> = recovered
            .records
            .iter()
            .map(|r| (r.index, &r.payload))
            .collect();
        for (index, payload) in &reported {
            assert_eq!(
                by_index.get(index).copied(),
                Some(payload),
                "round {round}: reported-durable record {index} lost or changed"
            );
        }
        // Contiguous from 1.
        for (i, r) in recovered.records.iter().enumerate() {
            assert_eq!(r.index, i as u64 + 1);
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
