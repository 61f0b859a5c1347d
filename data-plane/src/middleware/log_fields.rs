//! `accessLog`: named request headers, query parameters and cookies added to the request's
//! access-log line as `header.<name>`, `query.<name>` and `cookie.<name>` ("-" when absent).
//! Only what is named is logged: never the Authorization or Cookie header wholesale unless the
//! configuration names it.

use super::{Decision, Middleware, RequestCtx};
use crate::router::matcher::RequestView;
use http::HeaderName;
use sluice_proto::config as pb;
use std::sync::Arc;

/// Longest value logged, in bytes (longer ones are cut at a character boundary and end in "...").
const MAX_VALUE: usize = 256;

#[derive(Debug)]
pub struct LogFields {
    headers: Vec<(Arc<str>, HeaderName)>,
    query: Vec<(Arc<str>, Box<str>)>,
    cookies: Vec<(Arc<str>, Box<str>)>,
}

impl LogFields {
    pub fn compile(m: &pb::AccessLogFields) -> Result<LogFields, String> {
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("access_log.headers[{i}]: {h:?} is not a header name"))?;
                Ok((format!("header.{name}").into(), name))
            })
            .collect::<Result<_, String>>()?;
        let names = |field: &str, list: &[String], prefix: &str| {
            list.iter()
                .enumerate()
                .map(|(i, n)| {
                    let n = n.trim();
                    if n.is_empty() || n.contains(|c: char| c.is_control() || c.is_whitespace()) {
                        return Err(format!("access_log.{field}[{i}]: {n:?} is not a name"));
                    }
                    Ok((format!("{prefix}.{n}").into(), n.into()))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(LogFields {
            headers,
            query: names("query", &m.query, "query")?,
            cookies: names("cookies", &m.cookies, "cookie")?,
        })
    }
}

/// `value` cut to [`MAX_VALUE`] bytes.
fn bounded(value: &str) -> String {
    if value.len() <= MAX_VALUE {
        return value.to_owned();
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

impl Middleware for LogFields {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let mut fields =
            Vec::with_capacity(self.headers.len() + self.query.len() + self.cookies.len());
        for (key, name) in &self.headers {
            let mut values = ctx.parts.headers.get_all(name).iter();
            let value = match values.next() {
                None => "-".to_owned(),
                Some(first) => {
                    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for more in values {
                        joined.push_str(", ");
                        joined.push_str(&String::from_utf8_lossy(more.as_bytes()));
                    }
                    bounded(&joined)
                }
            };
            fields.push((key.clone(), value));
        }
        // Query and cookies as the client sent them.
        let view = RequestView {
            host: ctx.host,
            path: ctx.client_uri.path(),
            query: ctx.client_uri.query(),
            method: &ctx.parts.method,
            headers: &ctx.parts.headers,
            client_ip: ctx.client_ip,
        };
        for (key, name) in &self.query {
            let value = view
                .query_param(name)
                .map_or_else(|| "-".to_owned(), |v| bounded(&v));
            fields.push((key.clone(), value));
        }
        for (key, name) in &self.cookies {
            let value = view.cookie(name).map_or_else(|| "-".to_owned(), bounded);
            fields.push((key.clone(), value));
        }
        ctx.log_fields.append(&mut fields);
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::transform_testing::{Harness, decide};

    #[test]
    fn named_fields_only() {
        let m = LogFields::compile(&pb::AccessLogFields {
            headers: vec!["X-User".into(), "Authorization".into()],
            query: vec!["page".into(), "missing".into()],
            cookies: vec!["session".into()],
        })
        .unwrap();
        let long = "x".repeat(300);
        let mut h = Harness::new(
            "/p?page=2&q=%20",
            &[
                ("x-user", "alice"),
                ("x-user", "bob"),
                ("authorization", &long),
                ("cookie", "theme=dark; session=abc123"),
            ],
        );
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        let fields: Vec<(&str, &str)> = h
            .log_fields
            .iter()
            .map(|(k, v)| (&**k, v.as_str()))
            .collect();
        let cut = format!("{}...", "x".repeat(MAX_VALUE));
        assert_eq!(
            fields,
            [
                ("header.x-user", "alice, bob"),
                ("header.authorization", cut.as_str()),
                ("query.page", "2"),
                ("query.missing", "-"),
                ("cookie.session", "abc123"),
            ]
        );
        let e = LogFields::compile(&pb::AccessLogFields {
            query: vec!["a b".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("access_log.query[0]: "), "{e}");
        let e = LogFields::compile(&pb::AccessLogFields {
            headers: vec!["bad header".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("access_log.headers[0]: "), "{e}");
    }
}
