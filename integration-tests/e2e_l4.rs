//! TCP, UDP and TLS listeners through the real `sluice data-plane` binary, configured by the
//! scripted xDS server: TCP echo and weighted splits, live route changes that leave an open
//! connection on its backend, unresolved backends refused, UDP sessions per client (sharing a
//! port number with a TCP listener) and their idle expiry, TLS passthrough by SNI where the
//! client verifies the backend's own certificate, and TLS terminate forwarding plain TCP; a TCP
//! listener originating TLS to a cluster that asks for it (and failing closed with a wrong CA).

mod support;

use prost::Message;
use rustls::pki_types::ServerName;
use sluice_proto::config as pb;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use sluice_proto::type_url;
use std::time::Duration;
use support::l4::*;
use support::xds::*;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// A data plane driven by the scripted xDS server.
struct Gateway {
    _dp: Proc,
    admin: u16,
    rx: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    nonce: u32,
}

impl Gateway {
    async fn start() -> Self {
        let (xds, mut srx) = Scripted::start().await;
        let admin = free_port();
        let dp = data_plane("default/gw", xds, admin, &[], &[]);
        let (mut rx, tx) = tokio::time::timeout(Duration::from_secs(20), srx.recv())
            .await
            .expect("data plane connects")
            .expect("stream");
        for _ in 0..4 {
            next_request(&mut rx).await;
        }
        Gateway {
            _dp: dp,
            admin,
            rx,
            tx,
            nonce: 0,
        }
    }

    /// Sends resources of one type and waits for their ACK (a NACK fails the test).
    async fn push<M: Message + prost::Name>(&mut self, t: &str, items: &[(&str, &M)]) {
        let r = self.answer(t, items).await;
        assert!(
            r.error_detail.is_none(),
            "{t} NACKed: {:?}",
            r.resource_errors
        );
    }

    /// Sends resources of one type and returns the data plane's answer (ACK or NACK).
    async fn answer<M: Message + prost::Name>(
        &mut self,
        t: &str,
        items: &[(&str, &M)],
    ) -> DeltaDiscoveryRequest {
        self.nonce += 1;
        let nonce = format!("n{}", self.nonce);
        let resources = items.iter().map(|(n, m)| resource(n, *m)).collect();
        self.tx
            .send(Ok(response(t, &nonce, resources)))
            .await
            .expect("xds stream open");
        loop {
            let r = next_request(&mut self.rx).await;
            if r.response_nonce == nonce {
                return r;
            }
        }
    }

    async fn clusters(&mut self, items: &[(&str, u16)]) {
        let clusters: Vec<(String, pb::Cluster)> = items
            .iter()
            .map(|(name, port)| (name.to_string(), cluster(name, *port)))
            .collect();
        let refs: Vec<(&str, &pb::Cluster)> =
            clusters.iter().map(|(n, c)| (n.as_str(), c)).collect();
        self.push(type_url::CLUSTER, &refs).await;
    }

    async fn listeners(&mut self, items: &[pb::Listener]) {
        let refs: Vec<(&str, &pb::Listener)> = items.iter().map(|l| (l.name.as_str(), l)).collect();
        self.push(type_url::LISTENER, &refs).await;
    }

    async fn routes(&mut self, items: &[pb::Route]) {
        let refs: Vec<(&str, &pb::Route)> = items.iter().map(|r| (r.name.as_str(), r)).collect();
        self.push(type_url::ROUTE, &refs).await;
    }

    /// The value of a counter line of the admin /metrics page (0 when absent).
    async fn counter(&self, series: &str) -> u64 {
        let r = get(&client(), self.admin, "localhost", "/metrics").await;
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn cluster(name: &str, port: u16) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: u32::from(port),
            weight: 1,
        }],
        ..Default::default()
    }
}

fn listener(name: &str, port: u16, protocol: pb::Protocol) -> pb::Listener {
    pb::Listener {
        name: name.into(),
        port: u32::from(port),
        protocol: protocol as i32,
        ..Default::default()
    }
}

fn tls_listener(name: &str, port: u16, mode: pb::TlsMode, certs: &[&str]) -> pb::Listener {
    pb::Listener {
        tls: Some(pb::ListenerTls {
            mode: mode as i32,
            certificate_secrets: certs.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        ..listener(name, port, pb::Protocol::Tls)
    }
}

fn route(name: &str, listener: &str, hostnames: &[&str], backends: &[(&str, u32)]) -> pb::Route {
    pb::Route {
        name: name.into(),
        listeners: vec![listener.into()],
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: backends
                .iter()
                .map(|(c, w)| pb::WeightedBackend {
                    cluster: c.to_string(),
                    weight: *w,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Reads the backend's greeting line (its name); Err when the connection closed first.
async fn greeting<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Err(_) => return Err("no greeting within 5 s".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(0)) => return Err(format!("closed after {line:?}")),
            Ok(Ok(_)) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into()),
            Ok(Ok(_)) => line.push(byte[0]),
        }
    }
}

/// Writes `msg` and reads the echo back.
async fn echo_round<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &str) -> String {
    s.write_all(msg.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo within 5 s")
        .expect("echo");
    String::from_utf8_lossy(&buf).into()
}

/// Connects to the gateway's TCP `port` and reads the backend's name.
async fn tcp_backend(port: u16) -> Result<(TcpStream, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = greeting(&mut s).await?;
    Ok((s, name))
}

/// Sends `msg` from `s` and returns the reply, if one arrives within 300 ms.
async fn udp_round(s: &UdpSocket, msg: &str) -> Option<String> {
    s.send(msg.as_bytes()).await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_millis(300), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn wait_tcp_backend(port: u16, want: &str) {
    eventually(
        &format!("a connection on :{port} reaches {want}"),
        Duration::from_secs(10),
        || async move { tcp_backend(port).await.is_ok_and(|(_, n)| n == want) },
    )
    .await;
}

#[tokio::test]
async fn tcp_forwarding_weights_live_changes_and_unresolved_backends() {
    let a = tcp_echo("a").await;
    let b = tcp_echo("b").await;
    let port = free_port();
    let mut gw = Gateway::start().await;
    gw.clusters(&[("a", a), ("b", b)]).await;
    gw.listeners(&[listener("tcp", port, pb::Protocol::Tcp)])
        .await;
    gw.routes(&[route("r", "tcp", &[], &[("a", 1)])]).await;
    wait_tcp_backend(port, "a").await;

    // An HTTP listener on the TCP listener's port is NACKed by name, with the reason.
    let http = listener("z-http", port, pb::Protocol::Http);
    let nack = gw.answer(type_url::LISTENER, &[("z-http", &http)]).await;
    let reasons: Vec<(String, String)> = nack
        .resource_errors
        .iter()
        .map(|e| {
            let message = e.error_detail.as_ref().map(|d| d.message.clone());
            (e.name.clone(), message.unwrap_or_default())
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "z-http");
    assert!(
        reasons[0]
            .1
            .contains("already used by listener \"tcp\" with protocol PROTOCOL_TCP"),
        "{reasons:?}"
    );
    wait_tcp_backend(port, "a").await;

    // Bytes both ways, and half-close: the backend sees our end of stream and ends its own.
    let (mut open, name) = tcp_backend(port).await.expect("connect");
    assert_eq!(name, "a");
    assert_eq!(echo_round(&mut open, "hello").await, "hello");

    // A route change: new connections go to b, the open one stays on a and keeps working.
    gw.routes(&[route("r", "tcp", &[], &[("b", 1)])]).await;
    wait_tcp_backend(port, "b").await;
    assert_eq!(echo_round(&mut open, "still a").await, "still a");
    open.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
        .await
        .expect("backend ends its side after our half-close")
        .expect("clean end");
    assert!(rest.is_empty(), "{rest:?}");

    // A newer route on the same listener is ignored: the oldest wins.
    let mut newer = route("newer", "tcp", &[], &[("a", 1)]);
    newer.creation_order = 10;
    gw.routes(&[newer]).await;
    for _ in 0..5 {
        assert_eq!(tcp_backend(port).await.expect("connect").1, "b");
    }

    // Weighted split 3:1.
    gw.routes(&[route("r", "tcp", &[], &[("a", 3), ("b", 1)])])
        .await;
    let mut to_a = 0;
    for _ in 0..200 {
        if tcp_backend(port).await.expect("connect").1 == "a" {
            to_a += 1;
        }
    }
    assert!(
        (120..=180).contains(&to_a),
        "a got {to_a} of 200 at weight 3:1"
    );

    // A backend nothing listens on, and an unresolved backend (cluster ""), refuse connections.
    gw.clusters(&[("dead", free_port())]).await;
    gw.routes(&[route("r", "tcp", &[], &[("dead", 1)])]).await;
    eventually("dead backend refuses", Duration::from_secs(10), || async {
        tcp_backend(port).await.is_err()
    })
    .await;
    gw.routes(&[route("r", "tcp", &[], &[("b", 1)])]).await;
    wait_tcp_backend(port, "b").await;
    gw.routes(&[route("r", "tcp", &[], &[("", 1)])]).await;
    eventually(
        "unresolved backend refuses",
        Duration::from_secs(10),
        || async { tcp_backend(port).await.is_err() },
    )
    .await;
    let refused = gw
        .counter("sluice_l4_refused_total{listener=\"tcp\",protocol=\"tcp\"}")
        .await;
    assert!(refused >= 1, "refusals counted");
    let opened = gw
        .counter("sluice_l4_connections_total{listener=\"tcp\",protocol=\"tcp\"}")
        .await;
    assert!(opened >= 200, "connections counted: {opened}");
}

#[tokio::test]
async fn udp_sessions_per_client_alongside_tcp_on_the_same_port() {
    let u = udp_echo("u").await;
    let t = tcp_echo("t").await;
    let port = free_port();
    let mut gw = Gateway::start().await;
    gw.clusters(&[("u", u), ("t", t)]).await;
    let mut udp = listener("udp", port, pb::Protocol::Udp);
    // Sessions idle for 1 s end.
    udp.http = Some(pb::HttpSettings {
        idle_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    gw.listeners(&[udp, listener("tcp", port, pb::Protocol::Tcp)])
        .await;
    gw.routes(&[
        route("ru", "udp", &[], &[("u", 1)]),
        route("rt", "tcp", &[], &[("t", 1)]),
    ])
    .await;

    let one = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let two = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    one.connect(("127.0.0.1", port)).await.unwrap();
    two.connect(("127.0.0.1", port)).await.unwrap();
    let mut first = None;
    for _ in 0..50 {
        first = udp_round(&one, "one").await;
        if first.is_some() {
            break;
        }
    }
    assert_eq!(first.as_deref(), Some("u|one"));
    // Each client gets its own replies only.
    assert_eq!(udp_round(&two, "two").await.as_deref(), Some("u|two"));
    assert_eq!(udp_round(&one, "again").await.as_deref(), Some("u|again"));
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), two.recv(&mut buf))
            .await
            .is_err(),
        "no stray datagram for the other client"
    );
    // The TCP listener on the same port number works too.
    wait_tcp_backend(port, "t").await;

    let sessions = "sluice_l4_connections_total{listener=\"udp\",protocol=\"udp\"}";
    assert_eq!(gw.counter(sessions).await, 2);
    // After the idle time the session is gone: the next datagram opens a new one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(udp_round(&one, "later").await.as_deref(), Some("u|later"));
    assert_eq!(gw.counter(sessions).await, 3);
    let received = gw
        .counter("sluice_l4_received_bytes_total{listener=\"udp\",protocol=\"udp\"}")
        .await;
    assert!(received >= ("one".len() + "two".len() + "again".len()) as u64);
}

#[tokio::test]
async fn tls_passthrough_by_sni_to_backends_with_their_own_certificates() {
    let pki = TestPki::new();
    let a = tls_echo("a", &pki.leaf(&["a.test"])).await;
    let b = tls_echo("b", &pki.leaf(&["b.example.com"])).await;
    let port = free_port();
    let mut gw = Gateway::start().await;
    gw.clusters(&[("a", a), ("b", b)]).await;
    gw.listeners(&[tls_listener("tls", port, pb::TlsMode::Passthrough, &[])])
        .await;
    gw.routes(&[
        route("ra", "tls", &["a.test"], &[("a", 1)]),
        route("rb", "tls", &["*.example.com"], &[("b", 1)]),
    ])
    .await;
    let client = pki.client();
    let connect = |sni: &'static str| {
        let client = client.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from(sni).map_err(|e| e.to_string())?;
            let mut tls = tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp))
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let backend = greeting(&mut tls).await?;
            Ok::<_, String>((tls, backend))
        }
    };
    eventually("passthrough reaches a", Duration::from_secs(10), || async {
        connect("a.test").await.is_ok_and(|(_, n)| n == "a")
    })
    .await;
    // The client verified the backend's certificate for its SNI: the gateway never terminated.
    let (mut tls, backend) = connect("b.example.com").await.expect("b");
    assert_eq!(backend, "b");
    assert_eq!(echo_round(&mut tls, "through").await, "through");
    // No route for the SNI: the connection is closed before any backend sees it.
    let err = connect("unknown.test")
        .await
        .expect_err("unknown SNI refused");
    assert!(!err.is_empty());
}

#[tokio::test]
async fn tls_terminate_forwards_the_decrypted_stream_beside_passthrough_on_one_port() {
    let pki = TestPki::new();
    let (chain, key) = pki.leaf(&["gw.test"]);
    let t = tcp_echo("t").await;
    let port = free_port();
    let mut gw = Gateway::start().await;
    let secret = pb::Secret {
        name: "gw-cert".into(),
        kind: Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
            certificate_chain: chain.into_bytes(),
            private_key: key.into_bytes(),
        })),
        ..Default::default()
    };
    gw.push(type_url::SECRET, &[("gw-cert", &secret)]).await;
    // On the same port, a passthrough listener for a.test: its connections reach a TLS backend
    // untouched while gw.test is terminated by the gateway.
    let a = tls_echo("a", &pki.leaf(&["a.test"])).await;
    gw.clusters(&[("t", t), ("a", a)]).await;
    let mut terminate = tls_listener("term", port, pb::TlsMode::Terminate, &["gw-cert"]);
    terminate.hostname = "gw.test".into();
    let mut passthrough = tls_listener("pass", port, pb::TlsMode::Passthrough, &[]);
    passthrough.hostname = "a.test".into();
    gw.listeners(&[terminate, passthrough]).await;
    gw.routes(&[
        route("rt", "term", &[], &[("t", 1)]),
        route("ra", "pass", &[], &[("a", 1)]),
    ])
    .await;
    let client = pki.client();
    let connect_to = |sni: &'static str| {
        let client = client.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from(sni).map_err(|e| e.to_string())?;
            let mut tls = client.connect(name, tcp).await.map_err(|e| e.to_string())?;
            let backend = greeting(&mut tls).await?;
            Ok::<_, String>((tls, backend))
        }
    };
    let connect = || connect_to("gw.test");
    eventually("terminate reaches t", Duration::from_secs(10), || async {
        connect().await.is_ok_and(|(_, n)| n == "t")
    })
    .await;
    let (mut tls, _) = connect().await.expect("connect");
    // The gateway's certificate was verified by the client (pki root, name gw.test), and the
    // plain TCP backend echoes the decrypted bytes.
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    assert_eq!(echo_round(&mut tls, "decrypted").await, "decrypted");
    let (mut passed, backend) = connect_to("a.test").await.expect("a.test passthrough");
    assert_eq!(backend, "a");
    assert_eq!(echo_round(&mut passed, "encrypted").await, "encrypted");
    // A name neither listener accepts is closed.
    assert!(connect_to("other.test").await.is_err());
}

/// A cluster on `port` that asks for TLS, trusting the CaBundle Secret `ca`.
fn tls_cluster(name: &str, port: u16, ca: &str, server_name: &str) -> pb::Cluster {
    pb::Cluster {
        tls: Some(pb::UpstreamTls {
            server_name: server_name.into(),
            ca_secret: ca.into(),
            ..Default::default()
        }),
        ..cluster(name, port)
    }
}

fn ca_bundle(name: &str, pki: &TestPki) -> pb::Secret {
    pb::Secret {
        name: name.into(),
        kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
            pem: pki.ca_pem().into_bytes(),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn tcp_listener_originates_tls_to_a_cluster_that_asks_for_it() {
    let (pki, other) = (TestPki::new(), TestPki::new());
    let backend = tls_echo("secure", &pki.leaf(&["secure.internal", "127.0.0.1"])).await;
    let (good, by_ip, wrong, pass) = (free_port(), free_port(), free_port(), free_port());
    let mut gw = Gateway::start().await;
    gw.push(
        type_url::SECRET,
        &[
            ("ca", &ca_bundle("ca", &pki)),
            ("other", &ca_bundle("other", &other)),
        ],
    )
    .await;
    let clusters = [
        tls_cluster("good", backend, "ca", "secure.internal"),
        // No server_name: the SNI and the verified name are the endpoint's address.
        tls_cluster("by-ip", backend, "ca", ""),
        tls_cluster("wrong", backend, "other", "secure.internal"),
    ];
    let refs: Vec<(&str, &pb::Cluster)> = clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    gw.push(type_url::CLUSTER, &refs).await;
    gw.listeners(&[
        listener("good", good, pb::Protocol::Tcp),
        listener("by-ip", by_ip, pb::Protocol::Tcp),
        listener("wrong", wrong, pb::Protocol::Tcp),
        tls_listener("pass", pass, pb::TlsMode::Passthrough, &[]),
    ])
    .await;
    gw.routes(&[
        route("rg", "good", &[], &[("good", 1)]),
        route("ri", "by-ip", &[], &[("by-ip", 1)]),
        route("rw", "wrong", &[], &[("wrong", 1)]),
        route("rp", "pass", &[], &[("good", 1)]),
    ])
    .await;
    // The plaintext client reaches the TLS backend: the gateway originated TLS and verified it.
    wait_tcp_backend(good, "secure").await;
    let (mut s, _) = tcp_backend(good).await.expect("good");
    assert_eq!(echo_round(&mut s, "over tls").await, "over tls");
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("backend ends after the half-close")
        .expect("orderly end");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        tcp_backend(by_ip).await.map(|(_, n)| n),
        Ok("secure".into())
    );
    // A CA that did not sign the backend: the handshake fails and the client is reset.
    let refused = tcp_backend(wrong).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        gw.counter("sluice_l4_refused_total{listener=\"wrong\",protocol=\"tcp\"}")
            .await
            >= 1
    );
    // Passthrough forwards the client's own TLS session even to a cluster with `tls` set: the
    // client completes its handshake with the backend itself.
    let tcp = TcpStream::connect(("127.0.0.1", pass))
        .await
        .expect("connect");
    let name = ServerName::try_from("secure.internal").expect("name");
    let mut tls = tokio::time::timeout(Duration::from_secs(5), pki.client().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the client's handshake reaches the backend");
    assert_eq!(greeting(&mut tls).await, Ok("secure".into()));
}
