//! L4 routing, pure logic: compiled TCP/UDP/TLS routes, the listeners of one L4 port, and the
//! choice of listener (by SNI), route (oldest wins; by SNI on TLS listeners) and backend (by
//! weight).

use crate::router::HostPattern;
use crate::router::backend::{Backend, BackendSet};
use crate::router::host::validate_hostname;
use sluice_proto::config as pb;
use std::sync::Arc;
use std::time::Duration;

/// How an L4 listener treats a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Kind {
    Tcp,
    Udp,
    /// Route by the ClientHello's SNI, forward the encrypted bytes.
    TlsPassthrough,
    /// Terminate TLS, forward the decrypted stream.
    TlsTerminate,
}

impl L4Kind {
    /// The kind of an L4 listener; None for HTTP and HTTPS ones.
    pub fn of(l: &pb::Listener) -> Option<L4Kind> {
        match pb::Protocol::try_from(l.protocol) {
            Ok(pb::Protocol::Tcp) => Some(L4Kind::Tcp),
            Ok(pb::Protocol::Udp) => Some(L4Kind::Udp),
            Ok(pb::Protocol::Tls) => {
                let passthrough = l
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.mode == pb::TlsMode::Passthrough as i32);
                Some(if passthrough {
                    L4Kind::TlsPassthrough
                } else {
                    L4Kind::TlsTerminate
                })
            }
            _ => None,
        }
    }

    /// The `protocol` label of L4 metrics.
    pub fn label(self) -> &'static str {
        match self {
            L4Kind::Tcp => "tcp",
            L4Kind::Udp => "udp",
            L4Kind::TlsPassthrough => "tls-passthrough",
            L4Kind::TlsTerminate => "tls-terminate",
        }
    }
}

/// A route attached to an L4 listener: forward to weighted backends.
#[derive(Debug)]
pub struct L4Route {
    pub name: Arc<str>,
    pub listeners: Vec<String>,
    /// Matched against the SNI on TLS listeners; empty matches any (and no) SNI.
    pub hostnames: Vec<HostPattern>,
    pub creation_order: i64,
    /// A backend whose cluster is "" is an unresolved reference: its share is refused.
    pub backends: BackendSet,
}

impl L4Route {
    /// Compiles the parts of a route an L4 listener uses. Errors name the field.
    pub fn compile(r: &pb::Route) -> Result<L4Route, String> {
        let mut hostnames = Vec::with_capacity(r.hostnames.len());
        for (i, h) in r.hostnames.iter().enumerate() {
            validate_hostname(h).map_err(|e| format!("hostnames[{i}]: {e}"))?;
            hostnames.push(HostPattern::parse(h));
        }
        let Some(pb::route::Action::Forward(forward)) = &r.action else {
            return Err("action: routes on TCP, UDP and TLS listeners must forward".into());
        };
        if forward.backends.is_empty() {
            return Err("forward.backends: empty".into());
        }
        // Canary conditions need a request; on L4 only the weights apply.
        let backends = forward
            .backends
            .iter()
            .map(|b| Backend {
                cluster: b.cluster.as_str().into(),
                weight: b.weight,
                conditions: Vec::new(),
                exclusive: false,
                priority: 0,
                // Header modifiers have no bytes to act on at L4.
                request_headers: Default::default(),
                response_headers: Default::default(),
            })
            .collect();
        Ok(L4Route {
            name: r.name.as_str().into(),
            listeners: r.listeners.clone(),
            hostnames,
            creation_order: r.creation_order,
            backends: BackendSet::new(backends),
        })
    }

    /// The cluster for a new connection by weight; None when no backend has weight, or the
    /// chosen share is an unresolved reference (the connection is refused).
    pub fn pick_cluster(&self, rng: &mut fastrand::Rng) -> Option<&str> {
        self.backends
            .choose(0, rng, true, |_| true)
            .map(|b| &*b.cluster)
            .filter(|c| !c.is_empty())
    }

    /// How well this route's hostnames match `sni`: None when they do not; routes without
    /// hostnames match anything at the lowest specificity.
    fn sni_specificity(&self, sni: Option<&str>) -> Option<u16> {
        if self.hostnames.is_empty() {
            return Some(0);
        }
        let sni = sni?;
        self.hostnames
            .iter()
            .filter(|h| h.matches(sni))
            .map(HostPattern::specificity)
            .max()
    }
}

/// One L4 listener with its routes, oldest first (creation_order, then name).
#[derive(Debug)]
pub struct L4Listener {
    pub name: Arc<str>,
    pub hostname: HostPattern,
    pub kind: L4Kind,
    /// Idle bound of established streams (TCP/TLS) or sessions (UDP).
    pub idle_timeout: Option<Duration>,
    pub routes: Vec<Arc<L4Route>>,
}

/// Sessions of a UDP listener without an idle timeout of its own expire after this.
pub const UDP_DEFAULT_IDLE: Duration = Duration::from_secs(60);

impl L4Listener {
    /// The route of a TCP or UDP connection: the oldest attached one (Gateway API lets one
    /// TCPRoute/UDPRoute win a listener; the others are ignored).
    pub fn first_route(&self) -> Option<&Arc<L4Route>> {
        self.routes.first()
    }

    /// The route for a TLS connection's SNI: the most specific hostname match (exact beats
    /// wildcard beats a route without hostnames), then the oldest.
    pub fn route_for_sni(&self, sni: Option<&str>) -> Option<&Arc<L4Route>> {
        let mut best: Option<(u16, &Arc<L4Route>)> = None;
        for route in &self.routes {
            if let Some(s) = route.sni_specificity(sni)
                && best.is_none_or(|(b, _)| s > b)
            {
                best = Some((s, route));
            }
        }
        best.map(|(_, r)| r)
    }
}

/// The L4 listeners sharing one port, by name.
#[derive(Debug, Default)]
pub struct L4Port {
    pub listeners: Vec<L4Listener>,
}

impl L4Port {
    /// The listener of a TCP or UDP port (several on one port: the first by name).
    pub fn first(&self) -> Option<&L4Listener> {
        self.listeners.first()
    }

    /// The TLS listener whose hostname accepts `sni` most specifically (ties: name order).
    /// Without SNI only a listener without hostname accepts the connection.
    pub fn listener_for_sni(&self, sni: Option<&str>) -> Option<&L4Listener> {
        let mut best: Option<&L4Listener> = None;
        for l in &self.listeners {
            let accepts = match sni {
                Some(s) => l.hostname.matches(s),
                None => l.hostname == HostPattern::Any,
            };
            if accepts && best.is_none_or(|b| l.hostname.specificity() > b.hostname.specificity()) {
                best = Some(l);
            }
        }
        best
    }

    /// Whether a TLS port needs a certificate to terminate some of its connections.
    pub fn terminates(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.kind == L4Kind::TlsTerminate)
    }
}

/// Orders a listener's routes: oldest first, then by name.
pub fn sort_routes(routes: &mut [Arc<L4Route>]) {
    routes.sort_by(|a, b| (a.creation_order, &a.name).cmp(&(b.creation_order, &b.name)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, order: i64, hostnames: &[&str], backends: &[(&str, u32)]) -> Arc<L4Route> {
        let r = pb::Route {
            name: name.into(),
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            creation_order: order,
            action: Some(pb::route::Action::Forward(pb::ForwardAction {
                backends: backends
                    .iter()
                    .map(|(c, w)| pb::WeightedBackend {
                        cluster: c.to_string(),
                        weight: *w,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        };
        Arc::new(L4Route::compile(&r).unwrap())
    }

    fn listener(name: &str, hostname: &str, mut routes: Vec<Arc<L4Route>>) -> L4Listener {
        sort_routes(&mut routes);
        L4Listener {
            name: name.into(),
            hostname: HostPattern::parse(hostname),
            kind: L4Kind::TlsPassthrough,
            idle_timeout: None,
            routes,
        }
    }

    #[test]
    fn oldest_route_wins_then_name() {
        let l = listener(
            "tcp",
            "",
            vec![
                route("b", 5, &[], &[("x", 1)]),
                route("c", 3, &[], &[("x", 1)]),
                route("a", 5, &[], &[("x", 1)]),
            ],
        );
        let names: Vec<&str> = l.routes.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!(l.first_route().map(|r| &*r.name), Some("c"));
    }

    #[test]
    fn sni_picks_exact_over_wildcard_over_any() {
        let l = listener(
            "tls",
            "",
            vec![
                route("any", 1, &[], &[("x", 1)]),
                route("wild", 2, &["*.example.com"], &[("x", 1)]),
                route("exact", 3, &["api.example.com"], &[("x", 1)]),
                route("older-exact", 0, &["db.example.com"], &[("x", 1)]),
                route("newer-exact", 9, &["db.example.com"], &[("x", 1)]),
            ],
        );
        let pick = |sni: Option<&str>| l.route_for_sni(sni).map(|r| &*r.name);
        assert_eq!(pick(Some("api.example.com")), Some("exact"));
        assert_eq!(pick(Some("web.example.com")), Some("wild"));
        assert_eq!(pick(Some("db.example.com")), Some("older-exact"));
        assert_eq!(pick(Some("other.test")), Some("any"));
        assert_eq!(pick(None), Some("any"));
        let strict = listener(
            "tls",
            "",
            vec![route("wild", 2, &["*.example.com"], &[("x", 1)])],
        );
        assert_eq!(
            strict.route_for_sni(Some("example.com")).map(|r| &*r.name),
            None
        );
        assert!(strict.route_for_sni(None).is_none());
    }

    #[test]
    fn listener_by_sni_is_the_most_specific() {
        let port = L4Port {
            listeners: vec![
                listener("a-any", "", vec![]),
                listener("b-wild", "*.example.com", vec![]),
                listener("c-exact", "api.example.com", vec![]),
            ],
        };
        let pick = |sni: Option<&str>| port.listener_for_sni(sni).map(|l| &*l.name);
        assert_eq!(pick(Some("api.example.com")), Some("c-exact"));
        assert_eq!(pick(Some("x.example.com")), Some("b-wild"));
        assert_eq!(pick(Some("x.test")), Some("a-any"));
        assert_eq!(pick(None), Some("a-any"));
        let named = L4Port {
            listeners: vec![listener("only", "api.example.com", vec![])],
        };
        assert!(named.listener_for_sni(None).is_none());
    }

    #[test]
    fn backends_by_weight_and_unresolved_shares_refused() {
        let r = route("r", 0, &[], &[("a", 3), ("b", 1), ("zero", 0)]);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..4000 {
            *counts.entry(r.pick_cluster(&mut rng).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(counts.get("zero"), None);
        let a = counts["a"];
        assert!((2700..3300).contains(&a), "{counts:?}");

        let half = route("h", 0, &[], &[("a", 1), ("", 1)]);
        let refused = (0..1000)
            .filter(|_| half.pick_cluster(&mut rng).is_none())
            .count();
        assert!((400..600).contains(&refused), "{refused}");
        let none = route("n", 0, &[], &[("a", 0)]);
        assert_eq!(none.pick_cluster(&mut rng), None);
    }

    #[test]
    fn only_forward_routes_compile() {
        let r = pb::Route {
            name: "d".into(),
            action: Some(pb::route::Action::DirectResponse(
                pb::DirectResponse::default(),
            )),
            ..Default::default()
        };
        assert_eq!(
            L4Route::compile(&r).unwrap_err(),
            "action: routes on TCP, UDP and TLS listeners must forward"
        );
    }
}
