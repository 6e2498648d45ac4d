//! MapReduce with real processes: `kv mapreduce coordinator` and `kv mapreduce worker`
//! processes on loopback, workers killed by SIGKILL and stalled by SIGSTOP; Lab 1's three
//! tests with the lab's numbers, a stalled worker waking late, and word count and inverted
//! index through `kv mapreduce run` against references computed here.
//!
//! Timeouts only catch hangs; every wait is on a condition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kv_binary, wait_for};

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
        let mut child = Command::new(kv_binary())
            .args(args)
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
    /// The lab's job: the integers 0..100,000 one per line, 100 maps, 50 reduces, the
    /// lab's test app, a 1 s lease.
    fn lab() -> Job {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("824-mrinput.txt");
        let text: String = (0..N_NUMBER).map(|i| format!("{i}\n")).collect();
        std::fs::write(&input, text).expect("write input");
        let (maps, reduces) = (N_MAP.to_string(), N_REDUCE.to_string());
        let out = dir.path().join("out");
        let coordinator = Process::spawn(&[
            "mapreduce",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "distinct",
            "--input",
            input.to_str().unwrap(),
            "--maps",
            &maps,
            "--reduces",
            &reduces,
            "--lease-ms",
            "1000",
            "--output-dir",
            out.to_str().unwrap(),
        ]);
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

/// SIGSTOPs a worker while it holds a task of `phase`, waits until another worker has done
/// that task, SIGCONTs it, and checks the result once it has finished its stale run.
fn stalled_worker_waking_late(phase: &str) {
    let mut job = Job::lab();
    let mut stalls = job.worker(&[]);
    let helper = job.worker(&[]);
    let helper_id = worker_id(&helper);
    let stalls_id = worker_id(&stalls);
    let mut tried = 0;
    let task = loop {
        // The next task of `phase` the worker starts.
        let line = wait_for("worker starts a task of the phase", JOB_TIMEOUT, || {
            stalls
                .lines()
                .into_iter()
                .filter(|l| l.contains(&format!(" started {phase} ")))
                .nth(tried)
        });
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
    job.check();
}

#[test]
fn a_worker_stalled_on_a_map_task_and_continued_late_does_not_corrupt_the_result() {
    stalled_worker_waking_late("map");
}

#[test]
fn a_worker_stalled_on_a_reduce_task_and_continued_late_does_not_corrupt_the_result() {
    stalled_worker_waking_late("reduce");
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

fn lines(map: BTreeMap<String, String>) -> String {
    map.into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

#[test]
fn word_count_equals_a_reference_count() {
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, text) in &books {
        for word in reference_words(text) {
            *counts.entry(word).or_default() += 1;
        }
    }
    assert_eq!(counts["東京"], 400);
    let expected = lines(
        counts
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
    );
    assert_eq!(run_job(dir.path(), "wordcount"), expected);
}

#[test]
fn inverted_index_equals_a_reference_index() {
    let dir = tempfile::tempdir().unwrap();
    let books = write_books(dir.path());
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &books {
        for word in reference_words(text) {
            index.entry(word).or_default().insert(path.clone());
        }
    }
    assert_eq!(index["the"].len(), 3);
    let expected = lines(
        index
            .into_iter()
            .map(|(word, docs)| {
                let list: Vec<String> = docs.into_iter().collect();
                (word, format!("{} {}", list.len(), list.join(",")))
            })
            .collect(),
    );
    assert_eq!(run_job(dir.path(), "invertedindex"), expected);
}
