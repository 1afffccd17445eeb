//! Operator (non-keyed) state: list state (split on rescale), union list state
//! (every subtask gets everything) and broadcast map state (every subtask gets
//! a copy).
//!
//! Operator state is small and held on the heap by every backend, so one
//! implementation, [`DefaultOperatorStateBackend`], serves them all. Its
//! snapshot encodes every state during the synchronous part (a deep copy, so
//! later writes never leak in) and writes the bytes in the asynchronous part.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::{Compatibility, SharedCodec};
use crate::error::{Error, Result};
use crate::format::bytes::{put_bytes, ByteReader};
use crate::format::operator::{
    read_operator_snapshot_with, write_operator_snapshot, OperatorStateData, OperatorStateMeta,
};
use crate::snapshot::handle::{Distribution, OperatorStateHandle};
use crate::snapshot::stream::{CheckpointStreamFactory, LocalFiles, StateFileReader, StreamScope};
use crate::snapshot::task::{CancellationRegistry, SnapshotTask};
use crate::snapshot::SnapshotOptions;
use crate::state::descriptor::{ListStateDescriptor, MapStateDescriptor};
use crate::state::handle::{next_backend_instance_id, HandleCore};
use crate::state::{StateKey, StateValue};

/// A registered operator list state (split or union).
pub struct OperatorListState<T> {
    core: HandleCore,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for OperatorListState<T> {
    fn clone(&self) -> Self {
        OperatorListState {
            core: self.core.clone(),
            _t: PhantomData,
        }
    }
}

/// A registered broadcast state.
pub struct BroadcastState<K, V> {
    core: HandleCore,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for BroadcastState<K, V> {
    fn clone(&self) -> Self {
        BroadcastState {
            core: self.core.clone(),
            _t: PhantomData,
        }
    }
}

/// The operator state of one subtask.
pub trait OperatorStateBackend: Send {
    /// Registers (or gets) a list state, split evenly on rescale.
    fn list_state<T: StateValue>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>>;

    /// Registers (or gets) a union list state: on restore every subtask gets
    /// the elements of every subtask.
    fn union_list_state<T: StateValue>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>>;

    /// Registers (or gets) a broadcast map state.
    fn broadcast_state<K: StateKey, V: StateValue>(
        &mut self,
        d: &MapStateDescriptor<K, V>,
    ) -> Result<BroadcastState<K, V>>;

    /// The elements of a list state, to read or change in place.
    fn list<T: StateValue>(&mut self, state: &OperatorListState<T>) -> Result<&mut Vec<T>>;

    /// The entries of a broadcast state, to read or change in place.
    fn broadcast<K: StateKey, V: StateValue>(
        &mut self,
        state: &BroadcastState<K, V>,
    ) -> Result<&mut HashMap<K, V>>;

    /// Names of every state, registered or restored.
    fn state_names(&self) -> Vec<String>;

    /// Whether the backend was restored from at least one handle.
    fn is_restored(&self) -> bool;

    /// Takes a snapshot: the synchronous part copies the state; the task
    /// writes it. Yields `None` when there is no state at all.
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<OperatorStateHandle>>>;

    /// Closes the backend, cancelling running snapshots.
    fn close(&mut self);
}

trait ErasedOperatorState: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Encodes every element (the snapshot's deep copy).
    fn encode(&self, name: &str) -> Result<Vec<Vec<u8>>>;
}

struct TypedList<T> {
    elements: Vec<T>,
    codec: SharedCodec<T>,
}

impl<T: StateValue> ErasedOperatorState for TypedList<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn encode(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        self.elements
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                self.codec
                    .encode(e, &mut out)
                    .map_err(|c| codec_error(name, "element", c))?;
                Ok(out)
            })
            .collect()
    }
}

struct TypedBroadcast<K, V> {
    entries: HashMap<K, V>,
    key_codec: SharedCodec<K>,
    value_codec: SharedCodec<V>,
}

impl<K: StateKey, V: StateValue> ErasedOperatorState for TypedBroadcast<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn encode(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        let mut scratch = Vec::new();
        self.entries
            .iter()
            .map(|(k, v)| {
                let mut out = Vec::new();
                scratch.clear();
                self.key_codec
                    .encode(k, &mut scratch)
                    .map_err(|c| codec_error(name, "key", c))?;
                put_bytes(&mut out, &scratch);
                scratch.clear();
                self.value_codec
                    .encode(v, &mut scratch)
                    .map_err(|c| codec_error(name, "value", c))?;
                put_bytes(&mut out, &scratch);
                Ok(out)
            })
            .collect()
    }
}

/// Restored elements of a state not registered yet.
struct RawState {
    elements: Vec<Vec<u8>>,
}

impl ErasedOperatorState for RawState {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn encode(&self, _name: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self.elements.clone())
    }
}

use crate::error::codec_error;

struct Entry {
    meta: OperatorStateMeta,
    state: Box<dyn ErasedOperatorState>,
    /// Set while the state holds restored bytes not yet decoded.
    raw: bool,
}

/// The heap operator state backend shared by every keyed backend.
pub struct DefaultOperatorStateBackend {
    id: u64,
    entries: Vec<Entry>,
    restored: bool,
    running: CancellationRegistry,
    closed: bool,
}

impl DefaultOperatorStateBackend {
    /// An empty backend.
    pub fn new() -> Self {
        DefaultOperatorStateBackend {
            id: next_backend_instance_id(),
            entries: Vec::new(),
            restored: false,
            running: CancellationRegistry::default(),
            closed: false,
        }
    }

    /// A backend restored from `handles` (as assigned by
    /// [`crate::snapshot::rescale::assign_operator_state`]). Elements of the
    /// same state from several handles are concatenated in handle order.
    pub fn restore(handles: &[OperatorStateHandle]) -> Result<Self> {
        Self::restore_with(handles, &LocalFiles)
    }

    /// Like [`DefaultOperatorStateBackend::restore`], reading the handles'
    /// files through `files`.
    pub fn restore_with(
        handles: &[OperatorStateHandle],
        files: &dyn StateFileReader,
    ) -> Result<Self> {
        let mut backend = Self::new();
        backend.restored = !handles.is_empty();
        for handle in handles {
            for data in read_operator_snapshot_with(handle, files)? {
                match backend
                    .entries
                    .iter_mut()
                    .find(|e| e.meta.name == data.meta.name)
                {
                    Some(e) => {
                        if e.meta != data.meta {
                            return Err(Error::StateKindMismatch {
                                name: data.meta.name.clone(),
                                registered: format!(
                                    "{:?} {:?}",
                                    e.meta.distribution, e.meta.schemas
                                ),
                                requested: format!(
                                    "{:?} {:?}",
                                    data.meta.distribution, data.meta.schemas
                                ),
                            });
                        }
                        let raw = e
                            .state
                            .as_any_mut()
                            .downcast_mut::<RawState>()
                            .ok_or(Error::Closed)?;
                        raw.elements.extend(data.elements);
                    }
                    None => backend.entries.push(Entry {
                        meta: data.meta,
                        state: Box::new(RawState {
                            elements: data.elements,
                        }),
                        raw: true,
                    }),
                }
            }
        }
        Ok(backend)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Finds or creates the entry for `meta`, decoding restored bytes with
    /// `decode` the first time. Returns its index.
    fn register(
        &mut self,
        meta: OperatorStateMeta,
        compat: &[(&'static str, Compatibility)],
        create: impl FnOnce() -> Box<dyn ErasedOperatorState>,
        decode: impl FnOnce(&[Vec<u8>]) -> Result<Box<dyn ErasedOperatorState>>,
    ) -> Result<usize> {
        self.check_open()?;
        let Some(i) = self.entries.iter().position(|e| e.meta.name == meta.name) else {
            self.entries.push(Entry {
                meta,
                state: create(),
                raw: false,
            });
            return Ok(self.entries.len() - 1);
        };
        let entry = &mut self.entries[i];
        if entry.meta.distribution != meta.distribution {
            return Err(Error::StateKindMismatch {
                name: meta.name,
                registered: format!("{:?} operator state", entry.meta.distribution),
                requested: format!("{:?} operator state", meta.distribution),
            });
        }
        if entry.raw {
            for ((role, c), (written, current)) in compat
                .iter()
                .zip(entry.meta.schemas.iter().zip(&meta.schemas))
            {
                if *c == Compatibility::Incompatible {
                    return Err(Error::IncompatibleCodec {
                        state: meta.name.clone(),
                        role,
                        written: written.clone(),
                        current: current.clone(),
                    });
                }
            }
            let raw = entry
                .state
                .as_any_mut()
                .downcast_mut::<RawState>()
                .map(|r| std::mem::take(&mut r.elements))
                .unwrap_or_default();
            entry.state = decode(&raw)?;
            entry.raw = false;
            entry.meta = meta;
        } else if entry.meta.schemas != meta.schemas {
            return Err(Error::IncompatibleCodec {
                state: meta.name.clone(),
                role: "element",
                written: entry.meta.schemas[0].clone(),
                current: meta.schemas[0].clone(),
            });
        }
        Ok(i)
    }

    fn register_list<T: StateValue>(
        &mut self,
        d: &ListStateDescriptor<T>,
        distribution: Distribution,
    ) -> Result<OperatorListState<T>> {
        let name = d.base.name.clone();
        let codec = d.codec.clone();
        let written = self
            .entries
            .iter()
            .find(|e| e.meta.name == name)
            .and_then(|e| e.meta.schemas.first().cloned());
        let compat = written.as_ref().map(|w| codec.compatibility(w));
        let meta = OperatorStateMeta {
            name: name.clone(),
            distribution,
            schemas: vec![codec.schema()],
        };
        let c2 = codec.clone();
        let i = self.register(
            meta,
            &[("element", compat.unwrap_or(Compatibility::AsIs))],
            || {
                Box::new(TypedList::<T> {
                    elements: Vec::new(),
                    codec: c2,
                })
            },
            |raw| {
                let elements = raw
                    .iter()
                    .map(|b| {
                        match (&written, compat) {
                            (Some(w), Some(Compatibility::AfterMigration)) => {
                                codec.decode_written(w, b)
                            }
                            _ => codec.decode(b),
                        }
                        .map_err(|e| codec_error(&name, "element", e))
                    })
                    .collect::<Result<Vec<T>>>()?;
                Ok(Box::new(TypedList {
                    elements,
                    codec: codec.clone(),
                }))
            },
        )?;
        self.check_type::<TypedList<T>>(i)?;
        Ok(OperatorListState {
            core: HandleCore::new(self.id, i as u32, &d.base.name),
            _t: PhantomData,
        })
    }

    fn check_type<S: 'static>(&mut self, i: usize) -> Result<()> {
        if self.entries[i].state.as_any_mut().is::<S>() {
            Ok(())
        } else {
            Err(Error::StateKindMismatch {
                name: self.entries[i].meta.name.clone(),
                registered: "operator state of other element types".into(),
                requested: std::any::type_name::<S>().into(),
            })
        }
    }

    fn typed<S: 'static>(&mut self, core: &HandleCore) -> Result<&mut S> {
        self.check_open()?;
        if core.backend() != self.id {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        self.entries
            .get_mut(core.index())
            .and_then(|e| e.state.as_any_mut().downcast_mut::<S>())
            .ok_or_else(|| Error::ForeignHandle {
                name: core.name().to_string(),
            })
    }
}

impl Default for DefaultOperatorStateBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorStateBackend for DefaultOperatorStateBackend {
    fn list_state<T: StateValue>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>> {
        self.register_list(d, Distribution::SplitDistribute)
    }

    fn union_list_state<T: StateValue>(
        &mut self,
        d: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>> {
        self.register_list(d, Distribution::Union)
    }

    fn broadcast_state<K: StateKey, V: StateValue>(
        &mut self,
        d: &MapStateDescriptor<K, V>,
    ) -> Result<BroadcastState<K, V>> {
        let name = d.base.name.clone();
        let (kc, vc) = (d.key_codec.clone(), d.value_codec.clone());
        let written: Option<Vec<_>> = self
            .entries
            .iter()
            .find(|e| e.meta.name == name)
            .map(|e| e.meta.schemas.clone());
        let (kcompat, vcompat) = match &written {
            Some(w) if w.len() == 2 => (kc.compatibility(&w[0]), vc.compatibility(&w[1])),
            _ => (Compatibility::AsIs, Compatibility::AsIs),
        };
        // Keys are never migrated: only an as-is key codec is accepted.
        let kcompat = if kcompat == Compatibility::AfterMigration {
            Compatibility::Incompatible
        } else {
            kcompat
        };
        let meta = OperatorStateMeta {
            name: name.clone(),
            distribution: Distribution::Broadcast,
            schemas: vec![kc.schema(), vc.schema()],
        };
        let (kc2, vc2) = (kc.clone(), vc.clone());
        let i = self.register(
            meta,
            &[("key", kcompat), ("value", vcompat)],
            || {
                Box::new(TypedBroadcast::<K, V> {
                    entries: HashMap::new(),
                    key_codec: kc2,
                    value_codec: vc2,
                })
            },
            |raw| {
                let mut entries = HashMap::with_capacity(raw.len());
                let what = format!("entry of restored broadcast state '{name}'");
                for b in raw {
                    let mut r = ByteReader::new(b, &what, 0);
                    let kb = r.bytes()?;
                    let vb = r.bytes()?;
                    r.finish("a broadcast entry")?;
                    let k = kc.decode(kb).map_err(|e| codec_error(&name, "key", e))?;
                    let v = match (&written, vcompat) {
                        (Some(w), Compatibility::AfterMigration) => vc.decode_written(&w[1], vb),
                        _ => vc.decode(vb),
                    }
                    .map_err(|e| codec_error(&name, "value", e))?;
                    entries.insert(k, v);
                }
                Ok(Box::new(TypedBroadcast {
                    entries,
                    key_codec: kc.clone(),
                    value_codec: vc.clone(),
                }))
            },
        )?;
        self.check_type::<TypedBroadcast<K, V>>(i)?;
        Ok(BroadcastState {
            core: HandleCore::new(self.id, i as u32, &d.base.name),
            _t: PhantomData,
        })
    }

    fn list<T: StateValue>(&mut self, state: &OperatorListState<T>) -> Result<&mut Vec<T>> {
        Ok(&mut self.typed::<TypedList<T>>(&state.core)?.elements)
    }

    fn broadcast<K: StateKey, V: StateValue>(
        &mut self,
        state: &BroadcastState<K, V>,
    ) -> Result<&mut HashMap<K, V>> {
        Ok(&mut self.typed::<TypedBroadcast<K, V>>(&state.core)?.entries)
    }

    fn state_names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.meta.name.clone()).collect()
    }

    fn is_restored(&self) -> bool {
        self.restored
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<OperatorStateHandle>>> {
        self.check_open()?;
        if self.entries.is_empty() {
            return Ok(SnapshotTask::ready(None));
        }
        let copies = self
            .entries
            .iter()
            .map(|e| {
                Ok(OperatorStateData {
                    meta: e.meta.clone(),
                    elements: e.state.encode(&e.meta.name)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cancellation = self.running.register();
        Ok(SnapshotTask::new(cancellation, move |c| {
            let out = streams.create_stream(StreamScope::Exclusive)?;
            let check = || c.check("operator state snapshot");
            write_operator_snapshot(out, &copies, options.compression, checkpoint_id, &check)
                .map(Some)
        }))
    }

    fn close(&mut self) {
        self.closed = true;
        self.running.cancel_all();
    }
}
