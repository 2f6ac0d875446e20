//! One source of truth for the metric names a crate exports.
//!
//! Each crate that exports metrics declares them once with [`metric_names!`]: a `pub const` per
//! name (used at every `metrics::counter!`/`gauge!`/`histogram!` call) and `pub const ALL`, the
//! list [`describe`] registers as `# HELP` text and the binaries' hidden `metric-names` subcommand
//! prints for the Grafana contract test (`tests/harness/grafana.py`), so neither the dashboards'
//! test nor `/metrics` carries a hand copy. [`literal_metric_names`] is the check each crate's
//! test runs over its own `src/`, so a new metric cannot bypass the list with a string literal.

use std::fmt;
use std::path::{Path, PathBuf};

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`metrics::counter!`); the name ends in `_total`.
    Counter,
    /// Goes up and down (`metrics::gauge!`).
    Gauge,
    /// Observations in buckets (`metrics::histogram!`): `_bucket`, `_sum`, `_count` series.
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` word.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One exported metric: what `/metrics` shows for it and what a dashboard may query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricName {
    /// The metric name (without the `_bucket`/`_sum`/`_count` suffixes of a histogram).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The label names it is recorded with.
    pub labels: &'static [&'static str],
    /// The `# HELP` text: what it measures, in one sentence.
    pub help: &'static str,
}

/// Declares a crate's metrics: a `pub const NAME: &str` per metric, documented with its help,
/// type and labels, and `pub const ALL: &[MetricName]` listing every one of them in order. Under
/// `cargo test` it adds two tests: [`problems`] finds nothing in the list, and no metrics macro
/// under the crate's `src/` names its metric with a string literal ([`literal_metric_names`]).
///
/// ```
/// metric_names::metric_names! {
///     /// Requests served.
///     REQUESTS: Counter = "demo_requests_total", labels ["route"],
///         help "Requests served, by route.";
/// }
/// assert_eq!(REQUESTS, "demo_requests_total");
/// assert_eq!(ALL[0].labels, ["route"]);
/// ```
#[macro_export]
macro_rules! metric_names {
    ($(
        $(#[doc = $doc:literal])*
        $ident:ident: $kind:ident = $name:literal, labels [$($label:literal),* $(,)?], help $help:literal;
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = ""]
            #[doc = concat!("`", $name, "`: ", stringify!($kind), ", labels: [", $("`", $label, "` ",)* "]. ", $help)]
            pub const $ident: &str = $name;
        )*
        /// Every metric this crate exports, in the order above: what `describe` registers and the
        /// `metric-names` subcommand prints.
        pub const ALL: &[$crate::MetricName] = &[$(
            $crate::MetricName {
                name: $name,
                kind: $crate::MetricKind::$kind,
                labels: &[$($label),*],
                help: $help,
            },
        )*];

        // The checks every list gets, run by its crate's `cargo test`.
        #[cfg(test)]
        mod metric_names_check {
            #[test]
            fn every_metrics_macro_takes_a_name_from_this_list() {
                let src = ::std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
                let literal = $crate::literal_metric_names(src);
                assert!(
                    literal.is_empty(),
                    "metric names written as string literals; declare them in src/metric_names.rs and use the constant:\n{}",
                    literal.join("\n")
                );
            }

            #[test]
            fn the_list_is_sound() {
                assert_eq!($crate::problems(super::ALL), ::std::vec::Vec::<::std::string::String>::new());
            }
        }
    };
}

/// Registers the help text (and so the `# HELP`/`# TYPE` lines) of every metric in `all` with the
/// installed recorder. Call it once, after installing the recorder.
pub fn describe(all: &[MetricName]) {
    for m in all {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The `name kind` lines (one per metric, sorted) that the `metric-names` subcommands print.
#[must_use]
pub fn lines(lists: &[&[MetricName]]) -> String {
    let mut all: Vec<&MetricName> = lists.iter().flat_map(|l| l.iter()).collect();
    all.sort_by_key(|m| m.name);
    all.iter()
        .map(|m| format!("{} {}\n", m.name, m.kind))
        .collect()
}

/// What is wrong with a list: duplicate names, names that are not Prometheus names, counters
/// without `_total`, empty help. Empty when the list is sound.
#[must_use]
pub fn problems(all: &[MetricName]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, m) in all.iter().enumerate() {
        if all[..i].iter().any(|o| o.name == m.name) {
            out.push(format!("{}: listed twice", m.name));
        }
        let valid = m
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && m.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            out.push(format!("{}: not a lower_snake_case metric name", m.name));
        }
        if (m.kind == MetricKind::Counter) != m.name.ends_with("_total") {
            out.push(format!(
                "{}: a counter's name, and only a counter's, ends in _total",
                m.name
            ));
        }
        if m.help.trim().is_empty() {
            out.push(format!("{}: no help text", m.name));
        }
    }
    out
}

/// Every `counter!`/`gauge!`/`histogram!` call under `src_dir` (`.rs` files, recursively) whose
/// name argument is a string literal, as `file:line: text` (`file` relative to `src_dir`'s parent,
/// the crate). Each exporting crate's test asserts
/// this is empty for its own `src/`, so every name goes through its `ALL` list.
///
/// # Panics
/// When `src_dir` cannot be read (a test helper: the message says which path).
#[must_use]
pub fn literal_metric_names(src_dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect_rs(src_dir, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        // `src/x.rs`, relative to the crate, as a reader finds it.
        let shown = src_dir
            .parent()
            .and_then(|crate_dir| file.strip_prefix(crate_dir).ok())
            .unwrap_or(&file);
        out.extend(
            literal_calls(&text)
                .into_iter()
                .map(|(line, call)| format!("{}:{line}: {call}", shown.display())),
        );
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `(line, macro call)` of each metrics macro in `text` whose first argument is a string literal.
/// The argument may be on a following line (rustfmt breaks long calls), hence a scan over the
/// whole text rather than a line grep.
fn literal_calls(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for name in ["counter", "gauge", "histogram"] {
        let mac = format!("{name}!(");
        for (at, _) in text.match_indices(&mac) {
            // `describe_counter!(` and friends take the name too, but only `describe` calls them,
            // with names from a list.
            let before = &text[..at];
            if before.ends_with('_') || before.ends_with(|c: char| c.is_ascii_alphanumeric()) {
                continue;
            }
            let rest = text[at + mac.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                let line = before.matches('\n').count() + 1;
                let name = literal.split('"').next().unwrap_or_default();
                out.push((line, format!("{mac}\"{name}\"")));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    metric_names! {
        /// A counter.
        DEMO_TOTAL: Counter = "demo_total", labels ["a", "b"], help "Demo events.";
        /// A gauge.
        DEMO_LEVEL: Gauge = "demo_level", labels [], help "Demo level.";
    }

    #[test]
    fn the_macro_makes_constants_and_the_list() {
        assert_eq!(DEMO_TOTAL, "demo_total");
        assert_eq!(DEMO_LEVEL, "demo_level");
        assert_eq!(ALL.len(), 2);
        assert_eq!(ALL[0].kind, MetricKind::Counter);
        assert_eq!(ALL[0].labels, ["a", "b"]);
        assert_eq!(ALL[1].help, "Demo level.");
        assert!(problems(ALL).is_empty());
    }

    #[test]
    fn described_metrics_get_help_and_type_lines_from_the_real_exporter() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe(ALL);
            metrics::counter!(DEMO_TOTAL, "a" => "1", "b" => "2").increment(1);
            metrics::gauge!(DEMO_LEVEL).set(3.0);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP demo_total Demo events.\n# TYPE demo_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP demo_level Demo level.\n"), "{text}");
    }

    #[test]
    fn lines_are_sorted_name_kind() {
        assert_eq!(lines(&[ALL]), "demo_level gauge\ndemo_total counter\n");
    }

    #[test]
    fn problems_are_found() {
        let bad = [
            MetricName {
                name: "x_total",
                kind: MetricKind::Gauge,
                labels: &[],
                help: "h",
            },
            MetricName {
                name: "x_total",
                kind: MetricKind::Gauge,
                labels: &[],
                help: " ",
            },
            MetricName {
                name: "X-y",
                kind: MetricKind::Counter,
                labels: &[],
                help: "h",
            },
        ];
        let p = problems(&bad);
        assert_eq!(p.len(), 6, "{p:#?}");
    }

    #[test]
    fn literal_names_are_found_on_the_same_or_the_next_line() {
        let src = concat!(
            "metrics::counter!(NAME).increment(1);\n",
            "metrics::gauge!(\"a_b\", \"l\" => v).set(1.0);\n",
            "metrics::describe_counter!(m.name, m.help);\n",
            "metrics::histogram!(\n",
            "    \"c_d\",\n",
            "    \"op\" => op)\n",
            "counter!(  \"e_total\")\n",
        );
        let found = literal_calls(src);
        assert_eq!(
            found,
            [
                (2, "gauge!(\"a_b\"".to_owned()),
                (4, "histogram!(\"c_d\"".to_owned()),
                (7, "counter!(\"e_total\"".to_owned()),
            ]
        );
    }
}
