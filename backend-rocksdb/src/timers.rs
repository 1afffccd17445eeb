//! Timers in RocksDB: a column family per timer state, ordered by key group
//! and timestamp, with the head (earliest timestamp) of every key group
//! cached in memory, so the next timer is found without a disk read.
//!
//! ```text
//! timer key = key-group prefix | bytes(timestamp) | bytes(key) | namespace
//!             (timestamp: 8 bytes from `state_api::timers::encode_timestamp`)
//! value     = empty
//! ```
//!
//! The key decodes with the generic layout ([`crate::keys::decode`]) as
//! key = timestamp, namespace = key, user key = namespace;
//! [`crate::keys::decode_for`] puts the parts back in their places, so
//! snapshots, export and restore see one map record per timer, as every
//! backend writes them.
//!
//! Each key group's first timers (up to 64) are read ahead into memory,
//! kept in step with additions and deletions: firing takes the head from
//! there, and one seek reads the next batch when they run out. That seek
//! starts from the key last fired there (a *hint*), not from the key
//! group's start, so the tombstones of fired timers are not read again.

use std::collections::{BTreeSet, VecDeque};

use rocksdb::{ReadOptions, WriteBatch};
use state_api::{KeyGroupRange, Result};

use crate::db::rocks_err;
use crate::keys;
use crate::store::RocksStore;

/// Timers of a key group read ahead into memory: firing takes them from
/// here, and one seek reads the next batch.
const READ_AHEAD: usize = 64;

/// The cached first timers of one key group.
#[derive(Default)]
struct Cached {
    /// Its earliest timers in order: (timestamp, RocksDB key).
    keys: VecDeque<(i64, Vec<u8>)>,
    /// Whether `keys` holds every timer of the key group.
    complete: bool,
}

/// The cached heads of one timer state's key groups.
pub(crate) struct TimerHeads {
    range: KeyGroupRange,
    prefix_len: usize,
    /// Per key-group index: its first timers.
    cached: Vec<Cached>,
    /// (head timestamp, key group) of the key groups with timers.
    order: BTreeSet<(i64, u32)>,
    /// Per key-group index: a key at or before its first live timer.
    hints: Vec<Option<Vec<u8>>>,
}

impl TimerHeads {
    /// Reads the first timers of every key group of `range` in column
    /// family `index`.
    pub(crate) fn load(
        store: &RocksStore,
        index: usize,
        range: KeyGroupRange,
        prefix_len: usize,
    ) -> Result<Self> {
        let mut heads = TimerHeads {
            range,
            prefix_len,
            cached: (0..range.len()).map(|_| Cached::default()).collect(),
            order: BTreeSet::new(),
            hints: vec![None; range.len()],
        };
        for kg in range.iter() {
            heads.refill(store, index, kg)?;
        }
        Ok(heads)
    }

    fn slot(&self, kg: u32) -> usize {
        (kg - self.range.start()) as usize
    }

    fn head(&self, i: usize) -> Option<i64> {
        self.cached[i].keys.front().map(|(ts, _)| *ts)
    }

    /// Runs `change` on key group `kg`'s cache and keeps `order` in step.
    fn update(&mut self, kg: u32, change: impl FnOnce(&mut Cached)) {
        let i = self.slot(kg);
        if let Some(old) = self.head(i) {
            self.order.remove(&(old, kg));
        }
        change(&mut self.cached[i]);
        if let Some(new) = self.head(i) {
            self.order.insert((new, kg));
        }
    }

    /// Reads key group `kg`'s first timers (up to [`READ_AHEAD`]) from
    /// RocksDB, from its hint on.
    fn refill(&mut self, store: &RocksStore, index: usize, kg: u32) -> Result<()> {
        let i = self.slot(kg);
        let prefix = keys::prefix(kg, self.prefix_len);
        let mut read = ReadOptions::default();
        if let Some(end) = keys::successor(&prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut it = store.db().raw_iterator_cf_opt(store.cf_at(index), read);
        match &self.hints[i] {
            Some(hint) => it.seek(hint),
            None => it.seek(&prefix),
        }
        let mut fresh = VecDeque::new();
        while let Some(k) = it.key() {
            if fresh.len() == READ_AHEAD {
                break;
            }
            let d = keys::decode(k, self.prefix_len, store.db_name())?;
            let ts = state_api::timers::decode_timestamp(d.key).ok_or_else(|| {
                state_api::Error::Corrupted {
                    file: store.db_name().to_string(),
                    offset: 0,
                    reason: "a timer key without an 8-byte timestamp".into(),
                }
            })?;
            fresh.push_back((ts, k.to_vec()));
            it.next();
        }
        let complete = it.key().is_none();
        it.status()
            .map_err(rocks_err(store.db_name(), "reading timers"))?;
        self.update(kg, |c| {
            c.keys = fresh;
            c.complete = complete;
        });
        Ok(())
    }

    /// Notes a timer added to key group `kg` under `key`.
    pub(crate) fn added(
        &mut self,
        store: &RocksStore,
        index: usize,
        kg: u32,
        ts: i64,
        key: &[u8],
    ) -> Result<()> {
        let i = self.slot(kg);
        if self.hints[i].as_deref().is_some_and(|h| key < h) {
            self.hints[i] = Some(key.to_vec());
        }
        let c = &self.cached[i];
        if c.keys.is_empty() && !c.complete {
            // Not read yet (or emptied by deletes): read it, new key included.
            return self.refill(store, index, kg);
        }
        let below_last = c.keys.back().is_some_and(|(_, last)| key < last.as_slice());
        if below_last || c.complete {
            self.update(kg, |c| {
                let at = c.keys.partition_point(|(_, k)| k.as_slice() < key);
                c.keys.insert(at, (ts, key.to_vec()));
                if c.keys.len() > READ_AHEAD {
                    c.keys.pop_back();
                    c.complete = false;
                }
            });
        }
        Ok(())
    }

    /// Notes a timer removed from key group `kg`.
    pub(crate) fn removed(
        &mut self,
        store: &RocksStore,
        index: usize,
        kg: u32,
        key: &[u8],
    ) -> Result<()> {
        let i = self.slot(kg);
        if let Some(at) = self.cached[i].keys.iter().position(|(_, k)| k == key) {
            self.update(kg, |c| {
                c.keys.remove(at);
            });
            if at == 0 {
                self.hints[i] = Some(key.to_vec());
            }
        }
        let c = &self.cached[i];
        if c.keys.is_empty() && !c.complete {
            self.refill(store, index, kg)?;
        }
        Ok(())
    }

    /// The earliest timestamp over all key groups.
    pub(crate) fn first(&self) -> Option<i64> {
        self.order.first().map(|(ts, _)| *ts)
    }

    /// Deletes and returns the key of the earliest timer if its timestamp is
    /// at most `up_to`, and its key group.
    pub(crate) fn poll(
        &mut self,
        store: &RocksStore,
        index: usize,
        up_to: i64,
    ) -> Result<Option<(u32, Vec<u8>)>> {
        let Some(&(ts, kg)) = self.order.first() else {
            return Ok(None);
        };
        if ts > up_to {
            return Ok(None);
        }
        let i = self.slot(kg);
        let Some((_, key)) = self.cached[i].keys.front().cloned() else {
            return Ok(None);
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(store.cf_at(index), &key);
        store.write_now(batch, "firing a timer")?;
        self.update(kg, |c| {
            c.keys.pop_front();
        });
        self.hints[i] = Some(key.clone());
        let c = &self.cached[i];
        if c.keys.is_empty() && !c.complete {
            self.refill(store, index, kg)?;
        }
        Ok(Some((kg, key)))
    }
}
