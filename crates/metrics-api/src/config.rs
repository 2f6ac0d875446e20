//! The `external_metrics:` section of the `milvus-scaler` configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Serve the Kubernetes external metrics API.
///
/// ```yaml
/// external_metrics:
///   listen: 0.0.0.0:6443
///   tls: { cert_file: /tls/tls.crt, key_file: /tls/tls.key }
///   client_auth:
///     client_ca_file: /front-proxy/ca.crt
///     allowed_names: [front-proxy-client]
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExternalMetricsConfig {
    /// HTTPS listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serving certificate; absent: a self-signed certificate is generated at start (warned).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Front-proxy client-certificate authentication; absent: no client certificate is
    /// required (warned: development only).
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

impl Default for ExternalMetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            client_auth: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6443))
}

/// PEM files of the serving certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Which client certificates may call the API (the aggregator's front-proxy certificate).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// CA bundle (PEM) that signs the front-proxy client certificate; in a cluster this is
    /// `requestheader-client-ca-file` from `kube-system/extension-apiserver-authentication`.
    pub client_ca_file: PathBuf,
    /// Common names accepted; empty: any certificate signed by the CA.
    #[serde(default)]
    pub allowed_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_rejects_unknown_keys() {
        let cfg: ExternalMetricsConfig = yaml_config::from_str(
            "listen: 127.0.0.1:6443\ntls: { cert_file: /tls/tls.crt, key_file: /tls/tls.key }\nclient_auth:\n  client_ca_file: /ca.crt\n  allowed_names: [front-proxy-client]\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 6443);
        assert_eq!(
            cfg.client_auth.unwrap().allowed_names,
            vec!["front-proxy-client".to_string()]
        );
        let defaults: ExternalMetricsConfig = yaml_config::from_str("{}").unwrap();
        assert_eq!(defaults, ExternalMetricsConfig::default());
        let err = yaml_config::from_str::<ExternalMetricsConfig>("tls: { cert: x, key_file: y }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cert`"), "{err}");
    }
}
