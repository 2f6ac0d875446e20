//! The `signals` command's table: every signal, its value, age and source health.

use std::fmt::Write as _;
use std::time::SystemTime;

use milvus_signals::{Signal, SignalKey, Snapshot};

/// Renders every instance of `snapshot` as a plain-text table, judged at `now`.
/// Per-collection rows are shown after the instance-wide rows of the same signal.
pub fn render(snapshot: &Snapshot, now: SystemTime) -> String {
    let mut out = String::new();
    for instance in snapshot.instances.values() {
        let _ = writeln!(
            out,
            "milvus={} namespace={} source: {}",
            instance.name, instance.namespace, instance.source
        );
        let _ = writeln!(
            out,
            "  {:<28} {:<20} {:>14} {:>7}  STATUS",
            "SIGNAL", "COLLECTION", "VALUE", "AGE"
        );
        for signal in Signal::ALL {
            let mut keys = vec![SignalKey::instance(signal)];
            keys.extend(
                instance
                    .collections(signal)
                    .map(|c| SignalKey::collection(signal, c)),
            );
            for key in keys {
                let collection = key.collection.clone().unwrap_or_else(|| "-".into());
                let (value, age, status) = match instance.reading(&key, now) {
                    Ok(r) => (
                        format_value(r.value),
                        format!("{:.1}s", r.age(now).as_secs_f64()),
                        "ok".to_string(),
                    ),
                    Err(e) => ("unknown".to_string(), "-".to_string(), e.to_string()),
                };
                let _ = writeln!(
                    out,
                    "  {:<28} {:<20} {:>14} {:>7}  {}",
                    signal.name(),
                    collection,
                    value,
                    age,
                    status
                );
            }
        }
        for t in &instance.targets {
            let state = match &t.error {
                None => "up".to_string(),
                Some(e) => format!("DOWN: {e}"),
            };
            let _ = writeln!(
                out,
                "  target {} ({:.0} ms): {}",
                t.target,
                t.duration.as_secs_f64() * 1000.0,
                state
            );
        }
        out.push('\n');
    }
    out
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milvus_signals::snapshot::{InstanceSnapshot, Reading};
    use std::time::Duration;

    #[test]
    fn shows_values_ages_and_reasons() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut i = InstanceSnapshot::pending(
            "demo",
            "default",
            "scrape x".into(),
            Duration::from_secs(10),
        );
        i.round_at = Some(now);
        i.values.insert(
            SignalKey::instance(Signal::SearchQueueDepth),
            Ok(Reading {
                value: 12.0,
                sampled_at: now - Duration::from_secs(2),
                window: None,
            }),
        );
        i.values.insert(
            SignalKey::instance(Signal::SearchRate),
            Err(milvus_signals::Unknown::WarmingUp),
        );
        let mut s = Snapshot::default();
        s.instances.insert("demo".into(), i.into());
        let table = render(&s, now);
        assert!(table.contains("search_queue_depth"), "{table}");
        assert!(
            table.lines().any(|l| l.contains("search_queue_depth")
                && l.contains(" 12 ")
                && l.contains("2.0s")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("search_rate") && l.contains("warming up")),
            "{table}"
        );
    }
}
