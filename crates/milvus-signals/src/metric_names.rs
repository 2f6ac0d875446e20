//! The metrics this crate exports (the signal pollers'): one constant per name, and [`ALL`].

::metric_names::metric_names! {
    /// Time one polling round of an instance took (every target scraped, or the PromQL queries).
    ROUND_DURATION: Histogram = "milvus_scaler_round_duration_seconds", labels ["milvus"],
        help "Seconds one polling round of a Milvus instance took.";
    /// Scrape targets that failed in the instance's last round.
    ROUND_FAILED_TARGETS: Gauge = "milvus_scaler_round_failed_targets", labels ["milvus"],
        help "Scrape targets that failed in the last polling round of a Milvus instance.";
    /// Time one `/metrics` scrape of a Milvus component took, success or not.
    SCRAPE_DURATION: Histogram = "milvus_scaler_scrape_duration_seconds", labels ["target"],
        help "Seconds one scrape of a Milvus component's /metrics took.";
    /// Whether the target's last scrape succeeded (1) or failed (0).
    TARGET_UP: Gauge = "milvus_scaler_target_up", labels ["target"],
        help "1 when the last scrape of this target succeeded, 0 when it failed.";
}
