//! Every signal on Milvus 2.4, 2.5 (2.5.5 and later) and 2.6 (2.6.17 and later), from
//! constructed `/metrics` bodies of each role process (`tests/fixtures/milvus-generations/`; each
//! names the milvus-io/milvus sources its metric names and label sets come from). Two scrape
//! rounds, 10 s apart, go through `parse_target` and the engine, then through the snapshot as the
//! APIs read it; every expected value is derived by hand from the bodies below.
//!
//! The workload is the same in every generation, so the figures are too:
//!
//! - proxy (node 5), t0 -> t10: `req_count{function_name="Search",status="total"}` docs
//!   1010 -> 1310, faq 200 -> 300: 400 searches in 10 s = 40/s (docs 30/s, faq 10/s, from
//!   `collection_sq_latency_count`: +300 and +100). Latency increases: docs 150 in (8,16] ms and
//!   150 in (16,32] ms, faq 100 in (32,64] ms.
//!   Instance: 400 observations, cumulative 0 (<=8), 150 (<=16), 300 (<=32), 400 (<=64).
//!   p50: rank 200 in (16,32]: 16 + 16 * (200 - 150) / 150 = 21.333 ms.
//!   p90: rank 360 in (32,64]: 32 + 32 * (360 - 300) / 100 = 51.2 ms.
//!   p99: rank 396 in (32,64]: 32 + 32 * (396 - 300) / 100 = 62.72 ms.
//!   docs p50: rank 150 of 300, cumulative 150 at le=16: 8 + 8 * 150 / 150 = 16 ms.
//!   faq p50: rank 50 of 100 in (32,64]: 32 + 32 * 50 / 100 = 48 ms.
//!   `received_nq{query_type="search"}` docs 10000 -> 13000, faq 2000 -> 3000: 4000 nq / 10 s =
//!   400 nq/s; `executing_total_nq` 20, 40: mean 30, over the default 120 s drain 0.25 nq/s:
//!   search_demand 400.25.
//! - query node 7: t0 5 waiting + 4 executing = 9, t10 1 waiting + 2 executing = 3 (average 6);
//!   query node 8: 1 waiting + 2 executing = 3 in both rounds. search_inflight 6 + 3 = 9,
//!   search_inflight_node_max 6, search_queue_depth (newest round) 1 + 1 = 2.
//!   Entities: node 7 collection 101 100000 sealed + 2000 growing, node 8 101 50000 + 102 30000:
//!   182000 (101: 152000, 102: 30000); bytes 4e8 + 8e6 + 2e8 + 1.2e8 = 7.28e8 (101: 6.08e8,
//!   102: 1.2e8).
//! - index builds: 4 pending (2.4: collection 101 2 unissued + 1 in progress, 102 1 in progress;
//!   2.5.5+/2.6: JobTypeIndexJob 2 Init + 1 InProgress + 1 Retry, stats jobs not counted).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use milvus_signals::engine::SignalEngine;
use milvus_signals::exposition::Limits;
use milvus_signals::milvus::{TargetSample, parse_target};
use milvus_signals::snapshot::InstanceSnapshot;
use milvus_signals::source::{InstanceMeta, PollOutcome, to_snapshot};
use milvus_signals::unknown::Component;
use milvus_signals::{Signal, SignalError, SignalKey, Unknown};

const WINDOW: Duration = Duration::from_secs(30);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn body(generation: &str, file: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/milvus-generations/{generation}/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(generation: &str, file: &str) -> TargetSample {
    parse_target(&body(generation, file), &Limits::default())
        .unwrap_or_else(|e| panic!("{generation}/{file}: {e}"))
}

/// The targets of one round: `name.t0.prom` / `name.t10.prom` where a process changed between
/// the rounds, `name.prom` where it did not.
fn round(generation: &str, targets: &[&str], at: &str) -> BTreeMap<String, TargetSample> {
    let dir = format!(
        "{}/tests/fixtures/milvus-generations/{generation}",
        env!("CARGO_MANIFEST_DIR")
    );
    targets
        .iter()
        .map(|name| {
            let per_round = format!("{name}.{at}.prom");
            let file = if std::path::Path::new(&format!("{dir}/{per_round}")).exists() {
                per_round
            } else {
                format!("{name}.prom")
            };
            (name.to_string(), parse(generation, &file))
        })
        .collect()
}

/// Both rounds through the engine and into a snapshot, read at t10.
fn run(generation: &str, targets: &[&str]) -> InstanceSnapshot {
    let mut engine = SignalEngine::new(WINDOW);
    engine.observe(t(0), round(generation, targets, "t0"));
    engine.observe(t(10), round(generation, targets, "t10"));
    let meta = InstanceMeta {
        name: format!("milvus-{generation}"),
        namespace: "default".into(),
        stale_after: Duration::from_secs(60),
    };
    let outcome = PollOutcome {
        at: t(10),
        values: engine.compute(),
        targets: Vec::new(),
        window: WINDOW,
        scale_out: None,
    };
    to_snapshot(&meta, "constructed bodies".into(), outcome)
}

fn value(snapshot: &InstanceSnapshot, key: SignalKey) -> f64 {
    match snapshot.reading(&key, t(10)) {
        Ok(reading) => reading.value,
        Err(e) => panic!("{}: {key:?} unknown: {e}", snapshot.name),
    }
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} != {expected}"
    );
}

/// The figures every generation shares (see the module comment for the arithmetic).
fn assert_common(s: &InstanceSnapshot) {
    let instance = |signal| value(s, SignalKey::instance(signal));
    let per = |signal, c: &str| value(s, SignalKey::collection(signal, c));
    close(instance(Signal::SearchRate), 40.0, "search_rate");
    close(per(Signal::SearchRate, "docs"), 30.0, "search_rate docs");
    close(per(Signal::SearchRate, "faq"), 10.0, "search_rate faq");
    close(
        instance(Signal::SearchLatencyP50Seconds),
        (16.0 + 16.0 * 50.0 / 150.0) / 1000.0,
        "p50",
    );
    close(instance(Signal::SearchLatencyP90Seconds), 0.0512, "p90");
    close(instance(Signal::SearchLatencyP99Seconds), 0.06272, "p99");
    close(
        per(Signal::SearchLatencyP50Seconds, "docs"),
        0.016,
        "p50 docs",
    );
    close(
        per(Signal::SearchLatencyP50Seconds, "faq"),
        0.048,
        "p50 faq",
    );
    close(
        instance(Signal::SearchDemand),
        400.0 + 30.0 / 120.0,
        "demand",
    );
    close(instance(Signal::SearchQueueDepth), 2.0, "queue depth");
    close(instance(Signal::SearchInflight), 9.0, "in flight");
    close(
        instance(Signal::SearchInflightNodeMax),
        6.0,
        "in flight max",
    );
    close(instance(Signal::LoadedEntities), 182000.0, "entities");
    close(per(Signal::LoadedEntities, "101"), 152000.0, "entities 101");
    close(per(Signal::LoadedEntities, "102"), 30000.0, "entities 102");
    close(instance(Signal::LoadedBytes), 7.28e8, "bytes");
    close(per(Signal::LoadedBytes, "101"), 6.08e8, "bytes 101");
    close(per(Signal::LoadedBytes, "102"), 1.2e8, "bytes 102");
    close(instance(Signal::IndexPendingBuilds), 4.0, "index builds");
    // Node-level signals have no per-collection values in any generation.
    for signal in [
        Signal::SearchQueueDepth,
        Signal::SearchInflight,
        Signal::SearchInflightNodeMax,
        Signal::SearchDemand,
        Signal::QueryBalancing,
    ] {
        let err = s
            .reading(&SignalKey::collection(signal, "101"), t(10))
            .unwrap_err();
        assert!(matches!(err, SignalError::NotPerCollection(_)), "{err}");
    }
}

/// On 2.5.5+ a per-collection `index_pending_builds` says why it does not exist, never a 0 and
/// never "no such collection"; the marker does not show up as a collection.
fn assert_index_builds_instance_only(s: &InstanceSnapshot) {
    for collection in ["101", "102", "4471"] {
        let err = s
            .reading(
                &SignalKey::collection(Signal::IndexPendingBuilds, collection),
                t(10),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                SignalError::NotReportedPerCollection {
                    reason: Unknown::IndexBuildsInstanceOnly,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("whole instance only") && text.contains("2.5.5"),
            "{text}"
        );
    }
    assert_eq!(s.collections(Signal::IndexPendingBuilds).count(), 0);
    // Other per-collection signals still answer "no such collection" for unknown ones.
    let err = s
        .reading(
            &SignalKey::collection(Signal::LoadedEntities, "4471"),
            t(10),
        )
        .unwrap_err();
    assert!(
        matches!(err, SignalError::UnknownCollection { .. }),
        "{err}"
    );
}

#[test]
fn milvus_2_4() {
    let targets = [
        "proxy",
        "querynode-7",
        "querynode-8",
        "querycoord",
        "datacoord",
    ];
    let s = run("2.4", &targets);
    assert_common(&s);
    // index_task_count per collection: 101 2 unissued + 1 in progress, 102 1 in progress.
    close(
        value(&s, SignalKey::collection(Signal::IndexPendingBuilds, "101")),
        3.0,
        "index 101",
    );
    close(
        value(&s, SignalKey::collection(Signal::IndexPendingBuilds, "102")),
        1.0,
        "index 102",
    );
    // 2 segment_move tasks at t0 (0 at t10, still inside the window): balancing.
    close(
        value(&s, SignalKey::instance(Signal::QueryBalancing)),
        1.0,
        "balancing",
    );
}

#[test]
fn milvus_2_5_5_and_later() {
    let targets = [
        "proxy",
        "querynode-7",
        "querynode-8",
        "querycoord",
        "datacoord",
    ];
    let s = run("2.5", &targets);
    assert_common(&s);
    assert_index_builds_instance_only(&s);
    // Only grow and leader-update tasks: nothing moves between query nodes.
    close(
        value(&s, SignalKey::instance(Signal::QueryBalancing)),
        0.0,
        "balancing",
    );
}

#[test]
fn milvus_2_6_17_and_later() {
    let targets = [
        "proxy",
        "querynode-7",
        "querynode-8",
        "mixcoord",
        "streamingnode",
        "datanode",
    ];
    let s = run("2.6", &targets);
    assert_common(&s);
    assert_index_builds_instance_only(&s);
    // No move task on the mix coordinator, but query node 8 is in stopping balance.
    close(
        value(&s, SignalKey::instance(Signal::QueryBalancing)),
        1.0,
        "balancing",
    );
}

#[test]
fn each_2_6_process_is_recognised_for_what_it_runs() {
    // The mix coordinator exports querycoord and datacoord metrics (one process, both roles).
    let mix = parse("2.6", "mixcoord.prom");
    assert!(mix.has_querycoord && mix.has_datacoord);
    assert!(!mix.has_proxy && !mix.has_querynode);
    assert!(mix.index_builds_instance_only);
    // The streaming node registers DataNode metrics and the data node the index-build ones
    // (subsystem indexnode): neither is taken for a query node, proxy or coordinator.
    for file in ["streamingnode.prom", "datanode.prom"] {
        let s = parse("2.6", file);
        assert!(
            !(s.has_proxy || s.has_querynode || s.has_datacoord || s.has_querycoord),
            "{file}: {s:?}"
        );
        assert!(
            s.gauges.is_empty() && s.counters.is_empty(),
            "{file}: {s:?}"
        );
    }
    // A 2.6.17+ query node has no unsolved queue gauge; ready_len alone still counts as one.
    let qn = parse("2.6", "querynode-7.t0.prom");
    assert!(qn.has_querynode && qn.has_queue_gauge);
    assert_eq!(qn.read_tasks_in_flight["7"], 9.0);
}

#[test]
fn without_a_data_coordinator_index_builds_are_unknown_in_every_generation() {
    for (generation, targets) in [
        ("2.4", ["proxy", "querynode-7", "querynode-8", "querycoord"]),
        (
            "2.6",
            ["proxy", "querynode-7", "querynode-8", "streamingnode"],
        ),
    ] {
        let s = run(generation, &targets);
        let err = s
            .reading(&SignalKey::instance(Signal::IndexPendingBuilds), t(10))
            .unwrap_err();
        assert!(
            matches!(
                err,
                SignalError::Unavailable {
                    reason: Unknown::ComponentMissing(Component::DataCoord),
                    ..
                }
            ),
            "{err}"
        );
    }
    // And the 2.6 query_balancing needs the mix coordinator: the stopping node alone is no
    // proof that nothing else moves.
    let s = run(
        "2.6",
        &["proxy", "querynode-7", "querynode-8", "streamingnode"],
    );
    let err = s
        .reading(&SignalKey::instance(Signal::QueryBalancing), t(10))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SignalError::Unavailable {
                reason: Unknown::ComponentMissing(Component::QueryCoord),
                ..
            }
        ),
        "{err}"
    );
}
