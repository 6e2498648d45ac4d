//! Throughput of a 3-replica kv group in the simulator (no IO): client operations per
//! second of one core — the simulator is single-threaded, so this is the CPU cost of an
//! operation through clerk, leader batching, Paxos, apply and reply, with network and disk
//! simulated — for 1, 16 and 256 concurrent closed-loop clerks, in two mixes: Puts only,
//! and read-heavy (nine Gets of the clerk's key to one Put; Gets are answered at a read
//! index, not through the log). Leader batching puts many requests in one Paxos instance,
//! so throughput grows with concurrency; the operations per instance and operations per
//! virtual second are printed once per configuration (stderr).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kv_engine::kv::Reply;
use kv_replication::sim::kv::{get, put, Action, KvCluster, Script, Scripts};

/// Bytes of each Put's value.
const VALUE_BYTES: usize = 32;

/// What the clerks send.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Puts only.
    Puts,
    /// Of every ten operations, nine Gets and one Put.
    ReadHeavy,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Puts => "puts",
            Mix::ReadHeavy => "read_heavy",
        }
    }
}

/// A clerk that works on its own key forever, counting completions.
struct ClosedLoop {
    clerk: usize,
    key: String,
    value: String,
    mix: Mix,
    sent: u64,
    done: Rc<Cell<u64>>,
}

impl Script<KvCluster> for ClosedLoop {
    fn next(&mut self, _c: &mut KvCluster, last: Option<Reply>) -> Action {
        if last.is_some() {
            self.done.set(self.done.get() + 1);
        }
        self.sent += 1;
        let op = match self.mix {
            Mix::ReadHeavy if !self.sent.is_multiple_of(10) => get(&self.key),
            Mix::Puts | Mix::ReadHeavy => put(&self.key, &self.value),
        };
        Action::Run {
            clerk: self.clerk,
            op: op.into(),
        }
    }
}

struct Run {
    cluster: KvCluster,
    scripts: Scripts,
    done: Rc<Cell<u64>>,
}

impl Run {
    fn new(clerks: usize, mix: Mix) -> Run {
        let mut cluster = KvCluster::new(7, 3);
        cluster.record = false;
        let done = Rc::new(Cell::new(0));
        let mut scripts = Scripts::new();
        for i in 0..clerks {
            let clerk = cluster.clerk_all(i % 3);
            scripts.add(ClosedLoop {
                clerk,
                key: format!("key{i}"),
                value: "v".repeat(VALUE_BYTES),
                mix,
                sent: 0,
                done: done.clone(),
            });
        }
        let mut run = Run {
            cluster,
            scripts,
            done,
        };
        // Elect a leader and fill the pipeline.
        run.cluster.drive(&mut run.scripts, Duration::from_secs(1));
        run
    }

    /// Runs until `ops` more operations completed.
    fn complete(&mut self, ops: u64) {
        let target = self.done.get() + ops;
        while self.done.get() < target {
            self.cluster
                .drive(&mut self.scripts, Duration::from_millis(1));
        }
    }

    fn applied(&self) -> u64 {
        (0..3)
            .filter_map(|i| self.cluster.sim.node(i))
            .filter_map(|r| r.status().applied)
            .map(|s| s.0 + 1)
            .max()
            .unwrap_or(0)
    }
}

fn report(clerks: usize, mix: Mix) {
    let mut run = Run::new(clerks, mix);
    let (ops0, instances0, virtual0) = (run.done.get(), run.applied(), run.cluster.sim.now());
    let events0 = run.cluster.sim.scheduled();
    let began = Instant::now();
    run.complete(20_000);
    let wall = began.elapsed();
    let ops = run.done.get() - ops0;
    let instances = run.applied() - instances0;
    let events = run.cluster.sim.scheduled() - events0;
    let virtual_secs = (run.cluster.sim.now() - virtual0).as_secs_f64();
    eprintln!(
        "kvgroup {} {clerks} clerks: {:.1} ops per instance, {:.1} simulator events per op, {:.0} ops per virtual second, {:.0} ops per wall second",
        mix.name(),
        ops as f64 / instances.max(1) as f64,
        events as f64 / ops.max(1) as f64,
        ops as f64 / virtual_secs,
        ops as f64 / wall.as_secs_f64()
    );
}

fn bench(c: &mut Criterion) {
    for mix in [Mix::Puts, Mix::ReadHeavy] {
        bench_mix(c, mix);
    }
}

fn bench_mix(c: &mut Criterion, mix: Mix) {
    let name = match mix {
        Mix::Puts => "kvgroup_3_replicas".to_string(),
        Mix::ReadHeavy => format!("kvgroup_3_replicas_{}", mix.name()),
    };
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for clerks in [1usize, 16, 256] {
        report(clerks, mix);
        let mut run = Run::new(clerks, mix);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("clerks", clerks), &clerks, |b, _| {
            b.iter_custom(|iters| {
                let began = Instant::now();
                run.complete(iters);
                began.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
