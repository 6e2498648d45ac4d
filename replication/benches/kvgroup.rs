//! Throughput of a 3-replica kv group in the simulator (no IO): client operations per
//! second of one core — the simulator is single-threaded, so this is the CPU cost of an
//! operation through clerk, leader batching, Paxos, apply and reply, with network and disk
//! simulated — for 1, 16 and 256 concurrent closed-loop clerks, in two mixes: Puts only,
//! and read-heavy (nine Gets of the clerk's key to one Put; Gets are answered at a read
//! index, not through the log). Leader batching puts many requests in one Paxos instance,
//! so throughput grows with concurrency; the operations per instance and operations per
//! virtual second are printed once per configuration (stderr).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kv_replication::sim::load::{Mix, Run};

fn report(clerks: usize, mix: Mix) {
    let mut run = Run::new(clerks, mix);
    let (ops0, instances0, virtual0) = (run.done(), run.applied(), run.cluster.sim.now());
    let events0 = run.cluster.sim.scheduled();
    let began = Instant::now();
    run.complete(20_000);
    let wall = began.elapsed();
    let ops = run.done() - ops0;
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
