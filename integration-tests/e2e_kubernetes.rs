//! `sluice control-plane --kubernetes` end to end, through the real binary: objects applied to an
//! API server reach a data plane that serves them, changes arrive by watch, invalid objects keep
//! the last good version serving, status is written back (ready, synced once the data plane
//! ACKed, the invalid field named), the operator applies the Gateway's workload, and the replica
//! takes the leader Lease and releases it on SIGTERM.
//! The API server is `support::apiserver` (no kube-apiserver can be installed on this machine);
//! it speaks list/watch/apply as the real one does.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::apiserver::FakeApiServer;
use support::*;

const GOMA: &str = "gateway.jkaninda.dev/v1alpha1";
const LEASE: &str = "/apis/coordination.k8s.io/v1";
const GOMA_PATH: &str = "/apis/gateway.jkaninda.dev/v1alpha1";

/// The condition of `type_` in an object's status.
fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn gateway(port: u16) -> Value {
    json!({
        "apiVersion": GOMA, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"service": {"httpPort": port}},
    })
}

fn route(name: &str, path: &str, target_port: u16) -> Value {
    json!({
        "apiVersion": GOMA, "kind": "Route",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gateways": ["gw"], "path": path, "target": format!("http://127.0.0.1:{target_port}")},
    })
}

/// Polls the fake API server until `f` returns Some.
async fn eventually_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    // Long enough for a Lease to expire (15 s) and be taken over.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_applied_to_the_api_server_are_served_and_followed() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    let (_a, a_port) = echo("alpha");
    let (_b, b_port) = echo("beta");
    let http = free_port();
    api.apply(gateway(http));
    api.apply(route("api", "/api", a_port));

    let xds = free_port();
    let mut cp = Proc::start(
        &[
            "control-plane",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{xds}"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "cp-0"),
            ("POD_NAMESPACE", "sluice-system"),
        ],
    );
    let admin = free_port();
    let _dp = data_plane("default/gw", xds, admin, &[], &[]);
    wait_ok(http, "localhost", "/api", Duration::from_secs(30)).await;
    let client = client();
    assert_eq!(
        get(&client, http, "localhost", "/api").await.backend(),
        "alpha"
    );

    // The replica took the leader Lease in its namespace.
    let lease = eventually_some("leader lease", || {
        api.get(
            LEASE,
            "leases",
            "sluice-system",
            "sluice-control-plane-leader",
        )
        .filter(|l| l["spec"]["holderIdentity"] == "cp-0")
    })
    .await;
    assert!(lease["spec"]["leaseDurationSeconds"].as_i64().unwrap() > 0);

    // The leader writes status: the route is ready, and synced once the data plane ACKed it.
    let api_route = eventually_some("route status synced", || {
        api.get(GOMA_PATH, "routes", "default", "api")
            .filter(|r| r["status"]["synced"] == true)
    })
    .await;
    assert_eq!(api_route["status"]["ready"], true);
    assert_eq!(api_route["status"]["observedGeneration"], 1);
    assert_eq!(condition(&api_route, "Valid")["status"], "True");
    assert_eq!(condition(&api_route, "Programmed")["reason"], "Programmed");
    let gw = eventually_some("gateway status", || {
        api.get(GOMA_PATH, "gateways", "default", "gw")
            .filter(|g| g["status"]["routes"] == 1)
    })
    .await;
    assert_eq!(condition(&gw, "Programmed")["status"], "True");
    // Status goes through the status subresource with server-side apply, by one field manager.
    let status_writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::PATCH && r.path.ends_with("/status"))
        .collect();
    assert!(!status_writes.is_empty());
    assert!(
        status_writes
            .iter()
            .all(|r| r.query.contains("fieldManager=sluice-status"))
    );

    // The operator turned the Gateway into its workload (server-side apply, owned by the Gateway).
    let deployment = eventually_some("data-plane deployment", || {
        api.get("/apis/apps/v1", "deployments", "default", "gw")
    })
    .await;
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["kind"],
        "Gateway"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"].to_string().contains("data-plane"),
        "{container}"
    );
    for (prefix, plural, name) in [
        ("/api/v1", "services", "gw"),
        ("/api/v1", "configmaps", "gw-bootstrap"),
    ] {
        eventually_some(plural, || api.get(prefix, plural, "default", name)).await;
    }

    // A change arrives by watch: the route moves to the other backend, a new one appears.
    api.apply(route("api", "/api", b_port));
    api.apply(route("web", "/web", a_port));
    eventually("route change served", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            get(&client, http, "localhost", "/api").await.backend() == "beta"
                && get(&client, http, "localhost", "/web").await.status == 200
        }
    })
    .await;

    // An invalid version is refused; the last good one keeps serving, other routes unaffected.
    let mut bad = route("api", "/api", a_port);
    bad["spec"]["backends"] = json!([{"endpoint": "http://127.0.0.1:1", "weight": "heavy"}]);
    api.apply(bad);
    cp.wait_log("weight", Duration::from_secs(20));
    assert_eq!(
        get(&client, http, "localhost", "/api").await.backend(),
        "beta"
    );
    assert_eq!(get(&client, http, "localhost", "/web").await.status, 200);

    // A deleted route stops being served.
    api.delete(&route("web", "/web", a_port));
    eventually("deleted route gone", Duration::from_secs(20), || {
        let client = client.clone();
        async move { get(&client, http, "localhost", "/web").await.status == 404 }
    })
    .await;

    // SIGTERM: the Lease is released at once for another replica.
    let status = cp.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "control plane exit: {status:?}\n{}",
        cp.log()
    );
    let lease = api
        .get(
            LEASE,
            "leases",
            "sluice-system",
            "sluice-control-plane-leader",
        )
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "",
        "lease not released: {lease}"
    );
}

/// Two replicas: both serve xDS, one leads. Killing the leader hands the Lease to the other,
/// which takes over the leader's duties (status), while a data plane connected to the survivor
/// keeps serving without noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_and_the_other_replica_takes_over() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s-ha");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    let (_a, a_port) = echo("alpha");
    let http = free_port();
    api.apply(gateway(http));
    api.apply(route("api", "/api", a_port));

    let replica = |name: &str, xds: u16| {
        Proc::start(
            &[
                "control-plane",
                "--kubernetes",
                "--listen",
                &format!("127.0.0.1:{xds}"),
            ],
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("POD_NAME", name),
                ("POD_NAMESPACE", "sluice-system"),
            ],
        )
    };
    let (xds_0, xds_1) = (free_port(), free_port());
    let mut first = replica("cp-0", xds_0);
    let holder = || {
        api.get(
            LEASE,
            "leases",
            "sluice-system",
            "sluice-control-plane-leader",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    eventually_some("cp-0 leads", || holder().filter(|h| h == "cp-0")).await;
    let mut second = replica("cp-1", xds_1);
    // The data plane talks to the follower.
    let admin = free_port();
    let _dp = data_plane("default/gw", xds_1, admin, &[], &[]);
    wait_ok(http, "localhost", "/api", Duration::from_secs(30)).await;
    second.wait_log("campaigning for leadership", Duration::from_secs(10));
    assert_eq!(holder().as_deref(), Some("cp-0"), "one leader at a time");

    // The leader dies without releasing its Lease: the follower takes over once it expires.
    first.kill();
    eventually_some("cp-1 leads", || holder().filter(|h| h == "cp-1")).await;
    // ...and does the leader's work: a change gets its status from the new leader.
    let (_b, b_port) = echo("beta");
    api.apply(route("api", "/api", b_port));
    let client = client();
    eventually("the change is served", Duration::from_secs(20), || {
        let client = client.clone();
        async move { get(&client, http, "localhost", "/api").await.backend() == "beta" }
    })
    .await;
    eventually_some("status of generation 2 from the new leader", || {
        api.get(GOMA_PATH, "routes", "default", "api")
            .filter(|r| r["status"]["observedGeneration"] == 2 && r["status"]["synced"] == true)
    })
    .await;
    // The data plane never lost its stream: it stayed on the surviving replica.
    assert!(
        !second.log().contains("data plane disconnected"),
        "{}",
        second.log()
    );
    let _ = second.terminate(Duration::from_secs(10));
}

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

fn gateway_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    })
}

/// The operator gives a Gateway API Gateway of our class the workload of a Goma Gateway, with
/// ports from its listeners; a Gateway of another class gets nothing until its class names our
/// controller, and loses its workload when the class moves away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_gateway_api_gateways_of_our_class() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s-gwapi");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    api.apply(gateway_class("ours", "sluice.dev/gateway-controller"));
    api.apply(gateway_class("theirs", "example.com/other"));
    let listeners = json!([
        {"name": "http", "port": 8081, "protocol": "HTTP"},
        {"name": "dns", "port": 5353, "protocol": "UDP"}
    ]);
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"gatewayClassName": "ours", "listeners": listeners,
                 "infrastructure": {"labels": {"team": "net"}}},
    }));
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "other", "namespace": "default"},
        "spec": {"gatewayClassName": "theirs", "listeners": listeners},
    }));

    let xds = free_port();
    let mut cp = Proc::start(
        &[
            "control-plane",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{xds}"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "cp-0"),
            ("POD_NAMESPACE", "sluice-system"),
        ],
    );

    let deployment = eventually_some("deployment of the Gateway API gateway", || {
        api.get("/apis/apps/v1", "deployments", "default", "edge")
    })
    .await;
    let owner = &deployment["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], GATEWAY_API);
    assert_eq!(owner["kind"], "Gateway");
    assert_eq!(owner["name"], "edge");
    assert_eq!(deployment["metadata"]["labels"]["team"], "net");
    let service = eventually_some("service", || {
        api.get("/api/v1", "services", "default", "edge")
    })
    .await;
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "tcp-8081", "port": 8081, "targetPort": "tcp-8081", "protocol": "TCP"},
            {"name": "udp-5353", "port": 5353, "targetPort": "udp-5353", "protocol": "UDP"}
        ])
    );
    let bootstrap = eventually_some("bootstrap", || {
        api.get("/api/v1", "configmaps", "default", "edge-bootstrap")
    })
    .await;
    assert_eq!(bootstrap["data"]["SLUICE_GATEWAY"], "default/edge");
    assert!(
        api.get("/apis/apps/v1", "deployments", "default", "other")
            .is_none(),
        "a Gateway of another class gets nothing"
    );

    // Its class switches to our controller: the watch on GatewayClasses brings it in.
    api.apply(gateway_class("theirs", "sluice.dev/gateway-controller"));
    eventually_some("deployment once the class is ours", || {
        api.get("/apis/apps/v1", "deployments", "default", "other")
    })
    .await;
    // ...and away again: the workload made for it goes, the other gateway's stays.
    api.apply(gateway_class("theirs", "example.com/other"));
    eventually_some("deployment removed once the class is not ours", || {
        api.get("/apis/apps/v1", "deployments", "default", "other")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        api.get("/apis/apps/v1", "deployments", "default", "edge")
            .is_some()
    );
    // The Gateways themselves are never written by the operator.
    assert!(
        !api.requests().iter().any(|r| r.method != http::Method::GET
            && r.path
                .contains("/gateway.networking.k8s.io/v1/namespaces/default/gateways/")
            && !r.path.ends_with("/status")),
        "{}",
        cp.log()
    );
    let _ = cp.terminate(Duration::from_secs(10));
}

const GATEWAY_API_PATH: &str = "/apis/gateway.networking.k8s.io/v1";
const OUR_CONTROLLER: &str = "sluice.dev/gateway-controller";

/// A Service `ns/name` (port 80, no appProtocol) whose one endpoint is 127.0.0.1:`port`, and
/// its EndpointSlice.
fn service_with_endpoints(ns: &str, name: &str, port: u16) -> [Value; 2] {
    [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        }),
    ]
}

/// An HTTPRoute `default/name` on Gateway `default/gw` (listener `section`, if any) sending
/// `/api` to `backend_ns/backend` port 80.
fn http_route(name: &str, section: Option<&str>, backend_ns: &str, backend: &str) -> Value {
    let mut parent = json!({"name": "gw"});
    if let Some(section) = section {
        parent["sectionName"] = json!(section);
    }
    json!({
        "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                "backendRefs": [{"name": backend, "namespace": backend_ns, "port": 80}],
            }],
        },
    })
}

/// Our entry in a route's `status.parents`.
fn our_parent(route: &Value) -> Option<&Value> {
    route["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == OUR_CONTROLLER)
}

/// `type_` condition of our parent entry, as (status, reason, observedGeneration).
fn parent_condition(route: &Value, type_: &str) -> Option<(String, String, i64)> {
    let c = our_parent(route)?["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["observedGeneration"].as_i64()?,
    ))
}

/// Gateway API end to end in Kubernetes mode: a Gateway of our class is served to the data plane
/// subscribed as its "namespace/name", and every object gets the spec's status: the class
/// Accepted with its features, the Gateway Programmed only once the data plane ACKed, the
/// routes' parents with Accepted/ResolvedRefs that follow a cross-namespace reference and its
/// ReferenceGrant. Objects of another controller's class get no status from us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_objects_are_served_and_get_the_specs_status() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s-gwapi-status");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    let (_a, a_port) = echo("alpha");
    let (_b, b_port) = echo("beta");
    let http = free_port();
    api.apply(gateway_class("sluice", OUR_CONTROLLER));
    api.apply(gateway_class("theirs", "example.com/other"));
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "sluice",
                 "listeners": [{"name": "http", "port": http, "protocol": "HTTP"}]},
    }));
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "foreign", "namespace": "default"},
        "spec": {"gatewayClassName": "theirs",
                 "listeners": [{"name": "http", "port": free_port(), "protocol": "HTTP"}]},
    }));
    for object in service_with_endpoints("default", "alpha", a_port)
        .into_iter()
        .chain(service_with_endpoints("far", "beta", b_port))
    {
        api.apply(object);
    }
    api.apply(http_route("api", None, "default", "alpha"));
    api.apply(http_route(
        "lost",
        Some("no-such-listener"),
        "default",
        "alpha",
    ));

    let xds = free_port();
    let mut cp = Proc::start(
        &[
            "control-plane",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{xds}"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "cp-0"),
            ("POD_NAMESPACE", "sluice-system"),
        ],
    );
    let gateway_status = |what: &str, ready: fn(&Value) -> bool| {
        let what = what.to_owned();
        let api = api.clone();
        async move {
            eventually_some(&what, || {
                api.get(GATEWAY_API_PATH, "gateways", "default", "gw")
                    .filter(ready)
            })
            .await
        }
    };

    // Before any data plane connects: accepted, not programmed yet.
    // (The CRD's default status says Pending too, but Unknown and without observedGeneration.)
    let gw = gateway_status("gateway accepted, pending", |g| {
        condition(g, "Accepted")["status"] == "True"
            && condition(g, "Programmed")["observedGeneration"] == 1
    })
    .await;
    let programmed = condition(&gw, "Programmed");
    assert_eq!(programmed["status"], "False", "{gw}");
    assert_eq!(programmed["reason"], "Pending", "{gw}");
    assert!(
        programmed["message"]
            .as_str()
            .is_some_and(|m| m.contains("default/gw")),
        "{gw}"
    );

    let admin = free_port();
    let dp = data_plane("default/gw", xds, admin, &[], &[]);
    wait_ok(http, "localhost", "/api", Duration::from_secs(20)).await;
    let client = client();
    assert_eq!(
        get(&client, http, "localhost", "/api").await.backend(),
        "alpha"
    );

    // Programmed once the data plane ACKed its listener.
    let gw = gateway_status("gateway programmed", |g| {
        condition(g, "Programmed")["status"] == "True"
    })
    .await;
    for type_ in ["Accepted", "Programmed"] {
        let c = condition(&gw, type_);
        assert_eq!(c["reason"], type_, "{gw}");
        assert_eq!(c["observedGeneration"], 1, "{gw}");
        assert!(c["lastTransitionTime"].is_string(), "{gw}");
    }
    let listener = &gw["status"]["listeners"][0];
    assert_eq!(listener["name"], "http", "{gw}");
    assert_eq!(listener["attachedRoutes"], 1, "only `api` attaches: {gw}");
    let kinds = listener["supportedKinds"]
        .as_array()
        .expect("supportedKinds");
    assert!(
        kinds.contains(&json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"})),
        "{gw}"
    );
    for type_ in ["Accepted", "ResolvedRefs", "Programmed"] {
        let c = listener["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("listener condition {type_}: {gw}"));
        assert_eq!(c["status"], "True", "{gw}");
        assert_eq!(c["observedGeneration"], 1, "{gw}");
    }

    // The class is accepted, with the features it supports.
    let class = eventually_some("class accepted", || {
        api.get(GATEWAY_API_PATH, "gatewayclasses", "", "sluice")
            .filter(|c| condition(c, "Accepted")["status"] == "True")
    })
    .await;
    assert_eq!(condition(&class, "Accepted")["reason"], "Accepted");
    assert_eq!(condition(&class, "Accepted")["observedGeneration"], 1);
    let features = class["status"]["supportedFeatures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(features.contains(&json!({"name": "HTTPRoute"})), "{class}");

    // The route: our parent entry echoes its parentRef, accepted with its references resolved.
    let route = eventually_some("route accepted", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "api")
            .filter(|r| parent_condition(r, "ResolvedRefs").is_some())
    })
    .await;
    let parent = our_parent(&route).expect("our parent");
    assert_eq!(parent["parentRef"], json!({"name": "gw"}), "{route}");
    assert_eq!(
        parent_condition(&route, "Accepted"),
        Some(("True".into(), "Accepted".into(), 1))
    );
    assert_eq!(
        parent_condition(&route, "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into(), 1))
    );
    // A parentRef naming no listener of the Gateway is not accepted.
    let lost = eventually_some("lost route status", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "lost")
            .filter(|r| parent_condition(r, "Accepted").is_some())
    })
    .await;
    assert_eq!(
        parent_condition(&lost, "Accepted"),
        Some(("False".into(), "NoMatchingParent".into(), 1)),
        "{lost}"
    );
    assert_eq!(
        our_parent(&lost).expect("our parent")["parentRef"],
        json!({"name": "gw", "sectionName": "no-such-listener"})
    );

    // The route moves to a Service in another namespace without a ReferenceGrant: refused,
    // and its share answered 500.
    api.apply(http_route("api", None, "far", "beta"));
    let route = eventually_some("route refused its reference", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "api")
            .filter(|r| parent_condition(r, "ResolvedRefs").is_some_and(|c| c.2 == 2))
    })
    .await;
    assert_eq!(
        parent_condition(&route, "ResolvedRefs"),
        Some(("False".into(), "RefNotPermitted".into(), 2)),
        "{route}"
    );
    assert_eq!(
        parent_condition(&route, "Accepted"),
        Some(("True".into(), "Accepted".into(), 2)),
        "{route}"
    );
    eventually(
        "500 for the refused reference",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move { get(&client, http, "localhost", "/api").await.status == 500 }
        },
    )
    .await;

    // The namespace grants it: resolved, and served by the other backend.
    let grant = json!({
        "apiVersion": GATEWAY_API, "kind": "ReferenceGrant",
        "metadata": {"name": "from-default", "namespace": "far"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    });
    api.apply(grant.clone());
    eventually("served across the grant", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let reply = get(&client, http, "localhost", "/api").await;
            reply.status == 200 && reply.backend() == "beta"
        }
    })
    .await;
    let route = eventually_some("route resolved with the grant", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "api")
            .filter(|r| parent_condition(r, "ResolvedRefs").is_some_and(|c| c.0 == "True"))
    })
    .await;
    assert_eq!(
        parent_condition(&route, "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into(), 2))
    );

    // Revoked live: the grant goes, the reference is refused again.
    api.delete(&grant);
    eventually(
        "500 once the grant is revoked",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move { get(&client, http, "localhost", "/api").await.status == 500 }
        },
    )
    .await;
    let route = eventually_some("route refused again", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "api")
            .filter(|r| parent_condition(r, "ResolvedRefs").is_some_and(|c| c.0 == "False"))
    })
    .await;
    assert_eq!(
        parent_condition(&route, "ResolvedRefs"),
        Some(("False".into(), "RefNotPermitted".into(), 2))
    );

    // The class's spec changes: its status follows the new generation.
    let mut class = gateway_class("sluice", OUR_CONTROLLER);
    class["spec"]["description"] = json!("Sluice gateways");
    api.apply(class);
    eventually_some("class generation 2", || {
        api.get(GATEWAY_API_PATH, "gatewayclasses", "", "sluice")
            .filter(|c| condition(c, "Accepted")["observedGeneration"] == 2)
    })
    .await;

    // The Gateway gains a listener: its status follows the new generation, programmed again
    // once the data plane ACKed the new listener too, and the route attaches to both.
    let second = free_port();
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "sluice",
                 "listeners": [{"name": "http", "port": http, "protocol": "HTTP"},
                               {"name": "second", "port": second, "protocol": "HTTP"}]},
    }));
    let gw = gateway_status("gateway generation 2 programmed", |g| {
        let programmed = condition(g, "Programmed");
        programmed["status"] == "True" && programmed["observedGeneration"] == 2
    })
    .await;
    assert_eq!(condition(&gw, "Accepted")["observedGeneration"], 2, "{gw}");
    let listeners = gw["status"]["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 2, "{gw}");
    for listener in listeners {
        assert_eq!(listener["attachedRoutes"], 1, "{gw}");
    }
    // Both listeners serve the route (its reference still refused: 500).
    for port in [http, second] {
        assert_eq!(get(&client, port, "localhost", "/api").await.status, 500);
    }

    // A route that leaves our Gateway for another controller's loses our entry in its status.
    let mut moved = http_route("lost", None, "default", "alpha");
    moved["spec"]["parentRefs"] = json!([{"name": "foreign"}]);
    api.apply(moved);
    eventually_some("our parent entry removed", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "lost")
            .filter(|r| our_parent(r).is_none())
    })
    .await;

    // The operator runs the gateway's data-plane workload alongside; the address its load
    // balancer gets is the Gateway's address.
    eventually_some("data-plane deployment of the gateway", || {
        api.get("/apis/apps/v1", "deployments", "default", "gw")
    })
    .await;
    eventually_some("the gateway's service", || {
        api.set_status(
            "/api/v1",
            "services",
            "default",
            "gw",
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
        )
        .then_some(())
    })
    .await;
    gateway_status("gateway address", |g| {
        g["status"]["addresses"] == json!([{"type": "IPAddress", "value": "203.0.113.7"}])
    })
    .await;

    // Another controller's class and its Gateway: never written by us (they keep the status
    // their CRDs defaulted), and the Gateway gets no workload.
    for (plural, namespace, name) in [
        ("gateways", "default", "foreign"),
        ("gatewayclasses", "", "theirs"),
    ] {
        let object = api
            .get(GATEWAY_API_PATH, plural, namespace, name)
            .expect("foreign object");
        assert_eq!(
            condition(&object, "Accepted")["message"],
            "Waiting for controller",
            "{object}"
        );
    }
    assert!(
        api.get("/apis/apps/v1", "deployments", "default", "foreign")
            .is_none()
    );
    let foreign_writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method != http::Method::GET
                && (r.path.ends_with("/gateways/foreign/status")
                    || r.path.ends_with("/gatewayclasses/theirs/status"))
        })
        .map(|r| r.path)
        .collect();
    assert!(foreign_writes.is_empty(), "{foreign_writes:?}");
    // Every status write is a server-side apply by the status field manager.
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.path.starts_with(GATEWAY_API_PATH) && r.path.ends_with("/status"))
            .all(|r| r.method == http::Method::PATCH
                && r.query.contains("fieldManager=sluice-status")),
        "{}",
        cp.log()
    );

    // Without a data plane the gateway is no longer programmed.
    drop(dp);
    let gw = gateway_status("gateway pending again", |g| {
        condition(g, "Programmed")["status"] == "False"
    })
    .await;
    assert_eq!(condition(&gw, "Programmed")["reason"], "Pending", "{gw}");
    assert_eq!(condition(&gw, "Accepted")["status"], "True", "{gw}");

    // The Gateway is deleted: its routes no longer show an entry for it.
    api.delete(&gw);
    eventually_some("route entry withdrawn with its gateway", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "api")
            .filter(|r| our_parent(r).is_none())
    })
    .await;

    let status = cp.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", cp.log());
}

/// A Goma Gateway and a Gateway API Gateway of the same namespace/name: the Goma one keeps the
/// gateway id and is served; the other reports Programmed=False/Invalid naming the Goma Gateway,
/// and takes the id over once the Goma Gateway is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goma_gateway_keeps_its_id_from_a_gateway_api_gateway() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s-gwapi-id");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    let (_a, a_port) = echo("alpha");
    let (_b, b_port) = echo("beta");
    let (goma_port, api_port) = (free_port(), free_port());
    api.apply(gateway(goma_port));
    api.apply(route("goma", "/api", a_port));
    api.apply(gateway_class("sluice", OUR_CONTROLLER));
    api.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "sluice",
                 "listeners": [{"name": "http", "port": api_port, "protocol": "HTTP"}]},
    }));
    for object in service_with_endpoints("default", "beta", b_port) {
        api.apply(object);
    }
    api.apply(http_route("api", None, "default", "beta"));

    let xds = free_port();
    let mut cp = Proc::start(
        &[
            "control-plane",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{xds}"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "cp-0"),
            ("POD_NAMESPACE", "sluice-system"),
        ],
    );
    let admin = free_port();
    let _dp = data_plane("default/gw", xds, admin, &[], &[]);
    wait_ok(goma_port, "localhost", "/api", Duration::from_secs(20)).await;
    let client = client();
    assert_eq!(
        get(&client, goma_port, "localhost", "/api").await.backend(),
        "alpha"
    );
    let gw = eventually_some("Gateway API gateway not served", || {
        api.get(GATEWAY_API_PATH, "gateways", "default", "gw")
            .filter(|g| condition(g, "Programmed")["reason"] == "Invalid")
    })
    .await;
    let programmed = condition(&gw, "Programmed");
    assert_eq!(programmed["status"], "False", "{gw}");
    assert!(
        programmed["message"]
            .as_str()
            .is_some_and(|m| m.contains("Goma Gateway default/gw")),
        "{gw}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", api_port))
            .await
            .is_err(),
        "the Gateway API listener is not served"
    );

    // The Goma Gateway goes: the Gateway API one takes the id and is served.
    api.delete(&gateway(goma_port));
    eventually(
        "the Gateway API gateway served",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                matches!(request(&client, "GET", api_port, "localhost", "/api", &[]).await,
                     Ok(r) if r.status == 200 && r.backend() == "beta")
            }
        },
    )
    .await;
    eventually_some("Gateway API gateway programmed", || {
        api.get(GATEWAY_API_PATH, "gateways", "default", "gw")
            .filter(|g| condition(g, "Programmed")["status"] == "True")
    })
    .await;
    let status = cp.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", cp.log());
}

/// A route that leaves our Gateway while no control plane runs: the next leader finds our stale
/// entry in its status and withdraws it, keeping the entries of routes still attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_leader_withdraws_entries_left_behind() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("k8s-gwapi-restart");
    dir.write("kubeconfig", &api.kubeconfig());
    let kubeconfig = dir.path().join("kubeconfig");
    api.apply(gateway_class("sluice", OUR_CONTROLLER));
    api.apply(gateway_class("theirs", "example.com/other"));
    for (name, class) in [("gw", "sluice"), ("foreign", "theirs")] {
        api.apply(json!({
            "apiVersion": GATEWAY_API, "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"gatewayClassName": class,
                     "listeners": [{"name": "http", "port": free_port(), "protocol": "HTTP"}]},
        }));
    }
    for object in service_with_endpoints("default", "alpha", free_port()) {
        api.apply(object);
    }
    api.apply(http_route("stays", None, "default", "alpha"));
    api.apply(http_route("leaves", None, "default", "alpha"));
    let control_plane = || {
        Proc::start(
            &[
                "control-plane",
                "--kubernetes",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &[
                ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                ("POD_NAME", "cp-0"),
                ("POD_NAMESPACE", "sluice-system"),
            ],
        )
    };
    let accepted = |name: &str| {
        api.get(GATEWAY_API_PATH, "httproutes", "default", name)
            .filter(|r| parent_condition(r, "Accepted").is_some_and(|c| c.0 == "True"))
    };
    let mut first = control_plane();
    for name in ["stays", "leaves"] {
        eventually_some("route accepted", || accepted(name)).await;
    }
    let status = first.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", first.log());

    let mut moved = http_route("leaves", None, "default", "alpha");
    moved["spec"]["parentRefs"] = json!([{"name": "foreign"}]);
    api.apply(moved);
    let mut second = control_plane();
    eventually_some("stale entry withdrawn", || {
        api.get(GATEWAY_API_PATH, "httproutes", "default", "leaves")
            .filter(|r| our_parent(r).is_none())
    })
    .await;
    assert!(accepted("stays").is_some());
    let status = second.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", second.log());
}
