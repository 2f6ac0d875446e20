//! segment-cache: an NVMe read-through cache of an S3 bucket for Milvus query nodes.
//!
//! - [`s3`]: the S3 endpoint (s3s) — reads from the cache, everything else forwarded upstream;
//! - [`store`]: the cache directory (atomic, verified commits; index rebuilt at start);
//! - [`index`], [`keys`], [`accesslog`], [`verify`]: pure bookkeeping, tested without sockets;
//!   [`access_writer`] writes the access log off the request path;
//! - [`upstream`]: the aws-sdk-s3 client and the whole/ranged fetchers ([`chunk_file`] writes
//!   their bodies), retried by the one budget of [`retry`], over an [`object_client`]
//!   (aws-sdk-s3, or an in-memory fake and a failure injector for tests);
//! - [`readahead`]: which files of a segment a read miss fetches next, in the background;
//! - [`warm`]: the parallel warmer; [`telemetry`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`config`]: the YAML configuration.

pub mod access_writer;
pub mod accesslog;
pub mod chunk_file;
pub mod config;
pub mod index;
pub mod keys;
pub mod metric_names;
pub mod object_client;
pub mod readahead;
pub mod retry;
pub mod s3;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod verify;
pub mod warm;
