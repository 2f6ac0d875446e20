//! The `external_metrics:` section of the `milvus-scaler` configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Serve the Kubernetes external metrics API.
///
/// ```yaml
/// external_metrics:
///   listen: 0.0.0.0:6443
///   tls: { cert_file: /tls/tls.crt, key_file: /tls/tls.key }
///   client_auth:
///     client_ca: { from_cluster: true }   # or { file: /front-proxy/ca.crt }
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
///
/// The CA comes from a file or, in a cluster, live from the ConfigMap the kube-apiserver
/// publishes (what prometheus-adapter and KEDA read):
///
/// ```yaml
/// client_auth:
///   client_ca: { from_cluster: true, refresh_interval: 60s }
/// # or, from a file (the older spelling `client_ca_file: /front-proxy/ca.crt` still works):
/// client_auth:
///   client_ca: { file: /front-proxy/ca.crt }
///   allowed_names: [front-proxy-client]
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawClientAuth")]
pub struct ClientAuthConfig {
    /// Where the CA bundle that signs the front-proxy client certificate comes from.
    pub client_ca: ClientCaSource,
    /// Common names accepted; empty: any certificate signed by the CA. With
    /// [`ClientCaSource::FromCluster`] this must be empty: the names come from the ConfigMap's
    /// `requestheader-allowed-names`.
    pub allowed_names: Vec<String>,
}

/// Where the front-proxy client CA is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCaSource {
    /// A PEM bundle on disk, read once at start.
    File(PathBuf),
    /// ConfigMap `kube-system/extension-apiserver-authentication` (keys
    /// `requestheader-client-ca-file` and `requestheader-allowed-names`), read through the
    /// in-cluster API with the pod's service-account token and reread every
    /// `refresh_interval`; a rotated CA is used without a restart.
    FromCluster {
        /// How often the ConfigMap is reread.
        refresh_interval: Duration,
    },
}

/// The default [`ClientCaSource::FromCluster`] refresh interval.
pub const DEFAULT_CLIENT_CA_REFRESH: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_ca: Option<RawClientCa>,
    #[serde(default)]
    allowed_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientCa {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    from_cluster: bool,
    #[serde(default, with = "humantime_serde")]
    refresh_interval: Option<Duration>,
}

impl TryFrom<RawClientAuth> for ClientAuthConfig {
    type Error = String;

    fn try_from(raw: RawClientAuth) -> Result<Self, String> {
        const ONE_OF: &str = "client_auth needs exactly one of client_ca_file, client_ca.file or client_ca.from_cluster: true";
        let client_ca = match (raw.client_ca_file, raw.client_ca) {
            (Some(file), None) => ClientCaSource::File(file),
            (
                None,
                Some(RawClientCa {
                    file: Some(file),
                    from_cluster: false,
                    refresh_interval: None,
                }),
            ) => ClientCaSource::File(file),
            (
                None,
                Some(RawClientCa {
                    file: None,
                    from_cluster: true,
                    refresh_interval,
                }),
            ) => {
                let refresh_interval = refresh_interval.unwrap_or(DEFAULT_CLIENT_CA_REFRESH);
                if refresh_interval.is_zero() {
                    return Err("client_auth.client_ca.refresh_interval must be > 0".into());
                }
                if !raw.allowed_names.is_empty() {
                    return Err("client_auth.allowed_names cannot be set with client_ca.from_cluster: the names come from requestheader-allowed-names in kube-system/extension-apiserver-authentication".into());
                }
                ClientCaSource::FromCluster { refresh_interval }
            }
            (
                None,
                Some(RawClientCa {
                    file: Some(_),
                    refresh_interval: Some(_),
                    ..
                }),
            ) => {
                return Err(
                    "client_auth.client_ca.refresh_interval applies to from_cluster only".into(),
                );
            }
            _ => return Err(ONE_OF.into()),
        };
        Ok(Self {
            client_ca,
            allowed_names: raw.allowed_names,
        })
    }
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
        let live: ExternalMetricsConfig =
            yaml_config::from_str("client_auth: { client_ca: { from_cluster: true } }\n").unwrap();
        assert_eq!(
            live.client_auth.unwrap().client_ca,
            ClientCaSource::FromCluster {
                refresh_interval: DEFAULT_CLIENT_CA_REFRESH
            }
        );
        let file: ClientAuthConfig =
            yaml_config::from_str("client_ca: { file: /ca.crt }\n").unwrap();
        assert_eq!(file.client_ca, ClientCaSource::File("/ca.crt".into()));
        for (bad, says) in [
            ("{}", "exactly one of"),
            (
                "{ client_ca_file: /a, client_ca: { file: /b } }",
                "exactly one of",
            ),
            (
                "{ client_ca: { file: /b, from_cluster: true } }",
                "exactly one of",
            ),
            (
                "{ client_ca: { from_cluster: true }, allowed_names: [x] }",
                "requestheader-allowed-names",
            ),
            (
                "{ client_ca: { from_cluster: true, refresh_interval: 0s } }",
                "must be > 0",
            ),
            (
                "{ client_ca: { from_cluster: true, refresh: 1s } }",
                "unknown field `refresh`",
            ),
        ] {
            let err = yaml_config::from_str::<ClientAuthConfig>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let defaults: ExternalMetricsConfig = yaml_config::from_str("{}").unwrap();
        assert_eq!(defaults, ExternalMetricsConfig::default());
        let err = yaml_config::from_str::<ExternalMetricsConfig>("tls: { cert: x, key_file: y }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cert`"), "{err}");
    }
}
