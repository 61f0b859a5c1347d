//! Cross-origin resource sharing (`Cors`, Gateway API HTTPCORSFilter): origin patterns parsed
//! once, the constant response headers pre-built, and the per-request decisions (preflight
//! answer, headers added to ordinary responses) as pure functions of the request headers.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sluice_proto::config as pb;

/// Access-Control-Max-Age when the route leaves it unset (the Gateway API default).
const DEFAULT_MAX_AGE: u32 = 5;

/// A compiled `Cors`.
#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    /// None: "*" (answered per the credentials rule).
    methods: Option<HeaderValue>,
    /// None: "*"; Some(None): no headers configured.
    headers: Option<Option<HeaderValue>>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

#[derive(Debug)]
enum Origins {
    Any,
    List(Vec<OriginPattern>),
}

/// `scheme://host[:port]` where host may be `*` (any) or start with `*.` (any subdomain).
#[derive(Debug, PartialEq, Eq)]
struct OriginPattern {
    https: bool,
    host: HostPart,
    port: u16,
}

#[derive(Debug, PartialEq, Eq)]
enum HostPart {
    Any,
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`: one or more labels in front.
    Subdomains(Box<str>),
}

impl OriginPattern {
    fn parse(raw: &str) -> Option<OriginPattern> {
        let lower = raw.to_ascii_lowercase();
        let (https, rest) = if let Some(r) = lower.strip_prefix("https://") {
            (true, r)
        } else {
            (false, lower.strip_prefix("http://")?)
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
            None => (rest, default_port),
        };
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        let host = if host == "*" {
            HostPart::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !label_ok(suffix) {
                return None;
            }
            HostPart::Subdomains(format!(".{suffix}").into())
        } else if label_ok(host) {
            HostPart::Exact(host.into())
        } else {
            return None;
        };
        Some(OriginPattern { https, host, port })
    }

    fn matches(&self, origin: &OriginPattern) -> bool {
        let host = match (&self.host, &origin.host) {
            (HostPart::Any, _) => true,
            (HostPart::Exact(a), HostPart::Exact(b)) => a == b,
            (HostPart::Subdomains(s), HostPart::Exact(b)) => b.len() > s.len() && b.ends_with(&**s),
            _ => false,
        };
        host && self.https == origin.https && self.port == origin.port
    }
}

fn join(
    field: &str,
    values: &[String],
    check: impl Fn(&str) -> bool,
) -> Result<Option<Option<HeaderValue>>, String> {
    if values.iter().any(|v| v == "*") {
        if values.len() > 1 {
            return Err(format!(
                "{field}: \"*\" cannot be combined with other values"
            ));
        }
        return Ok(None);
    }
    for (i, v) in values.iter().enumerate() {
        if !check(v) {
            return Err(format!("{field}[{i}]: {v:?} is not valid"));
        }
    }
    if values.is_empty() {
        return Ok(Some(None));
    }
    HeaderValue::from_str(&values.join(", "))
        .map(|v| Some(Some(v)))
        .map_err(|_| format!("{field}: not a valid header value"))
}

impl Cors {
    pub fn compile(c: &pb::Cors) -> Result<Cors, String> {
        let origins = if c.allow_origins.iter().any(|o| o == "*") {
            if c.allow_origins.len() > 1 {
                return Err("allow_origins: \"*\" cannot be combined with other origins".into());
            }
            Origins::Any
        } else {
            let mut list = Vec::with_capacity(c.allow_origins.len());
            for (i, o) in c.allow_origins.iter().enumerate() {
                list.push(OriginPattern::parse(o).ok_or(format!(
                    "allow_origins[{i}]: {o:?} is not \"*\" or scheme://host[:port]"
                ))?);
            }
            Origins::List(list)
        };
        let is_header = |h: &str| HeaderName::from_bytes(h.as_bytes()).is_ok();
        let is_method = |m: &str| Method::from_bytes(m.as_bytes()).is_ok();
        let methods = join("allow_methods", &c.allow_methods, is_method)?;
        let headers = join("allow_headers", &c.allow_headers, is_header)?;
        let expose = match join("expose_headers", &c.expose_headers, |h| is_header(h))? {
            None => Some(HeaderValue::from_static("*")),
            Some(v) => v,
        };
        let max_age = match c.max_age_seconds {
            0 => DEFAULT_MAX_AGE,
            s => s,
        };
        Ok(Cors {
            origins,
            // No configured methods: only the safelisted ones, which need no header.
            methods: methods.map(|m| m.unwrap_or(HeaderValue::from_static("GET, HEAD, POST"))),
            headers,
            expose,
            credentials: c.allow_credentials,
            max_age: HeaderValue::from(max_age),
        })
    }

    /// Whether `req` is a preflight request (the gateway answers it).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The Access-Control-Allow-Origin value for the request's Origin, None when not allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any if !self.credentials => Some(HeaderValue::from_static("*")),
            Origins::Any => Some(origin.clone()),
            Origins::List(list) => {
                let parsed = OriginPattern::parse(origin.to_str().ok()?)?;
                if parsed.host == HostPart::Any {
                    return None;
                }
                list.iter()
                    .any(|p| p.matches(&parsed))
                    .then(|| origin.clone())
            }
        }
    }

    /// The headers of the gateway's answer to a preflight request (empty when the origin is
    /// not allowed: the browser then refuses the actual request).
    pub fn preflight(&self, req: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        let Some(origin) = req.get(ORIGIN).and_then(|o| self.allow_origin(o)) else {
            return out;
        };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let echo = |name| req.get(name).cloned();
        let methods = match &self.methods {
            Some(m) => Some(m.clone()),
            None if self.credentials => echo(ACCESS_CONTROL_REQUEST_METHOD),
            None => Some(HeaderValue::from_static("*")),
        };
        if let Some(m) = methods {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        if req.contains_key(ACCESS_CONTROL_REQUEST_HEADERS) {
            let headers = match &self.headers {
                Some(h) => h.clone(),
                None if self.credentials => echo(ACCESS_CONTROL_REQUEST_HEADERS),
                None => Some(HeaderValue::from_static("*")),
            };
            if let Some(h) = headers {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, h);
            }
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        out.append(VARY, HeaderValue::from_static("Origin"));
        out
    }

    /// Adds the CORS headers of an ordinary (non-preflight) response when the request's
    /// `origin` is allowed; `Vary: Origin` whenever there is one, since the answer depends on it.
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        let Some(origin) = origin else {
            return;
        };
        resp.append(VARY, HeaderValue::from_static("Origin"));
        let Some(allowed) = self.allow_origin(origin) else {
            return;
        };
        resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            resp.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            resp.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::compile(&pb::Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-e".into()],
            allow_credentials: credentials,
            max_age_seconds: 0,
        })
        .unwrap()
    }

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn origin_patterns() {
        let c = cors(
            &[
                "https://*.example.com",
                "http://app.test:8080",
                "https://exact.org",
            ],
            false,
        );
        let allowed = |o: &str| {
            c.allow_origin(&HeaderValue::from_str(o).unwrap())
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            allowed("https://a.example.com").as_deref(),
            Some("https://a.example.com")
        );
        assert_eq!(
            allowed("https://a.b.example.com").as_deref(),
            Some("https://a.b.example.com")
        );
        assert_eq!(
            allowed("https://A.Example.com:443").as_deref(),
            Some("https://A.Example.com:443")
        );
        assert_eq!(
            allowed("https://example.com"),
            None,
            "the wildcard needs a subdomain"
        );
        assert_eq!(allowed("http://a.example.com"), None, "scheme differs");
        assert_eq!(allowed("https://evilexample.com"), None);
        assert_eq!(
            allowed("http://app.test:8080").as_deref(),
            Some("http://app.test:8080")
        );
        assert_eq!(allowed("http://app.test"), None, "port differs");
        assert_eq!(
            allowed("https://exact.org").as_deref(),
            Some("https://exact.org")
        );
        assert_eq!(allowed("https://exact.org.evil"), None);
        assert_eq!(allowed("null"), None);
        // "*" alone: any origin, "*" unless credentials are allowed.
        let any = cors(&["*"], false);
        assert_eq!(
            any.allow_origin(&HeaderValue::from_static("https://x.io"))
                .unwrap(),
            "*"
        );
        let any = cors(&["*"], true);
        assert_eq!(
            any.allow_origin(&HeaderValue::from_static("https://x.io"))
                .unwrap(),
            "https://x.io"
        );
    }

    #[test]
    fn preflight_and_decorate() {
        let c = cors(&["https://*.example.com"], true);
        let mut req = origin("https://a.example.com");
        req.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-a"),
        );
        assert!(Cors::is_preflight(&Method::OPTIONS, &req));
        assert!(!Cors::is_preflight(&Method::GET, &req));
        let h = c.preflight(&req);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-a");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "5");
        // Not allowed: no CORS headers at all.
        let mut other = origin("https://evil.com");
        other.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        assert!(c.preflight(&other).is_empty());

        let mut resp = HeaderMap::new();
        c.decorate(
            Some(&HeaderValue::from_static("https://a.example.com")),
            &mut resp,
        );
        assert_eq!(resp[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example.com");
        assert_eq!(resp[ACCESS_CONTROL_EXPOSE_HEADERS], "x-e");
        assert_eq!(resp[VARY], "Origin");
        let mut resp = HeaderMap::new();
        c.decorate(
            Some(&HeaderValue::from_static("https://evil.com")),
            &mut resp,
        );
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut resp = HeaderMap::new();
        c.decorate(None, &mut resp);
        assert!(resp.is_empty());
    }

    #[test]
    fn wildcards_with_credentials_echo_the_request() {
        let c = Cors::compile(&pb::Cors {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            allow_credentials: true,
            max_age_seconds: 60,
            ..Default::default()
        })
        .unwrap();
        let mut req = origin("https://x.io");
        req.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PATCH"),
        );
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-b, x-c"),
        );
        let h = c.preflight(&req);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://x.io");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-b, x-c");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "60");
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let err = |c: pb::Cors| Cors::compile(&c).unwrap_err();
        let e = err(pb::Cors {
            allow_origins: vec!["example.com".into()],
            ..Default::default()
        });
        assert!(e.starts_with("allow_origins[0]: "), "{e}");
        let e = err(pb::Cors {
            allow_origins: vec!["*".into(), "https://a.b".into()],
            ..Default::default()
        });
        assert!(e.starts_with("allow_origins: "), "{e}");
        let e = err(pb::Cors {
            allow_methods: vec!["G T".into()],
            ..Default::default()
        });
        assert!(e.starts_with("allow_methods[0]: "), "{e}");
        let e = err(pb::Cors {
            allow_headers: vec!["bad header".into()],
            ..Default::default()
        });
        assert!(e.starts_with("allow_headers[0]: "), "{e}");
    }
}
