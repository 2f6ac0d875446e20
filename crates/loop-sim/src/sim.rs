//! The closed loop, one simulated second at a time: load arrives, serving query nodes work it
//! off, the metrics an autoscaler reads are computed from what happened, the autoscaler decides,
//! pods wait for machines, start, load, serve and stop.

use std::collections::VecDeque;

use serde::Serialize;

use crate::SimError;
use crate::headroom_source::{HeadroomKind, HeadroomSource, HeadroomView};
use crate::model::{LatencySlice, MAX_UTILISATION, SimConfig, mixture_quantile};
use crate::trace::LoadTrace;

/// Simulated seconds per step. Milvus metrics are scraped every second in production too.
const STEP: f64 = 1.0;

/// A machine removed within this many seconds of being added counts as provisioner churn.
pub const CHURN_SECONDS: f64 = 1800.0;

/// The metrics the autoscaler can read at a sync, as milvus-scaler serves them. `None` is an
/// unknown signal (nothing to measure yet, or no query node): the HPA holds on it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Signals {
    /// Offered searches per second over the window plus searches in flight / drain seconds.
    pub search_demand: Option<f64>,
    /// Searches per second received by proxies over the window.
    pub search_rate: Option<f64>,
    /// Searches in flight (waiting + executing), averaged over the window.
    pub search_inflight: Option<f64>,
    /// The busiest query node's searches in flight, averaged over the window.
    pub search_inflight_node_max: Option<f64>,
    /// Searches waiting in query-node queues now.
    pub search_queue_depth: Option<f64>,
    /// 99th percentile search latency over the window, seconds.
    pub search_latency_p99_seconds: Option<f64>,
    /// 1 when segments moved between query nodes in any second of the window (a started query
    /// node loading its share, or a stopping one handing its share over), else 0.
    pub query_balancing: Option<f64>,
}

impl Signals {
    /// The value of the signal named as milvus-scaler names it (with or without `milvus_`).
    pub fn by_name(&self, name: &str) -> Result<Option<f64>, SimError> {
        let bare = name.strip_prefix("milvus_").unwrap_or(name);
        Ok(match bare {
            "search_demand" => self.search_demand,
            "search_rate" => self.search_rate,
            "search_inflight" => self.search_inflight,
            "search_inflight_node_max" => self.search_inflight_node_max,
            "search_queue_depth" => self.search_queue_depth,
            "search_latency_p99_seconds" => self.search_latency_p99_seconds,
            "query_balancing" => self.query_balancing,
            _ => return Err(SimError::UnknownSignal(name.to_string())),
        })
    }
}

/// One pod as the autoscaler sees it.
#[derive(Debug, Clone, Copy)]
pub struct PodView {
    /// Whether the pod is ready (its query node serves).
    pub ready: bool,
    /// Whether the pod has started at all (it is bound to a machine).
    pub running: bool,
    /// Seconds since the pod's process started (0 while it waits for a machine).
    pub started_seconds_ago: f64,
    /// Seconds since the pod turned ready, while it is.
    pub ready_seconds_ago: Option<f64>,
    /// CPU used, cores, averaged over the CPU window (metrics-server's view).
    pub cpu_cores: f64,
    /// CPU requested, cores.
    pub cpu_request_cores: f64,
}

/// What an autoscaler sees at a sync.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    /// The replicas the workload is asked to run (the scale subresource's `spec.replicas`).
    pub spec_replicas: u32,
    /// Pods that exist and are not terminating.
    pub pods: &'a [PodView],
    /// The signals, as served at this moment.
    pub signals: &'a Signals,
}

/// A replica controller under test: the HPA with a policy, or anything else.
pub trait Controller {
    /// Seconds between two syncs (the HPA's `--horizontal-pod-autoscaler-sync-period`).
    fn sync_period_seconds(&self) -> f64;
    /// The replicas the workload should run, decided at `now_seconds`.
    fn sync(&mut self, now_seconds: f64, view: &ClusterView<'_>) -> u32;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a machine since the given time.
    Pending { since: f64 },
    /// Started at `started`; serves from `serves_at`.
    Starting { started: f64, serves_at: f64 },
    /// Serving since it started at `started`.
    Serving { started: f64 },
    /// Told to stop; serves until `gone_at`.
    Stopping { gone_at: f64 },
}

#[derive(Debug, Clone)]
struct Pod {
    phase: Phase,
    cpu: VecDeque<f64>,
}

/// One row of the simulation's time series.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Searches per second clients offered.
    pub offered_qps: f64,
    /// Searches per second completed.
    pub served_qps: f64,
    /// Replicas the controller asked for.
    pub desired: u32,
    /// Query nodes serving.
    pub serving: u32,
    /// Pods that exist (waiting, starting, serving or stopping).
    pub pods: u32,
    /// Machines that exist (booting or ready).
    pub nodes: u32,
    /// Placeholder pods holding room on a machine.
    pub headroom_pods: u32,
    /// Query-node pods waiting for a machine (they missed their first chance to bind).
    pub waiting_for_node: u32,
    /// Searches queued beyond what serving nodes hold.
    pub backlog: f64,
    /// 99th percentile latency of the searches served in this second, seconds.
    pub p99_seconds: Option<f64>,
    /// The signals served at this second.
    pub signals: Signals,
}

/// The figures a run is judged by.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Simulated seconds.
    pub duration_seconds: f64,
    /// Query-node pod-hours (every existing pod, whatever its phase).
    pub pod_hours: f64,
    /// Machine-hours (booting or ready).
    pub node_hours: f64,
    /// Times the controller changed the desired replicas.
    pub scale_changes: u32,
    /// Changes per hour while the offered load had been steady (within 5 % for 10 minutes).
    /// A scale-in walking down one pod a minute counts every step.
    pub steady_changes_per_hour: Option<f64>,
    /// Changes against the direction of the previous change (up after down, down after up): the
    /// flapping count.
    pub reversals: u32,
    /// Fraction of searches (by count) served in a second whose p99 was within the SLO.
    pub slo_fraction: f64,
    /// For a spike trace, the share of the judged part of the spike
    /// ([`LoadTrace::judged_spike`]: after its first 2 minutes) whose seconds had a p99 within
    /// the SLO (the closed loop's goal: at least 0.95). `None` for other traces.
    pub spike_slo_fraction: Option<f64>,
    /// Searches that failed (no query node serving).
    pub failed_searches: f64,
    /// Most pods at once.
    pub max_pods: u32,
    /// Seconds from the first scale-up decision until that pod served, if one was added.
    pub first_added_serving_seconds: Option<f64>,
    /// Pods that waited for a machine to be provisioned.
    pub pods_waited_for_node: u32,
    /// Longest such wait, seconds.
    pub longest_node_wait_seconds: f64,
    /// Placeholder pod-hours that held room on a machine (0 without headroom).
    pub headroom_pod_hours: f64,
    /// Machines the provisioner added and removed again within [`CHURN_SECONDS`].
    pub machines_churned: u32,
}

/// A finished run: the time series (one sample every `sample_every` seconds) and the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The time series.
    pub samples: Vec<Sample>,
    /// The summary figures.
    pub summary: Summary,
}

/// One second of what happened, kept for the window's averages and quantiles.
#[derive(Debug, Clone, Copy)]
struct Second {
    offered: f64,
    inflight: f64,
    inflight_node_max: f64,
    latency: LatencySlice,
    balancing: bool,
}

/// A machine: when it was asked for and when it takes pods.
#[derive(Debug, Clone, Copy)]
struct Machine {
    created: f64,
    ready: f64,
}

/// Runs `trace` against a cluster that starts with `initial_replicas` serving query nodes (and
/// the machines for them), driven by `controller`. A sample is kept every `sample_every` seconds.
pub fn run(
    config: &SimConfig,
    trace: &LoadTrace,
    controller: &mut dyn Controller,
    initial_replicas: u32,
    sample_every: f64,
) -> Result<Outcome, SimError> {
    run_with_headroom(
        config,
        trace,
        controller,
        None,
        initial_replicas,
        sample_every,
    )
}

/// [`run`] with node headroom: `headroom` decides how many placeholder pods (one query node's
/// shape, negative priority) to hold. The provisioner adds machines for pending placeholders as
/// for any pod and does not remove a machine a placeholder runs on; a query-node pod that finds
/// no free slot preempts a placeholder and starts at once, and the placeholder pends again.
/// Without headroom the run is [`run`]'s.
pub fn run_with_headroom(
    config: &SimConfig,
    trace: &LoadTrace,
    controller: &mut dyn Controller,
    mut headroom: Option<&mut dyn HeadroomSource>,
    initial_replicas: u32,
    sample_every: f64,
) -> Result<Outcome, SimError> {
    config.validate()?;
    trace.validate()?;
    let sync_period = controller.sync_period_seconds();
    if !(sync_period.is_finite() && sync_period >= STEP) {
        return Err(SimError::Controller(format!(
            "controller sync period: expected at least {STEP} s, got {sync_period}"
        )));
    }
    if let Some(h) = headroom.as_deref() {
        let period = h.sync_period_seconds();
        if !(period.is_finite() && period >= STEP) {
            return Err(SimError::Controller(format!(
                "headroom sync period: expected at least {STEP} s, got {period}"
            )));
        }
    }
    let svc = &config.service;
    let prov = &config.provisioning;
    let tel = &config.telemetry;
    let window_len = (tel.window_seconds / STEP).round().max(1.0) as usize;
    let cpu_len = (tel.cpu_window_seconds / STEP).round().max(1.0) as usize;
    let ppn = prov.pods_per_node as usize;

    let mut pods: Vec<Pod> = (0..initial_replicas)
        .map(|_| Pod {
            phase: Phase::Serving {
                started: -svc.time_to_serve_seconds,
            },
            cpu: VecDeque::new(),
        })
        .collect();
    // Machines: the time each one is ready to take pods.
    let mut nodes: Vec<Machine> = vec![
        Machine {
            created: f64::NEG_INFINITY,
            ready: f64::NEG_INFINITY,
        };
        (initial_replicas as usize).div_ceil(ppn)
    ];
    // Placeholder pods: those bound to a machine, and the times the others went pending.
    let mut balloons_bound = 0usize;
    let mut balloons_pending: VecDeque<f64> = VecDeque::new();
    let mut balloon_seconds = 0.0;
    let mut churned = 0u32;
    let mut next_headroom_sync = 0.0;
    let mut unneeded_since: Option<f64> = None;
    let mut desired = initial_replicas;
    let mut backlog = 0.0_f64;
    let mut history: VecDeque<Second> = VecDeque::with_capacity(window_len + 1);

    let mut samples = Vec::new();
    let mut pod_seconds = 0.0;
    let mut node_seconds = 0.0;
    let mut scale_changes = 0u32;
    let mut steady_changes = 0u32;
    let mut reversals = 0u32;
    let mut last_direction: Option<bool> = None;
    let mut steady_seconds = 0.0;
    let mut within_slo = 0.0;
    let mut served_total = 0.0;
    let judged_spike = trace.judged_spike();
    let (mut spike_seconds, mut spike_seconds_within) = (0u32, 0u32);
    let mut failed = 0.0;
    let mut max_pods = pods.len() as u32;
    let mut first_scale_up: Option<f64> = None;
    let mut first_added_serving = None;
    let mut waited = 0u32;
    let mut longest_wait = 0.0_f64;
    let mut next_sync = sync_period;
    let mut next_sample = 0.0;

    let duration = trace.duration_seconds();
    let steps = (duration / STEP).ceil() as u64;
    for step in 0..steps {
        let now = step as f64 * STEP;

        // Pods change phase.
        let mut newly_serving = false;
        pods.retain(|p| !matches!(p.phase, Phase::Stopping { gone_at } if now >= gone_at));
        for pod in &mut pods {
            if let Phase::Starting { started, serves_at } = pod.phase
                && now >= serves_at
            {
                pod.phase = Phase::Serving { started };
                newly_serving = true;
            }
        }
        if newly_serving && let (Some(t0), None) = (first_scale_up, first_added_serving) {
            first_added_serving = Some(now - t0);
        }

        // Machines: pending pods bind to free slots on ready machines, query-node pods
        // preempting placeholders where none is free; the provisioner asks for more after its
        // scan delay and removes machines that stayed unneeded.
        let bound = pods
            .iter()
            .filter(|p| !matches!(p.phase, Phase::Pending { .. }))
            .count();
        let ready_nodes = nodes.iter().filter(|m| m.ready <= now).count();
        let mut free = (ready_nodes * ppn).saturating_sub(bound + balloons_bound);
        for pod in &mut pods {
            if let Phase::Pending { since } = pod.phase
                && (free > 0 || balloons_bound > 0)
            {
                if free > 0 {
                    free -= 1;
                } else {
                    // Placeholders have the lowest priority and no grace period: the scheduler
                    // evicts one, and it pends again (its Deployment recreates it).
                    balloons_bound -= 1;
                    balloons_pending.push_back(now);
                }
                // A pod created at a sync binds at the next step at the earliest: only one that
                // missed that chance waited for a machine.
                if now - since > STEP + 1e-9 {
                    waited += 1;
                    longest_wait = longest_wait.max(now - since);
                }
                pod.phase = Phase::Starting {
                    started: now,
                    serves_at: now + svc.time_to_serve_seconds,
                };
            }
        }
        while free > 0 && balloons_pending.pop_front().is_some() {
            free -= 1;
            balloons_bound += 1;
        }
        let unschedulable = pods
            .iter()
            .filter(
                |p| matches!(p.phase, Phase::Pending { since } if now - since >= prov.scan_seconds),
            )
            .count()
            + balloons_pending
                .iter()
                .filter(|&&since| now - since >= prov.scan_seconds)
                .count();
        let booting = nodes.iter().filter(|m| m.ready > now).count();
        let wanted = unschedulable.div_ceil(ppn);
        for _ in booting..wanted {
            nodes.push(Machine {
                created: now,
                ready: now + prov.node_boot_seconds,
            });
        }
        let bound = pods
            .iter()
            .filter(|p| !matches!(p.phase, Phase::Pending { .. }))
            .count();
        let needed = (bound + balloons_bound).div_ceil(ppn);
        let ready_nodes = nodes.iter().filter(|m| m.ready <= now).count();
        if ready_nodes > needed && booting == 0 {
            let since = *unneeded_since.get_or_insert(now);
            if now - since >= prov.unneeded_seconds {
                // Empty machines go together, as Cluster Autoscaler deletes empty nodes in bulk.
                // The newest go first: the scheduler spreads pods and a ReplicaSet deletes its
                // newest pods first, so the machines left empty are mostly the newest.
                for _ in needed..ready_nodes {
                    if let Some(i) = nodes.iter().rposition(|m| m.ready <= now) {
                        let gone = nodes.remove(i);
                        if now - gone.created < CHURN_SECONDS {
                            churned += 1;
                        }
                    }
                }
                unneeded_since = None;
            }
        } else {
            unneeded_since = None;
        }

        // Serving: every serving (or still handing over) query node takes an equal share.
        let offered = trace.qps_at(now);
        let serving = pods
            .iter()
            .filter(|p| matches!(p.phase, Phase::Serving { .. } | Phase::Stopping { .. }))
            .count();
        let (served, rho, latency) = if serving == 0 {
            // No query node: Milvus fails searches ("channel not available"), it does not queue them.
            failed += offered * STEP + backlog;
            backlog = 0.0;
            (
                0.0,
                0.0,
                LatencySlice {
                    weight: 0.0,
                    shift: 0.0,
                    rate: 1.0,
                },
            )
        } else {
            let capacity = serving as f64 * svc.node_capacity_qps;
            let available = backlog + offered * STEP;
            let served = available.min(MAX_UTILISATION * capacity * STEP);
            backlog = available - served;
            let rho = (served / STEP / capacity).min(MAX_UTILISATION);
            let latency = LatencySlice {
                weight: served,
                shift: svc.overhead_seconds + backlog / capacity,
                rate: svc.node_capacity_qps * (1.0 - rho),
            };
            (served, rho, latency)
        };
        let per_node_in_system = rho / (1.0 - rho);
        let inflight = serving as f64 * per_node_in_system + backlog;
        let inflight_node_max = if serving == 0 {
            0.0
        } else {
            per_node_in_system + backlog / serving as f64
        };
        served_total += served;
        let p99_now = mixture_quantile(&[latency], 0.99);
        let p99_within = p99_now.is_some_and(|p| p <= config.slo_p99_seconds);
        if p99_within {
            within_slo += served;
        }
        if judged_spike.is_some_and(|(from, to)| now >= from && now < to) {
            spike_seconds += 1;
            spike_seconds_within += u32::from(p99_within);
        }

        for pod in &mut pods {
            let cores = match pod.phase {
                Phase::Pending { .. } => continue,
                // Loading segments keeps a starting query node busy.
                Phase::Starting { .. } => svc.cpu_busy_cores,
                Phase::Serving { .. } | Phase::Stopping { .. } => {
                    svc.cpu_idle_cores + (svc.cpu_busy_cores - svc.cpu_idle_cores) * rho
                }
            };
            pod.cpu.push_back(cores);
            if pod.cpu.len() > cpu_len {
                pod.cpu.pop_front();
            }
        }

        // Milvus moves segments onto a query node while it loads (after it started) and off one
        // while it stops gracefully.
        let balancing = pods
            .iter()
            .any(|p| matches!(p.phase, Phase::Starting { .. } | Phase::Stopping { .. }));
        history.push_back(Second {
            offered,
            inflight,
            inflight_node_max,
            latency,
            balancing,
        });
        if history.len() > window_len {
            history.pop_front();
        }
        let signals = compute_signals(
            &history,
            window_len,
            serving,
            per_node_in_system,
            rho,
            backlog,
            tel.demand_drain_seconds,
        );

        // The controller syncs.
        if now + 1e-9 >= next_sync {
            next_sync += sync_period;
            let views: Vec<PodView> = pods
                .iter()
                .filter(|p| !matches!(p.phase, Phase::Stopping { .. }))
                .map(|p| {
                    let (ready, running, started) = match p.phase {
                        Phase::Serving { started } => (true, true, started),
                        Phase::Starting { started, .. } => (false, true, started),
                        _ => (false, false, now),
                    };
                    PodView {
                        ready,
                        running,
                        started_seconds_ago: now - started,
                        ready_seconds_ago: ready
                            .then(|| now - (started + svc.time_to_serve_seconds).min(now)),
                        cpu_cores: if p.cpu.is_empty() {
                            0.0
                        } else {
                            p.cpu.iter().sum::<f64>() / p.cpu.len() as f64
                        },
                        cpu_request_cores: svc.cpu_request_cores,
                    }
                })
                .collect();
            let view = ClusterView {
                spec_replicas: desired,
                pods: &views,
                signals: &signals,
            };
            let decided = controller.sync(now, &view);
            if decided != desired {
                scale_changes += 1;
                let up = decided > desired;
                if last_direction.is_some_and(|was_up| was_up != up) {
                    reversals += 1;
                }
                last_direction = Some(up);
                if is_steady(trace, now) {
                    steady_changes += 1;
                }
                if decided > desired && first_scale_up.is_none() {
                    first_scale_up = Some(now);
                }
                scale_to(&mut pods, decided, now, svc.graceful_stop_seconds);
                desired = decided;
            }
        }

        // The headroom source resizes the placeholders' Deployment; fewer go pending ones first.
        if let Some(h) = headroom.as_deref_mut()
            && now + 1e-9 >= next_headroom_sync
        {
            next_headroom_sync += h.sync_period_seconds();
            let view = HeadroomView {
                workload_pods: desired,
                signals: &signals,
            };
            let held = h.placeholders(now, &view) as usize;
            let target = match h.kind() {
                HeadroomKind::Placeholders => held,
                HeadroomKind::SpareMachines => {
                    // Desired capacity = the machines the pods need + the spares; the provisioner
                    // adds what is missing and, as for any machine, removes the ones left empty.
                    let wanted = pods.len().div_ceil(ppn) + held;
                    for _ in nodes.len()..wanted {
                        nodes.push(Machine {
                            created: now,
                            ready: now + prov.node_boot_seconds,
                        });
                    }
                    0
                }
            };
            let total = balloons_bound + balloons_pending.len();
            if target > total {
                balloons_pending.extend(std::iter::repeat_n(now, target - total));
            } else {
                let mut excess = total - target;
                while excess > 0 && balloons_pending.pop_back().is_some() {
                    excess -= 1;
                }
                balloons_bound -= excess;
            }
        }

        if is_steady(trace, now) {
            steady_seconds += STEP;
        }
        pod_seconds += pods.len() as f64 * STEP;
        node_seconds += nodes.len() as f64 * STEP;
        balloon_seconds += balloons_bound as f64 * STEP;
        max_pods = max_pods.max(pods.len() as u32);
        if now + 1e-9 >= next_sample {
            next_sample += sample_every;
            samples.push(Sample {
                t: now,
                offered_qps: offered,
                served_qps: served / STEP,
                desired,
                serving: serving as u32,
                pods: pods.len() as u32,
                nodes: nodes.len() as u32,
                headroom_pods: balloons_bound as u32,
                waiting_for_node: pods
                    .iter()
                    .filter(|p| matches!(p.phase, Phase::Pending { since } if now - since > STEP + 1e-9))
                    .count() as u32,
                backlog,
                p99_seconds: p99_now,
                signals: signals.clone(),
            });
        }
    }
    Ok(Outcome {
        samples,
        summary: Summary {
            duration_seconds: duration,
            pod_hours: pod_seconds / 3600.0,
            node_hours: node_seconds / 3600.0,
            scale_changes,
            steady_changes_per_hour: (steady_seconds > 0.0)
                .then(|| steady_changes as f64 / (steady_seconds / 3600.0)),
            reversals,
            slo_fraction: if served_total > 0.0 {
                within_slo / served_total
            } else {
                1.0
            },
            spike_slo_fraction: (spike_seconds > 0)
                .then(|| f64::from(spike_seconds_within) / f64::from(spike_seconds)),
            failed_searches: failed,
            max_pods,
            first_added_serving_seconds: first_added_serving,
            pods_waited_for_node: waited,
            longest_node_wait_seconds: longest_wait,
            headroom_pod_hours: balloon_seconds / 3600.0,
            machines_churned: churned,
        },
    })
}

/// The signals milvus-scaler would serve after `history` (the last `window_len` seconds).
fn compute_signals(
    history: &VecDeque<Second>,
    window_len: usize,
    serving: usize,
    per_node_in_system: f64,
    rho: f64,
    backlog: f64,
    drain_seconds: f64,
) -> Signals {
    // Rates and quantiles need the window to have filled once, as after a restart of the scaler.
    if history.len() < window_len.min(2) || serving == 0 {
        return Signals::default();
    }
    let n = history.len() as f64;
    let rate = history.iter().map(|s| s.offered).sum::<f64>() / n;
    let inflight = history.iter().map(|s| s.inflight).sum::<f64>() / n;
    let node_max = history.iter().map(|s| s.inflight_node_max).sum::<f64>() / n;
    let slices: Vec<LatencySlice> = history.iter().map(|s| s.latency).collect();
    let waiting_per_node = rho * per_node_in_system;
    Signals {
        search_demand: Some(rate + inflight / drain_seconds),
        search_rate: Some(rate),
        search_inflight: Some(inflight),
        search_inflight_node_max: Some(node_max),
        search_queue_depth: Some(serving as f64 * waiting_per_node + backlog),
        search_latency_p99_seconds: mixture_quantile(&slices, 0.99),
        query_balancing: Some(if history.iter().any(|s| s.balancing) {
            1.0
        } else {
            0.0
        }),
    }
}

/// Whether the offered load has stayed within 5 % of its current level for the last 10 minutes.
fn is_steady(trace: &LoadTrace, now: f64) -> bool {
    if now < 600.0 {
        return false;
    }
    let level = trace.qps_at(now);
    (0..=60).all(|i| {
        let q = trace.qps_at(now - i as f64 * 10.0);
        (q - level).abs() <= 0.05 * level.max(1e-9)
    })
}

/// Adds pending pods, or removes pods like a Deployment scaling its ReplicaSet: those waiting for
/// a machine first, then those not serving yet, then the newest serving ones, which stop
/// gracefully (they keep serving while they hand their segments over).
fn scale_to(pods: &mut Vec<Pod>, desired: u32, now: f64, graceful_stop: f64) {
    let active = |p: &Pod| !matches!(p.phase, Phase::Stopping { .. });
    let mut count = pods.iter().filter(|p| active(p)).count();
    let desired = desired as usize;
    while count < desired {
        pods.push(Pod {
            phase: Phase::Pending { since: now },
            cpu: VecDeque::new(),
        });
        count += 1;
    }
    while count > desired {
        // Lower rank goes first; among equals the newest.
        let rank = |p: &Pod| match p.phase {
            Phase::Pending { since } => (0, -since),
            Phase::Starting { started, .. } => (1, -started),
            Phase::Serving { started } => (2, -started),
            Phase::Stopping { .. } => (3, 0.0),
        };
        let Some(victim) = pods
            .iter()
            .enumerate()
            .filter(|(_, p)| active(p))
            .min_by(|(_, a), (_, b)| {
                rank(a)
                    .partial_cmp(&rank(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, _)| i)
        else {
            break;
        };
        match pods[victim].phase {
            Phase::Serving { .. } => {
                pods[victim].phase = Phase::Stopping {
                    gone_at: now + graceful_stop,
                }
            }
            _ => {
                pods.remove(victim);
            }
        }
        count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Provisioning, ServiceModel, Telemetry};

    fn config() -> SimConfig {
        SimConfig {
            service: ServiceModel {
                node_capacity_qps: 50.0,
                overhead_seconds: 0.01,
                time_to_serve_seconds: 20.0,
                graceful_stop_seconds: 12.0,
                cpu_request_cores: 1.0,
                cpu_idle_cores: 0.05,
                cpu_busy_cores: 1.0,
            },
            provisioning: Provisioning {
                pods_per_node: 2,
                ..Provisioning::default()
            },
            telemetry: Telemetry::default(),
            slo_p99_seconds: 0.5,
        }
    }

    /// Asks for `ceil(signal / target)` replicas, holding on unknown: the HPA's AverageValue
    /// rule without tolerance or stabilisation, enough to exercise the loop.
    struct Proportional {
        signal: &'static str,
        target: f64,
        max: u32,
    }

    impl Controller for Proportional {
        fn sync_period_seconds(&self) -> f64 {
            15.0
        }
        fn sync(&mut self, _now: f64, view: &ClusterView<'_>) -> u32 {
            match view.signals.by_name(self.signal).unwrap() {
                Some(v) => ((v / self.target).ceil() as u32).clamp(1, self.max),
                None => view.spec_replicas,
            }
        }
    }

    fn steady(qps: f64, seconds: f64) -> LoadTrace {
        LoadTrace::Points {
            points: vec![[0.0, qps], [seconds, qps]],
        }
    }

    #[test]
    fn demand_policy_settles_where_the_load_needs_it() {
        // 400 searches/s on 50/s nodes at 70 % target: 400 / 35 = 11.4 -> 12 nodes.
        let mut c = Proportional {
            signal: "search_demand",
            target: 35.0,
            max: 40,
        };
        let out = run(&config(), &steady(400.0, 7200.0), &mut c, 2, 60.0).unwrap();
        let last = out.samples.last().unwrap();
        assert!((12..=13).contains(&last.serving), "{last:?}");
        // Once settled, it stays: no change in the second hour.
        let settled: Vec<u32> = out
            .samples
            .iter()
            .filter(|s| s.t >= 3600.0)
            .map(|s| s.desired)
            .collect();
        assert!(settled.windows(2).all(|w| w[0] == w[1]), "{settled:?}");
        assert!(out.summary.reversals <= 1, "{:?}", out.summary);
        assert_eq!(out.summary.failed_searches, 0.0);
        assert!(out.summary.slo_fraction > 0.9, "{:?}", out.summary);
    }

    #[test]
    fn queue_policy_flaps_at_steady_load() {
        // The waiting queue vanishes whenever capacity suffices, so ceil(queue / target) keeps
        // falling back to one replica and climbing again.
        let mut c = Proportional {
            signal: "search_queue_depth",
            target: 10.0,
            max: 40,
        };
        let out = run(&config(), &steady(400.0, 7200.0), &mut c, 2, 60.0).unwrap();
        let second_hour: Vec<u32> = out
            .samples
            .iter()
            .filter(|s| s.t >= 3600.0)
            .map(|s| s.desired)
            .collect();
        let (low, high) = (
            second_hour.iter().min().unwrap(),
            second_hour.iter().max().unwrap(),
        );
        assert!(*low <= 2 && *high >= 20, "{second_hour:?}");
        assert!(
            out.summary.steady_changes_per_hour.unwrap() > 10.0,
            "{:?}",
            out.summary
        );
    }

    #[test]
    fn new_pods_wait_for_machines_and_empty_machines_go_away() {
        let mut cfg = config();
        cfg.provisioning.pods_per_node = 1;
        cfg.provisioning.unneeded_seconds = 300.0;
        let trace = LoadTrace::Spike {
            quiet_qps: 20.0,
            spike_qps: 200.0,
            quiet_seconds: 300.0,
            ramp_seconds: 30.0,
            spike_seconds: 900.0,
            cooldown_seconds: 1800.0,
        };
        let mut c = Proportional {
            signal: "search_demand",
            target: 35.0,
            max: 40,
        };
        let out = run(&cfg, &trace, &mut c, 1, 10.0).unwrap();
        assert!(out.summary.pods_waited_for_node >= 1, "{:?}", out.summary);
        assert!(out.summary.longest_node_wait_seconds >= cfg.provisioning.node_boot_seconds);
        let peak_nodes = out.samples.iter().map(|s| s.nodes).max().unwrap();
        let last = out.samples.last().unwrap();
        assert!(peak_nodes >= 6, "{peak_nodes}");
        assert!(last.nodes <= 2, "{last:?}");
        // The first added query node served after a machine boot plus its load time.
        let first = out.summary.first_added_serving_seconds.unwrap();
        assert!(
            first >= cfg.provisioning.node_boot_seconds + cfg.service.time_to_serve_seconds,
            "{first}"
        );
    }

    #[test]
    fn a_pod_that_finds_a_free_slot_has_not_waited_for_a_machine() {
        // Two pods per machine and one pod to start: the machine has room for the second pod,
        // which binds at its first chance (the step after the sync that created it).
        let mut c = Proportional {
            signal: "search_demand",
            target: 35.0,
            max: 2,
        };
        let out = run(&config(), &steady(60.0, 600.0), &mut c, 1, 10.0).unwrap();
        assert_eq!(out.samples.last().unwrap().serving, 2);
        assert_eq!(out.summary.pods_waited_for_node, 0, "{:?}", out.summary);
        assert_eq!(out.summary.longest_node_wait_seconds, 0.0);
    }

    /// Asks for `before` replicas until `at`, then `after` until `back`, then `before`.
    struct StepTo {
        before: u32,
        after: u32,
        at: f64,
        back: f64,
    }

    impl Controller for StepTo {
        fn sync_period_seconds(&self) -> f64 {
            15.0
        }
        fn sync(&mut self, now: f64, _view: &ClusterView<'_>) -> u32 {
            if now >= self.at && now < self.back {
                self.after
            } else {
                self.before
            }
        }
    }

    #[test]
    fn query_nodes_take_the_placeholders_room_at_once_and_the_placeholders_pend_again() {
        let mut cfg = config();
        cfg.provisioning.pods_per_node = 1;
        let step = || StepTo {
            before: 1,
            after: 3,
            at: 600.0,
            back: f64::INFINITY,
        };
        let without = run(&cfg, &steady(20.0, 1200.0), &mut step(), 1, 10.0).unwrap();
        assert_eq!(
            without.summary.pods_waited_for_node, 2,
            "{:?}",
            without.summary
        );
        assert!(without.summary.longest_node_wait_seconds >= cfg.provisioning.node_boot_seconds);
        assert_eq!(without.summary.headroom_pod_hours, 0.0);

        let mut two = crate::FixedHeadroom(2);
        let with = run_with_headroom(
            &cfg,
            &steady(20.0, 1200.0),
            &mut step(),
            Some(&mut two),
            1,
            10.0,
        )
        .unwrap();
        assert_eq!(with.summary.pods_waited_for_node, 0, "{:?}", with.summary);
        // Serving within the load time of the scale-up, not a machine boot later.
        let serving_3 = with.samples.iter().find(|s| s.serving == 3).unwrap().t;
        assert!(
            serving_3 <= 600.0 + cfg.service.time_to_serve_seconds + 10.0,
            "{serving_3}"
        );
        // The evicted placeholders got machines of their own: 3 query nodes + 2 placeholders.
        let last = with.samples.last().unwrap();
        assert_eq!((last.nodes, last.headroom_pods), (5, 2), "{last:?}");
        // Two placeholders held room from their machines' boot (~100 s) on, but for the
        // ~100 s their new machines booted after the eviction.
        let held = with.summary.headroom_pod_hours * 3600.0;
        assert!(
            (2.0 * 1200.0 - 4.0 * 110.0..=2.0 * 1200.0 - 4.0 * 95.0).contains(&held),
            "{held}"
        );
    }

    #[test]
    fn machines_added_then_removed_within_30_minutes_count_as_churn() {
        let mut cfg = config();
        cfg.provisioning.pods_per_node = 1;
        cfg.provisioning.unneeded_seconds = 300.0;
        let mut blip = StepTo {
            before: 1,
            after: 3,
            at: 600.0,
            back: 900.0,
        };
        let out = run(&cfg, &steady(20.0, 3600.0), &mut blip, 1, 10.0).unwrap();
        assert_eq!(out.summary.machines_churned, 2, "{:?}", out.summary);
        assert_eq!(out.samples.last().unwrap().nodes, 1);
        // Kept for longer than 30 minutes, the same machines are not churn.
        cfg.provisioning.unneeded_seconds = 1800.0;
        let mut blip = StepTo {
            before: 1,
            after: 3,
            at: 600.0,
            back: 900.0,
        };
        let out = run(&cfg, &steady(20.0, 3600.0), &mut blip, 1, 10.0).unwrap();
        assert_eq!(out.summary.machines_churned, 0, "{:?}", out.summary);
        assert_eq!(out.samples.last().unwrap().nodes, 1);
    }

    #[test]
    fn spare_machines_asked_of_the_provisioner_churn_where_placeholders_do_not() {
        // Today's ASG headroom: one machine beyond what the pods need, by desired capacity. Nothing
        // runs on it, so the provisioner removes it after its unneeded time and it is asked again.
        let mut cfg = config();
        cfg.provisioning.unneeded_seconds = 600.0;
        let hold = |source: &mut dyn HeadroomSource| {
            let mut c = Proportional {
                signal: "search_demand",
                target: 35.0,
                max: 8,
            };
            run_with_headroom(&cfg, &steady(60.0, 7200.0), &mut c, Some(source), 2, 1.0).unwrap()
        };
        let spare = hold(&mut crate::SpareMachines(1));
        // About one removal per unneeded time + boot + a sync: 10 in 2 h; every one churn.
        assert!(spare.summary.machines_churned >= 6, "{:?}", spare.summary);
        assert_eq!(spare.summary.headroom_pod_hours, 0.0);
        // The same room as placeholder pods (one machine's worth) is kept: no churn.
        let ppn = cfg.provisioning.pods_per_node;
        let placeholders = hold(&mut crate::FixedHeadroom(ppn));
        assert_eq!(
            placeholders.summary.machines_churned, 0,
            "{:?}",
            placeholders.summary
        );
    }

    #[test]
    fn no_serving_node_fails_searches_and_signals_turn_unknown() {
        let mut c = Proportional {
            signal: "search_demand",
            target: 35.0,
            max: 4,
        };
        let out = run(&config(), &steady(10.0, 120.0), &mut c, 0, 10.0).unwrap();
        assert!(out.summary.failed_searches > 0.0);
        assert!(
            out.samples
                .iter()
                .all(|s| s.signals.search_demand.is_none())
        );
    }
}
