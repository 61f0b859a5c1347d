//! A tiny echo backend for the quick start and the tests: answers every request with JSON naming
//! the backend and echoing method, path, host and headers. `x-echo-delay-ms` delays the answer
//! and `x-echo-status` sets its status, so tests can hold requests in flight or provoke errors.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, name: String) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| respond(req, name.clone(), peer));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    name: Arc<str>,
    peer: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let delay = header("x-echo-delay-ms").and_then(|v| v.parse::<u64>().ok());
    let status = header("x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
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
        "backend": &*name,
        "method": method,
        "path": path,
        "host": host,
        "version": version,
        "peer": peer.to_string(),
        "headers": headers,
        "body_bytes": body.len(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
