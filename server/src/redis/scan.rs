//! `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]` and `KEYS pattern` over the groups.
//!
//! Both walk the shards in ascending order, reading each shard by pages ([`Op::Scan`]):
//! every page is one linearizable read of the group that owns the shard *now* — through the
//! read index (no log write) like GET, refused by any group that does not serve the shard
//! at that point of its log (a shard mid-handoff is never read from its old owner, nor from
//! its new one before all of it arrived); the clerk then follows the shard to its owner.
//! One page covers one shard; a shard's pages are read one at a time.
//!
//! # The cursor
//! A cursor is an unsigned decimal integer, as Redis clients expect (redis-py parses it
//! with `int()`, redis-cli with `strtoull`): `shard << 48 | token`, below 2^63.
//! - `0` starts an iteration and ends one (token 0 of shard 0 is the start of shard 0).
//! - Token 0 is the start of `shard`. Any other token names a *resume point* — the key a
//!   page stopped after — kept by this node in a bounded table ([`ResumePoints`]): a key
//!   cannot fit in 48 bits, and a position by rank would skip keys when earlier ones are
//!   deleted. A token this node does not know (it was evicted, or the cursor came from
//!   another node or an earlier run of this one) restarts its shard from the start: keys
//!   come again, none are skipped. A shard beyond the cluster's ends the iteration.
//!
//! # The contract (Redis's)
//! A key present from the first call to the last is returned at least once: pages of a
//! shard are disjoint, ascending key ranges that resume after the last key examined, and
//! keys never move between shards. A key returned twice is one whose shard restarted
//! (an unknown token, above), which is rare. A key written or deleted during the
//! iteration may or may not be returned. The walk is not one snapshot: each page is read
//! at its own moment. `COUNT` (default 10, at most [`SCAN_COUNT_MAX`]) bounds the keys
//! examined per call — a call may return fewer, or none, with a cursor that is not 0 — and
//! a call reads at most [`SHARDS_PER_CALL_MAX`] shards and stops once its keys reach
//! [`SCAN_PAGE_BYTES_MAX`]. `MATCH` filters the keys examined (its literal prefix bounds
//! the range read in each shard); `TYPE string` is every key (all values are strings) and
//! any other type none.
//!
//! # Redis Cluster mode
//! A node scans the shards whose slots it masters in its own view when the cursor reaches
//! them — what SCAN on a Redis Cluster node does: cluster clients scan every master
//! (redis-py's `RedisCluster.scan_iter`). As in Redis Cluster, a shard that changes master
//! during the iteration may be missed by both nodes' iterations, or seen by both.
//!
//! `KEYS pattern` walks every shard (in cluster mode the node's own) to the end and answers
//! all matching keys, or an error if they pass [`KEYS_REPLY_BYTES_MAX`]; unlike Redis's it
//! is not atomic, each page being read at its own moment.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use bytes::Bytes;
pub use kv_engine::kv::SCAN_PAGE_BYTES_MAX;
use kv_engine::kv::{Op, Reply, Scan, ScanPage, ShardId, Sharding, SCAN_COUNT_MAX};
use kv_replication::kvgroup::Batch;

use super::command::CommandError;
use super::{failure_frame, unexpected, Store};
use crate::redis_cluster::Route;
use crate::resp::Frame;

/// Keys a SCAN examines when no COUNT is given (Redis's default).
pub const SCAN_COUNT_DEFAULT: u32 = 10;
/// Most shards one SCAN call reads (each a read of its group).
pub const SHARDS_PER_CALL_MAX: usize = 16;
/// Most bytes of keys KEYS answers; past it KEYS is refused (use SCAN).
pub const KEYS_REPLY_BYTES_MAX: usize = 16 << 20;
/// Most resume points a node keeps; the oldest is forgotten first.
pub const RESUME_POINTS_MAX: usize = 16_384;
/// Most bytes of keys the resume points keep (twice the largest key, so any key fits).
pub const RESUME_POINT_BYTES_MAX: usize = 2 * super::VALUE_BYTES_MAX;

/// Bits of a cursor below the shard.
const TOKEN_BITS: u32 = 48;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// The cursor naming `token` in `shard` (see the module docs).
pub fn encode_cursor(shard: ShardId, token: u64) -> u64 {
    debug_assert!(token <= TOKEN_MASK, "a token has 48 bits");
    (u64::from(shard.0) << TOKEN_BITS) | (token & TOKEN_MASK)
}

/// The shard and token a cursor names (a shard past the cluster's means the end).
pub fn decode_cursor(cursor: u64) -> (ShardId, u64) {
    (ShardId((cursor >> TOKEN_BITS) as u32), cursor & TOKEN_MASK)
}

/// SCAN's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanArgs {
    /// Where to go on.
    pub cursor: u64,
    /// MATCH's pattern.
    pub pattern: Option<Bytes>,
    /// COUNT, within `1..=SCAN_COUNT_MAX`.
    pub count: u32,
    /// Whether TYPE named a type no key has (anything but `string`).
    pub no_type_matches: bool,
}

fn syntax_error() -> CommandError {
    CommandError::Refused("ERR syntax error".into())
}

impl ScanArgs {
    /// Parses `SCAN`'s arguments (after the name) with Redis's errors.
    pub fn parse(args: &[Bytes]) -> Result<ScanArgs, CommandError> {
        let Some((cursor, mut options)) = args.split_first() else {
            return Err(super::command::arity("scan"));
        };
        let cursor = std::str::from_utf8(cursor)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| CommandError::Refused("ERR invalid cursor".into()))?;
        let mut parsed = ScanArgs {
            cursor,
            pattern: None,
            count: SCAN_COUNT_DEFAULT,
            no_type_matches: false,
        };
        while let Some((option, rest)) = options.split_first() {
            let Some((value, rest)) = rest.split_first() else {
                return Err(syntax_error());
            };
            match option.to_ascii_lowercase().as_slice() {
                b"match" => parsed.pattern = Some(value.clone()),
                b"count" => {
                    let count = std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<i64>().ok())
                        .ok_or_else(|| {
                            CommandError::Refused(
                                "ERR value is not an integer or out of range".into(),
                            )
                        })?;
                    if count < 1 {
                        return Err(syntax_error());
                    }
                    parsed.count = count.min(i64::from(SCAN_COUNT_MAX)) as u32;
                }
                b"type" => {
                    let name = value.to_ascii_lowercase();
                    const TYPES: [&[u8]; 6] =
                        [b"string", b"list", b"set", b"zset", b"hash", b"stream"];
                    if !TYPES.contains(&name.as_slice()) {
                        return Err(CommandError::Refused(format!(
                            "ERR unknown type name '{}'",
                            String::from_utf8_lossy(value)
                        )));
                    }
                    parsed.no_type_matches = name != b"string";
                }
                _ => return Err(syntax_error()),
            }
            options = rest;
        }
        Ok(parsed)
    }
}

/// The resume points a node hands out as cursor tokens (see the module docs): bounded in
/// number and bytes, the oldest forgotten first.
pub struct ResumePoints {
    seed: RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    points: HashMap<u64, (ShardId, Bytes)>,
    order: VecDeque<u64>,
    bytes: usize,
    issued: u64,
}

impl Default for ResumePoints {
    fn default() -> ResumePoints {
        ResumePoints::new()
    }
}

impl ResumePoints {
    /// An empty table.
    pub fn new() -> ResumePoints {
        ResumePoints {
            seed: RandomState::new(),
            table: Mutex::new(Table::default()),
        }
    }

    /// A token naming "after `key` in `shard`": random (so a token of another node or of
    /// an earlier run of this one is almost surely unknown here), never 0.
    pub fn remember(&self, shard: ShardId, key: Bytes) -> u64 {
        let key = Bytes::copy_from_slice(&key);
        let mut table = self.table.lock().expect("resume points lock");
        while table.points.len() >= RESUME_POINTS_MAX
            || table.bytes + key.len() > RESUME_POINT_BYTES_MAX
        {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            if let Some((_, forgotten)) = table.points.remove(&oldest) {
                table.bytes -= forgotten.len();
            }
        }
        let token = loop {
            table.issued += 1;
            let mut hasher = self.seed.build_hasher();
            hasher.write_u64(table.issued);
            let token = hasher.finish() & TOKEN_MASK;
            if token != 0 && !table.points.contains_key(&token) {
                break token;
            }
        };
        table.bytes += key.len();
        table.points.insert(token, (shard, key));
        table.order.push_back(token);
        token
    }

    /// The key `token` resumes after in `shard`, if this node still has it.
    pub fn recall(&self, shard: ShardId, token: u64) -> Option<Bytes> {
        let table = self.table.lock().expect("resume points lock");
        match table.points.get(&token) {
            Some((at, key)) if *at == shard => Some(key.clone()),
            _ => None,
        }
    }

    /// Resume points kept.
    pub fn len(&self) -> usize {
        self.table.lock().expect("resume points lock").points.len()
    }

    /// True if none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shards SCAN and KEYS walk (and DBSIZE counts) on this node, ascending: every
/// shard, or in cluster mode those whose slots the node masters now.
pub(crate) fn shards<S: Store>(store: &S) -> Vec<ShardId> {
    let sharding = store.sharding();
    let view = store.cluster();
    sharding
        .all()
        .filter(|&shard| match (view, sharding) {
            (Some(view), Sharding::Slots { .. }) => sharding
                .slots_of(shard)
                .is_some_and(|(first, _)| view.route(first) == Route::Serve),
            _ => true,
        })
        .collect()
}

/// Reads one page, or the error reply to send instead.
async fn page<S: Store>(store: &mut S, scan: Scan) -> Result<ScanPage, Frame> {
    match store.run(Batch::one(Op::from(scan))).await {
        Ok(Reply::Scanned(page)) => Ok(page),
        Ok(other) => Err(Frame::Error(unexpected(other))),
        Err(failure) => Err(failure_frame(&failure)),
    }
}

/// SCAN's reply: the next cursor and the keys.
fn scan_reply(cursor: u64, keys: Vec<Bytes>) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(Bytes::from(cursor.to_string())),
        Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
    ])
}

/// Answers SCAN (see the module docs).
pub(super) async fn scan<S: Store>(store: &mut S, points: &ResumePoints, args: ScanArgs) -> Frame {
    let (shard, token) = decode_cursor(args.cursor);
    let shards = shards(store);
    let Some(mut at) = shards.iter().position(|&s| s >= shard) else {
        return scan_reply(0, Vec::new());
    };
    let mut after = match token {
        0 => None,
        token if shards[at] == shard => points.recall(shard, token),
        _ => None,
    };
    let (mut keys, mut examined, mut bytes) = (Vec::new(), 0u32, 0usize);
    for _ in 0..SHARDS_PER_CALL_MAX {
        let current = shards[at];
        let scan = Scan {
            after: after.take(),
            pattern: args.pattern.clone(),
            ..Scan::shard(current, args.count - examined)
        };
        let page = match page(store, scan).await {
            Ok(page) => page,
            Err(reply) => return reply,
        };
        examined += page.examined;
        for entry in page.entries {
            bytes += entry.key.len();
            if !args.no_type_matches {
                keys.push(entry.key);
            }
        }
        if let Some(next) = page.next {
            // The page stopped at COUNT or at its byte limit: so does this call.
            return scan_reply(encode_cursor(current, points.remember(current, next)), keys);
        }
        at += 1;
        let Some(&following) = shards.get(at) else {
            return scan_reply(0, keys);
        };
        if examined >= args.count || bytes >= SCAN_PAGE_BYTES_MAX {
            return scan_reply(encode_cursor(following, 0), keys);
        }
    }
    scan_reply(encode_cursor(shards[at], 0), keys)
}

/// Answers KEYS (see the module docs).
pub(super) async fn keys<S: Store>(store: &mut S, pattern: Bytes) -> Frame {
    let mut keys = Vec::new();
    let mut bytes = 0usize;
    for shard in shards(store) {
        let mut after = None;
        loop {
            let scan = Scan {
                after: after.take(),
                pattern: Some(pattern.clone()),
                ..Scan::shard(shard, SCAN_COUNT_MAX)
            };
            let page = match page(store, scan).await {
                Ok(page) => page,
                Err(reply) => return reply,
            };
            for entry in page.entries {
                bytes += entry.key.len();
                if bytes > KEYS_REPLY_BYTES_MAX {
                    return Frame::Error(format!(
                        "ERR KEYS would answer more than {} MiB of keys; use SCAN",
                        KEYS_REPLY_BYTES_MAX >> 20
                    ));
                }
                keys.push(Frame::Bulk(entry.key));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Frame::Array(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<ScanArgs, CommandError> {
        let list: Vec<Bytes> = list.iter().map(|a| Bytes::from(a.to_string())).collect();
        ScanArgs::parse(&list)
    }

    fn error(list: &[&str]) -> String {
        args(list).unwrap_err().message().to_owned()
    }

    #[test]
    fn cursors_carry_the_shard_above_the_token_and_zero_is_the_start() {
        assert_eq!(encode_cursor(ShardId(0), 0), 0);
        assert_eq!(decode_cursor(0), (ShardId(0), 0));
        for (shard, token) in [(0, 1), (63, 0), (63, TOKEN_MASK), (16_383, 12_345)] {
            let cursor = encode_cursor(ShardId(shard), token);
            assert_eq!(decode_cursor(cursor), (ShardId(shard), token));
            assert!(cursor < 1 << 63, "fits a signed 64-bit integer too");
        }
        assert_eq!(encode_cursor(ShardId(1), 0), 1 << 48);
        assert_eq!(decode_cursor(u64::MAX), (ShardId(0xffff), TOKEN_MASK));
    }

    #[test]
    fn resume_points_round_trip_per_shard_and_the_oldest_go_first() {
        let points = ResumePoints::new();
        let token = points.remember(ShardId(3), Bytes::from_static(b"k"));
        assert!(token != 0 && token <= TOKEN_MASK);
        assert_eq!(points.recall(ShardId(3), token).as_deref(), Some(&b"k"[..]));
        assert_eq!(
            points.recall(ShardId(4), token),
            None,
            "another shard's token"
        );
        assert_eq!(points.recall(ShardId(3), token ^ 1), None);
        for i in 0..RESUME_POINTS_MAX {
            points.remember(ShardId(0), Bytes::from(i.to_string()));
        }
        assert_eq!(points.len(), RESUME_POINTS_MAX);
        assert_eq!(
            points.recall(ShardId(3), token),
            None,
            "the oldest was forgotten"
        );
        let big = Bytes::from(vec![b'x'; RESUME_POINT_BYTES_MAX]);
        let last = points.remember(ShardId(1), big);
        assert_eq!(
            points.len(),
            1,
            "a key of the whole budget evicts every other"
        );
        assert!(points.recall(ShardId(1), last).is_some());
    }

    #[test]
    fn scan_arguments_parse_with_redis_errors() {
        assert_eq!(
            args(&["0"]).unwrap(),
            ScanArgs {
                cursor: 0,
                pattern: None,
                count: SCAN_COUNT_DEFAULT,
                no_type_matches: false,
            }
        );
        let parsed = args(&["42", "match", "a*", "COUNT", "1000000", "type", "STRING"]).unwrap();
        assert_eq!(parsed.cursor, 42);
        assert_eq!(parsed.pattern.as_deref(), Some(&b"a*"[..]));
        assert_eq!(parsed.count, SCAN_COUNT_MAX);
        assert!(!parsed.no_type_matches);
        assert!(args(&["0", "TYPE", "hash"]).unwrap().no_type_matches);
        assert_eq!(
            error(&[]),
            "ERR wrong number of arguments for 'scan' command"
        );
        for cursor in ["abc", "-1", "", "18446744073709551616", "1.5"] {
            assert_eq!(error(&[cursor]), "ERR invalid cursor", "{cursor:?}");
        }
        assert_eq!(
            error(&["0", "COUNT", "ten"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error(&["0", "COUNT", "0"]), "ERR syntax error");
        assert_eq!(error(&["0", "COUNT", "-5"]), "ERR syntax error");
        assert_eq!(error(&["0", "MATCH"]), "ERR syntax error");
        assert_eq!(error(&["0", "LIMIT", "3"]), "ERR syntax error");
        assert_eq!(
            error(&["0", "TYPE", "blob"]),
            "ERR unknown type name 'blob'"
        );
    }
}
