//! Upper bounds of list sizes, so that an append is checked against
//! [`crate::RocksOptions::max_value_bytes`] without reading the list back.
//!
//! Lists are appended with merges, which never read. Checking the size of
//! the merged list by reading it would cost a lookup per append (it made
//! appends three times slower than raw merges). Instead each list key hashes
//! to one of [`BUCKETS`] buckets holding an upper bound of the size of every
//! list in it:
//!
//! * an append of `n` bytes to a list whose bucket bound `b` has
//!   `b + n <= limit` is accepted without a read, and the bound becomes
//!   `b + n` (still a bound of every list in the bucket);
//! * otherwise the list's size is read, and the append is refused if the
//!   merged list would pass the limit. Near the limit this is the exact
//!   check of a read per append, as before;
//! * a list written whole raises its bucket to its size.
//!
//! Bounds never go down (a cleared list may share its bucket with a long
//! one), so they grow with the bytes appended: `limit × BUCKETS` bytes
//! (32 TiB at the default limit) before a bucket needs reads. The largest
//! bound is carried by every incremental checkpoint (a small private file,
//! [`BOUND_FILE`]) and restored with it; a restore that re-inserts records
//! (canonical snapshots, savepoints) computes the exact largest list instead,
//! which resets the growth.

use std::hash::BuildHasher;
use std::path::Path;

use state_api::{Error, Result};

/// Number of buckets (64 KiB of bounds per instance, allocated with the
/// first list written).
pub(crate) const BUCKETS: usize = 16 * 1024;

/// The private file of an incremental checkpoint holding the largest bound
/// at its barrier, as 8 little-endian bytes.
pub(crate) const BOUND_FILE: &str = "FLOWSTATE-LIST-BOUND";

/// Upper bounds of list sizes by bucket (see the module documentation).
pub(crate) struct ListBounds {
    /// Every bucket's bound until the first write.
    initial: u64,
    buckets: Vec<u64>,
    hasher: foldhash::fast::FixedState,
}

impl ListBounds {
    /// Bounds where every list holds at most `initial` bytes.
    pub(crate) fn new(initial: u64) -> Self {
        ListBounds {
            initial,
            buckets: Vec::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x6c69_7374_626e_6473),
        }
    }

    #[inline]
    fn bucket(&mut self, key: &[u8]) -> &mut u64 {
        if self.buckets.is_empty() {
            self.buckets = vec![self.initial; BUCKETS];
        }
        let i = (self.hasher.hash_one(key) as usize) & (BUCKETS - 1);
        &mut self.buckets[i]
    }

    /// Whether appending `added` bytes to the list at `key` surely keeps it
    /// within `limit`; if so the append is recorded. False means the list's
    /// size must be read to decide.
    #[inline]
    pub(crate) fn admit(&mut self, key: &[u8], added: usize, limit: usize) -> bool {
        let bound = self.bucket(key);
        let after = bound.saturating_add(added as u64);
        if after <= limit as u64 {
            *bound = after;
            true
        } else {
            false
        }
    }

    /// Records that the list at `key` holds `size` bytes.
    #[inline]
    pub(crate) fn record(&mut self, key: &[u8], size: usize) {
        let bound = self.bucket(key);
        *bound = (*bound).max(size as u64);
    }

    /// Raises every bound to at least `size` (after values were rewritten).
    pub(crate) fn raise_all(&mut self, size: u64) {
        self.initial = self.initial.max(size);
        for bound in &mut self.buckets {
            *bound = (*bound).max(size);
        }
    }

    /// The largest bound: no list is larger.
    pub(crate) fn max(&self) -> u64 {
        self.buckets.iter().copied().max().unwrap_or(self.initial)
    }
}

/// Writes `bound` as [`BOUND_FILE`] into a checkpoint's folder.
pub(crate) fn write_file(dir: &Path, bound: u64) -> Result<()> {
    let path = dir.join(BOUND_FILE);
    std::fs::write(&path, bound.to_le_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Reads the bound a restored checkpoint's folder carries and removes the
/// file (it is not RocksDB's); `None` when it has none (written before
/// bounds were kept).
pub(crate) fn take_file(dir: &Path) -> Result<Option<u64>> {
    let bound = read_file(dir)?;
    if bound.is_some() {
        let path = dir.join(BOUND_FILE);
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    Ok(bound)
}

fn read_file(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(BOUND_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| Error::Corrupted {
                file: path.display().to_string(),
                offset: 0,
                reason: format!("{} bytes, expected 8", bytes.len()),
            })?;
            Ok(Some(u64::from_le_bytes(array)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_admitted_while_the_bound_stays_under_the_limit() {
        let mut b = ListBounds::new(0);
        assert_eq!(b.max(), 0);
        for _ in 0..10 {
            assert!(b.admit(b"k", 10, 100));
        }
        assert!(!b.admit(b"k", 1, 100), "101 bytes might pass the limit");
        assert_eq!(b.max(), 100, "a refused append records nothing");
        b.record(b"other", 250);
        assert_eq!(b.max(), 250);
    }

    #[test]
    fn every_bucket_starts_at_the_restored_bound() {
        let mut b = ListBounds::new(90);
        assert_eq!(b.max(), 90);
        assert!(b.admit(b"a", 10, 100));
        assert!(!b.admit(b"z", 11, 100));
        assert_eq!(b.max(), 100);
    }

    #[test]
    fn the_bound_file_round_trips_and_a_damaged_one_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_file(dir.path()).expect("read"), None);
        write_file(dir.path(), 1 << 40).expect("write");
        assert_eq!(read_file(dir.path()).expect("read"), Some(1 << 40));
        std::fs::write(dir.path().join(BOUND_FILE), b"short").expect("write");
        let err = read_file(dir.path()).expect_err("damaged");
        assert_eq!(err.kind(), state_api::ErrorKind::Corruption);
    }
}
