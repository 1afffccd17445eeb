//! Raw state: bytes an operator writes into a snapshot itself, per key group
//! (raw keyed state) or per subtask (raw operator state), read back on
//! restore and redistributed like managed state (by key-group range, and by
//! even split, with [`super::rescale`]).
//!
//! Raw keyed state is a keyed snapshot file with one state, `raw`, whose
//! records carry the chunks an operator wrote for a key group (empty key and
//! namespace). Raw operator state is an operator snapshot file with one list
//! state, `raw`, one element per chunk.

use std::collections::BTreeMap;

use crate::codec::CodecSchema;
use crate::error::{Error, Result};
use crate::format::frame::Compression;
use crate::format::keyed::{
    KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, RecordBody,
};
use crate::format::operator::{
    read_operator_snapshot, write_operator_snapshot, OperatorStateData, OperatorStateMeta,
};
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::{Distribution, KeyedStateHandle, OperatorStateHandle};
use crate::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use crate::state::{StateKind, StateMeta};

/// Name of the single state of a raw state file.
pub const RAW_STATE_NAME: &str = "raw";

fn raw_schema() -> CodecSchema {
    CodecSchema::new("raw", 1)
}

/// Writes raw keyed state: chunks of bytes per key group.
pub struct RawKeyedStateWriter {
    inner: KeyedSnapshotWriter,
}

impl RawKeyedStateWriter {
    /// Starts raw keyed state for the key groups of `range`.
    pub fn new(
        streams: &dyn CheckpointStreamFactory,
        max_parallelism: u32,
        range: KeyGroupRange,
        checkpoint_id: u64,
        compression: Compression,
    ) -> Result<Self> {
        range.check_within(max_parallelism)?;
        let meta = KeyedSnapshotMeta {
            max_parallelism,
            range,
            key_codec: raw_schema(),
            states: vec![StateMeta {
                name: RAW_STATE_NAME.into(),
                kind: StateKind::Value,
                namespace: raw_schema(),
                values: vec![raw_schema()],
                ttl: None,
            }],
            delta: false,
        };
        let out = streams.create_stream(StreamScope::Exclusive)?;
        Ok(RawKeyedStateWriter {
            inner: KeyedSnapshotWriter::new(out, meta, compression, checkpoint_id)?,
        })
    }

    /// Starts `key_group` (increasing, inside the range).
    pub fn start_key_group(&mut self, key_group: u32) -> Result<()> {
        self.inner.start_key_group(key_group)
    }

    /// Appends a chunk of bytes to the current key group.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.inner.write_cell(0, &[], &[], chunk)
    }

    /// Finishes the file.
    pub fn finish(self) -> Result<KeyedStateHandle> {
        self.inner.finish().map(KeyedStateHandle::KeyGroups)
    }
}

/// Reads the raw keyed state of the key groups of `range` from `handles`
/// (as assigned to a subtask): chunks per key group, in the order written.
pub fn read_raw_keyed_state(
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
) -> Result<BTreeMap<u32, Vec<Vec<u8>>>> {
    let mut out: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for handle in handles {
        let KeyedStateHandle::KeyGroups(h) = handle else {
            return Err(Error::InvalidArgument {
                what: format!("{} is not raw keyed state", handle.describe()),
            });
        };
        let reader = KeyedSnapshotReader::open(h)?;
        if reader.meta().states.len() != 1 || reader.meta().states[0].name != RAW_STATE_NAME {
            return Err(Error::InvalidArgument {
                what: format!("{} is not raw keyed state", reader.file_name()),
            });
        }
        for kg in h.range.intersection(&range).iter() {
            reader.for_each_record(kg, |r| {
                if let RecordBody::Cell(chunk) = r.body {
                    out.entry(kg).or_default().push(chunk.to_vec());
                }
                Ok(())
            })?;
        }
    }
    Ok(out)
}

/// Writes raw operator state: chunks of bytes that are split evenly over the
/// subtasks on rescale. No chunk gives no handle.
pub fn write_raw_operator_state(
    streams: &dyn CheckpointStreamFactory,
    chunks: Vec<Vec<u8>>,
    checkpoint_id: u64,
) -> Result<Option<OperatorStateHandle>> {
    if chunks.is_empty() {
        return Ok(None);
    }
    let data = OperatorStateData {
        meta: OperatorStateMeta {
            name: RAW_STATE_NAME.into(),
            distribution: Distribution::SplitDistribute,
            schemas: vec![raw_schema()],
        },
        elements: chunks,
    };
    let out = streams.create_stream(StreamScope::Exclusive)?;
    write_operator_snapshot(out, &[data], Compression::None, checkpoint_id, &|| Ok(())).map(Some)
}

/// Reads the raw operator state chunks of `handles` (as assigned to a subtask).
pub fn read_raw_operator_state(handles: &[OperatorStateHandle]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for h in handles {
        for data in read_operator_snapshot(h)? {
            if data.meta.name == RAW_STATE_NAME {
                out.extend(data.elements);
            }
        }
    }
    Ok(out)
}
