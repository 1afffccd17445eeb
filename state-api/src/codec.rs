//! Codecs turn keys, namespaces and values into bytes and back.
//!
//! Each codec has a [`CodecSchema`]: a name and a schema version, written into
//! every snapshot's metadata. On restore the codec given now is asked how it
//! relates to the schema the data was written with ([`Codec::compatibility`]):
//! readable as is, readable after migration, or incompatible (a clear error).
//!
//! The default codec, [`PostcardCodec`], uses serde with the
//! [postcard](https://docs.rs/postcard) wire format: compact, documented and
//! stable across releases. Its schema records the value type's identity (a
//! short name and a fingerprint of its serde shape, see [`shape`]), so state
//! written as one type and registered again as another fails with
//! [`crate::Error::IncompatibleCodec`] instead of reading reinterpreted bytes.

pub mod shape;

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

/// The schema name prefix of the default codec.
pub const POSTCARD_SCHEMA: &str = "postcard";

/// The default codec: serde with the postcard wire format.
///
/// Its schema is `postcard:<type>#<fingerprint>` at version 1, where the
/// fingerprint identifies the value type's serde shape (see [`shape`]):
///
/// * data written as a type of the same shape (the same type, or one renamed
///   or moved to another module) is read as is;
/// * data written as another shape is [`Compatibility::Incompatible`] unless
///   a migration was declared with [`PostcardCodec::migrate_from_type`];
/// * data written before schemas recorded the type (schema `postcard@v1`)
///   cannot be checked and is read as is, as it always was.
///
/// [`PostcardCodec::with_schema`] names the schema instead (the name is then
/// the whole identity, and [`PostcardCodec::migrate_from`] reads older
/// versions of it).
pub struct PostcardCodec<T> {
    /// `None`: the default identity, computed from `T` when first needed.
    name: Option<Arc<str>>,
    version: u32,
    migrations: BTreeMap<u32, MigrationFn<T>>,
    /// Migrations from other types' default schemas, by fingerprint.
    type_migrations: Vec<(String, MigrationFn<T>)>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for PostcardCodec<T> {
    fn clone(&self) -> Self {
        PostcardCodec {
            name: self.name.clone(),
            version: self.version,
            migrations: self.migrations.clone(),
            type_migrations: self.type_migrations.clone(),
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
            .field(
                "type_migrations",
                &self
                    .type_migrations
                    .iter()
                    .map(|m| &m.0)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<T> Default for PostcardCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PostcardCodec<T> {
    /// The codec with the default schema `postcard:<type>#<fingerprint>@v1`.
    pub fn new() -> Self {
        PostcardCodec {
            name: None,
            version: 1,
            migrations: BTreeMap::new(),
            type_migrations: Vec::new(),
            _marker: PhantomData,
        }
    }

    /// The codec with a schema of your naming, for types whose layout evolves.
    pub fn with_schema(name: impl Into<String>, version: u32) -> Self {
        PostcardCodec {
            name: Some(Arc::from(name.into())),
            version,
            migrations: BTreeMap::new(),
            type_migrations: Vec::new(),
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

    /// Declares that data written by the default codec of type `Old` (a
    /// value type this state had before) is read by decoding it as `Old` and
    /// converting it with `convert`, making such data
    /// [`Compatibility::AfterMigration`]. The state is rewritten as `T` by the
    /// next snapshot.
    ///
    /// ```
    /// use state_api::codec::{Codec, Compatibility, PostcardCodec};
    ///
    /// let old = PostcardCodec::<i64>::new();
    /// let new = PostcardCodec::<u64>::new().migrate_from_type(|v: i64| v.unsigned_abs());
    /// assert_eq!(new.compatibility(&old.schema()), Compatibility::AfterMigration);
    /// let mut bytes = Vec::new();
    /// old.encode(&-7, &mut bytes).unwrap();
    /// assert_eq!(new.decode_written(&old.schema(), &bytes), Ok(7));
    /// ```
    pub fn migrate_from_type<Old>(
        mut self,
        convert: impl Fn(Old) -> T + Send + Sync + 'static,
    ) -> Self
    where
        Old: Serialize + DeserializeOwned + 'static,
    {
        let identity = shape::type_identity::<Old>();
        let fingerprint = shape::fingerprint_of(&identity)
            .unwrap_or(&identity)
            .to_string();
        let old = PostcardCodec::<Old>::new();
        self.type_migrations.push((
            fingerprint,
            Arc::new(move |bytes: &[u8]| old.decode(bytes).map(&convert)),
        ));
        self
    }
}

impl<T: DeserializeOwned + 'static> PostcardCodec<T> {
    fn name(&self) -> Arc<str> {
        match &self.name {
            Some(name) => name.clone(),
            None => Arc::from(format!("{POSTCARD_SCHEMA}:{}", shape::type_identity::<T>())),
        }
    }

    /// The migration that reads data written with `written`, if one applies.
    fn migration(&self, written: &CodecSchema) -> Option<&MigrationFn<T>> {
        if self.name.is_some() {
            return if *written.name == *self.name() {
                self.migrations.get(&written.version)
            } else {
                None
            };
        }
        let fingerprint = written
            .name
            .strip_prefix(POSTCARD_SCHEMA)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(shape::fingerprint_of)?;
        self.type_migrations
            .iter()
            .find(|(f, _)| f == fingerprint)
            .map(|(_, read)| read)
    }

    /// Whether data written with `written` is read as is.
    fn reads_as_is(&self, written: &CodecSchema) -> bool {
        if written.version != self.version {
            return false;
        }
        let name = self.name();
        if *written.name == *name {
            return true;
        }
        if self.name.is_some() {
            return false;
        }
        // Written before schemas named the type: nothing to check against.
        if *written.name == *POSTCARD_SCHEMA {
            return true;
        }
        // A renamed or moved type of the same shape.
        let own = shape::fingerprint_of(&name);
        let theirs = written
            .name
            .strip_prefix(POSTCARD_SCHEMA)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(shape::fingerprint_of);
        own.is_some() && own == theirs
    }
}

impl<T> Codec<T> for PostcardCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn schema(&self) -> CodecSchema {
        CodecSchema::new(&*self.name(), self.version)
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
        if self.reads_as_is(written) {
            Compatibility::AsIs
        } else if self.migration(written).is_some() {
            Compatibility::AfterMigration
        } else {
            Compatibility::Incompatible
        }
    }

    fn decode_written(&self, written: &CodecSchema, bytes: &[u8]) -> Result<T, CodecError> {
        if self.reads_as_is(written) {
            return self.decode(bytes);
        }
        match self.migration(written) {
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

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Order {
        id: u64,
        amount: f64,
    }

    mod moved {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        pub struct Purchase {
            pub number: u64,
            pub total: f64,
        }
    }

    /// Regression: a `ValueState<i64>` registered after restore as
    /// `ValueState<u64>` read reinterpreted bytes, because every default
    /// codec recorded the same schema `postcard@v1`.
    #[test]
    fn default_schemas_tell_value_types_apart() {
        let i = PostcardCodec::<i64>::new();
        let u = PostcardCodec::<u64>::new();
        assert_ne!(i.schema(), u.schema());
        assert!(i.schema().name.starts_with("postcard:i64#s"));
        assert_eq!(u.compatibility(&i.schema()), Compatibility::Incompatible);
        assert_eq!(i.compatibility(&i.schema()), Compatibility::AsIs);
        assert_eq!(
            PostcardCodec::<String>::new().compatibility(&i.schema()),
            Compatibility::Incompatible
        );
    }

    #[test]
    fn renamed_types_of_the_same_shape_read_as_is() {
        let old = PostcardCodec::<Order>::new();
        let new = PostcardCodec::<moved::Purchase>::new();
        assert_ne!(old.schema().name, new.schema().name);
        assert_eq!(new.compatibility(&old.schema()), Compatibility::AsIs);
        let mut bytes = Vec::new();
        old.encode(&Order { id: 3, amount: 1.5 }, &mut bytes)
            .expect("encode");
        assert_eq!(
            new.decode_written(&old.schema(), &bytes),
            Ok(moved::Purchase {
                number: 3,
                total: 1.5
            })
        );
    }

    #[test]
    fn schemas_written_before_type_identities_read_as_is() {
        let legacy = CodecSchema::new(POSTCARD_SCHEMA, 1);
        assert_eq!(
            PostcardCodec::<i64>::new().compatibility(&legacy),
            Compatibility::AsIs
        );
        assert_eq!(
            PostcardCodec::<i64>::new().compatibility(&CodecSchema::new(POSTCARD_SCHEMA, 2)),
            Compatibility::Incompatible
        );
        assert_eq!(
            PostcardCodec::<i64>::with_schema("counter", 1).compatibility(&legacy),
            Compatibility::Incompatible
        );
    }

    #[test]
    fn type_migrations_read_the_old_type() {
        let old = PostcardCodec::<i64>::new();
        let new = PostcardCodec::<Order>::new().migrate_from_type(|v: i64| Order {
            id: v as u64,
            amount: 0.0,
        });
        assert_eq!(
            new.compatibility(&old.schema()),
            Compatibility::AfterMigration
        );
        assert_eq!(
            new.compatibility(&PostcardCodec::<u32>::new().schema()),
            Compatibility::Incompatible
        );
        let mut bytes = Vec::new();
        old.encode(&41, &mut bytes).expect("encode");
        assert_eq!(
            new.decode_written(&old.schema(), &bytes),
            Ok(Order {
                id: 41,
                amount: 0.0
            })
        );
        assert!(new
            .decode_written(&CodecSchema::new("x", 1), &bytes)
            .is_err());
    }
}
