//! The catalogue of scaling signals this product derives from Milvus metrics.

use std::fmt;
use std::str::FromStr;

/// A scaling signal. Names are stable: they appear in configuration, KEDA trigger metadata and
/// (prefixed with `milvus_`) as external metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Read tasks waiting in query nodes (ready + unsolved queues), summed over query nodes.
    SearchQueueDepth,
    /// Median search latency over the window, seconds.
    SearchLatencyP50Seconds,
    /// 90th percentile search latency over the window, seconds.
    SearchLatencyP90Seconds,
    /// 99th percentile search latency over the window, seconds.
    SearchLatencyP99Seconds,
    /// Search requests per second received by proxies, over the window.
    SearchRate,
    /// Index builds not yet finished (unissued + in progress, and retrying on 2.5+).
    IndexPendingBuilds,
    /// Entities loaded into query nodes (searchable rows).
    LoadedEntities,
    /// Memory size of the entities loaded into query nodes, bytes.
    LoadedBytes,
    /// Read tasks in flight in query nodes (waiting + executing), each query node's samples
    /// averaged over the window, summed over query nodes. The load-proportional demand signal.
    SearchInflight,
    /// The largest per-query-node window average of read tasks in flight: one saturated node
    /// while the sum spread over all nodes looks fine.
    SearchInflightNodeMax,
    /// Search demand in nq per second: the rate of nq the proxies receive plus the nq in flight
    /// at the proxies (time-averaged over the window) divided by `signals.demand_drain`. Offered
    /// load plus what it takes to drain the backlog within the drain time; proportional to load
    /// whatever the capacity, so an `AverageValue` target of one query node's capacity in nq/s
    /// asks for demand / capacity replicas.
    SearchDemand,
    /// 1 while the query coordinator moves data between query nodes (segment or channel move
    /// tasks, or a query node in stopping balance) in any round of the window, else 0. A hold for scale-in: a `Value` target of 1 asks for the current replicas
    /// exactly while Milvus is still balancing, and for nothing otherwise (docs/scaling-policy.md).
    QueryBalancing,
}

impl Signal {
    /// Every signal, in display order.
    pub const ALL: [Signal; 12] = [
        Signal::SearchQueueDepth,
        Signal::SearchLatencyP50Seconds,
        Signal::SearchLatencyP90Seconds,
        Signal::SearchLatencyP99Seconds,
        Signal::SearchRate,
        Signal::IndexPendingBuilds,
        Signal::LoadedEntities,
        Signal::LoadedBytes,
        Signal::SearchInflight,
        Signal::SearchInflightNodeMax,
        Signal::SearchDemand,
        Signal::QueryBalancing,
    ];

    /// The signal's name in configuration and trigger metadata, e.g. `search_queue_depth`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::SearchQueueDepth => "search_queue_depth",
            Signal::SearchLatencyP50Seconds => "search_latency_p50_seconds",
            Signal::SearchLatencyP90Seconds => "search_latency_p90_seconds",
            Signal::SearchLatencyP99Seconds => "search_latency_p99_seconds",
            Signal::SearchRate => "search_rate",
            Signal::IndexPendingBuilds => "index_pending_builds",
            Signal::LoadedEntities => "loaded_entities",
            Signal::LoadedBytes => "loaded_bytes",
            Signal::SearchInflight => "search_inflight",
            Signal::SearchInflightNodeMax => "search_inflight_node_max",
            Signal::SearchDemand => "search_demand",
            Signal::QueryBalancing => "query_balancing",
        }
    }

    /// The name served through the Kubernetes external metrics API: `milvus_` + [`Signal::name`].
    pub fn metric_name(self) -> String {
        format!("milvus_{}", self.name())
    }

    /// Looks a signal up by its name, with or without the `milvus_` prefix.
    pub fn from_name(name: &str) -> Option<Signal> {
        let bare = name.strip_prefix("milvus_").unwrap_or(name);
        Signal::ALL.into_iter().find(|s| s.name() == bare)
    }

    /// Whether the value is computed over the sliding window (rates, quantiles, time averages).
    pub fn is_windowed(self) -> bool {
        match self {
            Signal::SearchLatencyP50Seconds
            | Signal::SearchLatencyP90Seconds
            | Signal::SearchLatencyP99Seconds
            | Signal::SearchRate
            | Signal::SearchInflight
            | Signal::SearchInflightNodeMax
            | Signal::SearchDemand
            | Signal::QueryBalancing => true,
            Signal::SearchQueueDepth
            | Signal::IndexPendingBuilds
            | Signal::LoadedEntities
            | Signal::LoadedBytes => false,
        }
    }

    /// Whether Milvus labels the metrics behind the signal by collection, so that it has
    /// per-collection values. The query-node read-task gauges (queue depth, in-flight) carry
    /// only `node_id`, and so does the proxy's `executing_total_nq` behind `search_demand`;
    /// querycoord's task gauges carry only the task type: those signals exist for the whole
    /// instance only.
    pub fn is_per_collection(self) -> bool {
        match self {
            Signal::SearchLatencyP50Seconds
            | Signal::SearchLatencyP90Seconds
            | Signal::SearchLatencyP99Seconds
            | Signal::SearchRate
            | Signal::IndexPendingBuilds
            | Signal::LoadedEntities
            | Signal::LoadedBytes => true,
            Signal::SearchQueueDepth
            | Signal::SearchInflight
            | Signal::SearchInflightNodeMax
            | Signal::SearchDemand
            | Signal::QueryBalancing => false,
        }
    }

    /// The quantile a latency signal reports, if it is one.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Signal::SearchLatencyP50Seconds => Some(0.5),
            Signal::SearchLatencyP90Seconds => Some(0.9),
            Signal::SearchLatencyP99Seconds => Some(0.99),
            _ => None,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a name that is not in the catalogue; lists the names that are.
#[derive(Debug, thiserror::Error)]
#[error("unknown signal {0:?}: expected one of {names}", names = Signal::ALL.map(|s| s.name()).join(", "))]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::from_name(s).ok_or_else(|| UnknownSignal(s.to_string()))
    }
}

/// The error for a per-collection request of a signal that exists for the whole instance only
/// (see [`Signal::is_per_collection`]). Every API answers such a request with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{signal} is not available per collection: Milvus exports the metrics behind it per node (query node or proxy), without a collection label; ask for the instance-wide value (no collection)"
)]
pub struct NotPerCollection {
    /// The signal asked for.
    pub signal: Signal,
}

/// Identifies one value in the snapshot: a signal, for the whole instance or one collection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignalKey {
    /// Which signal.
    pub signal: Signal,
    /// `None` for the whole Milvus instance; otherwise the collection as Milvus labels it
    /// (the name for latency and rate, the numeric ID for loaded data and index builds).
    pub collection: Option<String>,
}

impl SignalKey {
    /// The instance-wide value of `signal`.
    pub fn instance(signal: Signal) -> Self {
        Self {
            signal,
            collection: None,
        }
    }

    /// The value of `signal` for one collection.
    pub fn collection(signal: Signal, collection: impl Into<String>) -> Self {
        Self {
            signal,
            collection: Some(collection.into()),
        }
    }

    /// The key under which a round records why the Milvus being watched has no per-collection
    /// values of `signal` at all (its value is the reason, as an error): the empty collection,
    /// which no Milvus collection name or ID can be. Lookups of any collection then fail with
    /// that reason instead of "no such collection" (e.g. `index_pending_builds` on Milvus
    /// 2.5.5+, whose index task gauge has no `collection_id`).
    pub fn no_collection_values(signal: Signal) -> Self {
        Self::collection(signal, "")
    }

    /// Whether this is a [`SignalKey::no_collection_values`] marker, not a real collection.
    pub fn is_no_collection_values(&self) -> bool {
        self.collection.as_deref() == Some("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_and_without_prefix() {
        for s in Signal::ALL {
            assert_eq!(Signal::from_name(s.name()), Some(s));
            assert_eq!(Signal::from_name(&s.metric_name()), Some(s));
        }
        let err = "queue".parse::<Signal>().unwrap_err().to_string();
        assert!(err.contains("search_queue_depth"), "{err}");
        assert_eq!(
            Signal::from_name("milvus_search_inflight"),
            Some(Signal::SearchInflight)
        );
        assert_eq!(
            Signal::from_name("search_inflight_node_max"),
            Some(Signal::SearchInflightNodeMax)
        );
    }

    #[test]
    fn in_flight_signals_are_windowed_and_instance_only() {
        for s in [
            Signal::SearchInflight,
            Signal::SearchInflightNodeMax,
            Signal::SearchDemand,
        ] {
            assert!(s.is_windowed() && !s.is_per_collection(), "{s}");
        }
        assert_eq!(
            Signal::from_name("milvus_search_demand"),
            Some(Signal::SearchDemand)
        );
        assert!(!Signal::SearchQueueDepth.is_per_collection());
        assert!(Signal::SearchRate.is_per_collection());
        let err = NotPerCollection {
            signal: Signal::SearchInflight,
        }
        .to_string();
        assert!(
            err.starts_with("search_inflight is not available per collection"),
            "{err}"
        );
    }
}
