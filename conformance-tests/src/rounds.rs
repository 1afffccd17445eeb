//! A small job for checkpoint and savepoint tests of any backend: `p`
//! subtasks, each with keyed state (value, list and map) and operator list
//! state, written in deterministic rounds, checkpointed through the
//! coordinator, and compared with a model of what round `r` leaves behind.

use std::collections::BTreeMap;

use crate::harness::{keyed, owner};
use checkpoint_store::{
    CheckpointCoordinator, CompletedCheckpoint, OperatorState, PendingCheckpoint, SubtaskState,
};
use state_api::backend::operator::OperatorListState;
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};
use state_api::snapshot::task::SnapshotTask;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ListState, MapState, ValueState};
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, KeyedStateBackend, OperatorStateBackend, Result, StateBackend,
};

/// Max parallelism of the job.
pub const MAX_P: u32 = 128;
/// The job's operator id in checkpoint metadata.
pub const OPERATOR: &str = "counter";

/// One subtask: its backends and states.
pub struct Subtask<B> {
    /// Keyed backend.
    pub keyed: B,
    /// Operator backend.
    pub operator: DefaultOperatorStateBackend,
    /// Value state.
    pub value: ValueState<i64>,
    /// List state.
    pub list: ListState<String>,
    /// Map state.
    pub map: MapState<u32, String>,
    /// Operator list state: the rounds written.
    pub rounds: OperatorListState<u64>,
}

/// What the job's state holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Value state.
    pub values: BTreeMap<u64, i64>,
    /// List state.
    pub lists: BTreeMap<u64, Vec<String>>,
    /// Map state.
    pub maps: BTreeMap<u64, BTreeMap<u32, String>>,
    /// Sum of the operator list state over all subtasks.
    pub rounds: u64,
}

/// Applies round `r` (1-based) to the model.
pub fn apply_round(m: &mut Model, r: u64, keys: u64) {
    for k in 0..keys {
        if (k + r).is_multiple_of(7) {
            m.values.remove(&k);
        } else {
            m.values.insert(k, (r * 1000 + k) as i64);
        }
        if k % 3 == r % 3 {
            m.lists.entry(k).or_default().push(format!("r{r}"));
        }
        if k.is_multiple_of(5) {
            m.maps
                .entry(k)
                .or_default()
                .insert((r % 4) as u32, format!("{r}-{k}"));
        }
    }
    m.rounds += r;
}

/// The model after rounds `1..=r`.
pub fn model_after(r: u64, keys: u64) -> Model {
    let mut m = Model::default();
    for round in 1..=r {
        apply_round(&mut m, round, keys);
    }
    m
}

/// Opens `parallelism` subtasks, restored from `restore` when given.
pub fn open<S: StateBackend>(
    backend: &S,
    parallelism: u32,
    restore: Option<&OperatorState>,
) -> Result<Vec<Subtask<S::Keyed<u64>>>> {
    let (keyed_parts, operator_parts) = match restore {
        Some(state) => {
            let keyed: Vec<_> = state
                .subtasks
                .iter()
                .flat_map(|s| s.keyed.clone())
                .collect();
            let ops: Vec<_> = state
                .subtasks
                .iter()
                .flat_map(|s| s.operator.clone())
                .collect();
            (
                assign_keyed_state(&keyed, MAX_P, parallelism)?,
                assign_operator_state(&ops, parallelism)?,
            )
        }
        None => (
            vec![vec![]; parallelism as usize],
            vec![vec![]; parallelism as usize],
        ),
    };
    let mut out = Vec::new();
    for (i, (k, o)) in keyed_parts.iter().zip(&operator_parts).enumerate() {
        let mut keyed = keyed::<S, u64>(backend, MAX_P, parallelism, i as u32, k)?;
        let mut operator = backend.create_operator_backend(o)?;
        let value = keyed.value_state(&ValueStateDescriptor::<i64>::new("value"))?;
        let list = keyed.list_state(&ListStateDescriptor::<String>::new("list"))?;
        let map = keyed.map_state(&MapStateDescriptor::<u32, String>::new("map"))?;
        let rounds = operator.list_state(&ListStateDescriptor::<u64>::new("rounds"))?;
        out.push(Subtask {
            keyed,
            operator,
            value,
            list,
            map,
            rounds,
        });
    }
    Ok(out)
}

/// Writes round `r` into the job's state (the model's `apply_round`).
pub fn write_round<B: KeyedStateBackend<Key = u64>>(
    subtasks: &mut [Subtask<B>],
    r: u64,
    keys: u64,
) -> Result<()> {
    let p = subtasks.len() as u32;
    for k in 0..keys {
        let s = &mut subtasks[owner(&k, MAX_P, p)? as usize];
        s.keyed.set_current_key(k)?;
        if (k + r).is_multiple_of(7) {
            s.value.on(&mut s.keyed).clear()?;
        } else {
            s.value
                .on(&mut s.keyed)
                .update(Some((r * 1000 + k) as i64))?;
        }
        if k % 3 == r % 3 {
            s.list.on(&mut s.keyed).add(format!("r{r}"))?;
        }
        if k.is_multiple_of(5) {
            s.map
                .on(&mut s.keyed)
                .put((r % 4) as u32, format!("{r}-{k}"))?;
        }
    }
    let first = &mut subtasks[0];
    first.operator.list(&first.rounds)?.push(r);
    Ok(())
}

/// Reads the whole state of the job.
pub fn read<B: KeyedStateBackend<Key = u64>>(
    subtasks: &mut [Subtask<B>],
    keys: u64,
) -> Result<Model> {
    let p = subtasks.len() as u32;
    let mut m = Model::default();
    for k in 0..keys {
        let s = &mut subtasks[owner(&k, MAX_P, p)? as usize];
        s.keyed.set_current_key(k)?;
        if let Some(v) = s.value.on(&mut s.keyed).get()? {
            m.values.insert(k, v);
        }
        if let Some(l) = s.list.on(&mut s.keyed).get()? {
            m.lists.insert(k, l);
        }
        let entries: BTreeMap<u32, String> =
            s.map.on(&mut s.keyed).entries()?.into_iter().collect();
        if !entries.is_empty() {
            m.maps.insert(k, entries);
        }
    }
    for s in subtasks.iter_mut() {
        m.rounds += s.operator.list(&s.rounds)?.iter().sum::<u64>();
    }
    Ok(m)
}

/// The asynchronous parts of one subtask's snapshots, not yet run.
pub type SubtaskSnapshot = (
    SnapshotTask<Option<KeyedStateHandle>>,
    SnapshotTask<Option<OperatorStateHandle>>,
);

/// Takes the synchronous part of every subtask's snapshots into `pending`'s
/// streams.
pub fn begin_snapshots<B: KeyedStateBackend>(
    subtasks: &mut [Subtask<B>],
    pending: &PendingCheckpoint,
    options: SnapshotOptions,
) -> Result<Vec<SubtaskSnapshot>> {
    subtasks
        .iter_mut()
        .map(|s| {
            Ok((
                s.keyed
                    .snapshot(pending.id, pending.streams.clone(), options)?,
                s.operator
                    .snapshot(pending.id, pending.streams.clone(), options)?,
            ))
        })
        .collect()
}

/// Runs the asynchronous parts taken by [`begin_snapshots`] and returns the
/// operator's state for the checkpoint metadata.
pub fn finish_snapshots(tasks: Vec<SubtaskSnapshot>) -> Result<Vec<OperatorState>> {
    let parallelism = tasks.len() as u32;
    let mut states = Vec::new();
    for (keyed, operator) in tasks {
        states.push(SubtaskState {
            keyed: keyed.run()?.into_iter().collect(),
            operator: operator.run()?.into_iter().collect(),
            ..Default::default()
        });
    }
    Ok(vec![OperatorState {
        operator_id: OPERATOR.into(),
        parallelism,
        max_parallelism: MAX_P,
        subtasks: states,
    }])
}

/// Snapshots every subtask into `pending`'s streams: every synchronous part,
/// then every asynchronous part.
pub fn snapshot_all<B: KeyedStateBackend>(
    subtasks: &mut [Subtask<B>],
    pending: &PendingCheckpoint,
    options: SnapshotOptions,
) -> Result<Vec<OperatorState>> {
    finish_snapshots(begin_snapshots(subtasks, pending, options)?)
}

/// A checkpoint through the coordinator, then the completion notification.
pub fn checkpoint<B: KeyedStateBackend>(
    coordinator: &mut CheckpointCoordinator,
    subtasks: &mut [Subtask<B>],
) -> Result<CompletedCheckpoint> {
    let pending = coordinator.begin_checkpoint()?;
    let states = match snapshot_all(subtasks, &pending, SnapshotOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            for s in subtasks.iter_mut() {
                s.keyed.notify_checkpoint_aborted(pending.id)?;
            }
            let _ = coordinator.abort(pending.id);
            return Err(e);
        }
    };
    let completed = coordinator.complete_checkpoint(pending.id, states)?;
    for s in subtasks.iter_mut() {
        s.keyed.notify_checkpoint_complete(pending.id)?;
    }
    Ok(completed)
}
