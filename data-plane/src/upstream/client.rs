//! Upstream HTTP clients. They live outside snapshots (owned by the Compiler and shared by every
//! compiled cluster) so pooled connections survive config changes. HTTP/1.1 upstreams use our
//! own pool ([`Http1Client`]); HTTP/2 ones (h2c, or h2 over TLS) hyper-util's client, which
//! multiplexes requests on one connection per endpoint.

use super::connector::{LimitedConnector, TcpConnector, UpstreamConnector};
use super::dns::CachingResolver;
use super::http1::Http1Client;
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
pub type Http2Client = Client<LimitedConnector, UpstreamBody>;

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

/// The client of one cluster: its protocol's.
#[derive(Clone)]
pub enum UpstreamClient {
    Http1(Http1Client),
    /// Boxed: hyper-util's client is large, and rare here.
    Http2(Box<Http2Client>),
}

/// Plaintext clients, one per (protocol, connect timeout, pool settings): those are connector
/// and pool settings, and nearly every cluster uses the gateway's, so in practice there are one
/// or two. TLS clusters get their own client instead (see `tls_client`).
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(Protocol, Duration, PoolSettings), UpstreamClient>>,
}

impl Clients {
    pub fn get(
        &self,
        protocol: Protocol,
        connect_timeout: Duration,
        pool: PoolSettings,
    ) -> UpstreamClient {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((protocol, connect_timeout, pool))
            .or_insert_with(|| {
                client(
                    protocol,
                    connect_timeout,
                    pool,
                    plain_connector(connect_timeout, pool),
                )
            })
            .clone()
    }
}

/// A client for one TLS cluster configuration: its connector carries the TLS settings, so
/// clusters with different ones must not share it.
pub fn tls_client(
    protocol: Protocol,
    connect_timeout: Duration,
    pool: PoolSettings,
    config: ClientConfig,
    server_name: &str,
    cluster: Arc<str>,
) -> Result<UpstreamClient, String> {
    let connector = UpstreamConnector::tls(
        plain_connector(connect_timeout, pool),
        config,
        server_name,
        cluster,
    )
    .map_err(|e| format!("tls.server_name: {e}"))?;
    Ok(client(protocol, connect_timeout, pool, connector))
}

fn client(
    protocol: Protocol,
    connect_timeout: Duration,
    pool: PoolSettings,
    connector: UpstreamConnector,
) -> UpstreamClient {
    match protocol {
        Protocol::Http1 => {
            UpstreamClient::Http1(Http1Client::new(connector, pool, connect_timeout))
        }
        Protocol::H2c => {
            let limited = LimitedConnector::new(
                connector,
                ConnectionLimit::new(pool.max_connections_per_endpoint),
                connect_timeout,
            );
            UpstreamClient::Http2(Box::new(http2_builder(pool).build(limited)))
        }
    }
}

fn plain_connector(connect_timeout: Duration, pool: PoolSettings) -> UpstreamConnector {
    let mut tcp = TcpConnector::new_with_resolver(CachingResolver::new(pool.dns_ttl));
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    UpstreamConnector::plain(tcp)
}

fn http2_builder(pool: PoolSettings) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(usize::try_from(pool.max_idle_per_endpoint).unwrap_or(usize::MAX))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(true);
    builder
}
