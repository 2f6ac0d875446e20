//! The rustls server configuration: serving certificate (from files, or self-signed at start)
//! and front-proxy client-certificate verification.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::config::{ClientCaSource, ExternalMetricsConfig, TlsConfig};

/// Why the TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("external_metrics.{key}: {path}: {message}")]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed serving certificate: {0}")]
    SelfSigned(String),
    /// The client CA read from the cluster is unusable.
    #[error("front-proxy client CA from the cluster: {0}")]
    ClientCa(String),
    /// rustls refused the certificates.
    #[error("building the TLS configuration: {0}")]
    Rustls(String),
}

impl TlsError {
    /// Whether what was configured is wrong (a file, or the cluster's client CA) rather than
    /// this process failing (generating a certificate, building the rustls configuration).
    pub fn is_config(&self) -> bool {
        match self {
            Self::File { .. } | Self::ClientCa(_) => true,
            Self::SelfSigned(_) | Self::Rustls(_) => false,
        }
    }
}

/// Names in the generated self-signed certificate.
pub const SELF_SIGNED_NAMES: [&str; 5] = [
    "localhost",
    "127.0.0.1",
    "milvus-scaler",
    "milvus-scaler.milvus-scaler.svc",
    "milvus-scaler.milvus-scaler.svc.cluster.local",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_error(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM CERTIFICATE block found"));
    }
    Ok(certs)
}

fn serving_identity(
    tls: Option<&TlsConfig>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match tls {
        Some(tls) => {
            let certs = read_certs("tls.cert_file", &tls.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(&tls.key_file)
                .map_err(|e| file_error("tls.key_file", &tls.key_file, e))?;
            Ok((certs, key))
        }
        None => {
            tracing::warn!(
                "external_metrics.tls is not set: serving with a self-signed certificate generated at start; clients must skip verification (development only)"
            );
            let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
            let generated = rcgen::generate_simple_self_signed(names)
                .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            Ok((vec![generated.cert.der().clone()], key.into()))
        }
    }
}

/// Builds the server configuration: HTTP/2 and HTTP/1.1 over TLS; client certificates verified
/// against the client CA file when configured. A connection without a client certificate is
/// still accepted so that health probes work and API requests get a `401 Status` instead of a
/// bare handshake failure; a certificate from another CA fails the handshake.
/// With `client_ca.from_cluster` use [`ServerTls::new`] with the CA read from the cluster.
pub fn server_config(cfg: &ExternalMetricsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let (tls, _) = server_config_with_reload(cfg)?;
    Ok(tls)
}

/// Like [`server_config`], and also returns the handle that reloads the serving certificate
/// when its files change (cert-manager renewals).
pub fn server_config_with_reload(
    cfg: &ExternalMetricsConfig,
) -> Result<(rustls::ServerConfig, CertReloader), TlsError> {
    let tls = ServerTls::new(cfg, None)?;
    let config = Arc::unwrap_or_clone(tls.current());
    Ok((config, tls.reloader))
}

/// The running server's TLS state: the current `ServerConfig` (swapped whole when the client CA
/// changes; each handshake loads it once), the serving-certificate resolver shared by every
/// version of it, and the serving-certificate reloader.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    resolver: Arc<Resolver>,
    /// Rereads the serving certificate files; driven by the server's timer.
    pub reloader: CertReloader,
}

impl ServerTls {
    /// Loads the serving certificate and the client CA: from `client_auth.client_ca` when it is
    /// a file, else `cluster_ca_pem` (required with `client_ca.from_cluster`).
    pub fn new(
        cfg: &ExternalMetricsConfig,
        cluster_ca_pem: Option<&str>,
    ) -> Result<Self, TlsError> {
        let current = Arc::new(ArcSwap::from_pointee(certified_key(cfg.tls.as_ref())?));
        let reloader = CertReloader {
            files: cfg.tls.clone().map(|t| {
                let seen = modified(&t);
                (t, seen)
            }),
            current: current.clone(),
        };
        let resolver = Arc::new(Resolver(current));
        let verifier = match &cfg.client_auth {
            None => {
                tracing::warn!(
                    "external_metrics.client_auth is not set: any client may read metrics without a certificate (development only)"
                );
                None
            }
            Some(auth) => Some(match (&auth.client_ca, cluster_ca_pem) {
                (ClientCaSource::File(path), _) => {
                    let key = "client_auth.client_ca_file";
                    client_verifier(read_certs(key, path)?, |e| file_error(key, path, e))?
                }
                (ClientCaSource::FromCluster { .. }, Some(pem)) => cluster_verifier(pem)?,
                (ClientCaSource::FromCluster { .. }, None) => {
                    return Err(TlsError::ClientCa(
                        "client_ca.from_cluster: no CA read from the cluster yet".into(),
                    ));
                }
            }),
        };
        let config = build(&resolver, verifier)?;
        Ok(Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            resolver,
            reloader,
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config.load_full()
    }

    /// A handle on the current configuration, for the accept loop.
    pub fn shared(&self) -> Arc<ArcSwap<rustls::ServerConfig>> {
        self.config.clone()
    }

    /// The handle that swaps the client CA of this server.
    pub fn client_ca_switch(&self) -> ClientCaSwitch {
        ClientCaSwitch {
            config: self.config.clone(),
            resolver: self.resolver.clone(),
        }
    }
}

/// Swaps the client CA of a running server (see [`ServerTls::client_ca_switch`]).
#[derive(Debug, Clone)]
pub struct ClientCaSwitch {
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    resolver: Arc<Resolver>,
}

impl ClientCaSwitch {
    /// Verifies client certificates against `ca_pem` from the next handshake on; open
    /// connections keep the CA they were verified with. On error nothing changes.
    pub fn set_client_ca(&self, ca_pem: &str) -> Result<(), TlsError> {
        let config = build(&self.resolver, Some(cluster_verifier(ca_pem)?))?;
        self.config.store(Arc::new(config));
        Ok(())
    }
}

fn build(
    resolver: &Arc<Resolver>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves whatever certificate is current: one atomic load per handshake.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Rereads the serving certificate files when they change and swaps them into the running
/// server: new handshakes use the new certificate, open connections keep theirs. The file I/O
/// happens here, on a timer, never on the request path.
#[derive(Debug)]
pub struct CertReloader {
    files: Option<(TlsConfig, Option<SystemTime>)>,
    current: Arc<ArcSwap<CertifiedKey>>,
}

impl CertReloader {
    /// Checks the files once; returns whether a new certificate is now served. On error (e.g. a
    /// half-written pair) the previous certificate stays in use and the next check retries.
    pub fn check(&mut self) -> Result<bool, TlsError> {
        let Some((tls, seen)) = &mut self.files else {
            return Ok(false);
        };
        let now = modified(tls);
        if now == *seen {
            return Ok(false);
        }
        let key = certified_key(Some(tls))?;
        *seen = now;
        self.current.store(Arc::new(key));
        Ok(true)
    }
}

/// The newer of the two files' modification times (`None` if unreadable).
fn modified(tls: &TlsConfig) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(&tls.cert_file).max(m(&tls.key_file))
}

fn certified_key(tls: Option<&TlsConfig>) -> Result<CertifiedKey, TlsError> {
    let (certs, key) = serving_identity(tls)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match tls {
        Some(t) => file_error("tls.key_file", &t.key_file, e),
        None => TlsError::SelfSigned(e.to_string()),
    })
}

fn cluster_verifier(
    ca_pem: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |e: &dyn std::fmt::Display| {
        TlsError::ClientCa(format!("{}: {e}", crate::cluster_ca::CA_KEY))
    };
    let certs = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM CERTIFICATE block found"));
    }
    client_verifier(certs, |e| bad(&e))
}

fn client_verifier(
    certs: Vec<CertificateDer<'static>>,
    bad: impl Fn(rustls::Error) -> TlsError,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(&bad)?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_when_tls_is_absent_and_cn_extraction() {
        let cfg = server_config(&ExternalMetricsConfig::default()).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
        let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn missing_files_name_the_key() {
        let cfg = ExternalMetricsConfig {
            tls: Some(TlsConfig {
                cert_file: "/nonexistent/tls.crt".into(),
                key_file: "/nonexistent/tls.key".into(),
            }),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("external_metrics.tls.cert_file"), "{err}");
        assert!(err.contains("/nonexistent/tls.crt"), "{err}");
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    fn write_pair(dir: &Path, cn: &str) -> Vec<u8> {
        let c = rcgen::generate_simple_self_signed(vec![cn.to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), c.signing_key.serialize_pem()).unwrap();
        c.cert.der().to_vec()
    }

    #[test]
    fn reloader_swaps_on_change_and_keeps_the_old_pair_on_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = write_pair(dir, "one");
        let cfg = ExternalMetricsConfig {
            tls: Some(TlsConfig {
                cert_file: dir.join("tls.crt"),
                key_file: dir.join("tls.key"),
            }),
            ..Default::default()
        };
        let (_, mut reloader) = server_config_with_reload(&cfg).unwrap();
        let served = |r: &CertReloader| r.current.load().cert[0].to_vec();
        assert_eq!(served(&reloader), first);
        assert!(!reloader.check().unwrap());
        // A plain test thread, no runtime: lets the file's mtime move on (coarse clocks).
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("tls.key"), "garbage").unwrap();
        assert!(reloader.check().is_err());
        assert_eq!(served(&reloader), first);
        let second = write_pair(dir, "two");
        assert!(reloader.check().unwrap());
        assert_eq!(served(&reloader), second);
    }
}
