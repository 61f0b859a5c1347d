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
