//! A peer alone: recovery from records and snapshots, corrupt records, starts below min.

use super::*;
use crate::paxos::Config;

fn records(out: &Output) -> Vec<(u8, Vec<u8>)> {
    out.persist
        .iter()
        .filter_map(|p| match p {
            Persist::Record { kind, payload, .. } => Some((*kind, payload.clone())),
            Persist::Snapshot(_) | Persist::Compaction(_) => None,
        })
        .collect()
}

#[test]
fn a_lone_peer_decides_at_once_and_persists_before_anything_else() {
    let mut p = Paxos::new(Config::new(NodeId(0), 1), 1);
    let mut out = Output::new();
    p.start(Time::ZERO, Seq(3), Bytes::from_static(b"v"), &mut out);
    assert_eq!(p.status(Seq(3)), Fate::Decided(Bytes::from_static(b"v")));
    assert_eq!(p.max(), Some(Seq(3)));
    assert!(out.send.is_empty());
    assert_eq!(out.events, vec![Event::Decided { seq: Seq(3) }]);
    // Promise, accept, decide.
    assert_eq!(records(&out).len(), 3);
}

#[test]
fn recovery_from_records_restores_decisions_promise_and_done() {
    let mut p = Paxos::new(Config::new(NodeId(0), 1), 1);
    let mut out = Output::new();
    for s in 0..5 {
        p.start(Time::ZERO, Seq(s), Bytes::from(vec![s as u8; 4]), &mut out);
    }
    p.done(Seq(1), &mut out);
    let recs = records(&out);
    let q = Paxos::recover(
        Config::new(NodeId(0), 1),
        2,
        None,
        recs.iter().map(|(k, v)| (*k, v.as_slice())),
    )
    .expect("recover");
    assert_eq!(q.min(), Seq(2));
    assert_eq!(q.status(Seq(1)), Fate::Forgotten);
    assert_eq!(q.status(Seq(4)), Fate::Decided(Bytes::from(vec![4u8; 4])));
    assert_eq!(q.promised(), p.promised());
    assert_eq!(q.max(), Some(Seq(4)));
}

#[test]
fn recovery_from_a_snapshot_matches_the_live_state() {
    let mut p = Paxos::new(Config::new(NodeId(0), 1), 1);
    let mut out = Output::new();
    for s in 0..3 {
        p.start(Time::ZERO, Seq(s), Bytes::from(vec![1u8; 8]), &mut out);
    }
    let snap = p.snapshot_bytes();
    let q = Paxos::recover(
        Config::new(NodeId(0), 1),
        2,
        Some(&snap),
        std::iter::empty(),
    )
    .expect("recover");
    assert_eq!(q.snapshot_bytes(), snap);
    assert_eq!(q.status(Seq(2)), p.status(Seq(2)));
}

#[test]
fn a_corrupt_record_is_an_error_not_a_panic() {
    let result = Paxos::recover(
        Config::new(NodeId(0), 1),
        1,
        None,
        [(RECORD_KIND, &[0xff, 0xff, 0xff][..])],
    );
    assert!(matches!(result, Err(Error::Codec(_))));
}

#[test]
fn a_start_below_min_is_ignored() {
    let mut p = Paxos::new(Config::new(NodeId(0), 1), 1);
    let mut out = Output::new();
    p.start(Time::ZERO, Seq(0), Bytes::from_static(b"a"), &mut out);
    p.done(Seq(0), &mut out);
    out.clear();
    p.start(Time::ZERO, Seq(0), Bytes::from_static(b"b"), &mut out);
    assert!(out.is_empty());
    assert_eq!(p.status(Seq(0)), Fate::Forgotten);
}

/// Delivers every message in `out` (sent by `from`) and everything it causes, until the
/// peers fall quiet.
fn settle_all(peers: &mut [Paxos], from: NodeId, out: Output) {
    settle_at(peers, from, out, Time::ZERO)
}

/// [`settle_all`] with every peer's clock at `now`.
fn settle_at(peers: &mut [Paxos], from: NodeId, out: Output, now: Time) {
    settle_where(peers, from, out, now, |_, _| true);
}

/// Delivers `out` and everything it leads to at `now`, but only the messages `link`
/// lets through (by sender and receiver).
fn settle_where(
    peers: &mut [Paxos],
    from: NodeId,
    out: Output,
    now: Time,
    link: impl Fn(NodeId, NodeId) -> bool,
) {
    let mut queue: Vec<(NodeId, NodeId, Message)> = Vec::new();
    let push = |queue: &mut Vec<_>, from: NodeId, out: Output| {
        for (to, msg) in out.send_early.into_iter().chain(out.send) {
            queue.push((from, to, msg));
        }
    };
    push(&mut queue, from, out);
    while let Some((from, to, msg)) = queue.pop() {
        if !link(from, to) {
            continue;
        }
        let mut out = Output::new();
        peers[to.index()].on_message(now, from, msg, &mut out);
        push(&mut queue, to, out);
    }
}

/// The sends of `out`, early or not.
fn sends(out: &Output) -> Vec<&(NodeId, Message)> {
    out.send_early.iter().chain(&out.send).collect()
}

/// Peer 0 starts instance `seq`, one follower accepts, and peer 0 takes the answer while
/// holding its decisions: the instance is decided there and nothing is sent. Returns what
/// the held call put out.
fn held_decision(peers: &mut [Paxos], seq: Seq) -> Output {
    let mut out = Output::new();
    peers[0].start(Time::ZERO, seq, Bytes::from_static(b"v"), &mut out);
    let (to, accept) = sends(&out)[0].clone();
    let mut answer = Output::new();
    peers[to.index()].on_message(Time::ZERO, NodeId(0), accept, &mut answer);
    let (_, accepted) = sends(&answer)[0].clone();
    peers[0].hold_decisions();
    let mut burst = Output::new();
    peers[0].on_message(Time::ZERO, to, accepted, &mut burst);
    assert!(peers[0].status(seq) != Fate::Pending);
    assert!(sends(&burst).is_empty(), "{burst:?}");
    burst
}

#[test]
fn held_decisions_ride_with_the_next_accepts_or_leave_at_release() {
    let mut peers: Vec<Paxos> = (0..3)
        .map(|i| {
            let mut config = Config::new(NodeId(i), 3);
            config.piggyback_commits = false;
            Paxos::new(config, u64::from(i) + 1)
        })
        .collect();
    let me = NodeId(0);
    let mut out = Output::new();
    peers[0].start(Time::ZERO, Seq(0), Bytes::from_static(b"a"), &mut out);
    settle_all(&mut peers, me, out);
    assert!(peers.iter().all(|p| p.status(Seq(0)) != Fate::Pending));

    // A held burst: a follower's answer to instance 1's accepts decides it, instance 2
    // starts, and its accepts carry the decision; nothing is left for the release.
    let mut burst = held_decision(&mut peers, Seq(1));
    peers[0].start(Time::ZERO, Seq(2), Bytes::from_static(b"c"), &mut burst);
    let carried: Vec<Seq> = sends(&burst)
        .iter()
        .flat_map(|(_, m)| match &m.body {
            Body::Accept { seq, commits, .. } => {
                assert_eq!(*seq, Seq(2));
                commits.iter().map(|c| c.seq).collect::<Vec<Seq>>()
            }
            other => panic!("only accepts leave in the burst: {other:?}"),
        })
        .collect();
    assert_eq!(carried, [Seq(1), Seq(1)]);
    let mut released = Output::new();
    peers[0].release_decisions(&mut released);
    assert!(sends(&released).is_empty(), "{released:?}");
    settle_all(&mut peers, me, burst);
    assert!(peers.iter().all(|p| p.status(Seq(2)) != Fate::Pending));

    // A decision no accept carried leaves at the release.
    held_decision(&mut peers, Seq(3));
    let mut released = Output::new();
    peers[0].release_decisions(&mut released);
    let decided: Vec<NodeId> = sends(&released)
        .iter()
        .map(|(to, m)| {
            assert!(
                matches!(&m.body, Body::Decided { commits } if commits[0].seq == Seq(3)),
                "{m:?}"
            );
            *to
        })
        .collect();
    assert_eq!(decided, [NodeId(1), NodeId(2)]);
}

/// A prepare of node 2's at a ballot above everything so far.
fn prepare_from_2() -> Message {
    Message {
        dones: vec![None; 3],
        leads: false,
        body: Body::Prepare {
            ballot: Ballot {
                round: 100,
                node: NodeId(2),
            },
            from: Seq(0),
        },
    }
}

#[test]
fn a_lease_binds_its_acceptors_and_ends_earlier_on_the_holders_clock() {
    let ms = Time::from_millis;
    let lease = crate::paxos::Lease {
        duration: Duration::from_millis(300),
        drift_ppm: 10_000,
    };
    let config = |i: u32| {
        let mut config = Config::new(NodeId(i), 3);
        config.lease = Some(lease);
        // Followers stop counting the leader as alive long before its lease ends, so
        // only the lease keeps them from promising another node.
        config.leader_timeout = Duration::from_millis(100);
        config
    };
    let mut peers: Vec<Paxos> = (0..3)
        .map(|i| Paxos::new(config(i), 1 + u64::from(i)))
        .collect();
    // Booted at 0, each peer raises its promise for nobody until 300 ms.
    for p in &mut peers {
        p.on_boot(ms(0), &mut Output::new());
    }
    let mut out = Output::new();
    peers[0].start(ms(299), Seq(0), Bytes::from_static(b"a"), &mut out);
    assert!(sends(&out).is_empty(), "campaigned while bound: {out:?}");
    peers[0].on_tick(ms(300), &mut out);
    settle_at(&mut peers, NodeId(0), out, ms(300));
    assert_eq!(
        peers[0].status(Seq(0)),
        Fate::Decided(Bytes::from_static(b"a"))
    );

    // The holder counts 300 ms × 0.99 / 1.01 = 294.06 ms from sending its accepts (at 300).
    assert_eq!(lease.holder_duration(), Duration::from_micros(294_059));
    assert!(peers[0].holds_lease(ms(594)));
    assert!(!peers[0].holds_lease(ms(595)));

    // An acceptor that granted it promises no other node until its own 300 ms are over.
    let mut out = Output::new();
    peers[1].on_message(ms(599), NodeId(2), prepare_from_2(), &mut out);
    assert!(sends(&out).is_empty(), "promised during the lease: {out:?}");
    let mut out = Output::new();
    peers[1].on_message(ms(600), NodeId(2), prepare_from_2(), &mut out);
    assert!(
        matches!(&sends(&out)[..], [(to, m)] if *to == NodeId(2) && matches!(m.body, Body::Promise { .. })),
        "{out:?}"
    );

    // Restarted, an acceptor assumes it granted a lease to no node when it first looks:
    // it raises its promise for nobody until that ends, but answers at its promise.
    let mut restarted = Paxos::recover(
        config(1),
        9,
        Some(&peers[1].snapshot_bytes()),
        std::iter::empty(),
    )
    .expect("recover");
    let confirm = |round, node| Message {
        dones: vec![None; 3],
        leads: true,
        body: Body::Confirm {
            ballot: Ballot { round, node },
            round: 1,
        },
    };
    let mut out = Output::new();
    restarted.on_message(ms(5_000), NodeId(0), confirm(200, NodeId(0)), &mut out);
    assert!(
        sends(&out).is_empty(),
        "promised right after a restart: {out:?}"
    );
    let mut out = Output::new();
    restarted.on_message(ms(5_100), NodeId(2), confirm(100, NodeId(2)), &mut out);
    assert!(
        matches!(&sends(&out)[..], [(_, m)] if matches!(m.body, Body::Confirmed { .. })),
        "no answer at the promised ballot: {out:?}"
    );
    // That answer granted node 2 a lease until 5.4 s: node 0 waits for it.
    let mut out = Output::new();
    restarted.on_message(ms(5_399), NodeId(0), confirm(200, NodeId(0)), &mut out);
    assert!(sends(&out).is_empty(), "{out:?}");
    let mut out = Output::new();
    restarted.on_message(ms(5_400), NodeId(0), confirm(200, NodeId(0)), &mut out);
    assert!(
        matches!(&sends(&out)[..], [(_, m)] if matches!(m.body, Body::Confirmed { .. })),
        "{out:?}"
    );

    // Without leases, nothing waits.
    let mut plain = Paxos::new(Config::new(NodeId(1), 3), 5);
    let mut out = Output::new();
    plain.on_message(ms(0), NodeId(2), prepare_from_2(), &mut out);
    assert_eq!(sends(&out).len(), 1);
    assert!(!plain.holds_lease(ms(0)));
}

#[test]
fn a_leader_counts_on_the_shortest_grant_its_majority_made_and_none_from_a_peer_without_leases() {
    let ms = Time::from_millis;
    let lease = |millis, drift_ppm| crate::paxos::Lease {
        duration: Duration::from_millis(millis),
        drift_ppm,
    };
    // Node 0: 300 ms at 1%; node 1: 100 ms at 5% (a change rolling through); node 2: none.
    let leases = [Some(lease(300, 10_000)), Some(lease(100, 50_000)), None];
    let mut peers: Vec<Paxos> = (0..3u32)
        .map(|i| {
            let mut config = Config::new(NodeId(i), 3);
            config.lease = leases[i as usize];
            Paxos::new(config, 1 + u64::from(i))
        })
        .collect();
    for p in &mut peers {
        p.on_boot(ms(0), &mut Output::new());
    }
    let without = |cut: u32| move |from: NodeId, to: NodeId| from.0 != cut && to.0 != cut;

    // Decided with node 1 alone: 100 ms shrunk by the larger drift bound, 5%:
    // 100 × 0.95 / 1.05 = 90.476 ms from sending the accepts at 300 ms.
    let mut out = Output::new();
    peers[0].start(ms(300), Seq(0), Bytes::from_static(b"a"), &mut out);
    settle_where(&mut peers, NodeId(0), out, ms(300), without(2));
    assert_eq!(
        peers[0].status(Seq(0)),
        Fate::Decided(Bytes::from_static(b"a"))
    );
    assert!(peers[0].holds_lease(ms(390)));
    assert!(!peers[0].holds_lease(ms(391)), "counted on its own 300 ms");

    // Decided with node 2 alone, which grants nothing: no lease.
    let mut out = Output::new();
    peers[0].start(ms(400), Seq(1), Bytes::from_static(b"b"), &mut out);
    settle_where(&mut peers, NodeId(0), out, ms(400), without(1));
    assert_eq!(
        peers[0].status(Seq(1)),
        Fate::Decided(Bytes::from_static(b"b"))
    );
    assert!(
        !peers[0].holds_lease(ms(400)),
        "a lease from an acceptor that granted none"
    );

    // A confirmation round answered by node 1 alone gives the same 90.476 ms.
    let mut out = Output::new();
    assert!(peers[0].confirm_leadership(ms(500), 1, &mut out));
    settle_where(&mut peers, NodeId(0), out, ms(500), without(2));
    assert_eq!(peers[0].confirmed_round(), Some(1));
    assert!(peers[0].holds_lease(ms(590)));
    assert!(!peers[0].holds_lease(ms(591)));
}

/// A node campaigns while the others follow a live leader (say, it missed the leader's
/// messages for a while): they refuse, naming the leader, and once the leader itself
/// answers so, the node stops campaigning and forwards its proposal there, where it is
/// decided. Without the refusals' answer it would campaign on unanswered for as long as the
/// leader stays alive.
#[test]
fn a_node_campaigning_against_a_live_leader_is_told_to_follow_it_and_does() {
    let ms = Time::from_millis;
    let mut peers: Vec<Paxos> = (0..3)
        .map(|i| Paxos::new(Config::new(NodeId(i), 3), 1 + u64::from(i)))
        .collect();
    let mut out = Output::new();
    peers[0].start(ms(0), Seq(0), Bytes::from_static(b"a"), &mut out);
    settle_at(&mut peers, NodeId(0), out, ms(0));
    assert!(peers[0].is_leader());
    let leader = peers[0].promised();

    // Node 1, not having heard the leader for a while, forwards its proposal (lost) and
    // then campaigns above the leader's ballot.
    let mut out = Output::new();
    peers[1].start(ms(900), Seq(1), Bytes::from_static(b"b"), &mut out);
    let mut at = 900;
    let prepares: Vec<(NodeId, Message)> = loop {
        let prepares: Vec<(NodeId, Message)> = sends(&out)
            .into_iter()
            .filter(|(_, m)| matches!(m.body, Body::Prepare { .. }))
            .cloned()
            .collect();
        if !prepares.is_empty() {
            break prepares;
        }
        assert!(at < 10_000, "node 1 never campaigned");
        at += 50;
        out = Output::new();
        peers[1].on_tick(ms(at), &mut out);
    };
    let at = ms(at);
    assert!(
        prepares
            .iter()
            .all(|(_, m)| matches!(m.body, Body::Prepare { ballot, .. } if ballot > leader)),
        "{prepares:?}"
    );
    // Node 2 just heard the leader, leading; the leader just heard node 2.
    let mut out = Output::new();
    let refresh = Message {
        dones: vec![None; 3],
        leads: true,
        body: Body::Decided { commits: vec![] },
    };
    peers[2].on_message(at, NodeId(0), refresh.clone(), &mut out);
    peers[0].on_message(at, NodeId(2), refresh, &mut out);
    let mut answers = Vec::new();
    for (to, msg) in prepares {
        let mut out = Output::new();
        peers[to.index()].on_message(at, NodeId(1), msg, &mut out);
        answers.extend(sends(&out).into_iter().map(|(_, m)| (to, m.body.clone())));
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    for (from, body) in &answers {
        assert!(
            matches!(body, Body::Follow { leader: l, .. } if *l == leader),
            "node {from:?} answered {body:?}"
        );
    }
    // The leader's own answer: node 1 follows it and forwards its proposal.
    let mut forwards = Output::new();
    for (from, body) in answers.into_iter().rev() {
        let msg = Message {
            dones: vec![None; 3],
            leads: from == NodeId(0),
            body,
        };
        peers[1].on_message(at, from, msg, &mut forwards);
    }
    assert!(peers[1].campaign.is_none(), "still campaigning");
    assert_eq!(peers[1].leader, Some(NodeId(0)));
    settle_at(&mut peers, NodeId(1), forwards, at);
    // Its proposal goes to the leader once its backoff ends.
    let mut out = Output::new();
    peers[1].on_tick(at + Duration::from_secs(1), &mut out);
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == NodeId(0) && matches!(m.body, Body::Forward { .. })),
        "{out:?}"
    );
    settle_at(&mut peers, NodeId(1), out, at + Duration::from_secs(1));
    assert_eq!(
        peers[0].status(Seq(1)),
        Fate::Decided(Bytes::from_static(b"b"))
    );
    assert_eq!(peers[0].promised(), leader, "the leader was not deposed");
}
