//! Sources of Milvus metrics and the poller that turns their rounds into snapshots.

pub mod prometheus;
pub mod scrape;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::catalogue::SignalKey;
use crate::engine::SignalValues;
use crate::scale_out::{PhaseCounts, PhaseEvent};
use crate::snapshot::{InstanceSnapshot, Reading, SnapshotStore, TargetHealth};
use crate::unknown::Unknown;

/// What one round of a source produced.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    /// When the data was collected.
    pub at: SystemTime,
    /// Signal values, or the reason each is unknown.
    pub values: SignalValues,
    /// Per target (or query): did it answer.
    pub targets: Vec<TargetHealth>,
    /// The window rates and quantiles were computed over.
    pub window: Duration,
    /// New query nodes' scale-out phases, for a source that sees each target (the scrape);
    /// `None` for one that does not (PromQL).
    pub scale_out: Option<ScaleOutRound>,
}

/// What the scale-out tracker saw in one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleOutRound {
    /// Phases completed in this round.
    pub events: Vec<PhaseEvent>,
    /// New query nodes listed now that completed each phase.
    pub counts: PhaseCounts,
}

/// Exports a round's scale-out phases of instance `milvus`: each event into the phase histogram
/// and a log line, and the per-phase node counts as gauges.
pub fn record_scale_out(milvus: &str, round: &ScaleOutRound) {
    use crate::metric_names::{SCALE_OUT_NODES, SCALE_OUT_PHASE_SECONDS};
    for e in &round.events {
        metrics::histogram!(SCALE_OUT_PHASE_SECONDS, "milvus" => milvus.to_string(), "phase" => e.phase.name())
            .record(e.seconds);
        tracing::info!(
            milvus,
            target = %e.target,
            node_id = %e.node_id,
            phase = e.phase.name(),
            seconds = e.seconds,
            "scale-out phase completed"
        );
    }
    for (phase, count) in &round.counts {
        metrics::gauge!(SCALE_OUT_NODES, "milvus" => milvus.to_string(), "phase" => phase.name())
            .set(*count as f64);
    }
}

/// A source of Milvus signals: direct scrape of `/metrics`, or PromQL against a Prometheus.
pub trait MetricsSource: Send + 'static {
    /// Runs one round: collects metrics and computes every signal.
    fn poll(&mut self) -> impl Future<Output = PollOutcome> + Send;
    /// A short description for tables and logs.
    fn describe(&self) -> String;
}

/// Identity of an instance as served, and how stale its values may get.
#[derive(Debug, Clone)]
pub struct InstanceMeta {
    /// Instance name (label `milvus`).
    pub name: String,
    /// Namespace it is served under.
    pub namespace: String,
    /// Staleness bound.
    pub stale_after: Duration,
}

/// Converts a round into the instance's snapshot entry.
pub fn to_snapshot(meta: &InstanceMeta, source: String, outcome: PollOutcome) -> InstanceSnapshot {
    let mut snapshot =
        InstanceSnapshot::pending(&meta.name, &meta.namespace, source, meta.stale_after);
    snapshot.round_at = Some(outcome.at);
    snapshot.targets = outcome.targets;
    snapshot.values = outcome
        .values
        .into_iter()
        .map(|(key, value): (SignalKey, Result<f64, Unknown>)| {
            let window = key.signal.is_windowed().then_some(outcome.window);
            let reading = value.map(|value| Reading {
                value,
                sampled_at: outcome.at,
                window,
            });
            (key, reading)
        })
        .collect();
    snapshot
}

/// Polls `source` every `interval` and publishes each round into `store`, until `shutdown`
/// becomes true. Rounds never overlap; a round that overruns the interval delays the next.
pub async fn run_poller<S: MetricsSource>(
    mut source: S,
    meta: InstanceMeta,
    interval: Duration,
    store: Arc<SnapshotStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    store.publish(InstanceSnapshot::pending(
        &meta.name,
        &meta.namespace,
        source.describe(),
        meta.stale_after,
    ));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let outcome = source.poll().await;
        let failed = outcome.targets.iter().filter(|t| t.error.is_some()).count();
        metrics::histogram!(crate::metric_names::ROUND_DURATION, "milvus" => meta.name.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!(crate::metric_names::ROUND_FAILED_TARGETS, "milvus" => meta.name.clone())
            .set(failed as f64);
        if failed > 0 {
            for t in outcome.targets.iter().filter(|t| t.error.is_some()) {
                tracing::warn!(milvus = %meta.name, target = %t.target, error = ?t.error, "target failed");
            }
        }
        if let Some(round) = &outcome.scale_out {
            record_scale_out(&meta.name, round);
        }
        store.publish(to_snapshot(&meta, source.describe(), outcome));
    }
}
