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
    /// Seconds from a new query node's target being listed to each scale-out phase.
    SCALE_OUT_PHASE_SECONDS: Histogram = "milvus_scaler_scale_out_phase_seconds", labels ["milvus", "phase"],
        help "Seconds from a new query node's scrape target being listed to the node completing a scale-out phase (up, registered, first_segment, settled, serving).";
    /// New query nodes currently listed that completed each phase.
    SCALE_OUT_NODES: Gauge = "milvus_scaler_scale_out_nodes", labels ["milvus", "phase"],
        help "Query nodes that appeared after milvus-scaler started, are still listed, and completed this scale-out phase.";
}
