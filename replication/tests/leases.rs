//! Leader leases on the simulator, with clocks that drift: within the stated bound a
//! deposed leader stops answering reads before another leader can acknowledge a write;
//! beyond it, it serves stale reads and the linearizability checker says so.

use std::time::Duration;

use kv_engine::kv::KvState;
use kv_replication::paxos::Lease;
use kv_replication::replica::ReplicaConfig;
use kv_replication::sim::kv::{get, value_text, KvCalls, KvCluster};
use kv_replication::sim::replica::ReplicaHost;
use kv_replication::sim::SimOptions;
use kv_replication::types::NodeId;

const LEASE: Lease = Lease {
    duration: Duration::from_millis(300),
    // 10%: a wide bound, so that a lease counted without it would outlast the grants
    // by tens of milliseconds.
    drift_ppm: 100_000,
};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn leased_rounds(c: &KvCluster, i: usize) -> u64 {
    c.sim.node(i).map_or(0, |r| r.status().read_rounds_leased)
}

/// Three replicas with leases (`leases[i]` node i's). After a put of "old" through node 0,
/// the leader's clock is set to run `leader_ppm` off and the others' `others_ppm`; reads
/// at the leader use its lease; then the leader is cut off alone while a read at it is
/// answered under the lease, and the others elect a leader and put "new". Returns the
/// cluster, the cut-off leader and a clerk that began a read at it after "new" was
/// acknowledged.
fn read_at_cut_off_leader(
    seed: u64,
    leases: [Lease; 3],
    leader_ppm: i64,
    others_ppm: i64,
) -> (KvCluster, usize, usize) {
    let mut config = ReplicaConfig::new(NodeId(0), 3);
    // Followers campaign long before their grants end, so the new leader is elected as
    // soon as the leases allow: a lease the old leader counted too long shows.
    config.paxos.leader_timeout = ms(50);
    config.forward_timeout = ms(20);
    let mut host = ReplicaHost::new(seed, config, KvState::default());
    host.node_leases = leases.iter().map(|&lease| Some(lease)).collect();
    let mut c = KvCluster::with_host(seed, SimOptions::new(3), host);
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    c.put(per_server[0], "k", "old");
    let leader = c.leader().expect("a leader after a put");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for i in 0..3 {
        let ppm = if i == leader { leader_ppm } else { others_ppm };
        c.sim.set_clock_rate(i, ppm);
    }

    // Back-to-back reads at the leader: the second at the latest is under the lease the
    // first one's round renewed; a follower's read is answered at the leader's index.
    let before = leased_rounds(&c, leader);
    for _ in 0..2 {
        assert_eq!(c.get_str(per_server[leader], "k"), "old");
    }
    assert_eq!(c.get_str(per_server[others[0]], "k"), "old");
    assert!(
        leased_rounds(&c, leader) > before,
        "no read round was released under the lease"
    );

    // Cut off, the leader still answers under its lease: no other can lead yet.
    c.sim.partition(&[&others, &[leader]]);
    let early = c.clerk(&[leader]);
    c.begin(early, get("k"));
    assert!(c.wait(&[early], ms(50)), "no read under the lease");
    assert_eq!(value_text(c.take_result(early)), "old");

    c.put(per_server[others[0]], "k", "new");
    c.run_for(ms(1)); // strictly after the put returned
    let late = c.clerk(&[leader]);
    c.begin(late, get("k"));
    c.run_for(ms(1000));
    (c, leader, late)
}

/// The read `late` began at a deposed leader after "new" was acknowledged: it gets no
/// answer while the leader is cut off, reads "new" once the partition heals, and the
/// history is linearizable.
fn no_stale_read(seed: u64, c: &mut KvCluster, late: usize) {
    assert!(
        !c.idle(late),
        "seed {seed}: a deposed leader answered a read"
    );
    c.sim.heal();
    assert!(
        c.wait(&[late], ms(5000)),
        "seed {seed}: no answer after heal"
    );
    assert_eq!(value_text(c.take_result(late)), "new");
    c.check_linearizable();
}

#[test]
fn within_the_drift_bound_a_deposed_leader_answers_no_read_after_a_new_write() {
    // The worst case the bound allows: the leader's clock slow, the others' fast.
    let drift = i64::from(LEASE.drift_ppm);
    for seed in [41, 42, 43] {
        let (mut c, _, late) = read_at_cut_off_leader(seed, [LEASE; 3], -drift, drift);
        no_stale_read(seed, &mut c, late);
    }
}

#[test]
fn beyond_the_drift_bound_a_deposed_leader_serves_a_stale_read() {
    // The leader's clock at a tenth of real speed: far beyond the 10% the lease assumes.
    let (mut c, _, late) = read_at_cut_off_leader(41, [LEASE; 3], -900_000, 100_000);
    assert!(c.idle(late), "the slow leader did not answer");
    assert_eq!(value_text(c.take_result(late)), "old", "not a stale read");
    assert!(
        !c.verdict().is_ok(),
        "the checker accepted a read of a value overwritten before it began"
    );
}

#[test]
fn a_leader_whose_own_lease_is_longer_than_its_followers_grants_counts_on_theirs() {
    // Node 0 is set for 1.5 s, its followers for 300 ms (a change rolling through the
    // nodes): the grants its acknowledgements carry bound its lease, not its own setting.
    let long = Lease {
        duration: ms(1500),
        ..LEASE
    };
    let drift = i64::from(LEASE.drift_ppm);
    for seed in [41, 42, 43] {
        let (mut c, leader, late) =
            read_at_cut_off_leader(seed, [long, LEASE, LEASE], -drift, drift);
        assert_eq!(
            leader, 0,
            "seed {seed}: node 0, which took the first put, leads"
        );
        no_stale_read(seed, &mut c, late);
    }
}
