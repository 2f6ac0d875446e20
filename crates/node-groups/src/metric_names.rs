//! The metrics this crate exports (node-group sizing's): one constant per name, and [`ALL`].

::metric_names::metric_names! {
    /// The Auto Scaling group's desired capacity as last read or set.
    CURRENT_CAPACITY: Gauge = "milvus_scaler_nodegroup_current_capacity", labels ["group", "asg"],
        help "Desired capacity of the Auto Scaling group, as last read or set.";
    /// The desired capacity the planner computed (after bounds and step limits).
    PLANNED_CAPACITY: Gauge = "milvus_scaler_nodegroup_planned_capacity", labels ["group", "asg"],
        help "Desired capacity the node-group planner computed.";
    /// The group's minimum size.
    MIN_SIZE: Gauge = "milvus_scaler_nodegroup_min_size", labels ["group", "asg"],
        help "Minimum size of the Auto Scaling group.";
    /// The group's maximum size.
    MAX_SIZE: Gauge = "milvus_scaler_nodegroup_max_size", labels ["group", "asg"],
        help "Maximum size of the Auto Scaling group.";
    /// Whether the plan was cut to the group's bounds (1) or not (0).
    CAPPED: Gauge = "milvus_scaler_nodegroup_capped", labels ["group", "asg"],
        help "1 when the planned capacity was cut to the group's min or max size.";
    /// The replica count the plan was made for (from the group's signal).
    PLANNED_REPLICAS: Gauge = "milvus_scaler_nodegroup_planned_replicas", labels ["group"],
        help "Replicas the node-group plan was made for, from the group's signal.";
    /// Desired-capacity changes made, by direction (`up`/`down`).
    CHANGES: Counter = "milvus_scaler_nodegroup_changes_total", labels ["group", "asg", "direction"],
        help "Desired-capacity changes made to the Auto Scaling group, by direction.";
    /// Failed Auto Scaling API calls and groups that could not be planned.
    ERRORS: Counter = "milvus_scaler_nodegroup_errors_total", labels ["group", "asg"],
        help "Node-group rounds that failed: an Auto Scaling call failed or the group could not be planned.";
    /// 1 while this replica holds the node groups' Lease (and so writes their capacity), 0 while
    /// it does not; absent when leader election is off.
    LEADER: Gauge = "milvus_scaler_nodegroup_leader", labels ["lease"],
        help "1 while this milvus-scaler replica holds the node groups' Lease and is the one that writes Auto Scaling desired capacity and warm pools, 0 while another replica (or none) does.";
    /// Failed attempts to acquire or renew the Lease, by kind (forbidden, api, unreachable, timeout).
    LEASE_ERRORS: Counter = "milvus_scaler_nodegroup_lease_errors_total", labels ["lease", "kind"],
        help "Attempts to acquire or renew the node groups' Lease that failed, by kind: forbidden, api, unreachable, timeout (a 409 conflict is not one: that replica is just not the leader).";
}
