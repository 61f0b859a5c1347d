//! Typed objects read by the providers: the Goma kinds fully typed, every other watched kind kept
//! as its manifest until its translator needs more.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub mod gateway_api;
pub mod goma;
pub mod meta;

pub use meta::{DEFAULT_NAMESPACE, ObjectMeta};

pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
pub const DISCOVERY_GROUP: &str = "discovery.k8s.io";

/// Every kind a provider accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    GomaGateway,
    GomaRoute,
    GomaMiddleware,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    UdpRoute,
    ReferenceGrant,
    BackendTlsPolicy,
    Namespace,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::GomaGateway,
        Kind::GomaRoute,
        Kind::GomaMiddleware,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::UdpRoute,
        Kind::ReferenceGrant,
        Kind::BackendTlsPolicy,
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
    ];

    /// Resolves a manifest's `apiVersion` and `kind`. Goma kinds need `v1alpha1`; Gateway API kinds
    /// are accepted in any served version (v1, v1beta1, v1alpha2, ...).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if version.is_empty() {
            return None;
        }
        Kind::ALL
            .into_iter()
            .find(|k| k.kind_name() == kind && k.group() == group)
            .filter(|k| k.group() != goma::GROUP || version == goma::VERSION)
            .filter(|k| !k.group().is_empty() || version == "v1")
            .filter(|k| k.group() != DISCOVERY_GROUP || version == "v1")
    }

    /// The API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::GomaGateway | Kind::GomaRoute | Kind::GomaMiddleware => goma::GROUP,
            Kind::GatewayClass
            | Kind::Gateway
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::TlsRoute
            | Kind::TcpRoute
            | Kind::UdpRoute
            | Kind::ReferenceGrant
            | Kind::BackendTlsPolicy => GATEWAY_API_GROUP,
            Kind::Namespace | Kind::Service | Kind::Secret | Kind::ConfigMap => "",
            Kind::EndpointSlice => DISCOVERY_GROUP,
        }
    }

    /// The version the API is read in: Goma `v1alpha1`; every Gateway API kind is served as `v1`
    /// by the v1.6 standard CRDs (ReferenceGrant is stored as v1beta1 but served as v1 too); core
    /// and discovery.k8s.io `v1`.
    pub fn served_version(self) -> &'static str {
        match self.group() {
            goma::GROUP => goma::VERSION,
            _ => "v1",
        }
    }

    /// The resource's plural, as in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::GomaGateway | Kind::Gateway => "gateways",
            Kind::GomaRoute => "routes",
            Kind::GomaMiddleware => "middlewares",
            Kind::GatewayClass => "gatewayclasses",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
            Kind::TlsRoute => "tlsroutes",
            Kind::TcpRoute => "tcproutes",
            Kind::UdpRoute => "udproutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::BackendTlsPolicy => "backendtlspolicies",
            Kind::Namespace => "namespaces",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
        }
    }

    /// Group, served version, kind and plural: what an untyped API client needs.
    pub fn api_resource(self) -> kube::core::ApiResource {
        let gvk = kube::core::GroupVersionKind::gvk(
            self.group(),
            self.served_version(),
            self.kind_name(),
        );
        kube::core::ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }

    /// The Kubernetes `kind` as written in manifests.
    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::GomaGateway | Kind::Gateway => "Gateway",
            Kind::GomaRoute => "Route",
            Kind::GomaMiddleware => "Middleware",
            Kind::GatewayClass => "GatewayClass",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// Cluster-scoped kinds have an empty namespace in their key.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }
}

/// The kind name; the Gateway API `Gateway` is written `Gateway.gateway.networking.k8s.io`
/// (kubectl's `kind.group` form) so it never reads like a Goma Gateway.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Gateway => write!(f, "Gateway.{GATEWAY_API_GROUP}"),
            k => f.write_str(k.kind_name()),
        }
    }
}

/// Identity of an object; `namespace` is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Route default/api`, or `GatewayClass sluice` when cluster-scoped.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    GomaGateway(Arc<goma::Gateway>),
    GomaRoute(Arc<goma::Route>),
    GomaMiddleware(Arc<goma::Middleware>),
    /// A Gateway API kind, or a Service or EndpointSlice.
    Api(Arc<gateway_api::ApiObject>),
    /// Any other accepted kind (Namespace, Secret, ConfigMap): the whole manifest as read.
    Other {
        key: ObjectKey,
        labels: BTreeMap<String, String>,
        body: serde_json::Value,
    },
}

impl Object {
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::GomaGateway(o) => {
                ObjectKey::new(Kind::GomaGateway, &o.metadata.namespace, &o.metadata.name)
            }
            Object::GomaRoute(o) => {
                ObjectKey::new(Kind::GomaRoute, &o.metadata.namespace, &o.metadata.name)
            }
            Object::GomaMiddleware(o) => ObjectKey::new(
                Kind::GomaMiddleware,
                &o.metadata.namespace,
                &o.metadata.name,
            ),
            Object::Api(o) => o.key(),
            Object::Other { key, .. } => key.clone(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::GomaGateway(_) => Kind::GomaGateway,
            Object::GomaRoute(_) => Kind::GomaRoute,
            Object::GomaMiddleware(_) => Kind::GomaMiddleware,
            Object::Api(o) => o.kind(),
            Object::Other { key, .. } => key.kind,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Object::GomaGateway(o) => &o.metadata.labels,
            Object::GomaRoute(o) => &o.metadata.labels,
            Object::GomaMiddleware(o) => &o.metadata.labels,
            Object::Api(o) => &o.metadata().labels,
            Object::Other { labels, .. } => labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_from_api_version_and_kind() {
        assert_eq!(
            Kind::from_type("gateway.jkaninda.dev/v1alpha1", "Route"),
            Some(Kind::GomaRoute)
        );
        assert_eq!(
            Kind::from_type("gateway.jkaninda.dev/v1alpha1", "Gateway"),
            Some(Kind::GomaGateway)
        );
        assert_eq!(
            Kind::from_type("gateway.jkaninda.dev/v1beta1", "Route"),
            None
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "Gateway"),
            Some(Kind::Gateway)
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
            Some(Kind::TcpRoute)
        );
        assert_eq!(Kind::from_type("v1", "Service"), Some(Kind::Service));
        assert_eq!(Kind::from_type("v1", "Secret"), Some(Kind::Secret));
        assert_eq!(
            Kind::from_type("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(Kind::from_type("v1", "ConfigMap"), Some(Kind::ConfigMap));
        assert_eq!(Kind::from_type("v1", "Pod"), None);
        assert_eq!(Kind::from_type("apps/v1", "Service"), None);
        for k in Kind::ALL {
            let version = if k.group() == goma::GROUP {
                "v1alpha1"
            } else {
                "v1"
            };
            let api = if k.group().is_empty() {
                version.to_owned()
            } else {
                format!("{}/{version}", k.group())
            };
            assert_eq!(Kind::from_type(&api, k.kind_name()), Some(k), "{k:?}");
        }
    }

    #[test]
    fn keys_display_kind_namespace_name() {
        assert_eq!(
            ObjectKey::new(Kind::GomaRoute, "default", "api").to_string(),
            "Route default/api"
        );
        assert_eq!(
            ObjectKey::new(Kind::Gateway, "infra", "gw").to_string(),
            "Gateway.gateway.networking.k8s.io infra/gw"
        );
        assert_eq!(
            ObjectKey::new(Kind::GatewayClass, "", "sluice").to_string(),
            "GatewayClass sluice"
        );
    }
}
