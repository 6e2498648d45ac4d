//! Laying out clusters: `kv init`'s new cluster (every check before anything is created,
//! and a failed `init` undone) and `kv admin grow`'s added group and nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::stamp::STAMP_TEMP_FILE;
use super::{
    span, write_stamp, ClusterConfig, ConfigError, GroupConfig, InitOptions, MasterConfig, Mode,
    NodeConfig, Result, Role, Shape, CLUSTER_FILE, CLUSTER_ID_MAX, FIRST_GID, STAMP_FILE,
};
use crate::auth::{random_secret, write_secret, SECRET_FILE};

impl ClusterConfig {
    /// Grows a sharded cluster by one KV group, on `new_nodes` new nodes if there are any
    /// (each on the next free ports of the first node's host), else on the existing ones
    /// (member order rotated like `kv init`'s); writes the cluster file (a temporary file
    /// renamed over it) and stamps the new data directories. Returns the new group's id.
    /// The running nodes learn of the group when restarted (one at a time); then
    /// `kv admin join GID` moves shards to it.
    pub fn grow(&mut self, path: &Path, new_nodes: u32, replicas: u32) -> Result<u64> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !self.is_sharded() {
            return Err(invalid(
                "an unsharded cluster cannot grow by groups (it has no shard master)".into(),
            ));
        }
        let first_new = self.nodes.len() as u32;
        let total = first_new + new_nodes;
        let hosts = if new_nodes > 0 { new_nodes } else { total };
        if replicas == 0 || replicas > hosts {
            return Err(invalid(format!(
                "{replicas} replicas is out of range: {} (at most one on each node the group can go on)",
                span(1u32, hosts)
            )));
        }
        let host = self.nodes[0].peer.ip();
        // Each kind of port continues after its highest, skipping any port another
        // address of the file already uses (a hand-written file may interleave them).
        let mut used: std::collections::BTreeSet<u16> = self
            .nodes
            .iter()
            .flat_map(|n| [n.peer.port(), n.resp.port(), n.admin.port()])
            .collect();
        let highest = |pick: fn(&NodeConfig) -> u16| -> u16 {
            self.nodes.iter().map(pick).max().unwrap_or(0)
        };
        let mut cursors = [
            highest(|n| n.peer.port()),
            highest(|n| n.resp.port()),
            highest(|n| n.admin.port()),
        ];
        for i in 0..new_nodes {
            let mut next = |kind: usize| -> Result<u16> {
                loop {
                    let base = cursors[kind];
                    cursors[kind] = base
                        .checked_add(1)
                        .ok_or_else(|| invalid(format!("no free port after {base}")))?;
                    if used.insert(cursors[kind]) {
                        return Ok(cursors[kind]);
                    }
                }
            };
            let id = first_new + i;
            let (peer, resp, admin) = (next(0)?, next(1)?, next(2)?);
            self.nodes.push(NodeConfig {
                id,
                peer: SocketAddr::new(host, peer),
                resp: SocketAddr::new(host, resp),
                admin: SocketAddr::new(host, admin),
                dir: PathBuf::from(format!("node-{id}")),
            });
        }
        let gid = self
            .groups
            .iter()
            .map(|g| g.gid)
            .max()
            .unwrap_or(FIRST_GID - 1)
            + 1;
        let (first, count) = if new_nodes > 0 {
            (first_new, new_nodes)
        } else {
            (self.groups.len() as u32 % total, total)
        };
        let nodes = (0..replicas)
            .map(|j| {
                if new_nodes > 0 {
                    first + (j % count)
                } else {
                    (first + j) % count
                }
            })
            .collect();
        self.groups.push(GroupConfig { gid, nodes });
        self.validate(path)?;
        for id in first_new..total {
            let data = self.data_dir(id);
            std::fs::create_dir_all(&data).map_err(|source| ConfigError::Io {
                path: data.clone(),
                source,
            })?;
            write_stamp(&data, self.cluster_id, id)?;
        }
        for endpoint in self
            .endpoints()
            .iter()
            .filter(|e| e.role == Role::Group(gid))
        {
            let data = self.endpoint_dir(endpoint);
            std::fs::create_dir_all(&data).map_err(|source| ConfigError::Io {
                path: data.clone(),
                source,
            })?;
            write_stamp(&data, self.cluster_id, endpoint.id)?;
        }
        let temp = path.with_extension("toml.tmp");
        self.save(&temp)?;
        std::fs::rename(&temp, path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(gid)
    }

    /// Lays out a local cluster: the config plus one stamped data directory per node, all
    /// under `dir`. Writes `dir/cluster.toml`.
    ///
    /// Everything is checked before anything is created, and if creating fails part-way
    /// (a stamp or the cluster file cannot be written) what was created is removed again:
    /// a failed `init` leaves the disk as it found it.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<ClusterConfig> {
        let config = ClusterConfig::layout(dir, options)?;
        let mut created = Created::default();
        match config.create(dir, &mut created) {
            Ok(()) => Ok(config),
            Err(e) => {
                created.undo();
                Err(e)
            }
        }
    }

    /// The configuration `init` would write, checked, without touching the disk.
    fn layout(dir: &Path, options: &InitOptions) -> Result<ClusterConfig> {
        let invalid = |message: String| ConfigError::Invalid {
            path: dir.to_path_buf(),
            message,
        };
        if options.cluster_id > CLUSTER_ID_MAX {
            return Err(invalid(format!(
                "cluster id {} is above {CLUSTER_ID_MAX} (TOML integers are signed 64-bit)",
                options.cluster_id
            )));
        }
        if options.replicas == 0 {
            return Err(invalid("a cluster needs at least one replica".into()));
        }
        let nodes_count = match options.mode {
            Mode::PrimaryBackup => options
                .replicas
                .checked_add(1)
                .ok_or_else(|| invalid(format!("{} servers are too many", options.replicas)))?,
            Mode::Paxos if options.groups == 0 => options.replicas,
            Mode::Paxos => options.nodes,
        };
        if options.mode == Mode::Paxos && options.groups > 0 && options.replicas > options.nodes {
            return Err(invalid(format!(
                "{} replicas per group need at least as many nodes (there are {})",
                options.replicas, options.nodes
            )));
        }
        let port = |base: u16, i: u32| -> Result<u16> {
            u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| invalid(format!("port {base} + {i} is out of range")))
        };
        let mut nodes = Vec::new();
        for i in 0..nodes_count {
            nodes.push(NodeConfig {
                id: i,
                peer: SocketAddr::new(options.host, port(options.peer_port, i)?),
                resp: SocketAddr::new(options.host, port(options.resp_port, i)?),
                admin: SocketAddr::new(options.host, port(options.admin_port, i)?),
                dir: PathBuf::from(format!("node-{i}")),
            });
        }
        let mut config = ClusterConfig::shaped(
            options.cluster_id,
            nodes,
            dir,
            &Shape {
                replicas: options.replicas,
                groups: options.groups,
                shards: options.shards,
                redis_cluster: options.redis_cluster,
                mode: options.mode,
            },
        );
        config.requirepass = options.requirepass.clone();
        config.read_lease = options.read_lease;
        config.validate(dir)?;
        Ok(config)
    }

    /// A cluster of `nodes` with groups placed as `shape` says (unsharded if it has no
    /// groups): each group and the shard master on `replicas` nodes, member order rotating
    /// from group to group so that the groups' first members (and so, usually, their
    /// first leaders) are spread over the nodes; every group joined from the start.
    pub fn shaped(
        cluster_id: u64,
        nodes: Vec<NodeConfig>,
        base: &Path,
        shape: &Shape,
    ) -> ClusterConfig {
        let count = nodes.len() as u32;
        let members = |first: u32| -> Vec<u32> {
            (0..shape.replicas.min(count))
                .map(|j| (first + j) % count.max(1))
                .collect()
        };
        if shape.mode == Mode::PrimaryBackup {
            return ClusterConfig {
                cluster_id,
                mode: Mode::PrimaryBackup,
                view_service: Some(0),
                redis_cluster: false,
                requirepass: None,
                protected_mode: true,
                read_lease: None,
                master: None,
                groups: Vec::new(),
                nodes,
                base: base.to_path_buf(),
            };
        }
        let (master, groups) = if shape.groups == 0 {
            (None, Vec::new())
        } else {
            let groups: Vec<GroupConfig> = (0..shape.groups)
                .map(|g| GroupConfig {
                    gid: FIRST_GID + u64::from(g),
                    nodes: members(g % count.max(1)),
                })
                .collect();
            let master = MasterConfig {
                shards: shape.shards,
                nodes: members(0),
                initial_groups: groups.iter().map(|g| g.gid).collect(),
            };
            (Some(master), groups)
        };
        ClusterConfig {
            cluster_id,
            mode: Mode::Paxos,
            view_service: None,
            redis_cluster: shape.redis_cluster && shape.groups > 0,
            requirepass: None,
            protected_mode: true,
            read_lease: None,
            master,
            groups,
            nodes,
            base: base.to_path_buf(),
        }
    }

    /// Every directory a new cluster stamps, with the id its stamp names: each node's,
    /// then each endpoint's.
    pub fn stamped_dirs(&self) -> Vec<(PathBuf, u32)> {
        let mut dirs: Vec<(PathBuf, u32)> = self
            .nodes
            .iter()
            .map(|n| (self.data_dir(n.id), n.id))
            .collect();
        dirs.extend(
            self.endpoints()
                .iter()
                .map(|e| (self.endpoint_dir(e), e.id)),
        );
        dirs
    }

    /// Creates the directories, stamps and cluster file of a checked layout, noting each
    /// thing it creates in `created`.
    fn create(&self, dir: &Path, created: &mut Created) -> Result<()> {
        created.dir_all(dir)?;
        for (data, id) in self.stamped_dirs() {
            created.dir_all(&data)?;
            created.file(data.join(STAMP_TEMP_FILE));
            created.file(data.join(STAMP_FILE));
            write_stamp(&data, self.cluster_id, id)?;
        }
        let secret = dir.join(SECRET_FILE);
        created.file(secret.clone());
        write_secret(
            &secret,
            &random_secret().map_err(|message| ConfigError::Invalid {
                path: secret.clone(),
                message,
            })?,
        )?;
        let path = dir.join(CLUSTER_FILE);
        created.file(path.clone());
        self.save(&path)
    }
}

/// What a failing [`ClusterConfig::init`] must remove again: the outermost directories it
/// created and the files it wrote into directories that were already there.
#[derive(Default)]
struct Created {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Created {
    /// `create_dir_all`, remembering the outermost directory that did not exist.
    fn dir_all(&mut self, dir: &Path) -> Result<()> {
        let outermost_new = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .last()
            .map(Path::to_path_buf);
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        self.dirs.extend(outermost_new);
        Ok(())
    }

    /// Notes a file about to be written (it is removed on undo unless a directory that
    /// holds it is).
    fn file(&mut self, path: PathBuf) {
        self.files.push(path);
    }

    /// Removes everything noted, newest first. Best effort: the error being reported is
    /// the one that made `init` fail.
    fn undo(self) {
        for file in self.files.iter().rev() {
            if !self.dirs.iter().any(|d| file.starts_with(d)) {
                let _ = std::fs::remove_file(file);
            }
        }
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
