//! A fixed sample of every persisted or replicated format, encoded as this build encodes
//! it — for golden tests: `tests/formats.rs` compares these bytes with files checked in
//! under `tests/golden/` and decodes the checked-in files, so a change that would strand
//! existing data directories (or split a mixed-version group) fails CI. The example
//! `write_golden` rewrites the files after a *deliberate* format change (which must also
//! raise the format's tag and the data directory's format in `kv_server::config`).
//!
//! | sample | format | its tag |
//! | --- | --- | --- |
//! | `wal-segment` | the engine's record framing | the data directory format (stamp) |
//! | `snapshot-file` | the engine's snapshot file | magic `KVSNAP02` |
//! | `paxos-records` | Paxos WAL records | record kind 3 |
//! | `replica-record` | the replica's WAL records | record kind 4 |
//! | `batch` | decided values (log entries), with kv requests (batches of ops) | `Batch::V1`; each kv request's batch its format byte 16 |
//! | `image` | the applied state's image (its sessions hold kv replies) | image header `version` 1 |
//! | `snapshot-payload` | the replica's combined snapshot | magic `KVREPL02`, header `version` 2 |
//! | `shardmaster-batch` | the shard master's decided values | `Batch::V1` |
//! | `shardmaster-image` | the shard master's applied state (configurations, sessions) | image header `version` 1, header piece `version` 1 |
//! | `viewservice-record` | the view service's durable state (record kind 5, and its snapshots) | first byte `DURABLE_VERSION` 1 |

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kv_engine::fs::{Fs, SimFs};
use kv_engine::kv::{KvState, Op};
use kv_engine::snapshot::SnapshotSource;
use kv_engine::store::{Store, StoreOptions};

use crate::codec;
use crate::kvgroup::Batch as Ops;
use crate::paxos::{Ballot, Record as PaxosRecord, Seq, SnapshotInstance, SnapshotState};
use crate::pbservice::{Durable as ViewDurable, Member, View};
use crate::replica::applied::{Applied, ImageAssembler, ImageStream};
use crate::replica::durable::{self, DurableSnapshot, Header, Record, SNAPSHOT_VERSION};
use crate::replica::frames::{self, Section};
use crate::replica::message::Batch;
use crate::replica::{Boot, PeerMemory, Request};
use crate::shardmaster::{self, ConfigNum, GroupId, ShardMaster};
use crate::types::{ClientId, NodeId};

/// One sample: its name (the golden file's stem) and its bytes.
pub struct Sample {
    /// The golden file is `{name}.bin`.
    pub name: &'static str,
    /// The encoding.
    pub bytes: Vec<u8>,
}

fn requests() -> Vec<Request<Ops>> {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    vec![
        Request {
            client: ClientId(7),
            seq: 3,
            command: Ops::one(Op::Put {
                key: b("alpha"),
                value: b("one"),
            }),
        },
        Request {
            client: ClientId(8),
            seq: 1,
            command: Ops::new(vec![
                Op::Append {
                    key: b("beta"),
                    value: b("two"),
                },
                Op::Put {
                    key: b("delta"),
                    value: b("four"),
                },
            ])
            .expect("two writes form a batch"),
        },
        Request {
            client: ClientId(9),
            seq: 5,
            command: Ops::one(Op::Delete { key: b("gamma") }),
        },
        Request {
            client: ClientId(9),
            seq: 6,
            command: Ops::one(Op::Get { key: b("alpha") }),
        },
    ]
}

fn ballot(round: u64, node: u32) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn paxos_records() -> Vec<PaxosRecord> {
    let value = Bytes::from_static(b"a decided value");
    vec![
        PaxosRecord::Promise(ballot(3, 1)),
        PaxosRecord::Accept {
            seq: Seq(11),
            ballot: ballot(3, 1),
            value: value.clone(),
        },
        PaxosRecord::Decide {
            seq: Seq(11),
            value: None,
        },
        PaxosRecord::Decide {
            seq: Seq(12),
            value: Some(value),
        },
        PaxosRecord::Done(Seq(10)),
        PaxosRecord::Recovering(false),
    ]
}

fn peers() -> Vec<PeerMemory> {
    vec![
        PeerMemory {
            incarnation: 1,
            boot: Boot {
                count: 4,
                nonce: 0x0123_4567_89ab_cdef,
            },
            promised: ballot(3, 1),
            accepted: Some(Seq(11)),
            verified: true,
        },
        PeerMemory::default(),
        PeerMemory {
            incarnation: 2,
            boot: Boot { count: 1, nonce: 7 },
            promised: ballot(2, 2),
            accepted: None,
            verified: false,
        },
    ]
}

fn acceptor() -> SnapshotState {
    SnapshotState {
        promised: ballot(3, 1),
        dones: vec![Some(Seq(9)), None, Some(Seq(10))],
        local_done: Some(Seq(9)),
        max: Some(Seq(12)),
        recovering: false,
        floor: Seq(5),
        instances: vec![
            (
                Seq(11),
                SnapshotInstance::Accepted {
                    ballot: ballot(3, 1),
                    value: Bytes::from_static(b"accepted"),
                },
            ),
            (
                Seq(12),
                SnapshotInstance::Decided(Bytes::from_static(b"decided")),
            ),
        ],
    }
}

/// A small applied state: a few keys in several shards, and sessions.
fn applied() -> Applied<KvState> {
    let mut applied = Applied::initial(KvState::new());
    let value = Batch::encode(NodeId(0), &requests());
    applied.apply(Seq(0), &value, &requests());
    let more = vec![Request {
        client: ClientId(10),
        seq: 1,
        command: Ops::one(Op::Put {
            key: Bytes::from_static(b"\x03three"),
            value: Bytes::from_static(b"in shard three"),
        }),
    }];
    applied.apply(Seq(1), &Batch::encode(NodeId(1), &more), &more);
    applied
}

/// The shard master's commands, one of each kind (the Move follows the Joins it needs).
fn shardmaster_requests() -> Vec<Request<shardmaster::Command>> {
    use shardmaster::Command;
    let request = |client: u64, seq: u64, command: Command| Request {
        client: ClientId(client),
        seq,
        command,
    };
    vec![
        request(
            3,
            1,
            Command::Join {
                group: GroupId(7),
                servers: vec!["a".into(), "b".into()],
            },
        ),
        request(
            4,
            1,
            Command::Join {
                group: GroupId(9),
                servers: vec!["c".into()],
            },
        ),
        request(
            3,
            2,
            Command::Move {
                shard: kv_engine::kv::ShardId(0),
                group: GroupId(9),
            },
        ),
        request(4, 2, Command::Leave { group: GroupId(7) }),
        request(5, 1, Command::Query { num: None }),
        request(
            5,
            2,
            Command::Query {
                num: Some(ConfigNum(1)),
            },
        ),
    ]
}

/// The lab's shard master after [`shardmaster_requests`].
fn shardmaster_applied() -> Applied<ShardMaster> {
    let mut applied = Applied::initial(ShardMaster::default());
    let requests = shardmaster_requests();
    applied.apply(Seq(0), &Batch::encode(NodeId(0), &requests), &requests);
    applied
}

fn image<M: crate::replica::StateMachine>(applied: &Applied<M>) -> Vec<u8> {
    let mut stream = ImageStream::new(applied.clone());
    let mut out = Vec::new();
    while stream.next_frame(64, &mut out) {}
    out
}

fn snapshot_payload() -> Vec<u8> {
    let snapshot = DurableSnapshot {
        header: Header {
            version: SNAPSHOT_VERSION,
            peers: peers(),
            fence: Some(Seq(12)),
        },
        acceptor: acceptor(),
        applied: applied(),
    };
    let mut out = Vec::new();
    snapshot.write_payload(&mut out).expect("writing to memory");
    out
}

/// A data directory's files after the given records and snapshot, on a simulated disk.
fn engine_files() -> (Vec<u8>, Vec<u8>) {
    let fs = SimFs::new();
    let dir = Path::new("/golden");
    // The records' framing is the format; the zeros a log writes ahead of its records
    // (`WalOptions::prefill_bytes`) are unwritten space, not part of it.
    let options = StoreOptions {
        wal: kv_engine::wal::WalOptions {
            prefill_bytes: 0,
            ..kv_engine::wal::WalOptions::default()
        },
        ..StoreOptions::default()
    };
    let (mut store, _) = Store::open(Arc::new(fs.clone()), dir, options).expect("open");
    for record in paxos_records() {
        store
            .append(
                crate::paxos::RECORD_KIND,
                &codec::encode(&record).expect("encodes"),
            )
            .expect("append");
    }
    store.sync().expect("sync");
    let segment = fs
        .read_all(&dir.join("00000000000000000001.wal"))
        .expect("segment")
        .to_vec();
    store
        .write_snapshot(3, b"a snapshot payload")
        .expect("snapshot");
    let snapshot = fs
        .read_all(&dir.join("00000000000000000003.snap"))
        .expect("snapshot file")
        .to_vec();
    (segment, snapshot)
}

fn view_durable() -> ViewDurable {
    ViewDurable {
        view: View {
            viewnum: 7,
            primary: Some(Member {
                node: NodeId(2),
                boot: 0x1234_5678_9abc_def0,
            }),
            backup: Some(Member {
                node: NodeId(3),
                boot: 42,
            }),
        },
        acked: true,
    }
}

/// Every sample, encoded.
pub fn samples() -> Vec<Sample> {
    let (segment, snapshot_file) = engine_files();
    let mut paxos = Vec::new();
    for record in paxos_records() {
        frames::push(
            &mut paxos,
            Section::Header,
            &codec::encode(&record).expect("encodes"),
        );
    }
    vec![
        Sample {
            name: "wal-segment",
            bytes: segment,
        },
        Sample {
            name: "snapshot-file",
            bytes: snapshot_file,
        },
        Sample {
            name: "paxos-records",
            bytes: paxos,
        },
        Sample {
            name: "replica-record",
            bytes: Record::Peers(peers()).encode(),
        },
        Sample {
            name: "batch",
            bytes: Batch::encode(NodeId(2), &requests()).to_vec(),
        },
        Sample {
            name: "image",
            bytes: image(&applied()),
        },
        Sample {
            name: "snapshot-payload",
            bytes: snapshot_payload(),
        },
        Sample {
            name: "shardmaster-batch",
            bytes: Batch::encode(NodeId(1), &shardmaster_requests()).to_vec(),
        },
        Sample {
            name: "shardmaster-image",
            bytes: image(&shardmaster_applied()),
        },
        Sample {
            name: "viewservice-record",
            bytes: view_durable().encode(),
        },
    ]
}

/// Decodes golden bytes of sample `name` and checks they mean what the sample means.
pub fn check(name: &str, bytes: &[u8]) -> Result<(), String> {
    match name {
        "wal-segment" | "snapshot-file" => check_engine(name, bytes),
        "paxos-records" => {
            let decoded: Vec<PaxosRecord> = frames::Reader::new(bytes)
                .map(|f| {
                    let (_, body) = f?;
                    codec::decode(body).map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            same(name, decoded == paxos_records())
        }
        "replica-record" => {
            let Record::Peers(table) = codec::decode(bytes).map_err(|e| e.to_string())?;
            same(name, table == peers())
        }
        "batch" => {
            let decoded = Batch::<Ops>::decode(bytes).map_err(|e| e.to_string())?;
            same(name, decoded == requests())
        }
        "shardmaster-batch" => {
            let decoded =
                Batch::<shardmaster::Command>::decode(bytes).map_err(|e| e.to_string())?;
            same(name, decoded == shardmaster_requests())
        }
        "shardmaster-image" => {
            let decoded = assemble::<ShardMaster>(bytes)?;
            let expected = shardmaster_applied();
            same(
                name,
                decoded.machine == expected.machine
                    && decoded.sessions == expected.sessions
                    && decoded.next == expected.next
                    && decoded.digest == expected.digest,
            )
        }
        "image" => {
            let decoded = assemble::<KvState>(bytes)?;
            let expected = applied();
            same(
                name,
                decoded.machine == expected.machine
                    && decoded.sessions == expected.sessions
                    && decoded.next == expected.next
                    && decoded.digest == expected.digest,
            )
        }
        "snapshot-payload" => {
            let restored = durable::restore::<KvState>(bytes)?;
            let expected = applied();
            same(
                name,
                restored.header.peers == peers()
                    && restored.acceptor == acceptor()
                    && restored.applied.machine == expected.machine
                    && restored.applied.sessions == expected.sessions,
            )
        }
        "viewservice-record" => {
            let decoded = ViewDurable::decode(bytes).map_err(|e| e.to_string())?;
            same(name, decoded == view_durable())
        }
        other => Err(format!("no sample named {other}")),
    }
}

/// An image's frames assembled into the applied state.
fn assemble<M: crate::replica::StateMachine>(bytes: &[u8]) -> Result<Applied<M>, String> {
    let mut assembler = ImageAssembler::<M>::new();
    for frame in frames::Reader::new(bytes) {
        let (_, body) = frame?;
        assembler.add(body)?;
    }
    assembler.finish()
}

/// The engine's files read back through the engine.
fn check_engine(name: &str, bytes: &[u8]) -> Result<(), String> {
    let fs = SimFs::new();
    let dir = Path::new("/golden");
    fs.create_dir_all(dir).map_err(|e| e.to_string())?;
    let file = if name == "wal-segment" {
        "00000000000000000001.wal"
    } else {
        "00000000000000000003.snap"
    };
    let mut f = fs.create(&dir.join(file)).map_err(|e| e.to_string())?;
    f.append(bytes).map_err(|e| e.to_string())?;
    f.sync().map_err(|e| e.to_string())?;
    fs.sync_dir(dir).map_err(|e| e.to_string())?;
    if name == "wal-segment" {
        let (_, recovered) =
            Store::open(Arc::new(fs), dir, StoreOptions::default()).map_err(|e| e.to_string())?;
        let decoded: Vec<PaxosRecord> = recovered
            .records
            .iter()
            .map(|r| codec::decode(&r.payload).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        same(name, decoded == paxos_records())
    } else {
        let snapshot =
            kv_engine::snapshot::read(&fs, &dir.join(file)).map_err(|e| e.to_string())?;
        same(
            name,
            &*snapshot.data == b"a snapshot payload" && snapshot.index == 3,
        )
    }
}

fn same(name: &str, equal: bool) -> Result<(), String> {
    if equal {
        Ok(())
    } else {
        Err(format!("{name}: the golden bytes decode to something else"))
    }
}
