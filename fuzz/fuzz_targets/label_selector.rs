//! The label-selector parser of the external metrics API (the HPA's `labelSelector` query
//! parameter) on arbitrary text: never a panic; a parsed selector can be evaluated.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use metrics_api::selector::Selector;

fuzz_target!(|text: &str| {
    if let Ok(selector) = Selector::parse(text) {
        let labels = BTreeMap::from([("collection".to_string(), "docs".to_string())]);
        let _ = selector.matches(&labels);
        let _ = selector.wants("collection");
    }
});
