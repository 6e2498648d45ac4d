//! The production driver: runs protocol cores on a tokio task (one, or every replica a
//! sharded node hosts; see [`run_cores`]) and applies their effects in the crate-wide
//! order — durable, then send, then reply.
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
//! A step is one burst: every input already queued for any of the task's cores when it
//! wakes (up to `BURST_INPUTS_MAX` per core), handled back to back between [`Node::hold`]
//! and [`Node::release`], so the burst's requests share one instance per core and all
//! the cores' writes share one fsync.
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

use kv_engine::group::{Batch, GroupOptions, Stream};
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

/// A replica for [`run_cores`] to drive.
pub struct Hosted<C: Core, P> {
    /// Its protocol core.
    pub core: C,
    /// Its stream of the node's log (every replica of one driver shares one writer).
    pub log: Stream,
    /// Where its messages go.
    pub peers: P,
    /// Its inputs.
    pub inputs: mpsc::Receiver<CoreInput<C>>,
    /// Where the driver publishes [`Node::leader`] after every step.
    pub leader: LeaderHint,
    /// Run once the state that made the core ready is durable.
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
}

/// Runs the replicas `hosted` on one task until `shutdown` flips to true or the store
/// fails. Returns the reason it stopped with an error, if it did.
///
/// One driver for every replica of a node: a step takes every input already queued for
/// any of them, and hands the writes of all of them to the log writer as one
/// [`Batch`], so one fsync and one wake-up serve every group the burst touched, and
/// their messages to one peer leave together. With a driver per replica the writer began
/// an fsync for the first replica's records while the others' were still being made.
pub async fn run_cores<C, P>(
    hosted: Vec<Hosted<C, P>>,
    mut shutdown: watch::Receiver<bool>,
    options: DriverOptions,
) -> Result<(), String>
where
    C: Core,
    P: PeerSender<C::Msg>,
{
    assert!(!hosted.is_empty(), "a driver needs a replica");
    let (durable_tx, mut durable_rx) = mpsc::unbounded_channel::<(usize, Durable)>();
    let epoch = boot_clock();
    let now = || Time(boot_clock().saturating_sub(epoch));
    let mut ticker = tokio::time::interval(options.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut inputs = Vec::with_capacity(hosted.len());
    let mut replicas: Vec<Driven<C, P>> = Vec::with_capacity(hosted.len());
    for (index, hosted) in hosted.into_iter().enumerate() {
        let Hosted {
            core,
            log,
            peers,
            inputs: receiver,
            leader,
            on_ready,
        } = hosted;
        inputs.push(receiver);
        replicas.push(Driven {
            core,
            log,
            peers,
            leader,
            out: Effects::new(),
            pipeline: Pipeline::new(),
            next_tag: 0,
            waiting: BTreeMap::new(),
            dropped: 0,
            reports: Reports {
                reporter: Reporter {
                    durable: durable_tx.clone(),
                    replica: index,
                },
                snapshots_skipped: Arc::default(),
            },
            on_ready,
            ready_at: None,
        });
    }
    drop(durable_tx);
    let log = replicas[0].log.clone();
    // Which replicas the current burst gave inputs to (held until it ends).
    let mut touched = vec![false; replicas.len()];
    let mut first = 0;
    // Why storage failed, once it has: the loop ends and the node stops.
    let mut failed: Option<String> = None;

    for replica in &mut replicas {
        replica.core.on_boot(now(), &mut replica.out);
    }
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
                    Some((index, Ok(ticket))) => replicas[index].pipeline.durable(ticket),
                    Some((_, Err(reason))) => {
                        failed = Some(reason);
                        break;
                    }
                    None => {
                        failed = Some("the storage writer stopped".into());
                        break;
                    }
                }
            }
            input = next_input(&mut inputs, first) => {
                let (index, Some(input)) = input else { break };
                first = (index + 1) % inputs.len();
                // Take the whole burst that is already queued for any replica, holding back
                // each one's new batches until it is in, so one instance per group (and one
                // fsync for all) carries all of it.
                let mut next = Some((index, input));
                let mut taken = 0;
                while let Some((index, input)) = next.take() {
                    let replica = &mut replicas[index];
                    if !std::mem::replace(&mut touched[index], true) {
                        replica.core.hold();
                    }
                    replica.take(now(), input);
                    taken += 1;
                    let n = inputs.len();
                    if taken < BURST_INPUTS_MAX * n {
                        next = (0..n)
                            .map(|i| (first + i) % n)
                            .find_map(|i| inputs[i].try_recv().ok().map(|input| (i, input)));
                    }
                }
                for (replica, touched) in replicas.iter_mut().zip(&mut touched) {
                    if std::mem::take(touched) {
                        replica.core.release(now(), &mut replica.out);
                    }
                }
            }
            _ = ticker.tick() => {
                for replica in &mut replicas {
                    replica.core.on_tick(now(), &mut replica.out);
                }
            }
        }

        // Writes to the disk (asynchronously), every replica's in one batch; sends and
        // replies wait in the pipelines.
        let mut batch = Batch::new();
        for replica in &mut replicas {
            replica.step(&mut batch);
        }
        if let Err(e) = log.send_batch(batch) {
            failed = Some(e.to_string());
            break;
        }
        // Release, in order, everything whose writes are durable.
        for replica in &mut replicas {
            replica.release();
        }
    }
    drop(log);
    match failed {
        None => Ok(()),
        Some(reason) => {
            tracing::error!(%reason, "storage failed; answering clients with errors, then stopping");
            for replica in &mut replicas {
                for (_, client) in std::mem::take(&mut replica.waiting) {
                    let _ = client.send(ClientReply::StorageFailed(reason.clone()));
                }
            }
            drop(replicas);
            refuse_inputs(&mut inputs, &mut shutdown, &reason).await;
            Err(format!("storage failed, stopping: {reason}"))
        }
    }
}

/// The next input of any of `inputs`, trying them from `first` on so none starves: which
/// one, and the input (`None` if its senders are gone).
fn next_input<'a, T>(
    inputs: &'a mut [mpsc::Receiver<T>],
    first: usize,
) -> impl std::future::Future<Output = (usize, Option<T>)> + 'a {
    std::future::poll_fn(move |cx| {
        let n = inputs.len();
        for i in (0..n).map(|i| (first + i) % n) {
            if let std::task::Poll::Ready(input) = inputs[i].poll_recv(cx) {
                return std::task::Poll::Ready((i, input));
            }
        }
        std::task::Poll::Pending
    })
}

/// What the writer reports for a replica's ticket: durable, or why storage failed.
type Durable = Result<u64, String>;

/// A replica as its driver runs it.
struct Driven<C: Core, P> {
    core: C,
    log: Stream,
    peers: P,
    leader: LeaderHint,
    out: Effects<C::Msg, C::Event>,
    // Tickets may complete out of order (a snapshot is written on its own thread while
    // later appends are synced): the pipeline releases in step order regardless.
    pipeline: Pipeline<C::Msg, C::Event>,
    next_tag: u64,
    waiting: BTreeMap<u64, oneshot::Sender<ClientReply<C::Reply>>>,
    dropped: u64,
    reports: Reports,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
    ready_at: Option<u64>,
}

impl<C: Core, P: PeerSender<C::Msg>> Driven<C, P> {
    /// Hands one input to the core.
    fn take(&mut self, now: Time, input: CoreInput<C>) {
        match input {
            Input::Peer { from, msg } => self.core.on_message(now, from, msg, &mut self.out),
            Input::Client { request, reply } => {
                self.next_tag += 1;
                self.waiting.insert(self.next_tag, reply);
                self.core
                    .on_request(now, self.next_tag, request, &mut self.out);
            }
            Input::Status(reply) => {
                let _ = reply.send(status(&self.core, &self.log, &self.reports, self.dropped));
            }
        }
    }

    /// Adds the step's writes to `batch`. Lazy records (no ticket) are appended in order
    /// and made durable by some later sync; nothing waits for them.
    fn step(&mut self, batch: &mut Batch) {
        if let Some(writes) = self.pipeline.step(&mut self.out) {
            self.reports
                .submit(batch, &self.log, writes.persist, writes.ticket);
        }
    }

    /// Sends and answers everything whose writes are durable; publishes the leader and
    /// readiness.
    fn release(&mut self) {
        let released = self.pipeline.release();
        for (to, msg) in released.send {
            if !self.peers.send(to, msg) {
                self.dropped += 1;
            }
        }
        for event in released.events {
            match C::answer(&event) {
                Some(Answer::Reply { tag, reply }) => {
                    if let Some(client) = self.waiting.remove(&tag) {
                        let _ = client.send(ClientReply::Done(reply));
                    }
                }
                Some(Answer::Dropped { tag }) => {
                    if let Some(client) = self.waiting.remove(&tag) {
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
        self.leader.set(self.core.leader());
        // Forget clients that went away (their request may still be applied: at-most-once).
        if self.waiting.len() > 1024 && self.next_tag.is_multiple_of(1024) {
            self.waiting.retain(|_, tx| !tx.is_closed());
        }
        // Report readiness only once the state that made the core ready is durable.
        if self.on_ready.is_some() {
            if self.ready_at.is_none() && self.core.is_ready() {
                self.ready_at = Some(self.pipeline.issued());
            }
            if self
                .ready_at
                .is_some_and(|ticket| self.pipeline.is_durable(ticket))
            {
                (self.on_ready.take().expect("checked"))();
            }
        }
    }
}

/// Answers every input with the storage failure for [`STORAGE_FAILED_LINGER`] (or until
/// shutdown), so clients read an error instead of a closed connection.
async fn refuse_inputs<M, Q, R>(
    inputs: &mut [mpsc::Receiver<Input<M, Q, R>>],
    shutdown: &mut watch::Receiver<bool>,
    reason: &str,
) {
    let deadline = tokio::time::sleep(STORAGE_FAILED_LINGER);
    tokio::pin!(deadline);
    loop {
        let input = tokio::select! {
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            (_, input) = next_input(inputs, 0) => input,
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

/// Where the writer's completions for one replica report: its durable tickets (or the
/// failure), and how many of its snapshots were skipped.
struct Reports {
    reporter: Reporter,
    snapshots_skipped: Arc<AtomicU64>,
}

impl Reports {
    /// Adds one step's persists to `batch`, in order. The ticket is reported durable once
    /// every part the step's sends wait for is: each run of records, and each
    /// [`Persist::Snapshot`] (once installed). A [`Persist::Compaction`] is written in
    /// order too, but nothing waits for it. Failures are reported whether or not there is
    /// a ticket.
    fn submit(&self, batch: &mut Batch, log: &Stream, persist: Vec<Persist>, ticket: Option<u64>) {
        let join = Join::new(self, ticket);
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
                log.append_to(batch, std::mem::take(&mut records), join.part());
            }
            let done = if gates {
                join.part()
            } else {
                self.completion(None)
            };
            tracing::debug!(bytes = ?data.size_hint(), gates, "writing a snapshot");
            log.snapshot_to(batch, data, self.snapshot_completion(done));
        }
        if !records.is_empty() {
            log.append_to(batch, records, join.part());
        }
        join.close();
    }

    /// A completion that always reports failure, and reports success only with a ticket.
    fn completion(&self, ticket: Option<u64>) -> kv_engine::group::Completion {
        let reports = self.reporter.clone();
        Box::new(move |result| match (result, ticket) {
            (Ok(_), Some(ticket)) => reports.report(Ok(ticket)),
            (Ok(_), None) => {}
            (Err(e), _) => reports.report(Err(e.to_string())),
        })
    }

    /// A snapshot's completion: a snapshot skipped for want of room is counted and logged,
    /// and then counts as done — the records before it are durable, which is all a ticket
    /// promises; the log it would have compacted stays.
    fn snapshot_completion(
        &self,
        done: kv_engine::group::Completion,
    ) -> kv_engine::group::Completion {
        let skipped = self.snapshots_skipped.clone();
        Box::new(move |result| match result {
            Err(skip @ kv_engine::Error::SnapshotSkipped { .. }) => {
                skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %skip, "snapshot skipped; the node goes on with a longer log");
                done(Ok(0))
            }
            other => done(other),
        })
    }
}

/// Where the writer's completions report for one replica (as a completion holds it).
#[derive(Clone)]
struct Reporter {
    durable: mpsc::UnboundedSender<(usize, Durable)>,
    replica: usize,
}

impl Reporter {
    fn report(&self, result: Durable) {
        let _ = self.durable.send((self.replica, result));
    }
}

/// Reports a step's ticket durable once each of its parts has completed: one count per
/// part handed out, plus one the submitter holds until it has handed out the last (so
/// parts that complete meanwhile cannot report it early).
struct Join {
    reports: Reporter,
    ticket: Option<u64>,
    left: Arc<AtomicUsize>,
}

impl Join {
    fn new(reports: &Reports, ticket: Option<u64>) -> Join {
        Join {
            reports: reports.reporter.clone(),
            ticket,
            left: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// The completion of one more part: a failure is reported at once; the last success
    /// reports the ticket.
    fn part(&self) -> kv_engine::group::Completion {
        self.left.fetch_add(1, Ordering::AcqRel);
        let (reports, ticket, left) = (self.reports.clone(), self.ticket, self.left.clone());
        Box::new(move |result| match result {
            Ok(_) => Join::count_down(&left, &reports, ticket),
            Err(e) => reports.report(Err(e.to_string())),
        })
    }

    /// Every part is handed out.
    fn close(self) {
        Join::count_down(&self.left, &self.reports, self.ticket);
    }

    fn count_down(left: &AtomicUsize, reports: &Reporter, ticket: Option<u64>) {
        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(ticket) = ticket {
                reports.report(Ok(ticket));
            }
        }
    }
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
