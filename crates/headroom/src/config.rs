//! The planner's configuration: a [`HeadroomSpec`] as written in YAML (every key checked by
//! serde, unknown keys refused) and the [`HeadroomConfig`] it validates into, which cannot hold
//! an invalid state (a floor above the cap, a zero pod capacity, a peak at 25:00).

use std::time::Duration;

use serde::Deserialize;

/// Seconds in a day: scheduled peaks repeat with this period, in UTC.
pub const DAY_SECONDS: u64 = 86_400;

/// The configuration as written, before validation. Parse a [`HeadroomConfig`] instead unless
/// you build one in code.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadroomSpec {
    /// Searches per second (nq/s of `search_demand`) one query-node pod is sized for: the HPA's
    /// `AverageValue` target per pod, so that headroom and the HPA count the same pods.
    pub pod_capacity: f64,
    /// The HPA's tolerance (kube-controller-manager's `--horizontal-pod-autoscaler-tolerance`,
    /// 0.1 by default): within it the HPA keeps its replicas, so no headroom is held for pods it
    /// would not ask for.
    #[serde(default = "default_tolerance")]
    pub hpa_tolerance: f64,
    /// How long a query node asked for now takes to serve; only its `node_launch` sizes the
    /// headroom (see [`TimeToReadySpec`]).
    pub time_to_ready: TimeToReadySpec,
    /// Window over which the demand's growth rate is measured.
    #[serde(with = "humantime_serde")]
    pub growth_window: Duration,
    /// How long the wanted headroom must stay below what is held before any is given back.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// Least time between two steps down of one pod each, once the hold has passed.
    #[serde(with = "humantime_serde")]
    pub step_down_interval: Duration,
    /// Headroom pods held at least, whatever the demand.
    #[serde(default)]
    pub floor: u32,
    /// Headroom pods held at most.
    pub cap: u32,
    /// How long before each scheduled peak its headroom is held (default:
    /// `time_to_ready.node_launch`).
    #[serde(default, with = "humantime_serde")]
    pub peak_lead: Option<Duration>,
    /// Known daily peaks (UTC).
    #[serde(default)]
    pub peaks: Vec<PeakSpec>,
}

fn default_tolerance() -> f64 {
    0.1
}

/// The measured time from asking for a query node to it serving, in its two parts.
///
/// Only `node_launch` sizes the headroom: placeholders make room on machines, and what they save
/// a new query node is the wait for a machine. The pod that takes a placeholder's room still
/// loads its segments for `load`, whatever is held, and so does every pod the HPA adds; room
/// asked for `load` earlier than a machine is needed is a machine idle for `load` longer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeToReadySpec {
    /// Seconds from a pod going pending until a machine for it takes pods (the provisioner's scan
    /// plus the instance's launch and bootstrap; from the planner's decision, add one
    /// `interval`): how far ahead the demand's growth is projected, and the default `peak_lead`.
    #[serde(with = "humantime_serde")]
    pub node_launch: Duration,
    /// Seconds from the query node's start until it serves (Milvus loading its segments). Not
    /// part of the sizing (see above); optional.
    #[serde(default, with = "humantime_serde")]
    pub load: Duration,
}

/// One known daily peak, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeakSpec {
    /// Time of day the peak starts, UTC, `HH:MM` or `HH:MM:SS`.
    pub start: String,
    /// How long the peak lasts (at most 24 h).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The demand expected during the peak, nq/s.
    pub expected_demand: f64,
}

/// What is wrong with a configuration; every variant names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A number that must be finite and above zero is not.
    #[error("{key}: expected a finite number > 0, got {value}")]
    NotPositive {
        /// The key, e.g. `pod_capacity`.
        key: String,
        /// What was found.
        value: f64,
    },
    /// A number that must be finite and at least zero is not.
    #[error("{key}: expected a finite number >= 0, got {value}")]
    Negative {
        /// The key, e.g. `peaks[0].expected_demand`.
        key: String,
        /// What was found.
        value: f64,
    },
    /// A duration that must be above zero is zero.
    #[error("{key}: expected a duration > 0")]
    ZeroDuration {
        /// The key, e.g. `step_down_interval`.
        key: String,
    },
    /// A duration longer than a day where only a day makes sense.
    #[error("{key}: expected at most 24h, got {}", humantime::format_duration(*.value))]
    LongerThanADay {
        /// The key, e.g. `peaks[1].duration`.
        key: String,
        /// What was found.
        value: Duration,
    },
    /// The HPA tolerance is not a fraction below 1.
    #[error("hpa_tolerance: expected a number >= 0 and < 1, got {value}")]
    Tolerance {
        /// What was found.
        value: f64,
    },
    /// The floor is above the cap.
    #[error("floor: {floor} is above cap {cap}")]
    FloorAboveCap {
        /// The floor as written.
        floor: u32,
        /// The cap as written.
        cap: u32,
    },
    /// A time of day that does not parse.
    #[error(
        "{key}: expected a time of day HH:MM or HH:MM:SS (UTC, 00:00 to 23:59:59), got {value:?}"
    )]
    TimeOfDay {
        /// The key, e.g. `peaks[0].start`.
        key: String,
        /// What was found.
        value: String,
    },
}

impl ConfigError {
    /// The key the error is about, as a dotted path inside the headroom configuration.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::NotPositive { key, .. }
            | ConfigError::Negative { key, .. }
            | ConfigError::ZeroDuration { key }
            | ConfigError::LongerThanADay { key, .. }
            | ConfigError::TimeOfDay { key, .. } => key,
            ConfigError::FloorAboveCap { .. } => "floor",
            ConfigError::Tolerance { .. } => "hpa_tolerance",
        }
    }
}

/// A known daily peak, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    start_seconds: u64,
    duration: Duration,
    expected_demand: f64,
}

impl Peak {
    /// Seconds after midnight UTC the peak starts.
    pub fn start_seconds(&self) -> u64 {
        self.start_seconds
    }
    /// How long the peak lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// The demand expected during it, nq/s.
    pub fn expected_demand(&self) -> f64 {
        self.expected_demand
    }
}

/// A validated configuration: only reachable through [`TryFrom<HeadroomSpec>`] or serde.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "HeadroomSpec")]
pub struct HeadroomConfig {
    pod_capacity: f64,
    hpa_tolerance: f64,
    node_launch: Duration,
    load: Duration,
    growth_window: Duration,
    hold: Duration,
    step_down_interval: Duration,
    floor: u32,
    cap: u32,
    peak_lead: Duration,
    peaks: Vec<Peak>,
}

impl HeadroomConfig {
    /// nq/s one pod is sized for.
    pub fn pod_capacity(&self) -> f64 {
        self.pod_capacity
    }
    /// The HPA's tolerance, a fraction in `[0, 1)`.
    pub fn hpa_tolerance(&self) -> f64 {
        self.hpa_tolerance
    }
    /// Pod pending to machine taking pods: how far ahead the growth is projected.
    pub fn node_launch(&self) -> Duration {
        self.node_launch
    }
    /// Query node start to serving, as written: not part of the sizing.
    pub fn load(&self) -> Duration {
        self.load
    }
    /// Window of the growth rate.
    pub fn growth_window(&self) -> Duration {
        self.growth_window
    }
    /// Hold before any headroom is given back.
    pub fn hold(&self) -> Duration {
        self.hold
    }
    /// Least time between two steps down.
    pub fn step_down_interval(&self) -> Duration {
        self.step_down_interval
    }
    /// Least headroom, pods.
    pub fn floor(&self) -> u32 {
        self.floor
    }
    /// Most headroom, pods (never below the floor).
    pub fn cap(&self) -> u32 {
        self.cap
    }
    /// How long before a peak its headroom is held.
    pub fn peak_lead(&self) -> Duration {
        self.peak_lead
    }
    /// The known daily peaks.
    pub fn peaks(&self) -> &[Peak] {
        &self.peaks
    }
}

/// Seconds after midnight of `HH:MM` or `HH:MM:SS` (two digits each), if it is a time of day.
fn parse_time_of_day(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n: Vec<u64> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

impl TryFrom<HeadroomSpec> for HeadroomConfig {
    type Error = ConfigError;

    fn try_from(spec: HeadroomSpec) -> Result<Self, ConfigError> {
        let day = Duration::from_secs(DAY_SECONDS);
        if !(spec.pod_capacity.is_finite() && spec.pod_capacity > 0.0) {
            return Err(ConfigError::NotPositive {
                key: "pod_capacity".into(),
                value: spec.pod_capacity,
            });
        }
        if !(spec.hpa_tolerance.is_finite() && (0.0..1.0).contains(&spec.hpa_tolerance)) {
            return Err(ConfigError::Tolerance {
                value: spec.hpa_tolerance,
            });
        }
        for (key, d) in [
            ("growth_window", spec.growth_window),
            ("step_down_interval", spec.step_down_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { key: key.into() });
            }
        }
        if spec.floor > spec.cap {
            return Err(ConfigError::FloorAboveCap {
                floor: spec.floor,
                cap: spec.cap,
            });
        }
        let peak_lead = spec.peak_lead.unwrap_or(spec.time_to_ready.node_launch);
        if peak_lead > day {
            return Err(ConfigError::LongerThanADay {
                key: "peak_lead".into(),
                value: peak_lead,
            });
        }
        let mut peaks = Vec::with_capacity(spec.peaks.len());
        for (i, p) in spec.peaks.iter().enumerate() {
            let start_seconds =
                parse_time_of_day(&p.start).ok_or_else(|| ConfigError::TimeOfDay {
                    key: format!("peaks[{i}].start"),
                    value: p.start.clone(),
                })?;
            if p.duration.is_zero() {
                return Err(ConfigError::ZeroDuration {
                    key: format!("peaks[{i}].duration"),
                });
            }
            if p.duration > day {
                return Err(ConfigError::LongerThanADay {
                    key: format!("peaks[{i}].duration"),
                    value: p.duration,
                });
            }
            if !(p.expected_demand.is_finite() && p.expected_demand >= 0.0) {
                return Err(ConfigError::Negative {
                    key: format!("peaks[{i}].expected_demand"),
                    value: p.expected_demand,
                });
            }
            peaks.push(Peak {
                start_seconds,
                duration: p.duration,
                expected_demand: p.expected_demand,
            });
        }
        Ok(HeadroomConfig {
            pod_capacity: spec.pod_capacity,
            hpa_tolerance: spec.hpa_tolerance,
            node_launch: spec.time_to_ready.node_launch,
            load: spec.time_to_ready.load,
            growth_window: spec.growth_window,
            hold: spec.hold,
            step_down_interval: spec.step_down_interval,
            floor: spec.floor,
            cap: spec.cap,
            peak_lead,
            peaks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
pod_capacity: 6
time_to_ready: {node_launch: 100s, load: 13s}
growth_window: 5m
hold: 10m
step_down_interval: 1m
floor: 1
cap: 16
peaks:
  - {start: "08:30", duration: 3h, expected_demand: 100}
  - {start: "23:00:30", duration: 2h, expected_demand: 50}
"#;

    fn spec() -> HeadroomSpec {
        yaml_config::from_str(EXAMPLE).unwrap()
    }

    #[test]
    fn an_example_parses_with_its_values() {
        let c: HeadroomConfig = yaml_config::from_str(EXAMPLE).unwrap();
        assert_eq!(c.node_launch(), Duration::from_secs(100));
        assert_eq!(c.load(), Duration::from_secs(13));
        assert_eq!(
            c.peak_lead(),
            c.node_launch(),
            "lead defaults to the node launch: room for a machine, not for the load"
        );
        let without_load = EXAMPLE.replace(", load: 13s", "");
        assert_ne!(without_load, EXAMPLE);
        let c: HeadroomConfig = yaml_config::from_str(&without_load).unwrap();
        assert_eq!(
            (c.node_launch(), c.load()),
            (Duration::from_secs(100), Duration::ZERO)
        );
        assert_eq!(c.peaks()[0].start_seconds(), 8 * 3600 + 30 * 60);
        assert_eq!(c.peaks()[1].start_seconds(), 23 * 3600 + 30);
        assert_eq!(c.peaks()[1].duration(), Duration::from_secs(7200));
        assert_eq!((c.floor(), c.cap()), (1, 16));
        assert_eq!(c.hpa_tolerance(), 0.1, "the HPA's default tolerance");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = EXAMPLE.replace("floor: 1", "flor: 1");
        let err = yaml_config::from_str::<HeadroomConfig>(&text).unwrap_err();
        assert!(err.to_string().contains("flor"), "{err}");
    }

    #[test]
    fn a_floor_above_the_cap_is_refused_at_parse_naming_the_key() {
        let text = EXAMPLE.replace("floor: 1", "floor: 17");
        let err = yaml_config::from_str::<HeadroomConfig>(&text).unwrap_err();
        assert!(
            err.to_string().contains("floor: 17 is above cap 16"),
            "{err}"
        );
        let mut s = spec();
        s.floor = 17;
        let err = HeadroomConfig::try_from(s).unwrap_err();
        assert_eq!(err, ConfigError::FloorAboveCap { floor: 17, cap: 16 });
        assert_eq!(err.key(), "floor");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        type Change = Box<dyn Fn(&mut HeadroomSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.pod_capacity = 0.0), "pod_capacity"),
            (Box::new(|s| s.pod_capacity = f64::NAN), "pod_capacity"),
            (Box::new(|s| s.hpa_tolerance = 1.0), "hpa_tolerance"),
            (Box::new(|s| s.hpa_tolerance = -0.1), "hpa_tolerance"),
            (
                Box::new(|s| s.step_down_interval = Duration::ZERO),
                "step_down_interval",
            ),
            (
                Box::new(|s| s.growth_window = Duration::ZERO),
                "growth_window",
            ),
            (
                Box::new(|s| s.peak_lead = Some(Duration::from_secs(90_000))),
                "peak_lead",
            ),
            (
                Box::new(|s| s.peaks[1].start = "24:00".into()),
                "peaks[1].start",
            ),
            (
                Box::new(|s| s.peaks[0].start = "8:30".into()),
                "peaks[0].start",
            ),
            (
                Box::new(|s| s.peaks[0].start = "08:60".into()),
                "peaks[0].start",
            ),
            (
                Box::new(|s| s.peaks[0].duration = Duration::ZERO),
                "peaks[0].duration",
            ),
            (
                Box::new(|s| s.peaks[1].duration = Duration::from_secs(86_401)),
                "peaks[1].duration",
            ),
            (
                Box::new(|s| s.peaks[0].expected_demand = -1.0),
                "peaks[0].expected_demand",
            ),
        ];
        for (change, key) in cases {
            let mut s = spec();
            change(&mut s);
            let err = HeadroomConfig::try_from(s).unwrap_err();
            assert_eq!(err.key(), key, "{err}");
            assert!(err.to_string().starts_with(key), "{err}");
        }
        HeadroomConfig::try_from(spec()).unwrap();
    }
}
