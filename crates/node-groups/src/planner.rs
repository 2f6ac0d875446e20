//! The planner: pure arithmetic from a signal value and a group's current state to the group's
//! desired capacity, with a human-readable reason for every number. No I/O, no clock: `now` is
//! handed in, so every rule is tested with tables and properties.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::config::{PoolState, WarmPoolConfig};
use crate::group::{ResolvedGroup, pods_per_node};

/// What the Auto Scaling API says about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgState {
    /// Auto Scaling group name.
    pub name: String,
    /// Current desired capacity.
    pub desired: u32,
    /// The group's MinSize.
    pub min_size: u32,
    /// The group's MaxSize.
    pub max_size: u32,
    /// The group's warm pool, if it has one.
    pub warm_pool: Option<WarmPoolState>,
}

/// A warm pool as described by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPoolState {
    /// Instances kept in the pool at least.
    pub min_size: u32,
    /// The state of the pool's instances; `None` for a state this code does not know (it then
    /// differs from every plan).
    pub pool_state: Option<PoolState>,
}

/// The plan for one group, each number with the reason it has that value.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// Group name from the configuration.
    pub group: String,
    /// Auto Scaling group name.
    pub asg: String,
    /// The signal's value, or `None` when it is unknown.
    pub signal_value: Option<f64>,
    /// Replicas the HPA will ask for (`None` when the signal is unknown).
    pub replicas: Option<u32>,
    /// Why `replicas` has its value.
    pub replicas_reason: String,
    /// Workload pods one node holds after the reservation.
    pub pods_per_node: u32,
    /// Why `pods_per_node` has its value.
    pub pods_per_node_reason: String,
    /// Nodes the replicas plus headroom need (`None` when the signal is unknown).
    pub nodes_needed: Option<u32>,
    /// Why `nodes_needed` has its value.
    pub nodes_reason: String,
    /// The group's desired capacity now.
    pub current: u32,
    /// The group's MinSize.
    pub min_size: u32,
    /// The group's MaxSize.
    pub max_size: u32,
    /// The planned desired capacity, always inside `[min_size, max_size]`.
    pub desired: u32,
    /// Why `desired` has its value.
    pub desired_reason: String,
    /// Demand exceeds MaxSize: `desired` is capped.
    pub capped: bool,
    /// The planned warm pool, when one is configured.
    pub warm_pool: Option<WarmPoolConfig>,
    /// Why the warm pool is planned so (empty when none is configured).
    pub warm_pool_reason: String,
}

impl GroupPlan {
    /// Whether applying the plan changes the group's desired capacity.
    pub fn changes_capacity(&self) -> bool {
        self.desired != self.current
    }
}

/// Scale-in stabilisation: the recommendations of the last window, as the HPA keeps them.
#[derive(Debug, Clone, Default)]
pub struct Stabilizer {
    history: VecDeque<(SystemTime, u32)>,
}

impl Stabilizer {
    /// Records `value` at `now`, forgets what is older than `window`, returns the highest kept.
    pub fn record(&mut self, now: SystemTime, window: Duration, value: u32) -> u32 {
        self.history.push_back((now, value));
        let horizon = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        while let Some((t, _)) = self.history.front() {
            if *t < horizon {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.iter().map(|(_, v)| *v).max().unwrap_or(value)
    }
}

/// Plans one group from its signal reading (`Err` = unknown, with why) and current state.
/// `stabilizer` is the group's own history (used only with `scale_in: true`).
pub fn plan_group(
    group: &ResolvedGroup,
    reading: Result<f64, String>,
    state: &AsgState,
    stabilizer: &mut Stabilizer,
    now: SystemTime,
) -> GroupPlan {
    let c = &group.config;
    let (ppn, ppn_reason) = pods_per_node(group);
    let (min_size, max_size) = (state.min_size, state.max_size.max(state.min_size));
    let clamp = |n: u32| n.clamp(min_size, max_size);
    let mut plan = GroupPlan {
        group: c.name.clone(),
        asg: c.asg.clone(),
        signal_value: None,
        replicas: None,
        replicas_reason: String::new(),
        pods_per_node: ppn,
        pods_per_node_reason: ppn_reason,
        nodes_needed: None,
        nodes_reason: String::new(),
        current: state.desired,
        min_size,
        max_size,
        desired: state.desired,
        desired_reason: String::new(),
        capped: false,
        warm_pool: c.warm_pool.clone(),
        warm_pool_reason: match &c.warm_pool {
            Some(w) => format!(
                "warm pool of at least {} {} instance(s), as configured",
                w.min_size, w.pool_state
            ),
            None => String::new(),
        },
    };
    let value = match reading {
        Ok(v) if !v.is_finite() || v < 0.0 => {
            Err(format!("signal value {v} is not a non-negative number"))
        }
        known_or_unknown => known_or_unknown,
    };
    let value = match value {
        Ok(v) => v,
        Err(why) => {
            plan.replicas_reason = format!("unknown: {why}");
            plan.nodes_reason = "unknown: no signal, no demand estimate".into();
            plan.desired = clamp(state.desired);
            plan.desired_reason = if plan.desired == state.desired {
                format!(
                    "no change: {} is unknown, holding desired capacity {}",
                    c.replicas.signal, state.desired
                )
            } else {
                format!(
                    "{} is unknown; current desired {} is outside [{min_size}, {max_size}], moved inside",
                    c.replicas.signal, state.desired
                )
            };
            return plan;
        }
    };
    plan.signal_value = Some(value);

    // HPA arithmetic for an AverageValue target.
    let raw = (value / c.replicas.target_per_pod).ceil();
    let raw_u = if raw >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        raw as u32
    };
    let replicas = raw_u.clamp(c.replicas.min, c.replicas.max);
    plan.replicas = Some(replicas);
    plan.replicas_reason = format!(
        "ceil({} {value} / {} per pod) = {raw_u}{}",
        c.replicas.signal,
        c.replicas.target_per_pod,
        if replicas > raw_u {
            format!(", raised to the workload's min {}", c.replicas.min)
        } else if replicas < raw_u {
            format!(", capped at the workload's max {}", c.replicas.max)
        } else {
            String::new()
        }
    );

    let pods = replicas.saturating_add(c.headroom_pods);
    let needed = pods.div_ceil(ppn.max(1));
    plan.nodes_needed = Some(needed);
    plan.nodes_reason = format!(
        "ceil(({replicas} replicas + {} headroom) / {ppn} pods per node) = {needed}",
        c.headroom_pods
    );

    // Direction rules, then the group's own bounds (which the API does not always enforce).
    let (mut desired, mut reason) = if needed >= state.desired {
        if c.scale_in {
            stabilizer.record(now, c.scale_in_stabilization, needed);
        }
        (
            needed,
            if needed == state.desired {
                format!("demand needs {needed} node(s), as now")
            } else {
                format!("demand needs {needed} node(s), up from {}", state.desired)
            },
        )
    } else if !c.scale_in {
        (
            state.desired,
            format!(
                "demand needs {needed} node(s); holding {} (scale_in: false, Cluster Autoscaler removes idle nodes)",
                state.desired
            ),
        )
    } else {
        let highest = stabilizer.record(now, c.scale_in_stabilization, needed);
        let d = highest.min(state.desired);
        (
            d,
            if d == needed {
                format!("demand needs {needed} node(s), down from {}", state.desired)
            } else {
                format!(
                    "demand needs {needed} node(s); scale-in stabilised at {d} (highest plan of the last {:?})",
                    c.scale_in_stabilization
                )
            },
        )
    };
    if desired > max_size {
        plan.capped = needed > max_size;
        reason = format!(
            "{reason}; capped at the group's MaxSize {max_size}{}",
            if plan.capped {
                format!(" (demand exceeds it by {} node(s))", needed - max_size)
            } else {
                String::new()
            }
        );
        desired = max_size;
    } else if desired < min_size {
        reason = format!("{reason}; raised to the group's MinSize {min_size}");
        desired = min_size;
    }
    plan.desired = desired;
    plan.desired_reason = reason;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupConfig, ReplicasConfig, Resources};
    use crate::group::NodeSource;
    use crate::instances::builtin;
    use crate::quantity::{Cpu, Memory};
    use milvus_signals::Signal;
    use proptest::prelude::*;

    fn group(pod_cpu: u64, pod_gib: u64, target: f64, min: u32, max: u32) -> ResolvedGroup {
        ResolvedGroup {
            config: GroupConfig {
                name: "querynodes".into(),
                asg: "asg-q".into(),
                milvus: "prod".into(),
                instance_type: "r6i.2xlarge".into(),
                allocatable: None,
                reserved: None,
                pod: Resources {
                    cpu: Cpu::cores(pod_cpu),
                    memory: Memory::gib(pod_gib),
                },
                replicas: ReplicasConfig {
                    signal: Signal::SearchQueueDepth,
                    target_per_pod: target,
                    min,
                    max,
                },
                headroom_pods: 0,
                scale_in: false,
                scale_in_stabilization: Duration::from_secs(300),
                warm_pool: None,
            },
            node: builtin("r6i.2xlarge").unwrap(),
            node_source: NodeSource::BuiltIn,
            reserved: Resources::default(),
        }
    }

    fn asg(desired: u32, min: u32, max: u32) -> AsgState {
        AsgState {
            name: "asg-q".into(),
            desired,
            min_size: min,
            max_size: max,
            warm_pool: None,
        }
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn plan(g: &ResolvedGroup, v: Result<f64, String>, s: &AsgState) -> GroupPlan {
        plan_group(g, v, s, &mut Stabilizer::default(), t(0))
    }

    #[test]
    fn hpa_arithmetic_rounds_up_and_clamps_to_workload_bounds() {
        // r6i.2xlarge: 8 CPU / 64Gi minus 500m / 2Gi; 2 CPU / 8Gi pods: 3 per node by CPU.
        let g = group(2, 8, 8.0, 2, 40);
        let s = asg(0, 0, 100);
        // (value, replicas, nodes)
        let cases = [
            (0.0, 2, 1),   // zero demand: the workload's min
            (8.0, 2, 1),   // exactly 1, raised to min 2
            (16.0, 2, 1),  // exactly 2
            (16.1, 3, 1),  // rounds up
            (25.0, 4, 2),  // ceil(3.125) = 4 pods -> 2 nodes of 3
            (72.0, 9, 3),  // 9 pods, 3 per node
            (73.0, 10, 4), // 10 pods -> 4 nodes
            (1e9, 40, 14), // capped at max replicas 40 -> ceil(40/3) = 14
        ];
        for (v, replicas, nodes) in cases {
            let p = plan(&g, Ok(v), &s);
            assert_eq!(
                p.replicas,
                Some(replicas),
                "value {v}: {}",
                p.replicas_reason
            );
            assert_eq!(p.nodes_needed, Some(nodes), "value {v}: {}", p.nodes_reason);
            assert_eq!(p.desired, nodes, "value {v}: {}", p.desired_reason);
            assert!(!p.replicas_reason.is_empty() && !p.desired_reason.is_empty());
        }
        assert!(
            plan(&g, Ok(0.0), &s)
                .replicas_reason
                .contains("raised to the workload's min 2")
        );
        assert!(
            plan(&g, Ok(1e9), &s)
                .replicas_reason
                .contains("capped at the workload's max 40")
        );
    }

    #[test]
    fn allocatable_after_reservation_decides_pods_per_node() {
        // The example: 4 CPU / 28Gi on r6i.2xlarge (8 CPU / 64Gi).
        let mut g = group(4, 28, 8.0, 2, 40);
        // Default reservation 500m: 7.5 CPU left -> 1 pod by CPU (memory would allow 2).
        let (n, why) = pods_per_node(&g);
        assert_eq!(n, 1, "{why}");
        assert!(why.contains("limited by CPU"), "{why}");
        // No reservation: 2 pods by CPU, 2 by memory (64/28).
        g.reserved = Resources {
            cpu: Cpu(0),
            memory: Memory(0),
        };
        assert_eq!(pods_per_node(&g).0, 2);
        // Memory-heavy reservation: 64 - 9 = 55Gi -> 1 pod of 28Gi.
        g.reserved = Resources {
            cpu: Cpu(0),
            memory: Memory::gib(9),
        };
        let (n, why) = pods_per_node(&g);
        assert_eq!(n, 1);
        assert!(why.contains("limited by memory"), "{why}");
        // Allocatable from the config.
        g.node = crate::instances::InstanceCapacity {
            cpu: Cpu::cores(32),
            memory: Memory::gib(256),
        };
        g.reserved = Resources::default();
        assert_eq!(pods_per_node(&g).0, 7); // 31.5/4 = 7 by CPU, 254/28 = 9 by memory
    }

    #[test]
    fn headroom_adds_pods() {
        let mut g = group(2, 8, 8.0, 0, 40);
        g.config.headroom_pods = 1;
        let p = plan(&g, Ok(24.0), &asg(0, 0, 10)); // 3 replicas + 1 = 4 pods -> 2 nodes of 3
        assert_eq!(p.nodes_needed, Some(2), "{}", p.nodes_reason);
        assert!(p.nodes_reason.contains("1 headroom"));
        // Zero demand with min 0 and no headroom: zero nodes needed.
        g.config.headroom_pods = 0;
        assert_eq!(plan(&g, Ok(0.0), &asg(0, 0, 10)).nodes_needed, Some(0));
    }

    #[test]
    fn group_bounds_always_hold_and_capping_says_so() {
        let g = group(2, 8, 8.0, 0, 1000);
        let p = plan(&g, Ok(800.0), &asg(2, 1, 5)); // 100 pods -> 34 nodes
        assert_eq!(p.desired, 5);
        assert!(p.capped);
        assert!(
            p.desired_reason.contains("capped at the group's MaxSize 5"),
            "{}",
            p.desired_reason
        );
        assert!(
            p.desired_reason.contains("exceeds it by 29"),
            "{}",
            p.desired_reason
        );
        let p = plan(&g, Ok(0.0), &asg(3, 3, 5));
        assert_eq!(p.desired, 3);
        assert!(!p.capped);
        // Desired below MinSize (possible on emulators): raised.
        let p = plan(&g, Ok(0.0), &asg(0, 2, 5));
        assert_eq!(p.desired, 2);
        assert!(
            p.desired_reason.contains("MinSize 2"),
            "{}",
            p.desired_reason
        );
    }

    #[test]
    fn never_lowers_without_scale_in() {
        let g = group(2, 8, 8.0, 0, 40);
        let p = plan(&g, Ok(8.0), &asg(6, 0, 10));
        assert_eq!(p.nodes_needed, Some(1));
        assert_eq!(p.desired, 6);
        assert!(!p.changes_capacity());
        assert!(
            p.desired_reason.contains("scale_in: false"),
            "{}",
            p.desired_reason
        );
    }

    #[test]
    fn scale_in_is_stabilised() {
        let mut g = group(2, 8, 8.0, 0, 40);
        g.config.scale_in = true;
        g.config.scale_in_stabilization = Duration::from_secs(300);
        let mut st = Stabilizer::default();
        let p = plan_group(&g, Ok(48.0), &asg(0, 0, 10), &mut st, t(0)); // 6 pods -> 2 nodes
        assert_eq!(p.desired, 2);
        // Demand falls to 1 node 60 s later: held at 2 (highest in the window).
        let p = plan_group(&g, Ok(8.0), &asg(2, 0, 10), &mut st, t(60));
        assert_eq!(p.desired, 2, "{}", p.desired_reason);
        assert!(
            p.desired_reason.contains("stabilised"),
            "{}",
            p.desired_reason
        );
        // After the window, it goes down.
        let p = plan_group(&g, Ok(8.0), &asg(2, 0, 10), &mut st, t(400));
        assert_eq!(p.desired, 1, "{}", p.desired_reason);
        assert!(p.desired_reason.contains("down from 2"));
        // The window never raises above the current capacity when demand is below it.
        let mut st = Stabilizer::default();
        plan_group(&g, Ok(800.0), &asg(0, 0, 40), &mut st, t(0));
        let p = plan_group(&g, Ok(8.0), &asg(3, 0, 40), &mut st, t(10));
        assert_eq!(p.desired, 3);
    }

    #[test]
    fn unknown_signal_changes_nothing_and_says_why() {
        let g = group(2, 8, 8.0, 0, 40);
        let p = plan(&g, Err("stale: sampled 12s ago".into()), &asg(4, 0, 10));
        assert_eq!(p.desired, 4);
        assert!(!p.changes_capacity());
        assert_eq!(p.replicas, None);
        assert!(p.replicas_reason.contains("stale"), "{}", p.replicas_reason);
        assert!(
            p.desired_reason.contains("no change"),
            "{}",
            p.desired_reason
        );
        // NaN or negative values are not demand.
        for v in [f64::NAN, -1.0, f64::INFINITY] {
            assert_eq!(plan(&g, Ok(v), &asg(4, 0, 10)).desired, 4);
        }
    }

    proptest! {
        #[test]
        fn plan_is_inside_bounds_and_never_below_current_without_scale_in(
            value in prop_oneof![Just(f64::NAN), Just(-1.0), 0.0f64..1e7],
            unknown in any::<bool>(),
            target in 0.1f64..100.0,
            wl_min in 0u32..20,
            wl_extra in 1u32..200,
            headroom in 0u32..5,
            pod_cpu in 1u64..8,
            pod_gib in 1u64..60,
            current in 0u32..300,
            min_size in 0u32..50,
            size_extra in 0u32..200,
            scale_in in any::<bool>(),
            steps in proptest::collection::vec((0.0f64..1e5, 0u64..600), 1..6),
        ) {
            let mut g = group(pod_cpu, pod_gib, target, wl_min, wl_min + wl_extra);
            g.config.headroom_pods = headroom;
            g.config.scale_in = scale_in;
            let max_size = min_size + size_extra;
            let mut st = Stabilizer::default();
            let mut now = t(0);
            let mut cur = current;
            let mut all = vec![(value, 0u64)];
            all.extend(steps);
            for (v, dt) in all {
                now += Duration::from_secs(dt);
                let reading = if unknown { Err("unknown".to_string()) } else { Ok(v) };
                let s = asg(cur, min_size, max_size);
                let p = plan_group(&g, reading, &s, &mut st, now);
                prop_assert!(p.desired >= min_size && p.desired <= max_size, "{p:?}");
                if !scale_in {
                    prop_assert!(p.desired >= cur.min(max_size), "{p:?}");
                }
                prop_assert!(!p.desired_reason.is_empty() && !p.replicas_reason.is_empty());
                cur = p.desired;
            }
        }
    }
}
