//! Object keys: validation and the safe mapping of a key to a file name in the cache directory.
//!
//! A key never becomes a path: its file name is the SHA-256 of the key, so `../`, absolute keys,
//! NUL bytes or very long keys can never address anything outside the cache's `objects/` tree.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Why a key is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// Empty key.
    #[error("the object key is empty")]
    Empty,
    /// Longer than S3's limit (S3 answers `KeyTooLongError`).
    #[error("the object key is {0} bytes, longer than S3's limit of 1024")]
    TooLong(usize),
    /// Contains a control character S3 clients cannot round-trip safely.
    #[error("the object key contains a NUL byte")]
    Nul,
}

/// Checks `key` against S3's rules for object keys.
pub fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.contains('\0') {
        return Err(KeyError::Nul);
    }
    Ok(())
}

/// The stable, path-safe name of `key`: 64 lowercase hex digits.
#[must_use]
pub fn file_stem(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Where the data of `key` lives under `objects_dir`: `objects_dir/<2 hex>/<64 hex>`.
#[must_use]
pub fn data_path(objects_dir: &Path, key: &str) -> PathBuf {
    let stem = file_stem(key);
    objects_dir.join(&stem[..2]).join(stem)
}

/// Where the metadata of `key` lives: the data path with `.meta` appended.
#[must_use]
pub fn meta_path(objects_dir: &Path, key: &str) -> PathBuf {
    let mut p = data_path(objects_dir, key).into_os_string();
    p.push(".meta");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_keys_stay_inside() {
        let root = Path::new("/cache/objects");
        for key in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../../b",
            "..",
            "files/../../x",
            "\\..\\..\\win",
        ] {
            let p = data_path(root, key);
            assert!(p.starts_with(root), "{key} -> {}", p.display());
            assert_eq!(p.components().count(), root.components().count() + 2);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(name.len(), 64);
            assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn distinct_keys_distinct_paths() {
        let root = Path::new("/c");
        assert_ne!(data_path(root, "a/b"), data_path(root, "a/b/"));
        assert_eq!(data_path(root, "k"), data_path(root, "k"));
        assert_eq!(
            meta_path(root, "k").to_str().unwrap(),
            format!("{}.meta", data_path(root, "k").display())
        );
    }

    #[test]
    fn validation() {
        assert_eq!(validate(""), Err(KeyError::Empty));
        assert_eq!(validate(&"a".repeat(1025)), Err(KeyError::TooLong(1025)));
        assert!(validate(&"a".repeat(1024)).is_ok());
        assert_eq!(validate("a\0b"), Err(KeyError::Nul));
        assert!(
            validate("../x").is_ok(),
            "S3 itself accepts such keys; they are safe here"
        );
    }
}
