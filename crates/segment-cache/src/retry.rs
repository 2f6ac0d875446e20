//! The one retry policy of the cache's own upstream requests: [`RetryPolicy`].

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

/// Attempts per call site when `upstream.max_attempts` is not set.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; each further wait doubles (jittered), up to [`MAX_DELAY`].
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The retry budget of every upstream call site of the cache, stated here and nowhere else.
///
/// A call site is one request the cache makes itself, with its answer read to the end:
/// - a `HeadObject`; one `ListObjectsV2` page;
/// - the whole-object `GetObject` of a fetch: the request, its body and the object's
///   verification (and, for a fetch in parts, a change of the object mid-way, which restarts it);
/// - one ranged part of a fetch in parts: the request and its body.
///
/// Each call site gets `attempts` tries in all (`upstream.max_attempts`, default
/// [`DEFAULT_ATTEMPTS`]), retrying only [transient](crate::upstream::FetchError::is_transient)
/// errors, with jittered exponential backoff ([`MIN_DELAY`] doubling to [`MAX_DELAY`]). Nothing
/// around a call site retries it again: the SDK's own retry is off for these requests (it cannot
/// retry a body cut mid-way nor bytes that fail their checksum, and layers multiply: the SDK, the
/// fetch and the part loops once made 27 GETs of one bad part), and a part that used up its
/// budget fails the fetch instead of restarting it. A read miss that keeps failing therefore
/// costs `attempts` GETs, or for a fetch in parts 1 + `attempts` per failing part.
///
/// Requests forwarded as they are (every other S3 operation, and reads passed through) have no
/// layer of the cache around them: the SDK retries those, with the same number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_ATTEMPTS)
    }
}

impl RetryPolicy {
    /// `attempts` tries per call site (at least one).
    #[must_use]
    pub fn new(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
        }
    }

    /// Tries per call site.
    #[must_use]
    pub fn attempts(self) -> u32 {
        self.attempts
    }

    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(usize::try_from(self.attempts - 1).unwrap_or(usize::MAX))
    }

    /// Runs the call site `op` (`what` of `key`, for the log) until it succeeds, fails with an
    /// error `retry` refuses, or the budget is spent; returns the last answer.
    pub async fn run<T, E, F, Fut>(
        self,
        what: &'static str,
        key: &str,
        op: F,
        retry: impl FnMut(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        op.retry(self.backoff())
            .when(retry)
            .notify(|e: &E, wait: Duration| {
                tracing::debug!(what, key, error = %e, ?wait, "upstream retry");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn tries_attempts_times_and_only_what_it_should() {
        let n = AtomicU32::new(0);
        let r: Result<(), &str> = RetryPolicy::new(3)
            .run(
                "get",
                "k",
                || async {
                    n.fetch_add(1, Ordering::SeqCst);
                    Err("down")
                },
                |_| true,
            )
            .await;
        assert_eq!((r, n.load(Ordering::SeqCst)), (Err("down"), 3));
        n.store(0, Ordering::SeqCst);
        let r: Result<(), &str> = RetryPolicy::new(3)
            .run(
                "get",
                "k",
                || async {
                    n.fetch_add(1, Ordering::SeqCst);
                    Err("404")
                },
                |_| false,
            )
            .await;
        assert_eq!((r, n.load(Ordering::SeqCst)), (Err("404"), 1));
        assert_eq!(RetryPolicy::new(0).attempts(), 1);
    }
}
