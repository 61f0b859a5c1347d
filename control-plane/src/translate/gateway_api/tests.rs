use super::*;
use crate::provider::file::parse_manifests;
use crate::status::gateway_api::ListenerReport;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
";

const ECHO: &str = "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: apps}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: apps, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: false}
---
";

fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sluice
  listeners:
{listeners}---
"
    )
}

const HTTP: &str = "  - {name: http, port: 80, protocol: HTTP}\n";

fn http_route(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
{spec}---
"
    )
}

fn objects(yaml: &str) -> BTreeMap<ObjectKey, Object> {
    let (objects, diags) = parse_manifests(std::path::Path::new("t.yaml"), yaml);
    assert!(diags.is_empty(), "{diags:?}");
    objects.into_iter().map(|o| (o.key(), o)).collect()
}

fn translate_yaml(yaml: &str) -> GatewayTranslation {
    let objects = objects(yaml);
    translate_gateway(&objects, &ObjectKey::new(Kind::Gateway, "apps", "gw"))
        .0
        .expect("our gateway")
}

fn listener_reports(t: &GatewayTranslation) -> &[ListenerReport] {
    match &t.gateway_status {
        Some(ApiStatus::Gateway { listeners, .. }) => listeners,
        other => panic!("gateway status expected: {other:?}"),
    }
}

fn gateway_conditions(t: &GatewayTranslation) -> &[Condition] {
    match &t.gateway_status {
        Some(ApiStatus::Gateway { conditions, .. }) => conditions,
        other => panic!("gateway status expected: {other:?}"),
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions:?}"))
}

fn route_conditions<'a>(t: &'a GatewayTranslation, ns: &str, name: &str) -> &'a [Condition] {
    let key = ObjectKey::new(Kind::HttpRoute, ns, name);
    &t.route_parents
        .get(&key)
        .unwrap_or_else(|| panic!("no status for {key}: {:?}", t.route_parents.keys()))
        .1[0]
        .conditions
}

fn forward(route: &pb::Route) -> &pb::ForwardAction {
    match &route.action {
        Some(pb::route::Action::Forward(f)) => f,
        other => panic!("forward expected: {other:?}"),
    }
}

const TO_ECHO: &str =
    "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n";

#[test]
fn gateways_of_other_controllers_are_ignored() {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\nspec: {{controllerName: example.com/other}}\n---\n{}",
        gateway(HTTP)
    );
    let objects = objects(&yaml);
    let (t, deps) = translate_gateway(&objects, &ObjectKey::new(Kind::Gateway, "apps", "gw"));
    assert!(t.is_none());
    // The class is an input: when it becomes ours the gateway is translated.
    assert!(deps.contains(&ObjectKey::new(Kind::GatewayClass, "", "sluice")));
}

#[test]
fn an_http_route_becomes_a_route_per_rule_and_a_cluster_per_service_port() {
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route(
            "web",
            "apps",
            "  parentRefs: [{name: gw}]\n  hostnames: [a.test]\n  rules:\n  - matches: [{path: {type: Exact, value: /x}, method: GET, headers: [{name: X-A, value: '1'}, {name: x-a, value: '2'}], queryParams: [{type: RegularExpression, name: q, value: 'v.*'}]}]\n    backendRefs: [{name: echo, port: 80, weight: 3}]\n  - backendRefs: [{name: echo, port: 80}]\n"
        )
    ));
    assert!(t.served);
    assert_eq!(t.listeners.len(), 1);
    assert_eq!(t.listeners[0].name, "http");
    assert_eq!(t.listeners[0].protocol, pb::Protocol::Http as i32);
    let names: Vec<&str> = t.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["httproute/apps/web/0000", "httproute/apps/web/0001"]
    );
    let r = &t.routes[0];
    assert_eq!(r.listeners, ["http"]);
    assert_eq!(r.hostnames, ["a.test"]);
    assert_eq!(r.source, "HTTPRoute apps/web");
    let m = &r.matches[0];
    assert_eq!(
        m.path,
        Some(pb::PathMatch {
            kind: pb::path_match::Kind::Exact as i32,
            value: "/x".into()
        })
    );
    assert_eq!(m.method, "GET");
    // The first of equal header names (case-insensitive) is the one that counts.
    assert_eq!(m.headers.len(), 1);
    assert_eq!(
        m.headers[0].value.as_ref().map(|v| v.value.as_str()),
        Some("1")
    );
    assert_eq!(
        m.query_params[0].value.as_ref().map(|v| v.value.as_str()),
        Some("^(?:v.*)$")
    );
    assert_eq!(forward(r).backends[0].cluster, "service/apps/echo/80");
    assert_eq!(forward(r).backends[0].weight, 3);
    // No matches: the CRD default, PathPrefix "/".
    assert_eq!(
        t.routes[1].matches[0].path,
        Some(pb::PathMatch {
            kind: pb::path_match::Kind::Prefix as i32,
            value: "/".into()
        })
    );
    // One cluster shared by both rules, with the ready endpoint on the target port.
    assert_eq!(t.clusters.len(), 1);
    assert_eq!(t.clusters[0].name, "service/apps/echo/80");
    assert_eq!(
        t.clusters[0].endpoints,
        [pb::Endpoint {
            address: "10.0.0.1".into(),
            port: 8080,
            weight: 1
        }]
    );
    let c = route_conditions(&t, "apps", "web");
    assert!(condition(c, "Accepted").status);
    assert!(condition(c, "ResolvedRefs").status);
    assert_eq!(listener_reports(&t)[0].attached_routes, 1);
    assert!(condition(gateway_conditions(&t), "Programmed").status);
}

#[test]
fn hostnames_must_intersect_the_listeners() {
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway("  - {name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}\n"),
        http_route(
            "web",
            "apps",
            "  parentRefs: [{name: gw}]\n  hostnames: [other.org]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n"
        )
    ));
    let c = route_conditions(&t, "apps", "web");
    assert_eq!(
        condition(c, "Accepted").reason,
        "NoMatchingListenerHostname"
    );
    assert!(!condition(c, "Accepted").status);
    assert!(t.routes.is_empty());
    // Nothing of a route attached nowhere is served.
    assert!(t.clusters.is_empty());
    assert_eq!(listener_reports(&t)[0].attached_routes, 0);
}

#[test]
fn section_name_and_port_select_listeners() {
    let listeners = "  - {name: a, port: 80, protocol: HTTP, hostname: a.test}\n  - {name: b, port: 8080, protocol: HTTP}\n";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}{}{}",
        gateway(listeners),
        http_route(
            "by-section",
            "apps",
            "  parentRefs: [{name: gw, sectionName: b}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n"
        ),
        http_route(
            "by-port",
            "apps",
            "  parentRefs: [{name: gw, port: 80}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n"
        ),
        http_route(
            "nowhere",
            "apps",
            "  parentRefs: [{name: gw, sectionName: c}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n"
        ),
    ));
    let route = |name: &str| {
        t.routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(route("httproute/apps/by-section/0000").listeners, ["b"]);
    let by_port = route("httproute/apps/by-port/0000");
    assert_eq!(
        (by_port.listeners.clone(), by_port.hostnames.clone()),
        (vec!["a".to_string()], vec!["a.test".to_string()])
    );
    assert_eq!(
        condition(route_conditions(&t, "apps", "nowhere"), "Accepted").reason,
        "NoMatchingParent"
    );
}

#[test]
fn a_route_on_listeners_with_different_hostnames_is_split() {
    let listeners = "  - {name: a, port: 80, protocol: HTTP, hostname: a.test}\n  - {name: b, port: 80, protocol: HTTP, hostname: b.test}\n";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(listeners),
        http_route("web", "apps", TO_ECHO)
    ));
    let placed: Vec<(String, Vec<String>, Vec<String>)> = t
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.listeners.clone(), r.hostnames.clone()))
        .collect();
    assert_eq!(
        placed,
        [
            (
                "httproute/apps/web/0000".into(),
                vec!["a".into()],
                vec!["a.test".into()]
            ),
            (
                "httproute/apps/web/0000/1".into(),
                vec!["b".into()],
                vec!["b.test".into()]
            ),
        ]
    );
    assert!(listener_reports(&t).iter().all(|l| l.attached_routes == 1));
}

#[test]
fn allowed_routes_namespaces() {
    let other = http_route(
        "web",
        "other",
        "  parentRefs: [{name: gw, namespace: apps}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n",
    );
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{other}", gateway(HTTP)));
    assert_eq!(
        condition(route_conditions(&t, "other", "web"), "Accepted").reason,
        "NotAllowedByListeners"
    );

    let selector = "  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}\n";
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {team: a}}\n---\n";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{ns}{}{other}", gateway(selector)));
    assert!(condition(route_conditions(&t, "other", "web"), "Accepted").status);
    // The cross-namespace backend still needs a grant.
    let c = route_conditions(&t, "other", "web");
    assert_eq!(condition(c, "ResolvedRefs").reason, "BackendNotFound");

    let all =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{other}", gateway(all)));
    assert!(condition(route_conditions(&t, "other", "web"), "Accepted").status);
}

#[test]
fn cross_namespace_backends_need_a_reference_grant() {
    let route = http_route(
        "web",
        "front",
        "  parentRefs: [{name: gw, namespace: apps}]\n  rules: [{backendRefs: [{name: echo, namespace: apps, port: 80}]}]\n",
    );
    let all =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}", gateway(all)));
    let c = route_conditions(&t, "front", "web");
    assert!(condition(c, "Accepted").status);
    assert_eq!(condition(c, "ResolvedRefs").reason, "RefNotPermitted");
    // Its only backend is unresolved: every request is answered 500.
    assert_eq!(t.routes[0].action, Some(internal_error()));
    assert!(t.clusters.is_empty());

    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: apps}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}]\n  to: [{group: '', kind: Service}]\n---\n";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}{grant}", gateway(all)));
    assert!(condition(route_conditions(&t, "front", "web"), "ResolvedRefs").status);
    assert_eq!(
        forward(&t.routes[0]).backends[0].cluster,
        "service/apps/echo/80"
    );

    // A grant for another kind or namespace does not count.
    let wrong = grant.replace("namespace: front", "namespace: elsewhere");
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}{wrong}", gateway(all)));
    assert_eq!(
        condition(route_conditions(&t, "front", "web"), "ResolvedRefs").reason,
        "RefNotPermitted"
    );
}

#[test]
fn unresolved_backends_keep_their_share() {
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route(
            "web",
            "apps",
            "  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: echo, port: 80, weight: 1}, {name: missing, port: 80, weight: 2}, {group: example.com, kind: Bucket, name: b, weight: 3}, {name: echo, port: 81}]\n"
        )
    ));
    let backends: Vec<(&str, u32)> = forward(&t.routes[0])
        .backends
        .iter()
        .map(|b| (b.cluster.as_str(), b.weight))
        .collect();
    assert_eq!(
        backends,
        [("service/apps/echo/80", 1), ("", 2), ("", 3), ("", 1)]
    );
    let c = condition(route_conditions(&t, "apps", "web"), "ResolvedRefs");
    assert!(!c.status);
    assert_eq!(c.reason, "BackendNotFound");
    assert!(
        c.message
            .contains("spec.rules[0].backendRefs[1]: Service apps/missing does not exist"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains(
            "spec.rules[0].backendRefs[2]: example.com/Bucket is not a supported backend"
        ),
        "{}",
        c.message
    );
    assert!(
        c.message
            .contains("spec.rules[0].backendRefs[3].port: Service apps/echo has no port 81"),
        "{}",
        c.message
    );

    let invalid_kind = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route(
            "web",
            "apps",
            "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]\n"
        )
    ));
    assert_eq!(
        condition(
            route_conditions(&invalid_kind, "apps", "web"),
            "ResolvedRefs"
        )
        .reason,
        "InvalidKind"
    );
}

fn internal_error() -> pb::route::Action {
    pb::route::Action::DirectResponse(pb::DirectResponse {
        status: 500,
        ..Default::default()
    })
}

#[test]
fn a_rule_without_backends_answers_500() {
    let t = translate_yaml(&format!(
        "{CLASS}{}{}",
        gateway(HTTP),
        http_route("web", "apps", "  parentRefs: [{name: gw}]\n  rules: [{}]\n")
    ));
    assert_eq!(
        t.routes[0].action,
        Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 500,
            ..Default::default()
        }))
    );
}

#[test]
fn listener_conflicts_reject_every_indistinct_listener() {
    let t = translate_yaml(&format!(
        "{CLASS}{}",
        gateway(
            "  - {name: a, port: 80, protocol: HTTP, hostname: x.test}\n  - {name: b, port: 80, protocol: HTTP, hostname: x.test}\n  - {name: c, port: 80, protocol: HTTP, hostname: y.test}\n  - {name: d, port: 443, protocol: HTTP}\n  - {name: e, port: 443, protocol: TCP}\n  - {name: f, port: 443, protocol: UDP}\n"
        )
    ));
    let reports = listener_reports(&t);
    let conflicted = |name: &str| {
        let l = reports.iter().find(|l| l.name == name).expect(name);
        let c = condition(&l.conditions, "Conflicted");
        (c.status, c.reason)
    };
    assert_eq!(conflicted("a"), (true, "HostnameConflict"));
    assert_eq!(conflicted("b"), (true, "HostnameConflict"));
    assert_eq!(conflicted("c"), (false, "NoConflicts"));
    assert_eq!(conflicted("d"), (true, "ProtocolConflict"));
    assert_eq!(conflicted("e"), (true, "ProtocolConflict"));
    assert_eq!(conflicted("f"), (false, "NoConflicts"));
    let a = reports.iter().find(|l| l.name == "a").expect("a");
    let accepted = condition(&a.conditions, "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "HostnameConflict")
    );
    assert!(!condition(&a.conditions, "Programmed").status);
    let served: Vec<&str> = t.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(served, ["c", "f"]);
    let accepted = condition(gateway_conditions(&t), "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (true, "ListenersNotValid")
    );
}

#[test]
fn https_and_tls_listeners_may_share_a_port_by_hostname() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: apps}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n---\n";
    let t = translate_yaml(&format!(
        "{CLASS}{secret}{}",
        gateway(
            "  - {name: web, port: 443, protocol: HTTPS, hostname: web.test, tls: {certificateRefs: [{name: cert}]}}\n  - {name: db, port: 443, protocol: TLS, hostname: db.test, tls: {mode: Passthrough}}\n"
        )
    ));
    assert_eq!(t.listeners.len(), 2);
    assert_eq!(
        t.listeners[0]
            .tls
            .as_ref()
            .map(|t| t.certificate_secrets.clone()),
        Some(vec!["apps/cert".to_string()])
    );
    assert_eq!(
        t.listeners[1].tls.as_ref().map(|t| t.mode),
        Some(pb::TlsMode::Passthrough as i32)
    );
    assert_eq!(t.secrets.iter().collect::<Vec<_>>(), ["apps/cert"]);
}

#[test]
fn certificate_references_are_checked() {
    let https = |refs: &str| {
        gateway(&format!(
            "  - {{name: web, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{refs}]}}}}\n"
        ))
    };
    let t = translate_yaml(&format!("{CLASS}{}", https("{name: missing}")));
    let l = &listener_reports(&t)[0];
    let c = condition(&l.conditions, "ResolvedRefs");
    assert_eq!((c.status, c.reason), (false, "InvalidCertificateRef"));
    assert!(
        c.message.contains(
            "spec.listeners[0].tls.certificateRefs[0]: Secret apps/missing does not exist"
        ),
        "{}",
        c.message
    );
    assert!(!condition(&l.conditions, "Programmed").status);
    assert!(t.listeners.is_empty());
    assert!(!t.served);

    let shared = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: certs}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n---\n";
    let t = translate_yaml(&format!(
        "{CLASS}{shared}{}",
        https("{name: cert, namespace: certs}")
    ));
    assert_eq!(
        condition(&listener_reports(&t)[0].conditions, "ResolvedRefs").reason,
        "RefNotPermitted"
    );
    let grant = "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: apps}]\n  to: [{group: '', kind: Secret, name: cert}]\n---\n";
    let t = translate_yaml(&format!(
        "{CLASS}{shared}{grant}{}",
        https("{name: cert, namespace: certs}")
    ));
    assert!(condition(&listener_reports(&t)[0].conditions, "ResolvedRefs").status);
    assert_eq!(t.secrets.iter().collect::<Vec<_>>(), ["certs/cert"]);

    let opaque = "apiVersion: v1\nkind: Secret\nmetadata: {name: o, namespace: apps}\nstringData: {a: b}\n---\n";
    let t = translate_yaml(&format!("{CLASS}{opaque}{}", https("{name: o}")));
    assert_eq!(
        condition(&listener_reports(&t)[0].conditions, "ResolvedRefs").reason,
        "InvalidCertificateRef"
    );
}

#[test]
fn route_kinds_a_listener_cannot_serve_are_reported() {
    let t = translate_yaml(&format!(
        "{CLASS}{}",
        gateway(
            "  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TCPRoute}, {group: example.com, kind: HTTPRoute}]}\n"
        )
    ));
    let l = &listener_reports(&t)[0];
    assert_eq!(
        l.supported_kinds
            .iter()
            .map(|k| k.kind.as_str())
            .collect::<Vec<_>>(),
        ["HTTPRoute"]
    );
    let c = condition(&l.conditions, "ResolvedRefs");
    assert_eq!((c.status, c.reason), (false, "InvalidRouteKinds"));
    // Default kinds by protocol.
    let t = translate_yaml(&format!("{CLASS}{}", gateway(HTTP)));
    let kinds: Vec<&str> = listener_reports(&t)[0]
        .supported_kinds
        .iter()
        .map(|k| k.kind.as_str())
        .collect();
    assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"]);
}

#[test]
fn unsupported_protocols_are_not_accepted() {
    let t = translate_yaml(&format!(
        "{CLASS}{}{}",
        gateway(
            "  - {name: x, port: 80, protocol: example.com/QUIC}\n  - {name: http, port: 8080, protocol: HTTP}\n"
        ),
        ""
    ));
    let c = condition(&listener_reports(&t)[0].conditions, "Accepted");
    assert_eq!((c.status, c.reason), (false, "UnsupportedProtocol"));
    assert_eq!(t.listeners.len(), 1);
}

#[test]
fn filters_map_to_the_route() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-A, value: a}], add: [{name: X-B, value: b}], remove: [X-C]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-R, value: r}]}
    - type: URLRewrite
      urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: echo, port: 80}, percent: 25}
    - type: CORS
      cors: {allowOrigins: ['https://a.test'], allowMethods: [GET], allowCredentials: true}
    timeouts: {request: 10s, backendRequest: 500ms}
    backendRefs:
    - name: echo
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: e}]}}]
  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    let r = &t.routes[0];
    let req = r.request_headers.as_ref().expect("request headers");
    assert_eq!(
        (
            req.set[0].name.as_str(),
            req.add[0].value.as_str(),
            req.remove[0].as_str()
        ),
        ("X-A", "b", "X-C")
    );
    assert_eq!(
        r.response_headers.as_ref().map(|h| h.add[0].name.as_str()),
        Some("X-R")
    );
    assert_eq!(
        r.mirrors,
        [pb::RequestMirror {
            cluster: "service/apps/echo/80".into(),
            numerator: 25,
            denominator: 100
        }]
    );
    let cors = r.cors.as_ref().expect("cors");
    assert_eq!(
        (
            cors.allow_origins.clone(),
            cors.allow_credentials,
            cors.max_age_seconds
        ),
        (vec!["https://a.test".to_string()], true, 5)
    );
    let f = forward(r);
    assert_eq!(f.host_rewrite, "internal.test");
    assert_eq!(
        f.path_rewrite,
        Some(pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::ReplacePrefix("/v2".into()))
        })
    );
    assert_eq!(
        f.timeout,
        Some(prost_types::Duration {
            seconds: 10,
            nanos: 0
        })
    );
    assert_eq!(
        f.backend_timeout,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000
        })
    );
    assert_eq!(
        f.backends[0]
            .request_headers
            .as_ref()
            .map(|h| h.set[0].name.as_str()),
        Some("X-Backend")
    );
    assert_eq!(
        t.routes[1].action,
        Some(pb::route::Action::Redirect(pb::Redirect {
            scheme: "https".into(),
            status: 301,
            ..Default::default()
        }))
    );
}

#[test]
fn incompatible_filters_reject_the_rule() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - filters:
    - {type: RequestRedirect, requestRedirect: {hostname: a.test}}
    - {type: URLRewrite, urlRewrite: {hostname: b.test}}
  - backendRefs: [{name: echo, port: 80}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    // One of two rules is invalid: the route is accepted, partially.
    let c = route_conditions(&t, "apps", "web");
    assert!(condition(c, "Accepted").status);
    let partial = condition(c, "PartiallyInvalid");
    assert!(
        partial
            .message
            .contains("spec.rules[0].filters: RequestRedirect and URLRewrite cannot be combined"),
        "{}",
        partial.message
    );
    assert_eq!(
        t.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["httproute/apps/web/0001"]
    );

    let only_bad = spec.replace("  - backendRefs: [{name: echo, port: 80}]\n", "");
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", &only_bad)
    ));
    let accepted = condition(route_conditions(&t, "apps", "web"), "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "IncompatibleFilters")
    );
    assert!(t.routes.is_empty());
    assert_eq!(listener_reports(&t)[0].attached_routes, 0);
}

#[test]
fn a_goma_gateway_keeps_its_id() {
    let goma = "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: gw, namespace: apps}\nspec: {}\n---\n";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{goma}{}{}",
        gateway(HTTP),
        http_route("web", "apps", TO_ECHO)
    ));
    assert!(!t.served);
    assert!(t.listeners.is_empty() && t.routes.is_empty() && t.clusters.is_empty());
    let p = condition(gateway_conditions(&t), "Programmed");
    assert_eq!((p.status, p.reason), (false, "Invalid"));
    assert!(p.message.contains("Goma Gateway apps/gw"), "{}", p.message);
}

#[test]
fn grpc_routes_match_paths_and_use_h2c() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - method: {service: pkg.Echo, method: Say}
    - method: {service: pkg.Echo}
    - method: {method: Say}
    - method: {type: RegularExpression, service: 'pkg\\..*'}
      headers: [{name: x-v, value: '1'}]
    backendRefs: [{name: echo, port: 80}]
---
";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}", gateway(HTTP)));
    let r = &t.routes[0];
    assert_eq!(r.name, "grpcroute/apps/rpc/0000");
    let paths: Vec<(i32, &str)> = r
        .matches
        .iter()
        .map(|m| {
            let p = m.path.as_ref().expect("path");
            (p.kind, p.value.as_str())
        })
        .collect();
    assert_eq!(
        paths,
        [
            (pb::path_match::Kind::Exact as i32, "/pkg.Echo/Say"),
            (pb::path_match::Kind::Prefix as i32, "/pkg.Echo"),
            (pb::path_match::Kind::Regex as i32, "/[^/]+/Say"),
            (pb::path_match::Kind::Regex as i32, "/pkg\\..*/[^/]+"),
        ]
    );
    assert_eq!(r.matches[3].headers[0].name, "x-v");
    assert_eq!(t.clusters[0].protocol, pb::UpstreamProtocol::H2c as i32);
}

#[test]
fn app_protocol_h2c_makes_an_h2c_cluster() {
    let echo = ECHO.replace(
        "targetPort: 8080}",
        "targetPort: 8080, appProtocol: kubernetes.io/h2c}",
    );
    let t = translate_yaml(&format!(
        "{CLASS}{echo}{}{}",
        gateway(HTTP),
        http_route("web", "apps", TO_ECHO)
    ));
    assert_eq!(t.clusters[0].protocol, pb::UpstreamProtocol::H2c as i32);
}

#[test]
fn l4_routes_attach_to_their_listeners() {
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: db, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: echo, port: 80, weight: 2}, {name: echo, port: 80, weight: 1}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: sni, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [db.test]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: wrong, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{routes}",
        gateway(
            "  - {name: tcp, port: 5432, protocol: TCP}\n  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}\n"
        )
    ));
    let db = t
        .routes
        .iter()
        .find(|r| r.name == "tcproute/apps/db/0000")
        .expect("tcp route");
    assert_eq!(db.listeners, ["tcp"]);
    assert_eq!(
        forward(db)
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    let sni = t
        .routes
        .iter()
        .find(|r| r.name == "tlsroute/apps/sni/0000")
        .expect("tls route");
    assert_eq!(
        (sni.listeners.clone(), sni.hostnames.clone()),
        (vec!["tls".to_string()], vec!["db.test".to_string()])
    );
    let wrong = &t.route_parents[&ObjectKey::new(Kind::TcpRoute, "apps", "wrong")].1[0].conditions;
    assert_eq!(condition(wrong, "Accepted").reason, "NotAllowedByListeners");
}

#[test]
fn backend_tls_policy_configures_the_cluster() {
    let policy = |name: &str, created: &str, hostname: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: apps, creationTimestamp: '{created}'}}
spec:
  targetRefs: [{{group: '', kind: Service, name: echo}}]
  validation:
    hostname: {hostname}
    caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}]
    subjectAltNames: [{{type: Hostname, hostname: '*.echo.test'}}, {{type: URI, uri: 'spiffe://td/echo'}}]
---
"
        )
    };
    let ca = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: apps}\ndata: {ca.crt: PEM}\n---\n";
    let yaml = format!(
        "{CLASS}{ECHO}{ca}{}{}{}{}",
        gateway(HTTP),
        http_route("web", "apps", TO_ECHO),
        policy("newer", "2026-01-02T00:00:00Z", "new.echo.test"),
        policy("older", "2026-01-01T00:00:00Z", "echo.test"),
    );
    let t = translate_yaml(&yaml);
    let tls = t.clusters[0].tls.as_ref().expect("upstream tls");
    assert_eq!(tls.server_name, "echo.test");
    assert_eq!(tls.ca_secret, "configmap/apps/ca");
    assert_eq!(tls.subject_alt_names.len(), 2);
    assert_eq!(t.clusters[0].protocol, pb::UpstreamProtocol::Http1 as i32);
    assert_eq!(t.ca_bundles[0].name, "configmap/apps/ca");
    assert_eq!(
        t.ca_bundles[0].kind,
        Some(pb::secret::Kind::CaBundle(pb::CaBundle {
            pem: b"PEM".to_vec()
        }))
    );
    let status = |name: &str| {
        &t.policy_ancestors[&ObjectKey::new(Kind::BackendTlsPolicy, "apps", name)].1[0]
    };
    assert!(condition(&status("older").conditions, "Accepted").status);
    assert_eq!(
        condition(&status("newer").conditions, "Accepted").reason,
        "Conflicted"
    );
    assert_eq!(status("older").parent_ref.name, "gw");

    // A missing CA fails closed: the backend is not reached in plaintext.
    let t = translate_yaml(&yaml.replace(ca, ""));
    assert_eq!(t.routes[0].action, Some(internal_error()));
    assert_eq!(
        condition(&status_of(&t, "older"), "Accepted").reason,
        "NoValidCACertificate"
    );
}

fn status_of(t: &GatewayTranslation, policy: &str) -> Vec<Condition> {
    t.policy_ancestors[&ObjectKey::new(Kind::BackendTlsPolicy, "apps", policy)].1[0]
        .conditions
        .clone()
}

#[test]
fn creation_order_is_the_creation_time() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2024-02-29T12:30:05Z"), Some(1_709_209_805));
    assert_eq!(parse_rfc3339("garbage"), None);
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: apps, creationTimestamp: '2024-02-29T12:30:05Z'}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: echo, port: 80}]}]\n---\n";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}", gateway(HTTP)));
    assert_eq!(t.routes[0].creation_order, 1_709_209_805);
}

#[test]
fn the_class_reports_accepted_and_its_features() {
    let objects = objects(CLASS);
    let Some(Object::Api(class)) = objects.values().next() else {
        panic!()
    };
    let ApiObject::GatewayClass(class) = class.as_ref() else {
        panic!()
    };
    let ApiStatus::GatewayClass {
        conditions,
        supported_features,
        ..
    } = gateway_class_status(&class.metadata, &class.spec)
    else {
        panic!()
    };
    assert!(condition(&conditions, "Accepted").status);
    assert!(
        supported_features
            .iter()
            .any(|f| f == "HTTPRouteQueryParamMatching")
    );
}

#[test]
fn zero_timeouts_disable_and_bad_ones_invalidate_the_rule() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - timeouts: {request: 0s}
    backendRefs: [{name: echo, port: 80}]
  - timeouts: {request: soon}
    backendRefs: [{name: echo, port: 80}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    assert_eq!(t.routes.len(), 1);
    assert_eq!(forward(&t.routes[0]).timeout, None);
    let partial = condition(route_conditions(&t, "apps", "web"), "PartiallyInvalid");
    assert!(
        partial
            .message
            .starts_with("spec.rules[1].timeouts.request: "),
        "{}",
        partial.message
    );
}

#[test]
fn grpc_routes_refuse_http_only_filters() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]
    backendRefs: [{name: echo, port: 80}]
---
";
    let t = translate_yaml(&format!("{CLASS}{ECHO}{}{route}", gateway(HTTP)));
    let c = &t.route_parents[&ObjectKey::new(Kind::GrpcRoute, "apps", "rpc")].1[0].conditions;
    let accepted = condition(c, "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "UnsupportedValue")
    );
    assert!(t.routes.is_empty());
}

#[test]
fn routes_from_kinds_a_listener_does_not_allow_are_refused() {
    let listeners = "  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes: {kinds: [{kind: GRPCRoute}]}\n";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(listeners),
        http_route("web", "apps", TO_ECHO)
    ));
    assert_eq!(
        condition(route_conditions(&t, "apps", "web"), "Accepted").reason,
        "NotAllowedByListeners"
    );
    assert!(t.routes.is_empty());
}

#[test]
fn frontend_validation_asks_clients_for_certificates() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: apps}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n---\n";
    let ca = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: clients, namespace: apps}\ndata: {ca.crt: PEM}\n---\n";
    let gw = |tls: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: mtls, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: open, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
  tls:
    frontend:
{tls}---
"
        )
    };
    let config = "      perPort:\n      - port: 443\n        tls: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: clients}], mode: AllowInsecureFallback}}\n";
    let t = translate_yaml(&format!("{CLASS}{secret}{ca}{}", gw(config)));
    let tls = |name: &str| {
        t.listeners
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| l.tls.clone())
            .expect(name)
    };
    assert_eq!(tls("mtls").client_ca_secret, "configmap/apps/clients");
    assert!(tls("mtls").client_certificate_optional);
    assert_eq!(tls("open").client_ca_secret, "");
    assert_eq!(
        t.ca_bundles
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["configmap/apps/clients"]
    );

    // Without the CA the listener is not served (fail closed); the other one is.
    let t = translate_yaml(&format!("{CLASS}{secret}{}", gw(config)));
    assert_eq!(
        t.listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["open"]
    );
    let mtls = &listener_reports(&t)[0];
    let c = condition(&mtls.conditions, "ResolvedRefs");
    assert_eq!((c.status, c.reason), (false, "InvalidCACertificateRef"));
    assert!(c.message.starts_with("spec.tls.frontend.perPort[0].tls.validation.caCertificateRefs[0]: ConfigMap apps/clients does not exist"), "{}", c.message);
}

#[test]
fn the_backend_client_certificate_is_presented_on_backend_tls() {
    let client = "apiVersion: v1\nkind: Secret\nmetadata: {name: client, namespace: apps}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n---\n";
    let policy = "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p, namespace: apps}\nspec:\n  targetRefs: [{group: '', kind: Service, name: echo}]\n  validation: {hostname: echo.test, wellKnownCACertificates: System}\n---\n";
    let gw = gateway(HTTP).replace(
        "  listeners:\n",
        "  tls: {backend: {clientCertificateRef: {name: client}}}\n  listeners:\n",
    );
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{client}{policy}{gw}{}",
        http_route("web", "apps", TO_ECHO)
    ));
    let tls = t.clusters[0].tls.as_ref().expect("upstream tls");
    assert_eq!(
        (
            tls.ca_secret.as_str(),
            tls.client_certificate_secret.as_str()
        ),
        ("", "apps/client")
    );
    assert!(t.secrets.contains("apps/client"));
}

#[test]
fn an_extension_filter_is_never_skipped() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
    backendRefs: [{name: echo, port: 80}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    assert_eq!(t.routes[0].action, Some(internal_error()));
    let c = route_conditions(&t, "apps", "web");
    assert!(condition(c, "Accepted").status);
    let resolved = condition(c, "ResolvedRefs");
    assert_eq!((resolved.status, resolved.reason), (false, "InvalidKind"));
}

#[test]
fn an_extension_ref_to_a_missing_middleware_answers_500() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: gateway.jkaninda.dev, kind: Middleware, name: auth}}]
    backendRefs: [{name: echo, port: 80}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    assert_eq!(t.routes[0].action, Some(internal_error()));
    assert!(t.routes[0].middlewares.is_empty());
    let resolved = condition(route_conditions(&t, "apps", "web"), "ResolvedRefs");
    assert_eq!(
        (resolved.status, resolved.reason),
        (false, "BackendNotFound")
    );
    assert!(
        resolved.message.contains("Middleware apps/auth not found"),
        "{}",
        resolved.message
    );
}

#[test]
fn a_class_with_parameters_is_refused_and_its_gateways_are_not_served() {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec:
  controllerName: sluice.dev/gateway-controller
  parametersRef: {{group: example.com, kind: Config, name: big}}
---
{}",
        gateway(HTTP)
    );
    let objects = objects(&yaml);
    let Some(Object::Api(class)) = objects.get(&ObjectKey::new(Kind::GatewayClass, "", "sluice"))
    else {
        panic!()
    };
    let ApiObject::GatewayClass(class) = class.as_ref() else {
        panic!()
    };
    let ApiStatus::GatewayClass { conditions, .. } =
        gateway_class_status(&class.metadata, &class.spec)
    else {
        panic!()
    };
    let accepted = condition(&conditions, "Accepted");
    assert!(!accepted.status);
    assert_eq!(accepted.reason, "InvalidParameters");
    assert!(
        accepted.message.contains("spec.parametersRef"),
        "{accepted:?}"
    );
    assert!(
        translate_gateway(&objects, &ObjectKey::new(Kind::Gateway, "apps", "gw"))
            .0
            .is_none()
    );
}

#[test]
fn retries_translate_and_bad_codes_invalidate_the_rule() {
    let spec = "  parentRefs: [{name: gw}]
  rules:
  - retry: {codes: [502, 503], attempts: 2, backoff: 100ms}
    backendRefs: [{name: echo, port: 80}]
  - retry: {codes: [200]}
    backendRefs: [{name: echo, port: 80}]
";
    let t = translate_yaml(&format!(
        "{CLASS}{ECHO}{}{}",
        gateway(HTTP),
        http_route("web", "apps", spec)
    ));
    assert_eq!(t.routes.len(), 1);
    assert_eq!(
        forward(&t.routes[0]).retry,
        Some(pb::RetryPolicy {
            attempts: 2,
            statuses: vec![502, 503],
            backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000
            }),
        })
    );
    let partial = condition(route_conditions(&t, "apps", "web"), "PartiallyInvalid");
    assert!(
        partial
            .message
            .starts_with("spec.rules[1].retry.codes[0]: 200 is not"),
        "{}",
        partial.message
    );
}

#[test]
fn static_addresses_are_reported_unsupported_and_not_served() {
    let yaml = format!("{CLASS}{ECHO}{}", gateway(HTTP)).replace(
        "  gatewayClassName: sluice\n",
        "  gatewayClassName: sluice\n  addresses: [{type: IPAddress, value: 10.1.2.3}]\n",
    );
    let t = translate_yaml(&yaml);
    let accepted = condition(gateway_conditions(&t), "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "UnsupportedAddress")
    );
    assert!(accepted.message.contains("10.1.2.3"), "{accepted:?}");
    let programmed = condition(gateway_conditions(&t), "Programmed");
    assert_eq!(
        (programmed.status, programmed.reason),
        (false, "AddressNotAssigned")
    );
    assert!(!t.served);
    assert!(t.listeners.is_empty() && t.routes.is_empty());
}
