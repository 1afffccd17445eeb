//! The typed states' operations on states with a time-to-live, written once
//! over the storage shapes every backend implements (see [`super::ttl`] for
//! the semantics). The stored values are [`TtlValue`]s: writes stamp them
//! with the current time; reads hide (and remove) expired entries and, with
//! [`TtlUpdateType::OnReadAndWrite`], refresh the timestamps of live ones;
//! every access ends with the backend's incremental cleanup step when the
//! state's TTL asks for one.

use super::handle::{CellHandle, ListHandle, MapHandle, StateHandle};
use super::ttl::{StateClock, StateTtlConfig, TtlMeta, TtlUpdateType, TtlValue, TtlVisibility};
use super::{Namespace, StateKey, StateValue};
use crate::backend::keyed::KeyedStateBackend;
use crate::error::Result;
use crate::state::handle::HandleCore;

/// What a typed state with TTL needs at each access.
#[derive(Clone)]
pub(crate) struct TtlRuntime {
    meta: TtlMeta,
    clock: StateClock,
    /// Entries the incremental cleanup checks per access (0: none).
    step: usize,
}

impl TtlRuntime {
    pub(crate) fn new(config: &StateTtlConfig, clock: StateClock) -> Self {
        TtlRuntime {
            meta: config.meta(),
            clock,
            step: config
                .cleanup()
                .incremental
                .map_or(0, |c| c.entries_per_access),
        }
    }

    #[inline]
    fn now(&self) -> i64 {
        self.clock.now(self.meta.time_domain)
    }

    #[inline]
    fn expired(&self, timestamp: i64, now: i64) -> bool {
        self.meta.is_expired(timestamp, now)
    }

    #[inline]
    fn returns_expired(&self) -> bool {
        self.meta.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp
    }

    #[inline]
    fn refreshes_on_read(&self) -> bool {
        self.meta.update_type == TtlUpdateType::OnReadAndWrite
    }

    fn after_access<B: KeyedStateBackend>(&self, b: &mut B, core: &HandleCore) -> Result<()> {
        if self.step > 0 {
            b.cleanup_expired_step(core, self.step)?;
        }
        Ok(())
    }
}

fn stamp<V>(value: V, timestamp: i64) -> TtlValue<V> {
    TtlValue { value, timestamp }
}

/// What a read found.
enum Seen {
    Absent,
    Expired,
    Live,
}

/// A cell-shaped state with TTL.
pub(crate) struct TtlCell<N, V> {
    pub(crate) cell: CellHandle<N, TtlValue<V>>,
    pub(crate) rt: TtlRuntime,
}

impl<N: Namespace, V: StateValue> TtlCell<N, V> {
    /// Reads the value: an expired one is removed (and shown to `read` only
    /// under [`TtlVisibility::ReturnExpiredIfNotCleanedUp`]); a live one is
    /// refreshed when reads update timestamps.
    pub(crate) fn read<B: KeyedStateBackend, R>(
        &self,
        b: &mut B,
        ns: &N,
        read: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        let rt = &self.rt;
        let now = rt.now();
        let (r, seen) = b.cell_get(&self.cell, ns, |v| match v {
            None => (read(None), Seen::Absent),
            Some(tv) if rt.expired(tv.timestamp, now) => {
                let shown = rt.returns_expired().then_some(&tv.value);
                (read(shown), Seen::Expired)
            }
            Some(tv) => (read(Some(&tv.value)), Seen::Live),
        })?;
        match seen {
            Seen::Expired => drop(b.cell_take(&self.cell, ns)?),
            Seen::Live if rt.refreshes_on_read() => b.cell_upsert(&self.cell, ns, |slot| {
                if let Some(tv) = slot {
                    tv.timestamp = now;
                }
                None
            })?,
            _ => {}
        }
        rt.after_access(b, self.cell.core())?;
        Ok(r)
    }

    pub(crate) fn put<B: KeyedStateBackend>(&self, b: &mut B, ns: &N, value: V) -> Result<()> {
        b.cell_put(&self.cell, ns, stamp(value, self.rt.now()))?;
        self.rt.after_access(b, self.cell.core())
    }

    /// Removes the value and returns it unless it had expired (then only
    /// under [`TtlVisibility::ReturnExpiredIfNotCleanedUp`]).
    pub(crate) fn take<B: KeyedStateBackend>(&self, b: &mut B, ns: &N) -> Result<Option<V>> {
        let now = self.rt.now();
        let taken = b.cell_take(&self.cell, ns)?;
        self.rt.after_access(b, self.cell.core())?;
        Ok(taken.and_then(|tv| {
            (!self.rt.expired(tv.timestamp, now) || self.rt.returns_expired()).then_some(tv.value)
        }))
    }

    pub(crate) fn modify<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<()> {
        let rt = &self.rt;
        let now = rt.now();
        b.cell_modify(&self.cell, ns, |current| {
            let current = current.and_then(|tv| {
                (!rt.expired(tv.timestamp, now) || rt.returns_expired()).then_some(tv.value)
            });
            f(current).map(|v| stamp(v, now))
        })?;
        rt.after_access(b, self.cell.core())
    }

    /// Updates in place (reducing and aggregating state); an expired value
    /// is replaced as if absent, as Flink's TTL reduce and aggregate
    /// functions do.
    pub(crate) fn upsert<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        update: impl FnOnce(Option<&mut V>) -> Option<V>,
    ) -> Result<()> {
        let rt = &self.rt;
        let now = rt.now();
        b.cell_upsert(&self.cell, ns, |slot| match slot {
            Some(tv) if !rt.expired(tv.timestamp, now) => {
                update(Some(&mut tv.value));
                tv.timestamp = now;
                None
            }
            Some(tv) => {
                if let Some(v) = update(None) {
                    *tv = stamp(v, now);
                }
                None
            }
            None => update(None).map(|v| stamp(v, now)),
        })?;
        rt.after_access(b, self.cell.core())
    }
}

/// A list state with TTL per element.
pub(crate) struct TtlList<N, T> {
    pub(crate) list: ListHandle<N, TtlValue<T>>,
    pub(crate) rt: TtlRuntime,
}

impl<N: Namespace, T: StateValue> TtlList<N, T> {
    /// Reads the elements `read` may see; expired elements are removed, and
    /// live ones refreshed when reads update timestamps.
    pub(crate) fn read<B: KeyedStateBackend, R>(
        &self,
        b: &mut B,
        ns: &N,
        read: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        let rt = &self.rt;
        let now = rt.now();
        let (r, expired, live) = b.list_get(&self.list, ns, |l| {
            let expired = l.iter().filter(|e| rt.expired(e.timestamp, now)).count();
            let shown: Vec<T> = l
                .iter()
                .filter(|e| rt.returns_expired() || !rt.expired(e.timestamp, now))
                .map(|e| e.value.clone())
                .collect();
            (read(&shown), expired, l.len() - expired)
        })?;
        if expired > 0 || (live > 0 && rt.refreshes_on_read()) {
            let refresh = rt.refreshes_on_read();
            let kept = b.list_get(&self.list, ns, |l| {
                l.iter()
                    .filter(|e| !rt.expired(e.timestamp, now))
                    .map(|e| stamp(e.value.clone(), if refresh { now } else { e.timestamp }))
                    .collect::<Vec<_>>()
            })?;
            b.list_replace(&self.list, ns, kept)?;
        }
        rt.after_access(b, self.list.core())?;
        Ok(r)
    }

    pub(crate) fn push<B: KeyedStateBackend>(&self, b: &mut B, ns: &N, element: T) -> Result<()> {
        b.list_push(&self.list, ns, stamp(element, self.rt.now()))?;
        self.rt.after_access(b, self.list.core())
    }

    pub(crate) fn append<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let now = self.rt.now();
        let stamped = elements.into_iter().map(|e| stamp(e, now)).collect();
        b.list_append(&self.list, ns, stamped)?;
        self.rt.after_access(b, self.list.core())
    }

    pub(crate) fn replace<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let now = self.rt.now();
        let stamped = elements.into_iter().map(|e| stamp(e, now)).collect();
        b.list_replace(&self.list, ns, stamped)?;
        self.rt.after_access(b, self.list.core())
    }

    pub(crate) fn clear<B: KeyedStateBackend>(&self, b: &mut B, ns: &N) -> Result<()> {
        b.list_take(&self.list, ns)?;
        self.rt.after_access(b, self.list.core())
    }

    /// Moves the live elements of `sources` to `target`, keeping their
    /// timestamps.
    pub(crate) fn merge<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        let now = self.rt.now();
        for source in sources.iter().filter(|s| *s != target) {
            let mut moved = b.list_take(&self.list, source)?;
            moved.retain(|e| !self.rt.expired(e.timestamp, now));
            b.list_append(&self.list, target, moved)?;
        }
        self.rt.after_access(b, self.list.core())
    }
}

/// A map state with TTL per user entry.
pub(crate) struct TtlMap<N, UK, UV> {
    pub(crate) map: MapHandle<N, UK, TtlValue<UV>>,
    pub(crate) rt: TtlRuntime,
}

impl<N: Namespace, UK: StateKey, UV: StateValue> TtlMap<N, UK, UV> {
    pub(crate) fn get<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        let rt = &self.rt;
        let now = rt.now();
        let found = b.map_get(&self.map, ns, user_key, |v| v.cloned())?;
        let shown = match found {
            None => None,
            Some(tv) if rt.expired(tv.timestamp, now) => {
                b.map_remove(&self.map, ns, user_key)?;
                rt.returns_expired().then_some(tv.value)
            }
            Some(tv) => {
                if rt.refreshes_on_read() {
                    b.map_put(
                        &self.map,
                        ns,
                        user_key.clone(),
                        stamp(tv.value.clone(), now),
                    )?;
                }
                Some(tv.value)
            }
        };
        rt.after_access(b, self.map.core())?;
        Ok(shown)
    }

    pub(crate) fn put<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        user_key: UK,
        user_value: UV,
    ) -> Result<()> {
        b.map_put(&self.map, ns, user_key, stamp(user_value, self.rt.now()))?;
        self.rt.after_access(b, self.map.core())
    }

    pub(crate) fn remove<B: KeyedStateBackend>(
        &self,
        b: &mut B,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        let now = self.rt.now();
        let removed = b.map_remove(&self.map, ns, user_key)?;
        self.rt.after_access(b, self.map.core())?;
        Ok(removed.and_then(|tv| {
            (!self.rt.expired(tv.timestamp, now) || self.rt.returns_expired()).then_some(tv.value)
        }))
    }

    /// The entries a read may see; expired ones are removed, live ones
    /// refreshed when reads update timestamps.
    pub(crate) fn entries<B: KeyedStateBackend>(&self, b: &mut B, ns: &N) -> Result<Vec<(UK, UV)>> {
        let rt = &self.rt;
        let now = rt.now();
        let all = b.map_entries(&self.map, ns)?;
        let mut shown = Vec::with_capacity(all.len());
        for (k, tv) in all {
            if rt.expired(tv.timestamp, now) {
                b.map_remove(&self.map, ns, &k)?;
                if rt.returns_expired() {
                    shown.push((k, tv.value));
                }
            } else {
                if rt.refreshes_on_read() {
                    b.map_put(&self.map, ns, k.clone(), stamp(tv.value.clone(), now))?;
                }
                shown.push((k, tv.value));
            }
        }
        rt.after_access(b, self.map.core())?;
        Ok(shown)
    }

    /// Whether no live entry is left (expired ones are removed).
    pub(crate) fn is_empty<B: KeyedStateBackend>(&self, b: &mut B, ns: &N) -> Result<bool> {
        if b.map_is_empty(&self.map, ns)? {
            return Ok(true);
        }
        let now = self.rt.now();
        let all = b.map_entries(&self.map, ns)?;
        let mut live = false;
        for (k, tv) in all {
            if self.rt.expired(tv.timestamp, now) {
                b.map_remove(&self.map, ns, &k)?;
            } else {
                live = true;
            }
        }
        self.rt.after_access(b, self.map.core())?;
        Ok(!live)
    }

    pub(crate) fn clear<B: KeyedStateBackend>(&self, b: &mut B, ns: &N) -> Result<()> {
        b.map_clear(&self.map, ns)?;
        self.rt.after_access(b, self.map.core())
    }
}
