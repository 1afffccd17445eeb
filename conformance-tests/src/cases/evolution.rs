//! Schema evolution with [`EvolvingCodec`]: value and map-value types that
//! gain and lose fields between releases restore (migrated, then rewritten
//! by the next snapshot); a rollback to an older schema, and a map user key
//! whose type changes, are typed `IncompatibleState` errors naming the state
//! and both schemas.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use state_api::codec::{postcard, EvolvingCodec, SharedCodec};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use state_api::state::ttl::StateClock;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

use super::ttl::{keyed_on, savepoint};

/// An order as release 1 of a job stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderV1 {
    /// Kept.
    pub id: u64,
    /// Dropped by release 2.
    pub note: String,
}

/// Release 2: `note` is gone, `amount` is new (with a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderV2 {
    /// Kept.
    pub id: u64,
    /// New; old data reads as 0.
    #[serde(default)]
    pub amount: u32,
}

fn v1() -> SharedCodec<OrderV1> {
    Arc::new(EvolvingCodec::new("order", 1))
}

fn v2() -> SharedCodec<OrderV2> {
    Arc::new(EvolvingCodec::new("order", 2))
}

/// Writes keys `0..n` into a value state and a map state of [`OrderV1`]
/// and returns a savepoint of them.
pub fn write_v1<S: StateBackend>(backend: &S, n: u64) -> Result<KeyedStateHandle> {
    let mut b = keyed_on(backend, &StateClock::manual(0), 1, 0, &[])?;
    let value = b.value_state(&ValueStateDescriptor::with_codec("orders", v1()))?;
    let map = b.map_state(&MapStateDescriptor::with_codecs(
        "by-line",
        postcard::<u32>(),
        v1(),
    ))?;
    for k in 0..n {
        b.set_current_key(k)?;
        let order = OrderV1 {
            id: k,
            note: format!("note {k}"),
        };
        value.on(&mut b).set(order.clone())?;
        map.on(&mut b).put(k as u32 % 3, order)?;
    }
    savepoint(backend, &mut b, 1)
}

/// Restores `handle` with release 2's types and checks every value.
pub fn read_v2<S: StateBackend>(
    backend: &S,
    handle: KeyedStateHandle,
    n: u64,
) -> Result<S::Keyed<u64>> {
    let mut b = keyed_on(backend, &StateClock::manual(0), 1, 0, &[handle])?;
    let value = b.value_state(&ValueStateDescriptor::with_codec("orders", v2()))?;
    let map = b.map_state(&MapStateDescriptor::with_codecs(
        "by-line",
        postcard::<u32>(),
        v2(),
    ))?;
    for k in 0..n {
        b.set_current_key(k)?;
        let expected = OrderV2 { id: k, amount: 0 };
        assert_eq!(value.on(&mut b).get()?, Some(expected.clone()), "key {k}");
        assert_eq!(map.on(&mut b).get(&(k as u32 % 3))?, Some(expected));
    }
    Ok(b)
}

/// Fields added (with a default) and removed: the restore migrates, the
/// next savepoint is in the new schema and restores as is; restoring it
/// with the old schema is refused.
pub fn evolution_fields_added_and_removed<S: StateBackend>(backend: &S) -> Result<()> {
    let old = write_v1(backend, 20)?;
    let mut b = read_v2(backend, old, 20)?;
    let new = savepoint(backend, &mut b, 2)?;
    let metas = b.state_metas();
    assert!(
        metas
            .iter()
            .all(|m| m.values.last() == Some(&v2().schema())),
        "the states are in schema 2 now: {metas:?}"
    );
    read_v2(backend, new.clone(), 20)?;
    // A rollback to release 1 must not drop `amount` silently.
    let mut r = keyed_on(backend, &StateClock::manual(0), 1, 0, &[new])?;
    let e = r
        .value_state(&ValueStateDescriptor::with_codec("orders", v1()))
        .err()
        .expect("schema 1 cannot read schema 2");
    assert_eq!(e.kind(), ErrorKind::IncompatibleState, "{e}");
    assert!(
        matches!(&e, Error::IncompatibleCodec { state, role: "value", written, current }
            if state == "orders" && *written == v2().schema() && *current == v1().schema()),
        "{e:?}"
    );
    Ok(())
}

/// A map user key is part of an entry's identity: another type is refused,
/// however its codec relates to the old one.
pub fn evolution_map_user_key_cannot_change<S: StateBackend>(backend: &S) -> Result<()> {
    let old = write_v1(backend, 5)?;
    let mut r = keyed_on(backend, &StateClock::manual(0), 1, 0, &[old])?;
    let e = r
        .map_state(&MapStateDescriptor::with_codecs(
            "by-line",
            Arc::new(
                state_api::codec::PostcardCodec::<u64>::new()
                    .migrate_from_type(|old: u32| u64::from(old)),
            ) as SharedCodec<u64>,
            v2(),
        ))
        .err()
        .expect("a user key of another type");
    assert_eq!(e.kind(), ErrorKind::IncompatibleState, "{e}");
    assert!(
        matches!(&e, Error::IncompatibleCodec { state, role: "user key", .. } if state == "by-line"),
        "{e:?}"
    );
    Ok(())
}
