//! `requestHeaders` (upstream request headers) and `responseHeaders` (response headers,
//! Set-Cookie, Cache-Control for some statuses, and CORS: preflights answered here, other
//! responses decorated on the way out).

use super::header_rules;
use super::{Decision, Middleware, RequestCtx, ResponseCtx};
use crate::proxy::response::{self, ProxyBody};
use crate::router::cors::Cors;
use crate::router::header_modifier::HeaderModifier;
use http::header::{CACHE_CONTROL, ORIGIN, SET_COOKIE};
use http::{HeaderValue, Response};
use sluice_proto::config as pb;
use std::sync::Arc;

/// A compiled `RequestHeaders`.
#[derive(Debug)]
pub struct RequestHeaders {
    modifier: HeaderModifier,
}

impl RequestHeaders {
    pub fn compile(m: &pb::RequestHeaders) -> Result<RequestHeaders, String> {
        Ok(RequestHeaders {
            modifier: header_rules::compile(m.headers.as_ref(), "request_headers.headers")?,
        })
    }
}

impl Middleware for RequestHeaders {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        self.modifier.apply(&mut ctx.parts.headers);
        Decision::Continue
    }
}

/// A compiled `ResponseHeaders`.
#[derive(Debug)]
pub struct ResponseHeaders {
    modifier: HeaderModifier,
    set_cookies: Vec<HeaderValue>,
    /// Shared with the per-request hook that decorates the response.
    cors: Option<Arc<Cors>>,
    cache_control: Option<HeaderValue>,
    /// Empty: every status.
    cache_statuses: Vec<u16>,
}

impl ResponseHeaders {
    pub fn compile(m: &pb::ResponseHeaders) -> Result<ResponseHeaders, String> {
        let modifier = header_rules::compile(m.headers.as_ref(), "response_headers.headers")?;
        let set_cookies = m
            .set_cookies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                HeaderValue::from_str(c)
                    .ok()
                    .filter(|_| c.split(';').next().is_some_and(|kv| kv.contains('=')))
                    .ok_or_else(|| {
                        format!(
                            "response_headers.set_cookies[{i}]: {c:?} is not a Set-Cookie value"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let cors = match &m.cors {
            Some(c) => Some(Arc::new(
                Cors::compile(c).map_err(|e| format!("response_headers.cors.{e}"))?,
            )),
            None => None,
        };
        let cache_control = match m.cache_control.as_str() {
            "" => None,
            cc => Some(HeaderValue::from_str(cc).map_err(|_| {
                format!("response_headers.cache_control: {cc:?} is not a valid header value")
            })?),
        };
        let cache_statuses = m
            .cache_statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                u16::try_from(*s)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| {
                        format!("response_headers.cache_statuses[{i}]: {s} is not an HTTP status")
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ResponseHeaders {
            modifier,
            set_cookies,
            cors,
            cache_control,
            cache_statuses,
        })
    }
}

impl Middleware for ResponseHeaders {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let Some(cors) = &self.cors else {
            return Decision::Continue;
        };
        if Cors::is_preflight(&ctx.parts.method, &ctx.parts.headers) {
            return Decision::Respond(response::preflight(cors.preflight(&ctx.parts.headers)));
        }
        // Only a cross-origin request pays for the hook.
        if let Some(origin) = ctx.parts.headers.get(ORIGIN).cloned() {
            let cors = cors.clone();
            ctx.on_response(Box::new(move |resp| {
                cors.decorate(Some(&origin), resp.headers_mut());
            }));
        }
        Decision::Continue
    }

    fn on_response(&self, _: &ResponseCtx<'_>, resp: &mut Response<ProxyBody>) {
        let status = resp.status().as_u16();
        let headers = resp.headers_mut();
        self.modifier.apply(headers);
        for cookie in &self.set_cookies {
            headers.append(SET_COOKIE, cookie.clone());
        }
        if let Some(cc) = &self.cache_control
            && (self.cache_statuses.is_empty() || self.cache_statuses.contains(&status))
        {
            headers.insert(CACHE_CONTROL, cc.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::transform_testing::{Harness, decide, respond, upstream};
    use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, VARY};

    fn hv(name: &str, value: &str) -> pb::HeaderValue {
        pb::HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn request_headers_change_the_upstream_request() {
        let m = RequestHeaders::compile(&pb::RequestHeaders {
            headers: Some(pb::HeaderModifier {
                set: vec![hv("X-Env", "prod")],
                remove: vec!["Cookie".into()],
                ..Default::default()
            }),
        })
        .unwrap();
        let mut h = Harness::new("/", &[("cookie", "s=1"), ("x-env", "dev")]);
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        assert_eq!(h.parts.headers["x-env"], "prod");
        assert!(!h.parts.headers.contains_key("cookie"));
    }

    fn response_headers(cors: Option<pb::Cors>) -> ResponseHeaders {
        ResponseHeaders::compile(&pb::ResponseHeaders {
            headers: Some(pb::HeaderModifier {
                set: vec![hv("X-Frame-Options", "DENY"), hv("Server", "")],
                ..Default::default()
            }),
            set_cookies: vec![
                "a=b; Path=/; Secure; HttpOnly; SameSite=None".into(),
                "c=d".into(),
            ],
            cors,
            cache_control: "no-store".into(),
            cache_statuses: vec![200],
        })
        .unwrap()
    }

    #[test]
    fn response_headers_cookies_and_cache_control() {
        let m = response_headers(None);
        let mut h = Harness::new("/", &[]);
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        let mut resp = upstream(200);
        resp.headers_mut()
            .insert("server", HeaderValue::from_static("nginx"));
        respond(&m, &mut h, &mut resp);
        let headers = resp.headers();
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(!headers.contains_key("server"));
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(
            cookies,
            ["a=b; Path=/; Secure; HttpOnly; SameSite=None", "c=d"]
        );
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        // Not in cacheStatuses: no Cache-Control.
        let mut resp = upstream(404);
        respond(&m, &mut h, &mut resp);
        assert!(!resp.headers().contains_key(CACHE_CONTROL));
    }

    #[test]
    fn cors_preflight_is_answered_and_responses_decorated() {
        let cors = pb::Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into(), "PUT".into()],
            max_age_seconds: 600,
            ..Default::default()
        };
        let m = response_headers(Some(cors));
        let mut h = Harness::with_method(
            "OPTIONS",
            "/",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ],
        );
        let Decision::Respond(resp) = decide(&m, &mut h) else {
            panic!("a preflight is answered by the middleware");
        };
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(resp.headers()[ACCESS_CONTROL_MAX_AGE], "600");

        let mut h = Harness::new("/", &[("origin", "https://app.example.com")]);
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        let mut resp = upstream(200);
        respond(&m, &mut h, &mut resp);
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(resp.headers()[VARY], "Origin");
        // Another origin: no allow header.
        let mut h = Harness::new("/", &[("origin", "https://evil.example")]);
        decide(&m, &mut h);
        let mut resp = upstream(200);
        respond(&m, &mut h, &mut resp);
        assert!(!resp.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |m: pb::ResponseHeaders| ResponseHeaders::compile(&m).unwrap_err();
        let e = err(pb::ResponseHeaders {
            set_cookies: vec!["novalue".into()],
            ..Default::default()
        });
        assert!(e.starts_with("response_headers.set_cookies[0]: "), "{e}");
        let e = err(pb::ResponseHeaders {
            cors: Some(pb::Cors {
                allow_origins: vec!["example.com".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(
            e.starts_with("response_headers.cors.allow_origins[0]: "),
            "{e}"
        );
        let e = err(pb::ResponseHeaders {
            cache_statuses: vec![42],
            ..Default::default()
        });
        assert!(e.starts_with("response_headers.cache_statuses[0]: "), "{e}");
        let e = err(pb::ResponseHeaders {
            headers: Some(pb::HeaderModifier {
                set: vec![hv("Connection", "close")],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(e.starts_with("response_headers.headers.set[0]: "), "{e}");
    }
}
