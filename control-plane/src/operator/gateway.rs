//! The Goma Gateway as the operator reconciles it: its identity (for owner references) and its
//! spec, read from the API server's untyped object.

use std::collections::BTreeMap;

use kube::core::{ApiResource, DynamicObject};
use serde_json::{Map, Value};

use super::ports::ListenerPort;

use crate::model::goma::{self, GatewaySpec};
use crate::model::{Kind, Object, ObjectKey, ObjectMeta};
use crate::provider::{ParseError, parse_object};

/// `apiVersion` of the Gateway API Gateways the operator reads and owner references name.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// `gateway.jkaninda.dev/v1alpha1` `Gateway`, plural `gateways`.
pub fn gateway_api_resource() -> ApiResource {
    Kind::GomaGateway.api_resource()
}

#[derive(Clone, Debug, PartialEq)]
pub struct GatewayObject {
    pub name: String,
    pub namespace: String,
    /// Owner references name the owner by uid, so a Gateway recreated under the same name does
    /// not adopt its predecessor's children.
    pub uid: String,
    pub generation: Option<i64>,
    pub spec: GatewaySpec,
    /// Which API the Gateway belongs to: it decides the owner references and the ports.
    pub source: GatewaySource,
}

/// The API a Gateway comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewaySource {
    /// `gateway.jkaninda.dev` Gateway: everything comes from its `spec`.
    Goma,
    /// `gateway.networking.k8s.io` Gateway of our GatewayClass. Its workload uses the defaults
    /// of `spec` (a LoadBalancer Service) and these.
    GatewayApi(GatewayApiWorkload),
}

/// What a Gateway API Gateway decides about its workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayApiWorkload {
    /// One per distinct listener port and transport.
    pub ports: Vec<ListenerPort>,
    /// `spec.infrastructure.labels` / `annotations`, for every generated object.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl GatewayObject {
    pub fn key(&self) -> ObjectKey {
        let kind = match self.source {
            GatewaySource::Goma => Kind::GomaGateway,
            GatewaySource::GatewayApi(_) => Kind::Gateway,
        };
        ObjectKey::new(kind, &self.namespace, &self.name)
    }

    /// `apiVersion` and `kind` of the Gateway, as its children's owner references name it.
    pub fn owner_type(&self) -> (&'static str, &'static str) {
        match self.source {
            GatewaySource::Goma => (goma::API_VERSION, "Gateway"),
            GatewaySource::GatewayApi(_) => (GATEWAY_API_VERSION, "Gateway"),
        }
    }

    /// Reads a Gateway as the API server sends it, through the parse path every provider uses
    /// (so errors name the field the same way: `Gateway edge/gw: spec.replicas: ...`). A spec
    /// that does not parse is an error: nothing of it is applied.
    pub fn from_dynamic(object: &DynamicObject) -> Result<Self, ParseError> {
        let resource = gateway_api_resource();
        let mut metadata = object.metadata.clone();
        metadata.managed_fields = None;
        let mut manifest = match &object.data {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        // List items may come without apiVersion and kind: they are the watched resource's.
        manifest.insert("apiVersion".into(), Value::String(resource.api_version));
        manifest.insert("kind".into(), Value::String(resource.kind));
        manifest.insert(
            "metadata".into(),
            serde_json::to_value(&metadata).unwrap_or(Value::Null),
        );
        let Object::GomaGateway(gateway) = parse_object(Value::Object(manifest))? else {
            return Err(ParseError {
                key: None,
                message: "not a Goma Gateway".to_owned(),
                ambiguous: false,
            });
        };
        let meta = &gateway.metadata;
        let Some(uid) = object.metadata.uid.clone().filter(|u| !u.is_empty()) else {
            return Err(ParseError {
                key: Some(ObjectKey::new(
                    Kind::GomaGateway,
                    &meta.namespace,
                    &meta.name,
                )),
                message: "metadata.uid: required (set by the API server)".to_owned(),
                ambiguous: false,
            });
        };
        Ok(Self {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid,
            generation: meta.generation,
            spec: gateway.spec.clone(),
            source: GatewaySource::Goma,
        })
    }

    /// The model's Gateway, for the translator (the listeners it defines give the pod's ports).
    pub fn to_model(&self) -> goma::Gateway {
        goma::Gateway {
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                generation: self.generation,
                ..ObjectMeta::default()
            },
            spec: self.spec.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a DynamicObject")
    }

    #[test]
    fn reads_identity_and_spec() {
        let gw = GatewayObject::from_dynamic(&dynamic(json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge", "uid": "u-1", "generation": 3},
            "spec": {"replicas": 2, "service": {"type": "LoadBalancer"}},
            "status": {"replicas": 1}
        })))
        .expect("valid");
        assert_eq!(gw.name, "gw");
        assert_eq!(gw.namespace, "edge");
        assert_eq!(gw.uid, "u-1");
        assert_eq!(gw.generation, Some(3));
        assert_eq!(gw.spec.replicas, Some(2));
        assert_eq!(
            gw.spec.service.service_type,
            goma::ServiceType::LoadBalancer
        );
        assert_eq!(gw.key().to_string(), "Gateway edge/gw");
    }

    #[test]
    fn a_spec_that_does_not_parse_names_the_gateway_and_the_field() {
        let err = GatewayObject::from_dynamic(&dynamic(json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge", "uid": "u-1"},
            "spec": {"replicas": "two"}
        })))
        .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "Gateway edge/gw: spec.replicas: invalid type: string \"two\", expected i32"
        );
    }

    #[test]
    fn a_gateway_without_uid_is_refused() {
        let err = GatewayObject::from_dynamic(&dynamic(json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge"}
        })))
        .expect_err("no uid");
        assert_eq!(
            err.to_string(),
            "Gateway edge/gw: metadata.uid: required (set by the API server)"
        );
    }

    #[test]
    fn the_api_resource_is_the_goma_gateway() {
        let ar = gateway_api_resource();
        assert_eq!(ar.api_version, "gateway.jkaninda.dev/v1alpha1");
        assert_eq!(ar.kind, "Gateway");
        assert_eq!(ar.plural, "gateways");
    }
}
