//! kv-engine: the storage engine under every kv replica.
//!
//! Layers, bottom up:
//! - [`fs`]: the `Fs` seam. `RealFs` for production, `SimFs` for crash tests.
//! - [`wal`]: a segmented write-ahead log of checksummed records, with group commit
//!   ([`group::GroupCommit`]) so many concurrent writers share one write and one fdatasync.
//! - [`snapshot`]: atomic, checksummed snapshot files (temp → fsync → rename → fsync dir).
//! - [`store`]: the facade a replica opens: newest valid snapshot plus the WAL records
//!   after it; writing a snapshot compacts the WAL behind it.
//! - [`shared`]: one WAL shared by many replicas' streams (a node hosting several groups),
//!   each with its own snapshots, so one fdatasync serves them all.
//! - [`kv`]: `KvState`, the deterministic key-value data every replica kind applies
//!   decided operations to, in persistent maps that stream as image pieces; scans of
//!   a shard's keys by pages ([`kv::scan`]), filtered by Redis glob patterns ([`glob`]).
//!
//! The engine never uses tokio or a global RNG. Only the group-commit writer thread reads
//! the clock, to bound how long a batch waits for more writers.
//! Durability contract: a record is durable once `sync` (or the group-commit completion)
//! reports its index; nothing is acknowledged before that. After a failed fsync the WAL is
//! poisoned and every later call fails; no fsync is ever retried.
//!
//! A minimal session:
//! ```
//! use std::sync::Arc;
//! use kv_engine::{fs::SimFs, store::{Store, StoreOptions}};
//! let fs = Arc::new(SimFs::new());
//! let (mut store, recovered) = Store::open(fs.clone(), "/data".as_ref(), StoreOptions::default()).unwrap();
//! assert!(recovered.snapshot.is_none() && recovered.records.is_empty());
//! let index = store.append(1, b"put a=1").unwrap();
//! store.sync().unwrap();                      // durable from here on
//! store.write_snapshot(index, b"a=1").unwrap(); // records <= index may now be compacted
//! drop(store);
//! fs.crash(kv_engine::fs::Torn::None);
//! let (_, recovered) = Store::open(fs, "/data".as_ref(), StoreOptions::default()).unwrap();
//! assert_eq!(&*recovered.snapshot.unwrap().data, b"a=1");
//! ```

pub mod codec;
pub mod error;
pub mod fs;
pub mod glob;
pub mod group;
pub mod histogram;
pub mod kv;
pub mod shared;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use error::{Error, Result};
