//! The upstream connector: hyper-util's `HttpConnector` for TCP with a caching resolver, then a
//! rustls handshake when the cluster uses TLS. One type for both, so every cluster's client has
//! the same type. A connection holds its endpoint's connection slot (per-endpoint limit) until it
//! closes: our HTTP/1.1 pool hands the slot over, hyper-util's HTTP/2 client goes through
//! [`LimitedConnector`], which waits for one.

use super::dns::CachingResolver;
use super::pool::ConnectionLimit;
use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream connection could not be set up. hyper reports it as a connect error (502).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    // `#`: hyper-util's connect error shows its cause only in the alternate form.
    #[error("tcp connect: {0:#}")]
    Tcp(#[source] BoxError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
    #[error("no free connection slot to {0} within the connect timeout")]
    Limit(String),
    #[error("no connection within the connect timeout ({0:?})")]
    Timeout(Duration),
}

pub type TcpConnector = HttpConnector<CachingResolver>;

#[derive(Clone)]
pub struct UpstreamConnector {
    http: TcpConnector,
    tls: Option<Arc<TlsConnect>>,
}

/// The TLS half of a connector: one per TLS cluster configuration.
struct TlsConnect {
    connector: TlsConnector,
    /// Fixed SNI; None uses each endpoint's host.
    server_name: Option<ServerName<'static>>,
    /// For logs.
    cluster: Arc<str>,
}

impl UpstreamConnector {
    pub fn plain(http: TcpConnector) -> Self {
        Self { http, tls: None }
    }

    /// TLS over `http`; `server_name` empty means each endpoint's host. Errors when the name is
    /// not a DNS name or IP address.
    pub fn tls(
        plain: Self,
        config: ClientConfig,
        server_name: &str,
        cluster: Arc<str>,
    ) -> Result<Self, ConnectError> {
        let mut http = plain.http;
        // The request URIs of TLS clusters are https://; the TCP part is the same.
        http.enforce_http(false);
        let server_name = if server_name.is_empty() {
            None
        } else {
            Some(parse_server_name(server_name)?)
        };
        Ok(Self {
            http,
            tls: Some(Arc::new(TlsConnect {
                connector: TlsConnector::from(Arc::new(config)),
                server_name,
                cluster,
            })),
        })
    }

    /// The scheme of the URIs this connector dials.
    pub fn scheme(&self) -> http::uri::Scheme {
        match self.tls {
            None => http::uri::Scheme::HTTP,
            Some(_) => http::uri::Scheme::HTTPS,
        }
    }

    /// Connects to `uri`'s authority (TCP, then TLS for a TLS cluster); the stream holds `slot`
    /// until it closes.
    pub fn connect(
        &self,
        uri: Uri,
        slot: OwnedSemaphorePermit,
    ) -> Pin<Box<dyn Future<Output = Result<UpstreamStream, ConnectError>> + Send>> {
        let tls = self.tls.clone();
        let mut http = self.http.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let tcp = tower_service::Service::<Uri>::call(&mut http, uri)
                .await
                .map_err(|e| ConnectError::Tcp(e.into()))?;
            let Some(tls) = tls else {
                return Ok(UpstreamStream {
                    io: Io::Plain(tcp),
                    _slot: slot,
                });
            };
            let name = match &tls.server_name {
                Some(n) => n.clone(),
                None => parse_server_name(&host)?,
            };
            match tls.connector.connect(name, tcp.into_inner()).await {
                Ok(stream) => Ok(UpstreamStream {
                    io: Io::Tls(Box::new(TokioIo::new(stream))),
                    _slot: slot,
                }),
                Err(error) => {
                    // Say which cluster: the error travels up without it.
                    tracing::warn!(cluster = %tls.cluster, %host, %error, "upstream TLS handshake failed");
                    Err(ConnectError::Handshake(error))
                }
            }
        })
    }
}

/// The connector of hyper-util's (HTTP/2) client: waits for a connection slot, then connects.
#[derive(Clone)]
pub struct LimitedConnector {
    connector: UpstreamConnector,
    limit: Arc<ConnectionLimit>,
    /// Bounds the wait for a connection slot.
    connect_timeout: Duration,
}

impl LimitedConnector {
    pub fn new(
        connector: UpstreamConnector,
        limit: ConnectionLimit,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            limit: Arc::new(limit),
            connect_timeout,
        }
    }
}

pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, ConnectError> {
    // IPv6 hosts come bracketed from URIs.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| ConnectError::ServerName(name.to_owned()))
}

impl tower_service::Service<Uri> for LimitedConnector {
    type Response = UpstreamStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.connector.http, cx)
            .map_err(|e| ConnectError::Tcp(e.into()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let limit = self.limit.clone();
        let wait = self.connect_timeout;
        let endpoint = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        Box::pin(async move {
            let slot = tokio::time::timeout(wait, limit.acquire(&endpoint))
                .await
                .map_err(|_| ConnectError::Limit(endpoint))?;
            connector.connect(uri, slot).await
        })
    }
}

/// A plain or TLS upstream connection, holding its endpoint's connection slot until it closes.
pub struct UpstreamStream {
    io: Io,
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TokioIo<TcpStream>),
    /// Boxed: the TLS session state is large, plaintext connections should not pay for it.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Plain(s) => s.connected(),
            Io::Tls(s) => {
                let (tcp, session) = s.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}
