//! Operator snapshot files.

use state_api::format::frame::Compression;
use state_api::format::operator::{
    describe_operator_file, read_operator_bytes, write_operator_snapshot, OperatorStateData,
    OperatorStateMeta,
};
use state_api::snapshot::rescale::assign_operator_state;
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, StreamScope,
};

use crate::keyed::in_memory;

/// An operator file through the reader: its layout (`describe_operator_file`),
/// every element its own handle names (`read_operator_bytes`), and every part
/// a rescale to 1 to 3 subtasks assigns. A file that reads is written again
/// and must read back to the same states and elements.
pub fn operator_file(data: &[u8]) {
    let file = in_memory("fuzz", data);
    let Ok(handle) = describe_operator_file(file.clone(), 1) else {
        return;
    };
    let bytes = file.read().expect("in-memory bytes");
    let Ok(states) = read_operator_bytes(&bytes, &handle) else {
        return;
    };
    for p in 1..=3 {
        let assigned =
            assign_operator_state(std::slice::from_ref(&handle), p).expect("parallelism > 0");
        for part in assigned.iter().flatten() {
            read_operator_bytes(&bytes, part).expect("an assigned part of a readable file reads");
        }
    }

    let out = MemoryCheckpointStreamFactory::new(usize::MAX, "rewritten")
        .create_stream(StreamScope::Exclusive)
        .expect("in-memory streams open");
    let rewritten = write_operator_snapshot(out, &states, Compression::None, 1, &|| Ok(()))
        .expect("states read from a file can be written");
    let again = read_operator_bytes(&rewritten.data.read().expect("in-memory bytes"), &rewritten)
        .expect("a rewritten file reads");
    assert_eq!(
        summary(&again),
        summary(&states),
        "a round trip changed the states"
    );
}

/// What two reads must agree on (`OperatorStateData` has no `PartialEq`).
fn summary(states: &[OperatorStateData]) -> Vec<(&OperatorStateMeta, &[Vec<u8>])> {
    states
        .iter()
        .map(|s| (&s.meta, s.elements.as_slice()))
        .collect()
}
