//! TLS termination through the real binary: certificates from Secret manifests chosen per
//! handshake by SNI (gateway certificates and a route's own), ALPN h2, 421 for a Host another
//! certificate serves, and live rotation of a Secret file with no restart.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use support::xds::*;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        Self { ca }
    }

    /// A leaf for `names`: (PEM chain, PEM key, DER leaf).
    fn leaf(&self, names: &[&str]) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.ca)
            .expect("leaf cert");
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        self.client_with_identity(alpn, None)
    }

    /// A client trusting this CA that presents `identity` (PEM chain, PEM key) when asked.
    fn client_with_identity(
        &self,
        alpn: &[&[u8]],
        identity: Option<&(String, String, CertificateDer<'static>)>,
    ) -> TlsConnector {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("ca root");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((_, key, der)) => builder
                .with_client_auth_cert(
                    vec![der.clone()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
                )
                .expect("client identity"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn tls_secret(name: &str, (cert, key, _): &(String, String, CertificateDer<'static>)) -> String {
    tls_secret_yaml(name, cert, key)
}

/// Gateway `gw` on these ports, with the Secret `site` as its certificate.
fn site_gateway(http_port: u16, https_port: u16) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  service: {{httpPort: {http_port}, httpsPort: {https_port}}}\n  server:\n    tls: [{{secretName: site}}]\n"
    )
}

async fn handshake(connector: &TlsConnector, port: u16, sni: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"))
}

fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates")[0]
        .clone()
}

/// Sends requests for `hosts` on one HTTP/1.1 connection; returns (status, body) for each.
async fn http1_requests(stream: TlsStream<TcpStream>, hosts: &[&str]) -> Vec<(u16, String)> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for host in hosts {
        let req = http::Request::get("/hello")
            .header("host", *host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        // An HTTP/1 connection takes the next request only once the previous one is done.
        sender.ready().await.expect("connection ready");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_by_sni_with_route_certificates_alpn_and_live_rotation() {
    let pki = Pki::new();
    let site = pki.leaf(&["site.test", "*.site.test"]);
    let own = pki.leaf(&["own.test"]);
    let (_echo, echo_port) = echo("backend");
    let (http_port, https_port, admin) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("tls");
    dir.write("gw.yaml", &site_gateway(http_port, https_port));
    dir.write("site.yaml", &tls_secret("site", &site));
    dir.write("own.yaml", &tls_secret("own", &own));
    dir.write(
        "routes.yaml",
        &format!(
            "{}---\n{}",
            route_yaml(
                "site",
                "gw",
                "/",
                echo_port,
                "  hosts: [site.test, api.site.test]\n"
            ),
            route_yaml(
                "own",
                "gw",
                "/",
                echo_port,
                "  hosts: [own.test]\n  tls: {secretName: own}\n"
            )
        ),
    );
    let (_sluice, _) = standalone(dir.path(), "gw", admin).await;
    let h1 = pki.client(&[b"http/1.1"]);

    // SNI picks the gateway certificate (exact and wildcard name) or the route's own.
    let s = handshake(&h1, https_port, "site.test").await;
    assert_eq!(served_cert(&s), site.2);
    let replies = http1_requests(s, &["site.test", "api.site.test", "own.test"]).await;
    assert_eq!(replies[0].0, 200, "{replies:?}");
    let echoed: serde_json::Value = serde_json::from_str(&replies[0].1).expect("json");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        replies[1].0, 200,
        "same certificate serves api.site.test: {replies:?}"
    );
    assert_eq!(
        replies[2].0, 421,
        "own.test is served by another certificate: {replies:?}"
    );
    let s = handshake(&h1, https_port, "own.test").await;
    assert_eq!(served_cert(&s), own.2);
    assert_eq!(http1_requests(s, &["own.test"]).await[0].0, 200);

    // ALPN h2.
    let h2 = pki.client(&[b"h2", b"http/1.1"]);
    let s = handshake(&h2, https_port, "api.site.test").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("https://api.site.test/h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_2)
    );

    // Plain HTTP still serves on the HTTP listener.
    assert_eq!(
        get(&client(), http_port, "site.test", "/").await.status,
        200
    );

    // Rotation: a new certificate in the Secret file serves new handshakes; an open connection
    // keeps working.
    let open = handshake(&h1, https_port, "site.test").await;
    let (mut open_sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let rotated = pki.leaf(&["site.test", "*.site.test"]);
    dir.write("site.yaml", &tls_secret("site", &rotated));
    eventually(
        "new handshakes get the rotated certificate",
        Duration::from_secs(5),
        || {
            let h1 = h1.clone();
            let want = rotated.2.clone();
            async move { served_cert(&handshake(&h1, https_port, "site.test").await) == want }
        },
    )
    .await;
    let req = http::Request::get("/still-open")
        .header("host", "site.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    assert_eq!(
        open_sender
            .send_request(req)
            .await
            .expect("response")
            .status(),
        200
    );

    // A broken rotation is rejected and the last good certificate keeps serving.
    dir.write(
        "site.yaml",
        &tls_secret(
            "site",
            &(rotated.0.clone(), own.1.clone(), rotated.2.clone()),
        ),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = handshake(&h1, https_port, "site.test").await;
    assert_eq!(served_cert(&s), rotated.2);
}

/// A client that sends an IP address as its SNI (as OpenSSL's do when told to, and wrk does) is
/// not refused, and costs no log line per handshake: rustls warns about it, which the default
/// log filter leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_as_sni_is_handshaken_without_a_log_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let site = pki.leaf(&["site.test"]);
    let (_echo, echo_port) = echo("backend");
    let (http_port, https_port, admin) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("tls-ip-sni");
    dir.write("gw.yaml", &site_gateway(http_port, https_port));
    dir.write("site.yaml", &tls_secret("site", &site));
    dir.write("route.yaml", &route_yaml("site", "gw", "/", echo_port, ""));
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;

    // rustls clients never send an IP address as SNI: take the ClientHello of a DNS name of the
    // same length and put the address in its place.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = ServerName::try_from("127-0-0-1").expect("server name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    let at = hello
        .windows(9)
        .position(|w| w == b"127-0-0-1")
        .expect("SNI in the ClientHello");
    hello[at..at + 9].copy_from_slice(b"127.0.0.1");

    for _ in 0..3 {
        let mut tcp = TcpStream::connect(("127.0.0.1", https_port))
            .await
            .expect("connect");
        tcp.write_all(&hello).await.expect("send ClientHello");
        let mut answer = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut answer))
            .await
            .expect("answer in time")
            .expect("answer");
        // A handshake record (the ServerHello), not an alert: the handshake goes on.
        assert_eq!(answer[0], 0x16, "{answer:?}");
    }
    // The ServerHello follows the parsing of the ClientHello, which is where rustls warns.
    let log = sluice.log();
    assert!(!log.contains("Illegal SNI"), "{log}");
    assert!(log.contains("INFO"), "the log is written at all: {log}");
}

/// Mutual TLS on a listener, through the real data-plane binary fed by a scripted xDS server
/// (Goma's Gateway has no field for it; Gateway API frontend validation will use it): only
/// clients with a certificate from the listener's client CA get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_verifies_client_certificates() {
    use sluice_proto::config as pb;
    use sluice_proto::type_url;

    let (_echo, echo_port) = echo("mtls-backend");
    let server_pki = Pki::new();
    let client_pki = Pki::new();
    let stranger_pki = Pki::new();
    let server_leaf = server_pki.leaf(&["mtls.example.com"]);
    let (xds, mut streams) = Scripted::start().await;
    let port = free_port();
    let admin = free_port();
    let _dp = data_plane("default/gw", xds, admin, &[], &[]);
    let (mut rx, tx) = streams.recv().await.expect("data plane connects");
    for _ in 0..4 {
        next_request(&mut rx).await;
    }

    let secrets = vec![
        resource(
            "server-cert",
            &pb::Secret {
                name: "server-cert".into(),
                kind: Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                    certificate_chain: server_leaf.0.clone().into_bytes(),
                    private_key: server_leaf.1.clone().into_bytes(),
                })),
                ..Default::default()
            },
        ),
        resource(
            "client-ca",
            &pb::Secret {
                name: "client-ca".into(),
                kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                    pem: client_pki.ca.pem().into_bytes(),
                })),
                ..Default::default()
            },
        ),
    ];
    let cluster = pb::Cluster {
        name: "echo".into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: u32::from(echo_port),
            weight: 1,
        }],
        ..Default::default()
    };
    let listener = pb::Listener {
        name: "https".into(),
        port: u32::from(port),
        protocol: pb::Protocol::Https as i32,
        tls: Some(pb::ListenerTls {
            certificate_secrets: vec!["server-cert".into()],
            client_ca_secret: "client-ca".into(),
            client_certificate_optional: false,
            ..Default::default()
        }),
        ..Default::default()
    };
    let route = pb::Route {
        name: "all".into(),
        listeners: vec!["https".into()],
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: vec![pb::WeightedBackend {
                cluster: "echo".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    for (t, nonce, resources) in [
        (type_url::SECRET, "s", secrets),
        (type_url::CLUSTER, "c", vec![resource("echo", &cluster)]),
        (type_url::LISTENER, "l", vec![resource("https", &listener)]),
        (type_url::ROUTE, "r", vec![resource("all", &route)]),
    ] {
        tx.send(Ok(response(t, nonce, resources))).await.unwrap();
        let ack = next_request(&mut rx).await;
        assert_eq!(ack.response_nonce, nonce);
        assert!(
            ack.error_detail.is_none(),
            "{t} ACKed: {:?}",
            ack.error_detail
        );
    }

    // TLS 1.3 reports a refused client certificate after the handshake: try a whole request.
    async fn attempt(connector: TlsConnector, port: u16) -> Result<u16, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("mtls.example.com").expect("name");
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header("host", "mtls.example.com")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let trusted = client_pki.leaf(&["client-a"]);
    let stranger = stranger_pki.leaf(&["client-b"]);
    eventually("the HTTPS listener is up", Duration::from_secs(10), || {
        let c = server_pki.client_with_identity(alpn, Some(&trusted));
        async move { attempt(c, port).await == Ok(200) }
    })
    .await;
    assert!(attempt(server_pki.client(alpn), port).await.is_err());
    assert!(
        attempt(server_pki.client_with_identity(alpn, Some(&stranger)), port)
            .await
            .is_err()
    );
}
