//! Gateway API in standalone mode through the real binary: a GatewayClass of ours, a Gateway,
//! HTTPRoutes, Services and EndpointSlices pointing at `sluice echo` backends on loopback.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
";

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
"
    )
}

/// A Service `ns/name` (port 80) whose one endpoint is 127.0.0.1:`port`.
fn service(ns: &str, name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"
    )
}

fn route(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw, namespace: default}}]
{spec}"
    )
}

async fn backend_of(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let r = request(&client(), method, port, host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
    let backend = if r.status == 200 {
        r.backend()
    } else {
        String::new()
    };
    (r.status, backend)
}

/// Four clients sending `GET x.test{path}` back to back until stopped; every answer must pass
/// `ok`.
struct Traffic {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Traffic {
    fn start(port: u16, path: &'static str, ok: fn(&Reply) -> bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..4)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let c = client();
                    let (mut sent, mut failures) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match request(&c, "GET", port, "x.test", path, &[]).await {
                            Ok(r) if ok(&r) => {}
                            Ok(r) => failures.push(format!("status {}: {}", r.status, r.body)),
                            Err(e) => failures.push(e),
                        }
                        sent += 1;
                    }
                    (sent, failures)
                })
            })
            .collect();
        Traffic { stop, workers }
    }

    /// Stops the clients; panics if none was sent or any failed.
    async fn stop_and_check(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut sent, mut failures) = (0, Vec::new());
        for w in self.workers {
            let (s, f) = w.await.expect("traffic worker");
            sent += s;
            failures.extend(f);
        }
        assert!(sent > 0);
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_match_host_path_headers_query_and_method() {
    let (_a, port_a) = echo("a");
    let (_b, port_b) = echo("b");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-routing");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("default", "svc-a", port_a),
            service("default", "svc-b", port_b)
        ),
    );
    dir.write(
        "route.yaml",
        &route(
            "api",
            "default",
            "  hostnames: [api.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {value: /h}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /h}, headers: [{name: x-env, value: canary}]}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {value: /q}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /q}, queryParams: [{name: v, value: '2'}]}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {value: /m}, method: POST}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {value: /m}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /split}}]
    backendRefs: [{name: svc-a, port: 80, weight: 3}, {name: svc-b, port: 80, weight: 1}]
",
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "api.test", "/a", Duration::from_secs(20)).await;

    let p = gw_port;
    assert_eq!(
        backend_of(p, "GET", "api.test", "/a/x", &[]).await,
        (200, "a".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/exact", &[]).await,
        (200, "b".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/exact/more", &[]).await.0,
        404
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/h", &[]).await,
        (200, "a".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/h", &[("x-env", "canary")]).await,
        (200, "b".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/q?v=1", &[]).await,
        (200, "a".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/q?v=2", &[]).await,
        (200, "b".into())
    );
    assert_eq!(
        backend_of(p, "POST", "api.test", "/m", &[]).await,
        (200, "b".into())
    );
    assert_eq!(
        backend_of(p, "GET", "api.test", "/m", &[]).await,
        (200, "a".into())
    );
    // Nothing matches: 404, for an unknown path and for another host.
    assert_eq!(
        backend_of(p, "GET", "api.test", "/nothing", &[]).await.0,
        404
    );
    assert_eq!(backend_of(p, "GET", "other.test", "/a", &[]).await.0, 404);

    // Weighted split, roughly 3:1.
    let mut a = 0;
    for _ in 0..400 {
        if backend_of(p, "GET", "api.test", "/split", &[]).await == (200, "a".into()) {
            a += 1;
        }
    }
    assert!(
        (240..=360).contains(&a),
        "svc-a served {a} of 400 (expected about 300)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_backend_needs_a_reference_grant_live() {
    let (_a, port_a) = echo("a");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-grant");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write("service.yaml", &service("backends", "svc", port_a));
    dir.write(
        "route.yaml",
        &route(
            "r",
            "default",
            "  rules: [{backendRefs: [{name: svc, namespace: backends, port: 80}]}]\n",
        ),
    );
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-default, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: '', kind: Service}]
";
    dir.write("grant.yaml", grant);
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "any.test", "/", Duration::from_secs(20)).await;
    assert_eq!(
        backend_of(gw_port, "GET", "any.test", "/", &[]).await,
        (200, "a".into())
    );

    // The grant is deleted: the reference is no longer permitted and requests get 500.
    dir.remove("grant.yaml");
    eventually(
        "the revoked backend answers 500",
        Duration::from_secs(20),
        || async { backend_of(gw_port, "GET", "any.test", "/", &[]).await.0 == 500 },
    )
    .await;
    // Granted again: served again.
    dir.write("grant.yaml", grant);
    wait_ok(gw_port, "any.test", "/", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_and_removed_under_traffic_fails_no_request() {
    let (_a, port_a) = echo("a");
    let (_b, port_b) = echo("b");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-live");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("default", "svc-a", port_a),
            service("default", "svc-b", port_b)
        ),
    );
    dir.write(
        "steady.yaml",
        &route("steady", "default", "  rules: [{matches: [{path: {value: /steady}}], backendRefs: [{name: svc-a, port: 80}]}]\n"),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "x.test", "/steady", Duration::from_secs(20)).await;

    let traffic = Traffic::start(gw_port, "/steady", |r| {
        r.status == 200 && r.backend() == "a"
    });

    for _ in 0..3 {
        dir.write(
            "extra.yaml",
            &route("extra", "default", "  rules: [{matches: [{path: {value: /extra}}], backendRefs: [{name: svc-b, port: 80}]}]\n"),
        );
        wait_ok(gw_port, "x.test", "/extra", Duration::from_secs(20)).await;
        dir.remove("extra.yaml");
        eventually(
            "the removed route answers 404",
            Duration::from_secs(20),
            || async { backend_of(gw_port, "GET", "x.test", "/extra", &[]).await.0 == 404 },
        )
        .await;
    }
    traffic.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_unresolved_shares_from_manifests() {
    let (_a, port_a) = echo("a");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-filters");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write("service.yaml", &service("default", "svc-a", port_a));
    dir.write(
        "route.yaml",
        &route(
            "f",
            "default",
            "  hostnames: [f.test]
  rules:
  - matches: [{path: {value: /mod}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: s}], add: [{name: x-add, value: new}], remove: [x-drop]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-served-by, value: sluice}]}
    - type: URLRewrite
      urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /inner}}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.test, path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: svc-a, port: 80}, {name: nowhere, port: 80}]
",
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "f.test", "/mod", Duration::from_secs(20)).await;

    let c = client();
    let r = request(
        &c,
        "GET",
        gw_port,
        "f.test",
        "/mod/x",
        &[("x-add", "old"), ("x-drop", "1")],
    )
    .await
    .expect("modified request");
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["path"], "/inner/x");
    assert_eq!(seen["host"], "internal.test");
    assert_eq!(seen["headers"]["x-set"], "s");
    assert_eq!(seen["headers"]["x-add"], "old, new");
    assert!(seen["headers"].get("x-drop").is_none(), "{seen}");
    assert_eq!(
        r.headers.get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"sluice"[..])
    );

    let r = request(&c, "GET", gw_port, "f.test", "/old", &[])
        .await
        .expect("redirect");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://new.test/new")
    );

    // Half the weight points at a Service that does not exist: that half is answered 500.
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..200 {
        match backend_of(gw_port, "GET", "f.test", "/half", &[]).await.0 {
            200 => ok += 1,
            500 => errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (60..=140).contains(&errors),
        "{errors} of 200 answered 500 (expected about 100), {ok} served"
    );
}

/// A CA and a leaf for `name`: (CA DER, leaf PEM chain, leaf PEM key).
fn certificate(name: &str) -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![name.to_string()])
        .expect("leaf params")
        .signed_by(&key, &ca)
        .expect("leaf cert");
    (ca.der().clone(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_terminates_with_its_certificate_ref() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    let (_a, port_a) = echo("a");
    let https_port = free_port();
    let (ca, cert, key) = certificate("secure.test");
    let dir = TempDir::new("gwapi-https");
    dir.write("class.yaml", CLASS);
    dir.write(
        "gw.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: https
    port: {https_port}
    protocol: HTTPS
    hostname: secure.test
    tls: {{certificateRefs: [{{name: site}}]}}
"
        ),
    );
    dir.write("secret.yaml", &tls_secret_yaml("site", &cert, &key));
    dir.write("service.yaml", &service("default", "svc-a", port_a));
    dir.write(
        "route.yaml",
        &route(
            "r",
            "default",
            "  rules: [{backendRefs: [{name: svc-a, port: 80}]}]\n",
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("ca root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("secure.test").expect("server name");
    let mut status = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "no 200 over TLS (last status {status})"
        );
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", https_port)).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(tls) = connector.connect(name.clone(), tcp).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        let req = http::Request::get("/hello")
            .header("host", "secure.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        status = resp.status().as_u16();
        if status == 200 {
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("\"backend\":\"a\""));
        } else {
            // Configuration still arriving (the route after the listener).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_cors_and_the_clients_host_from_manifests() {
    let (_a, port_a) = echo("a");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-grpc");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write("service.yaml", &service("default", "svc-a", port_a));
    dir.write(
        "grpc.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: default}
spec:
  parentRefs: [{name: gw, namespace: default}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
    backendRefs: [{name: svc-a, port: 80}]
",
    );
    dir.write(
        "route.yaml",
        &route(
            "web",
            "default",
            "  hostnames: [web.test]
  rules:
  - filters:
    - type: CORS
      cors: {allowOrigins: ['https://*.app.test'], allowMethods: [GET, PUT], allowHeaders: [x-token], maxAge: 60}
    backendRefs: [{name: svc-a, port: 80}]
",
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "web.test", "/", Duration::from_secs(20)).await;

    // The backend sees the client's Host, as Gateway API implementations pass it.
    let c = client();
    let r = request(
        &c,
        "GET",
        gw_port,
        "web.test",
        "/x",
        &[("origin", "https://ui.app.test")],
    )
    .await
    .expect("request with an origin");
    assert_eq!(r.json()["host"], "web.test");
    let header = |r: &Reply, name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://ui.app.test")
    );

    // A preflight is answered by the gateway; an origin not allowed gets no CORS headers.
    let preflight = [
        ("origin", "https://ui.app.test"),
        ("access-control-request-method", "PUT"),
    ];
    let r = request(&c, "OPTIONS", gw_port, "web.test", "/x", &preflight)
        .await
        .expect("preflight");
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert!(
        r.body.is_empty() || !r.body.contains("\"backend\""),
        "answered by the backend: {}",
        r.body
    );
    let methods = header(&r, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("PUT"), "{methods}");
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("60"));
    let r = request(
        &c,
        "OPTIONS",
        gw_port,
        "web.test",
        "/x",
        &[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await
    .expect("preflight from another origin");
    assert!(header(&r, "access-control-allow-origin").is_none());

    // GRPCRoute: the matched method reaches the backend over h2c; any other is UNIMPLEMENTED.
    // Dial loopback, but send `:authority: grpc.test` (the route's hostname).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{gw_port}"))
        .expect("endpoint")
        .origin("http://grpc.test".parse().expect("origin"))
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let ok = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "a".into(),
        })
        .await
        .expect("Check through the GRPCRoute");
    assert_eq!(ok.into_inner().status, 1, "SERVING");
    let status = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "a".into(),
        })
        .await
        .expect_err("Watch has no route");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_udp_and_tls_passthrough_routes_from_manifests() {
    use support::l4::{TestPki, tcp_echo, tls_echo, udp_echo};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let pki = TestPki::new();
    let tcp_a = tcp_echo("tcp-a").await;
    let tcp_b = tcp_echo("tcp-b").await;
    let udp = udp_echo("udp").await;
    let tls_a = tls_echo("tls-a", &pki.leaf(&["a.tls.test"])).await;
    let tls_b = tls_echo("tls-b", &pki.leaf(&["b.tls.test"])).await;
    let (tcp_port, udp_port, tls_port) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("gwapi-l4");
    dir.write("class.yaml", CLASS);
    dir.write(
        "gw.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: tcp, port: {tcp_port}, protocol: TCP}}
  - {{name: udp, port: {udp_port}, protocol: UDP}}
  - {{name: tls, port: {tls_port}, protocol: TLS, tls: {{mode: Passthrough}}}}
"
        ),
    );
    let mut services = String::new();
    for (name, port) in [
        ("tcp-a", tcp_a),
        ("tcp-b", tcp_b),
        ("tls-a", tls_a),
        ("tls-b", tls_b),
    ] {
        services.push_str(&service("default", name, port));
        services.push_str("---\n");
    }
    services.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: udp, namespace: default}}
spec: {{ports: [{{name: dns, port: 53, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: udp-1, namespace: default, labels: {{kubernetes.io/service-name: udp}}}}
addressType: IPv4
ports: [{{name: dns, port: {udp}, protocol: UDP}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"
    ));
    dir.write("services.yaml", &services);
    let tcp_route = |wa: u32, wb: u32| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {{name: tcp, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules:
  - backendRefs: [{{name: tcp-a, port: 80, weight: {wa}}}, {{name: tcp-b, port: 80, weight: {wb}}}]
"
        )
    };
    dir.write("tcp.yaml", &tcp_route(1, 0));
    dir.write(
        "udp.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: udp}]
  rules:
  - backendRefs: [{name: udp, port: 53}]
",
    );
    dir.write(
        "tls.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [a.tls.test]
  rules:
  - backendRefs: [{name: tls-a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: b, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: ['*.b.tls.test', b.tls.test]
  rules:
  - backendRefs: [{name: tls-b, port: 80}]
",
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;

    // TCP: the greeting names the backend; bytes echo both ways.
    async fn tcp_greeting(port: u16) -> Option<(String, tokio::net::TcpStream)> {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(2), r.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        (!line.is_empty()).then(|| (line.trim().to_owned(), r.into_inner()))
    }
    eventually("the TCP route serves", Duration::from_secs(20), || async {
        tcp_greeting(tcp_port).await.map(|(n, _)| n) == Some("tcp-a".into())
    })
    .await;
    let (_, mut open) = tcp_greeting(tcp_port).await.expect("tcp connection");
    // Shift the weight: new connections go to b, the open one keeps relaying to a.
    dir.write("tcp.yaml", &tcp_route(0, 1));
    eventually(
        "the weight shift reaches new connections",
        Duration::from_secs(20),
        || async { tcp_greeting(tcp_port).await.map(|(n, _)| n) == Some("tcp-b".into()) },
    )
    .await;
    open.write_all(b"still here\n")
        .await
        .expect("write on the open connection");
    let mut r = BufReader::new(open);
    let mut echoed = String::new();
    r.read_line(&mut echoed)
        .await
        .expect("echo on the open connection");
    assert_eq!(echoed, "still here\n");

    // UDP: a datagram round trip through the route.
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp client");
    client
        .connect(("127.0.0.1", udp_port))
        .await
        .expect("udp connect");
    let mut buf = [0u8; 256];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = client.send(b"ping").await;
        match tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await {
            Ok(Ok(n)) if &buf[..n] == b"udp|ping" => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the UDP route"
            ),
        }
    }

    // TLS passthrough: the client verifies the BACKEND's certificate, chosen by SNI.
    async fn tls_greeting(pki: &TestPki, port: u16, sni: &str) -> Option<String> {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).ok()?;
        let tls = tokio::time::timeout(Duration::from_secs(2), pki.client().connect(name, s))
            .await
            .ok()?
            .ok()?;
        let mut r = BufReader::new(tls);
        let mut line = String::new();
        r.read_line(&mut line).await.ok()?;
        Some(line.trim().to_owned())
    }
    eventually("the TLS routes serve", Duration::from_secs(20), || async {
        tls_greeting(&pki, tls_port, "a.tls.test").await == Some("tls-a".into())
    })
    .await;
    assert_eq!(
        tls_greeting(&pki, tls_port, "b.tls.test").await.as_deref(),
        Some("tls-b")
    );
    assert_eq!(
        tls_greeting(&pki, tls_port, "unknown.test").await,
        None,
        "an SNI no route names is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shift_under_traffic_with_no_failed_request() {
    let (_a, port_a) = echo("a");
    let (_b, port_b) = echo("b");
    let gw_port = free_port();
    let dir = TempDir::new("gwapi-shift");
    dir.write("class.yaml", CLASS);
    dir.write("gw.yaml", &gateway(gw_port));
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("default", "svc-a", port_a),
            service("default", "svc-b", port_b)
        ),
    );
    let weights = |a: u32, b: u32| {
        route(
            "shift",
            "default",
            &format!(
                "  rules: [{{backendRefs: [{{name: svc-a, port: 80, weight: {a}}}, {{name: svc-b, port: 80, weight: {b}}}]}}]\n"
            ),
        )
    };
    dir.write("shift.yaml", &weights(1, 0));
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(gw_port, "x.test", "/", Duration::from_secs(20)).await;

    let traffic = Traffic::start(gw_port, "/", |r| r.status == 200);

    // All to b, all back to a, twice: each shift is seen by new requests, none fails.
    for _ in 0..2 {
        for (wa, wb, only) in [(0, 1, "b"), (1, 0, "a")] {
            dir.write("shift.yaml", &weights(wa, wb));
            eventually(
                &format!("every request reaches {only}"),
                Duration::from_secs(20),
                || async {
                    for _ in 0..10 {
                        if backend_of(gw_port, "GET", "x.test", "/", &[]).await
                            != (200, only.into())
                        {
                            return false;
                        }
                    }
                    true
                },
            )
            .await;
        }
    }
    traffic.stop_and_check().await;
}
