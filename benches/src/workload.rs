//! The throughput workloads, the keys and access stream they run on, and the
//! model of the state each must leave behind.
//!
//! Mirrors Apache Flink's `StateBackendBenchmark`: `keys` keys are populated
//! first; then one round runs a pre-generated stream of uniformly random key
//! indexes (and, for maps, user keys), where one operation sets the current
//! key and makes one state call. Every figure is operations per second.
//!
//! What each workload writes and reads is a function of the key index `k`,
//! the round `r` and the operation's position `j` in the stream, so the
//! state after the run (or the sum of what was read) is known exactly and
//! [`Model`] checks it:
//!
//! | workload | populated | one operation |
//! | --- | --- | --- |
//! | `value.update` | `k` | `update(written(r, j))` |
//! | `value.get` | `k` | `get()`, summed |
//! | `list.add` | each round starts from `[k]` | `add(written(r, j))` |
//! | `list.get` | `[10k, 10k + 1, …, 10k + 9]` | `get()`, elements summed |
//! | `map.put` | user keys `0..10` → `10k + u` | `put(u_j, written(r, j))` |
//! | `map.get` | user keys `0..10` → `10k + u` | `get(u_j)`, summed |

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rng::SplitMix64;
use crate::{BenchError, Result};

/// User keys per key of the map workloads.
pub const USER_KEYS: u32 = 10;
/// Elements per list of `list.get`.
pub const LIST_LEN: u32 = 10;
/// Operations of one round at full size (2^20, as in Flink's benchmark).
pub const STREAM_LEN: usize = 1 << 20;
/// Keys of the throughput workloads at full size.
pub const KEYS: u32 = 100_000;
/// The default seed of the access stream.
pub const SEED: u64 = 0x5EED_F10E;

/// A throughput workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `ValueState<i64>::update`.
    ValueUpdate,
    /// `ValueState<i64>::get`.
    ValueGet,
    /// `ListState<i64>::add`.
    ListAdd,
    /// `ListState<i64>::get` of 10 elements.
    ListGet,
    /// `MapState<i64, f64>::put`.
    MapPut,
    /// `MapState<i64, f64>::get`.
    MapGet,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::ValueUpdate,
        Workload::ValueGet,
        Workload::ListAdd,
        Workload::ListGet,
        Workload::MapPut,
        Workload::MapGet,
    ];

    /// The workload's name, e.g. `value.update`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ValueUpdate => "value.update",
            Workload::ValueGet => "value.get",
            Workload::ListAdd => "list.add",
            Workload::ListGet => "list.get",
            Workload::MapPut => "map.put",
            Workload::MapGet => "map.get",
        }
    }

    /// The state kind the workload uses.
    pub fn kind(self) -> Kind {
        match self {
            Workload::ValueUpdate | Workload::ValueGet => Kind::Value,
            Workload::ListAdd | Workload::ListGet => Kind::List,
            Workload::MapPut | Workload::MapGet => Kind::Map,
        }
    }

    /// Whether the workload only reads (its run returns a checksum).
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Workload::ValueGet | Workload::ListGet | Workload::MapGet
        )
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown workload {s:?}"))
    }
}

/// The state kind of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ValueState<i64>`.
    Value,
    /// `ListState<i64>`.
    List,
    /// `MapState<i64, f64>`.
    Map,
}

/// The value written by operation `j` of round `r`: distinct for every
/// operation of the run, so a write that was skipped or reordered shows.
#[inline]
pub fn written(round: u32, j: usize) -> i64 {
    ((i64::from(round) + 1) << 32) | j as i64
}

/// The value of key `k` after population (value workloads).
#[inline]
pub fn populated_value(k: u32) -> i64 {
    i64::from(k)
}

/// The elements of key `k`'s list after population (`list.get`).
pub fn populated_list(k: u32) -> impl Iterator<Item = i64> {
    (0..LIST_LEN).map(move |e| i64::from(k) * i64::from(LIST_LEN) + i64::from(e))
}

/// The value of user key `u` of key `k` after population (map workloads).
#[inline]
pub fn populated_map_value(k: u32, u: u32) -> f64 {
    (i64::from(k) * i64::from(USER_KEYS) + i64::from(u)) as f64
}

/// A key type of the workloads: `i64`, or `String` of 16–32 bytes.
pub trait BenchKey:
    Clone + Eq + Hash + Send + Sync + fmt::Debug + Serialize + DeserializeOwned + 'static
{
    /// Name of the key type in reports (`i64`, `string`).
    const NAME: &'static str;
    /// The key of index `k` (a bijection: distinct indexes, distinct keys).
    fn make(k: u32) -> Self;
    /// The key's bytes as a plain key-value user would store them: `i64` as
    /// 8 big-endian bytes, a string as its UTF-8 bytes.
    fn plain_bytes(&self, out: &mut Vec<u8>);
    /// The hash a hand-written router would compute to pick the key's key
    /// group: Java's `Long.hashCode` for `i64` (as Flink does), Murmur3 of
    /// the bytes for strings.
    fn route_hash(&self) -> u32;
}

impl BenchKey for i64 {
    const NAME: &'static str = "i64";
    fn make(k: u32) -> Self {
        i64::from(k)
    }
    fn plain_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    #[inline]
    fn route_hash(&self) -> u32 {
        (*self as u64 ^ (*self as u64 >> 32)) as u32
    }
}

impl BenchKey for String {
    const NAME: &'static str = "string";
    fn make(k: u32) -> Self {
        string_key(k)
    }
    fn plain_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    #[inline]
    fn route_hash(&self) -> u32 {
        state_api::key_group::key_hash(self.as_bytes())
    }
}

/// The string key of index `k`: 16 to 32 bytes (length drawn per key), a
/// unique hexadecimal prefix and random lowercase letters.
pub fn string_key(k: u32) -> String {
    let mut r = SplitMix64::new(u64::from(k) ^ 0xA5A5_5A5A_0F0F_F0F0);
    let len = 16 + r.below(17) as usize;
    let mut s = format!("{k:08x}-");
    while s.len() < len {
        s.push(char::from(b'a' + r.below(26) as u8));
    }
    s
}

/// The pre-generated access stream of one round: key indexes, uniform over
/// `0..keys`, and for the map workloads a user key per operation, uniform
/// over `0..USER_KEYS`.
#[derive(Clone, Debug)]
pub struct AccessStream {
    /// Keys in the workload.
    pub keys: u32,
    /// The key index of every operation.
    pub key_indexes: Vec<u32>,
    /// The user key of every operation.
    pub user_keys: Vec<u8>,
}

impl AccessStream {
    /// A stream of `len` operations over `keys` keys from `seed`.
    pub fn uniform(keys: u32, len: usize, seed: u64) -> Self {
        assert!(keys > 0, "a workload needs at least one key");
        let mut r = SplitMix64::new(seed);
        let key_indexes = (0..len).map(|_| r.below(u64::from(keys)) as u32).collect();
        let user_keys = (0..len)
            .map(|_| r.below(u64::from(USER_KEYS)) as u8)
            .collect();
        AccessStream {
            keys,
            key_indexes,
            user_keys,
        }
    }

    /// Operations in one round.
    pub fn len(&self) -> usize {
        self.key_indexes.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.key_indexes.is_empty()
    }
}

/// The order in which keys are populated: `0..keys`, or with `random` a
/// fixed permutation of it (seeded).
pub fn population_order(keys: u32, random: bool, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..keys).collect();
    if random {
        SplitMix64::new(seed ^ 0x0BAD_5EED).shuffle(&mut order);
    }
    order
}

/// What a driver reads back for one key after a workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A value state's value.
    Value(Option<i64>),
    /// A list state's elements.
    List(Vec<i64>),
    /// A map state's value for each user key `0..USER_KEYS`.
    Map(Vec<Option<f64>>),
}

/// The state a workload must leave behind after `rounds` rounds of a
/// stream, and the checksum every round of a read workload must return.
pub struct Model<'a> {
    workload: Workload,
    stream: &'a AccessStream,
    rounds: u32,
    /// Positions of each key's operations in the stream, ascending
    /// (compressed rows: `positions[starts[k]..starts[k + 1]]`).
    starts: Vec<u32>,
    positions: Vec<u32>,
}

impl<'a> Model<'a> {
    /// The model of `workload` run `rounds` times over `stream`.
    pub fn new(workload: Workload, stream: &'a AccessStream, rounds: u32) -> Self {
        let mut starts = vec![0u32; stream.keys as usize + 1];
        for &k in &stream.key_indexes {
            starts[k as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut positions = vec![0u32; stream.len()];
        for (j, &k) in stream.key_indexes.iter().enumerate() {
            positions[next[k as usize] as usize] = j as u32;
            next[k as usize] += 1;
        }
        Model {
            workload,
            stream,
            rounds,
            starts,
            positions,
        }
    }

    fn positions_of(&self, k: u32) -> &[u32] {
        &self.positions[self.starts[k as usize] as usize..self.starts[k as usize + 1] as usize]
    }

    /// The checksum every round of a read workload returns: the wrapping
    /// sum of every value read (list elements summed, map values as `i64`).
    pub fn checksum(&self) -> i64 {
        let mut sum = 0i64;
        for (j, &k) in self.stream.key_indexes.iter().enumerate() {
            let v = match self.workload {
                Workload::ValueGet => populated_value(k),
                Workload::ListGet => populated_list(k).sum(),
                Workload::MapGet => {
                    populated_map_value(k, u32::from(self.stream.user_keys[j])) as i64
                }
                _ => 0,
            };
            sum = sum.wrapping_add(v);
        }
        sum
    }

    /// What key `k` must hold after the run.
    pub fn expected(&self, k: u32) -> Observed {
        let last = self.rounds.saturating_sub(1);
        let touched = self.rounds > 0;
        match self.workload {
            Workload::ValueGet => Observed::Value(Some(populated_value(k))),
            Workload::ValueUpdate => {
                let v = match self.positions_of(k).last() {
                    Some(&j) if touched => written(last, j as usize),
                    _ => populated_value(k),
                };
                Observed::Value(Some(v))
            }
            Workload::ListGet => Observed::List(populated_list(k).collect()),
            Workload::ListAdd => {
                let mut list = vec![populated_value(k)];
                if touched {
                    list.extend(
                        self.positions_of(k)
                            .iter()
                            .map(|&j| written(last, j as usize)),
                    );
                }
                Observed::List(list)
            }
            Workload::MapGet => Observed::Map(
                (0..USER_KEYS)
                    .map(|u| Some(populated_map_value(k, u)))
                    .collect(),
            ),
            Workload::MapPut => {
                let mut map: Vec<Option<f64>> = (0..USER_KEYS)
                    .map(|u| Some(populated_map_value(k, u)))
                    .collect();
                if touched {
                    for &j in self.positions_of(k) {
                        let u = self.stream.user_keys[j as usize] as usize;
                        map[u] = Some(written(last, j as usize) as f64);
                    }
                }
                Observed::Map(map)
            }
        }
    }

    /// Checks what `read` returns for the keys `sample` (all keys when
    /// `None`) against [`Model::expected`]; the error names the first key
    /// that differs.
    pub fn verify(
        &self,
        subject: &str,
        sample: Option<u32>,
        mut read: impl FnMut(u32) -> Result<Observed>,
    ) -> Result<()> {
        let keys = self.stream.keys;
        let step = match sample {
            Some(n) if n > 0 && n < keys => keys / n,
            _ => 1,
        };
        let mut k = 0u32;
        while k < keys {
            let got = read(k)?;
            let want = self.expected(k);
            if got != want {
                return Err(BenchError::Verification(format!(
                    "{subject} {}: key {k} holds {got:?}, the operations wrote {want:?}",
                    self.workload
                )));
            }
            k = match k.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_keys_are_distinct_and_16_to_32_bytes() {
        let keys: Vec<String> = (0..10_000).map(string_key).collect();
        assert!(
            keys.iter().all(|k| (16..=32).contains(&k.len())),
            "{keys:?}"
        );
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert!(keys.iter().any(|k| k.len() == 16) && keys.iter().any(|k| k.len() == 32));
    }

    #[test]
    fn the_stream_is_fixed_by_its_seed_and_covers_the_keys() {
        let a = AccessStream::uniform(100, 10_000, 1);
        let b = AccessStream::uniform(100, 10_000, 1);
        assert_eq!(a.key_indexes, b.key_indexes);
        assert_ne!(
            a.key_indexes,
            AccessStream::uniform(100, 10_000, 2).key_indexes
        );
        assert!(a.key_indexes.iter().all(|&k| k < 100));
        assert!(a.user_keys.iter().all(|&u| u32::from(u) < USER_KEYS));
        let seen: std::collections::HashSet<u32> = a.key_indexes.iter().copied().collect();
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn the_model_follows_the_stream() {
        let s = AccessStream {
            keys: 3,
            key_indexes: vec![0, 2, 0],
            user_keys: vec![1, 4, 1],
        };
        let m = Model::new(Workload::ValueUpdate, &s, 2);
        assert_eq!(m.expected(0), Observed::Value(Some(written(1, 2))));
        assert_eq!(m.expected(1), Observed::Value(Some(1)));
        assert_eq!(m.expected(2), Observed::Value(Some(written(1, 1))));
        let m = Model::new(Workload::ListAdd, &s, 2);
        assert_eq!(
            m.expected(0),
            Observed::List(vec![0, written(1, 0), written(1, 2)])
        );
        let m = Model::new(Workload::MapPut, &s, 1);
        let Observed::Map(map) = m.expected(2) else {
            panic!("a map")
        };
        assert_eq!(map[4], Some(written(0, 1) as f64));
        assert_eq!(map[3], Some(populated_map_value(2, 3)));
        let m = Model::new(Workload::ValueGet, &s, 1);
        assert_eq!(m.checksum(), 2);
        let m = Model::new(Workload::ListGet, &s, 1);
        assert_eq!(m.checksum(), 45 + (200 + 45) + 45);
    }

    #[test]
    fn verification_names_the_first_wrong_key() {
        let s = AccessStream::uniform(10, 100, 1);
        let m = Model::new(Workload::ValueGet, &s, 1);
        m.verify("ok", None, |k| Ok(m.expected(k)))
            .expect("matches");
        let err = m
            .verify("bad", None, |k| {
                Ok(Observed::Value(Some(if k == 7 {
                    -1
                } else {
                    i64::from(k)
                })))
            })
            .expect_err("key 7 differs");
        assert!(err.to_string().contains("key 7"), "{err}");
    }
}
