//! The Goma Gateway as the operator reconciles it: its identity (for owner references) and its
//! spec, read from the API server's untyped object.

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;

use crate::model::goma::{self, GatewaySpec};
use crate::model::{Kind, ObjectKey, ObjectMeta};
use crate::translate::{Errors, TranslateError};

/// `gateway.jkaninda.dev/v1alpha1` `Gateway`, plural `gateways`.
pub fn gateway_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(goma::GROUP, goma::VERSION, "Gateway"),
        "gateways",
    )
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
}

impl GatewayObject {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(Kind::GomaGateway, &self.namespace, &self.name)
    }

    /// Reads a Gateway as the API server sends it. A spec that does not parse is an error naming
    /// the Gateway and the field: nothing of it is applied.
    pub fn from_dynamic(object: &DynamicObject) -> Result<Self, TranslateError> {
        let meta = &object.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let mut errors = Errors::default();
        if name.is_empty() {
            errors.push("metadata.name", "required");
        }
        if namespace.is_empty() {
            errors.push("metadata.namespace", "required (Gateway is namespaced)");
        }
        let uid = meta.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            errors.push("metadata.uid", "required (set by the API server)");
        }
        let spec = match object.data.get("spec") {
            None | Some(serde_json::Value::Null) => GatewaySpec::default(),
            Some(spec) => GatewaySpec::deserialize(spec).unwrap_or_else(|e| {
                errors.push("spec", e.to_string());
                GatewaySpec::default()
            }),
        };
        errors.into_result(&ObjectKey::new(Kind::GomaGateway, &namespace, &name).to_string())?;
        Ok(Self {
            name,
            namespace,
            uid,
            generation: meta.generation,
            spec,
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
        let text = err.to_string();
        assert!(text.starts_with("Gateway edge/gw: spec: "), "{text}");
        assert!(text.contains("invalid type"), "{text}");
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
