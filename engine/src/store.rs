//! The facade every replica kind recovers from and persists through: one data directory
//! holding a write-ahead log and snapshots.
//!
//! [`Store::open`] returns the newest valid snapshot and the WAL records after it.
//! [`Store::write_snapshot`] makes a snapshot durable and then deletes what it supersedes:
//! older snapshots beyond [`StoreOptions::snapshots_retained`] and WAL segments wholly
//! covered by the oldest retained snapshot. So the directory stays near the size of the
//! live state plus the log since the last snapshot, however long the store runs.
//!
//! Failure model: the WAL's (see [`crate::wal`]); in addition, if the WAL no longer reaches
//! back to the newest valid snapshot (for example because a newer snapshot is corrupt and
//! the log behind it was already compacted), open fails with [`Error::Corrupt`] rather than
//! silently returning a state with a hole in it. A snapshot that cannot be written under
//! its temporary name — no room for it, or the write or fsync of that file fails — is
//! skipped, its temporary file removed, and the store goes on as it was
//! ([`Error::SnapshotSkipped`]): the log it would have compacted still holds everything. A
//! failure after that (the rename, the directory sync) or while compacting poisons the
//! store, as does any failure of the log itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::snapshot::{self, Snapshot, SnapshotSource};
use crate::wal::{TruncatedTail, Wal, WalOptions, WalRecord, WalScan};

/// Free space a snapshot must leave behind it, beyond its own size, or it is skipped: room
/// for the log to go on while the snapshot is written and the files it supersedes are
/// removed.
pub const SNAPSHOT_SPACE_RESERVE_BYTES: u64 = 1 << 20;

/// Tunables of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// WAL tunables.
    pub wal: WalOptions,
    /// How many snapshots to keep (at least 1). Keeping 2 lets recovery fall back if the
    /// newest is damaged, at the cost of the disk for a second copy of the state.
    pub snapshots_retained: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            wal: WalOptions::default(),
            snapshots_retained: 1,
        }
    }
}

impl StoreOptions {
    /// Refuses options no store can run with.
    pub(crate) fn check(&self) -> Result<()> {
        if self.snapshots_retained == 0 {
            return Err(Error::Invalid(
                "snapshots_retained must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What a store held when it was opened.
#[derive(Debug)]
pub struct Recovered {
    /// The newest valid snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Every WAL record after the snapshot, in index order.
    pub records: Vec<WalRecord>,
}

/// Sizes and positions, for status reports and disk budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Bytes of WAL segments (written or buffered).
    pub wal_bytes: u64,
    /// Bytes of snapshot files.
    pub snapshot_bytes: u64,
    /// Index of the newest snapshot (0 if none).
    pub snapshot_index: u64,
    /// Highest durable WAL index.
    pub durable_index: u64,
    /// Index the next record will get.
    pub next_index: u64,
}

/// A snapshot file to write, detached from the store (see [`Store::begin_snapshot`]).
pub struct SnapshotJob {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    index: u64,
}

impl SnapshotJob {
    /// The log index the snapshot covers.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Writes the snapshot file atomically and durably; returns its size in bytes. If the
    /// file system has no room for it and [`SNAPSHOT_SPACE_RESERVE_BYTES`] more (as far as
    /// the source can tell its size), or writing the temporary file fails, the temporary
    /// file is removed and the snapshot skipped ([`Error::SnapshotSkipped`]): the log it
    /// would have compacted still holds everything. A failure to publish it is not a skip.
    pub fn write(&self, source: &dyn SnapshotSource) -> Result<u64> {
        let index = self.index;
        let skipped = |source: Error| Error::SnapshotSkipped {
            index,
            source: Box::new(source),
        };
        if let Some(size) = source.size_hint() {
            let needed = snapshot::file_bytes(size as usize) + SNAPSHOT_SPACE_RESERVE_BYTES;
            let available = self
                .fs
                .available_bytes(&self.dir)
                .map_err(|e| skipped(Error::io("measure free space", &self.dir, e)))?;
            if let Some(available) = available.filter(|&a| a < needed) {
                return Err(skipped(Error::NoSpace {
                    dir: self.dir.clone(),
                    needed,
                    available,
                }));
            }
        }
        let bytes = snapshot::write_temp(&*self.fs, &self.dir, index, source).map_err(|e| {
            let temp = snapshot::temp_path_of(&self.dir, index);
            if self.fs.exists(&temp) {
                let _ = self.fs.remove(&temp);
            }
            skipped(e)
        })?;
        snapshot::publish(&*self.fs, &self.dir, index)?;
        Ok(bytes)
    }
}

/// The snapshots a directory keeps, oldest first, and the rule that drops old ones: what
/// [`Store`] and each stream of a [`crate::shared::SharedStore`] share.
pub(crate) struct Retained {
    dir: PathBuf,
    keep: usize,
    /// (index, file bytes), oldest first.
    list: Vec<(u64, u64)>,
}

impl Retained {
    /// The snapshot files in `dir` up to `newest` (the newest valid one; newer ones were
    /// found invalid and are not kept).
    pub(crate) fn load(fs: &dyn Fs, dir: &Path, newest: u64, keep: usize) -> Result<Retained> {
        let mut list = Vec::new();
        if fs.exists(dir) {
            for index in snapshot::list(fs, dir)? {
                if index <= newest {
                    let bytes = fs
                        .read_all(&snapshot::path_of(dir, index))
                        .map(|b| b.len() as u64)
                        .unwrap_or(0);
                    list.push((index, bytes));
                }
            }
        }
        Ok(Retained {
            dir: dir.to_path_buf(),
            keep,
            list,
        })
    }

    /// Refuses a snapshot at `index` of a log whose last index is `last`.
    pub(crate) fn check(&self, index: u64, last: u64) -> Result<()> {
        if index > last {
            return Err(Error::Invalid(format!(
                "snapshot index {index} is past the end of the log ({last})"
            )));
        }
        if let Some(&(newest, _)) = self.list.last() {
            if index < newest {
                return Err(Error::Invalid(format!(
                    "snapshot index {index} is older than the newest snapshot ({newest})"
                )));
            }
        }
        Ok(())
    }

    /// A job writing the snapshot at `index` into this directory.
    pub(crate) fn job(&self, fs: &Arc<dyn Fs>, index: u64) -> SnapshotJob {
        SnapshotJob {
            fs: fs.clone(),
            dir: self.dir.clone(),
            index,
        }
    }

    /// Records a snapshot written at `index`, then deletes those beyond the retention
    /// count. Returns the oldest kept: the log before it is no longer needed.
    pub(crate) fn add(&mut self, fs: &dyn Fs, index: u64, bytes: u64) -> Result<Option<u64>> {
        self.list.retain(|&(i, _)| i != index);
        self.list.push((index, bytes));
        self.list.sort_unstable();
        self.trim(fs)
    }

    /// Deletes the snapshots beyond the retention count; returns the oldest kept.
    pub(crate) fn trim(&mut self, fs: &dyn Fs) -> Result<Option<u64>> {
        let excess = self.list.len().saturating_sub(self.keep);
        for (index, _) in self.list.drain(..excess) {
            let path = snapshot::path_of(&self.dir, index);
            fs.remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        if excess > 0 {
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(self.oldest())
    }

    /// The oldest kept snapshot's index.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.list.first().map(|&(i, _)| i)
    }

    /// The newest kept snapshot's index (0 if none).
    pub(crate) fn newest(&self) -> u64 {
        self.list.last().map_or(0, |&(i, _)| i)
    }

    /// Bytes of every kept snapshot file.
    pub(crate) fn bytes(&self) -> u64 {
        self.list.iter().map(|&(_, b)| b).sum()
    }
}

/// A data directory: WAL plus snapshots.
pub struct Store {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    wal: Wal,
    snapshots: Retained,
    poisoned: Option<String>,
    report: RecoveryReport,
}

/// What recovery had to skip or repair to open a store. The engine does no logging; the
/// node logs this (a simulator opening stores thousands of times does not).
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Snapshots that failed validation and were passed over for an older one, newest
    /// first; each an [`Error::Corrupt`] naming the `.snap` file and the bad offset.
    pub skipped_snapshots: Vec<Error>,
    /// The torn tail cut off the last WAL segment, if any.
    pub truncated_tail: Option<TruncatedTail>,
    /// Temporary files of a snapshot write a crash interrupted, removed.
    pub removed_temps: Vec<PathBuf>,
}

/// Refuses a log that does not reach back to the newest valid snapshot (or that ends
/// before it), naming the file to blame: the invalid snapshot that was skipped, the
/// first segment when a snapshot is missing, or the snapshot when the log after it is.
fn check_log_reaches(
    dir: &Path,
    snapshot_index: u64,
    skipped: &[Error],
    scan: &WalScan,
) -> Result<()> {
    let covered = if snapshot_index == 0 {
        "there is no valid snapshot".to_string()
    } else {
        format!("the newest valid snapshot covers only up to index {snapshot_index}")
    };
    let first = scan.first_index();
    if first > snapshot_index + 1 {
        return Err(match skipped.first() {
            Some(Error::Corrupt {
                file,
                offset,
                reason,
            }) => Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: format!(
                    "{reason}; nothing can replace this snapshot: the log starts at index \
                     {first} and {covered}"
                ),
            },
            _ => Error::Corrupt {
                file: scan
                    .first_segment()
                    .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
                offset: 0,
                reason: format!(
                    "the log starts at index {first} but {covered}: a snapshot file is missing"
                ),
            },
        });
    }
    if snapshot_index >= scan.next_index() {
        let reason = if scan.is_fresh() {
            format!(
                "snapshot covers index {snapshot_index} but there is no WAL segment at all: \
                 the log after it is missing (a segment named {} or earlier)",
                crate::wal::segment_name(snapshot_index + 1)
            )
        } else {
            format!(
                "snapshot covers index {snapshot_index} but the log ends at {}: the \
                 segment holding index {} is missing",
                scan.next_index() - 1,
                scan.next_index()
            )
        };
        return Err(Error::Corrupt {
            file: snapshot::path_of(dir, snapshot_index),
            offset: 0,
            reason,
        });
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Opening first reads everything and decides whether the directory is usable,
    /// changing nothing; only a directory it accepts is then made ready (created, a stray
    /// temporary snapshot removed, a torn WAL tail cut, a first segment created). So a
    /// refused directory is left exactly as it was: fixing what was wrong (putting a
    /// missing file back) is enough. What recovery skipped or cut is in
    /// [`Store::recovery_report`].
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, options: StoreOptions) -> Result<(Store, Recovered)> {
        options.check()?;
        // Look, changing nothing.
        let (snapshot, skipped_snapshots) = snapshot::newest_valid(&*fs, dir)?;
        let scan = Wal::scan(&*fs, dir, options.wal)?;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
        check_log_reaches(dir, snapshot_index, &skipped_snapshots, &scan)?;

        // The directory is good: make it ready.
        let removed_temps = if fs.exists(dir) {
            snapshot::remove_temps(&*fs, dir)?
        } else {
            Vec::new()
        };
        let (wal, records) = Wal::open_scanned(fs.clone(), dir, options.wal, scan)?;
        let records = records
            .into_iter()
            .filter(|r| r.index > snapshot_index)
            .collect();
        let snapshots = Retained::load(&*fs, dir, snapshot_index, options.snapshots_retained)?;
        let report = RecoveryReport {
            skipped_snapshots,
            truncated_tail: wal.truncated_tail().cloned(),
            removed_temps,
        };
        let mut store = Store {
            fs,
            dir: dir.to_path_buf(),
            wal,
            snapshots,
            poisoned: None,
            report,
        };
        store.trim_snapshots()?;
        Ok((store, Recovered { snapshot, records }))
    }

    /// What opening this store skipped or repaired, for the operator's log.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Closes the store, keeping what opening it skipped or repaired.
    pub fn into_report(self) -> RecoveryReport {
        self.report
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Buffers a record; returns its index. Durable only after [`Store::sync`].
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64> {
        self.check_poisoned()?;
        self.wal.append(kind, payload)
    }

    /// Makes every appended record durable; returns the highest durable index.
    pub fn sync(&mut self) -> Result<u64> {
        self.check_poisoned()?;
        self.wal.sync()
    }

    /// Durably records `data` as the state after applying every record `<= index`, then
    /// deletes the snapshots and log segments it supersedes. Syncs the log first, so a
    /// snapshot never covers records that a crash could still take back.
    ///
    /// A snapshot the disk has no room for (or whose temporary file cannot be written) is
    /// skipped with [`Error::SnapshotSkipped`], which leaves the store usable: snapshots
    /// only compact, so a full disk costs compaction, not the node. Any other failure
    /// poisons the store.
    pub fn write_snapshot(&mut self, index: u64, data: &[u8]) -> Result<()> {
        self.write_snapshot_from(index, &data)
    }

    /// [`Store::write_snapshot`] with the payload streamed from `source`.
    pub fn write_snapshot_from(&mut self, index: u64, source: &dyn SnapshotSource) -> Result<()> {
        let job = self.begin_snapshot(index)?;
        let written = job.write(source);
        self.finish_snapshot(index, written)
    }

    /// The first of the three steps of a snapshot that is written while the log goes on
    /// (see [`crate::group`]): checks `index`, and makes the log up to it durable and
    /// closed, so the snapshot never covers records a crash could take back. The returned
    /// job writes the file on any thread; [`Store::finish_snapshot`] then installs it.
    pub fn begin_snapshot(&mut self, index: u64) -> Result<SnapshotJob> {
        self.check_poisoned()?;
        let last = self.wal.next_index() - 1;
        self.snapshots.check(index, last)?;
        let prepared = if index == last {
            // Close the active segment so the whole log so far can be compacted.
            self.wal.rotate()
        } else {
            self.wal.sync().map(|_| ())
        };
        if let Err(e) = prepared {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        Ok(self.snapshots.job(&self.fs, index))
    }

    /// Installs a snapshot whose file [`SnapshotJob::write`] wrote (`written`: its bytes, or
    /// the error that stopped it): deletes what it supersedes. A snapshot that was skipped
    /// ([`Error::SnapshotSkipped`]: no room) leaves the store as it was; any other error
    /// poisons it.
    pub fn finish_snapshot(&mut self, index: u64, written: Result<u64>) -> Result<()> {
        self.check_poisoned()?;
        let result = written.and_then(|bytes| {
            let oldest = self.snapshots.add(&*self.fs, index, bytes)?;
            self.compact(oldest)
        });
        match &result {
            Ok(()) | Err(Error::SnapshotSkipped { .. }) => {}
            Err(e) => self.poisoned = Some(e.to_string()),
        }
        result
    }

    /// Deletes snapshots beyond the retention count, then the log they no longer need.
    fn trim_snapshots(&mut self) -> Result<()> {
        let oldest = self.snapshots.trim(&*self.fs)?;
        self.compact(oldest)
    }

    /// Deletes the log segments wholly covered by the oldest kept snapshot.
    fn compact(&mut self, oldest: Option<u64>) -> Result<()> {
        match oldest {
            Some(oldest) => self.wal.compact(oldest),
            None => Ok(()),
        }
    }

    /// Sizes and positions.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            wal_bytes: self.wal.disk_bytes(),
            snapshot_bytes: self.snapshots.bytes(),
            snapshot_index: self.snapshots.newest(),
            durable_index: self.wal.durable_index(),
            next_index: self.wal.next_index(),
        }
    }

    /// Bytes of every file the store holds.
    pub fn disk_bytes(&self) -> u64 {
        let stats = self.stats();
        stats.wal_bytes + stats.snapshot_bytes
    }

    /// The index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.wal.next_index()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{SimFs, Torn};
    use crate::wal::PREFILL_BYTES_DEFAULT;

    fn open(fs: &SimFs, options: StoreOptions) -> Result<(Store, Recovered)> {
        Store::open(Arc::new(fs.clone()), Path::new("/data"), options)
    }

    #[test]
    fn recovers_snapshot_plus_later_records() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        store.append(1, b"a").unwrap();
        let i = store.append(1, b"b").unwrap();
        store.sync().unwrap();
        store.write_snapshot(i, b"ab").unwrap();
        store.append(1, b"c").unwrap();
        store.sync().unwrap();
        fs.crash(Torn::None);
        let (_, rec) = open(&fs, StoreOptions::default()).unwrap();
        let snap = rec.snapshot.unwrap();
        assert_eq!((snap.index, &*snap.data), (2, &b"ab"[..]));
        assert_eq!(rec.records.len(), 1);
        assert_eq!(
            (rec.records[0].index, &rec.records[0].payload[..]),
            (3, &b"c"[..])
        );
    }

    #[test]
    fn steady_overwrites_keep_the_directory_bounded() {
        let fs = SimFs::new();
        let options = StoreOptions {
            wal: WalOptions {
                segment_bytes_max: 4096,
                recycle: true,
                prefill_bytes: PREFILL_BYTES_DEFAULT,
            },
            snapshots_retained: 1,
        };
        let (mut store, _) = open(&fs, options).unwrap();
        let mut peak = 0;
        for round in 0..2000u32 {
            let i = store.append(0, &[round as u8; 500]).unwrap();
            store.sync().unwrap();
            if round % 20 == 19 {
                store.write_snapshot(i, &[1u8; 1000]).unwrap();
            }
            peak = peak.max(fs.bytes_under(Path::new("/data")));
            assert_eq!(store.disk_bytes(), fs.bytes_under(Path::new("/data")));
        }
        // 20 records of ~509 bytes between snapshots, plus one 1 KB snapshot, plus the
        // zeroed space ahead of the active segment's records (up to its 4 KiB).
        assert!(peak < 20 * 520 + 1100 + 4096, "peak {peak}");
    }

    #[test]
    fn corrupt_newest_snapshot_with_compacted_log_is_refused_naming_the_file_and_offset() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        let i = store.append(0, b"x").unwrap();
        store.write_snapshot(i, b"state").unwrap();
        drop(store);
        let snap = snapshot::path_of(Path::new("/data"), i);
        fs.flip_bit(&snap, 30, 1).unwrap();
        match open(&fs, StoreOptions::default()) {
            Err(Error::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, snap);
                assert_eq!(offset, snapshot::SNAPSHOT_HEADER_BYTES as u64);
                assert!(reason.contains("checksum mismatch"), "{reason}");
                assert!(reason.contains("log starts at index 2"), "{reason}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
        }
    }

    /// Every file's name and bytes under `/data`.
    fn disk(fs: &SimFs) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new("/data");
        fs.list(dir)
            .unwrap()
            .into_iter()
            .map(|name| {
                let bytes = fs.read_all(&dir.join(&name)).unwrap().to_vec();
                (name, bytes)
            })
            .collect()
    }

    #[test]
    fn a_refused_open_changes_nothing_and_putting_the_missing_segment_back_is_enough() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        for round in 0..3u8 {
            let i = store.append(0, &[round; 10]).unwrap();
            store.write_snapshot(i, &[round]).unwrap();
        }
        store.append(0, b"after").unwrap();
        store.sync().unwrap();
        drop(store);
        // The newest segment goes missing (with the spare, it is the only one).
        let newest = Path::new("/data").join(crate::wal::segment_name(4));
        let kept = fs.read_all(&newest).unwrap().to_vec();
        fs.remove(&newest).unwrap();
        let before = disk(&fs);
        for _ in 0..2 {
            match open(&fs, StoreOptions::default()) {
                Err(Error::Corrupt { file, reason, .. }) => {
                    assert_eq!(file, snapshot::path_of(Path::new("/data"), 3));
                    assert!(reason.contains("no WAL segment"), "{reason}");
                    assert!(reason.contains(&crate::wal::segment_name(4)), "{reason}");
                }
                other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
            }
            assert_eq!(disk(&fs), before, "a refused open changed the directory");
        }
        let mut file = fs.create(&newest).unwrap();
        file.append(&kept).unwrap();
        file.sync().unwrap();
        let (_, recovered) = open(&fs, StoreOptions::default()).unwrap();
        assert_eq!(recovered.snapshot.unwrap().index, 3);
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.records[0].payload, b"after");
    }

    #[test]
    fn a_refused_open_does_not_cut_a_torn_tail_or_remove_temporary_files() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        let i = store.append(0, b"x").unwrap();
        store.write_snapshot(i, b"state").unwrap();
        store.append(0, b"y").unwrap();
        store.sync().unwrap();
        drop(store);
        let dir = Path::new("/data");
        let active = dir.join(crate::wal::segment_name(i + 1));
        let mut file = fs.open(&active).unwrap();
        file.append(&[7u8; 5]).unwrap(); // a torn record header
        file.sync().unwrap();
        let mut temp = fs
            .create(&dir.join("00000000000000000009.snap.tmp"))
            .unwrap();
        temp.append(b"half").unwrap();
        temp.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        fs.flip_bit(&snapshot::path_of(dir, i), 30, 1).unwrap();
        let before = disk(&fs);
        assert!(open(&fs, StoreOptions::default()).is_err());
        assert_eq!(disk(&fs), before, "a refused open changed the directory");
    }

    #[test]
    fn what_recovery_skips_or_cuts_is_reported() {
        let fs = SimFs::new();
        let options = StoreOptions {
            snapshots_retained: 2,
            ..StoreOptions::default()
        };
        let (mut store, _) = open(&fs, options).unwrap();
        assert!(store.recovery_report().skipped_snapshots.is_empty());
        let a = store.append(0, b"1").unwrap();
        store.write_snapshot(a, b"s1").unwrap();
        let b = store.append(0, b"2").unwrap();
        store.write_snapshot(b, b"s2").unwrap();
        store.append(0, b"3").unwrap();
        store.sync().unwrap();
        drop(store);
        let dir = Path::new("/data");
        fs.flip_bit(&snapshot::path_of(dir, b), 29, 1).unwrap();
        let active = dir.join(crate::wal::segment_name(b + 1));
        let valid = fs.read_all(&active).unwrap().len() as u64;
        let mut file = fs.open(&active).unwrap();
        file.append(&[0u8; 12]).unwrap();
        file.sync().unwrap();
        let mut temp = fs
            .create(&dir.join("00000000000000000009.snap.tmp"))
            .unwrap();
        temp.append(b"half").unwrap();
        fs.sync_dir(dir).unwrap();

        let (store, recovered) = open(&fs, options).unwrap();
        assert_eq!(recovered.snapshot.unwrap().index, a);
        let report = store.recovery_report();
        assert!(matches!(
            &report.skipped_snapshots[..],
            [Error::Corrupt { file, offset, .. }]
                if *file == snapshot::path_of(dir, b) && *offset == snapshot::SNAPSHOT_HEADER_BYTES as u64
        ));
        let tail = report.truncated_tail.as_ref().expect("a torn tail was cut");
        assert_eq!((&tail.file, tail.offset, tail.bytes), (&active, valid, 12));
        assert_eq!(
            report.removed_temps,
            vec![dir.join("00000000000000000009.snap.tmp")]
        );
    }

    #[test]
    fn corrupt_newest_snapshot_falls_back_when_two_are_retained() {
        let fs = SimFs::new();
        let options = StoreOptions {
            snapshots_retained: 2,
            ..StoreOptions::default()
        };
        let (mut store, _) = open(&fs, options).unwrap();
        let a = store.append(0, b"1").unwrap();
        store.write_snapshot(a, b"s1").unwrap();
        let b = store.append(0, b"2").unwrap();
        store.write_snapshot(b, b"s2").unwrap();
        drop(store);
        fs.flip_bit(&snapshot::path_of(Path::new("/data"), b), 29, 1)
            .unwrap();
        let (_, rec) = open(&fs, options).unwrap();
        assert_eq!(&*rec.snapshot.unwrap().data, b"s1");
        assert_eq!(rec.records.len(), 1);
        assert_eq!(rec.records[0].payload, b"2");
    }

    fn tight(fs: &SimFs, spare_bytes: u64) {
        let used = fs.bytes_under(Path::new("/data"));
        fs.set_capacity(Some(used + spare_bytes));
    }

    #[test]
    fn a_snapshot_the_disk_has_no_room_for_is_skipped_and_the_store_goes_on() {
        let fs = SimFs::new();
        // No zeros ahead of the records: the snapshot's rotation would cut them and so
        // make the room this test's disk must not have.
        let options = StoreOptions {
            wal: WalOptions {
                prefill_bytes: 0,
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        };
        let (mut store, _) = open(&fs, options).unwrap();
        for i in 0..10u8 {
            store.append(0, &[i; 100]).unwrap();
        }
        store.sync().unwrap();
        // Room for more records, not for a snapshot and its reserve.
        tight(&fs, SNAPSHOT_SPACE_RESERVE_BYTES);
        let before = disk(&fs);
        let index = store.next_index() - 1;
        match store.write_snapshot(index, &[7u8; 4096]) {
            Err(Error::SnapshotSkipped { index: i, source }) => {
                assert_eq!(i, index);
                assert!(matches!(*source, Error::NoSpace { .. }), "{source}");
            }
            other => panic!("expected SnapshotSkipped, got {other:?}"),
        }
        assert_eq!(
            disk(&fs).len(),
            before.len() + 1,
            "only the rotation's new segment"
        );
        let after = store.append(0, b"after").unwrap();
        store.sync().unwrap();
        // Once there is room, snapshots work again and compact the log.
        fs.set_capacity(None);
        store.write_snapshot(after, b"state").unwrap();
        fs.crash(Torn::None);
        let (_, recovered) = open(&fs, StoreOptions::default()).unwrap();
        assert_eq!(&*recovered.snapshot.unwrap().data, b"state");
        assert!(recovered.records.is_empty());
    }

    #[test]
    fn a_snapshot_whose_temporary_file_fails_is_removed_and_skipped_not_poisoning() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        let i = store.append(0, b"kept").unwrap();
        store.sync().unwrap();
        // The rotation's segment and directory fsyncs pass; the temporary file's fails
        // (as it would on a disk that filled up under the write).
        fs.fail_sync_after(2);
        let result = store.write_snapshot(i, &[1u8; 8192]);
        assert!(
            matches!(result, Err(Error::SnapshotSkipped { .. })),
            "{result:?}"
        );
        let names = fs.list(Path::new("/data")).unwrap();
        assert!(
            !names.iter().any(|n| n.contains(".snap")),
            "a snapshot file was left behind: {names:?}"
        );
        store.append(0, b"after").unwrap();
        store.sync().unwrap();
        fs.crash(Torn::None);
        let (_, recovered) = open(&fs, StoreOptions::default()).unwrap();
        assert!(recovered.snapshot.is_none());
        let payloads: Vec<&[u8]> = recovered.records.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(payloads, vec![&b"kept"[..], b"after"]);
    }

    #[test]
    fn snapshot_beyond_the_log_is_refused() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        assert!(matches!(
            store.write_snapshot(5, b"x"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn failed_snapshot_fsync_poisons_the_store() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        let i = store.append(0, b"x").unwrap();
        store.sync().unwrap();
        fs.fail_next_syncs(1);
        assert!(store.write_snapshot(i, b"s").is_err());
        assert!(matches!(store.append(0, b"y"), Err(Error::Poisoned(_))));
    }
}
