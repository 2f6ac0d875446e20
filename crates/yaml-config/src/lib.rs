//! YAML configuration files read into serde types, shared by the `milvus-scaler` and
//! `segment-cache` binaries so both report a bad file the same way: which file, which key
//! (as a dotted path, e.g. `milvus[0].scrape.interval`), and what was expected.
//!
//! The one place the workspace reads YAML: the YAML crate (`serde_yaml_ng`, the maintained fork
//! of the archived `serde_yaml`, same parser and messages) is a dependency of this crate only.

use std::collections::BTreeMap;
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
    from_str(text).map_err(|e| e.in_file(file))
}

/// Deserializes YAML `text` that is not a file of its own (an HPA object, a test's snippet);
/// the error names the key path and what was expected, with the line and column.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(invalid)
}

/// The [`Invalid`] of a path-tracked YAML error.
fn invalid(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> Invalid {
    let path = e.path().to_string();
    let path = if path == "." {
        "(top level)".to_string()
    } else {
        path
    };
    // The YAML crate appends " at line L column C" (kept: it helps find the key) and sometimes
    // prefixes the path (or the path of the mapping around the key), which is already in front
    // of the message.
    let message = e.into_inner().to_string();
    let message = strip_path_prefix(&message, &path).to_string();
    Invalid { path, message }
}

/// Which file each top-level section of merged files came from ([`parse_merged`]).
#[derive(Debug, Clone)]
pub struct Sections {
    owner: BTreeMap<String, String>,
    all: String,
}

impl Sections {
    /// The file holding the section of the key at `path` (`keda.listen` -> the file with
    /// `keda:`); all the files, joined with ` + `, for a key in no section.
    pub fn file_of(&self, path: &str) -> &str {
        let section = path.split(['.', '[']).next().unwrap_or_default();
        self.owner
            .get(section)
            .map_or(self.all.as_str(), String::as_str)
    }
}

/// Merges YAML documents `(file, text)` by top-level section and deserializes the result. Each
/// section may appear in one file only (an error names both files otherwise); an empty file adds
/// nothing. Errors name the file that holds the offending section; the [`Sections`] let the
/// caller do the same for its own checks after deserialization.
pub fn parse_merged<T: DeserializeOwned>(
    files: &[(&str, &str)],
) -> Result<(T, Sections), ConfigError> {
    let mut merged = serde_yaml_ng::Mapping::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (file, text) in files {
        let doc: Option<serde_yaml_ng::Mapping> = parse(text, file)?;
        for (key, value) in doc.unwrap_or_default() {
            let Some(name) = key.as_str().map(str::to_string) else {
                return Err(ConfigError::invalid(
                    file,
                    "(top level)",
                    "expected section names (strings) as top-level keys",
                ));
            };
            if let Some(first) = owner.get(&name) {
                return Err(ConfigError::invalid(
                    file,
                    name.clone(),
                    format!(
                        "section `{name}` is already defined in {first}; each section may appear in one file only"
                    ),
                ));
            }
            owner.insert(name, file.to_string());
            merged.insert(key, value);
        }
    }
    let all = files
        .iter()
        .map(|(f, _)| *f)
        .collect::<Vec<_>>()
        .join(" + ");
    let sections = Sections { owner, all };
    let value =
        serde_path_to_error::deserialize(serde_yaml_ng::Value::Mapping(merged)).map_err(|e| {
            let e = invalid(e);
            let file = sections.file_of(&e.path).to_string();
            e.in_file(&file)
        })?;
    Ok((value, sections))
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

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sectioned {
        #[serde(default)]
        a: Option<Inner>,
        #[serde(default)]
        b: Option<Inner>,
    }

    #[test]
    fn merged_files_name_the_file_of_each_section() {
        let (v, sections): (Sectioned, _) = parse_merged(&[
            ("a.yaml", "a: { port: 1 }\n"),
            ("e.yaml", ""),
            ("b.yaml", "b: { port: 2 }\n"),
        ])
        .unwrap();
        assert!(v.a.is_some() && v.b.is_some());
        assert_eq!(sections.file_of("b.port"), "b.yaml");
        assert_eq!(sections.file_of("a"), "a.yaml");
        assert_eq!(sections.file_of("(top level)"), "a.yaml + e.yaml + b.yaml");
        let e = parse_merged::<Sectioned>(&[
            ("a.yaml", "a: { port: 1 }\n"),
            ("b.yaml", "b: { port: x }\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("b.yaml: b.port: invalid type"), "{e}");
        let e = parse_merged::<Sectioned>(&[
            ("a.yaml", "a: { port: 1 }\n"),
            ("c.yaml", "a: { port: 2 }\n"),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "c.yaml: a: section `a` is already defined in a.yaml; each section may appear in one file only"
        );
    }

    #[test]
    fn snippets_name_the_key_line_and_column() {
        let e = from_str::<Outer>("items:\n  - port: 80\n  - port: -1\n").unwrap_err();
        assert_eq!(e.path, "items[1].port");
        assert!(e.message.contains("line 3 column 11"), "{}", e.message);
        let e = from_str::<Outer>("items: [").unwrap_err();
        assert!(
            e.message.contains("did not find expected node content"),
            "{}",
            e.message
        );
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
