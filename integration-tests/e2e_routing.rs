//! The quick start as a user meets it: `sluice standalone --demo-backends` on the shipped
//! examples, checked with real HTTP requests.

mod support;

use std::time::Duration;
use support::*;

fn examples_dir() -> String {
    format!("{}/examples", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_serves_the_examples() {
    // The README's command, with the shipped defaults (ports 8080/8081, 9101-9105, 9901-9902, 18000).
    let dir = examples_dir();
    let _sluice = Proc::start(&["standalone", "--config", &dir, "--demo-backends"], &[]);
    wait_ready(9901).await;
    wait_ready(9902).await;
    let c = client();

    // Host routing + target + methods.
    let r = get(&c, 8080, "api.example.com", "/users?id=7").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), "127.0.0.1:9101");
    assert_eq!(r.json()["path"], "/users?id=7");
    let headers = &r.json()["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"], "api.example.com");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["host"], "api.example.com",
        "forwardHostHeaders defaults to true"
    );

    let r = request(&c, "DELETE", 8080, "api.example.com", "/users", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 405, "{r:?}");
    let allow = r
        .headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );

    // Weighted backends with rewrite: /api/orders -> /orders on v1 (80) or v2 (20), never the canary.
    let mut v1 = 0;
    let mut v2 = 0;
    for _ in 0..200 {
        let r = get(&c, 8080, "api.example.com", "/api/orders").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], "/orders");
        match r.backend().as_str() {
            "127.0.0.1:9101" => v1 += 1,
            "127.0.0.1:9102" => v2 += 1,
            other => panic!("unexpected backend {other}"),
        }
    }
    assert!(
        (130..=190).contains(&v1) && v1 + v2 == 200,
        "80/20 split: v1={v1} v2={v2}"
    );

    // The canary is pinned by X-Canary: true and only then.
    for _ in 0..20 {
        let r = request(
            &c,
            "GET",
            8080,
            "api.example.com",
            "/api/orders",
            &[("x-canary", "true")],
        )
        .await
        .unwrap();
        assert_eq!(r.backend(), "127.0.0.1:9103");
    }
    let r = request(
        &c,
        "GET",
        8080,
        "api.example.com",
        "/api",
        &[("x-canary", "false")],
    )
    .await
    .unwrap();
    assert_ne!(r.backend(), "127.0.0.1:9103");
    assert_eq!(r.json()["path"], "/");

    // Segment-aware prefix: /apix is not under /api, so the `api` route (path /) serves it unrewritten.
    let r = get(&c, 8080, "api.example.com", "/apix").await;
    assert_eq!(
        (r.backend().as_str(), r.json()["path"].as_str()),
        ("127.0.0.1:9101", Some("/apix"))
    );

    // Catch-all route for other hosts; priority 10 beats it for /docs on *.example.com.
    let r = get(&c, 8080, "www.example.org", "/docs").await;
    assert_eq!(r.backend(), "127.0.0.1:9104");
    let r = get(&c, 8080, "www.example.com", "/docs/intro").await;
    assert_eq!(r.backend(), "127.0.0.1:9102");
    let r = get(&c, 8080, "example.com", "/docs").await;
    assert_eq!(
        r.backend(),
        "127.0.0.1:9104",
        "*.example.com needs a subdomain"
    );

    // Maintenance answers directly.
    let r = get(&c, 8080, "www.example.org", "/legacy/page").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "maintenance");
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );

    // The internal gateway has its own data plane and routes; the public one never sees them.
    let r = get(&c, 8081, "api.example.com", "/anything").await;
    assert_eq!(r.backend(), "127.0.0.1:9105");
    let r = get(&c, 8080, "internal.local", "/").await;
    assert_eq!(r.backend(), "127.0.0.1:9104");

    // HTTP/2 cleartext (prior knowledge) works on the same listener.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::builder()
        .uri("http://api.example.com:8080/users")
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut addr_req = req;
    *addr_req.uri_mut() = "http://127.0.0.1:8080/users".parse().unwrap();
    addr_req
        .headers_mut()
        .insert("host", http::HeaderValue::from_static("api.example.com"));
    let resp = tokio::time::timeout(Duration::from_secs(5), h2.request(addr_req))
        .await
        .expect("h2 request timed out")
        .expect("h2 request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_problems_with_file_object_and_field() {
    let dir = TempDir::new("validate");
    dir.write("ok.yaml", &gateway_yaml("gw", 8080));
    dir.write(
        "bad.yaml",
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: broken\nspec:\n  gateways: [gw]\n  path: /x\n  tagret: http://127.0.0.1:1\n",
    );
    // A middleware whose rule its type cannot use is an error, not a middleware skipped.
    dir.write(
        "auth.yaml",
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: jwt\nspec:\n  type: jwtAuth\n  paths: [/]\n  rule:\n    issuer: https://idp\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["validate", dir.path().to_str().unwrap()])
        .output()
        .expect("run validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bad.yaml") && text.contains("tagret"),
        "{text}"
    );
    assert!(
        text.contains("auth.yaml: Middleware default/jwt: spec.rule.secret: required for type jwt"),
        "{text}"
    );

    let ok = std::process::Command::new(BIN)
        .args(["validate", &examples_dir()])
        .output()
        .expect("run validate");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goma_backend_matching_and_route_options_through_the_binary() {
    let (_s, stable) = echo("stable");
    let (_c, canary) = echo("canary");
    let (_b, beta) = echo("beta");
    let gw_port = free_port();
    let admin = free_port();
    let dir = TempDir::new("goma-match");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    dir.write(
        "routes.yaml",
        &format!(
            r#"apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: shop}}
spec:
  gateways: [gw]
  path: /shop
  backends:
    - endpoint: http://127.0.0.1:{stable}
    - endpoint: http://127.0.0.1:{canary}
      exclusive: true
      match:
        - {{source: cookie, name: track, operator: in, value: "canary, early"}}
    - endpoint: http://127.0.0.1:{beta}
      exclusive: true
      priority: 5
      match:
        - {{source: query, name: version, operator: regex, value: "^2\\.[0-9]+$"}}
        - {{source: header, name: X-Team, operator: not_equals, value: ops}}
    - endpoint: http://127.0.0.1:{canary}
      exclusive: true
      priority: 1
      match:
        - {{source: query, name: version, operator: starts_with, value: "2."}}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: internal-only}}
spec:
  gateways: [gw]
  path: /internal
  backends:
    - endpoint: http://127.0.0.1:{stable}
    - endpoint: http://127.0.0.1:{beta}
      exclusive: true
      match:
        - {{source: ip, operator: equals, value: 127.0.0.1}}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: rewrite-host}}
spec:
  gateways: [gw]
  path: /own-host
  target: http://127.0.0.1:{stable}
  security:
    forwardHostHeaders: false
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: off}}
spec:
  gateways: [gw]
  path: /off
  enabled: false
  target: http://127.0.0.1:{stable}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: broad-but-first}}
spec:
  gateways: [gw]
  path: /
  priority: 100
  hosts: [priority.test]
  target: http://127.0.0.1:{beta}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {{name: narrow}}
spec:
  gateways: [gw]
  path: /narrow/path
  hosts: [priority.test]
  target: http://127.0.0.1:{canary}
"#
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", admin).await;
    let c = client();
    let via = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move {
            request(&c, "GET", gw_port, "shop.test", path, headers)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .backend()
        }
    };

    // Unmatched traffic never reaches exclusive backends.
    for _ in 0..10 {
        assert_eq!(via("/shop", &[]).await, "stable");
    }
    // cookie `in` list.
    assert_eq!(
        via("/shop", &[("cookie", "a=1; track=early")]).await,
        "canary"
    );
    assert_eq!(via("/shop", &[("cookie", "track=late")]).await, "stable");
    // Two exclusive matches: the higher priority wins; all conditions of a backend must hold.
    assert_eq!(via("/shop?version=2.3", &[]).await, "beta");
    assert_eq!(
        via("/shop?version=2.3", &[("x-team", "ops")]).await,
        "canary"
    );
    assert_eq!(
        via("/shop?version=2.x", &[]).await,
        "canary",
        "regex fails, starts_with holds"
    );
    assert_eq!(via("/shop?version=3.0", &[]).await, "stable");
    // Client IP source.
    assert_eq!(via("/internal", &[]).await, "beta");

    // forwardHostHeaders: false sends the backend's own authority as Host.
    let r = get(&c, gw_port, "shop.test", "/own-host").await;
    assert_eq!(r.json()["host"], format!("127.0.0.1:{stable}"));
    assert_eq!(r.json()["headers"]["x-forwarded-host"], "shop.test");

    // A disabled route is not served.
    assert_eq!(get(&c, gw_port, "shop.test", "/off").await.status, 404);

    // Priority beats path length (higher first, as the CRD docs say).
    let r = get(&c, gw_port, "priority.test", "/narrow/path").await;
    assert_eq!(r.backend(), "beta");
}

/// `spec.server.networking.transport.maxConnsPerHost` caps upstream connections per endpoint:
/// concurrent requests queue for the one connection instead of opening more, and raising the
/// cap live lets them spread out again. The echo backend reports the connection's source port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_limit_from_the_gateway() {
    let (_backend, backend_port) = echo("pooled");
    let port = free_port();
    let admin = free_port();
    let dir = TempDir::new("pool-limit");
    let gateway = |max: u32| {
        format!(
            "{}  server:\n    networking:\n      dnsCache: {{ttl: 30}}\n      transport: {{maxConnsPerHost: {max}}}\n",
            gateway_yaml("gw", port)
        )
    };
    dir.write("gateway.yaml", &gateway(1));
    // A host name rather than an IP, so the caching resolver is on the path.
    dir.write(
        "route.yaml",
        &route_yaml("slow", "gw", "/", backend_port, "").replace("127.0.0.1", "localhost"),
    );
    let (_sluice, _xds) = standalone(dir.path(), "gw", admin).await;
    let c = client();

    async fn burst(c: &HttpClient, port: u16) -> std::collections::BTreeSet<String> {
        let replies = futures_burst(c, port).await;
        replies
            .iter()
            .map(|r| {
                assert_eq!(r.status, 200, "{r:?}");
                r.json()["peer"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }
    async fn futures_burst(c: &HttpClient, port: u16) -> Vec<Reply> {
        let calls = (0..4).map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                request(
                    &c,
                    "GET",
                    port,
                    "pool.example.com",
                    "/",
                    &[("x-echo-delay-ms", "150")],
                )
                .await
                .expect("request")
            })
        });
        let mut out = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            out.push(call.await.expect("task"));
        }
        out
    }

    let peers = burst(&c, port).await;
    assert_eq!(peers.len(), 1, "one connection at most: {peers:?}");

    dir.write("gateway.yaml", &gateway(4));
    eventually(
        "a raised limit opens more connections",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move { burst(&c, port).await.len() > 1 }
        },
    )
    .await;
}
