//! Kubernetes object metadata, reduced to what translation and status need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The namespace of an object whose manifest names none (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// `metadata` of a manifest. Other Kubernetes fields (uid, resourceVersion, managedFields, ...) are
/// accepted and ignored: objects read back from a cluster carry them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339, set by the API server; Gateway API conflicts go to the oldest object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}
