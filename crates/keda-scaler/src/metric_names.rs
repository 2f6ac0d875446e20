//! The metrics this crate exports (the KEDA external scaler's): one constant per name, and [`ALL`].

::metric_names::metric_names! {
    /// `StreamIsActive` streams open now.
    ACTIVE_STREAMS: Gauge = "milvus_scaler_keda_active_streams", labels [],
        help "StreamIsActive streams KEDA has open.";
    /// Messages sent on `StreamIsActive` streams, keep-alives included.
    PUSH_MESSAGES: Counter = "milvus_scaler_keda_push_messages_total", labels ["active"],
        help "Messages sent on StreamIsActive streams (keep-alives included), by the active value sent.";
    /// RPCs finished, by method and gRPC status code.
    GRPC_REQUESTS: Counter = "milvus_scaler_grpc_requests_total", labels ["method", "code"],
        help "External scaler RPCs finished, by method and gRPC status code.";
    /// Time to handle one RPC.
    GRPC_DURATION: Histogram = "milvus_scaler_grpc_request_duration_seconds", labels ["method"],
        help "Seconds the external scaler took to handle an RPC, by method.";
}
