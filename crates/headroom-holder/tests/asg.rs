//! The `asg` holder: headroom pods become the node groups' `headroom_pods` and node-groups' own
//! round sets desired capacity. EC2 Auto Scaling cannot run here: the Auto Scaling API is a FAKE
//! in memory (node-groups' `AutoScaling` trait), recording every SetDesiredCapacity; the real
//! SDK path is covered by node-groups' moto e2e tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use headroom_holder::asg::AsgHolder;
use headroom_holder::{AsgRef, Demand, HeadroomHolder, Held, HoldError};
use milvus_signals::{InstanceSnapshot, Reading, Signal, SignalKey, SnapshotStore};
use node_groups::applier::{ApiError, AutoScaling, Runner};
use node_groups::config::WarmPoolConfig;
use node_groups::planner::WarmPoolState;
use node_groups::{AsgState, NodeGroups, NodeGroupsConfig};

/// The FAKE Auto Scaling API (see the module comment).
#[derive(Default)]
struct FakeAutoScaling {
    groups: Mutex<HashMap<String, AsgState>>,
    sets: Mutex<Vec<(String, u32)>>,
    fail_sets: Mutex<bool>,
}

impl AutoScaling for FakeAutoScaling {
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<AsgState>, ApiError> {
        let g = self.groups.lock().unwrap();
        Ok(names.iter().filter_map(|n| g.get(n).cloned()).collect())
    }
    async fn describe_warm_pool(&self, _asg: &str) -> Result<Option<WarmPoolState>, ApiError> {
        Ok(None)
    }
    async fn set_desired_capacity(&self, asg: &str, desired: u32) -> Result<(), ApiError> {
        if *self.fail_sets.lock().unwrap() {
            return Err(ApiError {
                action: "SetDesiredCapacity",
                retryable: false,
                message: "HTTP 400 ValidationError: fake refusal".into(),
            });
        }
        self.sets.lock().unwrap().push((asg.to_string(), desired));
        self.groups.lock().unwrap().get_mut(asg).unwrap().desired = desired;
        Ok(())
    }
    async fn put_warm_pool(&self, _asg: &str, _pool: &WarmPoolConfig) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Three per-zone query-node groups (one 5-CPU pod per r6id.2xlarge), each planning a third of
/// the HPA's 60 nq/s per pod, and an index-node group the headroom does not touch.
fn setup() -> (Runner<Arc<FakeAutoScaling>>, Arc<FakeAutoScaling>) {
    let mut text = String::from("mode: apply\nmin_change_interval: 0s\ngroups:\n");
    for z in ["a", "b", "c"] {
        text.push_str(&format!(
            "  - {{name: querynodes-{z}, asg: asg-q-{z}, milvus: prod, instance_type: r6id.2xlarge, pod: {{cpu: '5', memory: 29Gi}}, replicas: {{signal: search_demand, target_per_pod: 180, min: 1, max: 7}}}}\n"
        ));
    }
    text.push_str("  - {name: indexnodes, asg: asg-i, milvus: prod, instance_type: c6i.4xlarge, pod: {cpu: '8', memory: 16Gi}, replicas: {signal: index_pending_builds, target_per_pod: 1, min: 0, max: 3}}\n");
    let cfg: NodeGroupsConfig = yaml_config::from_str(&text).unwrap();
    let ng = NodeGroups::resolve(cfg, &["prod"]).unwrap();
    let api = Arc::new(FakeAutoScaling::default());
    for asg in ["asg-q-a", "asg-q-b", "asg-q-c", "asg-i"] {
        api.groups.lock().unwrap().insert(
            asg.into(),
            AsgState {
                name: asg.into(),
                desired: 1,
                min_size: 0,
                max_size: 10,
                warm_pool: None,
            },
        );
    }
    (Runner::new(&ng, api.clone()), api)
}

fn store(search_demand: Option<f64>) -> Arc<SnapshotStore> {
    let store = Arc::new(SnapshotStore::default());
    let now = SystemTime::now();
    let mut i = InstanceSnapshot::pending("prod", "milvus", "test".into(), Duration::from_secs(60));
    i.round_at = Some(now);
    let mut put = |signal, value| {
        i.values.insert(
            SignalKey::instance(signal),
            Ok(Reading {
                value,
                sampled_at: now,
                window: None,
            }),
        );
    };
    if let Some(v) = search_demand {
        put(Signal::SearchDemand, v);
    }
    put(Signal::IndexPendingBuilds, 0.0);
    store.publish(i);
    store
}

fn querynodes() -> AsgRef {
    AsgRef {
        groups: vec![
            "querynodes-a".into(),
            "querynodes-b".into(),
            "querynodes-c".into(),
        ],
    }
}

#[tokio::test]
async fn headroom_pods_are_split_over_the_groups_and_become_desired_capacity() {
    let (runner, api) = setup();
    let mut h = AsgHolder::new(runner, &querynodes(), store(Some(420.0)));
    assert_eq!(h.per_group(4), 2, "4 pods over 3 zones: 2 each, rounded up");
    assert_eq!(h.unit(), "nodes");
    // 420 nq/s: ceil(420 / 180) = 3 pods per zone; + 1 headroom pod each = 4 nodes per zone.
    let held = h.hold(Demand::Pods(3), true).await.unwrap();
    assert_eq!(
        held,
        Held::Changed {
            from: Some(3),
            to: 12,
            observed: None
        }
    );
    let mut sets = api.sets.lock().unwrap().clone();
    sets.sort();
    assert_eq!(
        sets,
        vec![
            ("asg-q-a".to_string(), 4),
            ("asg-q-b".to_string(), 4),
            ("asg-q-c".to_string(), 4),
        ],
        "the index group (no pending builds, scale_in off) is left alone"
    );
    // Same headroom again: no write.
    let held = h.hold(Demand::Pods(3), true).await.unwrap();
    assert!(matches!(held, Held::Unchanged { held: 12, .. }), "{held:?}");
    assert_eq!(api.sets.lock().unwrap().len(), 3);
    // Dry-run of more headroom: nothing written.
    let held = h.hold(Demand::Pods(6), false).await.unwrap();
    assert_eq!(
        held,
        Held::DryRun {
            from: Some(12),
            to: 15
        }
    );
    assert_eq!(api.sets.lock().unwrap().len(), 3);
    assert_eq!(h.last_outcomes().len(), 4, "every group's outcome is kept");
}

#[tokio::test]
async fn unknown_demand_writes_nothing() {
    let (runner, api) = setup();
    let mut h = AsgHolder::new(runner, &querynodes(), store(None));
    let held = h.hold(Demand::Unknown, true).await.unwrap();
    assert_eq!(held, Held::Blind);
    assert!(api.sets.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_group_is_a_typed_error_naming_it() {
    let (runner, api) = setup();
    *api.fail_sets.lock().unwrap() = true;
    let mut h = AsgHolder::new(runner, &querynodes(), store(Some(420.0)));
    let e = h.hold(Demand::Pods(3), true).await.unwrap_err();
    assert!(matches!(e, HoldError::NodeGroups { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("querynodes-a: SetDesiredCapacity failed") && text.contains("fake refusal"),
        "{text}"
    );
}
