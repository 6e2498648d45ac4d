//! The kv group's command: a [`Batch`] of [`Op`]s that one client request carries, run in
//! order at one log position and answered with one [`Reply`] per op ([`Reply::Batch`]).
//!
//! Batches are how pipelining costs one log round instead of one per command: the RESP
//! front door puts the commands a connection already sent into as few batches as it can,
//! and an MGET of many keys is one batch. A batch is one request for at-most-once purposes
//! (one client, one sequence number): a retried batch runs once, whole, or answers from the
//! at-most-once table.
//!
//! # Invariants (checked when a batch is made or decoded)
//! - Not empty; all reads or all writes. The at-most-once table keeps the reply of every
//!   client's last write request, and keeps it in every snapshot and state transfer; the
//!   replies of writes are a few bytes, but a read's is a value of up to 16 MiB. So reads
//!   never share a batch with writes, and a read-only batch is never recorded.
//! - At most [`BATCH_READS_MAX`] reads or [`BATCH_WRITES_MAX`] writes (the remembered
//!   replies of a write batch stay a few KiB), and at most [`BATCH_BYTES_MAX`] bytes of
//!   keys and values — except that a batch of one op may be larger (a single op is bounded
//!   by the frame and value limits of whoever accepted it).
//! - A batch whose ops touch a shard this group does not hold is refused whole
//!   ([`Reply::NotHeld`]): nothing runs, nothing is recorded. A request of a stale seq is
//!   answered [`Reply::Stale`]. Otherwise the answer is [`Reply::Batch`], one reply per op
//!   — except that a batch of one op is answered with that op's reply, as a request of one
//!   op always was ([`Batch::split_reply`] takes either apart).
//!
//! # Format
//! A batch encodes as `(FORMAT, ops)`. The format byte is above every first byte of the
//! encoding used before batches existed (a bare `Op`, tags 0–3), so a log of that format
//! fails to decode instead of being misread (a data directory of that age is refused
//! before that, by its stamp's format). ([`Reply::Batch`] is the last
//! variant of [`Reply`], so replies of either age decode alike.) Golden bytes are in the
//! tests and in `crate::formats`.

use kv_engine::kv::{KvState, Op, Reply, ShardId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most reads in one batch: an MGET of as many keys as one RESP command can name.
pub const BATCH_READS_MAX: usize = 1 << 16;
/// Most writes in one batch (their replies are remembered for at-most-once).
pub const BATCH_WRITES_MAX: usize = 1024;
/// Most bytes of keys and values in a batch of more than one op.
pub const BATCH_BYTES_MAX: usize = 16 << 20;

/// The format byte of a [`Batch`]'s encoding (see the module docs).
const FORMAT: u8 = 16;

/// Ops one request carries. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    bytes: usize,
}

/// Why ops cannot form a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No ops.
    #[error("a batch needs at least one op")]
    Empty,
    /// Op `at` does not fit: it mixes reads with writes, or passes a limit.
    #[error("op {at} does not fit the batch (reads and writes mixed, or over a limit)")]
    NoRoom {
        /// The index of the first op that does not fit.
        at: usize,
    },
}

impl Batch {
    /// A batch of `ops`, if they form one (see the module docs).
    pub fn new(ops: Vec<Op>) -> Result<Batch, BatchError> {
        let first = ops.first().ok_or(BatchError::Empty)?;
        let mut bytes = 0usize;
        for (at, op) in ops.iter().enumerate() {
            if at > 0 && !room_for(first, at, bytes, op) {
                return Err(BatchError::NoRoom { at });
            }
            bytes = bytes.saturating_add(op.payload_bytes());
        }
        Ok(Batch { ops, bytes })
    }

    /// A batch of one op (always valid).
    pub fn one(op: Op) -> Batch {
        let bytes = op.payload_bytes();
        Batch {
            ops: vec![op],
            bytes,
        }
    }

    /// The ops, in the order they run.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The ops, owned.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Number of ops (at least one).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Always false: a batch has at least one op.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True if every op reads (then so does the first: batches do not mix).
    pub fn is_read(&self) -> bool {
        self.ops[0].is_read()
    }

    /// Bytes of keys and values the ops carry.
    pub fn payload_bytes(&self) -> usize {
        self.bytes
    }

    /// Runs the batch on `state`: every op in order ([`Reply::Batch`], or the op's own
    /// reply for a batch of one), or none if a shard is not held ([`Reply::NotHeld`]).
    pub fn execute(&self, state: &mut KvState) -> Reply {
        if let [op] = self.ops.as_slice() {
            // One op: the state itself answers "not held" for it, with nothing run.
            return state.execute(op);
        }
        if let Some(shard) = self.not_held(state) {
            return Reply::NotHeld(shard);
        }
        self.gather(self.ops.iter().map(|op| state.execute(op)).collect())
    }

    /// Runs a batch of reads on `state`, changing nothing: what [`Batch::execute`] answers.
    pub fn read(&self, state: &KvState) -> Reply {
        if let [op] = self.ops.as_slice() {
            // One op: the state itself answers "not held" for it, with nothing run.
            return state.read(op);
        }
        if let Some(shard) = self.not_held(state) {
            return Reply::NotHeld(shard);
        }
        self.gather(self.ops.iter().map(|op| state.read(op)).collect())
    }

    /// The first shard an op touches that `state` does not hold.
    fn not_held(&self, state: &KvState) -> Option<ShardId> {
        let sharding = state.sharding();
        self.ops
            .iter()
            .map(|op| op.shard(sharding))
            .find(|s| !state.holds(*s))
    }

    /// The answer to the request from its ops' replies: the op's own for a batch of one.
    fn gather(&self, mut replies: Vec<Reply>) -> Reply {
        if replies.len() == 1 {
            replies.pop().expect("one reply")
        } else {
            Reply::Batch(replies)
        }
    }

    /// The replies of this batch's ops, from the answer to its request: one per op, in
    /// order; or, if the ops did not run, the answer that says why ([`Reply::Stale`],
    /// [`Reply::NotHeld`], or anything else that is not one reply per op).
    pub fn split_reply(&self, reply: Reply) -> Result<Vec<Reply>, Reply> {
        match reply {
            Reply::Batch(replies) if replies.len() == self.ops.len() && self.ops.len() > 1 => {
                Ok(replies)
            }
            Reply::Stale { .. } | Reply::NotHeld(_) | Reply::Batch(_) => Err(reply),
            single if self.ops.len() == 1 => Ok(vec![single]),
            other => Err(other),
        }
    }
}

impl From<Op> for Batch {
    /// A request of one op.
    fn from(op: Op) -> Batch {
        Batch::one(op)
    }
}

/// Collects ops into a batch, one at a time, within the limits (see the module docs; they
/// are applied by `room_for`, here as in [`Batch::new`]).
#[derive(Clone, Debug, Default)]
pub struct BatchBuilder {
    ops: Vec<Op>,
    bytes: usize,
}

impl BatchBuilder {
    /// True if `op` may join the batch being built. An empty builder takes any op.
    pub fn has_room_for(&self, op: &Op) -> bool {
        match self.ops.first() {
            None => true,
            Some(first) => room_for(first, self.ops.len(), self.bytes, op),
        }
    }

    /// Adds `op`. Panics unless [`BatchBuilder::has_room_for`] it.
    pub fn push(&mut self, op: Op) {
        assert!(
            self.has_room_for(&op),
            "op pushed into a batch without room"
        );
        self.bytes += op.payload_bytes();
        self.ops.push(op);
    }

    /// Number of ops collected.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if no op was collected.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The batch collected so far (`None` if empty); the builder starts again empty.
    pub fn take(&mut self) -> Option<Batch> {
        if self.ops.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut self.bytes);
        Some(Batch {
            ops: std::mem::take(&mut self.ops),
            bytes,
        })
    }
}

/// Whether `op` may join a batch that starts with `first` and holds `len` ops of `bytes`
/// bytes: the one place the limits are applied (see the module docs).
fn room_for(first: &Op, len: usize, bytes: usize, op: &Op) -> bool {
    let ops_max = if op.is_read() {
        BATCH_READS_MAX
    } else {
        BATCH_WRITES_MAX
    };
    first.is_read() == op.is_read()
        && len < ops_max
        && bytes.saturating_add(op.payload_bytes()) <= BATCH_BYTES_MAX
}

/// Refuses an encoding whose format byte is not [`FORMAT`].
fn check_format<E: serde::de::Error>(format: u8) -> Result<(), E> {
    if format == FORMAT {
        Ok(())
    } else {
        Err(E::custom(format_args!(
            "a batch of format {format}, this build reads format {FORMAT} (a log written \
             before requests were batches is not read)"
        )))
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (FORMAT, &self.ops).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        let (format, ops): (u8, Vec<Op>) = Deserialize::deserialize(deserializer)?;
        check_format(format)?;
        Batch::new(ops).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use bytes::Bytes;

    fn get(key: &str) -> Op {
        Op::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    fn put(key: &str, value: &[u8]) -> Op {
        Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value),
        }
    }

    #[test]
    fn batches_hold_reads_or_writes_within_their_limits() {
        assert_eq!(Batch::new(vec![]), Err(BatchError::Empty));
        assert_eq!(
            Batch::new(vec![get("a"), put("b", b"v")]),
            Err(BatchError::NoRoom { at: 1 })
        );
        let reads = Batch::new((0..BATCH_READS_MAX).map(|i| get(&i.to_string())).collect())
            .expect("an MGET of the most keys is one batch");
        assert!(reads.is_read());
        let mut too_many: Vec<Op> = (0..=BATCH_WRITES_MAX).map(|_| put("k", b"v")).collect();
        assert_eq!(
            Batch::new(too_many.clone()),
            Err(BatchError::NoRoom {
                at: BATCH_WRITES_MAX
            })
        );
        too_many.pop();
        assert!(!Batch::new(too_many).unwrap().is_read());
        let half = vec![0u8; BATCH_BYTES_MAX / 2];
        assert_eq!(
            Batch::new(vec![put("a", &half), put("b", &half)]),
            Err(BatchError::NoRoom { at: 1 }),
            "keys count too"
        );
        let big = Batch::new(vec![put("a", &vec![0u8; BATCH_BYTES_MAX + 1])])
            .expect("one op may be larger");
        assert_eq!(big.payload_bytes(), BATCH_BYTES_MAX + 2);
    }

    #[test]
    fn a_batch_runs_in_order_or_not_at_all() {
        let mut state = KvState::new();
        let batch = Batch::new(vec![put("k", b"1"), put("k", b"2")]).unwrap();
        let reply = batch.execute(&mut state);
        assert_eq!(reply, Reply::Batch(vec![Reply::Ok, Reply::Ok]));
        assert_eq!(batch.split_reply(reply), Ok(vec![Reply::Ok, Reply::Ok]));
        assert_eq!(state.get(b"k").map(|v| &v[..]), Some(&b"2"[..]));

        let mut partial = KvState::without_shards();
        partial.create_shard(kv_engine::kv::shard_of(b"k")).unwrap();
        let batch = Batch::new(vec![put("k", b"3"), put("m", b"4")]).unwrap();
        let refused = batch.execute(&mut partial);
        assert_eq!(refused, Reply::NotHeld(kv_engine::kv::shard_of(b"m")));
        assert_eq!(partial.get(b"k"), None, "nothing ran");
        assert_eq!(batch.split_reply(refused.clone()), Err(refused));
        assert_eq!(
            batch.split_reply(Reply::Batch(vec![Reply::Ok])),
            Err(Reply::Batch(vec![Reply::Ok])),
            "one reply per op, or it is not this batch's"
        );

        // A batch of one op is answered as a request of one op always was.
        let one = Batch::from(put("k", b"5"));
        let reply = one.execute(&mut state);
        assert_eq!(reply, Reply::Ok);
        assert_eq!(one.split_reply(reply), Ok(vec![Reply::Ok]));
        let stale = Reply::Stale { last_seq: 3 };
        assert_eq!(one.split_reply(stale.clone()), Err(stale));
    }

    #[test]
    fn encodings_match_the_golden_bytes_and_refuse_the_format_before_batches() {
        let batch = Batch::one(put("k", b"v"));
        let bytes = codec::encode(&batch).unwrap();
        assert_eq!(bytes, [16, 1, 1, 1, b'k', 1, b'v']);
        assert_eq!(codec::decode::<Batch>(&bytes).unwrap(), batch);

        let reply = Reply::Batch(vec![
            Reply::Ok,
            Reply::Value(Some(Bytes::from_static(b"v"))),
        ]);
        let bytes = codec::encode(&reply).unwrap();
        assert_eq!(bytes, [6, 2, 1, 0, 1, 1, b'v']);
        assert_eq!(codec::decode::<Reply>(&bytes).unwrap(), reply);
        // Replies as they were encoded before batches still decode.
        assert_eq!(codec::decode::<Reply>(&[1]).unwrap(), Reply::Ok);

        // A bare op, as requests were encoded before batches, is refused.
        let old_op = codec::encode(&put("k", b"v")).unwrap();
        assert!(codec::decode::<Batch>(&old_op).is_err());

        // Bytes that decode as a batch only if its invariants hold.
        let mixed = codec::encode(&(16u8, vec![get("a"), put("b", b"v")])).unwrap();
        assert!(codec::decode::<Batch>(&mixed).is_err());
        let empty = codec::encode(&(16u8, Vec::<Op>::new())).unwrap();
        assert!(codec::decode::<Batch>(&empty).is_err());
    }
}
