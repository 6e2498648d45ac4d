//! State transfer of a state many times larger than a message: a wiped replica rebuilding,
//! and a replica that was down while the others forgot the log it missed. (A real group
//! once could not rebuild a node once its live data passed the transport's frame limit,
//! and its peers grew until the kernel killed them.) Links carry a limited bandwidth and
//! drop any message over the frame limit, as the transport does.

use std::time::Duration;

use bytes::Bytes;
use kv_engine::fs::Torn;
use kv_engine::kv::{Op, Reply};
use kv_replication::sim::kv::KvCluster;
use kv_replication::sim::SimOptions;

/// The frame limit of these tests: the live state is many times larger.
const FRAME_BYTES_MAX: usize = 8 << 20;
const VALUE_BYTES: usize = 256 << 10;

fn cluster(seed: u64, tune: impl FnOnce(&mut kv_replication::replica::ReplicaConfig)) -> KvCluster {
    let mut options = SimOptions::new(3);
    options.faults.bandwidth = 200 << 20;
    options.message_bytes_max = FRAME_BYTES_MAX;
    let mut c = KvCluster::with(seed, options, tune);
    c.retry_timeout = Duration::from_secs(5);
    // Keep the checker's history small: these tests are about bytes, not interleavings.
    c.record = false;
    c
}

fn value(i: usize) -> Bytes {
    let mut v = vec![(i % 251) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(v)
}

fn put(c: &mut KvCluster, ck: usize, key: usize, i: usize) {
    let op = Op::Put {
        key: Bytes::from(format!("key-{key:04}")),
        value: value(i),
    };
    assert_eq!(
        c.call(ck, op, Duration::from_secs(60)),
        Some(Reply::Ok),
        "put {i}"
    );
}

fn live(c: &KvCluster, i: usize) -> u64 {
    c.sim.node(i).map_or(0, |r| r.machine().live_bytes())
}

#[test]
fn a_wiped_replica_rebuilds_a_state_six_times_the_frame_limit_with_bounded_memory() {
    let mut c = cluster(401, |_| {});
    let ck = c.clerk_all(0);
    let keys = 6 * FRAME_BYTES_MAX / VALUE_BYTES;
    for k in 0..keys {
        put(&mut c, ck, k, k);
    }
    let live0 = live(&c, 0);
    assert!(live0 >= 6 * FRAME_BYTES_MAX as u64);
    let baseline = c.sim.retained_bytes(0).max(c.sim.retained_bytes(1));
    c.sim.restart_wiped(2);
    let mut peak = 0;
    let rebuilt = c
        .sim
        .run_until(Duration::from_secs(120), Duration::from_millis(5), |s| {
            peak = peak.max(s.retained_bytes(0)).max(s.retained_bytes(1));
            s.node(2).is_some_and(|r| r.is_ready())
        });
    assert!(
        rebuilt,
        "node 2 rebuilt: {:?}",
        c.sim.node(2).map(|r| r.status())
    );
    assert!(c.wait_applied_equal(&[0, 1, 2], Duration::from_secs(30)));
    c.assert_replicas_agree(&[0, 1, 2]);
    assert_eq!(live(&c, 2), live0);
    assert_eq!(
        c.sim.oversized_messages(),
        0,
        "every message fit in a frame"
    );
    // Serving the transfer cost the senders a few chunks, nothing proportional to the
    // state they sent.
    let overhead = peak.saturating_sub(baseline);
    assert!(
        overhead <= 4 << 20,
        "serving the transfer retained {overhead} more bytes (baseline {baseline})"
    );
    assert_eq!(
        c.sim.node(2).unwrap().status().installs,
        1,
        "one image, installed once"
    );
    // The rebuilt replica carries the group on: the others may now fail one at a time.
    c.sim.crash(0, Torn::None);
    put(&mut c, ck, 0, 999);
    c.sim.restart(0);
    c.sim.crash(1, Torn::None);
    put(&mut c, ck, 1, 1000);
    assert!(c.wait_applied_equal(&[0, 2], Duration::from_secs(30)));
}

#[test]
fn a_replica_down_while_the_log_outgrows_the_retention_bound_catches_up_by_transfer() {
    let retain = 2 << 20;
    let mut c = cluster(402, |r| r.retain_bytes_max = retain);
    let ck = c.clerk_all(0);
    let keys = 8;
    for k in 0..keys {
        put(&mut c, ck, k, k);
    }
    c.sim.crash(2, Torn::None);
    // Ten times the live data of overwrites while node 2 is away.
    let writes = 10 * keys;
    let mut worst_disk = 0;
    for i in 0..writes {
        put(&mut c, ck, i % keys, keys + i);
        worst_disk = worst_disk.max(c.sim.disk_bytes(0)).max(c.sim.disk_bytes(1));
    }
    let live0 = live(&c, 0);
    // The others kept what they owe node 2 bounded: disk stays a small multiple of live
    // data plus the retention bound, not the whole log node 2 missed.
    let budget = 3 * live0 + 3 * retain;
    assert!(
        worst_disk <= budget,
        "{worst_disk} bytes on a disk while a peer was down; live {live0}, budget {budget}"
    );
    assert!(
        c.sim.node(0).unwrap().status().paxos_min.0 > 0,
        "the others forgot the log node 2 missed"
    );
    c.sim.restart(2);
    assert!(
        c.sim
            .run_until(Duration::from_secs(60), Duration::from_millis(5), |s| {
                s.node(2).is_some_and(|r| r.is_ready())
            }),
        "node 2 serves again"
    );
    assert!(c.wait_applied_equal(&[0, 1, 2], Duration::from_secs(60)));
    c.assert_replicas_agree(&[0, 1, 2]);
    assert_eq!(c.sim.oversized_messages(), 0);
    assert_eq!(
        c.sim.node(2).unwrap().status().installs,
        1,
        "node 2 caught up with one state transfer"
    );
}
