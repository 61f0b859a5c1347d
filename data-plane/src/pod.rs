//! What one gateway pod runs: the proxy runtime, the xDS client feeding it, and the admin
//! endpoint, until a shutdown signal drains it.

use crate::listeners::ProxyRuntime;
use crate::xds::{self, ClientOptions};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct PodOptions {
    pub xds: ClientOptions,
    /// Address the traffic listeners bind to (their ports come from Listener resources).
    pub bind_ip: IpAddr,
    pub admin_addr: SocketAddr,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("cannot bind the admin endpoint {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the pod until `shutdown` resolves, then stops accepting and drains in-flight requests.
pub async fn run(
    opts: PodOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PodError> {
    let admin = tokio::net::TcpListener::bind(opts.admin_addr)
        .await
        .map_err(|source| PodError::Admin {
            addr: opts.admin_addr,
            source,
        })?;
    let runtime = ProxyRuntime::new(opts.bind_ip);
    let (ready_tx, ready_rx) = watch::channel(false);
    let admin_task = tokio::spawn(crate::admin::serve(admin, ready_rx));
    let client_task = tokio::spawn(xds::run(opts.xds.clone(), runtime.clone(), ready_tx));
    shutdown.await;
    tracing::info!(gateway = %opts.xds.gateway, "shutting down: draining in-flight requests");
    client_task.abort();
    runtime.shutdown(opts.drain).await;
    admin_task.abort();
    Ok(())
}
