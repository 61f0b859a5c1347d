//! Goma `httpCache` to the `HttpCache` message. Goma uses Redis whenever the gateway has one
//! (`spec.server.redis`), so the cache is always marked shared; the data plane keeps entries in
//! memory when the gateway has no shared store.

use super::FieldError;
use crate::model::goma::middleware_rule::{HttpCacheRule, parse_size};
use sluice_proto::config as pb;

pub fn translate(rule: &HttpCacheRule) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let error = |field: String, reason: String| FieldError {
        field,
        reason,
        fail_closed: false,
    };
    let mut errors = Vec::new();
    let memory_limit_bytes = parse_size(&rule.memory_limit).unwrap_or_else(|| {
        errors.push(error(
            "spec.rule.memoryLimit".into(),
            format!("{:?} is not a size such as 500Mi", rule.memory_limit),
        ));
        0
    });
    let mut excluded_statuses = Vec::with_capacity(rule.excluded_response_codes.len());
    for (i, codes) in rule.excluded_response_codes.iter().enumerate() {
        match status_range(codes) {
            Some((from, to)) => excluded_statuses.push(pb::StatusRange { from, to }),
            None => errors.push(error(
                format!("spec.rule.excludedResponseCodes[{i}]"),
                format!("{codes:?} is not a status or a range such as 500-599"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let seconds = |s: i64| prost_types::Duration {
        seconds: s.max(0),
        nanos: 0,
    };
    Ok(pb::middleware::Kind::HttpCache(pb::HttpCache {
        max_ttl: Some(seconds(rule.max_ttl)),
        max_stale: Some(seconds(rule.max_stale)),
        memory_limit_bytes,
        disable_status_header: rule.disable_cache_status_header,
        cacheable_statuses: rule
            .cacheable_status_codes
            .iter()
            .map(|&s| u32::from(s))
            .collect(),
        excluded_statuses,
        include_query_in_key: rule.include_query_in_key,
        query_params: rule.query_params_to_cache.clone(),
        shared: true,
    }))
}

/// `"404"` or `"500-599"` (validated by the rule's check; None only for what it refused).
fn status_range(codes: &str) -> Option<(u32, u32)> {
    let mut bounds = codes.split('-').map(|c| c.trim().parse::<u32>().ok());
    let from = bounds.next()??;
    let to = match bounds.next() {
        Some(to) => to?,
        None => from,
    };
    (bounds.next().is_none() && (100..=599).contains(&from) && (from..=599).contains(&to))
        .then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> HttpCacheRule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn goma_rule_to_message() {
        let kind = translate(&rule(serde_json::json!({
            "maxTtl": 60, "maxStale": 30, "memoryLimit": "1Mi",
            "disableCacheStatusHeader": true, "cacheableStatusCodes": [200, 404],
            "excludedResponseCodes": ["500-599", "404"], "includeQueryInKey": true,
            "queryParamsToCache": ["page"]
        })))
        .unwrap();
        let pb::middleware::Kind::HttpCache(c) = kind else {
            panic!("{kind:?}")
        };
        assert_eq!(c.max_ttl.unwrap().seconds, 60);
        assert_eq!(c.max_stale.unwrap().seconds, 30);
        assert_eq!(c.memory_limit_bytes, 1 << 20);
        assert!(c.disable_status_header && c.include_query_in_key && c.shared);
        assert_eq!(c.cacheable_statuses, [200, 404]);
        assert_eq!(
            c.excluded_statuses,
            [
                pb::StatusRange { from: 500, to: 599 },
                pb::StatusRange { from: 404, to: 404 }
            ]
        );
        assert_eq!(c.query_params, ["page"]);
        // Goma's defaults.
        let pb::middleware::Kind::HttpCache(d) = translate(&rule(serde_json::json!({}))).unwrap()
        else {
            panic!()
        };
        assert_eq!(d.max_ttl.unwrap().seconds, 300);
        assert_eq!(d.memory_limit_bytes, 500 << 20);
        assert!(d.cacheable_statuses.is_empty());
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut r = rule(serde_json::json!({}));
        r.memory_limit = "lots".into();
        r.excluded_response_codes = vec!["599-500".into()];
        let errors = translate(&r).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rule.memoryLimit",
                "spec.rule.excludedResponseCodes[0]"
            ]
        );
        assert_eq!(status_range("404"), Some((404, 404)));
        assert_eq!(status_range("1-2-3"), None);
    }
}
