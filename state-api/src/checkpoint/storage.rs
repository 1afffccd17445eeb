//! The file operations checkpoint storage needs, behind a small trait so that
//! tests can inject failures and simulate crashes.
//!
//! Contract of every implementation:
//! * `create` makes a new file (failing if it exists); its bytes are durable
//!   only after [`StorageFile::sync`] returned.
//! * `rename` replaces the target atomically; the rename itself is durable
//!   only after [`Storage::sync_dir`] of the target's directory returned.
//! * Errors are returned, never panics; after an error the caller must not
//!   assume anything about the file's content.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// A file being written.
pub trait StorageFile: Send {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the bytes written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// File operations used by checkpoint storage.
pub trait Storage: Send + Sync + 'static {
    /// Creates a new file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file; a missing file is not an error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it; a missing one is not an error.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (empty if it does not exist).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
    /// The size of a file in bytes (an error of kind `NotFound` if missing).
    fn len(&self, path: &Path) -> io::Result<u64>;
}

/// The local file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalStorage;

struct LocalFile(io::BufWriter<fs::File>);

impl StorageFile for LocalFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}

impl Storage for LocalStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(LocalFile(io::BufWriter::with_capacity(
            256 * 1024,
            f,
        ))))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r?,
        };
        let mut names = Vec::new();
        for e in entries {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        fs::metadata(path).map(|m| m.len())
    }
}

/// Fails every operation after a budget of operations, and can then undo what
/// a crash would lose: bytes not synced, creations and renames whose directory
/// was not synced. Used by crash-consistency tests. Clones share the budget.
pub struct FaultyStorage<S> {
    shared: Arc<FaultyInner<S>>,
}

impl<S> Clone for FaultyStorage<S> {
    fn clone(&self) -> Self {
        FaultyStorage {
            shared: self.shared.clone(),
        }
    }
}

struct FaultyInner<S> {
    inner: S,
    budget: AtomicI64,
    journal: Mutex<Journal>,
}

#[derive(Default)]
struct Journal {
    /// Files with bytes not yet synced: path -> length known durable.
    unsynced: HashMap<PathBuf, u64>,
    /// Renames not yet made durable by a directory sync: (from, to, previous `to` bytes).
    renames: Vec<(PathBuf, PathBuf, Option<Vec<u8>>)>,
    /// Files whose creation was not yet made durable by a directory sync.
    created: HashSet<PathBuf>,
}

impl<S: Storage> FaultyInner<S> {
    fn spend(&self, what: &str, path: &Path) -> io::Result<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            Err(io::Error::other(format!(
                "injected failure: {what} {}",
                path.display()
            )))
        } else {
            Ok(())
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; the first `budget` operations succeed, later ones fail.
    pub fn new(inner: S, budget: u64) -> Self {
        FaultyStorage {
            shared: Arc::new(FaultyInner {
                inner,
                budget: AtomicI64::new(budget as i64),
                journal: Mutex::default(),
            }),
        }
    }

    /// Operations left before failures start (zero or negative once failing).
    pub fn remaining(&self) -> i64 {
        self.shared.budget.load(Ordering::SeqCst)
    }

    /// Simulates a power loss: undoes what was not made durable. Call it after
    /// the operation under test failed, then reopen with a fresh storage.
    pub fn crash(&self) -> io::Result<()> {
        let mut j = self.shared.journal();
        for (from, to, previous) in j.renames.drain(..).rev() {
            if let Ok(bytes) = fs::read(&to) {
                let _ = fs::write(&from, bytes);
            }
            match previous {
                Some(bytes) => fs::write(&to, bytes)?,
                None => {
                    let _ = fs::remove_file(&to);
                }
            }
        }
        for (path, durable) in j.unsynced.drain() {
            if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
                f.set_len(durable)?;
            }
        }
        for path in j.created.drain() {
            let _ = fs::remove_file(&path);
        }
        Ok(())
    }
}

struct FaultyFile<S> {
    inner: Box<dyn StorageFile>,
    path: PathBuf,
    written: u64,
    owner: Arc<FaultyInner<S>>,
}

impl<S: Storage> StorageFile for FaultyFile<S> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.owner.spend("write", &self.path)?;
        self.owner
            .journal()
            .unsynced
            .entry(self.path.clone())
            .or_insert(self.written);
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.owner.spend("sync", &self.path)?;
        self.inner.sync()?;
        self.owner.journal().unsynced.remove(&self.path);
        Ok(())
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let s = &self.shared;
        s.spend("create", path)?;
        let inner = s.inner.create(path)?;
        s.journal().created.insert(path.to_path_buf());
        Ok(Box::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            written: 0,
            owner: s.clone(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.shared.spend("read", path)?;
        self.shared.inner.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let s = &self.shared;
        s.spend("rename", from)?;
        let previous = fs::read(to).ok();
        s.inner.rename(from, to)?;
        let mut j = s.journal();
        if let Some(durable) = j.unsynced.remove(from) {
            j.unsynced.insert(to.to_path_buf(), durable);
        }
        j.created.remove(from);
        j.renames
            .push((from.to_path_buf(), to.to_path_buf(), previous));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.spend("remove", path)?;
        self.shared.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.spend("remove dir", path)?;
        self.shared.inner.remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.spend("create dir", path)?;
        self.shared.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.shared.spend("list", path)?;
        self.shared.inner.list_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let s = &self.shared;
        s.spend("sync dir", path)?;
        s.inner.sync_dir(path)?;
        let mut j = s.journal();
        j.renames.retain(|(_, to, _)| to.parent() != Some(path));
        j.created.retain(|p| p.parent() != Some(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        self.shared.inner.len(path)
    }
}
