//! Redirect middlewares, answered by the gateway: `redirect` (a fixed URL), `redirectScheme`
//! (the same URL on another scheme and port; nothing to do once on that scheme, so it cannot
//! loop) and `redirectRegex` (a regular expression over the full URL
//! `scheme://host[:port]/path?query`, port shown unless it is the scheme's default).

use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response;
use crate::router::redirect::{Redirect, RedirectRequest};
use http::{HeaderValue, StatusCode, Uri};
use regex::Regex;
use sluice_proto::config as pb;

fn status(permanent: bool) -> StatusCode {
    if permanent {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::FOUND
    }
}

/// A compiled `RedirectTo`.
#[derive(Debug)]
pub struct RedirectTo {
    location: HeaderValue,
    status: StatusCode,
}

impl RedirectTo {
    pub fn compile(m: &pb::RedirectTo) -> Result<RedirectTo, String> {
        let valid = !m.url.is_empty() && Uri::try_from(m.url.as_str()).is_ok();
        let location = HeaderValue::from_str(&m.url)
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| format!("redirect.url: {:?} is not a URL", m.url))?;
        Ok(RedirectTo {
            location,
            status: status(m.permanent),
        })
    }
}

impl Middleware for RedirectTo {
    fn decide(&self, _: &mut RequestCtx<'_>) -> Decision {
        Decision::Respond(response::redirect(self.status, self.location.clone()))
    }
}

/// A compiled `RedirectScheme`.
#[derive(Debug)]
pub struct RedirectScheme {
    scheme: &'static str,
    redirect: Redirect,
}

impl RedirectScheme {
    pub fn compile(m: &pb::RedirectScheme) -> Result<RedirectScheme, String> {
        let redirect = Redirect::compile(&pb::Redirect {
            scheme: m.scheme.clone(),
            port: m.port,
            status: u32::from(status(m.permanent).as_u16()),
            ..Default::default()
        })
        .map_err(|e| format!("redirect_scheme.{e}"))?;
        let scheme = redirect
            .scheme
            .ok_or_else(|| "redirect_scheme.scheme: empty (\"http\" or \"https\")".to_owned())?;
        Ok(RedirectScheme { scheme, redirect })
    }
}

impl Middleware for RedirectScheme {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if ctx.scheme == self.scheme {
            return Decision::Continue;
        }
        if ctx.host.is_empty() {
            return Decision::Respond(response::bad_request());
        }
        let location = self.redirect.location(&RedirectRequest {
            scheme: ctx.scheme,
            host: ctx.host,
            port: ctx.port,
            path: ctx.client_uri.path(),
            query: ctx.client_uri.query(),
            matched_prefix: None,
        });
        Decision::Respond(match location {
            Some(l) => response::redirect(self.redirect.status, l),
            None => response::bad_request(),
        })
    }
}

/// A compiled `RedirectRegex`.
#[derive(Debug)]
pub struct RedirectRegex {
    pattern: Regex,
    replacement: Box<str>,
    status: StatusCode,
}

impl RedirectRegex {
    pub fn compile(m: &pb::RedirectRegex) -> Result<RedirectRegex, String> {
        let pattern = Regex::new(&m.pattern).map_err(|e| {
            format!(
                "redirect_regex.pattern: {:?} is not a valid regex: {e}",
                m.pattern
            )
        })?;
        if m.replacement.is_empty() || HeaderValue::from_str(&m.replacement).is_err() {
            return Err(format!(
                "redirect_regex.replacement: {:?} is not a valid Location",
                m.replacement
            ));
        }
        Ok(RedirectRegex {
            pattern,
            replacement: m.replacement.as_str().into(),
            status: status(m.permanent),
        })
    }
}

/// `scheme://host[:port]/path?query` of the client's request.
fn full_url(ctx: &RequestCtx<'_>) -> String {
    let path = ctx.client_uri.path();
    let query = ctx.client_uri.query();
    let mut url = String::with_capacity(
        ctx.scheme.len() + ctx.host.len() + path.len() + query.map_or(0, str::len) + 16,
    );
    url.push_str(ctx.scheme);
    url.push_str("://");
    url.push_str(ctx.host);
    let default_port = if ctx.scheme == "https" { 443 } else { 80 };
    if ctx.port != default_port {
        url.push(':');
        url.push_str(&ctx.port.to_string());
    }
    url.push_str(if path.is_empty() { "/" } else { path });
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl Middleware for RedirectRegex {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let url = full_url(ctx);
        if !self.pattern.is_match(&url) {
            return Decision::Continue;
        }
        let target = self.pattern.replace_all(&url, &*self.replacement);
        Decision::Respond(match HeaderValue::from_str(&target) {
            Ok(l) => response::redirect(self.status, l),
            Err(_) => response::bad_request(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::transform_testing::{Harness, decide};
    use http::header::LOCATION;

    fn location(d: Decision) -> (u16, String) {
        match d {
            Decision::Respond(r) => (
                r.status().as_u16(),
                r.headers()[LOCATION].to_str().unwrap().to_owned(),
            ),
            _ => panic!("expected a redirect"),
        }
    }

    #[test]
    fn redirect_to_a_fixed_url() {
        let m = RedirectTo::compile(&pb::RedirectTo {
            url: "https://new.example.com/landing".into(),
            permanent: true,
        })
        .unwrap();
        let mut h = Harness::new("/any?x=1", &[]);
        assert_eq!(
            location(decide(&m, &mut h)),
            (301, "https://new.example.com/landing".into())
        );
        for bad in ["", "http://a b", "x\ny"] {
            let e = RedirectTo::compile(&pb::RedirectTo {
                url: bad.into(),
                permanent: false,
            })
            .unwrap_err();
            assert!(e.starts_with("redirect.url: "), "{e}");
        }
    }

    #[test]
    fn redirect_scheme_keeps_host_path_query_and_never_loops() {
        let m = RedirectScheme::compile(&pb::RedirectScheme {
            scheme: "https".into(),
            port: 0,
            permanent: false,
        })
        .unwrap();
        let mut h = Harness::new("/a/b?q=1", &[]);
        h.port = 8080;
        assert_eq!(
            location(decide(&m, &mut h)),
            (302, "https://example.com/a/b?q=1".into())
        );
        let mut h = Harness::new("/a", &[]);
        h.scheme = "https";
        h.port = 8443;
        assert!(matches!(decide(&m, &mut h), Decision::Continue));

        let m = RedirectScheme::compile(&pb::RedirectScheme {
            scheme: "https".into(),
            port: 8443,
            permanent: true,
        })
        .unwrap();
        let mut h = Harness::new("/", &[]);
        assert_eq!(
            location(decide(&m, &mut h)),
            (301, "https://example.com:8443/".into())
        );
        let e = RedirectScheme::compile(&pb::RedirectScheme {
            scheme: "ftp".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("redirect_scheme.scheme: "), "{e}");
        let e = RedirectScheme::compile(&pb::RedirectScheme::default()).unwrap_err();
        assert!(e.starts_with("redirect_scheme.scheme: "), "{e}");
    }

    #[test]
    fn redirect_regex_over_the_full_url() {
        let m = RedirectRegex::compile(&pb::RedirectRegex {
            pattern: "^http://example.com:8080/old/(.*)".into(),
            replacement: "https://new.example.com/$1".into(),
            permanent: false,
        })
        .unwrap();
        let mut h = Harness::new("/old/x/y?k=v", &[]);
        h.port = 8080;
        assert_eq!(
            location(decide(&m, &mut h)),
            (302, "https://new.example.com/x/y?k=v".into())
        );
        let mut h = Harness::new("/new/x", &[]);
        h.port = 8080;
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        // The default port is not part of the URL.
        let m = RedirectRegex::compile(&pb::RedirectRegex {
            pattern: "^https://example.com/(.*)$".into(),
            replacement: "https://www.example.com/$1".into(),
            permanent: true,
        })
        .unwrap();
        let mut h = Harness::new("/p", &[]);
        h.scheme = "https";
        h.port = 443;
        assert_eq!(
            location(decide(&m, &mut h)),
            (301, "https://www.example.com/p".into())
        );
        let e = RedirectRegex::compile(&pb::RedirectRegex {
            pattern: "(".into(),
            replacement: "/x".into(),
            permanent: false,
        })
        .unwrap_err();
        assert!(e.starts_with("redirect_regex.pattern: "), "{e}");
        let e = RedirectRegex::compile(&pb::RedirectRegex {
            pattern: "^/".into(),
            replacement: String::new(),
            permanent: false,
        })
        .unwrap_err();
        assert!(e.starts_with("redirect_regex.replacement: "), "{e}");
    }
}
