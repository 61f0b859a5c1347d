//! Compiled clusters and endpoint selection (weighted round robin, random) over the endpoints
//! currently available: healthy by the active check (when the cluster has one) and not ejected.

use super::budget::RetryBudget;
use super::client::Connections;
use super::client::UpstreamBody;
use super::client::{self, Clients, DEFAULT_CONNECT_TIMEOUT, Protocol, UpstreamClient};
use super::connector::parse_server_name;
use super::error::{SendError, UpstreamError};
use super::health::HealthCheck;
use super::outlier::{EndpointHealth, Outcome, Outlier, now_ms};
use super::pool::{self, PoolSettings};
use super::response_body::ResponseBody;
use super::tls::{Alpn, TlsInputs, client_config, validate_subject_alt_name};
use crate::router::route::to_duration;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response};
use sluice_proto::config as pb;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// Per-cluster state that must survive recompiles (kept by the Compiler by cluster name).
#[derive(Debug, Default)]
pub struct ClusterState {
    rr: AtomicU64,
    /// Endpoint health by address, sorted by address (an exact-size slice: a hash map of one
    /// endpoint costs ~180 bytes, and clusters usually have one or a few); an endpoint keeps
    /// it while it stays in the cluster.
    endpoints: Mutex<KnownEndpoints>,
    pub budget: Arc<RetryBudget>,
    /// Serialises ejection decisions, so concurrent failures cannot exceed the ejection cap.
    ejecting: Mutex<()>,
}

type KnownEndpoints = Box<[(Authority, Arc<EndpointHealth>)]>;

impl ClusterState {
    /// The health of each of `endpoints` (shared when an address appears twice); forgets the
    /// addresses no longer listed.
    fn endpoint_health(&self, endpoints: &[Authority]) -> Vec<Arc<EndpointHealth>> {
        let mut known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut listed: Vec<&Authority> = endpoints.iter().collect();
        listed.sort_by(|a, b| authority_order(a, b));
        listed.dedup_by(|a, b| authority_order(a, b).is_eq());
        let kept: Box<[(Authority, Arc<EndpointHealth>)]> = listed
            .into_iter()
            .map(|a| {
                let health = known
                    .binary_search_by(|(k, _)| authority_order(k, a))
                    .map(|i| known[i].1.clone())
                    .unwrap_or_default();
                (a.clone(), health)
            })
            .collect();
        let health = endpoints
            .iter()
            .map(|a| {
                kept.binary_search_by(|(k, _)| authority_order(k, a))
                    .map(|i| kept[i].1.clone())
                    .unwrap_or_default()
            })
            .collect();
        *known = kept;
        health
    }
}

/// Authorities ordered as they compare equal: ASCII case-insensitively.
fn authority_order(a: &Authority, b: &Authority) -> std::cmp::Ordering {
    a.as_str()
        .bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.as_str().bytes().map(|c| c.to_ascii_lowercase()))
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, parsed once at compile time.
    pub authority: Authority,
    /// The authority as a Host header value, so forwarding does not rebuild it per request.
    pub host_header: HeaderValue,
    pub weight: u32,
    /// Shared with the next compiled version while the address stays in the cluster.
    pub health: Arc<EndpointHealth>,
    /// The endpoint's connections, shared with every compiled cluster that lists the endpoint
    /// on the same client.
    pub connections: Connections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lb {
    RoundRobin,
    Random,
}

/// Which endpoints selection may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Healthy and not ejected.
    Available,
    /// Healthy, ejected or not: when every endpoint a request could use is ejected, serving
    /// from an ejected one beats refusing (outlier detection must not take a route down).
    IgnoreEjection,
}

pub struct CompiledCluster {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    /// Running sums of endpoint weights, for weighted selection by binary search.
    cumulative: Vec<u64>,
    pub lb: Lb,
    pub protocol: Protocol,
    pub scheme: Scheme,
    pub connect_timeout: Duration,
    /// Resolved pool settings (the cluster's own over the gateway's defaults).
    pub pool: PoolSettings,
    pub client: UpstreamClient,
    /// What the TLS client was built from (None: plaintext); equal inputs keep the client.
    /// Boxed: most clusters are plaintext, and the inputs are ~200 bytes inline.
    pub tls: Option<Box<TlsInputs>>,
    /// The TLS connector of L4 streams (no ALPN), built on the first one: HTTP-only clusters
    /// never pay for it, and streams do not parse the roots each.
    stream_tls: OnceLock<Result<TlsConnector, String>>,
    pub health_check: Option<Arc<HealthCheck>>,
    /// None: passive outlier detection is off.
    pub outlier: Option<Outlier>,
    pub state: Arc<ClusterState>,
}

impl std::fmt::Debug for CompiledCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("lb", &self.lb)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.as_ref().map(|t| &t.settings))
            .field("health_check", &self.health_check)
            .field("outlier", &self.outlier)
            .finish_non_exhaustive()
    }
}

/// The clock read at most once per selection, and only when an ejection needs it.
struct LazyNow(Cell<u64>);

impl LazyNow {
    fn new() -> Self {
        LazyNow(Cell::new(0))
    }
    fn get(&self) -> u64 {
        if self.0.get() == 0 {
            self.0.set(now_ms());
        }
        self.0.get()
    }
}

/// Whether endpoint `i` is in the `tried` mask (endpoints past the 64th are never excluded).
fn in_mask(mask: u64, i: usize) -> bool {
    i < 64 && mask & (1 << i) != 0
}

/// Checks a Cluster; errors name the field.
pub fn validate(c: &pb::Cluster) -> Result<(), String> {
    if c.name.is_empty() {
        return Err("name: empty".into());
    }
    pb::LbPolicy::try_from(c.lb_policy)
        .map_err(|_| format!("lb_policy: unknown value {}", c.lb_policy))?;
    pb::UpstreamProtocol::try_from(c.protocol)
        .map_err(|_| format!("protocol: unknown value {}", c.protocol))?;
    if let Some(d) = &c.connect_timeout {
        to_duration(d).map_err(|e| format!("connect_timeout: {e}"))?;
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        endpoint(e).map_err(|err| format!("endpoints[{i}].{err}"))?;
    }
    if let Some(h) = &c.health_check {
        HealthCheck::compile(h)?;
    }
    Outlier::compile(c.outlier_detection.as_ref())?;
    if let Some(t) = &c.tls {
        if !t.server_name.is_empty() {
            parse_server_name(&t.server_name).map_err(|e| format!("tls.server_name: {e}"))?;
        }
        for (i, san) in t.subject_alt_names.iter().enumerate() {
            validate_subject_alt_name(san)
                .map_err(|e| format!("tls.subject_alt_names[{i}]: {e}"))?;
        }
    }
    if let Some(p) = &c.pool {
        pool::validate(p).map_err(|e| format!("pool.{e}"))?;
    }
    Ok(())
}

/// The pool settings `c` is compiled with, given the gateway's defaults.
pub fn pool_settings(c: &pb::Cluster, defaults: PoolSettings) -> PoolSettings {
    match &c.pool {
        Some(p) => defaults.overridden_by(p),
        None => defaults,
    }
}

/// The TLS inputs of `c` with its Secrets resolved in `secrets`; None for a plaintext cluster.
/// `ca_secret` must name a CaBundle and `client_certificate_secret` a TlsCertificate.
pub fn tls_inputs(
    c: &pb::Cluster,
    secrets: &BTreeMap<String, Arc<pb::Secret>>,
) -> Result<Option<TlsInputs>, String> {
    let Some(settings) = &c.tls else {
        return Ok(None);
    };
    let lookup = |field: &str, name: &str, ca: bool| -> Result<Option<Arc<pb::Secret>>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        let secret = secrets
            .get(name)
            .ok_or_else(|| format!("tls.{field}: secret {name:?} does not exist"))?;
        match (&secret.kind, ca) {
            (Some(pb::secret::Kind::CaBundle(_)), true)
            | (Some(pb::secret::Kind::TlsCertificate(_)), false) => Ok(Some(secret.clone())),
            (_, true) => Err(format!("tls.{field}: secret {name:?} is not a CaBundle")),
            (_, false) => Err(format!(
                "tls.{field}: secret {name:?} is not a TlsCertificate"
            )),
        }
    };
    Ok(Some(TlsInputs {
        settings: settings.clone(),
        ca: lookup("ca_secret", &settings.ca_secret, true)?,
        client_certificate: lookup(
            "client_certificate_secret",
            &settings.client_certificate_secret,
            false,
        )?,
    }))
}

/// An endpoint's address, checked; its Host header value.
fn endpoint(e: &pb::Endpoint) -> Result<(Authority, HeaderValue), String> {
    if e.address.is_empty() {
        return Err("address: empty".into());
    }
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(format!("port: {} is not in 1..=65535", e.port))?;
    // IPv6 literals need brackets in an authority.
    let host = if e.address.contains(':') && !e.address.starts_with('[') {
        format!("[{}]", e.address)
    } else {
        e.address.clone()
    };
    let authority = Authority::try_from(format!("{host}:{port}"))
        .map_err(|err| format!("address: {:?} is not a host name or IP: {err}", e.address))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "address: {:?} must not contain userinfo",
            e.address
        ));
    }
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("address: {:?} is not a valid Host header", e.address))?;
    Ok((authority, host_header))
}

impl CompiledCluster {
    /// Compiles a validated cluster; `state` carries the round-robin position and endpoint
    /// health across versions, `tls` comes from [`tls_inputs`], `pool` from [`pool_settings`],
    /// and `previous` (the last compiled version) lends its TLS client when nothing it was built
    /// from changed, so its pooled connections survive.
    pub fn compile(
        c: &pb::Cluster,
        state: Arc<ClusterState>,
        clients: &Clients,
        tls: Option<TlsInputs>,
        pool: PoolSettings,
        previous: Option<&CompiledCluster>,
    ) -> Result<Self, String> {
        let name = c.name.as_str().into();
        Self::compile_named(c, name, state, clients, tls, pool, previous)
    }

    /// As [`CompiledCluster::compile`], with the cluster's name already allocated (the
    /// Compiler shares one allocation per name between its maps and the compiled cluster).
    pub fn compile_named(
        c: &pb::Cluster,
        name: Arc<str>,
        state: Arc<ClusterState>,
        clients: &Clients,
        tls: Option<TlsInputs>,
        pool: PoolSettings,
        previous: Option<&CompiledCluster>,
    ) -> Result<Self, String> {
        validate(c)?;
        let addresses = c
            .endpoints
            .iter()
            .map(endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let protocol = match pb::UpstreamProtocol::try_from(c.protocol) {
            Ok(pb::UpstreamProtocol::H2c) => Protocol::H2c,
            _ => Protocol::Http1,
        };
        let lb = match pb::LbPolicy::try_from(c.lb_policy) {
            Ok(pb::LbPolicy::Random) => Lb::Random,
            _ => Lb::RoundRobin,
        };
        let connect_timeout = match &c.connect_timeout {
            Some(d) => to_duration(d)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let connect_timeout = if connect_timeout.is_zero() {
            DEFAULT_CONNECT_TIMEOUT
        } else {
            connect_timeout
        };
        let (scheme, client) = match &tls {
            None => (Scheme::HTTP, clients.get(protocol, connect_timeout, pool)),
            Some(inputs) => {
                let kept = previous
                    .filter(|p| {
                        p.protocol == protocol
                            && p.connect_timeout == connect_timeout
                            && p.pool == pool
                            && p.tls.as_deref() == Some(inputs)
                    })
                    .map(|p| p.client.clone());
                let client = match kept {
                    Some(client) => client,
                    None => {
                        if inputs.settings.insecure_skip_verify {
                            tracing::warn!(cluster = %name, "upstream TLS certificate verification is off (insecure_skip_verify)");
                        }
                        // H2C over TLS is HTTP/2 negotiated by ALPN.
                        let alpn = match protocol {
                            Protocol::Http1 => Alpn::Http1,
                            Protocol::H2c => Alpn::H2,
                        };
                        let config = client_config(inputs, alpn)?;
                        client::tls_client(
                            protocol,
                            connect_timeout,
                            pool,
                            config,
                            &inputs.settings.server_name,
                            name.clone(),
                        )?
                    }
                };
                (Scheme::HTTPS, client)
            }
        };
        let authorities: Vec<Authority> = addresses.iter().map(|(a, _)| a.clone()).collect();
        let health = state.endpoint_health(&authorities);
        let endpoints: Vec<Endpoint> = addresses
            .into_iter()
            .zip(health)
            .zip(&c.endpoints)
            .map(|(((authority, host_header), health), e)| Endpoint {
                connections: client.connections(&authority),
                authority,
                host_header,
                weight: e.weight.max(1),
                health,
            })
            .collect();
        let health_check = match &c.health_check {
            Some(h) => Some(Arc::new(HealthCheck::compile(h)?)),
            None => None,
        };
        // Verdicts left from an earlier health check are stale: a check that (re)appears
        // starts from healthy, so adding one never causes errors while the first probes run.
        if health_check.is_some() && previous.is_none_or(|p| p.health_check.is_none()) {
            for e in &endpoints {
                e.health.set_healthy(true);
            }
        }
        let outlier = Outlier::compile(c.outlier_detection.as_ref())?;
        let mut cumulative = Vec::with_capacity(endpoints.len());
        let mut sum = 0u64;
        for e in &endpoints {
            sum += u64::from(e.weight);
            cumulative.push(sum);
        }
        Ok(CompiledCluster {
            name,
            endpoints,
            cumulative,
            lb,
            protocol,
            scheme,
            connect_timeout,
            pool,
            client,
            tls: tls.map(Box::new),
            stream_tls: OnceLock::new(),
            health_check,
            outlier,
            state,
        })
    }

    /// How L4 streams reach this cluster: None for plaintext, else its TLS connector (offering
    /// no ALPN) and the fixed SNI (None: each endpoint's host). Errors name the field.
    pub fn stream_tls(&self) -> Option<Result<(&TlsConnector, Option<&str>), &str>> {
        let inputs = self.tls.as_ref()?;
        let connector = self.stream_tls.get_or_init(|| {
            client_config(inputs, Alpn::None).map(|config| TlsConnector::from(Arc::new(config)))
        });
        let server_name = Some(inputs.settings.server_name.as_str()).filter(|n| !n.is_empty());
        Some(match connector {
            Ok(connector) => Ok((connector, server_name)),
            Err(error) => Err(error.as_str()),
        })
    }

    /// Sends `req` to endpoint `idx`. HTTP/1.1 requests carry the origin-form URI and a `Host`
    /// header; HTTP/2 ones the absolute URI (its authority is `:authority`). A request that
    /// never left comes back with the error.
    pub async fn send(
        &self,
        idx: usize,
        req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        match self.endpoints.get(idx).map(|e| &e.connections) {
            Some(Connections::Http1(pool)) => pool.send(req).await,
            Some(Connections::Http2(connection)) => connection.send(req).await,
            None => Err(SendError::unsent(
                UpstreamError::Connect(format!("cluster {}: no endpoint {idx}", self.name).into()),
                req,
            )),
        }
    }

    /// Picks an available endpoint; None when the cluster has none.
    pub fn pick(&self) -> Option<&Endpoint> {
        self.choose(0, Eligibility::Available)
            .and_then(|i| self.endpoints.get(i))
    }

    /// Whether endpoint `i` may take a request.
    fn usable(&self, i: usize, eligibility: Eligibility, now: &LazyNow) -> bool {
        let Some(e) = self.endpoints.get(i) else {
            return false;
        };
        if self.health_check.is_some() && !e.health.is_healthy() {
            return false;
        }
        match e.health.ejection(|| now.get()) {
            None => true,
            Some(true) => eligibility == Eligibility::IgnoreEjection,
            Some(false) => {
                tracing::info!(cluster = %self.name, endpoint = %e.authority, "ejection ended: endpoint back in service");
                true
            }
        }
    }

    /// Whether some endpoint outside `tried` (a mask of endpoint indexes) may take a request.
    pub fn has_usable(&self, tried: u64, eligibility: Eligibility) -> bool {
        let now = LazyNow::new();
        (0..self.endpoints.len()).any(|i| !in_mask(tried, i) && self.usable(i, eligibility, &now))
    }

    /// Picks the index of an endpoint outside `tried` (a mask of endpoint indexes) by the
    /// cluster's policy. When the policy's pick is unusable, picks at random by weight among
    /// the usable ones, so the load of an endpoint out of service spreads over all the others.
    /// Retries (`tried` not empty) pick at random too: they must not shift the round robin of
    /// first attempts (or every first attempt would meet the endpoint that keeps failing).
    pub fn choose(&self, tried: u64, eligibility: Eligibility) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let point = match self.lb {
            Lb::RoundRobin if tried == 0 => self.state.rr.fetch_add(1, Ordering::Relaxed) % total,
            _ => fastrand::u64(0..total),
        };
        // First endpoint whose running sum exceeds the point.
        let idx = self.cumulative.partition_point(|&c| c <= point);
        let now = LazyNow::new();
        if !in_mask(tried, idx) && self.usable(idx, eligibility, &now) {
            return Some(idx);
        }
        let eligible = |i: usize| !in_mask(tried, i) && self.usable(i, eligibility, &now);
        let usable_total: u64 = (0..self.endpoints.len())
            .filter(|&i| eligible(i))
            .map(|i| u64::from(self.endpoints[i].weight))
            .sum();
        if usable_total == 0 {
            return None;
        }
        // A fresh random point: the policy's point is biased towards the unusable endpoint's
        // neighbours.
        let mut point = fastrand::u64(0..usable_total);
        let mut last = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            last = Some(i);
            let w = u64::from(e.weight);
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        // An endpoint went out of service between the two passes.
        last
    }

    /// Feeds passive outlier detection with the outcome of a request to endpoint `idx`.
    pub fn report(&self, idx: usize, outcome: Outcome) {
        let (Some(outlier), Some(e)) = (&self.outlier, self.endpoints.get(idx)) else {
            return;
        };
        match outcome {
            Outcome::Success => e.health.record_success(outlier, now_ms),
            Outcome::Failure => {
                if e.health.record_failure(outlier) {
                    self.eject(e, outlier);
                }
            }
        }
    }

    /// Ejects `e` unless that would put more than the allowed share of the cluster out.
    fn eject(&self, e: &Endpoint, outlier: &Outlier) {
        let _serial = self
            .state
            .ejecting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now))
            .count();
        if !e.health.is_ejected(now) && ejected >= outlier.max_ejected(self.endpoints.len()) {
            e.health.reset_failures();
            tracing::debug!(cluster = %self.name, endpoint = %e.authority, ejected, "ejection cap reached; endpoint kept in service");
            return;
        }
        if let Some(time) = e.health.eject(outlier, now) {
            tracing::warn!(
                cluster = %self.name,
                endpoint = %e.authority,
                ejection_ms = time.as_millis() as u64,
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext cluster with the default pool, carrying `state` across compiles.
    fn with_state(c: &pb::Cluster, state: Arc<ClusterState>, clients: &Clients) -> CompiledCluster {
        CompiledCluster::compile(c, state, clients, None, PoolSettings::default(), None).unwrap()
    }

    #[test]
    fn endpoint_health_is_shared_by_equal_addresses_and_kept_for_listed_ones() {
        let state = ClusterState::default();
        let auth = |s: &str| Authority::try_from(s).expect("valid");
        let first = state.endpoint_health(&[auth("b:80"), auth("a:80"), auth("A:80")]);
        // Authorities compare case-insensitively: a:80 and A:80 are one endpoint.
        assert!(Arc::ptr_eq(&first[1], &first[2]));
        assert!(!Arc::ptr_eq(&first[0], &first[1]));
        let second = state.endpoint_health(&[auth("c:80"), auth("a:80")]);
        assert!(Arc::ptr_eq(&second[1], &first[1]));
        assert!(!Arc::ptr_eq(&second[0], &first[0]));
        // b:80 was dropped from the list, so it comes back with fresh health.
        let third = state.endpoint_health(&[auth("b:80")]);
        assert!(!Arc::ptr_eq(&third[0], &first[0]));
    }

    /// A plaintext cluster with fresh state and the default pool.
    fn plain(c: &pb::Cluster, clients: &Clients) -> CompiledCluster {
        with_state(c, Arc::default(), clients)
    }

    fn cluster(endpoints: &[(&str, u32, u32)], lb: pb::LbPolicy) -> pb::Cluster {
        pb::Cluster {
            name: "c".into(),
            endpoints: endpoints
                .iter()
                .map(|(a, p, w)| pb::Endpoint {
                    address: a.to_string(),
                    port: *p,
                    weight: *w,
                })
                .collect(),
            lb_policy: lb as i32,
            ..Default::default()
        }
    }

    #[test]
    fn validates_endpoints() {
        assert!(
            validate(&cluster(
                &[("10.0.0.1", 80, 1), ("svc.ns.svc", 8080, 0), ("::1", 1, 1)],
                pb::LbPolicy::RoundRobin
            ))
            .is_ok()
        );
        let err = validate(&cluster(
            &[("10.0.0.1", 80, 1), ("", 80, 1)],
            pb::LbPolicy::RoundRobin,
        ))
        .unwrap_err();
        assert_eq!(err, "endpoints[1].address: empty");
        let err = validate(&cluster(&[("a", 0, 1)], pb::LbPolicy::RoundRobin)).unwrap_err();
        assert!(err.starts_with("endpoints[0].port"), "{err}");
        let err = validate(&cluster(&[("a", 70000, 1)], pb::LbPolicy::RoundRobin)).unwrap_err();
        assert!(err.starts_with("endpoints[0].port"), "{err}");
        let err = validate(&cluster(&[("a b", 80, 1)], pb::LbPolicy::RoundRobin)).unwrap_err();
        assert!(err.starts_with("endpoints[0].address"), "{err}");
        let mut c = cluster(&[], pb::LbPolicy::RoundRobin);
        c.protocol = 9;
        assert!(validate(&c).unwrap_err().starts_with("protocol:"));
    }

    #[tokio::test]
    async fn weighted_round_robin_survives_recompile() {
        let clients = Clients::default();
        let state = Arc::new(ClusterState::default());
        let pb = cluster(&[("a", 80, 3), ("b", 80, 0)], pb::LbPolicy::RoundRobin);
        let c = with_state(&pb, state.clone(), &clients);
        let picks: Vec<_> = (0..3)
            .map(|_| c.pick().unwrap().authority.host().to_string())
            .collect();
        assert_eq!(picks, ["a", "a", "a"]);
        // A recompile with the same state continues the rotation instead of restarting it;
        // weight 0 counts as 1.
        let c2 = with_state(&pb, state, &clients);
        assert_eq!(c2.pick().unwrap().authority.host(), "b");
        assert_eq!(c2.pick().unwrap().authority.host(), "a");
        assert_eq!(c2.endpoints[0].authority.as_str(), "a:80");
        let empty = plain(&cluster(&[], pb::LbPolicy::Random), &clients);
        assert!(empty.pick().is_none());
    }

    #[tokio::test]
    async fn random_covers_endpoints() {
        let clients = Clients::default();
        let c = plain(
            &cluster(&[("a", 80, 1), ("b", 80, 1)], pb::LbPolicy::Random),
            &clients,
        );
        let a = (0..1000)
            .filter(|_| c.pick().unwrap().authority.host() == "a")
            .count();
        assert!((300..=700).contains(&a), "{a}");
    }

    fn hosts(c: &CompiledCluster, n: usize, tried: u64, e: Eligibility) -> Vec<String> {
        (0..n)
            .map(|_| match c.choose(tried, e) {
                Some(i) => c.endpoints[i].authority.host().to_string(),
                None => "-".into(),
            })
            .collect()
    }

    fn checked(mut c: pb::Cluster) -> pb::Cluster {
        c.health_check = Some(pb::HealthCheck {
            path: "/healthz".into(),
            ..Default::default()
        });
        c
    }

    #[tokio::test]
    async fn selection_skips_unavailable_endpoints() {
        use Eligibility::*;
        let clients = Clients::default();
        let state = Arc::new(ClusterState::default());
        let pb = checked(cluster(
            &[("a", 80, 1), ("b", 80, 1), ("c", 80, 2)],
            pb::LbPolicy::RoundRobin,
        ));
        let c = with_state(&pb, state.clone(), &clients);
        assert_eq!(hosts(&c, 4, 0, Available), ["a", "b", "c", "c"]);
        // An unhealthy endpoint's share spreads over the others by weight.
        c.endpoints[1].health.set_healthy(false);
        assert!(c.has_usable(0, Available));
        let picks = hosts(&c, 300, 0, Available);
        let count = |h: &str| picks.iter().filter(|p| *p == h).count();
        // 75 picks fall on b and move: about a third to a, two thirds to c.
        assert_eq!(count("b"), 0);
        assert!((80..=125).contains(&count("a")), "{}", count("a"));
        // Ejected endpoints are skipped unless ejection is ignored; unhealthy ones never serve.
        let outlier = c.outlier.unwrap();
        c.endpoints[2].health.eject(&outlier, now_ms());
        assert_eq!(hosts(&c, 3, 0, Available), ["a", "a", "a"]);
        // Endpoints already tried are skipped (a mask of indexes).
        assert_eq!(hosts(&c, 2, 0b001, Available), ["-", "-"]);
        assert!(!c.has_usable(0b001, Available));
        assert_eq!(hosts(&c, 2, 0b001, IgnoreEjection), ["c", "c"]);
        c.endpoints[0].health.set_healthy(false);
        assert_eq!(hosts(&c, 2, 0, Available), ["-", "-"]);
        assert_eq!(hosts(&c, 2, 0, IgnoreEjection), ["c", "c"]);
        assert!(c.pick().is_none());

        // Verdicts survive a recompile for the addresses that stay; a new address starts
        // healthy, and a removed one is forgotten.
        let moved = checked(cluster(
            &[("a", 80, 1), ("d", 80, 1)],
            pb::LbPolicy::RoundRobin,
        ));
        let c2 = CompiledCluster::compile(
            &moved,
            state.clone(),
            &clients,
            None,
            PoolSettings::default(),
            Some(&c),
        )
        .unwrap();
        assert!(Arc::ptr_eq(&c.endpoints[0].health, &c2.endpoints[0].health));
        assert_eq!(hosts(&c2, 2, 0, Available), ["d", "d"]);
        let back = CompiledCluster::compile(
            &pb,
            state.clone(),
            &clients,
            None,
            PoolSettings::default(),
            Some(&c2),
        )
        .unwrap();
        assert!(back.endpoints[1].health.is_healthy());
        assert!(!back.endpoints[0].health.is_healthy());

        // Without a health check the verdict is not consulted; a check that comes back starts
        // from healthy.
        let unchecked = cluster(&[("a", 80, 1)], pb::LbPolicy::RoundRobin);
        let c3 = CompiledCluster::compile(
            &unchecked,
            state.clone(),
            &clients,
            None,
            PoolSettings::default(),
            Some(&back),
        )
        .unwrap();
        assert_eq!(hosts(&c3, 1, 0, Available), ["a"]);
        let c4 = CompiledCluster::compile(
            &checked(unchecked),
            state,
            &clients,
            None,
            PoolSettings::default(),
            Some(&c3),
        )
        .unwrap();
        assert!(c4.endpoints[0].health.is_healthy());
    }

    #[tokio::test]
    async fn outlier_detection_ejects_within_the_cap() {
        let clients = Clients::default();
        let mut pb = cluster(
            &[("a", 80, 1), ("b", 80, 1), ("c", 80, 1), ("d", 80, 1)],
            pb::LbPolicy::RoundRobin,
        );
        pb.outlier_detection = Some(pb::OutlierDetection {
            consecutive_failures: 2,
            ..Default::default()
        });
        let c = plain(&pb, &clients);
        let ejected = || {
            let now = now_ms();
            c.endpoints
                .iter()
                .filter(|e| e.health.is_ejected(now))
                .map(|e| e.authority.host().to_string())
                .collect::<Vec<_>>()
        };
        // A success between failures resets the streak.
        c.report(0, Outcome::Failure);
        c.report(0, Outcome::Success);
        c.report(0, Outcome::Failure);
        assert!(ejected().is_empty());
        c.report(0, Outcome::Failure);
        assert_eq!(ejected(), ["a"]);
        for i in 1..4 {
            c.report(i, Outcome::Failure);
            c.report(i, Outcome::Failure);
        }
        // At most 50% of four endpoints are out at once.
        assert_eq!(ejected(), ["a", "b"]);

        // A single-endpoint cluster may lose its endpoint (the route's other backends take
        // over); with detection disabled nothing is ejected.
        let mut single = cluster(&[("a", 80, 1)], pb::LbPolicy::Random);
        let c = plain(&single, &clients);
        for _ in 0..5 {
            c.report(0, Outcome::Failure);
        }
        assert!(c.pick().is_none());
        single.outlier_detection = Some(pb::OutlierDetection {
            disabled: true,
            ..Default::default()
        });
        let c = plain(&single, &clients);
        for _ in 0..10 {
            c.report(0, Outcome::Failure);
        }
        assert!(c.pick().is_some());
    }

    #[test]
    fn validates_health_check_and_outlier_detection() {
        let mut c = checked(cluster(&[("a", 80, 1)], pb::LbPolicy::RoundRobin));
        assert_eq!(validate(&c), Ok(()));
        if let Some(h) = &mut c.health_check {
            h.healthy_statuses = vec![99];
        }
        assert_eq!(
            validate(&c).unwrap_err(),
            "health_check.healthy_statuses[0]: 99 is not in 100..=599"
        );
        let mut c = cluster(&[("a", 80, 1)], pb::LbPolicy::RoundRobin);
        c.outlier_detection = Some(pb::OutlierDetection {
            max_ejection_percent: 150,
            ..Default::default()
        });
        assert_eq!(
            validate(&c).unwrap_err(),
            "outlier_detection.max_ejection_percent: 150 is more than 100"
        );
    }
}
