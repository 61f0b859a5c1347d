//! Middlewares across types, through the real binary: the order they run in and what each sees,
//! `paths` scopes, maintenance before middlewares, fail-closed references, and a data plane that
//! NACKs a middleware it cannot compile while its last good route keeps serving.

mod support;

use sluice_proto::config as pb;
use sluice_proto::type_url;
use std::collections::BTreeMap;
use std::time::Duration;
use support::xds::*;
use support::*;

const BASIC_ADMIN: &str = "Basic YWRtaW46c2VjcmV0"; // admin:secret

fn middleware(name: &str, body: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{body}"
    )
}

/// responseHeaders, basicAuth scoped to /app/admin/*, requestHeaders, on one route; a maintenance
/// route carrying the same auth.
fn write_config(dir: &TempDir, gw_port: u16, echo_port: u16) {
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    dir.write(
        "mw.yaml",
        &[
            middleware(
                "headers",
                "  type: responseHeaders\n  rule: {setHeaders: {X-Frame-Options: DENY}}\n",
            ),
            middleware(
                "auth",
                "  type: basicAuth\n  paths: [\"/admin/*\"]\n  rule: {users: [\"admin:secret\"]}\n",
            ),
            middleware(
                "mark",
                "  type: requestHeaders\n  rule: {setHeaders: {X-Passed-Auth: \"yes\"}}\n",
            ),
        ]
        .join("---\n"),
    );
    dir.write(
        "app.yaml",
        &route_yaml(
            "app",
            "gw",
            "/app",
            echo_port,
            "  middlewares: [headers, auth, mark]\n",
        ),
    );
    dir.write(
        "down.yaml",
        &route_yaml(
            "down",
            "gw",
            "/down",
            echo_port,
            "  middlewares: [auth]\n  maintenance: {enabled: true}\n",
        ),
    );
    dir.write(
        "plain.yaml",
        &route_yaml("plain", "gw", "/plain", echo_port, ""),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middlewares_run_in_order_within_their_scope() {
    let (_echo, echo_port) = echo("app");
    let dir = TempDir::new("mw-order");
    let gw_port = free_port();
    write_config(&dir, gw_port, echo_port);
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "x", "/plain", Duration::from_secs(10)).await;
    let c = client();

    // Outside the auth scope: every middleware in scope ran, the request went upstream marked.
    let open = get(&c, gw_port, "x", "/app/public").await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.headers["x-frame-options"], "DENY");
    assert_eq!(open.json()["headers"]["x-passed-auth"], "yes", "{open:?}");

    // In scope without credentials: basicAuth answers; the middleware before it still decorates
    // the answer on the way out, the one after it never ran.
    let denied = get(&c, gw_port, "x", "/app/admin/users").await;
    assert_eq!(denied.status, 401, "{denied:?}");
    assert!(
        denied.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm="),
        "{denied:?}"
    );
    assert_eq!(denied.headers["x-frame-options"], "DENY");

    let wrong = request(
        &c,
        "GET",
        gw_port,
        "x",
        "/app/admin/users",
        &[("authorization", "Basic YWRtaW46d3Jvbmc=")],
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);

    let admitted = request(
        &c,
        "GET",
        gw_port,
        "x",
        "/app/admin/users",
        &[("authorization", BASIC_ADMIN)],
    )
    .await
    .unwrap();
    assert_eq!(admitted.status, 200, "{admitted:?}");
    assert_eq!(admitted.json()["headers"]["x-passed-auth"], "yes");

    // Maintenance answers before any middleware (Goma's order): no challenge.
    let down = get(&c, gw_port, "x", "/down/admin/x").await;
    assert_eq!(down.status, 503, "{down:?}");
    assert!(!down.headers.contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_is_never_served_without_its_middlewares() {
    let (_echo, echo_port) = echo("app");
    let dir = TempDir::new("mw-fail-closed");
    let gw_port = free_port();
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    dir.write(
        "plain.yaml",
        &route_yaml("plain", "gw", "/plain", echo_port, ""),
    );
    dir.write(
        "guarded.yaml",
        &route_yaml(
            "guarded",
            "gw",
            "/guarded",
            echo_port,
            "  middlewares: [ghost]\n",
        ),
    );
    let (sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "x", "/plain", Duration::from_secs(10)).await;
    let c = client();

    // The Middleware does not exist: the route is withdrawn, not served unprotected.
    assert_eq!(get(&c, gw_port, "x", "/guarded").await.status, 404);
    sluice.wait_log(
        "spec.middlewares[0]: Middleware default/ghost does not exist",
        Duration::from_secs(5),
    );

    // It appears: the route is served, protected.
    dir.write(
        "ghost.yaml",
        &middleware(
            "ghost",
            "  type: basic\n  rule: {users: [\"admin:secret\"]}\n",
        ),
    );
    eventually("guarded route served", Duration::from_secs(10), || async {
        get(&c, gw_port, "x", "/guarded").await.status == 401
    })
    .await;
    let ok = request(
        &c,
        "GET",
        gw_port,
        "x",
        "/guarded",
        &[("authorization", BASIC_ADMIN)],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);

    // An invalid edit of the Middleware keeps the last good rule: still protected.
    dir.write(
        "ghost.yaml",
        &middleware("ghost", "  type: basic\n  rule: {users: []}\n"),
    );
    sluice.wait_log("users", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&c, gw_port, "x", "/guarded").await.status, 401);

    // Deleted: withdrawn again; the other route never stopped.
    dir.remove("ghost.yaml");
    eventually(
        "guarded route withdrawn",
        Duration::from_secs(10),
        || async { get(&c, gw_port, "x", "/guarded").await.status == 404 },
    )
    .await;
    assert_eq!(get(&c, gw_port, "x", "/plain").await.status, 200);
}

fn forward_route(name: &str, path: &str, middlewares: Vec<pb::Middleware>) -> pb::Route {
    pb::Route {
        name: name.into(),
        listeners: vec!["http".into()],
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: path.into(),
            }),
            ..Default::default()
        }],
        middlewares,
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: vec![pb::WeightedBackend {
                cluster: "c".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn basic_auth(scope: Option<pb::PathScope>) -> pb::Middleware {
    pb::Middleware {
        id: "Middleware default/auth".into(),
        state_key: "1".into(),
        scope,
        kind: Some(pb::middleware::Kind::BasicAuth(pb::BasicAuth {
            realm: "r".into(),
            users: vec![pb::BasicUser {
                username: "admin".into(),
                password: "secret".into(),
            }],
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_nacks_a_middleware_it_cannot_compile_and_keeps_the_last_good_route() {
    let (_echo, echo_port) = echo("good");
    let (xds, mut srx) = Scripted::start().await;
    let gw_port = free_port();
    let admin = free_port();
    let _dp = data_plane("default/gw", xds, admin, &[], &[]);
    let (mut rx, tx) = srx.recv().await.unwrap();
    for _ in 0..4 {
        next_request(&mut rx).await;
    }
    let cluster = pb::Cluster {
        name: "c".into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: echo_port as u32,
            weight: 1,
        }],
        ..Default::default()
    };
    let listener = pb::Listener {
        name: "http".into(),
        port: gw_port as u32,
        protocol: pb::Protocol::Http as i32,
        ..Default::default()
    };
    let protected = forward_route("r", "/", vec![basic_auth(None)]);
    for (t, nonce, resources) in [
        (type_url::SECRET, "n0", vec![]),
        (type_url::CLUSTER, "n1", vec![resource("c", &cluster)]),
        (type_url::LISTENER, "n2", vec![resource("http", &listener)]),
        (type_url::ROUTE, "n3", vec![resource("r", &protected)]),
    ] {
        tx.send(Ok(response(t, nonce, resources))).await.unwrap();
    }
    let mut acks = BTreeMap::new();
    while acks.len() < 4 {
        let r = next_request(&mut rx).await;
        acks.insert(r.response_nonce.clone(), r);
    }
    assert!(acks.values().all(|a| a.error_detail.is_none()), "{acks:?}");
    wait_ready(admin).await;
    let c = client();
    assert_eq!(get(&c, gw_port, "x", "/").await.status, 401);

    // A new version whose middleware cannot compile (its scope regex is invalid): NACKed by name
    // with the field; the last good version keeps answering 401, never an unprotected 200.
    let broken = forward_route(
        "r",
        "/",
        vec![basic_auth(Some(pb::PathScope {
            regexes: vec!["([".into()],
            ..Default::default()
        }))],
    );
    tx.send(Ok(response(
        type_url::ROUTE,
        "n4",
        vec![resource("r", &broken)],
    )))
    .await
    .unwrap();
    let nack = next_request(&mut rx).await;
    assert_eq!(nack.response_nonce, "n4");
    let reason = nack
        .resource_errors
        .iter()
        .find(|e| e.name == "r")
        .and_then(|e| e.error_detail.clone())
        .expect("route r NACKed")
        .message;
    assert!(
        reason.contains("middlewares[0].scope.regexes[0]"),
        "{reason}"
    );
    assert_eq!(get(&c, gw_port, "x", "/").await.status, 401);
    let ok = request(
        &c,
        "GET",
        gw_port,
        "x",
        "/",
        &[("authorization", BASIC_ADMIN)],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
}
