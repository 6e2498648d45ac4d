//! `KvState`: the deterministic key-value state machine that every kv replica kind
//! (kvpaxos, primary/backup, shard groups) applies decided requests to.
//!
//! A replica feeds [`KvState::apply`] the requests its log decided, in log order, and
//! answers clients with the returned [`Reply`]. Keys are split into [`SHARDS`] shards by
//! [`shard_of`] (lab 4's `key2shard`); each shard is an ordered map that serialises on its
//! own ([`KvState::export_shard`] / [`KvState::import_shard`]) so shard groups can hand a
//! shard, with the dedup table, to its new owner. The whole state serialises for snapshots
//! ([`KvState::snapshot_bytes`] / [`KvState::from_snapshot_bytes`]).
//!
//! # Invariants
//! - **Determinism.** `apply` reads only its argument and `self`: no clock, no RNG, no IO,
//!   and every map is a `BTreeMap`. Replicas that apply the same requests in the same order
//!   hold equal states and produce byte-identical snapshots.
//! - **At-most-once.** The client model is the labs': a client has at most one request
//!   outstanding and numbers its requests with strictly increasing `seq` (one counter
//!   across all shards). A request executes only if its `seq` is above the last executed
//!   `seq` of its client; a re-sent request gets the reply stored when it first executed;
//!   an older one gets [`Reply::Stale`]. Gets are deduplicated too: they are in the log.
//! - **Placement.** Every stored key lives in shard `shard_of(key)`, and only held shards
//!   have data. A request on a shard that is not held is refused with [`Reply::NotHeld`]
//!   (lab 4's `ErrWrongGroup`) and changes nothing, not even the dedup table, so the client
//!   may send the same `seq` to the shard's new owner.
//! - **Ownership of bytes.** Keys and values written by `apply` are copied into their own
//!   allocations, so the map never pins a larger caller buffer (a network read buffer, a
//!   memory-mapped snapshot) in memory. Decoding also copies.
//! - **Accounting.** Each shard tracks the sum of its key and value lengths, so
//!   [`KvState::live_bytes`] is exact and cheap.
//!
//! # Failure model
//! `apply` cannot fail and never panics on any request. Bytes that come from outside —
//! snapshots and shard transfers — are validated before they change anything (shard in
//! range, every key in the shard it claims, shard not already held); a bad input is an
//! [`Error::Invalid`] or [`Error::Codec`] and leaves the state untouched. Misuse of the
//! shard calls (importing a shard already held, creating one twice) is also an `Err`
//! rather than a panic: every replica applies the same log, so a panic here would stop
//! the whole group at the same index.
//!
//! # Dedup table growth
//! The dedup table holds one entry (last seq + its reply) per client ever seen, and a
//! shard export carries the whole table (a client's seq counter spans shards, so any entry
//! may matter to the new owner). It is trimmed only by [`KvState::forget_client`], which
//! the replica layer must itself apply through the log (for example when a client session
//! ends) so that every replica forgets at the same point.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{Error, Result};

/// Number of shards the key space is split into (lab 4's `NShards`).
pub const SHARDS: u32 = 10;

/// Identifies a client for at-most-once deduplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// Identifies a shard; valid ids are `0..SHARDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl ShardId {
    /// Every valid shard id, in ascending order.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..SHARDS).map(ShardId)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard a key belongs to: its first byte modulo [`SHARDS`]; the empty key is in
/// shard 0. This is lab 4's `key2shard`.
pub fn shard_of(key: &[u8]) -> ShardId {
    let first = key.first().copied().unwrap_or(0);
    ShardId(u32::from(first) % SHARDS)
}

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read a key. Replies [`Reply::Value`].
    Get {
        /// The key to read.
        key: Bytes,
    },
    /// Set a key, replacing any value. Replies [`Reply::Ok`].
    Put {
        /// The key to write.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Append to a key's value, creating the key if missing. Replies [`Reply::Appended`].
    Append {
        /// The key to extend.
        key: Bytes,
        /// The bytes to add at the end.
        value: Bytes,
    },
    /// Remove a key. Replies [`Reply::Deleted`].
    Delete {
        /// The key to remove.
        key: Bytes,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Append { key, .. } | Op::Delete { key } => {
                key
            }
        }
    }

    /// The shard this operation touches.
    pub fn shard(&self) -> ShardId {
        shard_of(self.key())
    }
}

/// A client's request: the unit of at-most-once execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who sent it.
    pub client: ClientId,
    /// The client's sequence number; strictly increasing per client.
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// The result of applying a [`Request`]; shaped for a Redis front end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A Get's result: `None` if the key is missing (Redis nil).
    Value(Option<Bytes>),
    /// A Put succeeded.
    Ok,
    /// An Append succeeded; the value's new length in bytes (Redis APPEND's reply).
    Appended(u64),
    /// A Delete ran; whether the key existed (Redis DEL's count, 0 or 1).
    Deleted(bool),
    /// The request's seq is below the last seq executed for its client, whose reply is no
    /// longer kept. Nothing was executed. A client that follows the one-outstanding-request
    /// rule only sees this for a delayed duplicate it has already given up on.
    Stale {
        /// The last seq executed for this client.
        last_seq: u64,
    },
    /// The key's shard is not held here (lab 4's `ErrWrongGroup`). Nothing was executed or
    /// recorded; retry the same request at the shard's owner.
    NotHeld(ShardId),
}

/// The at-most-once record for one client: its last executed seq and that request's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// The last seq executed for the client.
    pub seq: u64,
    /// The reply that request produced, returned again if it is re-sent.
    pub reply: Reply,
}

/// One shard's contents plus the dedup table, as handed to a shard's new owner.
///
/// Produced by [`KvState::export_shard`], consumed by [`KvState::import_shard`]; encoded
/// on its own with [`ShardData::to_bytes`] / [`ShardData::from_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    /// Which shard this is.
    pub shard: ShardId,
    /// The shard's keys and values.
    pub entries: BTreeMap<Bytes, Bytes>,
    /// The exporter's whole dedup table (see the module docs for why it is whole).
    pub dedup: BTreeMap<ClientId, DedupEntry>,
}

impl ShardData {
    /// Encodes the shard for transfer or logging.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    /// Decodes and validates a shard encoded by [`ShardData::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ShardData> {
        let data: ShardData = decode(bytes)?;
        validate_shard(data.shard, &data.entries)?;
        Ok(data)
    }

    /// Sum of key and value lengths in this shard.
    pub fn live_bytes(&self) -> u64 {
        self.entries.iter().map(|(k, v)| entry_bytes(k, v)).sum()
    }
}

/// The replicated key-value state: held shards plus the client dedup table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvState {
    shards: BTreeMap<ShardId, Shard>,
    dedup: BTreeMap<ClientId, DedupEntry>,
}

impl Default for KvState {
    fn default() -> Self {
        KvState::new()
    }
}

impl KvState {
    /// An empty state holding every shard: what a single-group replica (kvpaxos,
    /// primary/backup) starts from.
    pub fn new() -> KvState {
        KvState {
            shards: ShardId::all().map(|s| (s, Shard::default())).collect(),
            dedup: BTreeMap::new(),
        }
    }

    /// An empty state holding no shard: what a shard-group replica starts from before its
    /// first configuration gives it shards ([`KvState::create_shard`] or
    /// [`KvState::import_shard`]).
    pub fn without_shards() -> KvState {
        KvState {
            shards: BTreeMap::new(),
            dedup: BTreeMap::new(),
        }
    }

    /// Applies one decided request, at most once per `(client, seq)`, and returns its reply.
    ///
    /// Order of checks: shard held (else [`Reply::NotHeld`], nothing recorded); then dedup
    /// (equal seq: the stored reply; lower seq: [`Reply::Stale`]); then execute and record.
    pub fn apply(&mut self, request: &Request) -> Reply {
        let shard_id = request.op.shard();
        let Some(shard) = self.shards.get_mut(&shard_id) else {
            return Reply::NotHeld(shard_id);
        };
        if let Some(entry) = self.dedup.get(&request.client) {
            if request.seq == entry.seq {
                return entry.reply.clone();
            }
            if request.seq < entry.seq {
                return Reply::Stale {
                    last_seq: entry.seq,
                };
            }
        }
        let reply = shard.execute(&request.op);
        let entry = DedupEntry {
            seq: request.seq,
            reply: reply.clone(),
        };
        self.dedup.insert(request.client, entry);
        reply
    }

    /// Reads a key without going through the log or the dedup table (for read paths that
    /// are already linearised some other way, tests, and tools). `None` if the key is
    /// missing or its shard is not held.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.shards.get(&shard_of(key))?.entries.get(key)
    }

    /// Whether this state holds (serves) `shard`.
    pub fn holds(&self, shard: ShardId) -> bool {
        self.shards.contains_key(&shard)
    }

    /// The held shards, ascending.
    pub fn held_shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.shards.keys().copied()
    }

    /// Starts holding `shard`, empty (a shard that no group held before, as in lab 4's
    /// first configuration). Errors if the id is out of range or the shard is already held.
    pub fn create_shard(&mut self, shard: ShardId) -> Result<()> {
        validate_shard(shard, &BTreeMap::new())?;
        self.refuse_held(shard)?;
        self.shards.insert(shard, Shard::default());
        Ok(())
    }

    /// A copy of `shard`'s data plus the whole dedup table, or `None` if it is not held.
    /// The shard stays held; call [`KvState::drop_shard`] once the new owner has it.
    /// Cheap: keys and values are reference-counted, not copied.
    pub fn export_shard(&self, shard: ShardId) -> Option<ShardData> {
        let held = self.shards.get(&shard)?;
        Some(ShardData {
            shard,
            entries: held.entries.clone(),
            dedup: self.dedup.clone(),
        })
    }

    /// Starts holding the shard in `data`, and merges its dedup table into ours keeping, per
    /// client, the entry with the higher seq (ours on a tie).
    ///
    /// Errors, changing nothing, if the shard id is out of range, a key does not belong to
    /// the shard, or the shard is already held (drop it first: an import never overwrites
    /// data silently).
    pub fn import_shard(&mut self, data: ShardData) -> Result<()> {
        validate_shard(data.shard, &data.entries)?;
        self.refuse_held(data.shard)?;
        self.shards
            .insert(data.shard, Shard::from_entries(data.entries));
        for (client, incoming) in data.dedup {
            self.merge_dedup(client, incoming);
        }
        Ok(())
    }

    /// Stops holding `shard` and frees its data. Returns whether it was held. The dedup
    /// table is kept: other shards' clients may still need it.
    pub fn drop_shard(&mut self, shard: ShardId) -> bool {
        self.shards.remove(&shard).is_some()
    }

    /// The last seq executed for `client`, if it has an entry.
    pub fn last_seq(&self, client: ClientId) -> Option<u64> {
        self.dedup.get(&client).map(|entry| entry.seq)
    }

    /// Removes `client`'s dedup entry, returning whether it had one. This is how the dedup
    /// table stays bounded.
    ///
    /// After this, a re-sent request from that client would execute again, so forget only
    /// clients that will send nothing more (a closed session, an expired lease), and do it
    /// through the log so every replica forgets at the same point.
    pub fn forget_client(&mut self, client: ClientId) -> bool {
        self.dedup.remove(&client).is_some()
    }

    /// Number of clients in the dedup table.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Sum of key and value lengths over all held shards (excludes the dedup table and
    /// allocator slack).
    pub fn live_bytes(&self) -> u64 {
        self.shards.values().map(|shard| shard.live_bytes).sum()
    }

    /// Number of keys over all held shards.
    pub fn len(&self) -> usize {
        self.shards.values().map(|shard| shard.entries.len()).sum()
    }

    /// Whether no held shard has a key.
    pub fn is_empty(&self) -> bool {
        self.shards.values().all(|shard| shard.entries.is_empty())
    }

    /// Encodes the whole state (held shards and dedup table). Equal states give equal
    /// bytes. The encoding starts with a format tag, so later formats can still read it.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let shards = self
            .shards
            .iter()
            .map(|(&shard, held)| ShardImage {
                shard,
                entries: Cow::Borrowed(&held.entries),
            })
            .collect();
        let image = StateImage::V1 {
            shards,
            dedup: Cow::Borrowed(&self.dedup),
        };
        // Postcard fails only on types it cannot express (e.g. sequences of unknown
        // length); this image has none, so a failure is a bug, not an operating condition.
        encode(&image).expect("encoding a KvState snapshot image cannot fail")
    }

    /// Decodes and validates bytes from [`KvState::snapshot_bytes`].
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<KvState> {
        let StateImage::V1 { shards, dedup } = decode::<StateImage<'static>>(bytes)?;
        let mut state = KvState::without_shards();
        for image in shards {
            validate_shard(image.shard, &image.entries)?;
            state.refuse_held(image.shard)?;
            let held = Shard::from_entries(image.entries.into_owned());
            state.shards.insert(image.shard, held);
        }
        state.dedup = dedup.into_owned();
        Ok(state)
    }

    fn refuse_held(&self, shard: ShardId) -> Result<()> {
        if self.holds(shard) {
            return Err(Error::Invalid(format!("shard {shard} is already held")));
        }
        Ok(())
    }

    fn merge_dedup(&mut self, client: ClientId, incoming: DedupEntry) {
        let newer = match self.dedup.get(&client) {
            Some(ours) => incoming.seq > ours.seq,
            None => true,
        };
        if newer {
            self.dedup.insert(client, incoming);
        }
    }
}

/// One held shard: its ordered map and the sum of its key and value lengths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Shard {
    entries: BTreeMap<Bytes, Bytes>,
    live_bytes: u64,
}

impl Shard {
    fn from_entries(entries: BTreeMap<Bytes, Bytes>) -> Shard {
        let live_bytes = entries.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        Shard {
            entries,
            live_bytes,
        }
    }

    fn execute(&mut self, op: &Op) -> Reply {
        match op {
            Op::Get { key } => Reply::Value(self.entries.get(key).cloned()),
            Op::Put { key, value } => {
                self.put(key, value);
                Reply::Ok
            }
            Op::Append { key, value } => Reply::Appended(self.append(key, value)),
            Op::Delete { key } => Reply::Deleted(self.delete(key)),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        let value = Bytes::copy_from_slice(value);
        match self.entries.get_mut(key) {
            Some(slot) => {
                self.live_bytes = self.live_bytes - len_u64(slot) + len_u64(&value);
                *slot = value;
            }
            None => {
                self.live_bytes += entry_bytes(key, &value);
                self.entries.insert(Bytes::copy_from_slice(key), value);
            }
        }
    }

    /// Appends and returns the new length. When no reply shares the old value, its buffer
    /// is extended in place (amortised growth), so repeated appends are not quadratic.
    fn append(&mut self, key: &[u8], suffix: &[u8]) -> u64 {
        let Some(slot) = self.entries.get_mut(key) else {
            self.put(key, suffix);
            return len_u64(suffix);
        };
        let mut buffer = match std::mem::take(slot).try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => {
                let mut copy = BytesMut::with_capacity(shared.len() + suffix.len());
                copy.extend_from_slice(&shared);
                copy
            }
        };
        buffer.extend_from_slice(suffix);
        *slot = buffer.freeze();
        self.live_bytes += len_u64(suffix);
        len_u64(slot)
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(value) => {
                self.live_bytes -= entry_bytes(key, &value);
                true
            }
            None => false,
        }
    }
}

/// The snapshot encoding. An enum so its first byte tags the format: a later format is a
/// new variant, and old snapshots still decode.
#[derive(Serialize, Deserialize)]
enum StateImage<'a> {
    V1 {
        shards: Vec<ShardImage<'a>>,
        dedup: Cow<'a, BTreeMap<ClientId, DedupEntry>>,
    },
}

#[derive(Serialize, Deserialize)]
struct ShardImage<'a> {
    shard: ShardId,
    entries: Cow<'a, BTreeMap<Bytes, Bytes>>,
}

/// Checks what a shard from outside must satisfy: its id is in range and every key
/// belongs to it.
fn validate_shard(shard: ShardId, entries: &BTreeMap<Bytes, Bytes>) -> Result<()> {
    if shard.0 >= SHARDS {
        return Err(Error::Invalid(format!(
            "shard {shard} out of range (SHARDS = {SHARDS})"
        )));
    }
    if let Some(key) = entries.keys().find(|key| shard_of(key) != shard) {
        return Err(Error::Invalid(format!(
            "key of {} bytes belongs to shard {}, found in shard {shard}",
            key.len(),
            shard_of(key)
        )));
    }
    Ok(())
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    len_u64(key) + len_u64(value)
}

fn len_u64(bytes: &[u8]) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    bytes.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(client: u64, seq: u64, op: Op) -> Request {
        Request {
            client: ClientId(client),
            seq,
            op,
        }
    }

    fn get(key: &'static [u8]) -> Op {
        Op::Get {
            key: Bytes::from_static(key),
        }
    }

    fn put(key: &'static [u8], value: &'static [u8]) -> Op {
        Op::Put {
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
        }
    }

    fn append(key: &'static [u8], value: &'static [u8]) -> Op {
        Op::Append {
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
        }
    }

    fn delete(key: &'static [u8]) -> Op {
        Op::Delete {
            key: Bytes::from_static(key),
        }
    }

    /// A key in the given shard: its first byte is `shard` itself.
    fn key_in(shard: u32) -> Bytes {
        Bytes::from(vec![u8::try_from(shard).unwrap(), b'k'])
    }

    #[test]
    fn shard_of_is_first_byte_mod_shards_and_empty_key_is_shard_zero() {
        assert_eq!(shard_of(b""), ShardId(0));
        assert_eq!(shard_of(b"a"), ShardId(u32::from(b'a') % SHARDS));
        assert_eq!(shard_of(b"a"), ShardId(7));
        assert_eq!(shard_of(&[255, 1, 2]), ShardId(5));
        assert_eq!(shard_of(&[10]), ShardId(0));
        assert_eq!(ShardId::all().count(), SHARDS as usize);
    }

    #[test]
    fn get_of_missing_key_is_nil_and_put_then_get_reads_it() {
        let mut kv = KvState::new();
        assert_eq!(kv.apply(&request(1, 1, get(b"x"))), Reply::Value(None));
        assert_eq!(kv.apply(&request(1, 2, put(b"x", b"1"))), Reply::Ok);
        let value = Some(Bytes::from_static(b"1"));
        assert_eq!(kv.apply(&request(1, 3, get(b"x"))), Reply::Value(value));
    }

    #[test]
    fn append_on_missing_key_creates_it_and_returns_new_length() {
        let mut kv = KvState::new();
        assert_eq!(
            kv.apply(&request(1, 1, append(b"k", b"ab"))),
            Reply::Appended(2)
        );
        assert_eq!(
            kv.apply(&request(1, 2, append(b"k", b"cde"))),
            Reply::Appended(5)
        );
        assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"abcde"[..]));
    }

    #[test]
    fn append_copies_when_a_stored_get_reply_shares_the_value() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(b"k", b"ab")));
        let before = kv.apply(&request(2, 1, get(b"k")));
        kv.apply(&request(1, 2, append(b"k", b"c")));
        // The earlier reply (and client 2's dedup entry) still see the old value.
        assert_eq!(before, Reply::Value(Some(Bytes::from_static(b"ab"))));
        assert_eq!(kv.apply(&request(2, 1, get(b"k"))), before);
        assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"abc"[..]));
    }

    #[test]
    fn delete_reports_whether_the_key_existed() {
        let mut kv = KvState::new();
        assert_eq!(
            kv.apply(&request(1, 1, delete(b"k"))),
            Reply::Deleted(false)
        );
        kv.apply(&request(1, 2, put(b"k", b"v")));
        assert_eq!(kv.apply(&request(1, 3, delete(b"k"))), Reply::Deleted(true));
        assert_eq!(kv.get(b"k"), None);
        assert!(kv.is_empty());
    }

    #[test]
    fn resent_request_returns_stored_reply_without_reexecuting() {
        let mut kv = KvState::new();
        let first = request(1, 1, append(b"k", b"x"));
        assert_eq!(kv.apply(&first), Reply::Appended(1));
        assert_eq!(kv.apply(&first), Reply::Appended(1));
        assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"x"[..]));
        assert_eq!(kv.last_seq(ClientId(1)), Some(1));
    }

    #[test]
    fn dedup_matches_on_client_and_seq_only_not_on_the_op() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 4, put(b"k", b"v")));
        // Same seq, different op: still a duplicate of seq 4.
        assert_eq!(kv.apply(&request(1, 4, delete(b"k"))), Reply::Ok);
        assert!(kv.get(b"k").is_some());
    }

    #[test]
    fn older_seq_is_stale_and_not_executed() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 5, put(b"k", b"v")));
        let reply = kv.apply(&request(1, 3, delete(b"k")));
        assert_eq!(reply, Reply::Stale { last_seq: 5 });
        assert!(kv.get(b"k").is_some());
        assert_eq!(kv.last_seq(ClientId(1)), Some(5));
    }

    #[test]
    fn clients_are_deduplicated_independently() {
        let mut kv = KvState::new();
        assert_eq!(
            kv.apply(&request(1, 1, append(b"k", b"a"))),
            Reply::Appended(1)
        );
        assert_eq!(
            kv.apply(&request(2, 1, append(b"k", b"b"))),
            Reply::Appended(2)
        );
        assert_eq!(kv.dedup_len(), 2);
    }

    #[test]
    fn gets_go_through_dedup_and_a_resent_get_returns_the_first_value() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(b"k", b"old")));
        let read = request(2, 1, get(b"k"));
        let first = kv.apply(&read);
        kv.apply(&request(1, 2, put(b"k", b"new")));
        assert_eq!(kv.apply(&read), first);
        assert_eq!(first, Reply::Value(Some(Bytes::from_static(b"old"))));
    }

    #[test]
    fn request_on_unheld_shard_is_refused_and_not_recorded() {
        let mut kv = KvState::without_shards();
        let req = request(1, 1, put(b"a", b"v"));
        assert_eq!(kv.apply(&req), Reply::NotHeld(ShardId(7)));
        assert_eq!(kv.last_seq(ClientId(1)), None);
        kv.create_shard(ShardId(7)).unwrap();
        // The same seq now executes: the refusal did not consume it.
        assert_eq!(kv.apply(&req), Reply::Ok);
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn create_shard_refuses_held_and_out_of_range_shards() {
        let mut kv = KvState::new();
        assert!(matches!(
            kv.create_shard(ShardId(3)),
            Err(Error::Invalid(_))
        ));
        let mut empty = KvState::without_shards();
        assert!(matches!(
            empty.create_shard(ShardId(SHARDS)),
            Err(Error::Invalid(_))
        ));
        assert!(empty.create_shard(ShardId(3)).is_ok());
        assert_eq!(empty.held_shards().collect::<Vec<_>>(), vec![ShardId(3)]);
    }

    #[test]
    fn live_bytes_and_len_track_put_overwrite_append_and_delete() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(b"ab", b"xyz")));
        assert_eq!((kv.live_bytes(), kv.len()), (5, 1));
        kv.apply(&request(1, 2, put(b"ab", b"q")));
        assert_eq!((kv.live_bytes(), kv.len()), (3, 1));
        kv.apply(&request(1, 3, append(b"ab", b"rs")));
        assert_eq!((kv.live_bytes(), kv.len()), (5, 1));
        kv.apply(&request(1, 4, append(b"c", b"")));
        assert_eq!((kv.live_bytes(), kv.len()), (6, 2));
        kv.apply(&request(1, 5, delete(b"ab")));
        assert_eq!((kv.live_bytes(), kv.len()), (1, 1));
    }

    #[test]
    fn export_import_moves_a_shard_with_its_dedup_entries() {
        let mut from = KvState::new();
        let key = key_in(3);
        let req = request(
            9,
            1,
            Op::Append {
                key: key.clone(),
                value: Bytes::from_static(b"v"),
            },
        );
        from.apply(&req);
        let data = from.export_shard(ShardId(3)).unwrap();
        assert_eq!(data.live_bytes(), 3);
        let mut to = KvState::without_shards();
        to.import_shard(data).unwrap();
        assert_eq!(to.get(&key), from.get(&key));
        // The re-sent append is recognised at the new owner.
        assert_eq!(to.apply(&req), Reply::Appended(1));
        assert_eq!(to.live_bytes(), 3);
        assert!(from.drop_shard(ShardId(3)));
        assert_eq!(from.apply(&req), Reply::NotHeld(ShardId(3)));
        assert!(from.export_shard(ShardId(3)).is_none());
    }

    #[test]
    fn import_merge_keeps_the_higher_seq_per_client() {
        let mut exporter = KvState::new();
        exporter.apply(&request(1, 5, put(&[3], b"e")));
        exporter.apply(&request(2, 2, put(&[3], b"f")));
        let data = exporter.export_shard(ShardId(3)).unwrap();

        let mut importer = KvState::without_shards();
        importer.create_shard(ShardId(4)).unwrap();
        importer.apply(&request(1, 7, put(&[4], b"i")));
        importer.apply(&request(2, 1, put(&[4], b"j")));
        importer.import_shard(data).unwrap();
        assert_eq!(importer.last_seq(ClientId(1)), Some(7));
        assert_eq!(importer.last_seq(ClientId(2)), Some(2));
    }

    #[test]
    fn import_refuses_a_held_shard_and_leaves_state_unchanged() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(&[3], b"v")));
        let data = kv.export_shard(ShardId(3)).unwrap();
        let before = kv.clone();
        assert!(matches!(kv.import_shard(data), Err(Error::Invalid(_))));
        assert_eq!(kv, before);
    }

    #[test]
    fn import_refuses_keys_outside_the_shard() {
        let mut entries = BTreeMap::new();
        entries.insert(key_in(4), Bytes::from_static(b"v"));
        let data = ShardData {
            shard: ShardId(3),
            entries,
            dedup: BTreeMap::new(),
        };
        let mut kv = KvState::without_shards();
        assert!(matches!(
            kv.import_shard(data.clone()),
            Err(Error::Invalid(_))
        ));
        assert!(!kv.holds(ShardId(3)));
        let bytes = data.to_bytes().unwrap();
        assert!(matches!(
            ShardData::from_bytes(&bytes),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn shard_data_bytes_round_trip() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(&[3, 1], b"v")));
        kv.apply(&request(2, 1, get(&[3, 1])));
        let data = kv.export_shard(ShardId(3)).unwrap();
        let decoded = ShardData::from_bytes(&data.to_bytes().unwrap()).unwrap();
        assert_eq!(decoded, data);
    }

    #[test]
    fn forget_client_drops_its_entry_so_a_resend_would_execute_again() {
        let mut kv = KvState::new();
        let req = request(1, 1, append(b"k", b"x"));
        kv.apply(&req);
        assert!(kv.forget_client(ClientId(1)));
        assert!(!kv.forget_client(ClientId(1)));
        assert_eq!(kv.dedup_len(), 0);
        assert_eq!(kv.apply(&req), Reply::Appended(2));
    }

    #[test]
    fn snapshot_round_trips_and_is_deterministic() {
        let mut kv = KvState::without_shards();
        kv.create_shard(ShardId(7)).unwrap();
        kv.create_shard(ShardId(0)).unwrap();
        kv.apply(&request(1, 1, put(b"a", b"1")));
        kv.apply(&request(2, 1, append(b"", b"zz")));
        kv.apply(&request(3, 1, get(b"a")));
        let bytes = kv.snapshot_bytes();
        let restored = KvState::from_snapshot_bytes(&bytes).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.snapshot_bytes(), bytes);
        assert_eq!(restored.live_bytes(), kv.live_bytes());
    }

    #[test]
    fn snapshot_decoding_refuses_garbage_and_truncation() {
        let mut kv = KvState::new();
        kv.apply(&request(1, 1, put(b"a", b"1")));
        let bytes = kv.snapshot_bytes();
        assert!(KvState::from_snapshot_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(KvState::from_snapshot_bytes(&[0xff, 0xff, 0xff]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(KvState::from_snapshot_bytes(&trailing).is_err());
    }

    #[test]
    fn snapshot_decoding_refuses_misplaced_keys_and_duplicate_shards() {
        let mut misplaced = BTreeMap::new();
        misplaced.insert(key_in(4), Bytes::new());
        let image = StateImage::V1 {
            shards: vec![ShardImage {
                shard: ShardId(3),
                entries: Cow::Owned(misplaced),
            }],
            dedup: Cow::Owned(BTreeMap::new()),
        };
        let bytes = encode(&image).unwrap();
        assert!(matches!(
            KvState::from_snapshot_bytes(&bytes),
            Err(Error::Invalid(_))
        ));

        let image = StateImage::V1 {
            shards: vec![
                ShardImage {
                    shard: ShardId(3),
                    entries: Cow::Owned(BTreeMap::new()),
                },
                ShardImage {
                    shard: ShardId(3),
                    entries: Cow::Owned(BTreeMap::new()),
                },
            ],
            dedup: Cow::Owned(BTreeMap::new()),
        };
        let bytes = encode(&image).unwrap();
        assert!(matches!(
            KvState::from_snapshot_bytes(&bytes),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn stored_values_do_not_share_the_callers_buffer() {
        let mut kv = KvState::new();
        let buffer = Bytes::from(vec![b'a'; 64]);
        let op = Op::Put {
            key: buffer.slice(0..1),
            value: buffer.slice(1..4),
        };
        kv.apply(&request(1, 1, op));
        // Only our handle remains on the caller's buffer, so it is unique again.
        assert!(buffer.try_into_mut().is_ok());
    }
}
