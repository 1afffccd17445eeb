//! Keyed state: the five state kinds, namespaces, key listing, registration.

use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{KeyedStateBackend, Result, StateBackend};

use crate::harness::single;

/// Value state: get, update and clear over several keys.
pub fn value_basic<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        b.set_current_key(k.to_string())?;
        assert_eq!(state.on(&mut b).get()?, None, "fresh key {k} has no value");
        state.on(&mut b).update(Some(i as i64))?;
    }
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        b.set_current_key(k.to_string())?;
        assert_eq!(state.on(&mut b).get()?, Some(i as i64), "value of {k}");
    }
    b.set_current_key("b".into())?;
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared");
    b.set_current_key("a".into())?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(0),
        "other keys untouched by a clear"
    );
    Ok(())
}
