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
use crate::operator::{Report, WorkloadStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
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
    /// The operator's last reconcile of each Gateway (`Kind::Gateway` keys are ours).
    pub reconciles: &'a BTreeMap<ObjectKey, Report>,
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
        let mut sent = self.withdraw_gone(client, inputs.reports).await;
        let now = Timestamp::now();
        for (key, report) in inputs.reports {
            let gateway = GatewayInputs {
                pods: inputs.pods,
                workloads: inputs.workloads,
                goma_holds_id: key.kind == Kind::Gateway
                    && inputs
                        .goma_gateways
                        .contains(&format!("{}/{}", key.namespace, key.name)),
                workload_error: inputs
                    .reconciles
                    .get(key)
                    .filter(|_| key.kind == Kind::Gateway)
                    .and_then(|r| r.outcome.as_ref().err())
                    .map(String::as_str),
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

    /// Takes on the entries a previous leader (or an earlier run) left in routes' and
    /// policies' shared lists, so that those translation does not report are withdrawn by the
    /// next sync like any of ours. Call it once translation is complete, before the first sync.
    /// `namespace`: the one namespace watched, if any. A kind that cannot be listed (its CRD is
    /// not installed, or RBAC forbids it) is skipped with a warning.
    pub async fn adopt(&mut self, client: &kube::Client, namespace: Option<&str>) {
        for kind in [
            Kind::HttpRoute,
            Kind::GrpcRoute,
            Kind::TlsRoute,
            Kind::TcpRoute,
            Kind::UdpRoute,
            Kind::BackendTlsPolicy,
        ] {
            let ar = kind.api_resource();
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(error) => {
                    tracing::warn!(kind = ar.kind, %error, "cannot list to adopt our status entries; stale ones stay");
                    continue;
                }
            };
            for object in list.items {
                let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name)
                else {
                    continue;
                };
                let Some(status) = object.data.get("status") else {
                    continue;
                };
                let ours = api_status::ours_in(kind, status);
                if api_status::has_entries(kind, &ours) {
                    self.written
                        .entry(ObjectKey::new(kind, ns, name))
                        .or_insert(ours);
                }
            }
        }
    }

    /// Objects we wrote that translation no longer reports: a route or policy that left our
    /// Gateways must not keep our entries in its shared list (they would claim an attachment
    /// that no longer exists), so they are withdrawn; the rest are forgotten. A failed
    /// withdrawal stays remembered and is retried on the next sync.
    async fn withdraw_gone(
        &mut self,
        client: &kube::Client,
        reports: &BTreeMap<ObjectKey, ApiStatus>,
    ) -> usize {
        let gone: Vec<ObjectKey> = self
            .written
            .keys()
            .filter(|k| !reports.contains_key(k))
            .cloned()
            .collect();
        let mut sent = 0;
        for key in gone {
            let Some(list) = api_status::shared_list(key.kind) else {
                self.written.remove(&key);
                continue;
            };
            if !api_status::has_entries(key.kind, &self.written[&key]) {
                self.written.remove(&key);
                continue;
            }
            sent += 1;
            match withdraw(client, &key, list).await {
                Ok(()) => {
                    self.written.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(object = %key, %error, "withdrawing our status entries failed; retried on the next sync");
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

/// Removes our entries from the shared `list` of `key`'s status, keeping the other
/// controllers' (read, merge, apply on the version read; retried on a conflict). Nothing to do
/// when the object is gone or shows none of ours.
async fn withdraw(client: &kube::Client, key: &ObjectKey, list: &str) -> Result<(), kube::Error> {
    let api = api_of(client, key);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(live) = api.get_opt(&key.name).await? else {
            return Ok(());
        };
        let live_status = live.data.get("status");
        let shows_ours = live_status
            .is_some_and(|s| api_status::has_entries(key.kind, &api_status::ours_in(key.kind, s)));
        if !shows_ours {
            return Ok(());
        }
        let status = api_status::merge(key.kind, &json!({ list: [] }), live_status);
        let patch = status_patch(key, status, live.metadata.resource_version.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {
                tracing::debug!(object = %key, "status changed meanwhile; withdrawing again");
            }
            Err(e) => return Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::gateway_api::{CONTROLLER_NAME, Condition, ParentRef, ParentReport};
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Answers the next request with `status` and `body`; returns method, URI and request body.
    async fn answer(
        handle: &mut Handle,
        status: StatusCode,
        body: Value,
    ) -> (Method, String, Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        if method == Method::PATCH {
            assert_eq!(
                request.headers()["content-type"],
                "application/apply-patch+yaml"
            );
        }
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.expect("a body");
        let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("a response"),
        );
        (method, uri, sent)
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
    }

    fn conflict() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})
    }

    fn route_report() -> ApiStatus {
        ApiStatus::Route {
            generation: Some(2),
            parents: vec![ParentReport {
                parent_ref: ParentRef {
                    name: "gw".into(),
                    ..ParentRef::default()
                },
                conditions: vec![Condition::new("Accepted", true, "Accepted", "")],
            }],
        }
    }

    fn live_route(resource_version: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "api", "namespace": "edge", "resourceVersion": resource_version},
            "spec": {},
            "status": {"parents": [{
                "parentRef": {"name": "theirs"},
                "controllerName": "example.com/other",
                "conditions": []
            }]}
        })
    }

    async fn sync(
        writer: &mut ApiStatusWriter,
        client: &kube::Client,
        reports: &BTreeMap<ObjectKey, ApiStatus>,
    ) -> usize {
        let (pods, workloads, goma) = (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
        let reconciles = BTreeMap::new();
        let inputs = ApiInputs {
            reports,
            pods: &pods,
            workloads: &workloads,
            goma_gateways: &goma,
            reconciles: &reconciles,
        };
        writer.sync_once(client, &inputs).await
    }

    #[tokio::test]
    async fn a_route_keeps_other_controllers_parents_and_retries_a_conflict() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let key = ObjectKey::new(Kind::HttpRoute, "edge", "api");
        let reports = BTreeMap::from([(key, route_report())]);
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            seen.push(answer(&mut handle, StatusCode::OK, live_route("10")).await);
            seen.push(answer(&mut handle, StatusCode::CONFLICT, conflict()).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route("11")).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route("12")).await);
            (seen, handle)
        });
        let mut writer = ApiStatusWriter::default();
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        let (seen, mut handle) = server.await.expect("server");
        let path = "/apis/gateway.networking.k8s.io/v1/namespaces/edge/httproutes/api";
        assert_eq!((&seen[0].0, seen[0].1.as_str()), (&Method::GET, path));
        assert_eq!(
            seen[1].1,
            format!("{path}/status?&force=true&fieldManager=sluice-status")
        );
        assert_eq!(seen[1].2["metadata"]["resourceVersion"], "10");
        // The conflict made it read again and apply on the fresh version.
        assert_eq!(seen[2].0, Method::GET);
        let patch = &seen[3].2;
        assert_eq!(
            patch["metadata"],
            json!({"name": "api", "namespace": "edge", "resourceVersion": "11"})
        );
        assert_eq!(patch["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(patch["kind"], "HTTPRoute");
        let parents = patch["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(parents[1]["parentRef"], json!({"name": "gw"}));

        // Nothing changed: no request at all.
        assert_eq!(sync(&mut writer, &client, &reports).await, 0);
        drop(client);
        assert!(handle.next_request().await.is_none(), "no further request");
    }

    /// The live route after our write: the other controller's entry, then ours.
    fn live_route_with_ours(resource_version: &str) -> Value {
        let mut route = live_route(resource_version);
        route["status"]["parents"]
            .as_array_mut()
            .expect("parents")
            .push(json!({"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME, "conditions": []}));
        route
    }

    #[tokio::test]
    async fn a_route_off_the_board_loses_our_entry_and_keeps_the_others() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let key = ObjectKey::new(Kind::HttpRoute, "edge", "api");
        let reports = BTreeMap::from([(key, route_report())]);
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            seen.push(answer(&mut handle, StatusCode::OK, live_route("10")).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route_with_ours("11")).await);
            // Withdrawal: read, a conflict, read again, apply.
            seen.push(answer(&mut handle, StatusCode::OK, live_route_with_ours("11")).await);
            seen.push(answer(&mut handle, StatusCode::CONFLICT, conflict()).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route_with_ours("12")).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route("13")).await);
            (seen, handle)
        });
        let mut writer = ApiStatusWriter::default();
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        // No longer reported (the route left our Gateways): our entry is withdrawn.
        assert_eq!(sync(&mut writer, &client, &BTreeMap::new()).await, 1);
        let (seen, mut handle) = server.await.expect("server");
        let path = "/apis/gateway.networking.k8s.io/v1/namespaces/edge/httproutes/api";
        assert_eq!((&seen[2].0, seen[2].1.as_str()), (&Method::GET, path));
        assert_eq!(seen[3].2["metadata"]["resourceVersion"], "11");
        assert_eq!(seen[4].0, Method::GET);
        let patch = &seen[5];
        assert_eq!(
            (&patch.0, patch.1.as_str()),
            (
                &Method::PATCH,
                format!("{path}/status?&force=true&fieldManager=sluice-status").as_str()
            )
        );
        assert_eq!(patch.2["metadata"]["resourceVersion"], "12");
        assert_eq!(
            patch.2["status"]["parents"],
            live_route("0")["status"]["parents"],
            "only the other controller's entry is left"
        );
        assert!(writer.written.is_empty());
        // Forgotten: nothing more to write.
        assert_eq!(sync(&mut writer, &client, &BTreeMap::new()).await, 0);
        drop(client);
        assert!(handle.next_request().await.is_none(), "no further request");
    }

    #[tokio::test]
    async fn entries_left_by_an_earlier_leader_are_adopted_and_withdrawn_when_not_reported() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let list = |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "20"}, "items": items});
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            // HTTPRoutes: one with our entry, one with only another controller's.
            let mut theirs_only = live_route("9");
            theirs_only["metadata"]["name"] = json!("web");
            seen.push(
                answer(
                    &mut handle,
                    StatusCode::OK,
                    list(vec![live_route_with_ours("11"), theirs_only]),
                )
                .await,
            );
            // GRPCRoutes: not served by this cluster (no CRD).
            seen.push(answer(&mut handle, StatusCode::NOT_FOUND, not_found()).await);
            for _ in 0..4 {
                seen.push(answer(&mut handle, StatusCode::OK, list(vec![])).await);
            }
            // The first sync withdraws the adopted entry.
            seen.push(answer(&mut handle, StatusCode::OK, live_route_with_ours("11")).await);
            seen.push(answer(&mut handle, StatusCode::OK, live_route("12")).await);
            (seen, handle)
        });
        let mut writer = ApiStatusWriter::default();
        writer.adopt(&client, Some("edge")).await;
        assert_eq!(
            writer.written.keys().cloned().collect::<Vec<_>>(),
            vec![ObjectKey::new(Kind::HttpRoute, "edge", "api")]
        );
        assert_eq!(sync(&mut writer, &client, &BTreeMap::new()).await, 1);
        let (seen, mut handle) = server.await.expect("server");
        let lists: Vec<&str> = seen[..6].iter().map(|s| s.1.as_str()).collect();
        assert_eq!(
            lists,
            [
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/httproutes?",
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/grpcroutes?",
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/tlsroutes?",
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/tcproutes?",
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/udproutes?",
                "/apis/gateway.networking.k8s.io/v1/namespaces/edge/backendtlspolicies?",
            ]
        );
        assert_eq!(seen[7].0, Method::PATCH);
        assert_eq!(
            seen[7].2["status"]["parents"],
            live_route("0")["status"]["parents"]
        );
        assert!(writer.written.is_empty());
        drop(client);
        assert!(handle.next_request().await.is_none(), "no further request");
    }

    #[tokio::test]
    async fn a_route_off_the_board_that_shows_none_of_ours_is_not_written() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let key = ObjectKey::new(Kind::HttpRoute, "edge", "api");
        let reports = BTreeMap::from([(key, route_report())]);
        let server = tokio::spawn(async move {
            answer(&mut handle, StatusCode::OK, live_route("10")).await;
            answer(&mut handle, StatusCode::OK, live_route_with_ours("11")).await;
            // Someone else already rewrote the list without our entry.
            let get = answer(&mut handle, StatusCode::OK, live_route("12")).await;
            (get, handle)
        });
        let mut writer = ApiStatusWriter::default();
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        assert_eq!(sync(&mut writer, &client, &BTreeMap::new()).await, 1);
        let (get, mut handle) = server.await.expect("server");
        assert_eq!(get.0, Method::GET);
        assert!(writer.written.is_empty());
        drop(client);
        assert!(handle.next_request().await.is_none(), "no patch");
    }

    #[tokio::test]
    async fn a_gateway_class_is_read_once_then_written_only_on_change() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let key = ObjectKey::new(Kind::GatewayClass, "", "sluice");
        let report = |accepted| ApiStatus::GatewayClass {
            generation: Some(1),
            conditions: vec![Condition::new("Accepted", accepted, "Accepted", "")],
            supported_features: vec!["Gateway".into()],
        };
        let live = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "sluice", "resourceVersion": "3"},
            "spec": {"controllerName": CONTROLLER_NAME},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "observedGeneration": 1, "lastTransitionTime": "2020-01-01T00:00:00Z"}]}
        });
        let echo = live.clone();
        let server = tokio::spawn(async move {
            let get = answer(&mut handle, StatusCode::OK, live).await;
            let patch = answer(&mut handle, StatusCode::OK, echo.clone()).await;
            let second = answer(&mut handle, StatusCode::OK, echo).await;
            (get, patch, second)
        });
        let mut writer = ApiStatusWriter::default();
        let reports = BTreeMap::from([(key.clone(), report(true))]);
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        // The class changes: written from memory, without a read.
        let reports = BTreeMap::from([(key, report(false))]);
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        let (get, patch, second) = server.await.expect("server");
        let path = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/sluice";
        assert_eq!((get.0, get.1.as_str()), (Method::GET, path));
        assert_eq!(
            patch.1,
            format!("{path}/status?&force=true&fieldManager=sluice-status")
        );
        // Cluster-scoped: no namespace; no resourceVersion (nothing shared to protect).
        assert_eq!(patch.2["metadata"], json!({"name": "sluice"}));
        // The live transition time is kept: the status did not change.
        assert_eq!(
            patch.2["status"]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(
            patch.2["status"]["supportedFeatures"],
            json!([{"name": "Gateway"}])
        );
        assert_eq!(second.0, Method::PATCH);
        assert_eq!(second.2["status"]["conditions"][0]["status"], "False");
        assert_ne!(
            second.2["status"]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[tokio::test]
    async fn an_object_already_deleted_is_not_written() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let key = ObjectKey::new(Kind::TcpRoute, "edge", "db");
        let reports = BTreeMap::from([(key, route_report())]);
        let server = tokio::spawn(async move {
            let get = answer(&mut handle, StatusCode::NOT_FOUND, not_found()).await;
            (get, handle)
        });
        let mut writer = ApiStatusWriter::default();
        assert_eq!(sync(&mut writer, &client, &reports).await, 1);
        let (get, mut handle) = server.await.expect("server");
        assert_eq!(
            get.1,
            "/apis/gateway.networking.k8s.io/v1/namespaces/edge/tcproutes/db"
        );
        assert!(writer.written.is_empty());
        drop(client);
        assert!(
            handle.next_request().await.is_none(),
            "no patch after a 404"
        );
    }
}
