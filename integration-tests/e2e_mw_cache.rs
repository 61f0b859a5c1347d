//! Goma `httpCache` and `errorInterceptor` middlewares through the real binary, configured by
//! Middleware + Route manifests: hits, variants, credentials, invalidation, staleness, state
//! kept across unrelated changes and reset by a rule change, a Redis cache shared by two data
//! planes (real redis-server), replaced error pages (upstream and gateway answers), and bad
//! rules that withdraw only their route.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::redis::RedisServer;
use support::*;
use tokio::net::TcpListener;

/// Requests the origin has answered.
type Count = Arc<AtomicUsize>;

/// The origin: answers by path, numbering every answer so a cached one is recognisable.
/// `/nostore`, `/private`, `/public`, `/vary` (Vary: Accept-Language), `/short` (max-age=1),
/// `/setcookie`, `/err500` (text/html), `/sse500` (an event stream), otherwise max-age=60.
async fn origin() -> (u16, Count) {
    let count: Count = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = n.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seq = n.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { Ok::<_, Infallible>(answer(&req, seq)) }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (port, count)
}

fn answer(req: &http::Request<hyper::body::Incoming>, seq: usize) -> http::Response<Full<Bytes>> {
    let path = req.uri().path();
    let lang = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let body = format!("origin #{seq} {} {} lang={lang}\n", req.method(), req.uri());
    let mut resp = http::Response::builder();
    let (status, cc) = match path.rsplit('/').next().unwrap_or_default() {
        "nostore" => (200, "no-store"),
        "private" => (200, "private, max-age=60"),
        "public" => (200, "public, max-age=60"),
        "short" => (200, "max-age=1"),
        "err500" => (500, "no-store"),
        "sse500" => (500, "no-store"),
        _ => (200, "max-age=60"),
    };
    if path.ends_with("/vary") {
        resp = resp.header("vary", "Accept-Language");
    }
    if path.ends_with("/setcookie") {
        resp = resp.header("set-cookie", "session=abc");
    }
    let body = match path.rsplit('/').next().unwrap_or_default() {
        "err500" => {
            resp = resp.header("content-type", "text/html");
            "<h1>upstream broke</h1>".to_owned()
        }
        "sse500" => {
            resp = resp.header("content-type", "text/event-stream");
            "data: upstream event\n\n".to_owned()
        }
        _ => {
            resp = resp.header("content-type", "text/plain");
            body
        }
    };
    resp.status(status)
        .header("cache-control", cc)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A request to `ip:port` (data planes of one gateway bind different loopback addresses).
async fn send(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    request_at(&client(), method, ip, port, "x", path, headers).await
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    send("127.0.0.1", port, "GET", path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn cache_status(r: &Reply) -> &str {
    r.headers
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// A data plane of `default/gw` whose listeners bind `ip`.
fn replica(xds: u16, admin: u16, ip: &str) -> Proc {
    Proc::start(
        &[
            "data-plane",
            "--gateway",
            "default/gw",
            "--xds",
            &format!("http://127.0.0.1:{xds}"),
            "--bind",
            ip,
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        &[],
    )
}

fn middleware_yaml(name: &str, ty: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n  rule:\n{rule}"
    )
}

/// Waits until `GET path` answers `status`.
async fn wait_status(port: u16, path: &str, status: u16) {
    let what = format!("GET {path} answers {status}");
    eventually(&what, Duration::from_secs(10), || async move {
        matches!(send("127.0.0.1", port, "GET", path, &[]).await, Ok(r) if r.status == status)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cache_in_memory_hits_varies_invalidates_and_keeps_its_state() {
    let (origin_port, count) = origin().await;
    let gw_port = free_port();
    let dir = TempDir::new("mw-cache");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = "    maxTtl: 60\n    maxStale: 30\n    includeQueryInKey: true\n";
    dir.write("mw.yaml", &middleware_yaml("cache", "httpCache", rule));
    dir.write(
        "c.yaml",
        &route_yaml("c", "gw", "/c", origin_port, "  middlewares: [cache]\n"),
    );
    let (sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_status(gw_port, "/c/warmup", 200).await;

    // A miss goes upstream, the next request is answered from the cache.
    let first = get(gw_port, "/c/a", &[]).await;
    assert_eq!(cache_status(&first), "MISS", "{first:?}");
    let before = count.load(Ordering::SeqCst);
    let hit = get(gw_port, "/c/a", &[]).await;
    assert_eq!(cache_status(&hit), "HIT", "{hit:?}");
    assert_eq!(hit.headers["x-goma-cache"], "HIT");
    assert_eq!(hit.body, first.body);
    assert!(hit.headers.contains_key("age"), "{hit:?}");
    assert_eq!(hit.headers["content-length"], first.body.len().to_string());
    // HEAD is answered from the GET entry.
    let head = send("127.0.0.1", gw_port, "HEAD", "/c/a", &[])
        .await
        .unwrap();
    assert_eq!((head.status, cache_status(&head)), (200, "HIT"));
    assert_eq!(head.headers["content-length"], first.body.len().to_string());
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "hits never reach the origin"
    );

    // The query is part of the key (in a normalised order).
    assert_eq!(
        cache_status(&get(gw_port, "/c/a?b=2&a=1", &[]).await),
        "MISS"
    );
    assert_eq!(
        cache_status(&get(gw_port, "/c/a?a=1&b=2", &[]).await),
        "HIT"
    );

    // Vary: one variant per Accept-Language value.
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(cache_status(&get(gw_port, "/c/vary", &en).await), "MISS");
    let en_hit = get(gw_port, "/c/vary", &en).await;
    assert_eq!(cache_status(&en_hit), "HIT");
    assert!(en_hit.body.contains("lang=en"), "{en_hit:?}");
    let fr_miss = get(gw_port, "/c/vary", &fr).await;
    assert_eq!(cache_status(&fr_miss), "MISS");
    assert!(fr_miss.body.contains("lang=fr"), "{fr_miss:?}");
    assert_eq!(cache_status(&get(gw_port, "/c/vary", &fr).await), "HIT");
    assert!(get(gw_port, "/c/vary", &en).await.body.contains("lang=en"));

    // Rejections: what a shared cache must not store or serve.
    for path in ["/c/nostore", "/c/private", "/c/setcookie"] {
        for _ in 0..2 {
            let r = get(gw_port, path, &[]).await;
            assert_eq!((r.status, cache_status(&r)), (200, "MISS"), "{path}: {r:?}");
        }
    }
    // Credentials: not answered from an entry stored for anyone, and not stored for others...
    let auth = [("authorization", "Basic dTpw")];
    let with_auth = get(gw_port, "/c/a", &auth).await;
    assert_eq!(cache_status(&with_auth), "MISS");
    assert_ne!(with_auth.body, first.body);
    assert_eq!(cache_status(&get(gw_port, "/c/a", &auth).await), "MISS");
    // ...unless the response says it may be shared.
    let cookie = [("cookie", "session=1")];
    assert_eq!(
        cache_status(&get(gw_port, "/c/public", &cookie).await),
        "MISS"
    );
    assert_eq!(
        cache_status(&get(gw_port, "/c/public", &cookie).await),
        "HIT"
    );
    // The request's own directives.
    let no_store = get(gw_port, "/c/a", &[("cache-control", "no-store")]).await;
    assert_eq!(cache_status(&no_store), "BYPASS");
    let refetched = get(gw_port, "/c/a", &[("cache-control", "no-cache")]).await;
    assert_eq!(cache_status(&refetched), "MISS");
    assert_ne!(refetched.body, first.body, "no-cache refetches");
    let after = get(gw_port, "/c/a", &[]).await;
    assert_eq!(
        (cache_status(&after), &after.body),
        ("HIT", &refetched.body),
        "and stores the fresh answer"
    );

    // An unsafe method answered 2xx invalidates the key.
    let post = send("127.0.0.1", gw_port, "POST", "/c/a", &[])
        .await
        .unwrap();
    assert_eq!((post.status, cache_status(&post)), (200, "BYPASS"));
    assert_eq!(cache_status(&get(gw_port, "/c/a", &[]).await), "MISS");
    assert_eq!(cache_status(&get(gw_port, "/c/a", &[]).await), "HIT");

    // Stale entries are served for maxStale, unless the request accepts less staleness.
    assert_eq!(cache_status(&get(gw_port, "/c/short", &[]).await), "MISS");
    eventually("the entry turns stale", Duration::from_secs(5), || async {
        cache_status(&get(gw_port, "/c/short", &[]).await) == "STALE"
    })
    .await;
    let strict = get(gw_port, "/c/short", &[("cache-control", "max-stale=0")]).await;
    assert_eq!(cache_status(&strict), "MISS");

    // State survives an unrelated change: another route added and served.
    let cached = get(gw_port, "/c/a", &[]).await;
    assert_eq!(cache_status(&cached), "HIT");
    let (_other_origin, other_port) = echo("other");
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other", other_port, ""),
    );
    wait_status(gw_port, "/other", 200).await;
    let still = get(gw_port, "/c/a", &[]).await;
    assert_eq!((cache_status(&still), &still.body), ("HIT", &cached.body));
    // A changed rule starts from an empty cache.
    let rule = "    maxTtl: 61\n    maxStale: 30\n    includeQueryInKey: true\n";
    dir.write("mw.yaml", &middleware_yaml("cache", "httpCache", rule));
    eventually(
        "the changed rule applies",
        Duration::from_secs(10),
        || async { cache_status(&get(gw_port, "/c/a", &[]).await) == "MISS" },
    )
    .await;
    assert!(!sluice.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cache_bounds_entries_and_hides_its_header_when_asked() {
    let (origin_port, count) = origin().await;
    let gw_port = free_port();
    let dir = TempDir::new("mw-cache-bounds");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    // Entries up to a quarter of 1Ki: the origin's small answers fit, long ones do not.
    let rule = "    memoryLimit: 1Ki\n    disableCacheStatusHeader: true\n    excludedResponseCodes: [\"400-499\"]\n";
    dir.write("mw.yaml", &middleware_yaml("cache", "httpCache", rule));
    dir.write(
        "c.yaml",
        &route_yaml("c", "gw", "/c", origin_port, "  middlewares: [cache]\n"),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_status(gw_port, "/c/warmup", 200).await;

    let first = get(gw_port, "/c/small", &[]).await;
    let second = get(gw_port, "/c/small", &[]).await;
    assert_eq!(second.body, first.body, "cached");
    assert!(!second.headers.contains_key("x-cache-status"));
    assert!(!second.headers.contains_key("x-goma-cache"));
    // Over the entry bound: served, never stored.
    let long = format!("/c/{}", "l".repeat(400));
    let a = get(gw_port, &long, &[]).await;
    let b = get(gw_port, &long, &[]).await;
    assert_eq!(a.status, 200);
    assert_ne!(a.body, b.body, "too large to keep");
    let before = count.load(Ordering::SeqCst);
    get(gw_port, "/c/small", &[]).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "small entry still cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cache_bad_rule_withdraws_only_its_route() {
    let (origin_port, _count) = origin().await;
    let gw_port = free_port();
    let dir = TempDir::new("mw-cache-bad");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    dir.write(
        "mw.yaml",
        &middleware_yaml("cache", "httpCache", "    memoryLimit: lots\n"),
    );
    dir.write(
        "c.yaml",
        &route_yaml("c", "gw", "/c", origin_port, "  middlewares: [cache]\n"),
    );
    dir.write(
        "open.yaml",
        &route_yaml("open", "gw", "/open", origin_port, ""),
    );
    let (sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_status(gw_port, "/open/x", 200).await;
    // Not served without its cache (no route: 404), with the field named.
    assert_eq!(get(gw_port, "/c/a", &[]).await.status, 404);
    sluice.wait_log("spec.rule.memoryLimit", Duration::from_secs(5));
    assert!(sluice.log().contains("Route default/c"), "{}", sluice.log());
    // Fixed: served, cached.
    dir.write(
        "mw.yaml",
        &middleware_yaml("cache", "httpCache", "    memoryLimit: 1Mi\n"),
    );
    wait_status(gw_port, "/c/a", 200).await;
    let cached = get(gw_port, "/c/a", &[]).await;
    assert_eq!(cache_status(&cached), "HIT");
    // Broken again: the last good version keeps serving, still behind its cache.
    dir.write(
        "mw.yaml",
        &middleware_yaml(
            "cache",
            "httpCache",
            "    excludedResponseCodes: [\"599-500\"]\n",
        ),
    );
    eventually(
        "the bad edit is reported",
        Duration::from_secs(5),
        || async {
            sluice
                .log()
                .matches("spec.rule.excludedResponseCodes[0]")
                .count()
                > 0
        },
    )
    .await;
    let still = get(gw_port, "/c/a", &[]).await;
    assert_eq!((cache_status(&still), &still.body), ("HIT", &cached.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cache_in_redis_is_shared_by_two_data_planes() {
    let mut redis = RedisServer::start();
    let (origin_port, count) = origin().await;
    let gw_port = free_port();
    let xds = free_port();
    let (admin_a, admin_b) = (free_port(), free_port());
    let dir = TempDir::new("mw-cache-redis");
    dir.write(
        "gw.yaml",
        &format!(
            "{}  server:\n    redis:\n      addr: {}\n",
            gateway_yaml("gw", gw_port),
            redis.address()
        ),
    );
    dir.write(
        "mw.yaml",
        &middleware_yaml("cache", "httpCache", "    maxTtl: 60\n"),
    );
    dir.write(
        "c.yaml",
        &route_yaml("c", "gw", "/c", origin_port, "  middlewares: [cache]\n"),
    );
    let _cp = control_plane(dir.path(), xds, &[]);
    // Two replicas of one gateway: same port, different loopback addresses.
    let _a = replica(xds, admin_a, "127.0.0.1");
    let _b = replica(xds, admin_b, "127.0.0.2");
    wait_ready(admin_a).await;
    wait_ready(admin_b).await;
    for ip in ["127.0.0.1", "127.0.0.2"] {
        eventually(
            "both replicas serve",
            Duration::from_secs(10),
            || async move {
                matches!(send(ip, gw_port, "GET", "/c/warmup", &[]).await, Ok(r) if r.status == 200)
            },
        )
        .await;
    }

    // Replica A stores, replica B answers from the same entry.
    let miss = send("127.0.0.1", gw_port, "GET", "/c/shared", &[])
        .await
        .unwrap();
    assert_eq!(cache_status(&miss), "MISS");
    eventually(
        "the entry reaches redis",
        Duration::from_secs(5),
        || async {
            redis
                .cli(&["--scan", "--pattern", "sluice:cache:*"])
                .lines()
                .count()
                >= 2
        },
    )
    .await;
    let before = count.load(Ordering::SeqCst);
    let hit = send("127.0.0.2", gw_port, "GET", "/c/shared", &[])
        .await
        .unwrap();
    assert_eq!((cache_status(&hit), &hit.body), ("HIT", &miss.body));
    assert_eq!(count.load(Ordering::SeqCst), before);
    let ttl: i64 = redis
        .cli(&["--scan", "--pattern", "sluice:cache:*"])
        .lines()
        .map(|k| redis.cli(&["PTTL", k]).trim().parse::<i64>().unwrap_or(-2))
        .min()
        .unwrap_or(-2);
    assert!(
        ttl > 0 && ttl <= 60_000,
        "entries expire with their freshness: {ttl}"
    );

    // A write through B invalidates the entry for A.
    let put = send("127.0.0.2", gw_port, "PUT", "/c/shared", &[])
        .await
        .unwrap();
    assert_eq!(put.status, 200);
    let after = send("127.0.0.1", gw_port, "GET", "/c/shared", &[])
        .await
        .unwrap();
    assert_eq!(cache_status(&after), "MISS");

    // Redis gone: the replicas keep serving, from their own memory.
    redis.stop();
    let down = send("127.0.0.1", gw_port, "GET", "/c/down", &[])
        .await
        .unwrap();
    assert_eq!((down.status, cache_status(&down)), (200, "MISS"));
    let again = send("127.0.0.1", gw_port, "GET", "/c/down", &[])
        .await
        .unwrap();
    assert_eq!((again.status, cache_status(&again)), (200, "HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_interceptor_replaces_listed_pages_and_leaves_the_rest() {
    let (origin_port, _count) = origin().await;
    let gw_port = free_port();
    let dir = TempDir::new("mw-errors");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = "    enabled: true\n    contentType: application/json\n    errors:\n      - statusCode: 500\n        body: '{\"error\":\"internal\"}'\n      - statusCode: 502\n        body: '{\"error\":\"bad gateway\"}'\n";
    dir.write(
        "mw.yaml",
        &middleware_yaml("errors", "errorInterceptor", rule),
    );
    dir.write(
        "e.yaml",
        &route_yaml("e", "gw", "/e", origin_port, "  middlewares: [errors]\n"),
    );
    // Nothing listens there: the gateway's own 502 is replaced too.
    dir.write(
        "down.yaml",
        &route_yaml(
            "down",
            "gw",
            "/down",
            free_port(),
            "  middlewares: [errors]\n",
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_status(gw_port, "/e/ok", 200).await;

    let replaced = get(gw_port, "/e/err500", &[]).await;
    assert_eq!(replaced.status, 500);
    assert_eq!(replaced.body, "{\"error\":\"internal\"}");
    assert_eq!(replaced.headers["content-type"], "application/json");
    assert_eq!(
        replaced.headers["content-length"],
        replaced.body.len().to_string()
    );
    let gateway = get(gw_port, "/down/x", &[]).await;
    assert_eq!(
        (gateway.status, gateway.body.as_str()),
        (502, "{\"error\":\"bad gateway\"}")
    );
    // Left alone: statuses not listed, and event streams.
    let ok = get(gw_port, "/e/ok", &[]).await;
    assert!(ok.body.starts_with("origin #"), "{ok:?}");
    let sse = get(gw_port, "/e/sse500", &[]).await;
    assert_eq!(
        (sse.status, sse.body.as_str()),
        (500, "data: upstream event\n\n")
    );
    assert_eq!(sse.headers["content-type"], "text/event-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_interceptor_with_a_page_file_withdraws_only_its_route() {
    let (origin_port, _count) = origin().await;
    let gw_port = free_port();
    let dir = TempDir::new("mw-errors-bad");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = "    enabled: true\n    errors:\n      - statusCode: 500\n        file: /etc/goma/500.html\n";
    dir.write(
        "mw.yaml",
        &middleware_yaml("errors", "errorInterceptor", rule),
    );
    dir.write(
        "e.yaml",
        &route_yaml("e", "gw", "/e", origin_port, "  middlewares: [errors]\n"),
    );
    dir.write(
        "open.yaml",
        &route_yaml("open", "gw", "/open", origin_port, ""),
    );
    let (sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_status(gw_port, "/open/x", 200).await;
    // Never served with the upstream's raw error page instead.
    assert_eq!(get(gw_port, "/e/err500", &[]).await.status, 404);
    sluice.wait_log("spec.rule.errors[0].file", Duration::from_secs(5));
    // Fixed with an inline body: served and intercepted.
    let rule = "    enabled: true\n    errors:\n      - statusCode: 500\n        body: sorry\n";
    dir.write(
        "mw.yaml",
        &middleware_yaml("errors", "errorInterceptor", rule),
    );
    wait_status(gw_port, "/e/err500", 500).await;
    let page = get(gw_port, "/e/err500", &[]).await;
    assert_eq!(page.body, "sorry");
    assert_eq!(page.headers["content-type"], "text/plain; charset=utf-8");
    // A page file added later cannot be enforced either: withdrawn, not kept or served raw.
    let rule = "    enabled: true\n    errors:\n      - statusCode: 502\n        file: /502.html\n";
    dir.write(
        "mw.yaml",
        &middleware_yaml("errors", "errorInterceptor", rule),
    );
    wait_status(gw_port, "/e/err500", 404).await;
    assert_eq!(get(gw_port, "/open/x", &[]).await.status, 200);
}
