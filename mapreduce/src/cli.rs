//! `kv mapreduce ...`: run a job with local workers, or run its parts separately.
//!
//! `run` starts a coordinator in this process and `--workers` worker processes (this same
//! executable, `mapreduce worker`), shows a progress line on stderr and prints a summary.
//! `coordinator` and `worker` run the parts on their own, so workers can run anywhere that
//! sees the same input files and work directory; workers may join at any time.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::coordinator::Progress;
use crate::io::{InputSpec, OutputSpec};
use crate::server::{event_line, summary_lines, Job, JobSetup, Observer, Summary};
use crate::{app, Error, Result};

/// The output directory when neither `--output` nor `--output-dir` is given.
pub const OUTPUT_DIR_DEFAULT: &str = "mr-out";

/// How long `run` waits for its workers to exit once the job is over.
const WORKER_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct MapReduceArgs {
    #[command(subcommand)]
    command: MapReduceCommand,
}

#[derive(clap::Subcommand)]
enum MapReduceCommand {
    /// Run a job: a coordinator here and local worker processes, with a progress line.
    Run {
        #[command(flatten)]
        job: JobArgs,
        /// Worker processes to start.
        #[arg(long, default_value_t = 4)]
        workers: u32,
    },
    /// Coordinate a job for workers that connect to ADDR; exits when the job is done.
    Coordinator {
        /// Address to listen on (port 0 picks one; the first line printed names it).
        #[arg(long)]
        listen: String,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Run tasks for a coordinator until its job is done.
    Worker {
        /// The coordinator's address.
        #[arg(long)]
        coordinator: String,
        /// Fault injection for tests: SIGKILL this process on receiving a task after
        /// finishing this many (the lab's worker that dies after N RPCs).
        #[arg(long)]
        crash_after: Option<u32>,
    },
    /// Word count over generated text with 1, 2 and 4 workers, beside a one-process loop.
    Bench(crate::bench::BenchArgs),
}

#[derive(clap::Args, Clone)]
pub struct JobArgs {
    /// The app: wordcount, invertedindex or distinct (the lab's test job).
    #[arg(long, default_value = "wordcount")]
    pub app: String,
    /// Input files or patterns (`books/*.txt`; wildcards in the file name), or every key
    /// under a prefix of the store (`kv://PREFIX`: each key a document).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<String>,
    /// Map tasks (default: one per 8 MiB of input).
    #[arg(long)]
    pub maps: Option<u32>,
    /// Reduce tasks.
    #[arg(long, default_value_t = 8)]
    pub reduces: u32,
    /// Output into the store: each output key `K` as the key `PREFIX` + `K`
    /// (kv://PREFIX).
    #[arg(long)]
    pub output: Option<String>,
    /// The cluster file of the store that kv:// input and output name (workers read it
    /// too, at its absolute path).
    #[arg(long, default_value = "./kv-data/cluster.toml")]
    pub cluster: PathBuf,
    /// Output directory: part-NNNNN per reduce and the merged `result` (default: mr-out
    /// when --output is not given).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// A task whose worker sends no heartbeat for this long is re-issued.
    #[arg(long, default_value_t = 5000)]
    pub lease_ms: u64,
    /// Directory for intermediate files, seen by every worker (default: a fresh one under
    /// the system's temp directory, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

impl JobArgs {
    pub fn setup(&self) -> Result<JobSetup> {
        if app::find(&self.app).is_none() {
            return Err(Error::UnknownApp(self.app.clone(), app::names()));
        }
        let default_dir = PathBuf::from(OUTPUT_DIR_DEFAULT);
        let output_dir = match (&self.output, &self.output_dir) {
            (None, None) => Some(&default_dir),
            (_, dir) => dir.as_ref(),
        };
        Ok(JobSetup {
            app: self.app.clone(),
            input: InputSpec::parse(&self.input, &self.cluster)?,
            outputs: OutputSpec::parse(
                self.output.as_deref(),
                output_dir.map(|d| d.as_path()),
                &self.cluster,
            )?,
            maps: self.maps,
            reduces: self.reduces,
            lease: Duration::from_millis(self.lease_ms.max(1)),
            work_dir: self.work_dir.clone(),
        })
    }
}

pub fn run(args: MapReduceArgs) -> Result<()> {
    match args.command {
        MapReduceCommand::Run { job, workers } => {
            let summary = run_local(job.setup()?, workers, true)?;
            for line in summary_lines(&summary) {
                println!("{line}");
            }
            Ok(())
        }
        MapReduceCommand::Coordinator { listen, job } => coordinate(&listen, job.setup()?),
        MapReduceCommand::Worker {
            coordinator,
            crash_after,
        } => {
            let finished =
                current_thread()?.block_on(crate::worker::run(&coordinator, crash_after))?;
            println!("worker exiting after {finished} tasks");
            Ok(())
        }
        MapReduceCommand::Bench(args) => crate::bench::run(args),
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))
}

fn coordinate(listen: &str, setup: JobSetup) -> Result<()> {
    let observer: Observer = Arc::new(|event| println!("{}", event_line(event)));
    let job = Job::prepare(setup, observer)?;
    let summary = current_thread()?.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("listening", e))?;
        println!("listening on {address}");
        let stop = stop_signal()?;
        tokio::select! {
            summary = job.serve(listener) => summary,
            name = stop => Err(Error::JobFailed(format!("stopped by {name}"))),
        }
    })?;
    for line in summary_lines(&summary) {
        println!("{line}");
    }
    Ok(())
}

/// Runs a job with a coordinator in this process and `workers` local worker processes;
/// with `show`, a progress line on stderr.
pub fn run_local(setup: JobSetup, workers: u32, show: bool) -> Result<Summary> {
    if workers == 0 {
        return Err(Error::Input("--workers must be at least 1".into()));
    }
    let job = Job::prepare(setup, Arc::new(|_| {}))?;
    let runtime = current_thread()?;
    let mut children = Vec::new();
    let mut stopped = false;
    let result = runtime.block_on(async {
        let stop = stop_signal()?;
        tokio::pin!(stop);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("listening on loopback", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("listening", e))?;
        for _ in 0..workers {
            children.push(spawn_worker(&address.to_string())?);
        }
        let mut display = Display::new(show);
        let serve = job.serve(listener);
        tokio::pin!(serve);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                summary = &mut serve => {
                    display.update(&job, true);
                    break summary;
                }
                name = &mut stop => {
                    display.update(&job, true);
                    stopped = true;
                    break Err(Error::JobFailed(format!("stopped by {name}")));
                }
                _ = tick.tick() => {
                    display.update(&job, false);
                    let exited = |c: &mut Child| c.try_wait().is_ok_and(|s| s.is_some());
                    if !job.is_over() && children.iter_mut().all(exited) {
                        display.update(&job, true);
                        break Err(Error::JobFailed("every worker exited".into()));
                    }
                }
            }
        }
    });
    if stopped {
        // The workers' tasks are of no use now: end them rather than wait.
        for child in &mut children {
            let _ = child.kill();
        }
    }
    reap(&mut children);
    // Dropping the job removes its intermediate files, on a signal too.
    result
}

/// Resolves to the signal's name once SIGINT or SIGTERM arrives, so that a job stopped by
/// Ctrl-C or `kill` ends as a failed one does: its workers gone and its work directory
/// removed (the default action would leave the intermediate files behind).
fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind| signal(kind).map_err(|e| Error::io("installing a signal handler", e));
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

fn spawn_worker(coordinator: &str) -> Result<Child> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    Command::new(exe)
        .args(["mapreduce", "worker", "--coordinator", coordinator])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io("starting a worker process", e))
}

/// Waits for workers to exit (they are told to), killing any still there after a while.
fn reap(children: &mut [Child]) {
    let deadline = Instant::now() + WORKER_EXIT_TIMEOUT;
    for child in children {
        while child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// The progress line: redrawn in place on a terminal, else a line at most every second.
struct Display {
    show: bool,
    terminal: bool,
    last_line: String,
    last_print: Option<Instant>,
}

impl Display {
    fn new(show: bool) -> Display {
        Display {
            show,
            terminal: std::io::stderr().is_terminal(),
            last_line: String::new(),
            last_print: None,
        }
    }

    fn update(&mut self, job: &Job, last: bool) {
        if !self.show {
            return;
        }
        let (progress, total_bytes, elapsed) = job.progress();
        let line = progress_line(&progress, total_bytes, elapsed);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let due = self
                .last_print
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if (due && line != self.last_line) || last {
                let _ = writeln!(err, "{line}");
                self.last_print = Some(Instant::now());
                self.last_line = line;
            }
        }
        let _ = err.flush();
    }
}

/// `[#####.....] map 37/100 reduce 0/50 12.3/200.0 MB 45.1 MB/s ETA 4 s re-issued 1 ...`
pub fn progress_line(progress: &Progress, total_bytes: u64, elapsed: Duration) -> String {
    const BAR_WIDTH: usize = 20;
    let p = progress;
    let tasks = f64::from(p.maps + p.reduces);
    let fraction = f64::from(p.maps_done + p.reduces_done) / tasks;
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = p.bytes_done as f64 / seconds;
    let eta = if p.maps_done < p.maps {
        let left = total_bytes.saturating_sub(p.bytes_done) as f64;
        (rate > 0.0).then(|| left / rate)
    } else {
        let start = p.reduce_phase.0.unwrap_or_default().as_secs_f64();
        let per_task = (seconds - start) / f64::from(p.reduces_done.max(1));
        (p.reduces_done > 0).then(|| per_task * f64::from(p.reduces - p.reduces_done))
    };
    let eta = eta.map_or("?".to_owned(), |s| format!("{s:.0} s"));
    format!(
        "[{}{}] map {}/{} reduce {}/{} {:.1}/{:.1} MB {:.1} MB/s ETA {eta} re-issued {} backups {} workers {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        p.maps_done,
        p.maps,
        p.reduces_done,
        p.reduces,
        p.bytes_done as f64 / 1e6,
        total_bytes as f64 / 1e6,
        rate / 1e6,
        p.reissued,
        p.backups,
        p.workers
    )
}
