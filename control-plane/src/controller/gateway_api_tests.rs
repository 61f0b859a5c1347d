//! The Gateway API memo: what each kind of change re-translates (counted), that reuse gives
//! the same result as translating from scratch, and that memo entries go with their objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use crate::controller::tests::{
    API_CLASS, api_gateway, apply, http_route, names, route_backends, service,
};
use crate::controller::{Controller, SECRET};
use crate::model::{Kind, ObjectKey};
use crate::provider::ProviderEvent;
use crate::status::StatusBoard;
use crate::status::gateway_api::GatewayApiBoard;
use crate::views::Views;

fn route(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Kind::HttpRoute, ns, name)
}

fn gateway(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Gateway, "default", name)
}

const ONE: &str = "{name: one, port: 80}";
const TWO: &str = "{name: two, port: 80}";

/// Gateways a (routes ra1, ra2 to Service one) and b (route rb to Service two).
fn two_gateways() -> (Arc<Views>, GatewayApiBoard, Controller) {
    let views = Arc::new(Views::default());
    let board = GatewayApiBoard::default();
    let mut c = Controller::with_boards(views.clone(), StatusBoard::default(), board.clone());
    apply(
        &mut c,
        &format!(
            "{API_CLASS}{}{}{}{}{}{}{}",
            api_gateway("a", "default"),
            api_gateway("b", "default"),
            service("one", "default", "10.0.0.1"),
            service("two", "default", "10.0.0.2"),
            http_route("ra1", "default", "a", ONE),
            http_route("ra2", "default", "a", ONE),
            http_route("rb", "default", "b", TWO),
        ),
    );
    assert_eq!(
        names(&views, "default/a", 3),
        ["httproute/default/ra1/0000", "httproute/default/ra2/0000"]
    );
    (views, board, c)
}

/// The routes (re-)translated while applying `yaml`, sorted.
fn retranslated(c: &mut Controller, yaml: &str) -> Vec<ObjectKey> {
    c.api_route_translations.clear();
    apply(c, yaml);
    sorted(std::mem::take(&mut c.api_route_translations))
}

fn retranslated_deleting(c: &mut Controller, key: ObjectKey) -> Vec<ObjectKey> {
    c.api_route_translations.clear();
    c.apply(vec![ProviderEvent::Delete(key)]);
    sorted(std::mem::take(&mut c.api_route_translations))
}

fn sorted(mut keys: Vec<ObjectKey>) -> Vec<ObjectKey> {
    keys.sort();
    keys
}

/// The routes memoised for Gateway `name`.
fn memoised(c: &Controller, name: &str) -> Vec<ObjectKey> {
    c.api_gateways
        .get(&gateway(name))
        .map(|g| g.routes.keys().cloned().collect())
        .unwrap_or_default()
}

fn cluster(views: &Views, gw: &str, name: &str) -> sluice_proto::config::Cluster {
    let bytes = views
        .gateway(gw)
        .read(|v| v.resources[1].get(name).map(|r| r.bytes.clone()))
        .unwrap_or_else(|| panic!("{gw} has no cluster {name}"));
    sluice_proto::config::Cluster::decode(bytes.as_slice()).expect("cluster")
}

#[test]
fn a_route_edit_retranslates_only_that_route() {
    let (views, _, mut c) = two_gateways();
    assert_eq!(
        retranslated(&mut c, &http_route("ra1", "default", "a", TWO)),
        [route("default", "ra1")]
    );
    assert_eq!(
        route_backends(&views, "default/a", "httproute/default/ra1/0000"),
        ["service/default/two/80"]
    );
    assert_eq!(
        route_backends(&views, "default/a", "httproute/default/ra2/0000"),
        ["service/default/one/80"]
    );
    // Applying the same route again changes nothing and translates nothing.
    assert!(retranslated(&mut c, &http_route("ra1", "default", "a", TWO)).is_empty());
}

#[test]
fn a_service_change_retranslates_only_the_routes_naming_it() {
    let (views, _, mut c) = two_gateways();
    let service_two_with_two_ports = "apiVersion: v1\nkind: Service\nmetadata: {name: two, namespace: default}\nspec: {ports: [{port: 80}, {port: 81}]}\n";
    assert_eq!(
        retranslated(&mut c, service_two_with_two_ports),
        [route("default", "rb")]
    );
    // The Service losing port 80 leaves rb's backend unresolved.
    let service_two_without_80 = "apiVersion: v1\nkind: Service\nmetadata: {name: two, namespace: default}\nspec: {ports: [{port: 81}]}\n";
    assert_eq!(
        retranslated(&mut c, service_two_without_80),
        [route("default", "rb")]
    );
    assert_eq!(
        route_backends(&views, "default/b", "httproute/default/rb/0000"),
        ["500"]
    );
}

#[test]
fn an_endpoint_change_retranslates_only_the_routes_of_its_service() {
    let (views, _, mut c) = two_gateways();
    assert_eq!(
        retranslated(&mut c, &service("one", "default", "10.0.0.9")),
        [route("default", "ra1"), route("default", "ra2")]
    );
    let endpoints = cluster(&views, "default/a", "service/default/one/80").endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].address, "10.0.0.9");
}

#[test]
fn reference_grants_invalidate_the_routes_crossing_into_their_namespace() {
    let (views, _, mut c) = two_gateways();
    let cross = "{name: one, namespace: default, port: 80}";
    assert_eq!(
        retranslated(&mut c, &http_route("rx", "front", "a", cross)),
        [route("front", "rx")]
    );
    assert_eq!(
        route_backends(&views, "default/a", "httproute/front/rx/0000"),
        ["500"]
    );
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: default}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}]\n  to: [{group: '', kind: Service}]\n";
    // Routes referring within their own namespace do not read grants: only rx is redone.
    assert_eq!(retranslated(&mut c, grant), [route("front", "rx")]);
    assert_eq!(
        route_backends(&views, "default/a", "httproute/front/rx/0000"),
        ["service/default/one/80"]
    );
    // Revoked: the backend is withdrawn again.
    assert_eq!(
        retranslated_deleting(&mut c, ObjectKey::new(Kind::ReferenceGrant, "default", "g")),
        [route("front", "rx")]
    );
    assert_eq!(
        route_backends(&views, "default/a", "httproute/front/rx/0000"),
        ["500"]
    );
}

#[test]
fn backend_tls_policies_and_their_secrets_invalidate_the_routes_of_the_service() {
    let (views, _, mut c) = two_gateways();
    let ca = |pem: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: ca, namespace: default}}\nstringData: {{ca.crt: {pem}}}\n"
        )
    };
    // Nothing reads the Secret yet.
    assert!(retranslated(&mut c, &ca("first")).is_empty());
    let policy = "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  targetRefs: [{group: '', kind: Service, name: one}]\n  validation:\n    hostname: one.test\n    caCertificateRefs: [{group: '', kind: Secret, name: ca}]\n";
    let ones = [route("default", "ra1"), route("default", "ra2")];
    assert_eq!(retranslated(&mut c, policy), ones);
    let tls = cluster(&views, "default/a", "service/default/one/80").tls;
    assert_eq!(tls.map(|t| t.ca_secret), Some("default/ca".to_string()));
    assert!(
        views
            .gateway("default/a")
            .read(|v| v.resources[SECRET].contains_key("default/ca"))
    );

    assert_eq!(retranslated(&mut c, &ca("second")), ones);
    // Without its CA the policy is invalid and fails closed: the routes answer 500.
    assert_eq!(
        retranslated_deleting(&mut c, ObjectKey::new(Kind::Secret, "default", "ca")),
        ones
    );
    assert_eq!(
        route_backends(&views, "default/a", "httproute/default/ra1/0000"),
        ["500"]
    );
    assert_eq!(
        retranslated_deleting(
            &mut c,
            ObjectKey::new(Kind::BackendTlsPolicy, "default", "p")
        ),
        ones
    );
    assert!(
        cluster(&views, "default/a", "service/default/one/80")
            .tls
            .is_none()
    );
    // Gateway b never used Service one.
    assert_eq!(names(&views, "default/b", 1), ["service/default/two/80"]);
}

#[test]
fn a_listener_change_retranslates_only_that_gateways_routes() {
    let (views, _, mut c) = two_gateways();
    let with_hostname = api_gateway("a", "default")
        .replace("protocol: HTTP,", "protocol: HTTP, hostname: a.example,");
    assert_eq!(
        retranslated(&mut c, &with_hostname),
        [route("default", "ra1"), route("default", "ra2")]
    );
    let bytes = views
        .gateway("default/a")
        .read(|v| v.resources[3]["httproute/default/ra1/0000"].bytes.clone());
    let r = sluice_proto::config::Route::decode(bytes.as_slice()).expect("route");
    assert_eq!(r.hostnames, ["a.example"]);
    // A Gateway change that leaves the listeners as they were keeps every route.
    let labelled = with_hostname.replace(
        "namespace: default}",
        "namespace: default, labels: {team: x}}",
    );
    assert_ne!(labelled, with_hostname);
    assert!(retranslated(&mut c, &labelled).is_empty());
}

#[test]
fn moving_a_route_between_gateways_retranslates_it_alone() {
    let (views, _, mut c) = two_gateways();
    assert_eq!(
        retranslated(&mut c, &http_route("ra1", "default", "b", ONE)),
        [route("default", "ra1")]
    );
    assert_eq!(memoised(&c, "a"), [route("default", "ra2")]);
    assert_eq!(
        memoised(&c, "b"),
        [route("default", "ra1"), route("default", "rb")]
    );
    assert_eq!(
        names(&views, "default/a", 3),
        ["httproute/default/ra2/0000"]
    );
    assert_eq!(
        names(&views, "default/b", 3),
        ["httproute/default/ra1/0000", "httproute/default/rb/0000"]
    );
    assert_eq!(
        names(&views, "default/b", 1),
        ["service/default/one/80", "service/default/two/80"]
    );
}

#[test]
fn memo_entries_go_with_their_route_and_gateway() {
    let (_, board, mut c) = two_gateways();
    c.apply(vec![ProviderEvent::Delete(route("default", "ra1"))]);
    assert_eq!(memoised(&c, "a"), [route("default", "ra2")]);
    assert!(!c.api_route_parents.contains_key(&route("default", "ra1")));
    assert!(!board.snapshot().contains_key(&route("default", "ra1")));
    c.apply(vec![ProviderEvent::Delete(route("default", "ra2"))]);
    assert!(memoised(&c, "a").is_empty());
    assert!(!c.api_routes_by_gateway.contains_key(&gateway("a")));

    // A deleted Gateway takes its memo; its route stays indexed (it still names it) until it goes.
    c.apply(vec![ProviderEvent::Delete(gateway("b"))]);
    assert!(!c.api_gateways.contains_key(&gateway("b")));
    assert!(!c.api_route_parents.contains_key(&route("default", "rb")));
    c.apply(vec![ProviderEvent::Delete(route("default", "rb"))]);
    assert!(c.api_routes_by_gateway.is_empty());
    assert!(c.api_route_parents.is_empty());
    assert!(c.api_gateways.values().all(|g| g.routes.is_empty()));
}

/// Every view, as (gateway, type, name, version).
fn view_contents(views: &Views) -> Vec<(String, usize, String, String)> {
    let mut out = Vec::new();
    for id in views.ids() {
        views.gateway(&id).read(|v| {
            for (t, resources) in v.resources.iter().enumerate() {
                for (name, r) in resources {
                    out.push((id.clone(), t, name.clone(), r.version.clone()));
                }
            }
        });
    }
    out.sort();
    out
}

#[test]
fn incremental_translation_equals_translating_from_scratch() {
    let (views, board, mut c) = two_gateways();
    let cross = "{name: two, namespace: default, port: 80}";
    let steps = [
        http_route("rx", "front", "a", cross),
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: default}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}]\n  to: [{group: '', kind: Service}]\n".to_string(),
        service("two", "default", "10.0.0.7"),
        http_route("ra2", "default", "b", TWO),
        api_gateway("a", "default").replace("protocol: HTTP,", "protocol: HTTP, hostname: a.example,"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  targetRefs: [{group: '', kind: Service, name: two}]\n  validation: {hostname: two.test, wellKnownCACertificates: System}\n".to_string(),
        http_route("ra1", "default", "a", "{name: missing, port: 80}"),
    ];
    for step in &steps {
        apply(&mut c, step);
    }
    let fresh_views = Arc::new(Views::default());
    let fresh_board = GatewayApiBoard::default();
    let mut fresh = Controller::with_boards(
        fresh_views.clone(),
        StatusBoard::default(),
        fresh_board.clone(),
    );
    fresh.apply(
        c.objects
            .values()
            .cloned()
            .map(ProviderEvent::Apply)
            .collect(),
    );
    assert_eq!(view_contents(&views), view_contents(&fresh_views));
    let (status, fresh_status): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (board.snapshot(), fresh_board.snapshot());
    assert_eq!(status, fresh_status);
    assert!(status.contains_key(&route("front", "rx")));
}

/// Whether gateway `gw`'s view holds, for each of route `name`'s memoised Route resources, the
/// memo's own `Arc` (one copy, not two equal ones).
fn memo_shares_view_copies(c: &Controller, views: &Views, gw: &str, name: &str) -> bool {
    let memo = &c.api_gateways[&gateway(gw)].routes[&route("default", name)];
    assert!(!memo.encoded.is_empty());
    views.gateway(&format!("default/{gw}")).read(|v| {
        memo.encoded.iter().all(|e| {
            v.resources[3]
                .get(&e.name)
                .is_some_and(|held| Arc::ptr_eq(held, e))
        })
    })
}

#[test]
fn a_retranslation_with_the_same_output_keeps_the_views_copy() {
    let (views, _, mut c) = two_gateways();
    assert!(memo_shares_view_copies(&c, &views, "a", "ra1"));
    let before = views.gateway("default/a").read(|v| v.revision);
    // A new port on Service one re-translates ra1 and ra2 into the same bytes.
    let service_one_with_two_ports = "apiVersion: v1\nkind: Service\nmetadata: {name: one, namespace: default}\nspec: {ports: [{port: 80}, {port: 81}]}\n";
    assert_eq!(
        retranslated(&mut c, service_one_with_two_ports),
        [route("default", "ra1"), route("default", "ra2")]
    );
    assert_eq!(views.gateway("default/a").read(|v| v.revision), before);
    assert!(memo_shares_view_copies(&c, &views, "a", "ra1"));
    assert!(memo_shares_view_copies(&c, &views, "a", "ra2"));
    // The same after new listeners, which start every route over.
    let with_hostname = api_gateway("a", "default")
        .replace("protocol: HTTP,", "protocol: HTTP, hostname: a.example,");
    retranslated(&mut c, &with_hostname);
    let labelled = with_hostname.replace(
        "namespace: default}",
        "namespace: default, labels: {team: x}}",
    );
    retranslated(&mut c, &labelled);
    assert!(memo_shares_view_copies(&c, &views, "a", "ra1"));
}

#[test]
fn routes_resolving_the_same_backends_share_one_copy() {
    let (_, _, mut c) = two_gateways();
    let translation = |c: &Controller, name: &str| {
        c.api_gateways[&gateway("a")].routes[&route("default", name)]
            .translation
            .clone()
    };
    assert!(translation(&c, "ra1").shares_backends_with(&translation(&c, "ra2")));
    // Re-translated alone (ra2 reused), ra1 finds ra2's copy; sent elsewhere, its own.
    retranslated(
        &mut c,
        &http_route("ra1", "default", "a", "{name: one, port: 80, weight: 1}"),
    );
    assert!(translation(&c, "ra1").shares_backends_with(&translation(&c, "ra2")));
    retranslated(&mut c, &http_route("ra1", "default", "a", TWO));
    assert!(!translation(&c, "ra1").shares_backends_with(&translation(&c, "ra2")));
}
