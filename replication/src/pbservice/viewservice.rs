//! The view service (Lab 2A): decides which server is primary and which is backup.
//!
//! Servers ping every [`PING_INTERVAL`]; one that has not pinged for [`DEAD_PINGS`]
//! intervals is dead. A ping from a new life of a server (a new boot id; a restarted
//! server pings 0 until it has learned a view) means the old life is dead: it lost its
//! state. Pings from a life already replaced are ignored.
//!
//! # Rules
//! - The first server to ping becomes primary of view 1. Afterwards a view changes when its
//!   primary or backup is dead or restarted, or when it has no backup and an idle server
//!   (alive, in no role) pings. Each new view is numbered one more than the last.
//! - The primary of view `n + 1` is the primary or the backup of view `n`: an idle server
//!   is never promoted straight to primary. When the primary fails, the backup is
//!   promoted and an idle server, if any, becomes backup in the same view change.
//! - **The ack rule**: a view that would change the primary is made only once the primary
//!   of the current view has acknowledged it (pinged with its number); if the primary
//!   dies first, the service is stuck, as in the lab. A primary acknowledges a view only
//!   once its backup holds the whole state (see [`super::server`]), so a promoted backup
//!   never starts empty.
//! - One refinement, which the lab leaves open: a view whose backup fails before its
//!   primary acknowledged it (the backup died while receiving the state) may be replaced
//!   by a view with the *same primary* and another backup or none. The primary's state is
//!   continuous across those views, so nothing is lost, and a backup dying mid-transfer
//!   does not stall the service for good.
//!
//! # Failure model
//! The view service keeps its state in memory and is a single point of failure: while it
//! is down no view changes, and a restarted view service starts from view 0, forgetting
//! which servers hold the data (an operator must restart the mode). Lost, duplicated and
//! delayed pings are tolerated.
//!
//! The ack rule makes this design stuck for good, by the lab's design, whenever the
//! primary of the current view fails before acknowledging it: the first primary, or a
//! backup promoted when the primary was found dead — including a backup that had already
//! crashed but whose last pings were still arriving, if the primary was found dead (a
//! crash, a partition, lost pings) before that backup was. Nothing else may take over, as
//! only those two servers can hold the state. So the design survives one failure at a
//! time, the next only after the view service replaced the failed server and the new view
//! was acknowledged; see [`super::server`] for what loses nothing.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::message::{answer, Member, Message, PbEvent, Reply, Request, View};
use crate::effects::Effects;
use crate::node::{Answer, Node};
use crate::replica::Event;
use crate::types::{NodeId, Time};

/// How often servers ping (lab: 100 ms).
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// Missed intervals after which a server is dead (lab: 5).
pub const DEAD_PINGS: u32 = 5;
/// Former boot ids remembered per server (pings from them are ignored).
const RETIRED_BOOTS_MAX: usize = 8;

/// The last ping of a server.
#[derive(Clone, Copy, Debug)]
struct Heard {
    at: Time,
    boot: u64,
}

/// The view service core. See the module docs.
pub struct ViewService {
    view: View,
    /// The primary of `view` has pinged with its number.
    acked: bool,
    heard: BTreeMap<NodeId, Heard>,
    retired: BTreeMap<NodeId, VecDeque<u64>>,
    pings: u64,
    gets: u64,
}

impl Default for ViewService {
    fn default() -> Self {
        ViewService::new()
    }
}

impl ViewService {
    /// A view service at view 0.
    pub fn new() -> ViewService {
        ViewService {
            view: View::default(),
            acked: false,
            heard: BTreeMap::new(),
            retired: BTreeMap::new(),
            pings: 0,
            gets: 0,
        }
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Whether the current view's primary acknowledged it.
    pub fn acked(&self) -> bool {
        self.acked
    }

    /// When server `node` last pinged, and from which life.
    pub fn heard(&self, node: NodeId) -> Option<(Time, u64)> {
        self.heard.get(&node).map(|h| (h.at, h.boot))
    }

    /// Pings and view requests answered so far.
    pub fn calls(&self) -> u64 {
        self.pings + self.gets
    }

    /// Handles a ping from server `from`'s life `boot` that has seen view `viewnum`;
    /// returns the current view.
    pub fn ping(&mut self, now: Time, from: NodeId, viewnum: u64, boot: u64) -> View {
        self.pings += 1;
        if self.retired.get(&from).is_some_and(|r| r.contains(&boot)) {
            return self.view.clone();
        }
        if let Some(old) = self.heard.get(&from).map(|h| h.boot) {
            if old != boot {
                let retired = self.retired.entry(from).or_default();
                if retired.len() == RETIRED_BOOTS_MAX {
                    retired.pop_front();
                }
                retired.push_back(old);
            }
        }
        self.heard.insert(from, Heard { at: now, boot });
        let member = Member { node: from, boot };
        if self.view.is_primary(member) && viewnum == self.view.viewnum {
            self.acked = true;
        }
        if self.view.viewnum == 0 {
            self.change(View {
                viewnum: 1,
                primary: Some(member),
                backup: None,
            });
        }
        self.advance(now);
        self.view.clone()
    }

    /// Periodic work: moves to a new view when the rules call for one.
    pub fn tick(&mut self, now: Time) {
        self.advance(now);
    }

    /// Whether `member`'s life is alive: it pinged lately and was not replaced.
    fn alive(&self, now: Time, member: Member) -> bool {
        self.heard
            .get(&member.node)
            .is_some_and(|h| h.boot == member.boot && now - h.at < PING_INTERVAL * DEAD_PINGS)
    }

    /// An alive server in no role (the lowest node id, for determinism).
    fn idle(&self, now: Time) -> Option<Member> {
        let busy = [self.view.primary_node(), self.view.backup_node()];
        self.heard
            .iter()
            .filter(|(node, _)| !busy.contains(&Some(**node)))
            .map(|(&node, h)| Member { node, boot: h.boot })
            .find(|&m| self.alive(now, m))
    }

    fn advance(&mut self, now: Time) {
        let Some(primary) = self.view.primary else {
            return;
        };
        let primary_ok = self.alive(now, primary);
        let backup_ok = self.view.backup.map(|b| self.alive(now, b));
        let (primary, backup) = match (primary_ok, backup_ok) {
            // Promote the backup: only once the primary acknowledged this view.
            (false, Some(true)) if self.acked => (self.view.backup, self.idle(now)),
            // Stuck: nobody holds the state (or the primary never acknowledged).
            (false, _) => return,
            // Replace a failed backup; allowed before the ack (the primary stays).
            (true, Some(false)) => (Some(primary), self.idle(now)),
            // Add a backup once the primary acknowledged the view.
            (true, None) if self.acked => match self.idle(now) {
                Some(idle) => (Some(primary), Some(idle)),
                None => return,
            },
            (true, _) => return,
        };
        self.change(View {
            viewnum: self.view.viewnum + 1,
            primary,
            backup,
        });
    }

    fn change(&mut self, view: View) {
        debug_assert_eq!(view.viewnum, self.view.viewnum + 1);
        self.view = view;
        self.acked = false;
    }

    /// Status fields.
    pub fn status_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("role", "view-service".into()),
            ("view", self.view.to_string()),
            ("acked", self.acked.to_string()),
            ("calls", self.calls().to_string()),
        ]
    }
}

impl Node for ViewService {
    type Msg = Message;
    type Request = Request;
    type Reply = Reply;
    type Event = PbEvent;

    fn on_boot(&mut self, _now: Time, _out: &mut Effects<Message, PbEvent>) {}

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Message,
        out: &mut Effects<Message, PbEvent>,
    ) {
        if let Message::Ping { viewnum, boot } = msg {
            let view = self.ping(now, from, viewnum, boot);
            out.send.push((from, Message::View { view }));
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Request,
        out: &mut Effects<Message, PbEvent>,
    ) {
        match request {
            Request::View => {
                self.gets += 1;
                self.advance(now);
                out.events.push(Event::Reply {
                    tag,
                    reply: Reply::View(self.view.clone()),
                });
            }
            Request::Kv(_) => out.events.push(Event::Dropped { tag }),
        }
    }

    fn on_tick(&mut self, now: Time, _out: &mut Effects<Message, PbEvent>) {
        self.tick(now);
    }

    fn answer(event: &PbEvent) -> Option<Answer<Reply>> {
        answer(event)
    }

    fn is_response(msg: &Message) -> bool {
        msg.is_response()
    }

    fn summarize(msg: &Message) -> String {
        msg.summary()
    }

    fn wire_bytes(msg: &Message) -> usize {
        msg.wire_bytes()
    }

    fn retained_bytes(&self) -> u64 {
        0
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.status_fields()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn leader(&self) -> Option<NodeId> {
        self.view.primary_node()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn a_backup_failing_before_the_ack_is_replaced_but_a_primary_failing_is_not() {
        let mut vs = ViewService::new();
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        vs.ping(at(0), a, 0, 10);
        vs.ping(at(100), a, 1, 10);
        let v = vs.ping(at(100), b, 0, 20);
        assert_eq!((v.viewnum, v.backup_node()), (2, Some(b)));
        // The backup dies while a has not acknowledged view 2; c is idle.
        for t in (200..1000).step_by(100) {
            vs.ping(at(t), a, 1, 10);
            vs.ping(at(t), c, 0, 30);
        }
        let v = vs.view().clone();
        assert_eq!(
            (v.viewnum, v.primary_node(), v.backup_node()),
            (3, Some(a), Some(c))
        );
        // Now a dies before acknowledging view 3: stuck, c is never promoted.
        for t in (1000..3000).step_by(100) {
            vs.ping(at(t), c, 3, 30);
        }
        assert_eq!(vs.view().viewnum, 3);
        assert_eq!(vs.view().primary_node(), Some(a));
    }

    #[test]
    fn pings_from_a_replaced_life_are_ignored() {
        let mut vs = ViewService::new();
        let a = NodeId(1);
        vs.ping(at(0), a, 0, 10);
        vs.ping(at(10), a, 1, 10);
        // a restarts (boot 11): its old life is dead; a late ping of the old life changes
        // nothing.
        vs.ping(at(20), a, 0, 11);
        let before = vs.view().clone();
        vs.ping(at(30), a, 1, 10);
        assert_eq!(*vs.view(), before);
        assert!(vs.acked());
    }
}
