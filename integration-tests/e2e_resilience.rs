//! Upstream resilience through the real binary: active health checks take a backend out of a
//! Goma route and put it back, passive outlier detection ejects a failing backend, and a backend
//! that refuses connections is retried on the other one so clients see no error.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};
use support::*;

/// A Goma route `name` on `/` for `host`, balancing over `ports` (echo backends or dead ports).
fn two_backend_route(name: &str, host: &str, ports: [u16; 2], extra: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  gateways: [gw]\n  path: /\n  hosts: [{host}]\n  backends:\n    - endpoint: http://127.0.0.1:{}\n    - endpoint: http://127.0.0.1:{}\n{extra}",
        ports[0], ports[1]
    )
}

/// Sends `n` GETs; returns (status, backend) of each (backend empty for non-JSON answers).
async fn burst(c: &HttpClient, port: u16, host: &str, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = get(c, port, host, "/").await;
        let backend = if r.status == 200 {
            r.backend()
        } else {
            String::new()
        };
        out.push((r.status, backend));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_backends_out_and_back_without_errors() {
    let dir = TempDir::new("health");
    let a_down = dir.path().join("a-down");
    let b_down = dir.path().join("b-down");
    let (_a, a) = echo_with("a", &["--health-fail-file", a_down.to_str().unwrap()]);
    let (_b, b) = echo_with("b", &["--health-fail-file", b_down.to_str().unwrap()]);
    let gw_port = free_port();
    let admin = free_port();
    let config = TempDir::new("health-config");
    config.write("gw.yaml", &gateway_yaml("gw", gw_port));
    config.write(
        "route.yaml",
        &two_backend_route(
            "checked",
            "checked.test",
            [a, b],
            "  healthCheck: {path: /healthz, interval: 50ms, timeout: 1s}\n",
        ),
    );
    let (sluice, _) = standalone(config.path(), "gw", admin).await;
    let c = client();

    // Both serve while healthy.
    let replies = burst(&c, gw_port, "checked.test", 10).await;
    assert!(replies.iter().all(|(s, _)| *s == 200), "{replies:?}");
    assert!(replies.iter().any(|(_, b)| b == "a") && replies.iter().any(|(_, b)| b == "b"));

    // A fails its health check: traffic moves to B, and no client sees an error meanwhile
    // (A's own traffic still succeeds until the third failed probe takes it out).
    std::fs::write(&a_down, "").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replies = burst(&c, gw_port, "checked.test", 10).await;
        let only_b = replies.iter().all(|(_, b)| b == "b");
        seen.extend(replies);
        if only_b {
            break;
        }
        assert!(Instant::now() < deadline, "a never left: {seen:?}");
    }
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:?}");
    sluice.wait_log(
        "endpoint failed its health check: out of service",
        Duration::from_secs(5),
    );

    // With B failing too, nothing is available: 503 with a clear body.
    std::fs::write(&b_down, "").unwrap();
    eventually("b taken out too", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let r = get(&c, gw_port, "checked.test", "/").await;
            r.status == 503 && r.body == "no healthy upstream\n"
        }
    })
    .await;

    // A passes again: it serves everything; then B is back and both serve.
    std::fs::remove_file(&a_down).unwrap();
    eventually("a back in service", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let replies = burst(&c, gw_port, "checked.test", 4).await;
            replies.iter().all(|(s, b)| *s == 200 && b == "a")
        }
    })
    .await;
    sluice.wait_log(
        "endpoint passed its health check: back in service",
        Duration::from_secs(5),
    );
    std::fs::remove_file(&b_down).unwrap();
    eventually("b back in service", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let replies = burst(&c, gw_port, "checked.test", 4).await;
            replies.iter().all(|(s, _)| *s == 200) && replies.iter().any(|(_, b)| b == "b")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backends_are_ejected_and_dead_ones_retried() {
    let (_good, good) = echo("good");
    let (_bad, bad) = echo_with("bad", &["--status", "500"]);
    let dead = free_port();
    let gw_port = free_port();
    let admin = free_port();
    let config = TempDir::new("outlier-config");
    config.write("gw.yaml", &gateway_yaml("gw", gw_port));
    config.write(
        "routes.yaml",
        &format!(
            "{}---\n{}",
            two_backend_route("flaky", "flaky.test", [good, bad], ""),
            two_backend_route("half-dead", "dead.test", [dead, good], ""),
        ),
    );
    let (sluice, _) = standalone(config.path(), "gw", admin).await;
    let c = client();

    // Passive outlier detection: the 500s stop after five consecutive failures eject "bad"
    // (Goma routes get the defaults; no retry policy, so those five reach the client).
    let replies = burst(&c, gw_port, "flaky.test", 40).await;
    let errors = replies.iter().filter(|(s, _)| *s == 500).count();
    assert_eq!(errors, 5, "{replies:?}");
    assert!(
        replies[20..].iter().all(|(s, b)| *s == 200 && b == "good"),
        "{replies:?}"
    );
    sluice.wait_log(
        "endpoint ejected after consecutive failures",
        Duration::from_secs(5),
    );

    // A backend refusing connections: every request is retried on the other backend, so
    // clients see no error, whatever the method and body (bodies first, before the dead
    // backend is ejected).
    let body_client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..6 {
        let req = http::Request::post(format!("http://127.0.0.1:{gw_port}/orders"))
            .header("host", "dead.test")
            .body(Full::new(Bytes::from_static(b"{\"order\": 1}")))
            .unwrap();
        let resp = body_client.request(req).await.expect("proxy answers");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["backend"], "good");
        assert_eq!(json["body_bytes"], 12, "the body reached the retry intact");
    }
    let replies = burst(&c, gw_port, "dead.test", 20).await;
    assert!(
        replies.iter().all(|(s, b)| *s == 200 && b == "good"),
        "{replies:?}"
    );
    let ejected = format!("127.0.0.1:{dead}");
    assert!(
        sluice
            .log()
            .lines()
            .any(|l| l.contains("endpoint ejected") && l.contains(&ejected)),
        "the dead backend is ejected after its connect failures:\n{}",
        sluice.log()
    );
}
