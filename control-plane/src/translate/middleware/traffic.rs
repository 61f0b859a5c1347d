//! Traffic-control middlewares: rateLimit, access, accessPolicy, geoBlock, userAgentBlock and
//! bodyLimit. The rules were validated by `typed_rule`; what is left here is the mapping, and
//! the checks that need more than the rule (an `access` middleware without `paths`).

use super::super::{FieldError, parse_go_duration, pb_duration};
use crate::model::goma;
use crate::model::goma::middleware_rule::{
    AccessPolicyRule, AccessRule, BodyLimitRule, GeoBlockRule, KeySource, PolicyAction,
    RateLimitRule, RateUnit, UserAgentBlockRule, parse_size,
};
use sluice_proto::config as pb;
use std::time::Duration;

type Translated = Result<pb::middleware::Kind, Vec<FieldError>>;

fn invalid(field: &str, reason: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field: field.into(),
        reason: reason.into(),
        fail_closed: false,
    }]
}

/// Buckets go to the gateway's shared store whenever it has one (Goma uses Redis when it is
/// configured).
pub fn rate_limit(rule: &RateLimitRule) -> Translated {
    let unit = match rule.unit {
        RateUnit::Second => Duration::from_secs(1),
        RateUnit::Minute => Duration::from_secs(60),
        RateUnit::Hour => Duration::from_secs(3600),
    };
    let ban =
        parse_go_duration(&rule.ban_duration).map_err(|e| invalid("spec.rule.banDuration", e))?;
    if rule.ban_after > 0 && ban.is_zero() {
        return Err(invalid(
            "spec.rule.banDuration",
            "must be longer than zero when banAfter is set",
        ));
    }
    let source = match rule.key_strategy.source {
        KeySource::Ip => pb::client_key::Source::Ip,
        KeySource::Header => pb::client_key::Source::Header,
        KeySource::Cookie => pb::client_key::Source::Cookie,
    };
    Ok(pb::middleware::Kind::RateLimit(pb::RateLimit {
        requests_per_unit: rule.requests_per_unit,
        unit: Some(pb_duration(unit)),
        burst: rule.burst,
        ban_after: rule.ban_after,
        ban_duration: Some(pb_duration(ban)),
        key: Some(pb::ClientKey {
            source: source as i32,
            name: rule.key_strategy.name.trim().to_owned(),
        }),
        shared: true,
    }))
}

/// Without `paths` an access middleware would refuse the whole route (Goma switches it off
/// instead, which is just as surely not what was meant): it is refused.
pub fn access(rule: &AccessRule, mw: &goma::Middleware) -> Translated {
    if mw.spec.paths.iter().all(|p| p.trim().is_empty()) {
        return Err(invalid("spec.paths", "required for type access"));
    }
    Ok(pb::middleware::Kind::Access(pb::AccessBlock {
        status: u32::from(rule.status_code),
    }))
}

pub fn access_policy(rule: &AccessPolicyRule) -> Translated {
    Ok(pb::middleware::Kind::AccessPolicy(pb::AccessPolicy {
        allow: rule.action != PolicyAction::Deny,
        source_ranges: rule
            .source_ranges
            .iter()
            .map(|r| r.trim().to_owned())
            .collect(),
    }))
}

pub fn geo_block(rule: &GeoBlockRule) -> Translated {
    Ok(pb::middleware::Kind::GeoBlock(pb::GeoBlock {
        allow: rule.action != PolicyAction::Deny,
        countries: rule
            .countries
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        status: u32::from(rule.status_code),
        message: rule.message.clone(),
        allow_unknown: rule.allow_unknown,
        country_header: rule.add_country_header.clone().unwrap_or_default(),
    }))
}

pub fn user_agent_block(rule: &UserAgentBlockRule) -> Translated {
    if let Some(i) = rule.user_agents.iter().position(String::is_empty) {
        return Err(invalid(
            &format!("spec.rule.userAgents[{i}]"),
            "empty (it would match every User-Agent)",
        ));
    }
    Ok(pb::middleware::Kind::UserAgentBlock(pb::UserAgentBlock {
        user_agents: rule.user_agents.clone(),
    }))
}

pub fn body_limit(rule: &BodyLimitRule) -> Translated {
    let max_bytes = parse_size(&rule.limit).ok_or_else(|| {
        invalid(
            "spec.rule.limit",
            format!("{:?} is not a size such as 10Mi", rule.limit),
        )
    })?;
    Ok(pb::middleware::Kind::BodyLimit(pb::BodyLimit { max_bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::goma::MiddlewareType;
    use crate::model::goma::middleware_rule::{MiddlewareRule, typed_rule};
    use serde_json::json;

    fn rule(ty: MiddlewareType, rule: serde_json::Value) -> MiddlewareRule {
        typed_rule(ty, &rule).unwrap()
    }

    #[test]
    fn rate_limit_units_bans_and_keys() {
        let MiddlewareRule::RateLimit(r) = rule(
            MiddlewareType::RateLimit,
            json!({"unit": "minute", "requestsPerUnit": 30, "burst": 5, "banAfter": 3,
                   "banDuration": "1h30m", "keyStrategy": {"source": "header", "name": "X-Api-Key"}}),
        ) else {
            unreachable!()
        };
        let pb::middleware::Kind::RateLimit(rl) = rate_limit(&r).unwrap() else {
            unreachable!()
        };
        assert_eq!(rl.requests_per_unit, 30);
        assert_eq!(rl.unit.unwrap().seconds, 60);
        assert_eq!(rl.burst, 5);
        assert_eq!(rl.ban_after, 3);
        assert_eq!(rl.ban_duration.unwrap().seconds, 5400);
        let key = rl.key.unwrap();
        assert_eq!(key.source, pb::client_key::Source::Header as i32);
        assert_eq!(key.name, "X-Api-Key");
        assert!(rl.shared);
    }

    #[test]
    fn policies_allow_unless_deny() {
        let MiddlewareRule::AccessPolicy(r) = rule(
            MiddlewareType::AccessPolicy,
            json!({"action": "DENY", "sourceRanges": [" 10.0.0.0/8 ", "1.2.3.4-1.2.3.9"]}),
        ) else {
            unreachable!()
        };
        assert_eq!(
            access_policy(&r).unwrap(),
            pb::middleware::Kind::AccessPolicy(pb::AccessPolicy {
                allow: false,
                source_ranges: vec!["10.0.0.0/8".into(), "1.2.3.4-1.2.3.9".into()],
            })
        );
        let MiddlewareRule::GeoBlock(g) = rule(
            MiddlewareType::GeoBlock,
            json!({"action": "ALLOW", "countries": ["fr"], "allowUnknown": false,
                   "addCountryHeader": "X-Country"}),
        ) else {
            unreachable!()
        };
        let pb::middleware::Kind::GeoBlock(g) = geo_block(&g).unwrap() else {
            unreachable!()
        };
        assert!(g.allow && !g.allow_unknown);
        assert_eq!(g.countries, ["FR"]);
        assert_eq!((g.status, g.country_header.as_str()), (403, "X-Country"));
        assert_eq!(g.message, "Access denied from your region");
    }

    #[test]
    fn body_limits_and_user_agents() {
        let MiddlewareRule::BodyLimit(b) = rule(MiddlewareType::BodyLimit, json!({"limit": "1Ki"}))
        else {
            unreachable!()
        };
        assert_eq!(
            body_limit(&b).unwrap(),
            pb::middleware::Kind::BodyLimit(pb::BodyLimit { max_bytes: 1024 })
        );
        let MiddlewareRule::UserAgentBlock(u) = rule(
            MiddlewareType::UserAgentBlock,
            json!({"userAgents": ["curl", ""]}),
        ) else {
            unreachable!()
        };
        let err = user_agent_block(&u).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.userAgents[1]");
    }
}
