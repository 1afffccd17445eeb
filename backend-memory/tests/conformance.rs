//! The shared conformance suite on the heap backend.

conformance_tests::conformance_suite!(backend_memory::MemoryStateBackend::new());
