//! backendRefs to clusters: a Service port becomes cluster `service/{ns}/{name}/{port}` whose
//! endpoints are the ready addresses of the Service's EndpointSlices; a BackendTLSPolicy
//! targeting the Service adds upstream TLS.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use sluice_proto::config as pb;

use super::grant::{Referrer, permitted};
use super::index::Index;
use crate::model::gateway_api::core::{EndpointSlice, IntOrString, ServicePort};
use crate::model::gateway_api::policy::BackendTlsPolicySpec;
use crate::model::gateway_api::{ApiObject, BackendObjectReference, Resource};
use crate::model::{Kind, Object, ObjectKey};
use crate::status::gateway_api::{Condition, ParentRef, ParentReport};

pub fn cluster_name(namespace: &str, name: &str, port: i32) -> String {
    format!("service/{namespace}/{name}/{port}")
}

/// Why a reference did not resolve: the ResolvedRefs reason and a message naming the field.
#[derive(Clone, Debug)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

/// Clusters built so far for one gateway, the CA bundles they need, and BackendTLSPolicy status.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    pub clusters: BTreeMap<String, pb::Cluster>,
    /// CaBundle Secret resources made from ConfigMaps, by name.
    pub ca_bundles: BTreeMap<String, pb::Secret>,
    /// Secret resources (Kubernetes Secrets) the clusters reference.
    pub secrets: BTreeSet<String>,
    /// Per policy: its generation and conditions for this gateway.
    pub policies: BTreeMap<ObjectKey, PolicyVerdict>,
    /// The Gateway's backend client certificate (Secret resource), presented on upstream TLS.
    pub client_certificate: Option<String>,
}

/// A BackendTLSPolicy's generation and its conditions for one gateway.
pub type PolicyVerdict = (Option<i64>, Vec<Condition>);

/// One route's clusters, CA bundles, Secrets and policy verdicts, in name order.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteBackends {
    clusters: Vec<pb::Cluster>,
    ca_bundles: Vec<pb::Secret>,
    secrets: Vec<String>,
    policies: Vec<(ObjectKey, PolicyVerdict)>,
}

impl RouteBackends {
    /// A hash of what names these backends (not their contents): equal backends hash equal.
    fn names_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for c in &self.clusters {
            c.name.hash(&mut h);
        }
        for b in &self.ca_bundles {
            b.name.hash(&mut h);
        }
        self.secrets.hash(&mut h);
        for (k, _) in &self.policies {
            k.hash(&mut h);
        }
        h.finish()
    }
}

/// Route backends by content, so routes that resolved the same ones hold one copy: most routes
/// of a gateway send to the same few Services (a cluster with its endpoints is ~0.5 KiB).
#[derive(Default)]
pub struct SharedBackends(HashMap<u64, Vec<Arc<RouteBackends>>>);

impl SharedBackends {
    /// Makes `backends` the copy already held when one is equal; else holds it.
    pub fn share(&mut self, backends: &mut Arc<RouteBackends>) {
        let same_names = self.0.entry(backends.names_hash()).or_default();
        match same_names.iter().find(|held| **held == *backends) {
            Some(held) => *backends = held.clone(),
            None => same_names.push(backends.clone()),
        }
    }
}

impl Backends {
    /// What one route resolved, compact (it is kept per route while the route is unchanged).
    pub fn into_route_backends(self) -> RouteBackends {
        RouteBackends {
            clusters: self.clusters.into_values().collect(),
            ca_bundles: self.ca_bundles.into_values().collect(),
            secrets: self.secrets.into_iter().collect(),
            policies: self.policies.into_iter().collect(),
        }
    }

    /// Adds what a later route resolved, as if it had resolved into `self`: a cluster already
    /// here stays, made HTTP/2 when the later route needs it so (as `resolve` does); later policy
    /// verdicts replace earlier ones.
    pub fn merge(&mut self, later: &RouteBackends) {
        for cluster in &later.clusters {
            match self.clusters.get_mut(&cluster.name) {
                Some(existing) => {
                    if cluster.protocol == pb::UpstreamProtocol::H2c as i32
                        && existing.tls.is_none()
                    {
                        existing.protocol = pb::UpstreamProtocol::H2c as i32;
                    }
                }
                None => {
                    self.clusters.insert(cluster.name.clone(), cluster.clone());
                }
            }
        }
        for bundle in &later.ca_bundles {
            self.ca_bundles.insert(bundle.name.clone(), bundle.clone());
        }
        self.secrets.extend(later.secrets.iter().cloned());
        for (key, verdict) in &later.policies {
            self.policies.insert(key.clone(), verdict.clone());
        }
    }

    /// Resolves one backendRef of a route in `route_ns` (a `route_kind`) to a cluster name.
    pub fn resolve(
        &mut self,
        index: &Index,
        route_kind: &str,
        route_ns: &str,
        field: &str,
        r: &BackendObjectReference,
        grpc: bool,
    ) -> Result<String, Unresolved> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            return Err(Unresolved {
                reason: "InvalidKind",
                message: format!(
                    "{field}: {group}/{kind} is not a supported backend (core Service)"
                ),
            });
        }
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(route_ns);
        let from = Referrer {
            group: crate::model::GATEWAY_API_GROUP,
            kind: route_kind,
            namespace: route_ns,
        };
        if !permitted(index, &from, "", "Service", ns, &r.name) {
            return Err(Unresolved {
                reason: "RefNotPermitted",
                message: format!(
                    "{field}: Service {ns}/{} is in another namespace and no ReferenceGrant allows it",
                    r.name
                ),
            });
        }
        let Some(ApiObject::Service(service)) = index.api(Kind::Service, ns, &r.name) else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("{field}: Service {ns}/{} does not exist", r.name),
            });
        };
        let Some(port) = r.port else {
            return Err(Unresolved {
                reason: "UnsupportedValue",
                message: format!("{field}.port: required for a Service backend"),
            });
        };
        let Some(service_port) = service.spec.ports.iter().find(|p| p.port == port) else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("{field}.port: Service {ns}/{} has no port {port}", r.name),
            });
        };
        let name = cluster_name(ns, &r.name, port);
        let tls = self.backend_tls(index, ns, &r.name, service_port, field)?;
        let h2c = grpc || service_port.app_protocol.as_deref() == Some("kubernetes.io/h2c");
        if let Some(existing) = self.clusters.get_mut(&name) {
            // A GRPCRoute using the same port makes it HTTP/2 for everyone.
            if h2c && existing.tls.is_none() {
                existing.protocol = pb::UpstreamProtocol::H2c as i32;
            }
            return Ok(name);
        }
        let endpoints = endpoints(index, ns, &r.name, service_port);
        self.clusters.insert(
            name.clone(),
            pb::Cluster {
                name: name.clone(),
                source: format!("Service {ns}/{}", r.name),
                endpoints,
                protocol: if h2c && tls.is_none() {
                    pb::UpstreamProtocol::H2c as i32
                } else {
                    pb::UpstreamProtocol::Http1 as i32
                },
                tls,
                ..Default::default()
            },
        );
        Ok(name)
    }

    /// The UpstreamTls of the BackendTLSPolicy for this Service port, if any. An invalid policy
    /// fails closed: the backend is unresolved rather than reached in plaintext.
    fn backend_tls(
        &mut self,
        index: &Index,
        ns: &str,
        service: &str,
        port: &ServicePort,
        field: &str,
    ) -> Result<Option<pb::UpstreamTls>, Unresolved> {
        // Policies in the Service's namespace naming it; a sectionName names a port.
        let mut candidates: Vec<(&Resource<BackendTlsPolicySpec>, bool)> = index
            .in_namespace(Kind::BackendTlsPolicy, ns)
            .filter_map(|o| match o {
                Object::Api(a) => match &**a {
                    ApiObject::BackendTlsPolicy(p) => Some(p),
                    _ => None,
                },
                _ => None,
            })
            .filter_map(|p| {
                let specific = p
                    .spec
                    .target_refs
                    .iter()
                    .filter(|t| t.group.is_empty() && t.kind == "Service" && t.name == service);
                let mut best = None;
                for t in specific {
                    match &t.section_name {
                        None => best = best.or(Some(false)),
                        Some(s) if Some(s) == port.name.as_ref() => best = Some(true),
                        Some(_) => {}
                    }
                }
                best.map(|b| (p, b))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        for (p, _) in &candidates {
            index.depend(ObjectKey::new(Kind::BackendTlsPolicy, ns, &p.metadata.name));
        }
        // The port-specific policy wins, then the oldest, then by name.
        candidates.sort_by(|(a, a_specific), (b, b_specific)| {
            b_specific
                .cmp(a_specific)
                .then_with(|| {
                    super::creation_seconds(&a.metadata).cmp(&super::creation_seconds(&b.metadata))
                })
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let (winner, _) = candidates[0];
        for (loser, _) in &candidates[1..] {
            self.policies.insert(
                ObjectKey::new(Kind::BackendTlsPolicy, ns, &loser.metadata.name),
                (
                    loser.metadata.generation,
                    vec![Condition::new(
                        "Accepted",
                        false,
                        "Conflicted",
                        format!(
                            "BackendTLSPolicy {ns}/{} already targets Service {ns}/{service}",
                            winner.metadata.name
                        ),
                    )],
                ),
            );
        }
        let key = ObjectKey::new(Kind::BackendTlsPolicy, ns, &winner.metadata.name);
        let validation = &winner.spec.validation;
        let mut ca_secret = String::new();
        let mut problem: Option<(&'static str, String)> = None;
        for (i, r) in validation.ca_certificate_refs.iter().enumerate() {
            let at = format!("spec.validation.caCertificateRefs[{i}]");
            let group = r.group.as_deref().unwrap_or("");
            let kind = r.kind.as_deref().unwrap_or("");
            let bundle = match (group, kind) {
                ("", "ConfigMap") => config_map_bundle(index, ns, &r.name).map(|s| {
                    let name = s.name.clone();
                    self.ca_bundles.insert(name.clone(), s);
                    name
                }),
                ("", "Secret") => secret_bundle(index, ns, &r.name).inspect(|name| {
                    self.secrets.insert(name.clone());
                }),
                _ => {
                    problem.get_or_insert((
                        "InvalidKind",
                        format!("{at}: {group}/{kind} is not supported (ConfigMap or Secret)"),
                    ));
                    continue;
                }
            };
            match bundle {
                // The data plane takes one CA bundle: the first valid reference.
                Ok(name) if ca_secret.is_empty() => ca_secret = name,
                Ok(_) => {}
                Err(message) => {
                    problem.get_or_insert(("InvalidCACertificateRef", format!("{at}: {message}")));
                }
            }
        }
        let system = validation.well_known_ca_certificates.as_deref() == Some("System");
        let mut conditions = Vec::new();
        let result = if ca_secret.is_empty() && !system {
            let (reason, message) = problem.clone().unwrap_or((
                "InvalidCACertificateRef",
                "spec.validation: neither caCertificateRefs nor wellKnownCACertificates: System"
                    .into(),
            ));
            conditions.push(Condition::new(
                "Accepted",
                false,
                "NoValidCACertificate",
                message.clone(),
            ));
            conditions.push(Condition::new(
                "ResolvedRefs",
                false,
                reason,
                message.clone(),
            ));
            Err(Unresolved {
                reason: "InvalidKind",
                message: format!(
                    "{field}: BackendTLSPolicy {ns}/{} is invalid: {message}",
                    winner.metadata.name
                ),
            })
        } else {
            conditions.push(Condition::new("Accepted", true, "Accepted", ""));
            match &problem {
                Some((reason, message)) => conditions.push(Condition::new(
                    "ResolvedRefs",
                    false,
                    reason,
                    message.clone(),
                )),
                None => conditions.push(Condition::new("ResolvedRefs", true, "ResolvedRefs", "")),
            }
            if let Some(cert) = &self.client_certificate {
                self.secrets.insert(cert.clone());
            }
            Ok(Some(pb::UpstreamTls {
                server_name: validation.hostname.clone(),
                ca_secret,
                client_certificate_secret: self.client_certificate.clone().unwrap_or_default(),
                subject_alt_names: validation
                    .subject_alt_names
                    .iter()
                    .filter_map(|s| {
                        let kind = match s.type_.as_str() {
                            "Hostname" => pb::subject_alt_name::Kind::Hostname(s.hostname.clone()?),
                            "URI" => pb::subject_alt_name::Kind::Uri(s.uri.clone()?),
                            _ => return None,
                        };
                        Some(pb::SubjectAltName { kind: Some(kind) })
                    })
                    .collect(),
                ..Default::default()
            }))
        };
        self.policies
            .insert(key, (winner.metadata.generation, conditions));
        result
    }

    /// BackendTLSPolicy status for this gateway as an ancestor.
    pub fn policy_reports(
        &self,
        gateway_ns: &str,
        gateway: &str,
    ) -> BTreeMap<ObjectKey, (Option<i64>, super::ParentReports)> {
        self.policies
            .iter()
            .map(|(k, (generation, conditions))| {
                let parent_ref = ParentRef {
                    group: Some(crate::model::GATEWAY_API_GROUP.into()),
                    kind: Some("Gateway".into()),
                    namespace: Some(gateway_ns.into()),
                    name: gateway.into(),
                    section_name: None,
                    port: None,
                };
                (
                    k.clone(),
                    (
                        *generation,
                        [ParentReport {
                            parent_ref,
                            conditions: conditions.clone(),
                        }]
                        .into(),
                    ),
                )
            })
            .collect()
    }
}

/// A CaBundle Secret resource from ConfigMap `ns/name`'s `ca.crt`, named `configmap/{ns}/{name}`.
pub(super) fn config_map_bundle(index: &Index, ns: &str, name: &str) -> Result<pb::Secret, String> {
    let Some(Object::Other { body, .. }) = index.get(Kind::ConfigMap, ns, name) else {
        return Err(format!("ConfigMap {ns}/{name} does not exist"));
    };
    let Some(pem) = body
        .pointer("/data/ca.crt")
        .and_then(|v| v.as_str())
        .filter(|p| !p.trim().is_empty())
    else {
        return Err(format!("ConfigMap {ns}/{name} has no data[\"ca.crt\"]"));
    };
    Ok(pb::Secret {
        name: format!("configmap/{ns}/{name}"),
        source: format!("ConfigMap {ns}/{name}"),
        kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
            pem: pem.as_bytes().to_vec(),
        })),
    })
}

/// The resource name of Secret `ns/name` when it holds a CA bundle (`ca.crt`).
pub(super) fn secret_bundle(index: &Index, ns: &str, name: &str) -> Result<String, String> {
    let key = ObjectKey::new(Kind::Secret, ns, name);
    match index.get(Kind::Secret, ns, name) {
        Some(Object::Other { body, .. }) => {
            match crate::translate::secret::translate_secret(&key, body) {
                Ok(pb::Secret {
                    name,
                    kind: Some(pb::secret::Kind::CaBundle(_)),
                    ..
                }) => Ok(name),
                _ => Err(format!("Secret {ns}/{name} has no ca.crt")),
            }
        }
        _ => Err(format!("Secret {ns}/{name} does not exist")),
    }
}

/// Ready endpoints of Service `ns/name`'s port, from its EndpointSlices.
fn endpoints(index: &Index, ns: &str, service: &str, port: &ServicePort) -> Vec<pb::Endpoint> {
    let mut out: Vec<pb::Endpoint> = Vec::new();
    let slices = index
        .in_namespace(Kind::EndpointSlice, ns)
        .filter_map(|o| match o {
            Object::Api(a) => match &**a {
                ApiObject::EndpointSlice(s) if s.service_name() == Some(service) => Some(s),
                _ => None,
            },
            _ => None,
        });
    for slice in slices {
        let Some(number) = slice_port(slice, port) else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.ready == Some(false) {
                continue;
            }
            for address in &e.addresses {
                let endpoint = pb::Endpoint {
                    address: address.clone(),
                    port: number,
                    weight: 1,
                };
                if !out.contains(&endpoint) {
                    out.push(endpoint);
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    out
}

/// The endpoint port of a slice for a Service port: slices name their ports like the Service's.
fn slice_port(slice: &EndpointSlice, port: &ServicePort) -> Option<u32> {
    let name = port.name.as_deref().unwrap_or("");
    let found = slice
        .ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == name)
        .and_then(|p| p.port);
    let number = match (found, &port.target_port) {
        (Some(n), _) => n,
        // A slice without ports (hand-written): the numeric targetPort, else the port.
        (None, Some(IntOrString::Int(n))) if slice.ports.is_empty() => *n,
        (None, None) if slice.ports.is_empty() => port.port,
        _ => return None,
    };
    u32::try_from(number).ok().filter(|n| *n > 0 && *n <= 65535)
}
