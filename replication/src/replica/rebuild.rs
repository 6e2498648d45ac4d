//! Taking part in agreement again after a restart: the restart check, and the rebuild of a
//! replica whose disk was lost or found to be older than what it told its peers.
//!
//! # The restart check
//!
//! A replica that restarts on its disk records the start (a count and a random nonce, see
//! `peers`) and, before it votes again, asks its peers to check that its disk is current:
//! it claims its incarnation, this start, its durable promise and the highest instance its
//! disk knows. Each peer compares the claim with what it remembers — the latest start of
//! this replica it confirmed, the highest promise and acceptance the replica told it — and
//! answers, after durably recording the start if the claim holds. With ⌊n/2⌋ confirmations
//! (a majority counting itself) the replica votes again; one contradiction and it treats
//! its disk as lost and rebuilds. Meanwhile it neither votes nor proposes, but it learns and
//! applies decided values (they are facts) and answers other replicas' checks from memory.
//!
//! A genuine disk always passes: a replica persists its start before asking, its promises
//! and acceptances before telling anyone of them. A directory restored from an older copy
//! fails as soon as a peer that saw the replica after the copy was made answers: the copy's
//! next start repeats a count that peer already confirmed (with another nonce), or claims a
//! lower promise or a shorter log than the replica had told it. (A copy checked only by
//! peers that saw nothing of the replica since the copy was made is not caught: no
//! information in the live group distinguishes it.)
//!
//! # The rebuild (Lab 5's RejoinMix rules) and why it is safe
//!
//! A rebuilding replica's Paxos peer neither votes nor proposes, this layer drops every
//! Paxos message to it, and it answers no client and no peer's rebuild or check. It
//! rebuilds in two steps, each needing answers from a majority of the whole group drawn
//! from *intact, active* peers (itself never counted; rebuilding or unchecked peers do not
//! answer): (1) learn the highest incarnation of itself they know, and pick one above it;
//! (2) announce that incarnation; each intact peer durably records it, drops any proposer
//! state that may count promises or acceptances from the old incarnation, and only then
//! reports its promise, highest instance seen, `min()` and peer memory, followed by its
//! accepted and decided instances in pages. The replica adopts an acceptor state merged
//! from the reports: the highest reported promise and, per instance, the decided value if a
//! reporter knows it, else the accepted value with the highest ballot; and it forgets
//! everything below the highest reported `min()` — instances some intact peer forgot, which
//! are therefore decided and applied there, so this replica must neither accept nor report
//! anything for them (it catches up by state transfer). For every instance up to the
//! highest one reported (the *fence*) it therefore answers prepares with what the majority
//! knew, never with an empty memory. Last it takes the applied state of the most advanced
//! reporter, by state transfer — unless its own surviving applied state (a prefix of the
//! decided log) already reaches the floor: a rebuilt replica vouches for the state in
//! later rebuilds, so it must hold it before it counts as intact.
//!
//! Why no decided value can change. Let `v` be chosen at ballot `b` in some instance by a
//! quorum that includes the old incarnation. Without it the quorum still meets every
//! majority of the other replicas, so some reporter `X` accepted `(b, v)`. If `X` did so
//! before reporting that instance, the merged state holds a ballot `>= b` for it, whose
//! value is `v` (Paxos: every proposal above a chosen ballot carries the chosen value). If
//! `X` did so after, its `Accepted` carried the new incarnation, so the proposer discarded
//! the old incarnation's vote before counting `X`'s and never learned `v`. If `X` had
//! forgotten the instance, it is below the adopted floor, where this replica accepts
//! nothing. The same argument with promises instead of acceptances shows that a proposer
//! never wins phase 1 on the strength of a promise the old incarnation made and the new one
//! cannot honour. Incarnation knowledge itself survives a minority of lost disks: it is
//! durable, and a rebuilt replica adopts the maximum of a majority's tables.
//!
//! This deliberately goes beyond the lab's rule "take part only in instances above what
//! the majority reported": taken literally, two replicas of a 3-replica group rebuilt at
//! different times can both be barred from an undecided instance below their fences, and
//! the group then never decides it (the kv sweep found such a schedule).

use std::collections::{BTreeMap, BTreeSet};

use super::machine::StateMachine;
use super::message::{Message, Report};
use super::peers::{Boot, Claim, PeerMemory, Verdict};
use super::{Output, Replica};
use crate::paxos::{self, Ballot, Paxos, Seq, SnapshotInstance, SnapshotState};
use crate::rng::Rng;
use crate::types::{NodeId, Time};

/// Where a replica stands.
#[derive(Debug)]
pub(super) enum Phase {
    /// Takes part in agreement.
    Active,
    /// Restarted: waiting for its peers to confirm its disk is current.
    Verifying(Check),
    /// Rebuilding after a lost or outdated disk.
    Rebuilding(Rebuild),
    /// Stopped applying the log (an undecodable decided value).
    Halted(String),
}

#[derive(Debug)]
pub(super) struct Check {
    nonce: u64,
    confirmed: BTreeSet<NodeId>,
    last_sent: Option<Time>,
}

#[derive(Debug)]
pub(super) struct Rebuild {
    nonce: u64,
    step: Step,
    last_sent: Option<Time>,
}

#[derive(Debug)]
enum Step {
    /// Incarnations of this replica known by intact peers.
    Probing { known: BTreeMap<NodeId, u64> },
    /// Reports of intact peers that recorded `incarnation`.
    Collecting {
        incarnation: u64,
        reports: BTreeMap<NodeId, Collected>,
    },
    /// The acceptor state is merged; the applied state comes from a reporter whose image
    /// reaches the merged floor (most advanced first), by state transfer.
    Imaging {
        acceptor: SnapshotState,
        /// Reporters whose image will do, most advanced first.
        sources: Vec<NodeId>,
        /// Transfers started so far (picks the next source).
        tries: usize,
    },
}

/// One reporter's report and the pages of instances received so far.
#[derive(Debug)]
struct Collected {
    report: Report,
    instances: Vec<(Seq, SnapshotInstance)>,
    /// Where the next page starts; `None` once every page arrived.
    next: Option<Seq>,
}

impl Phase {
    pub(super) fn rebuilding(rng: &mut Rng) -> Phase {
        Phase::Rebuilding(Rebuild {
            nonce: rng.next_u64(),
            step: Step::Probing {
                known: BTreeMap::new(),
            },
            last_sent: None,
        })
    }

    pub(super) fn restarted(rng: &mut Rng) -> Phase {
        Phase::Verifying(Check {
            nonce: rng.next_u64(),
            confirmed: BTreeSet::new(),
            last_sent: None,
        })
    }

    /// Takes part in agreement.
    pub(super) fn is_active(&self) -> bool {
        matches!(self, Phase::Active)
    }

    pub(super) fn is_verifying(&self) -> bool {
        matches!(self, Phase::Verifying(_))
    }

    pub(super) fn is_rebuilding(&self) -> bool {
        matches!(self, Phase::Rebuilding(_))
    }

    pub(super) fn is_halted(&self) -> bool {
        matches!(self, Phase::Halted(_))
    }

    /// Applies decided values (facts, whatever the disk's state).
    pub(super) fn applies(&self) -> bool {
        matches!(self, Phase::Active | Phase::Verifying(_))
    }

    /// Holds client requests (a verifying replica forwards or proposes them once active).
    pub(super) fn serves_requests(&self) -> bool {
        self.applies()
    }
}

impl<M: StateMachine> Replica<M> {
    /// Work due at the first call after (re)start.
    pub(super) fn boot(&mut self, now: Time, out: &mut Output<M>) {
        if !self.boot_pending {
            return;
        }
        self.boot_pending = false;
        let mut p = paxos::Output::new();
        self.paxos.on_boot(now, &mut p);
        self.absorb(p, out);
        if self.phase.is_verifying() {
            let me = self.config.me.index();
            let own = self.peers[me];
            if own.verified || own.boot.count == 0 {
                self.peers[me].boot = Boot {
                    count: own.boot.count + 1,
                    nonce: self.rng.next_u64(),
                };
                self.peers[me].verified = false;
                self.persist_peers(out);
            }
            if self.config.majority() <= 1 {
                self.become_verified(out);
            } else {
                self.paxos.set_passive(true);
                self.check_tick(now, out);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // The restart check.
    // ---------------------------------------------------------------------------------

    fn claim(&self) -> Claim {
        let me = self.peers[self.config.me.index()];
        Claim {
            incarnation: me.incarnation,
            boot: me.boot,
            promised: self.paxos.promised(),
            max: self.paxos.max(),
        }
    }

    pub(super) fn check_tick(&mut self, now: Time, out: &mut Output<M>) {
        let retry = self.config.recovery_retry;
        let claim = self.claim();
        let others: Vec<NodeId> = self.others().collect();
        let Phase::Verifying(check) = &mut self.phase else {
            return;
        };
        if check.last_sent.is_some_and(|t| now - t < retry) {
            return;
        }
        check.last_sent = Some(now);
        let nonce = check.nonce;
        for peer in others {
            if !check.confirmed.contains(&peer) {
                out.send
                    .push((peer, Message::RestartCheck { nonce, claim }));
            }
        }
    }

    pub(super) fn on_restart_check(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        claim: Claim,
        out: &mut Output<M>,
    ) {
        if self.phase.is_rebuilding() {
            return; // a rebuilding replica remembers nothing worth vouching with
        }
        let known = self.peers[from.index()].incarnation;
        let verdict = self.peers[from.index()].check(&claim);
        let stale = match verdict {
            Verdict::Current => {
                // The boot (and perhaps a newer incarnation) is recorded before answering.
                self.persist_peers(out);
                self.witness_changed = true;
                if claim.incarnation > known {
                    // It rebuilt since: its old votes must not count any more.
                    self.reset_paxos(now, out);
                }
                None
            }
            Verdict::Stale(reason) => Some(reason),
        };
        out.send
            .push((from, Message::RestartChecked { nonce, stale }));
    }

    pub(super) fn on_restart_checked(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        stale: Option<String>,
        out: &mut Output<M>,
    ) {
        let needed = self.config.majority() - 1;
        let Phase::Verifying(check) = &mut self.phase else {
            return;
        };
        if check.nonce != nonce {
            return;
        }
        if stale.is_some() {
            self.become_lost(now, out);
            return;
        }
        check.confirmed.insert(from);
        if check.confirmed.len() >= needed {
            self.become_verified(out);
        }
    }

    /// The peers confirmed this start: vote again. (That the start was confirmed need not
    /// be durable at once: if it is lost, the next start merely repeats this one.)
    fn become_verified(&mut self, out: &mut Output<M>) {
        self.phase = Phase::Active;
        self.paxos.set_passive(false);
        let me = self.config.me.index();
        self.peers[me].verified = true;
        let payload = super::durable::Record::Peers(self.peers.clone()).encode();
        self.log_bytes += payload.len() as u64;
        out.persist.push(crate::effects::Persist::Record {
            kind: super::durable::RECORD_KIND,
            payload,
            sync: false,
        });
    }

    /// The disk turned out older than what this replica told its peers: everything on it
    /// but its applied state (a prefix of the decided log) is untrustworthy. Rebuild as
    /// after a lost disk, durably marked so a crash resumes the rebuild.
    fn become_lost(&mut self, now: Time, out: &mut Output<M>) {
        self.drop_waiting(out);
        let mut config = super::paxos_config(&self.config);
        config.recovering = true;
        self.paxos = Paxos::from_state(config, self.rng.fork(), None, std::iter::empty())
            .expect("an empty acceptor state always installs");
        let mut p = paxos::Output::new();
        self.paxos.on_boot(now, &mut p);
        self.absorb(p, out);
        self.fence = None;
        self.fetched.clear();
        self.incoming = None;
        self.image_wanted = false;
        self.phase = Phase::rebuilding(&mut self.rng);
        self.rebuild_tick(now, out);
    }

    // ---------------------------------------------------------------------------------
    // Rebuilding: the rebuilding side.
    // ---------------------------------------------------------------------------------

    pub(super) fn rebuild_tick(&mut self, now: Time, out: &mut Output<M>) {
        let retry = self.config.recovery_retry;
        let others: Vec<NodeId> = self.others().collect();
        let Phase::Rebuilding(rebuild) = &mut self.phase else {
            return;
        };
        if rebuild.last_sent.is_some_and(|t| now - t < retry) {
            return;
        }
        rebuild.last_sent = Some(now);
        let nonce = rebuild.nonce;
        for peer in others {
            let msg = match &rebuild.step {
                Step::Probing { known } if !known.contains_key(&peer) => {
                    Message::RecoverProbe { nonce }
                }
                Step::Collecting {
                    incarnation,
                    reports,
                } => match reports.get(&peer) {
                    None => Message::RecoverRequest {
                        nonce,
                        incarnation: *incarnation,
                    },
                    Some(Collected {
                        next: Some(from), ..
                    }) => Message::AcceptorPageRequest { nonce, from: *from },
                    Some(_) => continue,
                },
                Step::Imaging { .. } => break,
                _ => continue,
            };
            out.send.push((peer, msg));
        }
        if matches!(
            &self.phase,
            Phase::Rebuilding(Rebuild {
                step: Step::Imaging { .. },
                ..
            })
        ) {
            self.pull_image(now, out);
        }
    }

    /// The peer to take the rebuild's image from next.
    pub(super) fn rebuild_image_source(&mut self) -> Option<NodeId> {
        let Phase::Rebuilding(Rebuild {
            step: Step::Imaging { sources, tries, .. },
            ..
        }) = &mut self.phase
        else {
            return None;
        };
        let source = *sources.get(*tries % sources.len().max(1))?;
        *tries += 1;
        Some(source)
    }

    /// An image arrived during the rebuild: the rebuild is complete if it reaches the
    /// floor (else another source is tried).
    pub(super) fn rebuild_image(
        &mut self,
        now: Time,
        applied: super::applied::Applied<M>,
        out: &mut Output<M>,
    ) {
        let Phase::Rebuilding(Rebuild {
            step: Step::Imaging { acceptor, .. },
            ..
        }) = &self.phase
        else {
            return;
        };
        if applied.next >= acceptor.floor {
            self.installs += 1;
            self.applied = applied;
            self.complete_rebuild(now, out);
        }
    }

    pub(super) fn on_recover_probed(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        out: &mut Output<M>,
    ) {
        let majority = self.config.majority();
        let Phase::Rebuilding(rebuild) = &mut self.phase else {
            return;
        };
        let Step::Probing { known } = &mut rebuild.step else {
            return;
        };
        if rebuild.nonce != nonce {
            return;
        }
        known.insert(from, incarnation);
        if known.len() < majority {
            return;
        }
        let highest = known.values().copied().max().unwrap_or(0);
        rebuild.step = Step::Collecting {
            incarnation: highest + 1,
            reports: BTreeMap::new(),
        };
        rebuild.last_sent = None;
        self.rebuild_tick(now, out);
    }

    pub(super) fn on_recover_reply(
        &mut self,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        report: Report,
        out: &mut Output<M>,
    ) {
        let peers = self.config.peers;
        let Phase::Rebuilding(rebuild) = &mut self.phase else {
            return;
        };
        let Step::Collecting {
            incarnation: wanted,
            reports,
        } = &mut rebuild.step
        else {
            return;
        };
        if rebuild.nonce != nonce
            || *wanted != incarnation
            || report.peers.len() != peers
            || reports.contains_key(&from)
        {
            return;
        }
        let first = report.min;
        reports.insert(
            from,
            Collected {
                report,
                instances: Vec::new(),
                next: Some(first),
            },
        );
        out.send
            .push((from, Message::AcceptorPageRequest { nonce, from: first }));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_acceptor_page(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        first: Seq,
        instances: Vec<(Seq, SnapshotInstance)>,
        next: Option<Seq>,
        out: &mut Output<M>,
    ) {
        let majority = self.config.majority();
        let Phase::Rebuilding(rebuild) = &mut self.phase else {
            return;
        };
        let Step::Collecting { reports, .. } = &mut rebuild.step else {
            return;
        };
        if rebuild.nonce != nonce {
            return;
        }
        let Some(collected) = reports.get_mut(&from) else {
            return;
        };
        if collected.next != Some(first) {
            return; // a duplicate or a page of an earlier request
        }
        if instances.iter().any(|(seq, _)| {
            *seq < first || collected.instances.last().is_some_and(|(l, _)| l >= seq)
        }) {
            return;
        }
        collected.instances.extend(instances);
        collected.next = next;
        if let Some(next) = next {
            out.send
                .push((from, Message::AcceptorPageRequest { nonce, from: next }));
            return;
        }
        let complete = reports.values().filter(|c| c.next.is_none()).count();
        if complete >= majority {
            self.finish_rebuild(now, out);
        }
    }

    /// Merges the acceptor state of a majority of complete reports (see the module docs),
    /// then takes an image if its own applied state does not reach the merged floor.
    fn finish_rebuild(&mut self, now: Time, out: &mut Output<M>) {
        let Phase::Rebuilding(rebuild) = &mut self.phase else {
            return;
        };
        let Step::Collecting {
            incarnation,
            reports,
        } = &mut rebuild.step
        else {
            return;
        };
        let incarnation = *incarnation;
        let complete: Vec<(NodeId, Collected)> = std::mem::take(reports)
            .into_iter()
            .filter(|(_, c)| c.next.is_none())
            .collect();
        let me = self.config.me.index();
        for (_, collected) in &complete {
            for (mine, theirs) in self.peers.iter_mut().zip(&collected.report.peers) {
                if theirs.incarnation > mine.incarnation {
                    mine.reincarnate(theirs.incarnation);
                }
                if theirs.incarnation == mine.incarnation && theirs.boot.count > mine.boot.count {
                    mine.boot = theirs.boot;
                }
            }
        }
        let count = self.peers[me].boot.count + 1;
        self.peers[me] = PeerMemory {
            incarnation,
            boot: Boot {
                count,
                nonce: self.rng.next_u64(),
            },
            verified: true,
            ..PeerMemory::default()
        };
        let acceptor = merge_acceptors(complete.iter().map(|(_, c)| c), self.config.peers);
        let mut sources: Vec<(Seq, NodeId)> = complete
            .iter()
            .filter(|(_, c)| c.report.applied >= acceptor.floor)
            .map(|(node, c)| (c.report.applied, *node))
            .collect();
        sources.sort_by(|a, b| b.cmp(a));
        rebuild.step = Step::Imaging {
            acceptor,
            sources: sources.into_iter().map(|(_, node)| node).collect(),
            tries: 0,
        };
        rebuild.last_sent = None;
        let own = self.applied.next;
        let floor = match &rebuild.step {
            Step::Imaging { acceptor, .. } => acceptor.floor,
            _ => Seq::ZERO,
        };
        if own >= floor {
            self.complete_rebuild(now, out);
        } else {
            self.incoming = None;
            self.rebuild_tick(now, out);
        }
    }

    /// Adopts the merged acceptor state (with the applied state now held), then joins.
    fn complete_rebuild(&mut self, now: Time, out: &mut Output<M>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Active);
        let Phase::Rebuilding(Rebuild {
            step: Step::Imaging { acceptor, .. },
            ..
        }) = phase
        else {
            self.phase = phase;
            return;
        };
        self.incoming = None;
        self.fence = acceptor.max;
        self.paxos = Paxos::from_state(
            super::paxos_config(&self.config),
            self.rng.fork(),
            Some(acceptor),
            std::iter::empty(),
        )
        .expect("a merged acceptor state always installs");
        self.next_slot = self.applied.next;
        self.last_apply = now;
        self.stall = None;
        // The combined snapshot carries the adopted state and "no longer recovering" at
        // once; until it is durable the disk still says "recovering".
        self.take_snapshot(now, out);
    }

    // ---------------------------------------------------------------------------------
    // Rebuilding: the reporting side.
    // ---------------------------------------------------------------------------------

    pub(super) fn on_recover_probe(&mut self, from: NodeId, nonce: u64, out: &mut Output<M>) {
        if !self.phase.is_active() {
            return; // only an intact, checked replica vouches
        }
        let incarnation = self.peers[from.index()].incarnation;
        out.send
            .push((from, Message::RecoverProbed { nonce, incarnation }));
    }

    pub(super) fn on_recover_request(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        out: &mut Output<M>,
    ) {
        if !self.phase.is_active() {
            return;
        }
        let known = self.peers[from.index()].incarnation;
        if incarnation < known {
            return; // a stale attempt
        }
        if incarnation > known {
            self.peers[from.index()].reincarnate(incarnation);
            self.persist_peers(out);
            self.reset_paxos(now, out);
        }
        let report = Report {
            promised: self.paxos.promised(),
            max: self
                .known_max()
                .max(self.applied.next.0.checked_sub(1).map(Seq)),
            min: self.paxos.min(),
            applied: self.applied.next,
            peers: self.peers.clone(),
        };
        out.send.push((
            from,
            Message::RecoverReply {
                nonce,
                incarnation,
                report,
            },
        ));
    }

    pub(super) fn on_acceptor_page_request(
        &mut self,
        from: NodeId,
        nonce: u64,
        first: Seq,
        out: &mut Output<M>,
    ) {
        if !self.phase.is_active() {
            return;
        }
        let (instances, next) = self.paxos.instances_page(first);
        out.send.push((
            from,
            Message::AcceptorPage {
                nonce,
                from: first,
                instances,
                next,
            },
        ));
    }
}

/// The acceptor state a rebuilt replica adopts from a majority of complete reports: the
/// highest promise, per instance the decided value if any reporter knows it else the
/// accepted value with the highest ballot, nothing below the highest reported `min()`.
fn merge_acceptors<'a>(
    reports: impl IntoIterator<Item = &'a Collected>,
    peers: usize,
) -> SnapshotState {
    let mut promised = Ballot::ZERO;
    let mut max = None;
    let mut floor = Seq::ZERO;
    let mut instances: BTreeMap<Seq, SnapshotInstance> = BTreeMap::new();
    for collected in reports {
        promised = promised.max(collected.report.promised);
        max = max.max(collected.report.max);
        floor = floor.max(collected.report.min);
        for (seq, theirs) in &collected.instances {
            let replace = match (instances.get(seq), theirs) {
                (None, _) => true,
                (Some(SnapshotInstance::Decided(_)), _) => false,
                (Some(_), SnapshotInstance::Decided(_)) => true,
                (
                    Some(SnapshotInstance::Accepted { ballot: ours, .. }),
                    SnapshotInstance::Accepted { ballot, .. },
                ) => ballot > ours,
            };
            if replace {
                instances.insert(*seq, theirs.clone());
            }
        }
    }
    // Pages are read after the reports: they may hold later instances, accepted at
    // ballots above the reported promises (an accepted ballot is always promised).
    max = max.max(instances.keys().next_back().copied());
    for instance in instances.values() {
        if let SnapshotInstance::Accepted { ballot, .. } = instance {
            promised = promised.max(*ballot);
        }
    }
    SnapshotState {
        promised,
        dones: vec![None; peers],
        local_done: None,
        max,
        recovering: false,
        floor,
        instances: instances.split_off(&floor).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ballot(round: u64, node: u32) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    #[test]
    fn a_rebuilt_acceptor_takes_decided_values_else_the_highest_ballot_and_nothing_forgotten() {
        let value = |s: &'static str| Bytes::from_static(s.as_bytes());
        let accepted = |round, v| SnapshotInstance::Accepted {
            ballot: ballot(round, 1),
            value: value(v),
        };
        let collected = |promised, min, max, instances| Collected {
            report: Report {
                promised,
                max,
                min: Seq(min),
                applied: Seq(min),
                peers: vec![PeerMemory::default(); 3],
            },
            instances,
            next: None,
        };
        let reports = vec![
            collected(
                ballot(5, 1),
                2,
                Some(Seq(4)),
                vec![(Seq(3), accepted(2, "low")), (Seq(4), accepted(4, "high"))],
            ),
            collected(
                ballot(7, 2),
                3,
                Some(Seq(6)),
                vec![
                    (Seq(3), SnapshotInstance::Decided(value("decided"))),
                    (Seq(4), accepted(3, "lower")),
                    (Seq(6), accepted(1, "only")),
                ],
            ),
            collected(
                ballot(1, 0),
                0,
                Some(Seq(2)),
                vec![(Seq(1), accepted(1, "forgotten"))],
            ),
        ];
        let merged = merge_acceptors(&reports, 3);
        assert_eq!(merged.promised, ballot(7, 2));
        assert_eq!(merged.max, Some(Seq(6)));
        assert_eq!(merged.floor, Seq(3));
        assert!(!merged.recovering);
        assert_eq!(
            merged.instances,
            vec![
                (Seq(3), SnapshotInstance::Decided(value("decided"))),
                (Seq(4), accepted(4, "high")),
                (Seq(6), accepted(1, "only")),
            ]
        );
        // A page may hold an instance above every report's `max`.
        let mut late = collected(
            ballot(1, 0),
            0,
            Some(Seq(2)),
            vec![(Seq(9), accepted(1, "late"))],
        );
        late.report.max = Some(Seq(2));
        let merged = merge_acceptors([&late], 3);
        assert_eq!(merged.max, Some(Seq(9)));
        assert_eq!(
            merged.promised,
            ballot(1, 1),
            "a page's ballot above the promise"
        );
    }
}
