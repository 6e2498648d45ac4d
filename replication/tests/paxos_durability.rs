//! Durability of Paxos peers through the engine: crashes mid-agreement, whole-group
//! crashes, torn writes, disk compaction after forgetting, and lost disks. The simulator's
//! host checks after every step (and after every restart) that no instance ever has two
//! decided values, so every scenario below is also a safety check.

use bytes::Bytes;
use kv_engine::fs::Torn;
use kv_replication::paxos::{Fate, Seq};
use kv_replication::rng::Rng;
use kv_replication::sim::paxos::PaxosCluster;
use kv_replication::types::NodeId;

fn val(s: impl ToString) -> Bytes {
    Bytes::from(s.to_string())
}

fn decided(c: &PaxosCluster, i: usize, seq: u64) -> Option<Bytes> {
    match c.status(i, seq) {
        Some(Fate::Decided(v)) => Some(v),
        _ => None,
    }
}

#[test]
fn minority_crashing_mid_agreement_restarts_into_the_same_decisions() {
    let n = 5;
    let mut c = PaxosCluster::new(31, n);
    for seq in 0..20u64 {
        c.start(0, seq, val(seq));
        // Crash two peers at a varying point of the agreement (0 to ~5 ms in).
        c.sim.run_for(std::time::Duration::from_micros(seq * 250));
        let a = 1 + (seq as usize % 4);
        let b = 1 + ((seq as usize + 1) % 4);
        c.sim.crash(a, Torn::None);
        c.sim.crash(b, Torn::None);
        assert!(c.waitmajority(seq), "instance {seq} with a minority down");
        c.sim.restart(a);
        c.sim.restart(b);
        // The restarted peers propose other values; they must learn the decided one.
        c.start(a, seq, val("other"));
        c.start(b, seq, val("another"));
        assert!(c.waitn(seq, n), "instance {seq} after restart");
        assert_eq!(decided(&c, a, seq), Some(val(seq)));
    }
}

#[test]
fn whole_group_crash_keeps_every_decision() {
    let n = 3;
    let mut c = PaxosCluster::new(32, n);
    for seq in 0..10u64 {
        c.start(seq as usize % n, seq, val(seq * 7));
        assert!(c.waitn(seq, n));
    }
    // One more agreement, interrupted by a whole-group crash partway through.
    c.start(0, 10, val("interrupted"));
    c.sim.run_for(std::time::Duration::from_micros(1500));
    for i in 0..n {
        c.sim.crash(i, Torn::None);
    }
    for i in 0..n {
        c.sim.restart(i);
    }
    for seq in 0..10u64 {
        for i in 0..n {
            assert_eq!(
                decided(&c, i, seq),
                Some(val(seq * 7)),
                "peer {i} lost instance {seq}"
            );
        }
    }
    // Re-proposing other values changes nothing.
    for seq in 0..10u64 {
        for i in 0..n {
            c.start(i, seq, val("overwrite?"));
        }
        assert!(c.waitn(seq, n));
        assert_eq!(decided(&c, 1, seq), Some(val(seq * 7)));
    }
    // Whatever instance 10 became, every peer agrees on it, and new values are refused if
    // "interrupted" had been chosen.
    c.start(1, 10, val("late"));
    c.start(2, 10, val("later"));
    assert!(c.waitn(10, n));
    let v = decided(&c, 0, 10).expect("decided");
    assert!(v == val("interrupted") || v == val("late") || v == val("later"));
    // And the group keeps working.
    c.start(2, 11, val("after"));
    assert!(c.waitn(11, n));
}

#[test]
fn torn_write_crashes_under_load_never_change_a_decision() {
    let n = 3;
    let mut c = PaxosCluster::new(33, n);
    let mut rng = Rng::new(33);
    let mut seq = 0u64;
    for round in 0..40u64 {
        for _ in 0..3 {
            let i = rng.below(n as u64) as usize;
            c.start(i, seq, val(seq * 1000 + round));
            seq += 1;
        }
        c.sim
            .run_for(std::time::Duration::from_micros(rng.below(4000)));
        let victim = rng.below(n as u64) as usize;
        if c.sim.is_up(victim) {
            c.sim.crash(victim, Torn::Prefix(rng.next_u64()));
        }
        c.sim
            .run_for(std::time::Duration::from_micros(rng.below(4000)));
        c.sim.restart(victim);
    }
    for s in 0..seq {
        for i in 0..n {
            c.start(i, s, val("retry"));
        }
    }
    for s in 0..seq {
        assert!(c.waitn(s, n), "instance {s}");
    }
    // Every restart was checked against every decision ever seen.
    assert!(c.sim.host().chosen.len() as u64 >= seq);
}

#[test]
fn forgotten_instances_leave_the_disk_and_stay_forgotten_after_restart() {
    let n = 3;
    let mut c = PaxosCluster::new(34, n);
    let value = Bytes::from(vec![7u8; 10_000]);
    let count = 200u64;
    for seq in 0..count {
        c.start(0, seq, value.clone());
        assert!(c.waitn(seq, n));
    }
    let peak: Vec<u64> = (0..n).map(|i| c.sim.disk_bytes(i)).collect();
    for i in 0..n {
        c.done(i, count - 1);
    }
    for i in 0..n {
        c.start(i, count + i as u64, val("z"));
    }
    c.sleep_ms(2000);
    for (i, peak) in peak.iter().enumerate() {
        let now = c.sim.disk_bytes(i);
        eprintln!("peer {i}: disk {peak} -> {now} bytes");
        assert_eq!(c.min(i), Some(count));
        assert!(now * 4 < *peak, "peer {i} disk {now} vs peak {peak}");
    }
    for i in 0..n {
        c.sim.crash(i, Torn::None);
        c.sim.restart(i);
        assert!(c.min(i).unwrap() >= count, "peer {i} forgot its Min()");
        assert_eq!(c.status(i, 5), Some(Fate::Forgotten));
        assert!(c.max(i).unwrap() >= count as i64);
    }
}

#[test]
fn a_peer_with_a_wiped_disk_does_not_vote_even_after_another_crash() {
    let n = 3;
    let mut c = PaxosCluster::new(35, n);
    c.start(0, 0, val("before"));
    assert!(c.waitn(0, n));
    c.sim.restart_wiped(2);
    assert!(c.sim.node(2).unwrap().is_recovering());
    // Let the boot's write ("recovering") become durable, as the driver does before the
    // node says anything.
    c.sleep_ms(5);
    c.sim.crash(2, Torn::None);
    c.sim.restart(2);
    assert!(
        c.sim.node(2).unwrap().is_recovering(),
        "a crash turned a disk-less peer back into a voter"
    );
    // With peer 0 down, peers 1 and 2 are not a voting majority.
    c.sim.crash(0, Torn::None);
    c.start(1, 1, val("needs a majority"));
    c.start(2, 1, val("ignored: recovering"));
    c.sleep_ms(3000);
    assert_eq!(c.ndecided(1), 0, "decided without a voting majority");
    c.sim.restart(0);
    assert!(c.waitn(1, 2));
    // The recovering peer still learns decisions it is told about.
    c.start(0, 2, val("learned by all"));
    assert!(c.waitn(2, n));
}

#[test]
fn a_wiped_peer_behind_the_group_min_asks_for_a_snapshot() {
    let n = 3;
    let mut c = PaxosCluster::new(36, n);
    for seq in 0..5u64 {
        c.start(0, seq, val(seq));
        assert!(c.waitn(seq, n));
    }
    for i in 0..n {
        c.done(i, 4);
    }
    c.start(0, 5, val(5));
    assert!(c.waitn(5, n));
    c.sim.restart_wiped(1);
    c.start(0, 6, val(6));
    assert!(c.waitn(6, n));
    let behind: Vec<_> = c
        .sim
        .host()
        .behind
        .iter()
        .filter(|(id, _)| *id == NodeId(1))
        .collect();
    assert!(
        behind.iter().any(|(_, below)| *below == Seq(5)),
        "no state-transfer request: {behind:?}"
    );
    assert_eq!(c.status(1, 3), Some(Fate::Forgotten));
}

#[test]
fn leaders_crashing_right_after_their_early_accepts_never_change_a_decision() {
    use kv_replication::sim::{Faults, SimOptions};
    // Every fifth call that sends early messages (a leader's accepts and decisions) ends
    // in a crash before that call's own records are durable, then a restart: the window
    // early sends open. Messages are lost, duplicated and reordered; several peers propose
    // different values for every instance; the host checks after every step that no
    // instance is ever decided two ways.
    for seed in 0..100u64 {
        let n = 5;
        let mut options = SimOptions::new(n);
        options.faults = Faults {
            drop: 0.3,
            duplicate: 0.05,
            delay_max: std::time::Duration::from_millis(8),
            crash_after_early_send: 0.2,
            ..Faults::none()
        };
        let mut c = PaxosCluster::with(100 + seed, options, |_| {});
        let mut crashes_seen = 0;
        for seq in 0..30u64 {
            // Every peer proposes; a peer that crashed may have lost its proposal or missed
            // the decision, so, as an application would, it asks again until it knows the
            // value (asking again can crash it again).
            for round in 0.. {
                let lagging: Vec<usize> =
                    (0..n).filter(|&i| decided(&c, i, seq).is_none()).collect();
                if lagging.is_empty() {
                    break;
                }
                assert!(
                    round < 300,
                    "seed {seed}: instance {seq} not learned by {lagging:?}"
                );
                for i in lagging {
                    c.start(i, seq, val(format!("{seq} from {i}, try {round}")));
                }
                c.sleep_ms(100);
            }
            let values: Vec<_> = (0..n).map(|i| decided(&c, i, seq)).collect();
            assert!(
                values.windows(2).all(|w| w[0] == w[1]),
                "seed {seed}: {values:?}"
            );
        }
        for i in 0..n {
            crashes_seen += c.sim.counters(i).early_crashes;
        }
        assert!(crashes_seen > 0, "seed {seed}: the fault never fired");
    }
}
