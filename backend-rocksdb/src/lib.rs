//! Keyed state in embedded RocksDB.
