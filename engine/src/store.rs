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
//! silently returning a state with a hole in it. Any failed snapshot write poisons the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::snapshot::{self, Snapshot, SnapshotSource};
use crate::wal::{Wal, WalOptions, WalRecord};

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

    /// Writes the snapshot file atomically and durably; returns its size in bytes.
    pub fn write(&self, source: &dyn SnapshotSource) -> Result<u64> {
        snapshot::write_from(&*self.fs, &self.dir, self.index, source)
    }
}

/// A data directory: WAL plus snapshots.
pub struct Store {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: StoreOptions,
    wal: Wal,
    /// Retained snapshots, oldest first: (index, file bytes).
    snapshots: Vec<(u64, u64)>,
    poisoned: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, options: StoreOptions) -> Result<(Store, Recovered)> {
        if options.snapshots_retained == 0 {
            return Err(Error::Invalid(
                "snapshots_retained must be at least 1".into(),
            ));
        }
        fs.create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
        snapshot::remove_temps(&*fs, dir)?;
        let (snapshot, _skipped) = snapshot::newest_valid(&*fs, dir)?;
        let (wal, records) = Wal::open(fs.clone(), dir, options.wal)?;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
        if wal.first_index() > snapshot_index + 1 {
            return Err(Error::Corrupt {
                file: dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "log starts at index {} but the newest valid snapshot covers only up to {}",
                    wal.first_index(),
                    snapshot_index
                ),
            });
        }
        if snapshot_index >= wal.next_index() {
            return Err(Error::Corrupt {
                file: snapshot::path_of(dir, snapshot_index),
                offset: 0,
                reason: format!(
                    "snapshot covers index {snapshot_index} but the log ends at {}",
                    wal.next_index() - 1
                ),
            });
        }
        let records = records
            .into_iter()
            .filter(|r| r.index > snapshot_index)
            .collect();
        let mut snapshots = Vec::new();
        for index in snapshot::list(&*fs, dir)? {
            if index <= snapshot_index {
                let bytes = fs
                    .read_all(&snapshot::path_of(dir, index))
                    .map(|b| b.len() as u64)
                    .unwrap_or(0);
                snapshots.push((index, bytes));
            }
        }
        let mut store = Store {
            fs,
            dir: dir.to_path_buf(),
            options,
            wal,
            snapshots,
            poisoned: None,
        };
        store.trim_snapshots()?;
        Ok((store, Recovered { snapshot, records }))
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
        if index > last {
            return Err(Error::Invalid(format!(
                "snapshot index {index} is past the end of the log ({last})"
            )));
        }
        if let Some(&(newest, _)) = self.snapshots.last() {
            if index < newest {
                return Err(Error::Invalid(format!(
                    "snapshot index {index} is older than the newest snapshot ({newest})"
                )));
            }
        }
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
        Ok(SnapshotJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            index,
        })
    }

    /// Installs a snapshot whose file [`SnapshotJob::write`] wrote (`written`: its bytes, or
    /// the error that stopped it): deletes what it supersedes. Any error poisons the store.
    pub fn finish_snapshot(&mut self, index: u64, written: Result<u64>) -> Result<()> {
        self.check_poisoned()?;
        let result = written.and_then(|bytes| {
            self.snapshots.retain(|&(i, _)| i != index);
            self.snapshots.push((index, bytes));
            self.snapshots.sort_unstable();
            self.trim_snapshots()
        });
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result
    }

    /// Deletes snapshots beyond the retention count, then the log they no longer need.
    fn trim_snapshots(&mut self) -> Result<()> {
        let excess = self
            .snapshots
            .len()
            .saturating_sub(self.options.snapshots_retained);
        for (index, _) in self.snapshots.drain(..excess) {
            let path = snapshot::path_of(&self.dir, index);
            self.fs
                .remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        if excess > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        if let Some(&(oldest, _)) = self.snapshots.first() {
            self.wal.compact(oldest)?;
        }
        Ok(())
    }

    /// Sizes and positions.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            wal_bytes: self.wal.disk_bytes(),
            snapshot_bytes: self.snapshots.iter().map(|&(_, b)| b).sum(),
            snapshot_index: self.snapshots.last().map_or(0, |&(i, _)| i),
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
        // 20 records of ~509 bytes between snapshots, plus one 1 KB snapshot.
        assert!(peak < 20 * 520 + 1100, "peak {peak}");
    }

    #[test]
    fn corrupt_newest_snapshot_with_compacted_log_is_refused() {
        let fs = SimFs::new();
        let (mut store, _) = open(&fs, StoreOptions::default()).unwrap();
        let i = store.append(0, b"x").unwrap();
        store.write_snapshot(i, b"state").unwrap();
        drop(store);
        fs.flip_bit(&snapshot::path_of(Path::new("/data"), i), 30, 1)
            .unwrap();
        assert!(matches!(
            open(&fs, StoreOptions::default()),
            Err(Error::Corrupt { .. })
        ));
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
