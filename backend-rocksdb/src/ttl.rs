//! State time-to-live in RocksDB: a compaction filter per column family that
//! drops expired entries while RocksDB compacts, and the exact purge behind
//! [`state_api::KeyedStateBackend::cleanup_expired`].
//!
//! The values of a state with TTL start with their timestamp
//! ([`state_api::state::ttl`]): a cell's value and a map entry's user value
//! are dropped whole once expired. A list's value holds its elements, each
//! with its own timestamp: the filter drops a list once every element
//! expired. It cannot trim a list in place (the Rust binding's filter can
//! only replace a value with bytes that live forever), so partly expired
//! lists are trimmed when read, when a full snapshot or savepoint is
//! written, and by `cleanup_expired`, which rewrites them.
//!
//! Every column family of an instance gets a filter when it is opened or
//! created; it keeps everything until its state is registered with a TTL
//! whose cleanup asks for the filter ([`TtlFilters::enable`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rocksdb::compaction_filter::Decision;
use rocksdb::Options;
use state_api::format::bytes::{put_bytes, ByteReader};
use state_api::state::ttl::{StateClock, TtlInstant, TtlMeta};
use state_api::state::StorageShape;

/// What the filter of one column family checks.
#[derive(Clone, Copy, Debug)]
struct FilterState {
    meta: TtlMeta,
    shape: StorageShape,
}

/// The compaction filters of one RocksDB instance's column families.
pub(crate) struct TtlFilters {
    clock: StateClock,
    slots: Mutex<HashMap<String, Arc<OnceLock<FilterState>>>>,
    /// Entries (whole lists) the filters dropped.
    removed: Arc<AtomicU64>,
}

impl TtlFilters {
    pub(crate) fn new(clock: StateClock) -> Arc<Self> {
        Arc::new(TtlFilters {
            clock,
            slots: Mutex::default(),
            removed: Arc::default(),
        })
    }

    fn slot(&self, cf: &str) -> Arc<OnceLock<FilterState>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(cf.to_string()).or_default().clone()
    }

    /// Installs the (inactive) filter of column family `cf` in its options.
    pub(crate) fn install(&self, options: &mut Options, cf: &str) {
        let slot = self.slot(cf);
        let clock = self.clock.clone();
        let removed = self.removed.clone();
        options.set_compaction_filter("flowstate-ttl", move |_level, _key, value| {
            let Some(state) = slot.get() else {
                return Decision::Keep;
            };
            if expired_whole(state, value, &clock.instant()) {
                removed.fetch_add(1, Ordering::Relaxed);
                Decision::Remove
            } else {
                Decision::Keep
            }
        });
    }

    /// Turns on the filter of column family `cf` for a state with TTL `meta`
    /// (for the life of the instance).
    pub(crate) fn enable(&self, cf: &str, meta: TtlMeta, shape: StorageShape) {
        let _ = self.slot(cf).set(FilterState { meta, shape });
    }

    /// Entries the filters dropped so far.
    pub(crate) fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }
}

/// Whether a stored value expired entirely: a cell or map entry whose
/// timestamp expired, a list all of whose elements did.
fn expired_whole(state: &FilterState, value: &[u8], now: &TtlInstant) -> bool {
    match state.shape {
        StorageShape::Cell | StorageShape::Map => state.meta.bytes_expired_at(value, now),
        StorageShape::List => {
            let mut r = ByteReader::new(value, "list", 0);
            let mut any = false;
            while !r.is_empty() {
                match r.bytes() {
                    Ok(e) if state.meta.bytes_expired_at(e, now) => any = true,
                    // A live element, or bytes that do not parse: keep.
                    _ => return false,
                }
            }
            any
        }
    }
}

/// What purging a stored value at `now` does: `None` keeps it, `Some(None)`
/// deletes it, `Some(Some(bytes))` replaces it (a list with its live
/// elements). The second value counts the entries or elements removed.
pub(crate) fn purge(
    meta: TtlMeta,
    shape: StorageShape,
    value: &[u8],
    now: &TtlInstant,
    db: &str,
) -> state_api::Result<(Option<Option<Vec<u8>>>, u64)> {
    match shape {
        StorageShape::Cell | StorageShape::Map => Ok(if meta.bytes_expired_at(value, now) {
            (Some(None), 1)
        } else {
            (None, 0)
        }),
        StorageShape::List => {
            let mut r = ByteReader::new(value, db, 0);
            let mut kept = Vec::new();
            let mut gone = 0;
            while !r.is_empty() {
                let e = r.bytes()?;
                if meta.bytes_expired_at(e, now) {
                    gone += 1;
                } else {
                    put_bytes(&mut kept, e);
                }
            }
            Ok(match (gone, kept.is_empty()) {
                (0, _) => (None, 0),
                (n, true) => (Some(None), n),
                (n, false) => (Some(Some(kept)), n),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::state::ttl::{TtlTimeDomain, TtlUpdateType, TtlVisibility};

    fn meta() -> TtlMeta {
        TtlMeta {
            ttl_millis: 10,
            update_type: TtlUpdateType::OnCreateAndWrite,
            visibility: TtlVisibility::NeverReturnExpired,
            time_domain: TtlTimeDomain::ProcessingTime,
        }
    }

    fn stamped(ts: i64) -> Vec<u8> {
        let mut v = ts.to_le_bytes().to_vec();
        v.push(7);
        v
    }

    fn list(stamps: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &t in stamps {
            put_bytes(&mut out, &stamped(t));
        }
        out
    }

    #[test]
    fn whole_values_and_lists() {
        let now = TtlInstant {
            processing_time: 100,
            watermark: i64::MIN,
        };
        let cell = FilterState {
            meta: meta(),
            shape: StorageShape::Cell,
        };
        assert!(expired_whole(&cell, &stamped(90), &now));
        assert!(!expired_whole(&cell, &stamped(91), &now));
        let l = FilterState {
            meta: meta(),
            shape: StorageShape::List,
        };
        assert!(expired_whole(&l, &list(&[1, 2, 90]), &now));
        assert!(!expired_whole(&l, &list(&[1, 95]), &now));
        assert!(!expired_whole(&l, &[], &now));
        let (action, n) =
            purge(meta(), StorageShape::List, &list(&[1, 95, 2]), &now, "db").expect("parses");
        assert_eq!(n, 2);
        assert_eq!(action, Some(Some(list(&[95]))));
        let (action, n) =
            purge(meta(), StorageShape::List, &list(&[95]), &now, "db").expect("parses");
        assert_eq!((action, n), (None, 0));
        let (action, n) =
            purge(meta(), StorageShape::Map, &stamped(1), &now, "db").expect("parses");
        assert_eq!((action, n), (Some(None), 1));
    }
}
