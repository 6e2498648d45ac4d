//! The Lab 3A (Spring 2015) Paxos tests, scenario by scenario with the lab's numbers
//! (spec §5.4), on the deterministic simulator in virtual time. Waits mirror the lab's
//! `waitn` (about 30 s of virtual time) and sleeps are virtual.

use bytes::Bytes;
use kv_replication::paxos::Fate;
use kv_replication::rng::Rng;
use kv_replication::sim::paxos::PaxosCluster;

fn val(s: impl ToString) -> Bytes {
    Bytes::from(s.to_string())
}

fn random_bytes(rng: &mut Rng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    Bytes::from(v)
}

#[test]
fn lab3a_test_basic() {
    let mut c = PaxosCluster::new(11, 3);
    // Single proposer.
    c.start(0, 0, "hello");
    assert!(c.waitn(0, 3));
    // Many proposers, same value.
    for i in 0..3 {
        c.start(i, 1, "77");
    }
    assert!(c.waitn(1, 3));
    // Many proposers, different values.
    c.start(0, 2, "100");
    c.start(1, 2, "101");
    c.start(2, 2, "102");
    assert!(c.waitn(2, 3));
    // Out-of-order instances.
    c.start(0, 7, "700");
    c.start(0, 6, "600");
    c.start(1, 5, "500");
    assert!(c.waitn(7, 3));
    c.start(0, 4, "400");
    c.start(1, 3, "300");
    for seq in [6, 5, 4, 3] {
        assert!(c.waitn(seq, 3), "instance {seq}");
    }
    assert_eq!(c.max(0), Some(7));
}

#[test]
fn lab3a_test_deaf() {
    let mut c = PaxosCluster::new(12, 5);
    c.start(0, 0, "hello");
    assert!(c.waitn(0, 5));
    c.sim.set_deaf(0, true);
    c.sim.set_deaf(4, true);
    c.start(1, 1, "goodbye");
    assert!(c.waitmajority(1));
    c.sleep_ms(1000);
    assert_eq!(c.ndecided(1), 3, "a deaf peer learned a value");
    c.start(0, 1, "xxx");
    assert!(c.waitn(1, 4));
    c.sleep_ms(1000);
    assert_eq!(c.ndecided(1), 4, "a deaf peer learned a value");
    c.start(4, 1, "yyy");
    assert!(c.waitn(1, 5));
    assert_eq!(c.status(4, 1), Some(Fate::Decided(val("goodbye"))));
}

#[test]
fn lab3a_test_forget() {
    let n = 6;
    let mut c = PaxosCluster::new(13, n);
    for i in 0..n {
        assert_eq!(c.min(i), Some(0), "wrong initial Min()");
    }
    c.start(0, 0, "00");
    c.start(1, 1, "11");
    c.start(2, 2, "22");
    c.start(0, 6, "66");
    c.start(1, 7, "77");
    assert!(c.waitn(0, n));
    for i in 0..n {
        assert_eq!(c.min(i), Some(0), "wrong Min()");
    }
    assert!(c.waitn(1, n));
    for i in 0..n {
        assert_eq!(c.min(i), Some(0), "wrong Min()");
    }
    for i in 0..n {
        c.done(i, 0);
    }
    for i in 1..n {
        c.done(i, 1);
    }
    for i in 0..n {
        c.start(i, 8 + i as u64, "xx");
    }
    let ok = c.sim.run_until(
        std::time::Duration::from_secs(12),
        std::time::Duration::from_millis(10),
        |sim| (0..n).all(|i| sim.node(i).is_some_and(|p| p.min().0 == 1)),
    );
    assert!(ok, "Min() did not advance after Done()");
    for i in 0..n {
        assert_eq!(c.status(i, 0), Some(Fate::Forgotten));
    }
}

#[test]
fn lab3a_test_many_forget() {
    let n = 3;
    let mut c = PaxosCluster::new(14, n);
    c.sim.set_all_unreliable(true);
    let mut rng = Rng::new(14);
    let maxseq = 20u64;
    let mut order: Vec<u64> = (0..maxseq).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for seq in order {
        let i = rng.below(n as u64) as usize;
        let v = rng.next_u64();
        c.start(i, seq, val(v));
    }
    // For 5 s, random peers mark random decided instances done.
    let mut dones = 0;
    let end = c.sim.now() + std::time::Duration::from_secs(5);
    while c.sim.now() < end {
        c.sleep_ms(rng.below(3));
        let seq = rng.below(maxseq);
        let i = rng.below(n as u64) as usize;
        if matches!(c.status(i, seq), Some(Fate::Decided(_))) {
            c.done(i, seq);
            dones += 1;
        }
    }
    c.sim.set_all_unreliable(false);
    c.sleep_ms(2000);
    let mut settled = 0;
    for seq in 0..maxseq {
        // ndecided panics if two peers disagree.
        let decided = c.ndecided(seq);
        let forgotten = (0..n)
            .filter(|&i| c.status(i, seq) == Some(Fate::Forgotten))
            .count();
        if decided + forgotten >= 2 {
            settled += 1;
        }
    }
    assert!(dones > 0, "no instance was ever marked done");
    assert_eq!(
        settled, maxseq,
        "some instance neither decided nor forgotten"
    );
}

#[test]
fn lab3a_test_forget_mem() {
    let n = 3;
    let mut c = PaxosCluster::new(15, n);
    let mut rng = Rng::new(15);
    c.start(0, 0, "x");
    assert!(c.waitn(0, n));
    let m0 = c.retained_total();
    for seq in 1..=10 {
        c.start(0, seq, random_bytes(&mut rng, 1_000_000));
        assert!(c.waitn(seq, n));
    }
    let m1 = c.retained_total();
    let disk1: u64 = (0..n).map(|i| c.sim.disk_bytes(i)).sum();
    assert!(m1 >= 10_000_000, "values not retained? {m1}");
    for i in 0..n {
        c.done(i, 10);
    }
    for i in 0..n {
        c.start(i, 11 + i as u64, "z");
    }
    c.sleep_ms(3000);
    for i in 0..n {
        assert_eq!(c.min(i), Some(11), "expected Min() 11 on peer {i}");
    }
    let m2 = c.retained_total();
    let disk2: u64 = (0..n).map(|i| c.sim.disk_bytes(i)).sum();
    eprintln!("forget_mem: retained m0={m0} m1={m1} m2={m2}; disk {disk1} -> {disk2}");
    assert!(
        m2 <= m1 / 2,
        "memory use did not shrink enough: {m2} > {m1}/2"
    );
    assert!(
        disk2 <= disk1 / 2,
        "disk use did not shrink: {disk2} > {disk1}/2"
    );
    for seq in 0..n as u64 {
        for i in 0..n {
            assert_eq!(c.status(i, seq), Some(Fate::Forgotten));
            c.start(i, seq, random_bytes(&mut rng, 20));
        }
    }
    c.sleep_ms(1000);
    for seq in 0..n as u64 {
        for i in 0..n {
            assert_eq!(
                c.status(i, seq),
                Some(Fate::Forgotten),
                "Start() below Min() ran"
            );
        }
    }
}

#[test]
fn lab3a_test_done_max() {
    let n = 3;
    let mut c = PaxosCluster::new(16, n);
    c.start(0, 0, "x");
    assert!(c.waitn(0, n));
    for seq in 1..=10 {
        c.start(0, seq, "y");
        assert!(c.waitn(seq, n));
    }
    for i in 0..n {
        c.done(i, 10);
    }
    for i in 0..n {
        c.start(i, 10, "z");
    }
    c.sleep_ms(2000);
    for i in 0..n {
        assert_eq!(c.max(i), Some(10), "Max() wrong after Done()s on peer {i}");
    }
}

#[test]
fn lab3a_test_rpc_count() {
    let n = 3;
    let mut c = PaxosCluster::new(17, n);
    let ninst1 = 5u64;
    let mut seq = 0;
    for _ in 0..ninst1 {
        c.start(0, seq, "x");
        assert!(c.waitn(seq, n));
        seq += 1;
    }
    c.sleep_ms(2000);
    let total1 = c.rpc_total();
    let expected1 = ninst1 * n as u64 * n as u64;
    let ninst2 = 5u64;
    for _ in 0..ninst2 {
        for j in 0..n {
            c.start(j, seq, val(j + 100));
        }
        assert!(c.waitn(seq, n));
        seq += 1;
    }
    c.sleep_ms(2000);
    let total2 = c.rpc_total() - total1;
    let expected2 = ninst2 * n as u64 * 15;
    eprintln!(
        "rpc_count: uncontended {total1} messages for {ninst1} agreements (limit {expected1}); \
         contended {total2} for {ninst2} (limit {expected2})"
    );
    assert!(
        total1 <= expected1,
        "too many RPCs for serial Start()s: {total1}"
    );
    assert!(
        total2 <= expected2,
        "too many RPCs for concurrent Start()s: {total2}"
    );
    // Nothing while idle.
    let before = c.rpc_total();
    c.sleep_ms(5000);
    assert_eq!(c.rpc_total(), before, "messages while idle");
}

fn many(seed: u64, unreliable: bool, window: u64) {
    let n = 3;
    let mut c = PaxosCluster::new(seed, n);
    c.sim.set_all_unreliable(unreliable);
    for i in 0..n {
        c.start(i, 0, "0");
    }
    let ninst = 50u64;
    for seq in 1..ninst {
        // At most `window` undecided at a time.
        if seq >= window {
            let old = seq - window;
            let ok = c.sim.run_until(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_millis(5),
                |sim| {
                    (0..n).all(|i| {
                        matches!(
                            sim.node(i)
                                .map(|p| p.status(kv_replication::paxos::Seq(old))),
                            Some(Fate::Decided(_))
                        )
                    })
                },
            );
            assert!(ok, "instance {old} never decided everywhere");
        }
        for i in 0..n {
            c.start(i, seq, val(seq * 10 + i as u64));
        }
    }
    for seq in 0..ninst {
        assert!(c.waitn(seq, n), "instance {seq}");
    }
}

#[test]
fn lab3a_test_many() {
    many(18, false, 5);
}

#[test]
fn lab3a_test_old() {
    let mut c = PaxosCluster::new(19, 5);
    // Only peers 1, 2 and 3 exist at first; peer 4 never does.
    c.sim.crash(0, kv_engine::fs::Torn::None);
    c.sim.crash(4, kv_engine::fs::Torn::None);
    c.start(1, 1, "111");
    assert!(c.waitmajority(1));
    c.sim.restart(0);
    c.start(0, 1, "222");
    assert!(c.waitn(1, 4));
    for i in 0..4 {
        assert_eq!(c.status(i, 1), Some(Fate::Decided(val("111"))), "peer {i}");
    }
}

#[test]
fn lab3a_test_many_unreliable() {
    many(20, true, 3);
}

#[test]
fn lab3a_test_partition() {
    let n = 5;
    let mut c = PaxosCluster::new(21, n);
    // No decision if partitioned.
    c.sim.partition(&[&[0, 2], &[1, 3], &[4]]);
    c.start(1, 0, "111");
    c.sleep_ms(3000);
    assert_eq!(c.ndecided(0), 0, "decided in a minority");
    // Decision in majority partition.
    c.sim.partition(&[&[0], &[1, 2, 3], &[4]]);
    c.sleep_ms(2000);
    assert!(c.waitmajority(0));
    // All agree after full heal.
    c.start(0, 0, "1000");
    c.start(4, 0, "1004");
    c.sim.heal();
    assert!(c.waitn(0, n));
    assert_eq!(c.status(4, 0), Some(Fate::Decided(val("111"))));
    // One peer switches partitions (x20, as in the lab).
    for seq in 1..=20u64 {
        c.sim.partition(&[&[0, 1, 2], &[3, 4]]);
        c.start(0, seq, val(seq * 10));
        c.start(3, seq, val(seq * 10 + 1));
        assert!(c.waitmajority(seq));
        assert!(c.ndecided(seq) <= 3, "too many decided");
        c.sim.partition(&[&[0, 1], &[2, 3, 4]]);
        assert!(
            c.waitn(seq, n),
            "instance {seq} not decided after the switch"
        );
    }
    // One peer switches partitions, unreliable (x20).
    for seq in 21..=40u64 {
        c.sim.set_all_unreliable(true);
        c.sim.partition(&[&[0, 1, 2], &[3, 4]]);
        for i in 0..n {
            c.start(i, seq, val(seq * 10 + i as u64));
        }
        assert!(c.waitn(seq, 3));
        assert!(c.ndecided(seq) <= 3, "too many decided");
        c.sim.partition(&[&[0, 1], &[2, 3, 4]]);
        c.sim.set_all_unreliable(false);
        assert!(
            c.waitn(seq, n),
            "instance {seq} not decided after the switch"
        );
    }
}

#[test]
fn lab3a_test_lots() {
    let n = 5;
    let mut c = PaxosCluster::new(22, n);
    let mut rng = Rng::new(22);
    c.sim.set_all_unreliable(true);
    let start = c.sim.now();
    let end = start + std::time::Duration::from_secs(20);
    let mut next_partition = start;
    let mut next_start = start;
    let mut seq = 0u64;
    let mut undecided: Vec<u64> = Vec::new();
    while c.sim.now() < end {
        let now = c.sim.now();
        if now >= next_partition {
            let mut groups: [Vec<usize>; 3] = [vec![], vec![], vec![]];
            for i in 0..n {
                groups[rng.below(3) as usize].push(i);
            }
            c.sim
                .partition(&[&groups[0][..], &groups[1][..], &groups[2][..]]);
            next_partition = now + std::time::Duration::from_millis(rng.below(200));
        }
        if now >= next_start {
            undecided.retain(|&s| c.ndecided(s) < n);
            if undecided.len() < 10 {
                for i in 0..n {
                    c.start(i, seq, val(rng.below(10)));
                }
                undecided.push(seq);
                seq += 1;
            }
            next_start = now + std::time::Duration::from_millis(rng.below(300));
        }
        let wake = next_partition.min(next_start).min(end);
        c.sim.run_for(wake - c.sim.now());
        // The checker: consistency of everything started so far.
        for s in undecided.iter() {
            c.ndecided(*s);
        }
    }
    c.sim.set_all_unreliable(false);
    c.sim.heal();
    c.sleep_ms(5000);
    assert!(seq > 10, "too few instances started: {seq}");
    for s in 0..seq {
        assert!(
            c.ndecided(s) > n / 2,
            "instance {s} not decided by a majority"
        );
    }
}
