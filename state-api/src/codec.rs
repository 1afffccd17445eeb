//! Codecs turn keys, namespaces and values into bytes and back.
//!
//! Each codec has a [`CodecSchema`]: a name and a schema version, written into
//! every snapshot's metadata. On restore the codec given now is asked how it
//! relates to the schema the data was written with ([`Codec::compatibility`]):
//! readable as is, readable after migration, or incompatible (a clear error).
//!
//! The default codec, [`PostcardCodec`], uses serde with the
//! [postcard](https://docs.rs/postcard) wire format: compact, documented and
//! stable across releases.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The identity of a codec as recorded in snapshot metadata.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodecSchema {
    /// What the bytes are (for example `postcard`, or `postcard:Order`).
    pub name: String,
    /// Version of the layout under that name; bumped when the layout changes.
    pub version: u32,
}

impl CodecSchema {
    /// A schema from its parts.
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        CodecSchema {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for CodecSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@v{}", self.name, self.version)
    }
}

/// How a codec relates to the schema some data was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    /// The codec reads the bytes as they are.
    AsIs,
    /// The codec reads the bytes through [`Codec::decode_written`], and the
    /// state is rewritten in the new schema on the next snapshot.
    AfterMigration,
    /// The codec cannot read the bytes.
    Incompatible,
}

/// A codec failure, carried into [`crate::Error::Codec`] with the state's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Encodes and decodes values of `T`.
///
/// Contract:
/// * `decode(encode(v)) == v`.
/// * Equal values encode to equal bytes. For keys this is required: the key
///   group is computed from the encoded bytes.
/// * `decode` of arbitrary bytes returns an error, never panics.
pub trait Codec<T>: Send + Sync + 'static {
    /// The schema recorded in snapshots.
    fn schema(&self) -> CodecSchema;

    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a value written with this codec's current schema.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// How this codec relates to data written with `written`.
    ///
    /// The default: the same schema is [`Compatibility::AsIs`], anything else
    /// is [`Compatibility::Incompatible`].
    fn compatibility(&self, written: &CodecSchema) -> Compatibility {
        if *written == self.schema() {
            Compatibility::AsIs
        } else {
            Compatibility::Incompatible
        }
    }

    /// Decodes bytes written with `written`, a schema for which
    /// [`Codec::compatibility`] returned [`Compatibility::AfterMigration`] (or
    /// `AsIs`). The default decodes them as the current schema.
    fn decode_written(&self, written: &CodecSchema, bytes: &[u8]) -> Result<T, CodecError> {
        let _ = written;
        self.decode(bytes)
    }
}

/// A function that reads bytes of an older schema version.
pub type MigrationFn<T> = Arc<dyn Fn(&[u8]) -> Result<T, CodecError> + Send + Sync>;

/// The default codec: serde with the postcard wire format.
///
/// Its schema is `postcard` at version 1 unless renamed with
/// [`PostcardCodec::with_schema`]; older versions can be read through
/// [`PostcardCodec::migrate_from`].
pub struct PostcardCodec<T> {
    name: Arc<str>,
    version: u32,
    migrations: BTreeMap<u32, MigrationFn<T>>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for PostcardCodec<T> {
    fn clone(&self) -> Self {
        PostcardCodec {
            name: self.name.clone(),
            version: self.version,
            migrations: self.migrations.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for PostcardCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostcardCodec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("migrations", &self.migrations.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<T> Default for PostcardCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PostcardCodec<T> {
    /// The codec with schema `postcard@v1`.
    pub fn new() -> Self {
        PostcardCodec {
            name: Arc::from("postcard"),
            version: 1,
            migrations: BTreeMap::new(),
            _marker: PhantomData,
        }
    }

    /// The codec with a schema of your naming, for types whose layout evolves.
    pub fn with_schema(name: impl Into<String>, version: u32) -> Self {
        PostcardCodec {
            name: Arc::from(name.into()),
            version,
            migrations: BTreeMap::new(),
            _marker: PhantomData,
        }
    }

    /// Declares that bytes of schema version `version` (same name) can be read
    /// with `read`, making such data [`Compatibility::AfterMigration`].
    pub fn migrate_from(
        mut self,
        version: u32,
        read: impl Fn(&[u8]) -> Result<T, CodecError> + Send + Sync + 'static,
    ) -> Self {
        self.migrations.insert(version, Arc::new(read));
        self
    }
}

impl<T> Codec<T> for PostcardCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn schema(&self) -> CodecSchema {
        CodecSchema::new(&*self.name, self.version)
    }

    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        postcard::serialize_with_flavor(value, AppendToVec(out))
            .map_err(|e| CodecError(format!("postcard encode: {e}")))
    }

    #[inline]
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError(format!(
                "postcard decode: {} trailing bytes",
                rest.len()
            ))),
            Err(e) => Err(CodecError(format!("postcard decode: {e}"))),
        }
    }

    fn compatibility(&self, written: &CodecSchema) -> Compatibility {
        if *written.name != *self.name {
            Compatibility::Incompatible
        } else if written.version == self.version {
            Compatibility::AsIs
        } else if self.migrations.contains_key(&written.version) {
            Compatibility::AfterMigration
        } else {
            Compatibility::Incompatible
        }
    }

    fn decode_written(&self, written: &CodecSchema, bytes: &[u8]) -> Result<T, CodecError> {
        if written.version == self.version {
            return self.decode(bytes);
        }
        match self.migrations.get(&written.version) {
            Some(read) => read(bytes),
            None => Err(CodecError(format!(
                "no migration from {written} to {}",
                self.schema()
            ))),
        }
    }
}

/// A postcard output that appends to a caller's buffer (no allocation once
/// the buffer has grown).
struct AppendToVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendToVec<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A shared, dynamically dispatched codec, as stored in descriptors.
pub type SharedCodec<T> = Arc<dyn Codec<T>>;

/// The default codec for `T`, shared.
pub fn postcard<T>() -> SharedCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    Arc::new(PostcardCodec::<T>::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let c = PostcardCodec::<(i64, String)>::new();
        let mut buf = vec![9];
        c.encode(&(-5, "x".into()), &mut buf).expect("encode");
        assert_eq!(buf[0], 9, "encode appends");
        assert_eq!(c.decode(&buf[1..]), Ok((-5, "x".to_string())));
        assert!(
            c.decode(&buf).is_err(),
            "extra leading byte shifts the layout"
        );
        let mut extra = buf[1..].to_vec();
        extra.push(0);
        assert!(c.decode(&extra).is_err(), "trailing bytes are refused");
    }

    #[test]
    fn compatibility_outcomes() {
        let v2 = PostcardCodec::<i64>::with_schema("counter", 2)
            .migrate_from(1, |b| Ok(i64::from(*b.first().unwrap_or(&0))));
        assert_eq!(
            v2.compatibility(&CodecSchema::new("counter", 2)),
            Compatibility::AsIs
        );
        assert_eq!(
            v2.compatibility(&CodecSchema::new("counter", 1)),
            Compatibility::AfterMigration
        );
        assert_eq!(
            v2.compatibility(&CodecSchema::new("counter", 0)),
            Compatibility::Incompatible
        );
        assert_eq!(
            v2.compatibility(&CodecSchema::new("postcard", 2)),
            Compatibility::Incompatible
        );
        assert_eq!(
            v2.decode_written(&CodecSchema::new("counter", 1), &[7]),
            Ok(7)
        );
    }
}
