//! Upstream TLS: the rustls `ClientConfig` of one TLS cluster (ring provider only, TLS 1.2+),
//! built from its `UpstreamTls` settings and the Secrets they name.
//!
//! Trust: the CA bundle Secret's certificates, or the public web PKI roots when none is named.
//! `insecure_skip_verify` accepts any server certificate but still checks the handshake
//! signatures, so the peer must at least hold the key of the certificate it presents.
//! `subject_alt_names` (BackendTLSPolicy `validation.subjectAltNames`) replaces the SNI as the
//! name the certificate must carry: see [`SubjectAltNameVerifier`].

use crate::tls::{PROVIDER, load_certified_key};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ResolvesClientCert, WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor,
    verify_server_name,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version,
};
use rustls_pki_types::pem::PemObject;
use sluice_proto::config as pb;
use std::sync::Arc;

/// Everything a TLS cluster's client is built from. Secrets compare by `Arc` identity (an
/// unchanged Secret keeps its `Arc`), so equal inputs mean the client and its pool can be kept.
#[derive(Clone, Debug)]
pub struct TlsInputs {
    pub settings: pb::UpstreamTls,
    pub ca: Option<Arc<pb::Secret>>,
    pub client_certificate: Option<Arc<pb::Secret>>,
}

impl PartialEq for TlsInputs {
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &Option<Arc<pb::Secret>>, b: &Option<Arc<pb::Secret>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        self.settings == other.settings
            && same(&self.ca, &other.ca)
            && same(&self.client_certificate, &other.client_certificate)
    }
}

/// Which application protocol is offered by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
    /// No ALPN extension: L4 streams carry whatever protocol the backend speaks.
    None,
}

/// The ClientConfig for `inputs`. Errors name the field (`tls.ca_secret: ...`).
pub fn client_config(inputs: &TlsInputs, alpn: Alpn) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if inputs.settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
    } else {
        let roots = match &inputs.ca {
            Some(secret) => ca_roots(secret).map_err(|e| format!("tls.ca_secret: {e}"))?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), PROVIDER.clone())
            .build()
            .map_err(|e| format!("tls.ca_secret: {e}"))?;
        if inputs.settings.subject_alt_names.is_empty() {
            builder.with_webpki_verifier(verifier)
        } else {
            let verifier =
                SubjectAltNameVerifier::new(roots, verifier, &inputs.settings.subject_alt_names)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let mut config = match &inputs.client_certificate {
        Some(secret) => {
            let key =
                client_key(secret).map_err(|e| format!("tls.client_certificate_secret: {e}"))?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(Arc::new(key))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::None => Vec::new(),
    };
    Ok(config)
}

/// Checks one `subject_alt_names` entry: exactly one kind, non-empty, a DNS name (optionally
/// with a leading `*.` label) or a URI with a scheme and an authority (`scheme://...`).
pub fn validate_subject_alt_name(san: &pb::SubjectAltName) -> Result<(), String> {
    ExpectedName::parse(san).map(|_| ())
}

/// One name the server certificate may carry instead of the SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExpectedName {
    /// A DNS name (or IP address) the certificate must be valid for, as for an SNI: a
    /// certificate wildcard `*.example.com` covers `api.example.com`.
    Dns(ServerName<'static>),
    /// `*.example.com` (lowercase): BackendTLSPolicy asks for a certificate SAN matching the
    /// policy's SAN, so the certificate must carry exactly this wildcard name.
    WildcardDns(String),
    /// A URI SAN, compared exactly (SPIFFE IDs are case-sensitive).
    Uri(String),
}

impl ExpectedName {
    fn parse(san: &pb::SubjectAltName) -> Result<Self, String> {
        use pb::subject_alt_name::Kind;
        match &san.kind {
            None => Err("one of hostname or uri must be set".into()),
            Some(Kind::Hostname(name)) => {
                if name.is_empty() {
                    return Err("hostname: empty".into());
                }
                let invalid = || format!("hostname: {name:?} is not a DNS name");
                match name.strip_prefix("*.") {
                    Some(base) => {
                        // The base must be a DNS name of its own; rustls refuses a "*" label.
                        match ServerName::try_from(base) {
                            Ok(ServerName::DnsName(_)) => {
                                Ok(ExpectedName::WildcardDns(name.to_ascii_lowercase()))
                            }
                            _ => Err(invalid()),
                        }
                    }
                    None => ServerName::try_from(name.clone())
                        .map(ExpectedName::Dns)
                        .map_err(|_| invalid()),
                }
            }
            Some(Kind::Uri(uri)) => {
                if uri.is_empty() {
                    return Err("uri: empty".into());
                }
                let scheme = uri.split_once("://").map(|(scheme, _)| scheme);
                let scheme_ok = scheme.is_some_and(|s| {
                    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                });
                if !scheme_ok {
                    return Err(format!(
                        "uri: {uri:?} is not a URI with a scheme and an authority (scheme://...)"
                    ));
                }
                Ok(ExpectedName::Uri(uri.clone()))
            }
        }
    }

    /// Whether the certificate carries this name.
    fn matches(&self, parsed: &ParsedCertificate<'_>, cert: &webpki::EndEntityCert<'_>) -> bool {
        match self {
            ExpectedName::Dns(name) => verify_server_name(parsed, name).is_ok(),
            // A literal comparison, not name verification (which `valid_dns_names` warns
            // against): the policy names the wildcard SAN itself.
            ExpectedName::WildcardDns(wildcard) => cert
                .valid_dns_names()
                .any(|presented| presented.eq_ignore_ascii_case(wildcard)),
            ExpectedName::Uri(uri) => cert.valid_uri_names().any(|presented| presented == uri),
        }
    }
}

/// Verifies the server certificate as the webpki verifier does (same roots, clock and
/// signature algorithms, through rustls's own chain verification), but accepts it when it
/// carries one of `names` rather than the SNI.
#[derive(Debug)]
struct SubjectAltNameVerifier {
    roots: Arc<RootCertStore>,
    /// The webpki verifier over the same roots, for the handshake signatures.
    signatures: Arc<WebPkiServerVerifier>,
    names: Vec<ExpectedName>,
}

impl SubjectAltNameVerifier {
    /// Errors name the entry (`tls.subject_alt_names[1]: ...`).
    fn new(
        roots: Arc<RootCertStore>,
        signatures: Arc<WebPkiServerVerifier>,
        sans: &[pb::SubjectAltName],
    ) -> Result<Self, String> {
        let names = sans
            .iter()
            .enumerate()
            .map(|(i, san)| {
                ExpectedName::parse(san).map_err(|e| format!("tls.subject_alt_names[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            roots,
            signatures,
            names,
        })
    }
}

impl ServerCertVerifier for SubjectAltNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            PROVIDER.signature_verification_algorithms.all,
        )?;
        // Parsed again only for its SAN list (ParsedCertificate keeps it private).
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.names.iter().any(|name| name.matches(&parsed, &cert)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

pub(crate) fn ca_roots(secret: &pb::Secret) -> Result<RootCertStore, String> {
    let Some(pb::secret::Kind::CaBundle(ca)) = &secret.kind else {
        return Err(format!("secret {:?} is not a CaBundle", secret.name));
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca.pem) {
        let cert = cert.map_err(|e| format!("ca_bundle.pem: invalid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_bundle.pem: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca_bundle.pem: no certificate found".into());
    }
    Ok(roots)
}

fn client_key(secret: &pb::Secret) -> Result<CertifiedKey, String> {
    match &secret.kind {
        Some(pb::secret::Kind::TlsCertificate(t)) => load_certified_key(t),
        _ => Err(format!("secret {:?} is not a TlsCertificate", secret.name)),
    }
}

/// Presents the one configured certificate whatever the server asks for (the server decides).
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `insecure_skip_verify`: trusts any certificate, but the handshake signatures are still
/// verified against it.
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::tls::verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::self_signed;

    fn ca(pem: &str) -> Arc<pb::Secret> {
        Arc::new(pb::Secret {
            name: "ca".into(),
            kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                pem: pem.as_bytes().to_vec(),
            })),
            ..Default::default()
        })
    }

    fn inputs(ca: Option<Arc<pb::Secret>>, client: Option<Arc<pb::Secret>>) -> TlsInputs {
        TlsInputs {
            settings: pb::UpstreamTls::default(),
            ca,
            client_certificate: client,
        }
    }

    #[test]
    fn builds_configs_with_alpn_and_client_auth() {
        let server = self_signed(&["a.test"]);
        let config = client_config(&inputs(Some(ca(&server.cert_pem)), None), Alpn::Http1)
            .expect("ca config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(!config.client_auth_cert_resolver.has_certs());
        let client = Arc::new(self_signed(&["client"]).secret("client"));
        let config = client_config(&inputs(None, Some(client)), Alpn::H2).expect("public roots");
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
        let config = client_config(&inputs(None, None), Alpn::None).expect("no alpn");
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let e = client_config(&inputs(Some(ca("not pem")), None), Alpn::Http1).unwrap_err();
        assert_eq!(e, "tls.ca_secret: ca_bundle.pem: no certificate found");
        let not_ca = Arc::new(self_signed(&["a"]).secret("s"));
        let e = client_config(&inputs(Some(not_ca), None), Alpn::Http1).unwrap_err();
        assert_eq!(e, "tls.ca_secret: secret \"s\" is not a CaBundle");
        let e = client_config(&inputs(None, Some(ca("x"))), Alpn::Http1).unwrap_err();
        assert_eq!(
            e,
            "tls.client_certificate_secret: secret \"ca\" is not a TlsCertificate"
        );
    }

    #[test]
    fn inputs_compare_secrets_by_identity() {
        let pem = self_signed(&["a"]).cert_pem;
        let (a, b) = (ca(&pem), ca(&pem));
        assert_eq!(inputs(Some(a.clone()), None), inputs(Some(a.clone()), None));
        assert_ne!(inputs(Some(a.clone()), None), inputs(Some(b), None));
        assert_ne!(inputs(Some(a), None), inputs(None, None));
    }

    #[test]
    fn insecure_verifier_accepts_any_certificate() {
        let cert = CertificateDer::from(self_signed(&["a"]).der);
        let name = ServerName::try_from("b.test").expect("name");
        assert!(
            AcceptAnyCertificate
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        // Signatures are checked with the provider's algorithms (DigitallySignedStruct cannot be
        // built outside rustls; the end-to-end test completes real handshakes).
        assert!(
            AcceptAnyCertificate
                .supported_verify_schemes()
                .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
        );
    }

    mod subject_alt_names {
        use super::*;
        use pb::subject_alt_name::Kind;
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

        struct Ca(CertifiedIssuer<'static, KeyPair>);

        impl Ca {
            fn new() -> Self {
                let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                let key = KeyPair::generate().expect("key");
                Ca(CertifiedIssuer::self_signed(params, key).expect("ca"))
            }

            fn roots(&self) -> Arc<RootCertStore> {
                let mut roots = RootCertStore::empty();
                roots.add(self.0.der().clone()).expect("root");
                Arc::new(roots)
            }

            fn leaf(&self, sans: Vec<SanType>) -> CertificateDer<'static> {
                let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
                params.subject_alt_names = sans;
                let key = KeyPair::generate().expect("key");
                params.signed_by(&key, &self.0).expect("leaf").der().clone()
            }
        }

        fn dns(name: &str) -> SanType {
            SanType::DnsName(name.try_into().expect("dns"))
        }

        fn uri(u: &str) -> SanType {
            SanType::URI(u.try_into().expect("uri"))
        }

        fn hostname(h: &str) -> pb::SubjectAltName {
            pb::SubjectAltName {
                kind: Some(Kind::Hostname(h.into())),
            }
        }

        fn uri_san(u: &str) -> pb::SubjectAltName {
            pb::SubjectAltName {
                kind: Some(Kind::Uri(u.into())),
            }
        }

        fn verifier(ca: &Ca, sans: &[pb::SubjectAltName]) -> SubjectAltNameVerifier {
            let roots = ca.roots();
            let inner =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), PROVIDER.clone())
                    .build()
                    .expect("webpki verifier");
            SubjectAltNameVerifier::new(roots, inner, sans).expect("valid SANs")
        }

        /// Verifies `cert` for the SNI `sni.test`, which it never carries.
        fn verify(
            v: &SubjectAltNameVerifier,
            cert: &CertificateDer<'_>,
        ) -> Result<(), rustls::Error> {
            let sni = ServerName::try_from("sni.test").expect("sni");
            v.verify_server_cert(cert, &[], &sni, &[], UnixTime::now())
                .map(|_| ())
        }

        const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/api";

        #[test]
        fn dns_names_match_as_for_an_sni() {
            let ca = Ca::new();
            let exact = ca.leaf(vec![dns("api.example.com")]);
            let wildcard_cert = ca.leaf(vec![dns("*.example.com")]);
            let v = verifier(&ca, &[hostname("other.test"), hostname("api.example.com")]);
            assert!(verify(&v, &exact).is_ok());
            // A certificate wildcard covers the policy's exact name, as it would the SNI.
            assert!(verify(&v, &wildcard_cert).is_ok());
            let v = verifier(&ca, &[hostname("API.example.com")]);
            assert!(
                verify(&v, &exact).is_ok(),
                "DNS names compare case-insensitively"
            );
            let v = verifier(&ca, &[hostname("web.example.com")]);
            assert_eq!(
                verify(&v, &exact),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                ))
            );
        }

        #[test]
        fn wildcard_entries_need_that_exact_wildcard_san() {
            let ca = Ca::new();
            let v = verifier(&ca, &[hostname("*.example.com")]);
            assert!(verify(&v, &ca.leaf(vec![dns("*.example.com")])).is_ok());
            assert!(verify(&v, &ca.leaf(vec![dns("*.EXAMPLE.com")])).is_ok());
            // A name the wildcard would cover is not the wildcard SAN itself.
            assert!(verify(&v, &ca.leaf(vec![dns("api.example.com")])).is_err());
            assert!(verify(&v, &ca.leaf(vec![dns("*.other.example.com")])).is_err());
        }

        #[test]
        fn uri_entries_match_exactly() {
            let ca = Ca::new();
            let cert = ca.leaf(vec![uri(SPIFFE)]);
            assert!(verify(&verifier(&ca, &[uri_san(SPIFFE)]), &cert).is_ok());
            for other in [
                "spiffe://cluster.local/ns/default/sa/web",
                "spiffe://cluster.local/ns/default/sa/api/",
                "SPIFFE://cluster.local/ns/default/sa/API",
            ] {
                assert!(
                    verify(&verifier(&ca, &[uri_san(other)]), &cert).is_err(),
                    "{other}"
                );
            }
            // A URI SAN is not a DNS name, nor the reverse.
            let dns_cert = ca.leaf(vec![dns("cluster.local")]);
            assert!(
                verify(
                    &verifier(&ca, &[uri_san("spiffe://cluster.local")]),
                    &dns_cert
                )
                .is_err()
            );
            assert!(verify(&verifier(&ca, &[hostname("cluster.local")]), &cert).is_err());
            // Any one matching entry is enough.
            let v = verifier(&ca, &[hostname("api.example.com"), uri_san(SPIFFE)]);
            assert!(verify(&v, &cert).is_ok());
        }

        #[test]
        fn the_chain_is_still_verified() {
            let (trusted, untrusted) = (Ca::new(), Ca::new());
            let v = verifier(&trusted, &[uri_san(SPIFFE), hostname("api.example.com")]);
            let cert = untrusted.leaf(vec![uri(SPIFFE), dns("api.example.com")]);
            // Both CAs carry rcgen's default name, so webpki finds the wrong one and refuses
            // its signature: a chain error either way, never a name error.
            let refused = verify(&v, &cert).expect_err("untrusted issuer refused");
            assert!(
                matches!(
                    refused,
                    rustls::Error::InvalidCertificate(
                        CertificateError::BadSignature | CertificateError::UnknownIssuer
                    )
                ),
                "{refused:?}"
            );
            // The CA certificate itself is no server certificate.
            assert!(verify(&v, trusted.0.der()).is_err());
        }

        #[test]
        fn corrupt_certificates_are_refused_without_panicking() {
            let ca = Ca::new();
            let v = verifier(&ca, &[uri_san(SPIFFE), hostname("*.example.com")]);
            let good = ca.leaf(vec![uri(SPIFFE), dns("*.example.com")]);
            assert!(verify(&v, &good).is_ok());
            for len in 0..good.len() {
                let cut = CertificateDer::from(good[..len].to_vec());
                assert!(verify(&v, &cut).is_err(), "truncated to {len}");
            }
            for i in 0..good.len() {
                let mut bytes = good.to_vec();
                bytes[i] ^= 0x5a;
                assert!(
                    verify(&v, &CertificateDer::from(bytes)).is_err(),
                    "byte {i} flipped"
                );
            }
        }

        #[test]
        fn invalid_entries_name_the_field() {
            let err = |san: pb::SubjectAltName| {
                let ca = Ca::new();
                let roots = ca.roots();
                let inner =
                    WebPkiServerVerifier::builder_with_provider(roots.clone(), PROVIDER.clone())
                        .build()
                        .expect("webpki verifier");
                SubjectAltNameVerifier::new(roots, inner, &[hostname("ok.test"), san])
                    .map(|_| ())
                    .unwrap_err()
            };
            assert_eq!(
                err(pb::SubjectAltName { kind: None }),
                "tls.subject_alt_names[1]: one of hostname or uri must be set"
            );
            assert_eq!(
                err(hostname("")),
                "tls.subject_alt_names[1]: hostname: empty"
            );
            assert_eq!(err(uri_san("")), "tls.subject_alt_names[1]: uri: empty");
            assert_eq!(
                err(hostname("a b")),
                "tls.subject_alt_names[1]: hostname: \"a b\" is not a DNS name"
            );
            assert_eq!(
                err(hostname("*.*.example.com")),
                "tls.subject_alt_names[1]: hostname: \"*.*.example.com\" is not a DNS name"
            );
            assert!(
                err(uri_san("cluster.local/ns")).starts_with("tls.subject_alt_names[1]: uri:"),
                "a URI needs a scheme"
            );
            assert!(err(uri_san("://x")).starts_with("tls.subject_alt_names[1]: uri:"));
            assert!(validate_subject_alt_name(&hostname("*.example.com")).is_ok());
            assert!(validate_subject_alt_name(&uri_san(SPIFFE)).is_ok());
        }

        #[test]
        fn client_config_uses_the_san_list_unless_verification_is_off() {
            let ca = Ca::new();
            let secret = Arc::new(pb::Secret {
                name: "ca".into(),
                kind: Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                    pem: ca.0.pem().into_bytes(),
                })),
                ..Default::default()
            });
            let mut tls = inputs(Some(secret), None);
            tls.settings.subject_alt_names = vec![hostname("")];
            assert_eq!(
                client_config(&tls, Alpn::None).unwrap_err(),
                "tls.subject_alt_names[0]: hostname: empty"
            );
            tls.settings.subject_alt_names = vec![uri_san(SPIFFE)];
            assert!(client_config(&tls, Alpn::None).is_ok());
            // insecure_skip_verify is the explicit choice: the SAN list is not consulted.
            tls.settings.insecure_skip_verify = true;
            tls.settings.subject_alt_names = vec![hostname("")];
            assert!(client_config(&tls, Alpn::None).is_ok());
        }
    }
}
