//! The content of a checkpoint's or savepoint's `_metadata`, and its bytes.
//!
//! ```text
//! header  magic "SMET" | version u16 | flags u16 = 0 | crc32 of those 8 bytes
//! frame   the explicit encoding of CheckpointMetadata (see
//!         `format::metadata`), CRC32, zstd when that is smaller
//! footer  offset of that frame u64 | crc32 u32 | magic "SMET"
//! ```
//!
//! Version 1 files (8-byte header without CRC, payload in postcard) are
//! still read, by a frozen decoder.
//!
//! File paths inside are stored relative to the metadata's base folder (the
//! job folder for a checkpoint, the savepoint folder for a savepoint) when
//! they lie inside it, so a savepoint folder can be moved as a whole. Where
//! the bytes are stored and how they are published is the business of
//! checkpoint storage (the `checkpoint-store` crate).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::coding::{Decode, Encode};
use crate::format::frame::{decode_frame, encode_frame, Compression, FRAME_HEADER_LEN};
use crate::format::{check_envelope, encode_footer, encode_header, FormatVersion, FOOTER_LEN};
use crate::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use crate::snapshot::stream::StreamStateHandle;

/// Magic bytes of a metadata file.
pub const METADATA_MAGIC: [u8; 4] = *b"SMET";
/// The metadata format version this build writes.
pub const METADATA_FORMAT_VERSION: u16 = FormatVersion::CURRENT.number();
/// Metadata versions this build reads: 1 (postcard payload, read by a frozen
/// decoder), 2 (explicit encoding, header CRC) and 3 (state metas of native
/// handles end with their time-to-live).
pub const METADATA_SUPPORTED_VERSIONS: &[u16] = &[1, 2, 3];

pub use crate::snapshot::SnapshotKind;

/// The state of one subtask of an operator.
///
/// The serde derives of the metadata types are a convenience for callers;
/// the persisted bytes come from the hand-written encoding in
/// [`crate::format::metadata`] only.
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

    /// Makes file paths inside `base` relative to it (before encoding).
    pub fn relativize_paths(&mut self, base: &Path) {
        for s in self.streams_mut() {
            if let StreamStateHandle::File { path, .. } = s {
                if let Ok(rel) = path.strip_prefix(base) {
                    *path = rel.to_path_buf();
                }
            }
        }
    }

    /// Resolves relative file paths against `base` (after decoding).
    pub fn resolve_paths(&mut self, base: &Path) {
        for s in self.streams_mut() {
            if let StreamStateHandle::File { path, .. } = s {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
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

/// The bytes of a `_metadata` file holding `metadata` (paths as given), in
/// the current format version, its payload frame compressed with
/// `compression` when that makes it smaller.
pub fn encode_metadata(metadata: &CheckpointMetadata, compression: Compression) -> Result<Vec<u8>> {
    let payload = metadata.encode_to_vec()?;
    let mut bytes = Vec::with_capacity(payload.len() + 64);
    encode_header(&mut bytes, &METADATA_MAGIC, 0);
    let frame_at = bytes.len() as u64;
    encode_frame(&mut bytes, &payload, compression)?;
    encode_footer(&mut bytes, &METADATA_MAGIC, frame_at);
    Ok(bytes)
}

/// Decodes metadata bytes (paths as stored) of any supported version.
///
/// Every failure on damaged bytes has kind [`crate::ErrorKind::Corruption`]
/// and names `name` and an offset; inside the payload the offset is the
/// payload's start plus the position in the (decompressed) payload.
pub fn decode_metadata(name: &str, bytes: &[u8]) -> Result<CheckpointMetadata> {
    let envelope = check_envelope(name, bytes, &METADATA_MAGIC, METADATA_SUPPORTED_VERSIONS, 0)?;
    let frame_at = envelope.meta_offset();
    if envelope.index_offset != frame_at {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: envelope.index_offset,
            reason: "the metadata frame must follow the header".into(),
        });
    }
    let (payload, end) = decode_frame(name, bytes, frame_at)?;
    if end != (bytes.len() - FOOTER_LEN) as u64 {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: end,
            reason: "bytes between the metadata frame and the footer".into(),
        });
    }
    let payload_at = frame_at + FRAME_HEADER_LEN as u64;
    match envelope.version {
        FormatVersion::V1 => crate::format::metadata_v1::decode(name, payload_at, &payload),
        v @ (FormatVersion::V2 | FormatVersion::V3) => CheckpointMetadata::decode_exact_version(
            &payload,
            name,
            payload_at,
            "the checkpoint metadata",
            v.number(),
        ),
    }
}
