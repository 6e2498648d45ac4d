//! The Lab 5 (Spring 2015) diskv single-group tests (spec §9.3, tests 6–15) with the lab's
//! numbers, on the deterministic simulator: crashes lose every unsynced write (a harsher
//! model than the lab's SIGKILL, which keeps the page cache), restarts rebuild replicas
//! from their disks only, and lost disks are wiped. Every test also checks its whole
//! client history for linearizability.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kv_engine::fs::Torn;
use kv_engine::kv::Reply;
use kv_replication::rng::Rng;
use kv_replication::sim::kv::KvCalls;
use kv_replication::sim::kv::{append, check_appends, get, Action, KvCluster, Script, Scripts};
use kv_replication::sim::script::Harness;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rand_string(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// Crashes replica `i`, tearing its last unsynced write half the time.
fn kill(c: &mut KvCluster, i: usize) {
    let torn = if c.rng().chance(0.5) {
        Torn::Prefix(c.rng().next_u64())
    } else {
        Torn::None
    };
    c.sim.crash(i, torn);
}

/// The lab's k1/k2 workload: Append to k1 and Put k2, tracking the expected values.
struct Keys {
    k1: String,
    k2: String,
    rng: Rng,
}

impl Keys {
    fn new(seed: u64) -> Keys {
        Keys {
            k1: String::new(),
            k2: String::new(),
            rng: Rng::new(seed),
        }
    }

    fn write(&mut self, c: &mut KvCluster, ck: usize) {
        let more = rand_string(&mut self.rng, 10);
        c.append(ck, "k1", &more);
        self.k1.push_str(&more);
        self.k2 = rand_string(&mut self.rng, 10);
        c.put(ck, "k2", &self.k2);
    }

    fn append_k1(&mut self, c: &mut KvCluster, ck: usize) {
        let more = rand_string(&mut self.rng, 10);
        c.append(ck, "k1", &more);
        self.k1.push_str(&more);
    }

    fn verify(&self, c: &mut KvCluster, ck: usize) {
        assert_eq!(c.get_str(ck, "k1"), self.k1, "wrong k1");
        assert_eq!(c.get_str(ck, "k2"), self.k2, "wrong k2");
    }
}

#[test]
fn lab5_test_basic_persistence() {
    let mut c = KvCluster::new(51, 3);
    let ck = c.clerk_all(0);
    c.append(ck, "a", "x");
    c.append(ck, "a", "y");
    assert_eq!(c.get_str(ck, "a"), "xy");
    for i in 0..3 {
        kill(&mut c, i);
    }
    let fresh = c.clerk_all(1);
    c.begin(fresh, get("a"));
    c.sleep_ms(3000);
    assert!(
        !c.idle(fresh),
        "a Get returned while every replica was down"
    );
    for i in 0..3 {
        c.sim.restart(i);
    }
    c.sleep_ms(2000);
    c.append(ck, "a", "z");
    assert_eq!(c.get_str(ck, "a"), "xyz");
    assert!(c.wait(&[fresh], secs(10)), "the Get never completed");
    c.check_linearizable();
}

#[test]
fn lab5_test_one_restart() {
    let mut c = KvCluster::new(52, 3);
    let ck = c.clerk_all(0);
    let mut keys = Keys::new(52);
    keys.write(&mut c, ck);
    for i in 0..3 {
        keys.verify(&mut c, ck);
        kill(&mut c, i);
        c.sleep_ms(1000);
        keys.write(&mut c, ck);
        c.sim.restart(i);
        c.sleep_ms(2000);
    }
    keys.verify(&mut c, ck);
    c.check_linearizable();
}

/// Test5DiskUse and Test5AppendUse: `append_bytes` per round appended to k3 (1 or 1000).
/// Returns the largest of the three measurements and the budget.
fn disk_use(seed: u64, append_bytes: usize) -> (u64, u64) {
    let mut c = KvCluster::new(seed, 3);
    let ck = c.clerk_all(0);
    let mut rng = Rng::new(seed);
    let k1 = rand_string(&mut rng, 10);
    let k4 = rand_string(&mut rng, 10);
    let mut k2 = rand_string(&mut rng, 10);
    let mut k3 = rand_string(&mut rng, 10);
    c.append(ck, "k1", &k1);
    c.put(ck, "k2", &k2);
    c.put(ck, "k3", &k3);
    c.append(ck, "k4", &k4);
    let rounds = 100..120;
    for _n in rounds.clone() {
        k2 = rand_string(&mut rng, 1000);
        c.put(ck, "k2", &k2);
        let more = rand_string(&mut rng, append_bytes);
        c.append(ck, "k3", &more);
        k3.push_str(&more);
        assert_eq!(c.get_str(ck, "k4"), k4);
    }
    for _ in 0..5 {
        assert_eq!(c.get_str(ck, "k1"), k1);
        c.sleep_ms(100);
    }
    c.sleep_ms(2100);
    // Test5DiskUse: 20,000 bytes. Test5AppendUse: 3·n·1000 + 20,000, with n·1000 the
    // bytes appended to k3 (the stricter reading: n counts the rounds, not the loop index).
    let budget = if append_bytes == 1 {
        20_000
    } else {
        3 * (rounds.len() * append_bytes) as u64 + 20_000
    };
    let mut worst = 0;
    let mut measure = |c: &KvCluster, when: &str| {
        let total = c.disk_total();
        eprintln!("{when}: {total} bytes on disk (budget {budget})");
        assert!(
            total <= budget,
            "{when}: {total} bytes on disk, budget {budget}"
        );
        worst = worst.max(total);
    };
    measure(&c, "idle");
    for i in 0..3 {
        kill(&mut c, i);
    }
    measure(&c, "after killing all");
    for i in 0..3 {
        c.sim.restart(i);
    }
    c.sleep_ms(1000);
    assert_eq!(c.get_str(ck, "k3"), k3);
    c.sleep_ms(10);
    assert_eq!(c.get_str(ck, "k2"), k2);
    c.sleep_ms(10);
    assert_eq!(c.get_str(ck, "k1"), k1);
    measure(&c, "after restarting all");
    c.check_linearizable();
    (worst, budget)
}

#[test]
fn lab5_test_disk_use() {
    let (worst, budget) = disk_use(53, 1);
    assert!(worst <= budget);
}

#[test]
fn lab5_test_append_use() {
    let (worst, budget) = disk_use(54, 1000);
    assert!(worst <= budget);
}

/// The first part of the lost-disk tests: 7–13 rounds of writes with reads between.
fn lost_disk_setup(c: &mut KvCluster, ck: usize, keys: &mut Keys) {
    let rounds = c.rng().range(7, 13);
    for _ in 0..rounds {
        keys.write(c, ck);
    }
    c.sleep_ms(300);
    keys.verify(c, ck);
    c.sleep_ms(300);
    keys.verify(c, ck);
}

/// Kills replica `i` wiping its disk, writes while it is down, restarts it empty, and
/// writes again (the body of Test5OneLostDisk's loop).
fn lose_disk_and_rejoin(c: &mut KvCluster, ck: usize, keys: &mut Keys, i: usize) {
    keys.verify(c, ck);
    kill(c, i);
    c.sleep_ms(1000);
    keys.write(c, ck);
    c.sim.restart_wiped(i);
    keys.append_k1(c, ck);
    c.sleep_ms(10);
    keys.append_k1(c, ck);
    c.sleep_ms(2000);
}

#[test]
fn lab5_test_one_lost_disk() {
    let mut c = KvCluster::new(55, 3);
    let ck = c.clerk_all(0);
    let mut keys = Keys::new(55);
    lost_disk_setup(&mut c, ck, &mut keys);
    for i in 0..3 {
        lose_disk_and_rejoin(&mut c, ck, &mut keys, i);
        assert!(
            c.sim.node(i).is_some_and(|r| r.is_ready()),
            "replica {i} did not rebuild after losing its disk"
        );
    }
    keys.verify(&mut c, ck);
    c.check_linearizable();
}

#[test]
fn lab5_test_one_lost_one_down() {
    let mut c = KvCluster::new(56, 5);
    let ck = c.clerk_all(0);
    let mut keys = Keys::new(56);
    lost_disk_setup(&mut c, ck, &mut keys);
    kill(&mut c, 0);
    for i in 1..5 {
        lose_disk_and_rejoin(&mut c, ck, &mut keys, i);
    }
    keys.verify(&mut c, ck);
    c.sim.restart(0);
    c.put(ck, "a", "b");
    c.sleep_ms(1000);
    c.put(ck, "a", "c");
    keys.verify(&mut c, ck);
    assert_eq!(c.get_str(ck, "a"), "c");
    c.check_linearizable();
}

/// Appends "x <me> <n> y" to k1 every 200 ms until stopped; `count` is shared with the
/// test so it can run `check_appends` at the end.
struct PeriodicAppender {
    clerk: usize,
    me: usize,
    count: Rc<RefCell<Vec<usize>>>,
    sleeping: bool,
}

impl Script<KvCluster> for PeriodicAppender {
    fn next(&mut self, _c: &mut KvCluster, _last: Option<Reply>) -> Action {
        if !self.sleeping {
            self.sleeping = true;
            return Action::Sleep(Duration::from_millis(200));
        }
        self.sleeping = false;
        let n = {
            let mut counts = self.count.borrow_mut();
            counts[self.me] += 1;
            counts[self.me] - 1
        };
        Action::Run {
            clerk: self.clerk,
            op: append("k1", &format!("x {} {n} y", self.me)).into(),
        }
    }
}

#[test]
fn lab5_test_concurrent_crash_reliable() {
    let mut c = KvCluster::new(57, 3);
    let ck = c.clerk_all(0);
    c.put(ck, "k1", "");
    let counts = Rc::new(RefCell::new(vec![0; 5]));
    let mut scripts = Scripts::new();
    for me in 0..5 {
        let clerk = c.clerk_all(me % 3);
        scripts.add(PeriodicAppender {
            clerk,
            me,
            count: counts.clone(),
            sleeping: false,
        });
    }
    let get_k1 = |c: &mut KvCluster, scripts: &mut Scripts| -> String {
        let reader = c.clerk_all(0);
        c.begin(reader, get("k1"));
        let mut waited = Duration::ZERO;
        while !c.idle(reader) {
            assert!(waited < secs(30), "Get of k1 got no answer");
            c.drive(scripts, Duration::from_millis(10));
            waited += Duration::from_millis(10);
        }
        match c.take_result(reader) {
            Some(Reply::Value(v)) => String::from_utf8(v.unwrap_or_default().to_vec()).unwrap(),
            other => panic!("Get answered {other:?}"),
        }
    };
    for round in 0..6 {
        let i = round % 3;
        let wipe = round >= 3;
        kill(&mut c, i);
        c.drive(&mut scripts, secs(1));
        get_k1(&mut c, &mut scripts);
        if wipe {
            c.sim.restart_wiped(i);
        } else {
            c.sim.restart(i);
        }
        c.drive(&mut scripts, secs(3));
        get_k1(&mut c, &mut scripts);
    }
    c.drive(&mut scripts, secs(2));
    scripts.stop();
    assert!(c.drive(&mut scripts, secs(30)), "appenders did not stop");
    let counts = counts.borrow().clone();
    assert!(
        counts.iter().all(|&n| n >= 5),
        "too few appends: {counts:?}"
    );
    let value = c.get_str(ck, "k1");
    check_appends(&value, &counts).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        kill(&mut c, i);
        assert_eq!(c.get_str(ck, "k1"), value, "after killing {i}");
        c.sim.restart(i);
        assert_eq!(c.get_str(ck, "k1"), value, "after restarting {i}");
        c.sleep_ms(3000);
        assert_eq!(c.get_str(ck, "k1"), value, "3 s after restarting {i}");
    }
    c.pin_appends("k1", value.as_bytes());
    c.check_linearizable();
}

#[test]
fn lab5_test_simultaneous() {
    let mut c = KvCluster::new(58, 3);
    c.set_all_unreliable(true);
    let ck = c.clerk_all(0);
    let reader = c.clerk_all(1);
    let mut completed = 0;
    for round in 0..50usize {
        let appender = c.clerk_all(round % 3);
        c.begin(appender, append("k", &format!("x 0 {round} y")));
        let pause = c.rng().below(200);
        c.sleep_ms(pause);
        let i = round % 3;
        let wipe = c.rng().chance(0.5);
        kill(&mut c, i);
        c.sleep_ms(1000);
        let value = c.get_str(reader, "k");
        let done = completed + usize::from(c.idle(appender));
        check_appends(&value, &[done]).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if wipe {
            c.sim.restart_wiped(i);
        } else {
            c.sim.restart(i);
        }
        c.sleep_ms(2200);
        assert!(c.idle(appender), "round {round}: the Append did not finish");
        completed += 1;
    }
    let value = c.get_str(ck, "k");
    check_appends(&value, &[completed]).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        let status = c.sim.node(i).map(|r| r.status());
        eprintln!("Test5Simultaneous: replica {i}: {status:?}");
    }
    eprintln!(
        "Test5Simultaneous: {} operations, virtual time {}",
        c.history.len(),
        c.sim.now()
    );
    c.pin_appends("k", value.as_bytes());
    c.check_linearizable();
}

#[test]
fn lab5_test_rejoin_mix1() {
    let mut c = KvCluster::new(59, 5);
    let ck = c.clerk_all(0);
    let mut rng = Rng::new(59);
    let mut k1 = String::new();
    let mut add = |c: &mut KvCluster, k1: &mut String| {
        let more = rand_string(&mut rng, 10);
        c.append(ck, "k1", &more);
        k1.push_str(&more);
    };
    for _ in 0..c.rng().range(7, 13) {
        add(&mut c, &mut k1);
    }
    kill(&mut c, 0);
    add(&mut c, &mut k1);
    add(&mut c, &mut k1);
    kill(&mut c, 1);
    kill(&mut c, 2);
    kill(&mut c, 3);
    kill(&mut c, 4);
    c.sim.restart(0);
    c.sim.restart_wiped(1);
    c.sim.restart_wiped(2);
    let reader = c.clerk_all(0);
    c.begin(reader, get("k1"));
    c.sleep_ms(3000);
    assert!(
        !c.idle(reader),
        "a Get returned from a stale replica and two blank ones"
    );
    c.sim.restart(3);
    c.sim.restart(4);
    add(&mut c, &mut k1);
    assert_eq!(c.get_str(ck, "k1"), k1);
    assert!(c.wait(&[reader], secs(10)), "the early Get never completed");
    c.check_linearizable();
}

#[test]
fn lab5_test_rejoin_mix3() {
    let mut c = KvCluster::new(60, 5);
    let ck = c.clerk_all(0);
    let mut rng = Rng::new(60);
    let mut prefix = String::new();
    for _ in 0..c.rng().range(7, 13) {
        let more = rand_string(&mut rng, 10);
        c.append(ck, "k1", &more);
        prefix.push_str(&more);
    }
    kill(&mut c, 1);
    kill(&mut c, 2);
    for _ in 0..c.rng().range(100, 106) {
        let more = rand_string(&mut rng, 10);
        c.append(ck, "k1", &more);
        prefix.push_str(&more);
    }
    kill(&mut c, 0);
    c.sim.restart(1);
    c.sim.restart(2);
    c.sim.restart_wiped(0);
    let x1 = c.clerk_all(1);
    let x2 = c.clerk_all(2);
    c.begin(x1, append("k1", "x1"));
    c.begin(x2, append("k1", "x2"));
    assert!(
        c.wait(&[x1, x2], secs(30)),
        "the two Appends did not finish"
    );
    let value = c.get_str(ck, "k1");
    let a = format!("{prefix}x1x2");
    let b = format!("{prefix}x2x1");
    assert!(
        value == a || value == b,
        "lost or reordered appends: got {} bytes, want {}",
        value.len(),
        a.len()
    );
    c.check_linearizable();
}

/// Beyond the lab: a replica that crashes in the middle of rebuilding after a lost disk
/// must come back still rebuilding (its disk says so), never as a blank voter.
#[test]
fn a_rebuild_interrupted_by_a_crash_resumes_after_restart() {
    let mut c = KvCluster::new(61, 3);
    let ck = c.clerk(&[0, 1]);
    let mut keys = Keys::new(61);
    keys.write(&mut c, ck);
    // Replica 2 loses its disk while cut off, so its rebuild cannot finish.
    c.sim.partition(&[&[0, 1], &[2]]);
    c.sim.restart_wiped(2);
    c.sleep_ms(500);
    assert!(!c.sim.node(2).is_some_and(|r| r.is_ready()));
    kill(&mut c, 2);
    c.sim.restart(2);
    assert!(
        !c.sim.node(2).is_some_and(|r| r.is_ready()),
        "a replica restarted mid-rebuild came back as a voter"
    );
    keys.write(&mut c, ck);
    c.sim.heal();
    c.sleep_ms(2000);
    assert!(
        c.sim.node(2).is_some_and(|r| r.is_ready()),
        "rebuild never finished"
    );
    // With replica 0 down, replica 2 must now be part of the majority.
    kill(&mut c, 0);
    let ck2 = c.clerk(&[1, 2]);
    keys.write(&mut c, ck2);
    keys.verify(&mut c, ck2);
    c.check_linearizable();
}

/// One round of overwrites: every clerk puts `value` (tagged with the round) to one of 100
/// keys at once, so instances carry batches as in a loaded group; all must succeed.
fn overwrite_round(c: &mut KvCluster, clerks: &[usize], rng: &mut Rng, value: &str, round: u64) {
    for (n, &ck) in clerks.iter().enumerate() {
        let key = format!("key-{}", rng.below(100));
        c.begin(
            ck,
            kv_engine::kv::Op::Put {
                key: key.into_bytes().into(),
                value: format!("{round}.{n}{value}").into_bytes().into(),
            },
        );
    }
    assert!(c.wait(clerks, secs(10)), "round {round} did not finish");
    for &ck in clerks {
        assert!(matches!(c.take_result(ck), Some(Reply::Ok)));
    }
}

/// Beyond the lab: a long run of overwrites over a fixed key set. Each replica's disk must
/// stay proportional to its live data however long the group runs — the snapshot interval
/// once followed the last snapshot's size, which includes the Paxos instances kept for
/// peers, and every snapshot came out bigger than the one before.
#[test]
fn steady_overwrites_keep_every_disk_proportional_to_live_data() {
    let mut c = KvCluster::new(61, 3);
    let clerks: Vec<usize> = (0..8).map(|i| c.clerk_all(i % 3)).collect();
    let mut rng = Rng::new(61);
    let value = "v".repeat(1000);
    let mut worst = 0.0f64;
    for round in 0..2500u64 {
        overwrite_round(&mut c, &clerks, &mut rng, &value, round);
        if round % 100 == 99 {
            for i in 0..3 {
                let live = c.sim.node(i).map_or(0, |r| r.machine().live_bytes()).max(1);
                worst = worst.max(c.sim.disk_bytes(i) as f64 / live as f64);
            }
        }
    }
    println!("20,000 overwrites of 100 keys: worst disk / live data = {worst:.2}");
    assert!(worst < 6.0, "disk grew to {worst:.1}x the live data");
}

/// Beyond the lab: under steady load the replicas of a group take their snapshots in turn,
/// never all at once (their logs outgrow the threshold at the same instance, and a
/// snapshot's write and fsync would slow every replica's WAL fsyncs together).
#[test]
fn replicas_under_steady_load_snapshot_in_turn() {
    let mut c = KvCluster::new(62, 3);
    let clerks: Vec<usize> = (0..8).map(|i| c.clerk_all(i % 3)).collect();
    let mut rng = Rng::new(62);
    let value = "v".repeat(1000);
    // Where each replica's snapshots began: the instance its next snapshot would cover from.
    let mut taken: Vec<Vec<u64>> = vec![Vec::new(); 3];
    for round in 0..1500u64 {
        overwrite_round(&mut c, &clerks, &mut rng, &value, round);
        for (i, seen) in taken.iter_mut().enumerate() {
            let next = c.sim.node(i).map_or(0, |r| r.status().snapshot_next.0);
            if next > 0 && seen.last() != Some(&next) {
                seen.push(next);
            }
        }
    }
    // Two replicas' snapshots "together": taken within a few instances of each other.
    let together = |a: &[u64], b: &[u64]| {
        a.iter()
            .filter(|&&p| b.iter().any(|&q| p.abs_diff(q) <= 2))
            .count()
    };
    let counts: Vec<usize> = taken.iter().map(Vec::len).collect();
    let overlaps: Vec<usize> = (0..3)
        .map(|i| together(&taken[i], &taken[(i + 1) % 3]))
        .collect();
    println!(
        "snapshots per replica {counts:?}; taken together with the next replica's {overlaps:?}"
    );
    assert!(
        counts.iter().all(|&n| n >= 20),
        "too few snapshots: {counts:?}"
    );
    for (i, &o) in overlaps.iter().enumerate() {
        assert!(
            o * 10 <= counts[i],
            "replica {i} took {o} of its {} snapshots together with replica {}'s",
            counts[i],
            (i + 1) % 3
        );
    }
}

/// Beyond the lab: a snapshot taken to compact the log is written while the replica goes
/// on, and nothing waits for it — so a crash may lose it after the `done` it implies was
/// announced. Crashes timed into that window, with the group going on while the replica is
/// down (so its peers forget what it announced done), lose no acknowledged write, and the
/// history stays linearizable.
#[test]
fn crashes_that_lose_a_compaction_lose_no_acknowledged_write() {
    let mut c = KvCluster::new(63, 3);
    let clerks: Vec<usize> = (0..6).map(|i| c.clerk_all(i % 3)).collect();
    let pad = "p".repeat(200);
    // Per clerk: its key's value so far, and the token of the append in flight.
    let mut values = vec![String::new(); clerks.len()];
    let mut sent = vec![String::new(); clerks.len()];
    let mut tokens = 0u64;
    let mut crashes = 0;
    let mut down: Option<(usize, u64)> = None;
    for round in 0u64.. {
        assert!(
            round < 400_000,
            "only {crashes} crashes hit a compaction ({tokens} appends)"
        );
        for (n, &ck) in clerks.iter().enumerate() {
            if !c.idle(ck) {
                continue;
            }
            if !sent[n].is_empty() {
                let reply = c.take_result(ck);
                assert!(
                    matches!(reply, Some(Reply::Appended(_))),
                    "append: {reply:?}"
                );
                values[n].push_str(&std::mem::take(&mut sent[n]));
            }
            tokens += 1;
            sent[n] = format!("<{tokens}{pad}>");
            c.begin(ck, append(&format!("k{n}"), &sent[n]));
        }
        c.run_for(Duration::from_micros(500));
        match down {
            // Down for 250 ms of the group's progress, then back.
            Some((i, since)) if round >= since + 500 => {
                c.sim.restart(i);
                down = None;
            }
            Some(_) => {}
            None if crashes == 12 => break,
            None => {
                if let Some(i) = (0..3).find(|&i| c.sim.compaction_pending(i)) {
                    kill(&mut c, i);
                    down = Some((i, round));
                    crashes += 1;
                }
            }
        }
    }
    assert!(c.wait(&clerks, secs(30)), "the last appends did not finish");
    for (n, &ck) in clerks.iter().enumerate() {
        if !sent[n].is_empty() {
            let reply = c.take_result(ck);
            assert!(
                matches!(reply, Some(Reply::Appended(_))),
                "append: {reply:?}"
            );
            values[n].push_str(&sent[n]);
        }
    }
    let lost: u64 = (0..3).map(|i| c.sim.counters(i).compactions_lost).sum();
    let installs: Vec<u64> = (0..3)
        .map(|i| c.sim.node(i).map_or(0, |r| r.status().installs))
        .collect();
    println!(
        "{tokens} appends; state transfers installed since each replica's last start: {installs:?}"
    );
    assert_eq!(lost, 12, "every crash lost the compaction it interrupted");
    let reader = c.clerk_all(0);
    for (n, value) in values.iter().enumerate() {
        assert_eq!(&c.get_str(reader, &format!("k{n}")), value, "key k{n}");
    }
    c.check_linearizable();
}
