//! What can go wrong holding headroom: every error names the object and what the API server
//! said; 404 and 403 say what to do (create the object, grant the RBAC verb).

use std::fmt;

use thiserror::Error;

/// A Kubernetes object a holder reads or writes, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// API group, `apps` or `autoscaling.x-k8s.io`.
    pub group: &'static str,
    /// The RBAC resource, e.g. `deployments/scale` or `capacitybuffers`.
    pub resource: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} ({}.{})",
            self.kind, self.namespace, self.name, self.resource, self.group
        )
    }
}

/// A failed round of a holder or of the workload read. (The object is boxed: it is most of
/// the error's size, and errors travel through every `Result` of a round.)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HoldError {
    /// 404: the object (or, for a CapacityBuffer, its CRD) does not exist. Holders never create it.
    #[error("{object}: not found (HTTP 404: {message}); {hint}")]
    NotFound {
        /// The object.
        object: Box<ObjectRef>,
        /// What the API server said.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// 403: the ServiceAccount may not do this.
    #[error(
        "{object}: forbidden (HTTP 403: {message}); grant the ServiceAccount RBAC verb {verb:?} on resource {:?} of apiGroup {:?} with resourceNames [{:?}] in namespace {:?} (manifests/components/headroom/rbac.yaml)",
        object.resource, object.group, object.name, object.namespace
    )]
    Forbidden {
        /// The object.
        object: Box<ObjectRef>,
        /// The verb refused: `get` or `patch`.
        verb: &'static str,
        /// What the API server said.
        message: String,
    },
    /// 409: someone else changed the object in between; the next round reads it again.
    #[error("{object}: {verb} conflicted (HTTP 409: {message}); read again next round")]
    Conflict {
        /// The object.
        object: Box<ObjectRef>,
        /// The verb.
        verb: &'static str,
        /// What the API server said.
        message: String,
    },
    /// Any other answer of the API server (401, 422, 429, 5xx...).
    #[error("{object}: {verb} failed: the API server answered HTTP {code} {reason}: {message}")]
    Api {
        /// The object.
        object: Box<ObjectRef>,
        /// The verb.
        verb: &'static str,
        /// HTTP status.
        code: u16,
        /// The `Status` reason, e.g. `InternalError`.
        reason: String,
        /// What the API server said.
        message: String,
    },
    /// No answer, or one that is not the expected object.
    #[error("{object}: {verb} failed: {message}")]
    Unreachable {
        /// The object.
        object: Box<ObjectRef>,
        /// The verb.
        verb: &'static str,
        /// The client's error.
        message: String,
    },
    /// The object answered is not what the holder expects (a replicas field that is not a
    /// non-negative integer, a write the answer does not show).
    #[error("{object}: {message}")]
    Unexpected {
        /// The object.
        object: Box<ObjectRef>,
        /// What was expected and what was found.
        message: String,
    },
    /// The node-group round failed for some of the holder's groups.
    #[error("node groups {groups}: {message}")]
    NodeGroups {
        /// The groups, comma-separated.
        groups: String,
        /// What failed, per group.
        message: String,
    },
}

impl HoldError {
    /// A short label for the `kind` of the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            HoldError::NotFound { .. } => "not_found",
            HoldError::Forbidden { .. } => "forbidden",
            HoldError::Conflict { .. } => "conflict",
            HoldError::Api { .. } => "api",
            HoldError::Unreachable { .. } => "unreachable",
            HoldError::Unexpected { .. } => "unexpected",
            HoldError::NodeGroups { .. } => "node_groups",
        }
    }

    /// Maps a kube client error of `verb` on `object`; `not_found_hint` says what to do on 404.
    pub fn from_kube(
        object: &ObjectRef,
        verb: &'static str,
        not_found_hint: &str,
        e: kube::Error,
    ) -> Self {
        let object = Box::new(object.clone());
        match e {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    404 => HoldError::NotFound {
                        object,
                        message,
                        hint: not_found_hint.to_string(),
                    },
                    403 => HoldError::Forbidden {
                        object,
                        verb,
                        message,
                    },
                    409 => HoldError::Conflict {
                        object,
                        verb,
                        message,
                    },
                    code => HoldError::Api {
                        object,
                        verb,
                        code,
                        reason: status.reason.clone(),
                        message,
                    },
                }
            }
            other => HoldError::Unreachable {
                object,
                verb,
                message: other.to_string(),
            },
        }
    }
}
