//! Replays a trace of signal values through the planner in simulated time (no sleeping, no
//! API): what `milvus-scaler plan-nodes --simulate TRACE` prints and the benchmark reads.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ResolvedGroup;
use crate::planner::{AsgState, Stabilizer, plan_group};

/// A trace: per group, the starting Auto Scaling state and one signal value per step
/// (`null` = unknown at that step).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// Simulated seconds between two planning rounds.
    pub step_seconds: f64,
    /// Starting state per group name.
    pub groups: BTreeMap<String, TraceGroup>,
    /// Signal values per group name, one per step.
    pub values: BTreeMap<String, Vec<Option<f64>>>,
}

/// A group's starting Auto Scaling state in a trace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceGroup {
    /// Desired capacity at the start.
    pub desired: u32,
    /// MinSize.
    pub min_size: u32,
    /// MaxSize.
    pub max_size: u32,
}

/// Plans every step of `trace` for each of `groups` named in it, applying each plan (the next
/// step starts from it). Returns `{"step_seconds", "groups": {name: [{t, value, replicas,
/// nodes_needed, desired, capped, reason}]}}`.
pub fn run(groups: &[ResolvedGroup], trace: &Trace) -> Result<Value, String> {
    if !(trace.step_seconds.is_finite() && trace.step_seconds > 0.0) {
        return Err("step_seconds must be a positive number".into());
    }
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = serde_json::Map::new();
    for (name, start) in &trace.groups {
        let group = groups
            .iter()
            .find(|g| &g.config.name == name)
            .ok_or_else(|| format!("trace group {name:?} is not in node_groups.groups"))?;
        let values = trace
            .values
            .get(name)
            .ok_or_else(|| format!("trace has no values for group {name:?}"))?;
        let mut state = AsgState {
            name: group.config.asg.clone(),
            desired: start.desired,
            min_size: start.min_size,
            max_size: start.max_size,
            warm_pool: None,
        };
        let mut stabilizer = Stabilizer::default();
        let mut rows = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let t = trace.step_seconds * i as f64;
            let now = t0 + Duration::from_secs_f64(t);
            let reading = v.ok_or_else(|| "unknown in the trace".to_string());
            let p = plan_group(group, reading, &state, &mut stabilizer, now);
            rows.push(json!({
                "t": t, "value": v, "replicas": p.replicas, "nodes_needed": p.nodes_needed,
                "desired": p.desired, "capped": p.capped, "reason": p.desired_reason,
            }));
            state.desired = p.desired;
        }
        out.insert(name.clone(), Value::Array(rows));
    }
    Ok(json!({ "step_seconds": trace.step_seconds, "groups": out }))
}
