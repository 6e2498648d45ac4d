//! Engine benchmarks on the real disk: `cargo bench -p kv-engine`.
//!
//! - `disk_limits`: what the disk itself can do — 4 KiB append + fdatasync per second,
//!   1 MiB append + fdatasync (durable bandwidth), and sustained sequential write bandwidth
//!   (1 GiB in 1 MiB writes, one fsync at the end) — measured with plain `std::fs` so the
//!   engine's figures can be stated as a share of them.
//! - `durable_append`: closed-loop appenders (1, 8, 64) × record size (100 B, 1 KiB,
//!   16 KiB) through group commit; each append returns only once durable. Reported as
//!   records/s; MB/s = records/s × size.
//! - `durable_append_callbacks`: the same closed loops driven by completion callbacks (each
//!   completion submits that appender's next record), as the server's driver uses the
//!   engine; no thread per appender.
//! - `durable_append_steady`: the callback loop with 64 appenders on a log in its steady
//!   state — a small snapshot every 32 MiB compacts the log behind it, as a replica's
//!   snapshots do — so new segments reuse compacted files (`WalOptions::recycle`) and the
//!   disk overwrites blocks instead of allocating them.
//! - `wal_replay`: reopening a 64 MiB log (page cache warm): scan, CRC and copy.
//! - `snapshot`: writing (with fsync, rename, dir fsync) and loading (mmap + CRC) 64 MiB.
//!
//! Files go under `$KV_BENCH_DIR` (default: the system temp dir), which must be on the disk
//! being measured, not tmpfs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kv_engine::fs::RealFs;
use kv_engine::group::{GroupCommit, GroupOptions, Submitter};
use kv_engine::snapshot;
use kv_engine::store::{Store, StoreOptions};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("KV_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn disk_limits(c: &mut Criterion) {
    let mut group = c.benchmark_group("disk_limits");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    let dir = bench_dir();
    let mut file = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let block = vec![7u8; 4096];
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_4k_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });

    let mib = vec![6u8; 1 << 20];
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("append_1m_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&mib).unwrap();
            file.sync_data().unwrap();
        })
    });

    // 1 GiB per iteration: this disk absorbs the first few hundred MiB of a burst at ~1 GiB/s
    // (a cache beneath the file system) and then sustains about a third of that, so a
    // smaller write would measure the cache, not the disk.
    let chunk = vec![9u8; 1 << 20];
    let total: u64 = 1 << 30;
    group.throughput(Throughput::Bytes(total));
    group.bench_function("sequential_write_1g", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let path = dir.path().join("seq");
                let mut f = std::fs::File::create(&path).unwrap();
                let start = Instant::now();
                for _ in 0..(total >> 20) {
                    f.write_all(&chunk).unwrap();
                }
                f.sync_data().unwrap();
                elapsed += start.elapsed();
                drop(f);
                std::fs::remove_file(&path).unwrap();
            }
            elapsed
        })
    });
    group.finish();
}

/// Runs `iters` closed-loop appends of `size` bytes from `appenders` appenders; returns the
/// time they took.
type ClosedLoop = fn(&Arc<GroupCommit>, usize, usize, u64) -> Duration;

/// Benchmarks a closed loop over every (appenders, record size) pair, each on a fresh store,
/// and prints how many records each fsync carried.
fn appender_grid(c: &mut Criterion, name: &str, run: ClosedLoop) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for &appenders in &[1usize, 8, 64] {
        for &size in &[100usize, 1024, 16 << 10] {
            let dir = bench_dir();
            let (store, _) =
                Store::open(Arc::new(RealFs), dir.path(), StoreOptions::default()).unwrap();
            let commit = Arc::new(GroupCommit::start(store, GroupOptions::default()));
            group.throughput(Throughput::Elements(1));
            let id = BenchmarkId::new(format!("{appenders}_appenders"), format!("{size}B"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| run(&commit, appenders, size, iters))
            });
            let stats = commit.group_stats();
            if stats.batches > 0 {
                eprintln!(
                    "{name}/{appenders}_appenders/{size}B: {:.1} records per fsync ({} fsyncs)",
                    stats.appends as f64 / stats.batches as f64,
                    stats.batches
                );
            }
        }
    }
    group.finish();
}

/// One OS thread per appender, each blocking in `append_durable`.
fn threads_loop(commit: &Arc<GroupCommit>, appenders: usize, size: usize, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(appenders as u64);
    let start = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let commit = commit.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    commit.append_durable(1, vec![5u8; size]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Normalise to `iters` records.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_thread * appenders as u64) as f64)
}

/// One logical appender of the callback-driven closed loop: when its record is durable, the
/// completion (on the writer's side) submits its next one, until `remaining` runs out.
fn submit_next(
    commit: &Submitter,
    size: usize,
    remaining: Arc<std::sync::atomic::AtomicI64>,
    done: std::sync::mpsc::Sender<()>,
) {
    use std::sync::atomic::Ordering;
    if remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
        let _ = done.send(());
        return;
    }
    let next = commit.clone();
    commit
        .submit(
            vec![(1, vec![5u8; size])],
            Box::new(move |result| {
                result.expect("durable append");
                submit_next(&next, size, remaining, done);
            }),
        )
        .expect("submit");
}

/// Appenders as the server's driver is one: callers that never block a thread, each
/// submitting its next record from the completion of the previous one. This measures group
/// commit itself; the thread-per-appender loop also measures the scheduler waking 64 OS
/// threads on however many cores there are.
fn callbacks_loop(
    commit: &Arc<GroupCommit>,
    appenders: usize,
    size: usize,
    iters: u64,
) -> Duration {
    let remaining = Arc::new(std::sync::atomic::AtomicI64::new(iters as i64));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let submitter = commit.submitter();
    for _ in 0..appenders {
        submit_next(&submitter, size, remaining.clone(), done_tx.clone());
    }
    for _ in 0..appenders {
        done_rx.recv().expect("appender finished");
    }
    start.elapsed()
}

/// Snapshots every this many bytes of appended records in the steady-state bench.
const STEADY_SNAPSHOT_BYTES: u64 = 32 << 20;

/// The callback loop, plus a snapshot whenever another `STEADY_SNAPSHOT_BYTES` of records
/// are durable, so compaction keeps recycling segment files.
fn durable_append_steady(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append_steady");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let appenders = 64;
    for &size in &[100usize, 16 << 10] {
        let dir = bench_dir();
        let (store, _) =
            Store::open(Arc::new(RealFs), dir.path(), StoreOptions::default()).unwrap();
        let commit = Arc::new(GroupCommit::start(store, GroupOptions::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let snapshotter = {
            let commit = commit.clone();
            let stop = stop.clone();
            let every = STEADY_SNAPSHOT_BYTES / size as u64;
            std::thread::spawn(move || {
                let mut last = 0;
                let mut taken = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let durable = commit.stats().durable_index;
                    if durable >= last + every {
                        last = durable;
                        let (tx, rx) = std::sync::mpsc::channel();
                        let done = Box::new(move |r: kv_engine::Result<u64>| {
                            let _ = tx.send(r.is_ok());
                        });
                        commit
                            .snapshot(std::sync::Arc::new(b"state".to_vec()), done)
                            .unwrap();
                        assert!(rx.recv().unwrap(), "snapshot failed");
                        taken += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                taken
            })
        };
        group.throughput(Throughput::Elements(1));
        let id = BenchmarkId::new(format!("{appenders}_appenders"), format!("{size}B"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| callbacks_loop(&commit, appenders, size, iters))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let taken = snapshotter.join().unwrap();
        let stats = commit.group_stats();
        eprintln!(
            "durable_append_steady/{appenders}_appenders/{size}B: {:.1} records per fsync, {taken} snapshots",
            stats.appends as f64 / stats.batches.max(1) as f64,
        );
    }
    group.finish();
}

fn durable_append(c: &mut Criterion) {
    appender_grid(c, "durable_append", threads_loop);
}

fn durable_append_callbacks(c: &mut Criterion) {
    appender_grid(c, "durable_append_callbacks", callbacks_loop);
}

fn wal_replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_replay");
    group.sample_size(10);
    let dir = bench_dir();
    let total: usize = 64 << 20;
    let record = vec![3u8; 1024];
    {
        let (mut store, _) =
            Store::open(Arc::new(RealFs), dir.path(), StoreOptions::default()).unwrap();
        for _ in 0..total / 1024 {
            store.append(1, &record).unwrap();
        }
        store.sync().unwrap();
    }
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("open_64m_of_1k_records", |b| {
        b.iter(|| {
            let (_, recovered) =
                Store::open(Arc::new(RealFs), dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(recovered.records.len(), total / 1024);
        })
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    let dir = bench_dir();
    let payload: Vec<u8> = (0..64u32 << 20).map(|i| (i * 7) as u8).collect();
    group.throughput(Throughput::Bytes(payload.len() as u64));
    let mut index = 0;
    group.bench_function("write_64m", |b| {
        b.iter(|| {
            index += 1;
            snapshot::write(&RealFs, dir.path(), index, &payload).unwrap();
            if index > 1 {
                std::fs::remove_file(snapshot::path_of(dir.path(), index - 1)).unwrap();
            }
        })
    });
    group.bench_function("load_64m", |b| {
        b.iter(|| {
            let snap = snapshot::read(&RealFs, &snapshot::path_of(dir.path(), index)).unwrap();
            assert_eq!(snap.data.len(), payload.len());
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    disk_limits,
    durable_append,
    durable_append_callbacks,
    durable_append_steady,
    wal_replay,
    snapshots
);
criterion_main!(benches);
