//! Goma Gateway custom resources, `gateway.jkaninda.dev/v1alpha1`: Gateway, Route, Middleware.
//!
//! Field names and defaults follow the goma-operator CRDs. Spec structs deny unknown fields so a
//! typo such as `tagret` is reported instead of silently dropping the setting; `metadata` and the
//! top level (apiVersion, kind, status) stay lenient.
//!
//! The spec types also generate the CRDs (`kube::CustomResource`): the roots `GatewayResource`,
//! `RouteResource` and `MiddlewareResource` are what the Kubernetes API serves; `Gateway`,
//! `Route` and `Middleware` (with our reduced metadata) are what the store and translator use.
//! Doc comments on fields are the CRD's field descriptions (`kubectl explain`). Option fields
//! skip serialising when unset so defaults in the schema carry no nulls.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::meta::ObjectMeta;

pub mod crd;
pub mod middleware_rule;
pub mod status;

pub use middleware_rule::{MiddlewareRule, RuleError};
pub use status::{GatewayStatus, MiddlewareStatus, RouteStatus};

pub const GROUP: &str = "gateway.jkaninda.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "gateway.jkaninda.dev/v1alpha1";

fn default_true() -> bool {
    true
}

/// Makes the API server require `keys` that serde defaults (so a file missing them still parses
/// and translation names the field): lists them as required and drops their schema defaults.
fn require(schema: &mut Schema, keys: &[&str]) {
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        for key in keys {
            if let Some(property) = properties
                .get_mut(*key)
                .and_then(serde_json::Value::as_object_mut)
            {
                property.remove("default");
            }
        }
    }
    let required = schema
        .ensure_object()
        .entry("required")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let Some(required) = required.as_array_mut() {
        for key in keys {
            if !required.iter().any(|r| r == key) {
                required.push(serde_json::Value::String((*key).to_owned()));
            }
        }
    }
}

fn require_gateways_and_path(schema: &mut Schema) {
    require(schema, &["gateways", "path"]);
}

fn require_path(schema: &mut Schema) {
    require(schema, &["path"]);
}

fn require_secret_name(schema: &mut Schema) {
    require(schema, &["secretName"]);
}

fn require_email(schema: &mut Schema) {
    require(schema, &["email"]);
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
}

/// A gateway: the data-plane pods (Deployment, Service, HPA) that serve the Routes naming it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, CustomResource, JsonSchema)]
#[kube(
    group = "gateway.jkaninda.dev",
    version = "v1alpha1",
    kind = "Gateway",
    root = "GatewayResource",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq",
    doc = "A Goma Gateway: the data-plane pods (Deployment, Service, HPA) serving the Routes that name it."
)]
// Raw JSON columns: clippy reads repeated `type_ = ...` items as duplicated attributes.
#[kube(printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.service.type"}"#)]
#[kube(
    printcolumn = r#"{"name": "Address", "type": "string", "jsonPath": ".status.addresses[0]"}"#
)]
#[kube(printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"}"#)]
#[kube(
    printcolumn = r#"{"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"}"#
)]
#[kube(printcolumn = r#"{"name": "Routes", "type": "integer", "jsonPath": ".status.routes"}"#)]
#[kube(
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Gateway container image. Goma's default is `jkaninda/goma-gateway:latest`; Sluice runs its
    /// own data-plane image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Gateway pods (default 1; the HPA decides when autoScaling is enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 1))]
    pub replicas: Option<i32>,
    /// Secrets used to pull the gateway image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// CPU/memory requests and limits of the gateway container (corev1 ResourceRequirements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resource_requirements_schema")]
    pub resources: Option<serde_json::Value>,
    /// Pod scheduling constraints (corev1 Affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "affinity_schema")]
    pub affinity: Option<serde_json::Value>,
    /// HorizontalPodAutoscaler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<AutoScaling>,
    /// Server runtime configuration.
    #[serde(default)]
    pub server: ServerSpec,
    /// Dynamic configuration providers (Kubernetes, HTTP, Git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Providers>,
    /// Built-in ACME / Let's Encrypt certificate manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManager>,
    /// How the gateway's Service exposes it.
    #[serde(default)]
    pub service: ServiceSpec,
}

fn resource_requirements_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<Option<ResourceRequirements>>()
}

fn affinity_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<Option<Affinity>>()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
    "message": "maxReplicas must not be below minReplicas",
    "fieldPath": ".maxReplicas",
}]))]
pub struct AutoScaling {
    /// Create the HorizontalPodAutoscaler.
    #[serde(default)]
    pub enabled: bool,
    /// Lower bound (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 1))]
    pub min_replicas: Option<i32>,
    /// Upper bound (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 10))]
    pub max_replicas: Option<i32>,
    /// Target average CPU utilisation, percent of the request.
    #[serde(
        rename = "targetCPUUtilizationPercentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Target average memory utilisation, percent of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_memory_utilization_percentage: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    /// Server timeouts in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Log level (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "info"))]
    pub log_level: Option<LogLevel>,
    /// Redis shared by the replicas (rate limits, cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
    /// Metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// kubernetes.io/tls Secrets served by the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<SecretRef>,
    /// DNS cache and upstream connection pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
}

/// Seconds; 0 means no timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Read timeout (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 30))]
    pub read: Option<i64>,
    /// Write timeout (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 60))]
    pub write: Option<i64>,
    /// Idle timeout (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 90))]
    pub idle: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Info,
    Debug,
    Trace,
    Off,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// Redis `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Redis password (in plain text, as Goma takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Monitoring {
    /// Expose Prometheus metrics.
    #[serde(default)]
    pub enable_metrics: bool,
    /// Path of the metrics endpoint (default `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "/metrics"))]
    pub metrics_path: Option<String>,
    /// Serve the metrics endpoints only for this Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Middlewares protecting the metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middleware: Option<MonitoringMiddleware>,
    /// How long a visitor counts as real-time (Goma docs; default `5m`).
    #[serde(
        rename = "visitorTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub visitor_ttl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoringMiddleware {
    /// Middleware names (in the gateway's namespace) applied to the metrics endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

/// A reference to a `kubernetes.io/tls` Secret in the object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of a kubernetes.io/tls Secret.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_cache: Option<DnsCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsCache {
    /// DNS cache TTL in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 300))]
    pub ttl: Option<i64>,
    /// Flush the cache on configuration changes (Goma docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_on_reload: Option<bool>,
    /// DNS servers, `host:port` (Goma docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolver: Vec<String>,
}

/// Upstream connection pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transport {
    /// Idle connections kept in total (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 512))]
    pub max_idle_conns: Option<i64>,
    /// Idle connections kept per host (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 256))]
    pub max_idle_conns_per_host: Option<i64>,
    /// Connections per host (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 256))]
    pub max_conns_per_host: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Providers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitProvider>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesProvider {
    /// Serve the Routes and Middlewares of the cluster (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub enabled: Option<bool>,
    /// Goma's sidecar image; unused by Sluice (its control plane replaces the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.enabled || has(self.endpoint)",
    "message": "required when enabled",
    "fieldPath": ".endpoint",
    "reason": "FieldValueRequired",
}]))]
pub struct HttpProvider {
    #[serde(default)]
    pub enabled: bool,
    /// URL of the remote configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Pull interval (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "60s"))]
    pub interval: Option<String>,
    /// Request timeout (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "10s"))]
    pub timeout: Option<String>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Secret with header values referenced as `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret: Option<String>,
    /// Skip verifying the endpoint's TLS certificate (not recommended).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Attempts per pull (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 3))]
    pub retry_attempts: Option<i32>,
    /// Delay between attempts (default `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "2s"))]
    pub retry_delay: Option<String>,
    /// Directory of the last good configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.enabled || has(self.url)",
    "message": "required when enabled",
    "fieldPath": ".url",
    "reason": "FieldValueRequired",
}]))]
pub struct GitProvider {
    #[serde(default)]
    pub enabled: bool,
    /// Repository URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Branch to check out (default `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "main"))]
    pub branch: Option<String>,
    /// Directory inside the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Pull interval (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "60s"))]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GitAuth>,
    /// Directory of the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_dir: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitAuth {
    #[serde(rename = "type")]
    pub auth_type: GitAuthType,
    /// Secret holding the credentials.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitAuthType {
    Token,
    Basic,
    Ssh,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertManager {
    /// Certificate provider; only `acme` exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "acme"))]
    pub provider: Option<CertProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertProvider {
    #[default]
    Acme,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = require_email)]
pub struct Acme {
    /// Contact email of the ACME account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(required, length(min = 1))]
    pub email: Option<String>,
    /// ACME directory (default: Let's Encrypt production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_url: Option<String>,
    /// Acceptance of the ACME provider's terms of service (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub terms_accepted: Option<bool>,
    /// `http-01` (default) or `dns-01` (needed for wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "http-01"))]
    pub challenge_type: Option<ChallengeType>,
    /// DNS-01 provider, e.g. cloudflare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// Secret with the DNS provider's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChallengeType {
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
}

pub const DEFAULT_HTTP_PORT: i32 = 8080;
pub const DEFAULT_HTTPS_PORT: i32 = 8443;

fn default_http_port() -> i32 {
    DEFAULT_HTTP_PORT
}

fn default_https_port() -> i32 {
    DEFAULT_HTTPS_PORT
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service type (default ClusterIP).
    #[serde(rename = "type", default)]
    pub service_type: ServiceType,
    /// Service port of HTTP (default 8080; 80 for Ingress-style exposure).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_port: i32,
    /// Service port of HTTPS (default 8443; 443 for Ingress-style exposure).
    #[serde(default = "default_https_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub https_port: i32,
    /// NodePort of HTTP (type NodePort or LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_node_port: Option<i32>,
    /// NodePort of HTTPS (type NodePort or LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub https_node_port: Option<i32>,
    /// Requested load-balancer IP (cloud-dependent).
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    /// CIDRs allowed to reach the load balancer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
    /// Load-balancer implementation, e.g. service.k8s.aws/nlb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    /// Cluster (default) or Local (keeps client source IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Cluster"))]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
    /// None (default) or ClientIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "None"))]
    pub session_affinity: Option<SessionAffinity>,
    /// Merged onto the Service (cloud load-balancer tuning).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Merged onto the Service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<IpFamily>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::default(),
            http_port: DEFAULT_HTTP_PORT,
            https_port: DEFAULT_HTTPS_PORT,
            http_node_port: None,
            https_node_port: None,
            load_balancer_ip: None,
            load_balancer_source_ranges: Vec::new(),
            load_balancer_class: None,
            external_traffic_policy: None,
            session_affinity: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            ip_family_policy: None,
            ip_families: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExternalTrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

// ---------------------------------------------------------------------------------------------
// Route
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub metadata: ObjectMeta,
    pub spec: RouteSpec,
}

/// How a gateway forwards the requests of a host and path prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, CustomResource, JsonSchema)]
#[kube(
    group = "gateway.jkaninda.dev",
    version = "v1alpha1",
    kind = "Route",
    root = "RouteResource",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq",
    doc = "A Goma Route: how the Gateways it names forward the requests of a host and path prefix."
)]
#[kube(printcolumn = r#"{"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways"}"#)]
#[kube(printcolumn = r#"{"name": "Path", "type": "string", "jsonPath": ".spec.path"}"#)]
#[kube(printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.target"}"#)]
#[kube(printcolumn = r#"{"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"}"#)]
#[kube(
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = require_gateways_and_path)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.target) && has(self.backends) && size(self.backends) > 0)",
        "message": "spec.target and spec.backends are mutually exclusive",
        "fieldPath": ".target",
    },
    {
        "rule": "has(self.target) || (has(self.backends) && size(self.backends) > 0) || (has(self.maintenance) && self.maintenance.enabled)",
        "message": "a route needs spec.target or spec.backends (or an enabled spec.maintenance)",
        "fieldPath": ".target",
        "reason": "FieldValueRequired",
    },
]))]
pub struct RouteSpec {
    /// Names of the Gateways (in the route's namespace) this route attaches to.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub gateways: Vec<String>,
    /// Path prefix matched by this route (segment-aware: `/api` matches `/api` and `/api/x`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub path: String,
    /// Replaces the matched prefix upstream (`/api/x` with rewrite `/` becomes `/x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Single backend URL; mutually exclusive with backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Allowed methods (default: all); others get 405.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Whether the route is served (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Match order: higher matches first.
    #[serde(default)]
    pub priority: i32,
    /// Hosts of host-based routing: exact names or a leading `*.` wildcard (default: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Load-balanced backends; mutually exclusive with target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Active backend health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Per-route security settings.
    #[serde(default)]
    pub security: Security,
    /// Middleware names (in the route's namespace), applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<String>,
    /// Suppress the per-route Prometheus metrics.
    #[serde(default)]
    pub disable_metrics: bool,
    /// Certificate served for the route's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
    /// Answer with a static response instead of proxying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// Backend URL.
    #[schemars(length(min = 1))]
    pub endpoint: String,
    /// Load-balancing weight; when no backend sets one they share traffic equally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Only requests matching `match` reach this backend.
    #[serde(default)]
    pub exclusive: bool,
    /// Among exclusive backends whose rules all match, the highest priority wins.
    #[serde(default)]
    pub priority: i32,
    /// Request attributes that pin a request to this backend (all must match).
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<BackendMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendMatch {
    pub source: MatchSource,
    /// Header / cookie / query parameter name; unused for `ip`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub operator: MatchOperator,
    /// Comparison value (comma-separated for `in`).
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchSource {
    Header,
    Cookie,
    Query,
    Ip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchOperator {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Regex,
    In,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = require_path)]
pub struct HealthCheck {
    /// Health check path.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub path: String,
    /// Check interval (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "30s"))]
    pub interval: Option<String>,
    /// Per-check timeout (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "5s"))]
    pub timeout: Option<String>,
    /// Statuses that count as healthy (default: any below 400).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub healthy_statuses: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Security {
    /// Pass the client's Host header upstream (default true); otherwise Host is the backend's.
    #[serde(default = "default_true")]
    pub forward_host_headers: bool,
    /// Refuse requests with common SQL-injection, XSS and path-traversal patterns.
    #[serde(default)]
    pub enable_exploit_protection: bool,
    /// TLS towards https:// backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            forward_host_headers: true,
            enable_exploit_protection: false,
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    /// Skip verifying backend certificates (not recommended).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Secret with the CA bundle backend certificates are checked against.
    #[serde(
        rename = "rootCAsSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub root_cas_secret: Option<String>,
    /// kubernetes.io/tls Secret presented to backends (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = require_secret_name)]
pub struct RouteTls {
    /// kubernetes.io/tls Secret served for the route's hosts.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

pub const DEFAULT_MAINTENANCE_STATUS: u16 = 503;
pub const DEFAULT_MAINTENANCE_BODY: &str = "503 Service temporarily unavailable";

fn default_maintenance_status() -> u16 {
    DEFAULT_MAINTENANCE_STATUS
}

/// The operator writes `status`/`body`, the gateway reads `statusCode`/`message`: accept both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maintenance {
    /// Answer every request with the maintenance response.
    #[serde(default)]
    pub enabled: bool,
    /// Status of the response (default 503).
    #[serde(alias = "statusCode", default = "default_maintenance_status")]
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    /// Body of the response (default `503 Service temporarily unavailable`); JSON bodies are
    /// sent as application/json.
    #[serde(alias = "message", default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            enabled: false,
            status: DEFAULT_MAINTENANCE_STATUS,
            body: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Middleware {
    pub metadata: ObjectMeta,
    pub spec: MiddlewareSpec,
}

// `rule` stays untyped (as in Goma's CRD) so an object with a bad rule still loads and its error
// can be reported against it; `typed_rule` types it.
/// A named middleware that Routes of its namespace apply by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, CustomResource, JsonSchema)]
#[kube(
    group = "gateway.jkaninda.dev",
    version = "v1alpha1",
    kind = "Middleware",
    root = "MiddlewareResource",
    namespaced,
    status = "MiddlewareStatus",
    derive = "PartialEq",
    doc = "A Goma Middleware: authentication, traffic control or transformation that Routes of its namespace apply by name."
)]
#[kube(printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.type"}"#)]
#[kube(printcolumn = r#"{"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"}"#)]
#[kube(
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = middleware_rule::add_cel_rules)]
pub struct MiddlewareSpec {
    /// Middleware type; the aliases basicAuth, ldapAuth, jwtAuth and oauth2 are accepted.
    #[serde(rename = "type")]
    pub middleware_type: MiddlewareType,
    /// Paths the middleware applies to: regular expressions, exact paths or `/x/*` prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schemars(schema_with = "middleware_rule::rule_schema")]
    pub rule: serde_json::Value,
}

impl MiddlewareSpec {
    /// The rule typed by the middleware's type, or the first problem, naming its field.
    pub fn typed_rule(&self) -> Result<MiddlewareRule, RuleError> {
        middleware_rule::typed_rule(self.middleware_type, &self.rule)
    }
}

/// Every built-in Goma middleware type (the gateway's 22, a superset of the CRD's 17), with the
/// gateway's aliases folded into the canonical name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MiddlewareType {
    #[serde(alias = "basicAuth")]
    Basic,
    #[serde(alias = "ldapAuth")]
    Ldap,
    #[serde(alias = "jwtAuth")]
    Jwt,
    #[serde(alias = "oauth2")]
    Oauth,
    ForwardAuth,
    RateLimit,
    Access,
    AccessPolicy,
    GeoBlock,
    UserAgentBlock,
    BodyLimit,
    AddPrefix,
    RewriteRegex,
    StripQuery,
    Redirect,
    RedirectScheme,
    RedirectRegex,
    HttpCache,
    ResponseHeaders,
    RequestHeaders,
    AccessLog,
    ErrorInterceptor,
}

impl MiddlewareType {
    pub const ALL: [MiddlewareType; 22] = [
        MiddlewareType::Basic,
        MiddlewareType::Ldap,
        MiddlewareType::Jwt,
        MiddlewareType::Oauth,
        MiddlewareType::ForwardAuth,
        MiddlewareType::RateLimit,
        MiddlewareType::Access,
        MiddlewareType::AccessPolicy,
        MiddlewareType::GeoBlock,
        MiddlewareType::UserAgentBlock,
        MiddlewareType::BodyLimit,
        MiddlewareType::AddPrefix,
        MiddlewareType::RewriteRegex,
        MiddlewareType::StripQuery,
        MiddlewareType::Redirect,
        MiddlewareType::RedirectScheme,
        MiddlewareType::RedirectRegex,
        MiddlewareType::HttpCache,
        MiddlewareType::ResponseHeaders,
        MiddlewareType::RequestHeaders,
        MiddlewareType::AccessLog,
        MiddlewareType::ErrorInterceptor,
    ];

    /// The canonical name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            MiddlewareType::Basic => "basic",
            MiddlewareType::Ldap => "ldap",
            MiddlewareType::Jwt => "jwt",
            MiddlewareType::Oauth => "oauth",
            MiddlewareType::ForwardAuth => "forwardAuth",
            MiddlewareType::RateLimit => "rateLimit",
            MiddlewareType::Access => "access",
            MiddlewareType::AccessPolicy => "accessPolicy",
            MiddlewareType::GeoBlock => "geoBlock",
            MiddlewareType::UserAgentBlock => "userAgentBlock",
            MiddlewareType::BodyLimit => "bodyLimit",
            MiddlewareType::AddPrefix => "addPrefix",
            MiddlewareType::RewriteRegex => "rewriteRegex",
            MiddlewareType::StripQuery => "stripQuery",
            MiddlewareType::Redirect => "redirect",
            MiddlewareType::RedirectScheme => "redirectScheme",
            MiddlewareType::RedirectRegex => "redirectRegex",
            MiddlewareType::HttpCache => "httpCache",
            MiddlewareType::ResponseHeaders => "responseHeaders",
            MiddlewareType::RequestHeaders => "requestHeaders",
            MiddlewareType::AccessLog => "accessLog",
            MiddlewareType::ErrorInterceptor => "errorInterceptor",
        }
    }

    /// Goma's other spellings of the type.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            MiddlewareType::Basic => &["basicAuth"],
            MiddlewareType::Ldap => &["ldapAuth"],
            MiddlewareType::Jwt => &["jwtAuth"],
            MiddlewareType::Oauth => &["oauth2"],
            _ => &[],
        }
    }

    /// The canonical name and the aliases: every accepted spelling.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name()).chain(self.aliases().iter().copied())
    }
}

impl fmt::Display for MiddlewareType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Serde's aliases are invisible to schemars: list every spelling in the enum.
impl JsonSchema for MiddlewareType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MiddlewareType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Self::ALL.into_iter().flat_map(Self::names).collect();
        json_schema!({
            "type": "string",
            "enum": names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_middleware_type_deserialises_to_it() {
        for ty in MiddlewareType::ALL {
            for name in ty.names() {
                let parsed: MiddlewareType =
                    serde_json::from_value(serde_json::Value::String(name.to_owned()))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(parsed, ty, "{name}");
            }
            assert_eq!(
                serde_json::to_value(ty).unwrap(),
                serde_json::Value::String(ty.name().to_owned())
            );
        }
    }

    #[test]
    fn typed_rule_uses_the_spec_type() {
        let spec: MiddlewareSpec = serde_json::from_value(serde_json::json!({
            "type": "jwtAuth",
            "paths": ["/"],
            "rule": {"secret": "s"},
        }))
        .unwrap();
        assert!(matches!(spec.typed_rule(), Ok(MiddlewareRule::Jwt(_))));
        let spec = MiddlewareSpec {
            rule: serde_json::Value::Null,
            ..spec
        };
        assert_eq!(spec.typed_rule().unwrap_err().field, "spec.rule.secret");
    }
}
