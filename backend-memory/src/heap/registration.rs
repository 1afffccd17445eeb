//! Registration of the three storage shapes on a [`HeapStore`]: the typed
//! table each shape gets, and how a restored record (decoded and, where the
//! codec says so, migrated) enters it.

use std::sync::Arc;

use state_api::backend::keyed::{CellSpec, ListSpec, MapSpec};
use state_api::backend::registration::{decode_restored, key_compatibility, value_compatibility};
use state_api::format::keyed::RecordBody;
use state_api::state::handle::HandleCore;
use state_api::state::{Namespace, StateKey, StateValue};
use state_api::Result;

use super::store::HeapStore;
use super::table::{
    codec_error, CellCodec, ListCodec, ListValue, MapCodec, MapValue, StateTable, TableHasher,
};

pub(crate) type CellTable<K, N, V> = StateTable<K, N, V, CellCodec<V>>;
pub(crate) type ListTable<K, N, T> = StateTable<K, N, ListValue<T>, ListCodec<T>>;
pub(crate) type MapTable<K, N, UK, UV> = StateTable<K, N, MapValue<UK, UV>, MapCodec<UK, UV>>;

impl<K: StateKey> HeapStore<K> {
    /// Registers a cell-shaped state of backend `backend`.
    pub(crate) fn register_cell<N: Namespace, V: StateValue>(
        &mut self,
        backend: u64,
        spec: CellSpec<N, V>,
    ) -> Result<HandleCore> {
        let compat = value_compatibility(&spec.value_codec, self.pending(), &spec.meta.name, 0);
        let codec = spec.value_codec;
        let name = spec.meta.name.clone();
        let ttl_meta = spec.meta.ttl;
        let timestamp = spec.ttl.as_ref().map(|t| t.timestamp);
        self.register(
            backend,
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[compat],
            &spec.namespace_codec,
            |groups| {
                CellTable::<K, N, V>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    CellCodec(codec.clone(), timestamp),
                )
                .with_ttl(ttl_meta)
            },
            |table, index, entry, body, written| {
                match body {
                    RecordBody::Cell(v) => {
                        let value = decode_restored(
                            &codec,
                            compat,
                            &written.values[0],
                            v,
                            &written.name,
                            "value",
                        )?;
                        table.groups[index].insert(entry, value);
                    }
                    RecordBody::Delete => {
                        table.groups[index].remove(&entry);
                    }
                    _ => {}
                }
                Ok(())
            },
        )
    }

    /// Registers a list-shaped state of backend `backend`.
    pub(crate) fn register_list<N: Namespace, T: StateValue>(
        &mut self,
        backend: u64,
        spec: ListSpec<N, T>,
    ) -> Result<HandleCore> {
        let compat = value_compatibility(&spec.element_codec, self.pending(), &spec.meta.name, 0);
        let codec = spec.element_codec;
        let name = spec.meta.name.clone();
        let ttl_meta = spec.meta.ttl;
        let timestamp = spec.ttl.as_ref().map(|t| t.timestamp);
        self.register(
            backend,
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[compat],
            &spec.namespace_codec,
            |groups| {
                ListTable::<K, N, T>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    ListCodec(codec.clone(), timestamp),
                )
                .with_ttl(ttl_meta)
            },
            |table, index, entry, body, written| {
                if let RecordBody::List(elements) = body {
                    let list = elements
                        .iter()
                        .map(|e| {
                            decode_restored(
                                &codec,
                                compat,
                                &written.values[0],
                                e,
                                &written.name,
                                "element",
                            )
                        })
                        .collect::<Result<Vec<T>>>()?;
                    if list.is_empty() {
                        table.groups[index].remove(&entry);
                    } else {
                        table.groups[index].insert(entry, Arc::new(list));
                    }
                } else if *body == RecordBody::Delete {
                    table.groups[index].remove(&entry);
                }
                Ok(())
            },
        )
    }

    /// Registers a map-shaped state of backend `backend`.
    pub(crate) fn register_map<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        backend: u64,
        spec: MapSpec<N, UK, UV>,
    ) -> Result<HandleCore> {
        let name = spec.meta.name.clone();
        let key_compat = key_compatibility(value_compatibility(
            &spec.user_key_codec,
            self.pending(),
            &name,
            0,
        ));
        let value_compat = value_compatibility(&spec.user_value_codec, self.pending(), &name, 1);
        let (uk_codec, uv_codec) = (spec.user_key_codec, spec.user_value_codec);
        let ttl_meta = spec.meta.ttl;
        let timestamp = spec.ttl.as_ref().map(|t| t.timestamp);
        self.register(
            backend,
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[key_compat, value_compat],
            &spec.namespace_codec,
            |groups| {
                MapTable::<K, N, UK, UV>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    MapCodec(uk_codec.clone(), uv_codec.clone(), timestamp),
                )
                .with_ttl(ttl_meta)
            },
            |table, index, entry, body, written| {
                let RecordBody::MapEntry { key: uk, value: uv } = body else {
                    if *body == RecordBody::Delete {
                        table.groups[index].remove(&entry);
                    }
                    return Ok(());
                };
                let uk = uk_codec
                    .decode(uk)
                    .map_err(|e| codec_error(&written.name, "user key", e))?;
                let uv = decode_restored(
                    &uv_codec,
                    value_compat,
                    &written.values[1],
                    uv,
                    &written.name,
                    "user value",
                )?;
                let group = &mut table.groups[index];
                match group.get_mut(&entry) {
                    Some(map) => {
                        map.insert(uk, uv);
                    }
                    None => {
                        let mut map = MapValue::with_hasher(TableHasher::default());
                        map.insert(uk, uv);
                        group.insert(entry, map);
                    }
                }
                Ok(())
            },
        )
    }
}
