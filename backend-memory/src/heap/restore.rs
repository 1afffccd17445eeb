//! Restore: reading the key groups a backend owns out of canonical snapshots.
//!
//! State types are known only when a state is registered, so a restore first
//! reads, checks and keeps the decoded frames of its key groups; each state is
//! decoded into its typed table when it is registered. Restored states that
//! are never registered are written, record for record, into later snapshots.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use state_api::backend::registration::{accept_restored_file, check_key_group};
use state_api::backend::KeyedBackendParams;
use state_api::format::keyed::{
    parse_records, KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, Record, RecordBody,
};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::StreamBytes;
use state_api::state::StateMeta;
use state_api::Result;

/// One snapshot file a restore read from.
pub(crate) struct RestoredSource {
    pub(crate) file: String,
    pub(crate) meta: KeyedSnapshotMeta,
}

/// One decoded frame of a key group.
pub(crate) struct RestoredFrame {
    pub(crate) source: u32,
    pub(crate) offset: u64,
    pub(crate) payload: FramePayload,
}

/// A frame's payload: a range of the file's bytes (shared, not copied) for a
/// stored frame, or the decompressed bytes of a compressed one.
pub(crate) enum FramePayload {
    Shared(StreamBytes, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FramePayload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FramePayload::Shared(bytes, range) => &bytes.bytes()[range.clone()],
            FramePayload::Owned(v) => v,
        }
    }
}

/// The frames of every key group of the backend's range, from every handle.
pub(crate) struct RestoredData {
    pub(crate) max_parallelism: u32,
    /// The backend's key-group range: `groups[i]` holds key group `range.start() + i`.
    pub(crate) range: state_api::KeyGroupRange,
    pub(crate) sources: Vec<RestoredSource>,
    /// Indexed by position in the backend's key-group range.
    pub(crate) groups: Vec<Vec<RestoredFrame>>,
}

impl RestoredData {
    /// Reads and checks `handles`, keeping the frames of `params`' key groups.
    /// Returns the data and the metas of every restored state.
    pub(crate) fn read<K: 'static>(
        handles: &[KeyedStateHandle],
        params: &KeyedBackendParams<K>,
    ) -> Result<(RestoredData, Vec<StateMeta>)> {
        let range = params.key_group_range;
        let mut data = RestoredData {
            max_parallelism: params.max_parallelism,
            range,
            sources: Vec::with_capacity(handles.len()),
            groups: (0..range.len()).map(|_| Vec::new()).collect(),
        };
        let mut metas: Vec<StateMeta> = Vec::new();
        let pieces = handles
            .iter()
            .map(|h| Ok(h.canonical_pieces()?.into_iter().map(move |p| (h, p))))
            .collect::<Result<Vec<_>>>()?;
        for (top, handle) in pieces.into_iter().flatten() {
            let reader =
                KeyedSnapshotReader::open_with(handle, params.files(), &top.needed_by(handle))?;
            let file = reader.file_name().to_string();
            let meta = reader.meta();
            accept_restored_file(&file, meta, params, &mut metas)?;
            let source = data.sources.len() as u32;
            let own = handle.range.intersection(&range);
            for kg in own.iter() {
                let index = (kg - range.start()) as usize;
                for (offset, payload) in reader.key_group_frames(kg)? {
                    let payload = match payload {
                        Cow::Borrowed(slice) => {
                            let file = reader.stream_bytes();
                            let start = slice.as_ptr() as usize - file.bytes().as_ptr() as usize;
                            FramePayload::Shared(file.clone(), start..start + slice.len())
                        }
                        Cow::Owned(v) => FramePayload::Owned(v),
                    };
                    data.groups[index].push(RestoredFrame {
                        source,
                        offset,
                        payload,
                    });
                }
            }
            data.sources.push(RestoredSource {
                file,
                meta: meta.clone(),
            });
        }
        Ok((data, metas))
    }

    /// Calls `f(key group index, record)` for every record of state `name`,
    /// after checking that the record's key belongs to that key group.
    pub(crate) fn for_each_record_of(
        &self,
        name: &str,
        mut f: impl FnMut(usize, &Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let wanted: Vec<Option<u32>> = self
            .sources
            .iter()
            .map(|s| {
                s.meta
                    .states
                    .iter()
                    .position(|m| m.name == name)
                    .map(|i| i as u32)
            })
            .collect();
        for (index, frames) in self.groups.iter().enumerate() {
            for frame in frames {
                let source = &self.sources[frame.source as usize];
                let Some(want) = wanted[frame.source as usize] else {
                    continue;
                };
                parse_records(
                    &source.file,
                    frame.offset,
                    &frame.payload,
                    &source.meta,
                    |r| {
                        if r.state != want {
                            return Ok(());
                        }
                        let kg = self.range.start() + index as u32;
                        check_key_group(
                            &source.file,
                            frame.offset,
                            r.key,
                            kg,
                            self.max_parallelism,
                        )?;
                        f(index, &r)
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Number of (key, namespace) entries of the named states.
    pub(crate) fn count_entries(&self, names: &[StateMeta]) -> Result<usize> {
        let mut n = 0;
        for meta in names {
            let mut seen = HashSet::new();
            self.for_each_record_of(&meta.name, |index, r| {
                let entry = (index, r.key.to_vec(), r.namespace.to_vec());
                if r.body == RecordBody::Delete {
                    seen.remove(&entry);
                } else {
                    seen.insert(entry);
                }
                Ok(())
            })?;
            n += seen.len();
        }
        Ok(n)
    }
}

/// Restored states not registered yet, written as they were read.
pub(crate) struct PendingSnapshot {
    pub(crate) data: Arc<RestoredData>,
    /// Per source: source state index -> state index in the new snapshot.
    pub(crate) mapping: Vec<Vec<Option<u32>>>,
}

impl PendingSnapshot {
    pub(crate) fn new(data: Arc<RestoredData>, pending: &HashMap<String, u32>) -> Self {
        let mapping = data
            .sources
            .iter()
            .map(|s| {
                s.meta
                    .states
                    .iter()
                    .map(|m| pending.get(&m.name).copied())
                    .collect()
            })
            .collect();
        PendingSnapshot { data, mapping }
    }

    pub(crate) fn write_key_group(
        &self,
        index: usize,
        writer: &mut KeyedSnapshotWriter,
    ) -> Result<()> {
        let Some(frames) = self.data.groups.get(index) else {
            return Ok(());
        };
        if self.data.sources.iter().any(|s| s.meta.delta) {
            return self.write_resolved(frames, writer);
        }
        for frame in frames {
            let source = &self.data.sources[frame.source as usize];
            let mapping = &self.mapping[frame.source as usize];
            parse_records(
                &source.file,
                frame.offset,
                &frame.payload,
                &source.meta,
                |r| match mapping.get(r.state as usize).copied().flatten() {
                    Some(new) => writer.write_record(new, &r),
                    None => Ok(()),
                },
            )?;
        }
        Ok(())
    }

    /// Applies a chain of full and delta frames to the pending states and
    /// writes the result as full records.
    fn write_resolved(
        &self,
        frames: &[RestoredFrame],
        writer: &mut KeyedSnapshotWriter,
    ) -> Result<()> {
        let mut entries: BTreeMap<(u32, Vec<u8>, Vec<u8>), Resolved> = BTreeMap::new();
        for frame in frames {
            let source = &self.data.sources[frame.source as usize];
            let mapping = &self.mapping[frame.source as usize];
            parse_records(
                &source.file,
                frame.offset,
                &frame.payload,
                &source.meta,
                |r| {
                    let Some(new) = mapping.get(r.state as usize).copied().flatten() else {
                        return Ok(());
                    };
                    let entry = (new, r.key.to_vec(), r.namespace.to_vec());
                    match r.body {
                        RecordBody::Delete => {
                            entries.remove(&entry);
                        }
                        RecordBody::Cell(v) => {
                            entries.insert(entry, Resolved::Cell(v.to_vec()));
                        }
                        RecordBody::List(elements) => {
                            entries.insert(
                                entry,
                                Resolved::List(elements.iter().map(|e| e.to_vec()).collect()),
                            );
                        }
                        RecordBody::MapEntry { key, value } => {
                            let slot = entries
                                .entry(entry)
                                .or_insert_with(|| Resolved::Map(BTreeMap::new()));
                            if let Resolved::Map(m) = slot {
                                m.insert(key.to_vec(), value.to_vec());
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        for ((state, key, namespace), value) in entries {
            match value {
                Resolved::Cell(v) => writer.write_cell(state, &key, &namespace, &v)?,
                Resolved::List(elements) => writer.write_record(
                    state,
                    &Record {
                        state,
                        key: &key,
                        namespace: &namespace,
                        body: RecordBody::List(elements.iter().map(Vec::as_slice).collect()),
                    },
                )?,
                Resolved::Map(m) => {
                    for (uk, uv) in m {
                        writer.write_map_entry(state, &key, &namespace, &uk, &uv)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The final value of a pending entry after a chain of files.
enum Resolved {
    Cell(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}
