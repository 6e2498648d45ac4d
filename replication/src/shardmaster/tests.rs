//! Unit tests of the shard master's semantics and image checks. The properties over
//! random command sequences are in `tests/shardmaster_properties.rs`; the image's golden
//! bytes are the `shardmaster-image` sample of [`crate::formats`].

use std::sync::Arc;

use kv_engine::kv::ShardId;

use super::*;
use crate::replica::{ImageBuilder, StateMachine};

fn join(group: u64, servers: &[&str]) -> Command {
    Command::Join {
        group: GroupId(group),
        servers: servers.iter().map(|s| s.to_string()).collect(),
    }
}

fn leave(group: u64) -> Command {
    Command::Leave {
        group: GroupId(group),
    }
}

fn shard_move(shard: u32, group: u64) -> Command {
    Command::Move {
        shard: ShardId(shard),
        group: GroupId(group),
    }
}

fn query_on(machine: &mut ShardMaster, num: Option<u64>) -> Arc<Config> {
    match machine.execute(&Command::Query {
        num: num.map(ConfigNum),
    }) {
        Reply::Config(config) => config,
        other => panic!("Query answered {other:?}"),
    }
}

#[test]
fn config_zero_has_no_groups_and_every_shard_on_none() {
    let mut machine = ShardMaster::default();
    let zero = query_on(&mut machine, None);
    assert_eq!(zero.num(), ConfigNum::ZERO);
    assert!(zero.groups().is_empty());
    assert_eq!(zero.shards(), &[GroupId::NONE; LAB_SHARDS as usize][..]);
}

#[test]
fn join_leave_and_move_number_configs_and_repeats_change_nothing() {
    let mut m = ShardMaster::default();
    assert_eq!(
        m.execute(&join(1, &["x", "y"])),
        Reply::Changed(ConfigNum(1))
    );
    assert_eq!(m.execute(&join(2, &["a"])), Reply::Changed(ConfigNum(2)));
    assert_eq!(m.execute(&join(2, &["a"])), Reply::Unchanged(ConfigNum(2)));
    assert_eq!(m.execute(&leave(1)), Reply::Changed(ConfigNum(3)));
    assert_eq!(m.execute(&leave(1)), Reply::Unchanged(ConfigNum(3)));
    assert_eq!(m.execute(&shard_move(0, 2)), Reply::Unchanged(ConfigNum(3)));
    assert_eq!(m.execute(&join(3, &["b"])), Reply::Changed(ConfigNum(4)));
    let owner = m.latest().owner(ShardId(0)).unwrap();
    let other = if owner == GroupId(2) { 3 } else { 2 };
    assert_eq!(
        m.execute(&shard_move(0, other)),
        Reply::Changed(ConfigNum(5))
    );
    assert_eq!(m.latest().owner(ShardId(0)), Some(GroupId(other)));
    assert_eq!(m.configs().count(), 6);
}

#[test]
fn query_reads_numbered_configs_and_the_latest_beyond_them() {
    let mut m = ShardMaster::default();
    m.execute(&join(1, &["x"]));
    m.execute(&join(2, &["y"]));
    assert_eq!(query_on(&mut m, Some(1)).num(), ConfigNum(1));
    assert_eq!(query_on(&mut m, Some(1)).groups().len(), 1);
    assert_eq!(query_on(&mut m, Some(99)).num(), ConfigNum(2));
    assert_eq!(query_on(&mut m, None).num(), ConfigNum(2));
}

#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    let mut m = ShardMaster::default();
    assert_eq!(
        m.execute(&join(0, &["x"])),
        Reply::Refused(Refusal::GroupZero)
    );
    assert_eq!(
        m.execute(&shard_move(3, 1)),
        Reply::Refused(Refusal::NotAGroup(GroupId(1)))
    );
    // Said to users (`kv admin move`) as every other message names a group.
    assert_eq!(
        Refusal::NotAGroup(GroupId(102)).to_string(),
        "group 102 is not in the latest configuration"
    );
    m.execute(&join(1, &["x"]));
    assert_eq!(
        m.execute(&shard_move(LAB_SHARDS, 1)),
        Reply::Refused(Refusal::NoSuchShard(ShardId(LAB_SHARDS)))
    );
    let long = "s".repeat(SERVER_NAME_BYTES_MAX + 1);
    assert_eq!(
        m.execute(&join(2, &[&long])),
        Reply::Refused(Refusal::ServersTooLarge)
    );
    let many: Vec<&str> = vec!["s"; SERVERS_PER_GROUP_MAX + 1];
    assert_eq!(
        m.execute(&join(2, &many)),
        Reply::Refused(Refusal::ServersTooLarge)
    );
    assert_eq!(m.configs().count(), 2);
}

#[test]
fn joins_beyond_the_group_limit_are_refused() {
    let mut m = ShardMaster::default();
    for g in 1..=GROUPS_MAX as u64 {
        assert!(matches!(m.execute(&join(g, &[])), Reply::Changed(_)));
    }
    let last = GROUPS_MAX as u64 + 1;
    assert_eq!(
        m.execute(&join(last, &[])),
        Reply::Refused(Refusal::TooManyGroups)
    );
    assert_eq!(m.latest().groups().len(), GROUPS_MAX);
    assert!(m.latest().is_balanced());
}

#[test]
fn old_configs_are_shared_not_copied_by_later_commands() {
    let mut m = ShardMaster::default();
    m.execute(&join(1, &["x"]));
    let before = m.config(Some(ConfigNum(1))).clone();
    m.execute(&join(2, &["y"]));
    m.execute(&leave(1));
    assert!(Arc::ptr_eq(&before, m.config(Some(ConfigNum(1)))));
}

#[test]
fn queries_are_reads_and_changes_are_writes() {
    assert!(ShardMaster::is_read(&Command::Query { num: None }));
    assert!(!ShardMaster::is_read(&join(1, &[])));
    assert!(!ShardMaster::is_read(&leave(1)));
    assert!(!ShardMaster::is_read(&shard_move(1, 1)));
}

fn sample() -> ShardMaster {
    let mut m = ShardMaster::new(3);
    m.execute(&join(7, &["a", "b"]));
    m.execute(&join(9, &["c"]));
    m.execute(&shard_move(0, 9));
    m
}

#[test]
fn image_round_trips_in_bounded_pieces() {
    let mut m = ShardMaster::new(3);
    for g in 1..=40 {
        m.execute(&join(g, &["s1", "s2"]));
    }
    let pieces = m.image_pieces(1);
    // A header, then one configuration per piece at a budget of one byte.
    assert_eq!(pieces.len(), 1 + 41);
    let pieces_big = m.image_pieces(usize::MAX);
    assert_eq!(
        pieces_big.len(),
        1 + 41usize.div_ceil(CONFIGS_PER_PIECE_MAX)
    );
    let rebuilt = machine::from_pieces(&pieces).unwrap();
    assert_eq!(rebuilt, m);
    assert_eq!(rebuilt.live_bytes(), m.live_bytes());
    assert_eq!(machine::from_pieces(&pieces_big).unwrap(), m);
}

#[test]
fn images_of_another_shard_count_or_damaged_are_refused() {
    let pieces = sample().image_pieces(usize::MAX);
    // The header says how many shards; configurations of another count are refused.
    let four = ShardMaster::new(4).image_pieces(usize::MAX);
    let mixed = [four[0].clone(), pieces[1].clone()];
    assert!(matches!(
        machine::from_pieces(&mixed),
        Err(ImageError::Config(_))
    ));
    assert_eq!(machine::from_pieces(&pieces).unwrap().shard_count(), 3);
    assert!(matches!(
        machine::from_pieces(&pieces[..1]),
        Err(ImageError::Incomplete {
            announced: 4,
            held: 0
        })
    ));
    assert!(matches!(
        machine::from_pieces(&pieces[1..]),
        Err(ImageError::Header(_))
    ));
    let twice = [pieces[0].clone(), pieces[1].clone(), pieces[1].clone()];
    assert!(matches!(
        machine::from_pieces(&twice),
        Err(ImageError::Config(_))
    ));
    let mut cut = pieces[1].clone();
    cut.truncate(cut.len() - 1);
    let damaged = [pieces[0].clone(), cut];
    assert!(matches!(
        machine::from_pieces(&damaged),
        Err(ImageError::Undecodable(_))
    ));
    let mut builder = ShardMaster::builder();
    assert!(builder.add(&pieces[0]).is_ok());
    assert!(builder
        .add(&pieces[0])
        .unwrap_err()
        .contains("second header"));
}

#[test]
fn replies_round_trip_through_the_codec() {
    let mut m = sample();
    for reply in [
        m.execute(&Command::Query { num: None }),
        Reply::Changed(ConfigNum(3)),
        Reply::Refused(Refusal::NoSuchShard(ShardId(4))),
    ] {
        let bytes = crate::codec::encode(&reply).unwrap();
        assert_eq!(crate::codec::decode::<Reply>(&bytes).unwrap(), reply);
    }
}
