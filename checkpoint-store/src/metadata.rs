//! Publishing and loading `_metadata` through a [`Storage`].
//!
//! The bytes are those of [`state_api::snapshot::metadata`]. Publishing is
//! atomic and exclusive: [`Storage::publish`] creates `_metadata` whole, only
//! if it does not exist yet (a rename of a synced temporary file on a local
//! file system, a conditional put on object storage). A checkpoint exists
//! once its `_metadata` does; two coordinators cannot both publish it.

use std::path::{Path, PathBuf};

use super::layout::METADATA_FILE;
use super::storage::Storage;
use state_api::error::{Error, Result};
use state_api::format::frame::Compression;
pub use state_api::snapshot::metadata::{
    decode_metadata, encode_metadata, CheckpointMetadata, OperatorState, SnapshotKind,
    SubtaskState, METADATA_FORMAT_VERSION, METADATA_MAGIC, METADATA_SUPPORTED_VERSIONS,
};

/// Writes `metadata` atomically as `<dir>/_metadata`, with file paths made
/// relative to `base` where they lie inside it.
pub fn publish_metadata(
    storage: &dyn Storage,
    dir: &Path,
    base: &Path,
    metadata: &CheckpointMetadata,
) -> Result<PathBuf> {
    let mut relative = metadata.clone();
    relative.relativize_paths(base);
    let bytes = encode_metadata(&relative, Compression::Zstd { level: 3 })?;

    let target = dir.join(METADATA_FILE);
    let io = |what: &str, e| Error::io(format!("{what} {}", storage.describe(&target)), e);
    storage.publish(&target, &bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::CheckpointConflict {
                checkpoint_id: metadata.checkpoint_id,
                metadata: storage.describe(&target),
            }
        } else {
            io("publishing", e)
        }
    })?;
    Ok(target)
}

/// Reads `_metadata` at `path` (or in the folder `path`), resolving relative
/// file paths against its base folder: the job folder for a checkpoint
/// (`<job>/chk-N/_metadata`), the savepoint folder for a savepoint.
pub fn load_metadata(storage: &dyn Storage, path: &Path) -> Result<CheckpointMetadata> {
    let file_path = if path.file_name().and_then(|n| n.to_str()) == Some(METADATA_FILE) {
        path.to_path_buf()
    } else {
        path.join(METADATA_FILE)
    };
    let name = storage.describe(&file_path);
    let bytes = storage.read(&file_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                what: format!("checkpoint metadata {name}"),
            }
        } else {
            Error::io(format!("reading {name}"), e)
        }
    })?;
    let metadata = decode_metadata(&name, &bytes)?;
    let folder = file_path.parent().unwrap_or(Path::new("."));
    let base = match metadata.kind {
        SnapshotKind::Checkpoint => folder.parent().unwrap_or(folder),
        SnapshotKind::Savepoint => folder,
    };
    let mut resolved = metadata;
    resolved.resolve_paths(base);
    Ok(resolved)
}
