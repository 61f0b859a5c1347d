//! A lock-free duration histogram with Prometheus' default buckets (Goma's, from Go's
//! `prometheus.DefBuckets`). prometheus-client's own histogram takes a mutex per observation;
//! this one is a few relaxed atomic adds, which matters at one observation per request.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds (`+Inf` is implicit).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, so an observation compares integers.
const BOUNDS_NS: [u64; 11] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Cloning shares the counts (like prometheus-client's metrics).
#[derive(Clone, Debug, Default)]
pub struct Histogram(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BOUNDS_NS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            if let Some(bound) = BUCKETS.get(i) {
                slot.0 = *bound;
            }
            slot.1 = self.0.buckets[i].load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(5)); // exactly on the first bound
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(11)); // only +Inf
        assert_eq!(h.count(), 3);
        let mut registry = Registry::default();
        registry.register("d_seconds", "help", h);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "d_seconds_count 3",
            "d_seconds_sum 11.012",
            "d_seconds_bucket{le=\"0.005\"} 1",
            "d_seconds_bucket{le=\"0.01\"} 2",
            "d_seconds_bucket{le=\"10.0\"} 2",
            "d_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
