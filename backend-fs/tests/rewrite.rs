//! Rewriting a checkpoint (incremental chains included) as a canonical
//! savepoint at another max parallelism: every key keeps its value on every
//! heap backend and at any parallelism.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use backend_fs::FsStateBackend;
use backend_memory::MemoryStateBackend;
use checkpoint_store::rewrite::{rewrite_snapshot, RewriteOptions};
use checkpoint_store::{
    CheckpointConfig, LocalStorage, OperatorState, RestorePlan, SubtaskSpec, SubtaskState,
};
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::key_group::KeyRouter;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use state_api::state::VoidNamespace;
use state_api::{KeyedStateBackend, Result, StateBackend};

type Model = BTreeMap<u64, (Option<String>, Vec<u64>, BTreeMap<u32, u64>)>;

fn value() -> ValueStateDescriptor<String> {
    ValueStateDescriptor::new("value")
}
fn list() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("list")
}
fn map() -> MapStateDescriptor<u32, u64> {
    MapStateDescriptor::new("map")
}

const KEYS: u64 = 3_000;

/// Writes two checkpoints of an operator "count" at parallelism 2, max 128,
/// the second incremental on the first (with deletes); returns the model of
/// the second.
fn write_checkpoints(root: &Path) -> Result<Model> {
    let backend = FsStateBackend::new(root, "job")?
        .with_inline_threshold(0)?
        .with_incremental(true);
    let mut coordinator = backend.coordinator(CheckpointConfig {
        num_retained: 2,
        ..Default::default()
    })?;
    let spec = SubtaskSpec::operator("count", 128, 2)?;
    let mut subtasks = Vec::new();
    for s in spec.all() {
        let mut k = backend.create_keyed_backend(s.keyed_params(postcard::<u64>()), &[])?;
        let (v, l, m) = (
            k.value_state(&value())?,
            k.list_state(&list())?,
            k.map_state(&map())?,
        );
        subtasks.push((k, v, l, m));
    }
    let mut router = KeyRouter::new(postcard::<u64>(), 128)?;
    let mut model = Model::new();
    for round in 0..2u64 {
        for key in 0..KEYS {
            let (k, v, l, m) = &mut subtasks[router.subtask(&key, 2)? as usize];
            k.set_current_key(key)?;
            let entry = model.entry(key).or_default();
            if round == 0 || key % 3 == 0 {
                let text = format!("{key}-{round}");
                v.on(k).set(text.clone())?;
                entry.0 = Some(text);
            }
            if round == 1 && key % 5 == 0 {
                v.on(k).clear()?;
                entry.0 = None;
            }
            if round == 0 || key % 4 == 0 {
                let elements: Vec<u64> = (0..key % 4 + round).collect();
                l.on(k).update(elements.clone())?;
                entry.1 = elements;
            }
            for user in 0..(key % 3) as u32 {
                if round == 1 && key % 7 == 0 {
                    m.on(k).remove(&user)?;
                    entry.2.remove(&user);
                } else {
                    m.on(k).put(user, key * 10 + round)?;
                    entry.2.insert(user, key * 10 + round);
                }
            }
        }
        let pending = coordinator.begin_checkpoint()?;
        let mut states = Vec::new();
        for (k, ..) in &mut subtasks {
            let h = k
                .snapshot(
                    pending.id,
                    pending.streams.clone(),
                    SnapshotOptions::default(),
                )?
                .run()?;
            states.push(SubtaskState {
                keyed: h.into_iter().collect(),
                ..Default::default()
            });
        }
        coordinator.complete_checkpoint(
            pending.id,
            vec![OperatorState {
                operator_id: "count".into(),
                parallelism: 2,
                max_parallelism: 128,
                subtasks: states,
            }],
        )?;
        for (k, ..) in &mut subtasks {
            k.notify_checkpoint_complete(pending.id)?;
        }
    }
    model.retain(|_, (v, l, m)| v.is_some() || !l.is_empty() || !m.is_empty());
    Ok(model)
}

/// Restores `savepoint` at `parallelism` on `backend` and compares every key.
fn check<S: StateBackend>(
    backend: &S,
    savepoint: &Path,
    max: u32,
    parallelism: u32,
    model: &Model,
) -> Result<()> {
    let plan = RestorePlan::load(&LocalStorage, savepoint)?;
    let mut seen = 0;
    for sub in plan.subtasks(&SubtaskSpec::operator("count", max, parallelism)?)? {
        let mut k =
            backend.create_keyed_backend(sub.spec.keyed_params(postcard::<u64>()), &sub.keyed)?;
        let (v, l, m) = (
            k.value_state(&value())?,
            k.list_state(&list())?,
            k.map_state(&map())?,
        );
        let mut keys = k.keys(v.handle(), &VoidNamespace)?;
        keys.extend(k.keys(l.handle(), &VoidNamespace)?);
        keys.extend(k.keys(m.handle(), &VoidNamespace)?);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            k.set_current_key(key)?;
            let want = model.get(&key).cloned().unwrap_or_default();
            let got = (
                v.on(&mut k).get()?,
                l.on(&mut k).get()?.unwrap_or_default(),
                m.on(&mut k)
                    .entries()?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            );
            assert_eq!(
                got, want,
                "key {key} at max {max}, parallelism {parallelism}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, model.len(), "every key restored once");
    Ok(())
}

#[test]
fn a_rewrite_moves_every_key_to_its_new_key_group() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_checkpoints(&dir.path().join("checkpoints"))?;
    for max in [128, 512, 64, 1] {
        let target = dir.path().join(format!("rewritten-{max}"));
        let report = rewrite_snapshot(
            Arc::new(LocalStorage),
            &dir.path().join("checkpoints").join("job"),
            &target,
            &RewriteOptions {
                max_parallelism: Some(max),
                compression: Compression::Zstd { level: 1 },
                scratch_dir: dir.path().join("scratch"),
            },
            None,
            &mut |_| {},
        )?;
        assert!(report.records > 0);
        let fs = FsStateBackend::new(&dir.path().join("restored"), "job")?;
        for p in [1, 3].into_iter().filter(|p| *p <= max) {
            check(&fs, &target, max, p, &model)?;
            check(
                &MemoryStateBackend::new().with_max_state_size(64 << 20),
                &target,
                max,
                p,
                &model,
            )?;
        }
        // The old max parallelism no longer restores it.
        if max != 128 {
            assert!(RestorePlan::load(&LocalStorage, &target)?
                .subtasks(&SubtaskSpec::operator("count", 128, 2)?)
                .is_err());
        }
    }
    assert!(
        !dir.path().join("scratch").exists()
            || std::fs::read_dir(dir.path().join("scratch"))
                .expect("scratch")
                .next()
                .is_none(),
        "scratch files are removed"
    );
    Ok(())
}

#[test]
fn a_rewrite_refuses_a_non_empty_target_and_a_missing_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = RewriteOptions {
        max_parallelism: None,
        compression: Compression::None,
        scratch_dir: dir.path().join("scratch"),
    };
    let err = rewrite_snapshot(
        Arc::new(LocalStorage),
        &dir.path().join("nothing"),
        &dir.path().join("out"),
        &options,
        None,
        &mut |_| {},
    )
    .expect_err("no snapshot there");
    assert!(err.to_string().contains("nothing"), "{err}");
    write_checkpoints(&dir.path().join("checkpoints")).expect("checkpoints");
    std::fs::create_dir_all(dir.path().join("out")).expect("mkdir");
    std::fs::write(dir.path().join("out").join("keep"), b"x").expect("write");
    let err = rewrite_snapshot(
        Arc::new(LocalStorage),
        &dir.path().join("checkpoints").join("job"),
        &dir.path().join("out"),
        &options,
        None,
        &mut |_| {},
    )
    .expect_err("target not empty");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(
        dir.path().join("out").join("keep").exists(),
        "nothing deleted"
    );
}

#[test]
fn a_bootstrapped_savepoint_restores_and_reads_back_with_the_job_types() -> Result<()> {
    use checkpoint_store::processor::{SavepointReader, SavepointWriter};
    use state_api::DefaultOperatorStateBackend;
    use state_api::OperatorStateBackend;
    let dir = tempfile::tempdir().expect("tempdir");
    let heap = MemoryStateBackend::new().with_max_state_size(64 << 20);
    // Bootstrap: keyed state of "count" and operator state of "source".
    let spec = SubtaskSpec::new("count", 128, 1, 0)?;
    let mut keyed = heap.create_keyed_backend(spec.keyed_params(postcard::<u64>()), &[])?;
    let v = keyed.value_state(&value())?;
    let mut model = Model::new();
    for key in 0..KEYS {
        keyed.set_current_key(key)?;
        v.on(&mut keyed).set(format!("boot-{key}"))?;
        model.entry(key).or_default().0 = Some(format!("boot-{key}"));
    }
    let mut source = DefaultOperatorStateBackend::new();
    let offsets = source.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
    source.list(&offsets)?.extend([10, 20, 30]);
    let mut writer = SavepointWriter::create(&dir.path().join("boot"), 9)?;
    writer.add_keyed("count", 128, &mut keyed)?;
    writer.add_operator("source", 128, &mut source)?;
    let path = writer.finish()?;

    // A job restores it at parallelism 3 on both heap backends.
    let fs = FsStateBackend::new(&dir.path().join("restored"), "job")?;
    check(&fs, &path, 128, 3, &model)?;
    check(&heap, &path, 128, 3, &model)?;

    // The reader gives it back with the job's types.
    let reader = SavepointReader::open(&LocalStorage, &path)?;
    assert_eq!(reader.operator_ids(), ["count", "source"]);
    let mut restored = reader.keyed(&fs, "count", postcard::<u64>())?;
    let v = restored.value_state(&value())?;
    let mut keys = restored.keys(v.handle(), &VoidNamespace)?;
    keys.sort_unstable();
    assert_eq!(keys, (0..KEYS).collect::<Vec<_>>());
    restored.set_current_key(17)?;
    assert_eq!(v.on(&mut restored).get()?, Some("boot-17".to_string()));
    let mut op = reader.operator(&fs, "source")?;
    let offsets = op.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
    assert_eq!(op.list(&offsets)?.clone(), vec![10, 20, 30]);
    assert!(reader.keyed(&fs, "nope", postcard::<u64>()).is_err());

    // A writer refuses a backend that does not own every key group.
    let half = SubtaskSpec::new("count", 128, 2, 0)?;
    let mut partial = heap.create_keyed_backend(half.keyed_params(postcard::<u64>()), &[])?;
    let pv = partial.value_state(&value())?;
    let mut router = KeyRouter::new(postcard::<u64>(), 128)?;
    let mut key = 0;
    while router.subtask(&key, 2)? != 0 {
        key += 1;
    }
    partial.set_current_key(key)?;
    pv.on(&mut partial).set("x".into())?;
    let mut w = SavepointWriter::create(&dir.path().join("partial"), 1)?;
    let err = w
        .add_keyed("count", 128, &mut partial)
        .expect_err("a backend owning half the key groups");
    assert!(err.to_string().contains("owning all 128"), "{err}");
    Ok(())
}
