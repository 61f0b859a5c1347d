//! The Deployment of a Gateway's data-plane pods: `sluice data-plane`, no sidecar, configured by
//! the bootstrap ConfigMap and then over xDS.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, LocalObjectReference, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Sysctl, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use super::bootstrap::{XDS_TOKEN_DIR, XDS_TOKEN_FILE};
use super::metadata::{child_metadata, labels, selector_labels};
use super::ports::ListenerPort;
use super::service_account::service_account_name;
use super::{GatewayObject, OperatorSettings};
use crate::model::goma::IpFamily;
use crate::translate::Errors;
use crate::translate::goma::{HTTP_LISTENER, HTTPS_LISTENER};

pub const CONTAINER_NAME: &str = "data-plane";
/// The admin endpoint (/healthz, /readyz, /metrics): on the pod IP so the kubelet can probe it.
pub const ADMIN_PORT: u16 = 9901;
pub const ADMIN_PORT_NAME: &str = "admin";
/// The pod environment variable naming the pod (`--node-id`).
pub const NODE_ID_ENV: &str = "SLUICE_NODE_ID";
/// Pod template annotation: the bootstrap ConfigMap's digest, so a changed bootstrap rolls pods.
pub const BOOTSTRAP_DIGEST_ANNOTATION: &str = "sluice.dev/bootstrap-digest";
/// The image's non-root user (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;
/// The projected xDS token volume (TLS mode).
pub const XDS_TOKEN_VOLUME: &str = "xds-token";
/// The projected token's lifetime: the shortest the API server allows; the kubelet refreshes it.
pub const XDS_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Seconds the pod gets beyond its drain bound before it is killed.
const TERMINATION_MARGIN_SECONDS: i64 = 5;

/// The Deployment, or field errors pushed to `errors`. With autoscaling on, `replicas` is left
/// out so the HPA owns it (Goma's operator reset it on every reconcile).
pub(crate) fn deployment(
    gw: &GatewayObject,
    settings: &OperatorSettings,
    ports: &[ListenerPort],
    bootstrap_name: &str,
    bootstrap_digest: &str,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Deployment {
    let spec = &gw.spec;
    let autoscaled = spec.auto_scaling.as_ref().is_some_and(|a| a.enabled);
    let replicas = match spec.replicas {
        _ if autoscaled => None,
        None => Some(1),
        Some(n) if n < 0 => {
            errors.push("spec.replicas", format!("{n} must not be negative"));
            None
        }
        Some(n) => Some(n),
    };
    for p in ports.iter().filter(|p| p.port == ADMIN_PORT) {
        let field = match p.name.as_str() {
            HTTP_LISTENER => "spec.service.httpPort",
            HTTPS_LISTENER => "spec.service.httpsPort",
            _ => "spec.service",
        };
        errors.push(
            field,
            format!("{ADMIN_PORT} is the data plane's admin port; choose another"),
        );
    }
    let resources = match &spec.resources {
        None => default_resources(),
        Some(value) => ResourceRequirements::deserialize(value).unwrap_or_else(|e| {
            errors.push("spec.resources", e.to_string());
            ResourceRequirements::default()
        }),
    };
    let affinity = spec.affinity.as_ref().and_then(|value| {
        Affinity::deserialize(value)
            .map_err(|e| errors.push("spec.affinity", e.to_string()))
            .ok()
    });
    let mut pull_secrets = Vec::new();
    for (i, s) in spec.image_pull_secrets.iter().enumerate() {
        if s.name.is_empty() {
            errors.push(format!("spec.imagePullSecrets[{i}].name"), "required");
        }
        pull_secrets.push(LocalObjectReference {
            name: s.name.clone(),
        });
    }
    let image = match spec.image.as_deref() {
        None | Some("") => settings.data_plane_image.clone(),
        Some(image) if is_goma_image(image) => {
            warnings.push(format!(
                "spec.image: {image:?} is Goma's gateway, which cannot run `sluice data-plane`; \
                 running {:?}",
                settings.data_plane_image
            ));
            settings.data_plane_image.clone()
        }
        Some(image) => image.to_owned(),
    };

    let any_ip = if spec.service.ip_families.contains(&IpFamily::IPv6) {
        "::"
    } else {
        "0.0.0.0"
    };
    let admin = if any_ip.contains(':') {
        format!("[{any_ip}]:{ADMIN_PORT}")
    } else {
        format!("{any_ip}:{ADMIN_PORT}")
    };
    let args = vec![
        "data-plane".to_owned(),
        "--bind".to_owned(),
        any_ip.to_owned(),
        "--admin".to_owned(),
        admin,
        "--drain-seconds".to_owned(),
        settings.drain_seconds.to_string(),
    ];

    let mut container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.name.clone()),
            container_port: i32::from(p.port),
            protocol: Some(p.protocol.to_owned()),
            ..ContainerPort::default()
        })
        .collect();
    container_ports.push(ContainerPort {
        name: Some(ADMIN_PORT_NAME.to_owned()),
        container_port: i32::from(ADMIN_PORT),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    });

    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(image),
        command: Some(vec!["sluice".to_owned()]),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: NODE_ID_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: bootstrap_name.to_owned(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(container_ports),
        volume_mounts: settings.xds_ca_pem.as_ref().map(|_| {
            vec![VolumeMount {
                name: XDS_TOKEN_VOLUME.to_owned(),
                mount_path: XDS_TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        liveness_probe: Some(admin_probe("/healthz", 10, 3)),
        readiness_probe: Some(admin_probe("/readyz", 5, 2)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    // A non-root process may bind ports below 1024 only when the pod lowers this (namespaced,
    // "safe") sysctl; Goma users often serve on 80/443.
    let lowest = ports.iter().map(|p| p.port).min();
    let sysctls = lowest.filter(|p| *p < 1024).map(|p| {
        vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
            value: p.to_string(),
        }]
    });

    // TLS xDS: a short-lived token bound to this pod and meant only for the control plane (its
    // TokenReview checks the audience), exchanged for a client certificate at start. The pod's
    // API token stays unmounted.
    let volumes = settings.xds_ca_pem.as_ref().map(|_| {
        vec![Volume {
            name: XDS_TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(settings.xds_token_audience.clone()),
                        expiration_seconds: Some(XDS_TOKEN_EXPIRATION_SECONDS),
                        path: XDS_TOKEN_FILE.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        }]
    });
    let pod = PodSpec {
        containers: vec![container],
        volumes,
        service_account_name: Some(service_account_name(gw)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(
            i64::from(settings.drain_seconds) + TERMINATION_MARGIN_SECONDS,
        ),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        affinity,
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            sysctls,
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };

    Deployment {
        metadata: child_metadata(gw, &gw.name),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(gw)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(gw)),
                    annotations: Some(BTreeMap::from([(
                        BOOTSTRAP_DIGEST_ANNOTATION.to_owned(),
                        bootstrap_digest.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Requests when the Gateway sets no resources: the scheduler needs some, and an HPA on CPU or
/// memory utilisation computes against them.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

fn admin_probe(path: &str, period_seconds: i32, timeout_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(timeout_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Goma's own gateway image (`[registry/]jkaninda/goma-gateway[:tag][@digest]`): Goma Gateways
/// name it by default, and it has no `sluice` binary.
fn is_goma_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    let repository = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    repository == "jkaninda/goma-gateway" || repository.ends_with("/jkaninda/goma-gateway")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goma_images_are_recognised_with_any_registry_tag_or_digest() {
        for image in [
            "jkaninda/goma-gateway",
            "jkaninda/goma-gateway:0.3.4",
            "docker.io/jkaninda/goma-gateway:latest",
            "registry.local:5000/jkaninda/goma-gateway@sha256:abc",
        ] {
            assert!(is_goma_image(image), "{image}");
        }
        for image in [
            "sluice:0.1.0",
            "registry.local:5000/sluice",
            "example/goma-gateway-fork:1",
        ] {
            assert!(!is_goma_image(image), "{image}");
        }
    }
}
