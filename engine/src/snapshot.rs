//! Snapshot files: the whole state of a replica as of some WAL index, written atomically.
//!
//! # On disk
//! `{index:020}.snap`, holding
//!
//! ```text
//! magic "KVSNAP02" | index: u64 LE | payload_len: u64 LE | crc32: u32 LE | payload
//! ```
//!
//! with the CRC over the index and then the payload, so it can be computed while the
//! payload streams out; the length is checked against the file's size. Files written by
//! earlier versions (`KVSNAP01`, CRC over index, length and payload) still read.
//!
//! # Writing
//! temp file `{index:020}.snap.tmp` → header placeholder → payload streamed from a
//! [`SnapshotSource`] (never held whole in memory) → header written in place → fsync →
//! rename to the final name → fsync the directory. A crash at any point leaves either the
//! old set of snapshots (plus a stray temp file, removed on the next open) or the new one;
//! never a half-written `.snap`.
//!
//! # Reading
//! Files are read through memmap2 ([`crate::fs::Fs::read_all`]) and their checksum
//! verified. [`newest_valid`] returns the newest snapshot that validates; callers must
//! check that the WAL still reaches back to it (see [`crate::store`]).

use std::io::{self, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{FileBytes, Fs, FsFile};

/// The format written today.
const MAGIC: &[u8; 8] = b"KVSNAP02";
/// The first format: its CRC also covers the length, ahead of the payload.
const MAGIC_V1: &[u8; 8] = b"KVSNAP01";
/// Payload bytes gathered before each write to the file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The content of a snapshot, produced while it is written, so a large state is never
/// encoded into one buffer first (and can be written by another thread than the one that
/// owns the state, from a frozen copy).
pub trait SnapshotSource: Send + Sync {
    /// Writes the whole payload, in order, to `out`.
    fn write_payload(&self, out: &mut dyn Write) -> io::Result<()>;

    /// About how many bytes the payload will be, if known (to check for room first).
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

impl SnapshotSource for Vec<u8> {
    fn write_payload(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl SnapshotSource for &[u8] {
    fn write_payload(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}
/// Bytes before the payload: magic, index, length, checksum.
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 8 + 8 + 4;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot's payload, memory-mapped where possible.
pub struct SnapshotData {
    bytes: FileBytes,
}

impl Deref for SnapshotData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[SNAPSHOT_HEADER_BYTES..]
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotData({} bytes)", self.len())
    }
}

/// A loaded, verified snapshot.
#[derive(Debug)]
pub struct Snapshot {
    /// The snapshot covers every WAL record with an index up to and including this.
    pub index: u64,
    /// The payload.
    pub data: SnapshotData,
}

fn file_name(index: u64) -> String {
    format!("{index:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn checksum_v1(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(&(payload.len() as u64).to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Streams a payload into a file: buffers, checksums and counts as it goes.
struct PayloadWriter {
    file: Box<dyn FsFile>,
    buffer: Vec<u8>,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl PayloadWriter {
    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.append(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

impl Write for PayloadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        if self.buffer.len() + buf.len() > WRITE_BUFFER_BYTES {
            self.flush_buffer()?;
        }
        if buf.len() >= WRITE_BUFFER_BYTES {
            self.file.append(buf)?;
        } else {
            self.buffer.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }
}

/// The path of the snapshot file for `index` in `dir`.
pub fn path_of(dir: &Path, index: u64) -> PathBuf {
    dir.join(file_name(index))
}

/// Bytes of the snapshot file for a payload of `payload_bytes`.
pub fn file_bytes(payload_bytes: usize) -> u64 {
    (SNAPSHOT_HEADER_BYTES + payload_bytes) as u64
}

/// The temporary file a snapshot at `index` is written to before it is renamed.
pub fn temp_path_of(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}{TEMP_SUFFIX}"))
}

/// Writes a snapshot atomically and durably; returns the bytes written.
pub fn write(fs: &dyn Fs, dir: &Path, index: u64, payload: &[u8]) -> Result<u64> {
    write_from(fs, dir, index, &payload)
}

/// Writes the snapshot `source` produces, atomically and durably, streaming it to the file;
/// returns the bytes written.
pub fn write_from(fs: &dyn Fs, dir: &Path, index: u64, source: &dyn SnapshotSource) -> Result<u64> {
    let bytes = write_temp(fs, dir, index, source)?;
    publish(fs, dir, index)?;
    Ok(bytes)
}

/// The first half of [`write_from`]: the snapshot streamed, written and fsynced under its
/// temporary name ([`temp_path_of`]). A failure here leaves at most that temporary file,
/// which nothing reads; returns the bytes written.
pub fn write_temp(fs: &dyn Fs, dir: &Path, index: u64, source: &dyn SnapshotSource) -> Result<u64> {
    let temp = temp_path_of(dir, index);
    let mut file = fs
        .create(&temp)
        .map_err(|e| Error::io("create", &temp, e))?;
    file.append(&[0; SNAPSHOT_HEADER_BYTES])
        .map_err(|e| Error::io("write", &temp, e))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    let mut writer = PayloadWriter {
        file,
        buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
        hasher,
        len: 0,
    };
    source
        .write_payload(&mut writer)
        .and_then(|()| writer.flush())
        .map_err(|e| Error::io("write", &temp, e))?;
    let PayloadWriter {
        mut file,
        hasher,
        len,
        ..
    } = writer;
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&index.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&hasher.finalize().to_le_bytes());
    file.write_at(0, &header)
        .map_err(|e| Error::io("write", &temp, e))?;
    file.sync().map_err(|e| Error::io("fdatasync", &temp, e))?;
    Ok(SNAPSHOT_HEADER_BYTES as u64 + len)
}

/// The second half of [`write_from`]: the temporary file renamed into place and the
/// directory fsynced, after which the snapshot survives a crash.
pub fn publish(fs: &dyn Fs, dir: &Path, index: u64) -> Result<()> {
    let temp = temp_path_of(dir, index);
    fs.rename(&temp, &path_of(dir, index))
        .map_err(|e| Error::io("rename", &temp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Reads and verifies one snapshot file.
pub fn read(fs: &dyn Fs, path: &Path) -> Result<Snapshot> {
    let bytes = fs.read_all(path).map_err(|e| Error::io("read", path, e))?;
    let corrupt = |offset: u64, reason: &str| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason: reason.to_owned(),
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(corrupt(0, "shorter than a snapshot header"));
    }
    let sum: fn(u64, &[u8]) -> u32 = match &bytes[0..8] {
        magic if magic == MAGIC => checksum,
        magic if magic == MAGIC_V1 => checksum_v1,
        _ => return Err(corrupt(0, "bad magic")),
    };
    let index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if len != (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 {
        return Err(corrupt(16, "payload length does not match the file size"));
    }
    if sum(index, &bytes[SNAPSHOT_HEADER_BYTES..]) != crc {
        return Err(corrupt(SNAPSHOT_HEADER_BYTES as u64, "checksum mismatch"));
    }
    Ok(Snapshot {
        index,
        data: SnapshotData { bytes },
    })
}

/// Indexes of the snapshot files in `dir`, ascending (none if `dir` does not exist).
pub fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>> {
    if !fs.exists(dir) {
        return Ok(Vec::new());
    }
    let mut indexes: Vec<u64> = fs
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .iter()
        .filter_map(|n| parse_name(n))
        .collect();
    indexes.sort_unstable();
    Ok(indexes)
}

/// The index of the snapshot file at `path`, if it is one.
pub fn index_of(path: &Path) -> Option<u64> {
    parse_name(path.file_name()?.to_str()?)
}

/// Removes stray temp files left by a crash mid-write; returns their paths.
pub fn remove_temps(fs: &dyn Fs, dir: &Path) -> Result<Vec<PathBuf>> {
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut removed = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(TEMP_SUFFIX)) {
        let path = dir.join(name);
        fs.remove(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        removed.push(path);
    }
    if !removed.is_empty() {
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    Ok(removed)
}

/// The newest snapshot in `dir` that validates, with the errors of newer ones that did not.
pub fn newest_valid(fs: &dyn Fs, dir: &Path) -> Result<(Option<Snapshot>, Vec<Error>)> {
    let mut skipped = Vec::new();
    for index in list(fs, dir)?.into_iter().rev() {
        match read(fs, &path_of(dir, index)) {
            Ok(snapshot) if snapshot.index == index => return Ok((Some(snapshot), skipped)),
            Ok(snapshot) => skipped.push(Error::Corrupt {
                file: path_of(dir, index),
                offset: 8,
                reason: format!(
                    "file name says index {index}, header says {}",
                    snapshot.index
                ),
            }),
            Err(e @ Error::Corrupt { .. }) => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((None, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{RealFs, SimFs, Torn};

    #[test]
    fn round_trip_on_real_disk_through_mmap() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        write(&RealFs, dir.path(), 42, &payload).unwrap();
        let (snap, skipped) = newest_valid(&RealFs, dir.path()).unwrap();
        let snap = snap.unwrap();
        assert!(skipped.is_empty());
        assert_eq!(snap.index, 42);
        assert_eq!(&*snap.data, &payload[..]);
    }

    #[test]
    fn crash_before_dir_sync_keeps_the_old_snapshot() {
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        write(&fs, d, 1, b"old").unwrap();
        // Write the new one by hand, stopping before the directory sync.
        let temp = d.join(format!("{:020}{TEMP_SUFFIX}", 2));
        let mut f = fs.create(&temp).unwrap();
        f.append(b"partial").unwrap();
        fs.crash(Torn::Prefix(9));
        remove_temps(&fs, d).unwrap();
        let (snap, _) = newest_valid(&fs, d).unwrap();
        assert_eq!(&*snap.unwrap().data, b"old");
        assert_eq!(fs.list(d).unwrap(), vec![file_name(1)]);
    }

    #[test]
    fn corrupt_newest_falls_back_to_older_valid_one() {
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        write(&fs, d, 1, b"one").unwrap();
        write(&fs, d, 2, b"two").unwrap();
        fs.flip_bit(&path_of(d, 2), SNAPSHOT_HEADER_BYTES as u64 + 1, 3)
            .unwrap();
        let (snap, skipped) = newest_valid(&fs, d).unwrap();
        assert_eq!(snap.unwrap().index, 1);
        assert_eq!(skipped.len(), 1);
        assert!(matches!(&skipped[0], Error::Corrupt { file, .. } if *file == path_of(d, 2)));
    }

    /// A source that writes in many small pieces and a few large ones.
    struct Pieces(Vec<Vec<u8>>);

    impl SnapshotSource for Pieces {
        fn write_payload(&self, out: &mut dyn Write) -> io::Result<()> {
            for piece in &self.0 {
                out.write_all(piece)?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_streamed_payload_reads_back_whole_and_checksummed() {
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        let pieces: Vec<Vec<u8>> = (0..50u32)
            .map(|i| {
                vec![
                    i as u8;
                    if i % 10 == 0 {
                        3 << 20
                    } else {
                        1000 + i as usize
                    }
                ]
            })
            .collect();
        let whole: Vec<u8> = pieces.concat();
        let bytes = write_from(&fs, d, 9, &Pieces(pieces)).unwrap();
        assert_eq!(bytes, (SNAPSHOT_HEADER_BYTES + whole.len()) as u64);
        let snap = read(&fs, &path_of(d, 9)).unwrap();
        assert_eq!(snap.index, 9);
        assert!(*snap.data == whole[..]);
        fs.flip_bit(
            &path_of(d, 9),
            (SNAPSHOT_HEADER_BYTES + 5_000_000) as u64,
            1,
        )
        .unwrap();
        assert!(matches!(
            read(&fs, &path_of(d, 9)),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_first_format_snapshot_still_reads() {
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        let payload = b"state of an older version";
        let mut file = fs.create(&path_of(d, 3)).unwrap();
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC_V1);
        header.extend_from_slice(&3u64.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&checksum_v1(3, payload).to_le_bytes());
        file.append(&header).unwrap();
        file.append(payload).unwrap();
        file.sync().unwrap();
        fs.sync_dir(d).unwrap();
        let (snap, skipped) = newest_valid(&fs, d).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(&*snap.unwrap().data, payload);
    }

    #[test]
    fn truncated_snapshot_is_rejected() {
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        write(&fs, d, 5, b"payload").unwrap();
        let mut f = fs.open(&path_of(d, 5)).unwrap();
        f.truncate(SNAPSHOT_HEADER_BYTES as u64 + 2).unwrap();
        assert!(matches!(
            read(&fs, &path_of(d, 5)),
            Err(Error::Corrupt { .. })
        ));
    }
}
