//! The front-proxy client CA read live from the cluster: ConfigMap
//! `kube-system/extension-apiserver-authentication`, which the kube-apiserver keeps current
//! (keys `requestheader-client-ca-file` and `requestheader-allowed-names`), read through the
//! in-cluster API with the pod's service-account token, like prometheus-adapter and KEDA do.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use thiserror::Error;

/// The ConfigMap's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap the kube-apiserver publishes its request-header authentication settings in.
pub const CONFIG_MAP: &str = "extension-apiserver-authentication";
/// The key holding the front-proxy client CA bundle (PEM).
pub const CA_KEY: &str = "requestheader-client-ca-file";
/// The key holding the accepted front-proxy common names (a JSON array of strings).
pub const ALLOWED_NAMES_KEY: &str = "requestheader-allowed-names";

/// Why the client CA could not be read from the cluster.
#[derive(Debug, Error)]
pub enum ClusterCaError {
    /// Not running in a pod with a service-account token (or the env/CA files are missing).
    #[error(
        "external_metrics.client_auth.client_ca.from_cluster: no in-cluster API access ({0}); mount the service-account token (automountServiceAccountToken: true) or use client_ca.file"
    )]
    NotInCluster(String),
    /// The client could not be built from the in-cluster configuration.
    #[error(
        "external_metrics.client_auth.client_ca.from_cluster: building the Kubernetes client: {0}"
    )]
    Client(String),
    /// The API server answered with an error status (403: the Role/RoleBinding is missing).
    #[error(
        "reading ConfigMap {NAMESPACE}/{CONFIG_MAP}: the API server answered {code}: {message}"
    )]
    Api {
        /// The HTTP status.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached or answered with something that is not a ConfigMap.
    #[error("reading ConfigMap {NAMESPACE}/{CONFIG_MAP}: {0}")]
    Unreachable(String),
    /// The ConfigMap has no such key (the cluster has no front-proxy / request-header setup).
    #[error(
        "ConfigMap {NAMESPACE}/{CONFIG_MAP} has no key {0:?}: the kube-apiserver runs without --requestheader-client-ca-file, so aggregated APIs cannot authenticate it"
    )]
    MissingKey(&'static str),
    /// A key's value is unusable.
    #[error("ConfigMap {NAMESPACE}/{CONFIG_MAP} key {key:?}: {message}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl ClusterCaError {
    /// Whether retrying can help (the API server down, throttling, 5xx); the rest are
    /// deployment errors (no token, RBAC, the cluster's own setup).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// What the ConfigMap says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCa {
    /// The CA bundle, PEM.
    pub ca_pem: String,
    /// Accepted common names; empty: any certificate the CA signed.
    pub allowed_names: Vec<String>,
}

/// Reads [`ClusterCa`] through a Kubernetes client.
#[derive(Clone)]
pub struct ClusterCaReader {
    api: Api<ConfigMap>,
    start_attempts: u32,
    start_delay: Duration,
}

impl std::fmt::Debug for ClusterCaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCaReader").finish_non_exhaustive()
    }
}

/// A read may not hang the refresh loop (kube sets no read timeout by default).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: u32 = 5;
const START_DELAY: Duration = Duration::from_secs(1);

impl ClusterCaReader {
    /// The in-cluster client every pod uses: `KUBERNETES_SERVICE_HOST`/`_PORT`, the
    /// service-account token and CA under `/var/run/secrets/kubernetes.io/serviceaccount/`
    /// (the token file is reread, so bound-token rotation works).
    pub fn incluster() -> Result<Self, ClusterCaError> {
        let config =
            kube::Config::incluster().map_err(|e| ClusterCaError::NotInCluster(e.to_string()))?;
        Self::from_config(config)
    }

    /// A client from an explicit configuration (tests point it at a fake API server).
    pub fn from_config(mut config: kube::Config) -> Result<Self, ClusterCaError> {
        config.read_timeout.get_or_insert(READ_TIMEOUT);
        // kube's default retry layer retries a 503 up to 15 times with backoff growing to
        // minutes: that would stall start and the refresh loop. Retries here are ours and
        // bounded (start) or simply the next refresh.
        config.default_retry = false;
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterCaError::Client(e.to_string()))?;
        Ok(Self {
            api: Api::namespaced(client, NAMESPACE),
            start_attempts: START_ATTEMPTS,
            start_delay: START_DELAY,
        })
    }

    /// Sets the retry at start: `attempts` reads in all, the first `delay` apart, doubling
    /// (default 5 from 1 s: about 15 s before giving up).
    pub fn with_start_retry(mut self, attempts: u32, delay: Duration) -> Self {
        self.start_attempts = attempts;
        self.start_delay = delay;
        self
    }

    /// The read at start: transient failures retried as set by [`Self::with_start_retry`].
    pub async fn read_at_start(&self) -> Result<ClusterCa, ClusterCaError> {
        self.read_with_retry(self.start_attempts, self.start_delay)
            .await
    }

    /// One GET of the ConfigMap.
    pub async fn read(&self) -> Result<ClusterCa, ClusterCaError> {
        let cm = self.api.get(CONFIG_MAP).await.map_err(|e| match e {
            kube::Error::Api(status) => ClusterCaError::Api {
                code: status.code,
                message: status.message,
            },
            other => ClusterCaError::Unreachable(other.to_string()),
        })?;
        parse(&cm)
    }

    /// [`Self::read`], retrying transient failures `attempts` times in all, `delay` apart
    /// (doubling); used at start, where no CA is known yet.
    pub async fn read_with_retry(
        &self,
        attempts: u32,
        mut delay: Duration,
    ) -> Result<ClusterCa, ClusterCaError> {
        let mut left = attempts.max(1);
        loop {
            match self.read().await {
                Err(e) if e.is_transient() && left > 1 => {
                    tracing::warn!(error = %e, retry_in = ?delay, "external metrics: client CA not read yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    left -= 1;
                }
                other => return other,
            }
        }
    }
}

/// The CA and names out of the ConfigMap.
pub fn parse(cm: &ConfigMap) -> Result<ClusterCa, ClusterCaError> {
    let data = cm.data.as_ref();
    let ca_pem = data
        .and_then(|d| d.get(CA_KEY))
        .ok_or(ClusterCaError::MissingKey(CA_KEY))?
        .clone();
    if ca_pem.trim().is_empty() {
        return Err(ClusterCaError::BadValue {
            key: CA_KEY,
            message: "empty".into(),
        });
    }
    // Absent or empty: the apiserver was started without --requestheader-allowed-names, which
    // means any certificate the CA signed.
    let allowed_names = match data.and_then(|d| d.get(ALLOWED_NAMES_KEY)) {
        None => Vec::new(),
        Some(v) if v.trim().is_empty() => Vec::new(),
        Some(v) => {
            serde_json::from_str::<Vec<String>>(v).map_err(|e| ClusterCaError::BadValue {
                key: ALLOWED_NAMES_KEY,
                message: format!("not a JSON array of strings: {e}"),
            })?
        }
    };
    Ok(ClusterCa {
        ca_pem,
        allowed_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_keys_the_apiserver_writes() {
        let got = parse(&cm(&[
            (CA_KEY, "-----BEGIN CERTIFICATE-----\n"),
            (ALLOWED_NAMES_KEY, "[\"front-proxy-client\"]"),
        ]))
        .unwrap();
        assert_eq!(got.allowed_names, ["front-proxy-client"]);
        let any = parse(&cm(&[(CA_KEY, "pem"), (ALLOWED_NAMES_KEY, "")])).unwrap();
        assert!(any.allowed_names.is_empty());
        let err = parse(&cm(&[(ALLOWED_NAMES_KEY, "[]")])).unwrap_err();
        assert!(err.to_string().contains(CA_KEY), "{err}");
        let err = parse(&cm(&[
            (CA_KEY, "pem"),
            (ALLOWED_NAMES_KEY, "front-proxy-client"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("JSON array"), "{err}");
        assert!(!err.is_transient());
    }
}
