//! The KV-group replica, as `kv node` runs it, on a simulated disk that is nearly full: a
//! node that has no room for a snapshot starts and serves, and starting itself takes no
//! snapshot (what it recovered is on disk already). A snapshot a full disk cannot hold is
//! skipped, never the node stopped for it (engine tests cover the skip itself).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_engine::fs::SimFs;
use kv_server::auth;
use kv_server::config::{self, ClusterConfig, NodeConfig};
use kv_server::run::NodeOptions;

/// Hang guard for conditions the test waits on; never a measure of speed.
const WAIT: Duration = Duration::from_secs(60);

/// A node's three listening addresses, free loopback ports (see `kv_server::ports`).
fn ports() -> [SocketAddr; 3] {
    let held = kv_server::ports::hold_free_loopback(3);
    let address = |i: usize| held[i].local_addr().unwrap();
    [address(0), address(1), address(2)]
}

fn one_node_cluster(dir: &Path) -> ClusterConfig {
    let [peer, resp, admin] = ports();
    let config = ClusterConfig {
        cluster_id: 77,
        mode: Default::default(),
        view_service: None,
        redis_cluster: false,
        requirepass: None,
        protected_mode: true,
        read_lease: None,
        master: None,
        groups: Vec::new(),
        nodes: vec![NodeConfig {
            id: 0,
            peer,
            resp,
            admin,
            dir: PathBuf::from("n0"),
        }],
        base: dir.to_path_buf(),
    };
    std::fs::create_dir_all(config.data_dir(0)).unwrap();
    config::write_stamp(&config.data_dir(0), 77, 0).unwrap();
    auth::write_secret(&config.secret_path(), &auth::random_secret().unwrap()).unwrap();
    config
}

/// A running replica; stops (and reports how it ended) when asked.
struct Node {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
    config: ClusterConfig,
}

impl Node {
    fn start(config: &ClusterConfig, fs: &SimFs) -> Node {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let options = NodeOptions {
            fs: Arc::new(fs.clone()),
            ..NodeOptions::default()
        };
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(kv_server::replica::run_with(
                run_config, 0, stop_rx, options,
            ))
        });
        Node {
            stop,
            thread,
            config: config.clone(),
        }
    }

    fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        self.thread.join().unwrap()
    }

    /// A RESP connection, once the node has opened its port and is ready.
    fn connect(&self) -> TcpStream {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = TcpStream::connect(self.config.nodes[0].resp) {
                stream.set_read_timeout(Some(WAIT)).unwrap();
                if command(&mut stream, &["PING"]) == "+PONG" {
                    return stream;
                }
            }
            assert!(started.elapsed() < WAIT, "node never served");
            assert!(!self.thread.is_finished(), "node stopped while starting");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One line of the node's status.
    fn status(&self, name: &str) -> u64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let text = rt
            .block_on(kv_server::client::status(
                &self.config.key().unwrap(),
                0,
                self.config.nodes[0].peer,
                WAIT,
            ))
            .expect("status");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }
}

/// Sends a RESP command; returns its reply's first line (a bulk string's body is read and
/// dropped).
fn command(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut wire = format!("*{}\r\n", args.len());
    for arg in args {
        wire.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(wire.as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return format!("(closed after {:?})", String::from_utf8_lossy(&line));
        }
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        let mut body = vec![0u8; len + 2];
        stream.read_exact(&mut body).unwrap();
    }
    line
}

#[test]
fn a_node_without_room_for_a_snapshot_starts_and_serves_without_taking_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_node_cluster(dir.path());
    let fs = SimFs::new();
    let value = "v".repeat(4096);

    // First life: ~1 MiB of live data, snapshotted, and some log after the snapshot.
    let node = Node::start(&config, &fs);
    let mut redis = node.connect();
    for i in 0..256 {
        assert_eq!(
            command(&mut redis, &["SET", &format!("k{i}"), &value]),
            "+OK"
        );
    }
    assert!(node.status("snapshot_index") > 0, "no snapshot was taken");
    for i in 0..8 {
        assert_eq!(
            command(&mut redis, &["SET", &format!("late{i}"), "x"]),
            "+OK"
        );
    }
    drop(redis);
    node.stop().expect("first life ends cleanly");

    // Second life, on a disk with room for a little more log but not for a snapshot of
    // the state (nor for its reserve).
    let used = fs.total_bytes();
    fs.set_capacity(Some(used + (64 << 10)));
    let node = Node::start(&config, &fs);
    let mut redis = node.connect();
    // What it recovered is already on disk: starting takes no snapshot (the one a restart
    // used to take is what refilled full disks).
    let snapshot_index = node.status("snapshot_index");
    assert_eq!(command(&mut redis, &["GET", "late7"]), "$1");
    assert_eq!(command(&mut redis, &["SET", "after", "y"]), "+OK");
    assert_eq!(command(&mut redis, &["GET", "k255"]), "$4096");
    assert!(
        fs.total_bytes() <= used + (64 << 10),
        "the node wrote past the room it had"
    );
    assert_eq!(
        node.status("snapshot_index"),
        snapshot_index,
        "a snapshot was taken"
    );
    assert_eq!(
        node.status("snapshots_skipped"),
        0,
        "a snapshot was attempted"
    );
    drop(redis);
    node.stop().expect("second life ends cleanly");
}
