//! Offered search load over time: what clients ask of Milvus, whatever capacity it has.

use serde::Deserialize;

use crate::SimError;

/// Seconds from the start of a spike's ramp that its SLO goal does not judge
/// ([`LoadTrace::judged_spike`]).
pub const SPIKE_GRACE_SECONDS: f64 = 120.0;

/// Offered search load (searches per second) as a function of time since the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadTrace {
    /// Piecewise-linear `[seconds, qps]` points in time order; constant after the last one.
    Points {
        /// `[t_seconds, qps]` pairs, `t` strictly increasing from 0.
        points: Vec<[f64; 2]>,
    },
    /// A quiet level, a linear ramp to a spike, the spike, a ramp back and a cool-down:
    /// the shape `make load` drives against a real cluster.
    Spike {
        /// Searches per second before and after the spike.
        quiet_qps: f64,
        /// Searches per second at the top of the spike.
        spike_qps: f64,
        /// Seconds of quiet load before the spike.
        quiet_seconds: f64,
        /// Seconds of each ramp (up and down).
        ramp_seconds: f64,
        /// Seconds at the top of the spike.
        spike_seconds: f64,
        /// Seconds of quiet load after the spike.
        cooldown_seconds: f64,
    },
    /// Whole days with daily peaks over a night floor (bell-shaped peaks, hours of day).
    Diurnal {
        /// Searches per second at night, far from every peak.
        floor_qps: f64,
        /// Searches per second at the top of each peak.
        peak_qps: f64,
        /// Hours of the day (0-24) where the peaks are highest.
        peaks_at_hours: Vec<f64>,
        /// Standard deviation of each peak's bell, hours.
        peak_width_hours: f64,
        /// How many days the trace lasts.
        days: f64,
    },
}

impl LoadTrace {
    /// Checks the trace describes a real load: finite, non-negative rates and durations.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |key: &str, message: String| Err(SimError::invalid(key, message));
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            LoadTrace::Points { points } => {
                if points.is_empty() {
                    return bad(
                        "points",
                        "at least one [seconds, qps] point is needed".into(),
                    );
                }
                let mut last = f64::NEG_INFINITY;
                for (i, [t, q]) in points.iter().enumerate() {
                    if !ok(*t) || !ok(*q) || *t <= last {
                        return bad(
                            &format!("points[{i}]"),
                            format!(
                                "expected [seconds, qps], both finite and >= 0, seconds strictly increasing; got [{t}, {q}]"
                            ),
                        );
                    }
                    last = *t;
                }
            }
            LoadTrace::Spike {
                quiet_qps,
                spike_qps,
                quiet_seconds,
                ramp_seconds,
                spike_seconds,
                cooldown_seconds,
            } => {
                for (name, v) in [
                    ("quiet_qps", quiet_qps),
                    ("spike_qps", spike_qps),
                    ("quiet_seconds", quiet_seconds),
                    ("ramp_seconds", ramp_seconds),
                    ("spike_seconds", spike_seconds),
                    ("cooldown_seconds", cooldown_seconds),
                ] {
                    if !ok(*v) {
                        return bad(name, format!("expected a finite number >= 0, got {v}"));
                    }
                }
            }
            LoadTrace::Diurnal {
                floor_qps,
                peak_qps,
                peaks_at_hours,
                peak_width_hours,
                days,
            } => {
                if !ok(*floor_qps) || !ok(*peak_qps) || peak_qps < floor_qps {
                    return bad("floor_qps", "expected 0 <= floor_qps <= peak_qps".into());
                }
                if !(peak_width_hours.is_finite() && *peak_width_hours > 0.0) {
                    return bad("peak_width_hours", "expected a number > 0".into());
                }
                if !(days.is_finite() && *days > 0.0) {
                    return bad("days", "expected a number > 0".into());
                }
                if let Some(h) = peaks_at_hours.iter().find(|h| !(0.0..=24.0).contains(*h)) {
                    return bad("peaks_at_hours", format!("expected hours 0-24, got {h}"));
                }
            }
        }
        Ok(())
    }

    /// How long the trace lasts, seconds.
    pub fn duration_seconds(&self) -> f64 {
        match self {
            LoadTrace::Points { points } => points.last().map_or(0.0, |p| p[0]),
            LoadTrace::Spike {
                quiet_seconds,
                ramp_seconds,
                spike_seconds,
                cooldown_seconds,
                ..
            } => quiet_seconds + 2.0 * ramp_seconds + spike_seconds + cooldown_seconds,
            LoadTrace::Diurnal { days, .. } => days * 86_400.0,
        }
    }

    /// For a [`LoadTrace::Spike`], the part of the spike its SLO goal judges: from
    /// [`SPIKE_GRACE_SECONDS`] after the ramp starts to the end of the top. Capacity cannot follow
    /// a step in load faster than pods and machines start, so the goal (p99 within the SLO for at
    /// least 95 % of the spike after its first 2 minutes) leaves the first minutes out. `None`
    /// for other traces.
    pub fn judged_spike(&self) -> Option<(f64, f64)> {
        match self {
            LoadTrace::Spike {
                quiet_seconds,
                ramp_seconds,
                spike_seconds,
                ..
            } => Some((
                quiet_seconds + SPIKE_GRACE_SECONDS,
                quiet_seconds + ramp_seconds + spike_seconds,
            )),
            _ => None,
        }
    }

    /// Offered searches per second at `t` seconds since the start.
    pub fn qps_at(&self, t: f64) -> f64 {
        match self {
            LoadTrace::Points { points } => interpolate(points, t),
            LoadTrace::Spike {
                quiet_qps,
                spike_qps,
                quiet_seconds,
                ramp_seconds,
                spike_seconds,
                ..
            } => {
                let up = quiet_seconds + ramp_seconds;
                let down = up + spike_seconds;
                interpolate(
                    &[
                        [0.0, *quiet_qps],
                        [*quiet_seconds, *quiet_qps],
                        [up, *spike_qps],
                        [down, *spike_qps],
                        [down + ramp_seconds, *quiet_qps],
                    ],
                    t,
                )
            }
            LoadTrace::Diurnal {
                floor_qps,
                peak_qps,
                peaks_at_hours,
                peak_width_hours,
                ..
            } => {
                let hour = (t / 3600.0).rem_euclid(24.0);
                let bell = peaks_at_hours
                    .iter()
                    .map(|p| {
                        // Distance on the 24 h circle, so a peak near midnight wraps.
                        let d = (hour - p).abs();
                        let d = d.min(24.0 - d);
                        (-(d * d) / (2.0 * peak_width_hours * peak_width_hours)).exp()
                    })
                    .fold(0.0, f64::max);
                floor_qps + (peak_qps - floor_qps) * bell
            }
        }
    }
}

fn interpolate(points: &[[f64; 2]], t: f64) -> f64 {
    let Some(first) = points.first() else {
        return 0.0;
    };
    if t <= first[0] {
        return first[1];
    }
    for pair in points.windows(2) {
        let ([t0, q0], [t1, q1]) = (pair[0], pair[1]);
        if t <= t1 {
            let span = t1 - t0;
            return if span > 0.0 {
                q0 + (q1 - q0) * (t - t0) / span
            } else {
                q1
            };
        }
    }
    points.last().map_or(0.0, |p| p[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spike_has_its_levels_and_ramps() {
        let trace = LoadTrace::Spike {
            quiet_qps: 10.0,
            spike_qps: 100.0,
            quiet_seconds: 60.0,
            ramp_seconds: 10.0,
            spike_seconds: 100.0,
            cooldown_seconds: 50.0,
        };
        trace.validate().unwrap();
        assert_eq!(trace.duration_seconds(), 230.0);
        assert_eq!(trace.qps_at(30.0), 10.0);
        assert_eq!(trace.qps_at(65.0), 55.0);
        assert_eq!(trace.qps_at(120.0), 100.0);
        assert_eq!(trace.qps_at(229.0), 10.0);
    }

    #[test]
    fn diurnal_peaks_where_asked_and_wraps_midnight() {
        let trace = LoadTrace::Diurnal {
            floor_qps: 10.0,
            peak_qps: 100.0,
            peaks_at_hours: vec![10.0, 23.5],
            peak_width_hours: 1.0,
            days: 1.0,
        };
        trace.validate().unwrap();
        assert!((trace.qps_at(10.0 * 3600.0) - 100.0).abs() < 1e-9);
        assert!(trace.qps_at(4.0 * 3600.0) < 11.0);
        // 00:30 is one hour from the 23:30 peak.
        let at_half_past_midnight = trace.qps_at(0.5 * 3600.0);
        assert!((at_half_past_midnight - (10.0 + 90.0 * (-0.5f64).exp())).abs() < 1e-9);
    }

    #[test]
    fn bad_traces_are_refused_with_the_field() {
        let trace = LoadTrace::Points {
            points: vec![[0.0, 1.0], [0.0, 2.0]],
        };
        assert!(
            trace
                .validate()
                .unwrap_err()
                .to_string()
                .contains("points[1]")
        );
        let trace = LoadTrace::Diurnal {
            floor_qps: 10.0,
            peak_qps: 5.0,
            peaks_at_hours: vec![],
            peak_width_hours: 1.0,
            days: 1.0,
        };
        assert!(
            trace
                .validate()
                .unwrap_err()
                .to_string()
                .contains("floor_qps")
        );
    }
}
