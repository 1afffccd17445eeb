//! The `_metadata` payload of format version 2: [`CheckpointMetadata`] and
//! every snapshot handle inside it, each with its own [`Encode`] and
//! [`Decode`]. (The file around the payload is in
//! [`crate::snapshot::metadata`]; version 1 payloads are read by a frozen
//! decoder of their own.)
//!
//! ```text
//! CheckpointMetadata  u64 checkpoint_id | u8 kind (1 checkpoint, 2 savepoint)
//!                     | u64 timestamp_millis | varint n | OperatorState ...
//! OperatorState       str operator_id | u32 parallelism | u32 max_parallelism
//!                     | varint n | SubtaskState ...
//! SubtaskState        varint n | KeyedStateHandle ...     managed keyed
//!                     varint n | OperatorStateHandle ...  managed operator
//!                     varint n | KeyedStateHandle ...     raw keyed
//!                     varint n | OperatorStateHandle ...  raw operator
//! KeyedStateHandle    u8 tag | body
//!   1 KeyGroups           KeyGroupsStateHandle
//!   2 IncrementalHeap     u64 checkpoint_id | KeyGroupRange range
//!                         | KeyGroupsStateHandle base | varint n | KeyGroupsStateHandle deltas ...
//!   3 IncrementalNative   u64 checkpoint_id | str backend | u32 format_version
//!                         | u32 max_parallelism | KeyGroupRange range
//!                         | KeyGroupRange source_range | CodecSchema key_codec
//!                         | varint n | StateMeta ... | varint n | NativeFile shared ...
//!                         | varint n | NativeFile private ...
//! KeyGroupsStateHandle u64 checkpoint_id | StreamStateHandle data | u32 max_parallelism
//!                     | KeyGroupRange range | varint n | u64 offsets ...
//! NativeFile          str name | StreamStateHandle data | u32 crc32
//! OperatorStateHandle u64 checkpoint_id | StreamStateHandle data | varint n | part ...
//!   part              str state name (strictly increasing) | u8 distribution
//!                     (1 split, 2 union, 3 broadcast) | varint n | u64 offsets ...
//! StreamStateHandle   u8 tag | body
//!   1 InMemory            str name | bytes data
//!   2 File                str path (UTF-8, relative to the metadata's base folder
//!                         when inside it) | u64 size
//! ```
//!
//! `CodecSchema`, `KeyGroupRange` and `StateMeta` are in [`super::coding`];
//! `str`, `bytes` and `varint` in [`super::bytes`]. Integers are little-endian.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::bytes::{put_bytes, put_str, put_varint, ByteReader};
use super::coding::{decode_seq, put_seq, Decode, Encode, MIN_SCHEMA_LEN};
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
use crate::state::StateMeta;

const KIND_CHECKPOINT: u8 = 1;
const KIND_SAVEPOINT: u8 = 2;

const KEYED_KEY_GROUPS: u8 = 1;
const KEYED_INCREMENTAL_HEAP: u8 = 2;
const KEYED_INCREMENTAL_NATIVE: u8 = 3;

const STREAM_IN_MEMORY: u8 = 1;
const STREAM_FILE: u8 = 2;

/// Fewest bytes of each structure, so that a count is bounded by what the
/// remaining bytes can hold. Each is a lower bound (checked by a test).
const MIN_STREAM_LEN: usize = 1 + 1 + 1;
const MIN_KEY_GROUPS_LEN: usize = 8 + MIN_STREAM_LEN + 4 + 8 + 1;
const MIN_KEYED_LEN: usize = 1 + MIN_KEY_GROUPS_LEN;
const MIN_NATIVE_FILE_LEN: usize = 1 + MIN_STREAM_LEN + 4;
const MIN_STATE_META_LEN: usize = 1 + 1 + MIN_SCHEMA_LEN + 1 + MIN_SCHEMA_LEN;
const MIN_OPERATOR_PART_LEN: usize = 1 + 1 + 1;
const MIN_OPERATOR_HANDLE_LEN: usize = 8 + MIN_STREAM_LEN + 1;
const MIN_SUBTASK_LEN: usize = 4;
const MIN_OPERATOR_STATE_LEN: usize = 1 + 4 + 4 + 1;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_offsets(out: &mut Vec<u8>, offsets: &[u64]) {
    put_varint(out, offsets.len() as u64);
    for o in offsets {
        put_u64(out, *o);
    }
}

fn read_offsets(r: &mut ByteReader<'_>) -> Result<Vec<u64>> {
    let n = r.count(8)?;
    (0..n).map(|_| r.u64()).collect()
}

impl Encode for SnapshotKind {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(match self {
            SnapshotKind::Checkpoint => KIND_CHECKPOINT,
            SnapshotKind::Savepoint => KIND_SAVEPOINT,
        });
        Ok(())
    }
}

impl Decode for SnapshotKind {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        match r.u8()? {
            KIND_CHECKPOINT => Ok(SnapshotKind::Checkpoint),
            KIND_SAVEPOINT => Ok(SnapshotKind::Savepoint),
            other => Err(r.corrupted(format!("unknown snapshot kind {other}"))),
        }
    }
}

impl Encode for StreamStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            StreamStateHandle::InMemory { name, data } => {
                out.push(STREAM_IN_MEMORY);
                put_str(out, name);
                put_bytes(out, data);
            }
            StreamStateHandle::File { path, size } => {
                let Some(utf8) = path.to_str() else {
                    return Err(Error::InvalidArgument {
                        what: format!(
                            "state file path {} is not UTF-8; checkpoint metadata stores UTF-8 paths",
                            path.display()
                        ),
                    });
                };
                out.push(STREAM_FILE);
                put_str(out, utf8);
                put_u64(out, *size);
            }
        }
        Ok(())
    }
}

impl Decode for StreamStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        match r.u8()? {
            STREAM_IN_MEMORY => {
                let name = r.str()?.to_string();
                let data = r.bytes()?;
                Ok(StreamStateHandle::InMemory {
                    name,
                    data: data.into(),
                })
            }
            STREAM_FILE => {
                let path = PathBuf::from(r.str()?);
                let size = r.u64()?;
                Ok(StreamStateHandle::File { path, size })
            }
            other => Err(r.corrupted(format!("unknown stream handle tag {other}"))),
        }
    }
}

impl Encode for KeyGroupsStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.checkpoint_id);
        self.data.encode_into(out)?;
        put_u32(out, self.max_parallelism);
        self.range.encode_into(out)?;
        put_offsets(out, &self.offsets);
        Ok(())
    }
}

impl Decode for KeyGroupsStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(KeyGroupsStateHandle {
            checkpoint_id: r.u64()?,
            data: StreamStateHandle::decode_from(r)?,
            max_parallelism: r.u32()?,
            range: KeyGroupRange::decode_from(r)?,
            offsets: read_offsets(r)?,
        })
    }
}

impl Encode for IncrementalKeyedStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.checkpoint_id);
        self.range.encode_into(out)?;
        self.base.encode_into(out)?;
        put_seq(out, &self.deltas)
    }
}

impl Decode for IncrementalKeyedStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(IncrementalKeyedStateHandle {
            checkpoint_id: r.u64()?,
            range: KeyGroupRange::decode_from(r)?,
            base: KeyGroupsStateHandle::decode_from(r)?,
            deltas: decode_seq(r, MIN_KEY_GROUPS_LEN)?,
        })
    }
}

impl Encode for NativeFile {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_str(out, &self.name);
        self.data.encode_into(out)?;
        put_u32(out, self.crc32);
        Ok(())
    }
}

impl Decode for NativeFile {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(NativeFile {
            name: r.str()?.to_string(),
            data: StreamStateHandle::decode_from(r)?,
            crc32: r.u32()?,
        })
    }
}

impl Encode for IncrementalNativeStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.checkpoint_id);
        put_str(out, &self.backend);
        put_u32(out, self.format_version);
        put_u32(out, self.max_parallelism);
        self.range.encode_into(out)?;
        self.source_range.encode_into(out)?;
        self.key_codec.encode_into(out)?;
        put_seq(out, &self.states)?;
        put_seq(out, &self.shared)?;
        put_seq(out, &self.private)
    }
}

impl Decode for IncrementalNativeStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(IncrementalNativeStateHandle {
            checkpoint_id: r.u64()?,
            backend: r.str()?.to_string(),
            format_version: r.u32()?,
            max_parallelism: r.u32()?,
            range: KeyGroupRange::decode_from(r)?,
            source_range: KeyGroupRange::decode_from(r)?,
            key_codec: CodecSchema::decode_from(r)?,
            states: decode_seq::<StateMeta>(r, MIN_STATE_META_LEN)?,
            shared: decode_seq(r, MIN_NATIVE_FILE_LEN)?,
            private: decode_seq(r, MIN_NATIVE_FILE_LEN)?,
        })
    }
}

impl Encode for KeyedStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            KeyedStateHandle::KeyGroups(h) => {
                out.push(KEYED_KEY_GROUPS);
                h.encode_into(out)
            }
            KeyedStateHandle::IncrementalHeap(h) => {
                out.push(KEYED_INCREMENTAL_HEAP);
                h.encode_into(out)
            }
            KeyedStateHandle::IncrementalNative(h) => {
                out.push(KEYED_INCREMENTAL_NATIVE);
                h.encode_into(out)
            }
        }
    }
}

impl Decode for KeyedStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        match r.u8()? {
            KEYED_KEY_GROUPS => KeyGroupsStateHandle::decode_from(r).map(Self::KeyGroups),
            KEYED_INCREMENTAL_HEAP => {
                IncrementalKeyedStateHandle::decode_from(r).map(Self::IncrementalHeap)
            }
            KEYED_INCREMENTAL_NATIVE => {
                IncrementalNativeStateHandle::decode_from(r).map(Self::IncrementalNative)
            }
            other => Err(r.corrupted(format!("unknown keyed state handle tag {other}"))),
        }
    }
}

impl Encode for OperatorStateHandle {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.checkpoint_id);
        self.data.encode_into(out)?;
        put_varint(out, self.states.len() as u64);
        // A BTreeMap iterates in increasing name order, which the decoder checks.
        for (name, part) in &self.states {
            put_str(out, name);
            out.push(part.distribution.tag());
            put_offsets(out, &part.offsets);
        }
        Ok(())
    }
}

impl Decode for OperatorStateHandle {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        let checkpoint_id = r.u64()?;
        let data = StreamStateHandle::decode_from(r)?;
        let n = r.count(MIN_OPERATOR_PART_LEN)?;
        let mut states = BTreeMap::new();
        let mut previous: Option<String> = None;
        for _ in 0..n {
            let at = r.offset();
            let name = r.str()?.to_string();
            if previous.as_ref().is_some_and(|p| *p >= name) {
                return Err(r.corrupted_at(
                    at,
                    format!("operator state '{name}' is out of order or repeated"),
                ));
            }
            let tag = r.u8()?;
            let distribution = Distribution::from_tag(tag)
                .ok_or_else(|| r.corrupted(format!("unknown distribution tag {tag}")))?;
            let offsets = read_offsets(r)?;
            previous = Some(name.clone());
            states.insert(
                name,
                OperatorStatePart {
                    distribution,
                    offsets,
                },
            );
        }
        Ok(OperatorStateHandle {
            checkpoint_id,
            data,
            states,
        })
    }
}

impl Encode for SubtaskState {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_seq(out, &self.keyed)?;
        put_seq(out, &self.operator)?;
        put_seq(out, &self.raw_keyed)?;
        put_seq(out, &self.raw_operator)
    }
}

impl Decode for SubtaskState {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(SubtaskState {
            keyed: decode_seq(r, MIN_KEYED_LEN)?,
            operator: decode_seq(r, MIN_OPERATOR_HANDLE_LEN)?,
            raw_keyed: decode_seq(r, MIN_KEYED_LEN)?,
            raw_operator: decode_seq(r, MIN_OPERATOR_HANDLE_LEN)?,
        })
    }
}

impl Encode for OperatorState {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_str(out, &self.operator_id);
        put_u32(out, self.parallelism);
        put_u32(out, self.max_parallelism);
        put_seq(out, &self.subtasks)
    }
}

impl Decode for OperatorState {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(OperatorState {
            operator_id: r.str()?.to_string(),
            parallelism: r.u32()?,
            max_parallelism: r.u32()?,
            subtasks: decode_seq(r, MIN_SUBTASK_LEN)?,
        })
    }
}

impl Encode for CheckpointMetadata {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.checkpoint_id);
        self.kind.encode_into(out)?;
        put_u64(out, self.timestamp_millis);
        put_seq(out, &self.operators)
    }
}

impl Decode for CheckpointMetadata {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        Ok(CheckpointMetadata {
            checkpoint_id: r.u64()?,
            kind: SnapshotKind::decode_from(r)?,
            timestamp_millis: r.u64()?,
            operators: decode_seq(r, MIN_OPERATOR_STATE_LEN)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn len_of<T: Encode>(v: &T) -> usize {
        v.encode_to_vec().map(|b| b.len()).unwrap_or(0)
    }

    fn smallest_stream() -> StreamStateHandle {
        StreamStateHandle::InMemory {
            name: String::new(),
            data: Arc::from(&[][..]),
        }
    }

    fn smallest_key_groups() -> KeyGroupsStateHandle {
        KeyGroupsStateHandle {
            checkpoint_id: 0,
            data: smallest_stream(),
            max_parallelism: 0,
            range: KeyGroupRange::EMPTY,
            offsets: Vec::new(),
        }
    }

    /// The minimum lengths bound counts; one too large would refuse valid input.
    #[test]
    fn minimum_lengths_are_lower_bounds() {
        let file = StreamStateHandle::File {
            path: PathBuf::new(),
            size: 0,
        };
        assert_eq!(len_of(&smallest_stream()), MIN_STREAM_LEN);
        assert!(len_of(&file) >= MIN_STREAM_LEN);
        assert_eq!(len_of(&smallest_key_groups()), MIN_KEY_GROUPS_LEN);
        assert_eq!(
            len_of(&KeyedStateHandle::KeyGroups(smallest_key_groups())),
            MIN_KEYED_LEN
        );
        let heap = KeyedStateHandle::IncrementalHeap(IncrementalKeyedStateHandle {
            checkpoint_id: 0,
            range: KeyGroupRange::EMPTY,
            base: smallest_key_groups(),
            deltas: Vec::new(),
        });
        assert!(len_of(&heap) >= MIN_KEYED_LEN);
        let native = KeyedStateHandle::IncrementalNative(IncrementalNativeStateHandle {
            checkpoint_id: 0,
            backend: String::new(),
            format_version: 0,
            max_parallelism: 0,
            range: KeyGroupRange::EMPTY,
            source_range: KeyGroupRange::EMPTY,
            key_codec: CodecSchema::new("", 0),
            states: Vec::new(),
            shared: Vec::new(),
            private: Vec::new(),
        });
        assert!(len_of(&native) >= MIN_KEYED_LEN);
        let native_file = NativeFile {
            name: String::new(),
            data: smallest_stream(),
            crc32: 0,
        };
        assert_eq!(len_of(&native_file), MIN_NATIVE_FILE_LEN);
        let meta = StateMeta {
            name: String::new(),
            kind: crate::state::StateKind::Value,
            namespace: CodecSchema::new("", 0),
            values: vec![CodecSchema::new("", 0)],
            ttl: None,
        };
        // The bound is version 2's length, without the TTL byte of version 3.
        assert_eq!(len_of(&meta), MIN_STATE_META_LEN + 1);
        let mut op = OperatorStateHandle {
            checkpoint_id: 0,
            data: smallest_stream(),
            states: BTreeMap::new(),
        };
        assert_eq!(len_of(&op), MIN_OPERATOR_HANDLE_LEN);
        op.states.insert(
            String::new(),
            OperatorStatePart {
                distribution: Distribution::Union,
                offsets: Vec::new(),
            },
        );
        assert_eq!(len_of(&op), MIN_OPERATOR_HANDLE_LEN + MIN_OPERATOR_PART_LEN);
        assert_eq!(len_of(&SubtaskState::default()), MIN_SUBTASK_LEN);
        let state = OperatorState {
            operator_id: String::new(),
            parallelism: 0,
            max_parallelism: 0,
            subtasks: Vec::new(),
        };
        assert_eq!(len_of(&state), MIN_OPERATOR_STATE_LEN);
    }

    #[test]
    fn a_non_utf8_path_is_refused_at_write_time() {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&[0x66, 0xff]));
            let h = StreamStateHandle::File { path, size: 1 };
            let err = h.encode_to_vec().expect_err("not UTF-8");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
        }
    }
}
