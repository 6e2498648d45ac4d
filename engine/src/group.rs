//! Group commit: many concurrent writers share one write and one fdatasync.
//!
//! A [`GroupCommit`] owns a [`Store`] on a dedicated writer thread. Callers submit records
//! with a completion callback (or block in [`GroupCommit::append_durable`]). The writer
//! takes the first queued command, then everything else already queued (up to
//! [`GroupOptions::batch_bytes_max`]), appends it all, syncs once, and only then runs each
//! callback with the index of that caller's last record. While one fsync is in flight new
//! submissions queue up, so under load each fsync carries the records of every waiting
//! writer — the batch size adapts to the disk's latency with no timer.
//!
//! Async drivers never block their task: the callback can complete a future (e.g. send on
//! a oneshot channel). The queue is bounded ([`GroupOptions::queue_commands_max`]): when the
//! disk falls behind, `submit` blocks its caller, which is the backpressure a bounded
//! system needs.
//!
//! One refinement: when a batch completes, its writers come back one by one. Taking only
//! the first of them into the next fsync would make batches alternate between tiny and
//! large, halving throughput. So when fewer commands are queued than the previous batch
//! carried, the writer lingers — in steps of a few microseconds, at most
//! [`GroupOptions::linger_max`], far below one fsync — for the rest. A lone writer never
//! waits. This wait is the only place the engine reads the clock.
//!
//! Snapshots do not stop the log. The writer closes the log at the snapshot's index (a
//! quick fsync and rotation), hands the file to a second thread, `kv-snapshot`, which
//! streams it from its [`SnapshotSource`], and goes on appending; when the file is durable,
//! the writer installs it (deletes what it supersedes) and runs its completion. At most one
//! snapshot is written at a time; a snapshot submitted while another is being written
//! waits, and a newer one replaces it (its completion then runs when the newer one is
//! installed: a later snapshot covers everything an earlier one would have).
//!
//! One writer can serve many streams: a [`crate::shared::SharedStore`] is one log holding
//! the records of several replicas, each a [`Stream`] handle with its own snapshots, and
//! one fsync then makes every stream's records durable. A [`Store`] is a log with one
//! stream. Either is a [`Log`].
//!
//! Failure model: if a sync or a snapshot write fails, every command in the batch and every
//! later one is completed with [`Error::Poisoned`]; the store is never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::histogram::{Histogram, HistogramSnapshot};
use crate::snapshot::SnapshotSource;
use crate::store::{SnapshotJob, Store, StoreStats};

/// What the writer drives: a log of one or more streams, each numbering its records 1, 2,
/// 3, ... and keeping its own snapshots.
pub trait Log: Send + 'static {
    /// How many streams there are.
    fn streams(&self) -> usize;
    /// Buffers a record of `stream`; returns its index in the stream.
    fn append(&mut self, stream: usize, kind: u8, payload: &[u8]) -> Result<u64>;
    /// Makes every buffered record of every stream durable.
    fn sync(&mut self) -> Result<()>;
    /// The index of the last record of `stream` (0 if none).
    fn last_index(&self, stream: usize) -> u64;
    /// See [`Store::begin_snapshot`].
    fn begin_snapshot(&mut self, stream: usize, index: u64) -> Result<SnapshotJob>;
    /// See [`Store::finish_snapshot`].
    fn finish_snapshot(&mut self, stream: usize, index: u64, written: Result<u64>) -> Result<()>;
    /// Sizes and positions of `stream`.
    fn stats(&self, stream: usize) -> StoreStats;
}

impl Log for Store {
    fn streams(&self) -> usize {
        1
    }

    fn append(&mut self, _stream: usize, kind: u8, payload: &[u8]) -> Result<u64> {
        Store::append(self, kind, payload)
    }

    fn sync(&mut self) -> Result<()> {
        Store::sync(self).map(|_| ())
    }

    fn last_index(&self, _stream: usize) -> u64 {
        self.next_index() - 1
    }

    fn begin_snapshot(&mut self, _stream: usize, index: u64) -> Result<SnapshotJob> {
        Store::begin_snapshot(self, index)
    }

    fn finish_snapshot(&mut self, _stream: usize, index: u64, written: Result<u64>) -> Result<()> {
        Store::finish_snapshot(self, index, written)
    }

    fn stats(&self, _stream: usize) -> StoreStats {
        Store::stats(self)
    }
}

/// Called once a command is durable (with the index of its last record) or has failed.
pub type Completion = Box<dyn FnOnce(Result<u64>) + Send>;

/// Tunables of a [`GroupCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    /// Commands that may wait in the queue before `submit` blocks.
    pub queue_commands_max: usize,
    /// A batch stops taking more commands once it holds this many payload bytes.
    pub batch_bytes_max: usize,
    /// Longest a batch waits for writers the previous batch completed to come back (only
    /// when fewer have come back than that batch carried). Zero disables lingering.
    pub linger_max: Duration,
}

/// Steps in which the linger is taken, so a batch stops waiting soon after the last
/// expected writer is back.
const LINGER_STEP: Duration = Duration::from_micros(20);
/// How often an idle writer looks for a finished snapshot while one is being written.
const SNAPSHOT_POLL: Duration = Duration::from_millis(1);

/// What the writer has done, for status reports and benchmarks.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    appends: AtomicU64,
    /// How long each batch's fsync took (microseconds).
    fsync_micros: Histogram,
    /// Append commands per fsynced batch.
    batch_appends: Histogram,
    /// Each stream's stats as of the writer's last batch or snapshot, so readers never
    /// wait for the writer (which may be in the middle of an fsync).
    streams: std::sync::Mutex<Vec<StoreStats>>,
}

impl Counters {
    fn publish(&self, log: &dyn Log) {
        let mut streams = self.streams.lock().expect("stats lock");
        streams.clear();
        streams.extend((0..log.streams()).map(|stream| log.stats(stream)));
    }
}

/// Counts of fsynced batches and the append commands they carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
    /// Batches made durable (one fsync each).
    pub batches: u64,
    /// Append commands those batches carried.
    pub appends: u64,
    /// How long each fsync took, in microseconds.
    pub fsync_micros: HistogramSnapshot,
    /// Append commands per fsynced batch.
    pub batch_appends: HistogramSnapshot,
}

impl Default for GroupOptions {
    fn default() -> GroupOptions {
        GroupOptions {
            queue_commands_max: 4096,
            batch_bytes_max: 8 << 20,
            linger_max: Duration::from_micros(100),
        }
    }
}

enum Command {
    Append {
        stream: usize,
        records: Vec<(u8, Vec<u8>)>,
        done: Completion,
    },
    /// A snapshot of the stream's state after every record submitted before it.
    Snapshot {
        stream: usize,
        source: Arc<dyn SnapshotSource>,
        done: Completion,
    },
    /// Commands made together ([`Batch`]), taken into one batch in order.
    Many(Vec<Command>),
}

/// Commands for one or more streams of one writer, handed to it at once
/// ([`Stream::send_batch`]) so that it takes them all into the same batch: one fsync then
/// makes every append in it durable, whichever streams they belong to. A node whose
/// replicas each submitted on their own had the writer start an fsync for the first
/// replica's records while the next replica's were still being made, so it synced about
/// twice as often per write with 3 groups as with 1.
#[derive(Default)]
pub struct Batch {
    commands: Vec<Command>,
    /// The writer whose streams made the commands (a batch is for one writer).
    writer: Option<Arc<Counters>>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// True if nothing was added.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn push(&mut self, stream: &Stream, command: Command) {
        let writer = self.writer.get_or_insert_with(|| stream.counters.clone());
        assert!(
            Arc::ptr_eq(writer, &stream.counters),
            "a batch holds commands for one writer's streams"
        );
        self.commands.push(command);
    }
}

/// A snapshot file for the snapshot thread to write.
struct Job {
    stream: usize,
    job: SnapshotJob,
    source: Arc<dyn SnapshotSource>,
}

/// One stream's snapshots, as the writer sees them.
#[derive(Default)]
struct Slot {
    /// Completions of the snapshot being written.
    busy: Option<Vec<Completion>>,
    /// The snapshot to write next, and every completion it answers for.
    pending: Option<(Job, Vec<Completion>)>,
}

/// The writer's side of the snapshot thread, which writes every stream's snapshots, one
/// at a time.
struct Snapshots {
    jobs: Option<Sender<Job>>,
    results: Receiver<(usize, u64, Result<u64>)>,
    thread: Option<JoinHandle<()>>,
    slots: Vec<Slot>,
    /// Snapshots sent to the thread and not yet installed.
    busy: usize,
}

impl Snapshots {
    fn start(streams: usize) -> Snapshots {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kv-snapshot".into())
            .spawn(move || {
                for Job {
                    stream,
                    job,
                    source,
                } in rx
                {
                    let written = job.write(&*source);
                    drop(source);
                    if tx.send((stream, job.index(), written)).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn snapshot thread");
        Snapshots {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
            slots: (0..streams).map(|_| Slot::default()).collect(),
            busy: 0,
        }
    }

    /// Queues a snapshot: written now if none of its stream is, else after the current one
    /// (replacing any that was waiting).
    fn submit(&mut self, job: Job, done: Completion) {
        let slot = &mut self.slots[job.stream];
        if slot.busy.is_none() {
            slot.busy = Some(vec![done]);
            self.send(job);
            return;
        }
        let mut completions = match slot.pending.take() {
            Some((_, earlier)) => earlier,
            None => Vec::new(),
        };
        completions.push(done);
        slot.pending = Some((job, completions));
    }

    fn send(&mut self, job: Job) {
        let stream = job.stream;
        let jobs = self
            .jobs
            .as_ref()
            .expect("snapshot thread runs until the writer ends");
        if jobs.send(job).is_err() {
            // The thread is gone only if it panicked: fail the snapshot rather than hang.
            for done in self.slots[stream].busy.take().unwrap_or_default() {
                done(Err(Error::Closed));
            }
            return;
        }
        self.busy += 1;
    }

    /// Installs a finished snapshot (if `block`, waits for one being written); returns
    /// whether one was installed.
    fn collect(&mut self, log: &mut dyn Log, counters: &Counters, block: bool) -> bool {
        if self.busy == 0 {
            return false;
        }
        let result = if block {
            self.results.recv().map_err(|_| ())
        } else {
            self.results.try_recv().map_err(|_| ())
        };
        let Ok((stream, index, written)) = result else {
            return false;
        };
        self.busy -= 1;
        let installed = log.finish_snapshot(stream, index, written).map(|()| index);
        counters.publish(log);
        for done in self.slots[stream].busy.take().unwrap_or_default() {
            done(match &installed {
                Ok(index) => Ok(*index),
                // Skipped for want of room: the store goes on, and says so to each waiter.
                Err(Error::SnapshotSkipped { index, source }) => Err(Error::SnapshotSkipped {
                    index: *index,
                    source: Box::new(Error::Invalid(source.to_string())),
                }),
                Err(e) => Err(Error::Poisoned(e.to_string())),
            });
        }
        if let Some((job, completions)) = self.slots[stream].pending.take() {
            self.slots[stream].busy = Some(completions);
            self.send(job);
        }
        true
    }

    fn stop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Queues appends to one stream of a [`GroupCommit`] without owning it (see
/// [`Stream::submitter`]).
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<Command>,
    stream: usize,
}

impl Submitter {
    /// Queues records; `done` runs on the writer thread once they are durable.
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>, done: Completion) -> Result<()> {
        self.tx
            .send(Command::Append {
                stream: self.stream,
                records,
                done,
            })
            .map_err(|_| Error::Closed)
    }
}

/// One stream of a [`GroupCommit`]: what a replica persists through. Handles are cheap to
/// clone; the writer runs until its `GroupCommit` and every handle are gone.
#[derive(Clone)]
pub struct Stream {
    tx: SyncSender<Command>,
    stream: usize,
    counters: Arc<Counters>,
}

impl Stream {
    fn send(&self, command: Command) -> Result<()> {
        self.tx.send(command).map_err(|_| Error::Closed)
    }

    /// Queues records; `done` runs on the writer thread once they are durable.
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>, done: Completion) -> Result<()> {
        self.send(Command::Append {
            stream: self.stream,
            records,
            done,
        })
    }

    /// Adds records of this stream to `batch`; `done` runs on the writer thread once they
    /// are durable (after [`Stream::send_batch`]).
    pub fn append_to(&self, batch: &mut Batch, records: Vec<(u8, Vec<u8>)>, done: Completion) {
        let command = Command::Append {
            stream: self.stream,
            records,
            done,
        };
        batch.push(self, command);
    }

    /// Adds a snapshot of this stream to `batch`: it covers every record of this stream
    /// submitted before it, the batch's earlier ones included (see [`Stream::snapshot`]).
    pub fn snapshot_to(
        &self,
        batch: &mut Batch,
        source: Arc<dyn SnapshotSource>,
        done: Completion,
    ) {
        let command = Command::Snapshot {
            stream: self.stream,
            source,
            done,
        };
        batch.push(self, command);
    }

    /// Hands `batch` to the writer in one piece. Its commands must come from streams of
    /// this stream's writer.
    pub fn send_batch(&self, mut batch: Batch) -> Result<()> {
        if let Some(writer) = &batch.writer {
            assert!(
                Arc::ptr_eq(writer, &self.counters),
                "a batch goes to the writer whose streams made it"
            );
        }
        match batch.commands.len() {
            0 => Ok(()),
            1 => self.send(batch.commands.pop().expect("one command")),
            _ => self.send(Command::Many(batch.commands)),
        }
    }

    /// A handle that can queue appends from anywhere — including from inside a
    /// completion, which runs on the writer thread.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            tx: self.tx.clone(),
            stream: self.stream,
        }
    }

    /// Queues a snapshot covering every record of this stream submitted before it; `done`
    /// runs once it is durable and the log behind it compacted. The payload is streamed
    /// from `source` on the snapshot thread while appends go on.
    pub fn snapshot(&self, source: Arc<dyn SnapshotSource>, done: Completion) -> Result<()> {
        self.send(Command::Snapshot {
            stream: self.stream,
            source,
            done,
        })
    }

    /// Appends one record and blocks until it is durable; returns its index.
    pub fn append_durable(&self, kind: u8, payload: Vec<u8>) -> Result<u64> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            vec![(kind, payload)],
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// The stream's sizes and positions, as of the writer's last completed batch or
    /// snapshot. Never waits for the writer.
    pub fn stats(&self) -> StoreStats {
        self.counters.streams.lock().expect("stats lock")[self.stream]
    }

    /// How many batches (fsyncs) and append commands the writer has completed, over every
    /// stream it serves.
    pub fn group_stats(&self) -> GroupStats {
        GroupStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
            fsync_micros: self.counters.fsync_micros.snapshot(),
            batch_appends: self.counters.batch_appends.snapshot(),
        }
    }
}

/// A log driven by a writer thread that batches fsyncs across callers (and streams).
pub struct GroupCommit<L: Log = Store> {
    tx: Option<SyncSender<Command>>,
    thread: Option<JoinHandle<L>>,
    counters: Arc<Counters>,
}

impl<L: Log> GroupCommit<L> {
    /// Starts the writer thread, which owns `log` until [`GroupCommit::shutdown`].
    pub fn start(log: L, options: GroupOptions) -> GroupCommit<L> {
        let (tx, rx) = mpsc::sync_channel(options.queue_commands_max.max(1));
        let counters = Arc::new(Counters::default());
        counters.publish(&log);
        let writer_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("kv-wal-writer".into())
            .spawn(move || writer(log, rx, options, writer_counters))
            .expect("spawn WAL writer thread");
        GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
            counters,
        }
    }

    /// A handle on stream `stream` (0 for a [`Store`]).
    pub fn stream(&self, stream: usize) -> Stream {
        assert!(
            stream < self.counters.streams.lock().expect("stats lock").len(),
            "no stream {stream}"
        );
        Stream {
            tx: self.tx.clone().expect("sender lives until shutdown"),
            stream,
            counters: self.counters.clone(),
        }
    }

    /// Queues records of stream 0; see [`Stream::submit`].
    pub fn submit(&self, records: Vec<(u8, Vec<u8>)>, done: Completion) -> Result<()> {
        self.stream(0).submit(records, done)
    }

    /// See [`Stream::submitter`] (stream 0).
    pub fn submitter(&self) -> Submitter {
        self.stream(0).submitter()
    }

    /// See [`Stream::snapshot`] (stream 0).
    pub fn snapshot(&self, source: Arc<dyn SnapshotSource>, done: Completion) -> Result<()> {
        self.stream(0).snapshot(source, done)
    }

    /// See [`Stream::append_durable`] (stream 0).
    pub fn append_durable(&self, kind: u8, payload: Vec<u8>) -> Result<u64> {
        self.stream(0).append_durable(kind, payload)
    }

    /// See [`Stream::stats`] (stream 0).
    pub fn stats(&self) -> StoreStats {
        self.stream(0).stats()
    }

    /// See [`Stream::group_stats`].
    pub fn group_stats(&self) -> GroupStats {
        self.stream(0).group_stats()
    }

    /// Finishes every queued command, stops the writer and returns the log. Waits for
    /// every [`Stream`] handle to be dropped.
    pub fn shutdown(mut self) -> L {
        drop(self.tx.take());
        self.thread
            .take()
            .expect("thread lives until shutdown")
            .join()
            .expect("WAL writer thread panicked")
    }
}

impl<L: Log> Drop for GroupCommit<L> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Completions waiting for the next sync: (callback, index of its last record).
type Waiting = Vec<(Completion, u64)>;

fn writer<L: Log>(
    mut log: L,
    rx: Receiver<Command>,
    options: GroupOptions,
    counters: Arc<Counters>,
) -> L {
    let mut waiting: Waiting = Vec::new();
    let mut snapshots = Snapshots::start(log.streams());
    // How many appends the previous batch carried: the writers it completed are likely to
    // be back with their next record within a few microseconds.
    let mut previous_batch = 0usize;
    loop {
        snapshots.collect(&mut log, &counters, false);
        let first = if snapshots.busy > 0 {
            match rx.recv_timeout(SNAPSHOT_POLL) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // Nothing more will come: finish the snapshots under way, then stop.
                    while snapshots.collect(&mut log, &counters, true) {}
                    break;
                }
            }
        } else {
            match rx.recv() {
                Ok(command) => command,
                Err(_) => break,
            }
        };
        let mut batch_bytes = 0usize;
        let mut next = Some(first);
        let mut lingered = Duration::ZERO;
        while let Some(command) = next.take() {
            batch_bytes += handle(&mut log, command, &mut waiting, &counters, &mut snapshots);
            if batch_bytes >= options.batch_bytes_max {
                break;
            }
            next = rx.try_recv().ok();
            if next.is_none() && waiting.len() < previous_batch && lingered < options.linger_max {
                // Fewer writers are back than last time: wait a little for the rest rather
                // than spend a whole fsync on a fraction of them. Bounded well below the
                // cost of one fsync, and never taken by a lone writer.
                let wait = (options.linger_max - lingered).min(LINGER_STEP);
                let started = Instant::now();
                next = rx.recv_timeout(wait).ok();
                lingered += started.elapsed();
            }
        }
        previous_batch = waiting.len();
        if !waiting.is_empty() {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .appends
                .fetch_add(waiting.len() as u64, Ordering::Relaxed);
            counters.batch_appends.observe(waiting.len() as u64);
        }
        finish(&mut log, &mut waiting, &counters);
    }
    snapshots.stop();
    log
}

/// Applies one command; returns the payload bytes it added to the batch.
fn handle(
    log: &mut dyn Log,
    command: Command,
    waiting: &mut Waiting,
    counters: &Counters,
    snapshots: &mut Snapshots,
) -> usize {
    match command {
        Command::Append {
            stream,
            records,
            done,
        } => {
            let bytes = records.iter().map(|(_, p)| p.len()).sum();
            let mut last = Ok(0);
            for (kind, payload) in &records {
                last = log.append(stream, *kind, payload);
                if last.is_err() {
                    break;
                }
            }
            match last {
                Ok(index) => waiting.push((done, index)),
                Err(e) => done(Err(e)),
            }
            bytes
        }
        Command::Snapshot {
            stream,
            source,
            done,
        } => {
            // Everything before the snapshot must be durable (and acknowledged) first.
            finish(log, waiting, counters);
            let index = log.last_index(stream);
            match log.begin_snapshot(stream, index) {
                Ok(job) => snapshots.submit(
                    Job {
                        stream,
                        job,
                        source,
                    },
                    done,
                ),
                Err(e) => done(Err(e)),
            }
            counters.publish(log);
            0
        }
        Command::Many(commands) => commands
            .into_iter()
            .map(|command| handle(log, command, waiting, counters, snapshots))
            .sum(),
    }
}

/// Syncs and completes every waiting command.
fn finish(log: &mut dyn Log, waiting: &mut Waiting, counters: &Counters) {
    if waiting.is_empty() {
        return;
    }
    let started = Instant::now();
    let synced = log.sync();
    counters.fsync_micros.observe_duration(started.elapsed());
    counters.publish(log);
    match synced {
        Ok(()) => {
            for (done, index) in waiting.drain(..) {
                done(Ok(index));
            }
        }
        Err(e) => {
            let reason = e.to_string();
            for (done, _) in waiting.drain(..) {
                done(Err(Error::Poisoned(reason.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{SimFs, Torn};
    use crate::store::StoreOptions;
    use std::path::Path;
    use std::sync::Arc;

    fn start(fs: &SimFs) -> GroupCommit {
        let (store, _) = Store::open(
            Arc::new(fs.clone()),
            Path::new("/g"),
            StoreOptions::default(),
        )
        .unwrap();
        GroupCommit::start(store, GroupOptions::default())
    }

    #[test]
    fn concurrent_appenders_share_fsyncs_and_every_acknowledged_record_survives() {
        let fs = SimFs::new();
        let group = Arc::new(start(&fs));
        let syncs_before = fs.sync_count();
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let group = group.clone();
                std::thread::spawn(move || {
                    (0..200u32)
                        .map(|i| {
                            let payload = format!("{t}-{i}").into_bytes();
                            (group.append_durable(t, payload.clone()).unwrap(), payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let acked: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let syncs = fs.sync_count() - syncs_before;
        assert!(syncs <= 1600, "at most one fsync per record: {syncs}");
        fs.crash(Torn::None);
        let (_, rec) = Store::open(
            Arc::new(fs.clone()),
            Path::new("/g"),
            StoreOptions::default(),
        )
        .unwrap();
        assert_eq!(rec.records.len(), 1600);
        for (index, payload) in acked {
            assert_eq!(rec.records[index as usize - 1].payload, payload);
        }
    }

    #[test]
    fn snapshot_through_the_writer_compacts_the_log() {
        let fs = SimFs::new();
        let group = start(&fs);
        for i in 0..10u8 {
            group.append_durable(0, vec![i; 100]).unwrap();
        }
        let (tx, rx) = mpsc::channel();
        group
            .snapshot(
                Arc::new(b"state".to_vec()),
                Box::new(move |r| tx.send(r.map_err(|e| e.to_string())).unwrap()),
            )
            .unwrap();
        assert_eq!(rx.recv().unwrap(), Ok(10));
        let stats = group.stats();
        // What is left is the compacted segment kept as a spare: 10 records of 9 + 100.
        assert_eq!(stats.wal_bytes, 10 * 109);
        assert_eq!(stats.snapshot_index, 10);
        let store = group.shutdown();
        drop(store);
        let (_, rec) = Store::open(Arc::new(fs), Path::new("/g"), StoreOptions::default()).unwrap();
        assert_eq!(&*rec.snapshot.unwrap().data, b"state");
        assert!(rec.records.is_empty());
    }

    /// A snapshot source that waits for a go-ahead before writing.
    struct Gated {
        go: std::sync::Mutex<Receiver<()>>,
        data: Vec<u8>,
    }

    impl SnapshotSource for Gated {
        fn write_payload(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            self.go.lock().unwrap().recv().unwrap();
            out.write_all(&self.data)
        }
    }

    #[test]
    fn appends_go_on_while_a_snapshot_is_written_and_waiting_snapshots_coalesce() {
        let fs = SimFs::new();
        let group = start(&fs);
        group.append_durable(0, b"before".to_vec()).unwrap();
        let (go, gate) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let report =
            |tx: &mpsc::Sender<(u8, std::result::Result<u64, String>)>, n: u8| -> Completion {
                let tx = tx.clone();
                Box::new(move |r| tx.send((n, r.map_err(|e| e.to_string()))).unwrap())
            };
        let slow = Gated {
            go: std::sync::Mutex::new(gate),
            data: b"first".to_vec(),
        };
        group.snapshot(Arc::new(slow), report(&tx, 1)).unwrap();
        // The log goes on while the first snapshot is held up.
        for i in 0..20u8 {
            group.append_durable(0, vec![i; 10]).unwrap();
        }
        group
            .snapshot(Arc::new(b"second".to_vec()), report(&tx, 2))
            .unwrap();
        group.append_durable(0, b"between".to_vec()).unwrap();
        group
            .snapshot(Arc::new(b"third".to_vec()), report(&tx, 3))
            .unwrap();
        // Commands run in order: once this append is durable, the writer has taken all three
        // snapshots in (and still holds the first at the gate).
        group.append_durable(0, b"after".to_vec()).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "nothing completes before the first file is written"
        );
        go.send(()).unwrap();
        let mut done: Vec<(u8, std::result::Result<u64, String>)> =
            (0..3).map(|_| rx.recv().unwrap()).collect();
        done.sort();
        // The second was replaced by the third, which covers it: both report its index.
        assert_eq!(done, vec![(1, Ok(1)), (2, Ok(22)), (3, Ok(22))]);
        drop(group.shutdown());
        let (_, rec) = Store::open(Arc::new(fs), Path::new("/g"), StoreOptions::default()).unwrap();
        let snapshot = rec.snapshot.unwrap();
        assert_eq!((snapshot.index, &*snapshot.data), (22, &b"third"[..]));
        assert_eq!(rec.records.len(), 1, "the record after the last snapshot");
    }

    #[test]
    fn a_snapshot_without_room_is_skipped_and_the_log_goes_on() {
        let fs = SimFs::new();
        let group = start(&fs);
        for i in 0..10u8 {
            group.append_durable(0, vec![i; 100]).unwrap();
        }
        fs.set_capacity(Some(fs.total_bytes() + 4096));
        let (tx, rx) = mpsc::channel();
        group
            .snapshot(
                Arc::new(vec![7u8; 1 << 20]),
                Box::new(move |r| tx.send(r).unwrap()),
            )
            .unwrap();
        assert!(matches!(
            rx.recv().unwrap(),
            Err(Error::SnapshotSkipped { index: 10, .. })
        ));
        // Not poisoned: the log goes on.
        assert_eq!(group.append_durable(0, b"more".to_vec()).unwrap(), 11);
        assert_eq!(group.stats().snapshot_index, 0);
    }

    fn chain(submitter: Submitter, left: u32, finished: mpsc::Sender<()>) {
        if left == 0 {
            finished.send(()).unwrap();
            return;
        }
        let next = submitter.clone();
        submitter
            .submit(
                vec![(0, left.to_le_bytes().to_vec())],
                Box::new(move |r| {
                    r.unwrap();
                    chain(next, left - 1, finished);
                }),
            )
            .unwrap();
    }

    #[test]
    fn completions_can_submit_more_and_shutdown_still_terminates() {
        let fs = SimFs::new();
        let group = start(&fs);
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            chain(group.submitter(), 100, tx.clone());
        }
        for _ in 0..3 {
            rx.recv().unwrap();
        }
        let stats = group.group_stats();
        assert!(stats.batches < 300, "three chains share fsyncs: {stats:?}");
        drop(group.shutdown());
        let (_, rec) = Store::open(Arc::new(fs), Path::new("/g"), StoreOptions::default()).unwrap();
        assert_eq!(rec.records.len(), 300);
    }

    #[test]
    fn failed_fsync_fails_every_waiter_and_all_later_commands() {
        let fs = SimFs::new();
        let group = start(&fs);
        group.append_durable(0, b"ok".to_vec()).unwrap();
        fs.fail_next_syncs(1);
        assert!(group.append_durable(0, b"x".to_vec()).is_err());
        assert!(matches!(
            group.append_durable(0, b"y".to_vec()),
            Err(Error::Poisoned(_))
        ));
    }
}
