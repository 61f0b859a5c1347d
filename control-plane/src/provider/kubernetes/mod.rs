//! The Kubernetes provider: one kube-runtime watcher per watched kind feeding [`WatchCore`], which
//! turns watch events into the same provider batches the file provider sends.
//!
//! This module is the thin I/O edge: it builds the watchers (cluster-wide, or one namespace for
//! namespaced kinds), drops `managedFields` as objects arrive, picks streaming or paged initial
//! lists by server version, and classifies watch errors. A resource the server does not serve
//! (404: its CRD is not installed) is logged once, counts as synced and empty, and keeps being
//! retried with backoff, so installing the CRD later starts the watch without a restart.

pub mod core;
mod secrets;
pub mod watches;

use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, core::Status};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use self::core::WatchCore;
use self::watches::{WatchId, WatchSpec, streams_initial_lists, watch_specs};
use super::ProviderEvent;
use super::object_errors::ObjectErrors;

/// How often the provider says which watches it still waits for before the first sync.
const WAITING_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What a watch task reports to the core.
enum WatchInput {
    /// Boxed: an object is large, the channel holds many.
    Event(Box<watcher::Event<DynamicObject>>),
    NotServed,
}

/// Watches the cluster and sends provider batches. See the module documentation.
pub struct KubernetesProvider {
    client: Client,
    namespace: Option<String>,
    errors: ObjectErrors,
}

impl KubernetesProvider {
    /// `namespace` restricts the namespaced kinds to one namespace; cluster-scoped kinds
    /// (GatewayClass, Namespace) are always watched cluster-wide. Rejected objects are recorded in
    /// `errors`.
    pub fn new(client: Client, namespace: Option<String>, errors: ObjectErrors) -> Self {
        Self {
            client,
            namespace,
            errors,
        }
    }

    /// Runs until the receiver of `tx` is dropped.
    pub async fn run(self, tx: mpsc::UnboundedSender<Vec<ProviderEvent>>) {
        let streaming = match self.client.apiserver_version().await {
            Ok(info) => {
                let streaming = streams_initial_lists(&info.major, &info.minor);
                tracing::info!(
                    server = %info.git_version,
                    streaming_lists = streaming,
                    namespace = self.namespace.as_deref().unwrap_or("(all)"),
                    "watching the Kubernetes API"
                );
                streaming
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the API server version; using paged lists");
                false
            }
        };
        let specs = watch_specs();
        let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
        // Dropping the set (when `run` returns) aborts every watch.
        let mut tasks = JoinSet::new();
        for (id, spec) in specs.iter().enumerate() {
            let ar = spec.api_resource();
            let api = match &self.namespace {
                Some(ns) if spec.kind.is_namespaced() => {
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
                }
                _ => Api::<DynamicObject>::all_with(self.client.clone(), &ar),
            };
            tasks.spawn(run_watch(
                id,
                spec.clone(),
                api,
                streaming,
                inputs_tx.clone(),
            ));
        }
        drop(inputs_tx);

        let mut core = WatchCore::new(specs, self.errors);
        let mut waiting = tokio::time::interval(WAITING_LOG_PERIOD);
        waiting.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                input = inputs.recv() => {
                    let Some(first) = input else { return };
                    let mut out = Vec::new();
                    apply(&mut core, first, &mut out);
                    // Everything already queued goes in the same batch.
                    while let Ok(more) = inputs.try_recv() {
                        apply(&mut core, more, &mut out);
                    }
                    if out.iter().any(|e| matches!(e, ProviderEvent::Synced)) {
                        tracing::info!("every watch has listed: configuration complete");
                    }
                    if !out.is_empty() && tx.send(out).is_err() {
                        return;
                    }
                }
                _ = waiting.tick(), if !core.is_synced() => {
                    let pending: Vec<String> = core.pending().iter().map(ToString::to_string).collect();
                    tracing::info!(waiting_for = %pending.join(", "), "not serving configuration until every watch has listed");
                }
            }
        }
    }
}

fn apply(core: &mut WatchCore, (id, input): (WatchId, WatchInput), out: &mut Vec<ProviderEvent>) {
    match input {
        WatchInput::Event(event) => core.handle(id, *event, out),
        WatchInput::NotServed => core.not_installed(id, out),
    }
}

/// How a watch error is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// 404: the resource is not served (CRD not installed, or removed).
    NotServed,
    /// The server refused a streaming list (WatchList turned off): list in pages instead.
    StreamingRefused,
    /// Anything else: logged, retried with backoff by the watcher.
    Other,
}

fn classify(error: &watcher::Error, streaming: bool) -> Failure {
    let status: Option<&Status> = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s),
        watcher::Error::WatchError(s) => Some(s),
        _ => None,
    };
    match status.map(|s| s.code) {
        Some(404) => Failure::NotServed,
        Some(400 | 422) if streaming && matches!(error, watcher::Error::WatchStartFailed(_)) => {
            Failure::StreamingRefused
        }
        _ => Failure::Other,
    }
}

fn watcher_config(spec: &WatchSpec, streaming: bool) -> watcher::Config {
    let mut config = watcher::Config::default();
    if let Some(selector) = spec.field_selector {
        config = config.fields(selector);
    }
    if streaming {
        config = config.streaming_lists();
    }
    config
}

/// One watch, forever: events to the core, errors classified and logged. The watcher retries
/// with backoff on its own; only a refused streaming list restarts it in paged mode.
async fn run_watch(
    id: WatchId,
    spec: WatchSpec,
    api: Api<DynamicObject>,
    mut streaming: bool,
    tx: mpsc::UnboundedSender<(WatchId, WatchInput)>,
) {
    let mut not_served = false;
    loop {
        let events = watcher(api.clone(), watcher_config(&spec, streaming))
            // Nothing reads managedFields; they are often the largest part of an object.
            .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
            .default_backoff();
        let mut events = pin!(events);
        let mut restart = false;
        while let Some(item) = events.next().await {
            let input = match item {
                Ok(event) => {
                    if not_served && matches!(event, watcher::Event::InitDone) {
                        tracing::info!(watch = %spec, "resource is served now; watching it");
                        not_served = false;
                    }
                    WatchInput::Event(Box::new(event))
                }
                Err(e) => match classify(&e, streaming) {
                    Failure::NotServed if not_served => {
                        tracing::debug!(watch = %spec, "still not served");
                        continue;
                    }
                    Failure::NotServed => {
                        not_served = true;
                        let hint = if spec.is_custom() {
                            "is its CRD installed? "
                        } else {
                            ""
                        };
                        tracing::warn!(watch = %spec, error = %e, "resource not served by the API server ({hint}treated as empty; retrying in the background)");
                        WatchInput::NotServed
                    }
                    Failure::StreamingRefused => {
                        tracing::warn!(watch = %spec, error = %e, "streaming list refused; falling back to paged lists");
                        streaming = false;
                        restart = true;
                        break;
                    }
                    Failure::Other => {
                        tracing::warn!(watch = %spec, error = %e, "watch failed; retrying");
                        continue;
                    }
                },
            };
            if tx.send((id, input)).is_err() {
                return;
            }
        }
        if !restart {
            // A watcher stream does not end; if it ever did, the watch is over.
            tracing::error!(watch = %spec, "watch ended");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The edge against kube-rs's mock service: the exact requests a real API server would get,
    //! and what reaches the core.
    use super::*;
    use crate::model::Kind;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Vec<u8>) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a status"))
            .body(Body::from(body))
            .expect("a response");
        send.send_response(response);
    }

    fn json_body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("JSON")
    }

    fn route(name: &str, rv: &str) -> Value {
        json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"gateways": ["gw"], "path": "/", "target": "http://a"}
        })
    }

    fn route_list(rv: &str, items: Vec<Value>) -> Vec<u8> {
        json_body(json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "RouteList",
            "metadata": {"resourceVersion": rv}, "items": items
        }))
    }

    fn status(code: u16, reason: &str) -> Vec<u8> {
        json_body(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (test)"), "reason": reason, "code": code
        }))
    }

    fn spec(kind: Kind) -> WatchSpec {
        WatchSpec {
            kind,
            field_selector: None,
        }
    }

    fn start(
        client: &Client,
        kind: Kind,
        streaming: bool,
    ) -> mpsc::UnboundedReceiver<(WatchId, WatchInput)> {
        let spec = spec(kind);
        let api = Api::<DynamicObject>::all_with(client.clone(), &spec.api_resource());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_watch(7, spec, api, streaming, tx));
        rx
    }

    /// `Init`, `InitApply default/a@1`, `Apply default/a@2`, `NotServed`...
    async fn next(rx: &mut mpsc::UnboundedReceiver<(WatchId, WatchInput)>) -> String {
        let (id, input) = rx.recv().await.expect("the watch is running");
        assert_eq!(id, 7);
        let describe = |o: &DynamicObject| {
            assert_eq!(o.metadata.managed_fields, None, "managedFields dropped");
            format!(
                "{}/{}@{}",
                o.metadata.namespace.as_deref().unwrap_or(""),
                o.metadata.name.as_deref().unwrap_or(""),
                o.metadata.resource_version.as_deref().unwrap_or("")
            )
        };
        match input {
            WatchInput::NotServed => "NotServed".into(),
            WatchInput::Event(event) => match *event {
                watcher::Event::Init => "Init".into(),
                watcher::Event::InitDone => "InitDone".into(),
                watcher::Event::InitApply(o) => format!("InitApply {}", describe(&o)),
                watcher::Event::Apply(o) => format!("Apply {}", describe(&o)),
                watcher::Event::Delete(o) => format!("Delete {}", describe(&o)),
            },
        }
    }

    const ROUTES: &str = "/apis/gateway.jkaninda.dev/v1alpha1/routes";

    #[tokio::test]
    async fn paged_list_then_watch_with_a_bookmark() {
        let (client, mut handle) = mock();
        let mut rx = start(&client, Kind::GomaRoute, false);

        let (request, send) = handle.next_request().await.expect("list");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().to_string(), format!("{ROUTES}?&limit=500"));
        respond(send, 200, route_list("10", vec![route("a", "5")]));
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "InitApply default/a@5");
        assert_eq!(next(&mut rx).await, "InitDone");

        let (request, send) = handle.next_request().await.expect("watch");
        assert_eq!(
            request.uri().to_string(),
            format!(
                "{ROUTES}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=10"
            )
        );
        // A change, then a bookmark: the bookmark reaches no one but moves the resume point.
        let mut body = json_body(json!({"type": "MODIFIED", "object": route("a", "11")}));
        body.push(b'\n');
        body.extend(json_body(json!({"type": "BOOKMARK", "object": {
            "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Route",
            "metadata": {"resourceVersion": "20"}}})));
        body.push(b'\n');
        respond(send, 200, body);
        assert_eq!(next(&mut rx).await, "Apply default/a@11");

        // The watch ended: it resumes from the bookmark, with no relist.
        let (request, _send) = handle.next_request().await.expect("watch again");
        assert!(
            request.uri().to_string().ends_with("resourceVersion=20"),
            "{}",
            request.uri()
        );
        assert!(rx.try_recv().is_err(), "nothing reached the core");
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_crd_is_reported_once_and_watched_when_installed() {
        let (client, mut handle) = mock();
        let mut rx = start(&client, Kind::GomaRoute, false);
        let (_, send) = handle.next_request().await.expect("list");
        respond(send, 404, status(404, "NotFound"));
        // A paged list announces itself (Init) before it fails.
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "NotServed");
        // Retried (after a backoff): still missing, said once.
        let (request, send) = handle.next_request().await.expect("list again");
        assert_eq!(request.uri().to_string(), format!("{ROUTES}?&limit=500"));
        respond(send, 404, status(404, "NotFound"));
        // Installed: listed like any other.
        let (_, send) = handle.next_request().await.expect("list once more");
        respond(send, 200, route_list("3", vec![route("a", "2")]));
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "InitApply default/a@2");
        assert_eq!(next(&mut rx).await, "InitDone");
    }

    #[tokio::test(start_paused = true)]
    async fn streaming_lists_and_the_fallback_when_refused() {
        // Served: the initial state streams in the watch, ended by the initial-events-end bookmark.
        let (client, mut handle) = mock();
        let mut rx = start(&client, Kind::GomaRoute, true);
        let (request, send) = handle.next_request().await.expect("streaming watch");
        assert_eq!(
            request.uri().to_string(),
            format!(
                "{ROUTES}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0"
            )
        );
        let mut body = json_body(json!({"type": "ADDED", "object": route("a", "4")}));
        body.push(b'\n');
        body.extend(json_body(json!({"type": "BOOKMARK", "object": {
            "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Route",
            "metadata": {"resourceVersion": "6", "annotations": {"k8s.io/initial-events-end": "true"}}}})));
        body.push(b'\n');
        respond(send, 200, body);
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "InitApply default/a@4");
        assert_eq!(next(&mut rx).await, "InitDone");

        // Refused (WatchList turned off on a server that has it): paged lists instead.
        let (client, mut handle) = mock();
        let mut rx = start(&client, Kind::GomaRoute, true);
        let (request, send) = handle.next_request().await.expect("streaming watch");
        assert!(request.uri().to_string().contains("sendInitialEvents=true"));
        respond(send, 422, status(422, "Invalid"));
        let (request, send) = handle.next_request().await.expect("paged list");
        assert_eq!(request.uri().to_string(), format!("{ROUTES}?&limit=500"));
        respond(send, 200, route_list("3", vec![]));
        assert_eq!(next(&mut rx).await, "Init");
        assert_eq!(next(&mut rx).await, "InitDone");
    }

    #[test]
    fn errors_are_classified() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(
                serde_json::from_slice::<Status>(&status(code, "X")).expect("a Status"),
            ))
        };
        assert_eq!(
            classify(&watcher::Error::InitialListFailed(api(404)), false),
            Failure::NotServed
        );
        assert_eq!(
            classify(&watcher::Error::WatchStartFailed(api(422)), true),
            Failure::StreamingRefused
        );
        assert_eq!(
            classify(&watcher::Error::WatchStartFailed(api(422)), false),
            Failure::Other
        );
        assert_eq!(
            classify(&watcher::Error::InitialListFailed(api(403)), false),
            Failure::Other
        );
        assert_eq!(
            classify(&watcher::Error::NoResourceVersion, true),
            Failure::Other
        );
    }

    /// The whole provider, restricted to one namespace: every list it makes, and the batches it
    /// sends until Synced.
    #[tokio::test]
    async fn the_provider_lists_every_kind_and_syncs() {
        let (client, mut handle) = mock();
        let errors = ObjectErrors::default();
        let provider = KubernetesProvider::new(client, Some("apps".into()), errors);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let provider = tokio::spawn(provider.run(tx));

        let (request, send) = handle.next_request().await.expect("version");
        assert_eq!(request.uri().to_string(), "/version");
        respond(
            send,
            200,
            json_body(json!({"major": "1", "minor": "31", "gitVersion": "v1.31.4",
                "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "",
                "compiler": "", "platform": ""})),
        );
        let mut lists = BTreeSet::new();
        // Watches stay open (unanswered), as on a quiet cluster.
        let mut open_watches = Vec::new();
        while lists.len() < watch_specs().len() {
            let (request, send) = handle.next_request().await.expect("a request");
            let uri = request.uri().to_string();
            if uri.contains("watch=true") {
                open_watches.push(send);
                continue;
            }
            let path = uri.split('?').next().unwrap_or_default().to_string();
            let items = if path.ends_with("/routes") {
                vec![
                    json!({"metadata": {"name": "r", "namespace": "apps", "resourceVersion": "2"},
                    "spec": {"gateways": ["gw"], "path": "/", "target": "http://a"}}),
                ]
            } else {
                vec![]
            };
            respond(
                send,
                200,
                json_body(json!({"metadata": {"resourceVersion": "9"}, "items": items})),
            );
            assert!(lists.insert(uri), "listed once");
        }
        let expected: BTreeSet<String> = [
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/apps/gateways?&limit=500",
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/apps/routes?&limit=500",
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/apps/middlewares?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tcproutes?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/udproutes?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/referencegrants?&limit=500",
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/backendtlspolicies?&limit=500",
            "/api/v1/namespaces?&limit=500",
            "/api/v1/namespaces/apps/services?&limit=500",
            "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices?&limit=500",
            "/api/v1/namespaces/apps/secrets?&fieldSelector=type%3Dkubernetes.io%2Ftls&limit=500",
            "/api/v1/namespaces/apps/secrets?&fieldSelector=type%3DOpaque&limit=500",
            "/api/v1/namespaces/apps/configmaps?&limit=500",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(lists, expected);

        let mut events = Vec::new();
        while !events.iter().any(|e| matches!(e, ProviderEvent::Synced)) {
            events.extend(rx.recv().await.expect("a batch"));
        }
        let keys: Vec<String> = events
            .iter()
            .map(|e| match e {
                ProviderEvent::Apply(o) => o.key().to_string(),
                ProviderEvent::Delete(k) => format!("-{k}"),
                ProviderEvent::Synced => "synced".into(),
            })
            .collect();
        assert_eq!(keys, ["Route apps/r", "synced"]);
        drop(rx);
        // The provider stops when its receiver goes.
        tokio::time::timeout(Duration::from_secs(5), provider)
            .await
            .expect("the provider stops")
            .expect("no panic");
        drop(open_watches);
    }
}
