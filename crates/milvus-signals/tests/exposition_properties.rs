//! Property tests of the Prometheus text parser, the one parser here that reads bytes from every
//! Milvus pod: arbitrary bytes never panic, any chunking of a body gives the same answer as the
//! whole body (a scrape arrives in whatever pieces the network delivers), and generated valid
//! bodies come back sample for sample. `make fuzz` runs the same parser coverage-guided.

use milvus_signals::exposition::{Exposition, Limits, ParseError, StreamParser, parse};
use proptest::prelude::*;

/// Parses `body` fed in pieces cut at `cuts` (byte offsets, any order, out of range clamped).
fn parse_chunked(body: &[u8], cuts: &[usize]) -> Result<Exposition, ParseError> {
    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    offsets.sort_unstable();
    let mut parser = StreamParser::new(Limits::default(), |_: &str| true);
    let mut start = 0;
    for end in offsets {
        parser.feed(&body[start..end])?;
        start = end;
    }
    parser.feed(&body[start..])?;
    parser.finish()
}

fn parse_whole(body: &[u8]) -> Result<Exposition, ParseError> {
    let mut parser = StreamParser::new(Limits::default(), |_: &str| true);
    parser.feed(body)?;
    parser.finish()
}

/// Compares two outcomes; samples compare their values bit for bit (NaN is a legal value).
fn same(a: &Result<Exposition, ParseError>, b: &Result<Exposition, ParseError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.families == b.families
                && a.samples.len() == b.samples.len()
                && a.samples.iter().zip(&b.samples).all(|(x, y)| {
                    x.name == y.name
                        && x.labels == y.labels
                        && x.value.to_bits() == y.value.to_bits()
                })
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// A label value with the characters the format escapes, and some it does not.
fn label_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _./:\\\\\"\n{}=,é]{0,12}"
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Debug, Clone)]
struct GenSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn sample() -> impl Strategy<Value = GenSample> {
    (
        "[a-z_][a-z0-9_]{0,20}",
        proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", label_value(), 0..4),
        prop_oneof![
            any::<i32>().prop_map(f64::from),
            (-1e12f64..1e12f64),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ],
    )
        .prop_map(|(name, labels, value)| GenSample {
            name,
            labels: labels.into_iter().collect(),
            value,
        })
}

fn render(samples: &[GenSample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let pairs: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            out.push('{');
            out.push_str(&pairs.join(","));
            out.push('}');
        }
        let value = if s.value == f64::INFINITY {
            "+Inf".to_string()
        } else if s.value == f64::NEG_INFINITY {
            "-Inf".to_string()
        } else {
            format!("{:?}", s.value)
        };
        out.push(' ');
        out.push_str(&value);
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_does_not_change_the_answer(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = parse_whole(&body);
        let chunked = parse_chunked(&body, &cuts);
        prop_assert!(same(&whole, &chunked), "whole {whole:?} vs chunked {chunked:?}");
    }

    #[test]
    fn exposition_like_text_never_panics_and_chunking_does_not_change_the_answer(
        body in "([a-z_{}=\",# .0-9+\\-\\\\]|\n|TYPE|HELP|Inf|NaN){0,120}",
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = parse_whole(body.as_bytes());
        let chunked = parse_chunked(body.as_bytes(), &cuts);
        prop_assert!(same(&whole, &chunked), "{body:?}: whole {whole:?} vs chunked {chunked:?}");
    }

    #[test]
    fn generated_bodies_come_back_sample_for_sample(
        samples in proptest::collection::vec(sample(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        // The same series twice is a rejected body (as Prometheus rejects it): keep the first.
        let mut seen = std::collections::HashSet::new();
        let samples: Vec<GenSample> = samples
            .into_iter()
            .filter(|s| seen.insert((s.name.clone(), s.labels.clone())))
            .collect();
        let body = render(&samples);
        let parsed = parse_chunked(body.as_bytes(), &cuts)
            .map_err(|e| TestCaseError::fail(format!("{e} in {body:?}")))?;
        prop_assert_eq!(parsed.samples.len(), samples.len());
        for (got, want) in parsed.samples.iter().zip(&samples) {
            prop_assert_eq!(&got.name, &want.name);
            prop_assert_eq!(&got.labels, &want.labels);
            prop_assert_eq!(got.value.to_bits(), want.value.to_bits(), "{}", body);
        }
        // The whole-body entry point agrees.
        let via_parse = parse(&body, &Limits::default(), |_| true);
        prop_assert!(same(&Ok(parsed), &via_parse));
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_however_it_arrives(
        extra in 1usize..64,
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let limits = Limits::default();
        let body = format!("m{{a=\"{}\"}} 1\n", "x".repeat(limits.max_line_bytes + extra));
        prop_assert!(parse_chunked(body.as_bytes(), &cuts).is_err());
        prop_assert!(parse_whole(body.as_bytes()).is_err());
    }
}
