//! Why a signal has no value: one typed reason per case, shared by the engine, both sources and
//! the snapshot, so callers and tests can tell the cases apart without reading the message. The
//! messages (`Display`) are what the APIs serve.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// A Milvus component whose metrics a signal needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The proxy (`milvus_proxy_*`).
    Proxy,
    /// A query node (`milvus_querynode_*`).
    QueryNode,
    /// The data coordinator (`milvus_datacoord_*`).
    DataCoord,
    /// The query coordinator (`milvus_querycoord_*`).
    QueryCoord,
}

impl Component {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Component::Proxy => "proxy",
            Component::QueryNode => "query-node",
            Component::DataCoord => "data-coordinator",
            Component::QueryCoord => "query-coordinator",
        }
    }

    /// The prefix of its metric names.
    pub fn metric_prefix(self) -> &'static str {
        match self {
            Component::Proxy => "milvus_proxy_",
            Component::QueryNode => "milvus_querynode_",
            Component::DataCoord => "milvus_datacoord_",
            Component::QueryCoord => "milvus_querycoord_",
        }
    }
}

/// One scrape target that did not answer, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetFailure {
    /// The URL (or the target as configured, for a DNS name or file that failed).
    pub target: String,
    /// Why it failed.
    pub error: String,
}

impl fmt::Display for TargetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.error)
    }
}

/// Why a signal is unknown. Never a zero: every API turns it into its "unavailable".
#[derive(Debug, Clone, Error, PartialEq)]
pub enum Unknown {
    /// The instance's poller has not completed a round yet.
    #[error("no scrape round has completed yet")]
    NoRound,
    /// The round completed but produced nothing for this signal key.
    #[error("the source reported nothing for it")]
    NotReported,
    /// No scrape target answered this round.
    #[error("no target answered this round")]
    NoTargetAnswered,
    /// None of the targets that answered exports the component's metrics.
    #[error("no scraped target exports {} metrics ({}*)", .0.name(), .0.metric_prefix())]
    ComponentMissing(Component),
    /// A query node exports neither queue gauge, so the queue depth would silently miss it.
    #[error("a query node exports neither milvus_querynode_read_task_ready_len nor _unsolved_len")]
    QueueGaugeMissing,
    /// Query nodes answered but none exports a read-task gauge.
    #[error(
        "no scraped query node exports milvus_querynode_read_task_ready_len, _unsolved_len or _concurrency"
    )]
    InFlightGaugesMissing,
    /// A proxy exports one of the two inputs of `search_demand` but not the other.
    #[error("proxy target {target} exports {has} but not {missing}: search_demand needs both")]
    DemandHalfExported {
        /// The proxy target.
        target: String,
        /// The metric it exports.
        has: &'static str,
        /// The metric it lacks.
        missing: &'static str,
    },
    /// A rate needs two rounds of a proxy inside the window, and there is one.
    #[error("warming up: a rate needs two scrapes of a proxy inside the window")]
    WarmingUp,
    /// A query node of the newest round has no point inside the window.
    #[error("warming up: query node {node:?} has no sample inside the last {window:?}")]
    NodeWarmingUp {
        /// Its `node_id`.
        node: String,
        /// The window.
        window: Duration,
    },
    /// No search completed inside the window while some are queued or executing: stuck.
    #[error("no search completed in the last {window:?} while {in_flight} are queued or executing")]
    Stuck {
        /// Searches queued or executing.
        in_flight: f64,
        /// The window.
        window: Duration,
    },
    /// No search completed inside the window, and how many are in flight is unknown.
    #[error(
        "no search completed in the last {window:?}, and whether searches are stuck is unknown: {reason}"
    )]
    StuckUnknown {
        /// The window.
        window: Duration,
        /// Why the in-flight count is unknown.
        reason: String,
    },
    /// This Milvus version reports index builds for the whole instance only.
    #[error(
        "Milvus 2.5.5 and later count index builds in milvus_datacoord_task_count{{task_type=\"JobTypeIndexJob\"}}, which has no collection_id; ask for the instance-wide value (no collection)"
    )]
    IndexBuildsInstanceOnly,
    /// Every scrape target failed this round.
    #[error("source unreachable: {}", join(.0))]
    SourceUnreachable(Vec<TargetFailure>),
    /// A PromQL query returned no series.
    #[error("no series matched: {0}")]
    NoSeriesMatched(String),
    /// A PromQL query failed: Prometheus unreachable, an HTTP error, or an unexpected answer.
    #[error("{0}")]
    PromQl(String),
}

fn join(failures: &[TargetFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_served() {
        assert_eq!(
            Unknown::ComponentMissing(Component::QueryNode).to_string(),
            "no scraped target exports query-node metrics (milvus_querynode_*)"
        );
        assert_eq!(
            Unknown::SourceUnreachable(vec![
                TargetFailure {
                    target: "http://a/metrics".into(),
                    error: "timed out".into()
                },
                TargetFailure {
                    target: "http://b/metrics".into(),
                    error: "HTTP 500".into()
                },
            ])
            .to_string(),
            "source unreachable: http://a/metrics: timed out; http://b/metrics: HTTP 500"
        );
        assert_eq!(
            Unknown::Stuck {
                in_flight: 8.0,
                window: Duration::from_secs(30)
            }
            .to_string(),
            "no search completed in the last 30s while 8 are queued or executing"
        );
    }
}
