//! Where checkpoints go, as a user names it: a local path (or `file://`
//! URL), or an object-store URL (`s3://bucket/prefix`, `memory://name`).
//!
//! Paths inside an object store are written as the store's URL followed by
//! the object's key (`s3://bucket/prefix/job/chk-3/…`), so that handles,
//! listings and errors name the object in full, and a path cannot be read
//! from the wrong store by mistake.

use std::path::PathBuf;
use std::sync::Arc;

use state_api::error::{Error, Result};

use crate::storage::{LocalStorage, Storage};

/// A parsed checkpoint location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A folder on a local (or mounted) file system.
    Local(PathBuf),
    /// An object-store URL without a trailing slash, such as
    /// `s3://bucket/prefix` or `memory://tests`.
    ObjectStore {
        /// The URL's scheme (`s3`, `memory`).
        scheme: String,
        /// The URL.
        url: String,
    },
}

/// Schemes of object stores this crate knows.
pub const OBJECT_STORE_SCHEMES: &[&str] = &["s3", "memory"];

impl Location {
    /// Parses `location`: `file:///abs/path` or a plain path is local;
    /// `s3://bucket[/prefix]` and `memory://[name]` are object stores. Any
    /// other scheme is an [`Error::InvalidArgument`].
    pub fn parse(location: &str) -> Result<Self> {
        let invalid = |why: &str| Error::InvalidArgument {
            what: format!("checkpoint location '{location}': {why}"),
        };
        let Some((scheme, rest)) = location.split_once("://") else {
            if location.is_empty() {
                return Err(invalid("empty"));
            }
            return Ok(Location::Local(PathBuf::from(location)));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "a file:// URL needs an absolute path (file:///...)",
                    ));
                }
                Ok(Location::Local(PathBuf::from(rest)))
            }
            s if OBJECT_STORE_SCHEMES.contains(&s) => {
                let trimmed = rest.trim_end_matches('/');
                if s == "s3" && trimmed.split('/').next().is_none_or(str::is_empty) {
                    return Err(invalid("an s3:// URL needs a bucket (s3://bucket/prefix)"));
                }
                if trimmed.split('/').any(|c| c == "." || c == "..")
                    || (!trimmed.is_empty() && trimmed.split('/').any(str::is_empty))
                {
                    return Err(invalid("empty, '.' or '..' path segments"));
                }
                Ok(Location::ObjectStore {
                    scheme: s.to_string(),
                    url: format!("{s}://{trimmed}"),
                })
            }
            other => Err(invalid(&format!(
                "unknown scheme '{other}' (file://, s3:// and memory:// are known)"
            ))),
        }
    }

    /// The root path of the location: the folder, or the URL as a path.
    pub fn root(&self) -> PathBuf {
        match self {
            Location::Local(path) => path.clone(),
            Location::ObjectStore { url, .. } => PathBuf::from(url),
        }
    }

    /// Whether the location is an object store.
    pub fn is_object_store(&self) -> bool {
        matches!(self, Location::ObjectStore { .. })
    }
}

/// The storage of `location` with default options.
pub fn open_storage(location: &Location) -> Result<Arc<dyn Storage>> {
    match location {
        Location::Local(_) => Ok(Arc::new(LocalStorage)),
        Location::ObjectStore { url, .. } => open_object_store(url),
    }
}

#[cfg(feature = "object-store")]
fn open_object_store(url: &str) -> Result<Arc<dyn Storage>> {
    open_object_store_with(url, crate::object::ObjectStoreOptions::default())
}

/// The object store of `url` with `options`. `memory://name` stores live as
/// long as the process, shared by every opening of the same URL.
#[cfg(feature = "object-store")]
pub fn open_object_store_with(
    url: &str,
    options: crate::object::ObjectStoreOptions,
) -> Result<Arc<dyn Storage>> {
    use crate::object::ObjectStoreStorage;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    static MEMORY: OnceLock<Mutex<HashMap<String, ObjectStoreStorage>>> = OnceLock::new();
    let open = || {
        ObjectStoreStorage::from_url(url, options.clone())
            .map_err(|e| Error::io(format!("opening the object store {url}"), e))
    };
    if url.starts_with("memory://") {
        let mut stores = MEMORY
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(url) {
            return Ok(Arc::new(store.clone()));
        }
        let store = open()?;
        stores.insert(url.to_string(), store.clone());
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(open()?))
}

#[cfg(not(feature = "object-store"))]
fn open_object_store(url: &str) -> Result<Arc<dyn Storage>> {
    Err(Error::InvalidArgument {
        what: format!(
            "checkpoint location '{url}' is an object store, and this build of checkpoint-store has no object-store support (feature 'object-store')"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("/tmp/x").ok(),
            Some(Location::Local("/tmp/x".into()))
        );
        assert_eq!(
            Location::parse("file:///tmp/x").ok(),
            Some(Location::Local("/tmp/x".into()))
        );
        let s3 = Location::parse("s3://bucket/a/b/").expect("s3");
        assert_eq!(s3.root(), PathBuf::from("s3://bucket/a/b"));
        assert!(s3.is_object_store());
        assert!(Location::parse("memory://")
            .expect("memory")
            .is_object_store());
        for bad in [
            "",
            "s3://",
            "s3:///x",
            "file://rel",
            "gopher://x",
            "s3://b/../c",
            "s3://b//c",
        ] {
            let e = Location::parse(bad).expect_err(bad);
            assert_eq!(
                e.kind(),
                state_api::ErrorKind::InvalidArgument,
                "{bad}: {e}"
            );
        }
    }
}
