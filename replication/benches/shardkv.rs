//! Sharded clusters in the simulator (no IO).
//!
//! **Throughput with 1, 2 and 4 groups** under the same load (1024 closed-loop clerks, each
//! Putting its own key, the keys spread evenly over the shards). Each node is one simulated
//! core: every message and client request it handles costs it [`STEP_COST`] of virtual
//! time, so one group saturates, and more groups serve more in parallel. Printed per configuration (stderr): operations per virtual
//! second — the cluster's throughput — and per wall second — the simulator's speed on this
//! core; criterion measures the latter.
//!
//! **Handoff of a 1 MiB and a 64 MiB shard** between two groups on a 1 Gbit/s network with
//! 200 µs fsyncs: the virtual time from the Move's answer until the new owner serves the
//! shard, and what clients see meanwhile — the longest a Get on the moving shard waited, and
//! the longest a Get on another shard waited.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kv_engine::kv::{Reply, ShardId};
use kv_replication::sim::kv::{get, put, KvCalls};
use kv_replication::sim::shardkv::{
    Action, ClusterReply, Script, Scripts, ShardWorld, WorldCall, WorldOptions,
};

/// Virtual CPU time each message costs the node that handles it.
const STEP_COST: Duration = Duration::from_micros(20);
/// Bytes of each Put's value in the throughput runs.
const VALUE_BYTES: usize = 32;
/// Closed-loop clerks in the throughput runs.
const CLERKS: usize = 1024;

/// A clerk that Puts to its key forever, counting completions.
struct ClosedLoop {
    clerk: usize,
    key: String,
    value: String,
    done: Rc<Cell<u64>>,
}

impl Script<ShardWorld> for ClosedLoop {
    fn next(&mut self, _w: &mut ShardWorld, last: Option<ClusterReply>) -> Action {
        if last.is_some() {
            self.done.set(self.done.get() + 1);
        }
        Action::Run {
            clerk: self.clerk,
            op: WorldCall::Kv(put(&self.key, &self.value)),
        }
    }
}

struct Run {
    world: ShardWorld,
    scripts: Scripts,
    done: Rc<Cell<u64>>,
}

impl Run {
    fn new(groups: usize) -> Run {
        let options = WorldOptions {
            groups,
            ..WorldOptions::default()
        };
        let mut world = ShardWorld::with(7, options, |o| o.step_cost = STEP_COST);
        world.record = false;
        // Queues at a saturated node are long: no retry storms.
        world.retry_timeout = Duration::from_secs(10);
        for g in 0..groups {
            world.join(g);
        }
        assert!(world.wait_settled(Duration::from_secs(30)));
        let done = Rc::new(Cell::new(0));
        let mut scripts = Scripts::new();
        for i in 0..CLERKS {
            let clerk = world.clerk();
            // Its own key; clerk i's is in shard i mod 10 (the first byte picks the shard),
            // so every shard gets the same share of the load. (Clerks that walk every
            // shard in turn form a convoy: all of them wait on one group at a time.)
            let key = format!("{}-{i}", i % 10);
            scripts.add(ClosedLoop {
                clerk,
                key,
                value: "v".repeat(VALUE_BYTES),
                done: done.clone(),
            });
        }
        let mut run = Run {
            world,
            scripts,
            done,
        };
        run.world.drive(&mut run.scripts, Duration::from_secs(1));
        run
    }

    fn complete(&mut self, ops: u64) {
        let target = self.done.get() + ops;
        while self.done.get() < target {
            self.world
                .drive(&mut self.scripts, Duration::from_millis(1));
        }
    }
}

fn report_throughput(groups: usize) {
    let mut run = Run::new(groups);
    let (ops0, virtual0) = (run.done.get(), run.world.sim.now());
    let began = Instant::now();
    run.complete(20_000);
    let wall = began.elapsed();
    let ops = run.done.get() - ops0;
    let virtual_secs = (run.world.sim.now() - virtual0).as_secs_f64();
    eprintln!(
        "shardkv {groups} group(s), {CLERKS} clerks: {:.0} ops per virtual second, {:.0} ops per wall second",
        ops as f64 / virtual_secs,
        ops as f64 / wall.as_secs_f64()
    );
}

/// Gets a key over and over, keeping the longest wait.
struct Prober {
    clerk: usize,
    key: String,
    sent: Rc<Cell<Duration>>,
    worst: Rc<Cell<Duration>>,
    now: Rc<Cell<Duration>>,
}

impl Script<ShardWorld> for Prober {
    fn next(&mut self, _w: &mut ShardWorld, last: Option<ClusterReply>) -> Action {
        if let Some(reply) = last {
            assert!(
                matches!(reply, ClusterReply::Kv(Reply::Value(_))),
                "a probe answered {reply:?}"
            );
            let waited = self.now.get().saturating_sub(self.sent.get());
            self.worst.set(self.worst.get().max(waited));
        }
        self.sent.set(self.now.get());
        Action::Run {
            clerk: self.clerk,
            op: WorldCall::Kv(get(&self.key)),
        }
    }
}

fn report_handoff(bytes: usize) {
    const VALUE: usize = 64 * 1024;
    let options = WorldOptions {
        groups: 2,
        ..WorldOptions::default()
    };
    let mut w = ShardWorld::with(9, options, |o| o.faults.bandwidth = 125_000_000);
    w.record = false;
    w.join(0);
    w.join(1);
    assert!(w.wait_settled(Duration::from_secs(30)));
    // Shard 0 ('2' is byte 50), filled; shard 1 ('3') holds the other probe's key.
    let ck = w.clerk();
    let value = "x".repeat(VALUE);
    for i in 0..bytes / VALUE {
        w.put(ck, &format!("2-{i}"), &value);
    }
    w.put(ck, "3-probe", "y");
    let config = w.query();
    let owner = config.owner(ShardId(0)).expect("shard 0");
    let to = (0..2).find(|&g| w.gid(g) != owner).expect("another group");
    let now = Rc::new(Cell::new(Duration::ZERO));
    let moving_worst = Rc::new(Cell::new(Duration::ZERO));
    let other_worst = Rc::new(Cell::new(Duration::ZERO));
    let mut scripts = Scripts::new();
    for (key, worst) in [("2-0", &moving_worst), ("3-probe", &other_worst)] {
        let clerk = w.clerk();
        scripts.add(Prober {
            clerk,
            key: key.to_string(),
            sent: Rc::new(Cell::new(Duration::ZERO)),
            worst: worst.clone(),
            now: now.clone(),
        });
    }
    let tick = |w: &mut ShardWorld, scripts: &mut Scripts| {
        now.set(Duration::from_micros(w.sim.now().as_micros()));
        w.drive(scripts, Duration::from_millis(1));
    };
    for _ in 0..200 {
        tick(&mut w, &mut scripts);
    }
    moving_worst.set(Duration::ZERO);
    other_worst.set(Duration::ZERO);
    w.move_shard(0, to);
    let moved = w.sim.now();
    let new_owner = w.group_nodes(to);
    let serving = |w: &ShardWorld| {
        new_owner.iter().any(|&i| {
            w.sim
                .node(i)
                .and_then(|n| n.kv())
                .is_some_and(|n| n.machine().serves(ShardId(0)))
        })
    };
    while !serving(&w) {
        tick(&mut w, &mut scripts);
    }
    let handoff = w.sim.now().as_micros() - moved.as_micros();
    for _ in 0..500 {
        tick(&mut w, &mut scripts);
    }
    eprintln!(
        "shardkv handoff of {} MiB: served by the new owner {:.1} ms after the Move; \
         longest Get on the moving shard {:.1} ms, on another shard {:.1} ms",
        bytes >> 20,
        handoff as f64 / 1000.0,
        moving_worst.get().as_secs_f64() * 1000.0,
        other_worst.get().as_secs_f64() * 1000.0
    );
}

fn bench(c: &mut Criterion) {
    report_handoff(1 << 20);
    report_handoff(64 << 20);
    let mut group = c.benchmark_group("shardkv");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for groups in [1usize, 2, 4] {
        report_throughput(groups);
        let mut run = Run::new(groups);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("groups", groups), &groups, |b, _| {
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
