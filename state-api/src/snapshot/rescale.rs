//! Coordinator-side assignment of old snapshot handles to the subtasks of a
//! new parallelism.
//!
//! * Keyed state: each new subtask gets the part of every old handle that
//!   intersects its key-group range ([`assign_keyed_state`]).
//! * Operator state ([`assign_operator_state`]): list state is split evenly
//!   (when the parallelism is unchanged each subtask keeps its own elements),
//!   union list state goes whole to every subtask, broadcast state is copied
//!   from one old subtask to each new one.

use std::collections::BTreeMap;

use super::handle::{Distribution, KeyedStateHandle, OperatorStateHandle, OperatorStatePart};
use crate::error::{Error, Result};
use crate::key_group::{check_parallelism, KeyGroupRange};

/// Assigns keyed handles of the old subtasks to `new_parallelism` subtasks:
/// element `i` of the result is what subtask `i` restores from.
pub fn assign_keyed_state(
    old: &[KeyedStateHandle],
    max_parallelism: u32,
    new_parallelism: u32,
) -> Result<Vec<Vec<KeyedStateHandle>>> {
    check_parallelism(max_parallelism, new_parallelism)?;
    for h in old {
        if h.max_parallelism() != max_parallelism {
            return Err(Error::MaxParallelismMismatch {
                file: h.describe(),
                snapshot: h.max_parallelism(),
                backend: max_parallelism,
            });
        }
    }
    (0..new_parallelism)
        .map(|i| {
            let range = KeyGroupRange::for_operator(max_parallelism, new_parallelism, i)?;
            Ok(old.iter().filter_map(|h| h.intersection(&range)).collect())
        })
        .collect()
}

/// Assigns operator handles of the old subtasks (in subtask order) to
/// `new_parallelism` subtasks.
pub fn assign_operator_state(
    old: &[OperatorStateHandle],
    new_parallelism: u32,
) -> Result<Vec<Vec<OperatorStateHandle>>> {
    if new_parallelism == 0 {
        return Err(Error::InvalidParallelism {
            parallelism: 0,
            max_parallelism: u32::MAX,
        });
    }
    let p = new_parallelism as usize;
    // parts[new subtask][old handle][state name] = offsets
    let mut parts: Vec<Vec<BTreeMap<String, OperatorStatePart>>> =
        vec![vec![BTreeMap::new(); old.len()]; p];
    let mut modes: BTreeMap<&str, Distribution> = BTreeMap::new();
    for h in old {
        for (name, part) in &h.states {
            if let Some(m) = modes.insert(name, part.distribution) {
                if m != part.distribution {
                    return Err(Error::StateKindMismatch {
                        name: name.clone(),
                        registered: format!("{m:?} operator state"),
                        requested: format!("{:?} operator state", part.distribution),
                    });
                }
            }
        }
    }
    for (name, mode) in modes {
        let mut push = |subtask: usize, handle: usize, offsets: &[u64]| {
            parts[subtask][handle]
                .entry(name.to_string())
                .or_insert_with(|| OperatorStatePart {
                    distribution: mode,
                    offsets: Vec::new(),
                })
                .offsets
                .extend_from_slice(offsets);
        };
        let holders = old
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.states.get(name).map(|part| (i, part)));
        match mode {
            Distribution::SplitDistribute if old.len() == p => {
                for (i, part) in holders {
                    push(i, i, &part.offsets);
                }
            }
            Distribution::SplitDistribute => {
                let all: Vec<(usize, u64)> = holders
                    .flat_map(|(i, part)| part.offsets.iter().map(move |o| (i, *o)))
                    .collect();
                let n = all.len();
                for subtask in 0..p {
                    let (from, to) = (subtask * n / p, (subtask + 1) * n / p);
                    for (handle, offset) in &all[from..to] {
                        push(subtask, *handle, &[*offset]);
                    }
                }
            }
            Distribution::Union => {
                for (i, part) in holders {
                    for subtask in 0..p {
                        push(subtask, i, &part.offsets);
                    }
                }
            }
            Distribution::Broadcast => {
                let holders: Vec<_> = holders.collect();
                if !holders.is_empty() {
                    for subtask in 0..p {
                        let (i, part) = holders[subtask % holders.len()];
                        push(subtask, i, &part.offsets);
                    }
                }
            }
        }
    }
    Ok(parts
        .into_iter()
        .map(|per_handle| {
            per_handle
                .into_iter()
                .enumerate()
                .filter(|(_, states)| !states.is_empty())
                .map(|(i, states)| OperatorStateHandle {
                    checkpoint_id: old[i].checkpoint_id,
                    data: old[i].data.clone(),
                    states,
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::stream::StreamStateHandle;
    use std::sync::Arc;

    fn op_handle(name: &str, parts: &[(&str, Distribution, usize)]) -> OperatorStateHandle {
        OperatorStateHandle {
            checkpoint_id: 1,
            data: StreamStateHandle::InMemory {
                name: name.into(),
                data: Arc::from(Vec::new()),
            },
            states: parts
                .iter()
                .map(|(n, d, count)| {
                    (
                        n.to_string(),
                        OperatorStatePart {
                            distribution: *d,
                            offsets: (0..*count as u64).collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn count(assigned: &[OperatorStateHandle], state: &str) -> usize {
        assigned
            .iter()
            .filter_map(|h| h.states.get(state))
            .map(|p| p.offsets.len())
            .sum()
    }

    #[test]
    fn split_union_broadcast() {
        use Distribution::*;
        let old = vec![
            op_handle(
                "a",
                &[
                    ("l", SplitDistribute, 5),
                    ("u", Union, 2),
                    ("b", Broadcast, 3),
                ],
            ),
            op_handle(
                "b",
                &[
                    ("l", SplitDistribute, 2),
                    ("u", Union, 1),
                    ("b", Broadcast, 3),
                ],
            ),
        ];
        let new = assign_operator_state(&old, 3).expect("assign");
        let split: Vec<usize> = new.iter().map(|a| count(a, "l")).collect();
        assert_eq!(split.iter().sum::<usize>(), 7);
        assert!(split.iter().all(|c| *c == 2 || *c == 3), "{split:?}");
        for a in &new {
            assert_eq!(count(a, "u"), 3);
            assert_eq!(count(a, "b"), 3);
        }
        let same = assign_operator_state(&old, 2).expect("assign");
        assert_eq!(
            count(&same[0], "l"),
            5,
            "unchanged parallelism keeps elements in place"
        );
        assert_eq!(count(&same[1], "l"), 2);
    }

    #[test]
    fn mismatched_max_parallelism_is_an_error() {
        let h = KeyedStateHandle::from(crate::snapshot::handle::KeyGroupsStateHandle {
            checkpoint_id: 1,
            data: StreamStateHandle::InMemory {
                name: "k".into(),
                data: Arc::from(Vec::new()),
            },
            max_parallelism: 128,
            range: KeyGroupRange::new(0, 127),
            offsets: vec![0; 129],
        });
        assert!(assign_keyed_state(std::slice::from_ref(&h), 256, 2).is_err());
        let a = assign_keyed_state(&[h], 128, 3).expect("assign");
        let total: usize = a.iter().flatten().map(|h| h.range().len()).sum();
        assert_eq!(total, 128);
    }
}
