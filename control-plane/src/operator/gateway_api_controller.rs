//! The kube-runtime controller for Gateway API Gateways: a Gateway whose GatewayClass names our
//! controller gets the workload a Goma Gateway gets (pods subscribed as "namespace/name"). It
//! reconciles on changes of the Gateway, of its children, of GatewayClasses (a class switching
//! controller takes effect) and of Goma Gateways (which hold the gateway id when both exist).
//! A Gateway of another class is never touched; one whose class moved away loses the workload
//! this operator made for it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::Client;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::controller::{Context, child_api, log_result};
use super::gateway::gateway_api_resource as goma_gateway_resource;
use super::gateway_api::{
    class_name_of, from_dynamic, gateway_class_resource, gateway_resource, is_our_class, key_of,
};
use super::metadata::managed_selector;
use super::{
    GatewayReports, OperatorError, OperatorSettings, Report, apply, desired_objects,
    remove_workload,
};
use crate::model::{Kind, ObjectKey};

const RESYNC: Duration = Duration::from_secs(600);
const DEBOUNCE: Duration = Duration::from_millis(500);

/// What one reconcile did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The workload was applied; the warnings of its spec.
    Applied(Vec<String>),
    /// Not ours (no class, or a class of another controller); `removed`: a workload this
    /// operator made earlier was deleted.
    NotOurs { removed: bool },
    /// A Goma Gateway of the same namespace/name holds the gateway id; nothing applied.
    IdTaken,
}

/// Reconciles one Gateway API Gateway: reads its class and the Goma Gateway of the same name,
/// then applies its workload, or removes the one it no longer should have.
pub async fn reconcile_gateway(
    client: &Client,
    settings: &OperatorSettings,
    object: &DynamicObject,
) -> Result<Outcome, OperatorError> {
    let parsed = from_dynamic(object)?;
    let gw = parsed.gateway;
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    let class = classes
        .get_opt(&parsed.class_name)
        .await
        .map_err(|source| OperatorError::Api {
            object: format!("GatewayClass {}", parsed.class_name),
            action: "get",
            source,
        })?;
    if !class.as_ref().is_some_and(is_our_class) {
        let removed = remove_workload(client, &gw).await?;
        return Ok(Outcome::NotOurs { removed });
    }
    let goma: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &gw.namespace, &goma_gateway_resource());
    let goma_gateway = match goma.get_opt(&gw.name).await {
        Ok(found) => found,
        // Goma's CRDs are not installed: no Goma Gateway can hold the id.
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(source) => {
            return Err(OperatorError::Api {
                object: format!(
                    "Gateway {}/{} (gateway.jkaninda.dev)",
                    gw.namespace, gw.name
                ),
                action: "get",
                source,
            });
        }
    };
    if goma_gateway.is_some() {
        return Ok(Outcome::IdTaken);
    }
    let desired = desired_objects(&gw, settings)?;
    apply(client, &gw, &desired, settings).await?;
    Ok(Outcome::Applied(desired.warnings))
}

/// Runs until `shutdown` resolves. Leader only. `reports` receives each Gateway's outcome
/// (keyed by `Kind::Gateway`).
pub async fn run(
    client: Client,
    settings: OperatorSettings,
    reports: GatewayReports,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resource = gateway_resource();
    let (gateways, goma_gateways): (Api<DynamicObject>, Api<DynamicObject>) =
        match &settings.namespace {
            Some(ns) => (
                Api::namespaced_with(client.clone(), ns, &resource),
                Api::namespaced_with(client.clone(), ns, &goma_gateway_resource()),
            ),
            None => (
                Api::all_with(client.clone(), &resource),
                Api::all_with(client.clone(), &goma_gateway_resource()),
            ),
        };
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    let children = || watcher::Config::default().labels(&managed_selector());
    let controller = Controller::new_with(gateways, watcher::Config::default(), resource.clone());
    let store = controller.store();
    let by_class = store.clone();
    let controller = controller
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .owns(child_api::<Deployment>(&client, &settings), children())
        .owns(child_api::<Service>(&client, &settings), children())
        .owns(child_api::<ConfigMap>(&client, &settings), children())
        .owns(child_api::<ServiceAccount>(&client, &settings), children())
        .owns(
            child_api::<HorizontalPodAutoscaler>(&client, &settings),
            children(),
        )
        .watches_with(
            classes,
            gateway_class_resource(),
            watcher::Config::default(),
            move |class: DynamicObject| gateways_of_class(&by_class, class.metadata.name),
        )
        .watches_with(
            goma_gateways,
            goma_gateway_resource(),
            watcher::Config::default(),
            move |goma: DynamicObject| {
                let name = goma.metadata.name?;
                let namespace = goma.metadata.namespace?;
                Some(ObjectRef::new_with(&name, resource.clone()).within(&namespace))
            },
        )
        .graceful_shutdown_on(shutdown);
    let context = Arc::new(Context {
        client,
        settings,
        reports,
        store,
        failures: Mutex::default(),
    });
    tracing::info!("operator started: reconciling Gateway API Gateways of our GatewayClasses");
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| log_result(result, "Gateway API operator watch"))
        .await;
    tracing::info!("Gateway API operator stopped");
}

/// The Gateways of a class, to reconcile when the class changes.
fn gateways_of_class(
    store: &Store<DynamicObject>,
    class: Option<String>,
) -> Vec<ObjectRef<DynamicObject>> {
    let Some(class) = class else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|gw| class_name_of(gw) == Some(class.as_str()))
        .map(|gw| ObjectRef::from_obj_with(&**gw, gateway_resource()))
        .collect()
}

async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = key_of(&object);
    let outcome = reconcile_gateway(&ctx.client, &ctx.settings, &object).await;
    let existing: Vec<ObjectKey> = ctx.store.state().iter().map(|o| key_of(o)).collect();
    ctx.reports
        .retain(|k| k.kind != Kind::Gateway || existing.contains(k));
    let report = |outcome| Report {
        generation: object.metadata.generation,
        outcome,
    };
    if outcome.is_ok() {
        ctx.failures().remove(&key);
    }
    match outcome {
        Ok(Outcome::Applied(warnings)) => {
            for warning in &warnings {
                tracing::warn!(gateway = %key, "{warning}");
            }
            ctx.reports.insert(key.clone(), report(Ok(warnings)));
            tracing::info!(gateway = %key, generation = ?object.metadata.generation, "gateway workload applied");
            Ok(Action::requeue(RESYNC))
        }
        Ok(Outcome::NotOurs { removed }) => {
            ctx.reports.remove(&key);
            if removed {
                tracing::info!(gateway = %key, "the gateway's class is not ours: its workload was removed");
            }
            Ok(Action::await_change())
        }
        Ok(Outcome::IdTaken) => {
            let message = format!(
                "the Goma Gateway {}/{} holds this gateway id; no workload applied",
                key.namespace, key.name
            );
            tracing::warn!(gateway = %key, "{message}");
            ctx.reports.insert(key, report(Err(message)));
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.reports.insert(key, report(Err(e.to_string())));
            Err(e)
        }
    }
}

fn error_policy(object: Arc<DynamicObject>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    ctx.after_failure(key_of(&object), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use serde_json::json;

    #[test]
    fn a_class_change_reconciles_exactly_the_gateways_of_that_class() {
        let mut writer = reflector::store::Writer::<DynamicObject>::new(gateway_resource());
        let store = writer.as_reader();
        for (name, class) in [("a", "ours"), ("b", "theirs"), ("c", "ours")] {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": name, "namespace": "edge"},
                "spec": {"gatewayClassName": class}
            }))
            .expect("gateway");
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let mut names: Vec<String> = gateways_of_class(&store, Some("ours".into()))
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        assert_eq!(names, ["edge/a", "edge/c"]);
        assert!(gateways_of_class(&store, None).is_empty());
    }
}
