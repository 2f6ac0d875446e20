//! Node headroom in the loop: placeholder ("balloon") pods shaped like a query node, under a
//! negative PriorityClass, that hold machine room and are preempted by real query-node pods (the
//! Kubernetes overprovisioning pattern). A [`HeadroomSource`] decides how many to hold.

use std::time::{Duration, SystemTime};

use crate::sim::Signals;

/// What a headroom source sees at its sync.
#[derive(Debug, Clone)]
pub struct HeadroomView<'a> {
    /// The query-node replicas the workload is asked to run (`spec.replicas`).
    pub workload_pods: u32,
    /// The signals, as served at this moment.
    pub signals: &'a Signals,
}

/// How a headroom source holds its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadroomKind {
    /// Placeholder pods: machines hold them, so the provisioner keeps the machines.
    Placeholders,
    /// Spare machines beyond what the pods need, asked of the provisioner directly (EC2 Auto
    /// Scaling desired capacity raised by the node-group planner): nothing runs on them, so a
    /// Cluster-Autoscaler-like provisioner removes them after its unneeded time and the source asks
    /// again (the churn of deployment audit M7).
    SpareMachines,
}

/// Decides how much headroom to hold.
pub trait HeadroomSource {
    /// Seconds between two decisions.
    fn sync_period_seconds(&self) -> f64;
    /// Placeholder pods (or, for [`HeadroomKind::SpareMachines`], spare machines) to hold,
    /// decided at `now_seconds` since the start of the run.
    fn placeholders(&mut self, now_seconds: f64, view: &HeadroomView<'_>) -> u32;
    /// How the room is held.
    fn kind(&self) -> HeadroomKind {
        HeadroomKind::Placeholders
    }
}

/// A constant number of spare machines kept by raising the provisioner's desired capacity: the
/// node-group planner's headroom before placeholder pods.
#[derive(Debug, Clone, Copy)]
pub struct SpareMachines(pub u32);

impl HeadroomSource for SpareMachines {
    fn sync_period_seconds(&self) -> f64 {
        15.0
    }
    fn placeholders(&mut self, _now_seconds: f64, _view: &HeadroomView<'_>) -> u32 {
        self.0
    }
    fn kind(&self) -> HeadroomKind {
        HeadroomKind::SpareMachines
    }
}

/// A constant number of placeholder pods: hand-tuned overprovisioning.
#[derive(Debug, Clone, Copy)]
pub struct FixedHeadroom(pub u32);

impl HeadroomSource for FixedHeadroom {
    fn sync_period_seconds(&self) -> f64 {
        15.0
    }
    fn placeholders(&mut self, _now_seconds: f64, _view: &HeadroomView<'_>) -> u32 {
        self.0
    }
}

/// The headroom planner (crates/headroom) reading `search_demand`. The run starts at midnight
/// UTC of day 0, so the planner's daily peaks line up with the trace's hours of day.
#[derive(Debug, Clone)]
pub struct PlannedHeadroom {
    planner: headroom::Planner,
    sync_period_seconds: f64,
    last: Option<headroom::Plan>,
}

impl PlannedHeadroom {
    /// The planner of `config`, deciding every `sync_period_seconds`.
    pub fn new(config: headroom::HeadroomConfig, sync_period_seconds: f64) -> Self {
        Self {
            planner: headroom::Planner::new(config),
            sync_period_seconds,
            last: None,
        }
    }

    /// The last decision, with its reason.
    pub fn last_plan(&self) -> Option<&headroom::Plan> {
        self.last.as_ref()
    }
}

impl HeadroomSource for PlannedHeadroom {
    fn sync_period_seconds(&self) -> f64 {
        self.sync_period_seconds
    }
    fn placeholders(&mut self, now_seconds: f64, view: &HeadroomView<'_>) -> u32 {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(now_seconds.max(0.0));
        let plan = self
            .planner
            .plan(now, view.signals.search_demand, view.workload_pods);
        let pods = plan.headroom_pods;
        self.last = Some(plan);
        pods
    }
}
