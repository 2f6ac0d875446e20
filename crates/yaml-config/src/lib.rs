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
        // prefixes the path itself, which is already in front of the message.
        let message = e.into_inner().to_string();
        let message = message
            .strip_prefix(&format!("{path}: "))
            .map(str::to_string)
            .unwrap_or(message);
        ConfigError::invalid(file, path, message)
    })
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
}
