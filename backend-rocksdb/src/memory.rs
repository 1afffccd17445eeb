//! One memory budget for many RocksDB instances.
//!
//! On its own, every keyed backend has its own block cache, memtables per
//! column family, index and filter blocks held by its table readers, and the
//! task's write buffer ([`crate::buffer`]): a process hosting many operators
//! grows with their number. A [`MemoryBudget`] bounds the sum for every
//! instance opened with it:
//!
//! ```text
//! total_bytes ─┬─ task write buffers   write_buffer_fraction (1/8), split evenly among
//! (256 MiB by  │                       the live instances: each gets between
//!  default)    │                       MIN_TASK_BUFFER_BYTES and MAX_BUFFERED_BYTES
//!              └─ one LRU block cache  the rest: data blocks, index and filter blocks
//!                                      (L0's pinned), and the memtables, charged to it by
//!                                      a write buffer manager that flushes once they pass
//!                                      memtable_fraction (1/2) of the cache
//! ```
//!
//! The memtables' memory is reserved in the cache, which evicts blocks to make
//! room, so cache and memtables together stay within the cache's capacity.
//! Writes never stall on the budget: with many instances, the memtables of
//! idle ones keep their share until they are written again or checkpointed,
//! and the instance being written flushes its own memtables early instead
//! (smaller SSTs, more compaction), which is RocksDB's (and Flink's) trade.
//!
//! What the budget does not cover: RocksDB's per-instance bookkeeping (open
//! table readers, version and column-family structures, file buffers), blocks
//! that flushes and compactions read and write, and the allocator's slack
//! (glibc keeps freed memory in the arenas of RocksDB's background threads).
//! The `memory_budget` example measures it: 32 instances of 200,000 keys
//! under 256 MiB peaked 294 MiB above the process's start (312 MiB in a debug
//! build), 64 instances of 100,000 keys 328 MiB (debug); allow 32 MiB plus
//! 1 MiB per instance. Without the budget the same 32 instances took 883 MiB,
//! and that grows with every instance.
//!
//! By default ([`MemoryMode::ProcessDefault`]) every instance of the process
//! shares one budget of [`DEFAULT_BUDGET_BYTES`], created when the first
//! instance opens; an engine that wants other sizes or one budget per group
//! of operators builds its own [`MemoryBudget`] and passes it in
//! [`crate::RocksOptions::memory`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rocksdb::{Cache, WriteBufferManager};
use state_api::{Error, Result};

use crate::buffer::MAX_BUFFERED_BYTES;

/// Size of the process-wide default budget.
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;
/// The smallest write buffer an instance gets under a budget, however many
/// instances share it (smaller batches lose what sorting them gains).
pub const MIN_TASK_BUFFER_BYTES: usize = 256 << 10;
/// The smallest budget accepted.
pub const MIN_BUDGET_BYTES: usize = 16 << 20;

/// How the RocksDB instances of a backend use memory.
#[derive(Clone, Debug, Default)]
pub enum MemoryMode {
    /// Share the process-wide budget of [`DEFAULT_BUDGET_BYTES`] (created when
    /// the first instance opens) with every other instance in this mode.
    #[default]
    ProcessDefault,
    /// Share this budget with the other instances opened with it.
    Budget(MemoryBudget),
    /// Each instance has its own block cache of
    /// [`crate::RocksOptions::block_cache_bytes`], its own memtables and a
    /// full-size write buffer: memory grows with the number of instances.
    PerInstance,
}

impl MemoryMode {
    /// The budget instances in this mode share, if any.
    pub fn budget(&self) -> Option<MemoryBudget> {
        match self {
            MemoryMode::ProcessDefault => Some(MemoryBudget::process_default()),
            MemoryMode::Budget(b) => Some(b.clone()),
            MemoryMode::PerInstance => None,
        }
    }
}

/// How a [`MemoryBudget`] divides its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryBudgetConfig {
    /// Everything the budget covers, in bytes.
    pub total_bytes: usize,
    /// The share of `total_bytes` for the tasks' write buffers; the rest is
    /// RocksDB's block cache.
    pub write_buffer_fraction: f64,
    /// The share of the block cache memtables may take before RocksDB
    /// flushes them.
    pub memtable_fraction: f64,
}

impl MemoryBudgetConfig {
    /// A budget of `total_bytes` with the default fractions (1/8 for write
    /// buffers, half the cache for memtables).
    pub fn new(total_bytes: usize) -> Self {
        MemoryBudgetConfig {
            total_bytes,
            write_buffer_fraction: 0.125,
            memtable_fraction: 0.5,
        }
    }

    /// Checks the configuration and creates the cache and the write buffer
    /// manager.
    pub fn build(&self) -> Result<MemoryBudget> {
        if self.total_bytes < MIN_BUDGET_BYTES {
            return Err(Error::InvalidArgument {
                what: format!(
                    "a memory budget of {} bytes is below the minimum of {MIN_BUDGET_BYTES}",
                    self.total_bytes
                ),
            });
        }
        for (name, f) in [
            ("write_buffer_fraction", self.write_buffer_fraction),
            ("memtable_fraction", self.memtable_fraction),
        ] {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::InvalidArgument {
                    what: format!("memory budget {name} {f} is not between 0 and 1"),
                });
            }
        }
        Ok(MemoryBudget::create(self.clone()))
    }
}

impl Default for MemoryBudgetConfig {
    fn default() -> Self {
        MemoryBudgetConfig::new(DEFAULT_BUDGET_BYTES)
    }
}

/// A memory budget shared by RocksDB instances (see the module
/// documentation). Clones share it.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemoryBudgetConfig,
    cache_bytes: usize,
    cache: Cache,
    write_buffer_manager: WriteBufferManager,
    /// Instances open with this budget.
    instances: AtomicUsize,
}

/// What a budget's memory holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Bytes in the block cache: blocks plus the memtables' reservations.
    pub cache_bytes: usize,
    /// Of which memtables, as the write buffer manager counts them.
    pub memtable_bytes: usize,
    /// Bytes of cache entries that cannot be evicted now (pinned L0 index and
    /// filter blocks, blocks in use).
    pub pinned_bytes: usize,
    /// Instances open with the budget.
    pub instances: usize,
    /// The write buffer each instance may fill before writing it to RocksDB.
    pub task_buffer_bytes: usize,
}

impl MemoryBudget {
    /// A budget of `total_bytes` with the default fractions.
    pub fn new(total_bytes: usize) -> Result<Self> {
        MemoryBudgetConfig::new(total_bytes).build()
    }

    /// The process-wide budget of [`DEFAULT_BUDGET_BYTES`], created on first
    /// use.
    pub fn process_default() -> MemoryBudget {
        static DEFAULT: OnceLock<MemoryBudget> = OnceLock::new();
        DEFAULT
            .get_or_init(|| MemoryBudget::create(MemoryBudgetConfig::default()))
            .clone()
    }

    /// A checked configuration's budget.
    fn create(config: MemoryBudgetConfig) -> MemoryBudget {
        let task = (config.total_bytes as f64 * config.write_buffer_fraction) as usize;
        let cache_bytes = config.total_bytes - task;
        let cache = Cache::new_lru_cache(cache_bytes);
        let memtables = (cache_bytes as f64 * config.memtable_fraction) as usize;
        // No stall: an instance waiting for memory that idle instances hold
        // would wait until they write again, which a task thread serving
        // several of them never does.
        let write_buffer_manager = WriteBufferManager::new_write_buffer_manager_with_cache(
            memtables,
            false,
            cache.clone(),
        );
        MemoryBudget {
            inner: Arc::new(Inner {
                config,
                cache_bytes,
                cache,
                write_buffer_manager,
                instances: AtomicUsize::new(0),
            }),
        }
    }

    /// How the budget divides its bytes.
    pub fn config(&self) -> &MemoryBudgetConfig {
        &self.inner.config
    }

    /// Capacity of the shared block cache (memtables included).
    pub fn cache_bytes(&self) -> usize {
        self.inner.cache_bytes
    }

    /// Memtable bytes above which RocksDB flushes.
    pub fn memtable_bytes(&self) -> usize {
        self.inner.write_buffer_manager.get_buffer_size()
    }

    /// What the budget's memory holds now.
    pub fn usage(&self) -> MemoryUsage {
        MemoryUsage {
            cache_bytes: self.inner.cache.get_usage(),
            memtable_bytes: self.inner.write_buffer_manager.get_usage(),
            pinned_bytes: self.inner.cache.get_pinned_usage(),
            instances: self.inner.instances.load(Ordering::Relaxed),
            task_buffer_bytes: self.task_buffer_bytes(),
        }
    }

    /// The write buffer each open instance may fill now: the budget's share
    /// for write buffers split evenly, within
    /// [`MIN_TASK_BUFFER_BYTES`]..=[`MAX_BUFFERED_BYTES`].
    pub fn task_buffer_bytes(&self) -> usize {
        let share = self.inner.config.total_bytes - self.inner.cache_bytes;
        let n = self.inner.instances.load(Ordering::Relaxed).max(1);
        (share / n).clamp(MIN_TASK_BUFFER_BYTES, MAX_BUFFERED_BYTES)
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub(crate) fn write_buffer_manager(&self) -> &WriteBufferManager {
        &self.inner.write_buffer_manager
    }

    /// Counts an instance in until the returned member is dropped.
    pub(crate) fn join(&self) -> BudgetMember {
        self.inner.instances.fetch_add(1, Ordering::Relaxed);
        BudgetMember {
            budget: self.clone(),
        }
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("config", &self.inner.config)
            .field("usage", &self.usage())
            .finish()
    }
}

/// An instance's membership in a budget: its write buffer is counted while
/// it lives.
pub(crate) struct BudgetMember {
    budget: MemoryBudget,
}

impl BudgetMember {
    pub(crate) fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
}

impl Drop for BudgetMember {
    fn drop(&mut self) {
        self.budget.inner.instances.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_divides_its_bytes_and_splits_write_buffers() {
        let b = MemoryBudget::new(64 << 20).expect("a valid budget");
        assert_eq!(b.cache_bytes(), 56 << 20);
        assert_eq!(b.memtable_bytes(), 28 << 20);
        // 8 MiB of write buffers: one instance is capped at the full size...
        let one = b.join();
        assert_eq!(b.task_buffer_bytes(), MAX_BUFFERED_BYTES);
        // ...four get 2 MiB each, and many get the minimum.
        let more: Vec<_> = (0..3).map(|_| b.join()).collect();
        assert_eq!(b.task_buffer_bytes(), 2 << 20);
        let many: Vec<_> = (0..60).map(|_| b.join()).collect();
        assert_eq!(b.task_buffer_bytes(), MIN_TASK_BUFFER_BYTES);
        drop(many);
        drop(more);
        assert_eq!(b.usage().instances, 1);
        drop(one);
        assert_eq!(b.usage().instances, 0);
    }

    #[test]
    fn invalid_budgets_are_refused() {
        assert!(MemoryBudget::new(1 << 20).is_err());
        let mut c = MemoryBudgetConfig::new(64 << 20);
        c.memtable_fraction = 1.0;
        assert!(c.build().is_err());
        c.memtable_fraction = 0.5;
        c.write_buffer_fraction = f64::NAN;
        assert!(c.build().is_err());
        assert_eq!(
            MemoryBudget::process_default().config(),
            &MemoryBudgetConfig::default()
        );
    }
}
