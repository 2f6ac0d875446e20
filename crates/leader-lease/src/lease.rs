//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several milvus-scaler
//! replicas only one writes (the headroom, the node groups' capacity). This module is the pure
//! part: [`Candidate`] decides from the Lease it is shown and the time it is handed;
//! [`crate::elector`] makes the requests.
//!
//! The rules are those of client-go's `leaderelection` package:
//! - a candidate takes the lease when there is none (create), when its holder is empty (released),
//!   when it already holds it, or when it has expired;
//! - expiry is judged on the candidate's own monotonic clock, by how long the **resourceVersion**
//!   it observed has stayed unchanged (`leaseDurationSeconds` of it). The `renewTime` written by
//!   another machine is never compared with our clock: clocks of two machines may disagree, the
//!   rate at which each one's time passes is what they share;
//! - every write is a replace carrying the resourceVersion read, so two candidates that both see an
//!   expired lease cannot both take it: the API server answers the second with 409 Conflict, which
//!   means "not leader this round", never a failure;
//! - the leader renews every `retry_period` and stops acting as leader `renew_deadline` after its
//!   last successful renewal (counted from when it *sent* that renewal), which is before anyone
//!   else may take over (`renew_deadline < lease_duration`);
//! - on shutdown the leader releases the lease (empty holder, `leaseDurationSeconds: 1`) so another
//!   replica takes over at its next attempt instead of after a full `lease_duration`.
//!
//! Why not a crate: `kube-leader-election` is pinned to an older kube than the workspace's; and
//! `kube-lease-manager` judges expiry by comparing wall-clock times (`SystemTime`) written by other
//! machines, does not guard its writes with the resourceVersion read, and has no renew deadline
//! after which a leader that cannot renew stops acting.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::sync::watch;
use tokio::time::Instant;
use yaml_config::Invalid;

use crate::config::LeaderElectionConfig;

/// The monotonic time the election judges expiry and deadlines by, handed in so tests can move it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// tokio's clock (a test that pauses tokio's time moves it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The election's settings, resolved for this process ([`resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity, written as `holderIdentity` (the pod's name).
    pub identity: String,
    /// `leaseDurationSeconds` written, and how long an unchanged foreign lease is respected.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader keeps acting as leader.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// `namespace/name`, for logs and the metrics' `lease` label.
    pub fn lease_label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Where the ServiceAccount's namespace is mounted in a pod.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the process knows of where it runs, read once ([`PodEnv::from_process`]) and handed to
/// [`resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEnv {
    /// Whether it runs in a pod (`KUBERNETES_SERVICE_HOST` is set, as kube's in-cluster
    /// configuration requires).
    pub in_pod: bool,
    /// `POD_NAME` (the downward API's `metadata.name`).
    pub pod_name: Option<String>,
    /// The host name (`HOSTNAME`, else the kernel's): a pod's is its name.
    pub hostname: Option<String>,
    /// The pod's namespace, from [`NAMESPACE_FILE`].
    pub namespace: Option<String>,
}

impl PodEnv {
    /// Reads the environment variables and files above.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let file = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Self {
            in_pod: var("KUBERNETES_SERVICE_HOST").is_some(),
            pod_name: var("POD_NAME"),
            hostname: var("HOSTNAME").or_else(|| file("/proc/sys/kernel/hostname")),
            namespace: file(NAMESPACE_FILE),
        }
    }
}

/// The election this process takes part in, or `None` when it is off: `enabled` unset means on
/// exactly when `apply` and in a pod; the Lease is `lease_name`, else `default_name` (the
/// section's). Errors name the key below the section (`headroom`, `node_groups`).
pub fn resolve(
    cfg: &LeaderElectionConfig,
    default_name: &str,
    apply: bool,
    env: &PodEnv,
) -> Result<Option<LeaseSettings>, Invalid> {
    if !cfg.enabled.unwrap_or(apply && env.in_pod) {
        return Ok(None);
    }
    let Some(namespace) = cfg.namespace.clone().or_else(|| env.namespace.clone()) else {
        return Err(Invalid::new(
            "leader_election.namespace",
            format!(
                "unset, and no pod namespace to default to ({NAMESPACE_FILE} is not mounted): set it, or leader_election.enabled: false"
            ),
        ));
    };
    let Some(identity) = env.pod_name.clone().or_else(|| env.hostname.clone()) else {
        return Err(Invalid::new(
            "leader_election",
            "no identity for this replica: POD_NAME is unset (give it with the downward API, metadata.name) and so is the host name",
        ));
    };
    Ok(Some(LeaseSettings {
        namespace,
        name: cfg.lease_name_or(default_name).to_string(),
        identity,
        lease_duration: cfg.lease_duration,
        renew_deadline: cfg.renew_deadline,
        retry_period: cfg.retry_period,
    }))
}

/// What to do after a read of the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// There is no Lease: create this one.
    Create(Lease),
    /// Take or renew: replace the Lease with this one (its metadata is the one read, with its
    /// resourceVersion, so a change in between is a 409).
    Replace(Lease),
    /// Another replica's lease is live: wait.
    Wait {
        /// Its holder.
        holder: String,
        /// How long until it expires on our clock, if it stays unchanged.
        expires_in: Duration,
    },
}

/// The lease as last read or written, and since when (our clock) that resourceVersion is seen.
#[derive(Debug, Clone)]
struct Observed {
    lease: Lease,
    since: Instant,
}

impl Observed {
    fn resource_version(&self) -> Option<&str> {
        self.lease.metadata.resource_version.as_deref()
    }

    fn holder(&self) -> Option<&str> {
        holder_of(&self.lease)
    }
}

/// The holder of `lease`; an empty `holderIdentity` is none (a released lease).
fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// One replica's side of the election: what it observed of the Lease and when it last renewed.
#[derive(Debug, Clone)]
pub struct Candidate {
    settings: LeaseSettings,
    observed: Option<Observed>,
    /// When our last successful write as holder was sent.
    renewed_at: Option<Instant>,
}

fn micro_time(wall: SystemTime) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::try_from(wall)
        .ok()
        .map(MicroTime)
}

impl Candidate {
    /// A candidate that has observed nothing yet.
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            observed: None,
            renewed_at: None,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn duration_seconds(&self) -> i32 {
        // Validated at load to be whole seconds that fit.
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// The spec that makes us the holder at `wall`, after `previous` (the lease read, if any).
    fn our_spec(&self, previous: Option<&LeaseSpec>, wall: SystemTime) -> LeaseSpec {
        let ours = previous
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.settings.identity);
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: if ours {
                previous
                    .and_then(|s| s.acquire_time.clone())
                    .or_else(|| micro_time(wall))
            } else {
                micro_time(wall)
            },
            renew_time: micro_time(wall),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..LeaseSpec::default()
        }
    }

    /// Reads `read` (the Lease as the API server answered at `now`; `None`: it does not exist) and
    /// says what to write. Call with the time taken *after* the answer arrived: a renewal the
    /// answer shows happened before it. `wall` is only written (`renewTime`, `acquireTime`).
    pub fn observe(&mut self, read: Option<&Lease>, now: Instant, wall: SystemTime) -> Next {
        let Some(lease) = read else {
            // Deleted under us (or never made): nobody is leader until it is created again.
            self.observed = None;
            self.renewed_at = None;
            return Next::Create(Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.our_spec(None, wall)),
            });
        };
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version() != lease.metadata.resource_version.as_deref());
        if changed {
            self.observed = Some(Observed {
                lease: lease.clone(),
                since: now,
            });
        }
        let holder = holder_of(lease);
        if holder != Some(self.settings.identity.as_str()) {
            // Released, or taken by another: we are not the leader, whatever we renewed last.
            self.renewed_at = None;
        }
        if let (Some(holder), Some(o)) = (holder, &self.observed)
            && holder != self.settings.identity
        {
            let duration = lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(self.settings.lease_duration, Duration::from_secs);
            let expires = o.since + duration;
            if now < expires {
                return Next::Wait {
                    holder: holder.to_string(),
                    expires_in: expires - now,
                };
            }
        }
        Next::Replace(Lease {
            metadata: lease.metadata.clone(),
            spec: Some(self.our_spec(lease.spec.as_ref(), wall)),
        })
    }

    /// Our create or replace, sent at `sent_at`, succeeded with `answer`.
    pub fn written(&mut self, answer: &Lease, sent_at: Instant) {
        let ours = holder_of(answer) == Some(self.settings.identity.as_str());
        self.renewed_at = ours.then_some(sent_at);
        self.observed = Some(Observed {
            lease: answer.clone(),
            since: sent_at,
        });
    }

    /// Our write was answered 409 (someone wrote the Lease since we read it, or created it first):
    /// not leader this round; the next read sees what changed.
    pub fn conflicted(&mut self) {
        self.renewed_at = None;
    }

    /// Whether we act as leader at `now`: we hold the lease and renewed it less than
    /// `renew_deadline` ago. A failed write other than a 409 changes nothing: the deadline decides.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until().is_some_and(|until| now < until)
    }

    /// Until when we act as leader if nothing is renewed (`None`: not leader).
    pub fn leader_until(&self) -> Option<Instant> {
        self.renewed_at.map(|t| t + self.settings.renew_deadline)
    }

    /// The holder of the lease as last observed (`None`: none, or nothing observed).
    pub fn holder(&self) -> Option<&str> {
        self.observed.as_ref().and_then(Observed::holder)
    }

    /// Stops acting as leader at once, and if the lease observed is ours, the replace that
    /// releases it: holder empty, `leaseDurationSeconds: 1`, transitions kept (client-go's release).
    pub fn release(&mut self, wall: SystemTime) -> Option<Lease> {
        self.renewed_at = None;
        let o = self.observed.as_ref()?;
        if o.holder() != Some(self.settings.identity.as_str()) {
            return None;
        }
        Some(Lease {
            metadata: o.lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: micro_time(wall),
                renew_time: micro_time(wall),
                lease_transitions: o.lease.spec.as_ref().and_then(|s| s.lease_transitions),
                ..LeaseSpec::default()
            }),
        })
    }
}

/// What the elector last published: until when we lead, and who holds the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// Until when this replica acts as leader (`None`: it does not).
    pub leader_until: Option<Instant>,
    /// The holder as last observed.
    pub holder: Option<String>,
}

/// A loop's view of the election: cheap to clone, judged on the elector's clock at
/// each call (a leader whose elector stopped renewing stops being one at its deadline).
#[derive(Clone)]
pub struct Leadership {
    state: watch::Receiver<LeaderState>,
    clock: Arc<dyn Clock>,
    lease: String,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.lease)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// The elector's side of a [`Leadership`]: where it publishes.
#[derive(Debug)]
pub struct LeaderPublisher {
    state: watch::Sender<LeaderState>,
}

impl LeaderPublisher {
    /// Publishes what `c` says now.
    pub fn publish(&self, c: &Candidate) {
        let next = LeaderState {
            leader_until: c.leader_until(),
            holder: c.holder().map(str::to_string),
        };
        self.state.send_if_modified(|s| {
            let modified = *s != next;
            *s = next;
            modified
        });
    }
}

/// A publisher and the view it feeds, for the lease `lease` (`namespace/name`), on `clock`.
pub fn leadership(lease: String, clock: Arc<dyn Clock>) -> (LeaderPublisher, Leadership) {
    let (tx, rx) = watch::channel(LeaderState::default());
    (
        LeaderPublisher { state: tx },
        Leadership {
            state: rx,
            clock,
            lease,
        },
    )
}

impl Leadership {
    /// Whether this replica is the leader now.
    pub fn is_leader(&self) -> bool {
        let now = self.clock.now();
        self.state
            .borrow()
            .leader_until
            .is_some_and(|until| now < until)
    }

    /// The holder of the lease as last observed (`None`: none, or not read yet).
    pub fn holder(&self) -> Option<String> {
        self.state.borrow().holder.clone()
    }

    /// The Lease, `namespace/name`.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// Returns once this replica is the leader (at once if it is); pending forever when the
    /// elector is gone.
    pub async fn became_leader(&mut self) {
        loop {
            if self.is_leader() {
                return;
            }
            if self.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The wait between two rounds of a loop that writes only as leader: `interval`, cut short when
/// `follower` (its last round did not write for want of leadership) and `leadership` then says
/// this replica leads, so the new leader writes at once rather than up to an interval later.
pub async fn until_next_round(
    leadership: Option<&mut Leadership>,
    follower: bool,
    interval: Duration,
) {
    let gained = async {
        match leadership {
            Some(l) if follower => l.became_leader().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(interval) => {}
        () = gained => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const HEADROOM: &str = "milvus-scaler-headroom";

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: "milvus-scaler".into(),
            name: "milvus-scaler-headroom".into(),
            identity: identity.into(),
            lease_duration: 15 * S,
            renew_deadline: 10 * S,
            retry_period: 2 * S,
        }
    }

    /// The lease as an API server would answer: `spec` at resourceVersion `rv`.
    fn stored(spec: &LeaseSpec, rv: u32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("milvus-scaler-headroom".into()),
                namespace: Some("milvus-scaler".into()),
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        }
    }

    fn foreign(holder: &str, renew_time: SystemTime) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: micro_time(renew_time),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    /// Accepts `next`'s write as the API server would (at `rv`), for `c`, sent at `at`.
    fn accept(c: &mut Candidate, next: Next, rv: u32, at: Instant) -> Lease {
        let (Next::Create(l) | Next::Replace(l)) = next else {
            panic!("expected a write, got {next:?}");
        };
        let answer = stored(l.spec.as_ref().unwrap(), rv);
        c.written(&answer, at);
        answer
    }

    /// `c` creates the absent lease at `at` (resourceVersion 1).
    fn create(c: &mut Candidate, at: Instant, wall: SystemTime) -> Lease {
        let next = c.observe(None, at, wall);
        accept(c, next, 1, at)
    }

    #[test]
    fn creates_the_lease_when_absent_and_leads_until_the_renew_deadline() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        assert!(!a.is_leader(t0));
        let next = a.observe(None, t0, wall);
        let Next::Create(l) = &next else {
            panic!("{next:?}")
        };
        assert_eq!(l.metadata.name.as_deref(), Some("milvus-scaler-headroom"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("milvus-scaler"));
        assert_eq!(l.metadata.resource_version, None, "a create carries none");
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, micro_time(wall));
        assert!(!a.is_leader(t0), "not before the write succeeded");
        accept(&mut a, next, 1, t0);
        assert!(a.is_leader(t0));
        assert_eq!(a.holder(), Some("a"));
        assert!(a.is_leader(t0 + 10 * S - Duration::from_millis(1)));
        assert!(
            !a.is_leader(t0 + 10 * S),
            "no renewal for renew_deadline: not leader"
        );
    }

    #[test]
    fn a_live_foreign_lease_is_respected_while_its_resource_version_moves() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut b = Candidate::new(settings("b"));
        // a renews every 2s: each read shows a new resourceVersion; b waits, for a minute.
        for i in 0..30u32 {
            let now = t0 + 2 * i * S;
            let next = b.observe(Some(&stored(&foreign("a", wall), 10 + i)), now, wall);
            assert_eq!(
                next,
                Next::Wait {
                    holder: "a".into(),
                    expires_in: 15 * S
                },
                "round {i}"
            );
            assert!(!b.is_leader(now));
            assert_eq!(b.holder(), Some("a"));
        }
    }

    #[test]
    fn takes_over_once_the_observed_resource_version_is_unchanged_for_the_lease_duration() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        // The renewTime written is an hour old on our wall clock: it is never compared with our
        // clock (the writer's clock may be off), so b still waits a full duration from first sight.
        let lease = stored(&foreign("a", wall - 3600 * S), 42);
        let mut b = Candidate::new(settings("b"));
        assert!(matches!(
            b.observe(Some(&lease), t0, wall),
            Next::Wait { expires_in, .. } if expires_in == 15 * S
        ));
        assert!(matches!(
            b.observe(Some(&lease), t0 + 14 * S, wall),
            Next::Wait { expires_in, .. } if expires_in == S
        ));
        let later = wall + 15 * S;
        let next = b.observe(Some(&lease), t0 + 15 * S, later);
        let Next::Replace(l) = &next else {
            panic!("{next:?}")
        };
        assert_eq!(
            l.metadata.resource_version.as_deref(),
            Some("42"),
            "the replace carries the resourceVersion read"
        );
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(5), "a new holder: one more");
        assert_eq!(spec.acquire_time, micro_time(later));
        accept(&mut b, next, 43, t0 + 15 * S);
        assert!(b.is_leader(t0 + 15 * S));

        // A renewal seen just before expiry restarts the count.
        let mut c = Candidate::new(settings("c"));
        c.observe(Some(&stored(&foreign("a", wall), 7)), t0, wall);
        c.observe(Some(&stored(&foreign("a", wall), 8)), t0 + 14 * S, wall);
        assert!(matches!(
            c.observe(Some(&stored(&foreign("a", wall), 8)), t0 + 20 * S, wall),
            Next::Wait { expires_in, .. } if expires_in == 9 * S
        ));
    }

    #[test]
    fn the_holder_renews_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        let first = create(&mut a, t0, wall);
        let next = a.observe(Some(&first), t0 + 2 * S, wall + 2 * S);
        let Next::Replace(l) = &next else {
            panic!("{next:?}")
        };
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.acquire_time, micro_time(wall));
        assert_eq!(spec.renew_time, micro_time(wall + 2 * S));
        assert_eq!(spec.lease_transitions, Some(0));
        accept(&mut a, next, 2, t0 + 2 * S);
        assert!(a.is_leader(t0 + 11 * S), "renewed at 2s: leads until 12s");
        assert!(!a.is_leader(t0 + 12 * S));

        // A restarted process with the same identity takes its own lease back at once.
        let mut again = Candidate::new(settings("a"));
        assert!(matches!(
            again.observe(Some(&first), t0 + 3 * S, wall),
            Next::Replace(_)
        ));
    }

    #[test]
    fn a_conflict_makes_the_leader_a_follower_at_once() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        let first = create(&mut a, t0, wall);
        assert!(a.is_leader(t0 + S));
        assert!(matches!(
            a.observe(Some(&first), t0 + 2 * S, wall),
            Next::Replace(_)
        ));
        a.conflicted();
        assert!(!a.is_leader(t0 + 2 * S), "409: not leader this round");
        // The next read shows why: another holds it, and a waits its full duration.
        let taken = stored(&foreign("b", wall), 5);
        assert!(matches!(
            a.observe(Some(&taken), t0 + 4 * S, wall),
            Next::Wait { .. }
        ));
        assert_eq!(a.holder(), Some("b"));
    }

    #[test]
    fn a_lease_taken_or_deleted_under_the_leader_ends_its_leadership() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        create(&mut a, t0, wall);
        a.observe(Some(&stored(&foreign("b", wall), 9)), t0 + S, wall);
        assert!(!a.is_leader(t0 + S));

        let mut a = Candidate::new(settings("a"));
        create(&mut a, t0, wall);
        assert!(matches!(a.observe(None, t0 + S, wall), Next::Create(_)));
        assert!(!a.is_leader(t0 + S), "no lease: nobody leads");
    }

    #[test]
    fn failed_renewals_keep_leadership_only_until_the_deadline() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        create(&mut a, t0, wall);
        // The API server is unreachable from 2s on: no read, no write, no call on `a` at all.
        for secs in [2u32, 4, 6, 8] {
            assert!(a.is_leader(t0 + secs * S), "{secs}s");
        }
        assert!(!a.is_leader(t0 + 10 * S));
        // Others take over only at 15s after they last saw a change: 5s after `a` stopped.
        let mut b = Candidate::new(settings("b"));
        let seen = stored(a.observed.as_ref().unwrap().lease.spec.as_ref().unwrap(), 1);
        assert!(matches!(
            b.observe(Some(&seen), t0, wall),
            Next::Wait { .. }
        ));
        assert!(matches!(
            b.observe(Some(&seen), t0 + 14 * S, wall),
            Next::Wait { .. }
        ));
        assert!(matches!(
            b.observe(Some(&seen), t0 + 15 * S, wall),
            Next::Replace(_)
        ));
    }

    #[test]
    fn release_empties_the_holder_and_another_takes_over_at_once() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Candidate::new(settings("a"));
        let held = create(&mut a, t0, wall);
        let mut b = Candidate::new(settings("b"));
        assert!(matches!(
            b.observe(Some(&held), t0, wall),
            Next::Wait { .. }
        ));

        let release = a.release(wall + S).expect("a holds it: a release to write");
        assert!(!a.is_leader(t0 + S), "stops leading before the write");
        assert_eq!(release.metadata.resource_version.as_deref(), Some("1"));
        let spec = release.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(0));
        let released = stored(spec, 2);
        a.written(&released, t0 + S);
        assert!(!a.is_leader(t0 + S));
        assert_eq!(a.release(wall), None, "nothing more to release");

        // b reads the released lease 1s later: no wait.
        let next = b.observe(Some(&released), t0 + 2 * S, wall + 2 * S);
        let Next::Replace(l) = &next else {
            panic!("{next:?}")
        };
        assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(1));
        accept(&mut b, next, 3, t0 + 2 * S);
        assert!(b.is_leader(t0 + 2 * S));

        // A follower has nothing to release.
        let mut c = Candidate::new(settings("c"));
        c.observe(Some(&stored(&foreign("b", wall), 3)), t0, wall);
        assert_eq!(c.release(wall), None);
    }

    #[test]
    fn resolve_turns_on_in_a_pod_in_apply_mode_and_names_missing_keys() {
        let pod = PodEnv {
            in_pod: true,
            pod_name: Some("milvus-scaler-7d9f-abcde".into()),
            hostname: Some("host".into()),
            namespace: Some("milvus-scaler".into()),
        };
        let cfg = LeaderElectionConfig::default();
        let s = resolve(&cfg, HEADROOM, true, &pod)
            .unwrap()
            .expect("on by default");
        assert_eq!(s.identity, "milvus-scaler-7d9f-abcde");
        assert_eq!(s.namespace, "milvus-scaler");
        assert_eq!(
            s.name, "milvus-scaler-headroom",
            "the section's default name"
        );
        let named = LeaderElectionConfig {
            lease_name: Some("milvus-scaler-other".into()),
            ..cfg.clone()
        };
        assert_eq!(
            resolve(&named, HEADROOM, true, &pod).unwrap().unwrap().name,
            "milvus-scaler-other"
        );
        assert_eq!(
            (s.lease_duration, s.renew_deadline, s.retry_period),
            (15 * S, 10 * S, 2 * S)
        );
        assert_eq!(
            resolve(&cfg, HEADROOM, false, &pod).unwrap(),
            None,
            "dry-run: off"
        );
        let outside = PodEnv {
            in_pod: false,
            ..pod.clone()
        };
        assert_eq!(resolve(&cfg, HEADROOM, true, &outside).unwrap(), None);
        let off = LeaderElectionConfig {
            enabled: Some(false),
            ..cfg.clone()
        };
        assert_eq!(resolve(&off, HEADROOM, true, &pod).unwrap(), None);

        let no_pod_name = PodEnv {
            pod_name: None,
            ..pod.clone()
        };
        assert_eq!(
            resolve(&cfg, HEADROOM, true, &no_pod_name)
                .unwrap()
                .unwrap()
                .identity,
            "host",
            "the host name when POD_NAME is unset"
        );
        let on = LeaderElectionConfig {
            enabled: Some(true),
            ..cfg.clone()
        };
        let err = resolve(&on, HEADROOM, true, &PodEnv::default()).unwrap_err();
        assert_eq!(err.path, "leader_election.namespace", "{err:?}");
        let given_ns = LeaderElectionConfig {
            namespace: Some("ops".into()),
            ..on
        };
        let err = resolve(&given_ns, HEADROOM, false, &PodEnv::default()).unwrap_err();
        assert!(err.message.contains("POD_NAME"), "{err:?}");
    }
}
