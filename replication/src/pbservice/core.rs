//! Either core of the mode behind one type: the view service and the primary/backup server
//! share their message, request, reply and event types, so a driver that runs "the node
//! the cluster file names" — the server's — holds an [`AnyCore`], and the simulator's world
//! holds its nodes through the same object-safe [`Core`].

use super::message::{Message, PbEvent, Reply, Request};
use super::server::PbServer;
use super::viewservice::ViewService;
use crate::effects::Effects;
use crate::node::Node;
use crate::types::{NodeId, Time};

type PbEffects = Effects<Message, PbEvent>;

/// The calls of [`Node`] on a primary/backup core that take `self`, as a trait object
/// ([`Node`] itself is not object-safe). Every [`Node`] of the mode's types is one.
pub trait Core {
    /// [`Node::on_boot`].
    fn on_boot(&mut self, now: Time, out: &mut PbEffects);
    /// [`Node::on_message`].
    fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PbEffects);
    /// [`Node::on_request`].
    fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut PbEffects);
    /// [`Node::on_tick`].
    fn on_tick(&mut self, now: Time, out: &mut PbEffects);
    /// [`Node::hold`].
    fn hold(&mut self);
    /// [`Node::release`].
    fn release(&mut self, now: Time, out: &mut PbEffects);
    /// [`Node::retained_bytes`].
    fn retained_bytes(&self) -> u64;
    /// [`Node::status`].
    fn status(&self) -> Vec<(&'static str, String)>;
    /// [`Node::is_ready`].
    fn is_ready(&self) -> bool;
    /// [`Node::leader`].
    fn leader(&self) -> Option<NodeId>;
}

impl<N> Core for N
where
    N: Node<Msg = Message, Request = Request, Reply = Reply, Event = PbEvent>,
{
    fn on_boot(&mut self, now: Time, out: &mut PbEffects) {
        Node::on_boot(self, now, out)
    }
    fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PbEffects) {
        Node::on_message(self, now, from, msg, out)
    }
    fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut PbEffects) {
        Node::on_request(self, now, tag, request, out)
    }
    fn on_tick(&mut self, now: Time, out: &mut PbEffects) {
        Node::on_tick(self, now, out)
    }
    fn hold(&mut self) {
        Node::hold(self)
    }
    fn release(&mut self, now: Time, out: &mut PbEffects) {
        Node::release(self, now, out)
    }
    fn retained_bytes(&self) -> u64 {
        Node::retained_bytes(self)
    }
    fn status(&self) -> Vec<(&'static str, String)> {
        Node::status(self)
    }
    fn is_ready(&self) -> bool {
        Node::is_ready(self)
    }
    fn leader(&self) -> Option<NodeId> {
        Node::leader(self)
    }
}

/// The view service or a primary/backup server, as one [`Node`].
pub struct AnyCore(Box<dyn Core + Send>);

impl AnyCore {
    /// The view service.
    pub fn view_service(core: ViewService) -> AnyCore {
        AnyCore(Box::new(core))
    }

    /// A server.
    pub fn server(core: PbServer) -> AnyCore {
        AnyCore(Box::new(core))
    }
}

impl Node for AnyCore {
    type Msg = Message;
    type Request = Request;
    type Reply = Reply;
    type Event = PbEvent;

    fn on_boot(&mut self, now: Time, out: &mut PbEffects) {
        self.0.on_boot(now, out)
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PbEffects) {
        self.0.on_message(now, from, msg, out)
    }

    fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut PbEffects) {
        self.0.on_request(now, tag, request, out)
    }

    fn on_tick(&mut self, now: Time, out: &mut PbEffects) {
        self.0.on_tick(now, out)
    }

    fn hold(&mut self) {
        self.0.hold()
    }

    fn release(&mut self, now: Time, out: &mut PbEffects) {
        self.0.release(now, out)
    }

    crate::pbservice::message::message_fns!();

    fn retained_bytes(&self) -> u64 {
        self.0.retained_bytes()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.0.status()
    }

    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }

    fn leader(&self) -> Option<NodeId> {
        self.0.leader()
    }
}
