//! What one Milvus `/metrics` body says about load: the Milvus-specific half of signal extraction.
//!
//! Milvus 2.3 to 2.6 are understood (docs/milvus-versions.md has what each version exports):
//! query nodes export `read_task_ready_len` and `read_task_concurrency` (read tasks executing now)
//! in every version, and `read_task_unsolved_len` (tasks being handed to the scheduler) until the
//! 2.6 scheduler rework (2.6.17) dropped it; pending index builds are
//! `datacoord_index_task_count{collection_id,index_task_status}` up to 2.5.4 and
//! `datacoord_task_count{task_type,task_state}`, which has no `collection_id`, from 2.5.5.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::exposition::{self, Exposition, Limits, ParseError, Sample};

/// Gauge-like quantities read from the latest scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gauge {
    /// Query-node read tasks waiting (ready + unsolved).
    QueueDepth,
    /// nq being executed by proxies right now.
    InFlightNq,
    /// Index builds unissued or in progress.
    IndexPending,
    /// Loaded entities.
    LoadedEntities,
    /// Loaded entity bytes.
    LoadedBytes,
}

/// A histogram bucket bound, ordered totally so it can key a map.
#[derive(Debug, Clone, Copy)]
pub struct Le(pub f64);

impl PartialEq for Le {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Le {}
impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Le {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Counter series whose increase over the window gives rates and latency quantiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// Search requests received.
    SearchRequests,
    /// Cumulative search-latency bucket with this `le` (milliseconds).
    LatencyBucket(Le),
}

impl std::hash::Hash for Le {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Everything the signal engine needs from one successful scrape of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetSample {
    /// The target runs a proxy (exports `milvus_proxy_*`).
    pub has_proxy: bool,
    /// The target runs a query node (exports `milvus_querynode_*`).
    pub has_querynode: bool,
    /// The target runs the data coordinator (exports `milvus_datacoord_*`).
    pub has_datacoord: bool,
    /// The target runs the query coordinator (exports `milvus_querycoord_*`; in 2.6 the mix
    /// coordinator does).
    pub has_querycoord: bool,
    /// Whether any read-task queue gauge was exported (a query node without one is an error).
    pub has_queue_gauge: bool,
    /// Gauge values by (gauge, collection); `None` collection is the target's total.
    pub gauges: BTreeMap<(Gauge, Option<String>), f64>,
    /// Read tasks in flight per query node (label `node_id`, empty if absent): waiting
    /// (`read_task_unsolved_len` + `read_task_ready_len`) plus executing
    /// (`read_task_concurrency`). A node is present when it exports any of the three.
    pub read_tasks_in_flight: BTreeMap<String, f64>,
    /// Counter values by (counter, collection); `None` collection is the target's total.
    pub counters: BTreeMap<(Counter, Option<String>), f64>,
    /// nq received by the proxy in search requests: the sum of every
    /// `milvus_proxy_received_nq{query_type="search"}` series (one per collection and
    /// `node_id`; newer Milvus adds `db_name`). `Some(0)` when the family is exported with query
    /// series only; `None` when the target exports no `milvus_proxy_received_nq` series at all
    /// (a proxy creates them on its first search or query).
    pub received_search_nq: Option<f64>,
    /// Data moving between query nodes now: the query coordinator's scheduled segment and channel
    /// move tasks (`milvus_querycoord_task_num{querycoord_task_type=~".*_move"}`: balancing onto a
    /// new node, or off a stopping one) plus query nodes in stopping balance
    /// (`milvus_querynode_stopping_balance_node_num`, 2.4+). Grow tasks (loading a newly sealed
    /// segment, which continuous inserts cause every few minutes) and reduce tasks (releases) are
    /// not counted: they move nothing between nodes. 0 when neither is exported: querycoord
    /// creates the task gauges on its first scheduled task.
    pub balance_tasks: f64,
    /// The index builds of this target are counted for the whole instance only: it exports
    /// `milvus_datacoord_task_count` index-job series without `collection_id` (Milvus 2.5.5+)
    /// and no `milvus_datacoord_index_task_count`.
    pub index_builds_instance_only: bool,
    /// The `node_id` labels of the query-node series read (read-task gauges, entity and segment
    /// counts, request counters): a query node has one once it registered with the coordinator,
    /// and a restarted one gets a new one.
    pub querynode_ids: BTreeSet<String>,
    /// Sealed segments the target's query node holds: the sum of
    /// `milvus_querynode_segment_num{segment_state="Sealed"}`; `None` when the target exports no
    /// such series (a query node creates them with its first sealed segment).
    pub sealed_segments: Option<f64>,
    /// Search requests the target's query node received: the sum of
    /// `milvus_querynode_sq_req_count{query_type="search",status="total"}` over its scopes;
    /// `None` when it exports none (a query node creates them on its first search).
    pub querynode_searches: Option<f64>,
}

impl TargetSample {
    /// nq in flight at the proxy (`milvus_proxy_executing_total_nq`, summed over its series);
    /// `None` when the target exports none (a proxy creates it on its first search or query).
    pub fn executing_nq(&self) -> Option<f64> {
        self.gauges.get(&(Gauge::InFlightNq, None)).copied()
    }
}

/// Metric names this module reads; everything else in a body is checked but not kept.
pub const METRICS_READ: &[&str] = &[
    "milvus_querynode_read_task_unsolved_len",
    "milvus_querynode_read_task_ready_len",
    "milvus_querynode_read_task_concurrency",
    "milvus_proxy_executing_total_nq",
    "milvus_proxy_received_nq",
    "milvus_datacoord_index_task_count",
    "milvus_datacoord_task_count",
    "milvus_querynode_entity_num",
    "milvus_querynode_entity_size",
    "milvus_proxy_req_count",
    "milvus_proxy_sq_latency_bucket",
    "milvus_proxy_collection_sq_latency_bucket",
    "milvus_proxy_collection_sq_latency_count",
    "milvus_querycoord_task_num",
    "milvus_querynode_stopping_balance_node_num",
    "milvus_querynode_segment_num",
    "milvus_querynode_sq_req_count",
];

/// Parses a Milvus `/metrics` body and extracts the load figures from it.
pub fn parse_target(text: &str, limits: &Limits) -> Result<TargetSample, ParseError> {
    let exposition = exposition::parse(text, limits, |name| METRICS_READ.contains(&name))?;
    Ok(extract(&exposition))
}

/// Extracts the load figures from an already parsed body.
pub fn extract(exposition: &Exposition) -> TargetSample {
    let mut out = TargetSample {
        has_proxy: exposition.has_family_prefix("milvus_proxy_"),
        has_querynode: exposition.has_family_prefix("milvus_querynode_"),
        has_datacoord: exposition.has_family_prefix("milvus_datacoord_"),
        has_querycoord: exposition.has_family_prefix("milvus_querycoord_"),
        ..TargetSample::default()
    };
    // Index builds: `index_task_count` (per collection, up to 2.5.4) wins over `task_count`
    // (2.5+), so that a version exporting both is not counted twice.
    let mut saw_index_task_count = false;
    let mut task_count_pending: Vec<&Sample> = Vec::new();
    let mut task_count_without_collection = false;
    for sample in &exposition.samples {
        // NaN gauges or counters carry no information; skipping them keeps sums meaningful.
        if sample.value.is_nan() {
            continue;
        }
        if sample.name.starts_with("milvus_querynode_")
            && let Some(node) = sample.label("node_id").filter(|n| !n.is_empty())
        {
            out.querynode_ids.insert(node.to_string());
        }
        match sample.name.as_str() {
            "milvus_querynode_read_task_unsolved_len" | "milvus_querynode_read_task_ready_len" => {
                out.has_queue_gauge = true;
                add_gauge(&mut out, Gauge::QueueDepth, None, sample.value);
                add_in_flight(&mut out, sample);
            }
            "milvus_querynode_read_task_concurrency" => add_in_flight(&mut out, sample),
            "milvus_proxy_executing_total_nq" => {
                add_gauge(&mut out, Gauge::InFlightNq, None, sample.value)
            }
            "milvus_proxy_received_nq" => {
                let search = sample.label("query_type") == Some("search");
                *out.received_search_nq.get_or_insert(0.0) +=
                    if search { sample.value } else { 0.0 };
            }
            "milvus_datacoord_index_task_count" => {
                saw_index_task_count = true;
                if matches!(
                    sample.label("index_task_status"),
                    Some("unissued" | "in-progress")
                ) {
                    add_gauge_by(&mut out, Gauge::IndexPending, sample, "collection_id");
                }
            }
            "milvus_datacoord_task_count" => {
                let is_index = sample
                    .label("task_type")
                    .is_none_or(|t| t.contains("Index"));
                let pending = matches!(
                    sample.label("task_state"),
                    Some("JobStateInit" | "JobStateInProgress" | "JobStateRetry")
                );
                if is_index {
                    task_count_without_collection |= sample.label("collection_id").is_none();
                    if pending {
                        task_count_pending.push(sample);
                    }
                }
            }
            "milvus_querynode_entity_num" => {
                add_gauge_by(&mut out, Gauge::LoadedEntities, sample, "collection_id")
            }
            "milvus_querynode_entity_size" => {
                add_gauge_by(&mut out, Gauge::LoadedBytes, sample, "collection_id")
            }
            "milvus_proxy_req_count"
                if sample.label("function_name") == Some("Search")
                    && sample.label("status") == Some("total") =>
            {
                add_counter(&mut out, Counter::SearchRequests, None, sample.value);
            }
            "milvus_proxy_sq_latency_bucket" => {
                if let Some(le) = search_bucket(sample) {
                    add_counter(&mut out, Counter::LatencyBucket(le), None, sample.value);
                }
            }
            "milvus_proxy_collection_sq_latency_bucket" => {
                if let (Some(le), Some(collection)) =
                    (search_bucket(sample), sample.label("collection_name"))
                {
                    add_counter(
                        &mut out,
                        Counter::LatencyBucket(le),
                        Some(collection),
                        sample.value,
                    );
                }
            }
            "milvus_querycoord_task_num" => {
                // 2.3.5 schedules segment/channel grow, move and reduce tasks; later versions add
                // segment_update and leader_update. Only moves shift data between nodes.
                let moves_data = sample
                    .label("querycoord_task_type")
                    .is_some_and(|t| t.ends_with("_move"));
                if moves_data {
                    out.balance_tasks += sample.value;
                }
            }
            "milvus_querynode_stopping_balance_node_num" => out.balance_tasks += sample.value,
            "milvus_querynode_segment_num" => {
                let sealed = sample.label("segment_state") == Some("Sealed");
                *out.sealed_segments.get_or_insert(0.0) += if sealed { sample.value } else { 0.0 };
            }
            "milvus_querynode_sq_req_count"
                if sample.label("query_type") == Some("search")
                    && sample.label("status") == Some("total") =>
            {
                *out.querynode_searches.get_or_insert(0.0) += sample.value;
            }
            "milvus_proxy_collection_sq_latency_count" => {
                if let (Some("search"), Some(collection)) =
                    (sample.label("query_type"), sample.label("collection_name"))
                {
                    add_counter(
                        &mut out,
                        Counter::SearchRequests,
                        Some(collection),
                        sample.value,
                    );
                }
            }
            _ => {}
        }
    }
    if !saw_index_task_count {
        for sample in task_count_pending {
            add_gauge_by(&mut out, Gauge::IndexPending, sample, "collection_id");
        }
        out.index_builds_instance_only = task_count_without_collection;
    }
    out
}

fn search_bucket(sample: &Sample) -> Option<Le> {
    if sample.label("query_type") != Some("search") {
        return None;
    }
    exposition::parse_float(sample.label("le")?).map(Le)
}

fn add_gauge(out: &mut TargetSample, gauge: Gauge, collection: Option<&str>, value: f64) {
    *out.gauges
        .entry((gauge, collection.map(str::to_string)))
        .or_insert(0.0) += value;
}

fn add_gauge_by(out: &mut TargetSample, gauge: Gauge, sample: &Sample, collection_label: &str) {
    add_gauge(out, gauge, None, sample.value);
    if let Some(collection) = sample.label(collection_label) {
        add_gauge(out, gauge, Some(collection), sample.value);
    }
}

fn add_in_flight(out: &mut TargetSample, sample: &Sample) {
    let node = sample.label("node_id").unwrap_or_default();
    *out.read_tasks_in_flight
        .entry(node.to_string())
        .or_insert(0.0) += sample.value;
}

fn add_counter(out: &mut TargetSample, counter: Counter, collection: Option<&str>, value: f64) {
    *out.counters
        .entry((counter, collection.map(str::to_string)))
        .or_insert(0.0) += value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::fixture;

    #[test]
    fn under_load_capture() {
        let s = parse_target(
            &fixture("milvus-2.3.5-metrics-under-load.prom"),
            &Limits::default(),
        )
        .unwrap();
        assert!(s.has_proxy && s.has_querynode && s.has_datacoord && s.has_queue_gauge);
        assert_eq!(s.gauges[&(Gauge::QueueDepth, None)], 0.0);
        assert_eq!(s.gauges[&(Gauge::IndexPending, None)], 1.0);
        assert_eq!(
            s.gauges[&(Gauge::IndexPending, Some("470691242109042850".into()))],
            1.0
        );
        assert_eq!(s.gauges[&(Gauge::LoadedEntities, None)], 250000.0);
        assert_eq!(s.gauges[&(Gauge::LoadedBytes, None)], 1.072e8);
        assert_eq!(s.counters[&(Counter::SearchRequests, None)], 971.0);
        // The proxy: 9710 nq received in searches of one collection, nothing executing now.
        assert_eq!(s.received_search_nq, Some(9710.0));
        assert_eq!(s.executing_nq(), Some(0.0));
        // Node 3 exports unsolved, ready and concurrency (all 0 at capture time).
        assert_eq!(
            s.read_tasks_in_flight,
            BTreeMap::from([("3".to_string(), 0.0)])
        );
        assert_eq!(
            s.counters[&(Counter::LatencyBucket(Le(128.0)), None)],
            682.0
        );
        assert_eq!(
            s.counters[&(Counter::LatencyBucket(Le(f64::INFINITY)), None)],
            971.0
        );
        assert!(
            s.counters
                .contains_key(&(Counter::SearchRequests, Some("bench128".into())))
        );
        // What the scale-out tracker reads: node 3 registered, 6 sealed segments, and 971
        // searches counted on it as shard leader plus 971 as the leader's sub-request.
        assert_eq!(s.querynode_ids, BTreeSet::from(["3".to_string()]));
        assert_eq!(s.sealed_segments, Some(6.0));
        assert_eq!(s.querynode_searches, Some(1942.0));
    }

    #[test]
    fn idle_capture_has_queue_gauge_but_no_searches() {
        let s = parse_target(
            &fixture("milvus-2.3.5-metrics-idle.prom"),
            &Limits::default(),
        )
        .unwrap();
        assert!(s.has_querynode && s.has_queue_gauge);
        assert_eq!(s.gauges[&(Gauge::QueueDepth, None)], 0.0);
        assert!(!s.gauges.contains_key(&(Gauge::LoadedEntities, None)));
        assert!(!s.counters.contains_key(&(Counter::SearchRequests, None)));
        // An idle 2.3.5 proxy creates neither demand metric before its first search.
        assert!(s.has_proxy);
        assert_eq!((s.received_search_nq, s.executing_nq()), (None, None));
        // Idle 2.3.5 exports ready_len only (concurrency is created on the first search):
        // the node is present with nothing in flight.
        assert_eq!(
            s.read_tasks_in_flight,
            BTreeMap::from([("1".to_string(), 0.0)])
        );
        // Registered as node 1, but no sealed segment and no search yet: both series absent.
        assert_eq!(s.querynode_ids, BTreeSet::from(["1".to_string()]));
        assert_eq!((s.sealed_segments, s.querynode_searches), (None, None));
    }

    #[test]
    fn milvus_2_5_names() {
        let body = "\
milvus_querynode_read_task_ready_len{node_id=\"7\"} 5
milvus_datacoord_task_count{collection_id=\"1\",task_type=\"JobTypeIndexJob\",task_state=\"JobStateInit\"} 2
milvus_datacoord_task_count{collection_id=\"1\",task_type=\"JobTypeIndexJob\",task_state=\"JobStateInProgress\"} 1
milvus_datacoord_task_count{collection_id=\"1\",task_type=\"JobTypeIndexJob\",task_state=\"JobStateFinished\"} 9
milvus_datacoord_task_count{collection_id=\"1\",task_type=\"JobTypeStatsJob\",task_state=\"JobStateInit\"} 4
";
        let s = parse_target(body, &Limits::default()).unwrap();
        assert_eq!(s.gauges[&(Gauge::QueueDepth, None)], 5.0);
        assert_eq!(s.gauges[&(Gauge::IndexPending, None)], 3.0);
        assert_eq!(s.gauges[&(Gauge::IndexPending, Some("1".into()))], 3.0);
    }

    #[test]
    fn index_builds_are_counted_once_and_instance_only_from_2_5_5() {
        // 2.5.5+: task_count without collection_id, no index_task_count.
        let new = "\
milvus_datacoord_task_count{task_type=\"JobTypeIndexJob\",task_state=\"JobStateInit\"} 2
milvus_datacoord_task_count{task_type=\"JobTypeIndexJob\",task_state=\"JobStateRetry\"} 1
milvus_datacoord_task_count{task_type=\"JobTypeStatsJob\",task_state=\"JobStateInit\"} 5
";
        let s = parse_target(new, &Limits::default()).unwrap();
        assert_eq!(s.gauges[&(Gauge::IndexPending, None)], 3.0);
        assert!(s.index_builds_instance_only);
        // Idle (every state 0) is still instance-only: the series are there, unlabelled.
        let idle = "milvus_datacoord_task_count{task_type=\"JobTypeIndexJob\",task_state=\"JobStateInit\"} 0\n";
        assert!(
            parse_target(idle, &Limits::default())
                .unwrap()
                .index_builds_instance_only
        );
        // A datacoord exporting both families counts each build once, per collection, from
        // index_task_count.
        let both = "\
milvus_datacoord_index_task_count{collection_id=\"1\",index_task_status=\"unissued\"} 2
milvus_datacoord_index_task_count{collection_id=\"1\",index_task_status=\"finished\"} 7
milvus_datacoord_task_count{task_type=\"JobTypeIndexJob\",task_state=\"JobStateInit\"} 2
";
        let s = parse_target(both, &Limits::default()).unwrap();
        assert_eq!(s.gauges[&(Gauge::IndexPending, None)], 2.0);
        assert_eq!(s.gauges[&(Gauge::IndexPending, Some("1".into()))], 2.0);
        assert!(!s.index_builds_instance_only);
    }

    #[test]
    fn queue_depth_sums_unsolved_and_ready() {
        let body = "milvus_querynode_read_task_unsolved_len{node_id=\"1\"} 3\nmilvus_querynode_read_task_ready_len{node_id=\"1\"} 4\n";
        let s = parse_target(body, &Limits::default()).unwrap();
        assert_eq!(s.gauges[&(Gauge::QueueDepth, None)], 7.0);
    }

    #[test]
    fn in_flight_per_node_sums_waiting_and_executing_in_both_generations() {
        // 2.3-2.6.16: unsolved + ready + concurrency; two nodes in one body, kept apart.
        let old = "\
milvus_querynode_read_task_unsolved_len{node_id=\"1\"} 3
milvus_querynode_read_task_ready_len{node_id=\"1\"} 4
milvus_querynode_read_task_concurrency{node_id=\"1\"} 2
milvus_querynode_read_task_ready_len{node_id=\"2\"} 0
milvus_querynode_read_task_concurrency{node_id=\"2\"} 1
";
        let s = parse_target(old, &Limits::default()).unwrap();
        assert_eq!(
            s.read_tasks_in_flight,
            BTreeMap::from([("1".to_string(), 9.0), ("2".to_string(), 1.0)])
        );
        // Executing tasks are not waiting: the queue depth is unchanged by concurrency.
        assert_eq!(s.gauges[&(Gauge::QueueDepth, None)], 7.0);
        // 2.6.17+: ready + concurrency.
        let new = "\
milvus_querynode_read_task_ready_len{node_id=\"7\"} 5
milvus_querynode_read_task_concurrency{node_id=\"7\"} 4
";
        let s = parse_target(new, &Limits::default()).unwrap();
        assert_eq!(
            s.read_tasks_in_flight,
            BTreeMap::from([("7".to_string(), 9.0)])
        );
        // A target without query-node gauges has no nodes.
        let proxy = "milvus_proxy_executing_total_nq{node_id=\"9\"} 3\n";
        let s = parse_target(proxy, &Limits::default()).unwrap();
        assert!(s.read_tasks_in_flight.is_empty());
    }

    #[test]
    fn demand_metrics_sum_search_series_over_collections_and_labels() {
        let body = "\
milvus_proxy_received_nq{collection_name=\"a\",node_id=\"3\",query_type=\"search\"} 100
milvus_proxy_received_nq{collection_name=\"b\",node_id=\"3\",query_type=\"search\"} 20
milvus_proxy_received_nq{collection_name=\"a\",node_id=\"3\",query_type=\"query\"} 7000
milvus_proxy_executing_total_nq{node_id=\"3\",query_type=\"search\"} 4
milvus_proxy_executing_total_nq{node_id=\"3\",query_type=\"query\"} 1
";
        let s = parse_target(body, &Limits::default()).unwrap();
        // Queries are not searches; the newer per-query_type executing series are all summed.
        assert_eq!(s.received_search_nq, Some(120.0));
        assert_eq!(s.executing_nq(), Some(5.0));
        // Only queries so far: the family is there, with no search nq.
        let queries = "milvus_proxy_received_nq{collection_name=\"a\",node_id=\"3\",query_type=\"query\"} 5\n";
        let s = parse_target(queries, &Limits::default()).unwrap();
        assert_eq!(s.received_search_nq, Some(0.0));
        assert_eq!(s.executing_nq(), None);
    }

    #[test]
    fn balance_tasks_count_moves_between_nodes_in_both_generations() {
        // 2.3.5 captures: the standalone under load ran querycoord with all six task gauges at 0.
        let s = parse_target(
            &fixture("milvus-2.3.5-metrics-under-load.prom"),
            &Limits::default(),
        )
        .unwrap();
        assert!(s.has_querycoord);
        assert_eq!(s.balance_tasks, 0.0);
        let body = "\
milvus_querycoord_task_num{querycoord_task_type=\"segment_grow\"} 2
milvus_querycoord_task_num{querycoord_task_type=\"segment_move\"} 3
milvus_querycoord_task_num{querycoord_task_type=\"channel_move\"} 1
milvus_querycoord_task_num{querycoord_task_type=\"channel_reduce\"} 4
milvus_querycoord_task_num{querycoord_task_type=\"segment_update\"} 7
milvus_querycoord_task_num{querycoord_task_type=\"leader_update\"} 5
milvus_querynode_stopping_balance_node_num 1
";
        let s = parse_target(body, &Limits::default()).unwrap();
        // Segment and channel moves + stopping nodes; grows, reduces and updates move nothing
        // between nodes.
        assert_eq!(s.balance_tasks, 5.0);
        assert!(s.has_querycoord);
    }
}
