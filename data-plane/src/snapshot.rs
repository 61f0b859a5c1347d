//! The immutable compiled configuration a request is served from, and the Compiler that validates
//! resources and builds snapshots incrementally (unchanged routes and clusters are reused).

use crate::resources::Resources;
use crate::router::host::validate_hostname;
use crate::router::{
    CompiledRoute, HostPattern, IndexBuilder, ListenerInfo, PortIndex, RouteTable,
};
use crate::upstream::{Clients, ClusterState, CompiledCluster, cluster};
use sluice_proto::config as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Compiled, immutable configuration. Requests load it once and keep it to completion.
#[derive(Debug, Default)]
pub struct Snapshot {
    table: RouteTable,
    clusters: HashMap<Arc<str>, Arc<CompiledCluster>>,
    /// Port -> names of the listeners on it.
    ports: BTreeMap<u16, Vec<String>>,
    route_count: usize,
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

    /// Ports to listen on, each with the names of its listeners.
    pub fn ports(&self) -> impl Iterator<Item = (u16, &[String])> {
        self.ports.iter().map(|(p, names)| (*p, names.as_slice()))
    }
}

/// Validates resources and compiles snapshots, memoising compiled routes and clusters by name and
/// `Arc` identity so a one-route change at 10k routes recompiles one route.
pub struct Compiler {
    routes: HashMap<String, (Arc<pb::Route>, Arc<CompiledRoute>)>,
    clusters: HashMap<String, (Arc<pb::Cluster>, Arc<CompiledCluster>)>,
    /// Survives cluster changes (round-robin position); dropped when the cluster is removed.
    cluster_states: HashMap<String, Arc<ClusterState>>,
    clients: Arc<Clients>,
    /// Rebuilds only the host tables a change touches.
    index: IndexBuilder,
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
            cluster_states: HashMap::new(),
            clients: Arc::new(Clients::default()),
            index: IndexBuilder::default(),
        }
    }

    pub fn validate_listener(&self, l: &pb::Listener) -> Result<(), String> {
        if l.name.is_empty() {
            return Err("name: empty".into());
        }
        if l.port == 0 || l.port > 65535 {
            return Err(format!("port: {} is not in 1..=65535", l.port));
        }
        match pb::Protocol::try_from(l.protocol) {
            Ok(pb::Protocol::Http) => {}
            Ok(p) => {
                return Err(format!(
                    "protocol {} is not supported by this data plane yet",
                    p.as_str_name()
                ));
            }
            Err(_) => return Err(format!("protocol: unknown value {}", l.protocol)),
        }
        validate_hostname(&l.hostname).map_err(|e| format!("hostname: {e}"))
    }

    pub fn validate_cluster(&self, c: &pb::Cluster) -> Result<(), String> {
        cluster::validate(c)
    }

    pub fn validate_secret(&self, s: &pb::Secret) -> Result<(), String> {
        if s.name.is_empty() {
            return Err("name: empty".into());
        }
        if s.kind.is_none() {
            return Err("kind: not set (tls_certificate, ca_bundle or opaque required)".into());
        }
        Ok(())
    }

    pub fn validate_route(&self, r: &pb::Route, resources: &Resources) -> Result<(), String> {
        let compiled = CompiledRoute::compile(r)?;
        for (i, l) in r.listeners.iter().enumerate() {
            if !resources.listeners.contains_key(l) {
                return Err(format!("listeners[{i}]: listener {l:?} does not exist"));
            }
        }
        if let Some(pb::route::Action::Forward(f)) = &r.action {
            for (i, b) in f.backends.iter().enumerate() {
                if !resources.clusters.contains_key(&b.cluster) {
                    return Err(format!(
                        "forward.backends[{i}].cluster: cluster {:?} does not exist",
                        b.cluster
                    ));
                }
            }
        }
        drop(compiled);
        Ok(())
    }

    /// Builds a snapshot. Never panics: a resource that fails to compile (it should have been
    /// rejected by validation) is left out and logged.
    pub fn compile(&mut self, resources: &Resources) -> Arc<Snapshot> {
        // Clusters first: reuse by pointer identity, keep state by name.
        self.clusters
            .retain(|name, _| resources.clusters.contains_key(name));
        self.cluster_states
            .retain(|name, _| resources.clusters.contains_key(name));
        let mut clusters = HashMap::with_capacity(resources.clusters.len());
        for (name, pb_cluster) in &resources.clusters {
            if let Some((old, compiled)) = self.clusters.get(name)
                && Arc::ptr_eq(old, pb_cluster)
            {
                clusters.insert(compiled.name.clone(), compiled.clone());
                continue;
            }
            let state = self.cluster_states.entry(name.clone()).or_default().clone();
            match CompiledCluster::compile(pb_cluster, state, &self.clients) {
                Ok(c) => {
                    let c = Arc::new(c);
                    clusters.insert(Arc::from(name.as_str()), c.clone());
                    self.clusters.insert(name.clone(), (pb_cluster.clone(), c));
                }
                Err(error) => {
                    tracing::warn!(cluster = %name, %error, "cluster left out of snapshot");
                    self.clusters.remove(name);
                }
            }
        }

        let mut routes = Vec::with_capacity(resources.routes.len());
        // BTreeMap iteration gives name order, the final precedence tie-break.
        for (name, pb_route) in &resources.routes {
            if let Some((old, compiled)) = self.routes.get(name)
                && Arc::ptr_eq(old, pb_route)
            {
                routes.push(compiled.clone());
                continue;
            }
            match CompiledRoute::compile(pb_route) {
                Ok(r) => {
                    let r = Arc::new(r);
                    routes.push(r.clone());
                    self.routes.insert(name.clone(), (pb_route.clone(), r));
                }
                Err(error) => {
                    tracing::warn!(route = %name, %error, "route left out of snapshot");
                    self.routes.remove(name);
                }
            }
        }

        // Every compiled route is memoised, so stale entries exist only if the memo is larger:
        // skip the O(n) scan in the common no-removal case.
        if self.routes.len() > routes.len() {
            self.routes
                .retain(|name, _| resources.routes.contains_key(name));
        }

        let mut listeners = Vec::with_capacity(resources.listeners.len());
        let mut ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (name, l) in &resources.listeners {
            if let Err(error) = self.validate_listener(l) {
                tracing::warn!(listener = %name, %error, "listener left out of snapshot");
                continue;
            }
            let Ok(port) = u16::try_from(l.port) else {
                continue;
            };
            ports.entry(port).or_default().push(name.clone());
            listeners.push(ListenerInfo {
                name: name.clone(),
                port,
                hostname: HostPattern::parse(&l.hostname),
            });
        }

        let table: RouteTable = self.index.build(&listeners, &routes);
        Arc::new(Snapshot {
            table,
            clusters,
            ports,
            route_count: routes.len(),
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

        let mut bad_listener = forward_route("r", "backend");
        bad_listener.listeners = vec!["http".into(), "nope".into()];
        let err = c.validate_route(&bad_listener, &res).unwrap_err();
        assert!(err.starts_with("listeners[1]:"), "{err}");

        let mut bad_status = forward_route("r", "backend");
        bad_status.action = Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 600,
            ..Default::default()
        }));
        let err = c.validate_route(&bad_status, &res).unwrap_err();
        assert!(err.starts_with("direct_response.status:"), "{err}");
    }

    #[test]
    fn validate_listener_and_secret() {
        let c = Compiler::new();
        let mut l = pb::Listener {
            name: "l".into(),
            port: 80,
            protocol: pb::Protocol::Http as i32,
            hostname: "*.example.com".into(),
            ..Default::default()
        };
        assert_eq!(c.validate_listener(&l), Ok(()));
        l.port = 0;
        assert!(c.validate_listener(&l).unwrap_err().starts_with("port:"));
        l.port = 70000;
        assert!(c.validate_listener(&l).unwrap_err().starts_with("port:"));
        l.port = 80;
        l.protocol = pb::Protocol::Tcp as i32;
        assert_eq!(
            c.validate_listener(&l).unwrap_err(),
            "protocol PROTOCOL_TCP is not supported by this data plane yet"
        );
        l.protocol = pb::Protocol::Http as i32;
        l.hostname = "bad host".into();
        assert!(
            c.validate_listener(&l)
                .unwrap_err()
                .starts_with("hostname:")
        );
        let s = pb::Secret {
            name: "s".into(),
            ..Default::default()
        };
        assert!(c.validate_secret(&s).unwrap_err().starts_with("kind:"));
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

        // Replace r1 with an equal but new Arc: only r1 is recompiled.
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
}
