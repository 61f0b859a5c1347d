//! What the proxy learned while serving a request (route, upstream, failure), reported to its
//! caller for metrics and access logs. Filled in place, so reporting allocates nothing.

use crate::metrics::RouteStats;
use crate::router::CompiledRoute;
use crate::upstream::CompiledCluster;
use crate::upstream::cluster::Endpoint;
use http::uri::Authority;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Report {
    /// The client's address (the peer, or what a trusted proxy reported).
    pub client_ip: Option<std::net::IpAddr>,
    /// The route that answered; None when no route matched.
    pub route: Option<Arc<str>>,
    /// That route's metric handles (None: unmatched, or metrics disabled for the route).
    pub stats: Option<Arc<RouteStats>>,
    /// The cluster and endpoint the request was sent to.
    pub cluster: Option<Arc<str>>,
    pub endpoint: Option<Authority>,
    /// The upstream answered with response headers.
    pub upstream_responded: bool,
    pub failure: Option<UpstreamFailure>,
    /// Extra access-log fields from the route's middlewares (accessLog).
    pub log_fields: Vec<(Arc<str>, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
}

impl Report {
    pub(super) fn matched(&mut self, route: &CompiledRoute) {
        self.route = Some(route.name.clone());
        self.stats = route.stats.clone();
    }

    pub(super) fn forwarding(&mut self, cluster: &CompiledCluster, endpoint: &Endpoint) {
        self.cluster = Some(cluster.name.clone());
        self.endpoint = Some(endpoint.authority.clone());
    }
}
