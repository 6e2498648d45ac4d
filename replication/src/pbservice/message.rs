//! Views, and what the view service, the servers and their clients say to each other.

use std::fmt;

use bytes::Bytes;
use kv_engine::kv::Reply as KvReply;
use serde::{Deserialize, Serialize};

use crate::kvgroup::Batch;
use crate::node::Answer;
use crate::paxos::Seq;
use crate::replica::{Event, Request as KvRequest};
use crate::types::NodeId;

/// One life of a server: its node and the boot id it drew when it started. A restarted
/// server is a new member (it lost its state), so nothing addressed to its former life —
/// a view naming it, a forward, a late reply — ever counts for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The server.
    pub node: NodeId,
    /// The boot id of this life.
    pub boot: u64,
}

/// Which server is primary and which is backup. View 0 is the initial empty view; views
/// are numbered by the view service, one more for each new view.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct View {
    /// The view's number.
    pub viewnum: u64,
    /// The primary (only view 0 has none).
    pub primary: Option<Member>,
    /// The backup, if any.
    pub backup: Option<Member>,
}

impl View {
    /// The primary's node.
    pub fn primary_node(&self) -> Option<NodeId> {
        self.primary.map(|m| m.node)
    }

    /// The backup's node.
    pub fn backup_node(&self) -> Option<NodeId> {
        self.backup.map(|m| m.node)
    }

    /// True if `member` is the primary.
    pub fn is_primary(&self, member: Member) -> bool {
        self.primary == Some(member)
    }

    /// `viewnum`, `primary` and `backup` (node ids, `-` for nobody) as status fields.
    pub fn status_fields(&self) -> [(&'static str, String); 3] {
        let name = |node: Option<NodeId>| node.map_or("-".to_string(), |n| n.0.to_string());
        [
            ("viewnum", self.viewnum.to_string()),
            ("primary", name(self.primary_node())),
            ("backup", name(self.backup_node())),
        ]
    }

    /// True if `member` is the backup.
    pub fn is_backup(&self, member: Member) -> bool {
        self.backup == Some(member)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |m: Option<Member>| m.map_or("-".to_string(), |m| m.node.to_string());
        write!(
            f,
            "view {} {{{}, {}}}",
            self.viewnum,
            name(self.primary),
            name(self.backup)
        )
    }
}

/// Messages between servers and the view service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A server to the view service: it is alive, and has seen view `viewnum` (0: none
    /// yet); a primary sending its view's number acknowledges that view.
    Ping {
        /// The view the server acknowledges.
        viewnum: u64,
        /// The boot id of the server's life.
        boot: u64,
    },
    /// The view service's answer to a ping: its current view.
    View {
        /// The view.
        view: View,
    },
    /// The primary of `view` to its backup: apply these requests at positions `first`,
    /// `first + 1`, ... (none: a probe for the backup's position).
    Forward {
        /// The sender's view.
        view: View,
        /// The position of the first request.
        first: Seq,
        /// The requests, in order.
        requests: Vec<KvRequest<Batch>>,
    },
    /// The backup of view `viewnum` to its primary: it has applied everything below
    /// `next`.
    Applied {
        /// The view.
        viewnum: u64,
        /// The first position not applied.
        next: Seq,
    },
    /// The receiver is not what the sender's view made it (it knows a newer view, or the
    /// sender is not its primary): here is its view.
    Refused {
        /// The refuser's view.
        view: View,
    },
    /// A new backup to its primary: chunk `chunk` of state transfer `transfer`.
    ImageRequest {
        /// The backup's view.
        view: View,
        /// The transfer id the backup picked.
        transfer: u64,
        /// The chunk wanted.
        chunk: u64,
    },
    /// A chunk of the primary's state.
    ImageChunk {
        /// The transfer.
        transfer: u64,
        /// The chunk's number.
        chunk: u64,
        /// Whole image frames.
        frames: Bytes,
        /// True for the last chunk.
        last: bool,
    },
    /// The primary is not serving that transfer: start over.
    ImageGone {
        /// The transfer.
        transfer: u64,
    },
}

/// Bytes of a message besides its payload.
const MESSAGE_OVERHEAD: usize = 64;
/// Bytes of a forwarded request besides its ops' payload.
const REQUEST_OVERHEAD: usize = 32;

impl Message {
    /// True for replies (what the simulator delivers to deaf nodes).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Message::View { .. }
                | Message::Applied { .. }
                | Message::Refused { .. }
                | Message::ImageChunk { .. }
                | Message::ImageGone { .. }
        )
    }

    /// The message's size on the wire (an estimate).
    pub fn wire_bytes(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                Message::Forward { requests, .. } => requests
                    .iter()
                    .map(|r| r.command.payload_bytes() + REQUEST_OVERHEAD)
                    .sum(),
                Message::ImageChunk { frames, .. } => frames.len(),
                _ => 0,
            }
    }

    /// A one-line description for traces.
    pub fn summary(&self) -> String {
        match self {
            Message::Ping { viewnum, boot } => format!("ping {viewnum} boot {boot:x}"),
            Message::View { view } => format!("{view}"),
            Message::Forward {
                view,
                first,
                requests,
            } => format!("forward v{} {first}+{}", view.viewnum, requests.len()),
            Message::Applied { viewnum, next } => format!("applied v{viewnum} <{next}"),
            Message::Refused { view } => format!("refused, {view}"),
            Message::ImageRequest {
                view,
                transfer,
                chunk,
            } => format!("image? v{} {transfer:x}#{chunk}", view.viewnum),
            Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            } => format!(
                "image {transfer:x}#{chunk} {}B{}",
                frames.len(),
                if *last { " last" } else { "" }
            ),
            Message::ImageGone { transfer } => format!("image-gone {transfer:x}"),
        }
    }
}

/// A client's request to a server or the view service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The current view (the lab's `Get` of the view service; a server answers its own).
    View,
    /// A kv request, served by the primary only.
    Kv(KvRequest<Batch>),
}

/// A client's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// A view.
    View(View),
    /// A kv request's answer.
    Kv(KvReply),
}

/// Upward notifications of both cores: answers to client requests.
pub type PbEvent = Event<Reply>;

/// What an event means for a client request.
pub(crate) fn answer(event: &PbEvent) -> Option<Answer<Reply>> {
    Some(event.answer())
}

/// The [`crate::node::Node`] functions that depend only on the mode's types, the same for
/// every node of the mode (the view service, the server, either of them, the simulator's
/// world node): expands inside such an `impl Node`.
macro_rules! message_fns {
    () => {
        fn answer(
            event: &$crate::pbservice::PbEvent,
        ) -> Option<$crate::node::Answer<$crate::pbservice::Reply>> {
            $crate::pbservice::message::answer(event)
        }

        fn is_response(msg: &$crate::pbservice::Message) -> bool {
            msg.is_response()
        }

        fn summarize(msg: &$crate::pbservice::Message) -> String {
            msg.summary()
        }

        fn wire_bytes(msg: &$crate::pbservice::Message) -> usize {
            msg.wire_bytes()
        }
    };
}
pub(crate) use message_fns;
