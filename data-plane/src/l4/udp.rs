//! UDP listeners: one session per client address, holding a socket connected to the backend
//! endpoint chosen when the session opened. Datagrams are relayed both ways through reused
//! buffers; a session ends after its idle time, and new clients beyond the session bound are
//! dropped.

use super::L4Context;
use super::route::{L4Listener, UDP_DEFAULT_IDLE};
use crate::metrics::l4::{L4Labels, L4Stats};
use crate::upstream::cluster::Eligibility;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// Sessions per UDP port; datagrams of further new clients are dropped until some expire.
pub const MAX_SESSIONS: usize = 16 * 1024;
/// Largest UDP payload.
const DATAGRAM: usize = 65_535;

struct Session {
    upstream: Arc<UdpSocket>,
    stats: L4Stats,
    idle: Duration,
    /// Milliseconds since the port started serving, at the last datagram either way.
    last_ms: AtomicU64,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

/// Serves a bound UDP socket until `stop` fires; sessions end with it.
pub async fn serve(socket: UdpSocket, port: u16, stop: watch::Receiver<bool>, ctx: L4Context) {
    serve_limited(socket, port, stop, ctx, MAX_SESSIONS).await;
}

async fn serve_limited(
    socket: UdpSocket,
    port: u16,
    mut stop: watch::Receiver<bool>,
    ctx: L4Context,
    max_sessions: usize,
) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let start = Instant::now();
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.changed() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors of earlier replies surface here on some systems.
                    tracing::debug!(port, %error, "UDP receive failed");
                    continue;
                }
            },
        };
        let existing = lock(&sessions).get(&client).cloned();
        let session = match existing {
            Some(s) => s,
            None => {
                if lock(&sessions).len() >= max_sessions {
                    tracing::debug!(port, %client, "UDP session limit reached; datagram dropped");
                    continue;
                }
                let Some(session) = open(port, client, &ctx).await else {
                    continue;
                };
                let session = Arc::new(Session {
                    last_ms: AtomicU64::new(elapsed_ms(start)),
                    ..session
                });
                lock(&sessions).insert(client, session.clone());
                tokio::spawn(replies(
                    socket.clone(),
                    client,
                    session.clone(),
                    sessions.clone(),
                    start,
                    stop.clone(),
                ));
                session
            }
        };
        session.last_ms.store(elapsed_ms(start), Ordering::Relaxed);
        match session.upstream.send(&buf[..n]).await {
            Ok(_) => {
                session.stats.received.inc_by(n as u64);
            }
            Err(error) => tracing::debug!(port, %client, %error, "UDP send to backend failed"),
        }
    }
    tracing::debug!(port, "stopped receiving UDP");
}

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Session>>> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The idle time of a listener's sessions.
fn idle_of(listener: &L4Listener) -> Duration {
    listener.idle_timeout.unwrap_or(UDP_DEFAULT_IDLE)
}

/// Opens a session for a new client: route, backend by weight, endpoint of the cluster, and a
/// socket connected to it. None (the datagram is dropped) when any of them is missing.
async fn open(port: u16, client: SocketAddr, ctx: &L4Context) -> Option<Session> {
    let snapshot = ctx.current.load_full();
    let listener = snapshot.udp_port(port)?.first()?;
    let labels = L4Labels {
        listener: listener.name.clone(),
        protocol: listener.kind.label(),
    };
    let refuse = |reason: &str| {
        tracing::debug!(port, %client, listener = %listener.name, reason, "UDP datagram of a new client dropped");
        ctx.metrics.l4().refused(&labels);
    };
    let Some(route) = listener.first_route() else {
        refuse("no route");
        return None;
    };
    let Some(cluster) = route
        .pick_cluster(&mut fastrand::Rng::new())
        .and_then(|c| snapshot.cluster(c))
    else {
        refuse("the chosen backend is invalid, missing or no backend has weight");
        return None;
    };
    let Some(endpoint) = cluster
        .choose(0, Eligibility::Available)
        .or_else(|| cluster.choose(0, Eligibility::IgnoreEjection))
        .and_then(|i| cluster.endpoints.get(i))
    else {
        refuse("no usable endpoint");
        return None;
    };
    let target = match tokio::net::lookup_host(endpoint.authority.as_str()).await {
        Ok(mut addrs) => addrs.next(),
        Err(error) => {
            tracing::debug!(endpoint = %endpoint.authority, %error, "UDP endpoint did not resolve");
            None
        }
    };
    let Some(target) = target else {
        refuse("endpoint address did not resolve");
        return None;
    };
    let local: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = match UdpSocket::bind((local, 0)).await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot open a UDP socket for a session");
            refuse("no socket");
            return None;
        }
    };
    if let Err(error) = upstream.connect(target).await {
        tracing::debug!(%target, %error, "UDP connect failed");
        refuse("connect failed");
        return None;
    }
    tracing::debug!(port, %client, listener = %listener.name, route = %route.name, cluster = %cluster.name, %target, "UDP session opened");
    let stats = ctx.metrics.l4().opened(&labels);
    Some(Session {
        upstream: Arc::new(upstream),
        stats,
        idle: idle_of(listener),
        last_ms: AtomicU64::new(0),
    })
}

/// Relays the backend's datagrams of one session to its client until the session has been
/// idle (no datagram either way) for its idle time, or the port stops.
async fn replies(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    session: Arc<Session>,
    sessions: Sessions,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; DATAGRAM];
    let deadline =
        |s: &Session| start + Duration::from_millis(s.last_ms.load(Ordering::Relaxed)) + s.idle;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(deadline(&session)) => {
                if deadline(&session) <= Instant::now() {
                    tracing::debug!(%client, "UDP session expired");
                    break;
                }
            }
            received = session.upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    session.last_ms.store(elapsed_ms(start), Ordering::Relaxed);
                    match socket.send_to(&buf[..n], client).await {
                        Ok(_) => {
                            session.stats.sent.inc_by(n as u64);
                        }
                        Err(error) => tracing::debug!(%client, %error, "UDP send to client failed"),
                    }
                }
                // ICMP port unreachable from the backend: keep the session, it may come back.
                Err(error) => tracing::debug!(%client, %error, "UDP receive from backend failed"),
            },
        }
    }
    let mut sessions = lock(&sessions);
    if sessions
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(s, &session))
    {
        sessions.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::resources::Resources;
    use crate::snapshot::Compiler;
    use arc_swap::ArcSwap;
    use sluice_proto::config as pb;

    async fn udp_echo() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    async fn round(client: &UdpSocket, msg: &[u8]) -> Option<Vec<u8>> {
        client.send(msg).await.ok()?;
        let mut buf = [0u8; 1500];
        let n = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn sessions_beyond_the_bound_wait_for_an_expiry() {
        let backend = udp_echo().await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut res = Resources::default();
        res.add_cluster("echo", &[("127.0.0.1", backend.port())]);
        res.listeners.insert(
            "udp".into(),
            Arc::new(pb::Listener {
                name: "udp".into(),
                port: u32::from(port),
                protocol: pb::Protocol::Udp as i32,
                http: Some(pb::HttpSettings {
                    idle_timeout: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 400_000_000,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        res.routes.insert(
            "r".into(),
            Arc::new(pb::Route {
                name: "r".into(),
                listeners: vec!["udp".into()],
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
        let ctx = L4Context {
            current: Arc::new(ArcSwap::new(Compiler::new().compile(&res))),
            metrics: Arc::new(Metrics::new()),
        };
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_limited(socket, port, stop_rx, ctx, 1));
        let one = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let two = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        one.connect(("127.0.0.1", port)).await.unwrap();
        two.connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(round(&one, b"a").await.as_deref(), Some(&b"a"[..]));
        // The one session slot is taken: the new client's datagrams are dropped.
        assert_eq!(round(&two, b"b").await, None);
        // Once the first session has been idle for 400 ms it ends and frees the slot.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(round(&two, b"c").await.as_deref(), Some(&b"c"[..]));
        assert_eq!(round(&one, b"d").await, None);
        let _ = stop.send(true);
        server.await.unwrap();
    }
}
