//! Upstream HTTP clients. They live outside snapshots (owned by the Compiler and shared by every
//! compiled cluster) so connections survive config changes: HTTP/1.1 upstreams get a pool of
//! connections per endpoint ([`Http1Client`]), HTTP/2 ones (h2c, or h2 over TLS) one
//! multiplexed connection per endpoint ([`Http2Client`]).

use super::connector::{TcpConnector, UpstreamConnector};
use super::dns::CachingResolver;
use super::http1::{EndpointPool, Http1Client};
use super::http2::{Http2Client, Http2Endpoint};
use super::pool::PoolSettings;
use bytes::Bytes;
use http::uri::Authority;
use http_body_util::combinators::UnsyncBoxBody;
use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request body sent upstream: the client's streamed body, boxed. Its error is boxed so the
/// gateway itself can abort a body (a body limit exceeded mid-stream), not only the client.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty request body (zero-sized: boxing it does not allocate).
pub fn empty_body() -> UpstreamBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    Http2(Http2Client),
}

impl UpstreamClient {
    /// The connections to `authority`: those in use when some cluster on this client lists it.
    pub fn connections(&self, authority: &Authority) -> Connections {
        match self {
            UpstreamClient::Http1(client) => Connections::Http1(client.endpoint(authority)),
            UpstreamClient::Http2(client) => Connections::Http2(client.endpoint(authority)),
        }
    }
}

/// One endpoint's connections, by the cluster's protocol.
#[derive(Clone, Debug)]
pub enum Connections {
    Http1(Arc<EndpointPool>),
    Http2(Arc<Http2Endpoint>),
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
        Protocol::H2c => UpstreamClient::Http2(Http2Client::new(connector, pool, connect_timeout)),
    }
}

fn plain_connector(connect_timeout: Duration, pool: PoolSettings) -> UpstreamConnector {
    let mut tcp = TcpConnector::new_with_resolver(CachingResolver::new(pool.dns_ttl));
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    UpstreamConnector::plain(tcp)
}
