//! Model-based property test of the heap backend.

conformance_tests::model_test!(backend_memory::MemoryStateBackend::new());
