//! The proxy runtime: owns the current snapshot and the listening sockets, reconciles sockets
//! against each new snapshot (bind new ports, stop removed ones, never reopen a kept one) and
//! serves every accepted connection (HTTP/1.1 and h2c, or TLS with h2/http1.1 by ALPN on HTTPS
//! ports; TCP, TLS and UDP listeners through `l4`) on its own task. HTTP/1.1 is our own server
//! (`server::http1`); HTTP/2 is hyper's.

use crate::in_place;
use crate::l4::rewind::Rewind;
use crate::l4::{self, L4Context};
use crate::observe::{ObservedBody, Observer};
use crate::proxy::Peer;
use crate::server::http1::{self, BoxIo, Ended, Io, Lifecycle, RequestBody};
use crate::snapshot::{PortKind, Snapshot};
use crate::timeouts::{
    Activity, BodyBound, BodyStall, ClientIo, InFlightBody, Protocol, TunnelActivity, WaitingBody,
};
use crate::tls::{self, TlsConnection};
use crate::upstream::HealthCheckers;
use arc_swap::ArcSwap;
use futures::task::AtomicWaker;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Notify, watch};
use tokio_rustls::TlsAcceptor;

const ACCEPT_BACKLOG: u32 = 1024;
/// Bound on a request's header bytes (HTTP/1: start line included).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by the runtime, its accept loops and its connections.
struct Shared {
    /// Also read by the TLS certificate resolvers at each handshake.
    current: Arc<ArcSwap<Snapshot>>,
    /// HTTP/2 (ALPN h2 and h2c); HTTP/1.1 is `server::http1`.
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// Open connections, for a bounded drain on shutdown.
    connections: AtomicUsize,
    drained: Notify,
    /// Metrics and access logs of every request.
    observer: Arc<Observer>,
}

/// An open listening port: its accept loop stops (and its connections drain) when `stop` fires.
struct PortHandle {
    stop: watch::Sender<bool>,
    /// Identifies this bind (logged), so a kept socket can be told from a reopened one.
    generation: u64,
    /// What the socket serves; switching kind rebinds the port. None: a UDP socket.
    kind: Option<PortKind>,
    accept_loop: tokio::task::JoinHandle<()>,
}

pub struct ProxyRuntime {
    bind_ip: IpAddr,
    shared: Arc<Shared>,
    ports: Mutex<HashMap<u16, PortHandle>>,
    /// UDP sockets by port (locked after `ports`).
    udp_ports: Mutex<HashMap<u16, PortHandle>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Probe tasks of the clusters with active health checks, following each applied snapshot.
    health: HealthCheckers,
}

impl ProxyRuntime {
    pub fn new(bind_ip: IpAddr) -> Arc<Self> {
        Self::with_observer(bind_ip, Observer::default())
    }

    pub fn with_observer(bind_ip: IpAddr, observer: Observer) -> Arc<Self> {
        // A request head larger than this gets 431 (HTTP/1: our server; HTTP/2: hyper's).
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Extended CONNECT (RFC 8441) carries WebSocket over HTTP/2 (`proxy::upgrade`).
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .enable_connect_protocol();
        Arc::new(ProxyRuntime {
            bind_ip,
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
                h2,
                connections: AtomicUsize::new(0),
                drained: Notify::new(),
                observer: Arc::new(observer),
            }),
            ports: Mutex::new(HashMap::new()),
            udp_ports: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            health: HealthCheckers::default(),
        })
    }

    pub fn observer(&self) -> &Observer {
        &self.shared.observer
    }

    /// The snapshot new requests are served from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// Swaps in `snapshot`, then reconciles sockets. Returns (listener, reason) for every listener
    /// whose port could not be bound (those ports are retried on the next apply) or is taken by
    /// a listener of another protocol.
    pub async fn apply(self: &Arc<Self>, snapshot: Arc<Snapshot>) -> Vec<(String, String)> {
        // Lock before swapping so concurrent applies reconcile sockets in the order they swap.
        let mut ports = self.ports.lock().await;
        self.shared.current.store(snapshot.clone());
        self.health.reconcile(snapshot.clusters());
        let wanted: HashMap<u16, &[String]> = snapshot.ports().collect();
        // A port switching kind (e.g. between HTTP and HTTPS) is closed and rebound (rare).
        let removed: Vec<u16> = ports
            .iter()
            .filter(|(p, h)| h.kind != snapshot.port_kind(**p))
            .map(|(p, _)| *p)
            .collect();
        for port in removed {
            if let Some(handle) = ports.remove(&port) {
                tracing::info!(
                    port,
                    generation = handle.generation,
                    "listener port removed, draining"
                );
                let _ = handle.stop.send(true);
                // The socket closes when the accept loop returns; wait so the port can be bound
                // again right away (by this apply or the next).
                let _ = handle.accept_loop.await;
            }
        }
        let mut failures = snapshot.port_conflicts().to_vec();
        let mut wanted: Vec<_> = wanted.into_iter().collect();
        wanted.sort_unstable_by_key(|(p, _)| *p);
        for (port, names) in wanted {
            if ports.contains_key(&port) {
                continue;
            }
            let kind = snapshot.port_kind(port).unwrap_or(PortKind::Http);
            let config = match kind {
                PortKind::Https => Some(tls::server_config(self.shared.current.clone(), port)),
                PortKind::Tls => Some(tls::stream_server_config(self.shared.current.clone(), port)),
                PortKind::Http | PortKind::Tcp => None,
            };
            let is_tls = config.is_some();
            let acceptor = if let Some(config) = config {
                match config {
                    Ok(config) => Some(TlsAcceptor::from(config)),
                    Err(error) => {
                        let reason = format!("cannot configure TLS on port {port}: {error}");
                        failures.extend(names.iter().map(|n| (n.clone(), reason.clone())));
                        continue;
                    }
                }
            } else {
                None
            };
            match bind(SocketAddr::new(self.bind_ip, port)) {
                Ok(listener) => {
                    let (stop, stop_rx) = watch::channel(false);
                    let accept_loop = tokio::spawn(accept_loop(
                        listener,
                        port,
                        kind,
                        acceptor,
                        stop_rx,
                        self.shared.clone(),
                    ));
                    let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(port, generation, ?kind, tls = is_tls, listeners = ?names, "listening");
                    ports.insert(
                        port,
                        PortHandle {
                            stop,
                            generation,
                            kind: Some(kind),
                            accept_loop,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(port, listeners = ?names, %error, "cannot bind listener port");
                    let reason = format!("cannot bind {}:{port}: {error}", self.bind_ip);
                    failures.extend(names.iter().map(|n| (n.clone(), reason.clone())));
                }
            }
        }
        // Taken before `ports` is released, so concurrent applies reconcile UDP in swap order too.
        let mut udp = self.udp_ports.lock().await;
        drop(ports);
        failures.extend(self.reconcile_udp(&mut udp, &snapshot).await);
        failures
    }

    /// Binds the UDP ports `snapshot` wants and stops the others; a kept port keeps its socket
    /// and sessions. Returns (listener, reason) for ports that could not be bound.
    async fn reconcile_udp(
        &self,
        udp: &mut HashMap<u16, PortHandle>,
        snapshot: &Snapshot,
    ) -> Vec<(String, String)> {
        let wanted: HashMap<u16, &[String]> = snapshot.udp_ports().collect();
        let removed: Vec<u16> = udp
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in removed {
            if let Some(handle) = udp.remove(&port) {
                tracing::info!(
                    port,
                    generation = handle.generation,
                    "UDP listener port removed"
                );
                let _ = handle.stop.send(true);
                let _ = handle.accept_loop.await;
            }
        }
        let mut failures = Vec::new();
        let mut wanted: Vec<_> = wanted.into_iter().collect();
        wanted.sort_unstable_by_key(|(p, _)| *p);
        for (port, names) in wanted {
            if udp.contains_key(&port) {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).await {
                Ok(socket) => {
                    let (stop, stop_rx) = watch::channel(false);
                    let ctx = L4Context {
                        current: self.shared.current.clone(),
                        metrics: self.shared.observer.metrics().clone(),
                    };
                    let accept_loop = tokio::spawn(l4::udp::serve(socket, port, stop_rx, ctx));
                    let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(port, generation, listeners = ?names, "listening (UDP)");
                    udp.insert(
                        port,
                        PortHandle {
                            stop,
                            generation,
                            kind: None,
                            accept_loop,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(port, listeners = ?names, %error, "cannot bind UDP listener port");
                    let reason = format!("cannot bind UDP {}:{port}: {error}", self.bind_ip);
                    failures.extend(names.iter().map(|n| (n.clone(), reason.clone())));
                }
            }
        }
        failures
    }

    /// Stops accepting on every port, asks connections to finish their in-flight requests and
    /// waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.health.stop();
        let mut handles: Vec<PortHandle> =
            self.ports.lock().await.drain().map(|(_, h)| h).collect();
        handles.extend(self.udp_ports.lock().await.drain().map(|(_, h)| h));
        for handle in &handles {
            let _ = handle.stop.send(true);
        }
        for handle in handles {
            let _ = handle.accept_loop.await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            // Register before checking, so a drain between check and wait is not missed.
            notified.as_mut().enable();
            let open = self.shared.connections.load(Ordering::Acquire);
            if open == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(open, "shutdown grace elapsed with connections still open");
                return;
            }
        }
    }

    #[cfg(test)]
    async fn port_generation(&self, port: u16) -> Option<u64> {
        self.ports.lock().await.get(&port).map(|h| h.generation)
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Lets a restarted data plane rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    kind: PortKind,
    acceptor: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            // A stop signal or a dropped sender both end the loop; the socket closes on return.
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) if matches!(kind, PortKind::Tcp | PortKind::Tls) => {
                    shared.connections.fetch_add(1, Ordering::AcqRel);
                    let guard = ConnectionGuard(shared.clone());
                    let ctx = L4Context {
                        current: shared.current.clone(),
                        metrics: shared.observer.metrics().clone(),
                    };
                    let acceptor = acceptor.clone();
                    // Established streams outlive a removed listener: no stop signal here.
                    tokio::spawn(async move {
                        let _guard = guard;
                        l4::serve_stream(stream, remote, port, acceptor, ctx).await;
                    });
                }
                Ok((stream, remote)) => {
                    tokio::spawn(serve_connection(
                        stream,
                        remote,
                        port,
                        acceptor.clone(),
                        stop.clone(),
                        shared.clone(),
                    ));
                }
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning on the error.
                    tracing::warn!(port, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    tracing::debug!(port, "stopped accepting");
}

/// Decrements the open-connection count however the connection task ends.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A client connection's stream, counted as open until it is dropped: when the HTTP connection
/// ends, or, after a protocol upgrade (WebSocket), when the tunnel that took it over closes.
struct Counted<I> {
    io: I,
    _guard: ConnectionGuard,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    port: u16,
    acceptor: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    shared.connections.fetch_add(1, Ordering::AcqRel);
    let guard = ConnectionGuard(shared.clone());
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set TCP_NODELAY failed");
    }
    // Timeouts are fixed when the connection is accepted; later changes apply to new ones.
    let timeouts = {
        let snapshot = shared.current.load();
        let settings = snapshot.server_settings(port);
        ConnTimeouts {
            read: settings.read_timeout,
            write: settings.write_timeout,
            idle: settings.idle_timeout,
        }
    };
    let activity = Arc::new(Activity::default());
    let client = Client {
        remote,
        port,
        tls: None,
        read_timeout: timeouts.read,
        lifecycle: Lifecycle {
            stop,
            idle_timeout: timeouts.idle,
            activity: activity.clone(),
        },
        shared: shared.clone(),
    };
    let Some(acceptor) = acceptor else {
        let io = Counted {
            io: ClientIo::new(
                stream,
                activity,
                Protocol::Sniff,
                timeouts.read,
                timeouts.write,
            ),
            _guard: guard,
        };
        return client.serve_h1(Box::new(io)).await;
    };
    // Boxed: the TLS state (handshake, rustls connection, HTTP/2) is several KiB that every
    // plain connection's task would otherwise carry while it waits.
    in_place::boxed(
        Box::new_uninit(),
        serve_tls(client, stream, acceptor, activity, timeouts, guard),
    )
    .await;
}

/// Serves a TLS connection: handshake, then HTTP/2 or HTTP/1.1 by ALPN.
async fn serve_tls(
    mut client: Client,
    stream: TcpStream,
    acceptor: TlsAcceptor,
    activity: Arc<Activity>,
    timeouts: ConnTimeouts,
    guard: ConnectionGuard,
) {
    let shared = client.shared.clone();
    let (remote, port) = (client.remote, client.port);
    let metrics = shared.observer.metrics();
    let Some(stream) =
        tls::handshake(&acceptor, stream, HANDSHAKE_TIMEOUT, metrics, port, remote).await
    else {
        return;
    };
    client.tls = Some(Arc::new(TlsConnection::new(
        stream.get_ref().1.server_name(),
        &shared.current.load(),
        port,
    )));
    // ALPN h2 goes to hyper's HTTP/2 server; http/1.1 (or no ALPN) to ours, which still hands
    // a connection that opens with the HTTP/2 preface over.
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        Some(_) => Protocol::Http1,
        None => Protocol::Sniff,
    };
    let io = Counted {
        io: ClientIo::new(stream, activity, protocol, timeouts.read, timeouts.write),
        _guard: guard,
    };
    if protocol == Protocol::Http2 {
        client.serve_h2(io).await;
    } else {
        client.serve_h1(Box::new(io)).await;
    }
}

/// The timeouts of one connection (`None`: disabled).
#[derive(Debug, Clone, Copy)]
struct ConnTimeouts {
    read: Option<Duration>,
    write: Option<Duration>,
    idle: Option<Duration>,
}

/// An accepted client connection (plain or TLS) and what serving its requests needs.
struct Client {
    remote: SocketAddr,
    port: u16,
    tls: Option<Arc<TlsConnection>>,
    /// Bounds a request body waiting for the client.
    read_timeout: Option<Duration>,
    lifecycle: Lifecycle,
    shared: Arc<Shared>,
}

impl Io for Counted<ClientIo<TcpStream>> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Option<Poll<std::io::Result<()>>> {
        Some(self.io.get_ref().poll_read_ready(cx))
    }
}

/// TLS may hold decrypted bytes the socket no longer signals: read, do not wait for readiness.
impl Io for Counted<ClientIo<tokio_rustls::server::TlsStream<TcpStream>>> {}

impl Client {
    /// Serves HTTP/1.1 with our own server until the connection closes, is upgraded, or turns
    /// out to speak HTTP/2 (prior knowledge), which goes on with hyper's.
    async fn serve_h1(mut self, io: BoxIo) {
        let service_shared = self.shared.clone();
        let activity = self.lifecycle.activity.clone();
        let read_timeout = self.read_timeout;
        let port = self.port;
        let tls = self.tls.clone();
        let peer = Peer::new(self.remote);
        let service = |req: http::Request<RequestBody>| {
            // One snapshot per request, held as an Arc (never an arc-swap Guard) across awaits.
            let snapshot = service_shared.current.load_full();
            let tls = tls.clone();
            let in_flight = activity.begin();
            // The connection's reader bounds a body waiting for the client (read timeout).
            let bound = match read_timeout {
                Some(_) if !req.body().is_end_stream() => BodyBound::Connection(activity.clone()),
                _ => BodyBound::None,
            };
            let req = req.map(|body| WaitingBody::new(body, bound));
            // Not boxed here: the server boxes each exchange, this future included.
            let observer = service_shared.observer.clone();
            observer.serve(snapshot, port, peer.clone(), tls, None, req, |response| {
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    in_flight.upgrade();
                }
                // In flight until the response body is done, not just its head.
                response.map(|body| InFlightBody::new(body, in_flight, None))
            })
        };
        let ended = http1::serve(io, true, MAX_HEADER_BYTES, &mut self.lifecycle, service).await;
        match ended {
            Ok(Ended::Http2 { io, read }) => {
                // Boxed: hyper's HTTP/2 connection would otherwise size every HTTP/1.1
                // connection's task.
                let rewound = Rewind::new(read.to_vec(), io);
                in_place::boxed(Box::new_uninit(), self.serve_h2(rewound)).await;
            }
            Ok(Ended::Closed | Ended::Upgraded) => {}
            Err(error) => {
                tracing::debug!(remote = %self.remote, port, %error, "connection ended with error");
            }
        }
    }

    /// Serves HTTP/2 with hyper until the connection closes, the idle timeout or `stop`.
    async fn serve_h2<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Client {
            remote,
            port,
            tls,
            read_timeout,
            lifecycle,
            shared,
        } = self;
        let Lifecycle {
            mut stop,
            idle_timeout,
            activity,
        } = lifecycle;
        let service_shared = shared.clone();
        let service_activity = activity.clone();
        let peer = Peer::new(remote);
        let service = service_fn(move |mut req: http::Request<Incoming>| {
            let snapshot = service_shared.current.load_full();
            let tls = tls.clone();
            let in_flight = service_activity.begin();
            // A stream that may become a tunnel (WebSocket): the tunnel keeps the connection
            // active while open, as an upgraded HTTP/1.1 connection is (see `serve_h1`).
            if req.extensions().get::<hyper::ext::Protocol>().is_some() {
                let tunnel = TunnelActivity::new(service_activity.begin());
                req.extensions_mut().insert(tunnel);
            }
            // A stalled stream must not end the connection's others: each body keeps its own
            // read-timeout bound.
            let mut stall = None;
            let bound = match read_timeout {
                Some(_) if req.body().is_end_stream() => BodyBound::None,
                None => BodyBound::None,
                Some(timeout) => {
                    let s = Arc::new(BodyStall::default());
                    stall = Some(s.clone());
                    BodyBound::Stream { timeout, stall: s }
                }
            };
            let req = req.map(|body| WaitingBody::new(body, bound));
            let observer = service_shared.observer.clone();
            let stalled_after = stall.clone();
            // Boxed and written in place: hyper moves it into a task per stream.
            let finish = move |response: http::Response<ObservedBody>| {
                // A stall after this answer resets the stream; one before it is the 408 already.
                let stall = stalled_after.filter(|s| !s.is_stalled());
                Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight, stall)))
            };
            in_place::boxed(
                Box::new_uninit(),
                observer.serve(snapshot, port, peer.clone(), tls, stall, req, finish),
            )
        });
        let conn = shared.h2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = IdleWatch {
            timeout: idle_timeout,
            activity,
        };
        // Polled only on its own wake-ups: nearly all of this task's are the connection's I/O.
        let mut wind_down = OwnWakes::new(wind_down(&mut stop, &idle));
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            wind_down.poll(cx).map(|reason| {
                if reason == WindDown::Idle {
                    tracing::debug!(%remote, port, "idle connection closed");
                }
                None
            })
        })
        .await;
        let result = match ended {
            Some(result) => result,
            None => {
                // Finish in-flight streams, then GOAWAY.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%remote, port, %error, "connection ended with error");
        }
    }
}

/// Closes an HTTP/2 connection gracefully once no request has been in flight for `timeout`.
struct IdleWatch {
    timeout: Option<Duration>,
    activity: Arc<Activity>,
}

#[derive(Debug, PartialEq, Eq)]
enum WindDown {
    Stop,
    Idle,
}

/// Resolves when a connection should wind down: the runtime stops, or the connection has had no
/// request in flight for its idle timeout.
async fn wind_down(stop: &mut watch::Receiver<bool>, idle: &IdleWatch) -> WindDown {
    loop {
        let idle_at = idle.timeout.map(|t| idle.activity.idle_deadline(t));
        tokio::select! {
            biased;
            _ = stop.changed() => return WindDown::Stop,
            _ = tokio::time::sleep_until(idle_at.unwrap_or_else(far_future)), if idle_at.is_some() => {
                if idle.timeout.is_some_and(|t| idle.activity.is_idle(t)) {
                    return WindDown::Idle;
                }
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

/// A future polled only when it woke its task itself (and on the first poll), for one that
/// shares a task with a busier one.
struct OwnWakes<F> {
    inner: Pin<Box<F>>,
    wake: Arc<OwnWake>,
}

struct OwnWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for OwnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OwnWakes<F> {
    fn new(inner: F) -> Self {
        OwnWakes {
            inner: Box::pin(inner),
            wake: Arc::new(OwnWake {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.wake.task.register(cx.waker());
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.wake.clone());
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::Compiler;
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use sluice_proto::config as pb;

    /// A backend that echoes what it received:
    /// `path|x-forwarded-for|host|x-forwarded-host|x-forwarded-proto`.
    async fn echo_backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let body = format!(
                            "{}|{}|{}|{}|{}",
                            req.uri(),
                            h("x-forwarded-for"),
                            h("host"),
                            h("x-forwarded-host"),
                            h("x-forwarded-proto")
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// Never the same port twice in this binary: the kernel may give a closed listener's port
    /// out again at once, and two of these tests' listeners on one port fail.
    fn free_port() -> u16 {
        static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if GIVEN.lock().unwrap().insert(port) {
                return port;
            }
        }
    }

    fn resources(proxy_port: u16, backend: SocketAddr, rewrite: &str) -> Resources {
        let mut res = Resources::default();
        let backend_ip = backend.ip().to_string();
        res.add_http_listener("http", proxy_port)
            .add_cluster("echo", &[(&backend_ip, backend.port())])
            .add_cluster("dead", &[("127.0.0.1", free_port())]);
        let forward = |cluster: &str, rewrite: Option<&str>| {
            Some(pb::route::Action::Forward(pb::ForwardAction {
                backends: vec![pb::WeightedBackend {
                    cluster: cluster.into(),
                    weight: 1,
                    ..Default::default()
                }],
                path_rewrite: rewrite.map(|r| pb::PathRewrite {
                    kind: Some(pb::path_rewrite::Kind::ReplacePrefix(r.into())),
                }),
                ..Default::default()
            }))
        };
        let prefix = |p: &str| {
            vec![pb::RouteMatch {
                path: Some(pb::PathMatch {
                    kind: pb::path_match::Kind::Prefix as i32,
                    value: p.into(),
                }),
                ..Default::default()
            }]
        };
        res.routes.insert(
            "api".into(),
            Arc::new(pb::Route {
                name: "api".into(),
                listeners: vec!["http".into()],
                hostnames: vec!["app.example.com".into()],
                matches: prefix("/api"),
                action: forward("echo", Some(rewrite)),
                ..Default::default()
            }),
        );
        res.routes.insert(
            "maintenance".into(),
            Arc::new(pb::Route {
                name: "maintenance".into(),
                listeners: vec!["http".into()],
                matches: prefix("/down"),
                action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
                    status: 503,
                    body: "maintenance".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        );
        res.routes.insert(
            "dead".into(),
            Arc::new(pb::Route {
                name: "dead".into(),
                listeners: vec!["http".into()],
                matches: prefix("/dead"),
                action: forward("dead", None),
                ..Default::default()
            }),
        );
        res
    }

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    async fn get(client: &TestClient, port: u16, host: &str, path: &str) -> (StatusCode, String) {
        let req = Request::get(format!("http://127.0.0.1:{port}{path}"))
            .header("host", host)
            .header("x-forwarded-for", "203.0.113.9")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.expect("proxy answers");
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn proxies_and_reconfigures_live() {
        let backend = echo_backend().await;
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let mut compiler = Compiler::new();
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();

        // The port was free a moment ago; retry with another if something grabbed it meanwhile.
        let mut port = free_port();
        let mut res = resources(port, backend, "/");
        for _ in 0..5 {
            if runtime.apply(compiler.compile(&res)).await.is_empty() {
                break;
            }
            port = free_port();
            res = resources(port, backend, "/");
        }
        let generation = runtime.port_generation(port).await.expect("port bound");

        let (status, body) = get(&client, port, "App.Example.com:1234", "/api/users?id=7").await;
        assert_eq!(status, StatusCode::OK);
        // The client is no trusted proxy: its X-Forwarded-For is replaced by its address.
        assert_eq!(
            body,
            format!("/users?id=7|127.0.0.1|{backend}|App.Example.com:1234|http")
        );
        let (status, body) = get(&client, port, "other.example.com", "/api/users").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "no route\n")
        );
        let (status, body) = get(&client, port, "x", "/down").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "maintenance")
        );
        let (status, body) = get(&client, port, "x", "/dead").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_GATEWAY, "upstream connect error\n")
        );

        // h2c (prior knowledge) on the same socket.
        let h2: TestClient = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let (status, body) = get(&h2, port, "x", "/down").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "maintenance")
        );
        drop(h2);

        // Change one route: the keep-alive connection and new ones see it; the socket is kept.
        let mut res2 = res.clone();
        let changed = resources(port, backend, "/v2");
        res2.routes
            .insert("api".into(), changed.routes.get("api").expect("held"));
        let failures = runtime.apply(compiler.compile(&res2)).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(runtime.port_generation(port).await, Some(generation));
        let (_, body) = get(&client, port, "app.example.com", "/api/users").await;
        assert!(body.starts_with("/v2/users|"), "{body}");
        let fresh: TestClient = Client::builder(TokioExecutor::new()).build_http();
        let (_, body) = get(&fresh, port, "app.example.com", "/api").await;
        assert!(body.starts_with("/v2|"), "{body}");

        // Removing the listener closes its socket before apply returns.
        runtime.apply(Arc::new(Snapshot::empty())).await;
        assert_eq!(runtime.port_generation(port).await, None);
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
        // Adding it back binds the port again at once.
        let failures = runtime.apply(compiler.compile(&res2)).await;
        assert!(failures.is_empty(), "{failures:?}");
        // A new client: the drained connections of the removed socket are closed.
        let again: TestClient = Client::builder(TokioExecutor::new()).build_http();
        let (_, body) = get(&again, port, "app.example.com", "/api").await;
        assert!(body.starts_with("/v2|"), "{body}");
        drop(again);
        drop(client);
        drop(fresh);
        runtime.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn reports_unbindable_ports() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let mut res = resources(port, "127.0.0.1:1".parse().unwrap(), "/");
        let mut second = (*res.listeners["http"]).clone();
        second.name = "http-2".into();
        second.hostname = "b.example.com".into();
        res.listeners.insert("http-2".into(), Arc::new(second));
        let mut failures = runtime.apply(Compiler::new().compile(&res)).await;
        failures.sort();
        let names: Vec<_> = failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["http", "http-2"]);
        assert!(failures[0].1.contains(&port.to_string()), "{failures:?}");
        runtime.shutdown(Duration::from_secs(1)).await;
    }

    /// A backend that switches every request to a raw byte echo (`Upgrade: echo`).
    async fn upgrading_backend() -> SocketAddr {
        upgrade_backend(|mut req: Request<Incoming>| async move {
            echo_upgraded(hyper::upgrade::on(&mut req));
            let resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "echo")
                .header("connection", "upgrade")
                .body(Full::new(Bytes::new()))
                .unwrap();
            Ok(resp)
        })
        .await
    }

    /// An HTTP/1.1 backend with upgrades on a local port, answering with `handle`.
    async fn upgrade_backend<F, R>(handle: F) -> SocketAddr
    where
        F: Fn(Request<Incoming>) -> R + Clone + Send + 'static,
        R: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle.clone()))
                        .with_upgrades(),
                );
            }
        });
        addr
    }

    /// Echoes an upgraded connection's bytes back until it closes.
    fn echo_upgraded(on_upgrade: hyper::upgrade::OnUpgrade) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::spawn(async move {
            let Ok(io) = on_upgrade.await else { return };
            let mut io = TokioIo::new(io);
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
    }

    /// An idle plain connection costs mostly its task, which is as large as this future's
    /// largest state: the TLS path, each HTTP/1.1 exchange and an HTTP/2 hand-over are boxed so
    /// that waiting for the next request stays small.
    #[tokio::test]
    async fn a_plain_connection_task_is_small() {
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let (_stop, rx) = watch::channel(false);
        let task = serve_connection(
            stream,
            remote,
            addr.port(),
            None,
            rx,
            runtime.shared.clone(),
        );
        let size = std::mem::size_of_val(&task);
        println!("plain connection task future: {size} bytes");
        assert!(size <= 1536, "{size} bytes");
    }

    /// Shutdown reaches a connection waiting for its next request at once: it closes, and the
    /// drain does not wait out the grace period.
    #[tokio::test]
    async fn shutdown_closes_idle_keep_alive_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let port = free_port();
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let res = resources(port, unused, "/");
        assert!(
            runtime
                .apply(Compiler::new().compile(&res))
                .await
                .is_empty()
        );
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        conn.write_all(b"GET /nowhere HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"no route\n") {
            seen.push(conn.read_u8().await.unwrap());
        }
        assert!(seen.starts_with(b"HTTP/1.1 404"));
        assert_eq!(runtime.shared.connections.load(Ordering::Acquire), 1);
        tokio::time::timeout(
            Duration::from_secs(5),
            runtime.shutdown(Duration::from_secs(30)),
        )
        .await
        .expect("the idle connection closed at once");
        assert_eq!(conn.read(&mut [0u8; 16]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn upgraded_connections_outlive_config_changes_and_count_for_drain() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = upgrading_backend().await;
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let mut compiler = Compiler::new();
        let port = free_port();
        let res = resources(port, backend, "/");
        assert!(runtime.apply(compiler.compile(&res)).await.is_empty());

        let mut tunnel = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tunnel
            .write_all(b"GET /api HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tunnel.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo\r\n"), "{head}");
        let mut echo = async |msg: &[u8]| {
            tunnel.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            tunnel.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
        };
        echo(b"one").await;
        // The HTTP connection handed its stream to the tunnel, which still counts as open.
        assert_eq!(runtime.shared.connections.load(Ordering::Acquire), 1);

        // A config change that drops the route the tunnel came through leaves it alone.
        let mut changed = res.clone();
        changed.routes.remove("api");
        assert!(runtime.apply(compiler.compile(&changed)).await.is_empty());
        echo(b"two").await;

        drop(tunnel);
        // Shutdown drains once the tunnel is closed (a dropped count would return at once too,
        // hence the check above).
        tokio::time::timeout(
            Duration::from_secs(5),
            runtime.shutdown(Duration::from_secs(30)),
        )
        .await
        .expect("drained when the tunnel closed");
        assert_eq!(runtime.shared.connections.load(Ordering::Acquire), 0);
    }

    /// An HTTP/1.1 WebSocket backend: a GET with `Upgrade: websocket` and a key is switched to
    /// a raw byte echo, its accept computed from the key (a wrong one on `/bad-accept`), the
    /// first offered subprotocol selected. Anything else gets 400.
    async fn websocket_backend() -> SocketAddr {
        use crate::proxy::upgrade::websocket_h2::accept_key;
        upgrade_backend(|mut req: Request<Incoming>| async move {
            let h = |n: &str| req.headers().get(n).cloned();
            let (Some(upgrade), Some(key)) = (h("upgrade"), h("sec-websocket-key")) else {
                let resp = Response::builder().status(StatusCode::BAD_REQUEST);
                return Ok(resp.body(Full::new(Bytes::new())).unwrap());
            };
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(upgrade, "websocket");
            assert_eq!(h("connection").unwrap(), "upgrade");
            assert_eq!(h("sec-websocket-version").unwrap(), "13");
            let accept = if req.uri().path() == "/bad-accept" {
                accept_key(b"not the key")
            } else {
                accept_key(key.as_bytes())
            };
            let protocol = h("sec-websocket-protocol")
                .and_then(|p| p.to_str().ok()?.split(',').next().map(str::to_owned));
            echo_upgraded(hyper::upgrade::on(&mut req));
            let mut resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .header("sec-websocket-accept", accept);
            if let Some(p) = protocol {
                resp = resp.header("sec-websocket-protocol", p);
            }
            Ok(resp.body(Full::new(Bytes::new())).unwrap())
        })
        .await
    }

    /// RFC 8441 on an h2c connection: the extended CONNECT becomes the backend's HTTP/1.1
    /// handshake, the `101` the client's `200`, and the open tunnel keeps the connection from
    /// being idle-closed (new requests still go through it after the idle timeout).
    #[tokio::test]
    async fn websocket_over_h2_is_tunnelled_and_keeps_its_connection_active() {
        use hyper::ext::Protocol;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = websocket_backend().await;
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let port = free_port();
        let mut res = resources(port, backend, "/");
        let mut listener = (*res.listeners["http"]).clone();
        listener.http = Some(pb::HttpSettings {
            idle_timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 300_000_000,
            }),
            ..Default::default()
        });
        res.listeners.insert("http".into(), Arc::new(listener));
        assert!(
            runtime
                .apply(Compiler::new().compile(&res))
                .await
                .is_empty()
        );

        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let request = |method: http::Method, path: &str, protocol: Option<&'static str>| {
            let mut req = Request::builder()
                .method(method)
                .uri(format!("http://app.example.com{path}"))
                .header("sec-websocket-version", "13")
                .header("sec-websocket-protocol", "chat, superchat")
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Some(p) = protocol {
                req.extensions_mut().insert(Protocol::from_static(p));
            }
            req
        };
        async fn timed<T>(what: &str, f: impl Future<Output = T>) -> T {
            tokio::time::timeout(Duration::from_secs(5), f)
                .await
                .unwrap_or_else(|_| panic!("timed out: {what}"))
        }
        // A first request, so the server's SETTINGS (extended CONNECT enabled) are in.
        let resp = sender
            .send_request(request(http::Method::GET, "/api/x", None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "not a handshake");

        let mut resp = sender
            .send_request(request(http::Method::CONNECT, "/api/ws", Some("websocket")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let headers = resp.headers();
        assert_eq!(headers["sec-websocket-protocol"], "chat");
        for gone in [
            "sec-websocket-accept",
            "upgrade",
            "connection",
            "content-length",
        ] {
            assert!(!headers.contains_key(gone), "{gone}: {headers:?}");
        }
        assert!(headers.contains_key("x-goma-request-id"), "{headers:?}");
        let mut tunnel = TokioIo::new(
            timed("the stream switches", hyper::upgrade::on(&mut resp))
                .await
                .unwrap(),
        );
        let mut echo = async |msg: &[u8]| {
            tunnel.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            timed("the echo", tunnel.read_exact(&mut got))
                .await
                .unwrap();
            assert_eq!(got, msg);
        };
        echo(b"one").await;
        // Past the idle timeout with only the tunnel open: the connection still takes requests.
        tokio::time::sleep(Duration::from_millis(900)).await;
        echo(b"two").await;
        let resp = timed(
            "a request after the idle timeout",
            sender.send_request(request(http::Method::GET, "/api/x", None)),
        )
        .await
        .expect("the connection was not closed while its tunnel is open");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

        // A 101 whose accept is not for our key never reaches the client as a tunnel.
        let resp = sender
            .send_request(request(
                http::Method::CONNECT,
                "/api/bad-accept",
                Some("websocket"),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "upstream WebSocket handshake failed\n");
        // A protocol we cannot translate.
        let resp = sender
            .send_request(request(http::Method::CONNECT, "/api/ws", Some("foo")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);

        // A plain CONNECT (no :protocol) is served as before: no route has its empty path.
        let plain = Request::builder()
            .method(http::Method::CONNECT)
            .uri("app.example.com:443")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(plain).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);

        // Once the tunnel closes, the idle connection is closed.
        drop(tunnel);
        timed("the idle connection closes", conn)
            .await
            .unwrap()
            .unwrap();
        runtime.shutdown(Duration::from_secs(1)).await;
    }

    /// A raw TCP echo backend.
    async fn tcp_echo_backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("echo within 5 s")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn tcp_listener_keeps_its_socket_and_a_removed_one_lets_streams_finish() {
        let backend = tcp_echo_backend().await;
        let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
        let mut compiler = Compiler::new();
        let port = free_port();
        let mut res = Resources::default();
        res.add_cluster("echo", &[("127.0.0.1", backend.port())]);
        res.listeners.insert(
            "tcp".into(),
            Arc::new(pb::Listener {
                name: "tcp".into(),
                port: u32::from(port),
                protocol: pb::Protocol::Tcp as i32,
                ..Default::default()
            }),
        );
        let route = |order: i64| {
            Arc::new(pb::Route {
                name: "r".into(),
                listeners: vec!["tcp".into()],
                creation_order: order,
                action: Some(pb::route::Action::Forward(pb::ForwardAction {
                    backends: vec![pb::WeightedBackend {
                        cluster: "echo".into(),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            })
        };
        res.routes.insert("r".into(), route(0));
        assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
        let generation = runtime.port_generation(port).await.expect("bound");
        let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(echo_once(&mut open, b"one").await, b"one");

        // A route change keeps the socket.
        res.routes.insert("r".into(), route(5));
        assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
        assert_eq!(runtime.port_generation(port).await, Some(generation));

        // Turning it into a TLS passthrough listener rebinds the port (another kind of socket);
        // the open stream is not affected.
        let mut tls = (*res.listeners["tcp"]).clone();
        tls.protocol = pb::Protocol::Tls as i32;
        tls.tls = Some(pb::ListenerTls {
            mode: pb::TlsMode::Passthrough as i32,
            ..Default::default()
        });
        res.listeners.insert("tcp".into(), Arc::new(tls));
        assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
        let tls_generation = runtime.port_generation(port).await.expect("rebound");
        assert_ne!(tls_generation, generation);
        assert_eq!(echo_once(&mut open, b"tls").await, b"tls");

        // The listener removed: nothing accepts any more, the open stream keeps relaying.
        res.listeners.clear();
        assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
        assert_eq!(runtime.port_generation(port).await, None);
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
        assert_eq!(echo_once(&mut open, b"two").await, b"two");
        drop(open);
        runtime.shutdown(Duration::from_secs(5)).await;
    }

    mod tls {
        use super::*;
        use crate::tls::test_certs::{TestCert, self_signed};
        use crate::upstream::tls::AcceptAnyCertificate;
        use rustls::ClientConfig;
        use rustls::crypto::CryptoProvider;
        use rustls::pki_types::{CertificateDer, ServerName};
        use tokio_rustls::TlsConnector;
        use tokio_rustls::client::TlsStream;

        fn provider() -> Arc<CryptoProvider> {
            Arc::new(rustls::crypto::ring::default_provider())
        }

        /// A fresh client config each time, so no session is resumed across handshakes.
        fn client_config(roots: Option<&[&TestCert]>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap();
            let mut config = match roots {
                Some(roots) => {
                    let mut store = rustls::RootCertStore::empty();
                    for c in roots {
                        store.add(CertificateDer::from(c.der.clone())).unwrap();
                    }
                    builder.with_root_certificates(store).with_no_client_auth()
                }
                None => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
                    .with_no_client_auth(),
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        }

        async fn connect(
            port: u16,
            sni: &str,
            config: Arc<ClientConfig>,
        ) -> Result<TlsStream<TcpStream>, std::io::Error> {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from(sni.to_string()).unwrap();
            TlsConnector::from(config).connect(name, tcp).await
        }

        fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
            stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        }

        type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

        async fn h2_client(stream: TlsStream<TcpStream>) -> H2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }

        async fn h2_get(sender: &mut H2, authority: &str, path: &str) -> (StatusCode, String) {
            let req = Request::get(format!("https://{authority}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.expect("proxy answers");
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        fn tls_resources(port: u16, backend: SocketAddr, a: &TestCert, b: &TestCert) -> Resources {
            let mut res = Resources::default();
            let backend_ip = backend.ip().to_string();
            res.add_cluster("echo", &[(&backend_ip, backend.port())]);
            res.secrets
                .insert("cert-a".into(), Arc::new(a.secret("cert-a")));
            res.secrets
                .insert("cert-b".into(), Arc::new(b.secret("cert-b")));
            res.listeners.insert(
                "https".into(),
                Arc::new(pb::Listener {
                    name: "https".into(),
                    port: u32::from(port),
                    protocol: pb::Protocol::Https as i32,
                    tls: Some(pb::ListenerTls {
                        certificate_secrets: vec!["cert-a".into(), "cert-b".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            );
            res.routes.insert(
                "all".into(),
                Arc::new(pb::Route {
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
                }),
            );
            res
        }

        /// A runtime serving `tls_resources` (certificates for a.test and b.test) on a free
        /// port, retried on another port if that one was taken meanwhile.
        struct TlsSetup {
            a: TestCert,
            b: TestCert,
            runtime: Arc<ProxyRuntime>,
            compiler: Compiler,
            port: u16,
            res: Resources,
        }

        async fn tls_setup() -> TlsSetup {
            let backend = echo_backend().await;
            let a = self_signed(&["a.test"]);
            let b = self_signed(&["b.test"]);
            let runtime = ProxyRuntime::new(IpAddr::from([127, 0, 0, 1]));
            let mut compiler = Compiler::new();
            for _ in 0..5 {
                let port = free_port();
                let res = tls_resources(port, backend, &a, &b);
                if runtime.apply(compiler.compile(&res)).await.is_empty() {
                    return TlsSetup {
                        a,
                        b,
                        runtime,
                        compiler,
                        port,
                        res,
                    };
                }
            }
            panic!("no free port for the TLS listener");
        }

        #[tokio::test]
        async fn terminates_tls_with_sni_rotation_and_421() {
            let TlsSetup {
                a,
                b,
                runtime,
                mut compiler,
                port,
                mut res,
            } = tls_setup().await;
            let generation = runtime.port_generation(port).await.expect("port bound");

            // SNI picks the certificate; the client verifies it against its own roots.
            let h2 = client_config(Some(&[&a, &b]), &[b"h2", b"http/1.1"]);
            let stream_a = connect(port, "a.test", h2.clone()).await.expect("a.test");
            assert_eq!(peer_leaf(&stream_a), a.der);
            assert_eq!(stream_a.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let stream_b = connect(port, "b.test", h2.clone()).await.expect("b.test");
            assert_eq!(peer_leaf(&stream_b), b.der);
            drop(stream_b);
            // An unknown name gets the default (first listener certificate).
            let any = client_config(None, &[b"http/1.1"]);
            let unknown = connect(port, "unknown.test", any).await.expect("unknown");
            assert_eq!(peer_leaf(&unknown), a.der);
            drop(unknown);

            // A request over h2; the backend sees X-Forwarded-Proto: https.
            let mut sender = h2_client(stream_a).await;
            let (status, body) = h2_get(&mut sender, "a.test", "/x").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body.starts_with("/x|127.0.0.1|"), "{body}");
            assert!(body.ends_with("|a.test|https"), "{body}");
            // b.test is served by another certificate than this connection's: 421.
            let (status, body) = h2_get(&mut sender, "b.test", "/x").await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::MISDIRECTED_REQUEST, "misdirected request\n")
            );

            // HTTP/1.1 over TLS when the client offers only http/1.1.
            let h1 = client_config(Some(&[&a, &b]), &[b"http/1.1"]);
            let stream = connect(port, "b.test", h1).await.expect("b.test h1");
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            let (mut h1_sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get("/y")
                .header("host", "B.test:443")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = h1_sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.ends_with(b"|https"), "{body:?}");

            // Rotation: a new certificate for cert-a serves new handshakes at once; the open
            // connection keeps working; the socket is kept.
            let a2 = self_signed(&["a.test"]);
            res.secrets
                .insert("cert-a".into(), Arc::new(a2.secret("cert-a")));
            let changed = crate::snapshot::Changed {
                secrets: ["cert-a".to_string()].into(),
                ..Default::default()
            };
            let failures = runtime
                .apply(compiler.compile_changes(&res, &changed))
                .await;
            assert!(failures.is_empty(), "{failures:?}");
            assert_eq!(runtime.port_generation(port).await, Some(generation));
            let fresh = client_config(Some(&[&a2, &b]), &[b"h2"]);
            let stream = connect(port, "a.test", fresh)
                .await
                .expect("rotated a.test");
            assert_eq!(peer_leaf(&stream), a2.der);
            let (status, _) = h2_get(&mut sender, "a.test", "/still-open").await;
            assert_eq!(status, StatusCode::OK);
            let (status, _) = h2_get(&mut sender, "b.test", "/x").await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
            let mut rotated = h2_client(stream).await;
            let (status, _) = h2_get(&mut rotated, "a.test", "/new").await;
            assert_eq!(status, StatusCode::OK);
            drop(rotated);
            drop(sender);
            drop(h1_sender);
            runtime.shutdown(Duration::from_secs(5)).await;
        }

        #[tokio::test]
        async fn switching_protocol_rebinds_and_no_certificate_refuses() {
            let TlsSetup {
                runtime,
                mut compiler,
                port,
                mut res,
                ..
            } = tls_setup().await;
            let tls_generation = runtime.port_generation(port).await;

            // Every certificate gone: handshakes are refused (fail closed), the port stays.
            res.secrets.clear();
            runtime.apply(compiler.compile(&res)).await;
            let config = client_config(None, &[b"h2"]);
            assert!(connect(port, "a.test", config).await.is_err());
            assert_eq!(runtime.port_generation(port).await, tls_generation);

            // The same port as plain HTTP: rebound, and it answers without TLS.
            res.listeners.clear();
            res.add_http_listener("http", port);
            assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
            assert_ne!(runtime.port_generation(port).await, tls_generation);
            let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
            let (status, _) = get(&client, port, "x", "/").await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            drop(client);
            runtime.shutdown(Duration::from_secs(5)).await;
        }

        /// A client config trusting `server` that presents `identity` (if any) as its certificate.
        fn mtls_client(server: &TestCert, identity: Option<&TestCert>) -> Arc<ClientConfig> {
            use rustls::pki_types::pem::PemObject;
            let mut store = rustls::RootCertStore::empty();
            store.add(CertificateDer::from(server.der.clone())).unwrap();
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(store);
            let mut config = match identity {
                None => builder.with_no_client_auth(),
                Some(id) => builder
                    .with_client_auth_cert(
                        vec![CertificateDer::from(id.der.clone())],
                        rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                            .unwrap(),
                    )
                    .unwrap(),
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(config)
        }

        /// A request over a fresh connection; Err when the handshake or the exchange fails
        /// (TLS 1.3 reports a refused client certificate after the handshake).
        async fn mtls_get(port: u16, config: Arc<ClientConfig>) -> Result<StatusCode, String> {
            let stream = connect(port, "a.test", config)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::get("https://a.test/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            Ok(resp.status())
        }

        #[tokio::test]
        async fn client_certificates_are_verified_when_asked() {
            let TlsSetup {
                a,
                runtime,
                mut compiler,
                port,
                mut res,
                ..
            } = tls_setup().await;
            let trusted_client = self_signed(&["client.test"]);
            let stranger = self_signed(&["stranger.test"]);
            res.secrets.insert(
                "client-ca".into(),
                Arc::new(pb::Secret {
                    name: "client-ca".into(),
                    kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                        pem: trusted_client.cert_pem.clone().into_bytes(),
                    })),
                    ..Default::default()
                }),
            );
            let set_policy = |res: &mut Resources, ca: &str, optional: bool| {
                let mut l = (*res.listeners["https"]).clone();
                let tls = l.tls.as_mut().unwrap();
                tls.client_ca_secret = ca.into();
                tls.client_certificate_optional = optional;
                res.listeners.insert("https".into(), Arc::new(l));
            };
            // Without a policy, no certificate is asked for.
            assert!(runtime.apply(compiler.compile(&res)).await.is_empty());
            assert_eq!(
                mtls_get(port, mtls_client(&a, None)).await,
                Ok(StatusCode::OK)
            );

            // Required: only a certificate from the CA gets in. Applied live, same socket.
            let generation = runtime.port_generation(port).await;
            set_policy(&mut res, "client-ca", false);
            let listener = res.listeners["https"].clone();
            assert_eq!(compiler.validate_listener(&listener, &res), Ok(()));
            runtime.apply(compiler.compile(&res)).await;
            assert_eq!(runtime.port_generation(port).await, generation);
            assert_eq!(
                mtls_get(port, mtls_client(&a, Some(&trusted_client))).await,
                Ok(StatusCode::OK)
            );
            assert!(mtls_get(port, mtls_client(&a, None)).await.is_err());
            assert!(
                mtls_get(port, mtls_client(&a, Some(&stranger)))
                    .await
                    .is_err()
            );

            // Optional: anonymous clients get in, a presented certificate must still verify.
            set_policy(&mut res, "client-ca", true);
            runtime.apply(compiler.compile(&res)).await;
            assert_eq!(
                mtls_get(port, mtls_client(&a, None)).await,
                Ok(StatusCode::OK)
            );
            assert!(
                mtls_get(port, mtls_client(&a, Some(&stranger)))
                    .await
                    .is_err()
            );

            // A CA that is not a CaBundle is refused by validation; one that disappears after
            // validation refuses every handshake instead of letting clients in unverified.
            set_policy(&mut res, "cert-b", false);
            let err = compiler
                .validate_listener(&res.listeners["https"].clone(), &res)
                .unwrap_err();
            assert_eq!(
                err,
                "tls.client_ca_secret: secret \"cert-b\" is not a CaBundle"
            );
            set_policy(&mut res, "client-ca", false);
            res.secrets.remove("client-ca");
            runtime.apply(compiler.compile(&res)).await;
            assert!(
                mtls_get(port, mtls_client(&a, Some(&trusted_client)))
                    .await
                    .is_err()
            );
            runtime.shutdown(Duration::from_secs(5)).await;
        }

        #[tokio::test]
        async fn sessions_resume() {
            let TlsSetup {
                a, runtime, port, ..
            } = tls_setup().await;
            // One client config keeps its session cache across connections.
            let config = client_config(Some(&[&a]), &[b"http/1.1"]);
            for (i, expected) in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed]
                .into_iter()
                .enumerate()
            {
                let mut stream = connect(port, "a.test", config.clone()).await.unwrap();
                // TLS 1.3 tickets arrive after the handshake: read the response so they do.
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                stream
                    .write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                let _ = stream.read_to_end(&mut buf).await;
                assert_eq!(
                    stream.get_ref().1.handshake_kind(),
                    Some(expected),
                    "connection {i}"
                );
            }
            runtime.shutdown(Duration::from_secs(5)).await;
        }
    }
}
