//! Load client for the KEDA external scaler: `concurrency` callers issue unary `GetMetrics` back to
//! back over `connections` HTTP/2 connections for `seconds` on `threads` runtime threads (default 1), then print one JSON line with the
//! throughput and latency percentiles. Used by `bench/bench_keda.py`.
//!
//! ```text
//! cargo run --release -p keda-scaler --example loadgen -- \
//!     --addr http://127.0.0.1:9090 --concurrency 64 --seconds 10 \
//!     --meta milvus=demo --meta signal=index_pending_builds --meta target=1 \
//!     --metric milvus_index_pending_builds
//! ```

use std::collections::HashMap;
use std::time::Duration;

use keda_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tokio::time::Instant;
use tonic::transport::Endpoint;

struct Args {
    addr: String,
    concurrency: usize,
    connections: usize,
    seconds: f64,
    meta: HashMap<String, String>,
    metric: String,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "http://127.0.0.1:9090".into(),
        concurrency: 64,
        connections: 4,
        seconds: 10.0,
        meta: HashMap::new(),
        metric: String::new(),
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("{e}"))?,
            "--connections" => a.connections = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--metric" => a.metric = value()?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("{e}"))?,
            "--meta" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--meta expects key=value, got {kv}"))?;
                a.meta.insert(k.into(), v.into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // One client thread by default: on a small machine the load client should not starve the
    // server it measures.
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(Endpoint::from_shared(args.addr.clone())?.connect().await?);
    }
    let request = GetMetricsRequest {
        scaled_object_ref: Some(ScaledObjectRef {
            name: "bench".into(),
            namespace: "default".into(),
            scaler_metadata: args.meta.clone(),
        }),
        metric_name: args.metric.clone(),
    };
    let duration = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = ExternalScalerClient::new(channels[i % channels.len()].clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while started.elapsed() < duration {
                let t = Instant::now();
                match client.get_metrics(request.clone()).await {
                    Ok(_) => latencies_us.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"seconds\": {:.3}, \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        all.len(),
        errors,
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
    Ok(())
}
