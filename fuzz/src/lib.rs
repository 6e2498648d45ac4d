//! Fuzz targets: one function per decoder of bytes kv did not produce itself in this run —
//! bytes from the network (RESP, native frames), from disk (WAL segments, snapshot files,
//! the shared log, the cluster file) and decided values inside them (records, batches,
//! images). Each takes arbitrary bytes, runs the real decoder, and panics only if the
//! decoder does something it never may: panic, or decode to something that does not
//! survive a round trip. An error for bad input is the expected outcome.
//!
//! The binaries in `src/bin` hand these functions to AFL++ (`scripts/fuzz.sh`); the test
//! in `tests/corpus.rs` replays every seed and every regression input through them, so a
//! crash once found stays fixed without the fuzzer installed.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use kv_engine::fs::{Fs, SimFs};
use kv_engine::shared::{SharedStore, StreamSpec};
use kv_engine::store::StoreOptions;
use kv_engine::wal::{segment_name, Wal, WalOptions};
use kv_server::config::ClusterConfig;
use kv_server::resp::{Frame, FrameError, Limits};
use serde::{de::DeserializeOwned, Serialize};

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("resp", resp),
    ("wire", wire),
    ("wal", wal),
    ("snapshot", snapshot),
    ("cluster_file", cluster_file),
    ("records", records),
    ("shared_log", shared_log),
];

/// RESP as the server reads it: frames one after another (a pipeline) under the server's
/// limits. `check` and `parse` must agree on every frame, and a parsed frame's encoding
/// must parse back to a frame with the same encoding.
pub fn resp(data: &[u8]) {
    let limits = kv_server::redis::LIMITS;
    let mut start = 0usize;
    while start < data.len() {
        let mut checked = Cursor::new(data);
        checked.set_position(start as u64);
        let check = Frame::check_within(&mut checked, &limits);
        let mut parsed = Cursor::new(data);
        parsed.set_position(start as u64);
        let parse = Frame::parse_within(&mut parsed, &limits);
        let frame = match (check, parse) {
            (Ok(()), Ok(frame)) => {
                assert_eq!(
                    checked.position(),
                    parsed.position(),
                    "check and parse disagree on where the frame ends"
                );
                frame
            }
            (Err(FrameError::Incomplete), Err(_)) | (Err(FrameError::Invalid(_)), Err(_)) => return,
            (check, parse) => panic!("check gave {check:?} but parse gave {parse:?}"),
        };
        let bytes = frame.to_bytes();
        let again = Frame::parse_within(&mut Cursor::new(&bytes[..]), &Limits::DEFAULT)
            .unwrap_or_else(|e| {
                panic!("{frame:?} encodes as {bytes:?}, which does not parse: {e}")
            });
        assert_eq!(
            again.to_bytes(),
            bytes,
            "{frame:?} does not survive a round trip"
        );
        assert!(parsed.position() as usize > start, "a frame of no bytes");
        start = parsed.position() as usize;
    }
}

/// A native-protocol frame body, as `transport.rs` decodes it: the first byte picks the
/// service (an unsharded group's replicas, or a sharded cluster's hosts), the rest is the
/// body. A decoded frame must encode to bytes that decode and encode to the same bytes.
pub fn wire(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 2 {
        0 => round_trip::<kv_server::wire::Frame<kv_replication::kvgroup::Message>>(body),
        _ => round_trip::<kv_client::sharded::ShardedFrame>(body),
    }
}

fn round_trip<F: Serialize + DeserializeOwned + std::fmt::Debug>(body: &[u8]) {
    let Ok(frame) = postcard::from_bytes::<F>(body) else {
        return;
    };
    let bytes = postcard::to_stdvec(&frame).expect("a decoded frame encodes");
    let again: F = postcard::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{frame:?} encodes to bytes that do not decode: {e}"));
    assert_eq!(
        postcard::to_stdvec(&again).expect("a decoded frame encodes"),
        bytes,
        "{frame:?} does not survive a round trip"
    );
}

/// A file system holding `bytes` as the file `dir/name`, durably.
fn disk_with(dir: &Path, name: &str, bytes: &[u8]) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(dir).expect("create directory");
    let mut file = fs.create(&dir.join(name)).expect("create file");
    file.append(bytes).expect("append");
    file.sync().expect("sync");
    fs.sync_dir(dir).expect("sync directory");
    fs
}

/// A WAL directory whose only segment holds `data`, opened as a node opens its log. If it
/// opens, the log must take a new record and reopen to exactly what it held plus that one.
pub fn wal(data: &[u8]) {
    let dir = Path::new("/wal");
    let fs = disk_with(dir, &segment_name(1), data);
    let options = WalOptions::default();
    let Ok((mut log, records)) = Wal::open(Arc::new(fs.clone()), dir, options) else {
        return;
    };
    let index = log.append(7, b"after recovery").expect("append");
    assert_eq!(log.sync().expect("sync"), index);
    drop(log);
    let (_, reopened) = Wal::open(Arc::new(fs), dir, options).expect("reopen a log it opened");
    assert_eq!(&reopened[..records.len()], &records[..], "records changed");
    let last = reopened.last().expect("the new record");
    assert_eq!(
        (reopened.len(), last.index, last.kind, &last.payload[..]),
        (records.len() + 1, index, 7, &b"after recovery"[..])
    );
}

/// A snapshot file holding `data`, read as recovery reads it. If it reads, writing its
/// index and payload again must read back the same.
pub fn snapshot(data: &[u8]) {
    let dir = Path::new("/snapshots");
    let path = kv_engine::snapshot::path_of(dir, 3);
    let name = path.file_name().expect("a file name").to_string_lossy();
    let fs = disk_with(dir, &name, data);
    let Ok(read) = kv_engine::snapshot::read(&fs, &path) else {
        return;
    };
    let again = Path::new("/again");
    fs.create_dir_all(again).expect("create directory");
    kv_engine::snapshot::write(&fs, again, read.index, &read.data).expect("write");
    let reread = kv_engine::snapshot::read(&fs, &kv_engine::snapshot::path_of(again, read.index))
        .expect("read a snapshot just written");
    assert_eq!(reread.index, read.index);
    assert_eq!(&*reread.data, &*read.data);
}

/// A cluster file's text, parsed and validated as `kv` loads it. A valid file must save
/// (as TOML) to text that parses to the same configuration.
pub fn cluster_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/cluster/cluster.toml");
    let Ok(config) = ClusterConfig::parse(text, path) else {
        return;
    };
    let saved = toml::to_string_pretty(&config).expect("a valid configuration serialises");
    let again = ClusterConfig::parse(&saved, path)
        .unwrap_or_else(|e| panic!("{config:?} saves as text that does not load: {e}\n{saved}"));
    assert_eq!(again, config, "the configuration does not survive saving");
}

/// The payload formats inside records, decided values and snapshots (the golden formats
/// of `kv_replication::formats` other than the engine's files, which have their own
/// targets): the first byte picks the format, the rest is decoded by
/// [`kv_replication::formats::check`].
pub fn records(data: &[u8]) {
    const FORMATS: &[&str] = &[
        "paxos-records",
        "replica-record",
        "batch",
        "image",
        "snapshot-payload",
        "shardmaster-batch",
        "shardmaster-image",
        "viewservice-record",
    ];
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let _ = kv_replication::formats::check(FORMATS[which as usize % FORMATS.len()], bytes);
}

/// The incarnation [`shared_log`]'s stream directory names.
pub const SHARED_INCARNATION: u64 = 1;

/// A shared log whose only segment holds `data`, opened with one stream whose directory
/// names incarnation [`SHARED_INCARNATION`] (and holds no snapshot).
pub fn shared_log(data: &[u8]) {
    let log = Path::new("/log");
    let stream = Path::new("/stream");
    let fs = disk_with(log, &segment_name(1), data);
    fs.create_dir_all(stream).expect("create directory");
    let marker = stream.join(format!("log-{SHARED_INCARNATION:016x}.stream"));
    fs.create(&marker).expect("create").sync().expect("sync");
    fs.sync_dir(stream).expect("sync directory");
    let specs = [StreamSpec {
        dir: stream.to_path_buf(),
        new_incarnation: 2,
    }];
    let _ = SharedStore::open(Arc::new(fs), log, &specs, StoreOptions::default());
}
