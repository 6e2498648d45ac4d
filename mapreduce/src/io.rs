//! Where a job's input comes from and where its output goes: the seam for other backends.
//!
//! A job names its input and outputs with [`InputSpec`] and [`OutputSpec`] (parsed from
//! `--input` / `--output` / `--output-dir`, and sent to workers in the job description).
//! [`open_input`] and [`open_output`] turn them into an [`Input`] (the coordinator plans
//! [`Split`]s with it, a worker reads one) and an [`Output`] (a reduce task commits its
//! result, the coordinator finishes the job). Two backends: files (here) and the store
//! (`kv://PREFIX`, [`crate::store`]); each is a variant of the specs and of [`Split`] and
//! an arm of each `open_` function.
//!
//! Output contract: [`Output::commit`] of reduce task `r` may be called again with the same
//! pairs any number of times, from any worker, even after the job is done (a stalled worker
//! waking late), and leaves exactly what one call leaves: never a duplicate, never a
//! half-written entry. Files: each commit replaces the task's part file whole and
//! atomically, so readers never see half of it. The store: each pair is one key written
//! whole, so a reader during the job may see some of a task's keys before others (the
//! argument is in [`crate::store`]).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kv_engine::glob::Glob;
use serde::{Deserialize, Serialize};

pub use crate::store::KeyRange;
use crate::store::{StoreInput, StoreOutput};
use crate::{Error, Result};

/// Input when `--maps` is not given: one map task per this many bytes.
pub const SPLIT_BYTES_DEFAULT: u64 = 8 << 20;

/// The prefix naming the store in `--input` and `--output`.
pub const STORE_SCHEME: &str = "kv://";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputSpec {
    /// Files, each a path or a pattern with `*`, `?` and `[...]` in its last component.
    Files(Vec<String>),
    /// Every key under `prefix` in the cluster of the cluster file `cluster` (absolute).
    Store { cluster: PathBuf, prefix: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputSpec {
    /// `DIR/part-NNNNN` per reduce task, then the merged `DIR/result` (`key: value` lines
    /// sorted by key).
    Dir(PathBuf),
    /// Each output pair as the key `prefix<key>` in the cluster of the cluster file
    /// `cluster` (absolute).
    Store { cluster: PathBuf, prefix: String },
}

/// What one map task reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    /// Byte ranges of files. A range owns the lines that start inside it: it skips a line
    /// begun before its start and reads past its end to finish its last line.
    Files(Vec<FileRange>),
    /// Key ranges of shards ([`crate::store`]).
    Store(Vec<KeyRange>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRange {
    pub path: String,
    pub start: u64,
    pub end: u64,
}

/// A job's input.
pub trait Input: Send + Sync {
    /// Cuts the input into `maps` splits (or a size-based number when `None`); returns
    /// them with each one's size in bytes.
    fn plan(&self, maps: Option<u32>) -> Result<Vec<(Split, u64)>>;

    /// Calls `visit(document, contents)` for each document piece of `split`; returns the
    /// bytes read.
    fn read(&self, split: &Split, visit: &mut dyn FnMut(&str, &str)) -> Result<u64>;
}

/// A job's output.
pub trait Output: Send + Sync {
    /// Commits reduce task `reduce`'s pairs (sorted by key), replacing any earlier commit of
    /// the same task whole.
    fn commit(&self, reduce: u32, pairs: &[(String, String)]) -> Result<()>;

    /// Runs once on the coordinator after every reduce task committed.
    fn finish(&self, reduces: u32) -> Result<()>;
}

impl InputSpec {
    /// Parses `--input` values: files and patterns, or one `kv://PREFIX` of the cluster
    /// whose cluster file is `cluster`.
    pub fn parse(values: &[String], cluster: &Path) -> Result<InputSpec> {
        let stores: Vec<&str> = values
            .iter()
            .filter_map(|v| v.strip_prefix(STORE_SCHEME))
            .collect();
        match (stores.as_slice(), values.len()) {
            (_, 0) => Err(Error::Input("no input given".into())),
            ([], _) => Ok(InputSpec::Files(values.to_vec())),
            ([prefix], 1) => Ok(InputSpec::Store {
                cluster: crate::store::absolute_cluster(cluster)?,
                prefix: prefix.to_string(),
            }),
            _ => Err(Error::Input(format!(
                "{STORE_SCHEME}PREFIX must be the only --input"
            ))),
        }
    }
}

impl OutputSpec {
    /// Parses `--output` (`kv://PREFIX`, into the cluster whose cluster file is `cluster`)
    /// and `--output-dir` values.
    pub fn parse(
        output: Option<&str>,
        output_dir: Option<&Path>,
        cluster: &Path,
    ) -> Result<Vec<OutputSpec>> {
        let mut specs: Vec<OutputSpec> = output_dir
            .map(|dir| OutputSpec::Dir(dir.to_path_buf()))
            .into_iter()
            .collect();
        if let Some(output) = output {
            let Some(prefix) = output.strip_prefix(STORE_SCHEME) else {
                return Err(Error::Input(format!(
                    "--output {output}: the store's output is {STORE_SCHEME}PREFIX (files go \
                     to --output-dir)"
                )));
            };
            specs.push(OutputSpec::Store {
                cluster: crate::store::absolute_cluster(cluster)?,
                prefix: prefix.to_owned(),
            });
        }
        Ok(specs)
    }
}

pub fn open_input(spec: &InputSpec) -> Result<Box<dyn Input>> {
    match spec {
        InputSpec::Files(patterns) => Ok(Box::new(FileInput::new(patterns)?)),
        InputSpec::Store { cluster, prefix } => Ok(Box::new(StoreInput::open(cluster, prefix)?)),
    }
}

pub fn open_output(spec: &OutputSpec) -> Result<Box<dyn Output>> {
    match spec {
        OutputSpec::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            Ok(Box::new(DirOutput { dir: dir.clone() }))
        }
        OutputSpec::Store { cluster, prefix } => Ok(Box::new(StoreOutput::open(cluster, prefix)?)),
    }
}

/// Files named by paths and patterns, read in byte ranges.
pub struct FileInput {
    files: Vec<(String, u64)>,
}

impl FileInput {
    pub fn new(patterns: &[String]) -> Result<FileInput> {
        let mut files = Vec::new();
        for pattern in patterns {
            let matched = expand(pattern)?;
            if matched.is_empty() {
                return Err(Error::Input(format!("{pattern}: no such file")));
            }
            for path in matched {
                let metadata = std::fs::metadata(&path)
                    .map_err(|e| Error::io(format!("reading {path}"), e))?;
                if !metadata.is_file() {
                    let what = if metadata.is_dir() {
                        format!(
                            "a directory (its files: --input '{}/*')",
                            pattern.trim_end_matches('/')
                        )
                    } else {
                        "not a regular file".to_owned()
                    };
                    return Err(Error::Input(format!("{path}: {what}")));
                }
                files.push((path, metadata.len()));
            }
        }
        Ok(FileInput { files })
    }

    /// Total bytes of input.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, size)| size).sum()
    }
}

impl Input for FileInput {
    fn plan(&self, maps: Option<u32>) -> Result<Vec<(Split, u64)>> {
        let total = self.bytes();
        let maps = maps
            .map(u64::from)
            .unwrap_or_else(|| total.div_ceil(SPLIT_BYTES_DEFAULT))
            .max(1);
        let per_split = total.div_ceil(maps).max(1);
        let mut splits: Vec<(Vec<FileRange>, u64)> = (0..maps).map(|_| (Vec::new(), 0)).collect();
        let mut at = 0u64; // offset in the concatenation of every file
        for (path, size) in &self.files {
            let mut start = 0;
            while start < *size {
                let split = ((at + start) / per_split) as usize;
                let split_end = (split as u64 + 1) * per_split - at;
                let end = split_end.min(*size);
                splits[split].0.push(FileRange {
                    path: path.clone(),
                    start,
                    end,
                });
                splits[split].1 += end - start;
                start = end;
            }
            at += size;
        }
        Ok(splits
            .into_iter()
            .map(|(ranges, bytes)| (Split::Files(ranges), bytes))
            .collect())
    }

    fn read(&self, split: &Split, visit: &mut dyn FnMut(&str, &str)) -> Result<u64> {
        let Split::Files(ranges) = split else {
            return Err(Error::Protocol(
                "a split of the store for input from files".into(),
            ));
        };
        let mut bytes = 0;
        for range in ranges {
            let text = read_lines(range)?;
            bytes += text.len() as u64;
            visit(&range.path, &String::from_utf8_lossy(&text));
        }
        Ok(bytes)
    }
}

/// The lines that start in `range`, whole.
fn read_lines(range: &FileRange) -> Result<Vec<u8>> {
    let io = |e| Error::io(format!("reading {}", range.path), e);
    let mut file = std::fs::File::open(&range.path).map_err(io)?;
    // Read one byte before the start to know whether a line begins at the start.
    let from = range.start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut text = Vec::with_capacity((range.end - from) as usize + 256);
    (&mut file)
        .take(range.end - from)
        .read_to_end(&mut text)
        .map_err(io)?;
    if text.last().is_some_and(|&b| b != b'\n') {
        // Finish the last line, which may run past the end.
        let mut rest = std::io::BufReader::new(file);
        std::io::BufRead::read_until(&mut rest, b'\n', &mut text).map_err(io)?;
    }
    if range.start > 0 {
        // Drop the line begun before the start (its owner is the range before), or just
        // the byte read to learn that a line begins here.
        let skip = match text.iter().position(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None => text.len(),
        };
        text.drain(..skip);
    }
    Ok(text)
}

/// The files `pattern` names: itself if it has no wildcard, else the files of its directory
/// whose names match its last component (a glob: `*` any run, `?` one byte, `[...]` a set;
/// [`kv_engine::glob`]), sorted.
pub fn expand(pattern: &str) -> Result<Vec<String>> {
    let path = Path::new(pattern);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?', '[']) {
        return Ok(if path.exists() {
            vec![pattern.to_owned()]
        } else {
            vec![]
        });
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = parent.unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(Error::Input(format!(
            "{pattern}: wildcards only in the file name"
        )));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let glob = Glob::new(name.as_bytes());
    let mut matched = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && glob.matches(file_name.as_bytes()) {
            matched.push(match parent {
                Some(parent) => parent.join(file_name).to_string_lossy().into_owned(),
                None => file_name.to_owned(),
            });
        }
    }
    matched.sort();
    Ok(matched)
}

/// Per-task part files in a directory, merged at the end into `result`.
pub struct DirOutput {
    dir: PathBuf,
}

/// The merged output file in an output directory.
pub const RESULT_FILE: &str = "result";

/// Reduce task `reduce`'s part file in an output directory.
pub fn part_file(dir: &Path, reduce: u32) -> PathBuf {
    dir.join(format!("part-{reduce:05}"))
}

/// One output line: `key: value`.
fn line(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

impl Output for DirOutput {
    fn commit(&self, reduce: u32, pairs: &[(String, String)]) -> Result<()> {
        let mut text = Vec::new();
        for (key, value) in pairs {
            if key.contains('\n') || key.contains(": ") || value.contains('\n') {
                return Err(Error::Input(format!(
                    "key {key:?} or its value does not fit a `key: value` line"
                )));
            }
            line(&mut text, key, value);
        }
        write_atomically(&part_file(&self.dir, reduce), &text)
    }

    fn finish(&self, reduces: u32) -> Result<()> {
        let mut parts = Vec::with_capacity(reduces as usize);
        for reduce in 0..reduces {
            let path = part_file(&self.dir, reduce);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            parts.push(text);
        }
        let mut lines: Vec<(&str, &str)> = Vec::new();
        for (reduce, text) in parts.iter().enumerate() {
            for l in text.lines() {
                lines.push(l.split_once(": ").ok_or_else(|| Error::Corrupt {
                    path: part_file(&self.dir, reduce as u32),
                    reason: format!("{l:?} is not a `key: value` line"),
                })?);
            }
        }
        lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut text = Vec::with_capacity(parts.iter().map(String::len).sum());
        for (key, value) in lines {
            line(&mut text, key, value);
        }
        write_atomically(&self.dir.join(RESULT_FILE), &text)?;
        remove_stale_parts(&self.dir, reduces)
    }
}

/// Removes the part files of reduce tasks `reduces` and up that an earlier job with more
/// reduce tasks left in `dir`, so that the part files are this job's output and no more.
fn remove_stale_parts(dir: &Path, reduces: u32) -> Result<()> {
    let io = |e| Error::io(format!("listing {}", dir.display()), e);
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix("part-"))
            .filter(|digits| digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u32>().ok());
        if index.is_some_and(|index| index >= reduces) {
            let path = dir.join(&name);
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` so that `path` holds either its old contents or all of the new
/// ones: a temporary file beside it, fsynced, renamed over it, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().expect("a file path").to_string_lossy();
    let temporary = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_own_each_line_once_whatever_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        std::fs::write(&a, "one two\nthree\n\nfour five six\nseven").unwrap();
        std::fs::write(&b, "x\nyy\nzzz\n").unwrap();
        let input = FileInput::new(&[dir.path().join("*.txt").to_string_lossy().into()]).unwrap();
        let whole: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                text.lines().map(String::from).collect::<Vec<_>>()
            })
            .collect();
        for maps in 1..=60 {
            let mut lines = Vec::new();
            let mut total = 0;
            for (split, planned) in input.plan(Some(maps)).unwrap() {
                total += planned;
                input
                    .read(&split, &mut |_, text| {
                        lines.extend(text.lines().map(String::from))
                    })
                    .unwrap();
            }
            assert_eq!(lines, whole, "{maps} maps");
            assert_eq!(total, input.bytes());
        }
    }

    #[test]
    fn a_directory_given_as_input_is_refused_before_the_job_starts() {
        let dir = tempfile::tempdir().unwrap();
        let books = dir.path().join("books");
        std::fs::create_dir(&books).unwrap();
        std::fs::write(books.join("a.txt"), "x").unwrap();
        let named = books.to_string_lossy().into_owned();
        let refused = FileInput::new(std::slice::from_ref(&named)).err();
        assert!(
            matches!(&refused, Some(Error::Input(m)) if m.contains("a directory") && m.contains(&format!("{named}/*"))),
            "{refused:?}"
        );
        assert!(FileInput::new(&[format!("{named}/*")]).is_ok());
    }

    #[test]
    fn patterns_name_the_matching_files_of_their_directory_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", "a.txt.gz", "c1.md"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            let pattern = dir.path().join(pattern).to_string_lossy().into_owned();
            expand(&pattern)
                .unwrap()
                .iter()
                .map(|p| {
                    Path::new(p)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        assert_eq!(names("*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(names("[ab].txt*"), ["a.txt", "a.txt.gz", "b.txt"]);
        assert_eq!(names("c?.md"), ["c1.md"]);
        assert_eq!(names("a.txt"), ["a.txt"]);
        assert!(names("nothing*").is_empty());
    }

    #[test]
    fn a_store_input_is_the_only_input_and_the_store_output_is_a_kv_prefix() {
        let cluster = Path::new("kv-data/cluster.toml");
        let spec = InputSpec::parse(&["kv://books/".into()], cluster).unwrap();
        let InputSpec::Store {
            cluster: path,
            prefix,
        } = spec
        else {
            panic!("{spec:?}");
        };
        assert!(path.is_absolute() && path.ends_with("kv-data/cluster.toml"));
        assert_eq!(prefix, "books/");
        let both = InputSpec::parse(&["kv://a".into(), "b.txt".into()], cluster);
        assert!(matches!(both, Err(Error::Input(m)) if m.contains("only --input")));
        assert!(InputSpec::parse(&[], cluster).is_err());
        let outputs = OutputSpec::parse(Some("kv://wc/"), Some(Path::new("out")), cluster).unwrap();
        assert_eq!(outputs.len(), 2);
        assert!(matches!(&outputs[1], OutputSpec::Store { prefix, .. } if prefix == "wc/"));
        let refused = OutputSpec::parse(Some("out"), None, cluster);
        assert!(matches!(refused, Err(Error::Input(m)) if m.contains("--output-dir")));
    }

    #[test]
    fn the_merged_result_is_sorted_by_key_not_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let output = open_output(&OutputSpec::Dir(dir.path().into())).unwrap();
        let pairs = |list: &[&str]| -> Vec<(String, String)> {
            list.iter().map(|k| (k.to_string(), "v".into())).collect()
        };
        output.commit(0, &pairs(&["1", "2"])).unwrap();
        output.commit(1, &pairs(&["10"])).unwrap();
        output.commit(1, &pairs(&["10"])).unwrap(); // a second run of the task
        output.finish(2).unwrap();
        let result = std::fs::read_to_string(dir.path().join(RESULT_FILE)).unwrap();
        assert_eq!(result, "1: v\n10: v\n2: v\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_job_with_fewer_reduces_leaves_only_its_own_part_files() {
        let dir = tempfile::tempdir().unwrap();
        let output = open_output(&OutputSpec::Dir(dir.path().into())).unwrap();
        let pair = |key: &str| vec![(key.to_string(), "1".to_string())];
        for reduce in 0..3 {
            output
                .commit(reduce, &pair(&format!("old{reduce}")))
                .unwrap();
        }
        output.finish(3).unwrap();
        std::fs::write(dir.path().join("part-notes"), "mine").unwrap();
        // The same directory again, with one reduce task.
        output.commit(0, &pair("new")).unwrap();
        output.finish(1).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["part-00000", "part-notes", "result"]);
        let result = std::fs::read_to_string(dir.path().join(RESULT_FILE)).unwrap();
        assert_eq!(result, "new: 1\n");
    }
}
