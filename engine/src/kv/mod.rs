//! `KvState`: the deterministic key-value data that every kv replica kind (the Paxos
//! group, shard groups, primary/backup) applies decided operations to.
//!
//! A replica feeds [`KvState::execute`] the operations its log decided, in log order, and
//! answers clients with the returned [`Reply`]. Keys are split into shards by a
//! [`Sharding`] — lab 4's `key2shard` ([`Sharding::LAB`]) or Redis Cluster's hash slots
//! split into contiguous ranges ([`Sharding::Slots`]); each shard is an ordered map that
//! moves on its own ([`KvState::export_shard`] / [`KvState::import_shard`]) so shard groups can
//! hand a shard to its new owner. At-most-once execution (the client dedup table) is not
//! here: it belongs to the replicated state of the replication library, which travels
//! with shards too.
//!
//! # Invariants
//! - **Determinism.** `execute` reads only its argument and `self`: no clock, no RNG, no
//!   IO, and every map is ordered. Replicas that execute the same operations in the same
//!   order hold equal states and produce byte-identical images.
//! - **Placement.** Every stored key lives in shard `shard_of(key)`, and only held shards
//!   have data. An operation on a shard that is not held is refused with
//!   [`Reply::NotHeld`] (lab 4's `ErrWrongGroup`) and changes nothing.
//! - **Ownership of bytes.** Keys and values written by `execute` are copied into their
//!   own allocations, so the map never pins a larger caller buffer (a network read buffer,
//!   a memory-mapped snapshot) in memory. Decoding also copies.
//! - **Cheap copies.** Each shard is a persistent (structurally shared) ordered map, so
//!   cloning the state is O(shards): a frozen copy can be streamed to disk or to a peer
//!   while the original keeps changing, sharing everything that did not change.
//! - **Accounting.** Each shard tracks the sum of its key and value lengths, so
//!   [`KvState::live_bytes`] is exact and cheap.
//!
//! # Images
//! The whole state is written and read as a sequence of *pieces* ([`KvState::encode_piece`],
//! [`KvImageBuilder`]): first the list of held shards, then each shard's entries in key
//! order, a bounded number of bytes per piece. Nothing ever holds the whole encoded state:
//! snapshots stream pieces to a file and state transfer streams them to a peer.
//!
//! # Failure model
//! `execute` cannot fail and never panics on any operation. Bytes that come from outside —
//! image pieces and shard transfers — are validated before they change anything (shard in
//! range, every key in the shard it claims and in ascending order, shard not already held);
//! a bad input is an [`Error::Invalid`] or [`Error::Codec`]. Misuse of the shard calls
//! (importing a shard already held, creating one twice) is also an `Err` rather than a
//! panic: every replica applies the same log, so a panic here would stop the whole group
//! at the same index.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{Error, Result};

pub mod scan;

use scan::read_page;
pub use scan::{Scan, ScanEntry, ScanPage, SCAN_COUNT_MAX, SCAN_PAGE_BYTES_MAX};

/// Number of shards the key space is split into in the labs (lab 4's `NShards`).
pub const SHARDS: u32 = 10;
/// Redis Cluster's hash slots.
pub const SLOTS: u32 = 16384;
/// Most bytes one key's value may hold. A write that would make a value longer (a Put of
/// more, an Append past it) changes nothing and replies [`Reply::TooLarge`]: one WAL record
/// must hold the value with the rest of its batch, and a reply, a client frame and a
/// shard-transfer piece must each carry it whole.
pub const VALUE_BYTES_MAX: usize = 16 << 20;

/// How keys map to shards. Part of the replicated state: every replica of a cluster must
/// use the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharding {
    /// Lab 4's `key2shard`: the key's first byte modulo `shards` (the empty key in shard 0).
    FirstByte {
        /// Number of shards.
        shards: u32,
    },
    /// Redis Cluster's: CRC16/XMODEM of the key — or of its `{hash tag}`, the part between
    /// the first `{` and the next `}` when that is not empty — modulo [`SLOTS`]; shard `i`
    /// of `shards` holds a contiguous range of slots, so keys that share a tag share a
    /// shard.
    Slots {
        /// Number of shards (`1..=SLOTS`).
        shards: u32,
    },
}

impl Sharding {
    /// The labs' mapping: first byte modulo 10.
    pub const LAB: Sharding = Sharding::FirstByte { shards: SHARDS };

    /// Number of shards.
    pub fn shards(self) -> u32 {
        match self {
            Sharding::FirstByte { shards } | Sharding::Slots { shards } => shards,
        }
    }

    /// Every shard id, ascending.
    pub fn all(self) -> impl Iterator<Item = ShardId> {
        (0..self.shards()).map(ShardId)
    }

    /// The shard `key` belongs to.
    pub fn shard_of(self, key: &[u8]) -> ShardId {
        match self {
            Sharding::FirstByte { shards } => {
                let first = key.first().copied().unwrap_or(0);
                ShardId(u32::from(first) % shards.max(1))
            }
            Sharding::Slots { .. } => self.shard_of_slot(slot_of(key)),
        }
    }

    /// The shard holding Redis Cluster slot `slot` (with [`Sharding::Slots`]; with
    /// [`Sharding::FirstByte`], slots mean nothing and every slot maps to shard 0).
    pub fn shard_of_slot(self, slot: u16) -> ShardId {
        match self {
            Sharding::Slots { shards } => {
                let shards = shards.clamp(1, SLOTS);
                ShardId((u32::from(slot) * shards) / SLOTS)
            }
            Sharding::FirstByte { .. } => ShardId(0),
        }
    }

    /// The slots shard `shard` holds, as `(first, last)` (with [`Sharding::Slots`]).
    pub fn slots_of(self, shard: ShardId) -> Option<(u16, u16)> {
        let Sharding::Slots { shards } = self else {
            return None;
        };
        let shards = shards.clamp(1, SLOTS);
        if shard.0 >= shards {
            return None;
        }
        // The smallest slot s with s * shards / SLOTS == shard, and the last one.
        let first = (shard.0 * SLOTS).div_ceil(shards);
        let next = ((shard.0 + 1) * SLOTS).div_ceil(shards);
        Some((first as u16, (next - 1) as u16))
    }

    /// Checks a shard id is in range.
    pub fn check(self, shard: ShardId) -> Result<()> {
        if shard.0 >= self.shards() {
            return Err(Error::Invalid(format!(
                "shard {shard} out of range ({} shards)",
                self.shards()
            )));
        }
        Ok(())
    }
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster hashes keys.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster hash slot of `key`: CRC16 of the key, or of its hash tag.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    (u32::from(crc16(hashed)) % SLOTS) as u16
}

/// Identifies a shard; valid ids are `0..SHARDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl ShardId {
    /// Every valid shard id, in ascending order.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..SHARDS).map(ShardId)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard a key belongs to under [`Sharding::LAB`] (lab 4's `key2shard`).
pub fn shard_of(key: &[u8]) -> ShardId {
    Sharding::LAB.shard_of(key)
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
    /// Read a page of one shard's keys (see [`scan`]). Replies [`Reply::Scanned`]. The
    /// last variant, so ops encoded before scans existed decode unchanged.
    Scan(Box<Scan>),
    /// Count one shard's keys. Replies [`Reply::Counted`]. After [`Op::Scan`], so ops
    /// encoded before counts existed decode unchanged.
    Count {
        /// The shard counted.
        shard: ShardId,
    },
}

impl Op {
    /// The key this operation touches (`None` for a scan, which reads a range of a shard).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Append { key, .. } | Op::Delete { key } => {
                Some(key)
            }
            Op::Scan(_) | Op::Count { .. } => None,
        }
    }

    /// The shard this operation touches under `sharding`.
    pub fn shard(&self, sharding: Sharding) -> ShardId {
        match self {
            Op::Scan(scan) => scan.shard,
            Op::Count { shard } => *shard,
            Op::Get { key } | Op::Put { key, .. } | Op::Append { key, .. } | Op::Delete { key } => {
                sharding.shard_of(key)
            }
        }
    }

    /// True for operations that change nothing.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. } | Op::Scan(_) | Op::Count { .. })
    }

    /// Bytes of key and value the operation carries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Get { key } | Op::Delete { key } => key.len(),
            Op::Put { key, value } | Op::Append { key, value } => key.len() + value.len(),
            Op::Scan(scan) => scan.payload_bytes(),
            Op::Count { .. } => 0,
        }
    }
}

/// The result of executing an [`Op`]; shaped for a Redis front end.
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
    /// The replies of a request that ran several ops as one batch (a pipelining client,
    /// an MGET; see `kv_replication::kvgroup::Batch`): one per op, in order, none of them
    /// a `Batch`. [`KvState::execute`] never returns it. The last variant, so replies
    /// encoded before batches existed decode unchanged.
    Batch(Vec<Reply>),
    /// A scan's page ([`Op::Scan`]). After [`Reply::Batch`], so replies encoded before
    /// scans existed decode unchanged.
    Scanned(ScanPage),
    /// A Put or Append refused because the value would have been this many bytes, over
    /// [`VALUE_BYTES_MAX`]; nothing was changed. The last variant, so replies encoded
    /// before it existed decode unchanged.
    TooLarge(u64),
    /// A shard's number of keys ([`Op::Count`]). The last variant, so replies encoded
    /// before it existed decode unchanged.
    Counted(u64),
}

/// One shard's contents, as handed to a shard's new owner. Cheap to copy (the map is
/// persistent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardData {
    /// Which shard this is.
    pub shard: ShardId,
    /// The shard's keys and values.
    pub entries: OrdMap<Bytes, Bytes>,
}

impl ShardData {
    /// Sum of key and value lengths in this shard.
    pub fn live_bytes(&self) -> u64 {
        self.entries.iter().map(|(k, v)| entry_bytes(k, v)).sum()
    }
}

/// The replicated key-value data: the held shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvState {
    sharding: Sharding,
    shards: BTreeMap<ShardId, Shard>,
}

impl Default for KvState {
    fn default() -> Self {
        KvState::new()
    }
}

/// Where the next image piece starts (see [`KvState::encode_piece`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCursor {
    shard: ShardId,
    /// Entries strictly after this key (from the first one if `None`).
    after: Option<Bytes>,
}

/// One piece of an image. An enum so the first byte tags the format.
#[derive(Serialize, Deserialize, Debug)]
enum Piece {
    /// The first piece: the sharding, and which shards are held (so empty ones exist
    /// after a restore).
    Shards {
        sharding: Sharding,
        held: Vec<ShardId>,
    },
    /// Entries of one shard, in ascending key order, each key above every key of that
    /// shard in earlier pieces.
    Entries {
        shard: ShardId,
        entries: Vec<(Bytes, Bytes)>,
    },
}

/// Per-entry allowance for encoding overhead when sizing pieces.
const PIECE_ENTRY_OVERHEAD: usize = 16;

impl KvState {
    /// An empty state holding every shard of [`Sharding::LAB`]: what a single-group
    /// replica (kvpaxos, primary/backup) starts from.
    pub fn new() -> KvState {
        KvState::holding_all(Sharding::LAB)
    }

    /// An empty state holding every shard of `sharding`.
    pub fn holding_all(sharding: Sharding) -> KvState {
        KvState {
            sharding,
            shards: sharding.all().map(|s| (s, Shard::default())).collect(),
        }
    }

    /// An empty state holding no shard of [`Sharding::LAB`].
    pub fn without_shards() -> KvState {
        KvState::holding_none(Sharding::LAB)
    }

    /// An empty state holding no shard of `sharding`: what a shard-group replica starts
    /// from before its first configuration gives it shards ([`KvState::create_shard`] or
    /// [`KvState::import_shard`]).
    pub fn holding_none(sharding: Sharding) -> KvState {
        KvState {
            sharding,
            shards: BTreeMap::new(),
        }
    }

    /// How keys map to shards here.
    pub fn sharding(&self) -> Sharding {
        self.sharding
    }

    /// Executes one decided operation and returns its reply ([`Reply::NotHeld`], changing
    /// nothing, if its shard is not held).
    pub fn execute(&mut self, op: &Op) -> Reply {
        if op.is_read() {
            return self.read(op);
        }
        let shard_id = op.shard(self.sharding);
        match self.shards.get_mut(&shard_id) {
            Some(shard) => shard.execute(op),
            None => Reply::NotHeld(shard_id),
        }
    }

    /// Executes a read op ([`Op::is_read`]) without changing anything: what
    /// [`KvState::execute`] answers for it. Panics on a write.
    pub fn read(&self, op: &Op) -> Reply {
        let shard_id = op.shard(self.sharding);
        match (op, self.shards.get(&shard_id)) {
            (Op::Get { key }, Some(shard)) => Reply::Value(shard.entries.get(key).cloned()),
            (Op::Scan(scan), Some(shard)) => Reply::Scanned(read_page(&shard.entries, scan)),
            (Op::Count { .. }, Some(shard)) => Reply::Counted(shard.entries.len() as u64),
            (Op::Get { .. } | Op::Scan(_) | Op::Count { .. }, None) => Reply::NotHeld(shard_id),
            (write, _) => panic!("read called with a write: {write:?}"),
        }
    }

    /// Reads a key without going through a log (for read paths that are already
    /// linearised some other way, tests, and tools). `None` if the key is missing or its
    /// shard is not held.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.shards
            .get(&self.sharding.shard_of(key))?
            .entries
            .get(key)
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
        self.sharding.check(shard)?;
        self.refuse_held(shard)?;
        self.shards.insert(shard, Shard::default());
        Ok(())
    }

    /// A copy of `shard`'s data, or `None` if it is not held. The shard stays held; call
    /// [`KvState::drop_shard`] once the new owner has it. Cheap: the map is shared.
    pub fn export_shard(&self, shard: ShardId) -> Option<ShardData> {
        let held = self.shards.get(&shard)?;
        Some(ShardData {
            shard,
            entries: held.entries.clone(),
        })
    }

    /// Starts holding the shard in `data`. Errors, changing nothing, if the shard id is out
    /// of range, a key does not belong to the shard, or the shard is already held (drop it
    /// first: an import never overwrites data silently).
    pub fn import_shard(&mut self, data: ShardData) -> Result<()> {
        self.sharding.check(data.shard)?;
        let sharding = self.sharding;
        if let Some(key) = data
            .entries
            .keys()
            .find(|key| sharding.shard_of(key) != data.shard)
        {
            return Err(misplaced(key, data.shard, sharding));
        }
        self.refuse_held(data.shard)?;
        self.shards
            .insert(data.shard, Shard::from_entries(data.entries));
        Ok(())
    }

    /// Adds `entries` to the held shard `shard` (a shard that arrives in pieces), each
    /// replacing any value its key had. Errors, changing nothing, if the shard is not held
    /// or a key belongs to another shard.
    pub fn insert_entries(&mut self, shard: ShardId, entries: &[(Bytes, Bytes)]) -> Result<()> {
        let sharding = self.sharding;
        if let Some((key, _)) = entries
            .iter()
            .find(|(key, _)| sharding.shard_of(key) != shard)
        {
            return Err(misplaced(key, shard, sharding));
        }
        let Some(held) = self.shards.get_mut(&shard) else {
            return Err(Error::Invalid(format!("shard {shard} is not held")));
        };
        for (key, value) in entries {
            held.put(key, value);
        }
        Ok(())
    }

    /// Stops holding `shard` and frees its data. Returns whether it was held.
    pub fn drop_shard(&mut self, shard: ShardId) -> bool {
        self.shards.remove(&shard).is_some()
    }

    /// Sum of key and value lengths over all held shards (excludes allocator slack).
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

    /// Appends to `out` the image piece that starts at `from` (`None`: the first piece),
    /// holding entries until their bytes reach `budget` (at least one entry); returns where
    /// the next piece starts, or `None` after the last piece. Equal states give equal
    /// pieces.
    pub fn encode_piece(
        &self,
        from: Option<&KvCursor>,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Option<KvCursor> {
        let Some(from) = from else {
            let piece = Piece::Shards {
                sharding: self.sharding,
                held: self.shards.keys().copied().collect(),
            };
            out.extend(encode(&piece).expect("a piece always encodes"));
            return self.cursor_at(None);
        };
        let shard = self.shards.get(&from.shard)?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        let range = match &from.after {
            Some(after) => shard
                .entries
                .range::<_, Bytes>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => shard.entries.range::<_, Bytes>(..),
        };
        let mut more = false;
        for (key, value) in range {
            if !entries.is_empty() && bytes >= budget {
                more = true;
                break;
            }
            bytes += entry_bytes(key, value) as usize + PIECE_ENTRY_OVERHEAD;
            entries.push((key.clone(), value.clone()));
        }
        let last = entries.last().map(|(k, _)| k.clone());
        let piece = Piece::Entries {
            shard: from.shard,
            entries,
        };
        out.extend(encode(&piece).expect("a piece always encodes"));
        if more {
            Some(KvCursor {
                shard: from.shard,
                after: last,
            })
        } else {
            self.cursor_at(Some(from.shard))
        }
    }

    /// The cursor at the start of the first held shard after `after` (or the first one).
    fn cursor_at(&self, after: Option<ShardId>) -> Option<KvCursor> {
        let next = match after {
            None => self.shards.keys().next(),
            Some(shard) => self
                .shards
                .range((std::ops::Bound::Excluded(shard), std::ops::Bound::Unbounded))
                .map(|(s, _)| s)
                .next(),
        };
        next.map(|&shard| KvCursor { shard, after: None })
    }

    /// The whole image as one buffer (for tests and small states; replicas stream pieces).
    pub fn image_bytes(&self) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut cursor = None;
        loop {
            let mut piece = Vec::new();
            cursor = self.encode_piece(cursor.as_ref(), 1 << 20, &mut piece);
            pieces.push(piece);
            if cursor.is_none() {
                return pieces;
            }
        }
    }

    fn refuse_held(&self, shard: ShardId) -> Result<()> {
        if self.holds(shard) {
            return Err(Error::Invalid(format!("shard {shard} is already held")));
        }
        Ok(())
    }
}

/// Rebuilds a [`KvState`] from image pieces, in order, validating each.
#[derive(Debug)]
pub struct KvImageBuilder {
    state: KvState,
    started: bool,
}

impl Default for KvImageBuilder {
    fn default() -> Self {
        KvImageBuilder::new()
    }
}

impl KvImageBuilder {
    /// A builder expecting the first piece.
    pub fn new() -> KvImageBuilder {
        KvImageBuilder {
            state: KvState::without_shards(),
            started: false,
        }
    }

    /// Adds the next piece. Errors if it does not decode, or would misplace a key, hold a
    /// shard twice, or break key order.
    pub fn add(&mut self, piece: &[u8]) -> Result<()> {
        match decode::<Piece>(piece)? {
            Piece::Shards { sharding, held } => {
                if self.started {
                    return Err(Error::Invalid("a second list of shards".into()));
                }
                self.started = true;
                self.state = KvState::holding_none(sharding);
                for shard in held {
                    self.state.create_shard(shard)?;
                }
            }
            Piece::Entries { shard, entries } => {
                if !self.started {
                    return Err(Error::Invalid("entries before the list of shards".into()));
                }
                let Some(held) = self.state.shards.get_mut(&shard) else {
                    return Err(Error::Invalid(format!(
                        "entries of shard {shard}, not held"
                    )));
                };
                let sharding = self.state.sharding;
                for (key, value) in entries {
                    if sharding.shard_of(&key) != shard {
                        return Err(misplaced(&key, shard, sharding));
                    }
                    if held.entries.get_max().is_some_and(|(last, _)| *last >= key) {
                        return Err(Error::Invalid(format!(
                            "keys of shard {shard} out of order"
                        )));
                    }
                    held.live_bytes += entry_bytes(&key, &value);
                    held.entries
                        .insert(Bytes::copy_from_slice(&key), Bytes::copy_from_slice(&value));
                }
            }
        }
        Ok(())
    }

    /// The state, once every piece was added.
    pub fn finish(self) -> Result<KvState> {
        if !self.started {
            return Err(Error::Invalid("an image without its list of shards".into()));
        }
        Ok(self.state)
    }
}

/// One held shard: its ordered map and the sum of its key and value lengths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Shard {
    entries: OrdMap<Bytes, Bytes>,
    live_bytes: u64,
}

impl Shard {
    fn from_entries(entries: OrdMap<Bytes, Bytes>) -> Shard {
        let live_bytes = entries.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        Shard {
            entries,
            live_bytes,
        }
    }

    fn execute(&mut self, op: &Op) -> Reply {
        match op {
            Op::Get { .. } | Op::Scan(_) | Op::Count { .. } => {
                unreachable!("reads go through KvState::read")
            }
            Op::Put { value, .. } if value.len() > VALUE_BYTES_MAX => {
                Reply::TooLarge(len_u64(value))
            }
            Op::Put { key, value } => {
                self.put(key, value);
                Reply::Ok
            }
            Op::Append { key, value } => {
                let len = self.entries.get(key.as_ref()).map_or(0, Bytes::len) + value.len();
                if len > VALUE_BYTES_MAX {
                    Reply::TooLarge(len as u64)
                } else {
                    Reply::Appended(self.append(key, value))
                }
            }
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

    /// Appends and returns the new length. When nothing else shares the old value (a
    /// reply, a frozen copy of the state), its buffer is extended in place (amortised
    /// growth), so repeated appends are not quadratic.
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

fn misplaced(key: &[u8], shard: ShardId, sharding: Sharding) -> Error {
    Error::Invalid(format!(
        "key of {} bytes belongs to shard {}, found in shard {shard}",
        key.len(),
        sharding.shard_of(key)
    ))
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    len_u64(key) + len_u64(value)
}

fn len_u64(bytes: &[u8]) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    bytes.len() as u64
}

#[cfg(test)]
mod tests;
