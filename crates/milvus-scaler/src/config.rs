//! The configuration file: one YAML document, validated at start with the offending key named.
//!
//! The file is read into [`ConfigFile`] (the types serde can check: unknown keys, durations,
//! addresses, one source per instance), then [`ConfigFile::resolve`] checks what spans keys and
//! resolves the node groups, once. Only a valid configuration becomes a [`Config`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use milvus_signals::source::scrape::TargetSpec;
use serde::Deserialize;
use yaml_config::Invalid;

/// The whole configuration of `milvus-scaler`, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Milvus instances to read signals from (at least one, unique names).
    pub milvus: Vec<MilvusInstance>,
    /// Signal maths settings.
    pub signals: SignalsConfig,
    /// Where `serve` exposes its own metrics and health endpoints.
    pub telemetry: TelemetryConfig,
    /// EC2 Auto Scaling node-group sizing (docs/node-groups.md), resolved; off when absent.
    pub node_groups: Option<node_groups::NodeGroups>,
    /// Serve the Kubernetes external metrics API (`external.metrics.k8s.io`); absent: not served.
    pub external_metrics: Option<metrics_api::ExternalMetricsConfig>,
    /// KEDA external scaler (gRPC); not served when absent.
    pub keda: Option<keda_scaler::KedaConfig>,
    /// Node headroom for the query nodes (docs/headroom.md), validated; off when absent.
    pub headroom: Option<headroom_holder::HeadroomSection>,
}

/// The configuration file as written (docs/configuration.md): what serde checks by type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The Milvus instances to read signals from.
    pub milvus: Vec<MilvusInstance>,
    /// Signal maths settings.
    #[serde(default)]
    pub signals: SignalsConfig,
    /// Where `serve` exposes its own metrics and health endpoints.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// EC2 Auto Scaling node-group sizing (docs/node-groups.md); off when absent.
    #[serde(default)]
    pub node_groups: Option<node_groups::NodeGroupsConfig>,
    /// Serve the Kubernetes external metrics API (`external.metrics.k8s.io`); absent: not served.
    #[serde(default)]
    pub external_metrics: Option<metrics_api::ExternalMetricsConfig>,
    /// KEDA external scaler (gRPC); not served when absent.
    #[serde(default)]
    pub keda: Option<keda_scaler::KedaConfig>,
    /// Node headroom for the query nodes (docs/headroom.md); off when absent.
    #[serde(default)]
    pub headroom: Option<headroom_holder::HeadroomSection>,
}

/// One Milvus instance and where its metrics come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "MilvusInstanceFile")]
pub struct MilvusInstance {
    /// Instance name, served as label `milvus=<name>`; unique, a DNS label.
    pub name: String,
    /// Kubernetes namespace the instance's metrics are served under.
    pub namespace: String,
    /// Where the metrics come from: written as a `scrape:` or a `prometheus:` key.
    pub source: Source,
}

/// Where an instance's metrics come from: exactly one of the two.
#[derive(Debug, Clone)]
pub enum Source {
    /// Scrape Milvus pods directly (`scrape:`).
    Scrape(ScrapeConfig),
    /// Query an existing Prometheus (`prometheus:`).
    Prometheus(PrometheusConfig),
}

impl Source {
    /// Time between rounds.
    pub fn interval(&self) -> Duration {
        match self {
            Source::Scrape(s) => s.interval,
            Source::Prometheus(p) => p.interval,
        }
    }

    /// Per-request timeout: the configured one, else the interval.
    pub fn timeout(&self) -> Duration {
        match self {
            Source::Scrape(s) => s.timeout.unwrap_or(s.interval),
            Source::Prometheus(p) => p.timeout.unwrap_or(p.interval),
        }
    }

    /// The key the source is written under, `scrape` or `prometheus`.
    pub fn key(&self) -> &'static str {
        match self {
            Source::Scrape(_) => "scrape",
            Source::Prometheus(_) => "prometheus",
        }
    }
}

/// An instance as written: two optional keys, of which [`MilvusInstance`] accepts exactly one.
/// (serde's `flatten` would take the enum directly but loses `deny_unknown_fields` and the
/// line/column of errors inside the source.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MilvusInstanceFile {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    scrape: Option<ScrapeConfig>,
    #[serde(default)]
    prometheus: Option<PrometheusConfig>,
}

impl TryFrom<MilvusInstanceFile> for MilvusInstance {
    type Error = &'static str;
    fn try_from(m: MilvusInstanceFile) -> Result<Self, Self::Error> {
        let source = match (m.scrape, m.prometheus) {
            (Some(s), None) => Source::Scrape(s),
            (None, Some(p)) => Source::Prometheus(p),
            (Some(_), Some(_)) => {
                return Err("expected exactly one of `scrape` and `prometheus`, found both");
            }
            (None, None) => {
                return Err("expected exactly one of `scrape` and `prometheus`, found neither");
            }
        };
        Ok(MilvusInstance {
            name: m.name,
            namespace: m.namespace,
            source,
        })
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

/// Direct scrape of `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// `http://HOST:PORT/metrics` or `dns+http://NAME:PORT/metrics` (every address of NAME).
    pub targets: Vec<TargetSpec>,
    /// Time between rounds.
    #[serde(default = "default_scrape_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Per-target request timeout; defaults to the interval.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

fn default_scrape_interval() -> Duration {
    Duration::from_secs(1)
}

/// PromQL against an existing Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Label matchers selecting this instance's series, e.g. `namespace="milvus"`.
    #[serde(default)]
    pub selector: String,
    /// Time between rounds.
    #[serde(default = "default_prometheus_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Per-query timeout; defaults to the interval.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

fn default_prometheus_interval() -> Duration {
    Duration::from_secs(5)
}

/// Signal maths settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// Window of rates and latency quantiles.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// A value older than this is unknown.
    #[serde(default = "default_stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
    /// `search_demand` asks for the capacity to drain the nq in flight within this time: they
    /// add nq in flight / `demand_drain` to the received nq rate. At least 1s.
    #[serde(default = "default_demand_drain", with = "humantime_serde")]
    pub demand_drain: Duration,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            stale_after: default_stale_after(),
            demand_drain: default_demand_drain(),
        }
    }
}

fn default_demand_drain() -> Duration {
    milvus_signals::engine::DEFAULT_DEMAND_DRAIN
}

fn default_window() -> Duration {
    Duration::from_secs(30)
}

fn default_stale_after() -> Duration {
    Duration::from_secs(10)
}

/// Telemetry endpoint settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_telemetry_listen")]
    pub listen: SocketAddr,
    /// Histogram series not recorded for this long are dropped from `/metrics` (per-target
    /// scrape durations of pods that are gone, routes nobody calls); `0s` keeps them for ever.
    #[serde(default = "default_forget_idle", with = "humantime_serde")]
    pub forget_idle_series_after: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: default_telemetry_listen(),
            forget_idle_series_after: default_forget_idle(),
        }
    }
}

fn default_forget_idle() -> Duration {
    Duration::from_secs(600)
}

fn default_telemetry_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

pub use yaml_config::ConfigError;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let config: ConfigFile = yaml_config::read(path)?;
        config.resolve().map_err(|e| e.in_file(&file))
    }

    /// Reads the files at `paths` (one or more), merges them by top-level section and validates
    /// the result. Each file holds whole sections (`milvus:`, `keda:`, `node_groups:`, ...); a
    /// section in two files is an error naming both, so a component adds its section instead of
    /// replacing the whole configuration (docs/configuration.md, "Several files").
    pub fn load_all(paths: &[PathBuf]) -> Result<Config, ConfigError> {
        match paths {
            [] => Err(ConfigError::invalid(
                "(command line)",
                "--config",
                "expected at least one configuration file",
            )),
            [one] => Config::load(one),
            _ => {
                let mut texts = Vec::with_capacity(paths.len());
                for path in paths {
                    let file = path.display().to_string();
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                            file: file.clone(),
                            source,
                        })?;
                    texts.push((file, text));
                }
                let borrowed: Vec<(&str, &str)> = texts
                    .iter()
                    .map(|(f, t)| (f.as_str(), t.as_str()))
                    .collect();
                Config::parse_merged(&borrowed)
            }
        }
    }

    /// Merges YAML documents `(file, text)` by top-level section and validates the result, as
    /// [`Config::load_all`] does for files. Errors name the file that holds the offending section.
    pub fn parse_merged(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let (config, sections): (ConfigFile, _) = yaml_config::parse_merged(files)?;
        config.resolve().map_err(|e| {
            let file = sections.file_of(&e.path).to_string();
            e.in_file(&file)
        })
    }

    /// Parses and validates YAML `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: ConfigFile = yaml_config::parse(text, file)?;
        config.resolve().map_err(|e| e.in_file(file))
    }

    /// The longest time between two rounds of any instance.
    pub fn longest_interval(&self) -> Duration {
        self.milvus
            .iter()
            .map(|m| m.source.interval())
            .max()
            .unwrap_or_default()
    }
}

/// With a headroom holder other than `asg`, serve runs both loops, each with its own election:
/// on one Lease the two electors (one identity) would both think they lead, and each release
/// would end the other's leadership.
fn check_distinct_leases(
    h: &headroom_holder::HeadroomSection,
    ng: &node_groups::NodeGroups,
) -> Result<(), Invalid> {
    if matches!(h.holder, headroom_holder::HolderConfig::Asg(_)) {
        // One loop: the headroom's, under headroom.leader_election.
        return Ok(());
    }
    let (hl, nl) = (&h.leader_election, &ng.config().leader_election);
    let name = nl.lease_name_or(node_groups::DEFAULT_LEASE_NAME);
    if name == hl.lease_name_or(headroom_holder::config::DEFAULT_LEASE_NAME)
        && nl.namespace == hl.namespace
    {
        return Err(Invalid::new(
            "node_groups.leader_election.lease_name",
            format!(
                "{name:?} is also headroom.leader_election's Lease (in the same namespace): the node groups and the headroom are elected on their own Leases; name another (the default is {:?})",
                node_groups::DEFAULT_LEASE_NAME
            ),
        ));
    }
    Ok(())
}

impl ConfigFile {
    /// Checks what the types cannot (names, bounds, keys that depend on each other) and
    /// resolves the node groups: the one validation of a configuration.
    pub fn resolve(self) -> Result<Config, Invalid> {
        self.validate()?;
        let node_groups = match self.node_groups {
            Some(ng) => {
                let names: Vec<&str> = self.milvus.iter().map(|m| m.name.as_str()).collect();
                Some(
                    node_groups::NodeGroups::resolve(ng, &names)
                        .map_err(|e| e.under("node_groups"))?,
                )
            }
            None => None,
        };
        if let Some(h) = &self.headroom {
            let names: Vec<&str> = self.milvus.iter().map(|m| m.name.as_str()).collect();
            h.validate(&names, node_groups.as_ref())
                .map_err(|e| e.under("headroom"))?;
        }
        if let (Some(h), Some(ng)) = (&self.headroom, &node_groups) {
            check_distinct_leases(h, ng)?;
        }
        Ok(Config {
            headroom: self.headroom,
            milvus: self.milvus,
            signals: self.signals,
            telemetry: self.telemetry,
            node_groups,
            external_metrics: self.external_metrics,
            keda: self.keda,
        })
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.milvus.is_empty() {
            return Err(Invalid::new(
                "milvus",
                "expected at least one Milvus instance",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.milvus.iter().enumerate() {
            let at = |key: &str| format!("milvus[{i}].{key}");
            if !is_dns_label(&m.name) {
                return Err(Invalid::new(
                    at("name"),
                    format!(
                        "expected a DNS label (lowercase letters, digits, '-', at most 63), found {:?}",
                        m.name
                    ),
                ));
            }
            if !names.insert(m.name.as_str()) {
                return Err(Invalid::new(
                    at("name"),
                    format!("instance name {:?} is used twice", m.name),
                ));
            }
            if !is_dns_label(&m.namespace) {
                return Err(Invalid::new(
                    at("namespace"),
                    format!(
                        "expected a Kubernetes namespace name, found {:?}",
                        m.namespace
                    ),
                ));
            }
            let key = m.source.key();
            match &m.source {
                Source::Scrape(s) => {
                    if s.targets.is_empty() {
                        return Err(Invalid::new(
                            at("scrape.targets"),
                            "expected at least one target",
                        ));
                    }
                    check_interval(&at("scrape"), s.interval, s.timeout)?;
                }
                Source::Prometheus(p) => {
                    if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                        return Err(Invalid::new(
                            at("prometheus.url"),
                            format!("expected an http:// or https:// URL, found {:?}", p.url),
                        ));
                    }
                    check_interval(&at("prometheus"), p.interval, p.timeout)?;
                }
            }
            if self.signals.stale_after <= m.source.interval() {
                return Err(Invalid::new(
                    "signals.stale_after",
                    format!(
                        "must be longer than milvus[{i}].{key}.interval ({:?}), found {:?}",
                        m.source.interval(),
                        self.signals.stale_after
                    ),
                ));
            }
        }
        let longest_interval = self
            .milvus
            .iter()
            .map(|m| m.source.interval())
            .max()
            .unwrap_or_default();
        let forget = self.telemetry.forget_idle_series_after;
        if !forget.is_zero() && forget <= 3 * longest_interval {
            return Err(Invalid::new(
                "telemetry.forget_idle_series_after",
                format!(
                    "expected 0s (never) or longer than 3 × the longest source interval ({:?}), found {forget:?}",
                    longest_interval
                ),
            ));
        }
        if self.signals.window < Duration::from_secs(2) {
            return Err(Invalid::new(
                "signals.window",
                format!(
                    "must be at least 2s (a rate needs two scrapes), found {:?}",
                    self.signals.window
                ),
            ));
        }
        if self.signals.demand_drain < Duration::from_secs(1) {
            return Err(Invalid::new(
                "signals.demand_drain",
                format!(
                    "must be at least 1s (search_demand adds nq in flight / demand_drain), found {:?}",
                    self.signals.demand_drain
                ),
            ));
        }
        Ok(())
    }
}

/// `interval` and `timeout` of the source at key `at` (`milvus[0].scrape`).
fn check_interval(at: &str, interval: Duration, timeout: Option<Duration>) -> Result<(), Invalid> {
    if interval < Duration::from_millis(100) {
        return Err(Invalid::new(
            format!("{at}.interval"),
            format!("must be at least 100ms, found {interval:?}"),
        ));
    }
    if let Some(t) = timeout
        && (t.is_zero() || t > interval)
    {
        return Err(Invalid::new(
            format!("{at}.timeout"),
            format!("must be more than 0 and at most the interval ({interval:?}), found {t:?}"),
        ));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
milvus:
  - name: demo
    namespace: default
    scrape: { targets: ["http://127.0.0.1:9091/metrics"], interval: 1s }
signals: { window: 30s, stale_after: 10s }
telemetry: { listen: 127.0.0.1:9100 }
external_metrics:
  listen: 127.0.0.1:6443
  tls: { cert_file: /tls/tls.crt, key_file: /tls/tls.key }
  client_auth: { client_ca_file: /front-proxy/ca.crt, allowed_names: [front-proxy-client] }
"#;

    /// The issue's example section (milvus renamed to this file's instance).
    const NODE_GROUPS: &str = r#"
node_groups:
  region: us-east-1
  endpoint_url: http://127.0.0.1:5000
  interval: 15s
  mode: dry-run
  groups:
    - name: querynodes
      asg: eks-milvus-querynode
      milvus: demo
      instance_type: r6i.2xlarge
      pod: { cpu: "4", memory: 28Gi }
      replicas: { signal: search_queue_depth, target_per_pod: 8, min: 2, max: 40 }
      headroom_pods: 1
      scale_in: false
    - name: indexnodes
      asg: eks-milvus-indexnode-spot
      milvus: demo
      instance_type: c6i.4xlarge
      pod: { cpu: "8", memory: 16Gi }
      replicas: { signal: index_pending_builds, target_per_pod: 2, min: 0, max: 10 }
"#;

    const BASE: &str = r#"
milvus:
  - name: demo
    scrape: { targets: ["http://127.0.0.1:9091/metrics"] }
telemetry: { listen: 127.0.0.1:9100 }
"#;

    const KEDA: &str = r#"
keda:
  listen: 127.0.0.1:9090
"#;

    #[test]
    fn several_files_merge_by_top_level_section() {
        let cfg = Config::parse_merged(&[
            ("base.yaml", BASE),
            ("keda.yaml", KEDA),
            ("node-groups.yaml", NODE_GROUPS),
        ])
        .unwrap();
        assert_eq!(cfg.milvus[0].name, "demo");
        assert!(cfg.keda.is_some(), "keda section kept");
        assert_eq!(
            cfg.node_groups.unwrap().groups().len(),
            2,
            "node_groups kept"
        );
        assert_eq!(cfg.telemetry.listen.port(), 9100);
        // Order does not matter, and a file with nothing in it adds nothing.
        let cfg =
            Config::parse_merged(&[("keda.yaml", KEDA), ("empty.yaml", ""), ("base.yaml", BASE)])
                .unwrap();
        assert!(cfg.keda.is_some());
    }

    #[test]
    fn a_section_in_two_files_is_an_error_naming_both() {
        let e = Config::parse_merged(&[
            ("base.yaml", BASE),
            ("again.yaml", "telemetry: { listen: 127.0.0.1:1 }\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("again.yaml: telemetry: "), "{e}");
        assert!(e.contains("already defined in base.yaml"), "{e}");
    }

    #[test]
    fn merged_errors_name_the_file_of_the_bad_section() {
        let e = Config::parse_merged(&[
            ("base.yaml", BASE),
            ("keda.yaml", "keda: { listen: nowhere }\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("keda.yaml: keda.listen: "), "{e}");
        let e = Config::parse_merged(&[("base.yaml", BASE), ("x.yaml", "surprise: 1\n")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `surprise`"), "{e}");
        // Validation after the merge still runs (node group naming an unknown instance).
        let ng = NODE_GROUPS.replace("milvus: demo", "milvus: other");
        let e = Config::parse_merged(&[("base.yaml", BASE), ("ng.yaml", &ng)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ng.yaml: node_groups.groups[0].milvus: "),
            "{e}"
        );
    }

    #[test]
    fn load_all_reads_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (a, b) = (dir.join("base.yaml"), dir.join("keda.yaml"));
        std::fs::write(&a, BASE).unwrap();
        std::fs::write(&b, KEDA).unwrap();
        let cfg = Config::load_all(&[a.clone(), b.clone()]).unwrap();
        assert!(cfg.keda.is_some());
        assert!(
            Config::load_all(std::slice::from_ref(&a))
                .unwrap()
                .keda
                .is_none()
        );
        assert!(matches!(
            Config::load_all(&[a, dir.join("missing.yaml")]),
            Err(ConfigError::Read { .. })
        ));
        assert!(Config::load_all(&[]).is_err());
    }

    #[test]
    fn the_node_groups_example_parses() {
        let c = Config::parse(&format!("{GOOD}{NODE_GROUPS}"), "c.yaml").unwrap();
        let ng = c.node_groups.unwrap();
        assert_eq!(ng.config().mode, node_groups::Mode::DryRun);
        assert_eq!(ng.config().interval, Duration::from_secs(15));
        assert_eq!(ng.groups().len(), 2);
        assert_eq!(ng.groups()[0].config.headroom_pods, 1);
        // Resolved once, at load: the signal parsed, the node's capacity found.
        assert_eq!(
            ng.groups()[1].config.replicas.signal,
            milvus_signals::Signal::IndexPendingBuilds
        );
        assert_eq!(ng.groups()[1].node_source, node_groups::NodeSource::BuiltIn);
        assert!(Config::parse(GOOD, "c.yaml").unwrap().node_groups.is_none());
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(GOOD, "c.yaml").unwrap();
        assert!(matches!(c.milvus[0].source, Source::Scrape(_)));
        assert_eq!(c.milvus[0].source.interval(), Duration::from_secs(1));
        assert_eq!(c.milvus[0].source.timeout(), Duration::from_secs(1));
        assert_eq!(c.signals.window, Duration::from_secs(30));
        assert_eq!(c.signals.demand_drain, Duration::from_secs(120));
        let em = c.external_metrics.unwrap();
        assert_eq!(em.listen.port(), 6443);
        assert_eq!(
            em.client_auth.unwrap().allowed_names,
            ["front-proxy-client"]
        );
    }

    #[test]
    fn an_instance_has_exactly_one_source() {
        let prom = GOOD.replace(
            "scrape: { targets: [\"http://127.0.0.1:9091/metrics\"], interval: 1s }",
            "prometheus: { url: \"http://p:9090\", selector: 'namespace=\"m\"', timeout: 2s }",
        );
        let c = Config::parse(&prom, "c.yaml").unwrap();
        match &c.milvus[0].source {
            Source::Prometheus(p) => assert_eq!(p.url, "http://p:9090"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.milvus[0].source.interval(), Duration::from_secs(5));
        assert_eq!(c.milvus[0].source.timeout(), Duration::from_secs(2));
        assert_eq!(c.longest_interval(), Duration::from_secs(5));
        let both = GOOD.replace("scrape:", "prometheus: { url: http://p:9090 }\n    scrape:");
        let neither = GOOD.replace(
            "    scrape: { targets: [\"http://127.0.0.1:9091/metrics\"], interval: 1s }\n",
            "",
        );
        for (text, found) in [(both, "found both"), (neither, "found neither")] {
            let e = Config::parse(&text, "c.yaml").unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "c.yaml: milvus[0]: expected exactly one of `scrape` and `prometheus`"
                ),
                "{e}"
            );
            assert!(e.contains(found), "{e}");
        }
        // Keys inside the source keep their path and position.
        let e = Config::parse(&prom.replace("timeout: 2s", "timeout: soon"), "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml: milvus[0].prometheus.timeout: "),
            "{e}"
        );
        assert!(e.contains("line "), "{e}");
    }

    #[test]
    fn idle_series_are_forgotten_after_ten_minutes_unless_told_otherwise() {
        let c = Config::parse(GOOD, "c.yaml").unwrap();
        assert_eq!(
            c.telemetry.forget_idle_series_after,
            Duration::from_secs(600)
        );
        for ok in ["0s", "4s"] {
            let text = GOOD.replace(
                "listen: 127.0.0.1:9100",
                &format!("listen: 127.0.0.1:9100, forget_idle_series_after: {ok}"),
            );
            assert!(Config::parse(&text, "c.yaml").is_ok(), "{ok}");
        }
    }

    #[test]
    fn demand_drain_defaults_to_two_minutes_and_is_read_as_a_duration() {
        assert_eq!(
            SignalsConfig::default().demand_drain,
            Duration::from_secs(120)
        );
        for (text, expected) in [("90s", 90), ("2m", 120), ("1s", 1)] {
            let c = Config::parse(
                &GOOD.replace("window: 30s", &format!("window: 30s, demand_drain: {text}")),
                "c.yaml",
            )
            .unwrap();
            assert_eq!(
                c.signals.demand_drain,
                Duration::from_secs(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn keda_section_is_optional_and_strict() {
        assert!(Config::parse(GOOD, "c.yaml").unwrap().keda.is_none());
        let with = format!(
            "{GOOD}keda:\n  listen: 127.0.0.1:9090\n  tls: {{ cert_file: c.pem, key_file: k.pem }}\n"
        );
        let keda = Config::parse(&with, "c.yaml").unwrap().keda.unwrap();
        assert_eq!(keda.listen.port(), 9090);
        assert!(keda.tls.unwrap().client_ca_file.is_none());
        let bad = format!("{GOOD}keda:\n  listen: 127.0.0.1:9090\n  tsl: {{}}\n");
        let err = Config::parse(&bad, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("keda") && err.contains("tsl"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                GOOD.replace("interval: 1s", "interval: fast"),
                "milvus[0].scrape.interval",
            ),
            (
                GOOD.replace("window: 30s", "window: 30s, extra: 1"),
                "signals.extra",
            ),
            (GOOD.replace("name: demo", "name: Demo_1"), "milvus[0].name"),
            (
                GOOD.replace("http://127.0.0.1:9091/metrics", "127.0.0.1:9091"),
                "milvus[0].scrape.targets[0]",
            ),
            (
                GOOD.replace("stale_after: 10s", "stale_after: 1s"),
                "signals.stale_after",
            ),
            (
                GOOD.replace("window: 30s", "window: 30s, demand_drain: soon"),
                "signals.demand_drain",
            ),
            (
                GOOD.replace("window: 30s", "window: 30s, demand_drain: 500ms"),
                "signals.demand_drain",
            ),
            (
                GOOD.replace("window: 30s", "window: 30s, demand_drain: 0s"),
                "signals.demand_drain",
            ),
            (
                GOOD.replace("listen: 127.0.0.1:9100", "listen: nowhere"),
                "telemetry.listen",
            ),
            (
                GOOD.replace(
                    "listen: 127.0.0.1:9100",
                    "listen: 127.0.0.1:9100, forget_idle_series_after: 3s",
                ),
                "telemetry.forget_idle_series_after",
            ),
            (
                GOOD.replace("scrape:", "prometheus: { url: http://p:9090 }\n    scrape:"),
                "milvus[0]",
            ),
            (
                GOOD.replace("key_file: /tls/tls.key", "key: /tls/tls.key"),
                "external_metrics.tls.key",
            ),
            (
                GOOD.replace("listen: 127.0.0.1:6443", "listen: 6443"),
                "external_metrics.listen",
            ),
            ("milvus: []".to_string(), "milvus"),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("max: 40", "max: 0"),
                "node_groups.groups[0].replicas.max",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("milvus: demo", "milvus: other"),
                "node_groups.groups[0].milvus",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("r6i.2xlarge", "x9.huge"),
                "node_groups.groups[0].instance_type",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("mode: dry-run", "mode: yolo"),
                "node_groups.mode",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("memory: 28Gi", "memory: 28Gb"),
                "node_groups.groups[0].pod.memory",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("cpu: \"4\"", "cpu: \"64\""),
                "node_groups.groups[0].pod",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("search_queue_depth", "queue"),
                "node_groups.groups[0].replicas.signal",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace("headroom_pods: 1", "headroom: 1"),
                "node_groups.groups[0].headroom",
            ),
            ("milvus: 3".to_string(), "milvus"),
            (
                GOOD.replace("interval: 1s", "interval: 1s, timeout: 2s"),
                "milvus[0].scrape.timeout",
            ),
            (
                GOOD.replace("interval: 1s", "interval: 50ms"),
                "milvus[0].scrape.interval",
            ),
            (
                GOOD.replace("\"http://127.0.0.1:9091/metrics\"", ""),
                "milvus[0].scrape.targets",
            ),
            (
                format!("{GOOD}{NODE_GROUPS}").replace(
                    "scale_in: false",
                    "warm_pool: { min_size: 1, pool_state: Off }",
                ),
                "node_groups.groups[0].warm_pool.pool_state",
            ),
        ];
        for (text, path) in cases {
            match Config::parse(&text, "c.yaml") {
                Err(ConfigError::Invalid {
                    path: p, message, ..
                }) => {
                    assert_eq!(p, path, "{message}");
                    assert!(!message.is_empty());
                }
                other => panic!("{path}: expected an error, got {other:?}"),
            }
        }
    }
}
