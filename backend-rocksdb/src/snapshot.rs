//! Snapshots of a keyed backend's store: the canonical format written from a
//! RocksDB snapshot (savepoints, and checkpoints with
//! [`RocksOptions::incremental`](crate::RocksOptions::incremental) off), and
//! incremental native checkpoints ([`crate::native`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use checkpoint_store::layout::unique_file_name;
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions};
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter};
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::ttl::TtlInstant;
use state_api::state::{StateMeta, StorageShape};
use state_api::{Error, KeyGroupRange, Result};

use crate::db::{rocks_err, Db, DbSnapshot};
use crate::keys::{self, DecodedKey};
use crate::native::{Capture, NativeSnapshot, Uploads};
use crate::store::{list_elements, RocksStore};

/// Snapshots the states of `meta` (not empty) of a store whose keys are
/// laid out for `meta.max_parallelism`; the buffered writes must already be
/// in RocksDB. The synchronous part runs here, the asynchronous
/// part in the returned task.
#[allow(clippy::too_many_arguments)]
pub(crate) fn snapshot(
    store: &RocksStore,
    checkpoint_id: u64,
    streams: Arc<dyn CheckpointStreamFactory>,
    options: SnapshotOptions,
    meta: KeyedSnapshotMeta,
    expiry: (TtlInstant, Vec<String>),
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
        let (now, keep) = &expiry;
        writer.drop_expired(*now, |name| !keep.iter().any(|k| k == name));
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
                .map(|cf| Some(snap.raw_iterator_cf_opt(cf, ReadOptions::default())))
                .collect();
            scan_key_groups(
                &mut iters,
                &meta.states,
                meta.range,
                prefix_len,
                db,
                &mut |item| match item {
                    Scanned::KeyGroup(kg) => {
                        cancel.check("keyed state snapshot")?;
                        writer.start_key_group(kg)
                    }
                    Scanned::Entry(entry) => write_entry(&mut writer, &entry, db),
                },
            )
        })?;
        writer.finish().map(|h| Some(h.into()))
    }))
}

/// A raw iterator over one column family of an instance or of a snapshot.
pub(crate) type RawIter<'a> = DBRawIteratorWithThreadMode<'a, Db>;

/// One entry of a state's column family, decoded.
pub(crate) struct ScanEntry<'a> {
    /// Index of the state (its column family) in the scanned states.
    pub(crate) state: u32,
    /// How the state stores its values.
    pub(crate) shape: StorageShape,
    /// The decoded RocksDB key.
    pub(crate) key: DecodedKey<'a>,
    /// The stored value (a merged list, for list states).
    pub(crate) value: &'a [u8],
}

/// What [`scan_key_groups`] reports, in order.
pub(crate) enum Scanned<'a> {
    /// A key group starts; its entries follow.
    KeyGroup(u32),
    /// An entry of the key group last started.
    Entry(ScanEntry<'a>),
}

/// Walks the key groups of `range` in order over `iters`, one iterator per
/// state of `states` (`None`: the state has no column family, so no
/// entries): for each key group, reports it, then every entry of each state
/// in state order. The iterators are positioned here; entries past `range`
/// are left unread. `db` names the instance in errors.
pub(crate) fn scan_key_groups(
    iters: &mut [Option<RawIter<'_>>],
    states: &[StateMeta],
    range: KeyGroupRange,
    prefix_len: usize,
    db: &str,
    visit: &mut dyn FnMut(Scanned<'_>) -> Result<()>,
) -> Result<()> {
    if iters.len() != states.len() {
        return Err(Error::Corrupted {
            file: db.to_string(),
            offset: 0,
            reason: format!(
                "{} column families for {} states",
                iters.len(),
                states.len()
            ),
        });
    }
    if range.is_empty() {
        return Ok(());
    }
    let start = keys::prefix(range.start(), prefix_len);
    for it in iters.iter_mut().flatten() {
        it.seek(&start);
    }
    for kg in range.iter() {
        visit(Scanned::KeyGroup(kg))?;
        for (si, it) in iters.iter_mut().enumerate() {
            let Some(it) = it else {
                continue;
            };
            let (kind, shape) = (states[si].kind, states[si].kind.shape());
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let key = keys::decode_for(kind, k, prefix_len, db)?;
                if key.key_group != kg {
                    break;
                }
                visit(Scanned::Entry(ScanEntry {
                    state: si as u32,
                    shape,
                    key,
                    value: v,
                }))?;
                it.next();
            }
            it.status().map_err(rocks_err(db, "snapshot iteration"))?;
        }
    }
    Ok(())
}

/// Writes one scanned entry as a canonical record, as a savepoint does:
/// a list's stored value is already its length-prefixed elements.
pub(crate) fn write_entry(
    writer: &mut KeyedSnapshotWriter,
    entry: &ScanEntry<'_>,
    db: &str,
) -> Result<()> {
    let (si, d, v) = (entry.state, &entry.key, entry.value);
    match entry.shape {
        StorageShape::Cell => writer.write_cell(si, d.key, d.namespace, v),
        StorageShape::List => {
            let count = list_elements(v, db).try_fold(0usize, |n, e| e.map(|_| n + 1))?;
            writer.write_list(si, d.key, d.namespace, count, v)
        }
        StorageShape::Map => writer.write_map_entry(si, d.key, d.namespace, d.user_key, v),
    }
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
