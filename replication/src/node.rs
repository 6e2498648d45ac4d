//! The one contract between protocol cores and the drivers that run them, and the one
//! sans-IO [`Pipeline`] that orders a core's effects — used by the production driver and
//! by the simulator alike, so every simulated seed runs the production ordering.
//!
//! # The pipeline's contract
//!
//! A driver takes a *step* — one input, or a burst of inputs handled back to back between
//! [`Node::hold`] and [`Node::release`] — and hands the step's [`Effects`] to
//! [`Pipeline::step`], which returns the step's writes and queues its sends and events:
//!
//! 1. `send_early` / `events_early` wait only for the writes of *earlier* steps;
//! 2. the step's `persist` goes to the disk, in order, with a *ticket* if any of it must be
//!    synced (lazy records alone get none: a later sync carries them);
//! 3. the step's `send` / `events` wait for every ticket up to and including the step's.
//!
//! The driver reports each ticket durable ([`Pipeline::durable`]) in any order; the
//! pipeline releases queued items strictly in step order, each once every ticket it waits
//! for is durable ([`Pipeline::release`]). So the core never waits for the disk, many steps
//! share one fsync, and nothing leaves before the state it depends on is durable.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use crate::effects::{Effects, Persist};
use crate::types::{NodeId, Time};

/// What an event means for a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<R> {
    /// The request tagged `tag` was answered.
    Reply {
        /// The driver's tag.
        tag: u64,
        /// The answer.
        reply: R,
    },
    /// The node gave up on the request tagged `tag`: retry, here or elsewhere.
    Dropped {
        /// The driver's tag.
        tag: u64,
    },
    /// The node stopped serving: an operator must look.
    Halted {
        /// Why.
        reason: String,
    },
}

/// A protocol core a driver can run: messages, client requests and ticks go in, effects
/// come out (see [`crate::effects`]); queries describe it.
pub trait Node {
    /// Messages between nodes.
    type Msg: Clone + fmt::Debug;
    /// A client request.
    type Request;
    /// A client reply.
    type Reply;
    /// Upward notifications.
    type Event: Clone + fmt::Debug;

    /// Work due right after (re)start, before any input.
    fn on_boot(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>);
    /// A message from node `from`.
    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Effects<Self::Msg, Self::Event>,
    );
    /// A client request; its answer comes back as an event carrying `tag`.
    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Self::Request,
        out: &mut Effects<Self::Msg, Self::Event>,
    );
    /// Periodic work.
    fn on_tick(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>);
    /// Called before a burst of inputs handled back to back: the core may hold back work
    /// that batches better once the whole burst is in (e.g. starting a new instance).
    fn hold(&mut self) {}
    /// Called after the burst: does what [`Node::hold`] held back.
    fn release(&mut self, _now: Time, _out: &mut Effects<Self::Msg, Self::Event>) {}
    /// What an event means for a client request, if anything.
    fn answer(event: &Self::Event) -> Option<Answer<Self::Reply>>;
    /// True for replies (the simulator delivers them to deaf nodes and loses them from
    /// unreliable ones).
    fn is_response(msg: &Self::Msg) -> bool;
    /// A one-line description for traces (no bulky payloads).
    fn summarize(msg: &Self::Msg) -> String;
    /// The message's size on the wire (an estimate).
    fn wire_bytes(msg: &Self::Msg) -> usize;
    /// Bytes the core keeps in memory.
    fn retained_bytes(&self) -> u64;
    /// Status as `(name, value)` pairs, for `kv admin status` and `/metrics`.
    fn status(&self) -> Vec<(&'static str, String)>;
    /// Whether the core serves (false while it rebuilds or checks its disk).
    fn is_ready(&self) -> bool;
    /// The node this core believes leads, if any.
    fn leader(&self) -> Option<NodeId> {
        None
    }
}

/// One step's writes, in order, and the ticket that reports them durable.
#[derive(Debug)]
pub struct Writes {
    /// Records and snapshots, in order.
    pub persist: Vec<Persist>,
    /// `Some` if the writes must be synced before the step's sends and events leave.
    pub ticket: Option<u64>,
}

/// Sends and events the pipeline lets go, in order.
#[derive(Debug)]
pub struct Released<M, E> {
    /// Messages to hand to the network.
    pub send: Vec<(NodeId, M)>,
    /// Events to deliver upward.
    pub events: Vec<E>,
}

struct Queued<M, E> {
    /// Leaves once every ticket up to this one is durable.
    ticket: u64,
    send: Vec<(NodeId, M)>,
    events: Vec<E>,
}

/// Orders a core's effects across steps. See the module docs.
pub struct Pipeline<M, E> {
    issued: u64,
    durable: u64,
    /// Tickets reported durable above `durable` (waiting for the gap to close).
    completed: BTreeSet<u64>,
    outbox: VecDeque<Queued<M, E>>,
}

impl<M, E> Default for Pipeline<M, E> {
    fn default() -> Self {
        Pipeline {
            issued: 0,
            durable: 0,
            completed: BTreeSet::new(),
            outbox: VecDeque::new(),
        }
    }
}

impl<M, E> Pipeline<M, E> {
    /// An empty pipeline.
    pub fn new() -> Pipeline<M, E> {
        Pipeline::default()
    }

    /// Takes one step's effects (leaving `out` empty): queues its sends and events and
    /// returns its writes, if any.
    pub fn step(&mut self, out: &mut Effects<M, E>) -> Option<Writes> {
        self.queue(
            std::mem::take(&mut out.send_early),
            std::mem::take(&mut out.events_early),
        );
        let writes = if out.persist.is_empty() {
            None
        } else {
            let persist = std::mem::take(&mut out.persist);
            let must_sync = persist.iter().any(Persist::gates_sends);
            let ticket = must_sync.then(|| {
                self.issued += 1;
                self.issued
            });
            Some(Writes { persist, ticket })
        };
        self.queue(
            std::mem::take(&mut out.send),
            std::mem::take(&mut out.events),
        );
        writes
    }

    fn queue(&mut self, send: Vec<(NodeId, M)>, events: Vec<E>) {
        if !send.is_empty() || !events.is_empty() {
            self.outbox.push_back(Queued {
                ticket: self.issued,
                send,
                events,
            });
        }
    }

    /// Reports `ticket` durable (tickets may be reported in any order).
    pub fn durable(&mut self, ticket: u64) {
        if ticket > self.durable {
            self.completed.insert(ticket);
        }
        while self.completed.remove(&(self.durable + 1)) {
            self.durable += 1;
        }
    }

    /// Reports every ticket up to `ticket` durable (one sync covered them all).
    pub fn durable_through(&mut self, ticket: u64) {
        if ticket > self.durable {
            self.durable = ticket;
            self.completed = self.completed.split_off(&(ticket + 1));
            while self.completed.remove(&(self.durable + 1)) {
                self.durable += 1;
            }
        }
    }

    /// Everything that may leave now, in step order (nothing if the oldest queued item
    /// still waits).
    pub fn release(&mut self) -> Released<M, E> {
        let mut released = Released {
            send: Vec::new(),
            events: Vec::new(),
        };
        while self
            .outbox
            .front()
            .is_some_and(|q| q.ticket <= self.durable)
        {
            let queued = self.outbox.pop_front().expect("front exists");
            if released.send.is_empty() {
                released.send = queued.send;
            } else {
                released.send.extend(queued.send);
            }
            if released.events.is_empty() {
                released.events = queued.events;
            } else {
                released.events.extend(queued.events);
            }
        }
        released
    }

    /// The last ticket issued.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// True once every ticket up to `ticket` is durable.
    pub fn is_durable(&self, ticket: u64) -> bool {
        ticket <= self.durable
    }

    /// Sends and events waiting for the disk.
    pub fn queued(&self) -> usize {
        self.outbox
            .iter()
            .map(|q| q.send.len() + q.events.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sync: bool) -> Persist {
        Persist::Record {
            kind: 1,
            payload: vec![1],
            sync,
        }
    }

    #[test]
    fn sends_wait_for_their_step_and_early_ones_only_for_earlier_steps() {
        let mut p: Pipeline<u32, &str> = Pipeline::new();
        let mut out = Effects::new();
        out.persist.push(record(true));
        out.send.push((NodeId(1), 1));
        let first = p.step(&mut out).unwrap();
        assert_eq!(first.ticket, Some(1));
        // The second step's early send waits for step 1, its ordinary send for step 2.
        out.send_early.push((NodeId(1), 2));
        out.persist.push(record(true));
        out.send.push((NodeId(1), 3));
        out.events.push("reply");
        let second = p.step(&mut out).unwrap();
        assert_eq!(second.ticket, Some(2));
        assert!(p.release().send.is_empty());
        p.durable(2);
        assert!(p.release().send.is_empty(), "ticket 1 is not durable yet");
        p.durable(1);
        let released = p.release();
        assert_eq!(
            released.send,
            vec![(NodeId(1), 1), (NodeId(1), 2), (NodeId(1), 3)]
        );
        assert_eq!(released.events, vec!["reply"]);
    }

    #[test]
    fn an_early_send_leaves_before_its_own_steps_write_is_durable() {
        let mut p: Pipeline<u32, ()> = Pipeline::new();
        let mut out = Effects::new();
        out.send_early.push((NodeId(2), 7));
        out.persist.push(record(true));
        out.send.push((NodeId(2), 8));
        p.step(&mut out);
        assert_eq!(p.release().send, vec![(NodeId(2), 7)]);
        p.durable_through(1);
        assert_eq!(p.release().send, vec![(NodeId(2), 8)]);
    }

    #[test]
    fn lazy_records_get_no_ticket_and_hold_nothing_back() {
        let mut p: Pipeline<u32, ()> = Pipeline::new();
        let mut out = Effects::new();
        out.persist.push(record(false));
        out.send.push((NodeId(1), 1));
        let writes = p.step(&mut out).unwrap();
        assert_eq!(writes.ticket, None);
        assert_eq!(p.release().send, vec![(NodeId(1), 1)]);
        assert_eq!(p.issued(), 0);
    }
}
