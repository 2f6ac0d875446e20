//! The `leader_election:` settings, as each section that elects a writer has them
//! (`headroom.leader_election`, `node_groups.leader_election`): one type, one set of defaults
//! (client-go's), except the Lease's name, which the section supplies ([`crate::lease::resolve`]).

use std::time::Duration;

use serde::Deserialize;
use yaml_config::Invalid;

/// `<section>.leader_election`: of several milvus-scaler replicas only the holder of a
/// `coordination.k8s.io/v1` Lease writes ([`crate::lease`]); the others plan, serve metrics and
/// stay ready. Defaults are client-go's (15s / 10s / 2s).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// `true` or `false`; unset: on when the section's `mode: apply` and milvus-scaler runs in a
    /// pod (`KUBERNETES_SERVICE_HOST` set), off otherwise (dry-run writes nothing to elect for).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The Lease's name (the RBAC Role names it in `resourceNames`); unset: the section's default
    /// (`milvus-scaler-headroom`, `milvus-scaler-node-groups`).
    #[serde(default)]
    pub lease_name: Option<String>,
    /// The Lease's namespace; unset: the pod's own (its ServiceAccount's namespace file).
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long a lease is good for after its holder last renewed it, as others count it from
    /// when they saw it change (whole seconds: the Lease's `leaseDurationSeconds`).
    #[serde(default = "default_lease_duration", with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader keeps acting as leader; shorter
    /// than `lease_duration`, so it stops before anyone else may take over.
    #[serde(default = "default_renew_deadline", with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew; shorter than `renew_deadline`.
    #[serde(default = "default_retry_period", with = "humantime_serde")]
    pub retry_period: Duration,
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            lease_name: None,
            namespace: None,
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
        }
    }
}

impl LeaderElectionConfig {
    /// The Lease's name: `lease_name`, else the section's `default`.
    pub fn lease_name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.lease_name.as_deref().unwrap_or(default)
    }

    /// Checks names and the durations' order (`retry_period < renew_deadline < lease_duration`);
    /// errors name the key below `leader_election`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(name) = &self.lease_name {
            check_name("lease_name", name)?;
        }
        if let Some(ns) = &self.namespace {
            check_name("namespace", ns)?;
        }
        let secs = self.lease_duration.as_secs();
        if secs == 0 || self.lease_duration.subsec_nanos() != 0 || i32::try_from(secs).is_err() {
            return Err(Invalid::new(
                "lease_duration",
                format!(
                    "expected a whole number of seconds >= 1s (the Lease's leaseDurationSeconds), found {:?}",
                    self.lease_duration
                ),
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(Invalid::new(
                "renew_deadline",
                format!(
                    "must be shorter than lease_duration ({:?}), found {:?}: the leader must stop before another replica may take over",
                    self.lease_duration, self.renew_deadline
                ),
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(Invalid::new(
                "retry_period",
                format!(
                    "must be above 0 and shorter than renew_deadline ({:?}), found {:?}: the leader must get to renew before its deadline",
                    self.renew_deadline, self.retry_period
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `s` is a DNS-1123 subdomain (what Kubernetes accepts as a Deployment, CapacityBuffer or
/// namespace name; namespaces are further limited to a label, which the API server enforces).
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `Ok` when `value` is a Kubernetes object name ([`is_object_name`]), else an error at `key`.
pub fn check_name(key: &str, value: &str) -> Result<(), Invalid> {
    if is_object_name(value) {
        Ok(())
    } else {
        Err(Invalid::new(
            key,
            format!(
                "expected a Kubernetes object name (lowercase letters, digits, '-', '.'), found {value:?}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LeaderElectionConfig, Invalid> {
        yaml_config::from_str(text)
    }

    #[test]
    fn defaults_are_client_gos_and_the_name_is_the_sections() {
        let le = parse("{}").unwrap();
        assert_eq!(le, LeaderElectionConfig::default());
        assert_eq!(le.enabled, None, "unset: decided by mode and pod");
        assert_eq!(
            le.lease_name_or("milvus-scaler-node-groups"),
            "milvus-scaler-node-groups"
        );
        assert_eq!(
            (le.lease_duration, le.renew_deadline, le.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        le.validate().unwrap();
        let named = parse("{lease_name: ng, namespace: ops}").unwrap();
        assert_eq!(named.lease_name_or("milvus-scaler-node-groups"), "ng");
        named.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        for (le, key, says) in [
            (
                "{renew_deadline: 15s}",
                "renew_deadline",
                "shorter than lease_duration",
            ),
            (
                "{lease_duration: 8s}",
                "renew_deadline",
                "shorter than lease_duration",
            ),
            (
                "{retry_period: 10s}",
                "retry_period",
                "shorter than renew_deadline",
            ),
            ("{retry_period: 0s}", "retry_period", "above 0"),
            (
                "{lease_duration: 15500ms}",
                "lease_duration",
                "whole number of seconds",
            ),
            (
                "{lease_name: Headroom_Lease}",
                "lease_name",
                "Kubernetes object name",
            ),
            ("{namespace: 'a b'}", "namespace", "Kubernetes object name"),
        ] {
            let err = parse(le).unwrap().validate().unwrap_err();
            assert_eq!(err.path, key, "{le}: {err:?}");
            assert!(err.message.contains(says), "{le}: {err:?}");
        }
        let err = parse("{lease: x}").unwrap_err();
        assert!(err.to_string().contains("lease"), "{err}");
    }
}
