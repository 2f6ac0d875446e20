//! A signal is added in one place (`Signal` in catalogue.rs) but shows up in several: the
//! configuration reference, both API guides and the RBAC that lets HPAs read it. This test ties
//! them to the catalogue so that a new signal cannot ship undocumented or unreadable
//! (DEVELOPMENT.md, "Adding a signal").

use std::path::{Path, PathBuf};

use milvus_signals::Signal;

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (path, text)
}

/// Whether `text` has `word` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn every_signal_is_documented_and_readable_through_rbac() {
    let places = [
        ("docs/configuration.md", false),
        ("docs/keda.md", false),
        ("docs/external-metrics.md", true),
        ("manifests/components/external-metrics/rbac.yaml", true),
    ];
    let mut missing = Vec::new();
    for (file, prefixed) in places {
        let (path, text) = repo_file(file);
        for signal in Signal::ALL {
            let name = if prefixed {
                signal.metric_name()
            } else {
                signal.name().to_string()
            };
            if !has_word(&text, &name) {
                missing.push(format!("{name} in {}", path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "signals missing: {missing:#?}");
}

#[test]
fn word_match_needs_whole_names() {
    // search_inflight must not be found inside search_inflight_node_max alone.
    assert!(!has_word("`search_inflight_node_max`", "search_inflight"));
    assert!(has_word("`search_inflight` and more", "search_inflight"));
    assert!(has_word("- milvus_search_rate\n", "milvus_search_rate"));
}
