//! basicAuth (alias basic) to `BasicAuth`. Password formats are checked by the data plane, which
//! rejects the route (NACK) when a stored hash is malformed.

use super::super::FieldError;
use super::super::goma::secret_resource_name;
use crate::model::goma::{self, middleware_rule::BasicAuthRule};
use sluice_proto::config as pb;

/// The header carrying the authenticated user name upstream when `forwardUsername` is set.
pub const USERNAME_HEADER: &str = "X-Forwarded-User";

pub fn translate(
    rule: &BasicAuthRule,
    mw: &goma::Middleware,
    secrets: &mut Vec<String>,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    if rule.realm.contains(['"', '\\']) || rule.realm.chars().any(char::is_control) {
        return Err(vec![FieldError {
            field: "spec.rule.realm".into(),
            reason: format!(
                "{:?} must not contain quotes, backslashes or control characters",
                rule.realm
            ),
            fail_closed: false,
        }]);
    }
    let users_secret = match &rule.users_secret {
        Some(name) => {
            let resource = secret_resource_name(&mw.metadata.namespace, name.trim());
            secrets.push(resource.clone());
            resource
        }
        None => String::new(),
    };
    Ok(pb::middleware::Kind::BasicAuth(pb::BasicAuth {
        realm: rule.realm.clone(),
        username_header: if rule.forward_username {
            USERNAME_HEADER.into()
        } else {
            String::new()
        },
        users: rule
            .users
            .iter()
            .map(|u| pb::BasicUser {
                username: u.username.clone(),
                password: u.password.clone(),
            })
            .collect(),
        users_secret,
        forward_authorization: rule.forward_authorization,
    }))
}
