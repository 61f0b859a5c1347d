//! Forwarding a routed request: backend and endpoint selection among the endpoints available,
//! the attempts (retries on another endpoint with backoff, within the cluster's retry budget),
//! per-attempt and whole-request timeouts, and the outcome of each attempt fed to outlier
//! detection.

use super::headers;
use super::lent_body::Slot;
use super::report::{Report, UpstreamFailure};
use super::response::{self, ProxyBody};
use super::upgrade::ClientUpgrade;
use crate::in_place;
use crate::router::backend::{Backend, BackendSet};
use crate::router::route::Forward;
use crate::snapshot::Snapshot;
use crate::upstream::budget::RetryToken;
use crate::upstream::client::{BoxError, Protocol, empty_body};
use crate::upstream::cluster::Eligibility;
use crate::upstream::http1::is_idempotent;
use crate::upstream::{
    CompiledCluster, Outcome, ResponseBody, SendError, UpstreamBody, UpstreamError,
};
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Backoff never grows past this multiple of its base.
const MAX_BACKOFF_FACTOR: u32 = 10;

/// Sends `parts` + `body` (headers already prepared; `parts.uri` holds the path and query) to
/// an endpoint of one of `forward`'s backends. `pinned` is the mask of backends whose canary
/// conditions hold for the request; `upgrade` the protocol switch the client asked for, offered
/// to HTTP/1.1 upstreams; `host_preserved` that `parts` carries the client's Host, to be sent
/// as it is (else each attempt sets its endpoint's). What happened is reported into `report`
/// (metrics, access logs). The route's whole-request timeout is the caller's to apply.
///
/// A plain function returning the attempts' future boxed where it is built: that state is most
/// of a request's (KiBs), and an `async fn` here would be one more level copying the request in
/// and the response out.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn forward<'a, B>(
    snapshot: &'a Snapshot,
    route: &'a Arc<str>,
    forward: &'a Forward,
    pinned: u64,
    parts: Parts,
    body: B,
    upgrade: Option<ClientUpgrade>,
    host_preserved: bool,
    report: &'a mut Report,
) -> Pin<Box<impl Future<Output = Response<ProxyBody>> + 'a>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    in_place::boxed(
        Box::new_uninit(),
        attempts(
            snapshot,
            route,
            forward,
            pinned,
            parts,
            body,
            upgrade,
            host_preserved,
            report,
        ),
    )
}

/// Where one attempt goes.
pub(crate) struct Target<'a> {
    pub(crate) cluster: Arc<CompiledCluster>,
    pub(crate) endpoint: usize,
    /// The route backend it was chosen for (None for a mirror).
    pub(crate) backend: Option<&'a Backend>,
}

/// Why an attempt failed.
enum Failure {
    /// No connection, or it closed before the request was written: the request never reached
    /// the backend (and may have come back).
    Connect(UpstreamError, Option<Request<UpstreamBody>>),
    /// No response headers within the backend timeout.
    Timeout(Duration),
    /// The connection broke after the request was (perhaps partly) sent.
    Broken(UpstreamError),
    /// A response whose status the retry policy lists.
    Status(Response<ResponseBody>),
}

/// The request body across attempts.
enum RequestBody<B> {
    /// Nothing to send: every attempt gets an empty body.
    Empty,
    /// Retries are off: the body goes to the one attempt.
    Once(Option<B>),
    /// Lent to each attempt, so a connect failure gives it back.
    Lent(Slot<B>),
}

impl<B> RequestBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The body for the next attempt; None when an earlier attempt consumed it.
    fn next(&mut self) -> Option<UpstreamBody> {
        match self {
            // Zero-sized: boxing it does not allocate.
            RequestBody::Empty => Some(empty_body()),
            RequestBody::Once(body) => body.take().map(|b| b.map_err(Into::into).boxed_unsync()),
            RequestBody::Lent(slot) => slot.lend().map(|b| b.map_err(Into::into).boxed_unsync()),
        }
    }
}

/// Wait before retry number `retry` (1-based): the base doubled per retry, capped, with
/// `jitter` (0..1) adding up to half of it so retries of many requests spread out. Never less
/// than the base: Gateway API's `retry.backoff` is a minimum.
pub fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let capped = doubled.min(base.saturating_mul(MAX_BACKOFF_FACTOR));
    capped.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0)
}

#[allow(clippy::too_many_arguments)]
async fn attempts<B>(
    snapshot: &Snapshot,
    route: &Arc<str>,
    forward: &Forward,
    pinned: u64,
    parts: Parts,
    body: B,
    upgrade: Option<ClientUpgrade>,
    host_preserved: bool,
    report: &mut Report,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let retry = &forward.retry;
    let mut rng = fastrand::Rng::new();
    // The weighted pick comes first, whether or not its cluster can serve: an unresolved
    // backend's share is answered 500, and so is a route with nothing to send ordinary
    // traffic to (Gateway API: every weight 0, or no backend at all).
    let first = forward.backends.choose(pinned, &mut rng, true, |_| true);
    match first {
        Some(b) if b.cluster.is_empty() => {
            tracing::debug!(%route, "request share of an unresolved backend reference");
            return response::invalid_backend();
        }
        None if forward.backends.carries_nothing() => {
            tracing::debug!(%route, "no backend with a weight");
            return response::invalid_backend();
        }
        _ => {}
    }
    let Some(mut target) = choose_target(
        snapshot,
        &forward.backends,
        pinned,
        &mut rng,
        &[],
        true,
        first,
    ) else {
        tracing::debug!(%route, "no available endpoint");
        return response::no_upstream();
    };
    // Without a policy a retry needs another endpoint: a route with one backend of one endpoint
    // (a Goma `target`) skips the preparations (lent body).
    let may_retry = retry.attempts > 0
        && (retry.reuse_endpoint
            || forward.backends.backends.len() > 1
            || target.cluster.endpoints.len() > 1);
    let empty = body.is_end_stream();
    // Statuses, timeouts and broken connections are retried only when resending is safe.
    let replayable = empty && is_idempotent(&parts.method);
    let mut body = if empty {
        RequestBody::Empty
    } else if may_retry {
        RequestBody::Lent(Slot::new(body))
    } else {
        RequestBody::Once(Some(body))
    };
    // The head for the next attempt: an attempt takes it, and it comes back when the request
    // never left (a connect failure), or a copy is kept when a retry may follow a request that
    // did (a policy on a replayable request).
    let mut next_head = Some(parts);
    let mut tried: Vec<(Arc<CompiledCluster>, usize)> = Vec::new();
    let mut retries = 0;
    // Held for the duration of the retry it was taken for.
    let mut _token: Option<RetryToken> = None;
    loop {
        let more = may_retry && retries < retry.attempts;
        // A backend's own request modifier must not follow the request to another backend:
        // keep the unmodified head when a retry may follow.
        let modifies = target
            .backend
            .is_some_and(|b| !b.request_headers.is_empty());
        let keep_copy = more && ((replayable && !retry.statuses.is_empty()) || modifies);
        let (Some(head), Some(attempt_body)) = (next_head.take(), body.next()) else {
            // Unreachable: a retry is only decided when the head and the body are available.
            return response::upstream_error();
        };
        if keep_copy {
            next_head = Some(head.clone());
        }
        if target.cluster.protocol != Protocol::Http1
            && upgrade
                .as_ref()
                .is_some_and(ClientUpgrade::requires_http1_upstream)
        {
            tracing::debug!(%route, cluster = %target.cluster.name, "WebSocket over HTTP/2 routed to a cluster that does not speak HTTP/1.1");
            return response::text(
                StatusCode::BAD_GATEWAY,
                "WebSocket needs an HTTP/1.1 upstream\n",
            );
        }
        let upgrading = upgrade
            .as_ref()
            .filter(|_| target.cluster.protocol == Protocol::Http1);
        let request = upstream_request(head, attempt_body, &target, host_preserved, upgrading);
        report.forwarding(&target.cluster, &target.cluster.endpoints[target.endpoint]);
        // Awaited here and not in a helper `async fn`: every level of future copies the request
        // into its own state, and the response out of it.
        let sent = {
            let _in_flight = target.cluster.state.budget.attempt();
            let cluster = &target.cluster;
            // Built in each arm: a future built before the `match` is copied once more (whole,
            // KiBs) to be awaited.
            match forward.backend_timeout {
                None => cluster
                    .send(target.endpoint, request)
                    .await
                    .map_err(classify),
                Some(limit) => {
                    match tokio::time::timeout(limit, cluster.send(target.endpoint, request)).await
                    {
                        Ok(result) => result.map_err(classify),
                        Err(_) => Err(Failure::Timeout(limit)),
                    }
                }
            }
        };
        report_outcome(&target, &sent);
        let mut failure = match sent {
            // 101 answers an upgrade: never retried.
            Ok(resp)
                if !resp.status().is_informational() && retry.statuses.contains(&resp.status()) =>
            {
                Failure::Status(resp)
            }
            Ok(resp) => {
                report.upstream_responded = true;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && target.cluster.protocol == Protocol::Http1
                    && let Some(upgrade) = upgrade
                {
                    return upgrade.switch(resp, route.clone());
                }
                return relay(resp, target.backend);
            }
            Err(failure) => failure,
        };
        if let Failure::Connect(_, unsent) = &mut failure
            && let Some(unsent) = unsent.take()
            && next_head.is_none()
        {
            next_head = Some(unsent.into_parts().0);
        }
        let retryable = next_head.is_some()
            && match &failure {
                Failure::Connect(..) => match &body {
                    RequestBody::Empty => true,
                    RequestBody::Once(_) => false,
                    RequestBody::Lent(slot) => slot.is_available(),
                },
                Failure::Timeout(_) => {
                    replayable && retry.statuses.contains(&StatusCode::GATEWAY_TIMEOUT)
                }
                Failure::Broken(_) => {
                    replayable && retry.statuses.contains(&StatusCode::BAD_GATEWAY)
                }
                Failure::Status(_) => replayable,
            };
        let next = if more && retryable {
            tried.push((target.cluster.clone(), target.endpoint));
            choose_target(
                snapshot,
                &forward.backends,
                pinned,
                &mut rng,
                &tried,
                retry.reuse_endpoint,
                None,
            )
        } else {
            None
        };
        let token = next.as_ref().and_then(|n| n.cluster.state.budget.retry());
        let (Some(next), Some(token)) = (next, token) else {
            return give_up(route, &target, failure, more && retryable, report);
        };
        retries += 1;
        tracing::debug!(
            %route,
            cluster = %target.cluster.name,
            endpoint = %target.cluster.endpoints[target.endpoint].authority,
            next = %next.cluster.endpoints[next.endpoint].authority,
            retry = retries,
            reason = failure.describe(),
            "retrying"
        );
        drop(failure);
        tokio::time::sleep(backoff(retry.backoff, retries, rng.f64())).await;
        target = next;
        _token = Some(token);
    }
}

/// Builds one attempt's request from `head` (its URI in origin form): the backend's header
/// modifier, the URI the upstream's protocol wants, Host (the endpoint's unless the client's
/// or a rewritten one is kept; for HTTP/2 it is the `:authority`), the upstream's HTTP version
/// and, for an upgrade, its headers.
pub(crate) fn upstream_request(
    mut head: Parts,
    body: UpstreamBody,
    target: &Target<'_>,
    host_preserved: bool,
    upgrade: Option<&ClientUpgrade>,
) -> Request<UpstreamBody> {
    let cluster = &target.cluster;
    let endpoint = &cluster.endpoints[target.endpoint];
    if let Some(backend) = target.backend {
        backend.request_headers.apply(&mut head.headers);
    }
    match cluster.protocol {
        // HTTP/1.1 sends the origin form as it is (CONNECT the authority form).
        Protocol::Http1 => {
            if head.method == Method::CONNECT {
                head.uri = Uri::from(endpoint.authority.clone());
            }
        }
        // HTTP/2 takes :scheme and :authority from an absolute URI.
        Protocol::H2c => {
            let path_and_query = head
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let kept_host = head
                .headers
                .get(header::HOST)
                .filter(|_| host_preserved)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
            // Scheme, authority and a path that already parsed: building cannot fail.
            if let Ok(uri) = Uri::builder()
                .scheme(cluster.scheme.clone())
                .authority(kept_host.unwrap_or_else(|| endpoint.authority.clone()))
                .path_and_query(path_and_query)
                .build()
            {
                head.uri = uri;
            }
        }
    }
    if !host_preserved {
        head.headers
            .insert(header::HOST, endpoint.host_header.clone());
    }
    head.version = cluster.protocol.version();
    if let Some(upgrade) = upgrade {
        upgrade.restore_request_headers(&mut head.headers);
    }
    Request::from_parts(head, body)
}

/// An attempt's outcome, for outlier detection: a 5xx or no answer is a failure.
fn report_outcome(target: &Target<'_>, result: &Result<Response<ResponseBody>, Failure>) {
    let outcome = match result {
        Ok(resp) if resp.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    target.cluster.report(target.endpoint, outcome);
}

fn classify(failed: SendError<Request<UpstreamBody>>) -> Failure {
    if failed.error.nothing_sent() {
        Failure::Connect(failed.error, failed.unsent)
    } else {
        Failure::Broken(failed.error)
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Connect(e, _) => format!("connect error: {e}"),
            Failure::Timeout(limit) => format!("no response within {limit:?}"),
            Failure::Broken(e) => format!("upstream error: {e}"),
            Failure::Status(resp) => format!("status {}", resp.status().as_u16()),
        }
    }
}

/// The answer when no (further) attempt is made.
fn give_up(
    route: &str,
    target: &Target<'_>,
    failure: Failure,
    retry_refused: bool,
    report: &mut Report,
) -> Response<ProxyBody> {
    let cluster = &target.cluster.name;
    let endpoint = &target.cluster.endpoints[target.endpoint].authority;
    if retry_refused {
        tracing::debug!(%route, %cluster, "no retry: no endpoint left or retry budget exhausted");
    }
    match failure {
        Failure::Status(resp) => {
            report.upstream_responded = true;
            relay(resp, target.backend)
        }
        Failure::Connect(error, _) => {
            report.failure = Some(UpstreamFailure::Connect);
            tracing::warn!(%route, %cluster, %endpoint, %error, "upstream connect error");
            response::connect_error()
        }
        Failure::Timeout(limit) => {
            report.failure = Some(UpstreamFailure::Timeout);
            tracing::warn!(%route, %cluster, %endpoint, timeout = ?limit, "upstream timeout");
            response::timeout()
        }
        Failure::Broken(error) => {
            tracing::warn!(%route, %cluster, %endpoint, %error, "upstream error");
            response::upstream_error()
        }
    }
}

/// An upstream response on its way to the client, with its backend's response modifier.
fn relay(resp: Response<ResponseBody>, backend: Option<&Backend>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if let Some(b) = backend {
        b.response_headers.apply(&mut parts.headers);
    }
    Response::from_parts(parts, body.boxed_unsync())
}

/// Chooses where an attempt goes, preferring in order: an available endpoint not tried yet, an
/// available endpoint already tried (when `reuse` allows), then the same ignoring outlier
/// ejection (ejection shifts load to other endpoints but never takes a route's last ones out).
/// Endpoints that fail their active health check are never chosen. `first`: the backend the
/// policy already picked for a first attempt. None: 503.
fn choose_target<'a>(
    snapshot: &Snapshot,
    backends: &'a BackendSet,
    pinned: u64,
    rng: &mut fastrand::Rng,
    tried: &[(Arc<CompiledCluster>, usize)],
    reuse: bool,
    first: Option<&'a Backend>,
) -> Option<Target<'a>> {
    let tried_in = |cluster: &CompiledCluster| {
        tried
            .iter()
            .filter(|(c, i)| *i < 64 && std::ptr::eq(&**c, cluster))
            .fold(0u64, |mask, (_, i)| mask | 1 << i)
    };
    // The common case first: the policy's backend has an available endpoint.
    if tried.is_empty()
        && let Some(b) = first
        && let Some(cluster) = snapshot.cluster(&b.cluster)
        && let Some(endpoint) = cluster.choose(0, Eligibility::Available)
    {
        return Some(Target {
            cluster: cluster.clone(),
            endpoint,
            backend: Some(b),
        });
    }
    for eligibility in [Eligibility::Available, Eligibility::IgnoreEjection] {
        for avoid_tried in [true, false] {
            if !avoid_tried && (tried.is_empty() || !reuse) {
                continue;
            }
            let skip = |c: &CompiledCluster| if avoid_tried { tried_in(c) } else { 0 };
            let usable = |b: &Backend| {
                snapshot
                    .cluster(&b.cluster)
                    .is_some_and(|c| c.has_usable(skip(c), eligibility))
            };
            let Some(b) = backends.choose(pinned, rng, tried.is_empty(), usable) else {
                continue;
            };
            if let Some(cluster) = snapshot.cluster(&b.cluster)
                && let Some(endpoint) = cluster.choose(skip(cluster), eligibility)
            {
                return Some(Target {
                    cluster: cluster.clone(),
                    endpoint,
                    backend: Some(b),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::Compiler;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use sluice_proto::config as pb;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    const PORT: u16 = 8080;

    /// A backend answering every request with `status` and its `name`, after `delay`.
    async fn backend(name: &'static str, status: u16, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        tokio::time::sleep(delay).await;
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn ms(ms: u64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: (ms / 1000) as i64,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        })
    }

    /// One route on `/` forwarding to a cluster of `endpoints` (address, weight).
    fn snapshot(
        endpoints: &[(SocketAddr, u32)],
        outlier: Option<pb::OutlierDetection>,
        forward: pb::ForwardAction,
    ) -> Arc<Snapshot> {
        let mut res = Resources::default();
        res.add_http_listener("http", PORT);
        let cluster = pb::Cluster {
            name: "c".into(),
            endpoints: endpoints
                .iter()
                .map(|(a, weight)| pb::Endpoint {
                    address: a.ip().to_string(),
                    port: u32::from(a.port()),
                    weight: *weight,
                })
                .collect(),
            outlier_detection: outlier,
            ..Default::default()
        };
        res.clusters.insert("c".into(), Arc::new(cluster));
        let route = pb::Route {
            name: "r".into(),
            listeners: vec!["http".into()],
            action: Some(pb::route::Action::Forward(pb::ForwardAction {
                backends: vec![pb::WeightedBackend {
                    cluster: "c".into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..forward
            })),
            ..Default::default()
        };
        res.routes.insert("r".into(), Arc::new(route));
        Compiler::new().compile(&res)
    }

    /// (status, body) of `method` on the snapshot's route, with `body`.
    async fn call(snap: &Arc<Snapshot>, method: Method, body: &'static str) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri("/")
            .header("host", "h.test")
            .body(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}))
            .unwrap();
        let client: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let resp = super::super::handle(snap.clone(), PORT, client.into(), None, req).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn retry(attempts: u32, statuses: &[u32]) -> Option<pb::RetryPolicy> {
        Some(pb::RetryPolicy {
            attempts,
            statuses: statuses.to_vec(),
            backoff: ms(1),
        })
    }

    #[tokio::test]
    async fn listed_statuses_are_retried_on_another_endpoint_when_replayable() {
        let bad = backend("bad", 503, Duration::ZERO).await;
        let good = backend("good", 200, Duration::ZERO).await;
        // Detection off: "bad" must keep receiving first attempts.
        let off = Some(pb::OutlierDetection {
            disabled: true,
            ..Default::default()
        });
        // Round robin by weight sends three in four first attempts to "bad", and would send
        // the retry there too if it did not exclude the endpoint that failed.
        let snap = snapshot(
            &[(bad, 3), (good, 1)],
            off,
            pb::ForwardAction {
                retry: retry(1, &[503]),
                ..Default::default()
            },
        );
        for method in [Method::GET, Method::PUT, Method::GET, Method::DELETE] {
            assert_eq!(call(&snap, method, "").await, (200, "good".into()));
        }
        // Not idempotent, or a body that would have to be replayed: the 503 is the answer.
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(call(&snap, Method::POST, "").await.0);
            seen.push(call(&snap, Method::PUT, "payload").await.0);
        }
        assert!(seen.contains(&503) && seen.contains(&200), "{seen:?}");

        // Without a policy only connect failures are retried.
        let plain = snapshot(&[(bad, 1), (good, 1)], off, pb::ForwardAction::default());
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(call(&plain, Method::GET, "").await.0);
        }
        assert!(statuses.contains(&503), "{statuses:?}");
    }

    #[tokio::test]
    async fn backend_timeout_fails_an_attempt() {
        let slow = backend("slow", 200, Duration::from_secs(30)).await;
        let fast = backend("fast", 200, Duration::ZERO).await;
        let only_slow = snapshot(
            &[(slow, 1)],
            None,
            pb::ForwardAction {
                backend_timeout: ms(100),
                ..Default::default()
            },
        );
        assert_eq!(
            call(&only_slow, Method::GET, "").await,
            (504, "upstream timeout\n".into())
        );
        // Listing 504 retries attempts that timed out, on another endpoint.
        let both = snapshot(
            &[(slow, 1), (fast, 1)],
            None,
            pb::ForwardAction {
                backend_timeout: ms(100),
                retry: retry(1, &[504]),
                ..Default::default()
            },
        );
        for _ in 0..4 {
            assert_eq!(call(&both, Method::GET, "").await, (200, "fast".into()));
        }
        // The whole-request timeout bounds the request, retries included: of two requests
        // (round robin) the one that meets "slow" first times out, where the per-attempt
        // timeout alone would have retried it on "fast".
        let bounded = snapshot(
            &[(slow, 1), (fast, 1)],
            None,
            pb::ForwardAction {
                timeout: ms(100),
                backend_timeout: ms(5000),
                retry: retry(1, &[504]),
                ..Default::default()
            },
        );
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(call(&bounded, Method::GET, "").await);
        }
        seen.sort();
        assert_eq!(
            seen,
            [(200, "fast".into()), (504, "upstream timeout\n".into())]
        );
    }

    #[tokio::test]
    async fn connect_failures_are_retried_on_another_endpoint() {
        let dead: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live = backend("live", 200, Duration::ZERO).await;
        // Failures are counted per attempt; nothing gets ejected here.
        let patient = Some(pb::OutlierDetection {
            consecutive_failures: 100,
            ..Default::default()
        });
        let attempts =
            |snap: &Arc<Snapshot>| snap.cluster("c").unwrap().endpoints[0].health.failures();
        // Without a policy: once, on another endpoint, whatever the method and body.
        let both = snapshot(
            &[(dead, 1), (live, 1)],
            patient,
            pb::ForwardAction::default(),
        );
        for _ in 0..4 {
            assert_eq!(
                call(&both, Method::POST, "payload").await,
                (200, "live".into())
            );
        }
        assert_eq!(attempts(&both), 2);
        // ...and not at all when there is no other endpoint.
        let alone = snapshot(&[(dead, 1)], patient, pb::ForwardAction::default());
        assert_eq!(call(&alone, Method::GET, "").await.0, 502);
        assert_eq!(attempts(&alone), 1);
        // A policy may go back to the same endpoint; zero attempts turn retries off.
        let policy = |attempts| pb::ForwardAction {
            retry: retry(attempts, &[]),
            ..Default::default()
        };
        let again = snapshot(&[(dead, 1)], patient, policy(2));
        assert_eq!(call(&again, Method::GET, "").await.0, 502);
        assert_eq!(attempts(&again), 3);
        let never = snapshot(&[(dead, 1), (live, 1)], patient, policy(0));
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(call(&never, Method::GET, "").await.0);
        }
        seen.sort();
        assert_eq!(seen, [200, 502]);
    }

    #[tokio::test]
    async fn ejection_never_takes_a_route_down() {
        let failing = backend("failing", 500, Duration::ZERO).await;
        let snap = snapshot(&[(failing, 1)], None, pb::ForwardAction::default());
        // Ejected after five failures, but as the only endpoint it keeps serving: the
        // upstream's own answer beats a gateway 503.
        for _ in 0..10 {
            assert_eq!(call(&snap, Method::GET, "").await, (500, "failing".into()));
        }
        let cluster = snap.cluster("c").unwrap();
        assert!(
            cluster.endpoints[0]
                .health
                .is_ejected(crate::upstream::outlier::now_ms())
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_millis(25);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(25));
        assert_eq!(backoff(base, 2, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(150));
        assert!(backoff(base, 1, 0.999) < Duration::from_micros(37_500));
        assert_eq!(backoff(base, 10, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(base, u32::MAX, 0.5), Duration::from_micros(312_500));
        assert_eq!(backoff(Duration::ZERO, 3, 0.3), Duration::ZERO);
    }
}
