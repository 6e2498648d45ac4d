//! `kv up`: the main job. Initialises a local cluster if the directory has none, starts
//! every node as its own child process (`kv node`), prints how to connect, and on Ctrl-C
//! (or SIGTERM) stops them all gracefully. Run it again and the data is still there.
//!
//! A node that exits unexpectedly is reported and restarted after a short pause, like a
//! process supervisor would; its data directory carries it across the restart. A node that
//! exits because the user is stopping `kv up` (a terminal's Ctrl-C reaches every process
//! of the group) is not: see [`exit_is_a_stop`]. On Linux the nodes die with `kv up`
//! (they get SIGTERM when it exits, even by SIGKILL), so none is left holding its
//! directory and ports.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kv_server::config::{count, ClusterConfig, InitOptions, Mode, CLUSTER_FILE};

/// Where a local cluster lives and how a new one is laid out: the arguments of `kv up`,
/// and (with a host) of `kv init`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for the cluster file and every node's data.
    #[arg(long, default_value = "./kv-data")]
    pub dir: PathBuf,
    /// How a new cluster replicates: `paxos` (groups of Paxos replicas), or
    /// `primary-backup` (a view service on node 0 and `--replicas` primary/backup servers
    /// after it; `--nodes`, `--groups`, `--shards` and `--redis-cluster` do not apply).
    #[arg(long, default_value_t = Mode::Paxos)]
    pub mode: Mode,
    /// Number of nodes (processes) of a new sharded cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Number of KV groups of a new cluster; 0 makes one unsharded group on `--replicas`
    /// nodes, without a shard master.
    #[arg(long, default_value_t = 3)]
    pub groups: u32,
    /// Number of replicas of each group (and of the shard master) of a new cluster; in
    /// primary/backup mode, the number of servers (a primary, a backup, and spares).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Number of shards of a new sharded cluster (Redis Cluster's 16384 slots are split
    /// into this many contiguous ranges).
    #[arg(long, default_value_t = 64)]
    pub shards: u32,
    /// Speak the Redis Cluster protocol on RESP (CLUSTER SLOTS, MOVED, ASK), so
    /// cluster-aware clients route each key to its group's leader themselves.
    #[arg(long)]
    pub redis_cluster: bool,
    /// Password RESP clients of a new cluster must give (`AUTH`, redis-cli `-a`), kept in
    /// its cluster file as `requirepass`; without one, only loopback clients are served.
    #[arg(long, value_name = "PASSWORD")]
    pub requirepass: Option<String>,
    /// Leader leases for reads in a new cluster, in milliseconds (1–400; absent: off):
    /// a leader answers reads without first confirming that it still leads, assuming
    /// every node's clock runs within 1% of real time (`[read_lease]` in the cluster
    /// file, where the bound can be changed).
    #[arg(long, value_name = "MS")]
    pub read_lease_ms: Option<u64>,
    /// First RESP port of a new cluster (node i listens on port + i).
    #[arg(long, default_value_t = 6380)]
    pub resp_port: u16,
    /// First peer port of a new cluster.
    #[arg(long, default_value_t = 7380)]
    pub peer_port: u16,
    /// First admin (HTTP) port of a new cluster.
    #[arg(long, default_value_t = 9380)]
    pub admin_port: u16,
}

impl UpArgs {
    /// The layout of a new cluster on `host`.
    pub fn init_options(&self, host: std::net::IpAddr) -> InitOptions {
        InitOptions {
            nodes: self.nodes,
            replicas: self.replicas,
            groups: self.groups,
            shards: self.shards,
            redis_cluster: self.redis_cluster,
            mode: self.mode,
            host,
            peer_port: self.peer_port,
            resp_port: self.resp_port,
            admin_port: self.admin_port,
            cluster_id: kv_server::config::random_cluster_id(),
            requirepass: self.requirepass.clone(),
            read_lease: self.read_lease_ms.map(kv_server::config::ReadLease::new),
        }
    }
}

/// A cluster in a few words: its nodes, and its groups and shards if it is sharded.
pub fn describe(config: &ClusterConfig) -> String {
    if let Some(view_service) = config.view_service {
        return format!(
            "primary/backup: the view service on node {view_service}, {}",
            count(config.pb_servers().len() as u64, "server")
        );
    }
    match &config.master {
        None => format!(
            "{}, one unsharded group",
            count(config.nodes.len() as u64, "node")
        ),
        Some(master) => format!(
            "{}, {}, {}{}",
            count(config.nodes.len() as u64, "node"),
            count(config.groups.len() as u64, "group"),
            count(master.shards, "shard"),
            if config.redis_cluster {
                ", Redis Cluster protocol"
            } else {
                ""
            }
        ),
    }
}

/// A node that exits sooner than this after starting failed to start.
const QUICK_FAILURE: Duration = Duration::from_secs(3);
/// Consecutive failed starts of one node before `kv up` gives up.
const QUICK_FAILURES_MAX: u32 = 3;
/// How long a node gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a node's clean exit waits for `kv up`'s own SIGINT or SIGTERM before it is
/// taken for a crash (see [`exit_is_a_stop`]).
const STOP_SIGNAL_GRACE: Duration = Duration::from_millis(500);

/// The flags of `kv up` that were given on its command line (`matches` are the `up`
/// subcommand's) and only shape a new cluster: every flag of [`UpArgs`] but `--dir`.
pub fn init_flags_given(matches: &clap::ArgMatches) -> Vec<String> {
    use clap::parser::ValueSource;
    use clap::Args;
    UpArgs::augment_args(clap::Command::new("up"))
        .get_arguments()
        .filter(|arg| arg.get_id() != "dir")
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

/// `kv up`. `init_flags` are the flags given that only shape a new cluster
/// ([`init_flags_given`]): on an existing cluster they are named in a warning.
pub fn run(args: UpArgs, log_format: crate::LogFormat, init_flags: &[String]) -> Result<()> {
    let path = args.dir.join(CLUSTER_FILE);
    let config = if path.exists() {
        let config = ClusterConfig::load(&path)?;
        if !init_flags.is_empty() {
            eprintln!(
                "warning: {} already exists, so {} {} not apply (they shape a new cluster \
                 only; this one runs as its cluster file says)",
                path.display(),
                init_flags.join(", "),
                if init_flags.len() == 1 { "does" } else { "do" }
            );
        }
        config
    } else {
        let config = ClusterConfig::init(
            &args.dir,
            &args.init_options("127.0.0.1".parse().expect("literal address")),
        )?;
        out!(
            "initialised a cluster in {}: {}",
            args.dir.display(),
            describe(&config)
        );
        config
    };
    // Every node needs the cluster secret: a missing or unsafe one is said once, here,
    // rather than by each node failing to start.
    config.key()?;
    // Another `kv up` (or `kv node`) on these directories: one line, before any banner,
    // rather than nodes that fail to start and a supervisor that gives up on them.
    refuse_if_served(&config, &args.dir)?;
    let exe = std::env::current_exe().context("locating the kv binary")?;
    // The nodes share this machine: a sharded node gets its share of the CPUs (see `kv
    // node --threads`), not a thread per CPU competing with the others'.
    let threads = crate::default_threads(&config) / config.nodes.len().max(1);
    let threads = threads.max(1).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook_like::SIGINT, signal_hook_like::SIGTERM] {
        signal_hook_like::flag_on(signal, stop.clone())?;
    }

    let start = |id: u32| -> Result<Child> {
        let log = args.dir.join(format!("node-{id}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(&exe);
        command
            .args(["node", "--cluster"])
            .arg(&path)
            .args(["--id", &id.to_string()])
            .args(["--log-format", log_format.arg()])
            .args(["--threads", &threads])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        signal_hook_like::die_with_parent(&mut command);
        command
            .spawn()
            .with_context(|| format!("starting node {id}"))
    };
    let mut children: Vec<Child> = Vec::new();
    for node in &config.nodes {
        children.push(start(node.id)?);
    }

    out!(
        "kv is up: {}, data in {}",
        count(config.nodes.len() as u64, "node"),
        args.dir.display()
    );
    for node in &config.nodes {
        out!(
            "  node {}: redis-cli {}   (peer {}, metrics http://{}/metrics, log {})",
            node.id,
            redis_cli_address(node.resp),
            node.peer,
            node.admin,
            args.dir.join(format!("node-{}.log", node.id)).display()
        );
    }
    for line in crate::admin::group_lines(&config) {
        out!("  {line}");
    }
    for line in refused_everywhere(&config) {
        eprintln!("warning: {line} (in {})", path.display());
    }
    out!(
        "try:  redis-cli {} set hello world",
        redis_cli_address(config.nodes[0].resp)
    );
    if config.requirepass.is_some() {
        out!(
            "      (RESP clients authenticate: redis-cli -a PASSWORD, the requirepass in {})",
            path.display()
        );
    }
    out!("      kv get hello --cluster {}", path.display());
    out!("      kv admin status --cluster {}", path.display());
    if config.is_primary_backup() {
        out!("      kv admin view --cluster {}", path.display());
    }
    if config.is_sharded() {
        out!("      kv admin query --cluster {}", path.display());
    }
    if config.is_primary_backup() {
        out!(
            "Ctrl-C stops every node. Primary/backup servers keep the data in memory only: \
             restarting them all loses it (the view service then reports stuck: true)."
        );
    } else {
        out!(
            "Ctrl-C stops every node; `kv up --dir {}` starts them again on the same data.",
            args.dir.display()
        );
    }

    let mut restarts: Vec<Option<Instant>> = vec![None; children.len()];
    let mut started_at: Vec<Instant> = vec![Instant::now(); children.len()];
    let mut quick_failures: Vec<u32> = vec![0; children.len()];
    let mut failed: Option<String> = None;
    let mut config = config;
    let mut modified = modified_at(&path);
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) && failed.is_none() {
        std::thread::sleep(Duration::from_millis(100));
        // The cluster file grew (`kv grow`): start the new nodes, and restart the running
        // ones one at a time so they learn the new groups, each back and ready before the
        // next goes down, so the cluster keeps serving.
        if checked.elapsed() >= FILE_CHECK_INTERVAL {
            checked = Instant::now();
            let now_modified = modified_at(&path);
            if now_modified != modified {
                modified = now_modified;
                match ClusterConfig::load(&path) {
                    Err(e) => out!("the cluster file changed but does not load: {e}"),
                    Ok(grown) => {
                        let old_nodes = children.len();
                        let regroup = grown.groups != config.groups;
                        config = grown;
                        if regroup {
                            for id in 0..old_nodes {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                                restart_and_wait(&mut children[id], id as u32, &config, &start)?;
                                started_at[id] = Instant::now();
                                out!("node {id} restarted with the new cluster file");
                            }
                        }
                        for node in config.nodes.iter().skip(old_nodes) {
                            children.push(start(node.id)?);
                            restarts.push(None);
                            started_at.push(Instant::now());
                            quick_failures.push(0);
                            out!(
                                "node {} started: redis-cli {} (log {})",
                                node.id,
                                redis_cli_address(node.resp),
                                args.dir.join(format!("node-{}.log", node.id)).display()
                            );
                        }
                    }
                }
            }
        }
        for (id, child) in children.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(due) = restarts[id] {
                if Instant::now() >= due {
                    *child = start(id as u32)?;
                    started_at[id] = Instant::now();
                    restarts[id] = None;
                    out!("node {id} restarted");
                }
                continue;
            }
            if let Some(status) = child.try_wait()? {
                if exit_is_a_stop(&stop, status) {
                    break;
                }
                // A node that dies right after starting cannot start (a port in use, its
                // directory locked by another kv, a bad cluster file): don't spin on it.
                if started_at[id].elapsed() < QUICK_FAILURE {
                    quick_failures[id] += 1;
                } else {
                    quick_failures[id] = 0;
                }
                if quick_failures[id] >= QUICK_FAILURES_MAX {
                    failed = Some(format!(
                        "node {id} failed {QUICK_FAILURES_MAX} times right after starting ({status}); the end of its log:\n{}",
                        log_tail(&args.dir.join(format!("node-{id}.log")), 8)
                    ));
                    break;
                }
                out!("node {id} exited ({status}); restarting it in 1 s (see its log)");
                restarts[id] = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    out!("stopping {}", count(children.len() as u64, "node"));
    for child in &mut children {
        // Not one already reaped (exited, or waiting to be restarted): its pid may be
        // another process's by now.
        if child.try_wait()?.is_none() {
            signal_hook_like::terminate(child.id());
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (id, child) in children.iter_mut().enumerate() {
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                out!("node {id} did not stop in {STOP_GRACE:?}; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if config.is_primary_backup() {
        out!(
            "stopped; the view service's view is kept in {}, the servers' data is gone (they \
             held it in memory only: started again, the cluster reports stuck: true once it \
             had a primary)",
            args.dir.display()
        );
    } else {
        out!("stopped; data kept in {}", args.dir.display());
    }
    match failed {
        Some(reason) => anyhow::bail!(reason),
        None => Ok(()),
    }
}

/// Whether a node's exit is part of the user stopping `kv up` rather than a crash: true
/// once `kv up` itself got SIGINT or SIGTERM (`stop`). A terminal's Ctrl-C signals the
/// whole process group, so the nodes get it too and exit cleanly. The kernel marks the
/// signal pending on every process of the group before any of them can finish exiting,
/// and runs this process's handler before the system call that reaped the node returns,
/// so by then `stop` is set. A signal sent to each process on its own (`pkill -INT kv`)
/// may reach a node first: a clean exit (status 0, or ended by SIGINT or SIGTERM) waits
/// up to [`STOP_SIGNAL_GRACE`] for `kv up`'s own signal before it counts as a crash.
/// redis-cli's options to reach a RESP address: `-p PORT` where redis-cli's default host
/// (127.0.0.1) reaches it — a listener on 127.0.0.1 or on every address — else
/// `-h HOST -p PORT`.
fn redis_cli_address(resp: std::net::SocketAddr) -> String {
    let ip = resp.ip();
    if ip == std::net::IpAddr::from([127, 0, 0, 1]) || ip.is_unspecified() {
        format!("-p {}", resp.port())
    } else {
        format!("-h {} -p {}", ip, resp.port())
    }
}

/// Nodes whose RESP port protected mode shuts to every client: it listens on one address
/// that is not loopback (so no client reaches it from loopback), with protected mode on
/// and no password. One line per such node.
fn refused_everywhere(config: &ClusterConfig) -> Vec<String> {
    if config.requirepass.is_some() || !config.protected_mode {
        return Vec::new();
    }
    config
        .nodes
        .iter()
        .filter(|node| {
            let ip = node.resp.ip();
            !ip.is_loopback() && !ip.is_unspecified()
        })
        .map(|node| {
            format!(
                "node {} serves RESP on {} only, and protected mode (on, with no \
                 requirepass) refuses every client not on loopback with -DENIED; set \
                 requirepass or protected_mode = false in the cluster file",
                node.id, node.resp
            )
        })
        .collect()
}

fn exit_is_a_stop(stop: &AtomicBool, status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let clean = status.success() || matches!(status.signal(), Some(libc::SIGINT | libc::SIGTERM));
    let deadline = Instant::now() + STOP_SIGNAL_GRACE;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        if !clean || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Refuses to start a cluster whose node directories a running process holds (each
/// node's lock file, see [`kv_server::run::LOCK_FILE`]), naming the first. The locks are
/// only tried, and released at once.
fn refuse_if_served(config: &ClusterConfig, dir: &std::path::Path) -> Result<()> {
    for node in &config.nodes {
        let lock_path = config.data_dir(node.id).join(kv_server::run::LOCK_FILE);
        // No lock file: no node ever ran there.
        let Ok(lock) = OpenOptions::new().read(true).open(&lock_path) else {
            continue;
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is already being served: node {}'s directory {} is in use by another kv \
                 process (another `kv up` on it?)",
                dir.display(),
                node.id,
                config.data_dir(node.id).display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()))
            }
        }
    }
    Ok(())
}

/// How often `kv up` looks at the cluster file for nodes and groups `kv grow` added.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a restarted node gets to be ready again before `kv up` moves on.
const READY_WAIT: Duration = Duration::from_secs(60);

/// When the file was last modified (`None` if it cannot be read).
fn modified_at(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Stops node `id` gracefully, starts it again, and waits until its admin endpoint says
/// it is ready (every replica it hosts), for at most [`READY_WAIT`].
fn restart_and_wait(
    child: &mut Child,
    id: u32,
    config: &ClusterConfig,
    start: &dyn Fn(u32) -> Result<Child>,
) -> Result<()> {
    signal_hook_like::terminate(child.id());
    let deadline = Instant::now() + STOP_GRACE;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    *child = start(id)?;
    let Some(node) = config.node(id) else {
        return Ok(());
    };
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline && child.try_wait()?.is_none() {
        if is_ready(node.admin) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out!("node {id} is not ready after its restart; going on");
    Ok(())
}

/// Whether a node's admin endpoint answers `/readyz` with 200.
fn is_ready(admin: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: kv\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The last `lines` lines of a log file.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The two signal operations `kv up` needs, on libc.
mod signal_hook_like {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    pub const SIGINT: i32 = libc::SIGINT;
    pub const SIGTERM: i32 = libc::SIGTERM;

    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

    extern "C" fn on_signal(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        if let Some(flag) = FLAG.get() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Sets `flag` when `signal` arrives (one flag for the whole process).
    pub fn flag_on(signal: i32, flag: Arc<AtomicBool>) -> std::io::Result<()> {
        let _ = FLAG.set(flag);
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: `on_signal` only performs an atomic store through a `OnceLock` that was
        // initialised before the handler is installed, which is async-signal-safe; the
        // handler address is a valid `extern "C" fn(c_int)` for the life of the process.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the child `command` starts get SIGTERM when this process exits, however it
    /// exits (Linux's parent-death signal), so that a `kv up` killed with SIGKILL leaves
    /// no node running; a no-op elsewhere. The signal follows the thread that spawns the
    /// child, which for `kv up` is its main thread: it lives as long as the process.
    pub fn die_with_parent(command: &mut std::process::Command) {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            let parent = std::process::id();
            let hook = move || {
                // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid(2) are async-signal-safe
                // system calls with no memory arguments, so they are sound between fork
                // and exec; the closure allocates nothing (the error is a raw OS code).
                unsafe {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died between fork and prctl, before there was
                    // anything to deliver the signal for: then the child is already
                    // someone else's, and must not start.
                    if libc::getppid() as u32 != parent {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                Ok(())
            };
            // SAFETY: the hook runs in the forked child before exec and only makes the
            // async-signal-safe calls described above.
            unsafe {
                command.pre_exec(hook);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = command;
    }

    /// Sends SIGTERM to a child process.
    pub fn terminate(pid: u32) {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child's id,
        // which we have not reaped yet, so it cannot refer to an unrelated process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redis_cli_address, refused_everywhere};

    #[test]
    fn redis_cli_is_told_the_host_unless_its_default_reaches_the_node() {
        let at = |text: &str| redis_cli_address(text.parse().unwrap());
        assert_eq!(at("127.0.0.1:6380"), "-p 6380");
        assert_eq!(at("0.0.0.0:6380"), "-p 6380");
        assert_eq!(at("[::]:6380"), "-p 6380");
        assert_eq!(at("192.0.2.2:6380"), "-h 192.0.2.2 -p 6380");
        assert_eq!(at("127.0.0.2:6380"), "-h 127.0.0.2 -p 6380");
        assert_eq!(at("[::1]:6380"), "-h ::1 -p 6380");
    }

    #[test]
    fn a_node_protected_mode_shuts_to_every_client_is_warned_of() {
        let text = "cluster_id = 1\n[[node]]\nid = 0\npeer = \"192.0.2.2:7380\"\nresp = \"192.0.2.2:6380\"\nadmin = \"192.0.2.2:9380\"\ndir = \"d\"\n[[node]]\nid = 1\npeer = \"127.0.0.1:7381\"\nresp = \"127.0.0.1:6381\"\nadmin = \"127.0.0.1:9381\"\ndir = \"e\"\n";
        let path = std::path::Path::new("cluster.toml");
        let config = kv_server::config::ClusterConfig::parse(text, path).unwrap();
        let warned = refused_everywhere(&config);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].starts_with("node 0 serves RESP on 192.0.2.2:6380 only"));
        for extra in ["requirepass = \"pw\"\n", "protected_mode = false\n"] {
            let config =
                kv_server::config::ClusterConfig::parse(&format!("{extra}{text}"), path).unwrap();
            assert!(refused_everywhere(&config).is_empty(), "{extra}");
        }
    }
}
