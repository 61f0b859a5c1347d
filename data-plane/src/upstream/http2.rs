//! HTTP/2 upstream connections (h2c, or h2 over TLS): one connection per endpoint, shared by
//! every request to it (multiplexed), on hyper's `client::conn::http2`.
//!
//! Like the HTTP/1.1 pool, each endpoint's connection is found when a cluster compiles and
//! held by the compiled endpoint: it carries over config changes and closes when its endpoint
//! leaves, or when no stream has been in flight for the idle timeout (no keep-alive pings while
//! idle: gRPC servers answer those with GOAWAY). A closed connection (the upstream went away or
//! sent GOAWAY) is replaced by the next request; requests that arrive meanwhile wait for that
//! one connect.

use super::client::UpstreamBody;
use super::connector::{ConnectError, UpstreamConnector};
use super::error::{SendError, UpstreamError};
use super::http1::{connection_slots, lock};
use super::idle::{IdleClock, Reap};
use super::pool::PoolSettings;
use super::registry::Registry;
use super::response_body::ResponseBody;
use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

type Sender = http2::SendRequest<UpstreamBody>;

/// The HTTP/2 connections of one client: one connector (TCP or TLS with ALPN h2) and one set
/// of pool settings. Cloning shares it.
#[derive(Clone)]
pub struct Http2Client {
    shared: Arc<Shared>,
}

struct Shared {
    connector: UpstreamConnector,
    settings: PoolSettings,
    connect_timeout: Duration,
    registry: Mutex<Registry<Http2Endpoint>>,
    /// Closes connections idle past the idle timeout.
    clock: IdleClock,
}

/// The connection to one endpoint.
pub struct Http2Endpoint {
    shared: Arc<Shared>,
    /// What the connector dials: `scheme://authority/`.
    target: Uri,
    /// The open connection, if any, and its number (connections are numbered in order).
    current: Mutex<Option<(Sender, u64)>>,
    /// Held while connecting, so concurrent requests share one new connection; the number of
    /// the last connection made.
    connecting: tokio::sync::Mutex<u64>,
    /// The per-endpoint connection limit (a replaced connection may still finish its streams).
    slots: Arc<Semaphore>,
    /// Requests from send until their response body ends.
    in_flight: AtomicUsize,
    /// The epoch the last of them ended in.
    idle_since: AtomicU64,
}

impl Http2Client {
    pub fn new(
        connector: UpstreamConnector,
        settings: PoolSettings,
        connect_timeout: Duration,
    ) -> Self {
        Http2Client {
            shared: Arc::new(Shared {
                connector,
                settings,
                connect_timeout,
                registry: Mutex::default(),
                clock: IdleClock::new(settings.idle_timeout),
            }),
        }
    }

    /// The connection state of `authority`: the one in use when there is one.
    pub fn endpoint(&self, authority: &Authority) -> Arc<Http2Endpoint> {
        lock(&self.shared.registry).get_or_insert_with(authority, || Http2Endpoint {
            shared: self.shared.clone(),
            target: self.shared.connector.target(authority),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
            slots: connection_slots(&self.shared.settings),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }
}

impl Reap for Shared {
    fn clock(&self) -> &IdleClock {
        &self.clock
    }

    fn reap(&self, now: u64) -> bool {
        let mut left = false;
        for endpoint in lock(&self.registry).live() {
            if endpoint.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let closing = {
                let mut current = lock(&endpoint.current);
                let Some((sender, _)) = current.as_ref() else {
                    continue;
                };
                let since = endpoint.idle_since.load(Ordering::Acquire);
                if sender.is_closed() || self.clock.expired(since, now) {
                    current.take()
                } else {
                    left = true;
                    None
                }
            };
            // Closed outside the lock.
            drop(closing);
        }
        left
    }
}

/// A request on an endpoint's connection, from send until its response body ends or is
/// dropped: the connection is not idle meanwhile.
pub struct InFlight(Arc<Http2Endpoint>);

impl InFlight {
    fn new(endpoint: &Arc<Http2Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(endpoint.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let endpoint = &self.0;
        endpoint
            .idle_since
            .store(endpoint.shared.clock.now(), Ordering::Release);
        if endpoint.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            IdleClock::ensure_reaper(&endpoint.shared);
        }
    }
}

impl Http2Endpoint {
    /// Sends `req` (absolute URI: `:scheme` and `:authority` come from it) on the endpoint's
    /// connection, opening one when there is none. A request the connection refused unsent (it
    /// was closing) goes once more on a new connection; one that never left comes back with the
    /// error.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        let in_flight = InFlight::new(self);
        let (mut sender, number, reused) = match self.open() {
            Some((sender, number)) => (sender, number, true),
            None => match self.connect().await {
                Ok((sender, number)) => (sender, number, false),
                Err(error) => return Err(SendError::unsent(error, req)),
            },
        };
        let error = match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp.map(|body| ResponseBody::stream(body, in_flight))),
            Err(error) => error,
        };
        let mut error = error;
        let Some(unsent) = error.take_message() else {
            return Err(SendError::new(UpstreamError::Exchange(
                error.into_error().into(),
            )));
        };
        if !reused {
            return Err(SendError::unsent(
                UpstreamError::NotSent(error.into_error().into()),
                unsent,
            ));
        }
        tracing::debug!(endpoint = %self.authority(), error = %error.error(), "HTTP/2 connection closing; sending on a new one");
        self.forget(number);
        let mut sender = match self.connect().await {
            Ok((sender, _)) => sender,
            Err(error) => return Err(SendError::unsent(error, unsent)),
        };
        match sender.try_send_request(unsent).await {
            Ok(resp) => Ok(resp.map(|body| ResponseBody::stream(body, in_flight))),
            Err(mut error) => Err(match error.take_message() {
                Some(unsent) => {
                    SendError::unsent(UpstreamError::NotSent(error.into_error().into()), unsent)
                }
                None => SendError::new(UpstreamError::Exchange(error.into_error().into())),
            }),
        }
    }

    fn authority(&self) -> &str {
        self.target.authority().map_or("", |a| a.as_str())
    }

    /// The open connection and its number.
    fn open(&self) -> Option<(Sender, u64)> {
        lock(&self.current)
            .as_ref()
            .filter(|(s, _)| !s.is_closed())
            .map(|(s, n)| (s.clone(), *n))
    }

    /// Drops connection `number` as the current one, unless another replaced it already (its
    /// streams in flight finish on their own).
    fn forget(&self, number: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|(_, n)| *n == number) {
            *current = None;
        }
    }

    /// The open connection, or a new one: one connect at a time, the others wait for it.
    /// Waiting for a slot and connecting are bounded by the connect timeout.
    async fn connect(&self) -> Result<(Sender, u64), UpstreamError> {
        let timeout = self.shared.connect_timeout;
        let connecting = async {
            let mut last = self.connecting.lock().await;
            if let Some(open) = self.open() {
                return Ok(open);
            }
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("connection slots are never closed"));
            let stream = self
                .shared
                .connector
                .connect(self.target.clone(), slot)
                .await
                .map_err(|e| UpstreamError::Connect(e.into()))?;
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(UpstreamError::Handshake)?;
            let endpoint = self.authority().to_owned();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended with an error");
                }
            });
            *last += 1;
            *lock(&self.current) = Some((sender.clone(), *last));
            Ok((sender, *last))
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Connect(
                ConnectError::Timeout(timeout).into(),
            )),
        }
    }
}

impl std::fmt::Debug for Http2Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Endpoint")
            .field("endpoint", &self.authority())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::client::empty_body;
    use crate::upstream::connector::TcpConnector;
    use crate::upstream::dns::CachingResolver;
    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    /// An h2c upstream answering `ok`, counting the connections it accepted and saw close.
    /// With `one_each`, every connection serves one request, then goes away (GOAWAY).
    struct Upstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    async fn upstream(one_each: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            closed: Arc::default(),
        };
        let (accepted, closed) = (up.accepted.clone(), up.closed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let served = Arc::new(Notify::new());
                    let notify = served.clone();
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        notify.notify_one();
                        async move {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = served.notified(), if one_each => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    fn endpoint(client: &Http2Client, addr: SocketAddr) -> Arc<Http2Endpoint> {
        client.endpoint(&Authority::try_from(addr.to_string()).unwrap())
    }

    fn new_client() -> Http2Client {
        client_with(PoolSettings::default())
    }

    fn client_with(settings: PoolSettings) -> Http2Client {
        let tcp = TcpConnector::new_with_resolver(CachingResolver::new(Duration::ZERO));
        Http2Client::new(
            UpstreamConnector::plain(tcp),
            settings,
            Duration::from_secs(5),
        )
    }

    fn get(addr: SocketAddr) -> Request<UpstreamBody> {
        Request::get(format!("http://{addr}/"))
            .version(http::Version::HTTP_2)
            .body(empty_body())
            .unwrap()
    }

    async fn call(endpoint: &Arc<Http2Endpoint>, addr: SocketAddr) -> String {
        let resp = endpoint.send(get(addr)).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn requests_share_one_connection_until_the_endpoint_goes() {
        let up = upstream(false).await;
        let client = new_client();
        let conn = endpoint(&client, up.addr);
        // Concurrent first requests wait for one connect.
        let calls = (0..4).map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { call(&conn, up.addr).await })
        });
        for call in calls.collect::<Vec<_>>() {
            assert_eq!(call.await.unwrap(), "ok");
        }
        assert_eq!(call(&conn, up.addr).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert!(Arc::ptr_eq(&conn, &endpoint(&client, up.addr)));
        // No compiled endpoint holds it any more: the connection closes.
        drop(conn);
        eventually("the connection closed", || {
            up.closed.load(Ordering::SeqCst) == 1
        })
        .await;
    }

    /// No stream in flight for the idle timeout closes the connection; a long stream keeps it.
    #[tokio::test]
    async fn connections_idle_past_the_idle_timeout_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(Notify::new());
        let (a, c, r) = (accepted.clone(), closed.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (c, r) = (c.clone(), r.clone());
                tokio::spawn(async move {
                    // `/long` streams a chunk, then the rest once released.
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = r.clone();
                        async move {
                            let (tx, rx) = tokio::sync::mpsc::channel::<
                                Result<http_body::Frame<Bytes>, Infallible>,
                            >(2);
                            let long = req.uri().path() == "/long";
                            tokio::spawn(async move {
                                let _ = tx.send(Ok(http_body::Frame::data(Bytes::from("a")))).await;
                                if long {
                                    r.notified().await;
                                }
                                let _ = tx.send(Ok(http_body::Frame::data(Bytes::from("b")))).await;
                            });
                            let body = http_body_util::StreamBody::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            );
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let client = client_with(PoolSettings {
            idle_timeout: Duration::from_millis(100),
            ..PoolSettings::default()
        });
        let conn = endpoint(&client, addr);
        let long = |path: &str| {
            Request::get(format!("http://{addr}{path}"))
                .version(http::Version::HTTP_2)
                .body(empty_body())
                .unwrap()
        };
        // A first request leaves the connection idle: the reaper runs.
        let resp = conn.send(long("/")).await.expect("response");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ab");
        let resp = conn.send(long("/long")).await.expect("response");
        let mut body = resp.into_body();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        // Well past the idle timeout with the stream open: the connection stays, and carries
        // other requests.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let resp = conn.send(long("/")).await.expect("response");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ab");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(closed.load(Ordering::SeqCst), 0);
        release.notify_one();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "b");
        eventually("the idle connection closed", || {
            closed.load(Ordering::SeqCst) == 1
        })
        .await;
        let resp = conn.send(long("/")).await.expect("response");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ab");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let up = upstream(true).await;
        let client = new_client();
        let conn = endpoint(&client, up.addr);
        for _ in 0..5 {
            assert_eq!(call(&conn, up.addr).await, "ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 5);
    }

    /// An HTTP/2 cluster with TLS speaks h2 negotiated by ALPN, through the compiled cluster.
    #[tokio::test]
    async fn tls_clusters_negotiate_h2() {
        use crate::resources::Resources;
        use crate::snapshot::Compiler;
        use sluice_proto::config as pb;
        let cert = crate::tls::test_certs::self_signed(&["localhost"]);
        let key = crate::tls::load_certified_key(&pb::TlsCertificate {
            certificate_chain: cert.cert_pem.into_bytes(),
            private_key: cert.key_pem.into_bytes(),
        })
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(stream).await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let version = format!("{:?}", req.version());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(version))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let mut res = Resources::default();
        res.clusters.insert(
            "grpcs".into(),
            Arc::new(pb::Cluster {
                name: "grpcs".into(),
                endpoints: vec![pb::Endpoint {
                    address: "127.0.0.1".into(),
                    port: u32::from(addr.port()),
                    weight: 1,
                }],
                protocol: pb::UpstreamProtocol::H2c as i32,
                tls: Some(pb::UpstreamTls {
                    insecure_skip_verify: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let snap = Compiler::new().compile(&res);
        let cluster = snap.cluster("grpcs").expect("compiled");
        let req = Request::get(format!("https://{addr}/"))
            .version(http::Version::HTTP_2)
            .body(empty_body())
            .unwrap();
        let resp = cluster.send(0, req).await.expect("response");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "HTTP/2.0");
    }

    #[tokio::test]
    async fn a_request_that_could_not_connect_comes_back() {
        let dead: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client = new_client();
        let failed = endpoint(&client, dead)
            .send(get(dead))
            .await
            .expect_err("refused");
        assert!(failed.error.nothing_sent(), "{}", failed.error);
        assert!(failed.unsent.is_some());
    }
}
