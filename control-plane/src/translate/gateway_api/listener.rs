//! Gateway listeners: protocol, TLS certificates, conflicts and which routes may attach.

use std::collections::BTreeMap;

use sluice_proto::config as pb;

use super::grant::{Referrer, permitted};
use super::index::Index;
use crate::model::gateway_api::gateway::{FrontendTls, GatewaySpec, Listener, RouteNamespaces};
use crate::model::{GATEWAY_API_GROUP, Kind, Object};
use crate::status::gateway_api::{Condition, GroupKind, ListenerReport};

/// A listener after validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerState {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub hostname: Option<String>,
    /// Accepted, references resolved and not conflicted: routes attach and it is served.
    pub usable: bool,
    /// Route kinds that may attach (valid ones only).
    pub kinds: Vec<GroupKind>,
    pub namespaces: RouteNamespaces,
    pub report: ListenerReport,
    pub resource: pb::Listener,
}

fn route_kinds_for(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" => &["TLSRoute"],
        "TCP" => &["TCPRoute"],
        "UDP" => &["UDPRoute"],
        _ => &[],
    }
}

fn pb_protocol(protocol: &str) -> Option<pb::Protocol> {
    Some(match protocol {
        "HTTP" => pb::Protocol::Http,
        "HTTPS" => pb::Protocol::Https,
        "TLS" => pb::Protocol::Tls,
        "TCP" => pb::Protocol::Tcp,
        "UDP" => pb::Protocol::Udp,
        _ => return None,
    })
}

/// Whether two listeners on one port can be told apart: HTTPS and TLS share a port by SNI,
/// UDP shares with every TCP-based protocol; equal protocols need different hostnames (HTTP,
/// HTTPS, TLS) and can never share (TCP, UDP).
fn conflict(a: &Listener, b: &Listener) -> Option<&'static str> {
    if a.port != b.port {
        return None;
    }
    let udp = |l: &Listener| l.protocol == "UDP";
    if udp(a) != udp(b) {
        return None;
    }
    let tls_family = |p: &str| matches!(p, "HTTPS" | "TLS");
    let same_family =
        a.protocol == b.protocol || (tls_family(&a.protocol) && tls_family(&b.protocol));
    if !same_family {
        return Some("ProtocolConflict");
    }
    if matches!(a.protocol.as_str(), "TCP" | "UDP") {
        return Some("ProtocolConflict");
    }
    let host = |l: &Listener| l.hostname.clone().unwrap_or_default();
    (host(a) == host(b)).then_some("HostnameConflict")
}

/// Validates every listener of Gateway `namespace`/`gateway`.
pub fn listeners(
    index: &Index,
    namespace: &str,
    gateway: &str,
    gateway_spec: &GatewaySpec,
    refs: &mut ListenerRefs,
) -> Vec<ListenerState> {
    let source = format!("Gateway {namespace}/{gateway}");
    let spec = &gateway_spec.listeners;
    let frontend = gateway_spec.tls.as_ref().and_then(|t| t.frontend.as_ref());
    spec.iter()
        .enumerate()
        .map(|(i, l)| {
            let mut conditions = Vec::new();
            let mut accepted = true;
            let mut resolved = true;
            let field = format!("spec.listeners[{i}]");
            let protocol = pb_protocol(&l.protocol);
            if protocol.is_none() {
                accepted = false;
                conditions.push(Condition::new(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    format!("{field}.protocol: {:?} is not supported (HTTP, HTTPS, TLS, TCP, UDP)", l.protocol),
                ));
            }
            let conflicted = spec
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .find_map(|(j, other)| conflict(l, other).map(|r| (j, other, r)));
            if let Some((j, other, reason)) = conflicted {
                let message = format!(
                    "{field}: port {} is also used by spec.listeners[{j}] ({:?}, {}); neither is accepted",
                    l.port, other.name, other.protocol
                );
                if accepted {
                    conditions.push(Condition::new("Accepted", false, reason, message.clone()));
                }
                accepted = false;
                conditions.push(Condition::new("Conflicted", true, reason, message));
            } else {
                conditions.push(Condition::new("Conflicted", false, "NoConflicts", ""));
            }

            // Route kinds.
            let defaults = route_kinds_for(&l.protocol);
            let mut kinds = Vec::new();
            let mut invalid_kinds = Vec::new();
            match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
                Some(requested) => {
                    for k in requested {
                        let group = k.group.clone().unwrap_or_else(|| GATEWAY_API_GROUP.into());
                        if group == GATEWAY_API_GROUP && defaults.contains(&k.kind.as_str()) {
                            let gk = GroupKind { group, kind: k.kind.clone() };
                            if !kinds.contains(&gk) {
                                kinds.push(gk);
                            }
                        } else {
                            invalid_kinds.push(format!("{group}/{}", k.kind));
                        }
                    }
                }
                None => kinds.extend(defaults.iter().map(|k| GroupKind {
                    group: GATEWAY_API_GROUP.into(),
                    kind: (*k).into(),
                })),
            }
            if !invalid_kinds.is_empty() {
                resolved = false;
                conditions.push(Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    format!(
                        "{field}.allowedRoutes.kinds: {} cannot attach to a {} listener",
                        invalid_kinds.join(", "),
                        l.protocol
                    ),
                ));
            }

            // TLS.
            let mut tls = None;
            let mode = l
                .tls
                .as_ref()
                .and_then(|t| t.mode.clone())
                .unwrap_or_else(|| "Terminate".into());
            if matches!(l.protocol.as_str(), "HTTPS" | "TLS") {
                if l.protocol == "HTTPS" && mode != "Terminate" {
                    accepted = false;
                    conditions.push(Condition::new(
                        "Accepted",
                        false,
                        "UnsupportedValue",
                        format!("{field}.tls.mode: an HTTPS listener terminates TLS"),
                    ));
                }
                let passthrough = mode == "Passthrough";
                let mut secrets = Vec::new();
                if !passthrough {
                    let refs = l.tls.as_ref().map(|t| t.certificate_refs.as_slice()).unwrap_or_default();
                    if refs.is_empty() && resolved {
                        resolved = false;
                        conditions.push(Condition::new(
                            "ResolvedRefs",
                            false,
                            "InvalidCertificateRef",
                            format!("{field}.tls.certificateRefs: a TLS-terminating listener needs a certificate"),
                        ));
                    }
                    for (c, r) in refs.iter().enumerate() {
                        let at = format!("{field}.tls.certificateRefs[{c}]");
                        match certificate(index, namespace, r) {
                            Ok(name) => secrets.push(name),
                            Err((reason, message)) => {
                                if resolved {
                                    conditions.push(Condition::new(
                                        "ResolvedRefs",
                                        false,
                                        reason,
                                        format!("{at}: {message}"),
                                    ));
                                }
                                resolved = false;
                            }
                        }
                    }
                }
                refs.certificates.extend(secrets.iter().cloned());
                let mut client_ca_secret = String::new();
                let mut client_certificate_optional = false;
                if !passthrough {
                    match client_validation(index, namespace, frontend, l.port, refs) {
                        Ok(None) => {}
                        Ok(Some((ca, optional))) => {
                            client_ca_secret = ca;
                            client_certificate_optional = optional;
                        }
                        Err((reason, message)) => {
                            // Fails closed: a listener that must verify clients is not served
                            // without the CA to verify them with.
                            accepted = false;
                            if resolved {
                                conditions.push(Condition::new(
                                    "ResolvedRefs",
                                    false,
                                    reason,
                                    message,
                                ));
                            }
                            resolved = false;
                        }
                    }
                }
                tls = Some(pb::ListenerTls {
                    certificate_secrets: secrets,
                    mode: if passthrough {
                        pb::TlsMode::Passthrough as i32
                    } else {
                        pb::TlsMode::Terminate as i32
                    },
                    client_ca_secret,
                    client_certificate_optional,
                });
            }
            let servable = accepted
                && tls
                    .as_ref()
                    .is_none_or(|t| t.mode == pb::TlsMode::Passthrough as i32 || !t.certificate_secrets.is_empty());
            if accepted && !conditions.iter().any(|c| c.type_ == "Accepted") {
                conditions.push(Condition::new("Accepted", true, "Accepted", ""));
            }
            if resolved {
                conditions.push(Condition::new("ResolvedRefs", true, "ResolvedRefs", ""));
            }
            conditions.push(if servable {
                Condition::new("Programmed", true, "Programmed", "")
            } else {
                Condition::new("Programmed", false, "Invalid", format!("{field}: not served (see the other conditions)"))
            });
            let hostname = l
                .hostname
                .clone()
                .filter(|h| !h.is_empty() && !matches!(l.protocol.as_str(), "TCP" | "UDP"));
            ListenerState {
                name: l.name.clone(),
                port: l.port,
                protocol: l.protocol.clone(),
                hostname: hostname.clone(),
                usable: servable,
                kinds: kinds.clone(),
                namespaces: l
                    .allowed_routes
                    .as_ref()
                    .and_then(|a| a.namespaces.clone())
                    .unwrap_or_default(),
                report: ListenerReport {
                    name: l.name.clone(),
                    supported_kinds: kinds,
                    attached_routes: 0,
                    conditions,
                },
                resource: pb::Listener {
                    name: l.name.clone(),
                    port: u32::try_from(l.port).unwrap_or_default(),
                    protocol: protocol.unwrap_or(pb::Protocol::Unspecified) as i32,
                    hostname: hostname.unwrap_or_default(),
                    source: source.clone(),
                    tls,
                    http: None,
                },
            }
        })
        .collect()
}

/// What the listeners reference besides themselves.
#[derive(Default)]
pub struct ListenerRefs {
    /// Kubernetes Secret resource names (certificates, client CAs).
    pub certificates: Vec<String>,
    /// CaBundle resources made from ConfigMaps, by name.
    pub ca_bundles: BTreeMap<String, pb::Secret>,
}

/// Client-certificate validation of a TLS-terminating listener on `port` (Gateway
/// `spec.tls.frontend`: the `perPort` entry for the port, else `default`): the CaBundle resource
/// and whether clients without a certificate are let in.
fn client_validation(
    index: &Index,
    namespace: &str,
    frontend: Option<&FrontendTls>,
    port: i32,
    refs: &mut ListenerRefs,
) -> Result<Option<(String, bool)>, (&'static str, String)> {
    let Some(frontend) = frontend else {
        return Ok(None);
    };
    let (field, config) = match frontend.per_port.iter().position(|p| p.port == port) {
        Some(i) => (
            format!("spec.tls.frontend.perPort[{i}].tls.validation"),
            Some(&frontend.per_port[i].tls),
        ),
        None => (
            "spec.tls.frontend.default.validation".to_owned(),
            frontend.default.as_ref(),
        ),
    };
    let Some(validation) = config.and_then(|c| c.validation.as_ref()) else {
        return Ok(None);
    };
    let optional = validation.mode.as_deref() == Some("AllowInsecureFallback");
    let mut problem = None;
    for (i, r) in validation.ca_certificate_refs.iter().enumerate() {
        let at = format!("{field}.caCertificateRefs[{i}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("");
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        if !group.is_empty() || !matches!(kind, "ConfigMap" | "Secret") {
            problem.get_or_insert((
                "InvalidCACertificateKind",
                format!("{at}: {group}/{kind} is not supported (ConfigMap or Secret)"),
            ));
            continue;
        }
        let from = Referrer {
            group: GATEWAY_API_GROUP,
            kind: "Gateway",
            namespace,
        };
        if !permitted(index, &from, "", kind, ns, &r.name) {
            problem.get_or_insert((
                "RefNotPermitted",
                format!(
                    "{at}: {kind} {ns}/{} is in another namespace and no ReferenceGrant allows it",
                    r.name
                ),
            ));
            continue;
        }
        let bundle = if kind == "ConfigMap" {
            super::backend::config_map_bundle(index, ns, &r.name).map(|s| {
                let name = s.name.clone();
                refs.ca_bundles.insert(name.clone(), s);
                name
            })
        } else {
            super::backend::secret_bundle(index, ns, &r.name).inspect(|name| {
                refs.certificates.push(name.clone());
            })
        };
        match bundle {
            // The data plane takes one CA bundle per listener: the first valid reference.
            Ok(name) => return Ok(Some((name, optional))),
            Err(message) => {
                problem.get_or_insert(("InvalidCACertificateRef", format!("{at}: {message}")));
            }
        }
    }
    Err(problem.unwrap_or((
        "InvalidCACertificateRef",
        format!("{field}.caCertificateRefs: no CA certificate to verify clients with"),
    )))
}

/// A listener certificate: the Secret resource name, or (reason, message).
fn certificate(
    index: &Index,
    namespace: &str,
    r: &crate::model::gateway_api::ObjectReference,
) -> Result<String, (&'static str, String)> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("{group}/{kind} is not supported (only core Secrets)"),
        ));
    }
    let ns = r
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace);
    let from = Referrer {
        group: GATEWAY_API_GROUP,
        kind: "Gateway",
        namespace,
    };
    if !permitted(index, &from, "", "Secret", ns, &r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "Secret {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            ),
        ));
    }
    let key = crate::model::ObjectKey::new(Kind::Secret, ns, &r.name);
    match index.get(Kind::Secret, ns, &r.name) {
        Some(Object::Other { body, .. }) => {
            match crate::translate::secret::translate_secret(&key, body) {
                Ok(pb::Secret {
                    kind: Some(pb::secret::Kind::TlsCertificate(_)),
                    ..
                }) => Ok(crate::translate::goma::secret_resource_name(ns, &r.name)),
                Ok(_) => Err((
                    "InvalidCertificateRef",
                    format!("Secret {ns}/{} is not a kubernetes.io/tls Secret", r.name),
                )),
                Err(e) => Err(("InvalidCertificateRef", e.to_string())),
            }
        }
        _ => Err((
            "InvalidCertificateRef",
            format!("Secret {ns}/{} does not exist", r.name),
        )),
    }
}

/// Whether routes of `route_namespace` may attach under `policy`.
pub fn namespace_allowed(
    index: &Index,
    policy: &RouteNamespaces,
    gateway_namespace: &str,
    route_namespace: &str,
) -> bool {
    match policy.from.as_deref().unwrap_or("Same") {
        "All" => true,
        "Same" => gateway_namespace == route_namespace,
        "Selector" => {
            let labels: BTreeMap<String, String> =
                match index.get(Kind::Namespace, "", route_namespace) {
                    Some(o) => o.labels().clone(),
                    None => BTreeMap::new(),
                };
            policy.selector.as_ref().is_some_and(|s| s.matches(&labels))
        }
        _ => false,
    }
}
