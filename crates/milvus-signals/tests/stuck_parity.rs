//! Both sources apply one rule to stuck searches ([`latency_without_completions`]): the same
//! real Milvus 2.3.5 `/metrics` body (the under-load capture), scraped every second for a window
//! with its counters frozen, goes through the scrape engine and, as promtool input series,
//! through the Prometheus source's PromQL and its result assembly. With searches waiting both
//! say unknown (stuck); with none waiting both say 0.
//!
//! Needs `promtool` (Debian's `prometheus` package, installed by `make setup`; or
//! `PROMTOOL=/path`); without it the test fails saying so.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use milvus_signals::engine::{DEFAULT_DEMAND_DRAIN, SignalEngine};
use milvus_signals::exposition::Limits;
use milvus_signals::milvus::parse_target;
use milvus_signals::source::prometheus::{in_flight_searches_query, queries, values_from_results};
use milvus_signals::{Signal, SignalKey, Unknown};

const WINDOW: Duration = Duration::from_secs(30);
const SELECTOR: &str = "namespace=\"milvus\"";
const LATENCY: [Signal; 3] = [
    Signal::SearchLatencyP50Seconds,
    Signal::SearchLatencyP90Seconds,
    Signal::SearchLatencyP99Seconds,
];

/// The real capture with `waiting` read tasks in the query node's ready queue.
fn body(waiting: u32) -> String {
    let dir = std::env::var("MILVUS_FIXTURES_DIR")
        .unwrap_or_else(|_| format!("{}/../../tests/fixtures", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/milvus-2.3.5-metrics-under-load.prom");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let idle = "milvus_querynode_read_task_ready_len{node_id=\"3\"} 0\n";
    assert!(text.contains(idle), "the capture has an idle ready queue");
    text.replace(
        idle,
        &format!("milvus_querynode_read_task_ready_len{{node_id=\"3\"}} {waiting}\n"),
    )
}

/// The scrape engine's instance-wide latency values after a window of identical rounds.
fn engine_latency(body: &str) -> Vec<Result<f64, Unknown>> {
    let mut engine = SignalEngine::new(WINDOW);
    for t in 0..=WINDOW.as_secs() {
        let sample = parse_target(body, &Limits::default()).unwrap();
        engine.observe(
            SystemTime::UNIX_EPOCH + Duration::from_secs(t),
            [("milvus".to_string(), sample)].into(),
        );
    }
    let values = engine.compute();
    LATENCY
        .iter()
        .map(|s| values[&SignalKey::instance(*s)].clone())
        .collect()
}

/// The body's samples that the latency and in-flight queries read, as promtool input series
/// constant over the window, labelled as Prometheus would scrape them.
fn input_series(body: &str) -> String {
    let wanted = [
        "milvus_proxy_sq_latency_bucket{",
        "milvus_querynode_read_task_unsolved_len{",
        "milvus_querynode_read_task_ready_len{",
        "milvus_proxy_executing_total_nq{",
    ];
    let mut yaml = String::new();
    for line in body
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let series = series.replacen('{', "{namespace=\"milvus\",instance=\"milvus:9091\",", 1);
        let values = vec![value; WINDOW.as_secs() as usize + 1].join(" ");
        writeln!(yaml, "  - series: '{series}'\n    values: '{values}'").unwrap();
    }
    yaml
}

/// The Prometheus source's instance-wide query of `signal`.
fn expr(signal: Signal) -> String {
    queries(SELECTOR, WINDOW, DEFAULT_DEMAND_DRAIN)
        .into_iter()
        .find(|q| q.signal == signal && q.collection_label.is_none())
        .unwrap()
        .expr
}

/// Checks with promtool that, at the end of the window, every latency query is NaN (no search
/// completed) and the in-flight query is `in_flight`.
fn promtool_says(body: &str, in_flight: f64) {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = Command::new(&promtool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found (tried {promtool:?}): run `make setup` (Debian's prometheus \
         package) or set PROMTOOL=/path/to/promtool"
    );
    let at = WINDOW.as_secs();
    let mut tests = String::new();
    for signal in LATENCY {
        // NaN never equals itself, so `count(x != x)` is 1 exactly when x is NaN.
        let e = expr(signal);
        writeln!(
            tests,
            "  - expr: 'count(({e}) != ({e}))'\n    eval_time: {at}s\n    exp_samples:\n    - labels: '{{}}'\n      value: 1"
        )
        .unwrap();
    }
    writeln!(
        tests,
        "  - expr: '{}'\n    eval_time: {at}s\n    exp_samples:\n    - labels: '{{}}'\n      value: {in_flight:?}",
        in_flight_searches_query(SELECTOR)
    )
    .unwrap();
    let file = format!(
        "rule_files: []\nevaluation_interval: 1s\ntests:\n- interval: 1s\n  input_series:\n{}  promql_expr_test:\n{tests}",
        input_series(body)
    );
    let dir = std::env::temp_dir().join(format!("stuck-parity-{}-{in_flight}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stuck.test.yaml");
    std::fs::write(&path, &file).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}\n--- test file ---\n{file}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Prometheus source's latency values for what promtool confirmed Prometheus returns.
fn promql_latency(in_flight: f64) -> Vec<Result<f64, Unknown>> {
    let results = queries(SELECTOR, WINDOW, DEFAULT_DEMAND_DRAIN)
        .into_iter()
        .filter(|q| LATENCY.contains(&q.signal) && q.collection_label.is_none())
        .map(|q| (q, Ok(vec![(None, f64::NAN)])))
        .collect();
    let values = values_from_results(results, &Ok(vec![(None, in_flight)]), WINDOW);
    LATENCY
        .iter()
        .map(|s| values[&SignalKey::instance(*s)].clone())
        .collect()
}

#[test]
fn both_sources_call_searches_stuck_while_they_wait_and_zero_when_idle() {
    // 8 searches waiting and none completing: unknown through both.
    let stuck = body(8);
    promtool_says(&stuck, 8.0);
    let (engine, promql) = (engine_latency(&stuck), promql_latency(8.0));
    assert_eq!(engine, promql);
    let stuck = Unknown::Stuck {
        in_flight: 8.0,
        window: WINDOW,
    };
    assert_eq!(engine, vec![Err(stuck); 3]);
    // Nothing waiting, nothing completing: a true 0 through both.
    let idle = body(0);
    promtool_says(&idle, 0.0);
    let (engine, promql) = (engine_latency(&idle), promql_latency(0.0));
    assert_eq!(engine, promql);
    assert_eq!(engine, vec![Ok(0.0); 3]);
}
