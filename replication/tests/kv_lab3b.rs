//! The Lab 3B (Spring 2015) kvpaxos tests, scenario by scenario with the lab's numbers
//! (spec §6.3), on the deterministic simulator in virtual time. Every test also checks its
//! whole client history for linearizability.

use std::time::Duration;

use kv_engine::kv::Reply;
use kv_replication::rng::Rng;
use kv_replication::sim::kv::KvCalls;
use kv_replication::sim::kv::{
    append, check_appends, get, put, value_text, Action, KvCluster, Script, Scripts,
};
use kv_replication::sim::script::Harness;
use kv_replication::sim::SimOptions;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rand_string(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// One round of the lab's "concurrent clients": 15 one-shot clients, each bound to one
/// random server, each doing a Put(b, random) or a Get(b); then every server must read the
/// same b.
fn concurrent_clients_round(c: &mut KvCluster, per_server: &[usize]) {
    let n = c.replicas() as u64;
    let mut clerks = Vec::new();
    for _ in 0..15 {
        let server = c.rng().below(n) as usize;
        let clerk = c.clerk(&[server]);
        let op = if c.rng().chance(0.5) {
            let v = c.rng().next_u64().to_string();
            put("b", &v)
        } else {
            get("b")
        };
        c.begin(clerk, op);
        clerks.push(clerk);
    }
    assert!(
        c.wait(&clerks, secs(60)),
        "concurrent clients did not finish"
    );
    let first = c.get_str(per_server[0], "b");
    for &clerk in &per_server[1..] {
        assert_eq!(c.get_str(clerk, "b"), first, "servers disagree on b");
    }
}

#[test]
fn lab3b_test_basic() {
    let mut c = KvCluster::new(31, 3);
    let ck = c.clerk_all(0);
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    // Basic put/append/get.
    c.append(ck, "app", "x");
    c.append(ck, "app", "y");
    assert_eq!(c.get_str(ck, "app"), "xy");
    c.put(ck, "a", "aa");
    assert_eq!(c.get_str(ck, "a"), "aa");
    c.put(per_server[1], "a", "aaa");
    assert_eq!(c.get_str(per_server[2], "a"), "aaa");
    assert_eq!(c.get_str(per_server[1], "a"), "aaa");
    assert_eq!(c.get_str(ck, "a"), "aaa");
    // Concurrent clients.
    for _ in 0..20 {
        concurrent_clients_round(&mut c, &per_server);
    }
    c.check_linearizable();
}

#[test]
fn lab3b_test_done_frees_log_memory() {
    let mut c = KvCluster::new(32, 3);
    let ck = c.clerk_all(0);
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    c.put(ck, "a", "aa");
    assert_eq!(c.get_str(ck, "a"), "aa");
    let m0 = c.retained_total();
    let mut rng = Rng::new(32);
    for _pass in 0..2 {
        for i in 0..10 {
            let key = i.to_string();
            let value = rand_string(&mut rng, 1024 * 1024);
            c.put(per_server[i % 3], &key, &value);
            assert!(
                c.get_str(per_server[i % 3], &key) == value,
                "wrong value of {key}"
            );
        }
    }
    // Spread Done information.
    for _pass in 0..2 {
        for &clerk in &per_server {
            c.put(clerk, "a", "aa");
            assert_eq!(c.get_str(clerk, "a"), "aa");
        }
    }
    c.sleep_ms(1000);
    let m1 = c.retained_total();
    let budget = m0 + 3 * 10 * 1024 * 1024 * 2;
    eprintln!("TestDone: m0 {m0} bytes, m1 {m1} bytes, budget {budget}");
    assert!(
        m1 <= budget,
        "retained {m1} bytes, more than m0 {m0} + 60 MB = {budget}"
    );
    c.check_linearizable();
}

#[test]
fn lab3b_test_partition() {
    let mut c = KvCluster::new(33, 5);
    let per_server: Vec<usize> = (0..5).map(|i| c.clerk(&[i])).collect();
    // No partition.
    c.put(per_server[0], "1", "12");
    c.put(per_server[2], "1", "13");
    assert_eq!(c.get_str(per_server[3], "1"), "13");
    // Progress in majority.
    c.sim.partition(&[&[2, 3, 4], &[0, 1]]);
    c.put(per_server[2], "1", "14");
    assert_eq!(c.get_str(per_server[4], "1"), "14");
    // No progress in minority.
    let put15 = c.clerk(&[0]);
    let get1 = c.clerk(&[1]);
    c.begin(put15, put("1", "15"));
    c.begin(get1, get("1"));
    c.sleep_ms(1000);
    assert!(!c.idle(put15), "Put in the minority completed");
    assert!(!c.idle(get1), "Get in the minority completed");
    assert_eq!(c.get_str(per_server[4], "1"), "14");
    c.put(per_server[3], "1", "16");
    assert_eq!(c.get_str(per_server[4], "1"), "16");
    // Completion after heal.
    c.sim.partition(&[&[0, 2, 3, 4], &[1]]);
    assert!(c.wait(&[put15], secs(3)), "Put did not complete after heal");
    assert!(!c.idle(get1), "Get on the isolated server completed");
    assert_eq!(c.get_str(per_server[4], "1"), "15");
    assert_eq!(c.get_str(per_server[0], "1"), "15");
    c.sim.partition(&[&[0, 1, 2], &[3, 4]]);
    assert!(c.wait(&[get1], secs(10)), "Get did not complete after heal");
    assert_eq!(c.get_str(per_server[1], "1"), "15");
    c.check_linearizable();
}

/// The lab's "sequence of puts": Get the client's key, Append "0", "1", "2", sleep
/// 100 ms, then two Gets must read the expected value.
struct SequenceOfAppends {
    clerk: usize,
    key: String,
    step: usize,
    expected: String,
}

impl Script<KvCluster> for SequenceOfAppends {
    fn next(&mut self, _c: &mut KvCluster, last: Option<Reply>) -> Action {
        let step = self.step;
        self.step += 1;
        match step {
            0 => Action::Run {
                clerk: self.clerk,
                op: get(&self.key).into(),
            },
            1..=3 => {
                if step == 1 {
                    self.expected = value_text(last);
                }
                let suffix = (step - 1).to_string();
                self.expected.push_str(&suffix);
                Action::Run {
                    clerk: self.clerk,
                    op: append(&self.key, &suffix).into(),
                }
            }
            4 => Action::Sleep(Duration::from_millis(100)),
            5 => Action::Run {
                clerk: self.clerk,
                op: get(&self.key).into(),
            },
            6 | 7 => {
                assert_eq!(value_text(last), self.expected, "key {}", self.key);
                if step == 6 {
                    Action::Run {
                        clerk: self.clerk,
                        op: get(&self.key).into(),
                    }
                } else {
                    Action::Finish
                }
            }
            _ => Action::Finish,
        }
    }
}

/// The lab's concurrent appender: `count` Appends of "x <me> <n> y" to one key.
pub struct Appender {
    clerk: usize,
    me: usize,
    sent: usize,
    count: usize,
}

impl Script<KvCluster> for Appender {
    fn next(&mut self, _c: &mut KvCluster, _last: Option<Reply>) -> Action {
        if self.sent == self.count {
            return Action::Finish;
        }
        let value = format!("x {} {} y", self.me, self.sent);
        self.sent += 1;
        Action::Run {
            clerk: self.clerk,
            op: append("k", &value).into(),
        }
    }
}

fn shuffled(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut servers: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        servers.swap(i, rng.below(i as u64 + 1) as usize);
    }
    servers
}

#[test]
fn lab3b_test_unreliable() {
    let mut c = KvCluster::new(34, 3);
    c.set_all_unreliable(true);
    let ck = c.clerk_all(0);
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    // Basic put/get, unreliable.
    c.put(ck, "a", "aa");
    assert_eq!(c.get_str(ck, "a"), "aa");
    c.put(per_server[1], "a", "aaa");
    assert_eq!(c.get_str(per_server[2], "a"), "aaa");
    assert_eq!(c.get_str(per_server[1], "a"), "aaa");
    assert_eq!(c.get_str(ck, "a"), "aaa");
    // Sequence of puts, unreliable.
    for _round in 0..6 {
        let mut scripts = Scripts::new();
        for cli in 0..5 {
            let servers = shuffled(c.rng(), 3);
            let clerk = c.clerk(&servers);
            scripts.add(SequenceOfAppends {
                clerk,
                key: cli.to_string(),
                step: 0,
                expected: String::new(),
            });
        }
        assert!(c.drive(&mut scripts, secs(60)), "sequence of puts stuck");
    }
    // Concurrent clients, unreliable.
    for _ in 0..20 {
        concurrent_clients_round(&mut c, &per_server);
    }
    // Concurrent Append to same key, unreliable.
    c.put(ck, "k", "");
    let mut scripts = Scripts::new();
    for me in 0..5 {
        let servers = shuffled(c.rng(), 3);
        let clerk = c.clerk(&servers);
        scripts.add(Appender {
            clerk,
            me,
            sent: 0,
            count: 5,
        });
    }
    assert!(c.drive(&mut scripts, secs(60)), "appenders stuck");
    let value = c.get_str(ck, "k");
    check_appends(&value, &[5; 5]).unwrap_or_else(|e| panic!("{e}: {value:?}"));
    for &clerk in &per_server {
        assert_eq!(c.get_str(clerk, "k"), value, "servers disagree on k");
    }
    c.pin_appends("k", value.as_bytes());
    c.check_linearizable();
}

/// A client of the hole and many-partition tests: its own key, 50/50 a write or a Get
/// checked against what it last wrote.
struct Checker {
    key: String,
    servers: Vec<usize>,
    /// Use a fresh one-shot clerk per op, first server chosen at random (TestHole).
    one_shot: bool,
    clerk: Option<usize>,
    appends: bool,
    expected: String,
    pending: Option<String>,
    started: bool,
    rng: Rng,
}

impl Checker {
    fn new(key: String, servers: Vec<usize>, one_shot: bool, appends: bool, seed: u64) -> Self {
        Checker {
            key,
            servers,
            one_shot,
            clerk: None,
            appends,
            expected: String::new(),
            pending: None,
            started: false,
            rng: Rng::new(seed),
        }
    }

    fn clerk(&mut self, c: &mut KvCluster) -> usize {
        if self.one_shot || self.clerk.is_none() {
            let mut servers = self.servers.clone();
            let first = self.rng.below(servers.len() as u64) as usize;
            servers.rotate_left(first);
            self.clerk = Some(c.clerk(&servers));
        }
        self.clerk.expect("set above")
    }
}

impl Script<KvCluster> for Checker {
    fn next(&mut self, c: &mut KvCluster, last: Option<Reply>) -> Action {
        match self.pending.take() {
            Some(written) => self.expected = written,
            None if self.started => {
                assert_eq!(value_text(last), self.expected, "key {}", self.key);
            }
            None => {}
        }
        let clerk = self.clerk(c);
        if !self.started {
            self.started = true;
            self.pending = Some(String::new());
            return Action::Run {
                clerk,
                op: put(&self.key, "").into(),
            };
        }
        if self.rng.chance(0.5) {
            let v = self.rng.next_u64().to_string();
            let (op, written) = if self.appends {
                (append(&self.key, &v), format!("{}{v}", self.expected))
            } else {
                (put(&self.key, &v), v)
            };
            self.pending = Some(written);
            Action::Run {
                clerk,
                op: op.into(),
            }
        } else {
            Action::Run {
                clerk,
                op: get(&self.key).into(),
            }
        }
    }
}

#[test]
fn lab3b_test_hole() {
    let mut c = KvCluster::new(35, 5);
    for iteration in 0..5u64 {
        c.sim.heal();
        let ck2 = c.clerk(&[2]);
        c.put(ck2, "q", "q");
        let mut scripts = Scripts::new();
        for cli in 0..10u64 {
            scripts.add(Checker::new(
                format!("{iteration}-{cli}"),
                vec![0, 1],
                true,
                false,
                iteration * 100 + cli,
            ));
        }
        c.drive(&mut scripts, secs(3));
        c.sim.partition(&[&[2, 3, 4], &[0, 1]]);
        assert_eq!(c.get_str(ck2, "q"), "q");
        c.put(ck2, "q", "qq");
        assert_eq!(c.get_str(ck2, "q"), "qq");
        c.sim.heal();
        scripts.stop();
        assert!(
            c.drive(&mut scripts, secs(30)),
            "{} clients did not finish after heal",
            scripts.unfinished()
        );
        assert_eq!(c.get_str(ck2, "q"), "qq");
    }
    c.check_linearizable();
}

#[test]
fn lab3b_test_many_partition() {
    let mut c = KvCluster::new(36, 5);
    c.set_all_unreliable(true);
    let mut scripts = Scripts::new();
    for cli in 0..10u64 {
        let servers = shuffled(c.rng(), 5);
        scripts.add(Checker::new(
            cli.to_string(),
            servers,
            false,
            true,
            600 + cli,
        ));
    }
    let end = c.sim.now() + secs(20);
    while c.sim.now() < end {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); 3];
        for server in 0..5 {
            groups[c.rng().below(3) as usize].push(server);
        }
        let refs: Vec<&[usize]> = groups.iter().map(|g| g.as_slice()).collect();
        c.sim.partition(&refs);
        let wait = c.rng().below(200);
        c.drive(&mut scripts, Duration::from_millis(wait));
    }
    c.sim.heal();
    scripts.stop();
    assert!(
        c.drive(&mut scripts, secs(60)),
        "{} clients did not finish after heal",
        scripts.unfinished()
    );
    eprintln!(
        "TestManyPartition: {} operations, {} completed",
        c.history.len(),
        c.history
            .operations()
            .iter()
            .filter(|o| matches!(
                o.outcome,
                kv_replication::linearizability::Outcome::Returned { .. }
            ))
            .count()
    );
    c.check_linearizable();
}

fn applied_max(c: &KvCluster) -> u64 {
    (0..c.replicas())
        .filter_map(|i| c.sim.node(i))
        .filter_map(|r| r.status().applied)
        .map(|s| s.0 + 1)
        .max()
        .unwrap_or(0)
}

#[test]
fn reads_at_every_replica_append_nothing_to_the_log() {
    let mut c = KvCluster::new(35, 3);
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    c.put(per_server[0], "k", "v");
    c.sleep_ms(200);
    let before = applied_max(&c);
    for _ in 0..20 {
        for &ck in &per_server {
            assert_eq!(c.get_str(ck, "k"), "v");
        }
    }
    c.sleep_ms(200);
    assert_eq!(applied_max(&c), before, "reads appended log instances");
    let indexed: u64 = (0..3)
        .filter_map(|i| c.sim.node(i))
        .map(|r| r.status().reads_indexed)
        .sum();
    assert_eq!(indexed, 60, "every read was answered at a read index");
    c.check_linearizable();
}

/// Cuts the leader off alone, lets the others elect a leader and overwrite `k`, then reads
/// `k` at the old leader: returns the clerk of that read.
fn read_at_deposed_leader(c: &mut KvCluster) -> usize {
    let per_server: Vec<usize> = (0..3).map(|i| c.clerk(&[i])).collect();
    c.put(per_server[0], "k", "old");
    let leader = c.leader().expect("a leader after a put");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.sim.partition(&[&others, &[leader]]);
    c.put(per_server[others[0]], "k", "new");
    let stale = c.clerk(&[leader]);
    c.begin(stale, get("k"));
    c.sleep_ms(1000);
    stale
}

#[test]
fn a_deposed_leader_answers_no_read_until_it_hears_from_a_majority() {
    let mut c = KvCluster::new(37, 3);
    let reader = read_at_deposed_leader(&mut c);
    assert!(!c.idle(reader), "a deposed leader answered a read");
    c.sim.heal();
    assert!(
        c.wait(&[reader], secs(5)),
        "the read did not complete after heal"
    );
    assert_eq!(value_text(c.take_result(reader)), "new");
    c.check_linearizable();
}

#[test]
fn without_leadership_confirmation_a_deposed_leader_serves_a_stale_read() {
    let mut c = KvCluster::with(39, SimOptions::new(3), |config| {
        config.unsafe_skip_read_confirmation = true;
    });
    let reader = read_at_deposed_leader(&mut c);
    assert!(c.idle(reader), "the mutated leader did not answer");
    assert_eq!(
        value_text(c.take_result(reader)),
        "old",
        "the mutation is not exercised"
    );
}
