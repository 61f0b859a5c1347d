//! A tiny echo backend for the quick start and the tests. By default it answers every request
//! with JSON naming the backend and echoing method, path, host and headers; `x-echo-delay-ms`
//! delays the answer and `x-echo-status` sets its status, so tests can hold requests in flight or
//! provoke errors. On the same port (HTTP/1.1 and h2c) it also serves:
//! * gRPC (`content-type: application/grpc*`): `grpc.health.v1.Health`, reporting the backend's
//!   name as a service, SERVING until a request carries `x-echo-health: NOT_SERVING`;
//! * WebSocket (`Upgrade: websocket`): every message is echoed back (with `x-echo-status` the
//!   upgrade is refused with that status);
//! * Server-Sent Events (`x-echo-sse: N`): N events, the last one held back until some request
//!   carries `x-echo-sse-release`, so a test can tell streaming from buffering.
//!
//! [`Options`] make a whole backend fail: every answer with one status, or only its health
//! endpoint while a file exists.

mod sse;
mod websocket;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::codegen::Service;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// Path answered 503 while [`Options::health_fail_file`] exists.
pub const HEALTH_PATH: &str = "/healthz";

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Status of every answer unless the request sets `x-echo-status`.
    pub status: Option<StatusCode>,
    /// While this file exists, `GET /healthz` answers 503 (other paths still work), so a test
    /// can fail a backend's active health check by creating the file and restore it by
    /// removing it.
    pub health_fail_file: Option<PathBuf>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type EchoBody = UnsyncBoxBody<Bytes, BoxError>;

/// What every connection of one echo backend shares.
struct Echo {
    name: Arc<str>,
    health: HealthReporter,
    grpc: HealthServer<HealthService>,
    /// One permit per `x-echo-sse-release` request; each SSE stream takes one before its last event.
    sse_release: Semaphore,
    options: Options,
}

pub async fn serve(listener: TcpListener, name: String, options: Options) {
    let health = HealthReporter::new();
    health
        .set_service_status(&name, ServingStatus::Serving)
        .await;
    let echo = Arc::new(Echo {
        name: name.into(),
        grpc: HealthServer::new(HealthService::from_health_reporter(health.clone())),
        health,
        sse_release: Semaphore::new(0),
        options,
    });
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let echo = echo.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| echo.clone().respond(req, peer));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl Echo {
    async fn respond(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> Result<Response<EchoBody>, hyper::Error> {
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        if header("content-type").is_some_and(|c| c.starts_with("application/grpc")) {
            let resp = match self.grpc.clone().call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            return Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()));
        }
        // `x-echo-status` refuses an upgrade with that status (a plain answer follows).
        if websocket::is_upgrade(&req) && header("x-echo-status").is_none() {
            return Ok(websocket::accept(req));
        }
        if header("x-echo-sse-release").is_some() {
            self.sse_release.add_permits(1);
        }
        if let Some(status) = header("x-echo-health") {
            let status = match status {
                "NOT_SERVING" => ServingStatus::NotServing,
                "SERVING" => ServingStatus::Serving,
                _ => ServingStatus::Unknown,
            };
            self.health.set_service_status(&*self.name, status).await;
        }
        if let Some(events) = header("x-echo-sse").and_then(|v| v.parse::<u32>().ok()) {
            return Ok(sse::events(self, events));
        }
        if let Some(file) = &self.options.health_fail_file
            && req.uri().path() == HEALTH_PATH
            && tokio::fs::try_exists(file).await.unwrap_or(false)
        {
            let mut resp = Response::new(full("unhealthy\n"));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Ok(resp);
        }
        let delay = header("x-echo-delay-ms").and_then(|v| v.parse::<u64>().ok());
        let status = header("x-echo-status")
            .and_then(|v| v.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .or(self.options.status)
            .unwrap_or(StatusCode::OK);
        // Repeated header lines are shown joined with ", ", as HTTP defines them to combine.
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .keys()
            .map(|k| {
                let values: Vec<String> = req
                    .headers()
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (k.as_str().to_string(), values.join(", ").into())
            })
            .collect();
        let host = header("host")
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let method = req.method().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        let version = format!("{:?}", req.version());
        let body = req.into_body().collect().await?.to_bytes();
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        let json = serde_json::json!({
            "backend": &*self.name,
            "method": method,
            "path": path,
            "host": host,
            "version": version,
            "peer": peer.to_string(),
            "headers": headers,
            "body_bytes": body.len(),
        });
        let mut resp = Response::new(full(json.to_string() + "\n"));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}
