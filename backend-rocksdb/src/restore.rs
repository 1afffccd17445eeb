//! Opening a keyed backend's store from restored handles: the native
//! checkpoint covering most of its key groups is opened in place (other key
//! groups clipped), other native handles are merged in by SST ingestion, and
//! canonical and heap-incremental handles are read record by record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{Cache, ColumnFamilyDescriptor, WriteBatch};
use state_api::backend::registration::{accept_restored_file, check_key_group};
use state_api::backend::KeyedBackendParams;
use state_api::format::bytes::put_bytes;
use state_api::format::keyed::{KeyedSnapshotReader, RecordBody};
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::StateFileReader;
use state_api::state::{StateKey, StateKind, StateMeta, StorageShape};
use state_api::{Error, KeyGroupRange, Result};

use crate::db::{column_family_options, open_instance, rocks_err, Db, FolderGuard};
use crate::keys::{self, put_entry_key};
use crate::list_bound;
use crate::native;
use crate::options::RocksOptions;
use crate::snapshot::native_meta;
use crate::store::RocksStore;
use crate::ttl::TtlFilters;

/// Opens a RocksDB instance in `folder` holding the key groups of
/// `params.key_group_range` found in `restore`; returns the store and the
/// restored states (each with its column family, none attached yet).
pub(crate) fn open_store<K: StateKey>(
    folder: &Path,
    params: &KeyedBackendParams<K>,
    restore: &[KeyedStateHandle],
    options: RocksOptions,
) -> Result<(RocksStore, Vec<StateMeta>)> {
    let own = params.key_group_range;
    let plen = keys::prefix_len(params.max_parallelism);
    let mut metas: Vec<StateMeta> = Vec::new();
    let mut natives: Vec<(&IncrementalNativeStateHandle, String)> = Vec::new();
    let mut canonical: Vec<KeyedStateHandle> = Vec::new();
    for h in restore {
        match h {
            KeyedStateHandle::IncrementalNative(n) => {
                let file = h.describe();
                native::check_native(n, &file)?;
                accept_restored_file(&file, &native_meta(n), params, &mut metas)?;
                natives.push((n, file));
            }
            other => canonical.push(other.clone()),
        }
    }
    // The native handle covering most of this backend's key groups is
    // opened in place; the others are copied in.
    let base = (0..natives.len())
        .filter(|&i| !natives[i].0.range.intersection(&own).is_empty())
        .max_by_key(|&i| natives[i].0.range.intersection(&own).len());
    let budget = options.memory.budget();
    let filters = TtlFilters::new(params.clock.clone());
    // The largest list size restored (see `crate::list_bound`); `unknown`
    // when a checkpoint written before bounds were kept holds lists.
    let mut list_bound = 0u64;
    let mut unknown = false;
    let (inst, cache) = match base {
        Some(i) => {
            let b = natives[i].0;
            native::materialize(b, folder, params.files(), &native::sibling_folders(folder))?;
            match list_bound::take_file(folder)? {
                Some(bound) => list_bound = bound,
                None => unknown |= holds_lists(b),
            }
            let (inst, cache) = open_instance(folder, &options, budget.as_ref(), true, &filters)?;
            let keep = b.range.intersection(&own);
            if keep != b.source_range {
                let names = b.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
                native::clip(&inst, &names, keep, plen)?;
            }
            (inst, cache)
        }
        None => open_instance(folder, &options, budget.as_ref(), false, &filters)?,
    };
    let memory = budget.map(|b| b.join());
    let store = RocksStore::new(inst, cache, options, memory, 0, filters);
    for (i, (n, file)) in natives.iter().enumerate() {
        if Some(i) != base {
            match merge_native(&store, n, file, i, own, plen, params.files())? {
                Some(bound) => list_bound = list_bound.max(bound),
                None => unknown |= holds_lists(n),
            }
        }
    }
    if !canonical.is_empty() {
        let largest = restore_canonical(&store, &canonical, params, plen, &mut metas)?;
        list_bound = list_bound.max(largest);
    }
    // Every restored state has its column family, even with no data here.
    for m in &metas {
        store.create_cf(&m.name)?;
    }
    if unknown {
        list_bound = list_bound.max(largest_list(&store, &metas)?);
    }
    store.raise_list_bound(list_bound);
    Ok((store, metas))
}

/// Deletes every timer of (key, namespace) in key group `kg` (a delete record
/// of a delta file, restored into a timer state).
fn delete_timers_of(
    store: &RocksStore,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    kg: u32,
    prefix_len: usize,
    key: &[u8],
    namespace: &[u8],
) -> Result<()> {
    let prefix = keys::prefix(kg, prefix_len);
    let mut read = rocksdb::ReadOptions::default();
    if let Some(end) = keys::successor(&prefix) {
        read.set_iterate_upper_bound(end);
    }
    let mut it = store.inst().db.raw_iterator_cf_opt(cf, read);
    it.seek(&prefix);
    let mut batch = WriteBatch::default();
    while let Some(k) = it.key() {
        let d = keys::decode_for(StateKind::Timers, k, prefix_len, store.db_name())?;
        if d.key == key && d.namespace == namespace {
            batch.delete_cf(cf, k);
        }
        it.next();
    }
    it.status()
        .map_err(rocks_err(store.db_name(), "reading timers"))?;
    drop(it);
    store.restore_write(batch)
}

/// Whether a native checkpoint holds list states.
fn holds_lists(n: &IncrementalNativeStateHandle) -> bool {
    n.states
        .iter()
        .any(|s| s.kind.shape() == StorageShape::List)
}

/// The size of the largest list of the restored list states, read value by
/// value: for checkpoints that carry no bound.
fn largest_list(store: &RocksStore, metas: &[StateMeta]) -> Result<u64> {
    let mut largest = 0;
    for m in metas
        .iter()
        .filter(|m| m.kind.shape() == StorageShape::List)
    {
        let cf = store.cf(&m.name)?;
        let mut it = store.inst().db.raw_iterator_cf(&cf);
        it.seek_to_first();
        while let Some(v) = it.value() {
            largest = largest.max(v.len() as u64);
            it.next();
        }
        it.status()
            .map_err(rocks_err(store.db_name(), "reading list sizes"))?;
    }
    Ok(largest)
}

/// Copies the key groups of `own` out of another backend's native checkpoint
/// (scaling in), through a temporary read-only instance. Returns the list
/// size bound the checkpoint carries, if any.
fn merge_native(
    store: &RocksStore,
    n: &IncrementalNativeStateHandle,
    file: &str,
    i: usize,
    own: KeyGroupRange,
    prefix_len: usize,
    files: &dyn StateFileReader,
) -> Result<Option<u64>> {
    let range = n.range.intersection(&own);
    if range.is_empty() {
        return Ok(Some(0));
    }
    let inst = store.inst();
    let options = store.options();
    let tmp = PathBuf::from(format!("{}.restore-{i}", inst.folder().display()));
    let _guard = FolderGuard(tmp.clone());
    native::materialize(n, &tmp, files, &[])?;
    let bound = list_bound::take_file(&tmp)?;
    let cache = Cache::new_lru_cache(8 << 20);
    let opts = column_family_options(options, &cache);
    let names = Db::list_cf(&opts, &tmp).map_err(rocks_err(file, "listing column families"))?;
    let descriptors = names
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(n, column_family_options(options, &cache)));
    let source = Db::open_cf_descriptors_read_only(&opts, &tmp, descriptors, false)
        .map_err(rocks_err(file, "opening a restored checkpoint"))?;
    let states = n.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    for name in &states {
        store.create_cf(name)?;
    }
    let scratch = PathBuf::from(format!("{}.ingest-{i}", inst.folder().display()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
    let _scratch_guard = FolderGuard(scratch.clone());
    native::copy_key_groups(
        &source,
        file,
        inst,
        &states,
        range,
        prefix_len,
        &column_family_options(options, store.cache()),
        &scratch,
    )?;
    Ok(bound)
}

/// Reads restored handles into the store: every record of the key groups of
/// `params.key_group_range`, applied in order (puts and deletes of chains).
/// Returns the size of the largest list written.
fn restore_canonical<K: StateKey>(
    store: &RocksStore,
    handles: &[KeyedStateHandle],
    params: &KeyedBackendParams<K>,
    prefix_len: usize,
    metas: &mut Vec<StateMeta>,
) -> Result<u64> {
    let own = params.key_group_range;
    let mut largest_list = 0u64;
    let max_parallelism = params.max_parallelism;
    let mut batch = WriteBatch::default();
    let pieces = handles
        .iter()
        .map(|h| Ok(h.canonical_pieces()?.into_iter().map(move |p| (h, p))))
        .collect::<Result<Vec<_>>>()?;
    for (top, piece) in pieces.into_iter().flatten() {
        let reader = KeyedSnapshotReader::open_with(piece, params.files(), &top.needed_by(piece))?;
        let file = reader.file_name().to_string();
        let meta = reader.meta().clone();
        for name in accept_restored_file(&file, &meta, params, metas)? {
            store.create_cf(&name)?;
        }
        let cfs = meta
            .states
            .iter()
            .map(|s| store.cf(&s.name))
            .collect::<Result<Vec<_>>>()?;
        for kg in piece.range.intersection(&own).iter() {
            let mut entry = Vec::new();
            reader.for_each_record(kg, |r| {
                check_key_group(&file, 0, r.key, kg, max_parallelism)?;
                let cf = &cfs[r.state as usize];
                if meta.states[r.state as usize].kind == StateKind::Timers {
                    match &r.body {
                        RecordBody::MapEntry { key: ts, .. } => {
                            let mut k = Vec::new();
                            keys::put_timer_key(&mut k, kg, prefix_len, ts, r.key, r.namespace);
                            batch.put_cf(cf, k, []);
                        }
                        RecordBody::Delete => {
                            store.restore_write(std::mem::take(&mut batch))?;
                            delete_timers_of(store, cf, kg, prefix_len, r.key, r.namespace)?;
                        }
                        _ => {}
                    }
                    return Ok(());
                }
                entry.clear();
                put_entry_key(&mut entry, kg, prefix_len, r.key, r.namespace);
                match &r.body {
                    RecordBody::Cell(v) => batch.put_cf(cf, &entry, v),
                    RecordBody::List(elements) => {
                        let mut value =
                            Vec::with_capacity(elements.iter().map(|e| e.len() + 2).sum());
                        for e in elements {
                            put_bytes(&mut value, e);
                        }
                        largest_list = largest_list.max(value.len() as u64);
                        batch.put_cf(cf, &entry, value)
                    }
                    RecordBody::MapEntry { key, value } => {
                        let mut full = entry.clone();
                        full.extend_from_slice(key);
                        batch.put_cf(cf, full, value)
                    }
                    RecordBody::Delete => {
                        if meta.states[r.state as usize].kind.shape() == StorageShape::Map {
                            if let Some(end) = keys::successor(&entry) {
                                batch.delete_range_cf(cf, &entry, &end);
                            }
                        } else {
                            batch.delete_cf(cf, &entry);
                        }
                    }
                }
                Ok(())
            })?;
            if batch.size_in_bytes() > 4 << 20 {
                store.restore_write(std::mem::take(&mut batch))?;
            }
        }
        drop(cfs);
        store.restore_write(std::mem::take(&mut batch))?;
    }
    Ok(largest_list)
}
