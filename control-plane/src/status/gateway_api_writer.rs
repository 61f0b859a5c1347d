//! Writes the status of Gateway API objects (GatewayClass, Gateway, the five route kinds and
//! BackendTLSPolicy): server-side apply on the `status` subresource under the status writer's
//! field manager, only for what changed since our last write.
//!
//! Routes and policies share their atomic `parents`/`ancestors` list with other controllers, so
//! their write reads the object first, keeps the other controllers' entries, and applies with the
//! `resourceVersion` it read: a concurrent change by another controller fails the apply with a
//! conflict (409) instead of being overwritten, and the write is retried on fresh data.

use super::compute::Pod;
use super::gateway_api::ApiStatus;
use super::gateway_api_status::{self as api_status, GatewayInputs};
use super::writer::FIELD_MANAGER;
use crate::model::{Kind, ObjectKey};
use crate::operator::WorkloadStatus;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Attempts per object and sync when the read-merge-apply races another controller.
const ATTEMPTS: usize = 3;

/// Everything one sync computes status from.
pub struct ApiInputs<'a> {
    pub reports: &'a BTreeMap<ObjectKey, ApiStatus>,
    /// Connected pods by gateway id ("namespace/name").
    pub pods: &'a BTreeMap<String, Vec<Pod>>,
    pub workloads: &'a BTreeMap<ObjectKey, WorkloadStatus>,
    /// Gateway ids ("namespace/name") held by Goma Gateways.
    pub goma_gateways: &'a BTreeSet<String>,
}

/// Remembers what we last wrote (our part of each status) so an unchanged status costs nothing.
#[derive(Default)]
pub struct ApiStatusWriter {
    written: BTreeMap<ObjectKey, Value>,
}

impl ApiStatusWriter {
    /// Writes every object's status that differs from our last write; returns how many objects
    /// were written (or attempted).
    pub async fn sync_once(&mut self, client: &kube::Client, inputs: &ApiInputs<'_>) -> usize {
        self.written.retain(|k, _| inputs.reports.contains_key(k));
        let now = Timestamp::now();
        let mut sent = 0;
        for (key, report) in inputs.reports {
            let gateway = GatewayInputs {
                pods: inputs.pods,
                workloads: inputs.workloads,
                goma_holds_id: key.kind == Kind::Gateway
                    && inputs
                        .goma_gateways
                        .contains(&format!("{}/{}", key.namespace, key.name)),
            };
            let previous = self.written.get(key);
            let desired = api_status::ours(key, report, &gateway, previous, now);
            if previous == Some(&desired) {
                continue;
            }
            sent += 1;
            match self.write(client, key, report, &gateway, now).await {
                Ok(Some(written)) => {
                    self.written.insert(key.clone(), written);
                }
                Ok(None) => {
                    // Deleted meanwhile: its watch event removes it from the board.
                    self.written.remove(key);
                }
                Err(error) => {
                    self.written.remove(key);
                    tracing::warn!(object = %key, %error, "status write failed; retried on the next change or resync");
                }
            }
        }
        sent
    }

    /// Reads when it must (a shared list to merge, or no memory of the transition times), then
    /// applies. `Ok(None)`: the object is gone.
    async fn write(
        &self,
        client: &kube::Client,
        key: &ObjectKey,
        report: &ApiStatus,
        gateway: &GatewayInputs<'_>,
        now: Timestamp,
    ) -> Result<Option<Value>, kube::Error> {
        let api = api_of(client, key);
        let shared = api_status::shared_list(key.kind).is_some();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remembered = self.written.get(key);
            let live = if shared || remembered.is_none() {
                match api.get_opt(&key.name).await? {
                    Some(object) => Some(object),
                    None => return Ok(None),
                }
            } else {
                None
            };
            let live_status = live.as_ref().and_then(|o| o.data.get("status"));
            let previous = match live_status {
                Some(status) => Some(api_status::ours_in(key.kind, status)),
                None => remembered.cloned(),
            };
            let ours = api_status::ours(key, report, gateway, previous.as_ref(), now);
            let status = api_status::merge(key.kind, &ours, live_status);
            let resource_version = live
                .as_ref()
                .filter(|_| shared)
                .and_then(|o| o.metadata.resource_version.clone());
            let patch = status_patch(key, status, resource_version);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch_status(&key.name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(Some(ours)),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {
                    tracing::debug!(object = %key, "status changed meanwhile; merging again");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn api_of(client: &kube::Client, key: &ObjectKey) -> Api<DynamicObject> {
    let ar = key.kind.api_resource();
    if key.kind.is_namespaced() {
        Api::namespaced_with(client.clone(), &key.namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

/// The server-side apply patch that sets `status`; with `resource_version`, the apply fails with
/// a conflict when the object changed since it was read.
pub fn status_patch(key: &ObjectKey, status: Value, resource_version: Option<String>) -> Value {
    let ar = key.kind.api_resource();
    let mut metadata = json!({ "name": key.name });
    if key.kind.is_namespaced() {
        metadata["namespace"] = json!(key.namespace);
    }
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata,
        "status": status,
    })
}
