//! Gateway API translation: one Gateway of our GatewayClass, with the routes attached to it, to
//! Listener/Route/Cluster resources and status reports. Pure: no I/O, no logging.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_proto::config as pb;

pub mod attach;
pub mod backend;
pub mod grant;
pub mod hostname;
pub mod index;
pub mod listener;
pub mod route;

pub use index::Index;

use crate::model::gateway_api::{ApiObject, GatewayClassSpec, ParentReference};
use crate::model::meta::ObjectMeta;
use crate::model::{Kind, Object, ObjectKey};
use crate::status::gateway_api::{ApiStatus, CONTROLLER_NAME, Condition, ParentReport};
use attach::{RouteRef, attach};
use backend::Backends;
pub use backend::SharedBackends;
use route::{Placement, RouteContext, RuleProblems};

/// Features of the standard channel implemented end to end (GatewayClass status), so the
/// conformance suite selects their tests. TLSRoute, TCPRoute, UDPRoute and
/// BackendTLSPolicySANValidation are translated too, but join this list only with a data plane
/// that serves L4 routes and checks SANs.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "GRPCRoute",
    "HTTPRoute",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeTerminate",
    "UDPRoute",
];

/// Everything one Gateway contributes.
#[derive(Debug, Default)]
pub struct GatewayTranslation {
    /// False when a Goma Gateway holds the same id: status only, nothing served.
    pub served: bool,
    pub listeners: Vec<pb::Listener>,
    pub routes: Vec<pb::Route>,
    pub clusters: Vec<pb::Cluster>,
    /// CaBundle resources made from ConfigMaps (BackendTLSPolicy).
    pub ca_bundles: Vec<pb::Secret>,
    /// Kubernetes Secret resource names (`ns/name`) the listeners and clusters reference.
    pub secrets: BTreeSet<String>,
    pub gateway_status: Option<ApiStatus>,
    /// Per route: its generation and its parents that are this Gateway.
    pub route_parents: BTreeMap<ObjectKey, (Option<i64>, ParentReports)>,
    /// Per BackendTLSPolicy: its generation and this Gateway as ancestor.
    pub policy_ancestors: BTreeMap<ObjectKey, (Option<i64>, ParentReports)>,
}

/// One object's reports from one Gateway: shared, not copied, by a route's memo and the
/// controller's per-route record of its parents' reports.
pub type ParentReports = Arc<[ParentReport]>;

/// Seconds since the epoch of `metadata.creationTimestamp` (RFC 3339, UTC as the API server
/// writes it); objects without one (files) count as created at 0.
pub fn creation_seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or(0)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches(['Z', 'z']);
    let time = time.split(['+', '-']).next()?;
    let mut t = time.splitn(3, ':');
    let (h, mi) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// The Secret resource of `spec.tls.backend.clientCertificateRef` (presented to backends that a
/// BackendTLSPolicy puts behind TLS), when it resolves to a TLS Secret.
fn backend_client_certificate(
    index: &Index,
    namespace: &str,
    spec: &crate::model::gateway_api::GatewaySpec,
) -> Option<String> {
    let r = spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    let key = crate::translate::secret::secret_ref(namespace, r, true)?;
    let from = grant::Referrer {
        group: crate::model::GATEWAY_API_GROUP,
        kind: "Gateway",
        namespace,
    };
    if !grant::permitted(index, &from, "", "Secret", &key.namespace, &key.name) {
        return None;
    }
    match index.get(Kind::Secret, &key.namespace, &key.name) {
        Some(Object::Other { body, .. }) => {
            match crate::translate::secret::translate_secret(&key, body) {
                Ok(pb::Secret {
                    name,
                    kind: Some(pb::secret::Kind::TlsCertificate(_)),
                    ..
                }) => Some(name),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether GatewayClass `name` exists, names our controller and is accepted: its Gateways are
/// ours to serve.
pub fn is_our_class(index: &Index, name: &str) -> bool {
    matches!(index.api(Kind::GatewayClass, "", name), Some(ApiObject::GatewayClass(c)) if serves_class(&c.spec))
}

/// Whether a GatewayClass names our controller and is accepted (the operator's check too).
pub fn serves_class(spec: &GatewayClassSpec) -> bool {
    spec.controller_name == CONTROLLER_NAME && class_refusal(spec).is_none()
}

/// Why one of our GatewayClasses is not accepted: sluice takes no class parameters, so any
/// `parametersRef` is one it cannot honour.
fn class_refusal(spec: &GatewayClassSpec) -> Option<String> {
    spec.parameters_ref.as_ref().map(|p| {
        format!(
            "spec.parametersRef: {}/{} {:?} is not supported; sluice takes no GatewayClass parameters",
            p.group, p.kind, p.name
        )
    })
}

/// Status of one of our GatewayClasses.
pub fn gateway_class_status(meta: &ObjectMeta, spec: &GatewayClassSpec) -> ApiStatus {
    let accepted = match class_refusal(spec) {
        None => Condition::new("Accepted", true, "Accepted", ""),
        Some(why) => Condition::new("Accepted", false, "InvalidParameters", why),
    };
    ApiStatus::GatewayClass {
        generation: meta.generation,
        conditions: vec![accepted],
        supported_features: SUPPORTED_FEATURES.iter().map(|f| f.to_string()).collect(),
    }
}

/// A route of any kind, as translation needs it.
enum AnyRoute<'a> {
    Http(&'a crate::model::gateway_api::Resource<crate::model::gateway_api::HttpRouteSpec>),
    Grpc(&'a crate::model::gateway_api::Resource<crate::model::gateway_api::GrpcRouteSpec>),
    L4(
        &'static str,
        &'a crate::model::gateway_api::Resource<crate::model::gateway_api::L4RouteSpec>,
    ),
}

impl AnyRoute<'_> {
    fn kind_name(&self) -> &'static str {
        match self {
            AnyRoute::Http(_) => "HTTPRoute",
            AnyRoute::Grpc(_) => "GRPCRoute",
            AnyRoute::L4(k, _) => k,
        }
    }
    fn metadata(&self) -> &ObjectMeta {
        match self {
            AnyRoute::Http(r) => &r.metadata,
            AnyRoute::Grpc(r) => &r.metadata,
            AnyRoute::L4(_, r) => &r.metadata,
        }
    }
    fn parent_refs(&self) -> &[ParentReference] {
        match self {
            AnyRoute::Http(r) => &r.spec.parent_refs,
            AnyRoute::Grpc(r) => &r.spec.parent_refs,
            AnyRoute::L4(_, r) => &r.spec.parent_refs,
        }
    }
    fn hostnames(&self) -> &[String] {
        match self {
            AnyRoute::Http(r) => &r.spec.hostnames,
            AnyRoute::Grpc(r) => &r.spec.hostnames,
            AnyRoute::L4(_, r) => &r.spec.hostnames,
        }
    }
}

const ROUTE_KINDS: [Kind; 5] = [
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::TlsRoute,
    Kind::TcpRoute,
    Kind::UdpRoute,
];

fn any_route(o: &Object) -> Option<AnyRoute<'_>> {
    let Object::Api(a) = o else { return None };
    Some(match &**a {
        ApiObject::HttpRoute(r) => AnyRoute::Http(r),
        ApiObject::GrpcRoute(r) => AnyRoute::Grpc(r),
        ApiObject::TlsRoute(r) => AnyRoute::L4("TLSRoute", r),
        ApiObject::TcpRoute(r) => AnyRoute::L4("TCPRoute", r),
        ApiObject::UdpRoute(r) => AnyRoute::L4("UDPRoute", r),
        _ => return None,
    })
}

/// The Gateways (`ns/name`) a route's parentRefs name.
pub fn route_parent_gateways(object: &Object) -> BTreeSet<ObjectKey> {
    let Some(route) = any_route(object) else {
        return BTreeSet::new();
    };
    let ns = &route.metadata().namespace;
    route
        .parent_refs()
        .iter()
        .filter(|p| {
            p.group
                .as_deref()
                .unwrap_or(crate::model::GATEWAY_API_GROUP)
                == crate::model::GATEWAY_API_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        })
        .map(|p| {
            let pns = p
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(ns);
            ObjectKey::new(Kind::Gateway, pns, &p.name)
        })
        .collect()
}

/// Translates Gateway `key`; `None` when it does not exist or its class is not ours (such
/// Gateways are ignored entirely). Also returns every object read: a change to any of them may
/// change the translation.
pub fn translate_gateway(
    objects: &BTreeMap<ObjectKey, Object>,
    key: &ObjectKey,
) -> (Option<GatewayTranslation>, BTreeSet<ObjectKey>) {
    let index = Index::new(objects);
    let result = translate(&index, key);
    (result, index.into_dependencies())
}

/// The whole translation in one pass over every route (the controller assembles the same pieces
/// from its per-route memo instead).
fn translate(index: &Index, key: &ObjectKey) -> Option<GatewayTranslation> {
    let frame = gateway_frame(index, key)?;
    let mut routes = Vec::new();
    for kind in ROUTE_KINDS {
        for object in index.all(kind) {
            if let Some(t) = translate_route(index, &frame.inputs, key, object) {
                let route_key = object.key();
                index.depend(route_key.clone());
                routes.push((route_key, t));
            }
        }
    }
    let translations: Vec<(&ObjectKey, &RouteTranslation)> =
        routes.iter().map(|(k, t)| (k, t)).collect();
    let mut out = assemble(index, frame, &translations);
    if out.served {
        out.routes = routes.into_iter().flat_map(|(_, t)| t.routes).collect();
    }
    Some(out)
}

/// What every route translation for one Gateway reads of the Gateway: when this is unchanged, a
/// route's translation changes only with the route and the objects it read itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteInputs {
    /// The listeners before routes attach (`attachedRoutes` 0).
    pub listeners: Vec<listener::ListenerState>,
    /// The Gateway's backend client certificate (Secret resource), for upstream TLS.
    pub client_certificate: Option<String>,
}

/// One of our Gateways before any route attaches.
pub struct GatewayFrame<'a> {
    key: ObjectKey,
    gateway: &'a crate::model::gateway_api::Resource<crate::model::gateway_api::GatewaySpec>,
    pub inputs: RouteInputs,
    /// Secret resources the listeners reference.
    certificates: Vec<String>,
    /// CaBundle resources the listeners need, by name.
    ca_bundles: BTreeMap<String, pb::Secret>,
}

/// Gateway `key`'s listeners; `None` when it does not exist or its class is not ours.
pub fn gateway_frame<'a>(index: &Index<'a>, key: &ObjectKey) -> Option<GatewayFrame<'a>> {
    let Some(ApiObject::Gateway(gw)) = index.api(Kind::Gateway, &key.namespace, &key.name) else {
        return None;
    };
    if !is_our_class(index, &gw.spec.gateway_class_name) {
        return None;
    }
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());
    let mut refs = listener::ListenerRefs::default();
    let listeners = listener::listeners(index, ns, name, &gw.spec, &mut refs);
    Some(GatewayFrame {
        key: key.clone(),
        gateway: gw,
        inputs: RouteInputs {
            listeners,
            client_certificate: backend_client_certificate(index, ns, &gw.spec),
        },
        certificates: refs.certificates,
        ca_bundles: refs.ca_bundles,
    })
}

/// What one route contributes to one Gateway.
#[derive(Clone, Debug)]
pub struct RouteTranslation {
    generation: Option<i64>,
    /// Its parentRefs naming the Gateway, with their conditions.
    pub reports: ParentReports,
    /// Listeners (indices) whose attachedRoutes count it: empty unless accepted somewhere.
    counted_on: Vec<usize>,
    /// Route resources, when accepted somewhere.
    pub routes: Vec<pb::Route>,
    /// Its clusters, CA bundles, Secrets and policy verdicts; `None` when it attaches to no
    /// listener (then they are not the Gateway's).
    backends: Option<Arc<backend::RouteBackends>>,
}

impl RouteTranslation {
    /// Shares its backends with the routes in `shared` that resolved the same ones.
    pub fn share_backends(&mut self, shared: &mut SharedBackends) {
        if let Some(backends) = &mut self.backends {
            shared.share(backends);
        }
    }

    /// Whether `other` holds the very same backends (one copy).
    #[cfg(test)]
    pub(crate) fn shares_backends_with(&self, other: &RouteTranslation) -> bool {
        match (&self.backends, &other.backends) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Translates `object` (a route of any kind) for Gateway `gateway` with `inputs`; `None` when no
/// parentRef of the route names the Gateway. Reads only the route's own references through
/// `index`.
pub fn translate_route(
    index: &Index,
    inputs: &RouteInputs,
    gateway: &ObjectKey,
    object: &Object,
) -> Option<RouteTranslation> {
    let route = any_route(object)?;
    let (ns, name) = (gateway.namespace.as_str(), gateway.name.as_str());
    let listeners = &inputs.listeners;
    let meta = route.metadata();
    let rref = RouteRef {
        kind: route.kind_name(),
        namespace: &meta.namespace,
        parent_refs: route.parent_refs(),
        hostnames: route.hostnames(),
    };
    let attachments = attach(index, &rref, ns, name, listeners);
    if attachments.is_empty() {
        return None;
    }
    // Group accepted listeners by their effective hostnames.
    let mut groups: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    let mut attached_to: BTreeSet<usize> = BTreeSet::new();
    for a in &attachments {
        for (i, hosts) in &a.listeners {
            let names = groups.entry(hosts.clone()).or_default();
            if !names.contains(&listeners[*i].name) {
                names.push(listeners[*i].name.clone());
            }
            attached_to.insert(*i);
        }
    }
    let placements: Vec<Placement> = groups
        .into_iter()
        .map(|(hostnames, mut listeners)| {
            listeners.sort();
            Placement {
                listeners,
                hostnames,
            }
        })
        .collect();
    let ctx = RouteContext {
        kind: route.kind_name(),
        namespace: &meta.namespace,
        name: &meta.name,
        creation_order: creation_seconds(meta),
        placements: &placements,
    };
    let mut problems = RuleProblems::default();
    let mut resources = Vec::new();
    // A route attached nowhere is still checked (its ResolvedRefs), but its clusters and
    // policies are not this gateway's.
    let mut backends = Backends {
        client_certificate: inputs.client_certificate.clone(),
        ..Default::default()
    };
    let rule_count = match &route {
        AnyRoute::Http(r) => {
            route::rules(
                index,
                &mut backends,
                &ctx,
                &r.spec.rules,
                route::http_rule,
                &mut resources,
                &mut problems,
            );
            r.spec.rules.len()
        }
        AnyRoute::Grpc(r) => {
            route::rules(
                index,
                &mut backends,
                &ctx,
                &r.spec.rules,
                route::grpc_rule,
                &mut resources,
                &mut problems,
            );
            r.spec.rules.len()
        }
        AnyRoute::L4(_, r) => {
            route::l4_rules(
                index,
                &mut backends,
                &ctx,
                &r.spec.rules,
                &mut resources,
                &mut problems,
            );
            r.spec.rules.len()
        }
    };
    let all_invalid = rule_count > 0 && problems.invalid.len() == rule_count;
    let accepted_somewhere = !placements.is_empty() && !all_invalid;
    let resolved = match problems.unresolved.first() {
        None => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
        Some(u) => Condition::new(
            "ResolvedRefs",
            false,
            u.reason,
            problems
                .unresolved
                .iter()
                .map(|u| u.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let reports = attachments
        .into_iter()
        .map(|a| {
            let mut conditions = Vec::new();
            match (&a.refused, all_invalid) {
                (Some((reason, message)), _) => {
                    conditions.push(Condition::new("Accepted", false, reason, message.clone()))
                }
                (None, true) => {
                    let (reason, _) = problems.invalid[0];
                    let message = problems
                        .invalid
                        .iter()
                        .map(|(_, m)| m.clone())
                        .collect::<Vec<_>>()
                        .join("; ");
                    conditions.push(Condition::new("Accepted", false, reason, message));
                }
                (None, false) => {
                    conditions.push(Condition::new("Accepted", true, "Accepted", ""));
                    if !problems.invalid.is_empty() {
                        let message = problems
                            .invalid
                            .iter()
                            .map(|(_, m)| m.clone())
                            .collect::<Vec<_>>()
                            .join("; ");
                        conditions.push(Condition::new(
                            "PartiallyInvalid",
                            true,
                            "UnsupportedValue",
                            message,
                        ));
                    }
                }
            }
            conditions.push(resolved.clone());
            // Kept while the route is memoised: no spare capacity.
            conditions.shrink_to_fit();
            ParentReport {
                parent_ref: a.parent_ref,
                conditions,
            }
        })
        .collect();
    Some(RouteTranslation {
        generation: meta.generation,
        reports,
        counted_on: if accepted_somewhere {
            attached_to.into_iter().collect()
        } else {
            Vec::new()
        },
        routes: if accepted_somewhere {
            resources
        } else {
            Vec::new()
        },
        backends: (!placements.is_empty()).then(|| Arc::new(backends.into_route_backends())),
    })
}

/// The Gateway's translation from its frame and its routes' translations, each with its route
/// (in route order: kind, namespace, name). Leaves `routes` empty: the caller owns the routes'
/// resources.
pub fn assemble(
    index: &Index,
    frame: GatewayFrame,
    routes: &[(&ObjectKey, &RouteTranslation)],
) -> GatewayTranslation {
    let (ns, name) = (frame.key.namespace.as_str(), frame.key.name.as_str());
    let gw = frame.gateway;
    let mut listeners = frame.inputs.listeners;
    let mut out = GatewayTranslation::default();
    out.secrets.extend(frame.certificates);
    let mut backends = Backends {
        ca_bundles: frame.ca_bundles,
        client_certificate: frame.inputs.client_certificate,
        ..Default::default()
    };
    for (key, r) in routes {
        for i in &r.counted_on {
            if let Some(l) = listeners.get_mut(*i) {
                l.report.attached_routes += 1;
            }
        }
        if let Some(b) = &r.backends {
            backends.merge(b);
        }
        out.route_parents
            .insert((*key).clone(), (r.generation, r.reports.clone()));
    }

    // Gateway status.
    let usable = listeners.iter().filter(|l| l.usable).count();
    let invalid: Vec<&str> = listeners
        .iter()
        .filter(|l| !l.usable)
        .map(|l| l.name.as_str())
        .collect();
    let mut conditions = Vec::new();
    if invalid.is_empty() {
        conditions.push(Condition::new("Accepted", true, "Accepted", ""));
    } else {
        conditions.push(Condition::new(
            "Accepted",
            usable > 0,
            "ListenersNotValid",
            format!("listeners not accepted: {}", invalid.join(", ")),
        ));
    }
    // Static addresses cannot be honoured (the Service gets its address from the cluster): say so
    // rather than serve on an address nobody asked for.
    let unsupported_address = gw.spec.addresses.first().map(|a| {
        format!(
            "spec.addresses[0]: static addresses ({} {:?}) are not supported; remove spec.addresses and the gateway's Service is given one",
            a.type_.as_deref().unwrap_or("IPAddress"),
            a.value.as_deref().unwrap_or("")
        )
    });
    if let Some(message) = &unsupported_address {
        conditions.retain(|c| c.type_ != "Accepted");
        conditions.push(Condition::new(
            "Accepted",
            false,
            "UnsupportedAddress",
            message.clone(),
        ));
    }
    let goma = index.get(Kind::GomaGateway, ns, name).is_some();
    out.served = !goma && usable > 0 && unsupported_address.is_none();
    conditions.push(if let Some(message) = unsupported_address {
        Condition::new("Programmed", false, "AddressNotAssigned", message)
    } else if goma {
        Condition::new(
            "Programmed",
            false,
            "Invalid",
            format!("Goma Gateway {ns}/{name} already serves the gateway id {ns}/{name}"),
        )
    } else if usable == 0 {
        Condition::new("Programmed", false, "Invalid", "no listener can be served")
    } else {
        Condition::new("Programmed", true, "Programmed", "")
    });
    let listener_resources: Vec<pb::Listener> = listeners
        .iter()
        .filter(|l| l.usable)
        .map(|l| l.resource.clone())
        .collect();
    out.gateway_status = Some(ApiStatus::Gateway {
        generation: gw.metadata.generation,
        conditions,
        listeners: listeners.iter().map(|l| l.report.clone()).collect(),
        resources: listener_resources
            .iter()
            .map(|l| {
                crate::status::ResourceRef::of(&crate::resource::Encoded::new(
                    sluice_proto::type_url::LISTENER,
                    l.name.clone(),
                    l,
                ))
            })
            .collect(),
    });
    out.policy_ancestors = backends.policy_reports(ns, name);
    if out.served {
        out.listeners = listener_resources;
        out.clusters = backends.clusters.into_values().collect();
        out.ca_bundles = backends.ca_bundles.into_values().collect();
        out.secrets.extend(backends.secrets);
    } else {
        out.secrets.clear();
    }
    out
}

#[cfg(test)]
mod tests;
