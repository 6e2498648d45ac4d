//! kv-server: the production driver for kv's protocol cores.
//!
//! This is the only crate that uses tokio. It owns each core on its own task, makes the
//! core's `persist` effects durable through the engine's group-commit writer, then sends
//! its messages over TCP and answers clients — natively (length-delimited postcard frames)
//! and over RESP, so redis-cli and every Redis client library work unchanged.

pub mod admin;
/// The cluster file (moved to `kv-client`: clients read it too).
pub use kv_client::auth;
pub use kv_client::config;
/// The native client (moved to `kv-client`; re-exported where the server's users found it).
pub use kv_client::native as client;
/// The native protocol (moved to `kv-client`).
pub use kv_client::wire;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod pb;
pub mod ports;
pub mod redis;
pub mod redis_cluster;
pub mod replica;
pub mod resp;
pub mod run;
pub mod sharded;
pub mod transport;
