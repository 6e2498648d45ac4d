//! The store as a job's input and output (`--input kv://PREFIX`, `--output kv://PREFIX`):
//! the second backend of the seam in [`crate::io`].
//!
//! # Input
//! Every key under the prefix is one document: its name is the key, its contents the
//! value. [`StoreInput::plan`] walks each shard's keys under the prefix (keys and value
//! lengths only, by scan pages) and cuts the walk into splits of about equal value bytes:
//! a split is a list of key ranges `(after, last]`, each inside one shard, and the ranges
//! of all splits cover every shard whole (a shard's last range is open-ended), so each key
//! belongs to exactly one split. [`StoreInput::read`] reads its ranges by scan pages with
//! values. Each page is a linearizable read of the shard's owner (see
//! `kv_engine::kv::scan`); as with files, the input should not change while the job runs
//! (a key added or removed meanwhile may or may not be read, and two runs of a map task
//! would then differ).
//!
//! # Output
//! Reduce task `r` commits each of its pairs as one key, `PREFIX<key>`, with a PUT of the
//! final value (batches of puts, each put at most once). Why a task run twice — re-issued,
//! a backup copy, a stalled worker waking late, even after the job is done — never
//! duplicates or half-writes output:
//! - the pairs are a function of the task's input (apps are deterministic, map outputs
//!   are whole files), so every run of task `r` writes the same keys with the same values;
//! - a PUT replaces the whole value, so writing a key again changes nothing, and no run
//!   appends to what another wrote;
//! - partitions are disjoint (`ihash(key) % reduces`), so no two tasks write one key;
//! - a run that dies midway leaves some of its keys written, each whole; the task is done
//!   only when a run has committed every pair and reported it (the coordinator counts the
//!   first such report and ignores later ones), so when the job is done every output key
//!   holds its final value.
//!
//! What this does not give: a reader *during* the job may see some of a task's keys before
//! others (each key is atomic, the task's set is not); and keys already under the prefix
//! that this job does not produce are left as they are (use a fresh prefix).
//!
//! # Threads
//! The backend is called from blocking code (a worker's task thread, the coordinator's
//! planning and finishing). Its client runs on a runtime of its own, on its own thread;
//! a call hands it the work and waits for the answer, so no caller ever blocks inside an
//! async runtime's thread.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_client::any::{AnyClient, Shared};
use kv_client::config::ClusterConfig;
use kv_client::native::ClientOptions;
use kv_engine::glob;
use kv_engine::kv::{Op, Reply, Scan, ScanEntry, ShardId, SCAN_COUNT_MAX};
use kv_replication::kvgroup::BatchBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::io::{Input, Output, Split, SPLIT_BYTES_DEFAULT};
use crate::{Error, Result};

/// How long one call to the store (a page, a batch of puts) may take.
pub const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// A key range of one shard: the keys after `after` (from the first if `None`) up to
/// `last` included (to the shard's end if `None`), under the job's prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub shard: ShardId,
    pub after: Option<Bytes>,
    pub last: Option<Bytes>,
}

/// A client of the cluster on a runtime of its own (see the module docs).
struct StoreClient {
    runtime: Option<tokio::runtime::Runtime>,
    client: Arc<Mutex<AnyClient>>,
}

impl StoreClient {
    fn open(cluster: &Path) -> Result<StoreClient> {
        let config = ClusterConfig::load(cluster).map_err(|e| Error::Store(e.to_string()))?;
        let shared = Shared::new(&config).map_err(|e| Error::Store(e.to_string()))?;
        let client = AnyClient::new(&config, &shared, 0, ClientOptions::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kv-store-client")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the store client's runtime", e))?;
        Ok(StoreClient {
            runtime: Some(runtime),
            client: Arc::new(Mutex::new(client)),
        })
    }

    /// Runs `work` with the client on the client's runtime; waits for its answer.
    fn call<T, F>(&self, work: impl FnOnce(Arc<Mutex<AnyClient>>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let future = work(self.client.clone());
        self.runtime
            .as_ref()
            .expect("a runtime until dropped")
            .spawn(async move {
                let _ = tx.send(future.await);
            });
        rx.recv()
            .map_err(|_| Error::Store("the store client stopped".into()))?
    }

    /// Reads the keys of `range` under `prefix` page by page, calling `visit` with each
    /// page's entries (with values if `values`).
    fn walk(
        &self,
        prefix: &[u8],
        range: &KeyRange,
        values: bool,
        visit: &mut dyn FnMut(Vec<ScanEntry>),
    ) -> Result<()> {
        let mut pattern = glob::escape(prefix);
        pattern.push(b'*');
        let mut after = range.after.clone();
        loop {
            let scan = Scan {
                after: after.take(),
                last: range.last.clone(),
                pattern: Some(Bytes::from(pattern.clone())),
                values,
                ..Scan::shard(range.shard, SCAN_COUNT_MAX)
            };
            let page = self.call(|client| async move {
                let mut client = client.lock().await;
                client.scan(scan, CALL_DEADLINE).await.map_err(Error::Store)
            })?;
            visit(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Every shard of the cluster.
    fn shards(&self) -> Result<Vec<ShardId>> {
        self.call(|client| async move { Ok(client.lock().await.sharding().all().collect()) })
    }
}

impl Drop for StoreClient {
    fn drop(&mut self) {
        // Without waiting: a drop may happen inside another runtime's async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The keys under a prefix, as a job's input (see the module docs).
pub struct StoreInput {
    client: StoreClient,
    prefix: Bytes,
}

impl StoreInput {
    pub fn open(cluster: &Path, prefix: &str) -> Result<StoreInput> {
        Ok(StoreInput {
            client: StoreClient::open(cluster)?,
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
        })
    }
}

/// Cuts shards' keys (each with its value's length, in key order) into about `maps` splits
/// of equal bytes (a split per [`SPLIT_BYTES_DEFAULT`] when `None`), covering every shard.
pub fn cut(shards: &[(ShardId, Vec<(Bytes, u64)>)], maps: Option<u32>) -> Vec<(Split, u64)> {
    let total: u64 = shards.iter().flat_map(|(_, keys)| keys).map(|k| k.1).sum();
    let maps = maps
        .map(u64::from)
        .unwrap_or_else(|| total.div_ceil(SPLIT_BYTES_DEFAULT))
        .max(1);
    let per_split = total.div_ceil(maps).max(1);
    let mut splits = Vec::new();
    let (mut ranges, mut bytes) = (Vec::new(), 0u64);
    for (shard, keys) in shards {
        let mut after: Option<Bytes> = None;
        for (key, value_bytes) in keys {
            bytes += value_bytes;
            if bytes >= per_split {
                ranges.push(KeyRange {
                    shard: *shard,
                    after: after.replace(key.clone()),
                    last: Some(key.clone()),
                });
                splits.push((Split::Store(std::mem::take(&mut ranges)), bytes));
                bytes = 0;
            }
        }
        // The shard's open end: keys after the last cut (none, or ones written later).
        ranges.push(KeyRange {
            shard: *shard,
            after,
            last: None,
        });
    }
    match splits.last_mut() {
        // Open ends after a cut at the very last key carry no bytes: no split of their own.
        Some((Split::Store(last), _)) if bytes == 0 => last.extend(ranges),
        _ => splits.push((Split::Store(ranges), bytes)),
    }
    splits
}

impl Input for StoreInput {
    fn plan(&self, maps: Option<u32>) -> Result<Vec<(Split, u64)>> {
        let mut shards = Vec::new();
        for shard in self.client.shards()? {
            let mut keys = Vec::new();
            let whole = KeyRange {
                shard,
                after: None,
                last: None,
            };
            self.client
                .walk(&self.prefix, &whole, false, &mut |entries| {
                    keys.extend(entries.into_iter().map(|e| (e.key, e.value_bytes)));
                })?;
            shards.push((shard, keys));
        }
        Ok(cut(&shards, maps))
    }

    fn read(&self, split: &Split, visit: &mut dyn FnMut(&str, &str)) -> Result<u64> {
        let Split::Store(ranges) = split else {
            return Err(Error::Protocol(
                "a split of files for input from the store".into(),
            ));
        };
        let mut bytes = 0;
        for range in ranges {
            self.client
                .walk(&self.prefix, range, true, &mut |entries| {
                    for entry in entries {
                        let value = entry.value.unwrap_or_default();
                        bytes += value.len() as u64;
                        visit(
                            &String::from_utf8_lossy(&entry.key),
                            &String::from_utf8_lossy(&value),
                        );
                    }
                })?;
        }
        Ok(bytes)
    }
}

/// Output into the store: each pair as the key `PREFIX<key>` (see the module docs).
pub struct StoreOutput {
    client: StoreClient,
    prefix: String,
}

impl StoreOutput {
    pub fn open(cluster: &Path, prefix: &str) -> Result<StoreOutput> {
        Ok(StoreOutput {
            client: StoreClient::open(cluster)?,
            prefix: prefix.to_owned(),
        })
    }
}

impl Output for StoreOutput {
    fn commit(&self, _reduce: u32, pairs: &[(String, String)]) -> Result<()> {
        let mut builder = BatchBuilder::default();
        let mut batches = Vec::new();
        for (key, value) in pairs {
            let op = Op::Put {
                key: Bytes::from(format!("{}{key}", self.prefix)),
                value: Bytes::copy_from_slice(value.as_bytes()),
            };
            if !builder.has_room_for(&op) {
                batches.extend(builder.take());
            }
            builder.push(op);
        }
        batches.extend(builder.take());
        for batch in batches {
            self.client.call(|client| async move {
                let replies = client
                    .lock()
                    .await
                    .execute_batch(batch, CALL_DEADLINE)
                    .await
                    .map_err(Error::Store)?;
                match replies.into_iter().find(|reply| *reply != Reply::Ok) {
                    None => Ok(()),
                    Some(other) => Err(Error::Store(format!("a put was answered {other:?}"))),
                }
            })?;
        }
        Ok(())
    }

    fn finish(&self, _reduces: u32) -> Result<()> {
        Ok(())
    }
}

/// The cluster file as workers will read it: absolute, so a worker started elsewhere finds
/// the same file.
pub fn absolute_cluster(cluster: &Path) -> Result<PathBuf> {
    std::path::absolute(cluster).map_err(|e| Error::io(format!("{}", cluster.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, u64)]) -> Vec<(Bytes, u64)> {
        list.iter()
            .map(|(k, n)| (Bytes::copy_from_slice(k.as_bytes()), *n))
            .collect()
    }

    fn ranges(split: &Split) -> &[KeyRange] {
        match split {
            Split::Store(ranges) => ranges,
            other => panic!("{other:?}"),
        }
    }

    /// Which split each key falls in, by the ranges' bounds.
    fn owner(splits: &[(Split, u64)], shard: ShardId, key: &[u8]) -> Vec<usize> {
        splits
            .iter()
            .enumerate()
            .filter(|(_, (split, _))| {
                ranges(split).iter().any(|r| {
                    r.shard == shard
                        && r.after.as_ref().is_none_or(|a| key > &a[..])
                        && r.last.as_ref().is_none_or(|l| key <= &l[..])
                })
            })
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn splits_cover_every_key_of_every_shard_once_at_about_equal_bytes() {
        let shards = vec![
            (ShardId(0), keys(&[("a", 10), ("b", 10), ("c", 10)])),
            (ShardId(1), keys(&[])),
            (ShardId(2), keys(&[("d", 30), ("e", 1), ("f", 9)])),
        ];
        for maps in 1..=8 {
            let splits = cut(&shards, Some(maps));
            assert!(splits.len() <= maps as usize, "{maps} maps: {splits:?}");
            let total: u64 = splits.iter().map(|(_, b)| b).sum();
            assert_eq!(total, 70, "{maps} maps");
            for (shard, list) in &shards {
                for probe in ["", "a", "a0", "b", "c", "cz", "d", "e", "f", "zz"] {
                    let owners = owner(&splits, *shard, probe.as_bytes());
                    assert_eq!(
                        owners.len(),
                        1,
                        "{maps} maps: {probe} of {shard}: {splits:?}"
                    );
                }
                assert!(list
                    .iter()
                    .all(|(k, _)| owner(&splits, *shard, k).len() == 1));
            }
        }
        let two = cut(&shards, Some(2));
        assert_eq!(two.iter().map(|(_, b)| *b).collect::<Vec<_>>(), [60, 10]);
        let none = cut(&[(ShardId(0), keys(&[]))], None);
        assert_eq!(none.len(), 1, "an empty input is one empty split");
    }
}
