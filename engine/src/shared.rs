//! One write-ahead log shared by many streams, each with snapshots of its own.
//!
//! A node that hosts replicas of several groups could give each its own [`Store`]. Then
//! every group pays an fdatasync of its own for each batch, and on one disk those fsyncs
//! queue behind each other: the node's fsync rate is split among its groups, each batch
//! carries fewer operations, and more groups means less throughput. A [`SharedStore`]
//! gives them one log, so one fdatasync makes the newest records of every group durable,
//! while each group (a *stream*) keeps its snapshots in its own directory and snapshots
//! on its own schedule. TiKV's raft-engine and CockroachDB's shared store do the same.
//!
//! # On disk
//! - The log: segments as in [`crate::wal`], in a directory of their own. A record's kind
//!   is the stream's; its payload is `incarnation: u64 LE | seq: u64 LE` followed by the
//!   stream's payload.
//! - A stream's directory: its snapshots ([`crate::snapshot`], named by the stream's own
//!   index) and an empty file `log-{incarnation:016x}.stream`. The incarnation is a number
//!   the caller picks at random the first time the directory is opened; it ties the log's
//!   records to this directory.
//! - `seq` is the stream's own index: 1, 2, 3, ... without gaps. So to a stream the shared
//!   log looks like a log of its own: [`SharedStore::open`] gives each stream a
//!   [`Recovered`] of the shape [`Store::open`] gives, indexes included.
//!
//! # Recovery
//! A record whose incarnation is no stream's belongs to a directory that was lost (it has
//! a new incarnation now) or to a stream the caller no longer opens: it is passed over,
//! counted in the report, and pins nothing. For each stream, the records after its newest
//! valid snapshot must continue it without a gap, and must reach at least as far as any
//! newer snapshot that was found invalid (the stream got that far, so its state cannot end
//! before it); otherwise open fails with [`Error::Corrupt`] and changes nothing.
//!
//! # Compaction
//! A segment can go once every record in it is an unknown incarnation's or covered by its
//! stream's oldest kept snapshot. Each stream remembers where its uncovered records are,
//! so the log is compacted exactly up to the first of them. Snapshots do not close the
//! active segment (other streams are writing to it); segments go as they fill.
//!
//! # From one log per stream
//! A stream directory that still holds WAL segments of its own (a [`Store`]) is taken over
//! on open: its records after its snapshot are appended to the shared log under a new
//! incarnation, with their old indexes as seqs, and synced; then the incarnation file is
//! created, and only then are the old segments removed. A crash before the incarnation
//! file exists leaves the old log, imported again next time under another incarnation
//! (the half-imported records are then an unknown incarnation's); a crash after it leaves
//! segments that are removed next time.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::group::Log;
use crate::snapshot;
use crate::store::{
    Recovered, RecoveryReport, Retained, SnapshotJob, Store, StoreOptions, StoreStats,
};
use crate::wal::{Wal, WalRecord, RECORD_HEADER_BYTES};

/// Bytes of the stream header at the front of every record's payload.
pub const STREAM_HEADER_BYTES: usize = 16;
const STREAM_SUFFIX: &str = ".stream";

/// One stream to open: its directory, and the incarnation to give it if it has none yet
/// (a fresh or lost directory).
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Where the stream's snapshots live.
    pub dir: PathBuf,
    /// A random number, used only if the directory has no incarnation yet.
    pub new_incarnation: u64,
}

/// What opening skipped, repaired or took over.
#[derive(Debug, Default)]
pub struct SharedReport {
    /// The torn tail cut off the shared log, if any.
    pub log_tail: Option<crate::wal::TruncatedTail>,
    /// What each stream's directory needed (for a stream whose own log was taken over,
    /// that log's torn tail too).
    pub streams: Vec<RecoveryReport>,
    /// Records of incarnations no stream has: a lost directory's, or a stream no longer
    /// opened.
    pub foreign_records: u64,
    /// Stream directories whose own log was taken over.
    pub imported: Vec<PathBuf>,
}

struct Stream {
    dir: PathBuf,
    incarnation: u64,
    snapshots: Retained,
    next_seq: u64,
    durable_seq: u64,
    /// (seq, log index, record bytes) of every record the oldest kept snapshot does not
    /// cover, oldest first.
    uncovered: VecDeque<(u64, u64, u64)>,
    uncovered_bytes: u64,
}

/// A log shared by streams, each with its own snapshot directory.
pub struct SharedStore {
    fs: Arc<dyn Fs>,
    wal: Wal,
    streams: Vec<Stream>,
    poisoned: Option<String>,
    report: SharedReport,
}

/// The file naming a stream directory's incarnation.
fn incarnation_file(dir: &Path, incarnation: u64) -> PathBuf {
    dir.join(format!("log-{incarnation:016x}{STREAM_SUFFIX}"))
}

/// The incarnation named in `dir`, if any.
fn read_incarnation(fs: &dyn Fs, dir: &Path) -> Result<Option<u64>> {
    if !fs.exists(dir) {
        return Ok(None);
    }
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut found = names.iter().filter_map(|name| {
        let hex = name.strip_prefix("log-")?.strip_suffix(STREAM_SUFFIX)?;
        Some((name, u64::from_str_radix(hex, 16).ok()))
    });
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some((_, Some(incarnation))), None) => Ok(Some(incarnation)),
        (Some((name, None)), _) => Err(Error::Corrupt {
            file: dir.join(name),
            offset: 0,
            reason: "not a valid stream incarnation file name".into(),
        }),
        (Some((name, _)), Some((other, _))) => Err(Error::Corrupt {
            file: dir.join(name),
            offset: 0,
            reason: format!("a second incarnation file, {other}, is beside it"),
        }),
    }
}

/// Splits a shared-log record into its stream header and the stream's own record.
fn split(dir: &Path, record: &WalRecord) -> Result<(u64, u64)> {
    let header = record
        .payload
        .get(..STREAM_HEADER_BYTES)
        .ok_or_else(|| Error::Corrupt {
            file: dir.to_path_buf(),
            offset: 0,
            reason: format!(
                "record {} is too short for a stream header: not a shared log",
                record.index
            ),
        })?;
    let incarnation = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    Ok((incarnation, seq))
}

/// What the look phase learnt about one stream.
struct Found {
    incarnation: Option<u64>,
    /// The stream's own log, still to be imported.
    legacy: bool,
}

impl SharedStore {
    /// Opens (creating if needed) the shared log in `wal_dir` and the streams `specs`, in
    /// that order; returns what each stream holds. As with [`Store::open`], everything is
    /// read and checked before anything changes.
    pub fn open(
        fs: Arc<dyn Fs>,
        wal_dir: &Path,
        specs: &[StreamSpec],
        options: StoreOptions,
    ) -> Result<(SharedStore, Vec<Recovered>)> {
        options.check()?;
        // Look, changing nothing.
        let mut found = Vec::with_capacity(specs.len());
        for spec in specs {
            let incarnation = read_incarnation(&*fs, &spec.dir)?;
            let legacy = !Wal::scan(&*fs, &spec.dir, options.wal)?.is_fresh();
            found.push(Found {
                incarnation,
                legacy,
            });
        }
        let scan = Wal::scan(&*fs, wal_dir, options.wal)?;
        // Each stream's records, as positions in the log's.
        let mut own: Vec<Vec<usize>> = vec![Vec::new(); specs.len()];
        let mut foreign_records = 0;
        for (at, record) in scan.records().iter().enumerate() {
            let (incarnation, _) = split(wal_dir, record)?;
            match found
                .iter()
                .position(|f| f.incarnation == Some(incarnation))
            {
                Some(stream) => own[stream].push(at),
                None => foreign_records += 1,
            }
        }
        let mut snapshots = Vec::with_capacity(specs.len());
        let mut reports = Vec::with_capacity(specs.len());
        for ((spec, f), records) in specs.iter().zip(&found).zip(&own) {
            let (snapshot, skipped) = snapshot::newest_valid(&*fs, &spec.dir)?;
            if f.incarnation.is_some() {
                let newest = snapshot.as_ref().map_or(0, |s| s.index);
                let records = records.iter().map(|&at| &scan.records()[at]);
                check_continues(&spec.dir, newest, &skipped, records)?;
            } else if !f.legacy && snapshot.is_some() {
                return Err(Error::Corrupt {
                    file: spec.dir.clone(),
                    offset: 0,
                    reason: "snapshots without the stream's incarnation file or a log of \
                             its own: the log that continues them is unknown"
                        .into(),
                });
            }
            snapshots.push(snapshot);
            reports.push(RecoveryReport {
                skipped_snapshots: skipped,
                ..RecoveryReport::default()
            });
        }

        // Everything checks out: make it ready.
        let (wal, all) = Wal::open_scanned(fs.clone(), wal_dir, options.wal, scan)?;
        let mut store = SharedStore {
            fs: fs.clone(),
            streams: Vec::with_capacity(specs.len()),
            poisoned: None,
            report: SharedReport {
                log_tail: wal.truncated_tail().cloned(),
                streams: Vec::new(),
                foreign_records,
                imported: Vec::new(),
            },
            wal,
        };
        let mut recovered = Vec::with_capacity(specs.len());
        let mut imports = Vec::new();
        for (i, ((spec, f), snapshot)) in specs.iter().zip(&found).zip(snapshots).enumerate() {
            fs.create_dir_all(&spec.dir)
                .map_err(|e| Error::io("create directory", &spec.dir, e))?;
            reports[i].removed_temps = snapshot::remove_temps(&*fs, &spec.dir)?;
            let newest = snapshot.as_ref().map_or(0, |s| s.index);
            let retained = Retained::load(&*fs, &spec.dir, newest, options.snapshots_retained)?;
            let oldest = retained.oldest().unwrap_or(0);
            let records = match f.incarnation {
                Some(incarnation) => {
                    let mut records: Vec<WalRecord> = Vec::new();
                    let mut stream = Stream::new(spec.dir.clone(), incarnation, retained);
                    for record in own[i].iter().map(|&at| &all[at]) {
                        let (_, seq) = split(wal_dir, record)?;
                        stream.track(seq, record.index, record_bytes(record.payload.len()));
                        if seq > newest {
                            records.push(WalRecord {
                                index: seq,
                                kind: record.kind,
                                payload: record.payload[STREAM_HEADER_BYTES..].to_vec(),
                            });
                        }
                    }
                    stream.next_seq = records.last().map_or(newest, |r| r.index) + 1;
                    stream.durable_seq = stream.next_seq - 1;
                    stream.drop_covered(oldest);
                    store.streams.push(stream);
                    records
                }
                None if f.legacy => {
                    // A log of its own: take it over (see the module docs).
                    let (old, old_recovered) = Store::open(fs.clone(), &spec.dir, options)?;
                    let old_report = old.into_report();
                    reports[i].skipped_snapshots = old_report.skipped_snapshots;
                    reports[i].truncated_tail = old_report.truncated_tail;
                    reports[i].removed_temps.extend(old_report.removed_temps);
                    let newest = old_recovered.snapshot.as_ref().map_or(0, |s| s.index);
                    let retained =
                        Retained::load(&*fs, &spec.dir, newest, options.snapshots_retained)?;
                    let mut stream = Stream::new(spec.dir.clone(), spec.new_incarnation, retained);
                    stream.next_seq = old_recovered.records.last().map_or(newest, |r| r.index) + 1;
                    store.streams.push(stream);
                    for record in &old_recovered.records {
                        store.append_as(i, record.index, record.kind, &record.payload)?;
                    }
                    imports.push(i);
                    recovered.push(old_recovered);
                    continue;
                }
                None => {
                    let stream = Stream::new(spec.dir.clone(), spec.new_incarnation, retained);
                    store.streams.push(stream);
                    Vec::new()
                }
            };
            recovered.push(Recovered { snapshot, records });
        }
        // Imported records are durable before anything names their incarnation.
        store.wal.sync()?;
        for (i, (spec, f)) in specs.iter().zip(&found).enumerate() {
            let stream = &mut store.streams[i];
            stream.durable_seq = stream.next_seq - 1;
            if f.incarnation.is_none() {
                let path = incarnation_file(&spec.dir, stream.incarnation);
                fs.create(&path)
                    .and_then(|mut file| file.sync())
                    .and_then(|()| fs.sync_dir(&spec.dir))
                    .map_err(|e| Error::io("create", &path, e))?;
            }
            if f.legacy {
                Wal::remove_files(&*fs, &spec.dir)?;
                if imports.contains(&i) {
                    store.report.imported.push(spec.dir.clone());
                }
            }
        }
        for stream in 0..store.streams.len() {
            let oldest = store.streams[stream].snapshots.trim(&*fs)?;
            store.streams[stream].drop_covered(oldest.unwrap_or(0));
        }
        store.compact()?;
        store.report.streams = reports;
        Ok((store, recovered))
    }

    /// What opening skipped, repaired or took over, for the operator's log.
    pub fn report(&self) -> &SharedReport {
        &self.report
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Buffers a record of `stream` with the given seq.
    fn append_as(&mut self, stream: usize, seq: u64, kind: u8, payload: &[u8]) -> Result<u64> {
        let s = &mut self.streams[stream];
        let mut header = [0u8; STREAM_HEADER_BYTES];
        header[..8].copy_from_slice(&s.incarnation.to_le_bytes());
        header[8..].copy_from_slice(&seq.to_le_bytes());
        let index = self.wal.append_parts(kind, &[&header, payload])?;
        s.track(
            seq,
            index,
            record_bytes(STREAM_HEADER_BYTES + payload.len()),
        );
        Ok(seq)
    }

    /// Deletes the log segments no stream needs.
    fn compact(&mut self) -> Result<()> {
        let needed = self
            .streams
            .iter()
            .filter_map(|s| s.uncovered.front().map(|&(_, index, _)| index))
            .min()
            .unwrap_or(self.wal.next_index());
        self.wal.compact(needed - 1)
    }

    /// Bytes of every file the shared log holds.
    pub fn wal_disk_bytes(&self) -> u64 {
        self.wal.disk_bytes()
    }
}

/// Bytes a record with a payload of `payload` bytes takes in the log.
fn record_bytes(payload: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload) as u64
}

/// Refuses a stream whose records do not continue its newest valid snapshot (at
/// `snapshot`) without a gap, or end before a newer snapshot found invalid.
fn check_continues<'a>(
    dir: &Path,
    snapshot: u64,
    skipped: &[Error],
    records: impl Iterator<Item = &'a WalRecord>,
) -> Result<()> {
    let mut expected = snapshot + 1;
    for record in records {
        let (_, seq) = split(dir, record)?;
        if seq <= snapshot {
            continue;
        }
        if seq != expected {
            return Err(Error::Corrupt {
                file: dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "the shared log holds this stream's record {seq} where {expected} was \
                     expected (its snapshot covers up to {snapshot}): records are missing"
                ),
            });
        }
        expected += 1;
    }
    let reached = expected - 1;
    for bad in skipped {
        if let Error::Corrupt { file, .. } = bad {
            if let Some(index) = snapshot::index_of(file) {
                if index > reached {
                    return Err(Error::Corrupt {
                        file: file.clone(),
                        offset: 0,
                        reason: format!(
                            "{bad}; nothing can replace this snapshot: the stream reached \
                             index {index} but what is left reaches only {reached}"
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

impl Stream {
    fn new(dir: PathBuf, incarnation: u64, snapshots: Retained) -> Stream {
        let newest = snapshots.newest();
        Stream {
            dir,
            incarnation,
            snapshots,
            next_seq: newest + 1,
            durable_seq: newest,
            uncovered: VecDeque::new(),
            uncovered_bytes: 0,
        }
    }

    fn track(&mut self, seq: u64, index: u64, bytes: u64) {
        self.uncovered.push_back((seq, index, bytes));
        self.uncovered_bytes += bytes;
    }

    /// Forgets the records a snapshot at `upto` covers.
    fn drop_covered(&mut self, upto: u64) {
        while let Some(&(seq, _, bytes)) = self.uncovered.front() {
            if seq > upto {
                break;
            }
            self.uncovered.pop_front();
            self.uncovered_bytes -= bytes;
        }
    }
}

impl Log for SharedStore {
    fn streams(&self) -> usize {
        self.streams.len()
    }

    fn append(&mut self, stream: usize, kind: u8, payload: &[u8]) -> Result<u64> {
        self.check_poisoned()?;
        let seq = self.streams[stream].next_seq;
        self.append_as(stream, seq, kind, payload)?;
        self.streams[stream].next_seq += 1;
        Ok(seq)
    }

    fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        self.wal.sync()?;
        for stream in &mut self.streams {
            stream.durable_seq = stream.next_seq - 1;
        }
        Ok(())
    }

    fn last_index(&self, stream: usize) -> u64 {
        self.streams[stream].next_seq - 1
    }

    fn begin_snapshot(&mut self, stream: usize, index: u64) -> Result<SnapshotJob> {
        self.check_poisoned()?;
        let last = self.last_index(stream);
        self.streams[stream].snapshots.check(index, last)?;
        // The snapshot must never cover records a crash could take back.
        if let Err(e) = Log::sync(self) {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        Ok(self.streams[stream].snapshots.job(&self.fs, index))
    }

    fn finish_snapshot(&mut self, stream: usize, index: u64, written: Result<u64>) -> Result<()> {
        self.check_poisoned()?;
        let result = written.and_then(|bytes| {
            let s = &mut self.streams[stream];
            let oldest = s.snapshots.add(&*self.fs, index, bytes)?;
            s.drop_covered(oldest.unwrap_or(0));
            self.compact()
        });
        match &result {
            Ok(()) | Err(Error::SnapshotSkipped { .. }) => {}
            Err(e) => self.poisoned = Some(e.to_string()),
        }
        result
    }

    fn stats(&self, stream: usize) -> StoreStats {
        let s = &self.streams[stream];
        StoreStats {
            wal_bytes: s.uncovered_bytes,
            snapshot_bytes: s.snapshots.bytes(),
            snapshot_index: s.snapshots.newest(),
            durable_index: s.durable_seq,
            next_index: s.next_seq,
        }
    }
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("log", &self.wal.dir())
            .field(
                "streams",
                &self.streams.iter().map(|s| &s.dir).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{SimFs, Torn};
    use crate::group::{GroupCommit, GroupOptions};
    use crate::wal::WalOptions;

    const LOG: &str = "/node/wal";

    fn specs(n: usize) -> Vec<StreamSpec> {
        (0..n)
            .map(|i| StreamSpec {
                dir: PathBuf::from(format!("/node/group-{i}")),
                new_incarnation: 0x1000 + i as u64,
            })
            .collect()
    }

    fn small() -> StoreOptions {
        StoreOptions {
            wal: WalOptions {
                segment_bytes_max: 256,
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        }
    }

    fn open(fs: &SimFs, specs: &[StreamSpec]) -> Result<(SharedStore, Vec<Recovered>)> {
        SharedStore::open(Arc::new(fs.clone()), Path::new(LOG), specs, small())
    }

    fn snapshot(store: &mut SharedStore, stream: usize, data: &[u8]) -> u64 {
        let index = store.last_index(stream);
        let job = store.begin_snapshot(stream, index).unwrap();
        let written = job.write(&data);
        store.finish_snapshot(stream, index, written).unwrap();
        index
    }

    fn payloads(recovered: &Recovered) -> Vec<(u64, Vec<u8>)> {
        recovered
            .records
            .iter()
            .map(|r| (r.index, r.payload.clone()))
            .collect()
    }

    #[test]
    fn each_stream_reads_back_its_own_records_numbered_from_one() {
        let fs = SimFs::new();
        let specs = specs(3);
        let (mut store, recovered) = open(&fs, &specs).unwrap();
        assert!(recovered.iter().all(|r| r.records.is_empty()));
        for i in 0..30u8 {
            let stream = (i % 3) as usize;
            let seq = store.append(stream, i, &[i; 5]).unwrap();
            assert_eq!(seq, u64::from(i / 3) + 1);
        }
        store.sync().unwrap();
        drop(store);
        fs.crash(Torn::None);
        let (store, recovered) = open(&fs, &specs).unwrap();
        for (stream, r) in recovered.iter().enumerate() {
            let expected: Vec<(u64, Vec<u8>)> = (0..10u8)
                .map(|k| {
                    let i = k * 3 + stream as u8;
                    (u64::from(k) + 1, vec![i; 5])
                })
                .collect();
            assert_eq!(payloads(r), expected);
            assert!(r.records.iter().all(|rec| rec.kind % 3 == stream as u8));
            assert_eq!(store.last_index(stream), 10);
        }
    }

    #[test]
    fn unsynced_records_are_lost_and_their_seqs_reused_without_a_gap() {
        let fs = SimFs::new();
        let specs = specs(2);
        let (mut store, _) = open(&fs, &specs).unwrap();
        store.append(0, 0, b"a1").unwrap();
        store.append(1, 0, b"b1").unwrap();
        store.sync().unwrap();
        store.append(0, 0, b"a2 never synced").unwrap();
        drop(store);
        fs.crash(Torn::None);
        let (mut store, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(payloads(&recovered[0]), vec![(1, b"a1".to_vec())]);
        assert_eq!(store.append(0, 0, b"a2").unwrap(), 2);
        store.sync().unwrap();
        drop(store);
        let (_, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(
            payloads(&recovered[0]),
            vec![(1, b"a1".to_vec()), (2, b"a2".to_vec())]
        );
    }

    #[test]
    fn the_log_is_compacted_only_past_records_every_stream_has_snapshotted() {
        let fs = SimFs::new();
        let specs = specs(2);
        let (mut store, _) = open(&fs, &specs).unwrap();
        // Stream 1 writes once, early; stream 0 fills many segments after it.
        store.append(1, 0, b"early").unwrap();
        for i in 0..40u8 {
            store.append(0, 0, &[i; 40]).unwrap();
        }
        store.sync().unwrap();
        let segments = store.wal.segment_count();
        assert!(segments > 5, "{segments}");
        snapshot(&mut store, 0, b"state 0");
        assert_eq!(
            store.wal.first_index(),
            1,
            "stream 1's uncovered record pins the first segment"
        );
        snapshot(&mut store, 1, b"state 1");
        assert!(store.wal.first_index() > 1);
        assert!(
            store.wal.segment_count() <= 2,
            "{}",
            store.wal.segment_count()
        );
        assert_eq!(store.stats(0).wal_bytes, 0);
        // New records after both snapshots come back after a crash, with the snapshots.
        store.append(1, 0, b"late").unwrap();
        store.sync().unwrap();
        drop(store);
        fs.crash(Torn::None);
        let (store, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(&*recovered[0].snapshot.as_ref().unwrap().data, b"state 0");
        assert!(recovered[0].records.is_empty());
        assert_eq!(&*recovered[1].snapshot.as_ref().unwrap().data, b"state 1");
        assert_eq!(payloads(&recovered[1]), vec![(2, b"late".to_vec())]);
        assert_eq!(store.last_index(0), 40);
    }

    fn wipe(fs: &SimFs, dir: &Path) {
        for name in fs.list(dir).unwrap() {
            fs.remove(&dir.join(name)).unwrap();
        }
        fs.sync_dir(dir).unwrap();
    }

    #[test]
    fn a_lost_stream_directory_starts_empty_and_its_old_records_pin_nothing() {
        let fs = SimFs::new();
        let mut specs = specs(2);
        let (mut store, _) = open(&fs, &specs).unwrap();
        for i in 0..20u8 {
            store.append((i % 2) as usize, 0, &[i; 40]).unwrap();
        }
        store.sync().unwrap();
        drop(store);
        wipe(&fs, &specs[1].dir);
        specs[1].new_incarnation = 0x2000;
        let (mut store, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(recovered[0].records.len(), 10);
        assert!(recovered[1].records.is_empty() && recovered[1].snapshot.is_none());
        assert_eq!(store.report().foreign_records, 10);
        assert_eq!(store.append(1, 0, b"new life").unwrap(), 1);
        store.sync().unwrap();
        // Once stream 0 snapshots, the old incarnation's records no longer keep the log.
        snapshot(&mut store, 0, b"s");
        assert_eq!(store.streams[1].uncovered.front().unwrap().1, 21);
        assert!(
            store.wal.first_index() > 1,
            "the lost incarnation's records 1..20 pin nothing"
        );
        drop(store);
        fs.crash(Torn::None);
        let (_, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(payloads(&recovered[1]), vec![(1, b"new life".to_vec())]);
    }

    #[test]
    fn a_stream_whose_records_do_not_continue_its_snapshot_is_refused_and_nothing_changes() {
        let fs = SimFs::new();
        let specs = specs(2);
        let (mut store, _) = open(&fs, &specs).unwrap();
        for i in 0..30u8 {
            store.append(0, 0, &[i; 40]).unwrap();
        }
        store.append(1, 0, b"keep").unwrap();
        snapshot(&mut store, 0, b"state");
        snapshot(&mut store, 1, b"state");
        store.append(0, 0, b"after").unwrap();
        store.sync().unwrap();
        drop(store);
        // Stream 0's snapshot goes missing: its log no longer reaches back to the start.
        let snap = snapshot::path_of(&specs[0].dir, 30);
        let bytes = fs.read_all(&snap).unwrap().to_vec();
        fs.remove(&snap).unwrap();
        let before = fs.total_bytes();
        match open(&fs, &specs) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("where 1 was expected"), "{reason}")
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r.len())),
        }
        assert_eq!(fs.total_bytes(), before);
        // Putting it back is enough.
        let mut file = fs.create(&snap).unwrap();
        file.append(&bytes).unwrap();
        file.sync().unwrap();
        let (_, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(payloads(&recovered[0]), vec![(31, b"after".to_vec())]);
    }

    #[test]
    fn a_stores_own_log_is_taken_over_and_survives_a_second_open() {
        let fs = SimFs::new();
        let specs = specs(2);
        let (mut old, _) =
            Store::open(Arc::new(fs.clone()), &specs[0].dir, StoreOptions::default()).unwrap();
        for i in 0..5u8 {
            old.append(7, &[i]).unwrap();
        }
        old.write_snapshot(5, b"old state").unwrap();
        old.append(7, b"six").unwrap();
        old.sync().unwrap();
        drop(old);
        fs.crash(Torn::None);
        let (mut store, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(store.report().imported, vec![specs[0].dir.clone()]);
        assert_eq!(&*recovered[0].snapshot.as_ref().unwrap().data, b"old state");
        assert_eq!(payloads(&recovered[0]), vec![(6, b"six".to_vec())]);
        assert!(Wal::scan(&fs, &specs[0].dir, WalOptions::default())
            .unwrap()
            .is_fresh());
        assert_eq!(store.append(0, 7, b"seven").unwrap(), 7);
        store.sync().unwrap();
        drop(store);
        fs.crash(Torn::None);
        let (store, recovered) = open(&fs, &specs).unwrap();
        assert!(store.report().imported.is_empty());
        assert_eq!(
            payloads(&recovered[0]),
            vec![(6, b"six".to_vec()), (7, b"seven".to_vec())]
        );
        assert!(recovered[0].records.iter().all(|r| r.kind == 7));
    }

    #[test]
    fn one_writer_serves_every_stream_with_shared_fsyncs_and_every_ack_survives() {
        let fs = SimFs::new();
        let specs = specs(3);
        let (store, _) = open(&fs, &specs).unwrap();
        let group = GroupCommit::start(store, GroupOptions::default());
        let syncs_before = fs.sync_count();
        let threads: Vec<_> = (0..6usize)
            .map(|t| {
                let stream = group.stream(t % 3);
                std::thread::spawn(move || {
                    (0..100u32)
                        .map(|i| {
                            let payload = format!("{t}-{i}").into_bytes();
                            (stream.append_durable(0, payload.clone()).unwrap(), payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let acked: Vec<Vec<(u64, Vec<u8>)>> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let syncs = fs.sync_count() - syncs_before;
        // Segments roll over at 256 bytes here, each costing a sync of its own.
        assert!(syncs < 600, "streams share fsyncs: {syncs}");
        drop(group);
        fs.crash(Torn::None);
        let (_, recovered) = open(&fs, &specs).unwrap();
        for (t, acks) in acked.iter().enumerate() {
            let records = &recovered[t % 3].records;
            assert_eq!(records.len(), 200);
            for (index, payload) in acks {
                assert_eq!(&records[*index as usize - 1].payload, payload);
            }
        }
    }

    /// Waits for `n` completions sent on `rx`, each an index.
    fn completed(rx: &std::sync::mpsc::Receiver<Result<u64>>, n: usize) -> Vec<u64> {
        (0..n).map(|_| rx.recv().unwrap().unwrap()).collect()
    }

    fn completion(tx: &std::sync::mpsc::Sender<Result<u64>>) -> crate::group::Completion {
        let tx = tx.clone();
        Box::new(move |result| drop(tx.send(result)))
    }

    #[test]
    fn a_batch_of_every_streams_records_takes_one_fsync_and_keeps_its_order() {
        use crate::group::Batch;
        let fs = SimFs::new();
        let specs = specs(3);
        let (store, _) = SharedStore::open(
            Arc::new(fs.clone()),
            Path::new(LOG),
            &specs,
            StoreOptions::default(),
        )
        .unwrap();
        let group = GroupCommit::start(store, GroupOptions::default());
        let streams: Vec<_> = (0..3).map(|i| group.stream(i)).collect();
        let (tx, rx) = std::sync::mpsc::channel();

        let mut batch = Batch::new();
        assert!(batch.is_empty());
        for (i, stream) in streams.iter().enumerate() {
            let records = vec![
                (0, format!("{i}a").into_bytes()),
                (0, format!("{i}b").into_bytes()),
            ];
            stream.append_to(&mut batch, records, completion(&tx));
        }
        streams[2].send_batch(batch).unwrap();
        assert_eq!(completed(&rx, 3), vec![2, 2, 2]);
        let stats = group.group_stats();
        assert_eq!(
            (stats.batches, stats.appends),
            (1, 3),
            "one fsync for three streams"
        );

        // A snapshot inside a batch covers what came before it, and not what follows.
        let mut batch = Batch::new();
        streams[1].append_to(&mut batch, vec![(0, b"1c".to_vec())], completion(&tx));
        streams[1].snapshot_to(
            &mut batch,
            Arc::new(b"state after 1c".to_vec()),
            completion(&tx),
        );
        streams[1].append_to(&mut batch, vec![(0, b"1d".to_vec())], completion(&tx));
        streams[0].send_batch(batch).unwrap();
        let mut indexes = completed(&rx, 3);
        indexes.sort_unstable();
        assert_eq!(indexes, vec![3, 3, 4]);

        drop(streams);
        drop(group);
        fs.crash(Torn::None);
        let (_, recovered) = open(&fs, &specs).unwrap();
        assert_eq!(
            payloads(&recovered[0]),
            vec![(1, b"0a".to_vec()), (2, b"0b".to_vec())]
        );
        let snapshot = recovered[1].snapshot.as_ref().expect("stream 1's snapshot");
        assert_eq!(
            (snapshot.index, &*snapshot.data),
            (3, &b"state after 1c"[..])
        );
        assert_eq!(payloads(&recovered[1]), vec![(4, b"1d".to_vec())]);
        assert_eq!(payloads(&recovered[2]).len(), 2);
    }

    #[test]
    #[should_panic(expected = "one writer's streams")]
    fn a_batch_cannot_mix_two_writers_streams() {
        let (fs_a, fs_b) = (SimFs::new(), SimFs::new());
        let a = GroupCommit::start(open(&fs_a, &specs(1)).unwrap().0, GroupOptions::default());
        let b = GroupCommit::start(open(&fs_b, &specs(1)).unwrap().0, GroupOptions::default());
        let mut batch = crate::group::Batch::new();
        a.stream(0)
            .append_to(&mut batch, vec![(0, b"x".to_vec())], Box::new(|_| {}));
        b.stream(0)
            .append_to(&mut batch, vec![(0, b"y".to_vec())], Box::new(|_| {}));
    }

    /// Random appends to three streams, syncs, snapshots, crashes that keep random
    /// prefixes of unsynced bytes, and lost stream directories, against a model: after
    /// every reopen each stream holds exactly a prefix of what was appended to it, at
    /// least everything synced, with its newest snapshot's data.
    #[test]
    fn random_histories_recover_a_synced_prefix_of_every_stream() {
        for seed in 0..60u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let fs = SimFs::new();
            let mut specs = specs(3);
            // Per stream: every payload appended (seq = position + 1), and how many are
            // synced.
            let mut appended: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
            let mut synced = [0usize; 3];
            let (mut store, _) = open(&fs, &specs).unwrap();
            for step in 0..300u64 {
                match next(20) {
                    0..=11 => {
                        let stream = next(3) as usize;
                        let payload = format!("{seed}/{step}").repeat(1 + next(8) as usize);
                        let seq = store.append(stream, 0, payload.as_bytes()).unwrap();
                        appended[stream].push(payload.into_bytes());
                        assert_eq!(seq, appended[stream].len() as u64);
                    }
                    12..=14 => {
                        store.sync().unwrap();
                        synced = [0, 1, 2].map(|s| appended[s].len());
                    }
                    15..=16 => {
                        // The snapshot's data names the index it covers.
                        let stream = next(3) as usize;
                        let covers = store.last_index(stream);
                        snapshot(&mut store, stream, &covers.to_le_bytes());
                        synced = [0, 1, 2].map(|s| appended[s].len());
                    }
                    17..=18 => {
                        drop(store);
                        fs.crash(Torn::Prefix(next(1 << 20)));
                        let (reopened, recovered) = open(&fs, &specs).unwrap();
                        store = reopened;
                        for (stream, r) in recovered.iter().enumerate() {
                            if let Some(snapshot) = &r.snapshot {
                                assert_eq!(&*snapshot.data, &snapshot.index.to_le_bytes()[..]);
                            }
                            let from = r.snapshot.as_ref().map_or(0, |s| s.index) as usize;
                            let held = from + r.records.len();
                            assert!(
                                held >= synced[stream] && held <= appended[stream].len(),
                                "seed {seed} step {step} stream {stream}: holds {held}, \
                                 synced {}, appended {}",
                                synced[stream],
                                appended[stream].len()
                            );
                            for record in &r.records {
                                assert_eq!(
                                    record.payload,
                                    appended[stream][record.index as usize - 1],
                                    "seed {seed} step {step} stream {stream}"
                                );
                            }
                            appended[stream].truncate(held);
                            synced[stream] = held;
                        }
                    }
                    _ => {
                        // Stream 2's directory is lost while the node is down.
                        drop(store);
                        fs.crash(Torn::None);
                        wipe(&fs, &specs[2].dir);
                        specs[2].new_incarnation += 1;
                        let (reopened, recovered) = open(&fs, &specs).unwrap();
                        store = reopened;
                        assert!(recovered[2].records.is_empty() && recovered[2].snapshot.is_none());
                        appended[2].clear();
                        for stream in 0..2 {
                            synced[stream] = synced[stream].min(appended[stream].len());
                            let r = &recovered[stream];
                            let held = r.snapshot.as_ref().map_or(0, |s| s.index) as usize
                                + r.records.len();
                            assert_eq!(held, synced[stream], "seed {seed} step {step}");
                            appended[stream].truncate(held);
                        }
                        synced[2] = 0;
                    }
                }
            }
        }
    }
}
