//! Typed state tables: one copy-on-write hash map ([`CowMap`]) per key group
//! per state.
//!
//! Taking a snapshot clones the per-key-group maps: one reference count per
//! shard of a few hundred entries, no entry copied. A later write copies only
//! the shard it touches, and only while a snapshot still shares it: Flink's
//! epoch-versioned copy-on-write, with the reference count as the epoch.

use std::any::Any;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use equivalent::Equivalent;

use super::cow_map::CowMap;
use state_api::codec::{Codec, SharedCodec};
use state_api::format::bytes::put_bytes;
use state_api::format::keyed::KeyedSnapshotWriter;
use state_api::state::ttl::{TtlInstant, TtlMeta};
use state_api::state::{Namespace, StateKey, StateValue};
use state_api::Result;

pub use super::cow_map::TableHasher;

/// The entries of one key group.
pub type GroupMap<K, N, S> = CowMap<EntryKey<K, N>, S>;

/// The key of a table entry: (key, namespace).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct EntryKey<K, N>(pub K, pub N);

/// A borrowed (key, namespace) for lookups without cloning.
pub struct EntryRef<'a, K, N>(pub &'a K, pub &'a N);

impl<K: Hash, N: Hash> Hash for EntryRef<'_, K, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Same sequence of hashes as the derived `Hash` of `EntryKey`.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<K: Eq, N: Eq> Equivalent<EntryKey<K, N>> for EntryRef<'_, K, N> {
    fn equivalent(&self, key: &EntryKey<K, N>) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// Encodes one stored value into snapshot records.
pub trait ShapeCodec<S>: Send + Sync + 'static {
    /// Writes the records of one (key, namespace) entry, whose encoded key
    /// and namespace are in `scratch.key` and `scratch.namespace`.
    fn write(
        &self,
        name: &str,
        state: u32,
        value: &S,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()>;

    /// Whether the records [`ShapeCodec::write`] emits replace the whole
    /// (key, namespace) entry in a delta file. Map records add one user entry
    /// each, so a changed map is written as a delete followed by its entries.
    fn replaces_entry(&self) -> bool {
        true
    }

    /// What TTL cleanup does with a stored value, given which timestamps
    /// expired, and how many entries (list elements, map entries) that
    /// removes. States without TTL keep everything (the default).
    fn purge(&self, value: &S, expired: &dyn Fn(i64) -> bool) -> (Purge<S>, u64) {
        let _ = (value, expired);
        (Purge::Keep, 0)
    }
}

/// What TTL cleanup does with one (key, namespace) entry.
pub enum Purge<S> {
    /// Nothing expired.
    Keep,
    /// Everything expired: the entry goes.
    Remove,
    /// Some list elements or map entries expired: the rest stays.
    Replace(S),
}

/// The TTL timestamp of a stored value (cell value, list element, map user
/// value), for states with TTL.
pub type TimestampFn<V> = Option<fn(&V) -> i64>;

/// Reusable encoding buffers of a snapshot writer.
#[derive(Default)]
pub struct Scratch {
    /// Encoded key.
    pub key: Vec<u8>,
    /// Encoded namespace.
    pub namespace: Vec<u8>,
    /// Encoded value or list body.
    pub value: Vec<u8>,
    /// Encoded element or user key.
    pub item: Vec<u8>,
}

pub(crate) use state_api::error::codec_error;

pub(crate) fn encode_into<T: 'static>(
    codec: &dyn Codec<T>,
    v: &T,
    out: &mut Vec<u8>,
    state: &str,
    role: &'static str,
) -> Result<()> {
    out.clear();
    codec
        .encode(v, out)
        .map_err(|e| codec_error(state, role, e))
}

/// Cells: one value per entry.
pub struct CellCodec<V>(pub SharedCodec<V>, pub TimestampFn<V>);

impl<V: StateValue> ShapeCodec<V> for CellCodec<V> {
    fn write(
        &self,
        name: &str,
        state: u32,
        value: &V,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        encode_into(&*self.0, value, &mut scratch.value, name, "value")?;
        writer.write_cell(state, &scratch.key, &scratch.namespace, &scratch.value)
    }

    fn purge(&self, value: &V, expired: &dyn Fn(i64) -> bool) -> (Purge<V>, u64) {
        match self.1 {
            Some(ts) if expired(ts(value)) => (Purge::Remove, 1),
            _ => (Purge::Keep, 0),
        }
    }
}

/// Lists: shared vectors, copied on write only while a snapshot holds them.
pub type ListValue<T> = Arc<Vec<T>>;

/// Lists: all elements in one record.
pub struct ListCodec<T>(pub SharedCodec<T>, pub TimestampFn<T>);

impl<T: StateValue> ShapeCodec<ListValue<T>> for ListCodec<T> {
    fn write(
        &self,
        name: &str,
        state: u32,
        value: &ListValue<T>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        scratch.value.clear();
        for e in value.iter() {
            encode_into(&*self.0, e, &mut scratch.item, name, "element")?;
            put_bytes(&mut scratch.value, &scratch.item);
        }
        writer.write_list(
            state,
            &scratch.key,
            &scratch.namespace,
            value.len(),
            &scratch.value,
        )
    }

    fn purge(
        &self,
        value: &ListValue<T>,
        expired: &dyn Fn(i64) -> bool,
    ) -> (Purge<ListValue<T>>, u64) {
        let Some(ts) = self.1 else {
            return (Purge::Keep, 0);
        };
        let n = value.iter().filter(|e| expired(ts(e))).count();
        let purge = if n == 0 {
            Purge::Keep
        } else if n == value.len() {
            Purge::Remove
        } else {
            Purge::Replace(Arc::new(
                value.iter().filter(|e| !expired(ts(e))).cloned().collect(),
            ))
        };
        (purge, n as u64)
    }
}

/// Maps: a persistent map per entry, so a snapshot shares it too.
pub type MapValue<UK, UV> =
    imbl::GenericHashMap<UK, UV, TableHasher, imbl::shared_ptr::DefaultSharedPtr>;

/// Maps: one record per user entry.
pub struct MapCodec<UK, UV>(
    pub SharedCodec<UK>,
    pub SharedCodec<UV>,
    pub TimestampFn<UV>,
);

impl<UK: StateKey, UV: StateValue> ShapeCodec<MapValue<UK, UV>> for MapCodec<UK, UV> {
    fn replaces_entry(&self) -> bool {
        false
    }

    fn purge(
        &self,
        value: &MapValue<UK, UV>,
        expired: &dyn Fn(i64) -> bool,
    ) -> (Purge<MapValue<UK, UV>>, u64) {
        let Some(ts) = self.2 else {
            return (Purge::Keep, 0);
        };
        let gone: Vec<&UK> = value
            .iter()
            .filter(|(_, v)| expired(ts(v)))
            .map(|(k, _)| k)
            .collect();
        let n = gone.len() as u64;
        let purge = if gone.is_empty() {
            Purge::Keep
        } else if gone.len() == value.len() {
            Purge::Remove
        } else {
            let mut kept = value.clone();
            for k in gone {
                kept.remove(k);
            }
            Purge::Replace(kept)
        };
        (purge, n)
    }

    fn write(
        &self,
        name: &str,
        state: u32,
        value: &MapValue<UK, UV>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        for (uk, uv) in value.iter() {
            encode_into(&*self.0, uk, &mut scratch.item, name, "user key")?;
            encode_into(&*self.1, uv, &mut scratch.value, name, "user value")?;
            writer.write_map_entry(
                state,
                &scratch.key,
                &scratch.namespace,
                &scratch.item,
                &scratch.value,
            )?;
        }
        Ok(())
    }
}

/// The state of one registered state: a map per key group of the backend's range.
pub struct StateTable<K, N, S, C> {
    pub(crate) name: Arc<str>,
    pub(crate) groups: Vec<GroupMap<K, N, S>>,
    pub(crate) namespace_codec: SharedCodec<N>,
    pub(crate) codec: Arc<C>,
    /// Entries written since the last snapshot, per key group; `None` unless
    /// incremental snapshots are on.
    pub(crate) dirty: Option<DirtySets<K, N>>,
    /// The state's TTL, if it has one.
    pub(crate) ttl: Option<TtlMeta>,
    /// Where incremental TTL cleanup resumes: key-group index, shard, offset
    /// in the shard.
    cursor: (usize, usize, usize),
}

/// The (key, namespace) entries changed in a period, per key group.
pub type DirtySets<K, N> = Vec<HashSet<EntryKey<K, N>, TableHasher>>;

/// Starts recording changes in `dirty` (for `key_groups` key groups).
pub(crate) fn track<K, N>(dirty: &mut Option<DirtySets<K, N>>, key_groups: usize) {
    if dirty.is_none() {
        *dirty = Some(empty_dirty(key_groups));
    }
}

/// Hands over the changes recorded in `dirty` and starts a new period;
/// `None` when changes are not recorded.
pub(crate) fn take_period<K: StateKey, N: Namespace>(
    dirty: &mut Option<DirtySets<K, N>>,
    key_groups: usize,
) -> Option<Arc<dyn Any + Send + Sync>> {
    let taken = std::mem::replace(dirty.as_mut()?, empty_dirty(key_groups));
    Some(Arc::new(taken))
}

fn empty_dirty<K, N>(key_groups: usize) -> DirtySets<K, N> {
    (0..key_groups)
        .map(|_| HashSet::with_hasher(TableHasher::default()))
        .collect()
}

impl<K: StateKey, N: Namespace, S: StateValue, C: ShapeCodec<S>> StateTable<K, N, S, C> {
    /// An empty table for `key_groups` key groups.
    pub fn new(name: &str, key_groups: usize, namespace_codec: SharedCodec<N>, codec: C) -> Self {
        let hasher = TableHasher::default();
        StateTable {
            name: Arc::from(name),
            groups: (0..key_groups)
                .map(|_| GroupMap::with_hasher(hasher.clone()))
                .collect(),
            namespace_codec,
            codec: Arc::new(codec),
            dirty: None,
            ttl: None,
            cursor: (0, 0, 0),
        }
    }

    /// The same table for a state with TTL.
    pub fn with_ttl(mut self, ttl: Option<TtlMeta>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Applies TTL cleanup decisions to the key group at `index`; returns
    /// the entries (list elements, map entries) removed and the (key,
    /// namespace) entries that went entirely.
    fn apply(
        &mut self,
        index: usize,
        decisions: Vec<(EntryKey<K, N>, Purge<S>, u64)>,
    ) -> (u64, usize) {
        let mut removed = 0;
        let mut gone = 0;
        for (entry, purge, n) in decisions {
            self.touch(index, &entry.0, &entry.1);
            removed += n;
            match purge {
                Purge::Keep => {}
                Purge::Remove => {
                    self.groups[index].remove(&entry);
                    gone += 1;
                }
                Purge::Replace(value) => {
                    self.groups[index].insert(entry, value);
                }
            }
        }
        (removed, gone)
    }

    /// The cleanup decisions of some entries.
    fn decide<'a>(
        codec: &C,
        entries: impl Iterator<Item = (&'a EntryKey<K, N>, &'a S)>,
        expired: &dyn Fn(i64) -> bool,
        checked: &mut usize,
    ) -> Vec<(EntryKey<K, N>, Purge<S>, u64)>
    where
        K: 'a,
        N: 'a,
        S: 'a,
    {
        let mut decisions = Vec::new();
        for (entry, value) in entries {
            *checked += 1;
            let (purge, n) = codec.purge(value, expired);
            if !matches!(purge, Purge::Keep) {
                decisions.push((entry.clone(), purge, n));
            }
        }
        decisions
    }

    /// Records that (key, namespace) of the key group at `index` changed.
    #[inline]
    pub fn touch(&mut self, index: usize, key: &K, namespace: &N) {
        if let Some(dirty) = &mut self.dirty {
            dirty[index].insert(EntryKey(key.clone(), namespace.clone()));
        }
    }
}

/// A point-in-time copy of a table, sharing its entries.
pub struct TableSnapshot<K, N, S, C> {
    name: Arc<str>,
    groups: Vec<GroupMap<K, N, S>>,
    namespace_codec: SharedCodec<N>,
    codec: Arc<C>,
}

/// What the backend needs of a table without knowing its types. Typed
/// access upcasts it to `dyn Any` and downcasts that.
pub trait ErasedTable<K>: Any + Send {
    /// Number of (key, namespace) entries.
    fn entries(&self) -> usize;
    /// Shares the current entries with a snapshot: O(key groups).
    fn snapshot(&self) -> Box<dyn ErasedTableSnapshot<K>>;
    /// Keys with an entry in `namespace` (a `&N` as `&dyn Any`).
    fn keys(&self, namespace: &dyn Any) -> Option<Vec<K>>;
    /// Every (key, namespace) pair, boxed as `Vec<(K, N)>`.
    fn keys_and_namespaces(&self) -> Box<dyn Any>;
    /// Starts recording changed entries (for incremental snapshots).
    fn track_changes(&mut self);
    /// Hands over the changes recorded since the last call (a
    /// `DirtySets<K, N>`), and starts a new period.
    fn take_changes(&mut self) -> Option<Arc<dyn Any + Send + Sync>>;
    /// Removes expired entries of a state with TTL at `now`: all of them
    /// (`budget` `None`), or those among the next `budget` entries from where
    /// the last call stopped. Returns how many entries, list elements and map
    /// entries were removed (0 for a state without TTL).
    fn cleanup_expired(&mut self, budget: Option<usize>, now: &TtlInstant) -> u64;
}

/// The asynchronous part's view of a table snapshot.
pub trait ErasedTableSnapshot<K>: Send {
    /// Writes the records of the key group at `index` of the range under state index `state`.
    fn write_key_group(
        &self,
        index: usize,
        state: u32,
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()>;

    /// Writes, for the key group at `index`, the current value (or a delete)
    /// of every entry changed in any of `changes` (each a `DirtySets<K, N>`
    /// from [`ErasedTable::take_changes`] of this table).
    fn write_changes(
        &self,
        index: usize,
        state: u32,
        changes: &[Arc<dyn Any + Send + Sync>],
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()>;
}

impl<K: StateKey, N: Namespace, S: StateValue, C: ShapeCodec<S>> ErasedTable<K>
    for StateTable<K, N, S, C>
{
    fn entries(&self) -> usize {
        self.groups.iter().map(|g| g.len()).sum()
    }

    fn snapshot(&self) -> Box<dyn ErasedTableSnapshot<K>> {
        Box::new(TableSnapshot {
            name: self.name.clone(),
            groups: self.groups.clone(),
            namespace_codec: self.namespace_codec.clone(),
            codec: self.codec.clone(),
        })
    }

    fn keys(&self, namespace: &dyn Any) -> Option<Vec<K>> {
        let ns = namespace.downcast_ref::<N>()?;
        Some(
            self.groups
                .iter()
                .flat_map(|g| g.keys())
                .filter(|e| e.1 == *ns)
                .map(|e| e.0.clone())
                .collect(),
        )
    }

    fn keys_and_namespaces(&self) -> Box<dyn Any> {
        let all: Vec<(K, N)> = self
            .groups
            .iter()
            .flat_map(|g| g.keys())
            .map(|e| (e.0.clone(), e.1.clone()))
            .collect();
        Box::new(all)
    }

    fn track_changes(&mut self) {
        track(&mut self.dirty, self.groups.len());
    }

    fn take_changes(&mut self) -> Option<Arc<dyn Any + Send + Sync>> {
        take_period(&mut self.dirty, self.groups.len())
    }

    fn cleanup_expired(&mut self, budget: Option<usize>, now: &TtlInstant) -> u64 {
        let Some(ttl) = self.ttl else {
            return 0;
        };
        let now = now.get(ttl.time_domain);
        let expired = move |ts: i64| ttl.is_expired(ts, now);
        let codec = self.codec.clone();
        let mut removed = 0;
        let Some(budget) = budget else {
            for index in 0..self.groups.len() {
                let decisions = Self::decide(&codec, self.groups[index].iter(), &expired, &mut 0);
                removed += self.apply(index, decisions).0;
            }
            return removed;
        };
        // Walk on from the cursor: at most `budget` entries, and a bounded
        // number of moves over empty key groups and shards.
        let mut left = budget;
        let mut moves = budget.saturating_mul(4).max(16);
        while left > 0 && moves > 0 {
            moves -= 1;
            let (g, shard, offset) = self.cursor;
            let Some(group) = self.groups.get(g) else {
                self.cursor = (0, 0, 0);
                continue;
            };
            if shard >= group.shard_count() {
                self.cursor = (g + 1, 0, 0);
                continue;
            }
            let mut checked = 0;
            let decisions = Self::decide(
                &codec,
                group.shard_iter(shard).skip(offset).take(left),
                &expired,
                &mut checked,
            );
            let (n, gone) = self.apply(g, decisions);
            removed += n;
            self.cursor = if checked < left {
                (g, shard + 1, 0)
            } else {
                (g, shard, offset + checked - gone)
            };
            left -= checked;
        }
        removed
    }
}

impl<K: StateKey, N: Namespace, S: StateValue, C: ShapeCodec<S>> ErasedTableSnapshot<K>
    for TableSnapshot<K, N, S, C>
{
    fn write_key_group(
        &self,
        index: usize,
        state: u32,
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let Some(group) = self.groups.get(index) else {
            return Ok(());
        };
        // Every value of a zero-sized namespace type (the void namespace) is
        // the same value, so its encoding is computed once; codecs encode
        // equal values to equal bytes.
        let constant_namespace = std::mem::size_of::<N>() == 0;
        let mut namespace_done = false;
        for (entry, value) in group.iter() {
            encode_into(key_codec, &entry.0, &mut scratch.key, &self.name, "key")?;
            if !(constant_namespace && namespace_done) {
                encode_into(
                    &*self.namespace_codec,
                    &entry.1,
                    &mut scratch.namespace,
                    &self.name,
                    "namespace",
                )?;
                namespace_done = true;
            }
            self.codec
                .write(&self.name, state, value, writer, scratch)?;
        }
        Ok(())
    }

    fn write_changes(
        &self,
        index: usize,
        state: u32,
        changes: &[Arc<dyn Any + Send + Sync>],
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let Some(group) = self.groups.get(index) else {
            return Ok(());
        };
        let mut seen: HashSet<&EntryKey<K, N>, TableHasher> =
            HashSet::with_hasher(TableHasher::default());
        for period in changes {
            let Some(sets) = period.downcast_ref::<DirtySets<K, N>>() else {
                continue;
            };
            for entry in sets.get(index).into_iter().flatten() {
                if !seen.insert(entry) {
                    continue;
                }
                encode_into(key_codec, &entry.0, &mut scratch.key, &self.name, "key")?;
                encode_into(
                    &*self.namespace_codec,
                    &entry.1,
                    &mut scratch.namespace,
                    &self.name,
                    "namespace",
                )?;
                match group.get(entry) {
                    Some(value) => {
                        if !self.codec.replaces_entry() {
                            writer.write_delete(state, &scratch.key, &scratch.namespace)?;
                        }
                        self.codec
                            .write(&self.name, state, value, writer, scratch)?;
                    }
                    None => writer.write_delete(state, &scratch.key, &scratch.namespace)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::codec::postcard;

    type Table = StateTable<u64, (), i64, CellCodec<i64>>;

    fn table() -> Table {
        let mut t = Table::new("t", 4, postcard::<()>(), CellCodec(postcard::<i64>(), None));
        for k in 0..1_000u64 {
            t.groups[(k % 4) as usize].insert(EntryKey(k, ()), k as i64);
        }
        t
    }

    #[test]
    fn writes_during_a_snapshot_copy_on_write() {
        let mut t = table();
        let snapshot: Vec<_> = t.groups.clone();
        *t.groups[1].get_mut(&EntryRef(&1, &())).expect("present") = -1;
        t.groups[2].insert(EntryKey(5_000, ()), 5);
        assert!(
            !t.groups[1].ptr_eq(&snapshot[1]),
            "the written group diverged"
        );
        assert!(
            t.groups[0].ptr_eq(&snapshot[0]),
            "untouched groups stay shared"
        );
        assert_eq!(
            snapshot[1].get(&EntryRef(&1, &())),
            Some(&1),
            "the snapshot keeps the old value"
        );
        assert_eq!(
            snapshot[2].get(&EntryRef(&5_000, &())),
            None,
            "the snapshot misses later inserts"
        );
        assert_eq!(t.groups[1].get(&EntryRef(&1, &())), Some(&-1));
    }
}
