//! [`KeyGroupedTimerQueue`]: deduplicated timers, one priority queue per key
//! group, and a queue of the key groups by their next timer.
//!
//! # Design
//!
//! ```text
//!  order:     binary min-heap of (head timestamp, key group), only key groups with timers
//!  order_pos: per key group, its place in `order` (or none)
//!  groups:    per key group, None until its first timer, then Box<GroupQueue>:
//!    heap:     [(timestamp, seq, slot)]  binary min-heap on (timestamp, seq), 16 bytes a node
//!    slots:    [Option<TimerKey>]        each timer stored once; freed slots are reused
//!    heap_pos: [u32] by slot             where the slot's node is in `heap`
//!    hashes:   [u32] by slot             the timer's hash, to rebuild `index`
//!    index:    [hash << 32 | slot + 1]   open addressing: finds a timer's slot
//! ```
//!
//! * Each timer is stored once, in its key group's `slots`: the heap nodes
//!   copy its timestamp (so sifting compares within the heap array) and the
//!   index holds 32 bits of its hash, so neither clones a key or a namespace.
//! * Sifting a node updates its slot's `heap_pos`, so removing any timer is
//!   `O(log n)`.
//! * The index (linear probing, backward-shift deletion) is a table of
//!   hints: an entry is valid while its slot holds the timer looked up.
//!   [`KeyGroupedTimerQueue::remove`] deletes the timer's entry, but polling
//!   leaves it stale, because reaching it would cost a cache miss per poll
//!   on large queues; stale entries are dropped when the index fills up and
//!   is rebuilt from the queued timers (amortised `O(1)` per addition).
//! * `seq` numbers the additions to a key group, ordering equal timestamps
//!   first in, first out. It restarts when the key group runs empty, and
//!   after `2^32` additions the queued timers are renumbered in order.
//! * The key groups with timers are themselves in a binary heap on (next
//!   timestamp, key group), updated in `O(log g)` when a key group's next
//!   timer changes, so the next timer overall is the next of the first key
//!   group.
//!
//! The index is a small table of our own rather than hashbrown's
//! `HashTable`: its entries may go stale (see above), which saves polling a
//! cache miss, and it holds 32 bits of hash beside each slot, so rebuilding
//! it reads no timer. Hashing is the in-memory tables' (`TableHasher`).

use std::fmt;
use std::hash::{BuildHasher, Hash};

use state_api::{Error, KeyGroupRange, Result};

use super::cow_map::TableHasher as RandomState;

/// A timer: fires at `timestamp` for (`key`, `namespace`).
pub type TimerKey<K, N> = state_api::timers::Timer<K, N>;

/// The most timers one key group holds: slots and heap positions are `u32`.
const MAX_GROUP_TIMERS: usize = u32::MAX as usize;

/// `order_pos` of a key group without timers.
const NOT_QUEUED: u32 = u32::MAX;

/// Timers partitioned by key group, deduplicated on (timestamp, key,
/// namespace), polled in timestamp order over all key groups.
///
/// Equal timestamps come out smaller key group first, and within one key
/// group in the order they were added. `add`, `remove` and `poll` take
/// `O(log n + log g)` time for `n` timers in the key group and `g` key groups
/// with timers; `peek`, `contains` and `len` take `O(1)`.
///
/// A key group that never held a timer costs 12 bytes and no allocation;
/// one that held timers keeps its capacity until [`clear`](Self::clear).
///
/// ```
/// use backend_memory::heap::timer_queue::{KeyGroupedTimerQueue, TimerKey};
/// use state_api::KeyGroupRange;
///
/// let mut timers = KeyGroupedTimerQueue::new(KeyGroupRange::new(0, 127));
/// let timer = |timestamp, key: &str| TimerKey { timestamp, key: key.to_string(), namespace: () };
/// assert!(timers.add(7, timer(20, "b"))?);
/// assert!(timers.add(3, timer(20, "a"))?);
/// assert!(timers.add(9, timer(10, "c"))?);
/// assert!(!timers.add(9, timer(10, "c"))?, "a timer is queued once");
/// assert!(timers.add(128, timer(1, "d")).is_err(), "key group 128 is not in the range");
///
/// assert_eq!(timers.poll_due(5), None);
/// assert_eq!(timers.poll_due(10), Some((9, timer(10, "c"))));
/// assert_eq!(timers.poll(), Some((3, timer(20, "a"))));
/// assert_eq!(timers.poll(), Some((7, timer(20, "b"))));
/// assert!(timers.is_empty());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Clone)]
pub struct KeyGroupedTimerQueue<K, N> {
    range: KeyGroupRange,
    /// One queue per key group of the range, by index in the range; `None`
    /// until the key group gets its first timer.
    groups: Vec<Option<Box<GroupQueue<K, N>>>>,
    /// The key groups with timers: a binary min-heap on (head timestamp,
    /// group index).
    order: Vec<OrderNode>,
    /// Where each key group is in `order`, or [`NOT_QUEUED`].
    order_pos: Vec<u32>,
    hasher: RandomState,
    len: usize,
}

impl<K: Eq + Hash, N: Eq + Hash> KeyGroupedTimerQueue<K, N> {
    /// An empty queue for the key groups of `range`.
    ///
    /// Allocates 12 bytes per key group of the range (at most 32768 of them
    /// for a valid max parallelism) and nothing per timer yet.
    pub fn new(range: KeyGroupRange) -> Self {
        KeyGroupedTimerQueue {
            range,
            groups: std::iter::repeat_with(|| None).take(range.len()).collect(),
            order: Vec::new(),
            order_pos: vec![NOT_QUEUED; range.len()],
            hasher: RandomState::default(),
            len: 0,
        }
    }

    /// The key groups this queue holds timers of.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// Adds a timer of key group `key_group`; false (and no change) when the
    /// same (timestamp, key, namespace) is already queued in that key group.
    ///
    /// A key group outside the range is an [`Error::KeyGroupOutOfRange`].
    pub fn add(&mut self, key_group: u32, timer: TimerKey<K, N>) -> Result<bool> {
        let g = self.group_index(key_group)?;
        let hash = self.hash(&timer);
        let group = self.groups[g].get_or_insert_with(Default::default);
        if group.find(hash, &timer).is_some() {
            return Ok(false);
        }
        if group.len() >= MAX_GROUP_TIMERS {
            return Err(Error::InvalidArgument {
                what: format!(
                    "key group {key_group} already holds {MAX_GROUP_TIMERS} timers, the most one key group can hold"
                ),
            });
        }
        group.push_new(hash, timer);
        self.len += 1;
        self.reorder(g);
        Ok(true)
    }

    /// Removes a queued timer of key group `key_group`; false when it was not
    /// queued.
    ///
    /// A key group outside the range is an [`Error::KeyGroupOutOfRange`].
    pub fn remove(&mut self, key_group: u32, timer: &TimerKey<K, N>) -> Result<bool> {
        let g = self.group_index(key_group)?;
        let hash = self.hash(timer);
        let Some(group) = self.groups[g].as_deref_mut() else {
            return Ok(false);
        };
        let Some(bucket) = group.find(hash, timer) else {
            return Ok(false);
        };
        if group.remove(bucket).is_none() {
            return Ok(false);
        }
        self.len -= 1;
        self.reorder(g);
        Ok(true)
    }

    /// Whether the timer is queued in key group `key_group` (false for a key
    /// group outside the range).
    pub fn contains(&self, key_group: u32, timer: &TimerKey<K, N>) -> bool {
        self.group(key_group)
            .is_some_and(|group| group.find(self.hash(timer), timer).is_some())
    }

    /// The next timer over all key groups and its key group: the smallest
    /// timestamp; for equal timestamps the smaller key group, and within one
    /// key group the timer added first.
    pub fn peek(&self) -> Option<(u32, &TimerKey<K, N>)> {
        let g = self.order.first()?.group;
        let timer = self.groups.get(g as usize)?.as_deref()?.head()?;
        Some((self.range.start() + g, timer))
    }

    /// Removes and returns the next timer ([`peek`](Self::peek)'s).
    pub fn poll(&mut self) -> Option<(u32, TimerKey<K, N>)> {
        let g = self.order.first()?.group;
        let timer = self.groups.get_mut(g as usize)?.as_deref_mut()?.pop()?;
        self.len -= 1;
        self.reorder(g as usize);
        Some((self.range.start() + g, timer))
    }

    /// Polls the next timer only if its timestamp is at most `time` (a timer
    /// at `time` is due).
    pub fn poll_due(&mut self, time: i64) -> Option<(u32, TimerKey<K, N>)> {
        if self.order.first()?.timestamp > time {
            return None;
        }
        self.poll()
    }

    /// The number of timers over all key groups.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The timers of one key group, in no particular order (for snapshots);
    /// none for a key group outside the range.
    pub fn key_group_timers(&self, key_group: u32) -> impl Iterator<Item = &TimerKey<K, N>> + '_ {
        self.group(key_group)
            .into_iter()
            .flat_map(GroupQueue::timers)
    }

    /// The number of timers of one key group (0 outside the range).
    pub fn key_group_len(&self, key_group: u32) -> usize {
        self.group(key_group).map_or(0, GroupQueue::len)
    }

    /// Removes every timer and frees the memory of every key group.
    pub fn clear(&mut self) {
        self.groups.iter_mut().for_each(|group| *group = None);
        self.order.clear();
        self.order_pos.fill(NOT_QUEUED);
        self.len = 0;
    }

    fn group_index(&self, key_group: u32) -> Result<usize> {
        self.range
            .index_of(key_group)
            .ok_or(Error::KeyGroupOutOfRange {
                key_group,
                range: self.range,
            })
    }

    fn group(&self, key_group: u32) -> Option<&GroupQueue<K, N>> {
        self.groups.get(self.range.index_of(key_group)?)?.as_deref()
    }

    fn hash(&self, timer: &TimerKey<K, N>) -> u32 {
        let hash = self.hasher.hash_one(timer);
        (hash ^ (hash >> 32)) as u32
    }

    /// Brings key group `g`'s place in `order` up to date after its head
    /// may have changed.
    fn reorder(&mut self, g: usize) {
        let head = self.groups[g]
            .as_deref()
            .and_then(|group| group.heap.first())
            .map(|node| node.timestamp);
        let pos = self.order_pos[g];
        match head {
            None if pos == NOT_QUEUED => {}
            None => self.order_remove(pos as usize),
            Some(timestamp) if pos == NOT_QUEUED => {
                let pos = self.order.len();
                self.order.push(OrderNode {
                    timestamp,
                    group: g as u32,
                });
                self.order_sift_up(pos);
            }
            Some(timestamp) => {
                let pos = pos as usize;
                let old = self.order[pos].timestamp;
                self.order[pos].timestamp = timestamp;
                if timestamp < old {
                    self.order_sift_up(pos);
                } else if timestamp > old {
                    self.order_sift_down(pos);
                }
            }
        }
    }

    fn order_remove(&mut self, pos: usize) {
        let Some(last) = self.order.pop() else {
            return;
        };
        if pos < self.order.len() {
            let removed = std::mem::replace(&mut self.order[pos], last);
            self.order_pos[removed.group as usize] = NOT_QUEUED;
            self.order_pos[last.group as usize] = pos as u32;
            let pos = self.order_sift_up(pos);
            self.order_sift_down(pos);
        } else {
            self.order_pos[last.group as usize] = NOT_QUEUED;
        }
    }

    fn order_sift_up(&mut self, mut pos: usize) -> usize {
        let node = self.order[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            let above = self.order[parent];
            if !node.before(&above) {
                break;
            }
            self.order[pos] = above;
            self.order_pos[above.group as usize] = pos as u32;
            pos = parent;
        }
        self.order[pos] = node;
        self.order_pos[node.group as usize] = pos as u32;
        pos
    }

    fn order_sift_down(&mut self, mut pos: usize) {
        let node = self.order[pos];
        let len = self.order.len();
        loop {
            let mut child = 2 * pos + 1;
            if child >= len {
                break;
            }
            if child + 1 < len && self.order[child + 1].before(&self.order[child]) {
                child += 1;
            }
            let below = self.order[child];
            if !below.before(&node) {
                break;
            }
            self.order[pos] = below;
            self.order_pos[below.group as usize] = pos as u32;
            pos = child;
        }
        self.order[pos] = node;
        self.order_pos[node.group as usize] = pos as u32;
    }
}

impl<K, N> fmt::Debug for KeyGroupedTimerQueue<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGroupedTimerQueue")
            .field("range", &self.range)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A key group in the queue of key groups.
#[derive(Clone, Copy)]
struct OrderNode {
    /// The timestamp of the key group's next timer.
    timestamp: i64,
    /// The key group's index in the range.
    group: u32,
}

impl OrderNode {
    #[inline]
    fn before(&self, other: &OrderNode) -> bool {
        (self.timestamp, self.group) < (other.timestamp, other.group)
    }
}

/// The timers of one key group.
#[derive(Clone)]
struct GroupQueue<K, N> {
    /// A binary min-heap on (timestamp, seq).
    heap: Vec<HeapNode>,
    /// The timers by slot; `None` for a free slot.
    slots: Vec<Option<TimerKey<K, N>>>,
    /// By slot: the timer's index hash (to rebuild the index).
    hashes: Vec<u32>,
    /// By slot: where the slot's node is in the heap (kept apart from the
    /// timers, so that sifting writes to a small array).
    heap_pos: Vec<u32>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    /// Finds a timer's slot. Its entries are hints: one is valid while its
    /// slot holds a timer, and the timer equal to the one looked up is the
    /// timer found. Polling frees a slot without touching the index (which
    /// would cost a cache miss per poll); the stale entries this leaves are
    /// dropped when the index is rebuilt. Every queued timer has a valid
    /// entry.
    index: IndexTable,
    /// The `seq` of the next timer added.
    next_seq: u32,
}

impl<K, N> Default for GroupQueue<K, N> {
    fn default() -> Self {
        GroupQueue {
            heap: Vec::new(),
            slots: Vec::new(),
            hashes: Vec::new(),
            heap_pos: Vec::new(),
            free: Vec::new(),
            index: IndexTable::default(),
            next_seq: 0,
        }
    }
}

/// A timer in its key group's heap: 16 bytes, so that sifting reads as
/// little memory as it can.
#[derive(Clone, Copy)]
struct HeapNode {
    timestamp: i64,
    /// Orders timers of equal timestamp by when they were added.
    seq: u32,
    slot: u32,
}

impl HeapNode {
    #[inline]
    fn before(&self, other: &HeapNode) -> bool {
        (self.timestamp, self.seq) < (other.timestamp, other.seq)
    }
}

impl<K: Eq, N: Eq> GroupQueue<K, N> {
    fn len(&self) -> usize {
        self.heap.len()
    }

    fn timers(&self) -> impl Iterator<Item = &TimerKey<K, N>> + '_ {
        self.slots.iter().flatten()
    }

    fn head(&self) -> Option<&TimerKey<K, N>> {
        let node = self.heap.first()?;
        self.slots.get(node.slot as usize)?.as_ref()
    }

    /// The index bucket of `timer`, whose hash is `hash`.
    fn find(&self, hash: u32, timer: &TimerKey<K, N>) -> Option<usize> {
        self.index.find(hash, |slot| {
            self.slots[slot as usize].as_ref() == Some(timer)
        })
    }

    /// Adds a timer that is not queued yet; the caller checked that the
    /// group has room (fewer than `u32::MAX` timers, so a free slot or a
    /// new slot number below `u32::MAX`).
    fn push_new(&mut self, hash: u32, timer: TimerKey<K, N>) {
        if self.next_seq == u32::MAX {
            self.renumber();
        }
        if self.index.is_full() {
            self.rebuild_index();
        }
        let timestamp = timer.timestamp;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(timer);
                self.hashes[slot as usize] = hash;
                slot
            }
            None => {
                self.slots.push(Some(timer));
                self.hashes.push(hash);
                self.heap_pos.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(hash, slot);
        let pos = self.heap.len();
        self.heap.push(HeapNode {
            timestamp,
            seq: self.next_seq,
            slot,
        });
        self.next_seq += 1;
        self.sift_up(pos);
    }

    /// Renumbers the timers' `seq` from 0 in heap order, keeping their
    /// order, when the numbers run out (after 2^32 additions without the
    /// key group running empty).
    #[cold]
    fn renumber(&mut self) {
        // A sorted array is a heap.
        self.heap
            .sort_unstable_by_key(|node| (node.timestamp, node.seq));
        for (pos, node) in self.heap.iter_mut().enumerate() {
            node.seq = pos as u32;
            self.heap_pos[node.slot as usize] = pos as u32;
        }
        self.next_seq = self.heap.len() as u32;
    }

    /// Rebuilds the index from the queued timers, dropping stale entries,
    /// with room for at least as many additions as there are timers.
    #[cold]
    fn rebuild_index(&mut self) {
        let live = self
            .slots
            .iter()
            .zip(&self.hashes)
            .enumerate()
            .filter(|(_, (timer, _))| timer.is_some())
            .map(|(slot, (_, &hash))| (hash, slot as u32));
        self.index.rebuild(self.heap.len(), live);
    }

    /// Removes the timer of index bucket `bucket`.
    fn remove(&mut self, bucket: usize) -> Option<TimerKey<K, N>> {
        let slot = self.index.remove(bucket);
        let timer = self.release(slot)?;
        self.heap_remove(self.heap_pos[slot as usize] as usize);
        Some(timer)
    }

    /// Removes the first timer (leaving its index entry stale).
    fn pop(&mut self) -> Option<TimerKey<K, N>> {
        let slot = self.heap.first()?.slot;
        let timer = self.release(slot)?;
        self.heap_remove(0);
        Some(timer)
    }

    /// Removes the heap node at `pos` (its slot stays).
    fn heap_remove(&mut self, pos: usize) {
        let Some(last) = self.heap.pop() else {
            return;
        };
        if pos >= self.heap.len() {
            if self.heap.is_empty() {
                self.next_seq = 0;
            }
            return;
        }
        self.heap[pos] = last;
        if pos == 0 {
            // Like `BinaryHeap::pop`: the last node is likely to belong near
            // the bottom, so move the hole down to a leaf first, then sift up.
            self.sift_down_to_leaf_then_up();
        } else {
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
    }

    /// Takes the timer out of slot `slot` and frees the slot (the caller
    /// removes its heap node and index entry).
    fn release(&mut self, slot: u32) -> Option<TimerKey<K, N>> {
        let timer = self.slots[slot as usize].take()?;
        self.free.push(slot);
        Some(timer)
    }

    #[inline]
    fn place(&mut self, pos: usize, node: HeapNode) {
        self.heap[pos] = node;
        self.heap_pos[node.slot as usize] = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            let above = self.heap[parent];
            if !node.before(&above) {
                break;
            }
            self.place(pos, above);
            pos = parent;
        }
        self.place(pos, node);
        pos
    }

    fn sift_down(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        let len = self.heap.len();
        loop {
            let mut child = 2 * pos + 1;
            if child >= len {
                break;
            }
            if child + 1 < len && self.heap[child + 1].before(&self.heap[child]) {
                child += 1;
            }
            let below = self.heap[child];
            if !below.before(&node) {
                break;
            }
            self.place(pos, below);
            pos = child;
        }
        self.place(pos, node);
    }

    /// Restores the heap after the root was replaced.
    fn sift_down_to_leaf_then_up(&mut self) {
        let node = self.heap[0];
        let len = self.heap.len();
        let mut pos = 0;
        let mut child = 1;
        while child + 1 < len {
            if self.heap[child + 1].before(&self.heap[child]) {
                child += 1;
            }
            self.place(pos, self.heap[child]);
            pos = child;
            child = 2 * pos + 1;
        }
        if child + 1 == len {
            self.place(pos, self.heap[child]);
            pos = child;
        }
        // The hole is at a leaf: put the node there and sift it up.
        self.heap[pos] = node;
        self.sift_up(pos);
    }
}

/// An open-addressing hash table of slot numbers: linear probing,
/// backward-shift deletion, at most 3/4 full (valid and stale entries).
///
/// A bucket is 0 when empty, else `hash << 32 | (slot + 1)`; a slot's home
/// bucket is its hash modulo the (power of two) number of buckets.
#[derive(Clone, Default)]
struct IndexTable {
    buckets: Vec<u64>,
    /// Entries, valid and stale.
    len: usize,
}

impl IndexTable {
    #[inline]
    fn entry(hash: u32, slot: u32) -> u64 {
        (u64::from(hash) << 32) | (u64::from(slot) + 1)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The bucket of a slot with `hash` for which `is_match` holds.
    #[inline]
    fn find(&self, hash: u32, mut is_match: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let entry = self.buckets[i];
            if entry == 0 {
                return None;
            }
            if (entry >> 32) as u32 == hash && is_match((entry as u32).wrapping_sub(1)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether one more entry would make the table more than 3/4 full.
    #[inline]
    fn is_full(&self) -> bool {
        (self.len + 1) * 4 > self.buckets.len() * 3
    }

    /// Adds an entry for `slot` with `hash`; the table is not full.
    #[inline]
    fn insert(&mut self, hash: u32, slot: u32) {
        Self::place(&mut self.buckets, Self::entry(hash, slot));
        self.len += 1;
    }

    /// Puts `entry` in the first empty bucket from its home; `buckets` has
    /// an empty bucket.
    #[inline]
    fn place(buckets: &mut [u64], entry: u64) {
        let mask = buckets.len().wrapping_sub(1);
        let mut i = (entry >> 32) as usize & mask;
        while buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        buckets[i] = entry;
    }

    /// Replaces every entry with the `count` (hash, slot) pairs of `live`,
    /// in a table at most 3/8 full with them (at least 8 buckets).
    fn rebuild(&mut self, count: usize, live: impl Iterator<Item = (u32, u32)>) {
        let mut size = 8;
        while (count + 1) * 8 > size * 3 {
            size *= 2;
        }
        if size == self.buckets.len() {
            self.buckets.fill(0);
        } else {
            self.buckets = vec![0; size];
        }
        self.len = 0;
        for (hash, slot) in live {
            Self::place(&mut self.buckets, Self::entry(hash, slot));
            self.len += 1;
        }
    }

    /// Empties bucket `bucket` and returns its slot, shifting the entries
    /// after it back so that every entry stays reachable from its home.
    fn remove(&mut self, bucket: usize) -> u32 {
        let slot = (self.buckets[bucket] as u32).wrapping_sub(1);
        let mask = self.mask();
        let mut hole = bucket;
        let mut i = (bucket + 1) & mask;
        loop {
            let entry = self.buckets[i];
            if entry == 0 {
                break;
            }
            let home = (entry >> 32) as usize & mask;
            // The entry may move back to the hole unless its home lies
            // (cyclically) after the hole, up to the entry's bucket.
            if i.wrapping_sub(home) & mask >= i.wrapping_sub(hole) & mask {
                self.buckets[hole] = entry;
                hole = i;
            }
            i = (i + 1) & mask;
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        slot
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use state_api::ErrorKind;

    type Queue = KeyGroupedTimerQueue<u64, u8>;

    fn timer(timestamp: i64, key: u64) -> TimerKey<u64, u8> {
        TimerKey {
            timestamp,
            key,
            namespace: 0,
        }
    }

    fn drain(queue: &mut Queue) -> Vec<(u32, i64, u64)> {
        std::iter::from_fn(|| queue.poll())
            .map(|(kg, t)| (kg, t.timestamp, t.key))
            .collect()
    }

    #[test]
    fn polls_by_timestamp_across_key_groups() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 9));
        for (kg, ts, key) in [(5, 30, 1), (2, 10, 2), (9, 20, 3), (2, 40, 4), (0, 5, 5)] {
            assert!(queue.add(kg, timer(ts, key))?);
        }
        assert_eq!(queue.len(), 5);
        assert_eq!(queue.peek(), Some((0, &timer(5, 5))));
        assert_eq!(
            drain(&mut queue),
            vec![(0, 5, 5), (2, 10, 2), (9, 20, 3), (5, 30, 1), (2, 40, 4)]
        );
        assert!(queue.is_empty());
        assert_eq!(queue.peek(), None);
        assert_eq!(queue.poll(), None);
        Ok(())
    }

    #[test]
    fn equal_timestamps_fire_smaller_key_group_first_then_in_insertion_order() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(10, 20));
        for (kg, key) in [(17, 1), (12, 2), (20, 3), (12, 4), (10, 5), (17, 6)] {
            assert!(queue.add(kg, timer(100, key))?);
        }
        assert_eq!(
            drain(&mut queue),
            vec![
                (10, 100, 5),
                (12, 100, 2),
                (12, 100, 4),
                (17, 100, 1),
                (17, 100, 6),
                (20, 100, 3)
            ]
        );
        Ok(())
    }

    #[test]
    fn add_deduplicates_on_timestamp_key_and_namespace() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 3));
        assert!(queue.add(1, timer(10, 7))?);
        assert!(!queue.add(1, timer(10, 7))?);
        assert_eq!(queue.len(), 1);
        // Another timestamp, key or namespace is another timer.
        assert!(queue.add(1, timer(11, 7))?);
        assert!(queue.add(1, timer(10, 8))?);
        assert!(queue.add(
            1,
            TimerKey {
                timestamp: 10,
                key: 7,
                namespace: 1
            }
        )?);
        assert_eq!(queue.len(), 4);
        assert_eq!(queue.key_group_len(1), 4);
        // Once polled, the timer can be added again.
        assert_eq!(queue.poll(), Some((1, timer(10, 7))));
        assert!(!queue.contains(1, &timer(10, 7)));
        assert!(queue.add(1, timer(10, 7))?);
        assert_eq!(queue.len(), 4);
        Ok(())
    }

    #[test]
    fn remove_head_middle_and_absent() -> Result<()> {
        let mut queue = KeyGroupedTimerQueue::<String, ()>::new(KeyGroupRange::new(0, 1));
        let t = |timestamp: i64, key: &str| TimerKey {
            timestamp,
            key: key.to_string(),
            namespace: (),
        };
        for (kg, ts, key) in [
            (0, 1, "a"),
            (1, 2, "b"),
            (0, 3, "c"),
            (1, 4, "d"),
            (0, 5, "e"),
        ] {
            assert!(queue.add(kg, t(ts, key))?);
        }
        // The head of all key groups.
        assert!(queue.remove(0, &t(1, "a"))?);
        assert_eq!(queue.peek(), Some((1, &t(2, "b"))));
        // A timer in the middle.
        assert!(queue.remove(0, &t(3, "c"))?);
        assert!(!queue.contains(0, &t(3, "c")));
        // Absent: never added, already removed, in another key group, and
        // in a key group without timers.
        assert!(!queue.remove(0, &t(9, "z"))?);
        assert!(!queue.remove(0, &t(1, "a"))?);
        assert!(!queue.remove(0, &t(2, "b"))?);
        queue.clear();
        assert!(!queue.remove(1, &t(2, "b"))?);
        assert!(queue.add(1, t(2, "b"))?);
        assert!(queue.add(0, t(5, "e"))?);
        assert!(queue.add(1, t(4, "d"))?);
        assert_eq!(queue.len(), 3);
        // The last timer of a key group takes the key group out of the order.
        assert!(queue.remove(1, &t(2, "b"))?);
        assert!(queue.remove(1, &t(4, "d"))?);
        assert_eq!(queue.peek(), Some((0, &t(5, "e"))));
        assert_eq!(queue.poll(), Some((0, t(5, "e"))));
        assert_eq!(queue.poll(), None);
        Ok(())
    }

    #[test]
    fn poll_due_fires_timers_at_or_before_the_time() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 3));
        queue.add(3, timer(10, 1))?;
        queue.add(0, timer(10, 2))?;
        queue.add(2, timer(11, 3))?;
        assert_eq!(queue.poll_due(9), None);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.poll_due(10), Some((0, timer(10, 2))));
        assert_eq!(queue.poll_due(10), Some((3, timer(10, 1))));
        assert_eq!(queue.poll_due(10), None);
        assert_eq!(queue.poll_due(i64::MAX), Some((2, timer(11, 3))));
        assert_eq!(queue.poll_due(i64::MAX), None);
        Ok(())
    }

    #[test]
    fn key_group_outside_the_range_is_an_error() -> Result<()> {
        let range = KeyGroupRange::new(4, 7);
        let mut queue = Queue::new(range);
        assert_eq!(queue.key_group_range(), range);
        for kg in [0, 3, 8, u32::MAX] {
            let err = queue.add(kg, timer(1, 1)).err();
            assert!(
                matches!(err, Some(Error::KeyGroupOutOfRange { key_group, range: r }) if key_group == kg && r == range),
                "{err:?}"
            );
            assert!(matches!(
                queue.remove(kg, &timer(1, 1)),
                Err(Error::KeyGroupOutOfRange { .. })
            ));
            assert!(!queue.contains(kg, &timer(1, 1)));
            assert_eq!(queue.key_group_len(kg), 0);
            assert_eq!(queue.key_group_timers(kg).count(), 0);
        }
        assert!(queue.is_empty());
        let err = queue.add(8, timer(1, 1)).err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidArgument));

        let mut empty = Queue::new(KeyGroupRange::EMPTY);
        assert!(empty.add(0, timer(1, 1)).is_err());
        assert_eq!(empty.poll(), None);
        Ok(())
    }

    #[test]
    fn clear_empties_every_key_group() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 127));
        for i in 0..1_000u64 {
            queue.add((i % 128) as u32, timer((i * 7919 % 1000) as i64, i))?;
        }
        queue.clear();
        assert!(queue.is_empty());
        assert_eq!(queue.peek(), None);
        assert_eq!(queue.poll(), None);
        assert!((0..128).all(|kg| queue.key_group_len(kg) == 0));
        assert!(!queue.contains(5, &timer(5 * 7919 % 1000, 5)));
        // Usable again.
        assert!(queue.add(9, timer(3, 1))?);
        assert!(queue.add(8, timer(3, 2))?);
        assert_eq!(drain(&mut queue), vec![(8, 3, 2), (9, 3, 1)]);
        Ok(())
    }

    #[test]
    fn key_group_timers_lists_one_key_group() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 3));
        for (kg, ts, key) in [(1, 5, 1), (2, 6, 2), (1, 7, 3), (1, 1, 4), (3, 0, 5)] {
            queue.add(kg, timer(ts, key))?;
        }
        queue.remove(1, &timer(7, 3))?;
        let mut timers: Vec<_> = queue.key_group_timers(1).cloned().collect();
        timers.sort_by_key(|t| t.timestamp);
        assert_eq!(timers, vec![timer(1, 4), timer(5, 1)]);
        assert_eq!(queue.key_group_len(1), 2);
        assert_eq!(queue.key_group_timers(0).count(), 0);
        assert_eq!(
            queue.key_group_timers(3).collect::<Vec<_>>(),
            vec![&timer(0, 5)]
        );
        Ok(())
    }

    #[test]
    fn clone_is_independent() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 1));
        queue.add(0, timer(2, 1))?;
        queue.add(1, timer(1, 2))?;
        let mut copy = queue.clone();
        assert_eq!(copy.poll(), Some((1, timer(1, 2))));
        assert_eq!(queue.len(), 2);
        assert_eq!(drain(&mut queue), vec![(1, 1, 2), (0, 2, 1)]);
        assert_eq!(drain(&mut copy), vec![(0, 2, 1)]);
        Ok(())
    }

    /// Many timers in one key group: the index grows and shifts entries back
    /// on removal, and removals anywhere in the heap keep it ordered.
    #[test]
    fn many_timers_in_one_key_group() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 0));
        let mut model = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for key in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ts = (x % 5_000) as i64;
            assert!(queue.add(0, timer(ts, key))?);
            model.push((ts, key));
        }
        for &(ts, key) in model.iter().step_by(3) {
            assert!(queue.remove(0, &timer(ts, key))?);
            assert!(!queue.contains(0, &timer(ts, key)));
        }
        let rest: Vec<(i64, u64)> = {
            let mut rest: Vec<_> = model
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != 0)
                .map(|(_, &t)| t)
                .collect();
            rest.sort();
            rest
        };
        assert_eq!(queue.len(), rest.len());
        assert!(rest
            .iter()
            .all(|&(ts, key)| queue.contains(0, &timer(ts, key))));
        // Keys were added in increasing order, so insertion order among equal
        // timestamps is key order.
        let polled: Vec<(i64, u64)> = drain(&mut queue)
            .into_iter()
            .map(|(_, ts, key)| (ts, key))
            .collect();
        assert_eq!(polled, rest);
        Ok(())
    }

    /// Polling leaves stale index entries behind: polled timers are gone
    /// for `contains`, `remove` and dedup, and can be added again.
    #[test]
    fn polled_timers_can_be_added_again() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 1));
        for round in 0..3 {
            for key in 0..1_000u64 {
                assert!(
                    queue.add(1, timer((key % 10) as i64, key))?,
                    "round {round}"
                );
            }
            assert_eq!(queue.add(1, timer(3, 3)).ok(), Some(false));
            for key in 0..500u64 {
                assert_eq!(
                    queue.poll().map(|(_, t)| t.timestamp),
                    Some((key / 100) as i64)
                );
            }
            let polled = |key: u64| key % 10 < 5;
            for key in 0..1_000u64 {
                let t = timer((key % 10) as i64, key);
                assert_eq!(queue.contains(1, &t), !polled(key));
                if polled(key) && key % 2 == 0 {
                    assert!(!queue.remove(1, &t)?);
                    assert!(queue.add(1, t)?);
                }
            }
            assert_eq!(queue.len(), 800);
            for key in (0..1_000u64).filter(|key| key % 2 == 1) {
                assert_eq!(
                    queue.remove(1, &timer((key % 10) as i64, key))?,
                    !polled(key)
                );
            }
            assert_eq!(queue.len(), 500);
            assert_eq!(drain(&mut queue).len(), 500);
        }
        Ok(())
    }

    /// Adding and polling forever with few timers queued keeps the index
    /// small: stale entries are dropped when it is rebuilt.
    #[test]
    fn index_stays_small_under_add_and_poll_churn() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 0));
        for key in 0..100_000u64 {
            assert!(queue.add(0, timer(key as i64, key))?);
            if key >= 10 {
                assert_eq!(queue.poll(), Some((0, timer(key as i64 - 10, key - 10))));
            }
        }
        assert_eq!(queue.len(), 10);
        let group = queue.groups[0].as_deref().expect("key group 0 has timers");
        assert!(
            group.index.buckets.len() <= 64,
            "{}",
            group.index.buckets.len()
        );
        assert!(group.slots.len() <= 11, "{}", group.slots.len());
        Ok(())
    }

    /// When the addition counter of a key group runs out, its timers are
    /// renumbered and equal timestamps still come out first in, first out.
    #[test]
    fn insertion_order_survives_renumbering() -> Result<()> {
        let mut queue = Queue::new(KeyGroupRange::new(0, 1));
        queue.add(1, timer(5, 1))?;
        queue.add(1, timer(5, 2))?;
        queue.add(1, timer(3, 3))?;
        let group = queue.groups[1]
            .as_deref_mut()
            .expect("key group 1 has timers");
        group.next_seq = u32::MAX - 2;
        for key in 4..10 {
            queue.add(1, timer(5, key))?;
        }
        queue.add(1, timer(4, 10))?;
        let group = queue.groups[1].as_deref().expect("key group 1 has timers");
        assert!(group.next_seq < 20, "renumbered: {}", group.next_seq);
        let polled: Vec<_> = drain(&mut queue)
            .into_iter()
            .map(|(_, _, key)| key)
            .collect();
        assert_eq!(polled, vec![3, 10, 1, 2, 4, 5, 6, 7, 8, 9]);
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(u32, TimerKey<u64, u8>),
        Remove(u32, TimerKey<u64, u8>),
        Poll,
        PollDue(i64),
        Clear,
    }

    /// Key groups 0..12 over a queue of 1..=10 (so some are out of range), and
    /// small timestamp, key and namespace domains (so timers collide).
    fn op() -> impl Strategy<Value = Op> {
        let timer = || {
            (0u32..12, -2i64..6, 0u64..4, 0u8..2).prop_map(|(kg, timestamp, key, namespace)| {
                (
                    kg,
                    TimerKey {
                        timestamp,
                        key,
                        namespace,
                    },
                )
            })
        };
        prop_oneof![
            16 => timer().prop_map(|(kg, t)| Op::Add(kg, t)),
            8 => timer().prop_map(|(kg, t)| Op::Remove(kg, t)),
            7 => Just(Op::Poll),
            8 => (-3i64..7).prop_map(Op::PollDue),
            1 => Just(Op::Clear),
        ]
    }

    /// The reference: timers by (timestamp, key group, insertion number).
    type Model = BTreeMap<(i64, u32, u64), (u64, u8)>;

    fn model_find(model: &Model, kg: u32, t: &TimerKey<u64, u8>) -> Option<(i64, u32, u64)> {
        model
            .iter()
            .find(|(&(ts, g, _), &(key, ns))| {
                (ts, g, key, ns) == (t.timestamp, kg, t.key, t.namespace)
            })
            .map(|(&k, _)| k)
    }

    fn model_poll(model: &mut Model) -> Option<(u32, TimerKey<u64, u8>)> {
        let ((timestamp, kg, _), (key, namespace)) = model.pop_first()?;
        Some((
            kg,
            TimerKey {
                timestamp,
                key,
                namespace,
            },
        ))
    }

    proptest! {
        /// Random operations agree with a sorted-map model: the polled
        /// timers (timestamp, key group, key and namespace, first in first
        /// out for equal timestamps in one key group), dedup, removal,
        /// lengths and the timers of each key group.
        #[test]
        fn agrees_with_a_sorted_model(ops in proptest::collection::vec(op(), 0..300)) {
            let range = KeyGroupRange::new(1, 10);
            let mut queue = Queue::new(range);
            let mut model = Model::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Add(kg, t) => {
                        let added = queue.add(kg, t.clone());
                        if !range.contains(kg) {
                            prop_assert!(added.is_err());
                        } else {
                            let fresh = model_find(&model, kg, &t).is_none();
                            prop_assert_eq!(added.ok(), Some(fresh));
                            if fresh {
                                model.insert((t.timestamp, kg, seq), (t.key, t.namespace));
                                seq += 1;
                            }
                        }
                    }
                    Op::Remove(kg, t) => {
                        let removed = queue.remove(kg, &t);
                        if !range.contains(kg) {
                            prop_assert!(removed.is_err());
                        } else {
                            let found = model_find(&model, kg, &t);
                            prop_assert_eq!(removed.ok(), Some(found.is_some()));
                            if let Some(k) = found {
                                model.remove(&k);
                            }
                        }
                    }
                    Op::Poll => prop_assert_eq!(queue.poll(), model_poll(&mut model)),
                    Op::PollDue(time) => {
                        let due = model.first_key_value().is_some_and(|(&(ts, _, _), _)| ts <= time);
                        let expected = if due { model_poll(&mut model) } else { None };
                        prop_assert_eq!(queue.poll_due(time), expected);
                    }
                    Op::Clear => {
                        queue.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(queue.is_empty(), model.is_empty());
                let head = model
                    .first_key_value()
                    .map(|(&(ts, kg, _), &(key, ns))| (kg, ts, key, ns));
                prop_assert_eq!(
                    queue.peek().map(|(kg, t)| (kg, t.timestamp, t.key, t.namespace)),
                    head
                );
                for kg in 0..12 {
                    let mut expected: Vec<_> = model
                        .iter()
                        .filter(|(&(_, g, _), _)| g == kg)
                        .map(|(&(ts, _, _), &(key, ns))| (ts, key, ns))
                        .collect();
                    expected.sort();
                    let mut actual: Vec<_> = queue
                        .key_group_timers(kg)
                        .map(|t| (t.timestamp, t.key, t.namespace))
                        .collect();
                    actual.sort();
                    prop_assert_eq!(queue.key_group_len(kg), expected.len());
                    for &(timestamp, key, namespace) in &expected {
                        let t = TimerKey { timestamp, key, namespace };
                        prop_assert!(queue.contains(kg, &t));
                    }
                    prop_assert_eq!(actual, expected);
                }
            }
        }
    }
}
