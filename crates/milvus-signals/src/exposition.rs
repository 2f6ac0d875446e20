//! Prometheus text exposition format (version 0.0.4) parser.
//!
//! Hand-rolled on purpose: the crates that exist for this format (`prometheus-parse`,
//! `openmetrics-parser`) either accept malformed lines silently or allocate every series of every
//! family. A Milvus pod exposes ~2,500 lines of which we need ~100, fifty pods are scraped every
//! second, and a malformed body must be rejected whole with the line that broke it, the way
//! Prometheus itself rejects a scrape. So the parser here is strict, streams line by line, keeps only
//! the families the caller asks for and names the line and column of the first error.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use thiserror::Error;

/// Limits that bound the work and memory one exposition body may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest label value accepted, in bytes.
    pub max_label_value_bytes: usize,
    /// Most labels one series may carry.
    pub max_labels: usize,
    /// Longest line accepted, in bytes.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_label_value_bytes: 4096,
            max_labels: 64,
            max_line_bytes: 64 * 1024,
        }
    }
}

/// Why an exposition body was rejected: the 1-based line and column and what was expected there.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("line {line}, column {column}: {reason}")]
pub struct ParseError {
    /// 1-based line number of the offending line.
    pub line: usize,
    /// 1-based byte column where the problem was found.
    pub column: usize,
    /// What was expected and what was found.
    pub reason: String,
}

/// One sample: a metric name, its labels sorted by name, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written (for histograms this includes `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// Label pairs, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// The sample value; `NaN` and infinities are legal in the format.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the series carries it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed body: the samples the caller kept, and every family name seen (kept or not).
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// Samples whose metric name passed the caller's filter, in input order.
    pub samples: Vec<Sample>,
    /// Names of every metric family present, from `# TYPE` / `# HELP` lines and from samples.
    pub families: BTreeSet<String>,
}

impl Exposition {
    /// Whether any family name starts with `prefix` (used to tell which Milvus components a
    /// target runs: `milvus_querynode_`, `milvus_proxy_`, ...).
    pub fn has_family_prefix(&self, prefix: &str) -> bool {
        self.families
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|f| f.starts_with(prefix))
    }
}

/// Parses a whole body, keeping the samples whose metric name satisfies `keep`.
///
/// Every line is checked, kept or not: one malformed line, or the same series twice, rejects
/// the body, as Prometheus rejects such a scrape.
pub fn parse(
    text: &str,
    limits: &Limits,
    keep: impl Fn(&str) -> bool,
) -> Result<Exposition, ParseError> {
    let mut parser = StreamParser::new(*limits, keep);
    parser.feed(text.as_bytes())?;
    parser.finish()
}

/// Incremental parser: feed the body as it arrives (any chunking), then [`StreamParser::finish`].
/// Only the current partial line is buffered, so a scrape never holds a whole body in memory.
pub struct StreamParser<F> {
    limits: Limits,
    keep: F,
    out: Exposition,
    // 128-bit fingerprints of every series seen: exact duplicate detection in practice
    // (collision odds ~1e-32 per body) without keeping every series' text.
    seen: HashSet<u128, BuildHasherDefault<FingerprintHasher>>,
    line_no: usize,
    partial: Vec<u8>,
    key_buffer: Vec<u8>,
    last_family: String,
}

impl<F: Fn(&str) -> bool> StreamParser<F> {
    /// A parser keeping the samples whose metric name satisfies `keep`.
    pub fn new(limits: Limits, keep: F) -> Self {
        Self {
            limits,
            keep,
            out: Exposition::default(),
            seen: HashSet::with_capacity_and_hasher(4096, BuildHasherDefault::default()),
            line_no: 0,
            partial: Vec::new(),
            key_buffer: Vec::new(),
            last_family: String::new(),
        }
    }

    /// Parses every complete line in `chunk`; an incomplete last line waits for the next chunk.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ParseError> {
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            if self.partial.is_empty() {
                self.line(&chunk[..pos])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..pos]);
                self.line(&line)?;
            }
            chunk = &chunk[pos + 1..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > self.limits.max_line_bytes {
            return Err(ParseError {
                line: self.line_no + 1,
                column: self.limits.max_line_bytes + 1,
                reason: format!("line is longer than {} bytes", self.limits.max_line_bytes),
            });
        }
        Ok(())
    }

    /// Parses the last line (a body need not end with a newline) and returns the result.
    pub fn finish(mut self) -> Result<Exposition, ParseError> {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest)?;
        Ok(self.out)
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        self.line_no += 1;
        let line_no = self.line_no;
        if bytes.len() > self.limits.max_line_bytes {
            return Err(ParseError {
                line: line_no,
                column: self.limits.max_line_bytes + 1,
                reason: format!("line is longer than {} bytes", self.limits.max_line_bytes),
            });
        }
        let raw_line = std::str::from_utf8(bytes).map_err(|e| ParseError {
            line: line_no,
            column: e.valid_up_to() + 1,
            reason: "line is not valid UTF-8".to_string(),
        })?;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            return Ok(());
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(name) = descriptor_family(comment)
                && !self.out.families.contains(name)
            {
                self.out.families.insert(name.to_string());
            }
            return Ok(());
        }
        let offset = line.len() - trimmed.len();
        let mut cursor = Cursor {
            text: trimmed,
            pos: 0,
            line: line_no,
            offset,
        };
        let sample = cursor.sample(&self.limits)?;
        // Samples of one family are consecutive: compare with the last one before the set.
        let family = family_of(sample.name);
        if self.last_family != family {
            if !self.out.families.contains(family) {
                self.out.families.insert(family.to_string());
            }
            self.last_family.clear();
            self.last_family.push_str(family);
        }
        if !self.seen.insert(fingerprint(&sample, &mut self.key_buffer)) {
            return Err(ParseError {
                line: line_no,
                column: offset + 1,
                reason: format!("duplicate series {}", describe(&sample)),
            });
        }
        if (self.keep)(sample.name) {
            self.out.samples.push(sample.into_owned());
        }
        Ok(())
    }
}

/// The fingerprints are already uniform hashes: hashing them again would be wasted work.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A sample borrowing from the line it was parsed from; owned only when kept.
struct RawSample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, Cow<'a, str>)>,
    value: f64,
}

impl RawSample<'_> {
    fn into_owned(self) -> Sample {
        Sample {
            name: self.name.to_string(),
            labels: self
                .labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into_owned()))
                .collect(),
            value: self.value,
        }
    }
}

/// XXH3-128 of the series' canonical form (name, then sorted label pairs, 0-separated), built in
/// `buffer` so no line allocates for it.
fn fingerprint(sample: &RawSample<'_>, buffer: &mut Vec<u8>) -> u128 {
    buffer.clear();
    buffer.extend_from_slice(sample.name.as_bytes());
    for (k, v) in &sample.labels {
        buffer.push(0);
        buffer.extend_from_slice(k.as_bytes());
        buffer.push(0);
        buffer.extend_from_slice(v.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(buffer)
}

/// `# TYPE name kind` and `# HELP name text` name a family; other comments do not.
fn descriptor_family(comment: &str) -> Option<&str> {
    let mut words = comment.split_ascii_whitespace();
    match words.next() {
        Some("TYPE") | Some("HELP") => words.next(),
        _ => None,
    }
}

/// The family a sample belongs to: histogram and summary series carry suffixes.
fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

fn describe(sample: &RawSample<'_>) -> String {
    let labels: Vec<String> = sample
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{}{{{}}}", sample.name, labels.join(","))
}

/// Bytes allowed in metric names (`[a-zA-Z0-9_:]`) and label names (`[a-zA-Z0-9_]`).
static METRIC_NAME_CHARS: [bool; 256] = name_chars(true);
static LABEL_NAME_CHARS: [bool; 256] = name_chars(false);

const fn name_chars(colon: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':');
        c += 1;
    }
    table
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column: self.offset + self.pos + 1,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn name(&mut self, what: &str, allow_colon: bool) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let table = if allow_colon {
            &METRIC_NAME_CHARS
        } else {
            &LABEL_NAME_CHARS
        };
        let rest = &self.text.as_bytes()[start..];
        // A name may not start with a digit; after that, digits are fine.
        if rest
            .first()
            .is_some_and(|c| table[usize::from(*c)] && !c.is_ascii_digit())
        {
            self.pos += rest
                .iter()
                .position(|c| !table[usize::from(*c)])
                .unwrap_or(rest.len());
        }
        if self.pos == start {
            return Err(self.error(format!("expected {what}")));
        }
        Ok(&self.text[start..self.pos])
    }

    fn sample(&mut self, limits: &Limits) -> Result<RawSample<'a>, ParseError> {
        let name = self.name("a metric name", true)?;
        let after_name = self.pos;
        self.skip_blanks();
        let mut labels = Vec::new();
        if self.peek() == Some(b'{') {
            self.pos += 1;
            labels = self.labels(limits)?;
        } else {
            self.pos = after_name;
        }
        if !matches!(self.peek(), Some(b' ' | b'\t')) {
            return Err(self.error(if self.peek().is_none() {
                "expected a value after the series, found end of line".to_string()
            } else {
                "expected a space before the value".to_string()
            }));
        }
        self.skip_blanks();
        let value = self.float()?;
        self.skip_blanks();
        if self.peek().is_some() {
            self.timestamp()?;
        }
        self.skip_blanks();
        if self.peek().is_some() {
            return Err(self.error("expected end of line after the timestamp"));
        }
        labels.sort_by(|a, b| a.0.cmp(b.0));
        if let Some(pair) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(self.error(format!("label {:?} appears twice", pair[0].0)));
        }
        Ok(RawSample {
            name,
            labels,
            value,
        })
    }

    fn labels(&mut self, limits: &Limits) -> Result<Vec<(&'a str, Cow<'a, str>)>, ParseError> {
        let mut labels = Vec::new();
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(labels);
            }
            if labels.len() == limits.max_labels {
                return Err(self.error(format!("more than {} labels", limits.max_labels)));
            }
            let key = self.name("a label name or '}'", false)?;
            self.skip_blanks();
            if self.peek() != Some(b'=') {
                return Err(self.error(format!("expected '=' after label name {key:?}")));
            }
            self.pos += 1;
            self.skip_blanks();
            let value = self.quoted(limits)?;
            labels.push((key, value));
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                None => return Err(self.error("line ends inside the label set")),
                _ => return Err(self.error("expected ',' or '}' after a label value")),
            }
        }
    }

    fn quoted(&mut self, limits: &Limits) -> Result<Cow<'a, str>, ParseError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected '\"' to open a label value"));
        }
        self.pos += 1;
        let text: &'a str = self.text;
        let bytes = text.as_bytes();
        let start = self.pos;
        // Borrowed until the first escape; owned (unescaped) from then on.
        let mut owned: Option<String> = None;
        let mut run_start = self.pos;
        loop {
            match bytes.get(self.pos) {
                None => return Err(self.error("line ends inside a quoted label value")),
                Some(b'"') => {
                    let value = match owned {
                        None => Cow::Borrowed(&text[start..self.pos]),
                        Some(mut v) => {
                            v.push_str(&text[run_start..self.pos]);
                            Cow::Owned(v)
                        }
                    };
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    let escaped = match bytes.get(self.pos + 1) {
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        _ => {
                            self.pos += 1;
                            return Err(self.error(
                                "unknown escape in label value (expected \\\\, \\\" or \\n)",
                            ));
                        }
                    };
                    let v = owned.get_or_insert_with(String::new);
                    v.push_str(&text[run_start..self.pos]);
                    v.push(escaped);
                    self.pos += 2;
                    run_start = self.pos;
                }
                Some(_) => {
                    // Skip to the next quote or backslash in one scan.
                    self.pos += memchr::memchr2(b'"', b'\\', &bytes[self.pos..])
                        .unwrap_or(bytes.len() - self.pos);
                }
            }
            let length = owned.as_ref().map_or(0, String::len) + (self.pos - run_start);
            if length > limits.max_label_value_bytes {
                return Err(self.error(format!(
                    "label value longer than {} bytes",
                    limits.max_label_value_bytes
                )));
            }
        }
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b' ' || c == b'\t' {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn float(&mut self) -> Result<f64, ParseError> {
        let start = self.pos;
        let token = self.token().to_string();
        parse_float(&token).ok_or_else(|| ParseError {
            line: self.line,
            column: self.offset + start + 1,
            reason: format!("expected a float value, found {token:?}"),
        })
    }

    fn timestamp(&mut self) -> Result<i64, ParseError> {
        let start = self.pos;
        let token = self.token().to_string();
        token.parse::<i64>().map_err(|_| ParseError {
            line: self.line,
            column: self.offset + start + 1,
            reason: format!("expected an integer timestamp in milliseconds, found {token:?}"),
        })
    }
}

/// Parses a float as the format allows: Go's `ParseFloat` syntax plus `NaN`, `+Inf`, `-Inf`.
pub fn parse_float(token: &str) -> Option<f64> {
    match token {
        "NaN" => return Some(f64::NAN),
        "+Inf" | "Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also accepts "inf", "infinity" and "nan" spelt in other ways; the format does not.
    if token.is_empty()
        || token
            .bytes()
            .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return None;
    }
    token.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<Exposition, ParseError> {
        parse(text, &Limits::default(), |_| true)
    }

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let body = "# HELP x help text\n# TYPE x gauge\nx{b=\"2\",a=\"q\\\"\\\\\\n\"} 1.5e3 1700000000000\ny NaN\nz{} +Inf\nw -Inf\n";
        let e = all(body).unwrap();
        assert_eq!(e.samples.len(), 4);
        assert_eq!(
            e.samples[0].labels,
            vec![("a".into(), "q\"\\\n".into()), ("b".into(), "2".into())]
        );
        assert_eq!(e.samples[0].value, 1500.0);
        assert!(e.samples[1].value.is_nan());
        assert_eq!(e.samples[2].value, f64::INFINITY);
        assert_eq!(e.samples[3].value, f64::NEG_INFINITY);
        assert!(e.families.contains("x") && e.families.contains("w"));
    }

    #[test]
    fn real_captures_parse_completely() {
        for name in [
            "milvus-2.3.5-metrics-idle.prom",
            "milvus-2.3.5-metrics-under-load.prom",
        ] {
            let text = crate::test_fixtures::fixture(name);
            let e = all(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
            let sample_lines = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(
                e.samples.len(),
                sample_lines,
                "{name}: every sample line kept"
            );
            assert!(e.has_family_prefix("milvus_querynode_"), "{name}");
            assert!(e.has_family_prefix("milvus_proxy_"), "{name}");
            assert!(!e.has_family_prefix("milvus_nonexistent_"), "{name}");
        }
    }

    #[test]
    fn filter_keeps_only_wanted_names_but_checks_every_line() {
        let e = parse("a 1\nb 2\n", &Limits::default(), |n| n == "b").unwrap();
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.samples[0].name, "b");
        let err = parse("a{ 1\nb 2\n", &Limits::default(), |n| n == "b").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn malformed_lines_are_rejected_with_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("m{a=\"1\"", 1, "line ends inside the label set"),
            ("m{a=\"1", 1, "inside a quoted label value"),
            ("m", 1, "expected a value"),
            ("m 1.2.3", 1, "expected a float value"),
            ("m one", 1, "expected a float value"),
            ("m inf", 1, "expected a float value"),
            ("ok 1\nm{a=1} 2", 2, "expected '\"'"),
            ("m{a=\"1\" b=\"2\"} 3", 1, "expected ',' or '}'"),
            ("m{a=\"\\q\"} 3", 1, "unknown escape"),
            ("m 1 notatime", 1, "integer timestamp"),
            ("m 1 2 3", 1, "end of line"),
            ("9m 1", 1, "metric name"),
            ("m{a=\"1\",a=\"2\"} 1", 1, "appears twice"),
        ];
        for (body, line, reason) in cases {
            let err = all(body).expect_err(body);
            assert_eq!(err.line, *line, "{body}: {err}");
            assert!(
                err.reason.contains(reason),
                "{body}: got {err}, want {reason}"
            );
        }
    }

    #[test]
    fn duplicate_series_are_rejected_even_with_reordered_labels() {
        let err = all("m{a=\"1\",b=\"2\"} 1\nm{b=\"2\",a=\"1\"} 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("duplicate series"), "{err}");
        assert!(all("m{a=\"1\"} 1\nm{a=\"2\"} 2\n").is_ok());
    }

    #[test]
    fn huge_label_values_and_lines_are_bounded() {
        let limits = Limits::default();
        let big = "x".repeat(limits.max_label_value_bytes + 1);
        let err = all(&format!("m{{a=\"{big}\"}} 1")).unwrap_err();
        assert!(err.reason.contains("label value longer"), "{err}");
        let long = format!("m{{a=\"{}\"}} 1", "y".repeat(limits.max_line_bytes));
        let err = all(&long).unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
    }

    #[test]
    fn truncated_body_fails_at_the_cut() {
        let text = crate::test_fixtures::fixture("milvus-2.3.5-metrics-under-load.prom");
        // Cut in the middle of a labelled sample line.
        let cut = text.find("milvus_proxy_sq_latency_bucket{").unwrap() + 40;
        let err = all(&text[..cut]).unwrap_err();
        assert_eq!(err.line, text[..cut].lines().count());
    }

    #[test]
    fn any_chunking_gives_the_same_result() {
        let text = crate::test_fixtures::fixture("milvus-2.3.5-metrics-under-load.prom");
        let whole = all(&text).unwrap();
        for chunk_size in [1, 7, 4096, text.len()] {
            let mut p = StreamParser::new(Limits::default(), |_: &str| true);
            for chunk in text.as_bytes().chunks(chunk_size) {
                p.feed(chunk).unwrap();
            }
            let streamed = p.finish().unwrap();
            assert_eq!(streamed.samples, whole.samples, "chunk size {chunk_size}");
            assert_eq!(streamed.families, whole.families);
        }
    }

    #[test]
    fn invalid_utf8_and_unterminated_long_lines_are_rejected() {
        let mut p = StreamParser::new(Limits::default(), |_: &str| true);
        let err = p.feed(b"ok 1\nm{a=\"\xff\"} 1\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("UTF-8"), "{err}");
        let mut p = StreamParser::new(Limits::default(), |_: &str| true);
        let err = p
            .feed(&vec![b'a'; Limits::default().max_line_bytes + 1])
            .unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
    }

    #[test]
    fn float_syntax_follows_the_format() {
        assert_eq!(parse_float("1e-3"), Some(0.001));
        assert_eq!(parse_float("-0"), Some(-0.0));
        assert_eq!(parse_float("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("nan"), None);
        assert_eq!(parse_float("infinity"), None);
        assert_eq!(parse_float(""), None);
    }
}
