//! Per-port server settings compiled from a Listener's `http` (HttpSettings): client-side
//! timeouts and the trusted proxies that may name the client. The HTTP/1.1 server itself is
//! in [`http1`].

pub mod http1;

use crate::proxy::client_ip::TrustedProxies;
use crate::router::route::to_duration;
use sluice_proto::config as pb;
use std::sync::LazyLock;
use std::time::Duration;

pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longer timeouts are refused: they are mistakes, and deadlines that far out overflow clocks.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `None` timeouts are disabled (configured as zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Request head (slowloris) bound; for HTTP/1 it also bounds the wait for the next request.
    pub read_timeout: Option<Duration>,
    /// Bound on one stalled write to the client.
    pub write_timeout: Option<Duration>,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Option<Duration>,
    pub trusted_proxies: TrustedProxies,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Shared by ports whose listeners set nothing.
pub static DEFAULT: LazyLock<ServerSettings> = LazyLock::new(ServerSettings::default);

impl ServerSettings {
    /// Compiles HttpSettings; errors name the field (relative to `http`).
    pub fn compile(h: &pb::HttpSettings) -> Result<ServerSettings, String> {
        Ok(ServerSettings {
            read_timeout: timeout(&h.read_timeout, DEFAULT_READ_TIMEOUT)
                .map_err(|e| format!("read_timeout: {e}"))?,
            write_timeout: timeout(&h.write_timeout, DEFAULT_WRITE_TIMEOUT)
                .map_err(|e| format!("write_timeout: {e}"))?,
            idle_timeout: timeout(&h.idle_timeout, DEFAULT_IDLE_TIMEOUT)
                .map_err(|e| format!("idle_timeout: {e}"))?,
            trusted_proxies: TrustedProxies::parse(&h.trusted_proxies)
                .map_err(|e| format!("trusted_proxies{e}"))?,
        })
    }

    /// The settings of a listener (unset `http`: defaults).
    pub fn of_listener(l: &pb::Listener) -> Result<ServerSettings, String> {
        match &l.http {
            None => Ok(ServerSettings::default()),
            Some(h) => ServerSettings::compile(h).map_err(|e| format!("http.{e}")),
        }
    }
}

/// Unset: `default`; zero: none.
fn timeout(
    d: &Option<prost_types::Duration>,
    default: Duration,
) -> Result<Option<Duration>, String> {
    let Some(d) = d else {
        return Ok(Some(default));
    };
    let d = to_duration(d)?;
    if d > MAX_TIMEOUT {
        return Err(format!(
            "{}s is longer than the maximum {}s",
            d.as_secs(),
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(Some(d).filter(|d| !d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    #[test]
    fn defaults_zero_and_values() {
        assert_eq!(
            ServerSettings::compile(&pb::HttpSettings::default()).unwrap(),
            ServerSettings::default()
        );
        let s = ServerSettings::compile(&pb::HttpSettings {
            read_timeout: dur(1, 500_000_000),
            write_timeout: dur(0, 0),
            idle_timeout: dur(5, 0),
            trusted_proxies: vec!["10.0.0.0/8".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.read_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.write_timeout, None, "zero disables");
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(5)));
        assert!(s.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_field() {
        let listener = |http: pb::HttpSettings| pb::Listener {
            http: Some(http),
            ..Default::default()
        };
        let err = |http| ServerSettings::of_listener(&listener(http)).unwrap_err();
        let e = err(pb::HttpSettings {
            read_timeout: dur(-1, 0),
            ..Default::default()
        });
        assert!(e.starts_with("http.read_timeout: "), "{e}");
        let e = err(pb::HttpSettings {
            idle_timeout: dur(i64::MAX, 0),
            ..Default::default()
        });
        assert!(
            e.starts_with("http.idle_timeout: ") && e.contains("maximum"),
            "{e}"
        );
        let e = err(pb::HttpSettings {
            write_timeout: dur(1, 2_000_000_000),
            ..Default::default()
        });
        assert!(e.starts_with("http.write_timeout: "), "{e}");
        let e = err(pb::HttpSettings {
            trusted_proxies: vec!["10.0.0.1".into(), "10.0.0.0/40".into()],
            ..Default::default()
        });
        assert!(e.starts_with("http.trusted_proxies[1]: "), "{e}");
    }
}
