//! The upstream connector: hyper-util's `HttpConnector` for TCP with a caching resolver, then a
//! rustls handshake when the cluster uses TLS. One type for both, so every cluster's client has
//! the same type. A connection holds its endpoint's connection slot (the per-endpoint limit,
//! handed over by the pool) until it closes.

use super::dns::CachingResolver;
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

    /// What to dial for `authority`: `scheme://authority/`.
    pub fn target(&self, authority: &http::uri::Authority) -> Uri {
        let scheme = match self.tls {
            None => http::uri::Scheme::HTTP,
            Some(_) => http::uri::Scheme::HTTPS,
        };
        Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| unreachable!("a scheme and an authority make a URI"))
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
                    io: Io::Plain(tcp.into_inner()),
                    _slot: slot,
                });
            };
            let name = match &tls.server_name {
                Some(n) => n.clone(),
                None => parse_server_name(&host)?,
            };
            match tls.connector.connect(name, tcp.into_inner()).await {
                Ok(stream) => Ok(UpstreamStream {
                    io: Io::Tls(Box::new(stream)),
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

pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, ConnectError> {
    // IPv6 hosts come bracketed from URIs.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| ConnectError::ServerName(name.to_owned()))
}

/// A plain or TLS upstream connection, holding its endpoint's connection slot until it closes.
/// Tokio I/O: our HTTP/1.1 codec drives it directly; hyper's HTTP/2 client gets it through
/// `TokioIo`.
pub struct UpstreamStream {
    io: Io,
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    /// Boxed: the TLS session state is large, plaintext connections should not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
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
