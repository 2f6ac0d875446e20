//! `histogram_quantile` for classic (bucketed) histograms, computed the way Prometheus does.
//!
//! The algorithm follows Prometheus's `bucketQuantile`: buckets sorted by upper bound, duplicate
//! bounds merged, counts forced monotonic, linear interpolation inside the bucket the rank falls in,
//! the lower bound of the first bucket taken as 0, and a rank in the `+Inf` bucket answered with the
//! highest finite bound. Results are checked against real Prometheus in the end-to-end tests.

/// One cumulative bucket: the count of observations `<= upper_bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The bucket's `le` bound.
    pub upper_bound: f64,
    /// Cumulative count of observations at or below the bound.
    pub count: f64,
}

/// The `q`-quantile (0..=1) of cumulative `buckets`, or `None` where Prometheus answers `NaN`:
/// no `+Inf` bucket, fewer than two buckets, or no observations.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut sorted: Vec<Bucket> = buckets.to_vec();
    sorted.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    if sorted.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return None;
    }
    // Merge buckets with the same bound (series that differ only in other labels).
    let mut merged: Vec<Bucket> = Vec::with_capacity(sorted.len());
    for bucket in sorted {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(bucket),
        }
    }
    // Counts can dip where scrapes of different buckets raced; Prometheus forces them monotonic.
    let mut max = f64::NEG_INFINITY;
    for bucket in &mut merged {
        if bucket.count < max {
            bucket.count = max;
        } else {
            max = bucket.count;
        }
    }
    if merged.len() < 2 {
        return None;
    }
    let last = merged.len() - 1;
    let observations = merged[last].count;
    if observations <= 0.0 || observations.is_nan() {
        return None;
    }
    let mut rank = q * observations;
    let b = merged[..last]
        .iter()
        .position(|bucket| bucket.count >= rank)
        .unwrap_or(last);
    if b == last {
        return Some(merged[last - 1].upper_bound);
    }
    if b == 0 && merged[0].upper_bound <= 0.0 {
        return Some(merged[0].upper_bound);
    }
    let bucket_end = merged[b].upper_bound;
    let mut bucket_start = 0.0;
    let mut count = merged[b].count;
    if b > 0 {
        bucket_start = merged[b - 1].upper_bound;
        count -= merged[b - 1].count;
        rank -= merged[b - 1].count;
    }
    Some(bucket_start + (bucket_end - bucket_start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    #[test]
    fn hand_computed_cases() {
        // 100 observations: 10 <= 1, 60 <= 2, 90 <= 4, 100 <= +Inf.
        let b = buckets(&[
            (1.0, 10.0),
            (2.0, 60.0),
            (4.0, 90.0),
            (f64::INFINITY, 100.0),
        ]);
        // p50: rank 50 falls in (1,2]: 1 + 1 * (50-10)/50 = 1.8
        assert!((histogram_quantile(0.5, &b).unwrap() - 1.8).abs() < 1e-12);
        // p90: rank 90 is exactly the top of (2,4]: 2 + 2 * 30/30 = 4
        assert!((histogram_quantile(0.9, &b).unwrap() - 4.0).abs() < 1e-12);
        // p99: rank 99 is in +Inf: the highest finite bound.
        assert_eq!(histogram_quantile(0.99, &b), Some(4.0));
        // p05: rank 5 in the first bucket, lower bound 0: 0 + 1 * 5/10.
        assert!((histogram_quantile(0.05, &b).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn nan_cases_match_prometheus() {
        assert_eq!(histogram_quantile(0.5, &buckets(&[(1.0, 3.0)])), None);
        assert_eq!(
            histogram_quantile(0.5, &buckets(&[(f64::INFINITY, 3.0)])),
            None
        );
        assert_eq!(
            histogram_quantile(0.5, &buckets(&[(1.0, 0.0), (f64::INFINITY, 0.0)])),
            None
        );
        assert_eq!(
            histogram_quantile(f64::NAN, &buckets(&[(1.0, 1.0), (f64::INFINITY, 1.0)])),
            None
        );
        assert_eq!(
            histogram_quantile(1.5, &buckets(&[(1.0, 1.0), (f64::INFINITY, 1.0)])),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn unsorted_duplicate_and_non_monotonic_buckets() {
        let b = buckets(&[
            (f64::INFINITY, 60.0),
            (2.0, 20.0),
            (1.0, 10.0),
            (2.0, 20.0),
            (1.0, 0.0),
            (4.0, 30.0), // dips below the merged le=2 count of 40: forced to 40
        ]);
        // merged: 1->10, 2->40, 4->40, inf->60; p50 rank 30 in (1,2]: 1 + 20/30
        let p50 = histogram_quantile(0.5, &b).unwrap();
        assert!((p50 - (1.0 + 20.0 / 30.0)).abs() < 1e-12, "{p50}");
    }

    #[test]
    fn real_capture_latency_in_milliseconds() {
        // Buckets of milvus_proxy_sq_latency{query_type="search"} from the under-load capture.
        let b = buckets(&[
            (1.0, 0.0),
            (2.0, 0.0),
            (4.0, 0.0),
            (8.0, 0.0),
            (16.0, 1.0),
            (32.0, 13.0),
            (64.0, 204.0),
            (128.0, 682.0),
            (256.0, 803.0),
            (512.0, 854.0),
            (1024.0, 916.0),
            (2048.0, 958.0),
            (4096.0, 971.0),
            (f64::INFINITY, 971.0),
        ]);
        // p50: rank 485.5 in (64,128]: 64 + 64 * (485.5-204)/478
        let expected = 64.0 + 64.0 * (485.5 - 204.0) / 478.0;
        assert!((histogram_quantile(0.5, &b).unwrap() - expected).abs() < 1e-9);
    }
}
