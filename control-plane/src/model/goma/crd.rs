//! The Goma CustomResourceDefinitions as YAML: what `sluice crds` prints and `crds/` holds.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{GatewayResource, MiddlewareResource, RouteResource};

/// First line of every generated file.
pub const HEADER: &str = "# Generated from the Rust types in control-plane/src/model/goma by `sluice crds` (`just crds`); do not edit.\n";

#[derive(Debug, thiserror::Error)]
#[error("rendering CRD {name} as YAML: {source}")]
pub struct CrdError {
    name: String,
    #[source]
    source: serde_saphyr::SerializeError,
}

/// Gateway, Route and Middleware.
pub fn crds() -> [CustomResourceDefinition; 3] {
    [
        GatewayResource::crd(),
        RouteResource::crd(),
        MiddlewareResource::crd(),
    ]
}

/// `gateway.jkaninda.dev_routes.yaml`, the kubebuilder naming.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    serde_saphyr::to_string(crd).map_err(|source| CrdError {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Every CRD as one multi-document YAML stream.
pub fn yaml_stream() -> Result<String, CrdError> {
    let mut out = HEADER.to_owned();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

/// The files of `crds/`: one per CRD and the kustomization listing them, as (name, content).
pub fn files() -> Result<Vec<(String, String)>, CrdError> {
    let mut files = Vec::new();
    let mut kustomization = format!(
        "{HEADER}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    );
    for crd in crds() {
        let name = file_name(&crd);
        kustomization.push_str(&format!("- {name}\n"));
        files.push((name, format!("{HEADER}{}", to_yaml(&crd)?)));
    }
    files.push(("kustomization.yaml".to_owned(), kustomization));
    Ok(files)
}
