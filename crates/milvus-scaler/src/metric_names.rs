//! The metrics this crate exports itself (the signal gauges set from the snapshot at each
//! `/metrics` request): one constant per name, and [`ALL`]. [`EVERY_LIST`] adds the lists of the
//! library crates the binary runs.

::metric_names::metric_names! {
    /// The signal's current value (only updated while the signal is known).
    SIGNAL_VALUE: Gauge = "milvus_scaler_signal_value", labels ["milvus", "signal"],
        help "Current value of a scaling signal of a Milvus instance.";
    /// Seconds since the signal's value was computed.
    SIGNAL_AGE: Gauge = "milvus_scaler_signal_age_seconds", labels ["milvus", "signal"],
        help "Seconds since the value of a scaling signal was computed.";
    /// Whether the signal is known (1) or unknown (0: stale, unavailable or not exported).
    SIGNAL_KNOWN: Gauge = "milvus_scaler_signal_known", labels ["milvus", "signal"],
        help "1 when a scaling signal is known, 0 when it is stale, unavailable or not exported.";
}

/// Every metric the `milvus-scaler` binary can export: its own and its libraries'.
pub const EVERY_LIST: &[&[::metric_names::MetricName]] = &[
    milvus_signals::metric_names::ALL,
    metrics_api::metric_names::ALL,
    keda_scaler::metric_names::ALL,
    node_groups::metric_names::ALL,
    headroom_holder::metric_names::ALL,
    ALL,
];

#[cfg(test)]
mod tests {
    #[test]
    fn no_name_is_in_two_lists() {
        let every: Vec<_> = super::EVERY_LIST
            .iter()
            .flat_map(|l| l.iter().copied())
            .collect();
        assert_eq!(::metric_names::problems(&every), Vec::<String>::new());
    }
}
