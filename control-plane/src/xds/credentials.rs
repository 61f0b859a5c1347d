//! A stream lives no longer than the credentials it authenticated with: it ends when its
//! client certificate expires (the data plane has renewed by then and reconnects with the new
//! one), when its pod is deleted or relabelled to another gateway (Kubernetes) and when its pod
//! or certificate is revoked (`--xds-revoked`). An inspection watch lives no longer than the
//! admin certificate it authenticated with, the same way.

use crate::security::identity::AdminCertificate;
use crate::security::{PeerCertificate, Security};
use std::time::Duration;
use tonic::Status;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// How long until `not_after` (seconds since the epoch) has passed.
fn until_expiry(not_after: i64, now: i64) -> Duration {
    // A certificate is valid through its `not_after` second.
    Duration::from_secs(u64::try_from(not_after + 1 - now).unwrap_or(0))
}

/// Whether `cert` still holds: its pod alive and neither it nor its pod revoked.
pub fn check(security: &Security, cert: &PeerCertificate) -> Result<(), String> {
    security.pods.check(&cert.identity)?;
    security
        .revocations
        .check(&cert.identity, Some(&cert.serial))
}

/// Whether the admin certificate `cert` still holds: its serial not revoked.
pub fn check_admin(security: &Security, cert: &AdminCertificate) -> Result<(), String> {
    security
        .revocations
        .check_admin(&cert.identity, &cert.serial)
}

/// Resolves with the status that ends the stream once `cert` stops holding; never for an
/// unauthenticated (loopback plaintext) stream.
pub async fn ended(security: &Security, cert: Option<&PeerCertificate>) -> Status {
    let Some(cert) = cert else {
        return std::future::pending().await;
    };
    let expired = format!(
        "the client certificate of {} (serial {}) expired; reconnect with a renewed certificate",
        cert.identity, cert.serial
    );
    holds_until(security, cert.not_after, expired, || check(security, cert)).await
}

/// Resolves with the status that ends an inspection watch once the admin certificate it
/// authenticated with expires or is revoked.
pub async fn admin_ended(security: &Security, cert: &AdminCertificate) -> Status {
    let expired = format!(
        "the admin certificate of {} (serial {}) expired; issue a new one with sluice admin-cert",
        cert.identity, cert.serial
    );
    holds_until(security, cert.not_after, expired, || {
        check_admin(security, cert)
    })
    .await
}

/// Re-runs `check` whenever the live pods or the revocations change; resolves with
/// `PERMISSION_DENIED` when it fails, or `UNAUTHENTICATED` (`expired`) after `not_after`.
async fn holds_until(
    security: &Security,
    not_after: i64,
    expired: String,
    check: impl Fn() -> Result<(), String>,
) -> Status {
    let expiry = tokio::time::sleep(until_expiry(not_after, unix_now()));
    tokio::pin!(expiry);
    let mut pods = security.pods.subscribe();
    let mut revocations = security.revocations.subscribe();
    loop {
        if let Err(reason) = check() {
            return Status::permission_denied(reason);
        }
        let pods_changed = async {
            let open = match pods.as_mut() {
                Some(changes) => changes.changed().await.is_ok(),
                None => false,
            };
            if !open {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = &mut expiry => return Status::unauthenticated(expired),
            _ = pods_changed => {}
            changed = revocations.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::PodIdentity;
    use crate::security::revocation::RevocationList;

    fn cert(not_after: i64) -> PeerCertificate {
        PeerCertificate {
            identity: PodIdentity {
                namespace: "edge".into(),
                gateway: "a".into(),
                pod: "a-1".into(),
                uid: None,
            },
            serial: "0a1b".into(),
            not_after,
        }
    }

    #[test]
    fn a_certificate_holds_through_its_last_second() {
        assert_eq!(until_expiry(100, 100), Duration::from_secs(1));
        assert_eq!(until_expiry(100, 40), Duration::from_secs(61));
        assert_eq!(until_expiry(100, 500), Duration::ZERO);
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_certificate_expires() {
        let security = Security::default();
        let cert = cert(unix_now());
        let status = tokio::time::timeout(Duration::from_secs(5), ended(&security, Some(&cert)))
            .await
            .expect("ended at expiry");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status.message(),
            "the client certificate of pod edge/a-1 of gateway edge/a (serial 0a1b) expired; \
             reconnect with a renewed certificate"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_certificate_is_revoked() {
        let security = Security::default();
        let cert = cert(unix_now() + 3600);
        let ended = ended(&security, Some(&cert));
        tokio::pin!(ended);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut ended)
                .await
                .is_err(),
            "a valid certificate holds"
        );
        security
            .revocations
            .replace(RevocationList::parse("serial 0A1B\n", "revoked").expect("list"));
        let status = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("ended on revocation");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .contains("(serial 0a1b) is revoked (revoked:1)"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_pod_is_relabelled_to_another_gateway() {
        use crate::security::{PodLiveness, PodSet};
        use kube::runtime::watcher::Event;
        let pod = |gateway: &str| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({"metadata": {
                "name": "a-1", "namespace": "edge", "uid": "u1", "labels": {
                    "app.kubernetes.io/component": "data-plane",
                    "app.kubernetes.io/managed-by": "sluice",
                    "app.kubernetes.io/instance": gateway}}}))
            .expect("a Pod")
        };
        let pods = std::sync::Arc::new(PodSet::default());
        pods.apply(Event::Init);
        pods.apply(Event::InitApply(pod("a")));
        pods.apply(Event::InitDone);
        let security = Security {
            pods: PodLiveness::Kubernetes(pods.clone()),
            ..Security::default()
        };
        let mut cert = cert(unix_now() + 3600);
        cert.identity.uid = Some("u1".into());
        let ended = ended(&security, Some(&cert));
        tokio::pin!(ended);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut ended)
                .await
                .is_err(),
            "the pod's certificate holds"
        );
        pods.apply(Event::Apply(pod("b")));
        let status = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("ended on relabel");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "the credentials of pod edge/a-1 (uid u1) of gateway edge/a no longer hold: \
             the pod was relabelled from gateway edge/a to gateway edge/b"
        );
    }

    #[tokio::test]
    async fn an_unauthenticated_stream_never_ends_here() {
        let security = Security::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), ended(&security, None))
                .await
                .is_err()
        );
    }
}
