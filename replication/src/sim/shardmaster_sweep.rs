//! The shard-master workload of the group sweep ([`super::group_sweep`]): concurrent
//! clerks doing Joins, Leaves and Moves of a small shared pool of groups (so they collide:
//! repeated Joins and Leaves, Moves to groups that just left) and Queries of the latest and
//! of numbered configurations, under the sweep's faults. At the end a fresh clerk queries
//! the latest configuration and a few numbered ones, and the history is checked against
//! the shard master's model.
//!
//! What the end checks beyond linearizability: the latest configuration is valid
//! ([`Config::validate`]), and balanced unless a Move came after the last Join or Leave that
//! changed it (a Move is not rebalanced).

use std::time::Duration;

use super::group_sweep::{self, Workload};
pub use super::group_sweep::{Failure, Outcome};
use super::shardmaster::{
    join, leave, query, shard_move, Action, Script, Scripts, ShardMasterCluster,
};
use crate::rng::Rng;
use crate::shardmaster::{Command, Config, ConfigNum, Reply, ShardMaster, LAB_SHARDS};

/// Groups the clients join and leave: few, so their commands collide.
const GROUP_POOL: u64 = 8;
/// Numbered configurations the final reader queries besides the latest.
const FINAL_HISTORICAL_QUERIES: u64 = 4;
/// Mixed into the seed for this workload's draws.
const SALT: u64 = 0x5348_4152_444D_5354;

/// Runs one seed; `Ok(trace hash)` if every check passed, else the failure report.
pub fn run_seed(seed: u64) -> Result<u64, String> {
    run(seed, 0)
        .map(|o| o.trace_hash)
        .map_err(|f| f.to_string())
}

/// Runs one seed, keeping the last `trace_lines` trace lines for a failure report.
pub fn run(seed: u64, trace_lines: usize) -> Result<Outcome, Failure> {
    group_sweep::run(seed, trace_lines, SALT, Configs, |_| {})
}

/// The shard-master workload.
struct Configs;

impl Workload<ShardMaster> for Configs {
    const NAME: &'static str = "shardmaster";

    fn clients(&mut self, c: &mut ShardMasterCluster, rng: &mut Rng) -> Scripts {
        let mut scripts = Scripts::new();
        for _ in 0..rng.range(2, 8) {
            let servers = group_sweep::client_servers(c.replicas(), rng);
            let clerk = c.clerk(&servers);
            scripts.add(RandomClient {
                clerk,
                rng: Rng::new(rng.next_u64()),
                pause: false,
                latest: ConfigNum::ZERO,
            });
        }
        scripts
    }

    fn final_reads(&mut self, c: &mut ShardMasterCluster) {
        let reader = c.clerk_all(0);
        let latest = c.query(reader, None);
        let seed = c.sim.seed();
        latest
            .validate(LAB_SHARDS)
            .unwrap_or_else(|e| panic!("seed {seed}: the final configuration: {e}"));
        if !moved_since_rebalance(c, &latest) {
            assert!(
                latest.is_balanced(),
                "seed {seed}: the final configuration is not balanced: {latest:?}"
            );
        }
        for _ in 0..FINAL_HISTORICAL_QUERIES {
            let num = ConfigNum(c.rng().below(latest.num().0 + 1));
            let old = c.query(reader, Some(num));
            assert_eq!(old.num(), num, "seed {seed}: Query({num}) answered another");
        }
    }
}

/// True if some configuration made by a Move came after the last one a Join or Leave
/// made, up to `latest`: read off the completed history (a Move's reply names the
/// configuration it made).
fn moved_since_rebalance(c: &ShardMasterCluster, latest: &Config) -> bool {
    let mut last_rebalance = ConfigNum::ZERO;
    let mut last_move = None;
    for operation in c.history.operations() {
        let crate::linearizability::Outcome::Returned {
            output: Reply::Changed(num),
            ..
        } = operation.outcome
        else {
            // A change whose outcome is unknown may have made any configuration: assume
            // the worst.
            if !matches!(operation.input, Command::Query { .. })
                && matches!(
                    operation.outcome,
                    crate::linearizability::Outcome::Indeterminate
                )
            {
                return true;
            }
            continue;
        };
        match operation.input {
            Command::Move { .. } => last_move = last_move.max(Some(num)),
            _ => last_rebalance = last_rebalance.max(num),
        }
    }
    debug_assert!(last_rebalance <= latest.num());
    last_move.is_some_and(|m| m > last_rebalance)
}

/// A client issuing random commands: a quarter Joins, a fifth Leaves, some Moves, and
/// Queries of the latest and of numbered configurations (up to a little beyond the latest
/// it has seen).
struct RandomClient {
    clerk: usize,
    rng: Rng,
    pause: bool,
    latest: ConfigNum,
}

impl Script<ShardMasterCluster> for RandomClient {
    fn next(&mut self, _c: &mut ShardMasterCluster, last: Option<Reply>) -> Action {
        match last {
            Some(Reply::Changed(num) | Reply::Unchanged(num)) => self.latest = self.latest.max(num),
            Some(Reply::Config(config)) => self.latest = self.latest.max(config.num()),
            _ => {}
        }
        if self.pause && self.rng.chance(0.5) {
            self.pause = false;
            return Action::Sleep(Duration::from_millis(self.rng.below(30)));
        }
        self.pause = true;
        let group = 1 + self.rng.below(GROUP_POOL);
        let op = match self.rng.below(100) {
            0..=24 => join(group, &[&format!("{group}a"), &format!("{group}b")]),
            25..=44 => leave(group),
            45..=59 => {
                // Now and then a shard out of range (refused).
                let shard = self.rng.below(u64::from(LAB_SHARDS) + 1) as u32;
                shard_move(shard, group)
            }
            60..=89 => query(None),
            _ => query(Some(self.rng.below(self.latest.0 + 3))),
        };
        Action::Run {
            clerk: self.clerk,
            op,
        }
    }
}
