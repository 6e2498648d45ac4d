//! Primary/backup on the simulator: one view service (node 0) and its servers (nodes
//! `1..`), all on one seed, with lab-style clerks ([`PbWorld`]).
//!
//! # Clients, as in the lab (spec §4)
//! A clerk caches the primary. It asks the view service for the view (one call, counted
//! like the lab's RPCs) only when it knows no primary or a call failed — refused, lost,
//! unanswered within [`PbWorld::retry_timeout`], or to a server that is down — and waits
//! [`PING_INTERVAL`] before it asks again, as the lab's clerk sleeps between retries. Every
//! retry re-sends the same request (same seq). Requests reach nodes through [`Sim::call`]
//! at once (or after a proxy's delay, [`PbWorld::delay_requests`]); partitions cut only
//! node-to-node traffic. Unreliable nodes lose 10% of requests and 20% of replies.
//!
//! # Checks
//! - After every step: no two servers serve as primary of the same view.
//! - On demand: the history's linearizability ([`PbWorld::check_linearizable`]), and that
//!   the primary and the backup of a settled view hold the same data
//!   ([`PbWorld::assert_pair_agrees`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kv_engine::fs::Torn;
use kv_engine::kv::{KvState, Reply as KvReply};

use super::group::{Completion, Recorded};
use super::group_sweep::{Faultable, Faulted};
use super::kv::KvCalls;
use super::script::{route, Harness, Routed};
use super::{Boot, Host, Sim, SimOptions, UNRELIABLE_REPLY_LOSS, UNRELIABLE_REQUEST_LOSS};
use crate::clerk::Clerk;
use crate::effects::Effects;
use crate::kvgroup::Batch;
use crate::linearizability::{History, Input, Invocation, Output};
use crate::node::Node;
use crate::pbservice::{
    Core, Member, Message, PbEvent, PbServer, Reply, Request, Role, View, ViewService,
    PING_INTERVAL,
};
use crate::replica::Request as KvRequest;
use crate::rng::Rng;
use crate::types::{ClientId, NodeId, Time};

/// The view service's node.
pub const VIEW_SERVICE: usize = 0;

/// A node of the world.
pub enum PbNode {
    /// The view service, with the servers whose pings cannot reach it (the lab's removed
    /// hard link to its socket).
    View {
        /// The core.
        core: Box<ViewService>,
        /// Servers cut off from it.
        unheard: BTreeSet<NodeId>,
    },
    /// A primary/backup server.
    Server(Box<PbServer>),
    /// A server's node before the test starts it.
    Unstarted(Unstarted),
}

type PbEffects = Effects<Message, PbEvent>;

impl PbNode {
    /// The server, if this is one.
    pub fn server(&self) -> Option<&PbServer> {
        match self {
            PbNode::Server(s) => Some(s),
            PbNode::View { .. } | PbNode::Unstarted(_) => None,
        }
    }

    /// The view service, if this is it.
    pub fn view_service(&self) -> Option<&ViewService> {
        match self {
            PbNode::View { core, .. } => Some(core.as_ref()),
            PbNode::Server(_) | PbNode::Unstarted(_) => None,
        }
    }

    fn node(&mut self) -> &mut dyn Core {
        match self {
            PbNode::View { core, .. } => core.as_mut(),
            PbNode::Server(s) => s.as_mut(),
            PbNode::Unstarted(u) => u,
        }
    }

    fn node_ref(&self) -> &dyn Core {
        match self {
            PbNode::View { core, .. } => core.as_ref(),
            PbNode::Server(s) => s.as_ref(),
            PbNode::Unstarted(u) => u,
        }
    }
}

/// What a node does before its server is started: it refuses requests.
pub struct Unstarted;

impl Core for Unstarted {
    fn on_boot(&mut self, _: Time, _: &mut PbEffects) {}
    fn on_message(&mut self, _: Time, _: NodeId, _: Message, _: &mut PbEffects) {}
    fn on_request(&mut self, _: Time, tag: u64, _: Request, out: &mut PbEffects) {
        out.events.push(crate::replica::Event::Dropped { tag });
    }
    fn on_tick(&mut self, _: Time, _: &mut PbEffects) {}
    fn hold(&mut self) {}
    fn release(&mut self, _: Time, _: &mut PbEffects) {}
    fn retained_bytes(&self) -> u64 {
        0
    }
    fn status(&self) -> Vec<(&'static str, String)> {
        vec![("role", "unstarted".into())]
    }
    fn is_ready(&self) -> bool {
        true
    }
    fn leader(&self) -> Option<NodeId> {
        None
    }
}

impl Node for PbNode {
    type Msg = Message;
    type Request = Request;
    type Reply = Reply;
    type Event = PbEvent;

    fn on_boot(&mut self, now: Time, out: &mut PbEffects) {
        self.node().on_boot(now, out)
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PbEffects) {
        if let PbNode::View { unheard, .. } = self {
            if unheard.contains(&from) {
                return;
            }
        }
        self.node().on_message(now, from, msg, out)
    }

    fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut PbEffects) {
        self.node().on_request(now, tag, request, out)
    }

    fn on_tick(&mut self, now: Time, out: &mut PbEffects) {
        self.node().on_tick(now, out)
    }

    fn hold(&mut self) {
        self.node().hold()
    }

    fn release(&mut self, now: Time, out: &mut PbEffects) {
        self.node().release(now, out)
    }

    crate::pbservice::message::message_fns!();

    fn retained_bytes(&self) -> u64 {
        self.node_ref().retained_bytes()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.node_ref().status()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn leader(&self) -> Option<NodeId> {
        self.node_ref().leader()
    }
}

/// Boots the world's nodes and checks that no two servers serve as primary of one view.
pub struct PbHost {
    seed: u64,
    /// Events not yet taken by the harness.
    events: Vec<(NodeId, PbEvent)>,
    /// Per view: the server that served as its primary.
    primaries: BTreeMap<u64, NodeId>,
    /// Servers the test has not started yet.
    unstarted: BTreeSet<usize>,
}

impl Host for PbHost {
    type Node = PbNode;

    fn boot(&mut self, boot: Boot) -> PbNode {
        if boot.id.index() == VIEW_SERVICE {
            PbNode::View {
                core: Box::new(ViewService::new()),
                unheard: BTreeSet::new(),
            }
        } else if self.unstarted.contains(&boot.id.index()) {
            PbNode::Unstarted(Unstarted)
        } else {
            // Nothing on disk: every start is a new life with an empty state.
            let view_service = NodeId(VIEW_SERVICE as u32);
            PbNode::Server(Box::new(PbServer::new(boot.id, view_service, boot.seed)))
        }
    }

    fn observe(&mut self, id: NodeId, node: &PbNode, events: &[PbEvent]) {
        self.check(id, node);
        self.events.extend(events.iter().map(|e| (id, e.clone())));
    }

    fn booted(&mut self, id: NodeId, node: &PbNode) {
        self.check(id, node);
    }
}

impl PbHost {
    fn check(&mut self, id: NodeId, node: &PbNode) {
        let Some(server) = node.server() else {
            return;
        };
        if server.role() != Role::Primary {
            return;
        }
        let viewnum = server.view().viewnum;
        let first = *self.primaries.entry(viewnum).or_insert(id);
        assert_eq!(
            first, id,
            "SAFETY VIOLATION (seed {}): {first} and {id} both serve as primary of view {viewnum}",
            self.seed
        );
    }
}

/// How long a failed call waits before the clerk retries (a refused connection).
const REDIAL: Duration = Duration::from_millis(10);
/// Granularity of the harness loop in virtual time.
const POLL: Duration = Duration::from_millis(1);

/// Where a clerk's call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leg {
    /// Asking the view service for the primary.
    View,
    /// Sending the request to the server it believes is primary.
    Server(NodeId),
}

struct Call {
    request: KvRequest<Batch>,
    /// One per op of the request (none while the history is not recorded).
    invocations: Vec<Invocation>,
    invoked: Time,
    leg: Leg,
    tag: u64,
    /// When the current leg counts as failed (and the clerk asks the view service).
    deadline: Time,
}

struct PbClerk {
    clerk: Clerk<Batch>,
    primary: Option<NodeId>,
    call: Option<Call>,
    result: Option<KvReply>,
}

/// A request held by a delaying proxy.
struct Delayed {
    at: Time,
    to: usize,
    tag: u64,
    request: Request,
}

/// Primary/backup on the simulator with lab-style clerks. See the module docs.
pub struct PbWorld {
    /// The simulator.
    pub sim: Sim<PbHost>,
    /// Every client operation so far.
    pub history: History,
    /// A call to a server with no answer for this long counts as failed.
    pub retry_timeout: Duration,
    /// Record operations in [`PbWorld::history`].
    pub record: bool,
    /// Completed requests with Appends (while recording), for [`PbWorld::pin_appends`].
    pub completions: Vec<Completion<KvState>>,
    /// View requests clerks sent to the view service.
    pub view_requests: u64,
    clerks: Vec<PbClerk>,
    tags: BTreeMap<u64, usize>,
    next_tag: u64,
    next_client: u64,
    unreliable: Vec<bool>,
    unreachable: Vec<bool>,
    delays: Vec<Duration>,
    delayed: Vec<Delayed>,
    rng: Rng,
}

impl PbWorld {
    /// A view service and `servers` servers, none of them started, on a reliable network.
    /// (Servers start with [`PbWorld::start`], as the lab's tests start them one by one.)
    pub fn new(seed: u64, servers: usize) -> PbWorld {
        PbWorld::with(seed, servers, |_| {})
    }

    /// Like [`PbWorld::new`], with a hook to adjust the simulator options.
    pub fn with(seed: u64, servers: usize, tune: impl FnOnce(&mut SimOptions)) -> PbWorld {
        let nodes = servers + 1;
        let mut options = SimOptions::new(nodes);
        tune(&mut options);
        let host = PbHost {
            seed,
            events: Vec::new(),
            primaries: BTreeMap::new(),
            unstarted: (1..nodes).collect(),
        };
        PbWorld {
            sim: Sim::new(seed, options, host),
            history: History::new(),
            retry_timeout: Duration::from_secs(1),
            record: true,
            completions: Vec::new(),
            view_requests: 0,
            clerks: Vec::new(),
            tags: BTreeMap::new(),
            next_tag: 1,
            next_client: 1,
            unreliable: vec![false; nodes],
            unreachable: vec![false; nodes],
            delays: vec![Duration::ZERO; nodes],
            delayed: Vec::new(),
            rng: Rng::new(seed ^ 0x5042_5752_4C44_5042),
        }
    }

    /// The servers' nodes.
    pub fn servers(&self) -> std::ops::Range<usize> {
        1..self.sim.len()
    }

    /// The harness's random generator (for test schedules).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Starts server `i` (a new life, with an empty state).
    pub fn start(&mut self, i: usize) {
        assert_ne!(i, VIEW_SERVICE, "the view service is never restarted");
        if self.sim.host_mut().unstarted.remove(&i) {
            self.sim.crash(i, Torn::None);
        }
        if !self.sim.is_up(i) {
            self.sim.restart(i);
        }
    }

    /// Kills server `i` (its state is gone).
    pub fn kill(&mut self, i: usize) {
        assert_ne!(
            i, VIEW_SERVICE,
            "the view service is a single point of failure"
        );
        if self.sim.is_up(i) {
            self.sim.crash(i, Torn::None);
        }
    }

    /// The view service's current view.
    pub fn view(&self) -> View {
        self.view_service().view().clone()
    }

    /// The view service.
    pub fn view_service(&self) -> &ViewService {
        self.sim
            .node(VIEW_SERVICE)
            .and_then(PbNode::view_service)
            .expect("the view service is always up")
    }

    /// Server `i`, if it is up.
    pub fn server(&self, i: usize) -> Option<&PbServer> {
        self.sim.node(i).and_then(PbNode::server)
    }

    /// Calls the view service has answered: pings and view requests (the lab's
    /// `GetRPCCount`).
    pub fn view_service_calls(&self) -> u64 {
        self.view_service().calls()
    }

    /// Cuts server `i` off from the view service (its pings are lost), or restores it.
    pub fn cut_from_view_service(&mut self, i: usize, cut: bool) {
        let node = NodeId(i as u32);
        self.sim.call(VIEW_SERVICE, |n, _, _| {
            if let PbNode::View { unheard, .. } = n {
                if cut {
                    unheard.insert(node);
                } else {
                    unheard.remove(&node);
                }
            }
        });
    }

    /// Puts a proxy in front of server `i` that delivers each client request `delay` late
    /// (zero: no proxy).
    pub fn delay_requests(&mut self, i: usize, delay: Duration) {
        self.delays[i] = delay;
    }

    /// The lab's unreliable mode for node `i` (its clients' calls too).
    pub fn set_unreliable(&mut self, i: usize, on: bool) {
        self.unreliable[i] = on;
        self.sim.set_unreliable(i, on);
    }

    /// Node `i` takes no requests from clients or nodes.
    pub fn set_unreachable(&mut self, i: usize, on: bool) {
        self.unreachable[i] = on;
        self.sim.set_deaf(i, on);
    }

    /// Runs until the view service's view satisfies `done`, or `limit`; true if it did.
    pub fn wait_view(&mut self, limit: Duration, done: impl Fn(&View) -> bool) -> bool {
        let end = self.sim.now() + limit;
        loop {
            if done(&self.view()) {
                return true;
            }
            if self.sim.now() >= end {
                return false;
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    /// True once the view service's view is acknowledged and its backup (if any) holds the
    /// whole state: a single failure now loses nothing.
    pub fn settled(&self) -> bool {
        let view = self.view();
        let holds = |m: Option<Member>| {
            m.and_then(|m| self.server(m.node.index()).filter(|s| s.member() == m))
                .is_some_and(|s| s.view().viewnum == view.viewnum && s.holds_state())
        };
        self.view_service().acked()
            && holds(view.primary)
            && (view.backup.is_none() || holds(view.backup))
    }

    /// Runs until [`PbWorld::settled`] (or `limit`); true if it did.
    pub fn wait_settled(&mut self, limit: Duration) -> bool {
        let end = self.sim.now() + limit;
        while !self.settled() {
            if self.sim.now() >= end {
                return false;
            }
            self.run_for(Duration::from_millis(10));
        }
        true
    }

    /// Panics unless the primary and the backup of the current view hold equal data and
    /// applied the same requests.
    pub fn assert_pair_agrees(&self) {
        let view = self.view();
        let seed = self.sim.seed();
        let (Some(p), Some(b)) = (view.primary_node(), view.backup_node()) else {
            return;
        };
        let (Some(primary), Some(backup)) = (self.server(p.index()), self.server(b.index())) else {
            panic!("seed {seed}: a server of {view} is down");
        };
        assert_eq!(
            primary.applied_digest(),
            backup.applied_digest(),
            "seed {seed}: primary {p} and backup {b} applied different requests"
        );
        assert!(
            primary.data().image_bytes() == backup.data().image_bytes(),
            "seed {seed}: primary {p} and backup {b} hold different data"
        );
    }

    // ---------------------------------------------------------------------------------
    // Clerks.
    // ---------------------------------------------------------------------------------

    /// A new clerk (fresh client id).
    pub fn clerk(&mut self) -> usize {
        let client = ClientId(self.next_client);
        self.next_client += 1;
        let servers = self.servers().map(|i| NodeId(i as u32)).collect();
        self.clerks.push(PbClerk {
            clerk: Clerk::new(client, servers),
            primary: None,
            call: None,
            result: None,
        });
        self.clerks.len() - 1
    }

    /// Starts `op` (anything that converts into a request) on clerk `c`, which must be idle.
    pub fn begin(&mut self, c: usize, op: impl Into<Batch>) {
        let batch = op.into();
        let now = self.sim.now();
        let client = self.clerks[c].clerk.client().0;
        let inputs = if self.record {
            <KvState as Recorded>::inputs(&batch)
        } else {
            Vec::new()
        };
        let invocations = inputs
            .into_iter()
            .map(|input: Input| self.history.invoke(client, input, now.as_micros()))
            .collect();
        let (_, request) = self.clerks[c]
            .clerk
            .begin(batch)
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.sim.seed()));
        let leg = self.clerks[c].primary.map_or(Leg::View, Leg::Server);
        self.clerks[c].result = None;
        self.clerks[c].call = Some(Call {
            request,
            invocations,
            invoked: now,
            leg,
            tag: 0,
            deadline: now,
        });
        self.send(c);
    }

    /// True if clerk `c` has no call in progress.
    pub fn idle(&self, c: usize) -> bool {
        self.clerks[c].call.is_none()
    }

    /// The answer to clerk `c`'s last request, once it arrived.
    pub fn take_result(&mut self, c: usize) -> Option<KvReply> {
        self.clerks[c].result.take()
    }

    /// Abandons clerk `c`'s call (its outcome stays unknown). The clerk is retired.
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
            self.deliver_delayed();
            self.take_events();
            self.retry_failed();
        }
    }

    /// Runs until clerk `c` is idle or `limit` passes; its answer if it got one.
    pub fn wait(&mut self, c: usize, limit: Duration) -> Option<KvReply> {
        self.wait_idle(&[c], limit);
        self.take_result(c)
    }

    /// Runs `op` on clerk `c`; panics (with the seed) if no answer within [`OP_LIMIT`](super::script::OP_LIMIT).
    pub fn must(&mut self, c: usize, op: impl Into<Batch>) -> KvReply {
        self.must_answer(c, op.into())
    }

    /// Pins the order of the Appends on `key` by the lengths they reported, given its final
    /// `value` (see [`super::kv::pin_appends`]).
    pub fn pin_appends(&self, key: &str, value: &[u8]) {
        super::kv::pin_appends(
            &self.history,
            &self.completions,
            key,
            value,
            self.sim.seed(),
        );
    }

    /// Checks the history for linearizability; panics with the seed if it is not.
    pub fn check_linearizable(&self) {
        let verdict = <KvState as Recorded>::check(&self.history);
        assert_eq!(
            verdict,
            crate::linearizability::CheckResult::Ok,
            "seed {}: {verdict}",
            self.sim.seed()
        );
    }

    /// Sends clerk `c`'s call on its current leg.
    fn send(&mut self, c: usize) {
        let now = self.sim.now();
        let tag = self.next_tag;
        self.next_tag += 1;
        let Some(call) = self.clerks[c].call.as_mut() else {
            return;
        };
        call.tag = tag;
        let (to, request) = match call.leg {
            Leg::View => {
                self.view_requests += 1;
                (VIEW_SERVICE, Request::View)
            }
            Leg::Server(to) => (to.index(), Request::Kv(call.request.clone())),
        };
        let delay = self.delays[to];
        call.deadline = now + delay + self.retry_timeout;
        self.tags.insert(tag, c);
        let lost = self.unreliable[to] && self.rng.chance(UNRELIABLE_REQUEST_LOSS);
        if !self.sim.is_up(to) || self.unreachable[to] || lost {
            if let Some(call) = self.clerks[c].call.as_mut() {
                call.deadline = now + REDIAL;
            }
            return;
        }
        if !delay.is_zero() {
            let at = now + delay;
            self.delayed.push(Delayed {
                at,
                to,
                tag,
                request,
            });
            return;
        }
        self.sim.call(to, |node, now, out| {
            Node::on_request(node, now, tag, request, out)
        });
        self.take_events();
    }

    fn deliver_delayed(&mut self) {
        let now = self.sim.now();
        let (due, later) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|d| d.at <= now);
        self.delayed = later;
        for Delayed {
            to, tag, request, ..
        } in due
        {
            self.sim.call(to, |node, now, out| {
                Node::on_request(node, now, tag, request, out)
            });
        }
    }

    fn take_events(&mut self) {
        let seed = self.sim.seed();
        loop {
            let events = std::mem::take(&mut self.sim.host_mut().events);
            if events.is_empty() {
                return;
            }
            for (node, event) in events {
                let (unreliable, rng) = (self.unreliable[node.index()], &mut self.rng);
                let lost = || unreliable && rng.chance(UNRELIABLE_REPLY_LOSS);
                match route(&mut self.tags, node, PbNode::answer(&event), lost, seed) {
                    Some(Routed::Reply {
                        tag,
                        call: c,
                        reply,
                    }) => self.on_reply(c, tag, reply),
                    Some(Routed::Failed { tag, call: c }) => self.leg_failed(c, tag),
                    None => {}
                }
            }
        }
    }

    /// The current leg of clerk `c`'s call (tagged `tag`) failed: forget the primary and
    /// ask the view service after a pause.
    fn leg_failed(&mut self, c: usize, tag: u64) {
        let now = self.sim.now();
        let clerk = &mut self.clerks[c];
        if let Some(call) = clerk.call.as_mut().filter(|call| call.tag == tag) {
            call.deadline = now;
        }
    }

    fn on_reply(&mut self, c: usize, tag: u64, reply: Reply) {
        let seed = self.sim.seed();
        let now = self.sim.now();
        let clerk = &mut self.clerks[c];
        let Some(call) = clerk.call.as_mut().filter(|call| call.tag == tag) else {
            return;
        };
        match (call.leg, reply) {
            (Leg::View, Reply::View(view)) => match view.primary_node() {
                Some(primary) => {
                    clerk.primary = Some(primary);
                    call.leg = Leg::Server(primary);
                    self.send(c);
                }
                None => call.deadline = now + PING_INTERVAL,
            },
            (Leg::Server(_), Reply::Kv(reply)) => self.complete(c, reply),
            (leg, reply) => panic!("seed {seed}: clerk {c} on {leg:?} got {reply:?}"),
        }
    }

    fn complete(&mut self, c: usize, reply: KvReply) {
        let seed = self.sim.seed();
        let now = self.sim.now();
        let clerk = &mut self.clerks[c];
        let Some(call) = clerk.call.take() else {
            return;
        };
        let Some(reply) = clerk.clerk.on_reply(call.request.seq, reply) else {
            return;
        };
        let batch = &call.request.command;
        let outputs: Vec<Output> = <KvState as Recorded>::outputs(batch, &reply)
            .unwrap_or_else(|| panic!("seed {seed}: clerk {c} got {reply:?} for {batch:?}"));
        for (invocation, output) in call.invocations.into_iter().zip(outputs) {
            self.history.complete(invocation, output, now.as_micros());
        }
        if self.record && <KvState as Recorded>::keep(batch, &reply) {
            self.completions.push(Completion {
                client: clerk.clerk.client(),
                command: batch.clone(),
                reply: reply.clone(),
                invoked: call.invoked,
                returned: now,
            });
        }
        clerk.result = Some(reply);
    }

    /// Calls whose leg failed or timed out: a failed server leg forgets the primary and,
    /// a pause later, asks the view service again.
    fn retry_failed(&mut self) {
        let now = self.sim.now();
        for c in 0..self.clerks.len() {
            let clerk = &mut self.clerks[c];
            let Some(call) = clerk.call.as_mut() else {
                continue;
            };
            let target = match call.leg {
                Leg::View => VIEW_SERVICE,
                Leg::Server(to) => to.index(),
            };
            if call.deadline > now && self.sim.is_up(target) {
                continue;
            }
            match call.leg {
                Leg::Server(_) => {
                    // Pause, then ask the view service (the lab's clerk sleeps too).
                    clerk.primary = None;
                    call.leg = Leg::View;
                    call.tag = 0;
                    call.deadline = now + PING_INTERVAL;
                }
                Leg::View => self.send(c),
            }
        }
    }
}

/// What a primary/backup client script does next.
pub type Action = super::script::Action<Batch>;
/// Concurrent primary/backup client scripts.
pub type Scripts = super::script::Scripts<PbWorld>;
pub use super::script::Script;

impl Harness for PbWorld {
    type Call = Batch;
    type Answer = KvReply;

    fn now(&self) -> Time {
        self.sim.now()
    }

    fn start(&mut self, clerk: usize, call: Batch) {
        self.begin(clerk, call);
    }

    fn idle(&self, clerk: usize) -> bool {
        PbWorld::idle(self, clerk)
    }

    fn answer(&mut self, clerk: usize) -> Option<KvReply> {
        self.take_result(clerk)
    }

    fn run_for(&mut self, duration: Duration) {
        PbWorld::run_for(self, duration)
    }

    fn seed(&self) -> u64 {
        self.sim.seed()
    }
}

impl KvCalls for PbWorld {
    fn must_kv(&mut self, c: usize, op: kv_engine::kv::Op) -> KvReply {
        self.must(c, op)
    }
}

impl Faulted for PbWorld {
    fn nodes(&self) -> usize {
        self.sim.len()
    }

    fn cohort(&self, i: usize) -> Vec<usize> {
        if i == VIEW_SERVICE {
            vec![VIEW_SERVICE]
        } else {
            self.servers().collect()
        }
    }

    fn sim_mut(&mut self) -> &mut dyn Faultable {
        &mut self.sim
    }

    fn sim_ref(&self) -> &dyn Faultable {
        &self.sim
    }

    fn set_unreliable(&mut self, i: usize, on: bool) {
        // The view service's pings stay steady (see the sweep): a lost run of them is a
        // failure the schedule could not time.
        if i != VIEW_SERVICE {
            PbWorld::set_unreliable(self, i, on)
        }
    }

    fn started(&self, _i: usize) -> Option<(u64, u64)> {
        None // nothing on disk: no backup of a disk to restore
    }

    fn knows_later_start(&self, _: usize, _: usize, _: u64, _: u64) -> bool {
        false
    }

    fn may_fail(&self, i: usize) -> Option<bool> {
        Some(self.survives_failure(i))
    }

    fn may_partition(&self, sides: &[&[usize]]) -> bool {
        self.survives_partition(sides)
    }
}

/// How recently the view service must have heard a member of its view for the sweep to
/// fail the other one (two ping intervals: it is not about to be found dead).
const HEARD_LATELY: Duration = Duration::from_millis(200);

impl PbWorld {
    /// The servers the view service's view names, by node, that are up in the life it
    /// names.
    fn members_up(&self) -> Vec<usize> {
        let view = self.view();
        [view.primary, view.backup]
            .into_iter()
            .flatten()
            .map(|m| m.node.index())
            .filter(|&i| {
                self.server(i)
                    .is_some_and(|s| view.is_primary(s.member()) || view.is_backup(s.member()))
            })
            .collect()
    }

    /// Whether server `i`'s pings reach the view service: under the partition `sides`
    /// (nodes listed nowhere are isolated), or under the current one.
    fn reaches_view_service(&self, i: usize, sides: Option<&[&[usize]]>) -> bool {
        let cut = match &self.sim.node(VIEW_SERVICE) {
            Some(PbNode::View { unheard, .. }) => unheard.contains(&NodeId(i as u32)),
            _ => true,
        };
        let linked = match sides {
            Some(sides) => sides
                .iter()
                .any(|side| side.contains(&i) && side.contains(&VIEW_SERVICE)),
            None => self.sim.linked(i, VIEW_SERVICE),
        };
        !cut && linked
    }

    /// Whether the pair can take one failure now: the view service's view is acknowledged,
    /// has a primary and a backup, both up in the lives it names, holding that view's whole
    /// state, reaching the view service and heard by it within [`HEARD_LATELY`].
    ///
    /// So the last failure was noticed and repaired. A failed member stays in the view
    /// until the view service replaces it: a crashed server is dead to the view service only
    /// once its last pings (maybe still in flight) are `DEAD_PINGS` intervals old, and a
    /// server cut off is, until it is heard again; meanwhile a second failure could make
    /// the view service promote the dead one, or drop the only one holding the state.
    pub fn can_take_a_failure(&self) -> bool {
        let view = self.view();
        let vs = self.view_service();
        let now = self.sim.now();
        let members = self.members_up();
        vs.acked()
            && view.backup.is_some()
            && members.len() == 2
            && members.iter().all(|&i| {
                let server = self.server(i);
                server.is_some_and(|s| s.holds() == Some(view.viewnum))
                    && self.reaches_view_service(i, None)
                    && server
                        .and_then(|s| vs.heard(s.member().node).filter(|h| h.1 == s.member().boot))
                        .is_some_and(|(at, _)| now - at <= HEARD_LATELY)
            })
    }

    /// Whether losing node `i` now (a crash: its state is gone) loses nothing and leaves
    /// the service able to go on: never the view service (a single point of failure); no
    /// server before the view service made view 1 (the first ping to arrive makes its
    /// sender primary, maybe a ping sent before its sender crashed: a dead primary that
    /// never acknowledges); the primary or the backup only while
    /// [`PbWorld::can_take_a_failure`]; any other server at any time (a late ping may
    /// still make it the backup, which is replaced once found dead: its primary has not
    /// acknowledged that view).
    pub fn survives_failure(&self, i: usize) -> bool {
        if i == VIEW_SERVICE || self.view().viewnum == 0 {
            return false;
        }
        !self.members_up().contains(&i) || self.can_take_a_failure()
    }

    /// Whether splitting the network into `sides` now is a failure the design survives:
    /// it cuts neither the primary nor the backup (up in the lives the view names) off
    /// from the view service, or cuts one of them while [`PbWorld::can_take_a_failure`].
    /// A server cut off is dead to the view service as a crashed one is, and the view
    /// service may promote only a backup it hears; cutting a member off while another
    /// failure is not yet repaired could leave the only server holding the state out of
    /// the view, or a dead one as its primary, for good.
    pub fn survives_partition(&self, sides: &[&[usize]]) -> bool {
        let cut = self
            .members_up()
            .into_iter()
            .filter(|&i| !self.reaches_view_service(i, Some(sides)))
            .count();
        cut == 0 || (cut == 1 && self.can_take_a_failure())
    }
}
