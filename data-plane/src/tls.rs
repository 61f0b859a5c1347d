//! TLS termination: loading certificate Secrets into rustls keys (ring provider only), the per-port
//! SNI index (route certificates by hostname, then listener certificates, and the port's client
//! certificate policy), the rustls resolver and client verifier that read the current snapshot at
//! each handshake, and the per-connection misdirected-request check.

use crate::router::host::{HostPattern, NormalizedHost, wildcard_suffixes};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sluice_proto::config as pb;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};

/// The one crypto provider: ring, never a process default (keeps aws-lc out of the build).
pub(crate) static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// Parses a TlsCertificate Secret into a signing key with its chain. Checks that the chain holds at
/// least one certificate, that there is exactly one private key (PKCS#8, PKCS#1 or SEC1), that ring
/// can load it and that it matches the leaf certificate. Errors name the offending field.
pub fn load_certified_key(tls: &pb::TlsCertificate) -> Result<CertifiedKey, String> {
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&tls.certificate_chain) {
        chain.push(
            cert.map_err(|e| format!("tls_certificate.certificate_chain: invalid PEM: {e}"))?,
        );
    }
    let Some(leaf) = chain.first() else {
        return Err("tls_certificate.certificate_chain: no certificate found".into());
    };
    webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        format!("tls_certificate.certificate_chain[0]: not a valid X.509 certificate: {e}")
    })?;
    let mut keys = PrivateKeyDer::pem_slice_iter(&tls.private_key);
    let key = match keys.next() {
        None => return Err("tls_certificate.private_key: no private key found".into()),
        Some(Err(e)) => return Err(format!("tls_certificate.private_key: invalid PEM: {e}")),
        Some(Ok(key)) => key,
    };
    match keys.next() {
        None => {}
        Some(Ok(_)) => {
            return Err("tls_certificate.private_key: more than one private key found".into());
        }
        Some(Err(e)) => return Err(format!("tls_certificate.private_key: invalid PEM: {e}")),
    }
    let signing_key = PROVIDER
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls_certificate.private_key: cannot load key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        format!("tls_certificate.private_key: does not match the leaf certificate ({e})")
    })?;
    Ok(certified)
}

/// Checks a CaBundle: valid PEM with at least one certificate.
pub fn validate_ca_bundle(ca: &pb::CaBundle) -> Result<(), String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&ca.pem) {
        cert.map_err(|e| format!("ca_bundle.pem: invalid PEM: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("ca_bundle.pem: no certificate found".into());
    }
    Ok(())
}

/// Whether the leaf certificate of `key` is valid for `name` (SAN check, as a client would do).
fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.cert.first().is_some_and(|leaf| {
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    })
}

/// The certificates of one listener, tried for names its hostname accepts.
#[derive(Debug)]
struct ListenerCerts {
    hostname: HostPattern,
    certs: Vec<Arc<CertifiedKey>>,
}

/// Certificate selection for one TLS port. For a (normalised) server name, in order: a route
/// certificate for that exact host, a route certificate for the most specific matching wildcard,
/// the first certificate valid for the name of the most specific listener accepting it, and
/// finally the default (the first certificate of the first listener by name; also used without
/// SNI). No certificate at all refuses the handshake (fail closed).
#[derive(Debug, Default)]
pub struct SniIndex {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`, like the router's host index.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Most specific hostname first (stable: ties keep listener name order).
    listeners: Vec<ListenerCerts>,
    default: Option<Arc<CertifiedKey>>,
    client_auth: ClientAuth,
}

/// Whether and how a TLS port verifies client certificates.
#[derive(Clone, Default)]
pub enum ClientAuth {
    #[default]
    None,
    Verify(Arc<dyn ClientCertVerifier>),
    /// Client certificates are required but the CA cannot be loaded: every handshake is refused
    /// rather than letting clients in unverified.
    Unavailable,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Verify(v) => write!(f, "Verify(mandatory: {})", v.client_auth_mandatory()),
            Self::Unavailable => f.write_str("Unavailable"),
        }
    }
}

impl ClientAuth {
    /// Verification against the CaBundle `ca`; `optional` also admits clients without a
    /// certificate.
    pub fn from_ca(ca: &pb::Secret, optional: bool) -> Result<Self, String> {
        let roots = crate::upstream::tls::ca_roots(ca)?;
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), PROVIDER.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map(Self::Verify).map_err(|e| e.to_string())
    }
}

impl SniIndex {
    /// Serves `key` for the hosts of `pattern`. The first certificate added for a pattern wins, so
    /// callers add routes in name order for a deterministic choice. `Any` is ignored: a route
    /// certificate without a hostname cannot be selected by name.
    pub fn add_route_cert(&mut self, pattern: &HostPattern, key: &Arc<CertifiedKey>) {
        let map = match pattern {
            HostPattern::Any => return,
            HostPattern::Exact(h) => self.exact.entry(h.clone()),
            HostPattern::Wildcard(s) => self.wildcard.entry(s.clone()),
        };
        map.or_insert_with(|| key.clone());
    }

    /// Adds a listener's certificates; call in listener name order.
    pub fn add_listener(&mut self, hostname: HostPattern, certs: Vec<Arc<CertifiedKey>>) {
        if self.default.is_none() {
            self.default = certs.first().cloned();
        }
        let at = self
            .listeners
            .partition_point(|l| l.hostname.specificity() >= hostname.specificity());
        self.listeners.insert(at, ListenerCerts { hostname, certs });
    }

    /// Whether no certificate can be served at all.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.exact.is_empty() && self.wildcard.is_empty()
    }

    pub fn set_client_auth(&mut self, auth: ClientAuth) {
        self.client_auth = auth;
    }

    pub fn client_auth(&self) -> &ClientAuth {
        &self.client_auth
    }

    /// The certificate for a normalised server name (lowercase, no port, no trailing dot);
    /// `None` or "" means no SNI. Allocation-free. None when the port's client CA is unusable.
    pub fn resolve(&self, name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        if matches!(self.client_auth, ClientAuth::Unavailable) {
            return None;
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return self.default.as_ref();
        };
        if let Some(key) = self.exact.get(name) {
            return Some(key);
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(name) {
                if let Some(key) = self.wildcard.get(suffix) {
                    return Some(key);
                }
            }
        }
        if let Ok(server_name) = ServerName::try_from(name) {
            for listener in self.listeners.iter().filter(|l| l.hostname.matches(name)) {
                if let Some(key) = listener.certs.iter().find(|k| valid_for(k, &server_name)) {
                    return Some(key);
                }
            }
        }
        self.default.as_ref()
    }
}

/// Resolves the certificate of each handshake on one port from the snapshot current at that
/// moment: a rotated Secret serves new handshakes at once, and nothing is rebuilt on rotation.
pub struct SnapshotResolver {
    current: Arc<ArcSwap<Snapshot>>,
    port: u16,
}

impl fmt::Debug for SnapshotResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotResolver")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SnapshotResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.current.load();
        let sni = hello.server_name().map(NormalizedHost::new);
        let name = sni.as_ref().map(NormalizedHost::as_str);
        let key = snapshot.tls(self.port)?.resolve(name).cloned();
        if key.is_none() {
            tracing::debug!(port = self.port, sni = ?name, "no certificate for handshake");
        }
        key
    }
}

/// Verifies client certificates by the policy of the snapshot current at each handshake, so a
/// changed CA applies to new connections without rebinding the port.
struct SnapshotClientVerifier {
    current: Arc<ArcSwap<Snapshot>>,
    port: u16,
}

impl fmt::Debug for SnapshotClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotClientVerifier")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl SnapshotClientVerifier {
    fn policy(&self) -> ClientAuth {
        self.current
            .load()
            .tls(self.port)
            .map(|i| i.client_auth().clone())
            .unwrap_or_default()
    }
}

impl ClientCertVerifier for SnapshotClientVerifier {
    fn offer_client_auth(&self) -> bool {
        !matches!(self.policy(), ClientAuth::None)
    }

    fn client_auth_mandatory(&self) -> bool {
        match self.policy() {
            ClientAuth::None => false,
            ClientAuth::Verify(v) => v.client_auth_mandatory(),
            ClientAuth::Unavailable => true,
        }
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to outlive the snapshot; an empty list lets clients pick any.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.policy() {
            ClientAuth::Verify(v) => v.verify_client_cert(end_entity, intermediates, now),
            // Offered by an earlier policy during this handshake: nothing to verify against.
            _ => Err(rustls::Error::General(
                "client certificates are not accepted on this port".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes()
    }
}

/// Handshake signature checks with the ring provider, for our custom certificate verifiers.
pub(crate) fn verify_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &PROVIDER.signature_verification_algorithms,
    )
}

pub(crate) fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &PROVIDER.signature_verification_algorithms,
    )
}

pub(crate) fn verify_schemes() -> Vec<SignatureScheme> {
    PROVIDER
        .signature_verification_algorithms
        .supported_schemes()
}

/// The ServerConfig of one TLS port, built once per bind: TLS 1.2 and 1.3, ALPN h2 then
/// http/1.1, session resumption (rustls' in-memory session cache, plus stateless tickets),
/// certificates and client-certificate policy from the current snapshot.
pub fn server_config(
    current: Arc<ArcSwap<Snapshot>>,
    port: u16,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    build_server_config(current, port, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
}

/// The ServerConfig of a TLS listener port that terminates and forwards the byte stream (TLSRoute
/// in terminate mode): like [`server_config`] without ALPN, since the protocol inside is the
/// backend's, not ours to negotiate.
pub fn stream_server_config(
    current: Arc<ArcSwap<Snapshot>>,
    port: u16,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    build_server_config(current, port, Vec::new())
}

fn build_server_config(
    current: Arc<ArcSwap<Snapshot>>,
    port: u16,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_client_cert_verifier(Arc::new(SnapshotClientVerifier {
            current: current.clone(),
            port,
        }))
        .with_cert_resolver(Arc::new(SnapshotResolver { current, port }));
    config.alpn_protocols = alpn;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// What a request needs to know about its TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    /// Normalised SNI, if the client sent one.
    sni: Option<Box<str>>,
    /// The certificate this connection negotiated (resolved right after the handshake).
    negotiated: Option<Arc<CertifiedKey>>,
    /// The first Host approved on this connection that is not its SNI. The negotiated
    /// certificate never changes, so the verdict holds for the connection's life; this spares
    /// the certificate-name check on every request of clients that connect by IP (no SNI).
    approved: OnceLock<Box<str>>,
}

impl TlsConnection {
    /// Records a finished handshake for `sni` on `port`.
    pub fn new(sni: Option<&str>, snapshot: &Snapshot, port: u16) -> Self {
        let sni: Option<Box<str>> = sni.map(|s| NormalizedHost::new(s).as_str().into());
        let negotiated = snapshot
            .tls(port)
            .and_then(|index| index.resolve(sni.as_deref()))
            .cloned();
        TlsConnection {
            sni,
            negotiated,
            approved: OnceLock::new(),
        }
    }

    /// Whether a request for the normalised `host` may be served on this connection: the
    /// certificate `host` would get is the one this connection negotiated. This permits HTTP/2
    /// coalescing across names of one certificate and refuses others (421). Comparing against
    /// the SNI's certificate in the same snapshot too keeps open connections working after a
    /// rotation, when their negotiated key is no longer the current one.
    pub fn serves(&self, snapshot: &Snapshot, port: u16, host: &str) -> bool {
        // No host (HTTP/1.0) names nothing another certificate could serve.
        if host.is_empty()
            || self.sni.as_deref() == Some(host)
            || self.approved.get().is_some_and(|h| **h == *host)
        {
            return true;
        }
        let Some(index) = snapshot.tls(port) else {
            return false;
        };
        let Some(wanted) = index.resolve(Some(host)) else {
            return false;
        };
        let serves = self
            .negotiated
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(k, wanted))
            || index
                .resolve(self.sni.as_deref())
                .is_some_and(|k| Arc::ptr_eq(k, wanted));
        if serves {
            let _ = self.approved.set(host.into());
        }
        serves
    }
}

/// Terminates TLS on an accepted connection within `timeout`, counting the handshake in the
/// TLS metrics; None (logged) when it fails or takes too long.
pub async fn handshake<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    timeout: std::time::Duration,
    metrics: &crate::metrics::Metrics,
    port: u16,
    remote: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = tokio::time::timeout(timeout, acceptor.accept(io)).await;
    metrics.tls_handshake(port, matches!(handshake, Ok(Ok(_))));
    match handshake {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%remote, port, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, port, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod test_certs {
    //! Self-signed test certificates.
    use sluice_proto::config as pb;

    pub struct TestCert {
        pub cert_pem: String,
        pub key_pem: String,
        pub der: Vec<u8>,
    }

    /// A self-signed certificate for `names` (SANs).
    pub fn self_signed(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        TestCert {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().to_vec(),
        }
    }

    impl TestCert {
        pub fn secret(&self, name: &str) -> pb::Secret {
            pb::Secret {
                name: name.into(),
                kind: Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                    certificate_chain: self.cert_pem.clone().into_bytes(),
                    private_key: self.key_pem.clone().into_bytes(),
                })),
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::self_signed;
    use super::*;

    fn tls(cert: &str, key: &str) -> pb::TlsCertificate {
        pb::TlsCertificate {
            certificate_chain: cert.as_bytes().to_vec(),
            private_key: key.as_bytes().to_vec(),
        }
    }

    fn key(names: &[&str]) -> Arc<CertifiedKey> {
        let c = self_signed(names);
        Arc::new(load_certified_key(&tls(&c.cert_pem, &c.key_pem)).expect("valid"))
    }

    #[test]
    fn loads_and_rejects_certificates() {
        let a = self_signed(&["a.test"]);
        let b = self_signed(&["b.test"]);
        let loaded = load_certified_key(&tls(&a.cert_pem, &a.key_pem)).expect("valid");
        assert_eq!(loaded.cert[0].as_ref(), a.der.as_slice());

        let err = |c: &str, k: &str| load_certified_key(&tls(c, k)).unwrap_err();
        let e = err("", &a.key_pem);
        assert_eq!(e, "tls_certificate.certificate_chain: no certificate found");
        let e = err("-----BEGIN CERTIFICATE-----\n!!!\n", &a.key_pem);
        assert!(
            e.starts_with("tls_certificate.certificate_chain: invalid PEM"),
            "{e}"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = err(garbage, &a.key_pem);
        assert!(
            e.starts_with("tls_certificate.certificate_chain[0]:"),
            "{e}"
        );
        let e = err(&a.cert_pem, "");
        assert_eq!(e, "tls_certificate.private_key: no private key found");
        // A key PEM holding only a certificate has no key either.
        let e = err(&a.cert_pem, &a.cert_pem);
        assert_eq!(e, "tls_certificate.private_key: no private key found");
        let two = format!("{}{}", a.key_pem, b.key_pem);
        let e = err(&a.cert_pem, &two);
        assert!(e.contains("more than one private key"), "{e}");
        let e = err(&a.cert_pem, &b.key_pem);
        assert!(
            e.starts_with("tls_certificate.private_key: does not match the leaf certificate"),
            "{e}"
        );
    }

    #[test]
    fn validates_ca_bundles() {
        let a = self_signed(&["a.test"]);
        let ok = pb::CaBundle {
            pem: a.cert_pem.into_bytes(),
        };
        assert_eq!(validate_ca_bundle(&ok), Ok(()));
        let empty = pb::CaBundle { pem: vec![] };
        assert_eq!(
            validate_ca_bundle(&empty).unwrap_err(),
            "ca_bundle.pem: no certificate found"
        );
    }

    #[test]
    fn sni_precedence() {
        let route_exact = key(&["a.example.com"]);
        let route_wild = key(&["*.example.com"]);
        let deep_wild = key(&["*.x.example.com"]);
        let listener_b = key(&["b.other.com"]);
        let listener_default = key(&["default.test"]);
        let mut index = SniIndex::default();
        index.add_route_cert(&HostPattern::parse("a.example.com"), &route_exact);
        index.add_route_cert(&HostPattern::parse("*.example.com"), &route_wild);
        index.add_route_cert(&HostPattern::parse("*.x.example.com"), &deep_wild);
        // Later additions for the same pattern lose; Any is not selectable by name.
        index.add_route_cert(&HostPattern::parse("a.example.com"), &listener_b);
        index.add_route_cert(&HostPattern::Any, &listener_b);
        index.add_listener(
            HostPattern::Any,
            vec![listener_default.clone(), listener_b.clone()],
        );
        let got = |name: Option<&str>| index.resolve(name).cloned();
        let is = |name: Option<&str>, want: &Arc<CertifiedKey>| {
            assert!(
                got(name).is_some_and(|k| Arc::ptr_eq(&k, want)),
                "wrong certificate for {name:?}"
            );
        };
        is(Some("a.example.com"), &route_exact);
        is(Some("b.example.com"), &route_wild);
        is(Some("c.b.example.com"), &route_wild);
        is(Some("y.x.example.com"), &deep_wild);
        // The listener certificate valid for the name beats the (first) default.
        is(Some("b.other.com"), &listener_b);
        is(Some("example.com"), &listener_default);
        is(Some("unknown.test"), &listener_default);
        is(None, &listener_default);
        is(Some(""), &listener_default);
    }

    #[test]
    fn listener_hostnames_scope_their_certificates() {
        let general = key(&["*.example.com"]);
        let api = key(&["api.example.com"]);
        let mut index = SniIndex::default();
        index.add_listener(HostPattern::Any, vec![general.clone()]);
        index.add_listener(HostPattern::parse("api.example.com"), vec![api.clone()]);
        let resolved = |n: &str| index.resolve(Some(n)).cloned();
        assert!(resolved("api.example.com").is_some_and(|k| Arc::ptr_eq(&k, &api)));
        assert!(resolved("www.example.com").is_some_and(|k| Arc::ptr_eq(&k, &general)));
        assert!(
            index
                .resolve(None)
                .is_some_and(|k| Arc::ptr_eq(k, &general))
        );
        assert!(SniIndex::default().resolve(Some("a.test")).is_none());
        assert!(SniIndex::default().is_empty());
    }
}
