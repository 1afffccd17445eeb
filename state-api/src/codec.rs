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

pub mod evolving;
pub mod shape;

pub use evolving::EvolvingCodec;

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

    /// The key hash of `value`: [`crate::key_group::key_hash`] of the bytes
    /// [`Codec::encode`] writes, which places a key in its key group. The
    /// default encodes into `scratch` (cleared first) and hashes it. A codec
    /// may compute it without encoding, but must return exactly that hash:
    /// it is part of the persisted format.
    #[inline]
    fn key_hash(&self, value: &T, scratch: &mut Vec<u8>) -> Result<u32, CodecError> {
        scratch.clear();
        self.encode(value, scratch)?;
        Ok(crate::key_group::key_hash(scratch))
    }

    /// A plain function returning [`Codec::key_hash`] of a value, for
    /// codecs whose keys hash without scratch space and never fail (the
    /// default codec's integers). Backends call it on every record instead of
    /// the dynamic `key_hash`. The default: none.
    fn key_hasher(&self) -> Option<fn(&T) -> u32> {
        None
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

    /// Integers, `bool` and strings are hashed without serde: an integer's
    /// varint is built on the stack, a string's length prefix and bytes go
    /// straight into `scratch`. The bytes are postcard's, so the hash is the
    /// same (tested against [`Codec::encode`] for every such type).
    #[inline]
    fn key_hash(&self, value: &T, scratch: &mut Vec<u8>) -> Result<u32, CodecError> {
        if let Some(hash) = fast_key::hash(value, scratch) {
            return Ok(hash);
        }
        scratch.clear();
        self.encode(value, scratch)?;
        Ok(crate::key_group::key_hash(scratch))
    }

    fn key_hasher(&self) -> Option<fn(&T) -> u32> {
        fast_key::hasher::<T>()
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
/// Key hashes of the types whose postcard bytes are simple enough to build
/// by hand (see [`PostcardCodec`]'s `key_hash`).
mod fast_key {
    use std::any::Any;

    use crate::key_group::key_hash;

    /// The key hash of postcard's varint of `v` (seven bits a byte, low
    /// bits first, the high bit set on every byte but the last), without
    /// writing the bytes out: the 7-bit groups are spread into the bytes of
    /// two words with shifts and masks, and the words are hashed directly. No
    /// branch depends on the value but the length's. The same value as
    /// [`key_hash`] of the bytes (tested below at every length).
    #[inline(always)]
    fn varint_hash(v: u64) -> u32 {
        if v < 1 << 28 {
            // One to four bytes: one word.
            let v = v as u32;
            let word = (v & 0x7f)
                | ((v << 1) & 0x7f00)
                | ((v << 2) & 0x7f_0000)
                | ((v << 3) & 0x7f00_0000);
            let len = (32 - (v | 1).leading_zeros()).div_ceil(7);
            let cont = 0x0080_8080 & ((1u32 << (8 * (len - 1))) - 1);
            return crate::key_group::murmur3_32_word(word | cont, len);
        }
        // Bytes 0..8 carry bits 0..56, bytes 8 and 9 bits 56..64.
        let mut lo = 0u64;
        for i in 0..8 {
            lo |= ((v >> (7 * i)) & 0x7f) << (8 * i);
        }
        let hi = ((v >> 56) & 0x7f) | ((v >> 63) << 8);
        let bits = 64 - (v | 1).leading_zeros();
        let len = bits.div_ceil(7);
        // Continuation bits on the first `len - 1` bytes.
        let lo_cont = if len >= 9 {
            0x8080_8080_8080_8080
        } else {
            0x8080_8080_8080_8080 & ((1u64 << (8 * (len - 1))) - 1)
        };
        let hi_cont = if len == 10 { 0x80 } else { 0 };
        let bytes = u128::from(lo | lo_cont) | (u128::from(hi | hi_cont) << 64);
        crate::key_group::murmur3_32_words(bytes, len)
    }

    #[inline(always)]
    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    /// The key hash of a fixed-width value's postcard bytes (integers and
    /// `bool`), `None` for other types. The type tests fold away at compile
    /// time.
    #[inline]
    fn fixed<T: 'static>(value: &T) -> Option<u32> {
        let any = value as &dyn Any;
        if let Some(v) = any.downcast_ref::<i64>() {
            return Some(varint_hash(zigzag(*v)));
        }
        if let Some(v) = any.downcast_ref::<u64>() {
            return Some(varint_hash(*v));
        }
        if let Some(v) = any.downcast_ref::<i32>() {
            return Some(varint_hash(zigzag(i64::from(*v))));
        }
        if let Some(v) = any.downcast_ref::<u32>() {
            return Some(varint_hash(u64::from(*v)));
        }
        if let Some(v) = any.downcast_ref::<i16>() {
            return Some(varint_hash(zigzag(i64::from(*v))));
        }
        if let Some(v) = any.downcast_ref::<u16>() {
            return Some(varint_hash(u64::from(*v)));
        }
        if let Some(v) = any.downcast_ref::<u8>() {
            return Some(key_hash(&[*v]));
        }
        if let Some(v) = any.downcast_ref::<i8>() {
            return Some(key_hash(&[*v as u8]));
        }
        if let Some(v) = any.downcast_ref::<bool>() {
            return Some(key_hash(&[u8::from(*v)]));
        }
        None
    }

    /// [`fixed`] as a plain function, for the types it handles.
    pub(super) fn hasher<T: 'static>() -> Option<fn(&T) -> u32> {
        use std::any::TypeId;
        let t = TypeId::of::<T>();
        let fixed_width = [
            TypeId::of::<i64>(),
            TypeId::of::<u64>(),
            TypeId::of::<i32>(),
            TypeId::of::<u32>(),
            TypeId::of::<i16>(),
            TypeId::of::<u16>(),
            TypeId::of::<u8>(),
            TypeId::of::<i8>(),
            TypeId::of::<bool>(),
        ];
        fixed_width
            .contains(&t)
            .then_some(|v: &T| fixed(v).unwrap_or_default())
    }

    /// The key hash of `value`'s postcard bytes, for the types handled here
    /// (`None` for the others).
    #[inline]
    pub(super) fn hash<T: 'static>(value: &T, scratch: &mut Vec<u8>) -> Option<u32> {
        if let Some(hash) = fixed(value) {
            return Some(hash);
        }
        let text = (value as &dyn Any).downcast_ref::<String>()?;
        scratch.clear();
        crate::format::bytes::put_varint(scratch, text.len() as u64);
        scratch.extend_from_slice(text.as_bytes());
        Some(key_hash(scratch))
    }
}

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

    /// What the default `key_hash` computes: the hash of the encoding.
    fn encoded_hash<T: Serialize + DeserializeOwned + 'static>(v: &T) -> u32 {
        let mut bytes = Vec::new();
        PostcardCodec::<T>::new()
            .encode(v, &mut bytes)
            .expect("encode");
        crate::key_group::key_hash(&bytes)
    }

    fn fast_hash<T: Serialize + DeserializeOwned + 'static>(v: &T) -> u32 {
        let mut scratch = vec![0xAB; 3];
        PostcardCodec::<T>::new()
            .key_hash(v, &mut scratch)
            .expect("hash")
    }

    proptest::proptest! {
        /// The fast key hashes are the hashes of postcard's bytes, at every
        /// varint length and sign.
        #[test]
        fn fast_key_hashes_equal_the_hash_of_the_encoding(
            a in proptest::num::i64::ANY,
            shift in 0u32..64,
            s in ".{0,200}",
        ) {
            let small = a >> shift;
            proptest::prop_assert_eq!(fast_hash(&a), encoded_hash(&a));
            proptest::prop_assert_eq!(fast_hash(&small), encoded_hash(&small));
            proptest::prop_assert_eq!(fast_hash(&(small as u64)), encoded_hash(&(small as u64)));
            proptest::prop_assert_eq!(fast_hash(&(a as u64)), encoded_hash(&(a as u64)));
            proptest::prop_assert_eq!(fast_hash(&(small as i32)), encoded_hash(&(small as i32)));
            proptest::prop_assert_eq!(fast_hash(&(small as u32)), encoded_hash(&(small as u32)));
            proptest::prop_assert_eq!(fast_hash(&(small as i16)), encoded_hash(&(small as i16)));
            proptest::prop_assert_eq!(fast_hash(&(small as u16)), encoded_hash(&(small as u16)));
            proptest::prop_assert_eq!(fast_hash(&(small as i8)), encoded_hash(&(small as i8)));
            proptest::prop_assert_eq!(fast_hash(&(small as u8)), encoded_hash(&(small as u8)));
            proptest::prop_assert_eq!(fast_hash(&(a < 0)), encoded_hash(&(a < 0)));
            proptest::prop_assert_eq!(fast_hash(&s), encoded_hash(&s));
        }
    }

    #[test]
    fn key_hashers_exist_for_fixed_width_keys_and_agree() {
        fn agree<T: Serialize + DeserializeOwned + 'static>(values: &[T]) {
            let codec = PostcardCodec::<T>::new();
            let hasher = codec.key_hasher().expect("a fixed-width key");
            for v in values {
                assert_eq!(hasher(v), encoded_hash(v));
            }
        }
        agree(&[0i64, -1, 300, i64::MIN, i64::MAX]);
        agree(&[0u64, 300, u64::MAX]);
        agree(&[0i32, -70_000, i32::MAX]);
        agree(&[0u32, u32::MAX]);
        agree(&[-3i16, i16::MAX]);
        agree(&[7u16, u16::MAX]);
        agree(&[-3i8, 100]);
        agree(&[3u8, 255]);
        agree(&[true, false]);
        assert!(PostcardCodec::<String>::new().key_hasher().is_none());
        assert!(PostcardCodec::<(i64, i64)>::new().key_hasher().is_none());
    }

    #[test]
    fn fast_key_hashes_at_the_edges() {
        for v in [0, 1, -1, 63, 64, -64, -65, i64::MIN, i64::MAX] {
            assert_eq!(fast_hash(&v), encoded_hash(&v), "{v}");
        }
        for v in [0u64, 127, 128, 16_383, 16_384, u64::MAX] {
            assert_eq!(fast_hash(&v), encoded_hash(&v), "{v}");
        }
        let long = "x".repeat(300);
        assert_eq!(fast_hash(&long), encoded_hash(&long));
        // A type without a fast path takes the default.
        let pair = (3i64, "k".to_string());
        assert_eq!(fast_hash(&pair), encoded_hash(&pair));
    }
}
