//! Property tests of the access-log line format, the file segment-cache reads back at start to
//! warm what was read before: any key round-trips, arbitrary text never panics the parser, and
//! a torn (crash-truncated) last line is skipped, never misread as another record.

use proptest::prelude::*;
use segment_cache::accesslog::{Record, format_line, parse_line, recent_keys};

fn record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        any::<u64>(),
        "\\PC{1,40}|[ %\n\t\u{7f}\u{80}-\u{10ffff}a-z/]{1,40}",
    )
        .prop_map(|(at, size, key)| Record { at, size, key })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_record_round_trips_on_one_line(r in record()) {
        let line = format_line(&r);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "{:?}", line);
        prop_assert_eq!(parse_line(&line), Some(r));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[0-9 %A-F\n-]{0,80}") {
        for line in text.lines() {
            let _ = parse_line(line);
        }
        let _ = recent_keys(&text);
    }

    #[test]
    fn a_torn_last_line_is_skipped_never_misread(
        records in proptest::collection::vec(record(), 1..6),
        cut_back in 1usize..60,
    ) {
        let log: String = records.iter().map(format_line).collect();
        let cut = log.len().saturating_sub(cut_back);
        let cut = (0..=cut).rev().find(|&i| log.is_char_boundary(i)).unwrap_or(0);
        let torn = &log[..cut];
        let complete = torn.matches('\n').count();
        // What the warm reads back: exactly the complete lines' records (distinct keys, newest
        // first). A line cut inside its key would otherwise parse as a shorter, wrong key.
        let mut want: Vec<Record> = Vec::new();
        for r in records[..complete].iter().rev() {
            if !want.iter().any(|w| w.key == r.key) {
                want.push(r.clone());
            }
        }
        prop_assert_eq!(recent_keys(torn), want, "{:?}", torn);
    }
}
