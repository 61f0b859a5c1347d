//! `Identity.IssueCertificate`: a pod exchanges its bootstrap token (or, to renew, its current
//! client certificate) and a CSR for a short-lived client certificate naming it.

use super::bootstrap_limit::{FailedBootstraps, limited_status};
use super::peer::{bearer_token, peer_certificate};
use super::server::valid_gateway_id;
use crate::security::authorize::authorize_node;
use crate::security::tokens::AuthError;
use crate::security::{PodIdentity, Security};
use sluice_proto::discovery::identity_server::Identity;
use sluice_proto::discovery::{IssueCertificateRequest, IssueCertificateResponse};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// CSRs are small; anything bigger is not one.
const MAX_CSR_BYTES: usize = 16 << 10;

pub struct IdentityService {
    security: Arc<Security>,
    failed: FailedBootstraps,
}

impl IdentityService {
    pub fn new(security: Arc<Security>) -> Self {
        Self::with_failure_limit(security, FailedBootstraps::default())
    }

    pub fn with_failure_limit(security: Arc<Security>, failed: FailedBootstraps) -> Self {
        Self { security, failed }
    }

    /// Authenticates a bootstrap token from `peer`, within its budget of failed attempts.
    async fn authenticate_token(
        &self,
        token: &str,
        node: &sluice_proto::discovery::Node,
        peer: IpAddr,
    ) -> Result<PodIdentity, Status> {
        if let Err(retry_after) = self.failed.admit(peer, Instant::now()) {
            tracing::warn!(%peer, node = %node.id, gateway = %node.gateway, ?retry_after, "bootstrap refused: too many failed attempts");
            return Err(limited_status(peer, retry_after));
        }
        self.security
            .authenticator
            .authenticate(token, node)
            .await
            .map_err(|e| {
                // The API server being down is not the caller's failure.
                if !matches!(e, AuthError::Unavailable(_)) {
                    self.failed.record_failure(peer, Instant::now());
                }
                tracing::warn!(%peer, node = %node.id, gateway = %node.gateway, reason = %e, "bootstrap refused");
                auth_status(e)
            })
    }
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::Denied(m) => Status::permission_denied(m),
        AuthError::Unavailable(m) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let Some(tls) = &self.security.tls else {
            return Err(Status::failed_precondition(
                "this control plane serves plaintext xDS and issues no certificates",
            ));
        };
        let certificate = peer_certificate(&request)?;
        let token = bearer_token(&request);
        // Unknown only off a TCP listener (tests); such callers share one budget.
        let peer = request
            .remote_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let req = request.into_inner();
        let node = req
            .node
            .filter(|n| !n.id.is_empty())
            .ok_or_else(|| Status::invalid_argument("node.id is required"))?;
        if !valid_gateway_id(&node.gateway) {
            return Err(Status::invalid_argument(format!(
                "node.gateway {:?} must be \"namespace/name\"",
                node.gateway
            )));
        }
        if req.csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument("csr_pem is too large"));
        }
        // A current certificate renews itself; otherwise the bootstrap token authenticates.
        let (identity, serial, credential) = match (certificate, token) {
            (Some(cert), _) => (cert.identity, Some(cert.serial), "client certificate"),
            (None, Some(token)) => (
                self.authenticate_token(&token, &node, peer).await?,
                None,
                "token",
            ),
            (None, None) => {
                return Err(Status::unauthenticated(
                    "IssueCertificate needs a bootstrap token (authorization: Bearer <token>) \
                     or a current client certificate",
                ));
            }
        };
        self.security
            .pods
            .check(&identity)
            .and_then(|()| {
                self.security
                    .revocations
                    .check(&identity, serial.as_deref())
            })
            .map_err(|reason| {
                tracing::warn!(pod = %identity.pod, gateway = %identity.gateway_id(), %reason, "certificate refused");
                Status::permission_denied(reason)
            })?;
        authorize_node(&identity, &node, credential).map_err(Status::permission_denied)?;
        let issued = tls
            .ca
            .sign_client(
                &req.csr_pem,
                &identity,
                time::OffsetDateTime::now_utc(),
                self.security.client_cert_validity,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(
            pod = %identity.pod,
            gateway = %identity.gateway_id(),
            serial = %issued.serial,
            %credential,
            not_after = issued.not_after.unix_timestamp(),
            "issued a client certificate"
        );
        Ok(Response::new(IssueCertificateResponse {
            certificate_pem: issued.certificate_pem,
            ca_pem: tls.ca.cert_pem().to_owned(),
            not_before_unix: issued.not_before.unix_timestamp(),
            not_after_unix: issued.not_after.unix_timestamp(),
        }))
    }
}
