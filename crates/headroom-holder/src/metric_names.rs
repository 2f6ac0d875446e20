//! The metrics this crate exports (headroom holding's): one constant per name, and [`ALL`].

::metric_names::metric_names! {
    /// Headroom pods the planner wants held (after floor and cap).
    PLANNED_PODS: Gauge = "milvus_scaler_headroom_planned_pods", labels ["holder"],
        help "Headroom pods the headroom planner wants held, after its floor and cap.";
    /// What the holder holds after the round, in its unit (placeholder pods, buffer chunks, or
    /// the groups' summed desired capacity in nodes).
    APPLIED: Gauge = "milvus_scaler_headroom_applied", labels ["holder", "unit"],
        help "What the headroom holder holds after the round: replicas of the placeholder Deployment or CapacityBuffer (pods), or the Auto Scaling groups' desired capacity (nodes).";
    /// What the held object's status reports (placeholder pods that exist, buffer chunks provisioned).
    OBSERVED_PODS: Gauge = "milvus_scaler_headroom_observed_pods", labels ["holder"],
        help "Headroom pods the held object's status reports: status.replicas of the placeholder Deployment or CapacityBuffer.";
    /// The workload's pods the plan was made with (the query nodes' spec.replicas).
    WORKLOAD_PODS: Gauge = "milvus_scaler_headroom_workload_pods", labels ["holder"],
        help "Query-node pods (spec.replicas of the workload Deployment) the headroom plan was made with.";
    /// Writes made, by direction.
    CHANGES: Counter = "milvus_scaler_headroom_changes_total", labels ["holder", "direction"],
        help "Headroom writes made (placeholder or CapacityBuffer replicas, Auto Scaling desired capacity), by direction up or down.";
    /// Rounds that failed, by kind (not_found, forbidden, conflict, api, unreachable, unexpected,
    /// node_groups, workload).
    ERRORS: Counter = "milvus_scaler_headroom_errors_total", labels ["holder", "kind"],
        help "Headroom rounds that failed to read or write, by kind: not_found, forbidden, conflict, api, unreachable, unexpected, node_groups; and workload when the query nodes' replicas could not be read.";
    /// Rounds that wrote nothing because the demand or the workload was unknown.
    BLIND_ROUNDS: Counter = "milvus_scaler_headroom_blind_rounds_total", labels ["holder"],
        help "Headroom rounds that held what was there without writing because search_demand or the workload's replicas were unknown.";
    /// 1 while this replica holds the headroom Lease (and so writes the headroom), 0 while it does
    /// not; absent when leader election is off.
    LEADER: Gauge = "milvus_scaler_headroom_leader", labels ["lease"],
        help "1 while this milvus-scaler replica holds the headroom Lease and is the one that writes the headroom, 0 while another replica (or none) does.";
    /// Failed attempts to acquire or renew the Lease, by kind (forbidden, api, unreachable, timeout).
    LEASE_ERRORS: Counter = "milvus_scaler_headroom_lease_errors_total", labels ["lease", "kind"],
        help "Attempts to acquire or renew the headroom Lease that failed, by kind: forbidden, api, unreachable, timeout (a 409 conflict is not one: that replica is just not the leader).";
}
