//! The ServiceAccount of a Gateway's pods. It is bound to nothing: data-plane pods need no
//! Kubernetes access (their configuration arrives over xDS), so no token is mounted either.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::GatewayObject;
use super::metadata::child_metadata;

pub fn service_account_name(gw: &GatewayObject) -> String {
    gw.name.clone()
}

pub fn service_account(gw: &GatewayObject) -> ServiceAccount {
    ServiceAccount {
        metadata: child_metadata(gw, &service_account_name(gw)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
