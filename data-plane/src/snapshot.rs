//! The immutable compiled configuration a request is served from, and the Compiler that validates
//! resources and builds snapshots incrementally (unchanged routes and clusters are reused).

use crate::fast_map::FastMap;
use crate::l4::route::{L4Kind, L4Listener, L4Port, L4Route, sort_routes};
use crate::metrics::Metrics;
use crate::metrics::endpoint::MetricsEndpoint;
use crate::middleware::state::States;
use crate::middleware::{Chain, CompileEnv};
use crate::resources::{Held, Resources};
use crate::router::host::validate_hostname;
use crate::router::route::to_duration;
use crate::router::{
    CompiledRoute, HostPattern, IndexBuilder, ListenerInfo, PortIndex, RouteTable,
};
use crate::server::{self, ServerSettings};
use crate::shared_store::SharedStore;
use crate::tls::{self, ClientAuth, SniIndex};
use crate::upstream::{Clients, ClusterState, CompiledCluster, PoolSettings, cluster, pool};
use rustls::sign::CertifiedKey;
use sluice_proto::config as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Compiled, immutable configuration. Requests load it once and keep it to completion.
#[derive(Debug, Default)]
pub struct Snapshot {
    table: RouteTable,
    /// Shared with the next snapshot until a cluster changes (copy on write).
    clusters: Arc<FastMap<Arc<str>, Arc<CompiledCluster>>>,
    /// TCP port -> names of the listeners on it (HTTP, HTTPS, TLS and TCP listeners).
    ports: BTreeMap<u16, Vec<String>>,
    /// UDP port -> names of the listeners on it.
    udp_ports: BTreeMap<u16, Vec<String>>,
    /// TCP and TLS listener ports -> their listeners and routes.
    l4: Arc<FastMap<u16, Arc<L4Port>>>,
    /// UDP listener ports -> their listeners and routes.
    udp: Arc<FastMap<u16, Arc<L4Port>>>,
    /// TLS (HTTPS) ports -> certificate selection. Shared until a certificate input changes.
    tls: Arc<FastMap<u16, Arc<SniIndex>>>,
    /// Ports whose settings differ from the defaults (from the port's first listener by name).
    server: Arc<FastMap<u16, Arc<ServerSettings>>>,
    /// Listener metrics endpoints (usually none).
    metrics_endpoints: Arc<[MetricsEndpoint]>,
    route_count: usize,
    /// Listeners left out of this snapshot because their port is taken by another protocol,
    /// with the reason (only on the compile that saw the listener change).
    port_conflicts: Vec<(String, String)>,
}

/// Names whose resources were upserted or removed since the previous compile.
#[derive(Debug, Default, Clone)]
pub struct Changed {
    pub listeners: bool,
    pub clusters: BTreeSet<String>,
    pub routes: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        !self.listeners
            && self.clusters.is_empty()
            && self.routes.is_empty()
            && self.secrets.is_empty()
    }
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// Number of routes compiled into this snapshot.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Routes reachable on `port`.
    pub fn port(&self, port: u16) -> Option<&PortIndex> {
        self.table.port(port)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<CompiledCluster>> {
        self.clusters.get(name)
    }

    /// Every cluster by name; the map is shared with the previous snapshot when no cluster
    /// changed, so its identity tells whether anything did.
    pub fn clusters(&self) -> &Arc<FastMap<Arc<str>, Arc<CompiledCluster>>> {
        &self.clusters
    }

    /// Ports to listen on, each with the names of its listeners.
    pub fn ports(&self) -> impl Iterator<Item = (u16, &[String])> {
        self.ports.iter().map(|(p, names)| (*p, names.as_slice()))
    }

    /// Timeouts and trusted proxies of `port`.
    pub fn server_settings(&self, port: u16) -> &ServerSettings {
        self.server.get(&port).map_or(&*server::DEFAULT, |s| &**s)
    }

    /// Listeners left out because another protocol holds their port: (listener, reason).
    pub fn port_conflicts(&self) -> &[(String, String)] {
        &self.port_conflicts
    }

    /// UDP ports to listen on, each with the names of its listeners.
    pub fn udp_ports(&self) -> impl Iterator<Item = (u16, &[String])> {
        self.udp_ports
            .iter()
            .map(|(p, names)| (*p, names.as_slice()))
    }

    /// What is served on TCP port `port` (None: nothing).
    pub fn port_kind(&self, port: u16) -> Option<PortKind> {
        if !self.ports.contains_key(&port) {
            return None;
        }
        Some(match self.l4.get(&port).and_then(|p| p.first()) {
            Some(l) if l.kind == L4Kind::Tcp => PortKind::Tcp,
            Some(_) => PortKind::Tls,
            None if self.tls.contains_key(&port) => PortKind::Https,
            None => PortKind::Http,
        })
    }

    /// The TCP or TLS listeners of `port` with their routes.
    pub fn l4_port(&self, port: u16) -> Option<&L4Port> {
        self.l4.get(&port).map(|p| &**p)
    }

    /// The UDP listeners of `port` with their routes.
    pub fn udp_port(&self, port: u16) -> Option<&L4Port> {
        self.udp.get(&port).map(|p| &**p)
    }

    /// Certificate selection of `port` when it terminates TLS (None: plain HTTP).
    pub fn tls(&self, port: u16) -> Option<&SniIndex> {
        self.tls.get(&port).map(|i| &**i)
    }

    /// The metrics endpoints listeners serve, answered before routing.
    pub fn metrics_endpoints(&self) -> &[MetricsEndpoint] {
        &self.metrics_endpoints
    }
}

/// What a TCP listening port serves; a port changing kind is closed and bound again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Http,
    Https,
    /// TCP listeners: streams forwarded as they are.
    Tcp,
    /// TLS listeners: passthrough by SNI, or terminated and forwarded.
    Tls,
}

/// An accepted TCP, UDP or TLS listener, as the L4 tables need it.
#[derive(Debug, Clone)]
struct L4ListenerSpec {
    name: Arc<str>,
    port: u16,
    kind: L4Kind,
    hostname: HostPattern,
    idle_timeout: Option<Duration>,
}

/// What certificate selection needs to know about an accepted HTTPS listener.
#[derive(Debug, Clone)]
struct TlsListener {
    name: String,
    port: u16,
    hostname: HostPattern,
    certificate_secrets: Vec<String>,
    /// CaBundle Secret client certificates must chain to; empty: none asked for.
    client_ca_secret: String,
    client_certificate_optional: bool,
}

/// Checks a listener's own fields (no references). HTTPS needs at least one certificate Secret.
fn check_listener(l: &pb::Listener) -> Result<(), String> {
    if l.name.is_empty() {
        return Err("name: empty".into());
    }
    if l.port == 0 || l.port > 65535 {
        return Err(format!("port: {} is not in 1..=65535", l.port));
    }
    match pb::Protocol::try_from(l.protocol) {
        Ok(pb::Protocol::Http) => {}
        Ok(pb::Protocol::Https) => {
            if l.tls
                .as_ref()
                .is_none_or(|t| t.certificate_secrets.is_empty())
            {
                return Err(
                    "tls.certificate_secrets: an HTTPS listener needs at least one certificate"
                        .into(),
                );
            }
        }
        Ok(pb::Protocol::Tls) => {
            let mode = l.tls.as_ref().map_or(0, |t| t.mode);
            match pb::TlsMode::try_from(mode) {
                Ok(pb::TlsMode::Passthrough) => {}
                Ok(pb::TlsMode::Terminate) => {
                    if l.tls
                        .as_ref()
                        .is_none_or(|t| t.certificate_secrets.is_empty())
                    {
                        return Err("tls.certificate_secrets: a TLS listener in terminate mode needs at least one certificate".into());
                    }
                }
                Err(_) => return Err(format!("tls.mode: unknown value {mode}")),
            }
        }
        Ok(pb::Protocol::Tcp | pb::Protocol::Udp) => {}
        Ok(pb::Protocol::Unspecified) => return Err("protocol: not set".into()),
        Err(_) => return Err(format!("protocol: unknown value {}", l.protocol)),
    }
    validate_hostname(&l.hostname).map_err(|e| format!("hostname: {e}"))?;
    if let Some(d) = l.http.as_ref().and_then(|h| h.upstream_defaults.as_ref()) {
        pool::validate_defaults(d).map_err(|e| format!("http.upstream_defaults.{e}"))?;
    }
    MetricsEndpoint::from_listener(l, 0).map(drop)
}

/// The idle bound of an L4 listener's streams or sessions: its `http.idle_timeout` when set and
/// not zero (TCP and TLS then have none; UDP sessions use their default).
fn l4_idle_timeout(l: &pb::Listener) -> Option<Duration> {
    l.http
        .as_ref()
        .and_then(|h| h.idle_timeout.as_ref())
        .and_then(|d| to_duration(d).ok())
        .filter(|d| !d.is_zero())
}

/// `name` is a TlsCertificate Secret among `resources` (which hold only validated Secrets).
fn check_tls_secret(name: &str, resources: &Resources) -> Result<(), String> {
    match resources.secrets.get(name).map(|s| &s.kind) {
        None => Err(format!("secret {name:?} does not exist")),
        Some(Some(pb::secret::Kind::TlsCertificate(_))) => Ok(()),
        Some(_) => Err(format!("secret {name:?} is not a TlsCertificate")),
    }
}

/// What route middlewares compile against, besides the resources.
struct MiddlewareInputs<'a> {
    states: &'a mut States,
    shared_store: Option<&'a Arc<SharedStore>>,
    geoip_database: Option<&'a Path>,
}

/// The gateway's shared store as its listeners describe it (they all carry the same settings;
/// the first by name that has one wins).
fn shared_store_of(resources: &Resources) -> Option<Arc<SharedStore>> {
    resources
        .listeners
        .values()
        .filter_map(|l| l.http.as_ref()?.shared_store.as_ref())
        .find(|s| !s.redis_address.is_empty())
        .map(|s| Arc::new(SharedStore::new(&s.redis_address, &s.redis_password)))
}

/// Validates resources and compiles snapshots, memoising compiled routes and clusters by name and
/// held-entry identity so a one-route change at 10k routes recompiles one route. Memo keys are
/// the compiled objects' own names (one shared allocation per name).
pub struct Compiler {
    routes: HashMap<Arc<str>, (Held<pb::Route>, Arc<CompiledRoute>)>,
    clusters: HashMap<Arc<str>, (Held<pb::Cluster>, Arc<CompiledCluster>)>,
    /// Loaded keys of TlsCertificate Secrets (None: another kind, or it failed to load).
    secrets: HashMap<String, (Arc<pb::Secret>, Option<Arc<CertifiedKey>>)>,
    /// Routes that carry a certificate_secret, by name (inputs of the SNI indexes).
    route_certs: BTreeMap<String, Arc<CompiledRoute>>,
    /// Accepted HTTPS listeners and TLS listeners in terminate mode, in name order, as of the
    /// last listener change.
    tls_listeners: Vec<TlsListener>,
    /// Accepted TCP, UDP and TLS listeners in name order, as of the last listener change.
    l4_listeners: Vec<L4ListenerSpec>,
    /// Compiled routes attached to some L4 listener, by name.
    l4_routes: BTreeMap<String, (Held<pb::Route>, Arc<L4Route>)>,
    /// Survives cluster changes (round-robin position, endpoint health, retry budget); dropped
    /// when the cluster is removed.
    cluster_states: HashMap<Arc<str>, Arc<ClusterState>>,
    clients: Arc<Clients>,
    /// The gateway's upstream defaults, as of the last listener change.
    pool_defaults: PoolSettings,
    /// Rebuilds only the host tables a change touches.
    index: IndexBuilder,
    /// The pieces of the last snapshot, reused by the next one.
    last: Snapshot,
    /// Where compiled routes get their metric handles (None: routes record no metrics).
    metrics: Option<Arc<Metrics>>,
    /// Middleware state that survives recompiles (buckets, caches, keys).
    middleware_states: States,
    /// The gateway's shared store (Redis), as of the last listener change.
    shared_store: Option<Arc<SharedStore>>,
    /// GeoIP database for geoBlock middlewares.
    geoip_database: Option<PathBuf>,
    /// The listeners' names as of the last listener change, shared by the compiled routes that
    /// name them.
    listener_names: HashSet<Arc<str>>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

impl Compiler {
    pub fn new() -> Self {
        Compiler {
            routes: HashMap::new(),
            clusters: HashMap::new(),
            secrets: HashMap::new(),
            route_certs: BTreeMap::new(),
            tls_listeners: Vec::new(),
            l4_listeners: Vec::new(),
            l4_routes: BTreeMap::new(),
            cluster_states: HashMap::new(),
            clients: Arc::new(Clients::default()),
            pool_defaults: PoolSettings::default(),
            index: IndexBuilder::default(),
            last: Snapshot::default(),
            metrics: None,
            middleware_states: States::default(),
            shared_store: None,
            geoip_database: None,
            listener_names: HashSet::new(),
        }
    }

    /// The MaxMind country database geoBlock middlewares look clients up in.
    pub fn set_geoip_database(&mut self, path: Option<PathBuf>) {
        self.geoip_database = path;
    }

    /// Compiles a route with its middlewares.
    fn compile_route(
        pb_route: &pb::Route,
        resources: &Resources,
        env: MiddlewareInputs<'_>,
    ) -> Result<CompiledRoute, String> {
        let mut route = CompiledRoute::compile(pb_route)?;
        if !pb_route.middlewares.is_empty() {
            let mut env = CompileEnv::new(
                env.states,
                &resources.secrets,
                env.shared_store,
                env.geoip_database,
            );
            route.middlewares = Chain::compile(&pb_route.middlewares, &mut env)?;
        }
        Ok(route)
    }

    /// A compiler whose routes record per-route metrics in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Compiler {
            metrics: Some(metrics),
            ..Self::new()
        }
    }

    /// Validates a listener, including that its certificate Secrets exist and are TlsCertificates.
    pub fn validate_listener(&self, l: &pb::Listener, resources: &Resources) -> Result<(), String> {
        check_listener(l)?;
        ServerSettings::of_listener(l)?;
        if let Some(t) = &l.tls {
            for (i, name) in t.certificate_secrets.iter().enumerate() {
                check_tls_secret(name, resources)
                    .map_err(|e| format!("tls.certificate_secrets[{i}]: {e}"))?;
            }
            if !t.client_ca_secret.is_empty() {
                match resources.secrets.get(&t.client_ca_secret).map(|s| &s.kind) {
                    Some(Some(pb::secret::Kind::CaBundle(_))) => {}
                    None => {
                        return Err(format!(
                            "tls.client_ca_secret: secret {:?} does not exist",
                            t.client_ca_secret
                        ));
                    }
                    Some(_) => {
                        return Err(format!(
                            "tls.client_ca_secret: secret {:?} is not a CaBundle",
                            t.client_ca_secret
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates a cluster, including that its TLS Secrets exist with the right kinds.
    pub fn validate_cluster(&self, c: &pb::Cluster, resources: &Resources) -> Result<(), String> {
        cluster::validate(c)?;
        cluster::tls_inputs(c, &resources.secrets).map(drop)
    }

    pub fn validate_secret(&self, s: &pb::Secret) -> Result<(), String> {
        if s.name.is_empty() {
            return Err("name: empty".into());
        }
        match &s.kind {
            None => Err("kind: not set (tls_certificate, ca_bundle or opaque required)".into()),
            Some(pb::secret::Kind::TlsCertificate(t)) => tls::load_certified_key(t).map(drop),
            Some(pb::secret::Kind::CaBundle(ca)) => tls::validate_ca_bundle(ca),
            Some(pb::secret::Kind::Opaque(_)) => Ok(()),
        }
    }

    pub fn validate_route(&self, r: &pb::Route, resources: &Resources) -> Result<(), String> {
        // A scratch registry: validation must not create or disturb serving state.
        let mut scratch = States::default();
        let store = shared_store_of(resources);
        let compiled = Self::compile_route(
            r,
            resources,
            MiddlewareInputs {
                states: &mut scratch,
                shared_store: store.as_ref(),
                geoip_database: self.geoip_database.as_deref(),
            },
        )?;
        // A listener that does not exist (yet) is fine: the route is placed when it appears.
        for (i, l) in r.listeners.iter().enumerate() {
            if l.is_empty() {
                return Err(format!("listeners[{i}]: empty"));
            }
        }
        if !r.certificate_secret.is_empty() {
            check_tls_secret(&r.certificate_secret, resources)
                .map_err(|e| format!("certificate_secret: {e}"))?;
        }
        if let Some(pb::route::Action::Forward(f)) = &r.action {
            for (i, b) in f.backends.iter().enumerate() {
                // An empty name is an unresolved reference: HTTP answers its share 500, TCP, UDP
                // and TLS listeners refuse the connection.
                if !b.cluster.is_empty() && !resources.clusters.contains_key(&b.cluster) {
                    return Err(format!(
                        "forward.backends[{i}].cluster: cluster {:?} does not exist",
                        b.cluster
                    ));
                }
            }
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            if !resources.clusters.contains_key(&m.cluster) {
                return Err(format!(
                    "mirrors[{i}].cluster: cluster {:?} does not exist",
                    m.cluster
                ));
            }
        }
        drop(compiled);
        Ok(())
    }

    /// Builds a snapshot from scratch. Never panics: a resource that fails to compile (it
    /// should have been rejected by validation) is left out and logged.
    pub fn compile(&mut self, resources: &Resources) -> Arc<Snapshot> {
        let mut all = Changed {
            listeners: true,
            clusters: resources.clusters.names().map(str::to_owned).collect(),
            routes: resources.routes.names().map(str::to_owned).collect(),
            secrets: resources.secrets.keys().cloned().collect(),
        };
        all.clusters
            .extend(self.clusters.keys().map(|k| k.to_string()));
        all.routes.extend(self.routes.keys().map(|k| k.to_string()));
        all.secrets.extend(self.secrets.keys().cloned());
        self.compile_changes(resources, &all)
    }

    /// Builds the next snapshot when only the `changed` names differ from the previous compile:
    /// the cost follows the size of the change, not of the configuration (unchanged clusters
    /// and host tables are shared with the previous snapshot).
    ///
    /// Listeners on one port must share a protocol (TCP and UDP ports are separate): when they
    /// do not, the ones after the first by name are left out and reported in
    /// [`Snapshot::port_conflicts`] (the runtime NACKs them). A certificate Secret that is missing
    /// or invalid at compile time is skipped with a warning; a TLS port with no certificate left
    /// refuses handshakes (fail closed).
    pub fn compile_changes(&mut self, resources: &Resources, changed: &Changed) -> Arc<Snapshot> {
        let mut clusters = self.last.clusters.clone();
        if changed.listeners {
            self.listener_names = resources
                .listeners
                .keys()
                .map(|n| Arc::from(n.as_str()))
                .collect();
        }
        // Clusters to recompile although their resource did not change: all of them when the
        // gateway's pool defaults changed, and the TLS clusters using a changed Secret (a rotated
        // CA or client certificate needs a new client config). A set, so each compiles once.
        let mut cluster_names: BTreeSet<String> = BTreeSet::new();
        if changed.listeners {
            let defaults =
                PoolSettings::gateway_defaults(resources.listeners.values().map(|l| &**l));
            if defaults != self.pool_defaults {
                self.pool_defaults = defaults;
                cluster_names.extend(self.clusters.keys().map(|k| k.to_string()));
            }
        }
        if !changed.secrets.is_empty() {
            cluster_names.extend(
                self.clusters
                    .iter()
                    .filter(|(_, (_, c))| {
                        c.tls.as_ref().is_some_and(|t| {
                            changed.secrets.contains(&t.settings.ca_secret)
                                || changed
                                    .secrets
                                    .contains(&t.settings.client_certificate_secret)
                        })
                    })
                    .map(|(name, _)| name.to_string()),
            );
        }
        for name in changed
            .clusters
            .iter()
            .chain(cluster_names.difference(&changed.clusters))
        {
            let decoded = resources
                .clusters
                .held(name)
                .map(|held| held.decode().map(|c| (held, c)));
            let (held, pb_cluster) = match decoded {
                None => {
                    self.clusters.remove(name.as_str());
                    self.cluster_states.remove(name.as_str());
                    Arc::make_mut(&mut clusters).remove(name.as_str());
                    continue;
                }
                Some(Ok(found)) => found,
                Some(Err(error)) => {
                    tracing::error!(cluster = %name, %error, "cluster left out of snapshot");
                    self.clusters.remove(name.as_str());
                    Arc::make_mut(&mut clusters).remove(name.as_str());
                    continue;
                }
            };
            let tls = match cluster::tls_inputs(&pb_cluster, &resources.secrets) {
                Ok(tls) => tls,
                Err(error) => {
                    // A Secret went away under the cluster: fail closed, never downgrade.
                    tracing::warn!(cluster = %name, %error, "cluster left out of snapshot");
                    self.clusters.remove(name.as_str());
                    Arc::make_mut(&mut clusters).remove(name.as_str());
                    continue;
                }
            };
            let previous = self
                .clusters
                .get(name.as_str())
                .map(|(old, c)| (old.clone(), c.clone()));
            let pool = cluster::pool_settings(&pb_cluster, self.pool_defaults);
            if previous.as_ref().is_some_and(|(old, c)| {
                old.same(held) && c.tls.as_deref() == tls.as_ref() && c.pool == pool
            }) {
                continue;
            }
            // One allocation for the name, shared by the memo, the state map, the snapshot's
            // map and the compiled cluster.
            let key: Arc<str> = match (&previous, self.cluster_states.get_key_value(name.as_str()))
            {
                (Some((_, c)), _) => c.name.clone(),
                (None, Some((k, _))) => k.clone(),
                (None, None) => Arc::from(name.as_str()),
            };
            let state = self.cluster_states.entry(key.clone()).or_default().clone();
            let previous = previous.as_ref().map(|(_, c)| &**c);
            match CompiledCluster::compile_named(
                &pb_cluster,
                key.clone(),
                state,
                &self.clients,
                tls,
                pool,
                previous,
            ) {
                Ok(c) => {
                    let c = Arc::new(c);
                    Arc::make_mut(&mut clusters).insert(key.clone(), c.clone());
                    self.clusters.insert(key, (held.clone(), c));
                }
                Err(error) => {
                    tracing::warn!(cluster = %name, %error, "cluster left out of snapshot");
                    self.clusters.remove(name.as_str());
                    Arc::make_mut(&mut clusters).remove(name.as_str());
                }
            }
        }

        // Any certificate input changing rebuilds the (small) SNI indexes.
        let mut tls_dirty = changed.listeners || !changed.secrets.is_empty();
        for name in &changed.secrets {
            let Some(pb_secret) = resources.secrets.get(name) else {
                self.secrets.remove(name);
                continue;
            };
            if self
                .secrets
                .get(name)
                .is_some_and(|(old, _)| Arc::ptr_eq(old, pb_secret))
            {
                continue;
            }
            let key = match &pb_secret.kind {
                Some(pb::secret::Kind::TlsCertificate(t)) => match tls::load_certified_key(t) {
                    Ok(k) => Some(Arc::new(k)),
                    Err(error) => {
                        tracing::warn!(secret = %name, %error, "certificate left out of snapshot");
                        None
                    }
                },
                _ => None,
            };
            self.secrets.insert(name.clone(), (pb_secret.clone(), key));
        }

        // Routes to recompile although their resource did not change: those whose middlewares
        // read a changed Secret, and all routes with middlewares when the shared store moved.
        let mut forced: BTreeSet<String> = BTreeSet::new();
        if changed.listeners {
            let store = shared_store_of(resources);
            let same = match (&store, &self.shared_store) {
                (Some(a), Some(b)) => a.address() == b.address() && a.password() == b.password(),
                (None, None) => true,
                _ => false,
            };
            if !same {
                self.shared_store = store;
                forced.extend(
                    self.routes
                        .iter()
                        .filter(|(_, (_, r))| !r.middlewares.is_empty())
                        .map(|(name, _)| name.to_string()),
                );
            }
        }
        if !changed.secrets.is_empty() {
            forced.extend(
                self.routes
                    .iter()
                    .filter(|(_, (_, r))| {
                        r.middlewares
                            .secrets()
                            .iter()
                            .any(|s| changed.secrets.contains(&**s))
                    })
                    .map(|(name, _)| name.to_string()),
            );
        }
        let mut upserted = Vec::new();
        let mut removed: Vec<Arc<str>> = Vec::new();
        let mut middlewares_touched = false;
        for name in changed
            .routes
            .iter()
            .chain(forced.difference(&changed.routes))
        {
            if self.route_certs.remove(name).is_some() {
                tls_dirty = true;
            }
            let Some(held) = resources.routes.held(name) else {
                if let Some((key, (_, r))) = self.routes.remove_entry(name.as_str()) {
                    middlewares_touched |= !r.middlewares.is_empty();
                    removed.push(key);
                }
                continue;
            };
            if !forced.contains(name)
                && let Some((old, r)) = self.routes.get(name.as_str())
                && old.same(held)
            {
                if r.certificate_secret.is_some() {
                    self.route_certs.insert(name.clone(), r.clone());
                }
                continue;
            }
            let pb_route = match held.decode() {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(route = %name, %error, "route left out of snapshot");
                    if let Some((key, (_, r))) = self.routes.remove_entry(name.as_str()) {
                        middlewares_touched |= !r.middlewares.is_empty();
                        removed.push(key);
                    }
                    continue;
                }
            };
            middlewares_touched |= !pb_route.middlewares.is_empty()
                || self
                    .routes
                    .get(name.as_str())
                    .is_some_and(|(_, r)| !r.middlewares.is_empty());
            let inputs = MiddlewareInputs {
                states: &mut self.middleware_states,
                shared_store: self.shared_store.as_ref(),
                geoip_database: self.geoip_database.as_deref(),
            };
            match Self::compile_route(&pb_route, resources, inputs) {
                Ok(mut r) => {
                    // Clusters compile before routes (and are sent before them).
                    let clusters = &self.clusters;
                    r.share_cluster_names(|n| clusters.get_key_value(n).map(|(k, _)| k.clone()));
                    r.share_listener_names(|n| self.listener_names.get(n).cloned());
                    // Resolved while the previous version (if any) is still held, so its
                    // series carry over.
                    r.stats = self
                        .metrics
                        .as_ref()
                        .filter(|_| !pb_route.disable_metrics)
                        .map(|m| m.route(CompiledRoute::metrics_label(&pb_route)));
                    let r = Arc::new(r);
                    if r.certificate_secret.is_some() {
                        tls_dirty = true;
                        self.route_certs.insert(name.clone(), r.clone());
                    }
                    upserted.push(r.clone());
                    // The compiled route's name is the memo key (the resource's own name).
                    let key = if *r.name == **name {
                        r.name.clone()
                    } else {
                        Arc::from(name.as_str())
                    };
                    self.routes.remove(name.as_str());
                    self.routes.insert(key, (held.clone(), r));
                }
                Err(error) => {
                    tracing::warn!(route = %name, %error, "route left out of snapshot");
                    if let Some((key, _)) = self.routes.remove_entry(name.as_str()) {
                        removed.push(key);
                    }
                }
            }
        }

        if middlewares_touched {
            self.middleware_states.retain_used();
        }
        let mut server = self.last.server.clone();
        let mut udp_ports = self.last.udp_ports.clone();
        let mut port_conflicts = Vec::new();
        let (table, ports, metrics_endpoints) = if changed.listeners {
            let mut settings: FastMap<u16, Arc<ServerSettings>> = FastMap::default();
            let mut metrics_endpoints = Vec::new();
            let mut listeners = Vec::with_capacity(resources.listeners.len());
            let mut ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            udp_ports = BTreeMap::new();
            // By (port, is UDP): TCP and UDP listeners may share a port number.
            let mut protocols: HashMap<(u16, bool), (i32, &str)> = HashMap::new();
            self.tls_listeners.clear();
            self.l4_listeners.clear();
            for (name, l) in &resources.listeners {
                // Secret references are not checked here: a missing certificate is skipped
                // when the SNI index is built (fail closed), the listener still serves routes.
                if let Err(error) = check_listener(l) {
                    tracing::warn!(listener = %name, %error, "listener left out of snapshot");
                    continue;
                }
                let Ok(port) = u16::try_from(l.port) else {
                    continue;
                };
                // One protocol per port (HTTP, HTTPS, TLS and TCP share TCP ports; UDP has its
                // own). Validation sees one listener at a time and cannot refuse this reliably,
                // so the later listener by name order is left out here and NACKed by the runtime.
                let l4_kind = L4Kind::of(l);
                let udp = l4_kind == Some(L4Kind::Udp);
                let (first, owner) = *protocols
                    .entry((port, udp))
                    .or_insert((l.protocol, name.as_str()));
                if first != l.protocol {
                    let protocol_name =
                        |p: i32| pb::Protocol::try_from(p).map_or("UNKNOWN", |p| p.as_str_name());
                    let reason = format!(
                        "port: {port} is already used by listener {owner:?} with protocol {}; a port serves one protocol (only TCP and UDP may share a number)",
                        protocol_name(first)
                    );
                    tracing::warn!(listener = %name, port, %reason, "listener left out of snapshot");
                    port_conflicts.push((name.clone(), reason));
                    continue;
                }
                if udp {
                    udp_ports.entry(port).or_default().push(name.clone());
                } else {
                    ports.entry(port).or_default().push(name.clone());
                }
                let hostname = HostPattern::parse(&l.hostname);
                if let Some(kind) = l4_kind {
                    if kind == L4Kind::TlsTerminate {
                        let tls = l.tls.clone().unwrap_or_default();
                        self.tls_listeners.push(TlsListener {
                            name: name.clone(),
                            port,
                            hostname: hostname.clone(),
                            certificate_secrets: tls.certificate_secrets,
                            client_ca_secret: tls.client_ca_secret,
                            client_certificate_optional: tls.client_certificate_optional,
                        });
                    }
                    self.l4_listeners.push(L4ListenerSpec {
                        name: name.as_str().into(),
                        port,
                        kind,
                        hostname,
                        idle_timeout: l4_idle_timeout(l),
                    });
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = settings.entry(port) {
                    match ServerSettings::of_listener(l) {
                        Ok(s) if s == *server::DEFAULT => {}
                        Ok(s) => {
                            slot.insert(Arc::new(s));
                        }
                        Err(error) => {
                            tracing::warn!(listener = %name, %error, "listener settings invalid; defaults used");
                        }
                    }
                }
                if let Ok(Some(endpoint)) = MetricsEndpoint::from_listener(l, port) {
                    metrics_endpoints.push(endpoint);
                }
                if l.protocol == pb::Protocol::Https as i32 {
                    let tls = l.tls.clone().unwrap_or_default();
                    self.tls_listeners.push(TlsListener {
                        name: name.clone(),
                        port,
                        hostname: hostname.clone(),
                        certificate_secrets: tls.certificate_secrets,
                        client_ca_secret: tls.client_ca_secret,
                        client_certificate_optional: tls.client_certificate_optional,
                    });
                }
                listeners.push(ListenerInfo {
                    name: name.clone(),
                    port,
                    hostname,
                });
            }
            // Listener changes can move every route: index them all (rare).
            let routes: Vec<Arc<CompiledRoute>> =
                self.routes.values().map(|(_, r)| r.clone()).collect();
            server = Arc::new(settings);
            metrics_endpoints.dedup();
            (
                self.index.build(&listeners, &routes),
                ports,
                metrics_endpoints.into(),
            )
        } else if upserted.is_empty() && removed.is_empty() {
            (
                self.last.table.clone(),
                self.last.ports.clone(),
                self.last.metrics_endpoints.clone(),
            )
        } else {
            (
                self.index.update(&upserted, &removed),
                self.last.ports.clone(),
                self.last.metrics_endpoints.clone(),
            )
        };
        let tls = if tls_dirty {
            Arc::new(self.build_sni_indexes())
        } else {
            self.last.tls.clone()
        };
        let (l4, udp) = if self.sync_l4_routes(resources, changed) {
            self.build_l4_tables()
        } else {
            (self.last.l4.clone(), self.last.udp.clone())
        };
        self.last = Snapshot {
            table,
            clusters,
            ports,
            udp_ports,
            l4,
            udp,
            tls,
            server,
            metrics_endpoints,
            route_count: self.routes.len(),
            port_conflicts,
        };
        Arc::new(Snapshot {
            table: self.last.table.clone(),
            clusters: self.last.clusters.clone(),
            ports: self.last.ports.clone(),
            udp_ports: self.last.udp_ports.clone(),
            l4: self.last.l4.clone(),
            udp: self.last.udp.clone(),
            tls: self.last.tls.clone(),
            server: self.last.server.clone(),
            metrics_endpoints: self.last.metrics_endpoints.clone(),
            route_count: self.last.route_count,
            port_conflicts: self.last.port_conflicts.clone(),
        })
    }

    /// Brings the compiled L4 routes up to date: every route on a listener change, else the
    /// changed ones. Returns whether the L4 tables must be rebuilt.
    fn sync_l4_routes(&mut self, resources: &Resources, changed: &Changed) -> bool {
        let l4_names: HashSet<&str> = self.l4_listeners.iter().map(|l| &*l.name).collect();
        if l4_names.is_empty() {
            // No L4 listener: no route can attach (and none needs decoding to tell).
            let had_routes = !self.l4_routes.is_empty();
            self.l4_routes.clear();
            return changed.listeners || had_routes;
        }
        let names: Vec<String> = if changed.listeners {
            let mut all: BTreeSet<String> = resources.routes.names().map(str::to_owned).collect();
            all.extend(self.l4_routes.keys().cloned());
            all.into_iter().collect()
        } else {
            changed.routes.iter().cloned().collect()
        };
        let mut dirty = changed.listeners;
        for name in names {
            let Some(held) = resources.routes.held(&name) else {
                dirty |= self.l4_routes.remove(&name).is_some();
                continue;
            };
            if self.l4_routes.get(&name).is_some_and(|(old, r)| {
                old.same(held) && r.listeners.iter().any(|l| l4_names.contains(&**l))
            }) {
                continue;
            }
            let attached = match held.decode() {
                Ok(r) => {
                    Some(r).filter(|r| r.listeners.iter().any(|l| l4_names.contains(l.as_str())))
                }
                Err(error) => {
                    tracing::error!(route = %name, %error, "route left out of TCP, UDP and TLS listeners");
                    None
                }
            };
            let Some(pb_route) = attached else {
                dirty |= self.l4_routes.remove(&name).is_some();
                continue;
            };
            dirty = true;
            match L4Route::compile(&pb_route) {
                Ok(r) => {
                    self.l4_routes.insert(name, (held.clone(), Arc::new(r)));
                }
                Err(error) => {
                    tracing::warn!(route = %name, %error, "route left out of TCP, UDP and TLS listeners");
                    self.l4_routes.remove(&name);
                }
            }
        }
        dirty
    }

    /// The TCP/TLS and UDP port tables: each port's listeners in name order with their routes.
    #[allow(clippy::type_complexity)]
    fn build_l4_tables(
        &self,
    ) -> (
        Arc<FastMap<u16, Arc<L4Port>>>,
        Arc<FastMap<u16, Arc<L4Port>>>,
    ) {
        let mut stream: BTreeMap<u16, L4Port> = BTreeMap::new();
        let mut udp: BTreeMap<u16, L4Port> = BTreeMap::new();
        for spec in &self.l4_listeners {
            let mut routes: Vec<Arc<L4Route>> = self
                .l4_routes
                .values()
                .filter(|(_, r)| r.listeners.iter().any(|l| **l == *spec.name))
                .map(|(_, r)| r.clone())
                .collect();
            sort_routes(&mut routes);
            let table = if spec.kind == L4Kind::Udp {
                &mut udp
            } else {
                &mut stream
            };
            table
                .entry(spec.port)
                .or_default()
                .listeners
                .push(L4Listener {
                    name: spec.name.clone(),
                    hostname: spec.hostname.clone(),
                    kind: spec.kind,
                    idle_timeout: spec.idle_timeout,
                    routes,
                });
        }
        let shared = |t: BTreeMap<u16, L4Port>| {
            Arc::new(
                t.into_iter()
                    .map(|(port, p)| (port, Arc::new(p)))
                    .collect::<FastMap<_, _>>(),
            )
        };
        (shared(stream), shared(udp))
    }

    /// One SNI index per HTTPS port: route certificates under the hosts each route is reachable
    /// by through that port's listeners (route name order), then listener certificates.
    fn build_sni_indexes(&self) -> FastMap<u16, Arc<SniIndex>> {
        let key = |secret: &str, owner: &str| {
            let found = self.secrets.get(secret).and_then(|(_, k)| k.clone());
            if found.is_none() {
                tracing::warn!(%owner, %secret, "certificate secret missing or not a valid TlsCertificate; skipped");
            }
            found
        };
        let mut indexes: HashMap<u16, SniIndex> = HashMap::new();
        for l in &self.tls_listeners {
            indexes.entry(l.port).or_default();
        }
        for (name, route) in &self.route_certs {
            let Some(secret) = &route.certificate_secret else {
                continue;
            };
            let listeners = self
                .tls_listeners
                .iter()
                .filter(|l| route.listeners.iter().any(|n| **n == *l.name));
            let mut cert = None;
            for l in listeners {
                let Some(k) = cert.get_or_insert_with(|| key(secret, name)) else {
                    break;
                };
                let Some(index) = indexes.get_mut(&l.port) else {
                    continue;
                };
                if route.hostnames.is_empty() {
                    index.add_route_cert(&l.hostname, k);
                }
                for h in route
                    .hostnames
                    .iter()
                    .filter_map(|h| h.intersect(&l.hostname))
                {
                    index.add_route_cert(&h, k);
                }
            }
        }
        for l in &self.tls_listeners {
            let certs = l
                .certificate_secrets
                .iter()
                .filter_map(|s| key(s, &l.name))
                .collect();
            if let Some(index) = indexes.get_mut(&l.port) {
                index.add_listener(l.hostname.clone(), certs);
                if !l.client_ca_secret.is_empty() && matches!(index.client_auth(), ClientAuth::None)
                {
                    index.set_client_auth(self.client_auth(l));
                }
            }
        }
        indexes
            .into_iter()
            .map(|(port, index)| {
                if index.is_empty() {
                    tracing::warn!(
                        port,
                        "no usable certificate: TLS handshakes on this port are refused"
                    );
                }
                (port, Arc::new(index))
            })
            .collect()
    }

    /// The client-certificate policy `l` asks for; a CA that cannot be loaded refuses every
    /// handshake on the port (fail closed).
    fn client_auth(&self, l: &TlsListener) -> ClientAuth {
        let loaded = match self.secrets.get(&l.client_ca_secret) {
            None => Err("secret does not exist".to_owned()),
            Some((secret, _)) => ClientAuth::from_ca(secret, l.client_certificate_optional),
        };
        loaded.unwrap_or_else(|error| {
            tracing::warn!(listener = %l.name, port = l.port, secret = %l.client_ca_secret, %error, "client CA unusable: TLS handshakes on this port are refused");
            ClientAuth::Unavailable
        })
    }

    /// The compiled form of a route currently memoised (for tests and diagnostics).
    pub fn compiled_route(&self, name: &str) -> Option<&Arc<CompiledRoute>> {
        self.routes.get(name).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::self_signed;

    fn resources() -> Resources {
        let mut res = Resources::default();
        res.add_http_listener("http", 8080)
            .add_cluster("backend", &[("127.0.0.1", 9000)]);
        res
    }

    fn forward_route(name: &str, cluster: &str) -> pb::Route {
        pb::Route {
            name: name.into(),
            listeners: vec!["http".into()],
            action: Some(pb::route::Action::Forward(pb::ForwardAction {
                backends: vec![pb::WeightedBackend {
                    cluster: cluster.into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn validate_route_names_the_field() {
        let c = Compiler::new();
        let res = resources();
        assert_eq!(
            c.validate_route(&forward_route("r", "backend"), &res),
            Ok(())
        );
        let err = c
            .validate_route(&forward_route("r", "missing"), &res)
            .unwrap_err();
        assert!(
            err.starts_with("forward.backends[0].cluster:") && err.contains("missing"),
            "{err}"
        );

        let mut bad_regex = forward_route("r", "backend");
        bad_regex.matches = vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Regex as i32,
                value: "/(".into(),
            }),
            ..Default::default()
        }];
        let err = c.validate_route(&bad_regex, &res).unwrap_err();
        assert!(
            err.starts_with("matches[0].path.value: invalid regex"),
            "{err}"
        );

        let mut no_action = forward_route("r", "backend");
        no_action.action = None;
        let err = c.validate_route(&no_action, &res).unwrap_err();
        assert!(err.starts_with("action:"), "{err}");

        // A listener that does not exist yet is accepted (placed when it appears); an empty
        // name is not.
        let mut later_listener = forward_route("r", "backend");
        later_listener.listeners = vec!["http".into(), "not-yet".into()];
        assert_eq!(c.validate_route(&later_listener, &res), Ok(()));
        let mut bad_listener = forward_route("r", "backend");
        bad_listener.listeners = vec!["http".into(), String::new()];
        let err = c.validate_route(&bad_listener, &res).unwrap_err();
        assert_eq!(err, "listeners[1]: empty");

        let mut bad_status = forward_route("r", "backend");
        bad_status.action = Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 600,
            ..Default::default()
        }));
        let err = c.validate_route(&bad_status, &res).unwrap_err();
        assert!(err.starts_with("direct_response.status:"), "{err}");
    }

    #[test]
    fn validate_gateway_api_fields_names_the_field() {
        let c = Compiler::new();
        let res = resources();
        // An unresolved backend (empty cluster) and no backends at all are valid: answered 500.
        assert_eq!(c.validate_route(&forward_route("r", ""), &res), Ok(()));
        let mut no_backends = forward_route("r", "backend");
        no_backends.action = Some(pb::route::Action::Forward(pb::ForwardAction::default()));
        assert_eq!(c.validate_route(&no_backends, &res), Ok(()));

        let mirror = |cluster: &str, numerator: u32, denominator: u32| {
            let mut r = forward_route("r", "backend");
            r.mirrors = vec![pb::RequestMirror {
                cluster: cluster.into(),
                numerator,
                denominator,
            }];
            r
        };
        assert_eq!(c.validate_route(&mirror("backend", 1, 10), &res), Ok(()));
        let err = c
            .validate_route(&mirror("missing", 0, 0), &res)
            .unwrap_err();
        assert!(
            err.starts_with("mirrors[0].cluster: cluster \"missing\""),
            "{err}"
        );
        let err = c
            .validate_route(&mirror("backend", 3, 2), &res)
            .unwrap_err();
        assert!(err.starts_with("mirrors[0].numerator: "), "{err}");

        let mut redirect = forward_route("r", "backend");
        redirect.action = Some(pb::route::Action::Redirect(pb::Redirect {
            status: 304,
            ..Default::default()
        }));
        let err = c.validate_route(&redirect, &res).unwrap_err();
        assert_eq!(err, "redirect.status: 304 is not a redirect status");

        let mut rewrite = forward_route("r", "backend");
        if let Some(pb::route::Action::Forward(f)) = &mut rewrite.action {
            f.host_rewrite = "bad host".into();
            f.backends[0].response_headers = Some(pb::HeaderModifier {
                remove: vec!["ok".into()],
                ..Default::default()
            });
        }
        let err = c.validate_route(&rewrite, &res).unwrap_err();
        assert!(err.starts_with("forward.host_rewrite: "), "{err}");
        if let Some(pb::route::Action::Forward(f)) = &mut rewrite.action {
            f.host_rewrite = "api.internal".into();
            f.backends[0].response_headers = Some(pb::HeaderModifier {
                remove: vec!["bad:name".into()],
                ..Default::default()
            });
        }
        let err = c.validate_route(&rewrite, &res).unwrap_err();
        assert!(
            err.starts_with("forward.backends[0].response_headers.remove[0]: "),
            "{err}"
        );

        let mut cors = forward_route("r", "backend");
        cors.cors = Some(pb::Cors {
            allow_methods: vec!["*".into(), "GET".into()],
            ..Default::default()
        });
        let err = c.validate_route(&cors, &res).unwrap_err();
        assert!(err.starts_with("cors.allow_methods: "), "{err}");
    }

    #[test]
    fn validate_resilience_settings_names_the_field() {
        let c = Compiler::new();
        let res = resources();
        let with_forward = |edit: &dyn Fn(&mut pb::ForwardAction)| {
            let mut r = forward_route("r", "backend");
            if let Some(pb::route::Action::Forward(f)) = &mut r.action {
                edit(f);
            }
            c.validate_route(&r, &res)
        };
        let bad_duration = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            with_forward(&|f| {
                f.retry = Some(pb::RetryPolicy {
                    attempts: 2,
                    statuses: vec![502, 503],
                    backoff: None,
                });
                f.backend_timeout = Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                });
            }),
            Ok(())
        );
        for (edit, error) in [
            (
                &(|f: &mut pb::ForwardAction| f.backend_timeout = Some(bad_duration))
                    as &dyn Fn(&mut pb::ForwardAction),
                "forward.backend_timeout: invalid duration -1s 0ns",
            ),
            (
                &|f: &mut pb::ForwardAction| {
                    f.retry = Some(pb::RetryPolicy {
                        statuses: vec![503, 600],
                        ..Default::default()
                    })
                },
                "forward.retry.statuses[1]: 600 is not in 100..=599",
            ),
            (
                &|f: &mut pb::ForwardAction| {
                    f.retry = Some(pb::RetryPolicy {
                        attempts: 11,
                        ..Default::default()
                    })
                },
                "forward.retry.attempts: 11 is more than 10",
            ),
            (
                &|f: &mut pb::ForwardAction| {
                    f.retry = Some(pb::RetryPolicy {
                        backoff: Some(bad_duration),
                        ..Default::default()
                    })
                },
                "forward.retry.backoff: invalid duration -1s 0ns",
            ),
        ] {
            assert_eq!(with_forward(edit).unwrap_err(), error);
        }

        let mut cluster = res.clusters.get("backend").expect("held");
        cluster.health_check = Some(pb::HealthCheck {
            path: "/healthz".into(),
            interval: Some(bad_duration),
            ..Default::default()
        });
        assert_eq!(
            c.validate_cluster(&cluster, &res).unwrap_err(),
            "health_check.interval: invalid duration -1s 0ns"
        );
        cluster.health_check = None;
        cluster.outlier_detection = Some(pb::OutlierDetection {
            consecutive_failures: 5000,
            ..Default::default()
        });
        assert_eq!(
            c.validate_cluster(&cluster, &res).unwrap_err(),
            "outlier_detection.consecutive_failures: 5000 is more than 1000"
        );
    }

    #[test]
    fn validate_listener_and_secret() {
        let c = Compiler::new();
        let res = resources();
        let mut l = pb::Listener {
            name: "l".into(),
            port: 80,
            protocol: pb::Protocol::Http as i32,
            hostname: "*.example.com".into(),
            ..Default::default()
        };
        assert_eq!(c.validate_listener(&l, &res), Ok(()));
        l.port = 0;
        assert!(
            c.validate_listener(&l, &res)
                .unwrap_err()
                .starts_with("port:")
        );
        l.port = 70000;
        assert!(
            c.validate_listener(&l, &res)
                .unwrap_err()
                .starts_with("port:")
        );
        l.port = 80;
        for p in [pb::Protocol::Tcp, pb::Protocol::Udp] {
            l.protocol = p as i32;
            assert_eq!(c.validate_listener(&l, &res), Ok(()));
        }
        l.protocol = pb::Protocol::Unspecified as i32;
        assert_eq!(
            c.validate_listener(&l, &res).unwrap_err(),
            "protocol: not set"
        );
        l.protocol = pb::Protocol::Tls as i32;
        assert_eq!(
            c.validate_listener(&l, &res).unwrap_err(),
            "tls.certificate_secrets: a TLS listener in terminate mode needs at least one certificate"
        );
        l.tls = Some(pb::ListenerTls {
            mode: pb::TlsMode::Passthrough as i32,
            ..Default::default()
        });
        assert_eq!(c.validate_listener(&l, &res), Ok(()));
        l.tls = Some(pb::ListenerTls {
            mode: 7,
            ..Default::default()
        });
        assert_eq!(
            c.validate_listener(&l, &res).unwrap_err(),
            "tls.mode: unknown value 7"
        );
        l.tls = None;
        l.protocol = pb::Protocol::Http as i32;
        l.http = Some(pb::HttpSettings {
            upstream_defaults: Some(pb::UpstreamDefaults {
                pool: Some(pb::ConnectionPool {
                    idle_timeout: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                dns_ttl: None,
            }),
            ..Default::default()
        });
        assert!(
            c.validate_listener(&l, &res)
                .unwrap_err()
                .starts_with("http.upstream_defaults.pool.idle_timeout:")
        );
        l.http = None;
        l.hostname = "bad host".into();
        assert!(
            c.validate_listener(&l, &res)
                .unwrap_err()
                .starts_with("hostname:")
        );
        let s = pb::Secret {
            name: "s".into(),
            ..Default::default()
        };
        assert!(c.validate_secret(&s).unwrap_err().starts_with("kind:"));
    }

    fn tls_resources() -> Resources {
        let mut res = resources();
        for (name, host) in [("cert-a", "a.test"), ("cert-b", "b.test")] {
            let secret = self_signed(&[host]).secret(name);
            res.secrets.insert(name.into(), Arc::new(secret));
        }
        res.secrets.insert(
            "opaque".into(),
            Arc::new(pb::Secret {
                name: "opaque".into(),
                kind: Some(pb::secret::Kind::Opaque(pb::Opaque::default())),
                ..Default::default()
            }),
        );
        res
    }

    fn https_listener(name: &str, port: u32, secrets: &[&str]) -> pb::Listener {
        pb::Listener {
            name: name.into(),
            port,
            protocol: pb::Protocol::Https as i32,
            tls: Some(pb::ListenerTls {
                certificate_secrets: secrets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validate_tls_secrets_listeners_and_routes() {
        let c = Compiler::new();
        let res = tls_resources();
        let a = self_signed(&["a.test"]);
        let b = self_signed(&["b.test"]);
        assert_eq!(c.validate_secret(&a.secret("s")), Ok(()));
        let mut mismatched = a.secret("s");
        if let Some(pb::secret::Kind::TlsCertificate(t)) = &mut mismatched.kind {
            t.private_key = b.key_pem.clone().into_bytes();
        }
        let err = c.validate_secret(&mismatched).unwrap_err();
        assert!(
            err.starts_with("tls_certificate.private_key: does not match"),
            "{err}"
        );
        let mut no_key = a.secret("s");
        if let Some(pb::secret::Kind::TlsCertificate(t)) = &mut no_key.kind {
            t.private_key.clear();
        }
        assert_eq!(
            c.validate_secret(&no_key).unwrap_err(),
            "tls_certificate.private_key: no private key found"
        );
        let bad_pem = pb::Secret {
            name: "s".into(),
            kind: Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                certificate_chain: b"not pem".to_vec(),
                private_key: a.key_pem.clone().into_bytes(),
            })),
            ..Default::default()
        };
        assert_eq!(
            c.validate_secret(&bad_pem).unwrap_err(),
            "tls_certificate.certificate_chain: no certificate found"
        );
        let empty_ca = pb::Secret {
            name: "ca".into(),
            kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle::default())),
            ..Default::default()
        };
        assert!(
            c.validate_secret(&empty_ca)
                .unwrap_err()
                .starts_with("ca_bundle.pem:")
        );
        assert_eq!(c.validate_secret(&res.secrets["opaque"]), Ok(()));

        let ok = https_listener("l", 443, &["cert-a", "cert-b"]);
        assert_eq!(c.validate_listener(&ok, &res), Ok(()));
        for (listener, want) in [
            (https_listener("l", 443, &[]), "tls.certificate_secrets: "),
            (
                pb::Listener {
                    tls: None,
                    ..https_listener("l", 443, &[])
                },
                "tls.certificate_secrets: ",
            ),
            (
                https_listener("l", 443, &["cert-a", "missing"]),
                "tls.certificate_secrets[1]: secret \"missing\" does not exist",
            ),
            (
                https_listener("l", 443, &["opaque"]),
                "tls.certificate_secrets[0]: secret \"opaque\" is not a TlsCertificate",
            ),
        ] {
            let err = c.validate_listener(&listener, &res).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }

        let mut route = forward_route("r", "backend");
        route.certificate_secret = "cert-a".into();
        assert_eq!(c.validate_route(&route, &res), Ok(()));
        route.certificate_secret = "opaque".into();
        let err = c.validate_route(&route, &res).unwrap_err();
        assert!(err.starts_with("certificate_secret: "), "{err}");
        route.certificate_secret = "missing".into();
        let err = c.validate_route(&route, &res).unwrap_err();
        assert!(err.starts_with("certificate_secret: "), "{err}");
    }

    /// The subject name of the certificate `port` serves for `sni` ("-" when none).
    fn served(snap: &Snapshot, port: u16, sni: Option<&str>) -> String {
        let Some(key) = snap.tls(port).and_then(|i| i.resolve(sni)) else {
            return "-".into();
        };
        let cert = rustls::pki_types::CertificateDer::from(key.cert[0].to_vec());
        ["a.test", "b.test", "c.test", "a2.test"]
            .into_iter()
            .find(|n| {
                let name = rustls::pki_types::ServerName::try_from(*n).unwrap();
                webpki::EndEntityCert::try_from(&cert)
                    .unwrap()
                    .verify_is_valid_for_subject_name(&name)
                    .is_ok()
            })
            .unwrap_or("?")
            .into()
    }

    #[test]
    fn compiles_sni_indexes_incrementally() {
        let mut c = Compiler::new();
        let mut res = tls_resources();
        res.listeners.insert(
            "https".into(),
            Arc::new(https_listener(
                "https",
                8443,
                &["missing", "cert-a", "cert-b"],
            )),
        );
        // Same port, other protocol: left out (it sorts after "https").
        res.add_http_listener("plain", 8443);
        let c_cert = self_signed(&["c.test"]);
        res.secrets
            .insert("cert-c".into(), Arc::new(c_cert.secret("cert-c")));
        let mut route = forward_route("r", "backend");
        route.listeners = vec!["https".into(), "http".into()];
        route.hostnames = vec!["*.example.com".into()];
        route.certificate_secret = "cert-c".into();
        res.routes.insert("r".into(), Arc::new(route));
        let snap = c.compile(&res);
        assert_eq!(
            snap.ports().collect::<Vec<_>>(),
            vec![
                (8080, &["http".to_string()][..]),
                (8443, &["https".to_string()][..])
            ]
        );
        assert!(snap.tls(8080).is_none());
        // The missing secret is skipped: cert-a is the default.
        assert_eq!(served(&snap, 8443, None), "a.test");
        assert_eq!(served(&snap, 8443, Some("b.test")), "b.test");
        assert_eq!(served(&snap, 8443, Some("x.example.com")), "c.test");
        assert_eq!(served(&snap, 8443, Some("other.test")), "a.test");

        // Rotating a secret changes what is served without a listener or route change.
        let a2 = self_signed(&["a.test", "a2.test"]);
        res.secrets
            .insert("cert-a".into(), Arc::new(a2.secret("cert-a")));
        let changed = Changed {
            secrets: ["cert-a".to_string()].into(),
            ..Default::default()
        };
        let snap2 = c.compile_changes(&res, &changed);
        let old = snap.tls(8443).and_then(|i| i.resolve(None)).unwrap();
        let new = snap2.tls(8443).and_then(|i| i.resolve(None)).unwrap();
        assert!(!Arc::ptr_eq(old, new));
        assert_eq!(served(&snap2, 8443, Some("a2.test")), "a.test");
        // The untouched certificate keeps its key.
        let b_old = snap
            .tls(8443)
            .and_then(|i| i.resolve(Some("b.test")))
            .unwrap();
        let b_new = snap2
            .tls(8443)
            .and_then(|i| i.resolve(Some("b.test")))
            .unwrap();
        assert!(Arc::ptr_eq(b_old, b_new));

        // Dropping the route's certificate falls back to the listener certificates.
        let mut route = res.routes.get("r").expect("held");
        route.certificate_secret.clear();
        res.routes.insert("r".into(), Arc::new(route));
        let changed = Changed {
            routes: ["r".to_string()].into(),
            ..Default::default()
        };
        let snap3 = c.compile_changes(&res, &changed);
        assert_eq!(served(&snap3, 8443, Some("x.example.com")), "a.test");
        // Removing every certificate secret leaves the port with no certificate (fail closed).
        let changed = Changed {
            secrets: ["cert-a".to_string(), "cert-b".to_string()].into(),
            ..Default::default()
        };
        res.secrets.remove("cert-a");
        res.secrets.remove("cert-b");
        let snap4 = c.compile_changes(&res, &changed);
        assert_eq!(served(&snap4, 8443, None), "-");
        assert_eq!(served(&snap4, 8443, Some("b.test")), "-");
        let full = Compiler::new().compile(&res);
        assert_eq!(served(&full, 8443, Some("b.test")), "-");
    }

    /// Which route and cluster endpoint serve `path` on port 8080 (or "404").
    fn serve(snap: &Snapshot, path: &str) -> String {
        let req = http::Request::builder().uri(path).body(()).unwrap();
        let host = crate::router::NormalizedHost::new("example.com");
        let view = crate::router::RequestView::new(&req, &host, [127, 0, 0, 1].into());
        let Some(index) = snap.port(8080) else {
            return "no port".into();
        };
        match index.lookup(&view) {
            crate::router::Lookup::Matched(e) => {
                let cluster = match &e.route.action {
                    crate::router::RouteAction::Forward(f) => f
                        .backends
                        .select(&view, &mut fastrand::Rng::with_seed(1))
                        .and_then(|b| snap.cluster(&b.cluster))
                        .and_then(|c| c.pick())
                        .map(|ep| ep.authority.to_string())
                        .unwrap_or_else(|| "no endpoint".into()),
                    _ => "direct".into(),
                };
                format!("{} -> {cluster}", e.route.name)
            }
            _ => "404".into(),
        }
    }

    #[test]
    fn incremental_compiles_match_full_compiles() {
        let route = |name: &str, path: &str, cluster: &str| {
            let mut r = forward_route(name, cluster);
            r.matches = vec![pb::RouteMatch {
                path: Some(pb::PathMatch {
                    kind: pb::path_match::Kind::Prefix as i32,
                    value: path.into(),
                }),
                ..Default::default()
            }];
            Arc::new(r)
        };
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let mut incremental = Compiler::new();
        let mut res = resources();
        res.routes.insert("a".into(), route("a", "/a", "backend"));
        res.routes.insert("b".into(), route("b", "/b", "backend"));
        incremental.compile(&res);
        // Each step: the incremental snapshot serves what is expected, and what a fresh full
        // compile of the same resources serves.
        let mut step = |res: &Resources, changed: Changed, expected: [&str; 4]| {
            let inc = incremental.compile_changes(res, &changed);
            let full = Compiler::new().compile(res);
            for (path, want) in ["/a", "/b", "/c", "/"].into_iter().zip(expected) {
                assert_eq!(serve(&inc, path), want, "{path} after {changed:?}");
                assert_eq!(serve(&full, path), want, "{path} (full compile)");
            }
            assert_eq!(inc.route_count(), full.route_count());
        };

        // A cluster's endpoints change.
        res.add_cluster("backend", &[("127.0.0.2", 9001)]);
        let changed = Changed {
            clusters: names(&["backend"]),
            ..Default::default()
        };
        let ab = ["a -> 127.0.0.2:9001", "b -> 127.0.0.2:9001", "404", "404"];
        step(&res, changed, ab);

        // A route is added with a new cluster; another moves to another path.
        res.add_cluster("other", &[("127.0.0.3", 9002)]);
        res.routes.insert("c".into(), route("c", "/c", "other"));
        res.routes.insert("b".into(), route("b", "/", "other"));
        let changed = Changed {
            clusters: names(&["other"]),
            routes: names(&["b", "c"]),
            ..Default::default()
        };
        let moved = [
            "a -> 127.0.0.2:9001",
            "b -> 127.0.0.3:9002",
            "c -> 127.0.0.3:9002",
            "b -> 127.0.0.3:9002",
        ];
        step(&res, changed.clone(), moved);

        // The route and the cluster go away.
        res.routes.remove("c");
        res.routes.remove("b");
        res.clusters.remove("other");
        let only_a = ["a -> 127.0.0.2:9001", "404", "404", "404"];
        step(&res, changed, only_a);

        // The listener moves to another port and back: everything is re-indexed.
        let listeners = Changed {
            listeners: true,
            ..Default::default()
        };
        res.add_http_listener("http", 8081);
        step(&res, listeners.clone(), ["no port"; 4]);
        res.add_http_listener("http", 8080);
        step(&res, listeners, only_a);

        // Nothing changed: the previous tables serve.
        step(&res, Changed::default(), only_a);
    }

    #[test]
    fn compile_reuses_unchanged_routes_and_clusters() {
        let mut c = Compiler::new();
        let mut res = resources();
        for i in 0..3 {
            let name = format!("r{i}");
            res.routes
                .insert(name.clone(), Arc::new(forward_route(&name, "backend")));
        }
        let snap = c.compile(&res);
        assert_eq!(snap.route_count(), 3);
        let r0 = c.compiled_route("r0").unwrap().clone();
        let r1 = c.compiled_route("r1").unwrap().clone();
        let cluster = snap.cluster("backend").unwrap().clone();
        // The route's backend names the cluster with the compiled cluster's own allocation.
        let crate::router::RouteAction::Forward(f) = &r0.action else {
            panic!("forward route")
        };
        assert!(Arc::ptr_eq(&f.backends.backends[0].cluster, &cluster.name));
        // Routes share one allocation of the listener name they attach to.
        assert!(Arc::ptr_eq(&r0.listeners[0], &r1.listeners[0]));

        // Replace r1 with an equal but new resource: only r1 is recompiled.
        res.routes
            .insert("r1".into(), Arc::new(forward_route("r1", "backend")));
        res.routes.remove("r2");
        let snap2 = c.compile(&res);
        assert_eq!(snap2.route_count(), 2);
        assert!(Arc::ptr_eq(&r0, c.compiled_route("r0").unwrap()));
        assert!(!Arc::ptr_eq(&r1, c.compiled_route("r1").unwrap()));
        assert!(c.compiled_route("r2").is_none());
        assert!(Arc::ptr_eq(&cluster, snap2.cluster("backend").unwrap()));
        assert_eq!(
            snap2.ports().collect::<Vec<_>>(),
            vec![(8080, &["http".to_string()][..])]
        );
    }

    #[test]
    fn compile_skips_invalid_without_panicking() {
        let mut c = Compiler::new();
        let mut res = resources();
        let mut bad = forward_route("bad", "backend");
        bad.action = None;
        res.routes.insert("bad".into(), Arc::new(bad));
        res.listeners.insert(
            "tcp".into(),
            Arc::new(pb::Listener {
                name: "tcp".into(),
                port: 0,
                ..Default::default()
            }),
        );
        let snap = c.compile(&res);
        assert_eq!(snap.route_count(), 0);
        assert_eq!(snap.ports().count(), 1);
        assert_eq!(Snapshot::empty().route_count(), 0);
    }

    fn tls_cluster(ca: &str, client: &str) -> pb::Cluster {
        pb::Cluster {
            name: "up".into(),
            endpoints: vec![pb::Endpoint {
                address: "127.0.0.1".into(),
                port: 8443,
                weight: 1,
            }],
            tls: Some(pb::UpstreamTls {
                ca_secret: ca.into(),
                client_certificate_secret: client.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ca_secret(name: &str) -> Arc<pb::Secret> {
        Arc::new(pb::Secret {
            name: name.into(),
            kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                pem: self_signed(&["ca"]).cert_pem.into_bytes(),
            })),
            ..Default::default()
        })
    }

    #[test]
    fn validate_cluster_tls_secrets() {
        let c = Compiler::new();
        let mut res = tls_resources();
        res.secrets.insert("ca".into(), ca_secret("ca"));
        assert_eq!(
            c.validate_cluster(&tls_cluster("ca", "cert-a"), &res),
            Ok(())
        );
        assert_eq!(c.validate_cluster(&tls_cluster("", ""), &res), Ok(()));
        for (cluster, error) in [
            (
                tls_cluster("missing", ""),
                "tls.ca_secret: secret \"missing\" does not exist",
            ),
            (
                tls_cluster("cert-a", ""),
                "tls.ca_secret: secret \"cert-a\" is not a CaBundle",
            ),
            (
                tls_cluster("ca", "missing"),
                "tls.client_certificate_secret: secret \"missing\" does not exist",
            ),
            (
                tls_cluster("", "opaque"),
                "tls.client_certificate_secret: secret \"opaque\" is not a TlsCertificate",
            ),
        ] {
            assert_eq!(c.validate_cluster(&cluster, &res).unwrap_err(), error);
        }
        let mut bad_name = tls_cluster("", "");
        if let Some(t) = &mut bad_name.tls {
            t.server_name = "bad name".into();
        }
        assert!(
            c.validate_cluster(&bad_name, &res)
                .unwrap_err()
                .starts_with("tls.server_name: ")
        );
        // A SAN entry of neither kind, or an empty one, is refused at snapshot time.
        let mut bad_san = tls_cluster("", "");
        if let Some(t) = &mut bad_san.tls {
            t.subject_alt_names = vec![
                pb::SubjectAltName {
                    kind: Some(pb::subject_alt_name::Kind::Uri("spiffe://td/sa".into())),
                },
                pb::SubjectAltName { kind: None },
            ];
        }
        assert_eq!(
            c.validate_cluster(&bad_san, &res).unwrap_err(),
            "tls.subject_alt_names[1]: one of hostname or uri must be set"
        );
        if let Some(t) = &mut bad_san.tls {
            t.subject_alt_names[1].kind = Some(pb::subject_alt_name::Kind::Hostname(String::new()));
        }
        assert_eq!(
            c.validate_cluster(&bad_san, &res).unwrap_err(),
            "tls.subject_alt_names[1]: hostname: empty"
        );
    }

    #[test]
    fn tls_clusters_follow_their_secrets() {
        let mut c = Compiler::new();
        let mut res = resources();
        res.secrets.insert("ca".into(), ca_secret("ca"));
        res.clusters
            .insert("up".into(), Arc::new(tls_cluster("ca", "")));
        let snap = c.compile(&res);
        let first = snap.cluster("up").expect("compiled").clone();
        assert_eq!(first.scheme, http::uri::Scheme::HTTPS);
        assert_eq!(
            snap.cluster("backend").expect("plain").scheme,
            http::uri::Scheme::HTTP
        );

        // Another Secret changing leaves the cluster (and its client) as it was.
        res.secrets.insert("other".into(), ca_secret("other"));
        let changed = Changed {
            secrets: ["other".to_string()].into(),
            ..Changed::default()
        };
        let snap = c.compile_changes(&res, &changed);
        assert!(Arc::ptr_eq(snap.cluster("up").expect("kept"), &first));

        // Rotating the CA recompiles it with the new bundle.
        let rotated = ca_secret("ca");
        res.secrets.insert("ca".into(), rotated.clone());
        let changed = Changed {
            secrets: ["ca".to_string()].into(),
            ..Changed::default()
        };
        let snap = c.compile_changes(&res, &changed);
        let second = snap.cluster("up").expect("recompiled");
        assert!(!Arc::ptr_eq(second, &first));
        let ca = second.tls.as_ref().and_then(|t| t.ca.as_ref()).expect("ca");
        assert!(Arc::ptr_eq(ca, &rotated));

        // The CA disappearing takes the cluster out (fail closed, never plaintext).
        res.secrets.remove("ca");
        let snap = c.compile_changes(&res, &changed);
        assert!(snap.cluster("up").is_none());
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    fn resources(disable_metrics: bool, metrics_name: &str) -> Resources {
        let mut res = Resources::default();
        res.add_cluster("backend", &[("127.0.0.1", 9000)]);
        res.listeners.insert(
            "http".into(),
            Arc::new(pb::Listener {
                name: "http".into(),
                port: 8080,
                protocol: pb::Protocol::Http as i32,
                http: Some(pb::HttpSettings {
                    metrics: Some(pb::MetricsEndpoint {
                        path: String::new(),
                        host: "metrics.test".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        res.routes.insert(
            "route/default/api".into(),
            Arc::new(pb::Route {
                name: "route/default/api".into(),
                metrics_name: metrics_name.into(),
                listeners: vec!["http".into()],
                disable_metrics,
                action: Some(pb::route::Action::Forward(pb::ForwardAction {
                    backends: vec![pb::WeightedBackend {
                        cluster: "backend".into(),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }),
        );
        res
    }

    #[test]
    fn routes_get_stats_by_metrics_name_and_listeners_their_endpoint() {
        let metrics = Arc::new(Metrics::new());
        let mut c = Compiler::with_metrics(metrics);
        let snap = c.compile(&resources(false, "api"));
        let route = c.compiled_route("route/default/api").unwrap().clone();
        let stats = route.stats.clone().expect("metrics enabled");
        assert_eq!(&**stats.name(), "api");
        let endpoints = snap.metrics_endpoints();
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints[0].matches(8080, "/metrics", "metrics.test"));

        // A changed route keeps the same series; disabling metrics drops them.
        let mut changed = resources(false, "api");
        let mut r = changed.routes.get("route/default/api").expect("held");
        r.priority = 3;
        changed
            .routes
            .insert("route/default/api".into(), Arc::new(r));
        c.compile(&changed);
        let again = c.compiled_route("route/default/api").unwrap();
        assert!(!Arc::ptr_eq(again, &route), "recompiled");
        assert!(Arc::ptr_eq(again.stats.as_ref().unwrap(), &stats));
        c.compile(&resources(true, "api"));
        assert!(
            c.compiled_route("route/default/api")
                .unwrap()
                .stats
                .is_none()
        );
        // Without metrics_name the resource name labels the series.
        c.compile(&resources(false, ""));
        let unnamed = c.compiled_route("route/default/api").unwrap();
        assert_eq!(
            &**unnamed.stats.as_ref().unwrap().name(),
            "route/default/api"
        );

        // A bad endpoint is refused with the field named.
        let mut bad = resources(false, "api");
        let mut l = (*bad.listeners["http"]).clone();
        l.http.as_mut().unwrap().metrics.as_mut().unwrap().path = "metrics".into();
        bad.listeners.insert("http".into(), Arc::new(l.clone()));
        let err = c.validate_listener(&l, &bad).unwrap_err();
        assert!(err.starts_with("http.metrics.path:"), "{err}");
    }
}

#[cfg(test)]
mod l4_tests {
    use super::*;

    fn listener(
        name: &str,
        port: u32,
        protocol: pb::Protocol,
        tls: Option<pb::ListenerTls>,
    ) -> Arc<pb::Listener> {
        Arc::new(pb::Listener {
            name: name.into(),
            port,
            protocol: protocol as i32,
            tls,
            ..Default::default()
        })
    }

    fn l4_route(name: &str, listener: &str, order: i64, cluster: &str) -> Arc<pb::Route> {
        Arc::new(pb::Route {
            name: name.into(),
            listeners: vec![listener.into()],
            creation_order: order,
            action: Some(pb::route::Action::Forward(pb::ForwardAction {
                backends: vec![pb::WeightedBackend {
                    cluster: cluster.into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    fn resources() -> Resources {
        let mut res = Resources::default();
        res.add_http_listener("http", 8080)
            .add_cluster("backend", &[("127.0.0.1", 9)]);
        let passthrough = pb::ListenerTls {
            mode: pb::TlsMode::Passthrough as i32,
            ..Default::default()
        };
        for l in [
            listener("tcp", 9000, pb::Protocol::Tcp, None),
            listener("udp", 9000, pb::Protocol::Udp, None),
            // Same TCP port as "tcp" with another protocol, later by name: left out.
            listener("z-http", 9000, pb::Protocol::Http, None),
            listener("tls", 9443, pb::Protocol::Tls, Some(passthrough)),
        ] {
            res.listeners.insert(l.name.clone(), l);
        }
        for r in [
            l4_route("tcp-new", "tcp", 20, "backend"),
            l4_route("tcp-old", "tcp", 10, "backend"),
            l4_route("udp", "udp", 0, "backend"),
            l4_route("unresolved", "tls", 0, ""),
        ] {
            res.routes.insert(r.name.clone(), r);
        }
        res
    }

    #[test]
    fn l4_listeners_get_ports_kinds_and_routes() {
        let res = resources();
        let c = Compiler::new();
        assert_eq!(
            c.validate_route(&res.routes.get("unresolved").expect("held"), &res),
            Ok(()),
            "an unresolved backend is valid"
        );
        let mut c = Compiler::new();
        let snap = c.compile(&res);
        let ports: Vec<(u16, Vec<String>)> = snap.ports().map(|(p, n)| (p, n.to_vec())).collect();
        assert_eq!(
            ports,
            [
                (8080, vec!["http".to_string()]),
                (9000, vec!["tcp".to_string()]),
                (9443, vec!["tls".to_string()]),
            ]
        );
        assert_eq!(
            snap.port_conflicts(),
            [(
                "z-http".to_string(),
                "port: 9000 is already used by listener \"tcp\" with protocol PROTOCOL_TCP; a port serves one protocol (only TCP and UDP may share a number)".to_string()
            )]
        );
        let udp: Vec<(u16, Vec<String>)> = snap.udp_ports().map(|(p, n)| (p, n.to_vec())).collect();
        assert_eq!(udp, [(9000, vec!["udp".to_string()])]);
        assert_eq!(snap.port_kind(8080), Some(PortKind::Http));
        assert_eq!(snap.port_kind(9000), Some(PortKind::Tcp));
        assert_eq!(snap.port_kind(9443), Some(PortKind::Tls));
        assert_eq!(snap.port_kind(1), None);
        let tcp = snap.l4_port(9000).and_then(|p| p.first()).unwrap();
        let names: Vec<&str> = tcp.routes.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["tcp-old", "tcp-new"]);
        let udp = snap.udp_port(9000).and_then(|p| p.first()).unwrap();
        assert_eq!(udp.first_route().map(|r| &*r.name), Some("udp"));
        // L4 routes stay out of the HTTP index.
        assert!(snap.port(9000).is_none());
    }

    #[test]
    fn l4_tables_follow_route_changes_only_when_they_touch_l4() {
        let mut res = resources();
        let mut c = Compiler::new();
        let first = c.compile(&res);
        // An HTTP route change keeps the L4 tables.
        res.add_cluster("other", &[("127.0.0.1", 10)]);
        let mut http = (*l4_route("web", "http", 0, "backend")).clone();
        http.matches = Vec::new();
        res.routes.insert("web".into(), Arc::new(http));
        let changed = Changed {
            routes: ["web".to_string()].into(),
            ..Default::default()
        };
        let second = c.compile_changes(&res, &changed);
        assert!(Arc::ptr_eq(&first.l4, &second.l4));
        // Making tcp-new the oldest changes the winner.
        res.routes
            .insert("tcp-new".into(), l4_route("tcp-new", "tcp", 1, "backend"));
        let changed = Changed {
            routes: ["tcp-new".to_string()].into(),
            ..Default::default()
        };
        let third = c.compile_changes(&res, &changed);
        let winner = third
            .l4_port(9000)
            .and_then(|p| p.first())
            .and_then(|l| l.first_route())
            .map(|r| r.name.to_string());
        assert_eq!(winner.as_deref(), Some("tcp-new"));
        // Removing the route removes it from the table.
        res.routes.remove("tcp-new");
        let changed = Changed {
            routes: ["tcp-new".to_string()].into(),
            ..Default::default()
        };
        let fourth = c.compile_changes(&res, &changed);
        let names: Vec<String> = fourth.l4_port(9000).unwrap().listeners[0]
            .routes
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, ["tcp-old"]);
    }
}
