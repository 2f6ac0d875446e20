//! The warmer: brings the objects a query node will load into the cache before (init container,
//! `segment-cache warm`) or while (`serve`) Milvus loads them.
//!
//! Sources: the access log (what this node read last time), configured prefixes and a key-list
//! file. Order: index files first (they are the biggest and needed first by a load), then the
//! access log's most recent keys, then the rest. Large objects are fetched as parallel ranges;
//! all requests share one concurrency limit, so memory stays bounded (one buffer per request).
//! The plan stops where the byte budget is full, so warming never evicts what it just warmed.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::store::Store;
use crate::upstream::{FetchError, ObjectInfo, Ranges, Upstream};

/// Where the warm takes its keys from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Key prefixes to list.
    pub prefixes: Vec<String>,
    /// Explicit keys (from a key-list file).
    pub keys: Vec<String>,
    /// Keys of the access log, most recent first.
    pub recent: Vec<String>,
}

/// How the warm runs.
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// Requests in flight.
    pub concurrency: usize,
    /// Range size for large objects.
    pub part_size: u64,
    /// Largest object the cache keeps.
    pub max_object_size: u64,
    /// Force a progress bar (else: when stderr is a terminal).
    pub progress_bar: Option<bool>,
}

/// What a warm did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Objects in the plan (after dedupe, skipping cached ones and the capacity cut).
    pub planned_objects: usize,
    /// Bytes in the plan.
    pub planned_bytes: u64,
    /// Objects fetched.
    pub fetched_objects: usize,
    /// Bytes fetched.
    pub fetched_bytes: u64,
    /// Objects already cached with the same ETag.
    pub already_cached: usize,
    /// Objects left out because the budget was full.
    pub over_capacity: usize,
    /// Objects that failed.
    pub failed: usize,
}

fn is_index_file(key: &str) -> bool {
    key.contains("index_files/")
}

/// Orders and trims a warm plan (pure): dedupes by key, puts index files first, then keys in
/// `recent` order, then the rest in listing order; drops objects larger than `max_object_size`;
/// and cuts the plan where the bytes would exceed `budget`.
/// Returns the plan and how many objects were cut for capacity.
#[must_use]
pub fn order_plan(
    objects: Vec<ObjectInfo>,
    recent: &[String],
    max_object_size: u64,
    budget: u64,
) -> (Vec<ObjectInfo>, usize) {
    let rank: std::collections::HashMap<&str, usize> = recent
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut objs: Vec<(usize, ObjectInfo)> = objects
        .into_iter()
        .filter(|o| o.size <= max_object_size && seen.insert(o.key.clone()))
        .enumerate()
        .collect();
    objs.sort_by_key(|(pos, o)| {
        (
            !is_index_file(&o.key),
            rank.get(o.key.as_str()).copied().unwrap_or(usize::MAX),
            *pos,
        )
    });
    let mut out = Vec::new();
    let mut total = 0_u64;
    let mut cut = 0;
    for (_, o) in objs {
        if total + o.size > budget {
            cut += 1;
            continue;
        }
        total += o.size;
        out.push(o);
    }
    (out, cut)
}

/// Reads a key-list file: one key per line; blank lines and `#` comments ignored.
pub fn read_key_list(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Resolves the sources into objects with sizes and ETags (listing prefixes, HEAD for keys).
pub async fn resolve(
    up: &Upstream,
    sources: &Sources,
    concurrency: usize,
) -> Result<Vec<ObjectInfo>, FetchError> {
    let mut all = Vec::new();
    for p in &sources.prefixes {
        all.extend(up.list(p).await?);
    }
    let listed: HashSet<String> = all.iter().map(|o| o.key.clone()).collect();
    let keys: Vec<String> = sources
        .recent
        .iter()
        .chain(sources.keys.iter())
        .filter(|k| !listed.contains(*k))
        .cloned()
        .collect();
    let heads: Vec<_> = futures::stream::iter(keys)
        .map(|k: String| async move {
            let r = up.head(&k).await;
            (k, r)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for (k, r) in heads {
        match r {
            Ok(o) => all.push(o),
            // A key read before may be gone (dropped collection): skip it.
            Err(e) => tracing::debug!(key = %k, error = %e, "warm: skipping key"),
        }
    }
    Ok(all)
}

struct Progress {
    total: u64,
    done: AtomicU64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn add(&self, n: u64) {
        let d = self.done.fetch_add(n, Ordering::Relaxed) + n;
        metrics::counter!(crate::metric_names::WARM_BYTES).increment(n);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(crate::metric_names::WARM_PENDING_BYTES)
            .set(self.total.saturating_sub(d) as f64);
        if let Some(b) = &self.bar {
            b.set_position(d);
        }
    }

    fn line(&self) -> String {
        let d = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let rate = d as f64 / secs;
        #[allow(clippy::cast_precision_loss)]
        let eta = if d >= self.total {
            0.0
        } else if rate > 0.0 {
            (self.total.saturating_sub(d)) as f64 / rate
        } else {
            f64::INFINITY
        };
        #[allow(clippy::cast_precision_loss)]
        let mb = |b: u64| b as f64 / 1e6;
        format!(
            "warm: {:.1}/{:.1} MB, {:.1} MB/s, ETA {:.0}s",
            mb(d),
            mb(self.total),
            rate / 1e6,
            eta
        )
    }
}

/// Plans and runs a warm of `sources` into `store`.
pub async fn warm(
    up: &Upstream,
    store: &Arc<Store>,
    sources: &Sources,
    opts: &WarmOptions,
) -> Result<WarmReport, FetchError> {
    metrics::gauge!(crate::metric_names::WARM_DONE).set(0.0);
    let objects = resolve(up, sources, opts.concurrency).await?;
    let mut report = WarmReport::default();
    let (_, capacity, _, _) = store.usage();
    // Skip what is cached already (same ETag); the rest must fit in the budget.
    let mut todo = Vec::new();
    let mut cached_bytes = 0_u64;
    for o in objects {
        match store.peek(&o.key) {
            Some(e) if e.etag == o.etag && e.size == o.size => {
                report.already_cached += 1;
                cached_bytes += o.size;
            }
            _ => todo.push(o),
        }
    }
    let (plan, cut) = order_plan(
        todo,
        &sources.recent,
        opts.max_object_size,
        capacity.saturating_sub(cached_bytes),
    );
    report.over_capacity = cut;
    report.planned_objects = plan.len();
    report.planned_bytes = plan.iter().map(|o| o.size).sum();
    let show_bar = opts
        .progress_bar
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let bar = show_bar.then(|| {
        let b = indicatif::ProgressBar::new(report.planned_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "warm {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = Arc::new(Progress {
        total: report.planned_bytes,
        done: AtomicU64::new(0),
        started: Instant::now(),
        bar,
    });
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(crate::metric_names::WARM_PENDING_BYTES).set(report.planned_bytes as f64);
    tracing::info!(
        objects = report.planned_objects,
        bytes = report.planned_bytes,
        already_cached = report.already_cached,
        over_capacity = report.over_capacity,
        "warm: starting"
    );
    let ticker = if show_bar {
        None
    } else {
        let p = progress.clone();
        Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(2));
            t.tick().await;
            loop {
                t.tick().await;
                tracing::info!("{}", p.line());
            }
        }))
    };
    let permits = Arc::new(Semaphore::new(opts.concurrency));
    let big = opts.part_size.saturating_mul(2);
    let results: Vec<Result<u64, (String, FetchError)>> = futures::stream::iter(plan)
        .map(|o| {
            let permits = permits.clone();
            let progress = progress.clone();
            async move {
                let flight = store.flight(&o.key);
                let guard = flight.lock().await;
                let r = if store.peek(&o.key).is_some_and(|e| e.etag == o.etag) {
                    progress.add(o.size);
                    Ok(0)
                } else if o.size >= big {
                    // In parts; each part, and the first GET, holds a permit.
                    let add = |n| progress.add(n);
                    let ranges = Ranges {
                        part_size: opts.part_size,
                        permits: &permits,
                        progress: &add,
                    };
                    up.fetch(store, &o.key, opts.max_object_size, Some(&ranges))
                        .await
                        .map(|e| e.size)
                } else {
                    let _p = permits.acquire().await;
                    up.fetch(store, &o.key, opts.max_object_size, None)
                        .await
                        .map(|e| {
                            progress.add(e.size);
                            e.size
                        })
                };
                drop(guard);
                store.end_flight(&o.key, &flight);
                r.map_err(|e| (o.key, e))
            }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = &progress.bar {
        b.finish();
    }
    for r in results {
        match r {
            Ok(n) => {
                report.fetched_objects += 1;
                report.fetched_bytes += n;
                metrics::counter!(crate::metric_names::WARM_OBJECTS).increment(1);
            }
            Err((k, e)) => {
                report.failed += 1;
                tracing::warn!(key = %k, error = %e, "warm: object failed");
            }
        }
    }
    tracing::info!(
        "{}; fetched {} objects, {} failed",
        progress.line(),
        report.fetched_objects,
        report.failed
    );
    if let Err(e) = store.save_index() {
        tracing::warn!(error = %e, "could not save the index");
    }
    metrics::gauge!(crate::metric_names::WARM_DONE).set(1.0);
    metrics::gauge!(crate::metric_names::WARM_PENDING_BYTES).set(0.0);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: "\"e\"".into(),
        }
    }

    #[test]
    fn index_files_first_then_recent_then_listing() {
        let objs = vec![
            o("files/insert_log/1/a", 10),
            o("files/insert_log/1/b", 10),
            o("files/index_files/9/IVF", 50),
            o("files/stats_log/1/c", 1),
            o("files/insert_log/1/a", 10),
        ];
        let recent = vec!["files/stats_log/1/c".to_string()];
        let (plan, cut) = order_plan(objs, &recent, 1000, 1000);
        let keys: Vec<_> = plan.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "files/index_files/9/IVF",
                "files/stats_log/1/c",
                "files/insert_log/1/a",
                "files/insert_log/1/b"
            ]
        );
        assert_eq!(cut, 0);
    }

    #[test]
    fn stops_at_capacity_and_skips_too_big() {
        let objs = vec![
            o("a", 40),
            o("b", 40),
            o("c", 40),
            o("d", 10),
            o("huge", 500),
        ];
        let (plan, cut) = order_plan(objs, &[], 100, 95);
        let keys: Vec<_> = plan.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert_eq!(cut, 1);
        assert!(plan.iter().map(|o| o.size).sum::<u64>() <= 95);
    }

    #[test]
    fn key_list_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        std::fs::write(&p, "# comment\nfiles/a\n\nfiles/b  \n").unwrap();
        assert_eq!(read_key_list(&p).unwrap(), ["files/a", "files/b"]);
    }
}
