//! errorInterceptor: replaces the body of responses whose status is listed with the configured
//! page (Content-Type from the rule, Content-Length fixed, the upstream body dropped unread).
//!
//! It sees every response of a request it ran for: the upstream's, the gateway's own (502/504
//! when the upstream fails) and those of middlewares listed after it; answers of middlewares
//! listed before it never pass through it (list it first to cover them). Never touched:
//! protocol switches (101), event streams (`text/event-stream`) and gRPC (request or response
//! `application/grpc*`), whose clients read the body as a protocol, not a page.

use super::{CompileEnv, Decision, Middleware, RequestCtx, ResponseCtx};
use crate::proxy::response::{ProxyBody, full};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use sluice_proto::config as pb;

/// Used when the rule names no Content-Type.
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

#[derive(Debug)]
pub struct ErrorInterceptor {
    /// Sorted by status.
    pages: Vec<(StatusCode, Bytes)>,
    content_type: HeaderValue,
}

/// Compiles an errorInterceptor message; errors name the field (`error_interceptor.errors[0]`).
pub fn compile(
    rule: &pb::ErrorInterceptor,
    _env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let content_type = if rule.content_type.is_empty() {
        HeaderValue::from_static(DEFAULT_CONTENT_TYPE)
    } else {
        HeaderValue::from_str(&rule.content_type).map_err(|_| {
            format!(
                "error_interceptor.content_type: {:?} is not a valid header value",
                rule.content_type
            )
        })?
    };
    let mut pages: Vec<(StatusCode, Bytes)> = Vec::with_capacity(rule.errors.len());
    for (i, page) in rule.errors.iter().enumerate() {
        let at = |reason: String| format!("error_interceptor.errors[{i}].status: {reason}");
        let status = u16::try_from(page.status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| at(format!("{} is not an HTTP status (100-599)", page.status)))?;
        if !has_body(status) {
            return Err(at(format!("{status} responses carry no body to replace")));
        }
        if pages.iter().any(|(s, _)| *s == status) {
            return Err(at(format!("{} is listed twice", status.as_u16())));
        }
        // No body configured: the status's reason phrase, so the page is never empty.
        let body = if page.body.is_empty() {
            Bytes::from(format!(
                "{}\n",
                status.canonical_reason().unwrap_or("Error")
            ))
        } else {
            Bytes::from(page.body.clone())
        };
        pages.push((status, body));
    }
    pages.sort_by_key(|(s, _)| *s);
    Ok(Box::new(ErrorInterceptor {
        pages,
        content_type,
    }))
}

fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Marks a response the interceptor must leave alone (the request was gRPC).
#[derive(Clone, Copy)]
struct Untouchable;

impl Middleware for ErrorInterceptor {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if is_grpc(&ctx.parts.headers) {
            // Gateway answers to gRPC requests (502 and the like) carry no gRPC content type.
            ctx.on_response(Box::new(|resp| {
                resp.extensions_mut().insert(Untouchable);
            }));
        }
        Decision::Continue
    }

    fn on_response(&self, _ctx: &ResponseCtx<'_>, resp: &mut Response<ProxyBody>) {
        let status = resp.status();
        let Ok(at) = self.pages.binary_search_by_key(&status, |(s, _)| *s) else {
            return;
        };
        if status == StatusCode::SWITCHING_PROTOCOLS
            || is_grpc(resp.headers())
            || is_event_stream(resp.headers())
            || resp.extensions().get::<Untouchable>().is_some()
        {
            return;
        }
        let page = &self.pages[at].1;
        let headers = resp.headers_mut();
        // Describe the new body, not the replaced one.
        for name in [
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::CONTENT_LANGUAGE,
            header::CONTENT_LOCATION,
            header::CONTENT_DISPOSITION,
            header::ETAG,
            header::LAST_MODIFIED,
            header::TRANSFER_ENCODING,
            header::TRAILER,
        ] {
            headers.remove(name);
        }
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        // Bytes clone: a reference count, the page is shared by every response.
        *resp.body_mut() = full(page.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::state::States;
    use http_body_util::BodyExt;
    use std::collections::BTreeMap;

    fn compile_rule(rule: &pb::ErrorInterceptor) -> Result<Box<dyn Middleware>, String> {
        let mut states = States::default();
        let secrets = BTreeMap::new();
        let mut env = CompileEnv::new(&mut states, &secrets, None, None);
        compile(rule, &mut env)
    }

    fn page(status: u32, body: &str) -> pb::ErrorPage {
        pb::ErrorPage {
            status,
            body: body.into(),
        }
    }

    fn response(status: u16, content_type: &str, body: &'static str) -> Response<ProxyBody> {
        let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        resp
    }

    async fn run(mw: &dyn Middleware, mut resp: Response<ProxyBody>) -> (Response<()>, Bytes) {
        let uri = http::Uri::from_static("/x");
        let ctx = ResponseCtx {
            client_uri: &uri,
            method: &http::Method::GET,
            from_upstream: true,
        };
        mw.on_response(&ctx, &mut resp);
        let (parts, body) = resp.into_parts();
        (
            Response::from_parts(parts, ()),
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn replaces_listed_statuses_and_leaves_the_rest() {
        let mw = compile_rule(&pb::ErrorInterceptor {
            content_type: "application/json".into(),
            errors: vec![page(502, "{\"error\":\"down\"}"), page(404, "")],
        })
        .unwrap();
        let (head, body) = run(&*mw, response(502, "text/html", "<h1>nginx</h1>")).await;
        assert_eq!(body, "{\"error\":\"down\"}");
        assert_eq!(head.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "16");
        assert!(head.headers().get(header::CONTENT_ENCODING).is_none());
        let (_, body) = run(&*mw, response(404, "text/html", "gone")).await;
        assert_eq!(body, "Not Found\n");
        let (head, body) = run(&*mw, response(500, "text/html", "kept")).await;
        assert_eq!(body, "kept");
        assert_eq!(head.headers()[header::CONTENT_ENCODING], "gzip");
        for ct in ["text/event-stream", "application/grpc+proto"] {
            let (_, body) = run(&*mw, response(502, ct, "stream")).await;
            assert_eq!(body, "stream", "{ct}");
        }
        let mut marked = response(502, "text/plain", "grpc request");
        marked.extensions_mut().insert(Untouchable);
        assert_eq!(run(&*mw, marked).await.1, "grpc request");
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = |rule: pb::ErrorInterceptor| compile_rule(&rule).unwrap_err();
        assert_eq!(
            err(pb::ErrorInterceptor {
                errors: vec![page(500, "a"), page(700, "b")],
                ..Default::default()
            }),
            "error_interceptor.errors[1].status: 700 is not an HTTP status (100-599)"
        );
        assert!(
            err(pb::ErrorInterceptor {
                errors: vec![page(304, "a")],
                ..Default::default()
            })
            .starts_with(
                "error_interceptor.errors[0].status: 304 Not Modified responses carry no body"
            )
        );
        assert!(
            err(pb::ErrorInterceptor {
                errors: vec![page(500, "a"), page(500, "b")],
                ..Default::default()
            })
            .contains("listed twice")
        );
        assert!(
            err(pb::ErrorInterceptor {
                content_type: "a\nb".into(),
                errors: vec![],
            })
            .starts_with("error_interceptor.content_type")
        );
    }
}
