//! Running one node process: open its data directory, build the core from what it holds,
//! bind its three listeners (peers + native clients, RESP, admin HTTP), connect to peers,
//! and drive the core until shutdown.
//!
//! Lost-disk detection: a data directory without this node's stamp (see
//! [`crate::config`]) means the disk was lost. The core is then built in its rejoin mode,
//! and the directory is stamped again only once the core reports it is ready and that
//! state is durable — so a node that crashes mid-rebuild starts in rejoin mode again (the
//! core finds its own "rebuilding" marker and resumes). A directory stamped for another
//! node or cluster is refused.

use std::sync::Arc;

use kv_engine::fs::{Fs, RealFs};
use kv_engine::group::GroupCommit;
use kv_engine::store::{Recovered, RecoveryReport, Store, StoreOptions};
use kv_replication::types::ClientId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{self, ClusterConfig};
use crate::limits::{self, Budget};
use crate::node::{self, Core, CoreInput, DriverOptions};
use crate::{admin, redis, transport};

/// The lock file in every data directory: held exclusively while a node runs on it.
pub const LOCK_FILE: &str = "kv-node.lock";

/// Logs the torn tail opening a write-ahead log cut off (the file names which log).
fn log_torn_tail(id: u32, tail: &kv_engine::wal::TruncatedTail) {
    if tail.zeroed {
        // The zeros the log writes ahead of its records (or space never written): what
        // every restart finds, not a sign of a crash.
        tracing::debug!(
            node = id,
            file = %tail.file.display(),
            offset = tail.offset,
            bytes = tail.bytes,
            "cut the zeroed space past the write-ahead log's last record"
        );
        return;
    }
    tracing::warn!(
        node = id,
        file = %tail.file.display(),
        offset = tail.offset,
        bytes = tail.bytes,
        found = %tail.reason,
        "cut a torn tail off the write-ahead log (bytes never reported durable)"
    );
}

/// Logs what opening a node's shared log had to skip, repair or take over.
pub fn log_shared_recovery(id: u32, report: &kv_engine::shared::SharedReport) {
    for stream in &report.streams {
        log_recovery(id, stream);
    }
    if let Some(tail) = &report.log_tail {
        log_torn_tail(id, tail);
    }
    if report.foreign_records > 0 {
        tracing::info!(
            node = id,
            records = report.foreign_records,
            "passed over log records of lost or departed replica directories"
        );
    }
    for dir in &report.imported {
        tracing::info!(node = id, dir = %dir.display(), "moved a replica's own log into the node's shared log");
    }
}

/// What a core factory is told about the node's disk.
pub struct Start {
    /// The node's id.
    pub id: u32,
    /// Number of replicas.
    pub peers: usize,
    /// What the disk held.
    pub recovered: Recovered,
    /// True if the disk was lost (no stamp): the core must rebuild from intact peers.
    pub wiped: bool,
}

/// How a node runs.
#[derive(Clone)]
pub struct NodeOptions {
    /// The driver's tunables.
    pub driver: DriverOptions,
    /// The file system the store lives on ([`RealFs`]; tests may give a `SimFs`). The
    /// stamp and the lock are always real files in the data directory.
    pub fs: Arc<dyn Fs>,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            driver: DriverOptions::default(),
            fs: Arc::new(RealFs),
        }
    }
}

/// Logs what opening the store had to skip or repair: each a warning, since each means
/// the disk held something other than what the node last wrote durably.
pub fn log_recovery(id: u32, report: &RecoveryReport) {
    for skipped in &report.skipped_snapshots {
        tracing::warn!(node = id, error = %skipped, "skipped an invalid snapshot; recovering from an older one");
    }
    if let Some(tail) = &report.truncated_tail {
        log_torn_tail(id, tail);
    }
    for temp in &report.removed_temps {
        tracing::warn!(node = id, file = %temp.display(), "removed the temporary file of an interrupted snapshot");
    }
}

/// A node's process resources, taken before any replica starts.
pub struct Opened {
    /// The node's entry.
    pub me: crate::config::NodeConfig,
    /// Its data directory (created if missing).
    pub dir: std::path::PathBuf,
    /// The directory's lock, held as long as the node runs.
    pub lock: std::fs::File,
    /// Connection caps.
    pub budget: Budget,
    /// Peers and native clients.
    pub peer_listener: TcpListener,
    /// RESP.
    pub resp_listener: TcpListener,
    /// Admin HTTP.
    pub admin_listener: TcpListener,
}

/// Takes what node `id` needs before its replicas start, in the order that fails fastest:
/// the open-file limit (raised to the hard limit; a limit too low to run with is refused),
/// the data directory's lock (one process per directory: a second would run recovery,
/// which may truncate the log's tail, under a live node), then its three ports.
pub async fn open_node(config: &ClusterConfig, id: u32) -> Result<Opened, String> {
    let open_files = limits::raise_open_files_limit().map_err(|e| e.to_string())?;
    let budget = Budget::for_limit(open_files, config.nodes.len()).map_err(|e| e.to_string())?;
    let me = config
        .node(id)
        .ok_or_else(|| {
            format!(
                "node {id} is not in the cluster file (it has {} nodes)",
                config.nodes.len()
            )
        })?
        .clone();
    let dir = config.data_dir(id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "{} is in use by another kv process (node {id} is already running?)",
                dir.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("locking {}: {e}", lock_path.display()))
        }
    }
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    Ok(Opened {
        peer_listener: bind(me.peer).await?,
        resp_listener: bind(me.resp).await?,
        admin_listener: bind(me.admin).await?,
        me,
        dir,
        lock,
        budget,
    })
}

/// Opens one replica's store in `dir`, whose stamp names `stamp_id` (a node, or an endpoint
/// of a sharded node): what it recovered, and whether its disk was lost. No stamp means the
/// disk was lost — or a rebuild after losing it was interrupted, which leaves the core's
/// own "rebuilding" marker behind. Either way the core must start in its lost-disk mode,
/// which trusts nothing else the directory holds. A stamp of another cluster or replica is
/// refused.
pub fn open_replica(
    options: &NodeOptions,
    dir: &std::path::Path,
    cluster_id: u64,
    stamp_id: u32,
) -> Result<(Store, Recovered, bool), String> {
    let wiped = lost_disk(dir, cluster_id, stamp_id)?;
    let (store, recovered) = Store::open(options.fs.clone(), dir, StoreOptions::default())
        .map_err(|e| format!("opening {}: {e}", dir.display()))?;
    log_recovery(stamp_id, store.recovery_report());
    Ok((store, recovered, wiped))
}

/// Whether the replica directory `dir` lost its disk (it has no stamp; see
/// [`open_replica`]). A stamp of another cluster or replica is refused.
pub fn lost_disk(dir: &std::path::Path, cluster_id: u64, stamp_id: u32) -> Result<bool, String> {
    let stamped = config::check_stamp(dir, cluster_id, stamp_id).map_err(|e| e.to_string())?;
    if !stamped {
        tracing::warn!(replica = stamp_id, dir = %dir.display(), "data directory has no stamp: lost disk, rebuilding from intact peers");
    }
    Ok(!stamped)
}

/// For a replica whose disk was lost: what the driver runs once the rebuilt state is
/// durable — stamping its directory again, so a crash before then restarts the rebuild.
pub fn stamp_when_ready(
    wiped: bool,
    dir: std::path::PathBuf,
    cluster_id: u64,
    stamp_id: u32,
) -> Option<Box<dyn FnOnce() + Send>> {
    if !wiped {
        return None;
    }
    Some(Box::new(move || {
        match config::write_stamp(&dir, cluster_id, stamp_id) {
            Ok(()) => tracing::info!(
                replica = stamp_id,
                "rebuilt after lost disk; directory stamped"
            ),
            Err(e) => {
                tracing::error!(replica = stamp_id, error = %e, "could not stamp the data directory")
            }
        }
    }))
}

/// Runs node `id` of `config` until `shutdown` becomes true: its one core, made by
/// `make_core` from what its disk holds, serving native clients with the core's own
/// requests and RESP connections through the store `resp_store` makes for each (from
/// the connection's client id and the core's inputs).
///
/// First raises the process's soft open-file limit to its hard limit and sizes every
/// listener's connection cap from it (see [`crate::limits`]); a limit too low to run
/// with is refused before anything else.
pub async fn run_node<C, F, S>(
    config: ClusterConfig,
    id: u32,
    make_core: F,
    resp_store: impl Fn(ClientId, mpsc::Sender<CoreInput<C>>) -> S + Send + Sync + 'static,
    shutdown: watch::Receiver<bool>,
    options: NodeOptions,
) -> Result<(), String>
where
    C: Core,
    C::Asked: Serialize + DeserializeOwned + Sync,
    C::Answered: Serialize + DeserializeOwned + Sync,
    F: FnOnce(Start) -> Result<C, String>,
    S: redis::Store,
{
    let key = config.key().map_err(|e| e.to_string())?;
    let Opened {
        me,
        dir,
        lock,
        budget,
        peer_listener,
        resp_listener,
        admin_listener,
    } = open_node(&config, id).await?;
    let (store, recovered, wiped) = open_replica(&options, &dir, config.cluster_id, id)?;
    let core = make_core(Start {
        id,
        peers: config.nodes.len(),
        recovered,
        wiped,
    })?;

    let (inputs_tx, inputs_rx) = mpsc::channel(options.driver.inputs_max);
    let leader = node::LeaderHint::default();
    let addresses: Vec<_> = config.nodes.iter().map(|n| n.peer).collect();
    let peers = transport::connect_peers(key.clone(), id, &addresses, shutdown.clone());
    tokio::spawn(transport::serve(
        peer_listener,
        key,
        id,
        transport::CoreService {
            inputs: inputs_tx.clone(),
            leader: leader.clone(),
            nodes: config.nodes.len(),
        },
        budget,
        shutdown.clone(),
    ));
    let resp_inputs = inputs_tx.clone();
    tokio::spawn(redis::serve(
        resp_listener,
        move |client| resp_store(client, resp_inputs.clone()),
        redis::Access::of(&config),
        shutdown.clone(),
        budget.resp,
    ));
    tokio::spawn(admin::serve(
        admin_listener,
        id,
        inputs_tx.clone(),
        shutdown.clone(),
        budget.admin,
    ));
    drop(inputs_tx);
    tracing::info!(
        node = id,
        peer = %me.peer,
        resp = %me.resp,
        admin = %me.admin,
        open_files = budget.open_files,
        resp_connections_max = budget.resp,
        native_connections_max = budget.native,
        "node started"
    );

    let on_ready = stamp_when_ready(wiped, dir, config.cluster_id, id);
    let commit = GroupCommit::start(store, options.driver.group);
    let hosted = node::Hosted {
        core,
        log: commit.stream(0),
        peers,
        inputs: inputs_rx,
        leader,
        on_ready,
    };
    let result = node::run_cores(vec![hosted], shutdown, options.driver).await;
    // Everything queued is written before another process may take the directory.
    drop(commit);
    drop(lock);
    result
}
