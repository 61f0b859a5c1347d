//! A Gateway API Gateway as the operator reconciles it: only the fields its workload depends on
//! (class, listener ports, infrastructure metadata), read from the API server's untyped object.
//! The full typed model belongs to the translator.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{ApiResource, DynamicObject};
use serde::Deserialize;

use super::deployment::ADMIN_PORT;
use super::gateway::{GatewayApiWorkload, GatewayObject, GatewaySource};
use super::ports::transport_port;
use crate::model::gateway_api::GatewayClassSpec;
use crate::model::goma::{GatewaySpec, ServiceType};
use crate::model::{Kind, ObjectKey};
use crate::provider::ParseError;
use crate::translate::gateway_api::serves_class;

pub fn gateway_resource() -> ApiResource {
    Kind::Gateway.api_resource()
}

pub fn gateway_class_resource() -> ApiResource {
    Kind::GatewayClass.api_resource()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    gateway_class_name: String,
    #[serde(default)]
    listeners: Vec<Listener>,
    #[serde(default)]
    infrastructure: Option<Infrastructure>,
}

#[derive(Deserialize)]
struct Listener {
    port: i32,
    protocol: String,
}

#[derive(Deserialize, Default)]
struct Infrastructure {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A Gateway API Gateway: its class and the workload it asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiGateway {
    pub class_name: String,
    pub gateway: GatewayObject,
}

/// The key of a Gateway API Gateway object.
pub fn key_of(object: &DynamicObject) -> ObjectKey {
    ObjectKey::new(
        Kind::Gateway,
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// `spec.gatewayClassName` of a Gateway, if it has one.
pub fn class_name_of(object: &DynamicObject) -> Option<&str> {
    object.data.get("spec")?.get("gatewayClassName")?.as_str()
}

/// True when the GatewayClass names our controller and we accepted it (no parameters).
pub fn is_our_class(class: &DynamicObject) -> bool {
    class
        .data
        .get("spec")
        .and_then(|s| GatewayClassSpec::deserialize(s).ok())
        .is_some_and(|s| serves_class(&s))
}

/// Reads a Gateway: one Service and container port per distinct listener port and transport
/// (UDP listeners get UDP ports), and `spec.infrastructure` labels and annotations.
pub fn from_dynamic(object: &DynamicObject) -> Result<ApiGateway, ParseError> {
    let key = key_of(object);
    let error = |message: String| ParseError {
        key: Some(key.clone()),
        message,
        ambiguous: false,
    };
    let spec_value = object
        .data
        .get("spec")
        .ok_or_else(|| error("spec: required".to_owned()))?;
    let spec: Spec = serde_path_to_error::deserialize(spec_value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        error(format!("{field}: {}", e.inner()))
    })?;
    let Some(uid) = object.metadata.uid.clone().filter(|u| !u.is_empty()) else {
        return Err(error(
            "metadata.uid: required (set by the API server)".to_owned(),
        ));
    };
    let mut seen = BTreeSet::new();
    let mut ports = Vec::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let port = u16::try_from(l.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                error(format!(
                    "spec.listeners[{i}].port: {} is not a port (1-65535)",
                    l.port
                ))
            })?;
        if port == ADMIN_PORT {
            return Err(error(format!(
                "spec.listeners[{i}].port: {ADMIN_PORT} is the data plane's admin port; choose \
                 another"
            )));
        }
        let udp = l.protocol == "UDP";
        if seen.insert((port, udp)) {
            ports.push(transport_port(port, udp));
        }
    }
    let infrastructure = spec.infrastructure.unwrap_or_default();
    let mut workload_spec = GatewaySpec::default();
    // Gateway API Gateways are reached from outside the cluster, as other implementations do.
    workload_spec.service.service_type = ServiceType::LoadBalancer;
    Ok(ApiGateway {
        class_name: spec.gateway_class_name,
        gateway: GatewayObject {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            uid,
            generation: object.metadata.generation,
            spec: workload_spec,
            source: GatewaySource::GatewayApi(GatewayApiWorkload {
                ports,
                labels: infrastructure.labels,
                annotations: infrastructure.annotations,
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::gateway_api::CONTROLLER_NAME;
    use serde_json::json;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a DynamicObject")
    }

    fn gateway(spec: serde_json::Value) -> DynamicObject {
        dynamic(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge", "uid": "u-1", "generation": 2},
            "spec": spec
        }))
    }

    #[test]
    fn one_port_per_distinct_port_and_transport() {
        let gw = from_dynamic(&gateway(json!({
            "gatewayClassName": "sluice",
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https-a", "port": 443, "protocol": "HTTPS", "hostname": "a.example"},
                {"name": "https-b", "port": 443, "protocol": "HTTPS", "hostname": "b.example"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ],
            "infrastructure": {"labels": {"team": "a"}, "annotations": {"cost": "b"}}
        })))
        .expect("valid");
        assert_eq!(gw.class_name, "sluice");
        assert_eq!(
            gw.gateway.key(),
            ObjectKey::new(Kind::Gateway, "edge", "gw")
        );
        assert_eq!(
            gw.gateway.owner_type(),
            ("gateway.networking.k8s.io/v1", "Gateway")
        );
        assert_eq!(
            gw.gateway.spec.service.service_type,
            ServiceType::LoadBalancer
        );
        let GatewaySource::GatewayApi(w) = &gw.gateway.source else {
            panic!("a Gateway API source");
        };
        let ports: Vec<_> = w
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                ("tcp-80", 80, "TCP"),
                ("tcp-443", 443, "TCP"),
                ("tcp-53", 53, "TCP"),
                ("udp-53", 53, "UDP")
            ]
        );
        assert_eq!(w.labels["team"], "a");
        assert_eq!(w.annotations["cost"], "b");
    }

    #[test]
    fn errors_name_the_gateway_and_the_field() {
        let err = from_dynamic(&gateway(json!({
            "gatewayClassName": "sluice",
            "listeners": [{"name": "a", "port": 9901, "protocol": "HTTP"}]
        })))
        .expect_err("admin port");
        assert_eq!(
            err.to_string(),
            "Gateway.gateway.networking.k8s.io edge/gw: spec.listeners[0].port: 9901 is the data \
             plane's admin port; choose another"
        );
        let err = from_dynamic(&gateway(json!({
            "gatewayClassName": "sluice",
            "listeners": [{"name": "a", "port": "eighty", "protocol": "HTTP"}]
        })))
        .expect_err("not a number");
        assert!(
            err.to_string()
                .starts_with("Gateway.gateway.networking.k8s.io edge/gw: spec.listeners[0].port: "),
            "{err}"
        );
    }

    #[test]
    fn only_classes_naming_our_controller_are_ours() {
        let class = |controller: &str| {
            dynamic(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "c"},
                "spec": {"controllerName": controller}
            }))
        };
        assert!(is_our_class(&class(CONTROLLER_NAME)));
        let mut with_parameters = class(CONTROLLER_NAME);
        with_parameters.data["spec"]["parametersRef"] =
            json!({"group": "example.com", "kind": "Config", "name": "p"});
        assert!(
            !is_our_class(&with_parameters),
            "a refused class gets no workload"
        );
        assert!(!is_our_class(&class("example.com/other")));
        assert_eq!(
            class_name_of(&gateway(json!({"gatewayClassName": "x"}))),
            Some("x")
        );
    }
}
