//! The election's requests on kube-rs ([`Elector`]): each attempt is a GET of the Lease, then
//! (as [`crate::lease::Candidate`] decides) a create or a resourceVersion-guarded replace; the loop
//! ([`Elector::run`]) attempts every `retry_period` and releases the lease when it is cancelled.
//! A 409 is "not leader this round"; other failures are logged, counted and retried, and cost the
//! leader its leadership only at its renew deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use shutdown_signal::CancellationToken;
use thiserror::Error;

use crate::FIELD_MANAGER;
use crate::lease::{
    Candidate, Clock, LeaderPublisher, Leadership, LeaseSettings, Next, leadership,
};

/// What an election is for: how its logs name what the leader writes, the metrics it exports
/// and where the RBAC it needs is shipped. Each loop that elects a writer has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose {
    /// What the leader writes, for logs: `headroom`, `node groups`.
    pub what: &'static str,
    /// The gauge set to 1 while this replica leads, 0 while it does not (label `lease`).
    pub leader_metric: &'static str,
    /// The counter of failed attempts (labels `lease`, `kind`).
    pub errors_metric: &'static str,
    /// The manifest granting the Lease's RBAC, named in a 403's hint.
    pub rbac_manifest: &'static str,
}

/// How long the release on shutdown may take (serve waits 5 s for all its tasks).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// A failed attempt. (A 409 is not one: it is [`Role::Follower`].)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// 403: the ServiceAccount may not do this to Leases.
    #[error("Lease {lease}: {verb} forbidden (HTTP 403: {message}); {}", rbac_hint(.lease, .verb, .rbac_manifest))]
    Forbidden {
        /// `namespace/name`.
        lease: String,
        /// The manifest that grants the Lease's RBAC ([`Purpose::rbac_manifest`]).
        rbac_manifest: &'static str,
        /// `get`, `create` or `update`.
        verb: &'static str,
        /// What the API server said.
        message: String,
    },
    /// Any other answer of the API server (401, 404 on a replace, 422, 429, 5xx...).
    #[error(
        "Lease {lease}: {verb} failed: the API server answered HTTP {code} {reason}: {message}"
    )]
    Api {
        /// `namespace/name`.
        lease: String,
        /// The verb.
        verb: &'static str,
        /// HTTP status.
        code: u16,
        /// The `Status` reason.
        reason: String,
        /// What the API server said.
        message: String,
    },
    /// No answer, or not a Lease.
    #[error("Lease {lease}: {verb} failed: {message}")]
    Unreachable {
        /// `namespace/name`.
        lease: String,
        /// The verb.
        verb: &'static str,
        /// The client's error.
        message: String,
    },
    /// The attempt took longer than the renew deadline.
    #[error("Lease {lease}: no answer within {after:?} (the renew deadline)")]
    Timeout {
        /// `namespace/name`.
        lease: String,
        /// The time allowed.
        after: Duration,
    },
}

/// What to grant for a 403 of `verb` on the Lease `lease` (`namespace/name`), shipped in `manifest`.
fn rbac_hint(lease: &str, verb: &str, manifest: &str) -> String {
    let (namespace, name) = lease.split_once('/').unwrap_or(("", lease));
    let names = if verb == "create" {
        // The API server authorizes a create before the object has a name.
        "(create cannot be restricted by resourceNames)".to_string()
    } else {
        format!("with resourceNames [{name:?}]")
    };
    format!(
        "grant the ServiceAccount RBAC verb {verb:?} on resource \"leases\" of apiGroup \"coordination.k8s.io\" {names} in namespace {namespace:?} ({manifest}: get, update and create on leases)"
    )
}

impl LeaseError {
    /// A short label for the `kind` of the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseError::Forbidden { .. } => "forbidden",
            LeaseError::Api { .. } => "api",
            LeaseError::Unreachable { .. } => "unreachable",
            LeaseError::Timeout { .. } => "timeout",
        }
    }
}

/// What an attempt left us as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We hold the lease (created, taken or renewed this attempt).
    Leader,
    /// Someone else holds it, or our write conflicted (`holder`: as last observed).
    Follower {
        /// The holder, if any is known.
        holder: Option<String>,
    },
}

/// An answer to a write: ours, or someone wrote first (409).
enum Written {
    Ok(Box<Lease>),
    Conflict,
}

/// The election of one replica on one Lease.
pub struct Elector {
    api: Api<Lease>,
    candidate: Candidate,
    clock: Arc<dyn Clock>,
    publisher: LeaderPublisher,
    leadership: Leadership,
    lease: String,
    purpose: Purpose,
}

impl Elector {
    /// An elector for `purpose`, with `settings` on `client`, judging time by `clock`.
    pub fn new(
        client: kube::Client,
        settings: LeaseSettings,
        clock: Arc<dyn Clock>,
        purpose: Purpose,
    ) -> Self {
        let lease = settings.lease_label();
        let (publisher, leadership) = leadership(lease.clone(), clock.clone());
        Self {
            api: Api::namespaced(client, &settings.namespace),
            candidate: Candidate::new(settings),
            clock,
            publisher,
            leadership,
            lease,
            purpose,
        }
    }

    /// The view of this election the loop asks before each write.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Its settings.
    pub fn settings(&self) -> &LeaseSettings {
        self.candidate.settings()
    }

    fn map_err(&self, verb: &'static str, e: kube::Error) -> LeaseError {
        let lease = self.lease.clone();
        match e {
            kube::Error::Api(status) if status.code == 403 => LeaseError::Forbidden {
                lease,
                rbac_manifest: self.purpose.rbac_manifest,
                verb,
                message: status.message.clone(),
            },
            kube::Error::Api(status) => LeaseError::Api {
                lease,
                verb,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => LeaseError::Unreachable {
                lease,
                verb,
                message: other.to_string(),
            },
        }
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }

    async fn write(&self, verb: &'static str, lease: &Lease) -> Result<Written, LeaseError> {
        let pp = Self::post_params();
        let answer = if verb == "create" {
            self.api.create(&pp, lease).await
        } else {
            self.api
                .replace(&self.candidate.settings().name, &pp, lease)
                .await
        };
        match answer {
            Ok(l) => Ok(Written::Ok(Box::new(l))),
            // 409 on create: AlreadyExists (another created it first); on replace: Conflict
            // (the resourceVersion moved). Either way someone else wrote it since our read.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
            Err(e) => Err(self.map_err(verb, e)),
        }
    }

    /// One attempt to acquire or renew: a GET, then the write the candidate decides on.
    pub async fn step(&mut self) -> Result<Role, LeaseError> {
        let result = self.attempt().await;
        self.publisher.publish(&self.candidate);
        result
    }

    async fn attempt(&mut self) -> Result<Role, LeaseError> {
        let name = self.candidate.settings().name.clone();
        let read = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.map_err("get", e))?;
        let next = self
            .candidate
            .observe(read.as_ref(), self.clock.now(), SystemTime::now());
        let (verb, lease) = match next {
            Next::Wait { holder, .. } => {
                return Ok(Role::Follower {
                    holder: Some(holder),
                });
            }
            Next::Create(l) => ("create", l),
            Next::Replace(l) => ("update", l),
        };
        let sent_at = self.clock.now();
        match self.write(verb, &lease).await? {
            Written::Ok(answer) => {
                self.candidate.written(&answer, sent_at);
                Ok(if self.candidate.is_leader(self.clock.now()) {
                    Role::Leader
                } else {
                    Role::Follower {
                        holder: self.candidate.holder().map(str::to_string),
                    }
                })
            }
            Written::Conflict => {
                self.candidate.conflicted();
                Ok(Role::Follower {
                    holder: self.candidate.holder().map(str::to_string),
                })
            }
        }
    }

    /// Stops acting as leader, and if we hold the lease, releases it (one replace, no read).
    /// `Ok(true)`: released; `Ok(false)`: nothing to release, or someone wrote it first.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        let release = self.candidate.release(SystemTime::now());
        self.publisher.publish(&self.candidate);
        let Some(lease) = release else {
            return Ok(false);
        };
        let sent_at = self.clock.now();
        let written = self.write("update", &lease).await;
        let released = match written? {
            Written::Ok(answer) => {
                self.candidate.written(&answer, sent_at);
                true
            }
            Written::Conflict => false,
        };
        self.publisher.publish(&self.candidate);
        Ok(released)
    }

    fn export(&self) {
        let leader = self.leadership.is_leader();
        metrics::gauge!(self.purpose.leader_metric, "lease" => self.lease.clone()).set(if leader {
            1.0
        } else {
            0.0
        });
    }

    /// Attempts every `retry_period` (each bounded by the renew deadline) until `stop` is
    /// cancelled, then releases the lease if held. Logs each change of leader; exports
    /// [`Purpose::leader_metric`] and counts failed attempts in [`Purpose::errors_metric`].
    pub async fn run(mut self, stop: CancellationToken) {
        let s = self.candidate.settings().clone();
        let what = self.purpose.what;
        tracing::info!(lease = %self.lease, identity = %s.identity, lease_duration = ?s.lease_duration, renew_deadline = ?s.renew_deadline, retry_period = ?s.retry_period, "{what} leader election on");
        let mut last: Option<Role> = None;
        // A failure that repeats every retry_period (RBAC missing, API server down) is logged at
        // warn once, then at debug until something else happens; the counter counts each one.
        let mut last_error: Option<LeaseError> = None;
        loop {
            let attempt = tokio::time::timeout(s.renew_deadline, self.step());
            let outcome = tokio::select! {
                r = attempt => r,
                () = stop.cancelled() => break,
            };
            let outcome = match outcome {
                Ok(r) => r,
                Err(_) => {
                    // The dropped attempt changed nothing; still publish what the deadline says.
                    self.publisher.publish(&self.candidate);
                    Err(LeaseError::Timeout {
                        lease: self.lease.clone(),
                        after: s.renew_deadline,
                    })
                }
            };
            match outcome {
                Ok(role) => {
                    if last.as_ref() != Some(&role) {
                        match &role {
                            Role::Leader => {
                                tracing::info!(lease = %self.lease, identity = %s.identity, "{what} leader: this replica writes the {what}")
                            }
                            Role::Follower { holder } => {
                                tracing::info!(lease = %self.lease, identity = %s.identity, holder = holder.as_deref().unwrap_or("(none)"), "not the {what} leader: another replica writes the {what}")
                            }
                        }
                    }
                    last = Some(role);
                    last_error = None;
                }
                Err(e) => {
                    metrics::counter!(self.purpose.errors_metric, "lease" => self.lease.clone(), "kind" => e.kind())
                        .increment(1);
                    let leader = self.leadership.is_leader();
                    if last_error.as_ref() == Some(&e) {
                        tracing::debug!(error = %e, leader, "{what} leader election: attempt failed again");
                    } else {
                        tracing::warn!(error = %e, leader, "{what} leader election: attempt failed");
                    }
                    last_error = Some(e);
                    if !leader && last == Some(Role::Leader) {
                        tracing::warn!(lease = %self.lease, "{what} leader: lost (no renewal within the renew deadline)");
                        last = None;
                    }
                }
            }
            self.export();
            tokio::select! {
                () = tokio::time::sleep(s.retry_period) => {}
                () = stop.cancelled() => break,
            }
        }
        match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.lease, "{what} leader: lease released");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "{what} leader: releasing the lease failed; another replica takes over when it expires")
            }
            Err(_) => {
                tracing::warn!(lease = %self.lease, "{what} leader: releasing the lease timed out; another replica takes over when it expires")
            }
        }
        self.export();
    }
}
