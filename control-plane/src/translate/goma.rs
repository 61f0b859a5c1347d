//! Goma Gateway objects to config resources: a Gateway becomes its listeners, a Route one
//! `Route` resource plus one `Cluster` per backend.
//!
//! A route's middlewares are translated with it (`translate::middleware`); one that is missing,
//! invalid or not enforceable withdraws the route (fail closed) with an error naming the
//! reference, rather than serving it without the protection. `https://` backends
//! become TLS clusters; `spec.security.tls` sets how they are verified and authenticated.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use sluice_proto::config as pb;

use super::middleware::{MiddlewareSource, RouteContext, translate_middleware};
use super::{Errors, TranslateError, parse_go_duration, pb_duration};
use crate::model::goma::{self, MatchOperator, MatchSource};
use crate::model::{Kind, ObjectKey};

/// The listeners every Goma route attaches to (the HTTPS one exists when the Gateway has TLS).
pub const HTTP_LISTENER: &str = "http";
pub const HTTPS_LISTENER: &str = "https";

const CONNECT_TIMEOUT_SECS: i64 = 5;

const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The resources one Goma Route contributes.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedRoute {
    pub route: pb::Route,
    pub clusters: Vec<pb::Cluster>,
    /// Accepted but without effect (e.g. security.tls with no https backend); for logs and status.
    pub warnings: Vec<String>,
    /// Secret resources the route's middlewares read.
    pub middleware_secrets: Vec<String>,
}

/// `route/<ns>/<name>`: the Route resource name of a Goma Route.
pub fn route_resource_name(namespace: &str, name: &str) -> String {
    format!("route/{namespace}/{name}")
}

/// `route/<ns>/<name>/backend-<i>`: the Cluster of backend `i` (`target` is backend 0).
pub fn cluster_resource_name(namespace: &str, name: &str, index: usize) -> String {
    format!("route/{namespace}/{name}/backend-{index}")
}

/// A Gateway's listeners: HTTP on `spec.service.httpPort` (8080 by default), and HTTPS on
/// `spec.service.httpsPort` (8443) serving the `spec.server.tls` certificates when there are any.
pub fn translate_gateway(
    gw: &goma::Gateway,
) -> Result<(Vec<pb::Listener>, Vec<String>), TranslateError> {
    let source =
        ObjectKey::new(Kind::GomaGateway, &gw.metadata.namespace, &gw.metadata.name).to_string();
    let spec = &gw.spec;
    let mut errors = Errors::default();
    let mut warnings = Vec::new();

    let port = port_in_range(spec.service.http_port);
    if port.is_none() {
        errors.push(
            "spec.service.httpPort",
            format!("{} is not a port (1-65535)", spec.service.http_port),
        );
    }
    let https_port = port_in_range(spec.service.https_port);
    if !spec.server.tls.is_empty() && https_port.is_none() {
        errors.push(
            "spec.service.httpsPort",
            format!("{} is not a port (1-65535)", spec.service.https_port),
        );
    }
    if https_port.is_some() && https_port == port && !spec.server.tls.is_empty() {
        errors.push(
            "spec.service.httpsPort",
            "must differ from spec.service.httpPort",
        );
    }
    for (i, t) in spec.server.tls.iter().enumerate() {
        if t.secret_name.is_empty() {
            errors.push(format!("spec.server.tls[{i}].secretName"), "required");
        }
    }
    if spec.cert_manager.is_some() {
        warnings.push("spec.certManager: ACME certificates are not issued yet".to_owned());
    }
    let http = http_settings(&spec.server, &mut errors);
    errors.into_result(&source)?;

    let mut listeners = vec![pb::Listener {
        name: HTTP_LISTENER.to_owned(),
        port: port.map_or(0, u32::from),
        protocol: pb::Protocol::Http as i32,
        hostname: String::new(),
        source: source.clone(),
        tls: None,
        http: Some(http.clone()),
    }];
    if !spec.server.tls.is_empty() {
        let ns = &gw.metadata.namespace;
        listeners.push(pb::Listener {
            name: HTTPS_LISTENER.to_owned(),
            port: https_port.map_or(0, u32::from),
            protocol: pb::Protocol::Https as i32,
            hostname: String::new(),
            source,
            tls: Some(pb::ListenerTls {
                certificate_secrets: spec
                    .server
                    .tls
                    .iter()
                    .map(|t| secret_resource_name(ns, &t.secret_name))
                    .collect(),
                ..Default::default()
            }),
            http: Some(http),
        });
    }
    Ok((listeners, warnings))
}

/// `spec.server` timeouts (seconds, 0 = none), metrics endpoint and upstream networking.
fn http_settings(server: &goma::ServerSpec, errors: &mut Errors) -> pb::HttpSettings {
    let mut seconds = |field: &str, value: Option<i64>| {
        let v = value?;
        match u64::try_from(v) {
            Ok(secs) => Some(pb_duration(Duration::from_secs(secs))),
            Err(_) => {
                errors.push(
                    format!("spec.server.timeouts.{field}"),
                    format!("{v} must not be negative"),
                );
                None
            }
        }
    };
    let timeouts = server.timeouts.clone().unwrap_or_default();
    let read_timeout = seconds("read", timeouts.read);
    let write_timeout = seconds("write", timeouts.write);
    let idle_timeout = seconds("idle", timeouts.idle);

    let metrics = server
        .monitoring
        .as_ref()
        .filter(|m| m.enable_metrics)
        .map(|m| {
            let path = m.metrics_path.clone().unwrap_or_else(|| "/metrics".into());
            if !path.starts_with('/') {
                errors.push(
                    "spec.server.monitoring.metricsPath",
                    format!("{path:?} must start with \"/\""),
                );
            }
            let host = match m.host.as_deref().map(str::trim) {
                None | Some("") => String::new(),
                Some(h) => normalize_host(h).unwrap_or_else(|reason| {
                    errors.push("spec.server.monitoring.host", reason);
                    String::new()
                }),
            };
            pb::MetricsEndpoint { path, host }
        });

    let networking = server.networking.clone().unwrap_or_default();
    let transport = networking.transport.unwrap_or_default();
    let mut count = |field: &str, value: Option<i64>| match value {
        None => 0,
        Some(v) => u32::try_from(v).unwrap_or_else(|_| {
            errors.push(
                format!("spec.server.networking.transport.{field}"),
                format!("{v} is not a count (0-4294967295)"),
            );
            0
        }),
    };
    let pool = pb::ConnectionPool {
        max_connections_per_endpoint: count("maxConnsPerHost", transport.max_conns_per_host),
        max_idle_per_endpoint: count("maxIdleConnsPerHost", transport.max_idle_conns_per_host),
        idle_timeout: None,
    };
    let dns_ttl =
        networking
            .dns_cache
            .and_then(|d| d.ttl)
            .and_then(|ttl| match u64::try_from(ttl) {
                Ok(secs) => Some(pb_duration(Duration::from_secs(secs))),
                Err(_) => {
                    errors.push(
                        "spec.server.networking.dnsCache.ttl",
                        format!("{ttl} must not be negative"),
                    );
                    None
                }
            });
    let shared_store = server.redis.as_ref().and_then(|r| {
        let address = r.addr.as_deref().map(str::trim).unwrap_or_default();
        if address.is_empty() {
            return None;
        }
        if !address.contains(':') {
            errors.push(
                "spec.server.redis.addr",
                format!("{address:?} is not host:port"),
            );
        }
        Some(pb::SharedStore {
            redis_address: address.to_owned(),
            redis_password: r.password.clone().unwrap_or_default(),
        })
    });
    pb::HttpSettings {
        read_timeout,
        write_timeout,
        idle_timeout,
        trusted_proxies: Vec::new(),
        shared_store,
        metrics,
        upstream_defaults: Some(pb::UpstreamDefaults {
            pool: Some(pool),
            dns_ttl,
        }),
    }
}

/// `<ns>/<name>`: the Secret resource name of a Kubernetes Secret.
pub fn secret_resource_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn port_in_range(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// A Route's resources, or `Ok(None)` when `spec.enabled` is false. Every invalid field is
/// reported in one error.
pub fn translate_route(
    route: &goma::Route,
    middlewares: &dyn MiddlewareSource,
) -> Result<Option<TranslatedRoute>, TranslateError> {
    let spec = &route.spec;
    if !spec.enabled {
        return Ok(None);
    }
    let (ns, name) = (&route.metadata.namespace, &route.metadata.name);
    let source = ObjectKey::new(Kind::GomaRoute, ns, name).to_string();
    let mut errors = Errors::default();
    let mut warnings = Vec::new();

    if spec.gateways.is_empty() {
        errors.push("spec.gateways", "at least one Gateway name is required");
    }
    for (i, gw) in spec.gateways.iter().enumerate() {
        if gw.trim().is_empty() {
            errors.push(format!("spec.gateways[{i}]"), "must not be empty");
        }
    }

    let path = normalize_path(&spec.path).unwrap_or_else(|reason| {
        errors.push("spec.path", reason);
        String::new()
    });

    let mut hostnames: Vec<String> = Vec::new();
    for (i, host) in spec.hosts.iter().enumerate() {
        match normalize_host(host) {
            Ok(h) if !hostnames.contains(&h) => hostnames.push(h),
            Ok(_) => {}
            Err(reason) => errors.push(format!("spec.hosts[{i}]"), reason),
        }
    }

    let mut allowed_methods: Vec<String> = Vec::new();
    for (i, method) in spec.methods.iter().enumerate() {
        let upper = method.trim().to_ascii_uppercase();
        if !STANDARD_METHODS.contains(&upper.as_str()) {
            errors.push(
                format!("spec.methods[{i}]"),
                format!(
                    "{method:?} is not a standard HTTP method ({})",
                    STANDARD_METHODS.join(", ")
                ),
            );
        } else if !allowed_methods.contains(&upper) {
            allowed_methods.push(upper);
        }
    }

    let path_rewrite = spec.rewrite.as_ref().and_then(|rewrite| {
        if rewrite.starts_with('/') {
            Some(pb::PathRewrite {
                kind: Some(pb::path_rewrite::Kind::ReplacePrefix(rewrite.clone())),
            })
        } else {
            errors.push("spec.rewrite", format!("{rewrite:?} must start with \"/\""));
            None
        }
    });

    fail_closed(spec, &mut errors);
    let upstream_tls = upstream_tls(ns, spec, &mut errors);
    let health_check = spec
        .health_check
        .as_ref()
        .and_then(|hc| health_check(hc, &mut errors));

    let maintenance = spec.maintenance.as_ref().filter(|m| m.enabled);
    let (backends, clusters) = match (&spec.target, spec.backends.is_empty()) {
        (Some(_), false) => {
            errors.push(
                "spec.target",
                "spec.target and spec.backends are mutually exclusive",
            );
            (Vec::new(), Vec::new())
        }
        (None, true) => {
            if maintenance.is_none() {
                errors.push(
                    "spec.target",
                    "a route needs spec.target or spec.backends (or an enabled spec.maintenance)",
                );
            }
            (Vec::new(), Vec::new())
        }
        (Some(target), true) => {
            let cluster_name = cluster_resource_name(ns, name, 0);
            match parse_endpoint(target) {
                Ok(endpoint) => (
                    vec![pb::WeightedBackend {
                        cluster: cluster_name.clone(),
                        weight: 1,
                        ..Default::default()
                    }],
                    vec![cluster(cluster_name, &source, endpoint, &upstream_tls)],
                ),
                Err(reason) => {
                    errors.push("spec.target", reason);
                    (Vec::new(), Vec::new())
                }
            }
        }
        (None, false) => translate_backends(
            ns,
            name,
            &source,
            &spec.backends,
            &upstream_tls,
            &mut errors,
            &mut warnings,
        ),
    };
    if spec.security.tls.is_some() && !clusters.iter().any(|c| c.tls.is_some()) {
        warnings.push(
            "spec.security.tls is set but no backend uses https://; it has no effect".to_owned(),
        );
    }

    let action = match maintenance {
        Some(m) => {
            if !(100..=599).contains(&m.status) {
                errors.push(
                    "spec.maintenance.status",
                    format!("{} is not an HTTP status (100-599)", m.status),
                );
            }
            let body = m
                .body
                .clone()
                .unwrap_or_else(|| goma::DEFAULT_MAINTENANCE_BODY.to_owned());
            let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            pb::route::Action::DirectResponse(pb::DirectResponse {
                status: u32::from(m.status),
                body,
                content_type: content_type.to_owned(),
            })
        }
        None => pb::route::Action::Forward(pb::ForwardAction {
            backends,
            path_rewrite,
            preserve_host: spec.security.forward_host_headers,
            timeout: None,
            backend_timeout: None,
            retry: None,
            ..Default::default()
        }),
    };
    let context = RouteContext {
        namespace: ns,
        route_name: name,
        route_path: &path,
        route_target: spec.target.as_deref().unwrap_or_default(),
    };
    let mut route_middlewares = Vec::with_capacity(spec.middlewares.len());
    let mut middleware_clusters = Vec::new();
    let mut middleware_secrets = Vec::new();
    for (i, mw_name) in spec.middlewares.iter().enumerate() {
        let field = format!("spec.middlewares[{i}]");
        let Some(mw) = middlewares.middleware(ns, mw_name) else {
            errors.push_fail_closed(
                field,
                format!(
                    "Middleware {ns}/{mw_name} does not exist; the route is not served without it"
                ),
            );
            continue;
        };
        match translate_middleware(mw, &context) {
            Ok(t) => {
                route_middlewares.push(t.middleware);
                middleware_clusters.extend(t.clusters);
                middleware_secrets.extend(t.secrets);
            }
            // An invalid edit keeps the last good version of the route (with the middleware's
            // last good rule); a type this version cannot enforce withdraws it.
            Err(field_errors) => {
                let reasons: Vec<String> = field_errors.iter().map(ToString::to_string).collect();
                let reason = format!(
                    "Middleware {ns}/{mw_name} cannot be applied ({}); the route is not served without it",
                    reasons.join("; ")
                );
                if field_errors.iter().any(|e| e.fail_closed) {
                    errors.push_fail_closed(field, reason);
                } else {
                    errors.push(field, reason);
                }
            }
        }
    }
    errors.into_result(&source)?;

    // Maintenance answers directly: no upstream is contacted, so none is published.
    let mut clusters: Vec<pb::Cluster> = if maintenance.is_some() {
        Vec::new()
    } else {
        clusters
            .into_iter()
            .map(|c| pb::Cluster {
                health_check: health_check.clone(),
                ..c
            })
            .collect()
    };
    clusters.extend(middleware_clusters);
    let route = pb::Route {
        name: route_resource_name(ns, name),
        source,
        listeners: vec![HTTP_LISTENER.to_owned(), HTTPS_LISTENER.to_owned()],
        certificate_secret: spec
            .tls
            .as_ref()
            .map(|t| secret_resource_name(ns, &t.secret_name))
            .unwrap_or_default(),
        hostnames,
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: path,
            }),
            ..Default::default()
        }],
        priority: spec.priority,
        allowed_methods,
        disable_metrics: spec.disable_metrics,
        // Goma's metrics name routes by their own name; dashboards keep showing "api".
        metrics_name: name.clone(),
        exploit_protection: spec.security.enable_exploit_protection,
        middlewares: route_middlewares,
        action: Some(action),
        ..Default::default()
    };
    Ok(Some(TranslatedRoute {
        route,
        clusters,
        warnings,
        middleware_secrets,
    }))
}

/// Settings this version cannot enforce: refusing the route beats serving it unprotected.
fn fail_closed(spec: &goma::RouteSpec, errors: &mut Errors) {
    if let Some(tls) = &spec.tls
        && tls.secret_name.is_empty()
    {
        errors.push("spec.tls.secretName", "required when spec.tls is set");
    }
}

/// The TLS settings `spec.security.tls` gives every https backend of the route (server names are
/// filled in per backend). Each setting works on its own (unlike Goma, where rootCAs needed a
/// client certificate too).
fn upstream_tls(ns: &str, spec: &goma::RouteSpec, errors: &mut Errors) -> pb::UpstreamTls {
    let Some(tls) = &spec.security.tls else {
        return pb::UpstreamTls::default();
    };
    let mut secret = |field: &str, value: &Option<String>| match value.as_deref() {
        None => String::new(),
        Some(v) if v.trim().is_empty() || v.contains('/') => {
            errors.push(
                format!("spec.security.tls.{field}"),
                format!("{v:?} is not a Secret name in the route's namespace"),
            );
            String::new()
        }
        Some(v) => secret_resource_name(ns, v.trim()),
    };
    pb::UpstreamTls {
        server_name: String::new(),
        ca_secret: secret("rootCAsSecret", &tls.root_cas_secret),
        client_certificate_secret: secret("clientCertSecret", &tls.client_cert_secret),
        insecure_skip_verify: tls.insecure_skip_verify,
        ..Default::default()
    }
}

fn translate_backends(
    ns: &str,
    name: &str,
    source: &str,
    backends: &[goma::Backend],
    upstream_tls: &pb::UpstreamTls,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> (Vec<pb::WeightedBackend>, Vec<pb::Cluster>) {
    // Goma: no weights at all means plain round robin, i.e. equal shares.
    let weighted = backends.iter().any(|b| b.weight.unwrap_or(0) > 0);
    let mut out = Vec::new();
    let mut clusters = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        let cluster_name = cluster_resource_name(ns, name, i);
        match parse_endpoint(&backend.endpoint) {
            Ok(endpoint) => clusters.push(cluster(
                cluster_name.clone(),
                source,
                endpoint,
                upstream_tls,
            )),
            Err(reason) => errors.push(format!("spec.backends[{i}].endpoint"), reason),
        }
        let mut matches = Vec::new();
        for (j, m) in backend.matches.iter().enumerate() {
            match backend_match(m) {
                Ok(bm) => matches.push(bm),
                Err((field, reason)) => {
                    errors.push(format!("spec.backends[{i}].match[{j}].{field}"), reason)
                }
            }
        }
        if backend.exclusive && backend.matches.is_empty() {
            warnings.push(format!(
                "spec.backends[{i}]: exclusive without match rules; this backend never receives traffic"
            ));
        }
        out.push(pb::WeightedBackend {
            cluster: cluster_name,
            weight: if weighted {
                backend.weight.unwrap_or(0)
            } else {
                1
            },
            r#match: matches,
            exclusive: backend.exclusive,
            priority: backend.priority,
            ..Default::default()
        });
    }
    (out, clusters)
}

/// Err carries the sub-field (`name`, `value`) and the reason.
fn backend_match(m: &goma::BackendMatch) -> Result<pb::BackendMatch, (&'static str, String)> {
    use pb::string_match::Kind as K;
    let source = match m.source {
        MatchSource::Header => pb::backend_match::Source::Header,
        MatchSource::Cookie => pb::backend_match::Source::Cookie,
        MatchSource::Query => pb::backend_match::Source::Query,
        MatchSource::Ip => pb::backend_match::Source::Ip,
    };
    if m.source != MatchSource::Ip && m.name.trim().is_empty() {
        return Err((
            "name",
            "required for header, cookie and query matches".to_owned(),
        ));
    }
    let (kind, invert) = match m.operator {
        MatchOperator::Equals => (K::Exact, false),
        MatchOperator::NotEquals => (K::Exact, true),
        MatchOperator::Contains => (K::Contains, false),
        MatchOperator::NotContains => (K::Contains, true),
        MatchOperator::StartsWith => (K::Prefix, false),
        MatchOperator::EndsWith => (K::Suffix, false),
        MatchOperator::Regex => (K::Regex, false),
        MatchOperator::In => (K::OneOf, false),
    };
    let mut value = pb::StringMatch {
        kind: kind as i32,
        invert,
        ..Default::default()
    };
    match m.operator {
        MatchOperator::Regex => {
            if let Err(e) = regex::Regex::new(&m.value) {
                return Err((
                    "value",
                    format!("invalid regular expression: {}", one_line(&e.to_string())),
                ));
            }
            value.value = m.value.clone();
        }
        MatchOperator::In => {
            value.values = m
                .value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            if value.values.is_empty() {
                return Err((
                    "value",
                    "operator in needs a comma-separated list of values".to_owned(),
                ));
            }
        }
        _ => value.value = m.value.clone(),
    }
    Ok(pb::BackendMatch {
        source: source as i32,
        name: if m.source == MatchSource::Ip {
            String::new()
        } else {
            m.name.trim().to_owned()
        },
        value: Some(value),
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A backend URL, parsed.
pub(crate) struct ParsedEndpoint {
    /// An IP (IPv6 without brackets) or a lowercased DNS name.
    address: String,
    port: u16,
    https: bool,
    /// HTTP/2 to the backend (`h2c://`, `grpc://` prior knowledge; `grpcs://` h2 by ALPN).
    http2: bool,
}

/// `tls` is the route's upstream TLS template, used when the endpoint is https.
pub(crate) fn cluster(
    name: String,
    source: &str,
    endpoint: ParsedEndpoint,
    tls: &pb::UpstreamTls,
) -> pb::Cluster {
    let tls = endpoint.https.then(|| pb::UpstreamTls {
        // The certificate is checked against the DNS name; for an IP the data plane uses it.
        server_name: if is_dns_name(&endpoint.address)
            && endpoint.address.parse::<Ipv4Addr>().is_err()
        {
            endpoint.address.clone()
        } else {
            String::new()
        },
        ..tls.clone()
    });
    pb::Cluster {
        name,
        source: source.to_owned(),
        endpoints: vec![pb::Endpoint {
            address: endpoint.address,
            port: u32::from(endpoint.port),
            weight: 1,
        }],
        lb_policy: pb::LbPolicy::RoundRobin as i32,
        protocol: if endpoint.http2 {
            pb::UpstreamProtocol::H2c
        } else {
            pb::UpstreamProtocol::Http1
        } as i32,
        connect_timeout: Some(prost_types::Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        tls,
        health_check: None,
        outlier_detection: None,
        pool: None,
    }
}

/// Goma has no thresholds (one result flips the state); these damp flapping.
const HEALTHY_THRESHOLD: u32 = 1;
const UNHEALTHY_THRESHOLD: u32 = 3;

/// `spec.healthCheck`: interval defaults to 30s and timeout to 5s (Goma: no timeout at all).
fn health_check(hc: &goma::HealthCheck, errors: &mut Errors) -> Option<pb::HealthCheck> {
    let mut ok = true;
    if !hc.path.starts_with('/') {
        errors.push(
            "spec.healthCheck.path",
            format!("{:?} must be a path starting with \"/\"", hc.path),
        );
        ok = false;
    }
    let mut duration = |field: &str, value: &Option<String>, default: u64| match value {
        None => Some(pb_duration(Duration::from_secs(default))),
        Some(text) => match parse_go_duration(text) {
            Ok(d) if !d.is_zero() => Some(pb_duration(d)),
            Ok(_) => {
                errors.push(format!("spec.healthCheck.{field}"), "must be more than 0");
                None
            }
            Err(reason) => {
                errors.push(format!("spec.healthCheck.{field}"), reason);
                None
            }
        },
    };
    let interval = duration("interval", &hc.interval, 30);
    let timeout = duration("timeout", &hc.timeout, 5);
    for (i, status) in hc.healthy_statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.push(
                format!("spec.healthCheck.healthyStatuses[{i}]"),
                format!("{status} is not an HTTP status (100-599)"),
            );
            ok = false;
        }
    }
    if !ok || interval.is_none() || timeout.is_none() {
        return None;
    }
    Some(pb::HealthCheck {
        path: hc.path.clone(),
        interval,
        timeout,
        healthy_statuses: hc.healthy_statuses.iter().map(|s| u32::from(*s)).collect(),
        healthy_threshold: HEALTHY_THRESHOLD,
        unhealthy_threshold: UNHEALTHY_THRESHOLD,
    })
}

/// `/api/` -> `/api`; `/` stays.
fn normalize_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("required".to_owned());
    }
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with \"/\""));
    }
    if path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!(
            "{path:?} must be a plain path (no spaces, query or fragment)"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// Lowercased exact host or `*.domain`; no port.
fn normalize_host(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    if lower.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if lower.contains(char::is_whitespace) {
        return Err(format!("{host:?} must not contain spaces"));
    }
    if lower.contains(':') || lower.contains('[') {
        return Err(format!("{host:?}: a host must not carry a port"));
    }
    if lower == "*" {
        return Err("\"*\" is not a hostname; leave spec.hosts empty to match any host".to_owned());
    }
    let domain = match lower.strip_prefix("*.") {
        Some(rest) => rest,
        None => &lower,
    };
    if domain.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard is only allowed as the whole first label (\"*.example.com\")"
        ));
    }
    if !is_dns_name(domain) {
        return Err(format!("{host:?} is not a valid hostname"));
    }
    Ok(lower)
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `scheme://host[:port][/]`. Goma's `http` and `https` speak HTTP/1.1 to the backend; the
/// Sluice extensions `h2c` and `grpc` (plaintext HTTP/2 with prior knowledge) and `grpcs` (HTTP/2
/// over TLS) select an HTTP/2 upstream, which gRPC needs. The port defaults to 443 with TLS,
/// 80 without.
pub(crate) fn parse_endpoint(url: &str) -> Result<ParsedEndpoint, String> {
    const EXPECTED: &str = "expected http[s]://, h2c://, grpc[s]:// host[:port]";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL ({EXPECTED})"));
    };
    let (https, http2) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (false, false),
        "https" => (true, false),
        "h2c" | "grpc" => (false, true),
        "grpcs" => (true, true),
        other => {
            return Err(format!("unsupported scheme {other:?} ({EXPECTED})"));
        }
    };
    if url.contains(char::is_whitespace) {
        return Err(format!("{url:?} must not contain spaces"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail.contains('?') {
        return Err(format!(
            "{url:?}: a query string is not supported in a backend URL"
        ));
    }
    if tail.contains('#') {
        return Err(format!(
            "{url:?}: a fragment is not supported in a backend URL"
        ));
    }
    if !tail.is_empty() && tail != "/" {
        return Err(format!(
            "{url:?}: a path in the backend URL is not supported (use spec.rewrite to change the upstream path)"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "{url:?}: credentials (user@) in the backend URL are not supported"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return Err(format!("{url:?}: unterminated IPv6 address"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: {ip:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: unexpected {p:?} after the address"))?,
            ),
        };
        (ip.to_owned(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing"));
    }
    if !host.contains(':') && host.parse::<Ipv4Addr>().is_err() && !is_dns_name(&host) {
        return Err(format!("{url:?}: {host:?} is not a valid host"));
    }
    let port = match port {
        None if https => 443,
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("{url:?}: {p:?} is not a port (1-65535)")),
        },
    };
    Ok(ParsedEndpoint {
        address: host,
        port,
        https,
        http2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes here name no existing Middleware (middleware tests: `translate::middleware`).
    fn translate_route(route: &goma::Route) -> Result<Option<TranslatedRoute>, TranslateError> {
        super::translate_route(route, &())
    }
    use crate::model::Object;
    use crate::provider::file::parse_manifests;
    use std::path::Path;

    /// A Route `default/api` with the given spec (YAML, indented by two spaces).
    fn route(spec: &str) -> goma::Route {
        let yaml = format!("metadata:\n  name: api\n  namespace: default\nspec:\n{spec}");
        serde_saphyr::from_str(&yaml).expect("test route parses")
    }

    fn ok(spec: &str) -> TranslatedRoute {
        translate_route(&route(spec))
            .expect("translates")
            .expect("enabled")
    }

    /// The error text of a route that must fail.
    fn err(spec: &str) -> String {
        translate_route(&route(spec))
            .expect_err("must fail")
            .to_string()
    }

    fn forward(t: &TranslatedRoute) -> &pb::ForwardAction {
        match &t.route.action {
            Some(pb::route::Action::Forward(f)) => f,
            other => panic!("not a forward action: {other:?}"),
        }
    }

    const BASE: &str = "  gateways: [gateway]\n  path: /api\n";

    #[test]
    fn seed_minimal_route() {
        let (objects, diags) = parse_manifests(
            Path::new("seed.yaml"),
            include_str!("../../tests/fixtures/goma-seed-routes.yaml"),
        );
        assert!(diags.is_empty(), "{diags:?}");
        let Object::GomaRoute(api) = &objects[0] else {
            panic!("not a route")
        };
        let t = translate_route(api).expect("ok").expect("enabled");
        assert_eq!(
            t.route,
            pb::Route {
                name: "route/default/api".into(),
                source: "Route default/api".into(),
                listeners: vec!["http".into(), "https".into()],
                hostnames: vec!["api.example.com".into()],
                certificate_secret: String::new(),
                matches: vec![pb::RouteMatch {
                    path: Some(pb::PathMatch {
                        kind: pb::path_match::Kind::Prefix as i32,
                        value: "/".into()
                    }),
                    ..Default::default()
                }],
                priority: 0,
                allowed_methods: vec!["GET".into(), "POST".into()],
                metrics_name: "api".into(),
                action: Some(pb::route::Action::Forward(pb::ForwardAction {
                    backends: vec![pb::WeightedBackend {
                        cluster: "route/default/api/backend-0".into(),
                        weight: 1,
                        ..Default::default()
                    }],
                    path_rewrite: None,
                    preserve_host: true,
                    ..Default::default()
                })),
                ..Default::default()
            }
        );
        assert_eq!(
            t.clusters,
            [pb::Cluster {
                name: "route/default/api/backend-0".into(),
                source: "Route default/api".into(),
                endpoints: vec![pb::Endpoint {
                    address: "api-service.default.svc.cluster.local".into(),
                    port: 8080,
                    weight: 1
                }],
                lb_policy: pb::LbPolicy::RoundRobin as i32,
                protocol: pb::UpstreamProtocol::Http1 as i32,
                connect_timeout: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0
                }),
                health_check: None,
                outlier_detection: None,
                pool: None,
                tls: None,
            }]
        );
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn seed_load_balanced_route_with_canary() {
        let (objects, _) = parse_manifests(
            Path::new("seed.yaml"),
            include_str!("../../tests/fixtures/goma-seed-routes.yaml"),
        );
        let Object::GomaRoute(lb) = &objects[1] else {
            panic!("not a route")
        };
        let t = translate_route(lb).expect("ok").expect("enabled");
        let f = forward(&t);
        assert_eq!(
            f.path_rewrite,
            Some(pb::PathRewrite {
                kind: Some(pb::path_rewrite::Kind::ReplacePrefix("/".into()))
            })
        );
        let weights: Vec<(u32, bool)> =
            f.backends.iter().map(|b| (b.weight, b.exclusive)).collect();
        assert_eq!(weights, [(80, false), (20, false), (0, true)]);
        assert_eq!(
            f.backends[2].r#match,
            [pb::BackendMatch {
                source: pb::backend_match::Source::Header as i32,
                name: "X-Canary".into(),
                value: Some(pb::StringMatch {
                    kind: pb::string_match::Kind::Exact as i32,
                    value: "true".into(),
                    ..Default::default()
                }),
            }]
        );
        let names: Vec<&str> = t.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "route/default/api-lb/backend-0",
                "route/default/api-lb/backend-1",
                "route/default/api-lb/backend-2"
            ]
        );
        assert_eq!(
            t.clusters[2].endpoints[0].address,
            "api-canary.default.svc.cluster.local"
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        // The route's health check probes every backend.
        for c in &t.clusters {
            assert_eq!(
                c.health_check,
                Some(pb::HealthCheck {
                    path: "/healthz".into(),
                    interval: Some(pb_duration(Duration::from_secs(15))),
                    timeout: Some(pb_duration(Duration::from_secs(3))),
                    healthy_statuses: vec![200, 204],
                    healthy_threshold: 1,
                    unhealthy_threshold: 3,
                })
            );
        }
    }

    #[test]
    fn health_check_fields_are_checked() {
        let e = translate_route(&route(&format!(
            "{BASE}  target: http://a\n  healthCheck: {{path: health, interval: 10x, timeout: 0s, healthyStatuses: [200, 700]}}\n"
        )))
        .expect_err("invalid health check")
        .to_string();
        for field in [
            "spec.healthCheck.path: \"health\" must be a path",
            "spec.healthCheck.interval: \"10x\": unknown unit",
            "spec.healthCheck.timeout: must be more than 0",
            "spec.healthCheck.healthyStatuses[1]: 700 is not an HTTP status",
        ] {
            assert!(e.contains(field), "{field} in {e}");
        }
    }

    #[test]
    fn route_security_flags_reach_the_route() {
        let t = translate_route(&route(&format!(
            "{BASE}  target: http://a\n  disableMetrics: true\n  security: {{enableExploitProtection: true}}\n"
        )))
        .expect("ok")
        .expect("enabled");
        assert!(t.route.disable_metrics);
        assert!(t.route.exploit_protection);
    }

    #[test]
    fn gateway_server_settings() {
        let (listeners, _) = translate_gateway(&gateway(
            "  server:\n    timeouts: {read: 10, write: 0, idle: 120}\n    monitoring: {enableMetrics: true, host: Metrics.Example.com}\n    networking: {dnsCache: {ttl: 60}, transport: {maxConnsPerHost: 64, maxIdleConnsPerHost: 8}}\n",
        ))
        .expect("ok");
        let http = listeners[0].http.clone().expect("http settings");
        assert_eq!(
            http.read_timeout,
            Some(pb_duration(Duration::from_secs(10)))
        );
        assert_eq!(http.write_timeout, Some(pb_duration(Duration::ZERO)));
        assert_eq!(
            http.idle_timeout,
            Some(pb_duration(Duration::from_secs(120)))
        );
        assert_eq!(
            http.metrics,
            Some(pb::MetricsEndpoint {
                path: "/metrics".into(),
                host: "metrics.example.com".into()
            })
        );
        let upstream = http.upstream_defaults.expect("defaults");
        assert_eq!(upstream.dns_ttl, Some(pb_duration(Duration::from_secs(60))));
        assert_eq!(
            upstream.pool,
            Some(pb::ConnectionPool {
                max_connections_per_endpoint: 64,
                max_idle_per_endpoint: 8,
                idle_timeout: None
            })
        );

        let e = translate_gateway(&gateway(
            "  server:\n    timeouts: {read: -1}\n    monitoring: {enableMetrics: true, metricsPath: metrics}\n    networking: {transport: {maxConnsPerHost: -2}}\n",
        ))
        .expect_err("invalid settings")
        .to_string();
        for field in [
            "spec.server.timeouts.read: -1 must not be negative",
            "spec.server.monitoring.metricsPath: \"metrics\" must start with",
            "spec.server.networking.transport.maxConnsPerHost: -2 is not a count",
        ] {
            assert!(e.contains(field), "{field} in {e}");
        }
    }

    #[test]
    fn seed_maintenance_route_answers_directly() {
        let (objects, _) = parse_manifests(
            Path::new("seed.yaml"),
            include_str!("../../tests/fixtures/goma-seed-routes.yaml"),
        );
        let Object::GomaRoute(m) = &objects[2] else {
            panic!("not a route")
        };
        let t = translate_route(m).expect("ok").expect("enabled");
        assert!(t.clusters.is_empty());
        assert_eq!(
            t.route.action,
            Some(pb::route::Action::DirectResponse(pb::DirectResponse {
                status: 503,
                body: "{\"error\":\"maintenance\",\"message\":\"Back at 14:00 UTC.\"}\n".into(),
                content_type: "application/json".into(),
            }))
        );
    }

    #[test]
    fn maintenance_defaults_aliases_and_status_range() {
        let t = ok(&format!(
            "{BASE}  target: http://a\n  maintenance: {{enabled: true}}\n"
        ));
        assert!(t.clusters.is_empty(), "maintenance publishes no cluster");
        let Some(pb::route::Action::DirectResponse(d)) = &t.route.action else {
            panic!("not direct")
        };
        assert_eq!(
            (d.status, d.body.as_str()),
            (503, "503 Service temporarily unavailable")
        );
        assert_eq!(d.content_type, "text/plain; charset=utf-8");

        let t = ok(&format!(
            "{BASE}  maintenance: {{enabled: true, statusCode: 418, message: tea}}\n"
        ));
        let Some(pb::route::Action::DirectResponse(d)) = &t.route.action else {
            panic!("not direct")
        };
        assert_eq!((d.status, d.body.as_str()), (418, "tea"));

        let e = err(&format!(
            "{BASE}  maintenance: {{enabled: true, status: 700}}\n"
        ));
        assert_eq!(
            e,
            "Route default/api: spec.maintenance.status: 700 is not an HTTP status (100-599)"
        );

        // Disabled maintenance does not replace a missing target.
        let e = err(&format!("{BASE}  maintenance: {{enabled: false}}\n"));
        assert!(
            e.starts_with(
                "Route default/api: spec.target: a route needs spec.target or spec.backends"
            ),
            "{e}"
        );
    }

    #[test]
    fn disabled_route_translates_to_nothing() {
        assert_eq!(
            translate_route(&route(&format!(
                "{BASE}  target: http://a\n  enabled: false\n"
            ))),
            Ok(None)
        );
    }

    #[test]
    fn path_is_required_and_normalised() {
        let path = |t: &TranslatedRoute| t.route.matches[0].path.clone().map(|p| p.value);
        assert_eq!(
            path(&ok("  gateways: [g]\n  path: /api/\n  target: http://a\n")).as_deref(),
            Some("/api")
        );
        assert_eq!(
            path(&ok("  gateways: [g]\n  path: /\n  target: http://a\n")).as_deref(),
            Some("/")
        );
        assert_eq!(
            err("  gateways: [g]\n  target: http://a\n"),
            "Route default/api: spec.path: required"
        );
        assert_eq!(
            err("  gateways: [g]\n  path: api\n  target: http://a\n"),
            "Route default/api: spec.path: \"api\" must start with \"/\""
        );
    }

    #[test]
    fn gateways_are_required() {
        assert_eq!(
            err("  path: /\n  target: http://a\n"),
            "Route default/api: spec.gateways: at least one Gateway name is required"
        );
    }

    #[test]
    fn hosts_are_lowercased_and_validated() {
        let t = ok(&format!(
            "{BASE}  target: http://a\n  hosts: [API.Example.com, '*.example.com', api.example.com]\n"
        ));
        assert_eq!(t.route.hostnames, ["api.example.com", "*.example.com"]);
        for (host, reason) in [
            ("api.example.com:8080", "must not carry a port"),
            ("''", "must not be empty"),
            ("'a b.com'", "must not contain spaces"),
            ("'api.*.com'", "wildcard is only allowed"),
            ("'*example.com'", "wildcard is only allowed"),
            ("'*'", "leave spec.hosts empty to match any host"),
            ("'a..b'", "is not a valid hostname"),
        ] {
            let e = err(&format!(
                "{BASE}  target: http://a\n  hosts: [ok.com, {host}]\n"
            ));
            assert!(e.starts_with("Route default/api: spec.hosts[1]: "), "{e}");
            assert!(e.contains(reason), "{host}: {e}");
        }
    }

    #[test]
    fn methods_are_uppercased_and_checked() {
        let t = ok(&format!(
            "{BASE}  target: http://a\n  methods: [get, Post, GET]\n"
        ));
        assert_eq!(t.route.allowed_methods, ["GET", "POST"]);
        let e = err(&format!(
            "{BASE}  target: http://a\n  methods: [GET, FETCH]\n"
        ));
        assert!(
            e.starts_with(
                "Route default/api: spec.methods[1]: \"FETCH\" is not a standard HTTP method"
            ),
            "{e}"
        );
    }

    #[test]
    fn priority_rewrite_and_host_forwarding() {
        let t = ok(&format!(
            "{BASE}  target: http://a\n  priority: 7\n  rewrite: /v2\n  security: {{forwardHostHeaders: false}}\n"
        ));
        assert_eq!(t.route.priority, 7);
        let f = forward(&t);
        assert!(!f.preserve_host);
        assert_eq!(
            f.path_rewrite,
            Some(pb::PathRewrite {
                kind: Some(pb::path_rewrite::Kind::ReplacePrefix("/v2".into()))
            })
        );
        assert_eq!(
            err(&format!("{BASE}  target: http://a\n  rewrite: v2\n")),
            "Route default/api: spec.rewrite: \"v2\" must start with \"/\""
        );
    }

    #[test]
    fn target_and_backends_are_exclusive_and_one_is_required() {
        assert_eq!(
            err(&format!(
                "{BASE}  target: http://a\n  backends: [{{endpoint: http://b}}]\n"
            )),
            "Route default/api: spec.target: spec.target and spec.backends are mutually exclusive"
        );
        assert!(err(BASE).contains("spec.target: a route needs spec.target or spec.backends"));
    }

    #[test]
    fn endpoint_urls() {
        let endpoint = |url: &str| {
            let t = ok(&format!("{BASE}  target: '{url}'\n"));
            (
                t.clusters[0].endpoints[0].address.clone(),
                t.clusters[0].endpoints[0].port,
            )
        };
        assert_eq!(endpoint("http://Backend.NS"), ("backend.ns".into(), 80));
        assert_eq!(endpoint("http://10.0.0.1:9000/"), ("10.0.0.1".into(), 9000));
        assert_eq!(endpoint("HTTP://[::1]:8080"), ("::1".into(), 8080));
        assert_eq!(endpoint("http://[fe80::1]"), ("fe80::1".into(), 80));
        assert_eq!(endpoint("https://Backend.NS"), ("backend.ns".into(), 443));
        assert_eq!(endpoint("https://10.0.0.1:8443"), ("10.0.0.1".into(), 8443));
        assert_eq!(endpoint("h2c://10.0.0.1:50051"), ("10.0.0.1".into(), 50051));
        assert_eq!(endpoint("GRPC://svc"), ("svc".into(), 80));
        assert_eq!(endpoint("grpcs://svc"), ("svc".into(), 443));
        for (url, reason) in [
            ("https://a/v1", "use spec.rewrite"),
            ("http://a/v1", "use spec.rewrite"),
            ("http://a?x=1", "query string"),
            ("http://a#f", "fragment"),
            ("http://user:pw@a", "credentials"),
            ("http://a:0", "is not a port"),
            ("http://a:99999", "is not a port"),
            ("http://a:", "is not a port"),
            ("http://", "host is missing"),
            ("a:8080", "is not a URL"),
            ("ftp://a", "unsupported scheme"),
            ("http://[zz]:1", "not an IPv6 address"),
            ("http://a_b!:1", "not a valid host"),
        ] {
            let e = err(&format!("{BASE}  target: '{url}'\n"));
            assert!(e.starts_with("Route default/api: spec.target: "), "{e}");
            assert!(e.contains(reason), "{url}: {e}");
        }
        let e = err(&format!(
            "{BASE}  backends: [{{endpoint: http://ok}}, {{endpoint: 'https://b:0'}}]\n"
        ));
        assert!(
            e.starts_with("Route default/api: spec.backends[1].endpoint: "),
            "{e}"
        );
    }

    #[test]
    fn http2_schemes_select_the_upstream_protocol() {
        let protocol = |url: &str| {
            let t = ok(&format!("{BASE}  target: '{url}'\n"));
            let c = &t.clusters[0];
            (
                pb::UpstreamProtocol::try_from(c.protocol).unwrap(),
                c.tls.is_some(),
            )
        };
        assert_eq!(protocol("http://a"), (pb::UpstreamProtocol::Http1, false));
        assert_eq!(protocol("https://a"), (pb::UpstreamProtocol::Http1, true));
        assert_eq!(protocol("h2c://a:1"), (pb::UpstreamProtocol::H2c, false));
        assert_eq!(protocol("grpc://a:1"), (pb::UpstreamProtocol::H2c, false));
        // HTTP/2 over TLS: the data plane offers only h2 by ALPN on an H2C cluster with TLS.
        assert_eq!(protocol("grpcs://a:1"), (pb::UpstreamProtocol::H2c, true));
        let t = ok(&format!(
            "{BASE}  backends: [{{endpoint: 'h2c://a:1'}}, {{endpoint: 'http://b:1'}}]\n"
        ));
        assert_eq!(t.clusters[0].protocol, pb::UpstreamProtocol::H2c as i32);
        assert_eq!(t.clusters[1].protocol, pb::UpstreamProtocol::Http1 as i32);
    }

    #[test]
    fn https_backends_become_tls_clusters() {
        let t = ok(&format!("{BASE}  target: https://API.example.com\n"));
        assert_eq!(
            t.clusters[0].tls,
            Some(pb::UpstreamTls {
                server_name: "api.example.com".into(),
                ..Default::default()
            })
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        // An IP is not a server name: the data plane verifies the IP itself.
        for url in ["https://127.0.0.1:8443", "https://[::1]"] {
            let t = ok(&format!("{BASE}  target: '{url}'\n"));
            assert_eq!(t.clusters[0].tls, Some(pb::UpstreamTls::default()), "{url}");
        }
        assert_eq!(
            ok(&format!("{BASE}  target: http://a\n")).clusters[0].tls,
            None
        );
    }

    #[test]
    fn security_tls_applies_to_https_backends() {
        let t = ok(&format!(
            "{BASE}  backends: [{{endpoint: 'https://a'}}, {{endpoint: 'http://b'}}]\n  security: {{tls: {{rootCAsSecret: ca, clientCertSecret: client, insecureSkipVerify: true}}}}\n"
        ));
        assert_eq!(
            t.clusters[0].tls,
            Some(pb::UpstreamTls {
                server_name: "a".into(),
                ca_secret: "default/ca".into(),
                client_certificate_secret: "default/client".into(),
                insecure_skip_verify: true,
                subject_alt_names: vec![],
            })
        );
        assert_eq!(t.clusters[1].tls, None);
        // Each setting works alone (Goma ignored rootCAs without a client certificate).
        let t = ok(&format!(
            "{BASE}  target: https://a\n  security: {{tls: {{rootCAsSecret: ca}}}}\n"
        ));
        let tls = t.clusters[0].tls.clone().expect("tls");
        assert_eq!(
            (
                tls.ca_secret.as_str(),
                tls.client_certificate_secret.as_str()
            ),
            ("default/ca", "")
        );
        assert!(!tls.insecure_skip_verify);
        let t = ok(&format!(
            "{BASE}  target: https://a\n  security: {{tls: {{clientCertSecret: c}}}}\n"
        ));
        let tls = t.clusters[0].tls.clone().expect("tls");
        assert_eq!(
            (
                tls.ca_secret.as_str(),
                tls.client_certificate_secret.as_str()
            ),
            ("", "default/c")
        );
    }

    #[test]
    fn security_tls_without_https_backend_warns_and_bad_names_fail() {
        let t = ok(&format!(
            "{BASE}  target: http://a\n  security: {{tls: {{rootCAsSecret: ca}}}}\n"
        ));
        assert_eq!(t.clusters[0].tls, None);
        assert_eq!(t.warnings.len(), 1);
        assert!(t.warnings[0].starts_with("spec.security.tls is set but no backend uses https://"));
        let e = translate_route(&route(&format!(
            "{BASE}  target: https://a\n  security: {{tls: {{rootCAsSecret: '', clientCertSecret: other/c}}}}\n"
        )))
        .expect_err("bad names");
        assert!(!e.fails_closed());
        let fields: Vec<&str> = e.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.security.tls.rootCAsSecret",
                "spec.security.tls.clientCertSecret"
            ]
        );
    }

    #[test]
    fn weights_default_to_equal_shares() {
        let weights = |backends: &str| -> Vec<u32> {
            forward(&ok(&format!("{BASE}  backends: {backends}\n")))
                .backends
                .iter()
                .map(|b| b.weight)
                .collect()
        };
        assert_eq!(
            weights("[{endpoint: http://a}, {endpoint: http://b}]"),
            [1, 1]
        );
        assert_eq!(
            weights("[{endpoint: http://a, weight: 0}, {endpoint: http://b}]"),
            [1, 1]
        );
        assert_eq!(
            weights("[{endpoint: http://a, weight: 3}, {endpoint: http://b}]"),
            [3, 0]
        );
    }

    #[test]
    fn backend_match_operators() {
        let spec = format!(
            "{BASE}  backends:
    - endpoint: http://a
      exclusive: true
      priority: 4
      match:
        - {{source: header, name: X-A, operator: equals, value: v}}
        - {{source: cookie, name: c, operator: not_equals, value: v}}
        - {{source: query, name: q, operator: contains, value: v}}
        - {{source: header, name: X-B, operator: not_contains, value: v}}
        - {{source: header, name: X-C, operator: starts_with, value: v}}
        - {{source: header, name: X-D, operator: ends_with, value: v}}
        - {{source: header, name: X-E, operator: regex, value: '^v[0-9]+$'}}
        - {{source: ip, operator: in, value: ' 10.0.0.1, ,10.0.0.2 '}}
"
        );
        let t = ok(&spec);
        let b = &forward(&t).backends[0];
        assert!(b.exclusive);
        assert_eq!(b.priority, 4);
        use pb::string_match::Kind as K;
        let got: Vec<(i32, i32, bool)> = b
            .r#match
            .iter()
            .map(|m| {
                let v = m.value.clone().unwrap_or_default();
                (m.source, v.kind, v.invert)
            })
            .collect();
        let (h, c, q, ip) = (
            pb::backend_match::Source::Header as i32,
            pb::backend_match::Source::Cookie as i32,
            pb::backend_match::Source::Query as i32,
            pb::backend_match::Source::Ip as i32,
        );
        assert_eq!(
            got,
            [
                (h, K::Exact as i32, false),
                (c, K::Exact as i32, true),
                (q, K::Contains as i32, false),
                (h, K::Contains as i32, true),
                (h, K::Prefix as i32, false),
                (h, K::Suffix as i32, false),
                (h, K::Regex as i32, false),
                (ip, K::OneOf as i32, false),
            ]
        );
        let one_of = b.r#match[7].value.clone().unwrap_or_default();
        assert_eq!(one_of.values, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(b.r#match[7].name, "");
    }

    #[test]
    fn backend_match_errors_name_the_field() {
        let e = err(&format!(
            "{BASE}  backends:\n    - endpoint: http://a\n      match: [{{source: header, name: X, operator: regex, value: '(['}}]\n"
        ));
        assert!(
            e.starts_with(
                "Route default/api: spec.backends[0].match[0].value: invalid regular expression"
            ),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}  backends:\n    - endpoint: http://a\n    - endpoint: http://b\n      match: [{{source: cookie, operator: equals, value: x}}]\n"
        ));
        assert_eq!(
            e,
            "Route default/api: spec.backends[1].match[0].name: required for header, cookie and query matches"
        );
        let e = err(&format!(
            "{BASE}  backends:\n    - endpoint: http://a\n      match: [{{source: query, name: q, operator: in, value: ' , '}}]\n"
        ));
        assert!(
            e.contains("spec.backends[0].match[0].value: operator in needs"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_middleware_fails_closed() {
        let error = translate_route(&route(&format!(
            "{BASE}  target: http://a\n  middlewares: [auth]\n"
        )))
        .expect_err("middlewares");
        assert!(error.fails_closed(), "{error}");
        assert!(
            error.to_string().starts_with(
                "Route default/api: spec.middlewares[0]: Middleware default/auth does not exist; the route is not served without it"
            ),
            "{error}"
        );
        let plain =
            translate_route(&route(&format!("{BASE}  target: https://a:0\n"))).expect_err("port");
        assert!(!plain.fails_closed());
    }

    #[test]
    fn route_certificate_is_a_secret_reference() {
        let t = translate_route(&route(&format!(
            "{BASE}  target: http://a\n  tls: {{secretName: cert}}\n"
        )))
        .expect("ok")
        .expect("enabled");
        assert_eq!(t.route.certificate_secret, "default/cert");
        assert_eq!(t.route.listeners, ["http", "https"]);
        let e = translate_route(&route(&format!(
            "{BASE}  target: http://a\n  tls: {{secretName: \"\"}}\n"
        )))
        .expect_err("empty");
        assert!(
            e.to_string().contains("spec.tls.secretName: required"),
            "{e}"
        );
    }

    #[test]
    fn all_field_errors_are_collected() {
        let error = translate_route(&route(
            "  path: x\n  target: https://a:0\n  hosts: ['a:1']\n",
        ))
        .expect_err("bad");
        let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.gateways", "spec.path", "spec.hosts[0]", "spec.target"]
        );
    }

    #[test]
    fn seed_gateway_translates_to_http_and_https_listeners() {
        let (objects, diags) = parse_manifests(
            Path::new("seed.yaml"),
            include_str!("../../tests/fixtures/goma-seed-gateways.yaml"),
        );
        assert!(diags.is_empty(), "{diags:?}");
        let Object::GomaGateway(gw) = &objects[0] else {
            panic!("not a gateway")
        };
        let (listeners, warnings) = translate_gateway(gw).expect("ok");
        assert_eq!(
            (
                listeners[0].name.as_str(),
                listeners[0].port,
                listeners[0].source.as_str()
            ),
            ("http", 80, "Gateway default/gateway")
        );
        assert_eq!(
            (listeners[1].name.as_str(), listeners[1].port),
            ("https", 443)
        );
        assert_eq!(
            warnings,
            ["spec.certManager: ACME certificates are not issued yet"]
        );
    }

    fn gateway(yaml_spec: &str) -> goma::Gateway {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: gw, namespace: edge}}\nspec:\n{yaml_spec}"
        ))
        .expect("test gateway parses")
    }

    #[test]
    fn gateway_listener() {
        let (listeners, warnings) = translate_gateway(&gateway("  replicas: 1\n")).expect("ok");
        assert_eq!(
            listeners,
            [pb::Listener {
                name: "http".into(),
                port: 8080,
                protocol: pb::Protocol::Http as i32,
                hostname: String::new(),
                source: "Gateway edge/gw".into(),
                tls: None,
                http: Some(pb::HttpSettings {
                    upstream_defaults: Some(pb::UpstreamDefaults {
                        pool: Some(pb::ConnectionPool::default()),
                        dns_ttl: None,
                    }),
                    ..Default::default()
                }),
            }]
        );
        assert!(warnings.is_empty());

        let (listeners, warnings) = translate_gateway(&gateway(
            "  service: {httpPort: 80, httpsPort: 443}\n  server: {tls: [{secretName: c}, {secretName: d}]}\n",
        ))
        .expect("ok");
        assert_eq!(listeners[0].port, 80);
        assert_eq!(
            listeners[1],
            pb::Listener {
                name: "https".into(),
                port: 443,
                protocol: pb::Protocol::Https as i32,
                hostname: String::new(),
                source: "Gateway edge/gw".into(),
                tls: Some(pb::ListenerTls {
                    certificate_secrets: vec!["edge/c".into(), "edge/d".into()],
                    ..Default::default()
                }),
                http: listeners[0].http.clone(),
            }
        );
        assert!(warnings.is_empty());

        let e = translate_gateway(&gateway(
            "  service: {httpPort: 80, httpsPort: 80}\n  server: {tls: [{secretName: \"\"}]}\n",
        ))
        .expect_err("same ports, empty name");
        assert_eq!(
            e.to_string(),
            "Gateway edge/gw: spec.service.httpsPort: must differ from spec.service.httpPort; spec.server.tls[0].secretName: required"
        );

        let e =
            translate_gateway(&gateway("  service: {httpPort: 70000}\n")).expect_err("bad port");
        assert_eq!(
            e.to_string(),
            "Gateway edge/gw: spec.service.httpPort: 70000 is not a port (1-65535)"
        );
    }
}
