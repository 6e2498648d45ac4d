//! `kv bench`: closed-loop load against a cluster through the native protocol. Each client
//! is its own at-most-once identity with one operation outstanding; the tool reports
//! throughput and latency percentiles over the measured window.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use kv_engine::kv::Op;
use kv_server::client::ClientOptions;

use kv_client::any::{AnyClient, Shared};

/// How long one op may take before it counts as an error.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
use kv_server::config::ClusterConfig;

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
    let config = ClusterConfig::load(&args.cluster)?;
    let shared = Shared::new(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let warmup = Duration::from_secs(1);
    let window = Duration::from_secs(args.duration);
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                let value = value.clone();
                let mut client = AnyClient::new(&config, &shared, i, ClientOptions::default());
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
                        let key = Bytes::from(format!("bench-{:08}", rng % keys));
                        let op = if (rng >> 32) % 100 < reads {
                            Op::Get { key }
                        } else {
                            Op::Put {
                                key,
                                value: value.clone(),
                            }
                        };
                        let began = Instant::now();
                        let result = client.execute(op, CALL_DEADLINE).await;
                        if start.elapsed() >= warmup {
                            match result {
                                Ok(_) => outcome
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
    println!(
        "clients={} duration={}s value_size={}B reads={}%",
        args.clients, args.duration, args.value_size, args.reads
    );
    println!(
        "ops/s: {:.0}   p50: {:.2} ms   p99: {:.2} ms   p999: {:.2} ms   errors: {}",
        ops as f64 / window.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        errors
    );
    Ok(())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
