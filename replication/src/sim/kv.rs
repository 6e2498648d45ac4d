//! A kv group on the simulator: [`KvCluster`], the lab-style harness ([`Cluster`]) over
//! [`KvState`] replicas, with the kv group's client calls (Get, Put, Append) and its
//! history: kv [`Input`]s and [`Output`]s checked per key by [`linearizability::check`].
//! A request is a [`Batch`]; each of its ops is an operation of the history.
//!
//! An Append answers with the value's new length; the harness keeps completed requests
//! with Appends ([`Recorded::keep`]) so that [`KvCluster::pin_appends`] can turn those
//! lengths into reads that pin the order of concurrent Appends.

use bytes::Bytes;
use kv_engine::kv::{KvState, Op, Reply};

use crate::kvgroup::Batch;

pub use super::group::{Cluster, Completion, Recorded, OP_LIMIT};
use super::replica::ReplicaHost;
use super::script::Harness;
use crate::linearizability::{self, Budget, CheckResult, History, Input, Output};

/// The host of a kv group's replicas.
pub type KvHost = ReplicaHost<KvState>;
/// A kv group on the simulator with lab-style clerks.
pub type KvCluster = Cluster<KvState>;
/// What a kv client script does next.
pub type Action = super::group::Action<Batch>;
/// Concurrent kv client scripts.
pub type Scripts = super::group::Scripts<KvState>;
pub use super::group::Script;

impl Recorded for KvState {
    type Input = Input;
    type Output = Output;

    fn inputs(batch: &Batch) -> Vec<Input> {
        batch.ops().iter().map(input_of).collect()
    }

    fn outputs(batch: &Batch, reply: &Reply) -> Option<Vec<Output>> {
        let replies = batch.split_reply(reply.clone()).ok()?;
        replies.iter().map(output_of).collect()
    }

    fn keep(batch: &Batch, reply: &Reply) -> bool {
        appends(batch, reply).next().is_some()
    }

    fn check(history: &History) -> CheckResult {
        linearizability::check(history, Budget::DEFAULT)
    }
}

/// The kv calls of any world whose clerks run kv ops (a kv group, primary/backup, the
/// sharded world), each waiting for its answer.
pub trait KvCalls: Harness {
    /// Runs `op` on clerk `c`; panics (with the seed) if no answer within [`OP_LIMIT`].
    fn must_kv(&mut self, c: usize, op: Op) -> Reply;

    /// Get through clerk `c` (panics if no answer within [`OP_LIMIT`]).
    fn get(&mut self, c: usize, key: &str) -> Option<Vec<u8>> {
        match self.must_kv(c, get(key)) {
            Reply::Value(v) => v.map(|b| b.to_vec()),
            other => panic!("seed {}: Get answered {other:?}", self.seed()),
        }
    }

    /// Get, as a string (missing key: empty, as in the lab).
    fn get_str(&mut self, c: usize, key: &str) -> String {
        String::from_utf8(self.get(c, key).unwrap_or_default()).expect("test values are UTF-8")
    }

    /// Put through clerk `c`.
    fn put(&mut self, c: usize, key: &str, value: &str) {
        self.must_kv(c, put(key, value));
    }

    /// Append through clerk `c`.
    fn append(&mut self, c: usize, key: &str, value: &str) {
        self.must_kv(c, append(key, value));
    }
}

impl KvCalls for KvCluster {
    fn must_kv(&mut self, c: usize, op: Op) -> Reply {
        self.must(c, op)
    }
}

impl KvCluster {
    /// A replica that is up and says it leads, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.replicas()).find(|&i| {
            self.sim
                .node(i)
                .is_some_and(|r| r.status().role == crate::replica::Role::Leader)
        })
    }

    /// Adds to the history what the Appends on `key` told their clients: an Append answers
    /// with the value's new length, so the value right after it was the first `len` bytes
    /// of `value`, provided `value` was read after every one of them and the key received
    /// only Appends since it was last empty (the caller vouches for that). Each becomes a
    /// read spanning its Append. This pins the order of concurrent Appends, which the
    /// checker could otherwise only find by exponential search.
    pub fn pin_appends(&self, key: &str, value: &[u8]) {
        pin_appends(
            &self.history,
            &self.completions,
            key,
            value,
            self.sim.seed(),
        );
    }
}

/// [`KvCluster::pin_appends`] over any harness's history and kept completions.
pub fn pin_appends(
    history: &History,
    completions: &[Completion<KvState>],
    key: &str,
    value: &[u8],
    seed: u64,
) {
    for (a, (appended, len)) in completions
        .iter()
        .flat_map(|a| appends(&a.command, &a.reply).map(move |append| (a, append)))
    {
        if appended != key.as_bytes() {
            continue;
        }
        let len = usize::try_from(len).expect("lengths fit in memory");
        assert!(
            len <= value.len(),
            "seed {seed}: an Append on {key} reported length {len}, beyond the final {}",
            value.len()
        );
        history.record(linearizability::Operation {
            client: a.client.0,
            input: Input::Get {
                key: key.as_bytes().to_vec(),
            },
            invoke: a.invoked.as_micros(),
            outcome: linearizability::Outcome::Returned {
                time: a.returned.as_micros(),
                output: Output::Value(Some(value[..len].to_vec())),
            },
        });
    }
}

/// The Appends of a completed request, each with the length it reported.
fn appends<'a>(batch: &'a Batch, reply: &Reply) -> impl Iterator<Item = (&'a Bytes, u64)> {
    let replies = batch.split_reply(reply.clone()).unwrap_or_default();
    batch
        .ops()
        .iter()
        .zip(replies)
        .filter_map(|(op, reply)| match (op, reply) {
            (Op::Append { key, .. }, Reply::Appended(len)) => Some((key, len)),
            _ => None,
        })
}

/// Whether one op and its reply are an Append that reported a length (see
/// [`pin_appends`]).
pub fn is_append(op: &Op, reply: &Reply) -> bool {
    matches!((op, reply), (Op::Append { .. }, Reply::Appended(_)))
}

/// What one op's reply tells its client, as the history records it; `None` for a reply
/// that says the op did not run (and for a scan's page, which no simulated workload asks
/// for: see [`input_of`]).
pub fn output_of(reply: &Reply) -> Option<Output> {
    match reply {
        Reply::Value(v) => Some(Output::Value(v.as_ref().map(|b| b.to_vec()))),
        Reply::Ok | Reply::Appended(_) | Reply::Deleted(_) => Some(Output::Ok),
        Reply::Stale { .. }
        | Reply::NotHeld(_)
        | Reply::Batch(_)
        | Reply::Scanned(_)
        | Reply::TooLarge(_)
        | Reply::Counted(_) => None,
    }
}

/// One op as the history records it. The histories' model has single keys only, and no
/// simulated workload issues a scan (a scan is a read of a shard's owner, checked by the
/// end-to-end tests): one here is a broken harness, so it panics.
pub fn input_of(op: &Op) -> Input {
    match op {
        Op::Get { key } => Input::Get { key: key.to_vec() },
        Op::Put { key, value } => Input::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        },
        Op::Append { key, value } => Input::Append {
            key: key.to_vec(),
            value: value.to_vec(),
        },
        Op::Delete { key } => Input::Delete { key: key.to_vec() },
        Op::Scan(scan) => panic!("a simulated workload issued a scan: {scan:?}"),
        Op::Count { shard } => panic!("a simulated workload counted shard {shard}"),
    }
}

/// A Get's answer as text (a missing key reads as empty, as in the lab); panics on any
/// other reply, or none.
pub fn value_text(reply: Option<Reply>) -> String {
    match reply {
        Some(Reply::Value(v)) => String::from_utf8(v.map(|b| b.to_vec()).unwrap_or_default())
            .expect("test values are UTF-8"),
        other => panic!("expected a Get answer, got {other:?}"),
    }
}

/// A Get op (a kv group's request of one op, with `.into()`).
pub fn get(key: &str) -> Op {
    Op::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

/// A Put op.
pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

/// An Append op.
pub fn append(key: &str, value: &str) -> Op {
    Op::Append {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

/// The lab's `checkAppends`: every client `i` appended `"x {i} {j} y"` for `j` in
/// `0..counts[i]`, each exactly once and in order. Returns what is wrong, if anything.
pub fn check_appends(value: &str, counts: &[usize]) -> Result<(), String> {
    for (i, &count) in counts.iter().enumerate() {
        let mut last = None;
        for j in 0..count {
            let wanted = format!("x {i} {j} y");
            let Some(at) = value.find(&wanted) else {
                return Err(format!("missing element {wanted:?}"));
            };
            if value[at + 1..].contains(&wanted) {
                return Err(format!("duplicate element {wanted:?}"));
            }
            if last.is_some_and(|l| at < l) {
                return Err(format!("element {wanted:?} out of order"));
            }
            last = Some(at);
        }
    }
    Ok(())
}
