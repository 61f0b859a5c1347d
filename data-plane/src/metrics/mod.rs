//! Prometheus metrics of one data-plane pod. Goma Gateway's names and labels (`gateway_*`, so
//! existing dashboards keep working) plus Sluice's own (`sluice_*`). One registry per pod: a
//! standalone process running several gateways exposes each on its own admin port.
//!
//! The `name` label of per-route series is the route's `metrics_name` (a Goma Route's
//! `metadata.name`), else its resource name. Requests no route answered (404, 421, ...) are
//! counted under [`UNMATCHED`]. Routes with `disable_metrics` record no per-route series.

pub mod endpoint;
pub mod histogram;
pub mod l4;
pub mod labels;
pub mod route;

pub use histogram::Histogram;
pub use route::{RouteStats, method_slot};

use labels::{ClusterLabel, HandshakeLabels, TypeLabel};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use route::{RouteFamilies, StatsIndex};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The `name` label of requests that matched no route. Not a valid Kubernetes object name, so
/// it cannot collide with a route's.
pub const UNMATCHED: &str = "(none)";

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge<f64, AtomicU64>,
    routes_count: Gauge,
    families: Arc<RouteFamilies>,
    index: Arc<StatsIndex>,
    unmatched: Arc<RouteStats>,
    connect_errors: Family<ClusterLabel, Counter>,
    timeouts: Family<ClusterLabel, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
    l4: l4::L4Families,
    xds_connected: Gauge,
    config_applied: Gauge<f64, AtomicU64>,
    config_resources: Family<TypeLabel, Gauge>,
    config_accepted: Family<TypeLabel, Counter>,
    config_rejected: Family<TypeLabel, Counter>,
    /// Follows `middleware::rate_limit::STORE_FALLBACKS` (process-wide), caught up at render.
    rate_limit_fallbacks: Counter,
    rate_limit_fallbacks_seen: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let uptime = Gauge::<f64, AtomicU64>::default();
        let routes_count = Gauge::default();
        let families = RouteFamilies::default();
        r.register(
            "gateway_uptime_seconds",
            "Seconds since the data plane started",
            uptime.clone(),
        );
        r.register(
            "gateway_routes_count",
            "Routes in the configuration being served",
            routes_count.clone(),
        );
        // prometheus-client appends `_total` to counter names.
        r.register(
            "gateway_requests",
            "Requests by route and method",
            families.requests.clone(),
        );
        r.register(
            "gateway_response_status",
            "Responses by status, route and method",
            families.statuses.clone(),
        );
        r.register(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            families.duration.clone(),
        );
        r.register(
            "gateway_upstream_duration_seconds",
            "Time from a request's arrival to the upstream's response headers",
            families.upstream_duration.clone(),
        );
        r.register(
            "gateway_request_bytes",
            "Request body bytes received",
            families.request_bytes.clone(),
        );
        r.register(
            "gateway_response_bytes",
            "Response body bytes sent",
            families.response_bytes.clone(),
        );
        let connect_errors = Family::default();
        let timeouts = Family::default();
        let handshakes = Family::default();
        r.register(
            "sluice_upstream_connect_errors",
            "Requests answered 502 because no connection to the upstream could be made",
            Family::<ClusterLabel, Counter>::clone(&connect_errors),
        );
        r.register(
            "sluice_upstream_timeouts",
            "Requests answered 504 because the upstream did not answer in time",
            Family::<ClusterLabel, Counter>::clone(&timeouts),
        );
        r.register(
            "sluice_tls_handshakes",
            "TLS handshakes on listener ports by result (ok, failed)",
            Family::<HandshakeLabels, Counter>::clone(&handshakes),
        );
        let l4 = l4::L4Families::default();
        l4.register(&mut r);
        let xds_connected = Gauge::default();
        let config_applied = Gauge::<f64, AtomicU64>::default();
        let config_resources = Family::default();
        let config_accepted = Family::default();
        let config_rejected = Family::default();
        r.register(
            "sluice_xds_connected",
            "1 while the xDS stream to the control plane is open",
            xds_connected.clone(),
        );
        r.register(
            "sluice_config_last_applied_timestamp_seconds",
            "Unix time the last configuration change was applied and serving",
            config_applied.clone(),
        );
        r.register(
            "sluice_config_resources",
            "Resources held, by type",
            Family::<TypeLabel, Gauge>::clone(&config_resources),
        );
        r.register(
            "sluice_config_accepted_resources",
            "Resource updates and removals applied, by type",
            Family::<TypeLabel, Counter>::clone(&config_accepted),
        );
        r.register(
            "sluice_config_rejected_resources",
            "Resource updates rejected (NACKed), by type",
            Family::<TypeLabel, Counter>::clone(&config_rejected),
        );
        let rate_limit_fallbacks = Counter::default();
        r.register(
            "sluice_rate_limit_store_fallbacks",
            "Rate-limit decisions made by this process's own buckets because the shared store (Redis) failed",
            rate_limit_fallbacks.clone(),
        );
        let index = Arc::new(StatsIndex::default());
        let families = Arc::new(families);
        let unmatched = index.acquire(UNMATCHED, &families);
        Metrics {
            registry: r,
            started: Instant::now(),
            uptime,
            routes_count,
            families,
            index,
            unmatched,
            connect_errors,
            timeouts,
            handshakes,
            l4,
            xds_connected,
            config_applied,
            config_resources,
            config_accepted,
            config_rejected,
            rate_limit_fallbacks,
            rate_limit_fallbacks_seen: AtomicU64::new(0),
        }
    }

    /// The handles for a route labelled `name`, shared with other live routes of that label so
    /// counters continue when a route is recompiled.
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        self.index.acquire(name, &self.families)
    }

    /// Where requests no route answered are counted.
    pub fn unmatched(&self) -> &Arc<RouteStats> {
        &self.unmatched
    }

    pub fn upstream_connect_error(&self, cluster: &Arc<str>) {
        self.connect_errors
            .get_or_create(&ClusterLabel {
                cluster: cluster.clone(),
            })
            .inc();
    }

    pub fn upstream_timeout(&self, cluster: &Arc<str>) {
        self.timeouts
            .get_or_create(&ClusterLabel {
                cluster: cluster.clone(),
            })
            .inc();
    }

    pub fn tls_handshake(&self, port: u16, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.handshakes
            .get_or_create(&HandshakeLabels { port, result })
            .inc();
    }

    /// Counters of TCP, UDP and TLS listeners.
    pub fn l4(&self) -> &l4::L4Families {
        &self.l4
    }

    pub fn xds_connected(&self, connected: bool) {
        self.xds_connected.set(i64::from(connected));
    }

    /// Records an applied xDS response of `type_name` ("listener", "route", ...).
    pub fn config_applied(
        &self,
        type_name: &'static str,
        held: usize,
        accepted: u64,
        rejected: u64,
    ) {
        let label = TypeLabel { r#type: type_name };
        self.config_resources
            .get_or_create(&label)
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        self.config_accepted.get_or_create(&label).inc_by(accepted);
        self.config_rejected.get_or_create(&label).inc_by(rejected);
        if accepted > 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_applied.set(now);
        }
    }

    /// The OpenMetrics text exposition; `routes` is the current snapshot's route count.
    pub fn render(&self, routes: usize) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.routes_count
            .set(i64::try_from(routes).unwrap_or(i64::MAX));
        let fallbacks = crate::middleware::rate_limit::STORE_FALLBACKS.load(Ordering::Relaxed);
        // fetch_max: concurrent scrapes each add only what the other did not.
        let counted = self
            .rate_limit_fallbacks_seen
            .fetch_max(fallbacks, Ordering::Relaxed);
        if fallbacks > counted {
            self.rate_limit_fallbacks.inc_by(fallbacks - counted);
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
