//! Low-level handles a backend returns when a state is registered.
//!
//! A handle names one registered state of one backend instance. It is cheap to
//! clone, carries the state's types, and is checked on every use: a handle of
//! another backend instance is an [`crate::Error::ForeignHandle`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Namespace;

/// A process-unique id for a backend instance, used to stamp its handles.
pub fn next_backend_instance_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The untyped part of a handle.
#[derive(Clone, PartialEq, Eq)]
pub struct HandleCore {
    backend: u64,
    index: u32,
    name: Arc<str>,
}

impl HandleCore {
    /// A handle for state number `index` of backend instance `backend`.
    pub fn new(backend: u64, index: u32, name: &str) -> Self {
        HandleCore {
            backend,
            index,
            name: Arc::from(name),
        }
    }

    /// The backend instance that issued the handle.
    pub fn backend(&self) -> u64 {
        self.backend
    }

    /// The state's index in that backend.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for HandleCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' (#{} of backend {})",
            self.name, self.index, self.backend
        )
    }
}

/// Any state handle: exposes its core and namespace type.
pub trait StateHandle {
    /// The namespace type of the state.
    type Namespace: Namespace;
    /// The untyped core.
    fn core(&self) -> &HandleCore;
}

macro_rules! typed_handle {
    ($(#[$doc:meta])* $name:ident < $($p:ident),* >) => {
        $(#[$doc])*
        pub struct $name<N, $($p),*> {
            core: HandleCore,
            _types: PhantomData<fn() -> (N, $($p),*)>,
        }

        impl<N, $($p),*> $name<N, $($p),*> {
            /// Wraps a core; called by backends when a state is registered.
            pub fn new(core: HandleCore) -> Self {
                $name { core, _types: PhantomData }
            }
        }

        impl<N, $($p),*> Clone for $name<N, $($p),*> {
            fn clone(&self) -> Self {
                Self::new(self.core.clone())
            }
        }

        impl<N, $($p),*> fmt::Debug for $name<N, $($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{:?}", stringify!($name), self.core)
            }
        }

        impl<N: Namespace, $($p),*> StateHandle for $name<N, $($p),*> {
            type Namespace = N;
            fn core(&self) -> &HandleCore {
                &self.core
            }
        }
    };
}

typed_handle!(
    /// A state stored as one value `V` per (key, namespace).
    CellHandle<V>
);
typed_handle!(
    /// A state stored as a list of `T` per (key, namespace).
    ListHandle<T>
);
typed_handle!(
    /// A state stored as a map `UK -> UV` per (key, namespace).
    MapHandle<UK, UV>
);
typed_handle!(
    /// The timers of one time domain, stored per key group.
    TimerHandle<>
);
