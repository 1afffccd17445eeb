//! State descriptors: a state's name, kind, codecs, default and functions.
//!
//! A descriptor is registered with a keyed backend (see
//! [`crate::KeyedStateBackend`]) and yields a typed handle from
//! [`super::access`]. Descriptors are generic over the namespace type `N`,
//! which defaults to [`VoidNamespace`]; `with_namespace` switches it.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ttl::StateTtlConfig;
use super::{Namespace, StateKind, StateMeta, StateValue, VoidNamespace};
use crate::codec::{postcard, SharedCodec};

/// A reduce function: combines the stored value with a new one.
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// An aggregate function, as Flink's `AggregateFunction`.
///
/// Accumulators may be mutated in place (`add` changes `acc`) or treated as
/// immutable (`add` assigns a new value to `*acc`); both are supported.
pub trait AggregateFunction<In, Acc, Out>: Send + Sync + 'static {
    /// A fresh, empty accumulator.
    fn create_accumulator(&self) -> Acc;
    /// Adds `value` to `acc`.
    fn add(&self, value: &In, acc: &mut Acc);
    /// The result of an accumulator.
    fn get_result(&self, acc: &Acc) -> Out;
    /// Merges `other` into `acc` (used by `merge_namespaces`).
    fn merge(&self, acc: &mut Acc, other: Acc);
}

/// Name, namespace codec: the part every descriptor has.
pub struct DescriptorBase<N> {
    pub(crate) name: String,
    pub(crate) namespace_codec: SharedCodec<N>,
    pub(crate) ttl: Option<StateTtlConfig>,
}

impl<N> Clone for DescriptorBase<N> {
    fn clone(&self) -> Self {
        DescriptorBase {
            name: self.name.clone(),
            namespace_codec: self.namespace_codec.clone(),
            ttl: self.ttl.clone(),
        }
    }
}

impl DescriptorBase<VoidNamespace> {
    fn new(name: impl Into<String>) -> Self {
        DescriptorBase {
            name: name.into(),
            namespace_codec: postcard::<VoidNamespace>(),
            ttl: None,
        }
    }
}

impl<N: Namespace> DescriptorBase<N> {
    fn with_namespace<M: Namespace>(self, codec: SharedCodec<M>) -> DescriptorBase<M> {
        DescriptorBase {
            name: self.name,
            namespace_codec: codec,
            ttl: self.ttl,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace codec.
    pub fn namespace_codec(&self) -> &SharedCodec<N> {
        &self.namespace_codec
    }

    /// The time-to-live, if the state has one.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }

    pub(crate) fn meta(
        &self,
        kind: StateKind,
        values: Vec<crate::codec::CodecSchema>,
    ) -> StateMeta {
        StateMeta {
            name: self.name.clone(),
            kind,
            namespace: self.namespace_codec.schema(),
            values,
            ttl: self.ttl.as_ref().map(StateTtlConfig::meta),
        }
    }
}

macro_rules! namespace_switch {
    ($ty:ident < $($p:ident),* > { $($field:ident),* }) => {
        impl<$($p,)* N: Namespace> $ty<$($p,)* N> {
            /// The state's name.
            pub fn name(&self) -> &str {
                &self.base.name
            }

            /// The same descriptor with a time-to-live: entries expire
            /// `ttl` after their last write (see [`super::ttl`]).
            pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.base.ttl = Some(ttl);
                self
            }

            /// The time-to-live, if the state has one.
            pub fn ttl(&self) -> Option<&StateTtlConfig> {
                self.base.ttl.as_ref()
            }

            /// The same descriptor scoped by namespaces of type `M`, encoded with `codec`.
            pub fn with_namespace<M: Namespace>(self, codec: SharedCodec<M>) -> $ty<$($p,)* M> {
                $ty { base: self.base.with_namespace(codec), $($field: self.$field),* }
            }
        }
    };
}

/// Describes a [`super::access::ValueState`].
pub struct ValueStateDescriptor<V, N = VoidNamespace> {
    pub(crate) base: DescriptorBase<N>,
    pub(crate) codec: SharedCodec<V>,
    pub(crate) default: Option<V>,
}

impl<V: StateValue + Serialize + DeserializeOwned> ValueStateDescriptor<V> {
    /// A value state named `name` with the default codec and no default value.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_codec(name, postcard::<V>())
    }
}

impl<V: StateValue> ValueStateDescriptor<V> {
    /// A value state with a codec of your choosing.
    pub fn with_codec(name: impl Into<String>, codec: SharedCodec<V>) -> Self {
        ValueStateDescriptor {
            base: DescriptorBase::new(name),
            codec,
            default: None,
        }
    }
}

impl<V: StateValue, N: Namespace> ValueStateDescriptor<V, N> {
    /// A default returned (as a fresh copy per read) when no value is set.
    pub fn with_default(mut self, default: V) -> Self {
        self.default = Some(default);
        self
    }
}
namespace_switch!(ValueStateDescriptor<V> { codec, default });

/// Describes a [`super::access::ListState`].
pub struct ListStateDescriptor<T, N = VoidNamespace> {
    pub(crate) base: DescriptorBase<N>,
    pub(crate) codec: SharedCodec<T>,
}

impl<T: StateValue + Serialize + DeserializeOwned> ListStateDescriptor<T> {
    /// A list state named `name` with the default element codec.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_codec(name, postcard::<T>())
    }
}

impl<T: StateValue> ListStateDescriptor<T> {
    /// A list state with an element codec of your choosing.
    pub fn with_codec(name: impl Into<String>, codec: SharedCodec<T>) -> Self {
        ListStateDescriptor {
            base: DescriptorBase::new(name),
            codec,
        }
    }
}
namespace_switch!(ListStateDescriptor<T> { codec });

/// Describes a [`super::access::ReducingState`].
pub struct ReducingStateDescriptor<T, N = VoidNamespace> {
    pub(crate) base: DescriptorBase<N>,
    pub(crate) codec: SharedCodec<T>,
    pub(crate) reduce: ReduceFn<T>,
}

impl<T: StateValue + Serialize + DeserializeOwned> ReducingStateDescriptor<T> {
    /// A reducing state named `name` that combines values with `reduce`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> Self {
        Self::with_codec(name, reduce, postcard::<T>())
    }
}

impl<T: StateValue> ReducingStateDescriptor<T> {
    /// A reducing state with a codec of your choosing.
    pub fn with_codec(
        name: impl Into<String>,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        codec: SharedCodec<T>,
    ) -> Self {
        ReducingStateDescriptor {
            base: DescriptorBase::new(name),
            codec,
            reduce: Arc::new(reduce),
        }
    }
}
namespace_switch!(ReducingStateDescriptor<T> { codec, reduce });

/// Describes a [`super::access::AggregatingState`].
pub struct AggregatingStateDescriptor<In, Acc, Out, N = VoidNamespace> {
    pub(crate) base: DescriptorBase<N>,
    pub(crate) codec: SharedCodec<Acc>,
    pub(crate) function: Arc<dyn AggregateFunction<In, Acc, Out>>,
}

impl<In, Acc, Out> AggregatingStateDescriptor<In, Acc, Out>
where
    Acc: StateValue + Serialize + DeserializeOwned,
{
    /// An aggregating state named `name` with the default accumulator codec.
    pub fn new(name: impl Into<String>, function: impl AggregateFunction<In, Acc, Out>) -> Self {
        Self::with_codec(name, function, postcard::<Acc>())
    }
}

impl<In, Acc: StateValue, Out> AggregatingStateDescriptor<In, Acc, Out> {
    /// An aggregating state with an accumulator codec of your choosing.
    pub fn with_codec(
        name: impl Into<String>,
        function: impl AggregateFunction<In, Acc, Out>,
        codec: SharedCodec<Acc>,
    ) -> Self {
        AggregatingStateDescriptor {
            base: DescriptorBase::new(name),
            codec,
            function: Arc::new(function),
        }
    }
}
namespace_switch!(AggregatingStateDescriptor<In, Acc, Out> { codec, function });

/// Describes a [`super::access::MapState`].
pub struct MapStateDescriptor<UK, UV, N = VoidNamespace> {
    pub(crate) base: DescriptorBase<N>,
    pub(crate) key_codec: SharedCodec<UK>,
    pub(crate) value_codec: SharedCodec<UV>,
}

impl<UK, UV> MapStateDescriptor<UK, UV>
where
    UK: super::StateKey + Serialize + DeserializeOwned,
    UV: StateValue + Serialize + DeserializeOwned,
{
    /// A map state named `name` with the default codecs.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_codecs(name, postcard::<UK>(), postcard::<UV>())
    }
}

impl<UK, UV> MapStateDescriptor<UK, UV> {
    /// A map state with codecs of your choosing.
    pub fn with_codecs(
        name: impl Into<String>,
        key_codec: SharedCodec<UK>,
        value_codec: SharedCodec<UV>,
    ) -> Self {
        MapStateDescriptor {
            base: DescriptorBase::new(name),
            key_codec,
            value_codec,
        }
    }
}
namespace_switch!(MapStateDescriptor<UK, UV> { key_codec, value_codec });
