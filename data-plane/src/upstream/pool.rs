//! Connection-pool settings of a cluster (its own, else the gateway's `UpstreamDefaults`, else
//! Goma's transport defaults).

use super::dns;
use crate::router::route::to_duration;
use sluice_proto::config as pb;
use std::time::Duration;

/// Goma: maxConnsPerHost 256, maxIdleConnsPerHost 256, idleConnTimeout 90s.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
pub const DEFAULT_MAX_IDLE: u32 = 256;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything that shapes an upstream client's pool; equal settings share a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolSettings {
    pub max_connections_per_endpoint: u32,
    pub max_idle_per_endpoint: u32,
    pub idle_timeout: Duration,
    pub dns_ttl: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS,
            max_idle_per_endpoint: DEFAULT_MAX_IDLE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            dns_ttl: dns::DEFAULT_TTL,
        }
    }
}

impl PoolSettings {
    /// The gateway-wide defaults carried by listeners (the first HTTP(S) listener by name that
    /// has any; every listener of a gateway carries the same ones).
    pub fn gateway_defaults<'a>(listeners: impl IntoIterator<Item = &'a pb::Listener>) -> Self {
        let defaults = listeners
            .into_iter()
            .find_map(|l| l.http.as_ref()?.upstream_defaults.as_ref());
        let mut settings = Self::default();
        if let Some(d) = defaults {
            if let Some(pool) = &d.pool {
                settings = settings.overridden_by(pool);
            }
            if let Some(ttl) = d.dns_ttl.as_ref().and_then(|t| to_duration(t).ok()) {
                settings.dns_ttl = ttl;
            }
        }
        settings
    }

    /// A cluster's own non-zero settings on top of these.
    pub fn overridden_by(mut self, pool: &pb::ConnectionPool) -> Self {
        if pool.max_connections_per_endpoint != 0 {
            self.max_connections_per_endpoint = pool.max_connections_per_endpoint;
        }
        if pool.max_idle_per_endpoint != 0 {
            self.max_idle_per_endpoint = pool.max_idle_per_endpoint;
        }
        if let Some(t) = pool.idle_timeout.as_ref().and_then(|t| to_duration(t).ok())
            && !t.is_zero()
        {
            self.idle_timeout = t;
        }
        self
    }
}

/// Checks a ConnectionPool; errors name the field.
pub fn validate(pool: &pb::ConnectionPool) -> Result<(), String> {
    if let Some(t) = &pool.idle_timeout {
        to_duration(t).map_err(|e| format!("idle_timeout: {e}"))?;
    }
    Ok(())
}

/// Checks a listener's UpstreamDefaults; errors name the field.
pub fn validate_defaults(defaults: &pb::UpstreamDefaults) -> Result<(), String> {
    if let Some(p) = &defaults.pool {
        validate(p).map_err(|e| format!("pool.{e}"))?;
    }
    if let Some(t) = &defaults.dns_ttl {
        to_duration(t).map_err(|e| format!("dns_ttl: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn cluster_settings_win_over_gateway_defaults_over_built_ins() {
        let listener = |pool: Option<pb::ConnectionPool>, ttl| pb::Listener {
            name: "http".into(),
            http: Some(pb::HttpSettings {
                upstream_defaults: Some(pb::UpstreamDefaults { pool, dns_ttl: ttl }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(PoolSettings::gateway_defaults([]), PoolSettings::default());
        let gw = PoolSettings::gateway_defaults([&listener(
            Some(pb::ConnectionPool {
                max_connections_per_endpoint: 8,
                max_idle_per_endpoint: 0,
                idle_timeout: secs(10),
            }),
            secs(5),
        )]);
        assert_eq!(
            gw,
            PoolSettings {
                max_connections_per_endpoint: 8,
                max_idle_per_endpoint: DEFAULT_MAX_IDLE,
                idle_timeout: Duration::from_secs(10),
                dns_ttl: Duration::from_secs(5),
            }
        );
        let cluster = gw.overridden_by(&pb::ConnectionPool {
            max_connections_per_endpoint: 0,
            max_idle_per_endpoint: 2,
            idle_timeout: None,
        });
        assert_eq!(cluster.max_connections_per_endpoint, 8);
        assert_eq!(cluster.max_idle_per_endpoint, 2);
        assert!(
            validate(&pb::ConnectionPool {
                idle_timeout: secs(-1),
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("idle_timeout:")
        );
        let bad_ttl = pb::UpstreamDefaults {
            pool: None,
            dns_ttl: secs(-5),
        };
        assert!(
            validate_defaults(&bad_ttl)
                .unwrap_err()
                .starts_with("dns_ttl:")
        );
    }
}
