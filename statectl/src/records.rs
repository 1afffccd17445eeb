//! Reading snapshots record by record without user types: RocksDB's native
//! handles through `backend-rocksdb`, and records as JSON lines for
//! `statectl dump`.

use std::path::{Path, PathBuf};

use checkpoint_store::layout::unique_file_name;
use checkpoint_store::rewrite::NativeRecords;
use serde_json::{json, Value};
use state_api::codec::CodecSchema;
use state_api::format::keyed::{Record, RecordBody};
use state_api::snapshot::handle::IncrementalNativeStateHandle;
use state_api::{Error, Result};

/// Reads RocksDB native handles by opening their files in a scratch folder.
#[derive(Clone, Debug)]
pub struct RocksDbRecords {
    scratch: PathBuf,
}

impl RocksDbRecords {
    /// A reader using folders under `scratch` (created when needed).
    pub fn new(scratch: &Path) -> Self {
        RocksDbRecords {
            scratch: scratch.to_path_buf(),
        }
    }
}

impl NativeRecords for RocksDbRecords {
    fn for_each_record(
        &self,
        handle: &IncrementalNativeStateHandle,
        f: &mut dyn FnMut(u32, Record<'_>) -> Result<()>,
    ) -> Result<()> {
        if handle.backend != "rocksdb" {
            return Err(Error::UnsupportedHandle {
                handle: format!("native {} handle", handle.backend),
                reason: "statectl reads native handles of rocksdb only".into(),
            });
        }
        let dir = self.scratch.join(format!("native-{}", unique_file_name()));
        let result = backend_rocksdb::export::for_each_native_record(handle, &dir, f);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `bytes` written by the default codec of a primitive type
/// (integers, `bool`, `String`), when `schema` names one; else `None`.
pub fn decode_primitive(schema: &CodecSchema, bytes: &[u8]) -> Option<Value> {
    let ty = schema
        .name
        .strip_prefix("postcard:")?
        .split('#')
        .next()?
        .rsplit("::")
        .next()?;
    fn whole<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((v, [])) => Some(v),
            _ => None,
        }
    }
    Some(match ty {
        "u8" => json!(whole::<u8>(bytes)?),
        "u16" => json!(whole::<u16>(bytes)?),
        "u32" => json!(whole::<u32>(bytes)?),
        "u64" => json!(whole::<u64>(bytes)?),
        "i8" => json!(whole::<i8>(bytes)?),
        "i16" => json!(whole::<i16>(bytes)?),
        "i32" => json!(whole::<i32>(bytes)?),
        "i64" => json!(whole::<i64>(bytes)?),
        "bool" => json!(whole::<bool>(bytes)?),
        "String" => json!(whole::<String>(bytes)?),
        _ => return None,
    })
}

/// `bytes` decoded with `schema` when it is a primitive, else as hex.
pub fn value_json(schema: Option<&CodecSchema>, bytes: &[u8]) -> Value {
    schema
        .and_then(|s| decode_primitive(s, bytes))
        .unwrap_or_else(|| json!({ "hex": hex(bytes) }))
}

/// One record as a JSON object: key group, key, namespace and body, with
/// keys and values decoded where their codecs are primitive.
pub fn record_json(
    operator: &str,
    state: &str,
    key_codec: &CodecSchema,
    namespace_codec: &CodecSchema,
    values: &[CodecSchema],
    key_group: u32,
    r: &Record<'_>,
) -> Value {
    let mut obj = json!({
        "operator": operator,
        "state": state,
        "key_group": key_group,
        "key": value_json(Some(key_codec), r.key),
        "namespace": value_json(Some(namespace_codec), r.namespace),
    });
    let body = match &r.body {
        RecordBody::Cell(v) => json!({ "value": value_json(values.first(), v) }),
        RecordBody::List(elements) => json!({
            "elements": elements.iter().map(|e| value_json(values.first(), e)).collect::<Vec<_>>()
        }),
        RecordBody::MapEntry { key, value } => json!({
            "user_key": value_json(values.first(), key),
            "user_value": value_json(values.get(1), value),
        }),
        RecordBody::Delete => json!({ "deleted": true }),
    };
    if let (Some(o), Some(b)) = (obj.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(name: &str) -> CodecSchema {
        CodecSchema {
            name: name.into(),
            version: 1,
        }
    }

    #[test]
    fn primitives_decode_and_others_stay_hex() {
        let u = postcard::to_allocvec(&300u64).expect("encode");
        assert_eq!(
            decode_primitive(&schema("postcard:u64#s0123456789abcdef"), &u),
            Some(json!(300))
        );
        let s = postcard::to_allocvec("apple").expect("encode");
        assert_eq!(
            decode_primitive(&schema("postcard:alloc::string::String#s0"), &s),
            Some(json!("apple"))
        );
        assert_eq!(decode_primitive(&schema("postcard:Order#s0"), &u), None);
        assert_eq!(
            decode_primitive(&schema("postcard:u8#s0"), &u),
            None,
            "trailing bytes"
        );
        assert_eq!(value_json(None, &[0xab, 0x01]), json!({"hex": "ab01"}));
    }
}
