//! A deterministic simulator for sans-IO protocol cores: one thread, one seed, virtual time.
//!
//! The simulator owns every node of a group, each with its own [`SimFs`] disk and a
//! [`Store`] on it, and a network that can drop, duplicate, delay and reorder messages,
//! partition the nodes into arbitrary groups, make a node deaf (it receives no requests but
//! still gets replies to its own, like the lab's deleted socket file) or unreliable (the
//! lab's 10% of requests lost, and 20% of its replies lost after the request ran). Nodes can
//! crash (unsynced disk writes are lost, the last one possibly torn) and restart from their
//! disk, or restart with a wiped disk.
//!
//! It is generic over [`Node`] (the core contract every driver runs) and [`Host`] (a
//! restartable factory: a (re)start rebuilds a node from its durable state only, and the
//! host checks invariants after every step).
//!
//! Determinism: every random choice comes from one [`Rng`] seeded by the run's seed; events
//! at equal times run in scheduling order; iteration is over ordered maps. Running a seed
//! twice gives the same [`Sim::trace_hash`].
//!
//! Effects go through the same [`Pipeline`] the production driver uses (see
//! [`crate::node`]): a step's records are appended at once, and made durable by a simulated
//! fsync that completes [`SimOptions::fsync_latency`] later (one fsync covers every record
//! appended before it starts, as group commit does), while the node goes on handling
//! inputs; its sends and events leave when the pipeline releases them. A crash while an
//! fsync is in flight loses its records (possibly tearing them) and everything queued
//! behind them. Every input costs a node [`SimOptions::step_cost`] of
//! virtual CPU time — each message, and each client call; messages that reach a node while
//! it is busy wait and are handled as one burst between `hold` and `release`, as the driver
//! does.
//! Nodes can also crash right after their early sends ([`Faults::crash_after_early_send`]).

pub mod group;
pub mod group_sweep;
pub mod kv;
pub mod kv_sweep;
pub mod load;
pub mod paxos;
pub mod pb;
pub mod pb_sweep;
pub mod replica;
pub mod script;
pub mod shardkv;
pub mod shardkv_sweep;
pub mod shardmaster;
pub mod shardmaster_sweep;
pub mod sweep;

mod clock;
mod network;
mod options;
pub use options::{FaultCeilings, Faults, SimOptions};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kv_engine::fs::{DiskImage, Fs, SimFs, Torn};
use kv_engine::snapshot::SnapshotSource;
use kv_engine::store::{Recovered, SnapshotJob, Store};

use self::clock::Clock;
use crate::effects::{Effects, Persist};
pub use crate::node::Node;
use crate::node::{Pipeline, Writes};
use crate::rng::Rng;
use crate::types::{NodeId, Time};

/// Probability that an unreliable node loses an inbound request (lab: 10%).
pub const UNRELIABLE_REQUEST_LOSS: f64 = 0.1;

/// How long a node takes to write a compaction's file ([`Persist::Compaction`]) after its
/// step: the window in which a crash loses the compaction while the step's sends are out.
pub const COMPACTION_WRITE_TIME: Duration = Duration::from_millis(20);

/// Probability that an unreliable node's reply is lost after the request ran (lab: 20%
/// of the survivors, 18% overall).
pub const UNRELIABLE_REPLY_LOSS: f64 = 0.2;

/// What a host gets to build a node from.
pub struct Boot {
    /// The node.
    pub id: NodeId,
    /// Its disk's contents.
    pub recovered: Recovered,
    /// True if the disk was wiped (the node lost its state).
    pub wiped: bool,
    /// A seed for the node's own randomness.
    pub seed: u64,
    /// The current virtual time.
    pub now: Time,
}

/// A restartable factory of nodes, and the checker of the group's invariants.
pub trait Host {
    /// The node type.
    type Node: Node;
    /// Builds a node from its durable state only.
    fn boot(&mut self, boot: Boot) -> Self::Node;
    /// Called after every step that ran a node, with the events it produced. Panics on a
    /// violated invariant.
    fn observe(&mut self, id: NodeId, node: &Self::Node, events: &[<Self::Node as Node>::Event]);
    /// Called after a node (re)booted. Panics on a violated invariant.
    fn booted(&mut self, id: NodeId, node: &Self::Node);
}

/// The message of a caught panic (what a sweep reports for a failed seed).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Per-node counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages handed to the node.
    pub received: u64,
    /// Messages the node asked to send.
    pub sent: u64,
    /// Crashes injected right after early sends ([`Faults::crash_after_early_send`]).
    pub early_crashes: u64,
    /// Crashes that lost a compaction whose file was still being written.
    pub compactions_lost: u64,
}

struct Slot<N: Node> {
    node: Option<N>,
    fs: SimFs,
    store: Option<Store>,
    dir: PathBuf,
    deaf: bool,
    unreliable: bool,
    counters: Counters,
    incarnation: u64,
    pipeline: Pipeline<N::Msg, N::Event>,
    /// The fsync in flight: it makes durable every ticket up to this one.
    syncing: Option<u64>,
    /// A [`Persist::Compaction`] begun (the log synced and closed at its index) whose file
    /// is still being written: a crash before [`COMPACTION_WRITE_TIME`] loses it.
    compaction: Option<(SnapshotJob, Arc<dyn SnapshotSource>)>,
    /// Messages waiting for the busy node, and whether a run is scheduled.
    inbox: VecDeque<(NodeId, N::Msg)>,
    run_scheduled: bool,
    /// The node is busy (with inputs it took) until then.
    busy_until: Time,
    /// What the node reads as `now`.
    clock: Clock,
}

enum Pending<M> {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: M,
    },
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Fsync {
        node: NodeId,
        incarnation: u64,
    },
    Run {
        node: NodeId,
        incarnation: u64,
    },
    /// A compaction's file is written (unless the node crashed meanwhile, or a later
    /// snapshot already finished the compaction at `index`).
    Compaction {
        node: NodeId,
        incarnation: u64,
        index: u64,
    },
}

/// The simulator. See the module docs.
pub struct Sim<H: Host> {
    host: H,
    seed: u64,
    rng: Rng,
    now: Time,
    options: SimOptions,
    slots: Vec<Slot<H::Node>>,
    /// Scheduled events as `(when, order, slot in pending)`: time, then scheduling order,
    /// decide which runs first.
    queue: BinaryHeap<Reverse<(Time, u64, u32)>>,
    /// The scheduled events themselves, in reused slots (the heap moves only small
    /// entries, however large a message is).
    pending: Vec<Option<Pending<<H::Node as Node>::Msg>>>,
    /// Free slots of `pending`.
    free: Vec<u32>,
    next_order: u64,
    /// The partition: each node's side (see `network`).
    groups: Option<Vec<usize>>,
    /// Directed links cut on top of the partition: `(from, to)` loses everything `from`
    /// sends `to` (see `network`).
    cut: BTreeSet<(usize, usize)>,
    /// Per directed link: when its last transmission ends (bandwidth model).
    links: BTreeMap<(NodeId, NodeId), Time>,
    /// Messages lost for being over `message_bytes_max`.
    oversized: u64,
    trace_hash: u64,
    trace: VecDeque<String>,
}

type Out<H> = Effects<<<H as Host>::Node as Node>::Msg, <<H as Host>::Node as Node>::Event>;

impl<H: Host> Sim<H> {
    /// Boots `options.nodes` nodes on fresh disks.
    pub fn new(seed: u64, options: SimOptions, host: H) -> Sim<H> {
        let mut sim = Sim {
            host,
            seed,
            rng: Rng::new(seed),
            now: Time::ZERO,
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            pending: Vec::new(),
            free: Vec::new(),
            next_order: 0,
            groups: None,
            cut: BTreeSet::new(),
            links: BTreeMap::new(),
            oversized: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            trace: VecDeque::new(),
            options,
        };
        for i in 0..sim.options.nodes {
            sim.slots.push(Slot {
                node: None,
                fs: SimFs::new(),
                store: None,
                dir: PathBuf::from(format!("/node{i}")),
                deaf: false,
                unreliable: false,
                counters: Counters::default(),
                incarnation: 0,
                pipeline: Pipeline::new(),
                syncing: None,
                compaction: None,
                inbox: VecDeque::new(),
                run_scheduled: false,
                busy_until: Time::ZERO,
                clock: Clock::default(),
            });
            sim.boot(NodeId(i as u32), false);
        }
        sim
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Events scheduled so far: deliveries, ticks, fsyncs and runs (the simulator's own
    /// work, which its benches report per operation).
    pub fn scheduled(&self) -> u64 {
        self.next_order
    }

    /// Current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// From now on, node `i`'s clock runs `ppm` parts per million fast (slow if negative).
    pub fn set_clock_rate(&mut self, i: usize, ppm: i64) {
        let now = self.now;
        self.slots[i].clock.set_rate(now, ppm);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if the group has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The host (for its checkers' state).
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The host, mutably.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// The simulator's random generator (for test schedules derived from the same seed).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node `i`, if it is up.
    pub fn node(&self, i: usize) -> Option<&H::Node> {
        self.slots[i].node.as_ref()
    }

    /// True if node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    /// Runs `f` on node `i` (if up) at the current time and applies its effects. The call
    /// costs the node [`SimOptions::step_cost`]: messages reaching it wait that much longer.
    pub fn call<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut H::Node, Time, &mut Out<H>) -> R,
    ) -> Option<R> {
        let now = self.now;
        let mut out = Effects::new();
        let clock = self.slots[i].clock.read(now);
        let result = f(self.slots[i].node.as_mut()?, clock, &mut out);
        let slot = &mut self.slots[i];
        slot.busy_until = slot.busy_until.max(now) + self.options.step_cost;
        self.apply(NodeId(i as u32), out);
        Some(result)
    }

    // ---------------------------------------------------------------------------------
    // Running.
    // ---------------------------------------------------------------------------------

    /// Runs the next scheduled event; false if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _, slot))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let pending = self.pending[slot as usize]
            .take()
            .expect("scheduled event exists");
        self.free.push(slot);
        match pending {
            Pending::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Pending::Tick { node, incarnation } => self.tick(node, incarnation),
            Pending::Fsync { node, incarnation } => self.fsync_done(node, incarnation),
            Pending::Run { node, incarnation } => self.run_burst(node, incarnation),
            Pending::Compaction {
                node,
                incarnation,
                index,
            } => {
                let slot = &self.slots[node.index()];
                let same = slot.compaction.as_ref().map(|(job, _)| job.index()) == Some(index);
                if slot.incarnation == incarnation && same {
                    self.finish_compaction(node);
                }
            }
        }
        true
    }

    /// Runs every event up to `now + duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > deadline {
                break;
            }
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Runs until `done` holds (checked every `poll` of virtual time) or `limit` passes;
    /// returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        poll: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            self.run_for(poll);
        }
    }

    fn schedule(&mut self, at: Time, pending: Pending<<H::Node as Node>::Msg>) {
        let order = self.next_order;
        self.next_order += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.pending[slot as usize] = Some(pending);
                slot
            }
            None => {
                self.pending.push(Some(pending));
                u32::try_from(self.pending.len() - 1).expect("fewer than 2^32 events pending")
            }
        };
        self.queue.push(Reverse((at, order, slot)));
    }

    fn tick(&mut self, node: NodeId, incarnation: u64) {
        let i = node.index();
        if self.slots[i].incarnation != incarnation {
            return;
        }
        let now = self.now;
        let mut out = Effects::new();
        let clock = self.slots[i].clock.read(now);
        match self.slots[i].node.as_mut() {
            Some(n) => n.on_tick(clock, &mut out),
            None => return,
        }
        self.apply(node, out);
        let next = now + self.options.tick;
        self.schedule(next, Pending::Tick { node, incarnation });
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: <H::Node as Node>::Msg) {
        let i = to.index();
        if self.slots[i].node.is_none() || !self.connected(from, to) {
            self.record("lost", from, to, &msg);
            return;
        }
        if !H::Node::is_response(&msg) {
            let unreliable = self.slots[i].unreliable;
            if self.slots[i].deaf || (unreliable && self.rng.chance(UNRELIABLE_REQUEST_LOSS)) {
                self.record("refused", from, to, &msg);
                return;
            }
        }
        self.record("deliver", from, to, &msg);
        self.slots[i].counters.received += 1;
        self.slots[i].inbox.push_back((from, msg));
        if !self.slots[i].run_scheduled {
            self.slots[i].run_scheduled = true;
            let incarnation = self.slots[i].incarnation;
            let at = self.now.max(self.slots[i].busy_until);
            if at == self.now && self.queue.peek().is_none_or(|e| e.0 .0 > at) {
                // Nothing else happens at this instant: the run a schedule would make the
                // very next event happens now (the same order, without the queue).
                self.run_burst(to, incarnation);
                return;
            }
            self.schedule(
                at,
                Pending::Run {
                    node: to,
                    incarnation,
                },
            );
        }
    }

    /// Handles every message waiting for node `id` as one burst, then keeps the node busy
    /// for `step_cost` per message (messages arriving meanwhile form the next burst).
    fn run_burst(&mut self, id: NodeId, incarnation: u64) {
        let i = id.index();
        if self.slots[i].incarnation != incarnation {
            return;
        }
        let busy_until = self.slots[i].busy_until;
        if self.now < busy_until {
            // Calls kept the node busy since this run was scheduled.
            self.schedule(
                busy_until,
                Pending::Run {
                    node: id,
                    incarnation,
                },
            );
            return;
        }
        self.slots[i].run_scheduled = false;
        let mut burst = std::mem::take(&mut self.slots[i].inbox);
        if burst.is_empty() {
            return;
        }
        let count = burst.len() as u32;
        let now = self.now;
        let mut out = Effects::new();
        let clock = self.slots[i].clock.read(now);
        let Some(n) = self.slots[i].node.as_mut() else {
            return;
        };
        n.hold();
        for (from, msg) in burst.drain(..) {
            n.on_message(clock, from, msg, &mut out);
        }
        n.release(clock, &mut out);
        // The emptied buffer goes back for the next burst (the inbox is empty: nothing is
        // delivered during a run).
        self.slots[i].inbox = burst;
        self.apply(id, out);
        // Busy for `step_cost` per message: what arrives meanwhile waits in the inbox, and
        // its delivery schedules the next run at `busy_until`.
        self.slots[i].busy_until = now + self.options.step_cost * count;
    }

    /// Runs one step's effects through the node's pipeline: writes now, sends and events
    /// as the pipeline releases them.
    fn apply(&mut self, id: NodeId, mut out: Out<H>) {
        let i = id.index();
        let early = !out.send_early.is_empty() || !out.events_early.is_empty();
        let writes = self.slots[i].pipeline.step(&mut out);
        let ticket = writes.as_ref().and_then(|w| w.ticket);
        if let Some(writes) = writes {
            self.write(id, writes);
        }
        self.release(id);
        let p = self.options.faults.crash_after_early_send;
        if early && ticket.is_some() && p > 0.0 && self.rng.chance(p) {
            // The window early sends open: they are out, the step's writes are not durable.
            self.slots[i].counters.early_crashes += 1;
            let torn = Torn::Prefix(self.rng.next_u64());
            self.crash(i, torn);
            self.restart(i);
            return;
        }
        if ticket.is_some() {
            self.sync_soon(id);
        }
    }

    /// Appends a step's records (durable only once synced) and writes its snapshots (which
    /// sync the log first, so everything appended so far is durable after one). A
    /// compaction's file is written [`COMPACTION_WRITE_TIME`] later, as the server's
    /// snapshot thread does while the log goes on; one snapshot at a time, so a snapshot
    /// that comes meanwhile first waits for it.
    fn write(&mut self, id: NodeId, writes: Writes) {
        let seed = self.seed;
        let mut synced = false;
        for persist in writes.persist {
            match persist {
                Persist::Record { kind, payload, .. } => {
                    let store = self.slots[id.index()].store.as_mut();
                    store
                        .expect("a running node has a store")
                        .append(kind, &payload)
                        .unwrap_or_else(|e| panic!("seed {seed}: {id} append: {e}"));
                    synced = false;
                }
                Persist::Snapshot(source) => {
                    self.finish_compaction(id);
                    let store = self.slots[id.index()].store.as_mut();
                    let store = store.expect("a running node has a store");
                    let index = store.next_index() - 1;
                    store
                        .write_snapshot_from(index, &*source)
                        .unwrap_or_else(|e| panic!("seed {seed}: {id} snapshot: {e}"));
                    synced = true;
                }
                Persist::Compaction(source) => {
                    self.finish_compaction(id);
                    let slot = &mut self.slots[id.index()];
                    let store = slot.store.as_mut().expect("a running node has a store");
                    let job = store
                        .begin_snapshot(store.next_index() - 1)
                        .unwrap_or_else(|e| panic!("seed {seed}: {id} snapshot: {e}"));
                    let index = job.index();
                    slot.compaction = Some((job, source));
                    let incarnation = slot.incarnation;
                    self.schedule(
                        self.now + COMPACTION_WRITE_TIME,
                        Pending::Compaction {
                            node: id,
                            incarnation,
                            index,
                        },
                    );
                    synced = true;
                }
            }
        }
        if synced {
            let pipeline = &mut self.slots[id.index()].pipeline;
            let issued = pipeline.issued();
            pipeline.durable_through(issued);
        }
    }

    /// Writes and installs the node's compaction under way, if any.
    fn finish_compaction(&mut self, id: NodeId) {
        let seed = self.seed;
        let slot = &mut self.slots[id.index()];
        let (Some((job, source)), Some(store)) = (slot.compaction.take(), slot.store.as_mut())
        else {
            return;
        };
        let index = job.index();
        let written = job.write(&*source);
        store
            .finish_snapshot(index, written)
            .unwrap_or_else(|e| panic!("seed {seed}: {id} compaction: {e}"));
    }

    /// Makes what was appended durable: at once without fsync latency, else by an fsync
    /// that completes later (one at a time; appends made meanwhile wait for the next).
    fn sync_soon(&mut self, id: NodeId) {
        let i = id.index();
        let latency = self.options.fsync_latency;
        if latency.is_zero() {
            self.sync_now(id);
            return;
        }
        if self.slots[i].syncing.is_some()
            || self.slots[i]
                .pipeline
                .is_durable(self.slots[i].pipeline.issued())
        {
            return;
        }
        self.slots[i].syncing = Some(self.slots[i].pipeline.issued());
        let incarnation = self.slots[i].incarnation;
        let at = self.now + latency;
        self.schedule(
            at,
            Pending::Fsync {
                node: id,
                incarnation,
            },
        );
    }

    fn sync_now(&mut self, id: NodeId) {
        let seed = self.seed;
        let slot = &mut self.slots[id.index()];
        let Some(store) = slot.store.as_mut() else {
            return;
        };
        store
            .sync()
            .unwrap_or_else(|e| panic!("seed {seed}: {id} sync: {e}"));
        let issued = slot.pipeline.issued();
        slot.pipeline.durable_through(issued);
        self.release(id);
    }

    fn fsync_done(&mut self, id: NodeId, incarnation: u64) {
        let i = id.index();
        if self.slots[i].incarnation != incarnation || self.slots[i].node.is_none() {
            return;
        }
        let Some(through) = self.slots[i].syncing.take() else {
            return;
        };
        let seed = self.seed;
        if let Some(store) = self.slots[i].store.as_mut() {
            store
                .sync()
                .unwrap_or_else(|e| panic!("seed {seed}: {id} sync: {e}"));
        }
        self.slots[i].pipeline.durable_through(through);
        self.release(id);
        if !self.slots[i]
            .pipeline
            .is_durable(self.slots[i].pipeline.issued())
        {
            self.sync_soon(id);
        }
    }

    /// Sends and reports what the node's pipeline lets go.
    fn release(&mut self, id: NodeId) {
        let i = id.index();
        let released = self.slots[i].pipeline.release();
        self.slots[i].counters.sent += released.send.len() as u64;
        for (to, msg) in released.send {
            self.send(id, to, msg);
        }
        if let Some(node) = self.slots[i].node.as_ref() {
            self.host.observe(id, node, &released.events);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: <H::Node as Node>::Msg) {
        if to.index() >= self.slots.len() || to == from || !self.connected(from, to) {
            self.record("unreachable", from, to, &msg);
            return;
        }
        if H::Node::is_response(&msg)
            && self.slots[from.index()].unreliable
            && self.rng.chance(UNRELIABLE_REPLY_LOSS)
        {
            self.record("reply-lost", from, to, &msg);
            return;
        }
        let bytes = H::Node::wire_bytes(&msg);
        if bytes > self.options.message_bytes_max {
            self.oversized += 1;
            self.record("oversized", from, to, &msg);
            return;
        }
        let mut faults = self.options.faults;
        if self
            .options
            .steady_node
            .is_some_and(|n| n == from.index() || n == to.index())
        {
            faults.drop = 0.0;
            faults.long_delay = 0.0;
        }
        if self.rng.chance(faults.drop) {
            self.record("drop", from, to, &msg);
            return;
        }
        if self.rng.chance(faults.duplicate) {
            let at = self.arrival(faults, from, to, bytes);
            let copy = msg.clone();
            self.schedule(
                at,
                Pending::Deliver {
                    from,
                    to,
                    msg: copy,
                },
            );
        }
        let at = self.arrival(faults, from, to, bytes);
        self.schedule(at, Pending::Deliver { from, to, msg });
    }

    /// When a message of `bytes` sent now on `from -> to` arrives: a random delay, and with
    /// a bandwidth limit no earlier than the link has transmitted it behind whatever it was
    /// already carrying.
    fn arrival(&mut self, faults: Faults, from: NodeId, to: NodeId, bytes: usize) -> Time {
        let mut delay = self.rng.range(
            faults.delay_min.as_micros() as u64,
            faults.delay_max.as_micros() as u64,
        );
        if faults.long_delay > 0.0 && self.rng.chance(faults.long_delay) {
            delay += self.rng.below(faults.long_delay_max.as_micros() as u64 + 1);
        }
        let at = self.now + Duration::from_micros(delay);
        if faults.bandwidth == 0 {
            return at;
        }
        let free = self.links.get(&(from, to)).copied().unwrap_or(self.now);
        let sent = free.max(self.now) + crate::timing::transfer_time(bytes, faults.bandwidth);
        self.links.insert((from, to), sent);
        at.max(sent + faults.delay_min)
    }

    fn record(&mut self, what: &str, from: NodeId, to: NodeId, msg: &<H::Node as Node>::Msg) {
        // The hash takes the message's size, not its summary: formatting every message
        // would cost more than everything else the simulator does with it.
        self.hash_bytes(&self.now.0.to_le_bytes());
        self.hash_bytes(what.as_bytes());
        self.hash_bytes(&[from.0 as u8, to.0 as u8]);
        self.hash_bytes(&(H::Node::wire_bytes(msg) as u64).to_le_bytes());
        if self.options.trace_lines > 0 {
            let summary = H::Node::summarize(msg);
            if self.trace.len() == self.options.trace_lines {
                self.trace.pop_front();
            }
            self.trace
                .push_back(format!("{} {what} {from}->{to} {summary}", self.now));
        }
    }

    fn note(&mut self, line: String) {
        self.hash_bytes(line.as_bytes());
        if self.options.trace_lines > 0 {
            if self.trace.len() == self.options.trace_lines {
                self.trace.pop_front();
            }
            self.trace.push_back(format!("{} {line}", self.now));
        }
    }

    fn hash_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.trace_hash ^= *b as u64;
            self.trace_hash = self.trace_hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// A hash of everything that happened so far (deliveries, losses, faults, timings).
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// The most recent trace lines (if enabled in [`SimOptions::trace_lines`]).
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    // ---------------------------------------------------------------------------------
    // Faults.
    // ---------------------------------------------------------------------------------

    /// Replaces the network fault knobs.
    pub fn set_faults(&mut self, faults: Faults) {
        self.options.faults = faults;
    }

    /// The current fault knobs.
    pub fn faults(&self) -> Faults {
        self.options.faults
    }

    /// A deaf node receives no requests (replies to its own requests still arrive).
    pub fn set_deaf(&mut self, i: usize, deaf: bool) {
        self.note(format!("deaf n{i} {deaf}"));
        self.slots[i].deaf = deaf;
    }

    /// The lab's unreliable mode for node `i`.
    pub fn set_unreliable(&mut self, i: usize, unreliable: bool) {
        self.note(format!("unreliable n{i} {unreliable}"));
        self.slots[i].unreliable = unreliable;
    }

    /// The lab's unreliable mode for every node.
    pub fn set_all_unreliable(&mut self, unreliable: bool) {
        for i in 0..self.slots.len() {
            self.set_unreliable(i, unreliable);
        }
    }

    /// Crashes node `i`: its process state is gone, and its disk keeps only synced bytes
    /// (plus, with [`Torn::Prefix`], a torn prefix of unsynced ones).
    pub fn crash(&mut self, i: usize, torn: Torn) {
        self.note(format!("crash n{i} {torn:?}"));
        let slot = &mut self.slots[i];
        if slot.compaction.take().is_some() {
            slot.counters.compactions_lost += 1;
        }
        slot.node = None;
        slot.store = None;
        slot.incarnation += 1;
        slot.pipeline = Pipeline::new();
        slot.syncing = None;
        slot.inbox.clear();
        slot.run_scheduled = false;
        slot.busy_until = Time::ZERO;
        slot.fs.crash(torn);
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, i: usize) {
        self.note(format!("restart n{i}"));
        assert!(self.slots[i].node.is_none(), "restart of a running node");
        self.boot(NodeId(i as u32), false);
    }

    /// What node `i`'s disk durably holds now (a backup an operator could restore later).
    pub fn disk_image(&self, i: usize) -> DiskImage {
        self.slots[i].fs.durable_image()
    }

    /// Crashes node `i` (if up), replaces its disk with `image` (an older copy of it, as an
    /// operator restoring a backup would) and restarts it on that.
    pub fn restore_disk(&mut self, i: usize, image: &DiskImage) {
        if self.slots[i].node.is_some() {
            self.crash(i, Torn::None);
        }
        self.note(format!("restore n{i}"));
        self.slots[i].fs.restore(image);
        self.boot(NodeId(i as u32), false);
    }

    /// Crashes node `i` (if up), wipes its disk and restarts it empty.
    pub fn restart_wiped(&mut self, i: usize) {
        if self.slots[i].node.is_some() {
            self.crash(i, Torn::None);
        }
        self.note(format!("wipe n{i}"));
        self.slots[i].fs.wipe();
        self.boot(NodeId(i as u32), true);
    }

    fn boot(&mut self, id: NodeId, wiped: bool) {
        let i = id.index();
        let fs: Arc<dyn Fs> = Arc::new(self.slots[i].fs.clone());
        let dir = self.slots[i].dir.clone();
        let (store, recovered) = Store::open(fs, &dir, self.options.store)
            .unwrap_or_else(|e| panic!("seed {}: {id} store open: {e}", self.seed));
        let seed = self.rng.fork();
        let node = self.host.boot(Boot {
            id,
            recovered,
            wiped,
            seed,
            now: self.slots[i].clock.read(self.now),
        });
        self.host.booted(id, &node);
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.store = Some(store);
        // A new life: whatever was scheduled for the old one (ticks, fsyncs) is void.
        slot.incarnation += 1;
        let incarnation = slot.incarnation;
        let now = slot.clock.read(self.now);
        let mut out = Effects::new();
        if let Some(n) = slot.node.as_mut() {
            n.on_boot(now, &mut out);
        }
        self.apply(id, out);
        let first = self.rng.below(self.options.tick.as_micros() as u64 + 1);
        let at = self.now + Duration::from_micros(first);
        self.schedule(
            at,
            Pending::Tick {
                node: id,
                incarnation,
            },
        );
    }

    // ---------------------------------------------------------------------------------
    // Counters.
    // ---------------------------------------------------------------------------------

    /// Whether node `i` is writing a compaction's file (a crash now loses it).
    pub fn compaction_pending(&self, i: usize) -> bool {
        self.slots[i].compaction.is_some()
    }

    /// Compactions lost to crashes, over every node.
    pub fn compactions_lost(&self) -> u64 {
        self.slots.iter().map(|s| s.counters.compactions_lost).sum()
    }

    /// Node `i`'s counters (kept across restarts).
    pub fn counters(&self, i: usize) -> Counters {
        self.slots[i].counters
    }

    /// Messages lost for being larger than [`SimOptions::message_bytes_max`].
    pub fn oversized_messages(&self) -> u64 {
        self.oversized
    }

    /// Messages received by all nodes.
    pub fn total_received(&self) -> u64 {
        self.slots.iter().map(|s| s.counters.received).sum()
    }

    /// Bytes node `i`'s protocol retains in memory (0 if down).
    pub fn retained_bytes(&self, i: usize) -> u64 {
        self.slots[i]
            .node
            .as_ref()
            .map_or(0, |n| n.retained_bytes())
    }

    /// Bytes on node `i`'s disk.
    pub fn disk_bytes(&self, i: usize) -> u64 {
        self.slots[i].fs.bytes_under(&self.slots[i].dir)
    }

    /// Node `i`'s disk.
    pub fn fs(&self, i: usize) -> &SimFs {
        &self.slots[i].fs
    }

    /// Node `i`'s data directory on its disk.
    pub fn dir(&self, i: usize) -> &Path {
        &self.slots[i].dir
    }
}
