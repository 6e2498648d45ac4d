//! The write-ahead log: an append-only sequence of checksummed records in segment files.
//!
//! # On disk
//! A segment is a file named `{first_index:020}.wal` holding consecutive records; the first
//! record of the log has index 1. Each record is
//!
//! ```text
//! payload_len: u32 LE | crc32: u32 LE | kind: u8 | payload: payload_len bytes
//! ```
//!
//! where the CRC covers the record's index (u64 LE, implied by its position and not
//! stored), `payload_len`, `kind` and `payload`. Folding the index in means a stale or
//! misplaced record can never validate at the wrong position.
//!
//! # Invariants
//! - Segments are contiguous: segment k+1 starts at the index after segment k's last.
//! - Only the last segment can have unsynced bytes: before a new segment is created the old
//!   one is fsynced whole, and the new file's directory entry is fsynced before any record
//!   in it is reported durable.
//! - `append` only buffers; `sync` writes the buffer with one `write` per segment touched
//!   and one `fdatasync`, then reports the highest durable index. This is what lets the
//!   group-commit writer ([`crate::group`]) give many callers one fsync.
//!
//! # Recovery and failure model
//! [`Wal::open`] scans segments in order, first without changing anything
//! ([`Wal::scan`]): a log it refuses is left exactly as it was found, so putting a missing
//! segment back is enough to open it. In the last segment, a torn tail (a header or
//! payload cut short, a zeroed region, or a bad checksum *not* followed by a valid record)
//! is truncated away and the truncation synced: those bytes were never reported durable.
//! A bad record anywhere else — in a non-last segment, or one followed by a valid record —
//! is corruption of acknowledged data and returns [`Error::Corrupt`] naming the file and
//! offset; it is never skipped. A flipped bit in a length field of the last segment is
//! indistinguishable from a torn write and is treated as one.
//!
//! # Recycled segments
//! With [`WalOptions::recycle`], compaction keeps one removed segment file as `spare.wal`
//! (a name no segment can have), and the next segment is that file renamed, written from
//! offset 0 over its old bytes. Overwriting blocks a file already owns makes an fdatasync
//! flush only data — appending to a fresh file also changes its size, which costs a
//! metadata write per fsync (on this project's ext4 machine, 7,500 instead of 4,800
//! fdatasyncs/s for 4 KiB writes). The stale bytes past the written end can never pass for
//! records: each record's checksum covers its index, and a recycled file's old records
//! all have indexes below the new segment's first. So recovery sees them as a torn tail of
//! the last segment, and a segment is truncated to its written end (and fsynced) before
//! the log moves past it, so no other segment ever has stale bytes.
//!
//! A segment with no spare to reuse gets the same effect from [`WalOptions::prefill_bytes`]:
//! a write that reaches past the file's end writes zeros after itself, so the syncs that
//! follow overwrite blocks the file owns (an fdatasync that also writes the inode, for the
//! new size, was a separate synchronous write on this project's ext4 machine: 123 instead
//! of 180 µs of wall time per 4 KiB write + fdatasync, `scripts/fsync-cost.py`). The zeros
//! past the last record are a tail like a recycled file's stale bytes: opening cuts them
//! (reported with [`TruncatedTail::zeroed`]), and a segment is cut to its records before
//! the log moves past it.
//!
//! The price: in a power failure, overwritten sectors of one unsynced batch can reach the
//! disk out of order, leaving a bad record followed by a good one. Recovery then refuses
//! with [`Error::Corrupt`] rather than guess — the rule that catches bit rot in
//! acknowledged records — which is safe (nothing acknowledged is dropped, nothing
//! unwritten is read); an operator wipes that node's directory and it rejoins through the
//! lost-disk path. A process crash (`kill -9`) cannot cause it: the page cache survives.
//!
//! After any failed write or fsync the log is *poisoned*: every later call returns
//! [`Error::Poisoned`]. A failed fsync is never retried, because the kernel may already have
//! dropped the pages it failed to write; the process must reopen (and so re-read) the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile};

/// Bytes of a record header: length, checksum, kind.
pub const RECORD_HEADER_BYTES: usize = 9;
/// The largest payload one record may carry.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// Default size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default zeroed space kept ahead of the active segment's written end (see
/// [`WalOptions::prefill_bytes`]).
pub const PREFILL_BYTES_DEFAULT: u64 = 1 << 20;

const SEGMENT_SUFFIX: &str = ".wal";
/// The recycled segment file waiting to become the next segment.
const SPARE_NAME: &str = "spare.wal";

/// Tunables of a [`Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed once appending the next record would take it past this size
    /// (a single larger record still gets a segment of its own).
    pub segment_bytes_max: u64,
    /// Keep one compacted segment file as a spare and reuse it for the next segment
    /// instead of creating a new file (see the module docs). Costs at most one segment
    /// of disk.
    pub recycle: bool,
    /// A write that reaches past the end of the active segment's file also writes this
    /// many zero bytes after itself (never past `segment_bytes_max`), so the syncs of the
    /// writes that follow overwrite blocks the file owns and leave its size alone — the
    /// cheaper fdatasync that recycled segments get (see the module docs), for a new
    /// segment too. The size then changes once per `prefill_bytes` written, not once per
    /// sync. 0: files grow with each write. Costs at most this many bytes of disk.
    pub prefill_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            recycle: true,
            prefill_bytes: PREFILL_BYTES_DEFAULT,
        }
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Position in the log, from 1.
    pub index: u64,
    /// Caller-defined record type.
    pub kind: u8,
    /// Caller-defined bytes.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct SegmentMeta {
    first: u64,
    path: PathBuf,
    bytes: u64,
}

/// A segmented write-ahead log. Single-owner and synchronous: the simulator drives it
/// directly; production drives it from the group-commit thread.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: WalOptions,
    /// Every segment, oldest first; the last is the active one.
    segments: Vec<SegmentMeta>,
    active: Box<dyn FsFile>,
    /// Length of the active segment's file, which for a recycled file can exceed what the
    /// log has written to it.
    active_len: u64,
    /// Length of the spare file, if there is one.
    spare: Option<u64>,
    /// Framed records not yet written, with their indexes and end offsets in `buffer`.
    buffer: Vec<u8>,
    buffered: Vec<(u64, usize)>,
    next_index: u64,
    durable_index: u64,
    poisoned: Option<String>,
    /// What opening cut off the last segment, if anything.
    truncated: Option<TruncatedTail>,
}

/// The file name of the segment whose first record has index `first`.
pub fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn checksum(index: u64, len: u32, kind: u8, payload: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(&[kind]);
    for part in payload {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Appends one framed record, whose payload is the concatenation of `payload`, to `out`.
fn frame(out: &mut Vec<u8>, index: u64, kind: u8, payload: &[&[u8]]) {
    let len = payload.iter().map(|p| p.len()).sum::<usize>() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(index, len, kind, payload).to_le_bytes());
    out.push(kind);
    for part in payload {
        out.extend_from_slice(part);
    }
}

/// Why a record could not be read at some offset.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    /// Fewer bytes remain than the header or declared payload needs.
    Short,
    /// A zeroed header: preallocated or zero-filled space.
    Zero,
    /// The declared length is impossible.
    Length(u32),
    /// The checksum does not match.
    Checksum,
}

/// Decodes the record at `offset`, which must have index `index`.
/// Returns the record and the offset just past it.
fn decode_at(
    bytes: &[u8],
    offset: usize,
    index: u64,
) -> std::result::Result<(WalRecord, usize), Bad> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let kind = rest[8];
    if len == 0 && crc == 0 && kind == 0 {
        return Err(Bad::Zero);
    }
    if len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Bad::Length(len));
    }
    let end = RECORD_HEADER_BYTES + len as usize;
    if rest.len() < end {
        return Err(Bad::Short);
    }
    let payload = &rest[RECORD_HEADER_BYTES..end];
    if checksum(index, len, kind, &[payload]) != crc {
        return Err(Bad::Checksum);
    }
    let record = WalRecord {
        index,
        kind,
        payload: payload.to_vec(),
    };
    Ok((record, offset + end))
}

/// The result of scanning one segment.
struct Scan {
    records: Vec<WalRecord>,
    /// Offset just past the last good record.
    valid_bytes: u64,
    /// Why scanning stopped early, if it did, and where.
    stopped: Option<(u64, Bad)>,
}

fn scan(bytes: &[u8], first: u64) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut index = first;
    while offset < bytes.len() {
        match decode_at(bytes, offset, index) {
            Ok((record, next)) => {
                records.push(record);
                offset = next;
                index += 1;
            }
            Err(bad) => {
                return Scan {
                    records,
                    valid_bytes: offset as u64,
                    stopped: Some((offset as u64, bad)),
                }
            }
        }
    }
    Scan {
        records,
        valid_bytes: offset as u64,
        stopped: None,
    }
}

/// In the last segment: a bad checksum whose declared length leads to a valid next record
/// means the bad record was followed by acknowledged data — corruption, not a torn tail.
fn followed_by_valid_record(bytes: &[u8], offset: usize, index: u64) -> bool {
    let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
    let next = offset + RECORD_HEADER_BYTES + len as usize;
    next < bytes.len() && decode_at(bytes, next, index + 1).is_ok()
}

/// The torn tail recovery cut off the last segment (see the module docs): bytes that were
/// never reported durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the first bad record started (the segment's new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// What was found at `offset`.
    pub reason: String,
    /// Every byte cut was zero: space written ahead ([`WalOptions::prefill_bytes`]) or
    /// never written, rather than a record cut short.
    pub zeroed: bool,
}

/// What [`Wal::scan`] found in a directory, read without changing anything: every
/// segment checked, and what opening the log will have to do.
#[derive(Debug)]
pub struct WalScan {
    segments: Vec<SegmentMeta>,
    records: Vec<WalRecord>,
    next_index: u64,
    truncate: Option<TruncatedTail>,
}

impl WalScan {
    /// The lowest index the log holds (equals [`WalScan::next_index`] when it holds none;
    /// 1 when there are no segments at all).
    pub fn first_index(&self) -> u64 {
        self.segments.first().map_or(1, |s| s.first)
    }

    /// The index the next record will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Whether the directory holds no segment (opening creates the first).
    pub fn is_fresh(&self) -> bool {
        self.segments.is_empty()
    }

    /// The first segment, if there is one.
    pub fn first_segment(&self) -> Option<&Path> {
        self.segments.first().map(|s| s.path.as_path())
    }

    /// Every valid record, in index order (a torn tail excluded).
    pub fn records(&self) -> &[WalRecord] {
        &self.records
    }

    /// What opening will cut off the last segment, if anything.
    pub fn tail(&self) -> Option<&TruncatedTail> {
        self.truncate.as_ref()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and returns it with every record it holds.
    /// Nothing on disk changes unless every segment checks out (see [`Wal::scan`]).
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, options: WalOptions) -> Result<(Wal, Vec<WalRecord>)> {
        let scan = Wal::scan(&*fs, dir, options)?;
        Wal::open_scanned(fs, dir, options, scan)
    }

    /// Reads and checks every segment in `dir` without changing anything: a log that
    /// cannot be opened is refused here, before anything is created, truncated or
    /// removed. A missing directory is an empty log.
    pub fn scan(fs: &dyn Fs, dir: &Path, options: WalOptions) -> Result<WalScan> {
        if options.segment_bytes_max == 0 {
            return Err(Error::Invalid("segment_bytes_max must be positive".into()));
        }
        let names = if fs.exists(dir) {
            fs.list(dir).map_err(|e| Error::io("list", dir, e))?
        } else {
            Vec::new()
        };
        let mut firsts: Vec<u64> = names
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        firsts.sort_unstable();

        let mut records = Vec::new();
        let mut segments = Vec::with_capacity(firsts.len());
        let mut truncate = None;
        let mut expected = firsts.first().copied().unwrap_or(1);
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(first));
            if first != expected {
                return Err(Error::Corrupt {
                    file: path,
                    offset: 0,
                    reason: format!("segment starts at index {first}, expected {expected}"),
                });
            }
            let last = i + 1 == firsts.len();
            let bytes = fs
                .read_all(&path)
                .map_err(|e| Error::io("read", &path, e))?;
            let scanned = scan(&bytes, first);
            if let Some((offset, bad)) = &scanned.stopped {
                let torn = last
                    && !(*bad == Bad::Checksum
                        && followed_by_valid_record(
                            &bytes,
                            *offset as usize,
                            first + scanned.records.len() as u64,
                        ));
                if !torn {
                    return Err(Error::Corrupt {
                        file: path,
                        offset: *offset,
                        reason: format!("bad record ({bad:?})"),
                    });
                }
                truncate = Some(TruncatedTail {
                    file: path.clone(),
                    offset: *offset,
                    bytes: bytes.len() as u64 - offset,
                    reason: format!("{bad:?}"),
                    zeroed: bytes[*offset as usize..].iter().all(|&b| b == 0),
                });
            }
            expected = first + scanned.records.len() as u64;
            records.extend(scanned.records);
            segments.push(SegmentMeta {
                first,
                path,
                bytes: scanned.valid_bytes,
            });
        }
        Ok(WalScan {
            segments,
            records,
            next_index: expected,
            truncate,
        })
    }

    /// Removes every segment file (and the spare) in `dir` and syncs it: the log is gone.
    pub fn remove_files(fs: &dyn Fs, dir: &Path) -> Result<()> {
        let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
        let mut removed = false;
        for name in names
            .iter()
            .filter(|n| parse_segment_name(n).is_some() || *n == SPARE_NAME)
        {
            let path = dir.join(name);
            fs.remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            removed = true;
        }
        if removed {
            fs.sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
        }
        Ok(())
    }

    /// Opens the log a [`Wal::scan`] of `dir` found, making the changes recovery needs: the
    /// directory and a first segment for a fresh log, the torn tail cut (and synced).
    pub fn open_scanned(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        scan: WalScan,
    ) -> Result<(Wal, Vec<WalRecord>)> {
        fs.create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
        if scan.is_fresh() {
            let wal = Wal::create_fresh(fs, dir, options)?;
            return Ok((wal, Vec::new()));
        }
        let WalScan {
            segments,
            records,
            next_index,
            truncate,
        } = scan;
        let meta = segments.last().expect("at least one segment");
        if truncate.is_some() {
            let mut file = fs
                .open(&meta.path)
                .map_err(|e| Error::io("open", &meta.path, e))?;
            file.truncate(meta.bytes)
                .map_err(|e| Error::io("truncate", &meta.path, e))?;
            file.sync().map_err(|e| Error::io("sync", &meta.path, e))?;
        }
        let active = fs
            .open(&meta.path)
            .map_err(|e| Error::io("open", &meta.path, e))?;
        let active_len = active.len().map_err(|e| Error::io("stat", &meta.path, e))?;
        let spare = Wal::find_spare(&*fs, dir, options)?;
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            active_len,
            spare,
            buffer: Vec::new(),
            buffered: Vec::new(),
            next_index,
            durable_index: next_index - 1,
            poisoned: None,
            truncated: truncate,
        };
        Ok((wal, records))
    }

    fn create_fresh(fs: Arc<dyn Fs>, dir: &Path, options: WalOptions) -> Result<Wal> {
        let path = dir.join(segment_name(1));
        let active = fs
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        let spare = Wal::find_spare(&*fs, dir, options)?;
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            segments: vec![SegmentMeta {
                first: 1,
                path,
                bytes: 0,
            }],
            active,
            active_len: 0,
            spare,
            buffer: Vec::new(),
            buffered: Vec::new(),
            next_index: 1,
            durable_index: 0,
            poisoned: None,
            truncated: None,
        })
    }

    /// The spare file's length if recycling is on and one exists; without recycling a
    /// leftover spare is removed.
    fn find_spare(fs: &dyn Fs, dir: &Path, options: WalOptions) -> Result<Option<u64>> {
        let path = dir.join(SPARE_NAME);
        if !fs.exists(&path) {
            return Ok(None);
        }
        if !options.recycle {
            fs.remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            return Ok(None);
        }
        let file = fs.open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(Some(file.len().map_err(|e| Error::io("stat", &path, e))?))
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Buffers a record and returns its index. Nothing is written until [`Wal::sync`].
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64> {
        self.append_parts(kind, &[payload])
    }

    /// [`Wal::append`] of the concatenation of `parts` (say, a header and a body), without
    /// first copying them into one buffer.
    pub fn append_parts(&mut self, kind: u8, parts: &[&[u8]]) -> Result<u64> {
        self.check_poisoned()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "record of {len} bytes exceeds the {RECORD_PAYLOAD_BYTES_MAX} byte limit"
            )));
        }
        let index = self.next_index;
        frame(&mut self.buffer, index, kind, parts);
        self.buffered.push((index, self.buffer.len()));
        self.next_index += 1;
        Ok(index)
    }

    /// Writes every buffered record and makes it durable; returns the highest durable index.
    /// On failure the log is poisoned.
    pub fn sync(&mut self) -> Result<u64> {
        self.check_poisoned()?;
        if self.buffered.is_empty() {
            return Ok(self.durable_index);
        }
        match self.write_buffered() {
            Ok(()) => {
                self.durable_index = self.next_index - 1;
                Ok(self.durable_index)
            }
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Writes the buffer, closing and opening segments at record boundaries as needed.
    fn write_buffered(&mut self) -> Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        let buffered = std::mem::take(&mut self.buffered);
        let mut chunk_start = 0usize;
        let mut record_start = 0usize;
        for &(index, end) in &buffered {
            let active_bytes = self.segments.last().expect("active segment").bytes;
            let pending = (record_start - chunk_start) as u64;
            let record = (end - record_start) as u64;
            let full = active_bytes + pending + record > self.options.segment_bytes_max;
            if full && active_bytes + pending > 0 {
                self.write_chunk(&buffer[chunk_start..record_start])?;
                self.start_segment(index)?;
                chunk_start = record_start;
            }
            record_start = end;
        }
        self.write_chunk(&buffer[chunk_start..])?;
        let path = &self.segments.last().expect("active segment").path;
        self.active
            .sync()
            .map_err(|e| Error::io("fdatasync", path, e))?;
        // Reuse the allocation for the next batch.
        self.buffer = buffer;
        self.buffer.clear();
        self.buffered = buffered;
        self.buffered.clear();
        Ok(())
    }

    fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let meta = self.segments.last_mut().expect("active segment");
        self.active
            .write_at(meta.bytes, chunk)
            .map_err(|e| Error::io("write", &meta.path, e))?;
        meta.bytes += chunk.len() as u64;
        if meta.bytes > self.active_len {
            // Past the file's end: zero the space ahead too (see `prefill_bytes`). Zeros
            // past the last record read as unwritten space, a tail recovery cuts.
            let end = meta
                .bytes
                .saturating_add(self.options.prefill_bytes)
                .min(self.options.segment_bytes_max)
                .max(meta.bytes);
            if end > meta.bytes {
                let zeros = vec![0u8; (end - meta.bytes) as usize];
                // Only an optimisation: a disk too full for the zeros must not fail a
                // record that fits. The file may then hold any part of them, so
                // `active_len` stays `end`, an upper bound: what matters is that the
                // segment is cut to its records before the log moves past it.
                let _ = self.active.write_at(meta.bytes, &zeros);
            }
            self.active_len = end;
        }
        Ok(())
    }

    /// Cuts the active segment to what was written (a recycled file may be longer), fsyncs
    /// it, then makes a new one at `first` — the spare renamed, or a new file — and durably
    /// names it.
    fn start_segment(&mut self, first: u64) -> Result<()> {
        let old = self.segments.last().expect("active segment");
        if self.active_len > old.bytes {
            self.active
                .truncate(old.bytes)
                .map_err(|e| Error::io("truncate", &old.path, e))?;
            self.active_len = old.bytes;
        }
        self.active
            .sync()
            .map_err(|e| Error::io("fdatasync", &old.path, e))?;
        let path = self.dir.join(segment_name(first));
        match self.spare.take() {
            Some(len) => {
                let spare = self.dir.join(SPARE_NAME);
                self.fs
                    .rename(&spare, &path)
                    .map_err(|e| Error::io("rename", &spare, e))?;
                self.active = self
                    .fs
                    .open(&path)
                    .map_err(|e| Error::io("open", &path, e))?;
                self.active_len = len;
            }
            None => {
                self.active = self
                    .fs
                    .create(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                self.active_len = 0;
            }
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        self.segments.push(SegmentMeta {
            first,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Syncs, then closes the active segment (if it holds records) so that everything
    /// appended so far becomes eligible for [`Wal::compact`].
    pub fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        if self.segments.last().expect("active segment").bytes == 0 {
            return Ok(());
        }
        let first = self.next_index;
        if let Err(e) = self.start_segment(first) {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Deletes every segment whose records all have indexes `<= upto` (never the active
    /// segment). Call only once the state those records built is durable elsewhere.
    pub fn compact(&mut self, upto: u64) -> Result<()> {
        self.check_poisoned()?;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first <= upto + 1 {
            let segment = self.segments.remove(0);
            if self.options.recycle && self.spare.is_none() {
                let spare = self.dir.join(SPARE_NAME);
                self.fs
                    .rename(&segment.path, &spare)
                    .map_err(|e| Error::io("rename", &segment.path, e))?;
                self.spare = Some(segment.bytes);
            } else {
                self.fs
                    .remove(&segment.path)
                    .map_err(|e| Error::io("remove", &segment.path, e))?;
            }
            removed += 1;
        }
        if removed > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// The index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The highest index known durable (0 if none).
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// The lowest index still held on disk (equals `next_index` when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.segments[0].first
    }

    /// Bytes of all segment files (written or buffered) and of the spare.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>()
            + self.buffer.len() as u64
            + (self.active_len - self.segments.last().map_or(0, |s| s.bytes))
            + self.spare.unwrap_or(0)
    }

    /// How many segment files exist.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The torn tail opening cut off the last segment, if it cut one.
    pub fn truncated_tail(&self) -> Option<&TruncatedTail> {
        self.truncated.as_ref()
    }

    /// Whether an earlier failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests;
