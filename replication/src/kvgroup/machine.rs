//! [`KvState`] as a replicated state machine: commands are [`Batch`]es of ops, replies
//! the engine's [`Reply`] ([`Reply::Batch`]: one per op). A read-only batch executes in log
//! order like every command (so a replica that does not hold a key's shard answers "not
//! held") but is not recorded for at-most-once. A "not held" reply is a refusal: not
//! recorded, so the client may send the same seq to the shard's owner.

use kv_engine::kv::{KvCursor, KvImageBuilder, KvState, Reply};

use super::batch::Batch;

use crate::replica::{Context, ImageBuilder, StateMachine};

/// Rebuilds a [`KvState`] from image pieces.
pub struct KvBuilder(KvImageBuilder);

impl ImageBuilder<KvState> for KvBuilder {
    fn add(&mut self, piece: &[u8]) -> Result<(), String> {
        self.0.add(piece).map_err(|e| e.to_string())
    }

    fn finish(self) -> Result<KvState, String> {
        self.0.finish().map_err(|e| e.to_string())
    }
}

impl StateMachine for KvState {
    type Command = Batch;
    type Reply = Reply;
    type Cursor = KvCursor;
    type Builder = KvBuilder;

    fn apply(&mut self, command: &Batch, _context: &mut Context<'_, Reply>) -> Reply {
        command.execute(self)
    }

    fn is_read(command: &Batch) -> bool {
        command.is_read()
    }

    fn read(&self, command: &Batch) -> Reply {
        command.read(self)
    }

    fn is_refusal(reply: &Reply) -> bool {
        matches!(reply, Reply::NotHeld(_))
    }

    fn stale(last_seq: u64) -> Reply {
        Reply::Stale { last_seq }
    }

    fn command_bytes(command: &Batch) -> usize {
        command.payload_bytes()
    }

    fn encode_piece(
        &self,
        from: Option<&KvCursor>,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Option<KvCursor> {
        KvState::encode_piece(self, from, budget, out)
    }

    fn builder() -> KvBuilder {
        KvBuilder(KvImageBuilder::new())
    }

    fn live_bytes(&self) -> u64 {
        KvState::live_bytes(self)
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        vec![("keys", self.len().to_string())]
    }
}
