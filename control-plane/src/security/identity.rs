//! A data-plane pod's identity as the control plane's certificates carry it: one URI SAN
//! `spiffe://sluice/ns/NS/gateway/GW/pod/POD[/uid/UID]`; and what a verified client certificate
//! says: a pod's identity or an admin's ([`super::admin_identity`]), never both.

use super::admin_identity::{ADMIN_URI_PREFIX, AdminIdentity};
use std::fmt;

const URI_SCHEME_PREFIX: &str = "spiffe://sluice/";

/// The pod a credential was issued to, and the gateway it serves (in the pod's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    pub namespace: String,
    /// The gateway's name; its id is `namespace/gateway`.
    pub gateway: String,
    pub pod: String,
    /// The pod's UID when it was authenticated by Kubernetes (a re-created pod with the same
    /// name is another pod).
    pub uid: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error(
        "the client certificate names no sluice pod (no URI SAN starting with {URI_SCHEME_PREFIX})"
    )]
    NoPodUri,
    #[error("the client certificate's URI SAN {0:?} is not a sluice pod identity")]
    BadPodUri(String),
    #[error("the client certificate's URI SAN {0:?} is not a sluice admin identity")]
    BadAdminUri(String),
    #[error("the client certificate names more than one sluice identity: {0:?}")]
    Ambiguous(Vec<String>),
    /// Authenticated, but an admin's: it may inspect and nothing else.
    #[error(
        "the client certificate is an admin certificate ({0}): it may only inspect \
         (sluice.discovery.v1.Inspection), not subscribe to xDS or obtain pod certificates"
    )]
    AdminNotPod(AdminIdentity),
}

/// A Kubernetes-style name segment: non-empty, no `/` (it is a path segment of the URI).
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl PodIdentity {
    /// `namespace/gateway`, as `node.gateway` names it.
    pub fn gateway_id(&self) -> String {
        format!("{}/{}", self.namespace, self.gateway)
    }

    /// Checks every part can live in a URI path segment.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("namespace", &self.namespace),
            ("gateway", &self.gateway),
            ("pod", &self.pod),
        ] {
            if !valid_segment(value) {
                return Err(format!("{field} {value:?} is not a valid name"));
            }
        }
        if let Some(uid) = &self.uid
            && !valid_segment(uid)
        {
            return Err(format!("uid {uid:?} is not a valid uid"));
        }
        Ok(())
    }

    pub fn uri(&self) -> String {
        let mut uri = format!(
            "{URI_SCHEME_PREFIX}ns/{}/gateway/{}/pod/{}",
            self.namespace, self.gateway, self.pod
        );
        if let Some(uid) = &self.uid {
            uri.push_str("/uid/");
            uri.push_str(uid);
        }
        uri
    }

    /// The inverse of [`PodIdentity::uri`]; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(URI_SCHEME_PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (namespace, gateway, pod, uid) = match parts.as_slice() {
            ["ns", ns, "gateway", gw, "pod", pod] => (ns, gw, pod, None),
            ["ns", ns, "gateway", gw, "pod", pod, "uid", uid] => (ns, gw, pod, Some(*uid)),
            _ => return None,
        };
        let id = PodIdentity {
            namespace: namespace.to_string(),
            gateway: gateway.to_string(),
            pod: pod.to_string(),
            uid: uid.map(str::to_owned),
        };
        id.validate().ok().map(|()| id)
    }
}

impl fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {}/{}", self.namespace, self.pod)?;
        if let Some(uid) = &self.uid {
            write!(f, " (uid {uid})")?;
        }
        write!(f, " of gateway {}", self.gateway_id())
    }
}

/// What a verified pod certificate says (rustls already checked its chain and validity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    pub identity: PodIdentity,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// What a verified admin certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCertificate {
    pub identity: AdminIdentity,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// A verified client certificate of our CA: a pod's or an admin's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertifiedPeer {
    Pod(PeerCertificate),
    Admin(AdminCertificate),
}

impl CertifiedPeer {
    /// Reads the identity, serial and expiry of a DER certificate. Exactly one sluice URI SAN
    /// (pod or admin) must be there, and it must parse strictly.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        use x509_parser::prelude::*;
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let ours: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .filter(|u| u.starts_with(URI_SCHEME_PREFIX) || u.starts_with(ADMIN_URI_PREFIX))
                    .collect()
            })
            .unwrap_or_default();
        let uri = match ours.as_slice() {
            [] => return Err(IdentityError::NoPodUri),
            [uri] => *uri,
            many => {
                return Err(IdentityError::Ambiguous(
                    many.iter().map(|u| (*u).to_owned()).collect(),
                ));
            }
        };
        let serial = cert.raw_serial_as_string().replace(':', "");
        let not_after = cert.validity().not_after.timestamp();
        if uri.starts_with(ADMIN_URI_PREFIX) {
            let identity = AdminIdentity::from_uri(uri)
                .ok_or_else(|| IdentityError::BadAdminUri(uri.to_owned()))?;
            return Ok(CertifiedPeer::Admin(AdminCertificate {
                identity,
                serial,
                not_after,
            }));
        }
        let identity =
            PodIdentity::from_uri(uri).ok_or_else(|| IdentityError::BadPodUri(uri.to_owned()))?;
        Ok(CertifiedPeer::Pod(PeerCertificate {
            identity,
            serial,
            not_after,
        }))
    }

    pub fn serial(&self) -> &str {
        match self {
            CertifiedPeer::Pod(c) => &c.serial,
            CertifiedPeer::Admin(c) => &c.serial,
        }
    }

    pub fn not_after(&self) -> i64 {
        match self {
            CertifiedPeer::Pod(c) => c.not_after,
            CertifiedPeer::Admin(c) => c.not_after,
        }
    }
}

/// Whose certificate it is: `pod … of gateway …` or `admin … (namespaces …)`.
impl fmt::Display for CertifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertifiedPeer::Pod(c) => c.identity.fmt(f),
            CertifiedPeer::Admin(c) => c.identity.fmt(f),
        }
    }
}

impl PeerCertificate {
    /// Reads the pod identity, serial and expiry of a DER certificate; an admin certificate is
    /// refused ([`IdentityError::AdminNotPod`]).
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        match CertifiedPeer::from_der(der)? {
            CertifiedPeer::Pod(pod) => Ok(pod),
            CertifiedPeer::Admin(admin) => Err(IdentityError::AdminNotPod(admin.identity)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uid: Option<&str>) -> PodIdentity {
        PodIdentity {
            namespace: "edge".into(),
            gateway: "public".into(),
            pod: "public-7d9f-abcde".into(),
            uid: uid.map(str::to_owned),
        }
    }

    #[test]
    fn uri_round_trips_with_and_without_uid() {
        for identity in [id(None), id(Some("0b9c-11ee"))] {
            assert_eq!(PodIdentity::from_uri(&identity.uri()), Some(identity));
        }
        assert_eq!(
            id(Some("u1")).uri(),
            "spiffe://sluice/ns/edge/gateway/public/pod/public-7d9f-abcde/uid/u1"
        );
    }

    #[test]
    fn other_uris_are_not_identities() {
        for uri in [
            "spiffe://other/ns/edge/gateway/public/pod/p",
            "spiffe://sluice/ns/edge/gateway/public",
            "spiffe://sluice/ns//gateway/public/pod/p",
            "spiffe://sluice/ns/edge/gateway/public/pod/p/extra",
            "spiffe://sluice/ns/edge/gateway/pub lic/pod/p",
        ] {
            assert_eq!(PodIdentity::from_uri(uri), None, "{uri}");
        }
    }

    #[test]
    fn a_certificate_without_a_pod_uri_is_refused() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            PeerCertificate::from_der(cert.der()),
            Err(IdentityError::NoPodUri)
        );
    }
}
