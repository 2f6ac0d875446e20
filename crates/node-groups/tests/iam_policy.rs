//! The shipped IAM policy allows exactly the actions the code calls (`iam::IAM_ACTIONS`), reads
//! on `*` (Auto Scaling Describe* calls have no resource-level permissions) and mutations only
//! on groups tagged for Cluster Autoscaler auto-discovery of this cluster.

use std::collections::BTreeSet;

use node_groups::iam::{IAM_ACTIONS, MUTATING_ACTIONS};
use serde_json::Value;

fn policy() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/iam/milvus-scaler-node-groups-policy.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("Action must be a string or list, found {other}"),
    }
}

#[test]
fn policy_actions_equal_the_actions_the_code_calls() {
    let p = policy();
    assert_eq!(p["Version"], "2012-10-17");
    let statements = p["Statement"].as_array().expect("Statement list");
    let mut in_policy = BTreeSet::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "{s}");
        assert!(
            s.get("NotAction").is_none() && s.get("NotResource").is_none(),
            "{s}"
        );
        for a in actions(s) {
            assert!(
                !a.contains('*'),
                "wildcard action {a}: list actions explicitly"
            );
            assert!(in_policy.insert(a.clone()), "{a} listed twice");
        }
    }
    let in_code: BTreeSet<String> = IAM_ACTIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        in_policy, in_code,
        "policy and node_groups::iam::IAM_ACTIONS drifted apart"
    );
}

#[test]
fn mutations_are_scoped_to_tagged_groups() {
    let p = policy();
    for s in p["Statement"].as_array().unwrap() {
        let acts = actions(s);
        let mutating = acts.iter().any(|a| MUTATING_ACTIONS.contains(&a.as_str()));
        if mutating {
            assert!(
                acts.iter().all(|a| MUTATING_ACTIONS.contains(&a.as_str())),
                "mutating and read actions share a statement: {s}"
            );
            assert_ne!(
                s["Resource"], "*",
                "mutations must name Auto Scaling group ARNs: {s}"
            );
            assert!(
                s["Resource"]
                    .as_str()
                    .unwrap()
                    .starts_with("arn:aws:autoscaling:"),
                "{s}"
            );
            let cond = &s["Condition"]["StringEquals"];
            assert_eq!(
                cond["aws:ResourceTag/k8s.io/cluster-autoscaler/enabled"], "true",
                "{s}"
            );
            assert!(
                cond.as_object().unwrap().keys().any(|k| k
                    .starts_with("aws:ResourceTag/k8s.io/cluster-autoscaler/")
                    && k != "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled"),
                "no cluster-name tag condition: {s}"
            );
        } else {
            assert!(acts.iter().all(|a| a.contains(":Describe")), "{s}");
        }
    }
    for m in MUTATING_ACTIONS {
        assert!(IAM_ACTIONS.contains(m), "{m}");
    }
}
