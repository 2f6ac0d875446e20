//! The Kubernetes external metrics API (`external.metrics.k8s.io/v1beta1`) for Milvus scaling
//! signals, served over HTTPS as an aggregated API behind an `APIService`.
//!
//! - [`config`]: the `external_metrics:` configuration section;
//! - [`selector`]: Kubernetes label selectors (pure parser and matcher);
//! - [`quantity`]: signal values as Kubernetes quantities;
//! - [`api`]: discovery documents, `ExternalMetricValueList` and `Status`, as pure functions of
//!   the signal snapshot;
//! - [`cluster_ca`]: the front-proxy client CA read live from the cluster;
//! - [`tls`]: rustls configuration (serving certificate, front-proxy client verification);
//! - [`server`]: the accept loop, router, authentication and request metrics.
//!
//! Every answer is computed from the in-memory [`milvus_signals::Snapshot`]; no request does I/O.

pub mod api;
pub mod cluster_ca;
pub mod config;
pub mod metric_names;
pub mod quantity;
pub mod selector;
pub mod server;
pub mod tls;

pub use config::ExternalMetricsConfig;
pub use server::{MetricsApiServer, ServerError};
