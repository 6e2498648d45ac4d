//! A peer alone: recovery from records and snapshots, corrupt records, starts below min.

use super::*;
use crate::paxos::Config;

fn records(out: &Output) -> Vec<(u8, Vec<u8>)> {
    out.persist
        .iter()
        .filter_map(|p| match p {
            Persist::Record { kind, payload, .. } => Some((*kind, payload.clone())),
            Persist::Snapshot(_) => None,
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
