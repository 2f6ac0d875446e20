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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn every_metrics_macro_takes_a_name_from_this_list() {
        let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
        let literal = ::metric_names::literal_metric_names(src);
        assert!(
            literal.is_empty(),
            "metric names written as string literals; declare them in src/metric_names.rs and use the constant:\n{}",
            literal.join("\n")
        );
    }

    #[test]
    fn the_list_is_sound() {
        assert_eq!(::metric_names::problems(super::ALL), Vec::<String>::new());
    }
}
