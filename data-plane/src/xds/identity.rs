//! This pod's xDS client certificate: obtained from the control plane's `Identity` service with
//! the bootstrap token and a CSR (the key is generated here and never leaves the pod), then
//! renewed at about 2/3 of its life. New connections use the newest certificate; an open ADS
//! stream is not disturbed by a renewal.

use sluice_proto::discovery::identity_client::IdentityClient;
use sluice_proto::discovery::{IssueCertificateRequest, Node};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How the data plane reaches a TLS control plane.
#[derive(Clone, Debug)]
pub struct XdsTls {
    /// The control plane's CA (PEM): the server certificate must chain to it.
    pub ca_pem: String,
    /// The name the server certificate must carry (default: the endpoint's host).
    pub server_name: Option<String>,
    /// The bootstrap token's file (a projected ServiceAccount token, or a token of the control
    /// plane's bootstrap file); read at every use, since the kubelet rotates projected tokens.
    pub token_file: Option<PathBuf>,
}

/// A certificate is not presented once it is this close to expiry (the server would refuse it).
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);
const ISSUE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("bootstrap token file {0}: {1}")]
    TokenFile(PathBuf, std::io::Error),
    #[error("no bootstrap token (--xds-token-file) and no valid client certificate to renew with")]
    NoCredential,
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the control plane refused to issue a certificate: {}", .0.message())]
    Refused(tonic::Status),
    #[error("the issued certificate's validity is empty ({0}..{1})")]
    BadValidity(i64, i64),
}

#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    /// When it was received (the server back-dates `not_before` for clock skew).
    received: i64,
    not_after: i64,
}

/// The current client certificate, shared by the ADS connection loop and the renewal task.
pub struct Credentials {
    tls: XdsTls,
    leaf: Mutex<Option<Leaf>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// When a certificate received at `received` and valid until `not_after` is renewed: at 2/3 of
/// the life left to it.
pub fn renewal_time(received: i64, not_after: i64) -> i64 {
    received + (not_after - received).max(0) * 2 / 3
}

impl Credentials {
    pub fn new(tls: XdsTls) -> Arc<Self> {
        Arc::new(Self {
            tls,
            leaf: Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Leaf> {
        let leaf = self
            .leaf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        (leaf.not_after - EXPIRY_MARGIN.as_secs() as i64 > unix_now()).then_some(leaf)
    }

    /// Whether a certificate is held that is still worth presenting.
    pub fn has_valid(&self) -> bool {
        self.current().is_some()
    }

    /// Seconds since the epoch when the held certificate (even an expired one) should be
    /// renewed; `None` before the first.
    fn renew_at(&self) -> Option<i64> {
        self.leaf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| renewal_time(l.received, l.not_after))
    }

    /// TLS settings for the next connection: our CA, and the current certificate if any.
    pub fn tls_config(&self) -> ClientTlsConfig {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.tls.ca_pem));
        if let Some(name) = &self.tls.server_name {
            config = config.domain_name(name.clone());
        }
        if let Some(leaf) = self.current() {
            config = config.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
        }
        config
    }

    fn token(&self) -> Result<Option<String>, IdentityError> {
        let Some(path) = &self.tls.token_file else {
            return Ok(None);
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| IdentityError::TokenFile(path.clone(), e))?;
        Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
    }

    /// Obtains a new certificate for `node` from the control plane at `endpoint`, presenting the
    /// current certificate (a renewal) and the bootstrap token when there is one.
    pub async fn issue(&self, endpoint: &str, node: &Node) -> Result<(), IdentityError> {
        let token = self.token()?;
        if token.is_none() && !self.has_valid() {
            return Err(IdentityError::NoCredential);
        }
        let key = rcgen::KeyPair::generate()?;
        let csr_pem = rcgen::CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(ISSUE_TIMEOUT)
            .timeout(ISSUE_TIMEOUT)
            .tls_config(self.tls_config())?
            .connect()
            .await?;
        let mut request = tonic::Request::new(IssueCertificateRequest {
            node: Some(node.clone()),
            csr_pem,
        });
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                IdentityError::Refused(tonic::Status::invalid_argument(
                    "the bootstrap token is not a valid header value",
                ))
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let issued = IdentityClient::new(channel)
            .issue_certificate(request)
            .await
            .map_err(IdentityError::Refused)?
            .into_inner();
        if issued.not_after_unix <= issued.not_before_unix {
            return Err(IdentityError::BadValidity(
                issued.not_before_unix,
                issued.not_after_unix,
            ));
        }
        let received = unix_now();
        tracing::info!(
            not_after = issued.not_after_unix,
            renew_at = renewal_time(received, issued.not_after_unix),
            "obtained an xDS client certificate"
        );
        *self.leaf.lock().unwrap_or_else(|e| e.into_inner()) = Some(Leaf {
            cert_pem: issued.certificate_pem,
            key_pem: key.serialize_pem(),
            received,
            not_after: issued.not_after_unix,
        });
        Ok(())
    }
}

/// Renews the certificate at 2/3 of its life, retrying failures with backoff, forever.
pub async fn keep_renewed(credentials: Arc<Credentials>, endpoint: String, node: Node) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let wait = match credentials.renew_at() {
            Some(at) => Duration::from_secs(at.saturating_sub(unix_now()).max(0) as u64),
            // None held yet: the connection loop obtains the first; look again soon.
            None => Duration::from_secs(1),
        };
        tokio::time::sleep(wait).await;
        if credentials.renew_at().is_none_or(|at| at > unix_now()) {
            continue;
        }
        match credentials.issue(&endpoint, &node).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "renewing the xDS client certificate failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_of_the_life() {
        assert_eq!(renewal_time(1000, 4600), 3400);
        assert_eq!(renewal_time(0, 3), 2);
        // Already expired: renew at once.
        assert_eq!(renewal_time(100, 50), 100);
    }
}
