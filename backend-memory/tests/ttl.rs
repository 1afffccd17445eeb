//! TTL cleanup reclaims, on the heap: 10,000 keys in a value, a list and a
//! map state expire, and each cleanup the heap offers (explicit, per state
//! access, per record) brings the entries and a checkpoint's bytes down by at
//! least 99%. Run with `--nocapture` to see the figures.

use backend_memory::MemoryStateBackend;
use conformance_tests::cases::ttl::{checkpoint_bytes, reclamation};
use state_api::state::ttl::{IncrementalCleanup, TtlCleanup};
use state_api::{KeyedStateBackend, Result};

const KEYS: u64 = 10_000;

/// Only the cleanup under test runs: expired entries stay in checkpoints.
fn only(incremental: Option<IncrementalCleanup>) -> TtlCleanup {
    TtlCleanup {
        full_snapshot: false,
        incremental,
        compaction_filter: false,
    }
}

#[test]
fn explicit_cleanup_reclaims() -> Result<()> {
    let backend = MemoryStateBackend::new();
    let r = reclamation(
        &backend,
        KEYS,
        only(None),
        |b, _| {
            assert_eq!(b.cleanup_expired()?, KEYS * 5, "values, elements, entries");
            Ok(())
        },
        |b, id| checkpoint_bytes(&backend, b, id),
    )?;
    println!("memory, cleanup_expired: {r}");
    r.assert_reclaimed("cleanup_expired");
    Ok(())
}

#[test]
fn incremental_cleanup_per_access_reclaims() -> Result<()> {
    let backend = MemoryStateBackend::new();
    let budget = 50;
    let r = reclamation(
        &backend,
        KEYS,
        only(Some(IncrementalCleanup {
            entries_per_access: budget,
            per_record: false,
        })),
        |b, s| {
            // Accesses of other keys: each checks `budget` more entries.
            let accesses = KEYS as usize / budget + 40;
            for k in 0..accesses as u64 {
                b.set_current_key(KEYS + k)?;
                s.value.on(b).get()?;
                s.list.on(b).get()?;
                s.map.on(b).get(&1)?;
            }
            Ok(())
        },
        |b, id| checkpoint_bytes(&backend, b, id),
    )?;
    println!("memory, {budget} entries per access: {r}");
    r.assert_reclaimed("per access");
    Ok(())
}

#[test]
fn incremental_cleanup_is_bounded_per_access() -> Result<()> {
    let backend = MemoryStateBackend::new();
    let r = reclamation(
        &backend,
        KEYS,
        only(Some(IncrementalCleanup {
            entries_per_access: 5,
            per_record: false,
        })),
        |b, s| {
            for k in 0..10 {
                b.set_current_key(KEYS + k)?;
                s.value.on(b).get()?;
            }
            Ok(())
        },
        |b, _| Ok(b.num_entries()? as u64),
    )?;
    // Ten reads of the value state checked at most 50 of its entries.
    let removed = r.entries_before - r.entries_after;
    assert!(
        (1..=50).contains(&removed),
        "{removed} entries removed by ten steps of five"
    );
    Ok(())
}

#[test]
fn incremental_cleanup_per_record_reclaims() -> Result<()> {
    let backend = MemoryStateBackend::new();
    let budget = 20;
    let r = reclamation(
        &backend,
        KEYS,
        only(Some(IncrementalCleanup {
            entries_per_access: budget,
            per_record: true,
        })),
        |b, _| {
            // Records that touch no TTL state: the key change alone cleans.
            for k in 0..(KEYS as usize / budget + 40) as u64 {
                b.set_current_key(KEYS + k)?;
            }
            Ok(())
        },
        |b, id| checkpoint_bytes(&backend, b, id),
    )?;
    println!("memory, {budget} entries per record: {r}");
    r.assert_reclaimed("per record");
    Ok(())
}
