//! Everything the xDS server needs to know to authenticate and authorize its peers.

use super::admin::AdminAccess;
use super::ca::{CaError, CertificateAuthority};
use super::pods::PodLiveness;
use super::revocation::Revocations;
use super::tokens::Authenticator;
use std::sync::Arc;
use std::time::Duration;

/// Default validity of a data-plane client certificate (renewed at about 2/3 of it).
pub const DEFAULT_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(3600);
/// The server certificate is re-issued at every start; a year covers any uptime.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The CA and the server certificate it issued.
pub struct TlsMaterial {
    pub ca: Arc<CertificateAuthority>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TlsMaterial {
    /// Issues the server certificate for `server_names` (DNS names or IP addresses).
    pub fn new(ca: CertificateAuthority, server_names: &[String]) -> Result<Self, CaError> {
        let (server_cert_pem, server_key_pem) = ca.issue_server(
            server_names,
            time::OffsetDateTime::now_utc(),
            SERVER_CERT_VALIDITY,
        )?;
        Ok(Self {
            ca: Arc::new(ca),
            server_cert_pem,
            server_key_pem,
        })
    }
}

/// How the xDS server secures itself. The default is plaintext with an open inspection service:
/// only for loopback (standalone mode, tests), which the binary enforces.
pub struct Security {
    /// `None`: plaintext, peers unauthenticated.
    pub tls: Option<TlsMaterial>,
    /// Checks bootstrap tokens.
    pub authenticator: Authenticator,
    /// Whether an authenticated pod still exists.
    pub pods: PodLiveness,
    /// Pods and certificates revoked by the operator (`--xds-revoked`).
    pub revocations: Arc<Revocations>,
    pub client_cert_validity: Duration,
    pub admin: AdminAccess,
    /// Also serve the gRPC health service, and nothing else, in plaintext here: kubelet gRPC
    /// probes cannot speak TLS.
    pub health_listen: Option<std::net::SocketAddr>,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            tls: None,
            authenticator: Authenticator::None,
            pods: PodLiveness::Unchecked,
            revocations: Arc::default(),
            client_cert_validity: DEFAULT_CLIENT_CERT_VALIDITY,
            admin: AdminAccess::Open,
            health_listen: None,
        }
    }
}
