//! Route attachment: which listeners of a Gateway each parentRef of a route lands on, and why not.

use super::hostname::intersect;
use super::index::Index;
use super::listener::{ListenerState, namespace_allowed};
use crate::model::GATEWAY_API_GROUP;
use crate::model::gateway_api::ParentReference;
use crate::status::gateway_api::ParentRef;

/// The route as attachment sees it.
pub struct RouteRef<'a> {
    /// HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute.
    pub kind: &'static str,
    pub namespace: &'a str,
    pub parent_refs: &'a [ParentReference],
    pub hostnames: &'a [String],
}

/// One parentRef of the route that names this Gateway.
pub struct Attachment {
    pub parent_ref: ParentRef,
    /// (listener index, hostnames served there); empty when not accepted.
    pub listeners: Vec<(usize, Vec<String>)>,
    /// Why the route was not accepted: (reason, message).
    pub refused: Option<(&'static str, String)>,
}

pub fn echo(p: &ParentReference) -> ParentRef {
    ParentRef {
        group: p.group.clone(),
        kind: p.kind.clone(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        section_name: p.section_name.clone(),
        port: p.port,
    }
}

/// Whether `p` (of a route in `route_ns`) names Gateway `ns/name`.
pub fn names_gateway(p: &ParentReference, route_ns: &str, ns: &str, name: &str) -> bool {
    p.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && p.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(route_ns)
            == ns
        && p.name == name
}

pub fn attach(
    index: &Index,
    route: &RouteRef,
    gateway_ns: &str,
    gateway: &str,
    listeners: &[ListenerState],
) -> Vec<Attachment> {
    route
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, p)| names_gateway(p, route.namespace, gateway_ns, gateway))
        .map(|(i, p)| {
            let field = format!("spec.parentRefs[{i}]");
            let candidates: Vec<(usize, &ListenerState)> = listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| p.section_name.as_ref().is_none_or(|s| *s == l.name))
                .filter(|(_, l)| p.port.is_none_or(|port| port == l.port))
                .collect();
            let mut attachment = Attachment {
                parent_ref: echo(p),
                listeners: Vec::new(),
                refused: None,
            };
            if candidates.is_empty() {
                attachment.refused = Some((
                    "NoMatchingParent",
                    format!("{field}: Gateway {gateway_ns}/{gateway} has no listener matching sectionName/port"),
                ));
                return attachment;
            }
            let allowed: Vec<&(usize, &ListenerState)> = candidates
                .iter()
                .filter(|(_, l)| l.usable)
                .filter(|(_, l)| {
                    l.kinds.iter().any(|k| k.group == GATEWAY_API_GROUP && k.kind == route.kind)
                })
                .filter(|(_, l)| namespace_allowed(index, &l.namespaces, gateway_ns, route.namespace))
                .collect();
            if allowed.is_empty() {
                attachment.refused = Some((
                    "NotAllowedByListeners",
                    format!(
                        "{field}: no listener of Gateway {gateway_ns}/{gateway} accepts a {} from namespace {}",
                        route.kind, route.namespace
                    ),
                ));
                return attachment;
            }
            let uses_hostnames = matches!(route.kind, "HTTPRoute" | "GRPCRoute" | "TLSRoute");
            for (idx, l) in allowed {
                let hosts = if uses_hostnames {
                    intersect(l.hostname.as_deref(), route.hostnames)
                } else {
                    Some(Vec::new())
                };
                if let Some(h) = hosts {
                    attachment.listeners.push((*idx, h));
                }
            }
            if attachment.listeners.is_empty() {
                attachment.refused = Some((
                    "NoMatchingListenerHostname",
                    format!("{field}: spec.hostnames do not intersect any listener hostname of Gateway {gateway_ns}/{gateway}"),
                ));
            }
            attachment
        })
        .collect()
}
