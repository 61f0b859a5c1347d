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
