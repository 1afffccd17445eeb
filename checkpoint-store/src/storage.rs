//! The operations checkpoint storage needs, behind a small trait: local
//! files ([`LocalStorage`]), object stores (`ObjectStoreStorage`, with the
//! `object-store` feature) and, for tests, fault injection (`FaultyStorage`,
//! with the `test-support` feature).
//!
//! Paths are absolute paths; an object store maps them under its URL's
//! prefix. Contract of every implementation:
//! * `create` makes a new file; its bytes are durable and visible only after
//!   [`StorageFile::sync`] returned. A file dropped before that may be left
//!   partly written on a local file system (orphan cleanup removes it) and is
//!   never visible on an object store (its multipart upload is aborted).
//! * `publish` creates a file whole, durably, and only if it does not exist:
//!   this is how `_metadata` appears, so a checkpoint is either complete or
//!   absent, and two writers cannot both publish it.
//! * Directories are a convenience of local file systems: on object stores
//!   `create_dir_all` and `sync_dir` do nothing, and a directory is a prefix.
//! * Errors are returned, never panics; after an error the caller must not
//!   assume anything about the file's content.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::snapshot::stream::StateFileReader;

/// A file being written.
pub trait StorageFile: Send {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the bytes written so far durable and visible (object stores:
    /// completes the upload). Nothing is written after it.
    fn sync(&mut self) -> io::Result<()>;
}

/// File operations used by checkpoint storage.
pub trait Storage: Send + Sync + 'static {
    /// Creates a new file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens a file for reading, streaming its bytes.
    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    /// Creates `path` holding `bytes` in one atomic, durable step, only if it
    /// does not exist: an existing `path` is an error of kind
    /// [`io::ErrorKind::AlreadyExists`] and keeps its bytes.
    fn publish(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Removes a file; a missing file is not an error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it; a missing one is not an error.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory, sorted (empty if it does not exist).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creations, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
    /// The size of a file in bytes (an error of kind `NotFound` if missing).
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Copies the local file `local` to `path`, durably.
    fn upload_file(&self, local: &Path, path: &Path) -> io::Result<()> {
        let mut from = fs::File::open(local)?;
        let mut to = self.create(path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
        }
        to.sync()
    }
    /// Copies `path` into a new local file `local` (not synced: the caller
    /// syncs what it keeps).
    fn download_file(&self, path: &Path, local: &Path) -> io::Result<()> {
        let mut from = self.open(path)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(local)?;
        io::copy(&mut from, &mut to)?;
        to.flush()
    }
    /// How `path` is named in messages (an object store gives its URL).
    fn describe(&self, path: &Path) -> String {
        path.display().to_string()
    }
    /// Where `path` is on the local file system, when the store is local and
    /// may be read behind its back (hard links on restore); `None` otherwise.
    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        let _ = path;
        None
    }
    /// Whether `path` names a file of this store (an object store holds the
    /// paths under its URL; a local store every path).
    fn holds(&self, path: &Path) -> bool {
        let _ = path;
        true
    }
}

/// Reads state files through a [`Storage`]: what backends restore with.
/// Paths the storage does not hold (a savepoint in a local folder restored
/// by a backend that checkpoints to S3) are read from the local file system.
#[derive(Clone)]
pub struct StorageFiles(pub Arc<dyn Storage>);

impl StorageFiles {
    fn route(&self, path: &Path) -> &dyn Storage {
        if self.0.holds(path) {
            &*self.0
        } else {
            &LocalStorage
        }
    }
}

impl StateFileReader for StorageFiles {
    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        self.route(path).open(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.route(path).read(path)
    }

    fn describe(&self, path: &Path) -> String {
        self.route(path).describe(path)
    }

    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        self.route(path).local_path(path)
    }

    fn download(&self, path: &Path, local: &Path) -> io::Result<u64> {
        self.route(path).download_file(path, local)?;
        Ok(fs::metadata(local)?.len())
    }
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

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            fs::File::open(path)?,
        )))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    /// Writes a temporary file beside `path`, syncs it, hard-links it to
    /// `path` (which fails if `path` exists, unlike a rename), removes the
    /// temporary name and syncs the folder.
    fn publish(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            "{}.inprogress-{}",
            name.unwrap_or_default(),
            crate::layout::unique_file_name()
        ));
        let result = (|| {
            let mut f = self.create(&tmp)?;
            f.write_all(bytes)?;
            f.sync()?;
            drop(f);
            fs::hard_link(&tmp, path)
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        self.sync_dir(dir)
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

    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
}
