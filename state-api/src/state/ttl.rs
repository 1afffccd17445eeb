//! State time-to-live: entries that expire a fixed time after they were last
//! written (or read), and are then hidden and reclaimed.
//!
//! The semantics are those of Flink's `StateTtlConfig`, per state descriptor
//! ([`StateTtlConfig`]), plus an event-time domain Flink does not offer:
//!
//! * **Time to live**: an entry expires when `timestamp + ttl <= now`, where
//!   `timestamp` is the time of its last write ([`TtlUpdateType::OnCreateAndWrite`])
//!   or last read or write ([`TtlUpdateType::OnReadAndWrite`]).
//! * **Granularity**: a value, reducing or aggregating state expires per
//!   (key, namespace); a list per element; a map per user entry.
//! * **Visibility**: [`TtlVisibility::NeverReturnExpired`] hides an expired
//!   entry even if it is still stored (and removes it when it is read);
//!   [`TtlVisibility::ReturnExpiredIfNotCleanedUp`] returns it until cleanup
//!   reclaims it.
//! * **Time domains**: processing time from the backend's [`StateClock`]
//!   (injectable, so tests never sleep), or event time: the watermark the
//!   engine passes to [`StateClock::advance_watermark`].
//! * **Cleanup** ([`TtlCleanup`]) reclaims, not just hides: expired entries
//!   are left out of full snapshots and savepoints; the heap backends check a
//!   bounded number of entries per state access (and optionally per record);
//!   the RocksDB backend drops expired entries in a compaction filter; and
//!   [`crate::KeyedStateBackend::cleanup_expired`] reclaims everything
//!   expired when the engine asks.
//!
//! # Storage
//!
//! A state with TTL stores [`TtlValue`]s: the user value and its timestamp.
//! Its value codec is a [`TtlCodec`], whose bytes are the timestamp (8 bytes,
//! little-endian `i64` milliseconds) followed by the user codec's bytes, and
//! whose schema is the user codec's with the name prefixed by
//! [`TTL_SCHEMA_PREFIX`]. Backends and snapshot writers read the timestamp
//! from the first 8 bytes ([`timestamp_of`]) without knowing the user type.
//! The state's [`StateMeta`](super::StateMeta) records the [`TtlMeta`].
//!
//! # Changing TTL on restore
//!
//! Unlike Flink, TTL may be switched on or off, or its duration changed, for
//! restored state: the codecs decide (see [`compatibility`]).
//! * Enabled now, not before: the old entries are read as written at restore
//!   time (the clock's current time in the state's domain).
//! * Disabled now: the timestamps are dropped.
//! * Another duration: the stored timestamps are last-access times, so the
//!   new duration applies to them at once.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError, CodecSchema, Compatibility, SharedCodec};

/// The prefix of the schema name of a [`TtlCodec`].
pub const TTL_SCHEMA_PREFIX: &str = "ttl:";

/// Bytes of the timestamp that starts every value a [`TtlCodec`] encodes.
pub const TTL_TIMESTAMP_LEN: usize = 8;

/// When an entry's timestamp is refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtlUpdateType {
    /// On creation and on every write.
    OnCreateAndWrite,
    /// On creation, every write and every read.
    OnReadAndWrite,
}

/// Whether an expired entry not yet cleaned up is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtlVisibility {
    /// Never: an expired entry reads as absent (and is removed on that read).
    NeverReturnExpired,
    /// Yes, until cleanup removes it.
    ReturnExpiredIfNotCleanedUp,
}

/// The time an entry's age is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtlTimeDomain {
    /// The processing-time clock of [`StateClock`].
    ProcessingTime,
    /// The watermark of [`StateClock`], advanced by the engine.
    EventTime,
}

/// Incremental cleanup of the heap backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalCleanup {
    /// Entries checked (and removed when expired) per access of the state.
    pub entries_per_access: usize,
    /// Whether a check of that many entries also runs for every record
    /// (every change of the current key).
    pub per_record: bool,
}

/// How expired entries are reclaimed (see the module docs). Every strategy
/// that applies to a backend runs; the others are ignored there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlCleanup {
    /// Leave expired entries out of full snapshots and savepoints (every
    /// backend). Incremental checkpoints are not filtered: they carry files
    /// and changes as they are.
    pub full_snapshot: bool,
    /// Heap backends: check a bounded number of entries per access.
    pub incremental: Option<IncrementalCleanup>,
    /// RocksDB: drop expired entries (and list elements) when compacting.
    pub compaction_filter: bool,
}

impl Default for TtlCleanup {
    /// Every strategy on; incremental cleanup checks 5 entries per access
    /// (Flink's default) and does not run per record.
    fn default() -> Self {
        TtlCleanup {
            full_snapshot: true,
            incremental: Some(IncrementalCleanup {
                entries_per_access: 5,
                per_record: false,
            }),
            compaction_filter: true,
        }
    }
}

/// The time-to-live of a state, set on its descriptor with `with_ttl`.
///
/// ```
/// use std::time::Duration;
/// use state_api::state::descriptor::ValueStateDescriptor;
/// use state_api::state::ttl::{StateTtlConfig, TtlUpdateType};
///
/// let ttl = StateTtlConfig::new(Duration::from_secs(3600))
///     .with_update_type(TtlUpdateType::OnReadAndWrite);
/// let last_seen = ValueStateDescriptor::<u64>::new("last-seen").with_ttl(ttl);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateTtlConfig {
    ttl_millis: u64,
    update_type: TtlUpdateType,
    visibility: TtlVisibility,
    time_domain: TtlTimeDomain,
    cleanup: TtlCleanup,
}

impl StateTtlConfig {
    /// Entries live `ttl` (at least one millisecond) after their last write,
    /// are never returned once expired, in processing time, with every
    /// cleanup strategy on ([`TtlCleanup::default`]).
    pub fn new(ttl: Duration) -> Self {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        StateTtlConfig {
            ttl_millis: millis.min(i64::MAX as u64),
            update_type: TtlUpdateType::OnCreateAndWrite,
            visibility: TtlVisibility::NeverReturnExpired,
            time_domain: TtlTimeDomain::ProcessingTime,
            cleanup: TtlCleanup::default(),
        }
    }

    /// When timestamps are refreshed.
    pub fn with_update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }

    /// Whether expired entries not cleaned up yet are returned.
    pub fn with_visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// The time domain.
    pub fn with_time_domain(mut self, time_domain: TtlTimeDomain) -> Self {
        self.time_domain = time_domain;
        self
    }

    /// The cleanup strategies.
    pub fn with_cleanup(mut self, cleanup: TtlCleanup) -> Self {
        self.cleanup = cleanup;
        self
    }

    /// Incremental cleanup of `entries_per_access` entries per access (and
    /// per record with `per_record`); 0 entries turns it off.
    pub fn with_incremental_cleanup(mut self, entries_per_access: usize, per_record: bool) -> Self {
        self.cleanup.incremental = (entries_per_access > 0).then_some(IncrementalCleanup {
            entries_per_access,
            per_record,
        });
        self
    }

    /// The cleanup strategies.
    pub fn cleanup(&self) -> &TtlCleanup {
        &self.cleanup
    }

    /// What snapshots record.
    pub fn meta(&self) -> TtlMeta {
        TtlMeta {
            ttl_millis: self.ttl_millis,
            update_type: self.update_type,
            visibility: self.visibility,
            time_domain: self.time_domain,
        }
    }
}

/// The part of a state's TTL recorded in snapshots, and all a backend needs
/// to decide whether an entry expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TtlMeta {
    /// Time to live in milliseconds (at least 1, at most `i64::MAX`).
    pub ttl_millis: u64,
    /// When timestamps are refreshed.
    pub update_type: TtlUpdateType,
    /// Whether expired entries not cleaned up are returned.
    pub visibility: TtlVisibility,
    /// The time domain.
    pub time_domain: TtlTimeDomain,
}

impl TtlMeta {
    /// Whether an entry last stamped at `timestamp` expired at `now` (both in
    /// this state's time domain).
    #[inline]
    pub fn is_expired(&self, timestamp: i64, now: i64) -> bool {
        let ttl = i64::try_from(self.ttl_millis).unwrap_or(i64::MAX);
        timestamp.saturating_add(ttl) <= now
    }

    /// Whether an entry expired at the instant `now`.
    #[inline]
    pub fn is_expired_at(&self, timestamp: i64, now: &TtlInstant) -> bool {
        self.is_expired(timestamp, now.get(self.time_domain))
    }

    /// Whether encoded TTL bytes (a [`TtlCodec`] value) expired at `now`;
    /// bytes too short to hold a timestamp are kept (never dropped as expired).
    #[inline]
    pub fn bytes_expired_at(&self, bytes: &[u8], now: &TtlInstant) -> bool {
        timestamp_of(bytes).is_some_and(|t| self.is_expired_at(t, now))
    }
}

/// One reading of a [`StateClock`]: the processing time and the watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlInstant {
    /// Processing time, in milliseconds.
    pub processing_time: i64,
    /// The watermark, in milliseconds (`i64::MIN` before the first).
    pub watermark: i64,
}

impl TtlInstant {
    /// The time in `domain`.
    #[inline]
    pub fn get(&self, domain: TtlTimeDomain) -> i64 {
        match domain {
            TtlTimeDomain::ProcessingTime => self.processing_time,
            TtlTimeDomain::EventTime => self.watermark,
        }
    }
}

enum ProcessingSource {
    System,
    Manual(AtomicI64),
    Custom(Arc<dyn Fn() -> i64 + Send + Sync>),
}

struct ClockInner {
    processing: ProcessingSource,
    watermark: AtomicI64,
}

/// The time a keyed backend's TTL is measured against: a processing-time
/// clock and the event-time watermark. Cloning shares it; the engine keeps a
/// clone to advance the watermark (and, for a manual clock, the time), and
/// the backend's cleanup (a RocksDB compaction on another thread included)
/// reads the same values.
///
/// ```
/// use state_api::state::ttl::StateClock;
///
/// let clock = StateClock::manual(1_000);
/// clock.advance_processing_time(5_000).unwrap();
/// assert_eq!(clock.processing_time(), 5_000);
/// clock.advance_watermark(42);
/// clock.advance_watermark(7); // the watermark never goes back
/// assert_eq!(clock.watermark(), 42);
/// ```
#[derive(Clone)]
pub struct StateClock {
    inner: Arc<ClockInner>,
}

impl Default for StateClock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for StateClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.inner.processing {
            ProcessingSource::System => "system",
            ProcessingSource::Manual(_) => "manual",
            ProcessingSource::Custom(_) => "custom",
        };
        f.debug_struct("StateClock")
            .field("processing", &source)
            .field("processing_time", &self.processing_time())
            .field("watermark", &self.watermark())
            .finish()
    }
}

impl StateClock {
    fn with_source(processing: ProcessingSource) -> Self {
        StateClock {
            inner: Arc::new(ClockInner {
                processing,
                watermark: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Processing time from the system clock (milliseconds since the Unix
    /// epoch); the default.
    pub fn system() -> Self {
        Self::with_source(ProcessingSource::System)
    }

    /// Processing time that moves only when told to
    /// ([`StateClock::advance_processing_time`]), starting at `millis`.
    pub fn manual(millis: i64) -> Self {
        Self::with_source(ProcessingSource::Manual(AtomicI64::new(millis)))
    }

    /// Processing time from a function of yours (milliseconds).
    pub fn custom(now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self::with_source(ProcessingSource::Custom(Arc::new(now)))
    }

    /// The processing time, in milliseconds.
    pub fn processing_time(&self) -> i64 {
        match &self.inner.processing {
            ProcessingSource::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ProcessingSource::Manual(t) => t.load(Ordering::Acquire),
            ProcessingSource::Custom(f) => f(),
        }
    }

    /// Moves a manual clock to `millis` if that is later than its time.
    /// Fails with [`crate::Error::InvalidArgument`] on a system or custom clock.
    pub fn advance_processing_time(&self, millis: i64) -> crate::Result<()> {
        match &self.inner.processing {
            ProcessingSource::Manual(t) => {
                t.fetch_max(millis, Ordering::AcqRel);
                Ok(())
            }
            _ => Err(crate::Error::InvalidArgument {
                what: "only a manual clock's processing time can be advanced".into(),
            }),
        }
    }

    /// The watermark (`i64::MIN` before the first).
    pub fn watermark(&self) -> i64 {
        self.inner.watermark.load(Ordering::Acquire)
    }

    /// Moves the watermark to `millis` if that is later (watermarks never go
    /// back).
    pub fn advance_watermark(&self, millis: i64) {
        self.inner.watermark.fetch_max(millis, Ordering::AcqRel);
    }

    /// The current time in `domain`.
    pub fn now(&self, domain: TtlTimeDomain) -> i64 {
        match domain {
            TtlTimeDomain::ProcessingTime => self.processing_time(),
            TtlTimeDomain::EventTime => self.watermark(),
        }
    }

    /// Both times, read once.
    pub fn instant(&self) -> TtlInstant {
        TtlInstant {
            processing_time: self.processing_time(),
            watermark: self.watermark(),
        }
    }
}

/// A value with the timestamp TTL measures its age from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlValue<V> {
    /// The user value.
    pub value: V,
    /// Its last write (or access) time, in milliseconds of the state's domain.
    pub timestamp: i64,
}

impl<V> TtlValue<V> {
    /// The timestamp of a value (a plain function, for backends).
    pub fn timestamp_of(v: &Self) -> i64 {
        v.timestamp
    }
}

/// The timestamp at the start of a [`TtlCodec`] value's bytes.
#[inline]
pub fn timestamp_of(bytes: &[u8]) -> Option<i64> {
    let head: [u8; TTL_TIMESTAMP_LEN] = bytes.get(..TTL_TIMESTAMP_LEN)?.try_into().ok()?;
    Some(i64::from_le_bytes(head))
}

/// The user codec's schema inside a [`TtlCodec`] schema, or `None` when the
/// schema is not a TTL one.
pub fn inner_schema(schema: &CodecSchema) -> Option<CodecSchema> {
    schema
        .name
        .strip_prefix(TTL_SCHEMA_PREFIX)
        .map(|inner| CodecSchema::new(inner, schema.version))
}

/// The codec of a state with TTL: timestamp, then the user codec's bytes.
pub struct TtlCodec<V> {
    inner: SharedCodec<V>,
    clock: StateClock,
    domain: TtlTimeDomain,
}

impl<V> TtlCodec<V> {
    /// Wraps `inner`; values restored without a timestamp (TTL newly
    /// enabled) are stamped with `clock`'s time in `domain` when read.
    pub fn new(inner: SharedCodec<V>, clock: StateClock, domain: TtlTimeDomain) -> Self {
        TtlCodec {
            inner,
            clock,
            domain,
        }
    }
}

fn split(bytes: &[u8]) -> Result<(i64, &[u8]), CodecError> {
    match timestamp_of(bytes) {
        Some(t) => Ok((t, &bytes[TTL_TIMESTAMP_LEN..])),
        None => Err(CodecError(format!(
            "a TTL value needs an {TTL_TIMESTAMP_LEN}-byte timestamp, found {} bytes",
            bytes.len()
        ))),
    }
}

impl<V: 'static> Codec<TtlValue<V>> for TtlCodec<V> {
    fn schema(&self) -> CodecSchema {
        let inner = self.inner.schema();
        CodecSchema::new(format!("{TTL_SCHEMA_PREFIX}{}", inner.name), inner.version)
    }

    #[inline]
    fn encode(&self, value: &TtlValue<V>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&value.timestamp.to_le_bytes());
        self.inner.encode(&value.value, out)
    }

    #[inline]
    fn decode(&self, bytes: &[u8]) -> Result<TtlValue<V>, CodecError> {
        let (timestamp, rest) = split(bytes)?;
        Ok(TtlValue {
            value: self.inner.decode(rest)?,
            timestamp,
        })
    }

    /// Data written with TTL: as the user codec relates to its schema. Data
    /// written without: after migration, when the user codec reads it.
    fn compatibility(&self, written: &CodecSchema) -> Compatibility {
        match inner_schema(written) {
            Some(inner) => self.inner.compatibility(&inner),
            None => match self.inner.compatibility(written) {
                Compatibility::Incompatible => Compatibility::Incompatible,
                _ => Compatibility::AfterMigration,
            },
        }
    }

    fn decode_written(
        &self,
        written: &CodecSchema,
        bytes: &[u8],
    ) -> Result<TtlValue<V>, CodecError> {
        match inner_schema(written) {
            Some(inner) => {
                let (timestamp, rest) = split(bytes)?;
                Ok(TtlValue {
                    value: self.inner.decode_written(&inner, rest)?,
                    timestamp,
                })
            }
            None => Ok(TtlValue {
                value: self.inner.decode_written(written, bytes)?,
                timestamp: self.clock.now(self.domain),
            }),
        }
    }
}

/// How `codec` relates to data written with `written`, where the data may
/// carry TTL timestamps the codec does not (TTL switched off since): then the
/// user codec's relation to the inner schema, as a migration that drops the
/// timestamps. Backends call this instead of [`Codec::compatibility`] for
/// restored values.
pub fn compatibility<T: 'static>(codec: &dyn Codec<T>, written: &CodecSchema) -> Compatibility {
    match inner_schema(written) {
        Some(inner) if inner_schema(&codec.schema()).is_none() => {
            match codec.compatibility(&inner) {
                Compatibility::Incompatible => Compatibility::Incompatible,
                _ => Compatibility::AfterMigration,
            }
        }
        _ => codec.compatibility(written),
    }
}

/// Decodes restored bytes written with `written` (see [`compatibility`]):
/// TTL timestamps the codec does not expect are dropped.
pub fn decode_written<T: 'static>(
    codec: &dyn Codec<T>,
    written: &CodecSchema,
    bytes: &[u8],
) -> Result<T, CodecError> {
    match inner_schema(written) {
        Some(inner) if inner_schema(&codec.schema()).is_none() => {
            let (_, rest) = split(bytes)?;
            codec.decode_written(&inner, rest)
        }
        _ => codec.decode_written(written, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::postcard;

    #[test]
    fn expiry_is_inclusive_and_saturates() {
        let meta = StateTtlConfig::new(Duration::from_millis(100)).meta();
        assert!(!meta.is_expired(1_000, 1_099));
        assert!(meta.is_expired(1_000, 1_100));
        assert!(!meta.is_expired(i64::MAX - 5, i64::MAX - 1));
        let huge = StateTtlConfig::new(Duration::MAX).meta();
        assert_eq!(huge.ttl_millis, i64::MAX as u64);
        assert!(!huge.is_expired(0, i64::MAX - 1));
    }

    #[test]
    fn ttl_codec_prefixes_the_timestamp() {
        let clock = StateClock::manual(77);
        let codec = TtlCodec::new(postcard::<u32>(), clock, TtlTimeDomain::ProcessingTime);
        let mut bytes = Vec::new();
        codec
            .encode(
                &TtlValue {
                    value: 300,
                    timestamp: -2,
                },
                &mut bytes,
            )
            .expect("encodes");
        assert_eq!(timestamp_of(&bytes), Some(-2));
        assert_eq!(&bytes[8..], &[0xac, 0x02]);
        assert_eq!(
            codec.decode(&bytes),
            Ok(TtlValue {
                value: 300,
                timestamp: -2
            })
        );
        assert!(codec.decode(&bytes[..5]).is_err());
        assert_eq!(
            inner_schema(&codec.schema()),
            Some(postcard::<u32>().schema())
        );
    }

    #[test]
    fn switching_ttl_on_and_off_migrates() {
        let plain = postcard::<u32>();
        let clock = StateClock::manual(500);
        let ttl = TtlCodec::new(plain.clone(), clock, TtlTimeDomain::ProcessingTime);
        let mut old = Vec::new();
        plain.encode(&9, &mut old).expect("encodes");
        // On: stamped at restore time.
        assert_eq!(
            ttl.compatibility(&plain.schema()),
            Compatibility::AfterMigration
        );
        assert_eq!(
            ttl.decode_written(&plain.schema(), &old),
            Ok(TtlValue {
                value: 9,
                timestamp: 500
            })
        );
        // Off: the timestamp is dropped.
        let mut stamped = Vec::new();
        ttl.encode(
            &TtlValue {
                value: 9,
                timestamp: 1,
            },
            &mut stamped,
        )
        .expect("encodes");
        assert_eq!(
            compatibility(&*plain, &ttl.schema()),
            Compatibility::AfterMigration
        );
        assert_eq!(decode_written(&*plain, &ttl.schema(), &stamped), Ok(9));
        // Same TTL: as is; another user type: incompatible either way.
        assert_eq!(compatibility(&ttl, &ttl.schema()), Compatibility::AsIs);
        let other = postcard::<String>();
        assert_eq!(
            compatibility(&*other, &ttl.schema()),
            Compatibility::Incompatible
        );
        assert_eq!(
            ttl.compatibility(&other.schema()),
            Compatibility::Incompatible
        );
    }

    #[test]
    fn clock_moves_forward_only() {
        let clock = StateClock::manual(10);
        clock.advance_processing_time(5).expect("manual");
        assert_eq!(clock.processing_time(), 10);
        assert_eq!(clock.watermark(), i64::MIN);
        clock.advance_watermark(3);
        assert_eq!(clock.instant().get(TtlTimeDomain::EventTime), 3);
        assert!(StateClock::system().advance_processing_time(1).is_err());
        let fixed = StateClock::custom(|| 1234);
        assert_eq!(fixed.now(TtlTimeDomain::ProcessingTime), 1234);
    }
}
