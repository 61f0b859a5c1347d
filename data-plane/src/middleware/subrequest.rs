//! Calls a middleware makes to an HTTP service (forward auth, JWKS, OAuth endpoints) through a
//! Cluster of the snapshot: the same pools, TLS, DNS and endpoint health as proxied traffic.

use crate::proxy::forward::{Target, upstream_request};
use crate::router::route::to_duration;
use crate::snapshot::Snapshot;
use crate::upstream::cluster::Eligibility;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use sluice_proto::config as pb;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Response bodies of service calls are read whole, up to this size.
pub const MAX_BODY: usize = 1 << 20;

/// A compiled `HttpService`.
#[derive(Debug, Clone)]
pub struct Service {
    pub cluster: Arc<str>,
    pub authority: HeaderValue,
    pub path: PathAndQuery,
    pub timeout: Duration,
    /// "http" or "https".
    pub scheme: &'static str,
}

/// What a service answered (body read whole).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Service {
    pub fn compile(s: &pb::HttpService) -> Result<Service, String> {
        if s.cluster.is_empty() {
            return Err("cluster: empty".into());
        }
        let authority = HeaderValue::from_str(&s.authority)
            .ok()
            .filter(|_| !s.authority.is_empty())
            .ok_or(format!("authority: {:?} is not a valid host", s.authority))?;
        let path = if s.path.is_empty() { "/" } else { &s.path };
        let path = PathAndQuery::try_from(path)
            .ok()
            .filter(|p| p.as_str().starts_with('/'))
            .ok_or(format!("path: {:?} is not a path and query", s.path))?;
        let timeout = match &s.timeout {
            None => DEFAULT_TIMEOUT,
            Some(d) => to_duration(d).map_err(|e| format!("timeout: {e}"))?,
        };
        let scheme = match s.scheme.as_str() {
            "" | "http" => "http",
            "https" => "https",
            other => return Err(format!("scheme: {other:?} is not http or https")),
        };
        Ok(Service {
            cluster: s.cluster.as_str().into(),
            authority,
            path,
            timeout,
            scheme,
        })
    }

    /// `scheme://authority/path` as the user wrote it (for redirects and logs).
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority.to_str().unwrap_or_default(),
            self.path
        )
    }

    /// Sends a request to the service: `path` None uses the service's own. Host is the
    /// service's authority. A connect failure is retried once on another endpoint.
    pub async fn call(
        &self,
        snapshot: &Snapshot,
        method: Method,
        path: Option<PathAndQuery>,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Reply, String> {
        let cluster = snapshot
            .cluster(&self.cluster)
            .ok_or_else(|| format!("cluster {} is not in the configuration", self.cluster))?
            .clone();
        headers.insert(header::HOST, self.authority.clone());
        let path = path.unwrap_or_else(|| self.path.clone());
        let call = async {
            let mut tried = 0u64;
            let mut last_error = String::from("no available endpoint");
            for _ in 0..2 {
                let Some(endpoint) = cluster.choose(tried, Eligibility::Available) else {
                    break;
                };
                tried |= 1 << (endpoint % 64);
                let mut head = Request::new(()).into_parts().0;
                head.method = method.clone();
                head.uri = http::Uri::from(path.clone());
                head.headers = headers.clone();
                let target = Target {
                    cluster: cluster.clone(),
                    endpoint,
                    backend: None,
                };
                let req_body = Full::new(body.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let request = upstream_request(head, req_body, &target, true, None);
                match cluster.send(endpoint, request).await {
                    Ok(resp) => {
                        let (parts, body) = resp.into_parts();
                        let body = Limited::new(body, MAX_BODY)
                            .collect()
                            .await
                            .map_err(|e| format!("reading the response: {e}"))?
                            .to_bytes();
                        return Ok(Reply {
                            status: parts.status,
                            headers: parts.headers,
                            body,
                        });
                    }
                    Err(failed) if failed.error.nothing_sent() => {
                        last_error = failed.error.to_string();
                    }
                    Err(failed) => return Err(failed.error.to_string()),
                }
            }
            Err(last_error)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| format!("{}: {e}", self.url())),
            Err(_) => Err(format!(
                "{}: timed out after {:?}",
                self.url(),
                self.timeout
            )),
        }
    }
}
