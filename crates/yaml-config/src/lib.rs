//! YAML configuration files read into serde types, shared by the `milvus-scaler` and
//! `segment-cache` binaries so both report a bad file the same way: which file, which key
//! (as a dotted path, e.g. `milvus[0].scrape.interval`), and what was expected.
#![forbid(unsafe_code)]

use std::path::Path;

use serde::de::DeserializeOwned;
use thiserror::Error;

/// A configuration problem: which file, which key, what was expected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key has a wrong type or value, or is unknown.
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Dotted path of the offending key, e.g. `milvus[0].scrape.interval`.
        path: String,
        /// What was expected.
        message: String,
    },
}

impl ConfigError {
    /// An `Invalid` error for the key at `path` of `file`.
    pub fn invalid(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A bad value at a key, found by a section's validation before it knows which file the
/// section came from: the section names the key below itself, each enclosing level prefixes
/// its own key ([`Invalid::under`]) and the loader adds the file ([`Invalid::in_file`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct Invalid {
    /// Dotted path of the offending key, e.g. `groups[0].replicas.max`.
    pub path: String,
    /// What was expected (and what was found).
    pub message: String,
}

impl Invalid {
    /// The key at `path` has a bad value; `message` says what was expected.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error with the path seen from the enclosing section `prefix`, e.g.
    /// `groups[0].pod` under `node_groups` is `node_groups.groups[0].pod`.
    #[must_use]
    pub fn under(self, prefix: &str) -> Self {
        Self {
            path: format!("{prefix}.{}", self.path),
            ..self
        }
    }

    /// The configuration error of the file `file`.
    pub fn in_file(self, file: &str) -> ConfigError {
        ConfigError::invalid(file, self.path, self.message)
    }
}

/// Reads the file at `path` and deserializes it (no validation beyond the types).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Deserializes YAML `text`; `file` names it in errors.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(top level)".to_string()
        } else {
            path
        };
        // serde_yaml appends " at line L column C" (kept: it helps find the key) and sometimes
        // prefixes the path (or the path of the mapping around the key), which is already in
        // front of the message.
        let message = e.into_inner().to_string();
        let message = strip_path_prefix(&message, &path).to_string();
        ConfigError::invalid(file, path, message)
    })
}

/// `message` without a leading `P: ` where `P` is `path` or a path enclosing it.
fn strip_path_prefix<'m>(message: &'m str, path: &str) -> &'m str {
    if let Some((prefix, rest)) = message.split_once(": ")
        && let Some(after) = path.strip_prefix(prefix)
        && (after.is_empty() || after.starts_with(['.', '[']))
    {
        return rest;
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        port: u16,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    #[test]
    fn errors_name_file_key_path_and_expectation() {
        let e = parse::<Outer>("items:\n  - port: 80\n  - port: lots\n", "c.yaml").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("c.yaml: items[1].port: "), "{text}");
        assert!(
            text.contains("invalid type") && text.contains("line 3"),
            "{text}"
        );
        let e = parse::<Outer>("surprise: 1\n", "c.yaml").unwrap_err();
        assert!(e.to_string().contains("unknown field `surprise`"), "{e}");
        assert!(matches!(
            read::<Outer>(Path::new("/nonexistent/c.yaml")),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn the_path_is_not_repeated_in_the_message() {
        let path = "groups[0].replicas.signal";
        for m in [
            "groups[0].replicas.signal: unknown signal",
            "groups[0].replicas: unknown signal",
            "groups[0]: unknown signal",
            "unknown signal",
        ] {
            assert_eq!(strip_path_prefix(m, path), "unknown signal", "{m}");
        }
        // Only a whole enclosing key is a prefix, and only at the start.
        assert_eq!(
            strip_path_prefix("groups[0].rep: x", path),
            "groups[0].rep: x"
        );
        assert_eq!(strip_path_prefix("expected a: b", path), "expected a: b");
    }

    #[test]
    fn invalid_keys_are_prefixed_by_their_sections_then_named_in_the_file() {
        let e = Invalid::new("groups[0].pod", "expected a non-zero request").under("node_groups");
        assert_eq!(e.path, "node_groups.groups[0].pod");
        assert_eq!(
            e.in_file("c.yaml").to_string(),
            "c.yaml: node_groups.groups[0].pod: expected a non-zero request"
        );
    }
}
