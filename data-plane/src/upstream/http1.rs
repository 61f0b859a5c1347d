//! Our HTTP/1.1 upstream connection pool, on our own HTTP/1.1 client codec ([`codec`], driven
//! inline by the request's future in [`connection`]: no connection task, no channels).
//!
//! Each endpoint has its own pool ([`EndpointPool`]), found when a cluster compiles and held by
//! the compiled endpoint, so a request goes straight to its endpoint's idle list: no pool key
//! to hash and compare per request. An endpoint's pool is shared by every compiled version of
//! every cluster that lists the endpoint on the same client, so idle connections survive config
//! changes; when no compiled cluster lists it any more, the pool and its idle connections go.
//!
//! A connection goes back to its idle list when the response body has been read to the end
//! (at once for a response without a body) and the exchange left it clean (see
//! [`connection`]); a body dropped early closes it, as does an upgrade (`101`). Idle
//! connections older than the idle timeout are closed by the client's reaper ([`IdleClock`]);
//! its ticks are the pool's clock, so the request path reads no clock.

pub mod codec;
pub mod connection;

use super::client::{UpstreamBody, empty_body};
use super::connector::{ConnectError, UpstreamConnector};
use super::error::{SendError, UpstreamError};
use super::idle::{IdleClock, Reap};
use super::pool::PoolSettings;
use super::registry::Registry;
use super::response_body::ResponseBody;
use connection::{Connection, ExchangeError, Exchanged, Http1Error, ResponseStream};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Waiters above this count are pruned of the ones that gave up, so requests that time out at
/// the connection limit cannot pile up.
const PRUNE_WAITERS: usize = 64;

/// The HTTP/1.1 pools of one client: one connector (TCP or TLS) and one set of pool settings.
/// Cloning shares it.
#[derive(Clone)]
pub struct Http1Client {
    shared: Arc<Shared>,
}

struct Shared {
    connector: UpstreamConnector,
    settings: PoolSettings,
    connect_timeout: Duration,
    /// The endpoint pools in use.
    registry: Mutex<Registry<EndpointPool>>,
    /// Closes idle connections past the idle timeout; its epoch stamps them.
    clock: IdleClock,
}

/// The connections to one endpoint.
pub struct EndpointPool {
    shared: Arc<Shared>,
    /// What the connector dials: `scheme://authority/`.
    target: Uri,
    state: Mutex<State>,
    /// The per-endpoint connection limit: an open connection holds a permit until it closes.
    slots: Arc<Semaphore>,
}

#[derive(Default)]
struct State {
    /// Oldest first: checkout takes the newest (warm), the reaper closes from the front.
    idle: VecDeque<Idle>,
    /// Requests waiting at the connection limit, first come first served.
    waiters: VecDeque<oneshot::Sender<Connection>>,
}

struct Idle {
    conn: Connection,
    /// The epoch it went idle in.
    since: u64,
}

/// A connection taken from the idle list.
struct Pooled {
    conn: Connection,
    /// It stayed idle across a reaper tick: long enough that the upstream may have closed it
    /// (keep-alive timeout, restart) and the close may not have been seen yet.
    suspect: bool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-endpoint connection limit: an open connection holds a permit until it closes.
pub(super) fn connection_slots(settings: &PoolSettings) -> Arc<Semaphore> {
    let max = usize::try_from(settings.max_connections_per_endpoint)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(max))
}

/// Methods a request may be repeated with (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Http1Client {
    pub fn new(
        connector: UpstreamConnector,
        settings: PoolSettings,
        connect_timeout: Duration,
    ) -> Self {
        Http1Client {
            shared: Arc::new(Shared {
                connector,
                settings,
                connect_timeout,
                registry: Mutex::default(),
                clock: IdleClock::new(settings.idle_timeout),
            }),
        }
    }

    /// The pool of `authority`: the one in use when there is one, so its connections carry
    /// over to the cluster being compiled.
    pub fn endpoint(&self, authority: &Authority) -> Arc<EndpointPool> {
        lock(&self.shared.registry).get_or_insert_with(authority, || EndpointPool {
            shared: self.shared.clone(),
            target: self.shared.connector.target(authority),
            state: Mutex::default(),
            slots: connection_slots(&self.shared.settings),
        })
    }

    /// Idle connections over all endpoints (tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.shared.pools().iter().map(|p| p.idle_count()).sum()
    }
}

impl Shared {
    fn pools(&self) -> Vec<Arc<EndpointPool>> {
        lock(&self.registry).live()
    }
}

impl Reap for Shared {
    fn clock(&self) -> &IdleClock {
        &self.clock
    }

    fn reap(&self, now: u64) -> bool {
        let mut left = false;
        for pool in self.pools() {
            let expired: Vec<Idle> = {
                let mut state = lock(&pool.state);
                let mut expired = Vec::new();
                while state
                    .idle
                    .front()
                    .is_some_and(|i| self.clock.expired(i.since, now))
                {
                    expired.extend(state.idle.pop_front());
                }
                left |= !state.idle.is_empty();
                expired
            };
            // Closed outside the lock.
            drop(expired);
        }
        left
    }
}

/// How a checkout goes on when no idle connection was found.
enum Next {
    Connect(OwnedSemaphorePermit),
    Wait(oneshot::Receiver<Connection>),
}

/// What a request on a suspect connection needs to be sent again: an idempotent request
/// without a body.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(req: &Request<UpstreamBody>) -> Option<Replay> {
        (is_idempotent(req.method()) && req.body().is_end_stream()).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(empty_body());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

impl EndpointPool {
    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, else on a new one.
    /// A request that never left comes back with the error.
    ///
    /// Stale connections (closed by the upstream while idle) must not fail requests. Checkout
    /// skips idle connections on which a close (or anything else) arrived. A connection idle
    /// across a reaper tick is suspect: the pool yields once first, so a close already received
    /// is seen, and keeps a copy of an idempotent bodyless request, which goes once more on a
    /// new connection if the connection closes before any response. A request nothing of which
    /// was written on a pooled connection goes on a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        match self.take_idle() {
            Some(Pooled {
                conn,
                suspect: false,
            }) => match conn.exchange(&mut req).await {
                Ok(exchanged) => Ok(self.lease(exchanged)),
                Err(error) => Box::pin(self.after_failure(error, req, None)).await,
            },
            Some(Pooled {
                conn,
                suspect: true,
            }) => Box::pin(self.send_suspect(conn, req)).await,
            None => Box::pin(self.send_fresh(req)).await,
        }
    }

    async fn send_suspect(
        self: &Arc<Self>,
        mut conn: Connection,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        // Tokio runs a yielded task after polling the I/O driver: a close already received
        // marks the socket readable.
        tokio::task::yield_now().await;
        if !conn.is_open_and_quiet() {
            drop(conn);
            return self.send_fresh(req).await;
        }
        let replay = Replay::of(&req);
        match conn.exchange(&mut req).await {
            Ok(exchanged) => Ok(self.lease(exchanged)),
            Err(error) => self.after_failure(error, req, replay).await,
        }
    }

    /// A pooled connection failed with `req`: once more on a new connection when nothing was
    /// sent, or when a replayable request met a close before any response.
    async fn after_failure(
        self: &Arc<Self>,
        error: ExchangeError,
        req: Request<UpstreamBody>,
        replay: Option<Replay>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        let again = match error {
            ExchangeError::NotSent(error) => {
                tracing::debug!(endpoint = %self.authority(), %error, "pooled connection closed while idle; sending on a new connection");
                req
            }
            ExchangeError::Failed {
                error,
                response_started,
            } => match replay {
                Some(replay) if !response_started && closed_before_response(&error) => {
                    tracing::debug!(endpoint = %self.authority(), %error, "pooled connection closed before the response; sending again on a new connection");
                    replay.request()
                }
                _ => return Err(SendError::new(UpstreamError::Exchange(error.into()))),
            },
        };
        self.send_fresh(again).await
    }

    /// Sends on a new connection (or one handed over at the connection limit), without retry.
    async fn send_fresh(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError<Request<UpstreamBody>>> {
        let conn = match self.checkout_new().await {
            Ok(conn) => conn,
            Err(error) => return Err(SendError::unsent(error, req)),
        };
        match conn.exchange(&mut req).await {
            Ok(exchanged) => Ok(self.lease(exchanged)),
            Err(ExchangeError::NotSent(error)) => {
                Err(SendError::unsent(UpstreamError::NotSent(error.into()), req))
            }
            Err(ExchangeError::Failed { error, .. }) => {
                Err(SendError::new(UpstreamError::Exchange(error.into())))
            }
        }
    }

    fn authority(&self) -> &str {
        self.target.authority().map_or("", |a| a.as_str())
    }

    /// The most recently returned idle connection that is still open.
    fn take_idle(&self) -> Option<Pooled> {
        let now = self.shared.clock.now();
        loop {
            let Idle { mut conn, since } = lock(&self.state).idle.pop_back()?;
            // Checked outside the lock; a closed one closes here too.
            if conn.is_open_and_quiet() {
                return Some(Pooled {
                    conn,
                    suspect: since != now,
                });
            }
        }
    }

    /// A new connection, or one another request returns while this one waits at the
    /// connection limit; both within the connect timeout.
    async fn checkout_new(self: &Arc<Self>) -> Result<Connection, UpstreamError> {
        let next = {
            let mut state = lock(&self.state);
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => Next::Connect(slot),
                Err(_) => {
                    if state.waiters.len() >= PRUNE_WAITERS {
                        state.waiters.retain(|w| !w.is_closed());
                    }
                    let (tx, rx) = oneshot::channel();
                    state.waiters.push_back(tx);
                    Next::Wait(rx)
                }
            }
        };
        let timeout = self.shared.connect_timeout;
        let connecting = async {
            let slot = match next {
                Next::Connect(slot) => slot,
                Next::Wait(rx) => match self.wait(rx).await {
                    Ok(conn) => return Ok(conn),
                    Err(slot) => slot,
                },
            };
            self.connect(slot).await
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Connect(
                ConnectError::Timeout(timeout).into(),
            )),
        }
    }

    /// At the limit: the first of a connection handed over by a returning request (Ok) or a
    /// free slot (Err).
    async fn wait(
        &self,
        mut rx: oneshot::Receiver<Connection>,
    ) -> Result<Connection, OwnedSemaphorePermit> {
        let never_closed = |_| unreachable!("connection slots are never closed");
        tokio::select! {
            biased;
            handed = &mut rx => match handed {
                Ok(conn) => Ok(conn),
                // Only the pool drops waiters, and this request holds the pool.
                Err(_) => Err(self.slots.clone().acquire_owned().await.unwrap_or_else(never_closed)),
            },
            slot = self.slots.clone().acquire_owned() => {
                // A connection handed over at the same moment is used rather than lost.
                rx.close();
                match rx.try_recv() {
                    Ok(conn) => Ok(conn),
                    Err(_) => Err(slot.unwrap_or_else(never_closed)),
                }
            }
        }
    }

    /// Connects (TCP, then TLS for a TLS cluster).
    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Connection, UpstreamError> {
        let stream = self
            .shared
            .connector
            .connect(self.target.clone(), slot)
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        Ok(Connection::new(stream))
    }

    /// The response, holding its connection until the body ends.
    fn lease(self: &Arc<Self>, exchanged: Exchanged) -> Response<ResponseBody> {
        let Exchanged { head, body } = exchanged;
        let body = match body {
            // The connection becomes the upgrade's tunnel: never reused.
            ResponseStream::Upgraded(io) => ResponseBody::upgraded(io),
            ResponseStream::Body(streaming) => ResponseBody::http1(streaming, self),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// Back to the idle list, or to a request waiting at the connection limit.
    pub(super) fn put(self: &Arc<Self>, conn: Connection) {
        let max_idle = usize::try_from(self.shared.settings.max_idle_per_endpoint)
            .unwrap_or(usize::MAX)
            .max(1);
        let since = self.shared.clock.now();
        let evicted = {
            let mut state = lock(&self.state);
            let mut conn = conn;
            while let Some(waiter) = state.waiters.pop_front() {
                match waiter.send(conn) {
                    Ok(()) => return,
                    // That request gave up.
                    Err(back) => conn = back,
                }
            }
            let evicted = if state.idle.len() >= max_idle {
                state.idle.pop_front()
            } else {
                None
            };
            state.idle.push_back(Idle { conn, since });
            evicted
        };
        drop(evicted);
        IdleClock::ensure_reaper(&self.shared);
    }

    fn idle_count(&self) -> usize {
        lock(&self.state).idle.len()
    }
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("endpoint", &self.authority())
            .finish_non_exhaustive()
    }
}

/// The connection failed before any response: what a close by the upstream looks like when
/// the request was already on its way.
fn closed_before_response(error: &Http1Error) -> bool {
    matches!(error, Http1Error::ClosedBeforeResponse | Http1Error::Io(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connector::TcpConnector;
    use crate::upstream::dns::CachingResolver;
    use bytes::Bytes;
    use http::StatusCode;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{Barrier, Notify};

    /// A hyper HTTP/1.1 upstream counting the connections it accepted and saw close.
    /// `/hold` answers once `release` is notified, `/gather` once three requests are in,
    /// `/stream` sends one chunk and then nothing, `/upgrade` switches to an echo tunnel,
    /// anything else answers `ok` at once.
    struct Upstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        received: Arc<AtomicUsize>,
        release: Arc<Notify>,
    }

    type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

    async fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            closed: Arc::default(),
            received: Arc::default(),
            release: Arc::default(),
        };
        let (accepted, closed, received, release) = (
            up.accepted.clone(),
            up.closed.clone(),
            up.received.clone(),
            up.release.clone(),
        );
        let gather = Arc::new(Barrier::new(3));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (closed, received, release, gather) = (
                    closed.clone(),
                    received.clone(),
                    release.clone(),
                    gather.clone(),
                );
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        received.fetch_add(1, Ordering::SeqCst);
                        let (release, gather) = (release.clone(), gather.clone());
                        async move {
                            let body = |b: &'static str| -> TestBody {
                                http_body_util::Full::new(Bytes::from_static(b.as_bytes())).boxed()
                            };
                            let resp = match req.uri().path() {
                                "/hold" => {
                                    release.notified().await;
                                    Response::new(body("held"))
                                }
                                "/gather" => {
                                    gather.wait().await;
                                    Response::new(body("gathered"))
                                }
                                "/stream" => {
                                    let (tx, rx) = tokio::sync::mpsc::channel::<
                                        Result<Frame<Bytes>, Infallible>,
                                    >(1);
                                    let _ = tx.send(Ok(Frame::data(Bytes::from("first")))).await;
                                    // Never ends: the sender lives in a task that waits forever.
                                    tokio::spawn(async move {
                                        tx.closed().await;
                                    });
                                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                                    Response::new(StreamBody::new(stream).boxed())
                                }
                                "/upgrade" => {
                                    let on = hyper::upgrade::on(&mut req);
                                    tokio::spawn(async move {
                                        let Ok(io) = on.await else { return };
                                        let mut io = TokioIo::new(io);
                                        let mut buf = [0u8; 64];
                                        while let Ok(n) = io.read(&mut buf).await {
                                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                                break;
                                            }
                                        }
                                    });
                                    Response::builder()
                                        .status(StatusCode::SWITCHING_PROTOCOLS)
                                        .header("connection", "upgrade")
                                        .header("upgrade", "echo")
                                        .body(body(""))
                                        .unwrap()
                                }
                                _ => Response::new(body("ok")),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    fn settings(max_connections: u32, max_idle: u32, idle_timeout: Duration) -> PoolSettings {
        PoolSettings {
            max_connections_per_endpoint: max_connections,
            max_idle_per_endpoint: max_idle,
            idle_timeout,
            dns_ttl: Duration::ZERO,
        }
    }

    fn new_client(settings: PoolSettings, connect_timeout: Duration) -> Http1Client {
        let tcp = TcpConnector::new_with_resolver(CachingResolver::new(Duration::ZERO));
        Http1Client::new(UpstreamConnector::plain(tcp), settings, connect_timeout)
    }

    fn pool_of(client: &Http1Client, addr: SocketAddr) -> Arc<EndpointPool> {
        client.endpoint(&Authority::try_from(addr.to_string()).unwrap())
    }

    fn get(addr: SocketAddr, path: &str) -> Request<UpstreamBody> {
        Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(empty_body())
            .unwrap()
    }

    /// Sends a GET and reads the whole answer.
    async fn call(pool: &Arc<EndpointPool>, addr: SocketAddr, path: &str) -> String {
        let resp = pool.send(get(addr, path)).await.expect("response");
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

    fn count(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let up = upstream().await;
        let client = new_client(PoolSettings::default(), Duration::from_secs(5));
        let pool = pool_of(&client, up.addr);
        for _ in 0..3 {
            assert_eq!(call(&pool, up.addr, "/").await, "ok");
        }
        assert_eq!(count(&up.accepted), 1);
        assert_eq!(client.idle_count(), 1);
        // The registry hands out the pool in use for the same authority.
        assert!(Arc::ptr_eq(&pool, &pool_of(&client, up.addr)));
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let up = upstream().await;
        let client = new_client(
            settings(8, 8, Duration::from_millis(100)),
            Duration::from_secs(5),
        );
        let pool = pool_of(&client, up.addr);
        assert_eq!(call(&pool, up.addr, "/").await, "ok");
        assert_eq!(client.idle_count(), 1);
        eventually("the idle connection closed", || count(&up.closed) == 1).await;
        assert_eq!(client.idle_count(), 0);
        // The reaper stops with nothing idle and starts again with the next connection.
        assert_eq!(call(&pool, up.addr, "/").await, "ok");
        assert_eq!(count(&up.accepted), 2);
        eventually("the second one closed too", || count(&up.closed) == 2).await;
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_maximum_close() {
        let up = upstream().await;
        let client = new_client(
            settings(8, 1, Duration::from_secs(90)),
            Duration::from_secs(5),
        );
        let pool = pool_of(&client, up.addr);
        // Three requests the upstream answers together: three connections.
        let calls = (0..3).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { call(&pool, up.addr, "/gather").await })
        });
        for call in calls.collect::<Vec<_>>() {
            assert_eq!(call.await.unwrap(), "gathered");
        }
        assert_eq!(count(&up.accepted), 3);
        assert_eq!(client.idle_count(), 1);
        eventually("two connections closed", || count(&up.closed) == 2).await;
    }

    #[tokio::test]
    async fn requests_at_the_connection_limit_wait_for_a_connection() {
        let up = upstream().await;
        let client = new_client(
            settings(1, 8, Duration::from_secs(90)),
            Duration::from_secs(5),
        );
        let pool = pool_of(&client, up.addr);
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { call(&pool, up.addr, "/hold").await }
        });
        eventually("the first request arrived", || count(&up.received) == 1).await;
        // The second waits for the first one's connection instead of opening another.
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { call(&pool, up.addr, "/").await }
        });
        up.release.notify_one();
        assert_eq!(first.await.unwrap(), "held");
        assert_eq!(second.await.unwrap(), "ok");
        assert_eq!(count(&up.accepted), 1);

        // No connection within the connect timeout: a connect error (nothing was sent).
        let short = new_client(
            settings(1, 8, Duration::from_secs(90)),
            Duration::from_millis(100),
        );
        let pool = pool_of(&short, up.addr);
        let held = tokio::spawn({
            let pool = pool.clone();
            async move { call(&pool, up.addr, "/hold").await }
        });
        eventually("the held request arrived", || count(&up.received) == 3).await;
        let failed = pool
            .send(get(up.addr, "/"))
            .await
            .expect_err("no connection");
        let error = &failed.error;
        assert!(error.nothing_sent(), "{error}");
        assert!(error.to_string().contains("connect timeout"), "{error}");
        // The request comes back for a retry elsewhere.
        assert_eq!(failed.unsent.expect("unsent").uri().path(), "/");
        up.release.notify_one();
        assert_eq!(held.await.unwrap(), "held");
    }

    #[tokio::test]
    async fn early_dropped_bodies_and_upgrades_never_return_their_connection() {
        let up = upstream().await;
        let client = new_client(PoolSettings::default(), Duration::from_secs(5));
        let pool = pool_of(&client, up.addr);
        let resp = pool.send(get(up.addr, "/stream")).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        drop(body);
        eventually("the connection closed", || count(&up.closed) == 1).await;
        assert_eq!(client.idle_count(), 0);

        // An upgrade turns the connection into a tunnel.
        let mut req = get(up.addr, "/upgrade");
        req.headers_mut()
            .insert("connection", http::HeaderValue::from_static("upgrade"));
        req.headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("echo"));
        let resp = pool.send(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut tunnel = resp.into_body().into_upgraded().expect("upgraded");
        tunnel.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tunnel.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(client.idle_count(), 0);
        assert_eq!(count(&up.accepted), 2);
    }

    /// Reads one request head from a blocking stream; false at the end of the stream.
    fn read_head(stream: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// A raw HTTP/1.1 upstream on its own thread that answers one request per connection and
    /// then closes the connection: at once when the next request arrives (`on_request`), or
    /// while idle, when told to through the returned sender (confirming on the receiver).
    /// Accepted connections are counted.
    fn closing_upstream(
        on_request: bool,
    ) -> (
        SocketAddr,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
        Arc<AtomicUsize>,
    ) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                if !read_head(&mut stream) || stream.write_all(OK).is_err() {
                    continue;
                }
                if on_request {
                    read_head(&mut stream);
                } else if close_rx.recv().is_err() {
                    return;
                }
                drop(stream);
                let _ = closed_tx.send(());
            }
        });
        (addr, close_tx, closed_rx, accepted)
    }

    fn with_method(mut req: Request<UpstreamBody>, method: Method) -> Request<UpstreamBody> {
        *req.method_mut() = method;
        req
    }

    /// Waits until the reaper ticked: the idle connections become suspect.
    async fn next_tick(client: &Http1Client) {
        let epoch = || client.shared.clock.now();
        let start = epoch();
        eventually("a reaper tick", || epoch() > start).await;
    }

    /// Reaper ticks of 200 ms.
    fn ticking_client() -> Http1Client {
        new_client(
            settings(8, 8, Duration::from_millis(1600)),
            Duration::from_secs(5),
        )
    }

    /// The upstream closed an idle connection and the close is in the socket, but the
    /// connection's task has not seen it yet: the pool does not send on it, whatever the method.
    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_closed_while_idle_is_not_used() {
        let (addr, close, closed, accepted) = closing_upstream(false);
        let client = ticking_client();
        let pool = pool_of(&client, addr);
        assert_eq!(call(&pool, addr, "/").await, "ok");
        next_tick(&client).await;
        // Blocks this (only) runtime thread until the upstream has closed the connection,
        // so the connection's task cannot see the close before the next request.
        close.send(()).unwrap();
        closed.recv().unwrap();
        let resp = pool.send(with_method(get(addr, "/"), Method::POST)).await;
        assert_eq!(resp.expect("response").status(), StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// The keep-alive race: the upstream closes an idle connection as a request arrives on
    /// it. An idempotent request without a body goes once more, on a new connection; others
    /// may have been acted on and fail.
    #[tokio::test]
    async fn an_idempotent_request_meeting_a_close_goes_again_on_a_new_connection() {
        let (addr, _close, _closed, accepted) = closing_upstream(true);
        let client = ticking_client();
        let pool = pool_of(&client, addr);
        assert_eq!(call(&pool, addr, "/").await, "ok");
        next_tick(&client).await;
        assert_eq!(call(&pool, addr, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        next_tick(&client).await;
        let failed = pool
            .send(with_method(get(addr, "/"), Method::POST))
            .await
            .expect_err("not replayed");
        assert!(!failed.error.nothing_sent(), "{}", failed.error);
        assert!(failed.unsent.is_none());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A response read to its end gives its connection back whatever the framing and however
    /// the bytes arrive (here the end of a chunked body comes in a read of its own).
    #[tokio::test]
    async fn connections_come_back_after_chunked_bodies_ending_in_a_later_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                while read_head(&mut stream) {
                    let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n";
                    if stream.write_all(head).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(30));
                    if stream.write_all(b"0\r\n\r\n").is_err() {
                        break;
                    }
                }
            }
        });
        let client = new_client(PoolSettings::default(), Duration::from_secs(5));
        let pool = pool_of(&client, addr);
        for _ in 0..3 {
            assert_eq!(call(&pool, addr, "/").await, "ok");
            assert_eq!(client.idle_count(), 1);
        }
        assert_eq!(count(&accepted), 1);
    }

    /// Requests waiting for the one connection are never pipelined on it: the next request
    /// goes out only once the previous response has been read.
    #[tokio::test]
    async fn requests_are_never_pipelined() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let early = Arc::new(AtomicUsize::new(0));
        let seen_early = early.clone();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            for _ in 0..2 {
                if !read_head(&mut stream) {
                    return;
                }
                // While this request is unanswered, nothing more may arrive.
                std::thread::sleep(Duration::from_millis(100));
                stream.set_nonblocking(true).unwrap();
                if stream.read(&mut [0u8; 1]).is_ok() {
                    seen_early.fetch_add(1, Ordering::SeqCst);
                }
                stream.set_nonblocking(false).unwrap();
                if stream.write_all(OK).is_err() {
                    return;
                }
            }
        });
        let client = new_client(
            settings(1, 8, Duration::from_secs(90)),
            Duration::from_secs(5),
        );
        let pool = pool_of(&client, addr);
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { call(&pool, addr, "/").await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), "ok");
        }
        assert_eq!(count(&early), 0, "a request was pipelined");
    }

    /// A config change keeps the idle connections of the endpoints that stay; an endpoint
    /// that leaves every cluster loses its pool, and its idle connections close at once.
    #[tokio::test]
    async fn endpoints_keep_their_connections_across_config_changes_until_they_leave() {
        use crate::resources::Resources;
        use crate::snapshot::{Changed, Compiler, Snapshot};
        let (a, b) = (upstream().await, upstream().await);
        let mut res = Resources::default();
        res.add_cluster("c", &[("127.0.0.1", a.addr.port())]);
        let mut compiler = Compiler::new();
        let changed = Changed {
            clusters: ["c".to_string()].into(),
            ..Default::default()
        };
        async fn call_endpoint(snap: &Snapshot, idx: usize) -> StatusCode {
            let cluster = snap.cluster("c").unwrap();
            let addr = cluster.endpoints[idx].authority.as_str().parse().unwrap();
            let resp = cluster.send(idx, get(addr, "/")).await.expect("response");
            let status = resp.status();
            resp.into_body().collect().await.unwrap();
            status
        }
        let first = compiler.compile(&res);
        assert_eq!(call_endpoint(&first, 0).await, StatusCode::OK);

        res.add_cluster(
            "c",
            &[("127.0.0.1", a.addr.port()), ("127.0.0.1", b.addr.port())],
        );
        let second = compiler.compile_changes(&res, &changed);
        assert_eq!(call_endpoint(&second, 0).await, StatusCode::OK);
        assert_eq!(call_endpoint(&second, 1).await, StatusCode::OK);
        assert_eq!(count(&a.accepted), 1, "the idle connection carried over");

        res.add_cluster("c", &[("127.0.0.1", b.addr.port())]);
        let third = compiler.compile_changes(&res, &changed);
        // Old snapshots go when their last requests finish.
        drop((first, second));
        eventually("the removed endpoint's connection closed", || {
            count(&a.closed) == 1
        })
        .await;
        assert_eq!(call_endpoint(&third, 0).await, StatusCode::OK);
        assert_eq!(count(&b.accepted), 1);
        assert_eq!(count(&b.closed), 0);
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
