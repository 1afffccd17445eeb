//! Golden checkpoint fixtures: whole checkpoints and savepoints (their
//! `_metadata` and every file it references) written once by a format
//! version and committed under `testdata/fixtures/v<N>/<name>/`, then
//! restored by every later build, forever.
//!
//! A backend's test calls [`write_if_missing`] with a generator and
//! [`check_fixture`] with a restore function:
//!
//! * The generator runs only when `FLOWSTATE_WRITE_FIXTURES=1` is set and the
//!   current version's folder of the fixture does not exist: it writes a
//!   checkpoint (or savepoint) under a temporary root and returns its
//!   `_metadata`; that file and every file it references are copied into
//!   the fixture folder, keeping their paths relative to the root. A fixture
//!   is never rewritten.
//! * The restore function restores a fixture's `_metadata` and asserts every
//!   value. [`check_fixture`] runs it on every version's copy, then on
//!   damaged copies: for each file, a copy with one flipped bit must fail with
//!   an error of kind [`ErrorKind::Corruption`] naming that file, and a copy
//!   without a state file must fail with [`Error::StateFileUnreadable`]
//!   naming the file and the checkpoint that needs it.
//!
//! Paths inside `_metadata` are stored relative to the checkpoint's job folder
//! (or the savepoint's folder), so a fixture restores from wherever the
//! repository is, and from a copy.

use std::path::{Path, PathBuf};

use checkpoint_store::layout::METADATA_FILE;
use checkpoint_store::{load_metadata, LocalStorage};
use state_api::format::FormatVersion;
use state_api::{Error, ErrorKind, Result, StateBackend};

use crate::rounds::{model_after, open, read, OPERATOR};

/// The environment variable that lets [`write_if_missing`] write fixtures.
pub const WRITE_ENV: &str = "FLOWSTATE_WRITE_FIXTURES";

/// `testdata/fixtures` of the repository.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures")
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))
}

/// Writes fixture `name` of the current format version with `generate`, if
/// [`WRITE_ENV`] is set and the fixture does not exist yet. `generate` gets
/// an empty root folder and returns the path of the `_metadata` it wrote
/// under it.
pub fn write_if_missing(name: &str, generate: impl FnOnce(&Path) -> Result<PathBuf>) -> Result<()> {
    let target = root()
        .join(format!("v{}", FormatVersion::CURRENT.number()))
        .join(name);
    if std::env::var_os(WRITE_ENV).is_none() || target.exists() {
        return Ok(());
    }
    let temp = tempdir()?;
    let metadata_path = generate(temp.path())?;
    let metadata = load_metadata(&LocalStorage, &metadata_path)?;
    let mut files = vec![metadata_path];
    files.extend(metadata.files());
    for file in files {
        let relative = file
            .strip_prefix(temp.path())
            .map_err(|_| Error::InvalidArgument {
                what: format!("fixture file {} is outside its root", file.display()),
            })?;
        let dest = target.join(relative);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        std::fs::copy(&file, &dest).map_err(io("copying", &file))?;
    }
    Ok(())
}

/// The `_metadata` of fixture `name` in every version folder that has it,
/// oldest version first.
pub fn versions(name: &str) -> Result<Vec<PathBuf>> {
    let root = root();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io("listing", &root))? {
        let entry = entry.map_err(io("listing", &root))?;
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = folder.strip_prefix('v').and_then(|v| v.parse::<u16>().ok()) else {
            continue;
        };
        let fixture = entry.path().join(name);
        if fixture.exists() {
            found.push((version, find_metadata(&fixture)?));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The one `_metadata` under `folder`.
fn find_metadata(folder: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for file in walk(folder)? {
        if file.file_name().and_then(|n| n.to_str()) == Some(METADATA_FILE) {
            found.push(file);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::InvalidArgument {
            what: format!(
                "fixture {} holds {} _metadata files, not one",
                folder.display(),
                found.len()
            ),
        }),
    }
}

/// Every file under `folder`, recursively.
fn walk(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the fixture folder holding `metadata_path` into `dest`; returns the
/// copy's `_metadata`.
fn copy_fixture(fixture: &Path, metadata_path: &Path, dest: &Path) -> Result<PathBuf> {
    for file in walk(fixture)? {
        let relative = file
            .strip_prefix(fixture)
            .map_err(|_| Error::InvalidArgument {
                what: format!("{} is outside {}", file.display(), fixture.display()),
            })?;
        let to = dest.join(relative);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        std::fs::copy(&file, &to).map_err(io("copying", &file))?;
    }
    let relative = metadata_path
        .strip_prefix(fixture)
        .map_err(|_| Error::InvalidArgument {
            what: format!("{} is outside its fixture", metadata_path.display()),
        })?;
    Ok(dest.join(relative))
}

/// Keys of the fixtures' jobs ([`crate::rounds`]).
pub const KEYS: u64 = 24;

/// Restores the operator of the fixture job in `metadata_path` at 1, 2 and 3
/// subtasks of `backend`, and compares the whole state with the model after
/// `rounds` rounds of [`KEYS`] keys.
pub fn restore_rounds<S: StateBackend>(
    backend: &S,
    metadata_path: &Path,
    rounds: u64,
) -> Result<()> {
    let metadata = load_metadata(&LocalStorage, metadata_path)?;
    let state = metadata
        .operator(OPERATOR)
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("{} has no operator {OPERATOR}", metadata_path.display()),
        })?;
    for p in [1, 2, 3] {
        let mut job = open(backend, p, Some(state))?;
        assert_eq!(
            read(&mut job, KEYS)?,
            model_after(rounds, KEYS),
            "{} restored at parallelism {p}",
            metadata_path.display()
        );
    }
    Ok(())
}

/// Restores every version of fixture `name` with `restore` (which asserts
/// every value), then checks damaged copies of it (see the module docs).
/// Fails if no version of the fixture is committed.
pub fn check_fixture(name: &str, restore: impl Fn(&Path) -> Result<()>) -> Result<()> {
    let all = versions(name)?;
    assert!(
        !all.is_empty(),
        "fixture {name} is not committed under {}; write it with {WRITE_ENV}=1",
        root().display()
    );
    for metadata_path in all {
        restore(&metadata_path)?;
        check_damaged_copies(name, &metadata_path, &restore)?;
    }
    Ok(())
}

fn fixture_folder(name: &str, metadata_path: &Path) -> Result<PathBuf> {
    metadata_path
        .ancestors()
        .find(|a| a.file_name().and_then(|n| n.to_str()) == Some(name))
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("{} is not inside fixture {name}", metadata_path.display()),
        })
}

fn check_damaged_copies(
    name: &str,
    metadata_path: &Path,
    restore: &impl Fn(&Path) -> Result<()>,
) -> Result<()> {
    let fixture = fixture_folder(name, metadata_path)?;
    let metadata = load_metadata(&LocalStorage, metadata_path)?;
    let mut files = vec![metadata_path.to_path_buf()];
    files.extend(metadata.files());
    for file in &files {
        let relative = file
            .strip_prefix(&fixture)
            .map_err(|_| Error::InvalidArgument {
                what: format!("{} is outside fixture {name}", file.display()),
            })?;
        let file_name = relative
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();

        let temp = tempdir()?;
        let copy = copy_fixture(&fixture, metadata_path, temp.path())?;
        let damaged = temp.path().join(relative);
        let mut bytes = std::fs::read(&damaged).map_err(io("reading", &damaged))?;
        let at = bytes.len() / 2;
        bytes[at] ^= 0x04;
        std::fs::write(&damaged, &bytes).map_err(io("writing", &damaged))?;
        match restore(&copy) {
            Ok(()) => panic!("{name}: a flipped bit in {file_name} restored silently"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corruption, "{name}, {file_name}: {e}");
                assert!(
                    e.to_string().contains(&file_name),
                    "{name}: the error names {file_name}: {e}"
                );
            }
        }

        if file == metadata_path {
            continue;
        }
        let temp = tempdir()?;
        let copy = copy_fixture(&fixture, metadata_path, temp.path())?;
        let missing = temp.path().join(relative);
        std::fs::remove_file(&missing).map_err(io("removing", &missing))?;
        match restore(&copy) {
            Ok(()) => panic!("{name}: restored without {file_name}"),
            Err(e) => {
                assert!(
                    matches!(&e, Error::StateFileUnreadable { file, needed_by, .. }
                        if file.contains(&file_name)
                            && needed_by.contains(&format!("checkpoint {}", metadata.checkpoint_id))),
                    "{name}: a missing {file_name} names the file and checkpoint {}: {e}",
                    metadata.checkpoint_id
                );
                assert_eq!(e.kind(), ErrorKind::Io, "{e}");
            }
        }
    }
    Ok(())
}

/// Writes a savepoint of operator `operator` at parallelism 2 under `root`:
/// `fill` fills each subtask's keyed backend (on `clock`), which is then
/// snapshotted. Returns the savepoint's `_metadata`.
fn write_operator_savepoint<S: StateBackend>(
    backend: &S,
    root: &Path,
    operator: &str,
    clock: &state_api::state::ttl::StateClock,
    mut fill: impl FnMut(&mut S::Keyed<u64>) -> Result<()>,
) -> Result<PathBuf> {
    use checkpoint_store::{CheckpointConfig, CheckpointCoordinator, OperatorState};
    use state_api::format::frame::Compression;
    use state_api::snapshot::SnapshotOptions;

    let mut coordinator = CheckpointCoordinator::open(
        std::sync::Arc::new(LocalStorage),
        root,
        "job",
        CheckpointConfig::default(),
    )?;
    let pending = coordinator.begin_savepoint(&root.join("savepoints"))?;
    let mut subtasks = Vec::new();
    for index in 0..2 {
        let mut b = crate::cases::ttl::keyed_on(backend, clock, 2, index, &[])?;
        fill(&mut b)?;
        let handle = pending
            .snapshot_keyed(&mut b, SnapshotOptions::savepoint(Compression::None))?
            .run()?;
        subtasks.push(checkpoint_store::SubtaskState {
            keyed: handle.into_iter().collect(),
            ..Default::default()
        });
    }
    let dir = coordinator.complete_savepoint(
        pending.id,
        vec![OperatorState {
            operator_id: operator.into(),
            parallelism: 2,
            max_parallelism: crate::harness::MAX_PARALLELISM,
            subtasks,
        }],
    )?;
    Ok(dir.join(METADATA_FILE))
}

/// The keyed handles of every subtask of `operator` in `metadata_path`.
fn operator_handles(
    metadata_path: &Path,
    operator: &str,
) -> Result<Vec<state_api::snapshot::handle::KeyedStateHandle>> {
    let metadata = load_metadata(&LocalStorage, metadata_path)?;
    let state = metadata
        .operator(operator)
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("{} has no operator {operator}", metadata_path.display()),
        })?;
    Ok(state
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.iter().cloned())
        .collect())
}

/// The operator of the TTL fixtures ([`write_ttl_savepoint`]).
pub const TTL_OPERATOR: &str = "ttl";
/// The manual clock's time when the TTL fixtures were written.
pub const TTL_WRITTEN_AT: i64 = 1_700_000_000_000;
const TTL_KEYS: u64 = 16;
const TTL_HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

fn ttl_descriptors() -> (
    state_api::state::descriptor::ValueStateDescriptor<String>,
    state_api::state::descriptor::ListStateDescriptor<u64>,
    state_api::state::descriptor::MapStateDescriptor<u32, u64>,
) {
    use state_api::state::descriptor::{
        ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor,
    };
    use state_api::state::ttl::{StateTtlConfig, TtlTimeDomain, TtlUpdateType};
    (
        ValueStateDescriptor::new("ttl-value").with_ttl(StateTtlConfig::new(TTL_HOUR)),
        ListStateDescriptor::new("ttl-list").with_ttl(
            StateTtlConfig::new(TTL_HOUR).with_update_type(TtlUpdateType::OnReadAndWrite),
        ),
        MapStateDescriptor::new("ttl-map")
            .with_ttl(StateTtlConfig::new(TTL_HOUR).with_time_domain(TtlTimeDomain::EventTime)),
    )
}

/// Writes the TTL fixture of format version 3 on: a savepoint of operator
/// [`TTL_OPERATOR`] at parallelism 2 whose value, list and map states have
/// a one-hour TTL (processing time, on read, event time), written on a
/// manual clock at [`TTL_WRITTEN_AT`] (and that watermark); returns its
/// `_metadata`.
pub fn write_ttl_savepoint<S: StateBackend>(backend: &S, root: &Path) -> Result<PathBuf> {
    use state_api::state::access::KeyedStateBackendExt;
    use state_api::state::ttl::StateClock;
    use state_api::KeyedStateBackend;

    let clock = StateClock::manual(TTL_WRITTEN_AT);
    clock.advance_watermark(TTL_WRITTEN_AT);
    let (vd, ld, md) = ttl_descriptors();
    write_operator_savepoint(backend, root, TTL_OPERATOR, &clock, |b| {
        let (v, l, m) = (b.value_state(&vd)?, b.list_state(&ld)?, b.map_state(&md)?);
        for k in 0..TTL_KEYS {
            if b.set_current_key(k).is_err() {
                continue;
            }
            v.on(b).set(format!("value {k}"))?;
            l.on(b).add_all(vec![k, k + 1])?;
            m.on(b).put(k as u32, k * 10)?;
        }
        Ok(())
    })
}

/// Restores a TTL fixture at parallelism 1: every value, list and map entry
/// is there 59 minutes after it was written (processing time and
/// watermark), and a cleanup an hour after removes all of them.
pub fn restore_ttl_savepoint<S: StateBackend>(backend: &S, metadata_path: &Path) -> Result<()> {
    use state_api::state::access::KeyedStateBackendExt;
    use state_api::state::ttl::StateClock;
    use state_api::KeyedStateBackend;

    let handles = operator_handles(metadata_path, TTL_OPERATOR)?;
    let clock = StateClock::manual(TTL_WRITTEN_AT + 59 * 60_000);
    clock.advance_watermark(TTL_WRITTEN_AT + 59 * 60_000);
    let mut b = crate::cases::ttl::keyed_on(backend, &clock, 1, 0, &handles)?;
    let (vd, ld, md) = ttl_descriptors();
    let (v, l, m) = (b.value_state(&vd)?, b.list_state(&ld)?, b.map_state(&md)?);
    for k in 0..TTL_KEYS {
        b.set_current_key(k)?;
        let at = metadata_path.display();
        assert_eq!(v.on(&mut b).get()?, Some(format!("value {k}")), "{at}");
        assert_eq!(l.on(&mut b).get()?, Some(vec![k, k + 1]), "{at}");
        assert_eq!(m.on(&mut b).get(&(k as u32))?, Some(k * 10), "{at}");
    }
    // The list was read (and so refreshed) at 59 minutes; the others expire
    // an hour after they were written.
    clock.advance_processing_time(TTL_WRITTEN_AT + 60 * 60_000)?;
    clock.advance_watermark(TTL_WRITTEN_AT + 60 * 60_000);
    assert_eq!(
        b.cleanup_expired()?,
        2 * TTL_KEYS,
        "the values and map entries"
    );
    clock.advance_processing_time(TTL_WRITTEN_AT + 119 * 60_000)?;
    assert_eq!(
        b.cleanup_expired()?,
        2 * TTL_KEYS,
        "then the refreshed lists"
    );
    assert_eq!(b.num_entries()?, 0);
    Ok(())
}

/// The operator of the timer fixtures ([`write_timer_savepoint`]).
pub const TIMER_OPERATOR: &str = "timers";

/// The timers of the timer fixtures: (timestamp, key, namespace), event
/// time, over keys `0..32`.
fn fixture_timers() -> Vec<(i64, u64, u32)> {
    (0..32u64)
        .flat_map(|k| {
            [
                (1_000 + (k as i64 % 5), k, 0),
                (2_000 + k as i64, k, k as u32 % 3),
            ]
        })
        .collect()
}

/// Writes the timer fixture of format version 3 on: a savepoint of operator
/// [`TIMER_OPERATOR`] at parallelism 2 holding 64 timers (event
/// time) of a timer service named `window`; returns its `_metadata`.
pub fn write_timer_savepoint<S: StateBackend>(backend: &S, root: &Path) -> Result<PathBuf> {
    use state_api::state::ttl::StateClock;
    use state_api::timers::TimerService;
    use state_api::KeyedStateBackend;

    write_operator_savepoint(backend, root, TIMER_OPERATOR, &StateClock::manual(0), |b| {
        let timers = TimerService::new(b, "window", state_api::codec::postcard::<u32>())?;
        for (ts, k, ns) in fixture_timers() {
            if b.set_current_key(k).is_ok() {
                timers.register_event_time_timer(b, &ns, ts)?;
            }
        }
        Ok(())
    })
}

/// Restores a timer fixture at parallelism 1 and 3: every timer fires
/// exactly once, on the subtask owning its key, in timestamp order.
pub fn restore_timer_savepoint<S: StateBackend>(backend: &S, metadata_path: &Path) -> Result<()> {
    use state_api::state::ttl::StateClock;
    use state_api::timers::TimerService;

    let handles = operator_handles(metadata_path, TIMER_OPERATOR)?;
    let mut expected = fixture_timers();
    expected.sort();
    for p in [1, 3] {
        let mut fired = Vec::new();
        for i in 0..p {
            let mut b =
                crate::cases::ttl::keyed_on(backend, &StateClock::manual(0), p, i, &handles)?;
            let timers = TimerService::new(&mut b, "window", state_api::codec::postcard::<u32>())?;
            let mut mine = Vec::new();
            timers.advance_watermark(&mut b, i64::MAX, |_, t| {
                mine.push((t.timestamp, t.key, t.namespace));
                Ok(())
            })?;
            assert!(
                mine.windows(2).all(|w| w[0].0 <= w[1].0),
                "{}: fired in timestamp order",
                metadata_path.display()
            );
            fired.extend(mine);
        }
        fired.sort();
        assert_eq!(
            fired,
            expected,
            "{} at parallelism {p}",
            metadata_path.display()
        );
    }
    Ok(())
}
