//! The whole stack under criterion: `cargo bench --bench cluster`.
//!
//! A real cluster of 3 `kv node` processes on loopback, shaped as `kv up` makes it (the
//! shard master and 3 KV groups on every node, 64 shards), each node with its own data
//! directory on the real disk — every write is fsynced by a majority before its answer —
//! driven by the native client (the shard clerk, which goes to each group's leader):
//!
//! - `cluster/put` and `cluster/get`: one client, one op at a time (latency; 100 B values).
//! - `cluster/put_16_clients` and `cluster/get_16_clients`: 16 clients, one op outstanding
//!   each, sharing the iterations; criterion's elements/s is the cluster's throughput.
//!
//! Each group is started once per run and takes about a minute with the defaults here.
//! The figures include the clients' and the nodes' processes sharing this machine's
//! cores. Data lives in the system temp dir (`TMPDIR` moves it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kv_client::any::{AnyClient, Shared};
use kv_engine::kv::Op;
use kv_server::client::ClientOptions;

use common::{Cluster, Shape};

/// Distinct keys the benches write and read.
const KEYS: u64 = 10_000;
/// Value size, in bytes (as `kv bench` and the comparison use).
const VALUE_BYTES: usize = 100;
/// Concurrent clients of the throughput benches.
const CLIENTS: usize = 16;
/// How long one op may take before the bench fails (a hang guard).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The cluster `kv up` starts by default.
fn start_cluster() -> Cluster {
    Cluster::start_sharded(
        3,
        Shape {
            replicas: 3,
            groups: 3,
            shards: 64,
            redis_cluster: false,
            mode: kv_server::config::Mode::Paxos,
        },
    )
}

fn key(n: u64) -> Bytes {
    Bytes::from(format!("bench-{:08}", n % KEYS))
}

fn put(n: u64) -> Op {
    Op::Put {
        key: key(n),
        value: Bytes::from(vec![b'x'; VALUE_BYTES]),
    }
}

struct Bench {
    _cluster: Cluster,
    runtime: tokio::runtime::Runtime,
    clients: Vec<AnyClient>,
}

impl Bench {
    fn start() -> Bench {
        let cluster = start_cluster();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Shared::new(&cluster.config).expect("the cluster secret");
        let clients = (0..CLIENTS)
            .map(|i| AnyClient::new(&cluster.config, &shared, i, ClientOptions::default()))
            .collect();
        let mut bench = Bench {
            _cluster: cluster,
            runtime,
            clients,
        };
        // Every key holds a value, so gets read data.
        bench.run_concurrently(KEYS, put);
        bench
    }

    /// `ops` operations (`make(n)` for n in 0..ops) shared by all the clients, one
    /// outstanding each; the time they took.
    fn run_concurrently(&mut self, ops: u64, make: fn(u64) -> Op) -> Duration {
        let began = Instant::now();
        let per_client = ops.div_ceil(CLIENTS as u64);
        let tasks: Vec<_> = self
            .clients
            .drain(..)
            .enumerate()
            .map(|(i, mut client)| {
                let first = i as u64 * per_client;
                let last = (first + per_client).min(ops);
                self.runtime.spawn(async move {
                    for n in first..last {
                        client
                            .execute(make(n), CALL_DEADLINE)
                            .await
                            .expect("op failed");
                    }
                    client
                })
            })
            .collect();
        for task in tasks {
            let client = self.runtime.block_on(task).expect("client task");
            self.clients.push(client);
        }
        began.elapsed()
    }

    /// One op by the first client, waited for.
    fn one(&mut self, op: Op) {
        let client = &mut self.clients[0];
        self.runtime
            .block_on(client.execute(op, CALL_DEADLINE))
            .expect("op failed");
    }
}

fn cluster(c: &mut Criterion) {
    let mut bench = Bench::start();
    let mut group = c.benchmark_group("cluster");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));

    let mut n = 0u64;
    group.bench_function("put", |b| {
        b.iter(|| {
            n += 1;
            bench.one(put(n));
        })
    });
    group.bench_function("get", |b| {
        b.iter(|| {
            n += 1;
            bench.one(Op::Get { key: key(n) });
        })
    });
    group.bench_function(format!("put_{CLIENTS}_clients"), |b| {
        b.iter_custom(|iters| bench.run_concurrently(iters, put))
    });
    group.bench_function(format!("get_{CLIENTS}_clients"), |b| {
        b.iter_custom(|iters| bench.run_concurrently(iters, |n| Op::Get { key: key(n) }))
    });
    group.finish();
}

criterion_group!(benches, cluster);
criterion_main!(benches);
