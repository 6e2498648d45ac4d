//! One-way loss toward the leader, on the simulator: everything the other replicas send
//! the leader is lost while what it sends still reaches them. Its accepts keep arriving, so
//! a follower that counted them as a live leader would never campaign, and nothing would
//! commit until the link healed. The leader must give up leading, and the others must
//! elect one of themselves and keep it, though the old leader, hearing nothing, keeps
//! campaigning for its own client's request. Every history is checked for
//! linearizability.

use std::time::Duration;

use kv_engine::kv::KvState;
use kv_replication::paxos::Lease;
use kv_replication::replica::{ReplicaConfig, Role};
use kv_replication::sim::kv::{get, put, value_text, KvCalls, KvCluster};
use kv_replication::sim::replica::ReplicaHost;
use kv_replication::sim::SimOptions;
use kv_replication::types::NodeId;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The one of `among` that says it leads, if any. (The old leader, hearing nothing,
/// may still say so.)
fn leader_among(c: &KvCluster, among: &[usize]) -> Option<usize> {
    let leading: Vec<usize> = among
        .iter()
        .copied()
        .filter(|&i| {
            c.sim
                .node(i)
                .is_some_and(|r| r.status().role == Role::Leader)
        })
        .collect();
    assert!(
        leading.len() <= 1,
        "two leaders among {among:?}: {leading:?}"
    );
    leading.first().copied()
}

fn leader_changes(c: &KvCluster, i: usize) -> u64 {
    c.sim.node(i).map_or(0, |r| r.status().leader_changes)
}

/// `n` replicas run with `config`: a put through the last of them, which so leads (its
/// ballots beat the others' of the same round: campaigning again, it would depose them),
/// then every link toward it cut one way, and (if `busy`) a client of the old leader's
/// starts a put. Puts through the others must go on: one within 10 s, then 20 more, one
/// every 200 ms, while the new leader stays the leader. Healed, the old leader
/// catches up.
fn the_others_elect_a_leader_and_keep_it(seed: u64, config: &ReplicaConfig, busy: bool) {
    let n = config.peers;
    let host = ReplicaHost::new(seed, config.clone(), KvState::default());
    let mut c = KvCluster::with_host(seed, SimOptions::new(n), host);
    let first = c.clerk(&[n - 1]);
    c.put(first, "k", "before");
    let old = c.leader().expect("a leader after a put");
    assert_eq!(old, n - 1, "seed {seed}: the node that took the put leads");
    let others: Vec<usize> = (0..n).filter(|&i| i != old).collect();
    for &i in &others {
        c.sim.cut_one_way(i, old);
    }
    // A client of the old leader's: its accepts reach the others, their answers do not.
    let at_old = c.clerk(&[old]);
    if busy {
        c.begin(at_old, put("o", "at the old leader"));
    }
    let clerk = c.clerk(&others);
    c.begin(clerk, put("k", "during"));
    assert!(
        c.wait(&[clerk], secs(10)),
        "seed {seed}, {n} replicas: no put committed within 10 s of the one-way cut"
    );
    c.take_result(clerk);
    let new = leader_among(&c, &others)
        .unwrap_or_else(|| panic!("seed {seed}: no new leader among {others:?}"));
    let changes: Vec<u64> = others.iter().map(|&i| leader_changes(&c, i)).collect();
    // Over 4 s, while the old leader campaigns. (Each put is within `leader_timeout` of
    // the one before: a leader idle for longer is one no peer can tell from a dead one,
    // and the old leader's standing campaign may then depose it, once.)
    for round in 0..20 {
        c.begin(clerk, put("k", &format!("during {round}")));
        assert!(
            c.wait(&[clerk], secs(5)),
            "seed {seed}, {n} replicas: put {round} after the election stalled"
        );
        c.take_result(clerk);
        c.run_for(Duration::from_millis(200));
    }
    assert_eq!(
        leader_among(&c, &others),
        Some(new),
        "seed {seed}: the leader changed again while the old one campaigned"
    );
    let after: Vec<u64> = others.iter().map(|&i| leader_changes(&c, i)).collect();
    assert_eq!(
        changes, after,
        "seed {seed}: the others changed leaders again while the old one campaigned"
    );
    c.sim.heal();
    assert!(
        c.wait(&[at_old], secs(10)),
        "seed {seed}: healed, the old leader's client got no answer"
    );
    c.take_result(at_old);
    c.begin(at_old, get("k"));
    assert!(c.wait(&[at_old], secs(10)), "seed {seed}: healed, no read");
    let read = value_text(c.take_result(at_old));
    assert_eq!(read, "during 19", "seed {seed}");
    c.check_linearizable();
}

fn config(n: usize) -> ReplicaConfig {
    ReplicaConfig::new(NodeId(0), n)
}

#[test]
fn three_replicas_elect_a_leader_the_others_can_hear_and_keep_it() {
    for seed in 0..6 {
        the_others_elect_a_leader_and_keep_it(seed, &config(3), true);
    }
}

#[test]
fn an_idle_leader_that_hears_nothing_stops_keeping_its_followers_waiting() {
    for seed in 0..6 {
        the_others_elect_a_leader_and_keep_it(seed, &config(3), false);
    }
}

#[test]
fn five_replicas_elect_a_leader_the_others_can_hear_and_keep_it() {
    for seed in 0..4 {
        the_others_elect_a_leader_and_keep_it(seed, &config(5), true);
    }
}

#[test]
fn a_leader_whose_accepts_go_unanswered_stops_leading_though_followers_would_wait_on() {
    // Followers patient for longer than the leader's longest wait between resends: only
    // the leader giving up lets them elect another.
    let mut patient = config(3);
    patient.paxos.leader_timeout = secs(3);
    for seed in 0..4 {
        the_others_elect_a_leader_and_keep_it(seed, &patient, true);
    }
}

#[test]
fn with_leases_the_others_elect_a_leader_once_the_grants_end_and_keep_it() {
    let mut leased = config(3);
    leased.paxos.lease = Some(Lease {
        duration: Duration::from_millis(300),
        drift_ppm: 10_000,
    });
    for seed in 0..6 {
        the_others_elect_a_leader_and_keep_it(seed, &leased, seed % 2 == 0);
    }
}
