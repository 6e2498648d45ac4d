//! Paxos on the simulator: the [`Host`] that boots [`Paxos`] peers from their disks and
//! checks agreement after every step, and [`PaxosCluster`], the lab-style test harness
//! (`start`, `status`, `ndecided`, `waitn`, ...) used by tests, the sweep and the bench.
//!
//! The safety invariant: across the whole run, crashes and restarts included, no instance
//! is ever decided with two different values on any node. The host keeps the first decided
//! value seen anywhere for each instance and panics (naming the seed) on a conflict.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{Boot, Host, Node, Sim, SimOptions};
use crate::effects::Effects;
use crate::node::Answer;
use crate::paxos::{Body, Config, Event, Fate, Message, Paxos, Seq};
use crate::types::{NodeId, Time};

impl Node for Paxos {
    type Msg = Message;
    type Request = ();
    type Reply = ();
    type Event = Event;

    fn on_boot(&mut self, now: Time, out: &mut Effects<Message, Event>) {
        Paxos::on_boot(self, now, out)
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Message,
        out: &mut Effects<Message, Event>,
    ) {
        Paxos::on_message(self, now, from, msg, out)
    }

    /// Paxos takes no client requests (the lab's interface is calls: `start`, `status`).
    fn on_request(&mut self, _: Time, _: u64, (): (), _: &mut Effects<Message, Event>) {}

    fn on_tick(&mut self, now: Time, out: &mut Effects<Message, Event>) {
        Paxos::on_tick(self, now, out)
    }

    fn answer(_: &Event) -> Option<Answer<()>> {
        None
    }

    fn is_response(msg: &Message) -> bool {
        msg.body.is_response()
    }

    fn summarize(msg: &Message) -> String {
        match &msg.body {
            Body::Prepare { ballot, from } => format!("prepare {ballot} from {from}"),
            Body::Promise {
                ballot,
                from,
                entries,
                next,
            } => format!(
                "promise {ballot} from {from} ({} entries, next {next:?})",
                entries.len()
            ),
            Body::Accept {
                ballot,
                seq,
                value,
                commits,
            } => format!(
                "accept {ballot} {seq} ({} bytes, {} commits)",
                value.len(),
                commits.len()
            ),
            Body::Accepted { ballot, seq, .. } => format!("accepted {ballot} {seq}"),
            Body::Reject { ballot, promised } => format!("reject {ballot} promised {promised}"),
            Body::Decided { commits } => format!("decided {} commits", commits.len()),
            Body::Forward { seq, value } => format!("forward {seq} ({} bytes)", value.len()),
            Body::Learn { seqs } => format!("learn {seqs:?}"),
            Body::Learned { commits } => format!("learned {} commits", commits.len()),
            Body::Confirm { ballot, round } => format!("confirm {ballot} round {round}"),
            Body::Confirmed { ballot, round, .. } => format!("confirmed {ballot} round {round}"),
            Body::Follow { ballot, leader } => format!("follow {leader}, not {ballot}"),
        }
    }

    fn wire_bytes(msg: &Message) -> usize {
        msg.wire_bytes()
    }

    fn retained_bytes(&self) -> u64 {
        Paxos::retained_bytes(self)
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        vec![
            ("promised", self.promised().to_string()),
            ("min", self.min().to_string()),
        ]
    }

    fn is_ready(&self) -> bool {
        !self.is_silent()
    }
}

/// Boots Paxos peers and checks agreement.
pub struct PaxosHost {
    /// The run's seed (printed on violations).
    pub seed: u64,
    /// Peer configuration template (`me` and `recovering` are set per boot).
    pub config: Config,
    /// The first decided value seen anywhere, per instance.
    pub chosen: BTreeMap<Seq, Bytes>,
    /// Every [`Event::Behind`] reported: (peer, forgotten below).
    pub behind: Vec<(NodeId, Seq)>,
}

impl PaxosHost {
    fn check(&mut self, id: NodeId, seq: Seq, value: &Bytes) {
        match self.chosen.entry(seq) {
            MapEntry::Vacant(e) => {
                e.insert(value.clone());
            }
            MapEntry::Occupied(e) => {
                if e.get() != value {
                    panic!(
                        "SAFETY VIOLATION (seed {}): instance {seq} decided on {id} as {:?} but \
                         earlier as {:?}",
                        self.seed,
                        preview(value),
                        preview(e.get())
                    );
                }
            }
        }
    }
}

fn preview(value: &Bytes) -> String {
    let shown = &value[..value.len().min(16)];
    format!("{shown:?} ({} bytes)", value.len())
}

impl Host for PaxosHost {
    type Node = Paxos;

    fn boot(&mut self, boot: Boot) -> Paxos {
        let mut config = self.config.clone();
        config.me = boot.id;
        config.recovering = boot.wiped;
        let snapshot = boot.recovered.snapshot.as_ref().map(|s| &*s.data);
        let records = boot
            .recovered
            .records
            .iter()
            .map(|r| (r.kind, r.payload.as_slice()));
        Paxos::recover(config, boot.seed, snapshot, records)
            .unwrap_or_else(|e| panic!("seed {}: recovering {}: {e}", self.seed, boot.id))
    }

    fn observe(&mut self, id: NodeId, node: &Paxos, events: &[Event]) {
        for event in events {
            match event {
                Event::Decided { seq } => {
                    if let Fate::Decided(value) = node.status(*seq) {
                        self.check(id, *seq, &value);
                    }
                }
                Event::Behind { forgotten_below } => self.behind.push((id, *forgotten_below)),
            }
        }
    }

    fn booted(&mut self, id: NodeId, node: &Paxos) {
        let decided: Vec<(Seq, Bytes)> = node.decided().map(|(s, v)| (s, v.clone())).collect();
        for (seq, value) in decided {
            self.check(id, seq, &value);
        }
    }
}

/// A Paxos group on the simulator with the lab tester's helpers.
pub struct PaxosCluster {
    /// The simulator (for faults, crashes, counters).
    pub sim: Sim<PaxosHost>,
}

/// Virtual time `waitn` waits before giving up (the lab's ~30 s).
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// How often `waitn` checks.
pub const WAIT_POLL: Duration = Duration::from_millis(5);

impl PaxosCluster {
    /// `peers` peers with default configuration and a reliable network.
    pub fn new(seed: u64, peers: usize) -> PaxosCluster {
        PaxosCluster::with(seed, SimOptions::new(peers), |_| {})
    }

    /// A cluster with explicit simulator options and a hook to adjust the peer config.
    pub fn with(seed: u64, options: SimOptions, tune: impl FnOnce(&mut Config)) -> PaxosCluster {
        let mut config = Config::new(NodeId(0), options.nodes);
        tune(&mut config);
        let host = PaxosHost {
            seed,
            config,
            chosen: BTreeMap::new(),
            behind: Vec::new(),
        };
        PaxosCluster {
            sim: Sim::new(seed, options, host),
        }
    }

    /// Number of peers.
    pub fn peers(&self) -> usize {
        self.sim.len()
    }

    /// `start(seq, value)` on peer `i` (ignored if it is down).
    pub fn start(&mut self, i: usize, seq: u64, value: impl Into<Bytes>) {
        let value = value.into();
        self.sim
            .call(i, |p, now, out| p.start(now, Seq(seq), value, out));
    }

    /// `done(seq)` on peer `i`.
    pub fn done(&mut self, i: usize, seq: u64) {
        self.sim.call(i, |p, _, out| p.done(Seq(seq), out));
    }

    /// `status(seq)` on peer `i` (None if down).
    pub fn status(&self, i: usize, seq: u64) -> Option<Fate> {
        self.sim.node(i).map(|p| p.status(Seq(seq)))
    }

    /// `min()` on peer `i`.
    pub fn min(&self, i: usize) -> Option<u64> {
        self.sim.node(i).map(|p| p.min().0)
    }

    /// `max()` on peer `i` (`-1` for none, as in the lab).
    pub fn max(&self, i: usize) -> Option<i64> {
        self.sim.node(i).map(|p| p.max().map_or(-1, |s| s.0 as i64))
    }

    /// How many up peers have decided `seq`; panics if two decided values differ.
    pub fn ndecided(&self, seq: u64) -> usize {
        let mut count = 0;
        let mut seen: Option<Bytes> = None;
        for i in 0..self.peers() {
            if let Some(Fate::Decided(v)) = self.status(i, seq) {
                if let Some(s) = &seen {
                    assert_eq!(
                        s,
                        &v,
                        "seed {}: decided values differ for {seq}",
                        self.sim.seed()
                    );
                }
                seen = Some(v);
                count += 1;
            }
        }
        count
    }

    /// Runs until at least `n` peers decided `seq` (up to [`WAIT_LIMIT`]); returns whether
    /// they did.
    pub fn waitn(&mut self, seq: u64, n: usize) -> bool {
        self.sim
            .run_until(WAIT_LIMIT, WAIT_POLL, |sim| count_decided(sim, seq) >= n)
            && self.ndecided(seq) >= n
    }

    /// `waitn(seq, peers/2 + 1)`.
    pub fn waitmajority(&mut self, seq: u64) -> bool {
        let n = self.peers() / 2 + 1;
        self.waitn(seq, n)
    }

    /// Runs for `ms` milliseconds of virtual time.
    pub fn sleep_ms(&mut self, ms: u64) {
        self.sim.run_for(Duration::from_millis(ms));
    }

    /// Messages received by every peer so far (the lab's summed `rpcCount`).
    pub fn rpc_total(&self) -> u64 {
        self.sim.total_received()
    }

    /// Bytes retained in memory by every up peer.
    pub fn retained_total(&self) -> u64 {
        (0..self.peers()).map(|i| self.sim.retained_bytes(i)).sum()
    }
}

fn count_decided(sim: &Sim<PaxosHost>, seq: u64) -> usize {
    (0..sim.len())
        .filter(|&i| {
            matches!(
                sim.node(i).map(|p| p.status(Seq(seq))),
                Some(Fate::Decided(_))
            )
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "SAFETY VIOLATION (seed 9)")]
    fn the_agreement_checker_panics_with_the_seed_on_a_conflict() {
        let mut host = PaxosHost {
            seed: 9,
            config: Config::new(NodeId(0), 3),
            chosen: BTreeMap::new(),
            behind: Vec::new(),
        };
        host.check(NodeId(0), Seq(1), &Bytes::from_static(b"a"));
        host.check(NodeId(1), Seq(1), &Bytes::from_static(b"a"));
        host.check(NodeId(2), Seq(1), &Bytes::from_static(b"b"));
    }
}
