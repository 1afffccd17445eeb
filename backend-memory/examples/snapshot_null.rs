//! Times the asynchronous part of a 1,000,000-key snapshot into a stream
//! that discards its bytes (no allocation, no I/O): the encoding cost alone.

use std::sync::Arc;
use std::time::Instant;

use backend_memory::MemoryStateBackend;
use state_api::backend::KeyedBackendParams;
use state_api::snapshot::stream::{
    CheckpointOutputStream, CheckpointStreamFactory, StreamScope, StreamStateHandle,
};
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, StateBackend};

struct Null;
struct NullStream(u64);

impl CheckpointStreamFactory for Null {
    fn create_stream(&self, _: StreamScope) -> state_api::Result<Box<dyn CheckpointOutputStream>> {
        Ok(Box::new(NullStream(0)))
    }
}

impl CheckpointOutputStream for NullStream {
    fn write_all(&mut self, bytes: &[u8]) -> state_api::Result<()> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    fn position(&self) -> u64 {
        self.0
    }
    fn close_and_get_handle(self: Box<Self>) -> state_api::Result<StreamStateHandle> {
        Ok(StreamStateHandle::InMemory {
            name: "null".into(),
            data: Arc::from(Vec::new()),
        })
    }
}

fn main() -> state_api::Result<()> {
    let keys: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let backend = MemoryStateBackend::new();
    let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
    let mut b = backend.create_keyed_backend(params, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for k in 0..keys {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
    }
    for round in 0..5 {
        let t = Instant::now();
        b.snapshot(round, Arc::new(Null), SnapshotOptions::default())?
            .run()?;
        println!(
            "round {round}: encode {keys} entries into a null stream: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
