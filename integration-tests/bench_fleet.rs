//! Fleet benchmark (issue 7): the real release control plane on a directory of G Goma Gateways
//! holding R routes in total, and N simulated data-plane pods per gateway speaking the real
//! delta-xDS protocol from this process (one gRPC connection and stream per pod; every response
//! ACKed, versions kept, reconnects carry `initial_resource_versions` and back off with jitter,
//! honouring the server's retry hint). Background churn rewrites routes, backend endpoints and
//! TLS Secrets. Measured, in one run:
//!
//! * change -> every pod of the affected gateway ACKed, p50 / p99, with background churn;
//! * bytes one route change sends to each pod of its gateway, and to all other gateways (0);
//! * control-plane RSS per route, and per connected pod;
//! * data-plane RSS per route (the real `sluice data-plane` on one gateway of R routes);
//! * control-plane RSS over a churn run of FLEET_CHURN_SECS;
//! * restart storm: SIGKILL the control plane, start it again: time until every pod has
//!   re-ACKed, resources resent although unchanged (must be 0), streams shed, peak RSS.
//!
//! Run: `CARGO_INCREMENTAL=0 cargo bench --bench fleet` (FLEET_API=gateway-api: Gateway API
//! Gateways with HTTP + HTTPS listeners, HTTPRoutes, Services and EndpointSlices). Sizes: FLEET_GATEWAYS (100),
//! FLEET_ROUTES (10000, in total), FLEET_PODS (10 per gateway), FLEET_CHANGES (200),
//! FLEET_CHURN_PER_SEC (20), FLEET_CHURN_SECS (60; the issue asks for 1800).
//! Needs `ulimit -n` above 2 x the pod count.

#[path = "support/mod.rs"]
mod support;

#[path = "support/fleet_manifests.rs"]
mod fleet_manifests;

use fleet_manifests::{GATEWAY_CLASS, http_route, self_signed, service, tls_secret};
use prost::Message;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use sluice_proto::type_url;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TYPES: usize = type_url::ALL.len();

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Resident set of `pid`, in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// Which API the fleet is written in.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Api {
    Goma,
    GatewayApi,
}

struct Fleet {
    api: Api,
    gateways: usize,
    /// Plain routes per gateway (besides the hot and the three churn routes).
    plain: usize,
    /// Ports of the two echo backends routes switch between.
    ports: [u16; 2],
    certs: [(String, String); 2],
    /// Writes of each gateway's hot route so far: its backend alternates.
    hot_writes: Vec<AtomicUsize>,
}

fn gateway_name(g: usize) -> String {
    format!("g{g}")
}

fn gateway_id(g: usize) -> String {
    format!("default/g{g}")
}

impl Fleet {
    /// Routes per gateway besides the plain ones: hot, churn-route, churn-endpoints, churn-tls.
    const EXTRA: usize = 4;

    fn routes(&self) -> usize {
        self.gateways * (self.plain + Self::EXTRA)
    }

    /// The gateways alone (no routes): the memory baseline.
    fn write_gateways(&self, dir: &TempDir) {
        if self.api == Api::GatewayApi {
            dir.write("shared.yaml", &self.gateway_api_shared());
        }
        for g in 0..self.gateways {
            dir.write(
                &format!("{}-gateway.yaml", gateway_name(g)),
                &self.gateway(g),
            );
        }
    }

    fn gateway(&self, g: usize) -> String {
        let name = gateway_name(g);
        match self.api {
            Api::Goma => gateway_yaml(&name, 20000 + g as u16),
            // HTTP, and HTTPS with a per-gateway certificate (rotated by the Secret churn).
            Api::GatewayApi => fleet_manifests::gateway(&name, g),
        }
    }

    /// GatewayClass, and Services svc-a / svc-b on the two echo backends.
    fn gateway_api_shared(&self) -> String {
        let mut out = GATEWAY_CLASS.to_string();
        out.push_str(&service("svc-a", self.ports[0], 1));
        out.push_str(&service("svc-b", self.ports[1], 1));
        out
    }

    /// A route `name` on gateway `g` for `path` to backend `which` (0 or 1), ended by `---`.
    fn route(&self, g: usize, name: &str, path: &str, which: usize) -> String {
        let gw = gateway_name(g);
        match self.api {
            Api::Goma => route_yaml(name, &gw, path, self.ports[which % 2], "") + "---\n",
            Api::GatewayApi => http_route(name, &gw, path, ["svc-a", "svc-b"][which % 2]),
        }
    }

    fn write(&self, dir: &TempDir) {
        self.write_gateways(dir);
        for g in 0..self.gateways {
            let name = gateway_name(g);
            let mut plain = String::new();
            for r in 0..self.plain {
                plain.push_str(&self.route(g, &format!("g{g}-r{r}"), &format!("/r{r}"), 0));
            }
            dir.write(&format!("{name}-routes.yaml"), &plain);
            self.write_hot(dir, g, 0);
            self.write_churn(dir, g, Churn::Route, 0);
            self.write_churn(dir, g, Churn::Endpoints, 0);
            self.write_churn(dir, g, Churn::Secret, 0);
        }
    }

    /// Switches the probed route of gateway `g` to the other backend.
    fn flip_hot(&self, dir: &TempDir, g: usize) {
        let which = self.hot_writes[g].fetch_add(1, Ordering::Relaxed) + 1;
        self.write_hot(dir, g, which);
    }

    /// The probed route of gateway `g`, to backend `which`.
    fn write_hot(&self, dir: &TempDir, g: usize, which: usize) {
        let yaml = self.route(g, &format!("hot-g{g}"), "/hot", which);
        dir.write(&format!("{}-hot.yaml", gateway_name(g)), &yaml);
    }

    fn write_churn(&self, dir: &TempDir, g: usize, kind: Churn, n: usize) {
        let gw = gateway_name(g);
        let (file, yaml) = match kind {
            Churn::Route => (
                "churn-route",
                self.route(g, &format!("churn-g{g}"), "/churn", n),
            ),
            // A Service of this gateway whose EndpointSlice grows and shrinks (1..=3 endpoints).
            Churn::Endpoints if self.api == Api::GatewayApi => {
                let mut yaml = service(&format!("svc-g{g}"), self.ports[0], n % 3 + 1);
                yaml.push_str(&http_route(
                    &format!("endpoints-g{g}"),
                    &gw,
                    "/endpoints",
                    &format!("svc-g{g}"),
                ));
                ("churn-endpoints", yaml)
            }
            // The certificate of the gateway's HTTPS listener is rotated.
            Churn::Secret if self.api == Api::GatewayApi => {
                ("churn-tls", tls_secret(g, &self.certs[n % 2]))
            }
            // Goma backends are endpoint URLs: the list grows and shrinks (1..=3 endpoints).
            Churn::Endpoints => {
                let endpoints: String = (0..=(n % 3))
                    .map(|i| {
                        format!(
                            "    - {{endpoint: http://127.0.0.{}:{}, weight: 1}}\n",
                            i + 1,
                            self.ports[0]
                        )
                    })
                    .collect();
                (
                    "churn-endpoints",
                    format!(
                        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: endpoints-g{g}\n  namespace: default\nspec:\n  gateways: [{gw}]\n  path: /endpoints\n  backends:\n{endpoints}"
                    ),
                )
            }
            // A route serving its host with a TLS Secret that is rotated.
            Churn::Secret => {
                let (cert, key) = &self.certs[n % 2];
                let mut yaml = tls_secret_yaml(&format!("cert-g{g}"), cert, key);
                yaml.push_str("---\n");
                yaml.push_str(&route_yaml(
                    &format!("tls-g{g}"),
                    &gw,
                    "/tls",
                    self.ports[0],
                    &format!("  hosts: [tls-g{g}.example.com]\n  tls: {{secretName: cert-g{g}}}\n"),
                ));
                ("churn-tls", yaml)
            }
        };
        dir.write(&format!("{gw}-{file}.yaml"), &yaml);
    }
}

#[derive(Clone, Copy, Debug)]
enum Churn {
    Route,
    Endpoints,
    Secret,
}

// ---------------------------------------------------------------------------------------------
// Simulated pods

/// What one pod has seen, read by the coordinator.
#[derive(Default)]
struct PodStats {
    /// Streams that got a first response (1 before any restart).
    streams: AtomicU64,
    /// Bit t set once the current stream's first response of type t was ACKed.
    acked_types: AtomicUsize,
    /// Resources received on streams after the first (reconnects).
    resent: AtomicU64,
    /// Streams refused (UNAVAILABLE: shed, or the control plane away).
    refused: AtomicU64,
    bytes: AtomicU64,
    responses: AtomicU64,
}

struct Pod {
    gateway: usize,
    index: usize,
    stats: Arc<PodStats>,
}

/// A hot-route response ACKed by pod `pod` of gateway `gateway` at `at`.
struct HotAck {
    gateway: usize,
    pod: usize,
    at: Instant,
}

enum StreamEnd {
    /// Refused or broken: the server's retry hint, if it gave one.
    Failed(Option<Duration>),
    Closed,
}

impl Pod {
    async fn run(self, xds: String, hot: mpsc::UnboundedSender<HotAck>, stop: Arc<AtomicBool>) {
        let mut held: [BTreeMap<String, String>; TYPES] = Default::default();
        let mut backoff = Duration::from_millis(10);
        while !stop.load(Ordering::Relaxed) {
            let end = self.stream(&xds, &mut held, &hot).await;
            let hint = match end {
                StreamEnd::Failed(hint) => hint,
                StreamEnd::Closed => None,
            };
            if self.stats.acked_types.load(Ordering::Relaxed) != 0 {
                backoff = Duration::from_millis(10);
            }
            // Full jitter over the backoff, never sooner than the server asked.
            let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
            let wait = hint.map_or(wait, |h| h.max(wait) + h.mul_f64(fastrand::f64()));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn stream(
        &self,
        xds: &str,
        held: &mut [BTreeMap<String, String>; TYPES],
        hot: &mpsc::UnboundedSender<HotAck>,
    ) -> StreamEnd {
        let refused = |hint| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            StreamEnd::Failed(hint)
        };
        let Ok(mut client) = AggregatedDiscoveryServiceClient::connect(xds.to_string()).await
        else {
            return refused(None);
        };
        let (tx, rx) = mpsc::channel(TYPES + 16);
        for (t, url) in type_url::ALL.iter().enumerate() {
            let request = DeltaDiscoveryRequest {
                node: Some(Node {
                    id: format!("pod-{}-{}", self.gateway, self.index),
                    gateway: gateway_id(self.gateway),
                    ..Default::default()
                }),
                type_url: url.to_string(),
                initial_resource_versions: held[t].clone(),
                ..Default::default()
            };
            if tx.send(request).await.is_err() {
                return StreamEnd::Closed;
            }
        }
        let mut inbound = match client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let hint = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis);
                return refused(hint);
            }
        };
        self.stats.acked_types.store(0, Ordering::Relaxed);
        let mut first = true;
        loop {
            let r: DeltaDiscoveryResponse = match inbound.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return StreamEnd::Closed,
                Err(_) => return StreamEnd::Failed(None),
            };
            if first {
                first = false;
                self.stats.streams.fetch_add(1, Ordering::Relaxed);
            }
            let Some(t) = type_url::ALL.iter().position(|u| *u == r.type_url) else {
                return StreamEnd::Closed;
            };
            self.stats
                .bytes
                .fetch_add(r.encoded_len() as u64, Ordering::Relaxed);
            self.stats.responses.fetch_add(1, Ordering::Relaxed);
            if self.stats.streams.load(Ordering::Relaxed) > 1 {
                self.stats
                    .resent
                    .fetch_add(r.resources.len() as u64, Ordering::Relaxed);
            }
            let is_hot = r.resources.iter().any(|x| x.name.contains("hot-"));
            for x in &r.resources {
                held[t].insert(x.name.clone(), x.version.clone());
            }
            for name in &r.removed_resources {
                held[t].remove(name);
            }
            let ack = DeltaDiscoveryRequest {
                type_url: r.type_url,
                response_nonce: r.nonce,
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                return StreamEnd::Closed;
            }
            self.stats.acked_types.fetch_or(1 << t, Ordering::Relaxed);
            if is_hot {
                let _ = hot.send(HotAck {
                    gateway: self.gateway,
                    pod: self.index,
                    at: Instant::now(),
                });
            }
        }
    }
}

/// Every pod, by gateway.
struct Pods {
    stats: Vec<Vec<Arc<PodStats>>>,
    hot: mpsc::UnboundedReceiver<HotAck>,
    stop: Arc<AtomicBool>,
}

impl Pods {
    fn start(xds: u16, gateways: usize, per_gateway: usize) -> Self {
        let (hot_tx, hot) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut stats = Vec::new();
        for g in 0..gateways {
            let mut of_gateway = Vec::new();
            for index in 0..per_gateway {
                let s = Arc::new(PodStats::default());
                of_gateway.push(s.clone());
                let pod = Pod {
                    gateway: g,
                    index,
                    stats: s,
                };
                tokio::spawn(pod.run(
                    format!("http://127.0.0.1:{xds}"),
                    hot_tx.clone(),
                    stop.clone(),
                ));
            }
            stats.push(of_gateway);
        }
        Self { stats, hot, stop }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<PodStats>> {
        self.stats.iter().flatten()
    }

    /// Pods whose current stream (the `streams`-th) has ACKed a first response of every type.
    fn synced(&self, streams: u64) -> usize {
        self.all()
            .filter(|s| {
                s.streams.load(Ordering::Relaxed) >= streams
                    && s.acked_types.load(Ordering::Relaxed) == (1 << TYPES) - 1
            })
            .count()
    }

    fn bytes_by_gateway(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|g| g.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum())
            .collect()
    }

    fn sum(&self, f: impl Fn(&PodStats) -> u64) -> u64 {
        self.all().map(|s| f(s)).sum()
    }

    fn drain_hot(&mut self) {
        while self.hot.try_recv().is_ok() {}
    }

    /// Milliseconds from `started` until every pod of gateway `g` has ACKed a hot response.
    async fn all_acked(&mut self, g: usize, started: Instant, pods: usize) -> f64 {
        let mut seen = vec![false; pods];
        let mut left = pods;
        let mut last = started;
        while left > 0 {
            let ack = tokio::time::timeout(Duration::from_secs(30), self.hot.recv())
                .await
                .expect("every pod ACKs the change within 30 s")
                .expect("pods running");
            if ack.gateway == g && !seen[ack.pod] {
                seen[ack.pod] = true;
                left -= 1;
                last = ack.at;
            }
        }
        last.duration_since(started).as_secs_f64() * 1e3
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn poll_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// Background churn: `per_sec` writes spread over routes, endpoints and Secrets of random
/// gateways, until `stop`.
fn churn(
    fleet: Arc<Fleet>,
    dir: Arc<TempDir>,
    per_sec: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if per_sec == 0 {
            return;
        }
        let period = Duration::from_secs_f64(1.0 / per_sec as f64);
        let mut n = 1;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let g = fastrand::usize(..fleet.gateways);
            let kind = [Churn::Route, Churn::Endpoints, Churn::Secret][n % 3];
            fleet.write_churn(&dir, g, kind, n);
            count.fetch_add(1, Ordering::Relaxed);
            n += 1;
            next += period;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    })
}

/// Samples RSS of `pid` every `every` until `stop`; returns the samples (KiB).
fn sample_rss(
    pid: u32,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            out.push(rss_kib(pid));
            std::thread::sleep(every);
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Settings {
    api: Api,
    gateways: usize,
    routes: usize,
    pods: usize,
    changes: usize,
    churn_per_sec: usize,
    churn_secs: usize,
}

/// Control-plane RSS once it serves `dir` (one subscriber confirms it), no pods connected.
async fn control_plane_rss(dir: &TempDir) -> u64 {
    let xds = free_port();
    let cp = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let pods = Pods::start(xds, 1, 1);
    poll_until("one subscriber synced", Duration::from_secs(120), || {
        pods.synced(1) == 1
    })
    .await;
    drop(pods);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(cp.pid())
}

/// Data-plane RSS serving one gateway of `routes` routes (plus a direct-response route).
async fn data_plane_rss(routes: usize, backend: u16) -> u64 {
    let dir = TempDir::new("fleet-dp");
    let port = free_port();
    let admin = free_port();
    let xds = free_port();
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    write_numbered_routes(&dir, "gw", routes, backend);
    dir.write(
        "direct.yaml",
        &route_yaml(
            "direct",
            "gw",
            "/direct",
            backend,
            "  maintenance: {enabled: true, status: 200, body: ok}\n",
        ),
    );
    let _cp = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let dp = data_plane("default/gw", xds, admin, &[], &[("RUST_LOG", "warn")]);
    wait_ready(admin).await;
    wait_ok(port, "x", "/direct", Duration::from_secs(60)).await;
    if routes > 0 {
        wait_ok(
            port,
            "x",
            &format!("/r{}", routes - 1),
            Duration::from_secs(60),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(dp.pid())
}

async fn run(s: Settings) {
    let (_a, port_a) = echo("a");
    let (_b, port_b) = echo("b");
    let plain = (s.routes / s.gateways).saturating_sub(Fleet::EXTRA);
    let fleet = Arc::new(Fleet {
        api: s.api,
        gateways: s.gateways,
        plain,
        ports: [port_a, port_b],
        certs: ["a.example.com", "b.example.com"]
            .map(|host| self_signed(host).expect("self-signed certificate")),
        hot_writes: (0..s.gateways).map(|_| AtomicUsize::new(0)).collect(),
    });
    let routes = fleet.routes();
    println!(
        "fleet ({:?}): {} gateways x {} routes = {routes} routes, {} pods per gateway ({} pods), churn {}/s",
        s.api,
        s.gateways,
        plain + Fleet::EXTRA,
        s.pods,
        s.gateways * s.pods,
        s.churn_per_sec
    );

    // 1. Memory per route: the control plane with the gateways only vs the whole fleet; the
    //    data plane with one direct route vs one gateway of all `routes` routes.
    let empty = TempDir::new("fleet-empty");
    fleet.write_gateways(&empty);
    let cp_empty = control_plane_rss(&empty).await;
    drop(empty);
    let dir = Arc::new(TempDir::new("fleet"));
    fleet.write(&dir);
    let cp_full = control_plane_rss(&dir).await;
    let cp_per_route = (cp_full.saturating_sub(cp_empty)) as f64 / routes as f64;
    let dp_one = data_plane_rss(0, port_a).await;
    let dp_full = data_plane_rss(routes, port_a).await;
    let dp_per_route = (dp_full.saturating_sub(dp_one)) as f64 / routes as f64;
    println!(
        "memory: control plane {:.1} MiB (gateways only) -> {:.1} MiB ({routes} routes): {cp_per_route:.2} KiB/route; data plane {:.1} MiB (1 route) -> {:.1} MiB ({routes} routes): {dp_per_route:.2} KiB/route",
        mib(cp_empty),
        mib(cp_full),
        mib(dp_one),
        mib(dp_full)
    );

    // 2. The fleet connects.
    let xds = free_port();
    let mut cp = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let total_pods = s.gateways * s.pods;
    let mut pods = Pods::start(xds, s.gateways, s.pods);
    let connect = poll_until("every pod synced", Duration::from_secs(300), || {
        pods.synced(1) == total_pods
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cp_fleet = rss_kib(cp.pid());
    println!(
        "connect: {total_pods} pods synced in {:.2} s; control plane {:.1} MiB with them ({:.1} KiB per pod); streams refused {}",
        connect.as_secs_f64(),
        mib(cp_fleet),
        cp_fleet.saturating_sub(cp_full) as f64 / total_pods as f64,
        pods.sum(|p| p.refused.load(Ordering::Relaxed)),
    );

    // 3. Bytes of one route change, no churn: to each pod of its gateway, and to the others.
    let mut per_pod = Vec::new();
    let mut others = 0u64;
    for i in 0..20.min(s.changes) {
        let g = (i * 7) % s.gateways;
        pods.drain_hot();
        let before = pods.bytes_by_gateway();
        let started = Instant::now();
        fleet.flip_hot(&dir, g);
        pods.all_acked(g, started, s.pods).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = pods.bytes_by_gateway();
        per_pod.push((after[g] - before[g]) / s.pods as u64);
        others += (0..s.gateways)
            .filter(|&o| o != g)
            .map(|o| after[o] - before[o])
            .sum::<u64>();
    }
    per_pod.sort();
    let bytes = per_pod.get(per_pod.len() / 2).copied().unwrap_or(0);
    println!(
        "bytes: one route change sends {bytes} B to each pod of its gateway (median of {}), {others} B in total to unaffected gateways",
        per_pod.len()
    );

    // 4. Change -> all affected pods ACKed, under background churn.
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churner = churn(
        fleet.clone(),
        dir.clone(),
        s.churn_per_sec,
        stop_churn.clone(),
        churned.clone(),
    );
    let mut latencies = Vec::new();
    for i in 0..s.changes {
        let g = (i * 13 + 1) % s.gateways;
        pods.drain_hot();
        let started = Instant::now();
        fleet.flip_hot(&dir, g);
        latencies.push(pods.all_acked(g, started, s.pods).await);
        tokio::time::sleep(Duration::from_millis(10 + fastrand::u64(..20))).await;
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "latency: change -> all {} pods of the gateway ACKed: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms ({} changes, {} churn writes meanwhile)",
        s.pods,
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
        churned.load(Ordering::Relaxed)
    );

    // 5. RSS over a churn run.
    let samples_stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(cp.pid(), Duration::from_secs(1), samples_stop.clone());
    let churn_started = churned.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(s.churn_secs as u64)).await;
    samples_stop.store(true, Ordering::Relaxed);
    stop_churn.store(true, Ordering::Relaxed);
    let _ = churner.join();
    let samples = sampler.join().unwrap_or_default();
    let tenth = samples.len() / 10;
    let early = samples.get(tenth).copied().unwrap_or(0);
    let late = samples.last().copied().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    // The curve tells a leak (steady climb) from allocator warm-up (early rise, then flat).
    let curve: Vec<String> = (0..=10)
        .filter_map(|i| samples.get((samples.len().saturating_sub(1)) * i / 10))
        .map(|&kib| format!("{:.1}", mib(kib)))
        .collect();
    println!("churn run: RSS (MiB) at every tenth: {}", curve.join(" "));
    println!(
        "churn run: {} s, {} writes: control plane RSS {:.1} MiB at 10% -> {:.1} MiB at the end (max {:.1} MiB)",
        s.churn_secs,
        churned.load(Ordering::Relaxed) - churn_started,
        mib(early),
        mib(late),
        mib(max)
    );

    // 6. Restart storm.
    poll_until("fleet settled after churn", Duration::from_secs(60), || {
        pods.synced(1) == total_pods
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = rss_kib(cp.pid());
    let resent_before = pods.sum(|p| p.resent.load(Ordering::Relaxed));
    let refused_before = pods.sum(|p| p.refused.load(Ordering::Relaxed));
    // A crash and an immediate restart (as a supervisor does): pods that try in between are
    // refused and back off with jitter.
    cp.kill();
    let killed = Instant::now();
    let restarted = Instant::now();
    let cp2 = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let peak_stop = Arc::new(AtomicBool::new(false));
    let peak_sampler = sample_rss(cp2.pid(), Duration::from_millis(5), peak_stop.clone());
    let storm = poll_until("every pod re-ACKed", Duration::from_secs(300), || {
        pods.synced(2) == total_pods
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak_stop.store(true, Ordering::Relaxed);
    let peak = peak_sampler
        .join()
        .unwrap_or_default()
        .into_iter()
        .max()
        .unwrap_or(0);
    let after = rss_kib(cp2.pid());
    let resent = pods.sum(|p| p.resent.load(Ordering::Relaxed)) - resent_before;
    let shed = pods.sum(|p| p.refused.load(Ordering::Relaxed)) - refused_before;
    println!(
        "restart storm: {total_pods} pods re-ACKed {:.2} s after the new process started ({:.2} s after the kill); resources resent {resent}; streams refused while starting or shed {shed}; RSS steady {:.1} MiB before, peak {:.1} MiB, {:.1} MiB after",
        storm.as_secs_f64(),
        (restarted - killed + storm).as_secs_f64(),
        mib(steady),
        mib(peak),
        mib(after)
    );
    drop(pods);

    // Anchors: ../shared/reference/xds.md.
    println!();
    println!("| measurement | sluice | goal | anchor (reference/xds.md) | ratio |");
    println!("|---|---:|---:|---|---:|");
    println!(
        "| change -> all pods ACKed p50 / p99 (churn) | {p50:.2} / {p99:.2} ms | p99 <= 10 ms | agentgateway 30 ms, Istio 375 ms, Envoy Gateway 2000 ms under churn | p99 {:.3}x / {:.4}x / {:.5}x |",
        p99 / 30.0,
        p99 / 375.0,
        p99 / 2000.0
    );
    println!(
        "| bytes per pod, one route change | {bytes} B | <= 4096 B | - | {:.3}x goal |",
        bytes as f64 / 4096.0
    );
    println!("| bytes to unaffected gateways | {others} B | 0 | - | - |");
    println!(
        "| control-plane RSS per route | {cp_per_route:.2} KiB | <= 10 KiB | Envoy Gateway v1.9 ~133 KiB | {:.3}x |",
        cp_per_route / 133.0
    );
    println!(
        "| data-plane RSS per route | {dp_per_route:.2} KiB | <= 5 KiB | Envoy ~92 KiB | {:.3}x |",
        dp_per_route / 92.0
    );
    println!(
        "| restart storm: {total_pods} pods re-ACKed | {:.2} s | - | Istio 5k proxies: responses up to 3 min (istio#35263) | - |",
        storm.as_secs_f64()
    );
    println!("| resent unchanged after restart | {resent} | 0 | - | - |");
    println!(
        "| peak / steady control-plane RSS in the storm | {:.1} / {:.1} MiB | - | - | {:.2}x |",
        mib(peak),
        mib(steady),
        peak as f64 / steady.max(1) as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other flags: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let settings = Settings {
        api: match std::env::var("FLEET_API").as_deref() {
            Ok("gateway-api") => Api::GatewayApi,
            _ => Api::Goma,
        },
        gateways: env_or("FLEET_GATEWAYS", 100).max(1),
        routes: env_or("FLEET_ROUTES", 10_000),
        pods: env_or("FLEET_PODS", 10).max(1),
        changes: env_or("FLEET_CHANGES", 200).max(1),
        churn_per_sec: env_or("FLEET_CHURN_PER_SEC", 20),
        churn_secs: env_or("FLEET_CHURN_SECS", 60),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(settings));
}
