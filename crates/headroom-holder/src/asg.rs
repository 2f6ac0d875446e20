//! Headroom as EC2 Auto Scaling capacity: the planner's headroom pods become the query-node
//! groups' `headroom_pods` and node-groups' own round ([`node_groups::applier::Runner`]) plans
//! and sets desired capacity: the same arithmetic, bounds, retries, dry-run and metrics as
//! `node_groups:` alone. Note that Cluster Autoscaler removes the empty nodes this adds unless
//! scale-down is disabled for those groups (docs/headroom.md).

use std::sync::Arc;
use std::time::SystemTime;

use milvus_signals::SnapshotStore;
use node_groups::applier::{Action, AutoScaling, GroupOutcome, Runner};

use crate::{AsgRef, Demand, HeadroomHolder, Held, HoldError};

/// Holds headroom in the desired capacity of some `node_groups` groups. It drives the whole
/// node-group round (every configured group), so `serve` runs no separate node-group loop when
/// this holder is chosen.
pub struct AsgHolder<C> {
    runner: Runner<C>,
    groups: Vec<String>,
    store: Arc<SnapshotStore>,
    last: Vec<GroupOutcome>,
}

impl<C: AutoScaling> AsgHolder<C> {
    /// A holder over `runner` for the groups of `asg`, planning from `store`'s signals.
    pub fn new(runner: Runner<C>, asg: &AsgRef, store: Arc<SnapshotStore>) -> Self {
        Self {
            runner,
            groups: asg.groups.clone(),
            store,
            last: Vec::new(),
        }
    }

    /// The outcome of every group in the last round (for the `plan-nodes` table).
    pub fn last_outcomes(&self) -> &[GroupOutcome] {
        &self.last
    }

    /// Headroom pods per group: spread evenly, rounded up (the pods spread over the zones).
    pub fn per_group(&self, pods: u32) -> u32 {
        pods.div_ceil(self.groups.len().max(1) as u32)
    }
}

impl<C: AutoScaling> HeadroomHolder for AsgHolder<C> {
    fn target(&self) -> String {
        format!("node groups {}", self.groups.join(","))
    }

    fn unit(&self) -> &'static str {
        "nodes"
    }

    /// Sets the groups' headroom (unknown demand: keeps what they had) and runs one node-group
    /// round. A group's own signal being unknown already holds its capacity (node-groups' rule).
    async fn hold(&mut self, demand: Demand, apply: bool) -> Result<Held, HoldError> {
        if let Demand::Pods(pods) = demand {
            let per = self.per_group(pods);
            for g in &self.groups {
                // Validated at load: every name is a configured group.
                self.runner.set_headroom_pods(g, per);
            }
        }
        let snapshot = self.store.load();
        self.last = self.runner.round(&snapshot, SystemTime::now(), apply).await;
        let mine: Vec<&GroupOutcome> = self
            .last
            .iter()
            .filter(|o| self.groups.contains(&o.group))
            .collect();
        let failed: Vec<String> = mine
            .iter()
            .filter_map(|o| match &o.action {
                Action::Failed(why) => Some(format!("{}: {why}", o.group)),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            return Err(HoldError::NodeGroups {
                groups: self.groups.join(","),
                message: failed.join("; "),
            });
        }
        let current: u32 = mine
            .iter()
            .filter_map(|o| o.plan.as_ref())
            .map(|p| p.current)
            .sum();
        let desired: u32 = mine
            .iter()
            .filter_map(|o| o.plan.as_ref())
            .map(|p| p.desired)
            .sum();
        let any = |f: fn(&Action) -> bool| mine.iter().any(|o| f(&o.action));
        Ok(if any(|a| matches!(a, Action::Changed { .. })) {
            Held::Changed {
                from: Some(current),
                to: desired,
                observed: None,
            }
        } else if any(|a| matches!(a, Action::DryRun { .. })) {
            Held::DryRun {
                from: Some(current),
                to: desired,
            }
        } else if demand == Demand::Unknown {
            Held::Blind
        } else {
            Held::Unchanged {
                held: current,
                observed: None,
            }
        })
    }
}
