//! Snapshots of the heap backend: the shared copies a snapshot's synchronous
//! part takes and the files its asynchronous part writes (full canonical
//! files, or delta files of what changed since the last completed
//! checkpoint), and the bookkeeping of incremental checkpoints.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use state_api::codec::SharedCodec;
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter};
use state_api::snapshot::handle::{
    IncrementalKeyedStateHandle, KeyGroupsStateHandle, KeyedStateHandle,
};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::SnapshotOptions;
use state_api::state::ttl::TtlInstant;
use state_api::state::StateKey;
use state_api::Result;

use super::restore::PendingSnapshot;
use super::table::{ErasedTableSnapshot, Scratch};

/// When an incremental chain is compacted into a new full snapshot.
#[derive(Clone, Debug)]
pub struct IncrementalOptions {
    /// At most this many delta files follow a full snapshot.
    pub max_deltas: usize,
    /// A new full snapshot is written once the deltas' bytes exceed this
    /// fraction of the full snapshot's bytes (restore reads at most
    /// `1 + max_delta_ratio` times the state).
    pub max_delta_ratio: f64,
}

impl Default for IncrementalOptions {
    fn default() -> Self {
        IncrementalOptions {
            max_deltas: 16,
            max_delta_ratio: 1.0,
        }
    }
}

/// Change periods per state (indexed like `states`): the changes recorded
/// between two incremental snapshots.
pub(crate) type ChangePeriod = Vec<Option<Arc<dyn Any + Send + Sync>>>;

/// The incremental-checkpoint state of a backend.
pub(crate) struct Incremental {
    options: IncrementalOptions,
    /// The chain of the newest completed checkpoint this backend took.
    base: Option<IncrementalKeyedStateHandle>,
    /// Change periods cut by incremental snapshots not yet confirmed, oldest first.
    unconfirmed: Vec<(u64, ChangePeriod)>,
    /// Handles of finished incremental snapshot tasks, until confirmed or aborted.
    results: Arc<Mutex<BTreeMap<u64, IncrementalKeyedStateHandle>>>,
}

/// What the asynchronous part of a snapshot needs: shared copies of the
/// tables and of the restored-but-unregistered states.
pub(crate) struct SnapshotParts<K: StateKey> {
    pub(crate) tables: Vec<Box<dyn ErasedTableSnapshot<K>>>,
    pub(crate) pending: Option<PendingSnapshot>,
    pub(crate) meta: KeyedSnapshotMeta,
    pub(crate) key_codec: SharedCodec<K>,
    /// The time expired entries are judged at in full files, and the states
    /// with TTL whose expired entries are kept.
    pub(crate) expiry: (TtlInstant, Vec<String>),
}

impl<K: StateKey> SnapshotParts<K> {
    /// Writes every entry: a full snapshot in the canonical format.
    fn write(
        &self,
        out: Box<dyn state_api::snapshot::stream::CheckpointOutputStream>,
        options: SnapshotOptions,
        checkpoint_id: u64,
        cancel: &state_api::snapshot::task::Cancellation,
    ) -> Result<KeyGroupsStateHandle> {
        let mut writer =
            KeyedSnapshotWriter::new(out, self.meta.clone(), options.compression, checkpoint_id)?;
        let (now, keep) = &self.expiry;
        writer.drop_expired(*now, |name| !keep.iter().any(|k| k == name));
        let mut scratch = Scratch::default();
        for (index, kg) in self.meta.range.iter().enumerate() {
            cancel.check("keyed state snapshot")?;
            writer.start_key_group(kg)?;
            for (state, table) in self.tables.iter().enumerate() {
                table.write_key_group(
                    index,
                    state as u32,
                    &*self.key_codec,
                    &mut writer,
                    &mut scratch,
                )?;
            }
            if let Some(p) = &self.pending {
                p.write_key_group(index, &mut writer)?;
            }
        }
        writer.finish()
    }

    /// Writes the current value (or a delete) of every entry in `changes`
    /// (per state, the unconfirmed change periods): a delta file.
    fn write_delta(
        &self,
        out: Box<dyn state_api::snapshot::stream::CheckpointOutputStream>,
        changes: &[Vec<Arc<dyn Any + Send + Sync>>],
        options: SnapshotOptions,
        checkpoint_id: u64,
        cancel: &state_api::snapshot::task::Cancellation,
    ) -> Result<KeyGroupsStateHandle> {
        let mut meta = self.meta.clone();
        meta.delta = true;
        let mut writer = KeyedSnapshotWriter::new(out, meta, options.compression, checkpoint_id)?;
        let mut scratch = Scratch::default();
        for (index, kg) in self.meta.range.iter().enumerate() {
            cancel.check("keyed state snapshot")?;
            writer.start_key_group(kg)?;
            for (state, (table, periods)) in self.tables.iter().zip(changes).enumerate() {
                if !periods.is_empty() {
                    table.write_changes(
                        index,
                        state as u32,
                        periods,
                        &*self.key_codec,
                        &mut writer,
                        &mut scratch,
                    )?;
                }
            }
        }
        writer.finish()
    }
}

/// The asynchronous part of a full snapshot: one canonical file.
pub(crate) fn full_snapshot_task<K: StateKey>(
    running: &CancellationRegistry,
    full: SnapshotParts<K>,
    checkpoint_id: u64,
    streams: Arc<dyn CheckpointStreamFactory>,
    options: SnapshotOptions,
) -> SnapshotTask<Option<KeyedStateHandle>> {
    SnapshotTask::new(running.register(), move |cancel| {
        let out = streams.create_stream(StreamScope::Exclusive)?;
        full.write(out, options, checkpoint_id, cancel)
            .map(|h| Some(h.into()))
    })
}

impl Incremental {
    /// Incremental bookkeeping with `options`, before any checkpoint.
    pub(crate) fn new(options: IncrementalOptions) -> Self {
        Incremental {
            options,
            base: None,
            unconfirmed: Vec::new(),
            results: Arc::default(),
        }
    }

    /// The asynchronous part of incremental checkpoint `checkpoint_id`, whose
    /// synchronous part shared `full` and cut `period`: either a delta of
    /// everything changed since the base, or a new full base.
    pub(crate) fn snapshot_task<K: StateKey>(
        &mut self,
        running: &CancellationRegistry,
        full: SnapshotParts<K>,
        period: ChangePeriod,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> SnapshotTask<Option<KeyedStateHandle>> {
        let states = period.len();
        let range = full.meta.range;
        self.unconfirmed.push((checkpoint_id, period));
        let base = self.base.clone().filter(|b| {
            let base_bytes = b.base.state_size() as f64;
            let delta_bytes: u64 = b.deltas.iter().map(|d| d.state_size()).sum();
            b.deltas.len() < self.options.max_deltas
                && delta_bytes as f64 <= base_bytes * self.options.max_delta_ratio
        });
        let changes: Vec<Vec<Arc<dyn Any + Send + Sync>>> = (0..states)
            .map(|i| {
                self.unconfirmed
                    .iter()
                    .filter_map(|(_, period)| period.get(i).cloned().flatten())
                    .collect()
            })
            .collect();
        let results = self.results.clone();
        SnapshotTask::new(running.register(), move |cancel| {
            let out = streams.create_stream(StreamScope::Shared)?;
            let handle = match base {
                None => IncrementalKeyedStateHandle {
                    checkpoint_id,
                    range,
                    base: full.write(out, options, checkpoint_id, cancel)?,
                    deltas: Vec::new(),
                },
                Some(base) => {
                    let delta = full.write_delta(out, &changes, options, checkpoint_id, cancel)?;
                    let mut deltas = base.deltas;
                    deltas.push(delta);
                    IncrementalKeyedStateHandle {
                        checkpoint_id,
                        range,
                        base: base.base,
                        deltas,
                    }
                }
            };
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(checkpoint_id, handle.clone());
            Ok(Some(KeyedStateHandle::IncrementalHeap(handle)))
        })
    }

    /// Checkpoint `checkpoint_id` completed (see the contract of
    /// `KeyedStateBackend::notify_checkpoint_complete`).
    pub(crate) fn complete(&mut self, checkpoint_id: u64) {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let base_id = self.base.as_ref().map_or(0, |b| b.checkpoint_id);
        // Builds on `checkpoint_id` only if it is newer than the base and its
        // task finished; never taken, a savepoint, aborted, older, or not
        // finished yet: later deltas stay built on the current base.
        if checkpoint_id > base_id {
            if let Some(handle) = results.remove(&checkpoint_id) {
                self.unconfirmed.retain(|(id, _)| *id > checkpoint_id);
                self.base = Some(handle);
            }
        }
        // Results of subsumed checkpoints are never used.
        let base_id = self.base.as_ref().map_or(0, |b| b.checkpoint_id);
        results.retain(|id, _| *id > base_id && *id >= checkpoint_id);
    }

    /// Checkpoint `checkpoint_id` was aborted: its changes stay in the
    /// unconfirmed periods, so the next delta carries them; its files are
    /// never referenced.
    pub(crate) fn abort(&mut self, checkpoint_id: u64) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&checkpoint_id);
    }
}
