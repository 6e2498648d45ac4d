//! `kv`: the command-line tool of kv, a persistent, Paxos-replicated, sharded key-value
//! store (or, with `--mode primary-backup`, a view service and primary/backup servers). One
//! binary: `kv up` runs a whole local cluster, `kv node` one node, `kv get|put|append|del`
//! is the client, `kv admin` administers, `kv bench` loads a cluster, `kv mapreduce` runs
//! batch jobs.

/// Prints a line to stdout as `println!` does, except that a closed pipe (`kv admin status
/// | head`) ends the process quietly instead of panicking.
macro_rules! out {
    () => {
        $crate::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

mod admin;
mod bench;
mod demo;
mod up;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc instead of the system allocator: a write allocates and frees many small
/// buffers (frames, batches, map nodes), and glibc's malloc and free were 6–7% of a node's
/// CPU. With it, 1 group on 3 local nodes carried 14% more puts at 15% less node CPU per
/// put (`scripts/bench-cpu-per-op.sh`; README, sharded bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kv_client::any::{AnyClient, Shared};
use kv_engine::kv::{Op, Reply};
use kv_server::client::ClientOptions;
use kv_server::config::{ClusterConfig, CLUSTER_FILE};

#[derive(Parser)]
#[command(
    name = "kv",
    version,
    about = "kv: a persistent, Paxos-replicated key-value store",
    long_about = "kv: a persistent, Paxos-replicated key-value store.\n\n\
        Start a local 3-node cluster with `kv up`, then talk to it with redis-cli \
        (`redis-cli -p 6380`) or with `kv get/put/append/del --cluster kv-data/cluster.toml`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a complete local cluster (init if needed), one process per node; Ctrl-C stops it.
    Up {
        #[command(flatten)]
        layout: up::UpArgs,
        /// The nodes' log format (see `kv node --log-format`).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Write DIR/cluster.toml and DIR/cluster.secret (mode 0600), and stamp each node's data
    /// directory.
    Init {
        #[command(flatten)]
        layout: up::UpArgs,
        /// Host every node binds.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
    },
    /// Create the cluster secret (cluster.secret, mode 0600, beside the cluster file) of a
    /// cluster made before secrets; copy it to the cluster's other machines, then restart
    /// its nodes. Refuses to replace a secret that is there.
    Secret {
        /// The cluster file.
        #[arg(long, default_value = "./kv-data/cluster.toml")]
        cluster: PathBuf,
    },
    /// Add a KV group to a sharded cluster, on new nodes (appended to the cluster file, their
    /// directories stamped) or on the existing ones; then restart the running nodes one at
    /// a time, start the new ones, and `kv admin join GID`.
    Grow {
        /// The cluster file.
        #[arg(long, default_value = "./kv-data/cluster.toml")]
        cluster: PathBuf,
        /// New nodes to add (0: put the group on the existing nodes).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Replicas of the new group.
        #[arg(long, default_value_t = 3)]
        replicas: u32,
    },
    /// Run one node of a cluster on its data directory.
    Node {
        /// The cluster file.
        #[arg(long, default_value = "./kv-data/cluster.toml")]
        cluster: PathBuf,
        /// This node's id.
        #[arg(long)]
        id: u32,
        /// How the node writes its log to stderr: `text` for people, `json` (one object a
        /// line, with `timestamp`, `level`, `target` and `fields`) for log collectors.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Threads that run the node's network and replicas. With 1 everything runs on one
        /// thread, where a message from the network reaches a replica by a function call
        /// rather than a cross-thread wake-up; more let a sharded node's replicas run in
        /// parallel. Default: 1 for an unsharded or primary/backup node (one replica), one
        /// per CPU for a sharded node. `kv up`, whose nodes share one machine, gives each
        /// sharded node its share of the CPUs.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: Option<u16>,
    },
    /// Read a key.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Append to a key (creating it if missing); prints the new length.
    Append {
        /// The key.
        key: String,
        /// The bytes to append.
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key; prints 1 if it existed, else 0.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Administer a cluster.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Closed-loop load against a cluster: prints ops/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// A durable single-node engine session on a data directory (no cluster needed).
    Demo(demo::DemoArgs),
    /// MapReduce jobs: `run` one with local workers, or its `coordinator` and `worker`s.
    Mapreduce(kv_mapreduce::cli::MapReduceArgs),
}

/// A node's log format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object a line.
    Json,
}

impl LogFormat {
    /// The flag's value, as a node's command line takes it.
    pub fn arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Which cluster a client command talks to.
#[derive(clap::Args)]
struct Target {
    /// The cluster file.
    #[arg(long, default_value = "./kv-data/cluster.toml")]
    cluster: PathBuf,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> std::process::ExitCode {
    // The matches as well as the parsed command: `kv up` tells flags given from defaults.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line; a backtrace (even under
            // RUST_BACKTRACE=1) would bury what went wrong in a user's mistake.
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes one line to stdout (see `out!`): a reader that went away ends the process with
/// success, as for other Unix tools; any other failure to write ends it with an error.
fn print_line(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// An error and its causes joined by `: `, skipping a cause whose text the message
/// already carries (many errors print their source themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Init { layout, host } => {
            let dir = layout.dir.clone();
            let path = dir.join(CLUSTER_FILE);
            if path.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a cluster",
                    path.display()
                );
            }
            let config = ClusterConfig::init(&dir, &layout.init_options(host))?;
            out!("wrote {} ({})", path.display(), up::describe(&config));
            Ok(())
        }
        Command::Up { layout, log_format } => {
            let init_flags = matches
                .subcommand_matches("up")
                .map(up::init_flags_given)
                .unwrap_or_default();
            up::run(layout, log_format, &init_flags)
        }
        Command::Secret { cluster } => {
            let config = ClusterConfig::load(&cluster)?;
            let path = config.secret_path();
            kv_server::auth::create_secret(&path)?;
            out!("wrote {} (mode 0600)", path.display());
            out!("next: copy it, at mode 0600, beside the cluster file on every machine of the");
            out!("      cluster, then restart the nodes");
            Ok(())
        }
        Command::Grow {
            cluster,
            nodes,
            replicas,
        } => {
            let mut config = ClusterConfig::load(&cluster)?;
            let before = config.nodes.len() as u32;
            let gid = config.grow(&cluster, nodes, replicas)?;
            let group = config.groups.last().expect("just added");
            let on: Vec<String> = group.nodes.iter().map(|n| n.to_string()).collect();
            out!(
                "added group {gid} on nodes {} to {}",
                on.join(", "),
                cluster.display()
            );
            out!(
                "next: restart the running {} one at a time (they read the file at start;",
                nodes_named(0, before - 1)
            );
            out!("      a running `kv up` does this, and starts the new nodes, by itself),");
            if nodes > 0 {
                out!(
                    "      start the new {} (kv node --cluster {} --id N),",
                    nodes_named(before, config.nodes.len() as u32 - 1),
                    cluster.display()
                );
            }
            out!(
                "      then: kv admin join {gid} --cluster {}",
                cluster.display()
            );
            Ok(())
        }
        Command::Node {
            cluster,
            id,
            log_format,
            threads,
        } => run_node(cluster, id, log_format, threads),
        Command::Get { key, target } => client_op(target, Op::Get { key: key.into() }),
        Command::Put { key, value, target } => client_op(
            target,
            Op::Put {
                key: key.into(),
                value: value.into(),
            },
        ),
        Command::Append { key, value, target } => client_op(
            target,
            Op::Append {
                key: key.into(),
                value: value.into(),
            },
        ),
        Command::Del { key, target } => client_op(target, Op::Delete { key: key.into() }),
        Command::Admin { command } => admin::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Mapreduce(args) => Ok(kv_mapreduce::cli::run(args)?),
    }
}

/// Nodes `first` to `last` (inclusive) in words: `node 3`, or `nodes 3–5`.
fn nodes_named(first: u32, last: u32) -> String {
    let ids = kv_server::config::span(first, last);
    if first == last {
        format!("node {ids}")
    } else {
        format!("nodes {ids}")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn client_op(target: Target, op: Op) -> Result<()> {
    let config = ClusterConfig::load(&target.cluster)?;
    let options = ClientOptions {
        deadline: Duration::from_secs(target.timeout),
        ..ClientOptions::default()
    };
    let deadline = options.deadline;
    let mut client = AnyClient::new(&config, &Shared::new(&config)?, 0, options);
    let reply = runtime()?
        .block_on(client.execute(op, deadline))
        .map_err(|e| anyhow::anyhow!(e))?;
    match reply {
        Reply::Value(Some(value)) => out!("{}", String::from_utf8_lossy(&value)),
        Reply::Value(None) => {
            eprintln!("(nil)");
            std::process::exit(1);
        }
        Reply::Ok => out!("OK"),
        Reply::Appended(len) => out!("{len}"),
        Reply::Deleted(existed) => out!("{}", existed as u8),
        Reply::TooLarge(len) => bail!(
            "refused: the value would be {len} bytes, over the limit of {} bytes; nothing was written",
            kv_engine::kv::VALUE_BYTES_MAX
        ),
        other => bail!("unexpected reply {other:?}"),
    }
    Ok(())
}

/// Logs to stderr in `format`, at the level `RUST_LOG` says (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn run_node(cluster: PathBuf, id: u32, log_format: LogFormat, threads: Option<u16>) -> Result<()> {
    init_logging(log_format);
    let config = ClusterConfig::load(&cluster)?;
    // On one thread, a message handed from a network task to a core is a function call,
    // not a cross-thread wake-up; the engine's group-commit and snapshot threads are the
    // only others. On this project's 2-vCPU machine an unsharded node carried ~20% more
    // puts/s than on a multi-threaded runtime (`kv bench`, 50 clients). A sharded node
    // runs a core per replica it hosts, which a multi-threaded runtime runs in parallel.
    let threads = threads.map_or_else(|| default_threads(&config), usize::from);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        if config.is_sharded() {
            kv_server::sharded::run(config, id, stop_rx, Default::default()).await
        } else if config.is_primary_backup() {
            kv_server::pb::run(config, id, stop_rx, Default::default()).await
        } else {
            kv_server::replica::run(config, id, stop_rx).await
        }
    })
    .map_err(|e| anyhow::anyhow!(e))
}

/// A node's threads unless `--threads` says: see `kv node --threads`.
pub fn default_threads(config: &ClusterConfig) -> usize {
    if config.is_sharded() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
