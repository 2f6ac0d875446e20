//! Property tests of trigger metadata parsing: whatever a ScaledObject's `metadata` map holds,
//! parsing never panics, an error names one of the keys this scaler reads (it becomes the
//! INVALID_ARGUMENT KEDA shows on the ScaledObject), and a parsed trigger's metric name is one
//! the trigger answers to, with and without KEDA's `sN-` prefix.

use std::collections::HashMap;

use keda_scaler::metadata::{Trigger, keys, strip_index_prefix};
use milvus_signals::Signal;
use proptest::prelude::*;

const OUR_KEYS: [&str; 5] = [
    keys::MILVUS,
    keys::SIGNAL,
    keys::TARGET,
    keys::ACTIVATION_TARGET,
    keys::COLLECTION,
];

/// Values users plausibly write, and junk.
fn value() -> impl Strategy<Value = String> {
    let signals: Vec<String> = Signal::ALL
        .iter()
        .flat_map(|s| [s.name().to_string(), s.metric_name()])
        .collect();
    prop_oneof![
        proptest::sample::select(signals),
        Just("demo".to_string()),
        "-?[0-9]{0,4}(\\.[0-9]{0,3})?(e[0-9]{1,3})?",
        Just("NaN".to_string()),
        Just("inf".to_string()),
        "\\PC{0,16}",
        " *[a-z0-9_]{0,10} *",
    ]
}

fn metadata() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![
        proptest::sample::select(OUR_KEYS.to_vec()).prop_map(str::to_string),
        // KEDA's own keys share the map and are ignored.
        Just("scalerAddress".to_string()),
        "[a-zA-Z]{1,12}",
    ];
    proptest::collection::hash_map(key, value(), 0..7)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn parsing_never_panics_and_errors_name_one_of_our_keys(meta in metadata()) {
        match Trigger::parse(&meta, |m| m == "demo") {
            Ok(t) => {
                prop_assert!(t.target > 0.0 && t.target.is_finite(), "{t:?}");
                prop_assert!(t.activation_target.is_finite(), "{t:?}");
                prop_assert_eq!(t.milvus.as_str(), "demo");
                if t.collection.is_some() {
                    prop_assert!(t.signal.is_per_collection(), "{t:?}");
                }
                let name = t.metric_name();
                prop_assert!(t.matches_metric_name(&name));
                let prefixed = format!("s3-{name}");
                prop_assert!(t.matches_metric_name(&prefixed));
                prop_assert_eq!(strip_index_prefix(&prefixed), Some(name.as_str()));
            }
            Err(e) => {
                prop_assert!(OUR_KEYS.contains(&e.key), "{e}");
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn keda_s_own_keys_never_change_the_answer(
        meta in metadata(),
        extra in "\\PC{0,20}",
    ) {
        let mut with = meta.clone();
        with.insert("scalerAddress".into(), extra.clone());
        with.insert("enableTLS".into(), extra);
        let mut without = meta;
        without.remove("scalerAddress");
        without.remove("enableTLS");
        prop_assert_eq!(
            Trigger::parse(&with, |m| m == "demo"),
            Trigger::parse(&without, |m| m == "demo")
        );
    }

    #[test]
    fn well_formed_triggers_parse_with_their_values(
        signal in proptest::sample::select(Signal::ALL.to_vec()),
        target in 0.001f64..1e9,
        activation in proptest::option::of(-1e6f64..1e6),
        collection in proptest::option::of("[a-z0-9_]{1,12}"),
        pad in " {0,2}",
    ) {
        let mut meta = HashMap::from([
            (keys::MILVUS.to_string(), format!("{pad}demo{pad}")),
            (keys::SIGNAL.to_string(), signal.metric_name()),
            (keys::TARGET.to_string(), format!("{pad}{target}")),
        ]);
        if let Some(a) = activation {
            meta.insert(keys::ACTIVATION_TARGET.into(), a.to_string());
        }
        if let Some(c) = &collection {
            meta.insert(keys::COLLECTION.into(), c.clone());
        }
        match Trigger::parse(&meta, |m| m == "demo") {
            Ok(t) => {
                prop_assert_eq!(t.signal, signal);
                prop_assert_eq!(t.target, target);
                prop_assert_eq!(t.activation_target, activation.unwrap_or(0.0));
                prop_assert_eq!(&t.collection, &collection);
            }
            Err(e) => {
                // The one refusal of well-formed input: a collection for an instance-only signal.
                prop_assert!(collection.is_some() && !signal.is_per_collection(), "{e}");
                prop_assert_eq!(e.key, keys::COLLECTION);
            }
        }
    }
}
