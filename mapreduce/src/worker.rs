//! A worker process: asks the coordinator for tasks and runs them until told to exit.
//!
//! A task runs on a blocking thread while the connection's task sends a heartbeat every
//! `heartbeat_ms`, renewing the task's lease. A map task writes its intermediate file whole
//! (temporary name, fsync, rename); a reduce task commits its output through each
//! [`Output`]. So a task run twice — by this worker after a stall, or by another — leaves
//! one whole copy of identical output. A worker exits when the coordinator says so or its
//! connection ends: it never outlives the coordinator by more than one task.
//!
//! Each task's start and end is one line on stdout (`worker 3 started map 12 attempt 0`,
//! `worker 3 finished map 12 attempt 0`), which tests read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::app::{self, App};
use crate::coordinator::{AttemptId, Phase, WorkerId};
use crate::io::{open_input, open_output, Input, Output};
use crate::task::{self, Mapper};
use crate::wire::{self, JobSpec, Reply, Request, TaskSpec, PROTOCOL_VERSION};
use crate::{Error, Result};

/// How long a worker keeps trying to reach its coordinator at start, and then waits for
/// its welcome (a peer that accepts but never answers is not a coordinator).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The intermediate file of map task `map` in a work directory.
pub fn map_file(work_dir: &Path, map: u32) -> PathBuf {
    work_dir.join(format!("map-{map:05}"))
}

/// How a task is named in logs: `map 12 attempt 0`.
pub fn describe(attempt: AttemptId) -> String {
    let phase = match attempt.task.phase {
        Phase::Map => "map",
        Phase::Reduce => "reduce",
    };
    format!("{phase} {} attempt {}", attempt.task.index, attempt.number)
}

/// What a worker needs to run tasks of one job.
pub struct Executor {
    pub job: JobSpec,
    pub app: &'static dyn App,
    pub input: Box<dyn Input>,
    pub outputs: Vec<Box<dyn Output>>,
}

impl Executor {
    pub fn new(job: JobSpec) -> Result<Executor> {
        let app =
            app::find(&job.app).ok_or_else(|| Error::UnknownApp(job.app.clone(), app::names()))?;
        let input = open_input(&job.input)?;
        let outputs = job
            .outputs
            .iter()
            .map(open_output)
            .collect::<Result<Vec<_>>>()?;
        Ok(Executor {
            job,
            app,
            input,
            outputs,
        })
    }

    /// Runs a task and commits its output; returns the input bytes it read.
    pub fn execute(&self, task: &TaskSpec) -> Result<u64> {
        let index = task.attempt.task.index;
        match (task.attempt.task.phase, &task.split) {
            (Phase::Map, Some(split)) => {
                let mut mapper = Mapper::new(self.app, self.job.reduces);
                let bytes = self.input.read(split, &mut |document, contents| {
                    mapper.feed(document, contents)
                })?;
                let encoded = task::encode_map_output(&mapper.finish());
                crate::io::write_atomically(&map_file(&self.job.work_dir, index), &encoded)?;
                Ok(bytes)
            }
            (Phase::Reduce, None) => {
                let inputs = (0..self.job.maps)
                    .map(|map| task::read_partition(&map_file(&self.job.work_dir, map), index))
                    .collect::<Result<Vec<_>>>()?;
                let pairs = task::reduce(self.app, inputs);
                for output in &self.outputs {
                    output.commit(index, &pairs)?;
                }
                Ok(0)
            }
            _ => Err(Error::Protocol(format!(
                "{} came with the wrong input",
                describe(task.attempt)
            ))),
        }
    }
}

async fn connect(coordinator: &str) -> Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match TcpStream::connect(coordinator).await {
            Ok(stream) => {
                stream
                    .set_nodelay(true)
                    .map_err(|e| Error::io("connecting", e))?;
                return Ok(stream);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::io(format!("connecting to {coordinator}"), e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn call(stream: &mut TcpStream, request: &Request) -> Result<Reply> {
    wire::write_frame(stream, request).await?;
    wire::read_frame(stream)
        .await?
        .ok_or_else(|| Error::Protocol("the coordinator closed the connection".into()))
}

/// Runs a worker until the job is over; returns how many tasks it finished. The process
/// moves to the coordinator's working directory, so the job's relative paths name the
/// files they name there. With
/// `crash_after: Some(n)`, the process SIGKILLs itself on receiving a task after finishing
/// `n` (fault injection: the lab's worker that dies after n RPCs, holding a task).
pub async fn run(coordinator: &str, crash_after: Option<u32>) -> Result<u32> {
    let mut stream = connect(coordinator).await?;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    let welcome = tokio::time::timeout(CONNECT_TIMEOUT, call(&mut stream, &hello))
        .await
        .map_err(|_| {
            Error::Protocol(format!(
                "{coordinator} did not answer within {CONNECT_TIMEOUT:?} (is it a kv \
                 mapreduce coordinator?)"
            ))
        })?;
    let (worker, job) = match welcome? {
        Reply::Welcome { worker, job } => (worker, job),
        Reply::Refused { reason } => return Err(Error::Protocol(reason)),
        other => return Err(unexpected(&other)),
    };
    // The job's relative paths are the coordinator's: resolve them where it does.
    std::env::set_current_dir(&job.dir).map_err(|e| {
        Error::io(
            format!(
                "entering the coordinator's working directory {} (the job's relative \
                 paths are relative to it)",
                job.dir.display()
            ),
            e,
        )
    })?;
    let heartbeat = Duration::from_millis(job.heartbeat_ms.max(1));
    let executor = Arc::new(Executor::new(*job)?);
    let mut finished = 0;
    loop {
        match call(&mut stream, &Request::NextTask).await? {
            Reply::Run(task) if crash_after == Some(finished) => {
                println!(
                    "worker {} crashing holding {}",
                    worker.0,
                    describe(task.attempt)
                );
                // SAFETY: raise(3) has no memory-safety preconditions; SIGKILL ends the
                // process here, as `kill -9` from outside would.
                unsafe { libc::raise(libc::SIGKILL) };
                unreachable!("SIGKILL returned");
            }
            Reply::Run(task) => {
                run_task(&mut stream, worker, &executor, *task, heartbeat).await?;
                finished += 1;
            }
            Reply::Wait { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
            Reply::Exit => return Ok(finished),
            other => return Err(unexpected(&other)),
        }
    }
}

async fn run_task(
    stream: &mut TcpStream,
    worker: WorkerId,
    executor: &Arc<Executor>,
    task: TaskSpec,
    heartbeat: Duration,
) -> Result<()> {
    let attempt = task.attempt;
    println!("worker {} started {}", worker.0, describe(attempt));
    let executor = Arc::clone(executor);
    let mut running = tokio::task::spawn_blocking(move || executor.execute(&task));
    let result = loop {
        tokio::select! {
            joined = &mut running => break joined.expect("a task panicked"),
            _ = tokio::time::sleep(heartbeat) => {
                // A task no longer wanted still runs to the end: it cannot be interrupted
                // safely, and its output is identical to the one committed.
                call(stream, &Request::Heartbeat { attempt }).await?;
            }
        }
    };
    let report = match &result {
        Ok(input_bytes) => Request::Done {
            attempt,
            input_bytes: *input_bytes,
        },
        Err(e) => Request::Failed {
            attempt,
            reason: e.to_string(),
        },
    };
    call(stream, &report).await?;
    match result {
        Ok(_) => println!("worker {} finished {}", worker.0, describe(attempt)),
        Err(e) => println!("worker {} failed {}: {e}", worker.0, describe(attempt)),
    }
    Ok(())
}

fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}
