//! Prints how fast a `/metrics` body is parsed and reduced to a target sample (MB/s), the work
//! each scrape does per target. Usage: `cargo run --release --example parse_throughput [FILE]`.

// A plain program timing CPU work, outside any tokio runtime: std's clock is the right one.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::Instant;

use milvus_signals::exposition::Limits;
use milvus_signals::milvus::parse_target;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/milvus-2.3.5-metrics-under-load.prom".to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let limits = Limits::default();
    let rounds = 500;
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(parse_target(&text, &limits).expect("parse"));
        }
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[2];
    let mb = (text.len() * rounds) as f64 / 1e6;
    println!(
        "{path}: {} bytes, median {:.1} MB/s, {:.0} µs per body",
        text.len(),
        mb / median,
        median / rounds as f64 * 1e6
    );
}
