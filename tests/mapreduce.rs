//! MapReduce with real processes: `kv mapreduce coordinator` and `kv mapreduce worker`
//! processes on loopback, workers killed by SIGKILL and stalled by SIGSTOP; Lab 1's three
//! tests with the lab's numbers, a stalled worker waking late, and word count and inverted
//! index through `kv mapreduce run` against references computed here — over files, and
//! with input from and output into a sharded and an unsharded cluster (`kv://`), output
//! read back over RESP; a reduce worker stalled and continued late rewrites the same
//! values into the store.
//!
//! Timeouts only catch hangs; every wait is on a condition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kv_binary, scan_walk, wait_for, Cluster, Shape};

/// Bound on one RESP call (hang guard only).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Generous bound for a whole job (hang guard only).
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// The lab's constants (`mapreduce/test_test.go`).
const N_NUMBER: u32 = 100_000;
const N_MAP: u32 = 100;
const N_REDUCE: u32 = 50;

/// A child process whose stdout lines are collected as they come.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(args: &[&str]) -> Process {
        Process::spawn_in(Path::new("."), args)
    }

    /// Spawns `kv args` with `dir` as its working directory.
    fn spawn_in(dir: &Path, args: &[&str]) -> Process {
        let mut child = Command::new(kv_binary())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kv");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Process { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn has_line(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        self.lines().into_iter().find(|l| wanted(l))
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(prefix)).count()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "signal {signal}");
    }

    /// Waits for the process to exit; returns its status.
    fn wait_exit(&mut self, what: &str) -> std::process::ExitStatus {
        wait_for(what, JOB_TIMEOUT, || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Job {
    dir: tempfile::TempDir,
    coordinator: Process,
    address: String,
}

impl Job {
    /// Starts a coordinator of a job described by `args` (`--output-dir` is added: `out`
    /// under the job's directory), and waits until it listens.
    fn start(dir: tempfile::TempDir, args: &[&str]) -> Job {
        let out = dir.path().join("out");
        let mut all = vec!["mapreduce", "coordinator", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--output-dir", out.to_str().unwrap()]);
        let coordinator = Process::spawn(&all);
        let line = wait_for("coordinator listening", JOB_TIMEOUT, || {
            coordinator.has_line(|l| l.starts_with("listening on "))
        });
        let address = line.trim_start_matches("listening on ").to_owned();
        Job {
            dir,
            coordinator,
            address,
        }
    }

    /// The lab's job: the integers 0..100,000 one per line, 100 maps, 50 reduces, the
    /// lab's test app, a 1 s lease.
    fn lab() -> Job {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("824-mrinput.txt");
        let text: String = (0..N_NUMBER).map(|i| format!("{i}\n")).collect();
        std::fs::write(&input, text).expect("write input");
        let (maps, reduces) = (N_MAP.to_string(), N_REDUCE.to_string());
        let input = input.to_str().unwrap().to_owned();
        Job::start(
            dir,
            &[
                "--app",
                "distinct",
                "--input",
                &input,
                "--maps",
                &maps,
                "--reduces",
                &reduces,
                "--lease-ms",
                "1000",
            ],
        )
    }

    fn worker(&self, extra: &[&str]) -> Process {
        let mut args = vec!["mapreduce", "worker", "--coordinator", &self.address];
        args.extend_from_slice(extra);
        Process::spawn(&args)
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn wait_done(&mut self) {
        let status = self.coordinator.wait_exit("coordinator exits");
        assert!(status.success(), "coordinator: {status}");
    }

    /// The lab's `check`: exactly 100,000 lines, line i the i-th integer in string order;
    /// and no file but the parts and the result.
    fn check(&self) {
        let result = std::fs::read_to_string(self.out().join("result")).expect("result");
        let mut expected: Vec<String> = (0..N_NUMBER).map(|i| i.to_string()).collect();
        expected.sort();
        let lines: Vec<&str> = result.lines().collect();
        assert_eq!(lines.len(), expected.len());
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("{}: ", expected[i]), "line {i}");
        }
        let mut parts = 0;
        for entry in std::fs::read_dir(self.out()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name == "result" || name.starts_with("part-"),
                "stray {name}"
            );
            parts += u32::from(name.starts_with("part-"));
        }
        assert_eq!(parts, N_REDUCE);
    }

    fn log_has(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.coordinator.has_line(wanted).is_some()
    }
}

/// The worker's id, from its first task line (`worker 3 started ...`).
fn worker_id(worker: &Process) -> String {
    let line = wait_for("worker takes a task", JOB_TIMEOUT, || {
        worker.has_line(|l| l.starts_with("worker "))
    });
    line.split(' ').nth(1).expect("worker id").to_owned()
}

#[test]
fn lab1_test_basic_two_workers() {
    let mut job = Job::lab();
    let workers = [job.worker(&[]), job.worker(&[])];
    job.wait_done();
    job.check();
    // The lab's checkWorker: every worker did some of the work.
    for worker in &workers {
        assert!(worker.count(" finished ") > 0, "{:?}", worker.lines());
    }
}

#[test]
fn lab1_test_one_failure_sigkill_holding_a_task_reissues_it() {
    let mut job = Job::lab();
    let mut dies = job.worker(&["--crash-after", "10"]);
    let lives = job.worker(&[]);
    let status = dies.wait_exit("worker crashes");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(dies.count(" finished "), 10);
    let held = dies
        .has_line(|l| l.contains(" crashing holding "))
        .expect("crash line");
    let task = held.split(" crashing holding ").nth(1).unwrap().to_owned();
    let (dead, live) = (worker_id(&dies), worker_id(&lives));
    job.wait_done();
    job.check();
    assert!(
        job.log_has(
            |l| l == format!("{task} lost on worker {dead} (worker disconnected); re-issued")
        ),
        "{task} not re-issued"
    );
    let task_name = task.split(" attempt ").next().unwrap().to_owned();
    assert!(
        job.log_has(|l| l.starts_with(&format!("{task_name} attempt "))
            && l.ends_with(&format!("done by worker {live}")))
    );
}

#[test]
fn lab1_test_many_failures_two_new_workers_every_second() {
    let mut job = Job::lab();
    let mut workers = Vec::new();
    let started = Instant::now();
    let mut next_pair = Instant::now();
    while job
        .coordinator
        .child
        .try_wait()
        .expect("try_wait")
        .is_none()
    {
        assert!(started.elapsed() < JOB_TIMEOUT, "job not done");
        if Instant::now() >= next_pair {
            workers.push(job.worker(&["--crash-after", "10"]));
            workers.push(job.worker(&["--crash-after", "10"]));
            next_pair += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    job.wait_done();
    job.check();
    assert!(job.log_has(|l| l.contains("(worker disconnected); re-issued")));
    assert!(workers.len() > 2);
}

/// Jobs [`stalled_worker_waking_late`] may start before one catches a task in flight.
const STALL_JOBS_MAX: usize = 20;

/// SIGSTOPs a worker of a job while it holds a task of `phase`, waits until another worker
/// has done that task, SIGCONTs it, and returns the job once it is done and the stale run
/// ended (for the caller to check the result). A task takes about a millisecond, so the
/// stop can land after the task is done every time until the phase is over; then the job
/// is run out and a new one started, up to [`STALL_JOBS_MAX`].
fn stalled_worker_waking_late(new_job: impl Fn() -> Job, phase: &str) -> Job {
    for _ in 0..STALL_JOBS_MAX {
        if let Some(job) = stall_in_flight(new_job(), phase) {
            return job;
        }
    }
    panic!("no task of the {phase} phase was caught in flight in {STALL_JOBS_MAX} jobs");
}

/// One try of [`stalled_worker_waking_late`]: `None` (the job run out) if the worker had
/// no task of `phase` left before a stop caught one in flight.
fn stall_in_flight(mut job: Job, phase: &str) -> Option<Job> {
    let mut stalls = job.worker(&[]);
    let helper = job.worker(&[]);
    let helper_id = worker_id(&helper);
    let stalls_id = worker_id(&stalls);
    let mut tried = 0;
    let task = loop {
        // The next task of `phase` the worker starts, or `None` once it has none left
        // (it started a task of a later phase, or exited).
        let line = wait_for("worker starts a task of the phase", JOB_TIMEOUT, || {
            let lines = stalls.lines();
            let started = lines
                .iter()
                .filter(|l| l.contains(&format!(" started {phase} ")))
                .nth(tried);
            if started.is_some() {
                return Some(started.cloned());
            }
            let over = (phase == "map" && lines.iter().any(|l| l.contains(" started reduce ")))
                || stalls.child.try_wait().expect("try_wait").is_some();
            over.then_some(None)
        });
        let Some(line) = line else {
            stalls.signal(libc::SIGCONT);
            job.wait_done();
            return None;
        };
        tried += 1;
        stalls.signal(libc::SIGSTOP);
        let task = line.split(" started ").nth(1).unwrap().to_owned();
        let name = task.split(" attempt ").next().unwrap().to_owned();
        // Either it finished before the stop (try the next one), or another worker does
        // the task once the lease lapses or a backup runs.
        let by_other = wait_for("the task is done by someone", JOB_TIMEOUT, || {
            let done = job.coordinator.lines().into_iter().find(|l| {
                l.starts_with(&format!("{name} attempt ")) && l.contains(" done by worker ")
            })?;
            Some(done.ends_with(&format!("done by worker {helper_id}")))
        });
        if by_other {
            break task;
        }
        stalls.signal(libc::SIGCONT);
    };
    stalls.signal(libc::SIGCONT);
    // The stale run ends: committed and reported late, or its report refused because the
    // coordinator is gone; either way the worker exits.
    stalls.wait_exit("stalled worker exits");
    job.wait_done();
    assert!(
        job.log_has(|l| l.starts_with(&task) && l.contains(&format!("on worker {stalls_id}")))
            || stalls.count(&format!("finished {task}")) == 1,
        "{task}: neither lost by the stalled worker nor finished by it late"
    );
    Some(job)
}

#[test]
fn a_worker_stalled_on_a_map_task_and_continued_late_does_not_corrupt_the_result() {
    stalled_worker_waking_late(Job::lab, "map").check();
}

#[test]
fn a_worker_stalled_on_a_reduce_task_and_continued_late_does_not_corrupt_the_result() {
    stalled_worker_waking_late(Job::lab, "reduce").check();
}

/// Words as the test defines them (independently of the app's code): maximal runs of
/// alphabetic characters.
fn reference_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphabetic() {
            current.push(c);
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Three documents of known text (with non-ASCII words and digits inside words), large
/// enough for several maps.
fn write_books(dir: &Path) -> Vec<(String, String)> {
    let texts = [
        "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n",
        "Café naïve Ünïcödé 東京 and ÆSIR: the end? x2y3z — the THE The\n",
        "It was the best of times, it was the worst of times; it was the age of wisdom.\n",
    ];
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = books.join(format!("book-{i}.txt"));
            let body = text.repeat(200 * (i + 1));
            std::fs::write(&path, &body).unwrap();
            (path.to_string_lossy().into_owned(), body)
        })
        .collect()
}

fn run_job(dir: &Path, app: &str) -> String {
    let out = dir.join(format!("out-{app}"));
    let pattern = dir.join("books").join("*.txt");
    let output = Command::new(kv_binary())
        .args([
            "mapreduce",
            "run",
            "--app",
            app,
            "--workers",
            "3",
            "--maps",
            "7",
        ])
        .args(["--reduces", "3", "--input", pattern.to_str().unwrap()])
        .args(["--output-dir", out.to_str().unwrap()])
        .output()
        .expect("run kv mapreduce run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("done: 7 maps, 3 reduces"), "{stdout}");
    assert!(
        stderr.contains("map 7/7 reduce 3/3"),
        "no final progress line: {stderr}"
    );
    std::fs::read_to_string(out.join("result")).expect("result")
}

fn lines(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// Word count of `(name, text)` documents, computed here: word → count.
fn word_counts(docs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, text) in docs {
        for word in reference_words(text) {
            *counts.entry(word).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// Inverted index of `(name, text)` documents, computed here: word → `N doc1,doc2`.
fn inverted_index(docs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in docs {
        for word in reference_words(text) {
            index.entry(word).or_default().insert(name.clone());
        }
    }
    index
        .into_iter()
        .map(|(word, docs)| {
            let list: Vec<String> = docs.into_iter().collect();
            (word, format!("{} {}", list.len(), list.join(",")))
        })
        .collect()
}

#[test]
fn word_count_equals_a_reference_count() {
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let counts = word_counts(&books);
    assert_eq!(counts["東京"], "400");
    assert_eq!(run_job(dir.path(), "wordcount"), lines(&counts));
}

#[test]
fn inverted_index_equals_a_reference_index() {
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let index = inverted_index(&books);
    assert!(index["the"].starts_with("3 "));
    assert_eq!(run_job(dir.path(), "invertedindex"), lines(&index));
}

#[test]
fn a_worker_started_elsewhere_resolves_relative_paths_in_the_coordinators_directory() {
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    // The documents as the coordinator lists them: relative to its directory.
    let listed: Vec<(String, String)> = books
        .iter()
        .map(|(path, text)| {
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (format!("books/{name}"), text.clone())
        })
        .collect();
    let coordinator = Process::spawn_in(
        dir.path(),
        &[
            "mapreduce",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "invertedindex",
            "--input",
            "books/*.txt",
            "--output-dir",
            "out",
            "--maps",
            "3",
            "--reduces",
            "2",
        ],
    );
    let line = wait_for("coordinator listening", JOB_TIMEOUT, || {
        coordinator.has_line(|l| l.starts_with("listening on "))
    });
    let address = line.trim_start_matches("listening on ").to_owned();
    let mut coordinator = Job {
        dir,
        coordinator,
        address,
    };
    // A worker whose own working directory has neither the books nor `out`.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut worker = Process::spawn_in(
        elsewhere.path(),
        &["mapreduce", "worker", "--coordinator", &coordinator.address],
    );
    let status = worker.wait_exit("worker exits");
    assert!(status.success(), "worker: {status}");
    coordinator.wait_done();
    let result = std::fs::read_to_string(coordinator.out().join("result")).expect("result");
    assert_eq!(result, lines(&inverted_index(&listed)));
    let stray: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert!(stray.is_empty(), "the worker wrote into its own directory");
}

#[test]
fn a_job_stopped_by_sigterm_removes_its_work_directory_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    write_books(dir.path());
    // A cluster nobody runs: the reduce tasks' output into it cannot complete, so the
    // job is still running, its map files written, when the signal comes.
    let base = kv_server::ports::free_loopback_run(3);
    let data = dir.path().join("nobody");
    let init = Command::new(kv_binary())
        .args(["init", "--groups", "0", "--replicas", "1", "--dir"])
        .arg(&data)
        .args(["--resp-port", &base.to_string()])
        .args(["--peer-port", &(base + 1).to_string()])
        .args(["--admin-port", &(base + 2).to_string()])
        .output()
        .expect("kv init");
    assert!(init.status.success(), "{init:?}");
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let mut run = Command::new(kv_binary())
        .args(["mapreduce", "run", "--workers", "2", "--maps", "3"])
        .args([
            "--input",
            "books/*.txt",
            "--output",
            "kv://wc/",
            "--cluster",
        ])
        .arg(data.join("cluster.toml"))
        .current_dir(dir.path())
        .env("TMPDIR", &temp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kv mapreduce run");
    let work_dirs = || -> Vec<PathBuf> {
        std::fs::read_dir(&temp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let work_dir = wait_for("the map files", JOB_TIMEOUT, || {
        work_dirs()
            .into_iter()
            .find(|d| (0..3).all(|map| d.join(format!("map-{map:05}")).exists()))
    });
    let workers = |parent: u32| -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // pid (comm) state ppid ...: the field after the command's closing paren.
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
            .collect()
    };
    let children = workers(run.id());
    assert_eq!(children.len(), 2, "the run's workers: {children:?}");
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_for("kv mapreduce run exits", JOB_TIMEOUT, || {
        run.try_wait().expect("try_wait")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert!(!work_dir.exists(), "{} left behind", work_dir.display());
    assert!(work_dirs().is_empty(), "{:?} left behind", work_dirs());
    for pid in children {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "worker {pid} outlived kv mapreduce run");
    }
}

#[test]
fn a_worker_pointed_at_a_peer_that_never_answers_gives_up_with_one_line() {
    // Something that accepts connections and never answers, as a server of another
    // protocol waiting for its own request does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let mut worker = Command::new(kv_binary())
        .args(["mapreduce", "worker", "--coordinator", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kv mapreduce worker");
    let status = wait_for("the worker gives up", JOB_TIMEOUT, || {
        worker.try_wait().expect("try_wait")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{address} did not answer")),
        "{stderr}"
    );
    drop(held.join().unwrap());
}

/// Puts each book into the store in pieces of 50 lines, each the key `PREFIX<file
/// name>#<piece>` (so the keys spread over the shards); returns the documents as the store
/// names them. A key outside the prefix is written too, which no job may read.
fn load_books(
    cluster: &Cluster,
    books: &[(String, String)],
    prefix: &str,
) -> Vec<(String, String)> {
    let mut connection = cluster.redis(0, IO_TIMEOUT);
    let _: () = redis::cmd("SET")
        .arg("elsewhere/decoy")
        .arg("decoy words never read")
        .query(&mut connection)
        .unwrap();
    let mut docs = Vec::new();
    for (path, text) in books {
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (piece, chunk) in lines.chunks(50).enumerate() {
            let key = format!("{prefix}{name}#{piece:03}");
            let body: String = chunk.concat();
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(&body)
                .query(&mut connection)
                .unwrap();
            docs.push((key, body));
        }
    }
    assert!(docs.len() > 20, "{} pieces", docs.len());
    docs
}

/// The store's keys under `prefix` (without it) and their values, read back over RESP: a
/// SCAN walk, then MGET.
fn store_contents(cluster: &Cluster, prefix: &str) -> BTreeMap<String, String> {
    let mut connection = cluster.redis(1, IO_TIMEOUT);
    let keys: BTreeSet<String> = scan_walk(&mut connection, &format!("{prefix}*"), 100)
        .into_iter()
        .collect();
    let keys: Vec<String> = keys.into_iter().collect();
    let mut contents = BTreeMap::new();
    for chunk in keys.chunks(1000) {
        let values: Vec<String> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut connection)
            .unwrap();
        for (key, value) in chunk.iter().zip(values) {
            contents.insert(key[prefix.len()..].to_owned(), value);
        }
    }
    contents
}

/// Runs `kv mapreduce run` on `cluster` with `args` and 3 workers; its stdout.
fn run_store_job(cluster: &Cluster, args: &[&str]) -> String {
    let output = Command::new(kv_binary())
        .args(["mapreduce", "run", "--workers", "3", "--reduces", "3"])
        .args(args)
        .arg("--cluster")
        .arg(&cluster.path)
        .output()
        .expect("run kv mapreduce run");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn word_count_and_inverted_index_from_files_and_from_the_store_into_the_store_equal_references() {
    let cluster = Cluster::start_sharded(
        3,
        Shape {
            replicas: 3,
            groups: 3,
            shards: 16,
            redis_cluster: false,
            mode: kv_server::config::Mode::Paxos,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let docs = load_books(&cluster, &books, "books/");
    let pattern = dir.path().join("books").join("*.txt");

    // Files in, the store out.
    let args = [
        "--input",
        pattern.to_str().unwrap(),
        "--output",
        "kv://wc-files/",
    ];
    run_store_job(&cluster, &args);
    assert_eq!(store_contents(&cluster, "wc-files/"), word_counts(&books));

    // The store in (5 maps over key ranges of the 16 shards), the store and files out.
    let out = dir.path().join("out");
    let args = [
        "--input",
        "kv://books/",
        "--maps",
        "5",
        "--output",
        "kv://wc/",
    ];
    let stdout = run_store_job(
        &cluster,
        &[&args[..], &["--output-dir", out.to_str().unwrap()]].concat(),
    );
    assert!(stdout.contains("done: 5 maps, 3 reduces"), "{stdout}");
    let counts = word_counts(&docs);
    assert_eq!(store_contents(&cluster, "wc/"), counts);
    assert_eq!(
        std::fs::read_to_string(out.join("result")).unwrap(),
        lines(&counts)
    );

    // The inverted index names the documents by their keys.
    run_store_job(
        &cluster,
        &[
            "--app",
            "invertedindex",
            "--input",
            "kv://books/",
            "--output",
            "kv://ii/",
        ],
    );
    let index = inverted_index(&docs);
    assert!(index["the"].starts_with(&format!("{} books/book-0.txt#000,", docs.len())));
    assert_eq!(store_contents(&cluster, "ii/"), index);
    cluster.assert_no_panic();
}

#[test]
fn mapreduce_reads_and_writes_the_store_of_an_unsharded_cluster() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let docs = load_books(&cluster, &books, "books/");
    run_store_job(
        &cluster,
        &[
            "--input",
            "kv://books/",
            "--maps",
            "4",
            "--output",
            "kv://wc/",
        ],
    );
    assert_eq!(store_contents(&cluster, "wc/"), word_counts(&docs));
}

#[test]
fn a_reduce_worker_stalled_and_continued_late_leaves_the_store_output_exact() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let mut docs = load_books(&cluster, &books, "books/");
    // Tens of thousands of distinct words, so every reduce task commits thousands of keys
    // (several batches of puts) and a stop lands while one runs.
    let word = |mut i: u32| -> String {
        let mut word = String::from("w");
        loop {
            word.push(char::from(b'a' + (i % 26) as u8));
            i /= 26;
            if i == 0 {
                return word;
            }
        }
    };
    let vocabulary: String = (0..60_000).map(|i| word(i) + " ").collect();
    let mut connection = cluster.redis(0, IO_TIMEOUT);
    let _: () = redis::cmd("SET")
        .arg("books/vocabulary")
        .arg(&vocabulary)
        .query(&mut connection)
        .unwrap();
    docs.push(("books/vocabulary".into(), vocabulary));
    let path = cluster.path.to_str().unwrap().to_owned();
    let job = Job::start(
        dir,
        &[
            "--app",
            "wordcount",
            "--input",
            "kv://books/",
            "--output",
            "kv://late/",
            "--cluster",
            &path,
            "--maps",
            "4",
            "--reduces",
            "10",
            "--lease-ms",
            "1000",
        ],
    );
    // The stale run commits its task's counts again after another worker did: puts of
    // the same values, so nothing doubles.
    let job = stall_in_flight(job, "reduce").expect("a reduce task caught in flight");
    let counts = word_counts(&docs);
    assert_eq!(store_contents(&cluster, "late/"), counts);
    let result = std::fs::read_to_string(job.out().join("result")).unwrap();
    assert_eq!(result, lines(&counts));
}
