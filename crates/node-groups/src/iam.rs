//! The AWS API actions this crate calls: exactly what its IAM policy must allow.
//! `manifests/iam/milvus-scaler-node-groups-policy.json` is tested against this list.

/// Every AWS action the applier calls, as IAM names them.
pub const IAM_ACTIONS: &[&str] = &[
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeWarmPool",
    "autoscaling:PutWarmPool",
    "autoscaling:SetDesiredCapacity",
];

/// The actions that change a group (scoped by tag conditions in the policy).
pub const MUTATING_ACTIONS: &[&str] =
    &["autoscaling:PutWarmPool", "autoscaling:SetDesiredCapacity"];
