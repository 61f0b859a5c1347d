//! The byte tunnel a switched request becomes: the client's stream (an HTTP/1.1 connection, or
//! an HTTP/2 stream after an extended CONNECT) and the upstream connection, copied both ways
//! until either side closes.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Spawns the tunnel. `client` resolves to the client's stream once the answer that switches
/// it has been written (the upstream has switched already); `hold` is kept until the tunnel
/// closes (what must stay alive as long as it, e.g. the connection's activity).
pub(super) fn spawn<F, C, E, U, H>(route: Arc<str>, client: F, mut upstream: U, hold: H)
where
    F: Future<Output = Result<C, E>> + Send + 'static,
    C: AsyncRead + AsyncWrite + Unpin + Send,
    E: Display,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Send + 'static,
{
    tokio::spawn(async move {
        let _hold = hold;
        let mut client = match client.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%route, %error, "upgrade did not complete");
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(%route, bytes_up = up, bytes_down = down, "upgraded connection closed");
            }
            Err(error) => tracing::debug!(%route, %error, "upgraded connection ended"),
        }
    });
}
