//! Writes the computed status to the Goma objects: leader only, server-side apply on the status
//! subresource, and only what changed since the last successful write (no write storms: a
//! status that did not change costs no API call, and writing status never re-translates,
//! because translation reads only `metadata` and `spec`).

use super::board::StatusBoard;
use super::compute::{self, Inputs, Pod, Status};
use super::gateway_api::GatewayApiBoard;
use super::gateway_api_writer::{ApiInputs, ApiStatusWriter};
use crate::model::goma;
use crate::model::{Kind, ObjectKey};
use crate::operator::{GatewayReports, WorkloadStatus};
use crate::provider::object_errors::ObjectErrors;
use crate::xds::Clients;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "sluice-status";

/// Changes arriving within this window are written together.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Everything is recomputed at least this often (a failed write is retried by it too).
const RESYNC: Duration = Duration::from_secs(30);

/// What the writer reads.
pub struct Sources {
    pub board: StatusBoard,
    /// Gateway API objects' status from translation.
    pub api_board: GatewayApiBoard,
    pub errors: ObjectErrors,
    pub clients: Arc<Clients>,
    /// Gateway workloads (empty without an operator).
    pub workloads: watch::Receiver<BTreeMap<ObjectKey, WorkloadStatus>>,
    /// The operator's reconcile outcomes.
    pub reconciles: GatewayReports,
    /// The one namespace watched, if any (where earlier status entries are looked for).
    pub namespace: Option<String>,
}

/// The API resource of a Goma kind (the only kinds given status here).
pub fn api_resource(kind: Kind) -> Option<ApiResource> {
    (kind.group() == goma::GROUP).then(|| kind.api_resource())
}

/// The server-side apply patch that sets `status`.
pub fn status_patch(kind: Kind, status: &Status) -> Option<serde_json::Value> {
    let ar = api_resource(kind)?;
    Some(serde_json::json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "status": status.to_json(),
    }))
}

pub struct StatusWriter {
    client: kube::Client,
    sources: Sources,
    /// What the API server holds from us, per object.
    written: BTreeMap<ObjectKey, Status>,
    /// The same for the Gateway API objects.
    api: ApiStatusWriter,
}

impl StatusWriter {
    pub fn new(client: kube::Client, sources: Sources) -> Self {
        StatusWriter {
            client,
            sources,
            written: BTreeMap::new(),
            api: ApiStatusWriter::default(),
        }
    }

    /// Writes status whenever an input changes, until dropped. Run it only on the leader, once
    /// the initial translation is complete: a new term starts a new writer, which rewrites
    /// every status once and withdraws the route entries translation no longer reports.
    pub async fn run(mut self) {
        self.api
            .adopt(&self.client, self.sources.namespace.as_deref())
            .await;
        let mut board = self.sources.board.subscribe();
        let mut api_board = self.sources.api_board.subscribe();
        let mut errors = self.sources.errors.subscribe();
        let mut clients = self.sources.clients.subscribe();
        let mut reconciles = self.sources.reconciles.subscribe();
        loop {
            self.sync_once().await;
            tokio::select! {
                r = board.changed() => if r.is_err() { return },
                _ = api_board.changed() => {}
                _ = errors.changed() => {}
                _ = clients.changed() => {}
                _ = self.sources.workloads.changed() => {}
                _ = reconciles.changed() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }

    /// Computes every object's status (Goma and Gateway API) and writes those that differ from
    /// the last write. Returns how many objects were written.
    pub async fn sync_once(&mut self) -> usize {
        // Every connected pod's ledger is copied once per sync (1000 pods x their resources is
        // the largest input), and shared by both APIs.
        let pods = pods_by_gateway(&self.sources.clients);
        let goma = self.sync_goma(&pods).await;
        let reports = self.sources.api_board.snapshot();
        let goma_gateways = self
            .sources
            .board
            .snapshot()
            .into_keys()
            .chain(self.sources.errors.snapshot().into_keys())
            .filter(|k| k.kind == Kind::GomaGateway)
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect();
        let workloads = self.sources.workloads.borrow().clone();
        let reconciles = self.sources.reconciles.snapshot();
        let inputs = ApiInputs {
            reports: &reports,
            pods: &pods,
            workloads: &workloads,
            goma_gateways: &goma_gateways,
            reconciles: &reconciles,
        };
        goma + self.api.sync_once(&self.client, &inputs).await
    }

    async fn sync_goma(&mut self, pods: &BTreeMap<String, Vec<Pod>>) -> usize {
        let records = self.sources.board.snapshot();
        let errors = self.sources.errors.snapshot();
        let workloads = self.sources.workloads.borrow().clone();
        let reconciles = self.sources.reconciles.snapshot();
        let desired = compute::desired(&Inputs {
            records: &records,
            errors: &errors,
            pods,
            workloads: &workloads,
            reconciles: &reconciles,
        });
        self.written.retain(|k, _| desired.contains_key(k));
        let now = Timestamp::now();
        let mut sent = 0;
        for (key, mut status) in desired {
            let previous = self.written.get(&key);
            compute::carry_transition_times(&mut status, previous, now);
            if previous == Some(&status) {
                continue;
            }
            sent += 1;
            match self.patch(&key, &status).await {
                Ok(()) => {
                    self.written.insert(key, status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // Deleted meanwhile: its watch event will remove it from the board.
                    self.written.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(object = %key, %error, "status write failed; retried on the next change or resync");
                }
            }
        }
        sent
    }

    async fn patch(&self, key: &ObjectKey, status: &Status) -> Result<(), kube::Error> {
        let (Some(ar), Some(patch)) = (api_resource(key.kind), status_patch(key.kind, status))
        else {
            return Ok(());
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &ar);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
            .map(drop)
    }
}

/// Every connected pod's ledger, by gateway.
fn pods_by_gateway(clients: &Clients) -> BTreeMap<String, Vec<Pod>> {
    let mut pods: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for c in clients.all() {
        let ledger = c.ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pods.entry(c.gateway).or_default().push(Pod {
            node_id: c.node_id,
            ledger,
        });
    }
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::board::{Record, ResourceRef, Verdict};
    use crate::xds::clients::ClientInfo;
    use http::{Request, Response};
    use kube::client::Body;
    use std::sync::Mutex;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn sources() -> (Sources, StatusBoard, Arc<Clients>) {
        let board = StatusBoard::default();
        let clients = Arc::new(Clients::default());
        let (_tx, workloads) = watch::channel(BTreeMap::new());
        let sources = Sources {
            board: board.clone(),
            api_board: GatewayApiBoard::default(),
            errors: ObjectErrors::default(),
            clients: clients.clone(),
            workloads,
            reconciles: GatewayReports::default(),
            namespace: None,
        };
        (sources, board, clients)
    }

    /// Answers the next request with the object echoed back; returns the request's path, query
    /// and body.
    async fn answer(handle: &mut Handle) -> (String, serde_json::Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let uri = request.uri().to_string();
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut echoed = body.clone();
        echoed["metadata"] = serde_json::json!({"name": "x", "namespace": "default"});
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&echoed).unwrap()))
                .unwrap(),
        );
        (uri, body)
    }

    #[tokio::test]
    async fn writes_changed_status_once_with_server_side_apply() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let (sources, board, clients) = sources();
        let gateway = ObjectKey::new(Kind::GomaGateway, "default", "gw");
        board.insert(
            gateway.clone(),
            Record::new(Some(1), Verdict::Served(vec![])),
        );
        let route = ObjectKey::new(Kind::GomaRoute, "default", "api");
        let version = ResourceRef {
            type_index: 3,
            name: "default/api".into(),
            version: "v1".into(),
        };
        board.insert(
            route.clone(),
            Record {
                generation: Some(4),
                verdict: Verdict::Served(vec![version.clone()]),
                gateways: vec!["default/gw".into()],
                middlewares: vec![],
            },
        );
        let mut writer = StatusWriter::new(client, sources);

        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                seen.push(answer(&mut handle).await);
            }
            (seen, handle)
        });
        assert_eq!(writer.sync_once().await, 2);
        let (seen, mut handle) = server.await.unwrap();
        let (gw_uri, _) = &seen[0];
        assert_eq!(
            gw_uri,
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/default/gateways/gw/status?&force=true&fieldManager=sluice-status"
        );
        let (route_uri, body) = &seen[1];
        assert_eq!(
            route_uri,
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/default/routes/api/status?&force=true&fieldManager=sluice-status"
        );
        assert_eq!(body["apiVersion"], "gateway.jkaninda.dev/v1alpha1");
        assert_eq!(body["kind"], "Route");
        assert_eq!(body["status"]["ready"], true);
        assert_eq!(body["status"]["synced"], false);
        assert_eq!(body["status"]["observedGeneration"], 4);
        assert_eq!(body["status"]["conditions"][2]["reason"], "NoDataPlane");

        // Nothing changed: no request at all.
        assert_eq!(writer.sync_once().await, 0);

        // A pod connects and ACKs: only the route and the gateway change.
        let ledger = Arc::new(Mutex::new(Default::default()));
        {
            let mut l: std::sync::MutexGuard<'_, crate::xds::stream::ClientLedger> =
                ledger.lock().unwrap();
            l.ack(crate::resource::Encoded::reported(
                sluice_proto::type_url::ROUTE,
                "default/api".into(),
                "v1".into(),
            ));
        }
        clients.register(ClientInfo {
            node_id: "pod-1".into(),
            gateway: "default/gw".into(),
            peer: String::new(),
            build_version: String::new(),
            ledger,
        });
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                seen.push(answer(&mut handle).await);
            }
            seen
        });
        assert_eq!(writer.sync_once().await, 2);
        let seen = server.await.unwrap();
        let route_body = &seen[1].1;
        assert_eq!(route_body["status"]["synced"], true);
        assert_eq!(route_body["status"]["conditions"][2]["status"], "True");
        // The conditions that did not flip keep their first transition time.
        let valid_time = &body["status"]["conditions"][0]["lastTransitionTime"];
        assert_eq!(
            &route_body["status"]["conditions"][0]["lastTransitionTime"],
            valid_time
        );
    }
}

#[cfg(test)]
mod gateway_api_tests {
    use super::*;
    use crate::status::ResourceRef;
    use crate::status::gateway_api::{ApiStatus, Condition};
    use crate::xds::clients::ClientInfo;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use std::sync::Mutex;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    async fn answer(handle: &mut Handle, body: Value) -> (Method, Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
        (method, sent)
    }

    fn live_gateway() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "edge", "resourceVersion": "1"},
            "spec": {}
        })
    }

    /// Filling the board is all it takes to get Gateway API status written; the gateway turns
    /// Programmed once a connected data plane ACKed the listed listener version.
    #[tokio::test]
    async fn the_board_and_the_acks_make_the_gateway_status() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let api_board = GatewayApiBoard::default();
        let clients = Arc::new(Clients::default());
        let (_tx, workloads) = watch::channel(BTreeMap::new());
        let mut writer = StatusWriter::new(
            client,
            Sources {
                board: StatusBoard::default(),
                api_board: api_board.clone(),
                errors: ObjectErrors::default(),
                clients: clients.clone(),
                workloads,
                reconciles: GatewayReports::default(),
                namespace: None,
            },
        );
        let listener = ResourceRef {
            type_index: 2,
            name: "edge/gw/http".into(),
            version: "v1".into(),
        };
        api_board.insert(
            ObjectKey::new(Kind::Gateway, "edge", "gw"),
            ApiStatus::Gateway {
                generation: Some(1),
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", ""),
                    Condition::new("Programmed", true, "Programmed", ""),
                ],
                listeners: vec![],
                resources: vec![listener.clone()],
            },
        );
        let server = tokio::spawn(async move {
            let get = answer(&mut handle, live_gateway()).await;
            let patch = answer(&mut handle, live_gateway()).await;
            (get, patch, handle)
        });
        assert_eq!(writer.sync_once().await, 1);
        let (get, patch, mut handle) = server.await.expect("server");
        assert_eq!(get.0, Method::GET);
        assert_eq!(patch.1["status"]["conditions"][1]["reason"], "Pending");

        let ledger = Arc::new(Mutex::new(crate::xds::stream::ClientLedger::default()));
        ledger
            .lock()
            .expect("ledger")
            .ack(crate::resource::Encoded::reported(
                sluice_proto::type_url::ALL[listener.type_index],
                listener.name.clone(),
                "v1".into(),
            ));
        clients.register(ClientInfo {
            node_id: "pod-1".into(),
            gateway: "edge/gw".into(),
            peer: String::new(),
            build_version: String::new(),
            ledger,
        });
        let server = tokio::spawn(async move { answer(&mut handle, live_gateway()).await });
        assert_eq!(writer.sync_once().await, 1);
        let (method, body) = server.await.expect("server");
        assert_eq!(method, Method::PATCH, "remembered: no second read");
        assert_eq!(body["status"]["conditions"][1]["status"], "True");
        assert_eq!(body["status"]["conditions"][1]["reason"], "Programmed");
    }
}
