//! segment-cache's access-log reader on arbitrary text (a log left by a crash, or damaged):
//! never a panic; every record it returns formats back to a line that parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segment_cache::accesslog::{format_line, parse_line, recent_keys};

fuzz_target!(|text: &str| {
    for r in recent_keys(text) {
        assert_eq!(parse_line(&format_line(&r)).as_ref(), Some(&r));
    }
});
