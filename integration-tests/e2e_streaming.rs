//! Streaming through the real binary: WebSocket upgrades tunnelled to an HTTP/1.1 backend (and
//! kept across a config change), from HTTP/1.1 clients and from HTTP/2 clients (RFC 8441
//! extended CONNECT, h2c and h2 over TLS), Server-Sent Events delivered event by event, and gRPC
//! (unary and server streaming, status in trailers) to an h2c backend selected by a `h2c://`
//! target.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(10);

/// Fails the test instead of hanging when `fut` does not finish in time.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A gateway on a fresh port in standalone mode with `routes` (file name, YAML).
async fn gateway(dir: &TempDir, routes: &[(&str, String)]) -> (Proc, u16) {
    let port = free_port();
    dir.write("gateway.yaml", &gateway_yaml("gw", port));
    for (file, yaml) in routes {
        dir.write(file, yaml);
    }
    let (p, _) = standalone(dir.path(), "gw", free_port()).await;
    (p, port)
}

// --- A minimal WebSocket client (RFC 6455): masked frames, no extensions. ---

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends the opening handshake and returns the stream with the response head.
async fn ws_open(port: u16, path: &str, headers: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = within("response head", s.read_u8()).await.expect("head");
        head.push(b);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

async fn ws_send<S: AsyncWrite + Unpin>(s: &mut S, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = fastmask(payload.len());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
}

fn fastmask(seed: usize) -> [u8; 4] {
    (seed as u32 ^ 0x5A17_C3E1).to_be_bytes()
}

/// Reads one (unmasked, server) frame: (opcode, payload).
async fn ws_recv<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    within("a WebSocket frame", async {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.expect("frame head");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => u64::from(s.read_u16().await.unwrap()),
            127 => s.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.expect("frame payload");
        (head[0] & 0x0F, payload)
    })
    .await
}

/// The close handshake (code 1000), after which the backend closes: the stream ends cleanly.
async fn ws_close<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    ws_send(s, 8, &[0x03, 0xE8]).await;
    assert_eq!(ws_recv(s).await, (8, vec![0x03, 0xE8]));
    let mut rest = Vec::new();
    within("the tunnel closes", s.read_to_end(&mut rest))
        .await
        .expect("clean close");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_tunnelled_and_survives_config_changes() {
    let (_echo, echo_port) = echo("ws");
    let dir = TempDir::new("ws");
    let (_sluice, port) = gateway(
        &dir,
        &[("ws.yaml", route_yaml("ws", "gw", "/ws", echo_port, ""))],
    )
    .await;

    let (mut ws, head) = ws_open(port, "/ws", &format!("Sec-WebSocket-Key: {WS_KEY}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("connection: upgrade\r\n"), "{head}");
    assert!(
        head.contains(&format!(": {WS_ACCEPT}\r\n")),
        "the backend's Sec-WebSocket-Accept: {head}"
    );
    ws_send(&mut ws, 1, b"hello").await;
    assert_eq!(ws_recv(&mut ws).await, (1, b"hello".to_vec()));

    // A config change while the WebSocket is open: a new route file, then an edit of the
    // WebSocket's own route. Both serve, and the open tunnel is untouched.
    let c = client();
    dir.write(
        "other.yaml",
        &route_yaml("other", "gw", "/other", echo_port, ""),
    );
    wait_ok(port, "x", "/other", WAIT).await;
    dir.write(
        "ws.yaml",
        &route_yaml("ws", "gw", "/ws", echo_port, "  methods: [GET]\n"),
    );
    eventually("the edited route serves", WAIT, || {
        let c = c.clone();
        async move {
            matches!(request(&c, "POST", port, "x", "/ws", &[]).await, Ok(r) if r.status == 405)
        }
    })
    .await;
    ws_send(&mut ws, 1, b"still there").await;
    assert_eq!(ws_recv(&mut ws).await, (1, b"still there".to_vec()));
    // A binary message with a 64-bit length crosses the tunnel intact.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws_send(&mut ws, 2, &big).await;
    assert_eq!(ws_recv(&mut ws).await, (2, big));
    ws_send(&mut ws, 9, b"ping").await;
    assert_eq!(ws_recv(&mut ws).await, (10, b"ping".to_vec()));
    ws_close(&mut ws).await;

    // `Upgrade: h2c` is not passed on (it would open an HTTP/2 tunnel past routing).
    let r = request(
        &c,
        "GET",
        port,
        "x",
        "/ws",
        &[
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
        ],
    )
    .await
    .expect("h2c upgrade request");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["headers"].get("upgrade").is_none(), "{r:?}");

    // An upgrade the backend refuses comes back as a plain response, and the connection stays
    // usable for HTTP.
    let (mut refused, head) = ws_open(port, "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    refused
        .write_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    within("the follow-up response", refused.read_to_end(&mut rest))
        .await
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    // The refusal's body, then the next response on the same connection.
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_outlives_the_read_timeout() {
    // The request-head bound (1s here) must not apply to tunnelled bytes.
    let (_echo, echo_port) = echo("ws");
    let dir = TempDir::new("ws-read");
    let port = free_port();
    dir.write(
        "gateway.yaml",
        &format!(
            "{}  server: {{timeouts: {{read: 1}}}}\n",
            gateway_yaml("gw", port)
        ),
    );
    dir.write("ws.yaml", &route_yaml("ws", "gw", "/ws", echo_port, ""));
    let (_sluice, _) = standalone(dir.path(), "gw", free_port()).await;
    let (mut ws, head) = ws_open(port, "/ws", &format!("Sec-WebSocket-Key: {WS_KEY}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-goma-request-id: "),
        "{head}"
    );
    for message in [&b"one"[..], b"two", b"three"] {
        ws_send(&mut ws, 1, message).await;
        assert_eq!(ws_recv(&mut ws).await, (1, message.to_vec()));
        // The client is quiet for longer than the read timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

// --- WebSocket over HTTP/2 (RFC 8441): hyper's h2 client sends the extended CONNECT. ---

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2_connect<I>(io: I) -> H2Sender
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("HTTP/2 handshake with the gateway");
    tokio::spawn(conn);
    sender
}

/// Sends `:method CONNECT`, `:protocol protocol` for `path` on ws.example.com.
async fn h2_extended_connect(
    sender: &mut H2Sender,
    scheme: &str,
    path: &str,
    protocol: &'static str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("{scheme}://ws.example.com{path}"))
        .header("sec-websocket-version", "13");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Empty::new()).unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    within("the extended CONNECT answer", sender.send_request(req))
        .await
        .expect("the gateway answers the extended CONNECT")
}

/// A gateway with an HTTP and an HTTPS port (a certificate for ws.example.com signed by a CA
/// of its own, returned as a client config offering ALPN h2), `/ws` to `echo_port` and
/// `/denied/ws` behind an access policy that denies 127.0.0.1.
async fn h2_websocket_gateway(
    dir: &TempDir,
    echo_port: u16,
) -> (Proc, u16, u16, tokio_rustls::TlsConnector) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["ws.example.com".to_string()])
        .expect("leaf params")
        .signed_by(&key, &ca)
        .expect("leaf cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("ca root");
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];

    let (http_port, https_port) = (free_port(), free_port());
    dir.write(
        "gw.yaml",
        &format!(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
             spec:\n  service: {{httpPort: {http_port}, httpsPort: {https_port}}}\n  server:\n    tls: [{{secretName: ws-cert}}]\n"
        ),
    );
    dir.write(
        "cert.yaml",
        &tls_secret_yaml("ws-cert", &leaf.pem(), &key.serialize_pem()),
    );
    dir.write("ws.yaml", &route_yaml("ws", "gw", "/ws", echo_port, ""));
    dir.write(
        "denied.yaml",
        &format!(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata: {{name: deny-local, namespace: default}}\n\
             spec:\n  type: accessPolicy\n  rule:\n    action: DENY\n    sourceRanges: [127.0.0.1/32]\n---\n{}",
            route_yaml(
                "denied",
                "gw",
                "/denied",
                echo_port,
                "  middlewares: [deny-local]\n"
            )
        ),
    );
    let (p, _) = standalone(dir.path(), "gw", free_port()).await;
    wait_ok(http_port, "ws.example.com", "/ws", WAIT).await;
    (
        p,
        http_port,
        https_port,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect_h2c_and_tls() {
    let (_echo, echo_port) = echo("ws");
    let dir = TempDir::new("ws-h2");
    let (_sluice, http_port, https_port, tls) = h2_websocket_gateway(&dir, echo_port).await;
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();

    for transport in ["h2c", "h2 over TLS"] {
        let tcp_port = if transport == "h2c" {
            http_port
        } else {
            https_port
        };
        let tcp = TcpStream::connect(("127.0.0.1", tcp_port))
            .await
            .expect("connect to the gateway");
        let (mut sender, scheme) = if transport == "h2c" {
            (h2_connect(tcp).await, "http")
        } else {
            let name = rustls::pki_types::ServerName::try_from("ws.example.com").unwrap();
            let stream = within("the TLS handshake", tls.connect(name, tcp))
                .await
                .expect("TLS handshake");
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            (h2_connect(stream).await, "https")
        };

        let mut resp = h2_extended_connect(&mut sender, scheme, "/ws", "websocket", &[]).await;
        assert_eq!(resp.status(), 200, "{transport}: {resp:?}");
        for hop_by_hop in ["upgrade", "connection", "sec-websocket-accept"] {
            assert!(
                !resp.headers().contains_key(hop_by_hop),
                "{transport}: {hop_by_hop}: {resp:?}"
            );
        }
        assert!(resp.headers().contains_key("x-goma-request-id"), "{resp:?}");
        let upgraded = within("the stream switches", hyper::upgrade::on(&mut resp))
            .await
            .expect("the 200 switches the stream");
        let mut ws = hyper_util::rt::TokioIo::new(upgraded);
        ws_send(&mut ws, 1, b"hello over h2").await;
        assert_eq!(ws_recv(&mut ws).await, (1, b"hello over h2".to_vec()));
        ws_send(&mut ws, 2, &[0, 1, 2, 255]).await;
        assert_eq!(ws_recv(&mut ws).await, (2, vec![0, 1, 2, 255]));
        // A binary message with a 64-bit length, larger than the HTTP/2 windows and frames.
        ws_send(&mut ws, 2, &big).await;
        assert_eq!(ws_recv(&mut ws).await, (2, big.clone()), "{transport}");
        ws_send(&mut ws, 1, "τέλος".as_bytes()).await;
        assert_eq!(ws_recv(&mut ws).await, (1, "τέλος".as_bytes().to_vec()));

        // The same connection serves other streams meanwhile, among them a second WebSocket.
        let mut second = h2_extended_connect(&mut sender, scheme, "/ws", "websocket", &[]).await;
        assert_eq!(second.status(), 200, "{transport}");
        let mut ws2 = hyper_util::rt::TokioIo::new(
            within(
                "the second stream switches",
                hyper::upgrade::on(&mut second),
            )
            .await
            .expect("switched"),
        );
        ws_send(&mut ws2, 1, b"two").await;
        ws_send(&mut ws, 1, b"one").await;
        assert_eq!(ws_recv(&mut ws2).await, (1, b"two".to_vec()));
        assert_eq!(ws_recv(&mut ws).await, (1, b"one".to_vec()));

        // Close handshake, then the backend closes: the stream ends.
        ws_close(&mut ws).await;

        // A backend refusing the upgrade: its answer reaches the client as it is.
        let resp = h2_extended_connect(
            &mut sender,
            scheme,
            "/ws",
            "websocket",
            &[("x-echo-status", "403")],
        )
        .await;
        assert_eq!(resp.status(), 403, "{transport}");
        // A route whose middleware denies the client denies its extended CONNECT too.
        let resp = h2_extended_connect(&mut sender, scheme, "/denied/ws", "websocket", &[]).await;
        assert_eq!(resp.status(), 403, "{transport}");
        // Unrouted paths are 404, as for any request.
        let resp = h2_extended_connect(&mut sender, scheme, "/nowhere", "websocket", &[]).await;
        assert_eq!(resp.status(), 404, "{transport}");
        // A protocol the gateway cannot translate.
        let resp = h2_extended_connect(&mut sender, scheme, "/ws", "foo", &[]).await;
        assert_eq!(resp.status(), 501, "{transport}");
        drop(ws2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_event_by_event() {
    let (_echo, echo_port) = echo("sse");
    let dir = TempDir::new("sse");
    let (_sluice, port) = gateway(
        &dir,
        &[(
            "sse.yaml",
            route_yaml("sse", "gw", "/events", echo_port, ""),
        )],
    )
    .await;
    let h1: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let h2: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for (version, client) in [("HTTP/1.1", h1), ("h2c", h2)] {
        let req = http::Request::get(format!("http://127.0.0.1:{port}/events"))
            .header("host", "sse.example.com")
            .header("x-echo-sse", "3")
            .body(Empty::new())
            .unwrap();
        let resp = within("the SSE response head", client.request(req))
            .await
            .expect("SSE response");
        assert_eq!(resp.status(), 200, "{version}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        // The backend holds the last event back until released: events 1 and 2 can only arrive
        // here if the gateway forwards them as they come.
        let mut text = String::new();
        while !text.contains("data: sse 2\n\n") {
            let frame = within("the first events", body.frame())
                .await
                .unwrap_or_else(|| panic!("{version}: stream ended early: {text:?}"))
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        assert_eq!(
            text, "id: 1\ndata: sse 1\n\nid: 2\ndata: sse 2\n\n",
            "{version}"
        );
        let release = get_with(port, "/events", &[("x-echo-sse-release", "1")]).await;
        assert_eq!(release, 200);
        let rest = within("the last event", body.collect())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(rest, "id: 3\ndata: sse 3\n\n", "{version}");
    }
}

async fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    request(&client(), "GET", port, "x", path, headers)
        .await
        .expect("request")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_through_an_h2c_cluster() {
    let (_echo, echo_port) = echo("grpc-echo");
    let dir = TempDir::new("grpc");
    let route = format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: grpc\n  namespace: default\n\
         spec:\n  gateways: [gw]\n  path: /grpc.health.v1.Health/\n  target: h2c://127.0.0.1:{echo_port}\n"
    );
    let (_sluice, port) = gateway(&dir, &[("grpc.yaml", route)]).await;

    // h2c with prior knowledge to the gateway's plain HTTP port.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the gateway");
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };

    let resp = within("Check", health.check(check("grpc-echo")))
        .await
        .expect("Check through the gateway");
    assert_eq!(resp.get_ref().status(), ServingStatus::Serving);
    // The backend answers NOT_FOUND as a trailers-only response: grpc-status reaches the client.
    let status = within("Check unknown", health.check(check("nope")))
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // Server streaming: each status change arrives as it happens.
    let mut watch = within("Watch", health.watch(check("grpc-echo")))
        .await
        .expect("Watch through the gateway")
        .into_inner();
    let first = within("first update", watch.message())
        .await
        .expect("stream ok")
        .expect("a message");
    assert_eq!(first.status(), ServingStatus::Serving);
    assert_eq!(
        get_with(echo_port, "/", &[("x-echo-health", "NOT_SERVING")]).await,
        200
    );
    let second = within("second update", watch.message())
        .await
        .expect("stream ok")
        .expect("a message");
    assert_eq!(second.status(), ServingStatus::NotServing);
    drop(watch);
    let resp = within("Check again", health.check(check("grpc-echo")))
        .await
        .expect("Check");
    assert_eq!(resp.get_ref().status(), ServingStatus::NotServing);
}
