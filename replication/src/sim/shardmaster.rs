//! The shard master on the simulator: [`ShardMasterCluster`], the lab-style harness
//! ([`Cluster`]) over [`ShardMaster`] replicas, with the shard master's client calls
//! (Join, Leave, Move, Query) and the lab's `check`.
//!
//! Histories record the commands and replies as they are ([`Command`], [`Reply`]) and are
//! checked against the shard master's model ([`ShardMasterModel`]): every Join, Leave and
//! Move answers the configuration number it made, every Query a whole configuration, so a
//! stale Query, a lost or doubled change, or diverging configurations have no place in
//! any linearization.
//!
//! Failure model: as the harness's — a refused command in a helper that expects success,
//! a reply no clerk can get, or a failed `check` panics with the seed.

use std::sync::Arc;

use kv_engine::kv::ShardId;

pub use super::group::{Cluster, Recorded, OP_LIMIT};
use super::replica::ReplicaHost;
use crate::linearizability::model;
use crate::linearizability::shardmaster::ShardMasterModel;
use crate::linearizability::{Budget, CheckResult, History};
use crate::shardmaster::{Command, Config, ConfigNum, GroupId, Reply, ShardMaster, LAB_SHARDS};

/// The host of the shard master's replicas.
pub type ShardMasterHost = ReplicaHost<ShardMaster>;
/// The lab's shard master (10 shards) on the simulator with lab-style clerks.
pub type ShardMasterCluster = Cluster<ShardMaster>;
/// What a shard-master client script does next.
pub type Action = super::group::Action<Command>;
/// Concurrent shard-master client scripts.
pub type Scripts = super::group::Scripts<ShardMaster>;
pub use super::group::Script;

impl Recorded for ShardMaster {
    type Input = Command;
    type Output = Reply;

    fn inputs(command: &Command) -> Vec<Command> {
        vec![command.clone()]
    }

    fn outputs(_command: &Command, reply: &Reply) -> Option<Vec<Reply>> {
        match reply {
            Reply::Stale { .. } => None,
            other => Some(vec![other.clone()]),
        }
    }

    fn check(history: &History<Command, Reply>) -> CheckResult {
        model::check(&ShardMasterModel::<LAB_SHARDS>, history, Budget::DEFAULT)
    }
}

impl Cluster<ShardMaster> {
    /// Join through clerk `c`; the configuration it made (or the latest, for a group
    /// already present). Panics if refused or unanswered within [`OP_LIMIT`].
    pub fn join(&mut self, c: usize, group: u64, servers: &[&str]) -> ConfigNum {
        self.change(c, join(group, servers))
    }

    /// Leave through clerk `c` (as [`Cluster::join`]).
    pub fn leave(&mut self, c: usize, group: u64) -> ConfigNum {
        self.change(c, leave(group))
    }

    /// Move through clerk `c` (as [`Cluster::join`]).
    pub fn move_shard(&mut self, c: usize, shard: u32, group: u64) -> ConfigNum {
        self.change(c, shard_move(shard, group))
    }

    /// Query through clerk `c`: configuration `num`, or the latest for `None`.
    pub fn query(&mut self, c: usize, num: Option<ConfigNum>) -> Arc<Config> {
        match self.must(c, Command::Query { num }) {
            Reply::Config(config) => config,
            other => panic!("seed {}: Query answered {other:?}", self.sim.seed()),
        }
    }

    /// The lab's `check`: the latest configuration (queried through clerk `c`) holds
    /// exactly `groups`, puts every shard on one of them, and is balanced.
    pub fn check(&mut self, c: usize, groups: &[u64]) {
        let config = self.query(c, None);
        if let Err(problem) = check_config(&config, groups) {
            panic!("seed {}: {problem}: {config:?}", self.sim.seed());
        }
    }

    fn change(&mut self, c: usize, command: Command) -> ConfigNum {
        match self.must(c, command.clone()) {
            Reply::Changed(num) | Reply::Unchanged(num) => num,
            other => panic!("seed {}: {command:?} answered {other:?}", self.sim.seed()),
        }
    }
}

/// The lab's `check` on one configuration: exactly `groups` are present; with any group,
/// every shard is on one of them; and no group owns more than one shard more than another.
pub fn check_config(config: &Config, groups: &[u64]) -> Result<(), String> {
    let wanted: Vec<GroupId> = groups.iter().map(|&g| GroupId(g)).collect();
    let present: Vec<GroupId> = config.groups().keys().copied().collect();
    let mut sorted = wanted.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if present != sorted {
        return Err(format!("wanted groups {sorted:?}, found {present:?}"));
    }
    if !wanted.is_empty() {
        if let Some((shard, owner)) = config
            .shards()
            .iter()
            .enumerate()
            .find(|(_, owner)| !config.groups().contains_key(owner))
        {
            return Err(format!("shard {shard} is on {owner}, not a group"));
        }
    }
    let counts = config.counts();
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    if max > min + 1 {
        return Err(format!("max {max} too much larger than min {min}"));
    }
    Ok(())
}

/// A Join command.
pub fn join(group: u64, servers: &[&str]) -> Command {
    Command::Join {
        group: GroupId(group),
        servers: servers.iter().map(|s| s.to_string()).collect(),
    }
}

/// A Leave command.
pub fn leave(group: u64) -> Command {
    Command::Leave {
        group: GroupId(group),
    }
}

/// A Move command.
pub fn shard_move(shard: u32, group: u64) -> Command {
    Command::Move {
        shard: ShardId(shard),
        group: GroupId(group),
    }
}

/// A Query command (`None`: the latest, the lab's -1).
pub fn query(num: Option<u64>) -> Command {
    Command::Query {
        num: num.map(ConfigNum),
    }
}
