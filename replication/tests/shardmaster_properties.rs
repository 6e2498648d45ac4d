//! Properties of the shard master over random command sequences (proptest): balance after
//! every Join and Leave, the fewest shards moved (checked against an independent lower
//! bound, and against brute force on small cases), the lab's minimal-transfer rules,
//! Move's exact assignment, determinism (byte-identical images on two machines, one of them
//! rebuilt from its image along the way), old configurations never changing, and image
//! round trips at any piece budget. Shard counts vary (the machine's count is a const
//! parameter, so a few are instantiated).

use std::collections::BTreeSet;
use std::sync::Arc;

use kv_engine::kv::ShardId;
use kv_replication::replica::StateMachine;
use kv_replication::shardmaster::machine::from_pieces;
use kv_replication::shardmaster::{
    rebalance, Command, Config, ConfigNum, GroupId, Reply, ShardMaster,
};
use proptest::prelude::*;

const GROUP_IDS: u64 = 12;

fn command(shards: u32) -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (1..=GROUP_IDS, 0..3usize).prop_map(|(g, n)| Command::Join {
            group: GroupId(g),
            servers: (0..n).map(|i| format!("{g}-{i}")).collect(),
        }),
        3 => (0..=GROUP_IDS).prop_map(|g| Command::Leave { group: GroupId(g) }),
        2 => (0..=shards, 0..=GROUP_IDS).prop_map(|(s, g)| Command::Move {
            shard: ShardId(s),
            group: GroupId(g),
        }),
        1 => proptest::option::of(0..40u64).prop_map(|n| Command::Query {
            num: n.map(ConfigNum),
        }),
    ]
}

fn commands(shards: u32) -> impl Strategy<Value = Vec<Command>> {
    proptest::collection::vec(command(shards), 0..80)
}

/// Shards whose owner differs between `a` and `b`.
fn moved(a: &Config, b: &Config) -> usize {
    a.shards()
        .iter()
        .zip(b.shards())
        .filter(|(x, y)| x != y)
        .count()
}

/// The fewest shards any even assignment of `before`'s shards to `groups` must move: every
/// shard of no group moves, and with the larger quotas on the largest owners each group
/// over its quota loses the excess. Computed from counts alone, independently of how
/// `rebalance` picks shards.
fn lower_bound(before: &[GroupId], groups: &BTreeSet<GroupId>) -> usize {
    if groups.is_empty() {
        return before.iter().filter(|g| **g != GroupId::NONE).count();
    }
    let mut counts: Vec<usize> = groups
        .iter()
        .map(|g| before.iter().filter(|o| *o == g).count())
        .collect();
    let orphans = before.len() - counts.iter().sum::<usize>();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let (base, larger) = (before.len() / groups.len(), before.len() % groups.len());
    let excess: usize = counts
        .iter()
        .enumerate()
        .map(|(rank, &c)| c.saturating_sub(base + usize::from(rank < larger)))
        .sum();
    orphans + excess
}

fn is_even(shards: &[GroupId], groups: &BTreeSet<GroupId>) -> bool {
    let counts: Vec<usize> = groups
        .iter()
        .map(|g| shards.iter().filter(|o| *o == g).count())
        .collect();
    let owned: usize = counts.iter().sum();
    owned == shards.len()
        && counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// Runs `commands` on a fresh machine of `SHARDS` shards, checking every property after
/// every command.
fn check_sequence<const SHARDS: u32>(commands: &[Command]) -> Result<(), TestCaseError> {
    let mut machine = ShardMaster::new(SHARDS);
    let mut twin = ShardMaster::new(SHARDS);
    let mut seen: Vec<Arc<Config>> = vec![machine.latest().clone()];
    for (step, command) in commands.iter().enumerate() {
        let before = machine.latest().clone();
        let reply = machine.execute(command);
        let after = machine.latest().clone();
        match (&reply, command) {
            (Reply::Changed(num), _) => {
                prop_assert_eq!(*num, before.num().next());
                prop_assert_eq!(after.num(), *num);
                prop_assert_eq!(after.validate(SHARDS), Ok(()));
            }
            (Reply::Config(config), Command::Query { num }) => {
                let wanted = match num {
                    Some(n) if n.0 <= before.num().0 => &seen[n.index()],
                    _ => &before,
                };
                prop_assert_eq!(config.as_ref(), wanted.as_ref());
            }
            _ => prop_assert!(
                Arc::ptr_eq(&before, &after),
                "{:?} changed the latest",
                reply
            ),
        }
        match (command, &reply) {
            (Command::Join { group, servers }, Reply::Changed(_)) => {
                prop_assert!(after.is_balanced(), "unbalanced after join: {:?}", after);
                prop_assert_eq!(after.groups().get(group), Some(servers));
                let groups: BTreeSet<GroupId> = after.groups().keys().copied().collect();
                prop_assert_eq!(
                    moved(&before, &after),
                    lower_bound(before.shards(), &groups)
                );
                if before.is_balanced() && !before.groups().is_empty() {
                    // The lab's check: no group that was there gains a shard.
                    for (shard, owner) in after.shards().iter().enumerate() {
                        prop_assert!(
                            owner == group || before.shards()[shard] == *owner,
                            "join gave shard {} to old group {}",
                            shard,
                            owner
                        );
                    }
                }
            }
            (Command::Join { group, .. }, Reply::Unchanged(_)) => {
                prop_assert!(before.groups().contains_key(group));
            }
            (Command::Leave { group }, Reply::Changed(_)) => {
                prop_assert!(after.is_balanced(), "unbalanced after leave: {:?}", after);
                prop_assert!(!after.groups().contains_key(group));
                let groups: BTreeSet<GroupId> = after.groups().keys().copied().collect();
                prop_assert_eq!(
                    moved(&before, &after),
                    lower_bound(before.shards(), &groups)
                );
                if before.is_balanced() {
                    // The lab's check: no group that stays loses a shard.
                    for (shard, owner) in before.shards().iter().enumerate() {
                        prop_assert!(
                            owner == group || after.shards()[shard] == *owner,
                            "leave took shard {} from {}",
                            shard,
                            owner
                        );
                    }
                }
            }
            (Command::Leave { group }, Reply::Unchanged(_)) => {
                prop_assert!(!before.groups().contains_key(group));
            }
            (Command::Move { shard, group }, Reply::Changed(_)) => {
                prop_assert_eq!(after.owner(*shard), Some(*group));
                prop_assert_eq!(moved(&before, &after), 1);
                prop_assert_eq!(after.groups(), before.groups());
            }
            _ => {}
        }
        if let Reply::Changed(_) = reply {
            seen.push(after.clone());
        }
        // Old configurations never change.
        prop_assert_eq!(machine.configs().count(), seen.len());
        for (config, old) in machine.configs().zip(&seen) {
            prop_assert_eq!(config.as_ref(), old.as_ref());
        }
        // Determinism: a twin applies the same commands, rebuilt from its own image every
        // few steps; its image must be byte-identical.
        twin.execute(command);
        if step % 7 == 3 {
            let budget = 1 + step * 13;
            twin = from_pieces(&twin.image_pieces(budget))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(twin.image_pieces(512), machine.image_pieces(512));
    }
    Ok(())
}

fn check_any_count(index: usize, commands: &[Command]) -> Result<(), TestCaseError> {
    match index {
        0 => check_sequence::<1>(commands),
        1 => check_sequence::<3>(commands),
        2 => check_sequence::<10>(commands),
        3 => check_sequence::<16>(commands),
        _ => check_sequence::<64>(commands),
    }
}

const COUNTS: [u32; 5] = [1, 3, 10, 16, 64];

fn counted_commands() -> impl Strategy<Value = (usize, Vec<Command>)> {
    (0..COUNTS.len()).prop_flat_map(|i| (Just(i), commands(COUNTS[i])))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_command_keeps_balance_minimal_movement_history_and_determinism(
        (index, commands) in counted_commands()
    ) {
        check_any_count(index, &commands)?;
    }

    #[test]
    fn rebalance_moves_as_few_shards_as_brute_force_finds(
        owners in proptest::collection::vec(0..6u64, 1..=6),
        members in proptest::collection::btree_set(1..6u64, 0..=4),
    ) {
        let before: Vec<GroupId> = owners.iter().map(|&g| GroupId(g)).collect();
        let groups: BTreeSet<GroupId> = members.iter().map(|&g| GroupId(g)).collect();
        let mut after = before.clone();
        rebalance(&mut after, &groups);
        let moves = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        if groups.is_empty() {
            prop_assert!(after.iter().all(|g| *g == GroupId::NONE));
        } else {
            prop_assert!(is_even(&after, &groups));
            prop_assert_eq!(moves, brute_force_fewest_moves(&before, &groups));
        }
    }

    #[test]
    fn image_round_trips_at_any_budget(commands in commands(10), budget in 1..4096usize) {
        let mut machine = ShardMaster::default();
        for command in &commands {
            machine.execute(command);
        }
        let pieces = machine.image_pieces(budget);
        let rebuilt = from_pieces(&pieces).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(rebuilt.live_bytes(), machine.live_bytes());
        prop_assert_eq!(rebuilt, machine);
    }
}

/// The fewest moves over every even assignment of `before`'s shards to `groups`, by trying
/// them all.
fn brute_force_fewest_moves(before: &[GroupId], groups: &BTreeSet<GroupId>) -> usize {
    let members: Vec<GroupId> = groups.iter().copied().collect();
    let total = members.len().pow(before.len() as u32);
    let mut best = usize::MAX;
    let mut candidate = vec![GroupId::NONE; before.len()];
    for mut code in 0..total {
        for slot in candidate.iter_mut() {
            *slot = members[code % members.len()];
            code /= members.len();
        }
        if is_even(&candidate, groups) {
            let moves = before
                .iter()
                .zip(&candidate)
                .filter(|(a, b)| a != b)
                .count();
            best = best.min(moves);
        }
    }
    best
}
