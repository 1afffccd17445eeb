//! Checkpoint streams that write files into the checkpoint directory.
//!
//! A stream buffers its first bytes in memory; if it is closed before they
//! exceed the inline threshold, its bytes are returned as an in-memory handle
//! that the checkpoint metadata inlines (no tiny files). Otherwise it writes a
//! file with a unique name into the checkpoint's exclusive folder or into
//! `shared/`, and syncs it on close.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::layout::unique_file_name;
use super::storage::{Storage, StorageFile};
use state_api::error::{Error, Result};
use state_api::snapshot::stream::{
    CheckpointOutputStream, CheckpointStreamFactory, StreamScope, StreamStateHandle,
};

/// Default inline threshold: 20 KiB, as Flink's file-state threshold.
pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;
/// Largest inline threshold: 1 MiB.
pub const MAX_INLINE_THRESHOLD: usize = 1024 * 1024;

/// Files a factory created, so that an aborted checkpoint can delete them.
pub type CreatedFiles = Arc<Mutex<Vec<PathBuf>>>;

/// Creates file streams for one checkpoint.
pub struct FsCheckpointStreamFactory {
    storage: Arc<dyn Storage>,
    exclusive_dir: PathBuf,
    shared_dir: PathBuf,
    inline_threshold: usize,
    label: String,
    created: CreatedFiles,
}

impl FsCheckpointStreamFactory {
    /// A factory writing exclusive files to `exclusive_dir` and shared ones to
    /// `shared_dir` (both must exist); streams up to `inline_threshold` bytes
    /// stay in memory.
    pub fn new(
        storage: Arc<dyn Storage>,
        exclusive_dir: PathBuf,
        shared_dir: PathBuf,
        inline_threshold: usize,
        label: impl Into<String>,
    ) -> Result<Self> {
        check_inline_threshold(inline_threshold)?;
        Ok(FsCheckpointStreamFactory {
            storage,
            exclusive_dir,
            shared_dir,
            inline_threshold,
            label: label.into(),
            created: Arc::default(),
        })
    }

    /// The files this factory's streams created so far.
    pub fn created_files(&self) -> CreatedFiles {
        self.created.clone()
    }
}

/// Checks an inline threshold against [`MAX_INLINE_THRESHOLD`].
pub fn check_inline_threshold(threshold: usize) -> Result<()> {
    if threshold > MAX_INLINE_THRESHOLD {
        return Err(Error::InvalidArgument {
            what: format!(
                "inline threshold {threshold} exceeds the maximum of {MAX_INLINE_THRESHOLD} bytes"
            ),
        });
    }
    Ok(())
}

impl CheckpointStreamFactory for FsCheckpointStreamFactory {
    fn create_stream(&self, scope: StreamScope) -> Result<Box<dyn CheckpointOutputStream>> {
        let dir = match scope {
            StreamScope::Exclusive => self.exclusive_dir.clone(),
            StreamScope::Shared => self.shared_dir.clone(),
        };
        Ok(Box::new(FsOutputStream {
            storage: self.storage.clone(),
            dir,
            buf: Vec::new(),
            file: None,
            position: 0,
            inline_threshold: self.inline_threshold,
            label: self.label.clone(),
            created: self.created.clone(),
        }))
    }
}

struct FsOutputStream {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    buf: Vec<u8>,
    file: Option<(PathBuf, Box<dyn StorageFile>)>,
    position: u64,
    inline_threshold: usize,
    label: String,
    created: CreatedFiles,
}

impl FsOutputStream {
    fn open_file(&mut self) -> Result<()> {
        let path = self.dir.join(unique_file_name());
        let file = self
            .storage
            .create(&path)
            .map_err(|e| Error::io(format!("creating state file {}", path.display()), e))?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.clone());
        self.file = Some((path, file));
        Ok(())
    }
}

impl CheckpointOutputStream for FsOutputStream {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.position += bytes.len() as u64;
        if self.file.is_none() {
            self.buf.extend_from_slice(bytes);
            if self.buf.len() <= self.inline_threshold {
                return Ok(());
            }
            self.open_file()?;
            let buf = std::mem::take(&mut self.buf);
            return self.write_to_file(&buf);
        }
        self.write_to_file(bytes)
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn close_and_get_handle(mut self: Box<Self>) -> Result<StreamStateHandle> {
        match self.file.take() {
            None => Ok(StreamStateHandle::InMemory {
                name: format!("{} (inline)", self.label),
                data: Arc::from(std::mem::take(&mut self.buf)),
            }),
            Some((path, mut file)) => {
                file.sync()
                    .map_err(|e| Error::io(format!("syncing state file {}", path.display()), e))?;
                Ok(StreamStateHandle::File {
                    path,
                    size: self.position,
                })
            }
        }
    }
}

impl FsOutputStream {
    fn write_to_file(&mut self, bytes: &[u8]) -> Result<()> {
        let Some((path, file)) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes)
            .map_err(|e| Error::io(format!("writing state file {}", path.display()), e))
    }
}
