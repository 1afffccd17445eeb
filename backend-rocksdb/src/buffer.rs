//! The task's write buffer in front of RocksDB.
//!
//! Puts and deletes of whole entries go into a hash map per state first, so
//! the task reads its latest writes back without RocksDB, a key written many
//! times between flushes reaches RocksDB once, and a flush writes one batch
//! sorted by key, which RocksDB's skip-list memtable inserts much faster than
//! the same writes one by one in key-group order. Operations over ranges
//! (map iteration and clearing, key listing, snapshots) flush first.
//!
//! The buffer is full at [`MAX_BUFFERED_ENTRIES`] entries or when its
//! estimated memory (key and value bytes plus [`ENTRY_OVERHEAD`] per entry)
//! reaches its byte limit: [`MAX_BUFFERED_BYTES`], or less when a
//! [`crate::memory::MemoryBudget`] shares its write-buffer bytes among many
//! instances.

use hashbrown::HashMap;
use rocksdb::{BoundColumnFamily, WriteBatch};
use std::sync::Arc;

/// Entries a buffer holds before it is flushed.
pub const MAX_BUFFERED_ENTRIES: usize = 16 * 1024;
/// Estimated bytes a buffer holds before it is flushed, at most.
pub const MAX_BUFFERED_BYTES: usize = 4 << 20;
/// Estimated memory of a buffered entry on top of its key and value bytes:
/// its hash-table slot at the table's load factor and two heap allocations;
/// deliberately high.
pub const ENTRY_OVERHEAD: usize = 128;

type Map = HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>;

/// Buffered writes by state index: `Some(value)` is a put, `None` a delete.
pub struct WriteBuffer {
    states: Vec<Map>,
    entries: usize,
    bytes: usize,
    /// Estimated memory at which the buffer is full.
    limit: usize,
}

impl Default for WriteBuffer {
    fn default() -> Self {
        WriteBuffer {
            states: Vec::new(),
            entries: 0,
            bytes: 0,
            limit: MAX_BUFFERED_BYTES,
        }
    }
}

impl WriteBuffer {
    /// Sets the estimated memory at which the buffer is full (at most
    /// [`MAX_BUFFERED_BYTES`]).
    pub fn set_limit(&mut self, bytes: usize) {
        self.limit = bytes.min(MAX_BUFFERED_BYTES);
    }

    /// Estimated memory of the buffered entries.
    pub fn estimated_bytes(&self) -> usize {
        self.bytes + self.entries * ENTRY_OVERHEAD
    }

    /// The buffered write of `key` in state `index`, if any: `Some(None)` is
    /// a buffered delete.
    #[inline]
    pub fn get(&self, index: usize, key: &[u8]) -> Option<Option<&[u8]>> {
        self.states.get(index)?.get(key).map(|v| v.as_deref())
    }

    /// Buffers a put (`Some`) or delete (`None`); true when the buffer is
    /// full and should be flushed.
    pub fn put(&mut self, index: usize, key: &[u8], value: Option<&[u8]>) -> bool {
        if self.states.len() <= index {
            self.states.resize_with(index + 1, Map::default);
        }
        let map = &mut self.states[index];
        let added = value.map_or(0, <[u8]>::len);
        match map.get_mut(key) {
            Some(slot) => {
                self.bytes -= slot.as_ref().map_or(0, Vec::len);
                match (slot.as_mut(), value) {
                    (Some(old), Some(v)) => {
                        old.clear();
                        old.extend_from_slice(v);
                    }
                    (_, v) => *slot = v.map(<[u8]>::to_vec),
                }
            }
            None => {
                map.insert(key.to_vec(), value.map(<[u8]>::to_vec));
                self.entries += 1;
                self.bytes += key.len();
            }
        }
        self.bytes += added;
        self.is_full()
    }

    /// Appends encoded list elements to a buffered list value (a buffered
    /// delete becomes the elements alone). False when `key` is not buffered.
    pub fn append(&mut self, index: usize, key: &[u8], elements: &[u8]) -> bool {
        let Some(slot) = self.states.get_mut(index).and_then(|m| m.get_mut(key)) else {
            return false;
        };
        match slot {
            Some(v) => v.extend_from_slice(elements),
            None => *slot = Some(elements.to_vec()),
        }
        self.bytes += elements.len();
        true
    }

    fn is_full(&self) -> bool {
        self.entries >= MAX_BUFFERED_ENTRIES || self.estimated_bytes() >= self.limit
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Moves every buffered write into `batch`, sorted by key within each
    /// state; `cfs[i]` is state `i`'s column family. Returns the key and
    /// value bytes and the number of entries moved.
    pub fn drain_into(
        &mut self,
        batch: &mut WriteBatch,
        cfs: &[Arc<BoundColumnFamily<'_>>],
    ) -> (usize, usize) {
        let moved = (self.bytes, self.entries);
        for (map, cf) in self.states.iter_mut().zip(cfs) {
            let mut entries: Vec<_> = map.drain().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in entries {
                match v {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
            }
        }
        self.entries = 0;
        self.bytes = 0;
        moved
    }

    /// Drops every buffered write.
    pub fn clear(&mut self) {
        self.states.iter_mut().for_each(Map::clear);
        self.entries = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_the_latest_write_and_sizes_are_tracked() {
        let mut b = WriteBuffer::default();
        assert_eq!(b.get(0, b"k"), None);
        assert!(!b.put(2, b"k", Some(b"one")));
        assert_eq!(b.get(2, b"k"), Some(Some(&b"one"[..])));
        assert_eq!(b.get(1, b"k"), None);
        b.put(2, b"k", Some(b"two!"));
        assert_eq!(b.get(2, b"k"), Some(Some(&b"two!"[..])));
        assert_eq!((b.entries, b.bytes), (1, 5));
        b.put(2, b"k", None);
        assert_eq!(b.get(2, b"k"), Some(None));
        assert_eq!((b.entries, b.bytes), (1, 1));
        assert!(b.append(2, b"k", b"xy"));
        assert_eq!(b.get(2, b"k"), Some(Some(&b"xy"[..])));
        assert!(b.append(2, b"k", b"z"));
        assert_eq!(b.get(2, b"k"), Some(Some(&b"xyz"[..])));
        assert!(!b.append(2, b"other", b"z"));
        assert_eq!(b.bytes, 4);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.get(2, b"k"), None);
    }

    #[test]
    fn the_buffer_reports_full_at_its_entry_limit() {
        let mut b = WriteBuffer::default();
        for i in 0..MAX_BUFFERED_ENTRIES - 1 {
            assert!(!b.put(0, &(i as u64).to_be_bytes(), Some(b"v")));
        }
        assert!(b.put(0, b"last", Some(b"v")));
    }

    #[test]
    fn the_buffer_reports_full_at_its_memory_limit() {
        let mut b = WriteBuffer::default();
        b.set_limit(10 * (ENTRY_OVERHEAD + 9));
        for i in 0..9u64 {
            assert!(!b.put(0, &i.to_be_bytes(), Some(b"v")), "{i}");
        }
        assert!(b.put(0, b"12345678", Some(b"v")));
        assert_eq!(b.estimated_bytes(), 10 * (ENTRY_OVERHEAD + 9));
        b.set_limit(usize::MAX);
        assert_eq!(b.limit, MAX_BUFFERED_BYTES);
    }
}
