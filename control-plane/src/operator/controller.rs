//! The kube-runtime controller: reconciles every Goma Gateway when it changes and when one of its
//! children (Deployment, Service, ConfigMap, HPA, ServiceAccount) is edited or deleted, so drift
//! is corrected. Failed API calls are retried with exponential backoff; an invalid spec waits for
//! the next change of the Gateway.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
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

use super::gateway::gateway_api_resource;
use super::metadata::managed_selector;
use super::{
    GatewayObject, GatewayReports, OperatorError, OperatorSettings, Report, apply, desired_objects,
};
use crate::model::{Kind, ObjectKey};

/// A periodic re-apply on top of the watches, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(600);
/// Coalesces the burst of child events one apply causes into one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Runs the operator until `shutdown` resolves (reconciles in flight finish first). Call it on
/// the leader only. `reports` receives each Gateway's last outcome, for its status.
pub async fn run(
    client: Client,
    settings: OperatorSettings,
    reports: GatewayReports,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resource = gateway_api_resource();
    let gateways: Api<DynamicObject> = match &settings.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let children = || watcher::Config::default().labels(&managed_selector());
    let controller = Controller::new_with(gateways, watcher::Config::default(), resource)
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .owns(child_api::<Deployment>(&client, &settings), children())
        .owns(child_api::<Service>(&client, &settings), children())
        .owns(child_api::<ConfigMap>(&client, &settings), children())
        .owns(child_api::<ServiceAccount>(&client, &settings), children())
        .owns(
            child_api::<HorizontalPodAutoscaler>(&client, &settings),
            children(),
        )
        .graceful_shutdown_on(shutdown);
    let context = Arc::new(Context {
        store: controller.store(),
        client,
        settings,
        reports,
        failures: Mutex::default(),
    });
    tracing::info!("operator started: reconciling Goma Gateways");
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| log_result(result, "operator watch"))
        .await;
    tracing::info!("operator stopped");
}

/// Children live in their Gateway's namespace: watch that one, or all.
pub(super) fn child_api<K>(client: &Client, settings: &OperatorSettings) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What a reconcile of either Gateway kind works with.
pub(super) struct Context {
    pub(super) client: Client,
    pub(super) settings: OperatorSettings,
    pub(super) reports: GatewayReports,
    pub(super) store: Store<DynamicObject>,
    /// Consecutive failed reconciles per Gateway, for the backoff.
    pub(super) failures: Mutex<HashMap<ObjectKey, u32>>,
}

impl Context {
    pub(super) fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Parses the Gateway, computes its objects and applies them; `Ok` carries the warnings.
pub async fn reconcile_gateway(
    client: &Client,
    settings: &OperatorSettings,
    object: &DynamicObject,
) -> Result<Vec<String>, OperatorError> {
    let gw = GatewayObject::from_dynamic(object)?;
    let desired = desired_objects(&gw, settings)?;
    apply(client, &gw, &desired, settings).await?;
    Ok(desired.warnings)
}

fn key_of(object: &DynamicObject) -> ObjectKey {
    ObjectKey::new(
        Kind::GomaGateway,
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    // Being deleted: the garbage collector removes the children through their owner references.
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = key_of(&object);
    let outcome = reconcile_gateway(&ctx.client, &ctx.settings, &object).await;
    ctx.reports.insert(
        key.clone(),
        Report {
            generation: object.metadata.generation,
            outcome: match &outcome {
                Ok(warnings) => Ok(warnings.clone()),
                Err(e) => Err(e.to_string()),
            },
        },
    );
    let existing: BTreeSet<ObjectKey> = ctx.store.state().iter().map(|o| key_of(o)).collect();
    // Gateway API Gateways' reports are the other controller's.
    ctx.reports
        .retain(|k| k.kind != Kind::GomaGateway || existing.contains(k));
    let warnings = outcome?;
    ctx.failures().remove(&key);
    for warning in &warnings {
        tracing::warn!(gateway = %key, "{warning}");
    }
    tracing::info!(gateway = %key, generation = ?object.metadata.generation, "gateway workload applied");
    Ok(Action::requeue(RESYNC))
}

fn error_policy(object: Arc<DynamicObject>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    ctx.after_failure(key_of(&object), error)
}

impl Context {
    /// What to do after a failed reconcile of `key`: wait for a change when its spec is at
    /// fault, else retry with a growing backoff.
    pub(super) fn after_failure(&self, key: ObjectKey, error: &OperatorError) -> Action {
        if !error.is_transient() {
            tracing::warn!(gateway = %key, %error, "gateway not applied: fix its spec");
            self.failures().remove(&key);
            return Action::await_change();
        }
        let attempt = {
            let mut failures = self.failures();
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = backoff(attempt);
        tracing::warn!(gateway = %key, %error, attempt, retry_in = ?delay, "gateway reconcile failed");
        Action::requeue(delay)
    }
}

/// Logs one controller result; reconcile failures were logged by the error policy.
pub(super) async fn log_result(
    result: Result<
        (ObjectRef<DynamicObject>, Action),
        controller::Error<OperatorError, watcher::Error>,
    >,
    watch: &'static str,
) {
    match result {
        Ok((object, _)) => tracing::debug!(gateway = %object, "reconciled"),
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A child event after its Gateway went (the garbage collector at work).
        Err(controller::Error::ObjectNotFound(object)) => {
            tracing::debug!(gateway = %object, "gone; nothing to reconcile")
        }
        Err(e) => tracing::warn!(error = %e, "{watch}"),
    }
}

/// 1 s, 2 s, 4 s ... capped at 5 min.
pub(super) fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(factor).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
