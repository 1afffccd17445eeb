//! `_metadata`: what a completed checkpoint or savepoint holds.
//!
//! ```text
//! header  magic "SMET", version 1, flags 0
//! frame   postcard encoding of CheckpointMetadata (CRC32, optionally zstd)
//! footer  offset of that frame u64 | crc32 u32 | magic "SMET"
//! ```
//!
//! File paths inside are stored relative to the metadata's base folder (the
//! job folder for a checkpoint, the savepoint folder for a savepoint) when
//! they lie inside it, so a savepoint folder can be moved as a whole.
//! Publishing is atomic: the metadata is written to a temporary name, synced,
//! renamed to `_metadata`, and the folder is synced. A checkpoint exists only
//! once that rename is durable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::{unique_file_name, METADATA_FILE};
use super::storage::Storage;
use crate::error::{Error, Result};
use crate::format::bytes::ByteReader;
use crate::format::frame::{decode_frame, encode_frame, Compression};
use crate::format::{check_envelope, encode_footer, encode_header, FILE_HEADER_LEN};
use crate::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use crate::snapshot::stream::StreamStateHandle;

/// Magic bytes of a metadata file.
pub const METADATA_MAGIC: [u8; 4] = *b"SMET";
/// The metadata format version this build writes.
pub const METADATA_FORMAT_VERSION: u16 = 1;
/// Metadata versions this build reads.
pub const METADATA_SUPPORTED_VERSIONS: &[u16] = &[1];

pub use crate::snapshot::SnapshotKind;

/// The state of one subtask of an operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Managed keyed state.
    pub keyed: Vec<KeyedStateHandle>,
    /// Managed operator state.
    pub operator: Vec<OperatorStateHandle>,
    /// Raw keyed state: bytes the operator wrote per key group.
    pub raw_keyed: Vec<KeyedStateHandle>,
    /// Raw operator state: bytes the operator wrote per subtask.
    pub raw_operator: Vec<OperatorStateHandle>,
}

/// The state of every subtask of one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The operator's id, stable across restores.
    pub operator_id: String,
    /// Parallelism when the snapshot was taken.
    pub parallelism: u32,
    /// The operator's max parallelism (never changes across restores).
    pub max_parallelism: u32,
    /// One entry per subtask, in subtask order.
    pub subtasks: Vec<SubtaskState>,
}

/// The content of `_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint (or savepoint) id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// When it completed, in milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
    /// Every operator's state.
    pub operators: Vec<OperatorState>,
}

impl CheckpointMetadata {
    /// The operator with id `operator_id`.
    pub fn operator(&self, operator_id: &str) -> Option<&OperatorState> {
        self.operators.iter().find(|o| o.operator_id == operator_id)
    }

    /// Every stream handle, mutably (to relativise or resolve paths).
    fn streams_mut(&mut self) -> impl Iterator<Item = &mut StreamStateHandle> {
        self.operators
            .iter_mut()
            .flat_map(|o| o.subtasks.iter_mut())
            .flat_map(|s| {
                let keyed = s
                    .keyed
                    .iter_mut()
                    .chain(s.raw_keyed.iter_mut())
                    .flat_map(keyed_streams_mut);
                let operator = s
                    .operator
                    .iter_mut()
                    .chain(s.raw_operator.iter_mut())
                    .map(|h| &mut h.data);
                keyed.chain(operator).collect::<Vec<_>>()
            })
    }

    /// Every file path the metadata references.
    pub fn files(&self) -> Vec<PathBuf> {
        self.file_sizes()
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    }

    /// Every file the metadata references, with the size its handle records.
    pub fn file_sizes(&self) -> Vec<(PathBuf, u64)> {
        let mut copy = self.clone();
        copy.streams_mut()
            .filter_map(|s| match s {
                StreamStateHandle::File { path, size } => Some((path.clone(), *size)),
                _ => None,
            })
            .collect()
    }
}

fn keyed_streams_mut(h: &mut KeyedStateHandle) -> Vec<&mut StreamStateHandle> {
    match h {
        KeyedStateHandle::KeyGroups(k) => vec![&mut k.data],
        KeyedStateHandle::IncrementalHeap(i) => std::iter::once(&mut i.base.data)
            .chain(i.deltas.iter_mut().map(|d| &mut d.data))
            .collect(),
        KeyedStateHandle::IncrementalNative(n) => n
            .shared
            .iter_mut()
            .chain(n.private.iter_mut())
            .map(|f| &mut f.data)
            .collect(),
    }
}

/// Writes `metadata` atomically as `<dir>/_metadata`, with file paths made
/// relative to `base` where they lie inside it.
pub fn publish_metadata(
    storage: &dyn Storage,
    dir: &Path,
    base: &Path,
    metadata: &CheckpointMetadata,
) -> Result<PathBuf> {
    let mut relative = metadata.clone();
    for s in relative.streams_mut() {
        if let StreamStateHandle::File { path, .. } = s {
            if let Ok(rel) = path.strip_prefix(base) {
                *path = rel.to_path_buf();
            }
        }
    }
    let payload = postcard::to_allocvec(&relative).map_err(|e| Error::InvalidArgument {
        what: format!("checkpoint metadata cannot be encoded (non-UTF-8 path?): {e}"),
    })?;
    let mut bytes = Vec::with_capacity(payload.len() + 64);
    encode_header(&mut bytes, &METADATA_MAGIC, METADATA_FORMAT_VERSION, 0);
    let frame_at = bytes.len() as u64;
    encode_frame(&mut bytes, &payload, Compression::Zstd { level: 3 })?;
    encode_footer(&mut bytes, &METADATA_MAGIC, frame_at);

    let target = dir.join(METADATA_FILE);
    let tmp = dir.join(format!("{METADATA_FILE}.inprogress-{}", unique_file_name()));
    let io = |what: &str, e| Error::io(format!("{what} {}", target.display()), e);
    let mut f = storage
        .create(&tmp)
        .map_err(|e| io("creating metadata for", e))?;
    f.write_all(&bytes)
        .map_err(|e| io("writing metadata for", e))?;
    f.sync().map_err(|e| io("syncing metadata for", e))?;
    drop(f);
    storage
        .rename(&tmp, &target)
        .map_err(|e| io("publishing", e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| io("syncing the folder of", e))?;
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
    let name = file_path.display().to_string();
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
    for s in resolved.streams_mut() {
        if let StreamStateHandle::File { path, .. } = s {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
    Ok(resolved)
}

/// Decodes metadata bytes (paths as stored).
pub fn decode_metadata(name: &str, bytes: &[u8]) -> Result<CheckpointMetadata> {
    let envelope = check_envelope(name, bytes, &METADATA_MAGIC, METADATA_SUPPORTED_VERSIONS, 0)?;
    if envelope.index_offset != FILE_HEADER_LEN as u64 {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: envelope.index_offset,
            reason: "the metadata frame must follow the header".into(),
        });
    }
    let (payload, end) = decode_frame(name, bytes, envelope.index_offset)?;
    if end != (bytes.len() - crate::format::FOOTER_LEN) as u64 {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: end,
            reason: "bytes between the metadata frame and the footer".into(),
        });
    }
    let r = ByteReader::new(&payload, name, envelope.index_offset);
    match postcard::take_from_bytes::<CheckpointMetadata>(&payload) {
        Ok((metadata, [])) => Ok(metadata),
        Ok((_, rest)) => Err(r.corrupted(format!("{} bytes after the metadata", rest.len()))),
        Err(e) => Err(r.corrupted(format!("metadata does not decode: {e}"))),
    }
}
