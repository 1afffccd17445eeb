//! The typed state API engine code uses: Value, List, Reducing, Aggregating
//! and Map state, built once on the storage shapes every backend implements.
//!
//! ```
//! # use state_api::state::access::*;
//! # use state_api::state::descriptor::*;
//! # fn demo<B: state_api::KeyedStateBackend<Key = String>>(backend: &mut B) -> state_api::Result<()> {
//! let count = backend.reducing_state(&ReducingStateDescriptor::new("count", |a: &i64, b: &i64| a + b))?;
//! backend.set_current_key("user-1".to_string())?;
//! count.on(backend).add(1)?;
//! assert_eq!(count.on(backend).get()?, Some(1));
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, DescriptorBase, ListStateDescriptor,
    MapStateDescriptor, ReduceFn, ReducingStateDescriptor, ValueStateDescriptor,
};
use super::handle::{CellHandle, ListHandle, MapHandle, StateHandle};
use super::ttl::{StateTtlConfig, TtlCodec, TtlValue};
use super::ttl_ops::{TtlCell, TtlList, TtlMap, TtlRuntime};
use super::{Namespace, StateKey, StateKind, StateValue, VoidNamespace};
use crate::backend::keyed::{CellSpec, KeyedStateBackend, ListSpec, MapSpec, TtlSpec};
use crate::codec::SharedCodec;
use crate::error::Result;

/// Registration of the typed states, for every keyed backend.
///
/// A descriptor with a time-to-live ([`super::ttl`]) registers its state with
/// [`TtlValue`]s stored and a [`TtlCodec`]; the typed state hides that.
pub trait KeyedStateBackendExt: KeyedStateBackend {
    /// Registers (or gets) a value state.
    fn value_state<V: StateValue, N: Namespace>(
        &mut self,
        d: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>> {
        let (cell, ttl) = register_cell_state(self, &d.base, StateKind::Value, &d.codec)?;
        Ok(ValueState {
            cell,
            ttl,
            default: d.default.clone(),
        })
    }

    /// Registers (or gets) a list state.
    fn list_state<T: StateValue, N: Namespace>(
        &mut self,
        d: &ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>> {
        let Some(config) = &d.base.ttl else {
            let list = self.register_list(ListSpec {
                meta: d.base.meta(StateKind::List, vec![d.codec.schema()]),
                namespace_codec: d.base.namespace_codec.clone(),
                element_codec: d.codec.clone(),
                ttl: None,
            })?;
            return Ok(ListState { list, ttl: None });
        };
        let codec = ttl_codec(self, config, &d.codec);
        let ttl_list = self.register_list(ListSpec {
            meta: d.base.meta(StateKind::List, vec![codec.schema()]),
            namespace_codec: d.base.namespace_codec.clone(),
            element_codec: codec,
            ttl: Some(ttl_spec(config)),
        })?;
        Ok(ListState {
            list: ListHandle::new(ttl_list.core().clone()),
            ttl: Some(TtlList {
                list: ttl_list,
                rt: TtlRuntime::new(config, self.clock().clone()),
            }),
        })
    }

    /// Registers (or gets) a reducing state.
    fn reducing_state<T: StateValue, N: Namespace>(
        &mut self,
        d: &ReducingStateDescriptor<T, N>,
    ) -> Result<ReducingState<T, N>> {
        let (cell, ttl) = register_cell_state(self, &d.base, StateKind::Reducing, &d.codec)?;
        Ok(ReducingState {
            cell,
            ttl,
            reduce: d.reduce.clone(),
        })
    }

    /// Registers (or gets) an aggregating state.
    fn aggregating_state<In: 'static, Acc: StateValue, Out: 'static, N: Namespace>(
        &mut self,
        d: &AggregatingStateDescriptor<In, Acc, Out, N>,
    ) -> Result<AggregatingState<In, Acc, Out, N>> {
        let (cell, ttl) = register_cell_state(self, &d.base, StateKind::Aggregating, &d.codec)?;
        Ok(AggregatingState {
            cell,
            ttl,
            function: d.function.clone(),
            _types: PhantomData,
        })
    }

    /// Registers (or gets) a map state.
    fn map_state<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        d: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>> {
        let Some(config) = &d.base.ttl else {
            let map = self.register_map(MapSpec {
                meta: d.base.meta(
                    StateKind::Map,
                    vec![d.key_codec.schema(), d.value_codec.schema()],
                ),
                namespace_codec: d.base.namespace_codec.clone(),
                user_key_codec: d.key_codec.clone(),
                user_value_codec: d.value_codec.clone(),
                ttl: None,
            })?;
            return Ok(MapState { map, ttl: None });
        };
        let codec = ttl_codec(self, config, &d.value_codec);
        let ttl_map = self.register_map(MapSpec {
            meta: d
                .base
                .meta(StateKind::Map, vec![d.key_codec.schema(), codec.schema()]),
            namespace_codec: d.base.namespace_codec.clone(),
            user_key_codec: d.key_codec.clone(),
            user_value_codec: codec,
            ttl: Some(ttl_spec(config)),
        })?;
        Ok(MapState {
            map: MapHandle::new(ttl_map.core().clone()),
            ttl: Some(TtlMap {
                map: ttl_map,
                rt: TtlRuntime::new(config, self.clock().clone()),
            }),
        })
    }
}

fn ttl_codec<B: KeyedStateBackend, V: StateValue>(
    backend: &B,
    config: &StateTtlConfig,
    codec: &SharedCodec<V>,
) -> SharedCodec<TtlValue<V>> {
    Arc::new(TtlCodec::new(
        codec.clone(),
        backend.clock().clone(),
        config.meta().time_domain,
    ))
}

fn ttl_spec<V>(config: &StateTtlConfig) -> TtlSpec<TtlValue<V>> {
    TtlSpec {
        config: config.clone(),
        timestamp: TtlValue::<V>::timestamp_of,
    }
}

/// Registers a cell-shaped state, with TTL when the descriptor has one: the
/// plain handle (for key listing) and the TTL cell.
#[allow(clippy::type_complexity)]
fn register_cell_state<B: KeyedStateBackend, V: StateValue, N: Namespace>(
    backend: &mut B,
    base: &DescriptorBase<N>,
    kind: StateKind,
    codec: &SharedCodec<V>,
) -> Result<(CellHandle<N, V>, Option<TtlCell<N, V>>)> {
    let Some(config) = &base.ttl else {
        let cell = backend.register_cell(CellSpec {
            meta: base.meta(kind, vec![codec.schema()]),
            namespace_codec: base.namespace_codec.clone(),
            value_codec: codec.clone(),
            ttl: None,
        })?;
        return Ok((cell, None));
    };
    let ttl_codec = ttl_codec(backend, config, codec);
    let ttl_cell = backend.register_cell(CellSpec {
        meta: base.meta(kind, vec![ttl_codec.schema()]),
        namespace_codec: base.namespace_codec.clone(),
        value_codec: ttl_codec,
        ttl: Some(ttl_spec(config)),
    })?;
    Ok((
        CellHandle::new(ttl_cell.core().clone()),
        Some(TtlCell {
            cell: ttl_cell,
            rt: TtlRuntime::new(config, backend.clock().clone()),
        }),
    ))
}

impl<B: KeyedStateBackend> KeyedStateBackendExt for B {}

/// Binds a state to a backend and a namespace for a few calls.
pub struct Bound<'a, B, S, N> {
    backend: &'a mut B,
    state: &'a S,
    namespace: &'a N,
}

static VOID: VoidNamespace = VoidNamespace;

macro_rules! binders {
    ($ty:ident < $($p:ident),* >) => {
        impl<$($p,)*> $ty<$($p,)* VoidNamespace> {
            /// Binds the state to `backend` in the default namespace.
            pub fn on<'a, B: KeyedStateBackend>(&'a self, backend: &'a mut B) -> Bound<'a, B, Self, VoidNamespace> {
                Bound { backend, state: self, namespace: &VOID }
            }
        }

        impl<$($p,)* N> $ty<$($p,)* N> {
            /// Binds the state to `backend` in `namespace`.
            pub fn on_ns<'a, B: KeyedStateBackend>(&'a self, backend: &'a mut B, namespace: &'a N) -> Bound<'a, B, Self, N> {
                Bound { backend, state: self, namespace }
            }
        }
    };
}

/// A single value per (key, namespace), with an optional default.
pub struct ValueState<V, N = VoidNamespace> {
    cell: CellHandle<N, V>,
    ttl: Option<TtlCell<N, V>>,
    default: Option<V>,
}
binders!(ValueState<V>);

impl<V: StateValue, N: Namespace> ValueState<V, N> {
    /// The low-level handle, for key listing ([`KeyedStateBackend::keys`]).
    /// A state with TTL stores [`TtlValue`]s, so its cells are not read or
    /// written through this handle (the backend refuses that with
    /// [`crate::Error::ForeignHandle`]).
    pub fn handle(&self) -> &CellHandle<N, V> {
        &self.cell
    }
}

impl<B: KeyedStateBackend, V: StateValue, N: Namespace> Bound<'_, B, ValueState<V, N>, N> {
    /// The value, or a fresh copy of the default when none is set.
    pub fn get(&mut self) -> Result<Option<V>> {
        let default = &self.state.default;
        let read = |v: Option<&V>| v.or(default.as_ref()).cloned();
        match &self.state.ttl {
            None => self
                .backend
                .cell_get(&self.state.cell, self.namespace, read),
            Some(t) => t.read(self.backend, self.namespace, read),
        }
    }

    /// Reads the value without copying it (the default is not applied).
    pub fn read<R>(&mut self, f: impl FnOnce(Option<&V>) -> R) -> Result<R> {
        match &self.state.ttl {
            None => self.backend.cell_get(&self.state.cell, self.namespace, f),
            Some(t) => t.read(self.backend, self.namespace, f),
        }
    }

    /// Sets the value.
    pub fn set(&mut self, value: V) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .cell_put(&self.state.cell, self.namespace, value),
            Some(t) => t.put(self.backend, self.namespace, value),
        }
    }

    /// Replaces the value with what `f` makes of it, reading and writing in
    /// one lookup where the backend can (the heap backends): `f` gets the
    /// current value (`None` when absent; the default is not applied) and
    /// returns the new one (`None` clears it).
    ///
    /// ```
    /// # use state_api::state::access::*;
    /// # use state_api::state::descriptor::*;
    /// # fn demo<B: state_api::KeyedStateBackend<Key = String>>(backend: &mut B) -> state_api::Result<()> {
    /// let seen = backend.value_state(&ValueStateDescriptor::<u32>::new("seen"))?;
    /// backend.set_current_key("user-1".to_string())?;
    /// seen.on(backend).modify(|n| Some(n.unwrap_or(0) + 1))?;
    /// seen.on(backend).modify(|n| Some(n.unwrap_or(0) + 1))?;
    /// assert_eq!(seen.on(backend).get()?, Some(2));
    /// seen.on(backend).modify(|_| None)?;
    /// assert_eq!(seen.on(backend).get()?, None);
    /// # Ok(()) }
    /// ```
    pub fn modify(&mut self, f: impl FnOnce(Option<V>) -> Option<V>) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .cell_modify(&self.state.cell, self.namespace, f),
            Some(t) => t.modify(self.backend, self.namespace, f),
        }
    }

    /// Sets the value; `None` removes it.
    pub fn update(&mut self, value: Option<V>) -> Result<()> {
        match value {
            Some(v) => self.set(v),
            None => self.clear(),
        }
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .cell_take(&self.state.cell, self.namespace)
                .map(drop),
            Some(t) => t.take(self.backend, self.namespace).map(drop),
        }
    }
}

/// A list of elements per (key, namespace).
pub struct ListState<T, N = VoidNamespace> {
    list: ListHandle<N, T>,
    ttl: Option<TtlList<N, T>>,
}
binders!(ListState<T>);

impl<T: StateValue, N: Namespace> ListState<T, N> {
    /// The low-level handle, for key listing (see [`ValueState::handle`]).
    pub fn handle(&self) -> &ListHandle<N, T> {
        &self.list
    }

    /// Appends the lists of `sources` to the list of `target` and clears the
    /// sources (for the current key). No sources is a no-op.
    pub fn merge_namespaces<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        if let Some(t) = &self.ttl {
            return t.merge(backend, target, sources);
        }
        for source in sources.iter().filter(|s| *s != target) {
            let moved = backend.list_take(&self.list, source)?;
            backend.list_append(&self.list, target, moved)?;
        }
        Ok(())
    }
}

impl<B: KeyedStateBackend, T: StateValue, N: Namespace> Bound<'_, B, ListState<T, N>, N> {
    /// The elements, or `None` when the list is empty.
    pub fn get(&mut self) -> Result<Option<Vec<T>>> {
        self.read(|l| (!l.is_empty()).then(|| l.to_vec()))
    }

    /// Reads the elements without copying them (a state with TTL copies the
    /// live elements for `f`).
    pub fn read<R>(&mut self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        match &self.state.ttl {
            None => self.backend.list_get(&self.state.list, self.namespace, f),
            Some(t) => t.read(self.backend, self.namespace, f),
        }
    }

    /// Appends one element.
    pub fn add(&mut self, element: T) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .list_push(&self.state.list, self.namespace, element),
            Some(t) => t.push(self.backend, self.namespace, element),
        }
    }

    /// Appends elements; an empty batch is a no-op.
    pub fn add_all(&mut self, elements: Vec<T>) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        match &self.state.ttl {
            None => self
                .backend
                .list_append(&self.state.list, self.namespace, elements),
            Some(t) => t.append(self.backend, self.namespace, elements),
        }
    }

    /// Replaces the list; an empty list clears it.
    pub fn update(&mut self, elements: Vec<T>) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .list_replace(&self.state.list, self.namespace, elements),
            Some(t) => t.replace(self.backend, self.namespace, elements),
        }
    }

    /// Removes the list.
    pub fn clear(&mut self) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .list_take(&self.state.list, self.namespace)
                .map(drop),
            Some(t) => t.clear(self.backend, self.namespace),
        }
    }
}

/// A value per (key, namespace) that added values are reduced into.
pub struct ReducingState<T, N = VoidNamespace> {
    cell: CellHandle<N, T>,
    ttl: Option<TtlCell<N, T>>,
    reduce: ReduceFn<T>,
}
binders!(ReducingState<T>);

impl<T: StateValue, N: Namespace> ReducingState<T, N> {
    /// The low-level handle, for key listing (see [`ValueState::handle`]).
    pub fn handle(&self) -> &CellHandle<N, T> {
        &self.cell
    }

    /// Reduces the values of `sources` into `target` and clears the sources.
    pub fn merge_namespaces<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        for source in sources.iter().filter(|s| *s != target) {
            let taken = match &self.ttl {
                None => backend.cell_take(&self.cell, source)?,
                Some(t) => t.take(backend, source)?,
            };
            if let Some(v) = taken {
                self.reduce_into(backend, target, v)?;
            }
        }
        Ok(())
    }

    fn reduce_into<B: KeyedStateBackend>(&self, backend: &mut B, ns: &N, value: T) -> Result<()> {
        let reduce = &self.reduce;
        let update = |slot: Option<&mut T>| match slot {
            Some(acc) => {
                *acc = reduce(acc, &value);
                None
            }
            None => Some(value),
        };
        match &self.ttl {
            None => backend.cell_upsert(&self.cell, ns, update),
            Some(t) => t.upsert(backend, ns, update),
        }
    }
}

impl<B: KeyedStateBackend, T: StateValue, N: Namespace> Bound<'_, B, ReducingState<T, N>, N> {
    /// The reduced value, or `None` when nothing was added.
    pub fn get(&mut self) -> Result<Option<T>> {
        let read = |v: Option<&T>| v.cloned();
        match &self.state.ttl {
            None => self
                .backend
                .cell_get(&self.state.cell, self.namespace, read),
            Some(t) => t.read(self.backend, self.namespace, read),
        }
    }

    /// Reduces `value` into the state.
    pub fn add(&mut self, value: T) -> Result<()> {
        self.state.reduce_into(self.backend, self.namespace, value)
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .cell_take(&self.state.cell, self.namespace)
                .map(drop),
            Some(t) => t.take(self.backend, self.namespace).map(drop),
        }
    }
}

/// An accumulator per (key, namespace) driven by an [`AggregateFunction`].
pub struct AggregatingState<In, Acc, Out, N = VoidNamespace> {
    cell: CellHandle<N, Acc>,
    ttl: Option<TtlCell<N, Acc>>,
    function: Arc<dyn AggregateFunction<In, Acc, Out>>,
    _types: PhantomData<fn(In) -> Out>,
}
binders!(AggregatingState<In, Acc, Out>);

impl<In: 'static, Acc: StateValue, Out: 'static, N: Namespace> AggregatingState<In, Acc, Out, N> {
    /// The low-level handle, for key listing (see [`ValueState::handle`]).
    pub fn handle(&self) -> &CellHandle<N, Acc> {
        &self.cell
    }

    fn upsert<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        ns: &N,
        update: impl FnOnce(Option<&mut Acc>) -> Option<Acc>,
    ) -> Result<()> {
        match &self.ttl {
            None => backend.cell_upsert(&self.cell, ns, update),
            Some(t) => t.upsert(backend, ns, update),
        }
    }

    fn take<B: KeyedStateBackend>(&self, backend: &mut B, ns: &N) -> Result<Option<Acc>> {
        match &self.ttl {
            None => backend.cell_take(&self.cell, ns),
            Some(t) => t.take(backend, ns),
        }
    }

    /// Merges the accumulators of `sources` into `target` and clears the sources.
    pub fn merge_namespaces<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        for source in sources.iter().filter(|s| *s != target) {
            if let Some(other) = self.take(backend, source)? {
                let f = &self.function;
                self.upsert(backend, target, |slot| match slot {
                    Some(acc) => {
                        f.merge(acc, other);
                        None
                    }
                    None => Some(other),
                })?;
            }
        }
        Ok(())
    }
}

impl<B: KeyedStateBackend, In: 'static, Acc: StateValue, Out: 'static, N: Namespace>
    Bound<'_, B, AggregatingState<In, Acc, Out, N>, N>
{
    /// The result of the accumulator, or `None` when nothing was added.
    pub fn get(&mut self) -> Result<Option<Out>> {
        let f = &self.state.function;
        let read = |acc: Option<&Acc>| acc.map(|a| f.get_result(a));
        match &self.state.ttl {
            None => self
                .backend
                .cell_get(&self.state.cell, self.namespace, read),
            Some(t) => t.read(self.backend, self.namespace, read),
        }
    }

    /// Adds `value` to the accumulator (creating it when absent).
    pub fn add(&mut self, value: In) -> Result<()> {
        let f = &self.state.function;
        self.state
            .upsert(self.backend, self.namespace, |slot| match slot {
                Some(acc) => {
                    f.add(&value, acc);
                    None
                }
                None => {
                    let mut acc = f.create_accumulator();
                    f.add(&value, &mut acc);
                    Some(acc)
                }
            })
    }

    /// Removes the accumulator.
    pub fn clear(&mut self) -> Result<()> {
        self.state.take(self.backend, self.namespace).map(drop)
    }
}

/// A map of user keys to user values per (key, namespace).
pub struct MapState<UK, UV, N = VoidNamespace> {
    map: MapHandle<N, UK, UV>,
    ttl: Option<TtlMap<N, UK, UV>>,
}
binders!(MapState<UK, UV>);

impl<UK: StateKey, UV: StateValue, N: Namespace> MapState<UK, UV, N> {
    /// The low-level handle, for key listing (see [`ValueState::handle`]).
    pub fn handle(&self) -> &MapHandle<N, UK, UV> {
        &self.map
    }
}

impl<B: KeyedStateBackend, UK: StateKey, UV: StateValue, N: Namespace>
    Bound<'_, B, MapState<UK, UV, N>, N>
{
    /// The value of `user_key`.
    pub fn get(&mut self, user_key: &UK) -> Result<Option<UV>> {
        match &self.state.ttl {
            None => self
                .backend
                .map_get(&self.state.map, self.namespace, user_key, |v| v.cloned()),
            Some(t) => t.get(self.backend, self.namespace, user_key),
        }
    }

    /// Whether `user_key` has a value.
    pub fn contains(&mut self, user_key: &UK) -> Result<bool> {
        match &self.state.ttl {
            None => self
                .backend
                .map_get(&self.state.map, self.namespace, user_key, |v| v.is_some()),
            Some(t) => Ok(t.get(self.backend, self.namespace, user_key)?.is_some()),
        }
    }

    /// Sets the value of `user_key`.
    pub fn put(&mut self, user_key: UK, user_value: UV) -> Result<()> {
        match &self.state.ttl {
            None => self
                .backend
                .map_put(&self.state.map, self.namespace, user_key, user_value),
            Some(t) => t.put(self.backend, self.namespace, user_key, user_value),
        }
    }

    /// Sets several entries.
    pub fn put_all(&mut self, entries: impl IntoIterator<Item = (UK, UV)>) -> Result<()> {
        for (k, v) in entries {
            self.put(k, v)?;
        }
        Ok(())
    }

    /// Removes `user_key` and returns its value.
    pub fn remove(&mut self, user_key: &UK) -> Result<Option<UV>> {
        match &self.state.ttl {
            None => self
                .backend
                .map_remove(&self.state.map, self.namespace, user_key),
            Some(t) => t.remove(self.backend, self.namespace, user_key),
        }
    }

    /// Every entry (a copy: the map may be modified while walking it).
    pub fn entries(&mut self) -> Result<Vec<(UK, UV)>> {
        match &self.state.ttl {
            None => self.backend.map_entries(&self.state.map, self.namespace),
            Some(t) => t.entries(self.backend, self.namespace),
        }
    }

    /// Every user key.
    pub fn keys(&mut self) -> Result<Vec<UK>> {
        Ok(self.entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every user value.
    pub fn values(&mut self) -> Result<Vec<UV>> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Keeps the entries for which `keep` returns true, removing the others
    /// (iteration with removal).
    pub fn retain(&mut self, mut keep: impl FnMut(&UK, &UV) -> bool) -> Result<()> {
        for (k, v) in self.entries()? {
            if !keep(&k, &v) {
                self.remove(&k)?;
            }
        }
        Ok(())
    }

    /// Whether the map has no entry.
    pub fn is_empty(&mut self) -> Result<bool> {
        match &self.state.ttl {
            None => self.backend.map_is_empty(&self.state.map, self.namespace),
            Some(t) => t.is_empty(self.backend, self.namespace),
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> Result<()> {
        match &self.state.ttl {
            None => self.backend.map_clear(&self.state.map, self.namespace),
            Some(t) => t.clear(self.backend, self.namespace),
        }
    }
}

/// Access to the low-level handle of any typed state, for key listing.
pub trait TypedState {
    /// The handle type.
    type Handle: StateHandle;
    /// The handle.
    fn state_handle(&self) -> &Self::Handle;
}

macro_rules! typed_state {
    ($ty:ident < $($p:ident),* > => $h:ty, $field:ident) => {
        impl<$($p: StateValue,)* N: Namespace> TypedState for $ty<$($p,)* N> {
            type Handle = $h;
            fn state_handle(&self) -> &$h {
                &self.$field
            }
        }
    };
}
typed_state!(ValueState<V> => CellHandle<N, V>, cell);
typed_state!(ListState<T> => ListHandle<N, T>, list);
typed_state!(ReducingState<T> => CellHandle<N, T>, cell);

impl<In: 'static, Acc: StateValue, Out: 'static, N: Namespace> TypedState
    for AggregatingState<In, Acc, Out, N>
{
    type Handle = CellHandle<N, Acc>;
    fn state_handle(&self) -> &CellHandle<N, Acc> {
        &self.cell
    }
}

impl<UK: StateKey, UV: StateValue, N: Namespace> TypedState for MapState<UK, UV, N> {
    type Handle = MapHandle<N, UK, UV>;
    fn state_handle(&self) -> &MapHandle<N, UK, UV> {
        &self.map
    }
}
