//! Per-endpoint availability: the active health-check verdict and passive outlier ejection,
//! kept in atomics so endpoint selection reads them without locks. Kept per endpoint address
//! by the cluster's `ClusterState`, so it survives recompiles.

use crate::router::route::to_duration;
use sluice_proto::config as pb;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
/// Repeated ejections grow linearly up to this (or the base time, when longer).
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Larger thresholds mean the state practically never changes: a configuration mistake.
pub const MAX_THRESHOLD: u32 = 1000;

/// Milliseconds on a process-wide monotonic clock; never 0, so 0 can mean "not set".
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// Compiled `OutlierDetection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl Outlier {
    /// None when detection is disabled; unset or zero fields take the proto's defaults.
    pub fn compile(o: Option<&pb::OutlierDetection>) -> Result<Option<Outlier>, String> {
        let Some(o) = o else {
            return Ok(Some(Outlier::default()));
        };
        if o.consecutive_failures > MAX_THRESHOLD {
            return Err(format!(
                "outlier_detection.consecutive_failures: {} is more than {MAX_THRESHOLD}",
                o.consecutive_failures
            ));
        }
        if o.max_ejection_percent > 100 {
            return Err(format!(
                "outlier_detection.max_ejection_percent: {} is more than 100",
                o.max_ejection_percent
            ));
        }
        let base_ejection = match &o.base_ejection_time {
            Some(d) => {
                to_duration(d).map_err(|e| format!("outlier_detection.base_ejection_time: {e}"))?
            }
            None => Duration::ZERO,
        };
        if o.disabled {
            return Ok(None);
        }
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        Ok(Some(Outlier {
            consecutive_failures: or(o.consecutive_failures, DEFAULT_CONSECUTIVE_FAILURES),
            base_ejection: if base_ejection.is_zero() {
                DEFAULT_BASE_EJECTION
            } else {
                base_ejection
            },
            max_ejection_percent: or(o.max_ejection_percent, DEFAULT_MAX_EJECTION_PERCENT),
        }))
    }

    /// How long the `times`-th ejection (1-based) lasts: base × times, capped.
    pub fn ejection_time(&self, times: u32) -> Duration {
        let cap = MAX_EJECTION.max(self.base_ejection);
        self.base_ejection.saturating_mul(times.max(1)).min(cap)
    }

    /// How many of `endpoints` may be ejected at once: the percentage, but at least one, so a
    /// single-endpoint cluster (every Goma backend) can be ejected and its route's other
    /// backends take over.
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        (endpoints * self.max_ejection_percent as usize / 100).max(1)
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// One endpoint's availability. New endpoints start healthy and in service, so a config
/// change never causes errors while the first probe runs.
#[derive(Debug)]
pub struct EndpointHealth {
    /// Verdict of the active health check; only consulted while the cluster has one.
    healthy: AtomicBool,
    /// Consecutive failed requests (outlier detection).
    failures: AtomicU32,
    /// `now_ms` when the current ejection ends; 0 when in service.
    ejected_until: AtomicU64,
    /// When the last ejection ended (or ends), for forgetting old ejections.
    last_ejection_end: AtomicU64,
    /// Ejections so far; multiplies the next ejection's length.
    ejections: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_ejection_end: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

/// What one forwarded request taught about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx response, a connect failure, a timeout or a broken connection.
    Failure,
}

impl EndpointHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the active health check's verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Whether the endpoint is ejected at the time `now` returns (read only when an ejection is
    /// recorded, so the common case costs one atomic load). Returns `Some(false)` the first time
    /// an ejection is seen to have ended (for logging), `Some(true)` while ejected.
    pub fn ejection(&self, now: impl FnOnce() -> u64) -> Option<bool> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        if now() < until {
            return Some(true);
        }
        // Only the first observer reports the end.
        self.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            .then_some(false)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Records a success: the failure streak ends, and an endpoint that has stayed in service
    /// for as long as its last ejection's base time forgets its earlier ejections.
    pub fn record_success(&self, outlier: &Outlier, now: impl FnOnce() -> u64) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            let ended = self.last_ejection_end.load(Ordering::Relaxed);
            let quiet = u64::try_from(outlier.base_ejection.as_millis()).unwrap_or(u64::MAX);
            if now().saturating_sub(ended) >= quiet {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Records a failure; true when the streak reached the threshold and the caller should try
    /// to eject (see [`EndpointHealth::eject`]).
    pub fn record_failure(&self, outlier: &Outlier) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= outlier.consecutive_failures
    }

    /// Ejects the endpoint at `now` unless it already is; returns the ejection's length.
    /// Callers serialise ejections per cluster to enforce the ejection cap.
    pub fn eject(&self, outlier: &Outlier, now: u64) -> Option<Duration> {
        self.failures.store(0, Ordering::Relaxed);
        if self.is_ejected(now) {
            return None;
        }
        let times = self
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let length = outlier.ejection_time(times);
        let until = now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.last_ejection_end.store(until, Ordering::Relaxed);
        self.ejected_until.store(until, Ordering::Relaxed);
        Some(length)
    }

    /// The current streak of failed requests.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Gives up an ejection attempt that the cap refused: the streak starts over.
    pub fn reset_failures(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> prost_types::Duration {
        prost_types::Duration {
            seconds: s,
            nanos: 0,
        }
    }

    #[test]
    fn compile_defaults_and_validation() {
        assert_eq!(Outlier::compile(None), Ok(Some(Outlier::default())));
        let zero = pb::OutlierDetection::default();
        assert_eq!(Outlier::compile(Some(&zero)), Ok(Some(Outlier::default())));
        let off = pb::OutlierDetection {
            disabled: true,
            ..Default::default()
        };
        assert_eq!(Outlier::compile(Some(&off)), Ok(None));
        let set = pb::OutlierDetection {
            consecutive_failures: 2,
            base_ejection_time: Some(secs(3)),
            max_ejection_percent: 100,
            disabled: false,
        };
        assert_eq!(
            Outlier::compile(Some(&set)),
            Ok(Some(Outlier {
                consecutive_failures: 2,
                base_ejection: Duration::from_secs(3),
                max_ejection_percent: 100,
            }))
        );
        for (bad, field) in [
            (
                pb::OutlierDetection {
                    max_ejection_percent: 101,
                    ..Default::default()
                },
                "outlier_detection.max_ejection_percent: 101 is more than 100",
            ),
            (
                pb::OutlierDetection {
                    consecutive_failures: 1001,
                    ..Default::default()
                },
                "outlier_detection.consecutive_failures: 1001 is more than 1000",
            ),
            (
                pb::OutlierDetection {
                    base_ejection_time: Some(secs(-1)),
                    // Invalid even when disabled: the resource is wrong either way.
                    disabled: true,
                    ..Default::default()
                },
                "outlier_detection.base_ejection_time: invalid duration -1s 0ns",
            ),
        ] {
            assert_eq!(Outlier::compile(Some(&bad)).unwrap_err(), field);
        }
    }

    #[test]
    fn ejection_math() {
        let o = Outlier {
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
            ..Outlier::default()
        };
        assert_eq!(o.ejection_time(1), Duration::from_secs(30));
        assert_eq!(o.ejection_time(3), Duration::from_secs(90));
        assert_eq!(o.ejection_time(1000), Duration::from_secs(300));
        let long = Outlier {
            base_ejection: Duration::from_secs(600),
            ..o
        };
        assert_eq!(long.ejection_time(2), Duration::from_secs(600));
        assert_eq!(o.max_ejected(1), 1);
        assert_eq!(o.max_ejected(3), 1);
        assert_eq!(o.max_ejected(10), 5);
        let all = Outlier {
            max_ejection_percent: 100,
            ..o
        };
        assert_eq!(all.max_ejected(4), 4);
    }

    #[test]
    fn failures_eject_and_ejection_ends_by_time() {
        let o = Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(1000),
            max_ejection_percent: 50,
        };
        let h = EndpointHealth::default();
        assert!(!h.record_failure(&o));
        assert!(!h.record_failure(&o));
        // A success resets the streak.
        h.record_success(&o, || 10);
        assert!(!h.record_failure(&o));
        assert!(!h.record_failure(&o));
        assert!(h.record_failure(&o));
        assert_eq!(h.eject(&o, 100), Some(Duration::from_millis(1000)));
        assert_eq!(h.ejection(|| 500), Some(true));
        // Already ejected: a second attempt is a no-op.
        assert_eq!(h.eject(&o, 600), None);
        assert!(h.is_ejected(1099));
        // The first look after the end reports it once, then the endpoint is in service.
        assert_eq!(h.ejection(|| 1100), Some(false));
        assert_eq!(h.ejection(|| 1100), None);
        assert!(!h.is_ejected(1100));
        // The second ejection lasts twice as long.
        assert_eq!(h.eject(&o, 2000), Some(Duration::from_millis(2000)));
        assert_eq!(h.ejection(|| 3999), Some(true));
        assert_eq!(h.ejection(|| 4000), Some(false));
        // A success soon after the ejection keeps the count; one after a quiet base time
        // forgets it.
        h.record_success(&o, || 4500);
        assert_eq!(h.eject(&o, 4600), Some(Duration::from_millis(3000)));
        assert_eq!(h.ejection(|| 7600), Some(false));
        h.record_success(&o, || 8600);
        assert_eq!(h.eject(&o, 9000), Some(Duration::from_millis(1000)));
    }

    #[test]
    fn active_verdict_reports_changes() {
        let h = EndpointHealth::default();
        assert!(h.is_healthy());
        assert!(!h.set_healthy(true));
        assert!(h.set_healthy(false));
        assert!(!h.is_healthy());
        assert!(h.set_healthy(true));
    }
}
