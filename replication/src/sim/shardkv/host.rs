//! The sharded world's host: boots its nodes from their disks and checks, after every
//! step, the invariants the parent module lists.

use super::*;

/// Boots the world's nodes and checks its invariants (see the module docs).
pub struct WorldHost {
    /// The run's seed.
    pub seed: u64,
    /// How every node is built, and which nodes are which.
    pub blueprint: Blueprint,
    /// Events not yet taken by the harness.
    pub events: Vec<(NodeId, ClusterEvent)>,
    /// Per cohort (0: masters, 1 + g: group g) and apply cursor: the digest first seen.
    digests: BTreeMap<(usize, Seq), (NodeId, u64)>,
    /// Which group served each shard under each configuration.
    serving: BTreeMap<(ConfigNum, ShardId), GroupId>,
}

impl WorldHost {
    /// A host for nodes built by `blueprint`, nothing seen yet.
    pub fn new(seed: u64, blueprint: Blueprint) -> WorldHost {
        WorldHost {
            seed,
            blueprint,
            events: Vec::new(),
            digests: BTreeMap::new(),
            serving: BTreeMap::new(),
        }
    }

    fn cohort(&self, id: NodeId) -> usize {
        self.blueprint.layout.group_of(id).map_or(0, |g| g + 1)
    }

    fn check(&mut self, id: NodeId, node: &ClusterNode) {
        let (next, digest) = node.applied_digest();
        let cohort = self.cohort(id);
        match self.digests.get(&(cohort, next)) {
            None => {
                self.digests.insert((cohort, next), (id, digest));
            }
            Some(&(first, expected)) => assert_eq!(
                expected, digest,
                "SAFETY VIOLATION (seed {}): {id} applied a different log than {first} up to {next}",
                self.seed
            ),
        }
        if let Some(kv) = node.kv() {
            let machine = kv.machine();
            let config = machine.config().num();
            for shard in machine.serving() {
                let group = machine.group();
                let first = *self.serving.entry((config, shard)).or_insert(group);
                assert_eq!(
                    first, group,
                    "SAFETY VIOLATION (seed {}): shard {shard} served by {first} and {group} under {config}",
                    self.seed
                );
            }
        }
    }
}

impl Host for WorldHost {
    type Node = ClusterNode;

    fn boot(&mut self, boot: Boot) -> ClusterNode {
        let seed = self.seed;
        self.blueprint
            .recover(boot.id, boot.recovered, boot.wiped, boot.seed, boot.now)
            .unwrap_or_else(|e| panic!("seed {seed}: recovering {}: {e}", boot.id))
    }

    fn observe(&mut self, id: NodeId, node: &ClusterNode, events: &[ClusterEvent]) {
        self.check(id, node);
        for event in events {
            let halted = match event {
                ClusterEvent::Master(Event::Halted { reason })
                | ClusterEvent::Kv(Event::Halted { reason }) => Some(reason),
                _ => None,
            };
            if let Some(reason) = halted {
                panic!("seed {}: {id} halted: {reason}", self.seed);
            }
        }
        self.events.extend(events.iter().map(|e| (id, e.clone())));
    }

    fn booted(&mut self, id: NodeId, node: &ClusterNode) {
        self.check(id, node);
    }
}
