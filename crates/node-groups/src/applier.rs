//! The applier: the EC2 Auto Scaling API behind [`AutoScaling`], retries with backoff, dry-run,
//! a minimum interval between changes of one group, writes only by the elected leader
//! ([`Runner::with_leadership`]), and the planning round/loop that ties the signal snapshot, the
//! planner and the API together.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use leader_lease::Leadership;
use leader_lease::lease::until_next_round;
use milvus_signals::{Signal, SignalKey, Snapshot, SnapshotStore};
use thiserror::Error;
// tokio's clock, not std's: a test pauses and advances it to cross `min_change_interval`.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, NodeGroupsConfig, PoolState, RetryConfig, WarmPoolConfig};
use crate::group::{NodeGroups, ResolvedGroup};
use crate::planner::{AsgState, GroupPlan, Stabilizer, WarmPoolState, plan_group};

/// A failed Auto Scaling API call.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{action} failed{}: {message}", if *.retryable { " (retryable)" } else { "" })]
pub struct ApiError {
    /// The API action, e.g. `SetDesiredCapacity`.
    pub action: &'static str,
    /// Throttling, a 5xx answer, a timeout or an unreachable endpoint: worth retrying.
    pub retryable: bool,
    /// What went wrong, with the service's error code when there is one.
    pub message: String,
}

/// The Auto Scaling calls the applier makes. [`SdkAutoScaling`] is the real one; tests add a
/// scripted one for fault injection.
pub trait AutoScaling: Send + Sync {
    /// Current desired capacity and bounds of the named groups (missing names are left out).
    fn describe_groups(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<AsgState>, ApiError>> + Send;
    /// The group's warm pool, if it has one.
    fn describe_warm_pool(
        &self,
        asg: &str,
    ) -> impl Future<Output = Result<Option<WarmPoolState>, ApiError>> + Send;
    /// Sets the group's desired capacity (cooldowns are not honoured: the plan is deliberate).
    fn set_desired_capacity(
        &self,
        asg: &str,
        desired: u32,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Creates or updates the group's warm pool.
    fn put_warm_pool(
        &self,
        asg: &str,
        pool: &WarmPoolConfig,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// Shared clients (tests keep a handle to inspect what was called).
impl<T: AutoScaling> AutoScaling for Arc<T> {
    fn describe_groups(
        &self,
        n: &[String],
    ) -> impl Future<Output = Result<Vec<AsgState>, ApiError>> + Send {
        (**self).describe_groups(n)
    }
    fn describe_warm_pool(
        &self,
        a: &str,
    ) -> impl Future<Output = Result<Option<WarmPoolState>, ApiError>> + Send {
        (**self).describe_warm_pool(a)
    }
    fn set_desired_capacity(
        &self,
        a: &str,
        d: u32,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        (**self).set_desired_capacity(a, d)
    }
    fn put_warm_pool(
        &self,
        a: &str,
        p: &WarmPoolConfig,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        (**self).put_warm_pool(a, p)
    }
}

/// [`AutoScaling`] on aws-sdk-autoscaling with the standard credential chain.
#[derive(Debug, Clone)]
pub struct SdkAutoScaling {
    client: aws_sdk_autoscaling::Client,
}

impl SdkAutoScaling {
    /// A client for `cfg.region` (or the chain's region, else `us-east-1`) and `cfg.endpoint_url`.
    /// The SDK's own retries are off: [`with_retries`] does them, visibly and per configuration.
    pub async fn new(cfg: &NodeGroupsConfig) -> Self {
        use aws_config::meta::region::RegionProviderChain;
        let region =
            RegionProviderChain::first_try(cfg.region.clone().map(aws_config::Region::new))
                .or_default_provider()
                .or_else("us-east-1");
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        let mut builder = aws_sdk_autoscaling::config::Builder::from(&shared)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(url) = &cfg.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self {
            client: aws_sdk_autoscaling::Client::from_conf(builder.build()),
        }
    }
}

fn api_error<E>(action: &'static str, e: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default();
            status >= 500
                || status == 429
                || matches!(
                    code,
                    "Throttling"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                        | "ServiceUnavailable"
                        | "InternalFailure"
                )
        }
        _ => false,
    };
    let message = match &e {
        SdkError::ServiceError(se) => format!(
            "HTTP {} {}: {}",
            se.raw().status().as_u16(),
            se.err().code().unwrap_or("(no error code)"),
            se.err().message().unwrap_or("(no message)")
        ),
        _ => error_chain(&e),
    };
    ApiError {
        action,
        retryable,
        message,
    }
}

/// `e: its source: its source...`, each level once (the SDK's `DisplayErrorContext` also appends
/// a Debug dump, too long for logs and tables).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn to_u32(v: Option<i32>) -> u32 {
    v.unwrap_or(0).max(0) as u32
}

impl AutoScaling for SdkAutoScaling {
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<AsgState>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let resp = self
                .client
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeAutoScalingGroups", e))?;
            for g in resp.auto_scaling_groups() {
                out.push(AsgState {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    desired: to_u32(g.desired_capacity()),
                    min_size: to_u32(g.min_size()),
                    max_size: to_u32(g.max_size()),
                    warm_pool: None,
                });
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_warm_pool(&self, asg: &str) -> Result<Option<WarmPoolState>, ApiError> {
        let resp = self
            .client
            .describe_warm_pool()
            .auto_scaling_group_name(asg)
            .send()
            .await
            .map_err(|e| api_error("DescribeWarmPool", e))?;
        Ok(resp.warm_pool_configuration().map(|w| WarmPoolState {
            min_size: to_u32(w.min_size()),
            // No state in the answer is the API's default, Stopped.
            pool_state: w.pool_state().map_or(Some(PoolState::Stopped), |s| {
                PoolState::from_api(s.as_str())
            }),
        }))
    }

    async fn set_desired_capacity(&self, asg: &str, desired: u32) -> Result<(), ApiError> {
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(asg)
            .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("SetDesiredCapacity", e))
    }

    async fn put_warm_pool(&self, asg: &str, pool: &WarmPoolConfig) -> Result<(), ApiError> {
        self.client
            .put_warm_pool()
            .auto_scaling_group_name(asg)
            .min_size(i32::try_from(pool.min_size).unwrap_or(i32::MAX))
            .pool_state(aws_sdk_autoscaling::types::WarmPoolState::from(
                pool.pool_state.as_str(),
            ))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("PutWarmPool", e))
    }
}

/// Calls `f` until it succeeds, fails with a non-retryable error, or `retry.max_attempts` are
/// used; waits `initial_backoff`, doubling up to `max_backoff`, between attempts.
pub async fn with_retries<T, F, Fut>(
    retry: &RetryConfig,
    target: &str,
    mut f: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut backoff = retry.initial_backoff;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable && attempt < retry.max_attempts => {
                tracing::warn!(target_group = target, attempt, max_attempts = retry.max_attempts,
                    backoff_ms = backoff.as_millis() as u64, error = %e, "Auto Scaling call failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
                attempt += 1;
            }
            Err(e) => {
                return Err(ApiError {
                    message: format!("{} (after {attempt} attempt(s))", e.message),
                    ..e
                });
            }
        }
    }
}

/// What the round did about one group's capacity (or warm pool).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The plan equals the group's state.
    Unchanged,
    /// Dry-run: the change that would be made.
    DryRun {
        /// From.
        from: u32,
        /// To.
        to: u32,
    },
    /// The change was made.
    Changed {
        /// From.
        from: u32,
        /// To.
        to: u32,
    },
    /// Not now: the group changed less than `min_change_interval` ago.
    Deferred(String),
    /// Not the elected leader (another replica holds the node groups' Lease): the change the
    /// leader is expected to make, not made here.
    NotLeader {
        /// From.
        from: u32,
        /// To.
        to: u32,
        /// The Lease, `namespace/name`.
        lease: String,
        /// Its holder as last observed.
        leader: Option<String>,
    },
    /// The API call failed (after retries).
    Failed(String),
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Unchanged => "unchanged".into(),
            Action::DryRun { from, to } => format!("dry-run: would set {from} -> {to}"),
            Action::Changed { from, to } => format!("set {from} -> {to}"),
            Action::Deferred(why) => format!("deferred: {why}"),
            Action::NotLeader {
                from,
                to,
                lease,
                leader,
            } => format!(
                "not the leader (Lease {lease} held by {}): {from} -> {to} left to it",
                leader.as_deref().unwrap_or("nobody yet")
            ),
            Action::Failed(why) => format!("FAILED: {why}"),
        }
    }
}

/// One group's result of a round.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    /// Group name.
    pub group: String,
    /// Auto Scaling group name.
    pub asg: String,
    /// The signal planned from.
    pub signal: Signal,
    /// The plan; `None` when the group's state could not be read.
    pub plan: Option<GroupPlan>,
    /// What happened to the desired capacity.
    pub action: Action,
    /// What happened to the warm pool (`Unchanged` when none is configured).
    pub warm_pool_action: Action,
}

/// The planning loop's state: the groups, the API client, per-group stabilisation history and
/// the time of each group's last change.
pub struct Runner<C> {
    groups: Vec<ResolvedGroup>,
    mode: Mode,
    min_change_interval: Duration,
    retry: RetryConfig,
    client: C,
    stabilizers: HashMap<String, Stabilizer>,
    last_change: HashMap<String, Instant>,
    leadership: Option<Leadership>,
    /// Each group's desired capacity as last read, to see another replica's changes while following.
    seen_desired: HashMap<String, u32>,
}

impl<C: AutoScaling> Runner<C> {
    /// A runner for the validated node groups `ng`, calling `client`.
    pub fn new(ng: &NodeGroups, client: C) -> Self {
        let cfg = ng.config();
        Self {
            groups: ng.groups().to_vec(),
            mode: cfg.mode,
            min_change_interval: cfg.min_change_interval,
            retry: cfg.retry.clone(),
            client,
            stabilizers: HashMap::new(),
            last_change: HashMap::new(),
            leadership: None,
            seen_desired: HashMap::new(),
        }
    }

    /// The same runner, writing (in apply) only while `leadership` says this replica is the
    /// leader; a follower reads, plans and exports as the leader does (its stabilisation windows
    /// stay warm for when it takes over) and reports [`Action::NotLeader`].
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// The election this runner writes under, if any.
    pub fn leadership(&self) -> Option<&Leadership> {
        self.leadership.as_ref()
    }

    /// `Some(NotLeader)` when another replica is to make the change `from -> to`. Asked just before
    /// each write: a leader whose renewals fail stops at its renew deadline.
    fn follower(&self, from: u32, to: u32) -> Option<Action> {
        let l = self.leadership.as_ref().filter(|l| !l.is_leader())?;
        Some(Action::NotLeader {
            from,
            to,
            lease: l.lease().to_string(),
            leader: l.holder(),
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets the `headroom_pods` the group named `group` is planned with from the next round on
    /// (the headroom planner's figure, when headroom is held as Auto Scaling capacity);
    /// `false` when no group has that name.
    pub fn set_headroom_pods(&mut self, group: &str, pods: u32) -> bool {
        match self.groups.iter_mut().find(|g| g.config.name == group) {
            Some(g) => {
                g.config.headroom_pods = pods;
                true
            }
            None => false,
        }
    }

    /// One round: read every group, plan from `snapshot` at `now`, apply when `apply` (else
    /// log the would-be change), export metrics and log every change with its reason.
    pub async fn round(
        &mut self,
        snapshot: &Snapshot,
        now: SystemTime,
        apply: bool,
    ) -> Vec<GroupOutcome> {
        let names: Vec<String> = self.groups.iter().map(|g| g.config.asg.clone()).collect();
        let described = with_retries(&self.retry, "(all groups)", || {
            self.client.describe_groups(&names)
        })
        .await;
        let mut out = Vec::new();
        for i in 0..self.groups.len() {
            let group = self.groups[i].clone();
            let c = &group.config;
            let labels = [("group", c.name.clone()), ("asg", c.asg.clone())];
            let failed = |why: String| {
                metrics::counter!(crate::metric_names::ERRORS, &labels).increment(1);
                tracing::warn!(group = %c.name, asg = %c.asg, error = %why, "node group not planned");
                GroupOutcome {
                    group: c.name.clone(),
                    asg: c.asg.clone(),
                    signal: c.replicas.signal,
                    plan: None,
                    action: Action::Failed(why),
                    warm_pool_action: Action::Unchanged,
                }
            };
            let mut state = match &described {
                Err(e) => {
                    out.push(failed(e.to_string()));
                    continue;
                }
                Ok(states) => match states.iter().find(|s| s.name == c.asg) {
                    Some(s) => s.clone(),
                    None => {
                        out.push(failed(format!("Auto Scaling group {:?} not found", c.asg)));
                        continue;
                    }
                },
            };
            // While another replica writes, a change of desired capacity between two of our reads is
            // most likely its change: counted as a change, so that on taking over we keep
            // min_change_interval from it (as the leader would have) instead of from our own last one.
            let previous = self.seen_desired.insert(c.asg.clone(), state.desired);
            if self.leadership.as_ref().is_some_and(|l| !l.is_leader())
                && previous.is_some_and(|d| d != state.desired)
            {
                self.last_change.insert(c.asg.clone(), Instant::now());
            }
            let mut warm_pool_action = Action::Unchanged;
            if c.warm_pool.is_some() {
                match with_retries(&self.retry, &c.asg, || {
                    self.client.describe_warm_pool(&c.asg)
                })
                .await
                {
                    Ok(w) => state.warm_pool = w,
                    Err(e) => {
                        metrics::counter!(crate::metric_names::ERRORS, &labels).increment(1);
                        warm_pool_action = Action::Failed(e.to_string());
                    }
                }
            }
            let reading = snapshot
                .reading(&c.milvus, &SignalKey::instance(c.replicas.signal), now)
                .map(|r| r.value)
                .map_err(|e| e.to_string());
            let stabilizer = self.stabilizers.entry(c.name.clone()).or_default();
            let plan = plan_group(&group, reading, &state, stabilizer, now);
            export_plan(&plan);
            let action = self.apply_capacity(&plan, apply).await;
            if matches!(warm_pool_action, Action::Unchanged)
                && let Some(want) = &plan.warm_pool
            {
                warm_pool_action = self
                    .apply_warm_pool(&plan, want, state.warm_pool.as_ref(), apply)
                    .await;
            }
            out.push(GroupOutcome {
                group: c.name.clone(),
                asg: c.asg.clone(),
                signal: c.replicas.signal,
                plan: Some(plan),
                action,
                warm_pool_action,
            });
        }
        out
    }

    async fn apply_capacity(&mut self, plan: &GroupPlan, apply: bool) -> Action {
        if !plan.changes_capacity() {
            return Action::Unchanged;
        }
        let (from, to) = (plan.current, plan.desired);
        let direction = if to > from { "up" } else { "down" };
        if !apply {
            tracing::info!(group = %plan.group, asg = %plan.asg, from, to, reason = %plan.desired_reason,
                "dry-run: would set desired capacity");
            return Action::DryRun { from, to };
        }
        if let Some(not_leader) = self.follower(from, to) {
            tracing::info!(group = %plan.group, asg = %plan.asg, from, to, reason = %plan.desired_reason,
                leader = self.leadership.as_ref().and_then(Leadership::holder).as_deref().unwrap_or("(none)"),
                "not the node groups leader: desired capacity left to the leader");
            return not_leader;
        }
        if let Some(at) = self.last_change.get(&plan.asg) {
            let since = at.elapsed();
            if since < self.min_change_interval {
                let why = format!(
                    "last change {:.0?} ago, min_change_interval is {:?}",
                    since, self.min_change_interval
                );
                tracing::info!(group = %plan.group, asg = %plan.asg, from, to, %why, "change deferred");
                return Action::Deferred(why);
            }
        }
        let labels = [("group", plan.group.clone()), ("asg", plan.asg.clone())];
        match with_retries(&self.retry, &plan.asg, || {
            self.client.set_desired_capacity(&plan.asg, to)
        })
        .await
        {
            Ok(()) => {
                self.last_change.insert(plan.asg.clone(), Instant::now());
                metrics::counter!(crate::metric_names::CHANGES,
                    "group" => plan.group.clone(), "asg" => plan.asg.clone(), "direction" => direction)
                .increment(1);
                metrics::gauge!(crate::metric_names::CURRENT_CAPACITY, &labels).set(f64::from(to));
                tracing::info!(group = %plan.group, asg = %plan.asg, from, to, direction,
                    reason = %plan.desired_reason, "set desired capacity");
                Action::Changed { from, to }
            }
            Err(e) => {
                metrics::counter!(crate::metric_names::ERRORS, &labels).increment(1);
                tracing::warn!(group = %plan.group, asg = %plan.asg, from, to, error = %e, "setting desired capacity failed");
                Action::Failed(e.to_string())
            }
        }
    }

    async fn apply_warm_pool(
        &mut self,
        plan: &GroupPlan,
        want: &WarmPoolConfig,
        have: Option<&WarmPoolState>,
        apply: bool,
    ) -> Action {
        let from = have.map(|w| w.min_size).unwrap_or(0);
        if have
            .is_some_and(|w| w.min_size == want.min_size && w.pool_state == Some(want.pool_state))
        {
            return Action::Unchanged;
        }
        if !apply {
            tracing::info!(group = %plan.group, asg = %plan.asg, from, to = want.min_size,
                reason = %plan.warm_pool_reason, "dry-run: would put warm pool");
            return Action::DryRun {
                from,
                to: want.min_size,
            };
        }
        if let Some(not_leader) = self.follower(from, want.min_size) {
            tracing::info!(group = %plan.group, asg = %plan.asg, from, to = want.min_size,
                reason = %plan.warm_pool_reason, "not the node groups leader: warm pool left to the leader");
            return not_leader;
        }
        match with_retries(&self.retry, &plan.asg, || {
            self.client.put_warm_pool(&plan.asg, want)
        })
        .await
        {
            Ok(()) => {
                tracing::info!(group = %plan.group, asg = %plan.asg, from, to = want.min_size,
                    reason = %plan.warm_pool_reason, "put warm pool");
                Action::Changed {
                    from,
                    to: want.min_size,
                }
            }
            Err(e) => {
                metrics::counter!(crate::metric_names::ERRORS,
                    "group" => plan.group.clone(), "asg" => plan.asg.clone())
                .increment(1);
                Action::Failed(e.to_string())
            }
        }
    }
}

/// Sets the planned/current/bounds/capped gauges of one plan.
pub fn export_plan(plan: &GroupPlan) {
    let labels = [("group", plan.group.clone()), ("asg", plan.asg.clone())];
    metrics::gauge!(crate::metric_names::CURRENT_CAPACITY, &labels).set(f64::from(plan.current));
    metrics::gauge!(crate::metric_names::PLANNED_CAPACITY, &labels).set(f64::from(plan.desired));
    metrics::gauge!(crate::metric_names::MIN_SIZE, &labels).set(f64::from(plan.min_size));
    metrics::gauge!(crate::metric_names::MAX_SIZE, &labels).set(f64::from(plan.max_size));
    metrics::gauge!(crate::metric_names::CAPPED, &labels).set(if plan.capped { 1.0 } else { 0.0 });
    if let Some(r) = plan.replicas {
        metrics::gauge!(crate::metric_names::PLANNED_REPLICAS, "group" => plan.group.clone())
            .set(f64::from(r));
    }
}

/// Runs a round every `interval` until `stop` is cancelled (also mid-round: a round waiting on
/// a slow API call is dropped). Errors are reported (logs, metrics) and the loop goes on. With a
/// [`Runner::with_leadership`], a follower that becomes the leader runs its round at once.
pub async fn run_loop<C: AutoScaling>(
    mut runner: Runner<C>,
    store: Arc<SnapshotStore>,
    interval: Duration,
    stop: CancellationToken,
) {
    let apply = runner.mode() == Mode::Apply;
    let mut leadership = runner.leadership().cloned();
    loop {
        let snapshot = store.load();
        let round = runner.round(&snapshot, SystemTime::now(), apply);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = round => {}
        }
        let follower = apply && leadership.as_ref().is_some_and(|l| !l.is_leader());
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = until_next_round(leadership.as_mut(), follower, interval) => {}
        }
    }
}

/// The round as a table, one row per group, then each number's reason.
pub fn render(outcomes: &[GroupOutcome]) -> String {
    let header = [
        "GROUP",
        "ASG",
        "SIGNAL",
        "VALUE",
        "REPLICAS",
        "PODS/NODE",
        "NEEDED",
        "CURRENT",
        "MIN",
        "MAX",
        "PLANNED",
        "CAPPED",
        "ACTION",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for o in outcomes {
        let p = o.plan.as_ref();
        rows.push(vec![
            o.group.clone(),
            o.asg.clone(),
            o.signal.to_string(),
            p.and_then(|p| p.signal_value)
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "unknown".into()),
            opt(p.and_then(|p| p.replicas)),
            opt(p.map(|p| p.pods_per_node)),
            opt(p.and_then(|p| p.nodes_needed)),
            opt(p.map(|p| p.current)),
            opt(p.map(|p| p.min_size)),
            opt(p.map(|p| p.max_size)),
            opt(p.map(|p| p.desired)),
            p.map(|p| if p.capped { "yes" } else { "no" })
                .unwrap_or("-")
                .to_string(),
            o.action.describe(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    for o in outcomes {
        let _ = writeln!(s, "\n{} ({}):", o.group, o.asg);
        match &o.plan {
            Some(p) => {
                let _ = writeln!(s, "  replicas:  {}", p.replicas_reason);
                let _ = writeln!(s, "  pods/node: {}", p.pods_per_node_reason);
                let _ = writeln!(s, "  needed:    {}", p.nodes_reason);
                let _ = writeln!(s, "  planned:   {}", p.desired_reason);
                if !p.warm_pool_reason.is_empty() {
                    let _ = writeln!(
                        s,
                        "  warm pool: {} ({})",
                        p.warm_pool_reason,
                        o.warm_pool_action.describe()
                    );
                }
            }
            None => {
                let _ = writeln!(s, "  not planned: {}", o.action.describe());
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    //! The round against a scripted in-memory Auto Scaling (fault injection: throttling and
    //! 5xx cannot be provoked on demand from moto); the e2e tests use real moto.
    use super::*;
    use leader_lease::lease::{Candidate, LeaderPublisher, LeaseSettings, Next, TokioClock};
    use milvus_signals::{InstanceSnapshot, Reading, Signal};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Scripted {
        groups: Mutex<HashMap<String, AsgState>>,
        fail_next: Mutex<VecDeque<ApiError>>,
        calls: Mutex<Vec<String>>,
        /// Every call (after being counted) waits forever: an API that never answers.
        hang: std::sync::atomic::AtomicBool,
    }

    impl Scripted {
        async fn take_failure(&self, action: &str) -> Result<(), ApiError> {
            self.calls.lock().unwrap().push(action.to_string());
            if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::future::pending::<ApiError>().await);
            }
            match self.fail_next.lock().unwrap().pop_front() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn desired(&self, asg: &str) -> u32 {
            self.groups.lock().unwrap()[asg].desired
        }
        fn count(&self, action: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| *c == action)
                .count()
        }
    }

    impl AutoScaling for Scripted {
        async fn describe_groups(&self, names: &[String]) -> Result<Vec<AsgState>, ApiError> {
            self.take_failure("DescribeAutoScalingGroups").await?;
            let g = self.groups.lock().unwrap();
            Ok(names.iter().filter_map(|n| g.get(n).cloned()).collect())
        }
        async fn describe_warm_pool(&self, asg: &str) -> Result<Option<WarmPoolState>, ApiError> {
            self.take_failure("DescribeWarmPool").await?;
            Ok(self.groups.lock().unwrap()[asg].warm_pool.clone())
        }
        async fn set_desired_capacity(&self, asg: &str, desired: u32) -> Result<(), ApiError> {
            self.take_failure("SetDesiredCapacity").await?;
            self.groups.lock().unwrap().get_mut(asg).unwrap().desired = desired;
            Ok(())
        }
        async fn put_warm_pool(&self, asg: &str, pool: &WarmPoolConfig) -> Result<(), ApiError> {
            self.take_failure("PutWarmPool").await?;
            self.groups.lock().unwrap().get_mut(asg).unwrap().warm_pool = Some(WarmPoolState {
                min_size: pool.min_size,
                pool_state: Some(pool.pool_state),
            });
            Ok(())
        }
    }

    const CFG: &str = r#"
interval: 15s
mode: apply
min_change_interval: 1h
retry: { max_attempts: 3, initial_backoff: 1ms, max_backoff: 2ms }
groups:
  - name: querynodes
    asg: asg-q
    milvus: prod
    instance_type: r6i.2xlarge
    pod: { cpu: "2", memory: 8Gi }
    replicas: { signal: search_queue_depth, target_per_pod: 8, min: 1, max: 40 }
    warm_pool: { min_size: 2 }
"#;

    fn setup(desired: u32, max: u32) -> (Runner<Arc<Scripted>>, Arc<Scripted>) {
        let cfg: NodeGroupsConfig = yaml_config::parse(CFG, "ng.yaml").unwrap();
        let ng = NodeGroups::resolve(cfg, &["prod"]).unwrap();
        let api = Arc::new(Scripted::default());
        api.groups.lock().unwrap().insert(
            "asg-q".into(),
            AsgState {
                name: "asg-q".into(),
                desired,
                min_size: 0,
                max_size: max,
                warm_pool: None,
            },
        );
        (Runner::new(&ng, api.clone()), api)
    }

    fn snapshot(value: f64, at: SystemTime) -> Snapshot {
        let store = SnapshotStore::default();
        let mut i =
            InstanceSnapshot::pending("prod", "default", "test".into(), Duration::from_secs(10));
        i.round_at = Some(at);
        i.values.insert(
            SignalKey::instance(Signal::SearchQueueDepth),
            Ok(Reading {
                value,
                sampled_at: at,
                window: None,
            }),
        );
        store.publish(i);
        (*store.load()).clone()
    }

    fn throttled() -> ApiError {
        ApiError {
            action: "SetDesiredCapacity",
            retryable: true,
            message: "HTTP 400 Throttling: Rate exceeded".into(),
        }
    }

    #[tokio::test]
    async fn applies_plan_with_retries_and_respects_min_interval() {
        let (mut r, api) = setup(1, 10);
        let now = SystemTime::now();
        // 72 queued / 8 = 9 pods, 3 per node -> 3 nodes. Describe and SetDesiredCapacity are each
        // throttled once and succeed on retry.
        api.fail_next.lock().unwrap().extend([throttled()]);
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 1, to: 3 }, "{out:?}");
        assert_eq!(api.desired("asg-q"), 3);
        assert_eq!(api.count("DescribeAutoScalingGroups"), 2);
        assert_eq!(out[0].warm_pool_action, Action::Changed { from: 0, to: 2 });
        // More demand within min_change_interval: deferred, untouched.
        let out = r.round(&snapshot(160.0, now), now, true).await;
        assert!(
            matches!(out[0].action, Action::Deferred(_)),
            "{:?}",
            out[0].action
        );
        assert_eq!(api.desired("asg-q"), 3);
        assert_eq!(out[0].warm_pool_action, Action::Unchanged);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_held_for_min_change_interval_then_allowed() {
        let (mut r, api) = setup(1, 10);
        let now = SystemTime::now();
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 1, to: 3 });
        // More demand (160 / 8 = 20 pods -> 7 nodes) one second before the hour is up: held.
        tokio::time::advance(Duration::from_secs(3600 - 1)).await;
        let out = r.round(&snapshot(160.0, now), now, true).await;
        match &out[0].action {
            Action::Deferred(why) => assert!(why.contains("min_change_interval is 3600s"), "{why}"),
            a => panic!("expected deferred, got {a:?}"),
        }
        assert_eq!(api.desired("asg-q"), 3);
        // Once the hour is up: allowed, and the hold starts again from this change.
        tokio::time::advance(Duration::from_secs(1)).await;
        let out = r.round(&snapshot(160.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 3, to: 7 }, "{out:?}");
        assert_eq!(api.desired("asg-q"), 7);
        assert_eq!(api.count("SetDesiredCapacity"), 2);
        let out = r.round(&snapshot(400.0, now), now, true).await;
        assert!(matches!(out[0].action, Action::Deferred(_)), "{out:?}");
    }

    #[tokio::test]
    async fn dry_run_calls_no_mutating_api() {
        let (mut r, api) = setup(1, 10);
        let now = SystemTime::now();
        let out = r.round(&snapshot(72.0, now), now, false).await;
        assert_eq!(out[0].action, Action::DryRun { from: 1, to: 3 });
        assert!(matches!(out[0].warm_pool_action, Action::DryRun { .. }));
        assert_eq!(api.desired("asg-q"), 1);
        assert_eq!(
            api.count("SetDesiredCapacity") + api.count("PutWarmPool"),
            0
        );
        assert!(render(&out).contains("dry-run: would set 1 -> 3"));
    }

    #[tokio::test]
    async fn failures_are_reported_not_fatal() {
        let (mut r, api) = setup(1, 10);
        let now = SystemTime::now();
        // 5xx on every attempt of Describe: reported after max_attempts, nothing planned.
        let e500 = ApiError {
            action: "DescribeAutoScalingGroups",
            retryable: true,
            message: "HTTP 500".into(),
        };
        api.fail_next
            .lock()
            .unwrap()
            .extend([e500.clone(), e500.clone(), e500]);
        let out = r.round(&snapshot(72.0, now), now, true).await;
        match &out[0].action {
            Action::Failed(why) => assert!(why.contains("after 3 attempt(s)"), "{why}"),
            a => panic!("{a:?}"),
        }
        assert_eq!(api.count("DescribeAutoScalingGroups"), 3);
        // A non-retryable error is not retried.
        api.calls.lock().unwrap().clear();
        api.fail_next.lock().unwrap().push_back(ApiError {
            action: "DescribeAutoScalingGroups",
            retryable: false,
            message: "AccessDenied".into(),
        });
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert!(matches!(out[0].action, Action::Failed(_)));
        assert_eq!(api.count("DescribeAutoScalingGroups"), 1);
        // A missing group is reported by name.
        api.groups.lock().unwrap().clear();
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(
            out[0].action,
            Action::Failed("Auto Scaling group \"asg-q\" not found".into())
        );
        assert!(render(&out).contains("not found"));
    }

    #[tokio::test]
    async fn capped_at_max_size_and_unknown_signal_holds() {
        let (mut r, api) = setup(1, 2);
        let now = SystemTime::now();
        let out = r.round(&snapshot(800.0, now), now, true).await;
        let p = out[0].plan.as_ref().unwrap();
        assert_eq!((p.desired, p.capped), (2, true));
        assert_eq!(api.desired("asg-q"), 2);
        assert!(render(&out).contains("capped at the group's MaxSize 2"));
        // Stale signal (sampled 60 s ago): no change.
        let (mut r, api) = setup(1, 10);
        let out = r
            .round(&snapshot(800.0, now - Duration::from_secs(60)), now, true)
            .await;
        assert_eq!(out[0].action, Action::Unchanged);
        assert_eq!(api.count("SetDesiredCapacity"), 0);
        assert!(
            out[0]
                .plan
                .as_ref()
                .unwrap()
                .desired_reason
                .contains("no change")
        );
    }

    /// The loop behind `milvus-scaler serve`: a round at once, then one per interval, and
    /// nothing more once the token is cancelled (paused clock: the interval passes instantly).
    #[tokio::test(start_paused = true)]
    async fn run_loop_rounds_every_interval_and_stops_when_cancelled() {
        let (r, api) = setup(1, 10);
        let store = Arc::new(SnapshotStore::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(r, store, Duration::from_secs(15), stop.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 1);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 2);
        stop.cancel();
        // Mid-sleep (14 s of the interval left): ends at once, not after the interval.
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("run_loop still running 1 ms after the token was cancelled")
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 2);
    }

    /// An election as crates/leader-lease's elector publishes it, without an API server: the
    /// pure candidate is handed the Lease it would have read and written.
    struct Election {
        publisher: LeaderPublisher,
        us: Candidate,
    }

    fn lease_settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: "milvus-scaler".into(),
            name: crate::DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    impl Election {
        /// Replica `replica-a`'s election, nothing observed yet (not the leader).
        fn new() -> (Self, Leadership) {
            let settings = lease_settings("replica-a");
            let (publisher, leadership) =
                leader_lease::lease::leadership(settings.lease_label(), Arc::new(TokioClock));
            let us = Candidate::new(settings);
            (Self { publisher, us }, leadership)
        }

        /// `replica-b` created the Lease; we read it and wait.
        fn held_by_b(&mut self) {
            let mut b = Candidate::new(lease_settings("replica-b"));
            let Next::Create(mut lease) = b.observe(None, Instant::now(), SystemTime::now()) else {
                panic!("no lease: b creates it")
            };
            lease.metadata.resource_version = Some("1".into());
            let next = self
                .us
                .observe(Some(&lease), Instant::now(), SystemTime::now());
            assert!(matches!(next, Next::Wait { .. }), "{next:?}");
            self.publisher.publish(&self.us);
        }

        /// We create the Lease (the API server would answer it at resourceVersion 1).
        fn take(&mut self) {
            let Next::Create(mut lease) = self.us.observe(None, Instant::now(), SystemTime::now())
            else {
                panic!("no lease: we create it")
            };
            lease.metadata.resource_version = Some("1".into());
            self.us.written(&lease, Instant::now());
            self.publisher.publish(&self.us);
        }
    }

    /// Of two replicas in apply, only the Lease's holder writes; the other reads, plans and
    /// exports the same plan and says who leads. (The node groups' own election, not the
    /// headroom's: `milvus-scaler serve` runs this loop when no headroom `asg` holder does.)
    #[tokio::test(start_paused = true)]
    async fn only_the_leader_writes_capacity_and_warm_pool() {
        let (r, api) = setup(1, 10);
        let (mut election, leadership) = Election::new();
        let mut r = r.with_leadership(leadership);
        let now = SystemTime::now();
        // Nothing read yet: not the leader, holder unknown.
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(
            out[0].action,
            Action::NotLeader {
                from: 1,
                to: 3,
                lease: "milvus-scaler/milvus-scaler-node-groups".into(),
                leader: None
            }
        );
        election.held_by_b();
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(
            out[0].plan.as_ref().unwrap().desired,
            3,
            "the follower plans"
        );
        assert!(
            matches!(&out[0].action, Action::NotLeader { leader: Some(b), .. } if b == "replica-b"),
            "{out:?}"
        );
        assert!(
            matches!(
                &out[0].warm_pool_action,
                Action::NotLeader { from: 0, to: 2, .. }
            ),
            "{out:?}"
        );
        assert!(
            render(&out).contains(
                "not the leader (Lease milvus-scaler/milvus-scaler-node-groups held by replica-b): 1 -> 3 left to it"
            ),
            "{}",
            render(&out)
        );
        assert_eq!(
            api.count("DescribeAutoScalingGroups"),
            2,
            "the follower reads"
        );
        assert_eq!(api.count("DescribeWarmPool"), 2);
        assert_eq!(
            api.count("SetDesiredCapacity") + api.count("PutWarmPool"),
            0,
            "a follower writes nothing"
        );
        assert_eq!(api.desired("asg-q"), 1);

        // b's lease expires unrenewed and we take it: the same plan is now written.
        election.take();
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 1, to: 3 });
        assert_eq!(out[0].warm_pool_action, Action::Changed { from: 0, to: 2 });
        assert_eq!(api.desired("asg-q"), 3);

        // No renewal for the renew deadline (10s): we stop writing before anyone may take over.
        tokio::time::advance(Duration::from_secs(10)).await;
        let out = r.round(&snapshot(160.0, now), now, true).await;
        assert!(
            matches!(out[0].action, Action::NotLeader { from: 3, to: 7, .. }),
            "{out:?}"
        );
        assert_eq!(api.count("SetDesiredCapacity"), 1);
        // Dry-run stays dry-run whoever leads.
        let out = r.round(&snapshot(160.0, now), now, false).await;
        assert_eq!(out[0].action, Action::DryRun { from: 3, to: 7 });
    }

    /// A follower counts the leader's changes it reads: on taking over it keeps
    /// `min_change_interval` (1h here) from the old leader's last change, not only from its own.
    #[tokio::test(start_paused = true)]
    async fn a_new_leader_keeps_min_change_interval_from_the_old_leaders_change() {
        let (r, api) = setup(1, 10);
        let (mut election, leadership) = Election::new();
        election.held_by_b();
        let mut r = r.with_leadership(leadership);
        let now = SystemTime::now();
        r.round(&snapshot(72.0, now), now, true).await;
        // b sets 3 (what both plan), then b goes and we take over.
        api.groups.lock().unwrap().get_mut("asg-q").unwrap().desired = 3;
        let out = r.round(&snapshot(72.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Unchanged);
        election.take();
        let out = r.round(&snapshot(160.0, now), now, true).await;
        match &out[0].action {
            Action::Deferred(why) => assert!(why.contains("min_change_interval is 3600s"), "{why}"),
            a => panic!("expected deferred, got {a:?}"),
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        election.take();
        let out = r.round(&snapshot(160.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 3, to: 7 });

        // A leader's own reads never count: only the changes it makes do (the existing hold).
        let (r, api) = setup(1, 10);
        let (mut election, leadership) = Election::new();
        election.take();
        let mut r = r.with_leadership(leadership);
        r.round(&snapshot(3.0, now), now, true).await;
        api.groups.lock().unwrap().get_mut("asg-q").unwrap().desired = 2;
        let out = r.round(&snapshot(160.0, now), now, true).await;
        assert_eq!(out[0].action, Action::Changed { from: 2, to: 7 });
    }

    /// A follower's loop waits out its interval, unless it becomes the leader: then it runs its
    /// round at once instead of up to an interval later.
    #[tokio::test(start_paused = true)]
    async fn run_loop_rounds_at_once_when_it_becomes_the_leader() {
        let (r, api) = setup(1, 10);
        let (mut election, leadership) = Election::new();
        election.held_by_b();
        let store = Arc::new(SnapshotStore::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(
            r.with_leadership(leadership),
            store,
            Duration::from_secs(15),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 1, "mid-interval");
        election.take();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            api.count("DescribeAutoScalingGroups"),
            2,
            "a round at once on becoming the leader"
        );
        // Leading: the interval again (no round per renewal).
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(api.count("DescribeAutoScalingGroups"), 3);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn run_loop_stops_mid_round_when_cancelled() {
        let (r, api) = setup(1, 10);
        api.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(
            r,
            Arc::new(SnapshotStore::default()),
            Duration::from_secs(15),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            api.count("DescribeAutoScalingGroups"),
            1,
            "the round is waiting on the API"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("run_loop still waiting on a hung API call after the token was cancelled")
            .unwrap();
    }
}
