//! TTL cleanup reclaims on the file backend: 10,000 keys in a value, a list
//! and a map state expire, and the cleanup brings the entries and the bytes
//! of a checkpoint on disk down by at least 99%. Run with `--nocapture` to
//! see the figures.

use backend_fs::FsStateBackend;
use conformance_tests::cases::ttl::{checkpoint_bytes, reclamation};
use state_api::state::ttl::{IncrementalCleanup, TtlCleanup};
use state_api::{KeyedStateBackend, Result};

const KEYS: u64 = 10_000;

fn only(incremental: Option<IncrementalCleanup>) -> TtlCleanup {
    TtlCleanup {
        full_snapshot: false,
        incremental,
        compaction_filter: false,
    }
}

fn backend(dir: &std::path::Path) -> Result<FsStateBackend> {
    FsStateBackend::new(dir, "job")?.with_inline_threshold(0)
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))
}

#[test]
fn explicit_cleanup_reclaims_checkpoint_bytes() -> Result<()> {
    let dir = tempdir()?;
    let fs = backend(dir.path())?;
    let r = reclamation(
        &fs,
        KEYS,
        only(None),
        |b, _| {
            assert_eq!(b.cleanup_expired()?, KEYS * 5);
            Ok(())
        },
        |b, id| checkpoint_bytes(&fs, b, id),
    )?;
    println!("fs, cleanup_expired: {r}");
    r.assert_reclaimed("fs cleanup_expired");
    Ok(())
}

#[test]
fn full_snapshot_cleanup_reclaims_checkpoint_bytes() -> Result<()> {
    let dir = tempdir()?;
    let fs = backend(dir.path())?;
    let r = reclamation(
        &fs,
        KEYS,
        TtlCleanup {
            full_snapshot: true,
            incremental: None,
            compaction_filter: false,
        },
        |_, _| Ok(()),
        |b, id| checkpoint_bytes(&fs, b, id),
    )?;
    println!("fs, full snapshot (bytes only; memory keeps the entries): {r}");
    assert!(r.bytes_after * 100 <= r.bytes_before, "{r}");
    Ok(())
}

#[test]
fn incremental_cleanup_per_access_reclaims_checkpoint_bytes() -> Result<()> {
    let dir = tempdir()?;
    let fs = backend(dir.path())?;
    let budget = 50;
    let r = reclamation(
        &fs,
        KEYS,
        only(Some(IncrementalCleanup {
            entries_per_access: budget,
            per_record: false,
        })),
        |b, s| {
            for k in 0..(KEYS as usize / budget + 40) as u64 {
                b.set_current_key(KEYS + k)?;
                s.value.on(b).get()?;
                s.list.on(b).get()?;
                s.map.on(b).get(&1)?;
            }
            Ok(())
        },
        |b, id| checkpoint_bytes(&fs, b, id),
    )?;
    println!("fs, {budget} entries per access: {r}");
    r.assert_reclaimed("fs per access");
    Ok(())
}
