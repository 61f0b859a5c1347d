//! One connection to the directory: TCP, ldaps:// or StartTLS (rustls), and the request /
//! response exchange of [`super::ber`] messages.

use super::ber::{self, Response};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
}

#[derive(Debug, Clone)]
pub enum Tls {
    None,
    /// ldaps://: TLS from the first byte.
    Direct(Arc<ClientConfig>),
    /// ldap:// upgraded with the StartTLS extended operation.
    Upgrade(Arc<ClientConfig>),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub struct Conn {
    io: Stream,
    next_id: u32,
    buf: Vec<u8>,
    pub created: Instant,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn, String> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", target.host, target.port))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Conn {
            io: Stream::Plain(tcp),
            next_id: 1,
            buf: Vec::new(),
            created: Instant::now(),
        };
        match &target.tls {
            Tls::None => Ok(conn),
            Tls::Direct(config) => conn.upgrade(config, &target.host).await,
            Tls::Upgrade(config) => {
                let id = conn.id();
                conn.send(ber::start_tls_request(id)).await?;
                match conn.receive(id).await? {
                    Response::Result { op, code, message } if ber::is_extended_response(op) => {
                        if code != ber::RESULT_SUCCESS {
                            return Err(format!("StartTLS refused ({code}: {message})"));
                        }
                    }
                    other => return Err(format!("unexpected answer to StartTLS: {other:?}")),
                }
                conn.upgrade(config, &target.host).await
            }
        }
    }

    /// The same connection with TLS started on it.
    async fn upgrade(self, config: &Arc<ClientConfig>, host: &str) -> Result<Conn, String> {
        let Stream::Plain(tcp) = self.io else {
            return Err("TLS is already started".into());
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with the directory: {e}"))?;
        Ok(Conn {
            io: Stream::Tls(Box::new(tls)),
            ..self
        })
    }

    fn io(&mut self) -> &mut dyn Io {
        match &mut self.io {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &mut **tls,
        }
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.io()
            .write_all(&bytes)
            .await
            .map_err(|e| format!("writing to the directory: {e}"))?;
        self.io()
            .flush()
            .await
            .map_err(|e| format!("writing to the directory: {e}"))
    }

    /// The next message with `id` (others, e.g. notices of disconnection, end the connection).
    async fn receive(&mut self, id: u32) -> Result<Response, String> {
        loop {
            if let Some((_, header, len)) = ber::header(&self.buf)? {
                if header + len > ber::MAX_MESSAGE {
                    return Err("directory message too large".into());
                }
                if self.buf.len() >= header + len {
                    let (got, response) = ber::decode(&self.buf[..header + len])?;
                    self.buf.drain(..header + len);
                    if got != id {
                        return Err(format!("unexpected message id {got} (expected {id})"));
                    }
                    return Ok(response);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .io()
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading from the directory: {e}"))?;
            if n == 0 {
                return Err("the directory closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Simple bind: Ok(true) bound, Ok(false) invalid credentials, Err for anything else.
    pub async fn bind(&mut self, dn: &str, password: &str) -> Result<bool, String> {
        let id = self.id();
        self.send(ber::bind_request(id, dn, password)).await?;
        match self.receive(id).await? {
            Response::Result { op, code, message } if ber::is_bind_response(op) => match code {
                ber::RESULT_SUCCESS => Ok(true),
                ber::RESULT_INVALID_CREDENTIALS => Ok(false),
                code => Err(format!("bind as {dn:?} failed ({code}: {message})")),
            },
            other => Err(format!("unexpected answer to a bind: {other:?}")),
        }
    }

    /// The DNs of the entries under `base` matching `filter` (at most 2 are asked for).
    pub async fn search(
        &mut self,
        base: &str,
        filter: &[u8],
        time_limit_secs: u32,
    ) -> Result<Vec<Vec<u8>>, String> {
        let id = self.id();
        self.send(ber::search_request(id, base, filter, time_limit_secs))
            .await?;
        let mut found = Vec::new();
        loop {
            match self.receive(id).await? {
                Response::Entry(dn) => found.push(dn),
                Response::Reference => {}
                Response::Result { code, message, .. } => {
                    // sizeLimitExceeded (4): more than one entry, which is ambiguous anyway.
                    return match code {
                        ber::RESULT_SUCCESS | 4 | 32 => Ok(found),
                        code => Err(format!("search failed ({code}: {message})")),
                    };
                }
            }
        }
    }
}
