//! The snapshot store: the latest signal values of every Milvus instance, published by the
//! pollers and read lock-free (one atomic pointer load) by the APIs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::watch;

use crate::catalogue::{NotPerCollection, Signal, SignalKey};
use crate::unknown::Unknown;

/// A known value: what it was, when it was sampled, and the window it was computed over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The signal value, in the signal's unit.
    pub value: f64,
    /// When the data behind the value was collected.
    pub sampled_at: SystemTime,
    /// The window of a rate or quantile; `None` for point-in-time gauges.
    pub window: Option<Duration>,
}

impl Reading {
    /// How old the reading is at `now` (zero if the clock went backwards).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.sampled_at).unwrap_or_default()
    }
}

/// Health of one scrape target (or one PromQL query) in the latest round.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    /// The URL scraped, or the query run.
    pub target: String,
    /// Why it failed, or `None` if it answered.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// Everything known about one Milvus instance as of its latest round.
#[derive(Debug, Clone)]
pub struct InstanceSnapshot {
    /// Instance name from the configuration (served as label `milvus`).
    pub name: String,
    /// Kubernetes namespace the instance is served under.
    pub namespace: String,
    /// Human description of the source (`scrape of 3 targets`, `prometheus at ...`).
    pub source: String,
    /// Values older than this are unknown.
    pub stale_after: Duration,
    /// When the latest round ran; `None` before the first.
    pub round_at: Option<SystemTime>,
    /// Per signal key: the reading, or why there is none.
    pub values: BTreeMap<SignalKey, Result<Reading, Unknown>>,
    /// Per target: did it answer.
    pub targets: Vec<TargetHealth>,
}

impl InstanceSnapshot {
    /// An instance that has not completed a round yet.
    pub fn pending(name: &str, namespace: &str, source: String, stale_after: Duration) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            source,
            stale_after,
            round_at: None,
            values: BTreeMap::new(),
            targets: Vec::new(),
        }
    }

    /// The value of `key` at `now`, or why it is unknown. Staleness is judged here, at read time,
    /// so a poller that stopped publishing cannot leave a value looking fresh.
    pub fn reading(&self, key: &SignalKey, now: SystemTime) -> Result<Reading, SignalError> {
        if key.collection.is_some() && !key.signal.is_per_collection() {
            return Err(NotPerCollection { signal: key.signal }.into());
        }
        let unavailable = |reason: Unknown| SignalError::Unavailable {
            instance: self.name.clone(),
            key: describe_key(key),
            reason,
        };
        if self.round_at.is_none() {
            return Err(unavailable(Unknown::NoRound));
        }
        match self.values.get(key) {
            None if key.collection.is_some() => {
                match self
                    .values
                    .get(&SignalKey::no_collection_values(key.signal))
                {
                    Some(Err(reason)) => Err(SignalError::NotReportedPerCollection {
                        instance: self.name.clone(),
                        key: describe_key(key),
                        reason: reason.clone(),
                    }),
                    _ => Err(SignalError::UnknownCollection {
                        instance: self.name.clone(),
                        key: describe_key(key),
                    }),
                }
            }
            None => Err(unavailable(Unknown::NotReported)),
            Some(Err(reason)) => Err(unavailable(reason.clone())),
            Some(Ok(reading)) => {
                let age = reading.age(now);
                if age > self.stale_after {
                    Err(SignalError::Stale {
                        instance: self.name.clone(),
                        key: describe_key(key),
                        age,
                        bound: self.stale_after,
                    })
                } else {
                    Ok(*reading)
                }
            }
        }
    }

    /// Collections this instance has values for, for `signal`.
    pub fn collections(&self, signal: Signal) -> impl Iterator<Item = &str> {
        self.values
            .keys()
            .filter(move |k| k.signal == signal && !k.is_no_collection_values())
            .filter_map(|k| k.collection.as_deref())
    }
}

fn describe_key(key: &SignalKey) -> String {
    match &key.collection {
        Some(c) => format!("{} (collection {c})", key.signal),
        None => key.signal.to_string(),
    }
}

/// Why a signal has no value. Callers turn this into their protocol's "unavailable" error:
/// it must never become a zero.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum SignalError {
    /// No instance of that name is configured.
    #[error("no Milvus instance named {0:?} is configured")]
    UnknownInstance(String),
    /// The instance has no series for that collection.
    #[error(
        "Milvus instance {instance:?} reports no {key}: no such collection in its metrics (latency and rate use the collection name, loaded data and index builds the collection ID)"
    )]
    UnknownCollection {
        /// Instance name.
        instance: String,
        /// The signal and collection asked for.
        key: String,
    },
    /// A collection was asked for, but this Milvus reports the metrics behind the signal for
    /// the whole instance only (its version has no collection label on them).
    #[error(
        "Milvus instance {instance:?} has no {key}: it reports this signal for the whole instance only ({reason})"
    )]
    NotReportedPerCollection {
        /// Instance name.
        instance: String,
        /// The signal and collection asked for.
        key: String,
        /// Which Milvus metric lacks the collection label, and since which version.
        reason: Unknown,
    },
    /// A collection was asked for, but the signal exists for the whole instance only.
    #[error(transparent)]
    NotPerCollection(#[from] NotPerCollection),
    /// The source is down, the metric is missing, or the window is warming up.
    #[error("{key} of Milvus instance {instance:?} is unknown: {reason}")]
    Unavailable {
        /// Instance name.
        instance: String,
        /// The signal (and collection) asked for.
        key: String,
        /// Why. Part of the message (the APIs serve `to_string()`), so not also a `#[source]`,
        /// which would print it twice in an error chain.
        reason: Unknown,
    },
    /// The newest value is older than the staleness bound.
    #[error(
        "{key} of Milvus instance {instance:?} is stale: sampled {age:.1?} ago, bound is {bound:?}"
    )]
    Stale {
        /// Instance name.
        instance: String,
        /// The signal (and collection) asked for.
        key: String,
        /// Age of the newest value.
        age: Duration,
        /// The configured bound.
        bound: Duration,
    },
}

/// All instances as of their latest rounds.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Instances by name.
    pub instances: BTreeMap<String, Arc<InstanceSnapshot>>,
}

impl Snapshot {
    /// The value of `key` for `instance` at `now`, or why it is unknown.
    pub fn reading(
        &self,
        instance: &str,
        key: &SignalKey,
        now: SystemTime,
    ) -> Result<Reading, SignalError> {
        self.instances
            .get(instance)
            .ok_or_else(|| SignalError::UnknownInstance(instance.to_string()))?
            .reading(key, now)
    }

    /// Instances served under `namespace`.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<InstanceSnapshot>> {
        self.instances
            .values()
            .filter(move |i| i.namespace == namespace)
    }
}

/// Holds the current [`Snapshot`]; cheap to read from many tasks, written by the pollers.
#[derive(Debug)]
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    rounds: watch::Sender<u64>,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        Self::new(Snapshot::default())
    }
}

impl SnapshotStore {
    /// A store holding `initial`.
    pub fn new(initial: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            rounds: watch::channel(0).0,
        }
    }

    /// The current snapshot: one atomic load, no lock, no I/O.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces one instance's entry and wakes every subscriber.
    pub fn publish(&self, instance: InstanceSnapshot) {
        let instance = Arc::new(instance);
        self.current.rcu(|old| {
            let mut next = Snapshot::clone(old);
            next.instances
                .insert(instance.name.clone(), instance.clone());
            next
        });
        self.rounds.send_modify(|n| *n += 1);
    }

    /// A receiver that changes every time any instance publishes a round: what push-style APIs
    /// (KEDA `StreamIsActive`) wait on instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// Whether every instance has completed at least one round (the readiness condition).
    pub fn all_polled(&self) -> bool {
        let snapshot = self.load();
        !snapshot.instances.is_empty() && snapshot.instances.values().all(|i| i.round_at.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(at: SystemTime, value: Result<f64, Unknown>) -> InstanceSnapshot {
        let mut i =
            InstanceSnapshot::pending("demo", "default", "test".into(), Duration::from_secs(10));
        i.round_at = Some(at);
        i.values.insert(
            SignalKey::instance(Signal::SearchQueueDepth),
            value.map(|value| Reading {
                value,
                sampled_at: at,
                window: None,
            }),
        );
        i
    }

    #[test]
    fn fresh_stale_unavailable_and_unknown() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let store = SnapshotStore::default();
        let rx = store.subscribe();
        assert!(!store.all_polled());
        store.publish(instance(t0, Ok(3.0)));
        assert!(rx.has_changed().unwrap());
        assert!(store.all_polled());
        let key = SignalKey::instance(Signal::SearchQueueDepth);
        let snap = store.load();
        assert_eq!(
            snap.reading("demo", &key, t0 + Duration::from_secs(9))
                .unwrap()
                .value,
            3.0
        );
        let stale = snap
            .reading("demo", &key, t0 + Duration::from_secs(11))
            .unwrap_err();
        assert!(matches!(stale, SignalError::Stale { .. }), "{stale}");
        assert!(stale.to_string().contains("stale"));
        assert!(matches!(
            snap.reading("nope", &key, t0),
            Err(SignalError::UnknownInstance(_))
        ));
        assert!(matches!(
            snap.reading("demo", &SignalKey::collection(Signal::SearchRate, "c"), t0),
            Err(SignalError::UnknownCollection { .. })
        ));
        // An instance-only signal asked per collection: the same clear error for every one.
        for signal in [
            Signal::SearchQueueDepth,
            Signal::SearchInflight,
            Signal::SearchInflightNodeMax,
            Signal::SearchDemand,
        ] {
            let err = snap
                .reading("demo", &SignalKey::collection(signal, "c"), t0)
                .unwrap_err();
            assert_eq!(
                err,
                SignalError::NotPerCollection(NotPerCollection { signal })
            );
            assert!(
                err.to_string().contains("not available per collection"),
                "{err}"
            );
        }

        let down = Unknown::SourceUnreachable(vec![crate::unknown::TargetFailure {
            target: "http://qn:9091/metrics".into(),
            error: "connection refused".into(),
        }]);
        store.publish(instance(t0, Err(down.clone())));
        let err = store.load().reading("demo", &key, t0).unwrap_err();
        assert_eq!(
            err,
            SignalError::Unavailable {
                instance: "demo".into(),
                key: "search_queue_depth".into(),
                reason: down
            }
        );
        assert_eq!(
            err.to_string(),
            "search_queue_depth of Milvus instance \"demo\" is unknown: source unreachable: http://qn:9091/metrics: connection refused"
        );
    }

    #[test]
    fn pending_instance_is_unavailable_not_zero() {
        let store = SnapshotStore::default();
        store.publish(InstanceSnapshot::pending(
            "demo",
            "default",
            "x".into(),
            Duration::from_secs(10),
        ));
        let err = store
            .load()
            .reading(
                "demo",
                &SignalKey::instance(Signal::SearchRate),
                SystemTime::now(),
            )
            .unwrap_err();
        assert!(
            matches!(
                &err,
                SignalError::Unavailable {
                    reason: Unknown::NoRound,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!store.all_polled());
    }
}
