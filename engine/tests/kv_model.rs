//! Property tests: `KvState::apply` against a plain `BTreeMap` model, over random request
//! sequences from several clients that include re-sent and out-of-date requests, snapshot
//! round trips and shard moves between groups.

use std::collections::BTreeMap;

use bytes::Bytes;
use kv_engine::kv::{shard_of, ClientId, KvState, Op, Reply, Request, ShardId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const CLIENTS: u64 = 4;

/// An operation before it is given a client and a seq.
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

/// One step of a client workload.
#[derive(Clone, Debug)]
enum Step {
    /// The client sends a new request with the next seq.
    Fresh { client: u64, op: OpSpec },
    /// The client re-sends its latest request (same seq, same op).
    Resend { client: u64 },
    /// A delayed duplicate of one of the client's older requests arrives.
    ResendOlder { client: u64, back: usize },
}

/// Keys drawn mostly from a small set, so requests collide; they cover the empty key,
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

fn fresh_step() -> impl Strategy<Value = Step> {
    (0..CLIENTS, op_spec()).prop_map(|(client, op)| Step::Fresh { client, op })
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => fresh_step(),
        2 => (0..CLIENTS).prop_map(|client| Step::Resend { client }),
        1 => (0..CLIENTS, 1..5usize).prop_map(|(client, back)| Step::ResendOlder { client, back }),
    ]
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(any_step(), 0..max)
}

/// The reference: a plain map, executing every fresh request exactly once.
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

/// What the workload sends next, and what it must get back.
enum Expect {
    /// A new request: the model's reply.
    Executed(OpSpec),
    /// The latest request again: the reply it first got, and no state change.
    Original(Reply),
    /// An older request: `Stale`, or (where the entry for a newer seq did not travel with
    /// a shard) its original reply; never a re-execution.
    StaleOrOriginal(Reply),
}

/// Client-side bookkeeping: seq counters and every request sent with its reply.
#[derive(Default)]
struct Clients {
    sent: BTreeMap<u64, Vec<(Request, Reply)>>,
}

impl Clients {
    /// Turns a step into a request plus the expectation, or `None` if the step does not
    /// apply (a re-send by a client with too short a history).
    fn next(&self, step: &Step) -> Option<(Request, Expect)> {
        match step {
            Step::Fresh { client, op } => {
                let seq = self.sent.get(client).map_or(1, |s| s.len() as u64 + 1);
                let request = Request {
                    client: ClientId(*client),
                    seq,
                    op: op.to_op(),
                };
                Some((request, Expect::Executed(op.clone())))
            }
            Step::Resend { client } => {
                let (request, reply) = self.sent.get(client)?.last()?;
                Some((request.clone(), Expect::Original(reply.clone())))
            }
            Step::ResendOlder { client, back } => {
                let sent = self.sent.get(client)?;
                let index = sent.len().checked_sub(1 + back)?;
                let (request, reply) = &sent[index];
                Some((request.clone(), Expect::StaleOrOriginal(reply.clone())))
            }
        }
    }

    fn record(&mut self, request: Request, reply: Reply) {
        self.sent
            .entry(request.client.0)
            .or_default()
            .push((request, reply));
    }
}

/// Applies one step to `kv`, checking the reply against the model; returns the reply.
fn check_step(
    kv: &mut KvState,
    model: &mut Model,
    clients: &mut Clients,
    step: &Step,
) -> Result<Option<Reply>, TestCaseError> {
    let Some((request, expect)) = clients.next(step) else {
        return Ok(None);
    };
    let before = kv.clone();
    let reply = kv.apply(&request);
    match expect {
        Expect::Executed(op) => {
            prop_assert_eq!(&reply, &model.execute(&op));
            prop_assert_eq!(kv.last_seq(request.client), Some(request.seq));
            clients.record(request, reply.clone());
        }
        Expect::Original(original) => {
            prop_assert_eq!(&reply, &original);
            prop_assert_eq!(&*kv, &before, "a re-sent request changed the state");
        }
        Expect::StaleOrOriginal(original) => {
            let stale = matches!(reply, Reply::Stale { last_seq } if last_seq > request.seq);
            prop_assert!(stale || reply == original, "older request got {:?}", reply);
            prop_assert_eq!(&*kv, &before, "an older request changed the state");
        }
    }
    Ok(Some(reply))
}

/// Checks that `kv` holds exactly the model's keys and values.
fn check_contents(kv: &KvState, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(kv.len(), model.map.len());
    prop_assert_eq!(kv.live_bytes(), model.live_bytes());
    for (key, value) in &model.map {
        prop_assert_eq!(kv.get(key).map(|v| v.to_vec()), Some(value.clone()));
    }
    Ok(())
}

fn run(kv: &mut KvState, steps: &[Step]) -> Result<(Model, Clients), TestCaseError> {
    let mut model = Model::default();
    let mut clients = Clients::default();
    for step in steps {
        check_step(kv, &mut model, &mut clients, step)?;
    }
    check_contents(kv, &model)?;
    Ok((model, clients))
}

/// Applies the same steps to two states, requiring identical replies and end states.
fn run_twin(
    a: &mut KvState,
    b: &mut KvState,
    model: &mut Model,
    clients: &mut Clients,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    for step in steps {
        let Some((request, _)) = clients.next(step) else {
            continue;
        };
        let reply_b = b.apply(&request);
        let reply_a = check_step(a, model, clients, step)?;
        prop_assert_eq!(reply_a, Some(reply_b));
    }
    prop_assert_eq!(&*a, &*b);
    check_contents(a, model)
}

/// Two shard groups for the shard-move property: which one holds each shard.
struct Groups {
    states: [KvState; 2],
}

impl Groups {
    fn owner(&self, shard: ShardId) -> usize {
        usize::from(!self.states[0].holds(shard))
    }

    /// Moves `shard` to the other group: export, import, then drop the old copy.
    fn move_shard(&mut self, shard: ShardId) -> Result<(), TestCaseError> {
        let from = self.owner(shard);
        let data = self.states[from].export_shard(shard).unwrap();
        let to = 1 - from;
        prop_assert!(self.states[to].import_shard(data).is_ok());
        prop_assert!(self.states[from].drop_shard(shard));
        Ok(())
    }
}

proptest! {
    #[test]
    fn apply_agrees_with_btreemap_model(steps in prop::collection::vec(fresh_step(), 0..120)) {
        let mut kv = KvState::new();
        run(&mut kv, &steps)?;
    }

    #[test]
    fn resent_requests_return_original_reply_and_older_ones_never_reexecute(
        steps in steps(150)
    ) {
        let mut kv = KvState::new();
        run(&mut kv, &steps)?;
    }

    #[test]
    fn snapshot_restore_then_continue_gives_identical_replies(
        prefix in steps(80),
        suffix in steps(80),
    ) {
        let mut original = KvState::new();
        let (mut model, mut clients) = run(&mut original, &prefix)?;
        let bytes = original.snapshot_bytes();
        let mut restored = KvState::from_snapshot_bytes(&bytes).unwrap();
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.snapshot_bytes(), bytes);
        run_twin(&mut original, &mut restored, &mut model, &mut clients, &suffix)?;
    }

    #[test]
    fn exporting_and_importing_every_shard_rebuilds_an_identical_state(
        prefix in steps(80),
        suffix in steps(80),
    ) {
        let mut original = KvState::new();
        let (mut model, mut clients) = run(&mut original, &prefix)?;
        let mut rebuilt = KvState::without_shards();
        for shard in ShardId::all() {
            let data = original.export_shard(shard).unwrap();
            let bytes = data.to_bytes().unwrap();
            let decoded = kv_engine::kv::ShardData::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&decoded, &data);
            rebuilt.import_shard(decoded).unwrap();
        }
        prop_assert_eq!(&rebuilt, &original);
        run_twin(&mut original, &mut rebuilt, &mut model, &mut clients, &suffix)?;
    }

    #[test]
    fn requests_across_shard_moves_match_model_and_stay_at_most_once(
        steps in prop::collection::vec(
            prop_oneof![
                8 => any_step().prop_map(Some),
                1 => Just(None),
            ],
            0..150,
        ),
        moves in prop::collection::vec(0..10u32, 0..150),
    ) {
        // `None` steps move a shard (the next entry of `moves`) to the other group.
        let mut groups = Groups { states: [KvState::new(), KvState::without_shards()] };
        let mut model = Model::default();
        let mut clients = Clients::default();
        let mut moves = moves.into_iter().cycle();
        for step in &steps {
            let Some(step) = step else {
                if let Some(shard) = moves.next() {
                    groups.move_shard(ShardId(shard))?;
                }
                continue;
            };
            let Some((request, _)) = clients.next(step) else { continue };
            let owner = groups.owner(shard_of(request.op.key()));
            // The group not holding the shard refuses the request and records nothing.
            let other = &mut groups.states[1 - owner];
            let before = other.clone();
            prop_assert_eq!(other.apply(&request), Reply::NotHeld(request.op.shard()));
            prop_assert_eq!(&*other, &before);
            check_step(&mut groups.states[owner], &mut model, &mut clients, step)?;
        }
        let [a, b] = &groups.states;
        prop_assert_eq!(a.len() + b.len(), model.map.len());
        prop_assert_eq!(a.live_bytes() + b.live_bytes(), model.live_bytes());
        for (key, value) in &model.map {
            let held = a.get(key).or_else(|| b.get(key)).map(|v| v.to_vec());
            prop_assert_eq!(held, Some(value.clone()));
        }
    }
}
