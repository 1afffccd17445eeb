//! The identity the default codec records for a type: a readable short name
//! and a fingerprint of the type's serde shape.
//!
//! Postcard writes no field or type names, only the values in the order of
//! the serde data model, so two types read each other's bytes exactly when
//! their *shapes* agree: the same primitives (`i64` is not `u64`), sequences,
//! maps, options, tuples, structs' field types in order, enums' variants in
//! order with their contents. The fingerprint is a 64-bit FNV-1a hash of a
//! canonical text of that shape, with every container and field name left
//! out, so renaming or moving a type keeps its data readable, while changing
//! a field's type, adding a field or reordering fields makes a restore fail
//! with a clear error instead of reading garbage.
//!
//! The shape comes from tracing the type's `Deserialize` implementation
//! (serde-reflection). A type whose deserializer cannot be traced (it
//! validates what it reads, or asks for `deserialize_any`) falls back to a
//! fingerprint of its full Rust type name, marked `n` instead of `s`.
//!
//! The canonical shape text, which the fingerprint hashes:
//!
//! ```text
//! unit bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str bytes
//! opt(F)  seq(F)  map(K,V)  tup(F,..)  arr(F;N)
//! ustruct  newtype(F)  tstruct(F,..)  struct(F,..)
//! enum(I:V,..) with V one of: unit  newtype(F)  tuple(F,..)  struct(F,..)
//! ref(D)  a type already being described D levels up (recursive types)
//! ```

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde_reflection::{
    ContainerFormat, Format, FormatHolder, Named, Registry, Samples, Tracer, TracerConfig,
    VariantFormat,
};

/// The identity of `T` as the default codec records it:
/// `<short type name>#<s|n><16 hex digits>`.
pub(crate) fn type_identity<T: DeserializeOwned + 'static>() -> Arc<str> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<str>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = TypeId::of::<T>();
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return found.clone();
    }
    let full_name = std::any::type_name::<T>();
    let fingerprint = match shape_of::<T>() {
        Some(shape) => format!("s{:016x}", fnv1a64(shape.as_bytes())),
        None => format!("n{:016x}", fnv1a64(full_name.as_bytes())),
    };
    let identity: Arc<str> = Arc::from(format!("{}#{fingerprint}", short_type_name(full_name)));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, identity.clone());
    identity
}

/// The fingerprint part of an identity written by [`type_identity`] (after
/// the last `#`), if it has one.
pub(crate) fn fingerprint_of(identity: &str) -> Option<&str> {
    identity
        .rsplit_once('#')
        .map(|(_, f)| f)
        .filter(|f| f.len() == 17 && (f.starts_with('s') || f.starts_with('n')))
}

/// The canonical shape text of `T`, or `None` when it cannot be traced.
pub(crate) fn shape_of<T: DeserializeOwned>() -> Option<String> {
    let mut tracer = Tracer::new(TracerConfig::default());
    let samples = Samples::new();
    let (mut format, _) = tracer.trace_type::<T>(&samples).ok()?;
    format.normalize().ok()?;
    let registry = tracer.registry().ok()?;
    let mut out = String::new();
    let mut stack = Vec::new();
    describe(&format, &registry, &mut stack, &mut out)?;
    Some(out)
}

fn describe(
    format: &Format,
    registry: &Registry,
    stack: &mut Vec<String>,
    out: &mut String,
) -> Option<()> {
    let simple = match format {
        Format::Variable(_) => return None,
        Format::TypeName(name) => {
            if let Some(depth) = stack.iter().rev().position(|n| n == name) {
                let _ = write!(out, "ref({depth})");
                return Some(());
            }
            let container = registry.get(name)?;
            stack.push(name.clone());
            let described = describe_container(container, registry, stack, out);
            stack.pop();
            return described;
        }
        Format::Unit => "unit",
        Format::Bool => "bool",
        Format::I8 => "i8",
        Format::I16 => "i16",
        Format::I32 => "i32",
        Format::I64 => "i64",
        Format::I128 => "i128",
        Format::U8 => "u8",
        Format::U16 => "u16",
        Format::U32 => "u32",
        Format::U64 => "u64",
        Format::U128 => "u128",
        Format::F32 => "f32",
        Format::F64 => "f64",
        Format::Char => "char",
        Format::Str => "str",
        Format::Bytes => "bytes",
        Format::Option(inner) => return wrap("opt", [&**inner], registry, stack, out),
        Format::Seq(inner) => return wrap("seq", [&**inner], registry, stack, out),
        Format::Map { key, value } => return wrap("map", [&**key, &**value], registry, stack, out),
        Format::Tuple(items) => return wrap("tup", items, registry, stack, out),
        Format::TupleArray { content, size } => {
            out.push_str("arr(");
            describe(content, registry, stack, out)?;
            let _ = write!(out, ";{size})");
            return Some(());
        }
    };
    out.push_str(simple);
    Some(())
}

fn wrap<'a>(
    tag: &str,
    items: impl IntoIterator<Item = &'a Format>,
    registry: &Registry,
    stack: &mut Vec<String>,
    out: &mut String,
) -> Option<()> {
    out.push_str(tag);
    out.push('(');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        describe(item, registry, stack, out)?;
    }
    out.push(')');
    Some(())
}

fn fields(named: &[Named<Format>]) -> impl Iterator<Item = &Format> {
    named.iter().map(|n| &n.value)
}

fn describe_container(
    container: &ContainerFormat,
    registry: &Registry,
    stack: &mut Vec<String>,
    out: &mut String,
) -> Option<()> {
    match container {
        ContainerFormat::UnitStruct => {
            out.push_str("ustruct");
            Some(())
        }
        ContainerFormat::NewTypeStruct(inner) => wrap("newtype", [&**inner], registry, stack, out),
        ContainerFormat::TupleStruct(items) => wrap("tstruct", items, registry, stack, out),
        ContainerFormat::Struct(named) => wrap("struct", fields(named), registry, stack, out),
        ContainerFormat::Enum(variants) => {
            out.push_str("enum(");
            for (i, (index, variant)) in variants.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{index}:");
                match &variant.value {
                    VariantFormat::Variable(_) => return None,
                    VariantFormat::Unit => out.push_str("unit"),
                    VariantFormat::NewType(inner) => {
                        wrap("newtype", [&**inner], registry, stack, out)?
                    }
                    VariantFormat::Tuple(items) => wrap("tuple", items, registry, stack, out)?,
                    VariantFormat::Struct(named) => {
                        wrap("struct", fields(named), registry, stack, out)?
                    }
                }
            }
            out.push(')');
            Some(())
        }
    }
}

/// 64-bit FNV-1a: small, fixed and documented, so fingerprints never change
/// with a library upgrade.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A Rust type name with every module path removed:
/// `alloc::vec::Vec<my::Order>` becomes `Vec<Order>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Order {
        id: u64,
        lines: Vec<(String, f64)>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Renamed {
        number: u64,
        items: Vec<(String, f64)>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Reordered {
        lines: Vec<(String, f64)>,
        id: u64,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Event {
        Open,
        Close(u32),
        Move { x: i32, y: i32 },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Tree {
        value: i64,
        children: Vec<Tree>,
    }

    #[test]
    fn shapes_are_canonical_and_nameless() {
        assert_eq!(shape_of::<i64>().as_deref(), Some("i64"));
        assert_eq!(
            shape_of::<Order>().as_deref(),
            Some("struct(u64,seq(tup(str,f64)))")
        );
        assert_eq!(shape_of::<Order>(), shape_of::<Renamed>());
        assert_ne!(shape_of::<Order>(), shape_of::<Reordered>());
        assert_eq!(
            shape_of::<Event>().as_deref(),
            Some("enum(0:unit,1:newtype(u32),2:struct(i32,i32))")
        );
        assert_eq!(
            shape_of::<Tree>().as_deref(),
            Some("struct(i64,seq(ref(0)))")
        );
        assert_eq!(
            shape_of::<Option<[u8; 3]>>().as_deref(),
            Some("opt(arr(u8;3))")
        );
    }

    #[test]
    fn identities_tell_types_apart() {
        let i = type_identity::<i64>();
        let u = type_identity::<u64>();
        assert_eq!(&*i, "i64#s2ae1af192b331746");
        assert_ne!(fingerprint_of(&i), fingerprint_of(&u));
        assert_eq!(
            fingerprint_of(&type_identity::<Order>()),
            fingerprint_of(&type_identity::<Renamed>())
        );
        assert!(type_identity::<Vec<Order>>().starts_with("Vec<Order>#s"));
        assert_eq!(fingerprint_of("postcard"), None);
    }

    #[test]
    fn short_names_drop_module_paths() {
        assert_eq!(short_type_name("alloc::vec::Vec<my::Order>"), "Vec<Order>");
        assert_eq!(
            short_type_name("(i64, alloc::string::String)"),
            "(i64, String)"
        );
        assert_eq!(short_type_name("[u8; 4]"), "[u8; 4]");
    }
}
