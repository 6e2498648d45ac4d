//! `kv demo`: a durable single-node engine session, no cluster needed. It recovers whatever
//! the directory holds, applies a batch of writes through the WAL (group commit, fsync
//! before each acknowledgement), snapshots, and reports what it found and what it cost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use kv_engine::fs::RealFs;
use kv_engine::group::{GroupCommit, GroupOptions};
use kv_engine::kv::{KvImageBuilder, KvState, Op};
use kv_engine::store::{Store, StoreOptions};

/// Arguments of `kv demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./kv-data/demo")]
    dir: PathBuf,
    /// How many Put/Append operations to apply.
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Concurrent writers sharing the group-commit log.
    #[arg(long, default_value_t = 8)]
    writers: u64,
}

const RECORD_OP: u8 = 1;

/// Runs a demo session.
pub fn run(args: DemoArgs) -> Result<()> {
    let DemoArgs { dir, ops, writers } = args;
    let writers = writers.max(1);
    let started = Instant::now();
    let (store, recovered) = Store::open(Arc::new(RealFs), &dir, StoreOptions::default())
        .with_context(|| format!("opening {}", dir.display()))?;
    let mut state = match &recovered.snapshot {
        Some(snapshot) => restore(&snapshot.data).context("decoding the snapshot")?,
        None => KvState::new(),
    };
    for record in &recovered.records {
        let op: Op = kv_engine::codec::decode(&record.payload).context("decoding a log record")?;
        state.execute(&op);
    }
    out!(
        "recovered {} keys ({} bytes) from {} in {:?}: snapshot at index {}, {} log records replayed",
        state.len(),
        state.live_bytes(),
        dir.display(),
        started.elapsed(),
        recovered.snapshot.as_ref().map_or(0, |s| s.index),
        recovered.records.len()
    );

    let commit = Arc::new(GroupCommit::start(store, GroupOptions::default()));
    let started = Instant::now();
    let per_writer = ops.div_ceil(writers);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let commit = commit.clone();
            std::thread::spawn(move || -> Result<Vec<Op>> {
                let mut applied = Vec::new();
                for seq in 1..=per_writer {
                    let key: bytes::Bytes = format!("key-{:04}", (w * per_writer + seq) % 1000)
                        .into_bytes()
                        .into();
                    let op = if seq % 4 == 0 {
                        Op::Append {
                            key,
                            value: format!(",{w}.{seq}").into_bytes().into(),
                        }
                    } else {
                        Op::Put {
                            key,
                            value: format!("v{w}.{seq}").into_bytes().into(),
                        }
                    };
                    commit.append_durable(RECORD_OP, kv_engine::codec::encode(&op)?)?;
                    applied.push(op);
                }
                Ok(applied)
            })
        })
        .collect();
    let mut durable = Vec::new();
    for handle in handles {
        durable.extend(handle.join().expect("writer thread")?);
    }
    let elapsed = started.elapsed();
    for op in &durable {
        state.execute(op);
    }
    out!(
        "{} durable writes from {writers} writers in {elapsed:?}: {:.0} writes/s, each fsynced before it was acknowledged",
        durable.len(),
        durable.len() as f64 / elapsed.as_secs_f64()
    );

    let snapshot = kv_engine::codec::encode(&state.image_bytes())?;
    let (tx, rx) = std::sync::mpsc::channel();
    commit.snapshot(Arc::new(snapshot), Box::new(move |r| drop(tx.send(r))))?;
    let index = rx.recv()??;
    let stats = commit.stats();
    out!(
        "snapshot at index {index}: {} keys, {} bytes of live data; on disk now: {} bytes of snapshot, {} bytes of log",
        state.len(),
        state.live_bytes(),
        stats.snapshot_bytes,
        stats.wal_bytes
    );
    out!(
        "run again to recover this state: kv demo --dir {}",
        dir.display()
    );
    Ok(())
}

/// Rebuilds the state from a snapshot: its image pieces, in order.
fn restore(bytes: &[u8]) -> Result<KvState> {
    let pieces: Vec<Vec<u8>> = kv_engine::codec::decode(bytes)?;
    let mut builder = KvImageBuilder::new();
    for piece in &pieces {
        builder.add(piece)?;
    }
    Ok(builder.finish()?)
}
