//! Replicas of the library ([`Replica`], over any [`StateMachine`]) on the simulator: the
//! [`ReplicaHost`] that boots replicas from their disks and checks,
//! after every step, that replicas which applied the same number of instances applied the
//! same values (equal hash chains), and that no replica halts.

use std::collections::BTreeMap;

use super::{Boot, Host};
use crate::paxos::{Lease, Seq};
use crate::replica::{Event, Replica, ReplicaConfig, StateMachine};
use crate::types::NodeId;

/// Boots replicas and checks that they apply the same log.
pub struct ReplicaHost<M: StateMachine> {
    /// The run's seed (printed on violations).
    pub seed: u64,
    /// Replica configuration template (`me` is set per boot).
    pub config: ReplicaConfig,
    /// The machine of a group that applied nothing.
    pub initial: M,
    /// Events from every replica, in order, not yet taken by the harness.
    pub events: Vec<(NodeId, Event<M::Reply>)>,
    /// Digest of the applied log per apply cursor, as first reported by any replica.
    digests: BTreeMap<Seq, (NodeId, u64)>,
    /// Per node (by index), the apply cursor it was last checked at (unchanged: nothing
    /// to check).
    checked: Vec<Option<(Seq, u64)>>,
    /// Each node's lease settings (by index), where nodes differ (as while a change of
    /// `[read_lease]` rolls through a cluster); the template's for nodes not listed.
    pub node_leases: Vec<Option<Lease>>,
}

impl<M: StateMachine> ReplicaHost<M> {
    /// A host for replicas configured like `config`.
    pub fn new(seed: u64, config: ReplicaConfig, initial: M) -> ReplicaHost<M> {
        ReplicaHost {
            seed,
            config,
            initial,
            events: Vec::new(),
            digests: BTreeMap::new(),
            checked: Vec::new(),
            node_leases: Vec::new(),
        }
    }

    fn check(&mut self, id: NodeId, node: &Replica<M>) {
        let (next, digest) = node.applied_digest();
        let i = id.index();
        if self.checked.len() <= i {
            self.checked.resize(i + 1, None);
        }
        if self.checked[i].replace((next, digest)) == Some((next, digest)) {
            return;
        }
        match self.digests.get(&next) {
            None => {
                self.digests.insert(next, (id, digest));
            }
            Some(&(first, expected)) => assert_eq!(
                expected, digest,
                "SAFETY VIOLATION (seed {}): {id} applied a different log than {first} up to {next}",
                self.seed
            ),
        }
    }
}

impl<M: StateMachine> Host for ReplicaHost<M> {
    type Node = Replica<M>;

    fn boot(&mut self, boot: Boot) -> Replica<M> {
        let mut config = self.config.clone();
        config.me = boot.id;
        config.paxos.me = boot.id;
        if let Some(lease) = self.node_leases.get(boot.id.index()) {
            config.paxos.lease = *lease;
        }
        let initial = self.initial.clone();
        Replica::recover(
            config,
            initial,
            boot.recovered,
            boot.wiped,
            boot.seed,
            boot.now,
        )
        .unwrap_or_else(|e| panic!("seed {}: recovering {}: {e}", self.seed, boot.id))
    }

    fn observe(&mut self, id: NodeId, node: &Replica<M>, events: &[Event<M::Reply>]) {
        self.check(id, node);
        for event in events {
            if let Event::Halted { reason } = event {
                panic!("seed {}: {id} halted: {reason}", self.seed);
            }
        }
        self.events.extend(events.iter().map(|e| (id, e.clone())));
    }

    fn booted(&mut self, id: NodeId, node: &Replica<M>) {
        self.check(id, node);
    }
}
