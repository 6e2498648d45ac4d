//! The engine's error type. Operating conditions (IO failures, corruption found on disk, a
//! poisoned log) are values callers can match on; broken invariants panic instead.

use std::io;
use std::path::PathBuf;

/// Errors from the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An IO call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk failed validation somewhere recovery must not skip over.
    #[error("corrupt {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the bad record or header within `file`.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write or fsync failed; the log refuses all further work.
    #[error("write-ahead log is poisoned by an earlier failed write or fsync: {0}")]
    Poisoned(String),
    /// A record or argument was refused (too large, out of range, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] postcard::Error),
    /// The group-commit writer thread is gone.
    #[error("write-ahead log writer has stopped")]
    Closed,
    /// The file system has too little room for what was about to be written.
    #[error("{dir}: {needed} bytes needed, {available} available")]
    NoSpace {
        /// Where it would have been written.
        dir: PathBuf,
        /// Bytes it needs, reserve included.
        needed: u64,
        /// Bytes the file system has left.
        available: u64,
    },
    /// A snapshot was not written (no room for it, or writing its temporary file failed).
    /// Nothing else changed: the log it would have compacted is kept, its temporary file
    /// is gone, and the store goes on (this is not a poisoning failure).
    #[error("snapshot at index {index} not written, the log is kept instead: {source}")]
    SnapshotSkipped {
        /// The index the snapshot would have covered.
        index: u64,
        /// Why.
        #[source]
        source: Box<Error>,
    },
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
