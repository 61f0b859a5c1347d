//! Goma Gateway custom resources, `gateway.jkaninda.dev/v1alpha1`: Gateway, Route, Middleware.
//!
//! Field names and defaults follow the goma-operator CRDs. Spec structs deny unknown fields so a
//! typo such as `tagret` is reported instead of silently dropping the setting; `metadata` and the
//! top level (apiVersion, kind, status) stay lenient.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::meta::ObjectMeta;

pub const GROUP: &str = "gateway.jkaninda.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "gateway.jkaninda.dev/v1alpha1";

fn default_true() -> bool {
    true
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Default `jkaninda/goma-gateway:latest` in Goma; Sluice runs its own data-plane image.
    pub image: Option<String>,
    /// Default 1.
    pub replicas: Option<i32>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// corev1 ResourceRequirements, passed through to the Deployment.
    pub resources: Option<serde_json::Value>,
    /// corev1 Affinity, passed through to the Deployment.
    pub affinity: Option<serde_json::Value>,
    pub auto_scaling: Option<AutoScaling>,
    #[serde(default)]
    pub server: ServerSpec,
    pub providers: Option<Providers>,
    pub cert_manager: Option<CertManager>,
    #[serde(default)]
    pub service: ServiceSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoScaling {
    #[serde(default)]
    pub enabled: bool,
    /// Default 1.
    pub min_replicas: Option<i32>,
    /// Default 10.
    pub max_replicas: Option<i32>,
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<i32>,
    pub target_memory_utilization_percentage: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    pub timeouts: Option<Timeouts>,
    pub log_level: Option<LogLevel>,
    pub redis: Option<Redis>,
    pub monitoring: Option<Monitoring>,
    #[serde(default)]
    pub tls: Vec<SecretRef>,
    pub networking: Option<Networking>,
}

/// Seconds; Goma defaults read 30, write 60, idle 90.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub read: Option<i64>,
    pub write: Option<i64>,
    pub idle: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Info,
    Debug,
    Trace,
    Off,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub addr: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Monitoring {
    #[serde(default)]
    pub enable_metrics: bool,
    /// Default `/metrics`.
    pub metrics_path: Option<String>,
    pub host: Option<String>,
    pub middleware: Option<MonitoringMiddleware>,
    /// Documented by Goma, absent from its Go types.
    #[serde(rename = "visitorTTL")]
    pub visitor_ttl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoringMiddleware {
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// A reference to a `kubernetes.io/tls` Secret in the object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub secret_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    pub dns_cache: Option<DnsCache>,
    pub transport: Option<Transport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsCache {
    /// Seconds.
    pub ttl: Option<i64>,
    /// Documented by Goma, absent from its Go types.
    pub clear_on_reload: Option<bool>,
    /// Documented by Goma, absent from its Go types.
    #[serde(default)]
    pub resolver: Vec<String>,
}

/// Upstream pool knobs; Goma defaults 512 / 256 / 256.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transport {
    pub max_idle_conns: Option<i64>,
    pub max_idle_conns_per_host: Option<i64>,
    pub max_conns_per_host: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Providers {
    pub kubernetes: Option<KubernetesProvider>,
    pub http: Option<HttpProvider>,
    pub git: Option<GitProvider>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesProvider {
    /// Default true.
    pub enabled: Option<bool>,
    pub image: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProvider {
    #[serde(default)]
    pub enabled: bool,
    pub endpoint: Option<String>,
    /// Default `60s`.
    pub interval: Option<String>,
    /// Default `10s`.
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub headers_secret: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Default 3.
    pub retry_attempts: Option<i32>,
    /// Default `2s`.
    pub retry_delay: Option<String>,
    pub cache_dir: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitProvider {
    #[serde(default)]
    pub enabled: bool,
    pub url: Option<String>,
    /// Default `main`.
    pub branch: Option<String>,
    pub path: Option<String>,
    /// Default `60s`.
    pub interval: Option<String>,
    pub auth: Option<GitAuth>,
    pub clone_dir: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitAuth {
    #[serde(rename = "type")]
    pub auth_type: GitAuthType,
    pub secret_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitAuthType {
    Token,
    Basic,
    Ssh,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertManager {
    /// Only `acme` exists.
    pub provider: Option<CertProvider>,
    pub acme: Option<Acme>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertProvider {
    #[default]
    Acme,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Acme {
    /// Required by the CRD.
    pub email: Option<String>,
    pub directory_url: Option<String>,
    /// Default true.
    pub terms_accepted: Option<bool>,
    pub challenge_type: Option<ChallengeType>,
    pub dns_provider: Option<String>,
    pub credentials_secret: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(rename = "type", default)]
    pub service_type: ServiceType,
    #[serde(default = "default_http_port")]
    pub http_port: i32,
    #[serde(default = "default_https_port")]
    pub https_port: i32,
    pub http_node_port: Option<i32>,
    pub https_node_port: Option<i32>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    pub load_balancer_class: Option<String>,
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
    pub session_affinity: Option<SessionAffinity>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ip_family_policy: Option<IpFamilyPolicy>,
    #[serde(default)]
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalTrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Gateway names in the route's namespace; at least one (checked by translation).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Required; checked by translation so the error names the field like the others.
    #[serde(default)]
    pub path: String,
    pub rewrite: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Higher matches first (the CRD docs; Goma's runtime did lower first).
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub middlewares: Vec<String>,
    #[serde(default)]
    pub disable_metrics: bool,
    pub tls: Option<RouteTls>,
    pub maintenance: Option<Maintenance>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    pub endpoint: String,
    /// Absent counts as 0; when no backend sets a weight they share traffic equally.
    pub weight: Option<u32>,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub priority: i32,
    #[serde(rename = "match", default)]
    pub matches: Vec<BackendMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendMatch {
    pub source: MatchSource,
    /// Header / cookie / query parameter name; unused for `ip`.
    #[serde(default)]
    pub name: String,
    pub operator: MatchOperator,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchSource {
    Header,
    Cookie,
    Query,
    Ip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub path: String,
    /// Default `30s`.
    pub interval: Option<String>,
    /// Default `5s`.
    pub timeout: Option<String>,
    #[serde(default)]
    pub healthy_statuses: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Security {
    #[serde(default = "default_true")]
    pub forward_host_headers: bool,
    #[serde(default)]
    pub enable_exploit_protection: bool,
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(rename = "rootCAsSecret")]
    pub root_cas_secret: Option<String>,
    pub client_cert_secret: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTls {
    #[serde(default)]
    pub secret_name: String,
}

pub const DEFAULT_MAINTENANCE_STATUS: u16 = 503;
pub const DEFAULT_MAINTENANCE_BODY: &str = "503 Service temporarily unavailable";

fn default_maintenance_status() -> u16 {
    DEFAULT_MAINTENANCE_STATUS
}

/// The operator writes `status`/`body`, the gateway reads `statusCode`/`message`: accept both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maintenance {
    #[serde(default)]
    pub enabled: bool,
    #[serde(alias = "statusCode", default = "default_maintenance_status")]
    pub status: u16,
    #[serde(alias = "message")]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MiddlewareSpec {
    #[serde(rename = "type")]
    pub middleware_type: MiddlewareType,
    #[serde(default)]
    pub paths: Vec<String>,
    /// Untyped in Goma's CRD; typed per middleware type when middlewares are implemented.
    #[serde(default)]
    pub rule: serde_json::Value,
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
