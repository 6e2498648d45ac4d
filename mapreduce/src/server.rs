//! The coordinator process: the scheduling core behind a TCP listener.
//!
//! [`Job::prepare`] plans the splits and makes the work directory; [`Job::serve`] accepts
//! workers on a bound listener (tests bind port 0), answers each connection's requests by
//! calling the core under one lock, expires leases on a timer, and once every reduce is
//! committed runs the outputs' `finish` (the merge) and returns a [`Summary`]. A worker
//! whose connection ends is disconnected in the core at once, so a killed worker's task is
//! re-issued without waiting out its lease. The work directory's intermediate files are
//! removed at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::coordinator::{Assignment, Config, Coordinator, Event, Lost, Phase, Progress};
use crate::io::{open_input, open_output, InputSpec, OutputSpec, Split};
use crate::wire::{self, JobSpec, Reply, Request, TaskSpec, PROTOCOL_VERSION};
use crate::worker::{describe, map_file};
use crate::{app, Error, Result};

/// How long an idle worker waits before asking again.
pub const WAIT_MILLIS: u64 = 50;

/// How long a finished coordinator waits for connected workers to hear `Exit`.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Failed attempts of one task that fail the job.
pub const TASK_FAILURES_MAX: u32 = 4;

/// What to run.
#[derive(Clone, Debug)]
pub struct JobSetup {
    pub app: String,
    pub input: InputSpec,
    pub outputs: Vec<OutputSpec>,
    /// Map tasks (`None`: one per [`crate::io::SPLIT_BYTES_DEFAULT`] of input).
    pub maps: Option<u32>,
    pub reduces: u32,
    pub lease: Duration,
    /// Where intermediate files go (`None`: a fresh directory under the system's temp).
    pub work_dir: Option<PathBuf>,
}

/// How a job ended.
#[derive(Clone, Debug)]
pub struct Summary {
    pub progress: Progress,
    pub input_bytes: u64,
    pub elapsed: Duration,
    /// Time spent in the outputs' `finish` (the merge of part files).
    pub finish: Duration,
}

impl Summary {
    pub fn map_time(&self) -> Duration {
        span(self.progress.map_phase)
    }

    pub fn reduce_time(&self) -> Duration {
        span(self.progress.reduce_phase)
    }
}

fn span((start, end): (Option<Duration>, Option<Duration>)) -> Duration {
    match (start, end) {
        (Some(start), Some(end)) => end.saturating_sub(start),
        _ => Duration::ZERO,
    }
}

/// Called with each event of the core, under its lock: keep it short.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

struct Shared {
    epoch: Instant,
    core: Mutex<Coordinator>,
    job: JobSpec,
    splits: Vec<Split>,
    input_bytes: u64,
    observer: Observer,
    over: watch::Sender<bool>,
    connected: watch::Sender<u32>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs `f` on the core, then reports its events and whether the job is over.
    fn with_core<T>(&self, f: impl FnOnce(&mut Coordinator, Duration, &mut Vec<Event>) -> T) -> T {
        let mut events = Vec::new();
        let mut core = self.core.lock().expect("core lock");
        let result = f(&mut core, self.now(), &mut events);
        for event in &events {
            (self.observer)(event);
        }
        if core.phase().is_none() {
            self.over.send_replace(true);
        }
        result
    }
}

/// A job being coordinated.
pub struct Job {
    shared: Arc<Shared>,
    owns_work_dir: bool,
}

impl Job {
    /// Plans the job: checks the app, cuts the input, prepares outputs and the work dir.
    pub fn prepare(setup: JobSetup, observer: Observer) -> Result<Job> {
        if app::find(&setup.app).is_none() {
            return Err(Error::UnknownApp(setup.app, app::names()));
        }
        if setup.reduces == 0 || setup.maps == Some(0) {
            return Err(Error::Input(
                "a job needs at least one map and one reduce".into(),
            ));
        }
        let planned = open_input(&setup.input)?.plan(setup.maps)?;
        for output in &setup.outputs {
            open_output(output)?;
        }
        let owns_work_dir = setup.work_dir.is_none();
        let work_dir = setup.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "kv-mapreduce-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ))
        });
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| Error::io(format!("creating {}", work_dir.display()), e))?;
        let dir =
            std::env::current_dir().map_err(|e| Error::io("finding the working directory", e))?;
        let maps = planned.len() as u32;
        let config = Config {
            maps,
            reduces: setup.reduces,
            lease: setup.lease,
            failures_max: TASK_FAILURES_MAX,
        };
        let job = JobSpec {
            app: setup.app,
            maps,
            reduces: setup.reduces,
            input: setup.input,
            outputs: setup.outputs,
            work_dir,
            dir,
            heartbeat_ms: (setup.lease.as_millis() as u64 / 4).max(1),
        };
        let shared = Shared {
            epoch: Instant::now(),
            core: Mutex::new(Coordinator::new(config, Duration::ZERO)),
            input_bytes: planned.iter().map(|(_, bytes)| bytes).sum(),
            splits: planned.into_iter().map(|(split, _)| split).collect(),
            job,
            observer,
            over: watch::Sender::new(false),
            connected: watch::Sender::new(0),
        };
        Ok(Job {
            shared: Arc::new(shared),
            owns_work_dir,
        })
    }

    /// Progress so far, the job's input bytes, and the time since it started.
    pub fn progress(&self) -> (Progress, u64, Duration) {
        let progress = self.shared.core.lock().expect("core lock").progress();
        (progress, self.shared.input_bytes, self.shared.now())
    }

    /// Serves workers on `listener` until the job is over; then finishes the outputs.
    pub async fn serve(&self, listener: TcpListener) -> Result<Summary> {
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&self.shared)));
        let ticker = tokio::spawn(expire_loop(Arc::clone(&self.shared)));
        let mut over = self.shared.over.subscribe();
        let _ = over.wait_for(|over| *over).await;
        ticker.abort();
        let result = self.finish().await;
        // Let connected workers ask once more and hear Exit.
        let mut connected = self.shared.connected.subscribe();
        let _ = tokio::time::timeout(EXIT_GRACE, connected.wait_for(|n| *n == 0)).await;
        accept.abort();
        result
    }

    /// Whether the job is over (done or failed).
    pub fn is_over(&self) -> bool {
        *self.shared.over.borrow()
    }

    async fn finish(&self) -> Result<Summary> {
        let shared = Arc::clone(&self.shared);
        let (progress, failure) = {
            let core = shared.core.lock().expect("core lock");
            (core.progress(), core.failure().map(String::from))
        };
        if let Some(reason) = failure {
            return Err(Error::JobFailed(reason));
        }
        let started = Instant::now();
        let job = shared.job.clone();
        tokio::task::spawn_blocking(move || {
            for output in &job.outputs {
                open_output(output)?.finish(job.reduces)?;
            }
            Ok::<_, Error>(())
        })
        .await
        .expect("finishing panicked")?;
        Ok(Summary {
            progress,
            input_bytes: shared.input_bytes,
            elapsed: shared.now(),
            finish: started.elapsed(),
        })
    }
}

impl Drop for Job {
    /// Removes the intermediate files, however the job ended.
    fn drop(&mut self) {
        let work_dir = &self.shared.job.work_dir;
        for map in 0..self.shared.job.maps {
            let _ = std::fs::remove_file(map_file(work_dir, map));
        }
        if self.owns_work_dir {
            let _ = std::fs::remove_dir_all(work_dir);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    shared.connected.send_modify(|n| *n += 1);
                    let _ = serve_worker(stream, &shared).await;
                    shared.connected.send_modify(|n| *n -= 1);
                });
            }
            // Out of descriptors or the like: back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn expire_loop(shared: Arc<Shared>) {
    let period = Duration::from_millis(shared.job.heartbeat_ms.clamp(10, 1000));
    loop {
        tokio::time::sleep(period).await;
        shared.with_core(|core, now, out| core.expire(now, out));
    }
}

async fn serve_worker(mut stream: TcpStream, shared: &Shared) -> Result<()> {
    match wire::read_frame(&mut stream).await? {
        Some(Request::Hello {
            version: PROTOCOL_VERSION,
        }) => {}
        Some(Request::Hello { version }) => {
            let reason =
                format!("protocol version {version}; this coordinator speaks {PROTOCOL_VERSION}");
            return wire::write_frame(&mut stream, &Reply::Refused { reason }).await;
        }
        _ => return Err(Error::Protocol("expected Hello".into())),
    }
    let worker = shared.with_core(|core, _, out| core.join(out));
    let welcome = Reply::Welcome {
        worker,
        job: Box::new(shared.job.clone()),
    };
    let served = async {
        wire::write_frame(&mut stream, &welcome).await?;
        while let Some(request) = wire::read_frame(&mut stream).await? {
            let reply = answer(shared, worker, request);
            wire::write_frame(&mut stream, &reply).await?;
        }
        Ok(())
    }
    .await;
    shared.with_core(|core, now, out| core.disconnect(now, worker, out));
    served
}

fn answer(shared: &Shared, worker: crate::coordinator::WorkerId, request: Request) -> Reply {
    match request {
        Request::Hello { .. } => Reply::Refused {
            reason: "Hello twice".into(),
        },
        Request::NextTask => {
            match shared.with_core(|core, now, out| core.request(now, worker, out)) {
                Assignment::Run(attempt) => Reply::Run(Box::new(TaskSpec {
                    attempt,
                    split: (attempt.task.phase == Phase::Map)
                        .then(|| shared.splits[attempt.task.index as usize].clone()),
                })),
                Assignment::Wait => Reply::Wait {
                    millis: WAIT_MILLIS,
                },
                Assignment::Exit => Reply::Exit,
            }
        }
        Request::Heartbeat { attempt } => Reply::Heartbeat {
            wanted: shared.with_core(|core, now, _| core.heartbeat(now, worker, attempt)),
        },
        Request::Done {
            attempt,
            input_bytes,
        } => {
            shared
                .with_core(|core, now, out| core.complete(now, worker, attempt, input_bytes, out));
            Reply::Ack
        }
        Request::Failed { attempt, reason } => {
            shared.with_core(|core, now, out| core.fail(now, worker, attempt, &reason, out));
            Reply::Ack
        }
    }
}

/// One line for an event, as the coordinator prints it.
pub fn event_line(event: &Event) -> String {
    match event {
        Event::Joined(worker) => format!("worker {} joined", worker.0),
        Event::Issued {
            attempt,
            worker,
            backup,
        } => format!(
            "{} issued to worker {}{}",
            describe(*attempt),
            worker.0,
            if *backup { " (backup)" } else { "" }
        ),
        Event::Lost {
            attempt,
            worker,
            why,
            reissue,
        } => {
            let why = match why {
                Lost::LeaseExpired => "lease expired",
                Lost::Disconnected => "worker disconnected",
                Lost::Failed => "failed",
            };
            let then = if *reissue { "; re-issued" } else { "" };
            format!(
                "{} lost on worker {} ({why}){then}",
                describe(*attempt),
                worker.0
            )
        }
        Event::Completed { attempt, worker } => {
            format!("{} done by worker {}", describe(*attempt), worker.0)
        }
        Event::Duplicate { attempt, worker } => format!(
            "{} done again by worker {} (ignored)",
            describe(*attempt),
            worker.0
        ),
        Event::PhaseDone(Phase::Map) => "map phase done".into(),
        Event::PhaseDone(Phase::Reduce) => "reduce phase done".into(),
        Event::JobDone => "job done".into(),
        Event::JobFailed(reason) => format!("job failed: {reason}"),
    }
}

/// The summary's lines.
pub fn summary_lines(summary: &Summary) -> Vec<String> {
    let p = &summary.progress;
    let seconds = summary.elapsed.as_secs_f64();
    let mb = summary.input_bytes as f64 / 1e6;
    vec![
        format!(
            "done: {} maps, {} reduces, {:.1} MB in {:.2} s ({:.1} MB/s)",
            p.maps,
            p.reduces,
            mb,
            seconds,
            mb / seconds.max(1e-9)
        ),
        format!(
            "phases: map {:.2} s, reduce {:.2} s, merge {:.2} s",
            summary.map_time().as_secs_f64(),
            summary.reduce_time().as_secs_f64(),
            summary.finish.as_secs_f64()
        ),
        format!(
            "tasks re-issued: {}, backup attempts: {}",
            p.reissued, p.backups
        ),
    ]
}
