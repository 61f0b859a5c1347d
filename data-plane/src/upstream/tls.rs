//! Upstream TLS: the rustls `ClientConfig` of one TLS cluster (ring provider only, TLS 1.2+),
//! built from its `UpstreamTls` settings and the Secrets they name.
//!
//! Trust: the CA bundle Secret's certificates, or the public web PKI roots when none is named.
//! `insecure_skip_verify` accepts any server certificate but still checks the handshake
//! signatures, so the peer must at least hold the key of the certificate it presents.

use crate::tls::{PROVIDER, load_certified_key};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version};
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
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), PROVIDER.clone())
                .build()
                .map_err(|e| format!("tls.ca_secret: {e}"))?;
        builder.with_webpki_verifier(verifier)
    };
    let mut config = match &inputs.client_certificate {
        Some(secret) => {
            let key =
                client_key(secret).map_err(|e| format!("tls.client_certificate_secret: {e}"))?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(Arc::new(key))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match alpn {
        Alpn::Http1 => b"http/1.1".to_vec(),
        Alpn::H2 => b"h2".to_vec(),
    }];
    Ok(config)
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
}
