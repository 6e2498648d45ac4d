//! A replicated group of any machine on the simulator with lab-style clerks: the harness
//! the kv group and the shard master share ([`Cluster`]), with failure injection and a
//! recorded client history. What differs per machine — how its commands and replies enter
//! the history, and which checker reads it — is its [`Recorded`] impl (see
//! [`super::kv`] and [`super::shardmaster`]).
//!
//! # Clients, as in the lab's harness (spec §1)
//!
//! Clerks ([`crate::clerk::Clerk`], one implementation for every machine) are driven by
//! the harness, not by the simulated network: a request reaches a replica through
//! [`Sim::call`] at once, and partitions cut only replica-to-replica traffic. A request to
//! an *unreliable* replica is lost with probability 10%; its reply is lost with probability
//! 20% after the request ran. A replica made *unreachable* (the lab's deleted socket file)
//! refuses every client and every peer request. A lost request, a lost reply, a crashed or
//! unreachable replica and an [`Event::Dropped`] all count as a failed call, which the
//! clerk retries (the lab's `call` returns false); a call that gets no answer within
//! [`Cluster::retry_timeout`] is retried too. Every retry re-sends the same request to the
//! clerk's next replica.
//!
//! # Checks
//!
//! - After every step, every replica's `(applied index, digest of applied values)` must
//!   match what any other replica reported at the same index: replicas apply the same log
//!   (the [`ReplicaHost`]).
//! - Every operation is recorded (invoke and return, in virtual microseconds) in a
//!   [`History`] that tests check for linearizability ([`Cluster::check_linearizable`]).
//!
//! # Failure model
//!
//! A replica that halts, or a reply a clerk cannot have asked for, panics with the seed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::replica::ReplicaHost;
use super::{Sim, SimOptions, UNRELIABLE_REPLY_LOSS, UNRELIABLE_REQUEST_LOSS};
use crate::clerk::Clerk;
use crate::linearizability::{CheckResult, History, Invocation, Shaped};
use crate::paxos::Seq;
use crate::replica::{ReplicaConfig, Request, StateMachine};
use crate::rng::Rng;
use crate::types::{ClientId, NodeId, Time};

/// A machine whose client histories the harness records and checks.
pub trait Recorded: StateMachine + Default {
    /// A command as the history records it.
    type Input: Shaped<Self::Output> + Clone + fmt::Debug;
    /// A reply as the history records it.
    type Output: Clone + fmt::Debug;

    /// How `command` enters the history: as one operation, or as several when the command
    /// carries several (a batch of kv ops), all invoked and returning together — the
    /// command runs them in order at one log position, one of the orders the checker then
    /// allows.
    fn inputs(command: &Self::Command) -> Vec<Self::Input>;

    /// What the client of `command` was told, one output per input, or `None` for a reply
    /// no clerk of the harness can get (the harness panics with the seed).
    fn outputs(command: &Self::Command, reply: &Self::Reply) -> Option<Vec<Self::Output>>;

    /// Whether to keep this completed call in [`Cluster::completions`] (for checks that
    /// need more than the history holds).
    fn keep(_command: &Self::Command, _reply: &Self::Reply) -> bool {
        false
    }

    /// Checks a history of this machine for linearizability.
    fn check(history: &History<Self::Input, Self::Output>) -> CheckResult;
}

/// How long a failed call waits before the clerk retries (a refused connection).
const REDIAL: Duration = Duration::from_millis(10);
/// Granularity of the harness loop in virtual time.
const POLL: Duration = Duration::from_millis(1);
pub use super::script::OP_LIMIT;

struct Call<C> {
    request: Request<C>,
    /// One per input of the command (none while the history is not recorded).
    invocations: Vec<Invocation>,
    invoked: Time,
    to: NodeId,
    tag: u64,
    retry_at: Time,
}

/// A completed call that [`Recorded::keep`] chose to keep.
#[derive(Debug, Clone)]
pub struct Completion<M: StateMachine> {
    /// The client.
    pub client: ClientId,
    /// What it asked.
    pub command: M::Command,
    /// What it was told.
    pub reply: M::Reply,
    /// When it asked.
    pub invoked: Time,
    /// When it was told.
    pub returned: Time,
}

struct SimClerk<M: StateMachine> {
    clerk: Clerk<M::Command>,
    call: Option<Call<M::Command>>,
    result: Option<M::Reply>,
}

/// A group of `M` replicas on the simulator with lab-style clerks. See the module docs.
pub struct Cluster<M: Recorded> {
    /// The simulator (faults, crashes, disks).
    pub sim: Sim<ReplicaHost<M>>,
    /// Every client operation so far.
    pub history: History<M::Input, M::Output>,
    /// A call with no answer for this long is retried at the clerk's next replica.
    pub retry_timeout: Duration,
    /// Record operations in [`Cluster::history`] (turn off for long benchmark runs).
    pub record: bool,
    /// The completed calls [`Recorded::keep`] chose (while recording).
    pub completions: Vec<Completion<M>>,
    clerks: Vec<SimClerk<M>>,
    tags: BTreeMap<u64, (usize, u64)>,
    next_tag: u64,
    next_client: u64,
    unreliable: Vec<bool>,
    unreachable: Vec<bool>,
    rng: Rng,
}

impl<M: Recorded> Cluster<M> {
    /// `replicas` replicas with default configuration and a reliable network.
    pub fn new(seed: u64, replicas: usize) -> Cluster<M> {
        Cluster::with(seed, SimOptions::new(replicas), |_| {})
    }

    /// A cluster with explicit simulator options and a hook to adjust the replica config.
    pub fn with(
        seed: u64,
        options: SimOptions,
        tune: impl FnOnce(&mut ReplicaConfig),
    ) -> Cluster<M> {
        let mut config = ReplicaConfig::new(NodeId(0), options.nodes);
        tune(&mut config);
        Cluster::with_host(seed, options, ReplicaHost::new(seed, config, M::default()))
    }

    /// A cluster with explicit simulator options whose replicas `host` boots.
    pub fn with_host(seed: u64, options: SimOptions, host: ReplicaHost<M>) -> Cluster<M> {
        let nodes = options.nodes;
        Cluster {
            sim: Sim::new(seed, options, host),
            history: History::new(),
            retry_timeout: Duration::from_millis(500),
            record: true,
            completions: Vec::new(),
            clerks: Vec::new(),
            tags: BTreeMap::new(),
            next_tag: 1,
            next_client: 1,
            unreliable: vec![false; nodes],
            unreachable: vec![false; nodes],
            rng: Rng::new(seed ^ 0xC1E4_C1E4_C1E4_C1E4),
        }
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.sim.len()
    }

    /// The harness's random generator (for test schedules).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A new clerk (fresh client id) that tries `servers` in order.
    pub fn clerk(&mut self, servers: &[usize]) -> usize {
        let client = ClientId(self.next_client);
        self.next_client += 1;
        let replicas = servers.iter().map(|&i| NodeId(i as u32)).collect();
        self.clerks.push(SimClerk {
            clerk: Clerk::new(client, replicas),
            call: None,
            result: None,
        });
        self.clerks.len() - 1
    }

    /// A clerk that may use every replica, starting with `first`.
    pub fn clerk_all(&mut self, first: usize) -> usize {
        let n = self.replicas();
        let servers: Vec<usize> = (0..n).map(|i| (first + i) % n).collect();
        self.clerk(&servers)
    }

    /// Starts `op` on clerk `c` (which must be idle) and sends it. (Anything that converts
    /// into a command will do: a kv op becomes a kv request of one op.)
    pub fn begin(&mut self, c: usize, op: impl Into<M::Command>) {
        let op = op.into();
        let now = self.sim.now();
        let inputs = if self.record {
            M::inputs(&op)
        } else {
            Vec::new()
        };
        let client = self.clerks[c].clerk.client().0;
        let (to, request) = self.clerks[c]
            .clerk
            .begin(op)
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.sim.seed()));
        let invocations = inputs
            .into_iter()
            .map(|input| self.history.invoke(client, input, now.as_micros()))
            .collect();
        self.clerks[c].result = None;
        self.clerks[c].call = Some(Call {
            request,
            invocations,
            invoked: now,
            to,
            tag: 0,
            retry_at: now,
        });
        self.send(c);
    }

    /// True if clerk `c` has no call in progress.
    pub fn idle(&self, c: usize) -> bool {
        self.clerks[c].call.is_none()
    }

    /// The answer to clerk `c`'s last operation, once it arrived.
    pub fn take_result(&mut self, c: usize) -> Option<M::Reply> {
        self.clerks[c].result.take()
    }

    /// Abandons clerk `c`'s call (its outcome stays unknown in the history). The clerk is
    /// retired: its client id must not be reused.
    pub fn abandon(&mut self, c: usize) {
        if let Some(call) = self.clerks[c].call.take() {
            for invocation in call.invocations {
                self.history.give_up(invocation);
            }
        }
    }

    /// Runs `duration` of virtual time, delivering answers and retrying failed calls.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.sim.now() + duration;
        while self.sim.now() < end {
            let step = POLL.min(end - self.sim.now());
            self.sim.run_for(step);
            self.drain_events();
            self.retry_due();
        }
    }

    /// Runs until every clerk in `clerks` is idle or `limit` passes; true if they are.
    pub fn wait(&mut self, clerks: &[usize], limit: Duration) -> bool {
        self.wait_idle(clerks, limit)
    }

    /// Runs `op` on clerk `c` and waits up to `limit` for the answer.
    pub fn call(
        &mut self,
        c: usize,
        op: impl Into<M::Command>,
        limit: Duration,
    ) -> Option<M::Reply> {
        self.call_within(c, op.into(), limit)
    }

    /// Runs `op` on clerk `c`; panics (with the seed) if no answer within [`OP_LIMIT`].
    pub fn must(&mut self, c: usize, op: impl Into<M::Command>) -> M::Reply {
        self.must_answer(c, op.into())
    }

    /// The lab's unreliable mode for replica `i` (requests and replies of clients too).
    pub fn set_unreliable(&mut self, i: usize, on: bool) {
        self.unreliable[i] = on;
        self.sim.set_unreliable(i, on);
    }

    /// Unreliable mode for every replica.
    pub fn set_all_unreliable(&mut self, on: bool) {
        for i in 0..self.replicas() {
            self.set_unreliable(i, on);
        }
    }

    /// The lab's deleted socket file: replica `i` takes no requests from clients or peers
    /// (replies to its own requests still reach it).
    pub fn set_unreachable(&mut self, i: usize, on: bool) {
        self.unreachable[i] = on;
        self.sim.set_deaf(i, on);
    }

    /// Bytes on every replica's disk.
    pub fn disk_total(&self) -> u64 {
        (0..self.replicas()).map(|i| self.sim.disk_bytes(i)).sum()
    }

    /// Bytes retained in memory by every up replica.
    pub fn retained_total(&self) -> u64 {
        (0..self.replicas())
            .map(|i| self.sim.retained_bytes(i))
            .sum()
    }

    /// The linearizability checker's verdict on the recorded history.
    pub fn verdict(&self) -> CheckResult {
        M::check(&self.history)
    }

    /// Checks the recorded history for linearizability; panics with the seed if it is not.
    pub fn check_linearizable(&self) {
        let verdict = self.verdict();
        assert_eq!(
            verdict,
            CheckResult::Ok,
            "seed {}: {verdict}",
            self.sim.seed()
        );
    }

    /// Panics unless the up replicas in `replicas` applied the same log up to the same
    /// point and hold equal states.
    pub fn assert_replicas_agree(&self, replicas: &[usize]) {
        let mut first: Option<(usize, Vec<u8>)> = None;
        for &i in replicas {
            let Some(node) = self.sim.node(i) else {
                continue;
            };
            let image = node.state_image();
            match &first {
                None => first = Some((i, image)),
                Some((j, expected)) => assert!(
                    *expected == image,
                    "seed {}: replicas {j} and {i} hold different states ({:?} vs {:?})",
                    self.sim.seed(),
                    self.sim.node(*j).map(|n| n.applied_digest()),
                    node.applied_digest()
                ),
            }
        }
    }

    /// Runs until every up replica in `replicas` has applied the same log (or `limit`).
    pub fn wait_applied_equal(&mut self, replicas: &[usize], limit: Duration) -> bool {
        let end = self.sim.now() + limit;
        loop {
            let digests: Vec<(Seq, u64)> = replicas
                .iter()
                .filter_map(|&i| self.sim.node(i).map(|n| n.applied_digest()))
                .collect();
            if digests.windows(2).all(|w| w[0] == w[1]) {
                return true;
            }
            if self.sim.now() >= end {
                return false;
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    fn send(&mut self, c: usize) {
        let now = self.sim.now();
        let tag = self.next_tag;
        self.next_tag += 1;
        let retry_timeout = self.retry_timeout;
        let Some(call) = self.clerks[c].call.as_mut() else {
            return;
        };
        call.tag = tag;
        call.retry_at = now + retry_timeout;
        let to = call.to.index();
        let request = call.request.clone();
        self.tags.insert(tag, (c, request.seq));
        let lost = self.unreliable[to] && self.rng.chance(UNRELIABLE_REQUEST_LOSS);
        if !self.sim.is_up(to) || self.unreachable[to] || lost {
            if let Some(call) = self.clerks[c].call.as_mut() {
                call.retry_at = now + REDIAL;
            }
            return;
        }
        self.sim.call(to, |replica, now, out| {
            replica.on_request(now, tag, request, out)
        });
        self.drain_events();
    }

    fn drain_events(&mut self) {
        let events = std::mem::take(&mut self.sim.host_mut().events);
        let now = self.sim.now();
        let seed = self.sim.seed();
        for (node, event) in events {
            let (unreliable, rng) = (self.unreliable[node.index()], &mut self.rng);
            let lost = || unreliable && rng.chance(UNRELIABLE_REPLY_LOSS);
            match route(&mut self.tags, node, Some(event.into_answer()), lost, seed) {
                Some(Routed::Reply {
                    call: (c, seq),
                    reply,
                    ..
                }) => self.complete(c, seq, reply, now),
                Some(Routed::Failed { tag, call: (c, _) }) => self.fail_if_current(c, tag, now),
                None => {}
            }
        }
    }

    fn fail_if_current(&mut self, c: usize, tag: u64, now: Time) {
        if let Some(call) = self.clerks[c].call.as_mut() {
            if call.tag == tag {
                call.retry_at = now;
            }
        }
    }

    fn complete(&mut self, c: usize, seq: u64, reply: M::Reply, now: Time) {
        let seed = self.sim.seed();
        let clerk = &mut self.clerks[c];
        let Some(reply) = clerk.clerk.on_reply(seq, reply) else {
            return;
        };
        let Some(call) = clerk.call.take() else {
            return;
        };
        let command = &call.request.command;
        let Some(outputs) = M::outputs(command, &reply) else {
            panic!("seed {seed}: clerk {c} got {reply:?} for {command:?}")
        };
        assert!(
            call.invocations.is_empty() || call.invocations.len() == outputs.len(),
            "seed {seed}: {} outputs for {} inputs",
            outputs.len(),
            call.invocations.len()
        );
        for (invocation, output) in call.invocations.into_iter().zip(outputs) {
            self.history.complete(invocation, output, now.as_micros());
        }
        if self.record && M::keep(command, &reply) {
            self.completions.push(Completion {
                client: clerk.clerk.client(),
                command: command.clone(),
                reply: reply.clone(),
                invoked: call.invoked,
                returned: now,
            });
        }
        clerk.result = Some(reply);
    }

    fn retry_due(&mut self) {
        let now = self.sim.now();
        for c in 0..self.clerks.len() {
            let Some(call) = self.clerks[c].call.as_ref() else {
                continue;
            };
            let target_down = !self.sim.is_up(call.to.index());
            if call.retry_at > now && !target_down {
                continue;
            }
            if let Some((to, _)) = self.clerks[c].clerk.on_failure() {
                if let Some(call) = self.clerks[c].call.as_mut() {
                    call.to = to;
                }
                self.send(c);
            }
        }
    }
}

use super::script::{route, Routed};
pub use super::script::{Action, Harness, Script};

/// Concurrent client scripts of a group's harness.
pub type Scripts<M> = super::script::Scripts<Cluster<M>>;

impl<M: Recorded> Harness for Cluster<M> {
    type Call = M::Command;
    type Answer = M::Reply;

    fn now(&self) -> Time {
        self.sim.now()
    }

    fn start(&mut self, clerk: usize, call: M::Command) {
        self.begin(clerk, call);
    }

    fn idle(&self, clerk: usize) -> bool {
        Cluster::idle(self, clerk)
    }

    fn answer(&mut self, clerk: usize) -> Option<M::Reply> {
        self.take_result(clerk)
    }

    fn run_for(&mut self, duration: Duration) {
        Cluster::run_for(self, duration)
    }

    fn seed(&self) -> u64 {
        self.sim.seed()
    }
}

impl<M: Recorded> Cluster<M> {
    /// Runs `scripts` (and the group) for up to `duration`, returning early once every
    /// script finished; true if they all did.
    pub fn drive(&mut self, scripts: &mut Scripts<M>, duration: Duration) -> bool {
        scripts.drive(self, duration)
    }
}
