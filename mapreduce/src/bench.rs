//! `kv mapreduce bench`: word count over generated text, beside a one-process loop.
//!
//! Generates `--mb` MB of text (words drawn with a skewed distribution from a fixed
//! vocabulary, seeded, so every run reads the same bytes), then in the same run times a
//! plain loop that counts words in one process and writes the same `key: value` output,
//! and the MapReduce job with each `--workers` count. Each job's result must equal the
//! loop's byte for byte. Reports MB/s and the time of each phase.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::app::words;
use crate::cli::run_local;
use crate::io::{InputSpec, OutputSpec, RESULT_FILE};
use crate::server::JobSetup;
use crate::{Error, Result};
use kv_replication::rng::Rng;

const FILES: u32 = 16;
const VOCABULARY: usize = 50_000;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Megabytes (10^6 bytes) of text to generate.
    #[arg(long, default_value_t = 200)]
    pub mb: u64,
    /// Directory for the input (kept for the next run) and the outputs.
    #[arg(long, default_value = "mr-bench")]
    pub dir: PathBuf,
    /// Worker counts to run the job with.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<u32>,
    /// Map tasks (default: one per 8 MiB).
    #[arg(long)]
    pub maps: Option<u32>,
    /// Reduce tasks.
    #[arg(long, default_value_t = 8)]
    pub reduces: u32,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let input_dir = args.dir.join(format!("input-{}mb", args.mb));
    let generated = Instant::now();
    let files = generate(&input_dir, args.mb * 1_000_000)?;
    println!(
        "input: {} files, {} MB in {} ({:.1} s to make or find)",
        files.len(),
        args.mb,
        input_dir.display(),
        generated.elapsed().as_secs_f64()
    );
    let mb = args.mb as f64;
    let baseline_dir = args.dir.join("out-loop");
    let started = Instant::now();
    let expected = count_in_one_process(&files, &baseline_dir)?;
    let loop_time = started.elapsed();
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "run", "total s", "MB/s", "map s", "reduce s", "merge s", "vs loop"
    );
    println!(
        "{:<22} {:>8.2} {:>8.1} {:>8} {:>8} {:>8} {:>8}",
        "one-process loop",
        loop_time.as_secs_f64(),
        mb / loop_time.as_secs_f64(),
        "-",
        "-",
        "-",
        "1.00"
    );
    for &workers in &args.workers {
        let out = args.dir.join(format!("out-{workers}w"));
        let setup = JobSetup {
            app: "wordcount".into(),
            input: InputSpec::Files(vec![input_dir.join("*.txt").to_string_lossy().into()]),
            outputs: vec![OutputSpec::Dir(out.clone())],
            maps: args.maps,
            reduces: args.reduces,
            lease: Duration::from_secs(30),
            work_dir: None,
        };
        let summary = run_local(setup, workers, false)?;
        let result = std::fs::read(out.join(RESULT_FILE))
            .map_err(|e| Error::io(format!("reading {}", out.display()), e))?;
        if result != expected {
            return Err(Error::JobFailed(format!(
                "{workers} workers: the result differs from the loop's"
            )));
        }
        let total = summary.elapsed.as_secs_f64();
        println!(
            "{:<22} {:>8.2} {:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            format!(
                "mapreduce, {workers} worker{}",
                if workers == 1 { "" } else { "s" }
            ),
            total,
            mb / total,
            summary.map_time().as_secs_f64(),
            summary.reduce_time().as_secs_f64(),
            summary.finish.as_secs_f64(),
            loop_time.as_secs_f64() / total
        );
    }
    Ok(())
}

/// Writes `bytes` of text into `FILES` files under `dir`, unless a previous run did.
fn generate(dir: &Path, bytes: u64) -> Result<Vec<PathBuf>> {
    let io = |e| Error::io(format!("writing {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut rng = Rng::new(0x6d61_7072_6564);
    let vocabulary: Vec<String> = (0..VOCABULARY)
        .map(|_| {
            let length = 1 + rng.below(10) as usize;
            (0..length)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect()
        })
        .collect();
    let per_file = bytes / u64::from(FILES);
    let mut files = Vec::new();
    for file in 0..FILES {
        let path = dir.join(format!("part-{file:02}.txt"));
        files.push(path.clone());
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == per_file) {
            continue;
        }
        let mut text = Vec::with_capacity(per_file as usize + 128);
        while (text.len() as u64) < per_file {
            // Skewed: low indices (common words) far more often than high ones.
            let u = rng.unit();
            let word = &vocabulary[((u * u * u) * VOCABULARY as f64) as usize];
            text.extend_from_slice(word.as_bytes());
            text.push(match rng.below(12) {
                0 => b'\n',
                1 => b',',
                _ => b' ',
            });
        }
        text.truncate(per_file as usize - 1);
        text.push(b'\n');
        let mut out = std::fs::File::create(&path).map_err(io)?;
        out.write_all(&text).map_err(io)?;
    }
    Ok(files)
}

/// The baseline: one process, one loop over the files, a hash map of counts; writes the
/// same `key: value` lines sorted by key and returns them.
fn count_in_one_process(files: &[PathBuf], out_dir: &Path) -> Result<Vec<u8>> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        words(&text, |word| match counts.get_mut(word) {
            Some(count) => *count += 1,
            None => {
                counts.insert(word.to_owned(), 1);
            }
        });
    }
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    sorted.sort_unstable();
    let mut text = Vec::new();
    for (word, count) in sorted {
        writeln!(text, "{word}: {count}").expect("writing to memory");
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    crate::io::write_atomically(&out_dir.join(RESULT_FILE), &text)?;
    Ok(text)
}
