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
#[inline]
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        h = round(
            h,
            u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
        );
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

/// MurmurHash3 x86 32-bit with seed 0 of the first `len` (1 to 4)
/// little-endian bytes of `word`.
#[inline(always)]
pub(crate) fn murmur3_32_word(word: u32, len: u32) -> u32 {
    debug_assert!((1..=4).contains(&len));
    let h = if len == 4 {
        round(0, word)
    } else {
        mix_k(word)
    };
    fmix32(h ^ len)
}

/// MurmurHash3 x86 32-bit with seed 0 of the first `len` (at most 16)
/// little-endian bytes of `bytes`: [`murmur3_32`] for short keys held in
/// registers, with no slice and no byte loop.
#[inline]
pub(crate) fn murmur3_32_words(bytes: u128, len: u32) -> u32 {
    debug_assert!(len <= 16);
    let mut h = 0u32;
    let blocks = len / 4;
    for i in 0..blocks {
        h = round(h, (bytes >> (32 * i)) as u32);
    }
    let tail = len % 4;
    if tail != 0 {
        let k = ((bytes >> (32 * blocks)) as u32) & (u32::MAX >> (32 - 8 * tail));
        h ^= mix_k(k);
    }
    fmix32(h ^ len)
}

/// One block round of MurmurHash3 x86 32-bit: mixes block `k` into `h`.
#[inline(always)]
fn round(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline(always)]
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
#[inline]
pub fn murmur_fmix(code: u32) -> u32 {
    let h = round(0, code) ^ 4;
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
#[inline]
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
///
/// Like every function here taking both, max parallelism comes first (as in
/// Flink's `KeyGroupRangeAssignment`).
pub fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<()> {
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

/// Maps key hashes to the key groups of one max parallelism, with the
/// division precomputed (a multiply and a shift instead of a hardware
/// division, Lemire's exact "fastmod"; the same result as
/// [`key_group_for_hash`] for every hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupMapper {
    max_parallelism: u32,
    magic: u64,
}

impl KeyGroupMapper {
    /// The mapper for `max_parallelism` (checked with [`check_max_parallelism`]).
    pub fn new(max_parallelism: u32) -> Result<Self> {
        check_max_parallelism(max_parallelism)?;
        Ok(KeyGroupMapper {
            max_parallelism,
            magic: (u64::MAX / u64::from(max_parallelism)).wrapping_add(1),
        })
    }

    /// The max parallelism.
    #[inline]
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key group of a key hash ([`key_group_for_hash`]).
    #[inline(always)]
    pub fn key_group_for_hash(&self, hash: u32) -> u32 {
        let low = self.magic.wrapping_mul(u64::from(murmur_fmix(hash)));
        ((u128::from(low) * u128::from(self.max_parallelism)) >> 64) as u32
    }
}

/// What a keyed backend needs to place its current key: the key codec (and
/// its plain hash function when it has one, see
/// [`Codec::key_hasher`](crate::codec::Codec::key_hasher)), the key-group
/// mapper and the backend's range.
pub struct KeyLocator<K> {
    codec: crate::codec::SharedCodec<K>,
    hasher: Option<fn(&K) -> u32>,
    mapper: KeyGroupMapper,
    range: KeyGroupRange,
    scratch: Vec<u8>,
}

impl<K: 'static> KeyLocator<K> {
    /// A locator for keys encoded with `codec`, owned by a backend of
    /// `range` at `max_parallelism`.
    pub fn new(
        codec: crate::codec::SharedCodec<K>,
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> Result<Self> {
        range.check_within(max_parallelism)?;
        Ok(KeyLocator {
            hasher: codec.key_hasher(),
            codec,
            mapper: KeyGroupMapper::new(max_parallelism)?,
            range,
            scratch: Vec::new(),
        })
    }

    /// The key's hash ([`key_hash`] of its canonical bytes).
    #[inline]
    pub fn key_hash(&mut self, key: &K) -> Result<u32> {
        match self.hasher {
            Some(hash) => Ok(hash(key)),
            None => self
                .codec
                .key_hash(key, &mut self.scratch)
                .map_err(|e| crate::error::codec_error("<key>", "key", e)),
        }
    }

    /// The key's group and the group's position in the range; a key of
    /// another subtask's key group is a [`Error::KeyGroupOutOfRange`].
    #[inline]
    pub fn locate(&mut self, key: &K) -> Result<(u32, usize)> {
        let hash = self.key_hash(key)?;
        self.place(hash)
    }

    /// Like [`KeyLocator::locate`], for backends that store the key's
    /// bytes: encodes `key` into `buf` (cleared first), which then holds its
    /// canonical bytes, and hashes those.
    #[inline]
    pub fn encode_and_locate(&self, key: &K, buf: &mut Vec<u8>) -> Result<(u32, usize)> {
        buf.clear();
        self.codec
            .encode(key, buf)
            .map_err(|e| crate::error::codec_error("<key>", "key", e))?;
        self.place(key_hash(buf))
    }

    #[inline]
    fn place(&self, hash: u32) -> Result<(u32, usize)> {
        let group = self.mapper.key_group_for_hash(hash);
        match self.range.index_of(group) {
            Some(index) => Ok((group, index)),
            None => Err(Error::KeyGroupOutOfRange {
                key_group: group,
                range: self.range,
            }),
        }
    }
}

/// Routes keys the way keyed backends place them: key → key group →
/// subtask. Built from the key codec and max parallelism the backends use, so
/// an engine partitions records exactly as the state is partitioned.
///
/// ```
/// use state_api::codec::postcard;
/// use state_api::key_group::{KeyGroupRange, KeyRouter};
///
/// let mut router = KeyRouter::new(postcard::<i64>(), 128)?;
/// let group = router.key_group(&42)?;
/// let subtask = router.subtask(&42, 4)?;
/// assert!(KeyGroupRange::for_operator(128, 4, subtask)?.contains(group));
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct KeyRouter<K> {
    locator: KeyLocator<K>,
}

impl<K: 'static> KeyRouter<K> {
    /// A router for keys encoded with `codec`, at `max_parallelism`.
    pub fn new(codec: crate::codec::SharedCodec<K>, max_parallelism: u32) -> Result<Self> {
        Ok(KeyRouter {
            locator: KeyLocator::new(codec, max_parallelism, KeyGroupRange::all(max_parallelism))?,
        })
    }

    /// The max parallelism.
    pub fn max_parallelism(&self) -> u32 {
        self.locator.mapper.max_parallelism()
    }

    /// The key group of `key`.
    #[inline]
    pub fn key_group(&mut self, key: &K) -> Result<u32> {
        Ok(self.locator.locate(key)?.0)
    }

    /// The subtask that owns `key` at `parallelism`.
    pub fn subtask(&mut self, key: &K, parallelism: u32) -> Result<u32> {
        let group = self.key_group(key)?;
        operator_index_for_key_group(self.max_parallelism(), parallelism, group)
    }
}

/// The index of the operator (subtask) that owns `key_group` at `parallelism`.
pub fn operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: u32,
) -> Result<u32> {
    check_parallelism(max_parallelism, parallelism)?;
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
        check_parallelism(max_parallelism, parallelism)?;
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
    fn the_mapper_divides_exactly() {
        let mut hashes: Vec<u32> = vec![0, 1, 2, 127, 128, u32::MAX, u32::MAX - 1, 1 << 31];
        let mut x = 0x9E37_79B9u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            hashes.push(x);
        }
        for max_parallelism in [1, 2, 3, 7, 128, 129, 1000, 4096, 10_007, 32_767, 32_768] {
            let mapper = KeyGroupMapper::new(max_parallelism).expect("valid");
            for &h in &hashes {
                assert_eq!(
                    mapper.key_group_for_hash(h),
                    key_group_for_hash(h, max_parallelism),
                    "hash {h} at {max_parallelism}"
                );
            }
        }
        assert!(KeyGroupMapper::new(0).is_err());
        assert!(KeyGroupMapper::new(MAX_MAX_PARALLELISM + 1).is_err());
    }

    #[test]
    fn murmur3_of_one_word_equals_murmur3_of_bytes() {
        let mut x = 0x9E37_79B9u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for len in 1..=4u32 {
                let bytes = &x.to_le_bytes()[..len as usize];
                let masked = if len == 4 {
                    x
                } else {
                    x & ((1u32 << (8 * len)) - 1)
                };
                assert_eq!(murmur3_32_word(masked, len), murmur3_32(bytes, 0), "{len}");
            }
        }
    }

    #[test]
    fn murmur3_of_words_equals_murmur3_of_bytes() {
        let mut x = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210u128;
        for _ in 0..2_000 {
            x = x.rotate_left(7) ^ (x >> 3) ^ 0x9E37_79B9_7F4A_7C15;
            for len in 0..=16u32 {
                let bytes = &x.to_le_bytes()[..len as usize];
                let masked = if len == 16 {
                    x
                } else {
                    x & ((1u128 << (8 * len)) - 1)
                };
                assert_eq!(murmur3_32_words(masked, len), murmur3_32(bytes, 0), "{len}");
            }
        }
    }

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
                        assert_eq!(operator_index_for_key_group(max_p, p, kg).ok(), Some(i));
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
