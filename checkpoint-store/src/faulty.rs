//! Fault injection for crash-consistency tests (feature `test-support`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::storage::{Storage, StorageFile};

/// Fails every operation after a budget of operations, and can then undo what
/// a crash would lose: bytes not synced, creations whose directory
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

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        self.shared.spend("open", path)?;
        self.shared.inner.open(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.shared.spend("read", path)?;
        self.shared.inner.read(path)
    }

    /// Published files are durable when this returns, so a crash keeps them.
    fn publish(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.shared.spend("publish", path)?;
        self.shared.inner.publish(path, bytes)
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
        j.created.retain(|p| p.parent() != Some(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        self.shared.inner.len(path)
    }

    fn describe(&self, path: &Path) -> String {
        self.shared.inner.describe(path)
    }

    fn holds(&self, path: &Path) -> bool {
        self.shared.inner.holds(path)
    }
}
