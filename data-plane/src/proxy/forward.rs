//! Forwarding a routed request: backend and endpoint selection among the endpoints available,
//! the attempts (retries on another endpoint with backoff, within the cluster's retry budget),
//! per-attempt and whole-request timeouts, and the outcome of each attempt fed to outlier
//! detection.

use super::headers;
use super::lent_body::Slot;
use super::response::{self, ProxyBody};
use super::upgrade::ClientUpgrade;
use crate::router::backend::{Backend, BackendSet};
use crate::router::route::{Forward, Retry};
use crate::snapshot::Snapshot;
use crate::upstream::budget::RetryToken;
use crate::upstream::client::Protocol;
use crate::upstream::cluster::Eligibility;
use crate::upstream::{CompiledCluster, Outcome, UpstreamBody};
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// Backoff never grows past this multiple of its base.
const MAX_BACKOFF_FACTOR: u32 = 10;

/// Sends `parts` + `body` (headers already prepared; `parts.uri` holds the path and query) to
/// an endpoint of one of `forward`'s backends. `pinned` is the mask of backends whose canary
/// conditions hold for the request; `upgrade` the protocol switch the client asked for, offered
/// to HTTP/1.1 upstreams.
pub async fn forward<B>(
    snapshot: &Snapshot,
    route: &Arc<str>,
    forward: &Forward,
    pinned: u64,
    parts: Parts,
    body: B,
    upgrade: Option<ClientUpgrade>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    let attempts = attempts(snapshot, route, forward, pinned, parts, body, upgrade);
    let Some(limit) = forward.timeout else {
        return attempts.await;
    };
    match tokio::time::timeout(limit, attempts).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%route, timeout = ?limit, "request timeout (retries included)");
            response::timeout()
        }
    }
}

/// Where one attempt goes.
struct Target {
    cluster: Arc<CompiledCluster>,
    endpoint: usize,
}

/// Why an attempt failed.
enum Failure {
    /// No connection: the request never reached the backend.
    Connect(hyper_util::client::legacy::Error),
    /// No response headers within the backend timeout.
    Timeout(Duration),
    /// The connection broke after the request was (perhaps partly) sent.
    Broken(hyper_util::client::legacy::Error),
    /// A response whose status the retry policy lists.
    Status(Response<Incoming>),
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
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    /// The body for the next attempt; None when an earlier attempt consumed it.
    fn next(&mut self) -> Option<UpstreamBody> {
        match self {
            // Zero-sized: boxing it does not allocate.
            RequestBody::Empty => Some(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            RequestBody::Once(body) => body.take().map(BodyExt::boxed_unsync),
            RequestBody::Lent(slot) => slot.lend().map(BodyExt::boxed_unsync),
        }
    }
}

/// Methods a retry may repeat (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Wait before retry number `retry` (1-based): the base doubled per retry, capped, with
/// `jitter` (0..1) taking up to half of it off so retries of many requests spread out.
pub fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let capped = doubled.min(base.saturating_mul(MAX_BACKOFF_FACTOR));
    capped.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

async fn attempts<B>(
    snapshot: &Snapshot,
    route: &Arc<str>,
    forward: &Forward,
    pinned: u64,
    mut parts: Parts,
    body: B,
    upgrade: Option<ClientUpgrade>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    let retry = &forward.retry;
    let empty = body.is_end_stream();
    // Statuses, timeouts and broken connections are retried only when resending is safe.
    let replayable = empty && is_idempotent(&parts.method);
    let mut body = if empty {
        RequestBody::Empty
    } else if retry.attempts == 0 {
        RequestBody::Once(Some(body))
    } else {
        RequestBody::Lent(Slot::new(body))
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut rng = fastrand::Rng::new();
    let Some(mut target) = choose_target(snapshot, &forward.backends, pinned, &mut rng, &[]) else {
        tracing::debug!(%route, "no available endpoint");
        return response::no_upstream();
    };
    let mut tried: Vec<(Arc<CompiledCluster>, usize)> = Vec::new();
    let mut retries = 0;
    // Held for the duration of the retry it was taken for.
    let mut _token: Option<RetryToken> = None;
    loop {
        let more = retries < retry.attempts;
        // The last attempt takes the head; earlier ones send a copy in case of a retry.
        let head = if more {
            parts.clone()
        } else {
            std::mem::replace(&mut parts, Request::new(()).into_parts().0)
        };
        let Some(attempt_body) = body.next() else {
            // Unreachable: a retry is only decided when the body is available.
            return response::upstream_error();
        };
        let upgrading = upgrade
            .as_ref()
            .filter(|_| target.cluster.protocol == Protocol::Http1);
        let request = upstream_request(
            head,
            attempt_body,
            &target,
            &path_and_query,
            forward,
            upgrading,
        );
        let failure = match attempt(&target, request, forward.backend_timeout, retry).await {
            Ok(resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && target.cluster.protocol == Protocol::Http1
                    && let Some(upgrade) = upgrade
                {
                    return upgrade.switch(resp, route.clone());
                }
                return relay(resp);
            }
            Err(failure) => failure,
        };
        let retryable = match &failure {
            Failure::Connect(_) => match &body {
                RequestBody::Empty => true,
                RequestBody::Once(_) => false,
                RequestBody::Lent(slot) => slot.is_available(),
            },
            Failure::Timeout(_) => {
                replayable && retry.statuses.contains(&StatusCode::GATEWAY_TIMEOUT)
            }
            Failure::Broken(_) => replayable && retry.statuses.contains(&StatusCode::BAD_GATEWAY),
            Failure::Status(_) => replayable,
        };
        let next = if more && retryable {
            tried.push((target.cluster.clone(), target.endpoint));
            choose_target(snapshot, &forward.backends, pinned, &mut rng, &tried)
        } else {
            None
        };
        let token = next.as_ref().and_then(|n| n.cluster.state.budget.retry());
        let (Some(next), Some(token)) = (next, token) else {
            return give_up(route, &target, failure, more && retryable);
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

/// Builds one attempt's request: absolute URI on the endpoint, Host (unless the client's is
/// preserved), the upstream's HTTP version and, for an upgrade, its headers.
fn upstream_request(
    mut head: Parts,
    body: UpstreamBody,
    target: &Target,
    path_and_query: &PathAndQuery,
    forward: &Forward,
    upgrade: Option<&ClientUpgrade>,
) -> Request<UpstreamBody> {
    let cluster = &target.cluster;
    let endpoint = &cluster.endpoints[target.endpoint];
    // Scheme, authority and a path that already parsed: building cannot fail.
    if let Ok(uri) = Uri::builder()
        .scheme(cluster.scheme.clone())
        .authority(endpoint.authority.clone())
        .path_and_query(path_and_query.clone())
        .build()
    {
        head.uri = uri;
    }
    if !forward.preserve_host {
        head.headers
            .insert(header::HOST, endpoint.host_header.clone());
    }
    head.version = cluster.protocol.version();
    if let Some(upgrade) = upgrade {
        upgrade.restore_request_headers(&mut head.headers);
    }
    Request::from_parts(head, body)
}

/// One attempt, until the response headers; feeds outlier detection with its outcome.
async fn attempt(
    target: &Target,
    request: Request<UpstreamBody>,
    backend_timeout: Option<Duration>,
    retry: &Retry,
) -> Result<Response<Incoming>, Failure> {
    let cluster = &target.cluster;
    let _in_flight = cluster.state.budget.attempt();
    let sent = cluster.client.request(request);
    let result = match backend_timeout {
        None => sent.await.map_err(classify),
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(Failure::Timeout(limit)),
        },
    };
    let outcome = match &result {
        Ok(resp) if resp.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    cluster.report(target.endpoint, outcome);
    match result {
        // 101 answers an upgrade: never retried.
        Ok(resp)
            if !resp.status().is_informational() && retry.statuses.contains(&resp.status()) =>
        {
            Err(Failure::Status(resp))
        }
        other => other,
    }
}

fn classify(error: hyper_util::client::legacy::Error) -> Failure {
    if error.is_connect() {
        Failure::Connect(error)
    } else {
        Failure::Broken(error)
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Connect(e) => format!("connect error: {e}"),
            Failure::Timeout(limit) => format!("no response within {limit:?}"),
            Failure::Broken(e) => format!("upstream error: {e}"),
            Failure::Status(resp) => format!("status {}", resp.status().as_u16()),
        }
    }
}

/// The answer when no (further) attempt is made.
fn give_up(
    route: &str,
    target: &Target,
    failure: Failure,
    retry_refused: bool,
) -> Response<ProxyBody> {
    let cluster = &target.cluster.name;
    let endpoint = &target.cluster.endpoints[target.endpoint].authority;
    if retry_refused {
        tracing::debug!(%route, %cluster, "no retry: no endpoint left or retry budget exhausted");
    }
    match failure {
        Failure::Status(resp) => relay(resp),
        Failure::Connect(error) => {
            tracing::warn!(%route, %cluster, %endpoint, %error, "upstream connect error");
            response::connect_error()
        }
        Failure::Timeout(limit) => {
            tracing::warn!(%route, %cluster, %endpoint, timeout = ?limit, "upstream timeout");
            response::timeout()
        }
        Failure::Broken(error) => {
            tracing::warn!(%route, %cluster, %endpoint, %error, "upstream error");
            response::upstream_error()
        }
    }
}

fn relay(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body.boxed_unsync())
}

/// Chooses where an attempt goes, preferring in order: an available endpoint not tried yet, an
/// available endpoint already tried, then the same two ignoring outlier ejection (ejection
/// shifts load to other endpoints but never takes a route's last ones out). Endpoints that fail
/// their active health check are never chosen. None: 503.
fn choose_target(
    snapshot: &Snapshot,
    backends: &BackendSet,
    pinned: u64,
    rng: &mut fastrand::Rng,
    tried: &[(Arc<CompiledCluster>, usize)],
) -> Option<Target> {
    let tried_in = |cluster: &CompiledCluster| {
        tried
            .iter()
            .filter(|(c, i)| *i < 64 && std::ptr::eq(&**c, cluster))
            .fold(0u64, |mask, (_, i)| mask | 1 << i)
    };
    // The common case first: the policy's backend has an available endpoint.
    if tried.is_empty()
        && let Some(b) = backends.choose(pinned, rng, |_| true)
        && let Some(cluster) = snapshot.cluster(&b.cluster)
        && let Some(endpoint) = cluster.choose(0, Eligibility::Available)
    {
        return Some(Target {
            cluster: cluster.clone(),
            endpoint,
        });
    }
    for eligibility in [Eligibility::Available, Eligibility::IgnoreEjection] {
        for avoid_tried in [true, false] {
            if !avoid_tried && tried.is_empty() {
                continue;
            }
            let skip = |c: &CompiledCluster| if avoid_tried { tried_in(c) } else { 0 };
            let usable = |b: &Backend| {
                snapshot
                    .cluster(&b.cluster)
                    .is_some_and(|c| c.has_usable(skip(c), eligibility))
            };
            let Some(b) = backends.choose(pinned, rng, usable) else {
                continue;
            };
            if let Some(cluster) = snapshot.cluster(&b.cluster)
                && let Some(endpoint) = cluster.choose(skip(cluster), eligibility)
            {
                return Some(Target {
                    cluster: cluster.clone(),
                    endpoint,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_millis(25);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(25));
        assert_eq!(backoff(base, 2, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 10, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(base, u32::MAX, 0.5), Duration::from_micros(187_500));
        assert_eq!(backoff(Duration::ZERO, 3, 0.3), Duration::ZERO);
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
