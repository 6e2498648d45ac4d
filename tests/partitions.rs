//! Network partitions of real processes: every `kv node` in a Linux network namespace of
//! its own, a veth link between every two nodes (and from each to the clients'
//! namespace), and a nemesis that cuts links — a minority isolated, the leader isolated,
//! Jepsen's majorities ring, one-way loss either way — combined with SIGKILL, SIGSTOP and a wiped
//! data directory, for each mode: a single Paxos group, a sharded cluster and a
//! primary/backup one. Concurrent native clients (in the clients' namespace, reaching
//! every node over its own link, so a client may well be talking to the cut-off side)
//! record every operation; after the faults are healed every key is read, the history
//! must be linearizable — no acknowledged write lost, duplicated or reordered, no stale
//! read — and the same history with one acknowledged append taken out of a final read
//! must not be (so the check could have failed).
//!
//! Each fault is first verified to cut exactly what it says (`Net::verify`: datagrams
//! over cut directions vanish, all others arrive), and held until the clients have made
//! progress under it — or, in primary/backup mode, until the view service has replaced
//! the server cut off — never for a fixed time. The faults stay inside what each mode
//! promises to survive with service (README: Primary/backup mode, What loses nothing);
//! one primary/backup fault goes beyond it (primary and backup cut from each other), and
//! there only safety is checked.
//!
//! Needs root and iproute2 (`ip`, `tc`); CI runs as root and `.ci/run` installs iproute2.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::netns::Net;
use common::workload::{self, assert_a_lost_write_would_show, assert_linearizable, Load};
use common::{wait_for, Cluster, Shape};
use kv_client::any::{AnyClient, Shared};
use kv_engine::kv::Op;
use kv_replication::linearizability::History;
use kv_server::client::ClientOptions;
use kv_server::config::{ClusterConfig, Mode, ReadLease};

const KEYS: u64 = 6;
const CLIENTS: usize = 6;
/// Times each schedule runs.
const ROUNDS: u32 = 2;
/// Operations the clients must answer under each fault (and between faults).
const PROGRESS: u64 = 1500;
/// Hang guards: the slowest fault here (a sharded node stopped, calls to it waiting out
/// the clerk's 5 s) takes about 10 s.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// An op's attempt on one node, and the whole op, before it is given up as unknown.
const ATTEMPT: Duration = Duration::from_millis(500);
const DEADLINE: Duration = Duration::from_secs(8);

/// A cluster of `hosts.len()` nodes, each in its namespace, with recording clients.
struct Run {
    // Fields drop in order: the nodes die before their namespaces go.
    load: Option<Load>,
    rt: tokio::runtime::Runtime,
    cluster: Cluster,
    net: Net,
    history: History,
    epoch: Instant,
}

impl Run {
    fn start(nodes: u32, shape: Shape) -> Run {
        Run::start_edited(nodes, shape, |_| {})
    }

    /// [`Run::start`] with the cluster file changed by `edit`.
    fn start_edited(nodes: u32, shape: Shape, edit: impl FnOnce(&mut ClusterConfig)) -> Run {
        let net = Net::new(nodes);
        // The test's own sockets (clients, status, `kv admin`) live in the clients'
        // namespace; so do the runtime's worker threads, started after this.
        net.enter_clients();
        let cluster = Cluster::start_hosted(&net.hosts(), shape, net.configure(), edit);
        net.verify();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (history, epoch) = (History::new(), Instant::now());
        let shared = Shared::new(&cluster.config).expect("the cluster secret");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| (client(&cluster, &shared, i), DEADLINE))
            .collect();
        let load = workload::spawn_clients(&rt, clients, KEYS, history.clone(), epoch);
        let run = Run {
            load: Some(load),
            rt,
            cluster,
            net,
            history,
            epoch,
        };
        run.progress("clients working before any fault");
        run
    }

    fn load(&self) -> &Load {
        self.load.as_ref().expect("clients running")
    }

    fn progress(&self, what: &str) {
        let started = Instant::now();
        self.load().wait_progress(PROGRESS, what, PROGRESS_TIMEOUT);
        eprintln!("{what}: {PROGRESS} operations in {:?}", started.elapsed());
    }

    /// Stops the clients, heals everything, reads every key and checks the history.
    fn finish(mut self) {
        self.net.heal();
        self.net.verify();
        self.progress("clients working once healed");
        let acked = self.load.take().expect("clients running").finish(&self.rt);
        self.cluster.wait_ready_all();
        let shared = Shared::new(&self.cluster.config).expect("the cluster secret");
        let mut reader = (client(&self.cluster, &shared, 0), DEADLINE * 4);
        workload::closing_writes(&self.rt, &mut reader, &self.history, self.epoch);
        workload::final_reads(&self.rt, &mut reader, KEYS, &self.history, self.epoch);
        eprintln!(
            "{} operations, {acked} writes acknowledged",
            self.history.len()
        );
        assert_linearizable(&self.history);
        assert_a_lost_write_would_show(&self.history);
        self.cluster.assert_no_panic();
    }
}

fn client(cluster: &Cluster, shared: &Shared, index: usize) -> AnyClient {
    let options = ClientOptions {
        attempt_timeout: ATTEMPT,
        deadline: DEADLINE,
    };
    AnyClient::new(&cluster.config, shared, index, options)
}

/// A node whose (single-group) replica says it leads, among those that answer.
fn leader(cluster: &Cluster) -> u32 {
    wait_for("a node that leads", PROGRESS_TIMEOUT, || {
        (0..cluster.len()).find(|&id| {
            cluster
                .status(id)
                .is_some_and(|text| text.lines().any(|l| l.trim() == "role: leader"))
        })
    })
}

/// Read rounds the nodes released under a lease.
fn leased_rounds(cluster: &Cluster) -> u64 {
    let ids: Vec<u32> = (0..cluster.len()).collect();
    cluster.status_sum(&ids, "read_rounds_leased")
}

#[test]
fn a_single_group_under_partitions_crashes_and_a_lost_disk_stays_linearizable() {
    let run = single_group_schedule(|_| {});
    assert_eq!(leased_rounds(&run.cluster), 0);
    run.finish();
}

/// The same schedule with leader leases on: a leader cut off alone, one whose messages are
/// lost and one SIGSTOPped must stop answering reads before another can acknowledge a
/// write (the clocks here are one machine's, so only the protocol is tested, not drift).
#[test]
fn a_single_group_with_read_leases_under_partitions_and_crashes_stays_linearizable() {
    let run = single_group_schedule(|config| config.read_lease = Some(ReadLease::new(300)));
    let leased = leased_rounds(&run.cluster);
    eprintln!("read rounds under a lease: {leased}");
    assert!(leased > 0, "no read was served under a lease");
    run.finish();
}

/// Five nodes, one group, clients throughout: the leader isolated, a minority cut off
/// with a SIGKILL inside it, the majorities ring, the leader's messages lost, a bare
/// majority (one node SIGSTOPped, one cut off), a wiped node half cut off — twice.
fn single_group_schedule(edit: impl FnOnce(&mut ClusterConfig)) -> Run {
    const N: u32 = 5;
    let shape = Shape {
        replicas: N,
        groups: 0,
        shards: 1,
        redis_cluster: false,
        mode: Mode::Paxos,
    };
    let mut run = Run::start_edited(N, shape, edit);

    // Twice over: the victims follow the leader, wherever it is by then.
    for _ in 0..ROUNDS {
        // The leader cut off from every other node (clients still reach it).
        let old = leader(&run.cluster);
        run.net.isolate(&[old]);
        run.net.verify();
        run.progress("the majority serving without the old leader");
        run.net.heal();

        // A minority of two cut off; one of them SIGKILLed and restarted inside it.
        let (a, b) = ((old + 1) % N, (old + 2) % N);
        run.net.isolate(&[a, b]);
        run.net.verify();
        run.cluster.kill_node(a);
        run.cluster.start_node(a);
        run.progress("the majority serving with a minority cut off");
        run.net.heal();

        // The majorities ring: every node sees a majority, no two the same one.
        run.net.ring();
        run.net.verify();
        run.progress("serving in a majorities ring");
        run.net.heal();

        // One-way loss: the leader hears every other node, none hears it.
        let current = leader(&run.cluster);
        for other in (0..N).filter(|&id| id != current) {
            run.net.drop_from(current, other);
        }
        run.net.verify();
        run.progress("serving while the leader's messages are lost");
        run.net.heal();

        // One-way loss the other way: every node hears the leader, it hears none of them.
        // Its accepts and gossip still arrive, so the others must stop waiting for it.
        let current = leader(&run.cluster);
        for other in (0..N).filter(|&id| id != current) {
            run.net.drop_from(other, current);
        }
        run.net.verify();
        run.progress("serving while every message to the leader is lost");
        run.net.heal();

        // One node SIGSTOPped and another cut off: three of five left, a bare majority.
        let (stopped, cut) = (current, (current + 3) % N);
        run.cluster.signal(stopped, libc::SIGSTOP);
        run.net.isolate(&[cut]);
        run.net.verify();
        run.progress("a bare majority serving");
        run.cluster.signal(stopped, libc::SIGCONT);
        run.net.heal();

        // A lost disk: the node restarts on an empty directory while cut off from two peers,
        // so it has to rebuild from the others once healed, under load.
        let wiped = (current + 1) % N;
        run.cluster.kill_node(wiped);
        run.cluster.wipe_node(wiped);
        run.net.cut(wiped, (wiped + 1) % N);
        run.net.cut(wiped, (wiped + 2) % N);
        run.net.verify();
        run.cluster.start_node(wiped);
        run.progress("serving while a wiped node is half cut off");
        run.net.heal();
        run.cluster.wait_ready(wiped);
    }
    run
}

#[test]
fn a_sharded_cluster_under_partitions_crashes_a_handoff_and_a_lost_disk_stays_linearizable() {
    let shape = Shape {
        replicas: 3,
        groups: 3,
        shards: 16,
        redis_cluster: false,
        mode: Mode::Paxos,
    };
    let mut run = Run::start(3, shape);
    let mut num = 0;
    // Twice over, each round with the nodes' parts rotated.
    for round in 0..ROUNDS {
        let [n0, n1, n2] = [round % 3, (round + 1) % 3, (round + 2) % 3];

        // A node cut off (with whatever leaders it held) while two shards change groups.
        run.net.isolate(&[n0]);
        run.net.verify();
        let moves = [("0", "101"), ("5", "102"), ("0", "100"), ("5", "101")];
        for (shard, gid) in &moves[2 * round as usize % 4..][..2] {
            let moved = run.cluster.admin(&["move", shard, gid]).expect("a move");
            num = num.max(common::config_num(&moved));
        }
        run.progress("serving with a node cut off, shards moving");
        run.net.heal();
        run.cluster.wait_settled(num, SETTLE_TIMEOUT);

        // A bridge: two nodes cannot talk; the third talks to both.
        run.net.cut(n0, n2);
        run.net.verify();
        run.progress("serving across a bridge");
        run.net.heal();

        // One-way loss: a node hears the others, they do not hear it.
        run.net.drop_from(n1, n0);
        run.net.drop_from(n1, n2);
        run.net.verify();
        run.progress("serving while one node's messages are lost");
        run.net.heal();

        // A node SIGSTOPped, then SIGKILLed while stopped, and back.
        run.cluster.signal(n2, libc::SIGSTOP);
        run.progress("serving with a node stopped");
        run.cluster.kill_node(n2);
        run.cluster.start_node(n2);
        run.progress("serving with the stopped node restarted");

        // A lost disk: a node restarts on an empty directory cut off from both others,
        // and rebuilds once healed.
        run.cluster.kill_node(n1);
        run.cluster.wipe_node(n1);
        run.net.isolate(&[n1]);
        run.net.verify();
        run.cluster.start_node(n1);
        run.progress("serving with a wiped node cut off");
        run.net.heal();
        run.cluster.wait_ready(n1);
    }
    run.cluster.wait_settled(num, SETTLE_TIMEOUT);
    run.finish();
}

/// A settled view other than `viewnum` in which `gone` has no role.
fn settled_without(cluster: &Cluster, viewnum: u64, gone: u32) -> (u64, u32, u32) {
    wait_for(
        &format!("a settled view after {viewnum} without node {gone}"),
        SETTLE_TIMEOUT,
        || {
            cluster
                .settled_view()
                .filter(|&(n, p, b)| n > viewnum && p != gone && b != gone)
        },
    )
}

#[test]
fn a_primary_backup_cluster_under_partitions_it_survives_stays_linearizable() {
    const VIEW_SERVICE: u32 = 0;
    let shape = Shape {
        replicas: 3,
        groups: 0,
        shards: 1,
        redis_cluster: false,
        mode: Mode::PrimaryBackup,
    };
    let mut run = Run::start(4, shape);
    let settled = |run: &Run| {
        wait_for("a settled view", SETTLE_TIMEOUT, || {
            run.cluster.settled_view()
        })
    };

    // Twice over: the victims follow the view, whatever it is by then.
    for _ in 0..ROUNDS {
        // The primary cut off from the view service only: it still reaches its backup, which
        // the view service promotes; the old primary's forwards are then refused.
        let (viewnum, primary, _) = settled(&run);
        run.net.cut(primary, VIEW_SERVICE);
        run.net.verify();
        settled_without(&run.cluster, viewnum, primary);
        run.progress("serving after the primary was cut from the view service");
        run.net.heal();

        // The backup cut off from everyone: the spare replaces it.
        let (viewnum, _, backup) = settled(&run);
        run.net.isolate(&[backup]);
        run.net.verify();
        settled_without(&run.cluster, viewnum, backup);
        run.progress("serving after the backup was cut off");
        run.net.heal();

        // One-way loss: the primary hears the view service, which no longer hears it.
        let (viewnum, primary, _) = settled(&run);
        run.net.drop_from(primary, VIEW_SERVICE);
        run.net.verify();
        settled_without(&run.cluster, viewnum, primary);
        run.progress("serving after the primary's pings were lost");
        run.net.heal();

        // Beyond what the mode survives with service: the primary and the backup cut from each
        // other, both still heard by the view service, which so replaces neither. Held until a
        // probe write has had its full deadline; whatever it answered, nothing may be lost.
        let (_, primary, backup) = settled(&run);
        run.net.cut(primary, backup);
        run.net.verify();
        let mut probe = client(
            &run.cluster,
            &Shared::new(&run.cluster.config).expect("the cluster secret"),
            0,
        );
        let put = Op::Put {
            key: Bytes::from_static(b"probe"),
            value: Bytes::from_static(b"p"),
        };
        let _ = run.rt.block_on(probe.execute(put, Duration::from_secs(2)));
        run.net.heal();
        run.progress("serving once the primary reaches its backup again");

        // The view service SIGKILLed while the spare is cut off, and restarted on its disk.
        let (viewnum, primary, backup) = settled(&run);
        let spare = (1..4).find(|s| *s != primary && *s != backup).unwrap();
        run.net.isolate(&[spare]);
        run.net.verify();
        run.cluster.kill_node(VIEW_SERVICE);
        run.cluster.start_node(VIEW_SERVICE);
        run.cluster.wait_ready(VIEW_SERVICE);
        run.progress("serving across a view service restart");
        run.net.heal();

        // The primary SIGSTOPped until the view service replaced it; resumed, it must not
        // answer as primary.
        let (viewnum, primary, _) = wait_for("a settled view", SETTLE_TIMEOUT, || {
            run.cluster.settled_view().filter(|v| v.0 >= viewnum)
        });
        run.cluster.signal(primary, libc::SIGSTOP);
        let (viewnum, _, _) = settled_without(&run.cluster, viewnum, primary);
        run.progress("serving with the old primary stopped");
        run.cluster.signal(primary, libc::SIGCONT);
        run.progress("serving with the old primary resumed");

        // A server with no role loses its directory and comes back.
        let (_, p, b) = wait_for("a settled view", SETTLE_TIMEOUT, || {
            run.cluster.settled_view().filter(|v| v.0 >= viewnum)
        });
        let spare = (1..4).find(|s| *s != p && *s != b).unwrap();
        run.cluster.kill_node(spare);
        run.cluster.wipe_node(spare);
        run.cluster.start_node(spare);
        run.cluster.wait_ready(spare);
    }
    run.finish();
}
