//! `kv bench`: closed-loop load with one operation outstanding per client; the tool
//! reports throughput and latency percentiles over the measured window.
//!
//! The load goes to a kv cluster through the native protocol (each client its own
//! at-most-once identity), or, with `--target`, to servers of another protocol: RESP
//! (Redis, or kv's RESP front door) or etcd's gRPC API, the clients spread over the
//! addresses round-robin. One generator for all three makes their figures comparable
//! (`scripts/compare.sh`).

mod etcd;
mod resp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kv_engine::kv::Op;
use kv_server::client::ClientOptions;

use kv_client::any::{AnyClient, Shared};

/// How long one op may take before it counts as an error.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
use kv_server::config::ClusterConfig;

/// Connections that write every key once before the run (`--prefill`).
const PREFILL_CLIENTS: usize = 32;

/// Arguments of `kv bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The cluster file.
    #[arg(long, default_value = "./kv-data/cluster.toml")]
    cluster: PathBuf,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Seconds to measure (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Percentage of operations that are reads (the rest are puts).
    #[arg(long, default_value_t = 0)]
    reads: u8,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Load other servers instead of the cluster file's: `redis://HOST:PORT[,HOST:PORT...]`
    /// (RESP SET and GET, to Redis or to kv's RESP ports) or `etcd://HOST:PORT[,...]`
    /// (etcd's gRPC Put and linearizable Range); clients spread over the addresses.
    #[arg(long)]
    target: Option<String>,
    /// Write every key once before the warm-up (so reads find values).
    #[arg(long)]
    prefill: bool,
    /// Print the result as one CSV line (clients,reads,ops_per_s,p50_ms,p99_ms,p999_ms,errors).
    #[arg(long)]
    csv: bool,
}

/// Where the load goes.
#[derive(Clone)]
enum Target {
    Native(Box<(ClusterConfig, Shared)>),
    Resp(Vec<SocketAddr>),
    Etcd(Vec<SocketAddr>),
}

impl Target {
    fn parse(args: &BenchArgs) -> Result<Target> {
        let Some(url) = &args.target else {
            let config = ClusterConfig::load(&args.cluster)?;
            let shared = Shared::new(&config)?;
            return Ok(Target::Native(Box::new((config, shared))));
        };
        let (scheme, list) = url
            .split_once("://")
            .with_context(|| format!("--target {url}: expected redis://... or etcd://..."))?;
        let addrs = list
            .split(',')
            .map(|a| {
                a.parse()
                    .with_context(|| format!("--target: bad address {a:?}"))
            })
            .collect::<Result<Vec<SocketAddr>>>()?;
        match scheme {
            "redis" => Ok(Target::Resp(addrs)),
            "etcd" => Ok(Target::Etcd(addrs)),
            _ => bail!("--target {url}: the scheme is redis or etcd"),
        }
    }

    /// Client number `index`'s connection (made on its first op).
    fn driver(&self, index: usize) -> Driver {
        match self {
            Target::Native(native) => Driver::Native(Box::new(AnyClient::new(
                &native.0,
                &native.1,
                index,
                ClientOptions::default(),
            ))),
            Target::Resp(addrs) => Driver::Resp(addrs[index % addrs.len()], None),
            Target::Etcd(addrs) => Driver::Etcd(addrs[index % addrs.len()], None),
        }
    }
}

/// One closed-loop client's connection. A RESP or etcd connection that fails is dropped
/// and made again by the next op.
enum Driver {
    Native(Box<AnyClient>),
    Resp(SocketAddr, Option<resp::Connection>),
    Etcd(SocketAddr, Option<etcd::Connection>),
}

impl Driver {
    async fn execute(&mut self, op: Op) -> Result<(), String> {
        match self {
            Driver::Native(client) => client.execute(op, CALL_DEADLINE).await.map(drop),
            Driver::Resp(addr, slot) => call(*addr, slot, &op).await,
            Driver::Etcd(addr, slot) => call(*addr, slot, &op).await,
        }
    }
}

/// A connection of another protocol than kv's native one.
trait Connection: Sized {
    async fn connect(addr: SocketAddr) -> Result<Self, String>;
    async fn execute(&mut self, op: &Op) -> Result<(), String>;
}

/// A TCP connection to `addr` with Nagle's algorithm off (one small request at a time).
async fn connect_tcp(addr: SocketAddr) -> Result<tokio::net::TcpStream, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Runs `op` on the connection in `slot`, connecting first if there is none; a connection
/// that fails is dropped.
async fn call<C: Connection>(
    addr: SocketAddr,
    slot: &mut Option<C>,
    op: &Op,
) -> Result<(), String> {
    let connection = match slot {
        Some(connection) => connection,
        None => slot.insert(C::connect(addr).await?),
    };
    let result = connection.execute(op).await;
    if result.is_err() {
        *slot = None;
    }
    result
}

struct Outcome {
    latencies_micros: Vec<u32>,
    errors: u64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.reads > 100 {
        bail!("--reads is a percentage (0-100)");
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be positive");
    }
    let target = Target::parse(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let value = Bytes::from(vec![b'x'; args.value_size]);
    if args.prefill {
        runtime.block_on(prefill(&target, args.keys, &value))?;
    }
    let warmup = Duration::from_secs(1);
    let window = Duration::from_secs(args.duration);
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                let value = value.clone();
                let mut driver = target.driver(i);
                let (keys, reads) = (args.keys, args.reads as u64);
                tokio::spawn(async move {
                    let mut rng =
                        0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    let mut outcome = Outcome {
                        latencies_micros: Vec::new(),
                        errors: 0,
                    };
                    while start.elapsed() < warmup + window {
                        rng = splitmix(rng);
                        let key = key(rng % keys);
                        let op = if (rng >> 32) % 100 < reads {
                            Op::Get { key }
                        } else {
                            Op::Put {
                                key,
                                value: value.clone(),
                            }
                        };
                        let began = Instant::now();
                        let result = driver.execute(op).await;
                        if start.elapsed() >= warmup {
                            match result {
                                Ok(()) => outcome
                                    .latencies_micros
                                    .push(began.elapsed().as_micros().min(u32::MAX as u128) as u32),
                                Err(_) => outcome.errors += 1,
                            }
                        }
                    }
                    outcome
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.expect("bench client panicked"));
        }
        all
    });
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let mut latencies: Vec<u32> = outcomes
        .into_iter()
        .flat_map(|o| o.latencies_micros)
        .collect();
    latencies.sort_unstable();
    let ops = latencies.len();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((ops as f64 * p).ceil() as usize).clamp(1, ops) - 1;
        latencies[i] as f64 / 1000.0
    };
    let rate = ops as f64 / window.as_secs_f64();
    if args.csv {
        out!(
            "{},{},{:.0},{:.3},{:.3},{:.3},{}",
            args.clients,
            args.reads,
            rate,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            errors
        );
        return Ok(());
    }
    out!(
        "clients={} duration={}s value_size={}B reads={}%",
        args.clients,
        args.duration,
        args.value_size,
        args.reads
    );
    out!(
        "ops/s: {:.0}   p50: {:.2} ms   p99: {:.2} ms   p999: {:.2} ms   errors: {}",
        rate,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        errors
    );
    Ok(())
}

/// The name of key number `n`.
fn key(n: u64) -> Bytes {
    Bytes::from(format!("bench-{n:08}"))
}

/// Writes every key once, through [`PREFILL_CLIENTS`] connections; fails on the first
/// error (a run's reads should not meet missing keys).
async fn prefill(target: &Target, keys: u64, value: &Bytes) -> Result<()> {
    let clients = PREFILL_CLIENTS as u64;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut driver = target.driver(i as usize);
            let value = value.clone();
            tokio::spawn(async move {
                for n in (i..keys).step_by(clients as usize) {
                    let op = Op::Put {
                        key: key(n),
                        value: value.clone(),
                    };
                    driver.execute(op).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("prefill client panicked")
            .map_err(|e| anyhow::anyhow!("prefill: {e}"))?;
    }
    Ok(())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
