//! `geoBlock`: allows or refuses clients by country, looked up in the data plane's GeoIP
//! database (`--geoip-database`). A client whose country is unknown, or every client when the
//! data plane has no database, passes only with `allow_unknown` (the fail mode).

use super::access::{refusal, status};
use super::{CompileEnv, Decision, Middleware, RequestCtx};
use crate::geoip::GeoIp;
use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderValue, StatusCode};
use sluice_proto::config as pb;
use std::sync::Arc;

const DEFAULT_MESSAGE: &str = "Access denied from your region";

#[derive(Debug)]
pub struct GeoBlock {
    db: Option<Arc<GeoIp>>,
    allow: bool,
    /// Upper-case ISO codes, sorted.
    countries: Vec<[u8; 2]>,
    allow_unknown: bool,
    status: StatusCode,
    body: Bytes,
    country_header: Option<HeaderName>,
}

/// `id`: the middleware's (logs).
pub fn compile(
    id: &str,
    m: &pb::GeoBlock,
    env: &CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    Ok(Box::new(build(id, m, env)?))
}

fn build(id: &str, m: &pb::GeoBlock, env: &CompileEnv<'_>) -> Result<GeoBlock, String> {
    if m.countries.is_empty() {
        return Err("countries: at least one entry required".into());
    }
    let mut countries = Vec::with_capacity(m.countries.len());
    for (i, c) in m.countries.iter().enumerate() {
        match c.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                countries.push([a.to_ascii_uppercase(), b.to_ascii_uppercase()]);
            }
            _ => {
                return Err(format!(
                    "countries[{i}]: {c:?} is not an ISO 3166-1 alpha-2 code"
                ));
            }
        }
    }
    countries.sort_unstable();
    let status = status(m.status, StatusCode::FORBIDDEN).map_err(|e| format!("status: {e}"))?;
    let country_header = if m.country_header.is_empty() {
        None
    } else {
        Some(
            HeaderName::from_bytes(m.country_header.as_bytes()).map_err(|_| {
                format!(
                    "country_header: {:?} is not a header name",
                    m.country_header
                )
            })?,
        )
    };
    let db = match env.geoip_database {
        Some(path) => Some(GeoIp::open(path)?),
        None => {
            tracing::warn!(
                middleware = %id,
                allow_unknown = m.allow_unknown,
                "geoBlock middleware without a GeoIP database (--geoip-database): every client's country is unknown"
            );
            None
        }
    };
    let message = if m.message.is_empty() {
        DEFAULT_MESSAGE
    } else {
        &m.message
    };
    Ok(GeoBlock {
        db,
        allow: m.allow,
        countries,
        allow_unknown: m.allow_unknown,
        status,
        body: Bytes::from(message.to_owned()),
        country_header,
    })
}

impl GeoBlock {
    /// Whether a client from `country` (None: unknown) passes.
    fn passes(&self, country: Option<[u8; 2]>) -> bool {
        match country {
            None => self.allow_unknown,
            Some(c) => self.countries.binary_search(&c).is_ok() == self.allow,
        }
    }
}

impl Middleware for GeoBlock {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let country = self.db.as_ref().and_then(|db| db.country(ctx.client_ip));
        if let Some(name) = &self.country_header {
            // Only the gateway names the country: a client's own value never reaches upstream.
            ctx.parts.headers.remove(name);
            if let Some(value) = country.and_then(|c| HeaderValue::from_bytes(&c).ok()) {
                ctx.parts.headers.insert(name.clone(), value);
            }
        }
        if self.passes(country) {
            return Decision::Continue;
        }
        let country = country
            .as_ref()
            .map_or("unknown", |c| std::str::from_utf8(c).unwrap_or("unknown"));
        tracing::debug!(route = %ctx.route.name, client = %ctx.client_ip, country, "request refused by geoBlock");
        Decision::Respond(refusal(self.status, &self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::state::States;
    use std::collections::BTreeMap;

    fn geo(allow: bool, countries: &[&str], allow_unknown: bool) -> GeoBlock {
        let mut states = States::default();
        let secrets = BTreeMap::new();
        let env = CompileEnv::new(&mut states, &secrets, None, None);
        let m = pb::GeoBlock {
            allow,
            countries: countries.iter().map(|c| c.to_string()).collect(),
            allow_unknown,
            ..Default::default()
        };
        build("Middleware default/geo", &m, &env).unwrap()
    }

    #[test]
    fn allow_and_deny_lists_and_the_fail_mode() {
        let allow = geo(true, &["fr", "DE"], false);
        assert!(allow.passes(Some(*b"FR")));
        assert!(allow.passes(Some(*b"DE")));
        assert!(!allow.passes(Some(*b"US")));
        assert!(
            !allow.passes(None),
            "unknown refused when allowUnknown is false"
        );
        let deny = geo(false, &["US"], true);
        assert!(!deny.passes(Some(*b"US")));
        assert!(deny.passes(Some(*b"FR")));
        assert!(
            deny.passes(None),
            "unknown passes when allowUnknown is true"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut states = States::default();
        let secrets = BTreeMap::new();
        let env = CompileEnv::new(&mut states, &secrets, None, None);
        let bad = |m: pb::GeoBlock| compile("geo", &m, &env).unwrap_err();
        assert!(bad(pb::GeoBlock::default()).starts_with("countries:"));
        let err = bad(pb::GeoBlock {
            countries: vec!["FR".into(), "FRA".into()],
            ..Default::default()
        });
        assert!(err.starts_with("countries[1]"), "{err}");
        let err = bad(pb::GeoBlock {
            countries: vec!["FR".into()],
            status: 1000,
            ..Default::default()
        });
        assert!(err.starts_with("status:"), "{err}");
        let err = bad(pb::GeoBlock {
            countries: vec!["FR".into()],
            country_header: "bad header".into(),
            ..Default::default()
        });
        assert!(err.starts_with("country_header:"), "{err}");
        let missing = std::path::Path::new("/nonexistent/GeoLite2-Country.mmdb");
        let env = CompileEnv::new(&mut states, &secrets, None, Some(missing));
        let err = compile(
            "geo",
            &pb::GeoBlock {
                countries: vec!["FR".into()],
                ..Default::default()
            },
            &env,
        )
        .unwrap_err();
        assert!(err.contains("GeoIP database /nonexistent"), "{err}");
    }
}
