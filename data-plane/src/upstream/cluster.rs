//! Compiled clusters and endpoint selection (weighted round robin, random).

use super::client::{self, Clients, DEFAULT_CONNECT_TIMEOUT, HttpClient, Protocol};
use super::connector::parse_server_name;
use super::pool::{self, PoolSettings};
use super::tls::{Alpn, TlsInputs, client_config};
use crate::router::route::to_duration;
use http::HeaderValue;
use http::uri::{Authority, Scheme};
use sluice_proto::config as pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-cluster state that must survive recompiles (kept by the Compiler by cluster name).
#[derive(Debug, Default)]
pub struct ClusterState {
    rr: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, parsed once at compile time.
    pub authority: Authority,
    /// The authority as a Host header value, so forwarding does not rebuild it per request.
    pub host_header: HeaderValue,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lb {
    RoundRobin,
    Random,
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
    pub client: HttpClient,
    /// What the TLS client was built from (None: plaintext); equal inputs keep the client.
    pub tls: Option<TlsInputs>,
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
            .finish_non_exhaustive()
    }
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
    if let Some(t) = &c.tls
        && !t.server_name.is_empty()
    {
        parse_server_name(&t.server_name).map_err(|e| format!("tls.server_name: {e}"))?;
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

fn endpoint(e: &pb::Endpoint) -> Result<Endpoint, String> {
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
    Ok(Endpoint {
        authority,
        host_header,
        weight: e.weight.max(1),
    })
}

impl CompiledCluster {
    /// Compiles a validated cluster; `state` carries the round-robin position across versions,
    /// `tls` comes from [`tls_inputs`], `pool` from [`pool_settings`], and `previous` (the last
    /// compiled version) lends its TLS client when nothing it was built from changed, so its
    /// pooled connections survive.
    pub fn compile(
        c: &pb::Cluster,
        state: Arc<ClusterState>,
        clients: &Clients,
        tls: Option<TlsInputs>,
        pool: PoolSettings,
        previous: Option<&CompiledCluster>,
    ) -> Result<Self, String> {
        validate(c)?;
        let endpoints = c
            .endpoints
            .iter()
            .map(endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let mut cumulative = Vec::with_capacity(endpoints.len());
        let mut sum = 0u64;
        for e in &endpoints {
            sum += u64::from(e.weight);
            cumulative.push(sum);
        }
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
        let name: Arc<str> = c.name.as_str().into();
        let (scheme, client) = match &tls {
            None => (Scheme::HTTP, clients.get(protocol, connect_timeout, pool)),
            Some(inputs) => {
                let kept = previous
                    .filter(|p| {
                        p.protocol == protocol
                            && p.connect_timeout == connect_timeout
                            && p.pool == pool
                            && p.tls.as_ref() == Some(inputs)
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
            tls,
            state,
        })
    }

    /// Picks an endpoint; None when the cluster has none.
    pub fn pick(&self) -> Option<&Endpoint> {
        let total = *self.cumulative.last()?;
        let point = match self.lb {
            Lb::RoundRobin => self.state.rr.fetch_add(1, Ordering::Relaxed) % total,
            Lb::Random => fastrand::u64(0..total),
        };
        // First endpoint whose running sum exceeds the point.
        let idx = self.cumulative.partition_point(|&c| c <= point);
        self.endpoints.get(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = CompiledCluster::compile(
            &pb,
            state.clone(),
            &clients,
            None,
            PoolSettings::default(),
            None,
        )
        .unwrap();
        let picks: Vec<_> = (0..3)
            .map(|_| c.pick().unwrap().authority.host().to_string())
            .collect();
        assert_eq!(picks, ["a", "a", "a"]);
        // A recompile with the same state continues the rotation instead of restarting it;
        // weight 0 counts as 1.
        let c2 =
            CompiledCluster::compile(&pb, state, &clients, None, PoolSettings::default(), None)
                .unwrap();
        assert_eq!(c2.pick().unwrap().authority.host(), "b");
        assert_eq!(c2.pick().unwrap().authority.host(), "a");
        assert_eq!(c2.endpoints[0].authority.as_str(), "a:80");
        let empty = CompiledCluster::compile(
            &cluster(&[], pb::LbPolicy::Random),
            Arc::default(),
            &clients,
            None,
            PoolSettings::default(),
            None,
        )
        .unwrap();
        assert!(empty.pick().is_none());
    }

    #[tokio::test]
    async fn random_covers_endpoints() {
        let clients = Clients::default();
        let c = CompiledCluster::compile(
            &cluster(&[("a", 80, 1), ("b", 80, 1)], pb::LbPolicy::Random),
            Arc::default(),
            &clients,
            None,
            PoolSettings::default(),
            None,
        )
        .unwrap();
        let a = (0..1000)
            .filter(|_| c.pick().unwrap().authority.host() == "a")
            .count();
        assert!((300..=700).contains(&a), "{a}");
    }
}
