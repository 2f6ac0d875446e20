//! The two sources agree on `search_inflight`, `search_inflight_node_max` and `search_demand`: the
//! same per-second Milvus series go through the scrape engine (as `/metrics` bodies) and, as
//! promtool input series, through the exact PromQL the Prometheus source sends. At every checked
//! time both give the same value (to 1e-6), or both give none (engine error, empty PromQL result).
//!
//! Needs `promtool` (Debian's `prometheus` package, installed by `make setup`; or `PROMTOOL=/path`).
//! Without it the tests fail saying what to install: a parity check that silently does not run
//! checks nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use milvus_signals::engine::{DEFAULT_DEMAND_DRAIN, SignalEngine};
use milvus_signals::exposition::Limits;
use milvus_signals::milvus::parse_target;
use milvus_signals::source::prometheus::queries;
use milvus_signals::unknown::Component;
use milvus_signals::{Signal, SignalKey, Unknown};

const WINDOW: Duration = Duration::from_secs(30);
const SELECTOR: &str = "namespace=\"milvus\"";

/// One series of one target: its value at each second, `None` while not exported.
struct Series {
    /// The scrape target (Prometheus's `instance`).
    target: &'static str,
    metric: &'static str,
    /// The labels Milvus puts on the sample, e.g. `node_id="1"`.
    labels: String,
    namespace: &'static str,
    at: fn(u64) -> Option<f64>,
}

/// The scrape engine fed one round a second over `0..=seconds`; at each second of `check_at`, the
/// value of each signal (`None` for an error, the reason kept for the caller to inspect).
fn engine_values(
    series: &[Series],
    seconds: u64,
    check_at: &[u64],
    signals: &[Signal],
    engine: SignalEngine,
) -> BTreeMap<u64, Vec<Result<f64, Unknown>>> {
    let mut engine = engine;
    let mut out = BTreeMap::new();
    for t in 0..=seconds {
        let mut bodies: BTreeMap<&str, String> = BTreeMap::new();
        for s in series.iter().filter(|s| s.namespace == "milvus") {
            if let Some(v) = (s.at)(t) {
                let body = bodies.entry(s.target).or_default();
                writeln!(body, "{}{{{}}} {v}", s.metric, s.labels).unwrap();
            }
        }
        let round = bodies
            .into_iter()
            .map(|(target, body)| {
                (
                    target.to_string(),
                    parse_target(&body, &Limits::default()).unwrap(),
                )
            })
            .collect();
        engine.observe(SystemTime::UNIX_EPOCH + Duration::from_secs(t), round);
        if check_at.contains(&t) {
            let v = engine.compute();
            let values = signals
                .iter()
                .map(|s| v[&SignalKey::instance(*s)].clone())
                .collect();
            out.insert(t, values);
        }
    }
    out
}

/// Prometheus's `round(v, 0.000001)`, done the way Prometheus does it, so the expected and the
/// computed values are compared exactly (promtool compares floats exactly).
fn prom_round(v: f64) -> f64 {
    let inverse = 1.0 / 0.000001;
    (v * inverse + 0.5).floor() / inverse
}

fn input_series(series: &[Series], seconds: u64) -> String {
    let mut yaml = String::new();
    for s in series {
        let mut values = Vec::new();
        let mut present = false;
        for t in 0..=seconds {
            values.push(match (s.at)(t) {
                Some(v) => {
                    present = true;
                    format!("{v}")
                }
                // A series that disappears gets a staleness marker, as Prometheus writes when a
                // target stops answering, leaves service discovery or stops exporting it.
                None if present => {
                    present = false;
                    "stale".to_string()
                }
                None => "_".to_string(),
            });
        }
        let labels = if s.labels.is_empty() {
            String::new()
        } else {
            format!("{},", s.labels)
        };
        writeln!(
            yaml,
            "  - series: '{}{{{labels}namespace=\"{}\",instance=\"{}\"}}'\n    values: '{}'",
            s.metric,
            s.namespace,
            s.target,
            values.join(" ")
        )
        .unwrap();
    }
    yaml
}

/// promtool expression tests: at each time, each expression gives the engine's value (rounded
/// to 1e-6 on both sides) or, where the engine has none, no sample.
fn expr_tests(exprs: &[String], expected: &BTreeMap<u64, Vec<Result<f64, Unknown>>>) -> String {
    let mut yaml = String::new();
    for (t, values) in expected {
        for (expr, value) in exprs.iter().zip(values) {
            let samples = match value {
                Ok(v) => format!("\n    - labels: '{{}}'\n      value: {:?}", prom_round(*v)),
                Err(_) => " []".to_string(),
            };
            writeln!(
                yaml,
                "  - expr: 'round({}, 0.000001)'\n    eval_time: {t}s\n    exp_samples:{samples}",
                expr.replace('\'', "''")
            )
            .unwrap();
        }
    }
    yaml
}

/// One promtool test group: input series and expression tests.
fn group(input: &str, tests: &str) -> String {
    format!("- interval: 1s\n  input_series:\n{input}  promql_expr_test:\n{tests}")
}

/// The promtool to use; a missing one fails the test with what to install.
fn promtool() -> String {
    let path = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found (tried {path:?}): this test checks the Prometheus source's PromQL \
         against the scrape engine and needs it. Run `make setup` (installs Debian's prometheus \
         package, which brings promtool), or `apt-get install prometheus`, or set \
         PROMTOOL=/path/to/promtool"
    );
    path
}

/// Runs `promtool test rules` on the groups; fails with promtool's report and the file.
fn promtool_agrees(name: &str, groups: &[String]) {
    let promtool = promtool();
    let test_file = format!(
        "rule_files: []\nevaluation_interval: 1s\ntests:\n{}",
        groups.concat()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.test.yaml"));
    std::fs::write(&path, &test_file).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "PromQL disagrees with the scrape engine:\n{report}\n--- test file ---\n{test_file}"
    );
    assert!(report.contains("SUCCESS"), "{report}");
}

/// The instance-wide PromQL expression of each signal, as the Prometheus source sends it.
fn exprs(signals: &[Signal], drain: Duration) -> Vec<String> {
    signals
        .iter()
        .map(|signal| {
            queries(SELECTOR, WINDOW, drain)
                .into_iter()
                .find(|q| q.signal == *signal && q.collection_label.is_none())
                .expect("an instance query")
                .expr
        })
        .collect()
}

fn in_flight_scenario() -> Vec<Series> {
    let s = |target, metric, node: &str, at| Series {
        target,
        metric,
        labels: format!("node_id=\"{node}\""),
        namespace: "milvus",
        at,
    };
    vec![
        // Node 1, Milvus 2.3 names: a backlog of 2 ready tasks for 5 s, one search executing in
        // every fourth second (0/1 flicker).
        s(
            "qn-a",
            "milvus_querynode_read_task_unsolved_len",
            "1",
            |_| Some(0.0),
        ),
        s("qn-a", "milvus_querynode_read_task_ready_len", "1", |t| {
            Some(if (10..15).contains(&t) { 2.0 } else { 0.0 })
        }),
        s("qn-a", "milvus_querynode_read_task_concurrency", "1", |t| {
            Some(if t % 4 == 0 { 1.0 } else { 0.0 })
        }),
        // Node 2, Milvus 2.5 names: steady 2 waiting + 1 executing.
        s("qn-b", "milvus_querynode_read_task_ready_len", "2", |_| {
            Some(2.0)
        }),
        s(
            "qn-b",
            "milvus_querynode_read_task_concurrency",
            "2",
            |_| Some(1.0),
        ),
        // Node 3: busy, then stopped at 31 s (its samples stay inside the window for 30 s more).
        s(
            "qn-c",
            "milvus_querynode_read_task_unsolved_len",
            "3",
            |t| (t <= 30).then_some(0.0),
        ),
        s("qn-c", "milvus_querynode_read_task_ready_len", "3", |t| {
            (t <= 30).then_some(0.0)
        }),
        s("qn-c", "milvus_querynode_read_task_concurrency", "3", |t| {
            (t <= 30).then_some(5.0)
        }),
        // Node 4 joins at 46 s with a backlog.
        s("qn-d", "milvus_querynode_read_task_ready_len", "4", |t| {
            (t >= 46).then_some(7.0)
        }),
        // Node 5 exports `read_task_concurrency` only from its first search on (lazy creation).
        s("qn-e", "milvus_querynode_read_task_ready_len", "5", |_| {
            Some(0.0)
        }),
        s("qn-e", "milvus_querynode_read_task_concurrency", "5", |t| {
            (t >= 50).then_some(1.0)
        }),
        // Another Milvus instance in the same Prometheus: the selector keeps it out.
        Series {
            target: "other",
            metric: "milvus_querynode_read_task_ready_len",
            labels: "node_id=\"9\"".into(),
            namespace: "elsewhere",
            at: |_| Some(1000.0),
        },
    ]
}

#[test]
fn scrape_engine_and_promql_agree_on_in_flight() {
    const SECONDS: u64 = 60;
    const CHECK_AT: &[u64] = &[0, 5, 14, 20, 30, 31, 40, 46, 50, 55, 60];
    let signals = [Signal::SearchInflight, Signal::SearchInflightNodeMax];
    let series = in_flight_scenario();
    let expected = engine_values(
        &series,
        SECONDS,
        CHECK_AT,
        &signals,
        SignalEngine::new(WINDOW),
    );
    // The scenario exercises what it claims to (the engine side of the story).
    let at = |t: u64, i: usize| expected[&t][i].clone().ok();
    // 40 s: node 1 averages its 31 one-second samples of [10 s, 40 s] (8 flicker ones, 5 s
    // of 2 ready), node 2 is 3, node 3 stopped at 31 s and no longer counts, node 5 is 0.
    let n1 = (8.0 + 5.0 * 2.0) / 31.0;
    assert!(
        (at(40, 0).unwrap() - (n1 + 3.0)).abs() < 1e-9,
        "{:?}",
        at(40, 0)
    );
    assert_eq!(at(40, 1), Some(3.0));
    assert_eq!(at(30, 1), Some(5.0), "node 3 is the busiest while it runs");
    assert_eq!(at(46, 1), Some(7.0), "node 4 counts from its first sample");

    // No query node at all: both sides have no value.
    let proxy_only = vec![Series {
        target: "proxy",
        metric: "milvus_proxy_req_count",
        labels: "function_name=\"Search\",status=\"total\"".into(),
        namespace: "milvus",
        at: |t| Some(t as f64),
    }];
    let none = engine_values(&proxy_only, 30, &[30], &signals, SignalEngine::new(WINDOW));
    assert!(none[&30].iter().all(Result::is_err), "{none:?}");

    let exprs = exprs(&signals, DEFAULT_DEMAND_DRAIN);
    promtool_agrees(
        "in-flight",
        &[
            group(
                &input_series(&series, SECONDS),
                &expr_tests(&exprs, &expected),
            ),
            group(&input_series(&proxy_only, 30), &expr_tests(&exprs, &none)),
        ],
    );
}

/// Proxy `node`'s `tt_lag_ms` (every running proxy exports it), present while `at` says so.
fn proxy_series(target: &'static str, node: &str, at: fn(u64) -> Option<f64>) -> Series {
    Series {
        target,
        metric: "milvus_proxy_tt_lag_ms",
        labels: format!("channel_name=\"default\",node_id=\"{node}\""),
        namespace: "milvus",
        at,
    }
}

/// `milvus_proxy_received_nq` of proxy `node` for one collection and query type.
fn received(
    target: &'static str,
    node: &str,
    collection: &str,
    query_type: &str,
    at: fn(u64) -> Option<f64>,
) -> Series {
    Series {
        target,
        metric: "milvus_proxy_received_nq",
        labels: format!(
            "collection_name=\"{collection}\",node_id=\"{node}\",query_type=\"{query_type}\""
        ),
        namespace: "milvus",
        at,
    }
}

/// `milvus_proxy_executing_total_nq` of proxy `node`, with any extra labels.
fn executing(
    target: &'static str,
    labels: &str,
    namespace: &'static str,
    at: fn(u64) -> Option<f64>,
) -> Series {
    Series {
        target,
        metric: "milvus_proxy_executing_total_nq",
        labels: labels.into(),
        namespace,
        at,
    }
}

/// Proxy a's backlog: 1 nq in flight at steady load; from 40 s it builds by 2 nq/s to 40 nq at
/// 60 s, then drains by 4 nq/s to nothing at 70 s.
fn backlog_a(t: u64) -> f64 {
    let t = t as f64;
    1.0 + if (40.0..=60.0).contains(&t) {
        2.0 * (t - 40.0)
    } else if (60.0..70.0).contains(&t) {
        40.0 - 4.0 * (t - 60.0)
    } else {
        0.0
    }
}

fn demand_scenario() -> Vec<Series> {
    vec![
        // Proxy a: a steady 40 search nq/s into `docs` (from 0: the counter's first value), and
        // queries that must not count; the backlog builds and drains (backlog_a).
        proxy_series("proxy-a", "1", |_| Some(5.0)),
        received("proxy-a", "1", "docs", "search", |t| Some(40.0 * t as f64)),
        received("proxy-a", "1", "docs", "query", |t| Some(500.0 * t as f64)),
        executing("proxy-a", "node_id=\"1\"", "milvus", |t| Some(backlog_a(t))),
        // Proxy b: 10 nq/s into `faq`, 2 nq in flight; restarts at 75 s under a new node_id,
        // its counter from 0 (10 nq received by 75 s).
        proxy_series("proxy-b", "2", |t| (t < 75).then_some(5.0)),
        proxy_series("proxy-b", "7", |t| (t >= 75).then_some(5.0)),
        received("proxy-b", "2", "faq", "search", |t| {
            (t < 75).then_some(300.0 + 10.0 * t as f64)
        }),
        received("proxy-b", "7", "faq", "search", |t| {
            (t >= 75).then(|| 10.0 * (t - 74) as f64)
        }),
        executing("proxy-b", "node_id=\"2\"", "milvus", |t| {
            (t < 75).then_some(2.0)
        }),
        executing("proxy-b", "node_id=\"7\"", "milvus", |t| {
            (t >= 75).then_some(2.0)
        }),
        // Proxy c (newer Milvus: executing_total_nq per query_type, all summed): 5 nq/s and
        // 1.5 nq in flight, stopped at 91 s (its samples stay inside the window 30 s more).
        proxy_series("proxy-c", "3", |t| (t <= 90).then_some(5.0)),
        received("proxy-c", "3", "docs", "search", |t| {
            (t <= 90).then_some(5.0 * t as f64)
        }),
        executing(
            "proxy-c",
            "node_id=\"3\",query_type=\"search\"",
            "milvus",
            |t| (t <= 90).then_some(1.0),
        ),
        executing(
            "proxy-c",
            "node_id=\"3\",query_type=\"query\"",
            "milvus",
            |t| (t <= 90).then_some(0.5),
        ),
        // Another Milvus instance in the same Prometheus: the selector keeps it out.
        Series {
            target: "other",
            metric: "milvus_proxy_received_nq",
            labels: "collection_name=\"x\",node_id=\"9\",query_type=\"search\"".into(),
            namespace: "elsewhere",
            at: |t| Some(1000.0 * t as f64),
        },
        executing("other", "node_id=\"9\"", "elsewhere", |_| Some(100.0)),
    ]
}

#[test]
fn scrape_engine_and_promql_agree_on_search_demand() {
    const SECONDS: u64 = 120;
    // From 30 s on every proxy has a whole window of history. Younger windows are left out on
    // purpose: PromQL's rate() extrapolates a series younger than the window towards the
    // window's start, the engine divides by the time it has seen (see docs/configuration.md).
    const CHECK_AT: &[u64] = &[
        0, 30, 40, 45, 55, 60, 65, 70, 74, 75, 76, 80, 90, 91, 95, 105, 120,
    ];
    let drain = Duration::from_secs(10);
    let signals = [Signal::SearchDemand];
    let engine = || SignalEngine::new(WINDOW).with_demand_drain(drain);
    let series = demand_scenario();
    let expected = engine_values(&series, SECONDS, CHECK_AT, &signals, engine());

    // The scenario exercises what it claims to (the engine side of the story).
    let at = |t: u64| expected[&t][0].clone();
    let close = |t: u64, want: f64| {
        let got = at(t).unwrap();
        assert!((got - want).abs() < 1e-9, "at {t} s: {got} != {want}");
    };
    let mean_a = |t: u64| (t - 30..=t).map(backlog_a).sum::<f64>() / 31.0;
    assert_eq!(at(0), Err(Unknown::WarmingUp));
    // Steady: 40 + 10 + 5 nq/s received, plus (1 + 2 + 1.5) nq in flight / 10 s.
    close(30, 55.0 + 4.5 / 10.0);
    // The backlog built up and drained: its window average over the drain time on top.
    close(65, 55.0 + (mean_a(65) + 3.5) / 10.0);
    assert!(
        mean_a(65) > 15.0,
        "the backlog term matters: {}",
        mean_a(65)
    );
    // Proxy b restarted at 75 s: still 10 nq/s, no dip and no spike.
    close(80, 55.0 + (mean_a(80) + 3.5) / 10.0);
    // Proxy c stopped at 91 s: it no longer counts.
    close(95, 50.0 + (mean_a(95) + 2.0) / 10.0);
    close(120, 50.0 + (1.0 + 2.0) / 10.0);

    // No proxy at all (a query node only): no value on either side.
    let no_proxy = vec![Series {
        target: "qn",
        metric: "milvus_querynode_read_task_ready_len",
        labels: "node_id=\"1\"".into(),
        namespace: "milvus",
        at: |_| Some(3.0),
    }];
    let none = engine_values(&no_proxy, 30, &[30], &signals, engine());
    assert_eq!(
        none[&30][0],
        Err(Unknown::ComponentMissing(Component::Proxy))
    );
    // A proxy that exports received_nq but not executing_total_nq: unknown, not a rate alone.
    let half = vec![
        proxy_series("proxy", "1", |_| Some(5.0)),
        received("proxy", "1", "docs", "search", |t| Some(7.0 * t as f64)),
    ];
    let unknown = engine_values(&half, 30, &[30], &signals, engine());
    assert_eq!(
        unknown[&30][0],
        Err(Unknown::DemandHalfExported {
            target: "proxy".into(),
            has: "milvus_proxy_received_nq",
            missing: "milvus_proxy_executing_total_nq"
        })
    );
    // An idle proxy that has served nothing yet (Milvus creates both metrics on the first
    // search): a true 0 on both sides.
    let idle = vec![proxy_series("proxy", "1", |_| Some(5.0))];
    let zero = engine_values(&idle, 30, &[30], &signals, engine());
    assert_eq!(zero[&30][0], Ok(0.0));

    let exprs = exprs(&signals, drain);
    promtool_agrees(
        "demand",
        &[
            group(
                &input_series(&series, SECONDS),
                &expr_tests(&exprs, &expected),
            ),
            group(&input_series(&no_proxy, 30), &expr_tests(&exprs, &none)),
            group(&input_series(&half, 30), &expr_tests(&exprs, &unknown)),
            group(&input_series(&idle, 30), &expr_tests(&exprs, &zero)),
        ],
    );
}

fn balancing_scenario() -> Vec<Series> {
    let task = |kind: &str, at| Series {
        target: "coord",
        metric: "milvus_querycoord_task_num",
        labels: format!("querycoord_task_type=\"{kind}\""),
        namespace: "milvus",
        at,
    };
    vec![
        // The query coordinator, scraped from start; its task gauges appear with the first task.
        Series {
            target: "coord",
            metric: "milvus_querycoord_querynode_num",
            labels: String::new(),
            namespace: "milvus",
            at: |_| Some(2.0),
        },
        // A node joined: segments move for 4 s from 20 s.
        task("segment_move", |t| {
            (t >= 10).then_some(if (20..24).contains(&t) { 3.0 } else { 0.0 })
        }),
        // Leader-view updates move no data: never a hold.
        task("leader_update", |t| (t >= 10).then_some(5.0)),
        // Loading newly sealed segments moves nothing between nodes: never a hold.
        task("segment_grow", |t| (t >= 10).then_some(2.0)),
        // One channel moves for a single second at 60 s.
        task("channel_move", |t| {
            (t >= 10).then_some(if t == 60 { 1.0 } else { 0.0 })
        }),
        // A 2.4+ query node in stopping balance from 80 s to 85 s, gone from 86 s.
        Series {
            target: "qn-stopping",
            metric: "milvus_querynode_stopping_balance_node_num",
            labels: String::new(),
            namespace: "milvus",
            at: |t| {
                (70..=85)
                    .contains(&t)
                    .then_some(if t >= 80 { 1.0 } else { 0.0 })
            },
        },
        // Another Milvus in the same Prometheus, always balancing: the selector keeps it out.
        Series {
            target: "other",
            metric: "milvus_querycoord_task_num",
            labels: "querycoord_task_type=\"segment_move\"".into(),
            namespace: "elsewhere",
            at: |_| Some(9.0),
        },
    ]
}

#[test]
fn scrape_engine_and_promql_agree_on_query_balancing() {
    const SECONDS: u64 = 130;
    const CHECK_AT: &[u64] = &[
        0, 5, 15, 19, 20, 30, 53, 54, 59, 60, 75, 80, 85, 86, 90, 91, 100, 115, 116, 130,
    ];
    let signals = [Signal::QueryBalancing];
    let series = balancing_scenario();
    let expected = engine_values(
        &series,
        SECONDS,
        CHECK_AT,
        &signals,
        SignalEngine::new(WINDOW),
    );
    // The scenario exercises what it claims to (the engine side of the story): 1 from the first
    // moving round until a whole window after the last one, 0 otherwise.
    let at = |t: u64| expected[&t][0].clone().unwrap();
    for (t, want) in [
        (0, 0.0),
        (19, 0.0),
        (20, 1.0),
        (53, 1.0),
        (54, 0.0),
        (60, 1.0),
        (80, 1.0),
        (90, 1.0),
        (91, 0.0),
        (100, 0.0),
        (115, 0.0),
    ] {
        assert_eq!(at(t), want, "at {t} s");
    }
    // 85 s: the stopping node's last round; 86 s: it is gone, and only the 60 s blip holds.
    assert_eq!((at(85), at(86)), (1.0, 1.0));

    // No query coordinator scraped: no value on either side.
    let no_coord = vec![Series {
        target: "qn",
        metric: "milvus_querynode_read_task_ready_len",
        labels: "node_id=\"1\"".into(),
        namespace: "milvus",
        at: |_| Some(3.0),
    }];
    let none = engine_values(&no_coord, 30, &[30], &signals, SignalEngine::new(WINDOW));
    assert_eq!(
        none[&30][0],
        Err(Unknown::ComponentMissing(Component::QueryCoord))
    );

    let exprs = exprs(&signals, DEFAULT_DEMAND_DRAIN);
    promtool_agrees(
        "balancing",
        &[
            group(
                &input_series(&series, SECONDS),
                &expr_tests(&exprs, &expected),
            ),
            group(&input_series(&no_coord, 30), &expr_tests(&exprs, &none)),
        ],
    );
}
