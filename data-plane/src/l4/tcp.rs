//! Stream forwarding for TCP and TLS listeners: connecting to an endpoint of the chosen cluster
//! (its endpoint selection, connect timeout and outlier reporting; another endpoint on connect
//! failure), originating TLS when the cluster asks for it, then relaying bytes both ways with
//! half-close and an optional idle bound.

use crate::metrics::l4::L4Stats;
use crate::upstream::CompiledCluster;
use crate::upstream::cluster::Eligibility;
use crate::upstream::connector::parse_server_name;
use crate::upstream::outlier::Outcome;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 16 * 1024;

/// Whether a stream may originate TLS to a cluster that asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origination {
    /// Per the cluster: TLS when it has `tls` settings (TCP and TLS-terminate listeners).
    ClusterTls,
    /// Always raw bytes: TLS passthrough, where the client's own TLS session flows through.
    Raw,
}

/// A connected backend: plain TCP, or TLS originated by the gateway.
pub enum Backend {
    Plain(TcpStream),
    /// Boxed: the TLS session state is large, plaintext streams should not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to an endpoint of `cluster`: available endpoints first, ejected ones when no other
/// is left (outlier detection must not take a route down), never an unhealthy one. A failed
/// connect (TCP, or the TLS handshake when the cluster uses TLS) is reported to outlier
/// detection and the next endpoint is tried, each endpoint at most once. None when no endpoint
/// accepted.
pub async fn connect_backend(
    cluster: &CompiledCluster,
    origination: Origination,
) -> Option<Backend> {
    let tls = match origination {
        Origination::Raw => None,
        Origination::ClusterTls => match cluster.stream_tls() {
            None => None,
            Some(Ok(tls)) => Some(tls),
            Some(Err(error)) => {
                // Not the endpoints' fault: nothing to report to outlier detection.
                tracing::warn!(cluster = %cluster.name, %error, "L4 upstream TLS unusable");
                return None;
            }
        },
    };
    let mut tried = 0u64;
    for _ in 0..cluster.endpoints.len().min(64) {
        let idx = cluster
            .choose(tried, Eligibility::Available)
            .or_else(|| cluster.choose(tried, Eligibility::IgnoreEjection))?;
        let endpoint = cluster.endpoints.get(idx)?;
        let authority = &endpoint.authority;
        let connect = connect_endpoint(authority, tls);
        match tokio::time::timeout(cluster.connect_timeout, connect).await {
            Ok(Ok(stream)) => {
                cluster.report(idx, Outcome::Success);
                return Some(stream);
            }
            Ok(Err(error)) => {
                tracing::debug!(cluster = %cluster.name, endpoint = %authority, %error, "L4 connect failed");
            }
            Err(_) => {
                tracing::debug!(cluster = %cluster.name, endpoint = %authority, timeout = ?cluster.connect_timeout, "L4 connect timed out");
            }
        }
        cluster.report(idx, Outcome::Failure);
        if idx >= 64 {
            break;
        }
        tried |= 1 << idx;
    }
    None
}

/// TCP to `authority`, then the TLS handshake when `tls` is set (SNI: the fixed name, else the
/// endpoint's host).
async fn connect_endpoint(
    authority: &http::uri::Authority,
    tls: Option<(&TlsConnector, Option<&str>)>,
) -> Result<Backend, String> {
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set TCP_NODELAY failed");
    }
    let Some((connector, server_name)) = tls else {
        return Ok(Backend::Plain(stream));
    };
    let name = parse_server_name(server_name.unwrap_or(authority.host()))
        .map_err(|e| format!("TLS server name: {e}"))?;
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Backend::Tls(Box::new(stream)))
}

impl AsyncRead for Backend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Backend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_flush(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    // A TLS shutdown sends close_notify before the TCP half-close, so half-close still works.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Closes a client connection with a reset, so the client sees a refusal rather than an
/// orderly end of stream.
pub fn reset(stream: &TcpStream) {
    if let Err(error) = stream.set_zero_linger() {
        tracing::debug!(%error, "set SO_LINGER failed");
    }
}

/// Last activity of a relayed stream, in milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, timeout: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

/// Copies bytes both ways until both sides have finished: an end of stream from one side is
/// passed on as a write shutdown to the other (half-close) while the other direction keeps
/// flowing. An error in either direction, or `idle` without a byte in either, ends both.
pub async fn relay<C, U>(client: C, upstream: U, idle: Option<Duration>, stats: &L4Stats)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let both = async {
        tokio::try_join!(
            one_way(
                &mut client_read,
                &mut upstream_write,
                &activity,
                &stats.received
            ),
            one_way(
                &mut upstream_read,
                &mut client_write,
                &activity,
                &stats.sent
            ),
        )
    };
    tokio::pin!(both);
    let result = match idle {
        None => both.await,
        Some(timeout) => loop {
            tokio::select! {
                result = &mut both => break result,
                _ = tokio::time::sleep_until(activity.idle_deadline(timeout)) => {
                    if activity.idle_deadline(timeout) <= Instant::now() {
                        tracing::debug!(?timeout, "idle L4 connection closed");
                        return;
                    }
                }
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(%error, "L4 connection ended with an error");
    }
}

async fn one_way<R, W>(
    from: &mut R,
    to: &mut W,
    activity: &Activity,
    bytes: &prometheus_client::metrics::counter::Counter,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close: the peer may still send its reply.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        activity.touch();
        bytes.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::{TestCert, self_signed};
    use crate::upstream::cluster::tls_inputs;
    use crate::upstream::outlier::now_ms;
    use crate::upstream::{Clients, PoolSettings};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sluice_proto::config as pb;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tokio::io::duplex;
    use tokio::net::TcpListener;

    /// A TLS server presenting `cert` that sends `name` after the handshake; returns its port.
    async fn tls_greeter(cert: &TestCert, name: &'static str) -> u16 {
        let chain = vec![CertificateDer::from(cert.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::PROVIDER.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(name.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_failed_handshake_counts_as_a_connect_failure() {
        let trusted = self_signed(&["127.0.0.1"]);
        let untrusted = self_signed(&["127.0.0.1"]);
        let good = tls_greeter(&trusted, "good").await;
        let bad = tls_greeter(&untrusted, "bad").await;
        let endpoint = |port: u16| pb::Endpoint {
            address: "127.0.0.1".into(),
            port: u32::from(port),
            weight: 1,
        };
        let c = pb::Cluster {
            name: "c".into(),
            endpoints: vec![endpoint(bad), endpoint(good)],
            tls: Some(pb::UpstreamTls {
                ca_secret: "ca".into(),
                ..Default::default()
            }),
            outlier_detection: Some(pb::OutlierDetection {
                consecutive_failures: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let secrets = BTreeMap::from([(
            "ca".to_string(),
            Arc::new(pb::Secret {
                name: "ca".into(),
                kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                    pem: trusted.cert_pem.clone().into_bytes(),
                })),
                ..Default::default()
            }),
        )]);
        let tls = tls_inputs(&c, &secrets).expect("tls inputs");
        let cluster = CompiledCluster::compile(
            &c,
            Arc::default(),
            &Clients::default(),
            tls,
            PoolSettings::default(),
            None,
        )
        .expect("compiled");
        // Round robin starts on either endpoint; over two streams the bad one is tried once.
        for _ in 0..2 {
            let Some(Backend::Tls(mut stream)) =
                connect_backend(&cluster, Origination::ClusterTls).await
            else {
                panic!("no TLS backend");
            };
            assert_eq!(stream.get_ref().1.alpn_protocol(), None, "no ALPN offered");
            let mut got = String::new();
            stream.read_to_string(&mut got).await.expect("read");
            assert_eq!(got, "good");
        }
        assert!(cluster.endpoints[0].health.is_ejected(now_ms()), "reported");
        assert!(!cluster.endpoints[1].health.is_ejected(now_ms()));
        // Raw origination (passthrough) connects plaintext even to this cluster.
        assert!(matches!(
            connect_backend(&cluster, Origination::Raw).await,
            Some(Backend::Plain(_))
        ));
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, proxy_client) = duplex(64);
        let (proxy_upstream, mut upstream) = duplex(64);
        let stats = L4Stats::default();
        let task = tokio::spawn({
            let stats = stats.clone();
            async move { relay(proxy_client, proxy_upstream, None, &stats).await }
        });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The other direction still flows after the client's half-close.
        upstream.write_all(b"reply").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
        task.await.unwrap();
        assert_eq!((stats.received.get(), stats.sent.get()), (5, 5));
    }

    #[tokio::test]
    async fn idle_streams_are_closed() {
        let (mut client, proxy_client) = duplex(64);
        let (proxy_upstream, _upstream) = duplex(64);
        let stats = L4Stats::default();
        let idle = Duration::from_millis(400);
        let task =
            tokio::spawn(
                async move { relay(proxy_client, proxy_upstream, Some(idle), &stats).await },
            );
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!task.is_finished(), "activity extends the idle deadline");
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("closed once idle")
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
    }
}
