//! A replica as a [`Node`]: the binding every driver (the server, the simulator) runs.

use super::machine::{Request, StateMachine};
use super::message::Message;
use super::{Event, Replica};
use crate::effects::Effects;
use crate::node::{Answer, Node};
use crate::types::{NodeId, Time};

impl<R> Event<R> {
    /// What the event means for a client request, by value.
    pub fn into_answer(self) -> Answer<R> {
        match self {
            Event::Reply { tag, reply } => Answer::Reply { tag, reply },
            Event::Dropped { tag } => Answer::Dropped { tag },
            Event::Halted { reason } => Answer::Halted { reason },
        }
    }
}

impl<R: Clone> Event<R> {
    /// What the event means for a client request (every event of a replica means one).
    pub fn answer(&self) -> Answer<R> {
        match self {
            Event::Reply { tag, reply } => Answer::Reply {
                tag: *tag,
                reply: reply.clone(),
            },
            Event::Dropped { tag } => Answer::Dropped { tag: *tag },
            Event::Halted { reason } => Answer::Halted {
                reason: reason.clone(),
            },
        }
    }
}

impl<M: StateMachine> Node for Replica<M> {
    type Msg = Message<M::Command>;
    type Request = Request<M::Command>;
    type Reply = M::Reply;
    type Event = Event<M::Reply>;

    fn on_boot(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        Replica::on_boot(self, now, out)
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Effects<Self::Msg, Self::Event>,
    ) {
        Replica::on_message(self, now, from, msg, out)
    }

    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Self::Request,
        out: &mut Effects<Self::Msg, Self::Event>,
    ) {
        Replica::on_request(self, now, tag, request, out)
    }

    fn on_tick(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        Replica::on_tick(self, now, out)
    }

    fn hold(&mut self) {
        Replica::hold(self)
    }

    fn release(&mut self, now: Time, out: &mut Effects<Self::Msg, Self::Event>) {
        Replica::release(self, now, out)
    }

    fn answer(event: &Self::Event) -> Option<Answer<M::Reply>> {
        Some(event.answer())
    }

    fn is_response(msg: &Self::Msg) -> bool {
        msg.is_response()
    }

    fn summarize(msg: &Self::Msg) -> String {
        msg.summary()
    }

    fn wire_bytes(msg: &Self::Msg) -> usize {
        msg.wire_bytes(M::command_bytes)
    }

    fn retained_bytes(&self) -> u64 {
        Replica::retained_bytes(self)
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        Replica::status(self).fields()
    }

    fn is_ready(&self) -> bool {
        Replica::is_ready(self)
    }

    fn leader(&self) -> Option<NodeId> {
        Replica::leader(self)
    }
}
