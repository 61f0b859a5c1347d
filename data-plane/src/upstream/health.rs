//! Active health checks: one task per endpoint of every cluster with a `health_check`, probing
//! `GET <path>` over the cluster's own client and connection pool (so TLS clusters are probed
//! over TLS) and flipping the endpoint's verdict after enough consecutive results. The tasks follow the snapshots the
//! runtime applies: they start when a cluster appears, restart when it changes, stop when it goes.

use super::client::{Protocol, empty_body};
use super::cluster::CompiledCluster;
use super::outlier::MAX_THRESHOLD;
use crate::router::route::to_duration;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use sluice_proto::config as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A probe response body is read (so the connection can be reused) up to this size.
const MAX_PROBE_BODY: usize = 64 * 1024;
const USER_AGENT: &str = "sluice-health-check";

/// Consecutive results needed to change an endpoint's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// The verdict of one endpoint and the streak of results that disagree with it.
#[derive(Debug)]
pub struct Tracker {
    healthy: bool,
    streak: u32,
}

impl Tracker {
    pub fn new(healthy: bool) -> Self {
        Tracker { healthy, streak: 0 }
    }

    /// Records one probe result; returns the new verdict when it flips.
    pub fn record(&mut self, success: bool, t: Thresholds) -> Option<bool> {
        if success == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if success { t.healthy } else { t.unhealthy };
        if self.streak < needed {
            return None;
        }
        self.healthy = success;
        self.streak = 0;
        Some(success)
    }
}

/// A compiled `HealthCheck`.
#[derive(Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Empty: 200-399.
    statuses: Vec<StatusCode>,
    pub thresholds: Thresholds,
}

impl HealthCheck {
    /// Errors name the field under `health_check.`. Zero durations and thresholds take the
    /// defaults (a zero interval would probe in a busy loop).
    pub fn compile(h: &pb::HealthCheck) -> Result<HealthCheck, String> {
        let field = |f: &str, e: String| format!("health_check.{f}: {e}");
        if !h.path.starts_with('/') {
            return Err(field("path", format!("{:?} must start with \"/\"", h.path)));
        }
        let path = PathAndQuery::try_from(h.path.as_str())
            .map_err(|e| field("path", format!("{:?}: {e}", h.path)))?;
        let duration = |name: &str, d: &Option<prost_types::Duration>, default: Duration| match d {
            None => Ok(default),
            Some(d) => to_duration(d)
                .map(|d| if d.is_zero() { default } else { d })
                .map_err(|e| field(name, e)),
        };
        let interval = duration("interval", &h.interval, DEFAULT_INTERVAL)?;
        let timeout = duration("timeout", &h.timeout, DEFAULT_TIMEOUT)?;
        let mut statuses = Vec::with_capacity(h.healthy_statuses.len());
        for (i, s) in h.healthy_statuses.iter().enumerate() {
            let status = u16::try_from(*s)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    field(
                        &format!("healthy_statuses[{i}]"),
                        format!("{s} is not in 100..=599"),
                    )
                })?;
            statuses.push(status);
        }
        let threshold = |name: &str, v: u32| {
            if v > MAX_THRESHOLD {
                Err(field(name, format!("{v} is more than {MAX_THRESHOLD}")))
            } else {
                Ok(v.max(1))
            }
        };
        Ok(HealthCheck {
            path,
            interval,
            timeout,
            statuses,
            thresholds: Thresholds {
                healthy: threshold("healthy_threshold", h.healthy_threshold)?,
                unhealthy: threshold("unhealthy_threshold", h.unhealthy_threshold)?,
            },
        })
    }

    pub fn accepts(&self, status: StatusCode) -> bool {
        if self.statuses.is_empty() {
            (200..400).contains(&status.as_u16())
        } else {
            self.statuses.contains(&status)
        }
    }
}

type ClusterMap = crate::fast_map::FastMap<Arc<str>, Arc<CompiledCluster>>;

/// The probe tasks of one compiled cluster; dropping it stops them.
struct Running {
    cluster: Arc<CompiledCluster>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Default)]
struct Checkers {
    /// The cluster map last reconciled; held so an unchanged map is recognised by identity.
    seen: Option<Arc<ClusterMap>>,
    running: HashMap<Arc<str>, Running>,
}

/// The health-check tasks of the clusters currently served. Dropping it stops them all.
#[derive(Default)]
pub struct HealthCheckers {
    inner: Mutex<Checkers>,
}

impl HealthCheckers {
    /// Starts, restarts and stops probe tasks so they match `clusters` (a snapshot's cluster
    /// map). Must run inside a Tokio runtime. A map shared with the previous call (only routes
    /// or listeners changed) costs nothing; otherwise one pass over the clusters.
    pub fn reconcile(&self, clusters: &Arc<ClusterMap>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner
            .seen
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, clusters))
        {
            return;
        }
        inner.seen = Some(clusters.clone());
        // A recompiled cluster is a new Arc: restart its probes with its new client and
        // endpoints (their verdicts live on in the cluster state).
        inner.running.retain(|name, r| {
            clusters
                .get(name)
                .is_some_and(|c| Arc::ptr_eq(c, &r.cluster))
        });
        for (name, cluster) in clusters.iter() {
            let Some(check) = &cluster.health_check else {
                continue;
            };
            if inner.running.contains_key(name) {
                continue;
            }
            let tasks = (0..cluster.endpoints.len())
                .map(|i| tokio::spawn(probe_loop(cluster.clone(), i, check.clone())).abort_handle())
                .collect();
            inner.running.insert(
                name.clone(),
                Running {
                    cluster: cluster.clone(),
                    tasks,
                },
            );
        }
    }

    /// Stops every probe (shutdown).
    pub fn stop(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.running.clear();
        inner.seen = None;
    }

    /// Names of the clusters being probed (tests and diagnostics).
    pub fn probed(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = inner.running.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }
}

async fn probe_loop(cluster: Arc<CompiledCluster>, idx: usize, check: Arc<HealthCheck>) {
    let Some(endpoint) = cluster.endpoints.get(idx) else {
        return;
    };
    let mut tracker = Tracker::new(endpoint.health.is_healthy());
    // Spread the probes of many endpoints (e.g. after a restart) instead of firing them at once.
    let spread = check.interval.min(Duration::from_secs(1));
    tokio::time::sleep(spread.mul_f64(fastrand::f64())).await;
    loop {
        let result = probe(&cluster, idx, &check).await;
        if let Some(healthy) = tracker.record(result.is_ok(), check.thresholds)
            && endpoint.health.set_healthy(healthy)
        {
            match result {
                Ok(()) => tracing::info!(
                    cluster = %cluster.name,
                    endpoint = %endpoint.authority,
                    "endpoint passed its health check: back in service"
                ),
                Err(reason) => tracing::warn!(
                    cluster = %cluster.name,
                    endpoint = %endpoint.authority,
                    %reason,
                    "endpoint failed its health check: out of service"
                ),
            }
        }
        // ±10% so endpoints probed together drift apart.
        tokio::time::sleep(check.interval.mul_f64(0.9 + fastrand::f64() * 0.2)).await;
    }
}

/// One probe: Ok when the endpoint answered an accepted status within the timeout.
async fn probe(cluster: &CompiledCluster, idx: usize, check: &HealthCheck) -> Result<(), String> {
    let Some(endpoint) = cluster.endpoints.get(idx) else {
        return Err(format!("no endpoint {idx}"));
    };
    // HTTP/1.1 sends the origin form, HTTP/2 takes :scheme and :authority from the URI.
    let uri = match cluster.protocol {
        Protocol::Http1 => Uri::from(check.path.clone()),
        Protocol::H2c => Uri::builder()
            .scheme(cluster.scheme.clone())
            .authority(endpoint.authority.clone())
            .path_and_query(check.path.clone())
            .build()
            .map_err(|e| e.to_string())?,
    };
    let mut req = Request::get(uri)
        .header(header::HOST, endpoint.host_header.clone())
        .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
        .body(empty_body())
        .map_err(|e| e.to_string())?;
    *req.version_mut() = cluster.protocol.version();
    let exchange = async {
        let resp = cluster
            .send(idx, req)
            .await
            .map_err(|e| e.error.to_string())?;
        let status = resp.status();
        // Read the (small) body so the connection goes back to the pool.
        let _ = Limited::new(resp.into_body(), MAX_PROBE_BODY)
            .collect()
            .await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(error)) => Err(error),
        Ok(Ok(status)) if check.accepts(status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {}", status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::Compiler;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU16, Ordering};
    use tokio::net::TcpListener;

    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A backend answering `status` and recording the (path, user agent) of each request; over
    /// TLS (self-signed) with `tls`.
    async fn backend(status: Arc<AtomicU16>, seen: Seen, tls: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.then(|| {
            let cert = crate::tls::test_certs::self_signed(&["localhost"]);
            let key = crate::tls::load_certified_key(&pb::TlsCertificate {
                certificate_chain: cert.cert_pem.into_bytes(),
                private_key: cert.key_pem.into_bytes(),
            })
            .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (status, seen, acceptor) = (status.clone(), seen.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let agent = req
                                .headers()
                                .get(header::USER_AGENT)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            seen.lock()
                                .unwrap()
                                .push((req.uri().path().to_string(), agent));
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() =
                                StatusCode::from_u16(status.load(Ordering::Relaxed)).unwrap();
                            async move { Ok::<_, Infallible>(resp) }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        None => http.serve_connection(TokioIo::new(stream), svc).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => http.serve_connection(TokioIo::new(tls), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        addr
    }

    async fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn cluster_with_check(addr: SocketAddr, interval_ms: i32) -> pb::Cluster {
        pb::Cluster {
            name: "checked".into(),
            endpoints: vec![pb::Endpoint {
                address: addr.ip().to_string(),
                port: u32::from(addr.port()),
                weight: 1,
            }],
            health_check: Some(pb::HealthCheck {
                path: "/healthz".into(),
                interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: interval_ms * 1_000_000,
                }),
                unhealthy_threshold: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn probes_follow_the_clusters_of_applied_snapshots() {
        let status = Arc::new(AtomicU16::new(200));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = backend(status.clone(), seen.clone(), false).await;
        let mut res = Resources::default();
        res.add_http_listener("http", 8080)
            .add_cluster("unchecked", &[("127.0.0.1", addr.port())]);
        res.clusters
            .insert("checked".into(), Arc::new(cluster_with_check(addr, 10)));
        let mut compiler = Compiler::new();
        let checkers = HealthCheckers::default();
        let snap = compiler.compile(&res);
        checkers.reconcile(snap.clusters());
        assert_eq!(checkers.probed(), ["checked"]);
        let endpoint = || snap.cluster("checked").unwrap().endpoints[0].health.clone();
        wait_for("a probe", || !seen.lock().unwrap().is_empty()).await;
        assert_eq!(
            seen.lock().unwrap()[0],
            ("/healthz".to_string(), USER_AGENT.to_string())
        );
        assert!(endpoint().is_healthy());

        // Failing probes take the endpoint out; passing ones bring it back.
        status.store(503, Ordering::Relaxed);
        wait_for("unhealthy", || !endpoint().is_healthy()).await;
        status.store(204, Ordering::Relaxed);
        wait_for("healthy again", || endpoint().is_healthy()).await;

        // A route-only change shares the cluster map: nothing restarts.
        let again = compiler.compile_changes(
            &res,
            &crate::snapshot::Changed {
                routes: ["none".to_string()].into(),
                ..Default::default()
            },
        );
        assert!(Arc::ptr_eq(again.clusters(), snap.clusters()));
        checkers.reconcile(again.clusters());
        assert_eq!(checkers.probed(), ["checked"]);

        // A changed cluster restarts its probes (the old version's tasks end and release it);
        // a removed one stops them.
        let old = Arc::downgrade(snap.cluster("checked").unwrap());
        res.clusters
            .insert("checked".into(), Arc::new(cluster_with_check(addr, 20)));
        let changed = crate::snapshot::Changed {
            clusters: ["checked".to_string()].into(),
            ..Default::default()
        };
        let snap2 = compiler.compile_changes(&res, &changed);
        checkers.reconcile(snap2.clusters());
        drop((snap, again));
        wait_for("old probes stopped", || old.strong_count() == 0).await;
        assert_eq!(checkers.probed(), ["checked"]);
        let current = Arc::downgrade(snap2.cluster("checked").unwrap());
        res.clusters.remove("checked");
        let snap3 = compiler.compile_changes(&res, &changed);
        checkers.reconcile(snap3.clusters());
        assert!(checkers.probed().is_empty());
        drop(snap2);
        wait_for("probes stopped", || current.strong_count() == 0).await;
    }

    const T: Thresholds = Thresholds {
        healthy: 2,
        unhealthy: 3,
    };

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Tracker::new(true);
        assert_eq!(t.record(false, T), None);
        assert_eq!(t.record(false, T), None);
        // A success in between starts the count over.
        assert_eq!(t.record(true, T), None);
        assert_eq!(t.record(false, T), None);
        assert_eq!(t.record(false, T), None);
        assert_eq!(t.record(false, T), Some(false));
        assert_eq!(t.record(false, T), None);
        assert_eq!(t.record(true, T), None);
        assert_eq!(t.record(false, T), None);
        assert_eq!(t.record(true, T), None);
        assert_eq!(t.record(true, T), Some(true));
        let one = Thresholds {
            healthy: 1,
            unhealthy: 1,
        };
        assert_eq!(t.record(false, one), Some(false));
        assert_eq!(t.record(true, one), Some(true));
    }

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn compile_defaults_and_errors() {
        let hc = HealthCheck::compile(&pb::HealthCheck {
            path: "/healthz?full=1".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(hc.interval, DEFAULT_INTERVAL);
        assert_eq!(hc.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            hc.thresholds,
            Thresholds {
                healthy: 1,
                unhealthy: 1
            }
        );
        assert!(hc.accepts(StatusCode::OK) && hc.accepts(StatusCode::FOUND));
        assert!(!hc.accepts(StatusCode::NOT_FOUND) && !hc.accepts(StatusCode::CONTINUE));
        let listed = HealthCheck::compile(&pb::HealthCheck {
            path: "/".into(),
            interval: secs(2),
            timeout: secs(0),
            healthy_statuses: vec![204, 404],
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        })
        .unwrap();
        assert_eq!(listed.interval, Duration::from_secs(2));
        assert_eq!(listed.timeout, DEFAULT_TIMEOUT);
        assert_eq!(listed.thresholds, T);
        assert!(listed.accepts(StatusCode::NOT_FOUND) && !listed.accepts(StatusCode::OK));

        let base = pb::HealthCheck {
            path: "/h".into(),
            ..Default::default()
        };
        for (bad, error) in [
            (
                pb::HealthCheck {
                    path: "h".into(),
                    ..base.clone()
                },
                "health_check.path: \"h\" must start with \"/\"",
            ),
            (
                pb::HealthCheck {
                    path: "/a b".into(),
                    ..base.clone()
                },
                "health_check.path: ",
            ),
            (
                pb::HealthCheck {
                    interval: secs(-5),
                    ..base.clone()
                },
                "health_check.interval: invalid duration",
            ),
            (
                pb::HealthCheck {
                    timeout: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 1_000_000_000,
                    }),
                    ..base.clone()
                },
                "health_check.timeout: invalid duration",
            ),
            (
                pb::HealthCheck {
                    healthy_statuses: vec![200, 600],
                    ..base.clone()
                },
                "health_check.healthy_statuses[1]: 600 is not in 100..=599",
            ),
            (
                pb::HealthCheck {
                    unhealthy_threshold: 5000,
                    ..base.clone()
                },
                "health_check.unhealthy_threshold: 5000 is more than 1000",
            ),
        ] {
            let err = HealthCheck::compile(&bad).unwrap_err();
            assert!(err.starts_with(error), "{err}");
        }
    }

    #[tokio::test]
    async fn tls_clusters_are_probed_over_tls() {
        let seen = Seen::default();
        let addr = backend(Arc::new(AtomicU16::new(200)), seen.clone(), true).await;
        let mut cluster = cluster_with_check(addr, 10);
        cluster.tls = Some(pb::UpstreamTls {
            insecure_skip_verify: true,
            ..Default::default()
        });
        let mut res = Resources::default();
        res.clusters.insert("checked".into(), Arc::new(cluster));
        let snap = Compiler::new().compile(&res);
        let checkers = HealthCheckers::default();
        checkers.reconcile(snap.clusters());
        // The backend only answers requests that came over TLS.
        wait_for("a probe over TLS", || !seen.lock().unwrap().is_empty()).await;
        assert!(
            snap.cluster("checked").unwrap().endpoints[0]
                .health
                .is_healthy()
        );
    }
}
