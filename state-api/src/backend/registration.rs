//! The checks every keyed backend makes when a state is registered or a
//! snapshot is restored, written once: a state registered again must match,
//! a restored state's codecs must be readable, and a restored file must have
//! this backend's max parallelism and a compatible key codec.

use crate::backend::KeyedBackendParams;
use crate::codec::{CodecSchema, Compatibility, SharedCodec};
use crate::error::{Error, Result};
use crate::format::keyed::KeyedSnapshotMeta;
use crate::state::StateMeta;

pub use crate::error::codec_error;

/// A state registered again must have the same kind and codec schemas.
pub fn check_same_registration(existing: &StateMeta, requested: &StateMeta) -> Result<()> {
    if existing.kind != requested.kind {
        return Err(Error::StateKindMismatch {
            name: requested.name.clone(),
            registered: existing.kind.to_string(),
            requested: requested.kind.to_string(),
        });
    }
    check_namespace(existing, requested)?;
    for (i, (a, b)) in existing.values.iter().zip(&requested.values).enumerate() {
        if a != b {
            return Err(Error::IncompatibleCodec {
                state: requested.name.clone(),
                role: requested.value_roles()[i],
                written: a.clone(),
                current: b.clone(),
            });
        }
    }
    Ok(())
}

fn check_namespace(written: &StateMeta, requested: &StateMeta) -> Result<()> {
    // Namespaces are part of every entry's identity: never migrated.
    if written.namespace != requested.namespace {
        return Err(Error::IncompatibleCodec {
            state: requested.name.clone(),
            role: "namespace",
            written: written.namespace.clone(),
            current: requested.namespace.clone(),
        });
    }
    Ok(())
}

/// Checks a state registered over restored data written as `written`:
/// the same kind, a namespace codec that reads the namespaces as they are
/// (`namespace`: the namespace codec's [`Compatibility`] with the written
/// schema; namespaces are part of every entry's identity, never migrated),
/// and value codecs that read the data (`compat` per value role, from
/// [`value_compatibility`]).
pub fn check_restored_registration(
    written: &StateMeta,
    requested: &StateMeta,
    namespace: Compatibility,
    compat: &[Compatibility],
) -> Result<()> {
    if written.kind != requested.kind {
        return Err(Error::StateKindMismatch {
            name: requested.name.clone(),
            registered: written.kind.to_string(),
            requested: requested.kind.to_string(),
        });
    }
    if namespace != Compatibility::AsIs {
        return Err(Error::IncompatibleCodec {
            state: requested.name.clone(),
            role: "namespace",
            written: written.namespace.clone(),
            current: requested.namespace.clone(),
        });
    }
    for (i, c) in compat.iter().enumerate() {
        if *c == Compatibility::Incompatible {
            return Err(Error::IncompatibleCodec {
                state: requested.name.clone(),
                role: requested.value_roles()[i],
                written: written.values[i].clone(),
                current: requested.values[i].clone(),
            });
        }
    }
    Ok(())
}

/// How `codec` relates to the schema of value role `role` of a restored state
/// named `name` in `restored` (as is when nothing was restored).
pub fn value_compatibility<T: 'static>(
    codec: &SharedCodec<T>,
    restored: &[StateMeta],
    name: &str,
    role: usize,
) -> Compatibility {
    restored
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.values.get(role))
        .map_or(Compatibility::AsIs, |w| {
            crate::state::ttl::compatibility(&**codec, w)
        })
}

/// Map user keys are part of an entry's identity: only an as-is codec reads them.
pub fn key_compatibility(c: Compatibility) -> Compatibility {
    match c {
        Compatibility::AsIs => Compatibility::AsIs,
        _ => Compatibility::Incompatible,
    }
}

/// Decodes a restored value, through the codec's migration when needed.
pub fn decode_restored<T: 'static>(
    codec: &SharedCodec<T>,
    compat: Compatibility,
    written: &CodecSchema,
    bytes: &[u8],
    state: &str,
    role: &'static str,
) -> Result<T> {
    match compat {
        Compatibility::AfterMigration => {
            crate::state::ttl::decode_written(&**codec, written, bytes)
        }
        _ => codec.decode(bytes),
    }
    .map_err(|e| codec_error(state, role, e))
}

/// Checks that a snapshot file can be restored into a backend with `params`
/// (same max parallelism, as-is key codec), and adds its states to `metas`
/// (a state in several files must be the same everywhere). Returns the names
/// of the states seen for the first time.
pub fn accept_restored_file<K: 'static>(
    file: &str,
    meta: &KeyedSnapshotMeta,
    params: &KeyedBackendParams<K>,
    metas: &mut Vec<StateMeta>,
) -> Result<Vec<String>> {
    if meta.max_parallelism != params.max_parallelism {
        return Err(Error::MaxParallelismMismatch {
            file: file.to_string(),
            snapshot: meta.max_parallelism,
            backend: params.max_parallelism,
        });
    }
    if params.key_codec.compatibility(&meta.key_codec) != Compatibility::AsIs {
        return Err(Error::IncompatibleCodec {
            state: "<key>".into(),
            role: "key",
            written: meta.key_codec.clone(),
            current: params.key_codec.schema(),
        });
    }
    let mut new = Vec::new();
    for s in &meta.states {
        match metas.iter().find(|m| m.name == s.name) {
            None => {
                new.push(s.name.clone());
                metas.push(s.clone());
            }
            Some(m) if m == s => {}
            Some(m) => {
                return Err(Error::StateKindMismatch {
                    name: s.name.clone(),
                    registered: format!("{} {:?} in another handle", m.kind, m.values),
                    requested: format!("{} {:?} in {file}", s.kind, s.values),
                })
            }
        }
    }
    Ok(new)
}

/// Checks that a restored key belongs to the key group it is stored under.
pub fn check_key_group(
    file: &str,
    offset: u64,
    key: &[u8],
    key_group: u32,
    max_parallelism: u32,
) -> Result<()> {
    let actual =
        crate::key_group::key_group_for_hash(crate::key_group::key_hash(key), max_parallelism);
    if actual == key_group {
        Ok(())
    } else {
        Err(Error::Corrupted {
            file: file.to_string(),
            offset,
            reason: format!("a key of key group {actual} is stored under key group {key_group}"),
        })
    }
}
