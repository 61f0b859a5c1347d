//! Sends a Gateway's desired objects to the API server: server-side apply under one field
//! manager with `force` (the operator owns these objects; a hand edit is drift and is undone),
//! in the order pods need them, and deletes the HPA once autoscaling is switched off.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::autoscaler::autoscaler_name;
use super::bootstrap::bootstrap_name;
use super::metadata::is_controlled_by;
use super::service::service_name;
use super::service_account::service_account_name;
use super::{DesiredObjects, GatewayObject, OperatorError, OperatorSettings};

/// Applies every object of one Gateway: ServiceAccount and bootstrap ConfigMap first (the pods
/// need both to start), then the Service, the Deployment and the HPA (or its removal).
pub async fn apply(
    client: &Client,
    gw: &GatewayObject,
    desired: &DesiredObjects,
    settings: &OperatorSettings,
) -> Result<(), OperatorError> {
    let ns = gw.namespace.as_str();
    let params = PatchParams::apply(&settings.field_manager).force();
    server_side_apply(client, ns, &desired.service_account, &params).await?;
    server_side_apply(client, ns, &desired.bootstrap, &params).await?;
    server_side_apply(client, ns, &desired.service, &params).await?;
    if desired.autoscaler.is_some() {
        hand_over_replicas(client, gw, settings).await?;
    }
    server_side_apply(client, ns, &desired.deployment, &params).await?;
    match &desired.autoscaler {
        Some(hpa) => server_side_apply(client, ns, hpa, &params).await?,
        None => remove_autoscaler(client, gw).await?,
    }
    Ok(())
}

async fn server_side_apply<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    params: &PatchParams,
) -> Result<(), OperatorError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, params, &Patch::Apply(object))
        .await
        .map_err(|source| api_error::<K>(namespace, &name, "server-side apply", source))?;
    Ok(())
}

/// The field manager that holds `spec.replicas` while the HPA takes them over.
pub fn replicas_handover_manager(settings: &OperatorSettings) -> String {
    format!("{}-replicas-handover", settings.field_manager)
}

/// Before the Deployment is applied without `replicas` for the first time, another field
/// manager takes co-ownership of the live count: a field its last owner drops is removed and
/// defaulted back to 1, which would scale a serving gateway down until the HPA reacts (the
/// ownership transfer in the Kubernetes server-side apply documentation). Nothing to do when the
/// Deployment does not exist yet or our manager no longer owns the field.
async fn hand_over_replicas(
    client: &Client,
    gw: &GatewayObject,
    settings: &OperatorSettings,
) -> Result<(), OperatorError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &gw.namespace);
    let live = api
        .get_opt(&gw.name)
        .await
        .map_err(|source| api_error::<Deployment>(&gw.namespace, &gw.name, "get", source))?;
    let Some(live) = live else { return Ok(()) };
    let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
        return Ok(());
    };
    if !applies_replicas(&live.metadata, &settings.field_manager) {
        return Ok(());
    }
    let handover = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": gw.name, "namespace": gw.namespace},
        "spec": {"replicas": replicas},
    });
    // Not forced: the value is the live one, so it conflicts with nobody (a concurrent change
    // fails the reconcile, which is retried).
    let params = PatchParams::apply(&replicas_handover_manager(settings));
    api.patch(&gw.name, &params, &Patch::Apply(&handover))
        .await
        .map_err(|source| {
            api_error::<Deployment>(&gw.namespace, &gw.name, "hand replicas to the HPA", source)
        })?;
    Ok(())
}

/// True when `manager`'s applied configuration includes `spec.replicas`.
fn applies_replicas(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(manager)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

/// Deletes the Gateway's HPA if there is one and this Gateway controls it (an HPA of the same
/// name that someone else created is left alone).
async fn remove_autoscaler(client: &Client, gw: &GatewayObject) -> Result<(), OperatorError> {
    let removed =
        delete_if_controlled::<HorizontalPodAutoscaler>(client, gw, &autoscaler_name(gw)).await?;
    if removed {
        tracing::info!(gateway = %gw.key(), hpa = %autoscaler_name(gw), "autoscaling switched off: HPA deleted");
    }
    Ok(())
}

/// Deletes every object the Gateway's workload consists of, where this Gateway controls it: the
/// Gateway is no longer ours to serve (a Gateway API Gateway whose class moved to another
/// controller). Returns whether anything was deleted.
pub async fn remove_workload(client: &Client, gw: &GatewayObject) -> Result<bool, OperatorError> {
    let mut removed = false;
    removed |= delete_if_controlled::<Deployment>(client, gw, &gw.name).await?;
    removed |=
        delete_if_controlled::<HorizontalPodAutoscaler>(client, gw, &autoscaler_name(gw)).await?;
    removed |= delete_if_controlled::<Service>(client, gw, &service_name(gw)).await?;
    removed |= delete_if_controlled::<ConfigMap>(client, gw, &bootstrap_name(gw)).await?;
    removed |=
        delete_if_controlled::<ServiceAccount>(client, gw, &service_account_name(gw)).await?;
    Ok(removed)
}

/// Deletes the object `name` of type `K` in the Gateway's namespace if the Gateway controls it.
/// The uid precondition makes sure the object deleted is the one inspected.
async fn delete_if_controlled<K>(
    client: &Client,
    gw: &GatewayObject,
    name: &str,
) -> Result<bool, OperatorError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &gw.namespace);
    let error = |action, source| api_error::<K>(&gw.namespace, name, action, source);
    let Some(live) = api.get_opt(name).await.map_err(|e| error("get", e))? else {
        return Ok(false);
    };
    if !is_controlled_by(live.meta(), gw) {
        tracing::warn!(
            gateway = %gw.key(),
            object = %format!("{} {}/{name}", K::kind(&()), gw.namespace),
            "an object of the gateway's name exists that the gateway does not control; left alone"
        );
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(e) => Err(error("delete", e)),
    }
}

fn api_error<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    action: &'static str,
    source: kube::Error,
) -> OperatorError {
    OperatorError::Api {
        object: format!("{} {namespace}/{name}", K::kind(&())),
        action,
        source,
    }
}
