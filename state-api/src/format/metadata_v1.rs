//! The `_metadata` payload of format version 1, read only and frozen.
//!
//! Version 1 stored the postcard encoding of the public metadata types as
//! they were declared then. Those types may change; these private mirrors
//! may not: they copy the version 1 declarations field for field and variant
//! for variant (postcard writes fields in declaration order, integers as
//! varints, enum variants as their index, sequences and maps as a varint
//! count followed by the items, `u8` as one raw byte). Never edit them; the
//! files under `testdata/formats/v1/` prove they still read version 1.
//!
//! postcard's decoder returns errors on malformed input and caps what it
//! reserves for a sequence by serde's cautious size hint, so arbitrary bytes
//! are an error, never a panic or a huge allocation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::bytes::ByteReader;
use super::coding::{Decode, Encode};
use crate::codec::CodecSchema;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, IncrementalNativeStateHandle, KeyGroupsStateHandle,
    KeyedStateHandle, NativeFile, OperatorStateHandle, OperatorStatePart,
};
use crate::snapshot::metadata::{CheckpointMetadata, OperatorState, SubtaskState};
use crate::snapshot::stream::StreamStateHandle;
use crate::snapshot::SnapshotKind;
use crate::state::{StateKind, StateMeta};

#[derive(Deserialize)]
struct CheckpointMetadataV1 {
    checkpoint_id: u64,
    kind: SnapshotKindV1,
    timestamp_millis: u64,
    operators: Vec<OperatorStateV1>,
}

#[derive(Deserialize)]
enum SnapshotKindV1 {
    Checkpoint,
    Savepoint,
}

#[derive(Deserialize)]
struct OperatorStateV1 {
    operator_id: String,
    parallelism: u32,
    max_parallelism: u32,
    subtasks: Vec<SubtaskStateV1>,
}

#[derive(Deserialize)]
struct SubtaskStateV1 {
    keyed: Vec<KeyedStateHandleV1>,
    operator: Vec<OperatorStateHandleV1>,
    raw_keyed: Vec<KeyedStateHandleV1>,
    raw_operator: Vec<OperatorStateHandleV1>,
}

#[derive(Deserialize)]
enum KeyedStateHandleV1 {
    KeyGroups(KeyGroupsStateHandleV1),
    IncrementalHeap(IncrementalKeyedStateHandleV1),
    IncrementalNative(IncrementalNativeStateHandleV1),
}

#[derive(Deserialize)]
struct KeyGroupsStateHandleV1 {
    checkpoint_id: u64,
    data: StreamStateHandleV1,
    max_parallelism: u32,
    range: KeyGroupRangeV1,
    offsets: Vec<u64>,
}

#[derive(Deserialize)]
struct IncrementalKeyedStateHandleV1 {
    checkpoint_id: u64,
    range: KeyGroupRangeV1,
    base: KeyGroupsStateHandleV1,
    deltas: Vec<KeyGroupsStateHandleV1>,
}

#[derive(Deserialize)]
struct NativeFileV1 {
    name: String,
    data: StreamStateHandleV1,
    crc32: u32,
}

#[derive(Deserialize)]
struct IncrementalNativeStateHandleV1 {
    checkpoint_id: u64,
    backend: String,
    format_version: u32,
    max_parallelism: u32,
    range: KeyGroupRangeV1,
    source_range: KeyGroupRangeV1,
    key_codec: CodecSchemaV1,
    states: Vec<StateMetaV1>,
    shared: Vec<NativeFileV1>,
    private: Vec<NativeFileV1>,
}

#[derive(Deserialize)]
enum StreamStateHandleV1 {
    InMemory { name: String, data: Vec<u8> },
    File { path: String, size: u64 },
}

#[derive(Deserialize)]
struct KeyGroupRangeV1 {
    start: u32,
    end_exclusive: u32,
}

#[derive(Deserialize)]
struct CodecSchemaV1 {
    name: String,
    version: u32,
}

#[derive(Deserialize)]
struct StateMetaV1 {
    name: String,
    kind: StateKindV1,
    namespace: CodecSchemaV1,
    values: Vec<CodecSchemaV1>,
}

#[derive(Deserialize)]
enum StateKindV1 {
    Value,
    List,
    Reducing,
    Aggregating,
    Map,
}

#[derive(Deserialize)]
struct OperatorStateHandleV1 {
    checkpoint_id: u64,
    data: StreamStateHandleV1,
    states: BTreeMap<String, OperatorStatePartV1>,
}

#[derive(Deserialize)]
struct OperatorStatePartV1 {
    distribution: DistributionV1,
    offsets: Vec<u64>,
}

#[derive(Deserialize)]
enum DistributionV1 {
    SplitDistribute,
    Union,
    Broadcast,
}

/// Decodes a version 1 payload (`payload` starts at offset `base` of `file`).
///
/// Version 1 checked nothing beyond postcard's layout, so the value is then
/// held to every rule the current decoder enforces (a state's number of
/// value schemas for its kind, ranges, offsets...) by decoding its current
/// encoding: whatever this function returns, the current format can write
/// and read back.
pub(crate) fn decode(file: &str, base: u64, payload: &[u8]) -> Result<CheckpointMetadata> {
    let r = ByteReader::new(payload, file, base);
    let metadata: CheckpointMetadata =
        match postcard::take_from_bytes::<CheckpointMetadataV1>(payload) {
            Ok((metadata, [])) => metadata.into(),
            Ok((_, rest)) => {
                return Err(r.corrupted(format!("{} bytes after the metadata", rest.len())))
            }
            Err(e) => return Err(r.corrupted(format!("version 1 metadata does not decode: {e}"))),
        };
    let current = metadata.encode_to_vec().map_err(|e| {
        r.corrupted(format!(
            "version 1 metadata cannot be written as the current version: {e}"
        ))
    })?;
    match CheckpointMetadata::decode_exact(&current, file, base, "metadata") {
        Ok(checked) if checked == metadata => Ok(metadata),
        Ok(_) => Err(r.corrupted("version 1 metadata does not survive the current encoding")),
        Err(Error::Corrupted { reason, .. }) => Err(r.corrupted(format!(
            "version 1 metadata breaks a rule of the format: {reason}"
        ))),
        Err(e) => Err(e),
    }
}

impl From<CheckpointMetadataV1> for CheckpointMetadata {
    fn from(m: CheckpointMetadataV1) -> Self {
        CheckpointMetadata {
            checkpoint_id: m.checkpoint_id,
            kind: match m.kind {
                SnapshotKindV1::Checkpoint => SnapshotKind::Checkpoint,
                SnapshotKindV1::Savepoint => SnapshotKind::Savepoint,
            },
            timestamp_millis: m.timestamp_millis,
            operators: m.operators.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<OperatorStateV1> for OperatorState {
    fn from(o: OperatorStateV1) -> Self {
        OperatorState {
            operator_id: o.operator_id,
            parallelism: o.parallelism,
            max_parallelism: o.max_parallelism,
            subtasks: o.subtasks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<SubtaskStateV1> for SubtaskState {
    fn from(s: SubtaskStateV1) -> Self {
        SubtaskState {
            keyed: s.keyed.into_iter().map(Into::into).collect(),
            operator: s.operator.into_iter().map(Into::into).collect(),
            raw_keyed: s.raw_keyed.into_iter().map(Into::into).collect(),
            raw_operator: s.raw_operator.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<KeyedStateHandleV1> for KeyedStateHandle {
    fn from(h: KeyedStateHandleV1) -> Self {
        match h {
            KeyedStateHandleV1::KeyGroups(h) => KeyedStateHandle::KeyGroups(h.into()),
            KeyedStateHandleV1::IncrementalHeap(h) => {
                KeyedStateHandle::IncrementalHeap(IncrementalKeyedStateHandle {
                    checkpoint_id: h.checkpoint_id,
                    range: h.range.into(),
                    base: h.base.into(),
                    deltas: h.deltas.into_iter().map(Into::into).collect(),
                })
            }
            KeyedStateHandleV1::IncrementalNative(h) => {
                KeyedStateHandle::IncrementalNative(IncrementalNativeStateHandle {
                    checkpoint_id: h.checkpoint_id,
                    backend: h.backend,
                    format_version: h.format_version,
                    max_parallelism: h.max_parallelism,
                    range: h.range.into(),
                    source_range: h.source_range.into(),
                    key_codec: h.key_codec.into(),
                    states: h.states.into_iter().map(Into::into).collect(),
                    shared: h.shared.into_iter().map(Into::into).collect(),
                    private: h.private.into_iter().map(Into::into).collect(),
                })
            }
        }
    }
}

impl From<KeyGroupsStateHandleV1> for KeyGroupsStateHandle {
    fn from(h: KeyGroupsStateHandleV1) -> Self {
        KeyGroupsStateHandle {
            checkpoint_id: h.checkpoint_id,
            data: h.data.into(),
            max_parallelism: h.max_parallelism,
            range: h.range.into(),
            offsets: h.offsets,
        }
    }
}

impl From<NativeFileV1> for NativeFile {
    fn from(f: NativeFileV1) -> Self {
        NativeFile {
            name: f.name,
            data: f.data.into(),
            crc32: f.crc32,
        }
    }
}

impl From<StreamStateHandleV1> for StreamStateHandle {
    fn from(s: StreamStateHandleV1) -> Self {
        match s {
            StreamStateHandleV1::InMemory { name, data } => StreamStateHandle::InMemory {
                name,
                data: data.into(),
            },
            StreamStateHandleV1::File { path, size } => StreamStateHandle::File {
                path: path.into(),
                size,
            },
        }
    }
}

/// Version 1 stored the range's fields as they were; every range a writer
/// produced was either `(0, 0)` or `start < end_exclusive`. Anything else
/// has no key group and reads as the empty range, as version 1 treated it.
impl From<KeyGroupRangeV1> for KeyGroupRange {
    fn from(r: KeyGroupRangeV1) -> Self {
        match r.end_exclusive.checked_sub(1) {
            Some(end) if r.start < r.end_exclusive => KeyGroupRange::new(r.start, end),
            _ => KeyGroupRange::EMPTY,
        }
    }
}

impl From<CodecSchemaV1> for CodecSchema {
    fn from(s: CodecSchemaV1) -> Self {
        CodecSchema::new(s.name, s.version)
    }
}

impl From<StateMetaV1> for StateMeta {
    fn from(s: StateMetaV1) -> Self {
        StateMeta {
            name: s.name,
            kind: match s.kind {
                StateKindV1::Value => StateKind::Value,
                StateKindV1::List => StateKind::List,
                StateKindV1::Reducing => StateKind::Reducing,
                StateKindV1::Aggregating => StateKind::Aggregating,
                StateKindV1::Map => StateKind::Map,
            },
            namespace: s.namespace.into(),
            values: s.values.into_iter().map(Into::into).collect(),
            ttl: None,
        }
    }
}

impl From<OperatorStateHandleV1> for OperatorStateHandle {
    fn from(h: OperatorStateHandleV1) -> Self {
        OperatorStateHandle {
            checkpoint_id: h.checkpoint_id,
            data: h.data.into(),
            states: h
                .states
                .into_iter()
                .map(|(name, part)| {
                    let distribution = match part.distribution {
                        DistributionV1::SplitDistribute => Distribution::SplitDistribute,
                        DistributionV1::Union => Distribution::Union,
                        DistributionV1::Broadcast => Distribution::Broadcast,
                    };
                    (
                        name,
                        OperatorStatePart {
                            distribution,
                            offsets: part.offsets,
                        },
                    )
                })
                .collect(),
        }
    }
}
