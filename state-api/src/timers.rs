//! Key-grouped timers, like Flink's `InternalTimerService`: event-time and
//! processing-time timers on (key, namespace, timestamp), stored by each
//! keyed backend beside its keyed state, so they are checkpointed (full and
//! incremental), carried by savepoints between backends, and restored at
//! another parallelism with the key groups that own them.
//!
//! A [`TimerService`] registers two timer states with the backend (one per
//! [`TimeDomain`]), named `<name>/event-time` and `<name>/processing-time`.
//! Timers are deduplicated: registering the same (key, namespace,
//! timestamp) twice keeps one. [`TimerService::advance_watermark`] and
//! [`TimerService::advance_processing_time`] fire every due timer in
//! timestamp order (equal timestamps: smaller key group first), with the
//! timer's key set as the backend's current key; a timer registered while
//! firing fires in the same call if it is due.
//!
//! ```
//! # use state_api::timers::TimerService;
//! # use state_api::codec::postcard;
//! # use state_api::state::VoidNamespace;
//! # fn demo<B: state_api::KeyedStateBackend<Key = u64>>(backend: &mut B) -> state_api::Result<()> {
//! let timers = TimerService::new(backend, "window", postcard::<VoidNamespace>())?;
//! backend.set_current_key(7)?;
//! timers.register_event_time_timer(backend, &VoidNamespace, 1_000)?;
//! let mut fired = Vec::new();
//! timers.advance_watermark(backend, 1_000, |backend, timer| {
//!     assert_eq!(backend.current_key(), Some(&timer.key));
//!     fired.push((timer.key, timer.timestamp));
//!     Ok(())
//! })?;
//! assert_eq!(fired, vec![(7, 1_000)]);
//! # Ok(()) }
//! ```
//!
//! # In snapshots
//!
//! A timer state has [`StateKind::Timers`] and the map storage shape: one
//! map record per timer, whose user key is the timestamp as 8 big-endian
//! bytes of `timestamp ^ i64::MIN` (so byte order is time order) and whose
//! user value is empty ([`encode_timestamp`]).

use crate::backend::keyed::KeyedStateBackend;
use crate::codec::{CodecSchema, SharedCodec};
use crate::error::Result;
use crate::state::{Namespace, StateKind, StateMeta};

/// The schema of a timer record's user key (its timestamp).
pub const TIMESTAMP_SCHEMA: &str = "timer-timestamp";
/// The schema of a timer record's user value (empty).
pub const UNIT_SCHEMA: &str = "unit";

/// The time a timer fires in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Against the watermark.
    EventTime,
    /// Against processing time the engine passes in.
    ProcessingTime,
}

impl TimeDomain {
    fn suffix(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "event-time",
            TimeDomain::ProcessingTime => "processing-time",
        }
    }
}

/// A timer: fires at `timestamp` for (`key`, `namespace`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timer<K, N> {
    /// When it fires (milliseconds).
    pub timestamp: i64,
    /// The key it fires for.
    pub key: K,
    /// The namespace (a window, say).
    pub namespace: N,
}

/// What registering a timer state needs.
pub struct TimerSpec<N> {
    /// The state's meta (kind [`StateKind::Timers`]).
    pub meta: StateMeta,
    /// The namespace codec.
    pub namespace_codec: SharedCodec<N>,
}

/// The 8 bytes of a timestamp in a timer record: big-endian, sign bit
/// flipped, so the bytes sort as the timestamps do.
#[inline]
pub fn encode_timestamp(timestamp: i64) -> [u8; 8] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// The timestamp of [`encode_timestamp`]'s bytes, if they are 8.
#[inline]
pub fn decode_timestamp(bytes: &[u8]) -> Option<i64> {
    let b: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// The meta of a timer state named `name` with namespaces of `namespace`.
pub fn timer_meta(name: &str, namespace: CodecSchema) -> StateMeta {
    StateMeta {
        name: name.to_string(),
        kind: StateKind::Timers,
        namespace,
        values: vec![
            CodecSchema::new(TIMESTAMP_SCHEMA, 1),
            CodecSchema::new(UNIT_SCHEMA, 1),
        ],
        ttl: None,
    }
}

/// The timers of one operator: event-time and processing-time timers on
/// (current key, namespace, timestamp). See the module docs.
pub struct TimerService<N> {
    event: crate::state::handle::TimerHandle<N>,
    processing: crate::state::handle::TimerHandle<N>,
}

impl<N: Namespace> TimerService<N> {
    /// Registers (or gets) the timer service `name` of `backend`, restoring
    /// its timers of the backend's key groups.
    pub fn new<B: KeyedStateBackend>(
        backend: &mut B,
        name: &str,
        namespace_codec: SharedCodec<N>,
    ) -> Result<Self> {
        let mut register = |domain: TimeDomain| {
            let state = format!("{name}/{}", domain.suffix());
            backend.register_timers(TimerSpec {
                meta: timer_meta(&state, namespace_codec.schema()),
                namespace_codec: namespace_codec.clone(),
            })
        };
        let event = register(TimeDomain::EventTime)?;
        let processing = register(TimeDomain::ProcessingTime)?;
        Ok(TimerService { event, processing })
    }

    fn handle(&self, domain: TimeDomain) -> &crate::state::handle::TimerHandle<N> {
        match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        }
    }

    /// Registers a timer for the current key; false when it was registered
    /// already.
    pub fn register<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        backend.timer_add(self.handle(domain), namespace, timestamp)
    }

    /// Deletes a timer of the current key; false when there was none.
    pub fn delete<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        backend.timer_remove(self.handle(domain), namespace, timestamp)
    }

    /// Registers an event-time timer for the current key.
    pub fn register_event_time_timer<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.register(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.delete(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// Registers a processing-time timer for the current key.
    pub fn register_processing_time_timer<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.register(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.delete(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// The earliest timer of `domain`, if any.
    pub fn next_timer<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
    ) -> Result<Option<i64>> {
        backend.timer_peek(self.handle(domain))
    }

    /// Advances the backend clock's watermark to `watermark` (event-time
    /// TTL sees it too) and fires every event-time timer at or before it.
    /// Returns how many fired.
    pub fn advance_watermark<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        watermark: i64,
        on_timer: impl FnMut(&mut B, &Timer<B::Key, N>) -> Result<()>,
    ) -> Result<usize> {
        backend.clock().advance_watermark(watermark);
        self.fire(backend, TimeDomain::EventTime, watermark, on_timer)
    }

    /// Fires every processing-time timer at or before `time`. Returns how
    /// many fired.
    pub fn advance_processing_time<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        time: i64,
        on_timer: impl FnMut(&mut B, &Timer<B::Key, N>) -> Result<()>,
    ) -> Result<usize> {
        self.fire(backend, TimeDomain::ProcessingTime, time, on_timer)
    }

    fn fire<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        up_to: i64,
        mut on_timer: impl FnMut(&mut B, &Timer<B::Key, N>) -> Result<()>,
    ) -> Result<usize> {
        let handle = self.handle(domain);
        let mut fired = 0;
        while let Some(timer) = backend.timer_poll(handle, up_to)? {
            backend.set_current_key(timer.key.clone())?;
            on_timer(backend, &timer)?;
            fired += 1;
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_bytes_sort_as_timestamps() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(encode_timestamp(w[0]) < encode_timestamp(w[1]));
        }
        for t in ts {
            assert_eq!(decode_timestamp(&encode_timestamp(t)), Some(t));
        }
        assert_eq!(decode_timestamp(&[1, 2]), None);
    }
}
