//! The replicated state of a kv group: the key-value state, the apply cursor, and the ages
//! the dedup table is trimmed by.
//!
//! Invariants: `next` is the first instance not applied; every state change happens in
//! [`Machine::apply`], in log order, and is a pure function of the batch and the state, so
//! replicas at equal `next` hold equal machines (and equal images). The dedup table holds
//! exactly the clients in `last_write`, at most [`DEDUP_CLIENTS_MAX`] of them.
//!
//! Failure model: an image from a peer or the disk is validated on decode (format tag, key
//! placement, consistent ages) and refused as a whole if bad.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kv_engine::kv::{ClientId, KvState, Op, Reply, Request};
use serde::{Deserialize, Serialize};

use super::{Error, Result, DEDUP_CLIENTS_MAX};
use crate::codec;
use crate::paxos::Seq;

/// The replicated state machine of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Machine {
    kv: KvState,
    next: Seq,
    /// Per client: the instance that last applied one of its writes.
    last_write: BTreeMap<ClientId, Seq>,
    /// The same, ordered by age, for eviction.
    by_age: BTreeSet<(Seq, ClientId)>,
    /// A hash chain over every applied value, in order: replicas at equal `next` must have
    /// equal digests (checked by the simulator).
    digest: u64,
}

/// The encoded form of a [`Machine`] (snapshots and state transfer).
#[derive(Serialize, Deserialize)]
enum Image {
    V1 {
        next: Seq,
        digest: u64,
        kv: Bytes,
        last_write: Vec<(ClientId, Seq)>,
    },
}

/// FNV-1a offset basis: the digest of the empty log.
const DIGEST_EMPTY: u64 = 0xcbf2_9ce4_8422_2325;

impl Machine {
    /// An empty group state: nothing applied, every shard held.
    pub fn new() -> Machine {
        Machine {
            kv: KvState::new(),
            next: Seq::ZERO,
            last_write: BTreeMap::new(),
            by_age: BTreeSet::new(),
            digest: DIGEST_EMPTY,
        }
    }

    /// The first instance not applied yet.
    pub fn next(&self) -> Seq {
        self.next
    }

    /// The key-value state.
    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// The hash chain over every value applied so far.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Applies the decided instance `seq` (which must be `next`), whose value is `value`
    /// holding `requests`, and returns one reply per request.
    pub fn apply(&mut self, seq: Seq, value: &[u8], requests: &[Request]) -> Vec<Reply> {
        assert_eq!(seq, self.next, "instances must be applied in order");
        self.digest = chain(self.digest, value);
        let replies = requests.iter().map(|r| self.execute(seq, r)).collect();
        self.evict();
        self.next = seq.next();
        replies
    }

    fn execute(&mut self, seq: Seq, request: &Request) -> Reply {
        if let Op::Get { key } = &request.op {
            // Reads are not recorded for dedup (see the module docs of `kvgroup`).
            return Reply::Value(self.kv.get(key).cloned());
        }
        let reply = self.kv.apply(request);
        if self.kv.last_seq(request.client) == Some(request.seq) {
            self.touch(request.client, seq);
        }
        reply
    }

    fn touch(&mut self, client: ClientId, seq: Seq) {
        if let Some(old) = self.last_write.insert(client, seq) {
            self.by_age.remove(&(old, client));
        }
        self.by_age.insert((seq, client));
    }

    fn evict(&mut self) {
        while self.last_write.len() > DEDUP_CLIENTS_MAX {
            let Some((_, client)) = self.by_age.pop_first() else {
                break;
            };
            self.last_write.remove(&client);
            self.kv.forget_client(client);
        }
    }

    /// The answer for a request already executed here: the stored reply for a re-sent
    /// write, [`Reply::Stale`] for an older one, `None` if the request has not been
    /// executed (or is a Get, which is never recorded). Changes nothing.
    pub fn executed(&mut self, request: &Request) -> Option<Reply> {
        if matches!(request.op, Op::Get { .. }) {
            return None;
        }
        let last = self.kv.last_seq(request.client)?;
        if request.seq > last {
            return None;
        }
        // Not above the last executed seq: `KvState::apply` answers from the dedup table
        // (the stored reply, or `Stale`) and executes nothing.
        Some(self.kv.apply(request))
    }

    /// The encoded state.
    pub fn image(&self) -> Bytes {
        let image = Image::V1 {
            next: self.next,
            digest: self.digest,
            kv: Bytes::from(self.kv.snapshot_bytes()),
            last_write: self.last_write.iter().map(|(c, s)| (*c, *s)).collect(),
        };
        Bytes::from(codec::encode(&image).expect("a machine image always encodes"))
    }

    /// Decodes and validates an image from [`Machine::image`].
    pub fn from_image(bytes: &[u8]) -> Result<Machine> {
        let Image::V1 {
            next,
            digest,
            kv,
            last_write,
        } = codec::decode(bytes)?;
        let kv = KvState::from_snapshot_bytes(&kv)?;
        let mut machine = Machine {
            kv,
            next,
            last_write: BTreeMap::new(),
            by_age: BTreeSet::new(),
            digest,
        };
        for (client, seq) in last_write {
            if seq >= next || machine.kv.last_seq(client).is_none() {
                return Err(Error::Corrupt(format!(
                    "dedup age of client {client} is {seq}, image applied up to {next}"
                )));
            }
            machine.touch(client, seq);
        }
        if machine.last_write.len() != machine.kv.dedup_len() {
            return Err(Error::Corrupt(format!(
                "{} dedup entries but {} ages",
                machine.kv.dedup_len(),
                machine.last_write.len()
            )));
        }
        Ok(machine)
    }
}

/// Extends the hash chain by one value: CRC-32 (hardware-accelerated, so a 16 MiB value
/// costs microseconds, not the tens of milliseconds a byte-at-a-time hash would) seeded
/// with the chain so far, shifted into the chain.
fn chain(digest: u64, value: &[u8]) -> u64 {
    let mut hasher = crc32fast::Hasher::new_with_initial((digest ^ (digest >> 32)) as u32);
    hasher.update(&(value.len() as u64).to_le_bytes());
    hasher.update(value);
    (digest << 32) | u64::from(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u64, seq: u64, key: &str, value: &str) -> Request {
        Request {
            client: ClientId(client),
            seq,
            op: Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            },
        }
    }

    fn get(client: u64, seq: u64, key: &str) -> Request {
        Request {
            client: ClientId(client),
            seq,
            op: Op::Get {
                key: Bytes::copy_from_slice(key.as_bytes()),
            },
        }
    }

    #[test]
    fn gets_read_without_entering_the_dedup_table() {
        let mut m = Machine::new();
        m.apply(Seq(0), b"v", &[put(1, 1, "k", "v")]);
        let replies = m.apply(Seq(1), b"v", &[get(2, 1, "k")]);
        assert_eq!(replies, vec![Reply::Value(Some(Bytes::from_static(b"v")))]);
        assert_eq!(m.kv().dedup_len(), 1);
        assert_eq!(m.executed(&get(2, 1, "k")), None);
    }

    #[test]
    fn a_resent_write_is_answered_from_the_table_and_an_older_one_is_stale() {
        let mut m = Machine::new();
        m.apply(Seq(0), b"v", &[put(1, 5, "k", "v")]);
        assert_eq!(m.executed(&put(1, 5, "k", "x")), Some(Reply::Ok));
        assert_eq!(
            m.executed(&put(1, 4, "k", "x")),
            Some(Reply::Stale { last_seq: 5 })
        );
        assert_eq!(m.executed(&put(1, 6, "k", "x")), None);
        let replies = m.apply(Seq(1), b"v", &[put(1, 5, "k", "again")]);
        assert_eq!(replies, vec![Reply::Ok]);
        assert_eq!(m.kv().get(b"k").unwrap(), &Bytes::from_static(b"v"));
    }

    #[test]
    fn the_dedup_table_forgets_the_least_recently_written_client_beyond_the_cap() {
        let mut m = Machine::new();
        let clients = DEDUP_CLIENTS_MAX as u64 + 5;
        for c in 0..clients {
            m.apply(Seq(c), b"v", &[put(c, 1, "k", "v")]);
        }
        assert_eq!(m.kv().dedup_len(), DEDUP_CLIENTS_MAX);
        // Clients 0..5 wrote longest ago.
        for c in 0..5 {
            assert_eq!(m.kv().last_seq(ClientId(c)), None);
        }
        assert_eq!(m.kv().last_seq(ClientId(5)), Some(1));
    }

    #[test]
    fn images_round_trip_and_equal_logs_give_equal_images() {
        let mut a = Machine::new();
        let mut b = Machine::new();
        for (i, m) in [&mut a, &mut b].into_iter().enumerate() {
            m.apply(Seq(0), b"v", &[put(1, 1, "x", "1"), put(2, 1, "y", "2")]);
            m.apply(Seq(1), b"v", &[get(3, 1, "x")]);
            assert_eq!(m.next(), Seq(2), "machine {i}");
        }
        assert_eq!(a.image(), b.image());
        let restored = Machine::from_image(&a.image()).unwrap();
        assert_eq!(restored, a);
        assert!(Machine::from_image(&a.image()[..5]).is_err());
    }
}
