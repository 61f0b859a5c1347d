//! The admin endpoint of a data-plane pod: liveness and readiness for Kubernetes probes,
//! Prometheus metrics and a dump of the configuration being served.

use crate::config_dump::ActiveConfig;
use crate::listeners::ProxyRuntime;
use crate::metrics;
use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin endpoint reports on.
#[derive(Clone)]
pub struct Admin {
    /// True once the initial configuration is applied.
    pub ready: watch::Receiver<bool>,
    pub runtime: Arc<ProxyRuntime>,
    pub config: Arc<ActiveConfig>,
}

/// Serves `/healthz` (the process is up), `/readyz` (the initial configuration is applied),
/// `/metrics` (Prometheus, OpenMetrics text) and `/config_dump` (the held resources as JSON).
pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = admin.respond(req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl Admin {
    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/metrics" => {
                let routes = self.runtime.snapshot().route_count();
                let text = self.runtime.observer().metrics().render(routes);
                body(StatusCode::OK, metrics::CONTENT_TYPE, Bytes::from(text))
            }
            "/config_dump" => {
                let mut json = self.config.render().to_string();
                json.push('\n');
                body(StatusCode::OK, "application/json", Bytes::from(json))
            }
            _ => {
                let (status, text) = probe(path, *self.ready.borrow());
                body(
                    status,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(text.as_bytes()),
                )
            }
        }
    }
}

fn probe(path: &str, ready: bool) -> (StatusCode, &'static str) {
    match path {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if ready => (StatusCode::OK, "ready\n"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: initial configuration not applied yet\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
