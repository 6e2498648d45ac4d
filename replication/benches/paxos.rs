//! Paxos agreement throughput in the simulator with a stable leader: agreements per second
//! of one core (the simulator is single-threaded, so this is CPU cost per agreement,
//! network and disk simulated) and messages per agreement, uncontended (only the leader
//! proposes) and contended (every peer starts every instance with its own value), with
//! values of 1 and of 100 client operations (batching). Messages per agreement are printed
//! once per configuration (stderr).
//!
//! A second group, `paxos_core`, drives three cores directly through an in-memory FIFO
//! with no simulated disk (records are still encoded, then dropped), isolating the
//! protocol's own cost from the simulator's network and `SimFs` model.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;

use kv_replication::paxos::{Config, Fate, Message, Output, Paxos, Seq};
use kv_replication::sim::paxos::PaxosCluster;
use kv_replication::types::{NodeId, Time};

/// Bytes of one encoded client operation in a batch.
const OP_BYTES: usize = 32;
/// Instances the leader keeps in flight.
const WINDOW: u64 = 16;

struct Run {
    cluster: PaxosCluster,
    next: u64,
    decided: u64,
    value: Bytes,
    contended: bool,
}

impl Run {
    fn new(peers: usize, ops_per_value: usize, contended: bool) -> Run {
        let value = Bytes::from(vec![0xAB; OP_BYTES * ops_per_value]);
        let mut cluster = PaxosCluster::new(7, peers);
        // The first agreement elects peer 0 (phase 1); everything after is phase 2 only.
        cluster.start(0, 0, value.clone());
        assert!(cluster.waitn(0, peers));
        Run {
            cluster,
            next: 1,
            decided: 1,
            value,
            contended,
        }
    }

    fn start_next(&mut self) {
        let seq = self.next;
        self.next += 1;
        self.cluster.start(0, seq, self.value.clone());
        if self.contended {
            for i in 1..self.cluster.peers() {
                let mut v = self.value.to_vec();
                v[0] = i as u8;
                self.cluster.start(i, seq, Bytes::from(v));
            }
        }
    }

    /// Runs `count` more agreements, keeping `WINDOW` in flight (closed loop).
    fn agree(&mut self, count: u64) {
        let target = self.decided + count;
        while self.decided < target {
            while self.next < target && self.next < self.decided + WINDOW {
                self.start_next();
            }
            let oldest = self.decided;
            let ok = self.cluster.sim.run_until(
                Duration::from_secs(10),
                Duration::from_micros(100),
                |sim| {
                    sim.node(0)
                        .is_some_and(|p| matches!(p.status(Seq(oldest)), Fate::Decided(_)))
                },
            );
            assert!(ok, "instance {oldest} stalled");
            // Steady state, as an application runs it: once an instance is applied, every
            // peer marks it done, so Paxos forgets it and its log is compacted. (Without
            // this the simulated WAL grows without bound and the bench measures that.)
            for i in 0..self.cluster.peers() {
                self.cluster.done(i, oldest);
            }
            self.decided += 1;
        }
    }
}

fn messages_per_agreement(peers: usize, ops: usize, contended: bool) -> f64 {
    let mut run = Run::new(peers, ops, contended);
    let before = run.cluster.rpc_total();
    run.agree(2000);
    run.cluster.sleep_ms(50);
    (run.cluster.rpc_total() - before) as f64 / 2000.0
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("paxos_stable_leader");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for (peers, contended, ops) in [
        (3, false, 1),
        (3, false, 100),
        (3, true, 1),
        (3, true, 100),
        (5, false, 1),
    ] {
        let mode = if contended {
            "contended"
        } else {
            "uncontended"
        };
        let per = messages_per_agreement(peers, ops, contended);
        eprintln!(
            "paxos n={peers} {mode} batch={ops}: {per:.2} messages/agreement (target 2(n-1) = {})",
            2 * (peers - 1)
        );
        let id = BenchmarkId::new(format!("n{peers}_{mode}"), format!("batch{ops}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut run = Run::new(peers, ops, contended);
                let began = Instant::now();
                run.agree(iters);
                began.elapsed()
            })
        });
    }
    group.finish();
}

/// Three cores wired by a FIFO queue; no disk, no delays, no faults.
struct Direct {
    peers: Vec<Paxos>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    out: Output,
    next: u64,
}

impl Direct {
    fn new(n: usize) -> Direct {
        let peers = (0..n)
            .map(|i| Paxos::new(Config::new(NodeId(i as u32), n), i as u64))
            .collect();
        Direct {
            peers,
            queue: VecDeque::new(),
            out: Output::new(),
            next: 0,
        }
    }

    fn drain(&mut self, from: NodeId) {
        let early = self.out.send_early.drain(..);
        for (to, msg) in early.chain(self.out.send.drain(..)) {
            self.queue.push_back((from, to, msg));
        }
        self.out.persist.clear();
        self.out.events.clear();
    }

    /// Starts `window` instances on peer 0 and delivers messages until all are decided
    /// there; ticks once at the end to flush decisions.
    fn agree(&mut self, window: u64, value: &Bytes) {
        let first = self.next;
        for _ in 0..window {
            let seq = Seq(self.next);
            self.next += 1;
            self.peers[0].start(Time::ZERO, seq, value.clone(), &mut self.out);
            self.drain(NodeId(0));
        }
        while let Some((from, to, msg)) = self.queue.pop_front() {
            self.peers[to.index()].on_message(Time::ZERO, from, msg, &mut self.out);
            self.drain(to);
        }
        assert!(matches!(
            self.peers[0].status(Seq(first + window - 1)),
            Fate::Decided(_)
        ));
    }
}

fn bench_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("paxos_core");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(WINDOW));
    for ops in [1usize, 100] {
        let value = Bytes::from(vec![0xAB; OP_BYTES * ops]);
        group.bench_function(
            BenchmarkId::new("n3_uncontended", format!("batch{ops}")),
            |b| {
                let mut direct = Direct::new(3);
                direct.agree(1, &value);
                b.iter(|| direct.agree(WINDOW, &value));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench, bench_core);
criterion_main!(benches);
