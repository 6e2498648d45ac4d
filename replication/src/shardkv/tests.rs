//! The sharded group's machine on its own: moves, pieces, merges, releases, images.

use std::sync::Arc;

use bytes::Bytes;
use kv_engine::kv::{Op, Reply, ShardId, Sharding};

use super::machine::{ChunkAnswer, Command, Position, ShardKv};
use crate::paxos::Seq;
use crate::replica::{Context, ImageBuilder, Sessions, StateMachine};
use crate::shardmaster::{Config, ConfigNum, GroupId};
use crate::types::ClientId;

const A: GroupId = GroupId(1);
const B: GroupId = GroupId(2);

/// One group's machine with its at-most-once table and log position.
struct Group {
    machine: ShardKv,
    sessions: Sessions<Reply>,
    at: u64,
}

impl Group {
    fn new(group: GroupId) -> Group {
        Group {
            machine: ShardKv::new(group, Sharding::LAB),
            sessions: Sessions::new(),
            at: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Reply {
        self.at += 1;
        let mut context = Context {
            at: Seq(self.at),
            sessions: &mut self.sessions,
        };
        self.machine.apply(&command, &mut context)
    }

    /// A client write, recorded in the table as the library would.
    fn write(&mut self, client: u64, seq: u64, key: &[u8], value: &[u8]) -> Reply {
        let reply = self.apply(Command::Op(Op::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        }));
        if reply == Reply::Ok {
            self.sessions
                .record(ClientId(client), seq, reply.clone(), Seq(self.at));
        }
        reply
    }

    fn read(&mut self, key: &[u8]) -> Reply {
        self.apply(Command::Op(Op::Get {
            key: Bytes::copy_from_slice(key),
        }))
    }

    /// Pulls every arriving shard from `from`, piece by piece of `budget` bytes.
    fn pull_all(&mut self, from: &Group, budget: usize) -> usize {
        let mut pieces = 0;
        let config = self.machine.config().num();
        while let Some((&shard, pull)) = self.machine.pulling().iter().next() {
            let at = pull.next.clone();
            let ChunkAnswer::Chunk(chunk) = from.machine.chunk(config, shard, &at, budget) else {
                panic!("no piece of {shard} at {at:?}");
            };
            self.apply(Command::Install {
                config,
                shard,
                chunk,
            });
            pieces += 1;
        }
        pieces
    }
}

fn configs() -> Vec<Arc<Config>> {
    let c0 = Config::initial(10);
    let c1 = c0.with_group(A, vec!["a".into()]);
    let c2 = c1.with_group(B, vec!["b".into()]);
    let c3 = c2.without_group(A);
    let c4 = c3.without_group(B);
    let c5 = c4.with_group(A, vec!["a".into()]);
    [c1, c2, c3, c4, c5].into_iter().map(Arc::new).collect()
}

fn key_in(shard: u8, i: u32) -> Vec<u8> {
    let mut key = vec![shard];
    key.extend_from_slice(format!("key{i}").as_bytes());
    key
}

#[test]
fn a_shard_moves_with_its_data_and_at_most_once_entries_and_is_served_by_one_group() {
    let configs = configs();
    let (mut a, mut b) = (Group::new(A), Group::new(B));
    for c in &configs[..1] {
        a.apply(Command::Reconfigure(c.clone()));
        b.apply(Command::Reconfigure(c.clone()));
    }
    assert_eq!(
        a.machine.serving().len(),
        10,
        "the first group creates every shard"
    );
    for shard in 0..10u8 {
        for i in 0..30 {
            assert_eq!(
                a.write(
                    7,
                    u64::from(shard) * 100 + u64::from(i),
                    &key_in(shard, i),
                    b"v"
                ),
                Reply::Ok
            );
        }
    }
    // B's table knows client 7 at a lower seq: the merge keeps the higher.
    b.sessions.record(ClientId(7), 5, Reply::Ok, Seq(0));
    b.sessions.record(ClientId(8), 1, Reply::Ok, Seq(0));
    a.apply(Command::Reconfigure(configs[1].clone()));
    b.apply(Command::Reconfigure(configs[1].clone()));
    let moved: Vec<ShardId> = b.machine.pulling().keys().copied().collect();
    assert_eq!(moved.len(), 5);
    for &shard in &moved {
        assert!(!a.machine.serves(shard) && !b.machine.serves(shard));
        assert_eq!(b.read(&key_in(shard.0 as u8, 0)), Reply::NotHeld(shard));
        assert_eq!(a.read(&key_in(shard.0 as u8, 0)), Reply::NotHeld(shard));
    }
    assert!(
        !b.machine.wants(ConfigNum(3)),
        "no next configuration while shards arrive"
    );
    let pieces = b.pull_all(&a, 200);
    assert!(
        pieces > 5 * 3,
        "small budgets cut shards into pieces ({pieces})"
    );
    for &shard in &moved {
        assert!(b.machine.serves(shard));
        assert!(b.machine.has_received(ConfigNum(2), shard));
        assert_eq!(
            b.read(&key_in(shard.0 as u8, 29)),
            Reply::Value(Some(Bytes::from_static(b"v")))
        );
    }
    assert_eq!(
        b.sessions.last_seq(ClientId(7)),
        Some(929),
        "A's newer entry adopted"
    );
    assert_eq!(
        b.sessions.last_seq(ClientId(8)),
        Some(1),
        "B's own entry kept"
    );
    // A releases its copies once B holds them.
    assert_eq!(a.machine.leaving().len(), 5);
    for &shard in &moved {
        a.apply(Command::Release {
            config: ConfigNum(2),
            shard,
        });
    }
    assert!(a.machine.leaving().is_empty());
    assert_eq!(a.machine.kv().len() + b.machine.kv().len(), 300);
}

#[test]
fn pieces_install_once_in_order_and_bad_pieces_change_nothing() {
    let configs = configs();
    let (mut a, mut b) = (Group::new(A), Group::new(B));
    a.apply(Command::Reconfigure(configs[0].clone()));
    b.apply(Command::Reconfigure(configs[0].clone()));
    for i in 0..20 {
        a.write(1, u64::from(i) + 1, &key_in(9, i), b"value");
    }
    a.apply(Command::Reconfigure(configs[1].clone()));
    b.apply(Command::Reconfigure(configs[1].clone()));
    let shard = ShardId(9);
    assert!(b.machine.pulling().contains_key(&shard));
    let ChunkAnswer::Chunk(first) = a.machine.chunk(ConfigNum(2), shard, &Position::START, 100)
    else {
        panic!()
    };
    let install = |chunk| Command::Install {
        config: ConfigNum(2),
        shard,
        chunk,
    };
    b.apply(install(first.clone()));
    let after_first = b.machine.clone();
    // The same piece again, a piece for another configuration, and a piece with a key of
    // another shard: ignored.
    b.apply(install(first.clone()));
    b.apply(Command::Install {
        config: ConfigNum(3),
        shard,
        chunk: first.clone(),
    });
    let mut stray = first.clone();
    stray.at = b.machine.pulling()[&shard].next.clone();
    stray.entries = vec![(Bytes::from_static(b"\x01misplaced"), Bytes::new())];
    b.apply(install(stray));
    assert_eq!(b.machine, after_first);
    // A piece that does not continue where the shard is: ignored too.
    let next = b.machine.pulling()[&shard].next.clone();
    let ChunkAnswer::Chunk(second) = a.machine.chunk(ConfigNum(2), shard, &next, 100) else {
        panic!()
    };
    let ChunkAnswer::Chunk(third) =
        a.machine
            .chunk(ConfigNum(2), shard, second.next.as_ref().unwrap(), 100)
    else {
        panic!()
    };
    b.apply(install(third));
    assert_eq!(b.machine, after_first);
    b.pull_all(&a, 100);
    assert!(b.machine.serves(shard));
    assert_eq!(b.machine.kv().len(), 20);
    // Asking the old owner after it released its copy, or before it moved: gone / not yet.
    a.apply(Command::Release {
        config: ConfigNum(2),
        shard,
    });
    assert_eq!(
        a.machine.chunk(ConfigNum(2), shard, &Position::START, 100),
        ChunkAnswer::Gone
    );
    assert_eq!(
        a.machine.chunk(ConfigNum(3), shard, &Position::START, 100),
        ChunkAnswer::NotYet
    );
}

#[test]
fn reconfigurations_apply_one_at_a_time_in_order() {
    let configs = configs();
    let (mut a, mut b) = (Group::new(A), Group::new(B));
    a.apply(Command::Reconfigure(configs[1].clone()));
    assert_eq!(
        a.machine.config().num(),
        ConfigNum(0),
        "configuration 2 before 1: ignored"
    );
    let other_count = Arc::new(Config::initial(5).with_group(A, vec!["a".into()]));
    a.apply(Command::Reconfigure(other_count));
    assert_eq!(
        a.machine.config().num(),
        ConfigNum(0),
        "another shard count: ignored"
    );
    a.apply(Command::Reconfigure(configs[0].clone()));
    a.apply(Command::Reconfigure(configs[0].clone()));
    assert_eq!(
        a.machine.config().num(),
        ConfigNum(1),
        "a repeat is ignored"
    );
    a.write(1, 1, &key_in(6, 0), b"v");
    b.apply(Command::Reconfigure(configs[0].clone()));
    b.apply(Command::Reconfigure(configs[1].clone()));
    a.apply(Command::Reconfigure(configs[1].clone()));
    // B waits for its shards before it takes configuration 3.
    b.apply(Command::Reconfigure(configs[2].clone()));
    assert_eq!(b.machine.config().num(), ConfigNum(2));
    b.pull_all(&a, 1 << 20);
    b.apply(Command::Reconfigure(configs[2].clone()));
    assert_eq!(b.machine.config().num(), ConfigNum(3));
}

#[test]
fn when_every_group_leaves_the_last_holder_keeps_the_data_and_hands_it_on() {
    let configs = configs();
    let (mut a, mut b) = (Group::new(A), Group::new(B));
    let step = |a: &mut Group, b: &mut Group, c: &Arc<Config>| {
        a.apply(Command::Reconfigure(c.clone()));
        b.apply(Command::Reconfigure(c.clone()));
        let (a_pulls, b_pulls) = (
            !a.machine.pulling().is_empty(),
            !b.machine.pulling().is_empty(),
        );
        if a_pulls {
            let from = Group {
                machine: b.machine.clone(),
                sessions: b.sessions.clone(),
                at: b.at,
            };
            a.pull_all(&from, 1 << 20);
        }
        if b_pulls {
            let from = Group {
                machine: a.machine.clone(),
                sessions: a.sessions.clone(),
                at: a.at,
            };
            b.pull_all(&from, 1 << 20);
        }
    };
    step(&mut a, &mut b, &configs[0]);
    for shard in 0..10u8 {
        a.write(1, u64::from(shard) + 1, &key_in(shard, 0), b"kept");
    }
    step(&mut a, &mut b, &configs[1]);
    step(&mut a, &mut b, &configs[2]);
    assert_eq!(b.machine.serving().len(), 10);
    // B leaves too: no group; B keeps every shard without serving it.
    step(&mut a, &mut b, &configs[3]);
    assert!(b.machine.serving().is_empty());
    assert_eq!(b.machine.kv().len(), 10);
    assert_eq!(b.read(&key_in(3, 0)), Reply::NotHeld(ShardId(3)));
    // A joins again: it pulls every shard from B, the last holder.
    step(&mut a, &mut b, &configs[4]);
    assert_eq!(a.machine.serving().len(), 10);
    for shard in 0..10u8 {
        assert_eq!(
            a.read(&key_in(shard, 0)),
            Reply::Value(Some(Bytes::from_static(b"kept")))
        );
    }
}

#[test]
fn images_round_trip_with_arriving_and_leaving_shards_at_any_budget() {
    let configs = configs();
    let (mut a, mut b) = (Group::new(A), Group::new(B));
    a.apply(Command::Reconfigure(configs[0].clone()));
    b.apply(Command::Reconfigure(configs[0].clone()));
    for shard in 0..10u8 {
        for i in 0..15 {
            a.write(
                u64::from(i) + 1,
                u64::from(shard) + 1,
                &key_in(shard, i),
                &[shard; 40],
            );
        }
    }
    a.apply(Command::Reconfigure(configs[1].clone()));
    b.apply(Command::Reconfigure(configs[1].clone()));
    // B is halfway through one shard.
    let (&shard, pull) = b.machine.pulling().iter().next().unwrap();
    let ChunkAnswer::Chunk(chunk) = a
        .machine
        .chunk(ConfigNum(2), shard, &pull.next.clone(), 300)
    else {
        panic!()
    };
    b.apply(Command::Install {
        config: ConfigNum(2),
        shard,
        chunk,
    });
    for machine in [&a.machine, &b.machine] {
        for budget in [1, 64, 1000, 1 << 20] {
            let mut builder = ShardKv::builder();
            let mut cursor = None;
            let mut pieces = 0;
            loop {
                let mut piece = Vec::new();
                cursor = machine.encode_piece(cursor.as_ref(), budget, &mut piece);
                builder.add(&piece).unwrap();
                pieces += 1;
                if cursor.is_none() {
                    break;
                }
            }
            let rebuilt = builder.finish().unwrap();
            assert_eq!(&rebuilt, machine, "budget {budget} ({pieces} pieces)");
        }
    }
    // A damaged image is refused, not misread.
    let mut first = Vec::new();
    a.machine.encode_piece(None, 1 << 20, &mut first);
    let mut builder = ShardKv::builder();
    assert!(builder.add(&first[..first.len() / 2]).is_err());
    assert!(ShardKv::builder().finish().is_err());
}
