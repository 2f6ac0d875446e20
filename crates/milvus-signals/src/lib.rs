//! Milvus scaling signals: parse Milvus's Prometheus metrics, derive the signal catalogue
//! (queue depth, latency quantiles, search rate, pending index builds, loaded data) over a sliding
//! window, and publish them in a lock-free snapshot that the serving APIs read.

pub mod catalogue;
pub mod engine;
pub mod exposition;
pub mod metric_names;
pub mod milvus;
pub mod quantile;
pub mod scale_out;
pub mod snapshot;
pub mod source;
pub mod unknown;

pub use catalogue::{Signal, SignalKey};
pub use snapshot::{InstanceSnapshot, Reading, SignalError, Snapshot, SnapshotStore};
pub use unknown::Unknown;

#[cfg(test)]
pub(crate) mod test_fixtures {
    /// Reads a real Milvus 2.3.5 capture from the repository's `tests/fixtures`, or from
    /// `MILVUS_FIXTURES_DIR` when set.
    pub fn fixture(name: &str) -> String {
        let dir = std::env::var("MILVUS_FIXTURES_DIR")
            .unwrap_or_else(|_| format!("{}/../../tests/fixtures", env!("CARGO_MANIFEST_DIR")));
        let path = format!("{dir}/{name}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("fixture {path}: {e} (set MILVUS_FIXTURES_DIR to the fixtures folder)")
        })
    }
}
