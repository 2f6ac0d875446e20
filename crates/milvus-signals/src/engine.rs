//! Signal maths: gauges from the newest round, rates and latency quantiles from counter increases
//! over a sliding window, in-flight read tasks as per-query-node averages over the same window,
//! search demand from the proxies' received nq (a rate) and nq in flight (a window average).
//! Pure: rounds go in with their timestamps, values come out.
//!
//! Memory is bounded by the window: for each target and counter series only the reset-corrected
//! value of each round inside the window is kept (16 bytes a point), for each query node only its
//! in-flight count of each round inside the window (16 bytes a point), for each proxy its received
//! and in-flight nq of each round inside the window (two points a round), not whole samples.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::catalogue::{Signal, SignalKey};
use crate::milvus::{Counter, Gauge, TargetSample};
use crate::quantile::{Bucket, histogram_quantile};
use crate::unknown::{Component, Unknown};

/// What one computation produced: a value or the reason there is none, per signal key.
pub type SignalValues = BTreeMap<SignalKey, Result<f64, Unknown>>;

type CounterKey = (Counter, Option<String>);

/// One counter series of one target: its last raw value, the total of earlier resets, and the
/// reset-corrected (monotonic) value at each round inside the window.
#[derive(Debug, Clone, Default)]
struct CounterHistory {
    last_raw: f64,
    offset: f64,
    points: VecDeque<(SystemTime, f64)>,
}

impl CounterHistory {
    fn push(&mut self, at: SystemTime, raw: f64) {
        if self.points.is_empty() {
            self.offset = 0.0;
        } else if raw < self.last_raw {
            // A counter that went down was reset (the process restarted and counts from zero):
            // everything counted before stays counted, as Prometheus's rate() does.
            self.offset += self.last_raw;
        }
        self.last_raw = raw;
        self.points.push_back((at, raw + self.offset));
    }

    /// Increase and time span over the points inside the window.
    fn increase(&self) -> Option<(f64, f64)> {
        let (first, last) = (self.points.front()?, self.points.back()?);
        let span = last
            .0
            .duration_since(first.0)
            .unwrap_or_default()
            .as_secs_f64();
        (self.points.len() >= 2 && span > 0.0).then_some((last.1 - first.1, span))
    }
}

/// What `search_demand` keeps about one proxy target, one point per round it answered inside the
/// window: its received search nq (summed over series, reset-corrected) and its nq in flight.
#[derive(Debug, Clone, Default)]
struct DemandHistory {
    received: CounterHistory,
    executing: VecDeque<(SystemTime, f64)>,
}

/// Default of `signals.demand_drain`: the time within which `search_demand` asks for the capacity
/// to drain the nq in flight.
pub const DEFAULT_DEMAND_DRAIN: Duration = Duration::from_secs(120);

/// Everything kept about one target: its newest sample, its counter histories and the in-flight
/// history of each query node it exports.
#[derive(Debug, Clone, Default)]
struct TargetHistory {
    latest: TargetSample,
    counters: HashMap<CounterKey, CounterHistory>,
    /// Per query node (`node_id`): read tasks in flight at each round inside the window.
    in_flight: HashMap<String, VecDeque<(SystemTime, f64)>>,
    /// When this target answered, inside the window: two answers make its rates known, even
    /// when it exports no counter series yet (an idle proxy creates them on the first search).
    answered: VecDeque<SystemTime>,
    /// Proxy targets only: the two inputs of `search_demand`.
    demand: DemandHistory,
    /// Query-coordinator (and stopping-balance) tasks moving data, at each round inside the window.
    balance: VecDeque<(SystemTime, f64)>,
}

impl TargetHistory {
    /// Drops every point outside the window ending at `at` (see [`trim`]), and the series left
    /// with none.
    fn trim(&mut self, at: SystemTime, window: Duration) {
        for series in self.counters.values_mut() {
            trim(&mut series.points, at, window, |(t, _)| *t);
        }
        self.counters.retain(|_, series| !series.points.is_empty());
        for points in self.in_flight.values_mut() {
            trim(points, at, window, |(t, _)| *t);
        }
        self.in_flight.retain(|_, points| !points.is_empty());
        trim(&mut self.answered, at, window, |t| *t);
        trim(&mut self.balance, at, window, |(t, _)| *t);
        trim(&mut self.demand.received.points, at, window, |(t, _)| *t);
        trim(&mut self.demand.executing, at, window, |(t, _)| *t);
    }
}

/// Keeps the points of a time-ordered series inside the window ending at `at`: drops from the
/// back those later than `at` (the wall clock stepped back; they would otherwise count as
/// "inside" until the clock caught up, and block the trim of the front meanwhile), then from the
/// front those older than `window`.
fn trim<P>(
    points: &mut VecDeque<P>,
    at: SystemTime,
    window: Duration,
    time: impl Fn(&P) -> SystemTime,
) {
    while points.back().is_some_and(|p| time(p) > at) {
        points.pop_back();
    }
    while points
        .front()
        .is_some_and(|p| at.duration_since(time(p)).is_ok_and(|age| age > window))
    {
        points.pop_front();
    }
}

/// Keeps what the window needs and derives signal values from it.
#[derive(Debug, Clone)]
pub struct SignalEngine {
    window: Duration,
    demand_drain: Duration,
    latest_round: Option<(SystemTime, BTreeSet<String>)>,
    targets: HashMap<String, TargetHistory>,
}

impl SignalEngine {
    /// An engine computing rates and quantiles over `window`, `search_demand` with the default
    /// drain time ([`DEFAULT_DEMAND_DRAIN`]).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            demand_drain: DEFAULT_DEMAND_DRAIN,
            latest_round: None,
            targets: HashMap::new(),
        }
    }

    /// The same engine with `search_demand`'s drain time (`signals.demand_drain`) set: the nq in
    /// flight count as nq in flight / `drain` per second. A drain below 1 s is taken as 1 s (the
    /// configuration rejects it).
    pub fn with_demand_drain(mut self, drain: Duration) -> Self {
        self.demand_drain = drain.max(Duration::from_secs(1));
        self
    }

    /// The sliding window rates and quantiles are computed over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The drain time of `search_demand`.
    pub fn demand_drain(&self) -> Duration {
        self.demand_drain
    }

    /// Records a round: the samples of the targets that answered, taken at `at`.
    /// Points older than the window (relative to this round) are dropped, and so are points
    /// later than `at` (the wall clock stepped back), so every history stays ordered and holds
    /// at most one point per round of the last window.
    pub fn observe(&mut self, at: SystemTime, targets: BTreeMap<String, TargetSample>) {
        // Trim before pushing: a point later than `at` sits before the new one, where only a
        // trim from the back (before the push) reaches it.
        for history in self.targets.values_mut() {
            history.trim(at, self.window);
        }
        let answered: BTreeSet<String> = targets.keys().cloned().collect();
        for (name, sample) in targets {
            let history = self.targets.entry(name).or_default();
            for (key, raw) in &sample.counters {
                history
                    .counters
                    .entry(key.clone())
                    .or_default()
                    .push(at, *raw);
            }
            for (node, value) in &sample.read_tasks_in_flight {
                history
                    .in_flight
                    .entry(node.clone())
                    .or_default()
                    .push_back((at, *value));
            }
            if sample.has_proxy {
                // Absent metrics count 0 here (a proxy creates both on its first search, so the
                // first search's nq is an increase from 0); a proxy exporting only one of them
                // makes the signal unknown in `compute`.
                let demand = &mut history.demand;
                demand
                    .received
                    .push(at, sample.received_search_nq.unwrap_or(0.0));
                demand
                    .executing
                    .push_back((at, sample.executing_nq().unwrap_or(0.0)));
            }
            if sample.has_querycoord || sample.balance_tasks > 0.0 {
                history.balance.push_back((at, sample.balance_tasks));
            }
            history.latest = sample;
            history.answered.push_back(at);
        }
        // A target gone for a whole window (a pod that left DNS) is forgotten: all its answers
        // were trimmed above.
        self.targets
            .retain(|name, history| answered.contains(name) || !history.answered.is_empty());
        self.latest_round = Some((at, answered));
    }

    /// Values of every signal (instance-wide, and per collection where Milvus labels allow)
    /// as of the newest round. Empty before the first round.
    pub fn compute(&self) -> SignalValues {
        let mut out = SignalValues::new();
        let Some((_, answered)) = &self.latest_round else {
            return out;
        };
        if answered.is_empty() {
            for signal in Signal::ALL {
                out.insert(SignalKey::instance(signal), Err(Unknown::NoTargetAnswered));
            }
            return out;
        }
        let named: Vec<(&str, &TargetHistory)> = answered
            .iter()
            .filter_map(|name| Some((name.as_str(), self.targets.get(name)?)))
            .collect();
        let current: Vec<&TargetHistory> = named.iter().map(|(_, h)| *h).collect();
        let targets: Vec<&TargetSample> = current.iter().map(|h| &h.latest).collect();
        self.gauge_signals(&targets, &mut out);
        self.windowed_signals(&current, &targets, &mut out);
        self.in_flight_signals(&current, &mut out);
        out.insert(
            SignalKey::instance(Signal::QueryBalancing),
            balancing_signal(&current),
        );
        out.insert(
            SignalKey::instance(Signal::SearchDemand),
            self.demand_signal(&named),
        );
        out
    }

    /// `search_demand`, nq per second: summed over the proxy targets of the newest round, the
    /// rate of search nq received over the window (increase of the per-target sum of
    /// `milvus_proxy_received_nq{query_type="search"}` series, reset-corrected, over the time
    /// between the first and last round inside the window) plus the mean of the target's
    /// `milvus_proxy_executing_total_nq` over its rounds inside the window divided by the drain
    /// time. A proxy that left no longer counts; a proxy with a single round inside the window
    /// does not count yet (its rate needs two); with none that has two: unknown (warming up).
    fn demand_signal(&self, current: &[(&str, &TargetHistory)]) -> Result<f64, Unknown> {
        let proxies: Vec<&(&str, &TargetHistory)> =
            current.iter().filter(|(_, h)| h.latest.has_proxy).collect();
        if proxies.is_empty() {
            return Err(Unknown::ComponentMissing(Component::Proxy));
        }
        for (name, history) in &proxies {
            let received = history.latest.received_search_nq.is_some();
            let executing = history.latest.executing_nq().is_some();
            let (has, missing) = match (received, executing) {
                (true, false) => (
                    "milvus_proxy_received_nq",
                    "milvus_proxy_executing_total_nq",
                ),
                (false, true) => (
                    "milvus_proxy_executing_total_nq",
                    "milvus_proxy_received_nq",
                ),
                // Both, or neither (an idle proxy that has served no search or query yet).
                _ => continue,
            };
            return Err(Unknown::DemandHalfExported {
                target: name.to_string(),
                has,
                missing,
            });
        }
        let drain = self.demand_drain.as_secs_f64();
        let mut demand = 0.0;
        let mut proxies_with_rates = 0;
        for (_, history) in &proxies {
            let Some((increase, span)) = history.demand.received.increase() else {
                continue;
            };
            let executing = &history.demand.executing;
            let mean = executing.iter().map(|(_, v)| v).sum::<f64>() / executing.len() as f64;
            demand += increase / span + mean / drain;
            proxies_with_rates += 1;
        }
        if proxies_with_rates == 0 {
            return Err(Unknown::WarmingUp);
        }
        Ok(demand)
    }

    /// `search_inflight` and `search_inflight_node_max`: each query node's in-flight count
    /// averaged over its rounds inside the window, summed / maximised over the query nodes in the
    /// newest round. A node missing from the newest round (stopped, restarted under a new
    /// `node_id`, or its target failed) no longer counts, even while its points are still kept.
    fn in_flight_signals(&self, current: &[&TargetHistory], out: &mut SignalValues) {
        let mut averages = Vec::new();
        for history in current {
            for node in history.latest.read_tasks_in_flight.keys() {
                let points = history.in_flight.get(node).filter(|p| !p.is_empty());
                let Some(points) = points else {
                    let reason = Unknown::NodeWarmingUp {
                        node: node.clone(),
                        window: self.window,
                    };
                    for signal in [Signal::SearchInflight, Signal::SearchInflightNodeMax] {
                        out.insert(SignalKey::instance(signal), Err(reason.clone()));
                    }
                    return;
                };
                let sum: f64 = points.iter().map(|(_, v)| v).sum();
                averages.push(sum / points.len() as f64);
            }
        }
        if averages.is_empty() {
            let reason = if current.iter().any(|h| h.latest.has_querynode) {
                Unknown::InFlightGaugesMissing
            } else {
                Unknown::ComponentMissing(Component::QueryNode)
            };
            for signal in [Signal::SearchInflight, Signal::SearchInflightNodeMax] {
                out.insert(SignalKey::instance(signal), Err(reason.clone()));
            }
            return;
        }
        let sum = averages.iter().sum();
        let max = averages.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.insert(SignalKey::instance(Signal::SearchInflight), Ok(sum));
        out.insert(SignalKey::instance(Signal::SearchInflightNodeMax), Ok(max));
    }

    fn gauge_signals(&self, targets: &[&TargetSample], out: &mut SignalValues) {
        let querynode = targets.iter().any(|t| t.has_querynode);
        let datacoord = targets.iter().any(|t| t.has_datacoord);
        let no_querynode = Component::QueryNode;
        let specs = [
            (
                Signal::SearchQueueDepth,
                Gauge::QueueDepth,
                querynode,
                no_querynode,
            ),
            (
                Signal::LoadedEntities,
                Gauge::LoadedEntities,
                querynode,
                no_querynode,
            ),
            (
                Signal::LoadedBytes,
                Gauge::LoadedBytes,
                querynode,
                no_querynode,
            ),
            (
                Signal::IndexPendingBuilds,
                Gauge::IndexPending,
                datacoord,
                Component::DataCoord,
            ),
        ];
        for (signal, gauge, component_present, missing) in specs {
            if !component_present {
                out.insert(
                    SignalKey::instance(signal),
                    Err(Unknown::ComponentMissing(missing)),
                );
                continue;
            }
            if signal == Signal::SearchQueueDepth
                && targets
                    .iter()
                    .any(|t| t.has_querynode && !t.has_queue_gauge)
            {
                out.insert(SignalKey::instance(signal), Err(Unknown::QueueGaugeMissing));
                continue;
            }
            // Milvus creates these gauge series lazily: a component that is up but exports no
            // series for them has nothing loaded / queued, which is a true zero.
            let mut per_key: BTreeMap<Option<String>, f64> = BTreeMap::new();
            per_key.insert(None, 0.0);
            for target in targets {
                for ((g, collection), value) in &target.gauges {
                    if *g == gauge {
                        *per_key.entry(collection.clone()).or_insert(0.0) += value;
                    }
                }
            }
            for (collection, value) in per_key {
                out.insert(SignalKey { signal, collection }, Ok(value));
            }
        }
        if datacoord && targets.iter().any(|t| t.index_builds_instance_only) {
            out.insert(
                SignalKey::no_collection_values(Signal::IndexPendingBuilds),
                Err(Unknown::IndexBuildsInstanceOnly),
            );
        }
    }

    fn windowed_signals(
        &self,
        current: &[&TargetHistory],
        targets: &[&TargetSample],
        out: &mut SignalValues,
    ) {
        let windowed = [
            Signal::SearchRate,
            Signal::SearchLatencyP50Seconds,
            Signal::SearchLatencyP90Seconds,
            Signal::SearchLatencyP99Seconds,
        ];
        let fail_all = |out: &mut SignalValues, reason: Unknown| {
            for signal in windowed {
                out.insert(SignalKey::instance(signal), Err(reason.clone()));
            }
        };
        if !targets.iter().any(|t| t.has_proxy) {
            fail_all(out, Unknown::ComponentMissing(Component::Proxy));
            return;
        }
        // Per-second rate of every counter series, summed over targets. Each target's increase is
        // taken over its own points, so one pod restarting (a counter reset) affects only itself.
        let mut rates: BTreeMap<CounterKey, f64> = BTreeMap::new();
        let mut targets_with_rates = 0;
        for history in current.iter().filter(|h| h.latest.has_proxy) {
            let (Some(first), Some(last)) = (history.answered.front(), history.answered.back())
            else {
                continue;
            };
            if last.duration_since(*first).unwrap_or_default().is_zero() {
                continue;
            }
            targets_with_rates += 1;
            for key in history.latest.counters.keys() {
                if let Some((increase, span)) =
                    history.counters.get(key).and_then(CounterHistory::increase)
                {
                    *rates.entry(key.clone()).or_insert(0.0) += increase / span;
                }
            }
        }
        if targets_with_rates == 0 {
            fail_all(out, Unknown::WarmingUp);
            return;
        }
        let in_flight: f64 = targets
            .iter()
            .flat_map(|t| {
                [Gauge::QueueDepth, Gauge::InFlightNq]
                    .into_iter()
                    .filter_map(|g| t.gauges.get(&(g, None)))
            })
            .sum();

        let mut collections: BTreeSet<Option<String>> =
            rates.keys().map(|(_, c)| c.clone()).collect();
        collections.insert(None);
        for collection in collections {
            let search_rate = rates
                .get(&(Counter::SearchRequests, collection.clone()))
                .copied()
                .unwrap_or(0.0);
            out.insert(
                SignalKey {
                    signal: Signal::SearchRate,
                    collection: collection.clone(),
                },
                Ok(search_rate),
            );
            let buckets: Vec<Bucket> = rates
                .iter()
                .filter_map(|((counter, c), rate)| match counter {
                    Counter::LatencyBucket(le) if *c == collection => Some(Bucket {
                        upper_bound: le.0,
                        count: *rate,
                    }),
                    _ => None,
                })
                .collect();
            for signal in windowed.into_iter().filter(|s| s.quantile().is_some()) {
                let q = signal.quantile().unwrap_or(0.5);
                let value = match histogram_quantile(q, &buckets) {
                    // Milvus's search latency histograms are in milliseconds.
                    Some(ms) => Ok(ms / 1000.0),
                    None if collection.is_none() => {
                        latency_without_completions(in_flight, self.window)
                    }
                    // Per collection there is no in-flight count to tell stuck from idle.
                    None => Ok(0.0),
                };
                out.insert(
                    SignalKey {
                        signal,
                        collection: collection.clone(),
                    },
                    value,
                );
            }
        }
    }
}

/// A latency quantile when no search completed inside the window, for both sources (the scrape
/// engine and PromQL, whose `histogram_quantile` is NaN then): with `in_flight` searches queued
/// or executing they are stuck, which is unknown (a hold, never a reassuring 0); with none
/// there is nothing to be slow, a true 0.
pub fn latency_without_completions(in_flight: f64, window: Duration) -> Result<f64, Unknown> {
    if in_flight > 0.0 {
        Err(Unknown::Stuck { in_flight, window })
    } else {
        Ok(0.0)
    }
}

/// `query_balancing`: 1 when any target of the newest round saw data moving between query nodes
/// in any of its rounds inside the window, else 0; unknown without a query coordinator in the
/// newest round (a hold that cannot see Milvus must not say "settled").
fn balancing_signal(current: &[&TargetHistory]) -> Result<f64, Unknown> {
    if !current.iter().any(|h| h.latest.has_querycoord) {
        return Err(Unknown::ComponentMissing(Component::QueryCoord));
    }
    let moving = current
        .iter()
        .flat_map(|h| h.balance.iter())
        .any(|(_, tasks)| *tasks > 0.0);
    Ok(if moving { 1.0 } else { 0.0 })
}

/// Increase of a counter over consecutive values, Prometheus-style: a drop is a reset (the
/// process restarted and counts from zero), so the new value itself is the increase since.
pub fn increase(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut history = CounterHistory::default();
    let mut t = SystemTime::UNIX_EPOCH;
    for value in values {
        t += Duration::from_secs(1);
        history.push(t, value);
    }
    history.increase().map_or(0.0, |(increase, _)| increase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Limits;
    use crate::milvus::{Le, parse_target};

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// A proxy + query node target with `searches` total and all of them in the le=`le_ms` bucket.
    fn target(searches: f64, le_ms: f64, queue: f64) -> TargetSample {
        let mut s = TargetSample {
            has_proxy: true,
            has_querynode: true,
            has_datacoord: true,
            has_queue_gauge: true,
            ..Default::default()
        };
        s.gauges.insert((Gauge::QueueDepth, None), queue);
        s.counters.insert((Counter::SearchRequests, None), searches);
        for bound in [10.0, 100.0, 1000.0, f64::INFINITY] {
            let count = if bound >= le_ms { searches } else { 0.0 };
            s.counters
                .insert((Counter::LatencyBucket(Le(bound)), None), count);
        }
        s
    }

    fn one(name: &str, s: TargetSample) -> BTreeMap<String, TargetSample> {
        BTreeMap::from([(name.to_string(), s)])
    }

    fn value(values: &SignalValues, signal: Signal) -> Result<f64, Unknown> {
        values[&SignalKey::instance(signal)].clone()
    }

    /// A 2.3-2.4 query node body: unsolved, ready and executing read tasks of `node`.
    fn qn_2_3(node: &str, unsolved: f64, ready: f64, executing: f64) -> TargetSample {
        let body = format!(
            "# TYPE milvus_querynode_read_task_unsolved_len gauge\n\
             milvus_querynode_read_task_unsolved_len{{node_id=\"{node}\"}} {unsolved}\n\
             # TYPE milvus_querynode_read_task_ready_len gauge\n\
             milvus_querynode_read_task_ready_len{{node_id=\"{node}\"}} {ready}\n\
             # TYPE milvus_querynode_read_task_concurrency gauge\n\
             milvus_querynode_read_task_concurrency{{node_id=\"{node}\"}} {executing}\n"
        );
        parse_target(&body, &Limits::default()).unwrap()
    }

    /// A 2.5+ query node body: ready (no unsolved) and executing read tasks of `node`.
    fn qn_2_5(node: &str, ready: f64, executing: f64) -> TargetSample {
        let body = format!(
            "milvus_querynode_read_task_ready_len{{node_id=\"{node}\"}} {ready}\n\
             milvus_querynode_read_task_concurrency{{node_id=\"{node}\"}} {executing}\n"
        );
        parse_target(&body, &Limits::default()).unwrap()
    }

    fn in_flight(v: &SignalValues) -> (Result<f64, Unknown>, Result<f64, Unknown>) {
        (
            value(v, Signal::SearchInflight),
            value(v, Signal::SearchInflightNodeMax),
        )
    }

    fn close(actual: Result<f64, Unknown>, expected: f64) {
        let actual = actual.unwrap();
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn in_flight_is_a_per_node_window_average_summed_and_maximised() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        // 20 rounds a second apart, all inside the window. Node 1 (2.3 names) executes one
        // search in every fourth round and is idle otherwise; node 2 (2.5 names) always has two
        // waiting and one executing.
        for i in 0..20u64 {
            let flicker = if i % 4 == 0 { 1.0 } else { 0.0 };
            let mut round = one("qn-a", qn_2_3("1", 0.0, 0.0, flicker));
            round.insert("qn-b".into(), qn_2_5("2", 2.0, 1.0));
            e.observe(t(i), round);
        }
        let v = e.compute();
        // The last round saw node 1 idle: the average, not the last sample, is reported.
        close(value(&v, Signal::SearchInflight), 0.25 + 3.0);
        close(value(&v, Signal::SearchInflightNodeMax), 3.0);
        assert_eq!(value(&v, Signal::SearchQueueDepth), Ok(2.0));
        assert!(
            !v.keys()
                .any(|k| k.signal == Signal::SearchInflight && k.collection.is_some()),
            "no per-collection values"
        );
    }

    #[test]
    fn waiting_tasks_count_fully_and_old_rounds_leave_the_average() {
        let mut e = SignalEngine::new(Duration::from_secs(10));
        // A backlog of 40 waiting (unsolved 10 + ready 26 + 4 executing) at t=0..=4, then idle.
        for i in 0..5 {
            e.observe(t(i), one("qn", qn_2_3("1", 10.0, 26.0, 4.0)));
        }
        close(value(&e.compute(), Signal::SearchInflight), 40.0);
        for i in 5..10 {
            e.observe(t(i), one("qn", qn_2_3("1", 0.0, 0.0, 0.0)));
        }
        // 5 of 10 rounds at 40.
        close(value(&e.compute(), Signal::SearchInflight), 20.0);
        for i in 10..30 {
            e.observe(t(i), one("qn", qn_2_3("1", 0.0, 0.0, 0.0)));
        }
        // The backlog left the window: a true zero (the node is scraped and idle).
        assert_eq!(in_flight(&e.compute()), (Ok(0.0), Ok(0.0)));
        // Memory stays bounded by the window: 11 rounds (t-10 ..= t) kept for the node.
        let kept = e.targets["qn"].in_flight["1"].len();
        assert_eq!(kept, 11);
        assert_eq!(e.targets["qn"].answered.len(), 11);
    }

    #[test]
    fn a_node_that_left_no_longer_counts() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        for i in 0..5 {
            let mut round = one("qn-a", qn_2_5("1", 0.0, 1.0));
            round.insert("qn-b".into(), qn_2_5("2", 6.0, 2.0));
            e.observe(t(i), round);
        }
        assert_eq!(in_flight(&e.compute()), (Ok(9.0), Ok(8.0)));
        // qn-b stopped and left DNS: its points are still inside the window, but it is gone.
        e.observe(t(5), one("qn-a", qn_2_5("1", 0.0, 1.0)));
        assert_eq!(in_flight(&e.compute()), (Ok(1.0), Ok(1.0)));
        // It comes back restarted under a new node id: only the new node counts, from its
        // own first sample, not the old node's history.
        let mut round = one("qn-a", qn_2_5("1", 0.0, 1.0));
        round.insert("qn-b".into(), qn_2_5("3", 0.0, 0.0));
        e.observe(t(6), round);
        assert_eq!(in_flight(&e.compute()), (Ok(1.0), Ok(1.0)));
        // A target gone for a whole window is forgotten altogether.
        for i in 7..40 {
            e.observe(t(i), one("qn-a", qn_2_5("1", 0.0, 1.0)));
        }
        assert_eq!(e.targets.keys().collect::<Vec<_>>(), vec!["qn-a"]);
    }

    #[test]
    fn in_flight_is_unknown_without_a_query_node_never_zero() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        let proxy = parse_target(
            "milvus_proxy_executing_total_nq{node_id=\"9\"} 0\n",
            &Limits::default(),
        )
        .unwrap();
        e.observe(t(0), one("proxy", proxy.clone()));
        let (sum, max) = in_flight(&e.compute());
        let no_querynode = Unknown::ComponentMissing(Component::QueryNode);
        assert_eq!((sum, max), (Err(no_querynode.clone()), Err(no_querynode)));
        // A query node that exports none of the read-task gauges does not count as one.
        let bare = parse_target(
            "milvus_querynode_entity_num{collection_id=\"1\",node_id=\"4\"} 10\n",
            &Limits::default(),
        )
        .unwrap();
        let mut round = one("proxy", proxy);
        round.insert("qn".into(), bare);
        e.observe(t(1), round);
        assert_eq!(
            value(&e.compute(), Signal::SearchInflight),
            Err(Unknown::InFlightGaugesMissing)
        );
        // Nobody answered: unknown.
        e.observe(t(2), BTreeMap::new());
        let (sum, max) = in_flight(&e.compute());
        assert!(sum.is_err() && max.is_err());
        // Before any round: nothing at all (the snapshot says "no round yet").
        assert!(
            SignalEngine::new(Duration::from_secs(30))
                .compute()
                .is_empty()
        );
    }

    #[test]
    fn a_node_with_no_sample_in_the_window_is_warming_up() {
        // Not reachable through observe (the newest round is always inside the window), but the
        // rule is explicit: unknown, never a sum that silently leaves the node out.
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("qn", qn_2_5("1", 0.0, 1.0)));
        e.targets.get_mut("qn").unwrap().in_flight.clear();
        assert_eq!(
            value(&e.compute(), Signal::SearchInflight),
            Err(Unknown::NodeWarmingUp {
                node: "1".into(),
                window: Duration::from_secs(30)
            })
        );
    }

    /// A proxy body: `milvus_proxy_received_nq` per (collection, query type), with `node`, and
    /// `milvus_proxy_executing_total_nq` when given; `tt_lag_ms` as every running proxy has.
    fn proxy(node: &str, received: &[(&str, &str, f64)], executing: Option<f64>) -> TargetSample {
        let mut body = format!(
            "# TYPE milvus_proxy_tt_lag_ms gauge\n\
             milvus_proxy_tt_lag_ms{{channel_name=\"default\",node_id=\"{node}\"}} 12\n"
        );
        if !received.is_empty() {
            body.push_str("# TYPE milvus_proxy_received_nq counter\n");
        }
        for (collection, query_type, v) in received {
            body.push_str(&format!(
                "milvus_proxy_received_nq{{collection_name=\"{collection}\",node_id=\"{node}\",query_type=\"{query_type}\"}} {v}\n"
            ));
        }
        if let Some(v) = executing {
            body.push_str(&format!(
                "# TYPE milvus_proxy_executing_total_nq gauge\n\
                 milvus_proxy_executing_total_nq{{node_id=\"{node}\"}} {v}\n"
            ));
        }
        parse_target(&body, &Limits::default()).unwrap()
    }

    /// 11 rounds a second apart (t = 0..=10): 30 + 20 search nq/s over two collections (and a
    /// fast-growing query series that must not count), nothing in flight for 5 rounds, then 22.
    fn steady_rate_and_a_backlog(e: &mut SignalEngine) {
        for i in 0..=10u64 {
            let x = i as f64;
            let executing = if i < 5 { 0.0 } else { 22.0 };
            let received = [
                ("docs", "search", 1000.0 + 30.0 * x),
                ("faq", "search", 20.0 * x),
                ("docs", "query", 500.0 * x),
            ];
            e.observe(t(i), one("proxy", proxy("3", &received, Some(executing))));
        }
    }

    #[test]
    fn demand_is_the_received_rate_plus_the_in_flight_average_over_the_drain() {
        let drain = Duration::from_secs(10);
        let mut e = SignalEngine::new(Duration::from_secs(30)).with_demand_drain(drain);
        assert_eq!(e.demand_drain(), drain);
        steady_rate_and_a_backlog(&mut e);
        let v = e.compute();
        // 50 nq/s received; in flight averaged over the 11 rounds: 6 x 22 / 11 = 12 nq,
        // drained within 10 s: 1.2 nq/s more.
        close(value(&v, Signal::SearchDemand), 50.0 + 12.0 / 10.0);
        assert!(
            !v.keys()
                .any(|k| k.signal == Signal::SearchDemand && k.collection.is_some()),
            "no per-collection values"
        );
    }

    #[test]
    fn the_drain_setting_scales_only_the_backlog_term() {
        for (drain, expected) in [(None, 50.0 + 12.0 / 120.0), (Some(1), 50.0 + 12.0)] {
            let mut e = SignalEngine::new(Duration::from_secs(30));
            if let Some(secs) = drain {
                e = e.with_demand_drain(Duration::from_secs(secs));
            }
            steady_rate_and_a_backlog(&mut e);
            close(value(&e.compute(), Signal::SearchDemand), expected);
        }
        assert_eq!(
            SignalEngine::new(Duration::from_secs(30)).demand_drain(),
            DEFAULT_DEMAND_DRAIN
        );
    }

    #[test]
    fn demand_survives_a_proxy_restart_and_old_rounds_leave_the_window() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        // 1000 nq, then 10 nq/s for 10 s.
        e.observe(
            t(0),
            one(
                "proxy",
                proxy("3", &[("docs", "search", 1000.0)], Some(0.0)),
            ),
        );
        e.observe(
            t(10),
            one(
                "proxy",
                proxy("3", &[("docs", "search", 1100.0)], Some(0.0)),
            ),
        );
        // The proxy restarted: a new node_id, its counter from 0 (5 nq since the restart).
        e.observe(
            t(11),
            one("proxy", proxy("9", &[("docs", "search", 5.0)], Some(0.0))),
        );
        e.observe(
            t(20),
            one("proxy", proxy("9", &[("docs", "search", 105.0)], Some(0.0))),
        );
        // Everything counted before the restart stays counted: (100 + 5 + 100) / 20 s.
        close(value(&e.compute(), Signal::SearchDemand), 205.0 / 20.0);
        // Later the pre-restart rounds leave the window: 300 nq from t=11 to t=41.
        e.observe(
            t(41),
            one("proxy", proxy("9", &[("docs", "search", 305.0)], Some(0.0))),
        );
        close(value(&e.compute(), Signal::SearchDemand), 300.0 / 30.0);
        // Bounded by the window: the rounds of t=11, 20 and 41.
        assert_eq!(e.targets["proxy"].demand.received.points.len(), 3);
        assert_eq!(e.targets["proxy"].demand.executing.len(), 3);
    }

    #[test]
    fn a_proxy_that_left_stops_contributing_and_a_new_one_waits_for_its_second_round() {
        let mut e =
            SignalEngine::new(Duration::from_secs(30)).with_demand_drain(Duration::from_secs(2));
        for i in 0..=4u64 {
            let x = i as f64;
            let mut round = one("p1", proxy("1", &[("docs", "search", 10.0 * x)], Some(4.0)));
            round.insert(
                "p2".into(),
                proxy("2", &[("docs", "search", 100.0 * x)], Some(8.0)),
            );
            e.observe(t(i), round);
        }
        close(
            value(&e.compute(), Signal::SearchDemand),
            10.0 + 2.0 + 100.0 + 4.0,
        );
        // p2 is gone (its rounds are still inside the window): only p1 counts.
        e.observe(
            t(5),
            one("p1", proxy("1", &[("docs", "search", 50.0)], Some(4.0))),
        );
        close(value(&e.compute(), Signal::SearchDemand), 12.0);
        // p3 appears: one round is no rate yet, it does not count until its second.
        let mut round = one("p1", proxy("1", &[("docs", "search", 60.0)], Some(4.0)));
        round.insert(
            "p3".into(),
            proxy("3", &[("docs", "search", 0.0)], Some(0.0)),
        );
        e.observe(t(6), round);
        close(value(&e.compute(), Signal::SearchDemand), 12.0);
        let mut round = one("p1", proxy("1", &[("docs", "search", 70.0)], Some(4.0)));
        round.insert(
            "p3".into(),
            proxy("3", &[("docs", "search", 30.0)], Some(6.0)),
        );
        e.observe(t(7), round);
        close(
            value(&e.compute(), Signal::SearchDemand),
            12.0 + 30.0 + 3.0 / 2.0,
        );
    }

    #[test]
    fn a_proxy_missing_one_of_the_two_metrics_makes_demand_unknown_and_says_which() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        for i in 0..3 {
            let mut round = one("good", proxy("1", &[("docs", "search", 0.0)], Some(0.0)));
            round.insert("odd".into(), proxy("2", &[("docs", "search", 5.0)], None));
            e.observe(t(i), round);
        }
        assert_eq!(
            value(&e.compute(), Signal::SearchDemand),
            Err(Unknown::DemandHalfExported {
                target: "odd".into(),
                has: "milvus_proxy_received_nq",
                missing: "milvus_proxy_executing_total_nq"
            })
        );
        let mut e = SignalEngine::new(Duration::from_secs(30));
        for i in 0..3 {
            e.observe(t(i), one("odd", proxy("2", &[], Some(3.0))));
        }
        assert_eq!(
            value(&e.compute(), Signal::SearchDemand),
            Err(Unknown::DemandHalfExported {
                target: "odd".into(),
                has: "milvus_proxy_executing_total_nq",
                missing: "milvus_proxy_received_nq"
            })
        );
    }

    #[test]
    fn demand_is_unknown_without_a_proxy_or_while_warming_up_never_zero() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        // Only a query node: no proxy scraped.
        e.observe(t(0), one("qn", qn_2_5("1", 3.0, 1.0)));
        assert_eq!(
            value(&e.compute(), Signal::SearchDemand),
            Err(Unknown::ComponentMissing(Component::Proxy))
        );
        // A proxy's first round: a rate needs two.
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(
            t(0),
            one("p", proxy("1", &[("docs", "search", 10.0)], Some(2.0))),
        );
        assert_eq!(
            value(&e.compute(), Signal::SearchDemand),
            Err(Unknown::WarmingUp)
        );
        // Nobody answered this round.
        e.observe(t(1), BTreeMap::new());
        assert_eq!(
            value(&e.compute(), Signal::SearchDemand),
            Err(Unknown::NoTargetAnswered)
        );
    }

    #[test]
    fn an_idle_proxy_is_a_true_zero_and_its_first_search_counts_from_zero() {
        // Milvus 2.3.5 creates both metrics on the first search (the idle capture has neither).
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("p", proxy("1", &[], None)));
        e.observe(t(1), one("p", proxy("1", &[], None)));
        assert_eq!(value(&e.compute(), Signal::SearchDemand), Ok(0.0));
        // First search: 8 nq received (the counter starts from 0), 8 in flight now.
        e.observe(
            t(2),
            one("p", proxy("1", &[("docs", "search", 8.0)], Some(8.0))),
        );
        close(
            value(&e.compute(), Signal::SearchDemand),
            8.0 / 2.0 + (8.0 / 3.0) / 120.0,
        );
    }

    #[test]
    fn increase_handles_resets() {
        assert_eq!(increase([1.0, 3.0, 6.0]), 5.0);
        assert_eq!(increase([10.0, 12.0, 2.0, 5.0]), 2.0 + 2.0 + 3.0);
        assert_eq!(increase([5.0]), 0.0);
        assert_eq!(increase([]), 0.0);
    }

    #[test]
    fn rate_and_quantiles_from_bucket_deltas() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", target(100.0, 100.0, 0.0)));
        e.observe(t(10), one("a", target(300.0, 100.0, 4.0)));
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Ok(20.0));
        assert_eq!(value(&v, Signal::SearchQueueDepth), Ok(4.0));
        // All 200 new searches in (10,100] ms: p50 = 10 + 90*0.5 = 55 ms.
        let p50 = value(&v, Signal::SearchLatencyP50Seconds).unwrap();
        assert!((p50 - 0.055).abs() < 1e-12, "{p50}");
        let p99 = value(&v, Signal::SearchLatencyP99Seconds).unwrap();
        assert!((p99 - 0.0991).abs() < 1e-12, "{p99}");
    }

    #[test]
    fn first_round_is_warming_up_not_zero() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", target(100.0, 100.0, 0.0)));
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Err(Unknown::WarmingUp));
        assert_eq!(value(&v, Signal::SearchQueueDepth), Ok(0.0));
    }

    #[test]
    fn counter_reset_gives_no_negative_rate_or_latency_spike() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", target(1000.0, 1000.0, 0.0)));
        // The pod restarted: counters start again from a few fast searches.
        e.observe(t(10), one("a", target(50.0, 10.0, 0.0)));
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Ok(5.0));
        let p99 = value(&v, Signal::SearchLatencyP99Seconds).unwrap();
        assert!(
            p99 <= 0.010,
            "only the post-restart fast searches count: {p99}"
        );
    }

    #[test]
    fn old_rounds_leave_the_window() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", target(0.0, 100.0, 0.0)));
        e.observe(t(20), one("a", target(1000.0, 100.0, 0.0)));
        e.observe(t(40), one("a", target(1000.0, 100.0, 0.0)));
        e.observe(t(50), one("a", target(1000.0, 100.0, 0.0)));
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Ok(0.0));
        // No searches in the window and nothing queued: latency is a true zero.
        assert_eq!(value(&v, Signal::SearchLatencyP99Seconds), Ok(0.0));
    }

    #[test]
    fn an_idle_proxy_without_counter_series_has_a_zero_rate_after_two_rounds() {
        // Milvus creates its search counters on the first search: an idle proxy exports none.
        let idle = || TargetSample {
            has_proxy: true,
            has_querynode: true,
            has_queue_gauge: true,
            ..Default::default()
        };
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", idle()));
        assert!(
            value(&e.compute(), Signal::SearchRate).is_err(),
            "one round: warming up"
        );
        e.observe(t(1), one("a", idle()));
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Ok(0.0));
        assert_eq!(value(&v, Signal::SearchLatencyP99Seconds), Ok(0.0));
    }

    #[test]
    fn stuck_searches_make_latency_unknown() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", target(10.0, 100.0, 8.0)));
        e.observe(t(5), one("a", target(10.0, 100.0, 8.0)));
        let v = e.compute();
        assert_eq!(
            value(&v, Signal::SearchLatencyP99Seconds),
            Err(Unknown::Stuck {
                in_flight: 8.0,
                window: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn rates_sum_over_targets_and_a_missing_component_is_an_error() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        let mut two = one("a", target(0.0, 100.0, 1.0));
        two.insert("b".into(), target(0.0, 100.0, 2.0));
        e.observe(t(0), two.clone());
        let mut later = one("a", target(10.0, 100.0, 1.0));
        later.insert("b".into(), target(30.0, 100.0, 2.0));
        e.observe(t(10), later);
        let v = e.compute();
        assert_eq!(value(&v, Signal::SearchRate), Ok(4.0));
        assert_eq!(value(&v, Signal::SearchQueueDepth), Ok(3.0));

        let mut e = SignalEngine::new(Duration::from_secs(30));
        let only_proxy = TargetSample {
            has_proxy: true,
            ..Default::default()
        };
        e.observe(t(0), one("p", only_proxy));
        let v = e.compute();
        assert_eq!(
            value(&v, Signal::SearchQueueDepth),
            Err(Unknown::ComponentMissing(Component::QueryNode))
        );
        assert_eq!(
            value(&v, Signal::IndexPendingBuilds),
            Err(Unknown::ComponentMissing(Component::DataCoord))
        );
    }

    #[test]
    fn no_target_answering_makes_everything_unknown() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), BTreeMap::new());
        let v = e.compute();
        for signal in Signal::ALL {
            assert!(value(&v, signal).is_err(), "{signal}");
        }
    }

    #[test]
    fn per_collection_values() {
        let with_collection = |searches: f64| {
            let mut s = target(searches, 100.0, 0.0);
            s.counters.insert(
                (Counter::SearchRequests, Some("docs".into())),
                searches / 2.0,
            );
            s.gauges
                .insert((Gauge::LoadedEntities, Some("42".into())), 7.0);
            s.gauges.insert((Gauge::LoadedEntities, None), 7.0);
            s
        };
        let mut e = SignalEngine::new(Duration::from_secs(30));
        e.observe(t(0), one("a", with_collection(0.0)));
        e.observe(t(10), one("a", with_collection(100.0)));
        let v = e.compute();
        assert_eq!(
            v[&SignalKey::collection(Signal::SearchRate, "docs")],
            Ok(5.0)
        );
        assert_eq!(
            v[&SignalKey::collection(Signal::LoadedEntities, "42")],
            Ok(7.0)
        );
        assert_eq!(value(&v, Signal::LoadedEntities), Ok(7.0));
    }

    /// A 2.3.5 query coordinator body with `moving` segment_move tasks and, always, grow and
    /// leader-update tasks, which move nothing between nodes.
    fn querycoord(moving: f64) -> TargetSample {
        let body = format!(
            "milvus_querycoord_querynode_num 2\n\
             milvus_querycoord_task_num{{querycoord_task_type=\"segment_move\"}} {moving}\n\
             milvus_querycoord_task_num{{querycoord_task_type=\"segment_grow\"}} 2\n\
             milvus_querycoord_task_num{{querycoord_task_type=\"leader_update\"}} 3\n"
        );
        parse_target(&body, &Limits::default()).unwrap()
    }

    #[test]
    fn balancing_holds_for_a_window_after_the_last_task_and_is_unknown_without_querycoord() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        // No query coordinator scraped: unknown, never "settled".
        e.observe(t(0), one("qn", qn_2_5("1", 0.0, 0.0)));
        assert_eq!(
            value(&e.compute(), Signal::QueryBalancing),
            Err(Unknown::ComponentMissing(Component::QueryCoord))
        );
        // Idle 2.3.5 querycoord exports no task gauge yet: settled; grows and leader updates
        // move nothing between nodes.
        let idle = parse_target("milvus_querycoord_querynode_num 1\n", &Limits::default()).unwrap();
        e.observe(t(1), one("qc", idle));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(0.0));
        e.observe(t(2), one("qc", querycoord(0.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(0.0));
        // Segments moving: 1, and it stays 1 for a whole window after the last task.
        e.observe(t(10), one("qc", querycoord(4.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(1.0));
        e.observe(t(20), one("qc", querycoord(0.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(1.0));
        e.observe(t(40), one("qc", querycoord(0.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(1.0));
        e.observe(t(41), one("qc", querycoord(0.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(0.0));
    }

    #[test]
    fn balancing_counts_stopping_nodes_on_any_target() {
        let mut e = SignalEngine::new(Duration::from_secs(30));
        let stopping =
            parse_target("milvus_querynode_stopping_balance_node_num 1\nmilvus_querynode_read_task_ready_len{node_id=\"2\"} 0\n", &Limits::default())
                .unwrap();
        assert_eq!(stopping.balance_tasks, 1.0);
        let round = BTreeMap::from([
            ("qc".to_string(), querycoord(0.0)),
            ("qn".to_string(), stopping),
        ]);
        e.observe(t(0), round);
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(1.0));
        // The coordinator alone afterwards: the stopping node's round is still inside the window
        // but the node is gone from the newest round, so it no longer counts.
        e.observe(t(5), one("qc", querycoord(0.0)));
        assert_eq!(value(&e.compute(), Signal::QueryBalancing), Ok(0.0));
    }

    /// The most points any history of `e` holds for one series.
    fn longest_history(e: &SignalEngine) -> usize {
        e.targets
            .values()
            .flat_map(|h| {
                h.counters
                    .values()
                    .map(|c| c.points.len())
                    .chain(h.in_flight.values().map(VecDeque::len))
                    .chain([
                        h.answered.len(),
                        h.balance.len(),
                        h.demand.received.points.len(),
                        h.demand.executing.len(),
                    ])
            })
            .max()
            .unwrap_or(0)
    }

    /// A target of every role at once, so every history of the engine gets a point each round.
    fn every_role(searches: f64) -> TargetSample {
        let mut s = target(searches, 100.0, 1.0);
        s.has_querycoord = true;
        s.has_proxy = true;
        s.received_search_nq = Some(searches);
        s.read_tasks_in_flight.insert("1".into(), 1.0);
        s
    }

    #[test]
    fn history_is_bounded_by_the_window_and_an_absent_target_is_forgotten() {
        // 1 s rounds, 30 s window: at most 31 points (t-30 ..= t) per series.
        let window = Duration::from_secs(30);
        let bound = 31;
        let mut e = SignalEngine::new(window);
        for i in 0..200u64 {
            let mut round = one("stays", every_role(i as f64));
            if i < 100 {
                round.insert("leaves".into(), every_role(i as f64));
            }
            e.observe(t(i), round);
            assert!(
                longest_history(&e) <= bound,
                "round {i}: {}",
                longest_history(&e)
            );
        }
        assert_eq!(longest_history(&e), bound);
        // "leaves" answered last at t=99, more than a window ago: forgotten.
        assert_eq!(e.targets.keys().collect::<Vec<_>>(), vec!["stays"]);
        assert_eq!(value(&e.compute(), Signal::SearchRate), Ok(1.0));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_history_bounded_and_still_forgets() {
        let window = Duration::from_secs(30);
        let mut e = SignalEngine::new(window);
        for i in 1000..1040u64 {
            let mut round = one("stays", every_role(i as f64));
            round.insert("leaves".into(), every_role(i as f64));
            e.observe(t(i), round);
        }
        // The wall clock steps back by an hour and goes on from there; "leaves" is gone.
        for (n, i) in (0..200u64).enumerate() {
            e.observe(t(i), one("stays", every_role(2000.0 + i as f64)));
            assert!(
                longest_history(&e) <= 31,
                "{n} rounds after the step: {}",
                longest_history(&e)
            );
        }
        assert_eq!(e.targets.keys().collect::<Vec<_>>(), vec!["stays"]);
        // Rates come from the rounds after the step only.
        assert_eq!(value(&e.compute(), Signal::SearchRate), Ok(1.0));
    }
}
