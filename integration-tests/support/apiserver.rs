//! A small in-process Kubernetes API server for end-to-end tests of `--kubernetes` mode: no real
//! kube-apiserver can be installed on the machines this project is built on. It speaks the parts
//! of the API the control plane uses, the way the real one does: `/version`, list and watch
//! (JSON event lines, resourceVersion semantics, `fieldSelector` on Secret `type`), get, create,
//! replace with optimistic concurrency (409 on a stale resourceVersion), server-side apply
//! (`application/apply-patch+yaml`, 409 too when it names a stale resourceVersion) on objects
//! and on the `status` subresource (status-only writes do not bump `metadata.generation`), and
//! delete. New GatewayClasses and Gateways get the status their CRDs default ("Waiting for
//! controller"). TokenReview authenticates the ServiceAccount tokens tests register (with the
//! pod-name / pod-uid claims and audiences of a projected token). Objects are stored as JSON; every request is recorded so tests can assert what
//! the binary sent.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

type Body = BoxBody<Bytes, Infallible>;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// A stored object's place: (API prefix `/api/v1` or `/apis/G/V`, plural, namespace, name).
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    /// Every change, with its revision, for watches that start from an older one.
    history: Vec<(u64, Key, &'static str, Value)>,
    requests: Vec<Recorded>,
    /// Registered ServiceAccount tokens: token -> (TokenReview `status.user`, audiences).
    tokens: BTreeMap<String, (Value, Vec<String>)>,
}

#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(u64, Key, &'static str, Value)>,
    pub port: u16,
}

/// The parts of a request path.
struct Target {
    prefix: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl Target {
    /// Where the object `name` of this collection is stored.
    fn key(&self, name: &str) -> Key {
        (
            self.prefix.clone(),
            self.plural.clone(),
            self.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }
}

/// `metadata.generation` after a write of `spec`: 1 for a new object, bumped only when the spec
/// changed (as the API server does; status and metadata writes keep it).
fn next_generation(old: Option<&Value>, spec: &Value) -> Value {
    match old {
        None => json!(1),
        Some(old) if old["spec"] == *spec => old["metadata"]["generation"].clone(),
        Some(old) => json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1),
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segs.first()? {
        "api" => (format!("/api/{}", segs.get(1)?), &segs[2..]),
        "apis" => (
            format!("/apis/{}/{}", segs.get(1)?, segs.get(2)?),
            &segs[3..],
        ),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (plural, None, false),
        [plural, name] => (plural, Some(name.to_string()), false),
        [plural, name, "status"] => (plural, Some(name.to_string()), true),
        _ => return None,
    };
    Some(Target {
        prefix,
        plural: plural.to_string(),
        namespace,
        name,
        status,
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Percent-decodes a query parameter value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches_selector(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    decode(selector)
        .split(',')
        .all(|term| match term.split_once('=') {
            Some(("type", want)) => object["type"].as_str().unwrap_or("Opaque") == want,
            Some(("metadata.name", want)) => object["metadata"]["name"] == want,
            _ => true,
        })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("response")
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API server");
        let port = listener.local_addr().expect("addr").port();
        let server = FakeApiServer {
            state: Arc::default(),
            events: broadcast::channel(4096).0,
            port,
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: fake\n  user: {{token: test}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\n",
            self.port
        )
    }

    /// Creates or replaces an object (as `kubectl apply` would), from its manifest.
    pub fn apply(&self, manifest: Value) {
        let key = Self::key_of(&manifest).expect("manifest with apiVersion, kind and name");
        let mut st = self.state.lock().unwrap();
        let old = st.objects.get(&key);
        let mut object = manifest;
        object["metadata"]["generation"] = next_generation(old, &object["spec"]);
        if let Some(old) = old {
            object["status"] = old["status"].clone();
            // The same object, changed: its identity stays.
            object["metadata"]["uid"] = old["metadata"]["uid"].clone();
        }
        self.store(&mut st, key, object);
    }

    /// Sets the `status` of a stored object, as its own controller would (e.g. the load
    /// balancer's address on a Service); false when there is no such object.
    pub fn set_status(
        &self,
        prefix: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> bool {
        let key = (prefix.into(), plural.into(), namespace.into(), name.into());
        let mut st = self.state.lock().unwrap();
        let Some(mut object) = st.objects.get(&key).cloned() else {
            return false;
        };
        object["status"] = status;
        self.store(&mut st, key, object);
        true
    }

    pub fn delete(&self, manifest: &Value) {
        let key = Self::key_of(manifest).expect("manifest");
        self.remove(&mut self.state.lock().unwrap(), key);
    }

    /// The stored object, if any.
    pub fn get(&self, prefix: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (prefix.into(), plural.into(), namespace.into(), name.into());
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Registers a projected ServiceAccount token of `namespace/service_account`, bound to the
    /// pod `pod_name` (`pod_uid`) and valid for `audience`, for TokenReview.
    pub fn add_pod_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        pod_name: &str,
        pod_uid: &str,
        audience: &str,
    ) {
        let user = json!({
            "username": format!("system:serviceaccount:{namespace}:{service_account}"),
            "uid": format!("sa-uid-{service_account}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"),
                "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/pod-name": [pod_name],
                "authentication.kubernetes.io/pod-uid": [pod_uid],
            }
        });
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.to_owned(), (user, vec![audience.to_owned()]));
    }

    /// TokenReview as the API server answers it: unauthenticated for unknown tokens and for
    /// audiences the token was not issued for.
    fn token_review(&self, mut review: Value) -> Response<Body> {
        let token = review["spec"]["token"].as_str().unwrap_or("").to_owned();
        let wanted: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let known = self.state.lock().unwrap().tokens.get(&token).cloned();
        review["status"] = match known {
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
            Some((user, audiences)) => {
                let common: Vec<&String> = if wanted.is_empty() {
                    audiences.iter().collect()
                } else {
                    wanted.iter().filter(|a| audiences.contains(a)).collect()
                };
                if common.is_empty() {
                    json!({"authenticated": false,
                        "error": "invalid bearer token, token audiences are invalid"})
                } else {
                    json!({"authenticated": true, "user": user, "audiences": common})
                }
            }
        };
        json_response(StatusCode::CREATED, &review)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    fn key_of(object: &Value) -> Option<Key> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        let prefix = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let plural = plural_of(kind);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(if cluster_scoped(kind) { "" } else { "default" })
            .to_string();
        let name = object["metadata"]["name"].as_str()?.to_string();
        Some((prefix, plural, namespace, name))
    }

    /// Stores `object` under `key` with the next resourceVersion: an ADDED or MODIFIED event.
    fn store(&self, st: &mut State, key: Key, mut object: Value) {
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if kind == "ADDED" && object["status"].is_null() {
            object["status"] = default_status(&key);
        }
        st.revision += 1;
        let rv = st.revision;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}-{}", key.3, rv));
        }
        if !cluster_scoped(object["kind"].as_str().unwrap_or("")) {
            object["metadata"]["namespace"] = json!(key.2);
        }
        st.objects.insert(key.clone(), object.clone());
        self.event(st, rv, key, kind, object);
    }

    /// Removes the object under `key`, if any: a DELETED event.
    fn remove(&self, st: &mut State, key: Key) -> Option<Value> {
        let object = st.objects.remove(&key)?;
        st.revision += 1;
        let rv = st.revision;
        self.event(st, rv, key, "DELETED", object.clone());
        Some(object)
    }

    /// Records a change for watches that start from an older revision and wakes the open ones.
    fn event(&self, st: &mut State, rv: u64, key: Key, kind: &'static str, object: Value) {
        st.history.push((rv, key.clone(), kind, object.clone()));
        let _ = self.events.send((rv, key, kind, object));
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.state.lock().unwrap().requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if path == "/version" {
            return json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"}),
            );
        }
        let Some(t) = parse_path(&path) else {
            return status_error(StatusCode::NOT_FOUND, "NotFound", "no such path");
        };
        if method == Method::POST
            && t.prefix == "/apis/authentication.k8s.io/v1"
            && t.plural == "tokenreviews"
        {
            return self.token_review(body);
        }
        match (&method, &t.name) {
            (&Method::GET, None)
                if query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                self.watch(&t, &query)
            }
            (&Method::GET, None) => self.list(&t, &query),
            (&Method::GET, Some(name)) => {
                match self.get(
                    &t.prefix,
                    &t.plural,
                    t.namespace.as_deref().unwrap_or(""),
                    name,
                ) {
                    Some(o) => json_response(StatusCode::OK, &o),
                    None => status_error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{} {name} not found", t.plural),
                    ),
                }
            }
            (&Method::POST, None) => {
                let mut st = self.state.lock().unwrap();
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                let key = t.key(&name);
                if st.objects.contains_key(&key) {
                    return status_error(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{name} already exists"),
                    );
                }
                let mut object = body;
                object["metadata"]["generation"] = next_generation(None, &object["spec"]);
                self.store(&mut st, key.clone(), object);
                json_response(StatusCode::CREATED, &st.objects[&key])
            }
            (&Method::PUT, Some(name)) => {
                let mut st = self.state.lock().unwrap();
                let key = t.key(name);
                let Some(old) = st.objects.get(&key).cloned() else {
                    return status_error(StatusCode::NOT_FOUND, "NotFound", "not found");
                };
                let sent_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !sent_rv.is_empty()
                    && sent_rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                {
                    return status_error(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let mut object = body;
                object["metadata"]["generation"] = old["metadata"]["generation"].clone();
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                self.store(&mut st, key.clone(), object);
                json_response(StatusCode::OK, &st.objects[&key])
            }
            (&Method::PATCH, Some(name)) => {
                let mut st = self.state.lock().unwrap();
                let key = t.key(name);
                let existing = st.objects.get(&key).cloned();
                // An apply that names a resourceVersion is a precondition, as with PUT.
                let sent_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !sent_rv.is_empty()
                    && existing.as_ref().is_some_and(|o| {
                        o["metadata"]["resourceVersion"].as_str().unwrap_or("") != sent_rv
                    })
                {
                    return status_error(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let object = match (existing, t.status) {
                    (None, true) => {
                        return status_error(StatusCode::NOT_FOUND, "NotFound", "not found");
                    }
                    (Some(mut o), true) => {
                        o["status"] = body["status"].clone();
                        o
                    }
                    (old, false) => {
                        let mut merged = body.clone();
                        merged["metadata"]["generation"] =
                            next_generation(old.as_ref(), &body["spec"]);
                        if let Some(o) = old {
                            merged["metadata"]["uid"] = o["metadata"]["uid"].clone();
                            merged["status"] = o["status"].clone();
                        }
                        merged
                    }
                };
                self.store(&mut st, key.clone(), object);
                json_response(StatusCode::OK, &st.objects[&key])
            }
            (&Method::DELETE, Some(name)) => {
                let mut st = self.state.lock().unwrap();
                let key = t.key(name);
                match self.remove(&mut st, key) {
                    Some(o) => json_response(StatusCode::OK, &o),
                    None => status_error(StatusCode::NOT_FOUND, "NotFound", "not found"),
                }
            }
            _ => status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake",
            ),
        }
    }

    fn in_collection(t: &Target, key: &Key) -> bool {
        key.0 == t.prefix && key.1 == t.plural && t.namespace.as_ref().is_none_or(|ns| *ns == key.2)
    }

    fn list(&self, t: &Target, query: &str) -> Response<Body> {
        let st = self.state.lock().unwrap();
        let selector = query_param(query, "fieldSelector");
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, o)| Self::in_collection(t, k) && matches_selector(o, selector))
            .map(|(_, o)| o.clone())
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": st.revision.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(&self, t: &Target, query: &str) -> Response<Body> {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let selector = query_param(query, "fieldSelector").map(str::to_owned);
        let target = Target {
            prefix: t.prefix.clone(),
            plural: t.plural.clone(),
            namespace: t.namespace.clone(),
            name: None,
            status: false,
        };
        let mut rx = self.events.subscribe();
        let backlog: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|(rv, ..)| *rv > since)
            .cloned()
            .collect();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        tokio::spawn(async move {
            let line = |kind: &str, object: &Value| {
                Ok(Frame::data(Bytes::from(format!(
                    "{}\n",
                    json!({"type": kind, "object": object})
                ))))
            };
            let mut last = since;
            for (rv, key, kind, object) in backlog {
                if Self::in_collection(&target, &key)
                    && matches_selector(&object, selector.as_deref())
                    && tx.send(line(kind, &object)).await.is_err()
                {
                    return;
                }
                last = rv;
            }
            loop {
                match rx.recv().await {
                    Ok((rv, key, kind, object)) => {
                        if rv <= last {
                            continue;
                        }
                        last = rv;
                        if Self::in_collection(&target, &key)
                            && matches_selector(&object, selector.as_deref())
                            && tx.send(line(kind, &object)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(out);
        Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("response")
    }
}

/// The `status` the v1.6 CRDs default on a new GatewayClass or Gateway, as the API server
/// stores it before any controller writes: every condition Unknown, "Waiting for controller".
fn default_status(key: &Key) -> Value {
    let types: &[&str] = match (key.0.as_str(), key.1.as_str()) {
        ("/apis/gateway.networking.k8s.io/v1", "gatewayclasses") => &["Accepted"],
        ("/apis/gateway.networking.k8s.io/v1", "gateways") => &["Accepted", "Programmed"],
        _ => return Value::Null,
    };
    let conditions: Vec<Value> = types
        .iter()
        .map(|type_| {
            json!({"type": type_, "status": "Unknown", "reason": "Pending",
                   "message": "Waiting for controller", "lastTransitionTime": "1970-01-01T00:00:00Z"})
        })
        .collect();
    json!({ "conditions": conditions })
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace" | "GatewayClass" | "CustomResourceDefinition"
    )
}

fn plural_of(kind: &str) -> String {
    match kind {
        "Gateway" => "gateways".into(),
        "Route" => "routes".into(),
        "Middleware" => "middlewares".into(),
        "Secret" => "secrets".into(),
        "Service" => "services".into(),
        "Namespace" => "namespaces".into(),
        "EndpointSlice" => "endpointslices".into(),
        "Lease" => "leases".into(),
        "Deployment" => "deployments".into(),
        "ConfigMap" => "configmaps".into(),
        "ServiceAccount" => "serviceaccounts".into(),
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers".into(),
        "HTTPRoute" => "httproutes".into(),
        "GRPCRoute" => "grpcroutes".into(),
        "GatewayClass" => "gatewayclasses".into(),
        "BackendTLSPolicy" => "backendtlspolicies".into(),
        other => format!("{}s", other.to_lowercase()),
    }
}
