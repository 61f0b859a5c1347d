//! Storm protection for the xDS server: a token bucket on new streams (a reconnect storm is shed
//! with UNAVAILABLE and a retry hint instead of queueing thousands of initial pushes), and a
//! bound on how many streams build their pushes at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Tunables, with defaults sized so one control plane re-admits a fleet of ~1000 pods at once
/// and sheds what comes faster than that.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Streams building their responses at the same time (view diff + encoding into messages).
    pub max_concurrent_pushes: usize,
    /// Sustained rate of new streams admitted.
    pub new_streams_per_second: f64,
    /// New streams admitted at once before the rate applies.
    pub new_stream_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_pushes: 64,
            new_streams_per_second: 500.0,
            new_stream_burst: 1000,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second. Time is passed in so the
/// arithmetic is unit-tested without sleeping.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            // A zero or negative rate would never refill: treat it as "one per hour".
            rate: if rate > 0.0 { rate } else { 1.0 / 3600.0 },
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.available(now)?;
        self.tokens -= 1.0;
        Ok(())
    }

    /// Whether a token is there (without taking it), or how long until one is.
    pub fn available(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Whether the bucket is back to its burst (it remembers nothing worth keeping).
    pub fn is_full(&mut self, now: Instant) -> bool {
        let _ = self.available(now);
        self.tokens >= self.burst
    }
}

/// The server's admission state: shared by every stream.
pub struct Admission {
    limits: Limits,
    new_streams: Mutex<TokenBucket>,
    pushes: Semaphore,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            new_streams: Mutex::new(TokenBucket::new(
                limits.new_streams_per_second,
                limits.new_stream_burst,
                Instant::now(),
            )),
            pushes: Semaphore::new(limits.max_concurrent_pushes.max(1)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits a new stream, or returns how long the client should wait before retrying.
    pub fn admit_stream(&self) -> Result<(), Duration> {
        self.new_streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now())
    }

    /// Waits for a push slot; hold it while building a stream's responses, not while the
    /// client reads them (a slow reader must not hold a slot). `None` only if the semaphore
    /// were closed, which nothing does.
    pub async fn push_permit(&self) -> Option<SemaphorePermit<'_>> {
        self.pushes.acquire().await.ok()
    }
}

/// The UNAVAILABLE answer to a stream shed by the rate limit: the hint is in the message and in
/// gRPC's standard `grpc-retry-pushback-ms` trailer.
pub fn shed_status(retry_after: Duration) -> tonic::Status {
    let ms = pushback_ms(retry_after);
    with_pushback(
        tonic::Status::unavailable(format!(
            "too many new xDS streams: retry in {ms} ms (with jitter)"
        )),
        ms,
    )
}

/// The wait to ask of a refused client, rounded up so one honouring the hint never comes back
/// before a token is there.
pub fn pushback_ms(retry_after: Duration) -> u128 {
    retry_after.as_millis().max(1) + 1
}

/// `status` with the wait in gRPC's standard `grpc-retry-pushback-ms` trailer.
pub fn with_pushback(mut status: tonic::Status, ms: u128) -> tonic::Status {
    if let Ok(value) = ms.to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("burst spent");
        assert!(
            (wait.as_secs_f64() - 0.1).abs() < 1e-6,
            "one token every 100 ms, got {wait:?}"
        );
        // 50 ms later half a token is there: still refused, with the remaining half as the hint.
        let wait = b
            .take(t0 + Duration::from_millis(50))
            .expect_err("half a token");
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-6, "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn bucket_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later).is_ok());
        assert!(b.take(later).is_ok());
        assert!(b.take(later).is_err());
    }

    #[test]
    fn time_going_backwards_neither_panics_nor_mints_tokens() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(1.0, 1, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0 - Duration::from_millis(500)).is_err());
    }

    #[test]
    fn shed_status_is_unavailable_with_a_retry_hint() {
        let s = shed_status(Duration::from_millis(20));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("retry in 21 ms"), "{}", s.message());
        assert_eq!(
            s.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("21")
        );
    }

    #[tokio::test]
    async fn push_permits_are_bounded() {
        let a = Admission::new(Limits {
            max_concurrent_pushes: 2,
            ..Limits::default()
        });
        let p1 = a.push_permit().await;
        let _p2 = a.push_permit().await;
        let third = tokio::time::timeout(Duration::from_millis(20), a.push_permit()).await;
        assert!(third.is_err(), "a third concurrent push must wait");
        drop(p1);
        let third = tokio::time::timeout(Duration::from_secs(5), a.push_permit()).await;
        assert!(third.is_ok(), "a released slot is reused");
    }
}
