//! The metrics segment-cache exports: one constant per name, and [`ALL`] (its `# HELP` text and
//! what the hidden `segment-cache metric-names` subcommand prints).

::metric_names::metric_names! {
    /// S3 requests answered, by operation (`get`, `head`, `other`) and result (`hit`, `miss`,
    /// `bypass`, `error`).
    REQUESTS: Counter = "segment_cache_requests_total", labels ["op", "result"],
        help "S3 requests answered, by operation and by hit, miss, bypass or error.";
    /// Object bytes sent to clients from the cache, by `hit` or `miss` (fetched, then served).
    SERVED_BYTES: Counter = "segment_cache_served_bytes_total", labels ["result"],
        help "Bytes of object data served to clients, by hit or miss.";
    /// Requests made to the upstream object store, by operation and outcome (`ok`, `error`).
    UPSTREAM_REQUESTS: Counter = "segment_cache_upstream_requests_total", labels ["op", "outcome"],
        help "Requests made to the upstream object store, by operation and outcome.";
    /// Time of one upstream request.
    UPSTREAM_REQUEST_DURATION: Histogram = "segment_cache_upstream_request_duration_seconds", labels ["op"],
        help "Seconds one request to the upstream object store took, by operation.";
    /// Objects fetched into the cache and verified, by how (`crc64nvme`, `crc32c`, `crc32`,
    /// `md5`, `multipart-md5`).
    VERIFIED_OBJECTS: Counter = "segment_cache_verified_objects_total", labels ["by"],
        help "Objects fetched into the cache and verified, by the checksum that verified them.";
    /// Objects evicted to stay under capacity.
    EVICTIONS: Counter = "segment_cache_evictions_total", labels [],
        help "Objects evicted from the cache to stay under its capacity.";
    /// Bytes of the objects evicted.
    EVICTED_BYTES: Counter = "segment_cache_evicted_bytes_total", labels [],
        help "Bytes of the objects evicted from the cache.";
    /// Reads not written to the access log because its queue was full (the writer could not keep
    /// up with the disk).
    ACCESS_LOG_DROPPED: Counter = "segment_cache_access_log_dropped_total", labels [],
        help "Reads not recorded in the access log because its queue was full.";
    /// Objects the segment-aware read-ahead handled, by `result` (`fetched`, `cached`: already
    /// there, `skipped`: too big or over the segment's byte cap, `error`).
    READ_AHEAD_OBJECTS: Counter = "segment_cache_read_ahead_objects_total", labels ["result"],
        help "Objects handled by the segment-aware read-ahead, by fetched, cached, skipped or error.";
    /// Bytes the read-ahead fetched from upstream.
    READ_AHEAD_BYTES: Counter = "segment_cache_read_ahead_bytes_total", labels [],
        help "Bytes the segment-aware read-ahead fetched from the upstream object store.";
    /// Segment file groups the read-ahead listed, by `result` (`listed`, `error`).
    READ_AHEAD_GROUPS: Counter = "segment_cache_read_ahead_groups_total", labels ["result"],
        help "Segment file groups the read-ahead listed, by listed or error.";
    /// Bytes the cached objects take.
    USED_BYTES: Gauge = "segment_cache_used_bytes", labels [],
        help "Bytes of the objects in the cache.";
    /// The configured capacity.
    CAPACITY_BYTES: Gauge = "segment_cache_capacity_bytes", labels [],
        help "Configured capacity of the cache in bytes.";
    /// Objects in the cache.
    OBJECTS: Gauge = "segment_cache_objects", labels [],
        help "Objects in the cache.";
    /// Bytes fetched by the warm.
    WARM_BYTES: Counter = "segment_cache_warm_bytes_total", labels [],
        help "Bytes fetched into the cache by the warm.";
    /// Objects fetched by the warm.
    WARM_OBJECTS: Counter = "segment_cache_warm_objects_total", labels [],
        help "Objects fetched into the cache by the warm.";
    /// Bytes the running warm has still to fetch.
    WARM_PENDING_BYTES: Gauge = "segment_cache_warm_pending_bytes", labels [],
        help "Bytes the warm has still to fetch.";
    /// Whether the warm has finished (1) or is running (0).
    WARM_DONE: Gauge = "segment_cache_warm_done", labels [],
        help "1 when the warm has finished (or given up), 0 while it runs.";
}
