//! Signals through PromQL instant queries against an existing Prometheus (`/api/v1/query`).
//! Slower than a direct scrape (Prometheus's own scrape interval adds up to a whole interval of
//! delay) but needs no network path to the Milvus pods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::task::JoinSet;

use super::{MetricsSource, PollOutcome};
use crate::catalogue::{Signal, SignalKey};
use crate::engine::{DEFAULT_DEMAND_DRAIN, SignalValues, latency_without_completions};
use crate::snapshot::TargetHealth;
use crate::unknown::Unknown;

/// Runs one PromQL query per signal (and per-collection variants) each round.
pub struct PrometheusSource {
    base_url: String,
    selector: String,
    window: Duration,
    demand_drain: Duration,
    client: reqwest::Client,
}

/// One query: which signal it answers, and the label that splits it by collection, if any.
#[derive(Debug, Clone)]
pub struct SignalQuery {
    /// The signal answered.
    pub signal: Signal,
    /// Result label naming the collection; `None` for the instance-wide query.
    pub collection_label: Option<&'static str>,
    /// The PromQL expression.
    pub expr: String,
}

/// The PromQL expressions for every signal, restricted to series matching `selector` (a
/// comma-separated list of label matchers, e.g. `namespace="milvus",app_kubernetes_io_instance="prod"`),
/// rates and averages over `window`, `search_demand` with the drain time `demand_drain`.
pub fn queries(selector: &str, window: Duration, demand_drain: Duration) -> Vec<SignalQuery> {
    let sel = |matchers: &str| -> String {
        match (matchers.is_empty(), selector.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{{{matchers}}}"),
            (true, false) => format!("{{{selector}}}"),
            (false, false) => format!("{{{matchers},{selector}}}"),
        }
    };
    let w = format!("{}s", window.as_secs().max(1));
    // Components export these gauges from start; "0 * present" turns a lazily-created,
    // absent series into a true zero only while the component is really being scraped.
    let querynode_up = format!("0 * max(milvus_querynode_read_task_ready_len{})", sel(""));
    let datacoord_up = format!("0 * max(milvus_datacoord_segment_num{})", sel(""));
    let proxy_up = format!("0 * max(milvus_proxy_tt_lag_ms{})", sel(""));
    let mut out = in_flight_queries(selector, window);
    out.push(demand_query(selector, window, demand_drain));
    out.push(balancing_query(selector, window));
    out.extend([
        SignalQuery {
            signal: Signal::SearchQueueDepth,
            collection_label: None,
            expr: format!(
                "sum({{__name__=~\"milvus_querynode_read_task_(unsolved|ready)_len\"{}}})",
                extra_matchers(selector)
            ),
        },
        SignalQuery {
            signal: Signal::IndexPendingBuilds,
            collection_label: None,
            expr: format!(
                "(sum(milvus_datacoord_index_task_count{}) or sum(milvus_datacoord_task_count{})) or {datacoord_up}",
                sel("index_task_status=~\"unissued|in-progress\""),
                sel(
                    "task_type=~\".*Index.*\",task_state=~\"JobStateInit|JobStateInProgress|JobStateRetry\""
                )
            ),
        },
        SignalQuery {
            signal: Signal::SearchRate,
            collection_label: None,
            expr: format!(
                "sum(rate(milvus_proxy_req_count{}[{w}])) or {proxy_up}",
                sel("function_name=\"Search\",status=\"total\"")
            ),
        },
        SignalQuery {
            signal: Signal::SearchRate,
            collection_label: Some("collection_name"),
            expr: format!(
                "sum by (collection_name) (rate(milvus_proxy_collection_sq_latency_count{}[{w}]))",
                sel("query_type=\"search\"")
            ),
        },
    ]);
    for (signal, metric) in [
        (Signal::LoadedEntities, "milvus_querynode_entity_num"),
        (Signal::LoadedBytes, "milvus_querynode_entity_size"),
    ] {
        out.push(SignalQuery {
            signal,
            collection_label: None,
            expr: format!("sum({metric}{}) or {querynode_up}", sel("")),
        });
        out.push(SignalQuery {
            signal,
            collection_label: Some("collection_id"),
            expr: format!("sum by (collection_id) ({metric}{})", sel("")),
        });
    }
    for signal in [
        Signal::SearchLatencyP50Seconds,
        Signal::SearchLatencyP90Seconds,
        Signal::SearchLatencyP99Seconds,
    ] {
        let q = signal.quantile().unwrap_or(0.5);
        out.push(SignalQuery {
            signal,
            collection_label: None,
            expr: format!(
                "histogram_quantile({q}, sum by (le) (rate(milvus_proxy_sq_latency_bucket{}[{w}]))) / 1000",
                sel("query_type=\"search\"")
            ),
        });
        out.push(SignalQuery {
            signal,
            collection_label: Some("collection_name"),
            expr: format!(
                "histogram_quantile({q}, sum by (le, collection_name) (rate(milvus_proxy_collection_sq_latency_bucket{}[{w}]))) / 1000",
                sel("query_type=\"search\"")
            ),
        });
    }
    out
}

/// Searches queued or executing now, as the scrape engine counts them for its stuck-search rule
/// ([`latency_without_completions`]): the query nodes' waiting read tasks plus the proxies' nq
/// in flight, each 0 when not exported, NaN samples dropped.
pub fn in_flight_searches_query(selector: &str) -> String {
    let extra = extra_matchers(selector);
    format!(
        "(sum({{__name__=~\"milvus_querynode_read_task_(unsolved|ready)_len\"{extra}}} >= 0) or vector(0)) + (sum({{__name__=\"milvus_proxy_executing_total_nq\"{extra}}} >= 0) or vector(0))"
    )
}

/// `selector` as extra matchers to append inside a selector's braces: `,` + selector, or nothing.
fn extra_matchers(selector: &str) -> String {
    if selector.is_empty() {
        String::new()
    } else {
        format!(",{selector}")
    }
}

/// A subquery's range and step, seconds, for `window`: about 30 points per window, at least one
/// a second, so every sample of a Prometheus scraping every 1-30 s is seen, weighted by how long
/// it held.
fn subquery_range(window: Duration) -> (u64, u64) {
    let secs = window.as_secs().max(1);
    (secs, (secs / 30).max(1))
}

/// `search_inflight` (sum) and `search_inflight_node_max` (max) over query nodes of each node's
/// in-flight read tasks (waiting + executing, both metric generations) averaged over the window.
///
/// The per-node average is a subquery, `avg_over_time((sum by (node_id) (G))[W:S])`, so a gauge
/// absent in part of the window counts as 0 there, as in the scrape engine. `and` keeps only
/// the nodes Prometheus scrapes now (a stopped node's series go stale at once, but its samples
/// stay in the range for a whole window); `or` gives a node too new to have a subquery point its
/// current value. No query node, or none scraped now: an empty result, which is unknown.
fn in_flight_queries(selector: &str, window: Duration) -> Vec<SignalQuery> {
    let extra = extra_matchers(selector);
    // `>= 0` drops NaN samples (the scrape engine skips them too) and keeps metric names apart.
    let now = format!(
        "sum by (node_id) ({{__name__=~\"milvus_querynode_read_task_(unsolved_len|ready_len|concurrency)\"{extra}}} >= 0)"
    );
    let (secs, step) = subquery_range(window);
    let per_node = format!("((avg_over_time(({now})[{secs}s:{step}s]) or {now}) and {now})");
    vec![
        SignalQuery {
            signal: Signal::SearchInflight,
            collection_label: None,
            expr: format!("sum({per_node})"),
        },
        SignalQuery {
            signal: Signal::SearchInflightNodeMax,
            collection_label: None,
            expr: format!("max({per_node})"),
        },
    ]
}

/// `search_demand`: per proxy (Prometheus's `instance` label, one per scraped target, as the scrape
/// engine keeps one history per target), the rate of the search nq it received plus the mean of
/// its nq in flight over the window divided by `drain`; summed over the proxies scraped now.
///
/// As in the scrape engine: the received series of a proxy are summed first and the rate is taken
/// of that sum through a subquery, so a proxy restarting under a new `node_id` is a counter reset
/// of the same proxy, not a new series with half a window of history; a metric the proxy does not
/// export (yet) counts 0 (`or 0 * P`, P = the proxy is scraped now), so its first search counts
/// from 0; `and P` drops proxies no longer scraped; a proxy with one subquery point has no rate
/// yet and does not count. A proxy that exports one of `milvus_proxy_received_nq` and
/// `milvus_proxy_executing_total_nq` but not the other makes the result empty (`unless`): unknown.
/// No proxy: empty, unknown.
fn demand_query(selector: &str, window: Duration, drain: Duration) -> SignalQuery {
    let extra = extra_matchers(selector);
    let (secs, step) = subquery_range(window);
    let drain = drain.as_secs_f64().max(1.0);
    let proxy = format!(
        "group by (instance) ({{__name__=~\"milvus_proxy_(tt_lag_ms|received_nq|executing_total_nq)\"{extra}}})"
    );
    // `>= 0` drops NaN samples, which the scrape engine skips too.
    let received = format!(
        "(sum by (instance) (milvus_proxy_received_nq{{query_type=\"search\"{extra}}} >= 0) or 0 * {proxy})"
    );
    let executing = format!(
        "(sum by (instance) ({{__name__=\"milvus_proxy_executing_total_nq\"{extra}}} >= 0) or 0 * {proxy})"
    );
    let has = |metric: &str| format!("group by (instance) ({{__name__=\"{metric}\"{extra}}})");
    let (r, e) = (
        has("milvus_proxy_received_nq"),
        has("milvus_proxy_executing_total_nq"),
    );
    let one_missing = format!("(({r} unless on (instance) {e}) or ({e} unless on (instance) {r}))");
    SignalQuery {
        signal: Signal::SearchDemand,
        collection_label: None,
        expr: format!(
            "sum((rate({received}[{secs}s:{step}s]) + avg_over_time({executing}[{secs}s:{step}s]) / {drain}) and {proxy}) unless on () {one_missing}"
        ),
    }
}

/// `query_balancing`: 1 when a target scraped now exported query-coordinator move tasks
/// (`milvus_querycoord_task_num` of a `_move` type) or query nodes in
/// stopping balance in any subquery point of the window, else 0; empty (unknown) while no query
/// coordinator is scraped (`milvus_querycoord_querynode_num`, exported from start). As in the
/// scrape engine, a coordinator without task gauges yet counts 0 and a target no longer scraped
/// no longer counts.
fn balancing_query(selector: &str, window: Duration) -> SignalQuery {
    let extra = extra_matchers(selector);
    let (secs, step) = subquery_range(window);
    let tasks = format!(
        "sum by (instance) (milvus_querycoord_task_num{{querycoord_task_type=~\".*_move\"{extra}}} >= 0)"
    );
    let stopping = format!(
        "sum by (instance) (milvus_querynode_stopping_balance_node_num{{{selector}}} >= 0)"
    );
    let coordinator =
        format!("group by (instance) (milvus_querycoord_querynode_num{{{selector}}})");
    // Per target: tasks + stopping nodes, either alone, or 0 for a coordinator without either.
    let activity =
        format!("(({tasks} + {stopping}) or {tasks} or {stopping} or 0 * {coordinator})");
    let now = format!("({coordinator} or group by (instance) ({stopping}))");
    SignalQuery {
        signal: Signal::QueryBalancing,
        collection_label: None,
        expr: format!(
            "(max(max_over_time({activity}[{secs}s:{step}s]) and on (instance) {now}) > bool 0) and on () group({coordinator})"
        ),
    }
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Values of one query: by collection label value (`None` for instance-wide).
pub type QueryResult = Result<Vec<(Option<String>, f64)>, String>;

/// Parses a `/api/v1/query` response body.
pub fn parse_response(body: &[u8], collection_label: Option<&str>) -> QueryResult {
    let response: ApiResponse =
        serde_json::from_slice(body).map_err(|e| format!("unexpected Prometheus response: {e}"))?;
    if response.status != "success" {
        return Err(format!(
            "Prometheus query failed: {}",
            response.error.unwrap_or_else(|| "no error message".into())
        ));
    }
    let parse_value = |s: &str| {
        crate::exposition::parse_float(s)
            .ok_or_else(|| format!("Prometheus returned a non-number value {s:?}"))
    };
    match response.data {
        Some(ApiData::Vector(samples)) => samples
            .into_iter()
            .map(|s| {
                let collection = match collection_label {
                    Some(label) => Some(s.metric.get(label).cloned().unwrap_or_default()),
                    None => None,
                };
                Ok((collection, parse_value(&s.value.1)?))
            })
            .collect(),
        Some(ApiData::Scalar((_, v))) => Ok(vec![(None, parse_value(&v)?)]),
        _ => Err("expected an instant vector from Prometheus".into()),
    }
}

impl PrometheusSource {
    /// The same source with `search_demand`'s drain time (`signals.demand_drain`); default
    /// [`DEFAULT_DEMAND_DRAIN`].
    pub fn with_demand_drain(mut self, drain: Duration) -> Self {
        self.demand_drain = drain;
        self
    }

    /// A source querying the Prometheus at `base_url` (e.g. `http://prometheus:9090`).
    pub fn new(
        base_url: &str,
        selector: &str,
        timeout: Duration,
        window: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            selector: selector.to_string(),
            window,
            demand_drain: DEFAULT_DEMAND_DRAIN,
            client: reqwest::Client::builder().timeout(timeout).build()?,
        })
    }
}

async fn run_query(
    client: reqwest::Client,
    url: String,
    query: SignalQuery,
) -> (SignalQuery, QueryResult) {
    let result = fetch(&client, &url, &query.expr, query.collection_label).await;
    (query, result)
}

/// Runs one instant query.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    expr: &str,
    collection_label: Option<&str>,
) -> QueryResult {
    let response = client.get(url).query(&[("query", expr)]).send().await;
    match response {
        Err(e) => Err(format!("Prometheus at {url} unreachable: {e}")),
        Ok(r) => {
            let status = r.status();
            match r.bytes().await {
                Err(e) => Err(format!("reading Prometheus response: {e}")),
                Ok(body) if status.is_success() => parse_response(&body, collection_label),
                Ok(body) => Err(match parse_response(&body, None) {
                    Err(e) => format!("HTTP {status}: {e}"),
                    Ok(_) => format!("HTTP {status}"),
                }),
            }
        }
    }
}

/// The signal values of one round from its query results. A NaN quantile (no search completed
/// in the window) goes through the scrape engine's rule, [`latency_without_completions`], with
/// `in_flight`, the result of [`in_flight_searches_query`]; per collection it is 0, as there.
pub fn values_from_results(
    results: Vec<(SignalQuery, QueryResult)>,
    in_flight: &QueryResult,
    window: Duration,
) -> SignalValues {
    let mut values = SignalValues::new();
    for (query, result) in results {
        match (result, query.collection_label) {
            (Err(e), None) => {
                values.insert(SignalKey::instance(query.signal), Err(Unknown::PromQl(e)));
            }
            (Err(_), Some(_)) => {}
            (Ok(rows), None) => {
                let value = match rows.first() {
                    None => Err(Unknown::NoSeriesMatched(query.expr.clone())),
                    Some((_, v)) if v.is_nan() && query.signal.quantile().is_some() => {
                        match in_flight {
                            Ok(rows) => latency_without_completions(
                                rows.first().map_or(0.0, |(_, v)| *v),
                                window,
                            ),
                            Err(e) => Err(Unknown::StuckUnknown {
                                window,
                                reason: e.clone(),
                            }),
                        }
                    }
                    Some((_, v)) if v.is_nan() => Ok(0.0),
                    Some((_, v)) => Ok(*v),
                };
                values.insert(SignalKey::instance(query.signal), value);
            }
            (Ok(rows), Some(_)) => {
                for (collection, v) in rows {
                    let v = if v.is_nan() { 0.0 } else { v };
                    values.insert(
                        SignalKey {
                            signal: query.signal,
                            collection,
                        },
                        Ok(v),
                    );
                }
            }
        }
    }
    values
}

impl MetricsSource for PrometheusSource {
    async fn poll(&mut self) -> PollOutcome {
        let at = SystemTime::now();
        let url = format!("{}/api/v1/query", self.base_url);
        let mut tasks = JoinSet::new();
        for query in queries(&self.selector, self.window, self.demand_drain) {
            let client = self.client.clone();
            let url = url.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let (query, result) = run_query(client, url, query).await;
                (query, result, started.elapsed())
            });
        }
        let in_flight = {
            let (client, url) = (self.client.clone(), url.clone());
            let expr = in_flight_searches_query(&self.selector);
            tokio::spawn(async move { fetch(&client, &url, &expr, None).await })
        };
        let mut results = Vec::new();
        let mut health = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((query, result, duration)) = joined else {
                continue;
            };
            health.push(TargetHealth {
                target: query.expr.clone(),
                error: result.as_ref().err().cloned(),
                duration,
            });
            results.push((query, result));
        }
        let in_flight = in_flight
            .await
            .unwrap_or_else(|e| Err(format!("in-flight query task failed: {e}")));
        let values = values_from_results(results, &in_flight, self.window);
        if health.iter().all(|h| h.error.is_some()) {
            health.truncate(1);
        }
        health.sort_by(|a, b| a.target.cmp(&b.target));
        PollOutcome {
            at,
            values,
            targets: health,
            window: self.window,
            scale_out: None,
        }
    }

    fn describe(&self) -> String {
        format!("prometheus {}", self.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_an_instance_query_with_the_selector() {
        let qs = queries(
            "namespace=\"milvus\"",
            Duration::from_secs(30),
            DEFAULT_DEMAND_DRAIN,
        );
        for signal in Signal::ALL {
            let q = qs
                .iter()
                .find(|q| q.signal == signal && q.collection_label.is_none())
                .unwrap_or_else(|| panic!("{signal}"));
            assert!(q.expr.contains("namespace=\"milvus\""), "{}", q.expr);
        }
        assert!(qs.iter().any(|q| q.expr.contains("[30s]")));
    }

    #[test]
    fn in_flight_queries_average_per_node_over_the_window() {
        let qs = queries(
            "namespace=\"milvus\"",
            Duration::from_secs(300),
            DEFAULT_DEMAND_DRAIN,
        );
        let sum = qs
            .iter()
            .find(|q| q.signal == Signal::SearchInflight)
            .unwrap();
        let max = qs
            .iter()
            .find(|q| q.signal == Signal::SearchInflightNodeMax)
            .unwrap();
        assert!(
            sum.expr.starts_with("sum(((avg_over_time(("),
            "{}",
            sum.expr
        );
        assert!(
            max.expr.starts_with("max(((avg_over_time(("),
            "{}",
            max.expr
        );
        // Both generations and the executing tasks; 30 points per window.
        assert!(
            sum.expr
                .contains("read_task_(unsolved_len|ready_len|concurrency)\",namespace=\"milvus\""),
            "{}",
            sum.expr
        );
        assert!(sum.expr.contains("[300s:10s]"), "{}", sum.expr);
        assert!(sum.expr.contains("sum by (node_id)"), "{}", sum.expr);
        // No per-collection variant: these gauges have no collection label.
        assert!(!qs.iter().any(|q| matches!(
            q.signal,
            Signal::SearchInflight | Signal::SearchInflightNodeMax
        ) && q.collection_label.is_some()));
        let short = queries("", Duration::from_secs(10), DEFAULT_DEMAND_DRAIN);
        let q = short
            .iter()
            .find(|q| q.signal == Signal::SearchInflight)
            .unwrap();
        assert!(q.expr.contains("concurrency)\"} >= 0"), "{}", q.expr);
        assert!(q.expr.contains("[10s:1s]"), "{}", q.expr);
    }

    #[test]
    fn demand_query_is_received_rate_plus_in_flight_over_the_drain_per_proxy() {
        let qs = queries(
            "namespace=\"milvus\"",
            Duration::from_secs(300),
            Duration::from_secs(45),
        );
        let demand: Vec<&SignalQuery> = qs
            .iter()
            .filter(|q| q.signal == Signal::SearchDemand)
            .collect();
        // One instance-wide query, no per-collection variant (executing_total_nq has no
        // collection label).
        assert_eq!(demand.len(), 1);
        assert!(demand[0].collection_label.is_none());
        let expr = &demand[0].expr;
        for part in [
            "sum((rate((sum by (instance) (milvus_proxy_received_nq{query_type=\"search\",namespace=\"milvus\"} >= 0) or 0 * group by (instance)",
            "[300s:10s]) + avg_over_time((sum by (instance) ({__name__=\"milvus_proxy_executing_total_nq\",namespace=\"milvus\"} >= 0)",
            "[300s:10s]) / 45) and group by (instance)",
            ") unless on () ((group by (instance) ({__name__=\"milvus_proxy_received_nq\",namespace=\"milvus\"}) unless on (instance)",
        ] {
            assert!(expr.contains(part), "{part}\nnot in\n{expr}");
        }
        let short = queries("", Duration::from_secs(10), Duration::from_millis(1500));
        let q = short
            .iter()
            .find(|q| q.signal == Signal::SearchDemand)
            .unwrap();
        assert!(
            q.expr
                .contains("milvus_proxy_received_nq{query_type=\"search\"} >= 0"),
            "{}",
            q.expr
        );
        assert!(q.expr.contains("[10s:1s]) / 1.5)"), "{}", q.expr);
    }

    #[test]
    fn the_demand_drain_reaches_the_queries() {
        let source = PrometheusSource::new(
            "http://p:9090/",
            "",
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(source.demand_drain, DEFAULT_DEMAND_DRAIN);
        assert_eq!(
            source
                .with_demand_drain(Duration::from_secs(20))
                .demand_drain,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn parses_vectors_scalars_and_errors() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"collection_name":"docs"},"value":[1700000000.1,"2.5"]},{"metric":{},"value":[1700000000.1,"NaN"]}]}}"#;
        let rows = parse_response(body, Some("collection_name")).unwrap();
        assert_eq!(rows[0], (Some("docs".into()), 2.5));
        assert!(rows[1].1.is_nan());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(parse_response(scalar, None).unwrap(), vec![(None, 3.0)]);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(
            parse_response(err, None)
                .unwrap_err()
                .contains("parse error")
        );
        assert!(
            parse_response(b"<html>", None)
                .unwrap_err()
                .contains("unexpected")
        );
    }
}
