//! The bootstrap ConfigMap: what a data-plane pod needs before it can talk xDS (everything
//! else, listeners included, arrives over xDS). Its keys are the `sluice data-plane`
//! environment variables; the pod reads them with `envFrom`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::metadata::child_metadata;
use super::{GatewayObject, OperatorSettings};
use crate::model::goma::LogLevel;

/// `namespace/name` of the gateway the pod serves.
pub const GATEWAY_KEY: &str = "SLUICE_GATEWAY";
/// The control plane's xDS address.
pub const XDS_KEY: &str = "SLUICE_XDS";
/// The log filter (`spec.server.logLevel`).
pub const LOG_FILTER_KEY: &str = "RUST_LOG";
pub const LOG_FORMAT_KEY: &str = "SLUICE_LOG_FORMAT";
/// The control plane's CA (PEM), when xDS is TLS.
pub const XDS_CA_KEY: &str = "SLUICE_XDS_CA";
/// Where the pod finds its projected ServiceAccount token, when xDS is TLS.
pub const XDS_TOKEN_FILE_KEY: &str = "SLUICE_XDS_TOKEN_FILE";
/// The projected token's directory and file in the data-plane container.
pub const XDS_TOKEN_DIR: &str = "/var/run/secrets/sluice/xds";
pub const XDS_TOKEN_FILE: &str = "token";

pub fn bootstrap_name(gw: &GatewayObject) -> String {
    format!("{}-bootstrap", gw.name)
}

pub fn bootstrap_config_map(gw: &GatewayObject, settings: &OperatorSettings) -> ConfigMap {
    let level = match gw.spec.server.log_level.unwrap_or_default() {
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
        LogLevel::Off => "off",
    };
    let mut data = BTreeMap::from([
        (
            GATEWAY_KEY.to_owned(),
            format!("{}/{}", gw.namespace, gw.name),
        ),
        (XDS_KEY.to_owned(), settings.xds_address.clone()),
        (LOG_FILTER_KEY.to_owned(), level.to_owned()),
        (LOG_FORMAT_KEY.to_owned(), settings.log_format.clone()),
    ]);
    if let Some(ca) = &settings.xds_ca_pem {
        data.insert(XDS_CA_KEY.to_owned(), ca.clone());
        data.insert(
            XDS_TOKEN_FILE_KEY.to_owned(),
            format!("{XDS_TOKEN_DIR}/{XDS_TOKEN_FILE}"),
        );
    }
    ConfigMap {
        metadata: child_metadata(gw, &bootstrap_name(gw)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// A digest of the ConfigMap's data. The pod template carries it, so a changed bootstrap rolls
/// the pods (environment variables are read once, at start).
pub fn bootstrap_digest(config_map: &ConfigMap) -> String {
    let mut bytes = Vec::new();
    for (k, v) in config_map.data.iter().flatten() {
        for part in [k, v] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::GatewaySource;
    use serde_json::json;

    fn gw(level: Option<LogLevel>) -> GatewayObject {
        let mut spec = crate::model::goma::GatewaySpec::default();
        spec.server.log_level = level;
        GatewayObject {
            name: "gw".into(),
            namespace: "edge".into(),
            uid: "u-1".into(),
            source: GatewaySource::Goma,
            generation: Some(1),
            spec,
        }
    }

    #[test]
    fn carries_identity_xds_address_and_log_settings() {
        let cm = bootstrap_config_map(&gw(Some(LogLevel::Debug)), &OperatorSettings::default());
        let value = serde_json::to_value(&cm).expect("json");
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "gw-bootstrap",
                    "namespace": "edge",
                    "labels": {
                        "app.kubernetes.io/component": "data-plane",
                        "app.kubernetes.io/instance": "gw",
                        "app.kubernetes.io/managed-by": "sluice",
                        "app.kubernetes.io/name": "sluice"
                    },
                    "ownerReferences": [{
                        "apiVersion": "gateway.jkaninda.dev/v1alpha1",
                        "kind": "Gateway",
                        "name": "gw",
                        "uid": "u-1",
                        "controller": true,
                        "blockOwnerDeletion": true
                    }]
                },
                "data": {
                    "RUST_LOG": "debug",
                    "SLUICE_GATEWAY": "edge/gw",
                    "SLUICE_LOG_FORMAT": "json",
                    "SLUICE_XDS": "http://sluice-control-plane.sluice-system.svc:18000"
                }
            })
        );
    }

    #[test]
    fn with_tls_it_carries_the_ca_bundle_and_the_token_path() {
        let settings = OperatorSettings {
            xds_address: "https://sluice-control-plane.sluice-system.svc:18000".into(),
            xds_ca_pem: Some("-----BEGIN CERTIFICATE-----\nCA\n".into()),
            ..OperatorSettings::default()
        };
        let cm = bootstrap_config_map(&gw(None), &settings);
        let data = cm.data.as_ref().expect("data");
        assert_eq!(data[XDS_CA_KEY], "-----BEGIN CERTIFICATE-----\nCA\n");
        assert_eq!(
            data[XDS_TOKEN_FILE_KEY],
            "/var/run/secrets/sluice/xds/token"
        );
        assert_eq!(
            data[XDS_KEY],
            "https://sluice-control-plane.sluice-system.svc:18000"
        );
        // A new CA rolls the pods.
        let plain = bootstrap_config_map(&gw(None), &OperatorSettings::default());
        assert_ne!(bootstrap_digest(&cm), bootstrap_digest(&plain));
    }

    #[test]
    fn the_log_level_defaults_to_info_and_changes_the_digest() {
        let settings = OperatorSettings::default();
        let info = bootstrap_config_map(&gw(None), &settings);
        assert_eq!(info.data.as_ref().expect("data")[LOG_FILTER_KEY], "info");
        let off = bootstrap_config_map(&gw(Some(LogLevel::Off)), &settings);
        assert_eq!(off.data.as_ref().expect("data")[LOG_FILTER_KEY], "off");
        assert_ne!(bootstrap_digest(&info), bootstrap_digest(&off));
        assert_eq!(
            bootstrap_digest(&info),
            bootstrap_digest(&bootstrap_config_map(&gw(None), &settings))
        );
    }
}
