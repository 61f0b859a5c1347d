//! Goma `errorInterceptor` to the `ErrorInterceptor` message. Pages come from the rule's
//! `body`; `file` is refused as unenforceable (the translator reads no files: in Kubernetes the
//! file would be in the data-plane pod, which the control plane cannot see), so a route relying
//! on one is withdrawn with that reason rather than served with the upstream's page. A rule with
//! `enabled: false` (the default, as in Goma) replaces nothing.

use super::FieldError;
use crate::model::goma::middleware_rule::ErrorInterceptorRule;
use sluice_proto::config as pb;

pub fn translate(rule: &ErrorInterceptorRule) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut pages: Vec<pb::ErrorPage> = Vec::with_capacity(rule.errors.len());
    for (i, page) in rule.errors.iter().enumerate() {
        // A page file cannot be enforced (withdraws the route); a bad status is an invalid
        // edit (the route keeps its last good version).
        let mut error = |field: &str, reason: String| {
            errors.push(FieldError {
                field: format!("spec.rule.errors[{i}].{field}"),
                reason,
                fail_closed: field == "file",
            })
        };
        let status = page.status_code;
        if let Some(file) = &page.file {
            error(
                "file",
                format!(
                    "{file:?}: pages from files are not supported (the gateway reads no local files); put the page in body"
                ),
            );
        }
        if (100..200).contains(&status) || status == 204 || status == 304 {
            error(
                "statusCode",
                format!("{status} responses carry no body to replace"),
            );
        } else if pages.iter().any(|p| p.status == u32::from(status)) {
            error("statusCode", format!("{status} is listed twice"));
        }
        pages.push(pb::ErrorPage {
            status: u32::from(status),
            body: page.body.clone().unwrap_or_default(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(pb::middleware::Kind::ErrorInterceptor(
        pb::ErrorInterceptor {
            content_type: rule.content_type.clone().unwrap_or_default(),
            errors: if rule.enabled { pages } else { Vec::new() },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> ErrorInterceptorRule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn goma_rule_to_message() {
        let kind = translate(&rule(serde_json::json!({
            "enabled": true, "contentType": "application/json",
            "errors": [{"statusCode": 500, "body": "{\"error\":\"oops\"}"}, {"statusCode": 404}]
        })))
        .unwrap();
        assert_eq!(
            kind,
            pb::middleware::Kind::ErrorInterceptor(pb::ErrorInterceptor {
                content_type: "application/json".into(),
                errors: vec![
                    pb::ErrorPage {
                        status: 500,
                        body: "{\"error\":\"oops\"}".into()
                    },
                    pb::ErrorPage {
                        status: 404,
                        body: String::new()
                    },
                ],
            })
        );
        let off = translate(&rule(
            serde_json::json!({"errors": [{"statusCode": 500, "body": "x"}]}),
        ))
        .unwrap();
        let pb::middleware::Kind::ErrorInterceptor(off) = off else {
            panic!()
        };
        assert!(off.errors.is_empty(), "enabled defaults to false");
    }

    #[test]
    fn files_and_bodiless_statuses_are_refused_by_field() {
        let errors = translate(&rule(serde_json::json!({
            "enabled": true,
            "errors": [{"statusCode": 500, "file": "/etc/pages/500.html"},
                       {"statusCode": 304, "body": "x"},
                       {"statusCode": 502, "body": "a"}, {"statusCode": 502, "body": "b"}]
        })))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rule.errors[0].file",
                "spec.rule.errors[1].statusCode",
                "spec.rule.errors[3].statusCode"
            ]
        );
        let fail_closed: Vec<bool> = errors.iter().map(|e| e.fail_closed).collect();
        assert_eq!(fail_closed, [true, false, false]);
        assert!(errors[0].reason.contains("not supported"), "{}", errors[0]);
    }
}
