//! Sources of Milvus metrics and the poller that turns their rounds into snapshots.

pub mod prometheus;
pub mod scrape;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

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

/// Polls `source` every `interval` and publishes each round into `store`, until `shutdown` is
/// cancelled (also mid-round: a round still waiting on a slow target is dropped, not published).
/// Rounds never overlap; a round that overruns the interval delays the next.
pub async fn run_poller<S: MetricsSource>(
    mut source: S,
    meta: InstanceMeta,
    interval: Duration,
    store: Arc<SnapshotStore>,
    shutdown: CancellationToken,
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
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            outcome = source.poll() => outcome,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in source that only counts its rounds (what is tested here is the poller's
    /// schedule and stop, not a source); `hang` makes every round wait forever.
    struct Counting {
        polls: Arc<AtomicUsize>,
        hang: bool,
    }

    impl MetricsSource for Counting {
        async fn poll(&mut self) -> PollOutcome {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            PollOutcome {
                at: SystemTime::now(),
                values: SignalValues::new(),
                targets: vec![],
                window: Duration::from_secs(10),
                scale_out: None,
            }
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    fn meta() -> InstanceMeta {
        InstanceMeta {
            name: "prod".into(),
            namespace: "default".into(),
            stale_after: Duration::from_secs(10),
        }
    }

    /// A poller of `source` every 5 s, with its store, token and task.
    fn spawn_poller<S: MetricsSource>(
        source: S,
    ) -> (
        Arc<SnapshotStore>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let store = Arc::new(SnapshotStore::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_poller(
            source,
            meta(),
            Duration::from_secs(5),
            store.clone(),
            stop.clone(),
        ));
        (store, stop, task)
    }

    /// A counting poller: its poll count and the rest of [`spawn_poller`].
    fn spawn_counting(
        hang: bool,
    ) -> (
        Arc<AtomicUsize>,
        Arc<SnapshotStore>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let polls = Arc::new(AtomicUsize::new(0));
        let (store, stop, task) = spawn_poller(Counting {
            polls: polls.clone(),
            hang,
        });
        (polls, store, stop, task)
    }

    /// Paused clock: the intervals pass instantly, and a loop that ignored the token would still
    /// be asleep when the 1 ms timeout fires.
    #[tokio::test(start_paused = true)]
    async fn polls_every_interval_and_stops_between_rounds_when_cancelled() {
        let (polls, store, stop, task) = spawn_counting(false);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the first round runs at once"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // The pending entry and two rounds.
        assert_eq!(*store.subscribe().borrow(), 3);
        stop.cancel();
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("the poller still runs 1 ms after its token was cancelled")
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_in_flight_is_dropped_when_cancelled() {
        let (polls, store, stop, task) = spawn_counting(true);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the round is in flight");
        stop.cancel();
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("the poller still waits on its round after its token was cancelled")
            .unwrap();
        // Only the pending entry: the dropped round published nothing.
        assert_eq!(*store.subscribe().borrow(), 1);
        assert!(store.load().instances["prod"].round_at.is_none());
    }

    /// The real scrape source against a loopback server that accepts and never answers (a
    /// target hung mid-response): cancelling stops the poller long before the scrape timeout.
    #[tokio::test]
    async fn a_hung_scrape_does_not_delay_the_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let _ = accepted_tx.send(());
            // Hold the connection open, answering nothing.
            std::future::pending::<()>().await;
            drop(socket);
        });
        let target: scrape::TargetSpec = url.parse().unwrap();
        let source = scrape::ScrapeSource::new(
            vec![target],
            Duration::from_secs(600),
            Duration::from_secs(10),
        )
        .unwrap();
        let (store, stop, task) = spawn_poller(source);
        tokio::time::timeout(Duration::from_secs(10), accepted)
            .await
            .expect("the poller never connected to the target")
            .unwrap();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the poller waited on a hung scrape after its token was cancelled")
            .unwrap();
        assert!(store.load().instances["prod"].round_at.is_none());
        server.abort();
    }
}
