//! The authenticated peer of a gRPC request: its verified client certificate, a pod's or an
//! admin's (rustls checked the chain to our CA during the handshake), or its bearer token.

use crate::security::identity::{CertifiedPeer, IdentityError};
use crate::security::{PeerCertificate, Security};
use tonic::{Request, Status};

/// The client certificate's identity, a pod's or an admin's; `None` when the peer presented
/// none (or plaintext). An expired certificate (the handshake lets it through, see `xds::tls`)
/// is refused here.
pub fn certified_peer<T>(request: &Request<T>) -> Result<Option<CertifiedPeer>, Status> {
    let Some(certs) = request.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    let peer = CertifiedPeer::from_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if peer.not_after() < now {
        return Err(Status::unauthenticated(format!(
            "the client certificate of {peer} (serial {}) expired {} s ago; obtain a new one",
            peer.serial(),
            now - peer.not_after()
        )));
    }
    Ok(Some(peer))
}

/// The pod's client certificate; `None` when the peer presented none. An admin certificate is
/// refused: it authenticates an admin, who may only inspect.
pub fn peer_certificate<T>(request: &Request<T>) -> Result<Option<PeerCertificate>, Status> {
    match certified_peer(request)? {
        None => Ok(None),
        Some(CertifiedPeer::Pod(pod)) => Ok(Some(pod)),
        Some(CertifiedPeer::Admin(admin)) => Err(Status::permission_denied(
            IdentityError::AdminNotPod(admin.identity).to_string(),
        )),
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer_token<T>(request: &Request<T>) -> Option<String> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The pod behind an ADS request, checked alive: `None` on plaintext (loopback) servers.
pub fn ads_peer<T>(
    request: &Request<T>,
    security: &Security,
) -> Result<Option<PeerCertificate>, Status> {
    if security.tls.is_none() {
        return Ok(None);
    }
    let peer = peer_certificate(request)?.ok_or_else(|| {
        Status::unauthenticated(
            "ADS needs a client certificate issued by this control plane's CA \
             (obtain one with sluice.discovery.v1.Identity/IssueCertificate)",
        )
    })?;
    super::credentials::check(security, &peer).map_err(Status::permission_denied)?;
    Ok(Some(peer))
}
