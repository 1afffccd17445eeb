//! Incremental heap checkpoints: delta files, chains, compaction.

use backend_fs::FsStateBackend;
use conformance_tests::harness::{keyed, snapshot, TempDirBackend};
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ListStateDescriptor;
use state_api::{codec, KeyedStateBackend, Result};

/// Regression: a delete recorded in a delta file was ignored by the heap
/// restore for cell and list states, so an entry cleared after the base
/// snapshot came back after a restore (found by the model-based test).
#[test]
fn a_delete_in_a_delta_file_removes_the_entry() -> Result<()> {
    let b = TempDirBackend::new(|dir| {
        Ok(FsStateBackend::new(dir, "job")?
            .with_inline_threshold(0)?
            .with_incremental(true))
    });
    let mut k = keyed::<_, u16>(&b, 64, 1, 0, &[])?;
    let l = k.list_state(
        &ListStateDescriptor::<u8>::new("list").with_namespace(codec::postcard::<u8>()),
    )?;
    k.set_current_key(45)?;
    l.on_ns(&mut k, &2).update(vec![29, 28])?;
    snapshot(&b, &mut k, 1)?;
    l.on_ns(&mut k, &2).update(vec![])?;
    let h2 = snapshot(&b, &mut k, 2)?.expect("state was written");
    assert_eq!(h2.pieces().len(), 2, "a base and one delta");
    let mut r = keyed::<_, u16>(&b, 64, 1, 0, &[h2])?;
    let l = r.list_state(
        &ListStateDescriptor::<u8>::new("list").with_namespace(codec::postcard::<u8>()),
    )?;
    r.set_current_key(45)?;
    assert_eq!(l.on_ns(&mut r, &2).get()?, None);
    Ok(())
}
