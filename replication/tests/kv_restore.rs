//! A replica whose data directory is restored from an older copy of itself (an operator
//! restoring a backup). Its disk no longer holds promises and acceptances it told its
//! peers about, so voting on it could undo an acknowledged write. The restart check must
//! catch it and send it through the lost-disk rebuild — never a lost write, never two
//! values for one instance (the host checks every replica's applied log after each step).

use std::time::Duration;

use kv_engine::fs::Torn;
use kv_engine::kv::Reply;
use kv_replication::replica::Role;
use kv_replication::sim::kv::KvCalls;
use kv_replication::sim::kv::{get, KvCluster};

fn role(c: &KvCluster, i: usize) -> Option<Role> {
    c.sim.node(i).map(|r| r.status().role)
}

/// The scenario that lost a write on real processes: copy node 1's directory; restart it;
/// stop node 2; write; stop nodes 0 and 1; restore node 1 from the copy; start 1 and 2.
/// The write must not read as missing, and once node 0 is back it must be there.
#[test]
fn a_restored_old_directory_does_not_lose_an_acknowledged_write() {
    let mut c = KvCluster::new(301, 3);
    let ck = c.clerk_all(0);
    c.put(ck, "warm", "up");
    let backup = c.sim.disk_image(1);
    c.sim.crash(1, Torn::None);
    c.sim.restart(1);
    assert!(
        c.sim
            .run_until(Duration::from_secs(10), Duration::from_millis(10), |s| {
                s.node(1).is_some_and(|r| r.is_ready())
            }),
        "node 1 restarts"
    );
    c.sim.crash(2, Torn::None);
    c.put(ck, "rollback_key", "v1");
    c.sim.crash(0, Torn::None);
    c.sim.crash(1, Torn::None);
    c.sim.restore_disk(1, &backup);
    c.sim.restart(2);

    // Nodes 1 and 2 alone must not answer: 1's disk is older than what it told the others,
    // and 2 never saw the write.
    let reader = c.clerk(&[1, 2]);
    c.begin(reader, get("rollback_key"));
    c.run_for(Duration::from_secs(5));
    assert!(
        !c.idle(reader),
        "a read answered without the only intact copy of the write"
    );
    assert_eq!(
        role(&c, 1),
        Some(Role::Recovering),
        "the restored copy was caught"
    );

    c.sim.restart(0);
    assert!(
        c.wait(&[reader], Duration::from_secs(30)),
        "the read finishes once node 0 is back"
    );
    assert_eq!(
        c.take_result(reader),
        Some(Reply::Value(Some(bytes::Bytes::from_static(b"v1"))))
    );
    assert!(
        c.sim
            .run_until(Duration::from_secs(30), Duration::from_millis(10), |s| {
                (0..3).all(|i| s.node(i).is_some_and(|r| r.is_ready()))
            }),
        "node 1 rebuilds and every replica serves again"
    );
    assert!(c.sim.node(1).unwrap().status().incarnation > 0);
    c.put(ck, "after", "ok");
    assert_eq!(c.get_str(ck, "rollback_key"), "v1");
    c.check_linearizable();
}

/// A copy taken while the replica ran on (a live backup): after it, the replica accepted
/// more, and told the leader. Restored and restarted, it claims a shorter log than it
/// accepted, which the leader remembers and has shared with the other follower — so
/// whichever peer answers first catches it.
#[test]
fn a_live_backup_restored_after_more_writes_is_caught_by_what_it_accepted() {
    let mut c = KvCluster::new(302, 3);
    let ck = c.clerk_all(0);
    c.put(ck, "k", "0");
    let backup = c.sim.disk_image(2);
    for i in 1..20 {
        c.put(ck, "k", &i.to_string());
    }
    // The replica runs on a while after the copy (long enough for what the leader saw of it
    // to reach the other follower).
    c.run_for(Duration::from_secs(1));
    c.sim.crash(2, Torn::None);
    c.sim.restore_disk(2, &backup);
    assert!(
        c.sim
            .run_until(Duration::from_secs(10), Duration::from_millis(10), |s| {
                s.node(2)
                    .is_some_and(|r| r.status().incarnation > 0 && r.is_ready())
            }),
        "the restored replica is caught and rebuilds: {:?}",
        c.sim.node(2).map(|r| r.status())
    );
    c.sim.crash(0, Torn::None);
    assert_eq!(
        c.get_str(ck, "k"),
        "19",
        "the rebuilt replica carries every write"
    );
    c.check_linearizable();
}

/// A restart on a genuine disk always passes the check, however often it crashes before
/// its peers answer.
#[test]
fn genuine_restarts_pass_the_check_even_when_interrupted() {
    let mut c = KvCluster::new(303, 3);
    let ck = c.clerk_all(0);
    for round in 0..10 {
        c.put(ck, "k", &round.to_string());
        let i = round % 3;
        c.sim.crash(i, Torn::Prefix(round as u64));
        c.sim.restart(i);
        // Crash again before any check can be answered, half of the time.
        if round % 2 == 0 {
            c.sim.crash(i, Torn::None);
            c.sim.restart(i);
        }
        assert!(
            c.sim
                .run_until(Duration::from_secs(10), Duration::from_millis(10), |s| {
                    s.node(i).is_some_and(|r| r.is_ready())
                }),
            "round {round}: node {i} serves again"
        );
        assert_eq!(
            c.sim.node(i).unwrap().status().incarnation,
            0,
            "never rebuilt"
        );
    }
    assert_eq!(c.get_str(ck, "k"), "9");
    c.check_linearizable();
}
