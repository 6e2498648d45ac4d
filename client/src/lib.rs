//! kv-client: how programs talk to a kv cluster natively — the wire format ([`wire`]:
//! length-delimited postcard frames, with their limits), the handshake by which both ends
//! of a connection prove they know the cluster secret ([`auth`]), and the native client
//! ([`native`]: one at-most-once identity driving the replication library's clerk over
//! TCP). The server speaks the same format; the CLI, the load generator and batch jobs use
//! the client, and none of them needs the server to do so. [`any::AnyClient`] is a client
//! of either kind of cluster, as the cluster file says.

pub mod any;
pub mod auth;
pub mod config;
pub mod native;
pub mod sharded;
pub mod wire;

pub use native::{random_client_id, Client, ClientError, ClientOptions, PrimaryBackup, Protocol};
