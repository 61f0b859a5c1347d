//! Pooled upstream HTTP clients. They live outside snapshots (owned by the Compiler and shared by
//! every compiled cluster) so pooled connections survive config changes.

use super::connector::{TcpConnector, UpstreamConnector};
use super::dns::CachingResolver;
use super::pool::{ConnectionLimit, PoolSettings};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request body sent upstream: the client's streamed body, boxed.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<UpstreamConnector, UpstreamBody>;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    H2c,
}

impl Protocol {
    /// The version requests to this kind of upstream carry.
    pub fn version(self) -> http::Version {
        match self {
            Protocol::Http1 => http::Version::HTTP_11,
            Protocol::H2c => http::Version::HTTP_2,
        }
    }
}

/// Plaintext clients, one per (protocol, connect timeout, pool settings): those are connector
/// and pool settings, and nearly every cluster uses the gateway's, so in practice there are one
/// or two pools. TLS clusters get their own client instead (see `tls_client`).
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(Protocol, Duration, PoolSettings), HttpClient>>,
}

impl Clients {
    pub fn get(
        &self,
        protocol: Protocol,
        connect_timeout: Duration,
        pool: PoolSettings,
    ) -> HttpClient {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((protocol, connect_timeout, pool))
            .or_insert_with(|| {
                builder(protocol, pool).build(plain_connector(connect_timeout, pool))
            })
            .clone()
    }
}

/// A client for one TLS cluster configuration. Pools are keyed by scheme and authority only, so
/// clusters with different TLS settings must not share a client.
pub fn tls_client(
    protocol: Protocol,
    connect_timeout: Duration,
    pool: PoolSettings,
    config: ClientConfig,
    server_name: &str,
    cluster: Arc<str>,
) -> Result<HttpClient, String> {
    let connector = UpstreamConnector::tls(
        plain_connector(connect_timeout, pool),
        config,
        server_name,
        cluster,
    )
    .map_err(|e| format!("tls.server_name: {e}"))?;
    Ok(builder(protocol, pool).build(connector))
}

fn plain_connector(connect_timeout: Duration, pool: PoolSettings) -> UpstreamConnector {
    let mut tcp = TcpConnector::new_with_resolver(CachingResolver::new(pool.dns_ttl));
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    UpstreamConnector::plain(
        tcp,
        ConnectionLimit::new(pool.max_connections_per_endpoint),
        connect_timeout,
    )
}

fn builder(protocol: Protocol, pool: PoolSettings) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(usize::try_from(pool.max_idle_per_endpoint).unwrap_or(usize::MAX))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if protocol == Protocol::H2c {
        builder.http2_only(true);
    }
    builder
}
