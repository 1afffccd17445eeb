//! The checkpointed-function hook end to end, and the example job.

use std::collections::BTreeMap;

use state_api::backend::checkpointed::{
    CheckpointedFunction, FunctionInitializationContext, FunctionSnapshotContext,
};
use state_api::backend::operator::OperatorListState;
use state_api::state::access::{KeyedStateBackendExt, ReducingState};
use state_api::state::descriptor::{ListStateDescriptor, ReducingStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, Error, KeyedStateBackend, OperatorStateBackend, Result,
    StateBackend,
};

use crate::harness::{
    owner, rescale_keyed, rescale_operator, snapshot, snapshot_operator, MAX_PARALLELISM,
};

/// A map function keeping a keyed count per key (reducing state) and the
/// number of records its subtask saw (operator list state, one element per
/// subtask, split on rescale so the total is preserved).
struct CountingMap {
    count: Option<ReducingState<u64>>,
    seen: Option<OperatorListState<u64>>,
    local: u64,
}

impl CountingMap {
    fn new() -> Self {
        CountingMap {
            count: None,
            seen: None,
            local: 0,
        }
    }

    fn map<B: KeyedStateBackend<Key = u64>>(&mut self, keyed: &mut B, key: u64) -> Result<u64> {
        let count = self
            .count
            .as_ref()
            .ok_or_else(|| Error::user("not initialized"))?;
        keyed.set_current_key(key)?;
        count.on(keyed).add(1)?;
        self.local += 1;
        Ok(count.on(keyed).get()?.unwrap_or(0))
    }
}

impl<B: KeyedStateBackend<Key = u64>> CheckpointedFunction<DefaultOperatorStateBackend, B>
    for CountingMap
{
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_, DefaultOperatorStateBackend, B>,
    ) -> Result<()> {
        let keyed = ctx
            .keyed
            .as_deref_mut()
            .ok_or_else(|| Error::user("keyed stream expected"))?;
        self.count = Some(keyed.reducing_state(&ReducingStateDescriptor::new(
            "count",
            |a: &u64, b: &u64| a + b,
        ))?);
        let seen = ctx
            .operator
            .list_state(&ListStateDescriptor::<u64>::new("seen"))?;
        self.local = if ctx.is_restored() {
            ctx.operator.list(&seen)?.iter().sum()
        } else {
            0
        };
        self.seen = Some(seen);
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        ctx: &mut FunctionSnapshotContext<'_, DefaultOperatorStateBackend, B>,
    ) -> Result<()> {
        let seen = self
            .seen
            .as_ref()
            .ok_or_else(|| Error::user("not initialized"))?;
        let list = ctx.operator.list(seen)?;
        list.clear();
        list.push(self.local);
        Ok(())
    }
}

struct Subtask<B> {
    function: CountingMap,
    operator: DefaultOperatorStateBackend,
    keyed: B,
}

fn initialize<B: KeyedStateBackend<Key = u64>>(
    operators: Vec<DefaultOperatorStateBackend>,
    keyed: Vec<B>,
) -> Result<Vec<Subtask<B>>> {
    operators
        .into_iter()
        .zip(keyed)
        .map(|(mut operator, mut keyed)| {
            let mut function = CountingMap::new();
            let restored = operator.is_restored();
            let mut ctx =
                FunctionInitializationContext::new(&mut operator, Some(&mut keyed), restored);
            function.initialize_state(&mut ctx)?;
            Ok(Subtask {
                function,
                operator,
                keyed,
            })
        })
        .collect()
}

fn feed<B: KeyedStateBackend<Key = u64>>(
    subtasks: &mut [Subtask<B>],
    keys: impl Iterator<Item = u64>,
    expected: &mut BTreeMap<u64, u64>,
) -> Result<()> {
    let p = subtasks.len() as u32;
    for key in keys {
        let s = &mut subtasks[owner(&key, MAX_PARALLELISM, p)? as usize];
        let got = s.function.map(&mut s.keyed, key)?;
        let want = expected.entry(key).or_default();
        *want += 1;
        assert_eq!(got, *want, "running count of key {key}");
    }
    Ok(())
}

/// The seed example: a map function with a keyed reducing count per key and
/// an operator list state holding its subtask's record count, snapshotted at
/// parallelism 2 and restored at 3: keyed counts and the total count are exact.
pub fn checkpointed_function_rescale<S: StateBackend>(backend: &S) -> Result<()> {
    let mut expected = BTreeMap::new();
    let keyed = (0..2)
        .map(|i| crate::harness::keyed::<S, u64>(backend, MAX_PARALLELISM, 2, i, &[]))
        .collect::<Result<Vec<_>>>()?;
    let operators = (0..2)
        .map(|_| backend.create_operator_backend(&[]))
        .collect::<Result<Vec<_>>>()?;
    let mut subtasks = initialize(operators, keyed)?;
    for s in &subtasks {
        assert_eq!(s.function.local, 0, "a fresh start counts from zero");
    }
    feed(
        &mut subtasks,
        (0..3_000u64).map(|i| i * 7 % 101),
        &mut expected,
    )?;

    let (mut ops, mut keyed_handles) = (Vec::new(), Vec::new());
    for s in &mut subtasks {
        let mut ctx = FunctionSnapshotContext {
            checkpoint_id: 1,
            operator: &mut s.operator,
            keyed: Some(&mut s.keyed),
        };
        s.function.snapshot_state(&mut ctx)?;
        ops.extend(snapshot_operator(backend, &mut s.operator, 1)?);
        keyed_handles.extend(snapshot(backend, &mut s.keyed, 1)?);
    }
    // Records after the checkpoint are lost with the failure.
    feed(&mut subtasks, 0..50u64, &mut expected.clone())?;
    drop(subtasks);

    let operators = rescale_operator(backend, &ops, 3)?;
    let keyed = rescale_keyed::<S, u64>(backend, &keyed_handles, MAX_PARALLELISM, 3)?;
    let mut subtasks = initialize(operators, keyed)?;
    let total: u64 = subtasks.iter().map(|s| s.function.local).sum();
    assert_eq!(
        total, 3_000,
        "per-subtask counts survive the split from 2 to 3 subtasks"
    );
    feed(
        &mut subtasks,
        (0..1_000u64).map(|i| i * 13 % 101),
        &mut expected,
    )?;
    for s in &mut subtasks {
        let count = s
            .function
            .count
            .as_ref()
            .ok_or_else(|| Error::user("not initialized"))?;
        for key in s
            .keyed
            .keys(count.handle(), &state_api::state::VoidNamespace)?
        {
            s.keyed.set_current_key(key)?;
            assert_eq!(
                count.on(&mut s.keyed).get()?,
                expected.get(&key).copied(),
                "count of key {key}"
            );
        }
    }
    Ok(())
}

/// The example job (partition offsets in operator list state, keyed counts,
/// checkpoints, failure, restore at another parallelism): every count exact.
pub fn example_job_counts_exactly_once<S: StateBackend>(backend: &S) -> Result<()> {
    let config = crate::job::JobConfig {
        records_per_partition: 600,
        checkpoint_every: 700,
        fail_after: 3_000,
        keys: 200,
        ..Default::default()
    };
    let report = crate::job::run(backend, &config)?;
    assert_eq!(
        report.total_count,
        u64::from(config.partitions) * config.records_per_partition
    );
    assert!(
        report.records_replayed > 0,
        "the failure must lose some records to replay"
    );
    assert_eq!(report.keys_checked, 200);
    Ok(())
}
