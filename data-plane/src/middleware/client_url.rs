//! The URL the client asked for, rebuilt for auth redirects (`?rd=`) and auth services
//! (`X-Original-URL`).

use super::RequestCtx;
use http::header;

/// `scheme://host[:port]/path?query` as the client sent it: the host comes from the client's
/// Host (kept by the gateway in X-Forwarded-Host, port included), else the matched host and the
/// port the request arrived on.
pub fn original_url(ctx: &RequestCtx<'_>) -> String {
    let path = ctx.client_uri.path_and_query().map_or("/", |p| p.as_str());
    let forwarded = ctx
        .parts
        .headers
        .get("x-forwarded-host")
        .or_else(|| ctx.parts.headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty());
    match forwarded {
        Some(host) => format!("{}://{host}{path}", ctx.scheme),
        None => {
            let default_port = if ctx.scheme == "https" { 443 } else { 80 };
            if ctx.port == default_port || ctx.port == 0 {
                format!("{}://{}{path}", ctx.scheme, ctx.host)
            } else {
                format!("{}://{}:{}{path}", ctx.scheme, ctx.host, ctx.port)
            }
        }
    }
}

/// `url` with `name=value` appended to its query (value form-encoded).
pub fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{url}{separator}{name}={encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_is_encoded_and_appended() {
        assert_eq!(
            with_query_param("https://login/", "rd", "http://a/b?c=d&e"),
            "https://login/?rd=http%3A%2F%2Fa%2Fb%3Fc%3Dd%26e"
        );
        assert_eq!(with_query_param("/in?x=1", "rd", "/"), "/in?x=1&rd=%2F");
    }
}
