//! The immutable compiled configuration a request is served from, and the Compiler that validates
//! resources and builds snapshots incrementally (unchanged routes and clusters are reused).

use crate::resources::Resources;
use crate::router::host::validate_hostname;
use crate::router::{
    CompiledRoute, HostPattern, IndexBuilder, ListenerInfo, PortIndex, RouteTable,
};
use crate::upstream::{Clients, ClusterState, CompiledCluster, cluster};
use sluice_proto::config as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Compiled, immutable configuration. Requests load it once and keep it to completion.
#[derive(Debug, Default)]
pub struct Snapshot {
    table: RouteTable,
    /// Shared with the next snapshot until a cluster changes (copy on write).
    clusters: Arc<HashMap<Arc<str>, Arc<CompiledCluster>>>,
    /// Port -> names of the listeners on it.
    ports: BTreeMap<u16, Vec<String>>,
    route_count: usize,
}

/// Names whose resources were upserted or removed since the previous compile.
#[derive(Debug, Default, Clone)]
pub struct Changed {
    pub listeners: bool,
    pub clusters: BTreeSet<String>,
    pub routes: BTreeSet<String>,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        !self.listeners && self.clusters.is_empty() && self.routes.is_empty()
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
    /// The pieces of the last snapshot, reused by the next one.
    last: Snapshot,
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
            last: Snapshot::default(),
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

    /// Builds a snapshot from scratch. Never panics: a resource that fails to compile (it
    /// should have been rejected by validation) is left out and logged.
    pub fn compile(&mut self, resources: &Resources) -> Arc<Snapshot> {
        let mut all = Changed {
            listeners: true,
            clusters: resources.clusters.keys().cloned().collect(),
            routes: resources.routes.keys().cloned().collect(),
        };
        all.clusters.extend(self.clusters.keys().cloned());
        all.routes.extend(self.routes.keys().cloned());
        self.compile_changes(resources, &all)
    }

    /// Builds the next snapshot when only the `changed` names differ from the previous compile:
    /// the cost follows the size of the change, not of the configuration (unchanged clusters
    /// and host tables are shared with the previous snapshot).
    pub fn compile_changes(&mut self, resources: &Resources, changed: &Changed) -> Arc<Snapshot> {
        let mut clusters = self.last.clusters.clone();
        for name in &changed.clusters {
            let key: Arc<str> = Arc::from(name.as_str());
            let Some(pb_cluster) = resources.clusters.get(name) else {
                self.clusters.remove(name);
                self.cluster_states.remove(name);
                Arc::make_mut(&mut clusters).remove(&key);
                continue;
            };
            if self
                .clusters
                .get(name)
                .is_some_and(|(old, _)| Arc::ptr_eq(old, pb_cluster))
            {
                continue;
            }
            let state = self.cluster_states.entry(name.clone()).or_default().clone();
            match CompiledCluster::compile(pb_cluster, state, &self.clients) {
                Ok(c) => {
                    let c = Arc::new(c);
                    Arc::make_mut(&mut clusters).insert(key, c.clone());
                    self.clusters.insert(name.clone(), (pb_cluster.clone(), c));
                }
                Err(error) => {
                    tracing::warn!(cluster = %name, %error, "cluster left out of snapshot");
                    self.clusters.remove(name);
                    Arc::make_mut(&mut clusters).remove(&key);
                }
            }
        }

        let mut upserted = Vec::new();
        let mut removed: Vec<Arc<str>> = Vec::new();
        for name in &changed.routes {
            let Some(pb_route) = resources.routes.get(name) else {
                if self.routes.remove(name).is_some() {
                    removed.push(Arc::from(name.as_str()));
                }
                continue;
            };
            if self
                .routes
                .get(name)
                .is_some_and(|(old, _)| Arc::ptr_eq(old, pb_route))
            {
                continue;
            }
            match CompiledRoute::compile(pb_route) {
                Ok(r) => {
                    let r = Arc::new(r);
                    upserted.push(r.clone());
                    self.routes.insert(name.clone(), (pb_route.clone(), r));
                }
                Err(error) => {
                    tracing::warn!(route = %name, %error, "route left out of snapshot");
                    if self.routes.remove(name).is_some() {
                        removed.push(Arc::from(name.as_str()));
                    }
                }
            }
        }

        let (table, ports) = if changed.listeners {
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
            // Listener changes can move every route: index them all (rare).
            let routes: Vec<Arc<CompiledRoute>> =
                self.routes.values().map(|(_, r)| r.clone()).collect();
            (self.index.build(&listeners, &routes), ports)
        } else if upserted.is_empty() && removed.is_empty() {
            (self.last.table.clone(), self.last.ports.clone())
        } else {
            (
                self.index.update(&upserted, &removed),
                self.last.ports.clone(),
            )
        };
        self.last = Snapshot {
            table,
            clusters,
            ports,
            route_count: self.routes.len(),
        };
        Arc::new(Snapshot {
            table: self.last.table.clone(),
            clusters: self.last.clusters.clone(),
            ports: self.last.ports.clone(),
            route_count: self.last.route_count,
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
