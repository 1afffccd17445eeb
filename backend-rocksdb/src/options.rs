//! Tuning of the RocksDB keyed backend.

use state_api::format::frame::MAX_FRAME_PAYLOAD;

use crate::fault::Faults;
use crate::memory::{MemoryBudget, MemoryMode};

/// Tuning of the RocksDB instances.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// How instances use memory: by default they share the process-wide
    /// [`MemoryBudget`] (block cache, memtables and write buffers); see
    /// [`crate::memory`].
    pub memory: MemoryMode,
    /// Block cache of one instance in [`MemoryMode::PerInstance`], in bytes
    /// (with a budget, the budget's cache is used instead).
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key (0 turns the filter off).
    pub bloom_bits_per_key: f64,
    /// Memtable size per column family, in bytes (with a budget, RocksDB may
    /// flush memtables earlier to keep them within it).
    pub write_buffer_bytes: usize,
    /// Size of a whole-key bloom filter in each memtable, as a fraction of
    /// the memtable (0 turns it off); it lets gets of absent keys skip the
    /// memtable search.
    pub memtable_bloom_ratio: f64,
    /// Largest value (or merged list) a state may hold; larger writes are
    /// refused when they are made. At most the canonical format's record limit.
    pub max_value_bytes: usize,
    /// Checkpoints share SST files between them ([`crate::native`]); when
    /// false every checkpoint is a full canonical snapshot. Savepoints are
    /// always canonical.
    pub incremental: bool,
    /// Failure injection for this crate's tests (cargo feature
    /// `fault-injection`); empty and free otherwise.
    #[doc(hidden)]
    pub faults: Faults,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            memory: MemoryMode::default(),
            block_cache_bytes: 64 << 20,
            bloom_bits_per_key: 10.0,
            write_buffer_bytes: 64 << 20,
            memtable_bloom_ratio: 0.0,
            max_value_bytes: MAX_FRAME_PAYLOAD - 4096,
            incremental: true,
            faults: Faults::default(),
        }
    }
}

impl RocksOptions {
    /// Instances share `budget` (see [`crate::memory`]).
    pub fn with_memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory = MemoryMode::Budget(budget);
        self
    }

    /// Each instance has its own cache, memtables and write buffer, with no
    /// bound on their sum (see [`MemoryMode::PerInstance`]).
    pub fn with_memory_per_instance(mut self) -> Self {
        self.memory = MemoryMode::PerInstance;
        self
    }
}
