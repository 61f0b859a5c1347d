//! Failed bootstrap attempts (`Identity.IssueCertificate` with a token that does not
//! authenticate) are rate-limited per peer IP: a token bucket per address, spent by failures
//! only, so guessing tokens or hammering TokenReview is slow while a pod that bootstraps
//! correctly is never held back. An address out of attempts is refused before its token is
//! even checked, with RESOURCE_EXHAUSTED and a retry hint.

use super::admission::{TokenBucket, pushback_ms, with_pushback};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts an address may make at once...
pub const FAILURE_BURST: u32 = 10;
/// ...and then one every this long.
pub const FAILURE_REFILL: Duration = Duration::from_secs(6);
/// Addresses tracked before the ones that have recovered are forgotten.
const MAX_TRACKED: usize = 10_000;

pub struct FailedBootstraps {
    burst: u32,
    refill: Duration,
    by_peer: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl Default for FailedBootstraps {
    fn default() -> Self {
        Self::new(FAILURE_BURST, FAILURE_REFILL)
    }
}

impl FailedBootstraps {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst,
            refill,
            by_peer: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, TokenBucket>> {
        self.by_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer` may attempt a bootstrap now, or how long it must wait.
    pub fn admit(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.lock().get_mut(&peer) {
            Some(bucket) => bucket.available(now),
            None => Ok(()),
        }
    }

    /// Spends one of `peer`'s attempts.
    pub fn record_failure(&self, peer: IpAddr, now: Instant) {
        let mut by_peer = self.lock();
        if by_peer.len() >= MAX_TRACKED && !by_peer.contains_key(&peer) {
            by_peer.retain(|_, bucket| !bucket.is_full(now));
        }
        let rate = 1.0 / self.refill.as_secs_f64().max(f64::EPSILON);
        let _ = by_peer
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(rate, self.burst, now))
            .take(now);
    }
}

/// The refusal of an address out of attempts: the hint is in the message and in gRPC's
/// standard `grpc-retry-pushback-ms` trailer.
pub fn limited_status(peer: IpAddr, retry_after: Duration) -> tonic::Status {
    let ms = pushback_ms(retry_after);
    with_pushback(
        tonic::Status::resource_exhausted(format!(
            "too many failed bootstrap attempts from {peer}: retry in {} s",
            ms.div_ceil(1000)
        )),
        ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_spend_attempts_and_each_address_has_its_own() {
        let limit = FailedBootstraps::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(limit.admit(a, t0).is_ok());
        limit.record_failure(a, t0);
        assert!(limit.admit(a, t0).is_ok());
        limit.record_failure(a, t0);
        let wait = limit.admit(a, t0).expect_err("out of attempts");
        assert_eq!(wait, Duration::from_secs(10));
        assert!(limit.admit(b, t0).is_ok(), "another address is unaffected");
        assert!(limit.admit(a, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn the_refusal_says_who_and_when() {
        let s = limited_status("10.0.0.1".parse().expect("ip"), Duration::from_millis(5500));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "too many failed bootstrap attempts from 10.0.0.1: retry in 6 s"
        );
        assert_eq!(
            s.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("5501")
        );
    }
}
