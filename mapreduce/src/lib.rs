//! kv-mapreduce: MapReduce (Lab 1) as batch processes beside the store.
//!
//! A coordinator hands map and reduce tasks to worker processes over TCP, re-issues the
//! tasks of workers that die or stall, runs backup attempts of the slowest tasks near the
//! end of a phase, and reports progress. Layers, each in its module:
//!
//! - [`coordinator`]: the scheduling core, sans IO (leases on `now`); [`sim`] drives it
//!   from seeds with crashing and stalling workers.
//! - [`app`]: the [`app::App`] trait (map, reduce, combine) and the apps.
//! - [`task`]: what a map or reduce task computes, and the intermediate file format.
//! - [`io`]: the input and output seam ([`io::Input`], [`io::Output`]) and its file backend;
//!   [`store`]: its store backend (`kv://PREFIX`: input by scans, output by puts).
//! - [`wire`]: the coordinator–worker messages and framing.
//! - [`server`] and [`worker`]: the coordinator and worker processes.
//! - [`cli`]: `kv mapreduce ...` (run, coordinator, worker, bench).
//!
//! Failure model: workers may die (SIGKILL), stall (SIGSTOP) or join at any time; a task may
//! therefore run more than once, and every run's output is committed whole under the
//! task's name (see [`io`]), so the result holds each task's output exactly once. Apps must
//! be deterministic. The coordinator keeps nothing durable: if it dies, the job is run
//! again from the start.

pub mod app;
pub mod bench;
pub mod cli;
pub mod coordinator;
pub mod io;
pub mod server;
pub mod sim;
pub mod store;
pub mod task;
pub mod wire;
pub mod worker;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("unknown app {0:?} (apps: {1})")]
    UnknownApp(String, String),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("job failed: {0}")]
    JobFailed(String),
    #[error("the store: {0}")]
    Store(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
