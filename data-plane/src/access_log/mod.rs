//! Access logs: one `tracing` event per request (target `access`, level INFO), in the process's
//! log format (text or JSON). Emitted when the response body has been sent (or the exchange was
//! abandoned), so `duration_ms` and `response_bytes` cover the whole body, which is streamed and
//! never buffered. Fields added by accessLog middlewares follow the fixed ones as fields of their
//! own (`header.x-user`, `query.page`, `cookie.session`).

mod extra_fields;

use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::field::{Value, display};

/// The request id header Goma sets (and Sluice forwards).
pub const REQUEST_ID: &str = "x-goma-request-id";

/// The access-log event with the fixed fields (and `extra` ones with static names).
macro_rules! access_event {
    ($r:expr, $elapsed:expr, $request_bytes:expr, $response_bytes:expr $(, $name:ident = $value:expr)*) => {
        tracing::info!(
            target: "access",
            method = %$r.method,
            path = $r.uri.path(),
            host = header_text(&$r.host),
            status = $r.status,
            route = $r.route.as_deref().unwrap_or("-"),
            cluster = $r.cluster.as_deref().unwrap_or("-"),
            endpoint = $r.endpoint.as_ref().map_or("-", |a| a.as_str()),
            duration_ms = $elapsed.as_secs_f64() * 1e3,
            request_bytes = $request_bytes,
            response_bytes = $response_bytes,
            client_ip = %$r.client_ip,
            request_id = header_text(&$r.request_id),
            $($name = %$value,)*
            "request"
        )
    };
}

/// What an access log line needs from the request, captured before the request is forwarded.
/// Cheap clones only: header values and the URI share their bytes.
#[derive(Debug)]
pub struct AccessRecord {
    method: Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    pub(crate) client_ip: IpAddr,
    request_id: Option<HeaderValue>,
    pub(crate) status: u16,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) endpoint: Option<Authority>,
    /// Extra fields from the route's accessLog middlewares.
    pub(crate) log_fields: Vec<(Arc<str>, String)>,
}

impl AccessRecord {
    pub fn new<B>(req: &Request<B>, client_ip: IpAddr) -> Self {
        // HTTP/2 carries the host in the URI (:authority), HTTP/1.1 in the Host header.
        let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        AccessRecord {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host,
            client_ip,
            request_id: req.headers().get(REQUEST_ID).cloned(),
            status: 0,
            route: None,
            cluster: None,
            endpoint: None,
            log_fields: Vec::new(),
        }
    }

    /// Takes the request id from the response when the request had none (the proxy made one).
    pub fn response_headers(&mut self, headers: &HeaderMap) {
        if self.request_id.is_none() {
            self.request_id = headers.get(REQUEST_ID).cloned();
        }
    }

    pub fn emit(&self, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        if self.log_fields.is_empty() {
            access_event!(self, elapsed, request_bytes, response_bytes);
        } else {
            self.emit_with_fields(elapsed, request_bytes, response_bytes);
        }
    }

    /// The line with the middlewares' fields, each a field of its own.
    fn emit_with_fields(&self, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        // The first value of a name wins (two accessLog middlewares may name the same header).
        let mut names: Vec<Arc<str>> = Vec::with_capacity(self.log_fields.len());
        let mut values: Vec<&str> = Vec::with_capacity(self.log_fields.len());
        for (name, value) in &self.log_fields {
            if !names.contains(name) {
                names.push(name.clone());
                values.push(value);
            }
        }
        let Some(meta) = extra_fields::metadata(&names) else {
            let joined: Vec<String> = names
                .iter()
                .zip(&values)
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let extra = joined.join(" ");
            access_event!(self, elapsed, request_bytes, response_bytes, extra = extra);
            return;
        };
        tracing::dispatcher::get_default(|dispatch| {
            if !dispatch.enabled(meta) {
                return;
            }
            let message = display("request");
            let method = display(&self.method);
            let path = self.uri.path();
            let host = header_text(&self.host);
            let route = self.route.as_deref().unwrap_or("-");
            let cluster = self.cluster.as_deref().unwrap_or("-");
            let endpoint = self.endpoint.as_ref().map_or("-", |a| a.as_str());
            let duration_ms = elapsed.as_secs_f64() * 1e3;
            let client_ip = display(&self.client_ip);
            let request_id = header_text(&self.request_id);
            // In the order of `extra_fields::BASE_FIELDS`.
            let base: [&dyn Value; extra_fields::BASE_FIELDS.len()] = [
                &message,
                &method,
                &path,
                &host,
                &self.status,
                &route,
                &cluster,
                &endpoint,
                &duration_ms,
                &request_bytes,
                &response_bytes,
                &client_ip,
                &request_id,
            ];
            let all: Vec<Option<&dyn Value>> = base
                .into_iter()
                .map(Some)
                .chain(values.iter().map(|v| Some(v as &dyn Value)))
                .collect();
            // `value_set_all` is what tracing's own macros use for a value per field.
            let fields = meta.fields().value_set_all(&all);
            dispatch.event(&tracing_core::Event::new(meta, &fields));
        });
    }
}

/// A header value as text; "-" when absent or not visible ASCII.
fn header_text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn record(fields: &[(&str, &str)]) -> AccessRecord {
        let req = Request::builder()
            .uri("/p?x=1")
            .header("host", "api.example.com")
            .body(())
            .unwrap();
        let mut r = AccessRecord::new(&req, IpAddr::V4(Ipv4Addr::LOCALHOST));
        r.status = 200;
        r.log_fields = fields
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.to_string()))
            .collect();
        r
    }

    fn lines(json: bool, records: &[AccessRecord]) -> Vec<String> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false);
        let emit = || {
            for r in records {
                r.emit(Duration::from_millis(3), 0, 10);
            }
        };
        if json {
            tracing::subscriber::with_default(builder.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn middleware_fields_are_fields_of_their_own_in_json_and_text() {
        let records = [
            record(&[]),
            record(&[
                ("header.x-user", "alice"),
                ("query.page", "2"),
                ("header.x-user", "ignored: the first value wins"),
                ("cookie.session", "a \"b\"\nc"),
            ]),
        ];
        let json: Vec<serde_json::Value> = lines(true, &records)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(json.len(), 2);
        let (plain, extra) = (&json[0], &json[1]);
        assert_eq!(extra["target"], "access");
        assert_eq!(extra["level"], "INFO");
        let fields = extra["fields"].as_object().unwrap();
        assert_eq!(fields["header.x-user"], "alice");
        assert_eq!(fields["query.page"], "2");
        assert_eq!(fields["cookie.session"], "a \"b\"\nc");
        // The fixed fields read the same with or without extra ones.
        let plain = plain["fields"].as_object().unwrap();
        for (k, v) in plain {
            assert_eq!(&fields[k], v, "{k}");
        }
        assert_eq!(fields.len(), plain.len() + 3);
        assert_eq!(plain["message"], "request");
        assert_eq!(plain["path"], "/p");
        assert_eq!(plain["status"], 200);

        let text = lines(false, &records);
        assert_eq!(text.len(), 2);
        assert!(
            text[1].contains(r#"header.x-user="alice" query.page="2" cookie.session="a \"b\"\nc""#),
            "{}",
            text[1]
        );
        assert!(
            text[1].contains(" access: request method=GET path=\"/p\""),
            "{}",
            text[1]
        );
        assert!(!text[0].contains("header."), "{}", text[0]);
    }
}
