//! Gateway API (v1.6 standard channel) objects and the core kinds their translation reads
//! (Service, EndpointSlice), typed at the provider edge so a malformed object is rejected there
//! with the path of the offending field. Only the fields translation uses are typed; other
//! fields (status, experimental additions) are accepted and ignored.

use serde::Deserialize;

use super::meta::ObjectMeta;
use super::{Kind, ObjectKey};

pub mod core;
pub mod gateway;
pub mod policy;
pub mod route;

pub use core::{EndpointSlice, ServiceSpec};
pub use gateway::{GatewayClassSpec, GatewaySpec};
pub use policy::{BackendTlsPolicySpec, ReferenceGrantSpec};
pub use route::{GrpcRouteSpec, HttpRouteSpec, L4RouteSpec};

/// A manifest with `metadata` and `spec`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Resource<S> {
    pub metadata: ObjectMeta,
    pub spec: S,
}

/// One typed Gateway API or core object.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiObject {
    GatewayClass(Resource<GatewayClassSpec>),
    Gateway(Resource<GatewaySpec>),
    HttpRoute(Resource<HttpRouteSpec>),
    GrpcRoute(Resource<GrpcRouteSpec>),
    /// TLSRoute, TCPRoute and UDPRoute share one shape (TCP and UDP have no hostnames).
    TlsRoute(Resource<L4RouteSpec>),
    TcpRoute(Resource<L4RouteSpec>),
    UdpRoute(Resource<L4RouteSpec>),
    ReferenceGrant(Resource<ReferenceGrantSpec>),
    BackendTlsPolicy(Resource<BackendTlsPolicySpec>),
    Service(Resource<ServiceSpec>),
    EndpointSlice(EndpointSlice),
}

impl ApiObject {
    pub fn kind(&self) -> Kind {
        match self {
            ApiObject::GatewayClass(_) => Kind::GatewayClass,
            ApiObject::Gateway(_) => Kind::Gateway,
            ApiObject::HttpRoute(_) => Kind::HttpRoute,
            ApiObject::GrpcRoute(_) => Kind::GrpcRoute,
            ApiObject::TlsRoute(_) => Kind::TlsRoute,
            ApiObject::TcpRoute(_) => Kind::TcpRoute,
            ApiObject::UdpRoute(_) => Kind::UdpRoute,
            ApiObject::ReferenceGrant(_) => Kind::ReferenceGrant,
            ApiObject::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
            ApiObject::Service(_) => Kind::Service,
            ApiObject::EndpointSlice(_) => Kind::EndpointSlice,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            ApiObject::GatewayClass(o) => &o.metadata,
            ApiObject::Gateway(o) => &o.metadata,
            ApiObject::HttpRoute(o) => &o.metadata,
            ApiObject::GrpcRoute(o) => &o.metadata,
            ApiObject::TlsRoute(o) | ApiObject::TcpRoute(o) | ApiObject::UdpRoute(o) => &o.metadata,
            ApiObject::ReferenceGrant(o) => &o.metadata,
            ApiObject::BackendTlsPolicy(o) => &o.metadata,
            ApiObject::Service(o) => &o.metadata,
            ApiObject::EndpointSlice(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let meta = self.metadata();
        let namespace = if kind.is_namespaced() {
            meta.namespace.as_str()
        } else {
            ""
        };
        ObjectKey::new(kind, namespace, &meta.name)
    }

    /// Types a manifest of a kind this module covers; `None` for other kinds.
    pub fn from_manifest(kind: Kind, doc: &serde_json::Value) -> Option<Result<ApiObject, String>> {
        fn typed<T: serde::de::DeserializeOwned>(doc: &serde_json::Value) -> Result<T, String> {
            serde_path_to_error::deserialize(doc).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                }
            })
        }
        let object = match kind {
            Kind::GatewayClass => typed(doc).map(ApiObject::GatewayClass),
            Kind::Gateway => typed(doc).map(ApiObject::Gateway),
            Kind::HttpRoute => typed(doc).map(ApiObject::HttpRoute),
            Kind::GrpcRoute => typed(doc).map(ApiObject::GrpcRoute),
            Kind::TlsRoute => typed(doc).map(ApiObject::TlsRoute),
            Kind::TcpRoute => typed(doc).map(ApiObject::TcpRoute),
            Kind::UdpRoute => typed(doc).map(ApiObject::UdpRoute),
            Kind::ReferenceGrant => typed(doc).map(ApiObject::ReferenceGrant),
            Kind::BackendTlsPolicy => typed(doc).map(ApiObject::BackendTlsPolicy),
            Kind::Service => typed(doc).map(ApiObject::Service),
            Kind::EndpointSlice => typed(doc).map(ApiObject::EndpointSlice),
            _ => return None,
        };
        Some(object)
    }
}

/// `parentRefs[]` of a route, and BackendTLSPolicy ancestors. Group defaults to
/// gateway.networking.k8s.io, kind to Gateway, namespace to the route's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// `backendRefs[]` (without filters). Group defaults to core, kind to Service, namespace to the
/// route's; weight to 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A reference to an object (certificateRefs, caCertificateRefs): group and kind as written;
/// SecretObjectReference defaults kind to Secret, ObjectReference requires it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A label selector (`matchLabels` and `matchExpressions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement; an unknown operator matches nothing.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_carry_the_field_path() {
        let doc = json!({"metadata": {"name": "r"}, "spec": {"parentRefs": [{"name": "gw", "port": "eighty"}]}});
        let e = ApiObject::from_manifest(Kind::HttpRoute, &doc)
            .unwrap()
            .unwrap_err();
        assert!(
            e.starts_with("spec.parentRefs[0].port: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn label_selectors() {
        let labels = [("team".to_owned(), "a".to_owned())].into();
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(sel(json!({"matchLabels": {"team": "a"}})).matches(&labels));
        assert!(!sel(json!({"matchLabels": {"team": "b"}})).matches(&labels));
        assert!(
            sel(json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}))
                .matches(&labels)
        );
        assert!(
            !sel(json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}))
                .matches(&labels)
        );
        assert!(
            sel(
                json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["x"]}]})
            )
            .matches(&labels)
        );
    }
}
