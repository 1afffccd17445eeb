//! Where snapshot bytes go: checkpoint stream factories and their streams.
//!
//! A backend's asynchronous snapshot part writes through a
//! [`CheckpointOutputStream`] obtained from a [`CheckpointStreamFactory`], and
//! gets back a [`StreamStateHandle`] naming the bytes it wrote. The in-memory
//! factory here keeps the bytes in memory up to a size limit (Flink's
//! `MemCheckpointStreamFactory`); file and object-store factories implement the
//! same traits.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names bytes written by a checkpoint stream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
// Exhaustive on purpose: each variant is a tag of the snapshot format, so a
// new one comes with a format version and every reader must handle it.
pub enum StreamStateHandle {
    /// Bytes held in memory (and inlined into checkpoint metadata).
    InMemory {
        /// A name for error messages.
        name: String,
        /// The bytes.
        data: Arc<[u8]>,
    },
    /// A file on a local or mounted file system.
    File {
        /// The file's path.
        path: PathBuf,
        /// Its expected size in bytes.
        size: u64,
    },
}

impl std::fmt::Debug for StreamStateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamStateHandle::InMemory { name, data } => {
                write!(f, "InMemory({name}, {} bytes)", data.len())
            }
            StreamStateHandle::File { path, size } => {
                write!(f, "File({}, {size} bytes)", path.display())
            }
        }
    }
}

/// Bytes of a stream handle, ready to read.
#[derive(Clone)]
pub struct StreamBytes {
    name: Arc<str>,
    data: Arc<[u8]>,
}

impl StreamBytes {
    /// Bytes named `name` (used in error messages).
    pub fn new(name: &str, data: Arc<[u8]>) -> Self {
        StreamBytes {
            name: Arc::from(name),
            data,
        }
    }

    /// The name for error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl StreamStateHandle {
    /// A short description naming the bytes, used in errors.
    pub fn describe(&self) -> String {
        match self {
            StreamStateHandle::InMemory { name, .. } => name.clone(),
            StreamStateHandle::File { path, .. } => path.display().to_string(),
        }
    }

    /// The size of the bytes.
    pub fn size(&self) -> u64 {
        match self {
            StreamStateHandle::InMemory { data, .. } => data.len() as u64,
            StreamStateHandle::File { size, .. } => *size,
        }
    }

    /// Reads the bytes. A file whose size differs from the handle's is a
    /// [`Error::Truncated`] or [`Error::Corrupted`] error. Prefer
    /// [`StreamStateHandle::read_for`], whose errors say what needs the file.
    pub fn read(&self) -> Result<StreamBytes> {
        self.read_for("a snapshot")
    }

    /// Reads the bytes for `needed_by` (such as `checkpoint 5`): a file that
    /// cannot be read is an [`Error::StateFileUnreadable`] naming the file and
    /// `needed_by`; a file whose size differs from the handle's is a
    /// [`Error::Truncated`] or [`Error::Corrupted`] error.
    pub fn read_for(&self, needed_by: &str) -> Result<StreamBytes> {
        self.read_with(&LocalFiles, needed_by)
    }

    /// Like [`StreamStateHandle::read_for`], reading files through `files`
    /// (checkpoint storage gives readers for object stores).
    pub fn read_with(&self, files: &dyn StateFileReader, needed_by: &str) -> Result<StreamBytes> {
        match self {
            StreamStateHandle::InMemory { name, data } => Ok(StreamBytes {
                name: Arc::from(name.as_str()),
                data: data.clone(),
            }),
            StreamStateHandle::File { path, size } => {
                let name = files.describe(path);
                let data = files
                    .read(path)
                    .map_err(|source| Error::StateFileUnreadable {
                        file: name.clone(),
                        needed_by: needed_by.to_string(),
                        source,
                    })?;
                check_file_size(&name, *size, data.len() as u64)?;
                Ok(StreamBytes {
                    name: Arc::from(name.as_str()),
                    data: Arc::from(data),
                })
            }
        }
    }
}

/// Reads the files that [`StreamStateHandle::File`] handles name. The
/// `checkpoint-store` crate implements it for every store it writes to;
/// [`LocalFiles`] reads the local file system.
pub trait StateFileReader: Send + Sync {
    /// Opens a file, streaming its bytes.
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn Read + Send>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    /// How `path` is named in messages (a URL for an object store).
    fn describe(&self, path: &Path) -> String {
        path.display().to_string()
    }
    /// Where `path` is on the local file system, if it is there (so that a
    /// restore may hard-link it instead of copying); `None` for remote stores.
    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        let _ = path;
        None
    }
    /// Copies `path` into the new local file `local`, streaming.
    fn download(&self, path: &Path, local: &Path) -> std::io::Result<u64> {
        let mut from = self.open(path)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(local)?;
        std::io::copy(&mut from, &mut to)
    }
}

/// A shared [`StateFileReader`].
pub type SharedFileReader = Arc<dyn StateFileReader>;

/// Reads state files from the local file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFiles;

impl StateFileReader for LocalFiles {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::fs::File::open(path)?,
        )))
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
}

/// Checks that file `name` has the `expected` size its handle records: a
/// shorter file is [`Error::Truncated`], a longer one [`Error::Corrupted`].
pub fn check_file_size(name: &str, expected: u64, actual: u64) -> Result<()> {
    if actual < expected {
        return Err(Error::Truncated {
            file: name.to_string(),
            offset: 0,
            needed: expected,
            available: actual,
        });
    }
    if actual > expected {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: expected,
            reason: format!("file has {actual} bytes, its handle says {expected}"),
        });
    }
    Ok(())
}

/// Whether a stream's file belongs to one checkpoint or may be shared by several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamScope {
    /// Owned by one checkpoint and deleted with it.
    Exclusive,
    /// Referenced by several checkpoints (incremental pieces).
    Shared,
}

/// Creates output streams for one checkpoint.
pub trait CheckpointStreamFactory: Send + Sync {
    /// Opens a new stream. Bytes written to it are durable once
    /// [`CheckpointOutputStream::close_and_get_handle`] returns.
    fn create_stream(&self, scope: StreamScope) -> Result<Box<dyn CheckpointOutputStream>>;
}

/// A stream that snapshot bytes are written to.
pub trait CheckpointOutputStream: Send {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// Bytes written so far (the offset of the next write).
    fn position(&self) -> u64;
    /// Finishes the stream (making it durable where that applies) and names it.
    fn close_and_get_handle(self: Box<Self>) -> Result<StreamStateHandle>;
}

/// Default limit of the in-memory factory: 5 MiB, as Flink's MemoryStateBackend.
pub const DEFAULT_MAX_IN_MEMORY_STATE_SIZE: usize = 5 * 1024 * 1024;

/// Keeps snapshot bytes in memory, up to `max_size` bytes per stream.
#[derive(Clone, Debug)]
pub struct MemoryCheckpointStreamFactory {
    max_size: usize,
    label: String,
}

impl MemoryCheckpointStreamFactory {
    /// A factory whose streams refuse to grow past `max_size` bytes.
    pub fn new(max_size: usize, label: impl Into<String>) -> Self {
        MemoryCheckpointStreamFactory {
            max_size,
            label: label.into(),
        }
    }

    /// The size limit.
    pub fn max_size(&self) -> usize {
        self.max_size
    }
}

impl CheckpointStreamFactory for MemoryCheckpointStreamFactory {
    fn create_stream(&self, _scope: StreamScope) -> Result<Box<dyn CheckpointOutputStream>> {
        Ok(Box::new(MemoryOutputStream {
            buf: Vec::new(),
            max_size: self.max_size,
            name: self.label.clone(),
        }))
    }
}

struct MemoryOutputStream {
    buf: Vec<u8>,
    max_size: usize,
    name: String,
}

impl CheckpointOutputStream for MemoryOutputStream {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let size = self.buf.len() + bytes.len();
        if size > self.max_size {
            return Err(Error::SizeLimitExceeded {
                what: format!("in-memory snapshot '{}'", self.name),
                size: size as u64,
                limit: self.max_size as u64,
            });
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn position(&self) -> u64 {
        self.buf.len() as u64
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<StreamStateHandle> {
        Ok(StreamStateHandle::InMemory {
            name: self.name,
            data: Arc::from(self.buf),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stream_enforces_limit_and_keeps_bytes() {
        let f = MemoryCheckpointStreamFactory::new(8, "t");
        let mut s = f.create_stream(StreamScope::Exclusive).expect("stream");
        s.write_all(b"12345").expect("fits");
        let err = s.write_all(b"6789").expect_err("over the limit");
        assert_eq!(err.kind(), crate::ErrorKind::StateSizeExceeded);
        assert!(err.to_string().contains("9 bytes"), "{err}");
        s.write_all(b"678").expect("exactly the limit");
        let h = s.close_and_get_handle().expect("handle");
        assert_eq!(h.read().expect("read").bytes(), b"12345678");
    }
}
