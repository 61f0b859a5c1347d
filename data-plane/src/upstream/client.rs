//! Pooled upstream HTTP clients. They live outside snapshots (owned by the Compiler and shared by
//! every compiled cluster) so pooled connections survive config changes.

use super::connector::UpstreamConnector;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request body sent upstream: the client's streamed body, boxed.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<UpstreamConnector, UpstreamBody>;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    H2c,
}

/// Plaintext clients, one per (protocol, connect timeout): the connect timeout is a connector
/// setting, and nearly every cluster uses the default, so in practice there are one or two pools.
/// TLS clusters get their own client instead (see `tls_client`).
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(Protocol, Duration), HttpClient>>,
}

impl Clients {
    pub fn get(&self, protocol: Protocol, connect_timeout: Duration) -> HttpClient {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((protocol, connect_timeout))
            .or_insert_with(|| build(protocol, connect_timeout))
            .clone()
    }
}

fn build(protocol: Protocol, connect_timeout: Duration) -> HttpClient {
    builder(protocol).build(UpstreamConnector::plain(http_connector(connect_timeout)))
}

/// A client for one TLS cluster configuration. Pools are keyed by scheme and authority only, so
/// clusters with different TLS settings must not share a client.
pub fn tls_client(
    protocol: Protocol,
    connect_timeout: Duration,
    config: ClientConfig,
    server_name: &str,
    cluster: Arc<str>,
) -> Result<HttpClient, String> {
    let connector = UpstreamConnector::tls(
        http_connector(connect_timeout),
        config,
        server_name,
        cluster,
    )
    .map_err(|e| format!("tls.server_name: {e}"))?;
    Ok(builder(protocol).build(connector))
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector
}

fn builder(protocol: Protocol) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if protocol == Protocol::H2c {
        builder.http2_only(true);
    }
    builder
}
