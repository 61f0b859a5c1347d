//! Stream forwarding for TCP and TLS listeners: connecting to an endpoint of the chosen cluster
//! (its endpoint selection, connect timeout and outlier reporting; another endpoint on connect
//! failure), then relaying bytes both ways with half-close and an optional idle bound.

use crate::metrics::l4::L4Stats;
use crate::upstream::CompiledCluster;
use crate::upstream::cluster::Eligibility;
use crate::upstream::outlier::Outcome;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 16 * 1024;

/// Connects to an endpoint of `cluster`: available endpoints first, ejected ones when no other
/// is left (outlier detection must not take a route down), never an unhealthy one. A failed
/// connect is reported to outlier detection and the next endpoint is tried, each endpoint at
/// most once. None when no endpoint accepted.
pub async fn connect_backend(cluster: &CompiledCluster) -> Option<TcpStream> {
    let mut tried = 0u64;
    for _ in 0..cluster.endpoints.len().min(64) {
        let idx = cluster
            .choose(tried, Eligibility::Available)
            .or_else(|| cluster.choose(tried, Eligibility::IgnoreEjection))?;
        let endpoint = cluster.endpoints.get(idx)?;
        let addr = endpoint.authority.as_str();
        match tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                cluster.report(idx, Outcome::Success);
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "set TCP_NODELAY failed");
                }
                return Some(stream);
            }
            Ok(Err(error)) => {
                tracing::debug!(cluster = %cluster.name, endpoint = %addr, %error, "L4 connect failed");
            }
            Err(_) => {
                tracing::debug!(cluster = %cluster.name, endpoint = %addr, timeout = ?cluster.connect_timeout, "L4 connect timed out");
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
    use tokio::io::duplex;

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
