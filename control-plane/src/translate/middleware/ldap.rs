//! `ldap` (alias `ldapAuth`): the directory settings pass through; the data plane connects.

use super::rule_error;
use crate::model::goma;
use crate::model::goma::middleware_rule::LdapRule;
use crate::translate::{FieldError, parse_go_duration, pb_duration};
use sluice_proto::config as pb;

pub(super) fn translate(
    rule: &LdapRule,
    mw: &goma::Middleware,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let _ = mw;
    if rule.url.starts_with("ldaps://") && rule.start_tls {
        return Err(rule_error(
            "startTLS",
            "an ldaps:// URL is already TLS; startTLS needs ldap://",
        ));
    }
    if rule.user_filter.matches("%s").count() == 0 {
        return Err(rule_error(
            "userFilter",
            format!("{:?} must contain %s (the user name)", rule.user_filter),
        ));
    }
    let ttl = parse_go_duration(&rule.conn_pool.ttl).map_err(|e| rule_error("connPool.ttl", e))?;
    Ok(pb::middleware::Kind::Ldap(pb::LdapAuth {
        url: rule.url.clone(),
        base_dn: rule.base_dn.clone(),
        bind_dn: rule.bind_dn.clone().unwrap_or_default(),
        bind_password: rule.bind_pass.clone().unwrap_or_default(),
        user_filter: rule.user_filter.clone(),
        start_tls: rule.start_tls,
        insecure_skip_verify: rule.insecure_skip_verify,
        realm: rule.realm.clone(),
        username_header: if rule.forward_username {
            "X-Forwarded-User".to_owned()
        } else {
            String::new()
        },
        pool_size: rule.conn_pool.size,
        pool_burst: rule.conn_pool.burst,
        pool_ttl: Some(pb_duration(ttl)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::goma::MiddlewareType;
    use crate::model::goma::middleware_rule::{MiddlewareRule, typed_rule};

    fn rule(value: serde_json::Value) -> LdapRule {
        match typed_rule(MiddlewareType::Ldap, &value).unwrap() {
            MiddlewareRule::Ldap(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn middleware() -> goma::Middleware {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Middleware",
            "metadata": {"name": "dir", "namespace": "default"},
            "spec": {"type": "ldap"},
        }))
        .unwrap()
    }

    #[test]
    fn settings_and_defaults_pass_through() {
        let r = rule(serde_json::json!({
            "url": "ldap://dir:389", "baseDN": "dc=x", "bindDN": "cn=admin", "bindPass": "pw",
            "startTLS": true, "forwardUsername": true, "connPool": {"size": 3, "ttl": "2m"},
        }));
        let Ok(pb::middleware::Kind::Ldap(l)) = translate(&r, &middleware()) else {
            panic!()
        };
        assert_eq!(l.user_filter, "(uid=%s)");
        assert_eq!(l.realm, "Restricted");
        assert_eq!(l.username_header, "X-Forwarded-User");
        assert_eq!((l.pool_size, l.pool_burst), (3, 10));
        assert_eq!(l.pool_ttl.unwrap().seconds, 120);
        assert!(l.start_tls);
        assert_eq!(l.bind_password, "pw");
    }

    #[test]
    fn filters_without_the_user_and_tls_twice_are_refused() {
        let r = rule(
            serde_json::json!({"url": "ldap://dir", "baseDN": "dc=x", "userFilter": "(uid=admin)"}),
        );
        let err = translate(&r, &middleware()).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.userFilter");
        assert!(!err[0].fail_closed);
        let r = rule(serde_json::json!({"url": "ldaps://dir", "baseDN": "dc=x", "startTLS": true}));
        assert_eq!(
            translate(&r, &middleware()).unwrap_err()[0].field,
            "spec.rule.startTLS"
        );
    }
}
