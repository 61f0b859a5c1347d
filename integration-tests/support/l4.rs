//! Test backends for TCP, TLS and UDP listeners, run as tasks of the test: a TCP echo that first
//! sends its name and a newline, the same behind TLS with its own certificate, and a UDP echo
//! that replies `name|datagram`. Plus a small test PKI (rcgen) for the TLS ones.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Sends `name\n`, then echoes until the client half-closes, then half-closes too.
async fn greet_and_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, name: &str) {
    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

/// A TCP echo backend on a loopback port; returns the port.
pub async fn tcp_echo(name: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tcp echo");
    let port = listener.local_addr().expect("addr").port();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move { greet_and_echo(stream, &name).await });
        }
    });
    port
}

/// A TLS echo backend presenting `(chain PEM, key PEM)`; returns the port.
pub async fn tls_echo(name: &str, identity: &(String, String)) -> u16 {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tls echo");
    let port = listener.local_addr().expect("addr").port();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let name = name.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    greet_and_echo(tls, &name).await;
                }
            });
        }
    });
    port
}

/// A UDP echo backend replying `name|datagram` to each datagram; returns the port.
pub async fn udp_echo(name: &str) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp echo");
    let port = socket.local_addr().expect("addr").port();
    let prefix = format!("{name}|").into_bytes();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut reply = Vec::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            reply.clear();
            reply.extend_from_slice(&prefix);
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    port
}

/// A test certificate authority.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        Self { ca }
    }

    /// A leaf for `names`: (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.ca)
            .expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A client trusting only this CA, offering no ALPN.
    pub fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("ca root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}
