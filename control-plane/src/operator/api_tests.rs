//! The operator's API calls against kube-rs's mock service: the exact requests a reconcile
//! sends (method, path, field manager, force, body) and what it does with the answers.

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::core::DynamicObject;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::controller::reconcile_gateway;
use super::{GatewayObject, OperatorError, OperatorSettings, desired_objects};

#[derive(Debug, Clone, PartialEq)]
struct Call {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

enum Reply {
    /// 200 with the request body (what the API server answers an apply with, near enough).
    Echo,
    Json(StatusCode, Value),
}

/// A client whose API server answers the requests in order with `replies`; any request beyond
/// them is recorded and answered 500. Drop the client, then await the handle for the requests.
fn mock_api(replies: Vec<Reply>) -> (Client, JoinHandle<Vec<Call>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut replies = replies.into_iter();
        let mut calls = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let call = Call {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body: if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON body")
                },
            };
            let (status, answer) = match replies.next() {
                Some(Reply::Echo) => (StatusCode::OK, call.body.clone()),
                Some(Reply::Json(status, value)) => (status, value),
                None => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    status_body(500, "InternalError", "unexpected request"),
                ),
            };
            calls.push(call);
            let response = Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("response");
            send.send_response(response);
        }
        calls
    });
    (Client::new(service, "default"), server)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn not_found() -> Reply {
    Reply::Json(
        StatusCode::NOT_FOUND,
        status_body(404, "NotFound", "not found"),
    )
}

fn gateway(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.jkaninda.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "edge", "uid": "u-1", "generation": 2, "resourceVersion": "77"},
        "spec": spec,
        "status": {}
    }))
    .expect("gateway")
}

fn settings() -> OperatorSettings {
    OperatorSettings {
        data_plane_image: "registry.example/sluice:1.2.3".into(),
        ..OperatorSettings::default()
    }
}

/// The query kube-rs builds for a forced apply (the leading `&` is its own, harmless).
const APPLY: &str = "&force=true&fieldManager=sluice-operator";
const APPLY_PATCH: &str = "application/apply-patch+yaml";

async fn reconcile(
    spec: Value,
    replies: Vec<Reply>,
) -> (Result<Vec<String>, OperatorError>, Vec<Call>) {
    let (client, server) = mock_api(replies);
    let result = reconcile_gateway(&client, &settings(), &gateway(spec)).await;
    drop(client);
    let calls = server.await.expect("mock server");
    (result, calls)
}

fn desired(spec: Value) -> super::DesiredObjects {
    let gw = GatewayObject::from_dynamic(&gateway(spec)).expect("valid");
    desired_objects(&gw, &settings()).expect("valid")
}

fn json_of<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("json")
}

fn apply_call(path: &str, body: Value) -> Call {
    Call {
        method: "PATCH".into(),
        uri: format!("{path}?{APPLY}"),
        content_type: APPLY_PATCH.into(),
        body,
    }
}

fn get_call(path: &str) -> Call {
    Call {
        method: "GET".into(),
        uri: path.into(),
        content_type: String::new(),
        body: Value::Null,
    }
}

const SA: &str = "/api/v1/namespaces/edge/serviceaccounts/gw";
const CM: &str = "/api/v1/namespaces/edge/configmaps/gw-bootstrap";
const SVC: &str = "/api/v1/namespaces/edge/services/gw";
const DEPLOY: &str = "/apis/apps/v1/namespaces/edge/deployments/gw";
const HPA: &str = "/apis/autoscaling/v2/namespaces/edge/horizontalpodautoscalers/gw";

#[tokio::test]
async fn a_reconcile_applies_every_object_server_side_in_order() {
    let spec = json!({"replicas": 2, "service": {"type": "NodePort", "httpNodePort": 30080}});
    let (result, calls) = reconcile(
        spec.clone(),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            not_found(),
        ],
    )
    .await;
    assert_eq!(result.expect("applied"), Vec::<String>::new());
    let d = desired(spec);
    assert_eq!(
        calls,
        vec![
            apply_call(SA, json_of(&d.service_account)),
            apply_call(CM, json_of(&d.bootstrap)),
            apply_call(SVC, json_of(&d.service)),
            apply_call(DEPLOY, json_of(&d.deployment)),
            // Autoscaling is off: is there an HPA to remove?
            get_call(HPA),
        ]
    );
    // The bodies are the objects themselves, not something empty that would equal itself.
    assert_eq!(calls[3].body["spec"]["replicas"], 2);
    assert_eq!(calls[3].body["kind"], "Deployment");
    assert_eq!(calls[2].body["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(calls[1].body["data"]["SLUICE_GATEWAY"], "edge/gw");
    for call in &calls[..4] {
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(
            call.body["metadata"]["ownerReferences"][0]["controller"],
            true
        );
    }
}

fn hpa_owned_by(uid: &str) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "gw", "namespace": "edge", "uid": "hpa-uid", "resourceVersion": "12",
            "ownerReferences": [{
                "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Gateway",
                "name": "gw", "uid": uid, "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw"}, "maxReplicas": 10}
    })
}

#[tokio::test]
async fn switching_autoscaling_off_deletes_the_hpa_the_gateway_controls() {
    let (result, calls) = reconcile(
        json!({"autoScaling": {"enabled": false}}),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Json(StatusCode::OK, hpa_owned_by("u-1")),
            Reply::Json(StatusCode::OK, hpa_owned_by("u-1")),
        ],
    )
    .await;
    result.expect("applied");
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert_eq!(calls[4], get_call(HPA));
    assert_eq!(
        calls[5],
        Call {
            method: "DELETE".into(),
            uri: format!("{HPA}?"),
            content_type: "application/json".into(),
            body: json!({"propagationPolicy": "Background", "preconditions": {"uid": "hpa-uid"}}),
        }
    );
}

#[tokio::test]
async fn an_hpa_the_gateway_does_not_control_is_left_alone() {
    let (result, calls) = reconcile(
        json!({}),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Json(StatusCode::OK, hpa_owned_by("someone-else")),
        ],
    )
    .await;
    result.expect("applied");
    assert_eq!(calls.len(), 5, "no DELETE: {calls:#?}");
    assert_eq!(calls[4], get_call(HPA));
}

/// A live Deployment whose `spec.replicas` (3) was last applied by `manager`.
fn live_deployment(manager: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "gw", "namespace": "edge", "uid": "d-uid", "resourceVersion": "40",
            "managedFields": [{
                "manager": manager,
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}
            }]
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "gw"}},
            "template": {"metadata": {}, "spec": {"containers": []}}
        }
    })
}

#[tokio::test]
async fn switching_autoscaling_on_hands_the_replicas_to_the_hpa_before_dropping_them() {
    let spec = json!({"replicas": 3, "autoScaling": {"enabled": true, "minReplicas": 2}});
    let (result, calls) = reconcile(
        spec.clone(),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Json(StatusCode::OK, live_deployment("sluice-operator")),
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
        ],
    )
    .await;
    result.expect("applied");
    let d = desired(spec);
    assert_eq!(
        calls,
        vec![
            apply_call(SA, json_of(&d.service_account)),
            apply_call(CM, json_of(&d.bootstrap)),
            apply_call(SVC, json_of(&d.service)),
            get_call(DEPLOY),
            // Another manager takes the live count (not forced: it is the live value)...
            Call {
                method: "PATCH".into(),
                uri: format!("{DEPLOY}?&fieldManager=sluice-operator-replicas-handover"),
                content_type: APPLY_PATCH.into(),
                body: json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "gw", "namespace": "edge"},
                    "spec": {"replicas": 3}
                }),
            },
            // ...so dropping it from ours does not default it back to 1.
            apply_call(DEPLOY, json_of(&d.deployment)),
            apply_call(HPA, json_of(d.autoscaler.as_ref().expect("hpa"))),
        ]
    );
    assert!(calls[5].body["spec"].get("replicas").is_none());
    assert_eq!(calls[6].body["spec"]["minReplicas"], 2);
}

#[tokio::test]
async fn with_autoscaling_on_and_replicas_no_longer_ours_there_is_no_handover() {
    let (result, calls) = reconcile(
        json!({"autoScaling": {"enabled": true}}),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Json(StatusCode::OK, live_deployment("kube-controller-manager")),
            Reply::Echo,
            Reply::Echo,
        ],
    )
    .await;
    result.expect("applied");
    let methods: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c.method.as_str(),
                c.uri.split('?').next().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("PATCH", SA),
            ("PATCH", CM),
            ("PATCH", SVC),
            ("GET", DEPLOY),
            ("PATCH", DEPLOY),
            ("PATCH", HPA),
        ]
    );
}

#[tokio::test]
async fn an_invalid_spec_sends_nothing() {
    let (result, calls) = reconcile(json!({"service": {"httpNodePort": 30080}}), vec![]).await;
    let err = result.expect_err("invalid");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "Gateway edge/gw: spec.service.httpNodePort: only for type NodePort or LoadBalancer"
    );
    assert_eq!(calls, vec![]);

    let (result, calls) = reconcile(json!({"replicas": "two"}), vec![]).await;
    let err = result.expect_err("unparsable");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "Gateway edge/gw: spec.replicas: invalid type: string \"two\", expected i32"
    );
    assert_eq!(calls, vec![]);
}

#[tokio::test]
async fn a_failed_apply_names_the_object_and_stops_the_reconcile() {
    let (result, calls) = reconcile(
        json!({}),
        vec![
            Reply::Echo,
            Reply::Echo,
            Reply::Json(
                StatusCode::UNPROCESSABLE_ENTITY,
                status_body(422, "Invalid", "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
            ),
        ],
    )
    .await;
    let err = result.expect_err("failed");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.starts_with("Service edge/gw: server-side apply: "),
        "{text}"
    );
    assert!(text.contains("already allocated"), "{text}");
    assert_eq!(calls.len(), 3, "nothing after the failure: {calls:#?}");
}

/// A small API server for the whole controller: lists answer from `lists`, watches are held open
/// (the test answers them to inject events), applies are echoed, GETs of one object are 404.
struct ApiServer {
    calls: Vec<Call>,
    held_watches: Vec<(String, tower_test::mock::SendResponse<Response<Body>>)>,
}

type SharedApi = std::sync::Arc<std::sync::Mutex<ApiServer>>;

fn mock_cluster(lists: Vec<(&'static str, Value)>) -> (Client, SharedApi) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let shared: SharedApi = std::sync::Arc::new(std::sync::Mutex::new(ApiServer {
        calls: Vec::new(),
        held_watches: Vec::new(),
    }));
    let state = shared.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let uri = parts.uri.to_string();
            let path = parts.uri.path().to_owned();
            let call = Call {
                method: parts.method.to_string(),
                uri: uri.clone(),
                content_type: String::new(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let mut api = state.lock().expect("mock state");
            api.calls.push(call.clone());
            let answer = if uri.contains("watch=true") {
                api.held_watches.push((uri, send));
                continue;
            } else if call.method == "PATCH" {
                (StatusCode::OK, call.body)
            } else if let Some((_, list)) = lists.iter().find(|(p, _)| *p == path) {
                (StatusCode::OK, list.clone())
            } else {
                (
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", "not found"),
                )
            };
            send.send_response(
                Response::builder()
                    .status(answer.0)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer.1).expect("json")))
                    .expect("response"),
            );
        }
    });
    (Client::new(service, "default"), shared)
}

fn metadata_list() -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "10"}, "items": []})
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn count(api: &SharedApi, method: &str, path: &str) -> usize {
    let api = api.lock().expect("mock state");
    api.calls
        .iter()
        .filter(|c| c.method == method && c.uri.split('?').next() == Some(path))
        .count()
}

#[tokio::test]
async fn the_controller_applies_gateways_and_reapplies_a_deleted_child() {
    let gateways = json!({
        "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "GatewayList",
        "metadata": {"resourceVersion": "10"},
        "items": [gateway(json!({"replicas": 2}))]
    });
    let (client, api) = mock_cluster(vec![
        ("/apis/gateway.jkaninda.dev/v1alpha1/gateways", gateways),
        ("/apis/apps/v1/deployments", metadata_list()),
        ("/api/v1/services", metadata_list()),
        ("/api/v1/configmaps", metadata_list()),
        ("/api/v1/serviceaccounts", metadata_list()),
        (
            "/apis/autoscaling/v2/horizontalpodautoscalers",
            metadata_list(),
        ),
    ]);
    let reports = super::GatewayReports::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(super::run(
        client,
        settings(),
        reports.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    eventually("the first apply", || count(&api, "PATCH", DEPLOY) == 1).await;
    eventually("the HPA check", || count(&api, "GET", HPA) == 1).await;
    let key = crate::model::ObjectKey::new(crate::model::Kind::GomaGateway, "edge", "gw");
    eventually("the report", || reports.get(&key).is_some()).await;
    assert_eq!(
        reports.get(&key),
        Some(super::Report {
            generation: Some(2),
            outcome: Ok(vec![]),
        })
    );
    for kind in [SA, CM, SVC] {
        assert_eq!(count(&api, "PATCH", kind), 1, "{kind}");
    }

    // Every child kind is watched, through the managed-by label only.
    let selector = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsluice";
    for path in [
        "/apis/apps/v1/deployments",
        "/api/v1/services",
        "/api/v1/configmaps",
        "/api/v1/serviceaccounts",
        "/apis/autoscaling/v2/horizontalpodautoscalers",
    ] {
        let watched = || {
            let api = api.lock().expect("mock state");
            api.held_watches
                .iter()
                .any(|(uri, _)| uri.starts_with(&format!("{path}?")) && uri.contains(selector))
        };
        eventually(path, watched).await;
    }

    // Someone deletes the Deployment: the watch reports it, the Gateway is reconciled again.
    let deployment_watch = {
        let mut api = api.lock().expect("mock state");
        let i = api
            .held_watches
            .iter()
            .position(|(uri, _)| uri.starts_with("/apis/apps/v1/deployments?"))
            .expect("a deployment watch");
        api.held_watches.remove(i).1
    };
    let deleted = json!({
        "type": "DELETED",
        "object": {
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "gw", "namespace": "edge", "uid": "d-uid", "resourceVersion": "11",
                "ownerReferences": [{
                    "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Gateway",
                    "name": "gw", "uid": "u-1", "controller": true, "blockOwnerDeletion": true
                }]
            }
        }
    });
    let mut line = serde_json::to_vec(&deleted).expect("json");
    line.push(b'\n');
    deployment_watch.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(line))
            .expect("response"),
    );
    eventually("the re-apply", || count(&api, "PATCH", DEPLOY) == 2).await;

    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), operator)
        .await
        .expect("the operator stops on shutdown")
        .expect("operator task");
}

#[tokio::test]
async fn a_namespaced_operator_lists_and_watches_its_namespace_only() {
    let gateways = json!({
        "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "GatewayList",
        "metadata": {"resourceVersion": "10"},
        "items": [gateway(json!({}))]
    });
    let (client, api) = mock_cluster(vec![
        (
            "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/edge/gateways",
            gateways,
        ),
        ("/apis/apps/v1/namespaces/edge/deployments", metadata_list()),
        ("/api/v1/namespaces/edge/services", metadata_list()),
        ("/api/v1/namespaces/edge/configmaps", metadata_list()),
        ("/api/v1/namespaces/edge/serviceaccounts", metadata_list()),
        (
            "/apis/autoscaling/v2/namespaces/edge/horizontalpodautoscalers",
            metadata_list(),
        ),
    ]);
    let settings = OperatorSettings {
        namespace: Some("edge".into()),
        ..settings()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(super::run(
        client,
        settings,
        super::GatewayReports::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("the apply", || count(&api, "PATCH", DEPLOY) == 1).await;
    eventually("six watches", || {
        api.lock().expect("mock state").held_watches.len() == 6
    })
    .await;
    let calls = api.lock().expect("mock state").calls.clone();
    for call in calls.iter().filter(|c| c.method == "GET") {
        assert!(
            call.uri.contains("/namespaces/edge/"),
            "outside the namespace: {}",
            call.uri
        );
    }
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), operator)
        .await
        .expect("the operator stops on shutdown")
        .expect("operator task");
}

// Gateway API Gateways.

use super::gateway_api_controller::{self, Outcome};

fn api_gateway(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "edge", "uid": "u-9", "generation": 1},
        "spec": spec
    }))
    .expect("gateway")
}

fn gateway_class(controller: &str) -> Reply {
    Reply::Json(
        StatusCode::OK,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "sluice"},
            "spec": {"controllerName": controller}
        }),
    )
}

async fn reconcile_api(
    spec: Value,
    replies: Vec<Reply>,
) -> (Result<Outcome, OperatorError>, Vec<Call>) {
    let (client, server) = mock_api(replies);
    let result =
        gateway_api_controller::reconcile_gateway(&client, &settings(), &api_gateway(spec)).await;
    drop(client);
    let calls = server.await.expect("mock server");
    (result, calls)
}

fn api_spec() -> Value {
    json!({
        "gatewayClassName": "sluice",
        "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "dns", "port": 53, "protocol": "UDP"}
        ],
        "infrastructure": {"labels": {"team": "edge"}, "annotations": {"example.com/cost": "7"}}
    })
}

#[tokio::test]
async fn a_gateway_api_gateway_of_our_class_gets_the_workload() {
    let (result, calls) = reconcile_api(
        api_spec(),
        vec![
            gateway_class(crate::status::gateway_api::CONTROLLER_NAME),
            not_found(), // no Goma Gateway edge/gw
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            Reply::Echo,
            not_found(), // no HPA to remove
        ],
    )
    .await;
    assert_eq!(result.expect("applied"), Outcome::Applied(vec![]));
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.uri.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "GET",
                "/apis/gateway.networking.k8s.io/v1/gatewayclasses/sluice"
            ),
            (
                "GET",
                "/apis/gateway.jkaninda.dev/v1alpha1/namespaces/edge/gateways/gw"
            ),
            (
                "PATCH",
                &*format!("/api/v1/namespaces/edge/serviceaccounts/gw?{APPLY}")
            ),
            (
                "PATCH",
                &*format!("/api/v1/namespaces/edge/configmaps/gw-bootstrap?{APPLY}")
            ),
            (
                "PATCH",
                &*format!("/api/v1/namespaces/edge/services/gw?{APPLY}")
            ),
            (
                "PATCH",
                &*format!("/apis/apps/v1/namespaces/edge/deployments/gw?{APPLY}")
            ),
            (
                "GET",
                "/apis/autoscaling/v2/namespaces/edge/horizontalpodautoscalers/gw"
            ),
        ]
    );
    let owner = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": "gw",
        "uid": "u-9",
        "controller": true,
        "blockOwnerDeletion": true
    }]);
    for call in &calls[2..6] {
        assert_eq!(call.content_type, APPLY_PATCH);
        assert_eq!(
            call.body["metadata"]["ownerReferences"], owner,
            "{}",
            call.uri
        );
        assert_eq!(call.body["metadata"]["labels"]["team"], "edge");
        assert_eq!(
            call.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "sluice"
        );
        assert_eq!(
            call.body["metadata"]["annotations"]["example.com/cost"], "7",
            "{}",
            call.uri
        );
    }
    assert_eq!(calls[3].body["data"]["SLUICE_GATEWAY"], "edge/gw");
    let service = &calls[4].body["spec"];
    assert_eq!(service["type"], "LoadBalancer");
    assert_eq!(
        service["ports"],
        json!([
            {"name": "tcp-80", "port": 80, "targetPort": "tcp-80", "protocol": "TCP"},
            {"name": "udp-53", "port": 53, "targetPort": "udp-53", "protocol": "UDP"}
        ])
    );
    let pod = &calls[5].body["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["ports"],
        json!([
            {"name": "tcp-80", "containerPort": 80, "protocol": "TCP"},
            {"name": "udp-53", "containerPort": 53, "protocol": "UDP"},
            {"name": "admin", "containerPort": 9901, "protocol": "TCP"}
        ])
    );
    assert_eq!(
        pod["securityContext"]["sysctls"],
        json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}])
    );
    assert_eq!(
        calls[5].body["spec"]["template"]["metadata"]["labels"]["team"],
        "edge"
    );
}

#[tokio::test]
async fn a_gateway_of_another_class_is_not_applied_and_loses_only_what_it_controls() {
    let controlled = |kind: &str, api_version: &str, uid: &str| {
        Reply::Json(
            StatusCode::OK,
            json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": "gw", "namespace": "edge", "uid": uid,
                    "ownerReferences": [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "gw", "uid": "u-9", "controller": true}]}
            }),
        )
    };
    let foreign = Reply::Json(
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "gw", "namespace": "edge", "uid": "s-1"}}),
    );
    let (result, calls) = reconcile_api(
        api_spec(),
        vec![
            gateway_class("example.com/other"),
            controlled("Deployment", "apps/v1", "d-1"),
            Reply::Json(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            not_found(), // HPA
            foreign,     // a Service of the same name someone else made: left alone
            not_found(), // ConfigMap
            not_found(), // ServiceAccount
        ],
    )
    .await;
    assert_eq!(result.expect("ok"), Outcome::NotOurs { removed: true });
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.uri.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "GET",
                "/apis/gateway.networking.k8s.io/v1/gatewayclasses/sluice"
            ),
            ("GET", "/apis/apps/v1/namespaces/edge/deployments/gw"),
            ("DELETE", "/apis/apps/v1/namespaces/edge/deployments/gw?"),
            (
                "GET",
                "/apis/autoscaling/v2/namespaces/edge/horizontalpodautoscalers/gw"
            ),
            ("GET", "/api/v1/namespaces/edge/services/gw"),
            ("GET", "/api/v1/namespaces/edge/configmaps/gw-bootstrap"),
            ("GET", "/api/v1/namespaces/edge/serviceaccounts/gw"),
        ]
    );
    assert_eq!(calls[2].body["preconditions"]["uid"], "d-1");
    assert!(
        calls.iter().all(|c| !c.uri.contains("gateways/gw")),
        "the Gateway is never touched"
    );
}

#[tokio::test]
async fn a_goma_gateway_of_the_same_name_keeps_the_id() {
    let (result, calls) = reconcile_api(
        api_spec(),
        vec![
            gateway_class(crate::status::gateway_api::CONTROLLER_NAME),
            Reply::Json(
                StatusCode::OK,
                json!({
                    "apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Gateway",
                    "metadata": {"name": "gw", "namespace": "edge", "uid": "g-1"}, "spec": {}
                }),
            ),
        ],
    )
    .await;
    assert_eq!(result.expect("ok"), Outcome::IdTaken);
    assert_eq!(calls.len(), 2, "nothing applied: {calls:?}");
}

#[tokio::test]
async fn a_missing_class_is_not_ours_and_an_unreadable_gateway_names_the_field() {
    let (result, calls) = reconcile_api(
        api_spec(),
        vec![
            not_found(),
            not_found(),
            not_found(),
            not_found(),
            not_found(),
            not_found(),
        ],
    )
    .await;
    assert_eq!(result.expect("ok"), Outcome::NotOurs { removed: false });
    assert_eq!(calls.len(), 6);

    let (result, calls) = reconcile_api(json!({"listeners": []}), vec![]).await;
    let err = result.expect_err("no class name");
    assert_eq!(
        err.to_string(),
        "Gateway.gateway.networking.k8s.io edge/gw: spec: missing field `gatewayClassName`"
    );
    assert!(!err.is_transient());
    assert!(calls.is_empty());
}
