//! Model-based property tests against a `BTreeMap` reference model.
