//! The service model: how query nodes turn offered load into latency, queues and CPU, how fast a
//! new one serves, and how nodes are provisioned. Every number is a parameter, calibrated from
//! measurements of real Milvus on the test harness (see `bench/models/`).

use serde::Deserialize;

use crate::SimError;

/// Everything the simulation needs besides the load trace and the controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// How query nodes serve searches.
    pub service: ServiceModel,
    /// How nodes (machines) for query-node pods appear and disappear.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// How the autoscaler's metrics are sampled and averaged.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// The p99 latency the cluster should stay under, seconds (for the SLO figure of the report).
    pub slo_p99_seconds: f64,
}

/// One query node as a single-server queue (M/M/1) with a fixed overhead per search.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceModel {
    /// Searches per second one query node completes when busy all the time.
    pub node_capacity_qps: f64,
    /// Latency every search pays besides its query node's queue (proxy, network, reduce), seconds.
    pub overhead_seconds: f64,
    /// Seconds from a query-node process start until it serves its share of searches.
    pub time_to_serve_seconds: f64,
    /// Seconds a query node told to stop keeps serving while it hands its segments over.
    pub graceful_stop_seconds: f64,
    /// CPU request of a query-node pod, cores (the base of CPU utilisation).
    pub cpu_request_cores: f64,
    /// CPU an idle query node uses, cores.
    pub cpu_idle_cores: f64,
    /// CPU a query node busy all the time (or loading segments) uses, cores.
    pub cpu_busy_cores: f64,
}

/// Machines for query-node pods: a provisioner (Cluster Autoscaler, Karpenter) adds them for
/// pods that cannot be scheduled and removes them once unneeded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Provisioning {
    /// Query-node pods that fit on one machine.
    pub pods_per_node: u32,
    /// Seconds from the provisioner's request until the machine takes pods.
    pub node_boot_seconds: f64,
    /// Seconds a pod is unschedulable before the provisioner asks for a machine.
    pub scan_seconds: f64,
    /// Seconds a machine stays unneeded before the provisioner removes it.
    pub unneeded_seconds: f64,
}

impl Default for Provisioning {
    fn default() -> Self {
        // Cluster Autoscaler's defaults (10 s scan, 10 min unneeded) and an EC2 boot with the
        // EKS bootstrap of about 90 s.
        Self {
            pods_per_node: 1,
            node_boot_seconds: 90.0,
            scan_seconds: 10.0,
            unneeded_seconds: 600.0,
        }
    }
}

/// How the metrics an autoscaler reads are produced from the cluster's state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Seconds over which rates, averages and quantiles are computed (milvus-scaler's window).
    pub window_seconds: f64,
    /// Seconds within which `search_demand` asks for capacity to drain the searches in flight.
    pub demand_drain_seconds: f64,
    /// Seconds over which pod CPU usage is averaged (metrics-server's resolution).
    pub cpu_window_seconds: f64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            window_seconds: 30.0,
            // milvus-scaler's default `signals.demand_drain`.
            demand_drain_seconds: 120.0,
            cpu_window_seconds: 30.0,
        }
    }
}

/// Utilisation is capped below 1 so the queueing formulas stay finite; the rest is backlog.
pub const MAX_UTILISATION: f64 = 0.98;

impl SimConfig {
    /// Checks every parameter is a finite number in its range, naming the first that is not.
    pub fn validate(&self) -> Result<(), SimError> {
        let s = &self.service;
        let p = &self.provisioning;
        let t = &self.telemetry;
        let positive = [
            ("service.node_capacity_qps", s.node_capacity_qps),
            ("service.cpu_request_cores", s.cpu_request_cores),
            ("telemetry.window_seconds", t.window_seconds),
            ("telemetry.demand_drain_seconds", t.demand_drain_seconds),
            ("telemetry.cpu_window_seconds", t.cpu_window_seconds),
            ("slo_p99_seconds", self.slo_p99_seconds),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(SimError::invalid(
                    name,
                    format!("expected a number > 0, got {v}"),
                ));
            }
        }
        let non_negative = [
            ("service.overhead_seconds", s.overhead_seconds),
            ("service.time_to_serve_seconds", s.time_to_serve_seconds),
            ("service.graceful_stop_seconds", s.graceful_stop_seconds),
            ("service.cpu_idle_cores", s.cpu_idle_cores),
            ("service.cpu_busy_cores", s.cpu_busy_cores),
            ("provisioning.node_boot_seconds", p.node_boot_seconds),
            ("provisioning.scan_seconds", p.scan_seconds),
            ("provisioning.unneeded_seconds", p.unneeded_seconds),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::invalid(
                    name,
                    format!("expected a number >= 0, got {v}"),
                ));
            }
        }
        if p.pods_per_node == 0 {
            return Err(SimError::invalid(
                "provisioning.pods_per_node",
                "expected at least 1",
            ));
        }
        Ok(())
    }
}

/// The latency distribution of the searches served in one second: `shift` plus an exponential
/// tail of `rate` (an M/M/1 sojourn time), weighted by how many searches it covers.
#[derive(Debug, Clone, Copy)]
pub struct LatencySlice {
    /// Searches served with this distribution.
    pub weight: f64,
    /// Seconds every one of them waited at least (overhead plus backlog ahead of them).
    pub shift: f64,
    /// Rate of the exponential part, per second (`capacity - arrival rate` of one node).
    pub rate: f64,
}

impl LatencySlice {
    /// Fraction of these searches slower than `x` seconds.
    fn tail(&self, x: f64) -> f64 {
        if x <= self.shift {
            1.0
        } else {
            (-(x - self.shift) * self.rate).exp()
        }
    }
}

/// The `q` quantile of the mixture of `slices` (by bisection on the mixture's tail), or `None`
/// when they hold no searches.
pub fn mixture_quantile(slices: &[LatencySlice], q: f64) -> Option<f64> {
    let total: f64 = slices.iter().map(|s| s.weight).sum();
    if total <= 0.0 {
        return None;
    }
    let target = (1.0 - q) * total;
    let tail = |x: f64| slices.iter().map(|s| s.weight * s.tail(x)).sum::<f64>();
    let (mut lo, mut hi) = (0.0, 1.0);
    while tail(hi) > target && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_of_one_exponential_matches_the_closed_form() {
        // An M/M/1 sojourn time with mu - lambda = 10/s: p99 = ln(100)/10.
        let slices = [LatencySlice {
            weight: 5.0,
            shift: 0.01,
            rate: 10.0,
        }];
        let p99 = mixture_quantile(&slices, 0.99).unwrap();
        assert!((p99 - (0.01 + 100f64.ln() / 10.0)).abs() < 1e-9, "{p99}");
        assert_eq!(mixture_quantile(&[], 0.99), None);
    }

    #[test]
    fn a_slow_second_dominates_the_tail_only_by_its_weight() {
        let fast = LatencySlice {
            weight: 99.0,
            shift: 0.0,
            rate: 100.0,
        };
        let slow = LatencySlice {
            weight: 1.0,
            shift: 5.0,
            rate: 100.0,
        };
        // One search in 100 is slow: the 98th percentile is among the fast ones
        // (99 e^(-100 x) = 1 at x = ln(99)/100), the 99.5th among the slow ones.
        let p98 = mixture_quantile(&[fast, slow], 0.98).unwrap();
        assert!((p98 - 99f64.ln() / 100.0).abs() < 1e-6, "{p98}");
        let p995 = mixture_quantile(&[fast, slow], 0.995).unwrap();
        assert!(p995 > 5.0, "{p995}");
    }
}
