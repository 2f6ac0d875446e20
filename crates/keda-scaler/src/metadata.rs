//! Trigger metadata: what users write under `triggers[].metadata` of a ScaledObject, parsed and
//! checked without any I/O. Every problem names the offending key.

use std::collections::HashMap;

use milvus_signals::{Signal, SignalKey};
use thiserror::Error;

/// Metadata keys this scaler reads. KEDA also passes its own keys (`scalerAddress`, `enableTLS`,
/// `unsafeSsl`, ...) in the same map; those are ignored.
pub mod keys {
    /// Milvus instance name from the configuration (required).
    pub const MILVUS: &str = "milvus";
    /// Signal of the catalogue (required).
    pub const SIGNAL: &str = "signal";
    /// Per-replica target, a number > 0 (required).
    pub const TARGET: &str = "target";
    /// Active when the value is above this (default 0).
    pub const ACTIVATION_TARGET: &str = "activationTarget";
    /// Collection (optional): name for latency/rate, numeric ID for loaded data and index builds;
    /// not accepted for signals that exist for the whole instance only (queue depth, in-flight,
    /// demand).
    pub const COLLECTION: &str = "collection";
}

/// A parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Milvus instance name.
    pub milvus: String,
    /// Which signal.
    pub signal: Signal,
    /// Collection, if the trigger is per collection.
    pub collection: Option<String>,
    /// Per-replica target value (> 0).
    pub target: f64,
    /// The scale target is active when the value is strictly above this.
    pub activation_target: f64,
}

/// Bad trigger metadata; becomes `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("trigger metadata key {key:?}: {message}")]
pub struct MetadataError {
    /// The offending key.
    pub key: &'static str,
    /// What was expected.
    pub message: String,
}

impl MetadataError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

fn required<'a>(
    meta: &'a HashMap<String, String>,
    key: &'static str,
) -> Result<&'a str, MetadataError> {
    match meta.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(MetadataError::new(key, "is empty; it is required")),
        None => Err(MetadataError::new(key, "is missing; it is required")),
    }
}

fn number(key: &'static str, text: &str) -> Result<f64, MetadataError> {
    let v: f64 = text
        .parse()
        .map_err(|_| MetadataError::new(key, format!("expected a number, got {text:?}")))?;
    if !v.is_finite() {
        return Err(MetadataError::new(
            key,
            format!("expected a finite number, got {text:?}"),
        ));
    }
    Ok(v)
}

impl Trigger {
    /// Parses `meta`. `is_instance` says whether a Milvus instance of that name is configured.
    pub fn parse(
        meta: &HashMap<String, String>,
        is_instance: impl Fn(&str) -> bool,
    ) -> Result<Trigger, MetadataError> {
        let milvus = required(meta, keys::MILVUS)?;
        if !is_instance(milvus) {
            return Err(MetadataError::new(
                keys::MILVUS,
                format!("no Milvus instance named {milvus:?} is configured"),
            ));
        }
        let signal_text = required(meta, keys::SIGNAL)?;
        let signal: Signal =
            signal_text
                .parse()
                .map_err(|e: milvus_signals::catalogue::UnknownSignal| {
                    MetadataError::new(keys::SIGNAL, e.to_string())
                })?;
        let target = number(keys::TARGET, required(meta, keys::TARGET)?)?;
        if target <= 0.0 {
            return Err(MetadataError::new(
                keys::TARGET,
                format!("expected a number > 0, got {target}"),
            ));
        }
        let activation_target = match meta.get(keys::ACTIVATION_TARGET).map(|v| v.trim()) {
            None | Some("") => 0.0,
            Some(text) => number(keys::ACTIVATION_TARGET, text)?,
        };
        let collection = match meta.get(keys::COLLECTION).map(|v| v.trim()) {
            None | Some("") => None,
            Some(c) if c.chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
                return Err(MetadataError::new(
                    keys::COLLECTION,
                    format!("expected a collection name or ID without spaces, got {c:?}"),
                ));
            }
            Some(_) if !signal.is_per_collection() => {
                return Err(MetadataError::new(
                    keys::COLLECTION,
                    format!(
                        "{}; remove the key",
                        milvus_signals::catalogue::NotPerCollection { signal }
                    ),
                ));
            }
            Some(c) => Some(c.to_string()),
        };
        Ok(Trigger {
            milvus: milvus.to_string(),
            signal,
            collection,
            target,
            activation_target,
        })
    }

    /// The snapshot key this trigger reads.
    pub fn key(&self) -> SignalKey {
        match &self.collection {
            Some(c) => SignalKey::collection(self.signal, c.clone()),
            None => SignalKey::instance(self.signal),
        }
    }

    /// The metric name given to KEDA: `milvus_<signal>`, or `milvus_<signal>-<collection>`.
    pub fn metric_name(&self) -> String {
        match &self.collection {
            Some(c) => format!("{}-{c}", self.signal.metric_name()),
            None => self.signal.metric_name(),
        }
    }

    /// Whether `requested` names this trigger's metric, with or without KEDA's `sN-` prefix
    /// (KEDA strips it before asking; older releases and hand-written clients may not).
    pub fn matches_metric_name(&self, requested: &str) -> bool {
        let own = self.metric_name();
        requested == own || strip_index_prefix(requested) == Some(own.as_str())
    }

    /// Activity: the value is strictly above `activationTarget`.
    pub fn is_active(&self, value: f64) -> bool {
        value > self.activation_target
    }
}

/// `s12-name` -> `Some("name")`; anything else -> `None`.
pub fn strip_index_prefix(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('s')?;
    let dash = rest.find('-')?;
    let (digits, tail) = rest.split_at(dash);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(&tail[1..])
}

/// The integer companion of a float value for `MetricValue.metricValue`.
///
/// KEDA (2.x, `pkg/scalers/external_scaler.go`) uses `metricValueFloat` whenever it is > 0 and
/// falls back to the integer otherwise, so the integer only matters for a zero value and for old
/// clients that ignore the float. We round *up*: a demand of 0.3 must not read as 0 (which could
/// scale a busy target to zero); over-reporting by < 1 unit is the safe side.
pub fn metric_value_int(value: f64) -> i64 {
    saturating_i64(value.ceil())
}

/// The integer companion of the target for `MetricSpec.targetSize`: rounded to nearest, at
/// least 1 (a target of 0 is invalid in an HPA). KEDA prefers `targetSizeFloat` when > 0, which we
/// always set.
pub fn target_size_int(target: f64) -> i64 {
    saturating_i64(target.round()).max(1)
}

fn saturating_i64(v: f64) -> i64 {
    // `as` saturates for out-of-range floats and maps NaN to 0; callers never pass NaN.
    v as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn known(name: &str) -> bool {
        name == "prod"
    }

    const GOOD: &[(&str, &str)] = &[
        ("scalerAddress", "milvus-scaler.milvus-scaler.svc:9090"),
        ("milvus", "prod"),
        ("signal", "search_queue_depth"),
        ("target", "8"),
    ];

    fn with(extra: &[(&'static str, &'static str)], drop: &[&str]) -> HashMap<String, String> {
        let mut m = meta(GOOD);
        for k in drop {
            m.remove(*k);
        }
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn good_metadata_with_defaults() {
        let t = Trigger::parse(&meta(GOOD), known).unwrap();
        assert_eq!(
            t,
            Trigger {
                milvus: "prod".into(),
                signal: Signal::SearchQueueDepth,
                collection: None,
                target: 8.0,
                activation_target: 0.0,
            }
        );
        assert_eq!(t.metric_name(), "milvus_search_queue_depth");
        assert_eq!(t.key(), SignalKey::instance(Signal::SearchQueueDepth));
    }

    #[test]
    fn full_metadata() {
        let t = Trigger::parse(
            &with(
                &[
                    ("signal", "milvus_index_pending_builds"),
                    ("target", "0.5"),
                    ("activationTarget", "2.5"),
                    ("collection", "4471"),
                ],
                &[],
            ),
            known,
        )
        .unwrap();
        assert_eq!(t.signal, Signal::IndexPendingBuilds);
        assert_eq!(t.target, 0.5);
        assert_eq!(t.activation_target, 2.5);
        assert_eq!(t.collection.as_deref(), Some("4471"));
        assert_eq!(t.metric_name(), "milvus_index_pending_builds-4471");
        assert_eq!(
            t.key(),
            SignalKey::collection(Signal::IndexPendingBuilds, "4471")
        );
        assert!(!t.is_active(2.5));
        assert!(t.is_active(2.6));
    }

    #[test]
    fn bad_metadata_names_the_key() {
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
            &'static str,
            &'static str,
        );
        let table: &[Case] = &[
            (&[], &["milvus"], "milvus", "missing"),
            (&[("milvus", "")], &[], "milvus", "empty"),
            (&[("milvus", "staging")], &[], "milvus", "staging"),
            (&[], &["signal"], "signal", "missing"),
            (&[("signal", "queue")], &[], "signal", "search_queue_depth"),
            (&[], &["target"], "target", "missing"),
            (&[("target", "eight")], &[], "target", "number"),
            (&[("target", "0")], &[], "target", "> 0"),
            (&[("target", "-3")], &[], "target", "> 0"),
            (&[("target", "NaN")], &[], "target", "finite"),
            (&[("target", "inf")], &[], "target", "finite"),
            (
                &[("activationTarget", "x")],
                &[],
                "activationTarget",
                "number",
            ),
            (&[("collection", "a b")], &[], "collection", "spaces"),
            (
                &[("signal", "search_inflight"), ("collection", "docs")],
                &[],
                "collection",
                "search_inflight is not available per collection",
            ),
            (
                &[("signal", "search_demand"), ("collection", "docs")],
                &[],
                "collection",
                "search_demand is not available per collection",
            ),
            (
                &[("signal", "search_queue_depth"), ("collection", "docs")],
                &[],
                "collection",
                "not available per collection",
            ),
        ];
        for (extra, drop, key, needle) in table {
            let err = Trigger::parse(&with(extra, drop), known).unwrap_err();
            assert_eq!(err.key, *key, "{extra:?} {drop:?}: {err}");
            let text = err.to_string();
            assert!(text.contains(key), "{text}");
            assert!(text.contains(needle), "{extra:?}: {text} lacks {needle}");
        }
    }

    #[test]
    fn in_flight_and_demand_signals_are_accepted() {
        for (text, signal) in [
            ("search_inflight", Signal::SearchInflight),
            ("milvus_search_inflight", Signal::SearchInflight),
            ("search_inflight_node_max", Signal::SearchInflightNodeMax),
            ("search_demand", Signal::SearchDemand),
            ("milvus_search_demand", Signal::SearchDemand),
        ] {
            let t = Trigger::parse(
                &with(
                    &[("signal", text), ("target", "0.7"), ("collection", "")],
                    &[],
                ),
                known,
            )
            .unwrap();
            assert_eq!(t.signal, signal);
            assert_eq!(t.target, 0.7);
            assert_eq!(t.key(), SignalKey::instance(signal));
            assert_eq!(t.metric_name(), signal.metric_name());
        }
    }

    #[test]
    fn metric_name_with_and_without_keda_prefix() {
        let t = Trigger::parse(&meta(GOOD), known).unwrap();
        assert!(t.matches_metric_name("milvus_search_queue_depth"));
        assert!(t.matches_metric_name("s0-milvus_search_queue_depth"));
        assert!(t.matches_metric_name("s17-milvus_search_queue_depth"));
        assert!(!t.matches_metric_name("sx-milvus_search_queue_depth"));
        assert!(!t.matches_metric_name("s-milvus_search_queue_depth"));
        assert!(!t.matches_metric_name("milvus_search_rate"));
        assert_eq!(strip_index_prefix("s3-a-b"), Some("a-b"));
        assert_eq!(strip_index_prefix("search"), None);
    }

    #[test]
    fn integer_companions() {
        assert_eq!(metric_value_int(0.0), 0);
        assert_eq!(metric_value_int(0.3), 1);
        assert_eq!(metric_value_int(7.0), 7);
        assert_eq!(metric_value_int(1e30), i64::MAX);
        assert_eq!(target_size_int(0.2), 1);
        assert_eq!(target_size_int(8.4), 8);
        assert_eq!(target_size_int(8.5), 9);
    }
}
