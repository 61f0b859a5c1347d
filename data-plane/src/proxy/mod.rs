//! The per-request proxy: route lookup on the request's snapshot, local answers (404 or gRPC
//! UNIMPLEMENTED, 405, direct responses, redirects, CORS preflights), path and host rewrite,
//! header handling (forwarding headers, the route's header modifiers, CORS headers) and
//! mirrors; `forward` picks backends and endpoints and sends the attempts.

pub mod client_ip;
pub mod exploit;
pub mod forward;
pub mod headers;
mod lent_body;
mod mirror;
mod prefix;
pub mod report;
pub mod response;
pub mod upgrade;

pub use headers::Peer;
use prefix::PrefixedBody;
pub use report::{Report, UpstreamFailure};
pub use response::ProxyBody;
use upgrade::ClientUpgrade;

use crate::middleware::body_limit::{self, LimitedBody};
use crate::middleware::{RequestCtx, ResponseCtx};
use crate::router::cors::Cors;
use crate::router::host::request_host_and_header;
use crate::router::redirect::RedirectRequest;
use crate::router::route::Forward;
use crate::router::{CompiledRoute, Lookup, NormalizedHost, PathMatcher, RequestView, RouteAction};
use crate::snapshot::Snapshot;
use crate::tls::TlsConnection;
use crate::upstream::client::BoxError;
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::Body;
use std::net::IpAddr;
use std::sync::Arc;
use upgrade::websocket_h2::Prepared;

/// Longer request targets get 414 (well below the 64 KiB header bound, which gives 431).
pub const MAX_URI_LEN: usize = 16 * 1024;

/// Serves one request on `snapshot` (loaded once by the caller and kept for the whole request).
/// `tls` describes the client connection when it is TLS.
pub async fn handle<B>(
    snapshot: Arc<Snapshot>,
    port: u16,
    client: Peer,
    tls: Option<&TlsConnection>,
    req: Request<B>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    let mut report = Report::default();
    handle_reporting(snapshot, port, client, tls, req, &mut report).await
}

/// [`handle`], also reporting what it learned about the request into `report`.
pub async fn handle_reporting<B>(
    snapshot: Arc<Snapshot>,
    port: u16,
    client: Peer,
    tls: Option<&TlsConnection>,
    mut req: Request<B>,
    report: &mut Report,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    // Forwarding is written out here, not in an `async fn` of its own: one more level of future
    // would hold, and copy, the whole request's state.
    let Routed {
        route,
        plan,
        origin,
        original_host,
        cors_origin,
        host,
        websocket,
    } = match route_request(&snapshot, port, &client, tls, &mut req, report) {
        Ok(routed) => routed,
        Err(resp) => return resp,
    };
    let client_ip = origin.client;
    let mut resp = match plan {
        Plan::Local(resp) => resp,
        Plan::Forward {
            pinned,
            path_and_query,
        } => 'forward: {
            let RouteAction::Forward(forward) = &route.action else {
                break 'forward response::upstream_error();
            };
            let Outbound {
                mut parts,
                body,
                upgrade,
                request_id,
                client_uri,
                host_preserved,
            } = outbound(
                &route,
                forward,
                path_and_query,
                origin,
                &client,
                tls.is_some(),
                original_host,
                req,
            );
            // Every answer from here on carries the request id: the client can quote it.
            let mut resp = 'answer: {
                // Middlewares and the body check may wait (an auth call, the body's first
                // bytes): each waits boxed, and only on routes that have it, so that its state
                // does not size, and is not moved with, every request's.
                let mut ran = None;
                if !route.middlewares.is_empty() {
                    let mut ctx = RequestCtx::new(
                        &snapshot,
                        &route,
                        &mut parts,
                        &client_uri,
                        host.as_deref().unwrap_or_default(),
                        if tls.is_some() { "https" } else { "http" },
                        port,
                        client_ip,
                    );
                    let (mut done, answer) = Box::pin(route.middlewares.request(&mut ctx)).await;
                    if let Some(mut answer) = answer {
                        let ctx = ResponseCtx {
                            client_uri: &client_uri,
                            method: &parts.method,
                            from_upstream: false,
                        };
                        route.middlewares.response(&mut done, &ctx, &mut answer);
                        report.log_fields = std::mem::take(&mut done.log_fields);
                        break 'answer answer;
                    }
                    ran = Some(done);
                }
                let body = mirror::start(
                    &snapshot,
                    &route.name,
                    &route.mirrors,
                    &parts,
                    host_preserved,
                    body,
                );
                let body = if route.exploit_protection {
                    match Box::pin(inspect_body(&route, client_ip, &parts.headers, body)).await {
                        Ok(body) => body,
                        Err(blocked) => break 'answer blocked,
                    }
                } else {
                    PrefixedBody::unread(body)
                };
                // bodyLimit: counted as it streams (a declared length was checked by the
                // middleware).
                let (body, body_too_large) =
                    LimitedBody::new(body, ran.as_ref().and_then(|r| r.body_limit));
                let method = ran.as_ref().map(|_| parts.method.clone());
                let attempts = forward::forward(
                    &snapshot,
                    &route.name,
                    forward,
                    pinned,
                    parts,
                    body,
                    upgrade,
                    host_preserved,
                    report,
                );
                let mut resp = match forward.timeout {
                    None => attempts.await,
                    Some(limit) => match tokio::time::timeout(limit, attempts).await {
                        Ok(resp) => resp,
                        Err(_) => {
                            report.failure = Some(UpstreamFailure::Timeout);
                            tracing::warn!(route = %route.name, timeout = ?limit, "request timeout (retries included)");
                            response::timeout()
                        }
                    },
                };
                if body_too_large.is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire))
                    && !report.upstream_responded
                {
                    tracing::debug!(route = %route.name, client = %client_ip, "request body passed its limit: upstream request aborted");
                    resp = body_limit::too_large();
                }
                if let (Some(mut done), Some(method)) = (ran, method) {
                    let ctx = ResponseCtx {
                        client_uri: &client_uri,
                        method: &method,
                        from_upstream: report.upstream_responded,
                    };
                    route.middlewares.response(&mut done, &ctx, &mut resp);
                    report.log_fields = done.log_fields;
                }
                resp
            };
            resp.headers_mut()
                .insert(headers::X_GOMA_REQUEST_ID.clone(), request_id);
            resp
        }
    };
    if let Some(cors) = &route.cors {
        cors.decorate(cors_origin.as_ref(), resp.headers_mut());
    }
    route.response_headers.apply(resp.headers_mut());
    if websocket {
        upgrade::websocket_h2::answer(resp)
    } else {
        resp
    }
}

/// What routing decided for a request the route answers (locally or from upstream).
struct Routed {
    route: Arc<CompiledRoute>,
    plan: Plan,
    origin: headers::Origin,
    original_host: Option<HeaderValue>,
    /// The client's Origin, kept for a route with CORS.
    cors_origin: Option<HeaderValue>,
    /// The normalized host, kept for a route with middlewares.
    host: Option<Box<str>>,
    /// An HTTP/2 WebSocket: the answer is turned back at the end.
    websocket: bool,
}

/// Matches `req` to a route on `port` and decides its plan. An `Err` is the answer already: a
/// refusal (4xx) or 404, to be sent as it is.
// One call site, inlined into it: the answer is not moved more for being in a `Result`.
#[allow(clippy::result_large_err)]
#[inline]
fn route_request<B: Body>(
    snapshot: &Snapshot,
    port: u16,
    client: &Peer,
    tls: Option<&TlsConnection>,
    req: &mut Request<B>,
    report: &mut Report,
) -> Result<Routed, Response<ProxyBody>> {
    // An HTTP/2 WebSocket (extended CONNECT) is served as the HTTP/1.1 upgrade it stands for,
    // and its answer turned back at the end. The refusals below pass unchanged.
    let websocket = match upgrade::websocket_h2::prepare(req) {
        Prepared::Other => false,
        Prepared::WebSocket => true,
        Prepared::Unsupported => return Err(upgrade::websocket_h2::unsupported()),
    };
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_LEN {
        return Err(response::uri_too_long());
    }
    let Some(index) = snapshot.port(port) else {
        return Err(not_found(req.headers(), websocket));
    };
    let origin = {
        let peer = client.addr.ip().to_canonical();
        let trusted = &snapshot.server_settings(port).trusted_proxies;
        let peer_trusted = trusted.contains(peer);
        headers::Origin {
            peer,
            peer_trusted,
            client: if peer_trusted {
                trusted.client_ip(peer, req.headers())
            } else {
                peer
            },
        }
    };
    let client_ip = origin.client;
    report.client_ip = Some(client_ip);

    let (raw_host, host_header) = request_host_and_header(req.uri(), req.headers());
    let host = NormalizedHost::new(raw_host);
    if let Some(tls) = tls
        && !tls.serves(snapshot, port, host.as_str())
    {
        return Err(response::misdirected());
    }
    let view = RequestView::new(req, &host, client_ip);
    let entry = match index.lookup(&view) {
        Lookup::Matched(e) => e,
        Lookup::MethodNotAllowed(r) => {
            report.matched(r);
            return Err(response::method_not_allowed(r.allow.as_ref()));
        }
        Lookup::NotFound => return Err(not_found(req.headers(), websocket)),
    };
    let route = &entry.route;
    report.matched(route);
    if route.exploit_protection
        && let Some(found) = exploit::check_uri(view.path, view.query)
    {
        log_blocked(route, client_ip, found);
        return Err(response::blocked());
    }
    let matched_prefix = match &route.matches[entry.match_idx].path {
        PathMatcher::Prefix(p) => Some(&**p),
        _ => None,
    };
    let preflight = route.cors.is_some() && Cors::is_preflight(req.method(), req.headers());
    // Only a route with CORS keeps the Origin (a refcount bump) for its response; a
    // preflight answer already carries its CORS headers.
    let cors_origin = route
        .cors
        .as_ref()
        .filter(|_| !preflight)
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let plan = match (&route.cors, &route.action) {
        (Some(cors), _) if preflight => {
            Plan::Local(response::preflight(cors.preflight(req.headers())))
        }
        (_, RouteAction::Direct(d)) => Plan::Local(response::direct(d)),
        (_, RouteAction::Redirect(r)) => {
            let location = r.location(&RedirectRequest {
                scheme: if tls.is_some() { "https" } else { "http" },
                host: host.as_str(),
                port,
                path: view.path,
                query: view.query,
                matched_prefix,
            });
            Plan::Local(match location {
                Some(l) => response::redirect(r.status, l),
                None => response::bad_request(),
            })
        }
        (_, RouteAction::Forward(f)) => Plan::Forward {
            pinned: f.backends.pinned(&view),
            path_and_query: match &f.rewrite {
                None => req.uri().path_and_query().cloned(),
                Some(rw) => {
                    let new = rw.apply(view.path, view.query, matched_prefix);
                    PathAndQuery::from_maybe_shared(Bytes::from(new)).ok()
                }
            },
        },
    };
    let original_host = original_host(raw_host, host_header);
    // Middlewares read the host; routes without any skip the copy.
    let host = (!route.middlewares.is_empty()).then(|| Box::<str>::from(host.as_str()));
    Ok(Routed {
        route: route.clone(),
        plan,
        origin,
        original_host,
        cors_origin,
        host,
        websocket,
    })
}

/// What a routed request gets.
enum Plan {
    /// The gateway's own answer.
    Local(Response<ProxyBody>),
    Forward {
        pinned: u64,
        path_and_query: Option<PathAndQuery>,
    },
}

/// No route: 404, or for a gRPC request the gRPC status UNIMPLEMENTED (never for a WebSocket
/// handshake, whose 2xx would mean the tunnel is open).
fn not_found(headers: &http::HeaderMap, websocket: bool) -> Response<ProxyBody> {
    let grpc = !websocket
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        response::grpc_unimplemented()
    } else {
        response::not_found()
    }
}

/// A request made ready for the upstream.
struct Outbound<B> {
    /// `uri` holds the path and query to send.
    parts: Parts,
    body: B,
    /// The protocol switch the client asked for, offered per attempt to HTTP/1.1 upstreams.
    upgrade: Option<ClientUpgrade>,
    request_id: HeaderValue,
    /// The URI as the client sent it.
    client_uri: Uri,
    /// `parts` carries the Host to send (the client's or the route's rewrite).
    host_preserved: bool,
}

/// Prepares the request for the upstream: hop-by-hop headers out, forwarding headers and the
/// request id in, the route's header modifier, the Host to keep and the path to send.
#[allow(clippy::too_many_arguments)]
fn outbound<B>(
    route: &CompiledRoute,
    forward: &Forward,
    path_and_query: Option<PathAndQuery>,
    origin: headers::Origin,
    client: &Peer,
    client_tls: bool,
    original_host: Option<HeaderValue>,
    req: Request<B>,
) -> Outbound<B> {
    let (mut parts, body) = req.into_parts();
    let upgrade = upgrade::take_request(&mut parts);
    headers::strip_hop_by_hop(&mut parts.headers, true);
    headers::add_forwarded(
        &mut parts.headers,
        origin,
        &client.ip_value,
        original_host.clone(),
        client_tls,
    );
    // Only a trusted proxy's id is kept: anyone else's is not even looked up.
    let supplied = origin
        .peer_trusted
        .then(|| parts.headers.get(&headers::X_GOMA_REQUEST_ID))
        .flatten();
    let request_id = headers::request_id(supplied, origin.peer_trusted);
    parts
        .headers
        .insert(headers::X_GOMA_REQUEST_ID.clone(), request_id.clone());
    route.request_headers.apply(&mut parts.headers);
    // HTTP/2 clients send no Host header; carry their :authority as Host. Otherwise each attempt
    // sets its endpoint's authority. A rewritten host wins over both.
    let kept_host = match &forward.host_rewrite {
        Some(h) => Some(h.clone()),
        None if forward.preserve_host => original_host,
        None => None,
    };
    let host_preserved = kept_host.is_some();
    if let Some(h) = kept_host {
        parts.headers.insert(header::HOST, h);
    }
    let client_uri = std::mem::replace(
        &mut parts.uri,
        Uri::from(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"))),
    );
    Outbound {
        parts,
        body,
        upgrade,
        request_id,
        client_uri,
        host_preserved,
    }
}

/// The host the client asked for, as a header value: the Host header itself when that is where
/// it came from (no copy), else the URI's authority (HTTP/2).
fn original_host(raw_host: &str, host_header: Option<&HeaderValue>) -> Option<HeaderValue> {
    if raw_host.is_empty() {
        return None;
    }
    match host_header {
        Some(host) => Some(host.clone()),
        None => HeaderValue::from_str(raw_host).ok(),
    }
}

fn log_blocked(route: &CompiledRoute, client_ip: IpAddr, found: exploit::Finding) {
    tracing::warn!(
        route = %route.name,
        client = %client_ip,
        check = found.check,
        location = found.location,
        "request blocked by exploit protection"
    );
}

/// Checks the first [`exploit::BODY_PREFIX_LIMIT`] bytes of a form, JSON, text or XML body; the
/// body then streams on whole. Other bodies pass unread.
async fn inspect_body<B>(
    route: &CompiledRoute,
    client_ip: IpAddr,
    headers: &http::HeaderMap,
    body: B,
) -> Result<PrefixedBody<B>, Response<ProxyBody>>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(exploit::BodyKind::of);
    let Some(kind) = kind.filter(|_| !body.is_end_stream()) else {
        return Ok(PrefixedBody::unread(body));
    };
    let (seen, body) = match prefix::read_prefix(body, exploit::BODY_PREFIX_LIMIT).await {
        Ok(read) => read,
        Err(error) => {
            tracing::debug!(route = %route.name, %error, "request body read failed");
            return Err(response::bad_request());
        }
    };
    if let Some(found) = exploit::check_body(kind, &seen) {
        log_blocked(route, client_ip, found);
        return Err(response::blocked());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::Compiler;
    use http::{Method, StatusCode};
    use http_body_util::{BodyExt, Full};
    use sluice_proto::config as pb;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const PORT: u16 = 8080;

    fn client() -> SocketAddr {
        "192.0.2.10:5555".parse().unwrap()
    }

    fn route(name: &str, path: &str, action: pb::route::Action) -> pb::Route {
        pb::Route {
            name: name.into(),
            listeners: vec!["http".into()],
            matches: vec![pb::RouteMatch {
                path: Some(pb::PathMatch {
                    kind: pb::path_match::Kind::Prefix as i32,
                    value: path.into(),
                }),
                ..Default::default()
            }],
            action: Some(action),
            ..Default::default()
        }
    }

    fn forward(backends: Vec<pb::WeightedBackend>, timeout_ms: Option<i32>) -> pb::route::Action {
        pb::route::Action::Forward(pb::ForwardAction {
            backends,
            timeout: timeout_ms.map(|ms| prost_types::Duration {
                seconds: i64::from(ms / 1000),
                nanos: (ms % 1000) * 1_000_000,
            }),
            ..Default::default()
        })
    }

    fn backend(cluster: &str, exclusive: bool) -> pb::WeightedBackend {
        pb::WeightedBackend {
            cluster: cluster.into(),
            weight: 1,
            exclusive,
            r#match: if exclusive {
                vec![pb::BackendMatch {
                    name: "x-canary".into(),
                    value: Some(pb::StringMatch {
                        value: "1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn snapshot(silent: SocketAddr, routes: Vec<pb::Route>) -> Arc<Snapshot> {
        let mut res = Resources::default();
        let silent_ip = silent.ip().to_string();
        res.add_http_listener("http", PORT)
            .add_cluster("silent", &[(&silent_ip, silent.port())])
            .add_cluster("empty", &[]);
        for r in routes {
            res.routes.insert(r.name.clone(), Arc::new(r));
        }
        Compiler::new().compile(&res)
    }

    async fn call(
        snap: &Arc<Snapshot>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<ProxyBody> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "h.example.com");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Full::new(Bytes::new()).map_err(|never: Infallible| match never {});
        handle(
            snap.clone(),
            PORT,
            client().into(),
            None,
            req.body(body).unwrap(),
        )
        .await
    }

    async fn body(resp: Response<ProxyBody>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Accepts connections and reads forever without answering.
    async fn silent_backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn local_answers_and_errors() {
        let silent = silent_backend().await;
        let mut limited = route(
            "limited",
            "/limited",
            pb::route::Action::DirectResponse(pb::DirectResponse {
                status: 204,
                ..Default::default()
            }),
        );
        limited.allowed_methods = vec!["GET".into(), "PUT".into()];
        let snap = snapshot(
            silent,
            vec![
                route(
                    "slow",
                    "/slow",
                    forward(vec![backend("silent", false)], Some(100)),
                ),
                route(
                    "canary-only",
                    "/canary",
                    // A timeout turns a wrong pick into a failure rather than a hang.
                    forward(vec![backend("silent", true)], Some(2000)),
                ),
                route(
                    "empty",
                    "/empty",
                    forward(vec![backend("empty", false)], None),
                ),
                route(
                    "direct",
                    "/direct",
                    pb::route::Action::DirectResponse(pb::DirectResponse {
                        status: 418,
                        body: "teapot".into(),
                        content_type: "text/x-tea".into(),
                    }),
                ),
                limited,
            ],
        );

        let resp = call(&snap, Method::GET, "/slow/x", &[]).await;
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body(resp).await, "upstream timeout\n");

        // Unpinned traffic never reaches the exclusive backend, and there is no other.
        let resp = call(&snap, Method::GET, "/canary", &[]).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(resp).await, "no healthy upstream\n");
        let resp = call(&snap, Method::GET, "/empty", &[]).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

        let resp = call(&snap, Method::GET, "/direct", &[]).await;
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/x-tea");
        assert_eq!(body(resp).await, "teapot");

        let resp = call(&snap, Method::GET, "/limited", &[]).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let resp = call(&snap, Method::POST, "/limited", &[]).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, PUT");

        let resp = call(&snap, Method::GET, "/nothing", &[]).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(resp).await, "no route\n");

        // A port without listeners answers 404 too.
        let resp = handle(
            snap.clone(),
            PORT + 1,
            client().into(),
            None,
            Request::new(Full::new(Bytes::new()).map_err(|never: Infallible| match never {})),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    /// An HTTP/2 WebSocket is routed as the GET upgrade it stands for; what cannot become its
    /// tunnel never answers it with a 2xx (which in HTTP/2 would mean the tunnel is open).
    #[tokio::test]
    async fn websocket_over_h2_is_routed_as_a_get_and_never_falsely_accepted() {
        let (silent, plain) = (silent_backend().await, header_echo("plain").await);
        let mut res = Resources::default();
        res.add_http_listener("http", PORT)
            .add_cluster("plain", &[("127.0.0.1", plain.port())])
            .add_cluster("h2", &[("127.0.0.1", silent.port())]);
        let mut h2 = res.clusters.get("h2").expect("held");
        h2.protocol = pb::UpstreamProtocol::H2c as i32;
        res.clusters.insert("h2".into(), Arc::new(h2));
        let mut get_only = route(
            "get-only",
            "/ws",
            forward(vec![backend("plain", false)], None),
        );
        get_only.allowed_methods = vec!["GET".into()];
        let direct = |status| {
            pb::route::Action::DirectResponse(pb::DirectResponse {
                status,
                body: "local".into(),
                ..Default::default()
            })
        };
        for r in [
            get_only,
            route("h2", "/h2", forward(vec![backend("h2", false)], Some(2000))),
            route("direct", "/direct", direct(200)),
            route("teapot", "/teapot", direct(418)),
        ] {
            res.routes.insert(r.name.clone(), Arc::new(r));
        }
        let snap = Compiler::new().compile(&res);
        let websocket = |path: &str, protocol: &'static str| {
            let mut req = Request::builder()
                .method(Method::CONNECT)
                .version(http::Version::HTTP_2)
                .uri(format!("http://h.example.com{path}"))
                .header("sec-websocket-version", "13")
                .body(Full::new(Bytes::new()).map_err(|never: Infallible| match never {}))
                .unwrap();
            req.extensions_mut()
                .insert(hyper::ext::Protocol::from_static(protocol));
            req.extensions_mut()
                .insert(hyper::upgrade::on(Request::new(())));
            handle(snap.clone(), PORT, client().into(), None, req)
        };

        // Matched as a GET (else 405); the backend ignores the upgrade and answers 200.
        let resp = websocket("/ws", "websocket").await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()["x-goma-request-id"].len(), 32);
        assert_eq!(body(resp).await, "upstream did not switch to WebSocket\n");
        // Never sent to an HTTP/2 cluster as a plain GET (the silent backend would time out).
        let resp = websocket("/h2", "websocket").await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(body(resp).await, "WebSocket needs an HTTP/1.1 upstream\n");
        assert_eq!(
            websocket("/direct", "websocket").await.status(),
            StatusCode::BAD_GATEWAY
        );
        let resp = websocket("/teapot", "websocket").await;
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(body(resp).await, "local");
        let resp = websocket("/ws", "connect-udp").await;
        assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
        // Unrouted: 404 even when it claims to be gRPC (whose "unimplemented" is a 200).
        let mut grpc = Request::builder()
            .method(Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri("http://h.example.com/nowhere")
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::new()).map_err(|never: Infallible| match never {}))
            .unwrap();
        grpc.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        grpc.extensions_mut()
            .insert(hyper::upgrade::on(Request::new(())));
        let resp = handle(snap.clone(), PORT, client().into(), None, grpc).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    /// Answers `name|x-forwarded-for|x-real-ip|x-goma-request-id`.
    async fn header_echo(name: &'static str) -> SocketAddr {
        use hyper_util::rt::TokioIo;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let body = format!(
                        "{name}|{}|{}|{}",
                        h("x-forwarded-for"),
                        h("x-real-ip"),
                        h("x-goma-request-id")
                    );
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn client_ip_behind_trusted_proxies() {
        let (main, pinned) = (header_echo("main").await, header_echo("pinned").await);
        let mut res = Resources::default();
        let mut listener = pb::Listener {
            name: "http".into(),
            port: u32::from(PORT),
            protocol: pb::Protocol::Http as i32,
            ..Default::default()
        };
        listener.http = Some(pb::HttpSettings {
            trusted_proxies: vec!["192.0.2.0/24".into(), "10.0.0.0/8".into()],
            ..Default::default()
        });
        res.listeners.insert("http".into(), Arc::new(listener));
        res.add_cluster("main", &[("127.0.0.1", main.port())])
            .add_cluster("pinned", &[("127.0.0.1", pinned.port())]);
        let pin = pb::WeightedBackend {
            cluster: "pinned".into(),
            weight: 1,
            exclusive: true,
            r#match: vec![pb::BackendMatch {
                source: pb::backend_match::Source::Ip as i32,
                value: Some(pb::StringMatch {
                    value: "203.0.113.7".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = route("all", "/", forward(vec![backend("main", false), pin], None));
        res.routes.insert(r.name.clone(), Arc::new(r));
        let snap = Compiler::new().compile(&res);

        let send = |peer: &str, headers: &[(&str, &str)]| {
            let mut req = Request::get("/x").header("host", "h.example.com");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let body = Full::new(Bytes::new()).map_err(|never: Infallible| match never {});
            handle(
                snap.clone(),
                PORT,
                peer.parse::<SocketAddr>().unwrap().into(),
                None,
                req.body(body).unwrap(),
            )
        };
        let spoofed = [
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-real-ip", "6.6.6.6"),
            ("x-goma-request-id", "from-the-edge-42"),
        ];

        // Through a trusted proxy (two hops, both trusted): the client is the right-most
        // untrusted address; it drives backend selection; the proxy's id is kept.
        let resp = send("192.0.2.10:5555", &spoofed).await;
        assert_eq!(resp.headers()["x-goma-request-id"], "from-the-edge-42");
        assert_eq!(
            body(resp).await,
            "pinned|6.6.6.6, 203.0.113.7, 10.1.1.1, 192.0.2.10|203.0.113.7|from-the-edge-42"
        );

        // The same headers from anyone else are not believed.
        let resp = send("198.51.100.1:5555", &spoofed).await;
        let id = resp.headers()["x-goma-request-id"].clone();
        assert_eq!(id.len(), 32);
        assert_ne!(id, "from-the-edge-42");
        let id = id.to_str().unwrap().to_string();
        assert_eq!(
            body(resp).await,
            format!("main|198.51.100.1|198.51.100.1|{id}")
        );

        // Every request gets its own id.
        let first = send("198.51.100.1:5555", &[]).await;
        let second = send("198.51.100.1:5555", &[]).await;
        assert_ne!(
            first.headers()["x-goma-request-id"],
            second.headers()["x-goma-request-id"]
        );
    }

    /// Answers every request with the length of its body, read to the end.
    async fn draining_backend() -> SocketAddr {
        use hyper_util::rt::TokioIo;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                    let n = req.into_body().collect().await?.to_bytes().len();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(n.to_string()))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_mirror_that_cannot_keep_up_is_abandoned() {
        // The mirror target accepts and reads nothing until told to, then reads to the end.
        let stalled = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stalled_addr = stalled.local_addr().unwrap();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let drained = tokio::spawn(async move {
            let (mut stream, _) = stalled.accept().await.unwrap();
            let _ = go_rx.await;
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        let main = draining_backend().await;
        let mut res = Resources::default();
        res.add_http_listener("http", PORT)
            .add_cluster("main", &[("127.0.0.1", main.port())])
            .add_cluster("stalled", &[("127.0.0.1", stalled_addr.port())]);
        let mut r = route("mirrored", "/", forward(vec![backend("main", false)], None));
        r.mirrors = vec![pb::RequestMirror {
            cluster: "stalled".into(),
            ..Default::default()
        }];
        res.routes.insert(r.name.clone(), Arc::new(r));
        let snap = Compiler::new().compile(&res);

        // 32 MiB in 8 KiB chunks: far more than the socket buffers and the mirror's queue.
        const CHUNKS: usize = 4096;
        let chunks = futures::stream::iter(
            (0..CHUNKS)
                .map(|_| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b'x'; 8192])))),
        );
        let req = Request::post("/upload")
            .header("host", "h.example.com")
            .body(http_body_util::StreamBody::new(chunks))
            .unwrap();
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            handle(snap.clone(), PORT, client().into(), None, req),
        )
        .await
        .expect("the client is never held back by its mirror");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(resp).await, (CHUNKS * 8192).to_string());
        // The abandoned mirror's request is aborted: its connection closes before the whole
        // body was sent.
        go_tx.send(()).unwrap();
        // (Well before the mirror's own 30 s limit would drop it.)
        let mirrored = tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("the mirror connection closes")
            .unwrap();
        assert!(
            mirrored < CHUNKS * 8192,
            "{mirrored} bytes reached the mirror"
        );
    }

    /// Reads each request body as it comes and never answers (HTTP/1.1, or h2c when `h2`).
    async fn unanswering_backend(h2: bool) -> SocketAddr {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                    let _ = req.into_body().collect().await;
                    std::future::pending::<Result<Response<Full<Bytes>>, hyper::Error>>().await
                });
                let io = TokioIo::new(stream);
                if h2 {
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc),
                    );
                } else {
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new().serve_connection(io, svc),
                    );
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_streamed_body_past_its_limit_aborts_the_upstream_request_with_413() {
        for h2 in [false, true] {
            let backend_addr = unanswering_backend(h2).await;
            let mut res = Resources::default();
            res.add_http_listener("http", PORT)
                .add_cluster("main", &[("127.0.0.1", backend_addr.port())]);
            if h2 {
                let mut c = res.clusters.get("main").expect("held");
                c.protocol = pb::UpstreamProtocol::H2c as i32;
                res.clusters.insert("main".into(), Arc::new(c));
            }
            let mut r = route("upload", "/", forward(vec![backend("main", false)], None));
            r.middlewares = vec![pb::Middleware {
                id: "Middleware default/small".into(),
                state_key: "k".into(),
                kind: Some(pb::middleware::Kind::BodyLimit(pb::BodyLimit {
                    max_bytes: 10_000,
                })),
                ..Default::default()
            }];
            res.routes.insert(r.name.clone(), Arc::new(r));
            let mut compiler = Compiler::new();
            assert_eq!(
                compiler.validate_route(&res.routes.get("upload").expect("held"), &res),
                Ok(())
            );
            let snap = compiler.compile(&res);
            let chunks =
                futures::stream::iter((0..8).map(|_| {
                    Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b'x'; 4096])))
                }));
            let req = Request::post("/upload")
                .header("host", "h.example.com")
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap();
            // The backend never answers: only the abort can end the request.
            let resp = tokio::time::timeout(
                Duration::from_secs(10),
                handle(snap, PORT, client().into(), None, req),
            )
            .await
            .unwrap_or_else(|_| panic!("h2: {h2}: the request was not aborted"));
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "h2: {h2}");
        }
    }
}
