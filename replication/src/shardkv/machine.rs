//! The sharded group's state machine: [`ShardKv`].
//!
//! Besides the key-value data of the shards it holds ([`KvState`]), a group's replicated
//! state says where it is in the sequence of configurations and where every shard's data
//! is, so that every replica — and every group, since all of them apply the same
//! configurations in the same order — computes the same moves:
//!
//! - `config`: the configuration in force at this point of the log. Reconfigurations are
//!   commands ([`Command::Reconfigure`]), applied one at a time, in order: configuration
//!   `n + 1` only after `n`, and only once every shard `n` gave this group has arrived.
//! - `holders`: per shard, the group that holds its data — the last group any
//!   configuration assigned it to. A configuration that assigns a shard to no group
//!   ([`GroupId::NONE`], all groups gone) moves nothing: the holder keeps the data without
//!   serving it, and hands it on when a group is assigned again. So no data is lost when
//!   the last group leaves.
//! - `pulling`: the shards this configuration gave the group whose data is still arriving,
//!   each with the group it comes from and how far it has come ([`Position`]).
//! - `leaving`: frozen copies of the shards that left, keyed by the configuration that
//!   moved them, kept until the new owner holds them ([`Command::Release`]); with each
//!   configuration's frozen at-most-once table (`handoffs`), which travels with them.
//!
//! # Invariants
//! - A group serves a key (executes an [`Op`] on it) only if its shard's owner in `config`
//!   is this group and its data has fully arrived; otherwise it answers
//!   [`Reply::NotHeld`], a refusal the library does not record (the clerk asks the
//!   shard master and retries the same request elsewhere). Since a shard's old owner
//!   freezes it when it applies the configuration that moves it, and the new owner serves
//!   only once all of the frozen copy arrived, at most one group serves a shard under any
//!   configuration, and every write it acknowledged travels with the shard.
//! - `kv` holds a shard exactly when `holders` names this group for it (serving, waiting
//!   for an owner, or arriving).
//! - Arriving data is installed in pieces ([`Command::Install`]), each applied only at the
//!   position the shard has reached, so a piece proposed twice, or by two replicas, or
//!   late, is installed once. The last piece carries the sender's at-most-once entries,
//!   which are **merged** with this group's ([`crate::replica::Sessions::merge`]).
//! - Every command is idempotent and checked against the state before it changes
//!   anything, so the replicas' own proposals may be repeated freely.
//!
//! # Failure model
//! `apply` never panics on any command: a reconfiguration out of order, a piece at the
//! wrong position or with a misplaced key, or a release of something not held changes
//! nothing. Images are validated piece by piece ([`ShardKvBuilder`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;
use kv_engine::kv::{KvCursor, KvImageBuilder, KvState, Op, Reply, ShardId, Sharding};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::replica::{Context, ImageBuilder, Session, Sessions, StateMachine};
use crate::shardmaster::{Config, ConfigNum, GroupId};
use crate::types::ClientId;

/// The image format written today.
const IMAGE_VERSION: u16 = 1;
/// Encoding allowance per item when sizing pieces and chunks.
const ITEM_OVERHEAD: usize = 16;
/// Bytes a command carries besides its payload.
const COMMAND_OVERHEAD: usize = 32;
/// Most at-most-once entries in one image piece or chunk.
const SESSIONS_PER_PAGE: usize = 1024;

/// How far a moving shard's data has come: its entries in key order, then the sender's
/// at-most-once entries in client order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Position {
    /// Entries with keys after this one (from the first if `None`).
    Entries(Option<Bytes>),
    /// At-most-once entries of clients after this one (from the first if `None`).
    Sessions(Option<ClientId>),
}

impl Position {
    /// The start of a shard.
    pub const START: Position = Position::Entries(None);
}

/// One piece of a moving shard, as the sender cut it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Where it starts.
    pub at: Position,
    /// Entries, in ascending key order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// At-most-once entries, in ascending client order.
    pub sessions: Vec<(ClientId, u64, Reply)>,
    /// Where the next piece starts; `None` after the last.
    pub next: Option<Position>,
}

impl Chunk {
    /// Bytes of payload it carries.
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + ITEM_OVERHEAD)
            .sum::<usize>()
            + self.sessions.len() * (ITEM_OVERHEAD + 16)
    }
}

/// What a group answers when asked for a piece of a shard it gave away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAnswer {
    /// The piece.
    Chunk(Chunk),
    /// This replica has not applied the configuration that moves the shard yet: ask again
    /// (or another replica).
    NotYet,
    /// This replica applied that configuration and holds no such copy: the receiver holds
    /// it already (the copy was released), or never asked for it.
    Gone,
}

/// What a shard group's log holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client's operation.
    Op(Op),
    /// Move to this configuration (the replicas' own; applied only if it is the next one
    /// and every shard of the current one has arrived).
    Reconfigure(Arc<Config>),
    /// A piece of a shard arriving under configuration `config` (the replicas' own).
    Install {
        /// The configuration that moved the shard here.
        config: ConfigNum,
        /// The shard.
        shard: ShardId,
        /// The piece.
        chunk: Chunk,
    },
    /// The new owner holds the shard this group gave away under `config`: drop the copy
    /// (the replicas' own).
    Release {
        /// The configuration that moved it.
        config: ConfigNum,
        /// The shard.
        shard: ShardId,
    },
}

/// A shard arriving: from whom, and how far it has come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// The group that holds it.
    pub from: GroupId,
    /// Its servers.
    pub servers: Vec<String>,
    /// Where the next piece starts.
    pub next: Position,
}

/// A frozen copy of a shard that left, kept until its new owner holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaving {
    /// The new owner.
    pub to: GroupId,
    /// Its servers.
    pub servers: Vec<String>,
    data: OrdMap<Bytes, Bytes>,
    bytes: u64,
}

impl Leaving {
    /// Bytes of keys and values in the copy.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A sharded group's replicated state. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardKv {
    group: GroupId,
    config: Arc<Config>,
    holders: Vec<GroupId>,
    directory: BTreeMap<GroupId, Vec<String>>,
    kv: KvState,
    pulling: BTreeMap<ShardId, Pull>,
    leaving: BTreeMap<(ConfigNum, ShardId), Leaving>,
    handoffs: BTreeMap<ConfigNum, Arc<Sessions<Reply>>>,
}

impl ShardKv {
    /// Group `group`'s state before it applied anything: configuration 0, no data.
    pub fn new(group: GroupId, sharding: Sharding) -> ShardKv {
        let shards = sharding.shards();
        ShardKv {
            group,
            config: Arc::new(Config::initial(shards)),
            holders: vec![GroupId::NONE; shards as usize],
            directory: BTreeMap::new(),
            kv: KvState::holding_none(sharding),
            pulling: BTreeMap::new(),
            leaving: BTreeMap::new(),
            handoffs: BTreeMap::new(),
        }
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// How keys map to shards.
    pub fn sharding(&self) -> Sharding {
        self.kv.sharding()
    }

    /// The data of the shards held here.
    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// Whether this group serves `shard` now.
    pub fn serves(&self, shard: ShardId) -> bool {
        self.config.owner(shard) == Some(self.group)
            && self.holder(shard) == self.group
            && !self.pulling.contains_key(&shard)
    }

    /// The shards this group serves, ascending.
    pub fn serving(&self) -> Vec<ShardId> {
        self.sharding().all().filter(|&s| self.serves(s)).collect()
    }

    /// The group holding `shard`'s data ([`GroupId::NONE`] for one never assigned).
    pub fn holder(&self, shard: ShardId) -> GroupId {
        self.holders
            .get(shard.0 as usize)
            .copied()
            .unwrap_or(GroupId::NONE)
    }

    /// The shards arriving, with where from and how far.
    pub fn pulling(&self) -> &BTreeMap<ShardId, Pull> {
        &self.pulling
    }

    /// The frozen copies kept for new owners.
    pub fn leaving(&self) -> &BTreeMap<(ConfigNum, ShardId), Leaving> {
        &self.leaving
    }

    /// Whether this group can take configuration `num`: it is the next one and every shard
    /// of the current one has arrived.
    pub fn wants(&self, num: ConfigNum) -> bool {
        num == self.config.num().next() && self.pulling.is_empty()
    }

    /// True if this group holds shard `shard` as given to it by configuration `config`
    /// (so its sender may drop its copy): it has moved past that configuration, or is in
    /// it with the shard fully arrived.
    pub fn has_received(&self, config: ConfigNum, shard: ShardId) -> bool {
        let now = self.config.num();
        now > config || (now == config && !self.pulling.contains_key(&shard))
    }

    /// The piece of the copy of `shard` that left under `config`, from `at`, of about
    /// `budget` bytes (one entry at least).
    pub fn chunk(
        &self,
        config: ConfigNum,
        shard: ShardId,
        at: &Position,
        budget: usize,
    ) -> ChunkAnswer {
        let Some(leaving) = self.leaving.get(&(config, shard)) else {
            return if self.config.num() < config {
                ChunkAnswer::NotYet
            } else {
                ChunkAnswer::Gone
            };
        };
        let sessions = self.handoffs.get(&config);
        let mut chunk = Chunk {
            at: at.clone(),
            entries: Vec::new(),
            sessions: Vec::new(),
            next: None,
        };
        let mut bytes = 0usize;
        let mut position = at.clone();
        if let Position::Entries(after) = &position {
            let range = match after {
                Some(after) => leaving.data.range::<_, Bytes>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Unbounded,
                )),
                None => leaving.data.range::<_, Bytes>(..),
            };
            for (key, value) in range {
                if bytes >= budget {
                    chunk.next = Some(Position::Entries(
                        chunk.entries.last().map(|(k, _)| k.clone()),
                    ));
                    return ChunkAnswer::Chunk(chunk);
                }
                bytes += key.len() + value.len() + ITEM_OVERHEAD;
                chunk.entries.push((key.clone(), value.clone()));
            }
            position = Position::Sessions(None);
        }
        if let (Position::Sessions(after), Some(sessions)) = (&position, sessions) {
            let mut after = *after;
            loop {
                if bytes >= budget {
                    chunk.next = Some(Position::Sessions(after));
                    return ChunkAnswer::Chunk(chunk);
                }
                let page = sessions.range_after(after, SESSIONS_PER_PAGE);
                let Some(&(last, _)) = page.last() else {
                    break;
                };
                for (client, session) in page {
                    chunk.sessions.push((client, session.seq, session.reply));
                }
                bytes += SESSIONS_PER_PAGE * (ITEM_OVERHEAD + 16);
                after = Some(last);
            }
        }
        ChunkAnswer::Chunk(chunk)
    }

    /// A read, from the state as it is: refused unless this group serves the key's shard
    /// now (a copy kept for a handoff, or one still being pulled, is never read).
    fn read_op(&self, op: &Op) -> Reply {
        let shard = op.shard(self.sharding());
        if self.serves(shard) {
            self.kv.read(op)
        } else {
            Reply::NotHeld(shard)
        }
    }

    fn execute(&mut self, command: &Command, context: &mut Context<'_, Reply>) -> Reply {
        match command {
            Command::Op(op) if op.is_read() => self.read_op(op),
            Command::Op(op) => {
                let shard = op.shard(self.sharding());
                if self.serves(shard) {
                    self.kv.execute(op)
                } else {
                    Reply::NotHeld(shard)
                }
            }
            Command::Reconfigure(next) => {
                self.reconfigure(next, context);
                Reply::Ok
            }
            Command::Install {
                config,
                shard,
                chunk,
            } => {
                self.install(*config, *shard, chunk, context);
                Reply::Ok
            }
            Command::Release { config, shard } => {
                self.release(*config, *shard);
                Reply::Ok
            }
        }
    }

    fn reconfigure(&mut self, next: &Arc<Config>, context: &mut Context<'_, Reply>) {
        let sharding = self.sharding();
        if !self.wants(next.num()) || next.validate(sharding.shards()).is_err() {
            return;
        }
        for (group, servers) in next.groups() {
            self.directory.insert(*group, servers.clone());
        }
        let mut frozen: Option<Arc<Sessions<Reply>>> = None;
        for shard in sharding.all() {
            let owner = next.owner(shard).unwrap_or(GroupId::NONE);
            let holder = self.holder(shard);
            if owner == GroupId::NONE || owner == holder {
                // Unassigned (the holder keeps it) or unchanged.
                continue;
            }
            if holder == self.group {
                if let Some(data) = self.kv.export_shard(shard) {
                    self.kv.drop_shard(shard);
                    let bytes = data.live_bytes();
                    let servers = next.groups().get(&owner).cloned().unwrap_or_default();
                    frozen.get_or_insert_with(|| Arc::new(context.sessions.clone()));
                    self.leaving.insert(
                        (next.num(), shard),
                        Leaving {
                            to: owner,
                            servers,
                            data: data.entries,
                            bytes,
                        },
                    );
                }
            }
            if owner == self.group && self.kv.create_shard(shard).is_ok() && holder != GroupId::NONE
            {
                let servers = self.directory.get(&holder).cloned().unwrap_or_default();
                self.pulling.insert(
                    shard,
                    Pull {
                        from: holder,
                        servers,
                        next: Position::START,
                    },
                );
            }
            self.holders[shard.0 as usize] = owner;
        }
        if let Some(frozen) = frozen {
            self.handoffs.insert(next.num(), frozen);
        }
        let holders: BTreeSet<GroupId> = self.holders.iter().copied().collect();
        self.directory.retain(|group, _| holders.contains(group));
        self.config = next.clone();
    }

    fn install(
        &mut self,
        config: ConfigNum,
        shard: ShardId,
        chunk: &Chunk,
        context: &mut Context<'_, Reply>,
    ) {
        if config != self.config.num() {
            return;
        }
        let Some(pull) = self.pulling.get(&shard) else {
            return;
        };
        if pull.next != chunk.at || !chunk_in_order(chunk) {
            return;
        }
        if self.kv.insert_entries(shard, &chunk.entries).is_err() {
            return;
        }
        for (client, seq, reply) in &chunk.sessions {
            context
                .sessions
                .merge(*client, *seq, reply.clone(), context.at);
        }
        match &chunk.next {
            Some(next) => {
                if let Some(pull) = self.pulling.get_mut(&shard) {
                    pull.next = next.clone();
                }
            }
            None => {
                self.pulling.remove(&shard);
            }
        }
    }

    fn release(&mut self, config: ConfigNum, shard: ShardId) {
        if self.leaving.remove(&(config, shard)).is_none() {
            return;
        }
        if !self.leaving.keys().any(|(c, _)| *c == config) {
            self.handoffs.remove(&config);
        }
    }
}

/// True if a chunk's items are in order, all after its start, and its next position is
/// after them.
fn chunk_in_order(chunk: &Chunk) -> bool {
    let keys_ascending = chunk.entries.windows(2).all(|w| w[0].0 < w[1].0);
    let clients_ascending = chunk.sessions.windows(2).all(|w| w[0].0 < w[1].0);
    let entries_after_start = match (&chunk.at, chunk.entries.first()) {
        (_, None) => true,
        (Position::Entries(None), Some(_)) => true,
        (Position::Entries(Some(after)), Some((first, _))) => first > after,
        (Position::Sessions(_), Some(_)) => false,
    };
    let sessions_after_start = match (&chunk.at, chunk.sessions.first()) {
        (Position::Sessions(Some(after)), Some((first, _, _))) => first > after,
        _ => true,
    };
    let last = match (chunk.sessions.last(), chunk.entries.last()) {
        (Some((client, _, _)), _) => Position::Sessions(Some(*client)),
        (None, Some((key, _))) => Position::Entries(Some(key.clone())),
        (None, None) => chunk.at.clone(),
    };
    let next_after = chunk.next.as_ref().is_none_or(|next| *next >= last);
    keys_ascending && clients_ascending && entries_after_start && sessions_after_start && next_after
}

impl StateMachine for ShardKv {
    type Command = Command;
    type Reply = Reply;
    type Cursor = Cursor;
    type Builder = ShardKvBuilder;

    fn apply(&mut self, command: &Command, context: &mut Context<'_, Reply>) -> Reply {
        self.execute(command, context)
    }

    fn is_read(command: &Command) -> bool {
        matches!(command, Command::Op(op) if op.is_read())
    }

    fn read(&self, command: &Command) -> Reply {
        match command {
            Command::Op(op) => self.read_op(op),
            other => panic!("read called with a command that is not a read: {other:?}"),
        }
    }

    fn is_refusal(reply: &Reply) -> bool {
        matches!(reply, Reply::NotHeld(_))
    }

    fn stale(last_seq: u64) -> Reply {
        Reply::Stale { last_seq }
    }

    fn command_bytes(command: &Command) -> usize {
        COMMAND_OVERHEAD
            + match command {
                Command::Op(op) => op.payload_bytes(),
                Command::Reconfigure(config) => config.encoded_bytes(),
                Command::Install { chunk, .. } => chunk.bytes(),
                Command::Release { .. } => 0,
            }
    }

    fn encode_piece(
        &self,
        from: Option<&Cursor>,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Option<Cursor> {
        let (piece, next) = match from {
            None => (self.header(), Some(Cursor::Kv(None))),
            Some(Cursor::Kv(at)) => {
                let mut inner = Vec::new();
                let next = self.kv.encode_piece(at.as_ref(), budget, &mut inner);
                let next = match next {
                    Some(kv) => Some(Cursor::Kv(Some(kv))),
                    None => self.leaving_cursor(None),
                };
                (PieceOut::Kv(inner), next)
            }
            Some(Cursor::Leaving { key, after }) => {
                let leaving = self.leaving.get(key);
                let mut entries = Vec::new();
                let mut bytes = 0;
                let mut more = false;
                if let Some(leaving) = leaving {
                    let range = match after {
                        Some(after) => leaving.data.range::<_, Bytes>((
                            std::ops::Bound::Excluded(after),
                            std::ops::Bound::Unbounded,
                        )),
                        None => leaving.data.range::<_, Bytes>(..),
                    };
                    for (k, v) in range {
                        if !entries.is_empty() && bytes >= budget {
                            more = true;
                            break;
                        }
                        bytes += k.len() + v.len() + ITEM_OVERHEAD;
                        entries.push((k, v));
                    }
                }
                let next = if more {
                    Some(Cursor::Leaving {
                        key: *key,
                        after: entries.last().map(|(k, _)| (*k).clone()),
                    })
                } else {
                    self.leaving_cursor(Some(*key))
                };
                (
                    PieceOut::Leaving {
                        config: key.0,
                        shard: key.1,
                        entries,
                    },
                    next,
                )
            }
            Some(Cursor::Sessions { config, after }) => {
                let page = self
                    .handoffs
                    .get(config)
                    .map(|s| s.range_after(*after, SESSIONS_PER_PAGE))
                    .unwrap_or_default();
                let next = if page.len() == SESSIONS_PER_PAGE {
                    Some(Cursor::Sessions {
                        config: *config,
                        after: page.last().map(|(c, _)| *c),
                    })
                } else {
                    self.sessions_cursor(Some(*config))
                };
                (
                    PieceOut::Sessions {
                        config: *config,
                        entries: page,
                    },
                    next,
                )
            }
        };
        out.extend(codec::encode(&piece).expect("an image piece always encodes"));
        next
    }

    fn builder() -> ShardKvBuilder {
        ShardKvBuilder::default()
    }

    fn live_bytes(&self) -> u64 {
        self.kv.live_bytes() + self.leaving.values().map(|l| l.bytes).sum::<u64>()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        vec![
            ("group", self.group.0.to_string()),
            ("config", self.config.num().0.to_string()),
            ("keys", self.kv.len().to_string()),
            ("shards_serving", self.serving().len().to_string()),
            ("shards_arriving", self.pulling.len().to_string()),
            ("shards_leaving", self.leaving.len().to_string()),
        ]
    }
}

// -------------------------------------------------------------------------------------
// Images.
// -------------------------------------------------------------------------------------

/// Where the next image piece starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// A piece of the held data (`None`: its first).
    Kv(Option<KvCursor>),
    /// Entries of a leaving copy after `after`.
    Leaving {
        /// Which copy.
        key: (ConfigNum, ShardId),
        /// Entries after this key (from the first if `None`).
        after: Option<Bytes>,
    },
    /// The at-most-once entries frozen at `config`, after `after`.
    Sessions {
        /// Which configuration's.
        config: ConfigNum,
        /// Clients after this one (from the first if `None`).
        after: Option<ClientId>,
    },
}

/// What the header says of a leaving copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LeavingHeader {
    config: ConfigNum,
    shard: ShardId,
    to: GroupId,
    servers: Vec<String>,
}

#[derive(Serialize)]
enum PieceOut<'a> {
    Header {
        version: u16,
        group: GroupId,
        config: &'a Config,
        holders: &'a [GroupId],
        directory: &'a BTreeMap<GroupId, Vec<String>>,
        pulling: &'a BTreeMap<ShardId, Pull>,
        leaving: Vec<LeavingHeader>,
        handoffs: Vec<(ConfigNum, u64)>,
    },
    Kv(Vec<u8>),
    Leaving {
        config: ConfigNum,
        shard: ShardId,
        entries: Vec<(&'a Bytes, &'a Bytes)>,
    },
    Sessions {
        config: ConfigNum,
        entries: Vec<(ClientId, Session<Reply>)>,
    },
}

#[derive(Deserialize)]
enum PieceIn {
    Header {
        version: u16,
        group: GroupId,
        config: Config,
        holders: Vec<GroupId>,
        directory: BTreeMap<GroupId, Vec<String>>,
        pulling: BTreeMap<ShardId, Pull>,
        leaving: Vec<LeavingHeader>,
        handoffs: Vec<(ConfigNum, u64)>,
    },
    Kv(Vec<u8>),
    Leaving {
        config: ConfigNum,
        shard: ShardId,
        entries: Vec<(Bytes, Bytes)>,
    },
    Sessions {
        config: ConfigNum,
        entries: Vec<(ClientId, Session<Reply>)>,
    },
}

impl ShardKv {
    fn header(&self) -> PieceOut<'_> {
        PieceOut::Header {
            version: IMAGE_VERSION,
            group: self.group,
            config: &self.config,
            holders: &self.holders,
            directory: &self.directory,
            pulling: &self.pulling,
            leaving: self
                .leaving
                .iter()
                .map(|(&(config, shard), l)| LeavingHeader {
                    config,
                    shard,
                    to: l.to,
                    servers: l.servers.clone(),
                })
                .collect(),
            handoffs: self
                .handoffs
                .iter()
                .map(|(c, s)| (*c, s.len() as u64))
                .collect(),
        }
    }

    /// The first leaving copy after `after` (or the first), else the first sessions page.
    fn leaving_cursor(&self, after: Option<(ConfigNum, ShardId)>) -> Option<Cursor> {
        let next = match after {
            None => self.leaving.keys().next(),
            Some(key) => self
                .leaving
                .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                .map(|(k, _)| k)
                .next(),
        };
        match next {
            Some(&key) => Some(Cursor::Leaving { key, after: None }),
            None => self.sessions_cursor(None),
        }
    }

    /// The first frozen table after `after` (or the first).
    fn sessions_cursor(&self, after: Option<ConfigNum>) -> Option<Cursor> {
        let next = match after {
            None => self.handoffs.keys().next(),
            Some(config) => self
                .handoffs
                .range((
                    std::ops::Bound::Excluded(config),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(k, _)| k)
                .next(),
        };
        next.map(|&config| Cursor::Sessions {
            config,
            after: None,
        })
    }
}

/// Rebuilds a [`ShardKv`] from image pieces, checking each.
#[derive(Default)]
pub struct ShardKvBuilder {
    machine: Option<ShardKv>,
    kv: KvImageBuilder,
    sessions: BTreeMap<ConfigNum, (u64, Sessions<Reply>)>,
}

impl ShardKvBuilder {
    fn add_piece(&mut self, piece: &[u8]) -> Result<(), String> {
        let piece: PieceIn = codec::decode(piece).map_err(|e| e.to_string())?;
        if let PieceIn::Header {
            version,
            group,
            config,
            holders,
            directory,
            pulling,
            leaving,
            handoffs,
        } = piece
        {
            if self.machine.is_some() {
                return Err("a second header".into());
            }
            if version != IMAGE_VERSION {
                return Err(format!(
                    "image format {version}, this build reads {IMAGE_VERSION}"
                ));
            }
            if holders.len() != config.shards().len() {
                return Err(format!(
                    "{} holders for {} shards",
                    holders.len(),
                    config.shards().len()
                ));
            }
            config.validate(holders.len() as u32)?;
            let leaving = leaving
                .into_iter()
                .map(|l| {
                    (
                        (l.config, l.shard),
                        Leaving {
                            to: l.to,
                            servers: l.servers,
                            data: OrdMap::new(),
                            bytes: 0,
                        },
                    )
                })
                .collect();
            self.sessions = handoffs
                .into_iter()
                .map(|(config, count)| (config, (count, Sessions::new())))
                .collect();
            self.machine = Some(ShardKv {
                group,
                config: Arc::new(config),
                holders,
                directory,
                kv: KvState::holding_none(Sharding::LAB),
                pulling,
                leaving,
                handoffs: BTreeMap::new(),
            });
            return Ok(());
        }
        let Some(machine) = self.machine.as_mut() else {
            return Err("a piece before the header".into());
        };
        match piece {
            PieceIn::Header { .. } => unreachable!("handled above"),
            PieceIn::Kv(inner) => self.kv.add(&inner).map_err(|e| e.to_string())?,
            PieceIn::Leaving {
                config,
                shard,
                entries,
            } => {
                let Some(leaving) = machine.leaving.get_mut(&(config, shard)) else {
                    return Err(format!("entries of a copy of shard {shard} not announced"));
                };
                for (key, value) in entries {
                    if leaving.data.get_max().is_some_and(|(last, _)| *last >= key) {
                        return Err(format!("keys of the copy of shard {shard} out of order"));
                    }
                    leaving.bytes += (key.len() + value.len()) as u64;
                    leaving
                        .data
                        .insert(Bytes::copy_from_slice(&key), Bytes::copy_from_slice(&value));
                }
            }
            PieceIn::Sessions { config, entries } => {
                let Some((_, sessions)) = self.sessions.get_mut(&config) else {
                    return Err(format!("a table of {config} not announced"));
                };
                for (client, session) in entries {
                    // Ages mean nothing in a frozen copy; any bound will do.
                    sessions.restore(client, session, crate::paxos::Seq(u64::MAX))?;
                }
            }
        }
        Ok(())
    }

    fn finish_machine(self) -> Result<ShardKv, String> {
        let Some(mut machine) = self.machine else {
            return Err("an image without its header".into());
        };
        machine.kv = self.kv.finish().map_err(|e| e.to_string())?;
        let sharding = machine.kv.sharding();
        if sharding.shards() as usize != machine.holders.len() {
            return Err(format!(
                "data of {} shards, configurations of {}",
                sharding.shards(),
                machine.holders.len()
            ));
        }
        for shard in sharding.all() {
            let holds = machine.kv.holds(shard);
            if holds != (machine.holder(shard) == machine.group) {
                return Err(format!(
                    "shard {shard}: held here is {holds}, its holder is {}",
                    machine.holder(shard)
                ));
            }
        }
        for (config, (count, sessions)) in self.sessions {
            if sessions.len() as u64 != count {
                return Err(format!(
                    "the table of {config} announced {count} clients and held {}",
                    sessions.len()
                ));
            }
            machine.handoffs.insert(config, Arc::new(sessions));
        }
        Ok(machine)
    }
}

impl ImageBuilder<ShardKv> for ShardKvBuilder {
    fn add(&mut self, piece: &[u8]) -> Result<(), String> {
        self.add_piece(piece)
    }

    fn finish(self) -> Result<ShardKv, String> {
        self.finish_machine()
    }
}
