//! The cluster file (`cluster.toml`) and data-directory stamps.
//!
//! A cluster file lists every node: its id, the address it listens on for peers and
//! native clients, its RESP (Redis protocol) address, its admin (HTTP) address, and its data
//! directory (relative paths are relative to the cluster file's directory):
//!
//! ```toml
//! cluster_id = 7302569204810352129
//!
//! [[node]]
//! id = 0
//! peer = "127.0.0.1:7000"
//! resp = "127.0.0.1:6380"
//! admin = "127.0.0.1:9000"
//! dir = "node-0"
//! ```
//!
//! A *sharded* cluster's file also names the shard master's nodes and the number of shards,
//! each KV group with the nodes that hold its replicas, and whether RESP speaks the Redis
//! Cluster protocol. Every node entry above stays as it is; a node hosts a replica of every
//! group that names it (see `kv_server::sharded`):
//!
//! ```toml
//! cluster_id = 7302569204810352129
//! redis_cluster = false
//!
//! [master]
//! shards = 64
//! nodes = [0, 1, 2]
//!
//! [[group]]
//! gid = 100
//! nodes = [0, 1, 2]
//! ```
//!
//! RESP clients may have to authenticate (`AUTH`), as with Redis's `requirepass`; with no
//! password, protected mode (on unless `protected_mode = false`) refuses RESP clients that
//! are not on loopback (see `kv_server::redis::auth`). A file with a password is written
//! readable by its owner only:
//!
//! ```toml
//! requirepass = "a long random password"
//! protected_mode = true
//! ```
//!
//! A *primary/backup* cluster's file names its mode and the node that runs the view
//! service; every other node is a primary/backup server (see `kv_server::pb`):
//!
//! ```toml
//! cluster_id = 7302569204810352129
//! mode = "primary-backup"
//! view_service = 0
//! ```
//!
//! Groups are only ever appended: each replica's *endpoint* id is its position (the shard
//! master's replicas first, then each group's in file order), so reordering or removing a
//! `[[group]]` would give existing data directories to other replicas, and is refused
//! when a node finds another group's stamp in a directory.
//!
//! `kv init` writes the file, the cluster secret beside it (`cluster.secret`, mode 0600;
//! every node and native client needs it, see [`crate::auth`]), and *stamps* each data
//! directory with a file naming the cluster and the node. A node that finds its stamp
//! starts normally (a fresh stamped directory is a first start). A node whose directory
//! has no stamp has lost its disk: it starts in the lost-disk rejoin mode, rebuilding from
//! a majority of intact peers before it votes, and stamps the directory only once that is
//! done.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kv_replication::cluster::Layout;
use kv_replication::shardmaster::GroupId;
use kv_replication::types::NodeId;
use serde::{Deserialize, Serialize};

use crate::auth::{read_secret, ClusterKey, SECRET_FILE};

mod read_lease;
pub use read_lease::{ReadLease, CLOCK_DRIFT_PPM_DEFAULT, CLOCK_DRIFT_PPM_MAX, READ_LEASE_MS_MAX};
mod layout;
mod stamp;
pub use stamp::{check_shards, check_stamp, write_stamp, DATA_FORMAT, STAMP_FILE};

/// Largest cluster id: TOML integers are signed 64-bit.
pub const CLUSTER_ID_MAX: u64 = i64::MAX as u64;

/// An inclusive range of ids or counts as people read it: `0–63`, or `5` when it holds
/// one. (Rust's `0..64` reads as inclusive to most people, and is not.)
pub fn span(first: impl Into<u64>, last: impl Into<u64>) -> String {
    let (first, last) = (first.into(), last.into());
    if first == last {
        first.to_string()
    } else {
        format!("{first}–{last}")
    }
}

/// A count and its noun as people read it: `1 node`, `3 nodes` (`noun` is the singular;
/// the plural adds an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A fresh random cluster id (at most [`CLUSTER_ID_MAX`]).
pub fn random_cluster_id() -> u64 {
    crate::native::random_client_id().0 & CLUSTER_ID_MAX
}

/// What a replica of a sharded cluster replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The shard master.
    Master,
    /// The KV group with this id.
    Group(u64),
}

/// One replica of a sharded cluster (see [`ClusterConfig::endpoints`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its id: its node id in the replication library's messages.
    pub id: u32,
    /// The node (process) that runs it.
    pub node: u32,
    /// What it replicates.
    pub role: Role,
    /// Its member index in its group.
    pub member: usize,
}

/// The id `kv init` gives its first group; the next get the ids after it.
pub const FIRST_GID: u64 = 100;

/// Name of the cluster file `kv init` writes.
pub const CLUSTER_FILE: &str = "cluster.toml";

/// Errors reading or writing cluster files and stamps.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cluster file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The cluster file is well-formed but makes no sense.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data directory was written in a format this build does not read.
    #[error("{path}: the data directory is in format {found}, this build reads format {DATA_FORMAT} (format 0 or 1: written by an earlier version of kv, before formats were versioned; 2: before requests were batches of ops); start this node on an empty directory and it rebuilds from its peers")]
    WrongFormat {
        /// The stamp file.
        path: PathBuf,
        /// The format it names.
        found: u32,
    },
    /// A sharded node's data was written for another shard count than the cluster file's.
    #[error("{path}: this node's data was written with {found} shards, but the cluster file says [master] shards = {configured}; the shard count is fixed for the cluster's life (every key's shard, and so where its data is, depends on it): put shards = {found} back")]
    WrongShards {
        /// The stamp file.
        path: PathBuf,
        /// The count the stamp recorded.
        found: u32,
        /// The count the cluster file gives.
        configured: u32,
    },
    /// The stamp in a data directory belongs to another cluster or node.
    #[error("{path}: stamp says cluster {found_cluster} node {found_node}, expected cluster {cluster} node {node}; refusing to use another node's data")]
    WrongStamp {
        /// The stamp file.
        path: PathBuf,
        /// The cluster it names.
        found_cluster: u64,
        /// The node it names.
        found_node: u32,
        /// The expected cluster.
        cluster: u64,
        /// The expected node.
        node: u32,
    },
}

/// Result alias for configuration.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id: `0..n`, dense.
    pub id: u32,
    /// Address for peers and native clients.
    pub peer: SocketAddr,
    /// Address for Redis-protocol clients.
    pub resp: SocketAddr,
    /// Address for HTTP `/metrics`, `/livez`, `/readyz`.
    pub admin: SocketAddr,
    /// Data directory; relative to the cluster file's directory.
    pub dir: PathBuf,
}

/// The shard master of a sharded cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Number of shards (`1..=16384`); fixed for the cluster's life.
    pub shards: u32,
    /// The nodes that hold its replicas, in member order.
    pub nodes: Vec<u32>,
    /// The groups the shard master starts with (joined in this order, one configuration
    /// each, after configuration 0). Written by `kv init` and never changed: it is part
    /// of every master replica's initial state.
    #[serde(default)]
    pub initial_groups: Vec<u64>,
}

/// One KV group of a sharded cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group id (not 0).
    pub gid: u64,
    /// The nodes that hold its replicas, in member order.
    pub nodes: Vec<u32>,
}

/// How a cluster replicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Paxos-replicated groups (unsharded, or sharded under a shard master).
    #[default]
    Paxos,
    /// A view service and primary/backup servers (Lab 2): one node runs the view service,
    /// every other node is a primary/backup server.
    PrimaryBackup,
}

impl Mode {
    /// Whether this is the default mode (left out of cluster files).
    pub fn is_paxos(&self) -> bool {
        *self == Mode::Paxos
    }

    /// Its name, as cluster files and `--mode` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Paxos => "paxos",
            Mode::PrimaryBackup => "primary-backup",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Mode, String> {
        // `pb` is the short name the lab's package goes by.
        let text = if text == "pb" { "primary-backup" } else { text };
        [Mode::Paxos, Mode::PrimaryBackup]
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| {
                format!("unknown mode {text:?} (the modes: paxos, primary-backup or pb)")
            })
    }
}

/// The whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Distinguishes clusters, so a node never joins the wrong one or reads another's data.
    pub cluster_id: u64,
    /// How the cluster replicates (absent: Paxos).
    #[serde(default, skip_serializing_if = "Mode::is_paxos")]
    pub mode: Mode,
    /// In primary/backup mode, the node that runs the view service (its `[[node]]` entry
    /// gives its addresses); every other node is a primary/backup server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_service: Option<u32>,
    /// Whether RESP speaks the Redis Cluster protocol (sharded clusters only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_cluster: bool,
    /// The password RESP clients give with `AUTH` (Redis's `requirepass`); absent: none,
    /// every RESP connection starts authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirepass: Option<String>,
    /// Redis's protected mode: with no `requirepass`, RESP clients not on loopback are
    /// refused (absent: on).
    #[serde(
        default = "protected_mode_default",
        skip_serializing_if = "Clone::clone"
    )]
    pub protected_mode: bool,
    /// Leader leases for reads (absent: off): a leader holding one answers reads without
    /// confirming its leadership first, assuming clock rates within the stated bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_lease: Option<ReadLease>,
    /// The shard master, if the cluster is sharded; without it the cluster is one
    /// replicated group on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterConfig>,
    /// The KV groups of a sharded cluster.
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupConfig>,
    /// The nodes, by id.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeConfig>,
    /// Where the file was read from (for resolving relative data directories).
    #[serde(skip)]
    pub base: PathBuf,
}

fn protected_mode_default() -> bool {
    true
}

/// How a cluster's groups are laid out over its nodes (see [`ClusterConfig::shaped`]).
#[derive(Debug, Clone)]
pub struct Shape {
    /// Replicas of each group and of the shard master (at most the number of nodes).
    pub replicas: u32,
    /// KV groups; 0 for the unsharded cluster.
    pub groups: u32,
    /// Shards of a sharded cluster.
    pub shards: u32,
    /// Speak the Redis Cluster protocol.
    pub redis_cluster: bool,
    /// How it replicates; in primary/backup mode `replicas` counts the servers, and a
    /// node before them runs the view service (`groups` and `shards` do not apply).
    pub mode: Mode,
}

/// How `kv init` lays out a local cluster.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Number of nodes (processes).
    pub nodes: u32,
    /// Number of replicas of each group (and of the shard master); at most `nodes`.
    pub replicas: u32,
    /// Number of KV groups; 0 makes the unsharded cluster: one group on every node, no
    /// shard master.
    pub groups: u32,
    /// Number of shards of a sharded cluster.
    pub shards: u32,
    /// Speak the Redis Cluster protocol on RESP.
    pub redis_cluster: bool,
    /// How the cluster replicates: in primary/backup mode, node 0 runs the view service
    /// and nodes `1..=replicas` are the servers (`nodes`, `groups`, `shards` and
    /// `redis_cluster` do not apply).
    pub mode: Mode,
    /// Host to bind every address on.
    pub host: std::net::IpAddr,
    /// First peer port; node i uses `peer_port + i`.
    pub peer_port: u16,
    /// First RESP port.
    pub resp_port: u16,
    /// First admin port.
    pub admin_port: u16,
    /// Cluster id (random unless given).
    pub cluster_id: u64,
    /// The password RESP clients must give (`requirepass`); `None`: no password.
    pub requirepass: Option<String>,
    /// Leader leases for reads; `None`: off.
    pub read_lease: Option<ReadLease>,
}

impl ClusterConfig {
    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<ClusterConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterConfig::parse(&text, path)
    }

    /// Parses and validates the text of the cluster file at `path` (which names the file in
    /// errors and anchors its relative directories). Any text gives a config or an error.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig> {
        let mut config: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if self.nodes.is_empty() {
            return Err(invalid("the cluster has no [[node]] entries".into()));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id as usize != i {
                return Err(invalid(format!(
                    "node ids must be 0, 1, 2, ... in order; entry {i} has id {}",
                    node.id
                )));
            }
        }
        let mut addresses = BTreeSet::new();
        for node in &self.nodes {
            for addr in [node.peer, node.resp, node.admin] {
                if !addresses.insert(addr) {
                    return Err(invalid(format!("address {addr} is used twice")));
                }
            }
        }
        // Two nodes on one host (the same peer address's IP) must not share a data
        // directory: the second would be refused at start, for a lock the first holds.
        let mut dirs = std::collections::BTreeMap::new();
        for node in &self.nodes {
            let dir: PathBuf = self
                .base
                .join(&node.dir)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            if let Some(other) = dirs.insert((node.peer.ip(), dir), node.id) {
                return Err(invalid(format!(
                    "nodes {other} and {} both keep their data in {} on {}; each node needs a \
                     directory of its own",
                    node.id,
                    node.dir.display(),
                    node.peer.ip()
                )));
            }
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(invalid(
                "requirepass is empty; leave it out for no password".into(),
            ));
        }
        self.validate_mode()
            .and_then(|()| self.read_lease.map_or(Ok(()), |lease| lease.validate()))
            .and_then(|()| self.validate_groups())
            .map_err(invalid)
    }

    /// A primary/backup cluster names its view service and nothing of the Paxos modes.
    fn validate_mode(&self) -> std::result::Result<(), String> {
        let n = self.nodes.len();
        match (self.mode, self.view_service) {
            (Mode::Paxos, None) => Ok(()),
            (Mode::Paxos, Some(_)) => {
                Err("view_service is set but mode is not \"primary-backup\"".into())
            }
            (Mode::PrimaryBackup, None) => {
                Err("mode = \"primary-backup\" needs view_service = <node id>".into())
            }
            (Mode::PrimaryBackup, Some(vs)) => {
                if vs as usize >= n {
                    return Err(format!(
                        "view_service = {vs}: no such node (the nodes are {})",
                        span(0u32, (n as u32).saturating_sub(1))
                    ));
                }
                if n < 2 {
                    return Err(
                        "primary-backup mode needs the view service and at least one server".into(),
                    );
                }
                if self.master.is_some() || !self.groups.is_empty() || self.redis_cluster {
                    return Err("primary-backup mode has no shard master, groups or \
                                redis_cluster: its servers hold every key"
                        .into());
                }
                Ok(())
            }
        }
    }

    /// Whether the cluster runs in primary/backup mode.
    pub fn is_primary_backup(&self) -> bool {
        self.mode == Mode::PrimaryBackup
    }

    /// In primary/backup mode, the primary/backup servers' node ids.
    pub fn pb_servers(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| self.is_primary_backup() && Some(id) != self.view_service)
            .collect()
    }

    /// The sharded parts: every group names known nodes, each at most once; group ids are
    /// distinct and not 0; the shard count is in range.
    fn validate_groups(&self) -> std::result::Result<(), String> {
        let n = self.nodes.len();
        let check_nodes = |what: &str, nodes: &[u32]| -> std::result::Result<(), String> {
            if nodes.is_empty() {
                return Err(format!("{what} names no nodes"));
            }
            let mut seen = BTreeSet::new();
            for &node in nodes {
                if node as usize >= n {
                    return Err(format!(
                        "{what} names node {node}, which is not in the cluster file (its nodes are {})",
                        span(0u32, (n as u32).saturating_sub(1))
                    ));
                }
                if !seen.insert(node) {
                    return Err(format!("{what} names node {node} twice"));
                }
            }
            Ok(())
        };
        let Some(master) = &self.master else {
            if !self.groups.is_empty() {
                return Err("[[group]] entries need a [master] section (the shard master)".into());
            }
            if self.redis_cluster {
                return Err("redis_cluster needs a sharded cluster (a [master] section)".into());
            }
            return Ok(());
        };
        if !(1..=kv_replication::shardmaster::SHARDS_MAX).contains(&master.shards) {
            return Err(format!(
                "[master] shards = {}: a cluster has 1–{} shards",
                master.shards,
                kv_replication::shardmaster::SHARDS_MAX
            ));
        }
        check_nodes("[master]", &master.nodes)?;
        let mut gids = BTreeSet::new();
        for group in &self.groups {
            if group.gid == 0 {
                return Err("group id 0 is reserved (it means \"no group\")".into());
            }
            if !gids.insert(group.gid) {
                return Err(format!("group {} is listed twice", group.gid));
            }
            check_nodes(&format!("group {}", group.gid), &group.nodes)?;
        }
        for gid in &master.initial_groups {
            if !gids.contains(gid) {
                return Err(format!(
                    "[master] initial_groups names group {gid}, which has no [[group]] entry"
                ));
            }
        }
        Ok(())
    }

    /// Whether the cluster is sharded (has a shard master).
    pub fn is_sharded(&self) -> bool {
        self.master.is_some()
    }

    /// Writes the cluster file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let header = "# kv cluster file: every node's id, addresses and data directory.\n\
                      # Relative directories are relative to this file.\n\n";
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        // A file holding a password is its owner's alone, from its first byte.
        let mode = if self.requirepass.is_some() {
            0o600
        } else {
            0o644
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(io)?;
        if self.requirepass.is_some() {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        file.write_all(format!("{header}{text}").as_bytes())
            .map_err(io)
    }

    /// A node's entry.
    pub fn node(&self, id: u32) -> Option<&NodeConfig> {
        self.nodes.get(id as usize)
    }

    /// Every replica of a sharded cluster as an endpoint: the shard master's replicas first,
    /// then each group's, in file and member order (empty if the cluster is not sharded).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mut add = |role: Role, nodes: &[u32]| {
            for (member, &node) in nodes.iter().enumerate() {
                out.push(Endpoint {
                    id: out.len() as u32,
                    node,
                    role,
                    member,
                });
            }
        };
        if let Some(master) = &self.master {
            add(Role::Master, &master.nodes);
        }
        for group in &self.groups {
            add(Role::Group(group.gid), &group.nodes);
        }
        out
    }

    /// The servers of group `gid` as configurations name them (its endpoints).
    pub fn servers(&self, gid: u64) -> Vec<String> {
        self.endpoints()
            .iter()
            .filter(|e| e.role == Role::Group(gid))
            .map(|e| kv_replication::cluster::server_name(NodeId(e.id)))
            .collect()
    }

    /// The endpoints as the replication library's [`Layout`] numbers them.
    pub fn endpoint_layout(&self) -> Layout {
        let endpoints = self.endpoints();
        let of = |role: Role| -> Vec<NodeId> {
            endpoints
                .iter()
                .filter(|e| e.role == role)
                .map(|e| NodeId(e.id))
                .collect()
        };
        Layout {
            masters: of(Role::Master),
            groups: self
                .groups
                .iter()
                .map(|g| (GroupId(g.gid), of(Role::Group(g.gid))))
                .collect(),
        }
    }

    /// The data directory of an endpoint: a directory of its node's.
    pub fn endpoint_dir(&self, endpoint: &Endpoint) -> PathBuf {
        self.data_dir(endpoint.node).join(match endpoint.role {
            Role::Master => "master".to_string(),
            Role::Group(gid) => format!("group-{gid}"),
        })
    }

    /// The shard count of a sharded cluster.
    pub fn shards(&self) -> Option<u32> {
        self.master.as_ref().map(|m| m.shards)
    }

    /// Where the cluster secret is: beside the cluster file.
    pub fn secret_path(&self) -> PathBuf {
        self.base.join(SECRET_FILE)
    }

    /// The cluster's id and secret (read from [`ClusterConfig::secret_path`]), which every
    /// native connection proves it knows: an error naming the file if it is missing, too
    /// short, or readable by others than its owner.
    pub fn key(&self) -> Result<ClusterKey> {
        Ok(ClusterKey::new(
            self.cluster_id,
            &read_secret(&self.secret_path())?,
        ))
    }

    /// A node's data directory, resolved against the cluster file's directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        let dir = &self.nodes[id as usize].dir;
        if dir.is_absolute() {
            dir.clone()
        } else {
            self.base.join(dir)
        }
    }
}

#[cfg(test)]
mod tests;
