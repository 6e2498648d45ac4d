//! A node whose clients are other nodes: client calls arrive and are answered as messages.
//!
//! In a world of many groups, a group's clients include the other groups' replicas (a shard
//! group asks the shard master for configurations). [`Served`] wraps any [`Node`] so that a
//! [`Call::Request`] from node `from` becomes a client request of the inner node, and the
//! inner node's answer goes back to `from` as a [`Call::Answer`] (or [`Call::Dropped`],
//! when the inner node gives up, so the caller retries at once). Everything else passes
//! through unchanged. The caller's tag comes back with the answer; callers match answers
//! to calls with it and ignore the ones they no longer wait for.
//!
//! Which requests are outstanding is volatile: a restart forgets them (their callers time
//! out and retry), as a process restart drops its client connections.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::effects::Effects;
use crate::node::{Answer, Node};
use crate::types::{NodeId, Time};

/// A client call between nodes, or its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Call<Q, R> {
    /// A request, tagged by the caller.
    Request {
        /// The caller's tag.
        tag: u64,
        /// The request.
        request: Q,
    },
    /// The answer to the request the caller tagged `tag`.
    Answer {
        /// The caller's tag.
        tag: u64,
        /// The answer.
        reply: R,
    },
    /// The node gave up on the request tagged `tag`: retry, here or elsewhere.
    Dropped {
        /// The caller's tag.
        tag: u64,
    },
}

impl<Q, R> Call<Q, R> {
    /// True for answers (what the simulator treats as responses).
    pub fn is_response(&self) -> bool {
        !matches!(self, Call::Request { .. })
    }
}

/// What a served node sends and receives: its own messages, or calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServedMsg<M, Q, R> {
    /// The inner node's own message.
    Peer(M),
    /// A client call or its answer.
    Call(Call<Q, R>),
}

/// A node that also takes client calls as messages. See the module docs.
pub struct Served<N: Node> {
    inner: N,
    /// Our tag → (caller, caller's tag).
    calls: BTreeMap<u64, (NodeId, u64)>,
    next_tag: u64,
}

/// The messages of a served node.
pub type ServedMsgOf<N> = ServedMsg<<N as Node>::Msg, <N as Node>::Request, <N as Node>::Reply>;
/// The effects of a served node.
pub type ServedEffects<N> = Effects<ServedMsgOf<N>, <N as Node>::Event>;

impl<N: Node> Served<N> {
    /// Serves `inner`.
    pub fn new(inner: N) -> Served<N> {
        Served {
            inner,
            calls: BTreeMap::new(),
            // Tags of local clients (the driver's) stay below this; ours above.
            next_tag: 1 << 62,
        }
    }

    /// The inner node.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// Calls still waiting for the inner node's answer.
    pub fn pending_calls(&self) -> usize {
        self.calls.len()
    }

    fn run(
        &mut self,
        out: &mut ServedEffects<N>,
        f: impl FnOnce(&mut N, &mut Effects<N::Msg, N::Event>),
    ) {
        let mut inner = Effects::new();
        f(&mut self.inner, &mut inner);
        self.wrap(inner, out);
    }

    /// Moves the inner node's effects into `out`, turning answers to calls into messages.
    fn wrap(&mut self, inner: Effects<N::Msg, N::Event>, out: &mut ServedEffects<N>) {
        let Effects {
            persist,
            send,
            send_early,
            events,
            events_early,
        } = inner;
        out.persist.extend(persist);
        out.send
            .extend(send.into_iter().map(|(to, m)| (to, ServedMsg::Peer(m))));
        out.send_early.extend(
            send_early
                .into_iter()
                .map(|(to, m)| (to, ServedMsg::Peer(m))),
        );
        for event in events {
            match self.answer_call(&event) {
                Some(answer) => out.send.push(answer),
                None => out.events.push(event),
            }
        }
        for event in events_early {
            match self.answer_call(&event) {
                Some(answer) => out.send_early.push(answer),
                None => out.events_early.push(event),
            }
        }
    }

    /// The message answering a call, if `event` answers one of ours.
    fn answer_call(&mut self, event: &N::Event) -> Option<(NodeId, ServedMsgOf<N>)> {
        let answer = N::answer(event)?;
        let (caller, call) = match answer {
            Answer::Reply { tag, reply } => {
                let (to, their) = self.calls.remove(&tag)?;
                (to, Call::Answer { tag: their, reply })
            }
            Answer::Dropped { tag } => {
                let (to, their) = self.calls.remove(&tag)?;
                (to, Call::Dropped { tag: their })
            }
            Answer::Halted { .. } => return None,
        };
        Some((caller, ServedMsg::Call(call)))
    }
}

impl<N: Node> Node for Served<N>
where
    N::Request: Clone + std::fmt::Debug,
    N::Reply: Clone + std::fmt::Debug,
{
    type Msg = ServedMsg<N::Msg, N::Request, N::Reply>;
    type Request = N::Request;
    type Reply = N::Reply;
    type Event = N::Event;

    fn on_boot(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        self.run(out, |n, o| n.on_boot(now, o));
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Effects<Self::Msg, Self::Event>,
    ) {
        match msg {
            ServedMsg::Peer(m) => self.run(out, |n, o| n.on_message(now, from, m, o)),
            ServedMsg::Call(Call::Request { tag, request }) => {
                let ours = self.next_tag;
                self.next_tag += 1;
                self.calls.insert(ours, (from, tag));
                self.run(out, |n, o| n.on_request(now, ours, request, o));
            }
            // Answers come to callers, and a served node calls no one.
            ServedMsg::Call(_) => {}
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Self::Request,
        out: &mut Effects<Self::Msg, Self::Event>,
    ) {
        self.run(out, |n, o| n.on_request(now, tag, request, o));
    }

    fn on_tick(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        self.run(out, |n, o| n.on_tick(now, o));
    }

    fn hold(&mut self) {
        self.inner.hold();
    }

    fn release(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        self.run(out, |n, o| n.release(now, o));
    }

    fn answer(event: &Self::Event) -> Option<Answer<Self::Reply>> {
        N::answer(event)
    }

    fn is_response(msg: &Self::Msg) -> bool {
        match msg {
            ServedMsg::Peer(m) => N::is_response(m),
            ServedMsg::Call(call) => call.is_response(),
        }
    }

    fn summarize(msg: &Self::Msg) -> String {
        match msg {
            ServedMsg::Peer(m) => N::summarize(m),
            ServedMsg::Call(Call::Request { tag, .. }) => format!("call#{tag}"),
            ServedMsg::Call(Call::Answer { tag, .. }) => format!("answer#{tag}"),
            ServedMsg::Call(Call::Dropped { tag }) => format!("dropped#{tag}"),
        }
    }

    fn wire_bytes(msg: &Self::Msg) -> usize {
        match msg {
            ServedMsg::Peer(m) => N::wire_bytes(m),
            // Calls to a served node are small (shard-master queries and their answers).
            ServedMsg::Call(_) => 256,
        }
    }

    fn retained_bytes(&self) -> u64 {
        self.inner.retained_bytes()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.inner.status()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn leader(&self) -> Option<NodeId> {
        self.inner.leader()
    }
}
