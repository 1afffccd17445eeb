//! Backends: the keyed and operator backend contracts, the state backend
//! factory that creates them, and the checkpointed-function hook.

pub mod checkpointed;
pub mod keyed;
pub mod operator;
pub mod registration;

use std::sync::Arc;

use crate::codec::SharedCodec;
use crate::error::Result;
use crate::key_group::{check_parallelism, KeyGroupRange};
use crate::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use crate::snapshot::stream::{
    CheckpointStreamFactory, LocalFiles, SharedFileReader, StateFileReader,
};
use crate::snapshot::task::SnapshotTask;
use crate::snapshot::SnapshotOptions;
use crate::state::ttl::StateClock;
use crate::state::StateKey;
use keyed::KeyedStateBackend;
use operator::DefaultOperatorStateBackend;

/// What a keyed backend is created for: its key groups and its key codec.
pub struct KeyedBackendParams<K> {
    /// The max parallelism (never changes across restores).
    pub max_parallelism: u32,
    /// The key groups the backend owns.
    pub key_group_range: KeyGroupRange,
    /// The codec of keys; its bytes decide each key's group.
    pub key_codec: SharedCodec<K>,
    /// The clock state time-to-live is measured against (the system clock
    /// and no watermark unless set with [`KeyedBackendParams::with_clock`]).
    pub clock: StateClock,
    /// Reads the files of the handles restored (unset: the backend reads
    /// through its own checkpoint storage, or the local file system).
    pub files: Option<SharedFileReader>,
}

impl<K> Clone for KeyedBackendParams<K> {
    fn clone(&self) -> Self {
        KeyedBackendParams {
            max_parallelism: self.max_parallelism,
            key_group_range: self.key_group_range,
            key_codec: self.key_codec.clone(),
            clock: self.clock.clone(),
            files: self.files.clone(),
        }
    }
}

impl<K> KeyedBackendParams<K> {
    /// The parameters of subtask `index` of `parallelism`.
    pub fn for_subtask(
        max_parallelism: u32,
        parallelism: u32,
        index: u32,
        key_codec: SharedCodec<K>,
    ) -> Result<Self> {
        check_parallelism(max_parallelism, parallelism)?;
        Ok(KeyedBackendParams {
            max_parallelism,
            key_group_range: KeyGroupRange::for_operator(max_parallelism, parallelism, index)?,
            key_codec,
            clock: StateClock::default(),
            files: None,
        })
    }

    /// The same parameters with `clock` for state time-to-live (a manual
    /// clock in tests; a clone kept by the engine to advance the watermark).
    pub fn with_clock(mut self, clock: StateClock) -> Self {
        self.clock = clock;
        self
    }

    /// The same parameters, reading restored files through `files` (such as
    /// a checkpoint store's reader for an object store).
    pub fn with_files(mut self, files: SharedFileReader) -> Self {
        self.files = Some(files);
        self
    }

    /// The reader of restored files: the one set, else `default`.
    pub fn files_or<'a>(&'a self, default: &'a dyn StateFileReader) -> &'a dyn StateFileReader {
        self.files.as_deref().unwrap_or(default)
    }

    /// The reader of restored files: the one set, else the local file system.
    pub fn files(&self) -> &dyn StateFileReader {
        self.files_or(&LocalFiles)
    }
}

/// A configured state backend: creates keyed and operator backends (fresh or
/// restored) and the streams their snapshots write to.
pub trait StateBackend: Send + Sync {
    /// The keyed backend type for keys of type `K`.
    type Keyed<K: StateKey>: KeyedStateBackend<Key = K>;

    /// A short name ("memory", "fs", "rocksdb").
    fn name(&self) -> &'static str;

    /// Creates a keyed backend; restores it from `restore`, keeping only the key
    /// groups of `params.key_group_range` (the handles' ranges may differ).
    fn create_keyed_backend<K: StateKey>(
        &self,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
    ) -> Result<Self::Keyed<K>>;

    /// Creates an operator backend restored from `restore`.
    fn create_operator_backend(
        &self,
        restore: &[OperatorStateHandle],
    ) -> Result<DefaultOperatorStateBackend> {
        DefaultOperatorStateBackend::restore(restore)
    }

    /// Where the snapshots of checkpoint `checkpoint_id` are written.
    fn stream_factory(&self, checkpoint_id: u64) -> Result<Arc<dyn CheckpointStreamFactory>>;

    /// Takes the synchronous part of `keyed`'s snapshot for checkpoint
    /// `checkpoint_id` into this backend's streams (the id given once) and
    /// returns the asynchronous part. With a coordinator, use
    /// `checkpoint_store::PendingCheckpoint::snapshot_keyed`.
    fn snapshot_keyed<B: KeyedStateBackend>(
        &self,
        keyed: &mut B,
        checkpoint_id: u64,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        keyed.snapshot(checkpoint_id, self.stream_factory(checkpoint_id)?, options)
    }
}
