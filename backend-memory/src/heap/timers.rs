//! Timers of the heap backend: a [`KeyGroupedTimerQueue`] per timer state,
//! as a table of the store like any state's, so registration, restore
//! (rescaled by key group), incremental change tracking and snapshots treat
//! it the same way.
//!
//! A snapshot's synchronous part copies the timers, key group by key group
//! (as Flink's heap timers do: a timer queue is not copy-on-write); the
//! asynchronous part writes one map record per timer (see
//! [`state_api::timers`]). A delta file rewrites each (key, namespace) whose
//! timers changed: a delete, then its timers.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use state_api::codec::{Codec, SharedCodec};
use state_api::format::keyed::{KeyedSnapshotWriter, RecordBody};
use state_api::state::handle::HandleCore;
use state_api::state::ttl::TtlInstant;
use state_api::state::{Namespace, StateKey};
use state_api::timers::{decode_timestamp, encode_timestamp, Timer, TimerSpec};
use state_api::{Error, KeyGroupRange, Result};

use super::store::HeapStore;
use super::table::{
    encode_into, take_period, track, DirtySets, EntryKey, ErasedTable, ErasedTableSnapshot, Scratch,
};
use super::timer_queue::KeyGroupedTimerQueue;

/// The timers of one timer state.
pub(crate) struct TimerTable<K, N> {
    name: Arc<str>,
    range: KeyGroupRange,
    pub(crate) queue: KeyGroupedTimerQueue<K, N>,
    namespace_codec: SharedCodec<N>,
    dirty: Option<DirtySets<K, N>>,
}

impl<K: StateKey, N: Namespace> TimerTable<K, N> {
    fn new(name: &str, range: KeyGroupRange, namespace_codec: SharedCodec<N>) -> Self {
        TimerTable {
            name: Arc::from(name),
            range,
            queue: KeyGroupedTimerQueue::new(range),
            namespace_codec,
            dirty: None,
        }
    }

    /// Records that the timers of (key, namespace) in key group `key_group`
    /// changed.
    pub(crate) fn touch(&mut self, key_group: u32, key: &K, namespace: &N) {
        if let Some(dirty) = &mut self.dirty {
            if let Some(set) = dirty.get_mut((key_group - self.range.start()) as usize) {
                set.insert(EntryKey(key.clone(), namespace.clone()));
            }
        }
    }

    fn distinct(&self) -> HashSet<(&K, &N)> {
        self.range
            .iter()
            .flat_map(|kg| self.queue.key_group_timers(kg))
            .map(|t| (&t.key, &t.namespace))
            .collect()
    }
}

/// The timers of a snapshot, copied per key-group index.
struct TimerTableSnapshot<K, N> {
    name: Arc<str>,
    groups: Vec<Vec<Timer<K, N>>>,
    namespace_codec: SharedCodec<N>,
}

impl<K: StateKey, N: Namespace> ErasedTable<K> for TimerTable<K, N> {
    fn entries(&self) -> usize {
        self.queue.len()
    }

    fn snapshot(&self) -> Box<dyn ErasedTableSnapshot<K>> {
        Box::new(TimerTableSnapshot {
            name: self.name.clone(),
            groups: self
                .range
                .iter()
                .map(|kg| self.queue.key_group_timers(kg).cloned().collect())
                .collect(),
            namespace_codec: self.namespace_codec.clone(),
        })
    }

    fn keys(&self, namespace: &dyn Any) -> Option<Vec<K>> {
        let ns = namespace.downcast_ref::<N>()?;
        let keys: HashSet<&K> = self
            .distinct()
            .into_iter()
            .filter(|(_, n)| *n == ns)
            .map(|(k, _)| k)
            .collect();
        Some(keys.into_iter().cloned().collect())
    }

    fn keys_and_namespaces(&self) -> Box<dyn Any> {
        let all: Vec<(K, N)> = self
            .distinct()
            .into_iter()
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        Box::new(all)
    }

    fn track_changes(&mut self) {
        track(&mut self.dirty, self.range.len());
    }

    fn take_changes(&mut self) -> Option<Arc<dyn Any + Send + Sync>> {
        take_period(&mut self.dirty, self.range.len())
    }

    fn cleanup_expired(&mut self, _budget: Option<usize>, _now: &TtlInstant) -> u64 {
        0
    }
}

impl<K: StateKey, N: Namespace> TimerTableSnapshot<K, N> {
    fn write_timer(
        &self,
        timer: &Timer<K, N>,
        state: u32,
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        encode_into(key_codec, &timer.key, &mut scratch.key, &self.name, "key")?;
        encode_into(
            &*self.namespace_codec,
            &timer.namespace,
            &mut scratch.namespace,
            &self.name,
            "namespace",
        )?;
        writer.write_map_entry(
            state,
            &scratch.key,
            &scratch.namespace,
            &encode_timestamp(timer.timestamp),
            &[],
        )
    }
}

impl<K: StateKey, N: Namespace> ErasedTableSnapshot<K> for TimerTableSnapshot<K, N> {
    fn write_key_group(
        &self,
        index: usize,
        state: u32,
        key_codec: &dyn Codec<K>,
        writer: &mut KeyedSnapshotWriter,
        scratch: &mut Scratch,
    ) -> Result<()> {
        for timer in self.groups.get(index).into_iter().flatten() {
            self.write_timer(timer, state, key_codec, writer, scratch)?;
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
        let timers = self.groups.get(index).map_or(&[][..], |g| &g[..]);
        let mut by_entry: HashMap<(&K, &N), Vec<&Timer<K, N>>> = HashMap::new();
        let mut seen: HashSet<&EntryKey<K, N>> = HashSet::new();
        for period in changes {
            let Some(sets) = period.downcast_ref::<DirtySets<K, N>>() else {
                continue;
            };
            for entry in sets.get(index).into_iter().flatten() {
                if !seen.insert(entry) {
                    continue;
                }
                if by_entry.is_empty() {
                    for t in timers {
                        by_entry.entry((&t.key, &t.namespace)).or_default().push(t);
                    }
                }
                encode_into(key_codec, &entry.0, &mut scratch.key, &self.name, "key")?;
                encode_into(
                    &*self.namespace_codec,
                    &entry.1,
                    &mut scratch.namespace,
                    &self.name,
                    "namespace",
                )?;
                writer.write_delete(state, &scratch.key, &scratch.namespace)?;
                for timer in by_entry.get(&(&entry.0, &entry.1)).into_iter().flatten() {
                    self.write_timer(timer, state, key_codec, writer, scratch)?;
                }
            }
        }
        Ok(())
    }
}

impl<K: StateKey> HeapStore<K> {
    /// Registers a timer state of backend `backend`.
    pub(crate) fn register_timers<N: Namespace>(
        &mut self,
        backend: u64,
        spec: TimerSpec<N>,
    ) -> Result<HandleCore> {
        let name = spec.meta.name.clone();
        let range = self.range;
        let compat = [state_api::codec::Compatibility::AsIs; 2];
        self.register(
            backend,
            spec.meta,
            None,
            &compat,
            &spec.namespace_codec,
            |_| TimerTable::<K, N>::new(&name, range, spec.namespace_codec.clone()),
            |table, index, entry, body, written| {
                let key_group = range.start() + index as u32;
                match body {
                    RecordBody::MapEntry { key: ts, .. } => {
                        let timestamp = decode_timestamp(ts).ok_or_else(|| Error::Corrupted {
                            file: format!("timers '{}'", written.name),
                            offset: 0,
                            reason: format!("a timer timestamp of {} bytes", ts.len()),
                        })?;
                        table.queue.add(
                            key_group,
                            Timer {
                                timestamp,
                                key: entry.0,
                                namespace: entry.1,
                            },
                        )?;
                    }
                    RecordBody::Delete => {
                        let gone: Vec<Timer<K, N>> = table
                            .queue
                            .key_group_timers(key_group)
                            .filter(|t| t.key == entry.0 && t.namespace == entry.1)
                            .cloned()
                            .collect();
                        for t in &gone {
                            table.queue.remove(key_group, t)?;
                        }
                    }
                    _ => {}
                }
                Ok(())
            },
        )
    }
}
