//! The shard master's sequential specification for the generic checker ([`super::model`]):
//! the state is the list of configurations, Join/Leave/Move answer the configuration
//! number they made (or the latest, if they changed nothing), and Query(n) / Query(latest)
//! answer whole configurations.
//!
//! The model runs the machine's own `execute` ([`ShardMaster`]), so this check is about
//! order — every replica, every answer, one sequence consistent with real time — not
//! about the rebalance rule, whose evenness and minimal movement the property tests check
//! against independent bounds. Because every answer names a configuration number, a
//! history's order is almost fully pinned by its outputs: a stale Query, a lost or
//! doubled change, or two replicas that made different configurations under one number
//! all leave some answer with no place.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::model::Model;
use super::Shaped;
use crate::shardmaster::{Command, Reply, ShardMaster};

impl Shaped<Reply> for Command {
    fn fits(&self, output: &Reply) -> bool {
        match (self, output) {
            (_, Reply::Stale { .. }) => false,
            (Command::Query { .. }, reply) => matches!(reply, Reply::Config(_)),
            (_, reply) => !matches!(reply, Reply::Config(_)),
        }
    }
}

/// The model's state: the configurations, plus a hash chain over them so that the
/// checker's memo hashes a state in O(1) (equality still compares every configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configs<const SHARDS: u32> {
    machine: ShardMaster,
    chain: u64,
}

impl<const SHARDS: u32> Hash for Configs<SHARDS> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.machine.latest().num().hash(state);
        self.chain.hash(state);
    }
}

/// The shard master of `SHARDS` shards as a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardMasterModel<const SHARDS: u32>;

impl<const SHARDS: u32> Model for ShardMasterModel<SHARDS> {
    type Input = Command;
    type Output = Reply;
    type State = Configs<SHARDS>;

    fn name(&self) -> &str {
        "shard master"
    }

    fn init(&self) -> Configs<SHARDS> {
        Configs {
            machine: ShardMaster::new(SHARDS),
            chain: 0,
        }
    }

    fn step(
        &self,
        state: &Configs<SHARDS>,
        input: &Command,
        output: Option<&Reply>,
    ) -> Option<Configs<SHARDS>> {
        let mut next = state.clone();
        let reply = next.machine.execute(input);
        if output.is_some_and(|o| *o != reply) {
            return None;
        }
        if let Reply::Changed(_) = reply {
            // A fixed-key hasher: the chain is the same in every run.
            let mut hasher = DefaultHasher::new();
            next.chain.hash(&mut hasher);
            next.machine.latest().hash(&mut hasher);
            next.chain = hasher.finish();
        }
        Some(next)
    }

    fn is_read(&self, input: &Command) -> bool {
        matches!(input, Command::Query { .. })
    }

    fn describe(&self, state: &Configs<SHARDS>) -> String {
        let latest = state.machine.latest();
        format!(
            "latest configuration {} (shards per group {:?})",
            latest.num(),
            latest.counts()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::linearizability::{model, Budget, CheckResult, History};
    use crate::shardmaster::{ConfigNum, GroupId};

    fn join(g: u64) -> Command {
        Command::Join {
            group: GroupId(g),
            servers: vec![format!("s{g}")],
        }
    }

    fn latest() -> Command {
        Command::Query { num: None }
    }

    /// What the machine would answer after `commands`, for building histories.
    fn config_after(commands: &[Command]) -> Reply {
        let mut m = ShardMaster::default();
        for c in commands {
            m.execute(c);
        }
        Reply::Config(Arc::clone(m.latest()))
    }

    fn verdict(history: &History<Command, Reply>) -> CheckResult {
        model::check(&ShardMasterModel::<10>, history, Budget::DEFAULT)
    }

    #[test]
    fn concurrent_joins_order_by_their_config_numbers() {
        let h = History::new();
        let a = h.invoke(1, join(1), 0);
        let b = h.invoke(2, join(2), 0);
        h.complete(b, Reply::Changed(ConfigNum(1)), 10);
        h.complete(a, Reply::Changed(ConfigNum(2)), 10);
        let q = h.invoke(3, latest(), 11);
        h.complete(q, config_after(&[join(2), join(1)]), 12);
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn a_query_after_a_join_returned_must_see_it() {
        let h = History::new();
        let a = h.invoke(1, join(1), 0);
        h.complete(a, Reply::Changed(ConfigNum(1)), 10);
        let q = h.invoke(2, latest(), 11);
        h.complete(q, config_after(&[]), 12);
        assert!(!verdict(&h).is_ok());
    }

    #[test]
    fn a_query_may_miss_a_join_it_overlaps() {
        let h = History::new();
        let a = h.invoke(1, join(1), 0);
        let q = h.invoke(2, latest(), 1);
        h.complete(q, config_after(&[]), 2);
        h.complete(a, Reply::Changed(ConfigNum(1)), 10);
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    fn a_config_no_order_of_the_writes_makes_is_refused() {
        // Join 1 then Join 2 gives config 2 with both; answering it with the shards of the
        // other order is not linearizable.
        let h = History::new();
        let a = h.invoke(1, join(1), 0);
        h.complete(a, Reply::Changed(ConfigNum(1)), 5);
        let b = h.invoke(1, join(2), 6);
        h.complete(b, Reply::Changed(ConfigNum(2)), 10);
        let q = h.invoke(2, latest(), 11);
        h.complete(q, config_after(&[join(2), join(1)]), 12);
        assert!(!verdict(&h).is_ok());
    }

    #[test]
    fn an_abandoned_join_may_have_happened_or_not() {
        let h = History::new();
        let lost = h.invoke(1, join(1), 0);
        h.give_up(lost);
        let b = h.invoke(2, join(2), 5);
        h.complete(b, Reply::Changed(ConfigNum(2)), 10);
        let q = h.invoke(3, latest(), 11);
        h.complete(q, config_after(&[join(1), join(2)]), 12);
        assert_eq!(verdict(&h), CheckResult::Ok);
    }

    #[test]
    #[should_panic(expected = "cannot have output")]
    fn a_query_answered_with_a_number_is_misuse() {
        let h: History<Command, Reply> = History::new();
        let q = h.invoke(1, latest(), 0);
        h.complete(q, Reply::Changed(ConfigNum(1)), 1);
    }
}
