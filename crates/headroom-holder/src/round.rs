//! One round, and the loop of rounds: read `search_demand` from the snapshot and the workload's
//! pods, plan the headroom, hand it to the holder; export and log what happened. With leader
//! election ([`HeadroomLoop::with_leadership`]) a replica that is not the leader plans and exports
//! but does not call the holder in `apply`, so only one replica writes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use headroom::{Plan, Planner};
use milvus_signals::{Signal, SignalKey, SnapshotStore};
use shutdown_signal::CancellationToken;

use crate::metric_names as m;
use crate::{Demand, HeadroomHolder, Held, HoldError, WorkloadPods};
use leader_lease::Leadership;
use leader_lease::lease::until_next_round;

/// What one round saw and did.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// The holder's target.
    pub holder: String,
    /// The holder's unit (`pods` or `nodes`).
    pub unit: &'static str,
    /// The workload read.
    pub workload_target: String,
    /// `search_demand`, or why it is unknown.
    pub demand: Result<f64, String>,
    /// The workload's pods, or why they are unknown.
    pub workload: Result<u32, String>,
    /// The plan (`None` when the workload's pods are unknown: nothing to plan against).
    pub plan: Option<Plan>,
    /// What the holder did.
    pub result: Result<Held, HoldError>,
}

impl RoundOutcome {
    /// Whether the round failed (the workload could not be read or the holder failed).
    pub fn failed(&self) -> bool {
        self.workload.is_err() || self.result.is_err()
    }
}

/// The planner, a holder and the workload read, with the instance whose demand is planned on.
pub struct HeadroomLoop<H, W> {
    planner: Planner,
    holder: H,
    workload: W,
    store: Arc<SnapshotStore>,
    milvus: String,
    leadership: Option<Leadership>,
}

impl<H: HeadroomHolder, W: WorkloadPods> HeadroomLoop<H, W> {
    /// A loop planning on `milvus`'s `search_demand` in `store`.
    pub fn new(
        planner: Planner,
        holder: H,
        workload: W,
        store: Arc<SnapshotStore>,
        milvus: impl Into<String>,
    ) -> Self {
        Self {
            planner,
            holder,
            workload,
            store,
            milvus: milvus.into(),
            leadership: None,
        }
    }

    /// The same loop, writing only while `leadership` says this replica is the leader.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// The holder (the `asg` holder keeps the node groups' outcomes of the last round).
    pub fn holder(&self) -> &H {
        &self.holder
    }

    /// One round at `now`; writes only when `apply`.
    pub async fn round(&mut self, now: SystemTime, apply: bool) -> RoundOutcome {
        let holder = self.holder.target();
        let demand = self
            .store
            .load()
            .reading(
                &self.milvus,
                &SignalKey::instance(Signal::SearchDemand),
                now,
            )
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.value.is_finite() && r.value >= 0.0 {
                    Ok(r.value)
                } else {
                    Err(format!("search_demand {} is not a number >= 0", r.value))
                }
            });
        let workload = self.workload.pods().await.map_err(|e| {
            metrics::counter!(m::ERRORS, "holder" => holder.clone(), "kind" => "workload")
                .increment(1);
            e.to_string()
        });
        let plan = workload
            .as_ref()
            .ok()
            .map(|w| self.planner.plan(now, demand.as_ref().ok().copied(), *w));
        let ask = match (&demand, &plan) {
            (Ok(_), Some(p)) => Demand::Pods(p.headroom_pods),
            _ => Demand::Unknown,
        };
        if let Some(p) = &plan {
            metrics::gauge!(m::PLANNED_PODS, "holder" => holder.clone())
                .set(f64::from(p.headroom_pods));
        }
        if let Ok(w) = &workload {
            metrics::gauge!(m::WORKLOAD_PODS, "holder" => holder.clone()).set(f64::from(*w));
        }
        // Asked just before the write: a leader whose renewals fail stops at its renew deadline.
        let follower = self.leadership.as_ref().filter(|l| apply && !l.is_leader());
        let result = match follower {
            Some(l) => Ok(Held::NotLeader {
                lease: l.lease().to_string(),
                leader: l.holder(),
            }),
            None => self.holder.hold(ask, apply).await,
        };
        let unit = self.holder.unit();
        let reason = plan.as_ref().map_or("", |p| p.reason.as_str());
        match &result {
            Ok(held) => {
                let (applied, observed) = match held {
                    Held::Unchanged { held, observed } => (Some(*held), *observed),
                    Held::Changed { to, observed, .. } => (Some(*to), *observed),
                    Held::DryRun { from, .. } => (*from, None),
                    Held::Blind | Held::NotLeader { .. } => (None, None),
                };
                if let Some(a) = applied {
                    metrics::gauge!(m::APPLIED, "holder" => holder.clone(), "unit" => unit)
                        .set(f64::from(a));
                }
                if let Some(o) = observed {
                    metrics::gauge!(m::OBSERVED_PODS, "holder" => holder.clone()).set(f64::from(o));
                }
                match held {
                    Held::Changed { from, to, .. } => {
                        let direction = if Some(*to) > *from { "up" } else { "down" };
                        metrics::counter!(m::CHANGES, "holder" => holder.clone(), "direction" => direction)
                            .increment(1);
                        tracing::info!(%holder, from = ?from, to, unit, direction, %reason, "headroom set");
                    }
                    Held::DryRun { from, to } => {
                        tracing::info!(%holder, from = ?from, to, unit, %reason, "dry-run: would set headroom");
                    }
                    Held::Blind => {
                        metrics::counter!(m::BLIND_ROUNDS, "holder" => holder.clone()).increment(1);
                        let why = match (&demand, &workload) {
                            (Err(e), _) => format!("search_demand unknown: {e}"),
                            (_, Err(e)) => format!("workload unknown: {e}"),
                            _ => String::new(),
                        };
                        tracing::warn!(%holder, %why, "headroom held as is: nothing written");
                    }
                    Held::NotLeader { lease, leader } => {
                        // Every round of every follower: debug; the elector logs each change.
                        tracing::debug!(%holder, %lease, leader = leader.as_deref().unwrap_or("(none)"), "not the headroom leader: holder not written");
                    }
                    Held::Unchanged { .. } => {}
                }
            }
            Err(e) => {
                metrics::counter!(m::ERRORS, "holder" => holder.clone(), "kind" => e.kind())
                    .increment(1);
                tracing::warn!(%holder, error = %e, "holding headroom failed");
            }
        }
        RoundOutcome {
            holder,
            unit,
            workload_target: self.workload.target(),
            demand,
            workload,
            plan,
            result,
        }
    }

    /// A round every `interval` until `stop` is cancelled; errors are logged and counted, and
    /// the next round tries again. A follower that becomes the leader runs its round at once.
    pub async fn run(mut self, interval: Duration, apply: bool, stop: CancellationToken) {
        let mut leadership = self.leadership.clone();
        loop {
            let led = tokio::select! {
                o = self.round(SystemTime::now(), apply) => !matches!(o.result, Ok(Held::NotLeader { .. })),
                () = stop.cancelled() => return,
            };
            tokio::select! {
                () = until_next_round(leadership.as_mut(), !led, interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// The round as text: the numbers, the plan's reason, and what the holder did.
pub fn render(o: &RoundOutcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "holder:    {} ({})", o.holder, o.unit);
    let _ = writeln!(
        s,
        "demand:    {}",
        match &o.demand {
            Ok(v) => format!("search_demand {v:.2} nq/s"),
            Err(e) => format!("unknown: {e}"),
        }
    );
    let _ = writeln!(
        s,
        "workload:  {}",
        match &o.workload {
            Ok(w) => format!("{w} pods ({})", o.workload_target),
            Err(e) => format!("unknown: {e}"),
        }
    );
    match &o.plan {
        Some(p) => {
            let _ = writeln!(s, "headroom:  {} pods", p.headroom_pods);
            let _ = writeln!(s, "reason:    {}", p.reason);
        }
        None => {
            let _ = writeln!(
                s,
                "headroom:  not planned (the workload's pods are unknown)"
            );
        }
    }
    let _ = writeln!(
        s,
        "action:    {}",
        match &o.result {
            Ok(h) => h.to_string(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    s
}
