//! The one retry policy of every store call: bounded attempts, exponential backoff with jitter,
//! a capped `Retry-After`, and an overall deadline per call.
//!
//! Retries live in exactly one layer, [`super::faults::RetryingStore`], which runs every call of
//! the store under it through [`RetryPolicy::run`]. Backends make one attempt per call and say
//! whether a failure is worth retrying ([`StoreError::is_transient`]) and how long the service
//! asked to wait ([`StoreError::retry_after`]). Nesting retry loops multiplies their attempts and
//! timeouts (the mount's six attempts over the Azure client's five, each with a 60 s timeout, once
//! let one FUSE request block for half an hour), so nothing else retries.
//!
//! The deadline covers the whole call: every attempt, every wait, and the body of a response. An
//! attempt still running when it passes is dropped (which cancels its request) and the call fails
//! with [`StoreError::Timeout`], naming the blob. A wait that would end past the deadline is not
//! started: the call fails at once with the last error.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{StoreError, StoreResult};

/// How a store call is retried. [`Default`]: 6 attempts within 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub attempts: u32,
    /// The most one call may take, all attempts and waits together.
    pub deadline: Duration,
    /// First backoff delay; it doubles per retry (×0.5–1.5 jitter) up to [`Self::max_delay`].
    pub first_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Longest wait a `Retry-After` from the service can impose (a throttling service that asks
    /// for an hour gets this much, then another attempt or the error).
    pub retry_after_cap: Duration,
}

/// Deadline of one store call unless configured (`--request-timeout`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured unless configured.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(5);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            deadline: DEFAULT_DEADLINE,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
        }
    }
}

impl RetryPolicy {
    /// This policy with another overall deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// This policy with another number of attempts.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// This policy with another first backoff delay (tests use milliseconds).
    pub fn with_first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }

    /// Runs `op` until it succeeds, fails for good, runs out of attempts or passes the deadline.
    /// `what` names the blob (or the container call) in a timeout.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let start = Instant::now();
        let mut delay = self.first_delay;
        for attempt in 1.. {
            let remaining = self.deadline.saturating_sub(start.elapsed());
            let error = match tokio::time::timeout(remaining, op()).await {
                Err(_elapsed) => return Err(self.timeout(what)),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !error.is_transient() || attempt >= self.attempts => {
                    return Err(error);
                }
                Ok(Err(error)) => error,
            };
            let wait = match error.retry_after() {
                Some(asked) => asked.min(self.retry_after_cap),
                None => delay.mul_f64(0.5 + jitter_fraction()),
            };
            if start.elapsed() + wait >= self.deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.max_delay);
        }
        unreachable!("the loop returns")
    }

    fn timeout(&self, what: &str) -> StoreError {
        StoreError::Timeout {
            what: what.to_owned(),
            after: self.deadline,
        }
    }
}

/// Uniform in [0, 1), from the system RNG (jitter needs no reproducibility).
fn jitter_fraction() -> f64 {
    let mut bytes = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    f64::from(u16::from_le_bytes(bytes)) / 65536.0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn busy(retry_after: Option<Duration>) -> StoreError {
        StoreError::Http {
            method: "GET".into(),
            url: "u".into(),
            status: 503,
            code: "ServerBusy".into(),
            retry_after,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_attempts() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy::default()
            .with_attempts(3)
            .with_first_delay(Duration::from_millis(1));
        let result: StoreResult<()> = policy
            .run("b", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(busy(None))
            })
            .await;
        assert!(matches!(result, Err(StoreError::Http { status: 503, .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        let calls = AtomicU32::new(0);
        let result: StoreResult<()> = policy
            .run("b", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::BlobNotFound("b".into()))
            })
            .await;
        assert!(matches!(result, Err(StoreError::BlobNotFound(_))));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "permanent errors are not retried"
        );
    }

    #[tokio::test]
    async fn a_long_retry_after_is_capped_and_the_deadline_holds() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            attempts: 100,
            deadline: Duration::from_millis(1500),
            retry_after_cap: Duration::from_millis(200),
            ..RetryPolicy::default()
        };
        let start = Instant::now();
        let result: StoreResult<()> = policy
            .run("b", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(busy(Some(Duration::from_secs(3600))))
            })
            .await;
        assert!(matches!(result, Err(StoreError::Http { status: 503, .. })));
        assert!(start.elapsed() < Duration::from_millis(1500));
        assert!(
            calls.load(Ordering::Relaxed) >= 5,
            "capped waits, several attempts"
        );
    }

    #[tokio::test]
    async fn a_hanging_attempt_ends_at_the_deadline_naming_the_blob() {
        let policy = RetryPolicy::default().with_deadline(Duration::from_millis(300));
        let start = Instant::now();
        let result: StoreResult<()> = policy
            .run("dir/blob", std::future::pending::<StoreResult<()>>)
            .await;
        let error = result.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(error, StoreError::Timeout { .. }));
        assert!(error.to_string().contains("dir/blob"), "{error}");
    }
}
