//! The state of one heap keyed backend: a typed table per registered state,
//! and the restored states not registered yet (kept as bytes, decoded when
//! registered, carried into snapshots until then). Registration fills it
//! ([`super::registration`]), the backend's state access reads and writes its
//! tables, and a snapshot shares them ([`HeapStore::snapshot_parts`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use state_api::backend::registration::{check_restored_registration, check_same_registration};
use state_api::backend::KeyedBackendParams;
use state_api::codec::{Compatibility, SharedCodec};
use state_api::format::keyed::{KeyedSnapshotMeta, RecordBody};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::handle::HandleCore;
use state_api::state::ttl::{StateTtlConfig, TtlInstant};
use state_api::state::{Namespace, StateKey, StateMeta};
use state_api::{Error, KeyGroupRange, Result};

use super::restore::{PendingSnapshot, RestoredData};
use super::snapshot::{ChangePeriod, SnapshotParts};
use super::table::{codec_error, EntryKey, ErasedTable};

/// A registered state: its meta and its table.
pub(crate) struct Registered<K> {
    pub(crate) meta: StateMeta,
    pub(crate) table: Box<dyn ErasedTable<K>>,
    /// Its time-to-live, with the cleanup strategies.
    pub(crate) ttl: Option<StateTtlConfig>,
}

/// The tables of one keyed backend (see the module docs).
pub(crate) struct HeapStore<K: StateKey> {
    pub(crate) max_parallelism: u32,
    pub(crate) range: KeyGroupRange,
    pub(crate) key_codec: SharedCodec<K>,
    /// Registered states, indexed by their handles.
    pub(crate) states: Vec<Registered<K>>,
    restored: Option<Arc<RestoredData>>,
    /// Restored states not registered yet.
    pending: Vec<StateMeta>,
    /// Tables record what changes (for incremental snapshots).
    track_changes: bool,
}

impl<K: StateKey> HeapStore<K> {
    /// The store for `params`, holding the key groups it owns of `restore`.
    pub(crate) fn new(
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
        track_changes: bool,
    ) -> Result<Self> {
        params
            .key_group_range
            .check_within(params.max_parallelism)?;
        let (restored, pending) = if restore.is_empty() {
            (None, Vec::new())
        } else {
            let (data, metas) = RestoredData::read(restore, &params)?;
            (Some(Arc::new(data)), metas)
        };
        Ok(HeapStore {
            max_parallelism: params.max_parallelism,
            range: params.key_group_range,
            key_codec: params.key_codec,
            states: Vec::new(),
            restored,
            pending,
            track_changes,
        })
    }

    /// Metas of the restored states not registered yet.
    pub(crate) fn pending(&self) -> &[StateMeta] {
        &self.pending
    }

    /// Whether the store holds no state at all (nothing registered, nothing
    /// restored).
    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.pending.is_empty()
    }

    /// Metas of every state: registered ones, then restored ones.
    pub(crate) fn metas(&self) -> Vec<StateMeta> {
        self.states
            .iter()
            .map(|s| s.meta.clone())
            .chain(self.pending.iter().cloned())
            .collect()
    }

    /// The number of (key, namespace) entries, restored states included.
    pub(crate) fn num_entries(&self) -> Result<usize> {
        let registered: usize = self.states.iter().map(|s| s.table.entries()).sum();
        let pending = match &self.restored {
            Some(data) if !self.pending.is_empty() => data.count_entries(&self.pending)?,
            _ => 0,
        };
        Ok(registered + pending)
    }

    /// Cuts every table's change period (what changed since the last cut).
    pub(crate) fn take_changes(&mut self) -> ChangePeriod {
        self.states
            .iter_mut()
            .map(|s| s.table.take_changes())
            .collect()
    }

    /// Drops every table and restored state.
    pub(crate) fn clear(&mut self) {
        self.states.clear();
        self.restored = None;
        self.pending.clear();
    }

    /// Registers a state: returns the existing one after checking it matches,
    /// decodes a restored one, or creates an empty one.
    ///
    /// `insert` adds one restored record, with its key and namespace decoded,
    /// to the table at a key-group index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register<N: Namespace, T: ErasedTable<K> + 'static>(
        &mut self,
        backend: u64,
        meta: StateMeta,
        ttl: Option<StateTtlConfig>,
        compat: &[Compatibility],
        namespace_codec: &SharedCodec<N>,
        make: impl FnOnce(usize) -> T,
        mut insert: impl FnMut(&mut T, usize, EntryKey<K, N>, &RecordBody<'_>, &StateMeta) -> Result<()>,
    ) -> Result<HandleCore> {
        if let Some(i) = self.states.iter().position(|s| s.meta.name == meta.name) {
            let existing = &self.states[i];
            check_same_registration(&existing.meta, &meta)?;
            if !(&*existing.table as &dyn Any).is::<T>() {
                return Err(Error::StateKindMismatch {
                    name: meta.name.clone(),
                    registered: format!("{} of other types", existing.meta.kind),
                    requested: format!("{} of {}", meta.kind, std::any::type_name::<T>()),
                });
            }
            return Ok(HandleCore::new(backend, i as u32, &meta.name));
        }
        let mut table = make(self.range.len());
        if let Some(p) = self.pending.iter().position(|m| m.name == meta.name) {
            let written = &self.pending[p];
            let namespace = namespace_codec.compatibility(&written.namespace);
            check_restored_registration(written, &meta, namespace, compat)?;
            let data = self.restored.clone().ok_or_else(|| Error::Corrupted {
                file: "restored state".into(),
                offset: 0,
                reason: format!("state '{}' is pending without restored data", meta.name),
            })?;
            let name = &meta.name;
            data.for_each_record_of(name, |index, r| {
                let key = self
                    .key_codec
                    .decode(r.key)
                    .map_err(|e| codec_error(name, "key", e))?;
                let ns = namespace_codec
                    .decode(r.namespace)
                    .map_err(|e| codec_error(name, "namespace", e))?;
                insert(&mut table, index, EntryKey(key, ns), &r.body, written)
            })?;
            self.pending.remove(p);
            if self.pending.is_empty() {
                self.restored = None;
            }
        }
        if self.track_changes {
            table.track_changes();
        }
        let i = self.states.len();
        self.states.push(Registered {
            meta: meta.clone(),
            table: Box::new(table),
            ttl,
        });
        Ok(HandleCore::new(backend, i as u32, &meta.name))
    }

    /// The synchronous part of a full snapshot.
    /// Expired entries (at `now`) of states with TTL are left out of full
    /// files, unless a state's TTL turns that cleanup off.
    pub(crate) fn snapshot_parts(&self, now: TtlInstant) -> SnapshotParts<K> {
        let tables: Vec<_> = self.states.iter().map(|s| s.table.snapshot()).collect();
        let mut metas: Vec<StateMeta> = self.states.iter().map(|s| s.meta.clone()).collect();
        let pending = match &self.restored {
            Some(data) if !self.pending.is_empty() => {
                let indices: HashMap<String, u32> = self
                    .pending
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.clone(), (metas.len() + i) as u32))
                    .collect();
                metas.extend(self.pending.iter().cloned());
                Some(PendingSnapshot::new(data.clone(), &indices))
            }
            _ => None,
        };
        let keep_expired: Vec<String> = self
            .states
            .iter()
            .filter(|s| s.ttl.as_ref().is_some_and(|t| !t.cleanup().full_snapshot))
            .map(|s| s.meta.name.clone())
            .collect();
        SnapshotParts {
            tables,
            pending,
            expiry: (now, keep_expired),
            meta: KeyedSnapshotMeta {
                max_parallelism: self.max_parallelism,
                range: self.range,
                key_codec: self.key_codec.schema(),
                states: metas,
                delta: false,
            },
            key_codec: self.key_codec.clone(),
        }
    }
}
