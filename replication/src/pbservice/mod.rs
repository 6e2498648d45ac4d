//! Primary/backup replication with a view service (Lab 2): a simpler mode than the Paxos
//! groups, for lower latency where one view service is an acceptable single point of
//! failure.
//!
//! - [`viewservice`]: the view service core — pings, views, the ack rule.
//! - [`server`]: the primary/backup server core — the primary applies every request and
//!   forwards it to the backup, answering only once the backup applied it; a new backup
//!   receives the whole state in bounded chunks before it counts.
//! - [`message`]: views and the messages, requests and replies of both.
//! - [`core`]: either of them as one node ([`AnyCore`]), for drivers that run what a
//!   cluster file names.
//!
//! Both are sans-IO [`crate::node::Node`]s with the same message, request and event types,
//! so one driver (the simulator, the server) runs either. Data and at-most-once entries
//! live in the replicated groups' own state ([`kv_engine::kv::KvState`] with the library's
//! at-most-once table) and move with the groups' image stream and chunked transfer.
//!
//! Persistence: the servers keep their state in memory only (what survives which failure
//! is stated in [`server`]'s module docs); the view service persists its view and the
//! view's acknowledgement, so a restarted view service resumes where it stopped
//! ([`viewservice`]'s module docs).

pub mod core;
pub mod message;
pub mod server;
pub mod viewservice;

pub use self::core::{AnyCore, Core};
pub use message::{Member, Message, PbEvent, Reply, Request, View};
pub use server::{PbServer, Role};
pub use viewservice::{Durable, RecoverError, ViewService, DEAD_PINGS, PING_INTERVAL};
