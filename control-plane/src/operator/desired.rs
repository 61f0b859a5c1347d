//! Everything a Gateway reconciles into, computed at once from the Gateway and the settings:
//! pure, so the objects are unit-tested and a spec with any invalid field yields no object at all
//! (it is never applied half-way).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};

use super::autoscaler::autoscaler;
use super::bootstrap::{bootstrap_config_map, bootstrap_digest, bootstrap_name};
use super::deployment::deployment;
use super::metadata::check_name;
use super::ports::listener_ports;
use super::service::service;
use super::service_account::service_account;
use super::{GatewayObject, OperatorSettings};
use crate::translate::{Errors, TranslateError};

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObjects {
    pub service_account: ServiceAccount,
    pub bootstrap: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// `None` when autoscaling is off: an HPA left from when it was on is deleted.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Settings accepted without (full) effect, for logs and status.
    pub warnings: Vec<String>,
}

/// The objects of one Gateway, or every invalid field found (`Gateway ns/name: field: reason`).
pub fn desired_objects(
    gw: &GatewayObject,
    settings: &OperatorSettings,
) -> Result<DesiredObjects, TranslateError> {
    let mut errors = Errors::default();
    let mut warnings = Vec::new();
    if let Err(reason) = check_name(&gw.name) {
        errors.push("metadata.name", reason);
    }
    let ports = listener_ports(gw).unwrap_or_else(|e| {
        for field in e.errors {
            errors.push(field.field, field.reason);
        }
        Vec::new()
    });
    let bootstrap = bootstrap_config_map(gw, settings);
    let deployment = deployment(
        gw,
        settings,
        &ports,
        &bootstrap_name(gw),
        &bootstrap_digest(&bootstrap),
        &mut errors,
        &mut warnings,
    );
    let service = service(gw, &ports, &mut errors, &mut warnings);
    let autoscaler = autoscaler(gw, &mut errors);
    errors.into_result(&gw.key().to_string())?;
    Ok(DesiredObjects {
        service_account: service_account(gw),
        bootstrap,
        deployment,
        service,
        autoscaler,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::GatewaySource;
    use serde_json::{Value, json};

    fn settings() -> OperatorSettings {
        OperatorSettings {
            data_plane_image: "registry.example/sluice:1.2.3".into(),
            ..OperatorSettings::default()
        }
    }

    fn gateway(spec: Value) -> GatewayObject {
        GatewayObject {
            name: "gw".into(),
            namespace: "edge".into(),
            uid: "u-1".into(),
            source: GatewaySource::Goma,
            generation: Some(4),
            spec: serde_json::from_value(spec).expect("a valid GatewaySpec"),
        }
    }

    fn desired(spec: Value) -> DesiredObjects {
        desired_objects(&gateway(spec), &settings()).expect("valid")
    }

    fn json_of<T: serde::Serialize>(object: &T) -> Value {
        serde_json::to_value(object).expect("serialisable")
    }

    fn error_of(spec: Value) -> String {
        desired_objects(&gateway(spec), &settings())
            .expect_err("invalid")
            .to_string()
    }

    fn labels() -> Value {
        json!({
            "app.kubernetes.io/component": "data-plane",
            "app.kubernetes.io/instance": "gw",
            "app.kubernetes.io/managed-by": "sluice",
            "app.kubernetes.io/name": "sluice"
        })
    }

    fn owner() -> Value {
        json!([{
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Gateway",
            "name": "gw",
            "uid": "u-1",
            "controller": true,
            "blockOwnerDeletion": true
        }])
    }

    #[test]
    fn with_tls_xds_the_pods_get_a_projected_token_for_the_control_plane() {
        let tls = OperatorSettings {
            xds_ca_pem: Some("CA".into()),
            ..settings()
        };
        let d = desired_objects(&gateway(json!({})), &tls).expect("valid");
        let pod = &json_of(&d.deployment)["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"],
            json!([{"name": "xds-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "sluice-xds", "expirationSeconds": 600, "path": "token"}}]}}])
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"],
            json!([{"name": "xds-token", "mountPath": "/var/run/secrets/sluice/xds",
                "readOnly": true}])
        );
        // The API token itself stays unmounted.
        assert_eq!(pod["automountServiceAccountToken"], false);
        // Plaintext settings project nothing.
        let plain = &json_of(&desired(json!({})).deployment)["spec"]["template"]["spec"];
        assert_eq!(plain.get("volumes"), None);
    }

    #[test]
    fn a_default_gateway_runs_one_sluice_data_plane_pod() {
        let d = desired(json!({}));
        let digest = bootstrap_digest(&d.bootstrap);
        assert_eq!(
            json_of(&d.deployment),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "gw", "namespace": "edge", "labels": labels(), "ownerReferences": owner()},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {
                        "app.kubernetes.io/component": "data-plane",
                        "app.kubernetes.io/instance": "gw",
                        "app.kubernetes.io/name": "sluice"
                    }},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                    "template": {
                        "metadata": {
                            "labels": labels(),
                            "annotations": {"sluice.dev/bootstrap-digest": digest}
                        },
                        "spec": {
                            "serviceAccountName": "gw",
                            "automountServiceAccountToken": false,
                            "enableServiceLinks": false,
                            "terminationGracePeriodSeconds": 15,
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}
                            },
                            "containers": [{
                                "name": "data-plane",
                                "image": "registry.example/sluice:1.2.3",
                                "command": ["sluice"],
                                "args": ["data-plane", "--bind", "0.0.0.0", "--admin", "0.0.0.0:9901", "--drain-seconds", "10"],
                                "env": [{"name": "SLUICE_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                                "envFrom": [{"configMapRef": {"name": "gw-bootstrap", "optional": false}}],
                                "ports": [
                                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                    {"name": "admin", "containerPort": 9901, "protocol": "TCP"}
                                ],
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "admin", "scheme": "HTTP"},
                                    "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "admin", "scheme": "HTTP"},
                                    "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3
                                },
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "runAsNonRoot": true,
                                    "capabilities": {"drop": ["ALL"]}
                                }
                            }]
                        }
                    }
                }
            })
        );
        assert_eq!(
            json_of(&d.service),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "gw", "namespace": "edge", "labels": labels(), "ownerReferences": owner()},
                "spec": {
                    "type": "ClusterIP",
                    "selector": {
                        "app.kubernetes.io/component": "data-plane",
                        "app.kubernetes.io/instance": "gw",
                        "app.kubernetes.io/name": "sluice"
                    },
                    "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
                }
            })
        );
        assert_eq!(
            json_of(&d.service_account),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "gw", "namespace": "edge", "labels": labels(), "ownerReferences": owner()},
                "automountServiceAccountToken": false
            })
        );
        assert_eq!(d.autoscaler, None);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn every_object_is_owned_by_the_gateway_and_labelled() {
        let d = desired(json!({"autoScaling": {"enabled": true}}));
        let objects = [
            json_of(&d.service_account),
            json_of(&d.bootstrap),
            json_of(&d.deployment),
            json_of(&d.service),
            json_of(&d.autoscaler.expect("hpa")),
        ];
        for object in objects {
            assert_eq!(object["metadata"]["ownerReferences"], owner(), "{object}");
            assert_eq!(object["metadata"]["labels"], labels(), "{object}");
            assert_eq!(object["metadata"]["namespace"], "edge", "{object}");
        }
    }

    #[test]
    fn every_service_knob_lands_in_the_service() {
        let d = desired(json!({
            "server": {"tls": [{"secretName": "cert"}]},
            "service": {
                "type": "LoadBalancer",
                "httpPort": 80,
                "httpsPort": 443,
                "httpNodePort": 30080,
                "httpsNodePort": 30443,
                "loadBalancerIP": "203.0.113.10",
                "loadBalancerSourceRanges": ["198.51.100.0/24", "2001:db8::/32"],
                "loadBalancerClass": "example.com/lb",
                "externalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP",
                "annotations": {"lb.example.com/scheme": "internet-facing"},
                "labels": {"team": "edge", "app.kubernetes.io/managed-by": "someone-else"},
                "ipFamilyPolicy": "PreferDualStack",
                "ipFamilies": ["IPv4", "IPv6"]
            }
        }));
        let mut expected_labels = labels();
        expected_labels["team"] = json!("edge");
        assert_eq!(
            json_of(&d.service),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "gw",
                    "namespace": "edge",
                    "labels": expected_labels,
                    "annotations": {"lb.example.com/scheme": "internet-facing"},
                    "ownerReferences": owner()
                },
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {
                        "app.kubernetes.io/component": "data-plane",
                        "app.kubernetes.io/instance": "gw",
                        "app.kubernetes.io/name": "sluice"
                    },
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
                        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP", "nodePort": 30443}
                    ],
                    "loadBalancerIP": "203.0.113.10",
                    "loadBalancerSourceRanges": ["198.51.100.0/24", "2001:db8::/32"],
                    "loadBalancerClass": "example.com/lb",
                    "externalTrafficPolicy": "Local",
                    "sessionAffinity": "ClientIP",
                    "ipFamilyPolicy": "PreferDualStack",
                    "ipFamilies": ["IPv4", "IPv6"]
                }
            })
        );
        // The pods listen on the same ports (below 1024: the pod lowers the unprivileged port
        // start), on every address family.
        let pod = &json_of(&d.deployment)["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["ports"],
            json!([
                {"name": "http", "containerPort": 80, "protocol": "TCP"},
                {"name": "https", "containerPort": 443, "protocol": "TCP"},
                {"name": "admin", "containerPort": 9901, "protocol": "TCP"}
            ])
        );
        assert_eq!(
            pod["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}])
        );
        assert_eq!(
            pod["containers"][0]["args"],
            json!([
                "data-plane",
                "--bind",
                "::",
                "--admin",
                "[::]:9901",
                "--drain-seconds",
                "10"
            ])
        );
    }

    #[test]
    fn node_ports_and_external_policy_are_kept_for_node_port_services() {
        let d = desired(
            json!({"service": {"type": "NodePort", "httpNodePort": 30080, "externalTrafficPolicy": "Cluster"}}),
        );
        let spec = &json_of(&d.service)["spec"];
        assert_eq!(spec["type"], "NodePort");
        assert_eq!(spec["ports"][0]["nodePort"], 30080);
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn knobs_the_service_type_refuses_are_reported_together() {
        assert_eq!(
            error_of(json!({"service": {
                "type": "ClusterIP",
                "httpNodePort": 30080,
                "loadBalancerSourceRanges": ["10.0.0.0/8", "10.0.0.1"],
                "loadBalancerClass": "example.com/lb",
                "externalTrafficPolicy": "Local"
            }})),
            "Gateway edge/gw: spec.service.httpNodePort: only for type NodePort or LoadBalancer; \
             spec.service.loadBalancerSourceRanges: only for type LoadBalancer; \
             spec.service.loadBalancerClass: only for type LoadBalancer; \
             spec.service.loadBalancerSourceRanges[1]: \"10.0.0.1\" is not a CIDR (e.g. 203.0.113.0/24); \
             spec.service.externalTrafficPolicy: only for type NodePort or LoadBalancer"
        );
    }

    #[test]
    fn with_autoscaling_the_deployment_leaves_replicas_to_the_hpa() {
        let d = desired(json!({
            "replicas": 5,
            "autoScaling": {
                "enabled": true,
                "minReplicas": 2,
                "maxReplicas": 8,
                "targetCPUUtilizationPercentage": 70,
                "targetMemoryUtilizationPercentage": 85
            }
        }));
        let deployment = json_of(&d.deployment);
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "the applied Deployment must not carry replicas: {}",
            deployment["spec"]
        );
        assert_eq!(
            json_of(&d.autoscaler.expect("hpa")),
            json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "gw", "namespace": "edge", "labels": labels(), "ownerReferences": owner()},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw"},
                    "minReplicas": 2,
                    "maxReplicas": 8,
                    "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 85}}}
                    ]
                }
            })
        );
        // Switched off again: replicas come back, no HPA.
        let off =
            desired(json!({"replicas": 5, "autoScaling": {"enabled": false, "minReplicas": 2}}));
        assert_eq!(json_of(&off.deployment)["spec"]["replicas"], 5);
        assert_eq!(off.autoscaler, None);
    }

    #[test]
    fn autoscaling_defaults_and_limits() {
        let d = desired(json!({"autoScaling": {"enabled": true}}));
        let hpa = json_of(&d.autoscaler.expect("hpa"));
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["maxReplicas"], 10);
        assert_eq!(
            hpa["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert_eq!(
            error_of(
                json!({"autoScaling": {"enabled": true, "minReplicas": 0, "maxReplicas": 3, "targetCPUUtilizationPercentage": 0}})
            ),
            "Gateway edge/gw: spec.autoScaling.minReplicas: 0 must be at least 1; \
             spec.autoScaling.targetCPUUtilizationPercentage: 0 must be at least 1 (percent of the requested cpu)"
        );
        assert_eq!(
            error_of(json!({"autoScaling": {"enabled": true, "minReplicas": 4, "maxReplicas": 3}})),
            "Gateway edge/gw: spec.autoScaling.maxReplicas: 3 is below minReplicas (4)"
        );
    }

    #[test]
    fn pull_secrets_affinity_and_resources_pass_through() {
        let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "role", "operator": "In", "values": ["edge"]}]}]
        }}});
        let resources = json!({"limits": {"cpu": "2", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "128Mi"}});
        let d = desired(json!({
            "image": "registry.example/custom-sluice:9",
            "replicas": 3,
            "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}],
            "affinity": affinity,
            "resources": resources,
        }));
        let spec = &json_of(&d.deployment)["spec"];
        assert_eq!(spec["replicas"], 3);
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["imagePullSecrets"],
            json!([{"name": "regcred"}, {"name": "mirror"}])
        );
        assert_eq!(pod["affinity"], affinity);
        assert_eq!(pod["containers"][0]["resources"], resources);
        assert_eq!(
            pod["containers"][0]["image"],
            "registry.example/custom-sluice:9"
        );
    }

    #[test]
    fn goma_images_are_replaced_by_the_sluice_image_with_a_warning() {
        let d = desired(json!({"image": "jkaninda/goma-gateway:0.3.4"}));
        assert_eq!(
            json_of(&d.deployment)["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/sluice:1.2.3"
        );
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0]
                .starts_with("spec.image: \"jkaninda/goma-gateway:0.3.4\" is Goma's gateway"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn a_changed_bootstrap_rolls_the_pods() {
        let digest = |spec: Value| {
            json_of(&desired(spec).deployment)["spec"]["template"]["metadata"]["annotations"]
                ["sluice.dev/bootstrap-digest"]
                .clone()
        };
        assert_eq!(digest(json!({})), digest(json!({"replicas": 4})));
        assert_ne!(
            digest(json!({})),
            digest(json!({"server": {"logLevel": "debug"}}))
        );
    }

    #[test]
    fn invalid_pod_settings_are_reported_and_nothing_is_produced() {
        assert_eq!(
            error_of(json!({
                "replicas": -1,
                "resources": {"limits": "lots"},
                "affinity": {"nodeAffinity": 3},
                "imagePullSecrets": [{"name": ""}],
                "service": {"httpPort": 9901}
            })),
            "Gateway edge/gw: spec.replicas: -1 must not be negative; \
             spec.service.httpPort: 9901 is the data plane's admin port; choose another; \
             spec.resources: invalid type: string \"lots\", expected a map; \
             spec.affinity: invalid type: integer `3`, expected NodeAffinity; \
             spec.imagePullSecrets[0].name: required"
        );
    }

    #[test]
    fn listener_errors_and_unusable_names_are_reported() {
        let mut gw = gateway(
            json!({"server": {"tls": [{"secretName": "cert"}]}, "service": {"httpPort": 8443}}),
        );
        gw.name = "Gw.Example".into();
        let err = desired_objects(&gw, &settings())
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with("Gateway edge/Gw.Example: metadata.name: \"Gw.Example\" cannot name the gateway's Service"), "{err}");
        assert!(
            err.contains("spec.service.httpsPort: must differ from spec.service.httpPort"),
            "{err}"
        );
    }
}
