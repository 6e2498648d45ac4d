//! Large values on a bandwidth-limited network (issue: six 16 MiB SETs livelocked a real
//! group). The simulator's links carry a limited number of bytes per second, one message
//! after another, and drop any message over the transport's frame limit, so a large value
//! takes real (virtual) time to move: retransmit, catch-up and election timers that fire
//! because a large message is still in flight show up here as leader changes and, once
//! promises outgrow a frame, as a group that never decides again.

use std::time::Duration;

use bytes::Bytes;
use kv_engine::kv::{Op, Reply};
use kv_replication::sim::kv::KvCalls;
use kv_replication::sim::kv::KvCluster;
use kv_replication::sim::SimOptions;

/// The largest value a client may write (the RESP front door's `VALUE_BYTES_MAX`).
const VALUE_BYTES: usize = 16 << 20;
/// The transport's frame limit (`kv_server::wire::FRAME_BYTES_MAX`).
const FRAME_BYTES_MAX: usize = (64 << 20) + (1 << 20);

fn cluster(seed: u64, bandwidth: u64) -> KvCluster {
    let mut options = SimOptions::new(3);
    options.faults.bandwidth = bandwidth;
    options.message_bytes_max = FRAME_BYTES_MAX;
    let mut c = KvCluster::with(seed, options, |_| {});
    // A patient client, like redis-cli: it waits for its answer rather than re-sending a
    // 16 MiB request elsewhere every half second.
    c.retry_timeout = Duration::from_secs(10);
    c
}

fn value(i: usize) -> Bytes {
    let mut v = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(v)
}

fn ballots(c: &KvCluster) -> Vec<String> {
    (0..c.replicas())
        .map(|i| {
            c.sim
                .node(i)
                .map_or("down".into(), |r| r.status().ballot.to_string())
        })
        .collect()
}

fn values_at_the_maximum_size(seed: u64, bandwidth: u64, count: usize) {
    let mut c = cluster(seed, bandwidth);
    let ck = c.clerk_all(0);
    // Elect a leader with a small write first.
    c.put(ck, "small", "x");
    let before = ballots(&c);
    for i in 0..count {
        let key = Bytes::from(format!("big{}", i % 4));
        let op = Op::Put {
            key,
            value: value(i),
        };
        let reply = c.call(ck, op, Duration::from_secs(60));
        assert_eq!(reply, Some(Reply::Ok), "seed {seed}: put {i}");
        assert_eq!(
            ballots(&c),
            before,
            "seed {seed}: the leader changed during put {i}"
        );
    }
    for k in 0..4 {
        let last = (0..count).filter(|i| i % 4 == k).max().unwrap();
        let got = c.get(ck, &format!("big{k}")).expect("written");
        assert!(
            got == value(last),
            "seed {seed}: big{k} holds the wrong value"
        );
    }
    assert_eq!(
        c.sim.oversized_messages(),
        0,
        "seed {seed}: a message outgrew a frame"
    );
    c.check_linearizable();
}

#[test]
fn fifty_values_at_the_maximum_size_commit_with_one_stable_leader_at_200_mb_per_s() {
    values_at_the_maximum_size(90, 200 << 20, 50);
}

#[test]
fn values_at_the_maximum_size_commit_with_one_stable_leader_at_50_mb_per_s() {
    values_at_the_maximum_size(91, 50 << 20, 12);
}

/// Four clients write maximum-size values at once, to replicas of their choosing: several
/// large instances are in flight on every link at the same time.
#[test]
fn concurrent_clients_writing_maximum_size_values_keep_one_stable_leader() {
    let seed = 92;
    let mut c = cluster(seed, 100 << 20);
    let clerks: Vec<usize> = (0..4).map(|i| c.clerk_all(i % 3)).collect();
    c.put(clerks[0], "small", "x");
    let before = ballots(&c);
    for round in 0..4 {
        for (k, &ck) in clerks.iter().enumerate() {
            let op = Op::Put {
                key: Bytes::from(format!("big{k}")),
                value: value(round * 4 + k),
            };
            c.begin(ck, op);
        }
        assert!(
            c.wait(&clerks, Duration::from_secs(60)),
            "seed {seed}: round {round}"
        );
        for &ck in &clerks {
            assert_eq!(
                c.take_result(ck),
                Some(Reply::Ok),
                "seed {seed}: round {round}"
            );
        }
        assert_eq!(
            ballots(&c),
            before,
            "seed {seed}: the leader changed in round {round}"
        );
    }
    assert_eq!(
        c.sim.oversized_messages(),
        0,
        "seed {seed}: a message outgrew a frame"
    );
    c.check_linearizable();
}
