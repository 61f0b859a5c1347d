//! Observability through the real binary: Prometheus metrics with Goma's names on the admin port
//! (exact per-route counts, `disableMetrics`), the Goma `server.monitoring` endpoint on the
//! gateway's own port restricted to its host, `/config_dump` without key material, and
//! `--access-log` JSON lines.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = BTreeMap<String, String>;

/// The samples of a text exposition: (metric name, labels) -> value.
fn parse_exposition(text: &str) -> BTreeMap<(String, Labels), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        // Label values here never contain `,` or `"`.
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let value = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert((name.to_string(), labels), value);
    }
    out
}

struct Scrape(BTreeMap<(String, Labels), f64>);

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.get(&(name.to_string(), labels)).copied()
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Series whose `name` label is `route`.
    fn series_of(&self, route: &str) -> Vec<String> {
        self.0
            .keys()
            .filter(|(_, l)| l.get("name").is_some_and(|n| n == route))
            .map(|(n, l)| format!("{n}{l:?}"))
            .collect()
    }
}

async fn scrape(c: &HttpClient, admin: u16) -> Scrape {
    let r = get(c, admin, "localhost", "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{r:?}"
    );
    Scrape(parse_exposition(&r.body))
}

/// A POST with a body, returning (status, response body length).
async fn post(port: u16, path: &str, body: &'static str) -> (u16, usize) {
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "api.example.com")
        .header("x-goma-request-id", "req-42")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = c.request(req).await.expect("POST answered");
    let status = resp.status().as_u16();
    let len = resp.into_body().collect().await.unwrap().to_bytes().len();
    (status, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_config_dump_and_access_logs() {
    let (_echo, echo_port) = echo("e1");
    let (http_port, https_port, admin) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("observability");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["api.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key_pem = key.serialize_pem();
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("tls", &cert.pem(), &key_pem),
    );
    dir.write(
        "gateway.yaml",
        &format!(
            "{}  server:\n    tls: [{{secretName: tls}}]\n    monitoring: {{enableMetrics: true, host: metrics.example.com}}\n",
            gateway_yaml("gw", http_port).replace(
                "    httpPort:",
                &format!("    httpsPort: {https_port}\n    httpPort:")
            )
        ),
    );
    dir.write(
        "api.yaml",
        &route_yaml(
            "api",
            "gw",
            "/api",
            echo_port,
            "  hosts: [api.example.com]\n",
        ),
    );
    let dead_port = free_port();
    dir.write(
        "dead.yaml",
        &route_yaml("dead", "gw", "/dead", dead_port, ""),
    );
    // An upstream that takes requests and never answers, telling the test when one arrived.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut conn, _) = silent.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await;
        let _ = arrived_tx.send(());
        // Hold the connection open, unanswered.
        let _ = conn.read(&mut buf).await;
    });
    dir.write(
        "slow.yaml",
        &route_yaml("slow", "gw", "/slow", silent_port, ""),
    );
    dir.write(
        "quiet.yaml",
        &route_yaml(
            "quiet",
            "gw",
            "/quiet",
            echo_port,
            "  disableMetrics: true\n",
        ),
    );
    let xds = free_port();
    let sluice = Proc::start(
        &[
            "--log-format",
            "json",
            "standalone",
            "--access-log",
            "--config",
            dir.path().to_str().unwrap(),
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--admin-port",
            &admin.to_string(),
        ],
        &[],
    );
    wait_ready(admin).await;
    let c = client();

    // Traffic with known shapes: 3 GET 200, 1 GET 503, 1 POST with a 5-byte body, 2 requests to
    // the route without metrics, 1 unmatched, 1 to an upstream that refuses connections.
    let mut get_bytes = 0;
    for _ in 0..3 {
        let r = get(&c, http_port, "api.example.com", "/api/x").await;
        assert_eq!(r.status, 200, "{r:?}");
        get_bytes += r.body.len();
    }
    let r = request(
        &c,
        "GET",
        http_port,
        "api.example.com",
        "/api/fail",
        &[("x-echo-status", "503")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503);
    get_bytes += r.body.len();
    let (status, post_bytes) = post(http_port, "/api/upload", "hello").await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        assert_eq!(get(&c, http_port, "x", "/quiet").await.status, 200);
    }
    assert_eq!(
        get(&c, http_port, "api.example.com", "/nope").await.status,
        404
    );
    assert_eq!(get(&c, http_port, "x", "/dead").await.status, 502);

    // Durations and bytes are recorded when the response bodies end: poll until they are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&c, admin).await;
        let count = |method| {
            m.count(
                "gateway_request_duration_seconds_count",
                &[("name", "api"), ("method", method)],
            )
        };
        if count("GET") == 4.0 && count("POST") == 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "durations never recorded: {:?}",
            m.0
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let api_get = [("name", "api"), ("method", "GET")];
    let api_post = [("name", "api"), ("method", "POST")];
    assert_eq!(m.get("gateway_requests_total", &api_get), Some(4.0));
    assert_eq!(m.get("gateway_requests_total", &api_post), Some(1.0));
    let status = |s: &str, method: &str| {
        m.get(
            "gateway_response_status_total",
            &[("status", s), ("name", "api"), ("method", method)],
        )
    };
    assert_eq!(status("200", "GET"), Some(3.0));
    assert_eq!(status("503", "GET"), Some(1.0));
    assert_eq!(status("200", "POST"), Some(1.0));
    assert_eq!(m.get("gateway_request_bytes_total", &api_post), Some(5.0));
    assert_eq!(m.get("gateway_request_bytes_total", &api_get), Some(0.0));
    assert_eq!(
        m.get("gateway_response_bytes_total", &api_get),
        Some(get_bytes as f64)
    );
    assert_eq!(
        m.get("gateway_response_bytes_total", &api_post),
        Some(post_bytes as f64)
    );
    assert_eq!(
        m.get(
            "gateway_request_duration_seconds_bucket",
            &[("name", "api"), ("method", "GET"), ("le", "+Inf")]
        ),
        Some(4.0)
    );
    assert_eq!(
        m.get(
            "gateway_upstream_duration_seconds_count",
            &[("name", "api")]
        ),
        Some(5.0)
    );
    assert_eq!(
        m.get(
            "gateway_response_status_total",
            &[("status", "404"), ("name", "(none)"), ("method", "GET")]
        ),
        Some(1.0)
    );
    assert_eq!(m.series_of("quiet"), Vec::<String>::new(), "disableMetrics");
    assert_eq!(m.series_of("route/default/quiet"), Vec::<String>::new());
    assert_eq!(m.get("gateway_routes_count", &[]), Some(4.0));
    assert!(m.get("gateway_uptime_seconds", &[]).is_some());
    assert_eq!(m.get("sluice_xds_connected", &[]), Some(1.0));
    assert_eq!(
        m.get("sluice_config_resources", &[("type", "route")]),
        Some(4.0)
    );
    assert_eq!(
        m.get(
            "sluice_upstream_connect_errors_total",
            &[("cluster", "route/default/dead/backend-0")]
        ),
        Some(1.0)
    );

    // The gateway's own metrics endpoint answers only for its host, before routing.
    let r = get(&c, http_port, "metrics.example.com", "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    let listener = Scrape(parse_exposition(&r.body));
    assert_eq!(listener.get("gateway_requests_total", &api_get), Some(4.0));
    let r = get(&c, http_port, "api.example.com", "/metrics").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.body.contains("gateway_requests_total"));

    // A client that leaves before the response headers is recorded as 499.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /slow/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("request reached the upstream")
        .unwrap();
    drop(stream);
    let closed = [("status", "499"), ("name", "slow"), ("method", "GET")];
    eventually("499 recorded", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            scrape(&c, admin)
                .await
                .count("gateway_response_status_total", &closed)
                == 1.0
        }
    })
    .await;

    // TLS handshakes are counted per listener port.
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", https_port))
        .await
        .unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let https = https_port.to_string();
    let failed = [("port", https.as_str()), ("result", "failed")];
    eventually("failed handshake counted", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            scrape(&c, admin)
                .await
                .count("sluice_tls_handshakes_total", &failed)
                == 1.0
        }
    })
    .await;

    // The configuration being served, without key material.
    let r = get(&c, admin, "localhost", "/config_dump").await;
    assert_eq!(r.status, 200);
    let dump = r.json();
    let routes: Vec<&str> = dump["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "route/default/api",
            "route/default/dead",
            "route/default/quiet",
            "route/default/slow"
        ]
    );
    assert_eq!(dump["routes"][2]["resource"]["disableMetrics"], true);
    assert_eq!(dump["routes"][0]["resource"]["metricsName"], "api");
    assert!(
        dump["routes"][0]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    let secrets = dump["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(secrets[0]["kind"], "tls_certificate");
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!r.body.contains(key_line) && !r.body.contains(&key_body[..40]));
    assert!(!r.body.contains("PRIVATE KEY") && !r.body.contains("privateKey"));

    // One access log line per proxied request (11 so far: scrapes of the gateway's metrics
    // endpoint are not proxied), written when the response body is done.
    let access_lines = || -> Vec<serde_json::Value> {
        sluice
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    };
    eventually("access log lines", Duration::from_secs(10), || {
        let n = access_lines().len();
        async move { n == 11 }
    })
    .await;
    let lines = access_lines();
    let post_line = &lines
        .iter()
        .find(|l| l["fields"]["method"] == "POST")
        .expect("the POST is logged")["fields"];
    assert_eq!(post_line["path"], "/api/upload");
    assert_eq!(post_line["host"], "api.example.com");
    assert_eq!(post_line["status"], 200);
    assert_eq!(post_line["route"], "route/default/api");
    assert_eq!(post_line["cluster"], "route/default/api/backend-0");
    assert_eq!(post_line["endpoint"], format!("127.0.0.1:{echo_port}"));
    assert_eq!(post_line["request_bytes"], 5);
    assert_eq!(post_line["response_bytes"], post_bytes);
    assert_eq!(post_line["client_ip"], "127.0.0.1");
    assert_eq!(post_line["request_id"], "req-42");
    assert!(post_line["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    let unmatched = &lines
        .iter()
        .find(|l| l["fields"]["status"] == 404)
        .expect("the 404 is logged")["fields"];
    assert_eq!(unmatched["route"], "-");
    assert_eq!(unmatched["path"], "/nope");
    let closed = &lines
        .iter()
        .find(|l| l["fields"]["status"] == 499)
        .expect("the abandoned request is logged")["fields"];
    assert_eq!(closed["path"], "/slow/x");
    assert_eq!(closed["route"], "route/default/slow");
    drop(sluice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_off_by_default() {
    let (_echo, echo_port) = echo("e1");
    let (port, admin) = (free_port(), free_port());
    let dir = TempDir::new("observability-off");
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    dir.write("api.yaml", &route_yaml("api", "gw", "/", echo_port, ""));
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    let c = client();
    assert_eq!(get(&c, port, "x", "/a").await.status, 200);
    eventually("request counted", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            scrape(&c, admin).await.count(
                "gateway_request_duration_seconds_count",
                &[("name", "api"), ("method", "GET")],
            ) == 1.0
        }
    })
    .await;
    assert!(!sluice.log().contains(" access: "), "{}", sluice.log());
    // Without monitoring.enableMetrics the gateway's port has no metrics endpoint.
    assert_eq!(
        get(&c, port, "x", "/metrics").await.status,
        200,
        "routed to the echo"
    );
    assert_eq!(
        get(&c, port, "x", "/metrics").await.backend(),
        "e1",
        "the route answers, not an exposition"
    );
}
