//! Per-route metric handles. A route's handles are resolved once (at snapshot compile time) and
//! its per-method series on first use, so recording a request is an array index and a few atomic
//! adds: no label hashing, no family lock, no allocation.

use super::histogram::Histogram;
use super::labels::{RouteLabel, RouteMethod, StatusLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Methods with their own slot; any other method is counted under [`OTHER_METHOD`], which bounds
/// the series a client can create by inventing methods.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
pub const OTHER_METHOD: &str = "OTHER";
const METHOD_SLOTS: usize = METHODS.len() + 1;

/// The slot of a request method (the last slot is every non-standard method).
pub fn method_slot(method: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(METHODS.len())
}

fn method_label(slot: usize) -> &'static str {
    METHODS.get(slot).copied().unwrap_or(OTHER_METHOD)
}

/// Statuses with a precomputed slot; others go through the family (a hash and a read lock).
const COMMON_STATUSES: [u16; 17] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504,
];

/// The families every route's series live in (clones share the families).
#[derive(Clone, Debug, Default)]
pub struct RouteFamilies {
    pub requests: Family<RouteMethod, Counter>,
    pub statuses: Family<StatusLabels, Counter>,
    pub duration: Family<RouteMethod, Histogram>,
    pub upstream_duration: Family<RouteLabel, Histogram>,
    pub request_bytes: Family<RouteMethod, Counter>,
    pub response_bytes: Family<RouteMethod, Counter>,
}

/// Which route stats are alive, by label: two compiled versions of one route (or two routes
/// sharing a label) share one [`RouteStats`], so counters continue across recompiles.
#[derive(Debug, Default)]
pub struct StatsIndex {
    live: Mutex<HashMap<Arc<str>, Weak<RouteStats>>>,
}

impl StatsIndex {
    /// The stats for `name`, shared with every live route of that label.
    pub fn acquire(self: &Arc<Self>, name: &str, families: &Arc<RouteFamilies>) -> Arc<RouteStats> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = live.get(name).and_then(Weak::upgrade) {
            return stats;
        }
        let name: Arc<str> = Arc::from(name);
        let stats = Arc::new(RouteStats {
            name: name.clone(),
            families: families.clone(),
            methods: Default::default(),
            upstream: OnceLock::new(),
            index: Arc::downgrade(self),
        });
        live.insert(name, Arc::downgrade(&stats));
        stats
    }

    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }
}

/// The series of one route label. Dropped when no compiled route (in any snapshot still in
/// use) carries it; its series are then removed from the exposition.
#[derive(Debug)]
pub struct RouteStats {
    name: Arc<str>,
    /// Shared by every route (one pointer per route, not six).
    families: Arc<RouteFamilies>,
    /// Allocated at the route's first request: a route that never serves one (most of a large
    /// configuration at any moment) pays one pointer, not ~170 bytes of empty slots.
    methods: OnceLock<Box<MethodSlots>>,
    upstream: OnceLock<Histogram>,
    index: Weak<StatsIndex>,
}

type MethodSlots = [OnceLock<Box<MethodStats>>; METHOD_SLOTS];

#[derive(Debug)]
struct MethodStats {
    requests: Counter,
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
    /// Other statuses seen, so their series can be removed with the route.
    rare_statuses: Mutex<Vec<u16>>,
}

impl RouteStats {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn labels(&self, slot: usize) -> RouteMethod {
        RouteMethod {
            name: self.name.clone(),
            method: method_label(slot),
        }
    }

    fn method(&self, slot: usize) -> &MethodStats {
        let slot = slot.min(METHOD_SLOTS - 1);
        self.methods.get_or_init(Box::default)[slot].get_or_init(|| {
            let labels = self.labels(slot);
            let f = &self.families;
            Box::new(MethodStats {
                requests: f.requests.get_or_create_owned(&labels),
                duration: f.duration.get_or_create_owned(&labels),
                request_bytes: f.request_bytes.get_or_create_owned(&labels),
                response_bytes: f.response_bytes.get_or_create_owned(&labels),
                statuses: Default::default(),
                rare_statuses: Mutex::new(Vec::new()),
            })
        })
    }

    /// Counts a request whose response headers are ready (`gateway_requests_total` and
    /// `gateway_response_status_total`).
    pub fn record_response(&self, slot: usize, status: u16) {
        let m = self.method(slot);
        m.requests.inc();
        let labels = || StatusLabels {
            status,
            name: self.name.clone(),
            method: method_label(slot),
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                m.statuses[i]
                    .get_or_init(|| self.families.statuses.get_or_create_owned(&labels()))
                    .inc();
            }
            None => {
                self.families.statuses.get_or_create(&labels()).inc();
                let mut rare = m.rare_statuses.lock().unwrap_or_else(|e| e.into_inner());
                if !rare.contains(&status) {
                    rare.push(status);
                }
            }
        }
    }

    /// Records a finished exchange: its duration (request arrival to the end of the response
    /// body) and the body bytes that went through.
    pub fn record_completion(
        &self,
        slot: usize,
        elapsed: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let m = self.method(slot);
        m.duration.observe(elapsed);
        m.request_bytes.inc_by(request_bytes);
        m.response_bytes.inc_by(response_bytes);
    }

    /// Time from the request's arrival to the upstream's response headers.
    pub fn record_upstream(&self, elapsed: Duration) {
        self.upstream
            .get_or_init(|| {
                self.families
                    .upstream_duration
                    .get_or_create_owned(&RouteLabel {
                        name: self.name.clone(),
                    })
            })
            .observe(elapsed);
    }

    fn remove_series(&self) {
        let f = &self.families;
        let methods = self.methods.get().map_or(&[][..], |m| &m[..]);
        for (slot, m) in methods.iter().enumerate() {
            let Some(m) = m.get() else { continue };
            let labels = self.labels(slot);
            f.requests.remove(&labels);
            f.duration.remove(&labels);
            f.request_bytes.remove(&labels);
            f.response_bytes.remove(&labels);
            let rare = m.rare_statuses.lock().unwrap_or_else(|e| e.into_inner());
            let common = COMMON_STATUSES
                .iter()
                .zip(&m.statuses)
                .filter(|(_, c)| c.get().is_some())
                .map(|(s, _)| s);
            for status in common.chain(rare.iter()) {
                f.statuses.remove(&StatusLabels {
                    status: *status,
                    name: self.name.clone(),
                    method: labels.method,
                });
            }
        }
        if self.upstream.get().is_some() {
            f.upstream_duration.remove(&RouteLabel {
                name: self.name.clone(),
            });
        }
    }
}

impl Drop for RouteStats {
    fn drop(&mut self) {
        let Some(index) = self.index.upgrade() else {
            return;
        };
        let mut live = index.live.lock().unwrap_or_else(|e| e.into_inner());
        // A route of the same label compiled meanwhile took over these series: keep them.
        if !live
            .get(&self.name)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            return;
        }
        live.remove(&self.name);
        // Under the index lock, so a new RouteStats for this label starts from removed series.
        self.remove_series();
    }
}
