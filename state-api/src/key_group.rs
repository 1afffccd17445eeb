//! Key groups: the unit in which keyed state is partitioned and moved on rescale.
//!
//! The assignment of a key to a key group is part of the persisted format: it is
//! recorded (through the max parallelism and the key codec's schema) in every
//! snapshot and pinned by golden vectors in `testdata/key_groups_v1.txt`.
//!
//! ```text
//! key_group(key) = murmur_fmix(murmur3_32(canonical_bytes(key), seed 0)) % max_parallelism
//! ```
//!
//! * `canonical_bytes(key)` is the output of the backend's key codec.
//! * `murmur3_32` is MurmurHash3 x86 32-bit with seed 0 over those bytes.
//! * `murmur_fmix` is Apache Flink's `MathUtils.murmurHash(int)`: one MurmurHash3
//!   block round of the 32-bit input, the finalisation mix, and a mapping of the
//!   result into the non-negative `i32` range.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Smallest allowed max parallelism.
pub const MIN_MAX_PARALLELISM: u32 = 1;
/// Largest allowed max parallelism (`2^15`).
pub const MAX_MAX_PARALLELISM: u32 = 1 << 15;
/// Lower clamp of the default max parallelism.
pub const DEFAULT_LOWER_MAX_PARALLELISM: u32 = 128;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// MurmurHash3 x86 32-bit of `data` with `seed`.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        h ^= mix_k(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        h ^= mix_k(k);
    }
    h ^= data.len() as u32;
    fmix32(h)
}

fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Flink's `MathUtils.murmurHash(int)`: scrambles a 32-bit hash and returns a
/// non-negative value (as an `i32` would be).
pub fn murmur_fmix(code: u32) -> u32 {
    let mut h = mix_k(code);
    h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    h ^= 4;
    let h = fmix32(h) as i32;
    if h >= 0 {
        h as u32
    } else if h != i32::MIN {
        (-h) as u32
    } else {
        0
    }
}

/// The fixed hash of a key's canonical bytes.
pub fn key_hash(canonical_key_bytes: &[u8]) -> u32 {
    murmur3_32(canonical_key_bytes, 0)
}

/// Checks that a max parallelism is within `1..=32768`.
pub fn check_max_parallelism(max_parallelism: u32) -> Result<()> {
    if (MIN_MAX_PARALLELISM..=MAX_MAX_PARALLELISM).contains(&max_parallelism) {
        Ok(())
    } else {
        Err(Error::InvalidMaxParallelism {
            value: max_parallelism,
            max: MAX_MAX_PARALLELISM,
        })
    }
}

/// Checks that `1 <= parallelism <= max_parallelism` and that max parallelism is valid.
pub fn check_parallelism(parallelism: u32, max_parallelism: u32) -> Result<()> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(Error::InvalidParallelism {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

/// The key group of a key, given its canonical bytes.
///
/// `max_parallelism` must be valid (see [`check_max_parallelism`]); with zero
/// this returns an error instead of dividing by zero.
pub fn key_group_for_bytes(canonical_key_bytes: &[u8], max_parallelism: u32) -> Result<u32> {
    check_max_parallelism(max_parallelism)?;
    Ok(key_group_for_hash(
        key_hash(canonical_key_bytes),
        max_parallelism,
    ))
}

/// The key group of a key hash. `max_parallelism` must be non-zero.
#[inline]
pub fn key_group_for_hash(hash: u32, max_parallelism: u32) -> u32 {
    murmur_fmix(hash) % max_parallelism
}

/// Encodes `key` with `codec` into `buf` (cleared first) and returns its key
/// group and the group's position in `range`; a key of another subtask's
/// key group is a [`Error::KeyGroupOutOfRange`]. What every keyed backend does
/// when the current key is set.
#[inline]
pub fn locate_key<K: 'static>(
    codec: &dyn crate::codec::Codec<K>,
    key: &K,
    buf: &mut Vec<u8>,
    max_parallelism: u32,
    range: &KeyGroupRange,
) -> Result<(u32, usize)> {
    buf.clear();
    codec
        .encode(key, buf)
        .map_err(|e| crate::error::codec_error("<key>", "key", e))?;
    let group = key_group_for_hash(key_hash(buf), max_parallelism);
    let index = range.index_of(group).ok_or(Error::KeyGroupOutOfRange {
        key_group: group,
        range: *range,
    })?;
    Ok((group, index))
}

/// The index of the operator (subtask) that owns `key_group` at `parallelism`.
pub fn operator_index_for_key_group(
    key_group: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> Result<u32> {
    check_parallelism(parallelism, max_parallelism)?;
    if key_group >= max_parallelism {
        return Err(Error::KeyGroupOutOfRange {
            key_group,
            range: KeyGroupRange::all(max_parallelism),
        });
    }
    Ok((u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32)
}

/// The default max parallelism for a parallelism:
/// `clamp(next_power_of_two(p + p / 2), 128, 32768)`.
pub fn default_max_parallelism(parallelism: u32) -> Result<u32> {
    if parallelism == 0 || parallelism > MAX_MAX_PARALLELISM {
        return Err(Error::InvalidParallelism {
            parallelism,
            max_parallelism: MAX_MAX_PARALLELISM,
        });
    }
    let wanted = u64::from(parallelism) + u64::from(parallelism / 2);
    let pow2 = wanted.next_power_of_two();
    Ok(pow2.clamp(
        u64::from(DEFAULT_LOWER_MAX_PARALLELISM),
        u64::from(MAX_MAX_PARALLELISM),
    ) as u32)
}

/// An inclusive range of key groups `start..=end`, possibly empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    start: u32,
    /// One past the last key group (exclusive), so that an empty range is representable.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The range `start..=end`. `end < start` gives the empty range.
    pub fn new(start: u32, end: u32) -> Self {
        if end < start {
            Self::EMPTY
        } else {
            KeyGroupRange {
                start,
                end_exclusive: end + 1,
            }
        }
    }

    /// The empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange {
        start: 0,
        end_exclusive: 0,
    };

    /// Every key group of `max_parallelism`.
    pub fn all(max_parallelism: u32) -> Self {
        KeyGroupRange {
            start: 0,
            end_exclusive: max_parallelism,
        }
    }

    /// The range of operator `index` of `parallelism`:
    /// `start = ceil(i * maxP / p)`, `end = ((i + 1) * maxP - 1) / p`, in 64-bit.
    pub fn for_operator(max_parallelism: u32, parallelism: u32, index: u32) -> Result<Self> {
        check_parallelism(parallelism, max_parallelism)?;
        if index >= parallelism {
            return Err(Error::InvalidOperatorIndex { index, parallelism });
        }
        let (m, p, i) = (
            u64::from(max_parallelism),
            u64::from(parallelism),
            u64::from(index),
        );
        let start = (i * m).div_ceil(p);
        let end = ((i + 1) * m - 1) / p;
        Ok(KeyGroupRange::new(start as u32, end as u32))
    }

    /// First key group (meaningless for an empty range).
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last key group, inclusive; `None` for an empty range.
    pub fn end(&self) -> Option<u32> {
        self.end_exclusive
            .checked_sub(1)
            .filter(|_| !self.is_empty())
    }

    /// One past the last key group.
    pub fn end_exclusive(&self) -> u32 {
        self.end_exclusive
    }

    /// Number of key groups.
    pub fn len(&self) -> usize {
        self.end_exclusive.saturating_sub(self.start) as usize
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.end_exclusive <= self.start
    }

    /// Whether `key_group` is in the range.
    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end_exclusive
    }

    /// The position of `key_group` inside the range, if it is in it.
    #[inline]
    pub fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group)
            .then(|| (key_group - self.start) as usize)
    }

    /// The key groups both ranges hold.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if end_exclusive <= start {
            Self::EMPTY
        } else {
            KeyGroupRange {
                start,
                end_exclusive,
            }
        }
    }

    /// Iterates the key groups in order.
    pub fn iter(&self) -> std::ops::Range<u32> {
        self.start..self.end_exclusive.max(self.start)
    }

    /// Checks that the range lies inside `0..max_parallelism`.
    pub fn check_within(&self, max_parallelism: u32) -> Result<()> {
        check_max_parallelism(max_parallelism)?;
        if self.end_exclusive > max_parallelism {
            return Err(Error::InvalidKeyGroupRange {
                range: *self,
                max_parallelism,
            });
        }
        Ok(())
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(f, "[{}, {}]", self.start, end),
            None => f.write_str("[]"),
        }
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyGroupRange{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_known_answers() {
        // Reference values of MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn murmur_fmix_matches_flink() {
        // Flink's MathUtils.murmurHash(int), evaluated by an independent
        // implementation of its published code.
        assert_eq!(murmur_fmix(0), 593_689_054);
        assert_eq!(murmur_fmix(1), 68_075_478);
        assert_eq!(murmur_fmix(42), 1_134_849_565);
        assert_eq!(murmur_fmix(u32::MAX), 1_982_413_648);
        assert_eq!(murmur_fmix(0x8000_0000), 1_718_298_732);
        assert_eq!(murmur_fmix(123_456_789), 1_088_346_449);
        for code in [0u32, 1, 42, u32::MAX, 0x8000_0000] {
            assert!(murmur_fmix(code) <= i32::MAX as u32);
        }
    }

    #[test]
    fn default_max_parallelism_follows_formula() {
        assert_eq!(default_max_parallelism(1).ok(), Some(128));
        assert_eq!(default_max_parallelism(85).ok(), Some(128));
        assert_eq!(default_max_parallelism(86).ok(), Some(256));
        assert_eq!(default_max_parallelism(1000).ok(), Some(2048));
        assert_eq!(default_max_parallelism(32768).ok(), Some(32768));
        assert!(default_max_parallelism(0).is_err());
        assert!(default_max_parallelism(32769).is_err());
    }

    #[test]
    fn operator_ranges_partition_all_key_groups() {
        for &max_p in &[1u32, 7, 128, 1000, 32768] {
            for &p in &[1u32, 2, 3, 7, 15, 77, 128] {
                if p > max_p {
                    assert!(KeyGroupRange::for_operator(max_p, p, 0).is_err());
                    continue;
                }
                let mut next = 0;
                for i in 0..p {
                    let r = KeyGroupRange::for_operator(max_p, p, i).expect("valid");
                    assert_eq!(r.start(), next, "max_p {max_p} p {p} i {i}");
                    for kg in r.iter() {
                        assert_eq!(operator_index_for_key_group(kg, p, max_p).ok(), Some(i));
                    }
                    next = r.end_exclusive();
                }
                assert_eq!(next, max_p);
            }
        }
    }

    #[test]
    fn bounds_are_errors_not_panics() {
        assert!(key_group_for_bytes(b"x", 0).is_err());
        assert!(key_group_for_bytes(b"x", 32769).is_err());
        assert!(KeyGroupRange::for_operator(128, 0, 0).is_err());
        assert!(KeyGroupRange::for_operator(128, 4, 4).is_err());
        assert!(operator_index_for_key_group(128, 4, 128).is_err());
        assert!(KeyGroupRange::new(0, 200).check_within(128).is_err());
    }

    #[test]
    fn range_set_operations() {
        let a = KeyGroupRange::new(0, 9);
        let b = KeyGroupRange::new(5, 20);
        assert_eq!(a.intersection(&b), KeyGroupRange::new(5, 9));
        assert!(a.intersection(&KeyGroupRange::new(10, 11)).is_empty());
        assert_eq!(KeyGroupRange::EMPTY.len(), 0);
        assert_eq!(KeyGroupRange::EMPTY.end(), None);
        assert_eq!(a.index_of(3), Some(3));
        assert_eq!(b.index_of(3), None);
    }
}
