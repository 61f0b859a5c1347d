//! The control plane's own certificate authority: it signs the xDS server certificate, the
//! short-lived client certificates of data-plane pods (from their CSRs: keys never leave pods)
//! and, offline (`sluice admin-cert`), admin client certificates for the inspection service.

use super::admin_identity::AdminIdentity;
use super::identity::PodIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;

/// Certificates start this much in the past, so a peer whose clock is a little behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The CA itself: long-lived, it is persisted and shared by every replica.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA certificate or key: {0}")]
    Load(String),
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(rcgen::Error),
    #[error("{0}")]
    BadIdentity(String),
}

pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    key: KeyPair,
}

/// The key stays out of logs.
impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A signed leaf certificate.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Load("no system randomness for a serial number".into()))?;
    // Positive (top bit clear) and never zero-led, so the DER encoding is exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CertificateAuthority {
    /// A new CA with a fresh P-256 key.
    pub fn generate(now: OffsetDateTime) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "sluice xDS CA");
        name.push(DnType::OrganizationName, "sluice");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key,
        })
    }

    /// A persisted CA; the key must be the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Load(format!("key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, &key)
            .map_err(|e| CaError::Load(format!("certificate: {e}")))?;
        drop(issuer);
        let der = rustls_pem_der(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Load(format!("certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Load(
                "the key does not belong to the certificate".into(),
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| CaError::Load(format!("certificate: {e}")))
    }

    /// The xDS server certificate and its key (PEM) for `dns_names`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs `csr_pem`'s public key for `identity`: the CSR's own subject and extensions are
    /// ignored, the certificate says only what the control plane authenticated.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        identity: &PodIdentity,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        identity.validate().map_err(CaError::BadIdentity)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        self.sign_leaf(
            &csr.public_key,
            &identity.pod,
            identity.uri(),
            now,
            validity,
        )
    }

    /// A new key and an admin client certificate for `identity` (certificate, key PEM): the
    /// key is made here because the one issuing it holds the CA key anyway.
    pub fn issue_admin(
        &self,
        identity: &AdminIdentity,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(IssuedCertificate, String), CaError> {
        identity.validate().map_err(CaError::BadIdentity)?;
        let key = KeyPair::generate()?;
        let issued = self.sign_leaf(
            &key,
            &format!("sluice admin {}", identity.name),
            identity.uri(),
            now,
            validity,
        )?;
        Ok((issued, key.serialize_pem()))
    }

    /// A client-auth leaf for `public_key` whose only SAN is the identity `uri`.
    fn sign_leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        common_name: &str,
        uri: String,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e: rcgen::Error| CaError::BadIdentity(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = random_serial()?;
        let serial_hex = hex(&serial.to_bytes());
        params.serial_number = Some(serial);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + validity;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(public_key, &self.issuer()?)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            serial: serial_hex,
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// The DER of the first certificate of a PEM text.
fn rustls_pem_der(pem: &str) -> Result<Vec<u8>, CaError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| CaError::Load(format!("certificate PEM: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::identity::PeerCertificate;

    fn identity() -> PodIdentity {
        PodIdentity {
            namespace: "edge".into(),
            gateway: "public".into(),
            pod: "public-1".into(),
            uid: Some("u-1".into()),
        }
    }

    fn csr() -> String {
        let key = KeyPair::generate().expect("key");
        CertificateParams::new(vec!["ignored.example".to_owned()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_client_certificate_names_only_the_authenticated_identity() {
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).expect("ca");
        let issued = ca
            .sign_client(&csr(), &identity(), now, Duration::from_secs(3600))
            .expect("signed");
        let der = rustls_pem_der(&issued.certificate_pem).expect("der");
        let peer = PeerCertificate::from_der(&der).expect("identity");
        assert_eq!(peer.identity, identity());
        assert_eq!(peer.serial, issued.serial);
        assert_eq!(
            peer.not_after,
            (now + Duration::from_secs(3600)).unix_timestamp()
        );
        // The CSR's DNS name is not carried over.
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let san = cert.subject_alternative_name().expect("ok").expect("san");
        assert_eq!(san.value.general_names.len(), 1);
    }

    #[test]
    fn an_admin_certificate_is_an_admin_identity_and_never_a_pod() {
        use crate::security::AdminScope;
        use crate::security::identity::{CertifiedPeer, IdentityError};
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).expect("ca");
        let alice = AdminIdentity {
            name: "alice".into(),
            scope: AdminScope::Namespaces(["team-a".to_owned(), "team-b".to_owned()].into()),
        };
        let (issued, key_pem) = ca
            .issue_admin(&alice, now, Duration::from_secs(86400))
            .expect("issued");
        let der = rustls_pem_der(&issued.certificate_pem).expect("der");
        let CertifiedPeer::Admin(admin) = CertifiedPeer::from_der(&der).expect("parses") else {
            panic!("not an admin certificate");
        };
        assert_eq!(admin.identity, alice);
        assert_eq!(admin.serial, issued.serial);
        assert_eq!(
            admin.not_after,
            (now + Duration::from_secs(86400)).unix_timestamp()
        );
        assert_eq!(
            PeerCertificate::from_der(&der),
            Err(IdentityError::AdminNotPod(alice))
        );
        // The key is the certificate's.
        let key = KeyPair::from_pem(&key_pem).expect("key");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        // A pod certificate reads as a pod's.
        let pod = ca
            .sign_client(&csr(), &identity(), now, Duration::from_secs(60))
            .expect("signed");
        let der = rustls_pem_der(&pod.certificate_pem).expect("der");
        assert!(matches!(
            CertifiedPeer::from_der(&der),
            Ok(CertifiedPeer::Pod(_))
        ));
    }

    #[test]
    fn a_certificate_naming_both_a_pod_and_an_admin_is_refused() {
        use crate::security::identity::{CertifiedPeer, IdentityError};
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let uris = [
            identity().uri(),
            "sluice-admin://alice?namespaces=*".to_owned(),
        ];
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.clone().try_into().expect("uri")))
            .collect();
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            CertifiedPeer::from_der(cert.der()),
            Err(IdentityError::Ambiguous(uris.to_vec()))
        );
    }

    #[test]
    fn a_persisted_ca_loads_and_a_foreign_key_is_refused() {
        let now = OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate(now).expect("ca");
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).expect("loads");
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let other = CertificateAuthority::generate(now).expect("ca");
        let err =
            CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).expect_err("refused");
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn a_garbage_csr_is_refused() {
        let ca = CertificateAuthority::generate(OffsetDateTime::now_utc()).expect("ca");
        let err = ca
            .sign_client(
                "not a csr",
                &identity(),
                OffsetDateTime::now_utc(),
                Duration::from_secs(60),
            )
            .expect_err("refused");
        assert!(matches!(err, CaError::BadCsr(_)), "{err}");
    }
}
