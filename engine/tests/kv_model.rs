//! Property tests: `KvState::execute` against a plain `BTreeMap` model, over random
//! operation sequences with image round trips (piece by piece, at random budgets) and
//! shard moves between two groups, and scans walked page by page against the model's keys. (At-most-once execution is the replication library's
//! and is tested there.)

use std::collections::BTreeMap;

use bytes::Bytes;
use kv_engine::glob::Glob;
use kv_engine::kv::{shard_of, KvImageBuilder, KvState, Op, Reply, Scan, ShardId, Sharding};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// An operation, in the model's terms.
#[derive(Clone, Debug)]
enum OpSpec {
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    Append(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl OpSpec {
    fn to_op(&self) -> Op {
        let b = |bytes: &Vec<u8>| Bytes::copy_from_slice(bytes);
        match self {
            OpSpec::Get(key) => Op::Get { key: b(key) },
            OpSpec::Put(key, value) => Op::Put {
                key: b(key),
                value: b(value),
            },
            OpSpec::Append(key, value) => Op::Append {
                key: b(key),
                value: b(value),
            },
            OpSpec::Delete(key) => Op::Delete { key: b(key) },
        }
    }
}

/// Keys drawn mostly from a small set, so operations collide; they cover the empty key,
/// several shards, and keys sharing a first byte.
fn key() -> impl Strategy<Value = Vec<u8>> {
    let common = vec![
        vec![],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0],
        vec![10],
        vec![255, 1],
        vec![3, 3],
    ];
    prop_oneof![
        4 => prop::sample::select(common),
        1 => prop::collection::vec(any::<u8>(), 0..3),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        key().prop_map(OpSpec::Get),
        (key(), value()).prop_map(|(k, v)| OpSpec::Put(k, v)),
        (key(), value()).prop_map(|(k, v)| OpSpec::Append(k, v)),
        key().prop_map(OpSpec::Delete),
    ]
}

/// The reference: a plain map.
#[derive(Default)]
struct Model {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn execute(&mut self, op: &OpSpec) -> Reply {
        match op {
            OpSpec::Get(key) => Reply::Value(self.map.get(key).map(|v| Bytes::from(v.clone()))),
            OpSpec::Put(key, value) => {
                self.map.insert(key.clone(), value.clone());
                Reply::Ok
            }
            OpSpec::Append(key, value) => {
                let stored = self.map.entry(key.clone()).or_default();
                stored.extend_from_slice(value);
                Reply::Appended(stored.len() as u64)
            }
            OpSpec::Delete(key) => Reply::Deleted(self.map.remove(key).is_some()),
        }
    }

    fn live_bytes(&self) -> u64 {
        self.map
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

fn check_contents(kv: &KvState, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(kv.len(), model.map.len());
    prop_assert_eq!(kv.live_bytes(), model.live_bytes());
    for (key, value) in &model.map {
        prop_assert_eq!(kv.get(key).map(|v| v.to_vec()), Some(value.clone()));
    }
    Ok(())
}

/// Rebuilds a state from its image, streamed in pieces of about `budget` bytes.
fn through_image(kv: &KvState, budget: usize) -> KvState {
    let mut builder = KvImageBuilder::new();
    let mut cursor = None;
    loop {
        let mut piece = Vec::new();
        cursor = kv.encode_piece(cursor.as_ref(), budget, &mut piece);
        builder.add(&piece).expect("a piece of a valid image");
        if cursor.is_none() {
            return builder.finish().expect("a complete image");
        }
    }
}

proptest! {
    #[test]
    fn execute_agrees_with_btreemap_model(ops in prop::collection::vec(op_spec(), 0..150)) {
        let mut kv = KvState::new();
        let mut model = Model::default();
        for op in &ops {
            prop_assert_eq!(kv.execute(&op.to_op()), model.execute(op));
        }
        check_contents(&kv, &model)?;
    }

    #[test]
    fn an_image_restored_mid_stream_continues_with_identical_replies(
        prefix in prop::collection::vec(op_spec(), 0..80),
        suffix in prop::collection::vec(op_spec(), 0..80),
        budget in 1..200usize,
    ) {
        let mut original = KvState::new();
        let mut model = Model::default();
        for op in &prefix {
            original.execute(&op.to_op());
            model.execute(op);
        }
        let mut restored = through_image(&original, budget);
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.image_bytes(), original.image_bytes());
        for op in &suffix {
            let expected = model.execute(op);
            prop_assert_eq!(original.execute(&op.to_op()), expected.clone());
            prop_assert_eq!(restored.execute(&op.to_op()), expected);
        }
        prop_assert_eq!(&restored, &original);
        check_contents(&restored, &model)?;
    }

    #[test]
    fn operations_across_shard_moves_match_the_model(
        steps in prop::collection::vec(
            prop_oneof![8 => op_spec().prop_map(Some), 1 => Just(None)],
            0..150,
        ),
        moves in prop::collection::vec(0..10u32, 1..150),
    ) {
        // `None` steps move a shard (the next entry of `moves`) to the other group.
        let mut groups = [KvState::new(), KvState::without_shards()];
        let mut model = Model::default();
        let mut moves = moves.into_iter().cycle();
        for step in &steps {
            let Some(op) = step else {
                let shard = ShardId(moves.next().expect("cycled"));
                let from = usize::from(!groups[0].holds(shard));
                let data = groups[from].export_shard(shard).expect("held");
                prop_assert!(groups[1 - from].import_shard(data).is_ok());
                prop_assert!(groups[from].drop_shard(shard));
                continue;
            };
            let op = op.to_op();
            let owner = usize::from(!groups[0].holds(shard_of(op.key().expect("a keyed op"))));
            // The group not holding the shard refuses and changes nothing.
            let before = groups[1 - owner].clone();
            prop_assert_eq!(groups[1 - owner].execute(&op), Reply::NotHeld(op.shard(kv_engine::kv::Sharding::LAB)));
            prop_assert_eq!(&groups[1 - owner], &before);
            let expected = model.execute(step.as_ref().expect("an op"));
            prop_assert_eq!(groups[owner].execute(&op), expected);
        }
        let [a, b] = &groups;
        prop_assert_eq!(a.len() + b.len(), model.map.len());
        prop_assert_eq!(a.live_bytes() + b.live_bytes(), model.live_bytes());
        for (key, value) in &model.map {
            let held = a.get(key).or_else(|| b.get(key)).map(|v| v.to_vec());
            prop_assert_eq!(held, Some(value.clone()));
        }
    }

    #[test]
    fn a_walk_of_scan_pages_returns_each_matching_key_once_in_order(
        ops in prop::collection::vec(op_spec(), 0..150),
        count in 1..5u32,
        pattern in prop::sample::select(vec!["*", "a*", "?", "*b", "[a-b]*", "\\x00*"]),
        values in any::<bool>(),
    ) {
        let mut kv = KvState::new();
        let mut model = Model::default();
        for op in &ops {
            kv.execute(&op.to_op());
            model.execute(op);
        }
        let glob = Glob::new(pattern.as_bytes());
        for shard in Sharding::LAB.all() {
            let mut walked = Vec::new();
            let mut after = None;
            loop {
                let scan = Scan {
                    after: after.take(),
                    pattern: Some(Bytes::from(pattern.as_bytes())),
                    values,
                    ..Scan::shard(shard, count)
                };
                let Reply::Scanned(page) = kv.execute(&Op::from(scan)) else {
                    return Err(TestCaseError::fail("a scan answers a page"));
                };
                prop_assert!(page.examined <= count);
                for entry in page.entries {
                    let value = &model.map[entry.key.as_ref()];
                    prop_assert_eq!(entry.value_bytes, value.len() as u64);
                    prop_assert_eq!(entry.value.map(|v| v.to_vec()), values.then(|| value.clone()));
                    walked.push(entry.key.to_vec());
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let expected: Vec<Vec<u8>> = model
                .map
                .keys()
                .filter(|key| shard_of(key) == shard && glob.matches(key))
                .cloned()
                .collect();
            prop_assert_eq!(walked, expected);
        }
    }
}
