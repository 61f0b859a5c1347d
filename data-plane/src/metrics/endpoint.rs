//! A listener's own metrics endpoint (Goma `monitoring.enableMetrics`): the proxy answers its
//! path with the exposition, before routing, when the request's Host matches.

use crate::router::HostPattern;
use crate::router::host::validate_hostname;
use sluice_proto::config as pb;

const DEFAULT_PATH: &str = "/metrics";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEndpoint {
    pub port: u16,
    pub path: Box<str>,
    /// `Any` when the endpoint accepts every host.
    pub host: HostPattern,
}

impl MetricsEndpoint {
    /// The endpoint a listener asks for, if any; errors name the field.
    pub fn from_listener(l: &pb::Listener, port: u16) -> Result<Option<Self>, String> {
        let Some(m) = l.http.as_ref().and_then(|h| h.metrics.as_ref()) else {
            return Ok(None);
        };
        let path = if m.path.is_empty() {
            DEFAULT_PATH
        } else {
            &m.path
        };
        if !path.starts_with('/') {
            return Err(format!("http.metrics.path: {path:?} must start with \"/\""));
        }
        validate_hostname(&m.host).map_err(|e| format!("http.metrics.host: {e}"))?;
        Ok(Some(MetricsEndpoint {
            port,
            path: path.into(),
            host: HostPattern::parse(&m.host),
        }))
    }

    /// Whether a request on `port` for `path` (no query) and normalised `host` is a scrape.
    pub fn matches(&self, port: u16, path: &str, host: &str) -> bool {
        self.port == port && *self.path == *path && self.host.matches(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(path: &str, host: &str) -> pb::Listener {
        pb::Listener {
            http: Some(pb::HttpSettings {
                metrics: Some(pb::MetricsEndpoint {
                    path: path.into(),
                    host: host.into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn compiles_and_matches() {
        assert_eq!(
            MetricsEndpoint::from_listener(&pb::Listener::default(), 80),
            Ok(None)
        );
        let any = MetricsEndpoint::from_listener(&listener("", ""), 80)
            .unwrap()
            .unwrap();
        assert!(any.matches(80, "/metrics", "whatever.test"));
        assert!(!any.matches(81, "/metrics", "whatever.test"));
        assert!(!any.matches(80, "/metrics/x", "whatever.test"));
        let host = MetricsEndpoint::from_listener(&listener("/m", "Metrics.Example.com"), 80)
            .unwrap()
            .unwrap();
        assert!(host.matches(80, "/m", "metrics.example.com"));
        assert!(!host.matches(80, "/m", "api.example.com"));
        assert!(!host.matches(80, "/metrics", "metrics.example.com"));

        let err = MetricsEndpoint::from_listener(&listener("metrics", ""), 80).unwrap_err();
        assert!(err.starts_with("http.metrics.path:"), "{err}");
        let err = MetricsEndpoint::from_listener(&listener("", "a b"), 80).unwrap_err();
        assert!(err.starts_with("http.metrics.host:"), "{err}");
    }
}
