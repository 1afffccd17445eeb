//! A codec for value types that gain and lose fields between releases of a
//! job: serde with CBOR, where a struct is a map from field names to values,
//! so the bytes say which fields they hold.
//!
//! * A field added to the type reads old data when it has a default
//!   (`#[serde(default)]`); a field removed is skipped in old data (unless
//!   the type denies unknown fields). Renaming a field loses it, unless
//!   `#[serde(alias = "old")]` says so.
//! * Its schema is a name of yours and a version: bump the version whenever
//!   the type changes. Data of an older version of the same name is
//!   [`Compatibility::AfterMigration`] (read as it is, rewritten in the new
//!   version by the next snapshot); data of a newer version (a rollback to
//!   an older release) and data of another name are
//!   [`Compatibility::Incompatible`], so fields are never dropped silently.
//! * For values and map values only: CBOR does not promise one encoding per
//!   value (a map's entries come in iteration order), and keys must encode
//!   to equal bytes when equal.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use state_api::codec::{Codec, Compatibility, EvolvingCodec};
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct OrderV1 { id: u64, note: String }
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Order { id: u64, #[serde(default)] amount: u32 }
//!
//! let v1 = EvolvingCodec::<OrderV1>::new("order", 1);
//! let v2 = EvolvingCodec::<Order>::new("order", 2);
//! let mut bytes = Vec::new();
//! v1.encode(&OrderV1 { id: 7, note: "gift".into() }, &mut bytes).unwrap();
//! assert_eq!(v2.compatibility(&v1.schema()), Compatibility::AfterMigration);
//! assert_eq!(v2.decode_written(&v1.schema(), &bytes), Ok(Order { id: 7, amount: 0 }));
//! assert_eq!(v1.compatibility(&v2.schema()), Compatibility::Incompatible);
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Codec, CodecError, CodecSchema, Compatibility};

/// The schema name prefix of [`EvolvingCodec`].
pub const EVOLVING_SCHEMA: &str = "cbor";

/// Serde with CBOR under a versioned schema name (see the module docs).
pub struct EvolvingCodec<T> {
    name: String,
    version: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> EvolvingCodec<T> {
    /// The codec of schema `cbor:<name>` at `version`.
    pub fn new(name: &str, version: u32) -> Self {
        EvolvingCodec {
            name: format!("{EVOLVING_SCHEMA}:{name}"),
            version,
            _marker: PhantomData,
        }
    }
}

impl<T> Codec<T> for EvolvingCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn schema(&self) -> CodecSchema {
        CodecSchema::new(&*self.name, self.version)
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        ciborium::into_writer(value, out).map_err(|e| CodecError(format!("cbor encode: {e}")))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let mut rest = bytes;
        let value = ciborium::from_reader(&mut rest)
            .map_err(|e| CodecError(format!("cbor decode: {e}")))?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(CodecError(format!(
                "cbor decode: {} trailing bytes",
                rest.len()
            )))
        }
    }

    fn compatibility(&self, written: &CodecSchema) -> Compatibility {
        if written.name != self.name || written.version > self.version {
            Compatibility::Incompatible
        } else if written.version == self.version {
            Compatibility::AsIs
        } else {
            Compatibility::AfterMigration
        }
    }

    fn decode_written(&self, written: &CodecSchema, bytes: &[u8]) -> Result<T, CodecError> {
        match self.compatibility(written) {
            Compatibility::Incompatible => Err(CodecError(format!(
                "cannot read {written} as {}",
                self.schema()
            ))),
            _ => self.decode(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        a: u32,
        gone: String,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        a: u32,
        #[serde(default)]
        added: Vec<u8>,
    }

    #[test]
    fn fields_come_and_go() {
        let (v1, v2) = (
            EvolvingCodec::<V1>::new("t", 1),
            EvolvingCodec::<V2>::new("t", 2),
        );
        let mut bytes = Vec::new();
        v1.encode(
            &V1 {
                a: 5,
                gone: "x".into(),
            },
            &mut bytes,
        )
        .expect("encodes");
        assert_eq!(
            v2.decode_written(&v1.schema(), &bytes),
            Ok(V2 {
                a: 5,
                added: vec![]
            })
        );
        assert_eq!(v2.compatibility(&v2.schema()), Compatibility::AsIs);
        assert_eq!(
            v2.compatibility(&CodecSchema::new("cbor:other", 1)),
            Compatibility::Incompatible
        );
        assert!(v2.decode(&bytes[..bytes.len() - 1]).is_err());
        let mut doubled = bytes.clone();
        doubled.extend_from_slice(&bytes);
        assert!(v1.decode(&doubled).is_err(), "trailing bytes");
    }
}
