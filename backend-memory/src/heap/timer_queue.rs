//! A priority queue of timers partitioned by key group, as Flink's
//! `KeyGroupPartitionedPriorityQueue` over `HeapPriorityQueueSet`s:
//!
//! * every timer is stored once, in a slab; a hash table of slab indices
//!   (hashed by the timer) deduplicates and finds a timer to delete;
//! * each key group has an array-backed binary min-heap of `(timestamp, slab
//!   index)`; each slab entry knows its position in its heap, so a delete is
//!   O(log n) without a search;
//! * a second min-heap orders the key groups that have timers by their head
//!   `(timestamp, key group)`, so the next timer overall is found in O(1)
//!   and kept in O(log G) per change of a head.
//!
//! An empty key group costs one empty `Vec` (no allocation).

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use state_api::timers::Timer;
use state_api::{Error, KeyGroupRange, Result};

use super::cow_map::TableHasher;

const NONE: u32 = u32::MAX;

struct Slot<K, N> {
    timer: Option<Timer<K, N>>,
    /// Key-group index of the timer.
    group: u32,
    /// Position in its group's heap.
    pos: u32,
}

/// Timers of a key-group range, deduplicated, ordered by timestamp (see the
/// module docs).
pub struct KeyGroupedTimerQueue<K, N> {
    range: KeyGroupRange,
    slots: Vec<Slot<K, N>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: TableHasher,
    /// Per key-group index: a min-heap of (timestamp, slot).
    groups: Vec<Vec<(i64, u32)>>,
    /// A min-heap of key-group indices with timers, by (head timestamp, index).
    heads: Vec<u32>,
    /// Position of each key-group index in `heads` (`NONE` when absent).
    head_pos: Vec<u32>,
    len: usize,
}

impl<K: Clone + Eq + Hash, N: Clone + Eq + Hash> Clone for KeyGroupedTimerQueue<K, N> {
    fn clone(&self) -> Self {
        let mut copy = Self::new(self.range);
        for (g, heap) in self.groups.iter().enumerate() {
            for &(_, slot) in heap {
                if let Some(t) = &self.slots[slot as usize].timer {
                    copy.insert(g, t.clone());
                }
            }
        }
        copy
    }
}

impl<K: Clone + Eq + Hash, N: Clone + Eq + Hash> KeyGroupedTimerQueue<K, N> {
    /// An empty queue for the key groups of `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        KeyGroupedTimerQueue {
            range,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: TableHasher::default(),
            groups: (0..range.len()).map(|_| Vec::new()).collect(),
            heads: Vec::new(),
            head_pos: vec![NONE; range.len()],
            len: 0,
        }
    }

    /// Number of timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no timer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn group_index(&self, key_group: u32) -> Result<usize> {
        if self.range.contains(key_group) {
            Ok((key_group - self.range.start()) as usize)
        } else {
            Err(Error::KeyGroupOutOfRange {
                key_group,
                range: self.range,
            })
        }
    }

    fn find(&self, timer: &Timer<K, N>) -> Option<u32> {
        let hash = self.hasher.hash_one(timer);
        let slots = &self.slots;
        self.index
            .find(hash, |&s| slots[s as usize].timer.as_ref() == Some(timer))
            .copied()
    }

    /// Whether `timer` is queued.
    pub fn contains(&self, timer: &Timer<K, N>) -> bool {
        self.find(timer).is_some()
    }

    /// Adds a timer of key group `key_group`; false (and no change) when it
    /// is queued already.
    pub fn add(&mut self, key_group: u32, timer: Timer<K, N>) -> Result<bool> {
        let g = self.group_index(key_group)?;
        if self.contains(&timer) {
            return Ok(false);
        }
        self.insert(g, timer);
        Ok(true)
    }

    /// Inserts a timer known not to be queued, into key-group index `g`.
    fn insert(&mut self, g: usize, timer: Timer<K, N>) {
        let hash = self.hasher.hash_one(&timer);
        let ts = timer.timestamp;
        let heap = &mut self.groups[g];
        let slot = Slot {
            timer: Some(timer),
            group: g as u32,
            pos: heap.len() as u32,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, s, |&i| {
            slots[i as usize]
                .timer
                .as_ref()
                .map_or(0, |t| hasher.hash_one(t))
        });
        heap.push((ts, s));
        let last = heap.len() - 1;
        let at = sift_up(heap, &mut self.slots, last);
        self.len += 1;
        if at == 0 {
            self.fix_head(g);
        }
    }

    /// Removes a queued timer; false when it was not queued.
    pub fn remove(&mut self, key_group: u32, timer: &Timer<K, N>) -> Result<bool> {
        self.group_index(key_group)?;
        let hash = self.hasher.hash_one(timer);
        let slots = &self.slots;
        let Ok(entry) = self
            .index
            .find_entry(hash, |&s| slots[s as usize].timer.as_ref() == Some(timer))
        else {
            return Ok(false);
        };
        let (s, _) = entry.remove();
        self.take_slot(s);
        Ok(true)
    }

    /// Takes slot `s` out of its group's heap and frees it (its index entry
    /// is already gone).
    fn take_slot(&mut self, s: u32) -> Timer<K, N> {
        let slot = &mut self.slots[s as usize];
        let (g, pos) = (slot.group as usize, slot.pos as usize);
        let timer = slot.timer.take();
        self.free.push(s);
        self.len -= 1;
        let heap = &mut self.groups[g];
        heap.swap_remove(pos);
        if pos < heap.len() {
            let moved = heap[pos].1;
            self.slots[moved as usize].pos = pos as u32;
            let up = sift_up(heap, &mut self.slots, pos);
            if up == pos {
                sift_down(heap, &mut self.slots, pos);
            }
        }
        self.fix_head(g);
        match timer {
            Some(t) => t,
            None => unreachable!("a queued slot holds its timer"),
        }
    }

    /// The next timer and its key group.
    pub fn peek(&self) -> Option<(u32, &Timer<K, N>)> {
        let &g = self.heads.first()?;
        let &(_, s) = self.groups[g as usize].first()?;
        let timer = self.slots[s as usize].timer.as_ref()?;
        Some((self.range.start() + g, timer))
    }

    /// Removes the next timer if its timestamp is at most `time`.
    pub fn poll_due(&mut self, time: i64) -> Option<(u32, Timer<K, N>)> {
        let &g = self.heads.first()?;
        let &(ts, s) = self.groups[g as usize].first()?;
        if ts > time {
            return None;
        }
        let hash = {
            let timer = self.slots[s as usize].timer.as_ref()?;
            self.hasher.hash_one(timer)
        };
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == s) {
            entry.remove();
        }
        let timer = self.take_slot(s);
        Some((self.range.start() + g, timer))
    }

    /// Removes the next timer.
    pub fn poll(&mut self) -> Option<(u32, Timer<K, N>)> {
        self.poll_due(i64::MAX)
    }

    /// The timers of one key group, in no particular order.
    pub fn key_group_timers(&self, key_group: u32) -> impl Iterator<Item = &Timer<K, N>> + '_ {
        let heap = self
            .group_index(key_group)
            .ok()
            .and_then(|g| self.groups.get(g))
            .map_or(&[][..], |h| &h[..]);
        heap.iter()
            .filter_map(|&(_, s)| self.slots[s as usize].timer.as_ref())
    }

    /// Removes every timer.
    pub fn clear(&mut self) {
        *self = Self::new(self.range);
    }

    /// Puts key-group index `g` where its head belongs in `heads` (or takes
    /// it out when it has no timer).
    fn fix_head(&mut self, g: usize) {
        let groups = &self.groups;
        let key = |gi: u32| -> (i64, u32) { (groups[gi as usize][0].0, gi) };
        let pos = self.head_pos[g];
        if groups[g].is_empty() {
            if pos == NONE {
                return;
            }
            let pos = pos as usize;
            self.heads.swap_remove(pos);
            self.head_pos[g] = NONE;
            if pos < self.heads.len() {
                let moved = self.heads[pos];
                self.head_pos[moved as usize] = pos as u32;
                heads_sift(&mut self.heads, &mut self.head_pos, pos, &key);
            }
            return;
        }
        let pos = if pos == NONE {
            self.heads.push(g as u32);
            self.heads.len() - 1
        } else {
            pos as usize
        };
        self.head_pos[g] = pos as u32;
        heads_sift(&mut self.heads, &mut self.head_pos, pos, &key);
    }
}

/// Sifts the entry at `pos` up; returns where it ends.
fn sift_up<K, N>(heap: &mut [(i64, u32)], slots: &mut [Slot<K, N>], mut pos: usize) -> usize {
    while pos > 0 {
        let parent = (pos - 1) / 2;
        if heap[parent] <= heap[pos] {
            break;
        }
        heap.swap(parent, pos);
        slots[heap[pos].1 as usize].pos = pos as u32;
        pos = parent;
    }
    slots[heap[pos].1 as usize].pos = pos as u32;
    pos
}

/// Sifts the entry at `pos` down.
fn sift_down<K, N>(heap: &mut [(i64, u32)], slots: &mut [Slot<K, N>], mut pos: usize) {
    loop {
        let left = 2 * pos + 1;
        if left >= heap.len() {
            break;
        }
        let right = left + 1;
        let child = if right < heap.len() && heap[right] < heap[left] {
            right
        } else {
            left
        };
        if heap[pos] <= heap[child] {
            break;
        }
        heap.swap(pos, child);
        slots[heap[pos].1 as usize].pos = pos as u32;
        pos = child;
    }
    slots[heap[pos].1 as usize].pos = pos as u32;
}

/// Restores the heap order of `heads` around `pos`, in either direction.
fn heads_sift(
    heads: &mut [u32],
    head_pos: &mut [u32],
    mut pos: usize,
    key: &impl Fn(u32) -> (i64, u32),
) {
    while pos > 0 {
        let parent = (pos - 1) / 2;
        if key(heads[parent]) <= key(heads[pos]) {
            break;
        }
        heads.swap(parent, pos);
        head_pos[heads[pos] as usize] = pos as u32;
        pos = parent;
    }
    loop {
        let left = 2 * pos + 1;
        if left >= heads.len() {
            break;
        }
        let right = left + 1;
        let child = if right < heads.len() && key(heads[right]) < key(heads[left]) {
            right
        } else {
            left
        };
        if key(heads[pos]) <= key(heads[child]) {
            break;
        }
        heads.swap(pos, child);
        head_pos[heads[pos] as usize] = pos as u32;
        pos = child;
    }
    head_pos[heads[pos] as usize] = pos as u32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t(timestamp: i64, key: u64) -> Timer<u64, ()> {
        Timer {
            timestamp,
            key,
            namespace: (),
        }
    }

    #[test]
    fn orders_across_key_groups_and_dedups() -> Result<()> {
        let mut q = KeyGroupedTimerQueue::new(KeyGroupRange::new(4, 7));
        assert!(q.add(6, t(30, 1))?);
        assert!(q.add(5, t(10, 2))?);
        assert!(q.add(4, t(30, 3))?);
        assert!(!q.add(5, t(10, 2))?, "a duplicate");
        assert_eq!(q.len(), 3);
        assert!(q.add(2, t(1, 1)).is_err(), "outside the range");
        assert_eq!(q.peek().map(|(g, x)| (g, x.timestamp)), Some((5, 10)));
        assert_eq!(q.poll_due(9), None);
        assert_eq!(q.poll_due(10), Some((5, t(10, 2))));
        // Equal timestamps: the smaller key group first.
        assert_eq!(q.poll(), Some((4, t(30, 3))));
        assert_eq!(q.poll(), Some((6, t(30, 1))));
        assert!(q.is_empty());
        Ok(())
    }

    #[test]
    fn removes_head_middle_and_absent() -> Result<()> {
        let mut q = KeyGroupedTimerQueue::new(KeyGroupRange::new(0, 1));
        for (ts, k) in [(5, 1), (3, 2), (8, 3), (1, 4), (9, 5)] {
            q.add((k % 2) as u32, t(ts, k))?;
        }
        assert!(q.remove(0, &t(1, 4))?, "the head");
        assert!(q.remove(1, &t(8, 3))?, "a middle one");
        assert!(!q.remove(1, &t(8, 3))?, "gone already");
        assert!(!q.remove(0, &t(7, 7))?, "never there");
        let order: Vec<i64> = std::iter::from_fn(|| q.poll().map(|(_, x)| x.timestamp)).collect();
        assert_eq!(order, vec![3, 5, 9]);
        Ok(())
    }

    #[test]
    fn key_group_timers_and_clear() -> Result<()> {
        let mut q = KeyGroupedTimerQueue::new(KeyGroupRange::new(0, 3));
        q.add(2, t(1, 10))?;
        q.add(2, t(2, 10))?;
        q.add(1, t(3, 11))?;
        let mut in_2: Vec<i64> = q.key_group_timers(2).map(|x| x.timestamp).collect();
        in_2.sort();
        assert_eq!(in_2, vec![1, 2]);
        assert_eq!(q.key_group_timers(0).count(), 0);
        assert_eq!(q.clone().len(), 3);
        q.clear();
        assert!(q.peek().is_none());
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(i64, u64),
        Remove(i64, u64),
        Poll,
        PollDue(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..20, 0u64..12).prop_map(|(ts, k)| Op::Add(ts, k)),
            2 => (0i64..20, 0u64..12).prop_map(|(ts, k)| Op::Remove(ts, k)),
            1 => Just(Op::Poll),
            1 => (0i64..20).prop_map(Op::PollDue),
        ]
    }

    proptest! {
        /// Against a sorted set of (timestamp, key group, key): the same
        /// timers come out in the same (timestamp, key group) order.
        #[test]
        fn behaves_like_a_sorted_set(ops in proptest::collection::vec(op(), 1..300)) {
            let mut q = KeyGroupedTimerQueue::new(KeyGroupRange::new(0, 5));
            let mut model: BTreeSet<(i64, u32, u64)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Add(ts, k) => {
                        // A timer lives in its key's key group.
                        let g = k as u32 % 6;
                        let fresh = q.add(g, t(ts, k)).expect("in range");
                        prop_assert_eq!(fresh, model.insert((ts, g, k)));
                    }
                    Op::Remove(ts, k) => {
                        let g = k as u32 % 6;
                        let was = q.remove(g, &t(ts, k)).expect("in range");
                        prop_assert_eq!(was, model.remove(&(ts, g, k)));
                    }
                    Op::Poll | Op::PollDue(_) => {
                        let limit = if let Op::PollDue(l) = op { l } else { i64::MAX };
                        let got = q.poll_due(limit).map(|(g, x)| (x.timestamp, g, x.key));
                        let first = model.iter().next().filter(|m| m.0 <= limit).copied();
                        match (got, first) {
                            (None, None) => {}
                            (Some(got), Some(first)) => {
                                // Ties within a key group may come out in any order.
                                prop_assert_eq!((got.0, got.1), (first.0, first.1));
                                prop_assert!(model.remove(&got), "{:?} was queued", got);
                            }
                            (got, first) => prop_assert!(false, "{:?} vs {:?}", got, first),
                        }
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
