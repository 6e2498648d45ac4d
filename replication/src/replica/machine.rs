//! The contract between the replication library and the state machine it replicates.
//!
//! A [`StateMachine`] owns its command and reply types and its state. The library decides
//! the order of commands (Paxos), deduplicates client writes (the at-most-once
//! [`Sessions`] table, part of the replicated state), and calls [`StateMachine::apply`]
//! exactly once per decided command, in log order, on every replica. `apply` must be a
//! pure function of the state and the command: no clock, no randomness, no IO, ordered
//! iteration only — replicas that apply the same log must end in the same state.
//!
//! A machine's state is written and read as an *image*: a sequence of pieces of bounded
//! size ([`StateMachine::encode_piece`], [`ImageBuilder`]). Snapshots stream pieces to a
//! file and state transfer streams them to a peer, each from a frozen copy of the state
//! (`Clone` must be cheap: persistent maps, or small states), so neither ever holds the
//! whole encoded state or stops the replica while it is written.

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::sessions::Sessions;
use crate::paxos::Seq;
use crate::types::ClientId;

/// A client's request: the unit of at-most-once execution. Requests of
/// [`Request::INTERNAL`] are the replicas' own (see [`super::Replica::propose`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<C> {
    /// Who sent it.
    pub client: ClientId,
    /// The client's sequence number; strictly increasing per client, one request
    /// outstanding at a time.
    pub seq: u64,
    /// What to do.
    pub command: C,
}

impl<C> Request<C> {
    /// The client id of commands the replicas propose themselves (reconfigurations, shard
    /// installs): never deduplicated — such commands are idempotent by construction — and
    /// never answered to a client. Client ids are drawn at random and skip it.
    pub const INTERNAL: ClientId = ClientId(0);

    /// A command of the replicas' own.
    pub fn internal(command: C) -> Request<C> {
        Request {
            client: Self::INTERNAL,
            seq: 0,
            command,
        }
    }

    /// True for a command of the replicas' own.
    pub fn is_internal(&self) -> bool {
        self.client == Self::INTERNAL
    }
}

/// What [`StateMachine::apply`] may see besides the command.
pub struct Context<'a, R: Clone> {
    /// The log position of the instance being applied (ages of at-most-once entries).
    pub at: Seq,
    /// The at-most-once table, for machines that move clients' entries between groups
    /// (a shard's new owner merges the entries that travel with it).
    pub sessions: &'a mut Sessions<R>,
}

/// Rebuilds a machine from the pieces of its image, in order.
pub trait ImageBuilder<M>: Send {
    /// Adds the next piece; an error names what is wrong with it.
    fn add(&mut self, piece: &[u8]) -> Result<(), String>;
    /// The machine, once every piece was added.
    fn finish(self) -> Result<M, String>;
}

/// A deterministic state machine the library can replicate. See the module docs.
///
/// The state of a group that has applied nothing is a value the caller hands to
/// [`super::Replica::recover`] (a machine may be parameterised: a shard group knows its
/// group id and key mapping before it applies anything).
pub trait StateMachine: Clone + Send + Sync + 'static {
    /// What clients ask for.
    type Command: Clone
        + fmt::Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// What they get back.
    type Reply: Clone
        + fmt::Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// Where the next image piece starts.
    type Cursor: Clone + Send + Sync + 'static;
    /// Rebuilds the machine from image pieces.
    type Builder: ImageBuilder<Self>;

    /// Executes one decided command. Client writes reach it at most once per
    /// `(client, seq)`; reads may be executed again (they are not recorded).
    fn apply(
        &mut self,
        command: &Self::Command,
        context: &mut Context<'_, Self::Reply>,
    ) -> Self::Reply;

    /// True for commands that change nothing: they are never recorded in the at-most-once
    /// table (answering one twice is harmless), and are answered by [`StateMachine::read`]
    /// from the applied state at a read index rather than through the log (see the
    /// replica's `reads`); one that does go through the log is executed in log order like
    /// every command.
    fn is_read(command: &Self::Command) -> bool;

    /// Answers a read (a command [`StateMachine::is_read`] accepts) from the state as it
    /// is, changing nothing: exactly what [`StateMachine::apply`] would answer for it here,
    /// refusals included (a shard not served here is refused, whatever copy of it the
    /// state still holds).
    fn read(&self, command: &Self::Command) -> Self::Reply;

    /// True for a reply that refuses the command without executing it (for example "this
    /// shard is not held here"): it is not recorded, so the client may send the same seq
    /// elsewhere.
    fn is_refusal(_reply: &Self::Reply) -> bool {
        false
    }

    /// The reply to a request older than the client's last executed one, whose reply is
    /// no longer kept.
    fn stale(last_seq: u64) -> Self::Reply;

    /// Bytes a command carries (for batch sizes and memory accounting).
    fn command_bytes(command: &Self::Command) -> usize;

    /// Appends to `out` the image piece that starts at `from` (`None`: the first), of
    /// about `budget` bytes (a single larger item still goes whole); returns where the next
    /// piece starts, or `None` after the last. Equal states must give equal pieces.
    fn encode_piece(
        &self,
        from: Option<&Self::Cursor>,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Option<Self::Cursor>;

    /// A builder for an image of this machine.
    fn builder() -> Self::Builder;

    /// Bytes of live data the machine holds (status and memory accounting).
    fn live_bytes(&self) -> u64;

    /// Machine-specific status fields (e.g. the number of keys).
    fn status(&self) -> Vec<(&'static str, String)>;
}
