//! Snapshots of a keyed backend's store: the canonical format written from a
//! RocksDB snapshot (savepoints, and checkpoints with
//! [`RocksOptions::incremental`](crate::RocksOptions::incremental) off), and
//! incremental native checkpoints ([`crate::native`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rocksdb::ReadOptions;
use state_api::checkpoint::layout::unique_file_name;
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter};
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::StorageShape;
use state_api::{Error, Result};

use crate::db::{rocks_err, DbSnapshot};
use crate::keys::{self, decode};
use crate::native::{Capture, NativeSnapshot, Uploads};
use crate::store::{list_elements, RocksStore};

/// Snapshots the states of `meta` (not empty) of a store whose keys are
/// laid out for `meta.max_parallelism`; the buffered writes must already be
/// in RocksDB. The synchronous part runs here, the asynchronous
/// part in the returned task.
pub(crate) fn snapshot(
    store: &RocksStore,
    checkpoint_id: u64,
    streams: Arc<dyn CheckpointStreamFactory>,
    options: SnapshotOptions,
    meta: KeyedSnapshotMeta,
    running: &CancellationRegistry,
    uploads: &Arc<Mutex<Uploads>>,
) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
    if store.options().incremental && options.kind == SnapshotKind::Checkpoint {
        return native_snapshot(store, checkpoint_id, streams, meta, running, uploads);
    }
    let prefix_len = keys::prefix_len(meta.max_parallelism);
    // The synchronous part: a RocksDB snapshot (a sequence number), no copy.
    let snapshot = DbSnapshot::new(store.inst().clone(), |inst| inst.db.snapshot());
    Ok(SnapshotTask::new(running.register(), move |cancel| {
        let out = streams.create_stream(StreamScope::Exclusive)?;
        let mut writer =
            KeyedSnapshotWriter::new(out, meta.clone(), options.compression, checkpoint_id)?;
        snapshot.with_dependent(|inst, snap| -> Result<()> {
            let db = inst.name.as_str();
            let cfs = meta
                .states
                .iter()
                .map(|s| {
                    inst.db.cf_handle(&s.name).ok_or_else(|| Error::Corrupted {
                        file: db.to_string(),
                        offset: 0,
                        reason: format!("column family '{}' is missing", s.name),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut iters: Vec<_> = cfs
                .iter()
                .map(|cf| {
                    let mut it = snap.raw_iterator_cf_opt(cf, ReadOptions::default());
                    it.seek(keys::prefix(meta.range.start(), prefix_len));
                    it
                })
                .collect();
            for kg in meta.range.iter() {
                cancel.check("keyed state snapshot")?;
                writer.start_key_group(kg)?;
                for (si, it) in iters.iter_mut().enumerate() {
                    let shape = meta.states[si].kind.shape();
                    while let (Some(k), Some(v)) = (it.key(), it.value()) {
                        let d = decode(k, prefix_len, db)?;
                        if d.key_group != kg {
                            break;
                        }
                        match shape {
                            StorageShape::Cell => {
                                writer.write_cell(si as u32, d.key, d.namespace, v)?
                            }
                            StorageShape::List => {
                                let count = list_elements(v, db)
                                    .try_fold(0usize, |n, e| e.map(|_| n + 1))?;
                                writer.write_list(si as u32, d.key, d.namespace, count, v)?
                            }
                            StorageShape::Map => writer.write_map_entry(
                                si as u32,
                                d.key,
                                d.namespace,
                                d.user_key,
                                v,
                            )?,
                        }
                        it.next();
                    }
                    it.status().map_err(rocks_err(db, "snapshot iteration"))?;
                }
            }
            Ok(())
        })?;
        writer.finish().map(|h| Some(h.into()))
    }))
}

/// An incremental checkpoint: the synchronous part switches memtables
/// out and closes the capture gate; see [`crate::native`].
fn native_snapshot(
    store: &RocksStore,
    checkpoint_id: u64,
    streams: Arc<dyn CheckpointStreamFactory>,
    meta: KeyedSnapshotMeta,
    running: &CancellationRegistry,
    uploads: &Arc<Mutex<Uploads>>,
) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
    let cfs: Vec<String> = meta.states.iter().map(|s| s.name.clone()).collect();
    let capture_dir = PathBuf::from(format!(
        "{}.chk-{checkpoint_id}-{}",
        store.inst().folder().display(),
        unique_file_name()
    ));
    // The memtable switch is a write into the live instance.
    let capture = store.live(Capture::start(
        store.inst().clone(),
        store.gate(),
        cfs,
        capture_dir,
    ))?;
    store.reset_held();
    let job = NativeSnapshot {
        capture,
        meta,
        uploads: uploads.clone(),
        checkpoint_id,
        list_bound: store.list_bound(),
    };
    Ok(SnapshotTask::new(running.register(), move |cancel| {
        job.run(&*streams, cancel)
            .map(|h| Some(KeyedStateHandle::IncrementalNative(h)))
    }))
}

/// The snapshot meta a native handle stands for, to check it like a file.
pub(crate) fn native_meta(n: &IncrementalNativeStateHandle) -> KeyedSnapshotMeta {
    KeyedSnapshotMeta {
        max_parallelism: n.max_parallelism,
        range: n.source_range,
        key_codec: n.key_codec.clone(),
        states: n.states.clone(),
        delta: false,
    }
}
