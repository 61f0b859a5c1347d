//! Layer-4 listeners: TCP (forward the stream), TLS (passthrough by the ClientHello's SNI, or
//! terminate and forward the decrypted stream) and UDP (per-client sessions). Each new
//! connection or session reads the snapshot current at that moment and keeps its backend for
//! its whole life; a config change never touches established ones.

pub mod rewind;
pub mod route;
pub mod sni;
pub mod tcp;
pub mod udp;

use crate::metrics::Metrics;
use crate::metrics::l4::L4Labels;
use crate::snapshot::Snapshot;
use crate::upstream::CompiledCluster;
use arc_swap::ArcSwap;
use rewind::Rewind;
use route::{L4Kind, L4Listener};
use sni::Hello;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Bound on the bytes read to find the ClientHello's SNI.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// A client that has not sent its ClientHello (or finished its handshake) by then is dropped.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What L4 connection handling needs from the runtime.
#[derive(Clone)]
pub struct L4Context {
    pub current: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

fn labels(listener: &L4Listener) -> L4Labels {
    L4Labels {
        listener: listener.name.clone(),
        protocol: listener.kind.label(),
    }
}

/// How an accepted connection is forwarded, decided from one snapshot (not held afterwards).
struct Plan {
    cluster: Arc<CompiledCluster>,
    /// Bytes already read from the client (the ClientHello), sent on first.
    first_bytes: Vec<u8>,
    terminate: bool,
    origination: tcp::Origination,
    idle: Option<Duration>,
    labels: L4Labels,
}

/// Serves one accepted connection on a TCP or TLS port. `acceptor` terminates TLS for
/// listeners in terminate mode (present on every TLS port).
pub async fn serve_stream(
    mut stream: TcpStream,
    remote: SocketAddr,
    port: u16,
    acceptor: Option<TlsAcceptor>,
    ctx: L4Context,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set TCP_NODELAY failed");
    }
    let plan = match plan(&mut stream, port, &ctx).await {
        Ok(plan) => plan,
        Err((reason, labels)) => {
            tracing::debug!(%remote, port, reason, "L4 connection refused");
            if let Some(labels) = labels {
                ctx.metrics.l4().refused(&labels);
            }
            tcp::reset(&stream);
            return;
        }
    };
    let Plan {
        cluster,
        first_bytes,
        terminate,
        origination,
        idle,
        labels,
    } = plan;
    let client = Rewind::new(first_bytes, stream);
    if !terminate {
        let Some(upstream) = tcp::connect_backend(&cluster, origination).await else {
            refuse(client.inner(), remote, &labels, &ctx);
            return;
        };
        tracing::debug!(%remote, listener = %labels.listener, cluster = %cluster.name, "L4 connection forwarded");
        let stats = ctx.metrics.l4().opened(&labels);
        // The stream may outlive this cluster version by far: do not pin it.
        drop(cluster);
        return tcp::relay(client, upstream, idle, &stats).await;
    }
    let Some(acceptor) = acceptor else {
        tcp::reset(client.inner());
        return;
    };
    let Some(tls) =
        crate::tls::handshake(&acceptor, client, HELLO_TIMEOUT, &ctx.metrics, port, remote).await
    else {
        return;
    };
    let Some(upstream) = tcp::connect_backend(&cluster, origination).await else {
        refuse(tls.get_ref().0.inner(), remote, &labels, &ctx);
        return;
    };
    tracing::debug!(%remote, listener = %labels.listener, cluster = %cluster.name, "L4 connection forwarded");
    let stats = ctx.metrics.l4().opened(&labels);
    drop(cluster);
    tcp::relay(tls, upstream, idle, &stats).await;
}

type Refusal = (&'static str, Option<L4Labels>);

/// Picks listener, route and cluster for a new connection from the current snapshot; on a TLS
/// port after reading the ClientHello.
async fn plan(stream: &mut TcpStream, port: u16, ctx: &L4Context) -> Result<Plan, Refusal> {
    let snapshot = ctx.current.load_full();
    let l4 = snapshot
        .l4_port(port)
        .ok_or(("no L4 listener on this port", None))?;
    let first = l4.first().ok_or(("no L4 listener on this port", None))?;
    let (listener, route, first_bytes) = if first.kind == L4Kind::Tcp {
        (first, first.first_route(), Vec::new())
    } else {
        let (sni, hello) = read_client_hello(stream)
            .await
            .map_err(|reason| (reason, Some(labels(first))))?;
        let listener = l4
            .listener_for_sni(sni.as_deref())
            .ok_or(("no TLS listener accepts this SNI", Some(labels(first))))?;
        (listener, listener.route_for_sni(sni.as_deref()), hello)
    };
    let refused = |reason| (reason, Some(labels(listener)));
    let route = route.ok_or(refused("no route for this connection"))?;
    let cluster = route
        .pick_cluster(&mut fastrand::Rng::new())
        .ok_or(refused(
            "the chosen backend is invalid or no backend has weight",
        ))?;
    let cluster = snapshot
        .cluster(cluster)
        .cloned()
        .ok_or(refused("the chosen backend's cluster does not exist"))?;
    Ok(Plan {
        cluster,
        first_bytes,
        terminate: listener.kind == L4Kind::TlsTerminate,
        // Passthrough forwards the client's own TLS session, whose peer is the backend:
        // wrapping it in a second session would break it, so a `tls` cluster gets raw bytes.
        origination: match listener.kind {
            L4Kind::TlsPassthrough => tcp::Origination::Raw,
            L4Kind::Tcp | L4Kind::TlsTerminate | L4Kind::Udp => tcp::Origination::ClusterTls,
        },
        idle: listener.idle_timeout,
        labels: labels(listener),
    })
}

fn refuse(stream: &TcpStream, remote: SocketAddr, labels: &L4Labels, ctx: &L4Context) {
    tracing::debug!(%remote, listener = %labels.listener, "no usable backend endpoint; connection refused");
    ctx.metrics.l4().refused(labels);
    tcp::reset(stream);
}

/// Reads until the buffered bytes hold a whole ClientHello (at most [`MAX_CLIENT_HELLO`], within
/// [`HELLO_TIMEOUT`]); returns its SNI and every byte read.
async fn read_client_hello(
    stream: &mut TcpStream,
) -> Result<(Option<String>, Vec<u8>), &'static str> {
    let read = async {
        let mut buf = Vec::with_capacity(2048);
        let mut chunk = [0u8; 2048];
        loop {
            match sni::client_hello(&buf) {
                Ok(Hello::Complete(sni)) => return Ok((sni, buf)),
                Ok(Hello::Incomplete) => {}
                Err(_) => return Err("not a TLS ClientHello"),
            }
            if buf.len() >= MAX_CLIENT_HELLO {
                return Err("ClientHello larger than 16 KiB");
            }
            let want = chunk.len().min(MAX_CLIENT_HELLO - buf.len());
            let n = stream
                .read(&mut chunk[..want])
                .await
                .map_err(|_| "read failed")?;
            if n == 0 {
                return Err("closed before the ClientHello");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .map_err(|_| "ClientHello timed out")?
}
