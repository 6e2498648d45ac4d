//! [`ShardMaster`]: the list of configurations as a replicated state machine.
//!
//! Commands are the lab's four RPCs ([`Command`]). Join, Leave and Move make the next
//! configuration when they change something and answer [`Reply::Changed`] with its number;
//! a Join of a group already present, a Leave of one absent and a Move of a shard to its
//! owner change nothing and answer [`Reply::Unchanged`] with the latest number (repeated
//! Joins and Leaves are harmless). Arguments no configuration could hold (group 0, a shard
//! out of range, a Move to a group that does not exist, limits exceeded) are
//! [`Reply::Refused`] and change nothing. A Query is a read: executed in log order like
//! every command, so it reflects every command decided before it, but not recorded for
//! at-most-once.
//!
//! # Invariants
//! - Configuration `n` is at index `n`, and configuration 0 has no groups.
//! - A configuration never changes once made (each is behind an `Arc`; a change pushes a
//!   new one), so `Query(n)` answers the same forever.
//! - Every configuration satisfies [`Config::validate`] for `SHARDS` shards; Join and Leave
//!   configurations are even ([`rebalance`](super::rebalance)).
//! - `apply` is a pure function of the state and the command (sorted maps only).
//!
//! # Image
//! A header piece (format version, shard count, number of configurations), then the
//! configurations in order, at most [`CONFIGS_PER_PIECE_MAX`] and about the byte budget per
//! piece. The builder checks the version, the shard count, that numbers run 0, 1, 2, … and
//! every configuration's invariants; a bad image is refused as a whole. Its golden bytes
//! are the `shardmaster-image` sample of [`crate::formats`].
//!
//! # Failure model
//! `apply` never panics on any command; bad commands are refused. Image pieces come from
//! disks and peers and are validated before they are used.

use std::sync::Arc;

use imbl::Vector;
use kv_engine::kv::ShardId;
use serde::{Deserialize, Serialize};

use super::config::{Config, ConfigNum, GroupId};
use crate::codec;
use crate::replica::{Context, ImageBuilder, StateMachine};

/// The lab's number of shards (`NShards`).
pub const LAB_SHARDS: u32 = 10;
/// Most shards a shard master may manage (Redis Cluster's slot count).
pub const SHARDS_MAX: u32 = 16_384;
/// Most groups in one configuration (a Join beyond is refused).
pub const GROUPS_MAX: usize = 1024;
/// Most servers a Join may name.
pub const SERVERS_PER_GROUP_MAX: usize = 64;
/// Longest server name a Join may carry, in bytes.
pub const SERVER_NAME_BYTES_MAX: usize = 256;
/// Most configurations in one image piece.
pub const CONFIGS_PER_PIECE_MAX: usize = 16;
/// The image format written today.
const IMAGE_VERSION: u16 = 1;
/// Bytes a command carries besides server names (tags, ids).
const COMMAND_OVERHEAD_BYTES: usize = 16;

/// What clients ask the shard master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a group with its servers, then rebalance.
    Join {
        /// The new group.
        group: GroupId,
        /// Its servers, in the order clients should try them.
        servers: Vec<String>,
    },
    /// Remove a group, handing its shards to the others (rebalanced).
    Leave {
        /// The group to remove.
        group: GroupId,
    },
    /// Put one shard on one group, without rebalancing.
    Move {
        /// The shard.
        shard: ShardId,
        /// Its new owner, a group of the latest configuration.
        group: GroupId,
    },
    /// Read configuration `num`; `None` (the lab's -1) or a number beyond the latest reads
    /// the latest.
    Query {
        /// Which configuration.
        num: Option<ConfigNum>,
    },
}

/// Why a command was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Group 0 is no group.
    #[error("group 0 is reserved for 'no group'")]
    GroupZero,
    /// The shard does not exist.
    #[error("no shard {0}")]
    NoSuchShard(ShardId),
    /// A Move to a group that is not in the latest configuration.
    #[error("group {} is not in the latest configuration", .0.0)]
    NotAGroup(GroupId),
    /// A Join beyond [`GROUPS_MAX`] groups.
    #[error("a configuration holds at most {GROUPS_MAX} groups")]
    TooManyGroups,
    /// A Join naming more than [`SERVERS_PER_GROUP_MAX`] servers or a name longer than
    /// [`SERVER_NAME_BYTES_MAX`].
    #[error(
        "a group has at most {SERVERS_PER_GROUP_MAX} servers of at most \
         {SERVER_NAME_BYTES_MAX} bytes each"
    )]
    ServersTooLarge,
}

/// The shard master's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A Join, Leave or Move made this configuration.
    Changed(ConfigNum),
    /// A Join, Leave or Move changed nothing; this is the latest configuration's number.
    Unchanged(ConfigNum),
    /// A Query's answer.
    Config(#[serde(with = "shared_config")] Arc<Config>),
    /// The command was refused.
    Refused(Refusal),
    /// The request's seq is below the client's last executed one, whose reply is no longer
    /// kept. Nothing was executed.
    Stale {
        /// The client's last executed seq.
        last_seq: u64,
    },
}

/// Serde for a shared configuration: encoded as the configuration itself.
mod shared_config {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Config;

    pub fn serialize<S: Serializer>(config: &Arc<Config>, s: S) -> Result<S::Ok, S::Error> {
        config.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Config>, D::Error> {
        Config::deserialize(d).map(Arc::new)
    }
}

/// The list of configurations of a cluster of a fixed number of shards. Cloning is O(1)
/// (a persistent vector of shared configurations). See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShardMaster {
    /// The number of shards (`1..=SHARDS_MAX`), fixed for the cluster's life.
    shards: u32,
    configs: Vector<Arc<Config>>,
    /// Sum of [`Config::encoded_bytes`] over `configs`.
    bytes: u64,
}

impl Default for ShardMaster {
    /// The lab's: [`LAB_SHARDS`] shards.
    fn default() -> Self {
        ShardMaster::new(LAB_SHARDS)
    }
}

impl ShardMaster {
    /// Configuration 0 only, of `shards` shards.
    ///
    /// # Panics
    /// If `shards` is outside `1..=SHARDS_MAX` (callers validate what users give).
    pub fn new(shards: u32) -> ShardMaster {
        assert!(
            (1..=SHARDS_MAX).contains(&shards),
            "a shard master has 1–{SHARDS_MAX} shards, not {shards}"
        );
        let first = Config::initial(shards);
        ShardMaster {
            shards,
            bytes: first.encoded_bytes() as u64,
            configs: Vector::unit(Arc::new(first)),
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The latest configuration.
    pub fn latest(&self) -> &Arc<Config> {
        self.configs.back().expect("configuration 0 always exists")
    }

    /// Configuration `num`, or the latest for `None` or a number beyond it (the lab's
    /// Query).
    pub fn config(&self, num: Option<ConfigNum>) -> &Arc<Config> {
        match num {
            Some(num) if num.index() < self.configs.len() => &self.configs[num.index()],
            _ => self.latest(),
        }
    }

    /// Every configuration, oldest first.
    pub fn configs(&self) -> impl Iterator<Item = &Arc<Config>> {
        self.configs.iter()
    }

    /// Executes one command (see the module docs for what each answers).
    pub fn execute(&mut self, command: &Command) -> Reply {
        match command {
            Command::Join { group, servers } => self.join(*group, servers),
            Command::Leave { group } => self.leave(*group),
            Command::Move { shard, group } => self.shard_move(*shard, *group),
            Command::Query { .. } => self.read(command),
        }
    }

    fn join(&mut self, group: GroupId, servers: &[String]) -> Reply {
        let latest = self.latest();
        if group == GroupId::NONE {
            return Reply::Refused(Refusal::GroupZero);
        }
        if servers.len() > SERVERS_PER_GROUP_MAX
            || servers.iter().any(|s| s.len() > SERVER_NAME_BYTES_MAX)
        {
            return Reply::Refused(Refusal::ServersTooLarge);
        }
        if latest.groups().contains_key(&group) {
            return Reply::Unchanged(latest.num());
        }
        if latest.groups().len() >= GROUPS_MAX {
            return Reply::Refused(Refusal::TooManyGroups);
        }
        let next = latest.with_group(group, servers.to_vec());
        self.push(next)
    }

    fn leave(&mut self, group: GroupId) -> Reply {
        let latest = self.latest();
        if !latest.groups().contains_key(&group) {
            return Reply::Unchanged(latest.num());
        }
        let next = latest.without_group(group);
        self.push(next)
    }

    fn shard_move(&mut self, shard: ShardId, group: GroupId) -> Reply {
        let latest = self.latest();
        let Some(owner) = latest.owner(shard) else {
            return Reply::Refused(Refusal::NoSuchShard(shard));
        };
        if !latest.groups().contains_key(&group) {
            return Reply::Refused(Refusal::NotAGroup(group));
        }
        if owner == group {
            return Reply::Unchanged(latest.num());
        }
        let next = latest.with_move(shard, group);
        self.push(next)
    }

    fn push(&mut self, config: Config) -> Reply {
        debug_assert_eq!(config.num().index(), self.configs.len());
        debug_assert_eq!(config.validate(self.shards), Ok(()));
        let num = config.num();
        self.bytes += config.encoded_bytes() as u64;
        self.configs.push_back(Arc::new(config));
        Reply::Changed(num)
    }

    /// The whole image as one list of pieces (tests and tools; replicas stream pieces).
    pub fn image_pieces(&self, budget: usize) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut cursor = None;
        loop {
            let mut piece = Vec::new();
            cursor = StateMachine::encode_piece(self, cursor.as_ref(), budget, &mut piece);
            pieces.push(piece);
            if cursor.is_none() {
                return pieces;
            }
        }
    }
}

/// An image piece as written (borrowing the configurations).
#[derive(Serialize)]
enum PieceOut<'a> {
    Header {
        version: u16,
        shards: u32,
        configs: u64,
    },
    Configs(Vec<&'a Config>),
}

/// An image piece as read; the same encoding as [`PieceOut`].
#[derive(Deserialize)]
enum PieceIn {
    Header {
        version: u16,
        shards: u32,
        configs: u64,
    },
    Configs(Vec<Config>),
}

impl StateMachine for ShardMaster {
    type Command = Command;
    type Reply = Reply;
    type Cursor = ConfigNum;
    type Builder = ShardMasterBuilder;

    fn apply(&mut self, command: &Command, _context: &mut Context<'_, Reply>) -> Reply {
        self.execute(command)
    }

    fn is_read(command: &Command) -> bool {
        matches!(command, Command::Query { .. })
    }

    fn read(&self, command: &Command) -> Reply {
        match command {
            Command::Query { num } => Reply::Config(self.config(*num).clone()),
            other => panic!("read called with a command that is not a read: {other:?}"),
        }
    }

    fn stale(last_seq: u64) -> Reply {
        Reply::Stale { last_seq }
    }

    fn command_bytes(command: &Command) -> usize {
        match command {
            Command::Join { servers, .. } => {
                COMMAND_OVERHEAD_BYTES + servers.iter().map(|s| s.len() + 2).sum::<usize>()
            }
            _ => COMMAND_OVERHEAD_BYTES,
        }
    }

    fn encode_piece(
        &self,
        from: Option<&ConfigNum>,
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Option<ConfigNum> {
        let (piece, next) = match from {
            None => (
                PieceOut::Header {
                    version: IMAGE_VERSION,
                    shards: self.shards,
                    configs: self.configs.len() as u64,
                },
                Some(ConfigNum::ZERO),
            ),
            Some(first) => {
                let mut configs = Vec::new();
                let mut bytes = 0;
                for config in self.configs.iter().skip(first.index()) {
                    if !configs.is_empty()
                        && (bytes >= budget || configs.len() == CONFIGS_PER_PIECE_MAX)
                    {
                        break;
                    }
                    bytes += config.encoded_bytes();
                    configs.push(config.as_ref());
                }
                let next = first.index() + configs.len();
                let next = (next < self.configs.len()).then_some(ConfigNum(next as u64));
                (PieceOut::Configs(configs), next)
            }
        };
        out.extend(codec::encode(&piece).expect("an image piece always encodes"));
        next
    }

    fn builder() -> ShardMasterBuilder {
        ShardMasterBuilder::default()
    }

    fn live_bytes(&self) -> u64 {
        self.bytes
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        let latest = self.latest();
        vec![
            ("configs", self.configs.len().to_string()),
            ("config", latest.num().0.to_string()),
            ("groups", latest.groups().len().to_string()),
        ]
    }
}

/// What is wrong with an image of a [`ShardMaster`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A piece did not decode.
    #[error("undecodable piece: {0}")]
    Undecodable(String),
    /// The header is missing, repeated or of another format.
    #[error("header: {0}")]
    Header(String),
    /// The image's shard count is outside `1..=SHARDS_MAX`.
    #[error("the image has {0} shards; a shard master has 1–{SHARDS_MAX}")]
    ShardCount(u32),
    /// A configuration out of order, invalid, or beyond the announced count.
    #[error("configuration: {0}")]
    Config(String),
    /// Fewer configurations than announced.
    #[error("the image announced {announced} configurations and held {held}")]
    Incomplete {
        /// Announced in the header.
        announced: u64,
        /// Received.
        held: u64,
    },
}

/// Rebuilds a [`ShardMaster`] from image pieces, checking each (see the module docs).
#[derive(Default)]
pub struct ShardMasterBuilder {
    /// From the header: the shard count and how many configurations follow.
    announced: Option<(u32, u64)>,
    configs: Vector<Arc<Config>>,
    bytes: u64,
}

impl ShardMasterBuilder {
    fn add_piece(&mut self, piece: &[u8]) -> Result<(), ImageError> {
        let piece: PieceIn =
            codec::decode(piece).map_err(|e| ImageError::Undecodable(e.to_string()))?;
        match (piece, self.announced) {
            (
                PieceIn::Header {
                    version,
                    shards,
                    configs,
                },
                None,
            ) => {
                if version != IMAGE_VERSION {
                    return Err(ImageError::Header(format!(
                        "format {version}, this build reads {IMAGE_VERSION}"
                    )));
                }
                if !(1..=SHARDS_MAX).contains(&shards) {
                    return Err(ImageError::ShardCount(shards));
                }
                if configs == 0 {
                    return Err(ImageError::Header("no configuration 0".into()));
                }
                self.announced = Some((shards, configs));
            }
            (PieceIn::Header { .. }, Some(_)) => {
                return Err(ImageError::Header("a second header".into()))
            }
            (PieceIn::Configs(_), None) => {
                return Err(ImageError::Header(
                    "configurations before the header".into(),
                ))
            }
            (PieceIn::Configs(configs), Some((shards, announced))) => {
                for config in configs {
                    self.add_config(config, shards, announced)?;
                }
            }
        }
        Ok(())
    }

    fn add_config(
        &mut self,
        config: Config,
        shards: u32,
        announced: u64,
    ) -> Result<(), ImageError> {
        let expected = ConfigNum(self.configs.len() as u64);
        if expected.0 >= announced {
            return Err(ImageError::Config(format!(
                "more than the {announced} announced"
            )));
        }
        if config.num() != expected {
            return Err(ImageError::Config(format!(
                "{} where {expected} was due",
                config.num()
            )));
        }
        config.validate(shards).map_err(ImageError::Config)?;
        if expected == ConfigNum::ZERO && config != Config::initial(shards) {
            return Err(ImageError::Config(
                "configuration 0 is not the initial one".into(),
            ));
        }
        self.bytes += config.encoded_bytes() as u64;
        self.configs.push_back(Arc::new(config));
        Ok(())
    }

    fn finish_machine(self) -> Result<ShardMaster, ImageError> {
        let Some((shards, announced)) = self.announced else {
            return Err(ImageError::Header("missing".into()));
        };
        let held = self.configs.len() as u64;
        if held != announced {
            return Err(ImageError::Incomplete { announced, held });
        }
        Ok(ShardMaster {
            shards,
            configs: self.configs,
            bytes: self.bytes,
        })
    }
}

impl ImageBuilder<ShardMaster> for ShardMasterBuilder {
    fn add(&mut self, piece: &[u8]) -> Result<(), String> {
        self.add_piece(piece).map_err(|e| e.to_string())
    }

    fn finish(self) -> Result<ShardMaster, String> {
        self.finish_machine().map_err(|e| e.to_string())
    }
}

/// Rebuilds a machine from pieces (tests and tools).
pub fn from_pieces(pieces: &[Vec<u8>]) -> Result<ShardMaster, ImageError> {
    let mut builder = ShardMasterBuilder::default();
    for piece in pieces {
        builder.add_piece(piece)?;
    }
    builder.finish_machine()
}
