//! The modules depend one way: config <- group <- planner <- applier (and simulate). config.rs
//! describes the YAML only; a type both config and planner need lives in group.rs. This test
//! reads the sources, so an import that closes a circle again fails here, naming the line.

use std::path::Path;

/// The `crate::MODULE` paths that code (not comments) in `src/{module}.rs` refers to.
fn crate_refs(module: &str) -> Vec<(usize, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(format!("{module}.rs"));
    let text = std::fs::read_to_string(&path).expect("read module source");
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            refs.push((n + 1, name));
        }
        // `use crate::{a, b}` groups.
        if let Some(group) = code.split("crate::{").nth(1) {
            for name in group.split([',', '}']) {
                let name = name.trim().split("::").next().unwrap_or_default();
                if !name.is_empty() {
                    refs.push((n + 1, name.to_string()));
                }
            }
        }
    }
    refs
}

#[test]
fn modules_depend_one_way() {
    // module -> modules it must not use (everything above it in the chain).
    let rules: [(&str, &[&str]); 3] = [
        ("config", &["group", "planner", "applier", "simulate"]),
        ("group", &["planner", "applier", "simulate"]),
        ("planner", &["applier", "simulate"]),
    ];
    for (module, forbidden) in rules {
        for (line, name) in crate_refs(module) {
            assert!(
                !forbidden.contains(&name.as_str()),
                "src/{module}.rs:{line} uses crate::{name}, which depends on {module}"
            );
        }
    }
    // The scan sees real imports (so the rules above are not vacuous).
    assert!(crate_refs("planner").iter().any(|(_, n)| n == "group"));
    assert!(crate_refs("group").iter().any(|(_, n)| n == "config"));
}
