//! The stamp that ties a data directory to one node of one cluster, and the data format
//! it holds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, Result};

/// Name of the stamp file inside a node's data directory.
pub const STAMP_FILE: &str = "kv-node.stamp";

/// The stamp's temporary name while it is written (then renamed to [`STAMP_FILE`]).
pub(super) const STAMP_TEMP_FILE: &str = "kv-node.stamp.tmp";

#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    cluster_id: u64,
    node: u32,
    /// The data directory's format ([`DATA_FORMAT`]); stamps written before formats were
    /// versioned have none.
    #[serde(default)]
    format: u32,
    /// On a sharded node's own directory, the cluster's shard count, recorded when the
    /// node first starts (stamps written before it was recorded have none): a cluster file
    /// whose `[master] shards` says otherwise is refused, since every key's shard, and so
    /// where its data is, depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shards: Option<u32>,
}

/// The format of everything a data directory holds (WAL framing, snapshot files, the
/// replica's records and snapshots), as a whole: a node refuses a directory stamped with
/// another format rather than misread it. Raised whenever any of them changes in a way
/// this build cannot read back (each also carries its own tag: record kinds, magic numbers,
/// enum variants — see `kv_replication::formats`).
/// Format 3: kv requests are batches of ops and replies one reply per op (each with its own
/// format byte, see `kv_replication::kvgroup::Batch`).
pub const DATA_FORMAT: u32 = 3;

/// Stamps a data directory as belonging to `node` of `cluster_id` (durably: temp file,
/// fsync, rename, directory fsync).
pub fn write_stamp(dir: &Path, cluster_id: u64, node: u32) -> Result<()> {
    let stamp = Stamp {
        cluster_id,
        node,
        format: DATA_FORMAT,
        shards: None,
    };
    save(dir, &stamp)
}

/// Writes `stamp` into `dir` durably (temp file, fsync, rename, directory fsync).
fn save(dir: &Path, stamp: &Stamp) -> Result<()> {
    let io = |path: PathBuf| move |source| ConfigError::Io { path, source };
    let path = dir.join(STAMP_FILE);
    let temp = dir.join(STAMP_TEMP_FILE);
    let text = toml::to_string(stamp).expect("a stamp always encodes");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp).map_err(io(temp.clone()))?;
        file.write_all(text.as_bytes()).map_err(io(temp.clone()))?;
        file.sync_all().map_err(io(temp.clone()))?;
    }
    std::fs::rename(&temp, &path).map_err(io(path.clone()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.to_path_buf()))
}

/// Whether `dir` carries this node's stamp. `Ok(false)` means no stamp: the disk was lost
/// (or never initialised). A stamp for another cluster or node is an error.
pub fn check_stamp(dir: &Path, cluster_id: u64, node: u32) -> Result<bool> {
    let path = dir.join(STAMP_FILE);
    let Some(stamp) = read(&path)? else {
        return Ok(false);
    };
    if stamp.cluster_id != cluster_id || stamp.node != node {
        return Err(ConfigError::WrongStamp {
            path,
            found_cluster: stamp.cluster_id,
            found_node: stamp.node,
            cluster: cluster_id,
            node,
        });
    }
    if stamp.format != DATA_FORMAT {
        return Err(ConfigError::WrongFormat {
            path,
            found: stamp.format,
        });
    }
    Ok(true)
}

/// The stamp at `path`, if there is one.
fn read(path: &Path) -> Result<Option<Stamp>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Checks a sharded node's stamped directory `dir` against the cluster file's shard count:
/// a stamp that recorded another count is refused ([`ConfigError::WrongShards`]); one that
/// recorded none (written by `kv init`, or before counts were recorded) records `shards`.
/// Call after [`check_stamp`] accepted the directory.
pub fn check_shards(dir: &Path, shards: u32) -> Result<()> {
    let path = dir.join(STAMP_FILE);
    let Some(mut stamp) = read(&path)? else {
        return Ok(());
    };
    match stamp.shards {
        Some(found) if found == shards => Ok(()),
        Some(found) => Err(ConfigError::WrongShards {
            path,
            found,
            configured: shards,
        }),
        None => {
            stamp.shards = Some(shards);
            save(dir, &stamp)
        }
    }
}
