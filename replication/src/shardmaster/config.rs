//! Configurations and the rebalance rule: which replica group serves each shard.
//!
//! A [`Config`] is numbered ([`ConfigNum`]), lists the groups that exist ([`GroupId`] →
//! their servers) and assigns every shard to one of them. Once made, a configuration never
//! changes: the machine keeps each behind an `Arc` and makes the next one by copying.
//!
//! # Invariants (checked by [`Config::validate`] on everything decoded)
//! - `shards.len()` is the machine's shard count, the same in every configuration.
//! - With no groups, every shard is on [`GroupId::NONE`] (configuration 0 is that).
//!   With groups, every shard is on a group of the configuration.
//! - Group ids are never [`GroupId::NONE`].
//!
//! # The rebalance rule ([`rebalance`])
//! Given an assignment and a set of groups, it produces the assignment that
//! 1. is **even**: with `S` shards and `n` groups every group gets `⌊S/n⌋` or `⌈S/n⌉` shards
//!    (so max − min ≤ 1; with more groups than shards some get none);
//! 2. **moves the fewest shards** of all even assignments (see the proof at [`rebalance`]);
//! 3. is **deterministic**: a pure function of its arguments; groups are taken in sorted
//!    order and every tie is broken by the smaller group id, then the smaller shard id.
//!
//! The rule needs no history: Join and Leave both call it with the new group set, so a
//! Join from an even configuration never gives an existing group a shard, and a Leave
//! never takes one from a group that stays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kv_engine::kv::ShardId;
use serde::{Deserialize, Serialize};

/// A replica group's id. [`GroupId::NONE`] (0) is no group: the owner of every shard
/// while no group exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u64);

impl GroupId {
    /// No group (the lab's invalid gid 0).
    pub const NONE: GroupId = GroupId(0);
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// A configuration's number: 0 is the first, each change makes the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigNum(pub u64);

impl ConfigNum {
    /// The first configuration (no groups).
    pub const ZERO: ConfigNum = ConfigNum(0);

    /// The number after this one.
    pub fn next(self) -> ConfigNum {
        ConfigNum(self.0 + 1)
    }

    /// The position of this configuration in the list of all of them.
    pub fn index(self) -> usize {
        usize::try_from(self.0).expect("configuration numbers index memory")
    }
}

impl fmt::Display for ConfigNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Bytes an encoded group id or shard owner may take (a varint of a `u64`).
const VARINT_BYTES_MAX: usize = 10;

/// One configuration. See the module docs for its invariants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    num: ConfigNum,
    shards: Vec<GroupId>,
    groups: BTreeMap<GroupId, Vec<String>>,
}

impl Config {
    /// Configuration 0 of a machine with `shards` shards: no groups, every shard on
    /// [`GroupId::NONE`].
    pub fn initial(shards: u32) -> Config {
        Config {
            num: ConfigNum::ZERO,
            shards: vec![GroupId::NONE; shards as usize],
            groups: BTreeMap::new(),
        }
    }

    /// Its number.
    pub fn num(&self) -> ConfigNum {
        self.num
    }

    /// The owner of every shard, by shard id.
    pub fn shards(&self) -> &[GroupId] {
        &self.shards
    }

    /// The owner of `shard` ([`GroupId::NONE`] while there are no groups), or `None` for a
    /// shard out of range.
    pub fn owner(&self, shard: ShardId) -> Option<GroupId> {
        self.shards.get(shard.0 as usize).copied()
    }

    /// The groups and their servers, in group order.
    pub fn groups(&self) -> &BTreeMap<GroupId, Vec<String>> {
        &self.groups
    }

    /// The shards `group` owns, ascending.
    pub fn shards_of(&self, group: GroupId) -> Vec<ShardId> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, &owner)| owner == group)
            .map(|(shard, _)| ShardId(shard as u32))
            .collect()
    }

    /// How many shards each group owns (every group listed, owning none included).
    pub fn counts(&self) -> BTreeMap<GroupId, usize> {
        let mut counts: BTreeMap<GroupId, usize> = self.groups.keys().map(|&g| (g, 0)).collect();
        for owner in &self.shards {
            if let Some(count) = counts.get_mut(owner) {
                *count += 1;
            }
        }
        counts
    }

    /// True if every group owns `⌊S/n⌋` or `⌈S/n⌉` shards (max − min ≤ 1); trivially true
    /// without groups.
    pub fn is_balanced(&self) -> bool {
        let counts = self.counts();
        match (counts.values().min(), counts.values().max()) {
            (Some(min), Some(max)) => max - min <= 1,
            _ => true,
        }
    }

    /// An upper bound on the bytes this configuration encodes to (image budgets, memory
    /// accounting).
    pub fn encoded_bytes(&self) -> usize {
        let servers: usize = self
            .groups
            .values()
            .map(|servers| {
                VARINT_BYTES_MAX
                    + servers
                        .iter()
                        .map(|s| s.len() + VARINT_BYTES_MAX)
                        .sum::<usize>()
            })
            .sum();
        VARINT_BYTES_MAX * (3 + self.shards.len() + self.groups.len()) + servers
    }

    /// Checks the invariants of the module docs for a machine of `shards` shards.
    pub fn validate(&self, shards: u32) -> Result<(), String> {
        if self.shards.len() != shards as usize {
            return Err(format!(
                "configuration {} has {} shards, the machine {shards}",
                self.num,
                self.shards.len()
            ));
        }
        if self.groups.contains_key(&GroupId::NONE) {
            return Err(format!("configuration {} lists group 0", self.num));
        }
        let stray = self.shards.iter().enumerate().find(|(_, owner)| {
            if self.groups.is_empty() {
                **owner != GroupId::NONE
            } else {
                !self.groups.contains_key(owner)
            }
        });
        match stray {
            Some((shard, owner)) => Err(format!(
                "configuration {}: shard {shard} is on {owner}, not a group of it",
                self.num
            )),
            None => Ok(()),
        }
    }

    /// The next configuration: this one with `group` added (rebalanced). The caller checks
    /// that `group` is new and valid.
    pub(crate) fn with_group(&self, group: GroupId, servers: Vec<String>) -> Config {
        let mut groups = self.groups.clone();
        groups.insert(group, servers);
        self.successor(groups)
    }

    /// The next configuration: this one without `group` (rebalanced). The caller checks
    /// that `group` is present.
    pub(crate) fn without_group(&self, group: GroupId) -> Config {
        let mut groups = self.groups.clone();
        groups.remove(&group);
        self.successor(groups)
    }

    /// The next configuration: this one with `shard` on `group` and nothing else changed.
    /// The caller checks that the shard exists and `group` is a group of this one.
    pub(crate) fn with_move(&self, shard: ShardId, group: GroupId) -> Config {
        let mut next = Config {
            num: self.num.next(),
            shards: self.shards.clone(),
            groups: self.groups.clone(),
        };
        next.shards[shard.0 as usize] = group;
        next
    }

    fn successor(&self, groups: BTreeMap<GroupId, Vec<String>>) -> Config {
        let mut shards = self.shards.clone();
        let members: BTreeSet<GroupId> = groups.keys().copied().collect();
        rebalance(&mut shards, &members);
        Config {
            num: self.num.next(),
            shards,
            groups,
        }
    }
}

/// Reassigns `shards` (the owner of each shard) to `groups`: evenly, moving as few shards
/// as any even assignment can, deterministically (see the module docs). Without groups
/// every shard goes to [`GroupId::NONE`].
///
/// How: with `S` shards and `n` groups, `r = S mod n` groups get `⌈S/n⌉` shards and the
/// rest `⌊S/n⌋` — the only even shapes. The larger quota goes to the groups that own the
/// most shards now (ties: smaller gid). A group over its quota keeps its smallest shards
/// and releases the rest; the released shards and those of no current group (*orphans*)
/// go, smallest first, to the groups under their quota, in gid order.
///
/// Why this moves the fewest: every orphan must move, and a group owning `c` shards with
/// quota `t` must lose at least `c − t`, so any even assignment with quotas `t` moves at
/// least `orphans + Σ max(0, c − t)` shards — exactly what this one moves. Giving the
/// larger quotas to the largest owners minimises that sum over all quota choices (moving a
/// larger quota from a bigger owner to a smaller one never lowers any term).
pub fn rebalance(shards: &mut [GroupId], groups: &BTreeSet<GroupId>) {
    if groups.is_empty() {
        shards.fill(GroupId::NONE);
        return;
    }
    let mut owned: BTreeMap<GroupId, Vec<usize>> = groups.iter().map(|&g| (g, vec![])).collect();
    let mut orphans = Vec::new();
    for (shard, owner) in shards.iter().enumerate() {
        match owned.get_mut(owner) {
            Some(list) => list.push(shard),
            None => orphans.push(shard),
        }
    }
    let quotas = quotas(shards.len(), &owned);
    for (group, list) in owned.iter_mut() {
        let quota = quotas[group];
        if list.len() > quota {
            orphans.extend(list.drain(quota..));
        }
    }
    orphans.sort_unstable();
    let mut orphans = orphans.into_iter();
    for (group, list) in owned.iter() {
        for _ in list.len()..quotas[group] {
            let shard = orphans.next().expect("quotas add up to the shard count");
            shards[shard] = *group;
        }
    }
    debug_assert!(orphans.next().is_none(), "every orphan found a group");
}

/// Each group's quota: `⌈S/n⌉` for the `S mod n` groups owning the most shards (ties:
/// smaller gid), `⌊S/n⌋` for the rest.
fn quotas(shards: usize, owned: &BTreeMap<GroupId, Vec<usize>>) -> BTreeMap<GroupId, usize> {
    let n = owned.len();
    let (base, larger) = (shards / n, shards % n);
    let mut by_size: Vec<(usize, GroupId)> = owned.iter().map(|(&g, l)| (l.len(), g)).collect();
    by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    by_size
        .into_iter()
        .enumerate()
        .map(|(rank, (_, g))| (g, base + usize::from(rank < larger)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<GroupId> {
        ids.iter().map(|&g| GroupId(g)).collect()
    }

    fn gids(ids: &[u64]) -> Vec<GroupId> {
        ids.iter().map(|&g| GroupId(g)).collect()
    }

    #[test]
    fn first_join_takes_every_shard() {
        let mut shards = vec![GroupId::NONE; 10];
        rebalance(&mut shards, &set(&[7]));
        assert_eq!(shards, vec![GroupId(7); 10]);
    }

    #[test]
    fn a_join_takes_from_the_largest_owners_smallest_shards_stay() {
        // 10 shards on 3 groups: 4, 3, 3. A fourth group gets 2: one from the group with 4
        // (its largest shard) and one from the first group with 3 that loses its quota.
        let mut shards = gids(&[1, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        rebalance(&mut shards, &set(&[1, 2, 3, 4]));
        assert_eq!(shards, gids(&[1, 1, 1, 4, 2, 2, 2, 3, 3, 4]));
    }

    #[test]
    fn a_leave_hands_its_shards_smallest_first_to_groups_under_quota_in_gid_order() {
        // The larger quota goes to the first of the equal owners (g1), so the leave undoes
        // the join above exactly.
        let mut shards = gids(&[1, 1, 1, 4, 2, 2, 2, 3, 3, 4]);
        rebalance(&mut shards, &set(&[1, 2, 3]));
        assert_eq!(shards, gids(&[1, 1, 1, 1, 2, 2, 2, 3, 3, 3]));
    }

    #[test]
    fn more_groups_than_shards_gives_one_each_to_the_current_owners() {
        let mut shards = gids(&[1, 2, 3]);
        rebalance(&mut shards, &set(&[1, 2, 3, 4, 5]));
        assert_eq!(shards, gids(&[1, 2, 3]));
    }

    #[test]
    fn no_groups_puts_every_shard_on_none() {
        let mut shards = gids(&[1, 2, 3]);
        rebalance(&mut shards, &BTreeSet::new());
        assert_eq!(shards, vec![GroupId::NONE; 3]);
    }

    #[test]
    fn validate_refuses_a_shard_on_a_missing_group_and_group_zero() {
        let mut config = Config::initial(4).with_group(GroupId(1), vec!["a".into()]);
        assert_eq!(config.validate(4), Ok(()));
        assert!(config.validate(5).is_err());
        config.shards[2] = GroupId(9);
        assert!(config.validate(4).unwrap_err().contains("shard 2"));
        let mut zero = Config::initial(4);
        zero.groups.insert(GroupId::NONE, vec![]);
        assert!(zero.validate(4).is_err());
        let mut stray = Config::initial(4);
        stray.shards[0] = GroupId(1);
        assert!(stray.validate(4).is_err());
    }
}
