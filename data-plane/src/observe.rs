//! Observation around [`proxy::handle_reporting`]: the listener metrics endpoint, per-route
//! metrics and access logs. Bodies are counted as they stream through (never buffered); a request
//! is counted when its response headers are ready, and its duration and bytes are recorded when
//! the response body ends or is dropped (client gone). A client that leaves before the response
//! headers is recorded with status 499.

use crate::access_log::AccessRecord;
use crate::metrics::{self, Metrics, RouteStats, method_slot};
use crate::proxy::{self, Peer, ProxyBody, Report, UpstreamFailure, response};
use crate::router::NormalizedHost;
use crate::router::host::request_host;
use crate::snapshot::Snapshot;
use crate::timeouts::{BODY_STALLED, BodyStall};
use crate::tls::TlsConnection;
use crate::upstream::client::BoxError;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// What a proxy runtime records about its requests.
#[derive(Debug)]
pub struct Observer {
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new(Arc::new(Metrics::new()), false)
    }
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, access_log: bool) -> Self {
        Observer {
            metrics,
            access_log,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves one request through the proxy, recording it, and hands the answer to `finish`
    /// (the listener's own bookkeeping). When `stall` fires (an HTTP/2 request body waited past
    /// the read timeout) before the proxy answers, the answer is 408.
    ///
    /// Everything it needs is owned and `finish` runs inside: the listener returns this future
    /// as the request's, with no `async` block of its own around it (one more level of future
    /// would copy the request in and the response out).
    #[allow(clippy::too_many_arguments)]
    pub async fn serve<B, F, R>(
        self: Arc<Self>,
        snapshot: Arc<Snapshot>,
        port: u16,
        client: Peer,
        tls: Option<Arc<TlsConnection>>,
        stall: Option<Arc<BodyStall>>,
        req: Request<B>,
        finish: F,
    ) -> R
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
        F: FnOnce(Response<ObservedBody>) -> R,
    {
        let start = Instant::now();
        let client_addr = client.addr;
        if !snapshot.metrics_endpoints().is_empty()
            && let Some(resp) = self.scrape(&snapshot, port, &req)
        {
            return finish(resp.map(ObservedBody::plain));
        }
        let access = self
            .access_log
            .then(|| Box::new(AccessRecord::new(&req, client.addr.ip().to_canonical())));
        // Most requests have no body: count only the others (the counter is shared with the
        // body, which travels to the upstream connection's task).
        let request_bytes = (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        let mut flight = InFlight {
            observer: &self,
            start,
            slot: method_slot(req.method()),
            report: Report::default(),
            access,
            request_bytes: request_bytes.clone(),
            answered: false,
        };
        let req = req.map(|inner| CountingBody {
            inner,
            bytes: request_bytes,
        });
        let report = &mut flight.report;
        // Built in each arm: a future built before the `match` is copied once more to be awaited.
        let tls = tls.as_deref();
        let resp = match stall.as_deref() {
            None => proxy::handle_reporting(snapshot, port, client, tls, req, report).await,
            Some(stall) => tokio::select! {
                biased;
                resp = proxy::handle_reporting(snapshot, port, client, tls, req, report) => resp,
                // As Envoy's stream idle timeout: 408 while no response has begun (once it has,
                // the listener's response body resets the stream).
                () = stall.stalled() => {
                    tracing::debug!(port, client = %client_addr, "HTTP/2 {BODY_STALLED}");
                    response::request_timeout()
                }
            },
        };
        flight.answered = true;
        let done = flight.answer(resp.status().as_u16(), resp.headers());
        finish(resp.map(|inner| ObservedBody {
            inner,
            bytes: 0,
            done,
        }))
    }

    /// The metrics exposition when the request is for a listener's metrics endpoint.
    fn scrape<B>(
        &self,
        snapshot: &Snapshot,
        port: u16,
        req: &Request<B>,
    ) -> Option<Response<ProxyBody>> {
        let path = req.uri().path();
        let mut endpoints = snapshot
            .metrics_endpoints()
            .iter()
            .filter(|e| e.port == port && *e.path == *path)
            .peekable();
        endpoints.peek()?;
        let raw_host = request_host(req.uri(), req.headers());
        let host = NormalizedHost::new(&raw_host);
        if !endpoints.any(|e| e.matches(port, path, host.as_str())) {
            return None;
        }
        let text = self.metrics.render(snapshot.route_count());
        let mut resp = Response::new(response::full(Bytes::from(text)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        Some(resp)
    }
}

/// Status recorded for a request whose client went away before the response headers (nginx's
/// "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// A request being proxied. If the client goes away before the response headers (the serving
/// future is dropped), it is recorded as [`CLIENT_CLOSED`] on drop.
struct InFlight<'a> {
    observer: &'a Observer,
    start: Instant,
    slot: usize,
    report: Report,
    /// Boxed: only allocated when access logging is on, and keeps the response body small.
    access: Option<Box<AccessRecord>>,
    request_bytes: Option<Arc<AtomicU64>>,
    answered: bool,
}

impl InFlight<'_> {
    /// Records what is known once the response headers are ready; returns what remains to be
    /// recorded when the body ends (None: nothing).
    fn answer(&mut self, status: u16, headers: &HeaderMap) -> Option<Completion> {
        let report = &mut self.report;
        let metrics = &self.observer.metrics;
        let stats = match &report.route {
            None => Some(metrics.unmatched().clone()),
            Some(_) => report.stats.take(),
        };
        if let Some(stats) = &stats {
            stats.record_response(self.slot, status);
            if report.upstream_responded {
                stats.record_upstream(self.start.elapsed());
            }
        }
        if let (Some(failure), Some(cluster)) = (report.failure, &report.cluster) {
            match failure {
                UpstreamFailure::Connect => metrics.upstream_connect_error(cluster),
                UpstreamFailure::Timeout => metrics.upstream_timeout(cluster),
            }
        }
        let mut access = self.access.take();
        if let Some(a) = &mut access {
            a.status = status;
            // The proxy resolved it (a trusted proxy's X-Forwarded-For, else the peer).
            if let Some(ip) = report.client_ip {
                a.client_ip = ip;
            }
            a.response_headers(headers);
            a.route = report.route.take();
            a.cluster = report.cluster.take();
            a.endpoint = report.endpoint.take();
            a.log_fields = std::mem::take(&mut report.log_fields);
        }
        if stats.is_none() && access.is_none() {
            return None;
        }
        Some(Completion {
            start: self.start,
            slot: self.slot,
            stats,
            request_bytes: self.request_bytes.take(),
            access,
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered
            && let Some(done) = self.answer(CLIENT_CLOSED, &HeaderMap::new())
        {
            done.finish(0);
        }
    }
}

/// A request body that counts the bytes it yields.
pub struct CountingBody<B> {
    inner: B,
    bytes: Option<Arc<AtomicU64>>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(bytes)) = (&polled, &this.bytes)
            && let Some(data) = frame.data_ref()
        {
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body handed to the server: the proxy's body, counted, recording the exchange when
/// it ends.
pub struct ObservedBody {
    inner: ProxyBody,
    bytes: u64,
    done: Option<Completion>,
}

/// What is recorded once the response body is done.
struct Completion {
    start: Instant,
    slot: usize,
    stats: Option<Arc<RouteStats>>,
    request_bytes: Option<Arc<AtomicU64>>,
    access: Option<Box<AccessRecord>>,
}

impl ObservedBody {
    /// A body with nothing to record.
    pub fn plain(inner: ProxyBody) -> Self {
        ObservedBody {
            inner,
            bytes: 0,
            done: None,
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish(self.bytes);
        }
    }
}

impl Completion {
    fn finish(self, response_bytes: u64) {
        let elapsed = self.start.elapsed();
        let request_bytes = self
            .request_bytes
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(stats) = &self.stats {
            stats.record_completion(self.slot, elapsed, request_bytes, response_bytes);
        }
        if let Some(access) = &self.access {
            access.emit(elapsed, request_bytes, response_bytes);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Bodies the server never polls (HEAD, 204, 304) and aborted ones end here.
        self.finish();
    }
}
