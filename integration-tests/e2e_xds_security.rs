//! xDS security end to end, through the real binary: TLS with the control plane's own CA, pods
//! authenticated by projected ServiceAccount tokens (TokenReview on the in-process API server)
//! or bootstrap tokens (file mode), client certificates bound to one gateway and pod, revocation
//! when the pod is deleted, scoped admin tokens for inspection, and, on the wire, no Secret bytes
//! of one gateway ever reaching another.

mod support;

use base64::Engine;
use prost::Message;
use serde_json::{Value, json};
use sluice_proto::config::Secret as SecretResource;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::identity_client::IdentityClient;
use sluice_proto::discovery::inspection_client::InspectionClient;
use sluice_proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, GetResourcesRequest, IssueCertificateRequest,
    ListGatewaysRequest, Node,
};
use sluice_proto::type_url;
use std::collections::BTreeMap;
use std::time::Duration;
use support::apiserver::FakeApiServer;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

const GOMA: &str = "gateway.jkaninda.dev/v1alpha1";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
const AUDIENCE: &str = "sluice-xds";
const ADMIN_ALL: &str = "admin-all-0123456789";
const ADMIN_EDGE: &str = "admin-edge-0123456789";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A self-signed certificate and key (PEM) for `host`.
fn site_cert(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

fn tls_secret(namespace: &str, name: &str, (cert, key): &(String, String)) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": b64(cert.as_bytes()), "tls.key": b64(key.as_bytes())}})
}

/// A data-plane pod of `gateway` as the operator labels it.
fn pod(namespace: &str, name: &str, uid: &str, gateway: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {
            "app.kubernetes.io/name": "sluice",
            "app.kubernetes.io/instance": gateway,
            "app.kubernetes.io/component": "data-plane",
            "app.kubernetes.io/managed-by": "sluice"}},
        "spec": {"containers": [{"name": "data-plane", "image": "sluice"}]}})
}

fn node(gateway: &str, id: &str) -> Node {
    Node {
        id: id.into(),
        gateway: gateway.into(),
        ..Default::default()
    }
}

/// A client key + certificate (PEM).
#[derive(Clone, Debug)]
struct ClientCert {
    cert: String,
    key: String,
}

async fn channel(port: u16, ca: &str, cert: Option<&ClientCert>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(c) = cert {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// `Identity.IssueCertificate` with an optional bearer token and an optional current certificate.
async fn issue(
    port: u16,
    ca: &str,
    token: Option<&str>,
    current: Option<&ClientCert>,
    node: Node,
) -> Result<ClientCert, Status> {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr_pem = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let channel = channel(port, ca, current)
        .await
        .map_err(Status::unavailable)?;
    let mut request = tonic::Request::new(IssueCertificateRequest {
        node: Some(node),
        csr_pem,
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let issued = IdentityClient::new(channel)
        .issue_certificate(request)
        .await?
        .into_inner();
    assert_eq!(issued.ca_pem, ca);
    Ok(ClientCert {
        cert: issued.certificate_pem,
        key: key.serialize_pem(),
    })
}

/// An ADS stream subscribed to every type; each response is ACKed and recorded.
struct AdsStream {
    responses: mpsc::UnboundedReceiver<Result<DeltaDiscoveryResponse, Status>>,
    /// Every response so far.
    seen: Vec<DeltaDiscoveryResponse>,
}

async fn ads(
    port: u16,
    ca: &str,
    cert: Option<&ClientCert>,
    node: Node,
) -> Result<AdsStream, Status> {
    let channel = channel(port, ca, cert).await.map_err(Status::unavailable)?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for url in type_url::ALL {
        tx.send(DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: url.to_owned(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await
        .expect("queued");
    }
    let mut inbound = AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (out, responses) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(resp)) => {
                    let ack = DeltaDiscoveryRequest {
                        type_url: resp.type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        ..Default::default()
                    };
                    let _ = tx.send(ack).await;
                    if out.send(Ok(resp)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = out.send(Err(status));
                    return;
                }
            }
        }
    });
    Ok(AdsStream {
        responses,
        seen: Vec::new(),
    })
}

/// An ADS stream through its initial state, or the status that refused it.
async fn ads_initial(
    port: u16,
    ca: &str,
    cert: Option<&ClientCert>,
    node: Node,
) -> Result<AdsStream, Status> {
    let mut stream = ads(port, ca, cert, node).await?;
    stream.initial().await?;
    Ok(stream)
}

impl AdsStream {
    /// The next response, or the status that ended the stream.
    async fn next(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        let resp = tokio::time::timeout(Duration::from_secs(10), self.responses.recv())
            .await
            .expect("a response within 10 s")
            .unwrap_or_else(|| Err(Status::cancelled("stream ended")))?;
        self.seen.push(resp.clone());
        Ok(resp)
    }

    /// Reads until every type has answered once (the initial state).
    async fn initial(&mut self) -> Result<(), Status> {
        let mut answered = [false; 4];
        while !answered.iter().all(|a| *a) {
            let resp = self.next().await?;
            if let Some(t) = type_url::ALL.iter().position(|u| *u == resp.type_url) {
                answered[t] = true;
            }
        }
        Ok(())
    }

    /// Every Secret resource received: name -> decoded Secret.
    fn secrets(&self) -> BTreeMap<String, SecretResource> {
        self.seen
            .iter()
            .filter(|r| r.type_url == type_url::SECRET)
            .flat_map(|r| r.resources.iter())
            .filter_map(|r| {
                let any = r.resource.as_ref()?;
                Some((
                    r.name.clone(),
                    SecretResource::decode(any.value.as_slice()).ok()?,
                ))
            })
            .collect()
    }

    /// Whether `needle` occurs in the bytes of any resource received, of any type.
    fn carries(&self, needle: &[u8]) -> bool {
        self.seen
            .iter()
            .flat_map(|r| r.resources.iter())
            .filter_map(|r| r.resource.as_ref())
            .any(|any| any.value.windows(needle.len()).any(|w| w == needle))
    }
}

/// The first base64 line of a PEM key (64 random-looking characters), which its bytes carry
/// wherever they travel.
fn key_body(pem: &str) -> Vec<u8> {
    let line = pem
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a PEM body");
    assert!(line.len() >= 32, "{line}");
    line.as_bytes().to_vec()
}

fn assert_status(result: Result<impl Sized, Status>, code: Code, needle: &str) {
    match result {
        Ok(_) => panic!("expected {code:?} ({needle}), got success"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(needle),
                "{:?} lacks {needle:?}",
                s.message()
            );
        }
    }
}

/// The value of `field=` on the log lines that contain every one of `needles`, in order.
fn log_fields(log: &str, needles: &[&str], field: &str) -> Vec<String> {
    let key = format!("{field}=");
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        })
        .collect()
}

async fn eventually_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_pods_get_their_own_gateway_and_nothing_else() {
    let api = FakeApiServer::start().await;
    let dir = TempDir::new("xds-sec-k8s");
    dir.write("kubeconfig", &api.kubeconfig());
    dir.write(
        "admin-tokens",
        &format!("{ADMIN_ALL} *\n{ADMIN_EDGE} edge\n"),
    );
    let kubeconfig = dir.path().join("kubeconfig");
    let (_echo, echo_port) = echo("backend");
    let (a_http, b_http) = (free_port(), free_port());
    let (a_https, b_https) = (free_port(), free_port());
    let a_cert = site_cert("a.test");
    let b_cert = site_cert("b.test");
    let c_cert = site_cert("c.test");
    for (name, http, https, secret) in [
        ("a", a_http, a_https, "a-cert"),
        ("b", b_http, b_https, "b-cert"),
    ] {
        api.apply(json!({"apiVersion": GOMA, "kind": "Gateway",
            "metadata": {"name": name, "namespace": "edge"},
            "spec": {"service": {"httpPort": http, "httpsPort": https},
                     "server": {"tls": [{"secretName": secret}]}}}));
        api.apply(json!({"apiVersion": GOMA, "kind": "Route",
            "metadata": {"name": format!("{name}-route"), "namespace": "edge"},
            "spec": {"gateways": [name], "path": "/",
                     "target": format!("http://127.0.0.1:{echo_port}")}}));
    }
    api.apply(tls_secret("edge", "a-cert", &a_cert));
    api.apply(tls_secret("edge", "b-cert", &b_cert));
    // A Gateway API Gateway in team-a whose listener names a Secret of team-b, which grants
    // nothing (no ReferenceGrant).
    api.apply(json!({"apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": "sluice"},
        "spec": {"controllerName": "sluice.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "c", "namespace": "team-a"},
        "spec": {"gatewayClassName": "sluice", "listeners": [
            {"name": "http", "port": free_port(), "protocol": "HTTP"},
            {"name": "https", "port": free_port(), "protocol": "HTTPS", "hostname": "c.test",
             "tls": {"mode": "Terminate", "certificateRefs": [
                {"kind": "Secret", "name": "c-cert", "namespace": "team-b"}]}}]}}));
    api.apply(tls_secret("team-b", "c-cert", &c_cert));
    for (ns, name, uid, gateway, sa) in [
        ("edge", "a-1", "uid-a-1", "a", "a"),
        ("edge", "a-2", "uid-a-2", "a", "a"),
        ("edge", "b-1", "uid-b-1", "b", "b"),
        ("team-a", "c-1", "uid-c-1", "c", "c"),
    ] {
        api.apply(pod(ns, name, uid, gateway));
        api.add_pod_token(&format!("token-{name}"), ns, sa, name, uid, AUDIENCE);
    }
    api.add_pod_token(
        "token-other-audience",
        "edge",
        "a",
        "a-1",
        "uid-a-1",
        "vault",
    );

    let xds = free_port();
    let _cp = Proc::start(
        &[
            "control-plane",
            "--kubernetes",
            "--xds-tls",
            "--listen",
            &format!("127.0.0.1:{xds}"),
            "--admin-tokens",
            dir.path().join("admin-tokens").to_str().expect("utf-8"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().expect("utf-8")),
            ("POD_NAME", "cp-0"),
            ("POD_NAMESPACE", "sluice-system"),
        ],
    );

    // The CA was created in the control plane's namespace, with a type the provider never loads.
    let ca_secret = eventually_some("the CA Secret", || {
        api.get("/api/v1", "secrets", "sluice-system", "sluice-xds-ca")
    })
    .await;
    assert_eq!(ca_secret["type"], "sluice.dev/xds-ca");
    let decode = |key: &str| {
        let text = ca_secret["data"][key].as_str().expect("base64 data");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64"),
        )
        .expect("PEM")
    };
    let ca = decode("ca.crt");
    let ca_key = decode("ca.key");

    // The operator's bootstrap carries the CA and the https address; pods project the token.
    let bootstrap = eventually_some("gateway a's bootstrap ConfigMap", || {
        api.get("/api/v1", "configmaps", "edge", "a-bootstrap")
    })
    .await;
    assert_eq!(bootstrap["data"]["SLUICE_XDS_CA"], ca.as_str());
    assert_eq!(
        bootstrap["data"]["SLUICE_XDS"],
        "https://sluice-control-plane.sluice-system.svc:18000"
    );
    assert_eq!(
        bootstrap["data"]["SLUICE_XDS_TOKEN_FILE"],
        "/var/run/secrets/sluice/xds/token"
    );

    // Wait until the server answers TLS, then: bootstrap credentials refused with a reason.
    let mut attempt = issue(xds, &ca, Some("not-a-token"), None, node("edge/a", "a-1")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while attempt
        .as_ref()
        .is_err_and(|s| s.code() == Code::Unavailable)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no xDS server: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        attempt = issue(xds, &ca, Some("not-a-token"), None, node("edge/a", "a-1")).await;
    }
    assert_status(
        attempt,
        Code::Unauthenticated,
        "the ServiceAccount token was not authenticated by TokenReview: invalid bearer token",
    );
    assert_status(
        issue(
            xds,
            &ca,
            Some("token-other-audience"),
            None,
            node("edge/a", "a-1"),
        )
        .await,
        Code::Unauthenticated,
        "token audiences are invalid",
    );
    assert_status(
        issue(xds, &ca, None, None, node("edge/a", "a-1")).await,
        Code::Unauthenticated,
        "needs a bootstrap token",
    );
    // A pod asking for another gateway, and a forged node id.
    assert_status(
        issue(xds, &ca, Some("token-a-1"), None, node("edge/b", "a-1")).await,
        Code::PermissionDenied,
        "node.gateway \"edge/b\" is not the authenticated gateway \"edge/a\"",
    );
    assert_status(
        issue(xds, &ca, Some("token-a-1"), None, node("edge/a", "a-2")).await,
        Code::PermissionDenied,
        "node.id \"a-2\" is not the authenticated pod \"a-1\"",
    );

    let a1 = issue(xds, &ca, Some("token-a-1"), None, node("edge/a", "a-1"))
        .await
        .expect("a-1 gets a certificate");
    let b1 = issue(xds, &ca, Some("token-b-1"), None, node("edge/b", "b-1"))
        .await
        .expect("b-1 gets a certificate");
    let c1 = issue(xds, &ca, Some("token-c-1"), None, node("team-a/c", "c-1"))
        .await
        .expect("c-1 gets a certificate");

    // ADS: a certificate is required and binds the node.
    for (cert, node, code, reason) in [
        (
            None,
            node("edge/a", "a-1"),
            Code::Unauthenticated,
            "ADS needs a client certificate",
        ),
        (
            Some(&a1),
            node("edge/b", "a-1"),
            Code::PermissionDenied,
            "node.gateway \"edge/b\" is not the authenticated gateway \"edge/a\" (client certificate",
        ),
        (
            Some(&a1),
            node("edge/a", "b-1"),
            Code::PermissionDenied,
            "node.id \"b-1\" is not the authenticated pod \"a-1\"",
        ),
    ] {
        assert_status(ads_initial(xds, &ca, cert, node).await, code, reason);
    }
    // An expired certificate of the right CA is refused, with the reason.
    let expired = {
        let key = rcgen::KeyPair::generate().expect("key");
        let ca_key = rcgen::KeyPair::from_pem(&ca_key).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca, &ca_key).expect("issuer");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://sluice/ns/edge/gateway/a/pod/a-1/uid/uid-a-1"
                .try_into()
                .expect("uri"),
        )];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(7200);
        params.not_after = now - Duration::from_secs(3600);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        ClientCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    };
    assert_status(
        ads_initial(xds, &ca, Some(&expired), node("edge/a", "a-1")).await,
        Code::Unauthenticated,
        "the client certificate of pod edge/a-1 (uid uid-a-1) of gateway edge/a (serial",
    );
    assert_status(
        issue(xds, &ca, None, Some(&expired), node("edge/a", "a-1")).await,
        Code::Unauthenticated,
        "s ago; obtain a new one",
    );

    // On the wire: each gateway's streams carry its own Secret and no byte of another's.
    let mut a_stream = ads(xds, &ca, Some(&a1), node("edge/a", "a-1"))
        .await
        .expect("a-1 ADS");
    a_stream.initial().await.expect("a-1 initial state");
    let mut b_stream = ads(xds, &ca, Some(&b1), node("edge/b", "b-1"))
        .await
        .expect("b-1 ADS");
    b_stream.initial().await.expect("b-1 initial state");
    let mut c_stream = ads(xds, &ca, Some(&c1), node("team-a/c", "c-1"))
        .await
        .expect("c-1 ADS");
    c_stream.initial().await.expect("c-1 initial state");
    assert!(a_stream.carries(&key_body(&a_cert.1)), "a gets its own key");
    assert!(b_stream.carries(&key_body(&b_cert.1)), "b gets its own key");
    assert!(!a_stream.carries(&key_body(&b_cert.1)), "b's key reached a");
    assert!(!b_stream.carries(&key_body(&a_cert.1)), "a's key reached b");
    for stream in [&a_stream, &b_stream, &c_stream] {
        assert!(
            !stream.carries(&key_body(&c_cert.1)),
            "team-b's key was delivered without a ReferenceGrant"
        );
    }
    assert!(
        c_stream.secrets().is_empty(),
        "c holds no Secret: {:?}",
        c_stream.secrets().keys()
    );
    // A rotation of a's certificate reaches a only.
    let rotated = site_cert("a.test");
    api.apply(tls_secret("edge", "a-cert", &rotated));
    loop {
        a_stream.next().await.expect("a's stream stays open");
        if a_stream.carries(&key_body(&rotated.1)) {
            break;
        }
    }
    // b and c are told nothing: within a second, no response at all.
    for stream in [&mut b_stream, &mut c_stream] {
        let quiet = tokio::time::timeout(Duration::from_secs(1), stream.responses.recv()).await;
        assert!(
            quiet.is_err(),
            "an unaffected gateway got a push: {quiet:?}"
        );
        assert!(!stream.carries(&key_body(&rotated.1)));
    }

    // Inspection needs an admin token, and a scoped one sees its namespaces only.
    let inspection = |token: Option<&'static str>| {
        let ca = ca.clone();
        async move {
            let channel = channel(xds, &ca, None).await.expect("channel");
            let mut request = tonic::Request::new(ListGatewaysRequest {});
            if let Some(t) = token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("header"),
                );
            }
            InspectionClient::new(channel)
                .list_gateways(request)
                .await
                .map(|r| {
                    r.into_inner()
                        .gateways
                        .into_iter()
                        .map(|g| g.gateway)
                        .collect::<Vec<_>>()
                })
        }
    };
    assert_status(
        inspection(None).await,
        Code::Unauthenticated,
        "needs an admin credential",
    );
    assert_status(
        inspection(Some("admin-wrong-0123456789")).await,
        Code::Unauthenticated,
        "the admin token is not valid",
    );
    let all = inspection(Some(ADMIN_ALL)).await.expect("all gateways");
    assert!(
        all.contains(&"team-a/c".to_owned()) && all.contains(&"edge/a".to_owned()),
        "{all:?}"
    );
    let edge = inspection(Some(ADMIN_EDGE)).await.expect("edge gateways");
    assert_eq!(edge, vec!["edge/a".to_owned(), "edge/b".to_owned()]);
    let mut request = tonic::Request::new(GetResourcesRequest {
        gateway: "team-a/c".into(),
        type_url: String::new(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_EDGE}").parse().expect("header"),
    );
    assert_status(
        InspectionClient::new(channel(xds, &ca, None).await.expect("channel"))
            .get_resources(request)
            .await,
        Code::PermissionDenied,
        "may not inspect gateway team-a/c",
    );

    // In Kubernetes the CA lives in its Secret: exported to a directory (kubectl, as
    // docs/security.md shows), it signs an admin certificate that inspects its namespace only.
    dir.write("exported-ca/ca.crt", &ca);
    dir.write("exported-ca/ca.key", &ca_key);
    let admins = dir.path().join("admins");
    let (ok, text) = admin_cert(&[
        "--xds-tls-dir",
        dir.path().join("exported-ca").to_str().expect("utf-8"),
        "--name",
        "ops",
        "--namespaces",
        "team-a",
        "--out",
        admins.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{text}");
    let ops = ClientCert {
        cert: std::fs::read_to_string(admins.join("ops.crt")).expect("crt"),
        key: std::fs::read_to_string(admins.join("ops.key")).expect("key"),
    };
    assert_eq!(
        list_gateways(xds, &ca, Some(&ops))
            .await
            .expect("ops lists"),
        ["team-a/c"]
    );

    // A pod relabelled to another gateway: its credentials were for its old gateway only. Its
    // open stream closes, and its certificate neither reconnects nor renews.
    let a2 = issue(xds, &ca, Some("token-a-2"), None, node("edge/a", "a-2"))
        .await
        .expect("a-2 gets a certificate");
    let mut a2_stream = ads(xds, &ca, Some(&a2), node("edge/a", "a-2"))
        .await
        .expect("a-2 ADS");
    a2_stream.initial().await.expect("a-2 initial state");
    api.apply(pod("edge", "a-2", "uid-a-2", "b"));
    let relabelled = "the credentials of pod edge/a-2 (uid uid-a-2) of gateway edge/a no longer \
                      hold: the pod was relabelled from gateway edge/a to gateway edge/b";
    let closed = loop {
        match a2_stream.next().await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert_eq!(closed.message(), relabelled);
    assert_status(
        ads_initial(xds, &ca, Some(&a2), node("edge/a", "a-2")).await,
        Code::PermissionDenied,
        relabelled,
    );
    assert_status(
        issue(xds, &ca, None, Some(&a2), node("edge/a", "a-2")).await,
        Code::PermissionDenied,
        relabelled,
    );

    // Revocation: deleting a-1 closes its open stream, and its certificate is refused after.
    api.delete(&pod("edge", "a-1", "uid-a-1", "a"));
    let closed = loop {
        match a_stream.next().await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert!(
        closed.message().contains("credentials of pod edge/a-1 (uid uid-a-1) of gateway edge/a are revoked: the pod was deleted"),
        "{closed:?}"
    );
    assert_status(
        ads_initial(xds, &ca, Some(&a1), node("edge/a", "a-1")).await,
        Code::PermissionDenied,
        "are revoked",
    );
    assert_status(
        issue(xds, &ca, None, Some(&a1), node("edge/a", "a-1")).await,
        Code::PermissionDenied,
        "are revoked",
    );
    // b is unaffected and renews with its certificate alone.
    issue(xds, &ca, None, Some(&b1), node("edge/b", "b-1"))
        .await
        .expect("b-1 renews");
    let quiet = tokio::time::timeout(Duration::from_millis(500), b_stream.responses.recv()).await;
    assert!(quiet.is_err(), "b's stream was disturbed: {quiet:?}");

    // The real data plane: bootstraps with its projected token and serves gateway b.
    dir.write("ca.pem", &ca);
    dir.write("token-b", "token-b-1\n");
    let admin = free_port();
    let _dp = Proc::start(
        &[
            "data-plane",
            "--gateway",
            "edge/b",
            "--node-id",
            "b-1",
            "--xds",
            &format!("https://127.0.0.1:{xds}"),
            "--xds-server-name",
            "localhost",
            "--bind",
            "127.0.0.1",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        &[
            ("SLUICE_XDS_CA", ca.as_str()),
            (
                "SLUICE_XDS_TOKEN_FILE",
                dir.path().join("token-b").to_str().expect("utf-8"),
            ),
        ],
    );
    wait_ok(b_http, "localhost", "/", Duration::from_secs(30)).await;
    // A pod with a bad token is refused with TokenReview's reason and serves nothing.
    dir.write("token-bad", "forged\n");
    let bad = Proc::start(
        &[
            "data-plane",
            "--gateway",
            "edge/a",
            "--node-id",
            "a-9",
            "--xds",
            &format!("https://127.0.0.1:{xds}"),
            "--xds-ca-file",
            dir.path().join("ca.pem").to_str().expect("utf-8"),
            "--xds-token-file",
            dir.path().join("token-bad").to_str().expect("utf-8"),
            "--bind",
            "127.0.0.1",
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    bad.wait_log(
        "the control plane refused to issue a certificate: the ServiceAccount token was not authenticated by TokenReview: invalid bearer token",
        Duration::from_secs(20),
    );
    assert!(!bad.log().contains("xDS stream open"), "{}", bad.log());
}

/// Outside Kubernetes: the CA lives in a directory, pods bootstrap with a token of the control
/// plane's file, renew at 2/3 of the certificate's life without dropping the stream; a bad
/// token is refused; remote plaintext needs to be asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_bootstraps_with_a_token_and_renews_without_dropping_the_stream() {
    let dir = TempDir::new("xds-sec-file");
    let (_echo, echo_port) = echo("backend");
    let http = free_port();
    dir.write("config/gw.yaml", &gateway_yaml("gw", http));
    dir.write(
        "config/route.yaml",
        &route_yaml("api", "gw", "/api", echo_port, ""),
    );
    dir.write("tokens", "bootstrap-0123456789abcdef default/gw gw-*\n");
    dir.write("good", "bootstrap-0123456789abcdef\n");
    dir.write("bad", "bootstrap-0123456789abcdeX\n");
    let xds = free_port();
    let health = free_port();
    let ca_dir = dir.path().join("ca");
    let cp = Proc::start(
        &[
            "control-plane",
            "--config",
            dir.path().join("config").to_str().expect("utf-8"),
            "--listen",
            &format!("127.0.0.1:{xds}"),
            "--xds-tls-dir",
            ca_dir.to_str().expect("utf-8"),
            "--xds-bootstrap-tokens",
            dir.path().join("tokens").to_str().expect("utf-8"),
            "--xds-client-cert-seconds",
            "12",
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ],
        &[],
    );
    cp.wait_log("xDS server listening", Duration::from_secs(20));
    // Probes (which cannot speak TLS) get the health service, and only it, in plaintext.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{health}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("plaintext health port");
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = tonic_health::pb::health_client::HealthClient::new(plain.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sluice.discovery.v1.AggregatedDiscoveryService".into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status;
        if status == serving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never SERVING: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_status(
        InspectionClient::new(plain)
            .list_gateways(ListGatewaysRequest {})
            .await,
        Code::Unimplemented,
        "",
    );
    let ca_file = ca_dir.join("ca.crt");
    let data_plane = |id: &str, token: &str| {
        Proc::start(
            &[
                "data-plane",
                "--gateway",
                "default/gw",
                "--node-id",
                id,
                "--xds",
                &format!("https://localhost:{xds}"),
                "--xds-ca-file",
                ca_file.to_str().expect("utf-8"),
                "--xds-token-file",
                dir.path().join(token).to_str().expect("utf-8"),
                "--bind",
                "127.0.0.1",
                "--admin",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &[],
        )
    };
    let good = data_plane("gw-1", "good");
    wait_ok(http, "localhost", "/api", Duration::from_secs(30)).await;
    // Renewed at ~8 s of 12, on the same stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while good
        .log()
        .matches("obtained an xDS client certificate")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal:\n{}",
            good.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        good.log().matches("xDS stream open").count(),
        1,
        "{}",
        good.log()
    );
    assert!(!good.log().contains("xDS stream down"), "{}", good.log());
    assert!(
        cp.log().contains("credential=client certificate"),
        "{}",
        cp.log()
    );
    wait_ok(http, "localhost", "/api", Duration::from_secs(5)).await;

    // The stream does not outlive the certificate it authenticated with: at expiry (12 s) the
    // control plane closes it, and the data plane reconnects with its renewed certificate,
    // serving the last config meanwhile.
    let client = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while good.log().matches("xDS stream open").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect after the certificate expired:\n{}",
            good.log()
        );
        let reply = request(&client, "GET", http, "localhost", "/api", &[]).await;
        assert!(
            matches!(&reply, Ok(r) if r.status == 200),
            "config dropped while reconnecting: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        good.log()
            .contains("expired; reconnect with a renewed certificate"),
        "the data plane was told why:\n{}",
        good.log()
    );
    assert!(
        cp.log()
            .contains("closing the stream: its credentials no longer hold"),
        "{}",
        cp.log()
    );
    let serials = log_fields(&cp.log(), &["data plane connected", "node=gw-1"], "serial");
    assert!(serials.len() >= 2, "{}", cp.log());
    assert_ne!(
        serials[0], serials[1],
        "the reconnect presents the renewed certificate"
    );
    wait_ok(http, "localhost", "/api", Duration::from_secs(5)).await;

    let bad = data_plane("gw-2", "bad");
    bad.wait_log(
        "the control plane refused to issue a certificate: the bootstrap token is not valid",
        Duration::from_secs(20),
    );
    let outside = data_plane("other-1", "good");
    outside.wait_log(
        "node.id \"other-1\" does not match the pod pattern \"gw-*\" of the bootstrap token",
        Duration::from_secs(20),
    );

    // Plaintext on a non-loopback address must be asked for.
    let mut remote = Proc::start(
        &[
            "control-plane",
            "--config",
            dir.path().join("config").to_str().expect("utf-8"),
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
        ],
        &[],
    );
    remote.wait_log(
        "TLS xDS outside Kubernetes keeps its CA in a directory",
        Duration::from_secs(10),
    );
    assert!(!remote.terminate(Duration::from_secs(10)).success());
}

/// Outside Kubernetes an operator revokes a pod or one certificate in the `--xds-revoked` file:
/// open streams close with the reason, new connects, renewals and token bootstraps of what is
/// revoked are refused, and lifting it works the same way. Failed bootstrap attempts are
/// rate-limited per peer address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_revokes_pods_and_certificates_and_limits_failed_bootstraps() {
    let dir = TempDir::new("xds-sec-revoke");
    let (_echo, echo_port) = echo("backend");
    dir.write("config/gw.yaml", &gateway_yaml("gw", free_port()));
    dir.write(
        "config/route.yaml",
        &route_yaml("api", "gw", "/api", echo_port, ""),
    );
    const TOKEN: &str = "bootstrap-0123456789abcdef";
    dir.write("tokens", &format!("{TOKEN} default/gw gw-*\n"));
    dir.write("revoked", "# nothing revoked yet\n");
    let revoked = dir.path().join("revoked");
    let xds = free_port();
    let ca_dir = dir.path().join("ca");
    let cp = Proc::start(
        &[
            "control-plane",
            "--config",
            dir.path().join("config").to_str().expect("utf-8"),
            "--listen",
            &format!("127.0.0.1:{xds}"),
            "--xds-tls-dir",
            ca_dir.to_str().expect("utf-8"),
            "--xds-bootstrap-tokens",
            dir.path().join("tokens").to_str().expect("utf-8"),
            "--xds-revoked",
            revoked.to_str().expect("utf-8"),
        ],
        &[],
    );
    cp.wait_log("xDS server listening", Duration::from_secs(20));
    let ca = std::fs::read_to_string(ca_dir.join("ca.crt")).expect("CA written");
    let gw = |pod: &str| node("default/gw", pod);
    let serial_of = |pod: &str| -> String {
        log_fields(
            &cp.log(),
            &["issued a client certificate", &format!("pod={pod} ")],
            "serial",
        )
        .pop()
        .unwrap_or_else(|| panic!("no certificate issued to {pod}:\n{}", cp.log()))
    };

    let cert1 = issue(xds, &ca, Some(TOKEN), None, gw("gw-1"))
        .await
        .expect("gw-1 bootstraps");
    let mut ads1 = ads(xds, &ca, Some(&cert1), gw("gw-1"))
        .await
        .expect("gw-1 connects");
    ads1.initial().await.expect("gw-1 synced");
    let cert2 = issue(xds, &ca, Some(TOKEN), None, gw("gw-2"))
        .await
        .expect("gw-2 bootstraps");
    let serial2 = serial_of("gw-2");
    let mut ads2 = ads(xds, &ca, Some(&cert2), gw("gw-2"))
        .await
        .expect("gw-2 connects");
    ads2.initial().await.expect("gw-2 synced");

    // One certificate revoked: its stream closes, it can neither reconnect nor renew; the pod
    // bootstraps a new certificate with its token.
    std::fs::write(&revoked, format!("serial {serial2}\n")).expect("write");
    let revoked_file = revoked.display().to_string();
    let closed = ads2.next().await.expect_err("closed on revocation");
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert_eq!(
        closed.message(),
        format!(
            "the client certificate of pod default/gw-2 of gateway default/gw (serial {serial2}) \
             is revoked ({revoked_file}:1)"
        )
    );
    assert_status(
        ads(xds, &ca, Some(&cert2), gw("gw-2")).await,
        Code::PermissionDenied,
        "is revoked",
    );
    assert_status(
        issue(xds, &ca, None, Some(&cert2), gw("gw-2")).await,
        Code::PermissionDenied,
        &format!("(serial {serial2}) is revoked"),
    );
    let cert2b = issue(xds, &ca, Some(TOKEN), None, gw("gw-2"))
        .await
        .expect("a new certificate for gw-2");
    let mut ads2b = ads(xds, &ca, Some(&cert2b), gw("gw-2"))
        .await
        .expect("gw-2 reconnects with its new certificate");
    ads2b.initial().await.expect("gw-2 synced again");

    // A pod revoked: every certificate of it and any new one.
    std::fs::write(&revoked, format!("serial {serial2}\npod default/gw-1\n")).expect("write");
    let closed = ads1.next().await.expect_err("closed on revocation");
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert_eq!(
        closed.message(),
        format!(
            "the credentials of pod default/gw-1 of gateway default/gw are revoked \
             (pod default/gw-1, {revoked_file}:2)"
        )
    );
    assert_status(
        issue(xds, &ca, Some(TOKEN), None, gw("gw-1")).await,
        Code::PermissionDenied,
        "the credentials of pod default/gw-1 of gateway default/gw are revoked",
    );
    assert!(
        cp.log()
            .contains("closing the stream: its credentials no longer hold"),
        "{}",
        cp.log()
    );
    // A broken file keeps the revocations in force; a fixed one lifts them.
    std::fs::write(&revoked, "pod gw-1\n").expect("write");
    cp.wait_log("cannot use the revocation list", Duration::from_secs(10));
    assert_status(
        issue(xds, &ca, Some(TOKEN), None, gw("gw-1")).await,
        Code::PermissionDenied,
        "are revoked",
    );
    std::fs::write(&revoked, "").expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cert1b = loop {
        match issue(xds, &ca, Some(TOKEN), None, gw("gw-1")).await {
            Ok(cert) => break cert,
            Err(status) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "revocation never lifted: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ads(xds, &ca, Some(&cert1b), gw("gw-1"))
        .await
        .expect("gw-1 connects again")
        .initial()
        .await
        .expect("gw-1 synced again");

    // Guessing tokens: ten failures, then the address waits; certificate renewals do not.
    const WRONG: &str = "bootstrap-0123456789abcdeX";
    for _ in 0..10 {
        assert_status(
            issue(xds, &ca, Some(WRONG), None, gw("gw-3")).await,
            Code::Unauthenticated,
            "the bootstrap token is not valid",
        );
    }
    let limited = issue(xds, &ca, Some(WRONG), None, gw("gw-3"))
        .await
        .expect_err("rate-limited");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited
            .message()
            .starts_with("too many failed bootstrap attempts from 127.0.0.1: retry in "),
        "{}",
        limited.message()
    );
    let hint: u64 = limited
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry hint");
    assert!((1..=6001).contains(&hint), "{hint}");
    assert_status(
        issue(xds, &ca, Some(TOKEN), None, gw("gw-3")).await,
        Code::ResourceExhausted,
        "too many failed bootstrap attempts",
    );
    issue(xds, &ca, None, Some(&cert2b), gw("gw-2"))
        .await
        .expect("a renewal by certificate is not limited");
}

/// Runs `sluice admin-cert` to completion: (success, stdout and stderr).
fn admin_cert(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .arg("admin-cert")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice admin-cert");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The gateway ids `ListGateways` shows to `cert`.
async fn list_gateways(
    port: u16,
    ca: &str,
    cert: Option<&ClientCert>,
) -> Result<Vec<String>, Status> {
    let channel = channel(port, ca, cert).await.map_err(Status::unavailable)?;
    let gateways = InspectionClient::new(channel)
        .list_gateways(ListGatewaysRequest {})
        .await?
        .into_inner()
        .gateways;
    Ok(gateways.into_iter().map(|g| g.gateway).collect())
}

async fn get_resources(
    port: u16,
    ca: &str,
    cert: &ClientCert,
    gateway: &str,
) -> Result<usize, Status> {
    let channel = channel(port, ca, Some(cert))
        .await
        .map_err(Status::unavailable)?;
    let resources = InspectionClient::new(channel)
        .get_resources(GetResourcesRequest {
            gateway: gateway.into(),
            type_url: String::new(),
        })
        .await?
        .into_inner()
        .resources;
    Ok(resources.len())
}

/// Admin client certificates, signed offline with the control plane's CA by `sluice admin-cert`:
/// they inspect the gateways of their namespaces only (no `--admin-tokens` file needed), can
/// neither subscribe to xDS nor renew into a pod certificate, a pod's certificate cannot
/// inspect, and an admin serial listed in `--xds-revoked` is refused and ends an open watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certificates_inspect_their_namespaces_only() {
    let dir = TempDir::new("xds-sec-admin-cert");
    let (_echo, echo_port) = echo("backend");
    for (ns, gw) in [("team-a", "gw-a"), ("team-b", "gw-b")] {
        dir.write(
            &format!("config/{gw}.yaml"),
            &gateway_yaml(gw, free_port())
                .replace("namespace: default", &format!("namespace: {ns}")),
        );
        dir.write(
            &format!("config/{gw}-route.yaml"),
            &route_yaml("api", gw, "/api", echo_port, "")
                .replace("namespace: default", &format!("namespace: {ns}")),
        );
    }
    const TOKEN: &str = "bootstrap-0123456789abcdef";
    dir.write("tokens", &format!("{TOKEN} team-a/gw-a gw-a-*\n"));
    dir.write("revoked", "");
    let revoked = dir.path().join("revoked");
    let xds = free_port();
    let ca_dir = dir.path().join("ca");
    let ca_dir_arg = ca_dir.to_str().expect("utf-8");
    let out_dir = dir.path().join("admins");
    let out_arg = out_dir.to_str().expect("utf-8");

    // Nothing to sign with before the control plane made its CA: none is created here.
    let (ok, text) = admin_cert(&[
        "--xds-tls-dir",
        ca_dir_arg,
        "--name",
        "alice",
        "--namespaces",
        "team-a",
        "--out",
        out_arg,
    ]);
    assert!(!ok && text.contains("ca.key"), "{text}");
    assert!(!ca_dir.exists());

    let cp = Proc::start(
        &[
            "control-plane",
            "--config",
            dir.path().join("config").to_str().expect("utf-8"),
            "--listen",
            &format!("127.0.0.1:{xds}"),
            "--xds-tls-dir",
            ca_dir_arg,
            "--xds-bootstrap-tokens",
            dir.path().join("tokens").to_str().expect("utf-8"),
            "--xds-revoked",
            revoked.to_str().expect("utf-8"),
        ],
        &[],
    );
    cp.wait_log("xDS server listening", Duration::from_secs(20));
    let ca = std::fs::read_to_string(ca_dir.join("ca.crt")).expect("CA written");

    // Bad input is refused with the field named.
    let (ok, text) = admin_cert(&[
        "--xds-tls-dir",
        ca_dir_arg,
        "--name",
        "bob",
        "--namespaces",
        "team-a,,team-b",
        "--out",
        out_arg,
    ]);
    assert!(
        !ok && text.contains("--namespaces: scope \"team-a,,team-b\" has an empty"),
        "{text}"
    );
    let (ok, text) = admin_cert(&[
        "--xds-tls-dir",
        ca_dir_arg,
        "--name",
        "bob",
        "--namespaces",
        "*",
        "--valid-for",
        "2y",
        "--out",
        out_arg,
    ]);
    assert!(
        !ok && text.contains("the unit must be s, m, h or d"),
        "{text}"
    );

    let issue_admin = |name: &str, namespaces: &str, valid_for: &str| -> (ClientCert, String) {
        let (ok, text) = admin_cert(&[
            "--xds-tls-dir",
            ca_dir_arg,
            "--name",
            name,
            "--namespaces",
            namespaces,
            "--valid-for",
            valid_for,
            "--out",
            out_arg,
        ]);
        assert!(ok, "{text}");
        let serial = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("serial:"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no serial printed: {text}"))
            .to_owned();
        let read = |ext: &str| {
            std::fs::read_to_string(out_dir.join(format!("{name}.{ext}"))).expect("written")
        };
        (
            ClientCert {
                cert: read("crt"),
                key: read("key"),
            },
            serial,
        )
    };
    let (alice, alice_serial) = issue_admin("alice", "team-a", "24h");
    let (root, _) = issue_admin("root", "*", "1h");
    let (brief, _) = issue_admin("brief", "*", "2s");
    // The same name twice does not overwrite the key.
    let (ok, text) = admin_cert(&[
        "--xds-tls-dir",
        ca_dir_arg,
        "--name",
        "alice",
        "--namespaces",
        "*",
        "--out",
        out_arg,
    ]);
    assert!(!ok && text.contains("alice.key"), "{text}");

    // Scoped to its namespaces, exactly like a scoped token.
    assert_eq!(
        list_gateways(xds, &ca, Some(&alice))
            .await
            .expect("alice lists"),
        ["team-a/gw-a"]
    );
    assert_eq!(
        list_gateways(xds, &ca, Some(&root))
            .await
            .expect("root lists"),
        ["team-a/gw-a", "team-b/gw-b"]
    );
    assert!(
        get_resources(xds, &ca, &alice, "team-a/gw-a")
            .await
            .expect("alice reads")
            > 0
    );
    assert_status(
        get_resources(xds, &ca, &alice, "team-b/gw-b").await,
        Code::PermissionDenied,
        "the admin certificate of admin alice (namespaces team-a) may not inspect gateway \
         team-b/gw-b (outside its namespaces)",
    );
    // No credential at all: no token file here, so certificates are the only way in.
    assert_status(
        list_gateways(xds, &ca, None).await,
        Code::Unauthenticated,
        "needs an admin credential",
    );

    // An admin certificate is not a pod's: no xDS, no pod certificate.
    let admin_not_pod = "the client certificate is an admin certificate (admin alice (namespaces \
                         team-a)): it may only inspect";
    assert_status(
        ads_initial(xds, &ca, Some(&alice), node("team-a/gw-a", "alice")).await,
        Code::PermissionDenied,
        admin_not_pod,
    );
    assert_status(
        issue(xds, &ca, None, Some(&alice), node("team-a/gw-a", "gw-a-1")).await,
        Code::PermissionDenied,
        admin_not_pod,
    );
    // A pod's certificate does not inspect, not even its own gateway.
    let pod = issue(xds, &ca, Some(TOKEN), None, node("team-a/gw-a", "gw-a-1"))
        .await
        .expect("gw-a-1 bootstraps");
    ads_initial(xds, &ca, Some(&pod), node("team-a/gw-a", "gw-a-1"))
        .await
        .expect("the pod subscribes");
    assert_status(
        list_gateways(xds, &ca, Some(&pod)).await,
        Code::PermissionDenied,
        "the client certificate of pod team-a/gw-a-1 of gateway team-a/gw-a is a pod's: pods \
         may not inspect",
    );

    // Expired: refused with the reason (the handshake lets it through to say so).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match list_gateways(xds, &ca, Some(&brief)).await {
            Ok(_) => {
                assert!(std::time::Instant::now() < deadline, "never expired");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert!(
                    status.message().contains(
                        "the client certificate of admin brief (every namespace) (serial"
                    ) && status.message().contains("s ago; obtain a new one"),
                    "{status:?}"
                );
                break;
            }
        }
    }

    // Revoked by serial: an open watch ends with the reason, and new calls are refused.
    let channel = channel(xds, &ca, Some(&alice)).await.expect("channel");
    let mut watch = InspectionClient::new(channel)
        .watch_resources(GetResourcesRequest {
            gateway: "team-a/gw-a".into(),
            type_url: String::new(),
        })
        .await
        .expect("alice watches")
        .into_inner();
    assert!(watch.message().await.expect("first").is_some());
    std::fs::write(&revoked, format!("serial {alice_serial}\n")).expect("write");
    let revoked_reason = format!(
        "the admin certificate of admin alice (namespaces team-a) (serial {alice_serial}) is \
         revoked ({}:1)",
        revoked.display()
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended without a reason"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the watch ends on revocation");
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert_eq!(ended.message(), revoked_reason);
    assert_status(
        list_gateways(xds, &ca, Some(&alice)).await,
        Code::PermissionDenied,
        &revoked_reason,
    );
    list_gateways(xds, &ca, Some(&root))
        .await
        .expect("another admin is unaffected");
}
