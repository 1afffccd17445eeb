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
//! backend writes them. Polling the earliest timer of a key group seeks from
//! the key last polled there (a *hint*), not from the key group's start, so
//! the tombstones of fired timers are not read again and again.

use std::collections::BTreeSet;

use rocksdb::{ReadOptions, WriteBatch};
use state_api::{KeyGroupRange, Result};

use crate::db::rocks_err;
use crate::keys;
use crate::store::RocksStore;

/// The cached heads of one timer state's key groups.
pub(crate) struct TimerHeads {
    range: KeyGroupRange,
    prefix_len: usize,
    /// Per key-group index: its earliest timestamp and that timer's key.
    heads: Vec<Option<(i64, Vec<u8>)>>,
    /// (head timestamp, key group) of the key groups with timers.
    order: BTreeSet<(i64, u32)>,
    /// Per key-group index: a key at or before its first live timer.
    hints: Vec<Option<Vec<u8>>>,
}

impl TimerHeads {
    /// Reads the head of every key group of `range` in column family `index`.
    pub(crate) fn load(
        store: &RocksStore,
        index: usize,
        range: KeyGroupRange,
        prefix_len: usize,
    ) -> Result<Self> {
        let mut heads = TimerHeads {
            range,
            prefix_len,
            heads: vec![None; range.len()],
            order: BTreeSet::new(),
            hints: vec![None; range.len()],
        };
        for kg in range.iter() {
            heads.refresh(store, index, kg)?;
        }
        Ok(heads)
    }

    fn slot(&self, kg: u32) -> usize {
        (kg - self.range.start()) as usize
    }

    /// Re-reads the head of key group `kg`.
    fn refresh(&mut self, store: &RocksStore, index: usize, kg: u32) -> Result<()> {
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
        let head = match it.key() {
            Some(k) => {
                let d = keys::decode(k, self.prefix_len, store.db_name())?;
                let ts = state_api::timers::decode_timestamp(d.key).ok_or_else(|| {
                    state_api::Error::Corrupted {
                        file: store.db_name().to_string(),
                        offset: 0,
                        reason: "a timer key without an 8-byte timestamp".into(),
                    }
                })?;
                Some((ts, k.to_vec()))
            }
            None => None,
        };
        it.status()
            .map_err(rocks_err(store.db_name(), "reading timers"))?;
        self.set_head(kg, head);
        Ok(())
    }

    fn set_head(&mut self, kg: u32, head: Option<(i64, Vec<u8>)>) {
        let i = self.slot(kg);
        if let Some((old, _)) = &self.heads[i] {
            self.order.remove(&(*old, kg));
        }
        if let Some((ts, _)) = &head {
            self.order.insert((*ts, kg));
        }
        self.heads[i] = head;
    }

    /// Notes a timer added to key group `kg` under `key`.
    pub(crate) fn added(&mut self, kg: u32, ts: i64, key: &[u8]) {
        let i = self.slot(kg);
        if self.hints[i].as_deref().is_some_and(|h| key < h) {
            self.hints[i] = Some(key.to_vec());
        }
        if self.heads[i]
            .as_ref()
            .is_none_or(|(_, k)| key < k.as_slice())
        {
            self.set_head(kg, Some((ts, key.to_vec())));
        }
    }

    /// Notes a timer removed from key group `kg`: the head is re-read if it
    /// was the head.
    pub(crate) fn removed(
        &mut self,
        store: &RocksStore,
        index: usize,
        kg: u32,
        key: &[u8],
    ) -> Result<()> {
        let i = self.slot(kg);
        if self.heads[i].as_ref().is_some_and(|(_, k)| k == key) {
            self.hints[i] = Some(key.to_vec());
            self.refresh(store, index, kg)?;
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
        let Some((_, key)) = self.heads[i].clone() else {
            return Ok(None);
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(store.cf_at(index), &key);
        store.write_now(batch, "firing a timer")?;
        self.hints[i] = Some(key.clone());
        self.refresh(store, index, kg)?;
        Ok(Some((kg, key)))
    }
}
