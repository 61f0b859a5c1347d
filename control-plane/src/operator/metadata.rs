//! Names, labels and owner references shared by every object the operator creates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{GatewayObject, GatewaySource};

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

pub const APP_NAME: &str = "sluice";
pub const DATA_PLANE_COMPONENT: &str = "data-plane";
/// Every child carries it; the controller watches children through it.
pub const MANAGED_BY: &str = "sluice";

/// `app.kubernetes.io/managed-by=sluice`: the label selector of the children watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The labels that select a Gateway's pods. The Deployment selector is immutable: never change
/// them.
pub fn selector_labels(gw: &GatewayObject) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), gw.name.clone()),
        (COMPONENT_LABEL.to_owned(), DATA_PLANE_COMPONENT.to_owned()),
    ])
}

/// The selector labels plus `managed-by`, over a Gateway API Gateway's
/// `spec.infrastructure.labels` (ours win: the controller finds its children by them).
pub fn labels(gw: &GatewayObject) -> BTreeMap<String, String> {
    let mut labels = match &gw.source {
        GatewaySource::Goma => BTreeMap::new(),
        GatewaySource::GatewayApi(w) => w.labels.clone(),
    };
    labels.extend(selector_labels(gw));
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The Gateway as controller owner: the garbage collector deletes the child with the Gateway,
/// and (blockOwnerDeletion) a foreground deletion of the Gateway waits for it.
pub fn owner_reference(gw: &GatewayObject) -> OwnerReference {
    let (api_version, kind) = gw.owner_type();
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: gw.name.clone(),
        uid: gw.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child named `name` in the Gateway's namespace.
pub fn child_metadata(gw: &GatewayObject, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(gw.namespace.clone()),
        labels: Some(labels(gw)),
        owner_references: Some(vec![owner_reference(gw)]),
        annotations: match &gw.source {
            GatewaySource::GatewayApi(w) if !w.annotations.is_empty() => {
                Some(w.annotations.clone())
            }
            _ => None,
        },
        ..ObjectMeta::default()
    }
}

/// True when `meta` names this Gateway (by uid) as its controller.
pub fn is_controlled_by(meta: &ObjectMeta, gw: &GatewayObject) -> bool {
    let (api_version, kind) = gw.owner_type();
    meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.uid == gw.uid
            && o.kind == kind
            && o.api_version == api_version
    })
}

/// Checks that the Gateway's name can name its children: the Service takes it, so it must be a
/// DNS-1035 label, and the instance label value is limited to 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} cannot name the gateway's Service: use at most 63 lowercase letters, digits \
             and '-', starting with a letter and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::GatewaySource;

    fn gw() -> GatewayObject {
        GatewayObject {
            name: "gw".into(),
            namespace: "edge".into(),
            uid: "u-1".into(),
            source: GatewaySource::Goma,
            generation: Some(1),
            spec: Default::default(),
        }
    }

    #[test]
    fn children_carry_labels_and_a_controller_owner_reference() {
        let meta = child_metadata(&gw(), "gw-bootstrap");
        assert_eq!(meta.name.as_deref(), Some("gw-bootstrap"));
        assert_eq!(meta.namespace.as_deref(), Some("edge"));
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels[NAME_LABEL], "sluice");
        assert_eq!(labels[INSTANCE_LABEL], "gw");
        assert_eq!(labels[COMPONENT_LABEL], "data-plane");
        assert_eq!(labels[MANAGED_BY_LABEL], "sluice");
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(
            owners,
            vec![OwnerReference {
                api_version: "gateway.jkaninda.dev/v1alpha1".into(),
                kind: "Gateway".into(),
                name: "gw".into(),
                uid: "u-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        );
        assert!(is_controlled_by(&meta, &gw()));
        let other = GatewayObject {
            uid: "u-2".into(),
            source: GatewaySource::Goma,
            ..gw()
        };
        assert!(!is_controlled_by(&meta, &other));
    }

    #[test]
    fn names_that_cannot_name_a_service_are_refused() {
        assert!(check_name("gw-1").is_ok());
        for bad in ["", "1gw", "gw.example", "GW", "gw-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
