//! The file-system seam: every byte the engine reads or writes goes through [`Fs`].
//!
//! Two implementations:
//! - [`RealFs`]: `std::fs`, `fdatasync` for file syncs, `fsync` on the directory for
//!   directory-entry changes (create, rename, remove), and `memmap2` for whole-file reads.
//! - [`SimFs`]: an in-memory file system for crash testing. Every file (an inode) keeps a
//!   *volatile* image (what a running process reads back) and a *durable* image (what
//!   survives a crash). [`FsFile::sync`] copies volatile to durable. Directory entries are
//!   likewise volatile until [`Fs::sync_dir`] on their parent. [`SimFs::crash`] throws the
//!   volatile state away, optionally keeping a torn prefix of each file's unsynced bytes,
//!   exactly what a power cut or `kill -9` of the OS could leave. A sync can be told to
//!   fail ([`SimFs::fail_next_syncs`]), to exercise the poisoning path.
//!
//! Failure model: any call may return an `io::Error`; callers must treat a failed `sync` as
//! fatal for the file (the WAL poisons itself; nothing retries a failed fsync, because after
//! a failed fsync the kernel may have dropped the dirty pages it could not write).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An open file: written at its end or at any offset, read at any offset.
pub trait FsFile: Send + Sync {
    /// Appends `buf` at the end of the file (volatile until [`FsFile::sync`]).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes `buf` at `offset`, overwriting and/or extending (volatile until
    /// [`FsFile::sync`]).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at EOF).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// The current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts the file to `len` bytes (volatile until [`FsFile::sync`]).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Bytes of a whole file, memory-mapped where the file system allows it.
pub enum FileBytes {
    /// A read-only memory map of a real file.
    Mapped(memmap2::Mmap),
    /// An owned copy (simulated files, and empty real files, which cannot be mapped).
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// The file-system operations the engine needs, and nothing more.
pub trait Fs: Send + Sync {
    /// Creates `path` empty (truncating any existing file) and opens it for append.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for append and read.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Reads a whole file (memory-mapped by [`RealFs`]).
    fn read_all(&self, path: &Path) -> io::Result<FileBytes>;
    /// Atomically renames `from` to `to`, replacing `to` (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable after `sync_dir`).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its parents (durable: parents are synced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the files directly inside `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Bytes that can still be written in `dir`'s file system, if it has a known bound.
    fn available_bytes(&self, dir: &Path) -> io::Result<Option<u64>>;
}

// ---------------------------------------------------------------------------------------
// RealFs
// ---------------------------------------------------------------------------------------

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile {
    file: File,
}

impl FsFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let end = self.file.metadata()?.len();
        self.write_at(end, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Fs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        // Not O_APPEND: on Linux that would make positional writes append too.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(0)?;
        Ok(Box::new(RealFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(RealFile { file }))
    }

    fn read_all(&self, path: &Path) -> io::Result<FileBytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the engine never modifies a file it has mapped: snapshots are written
        // once under a temporary name, renamed into place, and only ever removed. Removal
        // keeps the mapped pages alive until the map is dropped.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(FileBytes::Mapped(map))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        // Make the new entries durable all the way up.
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() {
                break;
            }
            File::open(d)?.sync_all()?;
            cur = d.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: all-zero bytes are a valid `statvfs` (a plain C struct of integers).
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and outlives the call; `stats` is a valid,
        // exclusive pointer to a `statvfs` the call fills in.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // What an unprivileged writer may use (root may dip into reserved blocks, but a
        // node should not count on them). The fields are u64 here, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        Ok(Some(
            u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// SimFs
// ---------------------------------------------------------------------------------------

type InodeId = u64;

#[derive(Debug, Default, Clone)]
struct Inode {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// `volatile[..same]` equals `durable[..same]`: appends leave it alone, truncation and
    /// overwrites lower it. It makes a sync cost the changed bytes, not the whole file.
    same: usize,
}

#[derive(Debug, Default)]
struct SimState {
    inodes: BTreeMap<InodeId, Inode>,
    /// Directory entries as a running process sees them.
    names: BTreeMap<PathBuf, InodeId>,
    /// Directory entries that survive a crash.
    durable_names: BTreeMap<PathBuf, InodeId>,
    dirs: BTreeMap<PathBuf, ()>,
    next_inode: InodeId,
    /// How many of the next `sync`/`sync_dir` calls fail.
    failing_syncs: u32,
    /// If set, this many more syncs succeed and the one after fails.
    syncs_before_failure: Option<u32>,
    /// Bumped on every crash: handles opened before it are dead.
    epoch: u64,
    syncs: u64,
    /// Most bytes all files together may hold (as a running process sees them); a write
    /// past it fails with "no space left on device". `None`: unbounded.
    capacity: Option<u64>,
}

impl SimState {
    /// Bytes of every named file in the inode table, as a running process sees them (a
    /// file being written is taken out of the table meanwhile, see [`SimFile::with`]).
    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .filter_map(|id| self.inodes.get(id))
            .map(|inode| inode.volatile.len() as u64)
            .sum()
    }

    /// Refuses to let the file being written (out of the table) grow to `file_bytes` if
    /// that takes the disk past its capacity, as a full disk does.
    fn make_room(&self, file_bytes: u64) -> io::Result<()> {
        match self.capacity {
            Some(capacity) if self.used_bytes() + file_bytes > capacity => {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    /// Decides whether the sync being attempted fails (by injection); counts it if not.
    fn sync_fails(&mut self) -> bool {
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            return true;
        }
        match self.syncs_before_failure {
            Some(0) => {
                self.syncs_before_failure = None;
                return true;
            }
            Some(n) => self.syncs_before_failure = Some(n - 1),
            None => {}
        }
        self.syncs += 1;
        false
    }

    /// Frees inodes that no name, volatile or durable, refers to any more.
    fn drop_orphans(&mut self) {
        let live: std::collections::BTreeSet<InodeId> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|id, _| live.contains(id));
    }
}

/// How [`SimFs::crash`] treats bytes that were written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torn {
    /// Lose every unsynced byte.
    None,
    /// Keep, for each file, a prefix of its unsynced bytes chosen by the given seed.
    Prefix(u64),
}

/// A copy of a [`SimFs`]'s durable contents (see [`SimFs::durable_image`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskImage {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: Vec<PathBuf>,
}

/// An in-memory, crashable file system. Cloning gives another handle to the same disk.
#[derive(Debug, Default, Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: InodeId,
    epoch: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn injected() -> io::Error {
    io::Error::other("injected fsync failure")
}

fn stale() -> io::Error {
    io::Error::other("file handle is from before a crash")
}

impl SimFs {
    /// A new, empty disk.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("SimFs lock poisoned")
    }

    /// Makes the next `n` calls of `sync` or `sync_dir` fail.
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock().failing_syncs = n;
    }

    /// Bounds the disk: writes that would take all files together past `capacity` bytes
    /// fail with "no space left on device" (`None` lifts the bound). A crash keeps it.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// Lets `ok` more syncs (file or directory) succeed, then fails the next one.
    pub fn fail_sync_after(&self, ok: u32) {
        self.lock().syncs_before_failure = Some(ok);
    }

    /// How many successful syncs (file and directory) have happened.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulates a crash: every open handle dies, directory entries revert to their durable
    /// set, and each file keeps its durable bytes plus, with [`Torn::Prefix`], a seeded
    /// random prefix of the unsynced region (everything from the first byte that differs
    /// from the durable image), laid over the durable bytes as if written in order; an
    /// unsynced truncation itself is lost.
    pub fn crash(&self, torn: Torn) {
        let mut st = self.lock();
        st.epoch += 1;
        st.failing_syncs = 0;
        st.syncs_before_failure = None;
        st.names = st.durable_names.clone();
        let mut seed = match torn {
            Torn::None => None,
            Torn::Prefix(s) => Some(s),
        };
        for (id, inode) in st.inodes.iter_mut() {
            let mut image = inode.durable.clone();
            if let Some(s) = seed.as_mut() {
                let from = inode.same.min(image.len());
                if inode.volatile.len() > from {
                    let extra = inode.volatile.len() - from;
                    *s = splitmix(*s ^ id.wrapping_mul(0x9E37_79B9));
                    let keep = (*s % (extra as u64 + 1)) as usize;
                    let end = from + keep;
                    if image.len() < end {
                        image.resize(end, 0);
                    }
                    image[from..end].copy_from_slice(&inode.volatile[from..end]);
                }
            }
            inode.volatile = image.clone();
            inode.same = image.len();
            inode.durable = image;
        }
        st.drop_orphans();
    }

    /// A copy of the disk's durable contents: what a backup of it taken now would hold.
    pub fn durable_image(&self) -> DiskImage {
        let st = self.lock();
        DiskImage {
            files: st
                .durable_names
                .iter()
                .map(|(path, id)| (path.clone(), st.inodes[id].durable.clone()))
                .collect(),
            dirs: st.dirs.keys().cloned().collect(),
        }
    }

    /// Replaces the disk's contents with `image` (an operator restoring a backup): every
    /// open handle dies, as in a crash, and the image is what is durable from now on.
    pub fn restore(&self, image: &DiskImage) {
        let mut st = self.lock();
        let epoch = st.epoch + 1;
        *st = SimState {
            epoch,
            ..SimState::default()
        };
        for (path, bytes) in &image.files {
            let id = st.next_inode;
            st.next_inode += 1;
            st.inodes.insert(
                id,
                Inode {
                    volatile: bytes.clone(),
                    durable: bytes.clone(),
                    same: bytes.len(),
                },
            );
            st.names.insert(path.clone(), id);
            st.durable_names.insert(path.clone(), id);
        }
        for dir in &image.dirs {
            st.dirs.insert(dir.clone(), ());
        }
    }

    /// Wipes the disk entirely (a lost disk).
    pub fn wipe(&self) {
        let mut st = self.lock();
        let epoch = st.epoch + 1;
        let capacity = st.capacity;
        *st = SimState {
            epoch,
            capacity,
            ..SimState::default()
        };
    }

    /// Total bytes of every file as a running process sees them.
    pub fn total_bytes(&self) -> u64 {
        let st = self.lock();
        st.names
            .values()
            .map(|id| st.inodes[id].volatile.len() as u64)
            .sum()
    }

    /// Total bytes of every file under `dir` as a running process sees them.
    pub fn bytes_under(&self, dir: &Path) -> u64 {
        let st = self.lock();
        st.names
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .map(|(_, id)| st.inodes[id].volatile.len() as u64)
            .sum()
    }

    /// Flips one bit of a file's bytes, in both images (bit rot on the medium).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut st = self.lock();
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = st.inodes.get_mut(&id).expect("named inode exists");
        if offset >= inode.volatile.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is past the end of {}", path.display()),
            ));
        }
        for image in [&mut inode.volatile, &mut inode.durable] {
            if let Some(b) = image.get_mut(offset as usize) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }
}

/// Makes room for `more` bytes, starting a growing file at 64 KiB of capacity: a WAL
/// segment grows in small appends, and doubling from a few KiB would copy it several
/// times over.
fn reserve_ahead(image: &mut Vec<u8>, more: usize) {
    if image.capacity() - image.len() < more {
        image.reserve(more.max(64 << 10));
    }
}

/// One step of SplitMix64: a small, fast, well-mixed deterministic generator.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState, &mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut guard = self.state.lock().expect("SimFs lock poisoned");
        if guard.epoch != self.epoch {
            return Err(stale());
        }
        let st = &mut *guard;
        let mut inode = st
            .inodes
            .remove(&self.inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file was removed"))?;
        let result = f(st, &mut inode);
        st.inodes.insert(self.inode, inode);
        result
    }
}

impl FsFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|st, inode| {
            st.make_room((inode.volatile.len() + buf.len()) as u64)?;
            inode.volatile.extend_from_slice(buf);
            Ok(())
        })
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.with(|st, inode| {
            let start = offset as usize;
            let end = start + buf.len();
            st.make_room(end.max(inode.volatile.len()) as u64)?;
            if start == inode.volatile.len() {
                // The common case, an append: one copy, no zero-fill first.
                reserve_ahead(&mut inode.volatile, buf.len());
                inode.volatile.extend_from_slice(buf);
            } else {
                if inode.volatile.len() < end {
                    inode.volatile.resize(end, 0);
                }
                inode.volatile[start..end].copy_from_slice(buf);
            }
            inode.same = inode.same.min(start);
            Ok(())
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|_, inode| {
            let start = (offset as usize).min(inode.volatile.len());
            let n = buf.len().min(inode.volatile.len() - start);
            buf[..n].copy_from_slice(&inode.volatile[start..start + n]);
            Ok(n)
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|st, inode| {
            if st.sync_fails() {
                return Err(injected());
            }
            // Copy only what changed since the last sync.
            inode.durable.truncate(inode.same);
            let tail = &inode.volatile[inode.same..];
            reserve_ahead(&mut inode.durable, tail.len());
            inode.durable.extend_from_slice(tail);
            inode.same = inode.volatile.len();
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|_, inode| Ok(inode.volatile.len() as u64))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|_, inode| {
            inode.volatile.truncate(len as usize);
            inode.same = inode.same.min(inode.volatile.len());
            Ok(())
        })
    }
}

impl Fs for SimFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && !st.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        let id = match st.names.get(path) {
            Some(&id) => {
                st.inodes
                    .get_mut(&id)
                    .expect("named inode")
                    .volatile
                    .clear();
                id
            }
            None => {
                st.next_inode += 1;
                let id = st.next_inode;
                st.inodes.insert(id, Inode::default());
                st.names.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode: id,
            epoch: st.epoch,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let st = self.lock();
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode: id,
            epoch: st.epoch,
        }))
    }

    fn read_all(&self, path: &Path) -> io::Result<FileBytes> {
        let st = self.lock();
        let id = st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(FileBytes::Owned(st.inodes[id].volatile.clone()))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        st.drop_orphans();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.sync_fails() {
            return Err(injected());
        }
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let keep: Vec<(PathBuf, InodeId)> = st
            .durable_names
            .iter()
            .filter(|(p, _)| !in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        let now: Vec<(PathBuf, InodeId)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        st.durable_names = keep.into_iter().chain(now).collect();
        st.drop_orphans();
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(d.to_path_buf(), ());
            cur = d.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains_key(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        st.names.contains_key(path) || st.dirs.contains_key(path)
    }

    fn available_bytes(&self, _dir: &Path) -> io::Result<Option<u64>> {
        let st = self.lock();
        Ok(st.capacity.map(|c| c.saturating_sub(st.used_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_vanish_on_crash() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/a")).unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.append(b" world").unwrap();
        fs.crash(Torn::None);
        assert_eq!(&*fs.read_all(Path::new("/d/a")).unwrap(), b"hello");
        assert!(f.append(b"x").is_err(), "handles die with the crash");
    }

    #[test]
    fn unsynced_directory_entries_vanish_on_crash() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/a")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        fs.crash(Torn::None);
        assert!(!fs.exists(Path::new("/d/a")));
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let mut f = fs.create(&d.join("t")).unwrap();
        f.append(b"v1").unwrap();
        f.sync().unwrap();
        fs.sync_dir(d).unwrap();
        fs.rename(&d.join("t"), &d.join("final")).unwrap();
        fs.crash(Torn::None);
        assert_eq!(fs.list(d).unwrap(), vec!["t".to_string()]);
        fs.rename(&d.join("t"), &d.join("final")).unwrap();
        fs.sync_dir(d).unwrap();
        fs.crash(Torn::None);
        assert_eq!(fs.list(d).unwrap(), vec!["final".to_string()]);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_unsynced_bytes() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            let mut f = fs.create(Path::new("/d/a")).unwrap();
            fs.sync_dir(Path::new("/d")).unwrap();
            f.append(b"abc").unwrap();
            f.sync().unwrap();
            f.append(b"defgh").unwrap();
            fs.crash(Torn::Prefix(seed));
            let got = fs.read_all(Path::new("/d/a")).unwrap().to_vec();
            assert!(b"abcdefgh".starts_with(&got) && got.len() >= 3);
            seen.insert(got.len());
        }
        assert!(seen.len() > 3, "torn lengths vary with the seed: {seen:?}");
    }

    #[test]
    fn injected_sync_failure_fails_once() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = fs.create(Path::new("/d/a")).unwrap();
        fs.fail_next_syncs(1);
        assert!(f.sync().is_err());
        assert!(f.sync().is_ok());
    }

    #[test]
    fn real_fs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let p = dir.path().join("f");
        let mut f = fs.create(&p).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(f.read_at(1, &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"ell");
        assert_eq!(&*fs.read_all(&p).unwrap(), b"hello");
        f.truncate(2).unwrap();
        assert_eq!(f.len().unwrap(), 2);
        assert_eq!(fs.list(dir.path()).unwrap(), vec!["f".to_string()]);
    }
}
