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
