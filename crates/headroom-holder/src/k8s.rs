//! The Kubernetes holders and the workload read, on kube-rs: a placeholder Deployment's scale
//! subresource, a CapacityBuffer's `spec.replicas`, and the query-node Deployment's scale.
//! Each call is one request; retries are the next round's.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{HoldError, ObjectRef};
use crate::{CapacityBufferRef, Demand, DeploymentRef, HeadroomHolder, Held, WorkloadPods};

/// A request may not hang a round (kube sets no read timeout by default).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The CapacityBuffer API this code speaks: the version of the CRD vendored in
/// `manifests/components/headroom/capacity-buffer/crd.yaml` (its storage version).
pub const CAPACITY_BUFFER_API_VERSION: &str = "autoscaling.x-k8s.io/v1beta1";

/// The field manager of every patch (shown in `managedFields`), the Lease writes' too.
pub use leader_lease::FIELD_MANAGER;

/// A client from `config` with a read timeout and without kube's own retry layer (which retries
/// a 503 for minutes; a round is retried by the next round).
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.read_timeout.get_or_insert(READ_TIMEOUT);
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Neither in a pod (no ServiceAccount token/CA mounted or no `KUBERNETES_SERVICE_HOST`) nor
    /// given a kubeconfig. The deployment's fault, not an outage.
    #[error(
        "headroom: not running in a Kubernetes pod with a ServiceAccount token (mount it: automountServiceAccountToken, and KUBERNETES_SERVICE_HOST/PORT) ({in_cluster}), and no usable kubeconfig (KUBECONFIG or ~/.kube/config: {kubeconfig})"
    )]
    NotInCluster {
        /// Why the in-cluster configuration failed.
        in_cluster: String,
        /// Why the kubeconfig failed.
        kubeconfig: String,
    },
    /// The client could not be built from the configuration found.
    #[error("headroom: building the Kubernetes client: {0}")]
    Client(String),
}

/// The client of the pod's ServiceAccount (`KUBERNETES_SERVICE_HOST`/`_PORT`, its token and CA);
/// outside a pod, the kubeconfig's current context (`KUBECONFIG` or `~/.kube/config`), as
/// kubectl would use it (`plan-nodes` from a workstation, and the binary's tests).
pub async fn cluster_client() -> Result<kube::Client, ClientError> {
    let config = match kube::Config::incluster() {
        Ok(c) => c,
        Err(in_cluster) => {
            kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| ClientError::NotInCluster {
                    in_cluster: in_cluster.to_string(),
                    kubeconfig: kubeconfig.to_string(),
                })?
        }
    };
    client(config).map_err(|e| ClientError::Client(e.to_string()))
}

/// The merge patch that sets a scale's `spec.replicas` (sent to `deployments/<name>/scale`).
pub fn scale_patch(replicas: u32) -> Value {
    json!({ "spec": { "replicas": to_i32(replicas) } })
}

/// The merge patch that sets a CapacityBuffer's `spec.replicas`.
pub fn buffer_patch(replicas: u32) -> Value {
    json!({ "spec": { "replicas": to_i32(replicas) } })
}

/// `(spec.replicas, status.replicas)` of a held object, as read or as answered to a write
/// (`None`: the object sets none).
type Replicas = (Option<u32>, Option<u32>);

/// The round every Kubernetes holder makes: nothing at all on unknown demand; a `read`; no write
/// when it already holds `pods` or in dry-run; else `write(pods)`, whose answer must show `pods`.
async fn hold_replicas<R, RF, W, WF>(
    object: &ObjectRef,
    demand: Demand,
    apply: bool,
    read: R,
    write: W,
) -> Result<Held, HoldError>
where
    R: FnOnce() -> RF,
    RF: Future<Output = Result<Replicas, HoldError>>,
    W: FnOnce(u32) -> WF,
    WF: Future<Output = Result<Replicas, HoldError>>,
{
    let Demand::Pods(pods) = demand else {
        return Ok(Held::Blind);
    };
    let (from, observed) = read().await?;
    if from == Some(pods) {
        return Ok(Held::Unchanged {
            held: pods,
            observed,
        });
    }
    if !apply {
        return Ok(Held::DryRun { from, to: pods });
    }
    let (to, observed) = write(pods).await?;
    if to != Some(pods) {
        return Err(HoldError::Unexpected {
            object: Box::new(object.clone()),
            message: format!(
                "patched spec.replicas to {pods}, the API server answered spec.replicas {}",
                to.map_or_else(|| "unset".to_string(), |n| n.to_string())
            ),
        });
    }
    Ok(Held::Changed {
        from,
        to: pods,
        observed,
    })
}

/// A merge patch's parameters: our field manager, no server-side apply, no force.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn deployment_scale(d: &DeploymentRef) -> ObjectRef {
    ObjectRef {
        kind: "Deployment",
        group: "apps",
        resource: "deployments/scale",
        namespace: d.namespace.clone(),
        name: d.deployment.clone(),
    }
}

/// `spec.replicas` of a scale, or an error naming the object.
fn scale_replicas(object: &ObjectRef, scale: &Scale) -> Result<u32, HoldError> {
    let n = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    u32::try_from(n).map_err(|_| HoldError::Unexpected {
        object: Box::new(object.clone()),
        message: format!("expected spec.replicas >= 0, the API server answered {n}"),
    })
}

/// The replicas of a placeholder Deployment, set through `deployments/<name>/scale`.
pub struct PlaceholderDeployment {
    api: Api<Deployment>,
    object: ObjectRef,
}

impl PlaceholderDeployment {
    /// The holder of the Deployment `d`.
    pub fn new(client: kube::Client, d: &DeploymentRef) -> Self {
        Self {
            api: Api::namespaced(client, &d.namespace),
            object: deployment_scale(d),
        }
    }

    fn not_found_hint(&self) -> String {
        format!(
            "milvus-scaler never creates it: apply manifests/components/headroom (Deployment {} in namespace {}) or fix headroom.holder.placeholder",
            self.object.name, self.object.namespace
        )
    }
}

impl HeadroomHolder for PlaceholderDeployment {
    fn target(&self) -> String {
        format!("Deployment {}/{}", self.object.namespace, self.object.name)
    }

    fn unit(&self) -> &'static str {
        "pods"
    }

    async fn hold(&mut self, demand: Demand, apply: bool) -> Result<Held, HoldError> {
        let hint = &self.not_found_hint();
        let (api, object) = (&self.api, &self.object);
        let replicas = |scale: Scale| -> Result<Replicas, HoldError> {
            let status = scale.status.as_ref().map(|s| s.replicas.max(0) as u32);
            Ok((Some(scale_replicas(object, &scale)?), status))
        };
        hold_replicas(
            object,
            demand,
            apply,
            || async {
                let scale = api
                    .get_scale(&object.name)
                    .await
                    .map_err(|e| HoldError::from_kube(object, "get", hint, e))?;
                replicas(scale)
            },
            |pods| async move {
                let scale = api
                    .patch_scale(
                        &object.name,
                        &patch_params(),
                        &Patch::Merge(&scale_patch(pods)),
                    )
                    .await
                    .map_err(|e| HoldError::from_kube(object, "patch", hint, e))?;
                replicas(scale)
            },
        )
        .await
    }
}

/// The `spec.replicas` of a CapacityBuffer (`autoscaling.x-k8s.io/v1beta1`), by merge patch.
pub struct CapacityBufferHolder {
    api: Api<DynamicObject>,
    object: ObjectRef,
}

/// The CapacityBuffer resource at [`CAPACITY_BUFFER_API_VERSION`].
pub fn capacity_buffer_resource() -> ApiResource {
    ApiResource {
        group: "autoscaling.x-k8s.io".into(),
        version: "v1beta1".into(),
        api_version: CAPACITY_BUFFER_API_VERSION.into(),
        kind: "CapacityBuffer".into(),
        plural: "capacitybuffers".into(),
    }
}

impl CapacityBufferHolder {
    /// The holder of the CapacityBuffer `b`.
    pub fn new(client: kube::Client, b: &CapacityBufferRef) -> Self {
        Self {
            api: Api::namespaced_with(client, &b.namespace, &capacity_buffer_resource()),
            object: ObjectRef {
                kind: "CapacityBuffer",
                group: "autoscaling.x-k8s.io",
                resource: "capacitybuffers",
                namespace: b.namespace.clone(),
                name: b.name.clone(),
            },
        }
    }

    fn not_found_hint(&self) -> String {
        format!(
            "milvus-scaler never creates it: apply the CapacityBuffer {} in namespace {} (manifests/components/headroom/capacity-buffer) and check that the cluster serves {CAPACITY_BUFFER_API_VERSION} (the CRD, Cluster Autoscaler's capacity buffers enabled)",
            self.object.name, self.object.namespace
        )
    }

    /// `(spec.replicas, status.replicas)` of a buffer; an absent `spec.replicas` is `None`.
    fn replicas(&self, obj: &DynamicObject) -> Result<Replicas, HoldError> {
        let field = |section: &str| -> Result<Option<u32>, HoldError> {
            match obj.data.get(section).and_then(|s| s.get("replicas")) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| HoldError::Unexpected {
                        object: Box::new(self.object.clone()),
                        message: format!(
                            "expected {section}.replicas to be an integer >= 0, the API server answered {v}"
                        ),
                    }),
            }
        };
        Ok((field("spec")?, field("status")?))
    }
}

impl HeadroomHolder for CapacityBufferHolder {
    fn target(&self) -> String {
        format!(
            "CapacityBuffer {}/{}",
            self.object.namespace, self.object.name
        )
    }

    fn unit(&self) -> &'static str {
        "pods"
    }

    async fn hold(&mut self, demand: Demand, apply: bool) -> Result<Held, HoldError> {
        let hint = &self.not_found_hint();
        let this = &*self;
        hold_replicas(
            &this.object,
            demand,
            apply,
            || async {
                let obj = this
                    .api
                    .get(&this.object.name)
                    .await
                    .map_err(|e| HoldError::from_kube(&this.object, "get", hint, e))?;
                this.replicas(&obj)
            },
            |pods| async move {
                let obj = this
                    .api
                    .patch(
                        &this.object.name,
                        &patch_params(),
                        &Patch::Merge(&buffer_patch(pods)),
                    )
                    .await
                    .map_err(|e| HoldError::from_kube(&this.object, "patch", hint, e))?;
                this.replicas(&obj)
            },
        )
        .await
    }
}

/// The workload's pods now: `spec.replicas` of the query-node Deployment's scale.
pub struct WorkloadScale {
    api: Api<Deployment>,
    object: ObjectRef,
}

impl WorkloadScale {
    /// The reader of Deployment `d`'s scale.
    pub fn new(client: kube::Client, d: &DeploymentRef) -> Self {
        Self {
            api: Api::namespaced(client, &d.namespace),
            object: deployment_scale(d),
        }
    }
}

impl WorkloadPods for WorkloadScale {
    fn target(&self) -> String {
        format!("Deployment {}/{}", self.object.namespace, self.object.name)
    }

    async fn pods(&self) -> Result<u32, HoldError> {
        let hint =
            "check headroom.workload: the query nodes' Deployment (the HPA's scaleTargetRef)";
        let scale = self
            .api
            .get_scale(&self.object.name)
            .await
            .map_err(|e| HoldError::from_kube(&self.object, "get", hint, e))?;
        scale_replicas(&self.object, &scale)
    }
}
