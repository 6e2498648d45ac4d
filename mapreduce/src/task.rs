//! What a task computes, and the intermediate file a map task leaves for the reduces.
//!
//! Pure parts first: [`Mapper`] runs an app's map over documents and partitions what it
//! emits by `ihash(key) % reduces` (the lab's 32-bit FNV-1a), combining values as it goes
//! when the app allows; [`reduce`] merges one partition from every map, in map order, and
//! runs the app's reduce per key. The simulator runs these same functions.
//!
//! Intermediate file (one per map task, `map-NNNNN` in the job's work directory):
//! `"KVMR"`, version u32 LE, reduces u32 LE, then per reduce partition `offset u64, length
//! u64, crc32 u32` (LE), then each partition's postcard bytes. A reduce reads only its
//! section and checks its checksum. The file appears whole or not at all (written to a
//! temporary name, fsynced, renamed), so a reader never sees half of one.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::app::App;
use crate::{Error, Result};

/// One reduce partition of a map's output: distinct keys, sorted, each with its values in
/// the order they were emitted (combined to one when the app combines).
pub type Partition = Vec<(String, Vec<String>)>;

/// How many values a key gathers in a map before a combining app folds them into one.
const COMBINE_VALUES_MAX: usize = 64;

const MAGIC: &[u8; 4] = b"KVMR";
const FORMAT_VERSION: u32 = 1;
const SECTION_HEADER_BYTES: usize = 20;

/// The lab's `ihash`: 32-bit FNV-1a, top bit cleared.
pub fn ihash(key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash & 0x7fff_ffff
}

/// The reduce partition `key` belongs to.
pub fn partition_of(key: &str, reduces: u32) -> usize {
    (ihash(key) % reduces) as usize
}

/// One key's values in a map task, in one buffer (no allocation per value).
#[derive(Default)]
struct Values {
    text: String,
    ends: Vec<usize>,
}

impl Values {
    fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    fn slices(&self) -> Vec<&str> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let value = &self.text[start..end];
                start = end;
                value
            })
            .collect()
    }

    /// Replaces the values with the app's reduce of them (for combining apps).
    fn fold(&mut self, app: &dyn App, key: &str) {
        let folded = app.reduce(key, &self.slices());
        self.text.clear();
        self.ends.clear();
        self.push(&folded);
    }
}

/// Runs a map task: feed it documents, then take its partitions.
pub struct Mapper<'a> {
    app: &'a dyn App,
    partitions: Vec<HashMap<String, Values>>,
}

impl<'a> Mapper<'a> {
    pub fn new(app: &'a dyn App, reduces: u32) -> Mapper<'a> {
        assert!(reduces > 0, "a job has at least one reduce");
        Mapper {
            app,
            partitions: (0..reduces).map(|_| HashMap::new()).collect(),
        }
    }

    /// Maps one document piece.
    pub fn feed(&mut self, document: &str, contents: &str) {
        let app = self.app;
        let combines = app.combines();
        let partitions = &mut self.partitions;
        let reduces = partitions.len() as u32;
        app.map(document, contents, &mut |key: &str, value: &str| {
            let partition = &mut partitions[partition_of(key, reduces)];
            match partition.get_mut(key) {
                Some(values) => {
                    values.push(value);
                    if combines && values.ends.len() >= COMBINE_VALUES_MAX {
                        values.fold(app, key);
                    }
                }
                None => {
                    let mut values = Values::default();
                    values.push(value);
                    partition.insert(key.to_owned(), values);
                }
            }
        });
    }

    /// The task's output: one sorted partition per reduce.
    pub fn finish(self) -> Vec<Partition> {
        let app = self.app;
        self.partitions
            .into_iter()
            .map(|partition| {
                let mut sorted: Partition = partition
                    .into_iter()
                    .map(|(key, mut values)| {
                        if app.combines() && values.ends.len() > 1 {
                            values.fold(app, &key);
                        }
                        let list = values.slices().into_iter().map(String::from).collect();
                        (key, list)
                    })
                    .collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                sorted
            })
            .collect()
    }
}

/// Runs a reduce task over its partition of every map's output (in map order): each key
/// once, sorted, with the app's reduce of all its values.
pub fn reduce(app: &dyn App, inputs: impl IntoIterator<Item = Partition>) -> Vec<(String, String)> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for partition in inputs {
        for (key, values) in partition {
            grouped.entry(key).or_default().extend(values);
        }
    }
    grouped
        .into_iter()
        .map(|(key, values)| {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let value = app.reduce(&key, &values);
            (key, value)
        })
        .collect()
}

/// The bytes of a map task's intermediate file.
pub fn encode_map_output(partitions: &[Partition]) -> Vec<u8> {
    let sections: Vec<Vec<u8>> = partitions
        .iter()
        .map(|p| postcard::to_allocvec(p).expect("encoding to memory cannot fail"))
        .collect();
    let header_bytes = 12 + SECTION_HEADER_BYTES * sections.len();
    let mut out = Vec::with_capacity(header_bytes + sections.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    let mut offset = header_bytes as u64;
    for section in &sections {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(section).to_le_bytes());
        offset += section.len() as u64;
    }
    for section in &sections {
        out.extend_from_slice(section);
    }
    out
}

/// Reads partition `reduce` of the intermediate file at `path`, checking its checksum.
pub fn read_partition(path: &Path, reduce: u32) -> Result<Partition> {
    let io = |source| Error::io(format!("reading {}", path.display()), source);
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head).map_err(io)?;
    if &head[..4] != MAGIC || head[4..8] != FORMAT_VERSION.to_le_bytes() {
        return Err(corrupt("not an intermediate file of this version"));
    }
    let reduces = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if reduce >= reduces {
        return Err(corrupt("has fewer partitions than the job's reduces"));
    }
    let mut entry = [0u8; SECTION_HEADER_BYTES];
    file.seek(SeekFrom::Start(
        12 + u64::from(reduce) * SECTION_HEADER_BYTES as u64,
    ))
    .map_err(io)?;
    file.read_exact(&mut entry).map_err(io)?;
    let offset = u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes"));
    let length = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes"));
    let file_bytes = file.metadata().map_err(io)?.len();
    if offset
        .checked_add(length)
        .is_none_or(|end| end > file_bytes)
    {
        return Err(corrupt("a section runs past the end of the file"));
    }
    let mut section = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut section).map_err(io)?;
    if crc32fast::hash(&section) != crc {
        return Err(corrupt("a section's checksum does not match"));
    }
    postcard::from_bytes(&section).map_err(|_| corrupt("a section does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Distinct, WordCount};

    #[test]
    fn ihash_is_the_labs_fnv1a() {
        // FNV-1a 32 of "" and "a" (published test vectors), top bit cleared.
        assert_eq!(ihash(""), 0x811c_9dc5 & 0x7fff_ffff);
        assert_eq!(ihash("a"), 0xe40c_292c & 0x7fff_ffff);
    }

    #[test]
    fn combining_gives_the_same_counts_as_not_combining() {
        let text = "a b a c a b ".repeat(100);
        let mut mapper = Mapper::new(&WordCount, 3);
        mapper.feed("doc", &text);
        let out = reduce(
            &WordCount,
            mapper.finish().into_iter().flatten().map(|kv| vec![kv]),
        );
        assert_eq!(
            out,
            [("a", "300"), ("b", "200"), ("c", "100")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn intermediate_file_round_trips_and_detects_a_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut mapper = Mapper::new(&Distinct, 4);
        mapper.feed("d", "1 2 3 4 5 6 7 8 9 10 11 12");
        let partitions = mapper.finish();
        let mut bytes = encode_map_output(&partitions);
        let path = dir.path().join("map");
        std::fs::write(&path, &bytes).unwrap();
        for (r, partition) in partitions.iter().enumerate() {
            assert_eq!(&read_partition(&path, r as u32).unwrap(), partition);
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_partition(&path, 3),
            Err(Error::Corrupt { .. })
        ));
    }
}
