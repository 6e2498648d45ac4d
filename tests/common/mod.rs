//! End-to-end harness: a cluster of real `kv node` processes on loopback, each with its own
//! data directory, that tests can SIGKILL, restart, and wipe.
//!
//! Timeouts here only catch hangs; they are generous multiples of normal behaviour.

#![allow(dead_code)]

pub mod netns;
pub mod workload;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv_client::auth::{self, ClusterKey};
use kv_server::client::{Client, ClientOptions, Protocol};
pub use kv_server::config::Shape;
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

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Node `id` listening on `[peer, resp, admin]`, with its directory beside the cluster file.
fn node_config(id: u32, [peer, resp, admin]: [SocketAddr; 3]) -> NodeConfig {
    NodeConfig {
        id,
        peer,
        resp,
        admin,
        dir: PathBuf::from(format!("node-{id}")),
    }
}

impl Cluster {
    /// Lays out and starts an `n`-node cluster, and waits until every node is ready.
    pub fn start(n: u32) -> Cluster {
        Cluster::start_with(n, Box::new(|_, _| {}))
    }

    /// [`Cluster::start`], with every node process (also on restarts) adjusted by
    /// `configure` before it is spawned.
    pub fn start_with(n: u32, configure: Configure) -> Cluster {
        Cluster::start_shaped(
            n,
            Shape {
                replicas: n,
                groups: 0,
                shards: 1,
                redis_cluster: false,
                mode: config::Mode::Paxos,
            },
            configure,
        )
    }

    /// Lays out and starts a sharded cluster of `n` nodes shaped by `shape` (every group
    /// joined from the start), and waits until every replica of every node is ready.
    pub fn start_sharded(n: u32, shape: Shape) -> Cluster {
        Cluster::start_shaped(n, shape, Box::new(|_, _| {}))
    }

    /// [`Cluster::start_with`] for any shape.
    pub fn start_shaped(n: u32, shape: Shape, configure: Configure) -> Cluster {
        Cluster::start_edited(n, shape, configure, |_| {})
    }

    /// [`Cluster::start_shaped`], with the cluster file changed by `edit` before it is
    /// written (a placement no shape gives).
    pub fn start_edited(
        n: u32,
        shape: Shape,
        configure: Configure,
        edit: impl FnOnce(&mut ClusterConfig),
    ) -> Cluster {
        // Hold every listener until all ports are chosen, so no two are the same.
        let held = kv_server::ports::hold_free_loopback(3 * n as usize);
        let port = |i: u32| loopback(held[i as usize].local_addr().expect("address").port());
        let nodes = (0..n)
            .map(|id| node_config(id, [port(3 * id), port(3 * id + 1), port(3 * id + 2)]))
            .collect();
        drop(held);
        Cluster::launch(nodes, shape, configure, edit)
    }

    /// [`Cluster::start_shaped`] with node `i` listening on `hosts[i]` (an address inside
    /// a network namespace of its own, say) on the ports `kv init` gives by default:
    /// every node has an address of its own, so the ports cannot clash.
    /// The cluster file is changed by `edit` before it is written.
    pub fn start_hosted(
        hosts: &[IpAddr],
        shape: Shape,
        configure: Configure,
        edit: impl FnOnce(&mut ClusterConfig),
    ) -> Cluster {
        let nodes = (0..hosts.len() as u32)
            .map(|id| {
                let at = |port| SocketAddr::new(hosts[id as usize], port);
                node_config(id, [at(7380), at(6380), at(9380)])
            })
            .collect();
        Cluster::launch(nodes, shape, configure, edit)
    }

    /// Writes the cluster file for `nodes`, stamps their directories, starts every node
    /// and waits until all are ready.
    fn launch(
        nodes: Vec<NodeConfig>,
        shape: Shape,
        configure: Configure,
        edit: impl FnOnce(&mut ClusterConfig),
    ) -> Cluster {
        let n = nodes.len() as u32;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ClusterConfig::shaped(
            0x6b76_7465_7374 ^ u64::from(std::process::id()),
            nodes,
            dir.path(),
            &shape,
        );
        edit(&mut config);
        let path = dir.path().join(CLUSTER_FILE);
        config.save(&path).expect("write cluster file");
        config = ClusterConfig::load(&path).expect("reload cluster file");
        auth::write_secret(
            &config.secret_path(),
            &auth::random_secret().expect("a random secret"),
        )
        .expect("write the cluster secret");
        for (data, id) in config.stamped_dirs() {
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
        let mut command = Command::new(kv_binary());
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

    /// SIGTERM, then waits for the node to exit: a graceful stop (its storage closed, its
    /// lock released), as an operator stops a node before copying its directory. Panics if
    /// the node does not exit within [`READY_TIMEOUT`].
    pub fn stop_node(&mut self, id: u32) {
        self.signal(id, libc::SIGTERM);
        let clean = self.wait_exit(id);
        assert!(
            clean,
            "node {id} did not stop cleanly; log:\n{}",
            self.log(id)
        );
    }

    /// Sends `signal` to a running node (SIGSTOP: it hears nothing and says nothing until
    /// SIGCONT).
    pub fn signal(&self, id: u32, signal: libc::c_int) {
        // SAFETY: kill(2) with a valid signal on a child this harness spawned and has not
        // reaped, so the pid still names it.
        let sent = unsafe { libc::kill(self.pid(id) as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} to node {id}");
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

    /// A node's data directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.config.data_dir(id)
    }

    /// Copies a stopped node's data directory to `to` (which must not exist): a backup.
    pub fn copy_data_dir(&self, id: u32, to: &Path) {
        assert!(
            self.children[id as usize].is_none(),
            "stop node {id} before copying its directory"
        );
        copy_dir(&self.data_dir(id), to);
    }

    /// Replaces a stopped node's data directory with the copy at `from`: a backup restored.
    pub fn restore_data_dir(&mut self, id: u32, from: &Path) {
        assert!(
            self.children[id as usize].is_none(),
            "stop node {id} before restoring its directory"
        );
        let data = self.data_dir(id);
        std::fs::remove_dir_all(&data).expect("remove the data directory");
        copy_dir(from, &data);
    }

    pub fn node(&self, id: u32) -> &NodeConfig {
        &self.config.nodes[id as usize]
    }

    pub fn peer_addresses(&self) -> Vec<SocketAddr> {
        self.config.nodes.iter().map(|n| n.peer).collect()
    }

    pub fn client(&self, first: usize, options: ClientOptions) -> Client {
        self.client_of(first, options)
    }

    /// A native client speaking protocol `P` (a primary/backup cluster's, say).
    pub fn client_of<P: Protocol>(&self, first: usize, options: ClientOptions) -> Client<P> {
        Client::new(self.key(), self.peer_addresses(), first, options)
    }

    /// The cluster's id and secret, as its nodes and clients read them.
    pub fn key(&self) -> ClusterKey {
        self.config.key().expect("the cluster secret")
    }

    /// A raw native connection to node `id` (blocking, with a generous read timeout),
    /// introduced as a client: for tests that write frames themselves.
    pub fn native_stream(&self, id: u32) -> std::io::Result<std::net::TcpStream> {
        let mut stream = std::net::TcpStream::connect(self.node(id).peer)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        auth::introduce_blocking(&mut stream, &self.key(), auth::Caller::Client, id)?;
        Ok(stream)
    }

    /// The status text of a node, if it answers.
    pub fn status(&self, id: u32) -> Option<String> {
        let addr = self.node(id).peer;
        block_on(kv_server::client::status(
            &self.key(),
            id,
            addr,
            Duration::from_secs(2),
        ))
        .ok()
    }

    /// A primary/backup cluster's current view, from its view service, if it answers.
    pub fn view(&self) -> Option<kv_replication::pbservice::View> {
        let view_service = self.config.view_service?;
        let addr = self.node(view_service).peer;
        block_on(kv_server::client::view(
            &self.key(),
            view_service,
            addr,
            Duration::from_secs(2),
        ))
        .ok()
    }

    /// A primary/backup cluster's view if it is settled — its primary acknowledged it and
    /// its backup holds the whole state, so one more failure loses nothing — as
    /// `(viewnum, primary, backup)`.
    pub fn settled_view(&self) -> Option<(u64, u32, u32)> {
        let vs = self.status_fields(self.config.view_service?)?;
        if vs.get("acked") != "true" || vs.get("backup") == "-" {
            return None;
        }
        let (viewnum, primary, backup) = (vs.u64("viewnum"), vs.u64("primary"), vs.u64("backup"));
        let b = self.status_fields(backup as u32)?;
        let ready = b.get("role") == "backup" && b.get("holds_state") == "true";
        let current = b.u64("viewnum") == viewnum;
        (ready && current).then_some((viewnum, primary as u32, backup as u32))
    }

    /// A node's status as named fields, if it answers.
    pub fn status_fields(&self, id: u32) -> Option<Status> {
        self.status(id).map(|text| Status::parse(&text))
    }

    /// One numeric status field of a node; panics if the node does not answer or has no
    /// such field.
    pub fn status_u64(&self, id: u32, name: &str) -> u64 {
        self.status_fields(id)
            .unwrap_or_else(|| panic!("node {id} does not answer status"))
            .u64(name)
    }

    /// The sum of a numeric status field over the nodes that answer (say, bytes on disk).
    pub fn status_sum(&self, ids: &[u32], name: &str) -> u64 {
        ids.iter().map(|&id| self.status_u64(id, name)).sum()
    }

    /// A synchronous Redis-protocol connection to a node's RESP port whose reads and
    /// writes give up after `timeout` (a hang guard, or a test that nothing answers).
    pub fn redis(&self, id: u32, timeout: Duration) -> redis::Connection {
        let url = format!("redis://{}/", self.node(id).resp);
        let client = redis::Client::open(url).expect("redis URL");
        let connection = client.get_connection().expect("connect to the RESP port");
        connection
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        connection
            .set_write_timeout(Some(timeout))
            .expect("write timeout");
        connection
    }

    pub fn wait_ready(&mut self, id: u32) {
        let started = Instant::now();
        loop {
            if let Some(text) = self.status(id) {
                // A sharded node reports each replica it hosts: all must be ready.
                let ready = text.lines().filter(|l| l.trim().starts_with("ready: "));
                let (mut any, mut all) = (false, true);
                for line in ready {
                    any = true;
                    all &= line.trim() == "ready: true";
                }
                if any && all {
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

    /// The last lines of a node's log (every run of the node appends to it).
    pub fn log(&self, id: u32) -> String {
        let text = self.full_log(id);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Cluster {
    /// Everything a node logged, over all its runs.
    pub fn full_log(&self, id: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Panics, quoting the line, if any node's log records a panic.
    pub fn assert_no_panic(&self) {
        for id in 0..self.len() {
            if let Some(line) = self.full_log(id).lines().find(|l| l.contains("panicked")) {
                panic!("node {id} panicked: {line}");
            }
        }
    }
}

/// A node's status: the `name: value` lines of `kv admin status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status(pub BTreeMap<String, String>);

impl Status {
    pub fn parse(text: &str) -> Status {
        Status(
            text.lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .collect(),
        )
    }

    /// A field's text; panics if it is missing.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no status field {name:?} in {:?}", self.0))
    }

    /// A numeric field; panics if it is missing or not a number.
    pub fn u64(&self, name: &str) -> u64 {
        let text = self.get(name);
        text.parse()
            .unwrap_or_else(|_| panic!("status field {name} = {text:?} is not a number"))
    }
}

/// Runs `future` to completion on a runtime of its own (for a synchronous test's calls).
/// The sharded shape most end-to-end tests use: 3 replicas of 3 groups over 16 shards,
/// Paxos, with or without Redis Cluster mode.
pub fn three_groups(redis_cluster: bool) -> Shape {
    Shape {
        replicas: 3,
        groups: 3,
        shards: 16,
        redis_cluster,
        mode: kv_server::config::Mode::Paxos,
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Polls `probe` until it gives a value, or panics after `timeout` naming `what`. Tests
/// wait on conditions this way; the timeout is a hang guard, never a measure of speed.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies a directory tree (regular files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 0..self.len() {
            self.kill_node(id);
        }
    }
}

/// One replica's part of a sharded node's status: its heading (`master` or the group id)
/// and its fields.
#[derive(Debug, Clone)]
pub struct Part {
    pub group: String,
    pub fields: BTreeMap<String, String>,
}

impl Part {
    pub fn u64(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.fields))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {:?}", self.fields))
    }
}

/// A sharded node's status text, split into its replicas' parts.
pub fn parts(text: &str) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(heading) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            parts.push(Part {
                group: heading
                    .strip_prefix("group ")
                    .unwrap_or(heading)
                    .to_string(),
                fields: BTreeMap::new(),
            });
        } else if let (Some(part), Some((k, v))) = (parts.last_mut(), line.split_once(": ")) {
            part.fields.insert(k.to_string(), v.to_string());
        }
    }
    parts
}

impl Cluster {
    /// Runs `kv admin ARGS --cluster <this cluster>`; its stdout if it succeeded, else its
    /// stderr as the error.
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        self.kv(&all)
    }

    /// Re-reads the cluster file (after `kv grow` appended to it), making room for its new
    /// nodes (not started).
    pub fn reload(&mut self) {
        self.config = ClusterConfig::load(&self.path).expect("reload cluster file");
        while self.children.len() < self.config.nodes.len() {
            self.children.push(None);
        }
    }

    /// Gives nodes `ids` fresh ports (as `start` chooses them) in the cluster file: `kv grow`
    /// numbers new nodes' ports after the highest in the file, which another test's node
    /// may hold.
    pub fn reassign_ports(&mut self, ids: std::ops::Range<u32>) {
        let held = kv_server::ports::hold_free_loopback(3 * ids.len());
        let port = |i: usize| loopback(held[i].local_addr().expect("address").port());
        for (k, id) in ids.enumerate() {
            let node = &mut self.config.nodes[id as usize];
            node.peer = port(3 * k);
            node.resp = port(3 * k + 1);
            node.admin = port(3 * k + 2);
        }
        drop(held);
        self.config.save(&self.path).expect("write cluster file");
        self.reload();
    }

    /// Runs `kv ARGS --cluster <this cluster>` (any command); its stdout if it succeeded,
    /// else its stderr.
    pub fn kv(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(kv_binary())
            .args(args)
            .arg("--cluster")
            .arg(&self.path)
            .output()
            .expect("run kv");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The replicas' parts of a sharded node's status, if it answers.
    pub fn parts(&self, id: u32) -> Option<Vec<Part>> {
        self.status(id).map(|text| parts(&text))
    }

    /// Waits until every node answers and every KV replica has applied configuration
    /// `num` with no shard arriving or leaving (handoffs done, old copies released).
    pub fn wait_settled(&self, num: u64, timeout: Duration) {
        wait_for(
            &format!("every replica settled at configuration {num}"),
            timeout,
            || {
                for id in 0..self.len() {
                    let parts = self.parts(id)?;
                    for part in parts.iter().filter(|p| p.group != "master") {
                        let settled = part.fields.get("ready").map(String::as_str) == Some("true")
                            && part.u64("config") >= num
                            && part.u64("shards_arriving") == 0
                            && part.u64("shards_leaving") == 0;
                        if !settled {
                            return None;
                        }
                    }
                }
                Some(())
            },
        );
    }
}

/// The configuration number `kv admin join/leave/move` reports.
pub fn config_num(output: &str) -> u64 {
    output
        .split("configuration ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no configuration number in {output:?}"))
}

/// A full SCAN walk through the `redis` crate with the given COUNT: every key returned, in
/// order, duplicates included.
pub fn scan_walk(connection: &mut redis::Connection, pattern: &str, count: usize) -> Vec<String> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query(connection)
            .unwrap();
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Runs redis-cli against the RESP port `port` with `args`; its output, trimmed. Fails
/// the test if redis-cli cannot run or exits with an error.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed (Debian package redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Runs `tests/python/SCRIPT` with `args` and returns its stdout, which must end with an
/// `ok` line; fails the test (with the script's output) otherwise, or if redis-py is
/// missing.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 is installed (.ci/run installs it with redis-py in a venv)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'redis'"),
        "redis-py is missing: `pip install 'redis>=6'` (.ci/run does, in a venv)"
    );
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{script} {args:?} failed:\n{stdout}{stderr}"
    );
    stdout
}

/// The `kv` binary the nodes run: this build's, or the one `KV_TEST_BIN` names (to run a
/// test against another build — an older commit, or one with a mechanism switched off —
/// and see it fail).
pub fn kv_binary() -> PathBuf {
    std::env::var_os("KV_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kv")))
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
