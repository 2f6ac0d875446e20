//! The metrics this crate exports (the external metrics API server's): one constant per name,
//! and [`ALL`].

::metric_names::metric_names! {
    /// Requests answered, by route template (axum's `MatchedPath`, so not one series per name)
    /// and HTTP status code.
    HTTP_REQUESTS: Counter = "milvus_scaler_http_requests_total", labels ["route", "code"],
        help "External metrics API requests answered, by route and HTTP status code.";
    /// Time to answer one request.
    HTTP_REQUEST_DURATION: Histogram = "milvus_scaler_http_request_duration_seconds", labels ["route"],
        help "Seconds the external metrics API took to answer a request, by route.";
    /// Failed refreshes of the front-proxy client CA read from the cluster (`client_ca.from_cluster`);
    /// the last good CA stays in use.
    CLIENT_CA_REFRESH_FAILURES: Counter = "milvus_scaler_external_metrics_client_ca_refresh_failures_total", labels [],
        help "Failed refreshes of the front-proxy client CA read from the cluster; the last good CA stays in use.";
    /// Client-CA changes installed without a restart.
    CLIENT_CA_UPDATES: Counter = "milvus_scaler_external_metrics_client_ca_updates_total", labels [],
        help "Front-proxy client-CA changes read from the cluster and installed without a restart.";
}
