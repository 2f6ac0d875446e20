//! Side-by-side runs of several controllers on one trace, and the static provisioning a user
//! would otherwise pick, as a table or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::SimError;
use crate::model::SimConfig;
use crate::sim::{ClusterView, Controller, Outcome, run};
use crate::trace::LoadTrace;

/// A controller that never changes the replicas: static provisioning.
pub struct Static(pub u32);

impl Controller for Static {
    fn sync_period_seconds(&self) -> f64 {
        15.0
    }
    fn sync(&mut self, _now: f64, _view: &ClusterView<'_>) -> u32 {
        self.0
    }
}

/// The share of searches that must meet the SLO for a static size to count as provisioned for
/// the peak.
pub const STATIC_SLO_FRACTION: f64 = 0.99;

/// The smallest static replica count (up to `max`) whose searches meet the SLO at least
/// [`STATIC_SLO_FRACTION`] of the time over the whole trace, and its run.
pub fn static_peak(
    config: &SimConfig,
    trace: &LoadTrace,
    max: u32,
    sample_every: f64,
) -> Result<(u32, Outcome), SimError> {
    let meets = |n: u32| -> Result<(bool, Outcome), SimError> {
        let outcome = run(config, trace, &mut Static(n), n, sample_every)?;
        let ok = outcome.summary.slo_fraction >= STATIC_SLO_FRACTION
            && outcome.summary.failed_searches == 0.0;
        Ok((ok, outcome))
    };
    // More replicas never serve worse, so the smallest passing size is found by bisection.
    let (mut lo, mut hi) = (1, max.max(1));
    let (ok, mut best) = meets(hi)?;
    if !ok {
        return Ok((hi, best));
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (ok, outcome) = meets(mid)?;
        if ok {
            hi = mid;
            best = outcome;
        } else {
            lo = mid + 1;
        }
    }
    Ok((hi, best))
}

/// One controller's run, named for the report.
#[derive(Debug, Clone, Serialize)]
pub struct NamedRun {
    /// What ran (a file name, or `static N`).
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

/// A table of the runs' summaries, the last column relative to the first run's node-hours.
pub fn table(runs: &[NamedRun], slo_p99_seconds: f64) -> String {
    let mut out = String::new();
    let base = runs.first().map(|r| r.outcome.summary.node_hours);
    let _ = writeln!(
        out,
        "{:<34} {:>9} {:>9} {:>8} {:>9} {:>12} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>6} {:>10}",
        "policy",
        "pod-h",
        "node-h",
        "changes",
        "reversals",
        "steady ch/h",
        format!("p99<={}s", slo_p99_seconds),
        "in spike",
        "max pods",
        "failed",
        "waited",
        "longest",
        "balloon-h",
        "churn",
        "node-h ×"
    );
    for r in runs {
        let s = &r.outcome.summary;
        let ratio = match base {
            Some(b) if b > 0.0 => format!("{:.2}", s.node_hours / b),
            _ => "-".into(),
        };
        let in_spike = s
            .spike_slo_fraction
            .map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let steady = s
            .steady_changes_per_hour
            .map_or("-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "{:<34} {:>9.1} {:>9.1} {:>8} {:>9} {:>12} {:>8.1}% {:>9} {:>9} {:>8.0} {:>7} {:>8.0}s {:>9.1} {:>6} {:>10}",
            truncate(&r.name, 34),
            s.pod_hours,
            s.node_hours,
            s.scale_changes,
            s.reversals,
            steady,
            100.0 * s.slo_fraction,
            in_spike,
            s.max_pods,
            s.failed_searches,
            s.pods_waited_for_node,
            s.longest_node_wait_seconds,
            s.headroom_pod_hours,
            s.machines_churned,
            ratio
        );
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
