//! The README's main job, `kv up`, as a user runs it: it starts a 3-node cluster, serves
//! redis-cli, stops every node gracefully on Ctrl-C (SIGINT; nodes get SIGTERM), and a
//! second `kv up` on the same directory still has the data. A Ctrl-C sent to the whole
//! process group (as a terminal does) reports no node as crashed; a directory already
//! served is refused before anything starts; a killed `kv up` takes its nodes with it;
//! flags that only shape a new cluster get a warning on an existing one.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Hang guard only.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A base port such that base..base+3 are free, for each of the three port ranges.
fn free_bases() -> (u16, u16, u16) {
    free_bases_for(3)
}

/// A base port such that base..base+nodes are free, for each of the three port ranges.
fn free_bases_for(nodes: u16) -> (u16, u16, u16) {
    // One run of free ports below the ephemeral range (an outgoing connection of another
    // test can take an ephemeral port at any moment): resp, peer and admin ports in turn.
    let base = kv_server::ports::free_loopback_run(3 * nodes);
    (base, base + nodes, base + 2 * nodes)
}

struct Up {
    child: Child,
    /// Lines of stdout, and of stderr prefixed with `stderr: `, as they come.
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// What a `kv up` is started with, besides its directory and ports.
#[derive(Default)]
struct Options<'a> {
    /// More arguments.
    args: &'a [&'a str],
    /// Its own process group, as a shell starts a job: signals to the group reach it and
    /// its nodes, and nothing else (this test).
    own_group: bool,
    /// Without the port flags (which shape a new cluster only).
    no_ports: bool,
}

impl Up {
    fn start(dir: &std::path::Path, ports: (u16, u16, u16)) -> Up {
        let mut up = Up::spawn(dir, ports, Options::default());
        up.wait_for_line("kv is up");
        up
    }

    /// Starts `kv up` without waiting for anything.
    fn spawn(dir: &std::path::Path, (resp, peer, admin): (u16, u16, u16), options: Options) -> Up {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kv"));
        command.arg("up").arg("--dir").arg(dir);
        if !options.no_ports {
            command
                .args(["--resp-port", &resp.to_string()])
                .args(["--peer-port", &peer.to_string()])
                .args(["--admin-port", &admin.to_string()]);
        }
        command
            .args(options.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if options.own_group {
            command.process_group(0);
        }
        let mut child = command.spawn().expect("spawn kv up");
        let (tx, rx) = mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), "", tx.clone());
        forward_lines(child.stderr.take().unwrap(), "stderr: ", tx);
        Up {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Every line until `kv up` exits, and its exit status.
    fn wait_for_exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let started = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.seen.push(line),
                // Both pipes closed: kv up (and anything holding its pipes) is gone.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "kv up did not exit; it printed:\n{}",
                self.seen.join("\n")
            );
        }
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < TIMEOUT, "kv up did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::mem::take(&mut self.seen))
    }

    /// The `kv node` processes this `kv up` started (its children), at least `n` of them.
    fn nodes(&self, n: usize) -> Vec<Process> {
        let parent = self.child.id();
        let started = Instant::now();
        loop {
            let mut nodes = Vec::new();
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some(stat) = proc_stat(pid).filter(|s| s.ppid == parent) {
                    nodes.push(Process {
                        pid,
                        start_time: stat.start_time,
                    });
                }
            }
            if nodes.len() >= n {
                return nodes;
            }
            assert!(started.elapsed() < TIMEOUT, "kv up has {nodes:?} children");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_line(&mut self, needle: &str) {
        let started = Instant::now();
        while started.elapsed() < TIMEOUT {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "`kv up` never printed {needle:?}; it printed:\n{}",
            self.seen.join("\n")
        );
    }

    /// Ctrl-C, then wait for a clean exit.
    fn interrupt(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_for_line("stopped; ");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "kv up exited with {status}");
                break;
            }
            assert!(started.elapsed() < TIMEOUT, "kv up did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line `from` gives to `to`, prefixed, until either end closes.
fn forward_lines(from: impl Read + Send + 'static, prefix: &'static str, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to.send(format!("{prefix}{line}")).is_err() {
                return;
            }
        }
    });
}

/// One process, told apart from a later one that reuses its pid by its start time.
#[derive(Clone, Copy, Debug)]
struct Process {
    pid: u32,
    start_time: u64,
}

/// What `/proc/PID/stat` says of a process.
struct Stat {
    state: char,
    ppid: u32,
    /// Clock ticks after boot.
    start_time: u64,
}

/// `/proc/PID/stat`; `None` once the process is gone.
fn proc_stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22 of the line, the 20th after the comm.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

impl Process {
    /// Whether it has exited: gone, or a zombie nobody reaped yet.
    fn exited(&self) -> bool {
        proc_stat(self.pid)
            .is_none_or(|s| s.start_time != self.start_time || matches!(s.state, 'Z' | 'X'))
    }
}

/// Waits (generously) until every process of `processes` has exited.
fn wait_exited(processes: &[Process], what: &str) {
    let started = Instant::now();
    while !processes.iter().all(Process::exited) {
        assert!(
            started.elapsed() < TIMEOUT,
            "{what}: still running: {:?}",
            processes.iter().filter(|p| !p.exited()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills what is left of its processes (after a failed assertion), so that no node
/// outlives its test.
struct KillOnDrop(Vec<Process>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for process in &self.0 {
            if !process.exited() {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is the
                // process's own (checked by its start time just now).
                unsafe {
                    libc::kill(process.pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// redis-cli, retried until the cluster answers (nodes elect a leader after starting).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed (Debian package redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        if out.status.success() && !text.starts_with("ERR") && !text.contains("Could not connect") {
            return text;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "redis-cli {args:?} kept failing: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kv_up_serves_redis_stops_gracefully_on_ctrl_c_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases();

    let up = Up::start(&data, ports);
    assert_eq!(
        redis_cli(ports.0, &["SET", "kept", "across restarts"]),
        "OK"
    );
    assert_eq!(redis_cli(ports.0 + 2, &["APPEND", "kept", "!"]), "16");
    let printed = up.interrupt();
    assert!(
        !printed.iter().any(|l| l.contains("did not stop")),
        "every node should exit on SIGTERM:\n{}",
        printed.join("\n")
    );
    assert!(data.join("cluster.toml").exists());

    let up = Up::start(&data, ports);
    assert!(
        !up.seen.iter().any(|l| l.contains("initialised")),
        "the second run must reuse the cluster"
    );
    assert_eq!(redis_cli(ports.0 + 1, &["GET", "kept"]), "across restarts!");
    up.interrupt();
}

/// A primary/backup cluster's servers keep their data in memory only: stopping `kv up`
/// says so rather than that the data is kept.
#[test]
fn kv_up_in_primary_backup_mode_says_on_stopping_that_the_servers_data_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pb-data");
    let ports = free_bases_for(4);
    let mut up = Up::spawn(
        &data,
        ports,
        Options {
            args: &["--mode", "primary-backup"],
            ..Options::default()
        },
    );
    up.wait_for_line("kv is up");
    assert_eq!(redis_cli(ports.0 + 1, &["SET", "k", "v"]), "OK");
    let printed = up.interrupt().join("\n");
    assert!(!printed.contains("data kept"), "{printed}");
    assert!(printed.contains("the servers' data is gone"), "{printed}");
}

/// `kv up` follows `kv grow`: it starts the new nodes and restarts the running ones one at a
/// time, so after `kv admin join` the new group serves its shards — with the data written
/// before, and the cluster answering throughout.
#[test]
fn kv_up_starts_grown_nodes_and_restarts_the_others_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases_for(6);
    let cluster = data.join("cluster.toml");
    let kv = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_kv"))
            .args(args)
            .arg("--cluster")
            .arg(&cluster)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kv {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let mut up = Up::start(&data, ports);
    for i in 0..50 {
        assert_eq!(
            redis_cli(
                ports.0 + (i % 3),
                &["SET", &format!("k{i}"), &format!("v{i}")]
            ),
            "OK"
        );
    }
    let grown = kv(&["grow", "--nodes", "3"]);
    assert!(
        grown.contains("added group 103 on nodes 3, 4, 5"),
        "{grown}"
    );
    for id in 0..3 {
        up.wait_for_line(&format!("node {id} restarted with the new cluster file"));
    }
    up.wait_for_line("node 5 started");
    let joined = kv(&["admin", "join", "103"]);
    assert!(joined.contains("group 103 joined"), "{joined}");
    let query = kv(&["admin", "query"]);
    assert!(query.contains("group 103:"), "{query}");
    // Every key, read through a new node, whichever group holds it now.
    for i in 0..50 {
        assert_eq!(
            redis_cli(ports.0 + 4, &["GET", &format!("k{i}")]),
            format!("v{i}")
        );
    }
    let printed = up.interrupt();
    assert!(
        !printed.iter().any(|l| l.contains("did not stop")),
        "{}",
        printed.join("\n")
    );
}

/// A terminal's Ctrl-C signals the whole process group: the nodes exit on it as well as
/// `kv up`, which must take their exits for the stop they are — no node reported as
/// crashed or restarted — and exit 0 with every node gone.
#[test]
fn ctrl_c_to_the_process_group_stops_the_nodes_without_reporting_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases();
    let mut up = Up::spawn(
        &data,
        ports,
        Options {
            own_group: true,
            ..Options::default()
        },
    );
    up.wait_for_line("kv is up");
    let nodes = up.nodes(3);
    let _cleanup = KillOnDrop(nodes.clone());
    // Every node serves, so each has its signal handlers in place.
    for i in 0..3 {
        assert_eq!(redis_cli(ports.0 + i, &["PING"]), "PONG");
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the group is the one `kv up`
    // leads (it was started as its own group's leader and not yet reaped).
    let sent = unsafe { libc::kill(-(up.child.id() as libc::pid_t), libc::SIGINT) };
    assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
    let (status, printed) = up.wait_for_exit();
    let all = printed.join("\n");
    assert!(status.success(), "kv up exited with {status}:\n{all}");
    assert!(
        !printed
            .iter()
            .any(|l| l.contains("restart") || l.contains("exited (")),
        "a node stopping on Ctrl-C was taken for a crash:\n{all}"
    );
    assert!(all.contains("stopped; data kept"), "{all}");
    // A new cluster made from flags warns of nothing.
    assert!(!all.contains("warning"), "{all}");
    wait_exited(&nodes, "the nodes after Ctrl-C");
}

/// A second `kv up` on a directory another one is serving says so in one line and exits,
/// before printing any banner and without starting (or restarting) nodes; the first keeps
/// serving.
#[test]
fn kv_up_on_a_directory_already_served_fails_at_once_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases();
    let up = Up::start(&data, ports);
    // Every node serves, so each holds its directory's lock.
    for i in 0..3 {
        assert_eq!(redis_cli(ports.0 + i, &["PING"]), "PONG");
    }

    let second = Up::spawn(
        &data,
        ports,
        Options {
            no_ports: true,
            ..Options::default()
        },
    );
    let (status, printed) = second.wait_for_exit();
    let all = printed.join("\n");
    assert!(!status.success(), "{all}");
    assert_eq!(printed.len(), 1, "expected one line:\n{all}");
    assert!(
        printed[0].starts_with("stderr: error: ")
            && printed[0].contains("is already being served")
            && printed[0].contains("node 0"),
        "{all}"
    );
    assert_eq!(redis_cli(ports.0, &["SET", "still", "served"]), "OK");
    let printed = up.interrupt();
    assert!(
        !printed.iter().any(|l| l.contains("restart")),
        "{}",
        printed.join("\n")
    );
}

/// `kv up` killed with SIGKILL cannot stop its nodes itself: the kernel does (each got
/// SIGTERM as its parent died), so none is left holding the directory and its ports, and
/// the next `kv up` serves the directory again.
#[test]
fn nodes_exit_when_kv_up_is_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases();
    let mut up = Up::start(&data, ports);
    let nodes = up.nodes(3);
    let _cleanup = KillOnDrop(nodes.clone());
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    wait_exited(&nodes, "the nodes of a kv up killed with SIGKILL");

    let up = Up::start(&data, ports);
    assert_eq!(redis_cli(ports.0, &["PING"]), "PONG");
    up.interrupt();
}

/// Flags that shape a new cluster do nothing to an existing one: `kv up` names the ones
/// given in one warning line, and runs the cluster as its file says.
#[test]
fn init_flags_given_for_an_existing_cluster_get_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kv-data");
    let ports = free_bases();
    let init = Command::new(env!("CARGO_BIN_EXE_kv"))
        .arg("init")
        .arg("--dir")
        .arg(&data)
        .args(["--resp-port", &ports.0.to_string()])
        .args(["--peer-port", &ports.1.to_string()])
        .args(["--admin-port", &ports.2.to_string()])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // `Up` passes the three port flags too.
    let mut up = Up::spawn(
        &data,
        ports,
        Options {
            args: &[
                "--redis-cluster",
                "--groups",
                "5",
                "--shards",
                "16",
                "--log-format",
                "text",
            ],
            ..Options::default()
        },
    );
    up.wait_for_line("kv is up: 3 nodes");
    let warnings: Vec<&String> = up.seen.iter().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", up.seen.join("\n"));
    assert!(
        warnings[0].starts_with("stderr: warning: ")
            && warnings[0].contains(
                "--groups, --shards, --redis-cluster, --resp-port, --peer-port, --admin-port do not apply"
            ),
        "{}",
        warnings[0]
    );
    // Neither the directory nor the log format shapes the cluster.
    assert!(
        !warnings[0].contains("--dir") && !warnings[0].contains("--log-format"),
        "{}",
        warnings[0]
    );
    // The file's 3 groups and 64 shards, not 5 and 16.
    up.wait_for_line("shard master (64 shards)");
    assert!(
        !up.seen.iter().any(|l| l.contains("group 103")),
        "{}",
        up.seen.join("\n")
    );
    up.interrupt();
}

/// `kv grow` and `kv admin move` name ranges of nodes and shards inclusively ("nodes 3–5"),
/// never in Rust's half-open `3..6`, which people read as including 6.
#[test]
fn grow_and_admin_name_node_and_shard_ranges_inclusively() {
    let dir = tempfile::tempdir().unwrap();
    let kv = |args: &[&str]| -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_kv"))
            .args(args)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let d = dir.path().join("three");
    let d = d.to_str().unwrap();
    let cluster = format!("{d}/cluster.toml");
    assert!(kv(&["init", "--dir", d]).0);
    let (ok, grown) = kv(&["grow", "--nodes", "3", "--cluster", &cluster]);
    assert!(ok, "{grown}");
    assert!(
        grown.contains("restart the running nodes 0–2 one at a time"),
        "{grown}"
    );
    assert!(grown.contains("start the new nodes 3–5 ("), "{grown}");
    assert!(!grown.contains(".."), "{grown}");
    let (ok, refused) = kv(&["admin", "move", "64", "100", "--cluster", &cluster]);
    assert!(!ok);
    assert_eq!(
        refused.trim(),
        "error: no shard 64: the cluster has shards 0–63"
    );

    // One node: named alone.
    let d = dir.path().join("one");
    let d = d.to_str().unwrap();
    let cluster = format!("{d}/cluster.toml");
    assert!(kv(&["init", "--dir", d, "--nodes", "1", "--replicas", "1"]).0);
    let (ok, grown) = kv(&[
        "grow",
        "--nodes",
        "1",
        "--replicas",
        "1",
        "--cluster",
        &cluster,
    ]);
    assert!(ok, "{grown}");
    assert!(grown.contains("restart the running node 0 one"), "{grown}");
    assert!(grown.contains("start the new node 1 ("), "{grown}");
}
