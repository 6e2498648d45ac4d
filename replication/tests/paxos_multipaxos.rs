//! Multi-Paxos properties beyond the lab: a stable leader runs only phase 2, keeps several
//! instances in flight, and lets decisions ride on the next accept, so a pipelined
//! agreement costs about 2·(n−1) messages.

use bytes::Bytes;
use kv_replication::paxos::Seq;
use kv_replication::sim::paxos::PaxosCluster;

/// Runs `count` agreements proposed by peer 0 with `window` in flight; returns messages
/// received per agreement after the first (which pays for phase 1).
fn pipelined(n: usize, count: u64, window: u64, value: Bytes) -> f64 {
    let mut c = PaxosCluster::new(41, n);
    c.start(0, 0, value.clone());
    assert!(c.waitn(0, n));
    let before = c.rpc_total();
    let mut next = 1u64;
    let mut oldest = 1u64;
    while oldest < count {
        while next < count && next < oldest + window {
            c.start(0, next, value.clone());
            next += 1;
        }
        let ok = c.sim.run_until(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_micros(200),
            |sim| {
                sim.node(0).is_some_and(|p| {
                    matches!(
                        p.status(Seq(oldest)),
                        kv_replication::paxos::Fate::Decided(_)
                    )
                })
            },
        );
        assert!(ok, "instance {oldest} stalled");
        oldest += 1;
    }
    c.sleep_ms(100);
    for seq in 1..count {
        assert!(c.waitn(seq, n), "instance {seq}");
    }
    (c.rpc_total() - before) as f64 / (count - 1) as f64
}

#[test]
fn a_stable_leader_needs_about_two_messages_per_follower_per_instance() {
    for n in [3, 5] {
        let per = pipelined(n, 400, 8, Bytes::from_static(b"op"));
        eprintln!("n={n}: {per:.2} messages per agreement");
        let floor = 2.0 * (n as f64 - 1.0);
        assert!(per >= floor, "fewer messages than possible? {per}");
        assert!(per <= floor * 1.25, "n={n}: {per} messages per agreement");
    }
}

#[test]
fn the_leader_keeps_several_instances_in_flight() {
    let n = 3;
    let mut c = PaxosCluster::new(42, n);
    c.start(0, 0, "x");
    assert!(c.waitn(0, n));
    for seq in 1..=20 {
        c.start(0, seq, "y");
    }
    assert_eq!(c.sim.node(0).unwrap().undecided_proposals(), 20);
    // One round trip later (delays are at most 2 ms each way), all twenty are decided.
    c.sleep_ms(5);
    assert_eq!(c.sim.node(0).unwrap().undecided_proposals(), 0);
    assert!(c.sim.node(0).unwrap().is_leader());
}
