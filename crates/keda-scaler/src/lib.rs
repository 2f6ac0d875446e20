//! KEDA external scaler for Milvus: serves KEDA's `externalscaler.proto` (`IsActive`,
//! `StreamIsActive`, `GetMetricSpec`, `GetMetrics`) from the in-memory signal snapshot, with gRPC
//! health and server reflection (`v1` and `v1alpha`), optionally over TLS or mTLS.
//!
//! Trigger metadata is parsed in [`metadata`] (pure, no I/O); the service is in [`service`];
//! [`start`] binds the listener and runs the server until the stop signal.

pub mod metadata;
pub mod metric_names;
pub mod service;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use milvus_signals::SnapshotStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use service::KedaScaler;

/// Code generated from `proto/externalscaler.proto` (package `externalscaler`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("externalscaler");

    /// Encoded `FileDescriptorSet` of the protocol, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("externalscaler_descriptor");
}

/// The `keda:` section of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KedaConfig {
    /// Address of the gRPC server (default `0.0.0.0:9090`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS; mTLS when `client_ca_file` is set. Plaintext when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How often an open `StreamIsActive` repeats its current state (default `10s`), so a
    /// half-dead connection is noticed by both ends.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub stream_keepalive: Duration,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}

fn default_keepalive() -> Duration {
    Duration::from_secs(10)
}

/// Server certificate, key and (for mTLS) the CA that client certificates must chain to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate signed by it.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Why the KEDA server could not start.
#[derive(Debug, Error)]
pub enum KedaError {
    /// A TLS file could not be read. (The I/O error is the source, not in the message: the
    /// binary prints the chain, which would say it twice.)
    #[error("keda.tls.{key}: {path}: cannot read")]
    ReadTls {
        /// Which key (`cert_file`, `key_file`, `client_ca_file`).
        key: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Binding `keda.listen` failed.
    #[error("keda.listen {addr}: cannot bind: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TLS file holds no usable PEM, or the key does not match the certificate.
    #[error("keda.tls.{key}: {path}: {message}")]
    InvalidTls {
        /// Which key (`cert_file`, `key_file`, `client_ca_file`).
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS material was rejected.
    #[error("keda.tls: {0}")]
    Tls(tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("building server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

impl KedaError {
    /// Whether what the user configured is wrong (a TLS file missing, unreadable, not PEM, or a
    /// key that does not match its certificate) rather than something failing at run time: the
    /// process exits 2 for these, 1 for the rest.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::ReadTls { .. } | Self::InvalidTls { .. } | Self::Tls(_)
        )
    }
}

fn invalid(key: &'static str, path: &Path, message: impl ToString) -> KedaError {
    KedaError::InvalidTls {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, KedaError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, e))?;
    if certs.is_empty() {
        return Err(invalid(key, path, "no PEM CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Checks the serving pair as a handshake would use it. tonic parses the PEM only when the
/// server is built, with an error that names no file, and never checks that the key belongs
/// to the certificate (every handshake would fail instead).
fn check_identity(tls: &TlsConfig, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), KedaError> {
    let chain = certificates("cert_file", &tls.cert_file, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid("key_file", &tls.key_file, e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        let message = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key does not match the certificate in keda.tls.cert_file {}",
                tls.cert_file.display()
            ),
            e => e.to_string(),
        };
        invalid("key_file", &tls.key_file, message)
    })?;
    Ok(())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, KedaError> {
    std::fs::read(path).map_err(|source| KedaError::ReadTls {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// Reads and checks the TLS material of `tls`.
pub fn tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, KedaError> {
    let cert_pem = read("cert_file", &tls.cert_file)?;
    let key_pem = read("key_file", &tls.key_file)?;
    check_identity(tls, &cert_pem, &key_pem)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Some(ca) = &tls.client_ca_file {
        let pem = read("client_ca_file", ca)?;
        certificates("client_ca_file", ca, &pem)?;
        config = config.client_ca_root(Certificate::from_pem(pem));
    }
    Ok(config)
}

/// How long shutdown waits for client connections to finish before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running server: its bound address and its task.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Ends when the server has stopped.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `cfg.listen` and serves the external scaler, gRPC health (`grpc.health.v1.Health`,
/// service `externalscaler.ExternalScaler` and `""` SERVING) and reflection (`v1` and `v1alpha`)
/// until `stop` is cancelled. `instances` are the configured Milvus instance names.
pub async fn start(
    cfg: &KedaConfig,
    store: Arc<SnapshotStore>,
    instances: Vec<String>,
    stop: CancellationToken,
) -> Result<Running, KedaError> {
    let tls = cfg.tls.as_ref().map(tls_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| KedaError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| KedaError::Bind {
        addr: cfg.listen,
        source,
    })?;

    let scaler = KedaScaler::new(store, instances, cfg.stream_keepalive, stop.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::external_scaler_server::ExternalScalerServer<KedaScaler>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut builder = Server::builder()
        // Detect dead peers of long-lived StreamIsActive calls at the HTTP/2 level too.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(KedaError::Tls)?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(proto::external_scaler_server::ExternalScalerServer::new(
            scaler,
        ));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop_serving = stop.clone();
    let task = tokio::spawn(async move {
        let serve = router.serve_with_incoming_shutdown(incoming, async move {
            stop_serving.cancelled().await;
            health
                .set_not_serving::<proto::external_scaler_server::ExternalScalerServer<KedaScaler>>(
                )
                .await;
        });
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result,
            // Streams end at once on stop and unary calls take microseconds, but graceful
            // shutdown also waits for idle client connections (KEDA keeps its channel open):
            // give in-flight calls a short grace, then drop the connections.
            _ = async {
                stop.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::info!(grace = ?SHUTDOWN_GRACE, "KEDA external scaler: closing remaining idle connections");
                Ok(())
            }
        }
    });
    tracing::info!(listen = %local_addr, tls = cfg.tls.is_some(), mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()), "KEDA external scaler serving");
    Ok(Running { local_addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: KedaConfig = yaml_config::from_str("{}").unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.stream_keepalive, Duration::from_secs(10));
        assert!(c.tls.is_none());
        let c: KedaConfig = yaml_config::from_str(
            "listen: 127.0.0.1:19090\nstream_keepalive: 2s\ntls: {cert_file: a, key_file: b, client_ca_file: c}\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 19090);
        assert_eq!(c.tls.unwrap().client_ca_file, Some(PathBuf::from("c")));
        let err = yaml_config::from_str::<KedaConfig>("listn: 1").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = yaml_config::from_str::<KedaConfig>("tls: {cert_file: a}").unwrap_err();
        assert!(err.to_string().contains("key_file"), "{err}");
    }

    #[test]
    fn missing_tls_file_names_the_key() {
        let err = tls_config(&TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("keda.tls.cert_file"), "{err}");
        assert!(err.is_config());
    }

    /// Writes a pair under `dir` as `NAME.crt`/`NAME.key` and returns its TLS section.
    fn pair(dir: &Path, name: &str) -> TlsConfig {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, c.cert.pem()).unwrap();
        std::fs::write(&key_file, c.signing_key.serialize_pem()).unwrap();
        TlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
        }
    }

    #[test]
    fn tls_files_are_checked_at_start_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "one");
        let other = pair(dir.path(), "two");
        assert!(tls_config(&good).is_ok());
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM").unwrap();
        let expect = |tls: TlsConfig, key: &str, path: &Path, says: &str| {
            let err = tls_config(&tls).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, KedaError::InvalidTls { .. }), "{err:?}");
            assert!(err.is_config());
            let named = format!("keda.tls.{key}: {}", path.display());
            assert!(text.starts_with(&named), "expected {named:?} in {text}");
            assert!(text.contains(says), "expected {says:?} in {text}");
        };
        let with = |cert: &Path, key: &Path| TlsConfig {
            cert_file: cert.into(),
            key_file: key.into(),
            client_ca_file: None,
        };
        expect(
            with(&garbage, &good.key_file),
            "cert_file",
            &garbage,
            "no PEM CERTIFICATE",
        );
        expect(with(&good.cert_file, &garbage), "key_file", &garbage, "");
        expect(
            with(&good.cert_file, &other.key_file),
            "key_file",
            &other.key_file,
            "does not match the certificate",
        );
        let mut ca = good.clone();
        ca.client_ca_file = Some(garbage.clone());
        expect(ca, "client_ca_file", &garbage, "no PEM CERTIFICATE");
        // A directory where a file belongs: unreadable for every user, root included.
        let err = tls_config(&with(dir.path(), &good.key_file)).unwrap_err();
        assert!(
            matches!(
                err,
                KedaError::ReadTls {
                    key: "cert_file",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// The real server on loopback with a client connection open (as KEDA keeps one): a
    /// cancelled token ends the server's task within the grace period.
    #[tokio::test]
    async fn the_server_stops_when_its_token_is_cancelled() {
        let cfg: KedaConfig = yaml_config::from_str("listen: 127.0.0.1:0").unwrap();
        let stop = CancellationToken::new();
        let running = start(
            &cfg,
            Arc::new(SnapshotStore::default()),
            vec!["prod".into()],
            stop.clone(),
        )
        .await
        .unwrap();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.local_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client = proto::external_scaler_client::ExternalScalerClient::new(channel);
        let answer = client
            .is_active(proto::ScaledObjectRef {
                name: "x".into(),
                namespace: "default".into(),
                scaler_metadata: Default::default(),
            })
            .await;
        // Served (the metadata is wrong on purpose: any gRPC answer shows the server is up).
        assert_eq!(answer.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(!running.task.is_finished());
        stop.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(5), running.task)
            .await
            .expect("the KEDA server still runs after its token was cancelled")
            .unwrap()
            .unwrap();
        drop(client);
    }
}
