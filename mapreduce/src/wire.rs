//! The coordinator–worker protocol: messages and their framing, in one place.
//!
//! A worker opens one TCP connection and sends requests; the coordinator answers each in
//! order. Frame: a u32 big-endian length, then that many bytes of postcard. A frame over
//! [`FRAME_BYTES_MAX`] closes the connection. The first request is [`Request::Hello`]
//! with [`PROTOCOL_VERSION`]; a coordinator speaking another version answers
//! [`Reply::Refused`].

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::coordinator::{AttemptId, WorkerId};
use crate::io::{InputSpec, OutputSpec, Split};
use crate::{Error, Result};

pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side accepts.
pub const FRAME_BYTES_MAX: u32 = 16 << 20;

/// What every worker needs to know about the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub app: String,
    pub maps: u32,
    pub reduces: u32,
    pub input: InputSpec,
    pub outputs: Vec<OutputSpec>,
    /// Where map tasks leave intermediate files (shared by every worker).
    pub work_dir: PathBuf,
    /// The coordinator's working directory (absolute): the job's relative paths (input
    /// files, output and work directories) are relative to it, and a worker resolves
    /// them there, wherever it was started.
    pub dir: PathBuf,
    /// Send a heartbeat at least this often while running a task.
    pub heartbeat_ms: u64,
}

/// A task to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSpec {
    pub attempt: AttemptId,
    /// A map task's input (none for a reduce).
    pub split: Option<Split>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    Hello {
        version: u32,
    },
    NextTask,
    Heartbeat {
        attempt: AttemptId,
    },
    Done {
        attempt: AttemptId,
        input_bytes: u64,
    },
    Failed {
        attempt: AttemptId,
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Welcome {
        worker: WorkerId,
        job: Box<JobSpec>,
    },
    Refused {
        reason: String,
    },
    Run(Box<TaskSpec>),
    Wait {
        millis: u64,
    },
    Exit,
    /// Answer to a heartbeat: whether the task is still wanted.
    Heartbeat {
        wanted: bool,
    },
    Ack,
}

pub async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<()> {
    let bytes = postcard::to_allocvec(message).expect("encoding to memory cannot fail");
    let length = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n <= FRAME_BYTES_MAX)
        .ok_or_else(|| Error::Protocol(format!("a {}-byte message is too big", bytes.len())))?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&bytes);
    stream
        .write_all(&frame)
        .await
        .map_err(|e| Error::io("sending", e))
}

/// The next message, or `None` if the peer closed the connection between frames.
pub async fn read_frame<T: DeserializeOwned>(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("receiving", e)),
    }
    let length = u32::from_be_bytes(length);
    if length > FRAME_BYTES_MAX {
        return Err(Error::Protocol(format!("a {length}-byte frame is too big")));
    }
    let mut bytes = vec![0u8; length as usize];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|e| Error::io("receiving", e))?;
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("a frame does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &Request::Hello { version: 7 })
            .await
            .unwrap();
        let got: Request = read_frame(&mut b).await.unwrap().unwrap();
        assert!(matches!(got, Request::Hello { version: 7 }));
        a.write_all(&(FRAME_BYTES_MAX + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_frame::<Request>(&mut b).await,
            Err(Error::Protocol(_))
        ));
        drop(a);
        assert!(read_frame::<Request>(&mut b).await.unwrap().is_none());
    }
}
