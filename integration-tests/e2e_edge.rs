//! The gateway's edge as a client meets it, through the real binary: exploit protection, the
//! request id, server timeouts (slow headers, idle keep-alive) and header size limits.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A Goma Gateway on `port` with `server:` settings.
fn gateway_with_server(name: &str, port: u16, server: &str) -> String {
    format!("{}  server: {server}\n", gateway_yaml(name, port))
}

/// Starts `sluice standalone` on a config with one gateway and one plain route to an echo backend.
async fn edge(tag: &str, server: &str) -> (TempDir, Proc, Proc, u16) {
    let (echo, echo_port) = echo("e1");
    let dir = TempDir::new(tag);
    let port = free_port();
    dir.write("gateway.yaml", &gateway_with_server("edge", port, server));
    dir.write("route.yaml", &route_yaml("all", "edge", "/", echo_port, ""));
    let (sluice, _) = standalone(dir.path(), "edge", free_port()).await;
    wait_ok(port, "x", "/", Duration::from_secs(10)).await;
    (dir, sluice, echo, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exploit_protection_and_request_ids() {
    let (echo, echo_port) = echo("e1");
    let dir = TempDir::new("edge-exploit");
    let port = free_port();
    dir.write("gateway.yaml", &gateway_yaml("edge", port));
    dir.write(
        "guarded.yaml",
        &route_yaml(
            "guarded",
            "edge",
            "/guarded",
            echo_port,
            "  security: {enableExploitProtection: true}\n",
        ),
    );
    dir.write(
        "open.yaml",
        &route_yaml("open", "edge", "/open", echo_port, ""),
    );
    let admin = free_port();
    let (sluice, _) = standalone(dir.path(), "edge", admin).await;
    let c = client();
    eventually("routes served", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            matches!(request(&c, "GET", port, "x", "/guarded", &[]).await, Ok(r) if r.status == 200)
                && matches!(request(&c, "GET", port, "x", "/open", &[]).await, Ok(r) if r.status == 200)
        }
    })
    .await;

    let attacks = [
        "/guarded/items?id=1%20UNION%20SELECT%20password%20FROM%20users",
        "/guarded/login?user=admin%27--",
        "/guarded/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "/guarded/files/%252e%252e/%252e%252e/etc/passwd",
    ];
    for path in attacks {
        let r = get(&c, port, "x", path).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "request blocked\n"),
            "{path}"
        );
        // An unprotected route forwards the same request.
        let open = path.replacen("/guarded", "/open", 1);
        assert_eq!(get(&c, port, "x", &open).await.status, 200, "{open}");
    }
    for path in [
        "/guarded/search?q=update+my+profile&name=O%27Brien",
        "/guarded/items?sort=created_at--desc&ids=1;2;3",
        "/guarded/calc?expr=a%2Bb%3Dc",
    ] {
        let r = get(&c, port, "x", path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    sluice.wait_log(
        "request blocked by exploit protection",
        Duration::from_secs(5),
    );
    let log = sluice.log();
    assert!(
        log.contains("route=default/guarded") || log.contains("guarded"),
        "the log names the route"
    );
    assert!(
        log.contains("sql-injection: union select"),
        "the log names the check"
    );

    // Bodies: a form field is checked like a query; the body still reaches the backend whole.
    let body_client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let post = |body: &'static str, content_type: &'static str| {
        let body_client = body_client.clone();
        async move {
            let req = http::Request::post(format!("http://127.0.0.1:{port}/guarded/login"))
                .header("host", "x")
                .header("content-type", content_type)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let resp = body_client.request(req).await.expect("proxy answers");
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let form = "application/x-www-form-urlencoded";
    assert_eq!(post("user=admin%27--&pw=x", form).await.0, 403);
    assert_eq!(
        post(
            r#"{"q":"<img src=x onerror=alert(1)>"}"#,
            "application/json"
        )
        .await
        .0,
        403
    );
    let (status, body) = post("user=O%27Brien&note=1%3B2%3B3", form).await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["body_bytes"], 29);
    // Binary bodies are not inspected.
    assert_eq!(post("<script>", "application/octet-stream").await.0, 200);

    // X-Goma-Request-ID: one per request, sent upstream and returned; a client's own is
    // replaced (the client is no trusted proxy).
    let r = request(
        &c,
        "GET",
        port,
        "x",
        "/open",
        &[("x-goma-request-id", "mine")],
    )
    .await
    .unwrap();
    let id = r.headers["x-goma-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.json()["headers"]["x-goma-request-id"], id.as_str());
    let again = get(&c, port, "x", "/open").await;
    assert_ne!(again.headers["x-goma-request-id"], id.as_str());
    drop(echo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_after_the_read_timeout() {
    let (_dir, _sluice, _echo, port) = edge("edge-read", "{timeouts: {read: 1}}").await;
    // A client that starts a request and never finishes its headers.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    closed_by_server(&mut slow, Duration::from_secs(10)).await;

    // A normal request on the same gateway is unaffected.
    let mut ok = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = closed_by_server(&mut ok, Duration::from_secs(10)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    // Waiting for the next request is idleness (90s by default), not a slow head: a kept-alive
    // connection outlives the 1s read timeout. (The sleep is the client being idle.)
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get("/")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.expect("same connection");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_cut_but_slow_upstreams_are_not() {
    let (_dir, _sluice, _echo, port) = edge("edge-body", "{timeouts: {read: 1}}").await;
    // A body announced as 100 bytes, of which 10 arrive.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    closed_by_server(&mut stalled, Duration::from_secs(10)).await;

    // A complete request to a backend slower than the read timeout is answered.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Echo-Delay-Ms: 2500\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let reply = closed_by_server(&mut slow, Duration::from_secs(10)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"body_bytes\":10"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_uploads_are_answered_408_while_the_connection_goes_on() {
    use futures::SinkExt;
    use http_body::Frame;
    let (_dir, _sluice, _echo, port) = edge("edge-h2-body", "{timeouts: {read: 1}}").await;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    // A stream on the same connection to a backend slower than the read timeout: its complete
    // body is sent, so it must be answered (the bound is the client's, not the upstream's).
    let slow = h2.send_request(
        http::Request::post("/")
            .header("host", "x")
            .header("x-echo-delay-ms", "2500")
            .body(http_body_util::Either::Left(Full::new(Bytes::from_static(
                b"0123456789",
            ))))
            .unwrap(),
    );
    let slow = tokio::spawn(slow);

    // A body announced as 100 bytes, of which 10 arrive, then nothing.
    let (mut tx, rx) =
        futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
        .await
        .unwrap();
    let stalled = http::Request::post("/")
        .header("host", "x")
        .header("content-length", "100")
        .body(http_body_util::Either::Right(
            http_body_util::StreamBody::new(rx),
        ))
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), h2.send_request(stalled))
        .await
        .expect("the stalled stream is answered")
        .expect("a response, not a connection error");
    assert_eq!(resp.status(), 408);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "answered after the 1s read timeout, not before: {:?}",
        started.elapsed()
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"request body not received in time\n");

    // The connection and its other streams go on.
    let slow = slow.await.unwrap().expect("the slow stream is answered");
    assert_eq!(slow.status(), 200);
    let slow = slow.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&slow).contains("\"body_bytes\":10"),
        "{slow:?}"
    );
    let again = http::Request::get("/")
        .header("host", "x")
        .body(http_body_util::Either::Left(Full::new(Bytes::new())))
        .unwrap();
    let again = h2.send_request(again).await.expect("same connection");
    assert_eq!(again.status(), 200);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    // The read timeout stays at its 30s default: only the idle timeout can close the connection.
    let (_dir, _sluice, _echo, port) = edge("edge-idle", "{timeouts: {idle: 1}}").await;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = closed_by_server(&mut conn, Duration::from_secs(10)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        !reply.to_ascii_lowercase().contains("connection: close"),
        "a keep-alive response, closed later for idleness: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_is_not_idle() {
    let (_dir, _sluice, _echo, port) = edge("edge-stream-idle", "{timeouts: {idle: 1}}").await;
    // One h2c connection: an SSE stream that outlasts the idle timeout, then another request.
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);
    let get = |headers: &[(&'static str, &'static str)]| {
        let mut req = http::Request::get(format!("http://127.0.0.1:{port}/"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    let resp = h2.send_request(get(&[("x-echo-sse", "2")])).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("first event").expect("frame");
    assert!(first.is_data());
    // The stream stays open, quiet, for twice the idle timeout (the backend holds the last
    // event until released): the connection is busy, not idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let released = get(&[("x-echo-sse-release", "1")]);
    let r = client()
        .request(released.map(|_| Empty::new()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    body.collect().await.expect("the rest of the stream");
    // The same connection takes a new request: no GOAWAY was sent while it streamed.
    let resp = h2.send_request(get(&[])).await.expect("same connection");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // Idle now: the connection is closed (GOAWAY, then close).
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("an idle h2 connection is closed")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_long_uris_414() {
    let (_dir, _sluice, _echo, port) = edge("edge-limits", "{}").await;
    let send = |head: String| async move {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        let reply = closed_by_server(&mut conn, Duration::from_secs(10)).await;
        String::from_utf8_lossy(&reply).into_owned()
    };
    let big = "a".repeat(70 * 1024);
    let reply = send(format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );

    let long = "a".repeat(20 * 1024);
    let reply = send(format!(
        "GET /?q={long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 414"),
        "{}",
        &reply[..reply.len().min(200)]
    );

    // HTTP/2 (h2c): the header list limit answers 431 too.
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
        .header("x-big", &big)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 431);
    // The same 64 KiB bound as HTTP/1 (hyper's HTTP/2 default is 16 KiB).
    let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
        .header("x-fine", "a".repeat(32 * 1024))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);

    // Large but within bounds: served.
    let fine = "a".repeat(32 * 1024);
    let reply = send(format!(
        "GET /?q={} HTTP/1.1\r\nHost: x\r\nX-Fine: {fine}\r\nConnection: close\r\n\r\n",
        &long[..8 * 1024]
    ))
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{}",
        &reply[..reply.len().min(200)]
    );
}
