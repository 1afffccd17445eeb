//! A hash map whose clone is cheap and whose writes copy on write, shard by
//! shard.
//!
//! Entries live in up to a few hundred per shard, each shard a SwissTable
//! (`hashbrown::HashTable`) behind an `Arc`. Cloning the map — what a
//! snapshot's synchronous part does — clones the shard pointers: one reference
//! count per shard, no entry copied. A write to a shard that a snapshot still
//! shares copies that shard only (at most [`MAX_AVERAGE_SHARD_LEN`] × 2
//! entries); once the snapshot is dropped, writes mutate in place again. This
//! is Flink's copy-on-write state map at shard rather than entry granularity,
//! which keeps reads, writes and iteration at plain hash-table speed.
//!
//! The shard of a key is taken from bits 32.. of its hash, away from the low
//! bits SwissTable uses for buckets and the top seven it uses as tags.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use equivalent::Equivalent;
use hashbrown::hash_table::{Entry, HashTable};

/// The hasher of in-memory tables. Per-process seeded: it only places entries
/// in memory and is never persisted (key groups use their own fixed hash).
pub type TableHasher = foldhash::fast::RandomState;

/// The map doubles its shard count when shards hold more than this many
/// entries on average.
pub const MAX_AVERAGE_SHARD_LEN: usize = 256;

const SHARD_BITS_OFFSET: u32 = 32;

/// A copy-on-write hash map (see the module docs).
pub struct CowMap<K, V> {
    /// A power-of-two number of shards (none while empty).
    shards: Vec<Arc<HashTable<(K, V)>>>,
    len: usize,
    hasher: TableHasher,
}

impl<K, V> Clone for CowMap<K, V> {
    fn clone(&self) -> Self {
        CowMap {
            shards: self.shards.clone(),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// An empty map hashing with `hasher`.
    pub fn with_hasher(hasher: TableHasher) -> Self {
        CowMap {
            shards: Vec::new(),
            len: 0,
            hasher,
        }
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        let shard = ((hash >> SHARD_BITS_OFFSET) as usize) & (self.shards.len().wrapping_sub(1));
        (hash, shard)
    }

    /// The value of `key`.
    #[inline]
    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        let (hash, shard) = self.locate(key);
        self.shards[shard]
            .find(hash, |(k, _)| key.equivalent(k))
            .map(|(_, v)| v)
    }

    /// The value of `key`, to change in place (copies its shard first if a
    /// clone still shares it; an absent key copies nothing).
    #[inline]
    pub fn get_mut<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        let (hash, shard) = self.locate(key);
        let shard = &mut self.shards[shard];
        shard.find(hash, |(k, _)| key.equivalent(k))?;
        Arc::make_mut(shard)
            .find_mut(hash, |(k, _)| key.equivalent(k))
            .map(|(_, v)| v)
    }

    /// Sets `key` to `value`; returns the previous value.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards.push(Arc::new(HashTable::new()));
        }
        let (hash, shard) = self.locate(&key);
        let hasher = &self.hasher;
        let table = Arc::make_mut(&mut self.shards[shard]);
        match table.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut o) => Some(std::mem::replace(&mut o.get_mut().1, value)),
            Entry::Vacant(v) => {
                v.insert((key, value));
                self.len += 1;
                if self.len > self.shards.len() * MAX_AVERAGE_SHARD_LEN {
                    self.split();
                }
                None
            }
        }
    }

    /// Replaces the value of `key` with what `f` makes of it, in one
    /// lookup: `f` gets the current value (`None` when absent) and returns
    /// the new one (`None` removes the entry, or inserts nothing).
    /// `make_key` builds the owned key only when an entry is inserted.
    #[inline]
    pub fn modify<Q: Hash + Equivalent<K> + ?Sized>(
        &mut self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) {
        if self.shards.is_empty() {
            self.shards.push(Arc::new(HashTable::new()));
        }
        let (hash, shard) = self.locate(key);
        let hasher = &self.hasher;
        let table = Arc::make_mut(&mut self.shards[shard]);
        match table.entry(
            hash,
            |(k, _)| key.equivalent(k),
            |(k, _)| hasher.hash_one(k),
        ) {
            Entry::Occupied(o) => {
                let ((k, v), vacant) = o.remove();
                match f(Some(v)) {
                    Some(new) => {
                        vacant.insert((k, new));
                    }
                    None => self.len -= 1,
                }
            }
            Entry::Vacant(v) => {
                if let Some(new) = f(None) {
                    v.insert((make_key(), new));
                    self.len += 1;
                    if self.len > self.shards.len() * MAX_AVERAGE_SHARD_LEN {
                        self.split();
                    }
                }
            }
        }
    }

    /// Removes `key`; returns its value. An absent key copies nothing.
    #[inline]
    pub fn remove<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let (hash, shard) = self.locate(key);
        let shard = &mut self.shards[shard];
        shard.find(hash, |(k, _)| key.equivalent(k))?;
        let entry = Arc::make_mut(shard)
            .find_entry(hash, |(k, _)| key.equivalent(k))
            .ok()?;
        let ((_, v), _) = entry.remove();
        self.len -= 1;
        Some(v)
    }

    /// Doubles the number of shards, moving (or, from shards a clone shares,
    /// copying) every entry.
    ///
    /// Each new shard is allocated for exactly the entries it receives, so a
    /// split leaves the tables as full as SwissTable's own growth would
    /// (between 7/16 and 7/8 of their buckets), not half-empty: sized for
    /// the threshold instead, the shards of a large map sat at a third of
    /// their capacity and the heap held twice a plain hash map's bytes.
    #[cold]
    fn split(&mut self) {
        let count = self.shards.len() * 2;
        let hasher = self.hasher.clone();
        let shard_of = |k: &K| -> (u64, usize) {
            let hash = hasher.hash_one(k);
            (hash, ((hash >> SHARD_BITS_OFFSET) as usize) & (count - 1))
        };
        let mut sizes = vec![0usize; count];
        for shard in &self.shards {
            for (k, _) in shard.iter() {
                sizes[shard_of(k).1] += 1;
            }
        }
        let mut shards: Vec<HashTable<(K, V)>> =
            sizes.into_iter().map(HashTable::with_capacity).collect();
        let mut place = |(k, v): (K, V)| {
            let (hash, shard) = shard_of(&k);
            shards[shard].insert_unique(hash, (k, v), |(k, _)| hasher.hash_one(k));
        };
        for shard in std::mem::take(&mut self.shards) {
            match Arc::try_unwrap(shard) {
                Ok(table) => table.into_iter().for_each(&mut place),
                Err(shared) => shared.iter().cloned().for_each(&mut place),
            }
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|(k, v)| (k, v))
    }

    /// Number of shards (a power of two, or 0 while the map never held an
    /// entry).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The entries of shard `shard` (none past the last shard), in the
    /// shard's order: removing entries keeps the others' order, so a walk
    /// can resume at an offset.
    pub fn shard_iter(&self, shard: usize) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards
            .get(shard)
            .into_iter()
            .flat_map(|s| s.iter())
            .map(|(k, v)| (k, v))
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Whether both maps share every shard (nothing was copied between them).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        self.shards.len() == other.shards.len()
            && self
                .shards
                .iter()
                .zip(&other.shards)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Update(u16, u32),
        Modify(u16, Option<u32>),
        Snapshot,
        DropSnapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 2000, v)),
            2 => any::<u16>().prop_map(|k| Op::Remove(k % 2000)),
            2 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Update(k % 2000, v)),
            2 => (any::<u16>(), any::<Option<u32>>()).prop_map(|(k, v)| Op::Modify(k % 2000, v)),
            1 => Just(Op::Snapshot),
            1 => Just(Op::DropSnapshot),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The map behaves as a HashMap, and every snapshot (clone) keeps
        /// exactly the content it had when it was taken.
        #[test]
        fn behaves_like_a_hash_map_with_frozen_snapshots(ops in proptest::collection::vec(op(), 1..3000)) {
            let mut map = CowMap::with_hasher(TableHasher::default());
            let mut model: HashMap<u16, u32> = HashMap::new();
            let mut snapshots: Vec<(CowMap<u16, u32>, HashMap<u16, u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::Update(k, v) => {
                        let got = map.get_mut(&k).map(|slot| std::mem::replace(slot, v));
                        let want = model.get_mut(&k).map(|slot| std::mem::replace(slot, v));
                        prop_assert_eq!(got, want);
                    }
                    Op::Modify(k, v) => {
                        // Adds the old value to the new one; None removes.
                        let mut seen = None;
                        map.modify(&k, || k, |old| {
                            seen = Some(old);
                            v.map(|v| v.wrapping_add(old.unwrap_or(0)))
                        });
                        let old = model.remove(&k);
                        prop_assert_eq!(seen, Some(old));
                        if let Some(v) = v {
                            model.insert(k, v.wrapping_add(old.unwrap_or(0)));
                        }
                    }
                    Op::Snapshot => snapshots.push((map.clone(), model.clone())),
                    Op::DropSnapshot => { snapshots.pop(); }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let all: HashMap<u16, u32> = map.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&all, &model);
            for (k, v) in &model {
                prop_assert_eq!(map.get(k), Some(v));
            }
            for (snap, frozen) in &snapshots {
                let got: HashMap<u16, u32> = snap.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(&got, frozen);
                prop_assert_eq!(snap.len(), frozen.len());
            }
        }
    }

    #[test]
    fn splits_leave_the_shards_as_full_as_a_plain_table() {
        let mut map = CowMap::with_hasher(TableHasher::default());
        for k in 0..300_000u64 {
            map.insert(k, k);
            // Right after each split, and in between.
            if k % 9_973 == 0 || map.len() == map.shards.len() * MAX_AVERAGE_SHARD_LEN / 2 + 1 {
                let capacity: usize = map.shards.iter().map(|s| s.capacity()).sum();
                // SwissTable alone keeps capacity (7/8 of the buckets) under
                // twice the entries once it has grown; a split must not do worse.
                assert!(
                    capacity <= 2 * map.len() + 16 * map.shards.len(),
                    "{} entries in {} shards hold capacity for {capacity}",
                    map.len(),
                    map.shards.len()
                );
            }
        }
    }

    #[test]
    fn a_write_copies_one_shard_only() {
        let mut map = CowMap::with_hasher(TableHasher::default());
        for k in 0..10_000u32 {
            map.insert(k, k);
        }
        assert!(map.shards.len() >= 32, "{} shards", map.shards.len());
        let snapshot = map.clone();
        assert!(map.ptr_eq(&snapshot), "a clone shares every shard");
        *map.get_mut(&7).expect("present") = 0;
        let copied = map
            .shards
            .iter()
            .zip(&snapshot.shards)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1, "one shard diverged");
        assert_eq!(
            snapshot.get(&7),
            Some(&7),
            "the snapshot keeps the old value"
        );
        assert!(map.get_mut(&20_000).is_none());
        assert_eq!(map.remove(&30_000), None);
        let still_shared = map
            .shards
            .iter()
            .zip(&snapshot.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(
            still_shared,
            map.shards.len() - 1,
            "absent keys copy nothing"
        );
    }
}
