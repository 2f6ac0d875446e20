//! KEDA trigger metadata on arbitrary key/value text (`key=value` lines): never a panic; an
//! error names one of the keys the scaler reads.
#![no_main]

use std::collections::HashMap;

use keda_scaler::metadata::{Trigger, keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let meta: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Err(e) = Trigger::parse(&meta, |m| m == "demo") {
        let ours = [
            keys::MILVUS,
            keys::SIGNAL,
            keys::TARGET,
            keys::ACTIVATION_TARGET,
            keys::COLLECTION,
        ];
        assert!(ours.contains(&e.key), "{e}");
    }
});
