//! End-to-end harness: a cluster of real `kv node` processes on loopback, each with its own
//! data directory, that tests can SIGKILL, restart, and wipe.
//!
//! Timeouts here only catch hangs; they are generous multiples of normal behaviour.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv_server::client::{Client, ClientOptions};
use kv_server::config::{self, ClusterConfig, NodeConfig, CLUSTER_FILE};

/// Generous bound for a cluster to become ready (hang guard only).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Adjusts how a node's process is started (its id, and the command about to run).
pub type Configure = Box<dyn Fn(u32, &mut Command)>;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: ClusterConfig,
    pub path: PathBuf,
    children: Vec<Option<Child>>,
    configure: Configure,
}

fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Lays out and starts an `n`-node cluster, and waits until every node is ready.
    pub fn start(n: u32) -> Cluster {
        Cluster::start_with(n, Box::new(|_, _| {}))
    }

    /// [`Cluster::start`], with every node process (also on restarts) adjusted by
    /// `configure` before it is spawned.
    pub fn start_with(n: u32, configure: Configure) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // Hold every listener until all ports are chosen, so no two are the same.
        let held: Vec<TcpListener> = (0..3 * n).map(|_| free_listener()).collect();
        let port = |i: u32| loopback(held[i as usize].local_addr().expect("address").port());
        let nodes = (0..n)
            .map(|id| NodeConfig {
                id,
                peer: port(3 * id),
                resp: port(3 * id + 1),
                admin: port(3 * id + 2),
                dir: PathBuf::from(format!("node-{id}")),
            })
            .collect();
        drop(held);
        let mut config = ClusterConfig {
            cluster_id: 0x6b76_7465_7374 ^ u64::from(std::process::id()),
            nodes,
            base: dir.path().to_path_buf(),
        };
        let path = dir.path().join(CLUSTER_FILE);
        config.save(&path).expect("write cluster file");
        config = ClusterConfig::load(&path).expect("reload cluster file");
        for id in 0..n {
            let data = config.data_dir(id);
            std::fs::create_dir_all(&data).expect("data dir");
            config::write_stamp(&data, config.cluster_id, id).expect("stamp");
        }
        let mut cluster = Cluster {
            dir,
            config,
            path,
            children: (0..n).map(|_| None).collect(),
            configure,
        };
        for id in 0..n {
            cluster.start_node(id);
        }
        cluster.wait_ready_all();
        cluster
    }

    pub fn len(&self) -> u32 {
        self.children.len() as u32
    }

    pub fn start_node(&mut self, id: u32) {
        assert!(
            self.children[id as usize].is_none(),
            "node {id} already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("node log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kv"));
        command
            .args(["node", "--cluster"])
            .arg(&self.path)
            .args(["--id", &id.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        (self.configure)(id, &mut command);
        let child = command.spawn().expect("spawn kv node");
        self.children[id as usize] = Some(child);
    }

    /// SIGKILL: no warning, no flush.
    pub fn kill_node(&mut self, id: u32) {
        if let Some(mut child) = self.children[id as usize].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u32) -> u32 {
        self.children[id as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id()
    }

    /// A running node's resident memory (`VmRSS` in /proc/PID/status), in bytes.
    pub fn rss_bytes(&self, id: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(id)))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmRSS line");
        kib * 1024
    }

    /// Waits for a node that is expected to exit (a refused start) and returns whether it
    /// exited successfully.
    pub fn wait_exit(&mut self, id: u32) -> bool {
        let started = Instant::now();
        loop {
            let child = self.children[id as usize]
                .as_mut()
                .unwrap_or_else(|| panic!("node {id} is not running"));
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.children[id as usize] = None;
                return status.success();
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "node {id} still running after {READY_TIMEOUT:?}; log:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self, id: u32) -> bool {
        match self.children[id as usize].as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Deletes the node's data directory and recreates it empty (a lost disk).
    pub fn wipe_node(&mut self, id: u32) {
        assert!(
            self.children[id as usize].is_none(),
            "kill node {id} before wiping it"
        );
        let data = self.config.data_dir(id);
        std::fs::remove_dir_all(&data).expect("wipe");
        std::fs::create_dir_all(&data).expect("recreate");
    }

    pub fn node(&self, id: u32) -> &NodeConfig {
        &self.config.nodes[id as usize]
    }

    pub fn peer_addresses(&self) -> Vec<SocketAddr> {
        self.config.nodes.iter().map(|n| n.peer).collect()
    }

    pub fn client(&self, first: usize, options: ClientOptions) -> Client {
        Client::new(
            self.config.cluster_id,
            self.peer_addresses(),
            first,
            options,
        )
    }

    /// The status text of a node, if it answers.
    pub fn status(&self, id: u32) -> Option<String> {
        let addr = self.node(id).peer;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(kv_server::client::status(
            self.config.cluster_id,
            addr,
            Duration::from_secs(2),
        ))
        .ok()
    }

    pub fn wait_ready(&mut self, id: u32) {
        let started = Instant::now();
        loop {
            if let Some(text) = self.status(id) {
                if text.lines().any(|l| l.trim() == "ready: true") {
                    return;
                }
            }
            assert!(
                self.is_running(id),
                "node {id} exited; log:\n{}",
                self.log(id)
            );
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "node {id} not ready after {READY_TIMEOUT:?}; log:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready_all(&mut self) {
        for id in 0..self.len() {
            self.wait_ready(id);
        }
    }

    pub fn log(&self, id: u32) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 0..self.len() {
            self.kill_node(id);
        }
    }
}

/// Nanoseconds since `epoch`, strictly increasing across calls in one process.
pub fn clock(epoch: Instant) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = epoch.elapsed().as_nanos() as u64;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
