//! What one gateway pod runs: the proxy runtime, the xDS client feeding it, and the admin
//! endpoint, until a shutdown signal drains it.

use crate::admin::Admin;
use crate::config_dump::ActiveConfig;
use crate::listeners::ProxyRuntime;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::xds::{self, ClientOptions};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    /// Log every request (target "access").
    pub access_log: bool,
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
    let observer = Observer::new(Arc::new(Metrics::new()), opts.access_log);
    let runtime = ProxyRuntime::with_observer(opts.bind_ip, observer);
    let active = Arc::new(ActiveConfig::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let admin_state = Admin {
        ready: ready_rx,
        runtime: runtime.clone(),
        config: active.clone(),
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin, admin_state));
    let client_task = tokio::spawn(xds::run(
        opts.xds.clone(),
        runtime.clone(),
        ready_tx,
        active,
    ));
    shutdown.await;
    tracing::info!(gateway = %opts.xds.gateway, "shutting down: draining in-flight requests");
    client_task.abort();
    runtime.shutdown(opts.drain).await;
    admin_task.abort();
    Ok(())
}
