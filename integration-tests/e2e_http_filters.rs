//! Gateway API HTTP features through the real `sluice data-plane`, driven by a scripted xDS
//! server: header modifiers (route and per backend), redirects, host rewrite, request mirrors,
//! CORS, 500 for unresolved and weightless backends, the creation-order tie-break, gRPC
//! UNIMPLEMENTED, listener isolation on a shared port, and NACKs of bad values with the last
//! good config still serving.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluice_proto::config as pb;
use sluice_proto::discovery::DeltaDiscoveryRequest;
use sluice_proto::type_url;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::xds::*;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::Status;

type Tx = mpsc::Sender<Result<sluice_proto::discovery::DeltaDiscoveryResponse, Status>>;
type Rx = tonic::Streaming<DeltaDiscoveryRequest>;

/// What a mirror target saw: method, path, x-set header, body length.
type Seen = Arc<Mutex<Vec<(String, String, String, usize)>>>;

/// A backend recording every request it gets (the mirror target).
async fn recorder() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().to_string();
                        let x_set = req
                            .headers()
                            .get("x-set")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                        log.lock()
                            .unwrap()
                            .push((method, path, x_set, body.unwrap_or(usize::MAX)));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"mirror",
                        ))))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (port, seen)
}

fn cluster(name: &str, port: u16) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: u32::from(port),
            weight: 1,
        }],
        ..Default::default()
    }
}

fn listener(name: &str, port: u16, hostname: &str) -> pb::Listener {
    pb::Listener {
        name: name.into(),
        port: u32::from(port),
        protocol: pb::Protocol::Http as i32,
        hostname: hostname.into(),
        ..Default::default()
    }
}

fn backend(cluster: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        cluster: cluster.into(),
        weight,
        ..Default::default()
    }
}

fn forward(backends: Vec<pb::WeightedBackend>) -> Option<pb::route::Action> {
    Some(pb::route::Action::Forward(pb::ForwardAction {
        backends,
        ..Default::default()
    }))
}

/// A route on listener "http" for `host`, matching the path prefix `prefix`.
fn route(name: &str, host: &str, prefix: &str, action: Option<pb::route::Action>) -> pb::Route {
    pb::Route {
        name: name.into(),
        listeners: vec!["http".into()],
        hostnames: vec![host.into()],
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: prefix.into(),
            }),
            ..Default::default()
        }],
        action,
        ..Default::default()
    }
}

fn hv(name: &str, value: &str) -> pb::HeaderValue {
    pb::HeaderValue {
        name: name.into(),
        value: value.into(),
    }
}

/// Sends one response and returns the data plane's answer to it.
async fn push(
    tx: &Tx,
    rx: &mut Rx,
    t: &str,
    nonce: &str,
    resources: Vec<sluice_proto::discovery::Resource>,
) -> DeltaDiscoveryRequest {
    tx.send(Ok(response(t, nonce, resources))).await.unwrap();
    let r = next_request(rx).await;
    assert_eq!(r.response_nonce, nonce);
    r
}

fn rejection(r: &DeltaDiscoveryRequest, name: &str) -> String {
    r.resource_errors
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.error_detail.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_else(|| panic!("{name} not rejected: {r:?}"))
}

struct Fixture {
    _dp: Proc,
    _echoes: Vec<Proc>,
    tx: Tx,
    rx: Rx,
    port: u16,
    iso_port: u16,
    seen: Seen,
}

async fn start(routes: Vec<pb::Route>) -> Fixture {
    let (echo_a, a_port) = echo("a");
    let (echo_b, b_port) = echo("b");
    let (mirror_port, seen) = recorder().await;
    let (xds, mut streams) = Scripted::start().await;
    let port = free_port();
    let iso_port = free_port();
    let admin = free_port();
    let dp = data_plane("default/gw", xds, admin, &[], &[]);
    let (mut rx, tx) = streams.recv().await.expect("data plane connects");
    for _ in 0..4 {
        next_request(&mut rx).await;
    }
    let r = push(&tx, &mut rx, type_url::SECRET, "s", vec![]).await;
    assert!(r.error_detail.is_none());
    let clusters = vec![
        resource("a", &cluster("a", a_port)),
        resource("b", &cluster("b", b_port)),
        resource("mirror", &cluster("mirror", mirror_port)),
        // Nothing listens there: a mirror that fails must not matter.
        resource("dead", &cluster("dead", free_port())),
        resource(
            "a-h2c",
            &pb::Cluster {
                protocol: pb::UpstreamProtocol::H2c as i32,
                ..cluster("a-h2c", a_port)
            },
        ),
    ];
    let r = push(&tx, &mut rx, type_url::CLUSTER, "c", clusters).await;
    assert!(r.error_detail.is_none(), "{r:?}");
    let listeners = vec![
        resource("http", &listener("http", port, "")),
        resource("wild", &listener("wild", iso_port, "*.iso.test")),
        resource("foo", &listener("foo", iso_port, "foo.iso.test")),
    ];
    let r = push(&tx, &mut rx, type_url::LISTENER, "l", listeners).await;
    assert!(r.error_detail.is_none(), "{r:?}");
    let routes = routes.iter().map(|r| resource(&r.name, r)).collect();
    let r = push(&tx, &mut rx, type_url::ROUTE, "r", routes).await;
    assert!(r.error_detail.is_none(), "routes ACKed: {r:?}");
    wait_ready(admin).await;
    Fixture {
        _dp: dp,
        _echoes: vec![echo_a, echo_b],
        tx,
        rx,
        port,
        iso_port,
        seen,
    }
}

async fn send(port: u16, method: &str, host: &str, path: &str, h: &[(&str, &str)]) -> Reply {
    request(&client(), method, port, host, path, h)
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"))
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_redirects_and_host_rewrite() {
    let mut headers = route(
        "headers",
        "headers.test",
        "/",
        forward(vec![backend("a", 1)]),
    );
    headers.request_headers = Some(pb::HeaderModifier {
        set: vec![hv("x-set", "one")],
        add: vec![hv("x-add", "new")],
        remove: vec!["X-Remove".into()],
    });
    headers.response_headers = Some(pb::HeaderModifier {
        set: vec![hv("x-resp", "route")],
        remove: vec!["content-type".into()],
        ..Default::default()
    });
    if let Some(pb::route::Action::Forward(f)) = &mut headers.action {
        f.backends[0].request_headers = Some(pb::HeaderModifier {
            set: vec![hv("x-set", "backend-wins")],
            add: vec![hv("x-backend", "a")],
            ..Default::default()
        });
        f.backends[0].response_headers = Some(pb::HeaderModifier {
            set: vec![hv("x-backend-resp", "a")],
            ..Default::default()
        });
    }
    let mut to_https = route(
        "to-https",
        "redirect.test",
        "/old",
        Some(pb::route::Action::Redirect(pb::Redirect {
            scheme: "https".into(),
            path: Some(pb::PathRewrite {
                kind: Some(pb::path_rewrite::Kind::ReplacePrefix("/new".into())),
            }),
            status: 301,
            ..Default::default()
        })),
    );
    to_https.response_headers = Some(pb::HeaderModifier {
        set: vec![hv("x-resp", "redirect")],
        ..Default::default()
    });
    let other_host = route(
        "other-host",
        "redirect.test",
        "/moved",
        Some(pb::route::Action::Redirect(pb::Redirect {
            hostname: "elsewhere.test".into(),
            ..Default::default()
        })),
    );
    let mut rewrite = route(
        "rewrite",
        "rewrite.test",
        "/",
        forward(vec![backend("a", 1)]),
    );
    if let Some(pb::route::Action::Forward(f)) = &mut rewrite.action {
        f.host_rewrite = "backend.internal".into();
    }
    let mut rewrite_h2 = route(
        "rewrite-h2",
        "rewrite-h2.test",
        "/",
        forward(vec![backend("a-h2c", 1)]),
    );
    if let Some(pb::route::Action::Forward(f)) = &mut rewrite_h2.action {
        f.host_rewrite = "backend.internal".into();
    }
    let mut f = start(vec![headers, to_https, other_host, rewrite, rewrite_h2]).await;
    let port = f.port;

    let r = send(
        port,
        "GET",
        "headers.test",
        "/x",
        &[("x-add", "old"), ("x-remove", "gone"), ("x-set", "client")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &r.json()["headers"];
    // The backend's modifier runs after the route's.
    assert_eq!(seen["x-set"], "backend-wins");
    assert_eq!(seen["x-backend"], "a");
    assert!(seen.get("x-remove").is_none(), "{seen}");
    // Added next to the client's value, not instead of it.
    assert_eq!(seen["x-add"], "old, new", "{seen}");
    assert_eq!(header(&r, "x-resp"), Some("route"));
    assert_eq!(header(&r, "x-backend-resp"), Some("a"));
    assert_eq!(header(&r, "content-type"), None);

    let r = send(port, "GET", "redirect.test", "/old/page?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        header(&r, "location"),
        Some("https://redirect.test/new/page?q=1")
    );
    // Response modifiers apply to the gateway's own answers too.
    assert_eq!(header(&r, "x-resp"), Some("redirect"));
    let r = send(port, "GET", "redirect.test:1234", "/moved/x", &[]).await;
    assert_eq!(r.status, 302);
    // No scheme given: the listener's port (not the Host header's), the request's path.
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://elsewhere.test:{port}/moved/x").as_str())
    );

    let r = send(port, "GET", "rewrite.test", "/", &[]).await;
    assert_eq!(r.json()["host"], "backend.internal");
    // HTTP/2 upstream: the rewritten host is the :authority.
    let r = send(port, "GET", "rewrite-h2.test", "/", &[]).await;
    assert_eq!(r.json()["version"], "HTTP/2.0", "{}", r.body);
    assert_eq!(r.json()["host"], "backend.internal");

    // A bad redirect status is NACKed with the field named; the last good version serves on.
    let bad = route(
        "to-https",
        "redirect.test",
        "/old",
        Some(pb::route::Action::Redirect(pb::Redirect {
            status: 304,
            ..Default::default()
        })),
    );
    let mut bad_header = route(
        "headers",
        "headers.test",
        "/",
        forward(vec![backend("a", 1)]),
    );
    bad_header.request_headers = Some(pb::HeaderModifier {
        set: vec![hv("bad name", "v")],
        ..Default::default()
    });
    let r = push(
        &f.tx,
        &mut f.rx,
        type_url::ROUTE,
        "bad",
        vec![resource("to-https", &bad), resource("headers", &bad_header)],
    )
    .await;
    assert!(r.error_detail.is_some());
    let reason = rejection(&r, "to-https");
    assert!(
        reason.contains("redirect.status: 304 is not a redirect status"),
        "{reason}"
    );
    let reason = rejection(&r, "headers");
    assert!(reason.contains("request_headers.set[0].name"), "{reason}");
    let r = send(port, "GET", "redirect.test", "/old/page", &[]).await;
    assert_eq!(
        (r.status, header(&r, "location")),
        (301, Some("https://redirect.test/new/page"))
    );
    let r = send(port, "GET", "headers.test", "/", &[]).await;
    assert_eq!(r.json()["headers"]["x-set"], "backend-wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_and_cors() {
    let mut mirrored = route(
        "mirrored",
        "mirror.test",
        "/",
        forward(vec![backend("a", 1)]),
    );
    mirrored.request_headers = Some(pb::HeaderModifier {
        set: vec![hv("x-set", "mirrored")],
        ..Default::default()
    });
    mirrored.mirrors = vec![
        pb::RequestMirror {
            cluster: "mirror".into(),
            ..Default::default()
        },
        pb::RequestMirror {
            cluster: "dead".into(),
            ..Default::default()
        },
    ];
    let mut never = route("never", "never.test", "/", forward(vec![backend("a", 1)]));
    never.mirrors = vec![pb::RequestMirror {
        cluster: "mirror".into(),
        numerator: 0,
        denominator: 100,
    }];
    let mut cors = route("cors", "cors.test", "/", forward(vec![backend("a", 1)]));
    cors.cors = Some(pb::Cors {
        allow_origins: vec![
            "https://*.example.com".into(),
            "http://app.test:8080".into(),
        ],
        allow_methods: vec!["GET".into(), "PUT".into()],
        allow_headers: vec!["x-token".into()],
        expose_headers: vec!["x-total".into()],
        allow_credentials: true,
        max_age_seconds: 600,
    });
    let mut f = start(vec![mirrored, never, cors]).await;
    let port = f.port;

    // A body streamed through: the client gets the backend's answer, the mirror a full copy.
    let body = "x".repeat(200_000);
    let req = http::Request::post(format!("http://127.0.0.1:{port}/upload?k=v"))
        .header("host", "mirror.test")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json["backend"], "a");
    assert_eq!(json["body_bytes"], 200_000);
    let seen = f.seen.clone();
    eventually(
        "the mirror gets the request",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().iter().any(|r| {
                    *r == (
                        "POST".to_string(),
                        "/upload?k=v".to_string(),
                        "mirrored".to_string(),
                        200_000,
                    )
                })
            }
        },
    )
    .await;
    // Bodyless requests are mirrored too.
    let r = send(port, "GET", "mirror.test", "/get", &[]).await;
    assert_eq!(r.backend(), "a");
    eventually("the mirror gets the GET", Duration::from_secs(10), || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().iter().any(|r| r.1 == "/get") }
    })
    .await;
    // 0 in 100: never mirrored.
    for _ in 0..5 {
        assert_eq!(
            send(port, "GET", "never.test", "/never", &[]).await.status,
            200
        );
    }
    assert!(!f.seen.lock().unwrap().iter().any(|r| r.1 == "/never"));

    // CORS preflight from an allowed origin: answered by the gateway.
    let preflight = |origin: &'static str| async move {
        send(
            port,
            "OPTIONS",
            "cors.test",
            "/api",
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-token"),
            ],
        )
        .await
    };
    let r = preflight("https://app.example.com").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "", "answered by the gateway, not the backend");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("x-token"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert_eq!(
        r.headers.get_all("vary").iter().count(),
        1,
        "{:?}",
        r.headers
    );
    // A stranger's preflight: OK, but no CORS headers.
    let r = preflight("https://evil.test").await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "access-control-allow-methods"), None);
    // Ordinary requests: the backend answers, the gateway adds the headers.
    let r = send(
        port,
        "GET",
        "cors.test",
        "/api",
        &[("origin", "http://app.test:8080")],
    )
    .await;
    assert_eq!(r.backend(), "a");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://app.test:8080")
    );
    assert_eq!(header(&r, "access-control-expose-headers"), Some("x-total"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "vary"), Some("Origin"));
    let r = send(
        port,
        "GET",
        "cors.test",
        "/api",
        &[("origin", "http://app.test")],
    )
    .await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // A mirror naming a cluster that does not exist is NACKed, like a backend would be.
    let mut bad = route("never", "never.test", "/", forward(vec![backend("a", 1)]));
    bad.mirrors = vec![pb::RequestMirror {
        cluster: "missing".into(),
        ..Default::default()
    }];
    let mut bad_cors = route("cors", "cors.test", "/", forward(vec![backend("a", 1)]));
    bad_cors.cors = Some(pb::Cors {
        allow_origins: vec!["app.example.com".into()],
        ..Default::default()
    });
    let r = push(
        &f.tx,
        &mut f.rx,
        type_url::ROUTE,
        "bad",
        vec![resource("never", &bad), resource("cors", &bad_cors)],
    )
    .await;
    let reason = rejection(&r, "never");
    assert!(
        reason.contains("mirrors[0].cluster") && reason.contains("missing"),
        "{reason}"
    );
    let reason = rejection(&r, "cors");
    assert!(reason.contains("cors.allow_origins[0]"), "{reason}");
    let r = preflight("https://app.example.com").await;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com"),
        "the last good CORS config serves on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_precedence_grpc_and_listener_isolation() {
    let mut half = route(
        "half",
        "weights.test",
        "/",
        forward(vec![backend("a", 1), backend("", 1)]),
    );
    half.response_headers = Some(pb::HeaderModifier {
        set: vec![hv("x-route", "half")],
        ..Default::default()
    });
    let zero = route(
        "zero",
        "zero.test",
        "/",
        forward(vec![backend("a", 0), backend("b", 0)]),
    );
    let none = route("none", "none.test", "/", forward(vec![]));
    let mut older = route("z-older", "order.test", "/", forward(vec![backend("b", 1)]));
    older.creation_order = 100;
    let mut younger = route(
        "a-younger",
        "order.test",
        "/",
        forward(vec![backend("a", 1)]),
    );
    younger.creation_order = 200;
    let mut wild_only = route("wild-only", "", "/", forward(vec![backend("a", 1)]));
    wild_only.hostnames.clear();
    wild_only.listeners = vec!["wild".into()];
    let mut foo_api = route("foo-api", "", "/api", forward(vec![backend("b", 1)]));
    foo_api.hostnames.clear();
    foo_api.listeners = vec!["foo".into()];
    let f = start(vec![half, zero, none, older, younger, wild_only, foo_api]).await;
    let port = f.port;

    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let r = send(port, "GET", "weights.test", "/", &[]).await;
        if r.status == 500 {
            assert!(r.body.contains("backend reference"), "{}", r.body);
        }
        // The route's response modifier covers the gateway's 500s too.
        assert_eq!(header(&r, "x-route"), Some("half"));
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200, 500],
        "{statuses:?}"
    );
    assert_eq!(send(port, "GET", "zero.test", "/", &[]).await.status, 500);
    assert_eq!(send(port, "GET", "none.test", "/", &[]).await.status, 500);

    // Same precedence: the older route wins although its name sorts later.
    assert_eq!(
        send(port, "GET", "order.test", "/", &[]).await.backend(),
        "b"
    );

    // gRPC that matches nothing: UNIMPLEMENTED in trailers-only form, not a 404.
    let r = send(
        port,
        "POST",
        "nothing.test",
        "/pkg.Svc/Method",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "grpc-status"), Some("12"));
    assert_eq!(header(&r, "content-type"), Some("application/grpc"));
    assert!(header(&r, "grpc-message").is_some());
    assert_eq!(r.body, "");
    assert_eq!(
        send(port, "GET", "nothing.test", "/", &[]).await.status,
        404
    );
    // A real gRPC client over h2c sees the status UNIMPLEMENTED.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // Listener isolation: foo.iso.test belongs to the "foo" listener, so the wildcard
    // listener's route never serves it, even where "foo" has no route.
    let iso = f.iso_port;
    assert_eq!(
        send(iso, "GET", "bar.iso.test", "/x", &[]).await.backend(),
        "a"
    );
    assert_eq!(
        send(iso, "GET", "foo.iso.test", "/api/x", &[])
            .await
            .backend(),
        "b"
    );
    assert_eq!(
        send(iso, "GET", "foo.iso.test", "/x", &[]).await.status,
        404
    );
}
