//! TLS from the data plane to upstreams through the real binary: `https://` targets verified
//! with a CA Secret (by DNS name and by IP), refused against the public roots, accepted with
//! insecureSkipVerify, mutual TLS with a client certificate Secret, and live CA rotation; and,
//! configured by the scripted xDS server, a cluster verifying a URI SAN (SPIFFE ID) in place of
//! the SNI.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sluice_proto::config as pb;
use sluice_proto::discovery::DeltaDiscoveryRequest;
use sluice_proto::type_url;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use support::xds::*;
use support::*;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A leaf certificate: PEM chain and PEM key.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self(
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
                .expect("ca cert"),
        )
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.0)
            .expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A leaf whose only subject alternative name is the URI `uri`.
    fn uri_leaf(&self, uri: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        let cert = params.signed_by(&key, &self.0).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

fn ca_secret(name: &str, ca: &Ca) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData:\n  ca.crt: |\n{}",
        indent(&ca.0.pem())
    )
}

fn tls_secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert),
        indent(&leaf.key)
    )
}

/// An HTTPS backend answering `<name> <path>`; with `client_ca`, it requires a client
/// certificate signed by that CA.
async fn https_backend(name: &'static str, leaf: &Leaf, client_ca: Option<&Ca>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.0.der().clone()).expect("client ca");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Failed handshakes are what some cases expect: drop them quietly.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{name} {}", req.uri().path());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

fn https_route(name: &str, target: &str, security: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gateways: [gw]\n  path: /{name}\n  target: {target}\n{security}---\n"
    )
}

async fn status(port: u16, path: &str) -> (u16, String) {
    let r = get(&client(), port, "gateway.test", path).await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verification_mtls_and_ca_rotation() {
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let wrong_ca = Ca::new();
    let server_leaf = server_ca.leaf(&["localhost", "127.0.0.1"]);
    let tls_port = https_backend("tls", &server_leaf, None).await;
    let mtls_port = https_backend("mtls", &server_leaf, Some(&client_ca)).await;

    let (http_port, admin) = (free_port(), free_port());
    let dir = TempDir::new("upstream-tls");
    dir.write("gw.yaml", &gateway_yaml("gw", http_port));
    dir.write("ca.yaml", &ca_secret("ca", &server_ca));
    dir.write(
        "client.yaml",
        &tls_secret("client", &client_ca.leaf(&["gateway-client"])),
    );
    let tls = format!("https://localhost:{tls_port}");
    let mtls = format!("https://localhost:{mtls_port}");
    let routes = [
        https_route("ca", &tls, "  security: {tls: {rootCAsSecret: ca}}\n"),
        https_route(
            "ip",
            &format!("https://127.0.0.1:{tls_port}"),
            "  security: {tls: {rootCAsSecret: ca}}\n",
        ),
        https_route("public", &tls, ""),
        https_route(
            "insecure",
            &tls,
            "  security: {tls: {insecureSkipVerify: true}}\n",
        ),
        https_route("nocert", &mtls, "  security: {tls: {rootCAsSecret: ca}}\n"),
        https_route(
            "mtls",
            &mtls,
            "  security: {tls: {rootCAsSecret: ca, clientCertSecret: client}}\n",
        ),
    ];
    dir.write("routes.yaml", &routes.concat());
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    // Routes reach the data plane with the gateway; wait for the last one.
    eventually(
        "routes served",
        Duration::from_secs(10),
        move || async move {
            get(&client(), http_port, "gateway.test", "/mtls")
                .await
                .status
                != 404
        },
    )
    .await;

    // (1) The CA Secret verifies the backend, by DNS name and by IP address.
    assert_eq!(status(http_port, "/ca").await, (200, "tls /ca".into()));
    assert_eq!(status(http_port, "/ip").await, (200, "tls /ip".into()));
    // (2) Without a CA Secret the public roots do not know the issuer.
    assert_eq!(status(http_port, "/public").await.0, 502);
    assert!(
        sluice.log().contains("upstream TLS handshake failed"),
        "{}",
        sluice.log()
    );
    // (3) insecureSkipVerify accepts the certificate.
    assert_eq!(
        status(http_port, "/insecure").await,
        (200, "tls /insecure".into())
    );
    // (4) The mTLS backend refuses a gateway without a client certificate.
    assert_eq!(status(http_port, "/nocert").await.0, 502);
    assert_eq!(status(http_port, "/mtls").await, (200, "mtls /mtls".into()));

    // (5) Rotating the CA Secret to a CA that did not sign the backend fails closed, and
    // rotating it back serves again, without a restart.
    dir.write("ca.yaml", &ca_secret("ca", &wrong_ca));
    eventually(
        "wrong CA refuses the backend",
        Duration::from_secs(10),
        move || async move { status(http_port, "/ca").await.0 == 502 },
    )
    .await;
    assert_eq!(status(http_port, "/mtls").await.0, 502);
    dir.write("ca.yaml", &ca_secret("ca", &server_ca));
    eventually(
        "right CA serves again",
        Duration::from_secs(10),
        move || async move { status(http_port, "/ca").await.0 == 200 },
    )
    .await;
    assert_eq!(status(http_port, "/mtls").await, (200, "mtls /mtls".into()));
}

/// A TLS cluster on `port` trusting the CA Secret `ca`, its certificate checked for `uri`.
fn uri_san_cluster(name: &str, port: u16, uri: &str) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: u32::from(port),
            weight: 1,
        }],
        tls: Some(pb::UpstreamTls {
            // Sent as SNI only: the certificate carries no DNS name at all.
            server_name: "api.default.svc".into(),
            ca_secret: "ca".into(),
            subject_alt_names: vec![pb::SubjectAltName {
                kind: Some(pb::subject_alt_name::Kind::Uri(uri.into())),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn prefix_route(path: &str, cluster: &str) -> pb::Route {
    pb::Route {
        name: cluster.into(),
        listeners: vec!["http".into()],
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: path.into(),
            }),
            ..Default::default()
        }],
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: vec![pb::WeightedBackend {
                cluster: cluster.into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Sends one response and returns the data plane's answer to it.
async fn exchange(
    rx: &mut tonic::Streaming<DeltaDiscoveryRequest>,
    tx: &tokio::sync::mpsc::Sender<
        Result<sluice_proto::discovery::DeltaDiscoveryResponse, tonic::Status>,
    >,
    t: &str,
    nonce: &str,
    resources: Vec<sluice_proto::discovery::Resource>,
) -> DeltaDiscoveryRequest {
    tx.send(Ok(response(t, nonce, resources)))
        .await
        .expect("xds stream open");
    loop {
        let r = next_request(rx).await;
        if r.response_nonce == nonce {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_alt_names_verify_a_uri_san_instead_of_the_sni() {
    const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/api";
    let ca = Ca::new();
    let backend = https_backend("spiffe", &ca.uri_leaf(SPIFFE), None).await;
    let (xds, mut streams) = Scripted::start().await;
    let (http_port, admin) = (free_port(), free_port());
    let _dp = data_plane("default/gw", xds, admin, &[], &[]);
    let (mut rx, tx) = tokio::time::timeout(Duration::from_secs(20), streams.recv())
        .await
        .expect("data plane connects")
        .expect("stream");
    for _ in 0..4 {
        next_request(&mut rx).await;
    }
    let ca_secret = pb::Secret {
        name: "ca".into(),
        kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
            pem: ca.0.pem().into_bytes(),
        })),
        ..Default::default()
    };
    let other = "spiffe://cluster.local/ns/default/sa/web";
    let mut empty_san = uri_san_cluster("empty", backend, SPIFFE);
    if let Some(tls) = &mut empty_san.tls {
        tls.subject_alt_names[0].kind = Some(pb::subject_alt_name::Kind::Hostname(String::new()));
    }
    let steps = [
        (type_url::SECRET, vec![resource("ca", &ca_secret)]),
        (
            type_url::CLUSTER,
            vec![
                resource("right", &uri_san_cluster("right", backend, SPIFFE)),
                resource("wrong", &uri_san_cluster("wrong", backend, other)),
            ],
        ),
        (
            type_url::LISTENER,
            vec![resource(
                "http",
                &pb::Listener {
                    name: "http".into(),
                    port: u32::from(http_port),
                    protocol: pb::Protocol::Http as i32,
                    ..Default::default()
                },
            )],
        ),
        (
            type_url::ROUTE,
            vec![
                resource("right", &prefix_route("/right", "right")),
                resource("wrong", &prefix_route("/wrong", "wrong")),
            ],
        ),
    ];
    for (i, (t, resources)) in steps.into_iter().enumerate() {
        let r = exchange(&mut rx, &tx, t, &format!("n{i}"), resources).await;
        assert!(
            r.error_detail.is_none(),
            "{t} NACKed: {:?}",
            r.resource_errors
        );
    }
    wait_ready(admin).await;
    // The backend's certificate holds only the URI SAN: it is accepted for that URI…
    assert_eq!(
        status(http_port, "/right").await,
        (200, "spiffe /right".into())
    );
    // …and refused for another one, though the same CA signed it.
    assert_eq!(status(http_port, "/wrong").await.0, 502);
    // An empty SAN entry is NACKed naming the field.
    let nack = exchange(
        &mut rx,
        &tx,
        type_url::CLUSTER,
        "n-bad",
        vec![resource("empty", &empty_san)],
    )
    .await;
    let reason = nack
        .resource_errors
        .iter()
        .find(|e| e.name == "empty")
        .and_then(|e| e.error_detail.as_ref())
        .map(|d| d.message.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("tls.subject_alt_names[0]: hostname: empty"),
        "{:?}",
        nack.resource_errors
    );
}
