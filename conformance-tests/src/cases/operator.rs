//! Operator state: list, union list and broadcast state; snapshots; redistribution.
