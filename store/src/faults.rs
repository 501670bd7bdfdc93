//! Wrappers that make any store misbehave on purpose, for tests and benchmarks.
//!
//! [`FaultyStore`] fails a seeded fraction of requests (as a transient error, or by hanging until
//! a timeout), and [`SlowStore`] adds a per-request delay with jitter and an optional bandwidth
//! cap. Both wrap any [`BlobStore`], so the same conformance suite runs through them.
//! [`RetryingStore`], the one retry layer, runs any store's calls under a [`RetryPolicy`].
//!
//! Each says what becomes of the inner store's [local access](super::local_access):
//! [`FaultyStore`] offers it, faulted like the async calls; [`SlowStore`] stands for a distant
//! store and offers none; [`RetryingStore`] forwards it (calling-thread calls are not retried).

use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobProperties, BlobStore, Condition, CustomerKey, ListOptions, Listing, LocalAccess, Metadata,
    PinnedBlob, RetryPolicy, StoreError, StoreResult,
};

/// A small seeded generator (xorshift): reproducible fault patterns without a `rand` dependency.
#[derive(Debug)]
struct Seeded(Mutex<u64>);

impl Seeded {
    fn new(seed: u64) -> Self {
        Self(Mutex::new(seed.max(1)))
    }

    /// Uniform in [0, 1).
    fn next(&self) -> f64 {
        let mut state = self.0.lock().expect("poisoned");
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a [`FaultyStore`] misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// Fraction of requests that fail with a transient error.
    pub fail_fraction: f64,
    /// Fraction of requests that hang for `timeout` and then fail.
    pub timeout_fraction: f64,
    /// How long a "timed out" request hangs.
    pub timeout: Duration,
    /// Seed of the fault pattern.
    pub seed: u64,
}

/// Fails a seeded fraction of requests before they reach the inner store.
pub struct FaultyStore<S> {
    inner: S,
    plan: FaultPlan,
    rng: Seeded,
}

impl<S: BlobStore> FaultyStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        Self {
            inner,
            rng: Seeded::new(plan.seed),
            plan,
        }
    }

    /// The fault this request draws, if any: how long it hangs first and the error it gets.
    fn draw(&self, what: &str) -> Option<(Duration, StoreError)> {
        let roll = self.rng.next();
        if roll < self.plan.fail_fraction {
            return Some((Duration::ZERO, StoreError::Injected(what.to_owned())));
        }
        if roll < self.plan.fail_fraction + self.plan.timeout_fraction {
            let error = StoreError::Network {
                url: what.to_owned(),
                message: "injected timeout".into(),
            };
            return Some((self.plan.timeout, error));
        }
        None
    }

    async fn gate(&self, what: &str) -> StoreResult<()> {
        let Some((hang, error)) = self.draw(what) else {
            return Ok(());
        };
        if !hang.is_zero() {
            tokio::time::sleep(hang).await;
        }
        Err(error)
    }

    /// [`Self::gate`] for a calling-thread request.
    fn gate_blocking(&self, what: &str) -> StoreResult<()> {
        let Some((hang, error)) = self.draw(what) else {
            return Ok(());
        };
        std::thread::sleep(hang);
        Err(error)
    }
}

/// Delays every request; optionally caps bandwidth.
pub struct SlowStore<S> {
    inner: S,
    latency: Duration,
    jitter: Duration,
    bytes_per_second: Option<u64>,
    rng: Seeded,
}

impl<S: BlobStore> SlowStore<S> {
    /// Wraps `inner` with `latency ± jitter` per request and an optional bandwidth cap.
    pub fn new(
        inner: S,
        latency: Duration,
        jitter: Duration,
        bytes_per_second: Option<u64>,
    ) -> Self {
        Self {
            inner,
            latency,
            jitter,
            bytes_per_second,
            rng: Seeded::new(0x5eed),
        }
    }

    async fn delay(&self, bytes: usize) {
        let jitter = self.jitter.mul_f64(self.rng.next() * 2.0);
        let mut delay = (self.latency + jitter).saturating_sub(self.jitter);
        if let Some(rate) = self.bytes_per_second.filter(|r| *r > 0) {
            delay += Duration::from_secs_f64(bytes as f64 / rate as f64);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Implements [`BlobStore`] for a wrapper by running `$before` (an async gate taking the blob name
/// and byte count) and then forwarding to `self.inner`; its local access is `$local` (a method
/// saying what the wrapper makes of the inner store's).
macro_rules! forward_store {
    ($wrapper:ident, $before:ident, $local:ident) => {
        #[async_trait]
        impl<S: BlobStore> BlobStore for $wrapper<S> {
            fn location(&self) -> String {
                self.inner.location()
            }
            async fn create_container(&self) -> StoreResult<bool> {
                self.$before("create_container", 0).await?;
                self.inner.create_container().await
            }
            async fn container_exists(&self) -> StoreResult<bool> {
                self.$before("container_exists", 0).await?;
                self.inner.container_exists().await
            }
            async fn get(
                &self,
                name: &str,
                range: Option<Range<u64>>,
                cpk: Option<&CustomerKey>,
                if_match: Option<&str>,
            ) -> StoreResult<Bytes> {
                let len = range.as_ref().map_or(0, |r| (r.end - r.start) as usize);
                self.$before(name, len).await?;
                self.inner.get(name, range, cpk, if_match).await
            }
            async fn put(
                &self,
                name: &str,
                data: Bytes,
                metadata: &Metadata,
                condition: &Condition,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<String> {
                self.$before(name, data.len()).await?;
                self.inner.put(name, data, metadata, condition, cpk).await
            }
            async fn stage_block(
                &self,
                name: &str,
                block_id: &str,
                data: Bytes,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<()> {
                self.$before(name, data.len()).await?;
                self.inner.stage_block(name, block_id, data, cpk).await
            }
            async fn stage_block_at(
                &self,
                name: &str,
                block_id: &str,
                offset: u64,
                data: Bytes,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<()> {
                self.$before(name, data.len()).await?;
                self.inner
                    .stage_block_at(name, block_id, offset, data, cpk)
                    .await
            }
            async fn commit_blocks(
                &self,
                name: &str,
                block_ids: &[String],
                metadata: &Metadata,
                condition: &Condition,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<String> {
                self.$before(name, 0).await?;
                self.inner
                    .commit_blocks(name, block_ids, metadata, condition, cpk)
                    .await
            }
            async fn set_metadata(
                &self,
                name: &str,
                metadata: &Metadata,
                condition: &Condition,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<String> {
                self.$before(name, 0).await?;
                self.inner
                    .set_metadata(name, metadata, condition, cpk)
                    .await
            }
            async fn properties(
                &self,
                name: &str,
                cpk: Option<&CustomerKey>,
            ) -> StoreResult<BlobProperties> {
                self.$before(name, 0).await?;
                self.inner.properties(name, cpk).await
            }
            async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
                self.$before("list", 0).await?;
                self.inner.list(options).await
            }
            async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
                self.$before(name, 0).await?;
                self.inner.delete(name, condition).await
            }
            async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()> {
                self.$before(name, 0).await?;
                self.inner.discard_staged(name, block_ids).await
            }
            fn local(&self) -> Option<&dyn LocalAccess> {
                self.$local()
            }
        }
    };
}

impl<S: BlobStore> FaultyStore<S> {
    async fn before(&self, what: &str, _bytes: usize) -> StoreResult<()> {
        self.gate(what).await
    }

    /// Itself, over a store with local access: the calls are faulted as the async ones are.
    fn local_access(&self) -> Option<&dyn LocalAccess> {
        self.inner.local().map(|_| self as &dyn LocalAccess)
    }

    /// The inner store's local access, which [`Self::local_access`] offers this one over.
    fn inner_local(&self, name: &str) -> StoreResult<&dyn LocalAccess> {
        self.inner.local().ok_or_else(|| {
            StoreError::Config(format!(
                "{name}: {} has no local access to fault",
                self.inner.location()
            ))
        })
    }
}

impl<S: BlobStore> SlowStore<S> {
    async fn before(&self, _what: &str, bytes: usize) -> StoreResult<()> {
        self.delay(bytes).await;
        Ok(())
    }

    /// None: a slow store stands for a distant one, where every call waits out its delay on
    /// the async path (the mount's tests use it to run the embedded store as Azure is run).
    fn local_access(&self) -> Option<&dyn LocalAccess> {
        None
    }
}

forward_store!(FaultyStore, before, local_access);
forward_store!(SlowStore, before, local_access);

/// The fault plan on the calling thread: each call that is a request to the store draws its fault
/// (a hang is slept out on the calling thread), as the async calls do.
impl<S: BlobStore> LocalAccess for FaultyStore<S> {
    /// Never pins: every read stays a request that can fail ([`LocalAccess::get`] here, or the
    /// async `get`); a pinned blob would read past the plan.
    fn pin(
        &self,
        _name: &str,
        _cpk: Option<&CustomerKey>,
    ) -> StoreResult<Option<Box<dyn PinnedBlob>>> {
        Ok(None)
    }

    fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.gate_blocking(name)?;
        self.inner_local(name)?.get(name, range, cpk, if_match)
    }

    fn properties(&self, name: &str, cpk: Option<&CustomerKey>) -> StoreResult<BlobProperties> {
        self.gate_blocking(name)?;
        self.inner_local(name)?.properties(name, cpk)
    }

    fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.gate_blocking(name)?;
        self.inner_local(name)?
            .put(name, data, metadata, condition, cpk)
    }

    /// Not faulted: a staged block read back has no async twin to retry it, and the writer keeps
    /// no copy of its own on a store that serves them; the plan faults the staging and the commit.
    fn read_staged(
        &self,
        name: &str,
        block_id: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Bytes> {
        self.inner_local(name)?.read_staged(name, block_id, cpk)
    }
}

/// Runs every call of the inner store under one [`RetryPolicy`] (attempts, backoff, capped
/// `Retry-After`, an overall deadline per call): the only retry layer. [`super::open_store`] puts
/// it over Azure; the conformance suite runs it over [`FaultyStore`].
pub struct RetryingStore<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: BlobStore> RetryingStore<S> {
    /// Wraps `inner`, retrying its calls under `policy`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

#[async_trait]
impl<S: BlobStore> BlobStore for RetryingStore<S> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create_container(&self) -> StoreResult<bool> {
        self.policy
            .run("create_container", || self.inner.create_container())
            .await
    }
    async fn container_exists(&self) -> StoreResult<bool> {
        self.policy
            .run("container_exists", || self.inner.container_exists())
            .await
    }
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.policy
            .run(name, || self.inner.get(name, range.clone(), cpk, if_match))
            .await
    }
    /// The inner store's, unretried: a backoff would hold the calling thread (a FUSE thread).
    /// A transient failure goes back to the caller, which makes the async call, retried here
    /// ([`super::try_locally`]).
    fn local(&self) -> Option<&dyn LocalAccess> {
        self.inner.local()
    }
    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.policy
            .run(name, || {
                self.inner.put(name, data.clone(), metadata, condition, cpk)
            })
            .await
    }
    async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        self.policy
            .run(name, || {
                self.inner.stage_block(name, block_id, data.clone(), cpk)
            })
            .await
    }
    async fn stage_block_at(
        &self,
        name: &str,
        block_id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        self.policy
            .run(name, || {
                self.inner
                    .stage_block_at(name, block_id, offset, data.clone(), cpk)
            })
            .await
    }
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.policy
            .run(name, || {
                self.inner
                    .commit_blocks(name, block_ids, metadata, condition, cpk)
            })
            .await
    }
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.policy
            .run(name, || {
                self.inner.set_metadata(name, metadata, condition, cpk)
            })
            .await
    }
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        self.policy
            .run(name, || self.inner.properties(name, cpk))
            .await
    }
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        self.policy.run("list", || self.inner.list(options)).await
    }
    async fn list_names(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.policy
            .run("list", || self.inner.list_names(prefix))
            .await
    }
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        self.policy
            .run(name, || self.inner.delete(name, condition))
            .await
    }
    async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()> {
        self.policy
            .run(name, || self.inner.discard_staged(name, block_ids))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_uniformish() {
        let (a, b) = (Seeded::new(7), Seeded::new(7));
        let xs: Vec<f64> = (0..1000).map(|_| a.next()).collect();
        assert!(
            xs.iter()
                .zip((0..1000).map(|_| b.next()))
                .all(|(x, y)| *x == y)
        );
        let below_half = xs.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }
}
