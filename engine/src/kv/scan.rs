//! Scans: a page of one shard's keys, in key order, from a resume point.
//!
//! A scan of the whole key space is a sequence of [`Scan`] reads, each of one shard and
//! each bounded ([`SCAN_COUNT_MAX`] keys examined, [`SCAN_PAGE_BYTES_MAX`] bytes returned,
//! at least one key examined so every page makes progress). A page says where the next
//! one resumes ([`ScanPage::next`]: after the last key it examined), so a walk needs no
//! state on the server: it is a list of shards and, in the current one, a key.
//!
//! The contract a walk gets, as Redis's SCAN gives it: every key present in the shard for
//! the whole walk is returned exactly once (pages are disjoint key ranges, and a key does
//! not move between ranges); a key written or deleted during the walk may or may not be.
//! Each page is one read of the shard's owner — consistent in itself, the walk as a whole
//! is not one snapshot.
//!
//! A pattern ([`crate::glob`]) filters the keys examined; its literal prefix bounds the
//! range read, so a prefix scan (`PREFIX*`) reads only the keys under the prefix.

use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use super::ShardId;
use crate::glob::Glob;

/// Most keys one page examines (a larger count asks for this many).
pub const SCAN_COUNT_MAX: u32 = 1 << 16;
/// A page stops once the keys (and values, if asked) it returns reach this many bytes; it
/// always examines one key at least, so one entry may pass it.
pub const SCAN_PAGE_BYTES_MAX: usize = 4 << 20;

/// A read of one page of a shard's keys ([`super::Op::Scan`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The shard read.
    pub shard: ShardId,
    /// Keys strictly after this one (from the first key if `None`).
    pub after: Option<Bytes>,
    /// Keys up to this one, included (to the shard's last key if `None`).
    pub last: Option<Bytes>,
    /// Only keys matching this glob pattern (every key if `None`).
    pub pattern: Option<Bytes>,
    /// Examine at most this many keys (Redis's COUNT; 0 counts as 1, more than
    /// [`SCAN_COUNT_MAX`] as that).
    pub count: u32,
    /// Return the values too, not only their lengths.
    pub values: bool,
}

impl Scan {
    /// The first page of `shard`: every key, up to `count` of them, without values.
    pub fn shard(shard: ShardId, count: u32) -> Scan {
        Scan {
            shard,
            after: None,
            last: None,
            pattern: None,
            count,
            values: false,
        }
    }

    /// Bytes of keys and pattern the scan carries.
    pub fn payload_bytes(&self) -> usize {
        [&self.after, &self.last, &self.pattern]
            .into_iter()
            .map(|bytes| bytes.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// One key a page returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The key.
    pub key: Bytes,
    /// Its value's length in bytes.
    pub value_bytes: u64,
    /// Its value, if the scan asked for values.
    pub value: Option<Bytes>,
}

/// The answer to a [`Scan`] ([`super::Reply::Scanned`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPage {
    /// The keys examined that match the pattern, ascending.
    pub entries: Vec<ScanEntry>,
    /// Keys examined (matching or not).
    pub examined: u32,
    /// Where the next page starts (after this key); `None` once the range is done.
    pub next: Option<Bytes>,
}

/// Reads the page `scan` asks for from one shard's map.
pub(super) fn read_page(map: &OrdMap<Bytes, Bytes>, scan: &Scan) -> ScanPage {
    let glob = scan.pattern.as_deref().map(Glob::new);
    let prefix = Bytes::from(glob.as_ref().map(Glob::literal_prefix).unwrap_or_default());
    let filter = glob.filter(|glob| !glob.matches_everything());
    let count = scan.count.clamp(1, SCAN_COUNT_MAX);
    let start = match &scan.after {
        Some(after) if *after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(&prefix),
    };
    let mut page = ScanPage::default();
    let mut bytes = 0usize;
    let mut last_examined: Option<&Bytes> = None;
    for (key, value) in map.range::<_, Bytes>((start, Bound::Unbounded)) {
        let past_last = scan.last.as_ref().is_some_and(|last| key > last);
        if !key.starts_with(&prefix) || past_last {
            return page;
        }
        if page.examined >= count || bytes >= SCAN_PAGE_BYTES_MAX {
            page.next = last_examined.cloned();
            return page;
        }
        page.examined += 1;
        last_examined = Some(key);
        if filter.as_ref().is_some_and(|glob| !glob.matches(key)) {
            continue;
        }
        bytes += key.len() + if scan.values { value.len() } else { 0 };
        page.entries.push(ScanEntry {
            key: key.clone(),
            value_bytes: value.len() as u64,
            value: scan.values.then(|| value.clone()),
        });
    }
    page
}

impl From<Scan> for super::Op {
    /// The op that reads this page.
    fn from(scan: Scan) -> super::Op {
        super::Op::Scan(Box::new(scan))
    }
}
