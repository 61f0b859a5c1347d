//! The authenticated peer of a gRPC request: its verified client certificate (rustls checked
//! the chain to our CA and the validity period during the handshake) or its bearer token.

use crate::security::{PeerCertificate, Security};
use tonic::{Request, Status};

/// The client certificate's identity; `None` when the peer presented none (or plaintext). An
/// expired certificate (the handshake lets it through, see `xds::tls`) is refused here.
pub fn peer_certificate<T>(request: &Request<T>) -> Result<Option<PeerCertificate>, Status> {
    let Some(certs) = request.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    let peer =
        PeerCertificate::from_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if peer.not_after < now {
        return Err(Status::unauthenticated(format!(
            "the client certificate of {} (serial {}) expired {} s ago; obtain a new one",
            peer.identity,
            peer.serial,
            now - peer.not_after
        )));
    }
    Ok(Some(peer))
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
