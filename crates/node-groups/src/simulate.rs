//! Replays a trace of signal values through the planner in simulated time (no sleeping, no
//! API): what `milvus-scaler plan-nodes --simulate TRACE` prints and the benchmark reads.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::group::ResolvedGroup;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeGroupsConfig;
    use crate::group::NodeGroups;

    #[test]
    fn replays_a_spike_and_rejects_bad_traces() {
        let cfg: NodeGroupsConfig = yaml_config::parse(
            r#"
groups:
  - name: q
    asg: a
    milvus: prod
    instance_type: r6i.4xlarge
    pod: { cpu: "4", memory: 28Gi }
    replicas: { signal: search_queue_depth, target_per_pod: 8, min: 2, max: 40 }
    scale_in: true
    scale_in_stabilization: 30s
"#,
            "ng.yaml",
        )
        .unwrap();
        let ng = NodeGroups::resolve(cfg, &["prod"]).unwrap();
        let groups = ng.groups();
        let trace: Trace = serde_json::from_str(
            r#"{"step_seconds": 15, "groups": {"q": {"desired": 1, "min_size": 1, "max_size": 5}},
                "values": {"q": [16, 160, null, 16, 16, 16, 16]}}"#,
        )
        .unwrap();
        let out = run(groups, &trace).unwrap();
        let desired: Vec<u64> = out["groups"]["q"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["desired"].as_u64().unwrap())
            .collect();
        // 16 -> 2 pods, 1 node; 160 -> 20 pods, 7 nodes, capped at 5; unknown holds; scale-in
        // waits until the 7-node plan of t=15 s is older than the 30 s window (t=60 s).
        assert_eq!(desired, vec![1, 5, 5, 5, 1, 1, 1]);
        assert_eq!(out["groups"]["q"][1]["capped"], true);
        let mut bad = trace.clone();
        bad.groups.insert("nope".into(), bad.groups["q"].clone());
        assert!(run(groups, &bad).unwrap_err().contains("nope"));
    }
}
