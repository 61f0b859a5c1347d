//! Redirect answers (`Redirect`, Gateway API RequestRedirect): the Location built from the
//! request with scheme, hostname, port and path replaced as configured.

use super::host::validate_hostname;
use super::rewrite::Rewrite;
use http::{HeaderValue, StatusCode};
use sluice_proto::config as pb;

/// A compiled `Redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// "http" or "https"; None keeps the request's.
    pub scheme: Option<&'static str>,
    pub hostname: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: Option<Rewrite>,
    pub status: StatusCode,
}

/// What the Location is built from.
pub struct RedirectRequest<'a> {
    /// "http" or "https": how the client reached us.
    pub scheme: &'static str,
    /// The request's host without its port (IPv6 literals keep their brackets).
    pub host: &'a str,
    /// The listener port the request arrived on.
    pub port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The normalised prefix of the PathPrefix match that selected the route, if it was one.
    pub matched_prefix: Option<&'a str>,
}

impl Redirect {
    pub fn compile(r: &pb::Redirect) -> Result<Redirect, String> {
        let scheme = match r.scheme.as_str() {
            "" => None,
            "http" => Some("http"),
            "https" => Some("https"),
            other => return Err(format!("scheme: {other:?} is not \"http\" or \"https\"")),
        };
        let hostname = if r.hostname.is_empty() {
            None
        } else if r.hostname.starts_with("*.") {
            return Err(format!(
                "hostname: {:?} is a wildcard, not a host",
                r.hostname
            ));
        } else {
            validate_hostname(&r.hostname).map_err(|e| format!("hostname: {e}"))?;
            Some(r.hostname.to_ascii_lowercase().into())
        };
        let port = match r.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| format!("port: {p} is not in 1..=65535"))?),
        };
        let path = match &r.path {
            Some(p) => Rewrite::compile(p).map_err(|e| format!("path.{e}"))?,
            None => None,
        };
        let status = match r.status {
            0 => StatusCode::FOUND,
            s @ (301 | 302 | 303 | 307 | 308) => {
                StatusCode::from_u16(s as u16).map_err(|e| format!("status: {e}"))?
            }
            s => return Err(format!("status: {s} is not a redirect status")),
        };
        Ok(Redirect {
            scheme,
            hostname,
            port,
            path,
            status,
        })
    }

    /// The Location for `req`. The port is the configured one, else the new scheme's
    /// well-known port, else the listener's; it is left out when it is the scheme's default.
    pub fn location(&self, req: &RedirectRequest<'_>) -> Option<HeaderValue> {
        let scheme = self.scheme.unwrap_or(req.scheme);
        let port = match (self.port, self.scheme) {
            (Some(p), _) => p,
            (None, Some("https")) => 443,
            (None, Some(_)) => 80,
            (None, None) => req.port,
        };
        let host = self.hostname.as_deref().unwrap_or(req.host);
        let mut out = String::with_capacity(
            scheme.len() + host.len() + req.path.len() + req.query.map_or(0, str::len) + 16,
        );
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        let default_port = if scheme == "https" { 443 } else { 80 };
        if port != default_port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        match &self.path {
            Some(rw) => out.push_str(&rw.apply(req.path, req.query, req.matched_prefix)),
            None => {
                out.push_str(if req.path.is_empty() { "/" } else { req.path });
                if let Some(q) = req.query {
                    out.push('?');
                    out.push_str(q);
                }
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(scheme: &str, hostname: &str, port: u32, path: Option<Rewrite>) -> Redirect {
        use pb::path_rewrite::Kind;
        Redirect::compile(&pb::Redirect {
            scheme: scheme.into(),
            hostname: hostname.into(),
            port,
            path: path.map(|p| pb::PathRewrite {
                kind: Some(match p {
                    Rewrite::ReplaceFull(s) => Kind::ReplaceFull(s.into()),
                    Rewrite::ReplacePrefix(s) => Kind::ReplacePrefix(s.into()),
                }),
            }),
            status: 0,
        })
        .unwrap()
    }

    fn req<'a>(
        scheme: &'static str,
        port: u16,
        path: &'a str,
        query: Option<&'a str>,
    ) -> RedirectRequest<'a> {
        RedirectRequest {
            scheme,
            host: "example.com",
            port,
            path,
            query,
            matched_prefix: Some("/old"),
        }
    }

    #[test]
    fn location_table() {
        let full = |s: &str| Some(Rewrite::ReplaceFull(s.into()));
        let prefix = |s: &str| Some(Rewrite::ReplacePrefix(s.into()));
        let cases: Vec<(Redirect, RedirectRequest, &str)> = vec![
            // Scheme only: its well-known port, left out.
            (
                redirect("https", "", 0, None),
                req("http", 8080, "/a", Some("q=1")),
                "https://example.com/a?q=1",
            ),
            (
                redirect("http", "", 0, None),
                req("https", 8443, "/a", None),
                "http://example.com/a",
            ),
            // Nothing: the listener port, shown unless it is the default.
            (
                redirect("", "", 0, None),
                req("http", 8080, "/a", None),
                "http://example.com:8080/a",
            ),
            (
                redirect("", "", 0, None),
                req("http", 80, "/a", None),
                "http://example.com/a",
            ),
            (
                redirect("", "", 0, None),
                req("https", 443, "/a", None),
                "https://example.com/a",
            ),
            // An explicit port wins, and is shown unless it is the scheme's default.
            (
                redirect("https", "", 8443, None),
                req("http", 80, "/a", None),
                "https://example.com:8443/a",
            ),
            (
                redirect("https", "", 443, None),
                req("http", 80, "/a", None),
                "https://example.com/a",
            ),
            (
                redirect("", "other.example", 0, None),
                req("http", 80, "/a", None),
                "http://other.example/a",
            ),
            (
                redirect("", "", 0, full("/new")),
                req("http", 80, "/old/x", Some("k=v")),
                "http://example.com/new?k=v",
            ),
            (
                redirect("", "", 0, prefix("/new")),
                req("http", 80, "/old/x", None),
                "http://example.com/new/x",
            ),
            (
                redirect("", "", 0, prefix("/")),
                req("http", 80, "/old", None),
                "http://example.com/",
            ),
        ];
        for (r, q, want) in cases {
            assert_eq!(r.location(&q).unwrap(), want, "{r:?}");
        }
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let err = |r: pb::Redirect| Redirect::compile(&r).unwrap_err();
        let e = err(pb::Redirect {
            status: 304,
            ..Default::default()
        });
        assert_eq!(e, "status: 304 is not a redirect status");
        let e = err(pb::Redirect {
            scheme: "ftp".into(),
            ..Default::default()
        });
        assert!(e.starts_with("scheme: "), "{e}");
        let e = err(pb::Redirect {
            port: 70000,
            ..Default::default()
        });
        assert!(e.starts_with("port: "), "{e}");
        let e = err(pb::Redirect {
            hostname: "*.x.com".into(),
            ..Default::default()
        });
        assert!(e.starts_with("hostname: "), "{e}");
        let e = err(pb::Redirect {
            path: Some(pb::PathRewrite {
                kind: Some(pb::path_rewrite::Kind::ReplaceFull("rel".into())),
            }),
            ..Default::default()
        });
        assert!(e.starts_with("path.replace_full: "), "{e}");
        assert_eq!(
            Redirect::compile(&pb::Redirect {
                status: 301,
                ..Default::default()
            })
            .unwrap()
            .status,
            StatusCode::MOVED_PERMANENTLY
        );
    }
}
