//! The resources a data plane currently holds, as received from the control plane and validated.

use sluice_proto::config as pb;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every accepted resource by name. An unchanged resource keeps its `Arc` across updates, so
/// compilation can be memoised by pointer identity.
#[derive(Clone, Default, Debug)]
pub struct Resources {
    pub listeners: BTreeMap<String, Arc<pb::Listener>>,
    pub routes: BTreeMap<String, Arc<pb::Route>>,
    pub clusters: BTreeMap<String, Arc<pb::Cluster>>,
    pub secrets: BTreeMap<String, Arc<pb::Secret>>,
}

impl Resources {
    /// Adds a plain HTTP listener (tests, benchmarks and tools build resource sets this way).
    pub fn add_http_listener(&mut self, name: &str, port: u16) -> &mut Self {
        let listener = pb::Listener {
            name: name.into(),
            port: u32::from(port),
            protocol: pb::Protocol::Http as i32,
            ..Default::default()
        };
        self.listeners.insert(name.into(), Arc::new(listener));
        self
    }

    /// Adds a round-robin HTTP/1.1 cluster over `endpoints` (address, port).
    pub fn add_cluster(&mut self, name: &str, endpoints: &[(&str, u16)]) -> &mut Self {
        let cluster = pb::Cluster {
            name: name.into(),
            endpoints: endpoints
                .iter()
                .map(|(address, port)| pb::Endpoint {
                    address: (*address).into(),
                    port: u32::from(*port),
                    weight: 1,
                })
                .collect(),
            ..Default::default()
        };
        self.clusters.insert(name.into(), Arc::new(cluster));
        self
    }
}

/// Releases the spare capacity prost leaves in a decoded route's lists (a repeated field grows
/// by doubling from 4, so one match or one backend holds room for four): a held route lives as
/// long as it is served, and at 10,000 routes the slack was ~1 KiB per route.
pub fn compact_route(r: &mut pb::Route) {
    r.listeners.shrink_to_fit();
    r.hostnames.shrink_to_fit();
    r.allowed_methods.shrink_to_fit();
    r.mirrors.shrink_to_fit();
    r.middlewares.shrink_to_fit();
    r.matches.shrink_to_fit();
    for m in &mut r.matches {
        m.headers.shrink_to_fit();
        m.query_params.shrink_to_fit();
    }
    if let Some(pb::route::Action::Forward(f)) = &mut r.action {
        f.backends.shrink_to_fit();
    }
}

/// As `compact_route`, for a cluster's endpoint list.
pub fn compact_cluster(c: &mut pb::Cluster) {
    c.endpoints.shrink_to_fit();
}
