//! Traffic-control middlewares through the real `sluice standalone` (Goma Middleware and Route
//! manifests): rateLimit (local buckets, and Redis-backed buckets shared by two data planes,
//! surviving unrelated changes and reset by editing the middleware), accessPolicy, access,
//! userAgentBlock, bodyLimit (declared and streamed bodies) and geoBlock (a MaxMind database
//! written by the test). Every type also shows a bad configuration: the route is not served
//! while the others keep serving, and the error names the field.
//!
//! Clients are told apart by their source address: the tests connect from 127.0.0.1, 127.0.0.2
//! and 127.0.0.3 (all loopback on Linux).

#[path = "support/mmdb.rs"]
mod mmdb;
mod support;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_data_plane::shared_store::{Reply as RedisReply, SharedStore};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = UnsyncBoxBody<Bytes, Infallible>;
type From = Client<HttpConnector, Body>;

const WAIT: Duration = Duration::from_secs(15);

/// A client whose connections come from `source` (a loopback address).
fn client_from(source: &str) -> From {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source.parse().expect("an IP")));
    Client::builder(TokioExecutor::new()).build(connector)
}

fn empty() -> Body {
    Empty::new().boxed_unsync()
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// A body of these chunks, sent chunked (no Content-Length).
fn chunked(sizes: &[usize]) -> Body {
    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = sizes
        .iter()
        .map(|n| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; *n]))))
        .collect();
    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
}

async fn send(
    c: &From,
    method: &str,
    target: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{target}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {target}{path}: timed out"))
        .unwrap_or_else(|e| panic!("{method} {target}{path}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get_from(c: &From, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(
        c,
        "GET",
        &format!("127.0.0.1:{port}"),
        path,
        headers,
        empty(),
    )
    .await
}

fn middleware_yaml(name: &str, ty: &str, paths: &[&str], rule: &str) -> String {
    let paths = if paths.is_empty() {
        String::new()
    } else {
        format!("  paths: [{}]\n", paths.join(", "))
    };
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n{paths}  rule:\n{rule}"
    )
}

fn route_with(name: &str, path: &str, target: u16, middlewares: &[&str]) -> String {
    route_yaml(
        name,
        "gw",
        path,
        target,
        &format!("  middlewares: [{}]\n", middlewares.join(", ")),
    )
}

/// `sluice standalone` for `default/gw` with extra flags, once its data plane is ready.
async fn standalone_with(dir: &Path, admin: u16, extra: &[&str]) -> (Proc, u16) {
    let xds = free_port();
    let config = dir.to_str().expect("utf-8 path");
    let listen = format!("127.0.0.1:{xds}");
    let admin_port = admin.to_string();
    let mut args = vec![
        "standalone",
        "--config",
        config,
        "--xds-listen",
        &listen,
        "--admin-port",
        &admin_port,
        "--gateway",
        "default/gw",
    ];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, &[]);
    wait_ready(admin).await;
    (p, xds)
}

/// Polls until `path` answers `status` from 127.0.0.1.
async fn wait_status(port: u16, path: &str, status: u16) {
    let c = client_from("127.0.0.1");
    eventually(&format!("{path} answers {status}"), WAIT, || {
        let c = c.clone();
        async move { get_from(&c, port, path, &[]).await.status == status }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_bans_and_keeps_buckets_across_unrelated_changes() {
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-rate");
    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    let rule = |rpu: u32| {
        format!(
            "    unit: hour\n    requestsPerUnit: {rpu}\n    burst: 1\n    banAfter: 2\n    banDuration: 1h\n    keyStrategy:\n      source: header\n      name: X-Api-Key\n"
        )
    };
    dir.write(
        "rl.yaml",
        &middleware_yaml("rl", "rateLimit", &[], &rule(2)),
    );
    dir.write(
        "limited.yaml",
        &route_with("limited", "/limited", backend, &["rl"]),
    );
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other", backend, ""),
    );
    let (sluice, _) = standalone_with(dir.path(), admin, &[]).await;
    wait_status(gw, "/limited", 200).await;
    let c = client_from("127.0.0.1");
    let key = |k: &'static str| [("x-api-key", k)];

    // Capacity is requestsPerUnit + burst; then 429 with the limit headers; the second
    // refusal in a row bans the client (403).
    for _ in 0..3 {
        assert_eq!(get_from(&c, gw, "/limited", &key("a")).await.status, 200);
    }
    let limited = get_from(&c, gw, "/limited", &key("a")).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.headers.contains_key("retry-after"), "{limited:?}");
    assert_eq!(limited.headers["ratelimit-limit"], "3");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    let banned = get_from(&c, gw, "/limited", &key("a")).await;
    assert_eq!(banned.status, 403, "{banned:?}");
    assert!(banned.headers.contains_key("retry-after"));
    // Other keys have their own buckets; a request without the header is keyed by its IP.
    assert_eq!(get_from(&c, gw, "/limited", &key("b")).await.status, 200);
    assert_eq!(get_from(&c, gw, "/limited", &[]).await.status, 200);
    // Routes without the middleware are not limited.
    for _ in 0..5 {
        assert_eq!(get_from(&c, gw, "/other", &key("a")).await.status, 200);
    }

    // An unrelated change (another route edited) keeps the buckets: still banned.
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other2", backend, ""),
    );
    wait_status(gw, "/other2", 200).await;
    assert_eq!(get_from(&c, gw, "/limited", &key("a")).await.status, 403);

    // Editing the middleware's rule starts afresh.
    dir.write(
        "rl.yaml",
        &middleware_yaml("rl", "rateLimit", &[], &rule(5)),
    );
    eventually("the edited middleware resets the buckets", WAIT, || {
        let c = c.clone();
        async move { get_from(&c, gw, "/limited", &key("a")).await.status == 200 }
    })
    .await;

    // An invalid edit of the middleware keeps the last good rule (and its buckets): the route
    // stays protected. Capacity 6, one token taken above.
    dir.write(
        "rl.yaml",
        &middleware_yaml("rl", "rateLimit", &[], "    requestsPerUnit: 0\n"),
    );
    sluice.wait_log("spec.rule.requestsPerUnit", WAIT);
    for _ in 0..5 {
        assert_eq!(get_from(&c, gw, "/limited", &key("a")).await.status, 200);
    }
    assert_eq!(get_from(&c, gw, "/limited", &key("a")).await.status, 429);

    // Bad config: requestsPerUnit 0. The route naming it is not served; others are.
    let logged = sluice.log().matches("spec.rule.requestsPerUnit").count();
    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml("rl-bad", "rateLimit", &[], "    requestsPerUnit: 0\n"),
            route_with("bad", "/bad", backend, &["rl-bad"])
        ),
    );
    eventually("the bad route is reported", WAIT, || {
        let more = sluice.log().contains("Middleware default/rl-bad")
            && sluice.log().matches("spec.rule.requestsPerUnit").count() > logged;
        async move { more }
    })
    .await;
    assert_eq!(get_from(&c, gw, "/bad", &[]).await.status, 404);
    // A served route that gains a missing middleware is withdrawn, not served without it.
    dir.write(
        "limited.yaml",
        &route_with("limited", "/limited", backend, &["rl", "missing"]),
    );
    wait_status(gw, "/limited", 404).await;
    sluice.wait_log("Middleware default/missing does not exist", WAIT);
    assert_eq!(get_from(&c, gw, "/other2", &[]).await.status, 200);
    assert!(!sluice.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_in_redis_is_shared_by_two_data_planes() {
    let mut redis = support::redis::RedisServer::start();
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-redis");
    dir.write(
        "gw.yaml",
        &format!(
            "{}  server:\n    redis:\n      addr: {}\n",
            gateway_yaml("gw", gw),
            redis.address()
        ),
    );
    let rule = |rpu: u32| {
        format!(
            "    unit: hour\n    requestsPerUnit: {rpu}\n    keyStrategy:\n      source: header\n      name: X-Api-Key\n"
        )
    };
    dir.write(
        "rl.yaml",
        &middleware_yaml("rl", "rateLimit", &[], &rule(3)),
    );
    dir.write(
        "limited.yaml",
        &route_with("limited", "/limited", backend, &["rl"]),
    );
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other", backend, ""),
    );
    let (first, xds) = standalone_with(dir.path(), admin, &[]).await;
    // A second data plane of the same gateway, its listeners on 127.0.0.2.
    let admin2 = free_port();
    let second = Proc::start(
        &[
            "data-plane",
            "--gateway",
            "default/gw",
            "--xds",
            &format!("http://127.0.0.1:{xds}"),
            "--node-id",
            "second",
            "--bind",
            "127.0.0.2",
            "--admin",
            &format!("127.0.0.1:{admin2}"),
        ],
        &[],
    );
    wait_ready(admin2).await;
    let one = format!("127.0.0.1:{gw}");
    let two = format!("127.0.0.2:{gw}");
    let c = client_from("127.0.0.1");
    let call = |target: &str, k: &'static str| {
        let c = c.clone();
        let target = target.to_owned();
        async move {
            send(&c, "GET", &target, "/limited", &[("x-api-key", k)], empty())
                .await
                .status
        }
    };
    wait_status(gw, "/other", 200).await;
    eventually("the second data plane serves", WAIT, || {
        let c = c.clone();
        let two = two.clone();
        async move { send(&c, "GET", &two, "/other", &[], empty()).await.status == 200 }
    })
    .await;

    // One bucket of 3 for key "a", whichever pod answers.
    assert_eq!(call(&one, "a").await, 200);
    assert_eq!(call(&two, "a").await, 200);
    assert_eq!(call(&one, "a").await, 200);
    assert_eq!(call(&two, "a").await, 429);
    assert_eq!(call(&one, "a").await, 429);
    assert_eq!(call(&two, "b").await, 200);
    // The bucket lives in Redis under the middleware's identity.
    let store = SharedStore::new(&redis.address(), "");
    let RedisReply::Array(keys) = store
        .command(&["KEYS", "sluice:ratelimit:*"])
        .await
        .expect("redis KEYS")
    else {
        panic!("KEYS did not answer an array");
    };
    let keys: Vec<String> = keys
        .iter()
        .map(|k| match k {
            RedisReply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        keys.iter().any(
            |k| k.starts_with("sluice:ratelimit:Middleware default/rl:") && k.ends_with(":k:a")
        ),
        "{keys:?}"
    );

    // Another route edited: the shared bucket is kept.
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other2", backend, ""),
    );
    wait_status(gw, "/other2", 200).await;
    eventually("the second data plane has the edit", WAIT, || {
        let c = c.clone();
        let two = two.clone();
        async move { send(&c, "GET", &two, "/other2", &[], empty()).await.status == 200 }
    })
    .await;
    assert_eq!(call(&one, "a").await, 429);
    assert_eq!(call(&two, "a").await, 429);

    // The middleware edited: a fresh bucket on both pods.
    dir.write(
        "rl.yaml",
        &middleware_yaml("rl", "rateLimit", &[], &rule(4)),
    );
    eventually(
        "the edited middleware resets the shared bucket",
        WAIT,
        || {
            let one = one.clone();
            async move { call(&one, "a").await == 200 }
        },
    )
    .await;

    // Redis gone: requests are decided by each pod's own buckets, with a warning.
    redis.stop();
    assert_eq!(call(&one, "fresh").await, 200);
    first.wait_log("rate limit shared store failed", WAIT);
    assert_eq!(call(&two, "fresh").await, 200);
    let metrics = get(&client(), admin, "localhost", "/metrics").await.body;
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_rate_limit_store_fallbacks_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(fallbacks.is_some_and(|n| n >= 1), "{metrics}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policy_allows_or_denies_client_addresses() {
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-policy");
    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    dir.write(
        "allow.yaml",
        &middleware_yaml(
            "allow-two",
            "accessPolicy",
            &[],
            "    action: ALLOW\n    sourceRanges: [127.0.0.2/32, 10.0.0.0/8]\n",
        ),
    );
    dir.write(
        "deny.yaml",
        &middleware_yaml(
            "deny-one",
            "accessPolicy",
            &[],
            "    action: DENY\n    sourceRanges: [127.0.0.1-127.0.0.1]\n",
        ),
    );
    dir.write(
        "r1.yaml",
        &route_with("allowed", "/allowed", backend, &["allow-two"]),
    );
    dir.write(
        "r2.yaml",
        &route_with("denied", "/denied", backend, &["deny-one"]),
    );
    let (sluice, _) = standalone_with(dir.path(), admin, &[]).await;
    wait_status(gw, "/denied", 403).await;
    let one = client_from("127.0.0.1");
    let two = client_from("127.0.0.2");
    assert_eq!(get_from(&two, gw, "/allowed", &[]).await.status, 200);
    let refused = get_from(&one, gw, "/allowed", &[]).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(get_from(&two, gw, "/denied", &[]).await.status, 200);
    assert_eq!(get_from(&one, gw, "/denied", &[]).await.status, 403);
    // X-Forwarded-For from an untrusted peer does not change who the client is.
    let spoofed = get_from(&one, gw, "/allowed", &[("x-forwarded-for", "127.0.0.2")]).await;
    assert_eq!(spoofed.status, 403);

    // Bad config: the route is not served, the field is named, others keep serving.
    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml(
                "bad-policy",
                "accessPolicy",
                &[],
                "    sourceRanges: [not-an-ip]\n"
            ),
            route_with("bad", "/bad", backend, &["bad-policy"])
        ),
    );
    sluice.wait_log("spec.rule.sourceRanges[0]", WAIT);
    assert_eq!(get_from(&two, gw, "/bad", &[]).await.status, 404);
    assert_eq!(get_from(&two, gw, "/allowed", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_refuses_the_paths_in_scope_and_needs_paths() {
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-access");
    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    dir.write(
        "block.yaml",
        &middleware_yaml("block", "access", &["/admin/*"], "    statusCode: 404\n"),
    );
    dir.write("api.yaml", &route_with("api", "/api", backend, &["block"]));
    let (sluice, _) = standalone_with(dir.path(), admin, &[]).await;
    wait_status(gw, "/api/public", 200).await;
    let c = client_from("127.0.0.1");
    let blocked = get_from(&c, gw, "/api/admin/users", &[]).await;
    assert_eq!(blocked.status, 404, "{blocked:?}");
    assert_eq!(blocked.body, "access denied\n");
    assert_eq!(get_from(&c, gw, "/api/admin", &[]).await.status, 404);
    assert_eq!(get_from(&c, gw, "/api/users/admin", &[]).await.status, 404);
    // (Goma `paths` entries are also unanchored regular expressions: "/admin/*" matches any
    // path containing "/admin".)
    assert_eq!(get_from(&c, gw, "/api/users", &[]).await.status, 200);

    // Without paths it would block the whole route: refused, the route is not served.
    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml("block-all", "access", &[], "    statusCode: 403\n"),
            route_with("bad", "/bad", backend, &["block-all"])
        ),
    );
    sluice.wait_log("spec.paths: required for type access", WAIT);
    assert_eq!(get_from(&c, gw, "/bad", &[]).await.status, 404);
    assert_eq!(get_from(&c, gw, "/api/public", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_block_matches_case_sensitive_substrings() {
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-ua");
    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    dir.write(
        "ua.yaml",
        &middleware_yaml(
            "bots",
            "userAgentBlock",
            &[],
            "    userAgents: [BadBot, curl/]\n",
        ),
    );
    dir.write("r.yaml", &route_with("site", "/site", backend, &["bots"]));
    let (sluice, _) = standalone_with(dir.path(), admin, &[]).await;
    wait_status(gw, "/site", 200).await;
    let c = client_from("127.0.0.1");
    let ua = |v: &'static str| [("user-agent", v)];
    assert_eq!(
        get_from(&c, gw, "/site", &ua("Mozilla/5.0 (BadBot 1.0)"))
            .await
            .status,
        403
    );
    assert_eq!(
        get_from(&c, gw, "/site", &ua("curl/8.5.0")).await.status,
        403
    );
    assert_eq!(
        get_from(&c, gw, "/site", &ua("Mozilla/5.0 badbot"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_from(&c, gw, "/site", &ua("Mozilla/5.0")).await.status,
        200
    );

    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml("no-agents", "userAgentBlock", &[], "    userAgents: []\n"),
            route_with("bad", "/bad", backend, &["no-agents"])
        ),
    );
    sluice.wait_log("spec.rule.userAgents", WAIT);
    assert_eq!(get_from(&c, gw, "/bad", &[]).await.status, 404);
    assert_eq!(get_from(&c, gw, "/site", &[]).await.status, 200);
}

/// What a recording backend saw: one entry per request, the body length it read in full, or
/// None when the body broke off.
type Bodies = Arc<Mutex<Vec<Option<usize>>>>;

async fn recording_backend() -> (u16, Bodies) {
    let seen: Bodies = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                        log.lock().expect("lock").push(body.as_ref().ok().copied());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            body.map_or(0, |n| n).to_string(),
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

/// One response read off a raw connection (its head and a Content-Length body), which stays open.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().expect("a length"));
            if got.len() >= end + 4 + length {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_refuses_declared_and_streamed_bodies_over_the_limit() {
    let (backend, seen) = recording_backend().await;
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-body");
    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    dir.write(
        "limit.yaml",
        &middleware_yaml("small", "bodyLimit", &[], "    limit: 1Ki\n"),
    );
    dir.write(
        "r.yaml",
        &route_with("upload", "/upload", backend, &["small"]),
    );
    let (sluice, _) = standalone_with(dir.path(), admin, &[]).await;
    wait_status(gw, "/upload", 200).await;
    let c = client_from("127.0.0.1");
    let target = format!("127.0.0.1:{gw}");
    seen.lock().expect("lock").clear();

    // Within the limit, declared or streamed: forwarded whole.
    let ok = send(&c, "POST", &target, "/upload", &[], full(vec![b'x'; 1024])).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "1024"));
    let ok = send(&c, "POST", &target, "/upload", &[], chunked(&[500, 500])).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "1000"));

    // A declared length over the limit: 413 before the upstream is contacted.
    let before = seen.lock().expect("lock").len();
    let refused = send(&c, "POST", &target, "/upload", &[], full(vec![b'x'; 2048])).await;
    assert_eq!(refused.status, 413, "{refused:?}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "upstream contacted"
    );

    // A streamed body passing the limit: the upstream request is aborted (the backend never
    // gets a whole body) and the client gets 413.
    let refused = send(
        &c,
        "POST",
        &target,
        "/upload",
        &[],
        chunked(&[800, 800, 800]),
    )
    .await;
    assert_eq!(refused.status, 413, "{refused:?}");
    let seen_now = seen.lock().expect("lock").clone();
    assert!(
        seen_now[before..]
            .iter()
            .all(|b| b.is_none_or(|n| n <= 1024)),
        "a body over the limit reached the backend: {seen_now:?}"
    );

    // On the wire. A refused body still on its way is read and dropped after the 413, and the
    // connection serves the next request.
    let mut conn = TcpStream::connect(("127.0.0.1", gw))
        .await
        .expect("connect");
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2048\r\n\r\n")
        .await
        .expect("write");
    let refused = read_response(&mut conn).await;
    assert!(
        refused.starts_with("HTTP/1.1 413") && !refused.contains("connection: close"),
        "{refused}"
    );
    let mut rest = vec![b'x'; 2048];
    rest.extend_from_slice(b"GET /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    conn.write_all(&rest).await.expect("write");
    let next = closed_by_server(&mut conn, WAIT).await;
    let next = String::from_utf8_lossy(&next);
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    // One too long to drop: the 413 says the connection closes, and arrives whole although the
    // client is still sending (no reset).
    let mut conn = TcpStream::connect(("127.0.0.1", gw))
        .await
        .expect("connect");
    let head = b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10485760\r\n\r\n";
    conn.write_all(head).await.expect("write");
    let (mut read, mut write) = conn.into_split();
    let sender = tokio::spawn(async move {
        let block = vec![b'x'; 64 * 1024];
        while write.write_all(&block).await.is_ok() {}
    });
    let mut refused = Vec::new();
    tokio::time::timeout(WAIT, read.read_to_end(&mut refused))
        .await
        .expect("closed in time")
        .expect("read, not reset");
    let refused = String::from_utf8_lossy(&refused);
    assert!(
        refused.starts_with("HTTP/1.1 413") && refused.contains("connection: close"),
        "{refused}"
    );
    sender.await.expect("sender");

    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml("huge", "bodyLimit", &[], "    limit: ten megs\n"),
            route_with("bad", "/bad", backend, &["huge"])
        ),
    );
    sluice.wait_log("spec.rule.limit", WAIT);
    assert_eq!(get_from(&c, gw, "/bad", &[]).await.status, 404);
    assert_eq!(get_from(&c, gw, "/upload", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_block_by_country_with_a_fail_mode_and_a_country_header() {
    let (_echo, backend) = echo("a");
    let gw = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-geo");
    let db_dir = TempDir::new("mw-geo-db");
    let db = db_dir.path().join("countries.mmdb");
    std::fs::write(
        &db,
        mmdb::country_db(&[
            ("127.0.0.1".parse().expect("ip"), 32, "FR"),
            ("127.0.0.2".parse().expect("ip"), 32, "US"),
        ]),
    )
    .expect("write the database");
    // The written database reads back as intended.
    let geo = sluice_data_plane::geoip::GeoIp::open(&db).expect("a valid database");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(geo.country(ip("127.0.0.1")), Some(*b"FR"));
    assert_eq!(geo.country(ip("127.0.0.2")), Some(*b"US"));
    assert_eq!(geo.country(ip("127.0.0.3")), None);

    dir.write("gw.yaml", &gateway_yaml("gw", gw));
    dir.write(
        "fr.yaml",
        &middleware_yaml(
            "only-fr",
            "geoBlock",
            &[],
            "    action: ALLOW\n    countries: [fr]\n    allowUnknown: false\n    statusCode: 451\n    message: not here\n    addCountryHeader: X-Country\n",
        ),
    );
    dir.write(
        "us.yaml",
        &middleware_yaml(
            "no-us",
            "geoBlock",
            &[],
            "    action: DENY\n    countries: [US]\n",
        ),
    );
    dir.write("r1.yaml", &route_with("fr", "/fr", backend, &["only-fr"]));
    dir.write("r2.yaml", &route_with("us", "/us", backend, &["no-us"]));
    let db_arg = db.to_str().expect("utf-8 path");
    let (sluice, _) = standalone_with(dir.path(), admin, &["--geoip-database", db_arg]).await;
    wait_status(gw, "/fr", 200).await;
    let france = client_from("127.0.0.1");
    let usa = client_from("127.0.0.2");
    let unknown = client_from("127.0.0.3");

    // ALLOW [FR], unknown refused (fail closed); the country reaches the upstream, and a
    // client's own value of the header does not.
    let ok = get_from(&france, gw, "/fr", &[("x-country", "ZZ")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["headers"]["x-country"], "FR", "{}", ok.body);
    let refused = get_from(&usa, gw, "/fr", &[]).await;
    assert_eq!((refused.status, refused.body.as_str()), (451, "not here"));
    assert_eq!(get_from(&unknown, gw, "/fr", &[]).await.status, 451);
    // DENY [US], unknown let through (allowUnknown defaults to true).
    let refused = get_from(&usa, gw, "/us", &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, "Access denied from your region");
    assert_eq!(get_from(&france, gw, "/us", &[]).await.status, 200);
    assert_eq!(get_from(&unknown, gw, "/us", &[]).await.status, 200);

    dir.write(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            middleware_yaml(
                "bad-geo",
                "geoBlock",
                &[],
                "    action: ALLOW\n    countries: [FRA]\n"
            ),
            route_with("bad", "/bad", backend, &["bad-geo"])
        ),
    );
    sluice.wait_log("spec.rule.countries[0]", WAIT);
    assert_eq!(get_from(&france, gw, "/bad", &[]).await.status, 404);
    assert_eq!(get_from(&france, gw, "/fr", &[]).await.status, 200);

    // A database that cannot be read stops the data plane before it serves.
    let broken = Proc::start(
        &[
            "standalone",
            "--config",
            dir.path().to_str().expect("utf-8 path"),
            "--xds-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-port",
            &free_port().to_string(),
            "--geoip-database",
            "/nonexistent/countries.mmdb",
        ],
        &[],
    );
    broken.wait_log("GeoIP database /nonexistent/countries.mmdb", WAIT);
}
