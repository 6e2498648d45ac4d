//! The production driver: runs one protocol core on its own tokio task and applies its
//! effects in the crate-wide order — durable, then send, then reply.
//!
//! # Pipelining without breaking the order
//! The core never waits for the disk. Each step's effects go through the same sans-IO
//! [`Pipeline`] the simulator uses (see `kv_replication::node`): its writes go to the
//! engine's group-commit writer (a separate thread; the core task never fsyncs), and its
//! sends and client replies wait in the pipeline until every write they depend on is
//! durable — early ones (a Paxos leader's accepts and decisions, forwarded requests, client
//! replies) wait only for earlier steps' writes. So the core keeps handling messages while
//! fsyncs are in flight, group commit batches many steps into one fsync, and nothing leaves
//! the node before the state it depends on is on disk.
//!
//! A step is one burst: every input already queued when the task wakes (up to
//! `BURST_INPUTS_MAX`), handled back to back between [`Node::hold`] and
//! [`Node::release`], so the burst's requests share one instance and one fsync.
//!
//! # Failure model
//! A snapshot the store skips for want of room is counted, logged, and the node goes on:
//! snapshots only compact, so a nearly full disk costs compaction, never the node, and
//! starting needs no room for one. Any other failed write or fsync poisons the store (see
//! the engine); the node then stops: it cannot make further promises safely, and its disk
//! state is whatever the last successful sync left, from which a restart recovers. Before
//! it stops it answers every client request it holds, and for [`STORAGE_FAILED_LINGER`]
//! every new one, with [`ClientReply::StorageFailed`] — a RESP client reads `-MISCONF`, a
//! native client moves to another node — so no client is left with a connection closed
//! under it. Nothing it had not made durable is sent. Peer messages are best-effort: a
//! full per-peer queue drops messages (the protocols retransmit), so a slow or dead peer
//! cannot exhaust memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_engine::group::{GroupOptions, Stream};
use kv_engine::kv::Reply;
use kv_replication::effects::{Effects, Persist};
use kv_replication::kvgroup::Request;
use kv_replication::node::{Answer, Node, Pipeline};
use kv_replication::types::{NodeId, Time};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::wire::ClientReply;

/// Most inputs taken in one burst before the core's held-back work is released.
const BURST_INPUTS_MAX: usize = 256;
/// How long a node whose storage failed keeps answering clients with
/// [`ClientReply::StorageFailed`] before it stops.
pub const STORAGE_FAILED_LINGER: Duration = Duration::from_secs(2);

/// Tunables of the driver.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// How often the core is ticked.
    pub tick: Duration,
    /// Bound on queued inputs to the core task.
    pub inputs_max: usize,
    /// Group-commit tunables.
    pub group: GroupOptions,
    /// Where the driver publishes [`Node::leader`] after every step.
    pub leader: LeaderHint,
}

/// The core's latest leader hint, shared with the connections that answer clients.
#[derive(Debug, Clone)]
pub struct LeaderHint(Arc<AtomicU32>);

impl LeaderHint {
    const NONE: u32 = u32::MAX;

    /// The node believed to lead, if any.
    pub fn get(&self) -> Option<u32> {
        let v = self.0.load(Ordering::Relaxed);
        (v != Self::NONE).then_some(v)
    }

    fn set(&self, leader: Option<NodeId>) {
        self.0
            .store(leader.map_or(Self::NONE, |n| n.0), Ordering::Relaxed);
    }
}

impl Default for LeaderHint {
    fn default() -> LeaderHint {
        LeaderHint(Arc::new(AtomicU32::new(Self::NONE)))
    }
}

impl Default for DriverOptions {
    fn default() -> DriverOptions {
        DriverOptions {
            tick: Duration::from_millis(10),
            inputs_max: 8192,
            group: GroupOptions::default(),
            leader: LeaderHint::default(),
        }
    }
}

/// An input to the core task: a peer's message of type `M`, or a client's request of
/// type `Q` answered with an `R` (the native protocol's by default).
pub enum Input<M, Q = Request, R = Reply> {
    /// A peer's message.
    Peer {
        /// Sender.
        from: NodeId,
        /// The message.
        msg: M,
    },
    /// A client request and where to send the reply.
    Client {
        /// The request.
        request: Q,
        /// Completed once the reply is durable and applied.
        reply: oneshot::Sender<ClientReply<R>>,
    },
    /// Status query.
    Status(oneshot::Sender<Status>),
}

/// Asks the core fed by `inputs` for its status; `None` once it has stopped.
pub async fn ask_status<M, Q, R>(inputs: &mpsc::Sender<Input<M, Q, R>>) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    inputs.send(Input::Status(tx)).await.ok()?;
    rx.await.ok()
}

/// A snapshot of the node's state for operators.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The core's own figures.
    pub core: Vec<(&'static str, String)>,
    /// Bytes of WAL on disk.
    pub wal_bytes: u64,
    /// Bytes of snapshots on disk.
    pub snapshot_bytes: u64,
    /// Index of the newest snapshot.
    pub snapshot_index: u64,
    /// Highest durable WAL index.
    pub durable_index: u64,
    /// Fsynced batches so far.
    pub fsyncs: u64,
    /// Persist steps those fsyncs carried.
    pub persisted_steps: u64,
    /// How long each fsync took, in microseconds.
    pub fsync_micros: kv_engine::histogram::HistogramSnapshot,
    /// Persist steps per fsync.
    pub batch_appends: kv_engine::histogram::HistogramSnapshot,
    /// Peer messages dropped because a peer's queue was full.
    pub dropped_messages: u64,
    /// Whether the core can serve.
    pub ready: bool,
    /// Snapshots skipped for want of room (see the failure model).
    pub snapshots_skipped: u64,
    /// Why the node stopped serving, if its storage failed.
    pub storage_failed: Option<String>,
}

impl Status {
    /// `name: value` lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.core {
            out.push_str(&format!("{name}: {value}\n"));
        }
        out.push_str(&format!(
            "ready: {}\nwal_bytes: {}\nsnapshot_bytes: {}\nsnapshot_index: {}\nsnapshots_skipped: {}\ndurable_index: {}\nfsyncs: {}\npersisted_steps: {}\ndropped_peer_messages: {}\n",
            self.ready,
            self.wal_bytes,
            self.snapshot_bytes,
            self.snapshot_index,
            self.snapshots_skipped,
            self.durable_index,
            self.fsyncs,
            self.persisted_steps,
            self.dropped_messages
        ));
        if let Some(reason) = &self.storage_failed {
            out.push_str(&format!("storage_failed: {reason}\n"));
        }
        out
    }
}

/// Where the core's outgoing peer messages go.
pub trait PeerSender<M>: Send + 'static {
    /// Queues `msg` for `to`; returns false if it had to be dropped.
    fn send(&self, to: NodeId, msg: M) -> bool;
}

/// A core the production driver serves: a [`Node`] whose messages travel the wire and
/// whose requests and replies cross tasks. Every such node is one.
pub trait Core:
    Node<
        Request = <Self as Core>::Asked,
        Reply = <Self as Core>::Answered,
        Msg = <Self as Core>::Wire,
        Event = <Self as Core>::Up,
    > + Send
    + 'static
{
    /// The node's messages, as they travel between nodes.
    type Wire: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// The node's events.
    type Up: Clone + Debug + Send + 'static;
    /// Its clients' requests.
    type Asked: Send + 'static;
    /// Its replies.
    type Answered: Send + 'static;
}

impl<C> Core for C
where
    C: Node + Send + 'static,
    C::Msg: Serialize + DeserializeOwned + Send + Sync + 'static,
    C::Event: Send + 'static,
    C::Request: Send + 'static,
    C::Reply: Send + 'static,
{
    type Wire = C::Msg;
    type Up = C::Event;
    type Asked = C::Request;
    type Answered = C::Reply;
}

/// The inputs of core `C`.
pub type CoreInput<C> = Input<<C as Node>::Msg, <C as Node>::Request, <C as Node>::Reply>;

/// Runs `core` until `shutdown` flips to true or the store fails, persisting through `log`
/// (its stream of a group-commit writer, which may serve other cores too). Returns the
/// reason it stopped with an error, if it did.
pub async fn run_core<C, P>(
    mut core: C,
    log: Stream,
    peers: P,
    mut inputs: mpsc::Receiver<CoreInput<C>>,
    mut shutdown: watch::Receiver<bool>,
    options: DriverOptions,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
) -> Result<(), String>
where
    C: Core,
    P: PeerSender<C::Msg>,
{
    let commit = log;
    let (durable_tx, mut durable_rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let reports = Reports {
        durable: durable_tx,
        snapshots_skipped: Arc::default(),
    };
    let epoch = boot_clock();
    let now = || Time(boot_clock().saturating_sub(epoch));
    let mut ticker = tokio::time::interval(options.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut out: Effects<C::Msg, C::Event> = Effects::new();
    // Tickets may complete out of order (a snapshot is written on its own thread while
    // later appends are synced): the pipeline releases in step order regardless.
    let mut pipeline: Pipeline<C::Msg, C::Event> = Pipeline::new();
    let mut next_tag = 0u64;
    let mut waiting: BTreeMap<u64, oneshot::Sender<ClientReply<C::Reply>>> = BTreeMap::new();
    let mut dropped = 0u64;
    let mut on_ready = on_ready;
    let mut ready_at: Option<u64> = None;
    // Why storage failed, once it has: the loop ends and the node stops.
    let mut failed: Option<String> = None;

    core.on_boot(now(), &mut out);
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            done = durable_rx.recv() => {
                match done {
                    Some(Ok(ticket)) => pipeline.durable(ticket),
                    Some(Err(reason)) => {
                        failed = Some(reason);
                        break;
                    }
                    None => {
                        failed = Some("the storage writer stopped".into());
                        break;
                    }
                }
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                // Take the whole burst that is already queued, holding back new batches
                // until it is in, so one instance (and one fsync) carries all of it.
                core.hold();
                let mut next = Some(input);
                let mut taken = 0;
                while let Some(input) = next.take() {
                    match input {
                        Input::Peer { from, msg } => core.on_message(now(), from, msg, &mut out),
                        Input::Client { request, reply } => {
                            next_tag += 1;
                            waiting.insert(next_tag, reply);
                            core.on_request(now(), next_tag, request, &mut out);
                        }
                        Input::Status(reply) => {
                            let _ = reply.send(status(&core, &commit, &reports, dropped));
                        }
                    }
                    taken += 1;
                    if taken < BURST_INPUTS_MAX {
                        next = inputs.try_recv().ok();
                    }
                }
                core.release(now(), &mut out);
            }
            _ = ticker.tick() => core.on_tick(now(), &mut out),
        }

        // Writes to the disk (asynchronously); sends and replies wait in the pipeline.
        if let Some(writes) = pipeline.step(&mut out) {
            // Lazy records (no ticket) are appended in order and made durable by some
            // later sync; nothing waits for them.
            if let Err(reason) = submit(&commit, writes.persist, writes.ticket, &reports) {
                failed = Some(reason);
                break;
            }
        }
        // Release, in order, everything whose writes are durable.
        let released = pipeline.release();
        for (to, msg) in released.send {
            if !peers.send(to, msg) {
                dropped += 1;
            }
        }
        for event in released.events {
            match C::answer(&event) {
                Some(Answer::Reply { tag, reply }) => {
                    if let Some(client) = waiting.remove(&tag) {
                        let _ = client.send(ClientReply::Done(reply));
                    }
                }
                Some(Answer::Dropped { tag }) => {
                    if let Some(client) = waiting.remove(&tag) {
                        let _ = client.send(ClientReply::Unavailable(
                            "the replica dropped the request; retry".into(),
                        ));
                    }
                }
                Some(Answer::Halted { reason }) => {
                    tracing::error!(%reason, "the replica halted: it cannot apply the log");
                }
                None => {}
            }
        }
        options.leader.set(core.leader());
        // Forget clients that went away (their request may still be applied: at-most-once).
        if waiting.len() > 1024 && next_tag.is_multiple_of(1024) {
            waiting.retain(|_, tx| !tx.is_closed());
        }
        // Report readiness only once the state that made the core ready is durable.
        if on_ready.is_some() {
            if ready_at.is_none() && core.is_ready() {
                ready_at = Some(pipeline.issued());
            }
            if ready_at.is_some_and(|ticket| pipeline.is_durable(ticket)) {
                (on_ready.take().expect("checked"))();
            }
        }
    }
    drop(commit);
    match failed {
        None => Ok(()),
        Some(reason) => {
            tracing::error!(%reason, "storage failed; answering clients with errors, then stopping");
            for (_, client) in std::mem::take(&mut waiting) {
                let _ = client.send(ClientReply::StorageFailed(reason.clone()));
            }
            refuse_inputs(&mut inputs, &mut shutdown, &reason).await;
            Err(format!("storage failed, stopping: {reason}"))
        }
    }
}

/// Answers every input with the storage failure for [`STORAGE_FAILED_LINGER`] (or until
/// shutdown), so clients read an error instead of a closed connection.
async fn refuse_inputs<M, Q, R>(
    inputs: &mut mpsc::Receiver<Input<M, Q, R>>,
    shutdown: &mut watch::Receiver<bool>,
    reason: &str,
) {
    let deadline = tokio::time::sleep(STORAGE_FAILED_LINGER);
    tokio::pin!(deadline);
    loop {
        let input = tokio::select! {
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            input = inputs.recv() => input,
        };
        match input {
            None => return,
            Some(Input::Client { reply, .. }) => {
                let _ = reply.send(ClientReply::StorageFailed(reason.to_string()));
            }
            Some(Input::Status(reply)) => {
                let _ = reply.send(Status {
                    storage_failed: Some(reason.to_string()),
                    ..Status::default()
                });
            }
            Some(Input::Peer { .. }) => {}
        }
    }
}

/// The node's status as operators see it.
fn status<C: Node>(core: &C, commit: &Stream, reports: &Reports, dropped: u64) -> Status {
    let stats = commit.stats();
    let group = commit.group_stats();
    Status {
        core: core.status(),
        wal_bytes: stats.wal_bytes,
        snapshot_bytes: stats.snapshot_bytes,
        snapshot_index: stats.snapshot_index,
        durable_index: stats.durable_index,
        fsyncs: group.batches,
        persisted_steps: group.appends,
        fsync_micros: group.fsync_micros,
        batch_appends: group.batch_appends,
        dropped_messages: dropped,
        ready: core.is_ready(),
        snapshots_skipped: reports.snapshots_skipped.load(Ordering::Relaxed),
        storage_failed: None,
    }
}

/// Where the writer's completions report: durable tickets (or the failure), and how many
/// snapshots it skipped.
struct Reports {
    durable: mpsc::UnboundedSender<Result<u64, String>>,
    snapshots_skipped: Arc<AtomicU64>,
}

/// Hands one call's persists to the writer, in order. The ticket is reported durable once
/// every part the call's sends wait for is: each run of records, and each
/// [`Persist::Snapshot`] (once installed). A [`Persist::Compaction`] is written in order too,
/// but nothing waits for it. Failures are reported whether or not there is a ticket.
fn submit(
    commit: &Stream,
    persist: Vec<Persist>,
    ticket: Option<u64>,
    reports: &Reports,
) -> Result<(), String> {
    let join = Join::new(&reports.durable, ticket);
    let mut records = Vec::new();
    for item in persist {
        let (data, gates) = match item {
            Persist::Record { kind, payload, .. } => {
                records.push((kind, payload));
                continue;
            }
            Persist::Snapshot(data) => (data, true),
            Persist::Compaction(data) => (data, false),
        };
        if !records.is_empty() {
            commit
                .submit(std::mem::take(&mut records), join.part())
                .map_err(|e| e.to_string())?;
        }
        let done = if gates {
            join.part()
        } else {
            completion(&reports.durable, None)
        };
        tracing::debug!(bytes = ?data.size_hint(), gates, "writing a snapshot");
        commit
            .snapshot(data, snapshot_completion(reports, done))
            .map_err(|e| e.to_string())?;
    }
    if !records.is_empty() {
        commit
            .submit(records, join.part())
            .map_err(|e| e.to_string())?;
    }
    join.close();
    Ok(())
}

/// Reports a call's ticket durable once each of its parts has completed: one count per
/// part handed out, plus one the submitter holds until it has handed out the last (so
/// parts that complete meanwhile cannot report it early).
struct Join {
    durable: mpsc::UnboundedSender<Result<u64, String>>,
    ticket: Option<u64>,
    left: Arc<AtomicUsize>,
}

impl Join {
    fn new(durable: &mpsc::UnboundedSender<Result<u64, String>>, ticket: Option<u64>) -> Join {
        Join {
            durable: durable.clone(),
            ticket,
            left: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// The completion of one more part: a failure is reported at once; the last success
    /// reports the ticket.
    fn part(&self) -> kv_engine::group::Completion {
        self.left.fetch_add(1, Ordering::AcqRel);
        let (tx, ticket, left) = (self.durable.clone(), self.ticket, self.left.clone());
        Box::new(move |result| match result {
            Ok(_) => Join::count_down(&left, &tx, ticket),
            Err(e) => drop(tx.send(Err(e.to_string()))),
        })
    }

    /// Every part is handed out.
    fn close(self) {
        Join::count_down(&self.left, &self.durable, self.ticket);
    }

    fn count_down(
        left: &AtomicUsize,
        tx: &mpsc::UnboundedSender<Result<u64, String>>,
        ticket: Option<u64>,
    ) {
        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(ticket) = ticket {
                let _ = tx.send(Ok(ticket));
            }
        }
    }
}

/// A snapshot's completion: a snapshot skipped for want of room is counted and logged, and
/// then counts as done — the records before it are durable, which is all a ticket
/// promises; the log it would have compacted stays.
fn snapshot_completion(
    reports: &Reports,
    done: kv_engine::group::Completion,
) -> kv_engine::group::Completion {
    let skipped = reports.snapshots_skipped.clone();
    Box::new(move |result| match result {
        Err(skip @ kv_engine::Error::SnapshotSkipped { .. }) => {
            skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %skip, "snapshot skipped; the node goes on with a longer log");
            done(Ok(0))
        }
        other => done(other),
    })
}

/// A completion that always reports failure, and reports success only with a ticket.
fn completion(
    durable: &mpsc::UnboundedSender<Result<u64, String>>,
    ticket: Option<u64>,
) -> kv_engine::group::Completion {
    let tx = durable.clone();
    Box::new(move |result| match (result, ticket) {
        (Ok(_), Some(ticket)) => drop(tx.send(Ok(ticket))),
        (Ok(_), None) => {}
        (Err(e), _) => drop(tx.send(Err(e.to_string()))),
    })
}

/// Microseconds on the clock the cores read: CLOCK_BOOTTIME, which is monotonic like
/// `Instant` (CLOCK_MONOTONIC) but also counts time the machine spent suspended. A leader
/// lease (`paxos::Lease`) assumes every node's clock advances with real time; a suspended
/// leader whose clock stood still would wake believing in a lease its acceptors' clocks
/// had long ended.
fn boot_clock() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux
    // this runs on (since 2.6.39).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}
