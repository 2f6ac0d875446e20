//! The two sources agree on `search_inflight` and `search_inflight_node_max`: the same per-second
//! query-node gauges go through the scrape engine (as `/metrics` bodies) and, as promtool input
//! series, through the exact PromQL the Prometheus source sends. At every checked time both give
//! the same value (to 1e-6), or both give none (engine error, empty PromQL result).
//!
//! Needs `promtool` (Debian `prometheus`, installed by `make setup`; or `PROMTOOL=/path`). Without
//! it the test prints why and passes, so `make unit` stays free of external tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use milvus_signals::engine::SignalEngine;
use milvus_signals::exposition::Limits;
use milvus_signals::milvus::parse_target;
use milvus_signals::source::prometheus::queries;
use milvus_signals::{Signal, SignalKey};

const WINDOW: Duration = Duration::from_secs(30);
const SECONDS: u64 = 60;
const SELECTOR: &str = "namespace=\"milvus\"";
const CHECK_AT: &[u64] = &[0, 5, 14, 20, 30, 31, 40, 46, 50, 55, 60];

/// One gauge series of one query node: its value at each second, `None` while not exported.
struct Series {
    target: &'static str,
    metric: &'static str,
    node: &'static str,
    namespace: &'static str,
    at: fn(u64) -> Option<f64>,
}

fn scenario() -> Vec<Series> {
    let s = |target, metric, node, at| Series {
        target,
        metric,
        node,
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
            node: "9",
            namespace: "elsewhere",
            at: |_| Some(1000.0),
        },
    ]
}

/// What the scrape engine reports at each checked second; `None` for an error.
fn engine_values(series: &[Series]) -> BTreeMap<u64, [Option<f64>; 2]> {
    let mut engine = SignalEngine::new(WINDOW);
    let mut out = BTreeMap::new();
    for t in 0..=SECONDS {
        let mut bodies: BTreeMap<&str, String> = BTreeMap::new();
        for s in series.iter().filter(|s| s.namespace == "milvus") {
            if let Some(v) = (s.at)(t) {
                let body = bodies.entry(s.target).or_default();
                writeln!(body, "{}{{node_id=\"{}\"}} {v}", s.metric, s.node).unwrap();
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
        if CHECK_AT.contains(&t) {
            let v = engine.compute();
            let get = |s| v[&SignalKey::instance(s)].as_ref().ok().copied();
            out.insert(
                t,
                [
                    get(Signal::SearchInflight),
                    get(Signal::SearchInflightNodeMax),
                ],
            );
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

fn input_series(series: &[Series]) -> String {
    let mut yaml = String::new();
    for s in series {
        let mut values = Vec::new();
        let mut seen = false;
        let mut gone = false;
        for t in 0..=SECONDS {
            values.push(match (s.at)(t) {
                Some(v) => {
                    seen = true;
                    format!("{v}")
                }
                // A series that disappears gets a staleness marker, as Prometheus writes when a
                // target stops answering or leaves service discovery.
                None if seen && !gone => {
                    gone = true;
                    "stale".to_string()
                }
                None => "_".to_string(),
            });
        }
        writeln!(
            yaml,
            "  - series: '{}{{node_id=\"{}\",namespace=\"{}\",instance=\"{}\"}}'\n    values: '{}'",
            s.metric,
            s.node,
            s.namespace,
            s.target,
            values.join(" ")
        )
        .unwrap();
    }
    yaml
}

fn expr_tests(exprs: &[(Signal, String)], expected: &BTreeMap<u64, [Option<f64>; 2]>) -> String {
    let mut yaml = String::new();
    for (t, values) in expected {
        for (i, (_, expr)) in exprs.iter().enumerate() {
            let samples = match values[i] {
                Some(v) => format!("\n    - labels: '{{}}'\n      value: {:?}", prom_round(v)),
                None => " []".to_string(),
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

fn promtool() -> Option<String> {
    let path = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    found.then_some(path)
}

#[test]
fn scrape_engine_and_promql_agree_on_in_flight() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED: promtool not found (apt-get install prometheus, or set PROMTOOL): the PromQL side of the parity is not checked"
        );
        return;
    };
    let exprs: Vec<(Signal, String)> = [Signal::SearchInflight, Signal::SearchInflightNodeMax]
        .into_iter()
        .map(|signal| {
            let q = queries(SELECTOR, WINDOW)
                .into_iter()
                .find(|q| q.signal == signal && q.collection_label.is_none())
                .expect("an instance query");
            (signal, q.expr)
        })
        .collect();

    let series = scenario();
    let expected = engine_values(&series);
    // The scenario exercises what it claims to (the engine side of the story).
    let at = |t: u64| expected[&t];
    // 40 s: node 1 averages its 31 one-second samples of [10 s, 40 s] (8 flicker ones, 5 s
    // of 2 ready), node 2 is 3, node 3 stopped at 31 s and no longer counts, node 5 is 0.
    let n1 = (8.0 + 5.0 * 2.0) / 31.0;
    assert!(
        (at(40)[0].unwrap() - (n1 + 3.0)).abs() < 1e-9,
        "{:?}",
        at(40)
    );
    assert_eq!(at(40)[1], Some(3.0));
    assert_eq!(at(30)[1], Some(5.0), "node 3 is the busiest while it runs");
    assert_eq!(at(46)[1], Some(7.0), "node 4 counts from its first sample");

    // No query node at all: both sides have no value.
    let proxy_only = "  - series: 'milvus_proxy_req_count{namespace=\"milvus\",function_name=\"Search\",status=\"total\"}'\n    values: '0+1x60'\n";
    let mut engine = SignalEngine::new(WINDOW);
    engine.observe(
        SystemTime::UNIX_EPOCH + Duration::from_secs(30),
        BTreeMap::from([(
            "proxy".to_string(),
            parse_target(
                "milvus_proxy_req_count{function_name=\"Search\",status=\"total\"} 30\n",
                &Limits::default(),
            )
            .unwrap(),
        )]),
    );
    let none = engine.compute();
    assert!(none[&SignalKey::instance(Signal::SearchInflight)].is_err());
    let no_node = BTreeMap::from([(30, [None, None])]);

    let test_file = format!(
        "rule_files: []\nevaluation_interval: 1s\ntests:\n- interval: 1s\n  input_series:\n{}  promql_expr_test:\n{}- interval: 1s\n  input_series:\n{proxy_only}  promql_expr_test:\n{}",
        input_series(&series),
        expr_tests(&exprs, &expected),
        expr_tests(&exprs, &no_node),
    );
    let dir = std::env::temp_dir().join(format!("in-flight-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("in_flight.test.yaml");
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
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "PromQL disagrees with the scrape engine:\n{report}\n--- test file ---\n{test_file}"
    );
    assert!(report.contains("SUCCESS"), "{report}");
}
